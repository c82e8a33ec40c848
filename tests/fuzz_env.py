"""One run of a fuzz example on one loop, recorded as plain data
(tests/test_fuzz_differential.py)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import math
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import traceback
import types
import warnings
from collections.abc import Callable
from typing import Any

from fuzz_model import (
    ADDRESS_RE,
    ASYNC_METHODS,
    ASYNCIO_CREATED_RE,
    CORO_STATE_RE,
    FACTORIES,
    FD_RE,
    FINALIZER_MESSAGES,
    FRAMES_RE,
    FUTURE_CREATED_RE,
    SAFETY_TIMEOUT,
    SOCKADDR_RE,
    STACK_RE,
    TASK_NAME_RE,
    WHEN_RE,
    Example,
    Step,
    T,
    _when,
    exc_type_name,
    tokens_in,
)
from fuzz_objects import Objects

# ---------------------------------------------------------------------------
# One run of an example on one implementation.


class Env(Objects):
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
            raised = None
            try:
                y = v.send(None)
            except StopIteration as e:
                return ("await-return", self.value(e.value))
            except BaseException as e:
                raised = ("await-raise", *self.exc(e))
            if raised is not None:
                # D-026: a transport half made by the failed call is held by
                # asyncio in a reference cycle, keeping the caller's socket
                # open; ferroloop's closes it at once. Collect it here.
                gc.collect()
                return raised
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


def _restore_signals() -> list[Any]:
    left = []
    for sig in (signal.SIGUSR1, signal.SIGUSR2):
        if signal.getsignal(sig) is not signal.SIG_DFL:
            left.append(("handler", sig))
            signal.signal(sig, signal.SIG_DFL)
    if signal.set_wakeup_fd(-1) != -1:
        left.append(("wakeup fd", "set"))
    return left
