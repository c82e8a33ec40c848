//! The transports' cold paths written in Python (`ferroloop._hooks`):
//! error reports, warnings, debug logging, objects made on demand, and the
//! Python-version differences of asyncio's transport code.
//!
//! Nothing here runs per read or per write on a healthy connection.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;

use crate::py::call::is_bound_method;

static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
static BUFFERED: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static FLAGS: PyOnceLock<(bool, bool, u32)> = PyOnceLock::new();
static DGRAM_FLAGS: PyOnceLock<(bool, usize, bool)> = PyOnceLock::new();

fn module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    Ok(MODULE
        .get_or_try_init(py, || py.import("ferroloop._hooks").map(Bound::unbind))?
        .bind(py))
}

/// The hook `name` of `ferroloop._hooks` (looked up on each use, with an
/// interned name: a test may replace it).
macro_rules! hook {
    ($py:expr, $name:literal) => {
        module($py).and_then(|m| m.getattr(pyo3::intern!($py, $name)))
    };
}

fn flags(py: Python<'_>) -> (bool, bool, u32) {
    *FLAGS.get_or_init(py, || {
        let get = |n: &str| {
            module(py)
                .and_then(|m| m.getattr(n))
                .and_then(|v| v.extract::<bool>())
                .unwrap_or(false)
        };
        let threshold = hook!(py, "LOG_THRESHOLD_FOR_CONNLOST_WRITES")
            .and_then(|v| v.extract::<u32>())
            .unwrap_or(5);
        (get("SERVER_TRACKS_TRANSPORTS"), get("ZERO_COPY_WRITES"), threshold)
    })
}

/// 3.13: `Server._attach(transport)`, and `__del__` detaches from the server.
pub(crate) fn detach_in_del(py: Python<'_>) -> bool {
    flags(py).0
}

/// 3.12+: writes keep the caller's buffers (3.11 copies them).
pub(crate) fn zero_copy_writes(py: Python<'_>) -> bool {
    flags(py).1
}

/// `constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES`.
pub(crate) fn connlost_threshold(py: Python<'_>) -> u32 {
    flags(py).2
}

fn dgram_flags(py: Python<'_>) -> (bool, usize, bool) {
    *DGRAM_FLAGS.get_or_init(py, || {
        hook!(py, "datagram_flags")
            .and_then(|f| f.call0())
            .and_then(|v| v.extract::<(bool, usize, bool)>())
            .unwrap_or((true, 0, false))
    })
}

/// 3.13: `sendto(b'')` sends an empty datagram (3.11/3.12 drop it).
pub(crate) fn empty_datagrams(py: Python<'_>) -> bool {
    dgram_flags(py).0
}

/// 3.13: bytes counted per buffered datagram besides its data.
pub(crate) fn datagram_header(py: Python<'_>) -> usize {
    dgram_flags(py).1
}

/// The header bytes taken off again when a buffered datagram leaves (and
/// added back when it is put back): 0 on 3.13.0 (CPython gh-135444), the
/// header where that is fixed.
pub(crate) fn datagram_header_leaves(py: Python<'_>) -> usize {
    let (_, header, leaves) = dgram_flags(py);
    if leaves {
        header
    } else {
        0
    }
}

/// `asyncio.BufferedProtocol`.
pub(crate) fn buffered_protocol(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    Ok(BUFFERED
        .get_or_try_init(py, || hook!(py, "BufferedProtocol").map(Bound::unbind))?
        .bind(py)
        .clone())
}

pub(crate) fn set_result_unless_cancelled(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    hook!(py, "set_result_unless_cancelled")
}

/// `socket.socket`.
pub(crate) fn socket_class(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    Ok(super::pysocket::socket_types(py)?.class.bind(py).as_any())
}

/// `base_events._set_nodelay(sock)` for the socket whose descriptor is
/// `fd`: for a `socket.socket` (its properties only wrap the C members in
/// enums) the members are read and the option set here; any other object
/// goes through asyncio's function.
pub(crate) fn set_nodelay(py: Python<'_>, sock: &Bound<'_, PyAny>, fd: i32) -> PyResult<()> {
    let t = super::pysocket::socket_types(py)?;
    if !sock.get_type().is(t.class.bind(py)) {
        hook!(py, "set_nodelay")?.call1((sock,))?;
        return Ok(());
    }
    let get = |i: usize| -> PyResult<i32> { crate::py::call::descr_get(t.members[i].bind(py), sock)?.extract() };
    if ferroloop_core::net::is_tcp(get(0)?, get(1)?, get(2)?) {
        ferroloop_core::net::set_nodelay(fd).map_err(|e| crate::py::errors::os_error(&e))?;
    }
    Ok(())
}

/// asyncio's `Server` class with its `_attach`/`_detach` functions.
struct ServerMethods {
    class: Py<PyAny>,
    attach: Py<PyAny>,
    detach: Py<PyAny>,
    /// `assert` statements run (not `python -O`).
    asserts: bool,
}

static SERVER: PyOnceLock<ServerMethods> = PyOnceLock::new();

/// asyncio's `Server` and its two methods, once they are found to be
/// asyncio's own functions (while a replacement is in place nothing is
/// kept: the next call looks again).
fn server_methods(py: Python<'_>) -> Option<&'static ServerMethods> {
    let m = SERVER.get_or_try_init(py, || {
        let class = py.import("asyncio.base_events")?.getattr("Server")?;
        let own =
            |name: &str| crate::py::call::own_function(&class, name, "asyncio.base_events", &format!("Server.{name}"));
        let (Some(attach), Some(detach)) = (own("_attach"), own("_detach")) else {
            return Err(not_yet());
        };
        let optimize: i64 = py.import("sys")?.getattr("flags")?.getattr("optimize")?.extract()?;
        Ok::<_, PyErr>(ServerMethods {
            class: class.unbind(),
            attach: attach.unbind(),
            detach: detach.unbind(),
            asserts: optimize == 0,
        })
    });
    m.ok()
}

/// The "not now" of a lookup of standard-library methods that found a
/// replacement (not kept: the next call looks again).
pub(crate) fn not_yet() -> PyErr {
    pyo3::exceptions::PyLookupError::new_err("a standard-library method is replaced")
}

/// `server` is an `asyncio.Server` whose `_attach` (`attach`) or `_detach`
/// is still asyncio's, on its class and on the instance: the method a
/// Python call would run is the one checked, each on its own.
fn plain_server(py: Python<'_>, server: &Bound<'_, PyAny>, attach: bool) -> Option<&'static ServerMethods> {
    let m = server_methods(py)?;
    let (name, func) = if attach {
        (pyo3::intern!(py, "_attach"), &m.attach)
    } else {
        (pyo3::intern!(py, "_detach"), &m.detach)
    };
    let plain = server.get_type().is(m.class.bind(py)) && is_bound_method(server, name, func.bind(py));
    plain.then_some(m)
}

/// `server._attach()` (3.11/3.12) or `server._attach(transport)` (3.13), as
/// the transport's constructor calls it. asyncio's own method runs here
/// natively, statement by statement; a replaced one is called.
pub(crate) fn server_attach(py: Python<'_>, server: &Bound<'_, PyAny>, transport: &Bound<'_, PyAny>) -> PyResult<()> {
    let Some(m) = plain_server(py, server, true) else {
        hook!(py, "server_attach")?.call1((server, transport))?;
        return Ok(());
    };
    // assert self._sockets is not None
    if m.asserts && server.getattr(pyo3::intern!(py, "_sockets"))?.is_none() {
        return Err(pyo3::exceptions::PyAssertionError::new_err(()));
    }
    if detach_in_del(py) {
        // self._clients.add(transport)
        server
            .getattr(pyo3::intern!(py, "_clients"))?
            .call_method1(pyo3::intern!(py, "add"), (transport,))?;
    } else {
        // self._active_count += 1
        let count = server.getattr(pyo3::intern!(py, "_active_count"))?;
        server.setattr(pyo3::intern!(py, "_active_count"), count.add(1)?)?;
    }
    Ok(())
}

/// `server._detach()` (3.11/3.12) or `server._detach(transport)` (3.13),
/// natively for asyncio's own method, as `server_attach`.
pub(crate) fn server_detach(py: Python<'_>, server: &Bound<'_, PyAny>, transport: &Bound<'_, PyAny>) -> PyResult<()> {
    let Some(m) = plain_server(py, server, false) else {
        hook!(py, "server_detach")?.call1((server, transport))?;
        return Ok(());
    };
    let idle = if detach_in_del(py) {
        // self._clients.discard(transport)
        // if len(self._clients) == 0 and self._sockets is None:
        let clients = server.getattr(pyo3::intern!(py, "_clients"))?;
        clients.call_method1(pyo3::intern!(py, "discard"), (transport,))?;
        clients.len()? == 0 && server.getattr(pyo3::intern!(py, "_sockets"))?.is_none()
    } else {
        // assert self._active_count > 0
        if m.asserts && !server.getattr(pyo3::intern!(py, "_active_count"))?.gt(0)? {
            return Err(pyo3::exceptions::PyAssertionError::new_err(()));
        }
        // self._active_count -= 1
        // if self._active_count == 0 and self._sockets is None:
        let count = server.getattr(pyo3::intern!(py, "_active_count"))?.sub(1)?;
        server.setattr(pyo3::intern!(py, "_active_count"), count)?;
        server.getattr(pyo3::intern!(py, "_active_count"))?.eq(0)?
            && server.getattr(pyo3::intern!(py, "_sockets"))?.is_none()
    };
    if idle {
        // self._wakeup()
        server.call_method0(pyo3::intern!(py, "_wakeup"))?;
    }
    Ok(())
}

/// The reporting half of `_fatal_error`.
pub(crate) fn fatal_error(
    py: Python<'_>,
    transport: &Bound<'_, PyAny>,
    exc: &Bound<'_, PyAny>,
    message: &str,
) -> PyResult<()> {
    hook!(py, "transport_fatal_error")?.call1((transport, exc, message))?;
    Ok(())
}

/// `protocol.pause_writing() failed` & co.
pub(crate) fn report(
    py: Python<'_>,
    transport: &Bound<'_, PyAny>,
    message: &str,
    exc: &Bound<'_, PyAny>,
) -> PyResult<()> {
    hook!(py, "transport_report")?.call1((transport, message, exc))?;
    Ok(())
}

/// asyncio's `__del__` of the class a native transport stands for (what an
/// error escaping it is reported against: "Exception ignored in: <function
/// _SelectorTransport.__del__ ...>"); the transport if it cannot be found.
pub(crate) fn asyncio_del<'py>(transport: &Bound<'py, PyAny>, flavor: super::stream::Flavor) -> Bound<'py, PyAny> {
    static DELS: PyOnceLock<[Py<PyAny>; 3]> = PyOnceLock::new();
    let py = transport.py();
    let dels = DELS.get_or_try_init(py, || {
        let selector = py.import("asyncio.selector_events")?;
        let unix = py.import("asyncio.unix_events")?;
        let del = |m: &Bound<'_, PyModule>, cls: &str| m.getattr(cls)?.getattr("__del__").map(Bound::unbind);
        Ok::<_, PyErr>([
            del(&selector, "_SelectorTransport")?,
            del(&unix, "_UnixReadPipeTransport")?,
            del(&unix, "_UnixWritePipeTransport")?,
        ])
    });
    let i = match flavor {
        super::stream::Flavor::Stream | super::stream::Flavor::Datagram => 0,
        super::stream::Flavor::ReadPipe => 1,
        super::stream::Flavor::WritePipe => 2,
    };
    match dels {
        Ok(d) => d[i].bind(py).clone(),
        Err(_) => transport.clone(),
    }
}

pub(crate) fn warn_unclosed(py: Python<'_>, transport: &Bound<'_, PyAny>) -> PyResult<()> {
    hook!(py, "warn_unclosed")?.call1((transport,))?;
    Ok(())
}

pub(crate) fn transport_socket<'py>(py: Python<'py>, sock: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    hook!(py, "transport_socket")?.call1((sock,))
}

/// A closed `socket.socket` of the given kind (None if none can be made).
pub(crate) fn closed_socket(py: Python<'_>, family: i32, type_: i32, proto: i32) -> PyResult<Bound<'_, PyAny>> {
    hook!(py, "closed_socket")?.call1((family, type_, proto))
}

pub(crate) fn socket_for_fd(
    py: Python<'_>,
    fd: i32,
    family: i32,
    type_: i32,
    proto: i32,
) -> PyResult<Bound<'_, PyAny>> {
    hook!(py, "socket_for_fd")?.call1((fd, family, type_, proto))
}

/// `_set_write_buffer_limits(high, low)`'s computation and checks.
pub(crate) fn write_buffer_limits<'py>(
    py: Python<'py>,
    high: &Bound<'py, PyAny>,
    low: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    hook!(py, "write_buffer_limits")?.call1((high, low))?.extract()
}

pub(crate) fn log_debug(py: Python<'_>, msg: &str, arg: &Bound<'_, PyAny>) -> PyResult<()> {
    hook!(py, "log_debug")?.call1((msg, arg))?;
    Ok(())
}

pub(crate) fn log_info(py: Python<'_>, msg: &str, arg: &Bound<'_, PyAny>) -> PyResult<()> {
    hook!(py, "log_info")?.call1((msg, arg))?;
    Ok(())
}

/// The reporting half of the pipe transports' `_fatal_error`.
pub(crate) fn pipe_fatal_error(
    py: Python<'_>,
    transport: &Bound<'_, PyAny>,
    exc: &Bound<'_, PyAny>,
    message: &str,
    read_pipe: bool,
) -> PyResult<()> {
    hook!(py, "pipe_fatal_error")?.call1((transport, exc, message, read_pipe))?;
    Ok(())
}

pub(crate) fn log_warning(py: Python<'_>, msg: &str) -> PyResult<()> {
    hook!(py, "log_warning")?.call1((msg,))?;
    Ok(())
}
