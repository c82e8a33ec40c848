"""Every Python-version gate of ferroloop, in one place."""

from __future__ import annotations

import asyncio
import asyncio.unix_events
import inspect
import sys
from asyncio import base_events, format_helpers
from typing import Any

PY312 = sys.version_info >= (3, 12)
PY313 = sys.version_info >= (3, 13)
#: 3.14 deprecates asyncio's policy system (removal planned for 3.16).
PY314 = sys.version_info >= (3, 14)

#: 3.13 split run_forever into _run_forever_setup/_run_forever_cleanup.
HAS_RUN_FOREVER_SETUP = hasattr(base_events.BaseEventLoop, "_run_forever_setup")

#: 3.13 added the keyword-only ``debug`` to the callback formatters.
_FORMAT_TAKES_DEBUG = "debug" in inspect.signature(format_helpers._format_callback_source).parameters


def format_callback_source(func: Any, args: Any, debug: bool) -> str:
    """``format_helpers._format_callback_source`` with the signature of this Python."""
    if _FORMAT_TAKES_DEBUG:
        return format_helpers._format_callback_source(func, args, debug=debug)  # type: ignore[call-arg]
    return format_helpers._format_callback_source(func, args)


#: The policy base class (renamed with a leading underscore in 3.14).
BaseDefaultEventLoopPolicy: Any = getattr(
    asyncio.events, "BaseDefaultEventLoopPolicy", getattr(asyncio.events, "_BaseDefaultEventLoopPolicy", None)
)

#: The platform's default policy class (on Unix it carries the child-watcher
#: methods that asyncio's subprocess code calls before 3.14).
DefaultEventLoopPolicy: Any = getattr(asyncio.unix_events, "_UnixDefaultEventLoopPolicy", BaseDefaultEventLoopPolicy)


def datagram_flags() -> tuple[bool, int, bool]:
    """How this Python's ``_SelectorDatagramTransport`` treats empty data and counts buffered bytes.

    ``(sends_empty, header, header_leaves)``: 3.11 and 3.12.1 return early on
    empty data and count ``len(data)``; 3.13.0 sends empty datagrams and
    counts ``len(data) + 8`` per buffered datagram but takes only
    ``len(data)`` off when it is sent (CPython gh-135444); releases with that
    fixed have ``_header_size`` and take the header off too. Read from the
    class and its source (patch releases differ), else from the version.
    """
    from asyncio import selector_events

    cls: Any = selector_events._SelectorDatagramTransport  # type: ignore[attr-defined]
    try:
        src = inspect.getsource(cls.sendto)
    except (OSError, TypeError):
        src = None
    sends_empty = PY313 if src is None else "if not data:" not in src
    header = getattr(cls, "_header_size", None)
    if isinstance(header, int):
        return sends_empty, header, True
    if src is None:
        return sends_empty, 8 if PY313 else 0, False
    return sends_empty, 8 if "len(data) + 8" in src else 0, False
