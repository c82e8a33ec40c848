//! A hash map keyed by file descriptor, hashed by one multiplication.
//!
//! The standard map's SipHash costs some 150 instructions per lookup; fds
//! are small integers chosen by the kernel, not by an adversary, so a
//! Fibonacci multiplication (which spreads them into the high bits the
//! table's control bytes use) is enough.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::os::fd::RawFd;

/// The hasher: the last integer written, times 2^64 / φ.
#[derive(Debug, Default, Clone, Copy)]
pub struct FdHasher(u64);

impl Hasher for FdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_i32(&mut self, n: i32) {
        self.0 = u64::from(n as u32).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A `HashMap` from fd to `V` with [`FdHasher`].
pub type FdMap<V> = HashMap<RawFd, V, BuildHasherDefault<FdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fds_map_and_unmap() {
        let mut m: FdMap<usize> = FdMap::default();
        for fd in 0..10_000 {
            m.insert(fd, fd as usize * 3);
        }
        for fd in (0..10_000).step_by(2) {
            assert_eq!(m.remove(&fd), Some(fd as usize * 3));
        }
        assert_eq!(m.len(), 5_000);
        assert_eq!(m.get(&9_999), Some(&29_997));
        assert_eq!(m.get(&4), None);
        assert_eq!(m.get(&-1), None);
    }

    #[test]
    fn small_fds_spread_over_the_high_bits() {
        let tops: std::collections::HashSet<u64> = (0..128)
            .map(|fd| {
                let mut h = FdHasher::default();
                h.write_i32(fd);
                h.finish() >> 57
            })
            .collect();
        assert!(tops.len() > 64, "{}", tops.len());
    }
}
