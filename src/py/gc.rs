//! Cycle-collector tracking of loop-owned objects.
//!
//! Handles are GC objects, as in
//! asyncio: a handle that user code keeps can sit in a reference cycle. But a
//! handle that only the *running* loop references cannot be garbage — the
//! loop is on the stack — so traversing it in every collection is wasted
//! work (it was about half the cost of `call_soon` with 100k pending handles).
//!
//! The rule: while the loop runs, a handle it creates is untracked; when the
//! loop lets go of it (after running it, dropping a cancelled timer, close),
//! the handle is tracked again if anybody else still holds it; when
//! `run_forever` returns, every handle still queued is tracked again, so an
//! abandoned stopped loop is collectable exactly as on asyncio.
//!
//! Only ferroloop's own classes may be untracked: their deallocation (PyO3)
//! uses the checked `PyObject_GC_UnTrack`. CPython's own types (a
//! `Context`, for one) untrack with an unchecked macro in `tp_dealloc`, which
//! corrupts the collector's list if the object was already untracked.
//!
//! PyO3's freelist re-initialises a reused object without tracking it, so
//! handles created while the loop is *not* running are tracked explicitly.

use pyo3::ffi;

/// Stop the cycle collector from traversing `obj` (a ferroloop pyclass instance only).
pub(crate) fn untrack(obj: *mut ffi::PyObject) {
    // SAFETY: `obj` is a live GC object (a ferroloop Handle or a Context)
    // owned by the caller; untracking an untracked object is checked first.
    unsafe {
        if ffi::PyObject_GC_IsTracked(obj) != 0 {
            ffi::PyObject_GC_UnTrack(obj.cast());
        }
    }
}

/// Let the cycle collector traverse `obj` (again).
pub(crate) fn track(obj: *mut ffi::PyObject) {
    // SAFETY: as in `untrack`; tracking twice is avoided by the check, and
    // the object is fully initialised (it was created by PyO3 or CPython).
    unsafe {
        if ffi::PyObject_GC_IsTracked(obj) == 0 {
            ffi::PyObject_GC_Track(obj.cast());
        }
    }
}

/// The reference count of `obj`.
pub(crate) fn refcnt(obj: *mut ffi::PyObject) -> isize {
    // SAFETY: `obj` is live for the duration of the call.
    unsafe { ffi::Py_REFCNT(obj) }
}
