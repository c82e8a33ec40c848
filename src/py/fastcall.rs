//! Raw vectorcall entry points for the loop's scheduling methods.
//!
//! `call_soon` is called for every Future callback and every Task step, so its
//! fixed cost matters more than anything else in the loop. These entry points
//! are installed on `EventLoop` at import (`install`) as `METH_FASTCALL |
//! METH_KEYWORDS` methods: the interpreter hands us the argument array
//! directly, with no PyO3 argument-description parsing in between. Argument
//! errors use the messages CPython gives for asyncio's Python methods.
//!
//! # Invariants
//! - Called by the interpreter with the GIL held (a method call).
//! - A panic is caught and raised as `PanicException`, never unwinds into C.
//! - The return value is a new reference, or NULL with an exception set.

use std::os::raw::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};

use crate::event_loop::{schedule, EventLoop};

/// The arguments of one vectorcall: positionals and keyword arguments.
struct Call<'a, 'py> {
    py: Python<'py>,
    slf: Bound<'py, EventLoop>,
    pos: &'a [*mut ffi::PyObject],
    /// The kwnames tuple (or null) and the keyword values after `pos`.
    kwnames: *mut ffi::PyObject,
    kwvalues: *const *mut ffi::PyObject,
    nkw: usize,
    /// Bit i set: keyword i was taken (at most 64 keywords are tracked).
    taken: u64,
}

impl<'py> Call<'_, 'py> {
    fn arg(&self, i: usize) -> Bound<'py, PyAny> {
        // SAFETY: `i < pos.len()` is checked by `parse`; the array entries are
        // borrowed references kept alive by the caller's frame.
        unsafe { Bound::from_borrowed_ptr(self.py, self.pos[i]) }
    }

    fn rest(&self, from: usize) -> PyResult<Bound<'py, PyTuple>> {
        if from >= self.pos.len() {
            return Ok(PyTuple::empty(self.py));
        }
        let items = (from..self.pos.len()).map(|i| self.arg(i));
        PyTuple::new(self.py, items)
    }

    /// Take the keyword `name`; the interned string is compared by identity
    /// first (C Tasks and Futures pass interned names).
    fn kw_name(&self, i: usize) -> Bound<'py, PyAny> {
        // SAFETY: i < nkw = len(kwnames); the tuple holds borrowed str objects.
        unsafe { Bound::from_borrowed_ptr(self.py, ffi::PyTuple_GET_ITEM(self.kwnames, i as ffi::Py_ssize_t)) }
    }

    fn kw_value(&self, i: usize) -> Bound<'py, PyAny> {
        // SAFETY: i < nkw; the values follow the positionals in the argument array.
        unsafe { Bound::from_borrowed_ptr(self.py, *self.kwvalues.add(i)) }
    }

    /// The keywords nobody took yet, as (name, value).
    fn remaining_kw(&self) -> impl Iterator<Item = (Bound<'py, PyAny>, Bound<'py, PyAny>)> + '_ {
        (0..self.nkw)
            .filter(|i| self.taken & (1 << i) == 0)
            .map(|i| (self.kw_name(i), self.kw_value(i)))
    }

    fn has_remaining_kw(&self) -> bool {
        self.remaining_kw().next().is_some()
    }

    fn take_kw(&mut self, name: &Bound<'py, PyString>) -> Option<Bound<'py, PyAny>> {
        for i in 0..self.nkw.min(64) {
            if self.taken & (1 << i) != 0 {
                continue;
            }
            let k = self.kw_name(i);
            if k.is(name) || k.eq(name).unwrap_or(false) {
                self.taken |= 1 << i;
                return Some(self.kw_value(i));
            }
        }
        None
    }

    /// The checks of a Python method that takes only `self`.
    fn no_arguments(&self, method: &str) -> PyResult<()> {
        self.reject_unknown_kw(method)?;
        if !self.pos.is_empty() {
            return Err(PyTypeError::new_err(format!(
                "BaseEventLoop.{method}() takes 1 positional argument but {} were given",
                self.pos.len() + 1
            )));
        }
        Ok(())
    }

    /// TypeError for the first keyword nobody took (asyncio's message).
    fn reject_unknown_kw(&self, method: &str) -> PyResult<()> {
        if let Some((name, _)) = self.remaining_kw().next() {
            return Err(PyTypeError::new_err(format!(
                "BaseEventLoop.{method}() got an unexpected keyword argument '{}'",
                name.str()?
            )));
        }
        Ok(())
    }
}

fn missing(method: &str, names: &[&str]) -> PyErr {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    let list = match quoted.len() {
        1 => quoted[0].clone(),
        _ => format!(
            "{} and {}",
            quoted[..quoted.len() - 1].join(", "),
            quoted[quoted.len() - 1]
        ),
    };
    let s = if names.len() == 1 { "" } else { "s" };
    PyTypeError::new_err(format!(
        "BaseEventLoop.{method}() missing {} required positional argument{s}: {list}",
        names.len()
    ))
}

/// Parse the vectorcall arguments; `required` are the fixed positional names.
///
/// # Safety
/// The pointers are those the interpreter passed to a METH_FASTCALL|METH_KEYWORDS method.
unsafe fn parse<'a, 'py>(
    py: Python<'py>,
    method: &str,
    required: &[&str],
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<Call<'a, 'py>> {
    // SAFETY: `slf` is the instance the method was called on, and the method
    // descriptor has already checked that it is an EventLoop (or subclass)
    // instance before calling us (`method_check_args` in CPython).
    let slf = unsafe { Bound::from_borrowed_ptr(py, slf).cast_into_unchecked::<EventLoop>() };
    // SAFETY: the interpreter's nargsf encoding; the flag bit is masked off.
    let nargs = unsafe { ffi::PyVectorcall_NARGS(nargsf as usize) } as usize;
    let nkw = if kwnames.is_null() {
        0
    } else {
        // SAFETY: kwnames is a tuple (vectorcall protocol).
        unsafe { ffi::PyTuple_GET_SIZE(kwnames) as usize }
    };
    if nargs < required.len() {
        return Err(missing(method, &required[nargs..]));
    }
    let pos = if nargs == 0 {
        &[][..]
    } else {
        // SAFETY: `args` points to at least `nargs` valid object pointers.
        unsafe { std::slice::from_raw_parts(args, nargs) }
    };
    // SAFETY: the keyword values follow the `nargs` positionals in `args`.
    let kwvalues = unsafe { args.add(nargs) };
    Ok(Call {
        py,
        slf,
        pos,
        kwnames,
        kwvalues,
        nkw,
        taken: 0,
    })
}

/// `context=` for the scheduling methods.
fn context_kw(c: &mut Call<'_, '_>, method: &str) -> PyResult<Option<Py<PyAny>>> {
    let ctx = c.take_kw(pyo3::intern!(c.py, "context")).map(Bound::unbind);
    c.reject_unknown_kw(method)?;
    Ok(ctx)
}

/// `callable(*args, **dict(zip(kwnames, kwvalues)))` through vectorcall:
/// `args` holds the positionals followed by the keyword values.
fn vectorcall<'py>(
    py: Python<'py>,
    callable: &Bound<'py, PyAny>,
    args: &[&Bound<'py, PyAny>],
    npos: usize,
    kwnames: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    // The fast paths pass at most four arguments; keep them on the stack.
    let mut ptrs = [std::ptr::null_mut::<ffi::PyObject>(); 4];
    if args.len() > ptrs.len() {
        return Err(pyo3::exceptions::PySystemError::new_err(
            "ferroloop: too many arguments for vectorcall",
        ));
    }
    for (slot, a) in ptrs.iter_mut().zip(args) {
        *slot = a.as_ptr();
    }
    // SAFETY: `ptrs` holds borrowed references kept alive by `args` for the
    // duration of the call; kwnames has exactly `args.len() - npos` names; the
    // result is a new reference or NULL with an exception set.
    let res = unsafe { ffi::PyObject_Vectorcall(callable.as_ptr(), ptrs.as_ptr(), npos, kwnames.as_ptr()) };
    if res.is_null() {
        Err(PyErr::fetch(py))
    } else {
        // SAFETY: a new, non-null reference that we take ownership of.
        Ok(unsafe { Bound::from_owned_ptr(py, res) })
    }
}

/// Interned keyword-name tuples for the calls the fast paths make.
fn kwnames<'py>(
    py: Python<'py>,
    cell: &'static pyo3::sync::PyOnceLock<Py<PyTuple>>,
    names: &[&str],
) -> PyResult<Bound<'py, PyTuple>> {
    let t = cell.get_or_try_init(py, || {
        let items: Vec<Bound<'_, PyString>> = names.iter().map(|n| PyString::intern(py, n)).collect();
        PyTuple::new(py, items).map(Bound::unbind)
    })?;
    Ok(t.bind(py).clone())
}

static TASK_KWNAMES: pyo3::sync::PyOnceLock<Py<PyTuple>> = pyo3::sync::PyOnceLock::new();
static FUTURE_KWNAMES: pyo3::sync::PyOnceLock<Py<PyTuple>> = pyo3::sync::PyOnceLock::new();

/// Run `body` with panics caught and errors raised.
fn finish(py: Python<'_>, body: impl FnOnce() -> PyResult<Py<PyAny>>) -> *mut ffi::PyObject {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(obj)) => obj.into_ptr(),
        Ok(Err(err)) => {
            err.restore(py);
            std::ptr::null_mut()
        }
        Err(_) => {
            PanicException::new_err("ferroloop panicked (this is a bug)").restore(py);
            std::ptr::null_mut()
        }
    }
}

macro_rules! entry {
    ($fn_name:ident, $method:literal, [$($req:literal),*], |$c:ident| $body:expr) => {
        unsafe extern "C" fn $fn_name(
            slf: *mut ffi::PyObject,
            args: *const *mut ffi::PyObject,
            nargsf: ffi::Py_ssize_t,
            kwnames: *mut ffi::PyObject,
        ) -> *mut ffi::PyObject {
            // SAFETY: the interpreter calls methods with the GIL held.
            let py = unsafe { Python::assume_attached() };
            finish(py, || {
                // SAFETY: the arguments are exactly what the interpreter passed.
                #[allow(unused_mut)]
                let mut $c = unsafe { parse(py, $method, &[$($req),*], slf, args, nargsf, kwnames) }?;
                $body
            })
        }
    };
}

entry!(call_soon, "call_soon", ["callback"], |c| {
    let ctx = context_kw(&mut c, "call_soon")?;
    let rest = c.rest(1)?;
    Ok(schedule::call_soon(&c.slf, c.arg(0), rest, ctx, "call_soon")?.into_any())
});

entry!(call_soon_threadsafe, "call_soon_threadsafe", ["callback"], |c| {
    let ctx = context_kw(&mut c, "call_soon_threadsafe")?;
    let rest = c.rest(1)?;
    Ok(schedule::call_soon(&c.slf, c.arg(0), rest, ctx, "call_soon_threadsafe")?.into_any())
});

entry!(call_later, "call_later", ["delay", "callback"], |c| {
    let ctx = context_kw(&mut c, "call_later")?;
    let rest = c.rest(2)?;
    Ok(schedule::call_later(&c.slf, &c.arg(0), c.arg(1), rest, ctx)?.into_any())
});

entry!(call_at, "call_at", ["when", "callback"], |c| {
    let ctx = context_kw(&mut c, "call_at")?;
    let rest = c.rest(2)?;
    Ok(schedule::call_at(&c.slf, &c.arg(0), c.arg(1), rest, ctx)?.into_any())
});

entry!(create_task, "create_task", ["coro"], |c| {
    let py = c.py;
    // Only the common case is native: no task factory, not in debug mode
    // (where asyncio trims the task's source traceback), the documented
    // keywords. Everything else is asyncio's own Python method.
    let simple = c.pos.len() == 1
        && c.nkw <= 2
        && !c.slf.get().debug(py)
        && c.slf.getattr(pyo3::intern!(py, "_task_factory"))?.is_none();
    let mut name = None;
    let mut context = None;
    if simple {
        name = c.take_kw(pyo3::intern!(py, "name"));
        context = c.take_kw(pyo3::intern!(py, "context"));
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
        let mut pos = vec![c.slf.clone().into_any()];
        pos.extend((0..c.pos.len()).map(|i| c.arg(i)));
        let base = crate::py::hooks::hooks(py)?.base_create_task.bind(py);
        return Ok(base.call(PyTuple::new(py, pos)?, Some(&kwargs))?.unbind());
    }
    c.slf.get().check_closed(py)?;
    let task_type = crate::py::hooks::hooks(py)?
        .tasks_module
        .bind(py)
        .getattr(pyo3::intern!(py, "Task"))?;
    let none = py.None().into_bound(py);
    let name = name.unwrap_or_else(|| none.clone());
    let context = context.unwrap_or(none);
    let names = kwnames(py, &TASK_KWNAMES, &["loop", "name", "context"])?;
    let slf = c.slf.as_any();
    Ok(vectorcall(py, &task_type, &[&c.arg(0), slf, &name, &context], 1, &names)?.unbind())
});

entry!(create_future, "create_future", [], |c| {
    c.no_arguments("create_future")?;
    let py = c.py;
    let fut_type = crate::py::hooks::hooks(py)?
        .futures_module
        .bind(py)
        .getattr(pyo3::intern!(py, "Future"))?;
    let names = kwnames(py, &FUTURE_KWNAMES, &["loop"])?;
    Ok(vectorcall(py, &fut_type, &[c.slf.as_any()], 0, &names)?.unbind())
});

entry!(get_debug, "get_debug", [], |c| {
    c.no_arguments("get_debug")?;
    Ok(pyo3::types::PyBool::new(c.py, c.slf.get().debug(c.py))
        .to_owned()
        .into_any()
        .unbind())
});

entry!(time, "time", [], |c| {
    c.no_arguments("time")?;
    Ok(pyo3::types::PyFloat::new(c.py, ferroloop_core::clock::monotonic())
        .into_any()
        .unbind())
});

type Raw = unsafe extern "C" fn(
    *mut ffi::PyObject,
    *const *mut ffi::PyObject,
    ffi::Py_ssize_t,
    *mut ffi::PyObject,
) -> *mut ffi::PyObject;

/// Install the entry points as methods of `EventLoop` (once, at import).
pub(crate) fn install(py: Python<'_>) -> PyResult<()> {
    let ty = py.get_type::<EventLoop>();
    let methods: [(&'static std::ffi::CStr, Raw, &'static std::ffi::CStr); 8] = [
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
    ];
    for (name, func, doc) in methods {
        // The method table must outlive the type: leak it (four entries, once per process).
        let def: &'static mut ffi::PyMethodDef = Box::leak(Box::new(ffi::PyMethodDef {
            ml_name: name.as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunctionFastWithKeywords: func,
            },
            ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
            ml_doc: doc.as_ptr().cast::<c_char>(),
        }));
        // SAFETY: `ty` is a live type object and `def` is 'static.
        let descr = unsafe { ffi::PyDescr_NewMethod(ty.as_type_ptr(), def) };
        if descr.is_null() {
            return Err(PyErr::fetch(py));
        }
        // SAFETY: a new reference returned by PyDescr_NewMethod.
        let descr = unsafe { Bound::from_owned_ptr(py, descr) };
        ty.setattr(name.to_str().map_err(|e| PyValueError::new_err(e.to_string()))?, descr)?;
    }
    Ok(())
}
