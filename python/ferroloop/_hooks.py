"""Cold-path helpers the native core calls (registered with ``_ferroloop._set_hooks``).

Each mirrors a piece of asyncio exactly, using asyncio's own formatting helpers:
``handle_repr`` is ``Handle.__repr__``, ``report_error`` the ``except`` branch of
``Handle._run``, ``slow_callback`` the debug-mode warning of ``_run_once``,
``extract_stack`` the source traceback debug mode attaches to handles.
"""

from __future__ import annotations

import selectors
import sys
from asyncio import base_events, format_helpers
from asyncio.log import logger
from typing import Any

from . import _compat


def handle_repr(handle: Any) -> str:
    """``<Handle callback(args) at file:line>`` as ``events.Handle._repr_info`` builds it."""
    info = [type(handle).__name__]
    if handle._cancelled:
        info.append("cancelled")
    if hasattr(handle, "_when"):
        info.insert(2 if handle._cancelled else 1, f"when={handle._when}")
    if handle._callback is not None:
        loop = handle._loop
        debug = loop.get_debug() if loop is not None else False
        info.append(_compat.format_callback_source(handle._callback, handle._args, debug))
    tb = handle._source_traceback
    if tb:
        frame = tb[-1]
        info.append(f"created at {frame[0]}:{frame[1]}")
    return "<{}>".format(" ".join(info))


def report_error(handle: Any, exc: BaseException) -> None:
    """Report a callback's exception to the loop's exception handler."""
    loop = handle._loop
    cb = _compat.format_callback_source(handle._callback, handle._args, loop.get_debug())
    context = {"message": f"Exception in callback {cb}", "exception": exc, "handle": handle}
    if handle._source_traceback:
        context["source_traceback"] = handle._source_traceback
    loop.call_exception_handler(context)


def slow_callback(loop: Any, handle: Any, dt: float) -> None:
    described = base_events._format_handle(handle)  # type: ignore[attr-defined]
    logger.warning("Executing %s took %.3f seconds", described, dt)


def extract_stack() -> Any:
    """The stack of the Python frame that called into the native loop."""
    return format_helpers.extract_stack(sys._getframe(1))


fileobj_to_fd = selectors._fileobj_to_fd  # type: ignore[attr-defined]


# ----- native transports (cold paths: errors, warnings, logging, objects made on demand)

import errno as _errno  # noqa: E402
import socket as _socket  # noqa: E402
import warnings as _warnings  # noqa: E402
from asyncio import constants as _constants  # noqa: E402
from asyncio import futures as _futures  # noqa: E402
from asyncio import protocols as _protocols  # noqa: E402
from asyncio import transports as _transports  # noqa: E402
from asyncio import trsock as _trsock  # noqa: E402

BufferedProtocol = _protocols.BufferedProtocol
set_result_unless_cancelled = _futures._set_result_unless_cancelled  # type: ignore[attr-defined]
set_nodelay = base_events._set_nodelay  # type: ignore[attr-defined]
LOG_THRESHOLD_FOR_CONNLOST_WRITES = _constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES
#: 3.13 passes the transport to Server._attach/_detach and detaches in __del__.
SERVER_TRACKS_TRANSPORTS = _compat.PY313
#: 3.12 queues the caller's buffers; 3.11 copies into a bytearray.
ZERO_COPY_WRITES = _compat.PY312

#: how this Python's datagram ``sendto`` treats empty data and counts buffered bytes.
datagram_flags = _compat.datagram_flags


def transport_fatal_error(transport: Any, exc: BaseException, message: str) -> None:
    """The reporting half of ``_SelectorTransport._fatal_error``."""
    loop = transport._loop
    if isinstance(exc, OSError):
        if loop.get_debug():
            logger.debug("%r: %s", transport, message, exc_info=exc)
    else:
        loop.call_exception_handler(
            {"message": message, "exception": exc, "transport": transport, "protocol": transport._protocol}
        )


def transport_report(transport: Any, message: str, exc: BaseException) -> None:
    """``protocol.pause_writing()/resume_writing() failed`` (``_FlowControlMixin``)."""
    transport._loop.call_exception_handler(
        {"message": message, "exception": exc, "transport": transport, "protocol": transport._protocol}
    )


def warn_unclosed(transport: Any) -> None:
    # stacklevel 1, as _SelectorTransport.__del__ warns.
    _warnings.warn(f"unclosed transport {transport!r}", ResourceWarning, source=transport)  # noqa: B028


def server_attach(server: Any, transport: Any) -> None:
    if SERVER_TRACKS_TRANSPORTS:
        server._attach(transport)
    else:
        server._attach()


def server_detach(server: Any, transport: Any) -> None:
    if SERVER_TRACKS_TRANSPORTS:
        server._detach(transport)
    else:
        server._detach()


def transport_socket(sock: Any) -> Any:
    return _trsock.TransportSocket(sock)


def closed_socket(family: int, type: int, proto: int) -> Any:
    """A closed socket object of a natively accepted connection's kind (what
    asyncio's ``get_extra_info('socket')`` wraps after close), or None."""
    try:
        sock = _socket.socket(family, type, proto)
    except OSError:
        return None
    sock.close()
    return sock


def socket_for_fd(fd: int, family: int, type: int, proto: int) -> Any:
    """The Python socket object of a natively accepted connection (made on demand)."""
    sock = _socket.socket(family, type, proto, fileno=fd)
    sock.setblocking(False)
    return sock


def write_buffer_limits(high: Any, low: Any) -> tuple[Any, Any]:
    """``_FlowControlMixin._set_write_buffer_limits`` without the assignment."""
    mixin: Any = _transports._FlowControlMixin
    probe = mixin.__new__(mixin)
    mixin._set_write_buffer_limits(probe, high=high, low=low)
    return probe._high_water, probe._low_water


def log_debug(msg: str, *args: Any) -> None:
    logger.debug(msg, *args)


def log_info(msg: str, *args: Any) -> None:
    logger.info(msg, *args)


def pipe_fatal_error(transport: Any, exc: BaseException, message: str, read_pipe: bool) -> None:
    """The reporting half of ``_UnixReadPipeTransport._fatal_error`` (quiet for EIO)
    and ``_UnixWritePipeTransport._fatal_error`` (quiet for any OSError)."""
    quiet = isinstance(exc, OSError) and (not read_pipe or exc.errno == _errno.EIO)
    loop = transport._loop
    if quiet:
        if loop.get_debug():
            logger.debug("%r: %s", transport, message, exc_info=exc)
    else:
        loop.call_exception_handler(
            {"message": message, "exception": exc, "transport": transport, "protocol": transport._protocol}
        )


def log_warning(msg: str, *args: Any) -> None:
    logger.warning(msg, *args)
