//! Native transports: asyncio's selector transports, in Rust.
//!
//! - [`stream`]: state and registration of `_SelectorSocketTransport`
//!   (TCP and unix stream sockets); `stream_life` its lifecycle,
//!   `stream_io` its read and write paths, `stream_api` its Python methods,
//!   `extra` `get_extra_info()` and `repr()`.
//! - `keep`: what keeps queued write data alive.
//! - `hooks`: the cold paths written in Python.
//!
//! The classes derive from asyncio's own `asyncio.Transport`, so
//! `isinstance(transport, asyncio.Transport)` holds (`py::native_type`).

mod extra;
mod hooks;
mod keep;
pub(crate) mod stream;
mod stream_api;
pub(crate) mod stream_io;
pub(crate) mod stream_life;

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::py::native_type::RawClass;
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

/// `trsock.TransportSocket(sock)`.
pub(crate) fn transport_socket<'py>(py: Python<'py>, sock: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    hooks::transport_socket(py, sock)
}

/// Create the transport classes and add them to the module (once, at import).
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // `_FlowControlMixin` (a `Transport`): base_events._SendfileFallbackProtocol checks for it.
    let base = py.import("asyncio.transports")?.getattr("_FlowControlMixin")?;
    let bases = PyTuple::new(py, [base])?;
    let class = RawClass::<StreamTransport>::create(
        py,
        c"ferroloop._ferroloop._SelectorSocketTransport",
        c"asyncio's selector socket transport (TCP and unix streams), native.",
        &bases,
        stream_api::methods(),
        &stream_api::getters(),
        Some(stream_api::repr),
        &[],
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
    Ok(())
}
