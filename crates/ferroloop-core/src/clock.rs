//! The loop clock: `CLOCK_MONOTONIC` as float seconds.
//!
//! Mirrors `time.monotonic()` (which asyncio's `BaseEventLoop.time()` returns):
//! CPython reads `clock_gettime(CLOCK_MONOTONIC)` into integer nanoseconds and
//! divides by 1e9; doing the same here makes `loop.time()` and
//! `time.monotonic()` comparable to the last bit.
//!
//! [`ticks`] is a second clock, for timing every callback: the CPU's
//! time-stamp counter where the kernel itself trusts it as its clocksource
//! (constant rate, synchronized across CPUs: about 8 ns a read here against
//! 17 ns for `clock_gettime`), else `CLOCK_MONOTONIC` in nanoseconds. Its rate
//! is measured once per process against `CLOCK_MONOTONIC` ([`ticks_per_second`]).

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

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

const UNKNOWN: u8 = 0;
const TSC: u8 = 1;
const MONOTONIC: u8 = 2;

static SOURCE: AtomicU8 = AtomicU8::new(UNKNOWN);
static RATE: OnceLock<f64> = OnceLock::new();

/// The current tick count (see the module docs). Differences of two reads on
/// any threads of the process, divided by [`ticks_per_second`], are seconds.
#[inline]
#[must_use]
pub fn ticks() -> u64 {
    match SOURCE.load(Ordering::Relaxed) {
        TSC => crate::sys::cycle_counter().unwrap_or(0),
        MONOTONIC => monotonic_ns() as u64,
        _ => {
            let _ = ticks_per_second();
            ticks()
        }
    }
}

/// Ticks per second (measured on first use, about 1 ms).
#[must_use]
pub fn ticks_per_second() -> f64 {
    *RATE.get_or_init(|| {
        let (source, rate) = calibrate();
        SOURCE.store(source, Ordering::Relaxed);
        rate
    })
}

/// Convert seconds to ticks, saturating (NaN and negative give 0).
#[must_use]
pub fn seconds_to_ticks(seconds: f64) -> u64 {
    let t = seconds * ticks_per_second();
    if t.is_nan() || t <= 0.0 {
        0
    } else if t >= u64::MAX as f64 {
        u64::MAX
    } else {
        t as u64
    }
}

/// Convert ticks to seconds.
#[must_use]
pub fn ticks_to_seconds(ticks: u64) -> f64 {
    ticks as f64 / ticks_per_second()
}

/// True if the kernel keeps time with the TSC and the CPU says its rate is
/// constant and does not stop in idle states.
fn tsc_trusted() -> bool {
    if crate::sys::cycle_counter().is_none() {
        return false;
    }
    let source = std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource");
    if source.map_or(true, |s| s.trim() != "tsc") {
        return false;
    }
    let Ok(cpuinfo) = std::fs::read_to_string("/proc/cpuinfo") else {
        return false;
    };
    let flags = cpuinfo.lines().find(|l| l.starts_with("flags")).unwrap_or("");
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    has("constant_tsc") && has("nonstop_tsc")
}

/// One (tsc, monotonic ns) pair read close together (retried when the two
/// reads were far apart, e.g. the thread was preempted between them).
fn pair() -> (u64, i64) {
    let mut best = (0, 0, u64::MAX);
    for _ in 0..8 {
        let a = crate::sys::cycle_counter().unwrap_or(0);
        let m = monotonic_ns();
        let b = crate::sys::cycle_counter().unwrap_or(0);
        let width = b.wrapping_sub(a);
        if width < best.2 {
            best = (a + width / 2, m, width);
        }
    }
    (best.0, best.1)
}

fn calibrate() -> (u8, f64) {
    if !tsc_trusted() {
        return (MONOTONIC, 1e9);
    }
    let (t0, m0) = pair();
    while monotonic_ns() - m0 < 1_000_000 {
        std::hint::spin_loop();
    }
    let (t1, m1) = pair();
    let rate = t1.wrapping_sub(t0) as f64 / ((m1 - m0) as f64 / 1e9);
    if rate.is_finite() && rate > 1e6 {
        (TSC, rate)
    } else {
        (MONOTONIC, 1e9)
    }
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

    #[test]
    fn ticks_measure_seconds() {
        let rate = ticks_per_second();
        assert!(rate > 1e6, "{rate}");
        let (t0, m0) = (ticks(), monotonic());
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (t1, m1) = (ticks(), monotonic());
        let by_ticks = ticks_to_seconds(t1 - t0);
        assert!((by_ticks - (m1 - m0)).abs() < 0.002, "{by_ticks} vs {}", m1 - m0);
    }

    #[test]
    fn seconds_to_ticks_saturates() {
        assert_eq!(seconds_to_ticks(f64::NAN), 0);
        assert_eq!(seconds_to_ticks(-1.0), 0);
        assert_eq!(seconds_to_ticks(f64::INFINITY), u64::MAX);
        let one = seconds_to_ticks(1.0);
        assert!((ticks_to_seconds(one) - 1.0).abs() < 1e-6);
    }
}
