//! The fds the loop watches: asyncio's selector key map, addressed both by
//! fd (for `add_reader`/`remove_reader`) and by reactor token (for events).
//!
//! Mirrors the `selectors.SelectorKey` map of `BaseSelectorEventLoop`, one
//! entry per fd. A user watcher (`add_reader`/`add_writer`) holds Python
//! handles; native I/O objects (transports, listening sockets) register
//! their own kind of entry and are dispatched without any Python object.
//!
//! # Invariants
//! - `by_fd` and `regs` always agree: every fd maps to the live token of the
//!   entry that holds that fd, and every entry is reachable from its fd.
//! - A token in an epoll event that no longer resolves (the entry was
//!   removed, maybe its fd reused) is ignored by the dispatcher.

use std::collections::HashMap;
use std::os::fd::RawFd;

use ferroloop_core::registry::{Registry, Token};

use super::FdReg;

/// What is registered for one fd.
#[derive(Debug)]
pub(crate) enum Reg {
    /// A user watcher from `add_reader`/`add_writer` (boxed: the common
    /// entry, a transport's, stays two words).
    Watch(Box<FdReg>),
    /// A native stream transport (while it wants events).
    Stream(crate::transports::stream::StreamRef),
    /// A listening socket served natively (`_start_serving`).
    Listener(crate::py::held::Held<crate::server::Listener>),
}

/// One registration and its fd.
#[derive(Debug)]
pub(crate) struct Entry {
    pub fd: RawFd,
    pub reg: Reg,
}

/// The registrations, by fd and by token.
#[derive(Debug, Default)]
pub(crate) struct Registrations {
    regs: Registry<Entry>,
    by_fd: HashMap<RawFd, Token>,
}

impl Registrations {
    /// The token of `fd`'s registration.
    pub(crate) fn token(&self, fd: RawFd) -> Option<Token> {
        self.by_fd.get(&fd).copied()
    }

    pub(crate) fn get(&self, fd: RawFd) -> Option<&Reg> {
        self.token(fd).and_then(|t| self.regs.get(t)).map(|e| &e.reg)
    }

    pub(crate) fn get_mut(&mut self, fd: RawFd) -> Option<&mut Reg> {
        let t = self.token(fd)?;
        self.regs.get_mut(t).map(|e| &mut e.reg)
    }

    /// The entry an event's token points at, if it is still live.
    pub(crate) fn by_token(&self, token: Token) -> Option<&Entry> {
        self.regs.get(token)
    }

    /// Register `reg` for `fd` (which must not be registered yet).
    pub(crate) fn insert(&mut self, fd: RawFd, reg: Reg) -> Token {
        debug_assert!(!self.by_fd.contains_key(&fd));
        let token = self.regs.insert(Entry { fd, reg });
        self.by_fd.insert(fd, token);
        token
    }

    /// Remove `fd`'s registration; its token is dead afterwards.
    pub(crate) fn remove(&mut self, fd: RawFd) -> Option<Reg> {
        let token = self.by_fd.remove(&fd)?;
        self.regs.remove(token).map(|e| e.reg)
    }

    /// The registration, if there is exactly one.
    pub(crate) fn only(&self) -> Option<&Entry> {
        if self.by_fd.len() != 1 {
            return None;
        }
        self.regs.iter().next().map(|(_, e)| e)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_fd.is_empty()
    }

    /// Every `(fd, registration)`.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (RawFd, &Reg)> {
        self.regs.iter().map(|(_, e)| (e.fd, &e.reg))
    }

    /// Remove everything (loop close); the memory is released.
    pub(crate) fn drain(&mut self) -> Vec<Entry> {
        self.by_fd = HashMap::new();
        self.regs.drain()
    }
}
