//! The record path of asyncio's `SSLProtocol` (`asyncio.sslproto`), in Rust.
//!
//! `ferroloop._sslproto.SSLProtocol` is asyncio's own class on the running
//! Python with two methods replaced: `buffer_updated` (ciphertext in,
//! plaintext to the application protocol) and the application transport's
//! `write` (plaintext in, ciphertext to the socket transport). The functions
//! here do what those methods and the ones they call (`_do_read`,
//! `_do_read__copied`, `_write_appdata`, `_do_write`, `_process_outgoing`,
//! `_control_app_writing`, `_control_ssl_reading`) do, on the same
//! attributes, in the same order, through the same `ssl.SSLObject` and
//! `ssl.MemoryBIO` objects — one native call per batch of records instead of
//! a dozen Python frames. Everything else (handshake, shutdown, timeouts,
//! errors, flow-control transitions, buffered application protocols) is
//! asyncio's Python, called at the point asyncio's code would call it, so a
//! state the fast path does not know is always handed to asyncio.
//!
//! One thing asyncio does is skipped: the `read()` that ends each batch by
//! raising `SSLWantReadError` (an exception object per batch). `TlsRecords`
//! follows the TLS record framing of the bytes written into the incoming BIO;
//! when no complete record is left unread and the `SSLObject` holds no
//! plaintext, that `read()` could only raise `SSLWantReadError`, so the batch
//! ends as if it had. A byte stream that does not look like TLS records
//! (SSLv2 hello, unknown content type, oversized length) turns the tracking
//! off for the connection: every `read()` is then made, as asyncio makes it.

use pyo3::exceptions::{PyException, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView, PyModule, PyString, PyTuple, PyType};
use pyo3::{intern, PyTypeInfo};

use crate::py::call::call_method;
use crate::py::fastcall::{fastcall_method, install};

/// Largest record body accepted for tracking: TLS 1.3's limit (2^14 + 256).
/// TLS 1.2 allows 2^14 + 2048; a peer that sends such records gets the
/// untracked (always read) path, which is asyncio's own.
const MAX_TRACKED_BODY: u32 = 16384 + 256;

/// The asyncio and ssl objects the fast path compares against.
struct Names {
    wrapped: Py<PyAny>,
    do_handshake: Py<PyAny>,
    flushing: Py<PyAny>,
    shutdown: Py<PyAny>,
    /// `sslproto.SSLAgainErrors`.
    again: Py<PyAny>,
    /// `ssl.SSLObject`: its `_sslobj` is called directly when the object is exactly one.
    sslobject: Py<PyAny>,
}

static NAMES: PyOnceLock<Names> = PyOnceLock::new();

fn names(py: Python<'_>) -> PyResult<&Names> {
    NAMES.get_or_try_init(py, || {
        let sslproto = py.import("asyncio.sslproto")?;
        let state = sslproto.getattr("SSLProtocolState")?;
        Ok(Names {
            wrapped: state.getattr("WRAPPED")?.unbind(),
            do_handshake: state.getattr("DO_HANDSHAKE")?.unbind(),
            flushing: state.getattr("FLUSHING")?.unbind(),
            shutdown: state.getattr("SHUTDOWN")?.unbind(),
            again: sslproto.getattr("SSLAgainErrors")?.unbind(),
            sslobject: py.import("ssl")?.getattr("SSLObject")?.unbind(),
        })
    })
}

/// The TLS record framing of the ciphertext written into a protocol's
/// incoming BIO (see the module documentation).
#[derive(Default)]
struct TlsRecords {
    /// Bytes written into the BIO so far.
    fed: u64,
    /// Offset (in `fed` terms) just after the last complete record.
    complete_end: u64,
    hdr: [u8; 5],
    hdr_len: u8,
    body_left: u32,
    untracked: bool,
}

/// The native base of `ferroloop._sslproto.SSLProtocol` (listed before
/// asyncio's class, so its methods win): `get_buffer` and `buffer_updated`
/// without a Python frame, and the record tracking.
#[pyclass(subclass, module = "ferroloop._ferroloop", name = "_SSLRecordPath")]
#[derive(Default)]
pub(crate) struct SslRecordPath {
    records: TlsRecords,
}

#[pymethods]
impl SslRecordPath {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, pyo3::types::PyDict>>) -> Self {
        Self::default()
    }

    /// `SSLProtocol.get_buffer(n)`.
    fn get_buffer<'py>(slf: &Bound<'py, Self>, n: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        get_buffer(slf.as_any(), n)
    }

    /// `SSLProtocol.buffer_updated(nbytes)`.
    fn buffer_updated(slf: &Bound<'_, Self>, nbytes: isize) -> PyResult<()> {
        buffer_updated(slf, nbytes)
    }
}

fastcall_method!(app_write_method, "_SSLProtocolTransport.write", ["data"], |c| {
    c.at_most(1)?;
    app_write(&c.slf, &c.arg(0))?;
    Ok(c.py.None())
});

/// Give `ferroloop._sslproto._SSLProtocolTransport` (a subclass of asyncio's,
/// whose `__slots__` rule out a native base) the native `write`.
#[pyfunction]
fn _install_ssl_write(cls: &Bound<'_, PyType>) -> PyResult<()> {
    // SAFETY: `app_write` works on any object through Python attributes.
    unsafe {
        install(
            cls,
            &[(c"write", app_write_method, c"Write some data bytes to the transport.")],
        )
    }
}

impl TlsRecords {
    fn feed(&mut self, mut data: &[u8]) {
        if self.untracked {
            return;
        }
        while !data.is_empty() {
            if self.body_left == 0 && self.hdr_len < 5 {
                let take = (5 - self.hdr_len as usize).min(data.len());
                self.hdr[self.hdr_len as usize..self.hdr_len as usize + take].copy_from_slice(&data[..take]);
                self.hdr_len += take as u8;
                self.fed += take as u64;
                data = &data[take..];
                if self.hdr_len < 5 {
                    return;
                }
                let len = u32::from(u16::from_be_bytes([self.hdr[3], self.hdr[4]]));
                if !(20..=24).contains(&self.hdr[0]) || self.hdr[1] != 3 || len > MAX_TRACKED_BODY {
                    self.untracked = true;
                    return;
                }
                self.body_left = len;
                if len == 0 {
                    self.record_done();
                }
                continue;
            }
            let take = (self.body_left as usize).min(data.len());
            self.body_left -= take as u32;
            self.fed += take as u64;
            data = &data[take..];
            if self.body_left == 0 {
                self.record_done();
            }
        }
    }

    fn record_done(&mut self) {
        self.complete_end = self.fed;
        self.hdr_len = 0;
    }

    /// Whether a `read()` could find a record the `SSLObject` has not read,
    /// given the bytes still in the BIO.
    fn unread_record(&self, bio_pending: u64) -> bool {
        self.untracked || self.complete_end > self.fed.saturating_sub(bio_pending)
    }
}

fn attr<'py>(obj: &Bound<'py, PyAny>, name: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
    obj.getattr(name)
}

fn flag(obj: &Bound<'_, PyAny>, name: &Bound<'_, PyString>) -> PyResult<bool> {
    obj.getattr(name)?.is_truthy()
}

fn pending(bio: &Bound<'_, PyAny>) -> PyResult<u64> {
    bio.getattr(intern!(bio.py(), "pending"))?.extract()
}

/// `except Exception as ex: self._fatal_error(ex, message)`.
fn fatal_on_exception(proto: &Bound<'_, PyAny>, result: PyResult<()>, message: &str) -> PyResult<()> {
    let py = proto.py();
    match result {
        Err(err) if err.is_instance_of::<PyException>(py) => {
            let exc = err.into_value(py).into_bound(py).into_any();
            let msg = PyString::new(py, message).into_any();
            call_method(proto, intern!(py, "_fatal_error"), &[&exc, &msg]).map(drop)
        }
        other => other,
    }
}

/// The `ssl.SSLObject` methods' target: its `_sslobj` when the object is
/// exactly an `ssl.SSLObject` (whose methods only forward), else the object.
fn ssl_target<'py>(py: Python<'py>, proto: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let sslobj = attr(proto, intern!(py, "_sslobj"))?;
    if sslobj.get_type().is(names(py)?.sslobject.bind(py)) {
        attr(&sslobj, intern!(py, "_sslobj"))
    } else {
        Ok(sslobj)
    }
}

/// `get_buffer(n)`: asyncio's `_ssl_buffer`, grown to `n` (at most `max_size`).
fn get_buffer<'py>(proto: &Bound<'py, PyAny>, n: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = proto.py();
    let max_size = attr(proto, intern!(py, "max_size"))?;
    let mut want = n.clone();
    if want.le(0)? || want.gt(&max_size)? {
        want = max_size;
    }
    if attr(proto, intern!(py, "_ssl_buffer"))?.len()? < want.extract::<usize>()? {
        let buffer = PyByteArray::type_object(py).call1((want,))?;
        let view = PyMemoryView::from(&buffer)?;
        proto.setattr(intern!(py, "_ssl_buffer"), buffer)?;
        proto.setattr(intern!(py, "_ssl_buffer_view"), view)?;
    }
    attr(proto, intern!(py, "_ssl_buffer_view"))
}

/// `SSLProtocol.buffer_updated(nbytes)`.
fn buffer_updated(recs: &Bound<'_, SslRecordPath>, nbytes: isize) -> PyResult<()> {
    let py = recs.py();
    let proto = recs.as_any();
    let incoming = attr(proto, intern!(py, "_incoming"))?;
    let buffer = attr(proto, intern!(py, "_ssl_buffer"))?;
    if let Ok(array) = buffer.cast::<PyByteArray>() {
        let len = array.len() as isize;
        // `view[:nbytes]`, Python's slice bounds.
        let n = if nbytes < 0 {
            (len + nbytes).max(0)
        } else {
            nbytes.min(len)
        } as usize;
        // SAFETY: the bytearray is alive (held by `buffer`) and not resized
        // while the slice exists: nothing below runs Python code before
        // `incoming.write` has copied it.
        let data = unsafe { std::slice::from_raw_parts(array.data(), n) };
        recs.borrow_mut().records.feed(data);
        // SAFETY: a read-only memoryview of `n` bytes of that live buffer,
        // released (dropped) before the buffer can change.
        let view = unsafe {
            let ptr = ffi::PyMemoryView_FromMemory(array.data().cast(), n as ffi::Py_ssize_t, ffi::PyBUF_READ);
            Bound::from_owned_ptr_or_err(py, ptr)?
        };
        call_method(&incoming, intern!(py, "write"), &[&view])?;
    } else {
        // Not asyncio's own buffer: write the slice as asyncio does, untracked.
        recs.borrow_mut().records.untracked = true;
        let view = attr(proto, intern!(py, "_ssl_buffer_view"))?;
        // SAFETY: `view` is a live object; the result is a new reference or NULL with an error set.
        let slice = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PySequence_GetSlice(view.as_ptr(), 0, nbytes))? };
        call_method(&incoming, intern!(py, "write"), &[&slice])?;
    }
    let n = names(py)?;
    let state = attr(proto, intern!(py, "_state"))?;
    if state.is(n.do_handshake.bind(py)) {
        call_method(proto, intern!(py, "_do_handshake"), &[])?;
    } else if state.is(n.wrapped.bind(py)) {
        do_read(py, proto, recs)?;
    } else if state.is(n.flushing.bind(py)) {
        call_method(proto, intern!(py, "_do_flush"), &[])?;
    } else if state.is(n.shutdown.bind(py)) {
        call_method(proto, intern!(py, "_do_shutdown"), &[])?;
    }
    Ok(())
}

/// `_do_read()` in the WRAPPED state.
fn do_read(py: Python<'_>, proto: &Bound<'_, PyAny>, recs: &Bound<'_, SslRecordPath>) -> PyResult<()> {
    let result = (|| {
        if !flag(proto, intern!(py, "_app_reading_paused"))? {
            if flag(proto, intern!(py, "_app_protocol_is_buffer"))? {
                call_method(proto, intern!(py, "_do_read__buffered"), &[])?;
            } else {
                read_copied(py, proto, recs)?;
            }
            if flag(proto, intern!(py, "_write_backlog"))? {
                call_method(proto, intern!(py, "_do_write"), &[])?;
            } else {
                process_outgoing(py, proto)?;
            }
        }
        control_ssl_reading(py, proto)
    })();
    fatal_on_exception(proto, result, "Fatal error on SSL protocol")
}

/// `_do_read__copied()`: every record's plaintext to one `data_received`.
fn read_copied(py: Python<'_>, proto: &Bound<'_, PyAny>, recs: &Bound<'_, SslRecordPath>) -> PyResult<()> {
    let target = ssl_target(py, proto)?;
    let incoming = attr(proto, intern!(py, "_incoming"))?;
    let max_size = attr(proto, intern!(py, "max_size"))?;
    let again = names(py)?.again.bind(py);
    let mut chunks: Vec<Bound<'_, PyBytes>> = Vec::new();
    let mut closed = false;
    loop {
        if !recs.borrow().records.unread_record(pending(&incoming)?)
            && call_method(&target, intern!(py, "pending"), &[])?.extract::<u64>()? == 0
        {
            break; // the read() that would raise SSLWantReadError
        }
        match call_method(&target, intern!(py, "read"), &[&max_size]) {
            Ok(chunk) => {
                let chunk = chunk.cast_into::<PyBytes>()?;
                if chunk.as_bytes().is_empty() {
                    closed = true;
                    break;
                }
                chunks.push(chunk);
            }
            Err(err) if err.get_type(py).is_subclass(again)? => break,
            Err(err) => return Err(err),
        }
    }
    if !chunks.is_empty() {
        let data = if chunks.len() == 1 {
            chunks.pop().map(Bound::into_any)
        } else {
            Some(join(py, &chunks)?)
        };
        let app = attr(proto, intern!(py, "_app_protocol"))?;
        if let Some(data) = data {
            call_method(&app, intern!(py, "data_received"), &[&data])?;
        }
    }
    if closed {
        // close_notify
        call_method(proto, intern!(py, "_call_eof_received"), &[])?;
        call_method(proto, intern!(py, "_start_shutdown"), &[])?;
    }
    Ok(())
}

fn join<'py>(py: Python<'py>, chunks: &[Bound<'py, PyBytes>]) -> PyResult<Bound<'py, PyAny>> {
    let total = chunks.iter().map(|c| c.as_bytes().len()).sum();
    Ok(PyBytes::new_with(py, total, |out| {
        let mut at = 0;
        for c in chunks {
            let b = c.as_bytes();
            out[at..at + b.len()].copy_from_slice(b);
            at += b.len();
        }
        Ok(())
    })?
    .into_any())
}

/// `_process_outgoing()`: the outgoing BIO's ciphertext to the transport.
fn process_outgoing(py: Python<'_>, proto: &Bound<'_, PyAny>) -> PyResult<()> {
    if !flag(proto, intern!(py, "_ssl_writing_paused"))? {
        let outgoing = attr(proto, intern!(py, "_outgoing"))?;
        // `read()` of an empty BIO returns b'', which asyncio then ignores.
        if pending(&outgoing)? > 0 {
            let data = call_method(&outgoing, intern!(py, "read"), &[])?;
            if data.len()? > 0 {
                let transport = attr(proto, intern!(py, "_transport"))?;
                call_method(&transport, intern!(py, "write"), &[&data])?;
            }
        }
    }
    control_app_writing(py, proto)
}

/// `_control_app_writing()`, handed to asyncio when a mark is crossed.
fn control_app_writing(py: Python<'_>, proto: &Bound<'_, PyAny>) -> PyResult<()> {
    let outgoing = attr(proto, intern!(py, "_outgoing"))?;
    let size = attr(&outgoing, intern!(py, "pending"))?.add(attr(proto, intern!(py, "_write_buffer_size"))?)?;
    let paused = flag(proto, intern!(py, "_app_writing_paused"))?;
    let crosses = if paused {
        size.le(attr(proto, intern!(py, "_outgoing_low_water"))?)?
    } else {
        size.ge(attr(proto, intern!(py, "_outgoing_high_water"))?)?
    };
    if crosses {
        call_method(proto, intern!(py, "_control_app_writing"), &[])?;
    }
    Ok(())
}

/// `_control_ssl_reading()`, handed to asyncio when a mark is crossed.
fn control_ssl_reading(py: Python<'_>, proto: &Bound<'_, PyAny>) -> PyResult<()> {
    let size = attr(&attr(proto, intern!(py, "_incoming"))?, intern!(py, "pending"))?;
    let paused = flag(proto, intern!(py, "_ssl_reading_paused"))?;
    let crosses = if paused {
        size.le(attr(proto, intern!(py, "_incoming_low_water"))?)?
    } else {
        size.ge(attr(proto, intern!(py, "_incoming_high_water"))?)?
    };
    if crosses {
        call_method(proto, intern!(py, "_control_ssl_reading"), &[])?;
    }
    Ok(())
}

fn is_bytes_like(data: &Bound<'_, PyAny>) -> bool {
    data.is_instance_of::<PyBytes>() || data.is_instance_of::<PyByteArray>() || data.is_instance_of::<PyMemoryView>()
}

/// `_SSLProtocolTransport.write(data)`.
fn app_write(transport: &Bound<'_, PyAny>, data: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = transport.py();
    if !is_bytes_like(data) {
        return Err(PyTypeError::new_err(format!(
            "data: expecting a bytes-like instance, got {}",
            data.get_type().name()?
        )));
    }
    if !data.is_truthy()? {
        return Ok(());
    }
    let proto = attr(transport, intern!(py, "_ssl_protocol"))?;
    let wrapped = names(py)?.wrapped.bind(py);
    if proto.is_none()
        || !attr(&proto, intern!(py, "_state"))?.is(wrapped)
        || flag(&proto, intern!(py, "_write_backlog"))?
    {
        let list = PyTuple::new(py, [data])?.into_any();
        return call_method(&proto, intern!(py, "_write_appdata"), &[&list]).map(drop);
    }
    let result = write_wrapped(py, &proto, data);
    fatal_on_exception(&proto, result, "Fatal error on SSL protocol")
}

/// `_write_appdata((data,))` with an empty backlog in the WRAPPED state.
fn write_wrapped(py: Python<'_>, proto: &Bound<'_, PyAny>, data: &Bound<'_, PyAny>) -> PyResult<()> {
    let target = ssl_target(py, proto)?;
    let data_len = data.len()?;
    match call_method(&target, intern!(py, "write"), &[data]) {
        Ok(count) => {
            let count: usize = count.extract()?;
            if count < data_len {
                // The rest stays in the backlog, as `_do_write` leaves it.
                // SAFETY: `data` is a live sequence; the result is a new reference or NULL with an error set.
                let rest = unsafe {
                    Bound::from_owned_ptr_or_err(
                        py,
                        ffi::PySequence_GetSlice(data.as_ptr(), count as ffi::Py_ssize_t, ffi::PY_SSIZE_T_MAX),
                    )?
                };
                call_method(
                    &attr(proto, intern!(py, "_write_backlog"))?,
                    intern!(py, "append"),
                    &[&rest],
                )?;
                add_buffer_size(py, proto, data_len - count)?;
            }
        }
        Err(err) => {
            call_method(
                &attr(proto, intern!(py, "_write_backlog"))?,
                intern!(py, "append"),
                &[data],
            )?;
            add_buffer_size(py, proto, data_len)?;
            if !err.get_type(py).is_subclass(names(py)?.again.bind(py))? {
                return Err(err);
            }
        }
    }
    process_outgoing(py, proto)
}

fn add_buffer_size(py: Python<'_>, proto: &Bound<'_, PyAny>, n: usize) -> PyResult<()> {
    let size = attr(proto, intern!(py, "_write_buffer_size"))?.add(n)?;
    proto.setattr(intern!(py, "_write_buffer_size"), size)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SslRecordPath>()?;
    m.add_function(wrap_pyfunction!(_install_ssl_write, m)?)?;
    Ok(())
}
