"""The fuzzer's tokens made into objects: sockets, callbacks, coroutines, servers
(a mixin of ``fuzz_env.Env``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import fcntl
import os
import socket
import ssl
from collections.abc import Callable
from typing import Any

from fuzz_model import DATA, FACTORIES, _Awaitable, _FilenoRaises, _FilenoReturns


class Objects:
    """The objects a token names, made afresh for each run (a mixin of ``Env``)."""

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
        # The same port is held for TCP too: a TCP connect to a UDP socket's
        # address (sock_connect(fresh, udp_addr)) must be refused, and an
        # unbound TCP socket may otherwise get that very port as its
        # ephemeral one and connect to itself (TCP simultaneous open), at
        # random, under one loop and not the other.
        while True:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            hold = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                hold.bind(("127.0.0.1", port))
            except OSError:
                hold.close()
                s.close()
                continue
            break
        self.ports.add(port)
        self.sockets += [s, hold]
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
