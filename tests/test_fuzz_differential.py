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

This file holds the strategies and the tests; the harness is beside it:
``fuzz_model`` (the plain data of an example), ``fuzz_objects`` (the objects
tokens name), ``fuzz_env`` (one run on one loop, recorded) and ``fuzz_check``
(the comparison, with the known deviations).
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import math
import os
import signal
import socket
from dataclasses import dataclass
from typing import Any

import pytest
from fuzz_check import check
from fuzz_model import Example, Step, T
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
CONN_HOST = pick("127.0.0.1", "127.0.0.1", "localhost", "::1", None, 1, T("obj"))
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


def test_native_methods_take_parameters_by_keyword(loop):
    handles = [
        loop.call_soon(callback=print),
        loop.call_soon_threadsafe(callback=print),
        loop.call_later(delay=3600, callback=print),
        loop.call_at(when=loop.time() + 3600, callback=print),
        loop.call_later(3600, callback=print, context=contextvars.copy_context()),
        loop.call_soon(context=contextvars.copy_context(), callback=print),
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
        task = loop.create_task(name="named", coro=asyncio.sleep(0, "again"))
        assert task.get_name() == "named"
        assert loop.run_until_complete(task) == "again"
        b.send(b"yz")
        buf = bytearray(5)
        assert loop.run_until_complete(loop.sock_recv_into(buf=buf, sock=a)) == 2
    finally:
        a.close()
        b.close()


def test_unexpected_keyword_is_reported_before_missing_arguments(loop):
    with pytest.raises(TypeError) as info:
        loop.call_soon(bogus=1)
    assert str(info.value) == "BaseEventLoop.call_soon() got an unexpected keyword argument 'bogus'"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda lp: lp.call_soon(context=None), "call_soon() missing 1 required positional argument: 'callback'"),
        (lambda lp: lp.call_later(callback=print), "call_later() missing 1 required positional argument: 'delay'"),
        (lambda lp: lp.call_at(), "call_at() missing 2 required positional arguments: 'when' and 'callback'"),
        (lambda lp: lp.call_soon(print, callback=print), "call_soon() got multiple values for argument 'callback'"),
        (lambda lp: lp.call_later(1, print, delay=2), "call_later() got multiple values for argument 'delay'"),
        (lambda lp: lp.call_later(1, delay=2), "call_later() got multiple values for argument 'delay'"),
        (lambda lp: lp.create_task(name="x"), "create_task() missing 1 required positional argument: 'coro'"),
        (lambda lp: lp.sock_recv(n=1), "sock_recv() missing 1 required positional argument: 'sock'"),
        (lambda lp: lp.sock_recv(n=1, bogus=2), "sock_recv() got an unexpected keyword argument 'bogus'"),
        (lambda lp: lp.sock_recvfrom_into(nbytes=1), "missing 2 required positional arguments: 'sock' and 'buf'"),
        (
            lambda lp: lp.sock_sendto(),
            "sock_sendto() missing 3 required positional arguments: 'sock', 'data', and 'address'",
        ),
    ],
)
def test_keyword_argument_errors_of_native_methods(loop, call, message):
    with pytest.raises(TypeError) as info:
        call(loop)
    assert str(info.value).endswith(message)


def test_transport_methods_take_parameters_by_keyword(loop):
    received = []

    class Echo(asyncio.Protocol):
        def data_received(self, data):
            received.append(data)

    async def main():
        a, b = socket.socketpair()
        with b:
            tr, _ = await loop.connect_accepted_socket(Echo, a)
            try:
                assert tr.get_extra_info(name="nothing", default=5) == 5
                tr.write(data=b"one")
                tr.writelines(list_of_data=[b"two"])
                with pytest.raises(TypeError, match=r"write\(\) got multiple values for argument 'data'"):
                    tr.write(b"x", data=b"y")
                with pytest.raises(TypeError, match=r"write\(\) missing 1 required positional argument: 'data'"):
                    tr.write()
                await asyncio.sleep(0.05)
                assert b.recv(100) == b"onetwo"
            finally:
                tr.close()
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        dt, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        try:
            dt.sendto(data=b"dgram", addr=u.getsockname())
            u.settimeout(5)
            assert u.recv(100) == b"dgram"
        finally:
            dt.close()
            u.close()
        await asyncio.sleep(0)

    loop.run_until_complete(main())


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
    with pytest.raises(AttributeError, match="'str' object has no attribute 'recv_into'"):
        loop.run_until_complete(loop.sock_recv_into("x", "x"))
    with pytest.raises(AttributeError, match="'str' object has no attribute 'send'"):
        loop.run_until_complete(loop.sock_sendall("x", b"data"))


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


def test_add_reader_again_for_a_closed_registered_socket(loop):
    a, b = socket.socketpair()
    try:
        loop.add_reader(a, print)
        a.close()
        # asyncio finds the registration by the socket object and updates it.
        assert loop.add_reader(a, print) is None
        assert loop.remove_reader(a) is True
        # Not registered any more: the closed socket has no fd to look up.
        with pytest.raises(ValueError, match="^Invalid file descriptor: -1$"):
            loop.add_reader(a, print)
    finally:
        a.close()
        b.close()


def test_add_writer_for_a_closed_socket_registered_as_reader(loop):
    # A new side means an epoll change on the closed fd: it fails with EBADF
    # and the registration is gone, as in selectors' modify().
    a, b = socket.socketpair()
    try:
        loop.add_reader(a, print)
        a.close()
        with pytest.raises(OSError) as info:
            loop.add_writer(a, print)
        assert info.value.errno == errno.EBADF
        with pytest.raises(ValueError, match="^Invalid file descriptor: -1$"):
            loop.remove_reader(a)
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


def _would_wait(loop: Any, op: str) -> tuple[Any, list[socket.socket]]:
    """A ``sock_*`` coroutine of ``loop`` whose first attempt finds the socket not ready."""
    if op == "sendto":
        # A unix datagram peer whose queue is full: sendto raises BlockingIOError
        # (over UDP loopback it never does: full receivers drop).
        a, peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        peer.bind("")  # an abstract address the kernel picks
        a.setblocking(False)
        while True:
            try:
                a.sendto(b"x" * 1000, peer.getsockname())
            except BlockingIOError:
                break
        return loop.sock_sendto(a, b"x" * 1000, peer.getsockname()), [a, peer]
    if op in ("recvfrom", "recvfrom_into"):
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        a.bind(("127.0.0.1", 0))
        a.setblocking(False)
        if op == "recvfrom":
            return loop.sock_recvfrom(a, 10), [a]
        return loop.sock_recvfrom_into(a, bytearray(10)), [a]
    if op == "accept":
        a = socket.socket()
        a.bind(("127.0.0.1", 0))
        a.listen()
        a.setblocking(False)
        return loop.sock_accept(a), [a]
    a, b = socket.socketpair()
    a.setblocking(False)
    if op == "recv":
        return loop.sock_recv(a, 1), [a, b]
    if op == "recv_into":
        return loop.sock_recv_into(a, bytearray(1)), [a, b]
    # sendall: more than the socket buffers hold.
    return loop.sock_sendall(a, b"x" * (16 << 20)), [a, b]


@pytest.mark.parametrize("op", ["recv", "recv_into", "recvfrom", "recvfrom_into", "accept", "sendall", "sendto"])
def test_sock_operation_that_must_wait_on_a_closed_loop(loop, op):
    # asyncio registers the socket (`_add_reader`/`_add_writer`), whose
    # `_check_closed()` raises.
    co, socks = _would_wait(loop, op)
    loop.close()
    try:
        with pytest.raises(RuntimeError, match="^Event loop is closed$"):
            co.send(None)
    finally:
        co.close()
        for s in socks:
            s.close()
