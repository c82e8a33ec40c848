//! A count of the cycle collector's finished runs, for the order in which an
//! unclosed connection's socket and transport warn (`stream_life`).
//!
//! Counted by a `gc.callbacks` entry, added when the first native socket
//! transport is made. Modulo 2**16: a transport living through a multiple of
//! 65,536 collections is taken for one that saw none.

use std::sync::atomic::{AtomicU16, Ordering};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

static EPOCH: AtomicU16 = AtomicU16::new(0);

/// The `gc.callbacks` entry, or None if it could not be added.
static CALLBACK: PyOnceLock<Option<Py<PyAny>>> = PyOnceLock::new();

/// The `gc.callbacks` entry: counts finished runs (a transport collected by
/// the first run after it was made still counts as having seen none).
#[pyfunction]
fn _count_collection(phase: &Bound<'_, PyAny>, _info: &Bound<'_, PyAny>) {
    if phase
        .cast::<pyo3::types::PyString>()
        .is_ok_and(|p| p.to_str().is_ok_and(|p| p == "stop"))
    {
        EPOCH.fetch_add(1, Ordering::Relaxed);
    }
}

fn callback(py: Python<'_>) -> Option<&Py<PyAny>> {
    CALLBACK
        .get_or_init(py, || {
            let add = || -> PyResult<Py<PyAny>> {
                let f = wrap_pyfunction!(_count_collection, py)?;
                py.import("gc")?
                    .getattr("callbacks")?
                    .call_method1(pyo3::intern!(py, "append"), (&f,))?;
                Ok(f.into_any().unbind())
            };
            add().ok()
        })
        .as_ref()
}

/// The count now (for a transport being made; 0 while nothing counts).
pub(crate) fn now(py: Python<'_>) -> u16 {
    match callback(py) {
        Some(_) => EPOCH.load(Ordering::Relaxed),
        None => 0,
    }
}

/// Whether the collector finished a run since the count was `then`; None
/// when that is unknown (the entry could not be added, or was taken out of
/// `gc.callbacks`).
pub(crate) fn collected_since(py: Python<'_>, then: u16) -> Option<bool> {
    let f = callback(py)?.bind(py);
    let callbacks = py.import("gc").ok()?.getattr("callbacks").ok()?;
    if !callbacks.contains(f).ok()? {
        return None;
    }
    Some(EPOCH.load(Ordering::Relaxed) != then)
}
