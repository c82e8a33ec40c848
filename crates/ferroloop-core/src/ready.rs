//! The ready queue: asyncio's `BaseEventLoop._ready` deque with the batch rule
//! of `_run_once`.
//!
//! # Invariants
//! - A batch ([`ReadyQueue::begin_batch`]) covers exactly the items that were
//!   queued when it began (`ntodo = len(self._ready)`); items pushed while the
//!   batch runs wait for the next iteration, after another poll.
//! - FIFO order: `call_soon` callbacks run in the order they were scheduled.

use std::collections::VecDeque;

/// Capacity (items) above which an emptied queue gives memory back.
const TRIM_ABOVE: usize = 4096;

/// FIFO of ready items with batch accounting.
#[derive(Debug)]
pub struct ReadyQueue<T> {
    items: VecDeque<T>,
}

impl<T> Default for ReadyQueue<T> {
    fn default() -> Self {
        Self {
            items: VecDeque::with_capacity(64),
        }
    }
}

impl<T> ReadyQueue<T> {
    /// Append an item (`_ready.append`).
    pub fn push(&mut self, item: T) {
        self.items.push_back(item);
    }

    /// Number of queued items.
    #[must_use]
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing is queued.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Start a batch: the number of items this iteration must run.
    #[must_use]
    pub fn begin_batch(&self) -> usize {
        self.items.len()
    }

    /// Take the next item (`_ready.popleft`).
    pub fn pop(&mut self) -> Option<T> {
        self.items.pop_front()
    }

    /// Drop every queued item (`_ready.clear()` in `close`); the queue's
    /// memory is released too.
    pub fn clear(&mut self) -> Vec<T> {
        std::mem::take(&mut self.items).into_iter().collect()
    }

    /// Give back the memory of a past burst: once the queue is down to an
    /// eighth of a large capacity, shrink it to twice what it holds.
    pub fn trim(&mut self) {
        let cap = self.items.capacity();
        if cap > TRIM_ABOVE && self.items.len() * 8 < cap {
            self.items.shrink_to((self.items.len() * 2).max(64));
        }
    }

    /// Iterate over the queued items, front first.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_covers_only_items_queued_before_it_began() {
        let mut q = ReadyQueue::default();
        q.push(1);
        q.push(2);
        let ntodo = q.begin_batch();
        let mut ran = vec![];
        for _ in 0..ntodo {
            let item = q.pop().unwrap();
            ran.push(item);
            q.push(item * 10); // scheduled while the batch runs
        }
        assert_eq!(ran, vec![1, 2]);
        assert_eq!(q.iter().copied().collect::<Vec<_>>(), vec![10, 20]);
    }

    #[test]
    fn trim_releases_a_past_burst() {
        let mut q = ReadyQueue::default();
        for i in 0..100_000 {
            q.push(i);
        }
        let big = q.items.capacity();
        while q.len() > 10 {
            q.pop();
        }
        q.trim();
        assert!(q.items.capacity() < big / 100);
        assert_eq!(q.len(), 10);
        assert!(q.clear().len() == 10 && q.items.capacity() == 0);
    }

    #[test]
    fn clear_returns_items_in_order() {
        let mut q = ReadyQueue::default();
        q.extend_for_test([3, 1, 2]);
        assert_eq!(q.clear(), vec![3, 1, 2]);
        assert!(q.is_empty());
    }

    impl<T> ReadyQueue<T> {
        fn extend_for_test(&mut self, it: impl IntoIterator<Item = T>) {
            for x in it {
                self.push(x);
            }
        }
    }
}
