//! netbench: the network benchmarks' load generator and reference servers.
//!
//! One thread, one epoll instance per process, non-blocking sockets with
//! TCP_NODELAY, no dependencies beyond std and libc (and rustls with the ring
//! provider for the TLS modes): the client costs the fewest cycles per
//! request we know how to spend, so it is not the bottleneck, and the
//! servers are the limit a loop is measured against.
//!
//! ```text
//! netbench client echo --addr ADDR [--conns 10] [--size 1024] [--duration 5] [--warmup 1]
//! netbench client http --addr ADDR [--conns 10] [--duration 5] [--warmup 1] [--any-response]
//! netbench client udp --addr HOST:PORT [--conns 10] [--size 64] [--duration 5] [--warmup 1] [--timeout 0.1]
//! netbench client idle --addr ADDR [--conns 10000]
//! netbench client tls --addr ADDR --ca PEM [--conns 10] [--size 1024] [--duration 5] [--warmup 1]
//! netbench client tls-handshake --addr ADDR --ca PEM [--conns 10] [--size 16] [--duration 5] [--warmup 1]
//! netbench server echo --addr ADDR
//! netbench server http --addr ADDR
//! netbench server udp --addr HOST:PORT
//! netbench server tls --addr ADDR --cert PEM --key PEM
//! netbench server tls-openssl --addr ADDR --cert PEM --key PEM [--bio fd|socket|mem]
//! ```
//!
//! ADDR is `HOST:PORT` or `unix:PATH`; durations are seconds (fractions
//! allowed).
//!
//! - `client echo`: `--conns` connections, each a ping-pong loop: send
//!   `--size` bytes, read exactly that many back, compare them with what was
//!   sent, repeat. `client http`: HTTP/1.1 keep-alive `GET /`, one request in
//!   flight per connection; the status line and Content-Length are parsed and
//!   the response must be the fixed one the reference server sends, header
//!   names compared without regard to case (unless `--any-response`). Both print `START` when the measured window opens
//!   (after `--warmup` seconds of the same load), then one JSON line when it
//!   closes: `mode addr conns size requests seconds rps p50_us p99_us errors
//!   first_error`. A connection that fails (corrupted or short echo, unexpected
//!   response, reset, EOF) is closed and counted in `errors`. Exit status 0
//!   when the run happened, whatever `errors` says; 2 on bad usage; 1 when
//!   connecting failed.
//! - `client udp`: `--conns` UDP sockets, each with one datagram of
//!   `--size` bytes in flight; every echo is compared with what was sent. A
//!   datagram not echoed within `--timeout` seconds is given up on and the
//!   next one sent (counted in `lost`; an echo that comes after that, in
//!   `late`). Same output as `client echo`, plus `lost` and `late` (0 in the
//!   TCP modes). See `src/udp.rs`.
//! - `client idle`: opens `--conns` connections and completes one small echo
//!   round trip on each, prints `READY <n>`, holds them until stdin is closed,
//!   then closes them and exits.
//! - `client tls`: `client echo` over TLS (rustls, ring provider; the server
//!   certificate must chain to `--ca` and be valid for `localhost`).
//!   `client tls-handshake`: `--conns` workers, each opening connection after
//!   connection: connect, full handshake (no resumption), one `--size`-byte
//!   echo, close_notify, the server's EOF; a request is one whole connection.
//!   Same output as `client echo`. See `src/tls.rs`.
//! - `server echo` / `server http` / `server udp`: serve until killed; print
//!   `READY <addr>` once listening (with port 0, the port the kernel picked).
//!   `server udp` is one blocking socket echoing every datagram with one
//!   `recvfrom` and one `sendto`. `server tls` echoes application data
//!   over TLS with the certificate chain `--cert` and the key `--key`;
//!   `server tls-openssl` does the same on the system's OpenSSL 3 (the
//!   library CPython's `_ssl` uses), loaded at run time. See `src/ossl.rs`.
//!
//! Every command raises RLIMIT_NOFILE's soft limit to the hard limit first.

mod client;
mod http;
mod idle;
mod net;
mod ossl;
mod serve;
mod server;
mod sys;
mod tls;
mod udp;

use std::process::ExitCode;

use net::Addr;

const USAGE: &str = "usage:
  netbench client echo --addr ADDR [--conns 10] [--size 1024] [--duration 5] [--warmup 1]
  netbench client http --addr ADDR [--conns 10] [--duration 5] [--warmup 1] [--any-response]
  netbench client udp --addr HOST:PORT [--conns 10] [--size 64] [--duration 5] [--warmup 1] [--timeout 0.1]
  netbench client idle --addr ADDR [--conns 10000]
  netbench client tls --addr ADDR --ca PEM [--conns 10] [--size 1024] [--duration 5] [--warmup 1]
  netbench client tls-handshake --addr ADDR --ca PEM [--conns 10] [--size 16] [--duration 5] [--warmup 1]
  netbench server echo|http --addr ADDR
  netbench server udp --addr HOST:PORT
  netbench server tls --addr ADDR --cert PEM --key PEM
  netbench server tls-openssl --addr ADDR --cert PEM --key PEM [--bio fd|socket|mem]
ADDR is HOST:PORT or unix:PATH";

/// The `--name value` options and `--flag`s after the two subcommand words.
struct Flags {
    pairs: Vec<(String, String)>,
    switches: Vec<String>,
}

impl Flags {
    fn parse(args: &[String], switches: &[&str]) -> Result<Self, String> {
        let mut flags = Flags {
            pairs: Vec::new(),
            switches: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let Some(name) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument {a:?}"));
            };
            if switches.contains(&name) {
                flags.switches.push(name.to_string());
            } else {
                let v = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
                flags.pairs.push((name.to_string(), v.clone()));
            }
        }
        Ok(flags)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        self.get(name).map_or(Ok(default), |v| {
            v.parse().map_err(|_| format!("--{name}: bad number {v:?}"))
        })
    }

    fn addr(&self) -> Result<Addr, String> {
        Addr::parse(self.get("addr").ok_or("--addr is required")?)
    }

    /// Fails on an option the command does not take (a typo must not pass silently).
    fn only(&self, known: &[&str]) -> Result<(), String> {
        match self.pairs.iter().find(|(n, _)| !known.contains(&n.as_str())) {
            Some((n, _)) => Err(format!("unknown option --{n}")),
            None => Ok(()),
        }
    }
}

enum Failure {
    Usage(String),
    Run(String),
}

fn run(args: &[String]) -> Result<(), Failure> {
    let usage = Failure::Usage;
    let (role, what) = match args {
        [r, w, ..] => (r.as_str(), w.as_str()),
        _ => return Err(usage(String::new())),
    };
    let flags = Flags::parse(&args[2..], &["any-response"]).map_err(usage)?;
    let addr = flags.addr().map_err(usage)?;
    match (role, what) {
        ("client", "echo" | "http") => {
            flags
                .only(&["addr", "conns", "size", "duration", "warmup"])
                .map_err(usage)?;
            let kind = if what == "echo" {
                client::Kind::Echo {
                    size: flags.num("size", 1024).map_err(usage)?,
                }
            } else {
                let request = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", addr.host()).into_bytes();
                client::Kind::Http {
                    request,
                    check_body: !flags.switches.iter().any(|s| s == "any-response"),
                }
            };
            let opts = client::Options {
                conns: flags.num("conns", 10).map_err(usage)?,
                duration: flags.num("duration", 5.0).map_err(usage)?,
                warmup: flags.num("warmup", 1.0).map_err(usage)?,
                addr,
                kind,
            };
            let positive = |x: f64| x.is_finite() && x > 0.0;
            if opts.conns == 0 || !positive(opts.duration) || !(opts.warmup == 0.0 || positive(opts.warmup)) {
                return Err(usage("--conns and --duration must be positive".to_string()));
            }
            if matches!(opts.kind, client::Kind::Echo { size: 0 }) {
                return Err(usage("--size must be positive".to_string()));
            }
            client::run(&opts).map_err(Failure::Run)
        }
        ("client", "udp") => {
            flags
                .only(&["addr", "conns", "size", "duration", "warmup", "timeout"])
                .map_err(usage)?;
            let opts = udp::Options {
                addr: addr.inet().map_err(usage)?,
                conns: flags.num("conns", 10).map_err(usage)?,
                size: flags.num("size", 64).map_err(usage)?,
                duration: flags.num("duration", 5.0).map_err(usage)?,
                warmup: flags.num("warmup", 1.0).map_err(usage)?,
                timeout: flags.num("timeout", 0.1).map_err(usage)?,
            };
            let positive = |x: f64| x.is_finite() && x > 0.0;
            if opts.conns == 0
                || !positive(opts.duration)
                || !positive(opts.timeout)
                || !(opts.warmup == 0.0 || positive(opts.warmup))
            {
                return Err(usage("--conns, --duration and --timeout must be positive".to_string()));
            }
            if opts.size == 0 || opts.size > udp::MAX_SIZE {
                return Err(usage(format!("--size must be 1 to {}", udp::MAX_SIZE)));
            }
            udp::run_client(&opts).map_err(Failure::Run)
        }
        ("client", "tls" | "tls-handshake") => {
            flags
                .only(&["addr", "conns", "size", "duration", "warmup", "ca"])
                .map_err(usage)?;
            let handshake = what == "tls-handshake";
            let opts = tls::Options {
                ca: flags
                    .get("ca")
                    .ok_or_else(|| usage("--ca is required".to_string()))?
                    .into(),
                conns: flags.num("conns", 10).map_err(usage)?,
                size: flags.num("size", if handshake { 16 } else { 1024 }).map_err(usage)?,
                duration: flags.num("duration", 5.0).map_err(usage)?,
                warmup: flags.num("warmup", 1.0).map_err(usage)?,
                addr,
                handshake,
            };
            let positive = |x: f64| x.is_finite() && x > 0.0;
            if opts.conns == 0
                || opts.size == 0
                || !positive(opts.duration)
                || !(opts.warmup == 0.0 || positive(opts.warmup))
            {
                return Err(usage("--conns, --size and --duration must be positive".to_string()));
            }
            tls::run_client(&opts).map_err(Failure::Run)
        }
        ("client", "idle") => {
            flags.only(&["addr", "conns"]).map_err(usage)?;
            idle::run(&addr, flags.num("conns", 10_000).map_err(usage)?).map_err(Failure::Run)
        }
        ("server", "echo" | "http") => {
            flags.only(&["addr"]).map_err(usage)?;
            let flavour = if what == "echo" {
                server::Flavour::Echo
            } else {
                server::Flavour::Http
            };
            server::run(&addr, flavour).map_err(Failure::Run)
        }
        ("server", "tls") => {
            flags.only(&["addr", "cert", "key"]).map_err(usage)?;
            let path = |name: &str| {
                flags
                    .get(name)
                    .map(std::path::PathBuf::from)
                    .ok_or_else(|| usage(format!("--{name} is required")))
            };
            tls::run_server(&addr, &path("cert")?, &path("key")?).map_err(Failure::Run)
        }
        ("server", "tls-openssl") => {
            flags.only(&["addr", "cert", "key", "bio"]).map_err(usage)?;
            let path = |name: &str| {
                flags
                    .get(name)
                    .map(std::path::PathBuf::from)
                    .ok_or_else(|| usage(format!("--{name} is required")))
            };
            let bio = match flags.get("bio").unwrap_or("fd") {
                "fd" => ossl::Bio::Fd,
                "socket" => ossl::Bio::Socket,
                "mem" => ossl::Bio::Mem,
                other => return Err(usage(format!("--bio must be fd, socket or mem, not {other:?}"))),
            };
            ossl::run_server(&addr, &path("cert")?, &path("key")?, bio).map_err(Failure::Run)
        }
        ("server", "udp") => {
            flags.only(&["addr"]).map_err(usage)?;
            udp::run_server(addr.inet().map_err(usage)?).map_err(Failure::Run)
        }
        _ => Err(usage(format!("unknown command {role} {what}"))),
    }
}

fn main() -> ExitCode {
    sys::raise_nofile_limit();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            if !msg.is_empty() {
                eprintln!("netbench: {msg}");
            }
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Run(msg)) => {
            eprintln!("netbench: {msg}");
            ExitCode::from(1)
        }
    }
}
