//! One `bytes` object kept for reuse between reads.
//!
//! A transport hands `data_received` a new `bytes` per read. Most protocols
//! consume it and drop it before returning (an echo writes it, a parser
//! feeds it, a `StreamReader` copies it into its buffer); creating and
//! freeing it then costs more than the read itself for reads above
//! pymalloc's 512 bytes (glibc's general path: about 600 instructions of a
//! 2,700-instruction 1 KiB echo request). When the loop finds that it holds
//! the only reference left after the call, it keeps the object and refills
//! it in place for the next read of a similar size.
//!
//! # Invariants
//! - The spare object is an exact `bytes` this module created or was given
//!   back by [`SpareBytes::offer`] with a reference count of one: nobody
//!   else can observe it while it is refilled.
//! - Its allocation holds at least `cap` bytes of data (plus the NUL);
//!   a refill uses between half of `cap` and all of it, so a consumer that
//!   keeps the object holds at most twice the memory it needs.
//! - A refill writes the size, the data, the trailing NUL and resets the
//!   cached hash: the object is then exactly what `PyBytes_FromStringAndSize`
//!   would have made.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// A `bytes` with the capacity of its allocation.
#[derive(Debug)]
pub(crate) struct Lent<'py> {
    pub bytes: Bound<'py, PyBytes>,
    cap: usize,
}

impl<'py> Lent<'py> {
    /// A `bytes` made elsewhere (its capacity is its size).
    pub fn new(bytes: Bound<'py, PyBytes>) -> Self {
        let cap = bytes.as_bytes().len();
        Self { bytes, cap }
    }
}

/// The data of the exact `bytes` object `p`.
///
/// # Safety
/// `p` is a live exact `bytes` object.
unsafe fn data_ptr(p: *mut ffi::PyObject) -> *mut u8 {
    // SAFETY: the caller's guarantee; `ob_sval` starts the data.
    unsafe { (&raw mut (*p.cast::<ffi::PyBytesObject>()).ob_sval).cast::<u8>() }
}

/// Make the `bytes` object `p` hold its first `n` bytes: size, trailing NUL
/// and cached hash set as `PyBytes_FromStringAndSize` sets them.
///
/// # Safety
/// `p` is a live exact `bytes` object nobody else references, whose
/// allocation holds at least `n` + 1 bytes of data, the first `n` written.
unsafe fn set_len(p: *mut ffi::PyObject, n: usize) {
    // SAFETY: the caller's guarantee.
    unsafe {
        #[allow(deprecated)] // the cached hash exists through 3.14
        {
            (*p.cast::<ffi::PyBytesObject>()).ob_shash = -1;
        }
        (*p.cast::<ffi::PyVarObject>()).ob_size = n as ffi::Py_ssize_t;
        *data_ptr(p).add(n) = 0;
    }
}

/// The loop's spare `bytes` object (at most one).
#[derive(Debug, Default)]
pub(crate) struct SpareBytes {
    spare: Option<(Py<PyBytes>, usize)>,
}

/// Objects smaller than this come from pymalloc, which is as cheap as a
/// refill: they are neither kept nor do they displace the spare object.
const WORTH_KEEPING: usize = 512;

impl SpareBytes {
    /// A `bytes` equal to `data`: the spare object refilled when it fits,
    /// else a new one (the spare object stays for a later read).
    pub fn make<'py>(&mut self, py: Python<'py>, data: &[u8]) -> Lent<'py> {
        let n = data.len();
        let fits = matches!(&self.spare, Some((_, cap)) if n <= *cap && n * 2 >= *cap);
        if fits {
            if let Some((obj, cap)) = self.spare.take() {
                let bytes = obj.into_bound(py);
                // SAFETY: the module invariants: an exact bytes object that
                // only we reference, whose allocation holds `cap` + 1 bytes
                // of data; we write `n` <= `cap` bytes and the NUL after them.
                unsafe {
                    std::ptr::copy_nonoverlapping(data.as_ptr(), data_ptr(bytes.as_ptr()), n);
                    set_len(bytes.as_ptr(), n);
                }
                return Lent { bytes, cap };
            }
        }
        Lent {
            bytes: PyBytes::new(py, data),
            cap: n,
        }
    }

    /// Take `lent` back after its consumer returned: kept (in place of the
    /// spare object) if ours is the last reference.
    pub fn offer(&mut self, lent: Lent<'_>) {
        if lent.cap < WORTH_KEEPING {
            return;
        }
        // SAFETY: a live object; reading its reference count.
        let only_ours = unsafe { ffi::Py_REFCNT(lent.bytes.as_ptr()) } == 1;
        if only_ours && lent.bytes.is_exact_instance_of::<PyBytes>() {
            self.spare = Some((lent.bytes.unbind(), lent.cap));
        }
    }

    /// Drop the spare object (the loop is closing).
    pub fn clear(&mut self) -> Option<Py<PyBytes>> {
        self.spare.take().map(|(obj, _)| obj)
    }
}

/// A new `bytes` filled in place by the caller, then cut to what was
/// written (the native `SSLProtocol` reads every record of a batch into
/// one, as `SSLObject.read(n, buffer)` fills a buffer).
///
/// # Invariants
/// - Nobody else references `bytes` until [`Filling::finish`] returns it.
/// - `len <= cap`, and the allocation holds `cap` + 1 bytes of data.
pub(crate) struct Filling<'py> {
    bytes: Bound<'py, PyBytes>,
    cap: usize,
    len: usize,
}

impl<'py> Filling<'py> {
    /// An empty filling of `cap` bytes.
    pub fn new(py: Python<'py>, cap: usize) -> PyResult<Self> {
        // Never 0: that size returns the shared empty `bytes`.
        let cap = cap.max(1);
        // SAFETY: a NULL source makes an uninitialised bytes object of `cap`
        // bytes (NUL-terminated), which nothing reads before it is written.
        let obj = unsafe { ffi::PyBytes_FromStringAndSize(std::ptr::null(), cap as ffi::Py_ssize_t) };
        // SAFETY: a new reference or NULL with an error set.
        let bytes = unsafe { Bound::from_owned_ptr_or_err(py, obj)? }.cast_into::<PyBytes>()?;
        Ok(Self { bytes, cap, len: 0 })
    }

    /// A writable memoryview of the unfilled rest (valid until `advance`/`finish`).
    pub fn rest_view(&self) -> PyResult<Bound<'py, PyAny>> {
        let py = self.bytes.py();
        // SAFETY: `len <= cap` bytes of the object's data are filled; the
        // view covers the rest of the allocation, which only this filling
        // writes; the caller drops the view before `finish` hands the
        // object out.
        unsafe {
            let base = data_ptr(self.bytes.as_ptr());
            let ptr = ffi::PyMemoryView_FromMemory(
                base.add(self.len).cast(),
                (self.cap - self.len) as ffi::Py_ssize_t,
                ffi::PyBUF_WRITE,
            );
            Bound::from_owned_ptr_or_err(py, ptr)
        }
    }

    /// Bytes still free.
    pub fn room(&self) -> usize {
        self.cap - self.len
    }

    /// Bytes filled.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `n` more bytes were written by way of `rest_view`.
    pub fn advance(&mut self, n: usize) {
        self.len = (self.len + n).min(self.cap);
    }

    /// The `bytes` of the filled part: exactly what `PyBytes_FromStringAndSize`
    /// of those bytes would have made (the allocation may be larger).
    pub fn finish(self) -> Bound<'py, PyBytes> {
        // SAFETY: the invariants: ours alone, `len <= cap`; the size, the
        // NUL after the data and the cached hash are set as for a new object.
        unsafe { set_len(self.bytes.as_ptr(), self.len) };
        self.bytes
    }
}
