"""The public entry points: new_event_loop, Loop, EventLoopPolicy, install, run, python -m ferroloop."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import ferroloop
import pytest


def test_new_event_loop_is_a_loop():
    loop = ferroloop.new_event_loop()
    try:
        assert isinstance(loop, ferroloop.Loop)
        assert isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()


def test_loop_can_be_subclassed():
    class MyLoop(ferroloop.Loop):
        def __init__(self):
            super().__init__()
            self.custom = "yes"

        def call_soon(self, callback, *args, context=None):
            self.calls = getattr(self, "calls", 0) + 1
            return super().call_soon(callback, *args, context=context)

    loop = MyLoop()
    try:

        async def main():
            await asyncio.sleep(0)
            return asyncio.get_running_loop()

        assert loop.run_until_complete(main()) is loop
        assert loop.custom == "yes" and loop.calls >= 1
    finally:
        loop.close()


def test_run_returns_result_and_closes_loop():
    seen = []

    async def main():
        seen.append(asyncio.get_running_loop())
        await asyncio.sleep(0)
        return 7

    assert ferroloop.run(main()) == 7
    assert isinstance(seen[0], ferroloop.Loop)
    assert seen[0].is_closed()


def test_run_debug_flag():
    async def main():
        return asyncio.get_running_loop().get_debug()

    assert ferroloop.run(main(), debug=True) is True
    assert ferroloop.run(main(), debug=False) is False


def test_run_inside_running_loop_is_runtime_error():
    async def inner():
        return 1

    async def main():
        c = inner()
        try:
            with pytest.raises(RuntimeError, match="cannot be called from a running event loop"):
                ferroloop.run(c)
        finally:
            c.close()

    ferroloop.run(main())


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.run(loop_factory=) is new in 3.12")
def test_asyncio_run_with_loop_factory():
    async def main():
        return type(asyncio.get_running_loop())

    assert asyncio.run(main(), loop_factory=ferroloop.new_event_loop) is ferroloop.Loop


def test_asyncio_runner_with_loop_factory():
    async def main():
        return type(asyncio.get_running_loop())

    with asyncio.Runner(loop_factory=ferroloop.new_event_loop) as runner:
        assert runner.run(main()) is ferroloop.Loop
        assert isinstance(runner.get_loop(), ferroloop.Loop)


def test_policy_and_install():
    old = asyncio.get_event_loop_policy()
    try:
        ferroloop.install()
        assert isinstance(asyncio.get_event_loop_policy(), ferroloop.EventLoopPolicy)
        loop = asyncio.new_event_loop()
        assert isinstance(loop, ferroloop.Loop)
        loop.close()

        async def main():
            return type(asyncio.get_running_loop())

        assert asyncio.run(main()) is ferroloop.Loop
    finally:
        asyncio.set_event_loop_policy(old)


def test_version():
    assert isinstance(ferroloop.__version__, str) and ferroloop.__version__


def run_main(args, tmp_path, **kw):
    return subprocess.run(
        [sys.executable, "-m", "ferroloop", *args], capture_output=True, text=True, cwd=tmp_path, timeout=60, **kw
    )


PROGRAM = textwrap.dedent(
    """
    import asyncio, sys
    async def main():
        loop = asyncio.get_running_loop()
        print(type(loop).__module__, type(loop).__name__)
        print(__name__, sys.argv[1:])
        return int(sys.argv[1]) if len(sys.argv) > 1 else 0
    sys.exit(asyncio.run(main()))
    """
)


def test_python_m_ferroloop_script(tmp_path):
    (tmp_path / "prog.py").write_text(PROGRAM)
    r = run_main(["prog.py", "3", "x"], tmp_path)
    assert r.returncode == 3, r.stderr
    assert r.stdout.splitlines() == ["ferroloop._loop Loop", "__main__ ['3', 'x']"]
    ref = subprocess.run([sys.executable, "prog.py", "3", "x"], capture_output=True, text=True, cwd=tmp_path)
    assert ref.returncode == 3
    assert ref.stdout.splitlines()[1] == r.stdout.splitlines()[1]


def test_python_m_ferroloop_module(tmp_path):
    pkg = tmp_path / "pkgx"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "app.py").write_text(PROGRAM)
    r = run_main(["-m", "pkgx.app", "0"], tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["ferroloop._loop Loop", "__main__ ['0']"]


def test_python_m_ferroloop_uncaught_exception_exit_code(tmp_path):
    (tmp_path / "bad.py").write_text("raise SystemExit('fatal')\n")
    r = run_main(["bad.py"], tmp_path)
    assert r.returncode == 1 and "fatal" in r.stderr
    (tmp_path / "bad2.py").write_text("raise ValueError('oops')\n")
    r = run_main(["bad2.py"], tmp_path)
    assert r.returncode == 1 and "ValueError: oops" in r.stderr


def test_python_m_ferroloop_usage(tmp_path):
    r = run_main([], tmp_path)
    assert r.returncode == 2 and "usage" in r.stderr
