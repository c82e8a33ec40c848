//! The TLS rows: `client tls`, `client tls-handshake` and `server tls`, on
//! rustls (the ring provider) over the same machinery as the plain modes:
//! one thread, one edge-triggered epoll instance, non-blocking sockets with
//! TCP_NODELAY, writability asked for only while TLS output waits.
//!
//! The client verifies the server for real: the certificate must chain to
//! the PEM file given with `--ca` (the benchmark's self-signed certificate)
//! and be valid for the name `localhost`.
//!
//! - `client tls`: the echo client over TLS. Each connection does its
//!   handshake once (during the warm-up), then sends `--size` bytes of
//!   application data, reads exactly that many back, compares every byte
//!   with what was sent (the same pattern as the plain echo client), repeats.
//! - `client tls-handshake`: `--conns` workers, each a loop of whole
//!   connections: TCP connect, a full TLS handshake (session resumption
//!   disabled, so never an abbreviated one), one `--size`-byte echo (16 by
//!   default), `close_notify`, then the server's `close_notify` and EOF, then
//!   close. A "request" is one such connection; its latency runs from
//!   `connect` to the server's EOF.
//! - `server tls`: the limit server: every byte of application data read is
//!   written back; a `close_notify` is answered with one, then the
//!   connection is closed.
//!
//! A server that does not speak TLS at all (a plaintext echo server that
//! sends the ClientHello back, as a loop that ignores `ssl=` does) fails the
//! handshake with an error that says `does not speak TLS`.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

use crate::client::{print_result, Summary, PERIOD};
use crate::net::{Addr, Stream};
use crate::serve::{self, Slots, LISTENER};
use crate::sys::{self, Epoll};

/// The name the benchmark certificate is issued to and the client verifies.
pub const SERVER_NAME: &str = "localhost";

/// What `error_message` says when the peer answered the ClientHello in plaintext.
pub const NOT_TLS: &str = "does not speak TLS";

pub struct Options {
    pub addr: Addr,
    /// PEM file of the certificate(s) to trust.
    pub ca: std::path::PathBuf,
    pub conns: usize,
    pub size: usize,
    pub duration: f64,
    pub warmup: f64,
    /// A fresh connection (full handshake, one echo, shutdown) per request.
    pub handshake: bool,
}

/// ring's provider as it comes: TLS 1.3 first, AES-256-GCM-SHA384 the first
/// suite, which is also what the stdlib (OpenSSL) servers pick.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration trusting the certificates in `ca`; `resume` false
/// disables session resumption (every handshake is a full one).
pub fn client_config(ca: &Path, resume: bool) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable trust anchor: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate", ca.display()));
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    if !resume {
        config.resumption = Resumption::disabled();
    }
    Ok(Arc::new(config))
}

/// A server configuration presenting the chain in `cert` with the key in `key`.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("certificate and key: {e}"))?;
    Ok(Arc::new(config))
}

/// Writes queued TLS output until there is none (true) or the socket is full (false).
fn flush_tls<D>(tls: &mut rustls::ConnectionCommon<D>, stream: &mut Stream) -> io::Result<bool> {
    while tls.wants_write() {
        match tls.write_tls(stream) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Reads once; `None` on EAGAIN.
fn read_some(stream: &mut Stream, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        match stream.read(buf) {
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

struct Conn {
    stream: Stream,
    tls: ClientConnection,
    /// The pattern offset of the request in flight.
    offset: usize,
    seq: usize,
    /// A request was written and its echo is not complete yet.
    in_flight: bool,
    received: usize,
    /// Echo: when the request in flight was written; handshake: when `connect` began.
    started: Instant,
    /// Handshake mode: our `close_notify` is queued; waiting for the server's EOF.
    closing: bool,
    /// Registered for writability (TLS output is waiting).
    want_out: bool,
    /// The first bytes the server sent (to recognise a plaintext echo).
    first: Vec<u8>,
}

struct Load<'a> {
    opts: &'a Options,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    /// `PERIOD + size` bytes; a request is `pattern[offset..offset + size]`.
    pattern: Vec<u8>,
    /// Ciphertext as read from the socket.
    raw: Vec<u8>,
    /// Plaintext out of rustls.
    plain: Vec<u8>,
    measuring: bool,
    requests: u64,
    latencies_ns: Vec<u64>,
}

impl Load<'_> {
    /// A new connection (blocking connect, then non-blocking), its ClientHello queued.
    fn connect(&self, id: usize) -> Result<Conn, String> {
        let started = Instant::now();
        let stream = Stream::connect(&self.opts.addr).map_err(|e| format!("connect to {}: {e}", self.opts.addr))?;
        stream
            .set_nonblocking(true)
            .map_err(|e| format!("set_nonblocking: {e}"))?;
        let mut tls =
            ClientConnection::new(self.config.clone(), self.name.clone()).map_err(|e| format!("TLS client: {e}"))?;
        // A whole 100 KiB request goes into rustls at once.
        tls.set_buffer_limit(None);
        Ok(Conn {
            stream,
            tls,
            offset: 0,
            seq: id,
            in_flight: false,
            received: 0,
            started,
            closing: false,
            want_out: false,
            first: Vec::new(),
        })
    }

    fn start_request(&self, c: &mut Conn, id: usize) -> Result<(), String> {
        c.seq += 1;
        c.offset = (id * 7 + c.seq * 113) % PERIOD;
        c.received = 0;
        c.in_flight = true;
        if !self.opts.handshake {
            c.started = Instant::now();
        }
        let size = self.opts.size;
        c.tls
            .writer()
            .write_all(&self.pattern[c.offset..c.offset + size])
            .map_err(|e| format!("TLS write: {e}"))
    }

    fn complete(&mut self, c: &Conn) {
        if self.measuring {
            self.requests += 1;
            self.latencies_ns
                .push(u64::try_from(c.started.elapsed().as_nanos()).unwrap_or(u64::MAX));
        }
    }

    /// Makes all the progress `c` allows, returning after EAGAIN on read (as
    /// edge triggering needs). Ok(true): a handshake-mode connection is over
    /// (the server closed after the shutdown) and counted.
    fn drive(&mut self, c: &mut Conn, id: usize) -> Result<bool, String> {
        loop {
            if !c.in_flight && !c.closing && !c.tls.is_handshaking() {
                self.start_request(c, id)?;
            }
            flush_tls(&mut *c.tls, &mut c.stream).map_err(|e| format!("write: {e}"))?;
            let n = match read_some(&mut c.stream, &mut self.raw).map_err(|e| format!("read: {e}"))? {
                None => return Ok(false),
                Some(0) if c.closing => {
                    self.complete(c);
                    return Ok(true);
                }
                Some(0) if c.tls.is_handshaking() => {
                    return Err("connection closed by the server during the TLS handshake".to_string())
                }
                Some(0) => return Err("connection closed by the server".to_string()),
                Some(n) => n,
            };
            if c.first.len() < 6 {
                let k = n.min(6 - c.first.len());
                c.first.extend_from_slice(&self.raw[..k]);
            }
            let raw = std::mem::take(&mut self.raw);
            let fed = self.feed(c, id, &raw[..n]);
            self.raw = raw;
            fed?;
        }
    }

    /// Hands ciphertext to rustls and consumes the plaintext that comes out.
    fn feed(&mut self, c: &mut Conn, id: usize, mut rd: &[u8]) -> Result<(), String> {
        while !rd.is_empty() {
            match c.tls.read_tls(&mut rd) {
                Ok(0) => break, // after the server's close_notify: nothing more is read
                Ok(_) => {}
                Err(e) => return Err(format!("TLS read: {e}")),
            }
            if let Err(e) = c.tls.process_new_packets() {
                let _ = flush_tls(&mut *c.tls, &mut c.stream); // the alert, if any
                return Err(self.error_message(c, &e));
            }
            self.take_plaintext(c, id)?;
        }
        Ok(())
    }

    /// Consumes the plaintext rustls has decrypted, checking it against the request.
    fn take_plaintext(&mut self, c: &mut Conn, id: usize) -> Result<(), String> {
        let size = self.opts.size;
        loop {
            let n = match c.tls.reader().read(&mut self.plain) {
                Ok(0) if c.closing => return Ok(()),
                Ok(0) => return Err("the server ended the TLS session (close_notify)".to_string()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(format!("TLS read: {e}")),
            };
            if !c.in_flight {
                return Err(format!("{n} unexpected bytes from the server"));
            }
            if c.received + n > size {
                return Err(format!("received {} bytes, only {size} sent", c.received + n));
            }
            let start = c.offset + c.received;
            if self.plain[..n] != self.pattern[start..start + n] {
                return Err(format!("corrupted echo at byte {} of {size}", c.received));
            }
            c.received += n;
            if c.received == size {
                c.in_flight = false;
                if self.opts.handshake {
                    c.tls.send_close_notify();
                    c.closing = true;
                } else {
                    self.complete(c);
                    self.start_request(c, id)?;
                }
            }
        }
    }

    fn error_message(&self, c: &Conn, e: &rustls::Error) -> String {
        // A TLS record of type handshake (22) whose first message is a
        // ClientHello (1): the server sent ours back.
        let echoed_hello = c.first.len() == 6 && c.first[0] == 22 && c.first[5] == 1;
        if c.tls.is_handshaking() && echoed_hello {
            format!("the server {NOT_TLS}: it sent the ClientHello back in plaintext (rustls: {e})")
        } else if c.tls.is_handshaking() && c.first.first().is_some_and(|&b| !(20..=23).contains(&b)) {
            format!(
                "the server {NOT_TLS}: its first bytes {:?} are no TLS record (rustls: {e})",
                c.first
            )
        } else if c.tls.is_handshaking() {
            format!("TLS handshake: {e}")
        } else {
            format!("TLS: {e}")
        }
    }
}

/// Runs the load; prints `START`, then the JSON result line.
pub fn run_client(opts: &Options) -> Result<(), String> {
    let mut epoll = Epoll::new().map_err(|e| format!("epoll: {e}"))?;
    let name = ServerName::try_from(SERVER_NAME).map_err(|e| format!("server name: {e}"))?;
    let mut load = Load {
        opts,
        config: client_config(&opts.ca, !opts.handshake)?,
        name,
        pattern: (0..PERIOD + opts.size).map(|i| (i % PERIOD) as u8).collect(),
        raw: vec![0; 256 * 1024],
        plain: vec![0; 256 * 1024],
        measuring: false,
        requests: 0,
        latencies_ns: Vec::with_capacity(1 << 20),
    };
    let mut conns: Vec<Option<Conn>> = Vec::with_capacity(opts.conns);
    for id in 0..opts.conns {
        conns.push(Some(load.connect(id)?));
    }

    let mut errors = 0u64;
    let mut first_error = String::new();
    let mut alive = opts.conns;
    let begin = Instant::now();
    let warm_end = begin + Duration::from_secs_f64(opts.warmup);
    let end = warm_end + Duration::from_secs_f64(opts.duration);
    let mut window_start = begin;
    let mut events: Vec<(u64, u32)> = (0..opts.conns).map(|id| (id as u64, 0)).collect();
    let mut fresh = true; // the first round drives every connection: registers it and sends its ClientHello
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
        if !fresh {
            let deadline = if load.measuring { end } else { warm_end };
            let wait = deadline.saturating_duration_since(now).as_micros().div_ceil(1000);
            epoll
                .wait(&mut events, i32::try_from(wait).unwrap_or(i32::MAX).max(1))
                .map_err(|e| format!("epoll_wait: {e}"))?;
        }
        for &(token, _) in &events {
            let id = usize::try_from(token).unwrap_or(usize::MAX);
            let Some(c) = conns.get_mut(id).and_then(Option::as_mut) else {
                continue;
            };
            let result = (|| {
                if fresh {
                    add(&epoll, c, token)?;
                }
                while load.drive(c, id)? {
                    // Handshake mode: the connection is over; the next one takes its place.
                    *c = load.connect(id)?; // dropping the old stream closes it (and leaves epoll)
                    add(&epoll, c, token)?;
                }
                // Ask for writability exactly while TLS output waits.
                let blocked = c.tls.wants_write();
                if blocked != c.want_out {
                    c.want_out = blocked;
                    let interest = if blocked { sys::READ_WRITE } else { sys::READ };
                    epoll
                        .modify(c.stream.as_raw_fd(), token, interest)
                        .map_err(|e| format!("epoll_ctl: {e}"))?;
                }
                Ok::<(), String>(())
            })();
            if let Err(e) = result {
                errors += 1;
                if first_error.is_empty() {
                    first_error = e;
                }
                conns[id] = None;
                alive -= 1;
            }
        }
        fresh = false;
    }
    let seconds = if load.measuring {
        window_start.elapsed().as_secs_f64()
    } else {
        0.0
    };
    print_result(&Summary {
        mode: if opts.handshake { "tls-handshake" } else { "tls" },
        addr: &opts.addr.to_string(),
        conns: opts.conns,
        size: opts.size,
        requests: load.requests,
        seconds,
        latencies_ns: &load.latencies_ns,
        errors,
        first_error: &first_error,
        lost: 0,
        late: 0,
    });
    Ok(())
}

/// Registers a new connection (edge-triggered readability).
fn add(epoll: &Epoll, c: &mut Conn, token: u64) -> Result<(), String> {
    c.want_out = false;
    epoll
        .add(c.stream.as_raw_fd(), token, sys::READ)
        .map_err(|e| format!("epoll_ctl: {e}"))
}

struct ServerConn {
    stream: Stream,
    tls: ServerConnection,
    /// Registered for writability (TLS output is waiting).
    want_out: bool,
    /// The client's close_notify came and ours is queued: close once flushed.
    closing: bool,
}

/// The TLS echo limit server: serves until killed; prints `READY <addr>` once listening.
pub fn run_server(addr: &Addr, cert: &Path, key: &Path) -> Result<(), String> {
    let config = server_config(cert, key)?;
    let (listener, mut epoll) = serve::listen(addr)?;
    let mut conns: Slots<ServerConn> = Slots::new();
    let mut raw = vec![0u8; 256 * 1024];
    let mut plain = vec![0u8; 256 * 1024];
    let mut events = Vec::new();
    loop {
        epoll.wait(&mut events, -1).map_err(|e| format!("epoll_wait: {e}"))?;
        for &(token, _) in &events {
            if token == LISTENER {
                while let Some(stream) = serve::accept_next(&listener) {
                    let mut tls = match ServerConnection::new(config.clone()) {
                        Ok(t) => t,
                        Err(e) => {
                            eprintln!("TLS server: {e}");
                            continue;
                        }
                    };
                    tls.set_buffer_limit(None); // an echo of whatever arrived is queued whole
                    let fd = stream.as_raw_fd();
                    let conn = ServerConn {
                        stream,
                        tls,
                        want_out: false,
                        closing: false,
                    };
                    conns.add(&epoll, fd, conn);
                }
                continue;
            }
            let Some(c) = conns.get_mut(token) else {
                continue;
            };
            let keep = drive_server(c, &mut raw, &mut plain);
            let want_out = c.tls.wants_write();
            let ok = matches!(keep, Ok(true))
                && (want_out == c.want_out || {
                    c.want_out = want_out;
                    let interest = if want_out { sys::READ_WRITE } else { sys::READ };
                    epoll.modify(c.stream.as_raw_fd(), token, interest).is_ok()
                });
            if !ok {
                conns.remove(token);
            }
        }
    }
}

/// Ok(false): close the connection. Returns only after EAGAIN (on read, or
/// on write while output is parked, when reading stops until it is flushed).
fn drive_server(c: &mut ServerConn, raw: &mut [u8], plain: &mut [u8]) -> io::Result<bool> {
    loop {
        if !flush_tls(&mut *c.tls, &mut c.stream)? {
            return Ok(true);
        }
        if c.closing {
            return Ok(false);
        }
        let n = match read_some(&mut c.stream, raw)? {
            None => return Ok(true),
            Some(0) => return Ok(false),
            Some(n) => n,
        };
        let mut rd = &raw[..n];
        while !rd.is_empty() && !c.closing {
            if c.tls.read_tls(&mut rd)? == 0 {
                break;
            }
            if let Err(e) = c.tls.process_new_packets() {
                let _ = flush_tls(&mut *c.tls, &mut c.stream); // the alert
                return Err(io::Error::other(e));
            }
            loop {
                match c.tls.reader().read(plain) {
                    Ok(0) => {
                        c.tls.send_close_notify();
                        c.closing = true;
                        break;
                    }
                    Ok(m) => c.tls.writer().write_all(&plain[..m])?,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
    }
}
