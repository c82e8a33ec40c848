//! `sock_sendall`: asyncio's `sock_sendall` (the first `send`) and
//! `_sock_sendall` (the rest, on writability), natively on a plain socket
//! and through the socket's own `send` otherwise.

use ferroloop_core::net;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use super::{plain_socket, would_block, Attempt, OpKind, SockOp};
use crate::py::buffer::HeldBuffer;
use crate::py::errors::os_error;
use crate::py::held::Held;

/// `sock_sendall`: the first `send`, then the rest on writability.
pub(super) fn send_all<'py>(py: Python<'py>, sock: &Bound<'py, PyAny>, op: &SockOp, first: bool) -> Attempt<'py> {
    if !plain_socket(sock) {
        return match send_all_py(py, sock, op, first) {
            Ok(true) => Attempt::Done(py.None().into_bound(py)),
            Ok(false) => Attempt::WouldBlock,
            Err(e) => Attempt::Failed(e),
        };
    }
    let fd = match crate::py::sockobj::socket_fd(sock) {
        Ok(fd) => fd,
        Err(e) => return Attempt::Failed(e),
    };
    if first {
        let data = match &op.st.get(py).kind {
            Some(OpKind::SendAll { data, .. }) => data.to_py(py),
            _ => return Attempt::Failed(PyRuntimeError::new_err("not a sendall")),
        };
        let view = match HeldBuffer::new(data.bind(py)) {
            Ok(v) => v,
            Err(e) => return Attempt::Failed(e),
        };
        let sent = match net::send(fd, view.as_slice()) {
            Ok(n) => n,
            Err(e) if net::would_block(&e) => 0,
            Err(e) => return Attempt::Failed(os_error(&e)),
        };
        if sent == view.len() {
            return Attempt::Done(py.None().into_bound(py));
        }
        if let Some(OpKind::SendAll { view: v, pos, .. }) = &mut op.st.get_mut(py).kind {
            *v = Some(view);
            *pos = sent;
        }
        return Attempt::WouldBlock;
    }
    let res = {
        let st = op.st.get(py);
        match &st.kind {
            Some(OpKind::SendAll { view: Some(v), pos, .. }) => {
                net::send(fd, &v.as_slice()[*pos..]).map(|n| (n, *pos, v.len()))
            }
            _ => return Attempt::Failed(PyRuntimeError::new_err("not a sendall")),
        }
    };
    match res {
        Ok((n, pos, len)) => {
            if pos + n == len {
                Attempt::Done(py.None().into_bound(py))
            } else {
                if let Some(OpKind::SendAll { pos: p, .. }) = &mut op.st.get_mut(py).kind {
                    *p = pos + n;
                }
                Attempt::WouldBlock
            }
        }
        Err(e) if net::would_block(&e) => Attempt::WouldBlock,
        Err(e) => Attempt::Failed(os_error(&e)),
    }
}

/// `sock_sendall` and `_sock_sendall` through the socket's own `send`
/// (see [`plain_socket`]): `Ok(true)` when everything is sent.
fn send_all_py(py: Python<'_>, sock: &Bound<'_, PyAny>, op: &SockOp, first: bool) -> PyResult<bool> {
    let send = pyo3::intern!(py, "send");
    if first {
        let data = match &op.st.get(py).kind {
            Some(OpKind::SendAll { data, .. }) => data.to_py(py).into_bound(py),
            _ => return Err(PyRuntimeError::new_err("not a sendall")),
        };
        let n = match sock.call_method1(send, (&data,)) {
            Ok(n) => n,
            Err(e) if would_block(py, &e) => {
                crate::py::errors::discard(py, e);
                0i32.into_pyobject(py)?.into_any()
            }
            Err(e) => return Err(e),
        };
        if n.eq(data.len()?)? {
            return Ok(true);
        }
        let view = pyo3::types::PyMemoryView::from(&data)?.into_any();
        if let Some(OpKind::SendAll { py_state, .. }) = &mut op.st.get_mut(py).kind {
            *py_state = Some((Held::new(view.unbind()), Held::new(n.unbind())));
        }
        return Ok(false);
    }
    let (view, start) = match &op.st.get(py).kind {
        Some(OpKind::SendAll {
            py_state: Some((view, pos)),
            ..
        }) => (view.to_py(py).into_bound(py), pos.to_py(py).into_bound(py)),
        _ => return Err(PyRuntimeError::new_err("not a sendall")),
    };
    let from: isize = start.extract()?;
    let rest = view.get_item(pyo3::types::PySlice::new(py, from, isize::MAX, 1))?;
    let n = match sock.call_method1(send, (rest,)) {
        Ok(n) => n,
        Err(e) if would_block(py, &e) => {
            crate::py::errors::discard(py, e);
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    let start = start.add(n)?;
    if start.eq(view.len()?)? {
        return Ok(true);
    }
    if let Some(OpKind::SendAll {
        py_state: Some((_, pos)),
        ..
    }) = &mut op.st.get_mut(py).kind
    {
        *pos = Held::new(start.unbind());
    }
    Ok(false)
}
