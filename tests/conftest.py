"""One fixture runs every behavioural test on stdlib asyncio and on ferroloop.

- ``impl``: ``"asyncio"`` or ``"ferroloop"`` (every test using ``loop`` or
  ``loop_factory`` runs once for each).
- ``loop``: a fresh loop of that implementation, set as the current loop. Its
  exception handler records every call; teardown fails the test if it was
  called and the test did not consume the records (``loop_errors.clear()``).
  Teardown also closes the loop and asserts it is garbage-collected.
- ``launch``: for programs run in a child interpreter (``run_child``):
  ``"asyncio"``, ``"ferroloop"`` (``new_event_loop``/``loop_factory``),
  ``"ferroloop-install"`` (``ferroloop.install()``, then asyncio's own entry
  points) and ``"ferroloop-cli"`` (``python -m ferroloop program.py``).
- ``fl_loop``: a plain ferroloop loop, for ferroloop-only features
  (statistics, the blocking-call detector), closed at the end.
- ``@pytest.mark.deviation("D-NNN")``: a documented difference
  (docs/compatibility.md); on ferroloop the test becomes a strict xfail.
- ``@pytest.mark.only("asyncio"|"ferroloop")``: run on one implementation only.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import ferroloop
import pytest

IMPLS = ["asyncio", "ferroloop"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVIATIONS_DOC = os.path.join(ROOT, "docs", "compatibility.md")


def factory_for(impl: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if impl == "asyncio":
        return asyncio.SelectorEventLoop
    return ferroloop.new_event_loop


def _apply_markers(request: pytest.FixtureRequest, impl: str) -> None:
    only = request.node.get_closest_marker("only")
    if only is not None and only.args[0] != impl:
        pytest.skip(f"only runs on {only.args[0]}")
    dev = request.node.get_closest_marker("deviation")
    if dev is not None and impl == "ferroloop":
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"deviation {dev.args[0]}"))


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> str:
    _apply_markers(request, request.param)
    return request.param


# How a child program gets its loop: asyncio's own; ferroloop through
# ``loop_factory``/``new_event_loop()``; ferroloop through ``ferroloop.install()``
# and plain ``asyncio.run``/``asyncio.new_event_loop``; ferroloop through
# ``python -m ferroloop program.py``.
LAUNCHES = ["asyncio", "ferroloop", "ferroloop-install", "ferroloop-cli"]
# asyncio's debug mode (``make test-debug``) changes nothing the launch forms
# choose between, and the normal run already covers them: there only the
# first two run.
if os.environ.get("PYTHONASYNCIODEBUG"):
    LAUNCHES = LAUNCHES[:2]

# The same reasoning for whole modules: the debug-mode pass re-runs the
# behavioural suite; the integration suites (third-party servers and workers,
# the pytest plugin, packaging), the whole-program ones (the tutorial
# examples, shutdown under load) and ferroloop's own observability features
# (the blocking-call detector, statistics, the OpenTelemetry bridge: no
# asyncio behaviour to compare; test_stats sets debug mode itself where it
# matters) run once per Python, in the normal pass.
collect_ignore = (
    [
        "test_workers.py",
        "test_recipes.py",
        "test_pytest_plugin.py",
        "test_packaging.py",
        "test_seeds.py",
        "test_shutdown_under_load.py",
        "test_blocking.py",
        "test_stats.py",
        "test_otel.py",
        "soak",
    ]
    if os.environ.get("PYTHONASYNCIODEBUG")
    else []
)
# The soak suite runs only through `make soak` (docs/reliability.md).
if not os.environ.get("FERROLOOP_SOAK_SCALE"):
    collect_ignore.append("soak")


@pytest.fixture(params=LAUNCHES)
def launch(request: pytest.FixtureRequest) -> str:
    """``impl`` for tests run in a child interpreter, with ferroloop reached in each way a user has."""
    _apply_markers(request, request.param.split("-")[0])
    return request.param


@pytest.fixture
def loop_factory(impl: str) -> Callable[[], asyncio.AbstractEventLoop]:
    return factory_for(impl)


class ErrorLog(list):  # type: ignore[type-arg]
    """Exception-handler contexts recorded during a test."""


@pytest.fixture
def loop_errors() -> ErrorLog:
    return ErrorLog()


@pytest.fixture
def loop(loop_factory: Callable[[], asyncio.AbstractEventLoop], loop_errors: ErrorLog) -> Iterator[Any]:
    lp = loop_factory()
    lp.set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))
    asyncio.set_event_loop(lp)
    yield lp
    asyncio.set_event_loop(None)
    for task in asyncio.all_tasks(lp):
        _LEAK_WATCH.append((f"task {task.get_name()}", weakref.ref(task)))
    if not lp.is_closed():
        if not lp.is_running():
            lp.run_until_complete(lp.shutdown_asyncgens())
            lp.run_until_complete(lp.shutdown_default_executor())
        lp.close()
    errors = list(loop_errors)
    loop_errors.clear()
    _LEAK_WATCH.append(("loop", weakref.ref(lp)))
    del lp
    assert not errors, f"unexpected exception handler calls: {errors!r}"


@pytest.fixture
def fl_loop() -> Iterator[Any]:
    """A ferroloop loop for ferroloop-only features (statistics, the detector), closed at the end."""
    lp = ferroloop.new_event_loop()
    yield lp
    lp.close()


_LEAK_WATCH: list[tuple[str, weakref.ref[Any]]] = []


_CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    rep = yield
    if rep.when == "call" and not rep.passed:
        item.stash[_CALL_FAILED] = True
    return rep


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    # Runs after every fixture of the test is finalised, so the fixture cache
    # no longer holds the loop: whatever is still alive now has leaked.
    res = yield
    watch = list(_LEAK_WATCH)
    _LEAK_WATCH.clear()
    # A failed test's traceback keeps its frames (and so the loop) alive.
    if not watch or item.stash.get(_CALL_FAILED, False):
        return res
    # pytest drops the test's arguments only after this hook; drop them now.
    funcargs = getattr(item, "funcargs", None)
    if funcargs:
        funcargs.clear()
    # One collection always (what the test left for the collector, and the
    # ResourceWarnings that brings, belong to this test); two more only if
    # something is still alive, as a chain of finalizers may need them.
    gc.collect()
    for _ in range(2):
        if all(ref() is None for _, ref in watch):
            break
        gc.collect()
    leaked = [what for what, ref in watch if ref() is not None]
    assert not leaked, f"not garbage-collected after close(): {leaked}"
    return res


def child_program(code: str, impl: str) -> str:
    """``code`` with the prelude ``run_child`` describes."""
    base, _, how = impl.partition("-")
    if base == "asyncio":
        make = "new_loop = asyncio.SelectorEventLoop"
    elif not how:
        make = "new_loop = ferroloop.new_event_loop"
    else:
        make = "new_loop = asyncio.new_event_loop"
    prelude = f"""\
import asyncio, ferroloop
IMPL = {base!r}
{make}
def run_main(main):
    if IMPL == "ferroloop" and new_loop is asyncio.new_event_loop:
        return asyncio.run(main)  # through the installed policy
    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(main)
"""
    if how:
        # Count the ferroloop loops created; report them at exit.
        prelude += """\
import atexit as _atexit, sys as _sys
_created = [0]
_init = ferroloop.Loop.__init__
def _counting_init(self, *a, **k):
    _created[0] += 1
    _init(self, *a, **k)
ferroloop.Loop.__init__ = _counting_init
_atexit.register(lambda: _sys.stderr.write(f"\\nFERROLOOP_LOOPS={_created[0]}\\n"))
"""
    if how == "install":
        prelude += "ferroloop.install()\n"
    return prelude + textwrap.dedent(code)


def child_argv(code: str, impl: str, tmp_dir: str) -> list[str]:
    """The command line running ``code`` (see ``run_child``) as ``impl`` says; files go to ``tmp_dir``."""
    program = child_program(code, impl)
    if impl.endswith("-cli"):
        path = os.path.join(tmp_dir, "program.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(program)
        return [sys.executable, "-m", "ferroloop", path]
    return [sys.executable, "-c", program]


def check_ran_on_ferroloop(impl: str, returncode: int | None, stderr: str) -> str:
    """``stderr`` without the loop count of the ``-install``/``-cli`` forms, which must be >= 1 on success."""
    if "-" not in impl:
        return stderr
    lines = stderr.splitlines()
    counts = [ln for ln in lines if ln.startswith("FERROLOOP_LOOPS=")]
    if returncode == 0:
        assert counts and int(counts[-1].split("=")[1]) >= 1, f"the program did not run on ferroloop: {stderr}"
    return "\n".join(ln for ln in lines if not ln.startswith("FERROLOOP_LOOPS=")).strip("\n")


def run_child(
    code: str, impl: str, timeout: float = 30, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a child interpreter; a hang or crash fails only this test.

    ``impl`` is one of ``LAUNCHES``. The program sees ``IMPL`` (``"asyncio"`` or
    ``"ferroloop"``), ``new_loop()``, a new loop of that implementation made
    the way ``impl`` names, and ``run_main(coro)``, ``asyncio.run`` for it; the ``-install`` and ``-cli`` forms also check that
    the program really created a ferroloop loop.
    """
    full_env = dict(os.environ)
    full_env.update(env or {})
    with tempfile.TemporaryDirectory(prefix="ferroloop-child-") as tmp:
        argv = child_argv(code, impl, tmp)
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=full_env)
    res.stderr = check_ran_on_ferroloop(impl, res.returncode, res.stderr)
    return res


def pytest_collection_finish(session: pytest.Session) -> None:
    # Everything imported by now (pytest, the test modules, aiohttp, uvicorn,
    # hypothesis, ...) lives to the end of the run: out of the collector's
    # way, so the collections after each test (and in the tests) walk only
    # what the tests made. About 100,000 objects, 20 ms per full collection.
    gc.collect()
    gc.freeze()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Every deviation marker must name an entry of docs/compatibility.md.
    try:
        with open(DEVIATIONS_DOC, encoding="utf-8") as f:
            doc = f.read()
    except OSError:
        doc = ""
    for item in items:
        mark = item.get_closest_marker("deviation")
        if mark is not None and f"### {mark.args[0]}" not in doc:
            raise pytest.UsageError(f"{item.nodeid}: deviation {mark.args[0]} is not in docs/compatibility.md")


# A program for `python -m ferroloop` option tests (test_stats, test_blocking):
# one task step blocks for 0.3 s.
CLI_PROGRAM = """\
import asyncio, time
async def main():
    await asyncio.sleep(0.01)
    time.sleep(0.3)
    print("done")
asyncio.run(main())
"""


def run_cli(tmp_path: Any, *options: str, program: str = CLI_PROGRAM, timeout: float = 30) -> Any:
    """``python -m ferroloop OPTIONS app.py`` with ``program`` as app.py (blocks 0.3 s by default)."""
    path = tmp_path / "app.py"
    path.write_text(program)
    return subprocess.run(
        [sys.executable, "-m", "ferroloop", *options, str(path)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def feed_one_byte(loop: Any, protocol: type[asyncio.Protocol], wait: float) -> None:
    """Connect ``protocol`` to one end of a socket pair, send it one byte, wait, close."""
    a, b = socket.socketpair()
    transport, _ = await loop.connect_accepted_socket(protocol, a)
    b.send(b"x")
    await asyncio.sleep(wait)
    transport.close()
    b.close()
    await asyncio.sleep(0)


@pytest.fixture
def sockdir() -> Iterator[str]:
    """A short directory for unix socket paths (sun_path holds 108 bytes)."""
    path = tempfile.mkdtemp(prefix="fl-dg-")
    yield path
    shutil.rmtree(path, ignore_errors=True)
