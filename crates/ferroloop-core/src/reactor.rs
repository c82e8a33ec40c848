//! The reactor: epoll with level-triggered registrations, plus an eventfd waker.
//!
//! Mirrors `selectors.EpollSelector` as asyncio's `BaseSelectorEventLoop` uses
//! it: interest is `EVENT_READ` (1) and/or `EVENT_WRITE` (2) per fd, events are
//! level-triggered (a reader that leaves data unread is reported again on the
//! next poll), and an error or hang-up is reported as both readable and
//! writable (`EpollSelector.select` maps `event & ~EPOLLIN` to write-ready and
//! `event & ~EPOLLOUT` to read-ready).
//!
//! # Timeouts
//! A timeout in float seconds is rounded *up* to whole milliseconds, as
//! `EpollSelector.select` does (`math.ceil(timeout * 1e3) * 1e-3`), so a
//! sub-millisecond wait never turns into a busy poll.
//!
//! # Invariants
//! - The `Poller` owns its epoll fd and closes it exactly once (on drop or
//!   [`Poller::close`]).
//! - Registrations are keyed by fd; `epoll_event.u64` holds the fd.
//! - `EINTR` is returned to the caller, which must check Python's signal
//!   handlers before polling again (that is how Ctrl-C reaches the program).

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::sys::syscall;

/// Interest bit for readability (`selectors.EVENT_READ`).
pub const READ: u32 = 1;
/// Interest bit for writability (`selectors.EVENT_WRITE`).
pub const WRITE: u32 = 2;

/// Longest poll asyncio ever makes (`base_events.MAXIMUM_SELECT_TIMEOUT`, 24 h).
pub const MAXIMUM_SELECT_TIMEOUT: f64 = 24.0 * 3600.0;

fn epoll_bits(interest: u32) -> u32 {
    let mut bits = 0;
    if interest & READ != 0 {
        bits |= libc::EPOLLIN as u32;
    }
    if interest & WRITE != 0 {
        bits |= libc::EPOLLOUT as u32;
    }
    bits
}

/// Translate raw epoll bits into `READ | WRITE` readiness, as `EpollSelector` does.
#[must_use]
pub fn readiness(bits: u32) -> u32 {
    let mut r = 0;
    if bits & !(libc::EPOLLIN as u32) != 0 {
        r |= WRITE;
    }
    if bits & !(libc::EPOLLOUT as u32) != 0 {
        r |= READ;
    }
    r
}

/// Convert a float-seconds timeout to epoll milliseconds (`None` = block).
#[must_use]
pub fn timeout_ms(timeout: Option<f64>) -> i32 {
    match timeout {
        None => -1,
        Some(t) if t <= 0.0 || t.is_nan() => 0,
        Some(t) => {
            let ms = (t.min(MAXIMUM_SELECT_TIMEOUT) * 1e3).ceil();
            ms as i32
        }
    }
}

/// A ready event: the fd and its `READ | WRITE` readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The file descriptor that is ready.
    pub fd: RawFd,
    /// `READ` and/or `WRITE`.
    pub ready: u32,
}

/// A reusable buffer for `epoll_wait` results.
#[derive(Debug)]
pub struct Events {
    raw: Vec<libc::epoll_event>,
    len: usize,
}

impl Events {
    /// A buffer for up to `capacity` events per poll.
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            raw: vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)],
            len: 0,
        }
    }

    /// The events of the last poll.
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.raw[..self.len].iter().map(|e| Event {
            fd: e.u64 as RawFd,
            ready: readiness(e.events),
        })
    }

    /// Number of events of the last poll.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the last poll returned nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// An epoll instance with level-triggered registrations.
#[derive(Debug)]
pub struct Poller {
    epfd: AtomicI32,
}

impl Poller {
    /// Create a new epoll instance (close-on-exec).
    pub fn new() -> io::Result<Self> {
        let epfd = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
        Ok(Self {
            epfd: AtomicI32::new(epfd),
        })
    }

    /// The epoll fd itself.
    #[must_use]
    pub fn as_raw_fd(&self) -> RawFd {
        self.epfd.load(Ordering::Relaxed)
    }

    fn ctl(&self, op: i32, fd: RawFd, interest: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: epoll_bits(interest),
            u64: fd as u64,
        };
        syscall!(epoll_ctl(self.as_raw_fd(), op, fd, &raw mut ev))?;
        Ok(())
    }

    /// Start watching `fd` for `interest` (level-triggered).
    pub fn register(&self, fd: RawFd, interest: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, interest)
    }

    /// Change the interest of a registered fd.
    pub fn modify(&self, fd: RawFd, interest: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, interest)
    }

    /// Stop watching `fd`.
    pub fn deregister(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0)
    }

    /// Wait for events; `timeout` in seconds, `None` blocks. Returns the
    /// number of events. `EINTR` is returned as an error (see module docs).
    pub fn poll(&self, events: &mut Events, timeout: Option<f64>) -> io::Result<usize> {
        let cap = i32::try_from(events.raw.len()).unwrap_or(i32::MAX);
        let n = syscall!(epoll_wait(
            self.as_raw_fd(),
            events.raw.as_mut_ptr(),
            cap,
            timeout_ms(timeout)
        ));
        match n {
            Ok(n) => {
                events.len = n as usize;
                Ok(events.len)
            }
            Err(e) => {
                events.len = 0;
                Err(e)
            }
        }
    }

    /// Close the epoll fd now (idempotent). The caller guarantees no poll is
    /// in progress on another thread.
    pub fn close(&self) {
        let fd = self.epfd.swap(-1, Ordering::Relaxed);
        if fd >= 0 {
            // SAFETY: `fd` was owned by this Poller; the swap makes this the only close.
            unsafe { libc::close(fd) };
        }
    }

    /// True once [`Poller::close`] ran.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.as_raw_fd() < 0
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.close();
    }
}

/// An eventfd used to wake a blocked poll from another thread.
#[derive(Debug)]
pub struct Waker {
    fd: AtomicI32,
}

impl Waker {
    /// Create a non-blocking, close-on-exec eventfd.
    pub fn new() -> io::Result<Self> {
        let fd = syscall!(eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))?;
        Ok(Self { fd: AtomicI32::new(fd) })
    }

    /// The eventfd.
    #[must_use]
    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.load(Ordering::Relaxed)
    }

    /// Make the eventfd readable. A full counter (EAGAIN) is already readable,
    /// so that error is ignored, as is a closed waker.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd.
        unsafe { libc::write(self.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    /// Reset the counter so the eventfd is no longer readable.
    pub fn drain(&self) {
        let mut buf: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64 from our own eventfd.
        unsafe { libc::read(self.as_raw_fd(), (&raw mut buf).cast(), 8) };
    }

    /// Close the eventfd now (idempotent).
    pub fn close(&self) {
        let fd = self.fd.swap(-1, Ordering::Relaxed);
        if fd >= 0 {
            // SAFETY: `fd` was owned by this Waker; the swap makes this the only close.
            unsafe { libc::close(fd) };
        }
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe() -> (RawFd, RawFd) {
        let mut fds = [0; 2];
        // SAFETY: fds is a valid 2-element array.
        assert_eq!(
            unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) },
            0
        );
        (fds[0], fds[1])
    }

    #[test]
    fn level_triggered_read_is_reported_again() {
        let p = Poller::new().unwrap();
        let (r, w) = pipe();
        p.register(r, READ).unwrap();
        // SAFETY: writes 2 bytes from a static buffer to our pipe.
        unsafe { libc::write(w, b"ab".as_ptr().cast(), 2) };
        let mut ev = Events::with_capacity(8);
        assert_eq!(p.poll(&mut ev, Some(0.0)).unwrap(), 1);
        assert_eq!(ev.iter().next(), Some(Event { fd: r, ready: READ }));
        let mut b = [0u8; 1];
        // SAFETY: reads 1 byte into a live buffer.
        unsafe { libc::read(r, b.as_mut_ptr().cast(), 1) };
        // One byte is still unread: level-triggered means it is reported again.
        assert_eq!(p.poll(&mut ev, Some(0.0)).unwrap(), 1);
        p.deregister(r).unwrap();
        assert_eq!(p.poll(&mut ev, Some(0.0)).unwrap(), 0);
        // SAFETY: closing our own pipe fds.
        unsafe {
            libc::close(r);
            libc::close(w);
        }
    }

    #[test]
    fn register_closed_fd_is_ebadf_and_double_register_is_eexist() {
        let p = Poller::new().unwrap();
        let err = p.register(1_000_000, READ).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
        let (r, w) = pipe();
        p.register(r, READ).unwrap();
        assert_eq!(p.register(r, READ).unwrap_err().raw_os_error(), Some(libc::EEXIST));
        p.modify(r, READ | WRITE).unwrap();
        // SAFETY: closing our own pipe fds.
        unsafe {
            libc::close(r);
            libc::close(w);
        }
    }

    #[test]
    fn hangup_is_read_and_write_ready() {
        let p = Poller::new().unwrap();
        let (r, w) = pipe();
        p.register(r, READ).unwrap();
        // SAFETY: closing our own write end produces EPOLLHUP on the read end.
        unsafe { libc::close(w) };
        let mut ev = Events::with_capacity(8);
        p.poll(&mut ev, Some(0.0)).unwrap();
        assert_eq!(ev.iter().next().unwrap().ready, READ | WRITE);
        // SAFETY: closing our own fd.
        unsafe { libc::close(r) };
    }

    #[test]
    fn waker_wakes_and_drains() {
        let p = Poller::new().unwrap();
        let wk = Waker::new().unwrap();
        p.register(wk.as_raw_fd(), READ).unwrap();
        let mut ev = Events::with_capacity(4);
        assert_eq!(p.poll(&mut ev, Some(0.0)).unwrap(), 0);
        std::thread::scope(|s| {
            s.spawn(|| wk.wake());
        });
        assert_eq!(p.poll(&mut ev, Some(5.0)).unwrap(), 1);
        wk.drain();
        assert_eq!(p.poll(&mut ev, Some(0.0)).unwrap(), 0);
    }

    #[test]
    fn timeouts_round_up_to_milliseconds() {
        assert_eq!(timeout_ms(None), -1);
        assert_eq!(timeout_ms(Some(0.0)), 0);
        assert_eq!(timeout_ms(Some(-1.0)), 0);
        assert_eq!(timeout_ms(Some(0.000_1)), 1);
        assert_eq!(timeout_ms(Some(1.5)), 1500);
        assert_eq!(timeout_ms(Some(1e12)), 86_400_000);
    }
}
