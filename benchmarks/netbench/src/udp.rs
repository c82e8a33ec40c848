//! UDP echo: `client udp` and `server udp`.
//!
//! The client has `--conns` sockets, each `connect`ed to the server (so only
//! the server's datagrams reach it) and registered level-triggered in one
//! epoll instance; each has one datagram in flight: send `--size` bytes, wait
//! for the echo, compare it with what was sent, send the next. One `recv`
//! per readiness event (level triggering reports the socket again if more is
//! queued), so a round trip costs the client an `epoll_wait`, a `recv` and a
//! `send`.
//!
//! A datagram is the socket's request number (little-endian, its first 8
//! bytes; fewer for a smaller `--size`) followed by bytes cut from the echo
//! client's pattern at an offset that depends on the socket and the number,
//! so every request's bytes differ from the previous ones'. UDP may drop a
//! datagram (and a full send buffer drops one at our end): a request whose
//! echo has not come back after `--timeout` seconds is given up on, counted
//! in `lost`, and the socket sends its next request, so a loss costs one
//! timeout, never the run. An echo of a given-up request that still arrives
//! is counted in `late` and ignored. Anything else (a wrong length, other
//! bytes, a duplicate) is an error: the socket is closed and counted in
//! `errors`, as a TCP connection is.
//!
//! The server is the UDP limit: one thread, one blocking socket, a loop of
//! one `recvfrom` and one `sendto` per datagram, no batching (`recvmmsg`,
//! GSO), no epoll. That is the fewest system calls a single-threaded echo
//! can spend per datagram; the loops under test spend those two plus their
//! share of an `epoll_wait`.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::client::{print_result, Summary, PERIOD};
use crate::sys::{self, Epoll};

/// The largest UDP payload over IPv4.
pub const MAX_SIZE: usize = 65_507;
/// The given-up requests per socket whose late echoes are still recognised.
const STALE: usize = 8;
/// The request-number header at the start of every datagram.
const HEADER: usize = 8;

pub struct Options {
    pub addr: SocketAddr,
    pub conns: usize,
    pub size: usize,
    pub duration: f64,
    pub warmup: f64,
    /// Seconds without an echo before a request is given up on.
    pub timeout: f64,
}

/// What a run counted; `requests`, `lost` and `late` only in the measured window.
pub struct Outcome {
    pub requests: u64,
    pub seconds: f64,
    pub latencies_ns: Vec<u64>,
    pub errors: u64,
    pub first_error: String,
    pub lost: u64,
    pub late: u64,
}

struct Sock {
    socket: UdpSocket,
    /// The request in flight: its number and the bytes sent.
    seq: u64,
    datagram: Vec<u8>,
    sent_at: Instant,
    /// The numbers of the requests given up on, oldest first.
    stale: Vec<u64>,
}

/// Request `seq` of socket `id`: the number, then the pattern from an offset
/// that depends on both.
fn fill(out: &mut Vec<u8>, pattern: &[u8], id: usize, seq: u64, size: usize) {
    let offset = (id * 7 + (seq % PERIOD as u64) as usize * 113) % PERIOD;
    let head = HEADER.min(size);
    out.clear();
    out.extend_from_slice(&seq.to_le_bytes()[..head]);
    out.extend_from_slice(&pattern[offset..offset + size - head]);
}

impl Sock {
    /// Starts the next request and sends it. A datagram the kernel will not
    /// take now (a full send buffer) is as good as lost: the timeout resends.
    fn send_next(&mut self, pattern: &[u8], id: usize, size: usize) -> Result<(), String> {
        self.seq += 1;
        fill(&mut self.datagram, pattern, id, self.seq, size);
        self.sent_at = Instant::now();
        loop {
            match self.socket.send(&self.datagram) {
                Ok(n) if n == size => return Ok(()),
                Ok(n) => return Err(format!("sent {n} of {size} bytes")),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("send: {e}")),
            }
        }
    }

    /// Gives up on the request in flight (remembering it for its late echo).
    fn give_up(&mut self) {
        if self.stale.len() == STALE {
            self.stale.remove(0);
        }
        self.stale.push(self.seq);
    }
}

/// What a received datagram is.
#[derive(Debug, PartialEq, Eq)]
enum Echo {
    /// The echo of the request in flight.
    Current,
    /// The echo of a request given up on.
    Late,
}

/// Classifies `got` against socket `id`'s request in flight and its given-up ones.
fn classify(s: &mut Sock, got: &[u8], pattern: &[u8], id: usize, scratch: &mut Vec<u8>) -> Result<Echo, String> {
    let size = s.datagram.len();
    if got.len() != size {
        return Err(format!("a datagram of {} bytes came back, {size} were sent", got.len()));
    }
    if got == s.datagram.as_slice() {
        return Ok(Echo::Current);
    }
    for i in 0..s.stale.len() {
        fill(scratch, pattern, id, s.stale[i], size);
        if got == scratch.as_slice() {
            s.stale.remove(i);
            return Ok(Echo::Late);
        }
    }
    let at = got.iter().zip(&s.datagram).position(|(a, b)| a != b).unwrap_or(0);
    Err(format!("corrupted echo at byte {at} of {size}"))
}

/// Runs the load; prints `START` when the window opens, then the JSON result line.
pub fn run_client(opts: &Options) -> Result<(), String> {
    let out = drive(opts, || println!("START"))?;
    print_result(&Summary {
        mode: "udp",
        addr: &opts.addr.to_string(),
        conns: opts.conns,
        size: opts.size,
        requests: out.requests,
        seconds: out.seconds,
        latencies_ns: &out.latencies_ns,
        errors: out.errors,
        first_error: &out.first_error,
        lost: out.lost,
        late: out.late,
    });
    Ok(())
}

/// The client's loop; `on_start` is called when the measured window opens.
fn drive(opts: &Options, mut on_start: impl FnMut()) -> Result<Outcome, String> {
    let size = opts.size;
    let pattern: Vec<u8> = (0..PERIOD + size).map(|i| (i % PERIOD) as u8).collect();
    let timeout = Duration::from_secs_f64(opts.timeout);
    let mut epoll = Epoll::new().map_err(|e| format!("epoll: {e}"))?;
    let local: SocketAddr = if opts.addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let mut socks: Vec<Option<Sock>> = Vec::with_capacity(opts.conns);
    for id in 0..opts.conns {
        let socket = UdpSocket::bind(local).map_err(|e| format!("bind: {e}"))?;
        socket
            .connect(opts.addr)
            .map_err(|e| format!("connect to {}: {e}", opts.addr))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| format!("set_nonblocking: {e}"))?;
        epoll
            .add(socket.as_raw_fd(), id as u64, sys::DGRAM)
            .map_err(|e| format!("epoll_ctl: {e}"))?;
        socks.push(Some(Sock {
            socket,
            seq: 0,
            datagram: Vec::with_capacity(size),
            sent_at: Instant::now(),
            stale: Vec::new(),
        }));
    }

    let mut out = Outcome {
        requests: 0,
        seconds: 0.0,
        latencies_ns: Vec::with_capacity(1 << 20),
        errors: 0,
        first_error: String::new(),
        lost: 0,
        late: 0,
    };
    let fail = |out: &mut Outcome, slot: &mut Option<Sock>, e: String| {
        out.errors += 1;
        if out.first_error.is_empty() {
            out.first_error = e;
        }
        *slot = None; // dropping the socket closes it, which also leaves epoll
    };
    let mut scratch = vec![0u8; MAX_SIZE + 1]; // a longer datagram shows as too long, not cut
    let mut expected = Vec::with_capacity(size);
    let begin = Instant::now();
    for (id, slot) in socks.iter_mut().enumerate() {
        if let Some(Err(e)) = slot.as_mut().map(|s| s.send_next(&pattern, id, size)) {
            fail(&mut out, slot, e);
        }
    }
    let warm_end = begin + Duration::from_secs_f64(opts.warmup);
    let end = warm_end + Duration::from_secs_f64(opts.duration);
    let mut measuring = false;
    let mut window_start = begin;
    let mut events = Vec::new();
    loop {
        let now = Instant::now();
        if !measuring && now >= warm_end {
            measuring = true;
            window_start = now;
            on_start();
        }
        if now >= end || socks.iter().all(Option::is_none) {
            break;
        }
        // Give up on the requests that timed out; wake for the next timeout.
        let mut wake = if measuring { end } else { warm_end };
        for (id, slot) in socks.iter_mut().enumerate() {
            let Some(s) = slot.as_mut() else { continue };
            if now >= s.sent_at + timeout {
                out.lost += u64::from(measuring);
                s.give_up();
                if let Err(e) = s.send_next(&pattern, id, size) {
                    fail(&mut out, slot, e);
                    continue;
                }
            }
            wake = wake.min(s.sent_at + timeout);
        }
        let wait = wake.saturating_duration_since(now).as_micros().div_ceil(1000);
        epoll
            .wait(&mut events, i32::try_from(wait).unwrap_or(i32::MAX).max(1))
            .map_err(|e| format!("epoll_wait: {e}"))?;
        for &(token, _) in &events {
            let id = usize::try_from(token).unwrap_or(usize::MAX);
            let Some(slot) = socks.get_mut(id) else { continue };
            let Some(s) = slot.as_mut() else { continue };
            let n = match s.socket.recv(&mut scratch) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => continue,
                Err(e) => {
                    fail(&mut out, slot, format!("recv: {e}"));
                    continue;
                }
            };
            let result = classify(s, &scratch[..n], &pattern, id, &mut expected).and_then(|echo| {
                if echo == Echo::Late {
                    out.late += u64::from(measuring);
                    return Ok(());
                }
                if measuring {
                    out.requests += 1;
                    let ns = s.sent_at.elapsed().as_nanos();
                    out.latencies_ns.push(u64::try_from(ns).unwrap_or(u64::MAX));
                }
                s.send_next(&pattern, id, size)
            });
            if let Err(e) = result {
                fail(&mut out, slot, e);
            }
        }
    }
    if measuring {
        out.seconds = window_start.elapsed().as_secs_f64();
    }
    Ok(out)
}

/// The reference server: prints `READY <addr>`, then echoes until killed.
pub fn run_server(addr: SocketAddr) -> Result<(), String> {
    let socket = UdpSocket::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    let local = socket.local_addr().map_err(|e| format!("getsockname: {e}"))?;
    println!("READY {local}");
    serve(&socket)
}

/// Echoes every datagram to its sender, one `recvfrom` and one `sendto` each.
fn serve(socket: &UdpSocket) -> Result<(), String> {
    let mut buf = vec![0u8; MAX_SIZE + 1];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            // An ICMP error some earlier datagram drew, or a signal: nothing to echo.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                ) =>
            {
                continue
            }
            Err(e) => return Err(format!("recvfrom: {e}")),
        };
        loop {
            match socket.send_to(&buf[..n], peer) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Sent, or dropped (a full buffer, a vanished peer): UDP's own semantics.
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(addr: SocketAddr, size: usize, timeout: f64) -> Options {
        Options {
            addr,
            conns: 4,
            size,
            duration: 0.2,
            warmup: 0.02,
            timeout,
        }
    }

    /// A server on a thread (left running: it ends with the test process)
    /// that echoes datagram `n` as `transform(n, bytes)` says.
    fn spawn_server(transform: impl Fn(u64, &mut Vec<u8>) -> Reply + Send + 'static) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = socket.local_addr().expect("local_addr");
        std::thread::spawn(move || {
            let mut held: Option<(Vec<u8>, SocketAddr)> = None;
            let mut buf = vec![0u8; MAX_SIZE + 1];
            for n in 0u64.. {
                let Ok((len, peer)) = socket.recv_from(&mut buf) else {
                    return;
                };
                // A held datagram goes out when its sender's next one comes
                // in, i.e. after the sender gave up on it.
                if held.as_ref().is_some_and(|(_, p)| *p == peer) {
                    if let Some((d, p)) = held.take() {
                        let _ = socket.send_to(&d, p);
                    }
                }
                let mut data = buf[..len].to_vec();
                match transform(n, &mut data) {
                    Reply::Echo => {
                        let _ = socket.send_to(&data, peer);
                    }
                    Reply::Drop => {}
                    Reply::Hold => held = Some((data, peer)),
                }
            }
        });
        addr
    }

    enum Reply {
        Echo,
        Drop,
        Hold,
    }

    #[test]
    fn reference_server_echoes() {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = socket.local_addr().expect("local_addr");
        std::thread::spawn(move || serve(&socket));
        for size in [1, 8, 64, 1024] {
            let out = drive(&options(addr, size, 1.0), || {}).expect("run");
            assert_eq!((out.errors, out.lost, out.late), (0, 0, 0), "{}", out.first_error);
            assert!(out.requests > 0 && out.seconds > 0.0);
            assert_eq!(out.latencies_ns.len() as u64, out.requests);
        }
    }

    #[test]
    fn lost_and_late_datagrams_are_counted_not_fatal() {
        // Drops one datagram in 50 and holds back another until its sender
        // has sent the next: each costs its socket one timeout. How many
        // round trips fit in a run depends on the machine's load (a held
        // datagram near the end is never released in time), so a run that
        // saw neither is repeated, longer, a few times.
        let addr = spawn_server(|n, _| match n % 50 {
            10 => Reply::Drop,
            31 => Reply::Hold,
            _ => Reply::Echo,
        });
        let (mut lost, mut late) = (0, 0);
        for duration in [0.2, 0.5, 1.0, 2.0] {
            let out = drive(
                &Options {
                    duration,
                    ..options(addr, 64, 0.005)
                },
                || {},
            )
            .expect("run");
            assert_eq!(out.errors, 0, "{}", out.first_error);
            assert!(out.requests > 0);
            lost += out.lost;
            late += out.late;
            if lost > 0 && late > 0 {
                break;
            }
        }
        assert!(lost > 0, "no loss counted");
        assert!(late > 0, "no late echo counted");
    }

    #[test]
    fn corrupted_or_short_echoes_are_errors() {
        let addr = spawn_server(|_, d| {
            d[10] ^= 1;
            Reply::Echo
        });
        let out = drive(&options(addr, 64, 1.0), || {}).expect("run");
        assert_eq!(out.errors, 4);
        assert!(
            out.first_error.contains("corrupted echo at byte 10"),
            "{}",
            out.first_error
        );

        let addr = spawn_server(|_, d| {
            d.pop();
            Reply::Echo
        });
        let out = drive(&options(addr, 64, 1.0), || {}).expect("run");
        assert_eq!(out.errors, 4);
        assert!(out.first_error.contains("63 bytes"), "{}", out.first_error);
    }

    #[test]
    fn requests_differ_from_the_previous_ones() {
        let pattern: Vec<u8> = (0..PERIOD + 64).map(|i| (i % PERIOD) as u8).collect();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for seq in 1..1000 {
            fill(&mut a, &pattern, 3, seq, 64);
            fill(&mut b, &pattern, 3, seq + 1, 64);
            assert_eq!(a.len(), 64);
            assert_ne!(a, b);
        }
        fill(&mut a, &pattern, 3, 5, 3);
        assert_eq!(a, [5, 0, 0]);
    }
}
