//! The loop clock: `CLOCK_MONOTONIC` as float seconds.
//!
//! Mirrors `time.monotonic()` (which asyncio's `BaseEventLoop.time()` returns):
//! CPython reads `clock_gettime(CLOCK_MONOTONIC)` into integer nanoseconds and
//! divides by 1e9; doing the same here makes `loop.time()` and
//! `time.monotonic()` comparable to the last bit.

/// Current monotonic time in seconds.
#[must_use]
pub fn monotonic() -> f64 {
    monotonic_ns() as f64 / 1e9
}

/// Current monotonic time in nanoseconds.
#[must_use]
pub fn monotonic_ns() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    debug_assert_eq!(rc, 0);
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_monotonic() {
        let a = monotonic();
        let b = monotonic();
        assert!(b >= a);
        assert!(a > 0.0);
    }
}
