//! The descriptor of a `socket.socket` read from the object, as the C
//! socket methods read it (`sock_fd`, the first field after the object
//! header of `PySocketSockObject`, the same on 3.11-3.13), instead of a
//! `fileno()` method call (some 180 instructions, several per `sock_*`
//! operation). The layout is checked once against `fileno()` on the first
//! socket seen; if they ever disagree the method is used from then on.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU8, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;

const UNKNOWN: u8 = 0;
const CHECKED: u8 = 1;
const OFF: u8 = 2;

static LAYOUT: AtomicU8 = AtomicU8::new(UNKNOWN);

/// `sock_fd` of an instance of `_socket.socket` (or a subclass: the caller
/// checks the type).
fn read_fd(sock: &Bound<'_, PyAny>) -> RawFd {
    // SAFETY: `sock` is a live `_socket.socket` instance (checked by the
    // caller); its struct starts with the object header followed by the
    // `int` descriptor. Only read after the layout check agreed.
    unsafe {
        let base = sock.as_ptr().cast::<u8>().add(std::mem::size_of::<ffi::PyObject>());
        std::ptr::read_unaligned(base.cast::<RawFd>())
    }
}

/// The descriptor of `sock`, an instance of exactly `socket.socket`.
pub(crate) fn socket_fd(sock: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    match LAYOUT.load(Ordering::Relaxed) {
        CHECKED => Ok(read_fd(sock)),
        OFF => method_fd(sock),
        _ => {
            let by_method = method_fd(sock)?;
            let agrees = read_fd(sock) == by_method;
            LAYOUT.store(if agrees { CHECKED } else { OFF }, Ordering::Relaxed);
            Ok(by_method)
        }
    }
}

fn method_fd(sock: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    sock.call_method0(pyo3::intern!(sock.py(), "fileno"))?.extract()
}
