//! `_run_once`: one iteration of the loop.
//!
//! Mirrors `base_events.BaseEventLoop._run_once` step by step:
//! 1. Compact cancelled timers: rebuild the heap when more than 100 are
//!    scheduled and more than half are cancelled, otherwise pop cancelled ones
//!    off the head.
//! 2. Timeout: 0 if callbacks are ready or the loop is stopping, else until
//!    the earliest timer (clamped to `[0, MAXIMUM_SELECT_TIMEOUT]`), else block.
//! 3. Poll and queue the reader/writer handles of ready fds
//!    (`_process_events`; a cancelled watcher is unregistered instead).
//! 4. Move timers with `when < time() + clock_resolution` to the ready queue.
//! 5. Run exactly the handles that are ready now (`ntodo`), skipping cancelled
//!    ones; in debug mode track `_current_handle` and warn about slow callbacks.
//!
//! # The poll
//! A blocking poll releases the GIL; a zero-timeout poll does not (it is a
//! cheap syscall). When nothing but the internal waker is registered, a
//! zero-timeout poll can report nothing that matters and is skipped; the
//! waker is drained at the next real poll. `EINTR` runs Python's signal
//! handlers (`check_signals`), so Ctrl-C raises `KeyboardInterrupt` out of
//! `run_forever` as it does from `selectors.EpollSelector.select`.

use ferroloop_core::reactor::{READ, WRITE};
use pyo3::prelude::*;

use super::registrations::{Entry, Reg};
use super::{EventLoop, Ready, Watcher};
use crate::handles::{release, run_handle, try_recycle, Handle, TimerHandle};
use crate::py::errors::os_error;
use crate::py::held::Held;
use crate::py::hooks::hooks;
use crate::transports::stream::{self, Flavor, StreamRef};
use crate::transports::stream_io::{self, IoKind};

const MIN_SCHEDULED_TIMER_HANDLES: usize = 100;
const MIN_CANCELLED_TIMER_HANDLES_FRACTION: f64 = 0.5;

/// Step 1: cancelled-timer compaction. Returns what to drop after the borrow ends.
fn compact_timers(py: Python<'_>, this: &EventLoop) -> Vec<Held<TimerHandle>> {
    let mut st = this.st.get_mut(py);
    let sched = st.timers.len();
    let mut dropped = Vec::new();
    if sched > MIN_SCHEDULED_TIMER_HANDLES
        && (st.timer_cancelled_count as f64 / sched as f64) > MIN_CANCELLED_TIMER_HANDLES_FRACTION
    {
        dropped = st
            .timers
            .retain_and_heapify(|t| !t.bind(py).as_super().get().is_cancelled(py));
        for t in &dropped {
            t.get().set_scheduled(false);
        }
        st.timer_cancelled_count = 0;
    } else {
        while let Some((_, head)) = st.timers.peek() {
            if !head.bind(py).as_super().get().is_cancelled(py) {
                break;
            }
            st.timer_cancelled_count -= 1;
            if let Some((_, t)) = st.timers.pop() {
                t.get().set_scheduled(false);
                dropped.push(t);
            }
        }
    }
    dropped
}

/// Step 2: the poll timeout in seconds (`None` blocks).
fn poll_timeout(py: Python<'_>, this: &EventLoop) -> Option<f64> {
    let st = this.st.get(py);
    if !st.ready.is_empty() || st.stopping {
        return Some(0.0);
    }
    st.timers.peek().map(|(when, _)| {
        let t = when - ferroloop_core::clock::monotonic();
        // min(max(0, t), MAXIMUM): NaN compares false both ways, as in Python.
        let t = if 0.0 >= t || t.is_nan() { 0.0 } else { t };
        t.min(ferroloop_core::reactor::MAXIMUM_SELECT_TIMEOUT)
    })
}

/// Step 3: poll and queue the watchers of ready fds.
fn poll_and_dispatch(slf: &Bound<'_, EventLoop>, timeout: Option<f64>) -> PyResult<()> {
    let py = slf.py();
    let this = slf.get();
    // The only registration a datagram transport under load: read ahead
    // instead of polling (transports::datagram). Only when nothing is
    // queued: the reader's item then runs first, so the read finds what
    // asyncio's read at that turn would (a callback before it could, say,
    // send on the socket and draw an ICMP error that asyncio's read reports
    // before the next datagram).
    let only = match this.st.get(py) {
        st if !st.ready.is_empty() => None,
        st => match st.fds.only() {
            Some(Entry {
                reg: Reg::Stream(s), ..
            }) if s.get().st.get(py).flavor == Flavor::Datagram => Some(s.clone_ref(py)),
            _ => None,
        },
    };
    if let Some(s) = only {
        if crate::transports::datagram::read_ahead(py, this, s.get()) {
            this.st.get_mut(py).ready.push(Ready::IoRead(s));
            return Ok(());
        }
    }
    let mut events = {
        let mut st = this.st.get_mut(py);
        if timeout == Some(0.0) && st.fds.is_empty() {
            return Ok(());
        }
        st.polling = true;
        st.woken = false;
        st.events
            .take()
            .unwrap_or_else(|| ferroloop_core::reactor::Events::with_capacity(256))
    };
    let blocking = timeout != Some(0.0);
    let res = if blocking {
        this.st.get_mut(py).stats.poll_started();
        let poller = &this.poller;
        py.detach(|| poller.poll(&mut events, timeout))
    } else {
        this.poller.poll(&mut events, timeout)
    };
    let mut cancelled_watchers = Vec::new();
    {
        let mut st = this.st.get_mut(py);
        st.polling = false;
        if blocking {
            st.stats.poll_ended();
        }
        for ev in events.iter() {
            if ev.token == super::WAKER_TOKEN {
                // Edge-triggered: nothing to drain.
                continue;
            }
            // A dead token is an event of a registration removed since (its
            // fd may already belong to somebody else): drop it.
            let Some(entry) = st.fds.by_token(ev.token) else {
                continue;
            };
            let fd = entry.fd;
            let reg = match &entry.reg {
                Reg::Watch(reg) => reg,
                Reg::Stream(stream) => {
                    let items = stream_events(py, stream, ev.ready);
                    for item in items.into_iter().flatten() {
                        st.ready.push(item);
                    }
                    continue;
                }
                Reg::Listener(listener) => {
                    if ev.ready & READ != 0 {
                        let l = listener.clone_ref(py);
                        st.ready.push(Ready::Accept(l));
                    }
                    continue;
                }
            };
            // Reader before writer, as `_process_events` does.
            let mut queue: [Option<_>; 2] = [None, None];
            for (slot, (bit, watcher)) in [(READ, &reg.reader), (WRITE, &reg.writer)].into_iter().enumerate() {
                let Some(w) = watcher else { continue };
                if ev.ready & bit == 0 || reg.mask & bit == 0 {
                    continue;
                }
                match w {
                    Watcher::Handle(h) if h.get().is_cancelled(py) => cancelled_watchers.push((fd, bit)),
                    Watcher::Handle(h) => queue[slot] = Some(Ready::Native(h.clone_ref(py))),
                    Watcher::Op(op) => queue[slot] = Some(Ready::SockOp(op.clone_ref(py))),
                }
            }
            for item in queue.into_iter().flatten() {
                st.ready.push(item);
            }
        }
        st.events = Some(events);
    }
    for (fd, which) in cancelled_watchers {
        super::fd_watch::remove_fd(slf, fd, which)?;
    }
    match res {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => py.check_signals(),
        Err(e) => Err(os_error(&e)),
    }
}

/// The ready items of a transport event: reader before writer, each only
/// if that side is registered (the transport notes the side's epoch).
fn stream_events(py: Python<'_>, stream: &StreamRef, ready: u32) -> [Option<Ready>; 2] {
    let mut st = stream.get().st.get_mut(py);
    let read = ready & READ != 0 && st.interest & crate::transports::stream::READING != 0;
    let write = ready & WRITE != 0 && st.interest & crate::transports::stream::WRITING != 0;
    if read {
        st.queued_read_epoch = st.read_epoch;
    }
    if write {
        st.queued_write_epoch = st.write_epoch;
    }
    [
        read.then(|| Ready::IoRead(stream.clone_ref(py))),
        write.then(|| Ready::IoWrite(stream.clone_ref(py))),
    ]
}

/// The pre-poll step: register the writers of transports that queued data
/// during the iteration, then bring the kernel registrations in line with
/// what the transports want.
fn before_poll(py: Python<'_>, this: &EventLoop) {
    let (writers, retune) = {
        let st = this.st.get(py);
        (!st.new_writers.is_empty(), !st.retune.is_empty())
    };
    if writers {
        let pending = std::mem::take(&mut this.st.get_mut(py).new_writers);
        for stream in pending {
            if let Some(kind) = stream_io::register_pending_writer(py, &stream) {
                this.st.get_mut(py).ready.push(Ready::io(stream, kind));
            }
        }
    }
    if writers || retune {
        let pending = std::mem::take(&mut this.st.get_mut(py).retune);
        for stream in pending {
            let applied = stream::apply_interest(py, stream.bind(py), stream.get());
            if applied.is_ok() && crate::transports::datagram::stashed_read(py, stream.get()) {
                this.st.get_mut(py).ready.push(Ready::IoRead(stream));
                continue;
            }
            if let Err(e) = applied {
                stream.get().st.get_mut(py).io_errno = e
                    .value(py)
                    .getattr("errno")
                    .and_then(|v| v.extract::<i32>())
                    .unwrap_or(0);
                let kind = IoKind::RegisterFailed;
                this.st.get_mut(py).ready.push(Ready::io(stream, kind));
            }
        }
    }
}

/// Step 4: move due timers to the ready queue.
fn fire_timers(py: Python<'_>, this: &EventLoop) {
    let mut guard = this.st.get_mut(py);
    let st = &mut *guard;
    if st.timers.is_empty() {
        return;
    }
    let now = ferroloop_core::clock::monotonic();
    let end_time = now + st.clock_resolution;
    // Timer lag for `ferroloop.stats()`, taken at the first due timer.
    let mut lag = None;
    while let Some((when, _)) = st.timers.peek() {
        if when >= end_time {
            break;
        }
        if lag.is_none() {
            lag = Some(st.stats.lag_at(now));
        }
        if let Some(Some(second)) = lag.as_mut() {
            second.record(((now - when).max(0.0) * 1e9) as u64);
        }
        if let Some((_, t)) = st.timers.pop() {
            t.get().set_scheduled(false);
            st.ready.push(Ready::Native(t.into_handle(py)));
        }
    }
}

fn run_foreign(py: Python<'_>, obj: &Held<PyAny>) -> PyResult<()> {
    let obj = obj.bind(py);
    if obj.getattr(pyo3::intern!(py, "_cancelled"))?.is_truthy()? {
        return Ok(());
    }
    obj.call_method0(pyo3::intern!(py, "_run"))?;
    Ok(())
}

fn run_item(py: Python<'_>, item: &Ready) -> PyResult<()> {
    match item {
        Ready::Native(h) => run_handle(py, h),
        Ready::Foreign(o) => run_foreign(py, o),
        Ready::Accept(l) => run_listener(py, l, crate::server::Step::Accept),
        Ready::SetUp(l) => run_listener(py, l, crate::server::Step::SetUp),
        Ready::SockOp(op) => crate::sock_ops::on_ready(py, op),
        io => match io.as_io() {
            Some((stream, kind)) => run_io(py, stream, kind),
            None => Ok(()),
        },
    }
}

/// A listener's step, with `Handle._run`'s error handling (see `run_io`):
/// an `accept()` error other than running out of resources goes to the
/// exception handler, as from asyncio's `_accept_connection`.
fn run_listener(py: Python<'_>, listener: &Held<crate::server::Listener>, step: crate::server::Step) -> PyResult<()> {
    match crate::server::on_ready(py, listener, step) {
        Ok(()) => Ok(()),
        Err(err) => {
            if err.is_instance_of::<pyo3::exceptions::PySystemExit>(py)
                || err.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py)
            {
                return Err(err);
            }
            let handle = crate::server::error_handle(py, listener)?;
            let exc = err.into_value(py);
            hooks(py)?.report_error.call1(py, (handle, exc))?;
            Ok(())
        }
    }
}

/// A transport event, with `Handle._run`'s error handling: `SystemExit` and
/// `KeyboardInterrupt` propagate, anything else goes to the exception
/// handler as "Exception in callback <the transport's method>".
fn run_io(py: Python<'_>, stream: &StreamRef, kind: IoKind) -> PyResult<()> {
    match stream_io::on_event(py, stream, kind) {
        Ok(()) => Ok(()),
        Err(err) => {
            if err.is_instance_of::<pyo3::exceptions::PySystemExit>(py)
                || err.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py)
            {
                return Err(err);
            }
            let handle = io_handle(py, stream, kind)?;
            // The callback removed its own reader/writer (the epoch moved
            // on from the one the event was queued with): asyncio's handle
            // was cancelled while it ran (its callback and args cleared).
            let cancelled = {
                let st = stream.get().st.get(py);
                match kind {
                    IoKind::Read => st.queued_read_epoch != st.read_epoch,
                    IoKind::Write => st.queued_write_epoch != st.write_epoch,
                    _ => false,
                }
            };
            if cancelled {
                handle.bind(py).call_method0(pyo3::intern!(py, "cancel"))?;
            }
            let exc = err.into_value(py);
            hooks(py)?.report_error.call1(py, (handle, exc))?;
            Ok(())
        }
    }
}

/// A Python handle describing a transport event (for error reports and
/// debug mode, which need one; never made on the normal path).
fn io_handle(py: Python<'_>, stream: &StreamRef, kind: IoKind) -> PyResult<Py<Handle>> {
    let obj = stream.bind(py);
    let method = match kind {
        IoKind::Read => "_read_ready",
        _ if stream.get().st.get(py).flavor == Flavor::Datagram => "_sendto_ready",
        _ => "_write_ready",
    };
    let callback = obj.getattr(method)?;
    // A transport whose connection was lost has no loop any more: the
    // handle belongs to the running one.
    let lp = match stream::loop_of(py, stream.get()) {
        Some(lp) => lp.to_py(py),
        None => py
            .import("asyncio.events")?
            .call_method0("_get_running_loop")?
            .cast_into::<EventLoop>()?
            .unbind(),
    };
    let ctx = crate::py::call::copy_context(py)?;
    Py::new(
        py,
        Handle::new(
            callback.unbind(),
            pyo3::types::PyTuple::empty(py).unbind(),
            ctx,
            lp,
            None,
        ),
    )
}

/// A Python handle describing a native ready item in debug mode (asyncio
/// sets `_current_handle` and reports slow callbacks with it): the reader
/// or writer handle asyncio would have run for the same event.
pub(crate) fn describe(slf: &Bound<'_, EventLoop>, item: &Ready) -> PyResult<Py<PyAny>> {
    let py = slf.py();
    if let Some((stream, kind)) = item.as_io() {
        return Ok(io_handle(py, stream, kind)?.into_any());
    }
    let (callback, args) = match item {
        Ready::Accept(l) | Ready::SetUp(l) => crate::server::debug_callback(slf, l)?,
        Ready::SockOp(op) => crate::sock_ops::debug_callback(slf, op)?,
        other => return Ok(other.as_any(py)),
    };
    let ctx = crate::py::call::copy_context(py)?;
    Ok(Py::new(
        py,
        Handle::new(callback.unbind(), args.unbind(), ctx, slf.clone().unbind(), None),
    )?
    .into_any())
}

/// The debug branch of step 5.
fn run_item_debug(slf: &Bound<'_, EventLoop>, item: &Ready) -> PyResult<()> {
    let py = slf.py();
    if let Ready::Native(h) = item {
        if h.get().is_cancelled(py) {
            return Ok(());
        }
    }
    let handle = describe(slf, item)?;
    let current = pyo3::intern!(py, "_current_handle");
    slf.setattr(current, &handle)?;
    let t0 = ferroloop_core::clock::monotonic();
    let res = run_item(py, item);
    let dt = ferroloop_core::clock::monotonic() - t0;
    let res = res.and_then(|()| {
        let slow: f64 = slf.getattr(pyo3::intern!(py, "slow_callback_duration"))?.extract()?;
        if dt >= slow {
            hooks(py)?.slow_callback.call1(py, (slf, &handle, dt))?;
        }
        Ok(())
    });
    slf.setattr(current, py.None())?;
    res
}

/// Keep a finished handle for reuse if nothing else can see it.
// Out of `run_once` it costs a call per finished handle: 20,000 timers
// (1 in 4 cancelled) run 0.5 % more instructions in the loop (callgrind).
#[allow(clippy::inline_always)]
#[inline(always)]
fn recycle(py: Python<'_>, this: &EventLoop, h: Held<Handle>) {
    match h.into_timer(py) {
        Ok(t) => {
            if this.st.get(py).timer_pool.len() < super::state::HANDLE_POOL_SIZE
                && try_recycle(py, t.bind(py).as_super().as_unbound())
            {
                this.st.get_mut(py).timer_pool.push(t);
            }
        }
        Err(h) => {
            if this.st.get(py).pool.len() < super::state::HANDLE_POOL_SIZE && try_recycle(py, &h) {
                this.st.get_mut(py).pool.push(h);
            }
        }
    }
}

pub(super) fn run_once(slf: &Bound<'_, EventLoop>) -> PyResult<()> {
    let py = slf.py();
    let this = slf.get();
    this.check_forked()?;
    let dropped = compact_timers(py, this);
    for t in &dropped {
        release(py, t.bind(py).as_super().as_unbound(), false);
    }
    drop(dropped);
    before_poll(py, this);
    let timeout = poll_timeout(py, this);
    poll_and_dispatch(slf, timeout)?;
    fire_timers(py, this);

    let (ntodo, observed) = {
        let mut st = this.st.get_mut(py);
        let ntodo = st.ready.begin_batch();
        st.stats.batch_started(ntodo);
        (ntodo, st.stats.beating.then(|| st.stats.timing()))
    };
    if let Some(t) = observed {
        return run_batch_observed(slf, ntodo, t);
    }
    for done in 1..=ntodo {
        let popped = this.st.get_mut(py).ready.pop();
        let Some(item) = popped else {
            // A callback emptied the queue (`close()` does).
            this.st.get_mut(py).stats.batch_ended(None, ntodo + 1 - done);
            break;
        };
        let res = if this.debug(py) {
            run_item_debug(slf, &item)
        } else {
            run_item(py, &item)
        };
        finish_item(py, this, item);
        if res.is_err() {
            this.st.get_mut(py).stats.batch_ended(None, ntodo - done);
            this.pulse.settle();
            return res;
        }
    }
    let mut st = this.st.get_mut(py);
    if st.stats.beating {
        // A detector came during the batch (`Pulse::enter_current`).
        this.pulse.settle();
    }
    st.ready.trim();
    Ok(())
}

/// Step 5 with the pulse beating (a blocking-call detector is attached, or
/// statistics were read) and, once statistics were read, every callback
/// timed (see `stats`). Kept apart so that the plain loop stays as it was.
#[inline(never)]
fn run_batch_observed(slf: &Bound<'_, EventLoop>, ntodo: usize, mut t: super::stats::Timing) -> PyResult<()> {
    let py = slf.py();
    let this = slf.get();
    for done in 1..=ntodo {
        let popped = this.st.get_mut(py).ready.pop();
        let Some(item) = popped else {
            this.st.get_mut(py).stats.batch_ended(Some(&t), ntodo + 1 - done);
            break;
        };
        let seq = this.pulse.begin(t.start(), &item);
        let res = if this.debug(py) {
            run_item_debug(slf, &item)
        } else {
            run_item(py, &item)
        };
        if t.precise {
            let end = ferroloop_core::clock::ticks();
            let dt = end.wrapping_sub(t.mark);
            t.mark = end;
            if dt >= t.alert() {
                // Before the end: a watchdog reporting it reads the exact length.
                this.pulse.note_long(seq, dt);
            }
            this.pulse.end(seq);
            if t.notable(dt, end) {
                this.st.get_mut(py).stats.tick_mark = end;
                t = super::stats::after_slow(slf, &item, dt, end);
            }
        } else {
            this.pulse.end(seq);
        }
        finish_item(py, this, item);
        if res.is_err() {
            this.st.get_mut(py).stats.batch_ended(Some(&t), ntodo - done);
            return res;
        }
    }
    let mut st = this.st.get_mut(py);
    st.stats.batch_ended(Some(&t), 0);
    st.ready.trim();
    Ok(())
}

/// Release a ready item after its callback (recycling a handle).
// Left to itself, the compiler keeps this out of `run_once`: 16 more
// instructions per iteration of a call_soon chain (callgrind).
#[allow(clippy::inline_always)]
#[inline(always)]
fn finish_item(py: Python<'_>, this: &EventLoop, item: Ready) {
    if let Ready::Native(h) = item {
        release(py, &h, false);
        recycle(py, this, h);
    } else {
        drop(item);
    }
}
