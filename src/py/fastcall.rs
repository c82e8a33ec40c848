//! Raw vectorcall methods: argument parsing, error messages, installation.
//!
//! Hot methods (the loop's `call_soon`, a transport's `write`) are installed
//! as `METH_FASTCALL | METH_KEYWORDS` functions: the interpreter hands over
//! the argument array directly, with no PyO3 argument-description parsing in
//! between. [`Call`] gives typed access to the arguments, and argument errors
//! use the messages CPython gives for the Python methods they replace
//! (`"{Class}.{method}() missing 1 required positional argument: 'x'"`).
//!
//! The [`fastcall_method!`] macro turns a closure-like body into an
//! `extern "C"` method; [`install`] adds such methods to a PyO3 class and
//! [`method_def`] builds the `PyMethodDef` of a raw type (`py::native_type`).
//!
//! # Invariants
//! - Called by the interpreter with the GIL held (a method call).
//! - A panic is caught and raised as `PanicException`, never unwinds into C.
//! - The return value is a new reference, or NULL with an exception set.

use std::os::raw::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::{PySystemError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple, PyType};

/// A keyword name that hot methods look up by identity: the interned
/// string, and the first other `str` object with the same text that a caller
/// passed. C code builds its own: `_asyncio`'s Tasks and Futures call
/// `loop.call_soon(..., context=...)` with a kwnames tuple made by
/// `Py_BuildValue("(s)", "context")`, which is not interned, so every Task
/// step cost a string comparison (136 instructions). The alias is kept
/// alive here, so its address can never belong to another object.
pub(crate) struct KwName {
    name: pyo3::sync::Interned,
    alias: pyo3::sync::PyOnceLock<Py<PyAny>>,
}

impl KwName {
    pub(crate) const fn new(name: &'static str) -> Self {
        Self {
            name: pyo3::sync::Interned::new(name),
            alias: pyo3::sync::PyOnceLock::new(),
        }
    }
}

/// The arguments of one vectorcall: positionals and keyword arguments.
pub(crate) struct Call<'a, 'py> {
    pub py: Python<'py>,
    /// The instance the method was called on (type-checked by the descriptor).
    pub slf: Bound<'py, PyAny>,
    /// The method's name (`Class.method`, for error messages) and parameters.
    params: &'static Params,
    pub pos: &'a [*mut ffi::PyObject],
    /// The kwnames tuple (or null) and the keyword values after `pos`.
    kwnames: *mut ffi::PyObject,
    kwvalues: *const *mut ffi::PyObject,
    pub nkw: usize,
    /// Bit i set: keyword i was taken (at most 64 keywords are tracked).
    taken: u64,
}

impl<'py> Call<'_, 'py> {
    /// `Class.method`, for error messages.
    pub fn qualname(&self) -> &'static str {
        self.params.qualname
    }

    /// Positional argument `i` (the caller checked `i < pos.len()`).
    pub fn arg(&self, i: usize) -> Bound<'py, PyAny> {
        // SAFETY: `i < pos.len()` is checked by `parse` for the required ones
        // and by callers for optional ones; the array entries are borrowed
        // references kept alive by the caller's frame.
        unsafe { Bound::from_borrowed_ptr(self.py, self.pos[i]) }
    }

    /// Positional argument `i` if given.
    #[allow(dead_code, reason = "used by the native transports")]
    pub fn opt(&self, i: usize) -> Option<Bound<'py, PyAny>> {
        (i < self.pos.len()).then(|| self.arg(i))
    }

    /// The positionals from `from` on, as a tuple.
    pub fn rest(&self, from: usize) -> PyResult<Bound<'py, PyTuple>> {
        if from >= self.pos.len() {
            return Ok(PyTuple::empty(self.py));
        }
        let items = (from..self.pos.len()).map(|i| self.arg(i));
        PyTuple::new(self.py, items)
    }

    /// Keyword name `i`, borrowed from the kwnames tuple (`i < nkw`).
    fn kw_name_ptr(&self, i: usize) -> *mut ffi::PyObject {
        debug_assert!(i < self.nkw);
        // SAFETY: i < nkw = len(kwnames).
        unsafe { ffi::PyTuple_GET_ITEM(self.kwnames, i as ffi::Py_ssize_t) }
    }

    fn kw_name(&self, i: usize) -> Bound<'py, PyAny> {
        // SAFETY: the tuple holds the name alive for the call.
        unsafe { Bound::from_borrowed_ptr(self.py, self.kw_name_ptr(i)) }
    }

    fn kw_value(&self, i: usize) -> Bound<'py, PyAny> {
        // SAFETY: i < nkw; the values follow the positionals in the argument array.
        unsafe { Bound::from_borrowed_ptr(self.py, *self.kwvalues.add(i)) }
    }

    /// The keywords nobody took yet, as (name, value).
    pub fn remaining_kw(&self) -> impl Iterator<Item = (Bound<'py, PyAny>, Bound<'py, PyAny>)> + '_ {
        (0..self.nkw)
            .filter(|i| self.taken & (1 << i) == 0)
            .map(|i| (self.kw_name(i), self.kw_value(i)))
    }

    pub fn has_remaining_kw(&self) -> bool {
        self.remaining_kw().next().is_some()
    }

    /// Take the keyword `kw`: compared by identity with its interned string
    /// and with the other string object callers use for it (see [`KwName`]),
    /// then by value.
    #[inline]
    pub fn take_kw(&mut self, kw: &KwName) -> Option<Bound<'py, PyAny>> {
        // Most calls pass no keyword: skip reading the names' cells.
        if self.nkw == 0 {
            return None;
        }
        self.find_kw(kw)
    }

    fn find_kw(&mut self, kw: &KwName) -> Option<Bound<'py, PyAny>> {
        let name = kw.name.get(self.py);
        let alias = kw.alias.get(self.py).map_or(std::ptr::null_mut(), Py::as_ptr);
        for i in 0..self.nkw.min(64) {
            if self.taken & (1 << i) != 0 {
                continue;
            }
            let raw = self.kw_name_ptr(i);
            if raw == name.as_ptr() || raw == alias {
                self.taken |= 1 << i;
                return Some(self.kw_value(i));
            }
            let k = self.kw_name(i);
            let hit = if k.eq(name).unwrap_or(false) {
                if alias.is_null() && k.is_exact_instance_of::<PyString>() {
                    let _ = kw.alias.set(self.py, k.clone().unbind());
                }
                true
            } else {
                false
            };
            if hit {
                self.taken |= 1 << i;
                return Some(self.kw_value(i));
            }
        }
        None
    }

    /// The checks of a Python method that takes only `self`.
    pub fn no_arguments(&self) -> PyResult<()> {
        self.at_most(0)
    }

    /// At most `n` positionals (besides `self`) and no unknown keyword.
    pub fn at_most(&self, n: usize) -> PyResult<()> {
        if self.nkw != 0 {
            self.reject_unknown_kw()?;
        }
        if self.pos.len() > n {
            // CPython's `too_many_positional`, `self` counted: "takes 1
            // positional argument", "takes 3 positional arguments", "takes
            // from 3 to 4 positional arguments" (optional ones after).
            let required = self.params.required.len();
            let takes = if n == 0 {
                "1 positional argument".to_string()
            } else if required < n {
                format!("from {} to {} positional arguments", required + 1, n + 1)
            } else {
                format!("{} positional arguments", n + 1)
            };
            return Err(PyTypeError::new_err(format!(
                "{}() takes {takes} but {} were given",
                self.qualname(),
                self.pos.len() + 1
            )));
        }
        Ok(())
    }

    /// TypeError for the first keyword nobody took (the Python method's
    /// message: a keyword naming a parameter already given by position has
    /// "multiple values").
    pub fn reject_unknown_kw(&self) -> PyResult<()> {
        if let Some((name, _)) = self.remaining_kw().next() {
            let name = name.str()?;
            let text = name.to_str()?;
            if self.params.by_keyword && self.params.required.contains(&text) {
                return Err(PyTypeError::new_err(format!(
                    "{}() got multiple values for argument '{text}'",
                    self.qualname()
                )));
            }
            return Err(PyTypeError::new_err(format!(
                "{}() got an unexpected keyword argument '{text}'",
                self.qualname()
            )));
        }
        Ok(())
    }
}

/// A native method's parameters, as the Python method it stands for
/// declares them.
pub(crate) struct Params {
    /// `Class.method`, for error messages.
    pub qualname: &'static str,
    /// The positional parameters without a default.
    pub required: &'static [&'static str],
    /// The other parameters a keyword may name (taken by the method body).
    pub optional: &'static [&'static str],
    /// Whether the required ones may be passed by keyword (a Python
    /// method: yes; a C method such as `coroutine.send`: no).
    pub by_keyword: bool,
}

fn missing(qualname: &str, names: &[&str]) -> PyErr {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    // CPython's `format_missing`: "'a'", "'a' and 'b'", "'a', 'b', and 'c'".
    let list = match quoted.len() {
        1 => quoted[0].clone(),
        2 => format!("{} and {}", quoted[0], quoted[1]),
        n => format!("{}, and {}", quoted[..n - 1].join(", "), quoted[n - 1]),
    };
    let s = if names.len() == 1 { "" } else { "s" };
    PyTypeError::new_err(format!(
        "{qualname}() missing {} required positional argument{s}: {list}",
        names.len()
    ))
}

/// Parse the vectorcall arguments; `required` are the fixed positional names.
///
/// # Safety
/// The pointers are those the interpreter passed to a METH_FASTCALL|METH_KEYWORDS method.
pub(crate) unsafe fn parse<'a, 'py>(
    py: Python<'py>,
    params: &'static Params,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<Option<Call<'a, 'py>>> {
    // SAFETY: `slf` is the instance the method was called on.
    let slf = unsafe { Bound::from_borrowed_ptr(py, slf) };
    // SAFETY: the interpreter's nargsf encoding; the flag bit is masked off.
    let nargs = unsafe { ffi::PyVectorcall_NARGS(nargsf as usize) } as usize;
    let nkw = if kwnames.is_null() {
        0
    } else {
        // SAFETY: kwnames is a tuple (vectorcall protocol).
        unsafe { ffi::PyTuple_GET_SIZE(kwnames) as usize }
    };
    let required = params.required;
    if nargs < required.len() {
        if nkw == 0 || !params.by_keyword {
            return Err(missing(params.qualname, &required[nargs..]));
        }
        // Required parameters passed by keyword: see `rebind`.
        return Ok(None);
    }
    let pos = if nargs == 0 {
        &[][..]
    } else {
        // SAFETY: `args` points to at least `nargs` valid object pointers.
        unsafe { std::slice::from_raw_parts(args, nargs) }
    };
    // SAFETY: the keyword values follow the `nargs` positionals in `args`.
    let kwvalues = unsafe { args.add(nargs) };
    Ok(Some(Call {
        py,
        slf,
        params,
        pos,
        kwnames,
        kwvalues,
        nkw,
        taken: 0,
    }))
}

/// A call that passed required parameters by keyword: bind them as a Python
/// function binds its parameters and call `func` again with them positional
/// (the other keywords stay keywords). Errors in CPython's order: a keyword
/// that names no parameter, or one already given by position, then the
/// parameters still missing. Rare, so kept out of `parse`.
///
/// # Safety
/// As [`parse`]; `func` is the method these arguments were passed to.
#[cold]
#[inline(never)]
pub(crate) unsafe fn rebind(
    py: Python<'_>,
    params: &'static Params,
    func: RawMethod,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<Py<PyAny>> {
    // SAFETY: the vectorcall protocol, as in `parse` (which saw keywords).
    let (nargs, names) = unsafe {
        (
            ffi::PyVectorcall_NARGS(nargsf as usize) as usize,
            Bound::from_borrowed_ptr(py, kwnames).cast_into_unchecked::<PyTuple>(),
        )
    };
    // SAFETY: `args` holds the positionals and then one value per keyword.
    let all = unsafe { std::slice::from_raw_parts(args, nargs + names.len()) };
    let required = params.required;
    let mut bound: Vec<Option<*mut ffi::PyObject>> = vec![None; required.len() - nargs];
    let (mut rest_names, mut rest_values) = (Vec::new(), Vec::new());
    for (i, name) in names.iter().enumerate() {
        let text = name.cast::<PyString>()?.to_str()?.to_owned();
        match required.iter().position(|r| *r == text) {
            Some(j) if j >= nargs && bound[j - nargs].is_none() => bound[j - nargs] = Some(all[nargs + i]),
            Some(_) => {
                return Err(PyTypeError::new_err(format!(
                    "{}() got multiple values for argument '{text}'",
                    params.qualname
                )))
            }
            None if params.optional.contains(&text.as_str()) => {
                rest_names.push(name);
                rest_values.push(all[nargs + i]);
            }
            None => {
                return Err(PyTypeError::new_err(format!(
                    "{}() got an unexpected keyword argument '{text}'",
                    params.qualname
                )))
            }
        }
    }
    let absent: Vec<&str> = required[nargs..]
        .iter()
        .zip(&bound)
        .filter(|(_, v)| v.is_none())
        .map(|(r, _)| *r)
        .collect();
    if !absent.is_empty() {
        return Err(missing(params.qualname, &absent));
    }
    let mut new_args: Vec<*mut ffi::PyObject> = all[..nargs].to_vec();
    new_args.extend(bound.into_iter().flatten());
    new_args.extend(rest_values);
    let new_names = if rest_names.is_empty() {
        None
    } else {
        Some(PyTuple::new(py, rest_names)?)
    };
    let names_ptr = new_names.as_ref().map_or(std::ptr::null_mut(), Bound::as_ptr);
    // SAFETY: the same method with a valid vectorcall argument array (the
    // caller's borrowed references, alive for this call) and keyword names.
    let res = unsafe { func(slf, new_args.as_ptr(), required.len() as ffi::Py_ssize_t, names_ptr) };
    if res.is_null() {
        Err(PyErr::fetch(py))
    } else {
        // SAFETY: a new reference returned by the method.
        Ok(unsafe { Bound::from_owned_ptr(py, res) }.unbind())
    }
}

/// `callable(*args, **dict(zip(kwnames, kwvalues)))` through vectorcall:
/// `args` holds the positionals followed by the keyword values.
pub(crate) fn vectorcall<'py>(
    py: Python<'py>,
    callable: &Bound<'py, PyAny>,
    args: &[&Bound<'py, PyAny>],
    npos: usize,
    kwnames: Option<&Bound<'py, PyTuple>>,
) -> PyResult<Bound<'py, PyAny>> {
    // Callers pass at most four arguments; keep them on the stack.
    let mut ptrs = [std::ptr::null_mut::<ffi::PyObject>(); 4];
    if args.len() > ptrs.len() {
        return Err(PySystemError::new_err("ferroloop: too many arguments for vectorcall"));
    }
    for (slot, a) in ptrs.iter_mut().zip(args) {
        *slot = a.as_ptr();
    }
    let names = kwnames.map_or(std::ptr::null_mut(), Bound::as_ptr);
    // SAFETY: `ptrs` holds borrowed references kept alive by `args` for the
    // duration of the call; kwnames has exactly `args.len() - npos` names; the
    // result is a new reference or NULL with an exception set.
    let res = unsafe { ffi::PyObject_Vectorcall(callable.as_ptr(), ptrs.as_ptr(), npos, names) };
    if res.is_null() {
        Err(PyErr::fetch(py))
    } else {
        // SAFETY: a new, non-null reference that we take ownership of.
        Ok(unsafe { Bound::from_owned_ptr(py, res) })
    }
}

/// Interned keyword-name tuples for the calls the fast paths make.
pub(crate) fn kwnames<'py>(
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

/// Run `body` with panics caught and errors raised.
pub(crate) fn finish(py: Python<'_>, body: impl FnOnce() -> PyResult<Py<PyAny>>) -> *mut ffi::PyObject {
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

/// Define an `extern "C"` METH_FASTCALL|METH_KEYWORDS method.
///
/// `fastcall_method!(name, "Class.method", ["required", ...], |c| body)`:
/// `c` is the parsed [`Call`]; `body` evaluates to `PyResult<Py<PyAny>>`.
/// The required parameters may be passed by keyword, as to the Python
/// method the native one stands for; a list of the other keyword names
/// (`["required"], ["optional", ...]`) lets a call that lacks a required one
/// report an unknown keyword first, as CPython does. `positional "Class.method"`
/// makes them positional-only (a C method's).
macro_rules! fastcall_method {
    ($fn_name:ident, $qualname:literal, [$($req:literal),*], |$c:ident| $body:expr) => {
        $crate::py::fastcall::fastcall_method!(@def $fn_name, $qualname, [$($req),*], [], true, |$c| $body);
    };
    ($fn_name:ident, $qualname:literal, [$($req:literal),*], [$($opt:literal),*], |$c:ident| $body:expr) => {
        $crate::py::fastcall::fastcall_method!(@def $fn_name, $qualname, [$($req),*], [$($opt),*], true, |$c| $body);
    };
    ($fn_name:ident, positional $qualname:literal, [$($req:literal),*], |$c:ident| $body:expr) => {
        $crate::py::fastcall::fastcall_method!(@def $fn_name, $qualname, [$($req),*], [], false, |$c| $body);
    };
    (@def $fn_name:ident, $qualname:literal, [$($req:literal),*], [$($opt:literal),*], $kw:literal, |$c:ident| $body:expr) => {
        pub(crate) unsafe extern "C" fn $fn_name(
            slf: *mut pyo3::ffi::PyObject,
            args: *const *mut pyo3::ffi::PyObject,
            nargsf: pyo3::ffi::Py_ssize_t,
            kwnames: *mut pyo3::ffi::PyObject,
        ) -> *mut pyo3::ffi::PyObject {
            static PARAMS: $crate::py::fastcall::Params = $crate::py::fastcall::Params {
                qualname: $qualname,
                required: &[$($req),*],
                optional: &[$($opt),*],
                by_keyword: $kw,
            };
            // The interpreter calls methods with the GIL held.
            $crate::py::entered(|py| $crate::py::fastcall::finish(py, || {
                // SAFETY: the arguments are exactly what the interpreter passed.
                let parsed = unsafe { $crate::py::fastcall::parse(py, &PARAMS, slf, args, nargsf, kwnames) }?;
                #[allow(unused_mut)]
                let Some(mut $c) = parsed else {
                    // SAFETY: as above; this very method is called again.
                    return unsafe { $crate::py::fastcall::rebind(py, &PARAMS, $fn_name, slf, args, nargsf, kwnames) };
                };
                $body
            }))
        }
    };
}
pub(crate) use fastcall_method;

/// The signature of a METH_FASTCALL|METH_KEYWORDS function.
pub(crate) type RawMethod = unsafe extern "C" fn(
    *mut ffi::PyObject,
    *const *mut ffi::PyObject,
    ffi::Py_ssize_t,
    *mut ffi::PyObject,
) -> *mut ffi::PyObject;

/// A `PyMethodDef` for a fastcall method (names and docs are 'static).
pub(crate) fn method_def(
    name: &'static std::ffi::CStr,
    func: RawMethod,
    doc: &'static std::ffi::CStr,
) -> ffi::PyMethodDef {
    ffi::PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: func,
        },
        ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        ml_doc: doc.as_ptr().cast::<c_char>(),
    }
}

/// Install fastcall methods on a PyO3 class (once, at import).
///
/// # Safety
/// Every function must treat its `self` argument as an instance of `ty`
/// (the method descriptor guarantees that much, and nothing more).
pub(crate) unsafe fn install(
    ty: &Bound<'_, PyType>,
    methods: &[(&'static std::ffi::CStr, RawMethod, &'static std::ffi::CStr)],
) -> PyResult<()> {
    let py = ty.py();
    for &(name, func, doc) in methods {
        // The method table must outlive the type: leak it (a few entries, once per process).
        let def: &'static mut ffi::PyMethodDef = Box::leak(Box::new(method_def(name, func, doc)));
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
