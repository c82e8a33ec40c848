//! The system calls std does not wrap: an epoll instance and RLIMIT_NOFILE.
//!
//! All of this crate's `unsafe` lives here.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const IN: u32 = libc::EPOLLIN as u32;
const OUT: u32 = libc::EPOLLOUT as u32;
const ET: u32 = libc::EPOLLET as u32;
const RDHUP: u32 = libc::EPOLLRDHUP as u32;

/// A listening socket: level-triggered readability.
pub const LISTEN: u32 = IN;
/// A connection with nothing left to write: edge-triggered readability.
/// Writability is asked for only while output waits (no wake-up for every
/// ACK that frees send buffer space).
pub const READ: u32 = IN | RDHUP | ET;
/// A connection whose last write stopped at EAGAIN.
pub const READ_WRITE: u32 = READ | OUT;
/// A UDP socket: level-triggered readability (one `recv` per event; the
/// socket is reported again while datagrams are queued).
pub const DGRAM: u32 = IN;

/// An epoll instance and the buffer its events land in.
pub struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    pub fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointers; the result is checked below.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor the kernel just created; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self {
            fd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 1024],
        })
    }

    /// Registers `fd` with `interest`; its events carry `token`.
    pub fn add(&self, fd: RawFd, token: u64, interest: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, interest)
    }

    /// Replaces the interest of a registered `fd`.
    pub fn modify(&self, fd: RawFd, token: u64, interest: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, interest)
    }

    fn ctl(&self, op: i32, fd: RawFd, token: u64, interest: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: interest,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event that outlives the call.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &raw mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` (-1: forever) and replaces `out` with the
    /// (token, events) pairs that are ready. An interrupted wait yields none.
    pub fn wait(&mut self, out: &mut Vec<(u64, u32)>, timeout_ms: i32) -> io::Result<()> {
        out.clear();
        let cap = i32::try_from(self.events.len()).unwrap_or(i32::MAX);
        // SAFETY: the kernel writes at most `cap` events into `self.events`, which holds that many.
        let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), self.events.as_mut_ptr(), cap, timeout_ms) };
        if n < 0 {
            let err = io::Error::last_os_error();
            return if err.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(err)
            };
        }
        let n = usize::try_from(n).unwrap_or(0);
        out.extend(self.events[..n].iter().map(|ev| {
            let ev = *ev; // the struct is packed on x86-64: copy it before reading fields
            (ev.u64, ev.events)
        }));
        Ok(())
    }
}

/// Raises the soft limit on open files to the hard limit (10k connections
/// need 10k descriptors). Failure is not fatal: the limit stays as it was.
pub fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for the kernel to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } == 0 && lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit that outlives the call.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) };
    }
}
