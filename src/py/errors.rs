//! `io::Error` → `OSError(errno, strerror)`.
//!
//! PyO3's own conversion passes only the message, which loses `exc.errno`
//! (DESIGN.md §4, trap T9). Calling `OSError(errno, strerror)` lets CPython
//! pick the subclass (`FileNotFoundError`, `PermissionError`, ...) and keeps
//! `errno`, as `select.epoll.register` does for asyncio.

use std::ffi::CStr;

use pyo3::exceptions::PyOSError;
use pyo3::PyErr;

/// The C library's message for `errno`, as `os.strerror` gives it.
fn strerror(errno: i32) -> String {
    // SAFETY: strerror returns a pointer to a NUL-terminated static or
    // thread-local string, read immediately.
    let ptr = unsafe { libc::strerror(errno) };
    if ptr.is_null() {
        return format!("Unknown error {errno}");
    }
    // SAFETY: non-null and NUL-terminated per strerror's contract.
    unsafe { CStr::from_ptr(ptr) }.to_string_lossy().into_owned()
}

/// Build `OSError(errno, strerror)` from an `io::Error`.
pub(crate) fn os_error(err: &std::io::Error) -> PyErr {
    match err.raw_os_error() {
        Some(errno) => PyOSError::new_err((errno, strerror(errno))),
        None => PyOSError::new_err(err.to_string()),
    }
}
