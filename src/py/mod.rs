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
pub(crate) mod spare_bytes;
