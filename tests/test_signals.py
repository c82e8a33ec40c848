"""Signals: add/remove_signal_handler, Ctrl-C during a blocking poll. Each test runs in a child interpreter."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from conftest import check_ran_on_ferroloop, child_argv, run_child


def test_add_signal_handler_delivers(launch):
    r = run_child(
        """
        import os, signal
        loop = new_loop()
        got = []
        loop.add_signal_handler(signal.SIGUSR1, lambda *a: (got.append(a), loop.stop()), "arg")
        loop.call_later(0.05, os.kill, os.getpid(), signal.SIGUSR1)
        loop.call_later(5, loop.stop)
        loop.run_forever()
        print(got)
        print(loop.remove_signal_handler(signal.SIGUSR1), loop.remove_signal_handler(signal.SIGUSR1))
        loop.close()
        """,
        launch,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["[('arg',)]", "True", "False"]


def test_signal_handler_errors(launch):
    r = run_child(
        """
        import signal, threading
        loop = new_loop()
        out = []
        for sig in (0, signal.NSIG, 1000):
            try:
                loop.add_signal_handler(sig, print)
            except (ValueError, RuntimeError) as e:
                out.append((type(e).__name__, str(e)))
        async def coro():
            pass
        try:
            loop.add_signal_handler(signal.SIGUSR1, coro)
        except TypeError as e:
            out.append(("TypeError", str(e)))
        try:
            loop.add_signal_handler(signal.SIGKILL, print)
        except RuntimeError as e:
            out.append(("RuntimeError", str(e)))
        def other():
            try:
                loop.add_signal_handler(signal.SIGUSR2, print)
            except RuntimeError as e:
                out.append(("thread", str(e)))
        t = threading.Thread(target=other); t.start(); t.join()
        loop.close()
        try:
            loop.add_signal_handler(signal.SIGUSR1, print)
        except RuntimeError as e:
            out.append(("closed", str(e)))
        for o in out:
            print(o)
        """,
        launch,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "('ValueError', 'invalid signal number 0')"
    assert any("coroutines cannot be used with add_signal_handler()" in ln for ln in lines)
    assert any(ln.startswith("('RuntimeError', 'sig 9 cannot be caught')") for ln in lines)
    assert any(ln.startswith("('thread',") and "main thread" in ln for ln in lines)
    assert lines[-1] == "('closed', 'Event loop is closed')"


def test_signal_handler_output_equal_on_both_loops():
    code = """
        import signal
        loop = new_loop()
        out = []
        for sig in (0, signal.NSIG, 1000, signal.SIGKILL):
            try:
                loop.add_signal_handler(sig, print)
            except Exception as e:
                out.append(repr(e))
        print(out)
        loop.close()
    """
    a = run_child(code, "asyncio")
    f = run_child(code, "ferroloop")
    assert a.returncode == f.returncode == 0
    assert a.stdout == f.stdout


CTRL_C_PROGRAM = """
import os, signal, sys, time

MODE = {mode!r}

async def main():
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        print("main task cancelled", flush=True)
        raise

print("ready", flush=True)
t0 = time.monotonic()
if MODE == "runner":
    try:
        run_main(main())
    except KeyboardInterrupt:
        print("KeyboardInterrupt after %.1f" % (time.monotonic() - t0), flush=True)
else:
    loop = new_loop()
    loop.call_later(30, loop.stop)
    try:
        loop.run_forever()
    except KeyboardInterrupt:
        print("KeyboardInterrupt after %.1f" % (time.monotonic() - t0), flush=True)
    loop.close()
"""


@pytest.mark.parametrize("mode", ["run_forever", "runner"])
def test_ctrl_c_during_blocking_poll(launch, mode, tmp_path):
    argv = child_argv(CTRL_C_PROGRAM.format(mode=mode), launch, str(tmp_path))
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
    check_ran_on_ferroloop(launch, p.returncode, err)
    lines = out.splitlines()
    if mode == "runner":
        assert lines[0] == "main task cancelled", err
    assert lines[-1].startswith("KeyboardInterrupt after 0."), (out, err)


def test_sigint_handler_restored_after_runner(launch):
    r = run_child(
        """
        import signal
        async def main():
            return signal.getsignal(signal.SIGINT)
        with asyncio.Runner(loop_factory=new_loop) as runner:
            during = runner.run(main())
        print(during is signal.default_int_handler, signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        """,
        launch,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "True"]
