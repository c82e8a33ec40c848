"""Packaging: one source for the version, the wheel targets, the wheels' smoke program.

Building wheels is far too slow for ``make test``: ``make wheel`` and
``make wheel-check`` do it (README, "Build wheels"). These tests check what can
be checked fast: the version has one source (Cargo.toml), the targets exist,
and the smoke program ``make wheel-check`` runs in every fresh venv passes
here on both loops.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import tomllib
from collections.abc import Callable
from types import ModuleType

import ferroloop
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _toml(name: str) -> dict:
    with open(os.path.join(ROOT, name), "rb") as f:
        return tomllib.load(f)


def test_version_has_one_source() -> None:
    project = _toml("pyproject.toml")["project"]
    assert "version" not in project, "pyproject.toml must not repeat the version: Cargo.toml has it"
    assert "version" in project.get("dynamic", [])
    assert _toml("Cargo.toml")["package"]["version"] == ferroloop.__version__


def test_wheel_targets_listed_in_make_help() -> None:
    r = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True)
    targets = {line.split()[0] for line in r.stdout.splitlines() if line.strip()}
    assert {"wheel", "wheel-check"} <= targets, r.stdout
    for script in ("scripts/wheel_check.sh", "scripts/wheel_smoke.py"):
        assert os.path.isfile(os.path.join(ROOT, script)), script
    assert os.access(os.path.join(ROOT, "scripts/wheel_check.sh"), os.X_OK)


@pytest.fixture(scope="module")
def wheel_smoke() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wheel_smoke", os.path.join(ROOT, "scripts", "wheel_smoke.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wheel_smoke_program(
    wheel_smoke: ModuleType, loop_factory: Callable[[], asyncio.AbstractEventLoop], impl: str
) -> None:
    """The program ``make wheel-check`` runs against each installed wheel gives the same results on both loops."""
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        assert runner.run(wheel_smoke.on_which_loop()) == impl
        got = runner.run(wheel_smoke.main())
    assert got == wheel_smoke.expected_results()


def test_wheel_smoke_rejects_a_wrong_version() -> None:
    r = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "wheel_smoke.py"), "0.0.0.dev0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == (
        f"wheel_smoke: FAILED: ferroloop.__version__ is {ferroloop.__version__!r}, the wheel is '0.0.0.dev0'\n"
    )


def test_wheel_smoke_rejects_the_checkout() -> None:
    """In the dev venvs ferroloop comes from python/ (maturin develop): not an installed wheel."""
    if os.path.dirname(os.path.dirname(os.path.abspath(ferroloop.__file__))) != os.path.join(ROOT, "python"):
        pytest.skip("ferroloop is not imported from the checkout here")
    r = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "wheel_smoke.py"), ferroloop.__version__],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr.startswith("wheel_smoke: FAILED: ferroloop imported from "), r.stderr
