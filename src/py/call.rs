//! Calling a callback inside a `contextvars.Context`.
//!
//! Mirrors `events.Handle._run`, which does `self._context.run(self._callback,
//! *self._args)`: the context is entered with `PyContext_Enter`, the callback
//! is called with its argument tuple, and the context is exited again. Entering
//! a context that is already entered fails exactly as `Context.run` does
//! (`RuntimeError: cannot enter context: ... is already entered`).

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

/// `context.run(callback, *args)`; returns the callback's result.
pub(crate) fn run_in_context(
    py: Python<'_>,
    context: &Py<PyAny>,
    callback: &Py<PyAny>,
    args: &Py<PyTuple>,
) -> PyResult<()> {
    // SAFETY: a type check of a live object.
    if unsafe { ffi::PyContext_CheckExact(context.as_ptr()) } == 0 {
        // Not a Context (a bad `context=` argument): do what asyncio does,
        // `context.run(callback, *args)`, with whatever error that raises.
        return run_method(py, context, callback, args);
    }
    // SAFETY: `context` is a live Context kept alive by the caller's reference.
    if unsafe { ffi::PyContext_Enter(context.as_ptr()) } != 0 {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: callback and args are live for the duration of the call; the
    // result is a new reference (or NULL with an exception set).
    let res = unsafe {
        let n = ffi::PyTuple_GET_SIZE(args.as_ptr());
        if n == 0 {
            ffi::PyObject_CallNoArgs(callback.as_ptr())
        } else {
            ffi::PyObject_Call(callback.as_ptr(), args.as_ptr(), std::ptr::null_mut())
        }
    };
    let result = if res.is_null() {
        Err(PyErr::fetch(py))
    } else {
        // SAFETY: `res` is a new, non-null reference that we own.
        unsafe { ffi::Py_DECREF(res) };
        Ok(())
    };
    // SAFETY: we entered this very context above; exiting cannot fail then,
    // but a failure is still reported rather than ignored.
    if unsafe { ffi::PyContext_Exit(context.as_ptr()) } != 0 {
        let exit_err = PyErr::fetch(py);
        return result.and(Err(exit_err));
    }
    result
}

/// `context.run(callback, *args)` through the object's own `run` attribute.
fn run_method(py: Python<'_>, context: &Py<PyAny>, callback: &Py<PyAny>, args: &Py<PyTuple>) -> PyResult<()> {
    let run = context.bind(py).getattr(pyo3::intern!(py, "run"))?;
    let mut all = vec![callback.clone_ref(py).into_bound(py)];
    all.extend(args.bind(py).iter());
    run.call1(PyTuple::new(py, all)?)?;
    Ok(())
}

/// `contextvars.copy_context()`.
pub(crate) fn copy_context(py: Python<'_>) -> PyResult<Py<PyAny>> {
    // SAFETY: returns a new reference or NULL with an exception set.
    let ctx = unsafe { ffi::PyContext_CopyCurrent() };
    if ctx.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: `ctx` is a new, non-null reference whose ownership we take.
    Ok(unsafe { Bound::from_owned_ptr(py, ctx) }.unbind())
}

/// A copy of the context `ctx` (`ctx.copy()`).
pub(crate) fn copy_of(py: Python<'_>, ctx: &Py<PyAny>) -> PyResult<Py<PyAny>> {
    // SAFETY: `ctx` is a live object; PyContext_Copy type-checks it and
    // returns a new reference or NULL with an exception set.
    let c = unsafe { ffi::PyContext_Copy(ctx.as_ptr()) };
    if c.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: a new, non-null reference whose ownership we take.
    Ok(unsafe { Bound::from_owned_ptr(py, c) }.unbind())
}

/// Run `f` inside the context `ctx` (entered and exited around it), as
/// `ctx.run(f)` does.
pub(crate) fn in_context<R>(py: Python<'_>, ctx: Option<&Py<PyAny>>, f: impl FnOnce() -> PyResult<R>) -> PyResult<R> {
    let Some(ctx) = ctx else { return f() };
    // SAFETY: `ctx` is kept alive by the caller's reference; PyContext_Enter
    // type-checks it and sets an exception on failure.
    if unsafe { ffi::PyContext_Enter(ctx.as_ptr()) } != 0 {
        return Err(PyErr::fetch(py));
    }
    let result = f();
    // SAFETY: we entered this very context above.
    if unsafe { ffi::PyContext_Exit(ctx.as_ptr()) } != 0 {
        let exit_err = PyErr::fetch(py);
        return result.and(Err(exit_err));
    }
    result
}

/// `obj.name(*args)` through `PyObject_VectorcallMethod` (no argument tuple).
pub(crate) fn call_method<'py>(
    obj: &Bound<'py, PyAny>,
    name: &Bound<'py, pyo3::types::PyString>,
    args: &[&Bound<'py, PyAny>],
) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    let mut ptrs = [std::ptr::null_mut::<ffi::PyObject>(); 4];
    if args.len() >= ptrs.len() {
        return Err(pyo3::exceptions::PySystemError::new_err(
            "ferroloop: too many arguments for a method call",
        ));
    }
    ptrs[0] = obj.as_ptr();
    for (slot, a) in ptrs[1..].iter_mut().zip(args) {
        *slot = a.as_ptr();
    }
    // SAFETY: `ptrs` holds borrowed references kept alive by the caller for
    // the call; the name is a str; the result is a new reference or NULL
    // with an exception set.
    let res =
        unsafe { ffi::PyObject_VectorcallMethod(name.as_ptr(), ptrs.as_ptr(), args.len() + 1, std::ptr::null_mut()) };
    if res.is_null() {
        Err(PyErr::fetch(py))
    } else {
        // SAFETY: a new, non-null reference that we take ownership of.
        Ok(unsafe { Bound::from_owned_ptr(py, res) })
    }
}

/// The function a `lambda` with one free variable evaluates to: made from
/// its `code` object and the defining module's `globals`, with `value` in
/// its cell (name, qualname and module come from the code and globals, as
/// for the function the interpreter makes).
pub(crate) fn closure_of<'py>(
    py: Python<'py>,
    code: &Bound<'py, PyAny>,
    globals: &Bound<'py, PyAny>,
    value: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: live objects; each call returns a new reference or NULL with
    // an exception set (PyFunction_New checks that `code` is a code object
    // and `globals` a dict; PyFunction_SetClosure that the closure is a
    // tuple), and a NULL is turned into the pending error.
    unsafe {
        let func = Bound::from_owned_ptr_or_err(py, ffi::PyFunction_New(code.as_ptr(), globals.as_ptr()))?;
        let cell = Bound::from_owned_ptr_or_err(py, ffi::PyCell_New(value.as_ptr()))?;
        let closure = PyTuple::new(py, [cell])?;
        if ffi::PyFunction_SetClosure(func.as_ptr(), closure.as_ptr()) != 0 {
            return Err(PyErr::fetch(py));
        }
        Ok(func)
    }
}

/// `hasattr(obj, name)`, as the builtin answers it: the builtin looks the
/// attribute up without making the `AttributeError` a failed lookup would
/// raise (PyO3's `hasattr` makes and clears one below 3.13, some 4,000
/// instructions).
pub(crate) fn has_attr(obj: &Bound<'_, PyAny>, name: &Bound<'_, pyo3::types::PyString>) -> PyResult<bool> {
    static HASATTR: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();
    let py = obj.py();
    let f = HASATTR.get_or_try_init(py, || py.import("builtins")?.getattr("hasattr").map(Bound::unbind))?;
    let args = [obj.as_ptr(), name.as_ptr()];
    // SAFETY: `f` is the builtin `hasattr`; `args` are borrowed references
    // kept alive by the caller; the result is a new reference or NULL with
    // an exception set.
    let res = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyObject_Vectorcall(f.as_ptr(), args.as_ptr(), 2, std::ptr::null_mut()),
        )?
    };
    Ok(res.is(pyo3::types::PyBool::new(py, true)))
}

extern "C" {
    static mut PyMethod_Type: ffi::PyTypeObject;
    fn PyMethod_Function(method: *mut ffi::PyObject) -> *mut ffi::PyObject;
    fn PyMethod_Self(method: *mut ffi::PyObject) -> *mut ffi::PyObject;
}

/// `obj.<name>` is the function `func` bound to `obj`: neither the instance
/// nor its class replaces it (what a Python call `obj.<name>(...)` would
/// run). An attribute error counts as replaced.
pub(crate) fn is_bound_method(
    obj: &Bound<'_, PyAny>,
    name: &Bound<'_, pyo3::types::PyString>,
    func: &Bound<'_, PyAny>,
) -> bool {
    let Ok(m) = obj.getattr(name) else {
        return false;
    };
    // SAFETY: `m` is a live object; the method accessors are called only on
    // an exact method object and return borrowed references compared by
    // address.
    unsafe {
        std::ptr::eq(ffi::Py_TYPE(m.as_ptr()), std::ptr::addr_of_mut!(PyMethod_Type))
            && std::ptr::eq(PyMethod_Function(m.as_ptr()), func.as_ptr())
            && std::ptr::eq(PyMethod_Self(m.as_ptr()), obj.as_ptr())
    }
}

/// References to `obj` (`sys.getrefcount` less its argument).
pub(crate) fn refcount(obj: &Bound<'_, PyAny>) -> isize {
    // SAFETY: a live object.
    unsafe { ffi::Py_REFCNT(obj.as_ptr()) }
}

/// `gc.is_tracked(obj)`.
pub(crate) fn is_gc_tracked(obj: &Bound<'_, PyAny>) -> bool {
    // SAFETY: a live object.
    unsafe { ffi::PyObject_GC_IsTracked(obj.as_ptr()) == 1 }
}

/// Run `obj`'s finalizer (`tp_finalize`, `__del__`) now, as the cycle
/// collector would; it does not run again when the object is freed.
pub(crate) fn call_finalizer(obj: &Bound<'_, PyAny>) {
    // SAFETY: a live object kept alive by the caller's reference; the call
    // keeps any exception set before it (`tp_finalize`'s contract).
    unsafe { ffi::PyObject_CallFinalizer(obj.as_ptr()) }
}

/// `descr.__get__(obj, type(obj))` through the descriptor's `tp_descr_get`
/// slot (a member or property of a C type read without a bound method).
pub(crate) fn descr_get<'py>(descr: &Bound<'py, PyAny>, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    // SAFETY: live objects; the slot, when set, returns a new reference or
    // NULL with an exception set.
    unsafe {
        let get = (*ffi::Py_TYPE(descr.as_ptr())).tp_descr_get;
        match get {
            Some(get) => {
                Bound::from_owned_ptr_or_err(py, get(descr.as_ptr(), obj.as_ptr(), ffi::Py_TYPE(obj.as_ptr()).cast()))
            }
            None => descr.call_method1(pyo3::intern!(py, "__get__"), (obj,)),
        }
    }
}

/// `name` in the `__dict__` of the class `cls` itself (not its bases), or
/// None: a heap type's dictionary read without the mapping proxy.
pub(crate) fn class_attr<'py>(
    cls: &Bound<'py, PyAny>,
    name: &Bound<'py, pyo3::types::PyString>,
) -> Option<Bound<'py, PyAny>> {
    let py = cls.py();
    // SAFETY: `cls` is checked to be a type; a heap type's `tp_dict` is its
    // dictionary (or NULL); the item is a borrowed reference made owned here.
    unsafe {
        if ffi::PyType_Check(cls.as_ptr()) == 0 {
            return None;
        }
        let dict = (*cls.as_ptr().cast::<ffi::PyTypeObject>()).tp_dict;
        if dict.is_null() {
            return None;
        }
        let item = ffi::PyDict_GetItemWithError(dict, name.as_ptr());
        if item.is_null() {
            ffi::PyErr_Clear();
            return None;
        }
        Some(Bound::from_borrowed_ptr(py, item))
    }
}

/// `cls.__new__(cls)` through the class's `tp_new` slot, without `__init__`
/// (what `type.__call__` does before it calls `__init__`).
pub(crate) fn new_instance<'py>(cls: &Bound<'py, pyo3::types::PyType>) -> PyResult<Bound<'py, PyAny>> {
    let py = cls.py();
    let empty = PyTuple::empty(py);
    // SAFETY: `cls` is a live type; `tp_new`, when set, returns a new
    // reference or NULL with an exception set.
    unsafe {
        let tp = cls.as_ptr().cast::<ffi::PyTypeObject>();
        match (*tp).tp_new {
            Some(new) => Bound::from_owned_ptr_or_err(py, new(tp, empty.as_ptr(), std::ptr::null_mut())),
            None => Err(pyo3::exceptions::PyTypeError::new_err("cannot create instances")),
        }
    }
}

/// `base.__init__(obj, *args)` through `base`'s `tp_init` slot (a C base
/// class's initializer, called as a subclass's Python `__init__` calls it).
pub(crate) fn init_as(
    base: &Bound<'_, pyo3::types::PyType>,
    obj: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
) -> PyResult<()> {
    let py = obj.py();
    // SAFETY: live objects; `tp_init` returns 0, or -1 with an exception set.
    unsafe {
        let tp = base.as_ptr().cast::<ffi::PyTypeObject>();
        let Some(init) = (*tp).tp_init else {
            return Ok(());
        };
        if init(obj.as_ptr(), args.as_ptr(), std::ptr::null_mut()) < 0 {
            return Err(PyErr::fetch(py));
        }
    }
    Ok(())
}

/// `cls.__dict__[name]` if it is the function `module.qualname` (for a
/// `classmethod`, its function): a method the native code may follow
/// statement by statement, told apart from a replacement.
pub(crate) fn own_function<'py>(
    cls: &Bound<'py, PyAny>,
    name: &str,
    module: &str,
    qualname: &str,
) -> Option<Bound<'py, PyAny>> {
    let py = cls.py();
    let f = class_attr(cls, &pyo3::types::PyString::new(py, name))?;
    let func = match f.getattr(pyo3::intern!(py, "__func__")) {
        Ok(inner) => inner,
        Err(_) => f.clone(),
    };
    let text = |attr: &str| -> String {
        func.getattr(attr)
            .and_then(|v| v.extract::<String>())
            .unwrap_or_default()
    };
    (text("__module__") == module && text("__qualname__") == qualname).then_some(f)
}
