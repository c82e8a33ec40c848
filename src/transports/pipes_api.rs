//! The Python methods and attributes of the native pipe transports.
//!
//! `_UnixReadPipeTransport` has no `abort` and no flow control, as in
//! asyncio; `_UnixWritePipeTransport` gets `writelines` from asyncio's
//! `WriteTransport` (which joins and calls `write`) and the write-buffer
//! limits from the stream transport's functions (`_FlowControlMixin`).
//!
//! # Invariants
//! - Every function here is reached through a descriptor of a pipe class,
//!   which checked `self`; the payload is at the stream class's offset
//!   (`RawClass::create` with `like`).

use std::ffi::CStr;

use pyo3::ffi;
use pyo3::prelude::*;

use super::stream::{self, StreamTransport};
use super::{pipes, stream_api};
use crate::py::fastcall::{fastcall_method, method_def, Call, RawMethod};
use crate::py::native_type::{raw_getter, raw_repr, RawGetter};

fn me<'a>(c: &'a Call<'_, '_>) -> &'a StreamTransport {
    // SAFETY: see the module invariant; `c.slf` lives for the call.
    unsafe { stream::class().payload(c.slf.as_ptr()) }
}

fastcall_method!(close, "_UnixPipeTransport.close", [], |c| {
    c.no_arguments()?;
    pipes::close(c.py, &c.slf, me(&c))?;
    Ok(c.py.None())
});

fastcall_method!(abort, "_UnixWritePipeTransport.abort", [], |c| {
    c.no_arguments()?;
    pipes::close_now(c.py, &c.slf, me(&c), c.py.None())?;
    Ok(c.py.None())
});

fastcall_method!(write, "_UnixWritePipeTransport.write", ["data"], |c| {
    c.at_most(1)?;
    pipes::write(c.py, &c.slf, me(&c), &c.arg(0))?;
    Ok(c.py.None())
});

fastcall_method!(write_eof, "_UnixWritePipeTransport.write_eof", [], |c| {
    c.no_arguments()?;
    pipes::write_eof(c.py, &c.slf, me(&c))?;
    Ok(c.py.None())
});

fastcall_method!(start_reading, "_UnixPipeTransport._start_reading", [], |c| {
    c.no_arguments()?;
    pipes::start_reading(c.py, &c.slf, me(&c))?;
    Ok(c.py.None())
});

fastcall_method!(
    add_reader,
    "_UnixReadPipeTransport._add_reader",
    ["fd", "callback"],
    |c| {
        c.at_most(2)?;
        pipes::add_reader(c.py, &c.slf, me(&c), &c.arg(0), &c.arg(1))?;
        Ok(c.py.None())
    }
);

fastcall_method!(read_ready, "_UnixReadPipeTransport._read_ready", [], |c| {
    c.no_arguments()?;
    pipes::read_ready(c.py, &c.slf, me(&c))?;
    Ok(c.py.None())
});

fastcall_method!(closed_by_peer, "_UnixWritePipeTransport._read_ready", [], |c| {
    c.no_arguments()?;
    pipes::closed_by_peer(c.py, &c.slf, me(&c))?;
    Ok(c.py.None())
});

fastcall_method!(write_ready, "_UnixWritePipeTransport._write_ready", [], |c| {
    c.no_arguments()?;
    pipes::write_ready(c.py, &c.slf, me(&c))?;
    Ok(c.py.None())
});

fastcall_method!(
    call_connection_lost,
    "_UnixPipeTransport._call_connection_lost",
    ["exc"],
    |c| {
        c.at_most(1)?;
        pipes::call_connection_lost(c.py, &c.slf, me(&c), &c.arg(0))?;
        Ok(c.py.None())
    }
);

fastcall_method!(close_m, "_UnixPipeTransport._close", [], |c| {
    let exc = c.opt(0).map_or_else(|| c.py.None(), Bound::unbind);
    c.at_most(1)?;
    pipes::close_now(c.py, &c.slf, me(&c), exc)?;
    Ok(c.py.None())
});

type Entry = (&'static CStr, RawMethod, &'static CStr);

const COMMON: [Entry; 7] = [
    (c"close", close, c"Close the transport."),
    (
        c"is_closing",
        stream_api::is_closing,
        c"Return True if the transport is closing or closed.",
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
    (c"_call_connection_lost", call_connection_lost, c""),
    (c"_close", close_m, c""),
];

/// The method table of `_UnixReadPipeTransport`.
pub(crate) fn read_methods() -> Vec<ffi::PyMethodDef> {
    let own: [Entry; 6] = [
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
        (c"_start_reading", start_reading, c""),
        (c"_add_reader", add_reader, c""),
        (c"_read_ready", read_ready, c""),
    ];
    COMMON
        .iter()
        .chain(own.iter())
        .map(|&(n, f, d)| method_def(n, f, d))
        .collect()
}

/// The method table of `_UnixWritePipeTransport`.
pub(crate) fn write_methods() -> Vec<ffi::PyMethodDef> {
    let own: [Entry; 12] = [
        (c"write", write, c"Write some data bytes to the transport."),
        (
            c"write_eof",
            write_eof,
            c"Close the write end after flushing buffered data.",
        ),
        (
            c"can_write_eof",
            stream_api::can_write_eof,
            c"Return True if this transport supports write_eof().",
        ),
        (c"abort", abort, c"Close the transport immediately."),
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
        (c"_start_reading", start_reading, c""),
        (c"_read_ready", closed_by_peer, c""),
        (c"_write_ready", write_ready, c""),
        (c"_maybe_pause_protocol", stream_api::maybe_pause, c""),
        (c"_maybe_resume_protocol", stream_api::maybe_resume, c""),
    ];
    COMMON
        .iter()
        .chain(own.iter())
        .map(|&(n, f, d)| method_def(n, f, d))
        .collect()
}

raw_getter!(get_pipe, StreamTransport, |py, obj, t| Ok(match &t.st.get(py).sock {
    stream::Sock::Py(p) => p.to_py(py),
    _ => py.None(),
}));
raw_getter!(get_fileno, StreamTransport, |py, obj, t| Ok(t
    .st
    .get(py)
    .fd
    .into_pyobject(py)?
    .into_any()
    .unbind()));
raw_getter!(get_extra, StreamTransport, |py, obj, t| Ok(t
    .st
    .get(py)
    .extra()
    .map_or_else(|| py.None(), |e| e.to_py(py))));

/// The attribute table of a pipe class: `_pipe`, `_fileno` and `_extra` of
/// its own, the rest (`shared`) from the stream transport's table.
fn getters(shared: &[&[u8]]) -> Vec<(&'static CStr, RawGetter)> {
    let mut table: Vec<(&'static CStr, RawGetter)> =
        vec![(c"_pipe", get_pipe), (c"_fileno", get_fileno), (c"_extra", get_extra)];
    table.extend(
        stream_api::getters()
            .into_iter()
            .filter(|(name, _)| shared.contains(&name.to_bytes())),
    );
    table
}

/// The attribute table of `_UnixReadPipeTransport`.
pub(crate) fn read_getters() -> Vec<(&'static CStr, RawGetter)> {
    getters(&[b"_loop", b"_protocol", b"_closing", b"_paused"])
}

/// The attribute table of `_UnixWritePipeTransport`.
pub(crate) fn write_getters() -> Vec<(&'static CStr, RawGetter)> {
    getters(&[
        b"_loop",
        b"_protocol",
        b"_closing",
        b"_conn_lost",
        b"_protocol_paused",
        b"_high_water",
        b"_low_water",
    ])
}

raw_repr!(repr, StreamTransport, |py, obj, t| pipes::repr(py, &obj, t));

/// `transport._pipe = value` (tests set it to None to drop the pipe
/// without closing it); `del` is refused like a slot's.
unsafe extern "C" fn set_pipe(
    obj: *mut pyo3::ffi::PyObject,
    value: *mut pyo3::ffi::PyObject,
    _closure: *mut std::os::raw::c_void,
) -> std::os::raw::c_int {
    // Setters are called with the GIL held.
    crate::py::entered(|py| {
        // SAFETY: `obj` is an instance of a pipe class (the descriptor checked
        // it), whose payload sits at the stream class's offset.
        let t: &StreamTransport = unsafe { stream::class().payload(obj) };
        if value.is_null() {
            pyo3::exceptions::PyAttributeError::new_err("cannot delete attribute '_pipe'").restore(py);
            return -1;
        }
        // SAFETY: a borrowed reference the caller keeps alive.
        let value = unsafe { Bound::from_borrowed_ptr(py, value) };
        let new = if value.is_none() {
            stream::Sock::Closed
        } else {
            stream::Sock::Py(crate::py::held::Held::new(value.unbind()))
        };
        let old = std::mem::replace(&mut t.st.get_mut(py).sock, new);
        if let stream::Sock::Raw(fd) = old {
            let _ = fd.into_raw(); // never for a pipe: its Python object owns the fd
        } else {
            drop(old);
        }
        0
    })
}

/// The setters of both pipe classes.
pub(crate) fn setters() -> Vec<(&'static CStr, crate::py::native_type::RawSetter)> {
    vec![(c"_pipe", set_pipe)]
}
