//! What `ferroloop.stats()` reads, and the pulse the blocking-call detector
//! watches. asyncio has no counterpart; see docs/observability.md.
//!
//! # Cost
//! Counting happens where the loop already is: two additions per batch of
//! callbacks, clock reads only around a blocking poll (which costs a system
//! call anyway) and when timers fire (where `_run_once` reads the clock
//! already). Everything windowed is summed only when somebody asks.
//!
//! Timing each callback (for `slow_callbacks` and `slowest_callback`) needs a
//! tick read per callback: about 7 % of a chain of empty callbacks. So it starts
//! only when somebody first reads the statistics (or asks for them: `--stats`,
//! `FERROLOOP_STATS=1`, the OpenTelemetry bridge); the batch loop then runs
//! in `run::run_batch_observed`, and the plain loop stays as it was. A
//! detector alone makes the pulse beat without timing callbacks.
//!
//! # Timing a callback
//! The end of one callback is the start of the next (`tick_mark`), so the
//! loop's own work between two callbacks counts to the second; after a
//! blocking poll the mark is reset, so waiting never counts.
//!
//! # The pulse
//! `Pulse` is shared (`Arc`) with watchdog threads that never take the GIL
//! to look at it: `seq` is odd while a callback runs; `start` and `item` say
//! since when and which ready item (a pointer into the loop thread's stack).
//! A watchdog may dereference `item` only while holding the GIL and after
//! seeing `seq` unchanged: the loop thread changes `seq` only with the GIL
//! held, and leaves the item's stack frame only after changing it. It must
//! copy what it needs (`Ready::clone_ref`) before anything that could hand
//! the GIL back (an allocation can run the cycle collector and a finalizer).
//! `item` is 0 for a callback of unknown handle (`Pulse::enter_current`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ferroloop_core::clock;
use ferroloop_core::stats::{Histogram, LoadWindow, MaxWindow};
use pyo3::prelude::*;

use super::{EventLoop, Ready};
use crate::py::held::Held;

/// What the loop is doing, for busy/idle accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// `run_forever` is not running: neither busy nor idle.
    Stopped,
    Busy,
    /// Blocked in the poll.
    Idle,
}

/// What the batch loop of `_run_once` keeps in locals while the pulse beats.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// Callbacks are timed (else only the pulse beats, without start times).
    pub precise: bool,
    /// Tick at which the next callback's time starts.
    pub mark: u64,
    slot_max: u64,
    slot_end: u64,
    alert: u64,
}

impl Timing {
    /// What the pulse publishes as the callback's start (0: not timed).
    #[inline]
    pub(crate) fn start(&self) -> u64 {
        if self.precise {
            self.mark
        } else {
            0
        }
    }

    /// Callbacks at least this long are slow or watched by a detector.
    #[inline]
    pub(crate) fn alert(&self) -> u64 {
        self.alert
    }

    /// The callback that ended at `end` after `dt` ticks needs `after_slow`.
    #[inline]
    pub(crate) fn notable(&self, dt: u64, end: u64) -> bool {
        dt > self.slot_max || dt >= self.alert || end >= self.slot_end
    }
}

/// The counters and windows of one loop (part of `LoopState`).
#[derive(Debug)]
pub(crate) struct Stats {
    /// Callbacks are timed: statistics were read (or asked for). See `activate`.
    pub timed: bool,
    /// The pulse beats: callbacks are timed, or a detector is attached.
    pub beating: bool,
    /// Statistics were read or asked for: callbacks are timed from then on.
    activated: Option<f64>,
    /// Statistics switched off (`FERROLOOP_STATS=0`, to measure their cost).
    pub off: bool,
    pub iterations: u64,
    /// Ready items run (a handle cancelled while queued counts too).
    callbacks: u64,
    pub slow_callbacks: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub created: f64,
    busy: f64,
    idle: f64,
    phase: Phase,
    /// When `phase` began (monotonic seconds).
    mark: f64,
    load: Option<Box<LoadWindow>>,
    lag: Option<Box<Histogram>>,
    slowest: MaxWindow<String>,
    /// Tick at which the next callback's time starts (between batches).
    pub tick_mark: u64,
    /// The second (monotonic, floored) `slot_max` belongs to, and the tick at which it ends.
    slot_second: i64,
    slot_end: u64,
    /// The longest callback of the current second so far, in ticks.
    slot_max: u64,
    /// A callback at least this long is handled by `after_slow`: the
    /// smaller of `slow_ticks` and the detectors' thresholds.
    alert_ticks: u64,
    /// `loop.slow_callback_duration` in seconds (NaN: not a number: never).
    slow_seconds: f64,
    /// The same in ticks, once callbacks are timed (converting needs the
    /// tick rate, measured on first use: not before somebody asks).
    slow_ticks: u64,
    /// `loop.slow_callback_duration` as it was set.
    pub slow_value: Option<Held<PyAny>>,
    /// `del loop.slow_callback_duration` (reading it raises AttributeError).
    pub slow_deleted: bool,
}

impl Stats {
    pub(crate) fn new() -> Self {
        Self {
            timed: false,
            beating: false,
            activated: None,
            off: false,
            iterations: 0,
            callbacks: 0,
            slow_callbacks: 0,
            bytes_read: 0,
            bytes_written: 0,
            created: clock::monotonic(),
            busy: 0.0,
            idle: 0.0,
            phase: Phase::Stopped,
            mark: 0.0,
            load: None,
            lag: None,
            slowest: MaxWindow::default(),
            tick_mark: 0,
            slot_second: i64::MIN,
            slot_end: 0,
            slot_max: 0,
            alert_ticks: u64::MAX,
            slow_seconds: 0.1,
            slow_ticks: u64::MAX,
            slow_value: None,
            slow_deleted: false,
        }
    }

    /// Close the current phase at `now` and start `next`.
    fn switch(&mut self, now: f64, next: Phase) {
        let spent = (now - self.mark).max(0.0);
        match self.phase {
            Phase::Busy => {
                self.busy += spent;
                self.load.get_or_insert_with(Box::default).add_busy(self.mark, now);
            }
            Phase::Idle => self.idle += spent,
            Phase::Stopped => {}
        }
        self.phase = next;
        self.mark = now;
    }

    /// `run_forever` starts.
    pub(crate) fn run_started(&mut self) {
        if !self.off {
            self.switch(clock::monotonic(), Phase::Busy);
        }
        if self.timed {
            self.tick_mark = clock::ticks();
        }
    }

    /// `run_forever` returns.
    pub(crate) fn run_ended(&mut self) {
        if !self.off {
            self.switch(clock::monotonic(), Phase::Stopped);
        }
    }

    /// A blocking poll starts / ends.
    pub(crate) fn poll_started(&mut self) {
        if !self.off {
            self.switch(clock::monotonic(), Phase::Idle);
        }
    }

    pub(crate) fn poll_ended(&mut self) {
        if !self.off {
            self.switch(clock::monotonic(), Phase::Busy);
        }
        if self.timed {
            self.tick_mark = clock::ticks();
        }
    }

    /// Where to record the lateness of timers firing at `now` (`None`: off).
    #[inline]
    pub(crate) fn lag_at(&mut self, now: f64) -> Option<&mut ferroloop_core::stats::Second> {
        if self.off {
            return None;
        }
        Some(self.lag.get_or_insert_with(Box::default).second(now))
    }

    /// The locals of a batch.
    #[inline]
    pub(crate) fn timing(&self) -> Timing {
        Timing {
            precise: self.timed,
            mark: self.tick_mark,
            slot_max: self.slot_max,
            slot_end: self.slot_end,
            alert: self.alert_ticks,
        }
    }

    /// A batch of `ntodo` ready items starts (they count as run).
    #[inline]
    pub(crate) fn batch_started(&mut self, ntodo: usize) {
        self.iterations += 1;
        self.callbacks += ntodo as u64;
    }

    /// Write back what a batch kept in locals; `left` items were not run
    /// (a callback raised out of the loop).
    #[inline]
    pub(crate) fn batch_ended(&mut self, timing: Option<&Timing>, left: usize) {
        if let Some(t) = timing.filter(|t| t.precise) {
            self.tick_mark = t.mark;
        }
        self.callbacks -= left as u64;
    }

    /// `loop.slow_callback_duration = value` (`None`: `del`).
    pub(crate) fn set_slow(&mut self, value: Option<&Bound<'_, PyAny>>, detect_ticks: u64) {
        let number = value.and_then(|v| {
            if v.is_instance_of::<pyo3::types::PyFloat>() || v.is_instance_of::<pyo3::types::PyInt>() {
                v.extract::<f64>().ok()
            } else {
                None
            }
        });
        self.slow_seconds = number.unwrap_or(f64::NAN);
        self.slow_value = value.map(|v| Held::new(v.clone().unbind()));
        self.slow_deleted = value.is_none();
        self.detect_changed(detect_ticks);
    }

    pub(crate) fn detect_changed(&mut self, detect_ticks: u64) {
        let timed = !self.off && self.activated.is_some();
        if timed {
            self.slow_ticks = if self.slow_seconds.is_nan() {
                u64::MAX
            } else {
                clock::seconds_to_ticks(self.slow_seconds)
            };
            if !self.timed {
                self.tick_mark = clock::ticks();
            }
        }
        self.alert_ticks = self.slow_ticks.min(detect_ticks);
        self.timed = timed;
        self.beating = timed || detect_ticks != u64::MAX;
    }

    /// Start timing callbacks (first read of the statistics, or asked for).
    /// A tick read after every callback is the one cost of statistics that
    /// shows on a chain of empty callbacks (4-5 %), so it waits until somebody
    /// looks; everything else is counted from the start. (A detector alone
    /// does not need it: its watchdog times what it sees blocking itself.)
    pub(crate) fn activate(&mut self, detect_ticks: u64) {
        if self.activated.is_none() && !self.off {
            self.activated = Some(clock::monotonic());
            self.detect_changed(detect_ticks);
        }
    }

    pub(crate) fn switch_off(&mut self, detect_ticks: u64) {
        self.off = true;
        self.detect_changed(detect_ticks);
    }
}

/// The loop's heartbeat for watchdog threads (see the module docs). `start`
/// is 0 when callbacks are not timed: the watchdog then estimates it.
#[derive(Debug, Default)]
pub(crate) struct Pulse {
    pub seq: AtomicU64,
    pub start: AtomicU64,
    pub item: AtomicUsize,
    /// The last timed callback that ran at least the alert threshold: its `seq` and length.
    pub long_seq: AtomicU64,
    pub long_ticks: AtomicU64,
    /// The attached detectors' thresholds, in ticks.
    pub thresholds: Mutex<Vec<u64>>,
}

impl Pulse {
    /// The smallest attached threshold (`u64::MAX` for none).
    pub(crate) fn detect_ticks(&self) -> u64 {
        let t = self
            .thresholds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        t.iter().copied().min().unwrap_or(u64::MAX)
    }

    /// A callback starts: returns its (odd) sequence number. (`seq` may be
    /// odd already: see `enter_current`.)
    #[inline]
    pub(crate) fn begin(&self, start: u64, item: &Ready) -> u64 {
        let seq = (self.seq.load(Ordering::Relaxed) + 1) | 1;
        self.start.store(start, Ordering::Relaxed);
        self.item.store(std::ptr::from_ref(item) as usize, Ordering::Relaxed);
        self.seq.store(seq, Ordering::Release);
        seq
    }

    /// The callback `seq` (still running) lasted `ticks`.
    #[inline]
    pub(crate) fn note_long(&self, seq: u64, ticks: u64) {
        self.long_ticks.store(ticks, Ordering::Relaxed);
        self.long_seq.store(seq, Ordering::Release);
    }

    /// The callback `seq` ended.
    #[inline]
    pub(crate) fn end(&self, seq: u64) {
        self.seq.store(seq + 1, Ordering::Release);
    }

    /// A detector was attached from inside a callback of a batch that runs
    /// without the pulse: count the rest of that batch as one callback begun
    /// now, of unknown handle (`item` 0), so that it is watched too.
    pub(crate) fn enter_current(&self, start: u64) {
        let seq = self.seq.load(Ordering::Relaxed);
        if seq & 1 == 0 {
            self.start.store(start, Ordering::Relaxed);
            self.item.store(0, Ordering::Relaxed);
            self.seq.store(seq + 1, Ordering::Release);
        }
    }

    /// The end of a batch run without the pulse: undo `enter_current`.
    pub(crate) fn settle(&self) {
        let seq = self.seq.load(Ordering::Relaxed);
        if seq & 1 == 1 {
            self.seq.store(seq + 1, Ordering::Release);
        }
    }
}

/// The end of a callback that may matter (long, the longest of its second
/// so far, or the first of a new second): count it, describe it.
/// Returns the batch's refreshed locals.
pub(crate) fn after_slow(slf: &Bound<'_, EventLoop>, item: &Ready, dt: u64, end: u64) -> Timing {
    let py = slf.py();
    let this = slf.get();
    let refreshed = |this: &EventLoop| {
        let st = this.st.get(py);
        Timing {
            precise: st.stats.timed,
            mark: end,
            slot_max: st.stats.slot_max,
            slot_end: st.stats.slot_end,
            alert: st.stats.alert_ticks,
        }
    };
    if let Ready::Native(h) = item {
        if h.get().is_cancelled(py) && dt < this.st.get(py).stats.alert_ticks {
            return refreshed(this);
        }
    }
    let (second, longest) = {
        let mut st = this.st.get_mut(py);
        let s = &mut st.stats;
        if end >= s.slot_end {
            let now = clock::monotonic();
            let second = now.floor() as i64;
            s.slot_second = second;
            s.slot_end = end.saturating_add(clock::seconds_to_ticks(second as f64 + 1.0 - now));
            s.slot_max = s.slowest.max_of(second);
        }
        if dt >= s.slow_ticks {
            s.slow_callbacks += 1;
        }
        let longest = dt > s.slot_max;
        if longest {
            s.slot_max = dt;
        }
        (s.slot_second, longest)
    };
    if longest {
        let text = describe(slf, item);
        this.st.get_mut(py).stats.slowest.offer(second, dt, text);
    }
    refreshed(this)
}

/// `repr()` of the handle asyncio would have run for `item`, never raising.
fn describe(slf: &Bound<'_, EventLoop>, item: &Ready) -> String {
    let py = slf.py();
    let text = super::run::describe(slf, item).and_then(|h| Ok(h.bind(py).repr()?.to_string()));
    text.unwrap_or_else(|_| "<handle without repr>".to_owned())
}

/// `EventLoop._stats()`: a dict of the current values.
pub(crate) fn snapshot<'py>(slf: &Bound<'py, EventLoop>) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
    let py = slf.py();
    let detect = slf.get().pulse.detect_ticks();
    slf.get().st.get_mut(py).stats.activate(detect);
    let st = slf.get().st.get(py);
    let s = &st.stats;
    let now = clock::monotonic();
    let open = (now - s.mark).max(0.0);
    let (busy, idle) = match s.phase {
        Phase::Busy => (s.busy + open, s.idle),
        Phase::Idle => (s.busy, s.idle + open),
        Phase::Stopped => (s.busy, s.idle),
    };
    let mut load = s.load.as_deref().cloned().unwrap_or_default();
    if s.phase == Phase::Busy {
        load.add_busy(s.mark, now);
    }
    let lag = s.lag.as_deref().map(|h| h.summary(now)).unwrap_or_default();
    let slowest = s.slowest.max(now.floor() as i64);
    let d = pyo3::types::PyDict::new(py);
    d.set_item("iterations", s.iterations)?;
    d.set_item("callbacks_run", s.callbacks)?;
    d.set_item("ready", st.ready.len())?;
    d.set_item("timers", (st.timers.len() as i64 - st.timer_cancelled_count).max(0))?;
    d.set_item("fds", st.fds.iter().count())?;
    d.set_item("transports", st.streams.len())?;
    d.set_item("bytes_read", s.bytes_read)?;
    d.set_item("bytes_written", s.bytes_written)?;
    d.set_item("busy_seconds", busy)?;
    d.set_item("idle_seconds", idle)?;
    d.set_item("load_1s", load.load(now, 1.0, s.created))?;
    d.set_item("load_10s", load.load(now, 10.0, s.created))?;
    d.set_item("lag_p50", lag.p50 as f64 / 1e9)?;
    d.set_item("lag_p99", lag.p99 as f64 / 1e9)?;
    d.set_item("lag_max", lag.max as f64 / 1e9)?;
    d.set_item("lag_samples", lag.count)?;
    match slowest {
        Some((ticks, text)) => d.set_item("slowest", (clock::ticks_to_seconds(ticks), text))?,
        None => d.set_item("slowest", py.None())?,
    }
    d.set_item("slow_callbacks", s.slow_callbacks)?;
    d.set_item("enabled", !s.off)?;
    d.set_item("timed_for", s.activated.map(|t| now - t))?;
    Ok(d)
}

/// A shared handle on the pulse (for a watchdog).
pub(crate) fn pulse_of(lp: &EventLoop) -> Arc<Pulse> {
    lp.pulse.clone()
}
