//! The timer heap behind `call_later`/`call_at`: asyncio's `_scheduled` list
//! managed with `heapq`.
//!
//! asyncio orders `TimerHandle`s by `_when` alone (`TimerHandle.__lt__`) and
//! leaves ties to the heap's shape. To give timers with equal deadlines the
//! same order as stdlib asyncio, this heap performs *exactly* the moves of
//! CPython's `heapq` (`heappush` = `_siftdown`, `heappop` = pop-last + `_siftup`,
//! `heapify` = `_siftup` from the middle down), with the same strict `<` on
//! `f64` (so NaN deadlines behave as in Python, too).
//!
//! # Invariants
//! - `entries[0]` has the smallest `when` (for non-NaN deadlines).
//! - The `when` stored beside each item never changes while it is in the heap.

/// A heap of `(when, item)` pairs with CPython `heapq` semantics.
#[derive(Debug)]
pub struct TimerHeap<T> {
    entries: Vec<(f64, T)>,
}

impl<T> Default for TimerHeap<T> {
    fn default() -> Self {
        Self { entries: Vec::new() }
    }
}

impl<T> TimerHeap<T> {
    /// Number of timers in the heap (cancelled ones included, as in asyncio).
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no timer is scheduled.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The head of the heap: earliest deadline and its item.
    #[must_use]
    pub fn peek(&self) -> Option<(f64, &T)> {
        self.entries.first().map(|(w, t)| (*w, t))
    }

    /// `heapq.heappush`.
    pub fn push(&mut self, when: f64, item: T) {
        self.entries.push((when, item));
        let last = self.entries.len() - 1;
        self.sift_down(0, last);
    }

    /// `heapq.heappop`.
    pub fn pop(&mut self) -> Option<(f64, T)> {
        let last = self.entries.pop()?;
        if self.entries.is_empty() {
            return Some(last);
        }
        let top = std::mem::replace(&mut self.entries[0], last);
        self.sift_up(0);
        Some(top)
    }

    /// Keep only the items for which `keep` is true, then `heapq.heapify`
    /// (the cancelled-timer compaction of `_run_once`). Returns the dropped items.
    pub fn retain_and_heapify(&mut self, mut keep: impl FnMut(&T) -> bool) -> Vec<T> {
        let old = std::mem::take(&mut self.entries);
        let mut dropped = Vec::new();
        for (when, item) in old {
            if keep(&item) {
                self.entries.push((when, item));
            } else {
                dropped.push(item);
            }
        }
        for i in (0..self.entries.len() / 2).rev() {
            self.sift_up(i);
        }
        dropped
    }

    /// Remove every timer (`_scheduled.clear()`), in heap order of storage.
    pub fn clear(&mut self) -> Vec<T> {
        self.entries.drain(..).map(|(_, t)| t).collect()
    }

    /// Iterate in storage order (the order of asyncio's `_scheduled` list).
    pub fn iter(&self) -> impl Iterator<Item = (f64, &T)> {
        self.entries.iter().map(|(w, t)| (*w, t))
    }

    // heapq._siftdown: move the item at `pos` up towards `start` while it is
    // strictly smaller than its parent.
    fn sift_down(&mut self, start: usize, mut pos: usize) {
        while pos > start {
            let parent = (pos - 1) >> 1;
            if self.entries[pos].0 < self.entries[parent].0 {
                self.entries.swap(pos, parent);
                pos = parent;
            } else {
                break;
            }
        }
    }

    // heapq._siftup: bubble the smaller child up until a leaf is reached,
    // then put the item there and sift it back down. Expressed with swaps,
    // which perform the same moves as heapq's hole-based version.
    fn sift_up(&mut self, mut pos: usize) {
        let end = self.entries.len();
        let start = pos;
        let mut child = 2 * pos + 1;
        while child < end {
            let right = child + 1;
            // heapq's `not heap[childpos] < heap[rightpos]`: with a NaN this is
            // true, which `>=` would not be, so the negation is deliberate.
            #[allow(clippy::neg_cmp_op_on_partial_ord)]
            let take_right = right < end && !(self.entries[child].0 < self.entries[right].0);
            if take_right {
                child = right;
            }
            self.entries.swap(pos, child);
            pos = child;
            child = 2 * pos + 1;
        }
        self.sift_down(start, pos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(h: &mut TimerHeap<u32>) -> Vec<u32> {
        std::iter::from_fn(|| h.pop().map(|(_, t)| t)).collect()
    }

    #[test]
    fn pops_in_deadline_order() {
        let mut h = TimerHeap::default();
        for (i, w) in [5.0, 1.0, 3.0, 2.0, 4.0].iter().enumerate() {
            h.push(*w, i as u32);
        }
        assert_eq!(drain(&mut h), vec![1, 3, 2, 4, 0]);
    }

    /// Equal deadlines come out in the order CPython's heapq gives. The
    /// expected sequence was produced with
    /// `heapq` on `[(w, i)]` compared by `w` only (a key-only wrapper class).
    #[test]
    fn ties_follow_heapq() {
        let mut h = TimerHeap::default();
        for i in 0..6 {
            h.push(1.0, i);
        }
        // Python: h=[]; [heappush(h, K(1.0, i)) for i in range(6)];
        // [heappop(h).i for _ in range(6)] == [0, 2, 5, 4, 1, 3]
        assert_eq!(drain(&mut h), vec![0, 2, 5, 4, 1, 3]);
    }

    #[test]
    fn retain_and_heapify_drops_and_keeps_order() {
        let mut h = TimerHeap::default();
        for i in 0..10u32 {
            h.push(f64::from(10 - i), i);
        }
        let dropped = h.retain_and_heapify(|i| i % 2 == 0);
        assert_eq!(dropped.len(), 5);
        assert_eq!(drain(&mut h), vec![8, 6, 4, 2, 0]);
    }

    #[test]
    fn nan_deadline_compares_like_python() {
        let mut h = TimerHeap::default();
        h.push(2.0, 0);
        h.push(f64::NAN, 1);
        h.push(1.0, 2);
        // Python: [heappop(h).i ...] for pushes (2.0,0),(nan,1),(1.0,2) == [2, 1, 0]
        assert_eq!(drain(&mut h), vec![2, 1, 0]);
    }
}
