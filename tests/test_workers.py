"""Process-level scale-out: gunicorn's workers and SO_REUSEPORT servers.

gunicorn runs 2 workers on a loopback port with ``ferroloop.workers.UvicornWorker``
or ``ferroloop.workers.AiohttpWorker``; each response names the worker's pid
and the class of its running loop. The same runs with the stock workers on
asyncio's loop (``impl == "asyncio"``) and must behave the same. Checked: 1,000
requests from httpx spread over both workers; a worker killed with SIGKILL is
replaced and requests keep succeeding; SIGTERM to the arbiter lets an
in-flight request finish and gunicorn exits 0; ``--max-requests`` recycles
workers and SIGQUIT stops gunicorn as it does with the stock workers. Also:
``ferroloop.workers`` imports without the servers installed, and
``SO_REUSEPORT`` servers in two forked processes share one port.

Servers listen on 127.0.0.1 only. Every process started here is ended by its
pid (the arbiter and the workers it reported).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
gunicorn_config = pytest.importorskip("gunicorn.config")

EXPECTED_LOOP = {"asyncio": "asyncio.unix_events._UnixSelectorEventLoop", "ferroloop": "ferroloop._loop.Loop"}
START_TIMEOUT = 60.0

ASGI_APP = """\
import asyncio, os, sys

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        print(f"SLOW-START {os.getpid()}", file=sys.stderr, flush=True)
        await asyncio.sleep(1.0)
    loop = asyncio.get_running_loop()
    body = f"{os.getpid()} {type(loop).__module__}.{type(loop).__qualname__}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
"""

AIOHTTP_APP = """\
import asyncio, os, sys
from aiohttp import web

async def hello(request):
    loop = asyncio.get_running_loop()
    return web.Response(text=f"{os.getpid()} {type(loop).__module__}.{type(loop).__qualname__}")

async def slow(request):
    print(f"SLOW-START {os.getpid()}", file=sys.stderr, flush=True)
    await asyncio.sleep(1.0)
    return await hello(request)

app = web.Application()
app.router.add_get("/", hello)
app.router.add_get("/slow", slow)
"""

# The stock workers on asyncio's own loop, for the comparison runs.
ASYNCIO_WORKERS = """\
from uvicorn_worker import UvicornWorker

class AsyncioUvicornWorker(UvicornWorker):
    CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "loop": "asyncio"}
"""

# gunicorn calls post_worker_init in each worker once its app is loaded.
GUNICORN_CONF = """\
import os, sys

def post_worker_init(worker):
    print(f"READY {os.getpid()}", file=sys.stderr, flush=True)
"""

# kind -> (app module, worker class on asyncio, worker class on ferroloop)
KINDS = {
    "uvicorn": ("asgi_app:app", "asyncio_workers.AsyncioUvicornWorker", "ferroloop.workers.UvicornWorker"),
    "aiohttp": ("aiohttp_app:app", "aiohttp.worker.GunicornWebWorker", "ferroloop.workers.AiohttpWorker"),
}


def _require(kind: str) -> None:
    if kind == "uvicorn":
        pytest.importorskip("uvicorn_worker")
    else:
        pytest.importorskip("aiohttp")


class Gunicorn:
    """One gunicorn arbiter in a child process, its output in a log file."""

    def __init__(self, tmp_path: Path, kind: str, impl: str, workers: int = 2, extra: Sequence[str] = ()) -> None:
        _require(kind)
        app, asyncio_worker, ferroloop_worker = KINDS[kind]
        (tmp_path / "asgi_app.py").write_text(ASGI_APP)
        (tmp_path / "aiohttp_app.py").write_text(AIOHTTP_APP)
        (tmp_path / "asyncio_workers.py").write_text(ASYNCIO_WORKERS)
        (tmp_path / "gunicorn_conf.py").write_text(GUNICORN_CONF)
        self.log_path = tmp_path / "gunicorn.log"
        self.worker_pids: set[int] = set()
        argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "gunicorn_conf.py",
            "-w",
            str(workers),
            "-b",
            "127.0.0.1:0",
            "-k",
            ferroloop_worker if impl == "ferroloop" else asyncio_worker,
            "--graceful-timeout",
            "20",
            "--timeout",
            "60",
            *extra,
        ]
        if "control_socket_disable" in gunicorn_config.Config().settings:
            # gunicorn >= 24 also opens a control socket under $HOME by default.
            argv.append("--no-control-socket")
        argv.append(app)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            port = self.wait_for(r"Listening at: http://127\.0\.0\.1:(\d+)")[0]
            self.base_url = f"http://127.0.0.1:{port}"
            self.wait_ready(workers)
        except BaseException:
            self.kill()
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready_pids(self) -> list[int]:
        return [int(p) for p in re.findall(r"^READY (\d+)$", self.log(), re.M)]

    def wait_for(self, pattern: str, timeout: float = START_TIMEOUT) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            found = re.findall(pattern, self.log(), re.M)
            if found:
                return found
            assert self.proc.poll() is None, f"gunicorn exited ({self.proc.returncode}):\n{self.log()}"
            assert time.monotonic() < deadline, f"timed out waiting for {pattern!r}:\n{self.log()}"
            time.sleep(0.02)

    def wait_ready(self, count: int, timeout: float = START_TIMEOUT) -> list[int]:
        deadline = time.monotonic() + timeout
        while len(pids := self.ready_pids()) < count:
            assert self.proc.poll() is None, f"gunicorn exited ({self.proc.returncode}):\n{self.log()}"
            assert time.monotonic() < deadline, f"only {len(pids)} of {count} workers ready:\n{self.log()}"
            time.sleep(0.02)
        self.worker_pids.update(pids)
        return pids

    def kill(self) -> None:
        """End the arbiter and every worker it reported, by pid."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for pid in self.worker_pids | set(self.ready_pids()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[object]:
    started: list[Gunicorn] = []

    def start(kind: str, impl: str, workers: int = 2, extra: Sequence[str] = ()) -> Gunicorn:
        g = Gunicorn(tmp_path, kind, impl, workers, extra)
        started.append(g)
        return g

    yield start
    for g in started:
        g.kill()


DROPPED = (0, "dropped")


def fetch(
    base_url: str, count: int, clients: int = 4, path: str = "/", drops_ok: bool = False
) -> list[tuple[int, str]]:
    """``count`` GETs from ``clients`` httpx clients in threads, each on a new connection.

    With ``drops_ok``, a connection the server closes without answering counts
    as ``DROPPED`` instead of failing.
    """

    def run(n: int) -> list[tuple[int, str]]:
        out = []
        with httpx.Client(base_url=base_url, headers={"Connection": "close"}, timeout=30) as client:
            for _ in range(n):
                try:
                    r = client.get(path)
                except (httpx.ReadError, httpx.RemoteProtocolError):
                    if not drops_ok:
                        raise
                    out.append(DROPPED)
                    continue
                out.append((r.status_code, r.text))
        return out

    shares = [count // clients + (1 if i < count % clients else 0) for i in range(clients)]
    with ThreadPoolExecutor(clients) as pool:
        return [answer for part in pool.map(run, shares) for answer in part]


def by_pid(answers: list[tuple[int, str]]) -> Counter[tuple[int, str]]:
    """(pid, loop class) -> number of 200 answers; any other status fails."""
    assert {status for status, _ in answers} == {200}, Counter(status for status, _ in answers)
    counts: Counter[tuple[int, str]] = Counter()
    for _, text in answers:
        pid, loop_class = text.split()
        counts[int(pid), loop_class] += 1
    return counts


def served_pids(base_url: str, want: set[int], limit: int = 2000) -> set[int]:
    """Request until every pid in ``want`` has answered (at most ``limit`` requests); all must be 200."""
    seen: set[int] = set()
    done = 0
    while not want <= seen and done < limit:
        counts = by_pid(fetch(base_url, 100))
        seen |= {pid for pid, _ in counts}
        done += 100
    return seen


# The stock workers on asyncio's loop are compared in the normal run; asyncio's
# debug mode changes nothing they would show about ferroloop.
IMPLS = ["asyncio", "ferroloop"] if not os.environ.get("PYTHONASYNCIODEBUG") else ["ferroloop"]
KIND_NAMES = list(KINDS)


@pytest.mark.parametrize("kind", KIND_NAMES)
@pytest.mark.parametrize("impl", IMPLS)
def test_two_workers_serve_survive_sigkill_and_stop_gracefully(gunicorn, kind, impl):
    """One gunicorn through its life: serving on both workers, a worker lost, SIGTERM."""
    g = gunicorn(kind, impl)
    first = set(g.ready_pids())
    assert len(first) == 2
    counts = by_pid(fetch(g.base_url, 1000))
    assert sum(counts.values()) == 1000
    assert {loop for _, loop in counts} == {EXPECTED_LOOP[impl]}
    # Both workers took a share of the connections.
    assert {pid for pid, _ in counts} == first, (counts, g.log())

    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    # gunicorn reaps it and forks a replacement.
    new_pid = next(p for p in g.wait_ready(3) if p not in first)
    g.wait_for(rf"Worker \(pid:{victim}\) was sent SIGKILL")
    # After a short grace period every request succeeds, served by the
    # survivor and the replacement only, both on the expected loop.
    time.sleep(0.2)
    now = first - {victim} | {new_pid}
    assert served_pids(g.base_url, now) == now, g.log()
    counts = by_pid(fetch(g.base_url, 100))
    assert {loop for _, loop in counts} == {EXPECTED_LOOP[impl]}
    assert victim not in {pid for pid, _ in counts}

    # SIGTERM to the arbiter while a 1-second request is in flight: the
    # request gets its answer, then gunicorn exits 0.
    result: list[object] = []

    def slow_request() -> None:
        try:
            with httpx.Client(base_url=g.base_url, timeout=30) as client:
                r = client.get("/slow")
                result.append((r.status_code, r.text))
        except Exception as exc:
            result.append(exc)

    t = threading.Thread(target=slow_request)
    t.start()
    try:
        serving_pid = int(g.wait_for(r"^SLOW-START (\d+)$")[0])
        g.proc.send_signal(signal.SIGTERM)
    finally:
        t.join(timeout=40)
    assert not t.is_alive()
    assert result == [(200, f"{serving_pid} {EXPECTED_LOOP[impl]}")], g.log()
    assert serving_pid in now
    assert g.proc.wait(timeout=30) == 0, g.log()
    log = g.log()
    assert "Shutting down: Master" in log, log
    assert "Traceback" not in log, log
    # The listening socket is gone with the arbiter.
    with pytest.raises(httpx.ConnectError):
        httpx.get(g.base_url, timeout=5)


@pytest.mark.parametrize("kind", KIND_NAMES)
@pytest.mark.parametrize("impl", IMPLS)
def test_max_requests_recycles_workers_then_sigquit_stops(gunicorn, kind, impl):
    extra = ["--max-requests", "100", "--max-requests-jitter", "0", "--graceful-timeout", "1"]
    g = gunicorn(kind, impl, extra=extra)
    first = set(g.ready_pids())
    deadline = time.monotonic() + 30
    answers: list[tuple[int, str]] = []
    dropped = 0
    # Workers reach their limit, leave and are replaced (aiohttp's worker
    # checks its count once a second) until replacements have served too.
    while len(g.ready_pids()) < 4 or {pid for pid, _ in by_pid(answers)} <= first:
        assert time.monotonic() < deadline, (by_pid(answers), g.log())
        batch = fetch(g.base_url, 100, drops_ok=True)
        answers += [a for a in batch if a != DROPPED]
        dropped += batch.count(DROPPED)
    log = g.log()
    served = by_pid(answers)
    assert {loop for _, loop in served} == {EXPECTED_LOOP[impl]}
    assert first <= {pid for pid, _ in served}
    assert {pid for pid, _ in served} <= set(g.ready_pids())
    assert "Traceback" not in log, log
    exited = re.findall(r"Worker exiting \(pid: (\d+)\)", log)
    # Each replacement followed a worker that left by itself.
    assert len(exited) >= len(g.ready_pids()) - 2, log
    # Both servers close the connections a leaving worker has accepted but
    # not answered (the same on asyncio's loop): with 4 clients, at most 4
    # per worker that left.
    assert dropped <= 4 * len(exited), (dropped, log)

    # SIGQUIT, gunicorn's quick shutdown: the arbiter passes SIGQUIT on to the
    # workers. aiohttp's worker stops at once; uvicorn-worker's only marks
    # itself not alive and keeps serving until the arbiter kills it after
    # --graceful-timeout. The same on asyncio's loop.
    time.sleep(0.3)  # a worker that has just reached its limit leaves by itself
    exited = re.findall(r"Worker exiting \(pid: (\d+)\)", g.log())
    last = set(g.ready_pids()) - {int(pid) for pid in exited}
    g.proc.send_signal(signal.SIGQUIT)
    assert g.proc.wait(timeout=30) == 0, g.log()
    log = g.log()
    killed = {pid for pid in last if re.search(rf"Worker \(pid:{pid}\) was sent SIGKILL", log)}
    if kind == "aiohttp":
        assert killed == set(), log
    else:
        assert killed and killed <= last, log


WORKERS_WITHOUT = """
import sys, warnings
warnings.simplefilter("error")
for name in BLOCKED:
    sys.modules[name] = None  # import raises ImportError
import ferroloop.workers as w
from ferroloop.workers import *
print("LOOP_FACTORY", LOOP_FACTORY)
for name in ["UvicornWorker", "AiohttpWorker"]:
    try:
        cls = getattr(w, name)
    except ImportError as exc:
        print(name, "ImportError", exc)
    else:
        print(name, cls.__module__, cls.__qualname__, [b.__module__ for b in cls.__mro__[1:3]])
try:
    w.NoSuchWorker
except AttributeError as exc:
    print("AttributeError", exc)
"""


@pytest.mark.parametrize(
    ("blocked", "uvicorn_line", "aiohttp_line"),
    [
        (
            [],
            "UvicornWorker ferroloop.workers UvicornWorker ['uvicorn_worker._workers', 'gunicorn.workers.base']",
            "AiohttpWorker ferroloop.workers AiohttpWorker ['aiohttp.worker', 'gunicorn.workers.base']",
        ),
        (
            ["uvicorn_worker"],
            "UvicornWorker ferroloop.workers UvicornWorker ['uvicorn.workers', 'gunicorn.workers.base']",
            "AiohttpWorker ferroloop.workers AiohttpWorker ['aiohttp.worker', 'gunicorn.workers.base']",
        ),
        (
            ["uvicorn_worker", "uvicorn.workers"],
            "UvicornWorker ImportError ferroloop.workers.UvicornWorker needs the uvicorn-worker package: "
            "pip install uvicorn-worker",
            "AiohttpWorker ferroloop.workers AiohttpWorker ['aiohttp.worker', 'gunicorn.workers.base']",
        ),
        (
            ["gunicorn", "aiohttp", "uvicorn", "uvicorn_worker"],
            "UvicornWorker ImportError ferroloop.workers.UvicornWorker needs gunicorn and uvicorn: "
            "pip install gunicorn uvicorn-worker",
            "AiohttpWorker ImportError ferroloop.workers.AiohttpWorker needs gunicorn and aiohttp: "
            "pip install gunicorn aiohttp",
        ),
    ],
    ids=["all", "no-uvicorn-worker", "no-uvicorn-workers", "none"],
)
def test_workers_module_imports_without_the_servers(blocked, uvicorn_line, aiohttp_line):
    pytest.importorskip("uvicorn_worker")
    pytest.importorskip("aiohttp")
    res = subprocess.run(
        [sys.executable, "-c", f"BLOCKED = {blocked!r}\n" + WORKERS_WITHOUT],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "LOOP_FACTORY ferroloop:new_event_loop",
        uvicorn_line,
        aiohttp_line,
        "AttributeError module 'ferroloop.workers' has no attribute 'NoSuchWorker'",
    ], res.stderr
