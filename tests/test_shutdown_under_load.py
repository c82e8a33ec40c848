"""Ctrl-C, SIGTERM and fork while a child interpreter serves 200 busy connections.

The program below runs a stream server and 200 clients that echo through it
without pause, in one process, started each way a user reaches ferroloop
(``launch``). When all 200 are connected and traffic flows, the test signals
it (or the program forks). What the program prints on the way out — which
tasks were cancelled, which ``finally`` blocks ran, whether every echoed byte
was right — and its exit status must be those of the same program on asyncio.
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
from functools import cache

import pytest
from conftest import check_ran_on_ferroloop, child_argv

CONNECTIONS = 200

PROGRAM = """
import os, signal, sys

N = {n}
MODE = {mode!r}
stats = {{"server_finally": 0, "client_finally": 0, "client_cancelled": 0, "bad_echo": 0, "rounds": 0}}
connected = 0

async def handle(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        stats["server_finally"] += 1
        writer.close()

async def client(port, i, all_connected):
    global connected
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        connected += 1
        if connected == N:
            all_connected.set()
        payload = (b"%05d:" % i) * 200
        while True:
            writer.write(payload)
            got = await reader.readexactly(len(payload))
            if got != payload:
                stats["bad_echo"] += 1
            stats["rounds"] += 1
    except asyncio.CancelledError:
        stats["client_cancelled"] += 1
        raise
    finally:
        stats["client_finally"] += 1

def report(what):
    busy = "yes" if stats["rounds"] > N else "no"
    print(what, "server_finally=%d client_finally=%d client_cancelled=%d bad_echo=%d busy=%s" % (
        stats["server_finally"], stats["client_finally"], stats["client_cancelled"], stats["bad_echo"], busy),
        flush=True)

async def main():
    loop = asyncio.get_running_loop()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    all_connected = asyncio.Event()
    clients = [asyncio.create_task(client(port, i, all_connected)) for i in range(N)]
    await all_connected.wait()
    while stats["rounds"] < 4 * N:
        await asyncio.sleep(0.01)
    if MODE == "sigterm-graceful":
        main_task = asyncio.current_task()
        loop.add_signal_handler(signal.SIGTERM, main_task.cancel)
    if MODE == "fork":
        await fork_while_busy()
        return
    print("ready", flush=True)
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        print("main cancelled", flush=True)
        raise
    finally:
        server.close()

async def fork_while_busy():
    pid = os.fork()
    if pid == 0:
        # The child: the parent's loop is not ours; a new one must work.
        status = 1
        try:
            asyncio.set_event_loop(None)
            async def ping():
                r, w = await asyncio.open_connection("127.0.0.1", child_port)
                w.write(b"ping")
                data = await r.readexactly(4)
                w.close()
                return data
            async def child_main():
                global child_port
                srv = await asyncio.start_server(handle, "127.0.0.1", 0)
                child_port = srv.sockets[0].getsockname()[1]
                data = await ping()
                srv.close()
                return data
            loop = new_loop()
            status = 0 if loop.run_until_complete(child_main()) == b"ping" else 2
            loop.close()
        finally:
            os._exit(status)
    before = stats["rounds"]
    while True:
        await asyncio.sleep(0.01)
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            break
    target = stats["rounds"] + 4 * N
    while stats["rounds"] < target:
        await asyncio.sleep(0.01)
    print("child exit", os.waitstatus_to_exitcode(st), flush=True)
    print("parent kept serving", stats["rounds"] > before, flush=True)
    for t in asyncio.all_tasks() - {{asyncio.current_task()}}:
        t.cancel()

try:
    run_main(main())
except KeyboardInterrupt:
    report("KeyboardInterrupt")
    raise
except asyncio.CancelledError:
    report("CancelledError")
    sys.exit(3)
else:
    report("returned")
"""


def run(launch: str, mode: str, tmp_dir: str, sig: int | None) -> tuple[int, list[str]]:
    argv = child_argv(PROGRAM.format(n=CONNECTIONS, mode=mode), launch, tmp_dir)
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if sig is not None:
            first = p.stdout.readline().strip()
            assert first == "ready", (first, p.stderr.read() if p.poll() is not None else "")
            time.sleep(0.2)
            p.send_signal(sig)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    check_ran_on_ferroloop(launch, p.returncode, err)
    lines = out.splitlines()
    return p.returncode, lines


@cache
def on_asyncio(mode: str, sig: int | None) -> tuple[int, list[str]]:
    with tempfile.TemporaryDirectory() as tmp:
        return run("asyncio", mode, tmp, sig)


@pytest.mark.parametrize(
    ("mode", "sig", "expected"),
    [
        # asyncio.run: the main task is cancelled, every other task is
        # cancelled at shutdown (their finally blocks run), then
        # KeyboardInterrupt ends the process as SIGINT does.
        (
            "sigint",
            signal.SIGINT,
            (
                -signal.SIGINT,
                [
                    "main cancelled",
                    f"KeyboardInterrupt server_finally={CONNECTIONS} client_finally={CONNECTIONS} "
                    f"client_cancelled={CONNECTIONS} bad_echo=0 busy=yes",
                ],
            ),
        ),
        # SIGTERM's default action: no Python code runs.
        ("sigterm", signal.SIGTERM, (-signal.SIGTERM, [])),
        # The usual graceful shutdown: SIGTERM cancels the main task.
        (
            "sigterm-graceful",
            signal.SIGTERM,
            (
                3,
                [
                    "main cancelled",
                    f"CancelledError server_finally={CONNECTIONS} client_finally={CONNECTIONS} "
                    f"client_cancelled={CONNECTIONS} bad_echo=0 busy=yes",
                ],
            ),
        ),
        # fork while busy: the child runs its own loop, the parent goes on.
        (
            "fork",
            None,
            (
                0,
                [
                    "child exit 0",
                    "parent kept serving True",
                    f"returned server_finally={CONNECTIONS} client_finally={CONNECTIONS} "
                    f"client_cancelled={CONNECTIONS} bad_echo=0 busy=yes",
                ],
            ),
        ),
    ],
)
def test_exit_under_load_is_asyncios(launch, mode, sig, expected, tmp_path):
    ref = on_asyncio(mode, sig)
    # The program's own expectation, so that a change in asyncio is noticed too.
    assert ref == expected
    got = ref if launch == "asyncio" else run(launch, mode, str(tmp_path), sig)
    assert got == ref
