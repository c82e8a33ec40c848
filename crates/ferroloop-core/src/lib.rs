//! ferroloop-core: the pure-Rust machinery under ferroloop's asyncio event loop.
//!
//! Nothing here knows about Python: the crate has no PyO3 dependency, so it can
//! be tested with `cargo test` alone and can never touch a Python object while
//! the GIL is released.
//!
//! - [`reactor`]: a thin epoll wrapper with per-registration *level* (the
//!   semantics of `selectors.EpollSelector`, which asyncio's `add_reader`
//!   relies on) or *edge* triggering, token-addressed events, and an eventfd
//!   [`reactor::Waker`].
//! - [`registry`]: the slab of registrations behind the tokens, with
//!   generations so that a stale event never reaches a new owner.
//! - [`timers`]: the timer heap, a binary heap that performs exactly the
//!   comparisons and moves of CPython's `heapq`, so that timers with equal
//!   deadlines come out in the same order as on stdlib asyncio.
//! - [`ready`]: the ready queue with `_run_once`'s batch rule.
//! - [`clock`]: `CLOCK_MONOTONIC` as float seconds, the clock of `time.monotonic()`,
//!   and the cheap tick counter that times callbacks.
//! - [`stats`]: the sliding windows behind `ferroloop.stats()`.
//! - [`net`]: owned fds, compact socket addresses, non-blocking socket calls.
//! - [`buffer`]: the write queue of a stream transport.
//! - [`sys`]: every raw libc call, each behind a safe wrapper.
//! - [`tls_records`]: the TLS record framing of the bytes fed to a memory
//!   BIO (the native `SSLProtocol`'s read path).

pub mod buffer;
pub mod clock;
pub mod fdmap;
pub mod net;
pub mod reactor;
pub mod ready;
pub mod registry;
pub mod stats;
pub mod sys;
pub mod timers;
pub mod tls_records;
