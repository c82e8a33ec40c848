//! The loop's mutable state, kept behind one `GilCell`.
//!
//! Mirrors the attributes `BaseEventLoop.__init__` creates for the hot path:
//! `_ready` (a deque of handles), `_scheduled` (a `heapq` list of timers),
//! `_stopping`, `_closed`, `_debug`, `_timer_cancelled_count`,
//! `_clock_resolution`, plus the selector's fd → (reader, writer) map.

use ferroloop_core::reactor::Events;
use ferroloop_core::ready::ReadyQueue;
use ferroloop_core::timers::TimerHeap;
use pyo3::prelude::*;

use crate::handles::{Handle, TimerHandle};
use crate::py::held::Held;
use crate::transports::stream::StreamRef;
use crate::transports::stream_io::IoKind;

/// One entry of the ready queue.
#[derive(Debug)]
pub(crate) enum Ready {
    /// A ferroloop handle (the common case).
    Native(Held<Handle>),
    /// Any other object with `_cancelled` and `_run()` (an `asyncio.Handle`
    /// queued through `_add_callback`, e.g. by asyncio's signal handling).
    Foreign(Held<PyAny>),
    /// Native transport events (no Python object per event), one variant
    /// per kind so that every entry is a tag and one pointer (see `io`).
    IoRead(StreamRef),
    IoWrite(StreamRef),
    IoWriterFailed(StreamRef),
    IoRegisterFailed(StreamRef),
    /// A listening socket's accept step.
    Accept(Held<crate::server::Listener>),
    /// A listening socket's set-up step.
    SetUp(Held<crate::server::Listener>),
    /// A socket operation's fd is ready.
    SockOp(crate::sock_ops::OpRef),
}

// A ready-queue entry is two words: bursts of callbacks move through it.
const _: () = assert!(std::mem::size_of::<Ready>() <= 16);

impl Ready {
    /// The entry of a transport event.
    pub(crate) fn io(stream: StreamRef, kind: IoKind) -> Self {
        match kind {
            IoKind::Read => Ready::IoRead(stream),
            IoKind::Write => Ready::IoWrite(stream),
            IoKind::WriterFailed => Ready::IoWriterFailed(stream),
            IoKind::RegisterFailed => Ready::IoRegisterFailed(stream),
        }
    }

    /// The transport and kind of a transport event.
    pub(crate) fn as_io(&self) -> Option<(&StreamRef, IoKind)> {
        match self {
            Ready::IoRead(s) => Some((s, IoKind::Read)),
            Ready::IoWrite(s) => Some((s, IoKind::Write)),
            Ready::IoWriterFailed(s) => Some((s, IoKind::WriterFailed)),
            Ready::IoRegisterFailed(s) => Some((s, IoKind::RegisterFailed)),
            _ => None,
        }
    }

    /// The entry of a listener step.
    pub(crate) fn listener(l: Held<crate::server::Listener>, step: crate::server::Step) -> Self {
        match step {
            crate::server::Step::Accept => Ready::Accept(l),
            crate::server::Step::SetUp => Ready::SetUp(l),
        }
    }

    /// A second entry for the same work (new strong references only: no
    /// allocation, no Python code, so the GIL cannot change hands meanwhile).
    pub(crate) fn clone_ref(&self, py: Python<'_>) -> Self {
        match self {
            Ready::Native(h) => Ready::Native(h.clone_ref(py)),
            Ready::Foreign(o) => Ready::Foreign(o.clone_ref(py)),
            Ready::IoRead(s) => Ready::IoRead(s.clone_ref(py)),
            Ready::IoWrite(s) => Ready::IoWrite(s.clone_ref(py)),
            Ready::IoWriterFailed(s) => Ready::IoWriterFailed(s.clone_ref(py)),
            Ready::IoRegisterFailed(s) => Ready::IoRegisterFailed(s.clone_ref(py)),
            Ready::Accept(l) => Ready::Accept(l.clone_ref(py)),
            Ready::SetUp(l) => Ready::SetUp(l.clone_ref(py)),
            Ready::SockOp(o) => Ready::SockOp(o.clone_ref(py)),
        }
    }

    pub(crate) fn as_any(&self, py: Python<'_>) -> Py<PyAny> {
        match self {
            Ready::Native(h) => h.to_py(py).into_any(),
            Ready::Foreign(o) => o.to_py(py),
            Ready::Accept(l) | Ready::SetUp(l) => l.to_py(py).into_any(),
            Ready::SockOp(o) => o.as_py().clone_ref(py),
            other => match other.as_io() {
                Some((stream, _)) => stream.as_py().clone_ref(py),
                None => py.None(),
            },
        }
    }
}

/// A watched fd: `selectors.SelectorKey` in asyncio's selector loop.
#[derive(Debug)]
pub(crate) struct FdReg {
    pub fileobj: Held<PyAny>,
    /// The sides with a watcher (what asyncio's selector key has).
    pub mask: u32,
    pub reader: Option<Watcher>,
    pub writer: Option<Watcher>,
    /// The kernel registration is edge-triggered for both sides and stays
    /// when the watchers go (only socket operations watch such an fd; see
    /// `fd_watch`). Otherwise it is level-triggered for `mask` exactly.
    pub edge: bool,
    /// For an edge registration: a weak reference to the socket object whose
    /// file it belongs to, to recognise a stale entry after the fd is reused.
    pub owner: Option<Held<PyAny>>,
    /// `sock_recv` on this fd last returned more than `BIG_READ` bytes: the
    /// next one reads straight into its `bytes` (see `EventLoop::recv_sized`).
    pub big_reads: bool,
}

/// What waits for one side of a watched fd.
#[derive(Debug)]
pub(crate) enum Watcher {
    /// A Python handle (`add_reader`/`add_writer`).
    Handle(Held<Handle>),
    /// A native socket operation (`sock_recv` & co.) waiting for readiness.
    Op(crate::sock_ops::OpRef),
}

impl Watcher {
    /// The object asyncio's selector key would hold (the handle, or the operation).
    pub(crate) fn to_py(&self, py: Python<'_>) -> Py<PyAny> {
        match self {
            Watcher::Handle(h) => h.to_py(py).into_any(),
            Watcher::Op(o) => o.as_py().clone_ref(py),
        }
    }

    /// `handle.cancel()` for a replaced or removed handle; a removed
    /// operation is abandoned (its future never completes, as on asyncio).
    pub(crate) fn cancel(self, py: Python<'_>) -> PyResult<()> {
        match self {
            Watcher::Handle(h) => {
                h.bind(py).call_method0(pyo3::intern!(py, "cancel"))?;
                Ok(())
            }
            Watcher::Op(o) => {
                drop(o);
                Ok(())
            }
        }
    }

    pub(crate) fn visit(&self, v: &crate::py::gc::Visitor<'_, '_>) -> Result<(), crate::py::gc::GcStop> {
        match self {
            Watcher::Handle(h) => v.visit(Some(&**h)),
            Watcher::Op(o) => v.visit(Some(o.as_py())),
        }
    }
}

/// Everything `_run_once` and the scheduling calls touch.
#[derive(Debug)]
pub(crate) struct LoopState {
    pub ready: ReadyQueue<Ready>,
    pub timers: TimerHeap<Held<TimerHandle>>,
    /// The watched fds (the selector's key map).
    pub fds: super::registrations::Registrations,
    /// The epoll result buffer; taken out while the GIL is released for a poll.
    pub events: Option<Events>,
    pub stopping: bool,
    pub closed: bool,
    pub debug: bool,
    /// What `set_debug()` was given when it was not a bool (asyncio stores
    /// any object and `get_debug()` returns it); `debug` is its truth value.
    pub debug_value: Option<Held<PyAny>>,
    pub timer_cancelled_count: i64,
    pub clock_resolution: f64,
    /// True from just before a poll until just after it (see `call_soon_threadsafe`).
    pub polling: bool,
    /// The waker was written during the current poll; one write is enough.
    pub woken: bool,
    /// `_run_forever_inner` is on the stack (handles it creates leave the GC, see `py::gc`).
    pub running: bool,
    /// Finished, cleared `Handle` objects kept for reuse (`handles::try_recycle`).
    pub pool: Vec<Held<Handle>>,
    /// The same for `TimerHandle` objects.
    pub timer_pool: Vec<Held<TimerHandle>>,
    /// Native stream transports by fd (payload addresses, not references:
    /// asyncio's `_transports` is a weak map). Entries are removed when the
    /// transport closes its socket or dies.
    pub streams: ferroloop_core::fdmap::FdMap<usize>,
    /// Transports whose writes left data queued during this iteration:
    /// their writers are registered right before the poll.
    pub new_writers: Vec<StreamRef>,
    /// Transports whose wanted interest changed (applied before the poll).
    pub retune: Vec<StreamRef>,
    /// The read buffer shared by all transports (only one reads at a time).
    pub scratch: Vec<u8>,
    /// The `bytes` of a past read, refilled for the next one (not GC-tracked).
    pub spare: crate::py::spare_bytes::SpareBytes,
    /// What `ferroloop.stats()` reads.
    pub stats: super::stats::Stats,
    /// The TLS read buffer (a `bytearray` of `SSLProtocol.max_size` and a
    /// memoryview of it) shared by the loop's `SSLProtocol`s: each
    /// `get_buffer` is followed by `recv_into` and a `buffer_updated` that
    /// copies the bytes into the protocol's BIO before anything else runs.
    pub tls_read: Option<(Held<PyAny>, Held<PyAny>)>,
}

/// How many cleared handles of each kind a loop keeps for reuse (about
/// 0.5 MB at most). A burst of `call_soon_threadsafe` from another thread
/// frees thousands of handles between two of its GIL slices; 4096 covers most
/// of a burst (threadsafe benchmark: 1.17x -> 1.41x uvloop; 16384 gained
/// nothing more).
pub(crate) const HANDLE_POOL_SIZE: usize = 4096;

impl LoopState {
    /// Give every queued handle back to the cycle collector (the loop stops running).
    pub(crate) fn retrack_all(&self, py: Python<'_>) {
        for r in self.ready.iter() {
            if let Ready::Native(h) = r {
                crate::handles::release(py, h, true);
            }
        }
        for (_, t) in self.timers.iter() {
            crate::handles::release(py, t.bind(py).as_super().as_unbound(), true);
        }
    }

    pub(crate) fn new() -> Self {
        Self {
            ready: ReadyQueue::default(),
            timers: TimerHeap::default(),
            fds: super::registrations::Registrations::default(),
            events: Some(Events::with_capacity(256)),
            stopping: false,
            closed: false,
            debug: false,
            debug_value: None,
            timer_cancelled_count: 0,
            clock_resolution: 1e-9,
            polling: false,
            woken: false,
            running: false,
            pool: Vec::with_capacity(HANDLE_POOL_SIZE),
            timer_pool: Vec::with_capacity(HANDLE_POOL_SIZE),
            streams: ferroloop_core::fdmap::FdMap::default(),
            new_writers: Vec::new(),
            retune: Vec::new(),
            scratch: Vec::new(),
            spare: crate::py::spare_bytes::SpareBytes::default(),
            stats: super::stats::Stats::new(),
            tls_read: None,
        }
    }
}

/// An empty state with nothing allocated (what `__clear__` leaves behind).
impl Default for LoopState {
    fn default() -> Self {
        Self {
            ready: ReadyQueue::default(),
            timers: TimerHeap::default(),
            fds: super::registrations::Registrations::default(),
            events: None,
            stopping: false,
            closed: true,
            debug: false,
            debug_value: None,
            timer_cancelled_count: 0,
            clock_resolution: 1e-9,
            polling: false,
            woken: false,
            running: false,
            pool: Vec::new(),
            timer_pool: Vec::new(),
            streams: ferroloop_core::fdmap::FdMap::default(),
            new_writers: Vec::new(),
            retune: Vec::new(),
            scratch: Vec::new(),
            spare: crate::py::spare_bytes::SpareBytes::default(),
            stats: super::stats::Stats::new(),
            tls_read: None,
        }
    }
}

impl crate::py::gc::GcRefs for LoopState {
    fn visit_refs(&self, v: &crate::py::gc::Visitor<'_, '_>) -> Result<(), crate::py::gc::GcStop> {
        // A running loop is referenced from the stack, so it cannot be
        // garbage; leaving out its queues only makes the collector more
        // conservative, and saves visiting every pending handle (mostly
        // untracked ones, see `py::gc`) in each full collection.
        if self.running {
            return Ok(());
        }
        for r in self.ready.iter() {
            match r {
                Ready::Native(h) => v.visit(Some(&**h))?,
                Ready::Foreign(o) => v.visit(Some(&**o))?,
                Ready::Accept(l) | Ready::SetUp(l) => v.visit(Some(&**l))?,
                Ready::SockOp(o) => v.visit(Some(o.as_py()))?,
                other => {
                    if let Some((stream, _)) = other.as_io() {
                        v.visit(Some(stream.as_py()))?;
                    }
                }
            }
        }
        for (_, t) in self.timers.iter() {
            v.visit(Some(&**t))?;
        }
        for (_, reg) in self.fds.iter() {
            match reg {
                super::registrations::Reg::Watch(w) => {
                    v.visit(Some(&*w.fileobj))?;
                    v.visit(w.owner.as_deref())?;
                    for side in [&w.reader, &w.writer].into_iter().flatten() {
                        side.visit(v)?;
                    }
                }
                super::registrations::Reg::Stream(t) => v.visit(Some(t.as_py()))?,
                super::registrations::Reg::Listener(l) => v.visit(Some(&**l))?,
            }
        }
        for t in self.new_writers.iter().chain(&self.retune) {
            v.visit(Some(t.as_py()))?;
        }
        v.visit(self.debug_value.as_deref())?;
        v.visit(self.stats.slow_value.as_deref())?;
        if let Some((buffer, view)) = &self.tls_read {
            v.visit(Some(&**buffer))?;
            v.visit(Some(&**view))?;
        }
        Ok(())
    }
}
