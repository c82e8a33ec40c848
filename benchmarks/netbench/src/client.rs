//! The load generator: N connections on one thread and one epoll instance
//! (edge-triggered; writability only while a request is partly written),
//! each a closed loop of request, complete response,
//! next request. No pipelining: every connection has at most one request
//! in flight, so the rate measures the server's round trip.
//!
//! Echo requests are SIZE bytes cut from a fixed pattern at an offset that
//! depends on the connection and the request's sequence number; every byte
//! that comes back is compared with what was sent, so lost, duplicated,
//! reordered or foreign data is an error, never a faster number. HTTP
//! responses are parsed (status line, Content-Length) and must be the
//! benchmark's fixed response (header names compared without regard to case,
//! everything else byte for byte) unless `--any-response` is given.
//!
//! Output: `START` on stdout when the measured window opens (after the
//! warm-up), then one JSON line when it closes.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::http;
use crate::net::{Addr, Stream};
use crate::sys::{self, Epoll};

/// The pattern's period: a prime, so no message size is a multiple of it.
pub const PERIOD: usize = 251;

pub enum Kind {
    Echo { size: usize },
    Http { request: Vec<u8>, check_body: bool },
}

pub struct Options {
    pub addr: Addr,
    pub conns: usize,
    pub duration: f64,
    pub warmup: f64,
    pub kind: Kind,
}

struct Conn {
    stream: Stream,
    /// Echo: the pattern offset of the request in flight; HTTP: unused.
    offset: usize,
    seq: usize,
    sent: usize,
    received: usize,
    /// HTTP: the response bytes received so far.
    inbuf: Vec<u8>,
    started: Instant,
    /// Registered for writability (a request is partly written).
    want_out: bool,
}

struct Load<'a> {
    kind: &'a Kind,
    /// `PERIOD + size` bytes; an echo request is `pattern[offset..offset + size]`.
    pattern: Vec<u8>,
    scratch: Vec<u8>,
    measuring: bool,
    requests: u64,
    latencies_ns: Vec<u64>,
}

impl Load<'_> {
    fn request<'b>(&'b self, c: &Conn) -> &'b [u8] {
        match self.kind {
            Kind::Echo { size } => &self.pattern[c.offset..c.offset + size],
            Kind::Http { request, .. } => request,
        }
    }

    fn start_request(&self, c: &mut Conn, id: usize) {
        c.seq += 1;
        c.offset = (id * 7 + c.seq * 113) % PERIOD;
        c.sent = 0;
        c.received = 0;
        c.inbuf.clear();
        c.started = Instant::now();
    }

    fn complete(&mut self, c: &Conn) {
        if self.measuring {
            self.requests += 1;
            self.latencies_ns
                .push(u64::try_from(c.started.elapsed().as_nanos()).unwrap_or(u64::MAX));
        }
    }

    /// Makes all the progress `c` allows: writes until done or EAGAIN, reads
    /// until EAGAIN, starting the next request whenever a response completes.
    /// Returning only after EAGAIN on read is what edge triggering needs.
    fn drive(&mut self, c: &mut Conn, id: usize) -> Result<(), String> {
        loop {
            let total = self.request(c).len();
            while c.sent < total {
                let req = &self.request(c)[c.sent..];
                match c.stream.write(req) {
                    Ok(0) => return Err("write returned 0".to_string()),
                    Ok(n) => c.sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("write: {e}")),
                }
            }
            let n = match c.stream.read(&mut self.scratch) {
                Ok(0) => return Err("connection closed by the server".to_string()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("read: {e}")),
            };
            let done = match self.kind {
                Kind::Echo { size } => self.check_echo(c, n, *size)?,
                Kind::Http { check_body, .. } => self.check_http(c, n, *check_body)?,
            };
            if done {
                self.complete(c);
                self.start_request(c, id);
            }
        }
    }

    /// Compares `n` received bytes with what was sent; true when the whole echo is back.
    fn check_echo(&self, c: &mut Conn, n: usize, size: usize) -> Result<bool, String> {
        let got = &self.scratch[..n];
        if c.received + n > c.sent {
            return Err(format!("received {} bytes, only {} sent", c.received + n, c.sent));
        }
        let start = c.offset + c.received;
        if got != &self.pattern[start..start + n] {
            return Err(format!("corrupted echo at byte {} of {size}", c.received));
        }
        c.received += n;
        Ok(c.received == size)
    }

    fn check_http(&self, c: &mut Conn, n: usize, check_body: bool) -> Result<bool, String> {
        if c.sent < self.request(c).len() {
            return Err("response before the request was sent".to_string());
        }
        c.inbuf.extend_from_slice(&self.scratch[..n]);
        let Some(len) = http::message_len(&c.inbuf)? else {
            return Ok(false);
        };
        match len.cmp(&c.inbuf.len()) {
            std::cmp::Ordering::Greater => Ok(false),
            std::cmp::Ordering::Less => Err("bytes after the response (none were requested)".to_string()),
            std::cmp::Ordering::Equal => {
                if check_body && !http::same_response(&c.inbuf, http::RESPONSE) {
                    return Err(format!(
                        "response differs from the fixed one: {:?}",
                        String::from_utf8_lossy(&c.inbuf)
                    ));
                }
                match http::status(&c.inbuf) {
                    Some(200) => Ok(true),
                    s => Err(format!("status {s:?}")),
                }
            }
        }
    }
}

/// Runs the load; prints `START`, then the JSON result line.
pub fn run(opts: &Options) -> Result<(), String> {
    let mut epoll = Epoll::new().map_err(|e| format!("epoll: {e}"))?;
    let size = match opts.kind {
        Kind::Echo { size } => size,
        Kind::Http { .. } => 0,
    };
    let mut load = Load {
        kind: &opts.kind,
        pattern: (0..PERIOD + size).map(|i| (i % PERIOD) as u8).collect(),
        scratch: vec![0; 256 * 1024],
        measuring: false,
        requests: 0,
        latencies_ns: Vec::with_capacity(1 << 20),
    };
    let mut conns: Vec<Option<Conn>> = Vec::with_capacity(opts.conns);
    for id in 0..opts.conns {
        let stream = Stream::connect(&opts.addr).map_err(|e| format!("connect to {}: {e}", opts.addr))?;
        stream
            .set_nonblocking(true)
            .map_err(|e| format!("set_nonblocking: {e}"))?;
        epoll
            .add(stream.as_raw_fd(), id as u64, sys::READ_WRITE)
            .map_err(|e| format!("epoll_ctl: {e}"))?;
        conns.push(Some(Conn {
            stream,
            offset: 0,
            seq: id,
            sent: 0,
            received: 0,
            inbuf: Vec::new(),
            started: Instant::now(),
            want_out: true,
        }));
    }

    let mut errors = 0u64;
    let mut first_error = String::new();
    let mut alive = opts.conns;
    let begin = Instant::now();
    for (id, slot) in conns.iter_mut().enumerate() {
        if let Some(c) = slot.as_mut() {
            load.start_request(c, id);
        }
    }
    // The first request of every connection is written by its first (OUT) event.
    let warm_end = begin + Duration::from_secs_f64(opts.warmup);
    let end = warm_end + Duration::from_secs_f64(opts.duration);
    let mut window_start = begin;
    let mut events = Vec::new();
    loop {
        let now = Instant::now();
        if !load.measuring && now >= warm_end {
            load.measuring = true;
            window_start = now;
            println!("START");
        }
        if now >= end || alive == 0 {
            break;
        }
        let deadline = if load.measuring { end } else { warm_end };
        let wait = deadline.saturating_duration_since(now).as_micros().div_ceil(1000);
        epoll
            .wait(&mut events, i32::try_from(wait).unwrap_or(i32::MAX).max(1))
            .map_err(|e| format!("epoll_wait: {e}"))?;
        for &(token, _) in &events {
            let id = usize::try_from(token).unwrap_or(usize::MAX);
            let Some(c) = conns.get_mut(id).and_then(Option::as_mut) else {
                continue;
            };
            let result = load.drive(c, id).and_then(|()| {
                // Ask for writability exactly while a request is partly written.
                let blocked = c.sent < load.request(c).len();
                if blocked != c.want_out {
                    c.want_out = blocked;
                    let interest = if blocked { sys::READ_WRITE } else { sys::READ };
                    epoll
                        .modify(c.stream.as_raw_fd(), token, interest)
                        .map_err(|e| format!("epoll_ctl: {e}"))?;
                }
                Ok(())
            });
            if let Err(e) = result {
                errors += 1;
                if first_error.is_empty() {
                    first_error = e;
                }
                conns[id] = None; // dropping the stream closes it, which also leaves epoll
                alive -= 1;
            }
        }
    }
    let seconds = if load.measuring {
        window_start.elapsed().as_secs_f64()
    } else {
        0.0
    };
    report(&load, seconds, errors, &first_error, opts);
    Ok(())
}

fn report(load: &Load, seconds: f64, errors: u64, first_error: &str, opts: &Options) {
    let (mode, size) = match opts.kind {
        Kind::Echo { size } => ("echo", size),
        Kind::Http { .. } => ("http", 0),
    };
    print_result(&Summary {
        mode,
        addr: &opts.addr.to_string(),
        conns: opts.conns,
        size,
        requests: load.requests,
        seconds,
        latencies_ns: &load.latencies_ns,
        errors,
        first_error,
        lost: 0,
        late: 0,
    });
}

/// What a measured window produced, for the JSON result line.
pub struct Summary<'a> {
    pub mode: &'a str,
    pub addr: &'a str,
    pub conns: usize,
    pub size: usize,
    pub requests: u64,
    pub seconds: f64,
    pub latencies_ns: &'a [u64],
    pub errors: u64,
    pub first_error: &'a str,
    /// UDP: requests given up on after the timeout (and sent anew); 0 for TCP.
    pub lost: u64,
    /// UDP: echoes that arrived after their request was given up on; 0 for TCP.
    pub late: u64,
}

/// Prints the JSON result line.
pub fn print_result(s: &Summary) {
    let mut lat = s.latencies_ns.to_vec();
    lat.sort_unstable();
    let pct = |p: usize| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        lat[(lat.len() * p / 100).min(lat.len() - 1)] as f64 / 1000.0
    };
    let rps = if s.seconds > 0.0 {
        s.requests as f64 / s.seconds
    } else {
        0.0
    };
    println!(
        "{{\"mode\": \"{}\", \"addr\": \"{}\", \"conns\": {}, \"size\": {}, \"requests\": {}, \
         \"seconds\": {:.6}, \"rps\": {rps:.1}, \"p50_us\": {:.1}, \"p99_us\": {:.1}, \
         \"errors\": {}, \"first_error\": \"{}\", \"lost\": {}, \"late\": {}}}",
        s.mode,
        json_escape(s.addr),
        s.conns,
        s.size,
        s.requests,
        s.seconds,
        pct(50),
        pct(99),
        s.errors,
        json_escape(s.first_error),
        s.lost,
        s.late,
    );
}

pub fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Reads from stdin until EOF.
pub fn wait_for_stdin_eof() {
    let mut sink = [0u8; 256];
    let mut stdin = io::stdin();
    loop {
        match stdin.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
