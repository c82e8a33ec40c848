//! `GilCell`: a `RefCell` that may live in a `Sync` pyclass because every
//! access happens with the GIL held.
//!
//! # Invariants
//! - ferroloop's module does not declare `gil_used = false`, so the interpreter
//!   holds the GIL whenever Rust code reachable from Python runs; the GIL is the
//!   mutual exclusion that makes sharing sound across threads.
//! - A borrow is never held across a call into Python (which could release the
//!   GIL or re-enter the loop) nor across `Python::detach`. A violation shows up
//!   as a `RefCell` panic, which PyO3 turns into a `PanicException`, never as UB.

use std::cell::{Ref, RefCell, RefMut};

use pyo3::Python;

/// `RefCell` shared under the GIL.
#[derive(Debug, Default)]
pub(crate) struct GilCell<T>(RefCell<T>);

// SAFETY: all accesses require a `Python<'_>` token (the GIL is held, see the
// module invariants), so no two threads touch the RefCell at the same time.
unsafe impl<T: Send> Sync for GilCell<T> {}

impl<T> GilCell<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(RefCell::new(value))
    }

    /// Shared borrow; the token proves the GIL is held.
    pub(crate) fn get<'a>(&'a self, _py: Python<'_>) -> Ref<'a, T> {
        self.0.borrow()
    }

    /// Exclusive borrow; the token proves the GIL is held.
    pub(crate) fn get_mut<'a>(&'a self, _py: Python<'_>) -> RefMut<'a, T> {
        self.0.borrow_mut()
    }

    /// Shared borrow if nobody holds an exclusive one (used by `__traverse__`, which must not panic).
    pub(crate) fn try_get(&self) -> Option<Ref<'_, T>> {
        self.0.try_borrow().ok()
    }

    /// Exclusive borrow if nobody holds any (used by `__clear__`, which must not panic).
    pub(crate) fn try_get_mut(&self) -> Option<RefMut<'_, T>> {
        self.0.try_borrow_mut().ok()
    }
}
