//! Socket helpers for the native transports: an owned fd, compact socket
//! addresses, and the non-blocking calls a stream transport makes.
//!
//! Addresses are kept as the kernel's bytes (16 for IPv4, 28 for IPv6, up to
//! 110 for a unix path) and decoded only when Python asks for them, with the
//! rules of Python's `socket` module (`makesockaddr`): numeric host from
//! `getnameinfo(NI_NUMERICHOST)` (so scoped IPv6 keeps its `%zone`), the
//! flow info and scope id of IPv6, a unix path up to its first NUL, the
//! Linux abstract namespace as raw bytes.
//!
//! # Invariants
//! - An [`Fd`] closes its descriptor exactly once, on drop, unless released
//!   with [`Fd::into_raw`].

use std::io;
use std::os::fd::RawFd;

use crate::sys;

pub use crate::sys::{lseek_set, read, recv, send, sendfile, sendmsg, set_nonblocking, shutdown, write, writev};

/// `ENOTCONN` (the peer went away in the middle of a `sendfile`).
pub const ENOTCONN: i32 = libc::ENOTCONN;

/// An owned file descriptor, closed on drop.
#[derive(Debug)]
pub struct Fd(RawFd);

impl Fd {
    /// Take ownership of `fd`.
    #[must_use]
    pub fn from_raw(fd: RawFd) -> Self {
        Self(fd)
    }

    /// The descriptor, still owned by `self`.
    #[must_use]
    pub fn raw(&self) -> RawFd {
        self.0
    }

    /// Give up ownership without closing.
    #[must_use]
    pub fn into_raw(self) -> RawFd {
        let fd = self.0;
        std::mem::forget(self);
        fd
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        sys::close(self.0);
    }
}

/// A non-blocking, close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(Fd, Fd)> {
    let (r, w) = sys::pipe()?;
    Ok((Fd(r), Fd(w)))
}

/// A non-blocking, close-on-exec unix stream socket pair.
pub fn socketpair() -> io::Result<(Fd, Fd)> {
    let (a, b) = sys::socketpair()?;
    Ok((Fd(a), Fd(b)))
}

/// A close-on-exec duplicate of `fd`.
pub fn dup(fd: RawFd) -> io::Result<Fd> {
    sys::dup(fd).map(Fd)
}

/// Duplicate `fd` onto the number `target` (closing what was there).
pub fn dup_to(fd: RawFd, target: RawFd) -> io::Result<Fd> {
    sys::dup_to(fd, target).map(Fd)
}

/// Close `fd` (the caller gives up ownership).
pub fn close(fd: RawFd) {
    sys::close(fd);
}

/// Bytes of a socket address that fit without a heap allocation (IPv6).
const INLINE: usize = 28;

/// A socket address as the kernel gave it.
#[derive(Clone, PartialEq, Eq)]
pub enum SockAddr {
    /// Short addresses (IPv4, IPv6, an unnamed unix socket).
    Inline { len: u8, bytes: [u8; INLINE] },
    /// Longer ones (unix paths).
    Heap(Box<[u8]>),
}

impl std::fmt::Debug for SockAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SockAddr({:?})", self.decode())
    }
}

/// A decoded address, as Python's `socket` module presents it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// `(host, port)`.
    V4 { host: String, port: u16 },
    /// `(host, port, flowinfo, scope_id)`.
    V6 {
        host: String,
        port: u16,
        flowinfo: u32,
        scope_id: u32,
    },
    /// A path (`str` in Python) up to its first NUL; empty when unnamed.
    UnixPath(Vec<u8>),
    /// The Linux abstract namespace (`bytes` in Python, leading NUL included).
    UnixAbstract(Vec<u8>),
    /// No address at all (`None`).
    Empty,
    /// Another family: `(family, raw bytes)`.
    Other(i32, Vec<u8>),
}

impl SockAddr {
    fn from_bytes(b: &[u8]) -> Self {
        if b.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..b.len()].copy_from_slice(b);
            SockAddr::Inline {
                len: b.len() as u8,
                bytes,
            }
        } else {
            SockAddr::Heap(b.into())
        }
    }

    fn from_raw(raw: &sys::RawAddr) -> Self {
        let len = (raw.len as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
        // SAFETY: the storage is `size_of::<sockaddr_storage>()` initialised bytes.
        let all = unsafe {
            std::slice::from_raw_parts(
                (&raw const raw.storage).cast::<u8>(),
                std::mem::size_of::<libc::sockaddr_storage>(),
            )
        };
        Self::from_bytes(&all[..len])
    }

    /// The kernel's bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            SockAddr::Inline { len, bytes } => &bytes[..*len as usize],
            SockAddr::Heap(b) => b,
        }
    }

    /// The address family (`AF_UNSPEC` when empty).
    #[must_use]
    pub fn family(&self) -> i32 {
        let b = self.as_bytes();
        if b.len() < 2 {
            return libc::AF_UNSPEC;
        }
        i32::from(u16::from_ne_bytes([b[0], b[1]]))
    }

    /// Decode as Python's `socket.makesockaddr` would.
    #[must_use]
    pub fn decode(&self) -> Decoded {
        let b = self.as_bytes();
        if b.is_empty() {
            return Decoded::Empty;
        }
        match self.family() {
            libc::AF_INET if b.len() >= 16 => Decoded::V4 {
                host: dotted_quad([b[4], b[5], b[6], b[7]]),
                port: u16::from_be_bytes([b[2], b[3]]),
            },
            libc::AF_INET6 if b.len() >= 28 => Decoded::V6 {
                host: sys::numeric_host(b),
                port: u16::from_be_bytes([b[2], b[3]]),
                flowinfo: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                scope_id: u32::from_ne_bytes([b[24], b[25], b[26], b[27]]),
            },
            libc::AF_UNIX => {
                let path = &b[2.min(b.len())..];
                if !path.is_empty() && path[0] == 0 {
                    Decoded::UnixAbstract(path.to_vec())
                } else {
                    let end = path.iter().position(|&c| c == 0).unwrap_or(path.len());
                    Decoded::UnixPath(path[..end].to_vec())
                }
            }
            fam => Decoded::Other(fam, b.to_vec()),
        }
    }
}

/// An IPv4 address as `getnameinfo(NI_NUMERICHOST)` writes it (what
/// CPython's socket module returns): four decimal numbers without leading
/// zeros, here without the libc call (some 2,000 instructions).
fn dotted_quad(ip: [u8; 4]) -> String {
    let mut out = String::with_capacity(15);
    for (i, n) in ip.into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if n >= 100 {
            out.push(char::from(b'0' + n / 100));
        }
        if n >= 10 {
            out.push(char::from(b'0' + n / 10 % 10));
        }
        out.push(char::from(b'0' + n % 10));
    }
    out
}

impl SockAddr {
    /// An IPv4 address (`sockaddr_in`), as Python's `socket` builds it from `(host, port)`.
    #[must_use]
    pub fn v4(ip: [u8; 4], port: u16) -> Self {
        let mut b = [0u8; 16];
        b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        b[2..4].copy_from_slice(&port.to_be_bytes());
        b[4..8].copy_from_slice(&ip);
        Self::from_bytes(&b)
    }

    /// An IPv6 address (`sockaddr_in6`) from `(host, port, flowinfo, scope_id)`.
    #[must_use]
    pub fn v6(ip: [u8; 16], port: u16, flowinfo: u32, scope_id: u32) -> Self {
        let mut b = [0u8; 28];
        b[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        b[2..4].copy_from_slice(&port.to_be_bytes());
        b[4..8].copy_from_slice(&flowinfo.to_be_bytes());
        b[8..24].copy_from_slice(&ip);
        b[24..28].copy_from_slice(&scope_id.to_ne_bytes());
        Self::from_bytes(&b)
    }
}

/// `recvfrom` one datagram into `buf`: its length and its sender.
pub fn recv_from(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, SockAddr)> {
    let (n, raw) = sys::recvfrom(fd, buf)?;
    Ok((n, SockAddr::from_raw(&raw)))
}

/// `sendto` one datagram to `addr`.
pub fn send_to(fd: RawFd, buf: &[u8], addr: &SockAddr) -> io::Result<usize> {
    sys::sendto(fd, buf, addr.as_bytes())
}

/// What `fstat` says an fd is, for the pipe transports' checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileKind {
    pub fifo: bool,
    pub socket: bool,
    pub char_device: bool,
}

/// `stat.S_ISFIFO`/`S_ISSOCK`/`S_ISCHR` of `os.fstat(fd).st_mode`.
pub fn file_kind(fd: RawFd) -> io::Result<FileKind> {
    let mode = sys::fstat_mode(fd)? & libc::S_IFMT;
    Ok(FileKind {
        fifo: mode == libc::S_IFIFO,
        socket: mode == libc::S_IFSOCK,
        char_device: mode == libc::S_IFCHR,
    })
}

/// `AF_INET` and `AF_INET6`.
pub const AF_INET: i32 = libc::AF_INET;
pub const AF_INET6: i32 = libc::AF_INET6;

/// `accept4` a connection: the new non-blocking, close-on-exec socket and
/// the peer's address.
pub fn accept(fd: RawFd) -> io::Result<(Fd, SockAddr)> {
    let (conn, raw) = sys::accept(fd)?;
    Ok((Fd(conn), SockAddr::from_raw(&raw)))
}

/// `getsockname(fd)`.
pub fn local_addr(fd: RawFd) -> io::Result<SockAddr> {
    sys::getsockname(fd).map(|raw| SockAddr::from_raw(&raw))
}

/// `getpeername(fd)`.
pub fn peer_addr(fd: RawFd) -> io::Result<SockAddr> {
    sys::getpeername(fd).map(|raw| SockAddr::from_raw(&raw))
}

/// True for a TCP socket (`base_events._set_nodelay`'s condition).
#[must_use]
pub fn is_tcp(family: i32, type_: i32, proto: i32) -> bool {
    matches!(family, libc::AF_INET | libc::AF_INET6) && type_ == libc::SOCK_STREAM && proto == libc::IPPROTO_TCP
}

/// Turn off Nagle's algorithm (`TCP_NODELAY`).
pub fn set_nodelay(fd: RawFd) -> io::Result<()> {
    sys::setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
}

/// The pending socket error (`SO_ERROR`), 0 if none.
pub fn take_error(fd: RawFd) -> io::Result<i32> {
    sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR)
}

/// `(SO_DOMAIN, SO_TYPE)` of a socket.
pub fn domain_and_type(fd: RawFd) -> io::Result<(i32, i32)> {
    Ok((
        sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)?,
        sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE)?,
    ))
}

/// `ECONNABORTED` (an accepted connection was reset before `accept`).
pub const ECONNABORTED: i32 = libc::ECONNABORTED;

/// The `accept` errors asyncio retries later: `EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`.
pub const OUT_OF_RESOURCES: [i32; 4] = [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM];

/// `SHUT_WR`.
pub const SHUT_WR: i32 = libc::SHUT_WR;
/// The flag `accept4` sets on every accepted socket (see `sys::accept`);
/// given with the type to Python's `socket.socket(..., fileno=)`, it makes
/// the object non-blocking without another syscall.
pub const SOCK_NONBLOCK: i32 = libc::SOCK_NONBLOCK;

/// True for `EAGAIN`/`EWOULDBLOCK` and `EINTR`: retry when ready
/// (asyncio's `except (BlockingIOError, InterruptedError)`).
#[must_use]
pub fn would_block(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EAGAIN | libc::EINTR))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unnamed_unix_socket_pair_decodes_to_empty_path() {
        let (a, _b) = socketpair().unwrap();
        assert_eq!(local_addr(a.raw()).unwrap().decode(), Decoded::UnixPath(vec![]));
        assert_eq!(domain_and_type(a.raw()).unwrap(), (libc::AF_UNIX, libc::SOCK_STREAM));
    }

    #[test]
    fn ipv4_bytes_decode_like_python() {
        let mut b = [0u8; 16];
        b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        b[2..4].copy_from_slice(&8080u16.to_be_bytes());
        b[4..8].copy_from_slice(&[127, 0, 0, 1]);
        let a = SockAddr::from_bytes(&b);
        assert_eq!(
            a.decode(),
            Decoded::V4 {
                host: "127.0.0.1".into(),
                port: 8080
            }
        );
    }

    #[test]
    fn abstract_and_long_unix_paths() {
        let mut b = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        b.extend_from_slice(b"\0abstract");
        assert_eq!(
            SockAddr::from_bytes(&b).decode(),
            Decoded::UnixAbstract(b"\0abstract".to_vec())
        );
        let mut b = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        let long = "/tmp/".to_string() + &"x".repeat(60);
        b.extend_from_slice(long.as_bytes());
        b.push(0);
        let a = SockAddr::from_bytes(&b);
        assert!(matches!(a, SockAddr::Heap(_)));
        assert_eq!(a.decode(), Decoded::UnixPath(long.into_bytes()));
    }

    #[test]
    fn ipv4_text_is_getnameinfos() {
        let mut seen = 0;
        for a in [0u8, 1, 9, 10, 99, 100, 127, 199, 200, 255] {
            for b in [0u8, 7, 10, 100, 255] {
                let ip = [a, b, b.wrapping_mul(3), a ^ b];
                let raw = SockAddr::v4(ip, 8080);
                assert_eq!(dotted_quad(ip), sys::numeric_host(raw.as_bytes()), "{ip:?}");
                seen += 1;
            }
        }
        assert_eq!(seen, 50);
    }

    #[test]
    fn built_addresses_decode_like_python() {
        assert_eq!(
            SockAddr::v4([10, 1, 2, 3], 53).decode(),
            Decoded::V4 {
                host: "10.1.2.3".into(),
                port: 53
            }
        );
        let mut ip = [0u8; 16];
        ip[15] = 1;
        assert_eq!(
            SockAddr::v6(ip, 443, 7, 0).decode(),
            Decoded::V6 {
                host: "::1".into(),
                port: 443,
                flowinfo: 7,
                scope_id: 0
            }
        );
    }

    #[test]
    fn datagrams_carry_their_sender() {
        let a = Fd::from_raw(sys::udp_loopback_v4().unwrap());
        let b = Fd::from_raw(sys::udp_loopback_v4().unwrap());
        let (aa, ba) = (local_addr(a.raw()).unwrap(), local_addr(b.raw()).unwrap());
        assert_eq!(send_to(a.raw(), b"ping", &ba).unwrap(), 4);
        let mut buf = [0u8; 16];
        let (n, from) = recv_from(b.raw(), &mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"ping"[..], aa));
        assert_eq!(send_to(a.raw(), b"", &ba).unwrap(), 0);
        assert_eq!(recv_from(b.raw(), &mut buf).unwrap().0, 0);
        assert!(would_block(&recv_from(b.raw(), &mut buf).unwrap_err()));
    }

    #[test]
    fn pipes_are_fifos_and_writev_joins() {
        let (r, w) = pipe().unwrap();
        let k = file_kind(r.raw()).unwrap();
        assert!(k.fifo && !k.socket && !k.char_device);
        let (a, _b) = socketpair().unwrap();
        assert!(file_kind(a.raw()).unwrap().socket);
        set_nonblocking(r.raw()).unwrap();
        let mut buf = [0u8; 8];
        assert!(would_block(&read(r.raw(), &mut buf).unwrap_err()));
        assert_eq!(
            writev(w.raw(), &[io::IoSlice::new(b"ab"), io::IoSlice::new(b"c")]).unwrap(),
            3
        );
        assert_eq!(read(r.raw(), &mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"abc");
    }

    #[test]
    fn send_recv_and_shutdown_over_a_socketpair() {
        let (a, b) = socketpair().unwrap();
        assert_eq!(send(a.raw(), b"hello").unwrap(), 5);
        let mut buf = [0u8; 16];
        assert_eq!(recv(b.raw(), &mut buf).unwrap(), 5);
        assert!(would_block(&recv(b.raw(), &mut buf).unwrap_err()));
        let n = sendmsg(a.raw(), &[io::IoSlice::new(b"ab"), io::IoSlice::new(b"cd")]).unwrap();
        assert_eq!(n, 4);
        shutdown(a.raw(), SHUT_WR).unwrap();
        assert_eq!(recv(b.raw(), &mut buf).unwrap(), 4);
        assert_eq!(recv(b.raw(), &mut buf).unwrap(), 0);
    }
}
