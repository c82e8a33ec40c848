//! A slab of reactor registrations addressed by generation-checked tokens.
//!
//! The loop keeps one entry per watched fd (a user `add_reader` watcher, a
//! transport, a listening socket). The token given to epoll is the slot index
//! in the low 32 bits and the slot's generation in the high 32 bits; the
//! generation changes every time a slot is freed, so a token that outlived
//! its registration (an event of a closed-and-reused fd) resolves to nothing.
//!
//! # Invariants
//! - A live token always resolves to the value inserted with it.
//! - A removed token never resolves again, even after its slot is reused.
//! - Free slots are reused last-freed-first, so the slab stays compact.

/// A registration token: `generation << 32 | index`.
pub type Token = u64;

#[derive(Debug)]
enum Slot<T> {
    Used { generation: u32, value: T },
    Free { generation: u32, next_free: u32 },
}

const NONE: u32 = u32::MAX;

/// Values addressed by [`Token`]s.
#[derive(Debug)]
pub struct Registry<T> {
    slots: Vec<Slot<T>>,
    free_head: u32,
    len: usize,
    /// Generation given to brand-new slots: above every generation ever
    /// used, so that tokens from before a [`Registry::drain`] stay dead.
    fresh_generation: u32,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free_head: NONE,
            len: 0,
            fresh_generation: 0,
        }
    }
}

fn split(token: Token) -> (usize, u32) {
    ((token & 0xffff_ffff) as usize, (token >> 32) as u32)
}

fn join(index: usize, generation: u32) -> Token {
    (u64::from(generation) << 32) | index as u64
}

impl<T> Registry<T> {
    /// Store `value`; returns its token.
    pub fn insert(&mut self, value: T) -> Token {
        self.len += 1;
        if self.free_head != NONE {
            let index = self.free_head as usize;
            let Slot::Free { generation, next_free } = self.slots[index] else {
                unreachable!("the free list only links free slots")
            };
            self.free_head = next_free;
            self.slots[index] = Slot::Used { generation, value };
            return join(index, generation);
        }
        let index = self.slots.len();
        let generation = self.fresh_generation;
        self.slots.push(Slot::Used { generation, value });
        join(index, generation)
    }

    /// The value of a live token.
    #[must_use]
    pub fn get(&self, token: Token) -> Option<&T> {
        let (index, gen) = split(token);
        match self.slots.get(index) {
            Some(Slot::Used { generation, value }) if *generation == gen => Some(value),
            _ => None,
        }
    }

    /// The value of a live token, mutably.
    pub fn get_mut(&mut self, token: Token) -> Option<&mut T> {
        let (index, gen) = split(token);
        match self.slots.get_mut(index) {
            Some(Slot::Used { generation, value }) if *generation == gen => Some(value),
            _ => None,
        }
    }

    /// Remove a live token's value; the token is dead afterwards.
    pub fn remove(&mut self, token: Token) -> Option<T> {
        let (index, gen) = split(token);
        match self.slots.get(index) {
            Some(Slot::Used { generation, .. }) if *generation == gen => {}
            _ => return None,
        }
        let next = gen.wrapping_add(1);
        self.fresh_generation = self.fresh_generation.max(next);
        let old = std::mem::replace(
            &mut self.slots[index],
            Slot::Free {
                generation: next,
                next_free: self.free_head,
            },
        );
        self.free_head = index as u32;
        self.len -= 1;
        match old {
            Slot::Used { value, .. } => Some(value),
            Slot::Free { .. } => None,
        }
    }

    /// Number of live values.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is registered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every live `(token, value)`.
    pub fn iter(&self) -> impl Iterator<Item = (Token, &T)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| match s {
            Slot::Used { generation, value } => Some((join(i, *generation), value)),
            Slot::Free { .. } => None,
        })
    }

    /// Remove and return every value (the slab keeps no memory).
    pub fn drain(&mut self) -> Vec<T> {
        let slots = std::mem::take(&mut self.slots);
        for s in &slots {
            let (Slot::Used { generation, .. } | Slot::Free { generation, .. }) = s;
            self.fresh_generation = self.fresh_generation.max(generation.wrapping_add(1));
        }
        self.free_head = NONE;
        self.len = 0;
        slots
            .into_iter()
            .filter_map(|s| match s {
                Slot::Used { value, .. } => Some(value),
                Slot::Free { .. } => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_tokens_never_resolve_again() {
        let mut r = Registry::default();
        let a = r.insert("a");
        assert_eq!(r.get(a), Some(&"a"));
        assert_eq!(r.remove(a), Some("a"));
        assert_eq!(r.get(a), None);
        assert_eq!(r.remove(a), None);
        let b = r.insert("b");
        // Same slot, new generation.
        assert_eq!(b & 0xffff_ffff, a & 0xffff_ffff);
        assert_ne!(a, b);
        assert_eq!(r.get(a), None);
        assert_eq!(r.get(b), Some(&"b"));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn slots_are_reused_and_iteration_sees_live_values() {
        let mut r = Registry::default();
        let t: Vec<Token> = (0..5).map(|i| r.insert(i)).collect();
        r.remove(t[1]);
        r.remove(t[3]);
        let mut live: Vec<i32> = r.iter().map(|(_, v)| *v).collect();
        live.sort_unstable();
        assert_eq!(live, vec![0, 2, 4]);
        let n = r.insert(9);
        assert_eq!(n & 0xffff_ffff, t[3] & 0xffff_ffff);
        *r.get_mut(n).unwrap() += 1;
        assert_eq!(r.get(n), Some(&10));
        assert_eq!(r.drain().len(), 4);
        assert!(r.is_empty());
        assert_eq!(r.get(n), None);
        // Tokens from before the drain stay dead after new inserts.
        let fresh: Vec<Token> = (0..5).map(|i| r.insert(i)).collect();
        for old in t.iter().chain([&n]) {
            assert_eq!(r.get(*old), None);
            assert!(!fresh.contains(old));
        }
    }
}
