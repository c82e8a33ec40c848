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
    crate::sys::monotonic_ns()
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
