//! A TLS connection's life in the native `SSLProtocol` (see `sslproto`):
//! `__init__`, the handshake's start and end, the shutdown steps and
//! `connection_lost`, each function named after the asyncio method it
//! stands for and doing what it does, in the same order, on the mirrored
//! attributes.
//!
//! These run once or a few times per connection, but as asyncio's Python
//! they were about 800 bytecodes per TLS connection (a server's handshake
//! row): more interpreter work per connection than uvloop's whole Cython
//! protocol. Cases that are rare and whose details are hard to mirror
//! exactly (debug mode's logging and timing, a handshake that failed, a
//! shutdown requested during the handshake, a state nobody assigns) call
//! asyncio's own method of the running Python on the same object, so what
//! they do is asyncio's, version for version.
//!
//! The timeout callbacks: asyncio 3.11 and 3.12 pass `call_later` a
//! `lambda: self._check_..._timeout()`, 3.13 the bound method. The lambda
//! is made here from asyncio's own code object, with `self` in its cell:
//! the same function object (name, qualname, module) asyncio's frame makes.

use pyo3::exceptions::{PyException, PyKeyboardInterrupt, PyRuntimeError, PySystemExit, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyDict, PyMemoryView, PyModule, PyString, PyType};

use super::sslproto::{
    field, names, state_code, store_app_state, store_state, store_state_coded, AppState, SslRecordPath, State,
};
use super::sslproto_io::{do_handshake, do_read, process_outgoing, ssl_target};
use crate::py::call::{call_method, closure_of};

/// `ferroloop._sslproto._SSLProtocolTransport`, given by `_install_ssl_protocol`.
static APP_TRANSPORT: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// The arguments of `SSLProtocol.__init__` (absent ones `None`).
pub(crate) struct InitArgs<'py> {
    pub loop_: Bound<'py, PyAny>,
    pub app_protocol: Bound<'py, PyAny>,
    pub sslcontext: Bound<'py, PyAny>,
    pub waiter: Bound<'py, PyAny>,
    pub server_side: Arg<'py>,
    pub server_hostname: Option<Bound<'py, PyAny>>,
    pub call_connection_made: Arg<'py>,
    pub ssl_handshake_timeout: Option<Bound<'py, PyAny>>,
    pub ssl_shutdown_timeout: Option<Bound<'py, PyAny>>,
}

/// An argument with a default other than `None`: whether it was given (a
/// `None` given is kept, as Python keeps it).
pub(crate) enum Arg<'py> {
    Absent,
    Given(Bound<'py, PyAny>),
}

impl<'a, 'py> FromPyObject<'a, 'py> for Arg<'py> {
    type Error = PyErr;

    fn extract(obj: pyo3::Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        Ok(Self::Given(obj.to_owned()))
    }
}

/// asyncio's own `SSLProtocol.<name>(self, *args)`.
fn asyncio_method<'py>(
    p: &Bound<'py, SslRecordPath>,
    name: &Bound<'py, PyString>,
    args: &[&Bound<'py, PyAny>],
) -> PyResult<Bound<'py, PyAny>> {
    let py = p.py();
    let func = names(py)?.asyncio_cls.bind(py).getattr(name)?;
    let mut all = vec![p.as_any().clone()];
    all.extend(args.iter().map(|a| (*a).clone()));
    func.call1(pyo3::types::PyTuple::new(py, all)?)
}

fn current_state(p: &Bound<'_, SslRecordPath>) -> State {
    p.get().st.get(p.py()).code
}

fn debug(lp: &Bound<'_, PyAny>) -> PyResult<bool> {
    call_method(lp, intern!(lp.py(), "get_debug"), &[])?.is_truthy()
}

/// A timeout given as `None` becomes asyncio's constant; one `<= 0` is an error.
fn timeout<'py>(
    py: Python<'py>,
    given: Option<Bound<'py, PyAny>>,
    constant: &Bound<'py, PyString>,
    what: &str,
) -> PyResult<Bound<'py, PyAny>> {
    match given {
        Some(t) if !t.is_none() => {
            if t.le(0)? {
                return Err(PyValueError::new_err(format!(
                    "{what} should be a positive number, got {}",
                    t.str()?
                )));
            }
            Ok(t)
        }
        _ => names(py)?.constants.bind(py).getattr(constant),
    }
}

/// `add_flowcontrol_defaults(None, None, kb)`: `(kb * 1024, kb * 1024 // 4)`.
fn flow_defaults<'py>(
    py: Python<'py>,
    constant: &Bound<'py, PyString>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let kb = names(py)?.constants.bind(py).getattr(constant)?;
    let hi = kb.mul(1024)?;
    let lo = hi.floor_div(4)?;
    Ok((hi, lo))
}

/// `SSLProtocol.__init__`.
pub(crate) fn init(p: &Bound<'_, SslRecordPath>, a: InitArgs<'_>) -> PyResult<()> {
    let py = p.py();
    let n = names(py)?;
    // `bytearray(self.max_size)` while no buffer exists is an empty one
    // (see the `max_size` getter): the first `get_buffer` makes the real one.
    let buffer = PyByteArray::new(py, &[]).into_any();
    let view = PyMemoryView::from(&buffer)?.into_any();
    let old = {
        let mut st = p.get().st.get_mut(py);
        [
            st.ssl_buffer.replace(buffer.unbind()),
            st.ssl_buffer_view.replace(view.unbind()),
        ]
    };
    drop(old);
    let handshake_timeout = timeout(
        py,
        a.ssl_handshake_timeout,
        intern!(py, "SSL_HANDSHAKE_TIMEOUT"),
        "ssl_handshake_timeout",
    )?;
    let shutdown_timeout = timeout(
        py,
        a.ssl_shutdown_timeout,
        intern!(py, "SSL_SHUTDOWN_TIMEOUT"),
        "ssl_shutdown_timeout",
    )?;
    // Absent: asyncio's defaults (`server_side=False`, `call_connection_made=True`).
    let server_side = match a.server_side {
        Arg::Given(v) => v,
        Arg::Absent => pyo3::types::PyBool::new(py, false).to_owned().into_any(),
    };
    let hostname_given = a.server_hostname.unwrap_or_else(|| py.None().into_bound(py));
    let mut sslcontext = a.sslcontext;
    if !sslcontext.is_truthy()? {
        sslcontext = n
            .module
            .bind(py)
            .getattr(intern!(py, "_create_transport_context"))?
            .call1((&server_side, &hostname_given))?;
    }
    let server_hostname = if hostname_given.is_truthy()? && !server_side.is_truthy()? {
        hostname_given
    } else {
        py.None().into_bound(py)
    };
    let extra = PyDict::new(py);
    extra.set_item(intern!(py, "sslcontext"), &sslcontext)?;
    let backlog = n.deque.bind(py).call0()?;
    let zero = 0u8.into_pyobject(py)?.into_any();
    let false_ = pyo3::types::PyBool::new(py, false).to_owned().into_any();
    let old = {
        let mut st = p.get().st.get_mut(py);
        [
            st.server_side.replace(server_side.clone().unbind()),
            st.server_hostname.replace(server_hostname.clone().unbind()),
            st.sslcontext.replace(sslcontext.clone().unbind()),
            st.extra.replace(extra.into_any().unbind()),
            st.write_backlog.replace(backlog.unbind()),
            st.write_buffer_size.replace(zero.clone().unbind()),
            st.waiter.replace(a.waiter.unbind()),
            st.loop_.replace(a.loop_.unbind()),
        ]
    };
    drop(old);
    set_app_protocol(p, a.app_protocol)?;
    let memory_bio = n.memory_bio.bind(py);
    let incoming = memory_bio.call0()?;
    let outgoing = memory_bio.call0()?;
    let none = py.None();
    let old = {
        let mut st = p.get().st.get_mut(py);
        [
            st.app_transport.replace(none.clone_ref(py)),
            st.app_transport_created.replace(false_.clone().unbind()),
            st.transport.replace(none.clone_ref(py)),
            st.ssl_handshake_timeout.replace(handshake_timeout.unbind()),
            st.ssl_shutdown_timeout.replace(shutdown_timeout.unbind()),
            st.incoming.replace(incoming.clone().unbind()),
            st.outgoing.replace(outgoing.clone().unbind()),
        ]
    };
    drop(old);
    store_state(p, n.states[0].bind(py).clone())?;
    let old = p.get().st.get_mut(py).conn_lost.replace(zero.clone().unbind());
    drop(old);
    let made = match &a.call_connection_made {
        Arg::Given(c) => c.is_truthy()?,
        Arg::Absent => true,
    };
    let app_state = if made { APP_INIT } else { APP_CON_MADE };
    store_app_state(p, n.app_states[app_state].bind(py).clone())?;
    let sslobj = super::sslobject::wrap_bio(&sslcontext, &incoming, &outgoing, &server_side, &server_hostname)?;
    p.setattr(intern!(py, "_sslobj"), sslobj)?;
    init_flow_control(p, &false_)?;
    get_app_transport(p)?;
    Ok(())
}

/// The flow-control attributes `__init__` sets (`_set_read_buffer_limits()`
/// and `_set_write_buffer_limits()` with their defaults among them).
fn init_flow_control(p: &Bound<'_, SslRecordPath>, false_: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = p.py();
    let (read_hi, read_lo) = flow_defaults(py, intern!(py, "FLOW_CONTROL_HIGH_WATER_SSL_READ"))?;
    let (write_hi, write_lo) = flow_defaults(py, intern!(py, "FLOW_CONTROL_HIGH_WATER_SSL_WRITE"))?;
    {
        let flag = || super::sslproto::Flag {
            obj: Some(false_.clone().unbind()),
            on: false,
        };
        let mut st = p.get().st.get_mut(py);
        drop(std::mem::replace(&mut st.ssl_writing_paused, flag()));
        drop(std::mem::replace(&mut st.app_reading_paused, flag()));
        drop(std::mem::replace(&mut st.ssl_reading_paused, flag()));
        drop(st.incoming_high_water.replace(read_hi.unbind()));
        drop(st.incoming_low_water.replace(read_lo.unbind()));
        drop(std::mem::replace(&mut st.eof_received, flag()));
        drop(std::mem::replace(&mut st.app_writing_paused, flag()));
        drop(st.outgoing_high_water.replace(write_hi.unbind()));
        drop(st.outgoing_low_water.replace(write_lo.unbind()));
    }
    Ok(())
}

/// `_set_app_protocol(app_protocol)`.
fn set_app_protocol(p: &Bound<'_, SslRecordPath>, app_protocol: Bound<'_, PyAny>) -> PyResult<()> {
    let py = p.py();
    let old = p
        .get()
        .st
        .get_mut(py)
        .app_protocol
        .replace(app_protocol.clone().unbind());
    drop(old);
    let buffered = crate::py::call::has_attr(&app_protocol, intern!(py, "get_buffer"))?
        && app_protocol.is_instance(names(py)?.buffered_protocol.bind(py))?;
    if buffered {
        p.setattr(
            intern!(py, "_app_protocol_get_buffer"),
            app_protocol.getattr(intern!(py, "get_buffer"))?,
        )?;
        p.setattr(
            intern!(py, "_app_protocol_buffer_updated"),
            app_protocol.getattr(intern!(py, "buffer_updated"))?,
        )?;
    }
    let value = pyo3::types::PyBool::new(py, buffered).to_owned().into_any().unbind();
    let old = std::mem::replace(
        &mut p.get().st.get_mut(py).app_protocol_is_buffer,
        super::sslproto::Flag {
            obj: Some(value),
            on: buffered,
        },
    );
    drop(old);
    Ok(())
}

/// `_get_app_transport()`.
pub(crate) fn get_app_transport<'py>(p: &Bound<'py, SslRecordPath>) -> PyResult<Bound<'py, PyAny>> {
    let py = p.py();
    let current = field(p, "_app_transport", |s| &s.app_transport)?;
    if !current.is_none() {
        return Ok(current);
    }
    if field(p, "_app_transport_created", |s| &s.app_transport_created)?.is_truthy()? {
        return Err(PyRuntimeError::new_err("Creating _SSLProtocolTransport twice"));
    }
    let cls = APP_TRANSPORT
        .get(py)
        .ok_or_else(|| PyRuntimeError::new_err("ferroloop: _install_ssl_protocol was not called"))?;
    let lp = field(p, "_loop", |s| &s.loop_)?;
    let transport = cls.bind(py).call1((lp, p))?;
    let true_ = pyo3::types::PyBool::new(py, true).to_owned().into_any().unbind();
    let old = {
        let mut st = p.get().st.get_mut(py);
        [
            st.app_transport.replace(transport.clone().unbind()),
            st.app_transport_created.replace(true_),
        ]
    };
    drop(old);
    Ok(transport)
}

/// `_set_state(new_state)`: the allowed transitions, else asyncio's RuntimeError.
pub(crate) fn set_state(p: &Bound<'_, SslRecordPath>, new_state: Bound<'_, PyAny>) -> PyResult<()> {
    let new = state_code(p.py(), &new_state)?;
    set_state_coded(p, new_state, new)
}

fn set_state_coded(p: &Bound<'_, SslRecordPath>, new_state: Bound<'_, PyAny>, new: State) -> PyResult<()> {
    let py = p.py();
    let (current, assigned) = {
        let st = p.get().st.get(py);
        (st.code, st.state.is_some())
    };
    if new == State::Other || current == State::Other || !assigned {
        // Compared with `==` by asyncio: its own method.
        return asyncio_method(p, intern!(py, "_set_state"), &[&new_state]).map(drop);
    }
    let allowed = matches!(
        (current, new),
        (_, State::Unwrapped)
            | (State::Unwrapped, State::DoHandshake)
            | (State::DoHandshake, State::Wrapped)
            | (State::Wrapped, State::Flushing)
            | (State::Flushing, State::Shutdown)
    );
    if allowed {
        store_state_coded(p, new_state, new);
        return Ok(());
    }
    let current = field(p, "_state", |s| &s.state)?;
    let msg = PyString::new(py, "cannot switch state from {} to {}").call_method1("format", (current, new_state))?;
    Err(PyRuntimeError::new_err(msg.unbind()))
}

/// `_set_state(SSLProtocolState.<member>)`, the member given by its index.
fn set_state_to(p: &Bound<'_, SslRecordPath>, index: usize) -> PyResult<()> {
    const CODES: [State; 5] = [
        State::Unwrapped,
        State::DoHandshake,
        State::Wrapped,
        State::Flushing,
        State::Shutdown,
    ];
    let py = p.py();
    let state = names(py)?.states[index].bind(py).clone();
    set_state_coded(p, state, CODES[index])
}

const APP_INIT: usize = 0;
const APP_CON_MADE: usize = 1;
const APP_EOF: usize = 2;
const APP_CON_LOST: usize = 3;

const UNWRAPPED: usize = 0;
const DO_HANDSHAKE: usize = 1;
const WRAPPED: usize = 2;
const FLUSHING: usize = 3;
const SHUTDOWN: usize = 4;

/// `_wakeup_waiter(exc=None)`.
pub(crate) fn wakeup_waiter(p: &Bound<'_, SslRecordPath>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
    let py = p.py();
    let waiter = field(p, "_waiter", |s| &s.waiter)?;
    if waiter.is_none() {
        return Ok(());
    }
    if !call_method(&waiter, intern!(py, "cancelled"), &[])?.is_truthy()? {
        match exc.filter(|e| !e.is_none()) {
            Some(exc) => call_method(&waiter, intern!(py, "set_exception"), &[&exc])?,
            None => call_method(&waiter, intern!(py, "set_result"), &[&py.None().into_bound(py)])?,
        };
    }
    let old = p.get().st.get_mut(py).waiter.replace(py.None());
    drop(old);
    Ok(())
}

fn is_exit(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py)
}

/// `_call_eof_received()`.
pub(crate) fn call_eof_received(p: &Bound<'_, SslRecordPath>) -> PyResult<()> {
    let py = p.py();
    let result = (|| {
        // `self._app_state == AppProtocolState.STATE_CON_MADE` (unassigned:
        // the AttributeError, caught below as asyncio's is).
        field(p, "_app_state", |s| &s.app_state)?;
        if p.get().st.get(py).app_code != AppState::ConMade {
            return Ok(());
        }
        store_app_state(p, names(py)?.app_states[APP_EOF].bind(py).clone())?;
        let app = field(p, "_app_protocol", |s| &s.app_protocol)?;
        let keep_open = call_method(&app, intern!(py, "eof_received"), &[])?;
        if keep_open.is_truthy()? {
            let logger = names(py)?.module.bind(py).getattr(intern!(py, "logger"))?;
            logger.call_method1(
                intern!(py, "warning"),
                ("returning true from eof_received() has no effect when using ssl",),
            )?;
        }
        Ok(())
    })();
    match result {
        Err(err) if !is_exit(py, &err) => {
            let exc = err.into_value(py).into_bound(py).into_any();
            let msg = PyString::new(py, "Error calling eof_received()").into_any();
            call_method(p.as_any(), intern!(py, "_fatal_error"), &[&exc, &msg]).map(drop)
        }
        other => other,
    }
}

/// `loop.call_later(delay, callback)` with the callback asyncio passes for
/// a timeout check: its lambda (3.11, 3.12) or the bound method (3.13).
fn call_timeout_check<'py>(
    p: &Bound<'py, SslRecordPath>,
    lp: &Bound<'py, PyAny>,
    delay: &Bound<'py, PyAny>,
    lambda: Option<&Py<PyAny>>,
    method: &Bound<'py, PyString>,
) -> PyResult<Py<PyAny>> {
    let py = p.py();
    let cb = match lambda {
        Some(code) => {
            let globals = names(py)?.module.bind(py).dict();
            closure_of(py, code.bind(py), globals.as_any(), p.as_any())?
        }
        None => p.getattr(method)?,
    };
    Ok(call_method(lp, intern!(py, "call_later"), &[delay, &cb])?.unbind())
}

/// `_start_handshake()`.
pub(crate) fn start_handshake(p: &Bound<'_, SslRecordPath>) -> PyResult<()> {
    let py = p.py();
    let lp = field(p, "_loop", |s| &s.loop_)?;
    if debug(&lp)? {
        return asyncio_method(p, intern!(py, "_start_handshake"), &[]).map(drop);
    }
    let old = p.get().st.get_mut(py).handshake_start_time.replace(py.None());
    drop(old);
    set_state_to(p, DO_HANDSHAKE)?;
    let delay = field(p, "_ssl_handshake_timeout", |s| &s.ssl_handshake_timeout)?;
    let lambda = names(py)?.handshake_lambda.as_ref();
    let handle = call_timeout_check(p, &lp, &delay, lambda, intern!(py, "_check_handshake_timeout"))?;
    let old = p.get().st.get_mut(py).handshake_timeout_handle.replace(handle);
    drop(old);
    do_handshake(p)
}

/// `self.<handle>.cancel(); self.<handle> = None` if the handle is set
/// (`truthy`: asyncio tests the handle's truth, else `is not None`).
fn cancel_handle(
    p: &Bound<'_, SslRecordPath>,
    get: impl Fn(&mut super::sslproto::TlsState) -> &mut Option<Py<PyAny>>,
    truthy: bool,
) -> PyResult<()> {
    let py = p.py();
    let handle = get(&mut p.get().st.get_mut(py)).as_ref().map(|h| h.clone_ref(py));
    let Some(handle) = handle.map(|h| h.into_bound(py)) else {
        return Ok(());
    };
    let set = if truthy { handle.is_truthy()? } else { !handle.is_none() };
    if set {
        call_method(&handle, intern!(py, "cancel"), &[])?;
        let old = get(&mut p.get().st.get_mut(py)).replace(py.None());
        drop(old);
    }
    Ok(())
}

/// `_on_handshake_complete(handshake_exc)`.
pub(crate) fn on_handshake_complete(p: &Bound<'_, SslRecordPath>, handshake_exc: Bound<'_, PyAny>) -> PyResult<()> {
    let py = p.py();
    let lp = field(p, "_loop", |s| &s.loop_)?;
    if !handshake_exc.is_none() || debug(&lp)? {
        // A failed handshake (raised in asyncio's frame, so its traceback
        // is asyncio's) and debug mode's timing log: asyncio's method.
        return asyncio_method(p, intern!(py, "_on_handshake_complete"), &[&handshake_exc]).map(drop);
    }
    cancel_handle(p, |s| &mut s.handshake_timeout_handle, false)?;
    let sslobj = field(p, "_sslobj", |s| &s.sslobj)?;
    let (target, exact) = ssl_target(p)?;
    // `SSLObject.getpeercert()`, `cipher()` and `compression()` only
    // forward to its `_sslobj`.
    let on = if exact { &target } else { &sslobj };
    let peercert = (|| {
        set_state_to(p, WRAPPED)?;
        call_method(on, intern!(py, "getpeercert"), &[])
    })();
    let peercert = match peercert {
        Ok(c) => c,
        Err(err) if err.is_instance_of::<PyException>(py) => {
            let exc = err.into_value(py).into_bound(py).into_any();
            set_state_to(p, UNWRAPPED)?;
            let msg = if exc.is_instance(names(py)?.certificate_error.bind(py))? {
                "SSL handshake failed on verifying the certificate"
            } else {
                "SSL handshake failed"
            };
            let msg = PyString::new(py, msg).into_any();
            call_method(p.as_any(), intern!(py, "_fatal_error"), &[&exc, &msg])?;
            return wakeup_waiter(p, Some(exc));
        }
        Err(err) => return Err(err),
    };
    let cipher = call_method(on, intern!(py, "cipher"), &[])?;
    let compression = call_method(on, intern!(py, "compression"), &[])?;
    let extra = field(p, "_extra", |s| &s.extra)?;
    let update = PyDict::new(py);
    update.set_item(intern!(py, "peercert"), peercert)?;
    update.set_item(intern!(py, "cipher"), cipher)?;
    update.set_item(intern!(py, "compression"), compression)?;
    update.set_item(intern!(py, "ssl_object"), &sslobj)?;
    if extra.is_exact_instance_of::<PyDict>() {
        extra.cast::<PyDict>()?.update(update.as_mapping())?;
    } else {
        extra.call_method(intern!(py, "update"), (), Some(&update))?;
    }
    if p.get().st.get(py).app_code == AppState::Init && p.get().st.get(py).app_state.is_some() {
        store_app_state(p, names(py)?.app_states[APP_CON_MADE].bind(py).clone())?;
        let app = field(p, "_app_protocol", |s| &s.app_protocol)?;
        let transport = get_app_transport(p)?;
        call_method(&app, intern!(py, "connection_made"), &[&transport])?;
    } else {
        field(p, "_app_state", |s| &s.app_state)?;
    }
    wakeup_waiter(p, None)?;
    do_read(p)
}

/// `connection_lost(exc)`.
pub(crate) fn connection_lost(p: &Bound<'_, SslRecordPath>, exc: Bound<'_, PyAny>) -> PyResult<()> {
    let py = p.py();
    call_method(
        &field(p, "_write_backlog", |s| &s.write_backlog)?,
        intern!(py, "clear"),
        &[],
    )?;
    call_method(&field(p, "_outgoing", |s| &s.outgoing)?, intern!(py, "read"), &[])?;
    let lost = field(p, "_conn_lost", |s| &s.conn_lost)?.add(1)?;
    let old = p.get().st.get_mut(py).conn_lost.replace(lost.unbind());
    drop(old);
    let app_transport = field(p, "_app_transport", |s| &s.app_transport)?;
    if !app_transport.is_none() {
        app_transport.setattr(intern!(py, "_closed"), true)?;
    }
    field(p, "_state", |s| &s.state)?;
    if current_state(p) != State::DoHandshake {
        field(p, "_app_state", |s| &s.app_state)?;
        let app = p.get().st.get(py).app_code;
        if matches!(app, AppState::ConMade | AppState::Eof) {
            store_app_state(p, names(py)?.app_states[APP_CON_LOST].bind(py).clone())?;
            let lp = field(p, "_loop", |s| &s.loop_)?;
            let cb = field(p, "_app_protocol", |s| &s.app_protocol)?.getattr(intern!(py, "connection_lost"))?;
            call_method(&lp, intern!(py, "call_soon"), &[&cb, &exc])?;
        }
    }
    set_state_to(p, UNWRAPPED)?;
    let old = {
        let mut st = p.get().st.get_mut(py);
        (
            st.transport.replace(py.None()),
            st.app_transport.replace(py.None()),
            st.app_protocol.replace(py.None()),
        )
    };
    drop(old);
    wakeup_waiter(p, Some(exc))?;
    cancel_handle(p, |s| &mut s.shutdown_timeout_handle, true)?;
    cancel_handle(p, |s| &mut s.handshake_timeout_handle, true)
}

/// `_start_shutdown()`.
pub(crate) fn start_shutdown(p: &Bound<'_, SslRecordPath>) -> PyResult<()> {
    let py = p.py();
    match current_state(p) {
        State::Flushing | State::Shutdown | State::Unwrapped => return Ok(()),
        State::Wrapped => {}
        // The handshake's `_abort` differs between versions; an unknown
        // state is compared with `==`: asyncio's method.
        State::DoHandshake | State::Other => {
            return asyncio_method(p, intern!(py, "_start_shutdown"), &[]).map(drop);
        }
    }
    let app_transport = field(p, "_app_transport", |s| &s.app_transport)?;
    if !app_transport.is_none() {
        app_transport.setattr(intern!(py, "_closed"), true)?;
    }
    set_state_to(p, FLUSHING)?;
    let lp = field(p, "_loop", |s| &s.loop_)?;
    let delay = field(p, "_ssl_shutdown_timeout", |s| &s.ssl_shutdown_timeout)?;
    let lambda = names(py)?.shutdown_lambda.as_ref();
    let handle = call_timeout_check(p, &lp, &delay, lambda, intern!(py, "_check_shutdown_timeout"))?;
    let old = p.get().st.get_mut(py).shutdown_timeout_handle.replace(handle);
    drop(old);
    do_flush(p)
}

/// `_do_flush()`.
pub(crate) fn do_flush(p: &Bound<'_, SslRecordPath>) -> PyResult<()> {
    do_read(p)?;
    set_state_to(p, SHUTDOWN)?;
    do_shutdown(p)
}

/// `_do_shutdown()`.
pub(crate) fn do_shutdown(p: &Bound<'_, SslRecordPath>) -> PyResult<()> {
    let py = p.py();
    let result: PyResult<()> = (|| {
        if !p.get().st.get(py).eof_received.on {
            field(p, "_eof_received", |s| &s.eof_received.obj)?;
            let sslobj = field(p, "_sslobj", |s| &s.sslobj)?;
            let (target, exact) = ssl_target(p)?;
            if exact {
                // `SSLObject.unwrap()` is `self._sslobj.shutdown()`.
                call_method(&target, intern!(py, "shutdown"), &[])?;
            } else {
                call_method(&sslobj, intern!(py, "unwrap"), &[])?;
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => {
            process_outgoing(p)?;
            call_eof_received(p)?;
            on_shutdown_complete(p, py.None().into_bound(py))
        }
        Err(err) if err.get_type(py).is_subclass(names(py)?.again.bind(py))? => process_outgoing(p),
        Err(err) if err.get_type(py).is_subclass(names(py)?.ssl_error.bind(py))? => {
            let exc = err.into_value(py).into_bound(py).into_any();
            on_shutdown_complete(p, exc)
        }
        Err(err) => Err(err),
    }
}

/// `_on_shutdown_complete(shutdown_exc)`.
pub(crate) fn on_shutdown_complete(p: &Bound<'_, SslRecordPath>, shutdown_exc: Bound<'_, PyAny>) -> PyResult<()> {
    let py = p.py();
    cancel_handle(p, |s| &mut s.shutdown_timeout_handle, false)?;
    if shutdown_exc.is_truthy()? {
        call_method(p.as_any(), intern!(py, "_fatal_error"), &[&shutdown_exc]).map(drop)
    } else {
        let lp = field(p, "_loop", |s| &s.loop_)?;
        let close = field(p, "_transport", |s| &s.transport)?.getattr(intern!(py, "close"))?;
        call_method(&lp, intern!(py, "call_soon"), &[&close]).map(drop)
    }
}

/// Give `ferroloop._sslproto` its application transport class (made by
/// `_get_app_transport`).
#[pyfunction]
fn _install_ssl_protocol(transport_cls: &Bound<'_, PyType>) -> PyResult<()> {
    let py = transport_cls.py();
    APP_TRANSPORT
        .set(py, transport_cls.clone().unbind())
        .map_err(|_| PyRuntimeError::new_err("ferroloop: the TLS application transport class is already set"))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_install_ssl_protocol, m)?)
}
