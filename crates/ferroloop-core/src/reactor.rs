//! The reactor: epoll with per-registration level or edge triggering, tokens
//! instead of fds in the event data, plus an eventfd waker.
//!
//! Mirrors `selectors.EpollSelector` as asyncio's `BaseSelectorEventLoop` uses
//! it: interest is `EVENT_READ` (1) and/or `EVENT_WRITE` (2) per fd, and an
//! error or hang-up is reported as both readable and writable
//! (`EpollSelector.select` maps `event & ~EPOLLIN` to write-ready and
//! `event & ~EPOLLOUT` to read-ready).
//!
//! # Tokens
//! Each registration carries a caller-chosen 64-bit token (see
//! [`crate::registry`]: a slot index plus a generation), not the fd. When an
//! fd is closed and its number reused while an old registration lingers in
//! the epoll set (a `dup` of the old file keeps it alive), events of the old
//! registration still carry the old token, whose generation no longer
//! matches: the new owner never sees them.
//!
//! # Triggering
//! [`Trigger::Level`] (asyncio's `add_reader` semantics: unread data is
//! reported again at the next poll) or [`Trigger::Edge`] (`EPOLLET`: reported
//! once per change; the owner must remember readiness itself).
//!
//! # Timeouts
//! A positive timeout is passed to `epoll_pwait2` (Linux 5.11+), rounded up
//! to a multiple of [`TIMEOUT_QUANTUM`] (50 µs): a timer due in 30 µs wakes
//! the loop after 50 µs, not after a whole millisecond, while timers that are
//! due within microseconds of each other still fire in one iteration. Where
//! `epoll_pwait2` is missing (`ENOSYS`, remembered for the process), the
//! timeout is rounded *up* to whole milliseconds as `EpollSelector.select`
//! does (`math.ceil(timeout * 1e3)`). Either way a poll never returns before
//! its timeout, so a timer never fires early and a sub-millisecond wait
//! never becomes a busy loop.
//!
//! # Invariants
//! - The `Poller` owns its epoll fd and closes it exactly once (on drop or
//!   [`Poller::close`]).
//! - `EINTR` is returned to the caller, which must check Python's signal
//!   handlers before polling again (that is how Ctrl-C reaches the program).

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use crate::sys;

/// Cleared once `epoll_pwait2` answered `ENOSYS` (kernel older than 5.11).
static HAVE_EPOLL_PWAIT2: AtomicBool = AtomicBool::new(true);

/// Interest bit for readability (`selectors.EVENT_READ`).
pub const READ: u32 = 1;
/// Interest bit for writability (`selectors.EVENT_WRITE`).
pub const WRITE: u32 = 2;

/// Granularity of positive poll timeouts with `epoll_pwait2` (seconds).
pub const TIMEOUT_QUANTUM: f64 = 50e-6;

/// Longest poll asyncio ever makes (`base_events.MAXIMUM_SELECT_TIMEOUT`, 24 h).
pub const MAXIMUM_SELECT_TIMEOUT: f64 = 24.0 * 3600.0;

/// How a registration reports readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Reported at every poll while the condition holds (`selectors` semantics).
    Level,
    /// Reported once each time the condition changes (`EPOLLET`).
    Edge,
}

fn epoll_bits(interest: u32, trigger: Trigger) -> u32 {
    let mut bits = 0;
    if interest & READ != 0 {
        bits |= libc::EPOLLIN as u32;
    }
    if interest & WRITE != 0 {
        bits |= libc::EPOLLOUT as u32;
    }
    if trigger == Trigger::Edge {
        bits |= libc::EPOLLET as u32;
    }
    bits
}

/// Translate raw epoll bits into `READ | WRITE` readiness, as `EpollSelector` does.
#[must_use]
pub fn readiness(bits: u32) -> u32 {
    let bits = bits & !(libc::EPOLLET as u32);
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

/// A ready event: the registration's token and its `READ | WRITE` readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The token given at registration.
    pub token: u64,
    /// `READ` and/or `WRITE`.
    pub ready: u32,
}

/// A reusable buffer for `epoll_wait` results.
#[derive(Debug)]
pub struct Events {
    raw: Vec<sys::EpollEvent>,
    len: usize,
}

impl Events {
    /// A buffer for up to `capacity` events per poll.
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            raw: vec![sys::EMPTY_EVENT; capacity.max(1)],
            len: 0,
        }
    }

    /// The events of the last poll.
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.raw[..self.len].iter().map(|e| Event {
            token: e.u64,
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

/// An epoll instance.
#[derive(Debug)]
pub struct Poller {
    epfd: AtomicI32,
}

impl Poller {
    /// Create a new epoll instance (close-on-exec).
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            epfd: AtomicI32::new(sys::epoll_create()?),
        })
    }

    /// The epoll fd itself.
    #[must_use]
    pub fn as_raw_fd(&self) -> RawFd {
        self.epfd.load(Ordering::Relaxed)
    }

    /// Start watching `fd` for `interest`, reporting `token`.
    pub fn register(&self, fd: RawFd, interest: u32, token: u64, trigger: Trigger) -> io::Result<()> {
        sys::epoll_ctl(
            self.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            fd,
            epoll_bits(interest, trigger),
            token,
        )
    }

    /// Change the interest (and token or trigger) of a registered fd.
    pub fn modify(&self, fd: RawFd, interest: u32, token: u64, trigger: Trigger) -> io::Result<()> {
        sys::epoll_ctl(
            self.as_raw_fd(),
            libc::EPOLL_CTL_MOD,
            fd,
            epoll_bits(interest, trigger),
            token,
        )
    }

    /// Stop watching `fd`.
    pub fn deregister(&self, fd: RawFd) -> io::Result<()> {
        sys::epoll_ctl(self.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Wait for events; `timeout` in seconds, `None` blocks. Returns the
    /// number of events. `EINTR` is returned as an error (see module docs).
    pub fn poll(&self, events: &mut Events, timeout: Option<f64>) -> io::Result<usize> {
        let epfd = self.as_raw_fd();
        let n = match timeout {
            Some(t) if t > 0.0 && HAVE_EPOLL_PWAIT2.load(Ordering::Relaxed) => {
                let t = ((t / TIMEOUT_QUANTUM).ceil() * TIMEOUT_QUANTUM).min(MAXIMUM_SELECT_TIMEOUT);
                let secs = t.floor();
                let nanos = ((t - secs) * 1e9).ceil().min(999_999_999.0);
                match sys::epoll_pwait2(epfd, &mut events.raw, secs as i64, nanos as i64) {
                    Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                        HAVE_EPOLL_PWAIT2.store(false, Ordering::Relaxed);
                        sys::epoll_wait(epfd, &mut events.raw, timeout_ms(timeout))
                    }
                    other => other,
                }
            }
            _ => sys::epoll_wait(epfd, &mut events.raw, timeout_ms(timeout)),
        };
        match n {
            Ok(n) => {
                events.len = n;
                Ok(n)
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
            sys::close(fd);
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
///
/// Registered edge-triggered, it never needs draining: every write is a new
/// edge, and the counter (2^64 - 2 wake-ups) cannot fill up in practice
/// (a full counter answers `EAGAIN`, which is ignored: it is still readable).
#[derive(Debug)]
pub struct Waker {
    fd: AtomicI32,
}

impl Waker {
    /// Create a non-blocking, close-on-exec eventfd.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            fd: AtomicI32::new(sys::eventfd()?),
        })
    }

    /// The eventfd.
    #[must_use]
    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.load(Ordering::Relaxed)
    }

    /// Make the eventfd readable (a closed waker ignores the call).
    pub fn wake(&self) {
        let _ = sys::eventfd_write(self.as_raw_fd(), 1);
    }

    /// Reset the counter (only needed for a level-triggered registration).
    pub fn drain(&self) {
        let _ = sys::eventfd_read(self.as_raw_fd());
    }

    /// Close the eventfd now (idempotent).
    pub fn close(&self) {
        let fd = self.fd.swap(-1, Ordering::Relaxed);
        if fd >= 0 {
            sys::close(fd);
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
    use crate::net::Fd;

    fn pipe() -> (Fd, Fd) {
        crate::net::pipe().unwrap()
    }

    #[test]
    fn level_triggered_read_is_reported_again() {
        let p = Poller::new().unwrap();
        let (r, w) = pipe();
        p.register(r.raw(), READ, 7, Trigger::Level).unwrap();
        sys::write(w.raw(), b"ab").unwrap();
        let mut ev = Events::with_capacity(8);
        assert_eq!(p.poll(&mut ev, Some(0.0)).unwrap(), 1);
        assert_eq!(ev.iter().next(), Some(Event { token: 7, ready: READ }));
        let mut b = [0u8; 1];
        assert_eq!(crate::net::read(r.raw(), &mut b).unwrap(), 1);
        // One byte is still unread: level-triggered means it is reported again.
        assert_eq!(p.poll(&mut ev, Some(0.0)).unwrap(), 1);
        p.deregister(r.raw()).unwrap();
        assert_eq!(p.poll(&mut ev, Some(0.0)).unwrap(), 0);
    }

    #[test]
    fn edge_triggered_read_is_reported_once_per_change() {
        let p = Poller::new().unwrap();
        let (r, w) = pipe();
        p.register(r.raw(), READ, 9, Trigger::Edge).unwrap();
        sys::write(w.raw(), b"ab").unwrap();
        let mut ev = Events::with_capacity(8);
        assert_eq!(p.poll(&mut ev, Some(0.0)).unwrap(), 1);
        assert_eq!(ev.iter().next(), Some(Event { token: 9, ready: READ }));
        // Unread data, but no new edge: nothing to report.
        assert_eq!(p.poll(&mut ev, Some(0.0)).unwrap(), 0);
        sys::write(w.raw(), b"c").unwrap();
        assert_eq!(p.poll(&mut ev, Some(0.0)).unwrap(), 1);
    }

    #[test]
    fn modify_changes_interest_and_token() {
        let p = Poller::new().unwrap();
        let (r, w) = pipe();
        p.register(w.raw(), WRITE, 1, Trigger::Level).unwrap();
        let mut ev = Events::with_capacity(8);
        assert_eq!(p.poll(&mut ev, Some(0.0)).unwrap(), 1);
        assert_eq!(ev.iter().next().unwrap().token, 1);
        p.modify(w.raw(), WRITE, 2, Trigger::Level).unwrap();
        p.poll(&mut ev, Some(0.0)).unwrap();
        assert_eq!(ev.iter().next().unwrap().token, 2);
        p.modify(w.raw(), 0, 2, Trigger::Level).unwrap();
        assert_eq!(p.poll(&mut ev, Some(0.0)).unwrap(), 0);
        drop(r);
    }

    #[test]
    fn stale_registration_of_a_reused_fd_keeps_its_own_token() {
        // fd N registered with token A, duplicated, closed; N is reused for a
        // new pipe registered with token B. The old registration lives on (the
        // dup keeps the file open) and still reports token A, never B.
        let p = Poller::new().unwrap();
        let (r1, w1) = pipe();
        let n = r1.raw();
        p.register(n, READ, 0xA, Trigger::Level).unwrap();
        let keep = crate::net::dup(n).unwrap();
        drop(r1);
        let (r2, w2) = pipe();
        let reused = if r2.raw() == n {
            r2
        } else {
            crate::net::dup_to(r2.raw(), n).unwrap()
        };
        assert_eq!(reused.raw(), n);
        p.register(n, READ, 0xB, Trigger::Level).unwrap();
        sys::write(w1.raw(), b"old").unwrap();
        let mut ev = Events::with_capacity(8);
        p.poll(&mut ev, Some(0.0)).unwrap();
        let tokens: Vec<u64> = ev.iter().map(|e| e.token).collect();
        assert_eq!(tokens, vec![0xA]);
        sys::write(w2.raw(), b"new").unwrap();
        p.poll(&mut ev, Some(0.0)).unwrap();
        let mut tokens: Vec<u64> = ev.iter().map(|e| e.token).collect();
        tokens.sort_unstable();
        assert_eq!(tokens, vec![0xA, 0xB]);
        drop(keep);
    }

    #[test]
    fn register_closed_fd_is_ebadf_and_double_register_is_eexist() {
        let p = Poller::new().unwrap();
        let err = p.register(1_000_000, READ, 0, Trigger::Level).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
        let (r, _w) = pipe();
        p.register(r.raw(), READ, 0, Trigger::Level).unwrap();
        assert_eq!(
            p.register(r.raw(), READ, 0, Trigger::Level).unwrap_err().raw_os_error(),
            Some(libc::EEXIST)
        );
        p.modify(r.raw(), READ | WRITE, 0, Trigger::Level).unwrap();
    }

    #[test]
    fn hangup_is_read_and_write_ready() {
        let p = Poller::new().unwrap();
        let (r, w) = pipe();
        p.register(r.raw(), READ, 3, Trigger::Level).unwrap();
        drop(w);
        let mut ev = Events::with_capacity(8);
        p.poll(&mut ev, Some(0.0)).unwrap();
        assert_eq!(ev.iter().next().unwrap().ready, READ | WRITE);
    }

    #[test]
    fn edge_triggered_waker_needs_no_drain() {
        let p = Poller::new().unwrap();
        let wk = Waker::new().unwrap();
        p.register(wk.as_raw_fd(), READ, 0, Trigger::Edge).unwrap();
        let mut ev = Events::with_capacity(4);
        assert_eq!(p.poll(&mut ev, Some(0.0)).unwrap(), 0);
        std::thread::scope(|s| {
            s.spawn(|| wk.wake());
        });
        assert_eq!(p.poll(&mut ev, Some(5.0)).unwrap(), 1);
        assert_eq!(p.poll(&mut ev, Some(0.0)).unwrap(), 0);
        wk.wake();
        assert_eq!(p.poll(&mut ev, Some(0.0)).unwrap(), 1);
        wk.drain();
    }

    #[test]
    fn sub_millisecond_timeout_never_returns_early() {
        let p = Poller::new().unwrap();
        let mut ev = Events::with_capacity(4);
        for t in [0.000_05, 0.000_3, 0.002] {
            let start = std::time::Instant::now();
            assert_eq!(p.poll(&mut ev, Some(t)).unwrap(), 0);
            assert!(start.elapsed().as_secs_f64() >= t);
        }
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
