//! `call_soon`, `call_soon_threadsafe`, `call_later`, `call_at`, `_add_callback`.
//!
//! Mirrors `BaseEventLoop.call_soon`/`call_later`/`call_at`/
//! `call_soon_threadsafe`: the same checks in the same order (`call_later`
//! computes `time() + delay` before `call_at` checks for a closed loop), the
//! debug-mode `_check_thread`/`_check_callback` calls, and the source
//! traceback that debug mode attaches to every handle.
//!
//! # Thread safety of `call_soon_threadsafe`
//! The caller holds the GIL, so the push itself is serialised with the loop
//! thread. The loop sets `polling` (under the GIL) before it decides the poll
//! timeout and releases the GIL; a push that happens after that sees
//! `polling` and writes the eventfd, a push before it is seen by the timeout
//! decision (`_ready` not empty → timeout 0). Either way no wake-up is lost.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyFloat, PyInt, PyTuple};
use pyo3::PyClassInitializer;

use super::{EventLoop, Ready};
use crate::handles::{ensure_tracked, reinit, untrack_owned, Handle, TimerHandle};
use crate::py::call::copy_context;
use crate::py::held::Held;
use crate::py::hooks::hooks;

/// The debug-mode checks `call_soon`/`call_at` perform.
fn debug_checks(slf: &Bound<'_, EventLoop>, callback: &Bound<'_, PyAny>, method: &str) -> PyResult<()> {
    if method != "call_soon_threadsafe" {
        slf.call_method0("_check_thread")?;
    }
    slf.call_method1("_check_callback", (callback, method))?;
    Ok(())
}

/// The fields of a new handle: callback, args, context (copied when not
/// given), and the source traceback in debug mode.
type Parts = (Py<PyAny>, Py<PyTuple>, Py<PyAny>, Option<Py<PyAny>>, bool);

fn handle_parts(
    slf: &Bound<'_, EventLoop>,
    callback: Bound<'_, PyAny>,
    args: Bound<'_, PyTuple>,
    context: Option<Py<PyAny>>,
    debug: bool,
) -> PyResult<Parts> {
    let py = slf.py();
    let (context, copied) = match context {
        Some(c) if !c.is_none(py) => (c, false),
        _ => (copy_context(py)?, true),
    };
    let tb = if debug {
        Some(hooks(py)?.extract_stack.call0(py)?)
    } else {
        None
    };
    Ok((callback.unbind(), args.unbind(), context, tb, copied))
}

/// With this many callbacks and timers queued, a new handle's context copy
/// would likely outlive a young-generation collection (700 allocations on
/// 3.11/3.12, 2000 on 3.13) and then be walked by every older one, so the
/// running loop keeps it out of the collector (`Handle::hide_context`).
/// Below it the copy dies young and hiding it would only cost.
const HIDE_CONTEXTS_AT: usize = 1024;

/// GC bookkeeping for a new handle (see `py::gc`); `copied`: its context is
/// a copy made for it.
fn adopt(py: Python<'_>, this: &EventLoop, h: &Bound<'_, Handle>, copied: bool) {
    let hide = {
        let st = this.st.get(py);
        if !st.running {
            drop(st);
            ensure_tracked(h);
            return;
        }
        copied && st.ready.len() + st.timers.len() >= HIDE_CONTEXTS_AT
    };
    untrack_owned(h);
    if hide {
        h.get().hide_context(py);
    }
}

pub(crate) fn call_soon(
    slf: &Bound<'_, EventLoop>,
    callback: Bound<'_, PyAny>,
    args: Bound<'_, PyTuple>,
    context: Option<Py<PyAny>>,
    method: &str,
) -> PyResult<Py<Handle>> {
    let py = slf.py();
    let this = slf.get();
    let threadsafe = method == "call_soon_threadsafe";
    let debug = {
        let st = this.st.get(py);
        if st.closed {
            return Err(pyo3::exceptions::PyRuntimeError::new_err("Event loop is closed"));
        }
        st.debug
    };
    this.check_forked()?;
    if debug {
        debug_checks(slf, &callback, method)?;
    }
    let (cb, a, ctx, tb, copied) = handle_parts(slf, callback, args, context, debug)?;
    let pooled = this.st.get_mut(py).pool.pop();
    let handle = if let Some(h) = pooled {
        reinit(py, &h, cb, a, ctx, slf.clone().unbind(), tb);
        h.to_py(py)
    } else {
        Py::new(py, Handle::new(cb, a, ctx, slf.clone().unbind(), tb))?
    };
    adopt(py, this, handle.bind(py), copied);
    let mut st = this.st.get_mut(py);
    st.ready.push(Ready::Native(Held::new(handle.clone_ref(py))));
    if threadsafe && st.polling && !st.woken {
        st.woken = true;
        this.waker.wake();
    }
    Ok(handle)
}

/// `time() + delay` as a float: plain numbers directly, anything else through
/// Python's own `+` (so the error for a bad type is Python's).
fn deadline(py: Python<'_>, now: f64, delay: &Bound<'_, PyAny>) -> PyResult<f64> {
    if delay.is_none() {
        return Err(PyTypeError::new_err("delay must not be None"));
    }
    if let Ok(f) = delay.cast::<PyFloat>() {
        return Ok(now + f.value());
    }
    if delay.is_instance_of::<PyInt>() {
        if let Ok(i) = delay.extract::<i64>() {
            return Ok(now + i as f64);
        }
    }
    PyFloat::new(py, now).add(delay)?.extract()
}

pub(crate) fn call_later(
    slf: &Bound<'_, EventLoop>,
    delay: &Bound<'_, PyAny>,
    callback: Bound<'_, PyAny>,
    args: Bound<'_, PyTuple>,
    context: Option<Py<PyAny>>,
) -> PyResult<Py<TimerHandle>> {
    let py = slf.py();
    let when = deadline(py, ferroloop_core::clock::monotonic(), delay)?;
    schedule_timer(slf, When::Seconds(when), callback, args, context)
}

pub(crate) fn call_at(
    slf: &Bound<'_, EventLoop>,
    when: &Bound<'_, PyAny>,
    callback: Bound<'_, PyAny>,
    args: Bound<'_, PyTuple>,
    context: Option<Py<PyAny>>,
) -> PyResult<Py<TimerHandle>> {
    if when.is_none() {
        return Err(PyTypeError::new_err("when cannot be None"));
    }
    schedule_timer(slf, When::Object(when), callback, args, context)
}

/// A deadline already computed (`call_later`) or still a Python object (`call_at`).
enum When<'a, 'py> {
    Seconds(f64),
    Object(&'a Bound<'py, PyAny>),
}

/// The part of `call_at` after its argument checks (shared with `call_later`).
fn schedule_timer(
    slf: &Bound<'_, EventLoop>,
    when: When<'_, '_>,
    callback: Bound<'_, PyAny>,
    args: Bound<'_, PyTuple>,
    context: Option<Py<PyAny>>,
) -> PyResult<Py<TimerHandle>> {
    let py = slf.py();
    let this = slf.get();
    this.check_closed(py)?;
    let debug = this.debug(py);
    if debug {
        debug_checks(slf, &callback, "call_at")?;
    }
    let when = match when {
        When::Seconds(w) => w,
        // asyncio stores any object as `_when`; ferroloop needs a real number
        // (docs/compatibility.md, D-002).
        When::Object(obj) => obj.extract()?,
    };
    let (cb, a, ctx, tb, copied) = handle_parts(slf, callback, args, context, debug)?;
    let pooled = this.st.get_mut(py).timer_pool.pop();
    let handle = if let Some(t) = pooled {
        reinit(
            py,
            t.bind(py).as_super().as_unbound(),
            cb,
            a,
            ctx,
            slf.clone().unbind(),
            tb,
        );
        t.get().set_when(when);
        t.get().set_scheduled(true);
        t.to_py(py)
    } else {
        let base = Handle::new(cb, a, ctx, slf.clone().unbind(), tb);
        let timer = TimerHandle::new(when);
        timer.set_scheduled(true);
        Py::new(py, PyClassInitializer::from(base).add_subclass(timer))?
    };
    adopt(py, this, handle.bind(py).as_super(), copied);
    this.st.get_mut(py).timers.push(when, Held::new(handle.clone_ref(py)));
    Ok(handle)
}

pub(super) fn add_callback(slf: &Bound<'_, EventLoop>, handle: Bound<'_, PyAny>) -> PyResult<()> {
    let py = slf.py();
    let item = if let Ok(h) = handle.cast::<Handle>() {
        if h.get().is_cancelled(py) {
            return Ok(());
        }
        Ready::Native(Held::new(h.clone().unbind()))
    } else {
        if handle.getattr(pyo3::intern!(py, "_cancelled"))?.is_truthy()? {
            return Ok(());
        }
        Ready::Foreign(Held::new(handle.unbind()))
    };
    slf.get().st.get_mut(py).ready.push(item);
    Ok(())
}
