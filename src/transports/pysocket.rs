//! `socket.socket` objects made and closed as `socket.py` makes and closes
//! them, without its Python frames: `socket.__init__` (the C initializer,
//! then `_io_refs = 0`, `_closed = False`) and `socket.close` (`_closed =
//! True`, then the C `close` unless a `makefile()` object still uses the
//! socket). Done natively only while `socket.socket` has the standard
//! library's own methods (checked per call by identity; pinned by
//! `tests/test_native_pins.py`); otherwise the Python methods run.
//!
//! The one cache of `socket.socket` and `_socket.socket` ([`socket_types`]),
//! also used by `hooks` and the `sock_*` operations.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyTuple, PyType};

use crate::py::call::{class_attr, init_as, new_instance, own_function};

/// `socket.socket`, its C base `_socket.socket` and the base's `family`,
/// `type` and `proto` members (the Python class's properties wrap them in
/// enums).
pub(crate) struct SocketTypes {
    pub class: Py<PyType>,
    pub base: Py<PyType>,
    pub members: [Py<PyAny>; 3],
}

static TYPES: PyOnceLock<SocketTypes> = PyOnceLock::new();

pub(crate) fn socket_types(py: Python<'_>) -> PyResult<&'static SocketTypes> {
    TYPES.get_or_try_init(py, || {
        let base = py.import("_socket")?.getattr("socket")?.cast_into::<PyType>()?;
        let member = |n: &str| base.getattr(n).map(Bound::unbind);
        Ok::<_, PyErr>(SocketTypes {
            class: py.import("socket")?.getattr("socket")?.cast_into::<PyType>()?.unbind(),
            members: [member("family")?, member("type")?, member("proto")?],
            base: base.unbind(),
        })
    })
}

/// `socket.socket`'s own methods.
struct SocketMethods {
    init: Py<PyAny>,
    close: Py<PyAny>,
    real_close: Py<PyAny>,
    /// `_socket.socket.close`.
    base_close: Py<PyAny>,
}

static METHODS: PyOnceLock<SocketMethods> = PyOnceLock::new();

/// The classes and methods, once `socket.socket` is found with its own
/// methods (not kept while they are replaced).
fn socket_class(py: Python<'_>) -> Option<(&'static SocketTypes, &'static SocketMethods)> {
    let types = socket_types(py).ok()?;
    let k = METHODS.get_or_try_init(py, || {
        let class = types.class.bind(py);
        let own = |name: &str| own_function(class.as_any(), name, "socket", &format!("socket.{name}"));
        let (Some(init), Some(close), Some(real_close)) = (own("__init__"), own("close"), own("_real_close")) else {
            return Err(super::hooks::not_yet());
        };
        Ok::<_, PyErr>(SocketMethods {
            init: init.unbind(),
            close: close.unbind(),
            real_close: real_close.unbind(),
            base_close: types.base.bind(py).getattr("close")?.unbind(),
        })
    });
    Some((types, k.ok()?))
}

fn has_own(py: Python<'_>, t: &SocketTypes, name: &Bound<'_, pyo3::types::PyString>, f: &Py<PyAny>) -> bool {
    class_attr(t.class.bind(py).as_any(), name).is_some_and(|v| v.is(f.bind(py)))
}

/// `socket.socket(family, type, proto, fileno)`.
pub(crate) fn new_socket(py: Python<'_>, family: i32, type_: i32, proto: i32, fd: i32) -> PyResult<Bound<'_, PyAny>> {
    let k = socket_class(py);
    let Some((t, _)) = k.filter(|(t, k)| has_own(py, t, intern!(py, "__init__"), &k.init)) else {
        return socket_types(py)?.class.bind(py).call1((family, type_, proto, fd));
    };
    let sock = new_instance(t.class.bind(py))?;
    // _socket.socket.__init__(self, family, type, proto, fileno)
    init_as(t.base.bind(py), &sock, &PyTuple::new(py, [family, type_, proto, fd])?)?;
    // self._io_refs = 0
    // self._closed = False
    sock.setattr(intern!(py, "_io_refs"), 0)?;
    sock.setattr(intern!(py, "_closed"), false)?;
    Ok(sock)
}

/// `sock.close()`.
pub(crate) fn close(sock: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = sock.py();
    let k = socket_class(py).filter(|(t, k)| {
        sock.get_type().is(t.class.bind(py))
            && has_own(py, t, intern!(py, "close"), &k.close)
            && has_own(py, t, intern!(py, "_real_close"), &k.real_close)
    });
    let Some((_, k)) = k else {
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
