//! The coroutine object of the `sock_*` methods, and the methods themselves.
//!
//! Mirrors how an `async def sock_recv(...)` coroutine behaves: nothing runs
//! at call time but argument binding; the first step runs the body; a
//! finished coroutine cannot be reused; `throw` raises inside it; `close`
//! ends it; one never stepped warns when it is dropped.

use std::ffi::CStr;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyTuple;

use super::{start, unregister, OpKind, Phase, SockOp};
use crate::event_loop::EventLoop;
use crate::py::coroutine::{self, NativeCoroutine, Step};
use crate::py::fastcall::{fastcall_method, method_def, Call, KwName, RawMethod};
use crate::py::native_type::{raw_getter, RawClass, RawGetter, RawPayload};

static SSL_SOCKET: PyOnceLock<Option<Py<PyAny>>> = PyOnceLock::new();
static NBYTES: KwName = KwName::new("nbytes");

/// `base_events._check_ssl_socket(sock)` and, in debug mode, the
/// non-blocking check every `sock_*` method starts with.
pub(crate) fn check_socket(py: Python<'_>, lp: &Bound<'_, EventLoop>, sock: &Bound<'_, PyAny>) -> PyResult<()> {
    let ssl_socket = SSL_SOCKET.get_or_init(py, || {
        py.import("ssl")
            .and_then(|m| m.getattr("SSLSocket"))
            .ok()
            .map(Bound::unbind)
    });
    // A `socket.socket` exactly is no `SSLSocket` (its `__class__` is its
    // type): `isinstance` would only confirm it, after a failed subclass
    // check and a `__class__` lookup.
    let plain = crate::transports::socket_class(py).is_ok_and(|class| sock.get_type().is(class));
    if let Some(t) = ssl_socket.as_ref().filter(|_| !plain) {
        if sock.is_instance(t.bind(py))? {
            return Err(PyTypeError::new_err("Socket cannot be of type SSLSocket"));
        }
    }
    if lp.get().debug(py) {
        let timeout = sock.call_method0(pyo3::intern!(py, "gettimeout"))?;
        if !timeout.eq(0)? {
            return Err(PyValueError::new_err("the socket must be non-blocking"));
        }
    }
    Ok(())
}

fn payload<'a>(obj: &'a Bound<'_, PyAny>) -> &'a SockOp {
    // SAFETY: the coroutine protocol only reaches instances of our class.
    unsafe { SockOp::class().payload(obj.as_ptr()) }
}

impl NativeCoroutine for SockOp {
    fn send<'py>(obj: &Bound<'py, PyAny>, value: &Bound<'py, PyAny>) -> PyResult<Step<'py>> {
        let py = obj.py();
        let op = payload(obj);
        let (phase, fut) = {
            let st = op.st.get(py);
            (st.phase, st.fut.as_ref().map(|f| f.clone_ref(py)))
        };
        match phase {
            Phase::Init => {
                if !value.is_none() {
                    return Err(PyTypeError::new_err(
                        "can't send non-None value to a just-started coroutine",
                    ));
                }
                let res = start(obj, op);
                match res {
                    Ok(Ok(v)) => {
                        finish(py, op);
                        Ok(Step::Return(v))
                    }
                    Ok(Err(fut)) => {
                        fut.setattr(pyo3::intern!(py, "_asyncio_future_blocking"), true)?;
                        Ok(Step::Yield(fut))
                    }
                    Err(e) => {
                        finish(py, op);
                        Err(e)
                    }
                }
            }
            Phase::Waiting => {
                let Some(fut) = fut else {
                    finish(py, op);
                    return Err(PyRuntimeError::new_err("await wasn't used with future"));
                };
                let fut = fut.bind(py);
                let done = fut.call_method0(pyo3::intern!(py, "done"))?.is_truthy()?;
                // Completed, or cancelled: the watcher goes (`_sock_read_done`).
                unregister(py, obj, op)?;
                finish(py, op);
                if !done {
                    return Err(PyRuntimeError::new_err("await wasn't used with future"));
                }
                fut.call_method0(pyo3::intern!(py, "result")).map(Step::Return)
            }
            Phase::Done => Err(PyRuntimeError::new_err("cannot reuse already awaited coroutine")),
        }
    }

    fn throw<'py>(obj: &Bound<'py, PyAny>, exc: Bound<'py, PyAny>) -> PyResult<Step<'py>> {
        let py = obj.py();
        let op = payload(obj);
        if op.st.get(py).phase == Phase::Waiting {
            super::update_filepos(op, py);
            unregister(py, obj, op)?;
        }
        finish(py, op);
        Err(PyErr::from_value(exc))
    }

    fn close(obj: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = obj.py();
        let op = payload(obj);
        if op.st.get(py).phase == Phase::Waiting {
            unregister(py, obj, op)?;
        }
        finish(py, op);
        Ok(())
    }
}

/// The coroutine is over: drop everything but what `repr` needs.
fn finish(py: Python<'_>, op: &SockOp) {
    let dropped = {
        let mut st = op.st.get_mut(py);
        st.phase = Phase::Done;
        (st.fut.take(), st.sock.take(), st.loop_.take())
    };
    drop(dropped);
}

/// `__del__`: a coroutine never stepped warns, as Python's do; a waiting
/// one (only reachable through a cycle) stops waiting.
pub(crate) fn finalize(obj: &Bound<'_, PyAny>) {
    let py = obj.py();
    let op = payload(obj);
    let phase = match op.st.try_get() {
        Some(st) => st.phase,
        None => return,
    };
    match phase {
        Phase::Init => {
            let warned = py
                .import("warnings")
                .and_then(|w| w.call_method1("_warn_unawaited_coroutine", (obj,)));
            if let Err(e) = warned {
                e.write_unraisable(py, Some(obj));
            }
            finish(py, op);
        }
        Phase::Waiting => {
            if let Err(e) = unregister(py, obj, op) {
                e.write_unraisable(py, Some(obj));
            }
            finish(py, op);
        }
        Phase::Done => {}
    }
}

fn me<'a, 'py>(c: &'a Call<'_, 'py>) -> &'a Bound<'py, PyAny> {
    &c.slf
}

fastcall_method!(co_send, positional "coroutine.send", ["value"], |c| {
    c.at_most(1)?;
    let r = coroutine::method_send::<SockOp>(me(&c), &c.arg(0));
    // SAFETY: a new reference, or NULL with an exception set.
    unsafe { raw_result(c.py, r) }
});

fastcall_method!(co_throw, positional "coroutine.throw", ["typ"], |c| {
    c.at_most(3)?;
    let r = coroutine::method_throw::<SockOp>(me(&c), &c.arg(0), c.opt(1), c.opt(2));
    // SAFETY: as above.
    unsafe { raw_result(c.py, r) }
});

fastcall_method!(co_close, positional "coroutine.close", [], |c| {
    c.no_arguments()?;
    <SockOp as NativeCoroutine>::close(me(&c))?;
    Ok(c.py.None())
});

/// A raw result (new reference or NULL + exception) as a PyResult.
///
/// # Safety
/// `r` must follow the C API convention.
unsafe fn raw_result(py: Python<'_>, r: *mut ffi::PyObject) -> PyResult<Py<PyAny>> {
    if r.is_null() {
        Err(PyErr::fetch(py))
    } else {
        // SAFETY: a new, non-null reference per the contract.
        Ok(unsafe { Bound::from_owned_ptr(py, r) }.unbind())
    }
}

raw_getter!(get_qualname, SockOp, |py, obj, t| Ok(qualname(py, t)
    .into_pyobject(py)?
    .into_any()
    .unbind()));
raw_getter!(get_name, SockOp, |py, obj, t| {
    let q = qualname(py, t);
    let name = q.rsplit('.').next().unwrap_or(q);
    Ok(name.into_pyobject(py)?.into_any().unbind())
});
raw_getter!(get_running, SockOp, |py, obj, t| Ok(pyo3::types::PyBool::new(
    py, false
)
.to_owned()
.into_any()
.unbind()));
raw_getter!(get_await, SockOp, |py, obj, t| Ok(t
    .st
    .get(py)
    .fut
    .as_ref()
    .map_or_else(|| py.None(), |f| f.to_py(py))));
raw_getter!(get_none, SockOp, |py, obj, t| Ok(py.None()));
raw_getter!(get_suspended, SockOp, |py, obj, t| {
    let waiting = t.st.get(py).phase == Phase::Waiting;
    Ok(pyo3::types::PyBool::new(py, waiting).to_owned().into_any().unbind())
});

fn qualname(py: Python<'_>, t: &SockOp) -> &'static str {
    t.st.get(py)
        .kind
        .as_ref()
        .map_or("BaseSelectorEventLoop.sock_op", OpKind::qualname)
}

/// Create the coroutine class (once, at import).
pub(crate) fn init_class(py: Python<'_>) -> PyResult<Bound<'_, pyo3::types::PyType>> {
    let bases = PyTuple::new(py, [py.get_type::<pyo3::types::PyAny>()])?;
    let methods: [(&'static CStr, RawMethod, &'static CStr); 3] = [
        (
            c"send",
            co_send,
            c"send(arg) -> send 'arg' into coroutine,\nreturn next iterated value or raise StopIteration.",
        ),
        (
            c"throw",
            co_throw,
            c"throw(value)\nthrow(type[,value[,traceback]])\n\nRaise exception in coroutine.",
        ),
        (c"close", co_close, c"close() -> raise GeneratorExit inside coroutine."),
    ];
    let getters: Vec<(&'static CStr, RawGetter)> = vec![
        (c"__qualname__", get_qualname),
        (c"__name__", get_name),
        (c"cr_running", get_running),
        (c"cr_await", get_await),
        (c"cr_frame", get_none),
        (c"cr_code", get_none),
        (c"cr_origin", get_none),
        (c"cr_suspended", get_suspended),
    ];
    let class = RawClass::<SockOp>::create(
        py,
        c"ferroloop._ferroloop._SockCoroutine",
        c"The coroutine of a sock_* method (native).",
        &bases,
        methods.iter().map(|&(n, f, d)| method_def(n, f, d)).collect(),
        &getters,
        None,
        &coroutine::slots::<SockOp>(),
        crate::py::native_type::ClassOpts::default(),
    )?;
    let ty = class.type_object(py).clone();
    super::set_class(class);
    Ok(ty)
}

fn new<'py>(c: &Call<'_, 'py>, sock: &Bound<'py, PyAny>, kind: OpKind) -> PyResult<Py<PyAny>> {
    Ok(super::new_op(&c.slf, sock, kind)?.unbind())
}

fn held(b: Bound<'_, PyAny>) -> crate::py::held::Held<PyAny> {
    crate::py::held::Held::new(b.unbind())
}

fastcall_method!(sock_recv, "BaseSelectorEventLoop.sock_recv", ["sock", "n"], |c| {
    c.at_most(2)?;
    new(&c, &c.arg(0), OpKind::Recv { n: held(c.arg(1)) })
});

fastcall_method!(
    sock_recv_into,
    "BaseSelectorEventLoop.sock_recv_into",
    ["sock", "buf"],
    |c| {
        c.at_most(2)?;
        new(&c, &c.arg(0), OpKind::RecvInto { buf: held(c.arg(1)) })
    }
);

fastcall_method!(
    sock_recvfrom,
    "BaseSelectorEventLoop.sock_recvfrom",
    ["sock", "bufsize"],
    |c| {
        c.at_most(2)?;
        new(
            &c,
            &c.arg(0),
            OpKind::RecvFrom {
                bufsize: held(c.arg(1)),
            },
        )
    }
);

fastcall_method!(
    sock_recvfrom_into,
    "BaseSelectorEventLoop.sock_recvfrom_into",
    ["sock", "buf"],
    ["nbytes"],
    |c| {
        let nbytes = match c.take_kw(&NBYTES) {
            Some(_) if c.pos.len() > 2 => {
                return Err(PyTypeError::new_err(
                    "BaseSelectorEventLoop.sock_recvfrom_into() got multiple values for argument 'nbytes'",
                ))
            }
            Some(n) => n,
            None => match c.opt(2) {
                Some(n) => n,
                None => 0i32.into_pyobject(c.py)?.into_any(),
            },
        };
        c.at_most(3)?;
        new(
            &c,
            &c.arg(0),
            OpKind::RecvFromInto {
                buf: held(c.arg(1)),
                nbytes: held(nbytes),
            },
        )
    }
);

fastcall_method!(
    sock_sendall,
    "BaseSelectorEventLoop.sock_sendall",
    ["sock", "data"],
    |c| {
        c.at_most(2)?;
        new(
            &c,
            &c.arg(0),
            OpKind::SendAll {
                data: held(c.arg(1)),
                view: None,
                pos: 0,
                py_state: None,
            },
        )
    }
);

fastcall_method!(
    sock_sendto,
    "BaseSelectorEventLoop.sock_sendto",
    ["sock", "data", "address"],
    |c| {
        c.at_most(3)?;
        new(
            &c,
            &c.arg(0),
            OpKind::SendTo {
                data: held(c.arg(1)),
                address: held(c.arg(2)),
            },
        )
    }
);

fastcall_method!(sock_accept, "BaseSelectorEventLoop.sock_accept", ["sock"], |c| {
    c.at_most(1)?;
    new(&c, &c.arg(0), OpKind::Accept)
});

/// The `sock_*` methods, installed on `EventLoop`.
pub(crate) fn methods_for_loop() -> Vec<(&'static CStr, RawMethod, &'static CStr)> {
    vec![
        (c"sock_recv", sock_recv, c"Receive data from the socket."),
        (
            c"sock_recv_into",
            sock_recv_into,
            c"Receive data from the socket into a buffer.",
        ),
        (
            c"sock_recvfrom",
            sock_recvfrom,
            c"Receive a datagram from a datagram socket.",
        ),
        (
            c"sock_recvfrom_into",
            sock_recvfrom_into,
            c"Receive a datagram into a buffer.",
        ),
        (c"sock_sendall", sock_sendall, c"Send data to the socket."),
        (c"sock_sendto", sock_sendto, c"Send a datagram to the address."),
        (c"sock_accept", sock_accept, c"Accept a connection."),
    ]
}
