"""``ferroloop.Loop``: the native core plus asyncio's own selector event loop.

``Loop`` derives from ``_ferroloop.EventLoop`` (native: ``call_soon``,
``call_later``, ``call_at``, ``call_soon_threadsafe``, ``_run_once``, fd
watchers, ``time``) and from asyncio's ``SelectorEventLoop``, whose Python code
supplies everything that runs once per loop or per connection: the exception
handler, tasks and futures, executors, async-generator hooks, signals,
sockets, transports and servers. Because the native base comes first in the
MRO, asyncio's code schedules and polls through the native core.

What this module adds is the glue: ``run_forever`` drives the native inner loop
with the set-up and tear-down of this Python version, and the self-pipe is
only put into the poll set once a signal handler needs it (the native loop
wakes itself for ``call_soon_threadsafe``).
"""

from __future__ import annotations

import asyncio
import collections.abc
import io
import os
import socket
import sys
import threading
import types
from asyncio import constants, events, exceptions, unix_events
from typing import Any

try:
    import ssl
except ImportError:  # pragma: no cover - Python built without ssl
    ssl = None  # type: ignore[assignment]

from . import _blocking, _compat, _events, _ferroloop, _pipes, _sslproto, _stats, _subprocess  # noqa: F401 (_events, _pipes)
from ._selector import NativeSelectorView

__all__ = ["Loop"]

_SOCKET_GETADDRINFO = socket.getaddrinfo


def _numeric_port(port: Any) -> bool:
    """A port ``socket.getaddrinfo`` takes without a service lookup."""
    if port is None or (isinstance(port, int) and not isinstance(port, bool)):
        return True
    if isinstance(port, str | bytes):
        return port.isdigit()
    return False


# The sock_* methods return native coroutines; asyncio accepts them as such.
collections.abc.Coroutine.register(_ferroloop._SockCoroutine)


class Loop(_ferroloop.EventLoop, asyncio.SelectorEventLoop):  # type: ignore[misc]
    """asyncio's event loop, natively implemented. Subclassable."""

    def __init__(self) -> None:
        self._self_reading = False
        asyncio.SelectorEventLoop.__init__(self, NativeSelectorView(self))  # type: ignore[arg-type]
        setting = os.environ.get("FERROLOOP_STATS")
        if setting == "0":
            self._stats_off()
        elif setting == "1":
            self._stats_on()
        self._ferroloop_detector = _blocking.from_environment(self)
        _stats.track(self)

    # ----- run_forever: asyncio's set-up and tear-down around the native loop

    if _compat.HAS_RUN_FOREVER_SETUP:

        def run_forever(self) -> None:
            """Run until stop() is called."""
            try:
                self._run_forever_setup()  # type: ignore[attr-defined]
                self._run_forever_inner()
            finally:
                self._run_forever_cleanup()  # type: ignore[attr-defined]

    else:

        def run_forever(self) -> None:
            """Run until stop() is called."""
            self._check_closed()  # type: ignore[attr-defined]
            self._check_running()  # type: ignore[attr-defined]
            self._set_coroutine_origin_tracking(self._debug)  # type: ignore[attr-defined]
            old_agen_hooks = sys.get_asyncgen_hooks()
            try:
                self._thread_id = threading.get_ident()
                sys.set_asyncgen_hooks(
                    firstiter=self._asyncgen_firstiter_hook,  # type: ignore[attr-defined]
                    finalizer=self._asyncgen_finalizer_hook,  # type: ignore[attr-defined]
                )
                events._set_running_loop(self)
                self._run_forever_inner()
            finally:
                self._stopping = False
                self._thread_id = None  # type: ignore[assignment]
                events._set_running_loop(None)
                self._set_coroutine_origin_tracking(False)  # type: ignore[attr-defined]
                sys.set_asyncgen_hooks(*old_agen_hooks)

    def close(self) -> None:
        """Close the loop (asyncio's close, then the native reactor's fds)."""
        super().close()
        if self.is_closed():
            _stats.closing(self)
            detector = getattr(self, "_ferroloop_detector", None)
            if detector is not None:
                detector.stop()
            # The selector view reaches the native close through a weak
            # reference, which the collector clears before __del__ calls
            # close() on an abandoned loop: release the fds here as well.
            self._close_native()

    # ----- native transports (`_make_ssl_transport` is the native base's: src/transports/mod.rs)

    def _make_socket_transport(
        self, sock: socket.socket, protocol: Any, waiter: Any = None, *, extra: Any = None, server: Any = None
    ) -> Any:
        if _compat.PY312:
            self._ensure_fd_no_transport(sock)
        return _ferroloop._stream_transport(self, sock, protocol, waiter, extra, server)

    def _make_datagram_transport(
        self, sock: socket.socket, protocol: Any, address: Any = None, waiter: Any = None, extra: Any = None
    ) -> Any:
        if _compat.PY312:
            self._ensure_fd_no_transport(sock)
        return _ferroloop._datagram_transport(self, sock, protocol, address, waiter, extra)

    def _make_read_pipe_transport(self, pipe: Any, protocol: Any, waiter: Any = None, extra: Any = None) -> Any:
        return _ferroloop._read_pipe_transport(self, pipe, protocol, waiter, extra)

    def _make_write_pipe_transport(self, pipe: Any, protocol: Any, waiter: Any = None, extra: Any = None) -> Any:
        return _ferroloop._write_pipe_transport(self, pipe, protocol, waiter, extra)

    async def _make_subprocess_transport(
        self,
        protocol: Any,
        args: Any,
        shell: Any,
        stdin: Any,
        stdout: Any,
        stderr: Any,
        bufsize: Any,
        extra: Any = None,
        **kwargs: Any,
    ) -> Any:
        """asyncio's, with the child's exit watched through a pidfd unless a
        child watcher was chosen (``_subprocess``)."""
        if not _subprocess.applies():
            return await super()._make_subprocess_transport(  # type: ignore[misc]
                protocol, args, shell, stdin, stdout, stderr, bufsize, extra=extra, **kwargs
            )
        waiter = self.create_future()
        transp = unix_events._UnixSubprocessTransport(  # type: ignore[attr-defined]
            self, protocol, args, shell, stdin, stdout, stderr, bufsize, waiter=waiter, extra=extra, **kwargs
        )
        _subprocess.add_child_handler(self, transp.get_pid(), self._child_watcher_callback, transp)  # type: ignore[attr-defined]
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transp.close()
            await transp._wait()
            raise
        return transp

    async def start_tls(
        self,
        transport: Any,
        protocol: Any,
        sslcontext: Any,
        *,
        server_side: bool = False,
        server_hostname: Any = None,
        ssl_handshake_timeout: Any = None,
        ssl_shutdown_timeout: Any = None,
    ) -> Any:
        """Upgrade transport to TLS.

        Return a new transport that *protocol* should start using
        immediately.
        """
        # base_events.start_tls (the same on 3.11-3.13), with the native-path SSLProtocol.
        if ssl is None:
            raise RuntimeError("Python ssl module is not available")
        if not isinstance(sslcontext, ssl.SSLContext):
            raise TypeError(f"sslcontext is expected to be an instance of ssl.SSLContext, got {sslcontext!r}")
        if not getattr(transport, "_start_tls_compatible", False):
            raise TypeError(f"transport {transport!r} is not supported by start_tls()")
        waiter = self.create_future()
        ssl_protocol = _sslproto.SSLProtocol(
            self,
            protocol,
            sslcontext,
            waiter,
            server_side,
            server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
            call_connection_made=False,
        )
        # Paused until connection_made() has run, as asyncio does.
        transport.pause_reading()
        transport.set_protocol(ssl_protocol)
        conmade_cb = self.call_soon(ssl_protocol.connection_made, transport)
        resume_cb = self.call_soon(transport.resume_reading)
        try:
            await waiter
        except BaseException:
            transport.close()
            conmade_cb.cancel()
            resume_cb.cancel()
            raise
        return ssl_protocol._app_transport

    def _start_serving(
        self,
        protocol_factory: Any,
        sock: socket.socket,
        sslcontext: Any = None,
        server: Any = None,
        backlog: int = 100,
        ssl_handshake_timeout: Any = constants.SSL_HANDSHAKE_TIMEOUT,
        ssl_shutdown_timeout: Any = constants.SSL_SHUTDOWN_TIMEOUT,
    ) -> None:
        _ferroloop._start_listener(
            self, protocol_factory, sock, sslcontext, server, backlog, ssl_handshake_timeout, ssl_shutdown_timeout
        )

    async def _sendfile_native(self, transp: Any, file: Any, offset: int, count: int | None) -> int:
        if not isinstance(transp, _ferroloop._SelectorSocketTransport):
            return await super()._sendfile_native(transp, file, offset, count)  # type: ignore[misc]
        resume_reading = transp.is_reading()
        transp.pause_reading()
        await transp._make_empty_waiter()
        # Now idle: leaves the loop's registrations (at once) and the fd to sock_sendfile.
        transp._set_sendfile_active(True)
        try:
            return await self.sock_sendfile(transp._sock, file, offset, count, fallback=False)
        finally:
            transp._reset_empty_waiter()
            if resume_reading:
                transp.resume_reading()
            transp._set_sendfile_active(False)

    async def _sock_sendfile_native(self, sock: socket.socket, file: Any, offset: int, count: int | None) -> int:
        # unix_events._UnixSelectorEventLoop._sock_sendfile_native's checks,
        # then the os.sendfile loop as a native socket operation.
        uos = unix_events.os  # type: ignore[attr-defined]  # asyncio's module's os: tests patch it
        try:
            uos.sendfile  # noqa: B018
        except AttributeError:
            raise exceptions.SendfileNotAvailableError("os.sendfile() is not available") from None
        try:
            fileno = file.fileno()
        except (AttributeError, io.UnsupportedOperation):
            raise exceptions.SendfileNotAvailableError("not a regular file") from None
        try:
            fsize = uos.fstat(fileno).st_size
        except OSError:
            raise exceptions.SendfileNotAvailableError("not a regular file") from None
        blocksize = count if count else fsize
        if not blocksize:
            return 0  # empty file
        return await _ferroloop._sendfile_op(self, sock, fileno, offset, count or 0, blocksize)

    # ----- getaddrinfo: numeric hosts without a thread hop

    async def getaddrinfo(
        self, host: Any, port: Any, *, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> list[Any]:
        if (
            not self._debug
            and not self._closed
            and isinstance(flags, int)
            and socket.getaddrinfo is _SOCKET_GETADDRINFO
            and _numeric_port(port)
        ):
            try:
                # Numeric only (no DNS, no /etc/services): cannot block, so
                # no executor. The same libc call as the executor would make.
                # (A closed loop or flags that are not an int take asyncio's
                # path, for its errors: run_in_executor's closed-loop check,
                # socket.getaddrinfo's on the flags.)
                return _SOCKET_GETADDRINFO(
                    host, port, family, type, proto, flags | socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
                )
            except socket.gaierror:
                pass  # a name to resolve (or an error the full call reports)
        return await super().getaddrinfo(host, port, family=family, type=type, proto=proto, flags=flags)

    # ----- self-pipe: only signals use it

    def _make_self_pipe(self) -> None:
        self._ssock, self._csock = socket.socketpair()
        self._ssock.setblocking(False)
        self._csock.setblocking(False)
        self._internal_fds += 1  # type: ignore[attr-defined]

    def add_signal_handler(self, sig: int, callback: Any, *args: Any) -> None:  # type: ignore[override]
        super().add_signal_handler(sig, callback, *args)
        if not self._self_reading:
            # Signal numbers arrive on the self-pipe (signal.set_wakeup_fd).
            self._add_reader(self._ssock.fileno(), self._read_from_self)  # type: ignore[attr-defined]
            self._self_reading = True

    def _close_self_pipe(self) -> None:
        self._self_reading = False
        super()._close_self_pipe()  # type: ignore[misc]


def _name_overrides_as_asyncio(cls: type) -> None:
    """Give each method that overrides one of asyncio's the overridden one's
    qualified name, so that argument errors and reprs read as asyncio's
    (``BaseEventLoop.run_forever() takes 1 positional argument ...``)."""
    for name, attr in vars(cls).items():
        base = getattr(asyncio.SelectorEventLoop, name, None)
        if isinstance(attr, types.FunctionType) and isinstance(base, types.FunctionType):
            attr.__qualname__ = base.__qualname__


_name_overrides_as_asyncio(Loop)
