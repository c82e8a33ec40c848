"""The public entry points: new_event_loop, Loop, EventLoopPolicy, install, run, python -m ferroloop."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import textwrap
import warnings
import zipfile

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


def test_install_warns_from_python_3_14(monkeypatch):
    # Python 3.14 deprecates policies; no 3.14 interpreter here, so the gate is forced.
    old = asyncio.get_event_loop_policy()
    try:
        monkeypatch.setattr(ferroloop._compat, "PY314", True)
        with pytest.warns(DeprecationWarning, match=r"loop_factory=ferroloop.new_event_loop") as rec:
            ferroloop.install()
        assert rec[0].filename == __file__
        assert isinstance(asyncio.get_event_loop_policy(), ferroloop.EventLoopPolicy)
        monkeypatch.setattr(ferroloop._compat, "PY314", False)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ferroloop.install()
    finally:
        asyncio.set_event_loop_policy(old)


def test_running_needs_no_policy():
    # What 3.14+ users do: no policy anywhere.
    old = asyncio.get_event_loop_policy()
    assert not isinstance(old, ferroloop.EventLoopPolicy)

    async def main():
        return type(asyncio.get_running_loop())

    assert ferroloop.run(main()) is ferroloop.Loop
    with asyncio.Runner(loop_factory=ferroloop.new_event_loop) as runner:
        assert runner.run(main()) is ferroloop.Loop
    assert asyncio.get_event_loop_policy() is old


@pytest.mark.parametrize("kwargs", [{"eager_start": True}, {"bogus": 1}])
def test_create_task_keywords_are_asyncios(loop, kwargs):
    # Keywords asyncio's create_task does not know raise its TypeError here;
    # 3.14's create_task passes them to the task factory, and ferroloop hands
    # every uncommon call to asyncio's own method, so it follows.
    async def coro():
        return 1

    c = coro()
    try:
        with pytest.raises(TypeError) as info:
            loop.create_task(c, **kwargs)
        assert (
            str(info.value) == f"BaseEventLoop.create_task() got an unexpected keyword argument {next(iter(kwargs))!r}"
        )
    finally:
        c.close()


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
    r = run_main(["--bogus", "prog.py"], tmp_path)
    assert r.returncode == 2 and "usage" in r.stderr and "--bogus" in r.stderr
    r = run_main(["--help"], tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("usage: python -m ferroloop")
    r = run_main(["--version"], tmp_path)
    assert (r.returncode, r.stdout) == (0, f"ferroloop {ferroloop.__version__}\n")


def python_and_ferroloop(args, tmp_path, **kw):
    """``python ARGS`` and ``python -m ferroloop ARGS``: (status, stdout, stderr) of each."""
    ref = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=tmp_path, timeout=60, **kw)
    got = run_main(args, tmp_path, **kw)

    def same_addresses(text: str) -> str:
        return re.sub(r"0x[0-9a-f]+", "0x...", text)

    return tuple((r.returncode, same_addresses(r.stdout), same_addresses(r.stderr)) for r in (ref, got))


SCRIPT_INFO = textwrap.dedent(
    """
    import sys
    print(repr(__file__), sys.argv, repr(sys.path[0]), __name__, __package__, __spec__, __cached__)
    print(type(__loader__).__name__, sys.modules["__main__"].__dict__ is globals())
    def fail():
        raise ValueError("boom")
    if sys.argv[1:] == ["fail"]:
        fail()
    """
)


@pytest.mark.parametrize("args", [["prog.py", "--help", "-m", "x"], ["prog.py", "fail"], ["./prog.py"]])
def test_python_m_ferroloop_runs_a_script_as_python_does(tmp_path, args):
    (tmp_path / "prog.py").write_text(SCRIPT_INFO)
    ref, got = python_and_ferroloop(args, tmp_path)
    assert got == ref


@pytest.mark.parametrize(
    "args",
    [
        ["missing.py"],
        ["sub/missing.py", "x"],
        ["emptydir"],
        ["-c", "import sys; print(sys.argv, repr(sys.path[0]), __name__); raise SystemExit(4)", "a", "-b"],
        ["-c", "1/0"],
        ["-c", "def f(:"],
        ["-m", "no_such_module_here"],
        ["-m", "json.tool", "--help"],
    ],
)
def test_python_m_ferroloop_errors_and_modes_as_python(tmp_path, args):
    (tmp_path / "emptydir").mkdir()
    ref, got = python_and_ferroloop(args, tmp_path)
    assert got == ref


def test_python_m_ferroloop_directory_and_zip(tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "__main__.py").write_text(SCRIPT_INFO)
    with zipfile.ZipFile(tmp_path / "app.zip", "w") as z:
        z.writestr("__main__.py", SCRIPT_INFO)
    for args in (["app", "x"], ["app.zip", "y"]):
        ref, got = python_and_ferroloop(args, tmp_path)
        # python itself runs these through runpy: its traceback frames are the only difference.
        assert got[:2] == ref[:2], args


@pytest.mark.parametrize(
    ("interpreter_args", "env"),
    [([], {}), (["-X", "dev"], {}), ([], {"PYTHONASYNCIODEBUG": "1"})],
)
def test_python_m_ferroloop_keeps_asyncio_debug_switches(tmp_path, interpreter_args, env):
    (tmp_path / "prog.py").write_text(
        "import asyncio\n"
        "async def main():\n"
        "    loop = asyncio.get_running_loop()\n"
        "    print(type(loop).__name__, loop.get_debug())\n"
        "asyncio.run(main())\n"
    )
    full_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE")}
    full_env.update(env)
    ref = subprocess.run(
        [sys.executable, *interpreter_args, "prog.py"], capture_output=True, text=True, cwd=tmp_path, env=full_env
    )
    got = subprocess.run(
        [sys.executable, *interpreter_args, "-m", "ferroloop", "prog.py"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=full_env,
    )
    debug = bool(interpreter_args or env)
    assert ref.stdout == f"_UnixSelectorEventLoop {debug}\n", ref.stderr
    assert got.stdout == f"Loop {debug}\n", got.stderr
