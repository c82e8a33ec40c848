//! The Python methods and attributes of the native datagram transport.
//!
//! Everything `_SelectorTransport` defines is the stream transport's own
//! function (`stream_api`); `sendto`, `_read_ready` and `_sendto_ready` are
//! `_SelectorDatagramTransport`'s. `write`, `writelines`, `write_eof` and
//! `can_write_eof` are not defined, so asyncio's `Transport` base answers
//! them (with `NotImplementedError`), as it does for asyncio's class.
//!
//! # Invariants
//! - Every function here is reached through a descriptor of the datagram
//!   class, which checked that `self` is an instance of it; the payload is at
//!   the stream class's offset (checked when the class is created).

use std::ffi::CStr;

use pyo3::ffi;
use pyo3::prelude::*;

use super::stream::{self, StreamTransport};
use super::{datagram, stream_api};
use crate::py::fastcall::{fastcall_method, method_def, Call, KwName};
use crate::py::native_type::{raw_getter, RawGetter};

static ADDR: KwName = KwName::new("addr");

fn me<'a>(c: &'a Call<'_, '_>) -> &'a StreamTransport {
    // SAFETY: see the module invariant; `c.slf` lives for the call.
    unsafe { stream::class().payload(c.slf.as_ptr()) }
}

fastcall_method!(sendto, "_SelectorDatagramTransport.sendto", ["data"], ["addr"], |c| {
    let py = c.py;
    let mut addr = c.opt(1);
    if let Some(a) = c.take_kw(&ADDR) {
        if addr.is_some() {
            return Err(pyo3::exceptions::PyTypeError::new_err(
                "_SelectorDatagramTransport.sendto() got multiple values for argument 'addr'",
            ));
        }
        addr = Some(a);
    }
    c.at_most(2)?;
    datagram::sendto(py, &c.slf, me(&c), &c.arg(0), addr)?;
    Ok(py.None())
});

fastcall_method!(read_ready, "_SelectorDatagramTransport._read_ready", [], |c| {
    c.no_arguments()?;
    datagram::read_ready(c.py, me(&c))?;
    Ok(c.py.None())
});

fastcall_method!(sendto_ready, "_SelectorDatagramTransport._sendto_ready", [], |c| {
    c.no_arguments()?;
    datagram::sendto_ready(c.py, &c.slf, me(&c))?;
    Ok(c.py.None())
});

/// The method table of the class.
pub(crate) fn methods() -> Vec<ffi::PyMethodDef> {
    let table: [(&'static CStr, crate::py::fastcall::RawMethod, &'static CStr); 19] = [
        (c"sendto", sendto, c"Send data to the transport."),
        (c"close", stream_api::close, c"Close the transport."),
        (c"abort", stream_api::abort, c"Close the transport immediately."),
        (
            c"is_closing",
            stream_api::is_closing,
            c"Return True if the transport is closing or closed.",
        ),
        (
            c"is_reading",
            stream_api::is_reading,
            c"Return True if the transport is receiving.",
        ),
        (c"pause_reading", stream_api::pause_reading, c"Pause the receiving end."),
        (
            c"resume_reading",
            stream_api::resume_reading,
            c"Resume the receiving end.",
        ),
        (
            c"get_write_buffer_size",
            stream_api::get_write_buffer_size,
            c"Return the current size of the write buffer.",
        ),
        (
            c"get_write_buffer_limits",
            stream_api::get_write_buffer_limits,
            c"Get the high and low watermarks for write flow control.",
        ),
        (
            c"set_write_buffer_limits",
            stream_api::set_write_buffer_limits,
            c"Set the high- and low-water limits for write flow control.",
        ),
        (c"set_protocol", stream_api::set_protocol, c"Set a new protocol."),
        (
            c"get_protocol",
            stream_api::get_protocol,
            c"Return the current protocol.",
        ),
        (
            c"get_extra_info",
            stream_api::get_extra_info,
            c"Get optional transport information.",
        ),
        (c"_start_reading", stream_api::start_reading, c""),
        (c"_call_connection_lost", stream_api::call_connection_lost, c""),
        (c"_read_ready", read_ready, c""),
        (c"_sendto_ready", sendto_ready, c""),
        (c"_maybe_pause_protocol", stream_api::maybe_pause, c""),
        (c"_maybe_resume_protocol", stream_api::maybe_resume, c""),
    ];
    let mut defs: Vec<ffi::PyMethodDef> = table.iter().map(|&(n, f, d)| method_def(n, f, d)).collect();
    defs.push(method_def(c"_force_close", stream_api::force_close_m, c""));
    defs
}

raw_getter!(get_address, StreamTransport, |py, obj, t| Ok(t
    .st
    .get(py)
    .dgram()
    .and_then(|d| d.address.as_ref().map(|a| a.to_py(py)))
    .unwrap_or_else(|| py.None())));
raw_getter!(get_buffer_size, StreamTransport, |py, obj, t| Ok(t
    .st
    .get(py)
    .write_buffer_size()
    .into_pyobject(py)?
    .into_any()
    .unbind()));

/// The attribute table: `_SelectorTransport`'s, plus `_address` and `_buffer_size`.
pub(crate) fn getters() -> Vec<(&'static CStr, RawGetter)> {
    let mut table: Vec<_> = stream_api::getters()
        .into_iter()
        .filter(|(name, _)| !matches!(name.to_bytes(), b"_eof" | b"_empty_waiter"))
        .collect();
    table.push((c"_address", get_address));
    table.push((c"_buffer_size", get_buffer_size));
    table
}
