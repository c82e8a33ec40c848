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
