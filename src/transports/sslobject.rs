//! `SSLContext.wrap_bio(incoming, outgoing, server_side=..., server_hostname=None)`
//! as `ssl.py` runs it, without its three Python frames (`wrap_bio`,
//! `_encode_hostname`, `SSLObject._create`): an `SSLObject` made with
//! `__new__`, the C `_wrap_bio` with the new object as its owner, then
//! `_sslobj`. Done natively only for an `ssl.SSLContext` (not a subclass)
//! whose `sslobject_class` is `ssl.SSLObject`, with no hostname, while those
//! classes have the standard library's own methods (checked per call by
//! identity, on the context instance too; pinned by
//! `tests/test_native_pins.py`); otherwise `wrap_bio` runs.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyType};

use crate::py::call::{class_attr, is_bound_method, new_instance, own_function};

struct SslClasses {
    context: Py<PyType>,
    object: Py<PyType>,
    wrap_bio: Py<PyAny>,
    encode_hostname: Py<PyAny>,
    /// The `classmethod` object in `SSLObject.__dict__`.
    create: Py<PyAny>,
}

static SSL: PyOnceLock<SslClasses> = PyOnceLock::new();

/// The classes and methods, once found to be `ssl`'s own (not kept while
/// one is replaced).
fn classes(py: Python<'_>) -> Option<&'static SslClasses> {
    let k = SSL.get_or_try_init(py, || {
        let ssl = py.import("ssl")?;
        let context = ssl.getattr("SSLContext")?.cast_into::<PyType>()?;
        let object = ssl.getattr("SSLObject")?.cast_into::<PyType>()?;
        let own = |cls: &Bound<'_, PyType>, name: &str, qualname: &str| {
            own_function(cls.as_any(), name, "ssl", qualname).map(Bound::unbind)
        };
        let (Some(wrap_bio), Some(encode_hostname), Some(create)) = (
            own(&context, "wrap_bio", "SSLContext.wrap_bio"),
            own(&context, "_encode_hostname", "SSLContext._encode_hostname"),
            own(&object, "_create", "SSLObject._create"),
        ) else {
            return Err(super::hooks::not_yet());
        };
        Ok::<_, PyErr>(SslClasses {
            context: context.unbind(),
            object: object.unbind(),
            wrap_bio,
            encode_hostname,
            create,
        })
    });
    k.ok()
}

/// `sslcontext.wrap_bio(incoming, outgoing, server_side=server_side,
/// server_hostname=server_hostname)`.
pub(crate) fn wrap_bio<'py>(
    sslcontext: &Bound<'py, PyAny>,
    incoming: &Bound<'py, PyAny>,
    outgoing: &Bound<'py, PyAny>,
    server_side: &Bound<'py, PyAny>,
    server_hostname: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = sslcontext.py();
    let native = match classes(py) {
        Some(k) if server_hostname.is_none() && sslcontext.get_type().is(k.context.bind(py)) => {
            let object = k.object.bind(py);
            let same = |cls: &Bound<'py, PyAny>, name: &Bound<'py, PyString>, f: &Py<PyAny>| {
                class_attr(cls, name).is_some_and(|v| v.is(f.bind(py)))
            };
            (is_bound_method(sslcontext, intern!(py, "wrap_bio"), k.wrap_bio.bind(py))
                && is_bound_method(sslcontext, intern!(py, "_encode_hostname"), k.encode_hostname.bind(py))
                && same(object.as_any(), intern!(py, "_create"), &k.create)
                && class_attr(object.as_any(), intern!(py, "__new__")).is_none()
                && sslcontext.getattr(intern!(py, "sslobject_class"))?.is(object))
            .then_some(k)
        }
        _ => None,
    };
    let kwargs = PyDict::new(py);
    kwargs.set_item(intern!(py, "server_side"), server_side)?;
    kwargs.set_item(intern!(py, "server_hostname"), server_hostname)?;
    let Some(k) = native else {
        return sslcontext.call_method(intern!(py, "wrap_bio"), (incoming, outgoing), Some(&kwargs));
    };
    // self = cls.__new__(cls)
    let obj = new_instance(k.object.bind(py))?;
    // sslobj = context._wrap_bio(incoming, outgoing, server_side=server_side,
    //     server_hostname=server_hostname, owner=self, session=session)
    kwargs.set_item(intern!(py, "owner"), &obj)?;
    kwargs.set_item(intern!(py, "session"), py.None())?;
    let sslobj = sslcontext.call_method(intern!(py, "_wrap_bio"), (incoming, outgoing), Some(&kwargs))?;
    // self._sslobj = sslobj
    obj.setattr(intern!(py, "_sslobj"), sslobj)?;
    Ok(obj)
}
