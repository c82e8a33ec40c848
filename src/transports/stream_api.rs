//! The Python methods and attributes of the native stream transport.
//!
//! Each method is a raw fastcall function (`py::fastcall`) with the name,
//! arguments and error messages of `_SelectorSocketTransport`'s; the bodies
//! live in `stream_life` and `stream_io`.
//!
//! # Invariants
//! - Every function here is reached through a descriptor of the transport
//!   class, which checked that `self` is an instance of it.

use std::ffi::CStr;

use pyo3::ffi;
use pyo3::prelude::*;

use super::stream::{self, Limits, StreamTransport};
use super::{extra, hooks, stream_io, stream_life};
use crate::py::fastcall::{fastcall_method, method_def, Call, KwName};
use crate::py::held::Held;
use crate::py::native_type::{raw_getter, raw_repr, RawGetter};

static HIGH: KwName = KwName::new("high");
static LOW: KwName = KwName::new("low");
static DEFAULT: KwName = KwName::new("default");

fn me<'a>(c: &'a Call<'_, '_>) -> &'a StreamTransport {
    // SAFETY: see the module invariant; `c.slf` lives for the call.
    unsafe { stream::class().payload(c.slf.as_ptr()) }
}

fn none(py: Python<'_>) -> Py<PyAny> {
    py.None()
}

fn boolean(py: Python<'_>, v: bool) -> Py<PyAny> {
    pyo3::types::PyBool::new(py, v).to_owned().into_any().unbind()
}

fastcall_method!(write, "_SelectorSocketTransport.write", ["data"], |c| {
    c.at_most(1)?;
    stream_io::write(c.py, &c.slf, me(&c), &c.arg(0))?;
    Ok(none(c.py))
});

fastcall_method!(
    writelines,
    "_SelectorSocketTransport.writelines",
    ["list_of_data"],
    |c| {
        c.at_most(1)?;
        stream_io::writelines(c.py, &c.slf, me(&c), &c.arg(0))?;
        Ok(none(c.py))
    }
);

fastcall_method!(write_eof, "_SelectorSocketTransport.write_eof", [], |c| {
    c.no_arguments()?;
    stream_io::write_eof(c.py, me(&c))?;
    Ok(none(c.py))
});

fastcall_method!(can_write_eof, "_SelectorSocketTransport.can_write_eof", [], |c| {
    c.no_arguments()?;
    Ok(boolean(c.py, true))
});

fastcall_method!(close, "_SelectorSocketTransport.close", [], |c| {
    c.no_arguments()?;
    stream_life::close(c.py, &c.slf, me(&c))?;
    Ok(none(c.py))
});

fastcall_method!(abort, "_SelectorTransport.abort", [], |c| {
    c.no_arguments()?;
    stream_life::force_close(c.py, &c.slf, me(&c), c.py.None())?;
    Ok(none(c.py))
});

fastcall_method!(is_closing, "_SelectorTransport.is_closing", [], |c| {
    c.no_arguments()?;
    let v = me(&c).st.get(c.py).closing;
    Ok(boolean(c.py, v))
});

fastcall_method!(is_reading, "_SelectorTransport.is_reading", [], |c| {
    c.no_arguments()?;
    let v = me(&c).st.get(c.py).is_reading();
    Ok(boolean(c.py, v))
});

fn debug(py: Python<'_>, t: &StreamTransport) -> bool {
    t.st.get(py).loop_.as_ref().is_some_and(|l| l.get().debug(py))
}

fastcall_method!(pause_reading, "_SelectorTransport.pause_reading", [], |c| {
    c.no_arguments()?;
    let (py, t) = (c.py, me(&c));
    if !t.st.get(py).is_reading() {
        return Ok(none(py));
    }
    t.st.get_mut(py).paused = true;
    stream::remove_reader(py, &c.slf, t)?;
    if debug(py, t) {
        hooks::log_debug(py, "%r pauses reading", &c.slf)?;
    }
    Ok(none(py))
});

fastcall_method!(resume_reading, "_SelectorTransport.resume_reading", [], |c| {
    c.no_arguments()?;
    let (py, t) = (c.py, me(&c));
    {
        let mut st = t.st.get_mut(py);
        if st.closing || !st.paused {
            return Ok(none(py));
        }
        st.paused = false;
    }
    stream_life::start_reading(py, &c.slf, t)?;
    if debug(py, t) {
        hooks::log_debug(py, "%r resumes reading", &c.slf)?;
    }
    Ok(none(py))
});

fastcall_method!(
    get_write_buffer_size,
    "_SelectorTransport.get_write_buffer_size",
    [],
    |c| {
        c.no_arguments()?;
        let n = me(&c).st.get(c.py).write_buffer_size();
        Ok(n.into_pyobject(c.py)?.into_any().unbind())
    }
);

fastcall_method!(
    get_write_buffer_limits,
    "_FlowControlMixin.get_write_buffer_limits",
    [],
    |c| {
        c.no_arguments()?;
        Ok(extra::limits(c.py, me(&c))?.into_any())
    }
);

fastcall_method!(
    set_write_buffer_limits,
    "_FlowControlMixin.set_write_buffer_limits",
    [],
    |c| {
        let py = c.py;
        let mut high = c.opt(0);
        let mut low = c.opt(1);
        if let Some(h) = c.take_kw(&HIGH) {
            if high.is_some() {
                return Err(pyo3::exceptions::PyTypeError::new_err(
                    "_FlowControlMixin.set_write_buffer_limits() got multiple values for argument 'high'",
                ));
            }
            high = Some(h);
        }
        if let Some(l) = c.take_kw(&LOW) {
            if low.is_some() {
                return Err(pyo3::exceptions::PyTypeError::new_err(
                    "_FlowControlMixin.set_write_buffer_limits() got multiple values for argument 'low'",
                ));
            }
            low = Some(l);
        }
        c.at_most(2)?;
        let none_obj = py.None().into_bound(py);
        let (h, l) = hooks::write_buffer_limits(
            py,
            high.as_ref().unwrap_or(&none_obj),
            low.as_ref().unwrap_or(&none_obj),
        )?;
        let limits = Limits {
            high_f: h.extract::<f64>()?,
            low_f: l.extract::<f64>()?,
            high: Held::new(h.unbind()),
            low: Held::new(l.unbind()),
        };
        let t = me(&c);
        let old = t.st.get_mut(py).cold_mut().limits.replace(limits);
        drop(old);
        stream_io::maybe_pause_protocol(py, &c.slf, t)?;
        Ok(none(py))
    }
);

fastcall_method!(
    set_protocol,
    "_SelectorSocketTransport.set_protocol",
    ["protocol"],
    |c| {
        c.at_most(1)?;
        let py = c.py;
        let protocol = c.arg(0);
        let buffered = protocol.is_instance(&hooks::buffered_protocol(py)?)?;
        let old = {
            let mut st = me(&c).st.get_mut(py);
            st.buffered = buffered;
            st.protocol_connected = true;
            st.protocol.replace(Held::new(protocol.unbind()))
        };
        drop(old);
        Ok(none(py))
    }
);

fastcall_method!(get_protocol, "_SelectorTransport.get_protocol", [], |c| {
    c.no_arguments()?;
    let p = me(&c).st.get(c.py).protocol.as_ref().map(|p| p.to_py(c.py));
    Ok(p.unwrap_or_else(|| c.py.None()))
});

fastcall_method!(
    get_extra_info,
    "BaseTransport.get_extra_info",
    ["name"],
    ["default"],
    |c| {
        let default = match c.take_kw(&DEFAULT) {
            Some(d) if c.pos.len() > 1 => {
                let _ = d;
                return Err(pyo3::exceptions::PyTypeError::new_err(
                    "BaseTransport.get_extra_info() got multiple values for argument 'default'",
                ));
            }
            Some(d) => Some(d),
            None => c.opt(1),
        };
        c.at_most(2)?;
        extra::get_extra_info(c.py, me(&c), &c.arg(0), default)
    }
);

fastcall_method!(start_reading, "_SelectorSocketTransport._start_reading", [], |c| {
    c.no_arguments()?;
    stream_life::start_reading(c.py, &c.slf, me(&c))?;
    Ok(none(c.py))
});

fastcall_method!(
    call_connection_lost,
    "_SelectorSocketTransport._call_connection_lost",
    ["exc"],
    |c| {
        c.at_most(1)?;
        stream_life::call_connection_lost(c.py, &c.slf, me(&c), &c.arg(0))?;
        Ok(none(c.py))
    }
);

fastcall_method!(read_ready, "_SelectorSocketTransport._read_ready", [], |c| {
    c.no_arguments()?;
    stream_io::read_ready(c.py, &c.slf, me(&c))?;
    Ok(none(c.py))
});

fastcall_method!(write_ready, "_SelectorSocketTransport._write_ready", [], |c| {
    c.no_arguments()?;
    stream_io::write_ready(c.py, &c.slf, me(&c))?;
    Ok(none(c.py))
});

fastcall_method!(
    make_empty_waiter,
    "_SelectorSocketTransport._make_empty_waiter",
    [],
    |c| {
        c.no_arguments()?;
        let (py, t) = (c.py, me(&c));
        let lp = {
            let st = t.st.get(py);
            if st.empty_waiter().is_some() {
                return Err(pyo3::exceptions::PyRuntimeError::new_err("Empty waiter is already set"));
            }
            st.loop_.as_ref().map(|l| l.clone_ref(py))
        };
        let lp = lp.map_or_else(|| py.None(), |l| l.to_py(py).into_any());
        let waiter = lp.bind(py).call_method0(pyo3::intern!(py, "create_future"))?;
        t.st.get_mut(py).cold_mut().empty_waiter = Some(Held::new(waiter.clone().unbind()));
        if t.st.get(py).buffer_empty() {
            waiter.call_method1(pyo3::intern!(py, "set_result"), (py.None(),))?;
        }
        Ok(waiter.unbind())
    }
);

fastcall_method!(
    reset_empty_waiter,
    "_SelectorSocketTransport._reset_empty_waiter",
    [],
    |c| {
        c.no_arguments()?;
        let old = me(&c).st.get_mut(c.py).take_empty_waiter();
        drop(old);
        Ok(none(c.py))
    }
);

fastcall_method!(
    set_sendfile_active,
    "_SelectorSocketTransport._set_sendfile_active",
    ["active"],
    |c| {
        c.at_most(1)?;
        let (py, t) = (c.py, me(&c));
        let active = c.arg(0).is_truthy()?;
        let (lp, fd) = {
            let st = t.st.get(py);
            (st.loop_.as_ref().map(|l| l.clone_ref(py)), st.fd)
        };
        if let Some(lp) = lp {
            let addr = std::ptr::from_ref(t) as usize;
            if active {
                stream::apply_interest(py, &c.slf, t)?;
                lp.get().forget_transport(py, fd, addr);
            } else {
                lp.get().remember_transport(py, fd, addr);
            }
        }
        Ok(none(py))
    }
);

/// The method table of the class.
pub(crate) fn methods() -> Vec<ffi::PyMethodDef> {
    let table: [(&'static CStr, crate::py::fastcall::RawMethod, &'static CStr); 26] = [
        (c"write", write, c"Write some data bytes to the transport."),
        (
            c"writelines",
            writelines,
            c"Write a list (or any iterable) of data bytes to the transport.",
        ),
        (
            c"write_eof",
            write_eof,
            c"Close the write end after flushing buffered data.",
        ),
        (
            c"can_write_eof",
            can_write_eof,
            c"Return True if this transport supports write_eof().",
        ),
        (c"close", close, c"Close the transport."),
        (c"abort", abort, c"Close the transport immediately."),
        (
            c"is_closing",
            is_closing,
            c"Return True if the transport is closing or closed.",
        ),
        (c"is_reading", is_reading, c"Return True if the transport is receiving."),
        (c"pause_reading", pause_reading, c"Pause the receiving end."),
        (c"resume_reading", resume_reading, c"Resume the receiving end."),
        (
            c"get_write_buffer_size",
            get_write_buffer_size,
            c"Return the current size of the write buffer.",
        ),
        (
            c"get_write_buffer_limits",
            get_write_buffer_limits,
            c"Get the high and low watermarks for write flow control.",
        ),
        (
            c"set_write_buffer_limits",
            set_write_buffer_limits,
            c"Set the high- and low-water limits for write flow control.",
        ),
        (c"set_protocol", set_protocol, c"Set a new protocol."),
        (c"get_protocol", get_protocol, c"Return the current protocol."),
        (
            c"get_extra_info",
            get_extra_info,
            c"Get optional transport information.",
        ),
        (c"_start_reading", start_reading, c""),
        (c"_call_connection_lost", call_connection_lost, c""),
        (c"_read_ready", read_ready, c""),
        (c"_write_ready", write_ready, c""),
        (c"_make_empty_waiter", make_empty_waiter, c""),
        (c"_reset_empty_waiter", reset_empty_waiter, c""),
        (c"_set_sendfile_active", set_sendfile_active, c""),
        (c"_maybe_pause_protocol", maybe_pause, c""),
        (c"_maybe_resume_protocol", maybe_resume, c""),
        (c"_force_close", force_close_m, c""),
    ];
    table.iter().map(|&(n, f, d)| method_def(n, f, d)).collect()
}

fastcall_method!(maybe_pause, "_FlowControlMixin._maybe_pause_protocol", [], |c| {
    c.no_arguments()?;
    stream_io::maybe_pause_protocol(c.py, &c.slf, me(&c))?;
    Ok(none(c.py))
});

fastcall_method!(maybe_resume, "_FlowControlMixin._maybe_resume_protocol", [], |c| {
    c.no_arguments()?;
    stream_io::maybe_resume_protocol(c.py, &c.slf, me(&c))?;
    Ok(none(c.py))
});

fastcall_method!(force_close_m, "_SelectorTransport._force_close", ["exc"], |c| {
    c.at_most(1)?;
    stream_life::force_close(c.py, &c.slf, me(&c), c.arg(0).unbind())?;
    Ok(none(c.py))
});

fn opt(py: Python<'_>, v: Option<&Held<PyAny>>) -> Py<PyAny> {
    v.map_or_else(|| py.None(), |o| o.to_py(py))
}

raw_getter!(get_sock, StreamTransport, |py, obj, t| extra::socket_object(py, t));
raw_getter!(get_sock_fd, StreamTransport, |py, obj, t| Ok(t
    .st
    .get(py)
    .fd
    .into_pyobject(py)?
    .into_any()
    .unbind()));
raw_getter!(get_loop, StreamTransport, |py, obj, t| Ok(t
    .st
    .get(py)
    .loop_
    .as_ref()
    .map_or_else(|| py.None(), |l| l.to_py(py).into_any())));
raw_getter!(get_protocol_attr, StreamTransport, |py, obj, t| Ok(opt(
    py,
    t.st.get(py).protocol.as_ref()
)));
raw_getter!(get_server, StreamTransport, |py, obj, t| Ok(opt(
    py,
    t.st.get(py).server()
)));
raw_getter!(get_empty_waiter, StreamTransport, |py, obj, t| Ok(opt(
    py,
    t.st.get(py).empty_waiter()
)));
raw_getter!(get_closing, StreamTransport, |py, obj, t| Ok(boolean(
    py,
    t.st.get(py).closing
)));
raw_getter!(get_paused, StreamTransport, |py, obj, t| Ok(boolean(
    py,
    t.st.get(py).paused
)));
raw_getter!(get_eof, StreamTransport, |py, obj, t| Ok(boolean(py, t.st.get(py).eof)));
raw_getter!(get_protocol_paused, StreamTransport, |py, obj, t| Ok(boolean(
    py,
    t.st.get(py).protocol_paused
)));
raw_getter!(get_protocol_connected, StreamTransport, |py, obj, t| Ok(boolean(
    py,
    t.st.get(py).protocol_connected
)));
raw_getter!(get_conn_lost, StreamTransport, |py, obj, t| Ok(t
    .st
    .get(py)
    .conn_lost
    .into_pyobject(py)?
    .into_any()
    .unbind()));
raw_getter!(get_high_water, StreamTransport, |py, obj, t| {
    let l = extra::limits(py, t)?;
    Ok(l.bind(py).get_item(1)?.unbind())
});
raw_getter!(get_low_water, StreamTransport, |py, obj, t| {
    let l = extra::limits(py, t)?;
    Ok(l.bind(py).get_item(0)?.unbind())
});
raw_getter!(get_extra, StreamTransport, |py, obj, t| extra::extra_dict(py, t));

/// The attribute table of the class (the datagram class uses it too,
/// without the stream-only entries).
pub(crate) fn getters() -> Vec<(&'static CStr, RawGetter)> {
    vec![
        (c"_sock", get_sock),
        (c"_sock_fd", get_sock_fd),
        (c"_loop", get_loop),
        (c"_protocol", get_protocol_attr),
        (c"_server", get_server),
        (c"_empty_waiter", get_empty_waiter),
        (c"_closing", get_closing),
        (c"_paused", get_paused),
        (c"_eof", get_eof),
        (c"_protocol_paused", get_protocol_paused),
        (c"_protocol_connected", get_protocol_connected),
        (c"_conn_lost", get_conn_lost),
        (c"_high_water", get_high_water),
        (c"_low_water", get_low_water),
        (c"_extra", get_extra),
    ]
}

raw_repr!(repr, StreamTransport, |py, obj, t| extra::repr(py, &obj, t));
