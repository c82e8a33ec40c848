//! The native stream transport: asyncio's `_SelectorSocketTransport` for TCP
//! and unix stream sockets.
//!
//! Mirrors `selector_events._SelectorTransport` + `_SelectorSocketTransport`
//! (and `transports._FlowControlMixin`) attribute for attribute: the same
//! flags (`_closing`, `_paused`, `_eof`, `_conn_lost`, `_protocol_paused`),
//! the same order of protocol calls, the same exceptions and messages, the
//! same contexts (`connection_made` runs in a copy of the creator's context,
//! `data_received` in the context copied when reading started or resumed,
//! write-completion callbacks in the context copied when the writer was
//! registered, exactly like the handles asyncio creates for them).
//!
//! This module holds the state and the lifecycle (creation, reader/writer
//! registration, close, abort, `connection_lost`, `__del__`);
//! `stream_io` the read and write paths; `stream_api` the Python methods.
//! The datagram and pipe transports share this state ([`Flavor`]).
//!
//! # Invariants
//! - `st` is never borrowed across a call into Python.
//! - The loop's registration of the fd (a strong reference to the transport)
//!   exists while the transport wants events (`interest != 0`), as asyncio's
//!   selector key exists while a reader or writer is registered; changes are
//!   applied at the next pre-poll step (before any poll could see them; at
//!   once for pipes, as `_add_reader` fails at once for them). So
//!   an idle, unreferenced transport is collected and warns as on asyncio.
//! - `fd` keeps the socket's number after close (`_sock_fd`); `sock` owns
//!   the descriptor until `_call_connection_lost` closes it.
//! - `read_epoch`/`write_epoch` change whenever the reader/writer is removed
//!   or re-added: a queued event of an older epoch is a cancelled handle.

use std::os::fd::RawFd;
use std::sync::OnceLock;

use ferroloop_core::buffer::WriteQueue;
use ferroloop_core::net::{Fd, SockAddr};
use ferroloop_core::reactor::{Trigger, READ, WRITE};
use ferroloop_core::registry::Token;
use pyo3::prelude::*;

use super::keep::Keep;
use crate::event_loop::registrations::Reg;
use crate::event_loop::EventLoop;
use crate::py::cell::GilCell;
use crate::py::errors::os_error;
use crate::py::gc::{self, GcRefs, GcStop, Visitor};
use crate::py::held::Held;
use crate::py::native_type::{RawClass, RawPayload};

/// The socket a transport owns.
#[derive(Debug, Default)]
pub(crate) enum Sock {
    /// A Python `socket.socket` (given by the caller, or made on demand).
    Py(Held<PyAny>),
    /// A descriptor accepted natively; no Python object exists yet.
    Raw(Fd),
    /// Closed (`_sock is None`).
    #[default]
    Closed,
}

/// A socket address: as the kernel gave it, as a Python object, or unknown
/// (the call failed: `None`).
#[derive(Debug, Default)]
pub(crate) enum Addr {
    #[default]
    None,
    Native(SockAddr),
    Py(Held<PyAny>),
}

/// Write-buffer limits (`_high_water`, `_low_water`) as given, and as numbers.
#[derive(Debug)]
pub(crate) struct Limits {
    pub high: Held<PyAny>,
    pub low: Held<PyAny>,
    pub high_f: f64,
    pub low_f: f64,
}

/// The family/type/proto a socket object made on demand gets.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SockKind {
    pub family: u16,
    pub type_: u8,
    pub proto: u16,
}

/// The state few connections ever use, allocated on first use (an idle
/// connection's size matters: there may be 100,000 of them).
#[derive(Debug, Default)]
pub(crate) struct Cold {
    /// The caller's `extra` mapping (other keys than socket/sockname/peername).
    pub extra: Option<Held<PyAny>>,
    /// The `TransportSocket` of `get_extra_info('socket')`, made on demand.
    pub trsock: Option<Held<PyAny>>,
    /// The caller's `socket.socket` once the transport closed it (asyncio's
    /// `_extra['socket']` still wraps it), unless `trsock` was made before.
    pub closed_sock: Option<Held<PyAny>>,
    pub empty_waiter: Option<Held<PyAny>>,
    /// `None`: the defaults (64 KiB / 16 KiB).
    pub limits: Option<Limits>,
    /// A datagram transport's own state (`datagram`).
    pub dgram: Option<Box<super::datagram::Dgram>>,
}

/// Everything `_SelectorSocketTransport` keeps in its instance dict.
#[derive(Debug, Default)]
pub(crate) struct StreamState {
    pub loop_: Option<Held<EventLoop>>,
    pub protocol: Option<Held<PyAny>>,
    pub sock: Sock,
    pub fd: RawFd,
    /// For a natively accepted socket: what its `socket.socket` gets.
    pub kind: SockKind,
    pub server: Option<Held<PyAny>>,
    pub sockname: Addr,
    pub peername: Addr,
    pub read_ctx: Option<Held<PyAny>>,
    pub write_ctx: Option<Held<PyAny>>,
    pub cold: Option<Box<Cold>>,
    pub queue: WriteQueue<Keep>,
    /// The loop registration; meaningful only while `kernel != 0`.
    pub token: Token,
    /// The sides asyncio's selector would watch now ([`READING`]/[`WRITING`]).
    pub interest: u8,
    /// The sides the kernel registration watches (follows `interest` at the
    /// pre-poll step).
    pub kernel: u8,
    /// Waiting in the loop's pre-poll list to apply `interest`.
    pub retune_pending: bool,
    /// `gc_epoch::now()` when the transport was made.
    pub gc_epoch: u16,
    pub read_epoch: u32,
    pub write_epoch: u32,
    /// The reader/writer epoch when the pending read/write event was queued.
    pub queued_read_epoch: u32,
    pub queued_write_epoch: u32,
    /// The errno of a failed registration (the pre-poll writer's or another).
    pub io_errno: i32,
    pub conn_lost: u32,
    pub closing: bool,
    pub paused: bool,
    pub eof: bool,
    pub protocol_connected: bool,
    pub buffered: bool,
    pub protocol_paused: bool,
    /// Waiting in the loop's list of writers to register before the poll.
    pub writer_pending: bool,
    /// The last read was large: read straight into the result next time.
    pub big_reads: bool,
    /// Which of asyncio's transport classes this is.
    pub flavor: Flavor,
}

/// The asyncio class a transport mirrors (all share [`StreamState`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Flavor {
    /// `_SelectorSocketTransport`.
    #[default]
    Stream,
    /// `_SelectorDatagramTransport` (its own state is in `cold.dgram`).
    Datagram,
    /// `unix_events._UnixReadPipeTransport`.
    ReadPipe,
    /// `unix_events._UnixWritePipeTransport`.
    WritePipe,
}

impl StreamState {
    /// `not self._buffer`.
    pub(crate) fn buffer_empty(&self) -> bool {
        !self.has_queued()
    }

    /// `bool(self._buffer)`.
    pub(crate) fn has_queued(&self) -> bool {
        match self.dgram() {
            Some(d) => !d.queue.is_empty(),
            None => !self.queue.is_empty(),
        }
    }

    /// `get_write_buffer_size()`.
    pub(crate) fn write_buffer_size(&self) -> usize {
        match self.dgram() {
            Some(d) => d.size,
            None => self.queue.len(),
        }
    }
}

/// The reactor's `READ`/`WRITE` bits as kept in `interest`/`kernel` (a byte
/// each: an idle connection's size matters).
pub(crate) const READING: u8 = READ as u8;
pub(crate) const WRITING: u8 = WRITE as u8;
const _: () = assert!(READING as u32 == READ && WRITING as u32 == WRITE);

pub(crate) const DEFAULT_HIGH: f64 = 65536.0;
pub(crate) const DEFAULT_LOW: f64 = 16384.0;

impl StreamState {
    /// The cold part, allocated if needed.
    pub(crate) fn cold_mut(&mut self) -> &mut Cold {
        self.cold.get_or_insert_with(Box::default)
    }

    pub(crate) fn kind(&self) -> SockKind {
        self.kind
    }

    pub(crate) fn server(&self) -> Option<&Held<PyAny>> {
        self.server.as_ref()
    }

    pub(crate) fn take_server(&mut self) -> Option<Held<PyAny>> {
        self.server.take()
    }

    pub(crate) fn extra(&self) -> Option<&Held<PyAny>> {
        self.cold.as_ref().and_then(|c| c.extra.as_ref())
    }

    pub(crate) fn trsock(&self) -> Option<&Held<PyAny>> {
        self.cold.as_ref().and_then(|c| c.trsock.as_ref())
    }

    pub(crate) fn empty_waiter(&self) -> Option<&Held<PyAny>> {
        self.cold.as_ref().and_then(|c| c.empty_waiter.as_ref())
    }

    pub(crate) fn take_empty_waiter(&mut self) -> Option<Held<PyAny>> {
        self.cold.as_mut().and_then(|c| c.empty_waiter.take())
    }

    pub(crate) fn limits(&self) -> Option<&Limits> {
        self.cold.as_ref().and_then(|c| c.limits.as_ref())
    }

    pub(crate) fn high_water(&self) -> f64 {
        self.limits().map_or(DEFAULT_HIGH, |l| l.high_f)
    }

    pub(crate) fn low_water(&self) -> f64 {
        self.limits().map_or(DEFAULT_LOW, |l| l.low_f)
    }

    /// `is_reading()`.
    pub(crate) fn is_reading(&self) -> bool {
        !self.closing && !self.paused
    }
}

impl GcRefs for StreamState {
    fn visit_refs(&self, v: &Visitor<'_, '_>) -> Result<(), GcStop> {
        v.visit(self.loop_.as_deref())?;
        v.visit(self.protocol.as_deref())?;
        if let Sock::Py(s) = &self.sock {
            v.visit(Some(&**s))?;
        }
        v.visit(self.server.as_deref())?;
        if let Some(c) = &self.cold {
            v.visit(c.extra.as_deref())?;
            v.visit(c.trsock.as_deref())?;
            v.visit(c.closed_sock.as_deref())?;
            v.visit(c.empty_waiter.as_deref())?;
            if let Some(l) = &c.limits {
                v.visit(Some(&*l.high))?;
                v.visit(Some(&*l.low))?;
            }
            if let Some(d) = &c.dgram {
                d.visit(v)?;
            }
        }
        for a in [&self.sockname, &self.peername] {
            if let Addr::Py(o) = a {
                v.visit(Some(&**o))?;
            }
        }
        v.visit(self.read_ctx.as_deref())?;
        v.visit(self.write_ctx.as_deref())?;
        self.queue.for_each_keep(|k| k.visit(v))
    }
}

/// The payload of a `_SelectorSocketTransport` instance.
#[derive(Debug, Default)]
pub(crate) struct StreamTransport {
    pub(crate) st: GilCell<StreamState>,
}

static CLASS: OnceLock<RawClass<StreamTransport>> = OnceLock::new();

impl RawPayload for StreamTransport {
    fn class() -> &'static RawClass<Self> {
        // The class is created at import (`transports::register`) before any
        // instance can exist, so every slot call finds it.
        CLASS
            .get()
            .unwrap_or_else(|| unreachable!("ferroloop transports are not registered"))
    }

    fn visit_refs(&self, v: &Visitor<'_, '_>) -> Result<(), GcStop> {
        match self.st.try_get() {
            Some(st) => st.visit_refs(v),
            None => Ok(()),
        }
    }

    fn clear_refs(&self, py: Python<'_>) {
        self.detach_from_loop(py);
        gc::clear(&self.st);
    }

    fn dealloc(&self, py: Python<'_>) {
        self.detach_from_loop(py);
    }

    fn finalize(obj: &Bound<'_, PyAny>) {
        super::stream_life::finalize(obj);
    }
}

impl StreamTransport {
    /// Forget our fd in the loop's transport map (a transport collected
    /// without close(): `__del__` already closed its socket).
    fn detach_from_loop(&self, py: Python<'_>) {
        let Some(st) = self.st.try_get() else { return };
        if let Some(lp) = &st.loop_ {
            lp.get().forget_transport(py, st.fd, std::ptr::from_ref(self) as usize);
        }
    }
}

/// The payload of a native transport, if `obj` is one (the stream,
/// datagram and pipe classes carry the same payload at the same offset: see
/// `transports::register_sibling`).
pub(crate) fn payload_of<'a>(obj: &'a Bound<'_, PyAny>) -> Option<&'a StreamTransport> {
    class()
        .payload_of(obj)
        .or_else(|| super::sibling_classes().find_map(|c| c.payload_of(obj)))
}

/// The payload of an instance of any transport class.
pub(crate) fn payload<'a>(obj: &'a Bound<'_, PyAny>) -> &'a StreamTransport {
    match payload_of(obj) {
        Some(t) => t,
        None => unreachable!("not a ferroloop stream transport"),
    }
}

/// Create the class (once, at import).
pub(crate) fn init_class(class: RawClass<StreamTransport>) {
    let _ = CLASS.set(class);
}

pub(crate) fn class() -> &'static RawClass<StreamTransport> {
    StreamTransport::class()
}

/// A strong reference to a stream transport.
#[derive(Debug)]
pub(crate) struct StreamRef(Held<PyAny>);

impl StreamRef {
    /// `obj` must be an instance of the class.
    pub(crate) fn of(obj: &Bound<'_, PyAny>) -> Option<Self> {
        payload_of(obj)?;
        Some(Self(Held::new(obj.clone().unbind())))
    }

    pub(crate) fn get(&self) -> &StreamTransport {
        // SAFETY: a StreamRef only ever holds an instance of a transport
        // class (checked in `of`; same payload offset), kept alive by the
        // reference itself.
        unsafe { class().payload(self.0.as_ptr()) }
    }

    pub(crate) fn bind<'py>(&self, py: Python<'py>) -> &Bound<'py, PyAny> {
        self.0.bind(py)
    }

    pub(crate) fn clone_ref(&self, py: Python<'_>) -> Self {
        Self(self.0.clone_ref(py))
    }

    pub(crate) fn as_py(&self) -> &Py<PyAny> {
        &self.0
    }
}

/// The loop of a transport that still has one.
pub(crate) fn loop_of(py: Python<'_>, t: &StreamTransport) -> Option<Held<EventLoop>> {
    t.st.get(py).loop_.as_ref().map(|l| l.clone_ref(py))
}

/// Set the sides the transport wants events for (asyncio's `_add_reader` /
/// `_remove_reader` & co. on its fd). The kernel registration follows at the
/// loop's pre-poll step (`apply_interest`), so a `pause_reading()` undone by
/// a `resume_reading()` in the same iteration costs no system call; nothing
/// can be polled in between, and events queued under the old interest are
/// dropped by their epoch.
#[allow(
    clippy::unnecessary_wraps,
    reason = "registration is fallible in asyncio (and in set_interest_now); callers keep that shape"
)]
pub(crate) fn set_interest(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport, want: u8) -> PyResult<()> {
    if matches!(t.st.get(py).flavor, Flavor::ReadPipe | Flavor::WritePipe) {
        return set_pipe_interest(py, obj, t, want);
    }
    let lp = {
        let mut st = t.st.get_mut(py);
        st.interest = want;
        if want == st.kernel || st.retune_pending {
            return Ok(());
        }
        let Some(lp) = st.loop_.as_ref().map(|l| l.clone_ref(py)) else {
            return Ok(());
        };
        st.retune_pending = true;
        lp
    };
    if let Some(me) = StreamRef::of(obj) {
        lp.get().want_retune(py, me);
    }
    Ok(())
}

/// [`set_interest`], applied at once (before the socket is closed).
pub(crate) fn set_interest_now(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport, want: u8) -> PyResult<()> {
    t.st.get_mut(py).interest = want;
    apply_interest(py, obj, t)
}

/// A pipe's `_add_reader`/`_remove_reader` & co., applied at once, as
/// asyncio's are: epoll refuses some character devices, and the error
/// belongs to the call (nothing stays registered); on a closed loop adding
/// raises asyncio's RuntimeError and removing does nothing.
fn set_pipe_interest(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport, want: u8) -> PyResult<()> {
    let (old, closed) = {
        let st = t.st.get(py);
        let closed = st.loop_.as_ref().is_some_and(|l| l.get().is_closed_flag(py));
        (st.interest, closed)
    };
    if closed {
        if want & !old != 0 {
            return Err(pyo3::exceptions::PyRuntimeError::new_err("Event loop is closed"));
        }
        return Ok(());
    }
    t.st.get_mut(py).interest = want;
    let res = apply_interest(py, obj, t);
    if res.is_err() {
        t.st.get_mut(py).interest = old;
    }
    res
}

/// Bring the kernel registration in line with the wanted interest: register,
/// modify or deregister, as asyncio's selector does. On an epoll error the
/// registration is left as it was and the OSError returns.
pub(crate) fn apply_interest(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport) -> PyResult<()> {
    let (lp, fd, want, have, token) = {
        let mut st = t.st.get_mut(py);
        st.retune_pending = false;
        let Some(lp) = st.loop_.as_ref() else { return Ok(()) };
        (lp.clone_ref(py), st.fd, st.interest, st.kernel, st.token)
    };
    if want == have {
        return Ok(());
    }
    let this = lp.get();
    if this.is_forked() {
        return Ok(());
    }
    let mut gone = None;
    let mut evicted = None;
    let result = {
        let mut ls = this.st.get_mut(py);
        match (have != 0).then_some(token) {
            Some(_) if want == 0 => {
                // The fd may already be closed: EpollSelector ignores that error too.
                let _ = this.poller.deregister(fd);
                gone = ls.fds.remove(fd);
                Ok(None)
            }
            Some(token) => this
                .poller
                .modify(fd, want.into(), token, Trigger::Level)
                .map(|()| Some(token)),
            None => {
                evicted = crate::event_loop::fd_watch::evict_idle(this, &mut ls, fd);
                if ls.fds.token(fd).is_some() {
                    return Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
                        "File descriptor {fd} is already registered with the loop"
                    )));
                }
                let Some(me) = StreamRef::of(obj) else {
                    return Ok(());
                };
                let token = ls.fds.insert(fd, Reg::Stream(me));
                match this.poller.register(fd, want.into(), token, Trigger::Level) {
                    Ok(()) => Ok(Some(token)),
                    Err(e) => {
                        gone = ls.fds.remove(fd);
                        Err(e)
                    }
                }
            }
        }
    };
    drop(gone);
    drop(evicted);
    match result {
        Ok(token) => {
            let mut st = t.st.get_mut(py);
            st.token = token.unwrap_or(0);
            st.kernel = want;
            Ok(())
        }
        Err(e) => Err(os_error(&e)),
    }
}

/// `loop._add_reader(fd, self._read_ready)`: start (or resume) reading,
/// with the reading context copied from the caller's, as a new handle would.
pub(crate) fn add_reader(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport) -> PyResult<()> {
    let ctx = crate::py::call::copy_context(py)?;
    let want = t.st.get(py).interest | READING;
    set_interest(py, obj, t, want)?;
    let old = {
        let mut st = t.st.get_mut(py);
        st.read_epoch = st.read_epoch.wrapping_add(1);
        st.read_ctx.replace(Held::new(ctx))
    };
    drop(old);
    // A datagram read ahead before reading paused is due at the pre-poll step.
    let stashed = {
        let mut st = t.st.get_mut(py);
        let due = !st.retune_pending && st.dgram().is_some_and(|d| d.stash.is_some());
        if due {
            st.retune_pending = true;
        }
        due.then(|| st.loop_.as_ref().map(|l| l.clone_ref(py))).flatten()
    };
    if let (Some(lp), Some(me)) = (stashed, StreamRef::of(obj)) {
        lp.get().want_retune(py, me);
    }
    Ok(())
}

/// `loop._add_writer(fd, ...)`: start watching for writability, with the
/// writing context copied from the caller's, as a new handle would (the
/// datagram and pipe transports; the stream transport's writer is
/// registered at the pre-poll step instead).
pub(crate) fn add_writer(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport) -> PyResult<()> {
    let ctx = crate::py::call::copy_context(py)?;
    let want = t.st.get(py).interest | WRITING;
    set_interest(py, obj, t, want)?;
    let old = {
        let mut st = t.st.get_mut(py);
        st.write_epoch = st.write_epoch.wrapping_add(1);
        st.write_ctx.replace(Held::new(ctx))
    };
    drop(old);
    Ok(())
}

/// `loop._remove_reader(fd)`.
pub(crate) fn remove_reader(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport) -> PyResult<()> {
    let want = {
        let mut st = t.st.get_mut(py);
        if st.interest & READING == 0 {
            return Ok(());
        }
        st.read_epoch = st.read_epoch.wrapping_add(1);
        st.interest & !READING
    };
    let res = set_interest(py, obj, t, want);
    let old = t.st.get_mut(py).read_ctx.take();
    drop(old);
    res
}

/// `loop._remove_writer(fd)`.
pub(crate) fn remove_writer(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport) -> PyResult<()> {
    let want = {
        let mut st = t.st.get_mut(py);
        if st.writer_pending {
            // Registered in asyncio's eyes already (its `write()` adds the
            // writer at once), here only at the next pre-poll step: cancel it.
            st.writer_pending = false;
            if st.interest & WRITING == 0 {
                let old = st.write_ctx.take();
                drop(st);
                drop(old);
                return Ok(());
            }
        }
        if st.interest & WRITING == 0 {
            return Ok(());
        }
        st.write_epoch = st.write_epoch.wrapping_add(1);
        st.interest & !WRITING
    };
    let res = set_interest(py, obj, t, want);
    let old = t.st.get_mut(py).write_ctx.take();
    drop(old);
    res
}

// An idle connection's transport fits pymalloc's 288-byte class (with the
// object header, asyncio's base slots, the weakref slot and the GC header).
const _: () = assert!(std::mem::size_of::<StreamState>() <= 200);
