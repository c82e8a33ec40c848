//! The cycle collector: tracking of loop-owned objects, and the one
//! traverse/clear helper every ferroloop class uses ([`GcRefs`]).
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
//! Only ferroloop's own classes may be left untracked: their deallocation
//! (PyO3) uses the checked `PyObject_GC_UnTrack`. CPython's own types (a
//! `Context`, for one) untrack with an unchecked macro in `tp_dealloc`, which
//! corrupts the collector's list if the object was already untracked. The
//! one exception, a handle's own context copy, is tracked again before its
//! handle lets go of it (`Handle::hide_context`).
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

/// True if any weak reference points at `obj` (or its type's weak-reference
/// slot is unknown).
pub(crate) fn has_weakrefs(obj: *mut ffi::PyObject) -> bool {
    // SAFETY: `obj` is live; `tp_weaklistoffset` of its type is the byte
    // offset of the weak-reference list pointer inside the object (a
    // non-positive offset is treated as "unknown": assume references exist).
    unsafe {
        let offset = (*ffi::Py_TYPE(obj)).tp_weaklistoffset;
        if offset <= 0 {
            return true;
        }
        // The slot is pointer-aligned in practice; read_unaligned does not rely on it.
        #[allow(clippy::cast_ptr_alignment)]
        let list = obj.cast::<u8>().offset(offset).cast::<*mut ffi::PyObject>();
        !list.read_unaligned().is_null()
    }
}

/// The collector stopped a traversal (a visit returned non-zero).
pub(crate) enum GcStop {
    Pyo3(pyo3::PyTraverseError),
    Raw(std::os::raw::c_int),
}

impl std::fmt::Debug for GcStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GcStop::Pyo3(_) => f.write_str("GcStop::Pyo3"),
            GcStop::Raw(rc) => write!(f, "GcStop::Raw({rc})"),
        }
    }
}

/// A `visitproc` of either a PyO3 class (`__traverse__`) or a raw type (`tp_traverse`).
#[allow(dead_code, reason = "raw types arrive with the native transports")]
pub(crate) enum Visitor<'a, 'b> {
    Pyo3(&'a pyo3::PyVisit<'b>),
    Raw(ffi::visitproc, *mut std::os::raw::c_void),
}

impl Visitor<'_, '_> {
    /// Visit one strong reference (`None` is skipped).
    pub(crate) fn visit<T>(&self, obj: Option<&pyo3::Py<T>>) -> Result<(), GcStop> {
        let Some(obj) = obj else { return Ok(()) };
        match self {
            Visitor::Pyo3(v) => v.call(obj).map_err(GcStop::Pyo3),
            Visitor::Raw(visit, arg) => {
                // SAFETY: the collector's visitproc with its own argument, on a
                // live object this traversal owns a reference to.
                let rc = unsafe { visit(obj.as_ptr(), *arg) };
                if rc == 0 {
                    Ok(())
                } else {
                    Err(GcStop::Raw(rc))
                }
            }
        }
    }
}

/// State holding Python references: what `__traverse__` visits and
/// `__clear__` releases. Every ferroloop class with Python references keeps
/// them in one such state behind a `GilCell` and uses [`traverse`]/[`clear`].
pub(crate) trait GcRefs: Default {
    /// Visit every strong reference.
    fn visit_refs(&self, v: &Visitor<'_, '_>) -> Result<(), GcStop>;
}

/// `__traverse__` for a PyO3 class whose references live in `cell`. A state
/// borrowed right now (the collector ran inside a method) is skipped: the
/// collector then treats its references as external, which is conservative.
pub(crate) fn traverse<T: GcRefs>(
    cell: &super::cell::GilCell<T>,
    visit: &pyo3::PyVisit<'_>,
) -> Result<(), pyo3::PyTraverseError> {
    let Some(st) = cell.try_get() else { return Ok(()) };
    match st.visit_refs(&Visitor::Pyo3(visit)) {
        Err(GcStop::Pyo3(e)) => Err(e),
        // A PyO3 visitor only produces PyO3 errors.
        Ok(()) | Err(GcStop::Raw(_)) => Ok(()),
    }
}

/// `tp_traverse` for a raw type whose references live in `cell`.
#[allow(dead_code, reason = "raw types arrive with the native transports")]
pub(crate) fn traverse_raw<T: GcRefs>(
    cell: &super::cell::GilCell<T>,
    visit: ffi::visitproc,
    arg: *mut std::os::raw::c_void,
) -> std::os::raw::c_int {
    let Some(st) = cell.try_get() else { return 0 };
    match st.visit_refs(&Visitor::Raw(visit, arg)) {
        Err(GcStop::Raw(rc)) => rc,
        _ => 0,
    }
}

/// `__clear__`/`tp_clear`: move the state out, then release it, so that code
/// run by the releases (`__del__`) never sees a live borrow.
/// The collector calls it with the GIL held.
pub(crate) fn clear<T: GcRefs>(cell: &super::cell::GilCell<T>) {
    let taken = match cell.try_get_mut() {
        Some(mut st) => std::mem::take(&mut *st),
        None => return,
    };
    drop(taken);
}
