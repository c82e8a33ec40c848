//! The native accept loop behind `_start_serving`.
//!
//! Mirrors `BaseSelectorEventLoop._start_serving`/`_accept_connection`/
//! `_accept_connection2`: the listening socket is watched for readability;
//! each readiness accepts up to `backlog` connections; each accepted
//! connection is set up one iteration later (where asyncio's
//! `_accept_connection2` task takes its first step), in a copy of the
//! listener's context: `protocol_factory()`, then the native transport
//! (whose constructor schedules `connection_made` and reading as asyncio's
//! does). Errors of the protocol factory are swallowed, as the task does,
//! and the accepted socket is dropped unclosed (its finalizer's
//! `ResourceWarning`), as the task's frame drops it.
//! `EMFILE`/`ENFILE`/`ENOBUFS`/`ENOMEM` are reported, the listener stops,
//! and `_start_serving` is called again after `ACCEPT_RETRY_DELAY`.
//!
//! A TLS server's connections get asyncio's `_accept_connection2` task,
//! made in the accept step as asyncio makes it: the task lives until the
//! handshake ends, where `all_tasks()` and a shutdown's cancellation see it.
//!
//! Not native (asyncio's own Python path, exactly): any accept while debug
//! mode is on or a task factory is set (both can observe asyncio's
//! per-connection task).
//!
//! # Invariants
//! - `st` is never borrowed across a call into Python.
//! - The loop's registration (a strong reference) exists from
//!   `_start_serving` until `_stop_serving`/`_remove_reader`.

use std::os::fd::RawFd;

use ferroloop_core::net::{self, Fd, SockAddr};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use pyo3::{PyTraverseError, PyVisit};

use crate::event_loop::EventLoop;
use crate::py::call::{copy_context, copy_of, in_context};
use crate::py::cell::GilCell;
use crate::py::errors::os_error;
use crate::py::gc::{self, GcRefs, GcStop, Visitor};
use crate::py::held::Held;
use crate::transports::stream::SockKind;
use crate::transports::stream_life::{self, NewStream, Origin};

#[derive(Debug, Default)]
pub(crate) struct ListenerState {
    loop_: Option<Held<EventLoop>>,
    protocol_factory: Option<Held<PyAny>>,
    sock: Option<Held<PyAny>>,
    server: Option<Held<PyAny>>,
    /// A TLS server's `ssl.SSLContext`.
    sslcontext: Option<Held<PyAny>>,
    /// `(ssl_handshake_timeout, ssl_shutdown_timeout)` for a retry or the Python path.
    timeouts: Option<Held<PyTuple>>,
    /// The context `_add_reader` would have copied for the accept handle.
    ctx: Option<Held<PyAny>>,
    fd: RawFd,
    backlog: u32,
    kind: SockKind,
    /// Accepted, waiting for their set-up step.
    pending: Vec<(Fd, SockAddr)>,
    step_queued: bool,
}

impl GcRefs for ListenerState {
    fn visit_refs(&self, v: &Visitor<'_, '_>) -> Result<(), GcStop> {
        v.visit(self.loop_.as_deref())?;
        v.visit(self.protocol_factory.as_deref())?;
        v.visit(self.sock.as_deref())?;
        v.visit(self.server.as_deref())?;
        v.visit(self.sslcontext.as_deref())?;
        v.visit(self.timeouts.as_deref())?;
        v.visit(self.ctx.as_deref())
    }
}

/// A listening socket served natively.
#[pyclass(module = "ferroloop._ferroloop", frozen)]
#[derive(Debug)]
pub(crate) struct Listener {
    st: GilCell<ListenerState>,
}

#[pymethods]
impl Listener {
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        gc::traverse(&self.st, &visit)
    }

    fn __clear__(&self) {
        gc::clear(&self.st);
    }
}

/// What a listener's ready item does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The socket is readable: accept.
    Accept,
    /// Set up the connections accepted in the previous iteration.
    SetUp,
}

const ACCEPT_FAILED: &str = "socket.accept() out of system resource";

/// `_start_serving(protocol_factory, sock, sslcontext, server, backlog, ...)`.
#[pyfunction]
#[pyo3(signature = (loop_, protocol_factory, sock, sslcontext, server, backlog, ssl_handshake_timeout, ssl_shutdown_timeout))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn _start_listener(
    loop_: &Bound<'_, PyAny>,
    protocol_factory: &Bound<'_, PyAny>,
    sock: &Bound<'_, PyAny>,
    sslcontext: &Bound<'_, PyAny>,
    server: &Bound<'_, PyAny>,
    backlog: i64,
    ssl_handshake_timeout: &Bound<'_, PyAny>,
    ssl_shutdown_timeout: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let py = loop_.py();
    let lp = loop_.cast::<EventLoop>()?;
    let fd: RawFd = sock.call_method0(pyo3::intern!(py, "fileno"))?.extract()?;
    let kind = SockKind {
        family: sock.getattr(pyo3::intern!(py, "family"))?.extract()?,
        type_: sock.getattr(pyo3::intern!(py, "type"))?.extract()?,
        proto: sock.getattr(pyo3::intern!(py, "proto"))?.extract()?,
    };
    let state = ListenerState {
        loop_: Some(Held::new(lp.clone().unbind())),
        protocol_factory: Some(Held::new(protocol_factory.clone().unbind())),
        sock: Some(Held::new(sock.clone().unbind())),
        server: (!server.is_none()).then(|| Held::new(server.clone().unbind())),
        sslcontext: (!sslcontext.is_none()).then(|| Held::new(sslcontext.clone().unbind())),
        timeouts: Some(Held::new(
            PyTuple::new(py, [ssl_handshake_timeout, ssl_shutdown_timeout])?.unbind(),
        )),
        ctx: Some(Held::new(copy_context(py)?)),
        fd,
        backlog: u32::try_from(backlog.max(0)).unwrap_or(u32::MAX),
        kind,
        pending: Vec::new(),
        step_queued: false,
    };
    let listener = Py::new(
        py,
        Listener {
            st: GilCell::new(state),
        },
    )?;
    lp.get().add_listener(py, fd, Held::new(listener))
}

/// Run a listener's ready item.
pub(crate) fn on_ready(py: Python<'_>, listener: &Held<Listener>, step: Step) -> PyResult<()> {
    let ctx = listener.get().st.get(py).ctx.as_ref().map(|c| c.clone_ref(py));
    in_context(py, ctx.as_deref(), || match step {
        Step::Accept => accept(py, listener),
        Step::SetUp => set_up(py, listener),
    })
}

/// True when asyncio's own Python path must run: debug mode or a task factory.
fn observable(py: Python<'_>, lp: &Bound<'_, EventLoop>) -> PyResult<bool> {
    if lp.get().debug(py) {
        return Ok(true);
    }
    Ok(!lp.getattr(pyo3::intern!(py, "_task_factory"))?.is_none())
}

/// The arguments of `_accept_connection`/`_start_serving` after the factory.
fn python_args<'py>(py: Python<'py>, st: &ListenerState) -> PyResult<Bound<'py, PyTuple>> {
    let none = py.None();
    let get = |h: Option<&Held<PyAny>>| h.map_or_else(|| none.clone_ref(py), |o| o.to_py(py));
    let timeouts = st.timeouts.as_ref().map(|t| t.to_py(py));
    let (hs, sd) = match &timeouts {
        Some(t) => (t.bind(py).get_item(0)?.unbind(), t.bind(py).get_item(1)?.unbind()),
        None => (none.clone_ref(py), none.clone_ref(py)),
    };
    PyTuple::new(
        py,
        [
            get(st.protocol_factory.as_ref()),
            get(st.sock.as_ref()),
            get(st.sslcontext.as_ref()),
            get(st.server.as_ref()),
            st.backlog.into_pyobject(py)?.into_any().unbind(),
            hs,
            sd,
        ],
    )
}

/// `_accept_connection`: accept up to `backlog` connections.
fn accept(py: Python<'_>, listener: &Held<Listener>) -> PyResult<()> {
    let (lp, fd, backlog) = {
        let st = listener.get().st.get(py);
        let Some(lp) = &st.loop_ else { return Ok(()) };
        (lp.clone_ref(py), st.fd, st.backlog)
    };
    let lp = lp.bind(py);
    if !lp.get().serves(py, fd, listener) {
        // Removed after this accept was queued (a callback earlier in the
        // iteration closed the server): asyncio's accept handle was
        // cancelled with its registration, and the fd may be closed or reused.
        return Ok(());
    }
    if observable(py, lp)? {
        let args = python_args(py, &listener.get().st.get(py))?;
        lp.call_method1(pyo3::intern!(py, "_accept_connection"), args)?;
        return Ok(());
    }
    let tls = listener.get().st.get(py).sslcontext.is_some();
    for _ in 0..backlog {
        match net::accept(fd) {
            Ok((conn, peer)) if tls => start_tls_task(py, listener, lp, conn, &peer)?,
            Ok(conn) => listener.get().st.get_mut(py).pending.push(conn),
            Err(e) if net::would_block(&e) || e.raw_os_error() == Some(net::ECONNABORTED) => break,
            Err(e) if is_out_of_resources(&e) => out_of_resources(py, listener, lp, &e)?,
            Err(e) => return Err(os_error(&e)),
        }
    }
    let queue = {
        let mut st = listener.get().st.get_mut(py);
        let queue = !st.pending.is_empty() && !st.step_queued;
        st.step_queued |= queue;
        queue
    };
    if queue {
        lp.get().queue_listener(py, listener.clone_ref(py), Step::SetUp);
    }
    Ok(())
}

/// A TLS server's connection, as `_accept_connection` hands it on: a
/// non-blocking `socket.socket`, `extra={'peername': addr}` and a task
/// running asyncio's `_accept_connection2` (made here, in the accept step,
/// like asyncio's; the task waits for the handshake, so it stays visible to
/// `all_tasks()` and to the shutdown's cancellation).
fn start_tls_task(
    py: Python<'_>,
    listener: &Held<Listener>,
    lp: &Bound<'_, EventLoop>,
    conn: Fd,
    peer: &SockAddr,
) -> PyResult<()> {
    let (kind, args) = {
        let st = listener.get().st.get(py);
        (st.kind, python_args(py, &st)?)
    };
    let raw = conn.into_raw();
    // `_accept_connection` makes the accepted socket non-blocking with
    // `conn.setblocking(False)`; the descriptor already is (accept4), and
    // `SOCK_NONBLOCK` in the type gives the object the same state (timeout
    // 0, `type` without the flag) without the `ioctl`.
    let type_ = i32::from(kind.type_) | net::SOCK_NONBLOCK;
    let sock =
        match crate::transports::pysocket::new_socket(py, i32::from(kind.family), type_, i32::from(kind.proto), raw) {
            Ok(sock) => sock,
            Err(err) => {
                drop(Fd::from_raw(raw));
                return Err(err);
            }
        };
    let extra = pyo3::types::PyDict::new(py);
    extra.set_item(
        pyo3::intern!(py, "peername"),
        crate::transports::extra::addr_object(py, peer.decode())?,
    )?;
    // `_accept_connection2(protocol_factory, conn, extra, sslcontext, server,
    // ssl_handshake_timeout, ssl_shutdown_timeout)`: `_start_serving`'s
    // arguments but the socket and backlog, with the connection's.
    let call = PyTuple::new(
        py,
        [
            args.get_item(0)?,
            sock,
            extra.into_any(),
            args.get_item(2)?,
            args.get_item(3)?,
            args.get_item(5)?,
            args.get_item(6)?,
        ],
    )?;
    let coro = lp.call_method1(pyo3::intern!(py, "_accept_connection2"), call)?;
    lp.call_method1(pyo3::intern!(py, "create_task"), (coro,))?;
    Ok(())
}

fn is_out_of_resources(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(n) if net::OUT_OF_RESOURCES.contains(&n))
}

/// `EMFILE` & co.: report, stop accepting, retry `_start_serving` later.
fn out_of_resources(
    py: Python<'_>,
    listener: &Held<Listener>,
    lp: &Bound<'_, EventLoop>,
    e: &std::io::Error,
) -> PyResult<()> {
    let (sock, fd, args) = {
        let st = listener.get().st.get(py);
        (st.sock.as_ref().map(|s| s.to_py(py)), st.fd, python_args(py, &st)?)
    };
    let exc = os_error(e).into_value(py);
    let trsock = match &sock {
        Some(s) => crate::transports::transport_socket(py, s.bind(py))?.unbind(),
        None => py.None(),
    };
    let context = pyo3::types::PyDict::new(py);
    context.set_item("message", ACCEPT_FAILED)?;
    context.set_item("exception", exc)?;
    context.set_item("socket", trsock)?;
    lp.call_method1(pyo3::intern!(py, "call_exception_handler"), (context,))?;
    lp.call_method1(pyo3::intern!(py, "_remove_reader"), (fd,))?;
    let delay = py.import("asyncio.constants")?.getattr("ACCEPT_RETRY_DELAY")?;
    let retry = lp.getattr(pyo3::intern!(py, "_start_serving"))?;
    let mut call = vec![delay, retry];
    call.extend(args.iter());
    lp.call_method1(pyo3::intern!(py, "call_later"), PyTuple::new(py, call)?)?;
    Ok(())
}

/// `_accept_connection2` for every connection accepted last iteration.
fn set_up(py: Python<'_>, listener: &Held<Listener>) -> PyResult<()> {
    let (pending, lp, factory, server, ctx, kind) = {
        let mut st = listener.get().st.get_mut(py);
        st.step_queued = false;
        (
            std::mem::take(&mut st.pending),
            st.loop_.as_ref().map(|l| l.clone_ref(py)),
            st.protocol_factory.as_ref().map(|f| f.clone_ref(py)),
            st.server.as_ref().map(|s| s.clone_ref(py)),
            st.ctx.as_ref().map(|c| c.clone_ref(py)),
            st.kind,
        )
    };
    let (Some(lp), Some(factory)) = (lp, factory) else {
        return Ok(());
    };
    for (fd, peer) in pending {
        // The task's context: a copy of the accept handle's.
        let task_ctx = match &ctx {
            Some(c) => Some(copy_of(py, c)?),
            None => None,
        };
        let made = in_context(py, task_ctx.as_ref(), || {
            let protocol = match factory.bind(py).call0() {
                Ok(protocol) => protocol,
                Err(err) => {
                    drop_unclosed(py, fd, kind);
                    return Err(err);
                }
            };
            stream_life::create(
                lp.bind(py),
                Origin::Accepted { fd, peer, kind },
                NewStream {
                    protocol,
                    waiter: None,
                    extra: None,
                    server: server.as_ref().map(|s| s.bind(py).clone()),
                },
            )
        });
        if let Err(err) = made {
            if err.is_instance_of::<pyo3::exceptions::PySystemExit>(py)
                || err.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py)
            {
                return Err(err);
            }
            // Swallowed, as `_accept_connection2` does outside debug mode.
            // The descriptor went with its unclosed socket (above), or with
            // the half-made transport (closed by its `__del__`).
        }
    }
    Ok(())
}

/// The end of a connection whose protocol factory raised: asyncio's
/// `_accept_connection2` swallows the error and drops the accepted
/// `socket.socket` unclosed, whose finalizer closes it with a
/// `ResourceWarning` ("unclosed <socket.socket ...>"). The same socket
/// object, made and dropped here, does the same.
fn drop_unclosed(py: Python<'_>, fd: Fd, kind: SockKind) {
    let raw = fd.into_raw();
    match crate::transports::pysocket::new_socket(
        py,
        i32::from(kind.family),
        i32::from(kind.type_),
        i32::from(kind.proto),
        raw,
    ) {
        Ok(sock) => drop(sock),
        Err(_) => drop(Fd::from_raw(raw)),
    }
}

/// A Python handle describing this listener's accept handle (for an error
/// report: asyncio's handle runs `loop._accept_connection(...)`).
pub(crate) fn error_handle(py: Python<'_>, listener: &Held<Listener>) -> PyResult<Py<crate::handles::Handle>> {
    let lp = listener.get().st.get(py).loop_.as_ref().map(|l| l.clone_ref(py));
    let Some(lp) = lp else {
        return Err(pyo3::exceptions::PyRuntimeError::new_err("listener has no loop"));
    };
    let (callback, args) = debug_callback(lp.bind(py), listener)?;
    Py::new(
        py,
        crate::handles::Handle::new(callback.unbind(), args.unbind(), copy_context(py)?, lp.to_py(py), None),
    )
}

/// The callback and arguments of asyncio's accept handle for this listener
/// (`loop._accept_connection(protocol_factory, sock, ...)`), for debug mode.
pub(crate) fn debug_callback<'py>(
    lp: &Bound<'py, EventLoop>,
    listener: &Held<Listener>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
    let py = lp.py();
    let args = python_args(py, &listener.get().st.get(py))?;
    Ok((lp.getattr(pyo3::intern!(py, "_accept_connection"))?, args))
}
