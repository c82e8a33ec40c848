//! Sliding windows behind `ferroloop.stats()`: the loop's busy time per
//! 100 ms over the last 10 s, a histogram of timer lateness per second over
//! the last 10 s, and the longest callback per second over the last 10 s.
//!
//! Everything is updated by the loop thread at moments it already has the
//! time (around a blocking poll, when timers fire, after a callback), and
//! summed only when somebody asks.

/// Length of the longest window, in seconds.
pub const WINDOW: f64 = 10.0;

const LOAD_SLOT: f64 = 0.1;
const LOAD_SLOTS: usize = 100;

/// Busy time per 100 ms slot over the last 10 s.
#[derive(Debug, Clone)]
pub struct LoadWindow {
    /// (slot number = floor(t / 100 ms), busy seconds in it)
    slots: Box<[(i64, f64); LOAD_SLOTS]>,
}

impl Default for LoadWindow {
    fn default() -> Self {
        Self {
            slots: Box::new([(i64::MIN, 0.0); LOAD_SLOTS]),
        }
    }
}

impl LoadWindow {
    /// Count `[from, to)` (monotonic seconds) as busy.
    pub fn add_busy(&mut self, from: f64, to: f64) {
        if to.partial_cmp(&from) != Some(std::cmp::Ordering::Greater) {
            return;
        }
        // Only the last 10 s can matter.
        let from = from.max(to - WINDOW - LOAD_SLOT);
        let mut t = from;
        while t < to {
            let mut n = (t / LOAD_SLOT).floor() as i64;
            if (n + 1) as f64 * LOAD_SLOT <= t {
                // Rounding put t at the very end of slot n.
                n += 1;
            }
            let end = ((n + 1) as f64 * LOAD_SLOT).min(to);
            let slot = &mut self.slots[n.rem_euclid(LOAD_SLOTS as i64) as usize];
            if slot.0 != n {
                *slot = (n, 0.0);
            }
            slot.1 += end - t;
            t = end;
        }
    }

    /// Busy seconds within `(now - span, now]`, counting whole slots.
    #[must_use]
    pub fn busy_within(&self, now: f64, span: f64) -> f64 {
        let last = (now / LOAD_SLOT).floor() as i64;
        let first = last - (span / LOAD_SLOT).round() as i64 + 1;
        self.slots
            .iter()
            .filter(|(n, _)| *n >= first && *n <= last)
            .map(|(_, b)| *b)
            .sum()
    }

    /// Busy fraction of the last `span` seconds (of the time since `since`
    /// if that is shorter), in `[0, 1]`.
    #[must_use]
    pub fn load(&self, now: f64, span: f64, since: f64) -> f64 {
        // Whole slots are summed: the window covers them whole.
        let last = (now / LOAD_SLOT).floor();
        let window_start = (last + 1.0 - (span / LOAD_SLOT).round()) * LOAD_SLOT;
        let length = now - window_start.max(since);
        if length <= 0.0 {
            return 0.0;
        }
        (self.busy_within(now, span) / length).clamp(0.0, 1.0)
    }
}

/// Sub-buckets per power of two: values are kept within 2^(1/8), about 9 %.
const SUB_BITS: u32 = 3;
const SUB: u64 = 1 << SUB_BITS;
/// Octaves up to 2^42 ns (about 73 minutes); larger values share the last bin.
const BINS: usize = (SUB as usize) * (42 - SUB_BITS as usize + 1) + SUB as usize;
const SECONDS: usize = 10;

fn bin_of(ns: u64) -> usize {
    if ns < SUB {
        return ns as usize;
    }
    let octave = ns.ilog2(); // >= SUB_BITS
    let sub = (ns >> (octave - SUB_BITS)) & (SUB - 1);
    ((u64::from(octave - SUB_BITS + 1) * SUB + sub) as usize).min(BINS - 1)
}

/// The smallest and largest value of bin `b`.
fn bin_range(b: usize) -> (u64, u64) {
    let b = b as u64;
    if b < SUB {
        return (b, b);
    }
    let octave = b / SUB - 1 + u64::from(SUB_BITS);
    let sub = b % SUB;
    let width = 1u64 << (octave - u64::from(SUB_BITS));
    let low = (1u64 << octave) + sub * width;
    (low, low + width - 1)
}

/// The whole second of monotonic time `t` (a cast for the usual positive
/// times: `floor` is a libm call without SSE4.1).
#[inline]
fn second_of(t: f64) -> i64 {
    if t >= 0.0 {
        t as i64
    } else {
        t.floor() as i64
    }
}

/// One second's part of a [`Histogram`].
#[derive(Debug, Clone)]
pub struct Second {
    at: i64,
    count: u64,
    max: u64,
    bins: [u32; BINS],
}

impl Second {
    /// Count one value.
    #[inline]
    pub fn record(&mut self, ns: u64) {
        self.count += 1;
        self.max = self.max.max(ns);
        let b = &mut self.bins[bin_of(ns)];
        *b = b.saturating_add(1);
    }
}

/// A histogram of nanosecond values per second over the last 10 s.
#[derive(Debug, Clone)]
pub struct Histogram {
    seconds: Box<[Second]>,
}

impl Default for Histogram {
    fn default() -> Self {
        let empty = Second {
            at: i64::MIN,
            count: 0,
            max: 0,
            bins: [0; BINS],
        };
        Self {
            seconds: vec![empty; SECONDS].into_boxed_slice(),
        }
    }
}

/// Percentiles of a [`Histogram`] (nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    pub count: u64,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

impl Histogram {
    /// Record `ns` at monotonic time `now` (seconds).
    pub fn record(&mut self, now: f64, ns: u64) {
        self.second(now).record(ns);
    }

    /// The part of the second of `now`, to record several values of it.
    pub fn second(&mut self, now: f64) -> &mut Second {
        let second = second_of(now);
        let s = &mut self.seconds[second.rem_euclid(SECONDS as i64) as usize];
        if s.at != second {
            s.at = second;
            s.count = 0;
            s.max = 0;
            s.bins = [0; BINS];
        }
        s
    }

    /// p50, p99 and max over the seconds within the last 10 s of `now`
    /// (a percentile is its bin's midpoint, never above the max).
    #[must_use]
    pub fn summary(&self, now: f64) -> Summary {
        let current = second_of(now);
        let live: Vec<&Second> = self
            .seconds
            .iter()
            .filter(|s| s.at > current - SECONDS as i64 && s.at <= current)
            .collect();
        let count: u64 = live.iter().map(|s| s.count).sum();
        if count == 0 {
            return Summary::default();
        }
        let max = live.iter().map(|s| s.max).max().unwrap_or(0);
        let mut merged = [0u64; BINS];
        for s in &live {
            for (m, b) in merged.iter_mut().zip(s.bins.iter()) {
                *m += u64::from(*b);
            }
        }
        let quantile = |q: f64| -> u64 {
            let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
            let mut seen = 0;
            for (b, n) in merged.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    let (low, high) = bin_range(b);
                    return (low + (high - low) / 2).min(max);
                }
            }
            max
        };
        Summary {
            count,
            p50: quantile(0.5),
            p99: quantile(0.99),
            max,
        }
    }
}

/// The largest value per second over the last 10 s, with something
/// describing it.
#[derive(Debug, Clone)]
pub struct MaxWindow<T> {
    seconds: Vec<(i64, u64, Option<T>)>,
}

impl<T> Default for MaxWindow<T> {
    fn default() -> Self {
        Self {
            seconds: (0..SECONDS).map(|_| (i64::MIN, 0, None)).collect(),
        }
    }
}

impl<T: Clone> MaxWindow<T> {
    /// The largest value recorded in `second` so far (0 for none).
    #[must_use]
    pub fn max_of(&self, second: i64) -> u64 {
        let s = &self.seconds[second.rem_euclid(SECONDS as i64) as usize];
        if s.0 == second {
            s.1
        } else {
            0
        }
    }

    /// Record `value` in `second` if it is that second's largest so far.
    pub fn offer(&mut self, second: i64, value: u64, what: T) {
        let s = &mut self.seconds[second.rem_euclid(SECONDS as i64) as usize];
        if s.0 != second || value > s.1 {
            *s = (second, value, Some(what));
        }
    }

    /// The largest value within the last 10 s of `now_second`.
    #[must_use]
    pub fn max(&self, now_second: i64) -> Option<(u64, T)> {
        self.seconds
            .iter()
            .filter(|s| s.0 > now_second - SECONDS as i64 && s.0 <= now_second)
            .filter_map(|s| s.2.as_ref().map(|w| (s.1, w.clone())))
            .max_by_key(|(v, _)| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_cover_values_in_order() {
        let mut last = 0;
        for ns in [0u64, 1, 7, 8, 9, 15, 16, 100, 1_000, 123_456, 1 << 40, u64::MAX] {
            let b = bin_of(ns);
            assert!(b >= last, "{ns}");
            last = b;
            let (low, high) = bin_range(b);
            if b < BINS - 1 {
                assert!(low <= ns && ns <= high, "{ns} not in {low}..={high}");
            }
        }
        // Relative width stays within 1/8.
        let (low, high) = bin_range(bin_of(1_000_000));
        assert!((high - low) as f64 / low as f64 <= 0.125);
    }

    #[test]
    fn histogram_percentiles_and_expiry() {
        let mut h = Histogram::default();
        for i in 0..99 {
            h.record(100.5, 1_000 + i);
        }
        h.record(100.5, 5_000_000);
        let s = h.summary(100.9);
        assert_eq!(s.count, 100);
        assert_eq!(s.max, 5_000_000);
        assert!((900..=1_200).contains(&s.p50), "{s:?}");
        assert!(s.p99 < 1_300, "{s:?}");
        // Ten seconds later everything expired.
        assert_eq!(h.summary(110.2).count, 0);
        assert_eq!(h.summary(109.2).count, 100);
    }

    #[test]
    fn load_window_counts_busy_fraction() {
        let mut w = LoadWindow::default();
        // Busy half of every 100 ms for 20 s.
        let mut t = 1000.0;
        while t < 1020.0 {
            w.add_busy(t, t + 0.05);
            t += 0.1;
        }
        let l1 = w.load(1020.0, 1.0, 0.0);
        let l10 = w.load(1020.0, 10.0, 0.0);
        assert!((l1 - 0.5).abs() < 0.06, "{l1}");
        assert!((l10 - 0.5).abs() < 0.02, "{l10}");
        // A long busy stretch fills the window.
        w.add_busy(1020.0, 1100.0);
        assert!((w.load(1100.0, 10.0, 0.0) - 1.0).abs() < 0.02);
        // Nothing since: idle.
        assert_eq!(w.load(1200.0, 10.0, 0.0), 0.0);
    }

    #[test]
    fn max_window_keeps_largest_per_second() {
        let mut m = MaxWindow::default();
        m.offer(5, 10, "a");
        m.offer(5, 3, "b");
        m.offer(7, 20, "c");
        assert_eq!(m.max_of(5), 10);
        assert_eq!(m.max(8), Some((20, "c")));
        assert_eq!(m.max(16), Some((20, "c")));
        assert_eq!(m.max(17), None);
    }
}
