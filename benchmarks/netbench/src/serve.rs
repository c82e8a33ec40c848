//! What every reference server (`server.rs`, `tls.rs`, `ossl.rs`) shares: the
//! listening socket in its epoll instance, the accept loop's error handling,
//! and the table of connections indexed by their epoll token.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use crate::net::{Addr, Listener, Stream};
use crate::sys::{self, Epoll};

/// The listening socket's epoll token (connections use their slot index).
pub const LISTENER: u64 = u64::MAX;

/// Binds `addr`, registers the listener with a new epoll instance and prints
/// `READY <addr>` (with port 0, the port the kernel picked).
pub fn listen(addr: &Addr) -> Result<(Listener, Epoll), String> {
    let listener = Listener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    let epoll = Epoll::new().map_err(|e| format!("epoll: {e}"))?;
    epoll
        .add(listener.as_raw_fd(), LISTENER, sys::LISTEN)
        .map_err(|e| format!("epoll_ctl: {e}"))?;
    println!("READY {}", listener.describe());
    Ok((listener, epoll))
}

/// The next pending connection; None when there is none (or accept failed:
/// EMFILE and friends leave the rest in the backlog for the next event).
pub fn accept_next(listener: &Listener) -> Option<Stream> {
    loop {
        match listener.accept() {
            Ok(s) => return Some(s),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("accept: {e}");
                return None;
            }
        }
    }
}

/// Connections by epoll token; freed slots are reused.
pub struct Slots<T> {
    items: Vec<Option<T>>,
    free: Vec<usize>,
}

impl<T> Slots<T> {
    pub fn new() -> Self {
        Slots {
            items: Vec::new(),
            free: Vec::new(),
        }
    }

    /// Registers `fd` for reading (edge-triggered) under a free slot's token
    /// and keeps `item` there; on failure says so and drops `item`.
    pub fn add(&mut self, epoll: &Epoll, fd: RawFd, item: T) {
        let id = self.free.pop().unwrap_or_else(|| {
            self.items.push(None);
            self.items.len() - 1
        });
        if let Err(e) = epoll.add(fd, id as u64, sys::READ) {
            eprintln!("epoll_ctl: {e}");
            self.free.push(id);
            return;
        }
        self.items[id] = Some(item);
    }

    pub fn get_mut(&mut self, token: u64) -> Option<&mut T> {
        let id = usize::try_from(token).ok()?;
        self.items.get_mut(id).and_then(Option::as_mut)
    }

    /// Drops the connection (closing its socket also removes it from epoll).
    pub fn remove(&mut self, token: u64) {
        if let Some(slot) = usize::try_from(token).ok().and_then(|id| self.items.get_mut(id)) {
            if slot.take().is_some() {
                self.free.push(token as usize);
            }
        }
    }
}
