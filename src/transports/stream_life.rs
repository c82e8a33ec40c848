//! Creation, close, abort, `connection_lost` and `__del__` of the native
//! stream transport.
//!
//! Mirrors `_SelectorTransport.__init__`/`close`/`_force_close`/
//! `_call_connection_lost`/`_fatal_error`/`__del__` and
//! `_SelectorSocketTransport.__init__`/`_call_connection_lost`: the three
//! `call_soon`s of the constructor (`connection_made`, start reading, the
//! waiter), `connection_lost` always on a later iteration, the socket closed
//! and the server detached after it, whatever it raised.

use ferroloop_core::net::{Fd, SockAddr};
use pyo3::exceptions::{PyConnectionError, PyKeyboardInterrupt, PySystemExit};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::hooks;
use super::stream::{self, Addr, Flavor, Sock, SockKind, StreamState, StreamTransport};
use crate::event_loop::{schedule, EventLoop};
use crate::py::held::Held;
use crate::py::native_type::RawClass;

/// The caller's side of a new transport.
pub(crate) struct NewStream<'py> {
    pub protocol: Bound<'py, PyAny>,
    pub waiter: Option<Bound<'py, PyAny>>,
    pub extra: Option<Bound<'py, PyAny>>,
    pub server: Option<Bound<'py, PyAny>>,
}

/// Where the socket comes from.
pub(crate) enum Origin<'py> {
    /// A Python socket object (`_make_socket_transport(sock, ...)`).
    Socket(Bound<'py, PyAny>),
    /// A connection accepted natively, with its peer's address.
    Accepted { fd: Fd, peer: SockAddr, kind: SockKind },
}

fn is_fatal(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PySystemExit>(py) || err.is_instance_of::<PyKeyboardInterrupt>(py)
}

/// `_SelectorSocketTransport(loop, sock, protocol, waiter, extra, server)`.
pub(crate) fn create<'py>(
    lp: &Bound<'py, EventLoop>,
    origin: Origin<'py>,
    new: NewStream<'py>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = lp.py();
    let mut py_sock = None;
    let (sock, fd, peer, kind) = match origin {
        Origin::Socket(s) => {
            let fd: i32 = s.call_method0(pyo3::intern!(py, "fileno"))?.extract()?;
            py_sock = Some(s.clone());
            (Sock::Py(Held::new(s.unbind())), fd, None, SockKind::default())
        }
        Origin::Accepted { fd, peer, kind } => {
            let raw = fd.raw();
            (Sock::Raw(fd), raw, Some(peer), kind)
        }
    };
    let sockname = ferroloop_core::net::local_addr(fd).map_or(Addr::None, Addr::Native);
    let peername = match (extra_peername(py, new.extra.as_ref()), peer) {
        (Some(p), _) => Addr::Py(Held::new(p.unbind())),
        (None, Some(p)) => Addr::Native(p),
        (None, None) => ferroloop_core::net::peer_addr(fd).map_or(Addr::None, Addr::Native),
    };
    let buffered = new.protocol.is_instance(&hooks::buffered_protocol(py)?)?;
    let state = StreamState {
        loop_: Some(Held::new(lp.clone().unbind())),
        protocol: Some(Held::new(new.protocol.clone().unbind())),
        sock,
        fd,
        kind,
        server: new.server.as_ref().map(|s| Held::new(s.clone().unbind())),
        cold: cold(new.extra),
        sockname,
        peername,
        protocol_connected: true,
        buffered,
        gc_epoch: super::gc_epoch::now(py),
        ..StreamState::default()
    };
    let obj = instantiate(lp, stream::class(), state)?;
    if let Some(server) = &new.server {
        hooks::server_attach(py, server, &obj)?;
    }
    match &py_sock {
        Some(s) => hooks::set_nodelay(py, s, fd)?,
        None => {
            if ferroloop_core::net::is_tcp(kind.family.into(), kind.type_.into(), kind.proto.into()) {
                ferroloop_core::net::set_nodelay(fd).map_err(|e| crate::py::errors::os_error(&e))?;
            }
        }
    }
    schedule_start(lp, &obj, &new.protocol, new.waiter)?;
    Ok(obj)
}

/// `extra['peername']`, if the caller's `extra` (a dict) has it.
pub(crate) fn extra_peername<'py>(py: Python<'py>, extra: Option<&Bound<'py, PyAny>>) -> Option<Bound<'py, PyAny>> {
    extra?
        .cast::<PyDict>()
        .ok()?
        .get_item(pyo3::intern!(py, "peername"))
        .ok()
        .flatten()
}

/// A new transport of `class` carrying `state`, entered in the loop's
/// `_transports` under its fd.
pub(crate) fn instantiate<'py>(
    lp: &Bound<'py, EventLoop>,
    class: &RawClass<StreamTransport>,
    state: StreamState,
) -> PyResult<Bound<'py, PyAny>> {
    let py = lp.py();
    let fd = state.fd;
    let obj = class.new_instance(
        py,
        StreamTransport {
            st: crate::py::cell::GilCell::new(state),
        },
    )?;
    let t = stream::payload(&obj);
    lp.get().remember_transport(py, fd, std::ptr::from_ref(t) as usize);
    Ok(obj)
}

/// The constructor's `call_soon`s: `connection_made`, start reading (only
/// once `connection_made` ran), wake the waiter.
pub(crate) fn schedule_start<'py>(
    lp: &Bound<'py, EventLoop>,
    obj: &Bound<'py, PyAny>,
    protocol: &Bound<'py, PyAny>,
    waiter: Option<Bound<'py, PyAny>>,
) -> PyResult<()> {
    let py = lp.py();
    let made = protocol.getattr(pyo3::intern!(py, "connection_made"))?;
    schedule::call_soon(lp, made, PyTuple::new(py, [obj])?, None, "call_soon")?;
    let start = obj.getattr(pyo3::intern!(py, "_start_reading"))?;
    schedule::call_soon(lp, start, PyTuple::empty(py), None, "call_soon")?;
    schedule_waiter(lp, waiter)
}

/// `call_soon(futures._set_result_unless_cancelled, waiter, None)`, if there
/// is a waiter.
pub(crate) fn schedule_waiter<'py>(lp: &Bound<'py, EventLoop>, waiter: Option<Bound<'py, PyAny>>) -> PyResult<()> {
    let py = lp.py();
    if let Some(waiter) = waiter.filter(|w| !w.is_none()) {
        let set = hooks::set_result_unless_cancelled(py)?;
        schedule::call_soon(
            lp,
            set,
            PyTuple::new(py, [waiter, py.None().into_bound(py)])?,
            None,
            "call_soon",
        )?;
    }
    Ok(())
}

/// `_SelectorTransport._add_reader(fd, self._read_ready)`: only when connected
/// and still reading (a `pause_reading()` before this keeps it paused).
pub(crate) fn start_reading(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport) -> PyResult<()> {
    if !t.st.get(py).is_reading() {
        return Ok(());
    }
    stream::add_reader(py, obj, t)
}

/// Schedule `self._call_connection_lost(exc)` on the loop.
fn schedule_connection_lost(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    t: &StreamTransport,
    exc: Py<PyAny>,
) -> PyResult<()> {
    let Some(lp) = stream::loop_of(py, t) else {
        return Ok(());
    };
    let cb = obj.getattr(pyo3::intern!(py, "_call_connection_lost"))?;
    schedule::call_soon(lp.bind(py), cb, PyTuple::new(py, [exc])?, None, "call_soon")?;
    Ok(())
}

/// `close()`.
pub(crate) fn close(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport) -> PyResult<()> {
    {
        let mut st = t.st.get_mut(py);
        if st.closing {
            return Ok(());
        }
        st.closing = true;
    }
    stream::remove_reader(py, obj, t)?;
    let empty = t.st.get(py).buffer_empty();
    if empty {
        t.st.get_mut(py).conn_lost += 1;
        stream::remove_writer(py, obj, t)?;
        schedule_connection_lost(py, obj, t, py.None())?;
    }
    Ok(())
}

/// `_force_close(exc)` (also `abort()`, with `exc=None`).
pub(crate) fn force_close(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport, exc: Py<PyAny>) -> PyResult<()> {
    let (had_data, was_closing) = {
        let st = t.st.get(py);
        if st.conn_lost > 0 {
            return Ok(());
        }
        (st.has_queued(), st.closing)
    };
    if had_data {
        let (dropped, dropped_dgrams) = {
            let mut st = t.st.get_mut(py);
            // `self._buffer.clear()` (a datagram transport keeps `_buffer_size`).
            let dgrams = st.dgram_mut().map(|d| std::mem::take(&mut d.queue));
            (st.queue.clear(), dgrams)
        };
        drop(dropped);
        drop(dropped_dgrams);
        stream::remove_writer(py, obj, t)?;
    }
    if !was_closing {
        t.st.get_mut(py).closing = true;
        stream::remove_reader(py, obj, t)?;
    }
    t.st.get_mut(py).conn_lost += 1;
    schedule_connection_lost(py, obj, t, exc)
}

/// `_fatal_error(exc, message)`: report (an OSError only in debug mode), then force-close.
pub(crate) fn fatal_error(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    t: &StreamTransport,
    exc: PyErr,
    message: &str,
) -> PyResult<()> {
    let exc = exc.into_value(py);
    hooks::fatal_error(py, obj, exc.bind(py), message)?;
    force_close(py, obj, t, exc.into_any())
}

/// Handle an exception raised by a protocol callback: `SystemExit` and
/// `KeyboardInterrupt` propagate, anything else is a fatal error.
pub(crate) fn protocol_failed(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    t: &StreamTransport,
    err: PyErr,
    message: &str,
) -> PyResult<()> {
    if is_fatal(py, &err) {
        return Err(err);
    }
    fatal_error(py, obj, t, err, message)
}

/// Close the socket and forget it (the end of `_call_connection_lost`).
fn release_socket(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport) -> PyResult<()> {
    // Normally nothing is registered any more; make sure before closing.
    let _ = stream::set_interest_now(py, obj, t, 0);
    let (sock, lp, fd) = {
        let mut st = t.st.get_mut(py);
        (
            std::mem::take(&mut st.sock),
            st.loop_.as_ref().map(|l| l.clone_ref(py)),
            st.fd,
        )
    };
    if let Some(lp) = lp {
        lp.get().forget_transport(py, fd, std::ptr::from_ref(t) as usize);
    }
    match sock {
        Sock::Py(s) => {
            super::pysocket::close(s.bind(py))?;
            let mut st = t.st.get_mut(py);
            if st.trsock().is_none() && !matches!(st.flavor, Flavor::ReadPipe | Flavor::WritePipe) {
                st.cold_mut().closed_sock = Some(s);
            }
        }
        Sock::Raw(fd) => drop(fd),
        Sock::Closed => {}
    }
    Ok(())
}

/// `_call_connection_lost(exc)`.
pub(crate) fn call_connection_lost(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    t: &StreamTransport,
    exc: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let (connected, protocol) = {
        let st = t.st.get(py);
        if st.loop_.is_none() {
            // Torn down by an earlier call: asyncio 3.11-3.13 can schedule a
            // second one (a close from resume_writing in the writer step),
            // which fails there on the missing socket (D-023). The fixed
            // releases' transport does nothing more, and neither does this
            // one: no second report, no exception set on a sendfile waiter
            // that already has its result.
            return Ok(());
        }
        (st.protocol_connected, st.protocol.as_ref().map(|p| p.clone_ref(py)))
    };
    let res = match (connected, protocol) {
        (true, Some(p)) => p
            .bind(py)
            .call_method1(pyo3::intern!(py, "connection_lost"), (exc,))
            .map(|_| ()),
        _ => Ok(()),
    };
    // The `finally:` part runs whatever connection_lost did.
    let closed = release_socket(py, obj, t);
    let (old_protocol, old_loop, server) = {
        let mut st = t.st.get_mut(py);
        (st.protocol.take(), st.loop_.take(), st.take_server())
    };
    drop(old_protocol);
    drop(old_loop);
    let detached = match server {
        Some(s) => hooks::server_detach(py, s.bind(py), obj),
        None => Ok(()),
    };
    res?;
    closed?;
    detached?;
    let waiter = t.st.get(py).empty_waiter().map(|w| w.clone_ref(py));
    if let Some(w) = waiter {
        let err = PyConnectionError::new_err("Connection is closed by peer").into_value(py);
        w.bind(py).call_method1(pyo3::intern!(py, "set_exception"), (err,))?;
    }
    Ok(())
}

/// `__del__`: warn about an unclosed transport and close its socket.
pub(crate) fn finalize(obj: &Bound<'_, PyAny>) {
    let py = obj.py();
    let t = stream::payload(obj);
    let open = match t.st.try_get() {
        Some(st) => !matches!(st.sock, Sock::Closed),
        None => false,
    };
    if !open {
        return;
    }
    let flavor = t.st.get(py).flavor;
    if matches!(flavor, Flavor::Stream) {
        finalize_lone_socket(py, t);
    }
    // An error escaping asyncio's `__del__` is reported against that
    // function, and ends it.
    let unraisable = |e: PyErr| e.write_unraisable(py, Some(&hooks::asyncio_del(obj, flavor)));
    if let Err(e) = hooks::warn_unclosed(py, obj) {
        // The warning raised (warnings turned into errors): asyncio's
        // `__del__` ends before it closes the socket or detaches from the
        // server; the socket goes with the transport (a socket object's own
        // finalizer warns then: a natively accepted connection gets its
        // `socket.socket` for that).
        unraisable(e);
        if let Err(e) = super::extra::socket_object(py, t) {
            e.write_unraisable(py, Some(obj));
        }
        let (lp, fd) = {
            let st = t.st.get(py);
            (st.loop_.as_ref().map(|l| l.clone_ref(py)), st.fd)
        };
        if let Some(lp) = lp {
            lp.get().forget_transport(py, fd, std::ptr::from_ref(t) as usize);
        }
        return;
    }
    let (sock, server, lp, fd) = {
        let mut st = t.st.get_mut(py);
        let server = if hooks::detach_in_del(py) {
            st.take_server()
        } else {
            None
        };
        (
            std::mem::take(&mut st.sock),
            server,
            st.loop_.as_ref().map(|l| l.clone_ref(py)),
            st.fd,
        )
    };
    if let Some(lp) = lp {
        lp.get().forget_transport(py, fd, std::ptr::from_ref(t) as usize);
    }
    let closed = match sock {
        Sock::Py(s) => super::pysocket::close(s.bind(py)),
        Sock::Raw(fd) => {
            drop(fd);
            Ok(())
        }
        Sock::Closed => Ok(()),
    };
    if let Err(e) = closed {
        unraisable(e);
        return;
    }
    if let Some(s) = server {
        if let Err(e) = hooks::server_detach(py, s.bind(py), obj) {
            unraisable(e);
        }
    }
}

/// asyncio's socket transport holds bound methods of itself, so it dies in
/// the cycle collector, together with a socket nothing outside it holds
/// (its `_sock` and its `TransportSocket`): the socket, the older object, is
/// finalized first ("unclosed <socket.socket ...>" `ResourceWarning`, then
/// its descriptor closed), then the transport's `__del__` warns. A natively
/// accepted connection gets its `socket.socket` for this.
///
/// Once the cycle collector has run during the connection's life, asyncio's
/// socket sits after its transport in the collector's list (it was moved
/// back there when found reachable through the transport): the transport's
/// `__del__` then runs first and closes the socket, which does not warn.
/// That is the collector's usual case, not every case: a run that did not
/// examine the socket's generation, or found it held from outside, leaves
/// it first (D-027). Unknown counts (no `gc.callbacks` entry) are taken as
/// "it ran".
fn finalize_lone_socket(py: Python<'_>, t: &stream::StreamTransport) {
    use crate::py::call::{call_finalizer, is_gc_tracked, refcount};
    if super::gc_epoch::collected_since(py, t.st.get(py).gc_epoch) != Some(false) {
        return;
    }
    let trsock = t.st.get(py).trsock().map(|s| s.bind(py).clone());
    // The transport's own references: its slot, and its TransportSocket's.
    let own = match &trsock {
        Some(ts) if refcount(ts) > 2 => return, // held outside (this binding is one)
        Some(_) => 2,
        None => 1,
    };
    drop(trsock);
    let sock = match super::extra::socket_object(py, t) {
        Ok(s) => s.into_bound(py),
        Err(e) => {
            e.write_unraisable(py, None);
            return;
        }
    };
    // This binding holds one more; an object the collector does not track
    // (a bare `_socket.socket` on 3.11) is never finalized by it.
    if refcount(&sock) == own + 1 && is_gc_tracked(&sock) {
        call_finalizer(&sock);
    }
}

/// The cold part of a new transport, if it has anything in it.
fn cold(extra: Option<Bound<'_, PyAny>>) -> Option<Box<stream::Cold>> {
    extra.map(|e| {
        Box::new(stream::Cold {
            extra: Some(Held::new(e.unbind())),
            ..stream::Cold::default()
        })
    })
}

/// The `EventLoop` a new stream is made for: `loop` must be a ferroloop loop.
pub(crate) fn native_loop<'py>(lp: &Bound<'py, PyAny>) -> PyResult<Bound<'py, EventLoop>> {
    Ok(lp.cast::<EventLoop>()?.clone())
}
