//! The native pipe transports: asyncio's `unix_events._UnixReadPipeTransport`
//! and `_UnixWritePipeTransport` (`connect_read_pipe`, `connect_write_pipe`,
//! and the pipes of every subprocess).
//!
//! They carry the stream transport's payload (`stream::StreamState`, with
//! `flavor` `ReadPipe`/`WritePipe`; `sock` is the pipe object, closed with
//! its `close()`), so registration, epochs, contexts, the read buffer and
//! the write queue are the stream transport's; the lifecycle is asyncio's
//! pipe code, which differs from the socket transports' in many details,
//! mirrored here one by one:
//!
//! - Read: one `read` of up to 256 KiB per readiness event;
//!   `data_received` exceptions propagate to the exception handler (the
//!   transport stays open); end of file sets `_closing`, removes the reader
//!   and schedules `eof_received` and then `_call_connection_lost(None)`.
//! - Write: `write()` tries `write(2)` at once; the rest is queued (copied
//!   unless immutable, as asyncio's `bytearray` buffer copies) and the
//!   writer registered at once. A write error counts in `_conn_lost`.
//!   Readable on the write end (the reader closed it: epoll's error bit)
//!   closes the transport, with `BrokenPipeError` if data was buffered.
//! - Registration is applied at once (not at the pre-poll step), so an fd
//!   epoll refuses fails where asyncio's `_add_reader` fails.
//! - `_call_connection_lost` always calls `connection_lost`, then closes the
//!   pipe object and drops the protocol and the loop.
//! - Errors: a read pipe reports every error but `EIO` to the exception
//!   handler, a write pipe every non-`OSError` (`_fatal_error`).

use pyo3::exceptions::{PyAssertionError, PyBrokenPipeError, PyKeyboardInterrupt, PySystemExit, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView, PyTuple};

use super::hooks;
use super::keep;
use super::stream::{self, Addr, Flavor, Sock, StreamState, StreamTransport, READING, WRITING};
use super::stream_io;
use crate::event_loop::BIG_READ;
use crate::event_loop::{schedule, EventLoop};
use crate::py::call::call_method;
use crate::py::errors::os_error;
use crate::py::held::Held;

const READ_FAILED: &str = "Fatal read error on pipe transport";
const WRITE_FAILED: &str = "Fatal write error on pipe transport";

fn is_fatal(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PySystemExit>(py) || err.is_instance_of::<PyKeyboardInterrupt>(py)
}

/// `_UnixReadPipeTransport(...)` / `_UnixWritePipeTransport(loop, pipe, protocol, waiter, extra)`.
pub(crate) fn create<'py>(
    lp: &Bound<'py, EventLoop>,
    flavor: Flavor,
    pipe: &Bound<'py, PyAny>,
    protocol: &Bound<'py, PyAny>,
    waiter: Option<Bound<'py, PyAny>>,
    extra: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = lp.py();
    // `super().__init__(extra)`: the caller's dict itself, then `['pipe']`.
    let extra = match extra {
        Some(e) => e,
        None => PyDict::new(py).into_any(),
    };
    extra.set_item(pyo3::intern!(py, "pipe"), pipe)?;
    let fd: i32 = pipe.call_method0(pyo3::intern!(py, "fileno"))?.extract()?;
    let kind = ferroloop_core::net::file_kind(fd).map_err(|e| os_error(&e))?;
    let accepted = match flavor {
        Flavor::ReadPipe => kind.fifo || kind.socket || kind.char_device,
        _ => kind.char_device || kind.fifo || kind.socket,
    };
    if !accepted {
        return Err(PyValueError::new_err(if flavor == Flavor::ReadPipe {
            "Pipe transport is for pipes/sockets only."
        } else {
            "Pipe transport is only for pipes, sockets and character devices"
        }));
    }
    ferroloop_core::net::set_nonblocking(fd).map_err(|e| os_error(&e))?;
    let state = StreamState {
        loop_: Some(Held::new(lp.clone().unbind())),
        protocol: Some(Held::new(protocol.clone().unbind())),
        sock: Sock::Py(Held::new(pipe.clone().unbind())),
        fd,
        cold: Some(Box::new(stream::Cold {
            extra: Some(Held::new(extra.unbind())),
            ..stream::Cold::default()
        })),
        sockname: Addr::None,
        peername: Addr::None,
        protocol_connected: true,
        flavor,
        ..StreamState::default()
    };
    let class = if flavor == Flavor::ReadPipe {
        super::read_pipe_class()
    } else {
        super::write_pipe_class()
    };
    let obj = class.new_instance(
        py,
        StreamTransport {
            st: crate::py::cell::GilCell::new(state),
        },
    )?;
    let made = protocol.getattr(pyo3::intern!(py, "connection_made"))?;
    schedule::call_soon(lp, made, PyTuple::new(py, [&obj])?, None, "call_soon")?;
    if flavor == Flavor::ReadPipe {
        // `self._loop.call_soon(self._add_reader, self._fileno, self._read_ready)`.
        let add = obj.getattr(pyo3::intern!(py, "_add_reader"))?;
        let read_ready = obj.getattr(pyo3::intern!(py, "_read_ready"))?;
        let args = PyTuple::new(py, [fd.into_pyobject(py)?.into_any(), read_ready])?;
        schedule::call_soon(lp, add, args, None, "call_soon")?;
    } else if kind.socket || kind.fifo {
        // The reader trick of a write pipe (told when the read end closes)
        // works for pipes and sockets.
        let start = obj.getattr(pyo3::intern!(py, "_start_reading"))?;
        schedule::call_soon(lp, start, PyTuple::empty(py), None, "call_soon")?;
    }
    super::stream_life::schedule_waiter(lp, waiter)?;
    Ok(obj)
}

/// `_add_reader(fd, self._read_ready)` of a read pipe (only while reading),
/// or `loop._add_reader(fd, self._read_ready)` of a write pipe (always).
pub(crate) fn start_reading(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport) -> PyResult<()> {
    let st = t.st.get(py);
    let go = st.flavor == Flavor::WritePipe || st.is_reading();
    drop(st);
    if go {
        stream::add_reader(py, obj, t)?;
    }
    Ok(())
}

/// `_UnixReadPipeTransport._add_reader(fd, callback)`: nothing unless
/// reading; the transport's own `_read_ready` for its own fd starts the
/// native reader, anything else goes to `loop._add_reader(fd, callback)`.
pub(crate) fn add_reader(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    t: &StreamTransport,
    fd: &Bound<'_, PyAny>,
    callback: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let (reading, own_fd) = {
        let st = t.st.get(py);
        (st.is_reading(), st.fd)
    };
    if !reading {
        return Ok(());
    }
    // `callback` is `self._read_ready`: the class's method (python/ferroloop/_pipes.py)
    // bound to this transport.
    let read_ready = pyo3::intern!(py, "_read_ready");
    let own = callback.getattr(pyo3::intern!(py, "__self__")).is_ok_and(|s| s.is(obj))
        && callback
            .getattr(pyo3::intern!(py, "__func__"))
            .is_ok_and(|f| obj.get_type().getattr(read_ready).is_ok_and(|m| m.is(&f)))
        && fd.is_exact_instance_of::<pyo3::types::PyInt>()
        && fd.extract::<std::os::fd::RawFd>().ok() == Some(own_fd);
    if own {
        return stream::add_reader(py, obj, t);
    }
    let Some(lp) = stream::loop_of(py, t) else {
        return Err(none_has_no(py, "_add_reader"));
    };
    lp.bind(py)
        .call_method1(pyo3::intern!(py, "_add_reader"), (fd, callback))?;
    Ok(())
}

fn debug(py: Python<'_>, t: &StreamTransport) -> bool {
    t.st.get(py).loop_.as_ref().is_some_and(|l| l.get().debug(py))
}

/// `self._loop.call_soon(self._call_connection_lost, exc)`.
fn schedule_connection_lost(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    t: &StreamTransport,
    exc: Py<PyAny>,
) -> PyResult<()> {
    let Some(lp) = stream::loop_of(py, t) else {
        // `self._loop` is None: asyncio's call raises AttributeError.
        return Err(none_has_no(py, "call_soon"));
    };
    let cb = obj.getattr(pyo3::intern!(py, "_call_connection_lost"))?;
    schedule::call_soon(lp.bind(py), cb, PyTuple::new(py, [exc])?, None, "call_soon")?;
    Ok(())
}

/// `_read_ready` of a read pipe.
pub(crate) fn read_ready(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport) -> PyResult<()> {
    let (fd, protocol, lp, big) = {
        let st = t.st.get(py);
        let (Some(p), Some(lp)) = (&st.protocol, &st.loop_) else {
            return Ok(());
        };
        (st.fd, p.clone_ref(py), lp.clone_ref(py), st.big_reads)
    };
    // `os.read(self._fileno, self.max_size)`: the attribute may be set on the instance.
    let max: usize = obj.getattr(pyo3::intern!(py, "max_size"))?.extract()?;
    let received = if max == crate::event_loop::READ_SIZE {
        lp.get().read_bytes(py, fd, big)
    } else {
        crate::py::buffer::new_bytes_with(py, max, |buf| ferroloop_core::net::read(fd, buf))
            .map(|b| (!b.as_bytes().is_empty()).then(|| crate::py::spare_bytes::Lent::new(b)))
    };
    if let Ok(Some(data)) = &received {
        let n = data.bytes.as_bytes().len();
        if (n > BIG_READ) != big {
            t.st.get_mut(py).big_reads = n > BIG_READ;
        }
    }
    match received {
        Err(e) if ferroloop_core::net::would_block(&e) => Ok(()),
        Err(e) => fatal_error(py, obj, t, os_error(&e), READ_FAILED),
        Ok(None) => {
            if debug(py, t) {
                hooks::log_info(py, "%r was closed by peer", obj)?;
            }
            t.st.get_mut(py).closing = true;
            stream::remove_reader(py, obj, t)?;
            let eof = protocol.bind(py).getattr(pyo3::intern!(py, "eof_received"))?;
            schedule::call_soon(lp.bind(py), eof, PyTuple::empty(py), None, "call_soon")?;
            schedule_connection_lost(py, obj, t, py.None())
        }
        Ok(Some(data)) => {
            let res = call_method(
                protocol.bind(py),
                pyo3::intern!(py, "data_received"),
                &[data.bytes.as_any()],
            );
            lp.get().give_back_bytes(py, data);
            res.map(|_| ())
        }
    }
}

/// `_read_ready` of a write pipe: the read end was closed.
pub(crate) fn closed_by_peer(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport) -> PyResult<()> {
    if debug(py, t) {
        hooks::log_info(py, "%r was closed by peer", obj)?;
    }
    let exc = if t.st.get(py).queue.is_empty() {
        py.None()
    } else {
        PyBrokenPipeError::new_err(()).into_value(py).into_any()
    };
    close_now(py, obj, t, exc)
}

/// `_close(exc)`.
pub(crate) fn close_now(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport, exc: Py<PyAny>) -> PyResult<()> {
    let (flavor, no_loop) = {
        let mut st = t.st.get_mut(py);
        st.closing = true;
        (st.flavor, st.loop_.is_none())
    };
    if flavor == Flavor::WritePipe {
        if !t.st.get(py).queue.is_empty() {
            if no_loop {
                return Err(none_has_no(py, "_remove_writer"));
            }
            stream::remove_writer(py, obj, t)?;
        }
        let dropped = t.st.get_mut(py).queue.clear();
        drop(dropped);
    }
    if no_loop {
        return Err(none_has_no(py, "_remove_reader"));
    }
    stream::remove_reader(py, obj, t)?;
    schedule_connection_lost(py, obj, t, exc)
}

/// The AttributeError of `None.<name>` (asyncio's code reaching a cleared
/// `_loop`, `_pipe` or `_protocol`).
fn none_has_no(py: Python<'_>, name: &str) -> PyErr {
    match py.None().into_bound(py).getattr(name) {
        Err(e) => e,
        Ok(_) => pyo3::exceptions::PyAttributeError::new_err(name.to_owned()),
    }
}

/// `close()`.
pub(crate) fn close(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport) -> PyResult<()> {
    let (flavor, closing, open) = {
        let st = t.st.get(py);
        (st.flavor, st.closing, !matches!(st.sock, Sock::Closed))
    };
    if flavor == Flavor::ReadPipe {
        if !closing {
            close_now(py, obj, t, py.None())?;
        }
        return Ok(());
    }
    // A write pipe: write_eof is all it needs.
    if open && !closing {
        write_eof(py, obj, t)?;
    }
    Ok(())
}

/// `write_eof()` of a write pipe.
pub(crate) fn write_eof(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport) -> PyResult<()> {
    let empty = {
        let mut st = t.st.get_mut(py);
        if st.closing {
            return Ok(());
        }
        if matches!(st.sock, Sock::Closed) {
            return Err(PyAssertionError::new_err(()));
        }
        st.closing = true;
        st.queue.is_empty()
    };
    if empty {
        stream::remove_reader(py, obj, t)?;
        schedule_connection_lost(py, obj, t, py.None())?;
    }
    Ok(())
}

/// `_fatal_error(exc, message)`: report, then `_close(exc)`.
pub(crate) fn fatal_error(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    t: &StreamTransport,
    exc: PyErr,
    message: &str,
) -> PyResult<()> {
    let read_pipe = t.st.get(py).flavor == Flavor::ReadPipe;
    let exc = exc.into_value(py).into_any();
    hooks::pipe_fatal_error(py, obj, exc.bind(py), message, read_pipe)?;
    close_now(py, obj, t, exc)
}

/// `_call_connection_lost(exc)`.
pub(crate) fn call_connection_lost(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    t: &StreamTransport,
    exc: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let protocol = t.st.get(py).protocol.as_ref().map(|p| p.clone_ref(py));
    let target = protocol.map_or_else(|| py.None(), |p| p.to_py(py));
    let res = call_method(target.bind(py), pyo3::intern!(py, "connection_lost"), &[exc]).map(|_| ());
    // The `finally:` part: `self._pipe.close()`, and only if that returned,
    // `_pipe`, `_protocol` and `_loop` become None. An exception there
    // replaces connection_lost's, as in a `finally:` clause.
    let pipe = match &t.st.get(py).sock {
        Sock::Py(p) => Some(p.clone_ref(py)),
        _ => None,
    };
    if pipe.is_some() {
        // Nothing may stay registered for a closed fd (asyncio leaves a
        // stale selector key; the native registry must not).
        let _ = stream::set_interest_now(py, obj, t, 0);
    }
    let closed = match &pipe {
        Some(p) => p.bind(py).call_method0(pyo3::intern!(py, "close")).map(|_| ()),
        None => Err(none_has_no(py, "close")),
    };
    if let Err(e) = closed {
        if let Err(first) = res {
            // SAFETY: both are live exception objects; SetContext steals a
            // reference to its second argument, which we pass a new one of.
            unsafe {
                pyo3::ffi::PyException_SetContext(e.value(py).as_ptr(), first.into_value(py).into_ptr());
            }
        }
        return Err(e);
    }
    let (old_sock, old_protocol, old_loop) = {
        let mut st = t.st.get_mut(py);
        (std::mem::take(&mut st.sock), st.protocol.take(), st.loop_.take())
    };
    drop(old_sock);
    drop(old_protocol);
    drop(old_loop);
    res
}

/// True for the types a write pipe takes.
fn is_bytes_like(data: &Bound<'_, PyAny>) -> bool {
    data.is_instance_of::<PyBytes>() || data.is_instance_of::<PyByteArray>() || data.is_instance_of::<PyMemoryView>()
}

/// `write(data)` of a write pipe.
pub(crate) fn write(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    t: &StreamTransport,
    data: &Bound<'_, PyAny>,
) -> PyResult<()> {
    if !is_bytes_like(data) {
        return Err(PyAssertionError::new_err(data.repr()?.unbind()));
    }
    // `if not data: return` (a buffer that cannot be exported fails later,
    // where asyncio's os.write() or `bytearray +=` fails).
    let total = crate::py::buffer::with_bytes(data, <[u8]>::len).ok();
    if total.map_or(data.len()?, |n| n) == 0 {
        return Ok(());
    }
    let (conn_lost, closing, fd, queued) = {
        let st = t.st.get(py);
        (st.conn_lost, st.closing, st.fd, !st.queue.is_empty())
    };
    if conn_lost > 0 || closing {
        if conn_lost >= hooks::connlost_threshold(py) {
            hooks::log_warning(py, "pipe closed by peer or os.write(pipe, data) raised exception.")?;
        }
        t.st.get_mut(py).conn_lost += 1;
        return Ok(());
    }
    let mut offset = 0;
    if !queued {
        // Attempt to send it right away first.
        let written = crate::py::buffer::with_bytes(data, |b| ferroloop_core::net::write(fd, b));
        let n = match written {
            Ok(Ok(n)) => n,
            Ok(Err(e)) if ferroloop_core::net::would_block(&e) => 0,
            Ok(Err(e)) => return write_failed(py, obj, t, os_error(&e)),
            Err(err) => return write_failed(py, obj, t, err),
        };
        count(py, t, n);
        if Some(n) == total {
            return Ok(());
        }
        offset = n;
        stream::add_writer(py, obj, t)?; // `self._loop._add_writer(self._fileno, self._write_ready)`
    }
    if total.is_none() {
        // `self._buffer += data` of a buffer that cannot be exported.
        return Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "can't concat {} to bytearray",
            data.get_type().name()?
        )));
    }
    {
        let mut st = t.st.get_mut(py);
        keep::enqueue(&mut st.queue, data, offset, true)?;
    }
    stream_io::maybe_pause_protocol(py, obj, t)
}

/// The `except BaseException` branch of `write()`.
fn write_failed(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport, err: PyErr) -> PyResult<()> {
    if is_fatal(py, &err) {
        return Err(err);
    }
    t.st.get_mut(py).conn_lost += 1;
    fatal_error(py, obj, t, err, WRITE_FAILED)
}

fn count(py: Python<'_>, t: &StreamTransport, n: usize) {
    if let Some(lp) = &t.st.get(py).loop_ {
        lp.get().st.get_mut(py).stats.bytes_written += n as u64;
    }
}

/// `_write_ready` of a write pipe.
pub(crate) fn write_ready(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport) -> PyResult<()> {
    let written = {
        let st = t.st.get(py);
        if st.queue.is_empty() {
            // `assert self._buffer, 'Data should not be empty'`
            return Err(PyAssertionError::new_err("Data should not be empty"));
        }
        if st.queue.chunks() == 1 {
            st.queue.front().map_or(Ok(0), |b| ferroloop_core::net::write(st.fd, b))
        } else {
            ferroloop_core::net::writev(st.fd, &st.queue.slices())
        }
    };
    match written {
        Err(e) if ferroloop_core::net::would_block(&e) => Ok(()),
        Err(e) => {
            let dropped = t.st.get_mut(py).queue.clear();
            drop(dropped);
            t.st.get_mut(py).conn_lost += 1;
            // Remove the writer here: _fatal_error() does not (the buffer is empty).
            stream::remove_writer(py, obj, t)?;
            fatal_error(py, obj, t, os_error(&e), WRITE_FAILED)
        }
        Ok(n) => {
            count(py, t, n);
            if n == t.st.get(py).queue.len() {
                let dropped = t.st.get_mut(py).queue.clear();
                drop(dropped);
                t.st.get_mut(py).queue.shrink();
                stream::remove_writer(py, obj, t)?;
                stream_io::maybe_resume_protocol(py, obj, t)?; // May append to buffer.
                if t.st.get(py).closing {
                    stream::remove_reader(py, obj, t)?;
                    call_connection_lost(py, obj, t, &py.None().into_bound(py))?;
                }
                return Ok(());
            }
            if n > 0 {
                let mut released = Vec::new();
                t.st.get_mut(py).queue.consume(n, &mut released);
                drop(released);
            }
            Ok(())
        }
    }
}

/// `repr()`, as the pipe transports' `__repr__` build it.
pub(crate) fn repr(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport) -> PyResult<String> {
    let name = obj.get_type().name()?.to_string();
    // `selector = getattr(self._loop, '_selector', None)`: set until the end
    // of the loop's `close()`, whose `selector.close()` empties the selector
    // first (a transport it releases reads "idle"; ferroloop's registrations
    // are released after the poller is closed).
    let lp = t.st.get(py).loop_.as_ref().map(|l| l.bind(py).clone());
    let (selector, emptied) = match &lp {
        Some(lp) => {
            let sel = lp.getattr(pyo3::intern!(py, "_selector")).ok();
            (sel.is_some_and(|s| !s.is_none()), lp.get().poller.is_closed())
        }
        None => (false, true),
    };
    let st = t.st.get(py);
    let open = !matches!(st.sock, Sock::Closed);
    let mut info = vec![name];
    if !open {
        info.push("closed".into());
    } else if st.closing {
        info.push("closing".into());
    }
    info.push(format!("fd={}", st.fd));
    if open && selector {
        let bit = if st.flavor == Flavor::ReadPipe {
            READING
        } else {
            WRITING
        };
        let polling = !emptied && st.interest & bit != 0;
        info.push(if polling { "polling" } else { "idle" }.into());
        if st.flavor == Flavor::WritePipe {
            info.push(format!("bufsize={}", st.queue.len()));
        }
    } else if open {
        info.push("open".into());
    } else {
        info.push("closed".into());
    }
    Ok(format!("<{}>", info.join(" ")))
}
