//! The native datagram transport: asyncio's `_SelectorDatagramTransport`
//! for UDP (IPv4, IPv6) and unix datagram sockets.
//!
//! It shares the stream transport's payload (`stream::StreamState`, with
//! `dgram` set): registration, epochs, contexts, `close`/`abort`/
//! `connection_lost`/`__del__`, extra info and flow control are the same
//! code as `_SelectorTransport`'s are the same in asyncio. What differs
//! lives here, in [`Dgram`] (the cold part of the state):
//!
//! - `_read_ready`: one `recvfrom` of up to `max_size` (256 KiB) per
//!   readiness event, as asyncio does, into the loop's shared buffer, then
//!   `datagram_received(bytes, addr)`; an `OSError` goes to
//!   `error_received`; exceptions of either callback propagate to the
//!   loop's exception handler and the transport stays open.
//! - `sendto`: tries the socket at once (`send` when connected, else
//!   `sendto`); what does not fit is queued as `(bytes(data), addr)` and the
//!   writer `_sendto_ready` is registered, as asyncio does.
//! - Addresses: the Python tuple of a sender is made once per address and
//!   kept in a small cache; `sendto(data, addr)` with such a tuple (the
//!   echo pattern), or with a numeric `(host, port)`, goes out without a
//!   Python call. Anything else goes through the Python socket's `sendto`,
//!   so hostnames, unix paths and bad addresses behave exactly as asyncio.
//!
//! - Read-ahead at the poll step: when this transport is the loop's only
//!   registration, only reading, its last read found a datagram and no
//!   callback is queued (so its reader's item is the first to run: nothing
//!   can change the socket between this read and asyncio's), the poll step
//!   tries `recvfrom` instead of `epoll_wait`. A datagram (or a
//!   socket error) found there is exactly what the poll would have reported
//!   as readable at that moment; it is kept (`stash`) and the reader's ready
//!   item is queued where the poll would have queued it, so the protocol
//!   sees asyncio's order. Nothing there: the flag drops and the loop polls
//!   as usual. Under load this saves the `epoll_wait` of every datagram.
//!
//! Python-version differences, as the running version's asyncio does them:
//! 3.11 and 3.12 drop an empty `sendto()`, 3.13 sends it; 3.13 counts 8
//! bytes of header per buffered datagram in `get_write_buffer_size()` (and,
//! like asyncio 3.13.0, does not take them off again when the datagram is
//! sent; releases with `_header_size` do, and so does ferroloop there).

use std::collections::VecDeque;
use std::net::{Ipv4Addr, Ipv6Addr};

use ferroloop_core::net::{self, SockAddr};
use pyo3::exceptions::{PyBlockingIOError, PyInterruptedError, PyKeyboardInterrupt, PyOSError, PySystemExit};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyInt, PyMemoryView, PyString, PyTuple};

use super::extra::addr_object;
use super::hooks;
use super::stream::{self, Addr, Sock, StreamState, StreamTransport, READING};
use super::stream_io;
use super::stream_life;
use crate::event_loop::EventLoop;
use crate::py::call::call_method;
use crate::py::errors::os_error;
use crate::py::gc::{GcStop, Visitor};
use crate::py::held::Held;
use crate::py::spare_bytes::Lent;

/// How many recent addresses keep their Python object.
const PEERS: usize = 16;

const WRITE_FAILED: &str = "Fatal write error on datagram transport";

/// What only a datagram transport keeps.
#[derive(Debug, Default)]
pub(crate) struct Dgram {
    /// `_buffer`: `(bytes, addr)` per queued datagram.
    pub queue: VecDeque<(Held<PyAny>, Held<PyAny>)>,
    /// `_buffer_size`.
    pub size: usize,
    /// `_address` (the `remote_addr` of `create_datagram_endpoint`).
    pub address: Option<Held<PyAny>>,
    /// `bool(self._address)`.
    pub has_address: bool,
    /// `bool(self._extra['peername'])`: `send` instead of `sendto`.
    pub connected: bool,
    /// The socket's address family.
    pub family: i32,
    /// Recent addresses and their Python objects: made for a received
    /// datagram (`true`: reused for the next one from there, and found by
    /// identity by `sendto`), or given to `sendto` and parsed (`false`: found
    /// by identity only; it need not be the form a received address takes,
    /// e.g. an IPv6 `(host, port)`).
    pub peers: Vec<(SockAddr, Held<PyAny>, bool)>,
    pub next_peer: usize,
    /// What the poll step read ahead, for the next `_read_ready`.
    pub stash: Option<Stash>,
    /// The last read found a datagram: read ahead at the next poll step.
    pub read_ahead: bool,
}

/// A read done at the poll step.
#[derive(Debug)]
pub(crate) enum Stash {
    Datagram(Held<PyAny>, SockAddr),
    Error(i32),
}

impl Dgram {
    pub(crate) fn visit(&self, v: &Visitor<'_, '_>) -> Result<(), GcStop> {
        for (data, addr) in &self.queue {
            v.visit(Some(&**data))?;
            v.visit(Some(&**addr))?;
        }
        v.visit(self.address.as_deref())?;
        if let Some(Stash::Datagram(data, _)) = &self.stash {
            v.visit(Some(&**data))?;
        }
        for (_, obj, _) in &self.peers {
            v.visit(Some(&**obj))?;
        }
        Ok(())
    }

    /// The Python object of `addr`, from the cache or made (and cached).
    fn object_of(&mut self, py: Python<'_>, addr: &SockAddr) -> PyResult<Py<PyAny>> {
        if let Some((_, obj, _)) = self.peers.iter().find(|(a, _, made)| *made && a == addr) {
            return Ok(obj.to_py(py));
        }
        let obj = addr_object(py, addr.decode())?;
        self.remember(py, addr.clone(), &obj, true);
        Ok(obj)
    }

    fn remember(&mut self, py: Python<'_>, addr: SockAddr, obj: &Py<PyAny>, made: bool) {
        let entry = (addr, Held::new(obj.clone_ref(py)), made);
        if self.peers.len() < PEERS {
            self.peers.push(entry);
        } else {
            let old = std::mem::replace(&mut self.peers[self.next_peer], entry);
            self.next_peer = (self.next_peer + 1) % PEERS;
            drop(old);
        }
    }

    /// The kernel address of a Python address object this transport made or
    /// parsed (by identity). Never for None, which `datagram_received` gets
    /// for an unnamed unix sender: `sock.sendto(data, None)` raises
    /// TypeError in asyncio, so a reply to it must too.
    fn cached(&self, obj: &Bound<'_, PyAny>) -> Option<SockAddr> {
        if obj.is_none() {
            return None;
        }
        self.peers
            .iter()
            .find(|(_, o, _)| o.as_ptr() == obj.as_ptr())
            .map(|(a, _, _)| a.clone())
    }
}

impl StreamState {
    pub(crate) fn dgram(&self) -> Option<&Dgram> {
        self.cold.as_ref().and_then(|c| c.dgram.as_deref())
    }

    pub(crate) fn dgram_mut(&mut self) -> Option<&mut Dgram> {
        self.cold.as_mut().and_then(|c| c.dgram.as_deref_mut())
    }
}

fn is_fatal(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PySystemExit>(py) || err.is_instance_of::<PyKeyboardInterrupt>(py)
}

/// The truth value of an address as Python would see it.
fn addr_truthy(py: Python<'_>, a: &Addr) -> PyResult<bool> {
    Ok(match a {
        Addr::None => false,
        Addr::Py(o) => o.bind(py).is_truthy()?,
        Addr::Native(n) => match n.decode() {
            net::Decoded::Empty => false,
            net::Decoded::UnixPath(p) => !p.is_empty(),
            _ => true,
        },
    })
}

/// `_SelectorDatagramTransport(loop, sock, protocol, address, waiter, extra)`.
pub(crate) fn create<'py>(
    lp: &Bound<'py, EventLoop>,
    sock: &Bound<'py, PyAny>,
    protocol: &Bound<'py, PyAny>,
    address: Option<Bound<'py, PyAny>>,
    waiter: Option<Bound<'py, PyAny>>,
    extra: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = lp.py();
    let fd: i32 = sock.call_method0(pyo3::intern!(py, "fileno"))?.extract()?;
    let sockname = net::local_addr(fd).map_or(Addr::None, Addr::Native);
    let peername = match stream_life::extra_peername(py, extra.as_ref()) {
        Some(p) => Addr::Py(Held::new(p.unbind())),
        None => net::peer_addr(fd).map_or(Addr::None, Addr::Native),
    };
    let family = match &sockname {
        Addr::Native(a) => a.family(),
        _ => sock.getattr(pyo3::intern!(py, "family"))?.extract()?,
    };
    let has_address = match &address {
        Some(a) => a.is_truthy()?,
        None => false,
    };
    let dgram = Dgram {
        connected: addr_truthy(py, &peername)?,
        address: address.map(|a| Held::new(a.unbind())),
        has_address,
        family,
        ..Dgram::default()
    };
    let cold = stream::Cold {
        extra: extra.map(|e| Held::new(e.unbind())),
        dgram: Some(Box::new(dgram)),
        ..stream::Cold::default()
    };
    let state = StreamState {
        loop_: Some(Held::new(lp.clone().unbind())),
        protocol: Some(Held::new(protocol.clone().unbind())),
        sock: Sock::Py(Held::new(sock.clone().unbind())),
        fd,
        cold: Some(Box::new(cold)),
        sockname,
        peername,
        protocol_connected: true,
        flavor: stream::Flavor::Datagram,
        ..StreamState::default()
    };
    let obj = stream_life::instantiate(lp, super::dgram_class(), state)?;
    stream_life::schedule_start(lp, &obj, protocol, waiter)?;
    Ok(obj)
}

/// `_read_ready`: one datagram to `datagram_received`, or the error to
/// `error_received`. Their exceptions propagate (to the exception handler).
pub(crate) fn read_ready(py: Python<'_>, t: &StreamTransport) -> PyResult<()> {
    let (fd, protocol, lp) = {
        let st = t.st.get(py);
        if st.conn_lost > 0 {
            return Ok(());
        }
        let (Some(p), Some(lp)) = (&st.protocol, &st.loop_) else {
            return Ok(());
        };
        (st.fd, p.clone_ref(py), lp.clone_ref(py))
    };
    let stash = t.st.get_mut(py).dgram_mut().and_then(|d| d.stash.take());
    let received = match stash {
        Some(Stash::Datagram(data, from)) => Ok((Lent::new(data.bind(py).cast::<PyBytes>()?.clone()), from)),
        Some(Stash::Error(errno)) => Err(std::io::Error::from_raw_os_error(errno)),
        None => lp.get().recvfrom_bytes(py, fd),
    };
    let (data, from) = match received {
        Ok(got) => got,
        Err(e) if net::would_block(&e) => return Ok(()),
        Err(e) => {
            let exc = os_error(&e).into_value(py).into_any();
            call_method(protocol.bind(py), pyo3::intern!(py, "error_received"), &[exc.bind(py)])?;
            return Ok(());
        }
    };
    let addr = {
        let mut st = t.st.get_mut(py);
        match st.dgram_mut() {
            Some(d) => {
                d.read_ahead = true;
                d.object_of(py, &from)?
            }
            None => addr_object(py, from.decode())?,
        }
    };
    let res = call_method(
        protocol.bind(py),
        pyo3::intern!(py, "datagram_received"),
        &[data.bytes.as_any(), addr.bind(py)],
    );
    lp.get().give_back_bytes(py, data);
    res.map(|_| ())
}

/// True for the types `sendto()` accepts.
fn is_bytes_like(data: &Bound<'_, PyAny>) -> bool {
    data.is_instance_of::<PyBytes>() || data.is_instance_of::<PyByteArray>() || data.is_instance_of::<PyMemoryView>()
}

/// How one send attempt ended.
enum Sent {
    Done,
    WouldBlock,
    /// An `OSError`: for `error_received`.
    Os(PyErr),
    /// Anything else: a fatal error.
    Other(PyErr),
}

fn classify(py: Python<'_>, err: PyErr) -> Sent {
    if err.is_instance_of::<PyBlockingIOError>(py) || err.is_instance_of::<PyInterruptedError>(py) {
        Sent::WouldBlock
    } else if err.is_instance_of::<PyOSError>(py) {
        Sent::Os(err)
    } else {
        Sent::Other(err)
    }
}

fn from_io(py: Python<'_>, t: &StreamTransport, res: std::io::Result<usize>) -> Sent {
    match res {
        Ok(n) => {
            count(py, t, n);
            Sent::Done
        }
        Err(e) if net::would_block(&e) => Sent::WouldBlock,
        Err(e) => Sent::Os(os_error(&e)),
    }
}

fn count(py: Python<'_>, t: &StreamTransport, n: usize) {
    if let Some(lp) = &t.st.get(py).loop_ {
        lp.get().st.get_mut(py).stats.bytes_written += n as u64;
    }
}

/// A numeric `(host, port[, flowinfo[, scope_id]])` of the socket's family,
/// as Python's `socket` would build it; `None` for anything else (hostnames,
/// scoped or mapped addresses, out-of-range numbers, other types): those go
/// through Python's `sendto`.
fn parse_numeric(family: i32, addr: &Bound<'_, PyAny>) -> Option<SockAddr> {
    let tuple = addr.cast_exact::<PyTuple>().ok()?;
    let n = tuple.len();
    let host = tuple.get_item(0).ok()?;
    let host = host.cast_exact::<PyString>().ok()?;
    let number = |i: usize| -> Option<u64> {
        let item = tuple.get_item(i).ok()?;
        item.cast_exact::<PyInt>().ok()?.extract::<u64>().ok()
    };
    let port = u16::try_from(number(1)?).ok()?;
    let host = host.to_str().ok()?;
    match family {
        net::AF_INET if n == 2 => {
            let ip: Ipv4Addr = host.parse().ok()?;
            Some(SockAddr::v4(ip.octets(), port))
        }
        net::AF_INET6 if (2..=4).contains(&n) => {
            let ip: Ipv6Addr = host.parse().ok()?;
            let flowinfo = if n > 2 { number(2)? } else { 0 };
            let scope_id = if n > 3 { number(3)? } else { 0 };
            if flowinfo > 0xF_FFFF || ip.is_unicast_link_local() {
                return None;
            }
            Some(SockAddr::v6(
                ip.octets(),
                port,
                flowinfo as u32,
                u32::try_from(scope_id).ok()?,
            ))
        }
        _ => None,
    }
}

/// One `send`/`sendto` of `data` to `addr`, natively when the address is
/// known or numeric, else through the Python socket.
fn send_one(py: Python<'_>, t: &StreamTransport, data: &Bound<'_, PyAny>, addr: &Bound<'_, PyAny>) -> Sent {
    let (fd, connected, known, family, open) = {
        let st = t.st.get(py);
        let Some(d) = st.dgram() else { return Sent::Done };
        (
            st.fd,
            d.connected,
            d.cached(addr),
            d.family,
            matches!(st.sock, Sock::Py(_)),
        )
    };
    if !open {
        // `self._sock` is None: asyncio's call raises AttributeError.
        let err = py
            .None()
            .into_bound(py)
            .getattr(if connected { "send" } else { "sendto" });
        return Sent::Other(err.err().unwrap_or_else(|| PyTypeError::new_err("closed")));
    }
    if connected {
        return match crate::py::buffer::with_bytes(data, |b| net::send(fd, b)) {
            Ok(res) => from_io(py, t, res),
            Err(err) => classify(py, err),
        };
    }
    let target = known.or_else(|| {
        let parsed = parse_numeric(family, addr)?;
        let mut st = t.st.get_mut(py);
        if let Some(d) = st.dgram_mut() {
            d.remember(py, parsed.clone(), &addr.clone().unbind(), false);
        }
        Some(parsed)
    });
    match target {
        Some(to) => match crate::py::buffer::with_bytes(data, |b| net::send_to(fd, b, &to)) {
            Ok(res) => from_io(py, t, res),
            Err(err) => classify(py, err),
        },
        None => match python_sendto(py, t, data, addr) {
            Ok(n) => {
                count(py, t, n.extract::<usize>().unwrap_or(0));
                Sent::Done
            }
            Err(err) => classify(py, err),
        },
    }
}

/// `self._sock.sendto(data, addr)` through the Python socket object.
fn python_sendto<'py>(
    py: Python<'py>,
    t: &StreamTransport,
    data: &Bound<'py, PyAny>,
    addr: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let sock = match &t.st.get(py).sock {
        Sock::Py(s) => s.clone_ref(py),
        _ => return Err(PyTypeError::new_err("the transport's socket is closed")),
    };
    sock.bind(py).call_method1(pyo3::intern!(py, "sendto"), (data, addr))
}

/// `self._protocol.error_received(exc)` (its exceptions propagate).
fn error_received(py: Python<'_>, t: &StreamTransport, err: PyErr) -> PyResult<()> {
    let protocol = t.st.get(py).protocol.as_ref().map(|p| p.clone_ref(py));
    let exc = err.into_value(py).into_any();
    let target = protocol.map_or_else(|| py.None(), |p| p.to_py(py));
    call_method(target.bind(py), pyo3::intern!(py, "error_received"), &[exc.bind(py)])?;
    Ok(())
}

/// `sendto(data, addr=None)`.
pub(crate) fn sendto(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    t: &StreamTransport,
    data: &Bound<'_, PyAny>,
    addr: Option<Bound<'_, PyAny>>,
) -> PyResult<()> {
    if !is_bytes_like(data) {
        return Err(PyTypeError::new_err(format!(
            "data argument must be a bytes-like object, not {}",
            data.get_type().name()?.repr()?
        )));
    }
    let len = data.len()?;
    if len == 0 && !hooks::empty_datagrams(py) {
        return Ok(());
    }
    let mut addr = addr.unwrap_or_else(|| py.None().into_bound(py));
    let address = {
        let st = t.st.get(py);
        st.dgram()
            .filter(|d| d.has_address)
            .and_then(|d| d.address.as_ref().map(|a| a.clone_ref(py)))
    };
    if let Some(address) = &address {
        let address = address.bind(py);
        if !addr.is_none() && !addr.is(address) {
            let allowed = PyTuple::new(py, [py.None().into_bound(py), address.clone()])?;
            if !allowed.contains(&addr)? {
                return Err(PyValueError::new_err(format!(
                    "Invalid address: must be None or {}",
                    address.str()?
                )));
            }
        }
        addr = address.clone();
    }
    let conn_lost = t.st.get(py).conn_lost;
    if conn_lost > 0 && address.is_some() {
        if conn_lost >= hooks::connlost_threshold(py) {
            hooks::log_warning(py, "socket.send() raised exception.")?;
        }
        t.st.get_mut(py).conn_lost += 1;
        return Ok(());
    }
    let empty = t.st.get(py).dgram().is_none_or(|d| d.queue.is_empty());
    if empty {
        // Attempt to send it right away first.
        match send_one(py, t, data, &addr) {
            Sent::Done => return Ok(()),
            // `self._loop._add_writer(self._sock_fd, self._sendto_ready)`.
            Sent::WouldBlock => stream::add_writer(py, obj, t)?,
            Sent::Os(err) => return error_received(py, t, err),
            Sent::Other(err) => {
                if is_fatal(py, &err) {
                    return Err(err);
                }
                return stream_life::fatal_error(py, obj, t, err, WRITE_FAILED);
            }
        }
    }
    // Ensure that what we buffer is immutable.
    let copy = if data.is_exact_instance_of::<PyBytes>() {
        data.clone()
    } else {
        py.get_type::<PyBytes>().call1((data,))?
    };
    {
        let mut st = t.st.get_mut(py);
        if let Some(d) = st.dgram_mut() {
            d.queue.push_back((Held::new(copy.unbind()), Held::new(addr.unbind())));
            d.size += len + hooks::datagram_header(py);
        }
    }
    stream_io::maybe_pause_protocol(py, obj, t)
}

/// `_sendto_ready` (the writer).
pub(crate) fn sendto_ready(py: Python<'_>, obj: &Bound<'_, PyAny>, t: &StreamTransport) -> PyResult<()> {
    loop {
        let next = {
            let mut st = t.st.get_mut(py);
            let Some(d) = st.dgram_mut() else { return Ok(()) };
            let Some((data, addr)) = d.queue.pop_front() else { break };
            let n = data.bind(py).len().unwrap_or(0) + hooks::datagram_header_leaves(py);
            d.size = d.size.saturating_sub(n);
            (data, addr, n)
        };
        let (data, addr, n) = next;
        match send_one(py, t, data.bind(py), addr.bind(py)) {
            Sent::Done => {}
            Sent::WouldBlock => {
                let mut st = t.st.get_mut(py);
                if let Some(d) = st.dgram_mut() {
                    d.queue.push_front((data, addr)); // Try again later.
                    d.size += n;
                }
                break;
            }
            Sent::Os(err) => return error_received(py, t, err),
            Sent::Other(err) => {
                if is_fatal(py, &err) {
                    return Err(err);
                }
                return stream_life::fatal_error(py, obj, t, err, WRITE_FAILED);
            }
        }
    }
    stream_io::maybe_resume_protocol(py, obj, t)?; // May append to buffer.
    if t.st.get(py).dgram().is_none_or(|d| d.queue.is_empty()) {
        stream::remove_writer(py, obj, t)?;
        if t.st.get(py).closing {
            stream_life::call_connection_lost(py, obj, t, &py.None().into_bound(py))?;
        }
    }
    Ok(())
}

/// The poll step's read-ahead (see the module documentation): `true` if a
/// datagram or an error was read and the reader's item is due, so the poll
/// is skipped.
pub(crate) fn read_ahead(py: Python<'_>, lp: &EventLoop, t: &StreamTransport) -> bool {
    let fd = {
        let st = t.st.get(py);
        let idle_reader = st.interest == READING && st.kernel == READING && !st.retune_pending;
        let Some(d) = st.dgram() else { return false };
        if !idle_reader || st.conn_lost > 0 || !d.read_ahead || d.stash.is_some() {
            return false;
        }
        st.fd
    };
    let stash = match lp.recvfrom_bytes(py, fd) {
        Ok((data, from)) => Stash::Datagram(Held::new(data.bytes.into_any().unbind()), from),
        Err(e) if net::would_block(&e) => {
            if let Some(d) = t.st.get_mut(py).dgram_mut() {
                d.read_ahead = false;
            }
            return false;
        }
        Err(e) => Stash::Error(e.raw_os_error().unwrap_or(libc_eio())),
    };
    let mut st = t.st.get_mut(py);
    st.queued_read_epoch = st.read_epoch;
    if let Some(d) = st.dgram_mut() {
        d.stash = Some(stash);
    }
    true
}

/// `EIO`, for an error without an errno (never expected from `recvfrom`).
const fn libc_eio() -> i32 {
    5
}

/// A datagram read ahead whose reader item was dropped (reading paused and
/// resumed since): due again now that the transport reads (called at the
/// pre-poll step for transports whose reader was re-added).
pub(crate) fn stashed_read(py: Python<'_>, t: &StreamTransport) -> bool {
    let mut st = t.st.get_mut(py);
    let due = st.interest & READING != 0 && st.conn_lost == 0 && st.dgram().is_some_and(|d| d.stash.is_some());
    if due {
        st.queued_read_epoch = st.read_epoch;
    }
    due
}
