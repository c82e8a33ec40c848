"""The pytest plugin (``ferroloop.pytest_plugin``, docs/pytest-plugin.md) on a sample project.

``tests/pytest_plugin_sample`` is a small project of its own (test files
``check_*.py``, which this suite does not collect): pytest-asyncio tests in
strict and in auto mode with async fixtures, an ``IsolatedAsyncioTestCase``,
anyio tests with a module-scoped async fixture, sync tests, and
``test_loop_is_stdlib``, which passes on asyncio's loop and fails on any other
on purpose. Its pytest runs in a subprocess, once per mode, with each
pytest-asyncio version of ``PYTEST_ASYNCIO``; every sample test records the
class of the loop it ran on, and a small plugin of the sample records every
outcome.

pytest-asyncio is not one of our dev requirements (it would change how this
suite runs): each version is installed once into ``target/pytest-asyncio/``
and put on the subprocess's ``PYTHONPATH`` only. 0.23 and 0.24 require
pytest < 9, so pytest 8.4.2 goes next to them.

The plugin is also an installed ``pytest11`` entry point (pyproject.toml).
Until the package is reinstalled the venv does not have it: the runs then get
an equivalent entry point from a stand-in distribution on ``PYTHONPATH``, so
they behave as they will once it is installed.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = Path(__file__).resolve().parent / "pytest_plugin_sample"
CACHE = ROOT / "target" / "pytest-asyncio"
PLUGIN = "ferroloop.pytest_plugin"

#: pytest-asyncio version -> what else goes into its directory.
PYTEST_ASYNCIO = {
    "0.23.8": ["pytest==8.4.2"],  # policy fixture, event_loop fixture; pytest < 9
    "0.24.0": ["pytest==8.4.2"],  # policy fixture, loop_scope; pytest < 9
    "1.5.0": [],  # the current release: pytest_asyncio_loop_factories hook
}

STDLIB_LOOP = "asyncio.unix_events._UnixSelectorEventLoop"
FERROLOOP_LOOP = "ferroloop._loop.Loop"

STRICT_FILES = ["check_marked.py", "check_unittest.py", "check_anyio.py"]
AUTO_FILES = ["check_marked.py", "check_unittest.py", "check_auto.py"]
DELIBERATE = "check_marked.py::test_loop_is_stdlib"
SYNC_TESTS = ["check_marked.py::test_sync", "check_unittest.py::TestPlain::test_sync"]
ASYNC_TESTS = [
    "check_marked.py::test_sleep",
    "check_marked.py::test_echo_server",
    "check_marked.py::test_parametrized[1]",
    "check_marked.py::test_parametrized[2]",
    DELIBERATE,
    "check_unittest.py::TestIsolated::test_call_later",
    "check_unittest.py::TestIsolated::test_queue",
    "check_anyio.py::test_without_the_fixture",
    "check_anyio.py::test_task_group",
    "check_anyio.py::test_memory_stream",
]
AUTO_TESTS = ["check_auto.py::test_auto", "check_auto.py::TestAutoClass::test_method"]

_NETWORK_ERRORS = re.compile(
    r"NewConnectionError|Max retries exceeded|Temporary failure in name resolution|"
    r"Network is unreachable|ConnectionError|ProxyError|timed out|No route to host"
)


# -- the pieces every run needs ------------------------------------------------


def _install(version: str) -> Path:
    """``target/pytest-asyncio/<version>``, installed on first use (one process at a time)."""
    dest = CACHE / version
    if (dest / ".complete").exists():
        return dest
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (dest / ".complete").exists():
            return dest
        partial = CACHE / f".{version}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        argv = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        argv += ["--retries", "1", "--timeout", "20", "--no-deps", "--target", str(partial)]
        argv += [f"pytest-asyncio=={version}", *PYTEST_ASYNCIO[version]]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        if res.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            if _NETWORK_ERRORS.search(res.stdout + res.stderr):
                pytest.skip(f"pip cannot reach the package index to install pytest-asyncio {version}")
            pytest.fail(f"pip could not install pytest-asyncio {version}:\n{res.stdout}\n{res.stderr}")
        (partial / ".complete").touch()
        shutil.rmtree(dest, ignore_errors=True)
        partial.rename(dest)
    return dest


def _declared_entry_point() -> tuple[str, str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        eps = tomllib.load(f)["project"]["entry-points"]["pytest11"]
    [(name, value)] = eps.items()
    return name, value


def _installed_entry_point() -> importlib.metadata.EntryPoint | None:
    for ep in importlib.metadata.entry_points(group="pytest11"):
        if ep.value.split(":")[0] == PLUGIN:
            return ep
    return None


@pytest.fixture(scope="session")
def entry_point_path(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """What ``PYTHONPATH`` needs for the plugin's entry point: nothing once the package is reinstalled."""
    if _installed_entry_point() is not None:
        return []
    name, value = _declared_entry_point()
    site = tmp_path_factory.mktemp("entry-point")
    info = site / "ferroloop_entry_point_stand_in-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ferroloop-entry-point-stand-in\nVersion: 0\n")
    (info / "entry_points.txt").write_text(f"[pytest11]\n{name} = {value}\n")
    return [str(site)]


@dataclass
class Run:
    returncode: int
    output: str
    #: nodeid -> passed/failed/error/skipped/xfailed/xpassed, in the order they ran
    outcomes: dict[str, str] = field(default_factory=dict)
    #: nodeid -> [(what, loop class or None)], what: test/fixture/asyncSetUp
    loops: dict[str, list[tuple[str, str | None]]] = field(default_factory=dict)

    def differs_lines(self) -> list[str]:
        return [ln for ln in self.output.splitlines() if ln.startswith("DIFFERS ")]

    def summary_line(self) -> str:
        lines = [ln for ln in self.output.splitlines() if ln.startswith("ferroloop: ")]
        assert len(lines) == 1, self.output
        return lines[0]

    def test_loops(self, nodeid: str) -> list[str | None]:
        return [loop for what, loop in self.loops.get(nodeid, []) if what == "test"]


def run_sample(
    tmp_path: Path,
    version: str | None,
    extra_path: list[str],
    *args: str,
    files: list[str] = STRICT_FILES,
    cwd: Path = SAMPLE,
    env: dict[str, str] | None = None,
) -> Run:
    """The sample project's pytest in a subprocess, with pytest-asyncio ``version`` (``None``: without)."""
    log = tmp_path / f"log-{len(list(tmp_path.glob('log-*')))}.jsonl"
    full_env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
    full_env.update(env or {})
    path = [*extra_path, *([str(_install(version))] if version else []), str(cwd)]
    if os.environ.get("PYTHONPATH"):
        path.append(os.environ["PYTHONPATH"])
    full_env["PYTHONPATH"] = os.pathsep.join(path)
    full_env["FERROLOOP_SAMPLE_LOG"] = str(log)
    full_env["PYTHONDONTWRITEBYTECODE"] = "1"
    # Hypothesis's plugin (installed in our venvs, unused by the sample) would double each run's time.
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:hypothesispytest"]
    argv += ["-p", "sample_record", "-q"]
    if version not in (None, "0.23.8"):
        argv += ["-o", "asyncio_default_fixture_loop_scope=function"]
    argv += [*args, *files]
    res = subprocess.run(argv, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=120)
    run = Run(res.returncode, res.stdout + res.stderr)
    phases: dict[str, dict[str, str]] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            entry = json.loads(line)
            if "report" in entry:
                phases.setdefault(entry["report"], {})[entry["when"]] = entry["outcome"]
            else:
                run.loops.setdefault(entry["test"], []).append((entry["what"], entry["loop"]))
    for nodeid, by_phase in phases.items():
        if by_phase.get("setup") != "passed":
            run.outcomes[nodeid] = "error" if by_phase.get("setup") == "failed" else by_phase["setup"]
        elif by_phase.get("teardown") == "failed":
            run.outcomes[nodeid] = "error"
        else:
            run.outcomes[nodeid] = by_phase["call"]
    return run


def variant_ids(nodeid: str, impl: str) -> set[str]:
    """The ids ``both`` mode may give ``nodeid``'s variant on ``impl``."""
    if nodeid.startswith("check_unittest.py::TestIsolated::"):
        return {nodeid.replace("::TestIsolated::", f"::TestIsolated[{impl}]::")}
    name, bracket, params = nodeid.partition("[")
    if not bracket:
        return {f"{nodeid}[{impl}]"}
    return {f"{name}[{impl}-{params}", f"{name}[{params[:-1]}-{impl}]"}


def variants_of(run: Run, nodeid: str) -> dict[str, str]:
    """impl -> the id of ``nodeid``'s variant in ``run`` (each must exist exactly once)."""
    found = {}
    for impl in ("asyncio", "ferroloop"):
        ids = variant_ids(nodeid, impl) & set(run.outcomes)
        assert len(ids) == 1, f"{nodeid}: no single [{impl}] variant in {sorted(run.outcomes)}\n{run.output}"
        found[impl] = ids.pop()
    return found


def warnings_summary(output: str) -> str:
    match = re.search(r"=+ warnings summary =+\n(.*?)(?:\n=+ |\Z)", output, re.S)
    return match.group(1) if match else ""


def assert_ran_on(run: Run, nodeid: str, loop: str | None) -> None:
    assert run.test_loops(nodeid) == [loop], f"{nodeid}: {run.loops.get(nodeid)}\n{run.output}"
    # Its fixtures and asyncSetUp ran on the test's loop too.
    assert all(lp == loop for _what, lp in run.loops[nodeid]), run.loops[nodeid]


_baselines: dict[str, Run] = {}


def baseline(tmp_path: Path, version: str, extra_path: list[str]) -> Run:
    """The sample without the plugin (its entry point blocked), once per version."""
    if version not in _baselines:
        run = run_sample(tmp_path, version, extra_path, "-p", f"no:{PLUGIN}")
        assert run.returncode == 0, run.output
        _baselines[version] = run
    return _baselines[version]


versions = pytest.mark.parametrize("version", list(PYTEST_ASYNCIO))


# -- the modes -----------------------------------------------------------------


@versions
def test_without_plugin_everything_runs_on_asyncio(tmp_path: Path, version: str, entry_point_path: list[str]) -> None:
    run = baseline(tmp_path, version, entry_point_path)
    assert sorted(run.outcomes) == sorted(ASYNC_TESTS + SYNC_TESTS), run.output
    assert set(run.outcomes.values()) == {"passed"}, run.output
    for nodeid in ASYNC_TESTS:
        assert_ran_on(run, nodeid, STDLIB_LOOP)
    for nodeid in SYNC_TESTS:
        assert_ran_on(run, nodeid, None)


@versions
def test_off_mode_changes_nothing(tmp_path: Path, version: str, entry_point_path: list[str]) -> None:
    # Loaded both ways (-p and the entry point), the mode unset: as if absent.
    base = baseline(tmp_path, version, entry_point_path)
    run = run_sample(tmp_path, version, entry_point_path, "-p", PLUGIN)
    assert run.returncode == 0, run.output
    assert list(run.outcomes.items()) == list(base.outcomes.items())
    assert run.loops == base.loops
    assert "ferroloop" not in run.output


@versions
def test_ferroloop_mode_runs_every_async_test_on_ferroloop(
    tmp_path: Path, version: str, entry_point_path: list[str]
) -> None:
    base = baseline(tmp_path, version, entry_point_path)
    run = run_sample(tmp_path, version, entry_point_path, "-p", PLUGIN, "--ferroloop-mode=ferroloop")
    assert run.returncode == 1, run.output
    # Same tests, same ids, same order; only the deliberate one fails.
    assert list(run.outcomes) == list(base.outcomes)
    assert {k: v for k, v in run.outcomes.items() if v != "passed"} == {DELIBERATE: "failed"}, run.output
    for nodeid in ASYNC_TESTS:
        assert_ran_on(run, nodeid, FERROLOOP_LOOP)
    for nodeid in SYNC_TESTS:
        assert_ran_on(run, nodeid, None)
    assert "ferroloop" not in warnings_summary(run.output)


def check_both_run(run: Run, async_tests: list[str], sync_tests: list[str]) -> None:
    expected_ids = set(sync_tests)
    for nodeid in async_tests:
        for impl, variant in variants_of(run, nodeid).items():
            expected_ids.add(variant)
            assert_ran_on(run, variant, STDLIB_LOOP if impl == "asyncio" else FERROLOOP_LOOP)
            expected = "failed" if (nodeid, impl) == (DELIBERATE, "ferroloop") else "passed"
            assert run.outcomes[variant] == expected, f"{variant}\n{run.output}"
    # Sync tests ran once, under their own ids; nothing else ran.
    assert set(run.outcomes) == expected_ids, run.output
    for nodeid in sync_tests:
        assert run.outcomes[nodeid] == "passed"
        assert_ran_on(run, nodeid, None)
    assert run.returncode == 1, run.output
    assert run.differs_lines() == [f"DIFFERS {DELIBERATE}: asyncio passed, ferroloop failed"], run.output
    assert run.summary_line() == f"ferroloop: {len(async_tests)} tests ran on both loops, 1 differ"
    assert "ferroloop" not in warnings_summary(run.output)


@versions
def test_both_mode_runs_each_async_test_twice_and_reports_the_difference(
    tmp_path: Path, version: str, entry_point_path: list[str]
) -> None:
    run = run_sample(tmp_path, version, entry_point_path, "-p", PLUGIN, "--ferroloop-mode", "both")
    check_both_run(run, ASYNC_TESTS, SYNC_TESTS)
    # The anyio module-scoped fixture was set up again for the ferroloop pass.
    fixture_loops = [lp for lps in run.loops.values() for what, lp in lps if what == "fixture"]
    assert fixture_loops.count(FERROLOOP_LOOP) == fixture_loops.count(STDLIB_LOOP) == 2, run.loops


@versions
def test_both_mode_in_pytest_asyncio_auto_mode(tmp_path: Path, version: str, entry_point_path: list[str]) -> None:
    # Unmarked async tests and fixtures too (anyio's tests are left out: in
    # auto mode pytest-asyncio would claim them as well).
    async_tests = [t for t in ASYNC_TESTS if not t.startswith("check_anyio.py")] + AUTO_TESTS
    run = run_sample(
        tmp_path, version, entry_point_path, "-p", PLUGIN, "-o", "asyncio_mode=auto", "--ferroloop-mode=both",
        files=AUTO_FILES,
    )  # fmt: skip
    check_both_run(run, async_tests, SYNC_TESTS)


def test_both_mode_without_pytest_asyncio(tmp_path: Path, entry_point_path: list[str]) -> None:
    # An anyio/unittest project: the plugin needs no pytest-asyncio.
    files = ["check_unittest.py", "check_anyio.py"]
    async_tests = [t for t in ASYNC_TESTS if t.split("::")[0] in files]
    sync_tests = [t for t in SYNC_TESTS if t.split("::")[0] in files]
    run = run_sample(tmp_path, None, entry_point_path, "-p", PLUGIN, "--ferroloop-mode=both", files=files)
    assert run.returncode == 0, run.output
    expected_ids = set(sync_tests)
    for nodeid in async_tests:
        for impl, variant in variants_of(run, nodeid).items():
            expected_ids.add(variant)
            assert_ran_on(run, variant, STDLIB_LOOP if impl == "asyncio" else FERROLOOP_LOOP)
    assert set(run.outcomes) == expected_ids, run.output
    assert set(run.outcomes.values()) == {"passed"}, run.output
    assert run.summary_line() == f"ferroloop: {len(async_tests)} tests ran on both loops, 0 differ"


# -- configuration ---------------------------------------------------------------


def test_entry_point_is_declared_and_named_after_the_module() -> None:
    # Named after the module: `-p ferroloop.pytest_plugin` then finds the
    # installed entry point instead of registering the module a second time.
    assert _declared_entry_point() == (PLUGIN, PLUGIN)
    installed = _installed_entry_point()
    if installed is not None:
        assert (installed.name, installed.value) == (PLUGIN, PLUGIN)


def test_ini_option_alone_enables_it_and_the_command_line_overrides(
    tmp_path: Path, entry_point_path: list[str]
) -> None:
    # Through the entry point only (no -p): the user's ini file sets the mode.
    project = tmp_path / "project"
    shutil.copytree(SAMPLE, project)
    with open(project / "pytest.ini", "a") as f:
        f.write("ferroloop_mode = ferroloop\n")
    version = list(PYTEST_ASYNCIO)[-1]
    run = run_sample(tmp_path, version, entry_point_path, cwd=project)
    assert {k: v for k, v in run.outcomes.items() if v != "passed"} == {DELIBERATE: "failed"}, run.output
    for nodeid in ASYNC_TESTS:
        assert_ran_on(run, nodeid, FERROLOOP_LOOP)
    run = run_sample(tmp_path, version, entry_point_path, "--ferroloop-mode=off", cwd=project)
    assert run.returncode == 0, run.output
    for nodeid in ASYNC_TESTS:
        assert_ran_on(run, nodeid, STDLIB_LOOP)


def test_both_mode_fails_the_session_on_any_difference(tmp_path: Path, entry_point_path: list[str]) -> None:
    version = list(PYTEST_ASYNCIO)[-1]
    # No difference: the session passes.
    run = run_sample(tmp_path, version, entry_point_path, "-p", PLUGIN, "--ferroloop-mode=both", "-k", "sleep")
    assert run.returncode == 0, run.output
    assert run.summary_line() == "ferroloop: 1 test ran on both loops, 0 differ"
    assert run.differs_lines() == []
    # Passed on asyncio, skipped on ferroloop: no test failed, yet the check does.
    run = run_sample(
        tmp_path, version, entry_point_path, "-p", PLUGIN, "--ferroloop-mode=both", "-k", "stdlib",
        env={"FERROLOOP_SAMPLE_DIFFERENCE": "skip"},
    )  # fmt: skip
    assert sorted(run.outcomes.values()) == ["passed", "skipped"], run.output
    assert run.returncode == 1, run.output
    assert run.differs_lines() == [f"DIFFERS {DELIBERATE}: asyncio passed, ferroloop skipped"], run.output


def test_unknown_mode_is_a_usage_error(tmp_path: Path, entry_point_path: list[str]) -> None:
    version = list(PYTEST_ASYNCIO)[-1]
    run = run_sample(tmp_path, version, entry_point_path, "-o", "ferroloop_mode=uvloop", files=["check_marked.py"])
    assert run.returncode == 4, run.output
    assert "ferroloop_mode must be one of off, ferroloop, both, not 'uvloop'" in run.output
