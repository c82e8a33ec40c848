"""Subprocesses, started each way a user reaches ferroloop.

Every program runs in a child interpreter on asyncio and then once per
``launch`` form (``new_event_loop``, ``ferroloop.install()``,
``python -m ferroloop``); what it prints and its exit status must be
asyncio's. CPython's own test_subprocess also runs against ferroloop through
``install()`` in the conformance run (docs/conformance.md).
"""

from __future__ import annotations

from functools import cache

import pytest
from conftest import run_child

PROGRAMS = {
    "communicate": """
        import sys
        from asyncio.subprocess import PIPE
        async def main():
            p = await asyncio.create_subprocess_exec(
                sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)",
                stdout=PIPE, stderr=PIPE)
            print(await p.communicate(), p.returncode)
            p = await asyncio.create_subprocess_exec("echo", "hi", stdout=PIPE)
            print(await p.communicate(), p.returncode)
        run_main(main())
    """,
    "stdin_to_stdout_intact": """
        import hashlib, os
        from asyncio.subprocess import PIPE
        async def main():
            data = os.urandom(1 << 20) * 3
            p = await asyncio.create_subprocess_exec("cat", stdin=PIPE, stdout=PIPE)
            out, _ = await p.communicate(data)
            print(len(out), out == data, p.returncode)
            # write/drain/write_eof by hand, reading concurrently
            p = await asyncio.create_subprocess_exec("cat", stdin=PIPE, stdout=PIPE)
            async def feed():
                for i in range(0, len(data), 65536):
                    p.stdin.write(data[i:i + 65536])
                    await p.stdin.drain()
                p.stdin.close()
                await p.stdin.wait_closed()
            got, _ = await asyncio.gather(p.stdout.read(), feed())
            print(hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest(), await p.wait())
        run_main(main())
    """,
    "return_codes_and_signals": """
        import signal, sys
        async def main():
            for code in (0, 1, 7, 255):
                p = await asyncio.create_subprocess_exec(sys.executable, "-c", f"raise SystemExit({code})")
                print("exit", await p.wait())
            for how in ("kill", "terminate", "send_signal"):
                p = await asyncio.create_subprocess_exec("sleep", "30")
                if how == "send_signal":
                    p.send_signal(signal.SIGUSR1)
                else:
                    getattr(p, how)()
                print(how, await p.wait(), p.returncode)
            try:
                p.kill()
            except ProcessLookupError as e:
                print("kill after exit:", type(e).__name__)
            else:
                print("kill after exit: no error")
        run_main(main())
    """,
    "shell": """
        from asyncio.subprocess import PIPE, STDOUT
        async def main():
            p = await asyncio.create_subprocess_shell("echo a; echo b >&2; exit 5", stdout=PIPE, stderr=STDOUT)
            print(await p.communicate(), p.returncode)
            p = await asyncio.create_subprocess_shell("printf '%s' \\"$FOO\\"", stdout=PIPE, env={"FOO": "bar"})
            print(await p.communicate())
            try:
                await asyncio.create_subprocess_shell(["echo", "x"])
            except ValueError as e:
                print("ValueError", e)
        run_main(main())
    """,
    "many_concurrent_all_reaped": """
        import os, sys
        from asyncio.subprocess import PIPE
        async def one(i):
            p = await asyncio.create_subprocess_exec(sys.executable, "-c", f"print({i} * 2)", stdout=PIPE)
            out, _ = await p.communicate()
            return int(out), p.returncode
        async def main():
            res = await asyncio.gather(*(one(i) for i in range(24)))
            print(res == [(i * 2, 0) for i in range(24)])
        run_main(main())
        # Every child was reaped: none is left to wait for.
        try:
            print("left:", os.waitpid(-1, os.WNOHANG))
        except ChildProcessError:
            print("no child left")
    """,
    "protocol_callback_order": """
        import sys
        events = []
        class Proto(asyncio.SubprocessProtocol):
            def __init__(self, done):
                self.done = done
            def connection_made(self, transport):
                events.append("connection_made")
            def pipe_data_received(self, fd, data):
                events.append(("data", fd, data))
            def pipe_connection_lost(self, fd, exc):
                events.append(("pipe_lost", fd, exc))
            def process_exited(self):
                events.append("process_exited")
            def connection_lost(self, exc):
                events.append(("connection_lost", exc))
                self.done.set_result(None)
        async def main():
            loop = asyncio.get_running_loop()
            done = loop.create_future()
            t, p = await loop.subprocess_exec(
                lambda: Proto(done), sys.executable, "-c",
                "import sys, time; sys.stdout.write('o'); sys.stdout.flush(); time.sleep(0.05); "
                "sys.stderr.write('e'); sys.stderr.flush(); sys.exit(4)",
                stdin=None)
            print(t.get_pid() > 0, t.get_pipe_transport(0), type(t.get_pipe_transport(1)).__name__ != "NoneType")
            await done
            print(t.get_returncode())
            t.close()
            # pipe_connection_lost of stdout and stderr come in either order
            # (whichever pipe closes first); the rest is fixed.
            pipes = sorted(e for e in events if isinstance(e, tuple) and e[0] == "pipe_lost")
            rest = [e for e in events if not (isinstance(e, tuple) and e[0] == "pipe_lost")]
            print(rest)
            print(pipes)
            print(events.index("process_exited") < events.index(("connection_lost", None)))
        run_main(main())
    """,
    "timeout_then_kill": """
        async def main():
            p = await asyncio.create_subprocess_exec("sleep", "30")
            try:
                await asyncio.wait_for(p.wait(), 0.2)
            except TimeoutError:
                print("timed out", p.returncode)
            p.kill()
            print(await p.wait())
        run_main(main())
    """,
    "spawn_errors": """
        import os
        async def main():
            for args in (("/nonexistent/program",), ("/etc/passwd",), (os.getcwd(),)):
                try:
                    await asyncio.create_subprocess_exec(*args)
                except OSError as e:
                    print(type(e).__name__, e.errno, e.strerror)
            for bad in ({"bufsize": 1}, {"universal_newlines": True}, {"text": True}, {"shell": True}):
                try:
                    await asyncio.create_subprocess_exec("true", **bad)
                except ValueError as e:
                    print("ValueError", e)
        run_main(main())
    """,
    "cwd_env_pass_fds": """
        import os, sys, tempfile
        from asyncio.subprocess import PIPE
        async def main():
            d = os.path.realpath(tempfile.mkdtemp())
            r, w = os.pipe()
            p = await asyncio.create_subprocess_exec(
                sys.executable, "-c",
                f"import os; os.write({w}, b'via fd'); print(os.getcwd() == {d!r}, os.environ.get('X'))",
                stdout=PIPE, cwd=d, env={**os.environ, "X": "y"}, pass_fds=(w,))
            out, _ = await p.communicate()
            os.close(w)
            print(out.decode().strip(), os.read(r, 100))
            os.close(r)
            os.rmdir(d)
        run_main(main())
    """,
    "stream_lines": """
        import sys
        from asyncio.subprocess import PIPE
        async def main():
            p = await asyncio.create_subprocess_exec(
                sys.executable, "-u", "-c",
                "import time\\nfor i in range(5):\\n    print('line', i)\\n    time.sleep(0.01)",
                stdout=PIPE)
            lines = []
            async for line in p.stdout:
                lines.append(line)
            print(lines, await p.wait())
        run_main(main())
    """,
    "two_hundred_children_reaped": """
        import os, sys
        async def main():
            sem = asyncio.Semaphore(20)
            async def one(i):
                async with sem:
                    p = await asyncio.create_subprocess_exec(sys.executable, "-c", f"raise SystemExit({i % 5})")
                    return await p.wait()
            codes = await asyncio.gather(*(one(i) for i in range(200)))
            print(codes == [i % 5 for i in range(200)])
        run_main(main())
        try:
            os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            print("no child left")
    """,
    "chosen_child_watcher_is_used": """
        import sys, warnings
        from asyncio import unix_events
        warnings.simplefilter("ignore", DeprecationWarning)
        calls = []
        class Recording(unix_events.ThreadedChildWatcher):
            def add_child_handler(self, pid, callback, *args):
                calls.append(pid)
                super().add_child_handler(pid, callback, *args)
        asyncio.set_child_watcher(Recording())
        async def main():
            p = await asyncio.create_subprocess_exec(sys.executable, "-c", "raise SystemExit(4)")
            print(await p.wait(), calls == [p.pid])
        run_main(main())
    """,
}


@cache
def on_asyncio(name: str) -> tuple[int, str]:
    res = run_child(PROGRAMS[name], "asyncio", timeout=60)
    assert res.returncode == 0, res.stderr
    return res.returncode, res.stdout


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_subprocess_program_matches_asyncio(launch, name):
    ref = on_asyncio(name)
    assert ref[1].strip(), "the program printed nothing"
    if launch == "asyncio":
        return
    res = run_child(PROGRAMS[name], launch, timeout=60)
    assert (res.returncode, res.stdout) == ref, res.stderr


NO_THREAD_PER_CHILD = """
    import sys, threading
    async def main():
        most = 0
        async def one():
            nonlocal most
            p = await asyncio.create_subprocess_exec("sleep", "0.2")
            most = max(most, threading.active_count())
            return await p.wait()
        print(await asyncio.gather(*(one() for _ in range(20))), most)
    run_main(main())
"""


@pytest.mark.parametrize("launch_form", ["ferroloop", "ferroloop-install"])
def test_children_are_reaped_without_a_thread_each(launch_form):
    # asyncio 3.11's default watcher starts a thread per child; ferroloop
    # watches a pidfd per child on the loop (python/ferroloop/_subprocess.py).
    res = run_child(NO_THREAD_PER_CHILD, launch_form, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"{[0] * 20} 1"
