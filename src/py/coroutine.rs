//! The C-level coroutine protocol for a raw class (`py::native_type`).
//!
//! A native coroutine is an awaitable that is its own iterator: `am_await`
//! returns it, `am_send` (what tasks and `await` use through `PyIter_Send`)
//! and `tp_iternext` step it, and its `send`/`throw`/`close` methods are
//! those of a generator-based coroutine. The logic lives in a
//! [`NativeCoroutine`] implementation; this module only translates between
//! it and the interpreter's calling conventions (`PYGEN_NEXT`/`RETURN`/
//! `ERROR`, `StopIteration(value)` for `send()`/`__next__`).
//!
//! # Invariants
//! - Slot functions are called with the GIL held, on instances of `T`'s class.
//! - A panic becomes a Python exception (never unwinds into C).

use std::os::raw::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::ffi;
use pyo3::panic::PanicException;
use pyo3::prelude::*;

use super::native_type::RawPayload;

/// One step of a coroutine.
#[derive(Debug)]
pub(crate) enum Step<'py> {
    /// Suspend, yielding this object (a future) to the task.
    Yield(Bound<'py, PyAny>),
    /// Finished with this value.
    Return(Bound<'py, PyAny>),
}

/// The behaviour of a native coroutine.
pub(crate) trait NativeCoroutine: RawPayload {
    /// `send(value)`.
    fn send<'py>(obj: &Bound<'py, PyAny>, value: &Bound<'py, PyAny>) -> PyResult<Step<'py>>;
    /// `throw(exc)`: the exception, already normalised to an instance.
    fn throw<'py>(obj: &Bound<'py, PyAny>, exc: Bound<'py, PyAny>) -> PyResult<Step<'py>>;
    /// `close()`.
    fn close(obj: &Bound<'_, PyAny>) -> PyResult<()>;
}

fn guarded<R>(py: Python<'_>, err: R, f: impl FnOnce() -> R) -> R {
    if let Ok(r) = catch_unwind(AssertUnwindSafe(f)) {
        r
    } else {
        PanicException::new_err("ferroloop panicked (this is a bug)").restore(py);
        err
    }
}

/// `am_send`.
pub(crate) unsafe extern "C" fn am_send<T: NativeCoroutine>(
    obj: *mut ffi::PyObject,
    value: *mut ffi::PyObject,
    result: *mut *mut ffi::PyObject,
) -> ffi::PySendResult {
    // Called by the interpreter with the GIL held.
    crate::py::entered(|py| {
        guarded(py, ffi::PySendResult::PYGEN_ERROR, || {
            // SAFETY: `obj` and `value` are live borrowed references.
            let (obj, value) = unsafe { (Bound::from_borrowed_ptr(py, obj), Bound::from_borrowed_ptr(py, value)) };
            match T::send(&obj, &value) {
                Ok(Step::Yield(v)) => {
                    // SAFETY: `result` is the interpreter's out-pointer; we hand it a new reference.
                    unsafe { *result = v.into_ptr() };
                    ffi::PySendResult::PYGEN_NEXT
                }
                Ok(Step::Return(v)) => {
                    // SAFETY: as above.
                    unsafe { *result = v.into_ptr() };
                    ffi::PySendResult::PYGEN_RETURN
                }
                Err(e) => {
                    e.restore(py);
                    // SAFETY: as above; NULL with an exception set.
                    unsafe { *result = std::ptr::null_mut() };
                    ffi::PySendResult::PYGEN_ERROR
                }
            }
        })
    })
}

/// A step as `send()` reports it: the yielded value, or `StopIteration`
/// as a coroutine raises it (`StopIteration()` for None, else
/// `StopIteration(value)`). `iternext`: as `tp_iternext` reports it, where
/// a return of None is NULL without an exception (the interpreter's `await`
/// takes it as None, `__next__` raises `StopIteration()`), as a generator's.
fn as_iter_result(py: Python<'_>, step: PyResult<Step<'_>>, iternext: bool) -> *mut ffi::PyObject {
    match step {
        Ok(Step::Yield(v)) => v.into_ptr(),
        Ok(Step::Return(v)) => {
            if v.is_none() {
                if !iternext {
                    // SAFETY: the GIL is held; sets StopIteration().
                    unsafe { ffi::PyErr_SetNone(ffi::PyExc_StopIteration) };
                }
            } else {
                set_stop_iteration(&v);
            }
            std::ptr::null_mut()
        }
        Err(e) => {
            e.restore(py);
            std::ptr::null_mut()
        }
    }
}

/// `StopIteration(value)` raised (CPython's `_PyGen_SetStopIterationValue`):
/// a tuple or an exception is wrapped in an instance made here, anything
/// else is given to `PyErr_SetObject`, which makes the instance.
fn set_stop_iteration(value: &Bound<'_, PyAny>) {
    // SAFETY: the GIL is held; `value` is a live object; the exception
    // instance, when made, is a new reference released after use.
    unsafe {
        let v = value.as_ptr();
        if ffi::PyTuple_Check(v) == 0 && ffi::PyExceptionInstance_Check(v) == 0 {
            ffi::PyErr_SetObject(ffi::PyExc_StopIteration, v);
            return;
        }
        let exc = ffi::PyObject_CallOneArg(ffi::PyExc_StopIteration, v);
        if exc.is_null() {
            return;
        }
        ffi::PyErr_SetObject(ffi::PyExc_StopIteration, exc);
        ffi::Py_DECREF(exc);
    }
}

/// `tp_iternext` (`__next__` = `send(None)`).
pub(crate) unsafe extern "C" fn iternext<T: NativeCoroutine>(obj: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // Called by the interpreter with the GIL held.
    crate::py::entered(|py| {
        guarded(py, std::ptr::null_mut(), || {
            // SAFETY: a live borrowed reference.
            let obj = unsafe { Bound::from_borrowed_ptr(py, obj) };
            as_iter_result(py, T::send(&obj, &py.None().into_bound(py)), true)
        })
    })
}

/// `am_await`: the coroutine is its own iterator.
pub(crate) unsafe extern "C" fn am_await(obj: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: a live object; we return a new reference to it.
    unsafe { ffi::Py_INCREF(obj) };
    obj
}

/// `send(value)` as a method.
pub(crate) fn method_send<T: NativeCoroutine>(obj: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> *mut ffi::PyObject {
    as_iter_result(obj.py(), T::send(obj, value), false)
}

/// `throw(typ[, val[, tb]])` as a method: the exception is normalised as
/// `generator.throw` does.
pub(crate) fn method_throw<T: NativeCoroutine>(
    obj: &Bound<'_, PyAny>,
    typ: &Bound<'_, PyAny>,
    val: Option<Bound<'_, PyAny>>,
    tb: Option<Bound<'_, PyAny>>,
) -> *mut ffi::PyObject {
    let py = obj.py();
    let exc = normalize(py, typ, val, tb);
    match exc {
        Ok(exc) => as_iter_result(py, T::throw(obj, exc), false),
        Err(e) => {
            e.restore(py);
            std::ptr::null_mut()
        }
    }
}

fn normalize<'py>(
    py: Python<'py>,
    typ: &Bound<'py, PyAny>,
    val: Option<Bound<'py, PyAny>>,
    tb: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let base = py.get_type::<pyo3::exceptions::PyBaseException>();
    let exc = if typ.is_instance(&base)? {
        if val.as_ref().is_some_and(|v| !v.is_none()) {
            return Err(pyo3::exceptions::PyTypeError::new_err(
                "instance exception may not have a separate value",
            ));
        }
        typ.clone()
    } else if typ.is_instance_of::<pyo3::types::PyType>() && typ.cast::<pyo3::types::PyType>()?.is_subclass(&base)? {
        match val {
            Some(v) if v.is_instance(typ)? => v,
            Some(v) if v.is_none() => typ.call0()?,
            Some(v) => match v.cast::<pyo3::types::PyTuple>() {
                Ok(t) => typ.call1(t.clone())?,
                Err(_) => typ.call1((v,))?,
            },
            None => typ.call0()?,
        }
    } else {
        return Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "exceptions must be classes or instances deriving from BaseException, not {}",
            typ.get_type().name()?
        )));
    };
    if let Some(tb) = tb.filter(|t| !t.is_none()) {
        exc.call_method1("with_traceback", (tb,))?;
    }
    Ok(exc)
}

/// The extra type slots of a native coroutine class.
pub(crate) fn slots<T: NativeCoroutine>() -> Vec<(c_int, *mut c_void)> {
    vec![
        (ffi::Py_am_await, am_await as *mut c_void),
        (ffi::Py_am_send, am_send::<T> as *mut c_void),
        (ffi::Py_tp_iternext, iternext::<T> as *mut c_void),
    ]
}
