"""Differential fuzzer of the loop's public API (issue 7).

Hypothesis generates short scripts of calls to the public loop methods, with
valid and invalid arguments (wrong types, NaN, infinities, huge ints, negative
and closed fds, objects whose ``fileno()`` fails, coroutines where callables
belong, bad ``context=``), in four situations: from the loop's thread while the
loop is idle ("direct"), from a callback while ``run_forever`` runs
("running"), from another thread while the loop runs ("thread": the loop
waits in a callback until the call returns, so that nothing races it) or while
it is idle ("thread-idle"); an example may start on a closed loop.

Each script runs once on ``asyncio.SelectorEventLoop`` and once on
``ferroloop.new_event_loop`` and each run is reduced to plain data (an
``Env`` record): for every call the kind of its return value or its
exception's type and message (and, for the methods that return an awaitable,
the outcome of awaiting it), then, after the loop has run briefly, the
callbacks that ran, the exception-handler calls, log records, warnings and
unraisable exceptions. The two records must be equal; the few known
differences (docs/compatibility.md) are filtered explicitly where they apply,
each under a comment naming its D-number.

``FERROLOOP_FUZZ_EXAMPLES`` sets the number of examples per test (``make
soak`` raises it); CI runs derandomized.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import copy
import fcntl
import gc
import logging
import math
import os
import re
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import threading
import traceback
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ferroloop
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ_EXAMPLES = int(os.environ.get("FERROLOOP_FUZZ_EXAMPLES", "300"))
FUZZ_SETTINGS = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
# The project-wide 60 s per test is for the default example count; a soak
# run with thousands of examples needs proportionally longer.
fuzz_timeout = pytest.mark.timeout(max(120, int(FUZZ_EXAMPLES * 0.6)))

FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.SelectorEventLoop,
    "ferroloop": ferroloop.new_event_loop,
}
# No await in a fuzz example may take this long; if one does, the loop is
# stopped and the record says so (on one side only: a difference).
SAFETY_TIMEOUT = 10.0
DATA = b"0123456789" * 10


# ---------------------------------------------------------------------------
# Examples: plain data, printable in Hypothesis' falsifying examples.


@dataclass(frozen=True)
class T:
    """A token: an object the run creates afresh for each loop (a socket, a callback, ...)."""

    name: str

    def __repr__(self) -> str:
        return f"T({self.name!r})"


@dataclass(frozen=True)
class Step:
    mode: str  # "direct" | "running" | "thread" | "thread-idle"; pseudo steps ("!...") are always direct
    method: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Example:
    closed: bool  # close the loop before the first step
    steps: tuple[Step, ...]


def tokens_in(value: Any) -> list[str]:
    if isinstance(value, T):
        return [value.name]
    if isinstance(value, tuple | list):
        return [n for v in value for n in tokens_in(v)]
    return []


# ---------------------------------------------------------------------------
# Normalisation helpers.

ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]+|(?<=\.\.\.)[0-9a-fA-Fx]+(?=>)")  # reprlib shortens "<object at 0x...>"
SOCKADDR_RE = re.compile(r"((?:laddr|raddr)=\('[^']*'), \d+\)")  # an ephemeral port in a socket's repr
FUTURE_CREATED_RE = re.compile(r"(<Future .*?) created at [^\s<>]+:\d+>")
ASYNCIO_CREATED_RE = re.compile(r" created at " + re.escape(os.path.dirname(asyncio.__file__)) + r"/\w+\.py:\d+")
STACK_RE = re.compile(r"(Handle|Object) created at \(most recent call last\):\n(?:  .*(?:\n|$))*")
FRAMES_RE = re.compile(r"'source_traceback': \[(?:<FrameSummary file [^,]*, line \d+ in (?:<\w+>|[\w.]+)>(?:, )?)*\]")
WHEN_RE = re.compile(r"when=([^\s>]+)")
FD_RE = re.compile(r"(fd=|fd |fileno=|[Ff]ile descriptor:? |File descriptor )(\d+)")
TASK_NAME_RE = re.compile(r"Task-\d+")
ARGCOUNT_RE = re.compile(
    r"(takes (no|exactly one|\d+ positional) arguments?|missing \d+ required|(were|was) given"
    r"|takes no keyword arguments|unexpected keyword argument)"
)
BINDING_RE = re.compile(r"(unexpected keyword argument|missing \d+ required|multiple values for argument)")
CORO_STATE_RE = re.compile(r"coro=<([\w.<>]*?)\(\) (?:running at|done, defined at) [^>]*>")
FINALIZER_MESSAGES = frozenset(
    {
        "Task was destroyed but it is pending!",
        "Future exception was never retrieved",
        "Task exception was never retrieved",
    }
)
ASYNC_METHODS = frozenset(
    {
        "sock_recv",
        "sock_recv_into",
        "sock_sendall",
        "sock_connect",
        "sock_accept",
        "sock_recvfrom",
        "sock_recvfrom_into",
        "sock_sendto",
        "getaddrinfo",
        "getnameinfo",
        "create_connection",
        "create_server",
        "create_unix_server",
        "shutdown_asyncgens",
        "shutdown_default_executor",
        "run_in_executor",
        "create_task",
    }
)


def _when(m: re.Match[str]) -> str:
    # A timer's deadline is the clock's time (differs from run to run);
    # D-002: ferroloop keeps it as a float, so `when=-1` reads `when=-1.0`.
    try:
        v = float({"True": 1, "False": 0}.get(m.group(1), m.group(1)))
    except ValueError:
        return m.group(0)
    return "when=?" if math.isfinite(v) else f"when={v!r}"


def exc_type_name(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


class _Awaitable:
    """An awaitable that is neither a coroutine nor a future."""

    def __await__(self) -> Any:
        return iter(())


class _FilenoRaises:
    def __init__(self, exc: BaseException) -> None:
        self._exc = exc

    def fileno(self) -> int:
        raise self._exc


class _FilenoReturns:
    def __init__(self, value: Any) -> None:
        self._value = value

    def fileno(self) -> Any:
        return self._value


# ---------------------------------------------------------------------------
# One run of an example on one implementation.


class Env:
    """Runs an example on one loop and records what happened as plain data."""

    def __init__(self, impl: str, example: Example, *, dedupe: bool) -> None:
        self.impl = impl
        self.example = example
        self.dedupe = dedupe
        self.log: list[Any] = []
        self.errors: list[Any] = []
        self.finalized: list[str] = []
        self.logs: list[Any] = []
        self.unraisable: list[Any] = []
        self.made: dict[str, Any] = {}
        self.names: dict[int, str] = {}
        self.ports: set[int] = set()
        self.peers: dict[str, socket.socket] = {}
        self.sockets: list[socket.socket] = []
        self.coros: list[Any] = []
        self.executors: list[concurrent.futures.Executor] = []
        self.other_loops: list[asyncio.AbstractEventLoop] = []
        self.futures: list[asyncio.Future[Any]] = []
        self.handles: list[Any] = []
        self.servers: list[Any] = []
        self.transports: list[Any] = []
        self.threads: list[threading.Thread] = []
        self._tmp: str | None = None  # made when a token needs a path
        self.loop: Any = None

    @property
    def tmp(self) -> str:
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="flfuzz-")
        return self._tmp

    # ----- normalisation

    def text(self, s: Any) -> str:
        s = str(s)
        if self._tmp is not None:
            s = s.replace(self._tmp, "<tmp>")
        for port in self.ports:
            s = re.sub(rf"\b{port}\b", "<port>", s)
        s = ADDRESS_RE.sub("0x?", s)
        s = WHEN_RE.sub(_when, s)
        s = SOCKADDR_RE.sub(r"\1, ?)", s)
        # D-011: in debug mode, what native methods create records another
        # stack: a future from create_future was "created at" the caller, not
        # in asyncio's create_future; an fd watcher's handle at add_reader, not
        # _add_reader; handles keep 10 frames of the caller, asyncio's 7 or 8.
        s = FUTURE_CREATED_RE.sub(r"\1>", s)
        s = ASYNCIO_CREATED_RE.sub(" created at <asyncio>", s)
        s = STACK_RE.sub(r"\1 created at (most recent call last): <stack>", s)
        s = FRAMES_RE.sub("'source_traceback': <stack>", s)
        s = FD_RE.sub(r"\1?", s)
        return TASK_NAME_RE.sub("Task-?", s)

    def warning_text(self, message: Any) -> str:
        # D-014: the "Coroutine created at" stack of debug mode holds no
        # frames of ferroloop's native loop, so it reaches further out.
        return self.text(message).split("\nCoroutine created at", 1)[0]

    def exc(self, e: BaseException) -> tuple[str, str]:
        return (exc_type_name(e), self.text(e))

    def value(self, v: Any, depth: int = 0) -> Any:
        """A comparable description of a value."""
        name = self.names.get(id(v))
        if name is not None and self.made.get(name) is v:
            return ("token", name)
        if v is None or isinstance(v, bool):
            return v
        if isinstance(v, int):
            if type(v) is not int:  # an IntEnum: AddressFamily, SocketKind, Signals
                return ("enum", type(v).__name__, str(v))
            return ("int", "<port>" if v in self.ports else v)
        if isinstance(v, float):
            return ("float", "finite" if math.isfinite(v) else repr(v))
        if isinstance(v, str):
            return ("str", self.text(v))
        if isinstance(v, bytes | bytearray):
            return (type(v).__name__, bytes(v))
        cls_name = type(v).__name__
        # D-001: ferroloop's handles are native classes (same name, not
        # asyncio.Handle subclasses): compare their kind and repr, not class.
        if cls_name in ("Handle", "TimerHandle") and hasattr(v, "cancelled"):
            return ("timer-handle" if cls_name == "TimerHandle" else "handle", self.text(repr(v)))
        if asyncio.isfuture(v):
            return ("Task" if isinstance(v, asyncio.Task) else "Future", self.text(repr(v)))
        # D-006: ferroloop's sock_* methods return native coroutine objects.
        if asyncio.iscoroutine(v):
            return ("coroutine",)
        if isinstance(v, socket.socket):
            return ("socket", str(v.family), str(v.type))
        # D-007/D-008: transports are native classes; compare the kind.
        if isinstance(v, asyncio.BaseTransport):
            return ("transport",)
        if isinstance(v, asyncio.AbstractServer):
            return ("server",)
        if isinstance(v, BaseException):
            return ("exception", *self.exc(v))
        if isinstance(v, traceback.StackSummary):
            return ("stack",)  # D-011: debug-mode creation stacks differ in depth
        if depth < 4 and isinstance(v, tuple | list):
            return (type(v).__name__, [self.value(x, depth + 1) for x in v])
        if depth < 4 and isinstance(v, dict):
            return ("dict", sorted((str(k), self.value(x, depth + 1)) for k, x in v.items()))
        if isinstance(v, types.FunctionType | types.MethodType):
            return ("function", v.__qualname__)
        return ("other", type(v).__qualname__)

    def context_summary(self, ctx: Any) -> Any:
        if not isinstance(ctx, dict):
            return ("not-a-dict", self.value(ctx))
        out = []
        for k in sorted(ctx, key=str):
            v = ctx[k]
            if k == "message":
                out.append((k, self.text(v)))
            elif k in ("source_traceback", "handle_traceback"):
                out.append((k, "<traceback>"))
            elif k == "context":  # "Unhandled error in exception handler": the original context
                out.append((k, self.context_summary(v)))
            else:
                out.append((str(k), self.value(v)))
        return out

    # ----- hooks

    def _record_error(self, loop: Any, ctx: Any) -> None:
        summary = self.context_summary(ctx)
        if isinstance(ctx, dict) and ctx.get("message") in FINALIZER_MESSAGES:
            # Reported when the object is freed: by reference counting or by
            # the cycle collector, in an order that is not the loop's.
            # The coroutine's state then depends on when that was as well.
            self.finalized.append(CORO_STATE_RE.sub(r"coro=<\1()>", repr(summary)))
        else:
            self.errors.append(summary)

    def _unraisable_hook(self, u: Any) -> None:
        self.unraisable.append((exc_type_name(u.exc_value) if u.exc_value else None, self.text(u.exc_value)))

    # ----- tokens

    def get(self, name: str) -> Any:
        if name not in self.made:
            obj = self._make(name)
            self.made[name] = obj
            self.names[id(obj)] = name
        return self.made[name]

    def resolve(self, v: Any) -> Any:
        if isinstance(v, T):
            return self.get(v.name)
        if isinstance(v, tuple):
            return tuple(self.resolve(x) for x in v)
        if isinstance(v, list):
            return [self.resolve(x) for x in v]
        return v

    def _recorder(self, name: str) -> Callable[..., None]:
        def recorder(*args: Any) -> None:
            self.log.append((name, self.value(args)))

        recorder.__qualname__ = recorder.__name__ = name
        return recorder

    def _socketpair(self, name: str, *, blocking: bool, data: bytes) -> socket.socket:
        a, b = socket.socketpair()
        a.setblocking(blocking)
        if data:
            b.sendall(data)
        self.sockets += [a, b]
        self.peers[name] = b
        return a

    def _tcp(self, *, blocking: bool = False) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(blocking)
        self.sockets.append(s)
        return s

    def _listening(self, pending: int) -> socket.socket:
        s = self._tcp()
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        port = s.getsockname()[1]
        self.ports.add(port)
        for _ in range(pending):
            c = socket.create_connection(("127.0.0.1", port))
            self.ports.add(c.getsockname()[1])
            self.sockets.append(c)
        return s

    def _udp(self) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.bind(("127.0.0.1", 0))
        self.ports.add(s.getsockname()[1])
        self.sockets.append(s)
        return s

    def _make(self, name: str) -> Any:
        lp = self.loop
        if name == "loop":
            return lp
        if name in ("cb", "cb2", "fdcb", "fdcb2", "sigcb"):
            return self._recorder(name)
        if name == "cb_raise":

            def cb_raise(*args: Any) -> None:
                raise ValueError("callback failed")

            return cb_raise
        if name == "cb_exit":

            def cb_exit(*args: Any) -> None:
                raise SystemExit(3)

            return cb_exit
        if name == "coro_fn":

            async def coro_fn(*args: Any) -> str:
                self.log.append(("coro_fn", self.value(args)))
                return "done"

            return coro_fn
        if name == "coro_raise_fn":

            async def coro_raise_fn(*args: Any) -> None:
                raise ValueError("coroutine failed")

            return coro_raise_fn
        if name == "coro":
            c = self.get("coro_fn")("c")
            self.coros.append(c)
            return c
        if name == "coro_raise":
            c = self.get("coro_raise_fn")()
            self.coros.append(c)
            return c
        if name == "gen":

            def gen() -> Any:
                yield 1

            g = gen()
            self.coros.append(g)
            return g
        if name == "awaitable":
            return _Awaitable()
        if name == "obj":
            return object()
        if name == "ctx":
            return contextvars.copy_context()
        if name.startswith("fut_"):
            if name == "fut_other":
                other = FACTORIES[self.impl]()
                self.other_loops.append(other)
                return other.create_future()
            f = lp.create_future()
            if name == "fut_done":
                f.set_result("r")
            elif name == "fut_exc":
                f.set_exception(ValueError("future failed"))
            elif name == "fut_cancelled":
                f.cancel()
            elif name == "fut_soon":
                lp.call_soon(f.set_result, "soon")
            return f
        if name == "handler":

            def handler(loop: Any, ctx: Any) -> None:
                self.log.append(("handler", self.value(loop), self.context_summary(ctx)))

            return handler
        if name == "handler_raise":

            def handler_raise(loop: Any, ctx: Any) -> None:
                raise ValueError("handler failed")

            return handler_raise
        if name == "handler_coro":

            async def handler_coro(loop: Any, ctx: Any) -> None:
                pass

            return handler_coro
        if name == "factory":

            def factory(loop: Any, coro: Any, **kw: Any) -> Any:
                self.log.append(("factory", sorted(kw)))
                return asyncio.Task(coro, loop=loop, **kw)

            return factory
        if name == "factory_bad":

            def factory_bad(loop: Any, coro: Any, **kw: Any) -> Any:
                return "not a task"

            return factory_bad
        if name == "factory_raise":

            def factory_raise(loop: Any, coro: Any, **kw: Any) -> Any:
                raise ValueError("factory failed")

            return factory_raise
        if name == "executor":
            ex = concurrent.futures.ThreadPoolExecutor(1)
            self.executors.append(ex)
            return ex
        if name == "work":

            def work(*args: Any) -> Any:
                return ("worked", args)

            return work
        if name == "work_raise":

            def work_raise(*args: Any) -> Any:
                raise ValueError("work failed")

            return work_raise
        if name == "proto":
            return asyncio.Protocol
        if name == "proto_raise":

            def proto_raise() -> Any:
                raise ValueError("protocol factory failed")

            return proto_raise
        if name == "ctx_msg":
            return {"message": "custom"}
        if name == "ctx_exc":
            return {"message": "custom", "exception": ValueError("in context")}
        if name == "ctx_empty":
            return {}
        if name == "ctx_nomsg":
            return {"exception": KeyError("k")}
        if name == "ctx_future":
            return {"message": "with future", "future": self.get("fut_done")}
        if name == "ctx_handle":
            return {"message": "with handle", "handle": self.get("handle")}
        if name == "handle":
            h = lp.call_later(3600, self.get("cb"))
            self.handles.append(h)
            return h
        # sockets and fds
        if name == "rsock":
            return self._socketpair(name, blocking=False, data=DATA)
        if name == "rsock_blk":
            return self._socketpair(name, blocking=True, data=DATA)
        if name == "sock_idle":
            return self._socketpair(name, blocking=False, data=b"")
        if name == "sock_closed":
            s = socket.socket()
            s.close()
            return s
        if name == "fresh":
            return self._tcp()
        if name == "fresh_blk":
            return self._tcp(blocking=True)
        if name == "listener":
            return self._listening(pending=6)
        if name == "server":
            return self._listening(pending=0)
        if name == "port":
            return self.get("server").getsockname()[1]
        if name == "addr":
            return ("127.0.0.1", self.get("port"))
        if name == "port_refused":
            s = self._tcp()
            s.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
            port = s.getsockname()[1]
            self.ports.add(port)
            return port
        if name == "addr_refused":
            return ("127.0.0.1", self.get("port_refused"))
        if name == "udp":
            return self._udp()
        if name == "udp_ready":
            s = self._udp()
            sender = self._udp()
            for i in range(6):
                sender.sendto(b"dgram%d" % i, s.getsockname())
            return s
        if name == "udp_addr":
            return self.get("udp").getsockname()
        if name == "ssl_sock":
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            s = ctx.wrap_socket(socket.socket(), server_hostname="localhost", do_handshake_on_connect=False)
            self.sockets.append(s)
            return s
        if name == "unix_listener":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(os.path.join(self.tmp, "listener.sock"))
            s.listen(4)
            s.setblocking(False)
            self.sockets.append(s)
            return s
        if name == "path":
            return os.path.join(self.tmp, "server.sock")
        if name == "path_long":
            return os.path.join(self.tmp, "x" * 200)
        if name == "fd_rsock":
            return self.get("rsock").fileno()
        if name == "fd_idle":
            return self.get("sock_idle").fileno()
        if name == "fd_closed":
            # A number from a closed socket, above every fd in use, so nothing
            # the run opens later reuses it; the same number on both loops.
            s = socket.socket()
            fd = fcntl.fcntl(s.fileno(), fcntl.F_DUPFD, 700)
            os.close(fd)
            s.close()
            return fd
        if name == "fileno_value":
            return _FilenoRaises(ValueError("no fileno"))
        if name == "fileno_os":
            return _FilenoRaises(OSError("fileno failed"))
        if name == "fileno_str":
            return _FilenoReturns("5")
        if name == "fileno_neg":
            return _FilenoReturns(-3)
        if name == "buf":
            return bytearray(4)
        if name == "buf0":
            return bytearray(0)
        if name == "mv":
            return memoryview(bytearray(4))
        if name == "now":
            return lp.time()
        raise AssertionError(f"unknown token {name}")

    # ----- running calls in the four situations

    def _safety(self) -> Any:
        try:
            return self.loop.call_later(SAFETY_TIMEOUT, self.loop.stop)
        except Exception:  # asyncio with a non-number deadline in its heap (D-002)
            return None

    @staticmethod
    def _cancel(safety: Any) -> None:
        if safety is not None:
            safety.cancel()

    def _run_forever_until(self, done: Callable[[], bool]) -> None:
        """run_forever until done() (callbacks may raise out of the loop, or stop it early)."""
        for _ in range(5):
            try:
                self.loop.run_forever()
            except BaseException as e:
                self.log.append(("loop-raised", self.exc(e)))
            if done():
                return
        self.log.append(("gave-up-waiting",))

    def call(self, mode: str, fn: Callable[[], Any]) -> tuple[str, tuple[str, Any, Any]]:
        lp = self.loop
        if mode in ("running", "thread") and (lp.is_closed() or lp.is_running()):
            mode = "direct" if mode == "running" else "thread-idle"
        box: list[tuple[str, Any, Any]] = []

        def invoke() -> None:
            # The outcome is described at once, in the calling thread: a
            # future's state may change as soon as the loop runs again.
            try:
                r = fn()
            except BaseException as e:
                box.append(("raise", e, self.outcome(("raise", e))))
            else:
                box.append(("return", r, self.outcome(("return", r))))

        if mode == "direct":
            invoke()
        elif mode == "thread-idle":
            t = threading.Thread(target=invoke, daemon=True)
            t.start()
            t.join(SAFETY_TIMEOUT)
            if t.is_alive():
                self.threads.append(t)
                box.append(("raise", None, ("did not return",)))
        elif mode == "running":

            def runner() -> None:
                try:
                    invoke()
                finally:
                    lp.stop()

            safety = self._safety()
            lp.call_soon(runner)
            self._run_forever_until(lambda: bool(box))
            self._cancel(safety)
        else:  # thread: the loop runs here, the call is made from another thread
            finished: list[bool] = []

            def finish() -> None:
                finished.append(True)
                lp.stop()

            def worker() -> None:
                invoke()
                lp.call_soon_threadsafe(finish)

            def start() -> None:
                # The loop is running (in this thread) but waits here while the
                # other thread calls: nothing else it does can race the call.
                t = threading.Thread(target=worker, daemon=True)
                self.threads.append(t)
                t.start()
                t.join(SAFETY_TIMEOUT)

            safety = self._safety()
            lp.call_soon(start)
            self._run_forever_until(lambda: bool(finished))
            self._cancel(safety)
        if not box:
            return mode, ("raise", None, ("not run",))
        return mode, box[0]

    def outcome(self, res: tuple[str, Any]) -> Any:
        kind, v = res
        if kind == "raise":
            return ("raise", *self.exc(v))
        return ("return", self.value(v))

    def settle(self, v: Any) -> Any:
        """Await what an async method returned; on a closed loop, step its coroutine by hand."""
        lp = self.loop
        if not (asyncio.iscoroutine(v) or asyncio.isfuture(v)):
            return None
        if lp.is_closed():
            if not asyncio.iscoroutine(v):
                return ("not-awaited", self.value(v))
            try:
                y = v.send(None)
            except StopIteration as e:
                return ("await-return", self.value(e.value))
            except BaseException as e:
                return ("await-raise", *self.exc(e))
            out = ("await-suspended", self.value(y))
            v.close()
            return out
        if lp._stopping:
            # A stop() called while the loop was idle ends the next run after
            # one iteration; whether work finished in another thread (an
            # executor's) arrives in time for it is a race. Spend it here.
            self.log.append(("pending stop",))
            self._run_forever_until(lambda: True)
        if isinstance(v, asyncio.Task):
            # A task may never finish (a bad context= leaves it unstarted):
            # let the loop run a few times and take its state.
            runs = [self.drain(1) for _ in range(3) if not v.done()]
            return ("task-state", runs, self.future_state(v))
        # A task of our own: the loop's task factory is the fuzzer's to vary, not the harness's.
        fut = v if asyncio.isfuture(v) else asyncio.Task(v, loop=lp)
        for _ in range(3):
            safety = self._safety()
            try:
                r = lp.run_until_complete(fut)
            except BaseException as e:
                if not fut.done():
                    # A callback raised SystemExit out of the loop (or a
                    # stop() ended it) first: await again, as a caller would.
                    self.log.append(("await interrupted", self.exc(e)))
                    continue
                return ("await-raise", *self.exc(e))
            finally:
                self._cancel(safety)
            self.keep(r)
            return ("await-return", self.value(r))
        return ("await-unfinished",)

    def keep(self, v: Any) -> None:
        """Remember what must be closed at the end."""
        if isinstance(v, socket.socket):
            self.sockets.append(v)
        elif isinstance(v, asyncio.BaseTransport):
            self.transports.append(v)
        elif isinstance(v, asyncio.AbstractServer):
            self.servers.append(v)
        elif asyncio.isfuture(v):
            self.futures.append(v)
        elif type(v).__name__ in ("Handle", "TimerHandle") and hasattr(v, "cancel"):
            self.handles.append(v)
        elif isinstance(v, tuple):
            for x in v:
                self.keep(x)

    def pseudo(self, step: Step) -> Any:
        lp = self.loop
        if step.method == "!drain":
            return self.drain(1)
        if step.method == "!close_sock":
            self.resolve(step.args[0]).close()
            return None
        if step.method == "!send":
            try:
                self.peers[step.args[0].name].send(b"more")
            except OSError as e:
                return self.exc(e)
            return None
        if step.method == "!kill":
            sig = step.args[0]
            if signal.getsignal(sig) in (signal.SIG_DFL, signal.SIG_IGN, None):
                return "no handler installed: not sent"  # the default action would end the process
            os.kill(os.getpid(), sig)
            return "sent"
        if step.method == "!debug":
            lp.set_debug(step.args[0])
            return None
        raise AssertionError(step.method)

    def step(self, step: Step) -> Any:
        if step.method.startswith("!"):
            return (step.method, self.pseudo(step))
        lp = self.loop
        args = self.resolve(step.args)
        kwargs = {k: self.resolve(v) for k, v in step.kwargs}
        if step.method == "run_forever" and step.mode in ("direct", "thread-idle") and not lp.is_closed():
            lp.call_soon(lp.stop)  # a direct run_forever must end
        method = getattr(lp, step.method)
        mode, (kind, value, described) = self.call(step.mode, lambda: method(*args, **kwargs))
        rec = [mode, described]
        if kind == "return":
            if step.method in ASYNC_METHODS and not lp.is_running():
                rec.append(self.settle(value))
            self.keep(value)
        return rec

    def drain(self, times: int) -> Any:
        lp = self.loop
        if lp.is_closed() or lp.is_running():
            return "not run"
        out = []
        for _ in range(times):
            co = asyncio.sleep(0)
            safety = self._safety()
            try:
                lp.run_until_complete(co)
                out.append("ok")
            except BaseException as e:
                out.append(self.exc(e))
            finally:
                self._cancel(safety)
                co.close()
        return out

    def run_quietly(self, co: Any) -> Any:
        """Run a coroutine of the clean-up; what goes wrong is recorded, not raised."""
        safety = self._safety()
        try:
            self.loop.run_until_complete(co)
            return "ok"
        except BaseException as e:
            return self.exc(e)
        finally:
            self._cancel(safety)
            co.close()

    def future_state(self, f: Any) -> Any:
        if not f.done():
            return "pending"
        if f.cancelled():
            return "cancelled"
        e = f.exception()
        return ("exception", *self.exc(e)) if e is not None else ("result", self.value(f.result()))

    # ----- the whole run

    def run(self) -> dict[str, Any]:
        rec: dict[str, Any] = {}
        root = logging.getLogger()
        handler = _ListHandler(self)
        old_level = root.level
        gc_was_enabled = gc.isenabled()
        old_unraisable = sys.unraisablehook
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gc.disable()
            sys.unraisablehook = self._unraisable_hook
            root.addHandler(handler)
            root.setLevel(logging.WARNING)
            try:
                self.loop = FACTORIES[self.impl]()
                # Debug mode's "Executing <Handle> took 0.1 seconds" depends on the machine's load.
                self.loop.slow_callback_duration = 1000.0
                self.loop.set_exception_handler(self._record_error)
                # What asyncio's code finds with get_event_loop() (gather() in
                # create_server, stepped by hand on a closed loop).
                asyncio.set_event_loop(self.loop)
                self.names[id(self.loop)] = "loop"
                self.made["loop"] = self.loop
                names = [n for s in self.example.steps for n in tokens_in((s.args, s.kwargs))]
                for n in sorted(set(names), key=lambda n: (n == "fd_closed", names.index(n))):
                    self.get(n)
                if self.example.closed:
                    self.loop.close()
                rec["steps"] = [self.step(s) for s in self.example.steps]
                rec["drain"] = self.drain(2)
                rec["futures"] = [self.future_state(f) for f in self.futures]
                rec["cleanup"] = self.cleanup()
                self.release()
                gc.collect(0)
                gc.collect(0)
            finally:
                asyncio.set_event_loop(None)
                root.removeHandler(handler)
                root.setLevel(old_level)
                sys.unraisablehook = old_unraisable
                if gc_was_enabled:
                    gc.enable()
                self.dispose()
        rec["log"] = self._dedupe(self.log)
        rec["errors"] = self._dedupe(self.errors)
        rec["finalized"] = sorted(self.finalized)
        rec["signals_left"] = _restore_signals()
        rec["logs"] = self._dedupe(self.logs)
        rec["unraisable"] = self.unraisable
        rec["warnings"] = self._dedupe([(w.category.__name__, self.warning_text(w.message)) for w in caught])
        return rec

    def _dedupe(self, items: list[Any]) -> list[Any]:
        # A ready fd's callback runs once per loop iteration, and how many
        # iterations it takes until an executor's work is done is timing:
        # where both meet, keep one of each run of equal entries.
        if not self.dedupe:
            return items
        return [x for i, x in enumerate(items) if i == 0 or items[i - 1] != x]

    def cleanup(self) -> Any:
        """Release what the run made; the loop's own messages on the way are recorded too."""
        lp = self.loop
        out: list[Any] = []
        for closer in [h.cancel for h in self.handles] + [x.close for x in self.transports + self.servers]:
            try:
                closer()
            except Exception as e:  # two servers on one socket: the second close() fails
                out.append(self.exc(e))
        if not lp.is_closed():
            for s in self.sockets:
                if s.fileno() >= 0:
                    lp.remove_reader(s)
                    lp.remove_writer(s)
            for sig in (signal.SIGUSR1, signal.SIGUSR2):
                lp.remove_signal_handler(sig)
            for f in self.futures:
                f.cancel()
            for task in asyncio.all_tasks(lp):
                task.cancel()
            out.append(self.drain(2))
            for srv in self.servers:
                out.append(self.run_quietly(srv.wait_closed()))
            out.append(self.drain(1))
            out.append(self.run_quietly(lp.shutdown_asyncgens()))
            out.append(self.run_quietly(lp.shutdown_default_executor()))
            lp.close()
        out.append(("pending tasks", sorted(self.text(repr(t)) for t in asyncio.all_tasks(lp))))
        return out

    def release(self) -> None:
        for c in self.coros:
            c.close()
        for other in self.other_loops:
            other.close()
        for ex in self.executors:
            ex.shutdown(wait=True)
        for s in self.sockets:
            s.close()
        for p in self.peers.values():
            p.close()
        for t in self.threads:
            t.join(SAFETY_TIMEOUT)
        self.made.clear()
        self.names.clear()
        self.futures.clear()
        self.handles.clear()
        self.servers.clear()
        self.transports.clear()
        self.coros.clear()
        self.loop = None

    def dispose(self) -> None:
        """After a failure as well: nothing may outlive the example."""
        try:
            if self.loop is not None and not self.loop.is_running() and not self.loop.is_closed():
                self.loop.close()
        finally:
            for s in self.sockets:
                s.close()
            for p in self.peers.values():
                p.close()
            for ex in self.executors:
                ex.shutdown(wait=False)
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)


class _ListHandler(logging.Handler):
    def __init__(self, env: Env) -> None:
        super().__init__(logging.WARNING)
        self.env = env

    def emit(self, record: logging.LogRecord) -> None:
        self.env.logs.append((record.name, record.levelname, self.env.text(record.getMessage())))


# ---------------------------------------------------------------------------
# Known deviations and the comparison.

NATIVE_POSITIONAL = {
    "call_soon": ("callback",),
    "call_soon_threadsafe": ("callback",),
    "call_later": ("delay", "callback"),
    "call_at": ("when", "callback"),
    "sock_recv": ("sock", "n"),
    "sock_recv_into": ("sock", "buf"),
    "sock_recvfrom": ("sock", "bufsize"),
    "sock_recvfrom_into": ("sock", "buf", "nbytes"),
    "sock_sendall": ("sock", "data"),
    "sock_sendto": ("sock", "data", "address"),
    "sock_accept": ("sock",),
    "create_task": ("coro",),
}


def _is_native(method: str) -> bool:
    return not isinstance(getattr(ferroloop.Loop, method, None), types.FunctionType)


SOCK_NATIVE = frozenset(n for n in NATIVE_POSITIONAL if n.startswith("sock_"))
SOCKET_TOKENS = frozenset(
    {"rsock", "rsock_blk", "sock_idle", "sock_closed", "fresh", "fresh_blk", "listener", "server", "udp", "udp_ready"}
    | {"ssl_sock", "unix_listener"}
)
_MISSING = object()


def argument(step: Step, index: int, name: str) -> Any:
    if len(step.args) > index:
        return step.args[index]
    return dict(step.kwargs).get(name, _MISSING)


def failure(rec_step: list[Any]) -> Any:
    """The exception a call raised, at once or when awaited; None if it did not fail."""
    if rec_step[1][0] == "raise":
        return rec_step[1][1:]
    if len(rec_step) > 2 and rec_step[2] is not None and rec_step[2][0] == "await-raise":
        return rec_step[2][1:]
    return None


def explain(example: Example, rec_a: dict[str, Any], rec_f: dict[str, Any]) -> Example | None:
    """The example with the calls that hit a known deviation which changes
    what happens next rewritten or dropped; None if there are none."""
    steps: list[Step] = []
    changed = False
    closed_socks: set[str] = set()
    for i, step in enumerate(example.steps):
        if step.method == "!close_sock":
            closed_socks.add(step.args[0].name)
        if step.method.startswith("!"):
            steps.append(step)
            continue
        out_a, out_f = rec_a["steps"][i][1], rec_f["steps"][i][1]
        if out_a == out_f:
            steps.append(step)
            continue
        f_raised = out_f[0] == "raise"
        when = argument(step, 0, "when")
        fd = argument(step, 0, "fd")
        if (
            step.method == "call_at"
            and not isinstance(when, int | float)
            and when not in (None, _MISSING)
            and f_raised
            and out_f[1] in ("TypeError", "OverflowError")
        ):
            # D-002: call_at converts the deadline to a float at once: where
            # asyncio accepts the call and fails later inside the loop,
            # ferroloop raises here. Compare the rest without this call.
            changed = True
            continue
        if (
            step.method in ("add_reader", "add_writer")
            and isinstance(fd, T)
            and fd.name in closed_socks
            and out_f == ("raise", "ValueError", "Invalid file descriptor: -1")
        ):
            # D-013: re-adding a watcher for a closed socket object that is
            # still registered. Compare the rest without this call.
            changed = True
            continue
        names = NATIVE_POSITIONAL.get(step.method, ())
        kw = dict(step.kwargs)
        if (
            names
            and any(n in kw for n in names)
            and f_raised
            and out_f[1] == "TypeError"
            and "required positional argument" in out_f[2]
        ):
            # D-010: ferroloop's native methods take their positional
            # parameters only by position. Compare the same call made
            # positionally instead.
            moved = []
            for n in names[len(step.args) :]:
                if n not in kw:
                    break
                moved.append(kw.pop(n))
            if moved and not any(n in kw for n in names):
                steps.append(Step(step.mode, step.method, step.args + tuple(moved), tuple(kw.items())))
                changed = True
                continue
        steps.append(step)
    return Example(example.closed, tuple(steps)) if changed else None


def reconcile(example: Example, rec_a: dict[str, Any], rec_f: dict[str, Any]) -> dict[str, Any]:
    """rec_f with the differences that known deviations explain (and that
    change nothing else) replaced by asyncio's."""
    rec_f = copy.deepcopy(rec_f)
    for i, step in enumerate(example.steps):
        if step.method.startswith("!"):
            continue
        sa, sf = rec_a["steps"][i], rec_f["steps"][i]
        if sa == sf:
            continue
        out_a, out_f = sa[1], sf[1]
        fail_a, fail_f = failure(sa), failure(sf)
        if (
            _is_native(step.method)
            and out_a[:2] == out_f[:2] == ("raise", "TypeError")
            and ARGCOUNT_RE.search(out_a[2])
            and ARGCOUNT_RE.search(out_f[2])
        ):
            # D-009: argument-count errors of native methods use C's wording.
            rec_f["steps"][i] = sa
        elif (
            step.method in NATIVE_POSITIONAL
            and step.kwargs
            and out_a[:2] == out_f[:2] == ("raise", "TypeError")
            and BINDING_RE.search(out_a[2])
            and BINDING_RE.search(out_f[2])
        ):
            # D-010: with keyword arguments and missing positional ones, both
            # reject the call, ferroloop first naming the missing argument.
            rec_f["steps"][i] = sa
        elif (
            step.method in SOCK_NATIVE
            and not (isinstance(argument(step, 0, "sock"), T) and argument(step, 0, "sock").name in SOCKET_TOKENS)
            and fail_a is not None
            and fail_f is not None
        ):
            # D-012: given something that is not a socket, the native sock_*
            # methods fail on another of its attributes (or on the buffer) first.
            rec_f["steps"][i] = sa
        elif (
            step.method in SOCK_NATIVE
            and fail_a is not None
            and fail_f is not None
            and fail_a[0] == fail_f[0] == "TypeError"
            and fail_a[1].endswith(", not None")
            and fail_f[1] == fail_a[1] + "Type"
        ):
            # D-012: the buffer check names None's type ("not NoneType").
            rec_f["steps"][i] = sa
        elif (
            step.method in SOCK_NATIVE
            and fail_a == ("RuntimeError", "Event loop is closed")
            and fail_f == ("OSError", "[Errno 9] Bad file descriptor")
        ):
            # D-015: an operation that must wait, on a closed loop, fails in
            # ferroloop's closed reactor instead of asyncio's closed check.
            rec_f["steps"][i] = sa
    return rec_f


def run_isolated(impl: str, example: Example, *, dedupe: bool) -> dict[str, Any]:
    """One run; the interpreter-wide coroutine origin tracking a script leaves
    set (debug mode toggled around a loop that stops) is recorded, so both
    loops must leave the same, and then restored for the next run and test."""
    depth = sys.get_coroutine_origin_tracking_depth()
    try:
        rec = Env(impl, example, dedupe=dedupe).run()
        rec["origin_tracking_left"] = sys.get_coroutine_origin_tracking_depth() - depth
        return rec
    finally:
        sys.set_coroutine_origin_tracking_depth(depth)


def run_both(example: Example, *, dedupe: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    rec_a = run_isolated("asyncio", example, dedupe=dedupe)
    rec_f = run_isolated("ferroloop", example, dedupe=dedupe)
    return rec_a, rec_f


def check(example: Example, *, dedupe: bool = False) -> None:
    rec_a, rec_f = run_both(example, dedupe=dedupe)
    if rec_a == rec_f:
        return
    for _ in range(3):
        rewritten = explain(example, rec_a, rec_f)
        if rewritten is None:
            break
        example = rewritten
        rec_a, rec_f = run_both(example, dedupe=dedupe)
    rec_f = reconcile(example, rec_a, rec_f)
    assert rec_f == rec_a, describe_difference(example, rec_a, rec_f)


def describe_difference(example: Example, rec_a: dict[str, Any], rec_f: dict[str, Any]) -> str:
    lines = [f"asyncio and ferroloop differ on {example!r}"]
    for key in rec_a:
        a, f = rec_a[key], rec_f.get(key)
        if a == f:
            continue
        if isinstance(a, list) and isinstance(f, list):
            i = next((i for i, (x, y) in enumerate(zip(a, f, strict=False)) if x != y), min(len(a), len(f)))
            lines.append(f"{key}[{i}]:")
            lines.append(f"  asyncio:   {a[i] if i < len(a) else '<missing>'!r}")
            lines.append(f"  ferroloop: {f[i] if i < len(f) else '<missing>'!r}")
        else:
            lines.append(f"{key}:\n  asyncio:   {a!r}\n  ferroloop: {f!r}")
    return "\n".join(lines)


def _restore_signals() -> list[Any]:
    left = []
    for sig in (signal.SIGUSR1, signal.SIGUSR2):
        if signal.getsignal(sig) is not signal.SIG_DFL:
            left.append(("handler", sig))
            signal.signal(sig, signal.SIG_DFL)
    if signal.set_wakeup_fd(-1) != -1:
        left.append(("wakeup fd", "set"))
    return left


# ---------------------------------------------------------------------------
# Strategies.


@dataclass(frozen=True)
class Spec:
    params: tuple[tuple[str, Any], ...] = ()
    varargs: Any = None
    kwonly: tuple[tuple[str, Any], ...] = ()


def pick(*values: Any) -> Any:
    return st.sampled_from(values)


def weighted(*choices: tuple[int, Any]) -> Any:
    """One of the strategies, in proportion to the weights (st.one_of picks
    its distinct branches about evenly, whatever their multiplicity)."""
    indices = [i for i, (w, _) in enumerate(choices) for _ in range(w)]
    return st.sampled_from(indices).flatmap(lambda i: choices[i][1])


def toks(*names: str) -> list[T]:
    return [T(n) for n in names]


WRONG = [None, "x", b"x", T("obj"), 1.5]
HUGE = [2**31, 2**63, 2**100, -1, -(2**63)]
NONFINITE = [math.nan, math.inf, -math.inf]
EXTRA = pick(1, "a", None, b"b", math.nan, T("obj"), T("cb2"))

CALLBACK = pick(*toks("cb", "cb", "cb2", "cb_raise", "cb_exit", "coro_fn", "coro", "obj"), None, "x", 1)
CONTEXT = pick(T("ctx"), T("ctx"), None, "x", 1, T("obj"))
DELAY = pick(0, 0, -1, 0.0, -0.0, 3600, *NONFINITE, *HUGE, "x", None, b"1", T("obj"), True, 1e308, 2**1024)
WHEN = pick(0, -1, T("now"), T("now"), 1e18, *NONFINITE, *HUGE, "x", None, T("obj"), b"x", True)
TASK_CORO = pick(*toks("coro", "coro", "coro_raise", "coro_fn", "gen", "awaitable", "fut_done", "obj"), None, 1)
NAME = pick("name", 1, None, T("obj"))


@st.composite
def call_args(draw: Any, spec: Spec) -> tuple[tuple[Any, ...], tuple[tuple[str, Any], ...]]:
    values = [draw(s) for _, s in spec.params]
    names = [n for n, _ in spec.params]
    shape = draw(pick(*["normal"] * 10, "missing", "extra", "keywords"))
    args = list(values)
    kwargs: dict[str, Any] = {}
    if shape == "missing" and values:
        args = args[: draw(st.integers(0, len(values) - 1))]
    elif shape == "extra":
        args += draw(st.lists(EXTRA, min_size=1, max_size=2))
    elif shape == "keywords" and values:
        k = draw(st.integers(1, len(values)))
        args = values[: len(values) - k]
        kwargs = dict(zip(names[len(values) - k :], values[len(values) - k :], strict=True))
    if spec.varargs is not None and shape == "normal":
        args += draw(st.lists(spec.varargs, max_size=2))
    for name, s in spec.kwonly:
        if draw(st.integers(0, 2)) == 0:
            kwargs[name] = draw(s)
    if draw(st.integers(0, 24)) == 0:
        kwargs["bogus"] = 1
    return tuple(args), tuple(kwargs.items())


MODES = ("direct", "direct", "direct", "running", "thread", "thread-idle")


def examples(
    specs: dict[str, Spec],
    *,
    pseudo: dict[str, Any] | None = None,
    modes: tuple[str, ...] = MODES,
    max_steps: int = 4,
) -> Any:
    pseudo = pseudo or {}
    names = sorted(specs) * 2 + sorted(pseudo)  # pseudo steps half as often as each method

    @st.composite
    def step(draw: Any) -> Step:
        name = draw(st.sampled_from(names))
        if name in pseudo:
            return Step("direct", name, draw(pseudo[name]))
        args, kwargs = draw(call_args(specs[name]))
        return Step(draw(st.sampled_from(modes)), name, args, kwargs)

    return st.builds(
        Example,
        closed=pick(False, False, False, False, True),
        steps=st.lists(step(), min_size=1, max_size=max_steps).map(tuple),
    )


SCHEDULING = {
    "call_soon": Spec((("callback", CALLBACK),), EXTRA, (("context", CONTEXT),)),
    "call_soon_threadsafe": Spec((("callback", CALLBACK),), EXTRA, (("context", CONTEXT),)),
    "call_later": Spec((("delay", DELAY), ("callback", CALLBACK)), EXTRA, (("context", CONTEXT),)),
    "call_at": Spec((("when", WHEN), ("callback", CALLBACK)), EXTRA, (("context", CONTEXT),)),
    "time": Spec(),
    "create_future": Spec(),
    "create_task": Spec((("coro", TASK_CORO),), None, (("name", NAME), ("context", CONTEXT))),
}

# Mostly one open fd per example (as a socket or as its number), so that an
# example adds, fires, replaces and removes watchers of the same fd; then the
# other open one, or an invalid one.
PRIMARY_FD = st.shared(pick("rsock", "sock_idle"), key="primary fd")
FD = weighted(
    (3, PRIMARY_FD.map(T)),
    (2, PRIMARY_FD.map(lambda name: T("fd_" + name.removeprefix("sock_")))),
    (1, pick(*toks("rsock", "sock_idle", "fd_rsock", "fd_idle"))),
    (
        2,
        pick(
            *toks("fd_closed", "sock_closed", "fileno_value", "fileno_os", "fileno_str", "fileno_neg", "obj"),
            *(-1, -5, 2**31, 2**63, 2**100, "x", None, 1.5, b"x"),
        ),
    ),
)
FD_CALLBACK = pick(*toks("fdcb", "fdcb", "fdcb2", "cb_raise", "coro_fn"), None, "x")
FD_WATCH = {
    "add_reader": Spec((("fd", FD), ("callback", FD_CALLBACK)), EXTRA),
    "add_writer": Spec((("fd", FD), ("callback", FD_CALLBACK)), EXTRA),
    "remove_reader": Spec((("fd", FD),)),
    "remove_writer": Spec((("fd", FD),)),
}
FD_PSEUDO = {
    "!drain": st.just(()),
    "!close_sock": st.tuples(pick(*toks("rsock", "sock_idle"))),
    "!send": st.tuples(pick(*toks("rsock", "sock_idle"))),
}

RUN_TARGET = pick(
    *toks("coro", "coro", "coro_raise", "fut_done", "fut_exc", "fut_cancelled", "fut_soon", "fut_other"),
    *toks("awaitable", "gen", "coro_fn", "obj", "loop"),
    None,
    1,
)
DEBUG_VALUE = pick(True, False, 1, 0, "x", None)
LIFECYCLE = {
    "run_until_complete": Spec((("future", RUN_TARGET),)),
    "run_forever": Spec(),
    "stop": Spec(),
    "is_running": Spec(),
    "is_closed": Spec(),
    "close": Spec(),
    "shutdown_asyncgens": Spec(),
    "shutdown_default_executor": Spec(),
    "set_debug": Spec((("enabled", DEBUG_VALUE),)),
    "get_debug": Spec(),
    "call_soon": Spec((("callback", pick(*toks("cb", "cb2", "cb_raise"))),), EXTRA),
}

RECV_SOCK = pick(*toks("rsock", "rsock", "rsock_blk", "sock_closed", "ssl_sock", "udp_ready", "listener"))
BAD_SOCK = pick(None, 1, "x", T("obj"), T("fileno_value"))
NBYTES = pick(1, 4, 4, 0, -1, 2**63, 2**100, "x", None, 1.5)
RECV_BUF = pick(*toks("buf", "buf", "buf0", "mv"), b"abcd", None, "x")
SEND_SOCK = pick(*toks("rsock", "sock_idle", "sock_idle", "sock_closed", "ssl_sock", "fresh", "udp"))
SEND_DATA = pick(b"abc", bytearray(b"abc"), T("mv"), b"", "abc", None, 1)
CONNECT_SOCK = pick(*toks("fresh", "fresh", "fresh_blk", "rsock", "sock_closed", "udp", "ssl_sock"))
ADDRESS = pick(
    *toks("addr", "addr", "addr_refused", "udp_addr"),
    ("127.0.0.1", -1),
    ("127.0.0.1", 2**100),
    ("127.0.0.1",),
    ("127.0.0.1", "x"),
    "x",
    None,
    1,
)
ACCEPT_SOCK = pick(*toks("listener", "listener", "rsock", "sock_closed", "fresh", "udp", "ssl_sock"))
DGRAM_SOCK = pick(*toks("udp_ready", "udp_ready", "rsock", "sock_closed", "fresh"))


def either(good: Any, bad: Any = BAD_SOCK) -> Any:
    return weighted((3, good), (1, bad))


SOCK_OPS = {
    "sock_recv": Spec((("sock", either(RECV_SOCK)), ("n", NBYTES))),
    "sock_recv_into": Spec((("sock", either(RECV_SOCK)), ("buf", RECV_BUF))),
    "sock_sendall": Spec((("sock", either(SEND_SOCK)), ("data", SEND_DATA))),
    "sock_connect": Spec((("sock", either(CONNECT_SOCK)), ("address", ADDRESS))),
    "sock_accept": Spec((("sock", either(ACCEPT_SOCK)),)),
    "sock_recvfrom": Spec((("sock", either(DGRAM_SOCK)), ("bufsize", NBYTES))),
    "sock_recvfrom_into": Spec((("sock", either(DGRAM_SOCK)), ("buf", RECV_BUF)), None, (("nbytes", NBYTES),)),
    "sock_sendto": Spec((("sock", either(pick(*toks("udp", "udp", "rsock", "sock_closed")))), ("data", SEND_DATA))),
}
# sock_sendto's address is positional after data.
SOCK_OPS["sock_sendto"] = Spec((*SOCK_OPS["sock_sendto"].params, ("address", ADDRESS)))


# Name resolution: numeric hosts only; a non-numeric host is only ever passed
# with AI_NUMERICHOST or with arguments that fail before any lookup.
HOST = pick("127.0.0.1", "127.0.0.1", "::1", None, b"127.0.0.1", 1, 1.5, T("obj"), "not-a-host")
PORT = pick(0, 80, "80", b"80", None, -1, 65536, 2**100, 1.5, "http", T("port"))
FAMILY = pick(0, socket.AF_INET, socket.AF_INET6, socket.AF_UNIX, -1, 2**100, "x", None)
SOCKTYPE = pick(0, socket.SOCK_STREAM, socket.SOCK_DGRAM, -1, "x")
PROTO = pick(0, 6, -1, "x")
AI_FLAGS = pick(0, socket.AI_NUMERICHOST, socket.AI_PASSIVE, 2**100, "x", None, 1.5)
SOCKADDR = pick(
    ("127.0.0.1", 80),
    ("127.0.0.1", 80),
    T("addr"),
    ("::1", 80, 0, 0),
    ("127.0.0.1",),
    ("127.0.0.1", -1),
    ("127.0.0.1", 2**100),
    ("not-a-host", 80),
    "x",
    None,
    1,
)
NI_FLAGS = pick(
    socket.NI_NUMERICHOST | socket.NI_NUMERICSERV,
    socket.NI_NUMERICHOST | socket.NI_NUMERICSERV,
    socket.NI_NUMERICHOST,
    -1,
    2**100,
    "x",
    None,
)
PROTO_FACTORY = pick(T("proto"), T("proto"), T("proto_raise"), None, "x")
CONN_HOST = pick("127.0.0.1", "127.0.0.1", None, 1, T("obj"))
CONN_PORT = pick(T("port"), T("port"), T("port_refused"), None, -1, 2**100, "x")
CONNECTION_KW = (
    ("sock", pick(*toks("udp", "fresh", "sock_closed", "obj"), None)),
    ("ssl", pick(None, False)),
    ("server_hostname", pick("host", None, 1)),
    ("ssl_handshake_timeout", pick(1, -1, "x", math.nan)),
    ("ssl_shutdown_timeout", pick(1, -1, "x")),
    ("local_addr", pick(("127.0.0.1", 0), "x", ("127.0.0.1", -1), None)),
    ("happy_eyeballs_delay", pick(0.1, -1, "x", None)),
    ("interleave", pick(1, 0, "x", None)),
    ("family", pick(socket.AF_INET, socket.AF_UNIX, -1, "x")),
    ("all_errors", pick(True, False)),
)
SERVER_KW = (
    ("sock", pick(*toks("udp", "fresh", "sock_closed", "obj", "unix_listener"), None)),
    ("backlog", pick(0, -1, 2**100, "x", 5)),
    ("ssl", pick(None, False, "x")),
    ("ssl_handshake_timeout", pick(1, -1, "x")),
    ("reuse_address", pick(True, False, "x")),
    ("reuse_port", pick(True, False)),
    ("start_serving", pick(True, False)),
    ("family", pick(socket.AF_INET, socket.AF_INET6, -1, "x")),
)
UNIX_SERVER_KW = (
    ("sock", pick(*toks("unix_listener", "rsock", "fresh", "sock_closed", "obj"), None)),
    ("backlog", pick(0, -1, 2**100, "x", 5)),
    ("ssl", pick(None, "x")),
    ("ssl_handshake_timeout", pick(1, -1, "x")),
    ("start_serving", pick(True, False)),
)
NETWORK = {
    "getaddrinfo": Spec(
        (("host", HOST), ("port", PORT)),
        None,
        (("family", FAMILY), ("type", SOCKTYPE), ("proto", PROTO), ("flags", AI_FLAGS)),
    ),
    "getnameinfo": Spec((("sockaddr", SOCKADDR), ("flags", NI_FLAGS))),
    "create_connection": Spec((("protocol_factory", PROTO_FACTORY), ("host", CONN_HOST), ("port", CONN_PORT)), None),
    "create_server": Spec(
        (("protocol_factory", PROTO_FACTORY), ("host", pick("127.0.0.1", 1, T("obj"))), ("port", PORT)),
        None,
        SERVER_KW,
    ),
    "create_unix_server": Spec(
        (("protocol_factory", PROTO_FACTORY), ("path", pick(*toks("path", "path", "path_long"), None, 1))),
        None,
        UNIX_SERVER_KW,
    ),
}


def network_safe(step: Step) -> Step:
    """Keep an example off the network: no DNS, no binding beyond 127.0.0.1."""
    args, kw = list(step.args), dict(step.kwargs)
    if step.method == "getaddrinfo":
        host = args[0] if args else kw.get("host")
        flags = kw.get("flags", 0)
        if host == "not-a-host" and isinstance(flags, int):
            kw["flags"] = flags | socket.AI_NUMERICHOST
        elif host == "::1" and kw.get("family") == socket.AF_INET:
            kw["family"] = socket.AF_INET6
    elif step.method == "getnameinfo":
        flags = args[1] if len(args) > 1 else kw.get("flags", 0)
        if isinstance(flags, int) and not flags & socket.NI_NUMERICHOST:
            if len(args) > 1:
                args[1] = flags | socket.NI_NUMERICHOST
            else:
                kw["flags"] = flags | socket.NI_NUMERICHOST
    elif step.method == "create_server":
        # host None with a port and no sock would bind every interface.
        host = args[1] if len(args) > 1 else kw.get("host")
        port = args[2] if len(args) > 2 else kw.get("port")
        if host is None and port is not None and kw.get("sock") is None:
            return Step(step.mode, "create_server", (args[0] if args else T("proto"), "127.0.0.1", port), ())
    return Step(step.mode, step.method, tuple(args), tuple(kw.items()))


def network_examples() -> Any:
    def fix(ex: Example) -> Example:
        return Example(ex.closed, tuple(network_safe(s) for s in ex.steps))

    # create_connection's keyword-only options are drawn separately: asyncio
    # checks them before any I/O.
    conn_spec = dict(NETWORK)
    conn_spec["create_connection"] = Spec(NETWORK["create_connection"].params, None, CONNECTION_KW)
    return examples(conn_spec, modes=("direct", "direct", "running", "thread")).map(fix)


HANDLER = pick(*toks("handler", "handler", "handler_raise", "handler_coro", "cb", "obj"), None, "x", 1)
ERROR_CONTEXT = pick(*toks("ctx_msg", "ctx_exc", "ctx_empty", "ctx_nomsg", "ctx_future", "ctx_handle"), "x", None, 1)
EXCEPTION_API = {
    "set_exception_handler": Spec((("handler", HANDLER),)),
    "get_exception_handler": Spec(),
    "call_exception_handler": Spec((("context", ERROR_CONTEXT),)),
    "default_exception_handler": Spec((("context", ERROR_CONTEXT),)),
    "call_soon": Spec((("callback", pick(*toks("cb_raise", "coro_fn", "cb"), None)),), EXTRA),
}

EXECUTOR = pick(T("executor"), None, "x", T("obj"), 1)
WORK = pick(*toks("work", "work", "work_raise", "coro_fn", "coro", "obj"), None, "x")
FACTORY = pick(*toks("factory", "factory", "factory_bad", "factory_raise", "coro_fn", "obj"), None, "x", 1)
CONFIG = {
    "set_default_executor": Spec((("executor", EXECUTOR),)),
    "run_in_executor": Spec((("executor", pick(None, None, T("executor"), "x", T("obj"))), ("func", WORK)), EXTRA),
    "set_task_factory": Spec((("factory", FACTORY),)),
    "get_task_factory": Spec(),
    "create_task": Spec((("coro", TASK_CORO),), None, (("name", NAME), ("context", CONTEXT))),
    "shutdown_default_executor": Spec(),
    "set_debug": Spec((("enabled", DEBUG_VALUE),)),
    "get_debug": Spec(),
}

# Harmless signals only (SIGKILL cannot be caught: the call fails before any change).
SIGNUM = weighted(
    (3, pick(signal.SIGUSR1, signal.SIGUSR1, signal.SIGUSR2, int(signal.SIGUSR1))),
    (1, pick(signal.SIGKILL, 0, -1, signal.NSIG, 2**100, "x", None, 1.5)),
)
SIGNAL_API = {
    "add_signal_handler": Spec(
        (("sig", SIGNUM), ("callback", pick(*toks("sigcb", "sigcb", "cb_raise", "coro_fn", "coro"), None))), EXTRA
    ),
    "remove_signal_handler": Spec((("sig", SIGNUM),)),
}
SIGNAL_PSEUDO = {"!kill": st.tuples(pick(signal.SIGUSR1, signal.SIGUSR2)), "!drain": st.just(())}

THREAD_MIX = {
    **{k: SCHEDULING[k] for k in ("call_soon", "call_soon_threadsafe", "call_later", "call_at", "create_task")},
    **FD_WATCH,
    **{k: LIFECYCLE[k] for k in ("run_until_complete", "stop", "close", "is_running", "set_debug")},
    "add_signal_handler": SIGNAL_API["add_signal_handler"],
    "call_exception_handler": EXCEPTION_API["call_exception_handler"],
    "run_in_executor": CONFIG["run_in_executor"],
}


# ---------------------------------------------------------------------------
# The tests.


@fuzz_timeout
@FUZZ_SETTINGS
@given(examples(SCHEDULING, pseudo={"!drain": st.just(()), "!debug": st.tuples(pick(True, False))}))
def test_scheduling_calls(example: Example) -> None:
    check(example)


@fuzz_timeout
@FUZZ_SETTINGS
@given(examples(FD_WATCH, pseudo=FD_PSEUDO, max_steps=6))
def test_fd_watchers(example: Example) -> None:
    check(example, dedupe=False)


@fuzz_timeout
@FUZZ_SETTINGS
@given(examples(LIFECYCLE, max_steps=5))
def test_run_stop_close_lifecycle(example: Example) -> None:
    check(example)


@fuzz_timeout
@FUZZ_SETTINGS
@given(examples(SOCK_OPS, pseudo={"!drain": st.just(())}, modes=("direct", "direct", "running", "thread")))
def test_socket_operations(example: Example) -> None:
    check(example)


@fuzz_timeout
@FUZZ_SETTINGS
@given(network_examples())
def test_name_resolution_and_servers(example: Example) -> None:
    check(example)


@fuzz_timeout
@FUZZ_SETTINGS
@given(examples(EXCEPTION_API, pseudo={"!drain": st.just(())}, max_steps=5))
def test_exception_handler_api(example: Example) -> None:
    check(example)


@fuzz_timeout
@FUZZ_SETTINGS
@given(examples(CONFIG, pseudo={"!drain": st.just(())}, max_steps=5))
def test_executor_debug_and_task_factory(example: Example) -> None:
    check(example)


@fuzz_timeout
@FUZZ_SETTINGS
@given(examples(SIGNAL_API, pseudo=SIGNAL_PSEUDO, modes=("direct", "direct", "running", "thread"), max_steps=5))
def test_signal_handlers(example: Example) -> None:
    check(example)


@fuzz_timeout
@FUZZ_SETTINGS
@given(examples(THREAD_MIX, modes=("thread", "thread-idle"), max_steps=4))
def test_calls_from_other_threads(example: Example) -> None:
    check(example, dedupe=True)


# ---------------------------------------------------------------------------
# The differences the fuzzer found, one strict xfail each (docs/compatibility.md).


@pytest.mark.deviation("D-010")
def test_native_methods_take_parameters_by_keyword(loop):
    handles = [
        loop.call_soon(callback=print),
        loop.call_soon_threadsafe(callback=print),
        loop.call_later(delay=3600, callback=print),
        loop.call_at(when=loop.time() + 3600, callback=print),
    ]
    for h in handles:
        h.cancel()
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        b.send(b"x")
        assert loop.run_until_complete(loop.sock_recv(sock=a, n=1)) == b"x"
        co = asyncio.sleep(0, "done")
        assert loop.run_until_complete(loop.create_task(coro=co)) == "done"
    finally:
        a.close()
        b.close()


@pytest.mark.deviation("D-010")
def test_unexpected_keyword_is_reported_before_missing_arguments(loop):
    with pytest.raises(TypeError) as info:
        loop.call_soon(bogus=1)
    assert str(info.value) == "BaseEventLoop.call_soon() got an unexpected keyword argument 'bogus'"


@pytest.mark.deviation("D-011")
def test_debug_source_tracebacks_of_native_methods(loop):
    loop.set_debug(True)
    fut = loop.create_future()
    handle = loop.call_soon(print)
    try:
        # asyncio's create_future is the future's last frame...
        assert fut._source_traceback[-1].name == "create_future"
        # ...and a handle keeps 10 frames (DEBUG_STACK_DEPTH) less asyncio's own two.
        assert len(handle._source_traceback) == 8
    finally:
        fut.cancel()
        handle.cancel()


@pytest.mark.deviation("D-012")
def test_sock_methods_check_a_non_socket_as_asyncio(loop):
    loop.set_debug(False)  # in debug mode both fail on sock.gettimeout() first

    class NoFileno:
        def fileno(self):
            raise ValueError("no fileno")

    with pytest.raises(AttributeError, match="'str' object has no attribute 'recv'"):
        loop.run_until_complete(loop.sock_recv("x", 1))
    with pytest.raises(AttributeError, match="'NoFileno' object has no attribute 'recv'"):
        loop.run_until_complete(loop.sock_recv(NoFileno(), 1))
    with pytest.raises(AttributeError, match="'NoneType' object has no attribute 'fileno'"):
        loop.run_until_complete(loop.sock_accept(None))


@pytest.mark.deviation("D-012")
def test_sock_recv_into_none_buffer_message(loop):
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        b.send(b"x")
        with pytest.raises(TypeError) as info:
            loop.run_until_complete(loop.sock_recv_into(a, None))
        assert str(info.value) == "recv_into() argument 1 must be read-write bytes-like object, not None"
    finally:
        a.close()
        b.close()


@pytest.mark.deviation("D-013")
def test_add_reader_again_for_a_closed_registered_socket(loop):
    a, b = socket.socketpair()
    try:
        loop.add_reader(a, print)
        a.close()
        # asyncio finds the registration by the socket object and updates it.
        assert loop.add_reader(a, print) is None
        assert loop.remove_reader(a) is True
    finally:
        a.close()
        b.close()


@pytest.mark.deviation("D-014")
def test_coroutine_origin_includes_the_loops_frames(loop):
    loop.set_debug(True)
    origins = []

    async def coro():
        pass

    def cb():
        c = coro()
        origins.append(c.cr_origin)
        c.close()

    loop.call_soon(cb)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert origins[0] is not None
    assert any(filename.endswith(os.path.join("asyncio", "base_events.py")) for filename, _, _ in origins[0])


@pytest.mark.deviation("D-015")
def test_sock_operation_that_must_wait_on_a_closed_loop(loop):
    a, b = socket.socketpair()
    a.setblocking(False)
    co = loop.sock_recv(a, 1)  # nothing to read: it would wait
    loop.close()
    try:
        with pytest.raises(RuntimeError, match="^Event loop is closed$"):
            co.send(None)
    finally:
        co.close()
        a.close()
        b.close()
