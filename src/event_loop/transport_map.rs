//! `_ensure_fd_no_transport`: whether a transport already uses an fd.
//!
//! asyncio's `BaseSelectorEventLoop._ensure_fd_no_transport` looks the fd up
//! in `self._transports` (a `WeakValueDictionary` of its Python
//! transports); ferroloop's native transports are in the loop's own map
//! (`LoopState::streams`). Both are checked, asyncio's first, with
//! asyncio's errors. Run for every transport made on 3.12+ (asyncio's
//! `_make_*_transport` call it) and by `add_reader` & co.

use pyo3::exceptions::{PyAttributeError, PyKeyError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyInt};

use super::EventLoop;

/// `weakref.WeakValueDictionary`.
static WEAK_VALUE_DICT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `self._transports[fileno]`, or None where asyncio's lookup raises `KeyError`.
fn python_transport<'py>(
    lp: &Bound<'py, EventLoop>,
    fileno: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = lp.py();
    let transports = lp.getattr(intern!(py, "_transports"))?;
    let wvd = WEAK_VALUE_DICT.get_or_try_init(py, || {
        py.import("weakref")?.getattr("WeakValueDictionary").map(Bound::unbind)
    })?;
    if transports.get_type().is(wvd.bind(py)) {
        // `__getitem__` is `self.data[key]()`, `KeyError` for a dead
        // reference (after dropping references whose removal is pending,
        // which changes nothing here): read the dict without the exception.
        let data = transports.getattr(intern!(py, "data"))?;
        if let Ok(data) = data.cast::<PyDict>() {
            return match data.get_item(fileno)? {
                Some(wr) => {
                    let o = wr.call0()?;
                    Ok((!o.is_none()).then_some(o))
                }
                None => Ok(None),
            };
        }
    }
    match transports.get_item(fileno) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.is_instance_of::<PyKeyError>(py) => Ok(None),
        Err(e) => Err(e),
    }
}

fn in_use(py: Python<'_>, fd: &Bound<'_, PyAny>, transport: &Bound<'_, PyAny>) -> PyResult<()> {
    if transport.call_method0(intern!(py, "is_closing"))?.is_truthy()? {
        return Ok(());
    }
    Err(PyRuntimeError::new_err(format!(
        "File descriptor {} is used by transport {}",
        fd.repr()?,
        transport.repr()?
    )))
}

/// `_ensure_fd_no_transport(fd)`.
pub(crate) fn ensure_fd_no_transport(lp: &Bound<'_, EventLoop>, fd: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = lp.py();
    let fileno = if fd.is_instance_of::<PyInt>() {
        fd.clone()
    } else {
        let got = fd
            .getattr(intern!(py, "fileno"))
            .and_then(|f| f.call0())
            .and_then(|n| py.get_type::<PyInt>().call1((n,)));
        match got {
            Ok(n) => n,
            Err(e)
                if e.is_instance_of::<PyAttributeError>(py)
                    || e.is_instance_of::<PyTypeError>(py)
                    || e.is_instance_of::<PyValueError>(py) =>
            {
                // `raise ValueError(...) from None`.
                let err = PyValueError::new_err(format!("Invalid file object: {}", fd.repr()?));
                err.value(py).setattr(intern!(py, "__suppress_context__"), true)?;
                return Err(err);
            }
            Err(e) => return Err(e),
        }
    };
    if let Some(t) = python_transport(lp, &fileno)? {
        in_use(py, fd, &t)?;
    }
    // An fd beyond C int holds no native transport.
    if let Ok(n) = fileno.extract::<i32>() {
        if let Some(t) = lp.get().native_transport_at(py, n) {
            in_use(py, fd, t.bind(py))?;
        }
    }
    Ok(())
}
