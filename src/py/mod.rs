//! Everything that touches the raw Python C API, and the helpers around it.
//!
//! A leaf: nothing here depends on the loop, the handles or the transports.
//!
//! - [`cell`]: `GilCell`, interior mutability for pyclass state guarded by the GIL.
//! - [`call`]: running a callback inside a `contextvars.Context` (what
//!   `Handle._run` does with `context.run`), without building a bound method.
//! - [`errors`]: `OSError(errno, strerror)` construction that keeps `errno`.
//! - [`fastcall`]: raw vectorcall methods: argument parsing, installation.
//! - [`gc`]: cycle-collector tracking of loop-owned handles, and the
//!   traverse/clear helper ([`gc::GcRefs`]) every class uses.
//! - [`held`]: owned references released without a thread-state lookup.
//! - [`hooks`]: the cold-path helpers written in Python (`ferroloop._hooks`).
//! - [`spare_bytes`]: the `bytes` object a loop refills for the next read.
//! - [`sockobj`]: a `socket.socket`'s descriptor read from the object.

pub(crate) mod buffer;
pub(crate) mod call;
pub(crate) mod cell;
pub(crate) mod coroutine;
pub(crate) mod errors;
pub(crate) mod fastcall;
pub(crate) mod gc;
pub(crate) mod held;
pub(crate) mod hooks;
pub(crate) mod native_type;
pub(crate) mod sockobj;
pub(crate) mod spare_bytes;

use pyo3::Python;

/// Run `f` as an entry from the interpreter: a slot function or raw
/// method, called with the GIL held but not through a PyO3 wrapper.
///
/// PyO3 releases a dropped `Py<T>` at once only while it counts the thread
/// as attached; otherwise it queues the release until the next PyO3-wrapped
/// call. Entered from Python code that runs outside the loop's own call
/// (a coroutine stepped by hand, a transport used before `run_forever`),
/// a raw method's `Py<T>` releases were queued: objects outlived their last
/// reference (a returned socket's finalizer and `ResourceWarning` came at
/// some later call; 20,000 `sock_recv` results of 10 KB stayed alive). This
/// counts the thread as attached for the call, as PyO3's wrappers do.
#[inline]
pub(crate) fn entered<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> R {
    // SAFETY: every caller is a slot or method the interpreter calls with
    // the GIL held (the thread is attached).
    unsafe { Python::attach_unchecked(f) }
}
