//! `Handle` and `TimerHandle`: what `call_soon`, `call_later`, `call_at` and
//! `add_reader` return.
//!
//! Mirrors `asyncio.events.Handle` / `TimerHandle`: the same attributes
//! (`_callback`, `_args`, `_context`, `_loop`, `_cancelled`, `_source_traceback`,
//! `_repr`, `_when`, `_scheduled`), the same `cancel()` semantics (drop the
//! callback and args; keep the repr in debug mode; a scheduled timer bumps the
//! loop's cancelled-timer count) and the same `repr` (built by the Python hook
//! with asyncio's own formatting helpers). They are native classes, so they are
//! not instances of `asyncio.Handle` (docs/compatibility.md, D-001).
//!
//! # Invariants
//! - `st` is borrowed only briefly; callbacks run on clones of the references.
//! - References dropped by `cancel()` are released after the borrow ends,
//!   because dropping can run arbitrary `__del__` code.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::types::{PyFloat, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use crate::event_loop::EventLoop;
use crate::py::call::run_in_context;
use crate::py::cell::GilCell;
use crate::py::fastcall::{fastcall_method, Call};
use crate::py::gc;
use crate::py::held::Held;
use crate::py::hooks::hooks;

/// Mutable part of a handle.
#[derive(Debug, Default)]
pub(crate) struct HandleState {
    pub callback: Option<Held<PyAny>>,
    pub args: Option<Held<PyTuple>>,
    pub context: Option<Held<PyAny>>,
    pub loop_: Option<Held<EventLoop>>,
    pub source_traceback: Option<Held<PyAny>>,
    pub repr: Option<Held<PyAny>>,
    pub cancelled: bool,
    /// `context` is a copy out of the cycle collector (see `Handle::hide_context`).
    context_hidden: bool,
}

impl HandleState {
    /// Give a hidden context back to the collector.
    fn expose_context(&mut self) {
        if self.context_hidden {
            self.context_hidden = false;
            if let Some(ctx) = &self.context {
                gc::track(ctx.as_ptr());
            }
        }
    }
}

impl Drop for HandleState {
    fn drop(&mut self) {
        // Before the fields release their references: see `Handle::hide_context`.
        self.expose_context();
    }
}

impl gc::GcRefs for HandleState {
    fn visit_refs(&self, v: &gc::Visitor<'_, '_>) -> Result<(), gc::GcStop> {
        v.visit(self.callback.as_deref())?;
        v.visit(self.args.as_deref())?;
        v.visit(self.context.as_deref())?;
        v.visit(self.loop_.as_deref())?;
        v.visit(self.source_traceback.as_deref())?;
        v.visit(self.repr.as_deref())
    }
}

/// `asyncio.Handle`'s native counterpart.
#[pyclass(module = "ferroloop._ferroloop", subclass, frozen, weakref)]
#[derive(Debug)]
pub struct Handle {
    pub(crate) st: GilCell<HandleState>,
    /// `UNTRACKED_HANDLE` when the running loop took it out of the cycle collector.
    gc_flags: AtomicU8,
}

const UNTRACKED_HANDLE: u8 = 1;

impl Handle {
    pub(crate) fn new(
        callback: Py<PyAny>,
        args: Py<PyTuple>,
        context: Py<PyAny>,
        loop_: Py<EventLoop>,
        source_traceback: Option<Py<PyAny>>,
    ) -> Self {
        Self {
            st: GilCell::new(HandleState {
                callback: Some(Held::new(callback)),
                args: Some(Held::new(args)),
                context: Some(Held::new(context)),
                loop_: Some(Held::new(loop_)),
                source_traceback: source_traceback.map(Held::new),
                repr: None,
                cancelled: false,
                context_hidden: false,
            }),
            gc_flags: AtomicU8::new(0),
        }
    }

    pub(crate) fn is_cancelled(&self, py: Python<'_>) -> bool {
        self.st.get(py).cancelled
    }

    /// Take the handle's context out of the cycle collector while the running
    /// loop owns the handle; call only for a copy the loop made for it
    /// (`context=None`), which nothing else references yet.
    ///
    /// A burst of queued callbacks otherwise puts thousands of contexts in
    /// every collection: with `call_soon_threadsafe` from another thread about
    /// a fifth of the loop's time went to the collector walking them. The copy
    /// is tracked again before anything else can keep it: when Python asks
    /// the handle for it (`get_context()`, `_context`), when the handle itself
    /// is tracked again (`release`), and before the handle lets go of it
    /// (`Drop for HandleState`) — CPython's `context_tp_dealloc` untracks
    /// without checking, so a context must never be deallocated untracked;
    /// while it is hidden, the handle's reference keeps it alive.
    pub(crate) fn hide_context(&self, py: Python<'_>) {
        let mut st = self.st.get_mut(py);
        if st.context_hidden {
            return;
        }
        if let Some(ctx) = &st.context {
            if gc::refcnt(ctx.as_ptr()) == 1 {
                gc::untrack(ctx.as_ptr());
                st.context_hidden = true;
            }
        }
    }

    /// `Handle.cancel()` body shared by both classes.
    fn cancel_impl(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let debug = {
            let st = this.st.get(py);
            if st.cancelled {
                return Ok(());
            }
            st.loop_.as_ref().is_some_and(|l| l.get().debug(py))
        };
        this.st.get_mut(py).cancelled = true;
        if debug {
            // Keep a representation to log "Executing <Handle...> took ..." later.
            let r = hooks(py)?.handle_repr.call1(py, (slf,))?;
            let old = this.st.get_mut(py).repr.replace(Held::new(r));
            drop(old);
        }
        let dropped = {
            let mut st = this.st.get_mut(py);
            (st.callback.take(), st.args.take())
        };
        drop(dropped);
        Ok(())
    }
}

/// Run a native handle as `Handle._run` does: call the callback in its
/// context; report an exception to the loop's exception handler, except
/// `SystemExit`/`KeyboardInterrupt`, which propagate.
pub(crate) fn run_handle(py: Python<'_>, handle: &Py<Handle>) -> PyResult<()> {
    // Clones are `Held`, so releasing them after the call skips PyO3's
    // thread-state lookup (see `py::held`).
    let (callback, args, context) = {
        let st = handle.get().st.get(py);
        if st.cancelled {
            return Ok(());
        }
        match (&st.callback, &st.args, &st.context) {
            (Some(c), Some(a), Some(x)) => (c.clone_ref(py), a.clone_ref(py), x.clone_ref(py)),
            _ => return Ok(()),
        }
    };
    match run_in_context(py, &context, &callback, &args) {
        Ok(()) => Ok(()),
        Err(err) => {
            if err.is_instance_of::<PySystemExit>(py) || err.is_instance_of::<PyKeyboardInterrupt>(py) {
                return Err(err);
            }
            let exc = err.into_value(py);
            hooks(py)?.report_error.call1(py, (handle, exc))?;
            Ok(())
        }
    }
}

/// A new handle of the running loop: only the loop references it, so it
/// leaves the cycle collector (see `py::gc`).
pub(crate) fn untrack_owned(h: &Bound<'_, Handle>) {
    gc::untrack(h.as_ptr());
    h.get().gc_flags.store(UNTRACKED_HANDLE, Ordering::Relaxed);
}

/// The loop is done with `h`: if nothing else can ever see it again (only
/// the loop references it, no weak reference, a plain `Handle`), clear it for
/// reuse and return true. Reusing such an object is unobservable, and it
/// saves an allocation, a deallocation and the collector's bookkeeping.
pub(crate) fn try_recycle(py: Python<'_>, h: &Py<Handle>) -> bool {
    if gc::refcnt(h.as_ptr()) != 1 || gc::has_weakrefs(h.as_ptr()) {
        return false;
    }
    let b = h.bind(py);
    if !(b.is_exact_instance_of::<Handle>() || b.is_exact_instance_of::<TimerHandle>()) {
        return false;
    }
    let this = h.get();
    let old = std::mem::take(&mut *this.st.get_mut(py));
    // Releasing the callback and friends can run arbitrary code, so it happens
    // with no borrow held; afterwards the handle must still be ours alone.
    drop(old);
    if gc::refcnt(h.as_ptr()) != 1 {
        return false;
    }
    gc::untrack(h.as_ptr());
    this.gc_flags.store(0, Ordering::Relaxed);
    true
}

/// Refill a recycled handle (see `try_recycle`) with a new call.
pub(crate) fn reinit(
    py: Python<'_>,
    h: &Py<Handle>,
    callback: Py<PyAny>,
    args: Py<PyTuple>,
    context: Py<PyAny>,
    loop_: Py<EventLoop>,
    source_traceback: Option<Py<PyAny>>,
) {
    let mut st = h.get().st.get_mut(py);
    st.callback = Some(Held::new(callback));
    st.args = Some(Held::new(args));
    st.context = Some(Held::new(context));
    st.loop_ = Some(Held::new(loop_));
    st.source_traceback = source_traceback.map(Held::new);
}

/// A handle created while the loop is not running (PyO3's freelist hands out
/// untracked objects): make sure the collector sees it.
pub(crate) fn ensure_tracked(h: &Bound<'_, Handle>) {
    gc::track(h.as_ptr());
}

/// The loop lets go of `h`: give it back to the collector if it outlives us
/// (`force`: the loop keeps it but stops running).
pub(crate) fn release(py: Python<'_>, h: &Py<Handle>, force: bool) {
    let flags = h.get().gc_flags.swap(0, Ordering::Relaxed);
    if flags == 0 || (!force && gc::refcnt(h.as_ptr()) <= 1) {
        return;
    }
    // A cycle through the handle may run through its context.
    h.get().st.get_mut(py).expose_context();
    gc::track(h.as_ptr());
}

// `cancel`, `cancelled`, `get_context`, `_run` and `TimerHandle`'s `cancel`
// and `when` are fastcall methods (`install`): argument errors then read as
// those of asyncio's Python methods.
fn me<'a, 'py>(c: &'a Call<'_, 'py>) -> &'a Bound<'py, Handle> {
    // SAFETY: the method descriptor of `Handle` (where these methods are
    // installed) type-checked `self`.
    unsafe { c.slf.cast_unchecked::<Handle>() }
}

fn timer<'a, 'py>(c: &'a Call<'_, 'py>) -> &'a Bound<'py, TimerHandle> {
    // SAFETY: as above, for the methods installed on `TimerHandle`.
    unsafe { c.slf.cast_unchecked::<TimerHandle>() }
}

fastcall_method!(handle_cancel, "Handle.cancel", [], |c| {
    c.no_arguments()?;
    Handle::cancel_impl(me(&c))?;
    Ok(c.py.None())
});

fastcall_method!(handle_cancelled, "Handle.cancelled", [], |c| {
    c.no_arguments()?;
    let cancelled = me(&c).get().is_cancelled(c.py);
    Ok(pyo3::types::PyBool::new(c.py, cancelled).to_owned().into_any().unbind())
});

fastcall_method!(handle_get_context, "Handle.get_context", [], |c| {
    c.no_arguments()?;
    let ctx = me(&c).get().exposed_context(c.py);
    Ok(ctx.unwrap_or_else(|| c.py.None()))
});

impl Handle {
    /// The callback's context, for Python code: which may keep it, so it is
    /// an ordinary tracked object from now on.
    fn exposed_context(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        let mut st = self.st.get_mut(py);
        st.expose_context();
        st.context.as_ref().map(|c| c.to_py(py))
    }
}

fastcall_method!(handle_run, "Handle._run", [], |c| {
    c.no_arguments()?;
    run_handle(c.py, &me(&c).clone().unbind())?;
    Ok(c.py.None())
});

fastcall_method!(timer_cancel, "TimerHandle.cancel", [], |c| {
    c.no_arguments()?;
    TimerHandle::cancel_timer(timer(&c))?;
    Ok(c.py.None())
});

fastcall_method!(timer_when, "TimerHandle.when", [], |c| {
    c.no_arguments()?;
    let when = timer(&c).get().when();
    Ok(PyFloat::new(c.py, when).into_any().unbind())
});

/// Install the fastcall methods of `Handle` and `TimerHandle` (once, at import).
pub(crate) fn install(py: Python<'_>) -> PyResult<()> {
    // SAFETY: each method treats `self` as an instance of the class it is
    // installed on (`me`/`timer`), which its method descriptor guarantees.
    unsafe {
        crate::py::fastcall::install(
            &py.get_type::<Handle>(),
            &[
                (c"cancel", handle_cancel, c""),
                (c"cancelled", handle_cancelled, c""),
                (c"_run", handle_run, c""),
            ],
        )?;
        // New in 3.12, as on asyncio's handles.
        if py.version_info() >= (3, 12) {
            crate::py::fastcall::install(&py.get_type::<Handle>(), &[(c"get_context", handle_get_context, c"")])?;
        }
        crate::py::fastcall::install(
            &py.get_type::<TimerHandle>(),
            &[(c"cancel", timer_cancel, c""), (c"when", timer_when, c"")],
        )?;
    }
    Ok(())
}

#[pymethods]
impl Handle {
    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        if let Some(r) = &slf.get().st.get(py).repr {
            return Ok(r.to_py(py));
        }
        hooks(py)?.handle_repr.call1(py, (slf,))
    }

    #[getter]
    fn _callback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.st.get(py).callback.as_ref().map(|c| c.to_py(py))
    }

    #[getter]
    fn _args(&self, py: Python<'_>) -> Option<Py<PyTuple>> {
        self.st.get(py).args.as_ref().map(|c| c.to_py(py))
    }

    #[getter]
    fn _context(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.exposed_context(py)
    }

    #[getter]
    fn _loop(&self, py: Python<'_>) -> Option<Py<EventLoop>> {
        self.st.get(py).loop_.as_ref().map(|c| c.to_py(py))
    }

    #[getter]
    fn _cancelled(&self, py: Python<'_>) -> bool {
        self.is_cancelled(py)
    }

    #[getter]
    fn _source_traceback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.st.get(py).source_traceback.as_ref().map(|c| c.to_py(py))
    }

    #[setter(_source_traceback)]
    fn set_source_traceback_attr(&self, py: Python<'_>, value: Option<Py<PyAny>>) {
        let old = std::mem::replace(&mut self.st.get_mut(py).source_traceback, value.map(Held::new));
        drop(old);
    }

    #[getter]
    fn _repr(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.st.get(py).repr.as_ref().map(|c| c.to_py(py))
    }

    #[setter(_repr)]
    fn set_repr_attr(&self, py: Python<'_>, value: Option<Py<PyAny>>) {
        let old = std::mem::replace(&mut self.st.get_mut(py).repr, value.map(Held::new));
        drop(old);
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        gc::traverse(&self.st, &visit)
    }

    fn __clear__(&self) {
        gc::clear(&self.st);
    }
}

/// `asyncio.TimerHandle`'s native counterpart.
#[pyclass(module = "ferroloop._ferroloop", extends = Handle, frozen)]
#[derive(Debug)]
pub struct TimerHandle {
    /// The deadline's f64 bits (re-armed when a recycled timer is reused).
    when: AtomicU64,
    pub(crate) scheduled: AtomicBool,
}

impl TimerHandle {
    pub(crate) fn new(when: f64) -> Self {
        Self {
            when: AtomicU64::new(when.to_bits()),
            scheduled: AtomicBool::new(false),
        }
    }

    pub(crate) fn when(&self) -> f64 {
        f64::from_bits(self.when.load(Ordering::Relaxed))
    }

    pub(crate) fn set_when(&self, when: f64) {
        self.when.store(when.to_bits(), Ordering::Relaxed);
    }

    pub(crate) fn set_scheduled(&self, v: bool) {
        self.scheduled.store(v, Ordering::Relaxed);
    }

    pub(crate) fn is_scheduled(&self) -> bool {
        self.scheduled.load(Ordering::Relaxed)
    }
}

fn timer_eq(py: Python<'_>, a: &Bound<'_, TimerHandle>, b: &Bound<'_, TimerHandle>) -> PyResult<bool> {
    if a.get().when() != b.get().when() {
        return Ok(false);
    }
    let sa = a.as_super().get().st.get(py);
    let sb = b.as_super().get().st.get(py);
    if sa.cancelled != sb.cancelled {
        return Ok(false);
    }
    let (ca, cb) = (
        sa.callback.as_ref().map(|c| c.to_py(py)),
        sb.callback.as_ref().map(|c| c.to_py(py)),
    );
    let (aa, ab) = (
        sa.args.as_ref().map(|c| c.to_py(py)),
        sb.args.as_ref().map(|c| c.to_py(py)),
    );
    drop(sa);
    drop(sb);
    let same_cb = ca.into_pyobject(py)?.eq(cb)?;
    Ok(same_cb && aa.into_pyobject(py)?.eq(ab)?)
}

impl TimerHandle {
    /// `TimerHandle.cancel`: count it for the loop's heap clean-up, then
    /// `Handle.cancel`.
    fn cancel_timer(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let base = slf.as_super();
        if !base.get().is_cancelled(py) && slf.get().is_scheduled() {
            let lp = base.get().st.get(py).loop_.as_ref().map(|l| l.clone_ref(py));
            if let Some(lp) = lp {
                lp.get().timer_handle_cancelled(py);
            }
        }
        Handle::cancel_impl(base)
    }
}

#[pymethods]
impl TimerHandle {
    #[getter]
    fn _when(&self) -> f64 {
        self.when()
    }

    #[getter]
    fn _scheduled(&self) -> bool {
        self.is_scheduled()
    }

    #[setter(_scheduled)]
    fn set_scheduled_attr(&self, value: bool) {
        self.set_scheduled(value);
    }

    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        PyFloat::new(py, self.when()).hash()
    }

    fn __richcmp__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let Ok(other) = other.cast::<TimerHandle>() else {
            return Ok(py.NotImplemented());
        };
        let (a, b) = (slf.get().when(), other.get().when());
        let r = match op {
            CompareOp::Lt => a < b,
            CompareOp::Gt => a > b,
            CompareOp::Le => a < b || timer_eq(py, slf, other)?,
            CompareOp::Ge => a > b || timer_eq(py, slf, other)?,
            CompareOp::Eq => timer_eq(py, slf, other)?,
            CompareOp::Ne => !timer_eq(py, slf, other)?,
        };
        Ok(pyo3::types::PyBool::new(py, r).to_owned().into_any().unbind())
    }
}

/// Moving one owned reference between a class and its native base, without
/// touching the reference count (the object is the same; only the static
/// type changes).
impl Held<TimerHandle> {
    /// The same object, typed as its `Handle` base.
    pub(crate) fn into_handle(self, py: Python<'_>) -> Held<Handle> {
        // SAFETY: TimerHandle extends Handle, so the object is a valid Handle.
        unsafe { self.cast_unchecked(py) }
    }
}

impl Held<Handle> {
    /// The same object typed as `TimerHandle`, if it is exactly one.
    pub(crate) fn into_timer(self, py: Python<'_>) -> Result<Held<TimerHandle>, Self> {
        if !self.bind(py).is_exact_instance_of::<TimerHandle>() {
            return Err(self);
        }
        // SAFETY: the exact type was checked above.
        Ok(unsafe { self.cast_unchecked(py) })
    }
}
