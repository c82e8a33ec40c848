//! `Held<T>`: a strong reference owned by loop state, released without a
//! thread-state lookup.
//!
//! PyO3's `Drop for Py<T>` first asks a thread-local whether the thread is
//! attached to the interpreter (in a shared library that is a
//! `__tls_get_addr` call), several times per callback on the hot path.
//! References the loop holds are only ever dropped with the GIL held, so
//! `Held` decrements directly.
//!
//! # Invariants
//! - A `Held` is dropped only while the GIL is held: it lives in pyclass state
//!   (dropped by `tp_dealloc` or `tp_clear`, or by methods running under the
//!   GIL), never in anything moved into `Python::detach`.

use std::mem::ManuallyDrop;
use std::ops::Deref;

use pyo3::ffi;
use pyo3::prelude::*;

/// An owned reference that is released with a plain `Py_DECREF`.
#[repr(transparent)]
pub(crate) struct Held<T>(ManuallyDrop<Py<T>>);

impl<T> Held<T> {
    pub(crate) fn new(obj: Py<T>) -> Self {
        Self(ManuallyDrop::new(obj))
    }

    /// A second strong reference (`Py_INCREF`).
    pub(crate) fn clone_ref(&self, py: Python<'_>) -> Self {
        Self::new(self.0.clone_ref(py))
    }

    /// A `Py<T>` for handing to Python (a new strong reference).
    pub(crate) fn to_py(&self, py: Python<'_>) -> Py<T> {
        self.0.clone_ref(py)
    }
}

impl<T> std::fmt::Debug for Held<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Held({:p})", self.0.as_ptr())
    }
}

impl<T> Deref for Held<T> {
    type Target = Py<T>;

    fn deref(&self) -> &Py<T> {
        &self.0
    }
}

impl<T> Drop for Held<T> {
    fn drop(&mut self) {
        // SAFETY: the module invariant guarantees the GIL is held here; the
        // pointer is a strong reference this Held owns and releases once.
        unsafe { ffi::Py_DECREF(self.0.as_ptr()) }
    }
}

// SAFETY: like `Py<T>`, a `Held` may move between threads; it is only
// dereferenced or dropped with the GIL held (module invariant).
unsafe impl<T> Send for Held<T> {}
// SAFETY: see above; shared access only reads the pointer.
unsafe impl<T> Sync for Held<T> {}

impl<T> Held<T> {
    /// The same object and the same owned reference, typed as `U`, without
    /// touching the reference count.
    ///
    /// # Safety
    /// The object must be an instance of `U`.
    pub(crate) unsafe fn cast_unchecked<U>(self, py: Python<'_>) -> Held<U> {
        let me = ManuallyDrop::new(self);
        // SAFETY: the caller guarantees the type; the single reference owned
        // by `me` moves into the new Held (`me` is never dropped).
        let obj = unsafe { Bound::from_owned_ptr(py, me.0.as_ptr()).cast_into_unchecked::<U>() };
        Held::new(obj.unbind())
    }
}
