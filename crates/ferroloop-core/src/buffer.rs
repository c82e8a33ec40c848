//! The write queue of a stream transport: references to the caller's
//! buffers, sent with one vectored call.
//!
//! Mirrors the `_buffer` deque of asyncio's `_SelectorSocketTransport`
//! (3.12+): each `write()` that cannot be sent at once appends the caller's
//! object itself (no copy of immutable data); `_write_sendmsg` hands up to
//! `SC_IOV_MAX` chunks to one `sendmsg`, then drops what was sent and keeps a
//! view of the rest of a partly sent chunk.
//!
//! Each chunk is a `(keep, ptr, len)` triple: `keep` is whatever keeps the
//! memory alive and unchanged in size (a reference to an immutable `bytes`,
//! a held buffer export, or an owned copy), `ptr..ptr+len` the bytes still to
//! send.
//!
//! # Invariants
//! - `total` is the sum of the chunks' `len` (the write buffer size).
//! - The memory of a chunk stays valid while its `keep` is alive (the
//!   contract of [`WriteQueue::push`]).
//! - Released `keep`s are handed back to the caller, who drops them when it
//!   is safe to run arbitrary code (they may be Python objects).

use std::collections::VecDeque;
use std::io::IoSlice;

/// Most buffers handed to one `sendmsg` (Linux `IOV_MAX`, asyncio's `SC_IOV_MAX`).
pub const IOV_MAX: usize = 1024;

#[derive(Debug)]
struct Chunk<K> {
    keep: K,
    ptr: *const u8,
    len: usize,
}

/// FIFO of byte ranges waiting to be written. An idle queue holds no
/// allocation and takes two words (most connections never queue anything).
#[derive(Debug)]
pub struct WriteQueue<K> {
    // Boxed on purpose: one word while empty instead of the deque's four.
    #[allow(clippy::box_collection, reason = "an idle queue must be one word, not four")]
    chunks: Option<Box<VecDeque<Chunk<K>>>>,
    total: usize,
}

impl<K> Default for WriteQueue<K> {
    fn default() -> Self {
        Self { chunks: None, total: 0 }
    }
}

// SAFETY: the raw pointers only point into memory owned (or kept alive) by
// the chunk's `keep`, which moves with the queue.
unsafe impl<K: Send> Send for WriteQueue<K> {}

impl<K> WriteQueue<K> {
    /// Append `len` bytes at `ptr`, kept valid by `keep`.
    ///
    /// # Safety
    /// `ptr..ptr+len` must stay readable and unchanged in extent for as long
    /// as `keep` is alive.
    pub unsafe fn push(&mut self, keep: K, ptr: *const u8, len: usize) {
        if len == 0 {
            return;
        }
        self.total += len;
        self.chunks
            .get_or_insert_with(Default::default)
            .push_back(Chunk { keep, ptr, len });
    }

    /// Bytes waiting (`get_write_buffer_size`).
    #[must_use]
    pub fn len(&self) -> usize {
        self.total
    }

    /// True when nothing waits.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Number of chunks waiting.
    #[must_use]
    pub fn chunks(&self) -> usize {
        self.chunks.as_ref().map_or(0, |c| c.len())
    }

    /// The first chunks (at most [`IOV_MAX`]) for one vectored write.
    #[must_use]
    pub fn slices(&self) -> Vec<IoSlice<'_>> {
        self.chunks
            .iter()
            .flat_map(|c| c.iter())
            .take(IOV_MAX)
            // SAFETY: the push contract keeps `ptr..ptr+len` valid while the
            // chunk (and so `self`, borrowed here) is alive.
            .map(|c| IoSlice::new(unsafe { std::slice::from_raw_parts(c.ptr, c.len) }))
            .collect()
    }

    /// The first chunk's bytes, if any.
    #[must_use]
    pub fn front(&self) -> Option<&[u8]> {
        // SAFETY: as in `slices`.
        self.chunks
            .as_ref()
            .and_then(|c| c.front())
            .map(|c| unsafe { std::slice::from_raw_parts(c.ptr, c.len) })
    }

    /// `n` bytes were sent: drop the chunks sent whole (their `keep`s go to
    /// `released`) and advance into a partly sent one.
    pub fn consume(&mut self, mut n: usize, released: &mut Vec<K>) {
        n = n.min(self.total);
        self.total -= n;
        let Some(chunks) = self.chunks.as_mut() else { return };
        while n > 0 {
            let Some(front) = chunks.front_mut() else { break };
            if front.len <= n {
                n -= front.len;
                if let Some(c) = chunks.pop_front() {
                    released.push(c.keep);
                }
            } else {
                // SAFETY: n < len, so the new pointer stays inside the chunk.
                front.ptr = unsafe { front.ptr.add(n) };
                front.len -= n;
                n = 0;
            }
        }
    }

    /// Drop everything (asyncio's `_buffer.clear()`); returns the `keep`s.
    pub fn clear(&mut self) -> Vec<K> {
        self.total = 0;
        match self.chunks.take() {
            Some(chunks) => chunks.into_iter().map(|c| c.keep).collect(),
            None => Vec::new(),
        }
    }

    /// Call `f` on every `keep` (e.g. to show them to a garbage collector).
    pub fn for_each_keep<E>(&self, mut f: impl FnMut(&K) -> Result<(), E>) -> Result<(), E> {
        self.chunks.iter().flat_map(|c| c.iter()).try_for_each(|c| f(&c.keep))
    }

    /// Release the queue's memory once it is empty.
    pub fn shrink(&mut self) {
        if self.chunks.as_ref().is_some_and(|c| c.is_empty()) {
            self.chunks = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push_vec(q: &mut WriteQueue<Vec<u8>>, v: Vec<u8>) {
        let (ptr, len) = (v.as_ptr(), v.len());
        // SAFETY: a Vec's heap buffer does not move when the Vec moves.
        unsafe { q.push(v, ptr, len) };
    }

    #[test]
    fn partial_sends_advance_inside_a_chunk() {
        let mut q = WriteQueue::default();
        push_vec(&mut q, b"hello".to_vec());
        push_vec(&mut q, b"".to_vec());
        push_vec(&mut q, b" world".to_vec());
        assert_eq!(q.len(), 11);
        assert_eq!(q.chunks(), 2);
        let mut released = Vec::new();
        q.consume(7, &mut released);
        assert_eq!(released, vec![b"hello".to_vec()]);
        assert_eq!(q.front(), Some(&b"orld"[..]));
        assert_eq!(q.len(), 4);
        let s = q.slices();
        assert_eq!(s.len(), 1);
        assert_eq!(&*s[0], b"orld");
        q.consume(4, &mut released);
        assert!(q.is_empty());
        assert_eq!(released.len(), 2);
    }

    #[test]
    fn slices_are_capped_at_iov_max_and_clear_returns_everything() {
        let mut q = WriteQueue::default();
        for _ in 0..(IOV_MAX + 5) {
            push_vec(&mut q, vec![1]);
        }
        assert_eq!(q.slices().len(), IOV_MAX);
        assert_eq!(q.clear().len(), IOV_MAX + 5);
        assert!(q.is_empty());
        q.shrink();
    }
}
