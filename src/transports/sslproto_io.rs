//! The read and write paths of the native `SSLProtocol` (see `sslproto`):
//! `get_buffer`, `buffer_updated` and `_SSLProtocolTransport.write`, each
//! step named after the asyncio method it stands for.

use pyo3::exceptions::{PyException, PyTypeError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyList, PyMemoryView, PyModule, PyString, PyTuple, PyType};

use super::sslproto::{field, names, SslRecordPath, State};
use super::{sslproto_life, stream};
use crate::py::call::call_method;
use crate::py::fastcall::{fastcall_method, install};
use crate::py::spare_bytes::Filling;

const FATAL: &str = "Fatal error on SSL protocol";

fn pending(bio: &Bound<'_, PyAny>) -> PyResult<u64> {
    bio.getattr(intern!(bio.py(), "pending"))?.extract()
}

fn state(p: &Bound<'_, SslRecordPath>) -> State {
    p.get().st.get(p.py()).code
}

/// `except Exception as ex: self._fatal_error(ex, message)`.
fn fatal_on_exception(p: &Bound<'_, SslRecordPath>, result: PyResult<()>) -> PyResult<()> {
    let py = p.py();
    match result {
        Err(err) if err.is_instance_of::<PyException>(py) => {
            let exc = err.into_value(py).into_bound(py).into_any();
            let msg = PyString::new(py, FATAL).into_any();
            call_method(p.as_any(), intern!(py, "_fatal_error"), &[&exc, &msg]).map(drop)
        }
        other => other,
    }
}

/// What the `ssl.SSLObject` methods are called on: its `_sslobj` when the
/// object is exactly an `ssl.SSLObject` (whose methods only forward), else
/// the object itself; and whether it is exactly one. Found once per
/// `_sslobj` assigned.
pub(crate) fn ssl_target<'py>(p: &Bound<'py, SslRecordPath>) -> PyResult<(Bound<'py, PyAny>, bool)> {
    let py = p.py();
    if let Some((t, exact)) = &p.get().st.get(py).target {
        return Ok((t.bind(py).clone(), *exact));
    }
    let sslobj = field(p, "_sslobj", |s| &s.sslobj)?;
    let exact = sslobj.get_type().is(names(py)?.sslobject.bind(py));
    let target = if exact {
        sslobj.getattr(intern!(py, "_sslobj"))?
    } else {
        sslobj
    };
    p.get().st.get_mut(py).target = Some((target.clone().unbind(), exact));
    Ok((target, exact))
}

fn max_size<'py>(p: &Bound<'py, SslRecordPath>) -> PyResult<Bound<'py, PyAny>> {
    let py = p.py();
    let m = match &p.get().st.get(py).max_size {
        Some(m) => m.clone_ref(py),
        None => names(py)?.max_size.clone_ref(py),
    };
    Ok(m.into_bound(py))
}

/// `get_buffer(n)`: asyncio's `_ssl_buffer`, grown to `n` (at most `max_size`).
pub(crate) fn get_buffer<'py>(p: &Bound<'py, SslRecordPath>, n: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = p.py();
    let max = max_size(p)?;
    let mut want = n.clone();
    if want.le(0)? || want.gt(&max)? {
        want = max;
    }
    let want = want.extract::<usize>()?;
    if field(p, "_ssl_buffer", |s| &s.ssl_buffer)?.len()? < want {
        let (buffer, view) = if let Some(shared) = loop_read_buffer(p, want)? {
            shared
        } else {
            let buffer = uninit_bytearray(py, want)?;
            let view = PyMemoryView::from(&buffer)?.into_any();
            (buffer, view)
        };
        p.setattr(intern!(py, "_ssl_buffer"), buffer)?;
        p.setattr(intern!(py, "_ssl_buffer_view"), view)?;
    }
    field(p, "_ssl_buffer_view", |s| &s.ssl_buffer_view)
}

/// `bytearray(size)` without the zero fill (`recv_into` writes what is read).
fn uninit_bytearray(py: Python<'_>, size: usize) -> PyResult<Bound<'_, PyAny>> {
    // SAFETY: a NULL source makes an uninitialised bytearray of `size`
    // bytes; the result is a new reference or NULL with an error set.
    unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyByteArray_FromStringAndSize(std::ptr::null(), size as ffi::Py_ssize_t),
        )
    }
}

/// The loop's shared read buffer and its view, when the protocol's loop is
/// a ferroloop loop and `want` is asyncio's `max_size` (the only size the
/// loop's transports ask for): made zero-filled once per loop. Between
/// `get_buffer` and the `buffer_updated` that copies the bytes into the
/// protocol's incoming BIO nothing else runs on the loop's thread, so one
/// buffer serves every connection (asyncio makes 256 KiB per connection).
fn loop_read_buffer<'py>(
    p: &Bound<'py, SslRecordPath>,
    want: usize,
) -> PyResult<Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
    let py = p.py();
    if p.get().st.get(py).max_size.is_some() || names(py)?.max_size.bind(py).extract::<usize>()? != want {
        return Ok(None);
    }
    let Ok(lp) = p.getattr(intern!(py, "_loop")) else {
        return Ok(None);
    };
    let Ok(lp) = lp.cast::<crate::event_loop::EventLoop>() else {
        return Ok(None);
    };
    if let Some((buffer, view)) = &lp.get().st.get(py).tls_read {
        return Ok(Some((buffer.to_py(py).into_bound(py), view.to_py(py).into_bound(py))));
    }
    let buffer = PyByteArray::new_with(py, want, |_| Ok(()))?.into_any();
    let view = PyMemoryView::from(&buffer)?.into_any();
    lp.get().st.get_mut(py).tls_read = Some((
        crate::py::held::Held::new(buffer.clone().unbind()),
        crate::py::held::Held::new(view.clone().unbind()),
    ));
    Ok(Some((buffer, view)))
}

/// `buffer_updated(nbytes)`.
pub(crate) fn buffer_updated(p: &Bound<'_, SslRecordPath>, nbytes: isize) -> PyResult<()> {
    let py = p.py();
    let incoming = field(p, "_incoming", |s| &s.incoming)?;
    let buffer = field(p, "_ssl_buffer", |s| &s.ssl_buffer)?;
    if let Ok(array) = buffer.cast::<PyByteArray>() {
        let len = array.len() as isize;
        // `view[:nbytes]`, Python's slice bounds.
        let n = if nbytes < 0 {
            (len + nbytes).max(0)
        } else {
            nbytes.min(len)
        } as usize;
        // SAFETY: the bytearray is alive (held by `buffer`) and not resized
        // while the slice exists: no Python code runs before
        // `incoming.write` has copied it.
        let data = unsafe { std::slice::from_raw_parts(array.data(), n) };
        p.get().st.get_mut(py).records.feed(data);
        // SAFETY: a read-only memoryview of `n` bytes of that live buffer,
        // dropped right after the write, before the buffer can change.
        let view = unsafe {
            let ptr = ffi::PyMemoryView_FromMemory(array.data().cast(), n as ffi::Py_ssize_t, ffi::PyBUF_READ);
            Bound::from_owned_ptr_or_err(py, ptr)?
        };
        call_method(&incoming, intern!(py, "write"), &[&view])?;
    } else {
        // Not a bytearray: write the slice as asyncio does, untracked.
        p.get().st.get_mut(py).records.untrack();
        let view = field(p, "_ssl_buffer_view", |s| &s.ssl_buffer_view)?;
        // SAFETY: `view` is live; the result is a new reference or NULL with an error set.
        let slice = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PySequence_GetSlice(view.as_ptr(), 0, nbytes))? };
        call_method(&incoming, intern!(py, "write"), &[&slice])?;
    }
    match state(p) {
        State::DoHandshake => do_handshake(p),
        State::Wrapped => do_read(p),
        State::Flushing => sslproto_life::do_flush(p),
        State::Shutdown => sslproto_life::do_shutdown(p),
        State::Unwrapped | State::Other => Ok(()),
    }
}

/// `_do_handshake()`.
pub(crate) fn do_handshake(p: &Bound<'_, SslRecordPath>) -> PyResult<()> {
    let py = p.py();
    let (target, _) = ssl_target(p)?;
    match call_method(&target, intern!(py, "do_handshake"), &[]) {
        Ok(_) => sslproto_life::on_handshake_complete(p, py.None().into_bound(py)),
        Err(err) if err.get_type(py).is_subclass(names(py)?.again.bind(py))? => process_outgoing(p),
        Err(err) if err.get_type(py).is_subclass(names(py)?.ssl_error.bind(py))? => {
            let exc = err.into_value(py).into_bound(py).into_any();
            sslproto_life::on_handshake_complete(p, exc)
        }
        Err(err) => Err(err),
    }
}

/// `_do_read()`.
pub(crate) fn do_read(p: &Bound<'_, SslRecordPath>) -> PyResult<()> {
    let py = p.py();
    let wrapped = match state(p) {
        State::Wrapped => true,
        State::Flushing => false,
        _ => return Ok(()),
    };
    let result = (|| {
        let (paused, buffered) = {
            let st = p.get().st.get(py);
            (st.app_reading_paused.on, st.app_protocol_is_buffer.on)
        };
        if !paused {
            if buffered {
                call_method(p.as_any(), intern!(py, "_do_read__buffered"), &[])?;
            } else if ssl_target(p)?.1 {
                // Reads are skipped by the record framing only while WRAPPED:
                // once a close_notify was read, read() returns b'' again.
                read_copied(p, !wrapped)?;
            } else {
                // A `sslobject_class` of the context's own: its `read` as asyncio calls it.
                call_method(p.as_any(), intern!(py, "_do_read__copied"), &[])?;
            }
            if field(p, "_write_backlog", |s| &s.write_backlog)?.is_truthy()? {
                call_method(p.as_any(), intern!(py, "_do_write"), &[])?;
            } else {
                process_outgoing(p)?;
            }
        }
        control_ssl_reading(p)
    })();
    fatal_on_exception(p, result)
}

/// Room for one record's plaintext (2^14) beyond what the BIO holds.
const RECORD_ROOM: usize = 16384 + 256;

/// `_do_read__copied()`: every record's plaintext to one `data_received`.
///
/// asyncio reads each record into a new `bytes` (`read(max_size)`) and
/// joins them; here they are read (`read(n, buffer)`) into one `bytes`
/// sized from the ciphertext waiting in the BIO (never smaller than the
/// plaintext it decrypts to) and the plaintext the `SSLObject` holds; a
/// record larger than that (part of it read into the `SSLObject` earlier)
/// continues in another `bytes`, joined at the end. The bytes delivered are
/// the same.
fn read_copied(p: &Bound<'_, SslRecordPath>, every_read: bool) -> PyResult<()> {
    let py = p.py();
    let (target, _) = ssl_target(p)?;
    let incoming = field(p, "_incoming", |s| &s.incoming)?;
    let again = names(py)?.again.bind(py);
    let mut full: Vec<Bound<'_, PyBytes>> = Vec::new();
    let mut cur: Option<Filling<'_>> = None;
    let mut closed = false;
    loop {
        let bio = pending(&incoming)?;
        let (unread, untracked) = {
            let st = p.get().st.get(py);
            let untracked = every_read || st.records.is_untracked();
            (untracked || st.records.unread_record(bio), untracked)
        };
        let held = if unread {
            0
        } else {
            call_method(&target, intern!(py, "pending"), &[])?.extract::<usize>()?
        };
        if !unread && held == 0 {
            break; // the read() that would raise SSLWantReadError
        }
        if cur.as_ref().is_none_or(|f| f.room() == 0) {
            if let Some(f) = cur.take() {
                full.push(f.finish());
            }
            let mut room = bio as usize + held;
            if untracked {
                // Records not followed: room for one more than the BIO shows.
                room += RECORD_ROOM;
            }
            cur = Some(Filling::new(py, room)?);
        }
        let Some(f) = cur.as_mut() else { break };
        let view = f.rest_view()?;
        let n = (f.room() as u64).into_pyobject(py)?.into_any();
        match call_method(&target, intern!(py, "read"), &[&n, &view]) {
            Ok(count) => {
                drop(view);
                let count: usize = count.extract()?;
                if count == 0 {
                    closed = true;
                    break;
                }
                f.advance(count);
            }
            Err(err) if err.get_type(py).is_subclass(again)? => break,
            Err(err) => return Err(err),
        }
    }
    if let Some(f) = cur.take() {
        if f.len() > 0 {
            full.push(f.finish());
        }
    }
    let data = match full.len() {
        0 => None,
        1 => full.pop().map(Bound::into_any),
        _ => Some(join(py, &full)?),
    };
    if let Some(data) = data {
        let app = field(p, "_app_protocol", |s| &s.app_protocol)?;
        call_method(&app, intern!(py, "data_received"), &[&data])?;
    }
    if closed {
        // close_notify
        sslproto_life::call_eof_received(p)?;
        sslproto_life::start_shutdown(p)?;
    }
    Ok(())
}

/// `b''.join(chunks)`.
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
pub(crate) fn process_outgoing(p: &Bound<'_, SslRecordPath>) -> PyResult<()> {
    let py = p.py();
    let paused = p.get().st.get(py).ssl_writing_paused.on;
    let outgoing = field(p, "_outgoing", |s| &s.outgoing)?;
    // Unless paused, the BIO is found empty or read empty here; it stays
    // empty unless a transport's `write` runs Python code (only ferroloop's
    // own transport is known not to), so `pending` is asked again only then.
    let mut known = if paused { None } else { Some(0) };
    // `read()` of an empty BIO returns b'', which asyncio then ignores.
    if !paused && pending(&outgoing)? > 0 {
        let data = call_method(&outgoing, intern!(py, "read"), &[])?;
        if data.len()? > 0 {
            let transport = field(p, "_transport", |s| &s.transport)?;
            if !transport.is_instance(stream::class().type_object(py))? {
                known = None;
            }
            call_method(&transport, intern!(py, "write"), &[&data])?;
        }
    }
    control_app_writing(p, &outgoing, known)
}

/// Whether `size` crosses a flow-control mark: `>= high` when running,
/// `<= low` when paused.
fn crosses(size: &Bound<'_, PyAny>, paused: bool, low: &Bound<'_, PyAny>, high: &Bound<'_, PyAny>) -> PyResult<bool> {
    if let (Ok(s), Ok(l), Ok(h)) = (size.extract::<i64>(), low.extract::<i64>(), high.extract::<i64>()) {
        return Ok(if paused { s <= l } else { s >= h });
    }
    if paused {
        size.le(low)
    } else {
        size.ge(high)
    }
}

/// `_control_app_writing()`, handed to asyncio when a mark is crossed.
/// `pending`: the outgoing BIO's size when the caller knows it.
fn control_app_writing(
    p: &Bound<'_, SslRecordPath>,
    outgoing: &Bound<'_, PyAny>,
    pending: Option<u64>,
) -> PyResult<()> {
    let py = p.py();
    let buffered = field(p, "_write_buffer_size", |s| &s.write_buffer_size)?;
    let pending = match pending {
        Some(n) => n.into_pyobject(py)?.into_any(),
        None => outgoing.getattr(intern!(py, "pending"))?,
    };
    let size = pending.add(buffered)?;
    let paused = p.get().st.get(py).app_writing_paused.on;
    let low = field(p, "_outgoing_low_water", |s| &s.outgoing_low_water)?;
    let high = field(p, "_outgoing_high_water", |s| &s.outgoing_high_water)?;
    if crosses(&size, paused, &low, &high)? {
        call_method(p.as_any(), intern!(py, "_control_app_writing"), &[])?;
    }
    Ok(())
}

/// `_control_ssl_reading()`, handed to asyncio when a mark is crossed.
fn control_ssl_reading(p: &Bound<'_, SslRecordPath>) -> PyResult<()> {
    let py = p.py();
    let size = field(p, "_incoming", |s| &s.incoming)?.getattr(intern!(py, "pending"))?;
    let paused = p.get().st.get(py).ssl_reading_paused.on;
    let low = field(p, "_incoming_low_water", |s| &s.incoming_low_water)?;
    let high = field(p, "_incoming_high_water", |s| &s.incoming_high_water)?;
    if crosses(&size, paused, &low, &high)? {
        call_method(p.as_any(), intern!(py, "_control_ssl_reading"), &[])?;
    }
    Ok(())
}

fn is_bytes_like(data: &Bound<'_, PyAny>) -> bool {
    data.is_instance_of::<PyBytes>() || data.is_instance_of::<PyByteArray>() || data.is_instance_of::<PyMemoryView>()
}

/// The native protocol of `transport`, if its record path can take a write
/// now (WRAPPED, nothing in the backlog); else the protocol object, for
/// asyncio's `_write_appdata`.
fn writable_protocol<'py>(
    transport: &Bound<'py, PyAny>,
) -> PyResult<Result<Bound<'py, SslRecordPath>, Bound<'py, PyAny>>> {
    let proto = transport.getattr(intern!(transport.py(), "_ssl_protocol"))?;
    if let Ok(p) = proto.cast::<SslRecordPath>() {
        if state(p) == State::Wrapped && !field(p, "_write_backlog", |s| &s.write_backlog)?.is_truthy()? {
            return Ok(Ok(p.clone()));
        }
    }
    Ok(Err(proto))
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
    match writable_protocol(transport)? {
        Ok(p) => {
            let result = write_items(&p, std::slice::from_ref(data));
            fatal_on_exception(&p, result)
        }
        Err(proto) => {
            let list = PyTuple::new(py, [data])?.into_any();
            call_method(&proto, intern!(py, "_write_appdata"), &[&list]).map(drop)
        }
    }
}

/// `_SSLProtocolTransport.writelines(list_of_data)`: a list or tuple of
/// bytes-like objects natively; anything else (another iterable, an item
/// `_write_appdata` would fail on) through asyncio's `_write_appdata`.
fn app_writelines(transport: &Bound<'_, PyAny>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = transport.py();
    let items: Option<Vec<Bound<'_, PyAny>>> = if let Ok(l) = list_of_data.cast_exact::<PyList>() {
        Some(l.iter().collect())
    } else if let Ok(t) = list_of_data.cast_exact::<PyTuple>() {
        Some(t.iter().collect())
    } else {
        None
    };
    let items = items.filter(|v| v.iter().all(is_bytes_like));
    let proto = match (items, writable_protocol(transport)?) {
        (Some(items), Ok(p)) => {
            let result = write_items(&p, &items);
            return fatal_on_exception(&p, result);
        }
        (_, Ok(p)) => p.into_any(),
        (_, Err(proto)) => proto,
    };
    call_method(&proto, intern!(py, "_write_appdata"), &[list_of_data]).map(drop)
}

/// `_write_appdata(items)` with an empty backlog in the WRAPPED state, then
/// its `_do_write()` and `_process_outgoing()`. asyncio queues every item
/// and `_do_write` writes the queue out (retrying the rest of a partial
/// write); here each item is written at once, and what `_do_write` would
/// leave queued (from an `SSLWantReadError`/`SSLSyscallError` or another
/// error on) goes to the backlog, counted in `_write_buffer_size` as asyncio
/// counts it.
fn write_items(p: &Bound<'_, SslRecordPath>, items: &[Bound<'_, PyAny>]) -> PyResult<()> {
    let py = p.py();
    let (target, _) = ssl_target(p)?;
    for (i, item) in items.iter().enumerate() {
        let mut data = item.clone();
        loop {
            let data_len = data.len()?;
            match call_method(&target, intern!(py, "write"), &[&data]) {
                Ok(count) => {
                    let count: usize = count.extract()?;
                    if count >= data_len {
                        break;
                    }
                    // `self._write_backlog[0] = data[count:]`, written next.
                    // SAFETY: `data` is a live sequence; the result is a new
                    // reference or NULL with an error set.
                    data = unsafe {
                        Bound::from_owned_ptr_or_err(
                            py,
                            ffi::PySequence_GetSlice(data.as_ptr(), count as ffi::Py_ssize_t, ffi::PY_SSIZE_T_MAX),
                        )?
                    };
                }
                Err(err) => {
                    backlog(p, &data)?;
                    for rest in &items[i + 1..] {
                        backlog(p, rest)?;
                    }
                    if err.get_type(py).is_subclass(names(py)?.again.bind(py))? {
                        return process_outgoing(p);
                    }
                    return Err(err);
                }
            }
        }
    }
    process_outgoing(p)
}

/// `self._write_backlog.append(item); self._write_buffer_size += len(item)`.
fn backlog(p: &Bound<'_, SslRecordPath>, item: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = p.py();
    call_method(
        &field(p, "_write_backlog", |s| &s.write_backlog)?,
        intern!(py, "append"),
        &[item],
    )?;
    let size = field(p, "_write_buffer_size", |s| &s.write_buffer_size)?.add(item.len()?)?;
    p.setattr(intern!(py, "_write_buffer_size"), size)
}

fastcall_method!(app_write_method, "_SSLProtocolTransport.write", ["data"], |c| {
    c.at_most(1)?;
    app_write(&c.slf, &c.arg(0))?;
    Ok(c.py.None())
});

fastcall_method!(
    app_writelines_method,
    "_SSLProtocolTransport.writelines",
    ["list_of_data"],
    |c| {
        c.at_most(1)?;
        app_writelines(&c.slf, &c.arg(0))?;
        Ok(c.py.None())
    }
);

/// Give `ferroloop._sslproto._SSLProtocolTransport` (a subclass of asyncio's,
/// whose `__slots__` rule out a native base) the native `write` and `writelines`.
#[pyfunction]
fn _install_ssl_write(cls: &Bound<'_, PyType>) -> PyResult<()> {
    // SAFETY: `app_write` reaches everything through Python attributes of `self`.
    unsafe {
        install(
            cls,
            &[
                (c"write", app_write_method, c"Write some data bytes to the transport."),
                (
                    c"writelines",
                    app_writelines_method,
                    c"Write a list (or any iterable) of data bytes to the transport.",
                ),
            ],
        )
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_install_ssl_write, m)?)
}
