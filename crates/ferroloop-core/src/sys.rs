//! Raw libc calls, confined to this module (DESIGN.md §5).
//!
//! Every call goes through [`syscall!`], which turns a negative return into
//! `io::Error::last_os_error()` so the errno is never lost.

/// Call a libc function and turn `-1` into the current `io::Error`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: every use passes arguments that satisfy the libc function's
        // contract (valid fds owned by the caller, pointers to live buffers of
        // the stated length); the result is checked right here.
        #[allow(unused_unsafe)]
        let res = unsafe { libc::$fn($($arg),*) };
        if res < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}
pub(crate) use syscall;
