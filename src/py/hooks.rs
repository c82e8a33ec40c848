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
    /// `asyncio.base_events.BaseEventLoop.create_task`, for the uncommon cases.
    pub base_create_task: Py<PyAny>,
    /// `asyncio.tasks` (its `Task` is looked up per call, as asyncio does).
    pub tasks_module: Py<PyAny>,
    /// `asyncio.futures` (its `Future` is looked up per call, as asyncio does).
    pub futures_module: Py<PyAny>,
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
    let base_events = py.import("asyncio.base_events")?;
    let base_create_task = base_events.getattr("BaseEventLoop")?.getattr("create_task")?.unbind();
    let tasks_module = py.import("asyncio.tasks")?.into_any().unbind();
    let futures_module = py.import("asyncio.futures")?.into_any().unbind();
    HOOKS
        .set(
            py,
            Hooks {
                handle_repr,
                report_error,
                slow_callback,
                extract_stack,
                fileobj_to_fd,
                base_create_task,
                tasks_module,
                futures_module,
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
