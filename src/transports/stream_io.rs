//! The read and write paths of the native stream transport.
//!
//! Mirrors `_SelectorSocketTransport._read_ready__data_received`,
//! `_read_ready__get_buffer`, `_read_ready__on_eof`, `write`,
//! `_write_sendmsg`, `write_eof`, and `_FlowControlMixin._maybe_pause_protocol`
//! / `_maybe_resume_protocol`.
//!
//! Reading: one `recv` per readiness event (asyncio reads once per
//! iteration, up to `max_size` = 256 KiB) into the loop's scratch buffer,
//! then one `bytes` of the exact size to `data_received`; or `recv_into`
//! the buffer a `BufferedProtocol` hands out.
//!
//! Writing: `write()` tries the socket at once, as asyncio does. What does
//! not fit is queued (see `keep`) and the transport joins the loop's list of
//! new writers: right before the next poll its writable interest is
//! registered (asyncio registers it at once, inside `write()`; the kernel
//! call is only deferred, so that a burst of writes registers once). The
//! queue goes out, in one vectored `sendmsg`, only in the writer step once
//! epoll reports the socket writable, where asyncio's writer handle sends
//! it; `resume_writing`, `connection_lost` after `close()` and the sendfile
//! waiter follow from that step as from asyncio's.
//!
//! # Invariants
//! - No borrow of the transport's state is held across a call into Python.
//! - An event item runs only if its reader/writer is still the current one
//!   (epoch check), as a cancelled asyncio handle would not run.

use super::stream::{Flavor, READING, WRITING};
use ferroloop_core::net;
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView, PyString};

use super::hooks;
use super::keep;
use super::stream::{self, Sock, StreamRef, StreamTransport};
use super::stream_life;
use crate::event_loop::BIG_READ;
use crate::py::buffer::{with_bytes, HeldBuffer};
use crate::py::call::{call_method, in_context};
use crate::py::errors::os_error;
use crate::py::held::Held;

/// What a ready item of a stream transport does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IoKind {
    /// The fd is readable: `_read_ready` (if the reader is still the one
    /// that was registered when the event was queued).
    Read,
    /// The fd is writable: `_write_ready` (likewise for the writer).
    Write,
    /// Registering the writer at the pre-poll step failed (errno in the
    /// state): `_write_ready`'s error branch.
    WriterFailed,
    /// Registering the fd failed (errno in the state; asyncio's `_add_reader`
    /// raises): a fatal error of the transport.
    RegisterFailed,
}

const DATA_RECEIVED_FAILED: &str = "Fatal error: protocol.data_received() call failed.";
const READ_FAILED: &str = "Fatal read error on socket transport";
const WRITE_FAILED: &str = "Fatal write error on socket transport";

/// Run one ready item (called from the loop's batch). The ready queue holds
/// `(transport, kind)` (two words: it holds every callback of a burst); the
/// reader/writer epoch of an event is kept by the transport, since a side has
/// at most one event per poll.
pub(crate) fn on_event(py: Python<'_>, stream: &StreamRef, kind: IoKind) -> PyResult<()> {
    let t = stream.get();
    let obj = stream.bind(py);
    let (ctx, flavor) = {
        let st = t.st.get(py);
        let ctx = match kind {
            IoKind::Read => {
                if st.queued_read_epoch != st.read_epoch || st.interest & READING == 0 {
                    return Ok(());
                }
                st.read_ctx.as_ref().map(|c| c.clone_ref(py))
            }
            IoKind::Write => {
                if st.queued_write_epoch != st.write_epoch || st.interest & WRITING == 0 {
                    return Ok(());
                }
                st.write_ctx.as_ref().map(|c| c.clone_ref(py))
            }
            IoKind::WriterFailed | IoKind::RegisterFailed => st.write_ctx.as_ref().map(|c| c.clone_ref(py)),
        };
        (ctx, st.flavor)
    };
    in_context(py, ctx.as_deref(), || match kind {
        IoKind::Read => match flavor {
            Flavor::Stream => read_ready(py, obj, t),
            Flavor::Datagram => super::datagram::read_ready(py, t),
            Flavor::ReadPipe => super::pipes::read_ready(py, obj, t),
            Flavor::WritePipe => super::pipes::closed_by_peer(py, obj, t),
        },
        IoKind::Write => match flavor {
            Flavor::Stream => write_ready(py, obj, t),
            Flavor::Datagram => super::datagram::sendto_ready(py, obj, t),
            Flavor::ReadPipe | Flavor::WritePipe => super::pipes::write_ready(py, obj, t),
        },
        IoKind::WriterFailed => {
            let (lost, errno) = {
                let st = t.st.get(py);
                (st.conn_lost > 0, st.io_errno)
            };
            if lost {
                return Ok(());
            }
            write_failed(py, obj, t, os_error(&std::io::Error::from_raw_os_error(errno)))
        }
        IoKind::RegisterFailed => {
            let (lost, errno) = {
                let st = t.st.get(py);
                (st.conn_lost > 0, st.io_errno)
            };
            if lost {
                return Ok(());
            }
            let err = os_error(&std::io::Error::from_raw_os_error(errno));
            if matches!(flavor, Flavor::ReadPipe | Flavor::WritePipe) {
                return super::pipes::fatal_error(py, obj, t, err, "Fatal error on pipe transport");
            }
            stream_life::fatal_error(py, obj, t, err, "Fatal error on transport")
        }
    })
}

/// `_read_ready`.
pub(crate) fn read_ready(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport) -> PyResult<()> {
    let (fd, buffered, protocol, lp, big) = {
        let st = t.st.get(py);
        if st.conn_lost > 0 {
            return Ok(());
        }
        let (Some(p), Some(lp)) = (&st.protocol, &st.loop_) else {
            return Ok(());
        };
        (st.fd, st.buffered, p.clone_ref(py), lp.clone_ref(py), st.big_reads)
    };
    if buffered {
        return read_buffered(py, obj, t, fd, protocol.bind(py));
    }
    let received = lp.get().recv_bytes(py, fd, big);
    if let Ok(Some(data)) = &received {
        let n = data.bytes.as_bytes().len();
        if (n > BIG_READ) != big {
            t.st.get_mut(py).big_reads = n > BIG_READ;
        }
    }
    match received {
        Err(e) if net::would_block(&e) => Ok(()),
        Err(e) => stream_life::fatal_error(py, obj, t, os_error(&e), READ_FAILED),
        Ok(None) => on_eof(py, obj, t, protocol.bind(py)),
        Ok(Some(data)) => {
            let res = call_method(
                protocol.bind(py),
                pyo3::intern!(py, "data_received"),
                &[data.bytes.as_any()],
            );
            lp.get().give_back_bytes(py, data);
            match res {
                Ok(_) => Ok(()),
                Err(err) => stream_life::protocol_failed(py, obj, t, err, DATA_RECEIVED_FAILED),
            }
        }
    }
}

/// `_read_ready__get_buffer`.
fn read_buffered(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    t: &StreamTransport,
    fd: i32,
    protocol: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let minus_one = (-1i32).into_pyobject(py)?.into_any();
    let buf = call_method(protocol, pyo3::intern!(py, "get_buffer"), &[&minus_one]).and_then(|b| {
        if b.len()? == 0 {
            Err(PyRuntimeError::new_err("get_buffer() returned an empty buffer"))
        } else {
            Ok(b)
        }
    });
    let buf = match buf {
        Ok(b) => b,
        Err(err) => {
            return stream_life::protocol_failed(py, obj, t, err, "Fatal error: protocol.get_buffer() call failed.");
        }
    };
    let received = match HeldBuffer::writable(&buf) {
        Ok(view) => {
            // SAFETY: the writable export pins `len` bytes at `ptr` while held.
            let res = unsafe { ferroloop_core::sys::recv_raw(fd, view.as_ptr().cast_mut(), view.len()) };
            drop(view);
            res.map_err(|e| (net::would_block(&e), os_error(&e)))
        }
        Err(_) => Err((false, crate::py::errors::not_writable_buffer("recv_into", &buf))),
    };
    let nbytes = match received {
        Ok(n) => n,
        Err((true, _)) => return Ok(()),
        Err((false, err)) => return stream_life::protocol_failed(py, obj, t, err, READ_FAILED),
    };
    if nbytes == 0 {
        return on_eof(py, obj, t, protocol);
    }
    count(py, t, nbytes, 0);
    let n = nbytes.into_pyobject(py)?.into_any();
    match call_method(protocol, pyo3::intern!(py, "buffer_updated"), &[&n]) {
        Ok(_) => Ok(()),
        Err(err) => {
            stream_life::protocol_failed(py, obj, t, err, "Fatal error: protocol.buffer_updated() call failed.")
        }
    }
}

/// `_read_ready__on_eof`.
fn on_eof(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
    if debug(py, t) {
        hooks::log_debug(py, "%r received EOF", obj)?;
    }
    let keep_open = match call_method(protocol, pyo3::intern!(py, "eof_received"), &[]) {
        Ok(v) => v,
        Err(err) => {
            return stream_life::protocol_failed(py, obj, t, err, "Fatal error: protocol.eof_received() call failed.");
        }
    };
    if keep_open.is_truthy()? {
        stream::remove_reader(py, obj, t)
    } else {
        stream_life::close(py, obj, t)
    }
}

fn debug(py: Python<'_>, t: &StreamTransport) -> bool {
    t.st.get(py).loop_.as_ref().is_some_and(|l| l.get().debug(py))
}

/// True for the types `write()` accepts (`bytes`, `bytearray`, `memoryview` and subclasses).
fn is_bytes_like(data: &Bound<'_, PyAny>) -> bool {
    data.is_instance_of::<PyBytes>() || data.is_instance_of::<PyByteArray>() || data.is_instance_of::<PyMemoryView>()
}

/// `len(data)` without a Python call for the common types.
fn py_len(data: &Bound<'_, PyAny>) -> PyResult<usize> {
    if let Ok(b) = data.cast::<PyBytes>() {
        return Ok(b.as_bytes().len());
    }
    if let Ok(b) = data.cast::<PyByteArray>() {
        return Ok(b.len());
    }
    data.len()
}

/// The checks `write()` and `writelines()` start with.
fn check_writable(py: Python<'_>, t: &StreamTransport, what: &str) -> PyResult<()> {
    let st = t.st.get(py);
    if st.eof {
        return Err(PyRuntimeError::new_err(format!(
            "Cannot call {what}() after write_eof()"
        )));
    }
    if st.empty_waiter().is_some() {
        return Err(PyRuntimeError::new_err(format!(
            "unable to {what}; sendfile is in progress"
        )));
    }
    Ok(())
}

/// `write(data)`.
pub(crate) fn write(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    t: &StreamTransport,
    data: &Bound<'_, PyAny>,
) -> PyResult<()> {
    if !is_bytes_like(data) {
        return Err(PyTypeError::new_err(format!(
            "data argument must be a bytes-like object, not {}",
            data.get_type().name()?.repr()?
        )));
    }
    check_writable(py, t, "write")?;
    if py_len(data)? == 0 {
        return Ok(());
    }
    if lost_write(py, t)? {
        return Ok(());
    }
    let (fd, queued) = {
        let st = t.st.get(py);
        (st.fd, !st.queue.is_empty())
    };
    let mut offset = 0;
    if !queued {
        // Optimization: try to send now.
        let sent = with_bytes(data, |b| (b.len(), net::send(fd, b)));
        match sent {
            Err(err) => return write_error(py, obj, t, err),
            Ok((_, Err(e))) if net::would_block(&e) => {}
            Ok((_, Err(e))) => return write_error(py, obj, t, os_error(&e)),
            Ok((total, Ok(n))) => {
                count(py, t, 0, n);
                if n >= total {
                    return Ok(());
                }
                offset = n;
            }
        }
        // Not all was written: the writer, registered before the next poll.
        want_writer(py, obj, t)?;
    }
    {
        let mut st = t.st.get_mut(py);
        keep::enqueue(&mut st.queue, data, offset, !hooks::zero_copy_writes(py))?;
    }
    maybe_pause_protocol(py, obj, t)
}

/// The `if self._conn_lost:` branch of `write()`: true if the write was dropped.
fn lost_write(py: Python<'_>, t: &StreamTransport) -> PyResult<bool> {
    let conn_lost = t.st.get(py).conn_lost;
    if conn_lost == 0 {
        return Ok(false);
    }
    if conn_lost >= hooks::connlost_threshold(py) {
        hooks::log_warning(py, "socket.send() raised exception.")?;
    }
    t.st.get_mut(py).conn_lost += 1;
    Ok(true)
}

/// `except BaseException as exc: self._fatal_error(exc, 'Fatal write error ...')` of `write()`.
fn write_error(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport, err: PyErr) -> PyResult<()> {
    stream_life::protocol_failed(py, obj, t, err, WRITE_FAILED)
}

/// Data is queued: remember the writer's context (asyncio's `_add_writer`
/// copies the caller's) and join the loop's writers to register before the poll.
fn want_writer(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport) -> PyResult<()> {
    let lp = {
        let st = t.st.get(py);
        if st.writer_pending || st.interest & WRITING != 0 {
            return Ok(());
        }
        let Some(lp) = &st.loop_ else { return Ok(()) };
        lp.clone_ref(py)
    };
    let ctx = crate::py::call::copy_context(py)?;
    let Some(me) = StreamRef::of(obj) else { return Ok(()) };
    let old = {
        let mut st = t.st.get_mut(py);
        st.writer_pending = true;
        st.write_ctx.replace(Held::new(ctx))
    };
    drop(old);
    lp.get().want_writer(py, me);
    Ok(())
}

/// Send as much of the queue as the socket takes (one `send`/`sendmsg`).
fn send_queue(py: Python<'_>, t: &StreamTransport) -> std::io::Result<usize> {
    let sent = {
        let st = t.st.get(py);
        if st.queue.chunks() == 1 {
            let Some(front) = st.queue.front() else { return Ok(0) };
            net::send(st.fd, front)
        } else {
            net::sendmsg(st.fd, &st.queue.slices())
        }
    };
    if let Ok(n) = sent {
        count(py, t, 0, n);
    }
    sent
}

/// Add to the loop's `bytes_read`/`bytes_written` (`ferroloop.stats()`).
#[inline]
fn count(py: Python<'_>, t: &StreamTransport, read: usize, written: usize) {
    if let Some(lp) = &t.st.get(py).loop_ {
        let mut st = lp.get().st.get_mut(py);
        st.stats.bytes_read += read as u64;
        st.stats.bytes_written += written as u64;
    }
}

/// Drop `n` sent bytes from the queue (released after the borrow ends).
fn consume(py: Python<'_>, t: &StreamTransport, n: usize) {
    let mut released = Vec::new();
    t.st.get_mut(py).queue.consume(n, &mut released);
    drop(released);
}

/// The pre-poll step of a transport whose `write()`/`writelines()` left
/// data queued: register the writer (asyncio's `_add_writer`), which sends
/// the rest once the kernel reports the socket writable. Nothing is sent
/// here: asyncio sends queued data only in that writer step, and a send
/// before it would be seen (more data out before the socket is writable by
/// epoll's measure, so other buffer sizes and `resume_writing` points; and a
/// peer's reset reported by the wrong step, EPIPE where asyncio's reader gets
/// ECONNRESET). Returns the item to queue if the registration failed.
pub(crate) fn register_pending_writer(py: Python<'_>, stream_ref: &StreamRef) -> Option<IoKind> {
    let t = stream_ref.get();
    {
        let mut st = t.st.get_mut(py);
        st.writer_pending = false;
        if st.conn_lost > 0 || st.queue.is_empty() || st.interest & WRITING != 0 {
            return None;
        }
    }
    register_writer(py, stream_ref)
}

/// Register writable interest with the context kept from `write()`.
fn register_writer(py: Python<'_>, stream_ref: &StreamRef) -> Option<IoKind> {
    let t = stream_ref.get();
    let obj = stream_ref.bind(py);
    let want = t.st.get(py).interest | WRITING;
    match stream::set_interest(py, obj, t, want) {
        Ok(()) => {
            let mut st = t.st.get_mut(py);
            st.write_epoch = st.write_epoch.wrapping_add(1);
            None
        }
        Err(e) => {
            t.st.get_mut(py).io_errno = e
                .value(py)
                .getattr("errno")
                .and_then(|v| v.extract::<i32>())
                .unwrap_or(0);
            Some(IoKind::WriterFailed)
        }
    }
}

/// `_write_sendmsg` (the writer handle).
pub(crate) fn write_ready(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport) -> PyResult<()> {
    if t.st.get(py).conn_lost > 0 {
        return Ok(());
    }
    match send_queue(py, t) {
        Ok(n) => {
            consume(py, t, n);
            after_send(py, obj, t)
        }
        Err(e) if net::would_block(&e) => Ok(()),
        Err(e) => write_failed(py, obj, t, os_error(&e)),
    }
}

/// The `except BaseException` branch of `_write_sendmsg`.
fn write_failed(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport, err: PyErr) -> PyResult<()> {
    stream::remove_writer(py, obj, t)?;
    let dropped = t.st.get_mut(py).queue.clear();
    drop(dropped);
    let exc = err.into_value(py).into_any();
    stream_life::fatal_error(py, obj, t, PyErr::from_value(exc.bind(py).clone()), WRITE_FAILED)?;
    let waiter = t.st.get(py).empty_waiter().map(|w| w.clone_ref(py));
    if let Some(w) = waiter {
        w.bind(py).call_method1(pyo3::intern!(py, "set_exception"), (exc,))?;
    }
    Ok(())
}

/// The `else:` branch of `_write_sendmsg`, after a successful send.
fn after_send(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport) -> PyResult<()> {
    maybe_resume_protocol(py, obj, t)?; // May append to the buffer.
    if !t.st.get(py).queue.is_empty() {
        // Data left behind (a partial send): keep waiting for writability.
        if t.st.get(py).interest & WRITING == 0 {
            let want = t.st.get(py).interest | WRITING;
            stream::set_interest(py, obj, t, want)?;
            let mut st = t.st.get_mut(py);
            st.write_epoch = st.write_epoch.wrapping_add(1);
        }
        return Ok(());
    }
    stream::remove_writer(py, obj, t)?;
    t.st.get_mut(py).queue.shrink();
    let (waiter, closing, eof) = {
        let st = t.st.get(py);
        (st.empty_waiter().map(|w| w.clone_ref(py)), st.closing, st.eof)
    };
    if let Some(w) = waiter {
        w.bind(py).call_method1(pyo3::intern!(py, "set_result"), (py.None(),))?;
    }
    if closing {
        stream_life::call_connection_lost(py, obj, t, &py.None().into_bound(py))
    } else if eof {
        shutdown_write(py, t)
    } else {
        Ok(())
    }
}

/// `self._sock.shutdown(socket.SHUT_WR)`.
pub(crate) fn shutdown_write(py: Python<'_>, t: &StreamTransport) -> PyResult<()> {
    let (fd, open) = {
        let st = t.st.get(py);
        (st.fd, !matches!(st.sock, Sock::Closed))
    };
    if !open {
        // A closed Python socket raises OSError(EBADF) from shutdown().
        return Err(os_error(&std::io::Error::from_raw_os_error(9)));
    }
    net::shutdown(fd, net::SHUT_WR).map_err(|e| os_error(&e))
}

/// `write_eof()`.
pub(crate) fn write_eof(py: Python<'_>, t: &StreamTransport) -> PyResult<()> {
    let empty = {
        let mut st = t.st.get_mut(py);
        if st.closing || st.eof {
            return Ok(());
        }
        st.eof = true;
        st.buffer_empty()
    };
    if empty {
        shutdown_write(py, t)?;
    }
    Ok(())
}

/// `writelines(list_of_data)`.
pub(crate) fn writelines(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    t: &StreamTransport,
    list: &Bound<'_, PyAny>,
) -> PyResult<()> {
    if !hooks::zero_copy_writes(py) {
        // 3.11: WriteTransport.writelines joins and writes.
        let joined = PyBytes::new(py, b"").call_method1(pyo3::intern!(py, "join"), (list,))?;
        return write(py, obj, t, &joined);
    }
    check_writable(py, t, "writelines")?;
    if !list.is_truthy()? {
        return Ok(());
    }
    let mut views = Vec::new();
    for item in list.try_iter()? {
        views.push(PyMemoryView::from(&item?)?);
    }
    if lost_write(py, t)? {
        return Ok(());
    }
    {
        let mut st = t.st.get_mut(py);
        for v in &views {
            keep::enqueue(&mut st.queue, v.as_any(), 0, false)?;
        }
    }
    // `self._write_ready()`: try at once.
    write_ready(py, obj, t)?;
    if !t.st.get(py).queue.is_empty() && t.st.get(py).conn_lost == 0 {
        want_writer(py, obj, t)?;
    }
    maybe_pause_protocol(py, obj, t)
}

/// `_maybe_pause_protocol()`.
pub(crate) fn maybe_pause_protocol(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport) -> PyResult<()> {
    let protocol = {
        let mut st = t.st.get_mut(py);
        if st.write_buffer_size() as f64 <= st.high_water() || st.protocol_paused {
            return Ok(());
        }
        st.protocol_paused = true;
        st.protocol.as_ref().map(|p| p.clone_ref(py))
    };
    flow_call(
        py,
        obj,
        protocol,
        pyo3::intern!(py, "pause_writing"),
        "protocol.pause_writing() failed",
    )
}

/// `_maybe_resume_protocol()`.
pub(crate) fn maybe_resume_protocol(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport) -> PyResult<()> {
    let protocol = {
        let mut st = t.st.get_mut(py);
        if !st.protocol_paused || st.write_buffer_size() as f64 > st.low_water() {
            return Ok(());
        }
        st.protocol_paused = false;
        st.protocol.as_ref().map(|p| p.clone_ref(py))
    };
    flow_call(
        py,
        obj,
        protocol,
        pyo3::intern!(py, "resume_writing"),
        "protocol.resume_writing() failed",
    )
}

fn flow_call(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    protocol: Option<Held<PyAny>>,
    method: &Bound<'_, PyString>,
    message: &str,
) -> PyResult<()> {
    // `self._protocol.pause_writing()` on a None protocol raises AttributeError, reported likewise.
    let res = match &protocol {
        Some(p) => call_method(p.bind(py), method, &[]).map(|_| ()),
        None => call_method(&py.None().into_bound(py), method, &[]).map(|_| ()),
    };
    match res {
        Ok(()) => Ok(()),
        Err(err)
            if err.is_instance_of::<pyo3::exceptions::PySystemExit>(py)
                || err.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) =>
        {
            Err(err)
        }
        Err(err) => hooks::report(py, obj, message, err.value(py).as_any()),
    }
}
