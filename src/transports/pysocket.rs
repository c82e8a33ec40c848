//! `socket.socket` objects made and closed as `socket.py` makes and closes
//! them, without its Python frames: `socket.__init__` (the C initializer,
//! then `_io_refs = 0`, `_closed = False`) and `socket.close` (`_closed =
//! True`, then the C `close` unless a `makefile()` object still uses the
//! socket). Done natively only while `socket.socket` has the standard
//! library's own methods (checked per call by identity; pinned by
//! `tests/test_native_pins.py`); otherwise the Python methods run.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyTuple, PyType};

use crate::py::call::{class_attr, init_as, new_instance, own_function};

struct SocketClass {
    class: Py<PyType>,
    base: Py<PyType>,
    init: Py<PyAny>,
    close: Py<PyAny>,
    real_close: Py<PyAny>,
    /// `_socket.socket.close`.
    base_close: Py<PyAny>,
}

static SOCKET: PyOnceLock<SocketClass> = PyOnceLock::new();

/// The classes and methods, once `socket.socket` is found with its own
/// methods (not kept while they are replaced).
fn socket_class(py: Python<'_>) -> Option<&'static SocketClass> {
    let k = SOCKET.get_or_try_init(py, || {
        let class = py.import("socket")?.getattr("socket")?.cast_into::<PyType>()?;
        let base = py.import("_socket")?.getattr("socket")?.cast_into::<PyType>()?;
        let own = |name: &str| own_function(class.as_any(), name, "socket", &format!("socket.{name}"));
        let (Some(init), Some(close), Some(real_close)) = (own("__init__"), own("close"), own("_real_close")) else {
            return Err(super::hooks::not_yet());
        };
        let base_close = base.getattr("close")?.unbind();
        Ok::<_, PyErr>(SocketClass {
            class: class.unbind(),
            base: base.unbind(),
            init: init.unbind(),
            close: close.unbind(),
            real_close: real_close.unbind(),
            base_close,
        })
    });
    k.ok()
}

fn has_own(py: Python<'_>, k: &SocketClass, name: &Bound<'_, pyo3::types::PyString>, f: &Py<PyAny>) -> bool {
    class_attr(k.class.bind(py).as_any(), name).is_some_and(|v| v.is(f.bind(py)))
}

/// `socket.socket(family, type, proto, fileno)`.
pub(crate) fn new_socket(py: Python<'_>, family: i32, type_: i32, proto: i32, fd: i32) -> PyResult<Bound<'_, PyAny>> {
    let k = socket_class(py);
    let Some(k) = k.filter(|k| has_own(py, k, intern!(py, "__init__"), &k.init)) else {
        return super::socket_class(py)?.call1((family, type_, proto, fd));
    };
    let sock = new_instance(k.class.bind(py))?;
    // _socket.socket.__init__(self, family, type, proto, fileno)
    init_as(k.base.bind(py), &sock, &PyTuple::new(py, [family, type_, proto, fd])?)?;
    // self._io_refs = 0
    // self._closed = False
    sock.setattr(intern!(py, "_io_refs"), 0)?;
    sock.setattr(intern!(py, "_closed"), false)?;
    Ok(sock)
}

/// `sock.close()`.
pub(crate) fn close(sock: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = sock.py();
    let k = socket_class(py).filter(|k| {
        sock.get_type().is(k.class.bind(py))
            && has_own(py, k, intern!(py, "close"), &k.close)
            && has_own(py, k, intern!(py, "_real_close"), &k.real_close)
    });
    let Some(k) = k else {
        sock.call_method0(intern!(py, "close"))?;
        return Ok(());
    };
    // self._closed = True
    // if self._io_refs <= 0:
    //     self._real_close()   # _ss.close(self)
    sock.setattr(intern!(py, "_closed"), true)?;
    if sock.getattr(intern!(py, "_io_refs"))?.le(0)? {
        k.base_close.bind(py).call1((sock,))?;
    }
    Ok(())
}
