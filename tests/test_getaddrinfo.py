"""loop.getaddrinfo: the same answers as socket.getaddrinfo (numeric hosts
are answered without an executor round trip on ferroloop, names through the
executor as on asyncio)."""

from __future__ import annotations

import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

HOSTS = [
    None,
    "127.0.0.1",
    "0.0.0.0",
    "::1",
    "::",
    "::ffff:127.0.0.1",
    "fe80::1%lo",
    "10.1.2.3",
    "localhost",
    "",
    "1.2.3",
]
PORTS = [None, 0, 80, "8080", b"443", "http", 65535]
FAMILIES = [0, socket.AF_INET, socket.AF_INET6, socket.AF_UNIX]
TYPES = [0, socket.SOCK_STREAM, socket.SOCK_DGRAM]
FLAGS = [0, socket.AI_PASSIVE, socket.AI_CANONNAME, socket.AI_NUMERICHOST, socket.AI_ADDRCONFIG]


def outcome(fn):
    try:
        return ("ok", sorted(fn(), key=repr))
    except OSError as e:
        return ("error", type(e).__name__, e.errno, str(e))
    except (TypeError, ValueError, UnicodeError) as e:
        return ("error", type(e).__name__, str(e))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    host=st.sampled_from(HOSTS),
    port=st.sampled_from(PORTS),
    family=st.sampled_from(FAMILIES),
    type_=st.sampled_from(TYPES),
    flags=st.sampled_from(FLAGS),
)
def test_same_results_as_socket_getaddrinfo(loop_factory, host, port, family, type_, flags):
    loop = loop_factory()
    try:
        got = outcome(
            lambda: loop.run_until_complete(loop.getaddrinfo(host, port, family=family, type=type_, flags=flags))
        )
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
    expected = outcome(lambda: socket.getaddrinfo(host, port, family, type_, 0, flags))
    assert got == expected


def test_numeric_host_resolves_and_names_still_work(loop):
    async def main():
        a = await loop.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)
        b = await loop.getaddrinfo("localhost", "80", family=socket.AF_INET, type=socket.SOCK_STREAM)
        return a, b

    a, b = loop.run_until_complete(main())
    assert a == [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80))]
    assert b == [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80))]


def test_patched_socket_getaddrinfo_is_honoured(loop, monkeypatch):
    calls = []

    def fake(host, port, family=0, type=0, proto=0, flags=0):
        calls.append((host, port, family, type, proto, flags))
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.9.8.7", port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    got = loop.run_until_complete(loop.getaddrinfo("127.0.0.1", 1234))
    assert got == [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.9.8.7", 1234))]
    assert calls == [("127.0.0.1", 1234, 0, 0, 0, 0)]


def test_closed_loop_and_bad_flags_fail_as_in_asyncio(loop_factory):
    # The numeric fast path must not skip run_in_executor's closed-loop check,
    # nor change which function rejects flags that are not an int.
    lp = loop_factory()
    try:
        with pytest.raises(TypeError, match="cannot be interpreted as an integer"):
            lp.run_until_complete(lp.getaddrinfo("127.0.0.1", 80, flags="x"))
    finally:
        lp.close()
    coro = lp.getaddrinfo("127.0.0.1", 80)
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        coro.send(None)
