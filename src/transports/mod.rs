//! Native transports: asyncio's selector transports, in Rust.
//!
//! - [`stream`]: state and registration of `_SelectorSocketTransport`
//!   (TCP and unix stream sockets); `stream_life` its lifecycle,
//!   `stream_io` its read and write paths, `stream_api` its Python methods,
//!   `extra` `get_extra_info()` and `repr()`.
//! - [`datagram`]: `_SelectorDatagramTransport` (UDP and unix datagram
//!   sockets), the same payload as the stream transport with `dgram` set;
//!   `datagram_api` its Python methods.
//! - [`pipes`]: `unix_events._UnixReadPipeTransport` and
//!   `_UnixWritePipeTransport`, the same payload with `flavor` set;
//!   `pipes_api` their Python methods.
//! - `sslproto`: the record path of asyncio's `SSLProtocol` (TLS), used by
//!   `ferroloop._sslproto`.
//! - `keep`: what keeps queued write data alive.
//! - `hooks`: the cold paths written in Python.
//! - `gc_epoch`: a count of the cycle collector's runs (the order of an
//!   unclosed connection's warnings).
//! - `pysocket`: `socket.socket` objects made and closed natively;
//!   `sslobject`: `SSLContext.wrap_bio` for the TLS path.
//!
//! The classes derive from asyncio's own `asyncio.Transport`, so
//! `isinstance(transport, asyncio.Transport)` holds (`py::native_type`).

pub(crate) mod datagram;
mod datagram_api;
pub(crate) mod extra;
mod gc_epoch;
mod hooks;
mod keep;
pub(crate) mod pipes;
mod pipes_api;
pub(crate) mod pysocket;
mod sslobject;
mod sslproto;
mod sslproto_io;
mod sslproto_life;
pub(crate) mod stream;
mod stream_api;
pub(crate) mod stream_io;
pub(crate) mod stream_life;

pub(crate) use hooks::socket_class;
pub(crate) use sslproto_life::Arg;

use std::sync::OnceLock;

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::py::native_type::{ClassOpts, RawClass};
use stream::StreamTransport;
use stream_life::{NewStream, Origin};

/// `_make_socket_transport(loop, sock, protocol, waiter=None, extra=None, server=None)`.
#[pyfunction]
#[pyo3(signature = (loop_, sock, protocol, waiter=None, extra=None, server=None))]
fn _stream_transport<'py>(
    loop_: &Bound<'py, PyAny>,
    sock: &Bound<'py, PyAny>,
    protocol: &Bound<'py, PyAny>,
    waiter: Option<Bound<'py, PyAny>>,
    extra: Option<Bound<'py, PyAny>>,
    server: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let lp = stream_life::native_loop(loop_)?;
    stream_life::create(
        &lp,
        Origin::Socket(sock.clone()),
        NewStream {
            protocol: protocol.clone(),
            waiter,
            extra: extra.filter(|e| !e.is_none()),
            server: server.filter(|s| !s.is_none()),
        },
    )
}

/// The arguments of `_make_ssl_transport` after the socket and protocol.
struct SslTransportArgs<'py> {
    pub sslcontext: Bound<'py, PyAny>,
    pub waiter: Option<Bound<'py, PyAny>>,
    pub server_side: Arg<'py>,
    pub server_hostname: Option<Bound<'py, PyAny>>,
    pub extra: Option<Bound<'py, PyAny>>,
    pub server: Option<Bound<'py, PyAny>>,
    pub ssl_handshake_timeout: Arg<'py>,
    pub ssl_shutdown_timeout: Arg<'py>,
}

/// `loop._make_ssl_transport(*args, **kwargs)`: binds the arguments as
/// asyncio's signature does; arguments it would not accept go to asyncio's
/// own method, which raises its `TypeError` (names and counts as Python
/// words them).
pub(crate) fn make_ssl_transport_call<'py>(
    lp: &Bound<'py, crate::event_loop::EventLoop>,
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, pyo3::types::PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    if let Some((rawsock, protocol, a)) = bind_ssl_args(args, kwargs) {
        return make_ssl_transport(lp, &rawsock, &protocol, a);
    }
    let py = lp.py();
    let func = py
        .import("asyncio.selector_events")?
        .getattr("BaseSelectorEventLoop")?
        .getattr("_make_ssl_transport")?;
    let all: Vec<Bound<'py, PyAny>> = std::iter::once(lp.as_any().clone()).chain(args.iter()).collect();
    func.call(PyTuple::new(py, all)?, kwargs)
}

/// Positional-or-keyword parameters, then keyword-only ones, of asyncio's
/// `_make_ssl_transport` (after `self`).
const SSL_PARAMS: [&str; 10] = [
    "rawsock",
    "protocol",
    "sslcontext",
    "waiter",
    "server_side",
    "server_hostname",
    "extra",
    "server",
    "ssl_handshake_timeout",
    "ssl_shutdown_timeout",
];

/// The arguments bound to asyncio's parameters, or None where Python's
/// binding would raise.
#[allow(clippy::type_complexity, reason = "one use")]
fn bind_ssl_args<'py>(
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, pyo3::types::PyDict>>,
) -> Option<(Bound<'py, PyAny>, Bound<'py, PyAny>, SslTransportArgs<'py>)> {
    use pyo3::types::PyStringMethods;
    const POSITIONAL: usize = 4;
    if args.len() > POSITIONAL {
        return None;
    }
    let mut slots: [Option<Bound<'py, PyAny>>; SSL_PARAMS.len()] = Default::default();
    for (slot, v) in slots.iter_mut().zip(args.iter()) {
        *slot = Some(v);
    }
    if let Some(kw) = kwargs {
        for (k, v) in kw.iter() {
            let k = k.cast_into::<pyo3::types::PyString>().ok()?;
            // Not UTF-8: asyncio's "unexpected keyword argument".
            let k = k.to_str().ok()?;
            let i = SSL_PARAMS.iter().position(|p| *p == k)?;
            if slots[i].is_some() {
                return None;
            }
            slots[i] = Some(v);
        }
    }
    let [rawsock, protocol, sslcontext, waiter, server_side, server_hostname, extra, server, handshake, shutdown] =
        slots;
    let (Some(rawsock), Some(protocol), Some(sslcontext)) = (rawsock, protocol, sslcontext) else {
        return None;
    };
    let not_none = |v: Option<Bound<'py, PyAny>>| v.filter(|v| !v.is_none());
    let arg = |v: Option<Bound<'py, PyAny>>| v.map_or(Arg::Absent, Arg::Given);
    Some((
        rawsock,
        protocol,
        SslTransportArgs {
            sslcontext,
            waiter: not_none(waiter),
            server_side: arg(server_side),
            server_hostname: not_none(server_hostname),
            extra: not_none(extra),
            server: not_none(server),
            ssl_handshake_timeout: arg(handshake),
            ssl_shutdown_timeout: arg(shutdown),
        },
    ))
}

/// `loop._make_ssl_transport(rawsock, protocol, sslcontext, waiter=None, *,
/// server_side=False, server_hostname=None, extra=None, server=None,
/// ssl_handshake_timeout=SSL_HANDSHAKE_TIMEOUT,
/// ssl_shutdown_timeout=SSL_SHUTDOWN_TIMEOUT)`: asyncio's method (3.12+
/// first checks that no transport uses the socket) with ferroloop's
/// `SSLProtocol` and the native socket transport under it.
fn make_ssl_transport<'py>(
    lp: &Bound<'py, crate::event_loop::EventLoop>,
    rawsock: &Bound<'py, PyAny>,
    protocol: &Bound<'py, PyAny>,
    a: SslTransportArgs<'py>,
) -> PyResult<Bound<'py, PyAny>> {
    use pyo3::intern;
    static SSL_PROTOCOL: pyo3::sync::PyOnceLock<(Py<PyAny>, Py<PyAny>, Py<PyAny>)> = pyo3::sync::PyOnceLock::new();
    let py = lp.py();
    let (class, handshake, shutdown) = SSL_PROTOCOL.get_or_try_init(py, || {
        let constants = py.import("asyncio.constants")?;
        Ok::<_, PyErr>((
            py.import("ferroloop._sslproto")?.getattr("SSLProtocol")?.unbind(),
            constants.getattr("SSL_HANDSHAKE_TIMEOUT")?.unbind(),
            constants.getattr("SSL_SHUTDOWN_TIMEOUT")?.unbind(),
        ))
    })?;
    if py.version_info() >= (3, 12) {
        lp.call_method1(intern!(py, "_ensure_fd_no_transport"), (rawsock,))?;
    }
    let given = |v: Arg<'py>, default: &Py<PyAny>| match v {
        Arg::Given(v) => v,
        Arg::Absent => default.bind(py).clone(),
    };
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item(
        intern!(py, "ssl_handshake_timeout"),
        given(a.ssl_handshake_timeout, handshake),
    )?;
    kwargs.set_item(
        intern!(py, "ssl_shutdown_timeout"),
        given(a.ssl_shutdown_timeout, shutdown),
    )?;
    let server_side = match a.server_side {
        Arg::Given(v) => v,
        Arg::Absent => pyo3::types::PyBool::new(py, false).to_owned().into_any(),
    };
    let none = || py.None().into_bound(py);
    let ssl_protocol = class.bind(py).call(
        (
            lp,
            protocol,
            a.sslcontext,
            a.waiter.unwrap_or_else(none),
            server_side,
            a.server_hostname.unwrap_or_else(none),
        ),
        Some(&kwargs),
    )?;
    stream_life::create(
        lp,
        Origin::Socket(rawsock.clone()),
        NewStream {
            protocol: ssl_protocol.clone(),
            waiter: None,
            extra: a.extra.filter(|e| !e.is_none()),
            server: a.server.filter(|s| !s.is_none()),
        },
    )?;
    ssl_protocol.getattr(intern!(py, "_app_transport"))
}

/// `_make_datagram_transport(loop, sock, protocol, address=None, waiter=None, extra=None)`.
#[pyfunction]
#[pyo3(signature = (loop_, sock, protocol, address=None, waiter=None, extra=None))]
fn _datagram_transport<'py>(
    loop_: &Bound<'py, PyAny>,
    sock: &Bound<'py, PyAny>,
    protocol: &Bound<'py, PyAny>,
    address: Option<Bound<'py, PyAny>>,
    waiter: Option<Bound<'py, PyAny>>,
    extra: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let lp = stream_life::native_loop(loop_)?;
    datagram::create(
        &lp,
        sock,
        protocol,
        address.filter(|a| !a.is_none()),
        waiter,
        extra.filter(|e| !e.is_none()),
    )
}

/// `_make_read_pipe_transport(loop, pipe, protocol, waiter=None, extra=None)`.
#[pyfunction]
#[pyo3(signature = (loop_, pipe, protocol, waiter=None, extra=None))]
fn _read_pipe_transport<'py>(
    loop_: &Bound<'py, PyAny>,
    pipe: &Bound<'py, PyAny>,
    protocol: &Bound<'py, PyAny>,
    waiter: Option<Bound<'py, PyAny>>,
    extra: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let lp = stream_life::native_loop(loop_)?;
    let extra = extra.filter(|e| !e.is_none());
    pipes::create(&lp, stream::Flavor::ReadPipe, pipe, protocol, waiter, extra)
}

/// `_make_write_pipe_transport(loop, pipe, protocol, waiter=None, extra=None)`.
#[pyfunction]
#[pyo3(signature = (loop_, pipe, protocol, waiter=None, extra=None))]
fn _write_pipe_transport<'py>(
    loop_: &Bound<'py, PyAny>,
    pipe: &Bound<'py, PyAny>,
    protocol: &Bound<'py, PyAny>,
    waiter: Option<Bound<'py, PyAny>>,
    extra: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let lp = stream_life::native_loop(loop_)?;
    let extra = extra.filter(|e| !e.is_none());
    pipes::create(&lp, stream::Flavor::WritePipe, pipe, protocol, waiter, extra)
}

/// The other classes carrying the stream transport's payload at the same
/// offset (see `RawClass::create`'s `like`): datagram, read pipe, write pipe.
static DGRAM_CLASS: OnceLock<RawClass<StreamTransport>> = OnceLock::new();
static READ_PIPE_CLASS: OnceLock<RawClass<StreamTransport>> = OnceLock::new();
static WRITE_PIPE_CLASS: OnceLock<RawClass<StreamTransport>> = OnceLock::new();

/// The sibling classes created so far.
pub(crate) fn sibling_classes() -> impl Iterator<Item = &'static RawClass<StreamTransport>> {
    [&DGRAM_CLASS, &READ_PIPE_CLASS, &WRITE_PIPE_CLASS]
        .into_iter()
        .filter_map(OnceLock::get)
}

fn registered(cell: &'static OnceLock<RawClass<StreamTransport>>) -> &'static RawClass<StreamTransport> {
    cell.get()
        .unwrap_or_else(|| unreachable!("ferroloop transports are not registered"))
}

pub(crate) fn dgram_class() -> &'static RawClass<StreamTransport> {
    registered(&DGRAM_CLASS)
}

pub(crate) fn read_pipe_class() -> &'static RawClass<StreamTransport> {
    registered(&READ_PIPE_CLASS)
}

pub(crate) fn write_pipe_class() -> &'static RawClass<StreamTransport> {
    registered(&WRITE_PIPE_CLASS)
}

/// Create a sibling class (the stream class's payload layout) and add it to the module.
#[allow(clippy::too_many_arguments, reason = "the parts of one type spec")]
fn register_sibling(
    m: &Bound<'_, PyModule>,
    cell: &'static OnceLock<RawClass<StreamTransport>>,
    name: &'static str,
    qualname: &'static std::ffi::CStr,
    doc: &'static std::ffi::CStr,
    bases: Vec<Bound<'_, PyAny>>,
    methods: Vec<pyo3::ffi::PyMethodDef>,
    getters: &[(&'static std::ffi::CStr, crate::py::native_type::RawGetter)],
    repr: pyo3::ffi::reprfunc,
    setters: &[(&'static std::ffi::CStr, crate::py::native_type::RawSetter)],
    dict: bool,
) -> PyResult<()> {
    let py = m.py();
    let bases = PyTuple::new(py, bases)?;
    let class = RawClass::<StreamTransport>::create(
        py,
        qualname,
        doc,
        &bases,
        methods,
        getters,
        Some(repr),
        &[],
        ClassOpts {
            like: Some(stream::class()),
            setters,
            dict,
        },
    )?;
    if !class.same_layout(stream::class()) {
        return Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "ferroloop: the layout of {name} differs from the stream transport's"
        )));
    }
    let ty = class.type_object(py).clone();
    ty.setattr("max_size", 256 * 1024)?;
    let _ = cell.set(class);
    m.add(name, ty)
}

fn register_pipes(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let transports = py.import("asyncio.transports")?;
    register_sibling(
        m,
        &READ_PIPE_CLASS,
        "_UnixReadPipeTransport",
        c"ferroloop._ferroloop._UnixReadPipeTransport",
        c"asyncio's unix read pipe transport, native.",
        vec![transports.getattr("ReadTransport")?],
        pipes_api::read_methods(),
        &pipes_api::read_getters(),
        pipes_api::repr,
        &pipes_api::setters(),
        true,
    )?;
    register_sibling(
        m,
        &WRITE_PIPE_CLASS,
        "_UnixWritePipeTransport",
        c"ferroloop._ferroloop._UnixWritePipeTransport",
        c"asyncio's unix write pipe transport, native.",
        vec![
            transports.getattr("_FlowControlMixin")?,
            transports.getattr("WriteTransport")?,
        ],
        pipes_api::write_methods(),
        &pipes_api::write_getters(),
        pipes_api::repr,
        &pipes_api::setters(),
        true,
    )?;
    m.add_function(wrap_pyfunction!(_read_pipe_transport, m)?)?;
    m.add_function(wrap_pyfunction!(_write_pipe_transport, m)?)?;
    Ok(())
}

/// Create the datagram class. Its bases are those of asyncio's own
/// `_SelectorDatagramTransport` on this Python (3.12+ adds
/// `DatagramTransport`); its first base is the stream class's, so both
/// classes put the payload at the same offset, and the slot functions (which
/// find the payload through the stream class) serve both.
fn register_datagram(m: &Bound<'_, PyModule>, base: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = m.py();
    let dgram_base = py.import("asyncio.transports")?.getattr("DatagramTransport")?;
    let asyncio_class = py
        .import("asyncio.selector_events")?
        .getattr("_SelectorDatagramTransport")?;
    let mut bases = vec![base.clone()];
    if asyncio_class.cast::<pyo3::types::PyType>()?.is_subclass(&dgram_base)? {
        bases.push(dgram_base);
    }
    register_sibling(
        m,
        &DGRAM_CLASS,
        "_SelectorDatagramTransport",
        c"ferroloop._ferroloop._SelectorDatagramTransport",
        c"asyncio's selector datagram transport (UDP and unix datagram sockets), native.",
        bases,
        datagram_api::methods(),
        &datagram_api::getters(),
        stream_api::repr,
        &[],
        false,
    )?;
    m.add_function(wrap_pyfunction!(_datagram_transport, m)?)?;
    Ok(())
}

/// `trsock.TransportSocket(sock)`.
pub(crate) fn transport_socket<'py>(py: Python<'py>, sock: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    hooks::transport_socket(py, sock)
}

/// Create the transport classes and add them to the module (once, at import).
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // `_FlowControlMixin` (a `Transport`): base_events._SendfileFallbackProtocol checks for it.
    let base = py.import("asyncio.transports")?.getattr("_FlowControlMixin")?;
    let bases = PyTuple::new(py, [base.clone()])?;
    let class = RawClass::<StreamTransport>::create(
        py,
        c"ferroloop._ferroloop._SelectorSocketTransport",
        c"asyncio's selector socket transport (TCP and unix streams), native.",
        &bases,
        stream_api::methods(),
        &stream_api::getters(),
        Some(stream_api::repr),
        &[],
        ClassOpts::default(),
    )?;
    let ty = class.type_object(py).clone();
    ty.setattr("max_size", 256 * 1024)?;
    ty.setattr("_start_tls_compatible", true)?;
    let mode = py
        .import("asyncio.constants")?
        .getattr("_SendfileMode")?
        .getattr("TRY_NATIVE")?;
    ty.setattr("_sendfile_compatible", mode)?;
    stream::init_class(class);
    m.add("_SelectorSocketTransport", ty)?;
    m.add_function(wrap_pyfunction!(_stream_transport, m)?)?;
    register_datagram(m, &base)?;
    register_pipes(m)?;
    sslproto::register(m)
}
