//! The record path of asyncio's `SSLProtocol` (`asyncio.sslproto`), in Rust.
//!
//! `ferroloop._sslproto.SSLProtocol` is asyncio's own class on the running
//! Python with [`SslRecordPath`] as its first base. That base
//! - replaces `get_buffer` and `buffer_updated` (ciphertext in, plaintext to
//!   the application protocol); `_SSLProtocolTransport.write` (plaintext in,
//!   ciphertext to the socket transport) is installed on asyncio's
//!   application transport class the same way (`sslproto_io`);
//! - holds the attributes those paths read and write per record
//!   (`_state`, `_incoming`, `_outgoing`, `_sslobj`, the flow-control flags
//!   and marks, `_write_backlog`, `_write_buffer_size`, `_transport`,
//!   `_app_protocol`, the read buffer) as data descriptors, so asyncio's
//!   Python code reads and assigns them as before while the native path
//!   reads them without a dictionary lookup.
//!
//! The native functions (`sslproto_io`) do what `buffer_updated`,
//! `_do_read`, `_do_read__copied`, `_write_appdata`, `_do_write`,
//! `_process_outgoing`, `_control_app_writing` and `_control_ssl_reading` do,
//! in the same order, through the same `ssl.SSLObject` and `ssl.MemoryBIO`
//! objects — one native call per batch of records instead of a dozen Python
//! frames. Everything else (handshake, shutdown, timeouts, errors,
//! flow-control transitions, buffered application protocols) is asyncio's
//! Python, called at the point asyncio's code would call it.
//!
//! One thing asyncio does is skipped: the `read()` that ends each batch by
//! raising `SSLWantReadError` (an exception object per batch).
//! `ferroloop_core::tls_records` follows the TLS record framing of the bytes
//! written into the incoming BIO; when no complete record is left unread and
//! the `SSLObject` holds no plaintext, that `read()` could only raise
//! `SSLWantReadError`, so the batch ends as if it had. A byte stream that
//! does not look like TLS records turns the tracking off for the
//! connection: every `read()` is then made, as asyncio makes it.

use pyo3::exceptions::PyAttributeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use super::{sslproto_io, sslproto_life};
use crate::py::cell::GilCell;
use crate::py::gc::{self, GcRefs, GcStop, Visitor};
use ferroloop_core::tls_records::TlsRecords;

/// The asyncio and ssl objects the fast path compares against.
pub(crate) struct Names {
    pub states: [Py<PyAny>; 5],
    /// `sslproto.SSLAgainErrors`.
    pub again: Py<PyAny>,
    /// `ssl.SSLError`.
    pub ssl_error: Py<PyAny>,
    /// `ssl.SSLObject`: its `_sslobj` is called directly when the object is exactly one.
    pub sslobject: Py<PyAny>,
    /// `SSLProtocol.max_size`.
    pub max_size: Py<PyAny>,
    /// `AppProtocolState`'s members, in `AppState` order.
    pub app_states: [Py<PyAny>; 4],
    /// asyncio's `SSLProtocol`: its methods serve every case the native ones leave.
    pub asyncio_cls: Py<PyAny>,
    /// The `asyncio.sslproto` module (its `logger`, `_create_transport_context`, globals).
    pub module: Py<PyModule>,
    /// `asyncio.constants`.
    pub constants: Py<PyAny>,
    /// `ssl.MemoryBIO`, `ssl.CertificateError`, `protocols.BufferedProtocol`.
    pub memory_bio: Py<PyAny>,
    pub certificate_error: Py<PyAny>,
    pub buffered_protocol: Py<PyAny>,
    /// `collections.deque`.
    pub deque: Py<PyAny>,
    /// The code of the `lambda: self._check_handshake_timeout()` (and of
    /// the shutdown one) that `_start_handshake` (`_start_shutdown`) passes
    /// to `call_later` on 3.11 and 3.12; `None` where asyncio passes the
    /// bound method (3.13).
    pub handshake_lambda: Option<Py<PyAny>>,
    pub shutdown_lambda: Option<Py<PyAny>>,
}

/// The `lambda` made inside asyncio's `SSLProtocol.<method>`, if it makes one.
fn lambda_code(cls: &Bound<'_, PyAny>, method: &str) -> PyResult<Option<Py<PyAny>>> {
    let consts = cls.getattr(method)?.getattr("__code__")?.getattr("co_consts")?;
    for c in consts.try_iter()? {
        let c = c?;
        if c.hasattr("co_name")? && c.getattr("co_name")?.extract::<String>()? == "<lambda>" {
            let free: Vec<String> = c.getattr("co_freevars")?.extract()?;
            if free == ["self"] {
                return Ok(Some(c.unbind()));
            }
        }
    }
    Ok(None)
}

static NAMES: PyOnceLock<Names> = PyOnceLock::new();

pub(crate) fn names(py: Python<'_>) -> PyResult<&Names> {
    NAMES.get_or_try_init(py, || {
        let sslproto = py.import("asyncio.sslproto")?;
        let state = sslproto.getattr("SSLProtocolState")?;
        let get = |n: &str| state.getattr(n).map(Bound::unbind);
        Ok(Names {
            states: [
                get("UNWRAPPED")?,
                get("DO_HANDSHAKE")?,
                get("WRAPPED")?,
                get("FLUSHING")?,
                get("SHUTDOWN")?,
            ],
            again: sslproto.getattr("SSLAgainErrors")?.unbind(),
            ssl_error: py.import("ssl")?.getattr("SSLError")?.unbind(),
            sslobject: py.import("ssl")?.getattr("SSLObject")?.unbind(),
            max_size: sslproto.getattr("SSLProtocol")?.getattr("max_size")?.unbind(),
            app_states: {
                let app = sslproto.getattr("AppProtocolState")?;
                let get = |n: &str| app.getattr(n).map(Bound::unbind);
                [
                    get("STATE_INIT")?,
                    get("STATE_CON_MADE")?,
                    get("STATE_EOF")?,
                    get("STATE_CON_LOST")?,
                ]
            },
            asyncio_cls: sslproto.getattr("SSLProtocol")?.unbind(),
            module: sslproto.clone().unbind(),
            constants: py.import("asyncio.constants")?.into_any().unbind(),
            memory_bio: py.import("ssl")?.getattr("MemoryBIO")?.unbind(),
            certificate_error: py.import("ssl")?.getattr("CertificateError")?.unbind(),
            buffered_protocol: py.import("asyncio.protocols")?.getattr("BufferedProtocol")?.unbind(),
            deque: py.import("collections")?.getattr("deque")?.unbind(),
            handshake_lambda: lambda_code(&sslproto.getattr("SSLProtocol")?, "_start_handshake")?,
            shutdown_lambda: lambda_code(&sslproto.getattr("SSLProtocol")?, "_start_shutdown")?,
        })
    })
}

/// `SSLProtocolState`, as a code (`Other` for anything else assigned).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) enum State {
    #[default]
    Other,
    Unwrapped,
    DoHandshake,
    Wrapped,
    Flushing,
    Shutdown,
}

/// `AppProtocolState`, as a code (`Other` for anything else assigned).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) enum AppState {
    #[default]
    Other,
    Init,
    ConMade,
    Eof,
    ConLost,
}

/// An attribute holding a flag: the object assigned and its truth value.
#[derive(Default, Debug)]
pub(crate) struct Flag {
    pub obj: Option<Py<PyAny>>,
    pub on: bool,
}

/// The mirrored attributes (`None`: not assigned yet; Python's `None` is
/// `Some(None)`). Deleting one raises, as for a read-only slot.
#[derive(Default, Debug)]
pub(crate) struct TlsState {
    pub records: TlsRecords,
    pub state: Option<Py<PyAny>>,
    pub code: State,
    pub incoming: Option<Py<PyAny>>,
    pub outgoing: Option<Py<PyAny>>,
    pub sslobj: Option<Py<PyAny>>,
    /// What `read`/`write`/`pending` are called on (from `sslobj`, on first
    /// use), and whether `sslobj` is exactly an `ssl.SSLObject`.
    pub target: Option<(Py<PyAny>, bool)>,
    pub ssl_buffer: Option<Py<PyAny>>,
    pub ssl_buffer_view: Option<Py<PyAny>>,
    pub write_backlog: Option<Py<PyAny>>,
    pub write_buffer_size: Option<Py<PyAny>>,
    pub transport: Option<Py<PyAny>>,
    pub app_protocol: Option<Py<PyAny>>,
    pub outgoing_high_water: Option<Py<PyAny>>,
    pub outgoing_low_water: Option<Py<PyAny>>,
    pub incoming_high_water: Option<Py<PyAny>>,
    pub incoming_low_water: Option<Py<PyAny>>,
    pub app_reading_paused: Flag,
    pub app_protocol_is_buffer: Flag,
    pub ssl_writing_paused: Flag,
    pub app_writing_paused: Flag,
    pub ssl_reading_paused: Flag,
    /// `max_size` if assigned on the instance (else asyncio's class attribute).
    pub max_size: Option<Py<PyAny>>,
    pub app_state: Option<Py<PyAny>>,
    pub app_code: AppState,
    pub eof_received: Flag,
    pub server_side: Option<Py<PyAny>>,
    pub server_hostname: Option<Py<PyAny>>,
    pub sslcontext: Option<Py<PyAny>>,
    pub extra: Option<Py<PyAny>>,
    pub waiter: Option<Py<PyAny>>,
    pub loop_: Option<Py<PyAny>>,
    pub app_transport: Option<Py<PyAny>>,
    pub app_transport_created: Option<Py<PyAny>>,
    pub ssl_handshake_timeout: Option<Py<PyAny>>,
    pub ssl_shutdown_timeout: Option<Py<PyAny>>,
    pub conn_lost: Option<Py<PyAny>>,
    /// Class attributes on asyncio's `SSLProtocol` (`None` until assigned).
    pub handshake_start_time: Option<Py<PyAny>>,
    pub handshake_timeout_handle: Option<Py<PyAny>>,
    pub shutdown_timeout_handle: Option<Py<PyAny>>,
}

impl GcRefs for TlsState {
    fn visit_refs(&self, v: &Visitor<'_, '_>) -> Result<(), GcStop> {
        for r in [
            &self.state,
            &self.incoming,
            &self.outgoing,
            &self.sslobj,
            &self.ssl_buffer,
            &self.ssl_buffer_view,
            &self.write_backlog,
            &self.write_buffer_size,
            &self.transport,
            &self.app_protocol,
            &self.outgoing_high_water,
            &self.outgoing_low_water,
            &self.incoming_high_water,
            &self.incoming_low_water,
            &self.app_reading_paused.obj,
            &self.app_protocol_is_buffer.obj,
            &self.ssl_writing_paused.obj,
            &self.app_writing_paused.obj,
            &self.ssl_reading_paused.obj,
            &self.max_size,
            &self.app_state,
            &self.eof_received.obj,
            &self.server_side,
            &self.server_hostname,
            &self.sslcontext,
            &self.extra,
            &self.waiter,
            &self.loop_,
            &self.app_transport,
            &self.app_transport_created,
            &self.ssl_handshake_timeout,
            &self.ssl_shutdown_timeout,
            &self.conn_lost,
            &self.handshake_start_time,
            &self.handshake_timeout_handle,
            &self.shutdown_timeout_handle,
        ] {
            v.visit(r.as_ref())?;
        }
        v.visit(self.target.as_ref().map(|(t, _)| t))
    }
}

/// The native first base of `ferroloop._sslproto.SSLProtocol`.
#[pyclass(subclass, frozen, module = "ferroloop._ferroloop", name = "_SSLRecordPath")]
pub(crate) struct SslRecordPath {
    pub st: GilCell<TlsState>,
}

fn missing(slf: &Bound<'_, SslRecordPath>, name: &str) -> PyErr {
    let ty = slf
        .get_type()
        .name()
        .map_or_else(|_| "SSLProtocol".to_owned(), |n| n.to_string());
    PyAttributeError::new_err(format!("'{ty}' object has no attribute '{name}'"))
}

fn get_obj(
    slf: &Bound<'_, SslRecordPath>,
    name: &str,
    f: impl Fn(&TlsState) -> &Option<Py<PyAny>>,
) -> PyResult<Py<PyAny>> {
    let py = slf.py();
    let st = slf.get().st.get(py);
    f(&st)
        .as_ref()
        .map(|o| o.clone_ref(py))
        .ok_or_else(|| missing(slf, name))
}

fn truth(value: &Bound<'_, PyAny>) -> PyResult<bool> {
    value.is_truthy()
}

/// Generate the mirrored attributes' getters and setters, in the class's
/// one `#[pymethods]` block together with `extra`.
macro_rules! mirrored {
    (
        obj: [$(($oget:ident, $oset:ident, $oname:literal, $ofield:ident)),* $(,)?],
        flag: [$(($fget:ident, $fset:ident, $fname:literal, $ffield:ident)),* $(,)?],
        defaulted: [$(($dget:ident, $dset:ident, $dname:literal, $dfield:ident)),* $(,)?],
        extra: { $($extra:tt)* }
    ) => {
        #[pymethods]
        impl SslRecordPath {
            $(
                #[getter($oname)]
                fn $oget(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
                    get_obj(slf, $oname, |s| &s.$ofield)
                }
                #[setter($oname)]
                fn $oset(slf: &Bound<'_, Self>, value: Bound<'_, PyAny>) -> PyResult<()> {
                    let old = slf.get().st.get_mut(slf.py()).$ofield.replace(value.unbind());
                    drop(old);
                    Ok(())
                }
            )*
            $(
                #[getter($fname)]
                fn $fget(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
                    get_obj(slf, $fname, |s| &s.$ffield.obj)
                }
                #[setter($fname)]
                fn $fset(slf: &Bound<'_, Self>, value: Bound<'_, PyAny>) -> PyResult<()> {
                    let on = truth(&value)?;
                    let old = std::mem::replace(
                        &mut slf.get().st.get_mut(slf.py()).$ffield,
                        Flag { obj: Some(value.unbind()), on },
                    );
                    drop(old);
                    Ok(())
                }
            )*
            $(
                /// A class attribute of asyncio's (`None`) until assigned.
                #[getter($dname)]
                fn $dget(slf: &Bound<'_, Self>) -> Py<PyAny> {
                    let py = slf.py();
                    slf.get().st.get(py).$dfield.as_ref().map_or_else(|| py.None(), |o| o.clone_ref(py))
                }
                #[setter($dname)]
                fn $dset(slf: &Bound<'_, Self>, value: Bound<'_, PyAny>) {
                    let old = slf.get().st.get_mut(slf.py()).$dfield.replace(value.unbind());
                    drop(old);
                }
            )*
            $($extra)*
        }
    };
}

mirrored! {
    obj: [
        (get_incoming, set_incoming, "_incoming", incoming),
        (get_outgoing, set_outgoing, "_outgoing", outgoing),
        (get_ssl_buffer, set_ssl_buffer, "_ssl_buffer", ssl_buffer),
        (get_ssl_buffer_view, set_ssl_buffer_view, "_ssl_buffer_view", ssl_buffer_view),
        (get_write_backlog, set_write_backlog, "_write_backlog", write_backlog),
        (get_write_buffer_size, set_write_buffer_size, "_write_buffer_size", write_buffer_size),
        (get_transport, set_transport, "_transport", transport),
        (get_app_protocol, set_app_protocol, "_app_protocol", app_protocol),
        (get_outgoing_high_water, set_outgoing_high_water, "_outgoing_high_water", outgoing_high_water),
        (get_outgoing_low_water, set_outgoing_low_water, "_outgoing_low_water", outgoing_low_water),
        (get_incoming_high_water, set_incoming_high_water, "_incoming_high_water", incoming_high_water),
        (get_incoming_low_water, set_incoming_low_water, "_incoming_low_water", incoming_low_water),
        (get_server_side, set_server_side, "_server_side", server_side),
        (get_server_hostname, set_server_hostname, "_server_hostname", server_hostname),
        (get_sslcontext, set_sslcontext, "_sslcontext", sslcontext),
        (get_extra, set_extra, "_extra", extra),
        (get_waiter, set_waiter, "_waiter", waiter),
        (get_loop, set_loop, "_loop", loop_),
        (get_app_transport, set_app_transport, "_app_transport", app_transport),
        (get_app_transport_created, set_app_transport_created, "_app_transport_created", app_transport_created),
        (get_ssl_handshake_timeout, set_ssl_handshake_timeout, "_ssl_handshake_timeout", ssl_handshake_timeout),
        (get_ssl_shutdown_timeout, set_ssl_shutdown_timeout, "_ssl_shutdown_timeout", ssl_shutdown_timeout),
        (get_conn_lost, set_conn_lost, "_conn_lost", conn_lost),
    ],
    flag: [
        (get_app_reading_paused, set_app_reading_paused, "_app_reading_paused", app_reading_paused),
        (get_app_protocol_is_buffer, set_app_protocol_is_buffer, "_app_protocol_is_buffer", app_protocol_is_buffer),
        (get_ssl_writing_paused, set_ssl_writing_paused, "_ssl_writing_paused", ssl_writing_paused),
        (get_app_writing_paused, set_app_writing_paused, "_app_writing_paused", app_writing_paused),
        (get_ssl_reading_paused, set_ssl_reading_paused, "_ssl_reading_paused", ssl_reading_paused),
        (get_eof_received, set_eof_received, "_eof_received", eof_received),
    ],
    defaulted: [
        (get_handshake_start_time, set_handshake_start_time, "_handshake_start_time", handshake_start_time),
        (get_handshake_timeout_handle, set_handshake_timeout_handle, "_handshake_timeout_handle", handshake_timeout_handle),
        (get_shutdown_timeout_handle, set_shutdown_timeout_handle, "_shutdown_timeout_handle", shutdown_timeout_handle),
    ],
    extra: {
        #[new]
        #[pyo3(signature = (*_args, **_kwargs))]
        fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
            Self { st: GilCell::new(TlsState::default()) }
        }

        #[getter(_state)]
        fn get_state(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
            get_obj(slf, "_state", |s| &s.state)
        }

        #[setter(_state)]
        fn set_state(slf: &Bound<'_, Self>, value: Bound<'_, PyAny>) -> PyResult<()> {
            store_state(slf, value)
        }

        #[getter(_app_state)]
        fn get_app_state(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
            get_obj(slf, "_app_state", |s| &s.app_state)
        }

        #[setter(_app_state)]
        fn set_app_state(slf: &Bound<'_, Self>, value: Bound<'_, PyAny>) -> PyResult<()> {
            store_app_state(slf, value)
        }

        #[getter(_sslobj)]
        fn get_sslobj(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
            get_obj(slf, "_sslobj", |s| &s.sslobj)
        }

        #[setter(_sslobj)]
        fn set_sslobj(slf: &Bound<'_, Self>, value: Bound<'_, PyAny>) {
            let old = {
                let mut st = slf.get().st.get_mut(slf.py());
                let target = st.target.take();
                (target, st.sslobj.replace(value.unbind()))
            };
            drop(old);

        }

        /// `max_size`, except while asyncio's `__init__` makes the read
        /// buffer (`bytearray(self.max_size)`, its first statement): 0 then,
        /// so that the 256 KiB buffer is made by the first `get_buffer`,
        /// without zero-filling it (nothing reads it before `recv_into`
        /// writes it) and with its pages touched only as data arrives.
        #[getter(max_size)]
        fn get_max_size(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
            let py = slf.py();
            let st = slf.get().st.get(py);
            if st.ssl_buffer.is_none() {
                return Ok(0u8.into_pyobject(py)?.into_any().unbind());
            }
            match &st.max_size {
                Some(m) => Ok(m.clone_ref(py)),
                None => Ok(names(py)?.max_size.clone_ref(py)),
            }
        }

        #[setter(max_size)]
        fn set_max_size(slf: &Bound<'_, Self>, value: Bound<'_, PyAny>) {
            let old = slf.get().st.get_mut(slf.py()).max_size.replace(value.unbind());
            drop(old);
        }

        /// `SSLProtocol.get_buffer(n)`.
        fn get_buffer<'py>(slf: &Bound<'py, Self>, n: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
            sslproto_io::get_buffer(slf, n)
        }

        /// `SSLProtocol.buffer_updated(nbytes)`.
        fn buffer_updated(slf: &Bound<'_, Self>, nbytes: isize) -> PyResult<()> {
            sslproto_io::buffer_updated(slf, nbytes)
        }

        /// `SSLProtocol._do_handshake()`.
        fn _do_handshake(slf: &Bound<'_, Self>) -> PyResult<()> {
            sslproto_io::do_handshake(slf)
        }

        /// `SSLProtocol._do_read()`.
        fn _do_read(slf: &Bound<'_, Self>) -> PyResult<()> {
            sslproto_io::do_read(slf)
        }

        /// `SSLProtocol._process_outgoing()`.
        fn _process_outgoing(slf: &Bound<'_, Self>) -> PyResult<()> {
            sslproto_io::process_outgoing(slf)
        }

        /// asyncio's `SSLProtocol.__init__` (the class's `__init__`, see `_sslproto.py`).
        #[pyo3(signature = (
            loop_, app_protocol, sslcontext, waiter, server_side=sslproto_life::Arg::Absent, server_hostname=None,
            call_connection_made=sslproto_life::Arg::Absent, ssl_handshake_timeout=None, ssl_shutdown_timeout=None
        ))]
        #[allow(clippy::too_many_arguments, reason = "asyncio's signature")]
        fn _native_init(
            slf: &Bound<'_, Self>,
            loop_: Bound<'_, PyAny>,
            app_protocol: Bound<'_, PyAny>,
            sslcontext: Bound<'_, PyAny>,
            waiter: Bound<'_, PyAny>,
            server_side: sslproto_life::Arg<'_>,
            server_hostname: Option<Bound<'_, PyAny>>,
            call_connection_made: sslproto_life::Arg<'_>,
            ssl_handshake_timeout: Option<Bound<'_, PyAny>>,
            ssl_shutdown_timeout: Option<Bound<'_, PyAny>>,
        ) -> PyResult<()> {
            sslproto_life::init(slf, sslproto_life::InitArgs {
                loop_, app_protocol, sslcontext, waiter, server_side, server_hostname,
                call_connection_made, ssl_handshake_timeout, ssl_shutdown_timeout,
            })
        }

        /// `SSLProtocol._get_app_transport()`.
        fn _get_app_transport<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
            sslproto_life::get_app_transport(slf)
        }

        /// `SSLProtocol._set_state(new_state)`.
        fn _set_state(slf: &Bound<'_, Self>, new_state: Bound<'_, PyAny>) -> PyResult<()> {
            sslproto_life::set_state(slf, new_state)
        }

        /// `SSLProtocol._wakeup_waiter(exc=None)`.
        #[pyo3(signature = (exc=None))]
        fn _wakeup_waiter(slf: &Bound<'_, Self>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
            sslproto_life::wakeup_waiter(slf, exc)
        }

        /// `SSLProtocol._call_eof_received()`.
        fn _call_eof_received(slf: &Bound<'_, Self>) -> PyResult<()> {
            sslproto_life::call_eof_received(slf)
        }

        /// `SSLProtocol.connection_made(transport)`.
        fn connection_made(slf: &Bound<'_, Self>, transport: Bound<'_, PyAny>) -> PyResult<()> {
            let old = slf.get().st.get_mut(slf.py()).transport.replace(transport.unbind());
            drop(old);
            sslproto_life::start_handshake(slf)
        }

        /// `SSLProtocol._start_handshake()`.
        fn _start_handshake(slf: &Bound<'_, Self>) -> PyResult<()> {
            sslproto_life::start_handshake(slf)
        }

        /// `SSLProtocol._on_handshake_complete(handshake_exc)`.
        fn _on_handshake_complete(slf: &Bound<'_, Self>, handshake_exc: Bound<'_, PyAny>) -> PyResult<()> {
            sslproto_life::on_handshake_complete(slf, handshake_exc)
        }

        /// `SSLProtocol.connection_lost(exc)`.
        fn connection_lost(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>) -> PyResult<()> {
            sslproto_life::connection_lost(slf, exc)
        }

        /// `SSLProtocol._start_shutdown()`.
        fn _start_shutdown(slf: &Bound<'_, Self>) -> PyResult<()> {
            sslproto_life::start_shutdown(slf)
        }

        /// `SSLProtocol._do_flush()`.
        fn _do_flush(slf: &Bound<'_, Self>) -> PyResult<()> {
            sslproto_life::do_flush(slf)
        }

        /// `SSLProtocol._do_shutdown()`.
        fn _do_shutdown(slf: &Bound<'_, Self>) -> PyResult<()> {
            sslproto_life::do_shutdown(slf)
        }

        /// `SSLProtocol._on_shutdown_complete(shutdown_exc)`.
        fn _on_shutdown_complete(slf: &Bound<'_, Self>, shutdown_exc: Bound<'_, PyAny>) -> PyResult<()> {
            sslproto_life::on_shutdown_complete(slf, shutdown_exc)
        }

        fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
            gc::traverse(&self.st, &visit)
        }

        fn __clear__(&self) {
            gc::clear(&self.st);
        }
    }
}

/// The code of an `SSLProtocolState` member (`Other` for anything else).
pub(crate) fn state_code(py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<State> {
    let codes = [
        State::Unwrapped,
        State::DoHandshake,
        State::Wrapped,
        State::Flushing,
        State::Shutdown,
    ];
    Ok(names(py)?
        .states
        .iter()
        .zip(codes)
        .find(|(s, _)| value.is(s.bind(py)))
        .map_or(State::Other, |(_, c)| c))
}

/// `self._state = value`.
pub(crate) fn store_state(slf: &Bound<'_, SslRecordPath>, value: Bound<'_, PyAny>) -> PyResult<()> {
    let code = state_code(slf.py(), &value)?;
    store_state_coded(slf, value, code);
    Ok(())
}

/// `self._state = value`, its code known.
pub(crate) fn store_state_coded(slf: &Bound<'_, SslRecordPath>, value: Bound<'_, PyAny>, code: State) {
    let old = {
        let mut st = slf.get().st.get_mut(slf.py());
        st.code = code;
        st.state.replace(value.unbind())
    };
    drop(old);
}

/// `self._app_state = value`.
pub(crate) fn store_app_state(slf: &Bound<'_, SslRecordPath>, value: Bound<'_, PyAny>) -> PyResult<()> {
    let py = slf.py();
    let states = &names(py)?.app_states;
    let codes = [AppState::Init, AppState::ConMade, AppState::Eof, AppState::ConLost];
    let code = states
        .iter()
        .zip(codes)
        .find(|(s, _)| value.is(s.bind(py)))
        .map_or(AppState::Other, |(_, c)| c);
    let old = {
        let mut st = slf.get().st.get_mut(py);
        st.app_code = code;
        st.app_state.replace(value.unbind())
    };
    drop(old);
    Ok(())
}

/// A mirrored attribute, or the `AttributeError` Python would raise.
pub(crate) fn field<'py>(
    slf: &Bound<'py, SslRecordPath>,
    name: &str,
    f: impl Fn(&TlsState) -> &Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    get_obj(slf, name, f).map(|o| o.into_bound(slf.py()))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SslRecordPath>()?;
    sslproto_io::register(m)?;
    sslproto_life::register(m)
}
