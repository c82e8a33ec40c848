"""The fuzzer's plain-data model: tokens, steps, examples, the loop
factories and the normalising patterns (tests/test_fuzz_differential.py)."""

from __future__ import annotations

import asyncio
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ferroloop

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
