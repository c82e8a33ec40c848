//! Bytes-like arguments: borrowing their memory for a system call, or
//! holding a buffer export while data waits in a write queue.
//!
//! Mirrors what `socket.send(data)` does with its `y*` argument: a simple
//! (C-contiguous, byte-addressed) buffer export of any bytes-like object,
//! released afterwards. A non-contiguous memoryview fails exactly as there
//! (`BufferError`).
//!
//! # Invariants
//! - A [`HeldBuffer`] owns one buffer export and releases it exactly once,
//!   on drop, with the GIL held (it lives only in GIL-protected state).
//! - While the export is held, the exporter cannot resize or free the memory
//!   (`bytearray` raises `BufferError` on resize), so the pointer is stable.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes};

/// A held simple buffer export of a Python object.
pub(crate) struct HeldBuffer(Box<ffi::Py_buffer>);

impl std::fmt::Debug for HeldBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HeldBuffer({} bytes)", self.0.len)
    }
}

// SAFETY: only touched with the GIL held (module invariant).
unsafe impl Send for HeldBuffer {}

impl HeldBuffer {
    /// Export `obj`'s memory (`PyObject_GetBuffer(obj, PyBUF_SIMPLE)`).
    pub(crate) fn new(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        // SAFETY: a zeroed Py_buffer is valid storage for GetBuffer to fill.
        let mut view: Box<ffi::Py_buffer> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: `obj` is live; on success the export is owned by `view`.
        if unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), &raw mut *view, ffi::PyBUF_SIMPLE) } != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        Ok(Self(view))
    }

    /// Export `obj`'s memory for writing (`PyBUF_WRITABLE`).
    pub(crate) fn writable(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        // SAFETY: as in `new`.
        let mut view: Box<ffi::Py_buffer> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: `obj` is live; on success the export is owned by `view`.
        if unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), &raw mut *view, ffi::PyBUF_WRITABLE) } != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        Ok(Self(view))
    }

    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.0.buf.cast::<u8>().cast_const()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len as usize
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        if self.len() == 0 {
            return &[];
        }
        // SAFETY: the export keeps `buf..buf+len` valid while held.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len()) }
    }
}

/// `f(ptr, len)` over `obj`'s writable memory, the export held in a
/// `Py_buffer` on the stack for the call (no allocation, unlike
/// [`HeldBuffer::writable`]); the error of `PyObject_GetBuffer` otherwise.
pub(crate) fn with_writable<R>(obj: &Bound<'_, PyAny>, f: impl FnOnce(*mut u8, usize) -> R) -> PyResult<R> {
    struct Export(ffi::Py_buffer);
    impl Drop for Export {
        fn drop(&mut self) {
            // SAFETY: releases the export taken below, once, with the GIL held.
            unsafe { ffi::PyBuffer_Release(&raw mut self.0) };
        }
    }
    // SAFETY: a zeroed `Py_buffer` is the documented initial state.
    let mut view: ffi::Py_buffer = unsafe { std::mem::zeroed() };
    // SAFETY: `obj` is live; on success the export is released by `Export`'s
    // drop, and `view` is not moved before that (it is moved into `Export`
    // only after a successful export, and a `Py_buffer` taken with
    // `PyBUF_WRITABLE` holds no pointer into itself).
    if unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), &raw mut view, ffi::PyBUF_WRITABLE) } != 0 {
        return Err(PyErr::fetch(obj.py()));
    }
    let export = Export(view);
    Ok(f(export.0.buf.cast::<u8>(), export.0.len as usize))
}

impl Drop for HeldBuffer {
    fn drop(&mut self) {
        // SAFETY: releases the export taken in `new`, once, with the GIL held.
        unsafe { ffi::PyBuffer_Release(&raw mut *self.0) };
    }
}

/// Run `f` on the bytes of a bytes-like object: `bytes` and `bytearray`
/// directly, anything else through a temporary buffer export.
/// `f` must not call into Python (the memory of a `bytearray` may move then).
pub(crate) fn with_bytes<R>(obj: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> R) -> PyResult<R> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(f(b.as_bytes()));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        // SAFETY: no Python code runs while `f` reads the slice (contract).
        return Ok(f(unsafe { b.as_bytes() }));
    }
    let held = HeldBuffer::new(obj)?;
    Ok(f(held.as_slice()))
}

extern "C" {
    /// CPython's `_PyBytes_Resize` (exported, not in PyO3's bindings):
    /// resizes a bytes object that has a single reference.
    fn _PyBytes_Resize(bytes: *mut *mut ffi::PyObject, newsize: ffi::Py_ssize_t) -> std::os::raw::c_int;
}

/// A new `bytes` of up to `n` bytes filled by `fill` (which returns how many
/// it wrote), without an intermediate copy; shrunk to the written size.
pub(crate) fn new_bytes_with(
    py: Python<'_>,
    n: usize,
    fill: impl FnOnce(&mut [u8]) -> std::io::Result<usize>,
) -> std::io::Result<Bound<'_, PyBytes>> {
    let len = ffi::Py_ssize_t::try_from(n).map_err(|_| std::io::Error::from_raw_os_error(12))?;
    // SAFETY: a NULL source asks for an uninitialised bytes object of `len`
    // bytes, which we own until returned.
    let mut obj = unsafe { ffi::PyBytes_FromStringAndSize(std::ptr::null(), len) };
    if obj.is_null() {
        // MemoryError is set; report ENOMEM to the caller's error path.
        drop(PyErr::fetch(py));
        return Err(std::io::Error::from_raw_os_error(12));
    }
    // SAFETY: the object's buffer holds `n` writable bytes until it is shared.
    let buf = unsafe { std::slice::from_raw_parts_mut(ffi::PyBytes_AsString(obj).cast::<u8>(), n) };
    let written = match fill(buf) {
        Ok(w) => w.min(n),
        Err(e) => {
            // SAFETY: our own reference, never shared.
            unsafe { ffi::Py_DECREF(obj) };
            return Err(e);
        }
    };
    if written != n {
        // SAFETY: `obj` is a bytes object with a single reference (ours);
        // `_PyBytes_Resize` may move it and updates the pointer.
        if unsafe { _PyBytes_Resize(&raw mut obj, written as ffi::Py_ssize_t) } != 0 {
            drop(PyErr::fetch(py));
            return Err(std::io::Error::from_raw_os_error(12));
        }
    }
    // SAFETY: a new, non-null reference to a bytes object.
    Ok(unsafe { Bound::from_owned_ptr(py, obj).cast_into_unchecked() })
}
