//! `server tls-openssl`: the TLS echo limit server on the system's OpenSSL,
//! the library CPython's `_ssl` links, so the limit a loop keeping
//! `ssl.SSLContext` is measured against costs the same cryptography.
//!
//! libssl is opened at run time (`dlopen("libssl.so.3")`), so building
//! netbench needs no OpenSSL headers and a machine without OpenSSL 3 only
//! loses this mode. The context is what `ssl.SSLContext(PROTOCOL_TLS_SERVER)`
//! makes on OpenSSL 3.0 (its options, cipher list and minimum version; two
//! session tickets per handshake, OpenSSL's default as CPython's), so the
//! handshake and the records are the ones the Python servers produce.
//!
//! Same machinery as the other servers: one thread, one edge-triggered
//! epoll instance, writability asked for only while output waits. Every
//! byte of application data is written back; a `close_notify` is answered
//! with one, then the connection is closed. Three ways to connect OpenSSL to
//! the socket (`--bio`):
//! - `fd` (default): OpenSSL reads and writes the socket itself
//!   (`SSL_set_fd`), with read-ahead into a 256 KiB buffer, so one `read`
//!   brings in many records; each record goes out with its own `write`
//!   straight from OpenSSL's buffer. No memory BIO: the fewest copies.
//! - `socket`: OpenSSL reads the socket itself as in `fd`; its output
//!   collects in a memory BIO that goes out in one `send` from the BIO's
//!   buffer (fewer system calls, one more copy, and the BIO's reset
//!   zero-fills what it held).
//! - `mem`: memory BIOs both ways, as `ssl.SSLObject` (and so every loop's
//!   TLS over `_ssl`) has them: ciphertext `read` into a buffer, copied into
//!   the read BIO, output as in `socket`. The limit of that design without
//!   any Python, and the TLS rows' limit column in `benchmarks/net/run.py`.

use std::ffi::{c_char, c_int, c_long, c_void, CString};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::net::{Addr, Stream};
use crate::serve::{self, Slots, LISTENER};
use crate::sys;

/// How OpenSSL meets the socket (see the module's documentation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Bio {
    Fd,
    Socket,
    Mem,
}

type Ptr = *mut c_void;

/// The libssl (and, through its dependencies, libcrypto) entry points used.
struct Lib {
    tls_server_method: unsafe extern "C" fn() -> *const c_void,
    ctx_new: unsafe extern "C" fn(*const c_void) -> Ptr,
    ctx_use_chain_file: unsafe extern "C" fn(Ptr, *const c_char) -> c_int,
    ctx_use_key_file: unsafe extern "C" fn(Ptr, *const c_char, c_int) -> c_int,
    ctx_set_options: unsafe extern "C" fn(Ptr, u64) -> u64,
    ctx_set_cipher_list: unsafe extern "C" fn(Ptr, *const c_char) -> c_int,
    ctx_ctrl: unsafe extern "C" fn(Ptr, c_int, c_long, Ptr) -> c_long,
    ctx_set_read_buffer_len: unsafe extern "C" fn(Ptr, usize),
    ssl_new: unsafe extern "C" fn(Ptr) -> Ptr,
    ssl_free: unsafe extern "C" fn(Ptr),
    ssl_set_bio: unsafe extern "C" fn(Ptr, Ptr, Ptr),
    ssl_set_fd: unsafe extern "C" fn(Ptr, c_int) -> c_int,
    ssl_set_accept_state: unsafe extern "C" fn(Ptr),
    ssl_read_ex: unsafe extern "C" fn(Ptr, *mut u8, usize, *mut usize) -> c_int,
    ssl_write_ex: unsafe extern "C" fn(Ptr, *const u8, usize, *mut usize) -> c_int,
    ssl_get_error: unsafe extern "C" fn(Ptr, c_int) -> c_int,
    ssl_shutdown: unsafe extern "C" fn(Ptr) -> c_int,
    bio_new: unsafe extern "C" fn(*const c_void) -> Ptr,
    bio_s_mem: unsafe extern "C" fn() -> *const c_void,
    bio_new_socket: unsafe extern "C" fn(c_int, c_int) -> Ptr,
    bio_ctrl: unsafe extern "C" fn(Ptr, c_int, c_long, Ptr) -> c_long,
    bio_write: unsafe extern "C" fn(Ptr, *const c_void, c_int) -> c_int,
    err_clear_error: unsafe extern "C" fn(),
}

const SSL_FILETYPE_PEM: c_int = 1;
const SSL_ERROR_WANT_READ: c_int = 2;
const SSL_ERROR_WANT_WRITE: c_int = 3;
const SSL_ERROR_ZERO_RETURN: c_int = 6;
const SSL_CTRL_MODE: c_int = 33;
const SSL_CTRL_SET_READ_AHEAD: c_int = 41;
const SSL_CTRL_SET_MIN_PROTO_VERSION: c_int = 123;
const TLS1_2_VERSION: c_long = 0x0303;
const SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER: c_long = 2;
const SSL_MODE_AUTO_RETRY: c_long = 4;
const BIO_NOCLOSE: c_int = 0;
const BIO_CTRL_RESET: c_int = 1;
const BIO_CTRL_INFO: c_int = 3;
/// `ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).options` on OpenSSL 3.0 (CPython
/// 3.11-3.13): OP_ALL without DONT_INSERT_EMPTY_FRAGMENTS, NO_SSLv2/v3,
/// NO_COMPRESSION, CIPHER_SERVER_PREFERENCE, SINGLE_DH_USE/ECDH_USE.
const PYTHON_SERVER_OPTIONS: u64 = 0x8252_0050;
/// CPython's `PY_SSL_DEFAULT_CIPHER_STRING` (TLS 1.2 suites; TLS 1.3 keeps OpenSSL's).
const PYTHON_CIPHERS: &str = "@SECLEVEL=2:ECDH+AESGCM:ECDH+CHACHA20:ECDH+AES:DHE+AES:!aNULL:!eNULL:!aDSS:!SHA1:!AESCCM";
/// OpenSSL's read buffer with read-ahead (`--bio socket`), and the ciphertext buffer (`--bio mem`).
const READ_BUFFER: usize = 256 * 1024;

/// A function pointer of type `T` from a symbol's address.
///
/// # Safety
/// `p` must be the address of a function whose signature is `T`.
unsafe fn fn_ptr<T: Copy>(p: *mut c_void) -> T {
    assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: same size (checked), and the caller vouches for the signature.
    unsafe { std::mem::transmute_copy(&p) }
}

impl Lib {
    fn load() -> Result<Lib, String> {
        let name = c"libssl.so.3";
        // SAFETY: a NUL-terminated name; the handle is never closed, so the
        // function pointers taken from it stay valid for the process's life.
        let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err("cannot load libssl.so.3 (OpenSSL 3): the tls-openssl server needs it".to_string());
        }
        let sym = |s: &str| -> Result<*mut c_void, String> {
            let c = CString::new(s).map_err(|e| e.to_string())?;
            // SAFETY: `handle` is a live dlopen handle and `c` a NUL-terminated name.
            let p = unsafe { libc::dlsym(handle, c.as_ptr()) };
            if p.is_null() {
                Err(format!("libssl.so.3 has no {s}"))
            } else {
                Ok(p)
            }
        };
        macro_rules! f {
            ($name:literal) => {
                // SAFETY: the symbol is the OpenSSL 3 function of that name, whose C
                // signature is the field's type (see OpenSSL's ssl.h and bio.h).
                unsafe { fn_ptr(sym($name)?) }
            };
        }
        Ok(Lib {
            tls_server_method: f!("TLS_server_method"),
            ctx_new: f!("SSL_CTX_new"),
            ctx_use_chain_file: f!("SSL_CTX_use_certificate_chain_file"),
            ctx_use_key_file: f!("SSL_CTX_use_PrivateKey_file"),
            ctx_set_options: f!("SSL_CTX_set_options"),
            ctx_set_cipher_list: f!("SSL_CTX_set_cipher_list"),
            ctx_ctrl: f!("SSL_CTX_ctrl"),
            ctx_set_read_buffer_len: f!("SSL_CTX_set_default_read_buffer_len"),
            ssl_new: f!("SSL_new"),
            ssl_free: f!("SSL_free"),
            ssl_set_bio: f!("SSL_set_bio"),
            ssl_set_fd: f!("SSL_set_fd"),
            ssl_set_accept_state: f!("SSL_set_accept_state"),
            ssl_read_ex: f!("SSL_read_ex"),
            ssl_write_ex: f!("SSL_write_ex"),
            ssl_get_error: f!("SSL_get_error"),
            ssl_shutdown: f!("SSL_shutdown"),
            bio_new: f!("BIO_new"),
            bio_s_mem: f!("BIO_s_mem"),
            bio_new_socket: f!("BIO_new_socket"),
            bio_ctrl: f!("BIO_ctrl"),
            bio_write: f!("BIO_write"),
            err_clear_error: f!("ERR_clear_error"),
        })
    }

    /// The server context: CPython's defaults for PROTOCOL_TLS_SERVER, the chain and key given.
    fn context(&self, cert: &Path, key: &Path, bio: Bio) -> Result<Ptr, String> {
        let path = |p: &Path| {
            CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| format!("{}: NUL in the path", p.display()))
        };
        let (cert_c, key_c) = (path(cert)?, path(key)?);
        let ciphers = CString::new(PYTHON_CIPHERS).map_err(|e| e.to_string())?;
        // SAFETY: the functions are OpenSSL's, called with a context they made
        // and NUL-terminated strings that outlive the calls.
        unsafe {
            let ctx = (self.ctx_new)((self.tls_server_method)());
            if ctx.is_null() {
                return Err("SSL_CTX_new failed".to_string());
            }
            (self.ctx_set_options)(ctx, PYTHON_SERVER_OPTIONS);
            if (self.ctx_set_cipher_list)(ctx, ciphers.as_ptr()) != 1 {
                return Err("SSL_CTX_set_cipher_list failed".to_string());
            }
            (self.ctx_ctrl)(
                ctx,
                SSL_CTRL_SET_MIN_PROTO_VERSION,
                TLS1_2_VERSION,
                std::ptr::null_mut(),
            );
            let mode = SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_AUTO_RETRY;
            (self.ctx_ctrl)(ctx, SSL_CTRL_MODE, mode, std::ptr::null_mut());
            if bio != Bio::Mem {
                (self.ctx_ctrl)(ctx, SSL_CTRL_SET_READ_AHEAD, 1, std::ptr::null_mut());
                (self.ctx_set_read_buffer_len)(ctx, READ_BUFFER);
            }
            if (self.ctx_use_chain_file)(ctx, cert_c.as_ptr()) != 1 {
                return Err(format!("{}: not a usable certificate chain", cert.display()));
            }
            if (self.ctx_use_key_file)(ctx, key_c.as_ptr(), SSL_FILETYPE_PEM) != 1 {
                return Err(format!("{}: not a usable key for the certificate", key.display()));
            }
            Ok(ctx)
        }
    }
}

struct Conn {
    lib: &'static Lib,
    stream: Stream,
    ssl: Ptr,
    /// `--bio mem`: the read BIO ciphertext is copied into (owned by `ssl`).
    rbio: Option<Ptr>,
    /// The memory BIO OpenSSL writes records into (owned by `ssl`); None with `--bio fd`.
    wbio: Option<Ptr>,
    /// `--bio fd`: plaintext SSL_write_ex could not send yet (retried first).
    unsent: Vec<u8>,
    /// `--bio fd`: OpenSSL is waiting for the socket to take more.
    blocked: bool,
    /// Bytes at the front of `wbio` already sent.
    sent: usize,
    want_out: bool,
    /// Our close_notify is queued: close once it is sent.
    closing: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // SAFETY: `ssl` was made by SSL_new, is owned by this connection
        // alone and is freed here once (with the BIOs it owns).
        unsafe { (self.lib.ssl_free)(self.ssl) };
    }
}

/// Serves until killed; prints `READY <addr>` once listening.
pub fn run_server(addr: &Addr, cert: &Path, key: &Path, bio: Bio) -> Result<(), String> {
    // Kept for the process's life: every connection refers to it.
    let lib: &'static Lib = Box::leak(Box::new(Lib::load()?));
    let ctx = lib.context(cert, key, bio)?;
    let (listener, mut epoll) = serve::listen(addr)?;
    let mut conns: Slots<Conn> = Slots::new();
    let mut raw = vec![0u8; READ_BUFFER];
    let mut plain = vec![0u8; READ_BUFFER];
    let mut events = Vec::new();
    loop {
        epoll.wait(&mut events, -1).map_err(|e| format!("epoll_wait: {e}"))?;
        for &(token, _) in &events {
            if token == LISTENER {
                while let Some(stream) = serve::accept_next(&listener) {
                    if let Some(conn) = new_conn(lib, ctx, bio, stream) {
                        let fd = conn.stream.as_raw_fd();
                        conns.add(&epoll, fd, conn);
                    }
                }
                continue;
            }
            let Some(c) = conns.get_mut(token) else {
                continue;
            };
            let keep = if c.wbio.is_some() {
                drive(lib, c, &mut raw, &mut plain)
            } else {
                drive_fd(lib, c, &mut plain)
            };
            let want_out = c.blocked || pending(lib, c) > c.sent;
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

/// An accepted connection's SSL in accept state, its BIOs as `bio` says.
fn new_conn(lib: &'static Lib, ctx: Ptr, bio: Bio, stream: Stream) -> Option<Conn> {
    // SAFETY: OpenSSL calls on a live context; SSL_set_fd / SSL_set_bio hand
    // the BIOs to the new SSL, which frees them with itself.
    unsafe {
        let ssl = (lib.ssl_new)(ctx);
        if ssl.is_null() {
            eprintln!("SSL_new failed");
            return None;
        }
        let (rbio, wbio) = if bio == Bio::Fd {
            if (lib.ssl_set_fd)(ssl, stream.as_raw_fd()) != 1 {
                eprintln!("SSL_set_fd failed");
                (lib.ssl_free)(ssl);
                return None;
            }
            (None, None)
        } else {
            let wbio = (lib.bio_new)((lib.bio_s_mem)());
            let rbio = match bio {
                Bio::Mem => (lib.bio_new)((lib.bio_s_mem)()),
                _ => (lib.bio_new_socket)(stream.as_raw_fd(), BIO_NOCLOSE),
            };
            if wbio.is_null() || rbio.is_null() {
                eprintln!("BIO_new failed");
                (lib.ssl_free)(ssl);
                return None;
            }
            (lib.ssl_set_bio)(ssl, rbio, wbio);
            (Some(rbio).filter(|_| bio == Bio::Mem), Some(wbio))
        };
        (lib.ssl_set_accept_state)(ssl);
        Some(Conn {
            lib,
            stream,
            ssl,
            rbio,
            wbio,
            unsent: Vec::new(),
            blocked: false,
            sent: 0,
            want_out: false,
            closing: false,
        })
    }
}

/// The bytes in the write BIO (sent ones included) and where they start.
fn pending_data(lib: &Lib, c: &Conn) -> (*const u8, usize) {
    let Some(wbio) = c.wbio else {
        return (std::ptr::null(), 0);
    };
    let mut p: *mut c_char = std::ptr::null_mut();
    // SAFETY: BIO_CTRL_INFO on a memory BIO stores a pointer to its data
    // (valid until the BIO is next written or reset) and returns its length.
    let n = unsafe { (lib.bio_ctrl)(wbio, BIO_CTRL_INFO, 0, (&raw mut p).cast()) };
    (p.cast_const().cast(), usize::try_from(n).unwrap_or(0))
}

fn pending(lib: &Lib, c: &Conn) -> usize {
    pending_data(lib, c).1
}

/// Sends what the write BIO holds: true when all of it went (the BIO is then emptied).
fn flush(lib: &Lib, c: &mut Conn) -> io::Result<bool> {
    let (p, n) = pending_data(lib, c);
    while c.sent < n {
        // SAFETY: `p..p+n` is the BIO's data, unchanged until the reset below.
        let out = unsafe { std::slice::from_raw_parts(p.add(c.sent), n - c.sent) };
        match c.stream.write(out) {
            Ok(m) => c.sent += m,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if let (true, Some(wbio)) = (n > 0, c.wbio) {
        // SAFETY: resetting a memory BIO empties it (its buffer is kept).
        unsafe { (lib.bio_ctrl)(wbio, BIO_CTRL_RESET, 0, std::ptr::null_mut()) };
        c.sent = 0;
    }
    Ok(true)
}

/// Ok(false): close the connection. Returns after the socket's EAGAIN (on
/// read, or on write while output waits, when reading stops until it is sent).
fn drive(lib: &Lib, c: &mut Conn, raw: &mut [u8], plain: &mut [u8]) -> io::Result<bool> {
    loop {
        if !flush(lib, c)? {
            return Ok(true);
        }
        if c.closing {
            return Ok(false);
        }
        if let Some(rbio) = c.rbio {
            let n = match c.stream.read(raw) {
                Ok(0) => return Ok(false),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let len = c_int::try_from(n).unwrap_or(c_int::MAX);
            // SAFETY: `raw[..n]` is initialised; a memory BIO copies it.
            if unsafe { (lib.bio_write)(rbio, raw.as_ptr().cast(), len) } != len {
                return Err(io::Error::other("BIO_write failed"));
            }
        }
        // Decrypt everything available, echo it. (`--bio socket` reads until
        // EAGAIN before sending: netbench clients keep one request in flight,
        // so what waits in the write BIO is at most one echo.)
        loop {
            let err = match ssl_read(lib, c.ssl, plain) {
                // The write BIO is a memory BIO: it takes the whole echo at once.
                Ok(n) => match ssl_write(lib, c.ssl, &plain[..n]) {
                    Written::All => continue,
                    _ => return Err(io::Error::other("SSL_write_ex failed")),
                },
                Err(err) => err,
            };
            match err {
                SSL_ERROR_WANT_READ => break,
                SSL_ERROR_WANT_WRITE => break, // the handshake's output: flushed above
                SSL_ERROR_ZERO_RETURN => {
                    // SAFETY: a live SSL; queues our close_notify in the write BIO.
                    unsafe { (lib.ssl_shutdown)(c.ssl) };
                    c.closing = true;
                    break;
                }
                _ => {
                    // SAFETY: clears this thread's OpenSSL error queue.
                    unsafe { (lib.err_clear_error)() };
                    let _ = flush(lib, c); // the alert, if any
                    return Ok(false);
                }
            }
        }
        if c.rbio.is_none() && !c.closing {
            // `--bio socket`: SSL_read_ex said WANT_READ after the socket's EAGAIN.
            return flush(lib, c).map(|_| true);
        }
    }
}

/// One `SSL_read_ex` into `buf`: the byte count, or `SSL_get_error`'s code.
fn ssl_read(lib: &Lib, ssl: Ptr, buf: &mut [u8]) -> Result<usize, c_int> {
    let mut n = 0usize;
    // SAFETY: `buf` is writable for its length; `n` receives the count.
    unsafe {
        match (lib.ssl_read_ex)(ssl, buf.as_mut_ptr(), buf.len(), &raw mut n) {
            1 => Ok(n),
            ok => Err((lib.ssl_get_error)(ssl, ok)),
        }
    }
}

/// What an `SSL_write_ex` of a whole buffer came to.
enum Written {
    All,
    Blocked,
    Failed,
}

fn ssl_write(lib: &Lib, ssl: Ptr, data: &[u8]) -> Written {
    let mut w = 0usize;
    // SAFETY: `data` is readable for its length; `w` receives the count.
    let (ok, err) = unsafe {
        let ok = (lib.ssl_write_ex)(ssl, data.as_ptr(), data.len(), &raw mut w);
        (ok, if ok == 1 { 0 } else { (lib.ssl_get_error)(ssl, ok) })
    };
    match (ok, err) {
        (1, _) if w == data.len() => Written::All,
        (1, _) => Written::Failed, // partial writes are not enabled
        (_, SSL_ERROR_WANT_WRITE) => Written::Blocked,
        _ => {
            // SAFETY: clears this thread's OpenSSL error queue.
            unsafe { (lib.err_clear_error)() };
            Written::Failed
        }
    }
}

/// `--bio fd`: OpenSSL reads and writes the socket. Ok(false): close the
/// connection. Returns after the socket's EAGAIN on read, or on write (then
/// `blocked`, and reading waits until the unsent echo has gone).
fn drive_fd(lib: &Lib, c: &mut Conn, plain: &mut [u8]) -> io::Result<bool> {
    c.blocked = false;
    loop {
        if !c.unsent.is_empty() {
            // The same bytes again, as SSL_write_ex requires after WANT_WRITE.
            match ssl_write(lib, c.ssl, &c.unsent) {
                Written::All => c.unsent.clear(),
                Written::Blocked => {
                    c.blocked = true;
                    return Ok(true);
                }
                Written::Failed => return Ok(false),
            }
        }
        if c.closing {
            // SAFETY: a live SSL; sends our close_notify (a full socket loses it).
            unsafe { (lib.ssl_shutdown)(c.ssl) };
            return Ok(false);
        }
        let err = match ssl_read(lib, c.ssl, plain) {
            Ok(n) => match ssl_write(lib, c.ssl, &plain[..n]) {
                Written::All => continue,
                Written::Blocked => {
                    c.unsent.extend_from_slice(&plain[..n]);
                    c.blocked = true;
                    return Ok(true);
                }
                Written::Failed => return Ok(false),
            },
            Err(err) => err,
        };
        match err {
            SSL_ERROR_WANT_READ => return Ok(true),
            SSL_ERROR_WANT_WRITE => {
                c.blocked = true; // the handshake's output
                return Ok(true);
            }
            SSL_ERROR_ZERO_RETURN => c.closing = true,
            _ => {
                // SAFETY: clears this thread's OpenSSL error queue.
                unsafe { (lib.err_clear_error)() };
                return Ok(false);
            }
        }
    }
}
