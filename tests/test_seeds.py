"""Every runnable example of the tutorials in shared/seeds/ prints the same on
ferroloop as on asyncio.

Each program in tests/seeds/ runs in a child interpreter on asyncio, on
ferroloop installed with ``ferroloop.install()`` and under ``python -m
ferroloop`` (through tests/seeds/_runner.py, which scales sleeps and
timeouts equally for all); the outputs must be equal, line for line, or as a
multiset for the examples whose interleaving depends on random timer jitter
(marked ``seed-compare: unordered`` in their docstring).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from functools import cache

import pytest

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")
EXAMPLES = sorted(f for f in os.listdir(HERE) if f.startswith("s") and f.endswith(".py"))


@cache
def run(impl: str, example: str) -> subprocess.CompletedProcess[str]:
    cli = ["-m", "ferroloop"] if impl == "ferroloop-cli" else []
    # The examples make temporary files and directories and leave them:
    # give each run its own TMPDIR, removed afterwards.
    with tempfile.TemporaryDirectory(prefix="ferroloop-seed-run-") as tmp:
        env = {**os.environ, "TMPDIR": tmp, "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", "")}
        return subprocess.run(
            [sys.executable, *cli, os.path.join(HERE, "_runner.py"), impl, os.path.join(HERE, example)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=HERE,
            env=env,
        )


def test_examples_were_found():
    assert len(EXAMPLES) >= 8


SEED_IMPLS = ["asyncio", "ferroloop", "ferroloop-cli"]


@pytest.fixture(params=SEED_IMPLS)
def seed_impl(request: pytest.FixtureRequest) -> str:
    """asyncio; ferroloop through ``ferroloop.install()``; through ``python -m ferroloop``."""
    return request.param


@pytest.mark.parametrize("example", EXAMPLES)
def test_seed_example_output_matches_asyncio(seed_impl, example):
    impl = seed_impl
    ref = run("asyncio", example)
    assert ref.returncode == 0, ref.stderr
    assert ref.stdout.strip(), "the example printed nothing"
    got = run(impl, example)
    assert got.returncode == 0, got.stderr
    if impl != "asyncio":
        loops = [ln for ln in got.stderr.splitlines() if ln.startswith("FERROLOOP_LOOPS=")]
        assert loops and int(loops[-1].split("=")[1]) >= 1, "the example did not run on ferroloop"
    with open(os.path.join(HERE, example), encoding="utf-8") as f:
        unordered = "seed-compare: unordered" in f.read(2000)
    if unordered:
        assert sorted(got.stdout.splitlines()) == sorted(ref.stdout.splitlines())
    else:
        assert got.stdout == ref.stdout
