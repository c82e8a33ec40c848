//! `_Watchdog`: the thread behind `ferroloop.detect_blocking()`.
//!
//! The thread wakes every quarter of the threshold (at most every 50 ms) and
//! looks at the loop's pulse (`event_loop::stats::Pulse`) without the GIL.
//! A loop whose statistics were read times every callback and publishes its
//! start; otherwise the watchdog dates a callback from the samples between
//! which it first saw it (within half a period).
//! When one callback has been running for the threshold, it takes the GIL —
//! which a callback blocked in `time.sleep`, a socket call or a Python-level
//! CPU loop gives up within the interpreter's switch interval — checks that
//! the same callback is still running, and captures, before running any
//! Python code, the loop thread's stack (file, line, function of each frame),
//! the handle and the current task. Then it calls the Python reporter.
//! When the callback ends, a second call gives its whole duration. A callback
//! that holds the GIL until it ends (C code that never releases it) gets only
//! that second call, without a stack.
//!
//! # Invariants
//! - The thread holds the loop only weakly (a Python weak reference and a
//!   `Weak` pulse): an abandoned loop is not kept alive, and the thread ends
//!   with it.
//! - Python objects the thread owns are dropped with the GIL held; the
//!   thread never attaches to an interpreter that is shutting down (`try_attach`),
//!   and `ferroloop._blocking` stops every detector at exit.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use ferroloop_core::clock;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple, PyWeakrefReference};

use crate::event_loop::stats::Pulse;
use crate::event_loop::{EventLoop, Ready};

/// Frames captured at most (innermost kept).
const MAX_FRAMES: usize = 256;

/// Python objects the thread uses.
struct Shared {
    lp: Py<PyWeakrefReference>,
    report: Py<PyAny>,
    current_task: Py<PyAny>,
    current_frames: Py<PyAny>,
}

#[derive(Default)]
struct Control {
    stop: Mutex<bool>,
    wake: Condvar,
}

/// A running detector on one loop.
#[allow(missing_debug_implementations)]
#[pyclass(module = "ferroloop._ferroloop", name = "_Watchdog", frozen)]
pub struct Watchdog {
    threshold: u64,
    pulse: Weak<Pulse>,
    lp: Py<PyWeakrefReference>,
    control: Arc<Control>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Recompute the loop's alert threshold after detectors came or went.
fn retune(py: Python<'_>, lp: &EventLoop) {
    let detect = lp.pulse.detect_ticks();
    lp.st.get_mut(py).stats.detect_changed(detect);
}

#[pymethods]
impl Watchdog {
    /// `_Watchdog(loop, threshold, report, current_task, current_frames)`:
    /// `report(seq, seconds, handle, task, frames, finished)` is called from
    /// the watchdog's thread.
    #[new]
    fn new(
        lp: &Bound<'_, EventLoop>,
        threshold: f64,
        report: Py<PyAny>,
        current_task: Py<PyAny>,
        current_frames: Py<PyAny>,
    ) -> PyResult<Self> {
        let py = lp.py();
        if !(threshold > 0.0 && threshold.is_finite()) {
            return Err(PyValueError::new_err("threshold must be a positive number of seconds"));
        }
        let this = lp.get();
        this.check_closed(py)?;
        let ticks = clock::seconds_to_ticks(threshold).max(1);
        let pulse = crate::event_loop::stats::pulse_of(this);
        pulse
            .thresholds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(ticks);
        retune(py, this);
        let weak = PyWeakrefReference::new(lp)?.unbind();
        let shared = Shared {
            lp: weak.clone_ref(py),
            report,
            current_task,
            current_frames,
        };
        let control = Arc::new(Control::default());
        let period = Duration::from_secs_f64((threshold / 4.0).clamp(0.001, 0.05));
        let (c, p) = (control.clone(), Arc::downgrade(&pulse));
        let thread = std::thread::Builder::new()
            .name("ferroloop-watchdog".into())
            .spawn(move || watch(&p, ticks, period, &c, shared))
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the watchdog thread: {e}")))?;
        Ok(Self {
            threshold: ticks,
            pulse: Arc::downgrade(&pulse),
            lp: weak,
            control,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Stop the thread and wait for it (idempotent).
    fn stop(&self, py: Python<'_>) {
        let thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        let Some(thread) = thread else {
            return;
        };
        *self.control.stop.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.control.wake.notify_all();
        // The thread may be waiting for the GIL to report.
        py.detach(|| {
            let _ = thread.join();
        });
        if let Some(pulse) = self.pulse.upgrade() {
            let mut t = pulse.thresholds.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(i) = t.iter().position(|x| *x == self.threshold) {
                t.swap_remove(i);
            }
        }
        if let Some(lp) = self.lp.bind(py).upgrade() {
            if let Ok(lp) = lp.cast::<EventLoop>() {
                retune(py, lp.get());
            }
        }
    }

    #[getter]
    fn running(&self) -> bool {
        self.thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // An abandoned detector: let its thread end on its own.
        *self.control.stop.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.control.wake.notify_all();
    }
}

/// Sleep `period` or until stopped; true if stopped.
fn pause(control: &Control, period: Duration) -> bool {
    let stop = control.stop.lock().unwrap_or_else(PoisonError::into_inner);
    if *stop {
        return true;
    }
    let (stop, _) = control
        .wake
        .wait_timeout(stop, period)
        .unwrap_or_else(PoisonError::into_inner);
    *stop
}

/// When the watchdog first saw a callback, for a loop that does not time
/// callbacks (`Pulse::start` is 0): it began between the sample before and
/// this one, taken as the middle.
struct Sighting {
    seq: u64,
    start: u64,
}

fn watch(pulse: &Weak<Pulse>, threshold: u64, period: Duration, control: &Control, shared: Shared) {
    let half_period = clock::seconds_to_ticks(period.as_secs_f64() / 2.0);
    // The callback reported as blocking: (seq, start tick).
    let mut episode: Option<(u64, u64)> = None;
    let mut seen: Option<Sighting> = None;
    let mut last_sample = clock::ticks();
    loop {
        let stopping = pause(control, period);
        let Some(pulse) = pulse.upgrade() else {
            break;
        };
        let now = clock::ticks();
        let seq = pulse.seq.load(Ordering::Acquire);
        if let Some((e, start)) = episode {
            if seq == e {
                last_sample = now;
                if stopping {
                    break;
                }
                continue;
            }
            episode = None;
            let ticks = if pulse.long_seq.load(Ordering::Acquire) == e {
                pulse.long_ticks.load(Ordering::Relaxed)
            } else {
                // It ended between the last sample and this one.
                (now - (now - last_sample) / 2).saturating_sub(start)
            };
            // Stopped right after the blocking ended (e.g. the program
            // returned and `close()` stops the detector): still say so.
            if !report_end(&shared, e, ticks) || stopping {
                break;
            }
        }
        if stopping {
            break;
        }
        let previous = last_sample;
        last_sample = now;
        if seq & 1 == 0 {
            seen = None;
            continue;
        }
        let mut start = pulse.start.load(Ordering::Relaxed);
        if pulse.seq.load(Ordering::Acquire) != seq {
            continue;
        }
        if start == 0 {
            if seen.as_ref().is_none_or(|s| s.seq != seq) {
                seen = Some(Sighting {
                    seq,
                    start: now - (now - previous).min(2 * half_period) / 2,
                });
            }
            start = seen.as_ref().map_or(now, |s| s.start);
        }
        if now.saturating_sub(start) < threshold {
            continue;
        }
        match report_start(&shared, &pulse, seq, start) {
            Some(true) => {
                // Still running when captured (which can take a while: the GIL).
                last_sample = clock::ticks();
                episode = Some((seq, start));
            }
            Some(false) => {}
            None => break,
        }
    }
    // After the interpreter finalized (a detector still running at exit),
    // the references are left: nothing may touch Python then.
    if let Err(shared) = release(shared) {
        std::mem::forget(shared);
    }
}

/// Drop `shared` with the GIL held, or give it back if the interpreter is gone.
fn release(shared: Shared) -> Result<(), Shared> {
    let mut slot = Some(shared);
    Python::try_attach(|_py| drop(slot.take()));
    slot.map_or(Ok(()), Err)
}

/// The loop thread's Python stack as `[(filename, lineno, name), ...]`,
/// outermost first. Only C-level attribute reads: no Python code runs, so
/// the loop thread cannot move on meanwhile.
fn capture_frames<'py>(py: Python<'py>, lp: &Bound<'py, PyAny>, shared: &Shared) -> PyResult<Bound<'py, PyList>> {
    let tid = lp.getattr(pyo3::intern!(py, "_thread_id"))?;
    let frames = shared.current_frames.call0(py)?;
    let mut frame = frames.bind(py).get_item(tid)?;
    let mut out = Vec::new();
    while !frame.is_none() && out.len() < MAX_FRAMES {
        let code = frame.getattr(pyo3::intern!(py, "f_code"))?;
        out.push(PyTuple::new(
            py,
            [
                code.getattr(pyo3::intern!(py, "co_filename"))?,
                frame.getattr(pyo3::intern!(py, "f_lineno"))?,
                code.getattr(pyo3::intern!(py, "co_name"))?,
            ],
        )?);
        frame = frame.getattr(pyo3::intern!(py, "f_back"))?;
    }
    out.reverse();
    PyList::new(py, out)
}

/// Report a callback blocking since `start`. `Some(true)`: reported;
/// `Some(false)`: it ended meanwhile; `None`: the loop is gone.
fn report_start(shared: &Shared, pulse: &Pulse, seq: u64, start: u64) -> Option<bool> {
    Python::try_attach(|py| {
        let lp = shared.lp.bind(py).upgrade()?;
        let Ok(native) = lp.cast::<EventLoop>() else {
            return None;
        };
        if pulse.seq.load(Ordering::Acquire) != seq {
            // It ended while we waited for the GIL: it held it all along (C
            // code that does not release it). Say so, without a stack.
            let ticks = if pulse.long_seq.load(Ordering::Acquire) == seq {
                pulse.long_ticks.load(Ordering::Relaxed)
            } else {
                clock::ticks().saturating_sub(start)
            };
            let seconds = clock::ticks_to_seconds(ticks);
            let none = py.None();
            if let Err(e) = shared.report.call1(py, (seq, seconds, &none, &none, &none, true)) {
                e.write_unraisable(py, Some(shared.report.bind(py)));
            }
            return Some(false);
        }
        let item = pulse.item.load(Ordering::Relaxed) as *const Ready;
        // 0: a callback of unknown handle (`Pulse::enter_current`).
        let item = if item.is_null() {
            None
        } else {
            // SAFETY: `seq` is unchanged and we hold the GIL, so the loop
            // thread is inside this item's callback and its stack slot is
            // live (see `event_loop::stats`). Nothing since the check could
            // release the GIL, and `clone_ref` only takes new references, so
            // the copy is made before the loop thread can move on.
            Some(unsafe { &*item }.clone_ref(py))
        };
        // From here on the GIL can change hands (an allocation may run the
        // cycle collector and a finalizer): only owned copies are used.
        let task = shared.current_task.call1(py, (&lp,)).ok();
        let mut frames = capture_frames(py, &lp, shared).unwrap_or_else(|_| PyList::empty(py));
        if pulse.seq.load(Ordering::Acquire) != seq {
            // The loop moved on while the stack was read: it may not be this callback's.
            frames = PyList::empty(py);
        }
        let handle = item.and_then(|item| crate::event_loop::describe(native, &item).ok());
        let seconds = clock::ticks_to_seconds(clock::ticks().saturating_sub(start));
        if let Err(e) = shared.report.call1(py, (seq, seconds, handle, task, frames, false)) {
            e.write_unraisable(py, Some(shared.report.bind(py)));
        }
        Some(true)
    })
    .flatten()
}

/// The follow-up of episode `seq`: it lasted `ticks`. False if the loop is gone.
fn report_end(shared: &Shared, seq: u64, ticks: u64) -> bool {
    Python::try_attach(|py| {
        let seconds = clock::ticks_to_seconds(ticks);
        let none = py.None();
        if let Err(e) = shared.report.call1(py, (seq, seconds, &none, &none, &none, true)) {
            e.write_unraisable(py, Some(shared.report.bind(py)));
        }
        shared.lp.bind(py).upgrade().is_some()
    })
    .unwrap_or(false)
}
