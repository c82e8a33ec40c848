//! `io::Error` → `OSError(errno, strerror)`.
//!
//! PyO3's own conversion passes only the message, which loses `exc.errno`
//! (DESIGN.md §4, trap T9). Calling `OSError(errno, strerror)` lets CPython
//! pick the subclass (`FileNotFoundError`, `PermissionError`, ...) and keeps
//! `errno`, as `select.epoll.register` does for asyncio.

use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;

/// Build `OSError(errno, strerror)` from an `io::Error`.
pub(crate) fn os_error(err: &std::io::Error) -> PyErr {
    match err.raw_os_error() {
        Some(errno) => PyOSError::new_err((errno, ferroloop_core::sys::strerror(errno))),
        None => PyOSError::new_err(err.to_string()),
    }
}

/// A type's `tp_name`, as CPython's own messages print it
/// (`collections.deque`, `str`; `__name__` drops the module of a C type).
pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    // SAFETY: a live object's type is a live type object whose `tp_name`
    // is a NUL-terminated string.
    unsafe {
        let ty = pyo3::ffi::Py_TYPE(obj.as_ptr());
        std::ffi::CStr::from_ptr((*ty).tp_name).to_string_lossy().into_owned()
    }
}

/// Drop a caught exception at once. A `PyErr` dropped inside one of the
/// loop's raw entry points (fastcall methods, coroutine slots) while PyO3
/// does not count the thread as attached (a call from top-level code, not
/// from inside `run_forever`) is only released the next time PyO3 attaches;
/// an exception raised by Python code keeps its frames, and what they hold,
/// alive until then. Handing it back to the interpreter and clearing it
/// releases it now.
pub(crate) fn discard(py: Python<'_>, err: PyErr) {
    err.restore(py);
    // SAFETY: the GIL is held; clears the indicator just set (its reference
    // released with a plain decref).
    unsafe { pyo3::ffi::PyErr_Clear() };
}

/// The `TypeError` CPython's argument parser gives when `function`'s first
/// argument is not a writable buffer (`sock.recv_into(buf)`): the type's
/// `tp_name`, or "None".
pub(crate) fn not_writable_buffer(function: &str, buf: &Bound<'_, PyAny>) -> PyErr {
    let name = if buf.is_none() {
        "None".to_owned()
    } else {
        type_name(buf)
    };
    pyo3::exceptions::PyTypeError::new_err(format!(
        "{function}() argument 1 must be read-write bytes-like object, not {name}"
    ))
}
