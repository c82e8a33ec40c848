"""Unclosed transports and sockets: the ``ResourceWarning``s, the
``__del__`` that ends at a warning raised as an error, and the accepted
sockets asyncio leaves to their own finalizer; both loops (``loop``
fixture).
"""

from __future__ import annotations

import asyncio
import gc
import socket
import sys
import warnings
import weakref

import pytest
from transport_support import Recorder


def test_unclosed_transport_warns_and_closes_its_socket(loop):
    async def main():
        a, b = socket.socketpair()
        t, _p = await loop.connect_accepted_socket(lambda: Recorder(loop), a)
        t.pause_reading()  # nothing registered: only we hold the transport
        fd = a.fileno()
        b.close()
        return weakref.ref(t), fd, a

    ref, _fd, sock = loop.run_until_complete(main())
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for _ in range(3):
            gc.collect()
    assert ref() is None
    msgs = [str(x.message) for x in w if issubclass(x.category, ResourceWarning)]
    assert any(m.startswith("unclosed transport <_SelectorSocketTransport") for m in msgs), msgs
    assert sock.fileno() == -1


def test_unclosed_transport_warning_raised_as_error_ends_del(loop):
    """With ResourceWarning turned into an error, asyncio's ``__del__`` raises
    at its warning: the error is reported against ``_SelectorTransport.__del__``
    and the socket is left open, to warn from its own finalizer."""

    async def main():
        a, b = socket.socketpair()
        t, _p = await loop.connect_accepted_socket(lambda: Recorder(loop), a)
        t.pause_reading()  # nothing registered: only we hold the transport
        b.close()
        return weakref.ref(t), a

    ref, sock = loop.run_until_complete(main())
    events = []
    old = sys.unraisablehook
    sys.unraisablehook = lambda u: events.append(
        (type(u.exc_value).__name__, str(u.exc_value).split(" ")[:2], getattr(u.object, "__qualname__", None))
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            for _ in range(3):
                gc.collect()
            assert ref() is None
            open_after_del = sock.fileno() != -1
            del sock
            gc.collect()
    finally:
        sys.unraisablehook = old
    assert open_after_del
    assert events == [
        ("ResourceWarning", ["unclosed", "transport"], "_SelectorTransport.__del__"),
        ("ResourceWarning", ["unclosed", "<socket.socket"], None),
    ]


def test_protocol_factory_error_drops_the_accepted_socket_unclosed(loop, tmp_path):
    # asyncio's _accept_connection2 swallows the factory's error (outside
    # debug mode) and drops the accepted socket.socket without closing it:
    # its finalizer closes it with a ResourceWarning naming the socket.
    loop.set_debug(False)
    path = str(tmp_path / "s")

    def factory():
        raise RuntimeError("no protocol")

    async def main():
        server = await loop.create_unix_server(factory, path)
        client = socket.socket(socket.AF_UNIX)
        client.connect(path)
        client.setblocking(False)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                for _ in range(4):
                    await asyncio.sleep(0)
            try:
                got = client.recv(1)
            except BlockingIOError:
                got = "open"
            server.close()
            await server.wait_closed()
            return got, [(w.category, str(w.message).split(",")[0].split("=")[0]) for w in caught]
        finally:
            client.close()

    got, warned = loop.run_until_complete(main())
    assert got == b""
    assert warned == [(ResourceWarning, "unclosed <socket.socket fd")]


@pytest.mark.deviation("D-025")
def test_server_closed_between_accept_and_set_up_leaks_the_socket(loop, tmp_path):
    """A connection accepted in the iteration before ``Server.close()``.

    Its set-up (asyncio's ``_accept_connection2`` task) runs after the close:
    the protocol is made, the transport's ``Server._attach()`` fails its
    assertion, and the error is swallowed. asyncio's accepted socket then
    stays open until the cycle collector finds it (the client sees no EOF
    before, and the collection warns "unclosed <socket.socket ...>");
    ferroloop closes it at once.
    """
    loop.set_debug(False)  # in debug mode both loops run asyncio's accept path
    made = []
    path = str(tmp_path / "s")

    class Proto(asyncio.Protocol):
        def __init__(self):
            made.append(self)

        def connection_made(self, transport):
            made.append(transport)

    async def main():
        server = await loop.create_unix_server(Proto, path)
        client = socket.socket(socket.AF_UNIX)
        client.connect(path)
        client.setblocking(False)
        caught = warnings.catch_warnings(record=True)
        warned = caught.__enter__()
        warnings.simplefilter("always")
        unraisable = []
        old_hook = sys.unraisablehook
        sys.unraisablehook = lambda u: unraisable.append(type(u.exc_value).__name__)
        try:
            # The poll finds the listener readable; the accept runs after this
            # task's step, the set-up one iteration later, after this task's.
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            server.close()
            for _ in range(4):
                await asyncio.sleep(0)  # the set-up, failing
            try:
                before = client.recv(1)
            except BlockingIOError:
                before = "open"
            settled = len(warned)
            gc.collect()
            # On 3.13 the half-made transport's __del__ also detaches it from
            # the closed server, whose _wakeup() then fails (an unraisable
            # TypeError, on both loops).
            assert unraisable in ([], ["TypeError"])
            try:
                after = client.recv(1)
            except BlockingIOError:
                after = "open"
            unclosed = [str(w.message).split(" ")[1] for w in warned[settled:] if w.category is ResourceWarning]
            return len(made), before, after, "<socket.socket" in unclosed
        finally:
            client.close()
            sys.unraisablehook = old_hook
            caught.__exit__(None, None, None)

    assert loop.run_until_complete(main()) == (1, "open", b"", True)


@pytest.mark.deviation("D-026")
def test_socket_transport_failing_on_a_closed_loop_leaves_the_socket_to_the_collector(loop):
    """``create_connection(sock=...)`` on a closed loop.

    The transport's constructor fails (scheduling ``connection_made`` raises
    "Event loop is closed"); asyncio's half-made transport is then held by
    a reference cycle of the error and keeps the caller's socket open, and
    registered under its fd, until the cycle collector finds it (which warns
    "unclosed transport" and closes the socket). ferroloop's closes the
    socket at once, with the same warning.
    """
    sock = socket.socket()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            loop.close()
            coro = loop.create_connection(asyncio.Protocol, sock=sock)
            with pytest.raises(RuntimeError, match="Event loop is closed"):
                coro.send(None)
            del coro
            before = sock.fileno() != -1
            gc.collect()
            after = sock.fileno() != -1
        unclosed = [str(w.message).split(" <")[0] for w in warned if w.category is ResourceWarning]
    finally:
        sock.close()
        if gc_was_enabled:
            gc.enable()
    assert (before, after, unclosed) == (True, False, ["unclosed transport"])


@pytest.mark.parametrize("collected", [False, True], ids=["short-lived", "collector-ran"])
@pytest.mark.parametrize("action", ["always", "error"])
def test_unclosed_accepted_transport_and_its_socket_both_warn(loop, action, collected):
    """An unclosed connection the server accepted (natively on ferroloop,
    without a ``socket.socket`` until one is asked for). asyncio's transport
    holds bound methods of itself, so the cycle collector finds it with its
    socket, which nothing else holds: the socket's finalizer runs first
    ("unclosed <socket.socket ...>", and closes it), then the transport's
    ``__del__`` ("unclosed transport ..."); as errors, both are reported as
    unraisable, against the socket and against ``_SelectorTransport.__del__``.
    Once the collector has run during the connection's life, the socket sits
    after the transport in its list: the transport warns and closes the
    socket, which does not warn (as errors: the transport's ``__del__`` ends
    at its warning and the socket's finalizer reports its own).
    """
    loop.set_debug(False)  # in debug mode both loops run asyncio's accept path
    refs: list = []

    class Hold(asyncio.Protocol):
        def connection_made(self, transport):
            transport.pause_reading()  # nothing registered: only the protocol holds it
            self.transport = transport
            refs.append(weakref.ref(transport))
            held.append(transport)

    held: list = []

    async def main():
        server = await loop.create_server(Hold, "127.0.0.1", 0)
        client = socket.create_connection(server.sockets[0].getsockname())
        for _ in range(100):
            if refs:
                break
            await asyncio.sleep(0.01)
        if collected:
            gc.collect()  # the connection still held: it survives this run
        held.clear()
        server.close()  # no wait_closed(): the connection is never detached
        return client

    client = loop.run_until_complete(main())
    events = []
    old = sys.unraisablehook
    sys.unraisablehook = lambda u: events.append(
        (
            "unraisable",
            str(u.exc_value).split(" ")[:2],
            getattr(u.object, "__qualname__", type(u.object).__name__),
        )
    )
    try:
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter(action, ResourceWarning)
            for _ in range(3):
                gc.collect()
    finally:
        sys.unraisablehook = old
    events += [("warning", str(w.message).split(" ")[:2], None) for w in warned]
    try:
        client.settimeout(5)
        end = client.recv(1)
    finally:
        client.close()
    assert [r() for r in refs] == [None]
    sock_error = ("unraisable", ["unclosed", "<socket.socket"], "socket")
    transport_error = ("unraisable", ["unclosed", "transport"], "_SelectorTransport.__del__")
    if action == "error":
        assert events == ([transport_error, sock_error] if collected else [sock_error, transport_error])
    elif collected:
        assert events == [("warning", ["unclosed", "transport"], None)]
    else:
        assert events == [
            ("warning", ["unclosed", "<socket.socket"], None),
            ("warning", ["unclosed", "transport"], None),
        ]
    assert end == b""


@pytest.mark.deviation("D-027")
def test_socket_held_through_a_collection_still_warns_first(loop):
    """The collector's order, not its run count: a collection that finds the
    connection's socket held from outside (here by a local) leaves it before
    the transport in its list, so once both are dropped asyncio's socket
    still warns first. ferroloop counts the run and lets only the transport
    warn."""

    async def main():
        a, b = socket.socketpair()
        t, _ = await loop.connect_accepted_socket(asyncio.Protocol, a)
        t.pause_reading()  # nothing registered: only we hold the transport
        gc.collect()  # `a` held here
        return [a, t], b

    held, peer = loop.run_until_complete(main())
    try:
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            del held[0]  # the socket, then the transport
            held.clear()
            for _ in range(3):
                gc.collect()
    finally:
        peer.close()
    assert [str(w.message).split(" ")[:2] for w in warned if w.category is ResourceWarning] == [
        ["unclosed", "<socket.socket"],
        ["unclosed", "transport"],
    ]


@pytest.mark.deviation("D-027")
def test_socket_warns_first_while_gc_callbacks_lack_ferroloops_entry(loop):
    """With ferroloop's ``gc.callbacks`` entry taken out, the collections are
    not counted: ferroloop lets only the transport warn, where asyncio's
    short-lived connection (no collection during its life) warns with its
    socket first. The entry is put back afterwards."""

    async def main():
        a, b = socket.socketpair()
        t, _ = await loop.connect_accepted_socket(asyncio.Protocol, a)
        t.pause_reading()  # nothing registered: only we hold the transport
        return [a, t], b

    # A first connection, closed: ferroloop adds its entry with its first one.
    (_, first), first_peer = loop.run_until_complete(main())
    first.close()
    first_peer.close()
    loop.run_until_complete(asyncio.sleep(0))
    ours = [cb for cb in gc.callbacks if getattr(cb, "__name__", "") == "_count_collection"]
    for cb in ours:
        gc.callbacks.remove(cb)
    try:
        held, peer = loop.run_until_complete(main())
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            held.clear()
            for _ in range(3):
                gc.collect()
        peer.close()
    finally:
        gc.callbacks.extend(ours)
    assert [str(w.message).split(" ")[:2] for w in warned if w.category is ResourceWarning] == [
        ["unclosed", "<socket.socket"],
        ["unclosed", "transport"],
    ]
