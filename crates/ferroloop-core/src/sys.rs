//! Raw libc calls, confined to this module (DESIGN.md §5).
//!
//! Every function here is a thin, safe wrapper around one system call: it
//! takes Rust types (fds, slices), checks the result and turns `-1` into
//! `io::Error::last_os_error()` so the errno is never lost. Nothing else in
//! the crate calls `libc` functions directly.
//!
//! # Invariants
//! - Buffers passed to the kernel are live Rust slices of the stated length.
//! - fds are plain integers here: ownership is the caller's business (see the
//!   owner types in `reactor` and `net`).

use std::io;
use std::os::fd::RawFd;

/// Call a libc function and turn a negative result into the current `io::Error`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: every use passes arguments that satisfy the libc function's
        // contract (valid fds owned by the caller, pointers to live buffers of
        // the stated length); the result is checked right here.
        #[allow(unused_unsafe)]
        let res = unsafe { libc::$fn($($arg),*) };
        if res < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

/// `close(fd)`; errors are ignored (Linux always releases the fd).
pub fn close(fd: RawFd) {
    // SAFETY: the caller owns `fd` and never uses it again.
    unsafe { libc::close(fd) };
}

// ----- epoll ------------------------------------------------------------------

/// The raw event record of `epoll_wait`.
pub type EpollEvent = libc::epoll_event;

/// An empty event record (for sizing result buffers).
pub const EMPTY_EVENT: EpollEvent = libc::epoll_event { events: 0, u64: 0 };

pub fn epoll_create() -> io::Result<RawFd> {
    syscall!(epoll_create1(libc::EPOLL_CLOEXEC))
}

/// `epoll_ctl(epfd, op, fd, {events, data})`.
pub fn epoll_ctl(epfd: RawFd, op: i32, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: data };
    syscall!(epoll_ctl(epfd, op, fd, &raw mut ev)).map(|_| ())
}

pub fn epoll_wait(epfd: RawFd, buf: &mut [EpollEvent], timeout_ms: i32) -> io::Result<usize> {
    let cap = i32::try_from(buf.len()).unwrap_or(i32::MAX);
    syscall!(epoll_wait(epfd, buf.as_mut_ptr(), cap, timeout_ms)).map(|n| n as usize)
}

/// `epoll_pwait2` with a (seconds, nanoseconds) timeout; `ENOSYS` before Linux 5.11.
pub fn epoll_pwait2(epfd: RawFd, buf: &mut [EpollEvent], secs: i64, nanos: i64) -> io::Result<usize> {
    let cap = i32::try_from(buf.len()).unwrap_or(i32::MAX);
    let ts = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nanos as libc::c_long,
    };
    // SAFETY: the fd is the caller's epoll instance, the buffer has room for
    // `cap` events, `ts` lives across the call, and a null sigmask means "no
    // mask change" (the sigsetsize argument is then ignored).
    let res = unsafe {
        libc::syscall(
            libc::SYS_epoll_pwait2,
            epfd,
            buf.as_mut_ptr(),
            cap,
            &raw const ts,
            std::ptr::null::<libc::sigset_t>(),
            0usize,
        )
    };
    if res < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(res as usize)
    }
}

// ----- eventfd ----------------------------------------------------------------

pub fn eventfd() -> io::Result<RawFd> {
    syscall!(eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))
}

/// Add `value` to an eventfd counter (EAGAIN on a full counter is reported).
pub fn eventfd_write(fd: RawFd, value: u64) -> io::Result<()> {
    syscall!(write(fd, (&raw const value).cast(), 8)).map(|_| ())
}

/// Read (and reset) an eventfd counter.
pub fn eventfd_read(fd: RawFd) -> io::Result<u64> {
    let mut value: u64 = 0;
    syscall!(read(fd, (&raw mut value).cast(), 8)).map(|_| value)
}

// ----- clock ------------------------------------------------------------------

/// `clock_gettime(CLOCK_MONOTONIC)` in nanoseconds.
#[must_use]
pub fn monotonic_ns() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    debug_assert_eq!(rc, 0);
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// The CPU's time-stamp counter (`rdtsc`), or `None` where there is none.
/// Not serializing: reads may move a few instructions, which is far below
/// what the callback timing built on it resolves.
#[inline]
#[must_use]
pub fn cycle_counter() -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `rdtsc` exists on every x86_64 CPU and has no preconditions.
        #[allow(unused_unsafe)]
        Some(unsafe { core::arch::x86_64::_rdtsc() })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

// ----- sockets ----------------------------------------------------------------

/// `recv(fd, buf, 0)`.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    syscall!(recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0)).map(|n| n as usize)
}

/// `recv` into raw memory the caller guarantees to be writable for `len` bytes.
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes for the duration of the call.
pub unsafe fn recv_raw(fd: RawFd, ptr: *mut u8, len: usize) -> io::Result<usize> {
    syscall!(recv(fd, ptr.cast(), len, 0)).map(|n| n as usize)
}

/// `send(fd, buf, MSG_NOSIGNAL)`: a closed peer gives `EPIPE`, never `SIGPIPE`.
pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    syscall!(send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL)).map(|n| n as usize)
}

/// `sendmsg` of several buffers at once (`MSG_NOSIGNAL`).
pub fn sendmsg(fd: RawFd, bufs: &[std::io::IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: an all-zero msghdr is a valid "no address, no control data" header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is ABI-compatible with iovec (guaranteed by std on Unix).
    msg.msg_iov = bufs.as_ptr().cast_mut().cast();
    msg.msg_iovlen = bufs.len() as _;
    syscall!(sendmsg(fd, &raw const msg, libc::MSG_NOSIGNAL)).map(|n| n as usize)
}

/// `write(fd, buf)` (pipes and other non-sockets).
pub fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    syscall!(write(fd, buf.as_ptr().cast(), buf.len())).map(|n| n as usize)
}

/// `shutdown(fd, how)`.
pub fn shutdown(fd: RawFd, how: i32) -> io::Result<()> {
    syscall!(shutdown(fd, how)).map(|_| ())
}

/// A raw socket address as the kernel returns it.
pub struct RawAddr {
    pub storage: libc::sockaddr_storage,
    pub len: libc::socklen_t,
}

impl std::fmt::Debug for RawAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawAddr(family={}, len={})", self.storage.ss_family, self.len)
    }
}

impl RawAddr {
    fn empty() -> Self {
        Self {
            // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
            storage: unsafe { std::mem::zeroed() },
            len: std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        }
    }
}

/// `recvfrom(fd, buf, 0)`: the datagram's length and its sender's address.
pub fn recvfrom(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, RawAddr)> {
    let mut addr = RawAddr::empty();
    let n = syscall!(recvfrom(
        fd,
        buf.as_mut_ptr().cast(),
        buf.len(),
        0,
        (&raw mut addr.storage).cast(),
        &raw mut addr.len
    ))?;
    Ok((n as usize, addr))
}

/// `sendto(fd, buf, 0, addr)`; `addr` is the kernel's bytes of a socket address.
pub fn sendto(fd: RawFd, buf: &[u8], addr: &[u8]) -> io::Result<usize> {
    let mut storage = RawAddr::empty();
    let n = addr.len().min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: copies `n` bytes into the storage, which is at least that large.
    unsafe {
        std::ptr::copy_nonoverlapping(addr.as_ptr(), (&raw mut storage.storage).cast::<u8>(), n);
    }
    syscall!(sendto(
        fd,
        buf.as_ptr().cast(),
        buf.len(),
        0,
        (&raw const storage.storage).cast(),
        n as libc::socklen_t
    ))
    .map(|n| n as usize)
}

/// A non-blocking UDP socket bound to 127.0.0.1 on a free port (tests).
#[cfg(test)]
pub(crate) fn udp_loopback_v4() -> io::Result<RawFd> {
    let fd = syscall!(socket(
        libc::AF_INET,
        libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        0
    ))?;
    // SAFETY: an all-zero sockaddr_in is valid; the fields are set below.
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    if let Err(e) = syscall!(bind(fd, (&raw const sin).cast(), len)) {
        close(fd);
        return Err(e);
    }
    Ok(fd)
}

/// `accept4(fd, SOCK_NONBLOCK | SOCK_CLOEXEC)` with the peer's address.
pub fn accept(fd: RawFd) -> io::Result<(RawFd, RawAddr)> {
    let mut addr = RawAddr::empty();
    let conn = syscall!(accept4(
        fd,
        (&raw mut addr.storage).cast(),
        &raw mut addr.len,
        libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC
    ))?;
    Ok((conn, addr))
}

/// `getsockname(fd)`.
pub fn getsockname(fd: RawFd) -> io::Result<RawAddr> {
    let mut addr = RawAddr::empty();
    syscall!(getsockname(fd, (&raw mut addr.storage).cast(), &raw mut addr.len))?;
    Ok(addr)
}

/// `getpeername(fd)`.
pub fn getpeername(fd: RawFd) -> io::Result<RawAddr> {
    let mut addr = RawAddr::empty();
    syscall!(getpeername(fd, (&raw mut addr.storage).cast(), &raw mut addr.len))?;
    Ok(addr)
}

/// `getsockopt(fd, level, name)` for an int option.
pub fn getsockopt_int(fd: RawFd, level: i32, name: i32) -> io::Result<i32> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    syscall!(getsockopt(fd, level, name, (&raw mut value).cast(), &raw mut len))?;
    Ok(value)
}

/// `setsockopt(fd, level, name, int)`.
pub fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    syscall!(setsockopt(fd, level, name, (&raw const value).cast(), len)).map(|_| ())
}

/// `sendfile(out_fd, in_fd, &offset, count)`; advances `offset`.
pub fn sendfile(out_fd: RawFd, in_fd: RawFd, offset: &mut i64, count: usize) -> io::Result<usize> {
    let mut off: libc::off_t = *offset as libc::off_t;
    let n = syscall!(sendfile(out_fd, in_fd, &raw mut off, count))?;
    *offset = off as i64;
    Ok(n as usize)
}

/// `lseek(fd, offset, SEEK_SET)`.
#[allow(clippy::useless_conversion)] // off_t is i64 only on 64-bit targets
pub fn lseek_set(fd: RawFd, offset: i64) -> io::Result<i64> {
    syscall!(lseek(fd, offset as libc::off_t, libc::SEEK_SET)).map(i64::from)
}

/// `writev` of several buffers (pipes and other non-sockets).
pub fn writev(fd: RawFd, bufs: &[std::io::IoSlice<'_>]) -> io::Result<usize> {
    // IoSlice is ABI-compatible with iovec (guaranteed by std on Unix).
    let n = bufs.len().min(1024) as libc::c_int;
    syscall!(writev(fd, bufs.as_ptr().cast(), n)).map(|n| n as usize)
}

/// `os.set_blocking(fd, False)`.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    let flags = syscall!(fcntl(fd, libc::F_GETFL))?;
    if flags & libc::O_NONBLOCK == 0 {
        syscall!(fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK))?;
    }
    Ok(())
}

/// `fstat(fd).st_mode`.
pub fn fstat_mode(fd: RawFd) -> io::Result<u32> {
    // SAFETY: an all-zero stat is valid storage for fstat to fill.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    syscall!(fstat(fd, &raw mut st))?;
    Ok(st.st_mode)
}

/// `strerror(errno)` as `os.strerror` gives it.
#[must_use]
pub fn strerror(errno: i32) -> String {
    // SAFETY: strerror returns a pointer to a NUL-terminated static or
    // thread-local string, read immediately.
    let ptr = unsafe { libc::strerror(errno) };
    if ptr.is_null() {
        return format!("Unknown error {errno}");
    }
    // SAFETY: non-null and NUL-terminated per strerror's contract.
    unsafe { std::ffi::CStr::from_ptr(ptr) }.to_string_lossy().into_owned()
}

// ----- process ----------------------------------------------------------------

/// Register `child` to run in the child process after every `fork()`.
pub fn at_fork_child(child: extern "C" fn()) {
    // SAFETY: registers a plain extern "C" function with no captured state.
    unsafe { libc::pthread_atfork(None, None, Some(child)) };
}

// ----- fds --------------------------------------------------------------------

/// `pipe2(O_NONBLOCK | O_CLOEXEC)`: (read end, write end).
pub fn pipe() -> io::Result<(RawFd, RawFd)> {
    let mut fds = [0 as libc::c_int; 2];
    syscall!(pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC))?;
    Ok((fds[0], fds[1]))
}

/// `socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC)`.
pub fn socketpair() -> io::Result<(RawFd, RawFd)> {
    let mut fds = [0 as libc::c_int; 2];
    syscall!(socketpair(
        libc::AF_UNIX,
        libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        0,
        fds.as_mut_ptr()
    ))?;
    Ok((fds[0], fds[1]))
}

/// `fcntl(fd, F_DUPFD_CLOEXEC, 0)`.
pub fn dup(fd: RawFd) -> io::Result<RawFd> {
    syscall!(fcntl(fd, libc::F_DUPFD_CLOEXEC, 0))
}

/// `dup3(fd, target, O_CLOEXEC)`.
pub fn dup_to(fd: RawFd, target: RawFd) -> io::Result<RawFd> {
    syscall!(dup3(fd, target, libc::O_CLOEXEC))
}

/// `read(fd, buf)`.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    syscall!(read(fd, buf.as_mut_ptr().cast(), buf.len())).map(|n| n as usize)
}

/// `getnameinfo(addr, NI_NUMERICHOST)`: the numeric host of an IPv4/IPv6
/// address, with `%scope` for scoped IPv6 addresses, as Python's `socket`
/// module formats it.
#[must_use]
pub fn numeric_host(addr: &[u8]) -> String {
    let mut storage = RawAddr::empty();
    let n = addr.len().min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: copies `n` bytes into the storage, which is at least that large.
    unsafe {
        std::ptr::copy_nonoverlapping(addr.as_ptr(), (&raw mut storage.storage).cast::<u8>(), n);
    }
    let mut out = [0 as libc::c_char; 128];
    // SAFETY: the address is `n` valid bytes, `out` is writable for its length,
    // and no service buffer is requested.
    let rc = unsafe {
        libc::getnameinfo(
            (&raw const storage.storage).cast(),
            n as libc::socklen_t,
            out.as_mut_ptr(),
            out.len() as libc::socklen_t,
            std::ptr::null_mut(),
            0,
            libc::NI_NUMERICHOST,
        )
    };
    if rc != 0 {
        return String::new();
    }
    // SAFETY: getnameinfo wrote a NUL-terminated string into `out`.
    unsafe { std::ffi::CStr::from_ptr(out.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}
