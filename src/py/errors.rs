//! `io::Error` → `OSError(errno, strerror)`.
//!
//! PyO3's own conversion passes only the message, which loses `exc.errno`
//! (DESIGN.md §4, trap T9). Calling `OSError(errno, strerror)` lets CPython
//! pick the subclass (`FileNotFoundError`, `PermissionError`, ...) and keeps
//! `errno`, as `select.epoll.register` does for asyncio.

use pyo3::exceptions::PyOSError;
use pyo3::PyErr;

/// Build `OSError(errno, strerror)` from an `io::Error`.
pub(crate) fn os_error(err: &std::io::Error) -> PyErr {
    match err.raw_os_error() {
        Some(errno) => PyOSError::new_err((errno, ferroloop_core::sys::strerror(errno))),
        None => PyOSError::new_err(err.to_string()),
    }
}
