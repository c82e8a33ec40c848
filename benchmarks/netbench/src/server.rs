//! The pure-Rust reference servers: one thread, one epoll instance
//! (edge-triggered; writability only while output is parked), non-blocking
//! sockets with TCP_NODELAY. They do the
//! least any server must do for the workload, so their rate is the limit
//! the machine and the client allow, and the distance to it is what a loop
//! costs.
//!
//! echo: every byte read is written back (a partial write parks the rest
//! and stops reading until it is flushed). http: every request (head plus
//! Content-Length body) is answered with [`http::RESPONSE`]; pipelined
//! requests are answered in order; `Connection: close` closes after the
//! response.
//!
//! Per connection the servers keep only the socket and two empty `Vec`s
//! until a write blocks or a request arrives in pieces: the idle-memory row
//! measures this floor.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;

use crate::http;
use crate::net::{Addr, Stream};
use crate::serve::{self, Slots, LISTENER};
use crate::sys::{self, Epoll};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Echo,
    Http,
}

struct Conn {
    stream: Stream,
    /// Bytes still to write.
    pending: Vec<u8>,
    /// HTTP: an incomplete request.
    inbuf: Vec<u8>,
    close_after_flush: bool,
    /// Registered for writability (output is parked).
    want_out: bool,
}

/// Serves until killed. Prints `READY <addr>` once listening.
pub fn run(addr: &Addr, flavour: Flavour) -> Result<(), String> {
    let (listener, mut epoll) = serve::listen(addr)?;
    let mut conns: Slots<Conn> = Slots::new();
    let mut scratch = vec![0u8; 256 * 1024];
    let mut events = Vec::new();
    loop {
        epoll.wait(&mut events, -1).map_err(|e| format!("epoll_wait: {e}"))?;
        for &(token, _) in &events {
            if token == LISTENER {
                while let Some(stream) = serve::accept_next(&listener) {
                    let fd = stream.as_raw_fd();
                    let conn = Conn {
                        stream,
                        pending: Vec::new(),
                        inbuf: Vec::new(),
                        close_after_flush: false,
                        want_out: false,
                    };
                    conns.add(&epoll, fd, conn);
                }
                continue;
            }
            let Some(c) = conns.get_mut(token) else {
                continue;
            };
            let keep = match flavour {
                Flavour::Echo => drive_echo(c, &mut scratch),
                Flavour::Http => drive_http(c, &mut scratch),
            };
            if !matches!(keep, Ok(true)) || update_interest(&epoll, c, token).is_err() {
                conns.remove(token);
            }
        }
    }
}

/// Asks for writability exactly while output is parked.
fn update_interest(epoll: &Epoll, c: &mut Conn, token: u64) -> io::Result<()> {
    let want_out = !c.pending.is_empty();
    if want_out != c.want_out {
        c.want_out = want_out;
        epoll.modify(
            c.stream.as_raw_fd(),
            token,
            if want_out { sys::READ_WRITE } else { sys::READ },
        )?;
    }
    Ok(())
}

/// Writes `pending` until it is empty (true) or the socket is full (false).
fn flush(stream: &mut Stream, pending: &mut Vec<u8>) -> io::Result<bool> {
    while !pending.is_empty() {
        match stream.write(pending) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                pending.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if pending.capacity() > 1 << 20 {
        *pending = Vec::new();
    }
    Ok(true)
}

/// Writes `data` now, parking in `pending` whatever the socket does not take.
fn send(stream: &mut Stream, pending: &mut Vec<u8>, data: &[u8]) -> io::Result<()> {
    let mut off = 0;
    while off < data.len() {
        match stream.write(&data[off..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    pending.extend_from_slice(&data[off..]);
    Ok(())
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

/// Ok(false): close the connection. Returns only after EAGAIN (on read, or
/// on write while output is parked), as edge triggering needs.
fn drive_echo(c: &mut Conn, scratch: &mut [u8]) -> io::Result<bool> {
    loop {
        if !flush(&mut c.stream, &mut c.pending)? {
            return Ok(true);
        }
        match read_some(&mut c.stream, scratch)? {
            None => return Ok(true),
            Some(0) => return Ok(false),
            Some(n) => send(&mut c.stream, &mut c.pending, &scratch[..n])?,
        }
    }
}

fn drive_http(c: &mut Conn, scratch: &mut [u8]) -> io::Result<bool> {
    loop {
        if !flush(&mut c.stream, &mut c.pending)? {
            return Ok(true);
        }
        if c.close_after_flush {
            return Ok(false);
        }
        let n = match read_some(&mut c.stream, scratch)? {
            None => return Ok(true),
            Some(0) => return Ok(false),
            Some(n) => n,
        };
        c.inbuf.extend_from_slice(&scratch[..n]);
        let mut used = 0;
        let mut answers = 0;
        while let Some(len) = http::message_len(&c.inbuf[used..]).map_err(io::Error::other)? {
            if used + len > c.inbuf.len() {
                break;
            }
            c.close_after_flush |= http::wants_close(&c.inbuf[used..used + len]);
            used += len;
            answers += 1;
            if c.close_after_flush {
                break;
            }
        }
        c.inbuf.drain(..used);
        if answers == 1 {
            send(&mut c.stream, &mut c.pending, http::RESPONSE)?;
        } else if answers > 1 {
            send(&mut c.stream, &mut c.pending, &http::RESPONSE.repeat(answers))?;
        }
    }
}
