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

/// Positional arguments after the fixed ones, and the `context` keyword.
struct Call<'a, 'py> {
    py: Python<'py>,
    slf: Bound<'py, EventLoop>,
    pos: &'a [*mut ffi::PyObject],
    context: Option<Py<PyAny>>,
}

impl<'py> Call<'_, 'py> {
    fn arg(&self, i: usize) -> Bound<'py, PyAny> {
        // SAFETY: `i < pos.len()` is checked by `parse`; the array entries are
        // borrowed references kept alive by the caller's frame.
        unsafe { Bound::from_borrowed_ptr(self.py, self.pos[i]) }
    }

    fn rest(&self, from: usize) -> PyResult<Bound<'py, PyTuple>> {
        let items = (from..self.pos.len()).map(|i| self.arg(i));
        PyTuple::new(self.py, items)
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
    // SAFETY: `slf` is the bound instance the method was looked up on.
    let slf = unsafe { Bound::from_borrowed_ptr(py, slf) }.cast_into::<EventLoop>()?;
    // SAFETY: the interpreter's nargsf encoding; the flag bit is masked off.
    let nargs = unsafe { ffi::PyVectorcall_NARGS(nargsf as usize) } as usize;
    let mut context = None;
    if !kwnames.is_null() {
        // SAFETY: kwnames is a tuple of str; its values follow the positionals in `args`.
        let names = unsafe { Bound::from_borrowed_ptr(py, kwnames) }.cast_into::<PyTuple>()?;
        for (i, name) in names.iter().enumerate() {
            let name = name.cast_into::<PyString>()?;
            if name.to_str()? == "context" {
                // SAFETY: index nargs + i is within the argument array (len nargs + len(kwnames)).
                let v = unsafe { Bound::from_borrowed_ptr(py, *args.add(nargs + i)) };
                context = Some(v.unbind());
            } else {
                return Err(PyTypeError::new_err(format!(
                    "BaseEventLoop.{method}() got an unexpected keyword argument '{}'",
                    name.to_str()?
                )));
            }
        }
    }
    if nargs < required.len() {
        return Err(missing(method, &required[nargs..]));
    }
    let pos = if nargs == 0 {
        &[][..]
    } else {
        // SAFETY: `args` points to at least `nargs` valid object pointers.
        unsafe { std::slice::from_raw_parts(args, nargs) }
    };
    Ok(Call { py, slf, pos, context })
}

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
                let $c = unsafe { parse(py, $method, &[$($req),*], slf, args, nargsf, kwnames) }?;
                $body
            })
        }
    };
}

entry!(call_soon, "call_soon", ["callback"], |c| {
    let rest = c.rest(1)?;
    Ok(schedule::call_soon(&c.slf, c.arg(0), rest, c.context, "call_soon")?.into_any())
});

entry!(call_soon_threadsafe, "call_soon_threadsafe", ["callback"], |c| {
    let rest = c.rest(1)?;
    Ok(schedule::call_soon(&c.slf, c.arg(0), rest, c.context, "call_soon_threadsafe")?.into_any())
});

entry!(call_later, "call_later", ["delay", "callback"], |c| {
    let rest = c.rest(2)?;
    Ok(schedule::call_later(&c.slf, &c.arg(0), c.arg(1), rest, c.context)?.into_any())
});

entry!(call_at, "call_at", ["when", "callback"], |c| {
    let rest = c.rest(2)?;
    Ok(schedule::call_at(&c.slf, &c.arg(0), c.arg(1), rest, c.context)?.into_any())
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
    let methods: [(&'static std::ffi::CStr, Raw, &'static std::ffi::CStr); 4] = [
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
