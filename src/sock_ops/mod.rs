//! `sock_recv`, `sock_recv_into`, `sock_recvfrom`, `sock_recvfrom_into`,
//! `sock_sendall`, `sock_sendto`, `sock_accept`: native coroutines.
//!
//! Mirrors `selector_events.BaseSelectorEventLoop.sock_*`: calling the method
//! returns a coroutine (an object asyncio's `iscoroutine` accepts, so
//! `create_task(loop.sock_recv(...))` works); its first step runs the checks
//! (`_check_ssl_socket`, non-blocking socket in debug mode) and tries the
//! call at once; if the socket is not ready it registers itself as the fd's
//! reader or writer (asyncio's `_add_reader(fd, self._sock_recv, ...)`),
//! yields a future from `loop.create_future()`, and finishes with the
//! future's result. The retry on readiness runs natively, without a Python
//! handle; the future is completed with the same result or exception as
//! asyncio's `_sock_recv` & co.; the watcher is removed when it completes
//! (asyncio's `_sock_read_done`).
//!
//! `recv`, `recv_into` and `send` are system calls made here; the calls
//! whose arguments or results are richer (`recvfrom`, `sendto`, `accept`)
//! are the Python socket's own methods, so addresses come out exactly as
//! `socket` makes them.
//!
//! # Coroutine protocol
//! `__await__` returns the object itself; `send`, `__next__` and the C-level
//! `am_send` step it; `throw` and `close` abandon a pending wait (the
//! watcher is removed, nothing more is read); an object dropped before its
//! first step warns "coroutine ... was never awaited" as a Python coroutine
//! does.
//!
//! # Invariants
//! - `st` is never borrowed across a call into Python.
//! - While `Waiting`, the operation is registered as the watcher of its fd
//!   (a strong reference), unless somebody replaced it.

use std::os::fd::RawFd;
use std::sync::OnceLock;

use ferroloop_core::net;
use ferroloop_core::reactor::{READ, WRITE};
use pyo3::exceptions::{PyBlockingIOError, PyInterruptedError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyInt;

use crate::event_loop::fd_watch;
use crate::event_loop::{EventLoop, Watcher};
use crate::py::buffer::HeldBuffer;
use crate::py::cell::GilCell;
use crate::py::errors::os_error;
use crate::py::gc::{self, GcRefs, GcStop, Visitor};
use crate::py::held::Held;
use crate::py::native_type::{RawClass, RawPayload};

mod coroutine;
mod sendall;
pub(crate) use coroutine::{init_class, methods_for_loop};

/// What the coroutine does.
#[derive(Debug)]
pub(crate) enum OpKind {
    Recv {
        n: Held<PyAny>,
    },
    RecvInto {
        buf: Held<PyAny>,
    },
    RecvFrom {
        bufsize: Held<PyAny>,
    },
    RecvFromInto {
        buf: Held<PyAny>,
        nbytes: Held<PyAny>,
    },
    SendAll {
        data: Held<PyAny>,
        view: Option<HeldBuffer>,
        pos: usize,
        /// A socket that is not exactly `socket.socket`: asyncio's
        /// `memoryview(data)` and position, sent through its `send` method.
        py_state: Option<(Held<PyAny>, Held<PyAny>)>,
    },
    SendTo {
        data: Held<PyAny>,
        address: Held<PyAny>,
    },
    Accept,
    /// `_sock_sendfile_native`: `os.sendfile` from `fileno` until `count`
    /// bytes (0: to the end) are sent; the file position follows.
    SendFile {
        fileno: RawFd,
        offset: i64,
        count: u64,
        blocksize: u64,
        total_sent: u64,
    },
}

impl OpKind {
    /// The side of the fd the operation waits for.
    fn side(&self) -> u32 {
        match self {
            OpKind::SendAll { .. } | OpKind::SendTo { .. } | OpKind::SendFile { .. } => WRITE,
            _ => READ,
        }
    }

    /// `BaseSelectorEventLoop.<name>`, for the coroutine's `__qualname__`.
    pub(crate) fn qualname(&self) -> &'static str {
        match self {
            OpKind::Recv { .. } => "BaseSelectorEventLoop.sock_recv",
            OpKind::RecvInto { .. } => "BaseSelectorEventLoop.sock_recv_into",
            OpKind::RecvFrom { .. } => "BaseSelectorEventLoop.sock_recvfrom",
            OpKind::RecvFromInto { .. } => "BaseSelectorEventLoop.sock_recvfrom_into",
            OpKind::SendAll { .. } => "BaseSelectorEventLoop.sock_sendall",
            OpKind::SendTo { .. } => "BaseSelectorEventLoop.sock_sendto",
            OpKind::Accept => "BaseSelectorEventLoop.sock_accept",
            OpKind::SendFile { .. } => "_UnixSelectorEventLoop._sock_sendfile_native",
        }
    }

    fn visit(&self, v: &Visitor<'_, '_>) -> Result<(), GcStop> {
        match self {
            OpKind::Recv { n } => v.visit(Some(&**n)),
            OpKind::RecvInto { buf } => v.visit(Some(&**buf)),
            OpKind::RecvFrom { bufsize } => v.visit(Some(&**bufsize)),
            OpKind::RecvFromInto { buf, nbytes } => {
                v.visit(Some(&**buf))?;
                v.visit(Some(&**nbytes))
            }
            OpKind::SendAll { data, py_state, .. } => {
                v.visit(Some(&**data))?;
                if let Some((view, pos)) = py_state {
                    v.visit(Some(&**view))?;
                    v.visit(Some(&**pos))?;
                }
                Ok(())
            }
            OpKind::SendTo { data, address } => {
                v.visit(Some(&**data))?;
                v.visit(Some(&**address))
            }
            OpKind::Accept | OpKind::SendFile { .. } => Ok(()),
        }
    }
}

/// Where the coroutine is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Created, never stepped.
    #[default]
    Init,
    /// Registered, waiting for `fut`.
    Waiting,
    /// Finished (returned, raised, closed).
    Done,
}

#[derive(Debug, Default)]
pub(crate) struct OpState {
    pub loop_: Option<Held<EventLoop>>,
    pub sock: Option<Held<PyAny>>,
    pub kind: Option<OpKind>,
    pub phase: Phase,
    pub fut: Option<Held<PyAny>>,
    /// The fd registered while waiting.
    pub fd: RawFd,
}

impl GcRefs for OpState {
    fn visit_refs(&self, v: &Visitor<'_, '_>) -> Result<(), GcStop> {
        v.visit(self.loop_.as_deref())?;
        v.visit(self.sock.as_deref())?;
        v.visit(self.fut.as_deref())?;
        match &self.kind {
            Some(k) => k.visit(v),
            None => Ok(()),
        }
    }
}

/// The payload of a socket-operation coroutine.
#[derive(Debug, Default)]
pub(crate) struct SockOp {
    pub(crate) st: GilCell<OpState>,
}

static CLASS: OnceLock<RawClass<SockOp>> = OnceLock::new();

impl RawPayload for SockOp {
    fn class() -> &'static RawClass<Self> {
        CLASS
            .get()
            .unwrap_or_else(|| unreachable!("ferroloop socket operations are not registered"))
    }

    fn visit_refs(&self, v: &Visitor<'_, '_>) -> Result<(), GcStop> {
        match self.st.try_get() {
            Some(st) => st.visit_refs(v),
            None => Ok(()),
        }
    }

    fn clear_refs(&self, _py: Python<'_>) {
        gc::clear(&self.st);
    }

    fn finalize(obj: &Bound<'_, PyAny>) {
        coroutine::finalize(obj);
    }
}

/// A strong reference to a socket-operation coroutine.
#[derive(Debug)]
pub(crate) struct OpRef(Held<PyAny>);

impl OpRef {
    fn of(obj: &Bound<'_, PyAny>) -> Self {
        Self(Held::new(obj.clone().unbind()))
    }

    pub(crate) fn get(&self) -> &SockOp {
        // SAFETY: an OpRef only holds instances of the class (made in this
        // module), kept alive by the reference itself.
        unsafe { SockOp::class().payload(self.0.as_ptr()) }
    }

    pub(crate) fn as_py(&self) -> &Py<PyAny> {
        &self.0
    }

    pub(crate) fn clone_ref(&self, py: Python<'_>) -> Self {
        Self(self.0.clone_ref(py))
    }
}

/// The outcome of one attempt.
enum Attempt<'py> {
    Done(Bound<'py, PyAny>),
    WouldBlock,
    Failed(PyErr),
}

fn would_block(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PyBlockingIOError>(py) || err.is_instance_of::<PyInterruptedError>(py)
}

/// Turn a Python call's result into an attempt.
fn from_call<'py>(py: Python<'py>, res: PyResult<Bound<'py, PyAny>>) -> Attempt<'py> {
    match res {
        Ok(v) => Attempt::Done(v),
        Err(e) if would_block(py, &e) => {
            crate::py::errors::discard(py, e);
            Attempt::WouldBlock
        }
        Err(e) => Attempt::Failed(e),
    }
}

/// Turn a system call's result into an attempt.
fn from_syscall<'py>(_py: Python<'py>, res: std::io::Result<Bound<'py, PyAny>>) -> Attempt<'py> {
    match res {
        Ok(v) => Attempt::Done(v),
        Err(e) if net::would_block(&e) => Attempt::WouldBlock,
        Err(e) => Attempt::Failed(os_error(&e)),
    }
}

/// `sock.fileno()` (where asyncio calls it; the system calls asyncio makes
/// through a plain socket's C methods read the descriptor from the object:
/// `py::sockobj`).
fn fileno(sock: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    sock.call_method0(pyo3::intern!(sock.py(), "fileno"))?.extract()
}

/// Exactly a `socket.socket`: its methods are the C ones, so the system call
/// can be made directly. Anything else (a subclass, a wrapper, a wrong
/// argument) gets asyncio's calls of its own methods, in asyncio's order.
fn plain_socket(sock: &Bound<'_, PyAny>) -> bool {
    crate::transports::socket_class(sock.py()).is_ok_and(|class| sock.get_type().is(class))
}

/// `sock.recv(n)` natively (the Python method when `n` is not a plain int).
fn recv<'py>(lp: &EventLoop, sock: &Bound<'py, PyAny>, n: &Bound<'py, PyAny>) -> Attempt<'py> {
    let py = sock.py();
    let size = if n.is_exact_instance_of::<PyInt>() {
        n.extract::<isize>().ok()
    } else {
        None
    };
    // `recv(0)` returns b"" without a system call (so even on a closed or
    // unconnected socket, and never waits): the socket's own method says so.
    let Some(size) = size.filter(|&s| s != 0 && plain_socket(sock)) else {
        return from_call(py, sock.call_method1(pyo3::intern!(py, "recv"), (n,)));
    };
    if size < 0 {
        return Attempt::Failed(PyValueError::new_err("negative buffersize in recv"));
    }
    let fd = match crate::py::sockobj::socket_fd(sock) {
        Ok(fd) => fd,
        Err(e) => return Attempt::Failed(e),
    };
    from_syscall(py, lp.recv_sized(py, fd, size as usize).map(Bound::into_any))
}

/// `sock.recv_into(buf)` natively.
fn recv_into<'py>(sock: &Bound<'py, PyAny>, buf: &Bound<'py, PyAny>) -> Attempt<'py> {
    let py = sock.py();
    if !plain_socket(sock) {
        return from_call(py, sock.call_method1(pyo3::intern!(py, "recv_into"), (buf,)));
    }
    let received = crate::py::buffer::with_writable(buf, |ptr, len| {
        if len == 0 {
            return None;
        }
        let fd = match crate::py::sockobj::socket_fd(sock) {
            Ok(fd) => fd,
            Err(e) => return Some(Err(e)),
        };
        // SAFETY: the writable export pins `len` bytes at `ptr` during the call.
        Some(Ok(unsafe { ferroloop_core::sys::recv_raw(fd, ptr, len) }))
    });
    let res = match received {
        Err(_) => return Attempt::Failed(crate::py::errors::not_writable_buffer("recv_into", buf)),
        // As `recv(0)`: no system call, 0 at once (the socket's own method).
        Ok(None) => return from_call(py, sock.call_method1(pyo3::intern!(py, "recv_into"), (buf,))),
        Ok(Some(Err(e))) => return Attempt::Failed(e),
        Ok(Some(Ok(res))) => res,
    };
    from_syscall(
        py,
        res.and_then(|n| {
            n.into_pyobject(py)
                .map(Bound::into_any)
                .map_err(|_| std::io::Error::other("int"))
        }),
    )
}

/// One attempt of the operation (the first step, or a retry on readiness).
fn attempt<'py>(py: Python<'py>, lp: &EventLoop, sock: &Bound<'py, PyAny>, op: &SockOp, first: bool) -> Attempt<'py> {
    // Take what the attempt needs out of the state (no borrow across Python).
    enum Args {
        Recv(Py<PyAny>),
        RecvInto(Py<PyAny>),
        RecvFrom(Py<PyAny>),
        RecvFromInto(Py<PyAny>, Py<PyAny>),
        SendAll,
        SendTo(Py<PyAny>, Py<PyAny>),
        Accept,
        SendFile,
    }
    let args = {
        let st = op.st.get(py);
        match &st.kind {
            Some(OpKind::Recv { n }) => Args::Recv(n.to_py(py)),
            Some(OpKind::RecvInto { buf }) => Args::RecvInto(buf.to_py(py)),
            Some(OpKind::RecvFrom { bufsize }) => Args::RecvFrom(bufsize.to_py(py)),
            Some(OpKind::RecvFromInto { buf, nbytes }) => Args::RecvFromInto(buf.to_py(py), nbytes.to_py(py)),
            Some(OpKind::SendAll { .. }) => Args::SendAll,
            Some(OpKind::SendTo { data, address }) => Args::SendTo(data.to_py(py), address.to_py(py)),
            Some(OpKind::Accept) => Args::Accept,
            Some(OpKind::SendFile { .. }) => Args::SendFile,
            None => return Attempt::Failed(PyRuntimeError::new_err("socket operation already finished")),
        }
    };
    match args {
        Args::Recv(n) => recv(lp, sock, n.bind(py)),
        Args::RecvInto(buf) => recv_into(sock, buf.bind(py)),
        Args::RecvFrom(bufsize) => from_call(py, sock.call_method1(pyo3::intern!(py, "recvfrom"), (bufsize,))),
        Args::RecvFromInto(buf, nbytes) => {
            from_call(py, sock.call_method1(pyo3::intern!(py, "recvfrom_into"), (buf, nbytes)))
        }
        Args::SendAll => sendall::send_all(py, sock, op, first),
        Args::SendTo(data, address) => {
            let res = if first {
                sock.call_method1(pyo3::intern!(py, "sendto"), (data, address))
            } else {
                sock.call_method1(pyo3::intern!(py, "sendto"), (data, 0, address))
            };
            from_call(py, res)
        }
        Args::Accept => {
            // `_sock_accept`: `fd = sock.fileno()` first (a plain socket's
            // cannot fail, so it is skipped).
            if !plain_socket(sock) {
                if let Err(e) = fileno(sock) {
                    return Attempt::Failed(e);
                }
            }
            let res = sock.call_method0(pyo3::intern!(py, "accept")).and_then(|pair| {
                let conn = pair.get_item(0)?;
                conn.call_method1(pyo3::intern!(py, "setblocking"), (false,))?;
                Ok(pair)
            });
            from_call(py, res)
        }
        Args::SendFile => send_file(py, sock, op, first),
    }
}

/// `_sock_sendfile_update_filepos`: leave the file where the data ended.
fn update_filepos(op: &SockOp, py: Python<'_>) {
    if let Some(OpKind::SendFile {
        fileno,
        offset,
        total_sent,
        ..
    }) = &op.st.get(py).kind
    {
        if *total_sent > 0 {
            let _ = net::lseek_set(*fileno, *offset);
        }
    }
}

/// `_sock_sendfile_native_impl`: one `os.sendfile`; asyncio's errors.
fn send_file<'py>(py: Python<'py>, sock: &Bound<'py, PyAny>, op: &SockOp, first: bool) -> Attempt<'py> {
    let state = match &op.st.get(py).kind {
        Some(OpKind::SendFile {
            fileno,
            offset,
            count,
            blocksize,
            total_sent,
        }) => Some((*fileno, *offset, *count, *blocksize, *total_sent)),
        _ => None,
    };
    let Some((file_fd, offset, count, blocksize, total_sent)) = state else {
        return Attempt::Failed(PyRuntimeError::new_err("not a sendfile"));
    };
    let total = || match total_sent.into_pyobject(py) {
        Ok(v) => Attempt::Done(v.into_any()),
        Err(e) => Attempt::Failed(e.into()),
    };
    let mut blocksize = blocksize;
    if count > 0 {
        if total_sent >= count {
            update_filepos(op, py);
            return total();
        }
        blocksize = count - total_sent;
    }
    let fd = match fileno(sock) {
        Ok(fd) => fd,
        Err(e) => return Attempt::Failed(e),
    };
    let mut off = offset;
    match net::sendfile(fd, file_fd, &mut off, usize::try_from(blocksize).unwrap_or(usize::MAX)) {
        Err(e) if net::would_block(&e) => Attempt::WouldBlock,
        Err(e) => {
            let mut exc = os_error(&e);
            if !first && e.raw_os_error() == Some(net::ENOTCONN) {
                let new = pyo3::exceptions::PyConnectionError::new_err(("socket is not connected", net::ENOTCONN));
                new.set_cause(py, Some(exc));
                exc = new;
            }
            update_filepos(op, py);
            if total_sent == 0 {
                let unavailable = py
                    .import("asyncio.exceptions")
                    .and_then(|m| m.getattr("SendfileNotAvailableError"))
                    .and_then(|t| t.call1(("os.sendfile call failed",)));
                match unavailable {
                    Ok(err) => Attempt::Failed(PyErr::from_value(err)),
                    Err(e) => Attempt::Failed(e),
                }
            } else {
                Attempt::Failed(exc)
            }
        }
        Ok(0) => {
            update_filepos(op, py);
            total()
        }
        Ok(n) => {
            if let Some(OpKind::SendFile { offset, total_sent, .. }) = &mut op.st.get_mut(py).kind {
                *offset = off;
                *total_sent += n as u64;
            }
            // asyncio waits for the next writable event after every chunk.
            Attempt::WouldBlock
        }
    }
}

/// The first step: checks, one attempt, and the registration if it must wait.
/// `Ok(Ok(result))` finished, `Ok(Err(fut))` waits for `fut`.
pub(crate) fn start<'py>(
    obj: &Bound<'py, PyAny>,
    op: &SockOp,
) -> PyResult<Result<Bound<'py, PyAny>, Bound<'py, PyAny>>> {
    let py = obj.py();
    let (lp, sock) = {
        let st = op.st.get(py);
        match (&st.loop_, &st.sock) {
            (Some(l), Some(s)) => (l.clone_ref(py), s.clone_ref(py)),
            _ => return Err(PyRuntimeError::new_err("socket operation already finished")),
        }
    };
    let lp = lp.bind(py);
    let sock = sock.bind(py);
    coroutine::check_socket(py, lp, sock)?;
    resolve_nbytes(py, op)?;
    match attempt(py, lp.get(), sock, op, true) {
        Attempt::Done(v) => Ok(Ok(v)),
        Attempt::Failed(e) => Err(e),
        Attempt::WouldBlock => {
            let fut = lp.call_method0(pyo3::intern!(py, "create_future"))?;
            let fd = fileno(sock)?;
            crate::event_loop::transport_map::ensure_fd_no_transport(lp, &fd.into_pyobject(py)?.into_any())?;
            // `_add_reader`/`_add_writer` start with `_check_closed()`.
            if lp.get().is_closed_flag(py) {
                return Err(PyRuntimeError::new_err("Event loop is closed"));
            }
            let side = op.st.get(py).kind.as_ref().map_or(READ, OpKind::side);
            let fd_obj = fd.into_pyobject(py)?.into_any();
            // Edge-triggered (owned) unless the operation may retry after
            // progress: sendfile waits for the next writable event after each
            // chunk, and a socket's own Python `send` may send part without
            // filling the buffer; an edge registration would not report the
            // still-writable socket again.
            let kind_retries = matches!(op.st.get(py).kind, Some(OpKind::SendFile { .. })) || !plain_socket(sock);
            let owner = if kind_retries { None } else { Some(sock) };
            fd_watch::add_watcher(lp, &fd_obj, fd, Watcher::Op(OpRef::of(obj)), side, owner)?;
            {
                let mut st = op.st.get_mut(py);
                st.fut = Some(Held::new(fut.clone().unbind()));
                st.fd = fd;
                st.phase = Phase::Waiting;
            }
            Ok(Err(fut))
        }
    }
}

/// `sock_recvfrom_into`: `if not nbytes: nbytes = len(buf)`.
fn resolve_nbytes(py: Python<'_>, op: &SockOp) -> PyResult<()> {
    let (buf, nbytes) = match &op.st.get(py).kind {
        Some(OpKind::RecvFromInto { buf, nbytes }) => (buf.to_py(py), nbytes.to_py(py)),
        _ => return Ok(()),
    };
    if nbytes.bind(py).is_truthy()? {
        return Ok(());
    }
    let len = buf.bind(py).len()?.into_pyobject(py)?.into_any().unbind();
    if let Some(OpKind::RecvFromInto { nbytes, .. }) = &mut op.st.get_mut(py).kind {
        *nbytes = Held::new(len);
    }
    Ok(())
}

/// Remove this operation's watcher (if it is still the fd's watcher).
pub(crate) fn unregister(py: Python<'_>, obj: &Bound<'_, PyAny>, op: &SockOp) -> PyResult<()> {
    let (lp, fd, side) = {
        let st = op.st.get(py);
        let Some(lp) = &st.loop_ else { return Ok(()) };
        (lp.clone_ref(py), st.fd, st.kind.as_ref().map_or(READ, OpKind::side))
    };
    if lp.get().is_closed_flag(py) {
        return Ok(());
    }
    let me = obj.as_ptr();
    fd_watch::remove_fd_if(
        lp.bind(py),
        fd,
        side,
        |w| matches!(w, Watcher::Op(o) if o.as_py().as_ptr() == me),
    )?;
    Ok(())
}

/// The fd of a waiting operation is ready: retry it (asyncio's `_sock_recv` & co.).
pub(crate) fn on_ready(py: Python<'_>, op_ref: &OpRef) -> PyResult<()> {
    let op = op_ref.get();
    let obj = op_ref.as_py().bind(py);
    let (lp, sock, fut) = {
        let st = op.st.get(py);
        match (&st.loop_, &st.sock, &st.fut, st.phase) {
            (Some(l), Some(s), Some(f), Phase::Waiting) => (l.clone_ref(py), s.clone_ref(py), f.clone_ref(py)),
            _ => return unregister(py, obj, op),
        }
    };
    let fut = fut.bind(py);
    if fut.call_method0(pyo3::intern!(py, "done"))?.is_truthy()? {
        // Cancelled: asyncio's done callback removes the watcher (and a
        // sendfile leaves the file where the data ended).
        update_filepos(op, py);
        return unregister(py, obj, op);
    }
    match attempt(py, lp.get(), sock.bind(py), op, false) {
        Attempt::WouldBlock => Ok(()),
        Attempt::Done(v) => {
            unregister(py, obj, op)?;
            fut.call_method1(pyo3::intern!(py, "set_result"), (v,))?;
            Ok(())
        }
        Attempt::Failed(e) => {
            if e.is_instance_of::<pyo3::exceptions::PySystemExit>(py)
                || e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py)
            {
                return Err(e);
            }
            unregister(py, obj, op)?;
            fut.call_method1(pyo3::intern!(py, "set_exception"), (e.into_value(py),))?;
            Ok(())
        }
    }
}

/// Build the coroutine of one `sock_*` call.
pub(crate) fn new_op<'py>(
    lp: &Bound<'py, PyAny>,
    sock: &Bound<'py, PyAny>,
    kind: OpKind,
) -> PyResult<Bound<'py, PyAny>> {
    let py = lp.py();
    let lp = lp.cast::<EventLoop>()?;
    let state = OpState {
        loop_: Some(Held::new(lp.clone().unbind())),
        sock: Some(Held::new(sock.clone().unbind())),
        kind: Some(kind),
        phase: Phase::Init,
        fut: None,
        fd: -1,
    };
    SockOp::class().new_instance(
        py,
        SockOp {
            st: GilCell::new(state),
        },
    )
}

pub(crate) fn set_class(class: RawClass<SockOp>) {
    let _ = CLASS.set(class);
}

/// The callback and arguments of asyncio's reader/writer handle for this
/// operation (`loop._sock_recv(fut, sock, n)` & co.), for debug mode.
pub(crate) fn debug_callback<'py>(
    lp: &Bound<'py, EventLoop>,
    op_ref: &OpRef,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, pyo3::types::PyTuple>)> {
    let py = lp.py();
    let st = op_ref.get().st.get(py);
    let name = match &st.kind {
        Some(OpKind::Recv { .. }) => "_sock_recv",
        Some(OpKind::RecvInto { .. }) => "_sock_recv_into",
        Some(OpKind::RecvFrom { .. }) => "_sock_recvfrom",
        Some(OpKind::RecvFromInto { .. }) => "_sock_recvfrom_into",
        Some(OpKind::SendAll { .. }) => "_sock_sendall",
        Some(OpKind::SendTo { .. }) => "_sock_sendto",
        Some(OpKind::Accept) | None => "_sock_accept",
        Some(OpKind::SendFile { .. }) => "_sock_sendfile_native_impl",
    };
    let none = || py.None();
    let args = pyo3::types::PyTuple::new(
        py,
        [
            st.fut.as_ref().map_or_else(none, |f| f.to_py(py)),
            st.sock.as_ref().map_or_else(none, |s| s.to_py(py)),
        ],
    )?;
    drop(st);
    Ok((lp.getattr(name)?, args))
}

/// `_sock_sendfile_native`'s wait: a native coroutine sending `fileno`
/// through `sock` (the checks of the Python method ran already).
#[pyfunction]
#[pyo3(signature = (loop_, sock, fileno, offset, count, blocksize))]
pub(crate) fn _sendfile_op<'py>(
    loop_: &Bound<'py, PyAny>,
    sock: &Bound<'py, PyAny>,
    fileno: RawFd,
    offset: i64,
    count: u64,
    blocksize: u64,
) -> PyResult<Bound<'py, PyAny>> {
    new_op(
        loop_,
        sock,
        OpKind::SendFile {
            fileno,
            offset,
            count,
            blocksize,
            total_sent: 0,
        },
    )
}
