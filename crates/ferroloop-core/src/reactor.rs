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
//! A positive timeout is passed to `epoll_pwait2` (Linux 5.11+), rounded up
//! to a multiple of [`TIMEOUT_QUANTUM`] (50 µs): a timer due in 30 µs wakes
//! the loop after 50 µs, not after a whole millisecond, while timers that are
//! due within microseconds of each other still fire in one iteration. Where `epoll_pwait2` is missing (`ENOSYS`,
//! remembered for the process), the timeout is rounded *up* to whole
//! milliseconds as `EpollSelector.select` does (`math.ceil(timeout * 1e3)`).
//! Either way a poll never returns before its timeout, so a timer never fires
//! early and a sub-millisecond wait never becomes a busy loop.
//!
//! # Invariants
//! - The `Poller` owns its epoll fd and closes it exactly once (on drop or
//!   [`Poller::close`]).
//! - Registrations are keyed by fd; `epoll_event.u64` holds the fd.
//! - `EINTR` is returned to the caller, which must check Python's signal
//!   handlers before polling again (that is how Ctrl-C reaches the program).

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// Cleared once `epoll_pwait2` answered `ENOSYS` (kernel older than 5.11).
static HAVE_EPOLL_PWAIT2: AtomicBool = AtomicBool::new(true);

use crate::sys::syscall;

/// Interest bit for readability (`selectors.EVENT_READ`).
pub const READ: u32 = 1;
/// Interest bit for writability (`selectors.EVENT_WRITE`).
pub const WRITE: u32 = 2;

/// Granularity of positive poll timeouts with `epoll_pwait2` (seconds).
pub const TIMEOUT_QUANTUM: f64 = 50e-6;

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
        let n = match timeout {
            Some(t) if t > 0.0 && HAVE_EPOLL_PWAIT2.load(Ordering::Relaxed) => match self.pwait2(events, cap, t) {
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                    HAVE_EPOLL_PWAIT2.store(false, Ordering::Relaxed);
                    self.wait_ms(events, cap, timeout)
                }
                other => other,
            },
            _ => self.wait_ms(events, cap, timeout),
        };
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

    /// `epoll_wait` with the timeout rounded up to milliseconds.
    fn wait_ms(&self, events: &mut Events, cap: i32, timeout: Option<f64>) -> io::Result<i32> {
        syscall!(epoll_wait(
            self.as_raw_fd(),
            events.raw.as_mut_ptr(),
            cap,
            timeout_ms(timeout)
        ))
    }

    /// `epoll_pwait2` with a nanosecond timeout (seconds > 0).
    fn pwait2(&self, events: &mut Events, cap: i32, timeout: f64) -> io::Result<i32> {
        let t = ((timeout / TIMEOUT_QUANTUM).ceil() * TIMEOUT_QUANTUM).min(MAXIMUM_SELECT_TIMEOUT);
        let secs = t.floor();
        let nanos = ((t - secs) * 1e9).ceil().min(999_999_999.0);
        let ts = libc::timespec {
            tv_sec: secs as libc::time_t,
            tv_nsec: nanos as libc::c_long,
        };
        // SAFETY: the fd is our epoll instance, the buffer has room for `cap`
        // events, `ts` lives across the call, and a null sigmask means "no
        // mask change" (the sigsetsize argument is then ignored).
        let res = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait2,
                self.as_raw_fd(),
                events.raw.as_mut_ptr(),
                cap,
                &raw const ts,
                std::ptr::null::<libc::sigset_t>(),
                0usize,
            )
        };
        if res < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(res as i32)
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
