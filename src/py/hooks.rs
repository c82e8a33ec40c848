//! Cold-path helpers implemented in Python (`ferroloop._hooks`), registered
//! once at import with `_ferroloop._set_hooks`.
//!
//! These run only on rare paths (a callback raised, a repr was asked for,
//! debug mode is on, a non-int file object was passed), where matching
//! asyncio's exact formatting matters more than speed.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// The Python helpers.
#[derive(Debug)]
pub(crate) struct Hooks {
    /// `handle_repr(handle) -> str`: asyncio's `Handle.__repr__`.
    pub handle_repr: Py<PyAny>,
    /// `report_error(handle, exc)`: the `except BaseException` branch of `Handle._run`.
    pub report_error: Py<PyAny>,
    /// `slow_callback(loop, handle, dt)`: the debug-mode slow-callback warning.
    pub slow_callback: Py<PyAny>,
    /// `extract_stack()`: `format_helpers.extract_stack` of the caller's frame.
    pub extract_stack: Py<PyAny>,
    /// `fileobj_to_fd(obj)`: `selectors._fileobj_to_fd`.
    pub fileobj_to_fd: Py<PyAny>,
}

static HOOKS: PyOnceLock<Hooks> = PyOnceLock::new();

/// Register the helpers (called once by `ferroloop/__init__.py`).
#[pyfunction]
pub(crate) fn _set_hooks(
    py: Python<'_>,
    handle_repr: Py<PyAny>,
    report_error: Py<PyAny>,
    slow_callback: Py<PyAny>,
    extract_stack: Py<PyAny>,
    fileobj_to_fd: Py<PyAny>,
) -> PyResult<()> {
    HOOKS
        .set(
            py,
            Hooks {
                handle_repr,
                report_error,
                slow_callback,
                extract_stack,
                fileobj_to_fd,
            },
        )
        .map_err(|_| PyRuntimeError::new_err("ferroloop hooks are already set"))
}

/// The registered helpers.
pub(crate) fn hooks(py: Python<'_>) -> PyResult<&'static Hooks> {
    HOOKS
        .get(py)
        .ok_or_else(|| PyRuntimeError::new_err("ferroloop._hooks was not imported"))
}
