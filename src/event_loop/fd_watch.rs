//! `_add_reader`, `_remove_reader`, `_add_writer`, `_remove_writer`.
//!
//! Mirrors `selector_events.BaseSelectorEventLoop._add_reader` & co. on top of
//! `selectors.EpollSelector`: one registration per fd holding a reader and a
//! writer handle, level-triggered; replacing a watcher cancels the old handle;
//! removing returns whether a watcher was there; a closed loop removes nothing
//! and returns False. File objects are resolved like `selectors` does
//! (`_fileobj_to_fd`, then a search by identity among registered objects for
//! a closed socket whose `fileno()` is now -1).
//!
//! # Ownership
//! The fd stays owned by the caller (the Python socket or file object). The
//! loop only registers it with epoll; a registration whose fd was closed
//! behind its back is dropped silently on removal (`EpollSelector.unregister`
//! ignores that `OSError` too).

use std::os::fd::RawFd;

use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyInt, PyTuple};

use ferroloop_core::reactor::Trigger;

use super::registrations::Reg;
use super::{EventLoop, FdReg, Watcher};
use crate::handles::{ensure_tracked, Handle};
use crate::py::call::copy_context;
use crate::py::errors::os_error;
use crate::py::held::Held;
use crate::py::hooks::hooks;

/// `selectors._fileobj_to_fd`, with a fast path for plain non-negative ints.
fn to_fd(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    if obj.is_exact_instance_of::<PyInt>() {
        if let Ok(fd) = obj.extract::<RawFd>() {
            if fd >= 0 {
                return Ok(fd);
            }
        }
    }
    let fd = hooks(py)?.fileobj_to_fd.call1(py, (obj,))?;
    fd.extract::<RawFd>(py).map_err(|e| {
        if e.is_instance_of::<pyo3::exceptions::PyOverflowError>(py) {
            // The message `select.epoll.register` gives for such an int.
            pyo3::exceptions::PyOverflowError::new_err("Python int too large to convert to C int")
        } else {
            e
        }
    })
}

/// `_fileobj_lookup`: like [`to_fd`], falling back to an identity search.
fn lookup(slf: &Bound<'_, EventLoop>, obj: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    let py = slf.py();
    match to_fd(py, obj) {
        Ok(fd) => Ok(fd),
        Err(err) if err.is_instance_of::<PyValueError>(py) => {
            let st = slf.get().st.get(py);
            let found = st
                .fds
                .iter()
                .find(|(_, reg)| matches!(reg, Reg::Watch(w) if w.mask != 0 && w.fileobj.is(obj)))
                .map(|(fd, _)| fd);
            found.ok_or(err)
        }
        Err(err) => Err(err),
    }
}

fn cancel(py: Python<'_>, watcher: Option<Watcher>) -> PyResult<bool> {
    match watcher {
        Some(w) => {
            w.cancel(py)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

pub(super) fn add(
    slf: &Bound<'_, EventLoop>,
    fileobj: &Bound<'_, PyAny>,
    callback: Bound<'_, PyAny>,
    args: Bound<'_, PyTuple>,
    which: u32,
) -> PyResult<Py<Handle>> {
    let py = slf.py();
    let this = slf.get();
    this.check_closed(py)?;
    let tb = if this.debug(py) {
        Some(hooks(py)?.extract_stack.call0(py)?)
    } else {
        None
    };
    let handle = Py::new(
        py,
        Handle::new(
            callback.unbind(),
            args.unbind(),
            copy_context(py)?,
            slf.clone().unbind(),
            tb,
        ),
    )?;
    ensure_tracked(handle.bind(py));
    // `selector.get_key(fileobj)`: a closed socket still registered is found
    // by identity, and its registration updated.
    let fd = lookup(slf, fileobj)?;
    add_watcher(
        slf,
        fileobj,
        fd,
        Watcher::Handle(Held::new(handle.clone_ref(py))),
        which,
        None,
    )?;
    Ok(handle)
}

/// True if an idle edge registration belongs to `owner`'s file (the same
/// live socket object); otherwise the entry is stale (the fd was closed and
/// its number reused) and must be registered anew.
fn owned_by(py: Python<'_>, reg: &FdReg, owner: Option<&Bound<'_, PyAny>>) -> bool {
    let (Some(weak), Some(owner)) = (&reg.owner, owner) else {
        return false;
    };
    weak.bind(py).call0().is_ok_and(|target| target.is(owner))
}

/// Drop an idle edge registration that nobody waits on any more (before
/// somebody else registers the fd). Returns it, to be dropped after the borrow.
pub(crate) fn evict_idle(this: &EventLoop, st: &mut super::LoopState, fd: RawFd) -> Option<Reg> {
    match st.fds.get(fd) {
        Some(Reg::Watch(reg)) if reg.edge && reg.mask == 0 => {
            if !this.is_forked() {
                // Gone already if the fd was closed: the error is expected then.
                let _ = this.poller.deregister(fd);
            }
            st.fds.remove(fd)
        }
        _ => None,
    }
}

/// Register `watcher` for the `which` side of `fd` (replacing and cancelling
/// what was there), as `_add_reader`/`_add_writer` do with the selector.
///
/// A socket operation (`owner` = its socket) registers the fd edge-triggered
/// for both sides and leaves the registration in place when it completes, so
/// the next operation on the same socket costs no `epoll_ctl`; it is idle
/// then (no watcher, invisible to `add_reader` & co.) and is replaced by the
/// first other registration of the fd. A Python handle, and an operation
/// without an owner (one that may make progress and still wait, as sendfile
/// does: asyncio retries it on every writable event), gets asyncio's
/// level-triggered registration of exactly its sides.
pub(crate) fn add_watcher(
    slf: &Bound<'_, EventLoop>,
    fileobj: &Bound<'_, PyAny>,
    fd: RawFd,
    watcher: Watcher,
    which: u32,
    owner: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let py = slf.py();
    let this = slf.get();
    let edge = matches!(watcher, Watcher::Op(_)) && owner.is_some();
    let mut replaced = None;
    let mut stale = None;
    let old = {
        let mut st = this.st.get_mut(py);
        if let Some(Reg::Stream(_)) = st.fds.get(fd) {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
                "File descriptor {fd} is used by a transport"
            )));
        }
        if let Some(Reg::Listener(_)) = st.fds.get(fd) {
            // A new reader replaces the native accept loop (asyncio's
            // `_add_reader` replaces the reader handle).
            if !this.is_forked() {
                let _ = this.poller.deregister(fd);
            }
            replaced = st.fds.remove(fd);
        }
        if let Some(Reg::Watch(reg)) = st.fds.get(fd) {
            if reg.edge && reg.mask == 0 && !(edge && owned_by(py, reg, owner)) {
                stale = evict_idle(this, &mut st, fd);
            }
        }
        let token = st.fds.token(fd);
        if let (Some(token), Some(Reg::Watch(reg))) = (token, st.fds.get_mut(fd)) {
            let mask = reg.mask | which;
            let change = if reg.edge && edge {
                Ok(())
            } else if reg.edge {
                // A handle joins: back to asyncio's level-triggered registration.
                this.poller.modify(fd, mask, token, Trigger::Level)
            } else if mask != reg.mask {
                this.poller.modify(fd, mask, token, Trigger::Level)
            } else {
                Ok(())
            };
            if let Err(e) = change {
                let gone = st.fds.remove(fd);
                drop(st);
                drop(gone);
                return Err(os_error(&e));
            }
            if !edge {
                reg.edge = false;
                reg.owner = None;
            }
            reg.mask = mask;
            let slot = if which == ferroloop_core::reactor::READ {
                &mut reg.reader
            } else {
                &mut reg.writer
            };
            slot.replace(watcher)
        } else {
            let (reader, writer) = if which == ferroloop_core::reactor::READ {
                (Some(watcher), None)
            } else {
                (None, Some(watcher))
            };
            let owner = match owner.filter(|_| edge) {
                Some(o) => Some(Held::new(pyo3::types::PyWeakrefReference::new(o)?.into_any().unbind())),
                None => None,
            };
            let token = st.fds.insert(
                fd,
                Reg::Watch(Box::new(FdReg {
                    fileobj: Held::new(fileobj.clone().unbind()),
                    mask: which,
                    reader,
                    writer,
                    edge,
                    owner,
                    big_reads: false,
                })),
            );
            let (interest, trigger) = if edge {
                (
                    ferroloop_core::reactor::READ | ferroloop_core::reactor::WRITE,
                    Trigger::Edge,
                )
            } else {
                (which, Trigger::Level)
            };
            if let Err(e) = this.poller.register(fd, interest, token, trigger) {
                let gone = st.fds.remove(fd);
                drop(st);
                drop(gone);
                return Err(os_error(&e));
            }
            None
        }
    };
    drop(replaced);
    drop(stale);
    cancel(py, old)?;
    Ok(())
}

pub(super) fn remove(slf: &Bound<'_, EventLoop>, fileobj: &Bound<'_, PyAny>, which: u32) -> PyResult<bool> {
    let py = slf.py();
    if slf.get().st.get(py).closed {
        return Ok(false);
    }
    let fd = match lookup(slf, fileobj) {
        Ok(fd) => fd,
        // An int beyond the C int range names no registered fd: asyncio's
        // selector lookup just finds nothing.
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyOverflowError>(py) => return Ok(false),
        Err(e) => return Err(e),
    };
    remove_fd(slf, fd, which)
}

/// Drop the `which` watcher of `fd`; cancel its handle. True if there was one.
pub(crate) fn remove_fd(slf: &Bound<'_, EventLoop>, fd: RawFd, which: u32) -> PyResult<bool> {
    remove_fd_if(slf, fd, which, |_| true)
}

/// [`remove_fd`], only if `is_current` accepts the watcher now in place
/// (asyncio's `_sock_read_done` removes the reader only if it is its own).
pub(crate) fn remove_fd_if(
    slf: &Bound<'_, EventLoop>,
    fd: RawFd,
    which: u32,
    is_current: impl FnOnce(&Watcher) -> bool,
) -> PyResult<bool> {
    let py = slf.py();
    let this = slf.get();
    let mut error = None;
    let (old, gone) = {
        let mut st = this.st.get_mut(py);
        let Some(token) = st.fds.token(fd) else {
            return Ok(false);
        };
        if let Some(Reg::Listener(_)) = st.fds.get(fd) {
            if which != ferroloop_core::reactor::READ {
                return Ok(false);
            }
            if !this.is_forked() {
                let _ = this.poller.deregister(fd);
            }
            let gone = st.fds.remove(fd);
            drop(st);
            drop(gone);
            return Ok(true);
        }
        let Some(Reg::Watch(reg)) = st.fds.get_mut(fd) else {
            return Ok(false);
        };
        let side = if which == ferroloop_core::reactor::READ {
            &reg.reader
        } else {
            &reg.writer
        };
        if !side.as_ref().is_some_and(is_current) {
            return Ok(false);
        }
        let mask = reg.mask & !which;
        let old = if which == ferroloop_core::reactor::READ {
            reg.reader.take()
        } else {
            reg.writer.take()
        };
        if reg.edge {
            // The edge registration stays (idle when mask is 0).
            reg.mask = mask;
            (old, None)
        } else if mask == 0 {
            if !this.is_forked() {
                // The fd may already be closed: EpollSelector ignores that error as well.
                let _ = this.poller.deregister(fd);
            }
            (old, st.fds.remove(fd))
        } else if mask == reg.mask {
            (old, None)
        } else if let Err(e) = this.poller.modify(fd, mask, token, Trigger::Level) {
            error = Some(os_error(&e));
            (old, st.fds.remove(fd))
        } else {
            reg.mask = mask;
            (old, None)
        }
    };
    drop(gone);
    let had = cancel(py, old)?;
    match error {
        Some(e) => Err(e),
        None => Ok(had),
    }
}

pub(super) fn key(slf: &Bound<'_, EventLoop>, fileobj: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
    let py = slf.py();
    let fd = lookup(slf, fileobj)?;
    let st = slf.get().st.get(py);
    let Some(Reg::Watch(reg)) = st.fds.get(fd).filter(|r| matches!(r, Reg::Watch(w) if w.mask != 0)) else {
        return Err(PyKeyError::new_err(format!("{} is not registered", fileobj.repr()?)));
    };
    let t = (
        reg.fileobj.to_py(py),
        fd,
        reg.mask,
        (
            reg.reader.as_ref().map(|h| h.to_py(py)),
            reg.writer.as_ref().map(|h| h.to_py(py)),
        ),
    );
    drop(st);
    Ok(Some(t.into_pyobject(py)?.into_any().unbind()))
}
