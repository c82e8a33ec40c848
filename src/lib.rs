//! `ferroloop._ferroloop`: the native half of ferroloop.
//!
//! Registers the classes and installs the `fork()` child hook; nothing else.
//! See `docs/architecture.md` for the map of what is native and what is Python.

mod event_loop;
mod handles;
mod py;
mod server;
mod sock_ops;
mod transports;
mod watchdog;

use std::sync::atomic::Ordering;
use std::sync::Once;

use pyo3::prelude::*;

extern "C" fn after_fork_in_child() {
    // Async-signal-safe: a single atomic increment, no allocation, no GIL.
    event_loop::FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

static ATFORK: Once = Once::new();

// Free-threaded CPython builds are not supported: the loop's state relies on
// the GIL (src/py/cell.rs). Importing the module there re-enables the GIL.
#[pymodule(gil_used = true)]
fn _ferroloop(m: &Bound<'_, PyModule>) -> PyResult<()> {
    ATFORK.call_once(|| {
        // The hook only touches an atomic, which is safe in the child after fork.
        ferroloop_core::sys::at_fork_child(after_fork_in_child);
    });
    m.add_class::<event_loop::EventLoop>()?;
    event_loop::entry::install(m.py())?;
    m.add_class::<handles::Handle>()?;
    m.add_class::<handles::TimerHandle>()?;
    handles::install(m.py())?;
    m.add_function(wrap_pyfunction!(py::hooks::_set_hooks, m)?)?;
    transports::register(m)?;
    m.add_class::<server::Listener>()?;
    m.add_class::<watchdog::Watchdog>()?;
    m.add("_SockCoroutine", sock_ops::init_class(m.py())?)?;
    m.add_function(wrap_pyfunction!(sock_ops::_sendfile_op, m)?)?;
    m.add_function(wrap_pyfunction!(server::_start_listener, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
