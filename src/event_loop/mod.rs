//! The native event loop: `ferroloop._ferroloop.EventLoop`.
//!
//! This pyclass holds the per-callback machinery of asyncio's
//! `BaseEventLoop`/`BaseSelectorEventLoop`: the ready queue, the timer heap,
//! the epoll reactor and the fd watchers. The Python class `ferroloop.Loop`
//! derives from it *and* from asyncio's own `SelectorEventLoop`, so every
//! method not defined here (lifecycle set-up, tasks, executors, exception
//! handling, networking) is asyncio's code running on this native core.
//!
//! Module map (each mirrors a piece of asyncio):
//! - `schedule`: `call_soon`, `call_later`, `call_at`, `call_soon_threadsafe`.
//! - `run`: `_run_once`, the loop iteration.
//! - `fd_watch`: `_add_reader`/`_remove_reader`/`_add_writer`/`_remove_writer`.
//! - `state`: the attributes `BaseEventLoop.__init__` creates.
//! - `entry`: raw vectorcall entry points of the hot methods.
//! - `stats`: the counters behind `ferroloop.stats()` and the detector's pulse.
//!
//! # Invariants
//! - `st` is never borrowed across a call into Python or across `detach`.
//! - The epoll fd and the waker are only closed by `_close_native`, which
//!   `close()` reaches only when the loop is not running.
//! - After `fork()`, the child never touches the epoll instance it inherited:
//!   every entry point compares the fork generation first.

pub(crate) mod entry;
pub(crate) mod fd_watch;
pub(crate) mod registrations;
mod run;
pub(crate) mod schedule;
mod state;
pub(crate) mod stats;
pub(crate) mod transport_map;

use std::sync::atomic::{AtomicU64, Ordering};

use ferroloop_core::reactor::{Poller, Trigger, Waker, READ};
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use crate::handles::{Handle, TimerHandle};
use crate::py::cell::GilCell;
use crate::py::errors::os_error;
pub(crate) use run::describe;
pub(crate) use state::{FdReg, LoopState, Ready, Watcher};

/// The reactor token of the loop's own waker (never a registry token: slot
/// indexes stay far below `u32::MAX`).
pub(crate) const WAKER_TOKEN: u64 = u64::MAX;

/// Bytes a transport reads per readiness event (asyncio's `max_size`, 256 KiB).
pub(crate) const READ_SIZE: usize = 256 * 1024;

/// Reads above this size go straight into their `bytes` next time (a copy
/// from the shared buffer costs more than the allocation then).
pub(crate) const BIG_READ: usize = 8 * 1024;

/// Incremented in every child process right after `fork()` (see `lib.rs`).
pub(crate) static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

/// The native base of `ferroloop.Loop`.
#[pyclass(module = "ferroloop._ferroloop", name = "EventLoop", subclass, frozen)]
#[derive(Debug)]
pub struct EventLoop {
    pub(crate) st: GilCell<LoopState>,
    pub(crate) poller: Poller,
    pub(crate) waker: Waker,
    pub(crate) pulse: std::sync::Arc<stats::Pulse>,
    fork_generation: u64,
}

impl EventLoop {
    pub(crate) fn debug(&self, py: Python<'_>) -> bool {
        self.st.get(py).debug
    }

    /// `get_debug()`: what `set_debug()` was given.
    pub(crate) fn debug_value(&self, py: Python<'_>) -> Py<PyAny> {
        debug_of(&self.st.get(py), py)
    }

    /// `debug_value`, or None while the state is borrowed exclusively (the
    /// caller then takes the path that reports that).
    #[inline]
    pub(crate) fn try_debug_value(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.st.try_get().map(|st| debug_of(&st, py))
    }

    /// `BaseEventLoop._timer_handle_cancelled`.
    pub(crate) fn timer_handle_cancelled(&self, py: Python<'_>) {
        self.st.get_mut(py).timer_cancelled_count += 1;
    }

    pub(crate) fn is_forked(&self) -> bool {
        FORK_GENERATION.load(Ordering::Relaxed) != self.fork_generation
    }

    pub(crate) fn check_forked(&self) -> PyResult<()> {
        if self.is_forked() {
            return Err(PyRuntimeError::new_err(
                "this event loop belongs to the parent process and cannot be used after fork(); \
                 create a new event loop in the child",
            ));
        }
        Ok(())
    }

    /// `BaseEventLoop._check_closed` plus the fork check.
    pub(crate) fn check_closed(&self, py: Python<'_>) -> PyResult<()> {
        if self.st.get(py).closed {
            return Err(PyRuntimeError::new_err("Event loop is closed"));
        }
        self.check_forked()
    }

    /// `_transports[fd] = transport` (a weak entry: the payload's address).
    pub(crate) fn remember_transport(&self, py: Python<'_>, fd: std::os::fd::RawFd, payload: usize) {
        self.st.get_mut(py).streams.insert(fd, payload);
    }

    /// Drop `fd`'s entry if it is still this transport's.
    pub(crate) fn forget_transport(&self, py: Python<'_>, fd: std::os::fd::RawFd, payload: usize) {
        if let Some(mut st) = self.st.try_get_mut() {
            if st.streams.get(&fd) == Some(&payload) {
                st.streams.remove(&fd);
            }
        }
        let _ = py;
    }

    /// True while `listener` is the registration of `fd` (false once
    /// `_stop_serving`, `_remove_reader` or a new reader removed it, even if
    /// its accept was already queued in this iteration).
    pub(crate) fn serves(
        &self,
        py: Python<'_>,
        fd: std::os::fd::RawFd,
        listener: &crate::py::held::Held<crate::server::Listener>,
    ) -> bool {
        matches!(self.st.get(py).fds.get(fd), Some(registrations::Reg::Listener(l)) if l.as_ptr() == listener.as_ptr())
    }

    /// Serve `fd` natively (`_start_serving`): replaces any reader of `fd`.
    pub(crate) fn add_listener(
        &self,
        py: Python<'_>,
        fd: std::os::fd::RawFd,
        listener: crate::py::held::Held<crate::server::Listener>,
    ) -> PyResult<()> {
        self.check_closed(py)?;
        let old = {
            let mut st = self.st.get_mut(py);
            let old = st.fds.remove(fd);
            if old.is_some() {
                let _ = self.poller.deregister(fd);
            }
            let token = st.fds.insert(fd, registrations::Reg::Listener(listener));
            if let Err(e) = self.poller.register(fd, READ, token, Trigger::Level) {
                let gone = st.fds.remove(fd);
                drop(st);
                drop(gone);
                drop(old);
                return Err(os_error(&e));
            }
            old
        };
        if let Some(registrations::Reg::Watch(w)) = old {
            let w = *w;
            for h in [w.reader, w.writer].into_iter().flatten() {
                h.cancel(py)?;
            }
        }
        Ok(())
    }

    /// Queue a listener's next step.
    pub(crate) fn queue_listener(
        &self,
        py: Python<'_>,
        listener: crate::py::held::Held<crate::server::Listener>,
        step: crate::server::Step,
    ) {
        self.st.get_mut(py).ready.push(Ready::listener(listener, step));
    }

    /// Apply `stream`'s wanted interest right before the next poll.
    pub(crate) fn want_retune(&self, py: Python<'_>, stream: crate::transports::stream::StreamRef) {
        self.st.get_mut(py).retune.push(stream);
    }

    /// Register `stream`'s writer right before the next poll.
    pub(crate) fn want_writer(&self, py: Python<'_>, stream: crate::transports::stream::StreamRef) {
        self.st.get_mut(py).new_writers.push(stream);
    }

    /// One `recv` into the shared read buffer, returned as exact-size
    /// `bytes` (`None` at end of file).
    pub(crate) fn recv_bytes<'py>(
        &self,
        py: Python<'py>,
        fd: std::os::fd::RawFd,
        direct: bool,
    ) -> std::io::Result<Option<crate::py::spare_bytes::Lent<'py>>> {
        self.read_bytes_with(py, fd, direct, ferroloop_core::net::recv)
    }

    /// [`Self::recv_bytes`] with `read(2)` (pipes: `os.read(fd, max_size)`).
    pub(crate) fn read_bytes<'py>(
        &self,
        py: Python<'py>,
        fd: std::os::fd::RawFd,
        direct: bool,
    ) -> std::io::Result<Option<crate::py::spare_bytes::Lent<'py>>> {
        self.read_bytes_with(py, fd, direct, ferroloop_core::net::read)
    }

    fn read_bytes_with<'py>(
        &self,
        py: Python<'py>,
        fd: std::os::fd::RawFd,
        direct: bool,
        read: fn(std::os::fd::RawFd, &mut [u8]) -> std::io::Result<usize>,
    ) -> std::io::Result<Option<crate::py::spare_bytes::Lent<'py>>> {
        if direct {
            // Large reads: into the result itself, shrunk to size (asyncio's
            // `sock.recv(max_size)` does the same).
            let data = crate::py::buffer::new_bytes_with(py, READ_SIZE, |buf| read(fd, buf))?;
            self.st.get_mut(py).stats.bytes_read += data.as_bytes().len() as u64;
            return Ok((!data.as_bytes().is_empty()).then(|| crate::py::spare_bytes::Lent::new(data)));
        }
        let mut st = self.st.get_mut(py);
        if st.scratch.is_empty() {
            st.scratch = vec![0; READ_SIZE];
        }
        let n = read(fd, &mut st.scratch)?;
        if n == 0 {
            return Ok(None);
        }
        st.stats.bytes_read += n as u64;
        // Making a bytes object runs no Python code, so the borrow may stay.
        let st = &mut *st;
        Ok(Some(st.spare.make(py, &st.scratch[..n])))
    }

    /// One `recvfrom` into the shared read buffer: the datagram as exact-size
    /// `bytes` (empty for an empty datagram) and its sender.
    pub(crate) fn recvfrom_bytes<'py>(
        &self,
        py: Python<'py>,
        fd: std::os::fd::RawFd,
    ) -> std::io::Result<(crate::py::spare_bytes::Lent<'py>, ferroloop_core::net::SockAddr)> {
        let mut st = self.st.get_mut(py);
        if st.scratch.is_empty() {
            st.scratch = vec![0; READ_SIZE];
        }
        let (n, from) = ferroloop_core::net::recv_from(fd, &mut st.scratch)?;
        st.stats.bytes_read += n as u64;
        // Making a bytes object runs no Python code, so the borrow may stay.
        let st = &mut *st;
        Ok((st.spare.make(py, &st.scratch[..n]), from))
    }

    /// Give back the `bytes` of a read once its consumer returned (kept for
    /// the next read if nothing else refers to it).
    pub(crate) fn give_back_bytes(&self, py: Python<'_>, data: crate::py::spare_bytes::Lent<'_>) {
        self.st.get_mut(py).spare.offer(data);
    }

    /// The native transport using `fd`, if any.
    pub(crate) fn native_transport_at(&self, py: Python<'_>, fd: std::os::fd::RawFd) -> Option<Py<PyAny>> {
        let addr = *self.st.get(py).streams.get(&fd)?;
        let class = crate::transports::stream::class();
        // SAFETY: entries are removed before their transport dies (see
        // `LoopState::streams`), so the address is a live payload.
        let obj = unsafe { class.object_of(addr as *const crate::transports::stream::StreamTransport) };
        // SAFETY: a live object; we take a new reference.
        Some(unsafe { Bound::from_borrowed_ptr(py, obj) }.unbind())
    }

    /// `sock.recv(n)` into exact-size `bytes`: through the shared buffer for
    /// sizes up to `READ_SIZE`, straight into the result above that, and also
    /// when the last `sock_recv` on this fd (a socket operations' edge
    /// registration) returned more than `BIG_READ` bytes: a large read is
    /// then cheaper to shrink than to copy.
    pub(crate) fn recv_sized<'py>(
        &self,
        py: Python<'py>,
        fd: std::os::fd::RawFd,
        n: usize,
    ) -> std::io::Result<Bound<'py, pyo3::types::PyBytes>> {
        if n > READ_SIZE {
            return crate::py::buffer::new_bytes_with(py, n, |buf| ferroloop_core::net::recv(fd, buf));
        }
        let predicted = n > BIG_READ && self.big_reads(py, fd);
        let data = if predicted {
            crate::py::buffer::new_bytes_with(py, n, |buf| ferroloop_core::net::recv(fd, buf))?
        } else {
            let mut st = self.st.get_mut(py);
            if st.scratch.is_empty() {
                st.scratch = vec![0; READ_SIZE];
            }
            let got = ferroloop_core::net::recv(fd, &mut st.scratch[..n])?;
            // Allocating a bytes object runs no Python code, so the borrow may stay.
            pyo3::types::PyBytes::new(py, &st.scratch[..got])
        };
        let big = data.as_bytes().len() > BIG_READ;
        if big != predicted {
            self.set_big_reads(py, fd, big);
        }
        Ok(data)
    }

    fn big_reads(&self, py: Python<'_>, fd: std::os::fd::RawFd) -> bool {
        matches!(self.st.get(py).fds.get(fd), Some(registrations::Reg::Watch(w)) if w.big_reads)
    }

    fn set_big_reads(&self, py: Python<'_>, fd: std::os::fd::RawFd, big: bool) {
        if let Some(registrations::Reg::Watch(w)) = self.st.get_mut(py).fds.get_mut(fd) {
            w.big_reads = big;
        }
    }

    pub(crate) fn is_closed_flag(&self, py: Python<'_>) -> bool {
        self.st.get(py).closed
    }

    /// Wake a poll blocked in another thread (only needed while one is in progress).
    pub(crate) fn wake_if_polling(&self, py: Python<'_>) {
        let mut st = self.st.get_mut(py);
        if st.polling && !st.woken {
            st.woken = true;
            self.waker.wake();
        }
    }
}

/// Set (`Some`) or delete `slow_callback_duration`.
fn store_slow(slf: &Bound<'_, EventLoop>, value: Option<&Bound<'_, PyAny>>) {
    let py = slf.py();
    let this = slf.get();
    let detect = this.pulse.detect_ticks();
    let old = {
        let mut st = this.st.get_mut(py);
        let old = st.stats.slow_value.take();
        st.stats.set_slow(value, detect);
        old
    };
    drop(old);
}

/// What reading or deleting a deleted `slow_callback_duration` raises (as for
/// any missing instance attribute).
fn no_slow_attribute(slf: &Bound<'_, EventLoop>) -> PyErr {
    let name = slf
        .get_type()
        .name()
        .map_or_else(|_| "EventLoop".to_owned(), |n| n.to_string());
    pyo3::exceptions::PyAttributeError::new_err(format!("'{name}' object has no attribute 'slow_callback_duration'"))
}

fn ignore_empty(value: &Bound<'_, PyAny>, what: &str) -> PyResult<()> {
    if value.len()? == 0 {
        Ok(())
    } else {
        Err(PyTypeError::new_err(format!(
            "ferroloop keeps {what} natively; only an empty container may be assigned"
        )))
    }
}

#[pymethods]
impl EventLoop {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let poller = Poller::new().map_err(|e| os_error(&e))?;
        let waker = Waker::new().map_err(|e| os_error(&e))?;
        poller
            .register(waker.as_raw_fd(), READ, WAKER_TOKEN, Trigger::Edge)
            .map_err(|e| os_error(&e))?;
        Ok(Self {
            st: GilCell::new(LoopState::new()),
            poller,
            waker,
            pulse: std::sync::Arc::default(),
            fork_generation: FORK_GENERATION.load(Ordering::Relaxed),
        })
    }

    // call_soon, call_soon_threadsafe, call_later and call_at are raw
    // vectorcall methods installed by `entry::install`.

    /// `BaseEventLoop._add_callback`: queue an existing handle unless cancelled.
    fn _add_callback(slf: &Bound<'_, Self>, handle: Bound<'_, PyAny>) -> PyResult<()> {
        schedule::add_callback(slf, handle)
    }

    // `_write_to_self`, `_run_once` and `is_closed` are fastcall methods
    // installed by `entry::install`.

    /// The `while True: self._run_once(); if self._stopping: break` of `run_forever`.
    fn _run_forever_inner(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        {
            let mut st = this.st.get_mut(py);
            st.running = true;
            st.stats.run_started();
        }
        let res = loop {
            if let Err(e) = run::run_once(slf) {
                break Err(e);
            }
            if this.st.get(py).stopping {
                break Ok(());
            }
        };
        let mut st = this.st.get_mut(py);
        st.running = false;
        st.stats.run_ended();
        st.retrack_all(py);
        res
    }

    /// What `ferroloop.stats()` reads (a dict; see `stats::snapshot`).
    fn _stats<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyDict>> {
        stats::snapshot(slf)
    }

    /// Stop counting (what `FERROLOOP_STATS=0` does, to measure the cost of statistics).
    fn _stats_off(&self, py: Python<'_>) {
        let detect = self.pulse.detect_ticks();
        self.st.get_mut(py).stats.switch_off(detect);
    }

    /// A detector was attached from inside one of this loop's callbacks
    /// (see `stats::Pulse::enter_current`).
    fn _pulse_enter(&self, py: Python<'_>) {
        if !self.st.get(py).stats.beating {
            return;
        }
        let start = if self.st.get(py).stats.timed {
            ferroloop_core::clock::ticks()
        } else {
            0
        };
        self.pulse.enter_current(start);
    }

    /// Time callbacks from now on, as after the first read (`FERROLOOP_STATS=1`, `--stats`).
    fn _stats_on(&self, py: Python<'_>) {
        let detect = self.pulse.detect_ticks();
        self.st.get_mut(py).stats.activate(detect);
    }

    #[getter]
    fn slow_callback_duration(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let st = slf.get().st.get(py);
        match (&st.stats.slow_value, st.stats.slow_deleted) {
            (Some(v), _) => Ok(v.to_py(py)),
            (None, false) => Ok(0.1f64.into_pyobject(py)?.into_any().unbind()),
            (None, true) => {
                drop(st);
                Err(no_slow_attribute(slf))
            }
        }
    }

    /// asyncio stores any value (and compares it in debug mode); statistics
    /// count callbacks at least this long when it is a number.
    #[setter(slow_callback_duration)]
    fn set_slow_callback_duration(slf: &Bound<'_, Self>, value: &Bound<'_, PyAny>) {
        store_slow(slf, Some(value));
    }

    /// `del loop.slow_callback_duration`, as for asyncio's instance attribute.
    #[deleter(slow_callback_duration)]
    fn del_slow_callback_duration(slf: &Bound<'_, Self>) -> PyResult<()> {
        if slf.get().st.get(slf.py()).stats.slow_deleted {
            return Err(no_slow_attribute(slf));
        }
        store_slow(slf, None);
        Ok(())
    }

    #[getter]
    fn _debug(&self, py: Python<'_>) -> Py<PyAny> {
        self.debug_value(py)
    }

    /// asyncio's `set_debug(enabled)` stores `enabled` as it is.
    #[setter(_debug)]
    fn set_debug_attr(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = value.py();
        let (flag, kept) = match value.cast::<pyo3::types::PyBool>() {
            Ok(b) => (b.is_true(), None),
            Err(_) => (
                value.is_truthy()?,
                Some(crate::py::held::Held::new(value.clone().unbind())),
            ),
        };
        let old = {
            let mut st = self.st.get_mut(py);
            st.debug = flag;
            std::mem::replace(&mut st.debug_value, kept)
        };
        drop(old);
        Ok(())
    }

    #[getter]
    fn _stopping(&self, py: Python<'_>) -> bool {
        self.st.get(py).stopping
    }

    #[setter(_stopping)]
    fn set_stopping_attr(&self, py: Python<'_>, value: bool) {
        self.st.get_mut(py).stopping = value;
    }

    #[getter]
    fn _closed(&self, py: Python<'_>) -> bool {
        self.st.get(py).closed
    }

    #[setter(_closed)]
    fn set_closed_attr(&self, py: Python<'_>, value: bool) {
        self.st.get_mut(py).closed = value;
    }

    #[getter]
    fn _timer_cancelled_count(&self, py: Python<'_>) -> i64 {
        self.st.get(py).timer_cancelled_count
    }

    #[setter(_timer_cancelled_count)]
    fn set_timer_cancelled_count_attr(&self, py: Python<'_>, value: i64) {
        self.st.get_mut(py).timer_cancelled_count = value;
    }

    #[getter]
    fn _clock_resolution(&self, py: Python<'_>) -> f64 {
        self.st.get(py).clock_resolution
    }

    #[setter(_clock_resolution)]
    fn set_clock_resolution_attr(&self, py: Python<'_>, value: f64) {
        self.st.get_mut(py).clock_resolution = value;
    }

    /// A snapshot of the ready queue (asyncio's `_ready` deque).
    #[getter]
    fn _ready<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let items: Vec<Py<PyAny>> = self.st.get(py).ready.iter().map(|r| r.as_any(py)).collect();
        PyList::new(py, items)
    }

    #[setter(_ready)]
    fn set_ready_attr(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        ignore_empty(value, "_ready")
    }

    /// A snapshot of the timer heap (asyncio's `_scheduled` list, in heap order).
    #[getter]
    fn _scheduled<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let items: Vec<Py<TimerHandle>> = self.st.get(py).timers.iter().map(|(_, t)| t.to_py(py)).collect();
        PyList::new(py, items)
    }

    #[setter(_scheduled)]
    fn set_scheduled_attr(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        ignore_empty(value, "_scheduled")
    }

    #[pyo3(signature = (fd, callback, *args))]
    fn _add_reader(
        slf: &Bound<'_, Self>,
        fd: Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        fd_watch::add(slf, &fd, callback, args, READ)
    }

    fn _remove_reader(slf: &Bound<'_, Self>, fd: Bound<'_, PyAny>) -> PyResult<bool> {
        fd_watch::remove(slf, &fd, READ)
    }

    #[pyo3(signature = (fd, callback, *args))]
    fn _add_writer(
        slf: &Bound<'_, Self>,
        fd: Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        fd_watch::add(slf, &fd, callback, args, ferroloop_core::reactor::WRITE)
    }

    fn _remove_writer(slf: &Bound<'_, Self>, fd: Bound<'_, PyAny>) -> PyResult<bool> {
        fd_watch::remove(slf, &fd, ferroloop_core::reactor::WRITE)
    }

    /// `(fileobj, fd, events, (reader, writer))` of a watched fd, or None
    /// (backs the `selectors` view in `ferroloop._selector`).
    fn _selector_key(slf: &Bound<'_, Self>, fileobj: Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
        fd_watch::key(slf, &fileobj)
    }

    /// The fds watched by `add_reader`/`add_writer`.
    fn _selector_fds(&self, py: Python<'_>) -> Vec<i32> {
        let st = self.st.get(py);
        st.fds
            .iter()
            .filter(|(_, r)| matches!(r, registrations::Reg::Watch(w) if w.mask != 0))
            .map(|(fd, _)| fd)
            .collect()
    }

    /// `_ensure_fd_no_transport(fd)`: no transport, asyncio's or native,
    /// uses `fd` (else asyncio's `RuntimeError`).
    fn _ensure_fd_no_transport(slf: &Bound<'_, Self>, fd: Bound<'_, PyAny>) -> PyResult<()> {
        transport_map::ensure_fd_no_transport(slf, &fd)
    }

    /// `_make_ssl_transport(rawsock, protocol, sslcontext, waiter=None, *, ...)`
    /// (see `transports::make_ssl_transport`); arguments that do not fit
    /// asyncio's signature get asyncio's own `TypeError`.
    #[pyo3(signature = (*args, **kwargs))]
    fn _make_ssl_transport<'py>(
        slf: &Bound<'py, Self>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, pyo3::types::PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        crate::transports::make_ssl_transport_call(slf, args, kwargs)
    }

    /// The native transport using `fd` (asyncio's `_transports.get(fd)`).
    fn _native_transport_at(&self, py: Python<'_>, fd: &Bound<'_, PyAny>) -> Option<Py<PyAny>> {
        // An fd beyond C int holds no transport (registering it then fails
        // as asyncio's does).
        self.native_transport_at(py, fd.extract::<i32>().ok()?)
    }

    /// Release everything native: queued handles, timers, watchers, and the
    /// epoll and eventfd descriptors (part of `close()`).
    fn _close_native(&self, py: Python<'_>) {
        let (ready, timers, fds, pool, extra) = {
            let mut st = self.st.get_mut(py);
            (
                st.ready.clear(),
                st.timers.clear(),
                st.fds.drain(),
                (std::mem::take(&mut st.pool), std::mem::take(&mut st.timer_pool)),
                (
                    std::mem::take(&mut st.new_writers),
                    std::mem::take(&mut st.retune),
                    std::mem::take(&mut st.streams),
                    std::mem::take(&mut st.scratch),
                    st.spare.clear(),
                ),
            )
        };
        drop(extra);
        drop(pool);
        for t in &timers {
            t.get().set_scheduled(false);
            crate::handles::release(py, t.bind(py).as_super().as_unbound(), false);
        }
        for r in &ready {
            if let Ready::Native(h) = r {
                crate::handles::release(py, h, false);
            }
        }
        // In a forked child the epoll instance is shared with the parent:
        // closing our descriptor is fine, editing its interest list is not.
        self.poller.close();
        self.waker.close();
        drop((ready, timers, fds));
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        crate::py::gc::traverse(&self.st, &visit)
    }

    fn __clear__(&self) {
        crate::py::gc::clear(&self.st);
    }
}

/// What `get_debug()` returns for this state: the object `set_debug()` was
/// given, else the flag as a bool.
#[inline]
fn debug_of(st: &LoopState, py: Python<'_>) -> Py<PyAny> {
    match &st.debug_value {
        Some(v) => v.to_py(py),
        None => pyo3::types::PyBool::new(py, st.debug).to_owned().into_any().unbind(),
    }
}
