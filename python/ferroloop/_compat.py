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


def datagram_flags() -> tuple[bool, int]:
    """How this Python's ``_SelectorDatagramTransport.sendto`` treats empty data and counts buffered bytes.

    3.11 and 3.12.1 return early on empty data and count ``len(data)``; 3.13
    sends empty datagrams and counts ``len(data) + 8``. Read from the source
    when it is there (patch releases may differ), else from the version.
    """
    from asyncio import selector_events

    try:
        src = inspect.getsource(selector_events._SelectorDatagramTransport.sendto)  # type: ignore[attr-defined]
    except (OSError, TypeError):
        return PY313, 8 if PY313 else 0
    sends_empty = "if not data:" not in src
    header = 8 if "len(data) + 8" in src else 0
    return sends_empty, header
