//! Heap types with a *Python* base class and a Rust payload stored inline.
//!
//! Libraries check `isinstance(transport, asyncio.Transport)`; asyncio's
//! transport classes are Python classes, which a PyO3 class cannot extend.
//! A [`RawClass`] is created with `PyType_FromSpecWithBases`: its instances
//! have the base's layout (for `asyncio.Transport`: the object header and
//! `BaseTransport`'s one `__slots__` entry, `_extra`), then the payload `T`,
//! then a weak-reference list. Methods are raw fastcall functions
//! (`py::fastcall`) and getters; the descriptors check `self`'s type before
//! calling them, so a method may assume its `self` carries a `T`.
//!
//! # Invariants
//! - The base's instance layout is object header + object-pointer slots only
//!   (no `__dict__`, no weak references, no items): checked at creation.
//! - A payload is written right after allocation, before any Python code can
//!   run (so the collector never sees an uninitialised payload), and dropped
//!   exactly once, in `tp_dealloc`.
//! - `T::finalize` runs through `tp_finalize` (PEP 442), before `tp_clear`
//!   and before deallocation; a resurrected object is not deallocated.
//! - Instances cannot be created from Python (`DISALLOW_INSTANTIATION`).

use std::ffi::CStr;
use std::marker::PhantomData;
use std::os::raw::{c_int, c_void};

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyTuple, PyType};

use super::gc::{GcStop, Visitor};

/// What a raw class's payload provides to the type's slots.
pub(crate) trait RawPayload: Sized + 'static {
    /// The class (created once per process, see [`RawClass::create`]).
    fn class() -> &'static RawClass<Self>;
    /// Visit every strong reference (`tp_traverse`).
    fn visit_refs(&self, v: &Visitor<'_, '_>) -> Result<(), GcStop>;
    /// Release every strong reference (`tp_clear`, GIL held).
    fn clear_refs(&self, py: Python<'_>);
    /// `__del__` (`tp_finalize`); may run Python code.
    fn finalize(_obj: &Bound<'_, PyAny>) {}
    /// Last words before the payload is dropped (`tp_dealloc`, GIL held).
    fn dealloc(&self, _py: Python<'_>) {}
}

/// A created raw class: its type object and where the payload lives.
#[derive(Debug)]
pub(crate) struct RawClass<T> {
    ty: Py<PyType>,
    payload_offset: isize,
    weaklist_offset: isize,
    base_slots: (isize, isize),
    _payload: PhantomData<fn() -> T>,
}

const fn align_up(n: usize, align: usize) -> usize {
    (n + align - 1) & !(align - 1)
}

/// A getter: `fn(payload, py) -> PyResult<PyObject>`.
pub(crate) type RawGetter = unsafe extern "C" fn(*mut ffi::PyObject, *mut c_void) -> *mut ffi::PyObject;

/// A setter: `fn(obj, value or NULL for del, closure) -> 0 | -1`.
pub(crate) type RawSetter = unsafe extern "C" fn(*mut ffi::PyObject, *mut ffi::PyObject, *mut c_void) -> c_int;

/// The optional parts of a class.
pub(crate) struct ClassOpts<'a, T> {
    /// Put the payload where `like`'s instances have it (see `create`).
    pub like: Option<&'a RawClass<T>>,
    /// Setters of attributes that also have a getter (by name).
    pub setters: &'a [(&'static CStr, RawSetter)],
    /// Instances get a `__dict__` (after the weak-reference list).
    pub dict: bool,
}

impl<T> Default for ClassOpts<'_, T> {
    fn default() -> Self {
        Self {
            like: None,
            setters: &[],
            dict: false,
        }
    }
}

impl<T: RawPayload> RawClass<T> {
    /// Create the class `qualname` (`"module.Name"`) deriving from `bases`.
    ///
    /// With `opts.like`, the payload and the weak-reference list sit where
    /// they sit in `like`'s instances (the gap after a smaller base's slots
    /// stays zeroed), so `T`'s slot functions, which find them through
    /// `T::class()`, serve this class too; `like`'s base slots must cover
    /// this class's (checked). A `__dict__` (`opts.dict`) is found by the
    /// slot functions through the instance's type (`tp_dictoffset`).
    #[allow(clippy::too_many_lines, reason = "one table of type slots, read top to bottom")]
    #[allow(clippy::too_many_arguments, reason = "the parts of one type spec")]
    pub(crate) fn create(
        py: Python<'_>,
        qualname: &'static CStr,
        doc: &'static CStr,
        bases: &Bound<'_, PyTuple>,
        methods: Vec<ffi::PyMethodDef>,
        getters: &[(&'static CStr, RawGetter)],
        repr: Option<ffi::reprfunc>,
        extra_slots: &[(c_int, *mut c_void)],
        opts: ClassOpts<'_, T>,
    ) -> PyResult<Self> {
        let like = opts.like;
        let base = bases.get_item(0)?.cast_into::<PyType>()?;
        // SAFETY: `base` is a live type object; only plain fields are read.
        let (base_size, itemsize, dictoffset, weakoffset, flags) = unsafe {
            let t = base.as_type_ptr();
            (
                (*t).tp_basicsize as usize,
                (*t).tp_itemsize,
                (*t).tp_dictoffset,
                (*t).tp_weaklistoffset,
                (*t).tp_flags,
            )
        };
        let ptr_size = std::mem::size_of::<*mut ffi::PyObject>();
        let head = std::mem::size_of::<ffi::PyObject>();
        // Py_TPFLAGS_MANAGED_DICT / MANAGED_WEAKREF (3.12+) would place data
        // outside the basic size.
        let managed = (1u64 << 4) | (1u64 << 3);
        if itemsize != 0
            || dictoffset != 0
            || weakoffset != 0
            || flags & managed != 0
            || base_size < head
            || (base_size - head) % ptr_size != 0
        {
            return Err(PyTypeError::new_err(format!(
                "ferroloop: unsupported base layout for {}",
                qualname.to_string_lossy()
            )));
        }
        let mut payload_offset = align_up(base_size, std::mem::align_of::<T>());
        if let Some(like) = like {
            let (start, end) = like.base_slots;
            if start != head as isize || (end as usize) < base_size || (like.payload_offset as usize) < payload_offset {
                return Err(PyTypeError::new_err(format!(
                    "ferroloop: {} cannot share its payload layout",
                    qualname.to_string_lossy()
                )));
            }
            payload_offset = like.payload_offset as usize;
        }
        let weaklist_offset = align_up(payload_offset + std::mem::size_of::<T>(), ptr_size);
        let dict_offset = weaklist_offset + ptr_size;
        let basicsize = if opts.dict { dict_offset + ptr_size } else { dict_offset };

        let mut methods = methods;
        methods.push(ffi::PyMethodDef::zeroed());
        let methods: &'static mut [ffi::PyMethodDef] = Box::leak(methods.into_boxed_slice());
        let mut getset: Vec<ffi::PyGetSetDef> = getters
            .iter()
            .map(|&(name, get)| ffi::PyGetSetDef {
                name: name.as_ptr(),
                get: Some(get),
                set: opts.setters.iter().find(|(n, _)| *n == name).map(|&(_, set)| set),
                doc: std::ptr::null(),
                closure: std::ptr::null_mut(),
            })
            .collect();
        getset.push(ffi::PyGetSetDef {
            name: std::ptr::null(),
            get: None,
            set: None,
            doc: std::ptr::null(),
            closure: std::ptr::null_mut(),
        });
        let getset: &'static mut [ffi::PyGetSetDef] = Box::leak(getset.into_boxed_slice());
        let mut members = vec![ffi::PyMemberDef {
            name: c"__weaklistoffset__".as_ptr(),
            type_code: ffi::Py_T_PYSSIZET,
            offset: weaklist_offset as ffi::Py_ssize_t,
            flags: ffi::Py_READONLY,
            doc: std::ptr::null(),
        }];
        if opts.dict {
            members.push(ffi::PyMemberDef {
                name: c"__dictoffset__".as_ptr(),
                type_code: ffi::Py_T_PYSSIZET,
                offset: dict_offset as ffi::Py_ssize_t,
                flags: ffi::Py_READONLY,
                doc: std::ptr::null(),
            });
        }
        members.push(ffi::PyMemberDef::default());
        let members: &'static mut [ffi::PyMemberDef] = Box::leak(members.into_boxed_slice());
        let mut slots = vec![
            ffi::PyType_Slot {
                slot: ffi::Py_tp_dealloc,
                pfunc: dealloc::<T> as *mut c_void,
            },
            ffi::PyType_Slot {
                slot: ffi::Py_tp_traverse,
                pfunc: traverse::<T> as *mut c_void,
            },
            ffi::PyType_Slot {
                slot: ffi::Py_tp_clear,
                pfunc: clear::<T> as *mut c_void,
            },
            ffi::PyType_Slot {
                slot: ffi::Py_tp_finalize,
                pfunc: finalize::<T> as *mut c_void,
            },
            ffi::PyType_Slot {
                slot: ffi::Py_tp_methods,
                pfunc: methods.as_mut_ptr().cast(),
            },
            ffi::PyType_Slot {
                slot: ffi::Py_tp_getset,
                pfunc: getset.as_mut_ptr().cast(),
            },
            ffi::PyType_Slot {
                slot: ffi::Py_tp_members,
                pfunc: members.as_mut_ptr().cast(),
            },
            ffi::PyType_Slot {
                slot: ffi::Py_tp_doc,
                pfunc: doc.as_ptr().cast_mut().cast(),
            },
        ];
        if let Some(f) = repr {
            slots.push(ffi::PyType_Slot {
                slot: ffi::Py_tp_repr,
                pfunc: f as *mut c_void,
            });
        }
        slots.extend(
            extra_slots
                .iter()
                .map(|&(slot, pfunc)| ffi::PyType_Slot { slot, pfunc }),
        );
        slots.push(ffi::PyType_Slot {
            slot: 0,
            pfunc: std::ptr::null_mut(),
        });
        let slots: &'static mut [ffi::PyType_Slot] = Box::leak(slots.into_boxed_slice());
        let spec: &'static mut ffi::PyType_Spec = Box::leak(Box::new(ffi::PyType_Spec {
            name: qualname.as_ptr(),
            basicsize: basicsize as c_int,
            itemsize: 0,
            flags: (ffi::Py_TPFLAGS_DEFAULT | ffi::Py_TPFLAGS_HAVE_GC | ffi::Py_TPFLAGS_DISALLOW_INSTANTIATION) as _,
            slots: slots.as_mut_ptr(),
        }));
        // SAFETY: the spec and everything it points to are 'static; `bases`
        // is a tuple of live types.
        let ty = unsafe { ffi::PyType_FromSpecWithBases(spec, bases.as_ptr()) };
        if ty.is_null() {
            return Err(PyErr::fetch(py));
        }
        // SAFETY: a new reference to a type object.
        let ty = unsafe { Bound::from_owned_ptr(py, ty).cast_into_unchecked::<PyType>() };
        Ok(Self {
            ty: ty.unbind(),
            payload_offset: payload_offset as isize,
            weaklist_offset: weaklist_offset as isize,
            base_slots: (head as isize, base_size as isize),
            _payload: PhantomData,
        })
    }

    /// True if instances of `other` keep their payload and weak-reference
    /// list where this class's instances do (so one class's slot functions
    /// serve both).
    pub(crate) fn same_layout(&self, other: &Self) -> bool {
        self.payload_offset == other.payload_offset
            && self.weaklist_offset == other.weaklist_offset
            && self.base_slots.0 == other.base_slots.0
            && self.base_slots.1 <= other.base_slots.1
    }

    /// The type object.
    pub(crate) fn type_object<'py>(&self, py: Python<'py>) -> &Bound<'py, PyType> {
        self.ty.bind(py)
    }

    /// A new instance carrying `payload`.
    pub(crate) fn new_instance<'py>(&self, py: Python<'py>, payload: T) -> PyResult<Bound<'py, PyAny>> {
        let tp = self.ty.bind(py).as_type_ptr();
        // SAFETY: allocates a zeroed, GC-tracked instance of our own type
        // (the type's tp_alloc is PyType_GenericAlloc).
        let obj = unsafe { ffi::PyType_GenericAlloc(tp, 0) };
        if obj.is_null() {
            return Err(PyErr::fetch(py));
        }
        // SAFETY: the payload area lies inside the freshly allocated object,
        // is suitably aligned (see `create`), and is written before any
        // Python code runs.
        unsafe {
            obj.cast::<u8>().offset(self.payload_offset).cast::<T>().write(payload);
            Ok(Bound::from_owned_ptr(py, obj))
        }
    }

    /// The payload of `obj`, if `obj` is an instance of this class.
    pub(crate) fn payload_of<'a>(&self, obj: &'a Bound<'_, PyAny>) -> Option<&'a T> {
        if obj.is_instance(self.ty.bind(obj.py())).unwrap_or(false) {
            // SAFETY: checked to be an instance of our class just above.
            Some(unsafe { self.payload(obj.as_ptr()) })
        } else {
            None
        }
    }

    /// The payload of an instance of this class.
    ///
    /// # Safety
    /// `obj` must be a live instance of this class (e.g. the `self` of one of
    /// its methods), and stay alive for `'a`.
    pub(crate) unsafe fn payload<'a>(&self, obj: *mut ffi::PyObject) -> &'a T {
        // SAFETY: per the contract, the payload was written at this offset.
        unsafe { &*obj.cast::<u8>().offset(self.payload_offset).cast::<T>() }
    }

    /// The object whose payload lives at `payload`.
    ///
    /// # Safety
    /// `payload` must be the payload address of a live instance of this class.
    pub(crate) unsafe fn object_of(&self, payload: *const T) -> *mut ffi::PyObject {
        // SAFETY: per the contract, the object starts `payload_offset` bytes before.
        unsafe { payload.cast::<u8>().offset(-self.payload_offset).cast_mut().cast() }
    }

    /// The `self` of a getter or method, with its payload.
    ///
    /// # Safety
    /// As for [`RawClass::payload`].
    pub(crate) unsafe fn bind<'py>(&self, py: Python<'py>, obj: *mut ffi::PyObject) -> (Bound<'py, PyAny>, &'py T) {
        // SAFETY: per the contract.
        unsafe { (Bound::from_borrowed_ptr(py, obj), self.payload(obj)) }
    }

    fn base_slot_ptrs(&self, obj: *mut ffi::PyObject) -> impl Iterator<Item = *mut *mut ffi::PyObject> {
        let (start, end) = self.base_slots;
        let step = std::mem::size_of::<*mut ffi::PyObject>() as isize;
        // SAFETY: the base's slots are pointer-sized, pointer-aligned fields
        // between the object header and the base's basic size (checked in
        // `create`).
        #[allow(clippy::cast_ptr_alignment, reason = "object slots are pointer-aligned")]
        (0..((end - start) / step)).map(move |i| unsafe { obj.cast::<u8>().offset(start + i * step).cast() })
    }
}

/// The `__dict__` slot of `obj`, if its type has one (`tp_dictoffset`).
///
/// # Safety
/// `obj` must be a live instance of a raw class.
unsafe fn dict_slot(obj: *mut ffi::PyObject) -> Option<*mut *mut ffi::PyObject> {
    // SAFETY: per the contract; a positive offset lies inside the instance.
    unsafe {
        let off = (*ffi::Py_TYPE(obj)).tp_dictoffset;
        #[allow(
            clippy::cast_ptr_alignment,
            reason = "the dict slot is pointer-aligned (see `create`)"
        )]
        (off > 0).then(|| obj.cast::<u8>().offset(off).cast::<*mut ffi::PyObject>())
    }
}

/// The class of `T`, for the slot functions.
fn class_of<T: RawPayload>() -> &'static RawClass<T> {
    T::class()
}

unsafe extern "C" fn dealloc<T: RawPayload>(obj: *mut ffi::PyObject) {
    // SAFETY: called by the interpreter on an instance of our class whose
    // reference count reached zero, with the GIL held.
    unsafe {
        if ffi::PyObject_CallFinalizerFromDealloc(obj) < 0 {
            return; // resurrected by __del__
        }
        ffi::PyObject_GC_UnTrack(obj.cast());
        let class = class_of::<T>();
        #[allow(
            clippy::cast_ptr_alignment,
            reason = "the weak-list slot is pointer-aligned (see `create`)"
        )]
        let weaklist = obj
            .cast::<u8>()
            .offset(class.weaklist_offset)
            .cast::<*mut ffi::PyObject>();
        if !(*weaklist).is_null() {
            ffi::PyObject_ClearWeakRefs(obj);
        }
        // The payload's references are released at once (see `py::entered`).
        crate::py::entered(|py| {
            class.payload(obj).dealloc(py);
            std::ptr::drop_in_place(obj.cast::<u8>().offset(class.payload_offset).cast::<T>());
        });
        for slot in class.base_slot_ptrs(obj).chain(dict_slot(obj)) {
            let old = std::ptr::replace(slot, std::ptr::null_mut());
            if !old.is_null() {
                ffi::Py_DECREF(old);
            }
        }
        let tp = ffi::Py_TYPE(obj);
        if let Some(free) = (*tp).tp_free {
            free(obj.cast());
        }
        ffi::Py_DECREF(tp.cast());
    }
}

unsafe extern "C" fn traverse<T: RawPayload>(
    obj: *mut ffi::PyObject,
    visit: ffi::visitproc,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: called by the collector on a live instance of our class.
    unsafe {
        let class = class_of::<T>();
        let rc = visit(ffi::Py_TYPE(obj).cast(), arg);
        if rc != 0 {
            return rc;
        }
        for slot in class.base_slot_ptrs(obj).chain(dict_slot(obj)) {
            if !(*slot).is_null() {
                let rc = visit(*slot, arg);
                if rc != 0 {
                    return rc;
                }
            }
        }
        match class.payload(obj).visit_refs(&Visitor::Raw(visit, arg)) {
            Err(GcStop::Raw(rc)) => rc,
            _ => 0,
        }
    }
}

unsafe extern "C" fn clear<T: RawPayload>(obj: *mut ffi::PyObject) -> c_int {
    // SAFETY: called by the collector (GIL held) on a live instance.
    unsafe {
        let class = class_of::<T>();
        crate::py::entered(|py| class.payload(obj).clear_refs(py));
        for slot in class.base_slot_ptrs(obj).chain(dict_slot(obj)) {
            let old = std::ptr::replace(slot, std::ptr::null_mut());
            if !old.is_null() {
                ffi::Py_DECREF(old);
            }
        }
    }
    0
}

unsafe extern "C" fn finalize<T: RawPayload>(obj: *mut ffi::PyObject) {
    // Called by the interpreter with the GIL held on a live instance.
    crate::py::entered(|py| {
        // tp_finalize must not lose a pending exception.
        let saved = PyErr::take(py);
        // SAFETY: `obj` is live for the duration of the call.
        let bound = unsafe { Bound::from_borrowed_ptr(py, obj) };
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| T::finalize(&bound)));
        if res.is_err() {
            // A panic in __del__ is reported like an exception in __del__.
            pyo3::panic::PanicException::new_err("ferroloop panicked in __del__ (this is a bug)").restore(py);
            // SAFETY: an exception is set; PyErr_WriteUnraisable consumes it.
            unsafe { ffi::PyErr_WriteUnraisable(obj) };
        }
        if let Some(e) = saved {
            e.restore(py);
        }
    });
}

/// Define a read-only attribute getter of a raw class:
/// `raw_getter!(name, Payload, |py, obj, payload| -> PyResult<Py<PyAny>>)`.
macro_rules! raw_getter {
    ($name:ident, $payload:ty, |$py:ident, $obj:ident, $t:ident| $body:expr) => {
        unsafe extern "C" fn $name(
            obj: *mut pyo3::ffi::PyObject,
            _closure: *mut std::os::raw::c_void,
        ) -> *mut pyo3::ffi::PyObject {
            // Getters are called with the GIL held.
            $crate::py::entered(|$py| {
                $crate::py::fastcall::finish($py, || {
                    let class = <$payload as $crate::py::native_type::RawPayload>::class();
                    // SAFETY: the getset descriptor checked `obj`'s type.
                    let ($obj, $t) = unsafe { class.bind($py, obj) };
                    let _ = (&$obj, &$t);
                    $body
                })
            })
        }
    };
}
pub(crate) use raw_getter;

/// Define the `tp_repr` of a raw class: `raw_repr!(name, Payload, |py, obj, payload| -> PyResult<String>)`.
macro_rules! raw_repr {
    ($name:ident, $payload:ty, |$py:ident, $obj:ident, $t:ident| $body:expr) => {
        pub(crate) unsafe extern "C" fn $name(obj: *mut pyo3::ffi::PyObject) -> *mut pyo3::ffi::PyObject {
            // Called by the interpreter with the GIL held.
            $crate::py::entered(|$py| {
                $crate::py::fastcall::finish($py, || {
                    let class = <$payload as $crate::py::native_type::RawPayload>::class();
                    // SAFETY: the slot belongs to the payload's class.
                    let ($obj, $t) = unsafe { class.bind($py, obj) };
                    let s: String = $body?;
                    Ok(pyo3::types::PyString::new($py, &s).into_any().unbind())
                })
            })
        }
    };
}
pub(crate) use raw_repr;
