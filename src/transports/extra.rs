//! `get_extra_info()`, the socket objects made on demand, and `repr()` of
//! the native stream transport.
//!
//! Mirrors the `_extra` dict `_SelectorTransport.__init__` fills:
//! `'socket'` is a `TransportSocket` around the transport's socket,
//! `'sockname'`/`'peername'` are taken when the transport is created (and
//! stay after close), `'peername'` from the caller's `extra` when given;
//! other keys come from the caller's `extra`. Python objects are made on
//! first use: a natively accepted connection has no `socket.socket` until
//! somebody asks for it.

use ferroloop_core::net::Decoded;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};

use super::hooks;
use super::stream::{Addr, Flavor, Sock, StreamTransport};
use crate::py::held::Held;

/// A decoded address as Python's `socket` module presents it.
pub(crate) fn addr_object(py: Python<'_>, d: Decoded) -> PyResult<Py<PyAny>> {
    Ok(match d {
        Decoded::V4 { host, port } => (host, port).into_pyobject(py)?.into_any().unbind(),
        Decoded::V6 {
            host,
            port,
            flowinfo,
            scope_id,
        } => (host, port, flowinfo, scope_id).into_pyobject(py)?.into_any().unbind(),
        Decoded::UnixPath(p) => py
            .import("os")?
            .call_method1("fsdecode", (PyBytes::new(py, &p),))?
            .unbind(),
        Decoded::UnixAbstract(p) => PyBytes::new(py, &p).into_any().unbind(),
        Decoded::Empty => py.None(),
        Decoded::Other(fam, bytes) => (fam, PyBytes::new(py, &bytes)).into_pyobject(py)?.into_any().unbind(),
    })
}

/// The Python object of `sockname`/`peername` (converted once, then kept).
fn address(py: Python<'_>, t: &StreamTransport, peer: bool) -> PyResult<Py<PyAny>> {
    let decoded = {
        let st = t.st.get(py);
        let a = if peer { &st.peername } else { &st.sockname };
        match a {
            Addr::None => return Ok(py.None()),
            Addr::Py(o) => return Ok(o.to_py(py)),
            Addr::Native(n) => n.decode(),
        }
    };
    let obj = addr_object(py, decoded)?;
    let mut st = t.st.get_mut(py);
    let slot = if peer { &mut st.peername } else { &mut st.sockname };
    *slot = Addr::Py(Held::new(obj.clone_ref(py)));
    Ok(obj)
}

/// The transport's `socket.socket` (`_sock`), made on demand for a natively
/// accepted connection (it then owns the descriptor); None once closed.
pub(crate) fn socket_object(py: Python<'_>, t: &StreamTransport) -> PyResult<Py<PyAny>> {
    let (fd, kind) = {
        let st = t.st.get(py);
        match &st.sock {
            Sock::Py(s) => return Ok(s.to_py(py)),
            Sock::Closed => return Ok(py.None()),
            Sock::Raw(fd) => (fd.raw(), st.kind()),
        }
    };
    let sock = hooks::socket_for_fd(py, fd, kind.family.into(), kind.type_.into(), kind.proto.into())?;
    let mut st = t.st.get_mut(py);
    if let Sock::Raw(_) = &st.sock {
        // The Python socket owns the descriptor from now on.
        if let Sock::Raw(raw) = std::mem::replace(&mut st.sock, Sock::Py(Held::new(sock.clone().unbind()))) {
            let _ = raw.into_raw();
        }
    }
    Ok(sock.unbind())
}

/// `get_extra_info('socket')`: a `TransportSocket`, the same one each time,
/// also after close (asyncio's `_extra` keeps it, around the closed socket).
fn transport_socket(py: Python<'_>, t: &StreamTransport) -> PyResult<Py<PyAny>> {
    if let Some(s) = t.st.get(py).trsock() {
        return Ok(s.to_py(py));
    }
    let mut sock = socket_object(py, t)?;
    if sock.is_none(py) {
        let (closed, kind) = {
            let st = t.st.get(py);
            let closed = st
                .cold
                .as_ref()
                .and_then(|c| c.closed_sock.as_ref())
                .map(|s| s.to_py(py));
            (closed, st.kind())
        };
        sock = match closed {
            Some(s) => s,
            // A natively accepted connection closed before anybody asked:
            // a closed socket of its kind, as asyncio's would be by now.
            None => hooks::closed_socket(py, kind.family.into(), kind.type_.into(), kind.proto.into())?.unbind(),
        };
        if sock.is_none(py) {
            return Ok(py.None());
        }
    }
    let ts = hooks::transport_socket(py, sock.bind(py))?;
    t.st.get_mut(py).cold_mut().trsock = Some(Held::new(ts.clone().unbind()));
    Ok(ts.unbind())
}

/// `get_extra_info(name, default=None)`.
pub(crate) fn get_extra_info(
    py: Python<'_>,
    t: &StreamTransport,
    name: &Bound<'_, PyAny>,
    default: Option<Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    let pipe = matches!(t.st.get(py).flavor, Flavor::ReadPipe | Flavor::WritePipe);
    // A pipe transport's `_extra` is the caller's dict with 'pipe' in it.
    if let (false, Ok(s)) = (pipe, name.cast::<PyString>()) {
        match s.to_str()? {
            "socket" => return transport_socket(py, t),
            "sockname" => return address(py, t, false),
            "peername" => return address(py, t, true),
            _ => {}
        }
    }
    let default = default.map_or_else(|| py.None(), Bound::unbind);
    let extra = t.st.get(py).extra().map(|e| e.clone_ref(py));
    match extra {
        Some(e) => Ok(e.bind(py).call_method1("get", (name, default))?.unbind()),
        None => Ok(default),
    }
}

/// `_extra`: the dict asyncio keeps (built on request).
pub(crate) fn extra_dict(py: Python<'_>, t: &StreamTransport) -> PyResult<Py<PyAny>> {
    let d = PyDict::new(py);
    let extra = t.st.get(py).extra().map(|e| e.clone_ref(py));
    if let Some(e) = extra {
        d.update(e.bind(py).cast::<pyo3::types::PyMapping>()?)?;
    }
    d.set_item("socket", transport_socket(py, t)?)?;
    d.set_item("sockname", address(py, t, false)?)?;
    d.set_item("peername", address(py, t, true)?)?;
    Ok(d.into_any().unbind())
}

/// `repr(transport)`, as `_SelectorTransport.__repr__` builds it.
pub(crate) fn repr(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport) -> PyResult<String> {
    let name = obj.get_type().name()?.to_string();
    let st = t.st.get(py);
    let mut info = vec![name];
    if matches!(st.sock, Sock::Closed) {
        info.push("closed".into());
    } else if st.closing {
        info.push("closing".into());
    }
    info.push(format!("fd={}", st.fd));
    if let Some(lp) = &st.loop_ {
        if !lp.get().is_closed_flag(py) {
            let reading = st.interest & super::stream::READING != 0;
            info.push(format!("read={}", if reading { "polling" } else { "idle" }));
            let writing = st.interest & super::stream::WRITING != 0 || st.writer_pending;
            info.push(format!(
                "write=<{}, bufsize={}>",
                if writing { "polling" } else { "idle" },
                st.write_buffer_size()
            ));
        }
    }
    Ok(format!("<{}>", info.join(" ")))
}

/// `(low, high)` for `get_write_buffer_limits()`.
pub(crate) fn limits(py: Python<'_>, t: &StreamTransport) -> PyResult<Py<PyTuple>> {
    let st = t.st.get(py);
    let t = match st.limits() {
        Some(l) => PyTuple::new(py, [l.low.to_py(py), l.high.to_py(py)])?,
        None => PyTuple::new(
            py,
            [super::stream::DEFAULT_LOW as i64, super::stream::DEFAULT_HIGH as i64],
        )?,
    };
    Ok(t.unbind())
}
