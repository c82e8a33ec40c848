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
//! - `by_fd` is indexed by fd (fds are small and dense: a slot is 8 bytes;
//!   a SipHash map cost some 150 instructions per lookup, about 2,300 per
//!   `sock_pingpong` round trip); `NO_TOKEN` marks a free slot. An fd
//!   outside `0..MAX_SLOT` (one the epoll registration will refuse, or a
//!   huge `dup2` target) lives in `others`. `count` counts both.

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
    by_fd: Vec<Token>,
    others: Vec<(RawFd, Token)>,
    count: usize,
}

/// fds below this are indexed; others are looked up in a list.
const MAX_SLOT: usize = 1 << 22;

/// A free `by_fd` slot (the registry never makes this token).
const NO_TOKEN: Token = Token::MAX;

fn slot(fd: RawFd) -> Option<usize> {
    usize::try_from(fd).ok().filter(|&i| i < MAX_SLOT)
}

impl Registrations {
    /// The token of `fd`'s registration.
    pub(crate) fn token(&self, fd: RawFd) -> Option<Token> {
        let Some(i) = slot(fd) else {
            return self.others.iter().find(|(f, _)| *f == fd).map(|&(_, t)| t);
        };
        match self.by_fd.get(i) {
            Some(&t) if t != NO_TOKEN => Some(t),
            _ => None,
        }
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
        debug_assert!(self.token(fd).is_none());
        let token = self.regs.insert(Entry { fd, reg });
        debug_assert_ne!(token, NO_TOKEN);
        match slot(fd) {
            Some(i) => {
                if i >= self.by_fd.len() {
                    self.by_fd.resize((i + 1).next_power_of_two().max(64), NO_TOKEN);
                }
                self.by_fd[i] = token;
            }
            None => self.others.push((fd, token)),
        }
        self.count += 1;
        token
    }

    /// Remove `fd`'s registration; its token is dead afterwards.
    pub(crate) fn remove(&mut self, fd: RawFd) -> Option<Reg> {
        let token = self.token(fd)?;
        match slot(fd) {
            Some(i) => self.by_fd[i] = NO_TOKEN,
            None => self.others.retain(|(f, _)| *f != fd),
        }
        self.count -= 1;
        self.regs.remove(token).map(|e| e.reg)
    }

    /// The registration, if there is exactly one.
    pub(crate) fn only(&self) -> Option<&Entry> {
        if self.count != 1 {
            return None;
        }
        self.regs.iter().next().map(|(_, e)| e)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Every `(fd, registration)`.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (RawFd, &Reg)> {
        self.regs.iter().map(|(_, e)| (e.fd, &e.reg))
    }

    /// Remove everything (loop close); the memory is released.
    pub(crate) fn drain(&mut self) -> Vec<Entry> {
        self.by_fd = Vec::new();
        self.others = Vec::new();
        self.count = 0;
        self.regs.drain()
    }
}
