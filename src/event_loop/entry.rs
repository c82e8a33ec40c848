//! The loop's hot methods as raw vectorcall entry points.
//!
//! `call_soon` is called for every Future callback and every Task step, so its
//! fixed cost matters more than anything else in the loop. These entry points
//! are installed on `EventLoop` at import ([`install`]) as fastcall methods
//! (see `py::fastcall`); argument errors use the messages CPython gives for
//! asyncio's `BaseEventLoop` methods.
//!
//! # Invariants
//! - `c.slf` is an `EventLoop` (or subclass) instance: the method descriptor
//!   checked it before calling us (`method_check_args` in CPython).

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::{schedule, EventLoop};
use crate::py::fastcall::{fastcall_method, kwnames, vectorcall, Call, KwName};

static TASK_KWNAMES: pyo3::sync::PyOnceLock<Py<PyTuple>> = pyo3::sync::PyOnceLock::new();
static FUTURE_KWNAMES: pyo3::sync::PyOnceLock<Py<PyTuple>> = pyo3::sync::PyOnceLock::new();

fn this<'a, 'py>(c: &'a Call<'_, 'py>) -> &'a Bound<'py, EventLoop> {
    // SAFETY: see the module invariant: the descriptor type-checked `self`.
    unsafe { c.slf.cast_unchecked::<EventLoop>() }
}

static CONTEXT: KwName = KwName::new("context");
static NAME: KwName = KwName::new("name");

/// `context=` for the scheduling methods.
fn context_kw(c: &mut Call<'_, '_>) -> PyResult<Option<Py<PyAny>>> {
    let ctx = c.take_kw(&CONTEXT).map(Bound::unbind);
    c.reject_unknown_kw()?;
    Ok(ctx)
}

fastcall_method!(call_soon, "BaseEventLoop.call_soon", ["callback"], ["context"], |c| {
    let ctx = context_kw(&mut c)?;
    let rest = c.rest(1)?;
    Ok(schedule::call_soon(this(&c), c.arg(0), rest, ctx, "call_soon")?.into_any())
});

fastcall_method!(
    call_soon_threadsafe,
    "BaseEventLoop.call_soon_threadsafe",
    ["callback"],
    ["context"],
    |c| {
        let ctx = context_kw(&mut c)?;
        let rest = c.rest(1)?;
        Ok(schedule::call_soon(this(&c), c.arg(0), rest, ctx, "call_soon_threadsafe")?.into_any())
    }
);

fastcall_method!(
    call_later,
    "BaseEventLoop.call_later",
    ["delay", "callback"],
    ["context"],
    |c| {
        let ctx = context_kw(&mut c)?;
        let rest = c.rest(2)?;
        Ok(schedule::call_later(this(&c), &c.arg(0), c.arg(1), rest, ctx)?.into_any())
    }
);

fastcall_method!(
    call_at,
    "BaseEventLoop.call_at",
    ["when", "callback"],
    ["context"],
    |c| {
        let ctx = context_kw(&mut c)?;
        let rest = c.rest(2)?;
        Ok(schedule::call_at(this(&c), &c.arg(0), c.arg(1), rest, ctx)?.into_any())
    }
);

fastcall_method!(
    create_task,
    "BaseEventLoop.create_task",
    ["coro"],
    ["name", "context"],
    |c| {
        let py = c.py;
        // Only the common case is native: no task factory, not in debug mode
        // (where asyncio trims the task's source traceback), the documented
        // keywords. Everything else is asyncio's own Python method.
        let simple = c.pos.len() == 1
            && c.nkw <= 2
            && !this(&c).get().debug(py)
            && c.slf.getattr(pyo3::intern!(py, "_task_factory"))?.is_none();
        let mut name = None;
        let mut context = None;
        if simple {
            name = c.take_kw(&NAME);
            context = c.take_kw(&CONTEXT);
        }
        if !simple || c.has_remaining_kw() {
            let kwargs = pyo3::types::PyDict::new(py);
            for (k, v) in c.remaining_kw() {
                kwargs.set_item(k, v)?;
            }
            if let Some(n) = &name {
                kwargs.set_item("name", n)?;
            }
            if let Some(x) = &context {
                kwargs.set_item("context", x)?;
            }
            let mut pos = vec![c.slf.clone()];
            pos.extend((0..c.pos.len()).map(|i| c.arg(i)));
            let base = crate::py::hooks::hooks(py)?.base_create_task.bind(py);
            return Ok(base.call(PyTuple::new(py, pos)?, Some(&kwargs))?.unbind());
        }
        this(&c).get().check_closed(py)?;
        let task_type = crate::py::hooks::hooks(py)?
            .tasks_module
            .bind(py)
            .getattr(pyo3::intern!(py, "Task"))?;
        let none = py.None().into_bound(py);
        let name = name.unwrap_or_else(|| none.clone());
        let context = context.unwrap_or(none);
        let names = kwnames(py, &TASK_KWNAMES, &["loop", "name", "context"])?;
        Ok(vectorcall(py, &task_type, &[&c.arg(0), &c.slf, &name, &context], 1, Some(&names))?.unbind())
    }
);

fastcall_method!(create_future, "BaseEventLoop.create_future", [], |c| {
    c.no_arguments()?;
    Ok(new_future(&c.slf)?.unbind())
});

/// `asyncio.futures.Future(loop=loop)` (what `create_future` returns).
pub(crate) fn new_future<'py>(lp: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = lp.py();
    let fut_type = crate::py::hooks::hooks(py)?
        .futures_module
        .bind(py)
        .getattr(pyo3::intern!(py, "Future"))?;
    let names = kwnames(py, &FUTURE_KWNAMES, &["loop"])?;
    vectorcall(py, &fut_type, &[lp], 0, Some(&names))
}

fastcall_method!(get_debug_general, "BaseEventLoop.get_debug", [], |c| {
    c.no_arguments()?;
    Ok(this(&c).get().debug_value(c.py))
});

/// `get_debug()`, which asyncio's `Future.__init__` and `Task.__init__` call
/// once per future. Called without arguments, it only reads the flag: no
/// argument parsing and no attach count, in a body a few cache lines long.
/// Anything else (arguments, a state borrowed elsewhere) goes through
/// `get_debug_general`, which reports it as before.
pub(crate) unsafe extern "C" fn get_debug(
    slf: *mut pyo3::ffi::PyObject,
    args: *const *mut pyo3::ffi::PyObject,
    nargsf: pyo3::ffi::Py_ssize_t,
    kwnames: *mut pyo3::ffi::PyObject,
) -> *mut pyo3::ffi::PyObject {
    // SAFETY: the interpreter's nargsf encoding; the flag bit is masked off.
    if unsafe { pyo3::ffi::PyVectorcall_NARGS(nargsf as usize) } == 0 && kwnames.is_null() {
        // SAFETY: the interpreter calls methods with the GIL held, and the
        // token does not outlive this call. PyO3's attach count matters only
        // to a `Py<T>` dropped on the way, and none is: the result is handed
        // to the caller as a new reference.
        let py = unsafe { Python::assume_attached() };
        // SAFETY: see the module invariant: the descriptor type-checked `self`.
        let lp = unsafe { pyo3::Borrowed::from_ptr(py, slf).cast_unchecked::<EventLoop>() };
        if let Some(v) = lp.get().try_debug_value(py) {
            return v.into_ptr();
        }
    }
    // SAFETY: the arguments are exactly what the interpreter passed.
    unsafe { get_debug_general(slf, args, nargsf, kwnames) }
}

fastcall_method!(time, "BaseEventLoop.time", [], |c| {
    c.no_arguments()?;
    Ok(pyo3::types::PyFloat::new(c.py, ferroloop_core::clock::monotonic())
        .into_any()
        .unbind())
});

fastcall_method!(is_closed, "BaseEventLoop.is_closed", [], |c| {
    c.no_arguments()?;
    let closed = this(&c).get().is_closed_flag(c.py);
    Ok(pyo3::types::PyBool::new(c.py, closed).to_owned().into_any().unbind())
});

fastcall_method!(run_once, "BaseEventLoop._run_once", [], |c| {
    c.no_arguments()?;
    super::run::run_once(this(&c))?;
    Ok(c.py.None())
});

fastcall_method!(write_to_self, "BaseSelectorEventLoop._write_to_self", [], |c| {
    c.no_arguments()?;
    // Wake the loop if it is blocked in a poll.
    this(&c).get().wake_if_polling(c.py);
    Ok(c.py.None())
});

/// Install the entry points as methods of `EventLoop` (once, at import).
pub(crate) fn install(py: Python<'_>) -> PyResult<()> {
    let ty = py.get_type::<EventLoop>();
    // SAFETY: the socket methods treat `self` as an EventLoop as well.
    unsafe { crate::py::fastcall::install(&ty, &crate::sock_ops::methods_for_loop())? };
    // SAFETY: every entry point treats `self` as an EventLoop, which the
    // method descriptor of `EventLoop` guarantees.
    unsafe {
        crate::py::fastcall::install(
            &ty,
            &[
                (
                    c"call_soon",
                    call_soon,
                    c"Arrange for a callback to be called as soon as possible.",
                ),
                (
                    c"call_soon_threadsafe",
                    call_soon_threadsafe,
                    c"Like call_soon(), but thread-safe.",
                ),
                (
                    c"call_later",
                    call_later,
                    c"Arrange for a callback to be called after `delay` seconds.",
                ),
                (c"call_at", call_at, c"Like call_later(), but uses an absolute time."),
                (
                    c"create_task",
                    create_task,
                    c"Schedule a coroutine object. Return a task object.",
                ),
                (
                    c"create_future",
                    create_future,
                    c"Create a Future object attached to the loop.",
                ),
                (c"get_debug", get_debug, c"Return True if the loop is in debug mode."),
                (c"time", time, c"Return the time according to the event loop's clock."),
                (c"is_closed", is_closed, c"Returns True if the event loop was closed."),
                (c"_run_once", run_once, c""),
                (c"_write_to_self", write_to_self, c""),
            ],
        )
    }
}
