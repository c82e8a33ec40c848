"""The transport fuzzer's subprocess harness: one script against
``loop.subprocess_exec()`` (a child, its pipe transports and a recording
``SubprocessProtocol``), run on one loop and recorded as plain data.

The child is ``cat`` (echoes its stdin), ``sh`` writing to stderr and then
``cat``, ``sh`` exiting with status 3 at once, or ``sleep``; each standard
stream is a pipe, ``DEVNULL``, or (stderr) ``STDOUT``. Steps write to the
child's stdin (every data type), close it or send EOF, pause and resume
reading its stdout or stderr, send signals (valid, 0, unknown), ask for the
pid and pipe transports, wait for the exit and its return code, close the
transport, and run the loop.

A child's timing is its own, so the script is built to leave nothing to a
race: a signal goes only to a child known to be running (and the script then
waits for its exit; ``Popen.send_signal``'s ``poll()`` would otherwise reap
a child that has exited and is not yet reaped, on either loop), ``close()``
only once the exit is known or to ``sleep``, and the record keeps each
pipe's events in order with their data merged, the return code once the exit
was seen, and whether ``connection_lost`` came last: not how the pipes'
events interleave with each other or with the exit, nor, once a signal was
sent, what went through the pipes before it. See
test_fuzz_transports.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shlex
import signal
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from fuzz_transport import Recording, exc, make_data, value

PROGRAMS = {
    "cat": ["cat"],
    "stderr-cat": ["sh", "-c", "echo to-stderr >&2; exec cat"],
    "exit": ["sh", "-c", "exit 3"],
    "sleep": ["sleep", "30"],
}
STREAMS = {"pipe": subprocess.PIPE, "devnull": subprocess.DEVNULL, "stdout": subprocess.STDOUT}


# Keyword arguments the spawn may add (each a name and a token for its
# value): Popen's own (passed through as asyncio passes them) and those
# asyncio refuses with its ValueError.
OPTIONS: dict[str, Any] = {
    "pass_fds": "an extra pipe",
    "preexec_fn": "a no-op",
    "start_new_session": True,
    "process_group": 0,
    "cwd": "/",
    "env": {"FUZZ": "1"},
    "close_fds": False,
    "restore_signals": False,
    "bufsize": 1,
    "text": True,
    "universal_newlines": True,
    "encoding": "utf-8",
    "errors": "strict",
    "shell": True,
}


@dataclass(frozen=True)
class SubprocessExample:
    program: str
    stdin: str
    stdout: str
    stderr: str
    steps: tuple[tuple[Any, ...], ...]
    # "exec" (subprocess_exec), "shell" (subprocess_shell with the command
    # line), or "shell-list" (subprocess_shell given the argument list).
    spawn: str = "exec"
    options: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return (
            f"SubprocessExample(program={self.program!r}, stdin={self.stdin!r}, stdout={self.stdout!r}, "
            f"stderr={self.stderr!r}, spawn={self.spawn!r}, options={self.options!r},\n"
            f"  steps={list(self.steps)!r})"
        )


class Recorder(asyncio.SubprocessProtocol):
    def __init__(self, run: SubprocessRun) -> None:
        self.run = run

    def connection_made(self, transport: Any) -> None:
        self.run.transport = transport
        self.run.event("connection_made")

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        pipe = self.run.pipes.setdefault(fd, [])
        if pipe and pipe[-1][0] == "data":
            pipe[-1] = ("data", pipe[-1][1] + data)
        else:
            pipe.append(("data", data))

    def pipe_connection_lost(self, fd: int, e: BaseException | None) -> None:
        self.run.pipes.setdefault(fd, []).append(("lost", None if e is None else exc(e)))

    def process_exited(self) -> None:
        self.run.exited = True
        self.run.event("process_exited")

    def connection_lost(self, e: BaseException | None) -> None:
        self.run.event("connection_lost", None if e is None else exc(e))


@dataclass
class SubprocessRun:
    impl: str
    example: SubprocessExample
    transport: Any = None
    events: list[Any] = field(default_factory=list)
    pipes: dict[int, list[Any]] = field(default_factory=dict)
    exited: bool = False
    exit_known: bool = False  # the script waited for the exit (a point independent of timing)
    stdin_open: bool = True  # whether cat may still be waiting for input
    signalled: bool = False
    errors: list[Any] = field(default_factory=list)
    logs: list[Any] = field(default_factory=list)
    extra_read: int | None = None  # the read end of a pipe passed to the child (pass_fds)

    def event(self, *e: Any) -> None:
        self.events.append(e)

    def running_for_sure(self) -> bool:
        """The child cannot have exited yet (nothing made it leave)."""
        if self.exit_known or self.signalled:
            return False
        if self.example.program == "sleep":
            return True
        return self.example.program != "exit" and self.stdin_open and self.example.stdin == "pipe"

    async def until(self, what: Any, seconds: float = 5.0) -> bool:
        deadline = time.monotonic() + seconds
        while not what():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.001)
        return True

    async def step(self, s: tuple[Any, ...]) -> Any:
        name, *args = s
        t = self.transport
        if name == "!run":
            for _ in range(args[0]):
                await asyncio.sleep(0)
            return None
        if name in ("kill", "terminate", "send_signal"):
            if not self.running_for_sure():
                return "skipped: may have exited"
            try:
                getattr(t, name)(*args)
            except Exception as e:
                return exc(e)
            if name == "send_signal" and args[0] in (0, signal.SIGCHLD):
                return "not a killing signal"
            self.signalled = True
            self.exit_known = await self.until(lambda: self.exited)
            return ("exited", self.exit_known, t.get_returncode())
        if name == "close":
            if not (self.exit_known or self.example.program == "sleep"):
                return "skipped: may be exiting"
            self.signalled = True
            t.close()
            self.exit_known = await self.until(lambda: self.exited)
            return ("closed", self.exit_known, t.get_returncode())
        if name == "wait_exit":
            if self.running_for_sure():
                return "running"
            if not await self.until(lambda: self.exited):
                return "still running"
            self.exit_known = True
            return ("exited", t.get_returncode())
        if name == "get_pid":
            return type(t.get_pid()).__name__
        if name == "is_closing":
            return t.is_closing()
        if name == "get_pipe_transport":
            try:
                return value(t.get_pipe_transport(*args))
            except Exception as e:
                return exc(e)
        # The pipe transports' methods.
        fd = 0 if name in ("write", "writelines", "write_eof", "close_stdin") else args[0]
        pipe = t.get_pipe_transport(fd)
        if pipe is None:
            return "no pipe"
        if fd == 0 and self.stdin_open and not (self.exit_known or self.running_for_sure()):
            # The child may be leaving: whether the pipe's reader is gone yet is a race.
            return "skipped: may be exiting"
        try:
            if name == "write":
                return value(pipe.write(make_data(*args[0])))
            if name == "writelines":
                return value(pipe.writelines([make_data(*a) for a in args[0]]))
            if name in ("write_eof", "close_stdin"):
                self.stdin_open = False
                return value(pipe.write_eof() if name == "write_eof" else pipe.close())
            return value(getattr(pipe, name)())  # pause_reading, resume_reading
        except Exception as e:
            return exc(e)

    async def main(self) -> list[Any]:
        loop = asyncio.get_running_loop()
        ex = self.example
        kwargs: dict[str, Any] = {
            "stdin": STREAMS[ex.stdin],
            "stdout": STREAMS[ex.stdout],
            "stderr": STREAMS[ex.stderr],
        }
        extra_pipe: tuple[int, int] | None = None
        for name in ex.options:
            if name == "pass_fds":
                extra_pipe = os.pipe()
                kwargs[name] = (extra_pipe[1],)
            elif name == "preexec_fn":
                kwargs[name] = lambda: None
            else:
                kwargs[name] = OPTIONS[name]
        argv = PROGRAMS[ex.program]
        try:
            if ex.spawn == "exec":
                await loop.subprocess_exec(lambda: Recorder(self), *argv, **kwargs)
            else:
                # `exec`: the shell becomes the program, so that a signal to
                # the child reaches the program (a shell that forked it would
                # leave it holding the pipes) whenever it is sent.
                cmd = "exec " + shlex.join(argv) if ex.spawn == "shell" else argv
                await loop.subprocess_shell(lambda: Recorder(self), cmd, **kwargs)
        except Exception as e:
            return [exc(e)]
        finally:
            if extra_pipe is not None:
                os.close(extra_pipe[1])
                self.extra_read = extra_pipe[0]
        results = [await self.step(s) for s in ex.steps]
        # The end: reading resumed, stdin closed (cat then exits), a child
        # still running killed; then everything reported.
        t = self.transport
        for fd in (1, 2):
            pipe = t.get_pipe_transport(fd)
            if pipe is not None and not pipe.is_closing():
                pipe.resume_reading()
        stdin = t.get_pipe_transport(0)
        if stdin is not None:
            stdin.close()
            self.stdin_open = False
        if ex.program == "sleep" and not self.exited:
            t.kill()
        exited = await self.until(lambda: self.exited)
        lost = await self.until(lambda: self.events[-1][0] == "connection_lost")
        results.append(("end", exited, lost, t.get_returncode()))
        t.close()
        if self.extra_read is not None:
            # The child held the passed descriptor until it exited: EOF now.
            results.append(("extra pipe", os.read(self.extra_read, 100)))
            os.close(self.extra_read)
            self.extra_read = None
        return results

    def record(self) -> dict[str, Any]:
        # asyncio's run made the policy's child watcher, after which ferroloop
        # would use it too: hide it from ferroloop's run, whose own reaping
        # (a pidfd per child, python/ferroloop/_subprocess.py) is under test.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            policy = asyncio.get_event_loop_policy()
        watcher = getattr(policy, "_watcher", None)
        if self.impl == "ferroloop" and watcher is not None:
            policy._watcher = None  # type: ignore[attr-defined]
        try:
            return self._record()
        finally:
            if watcher is not None:
                policy._watcher = watcher  # type: ignore[attr-defined]

    def _record(self) -> dict[str, Any]:
        def cleanup() -> None:
            self.transport = None

        with Recording(self.impl, self, cleanup) as r:
            r.rec["steps"] = r.loop.run_until_complete(asyncio.wait_for(self.main(), 20))
        rec = r.rec
        rec["events"] = self.events
        if self.signalled:
            # What the child read and wrote before the signal took it is its
            # own timing: only how its output pipes ended is compared.
            rec["pipes"] = {
                fd: [e for e in events if e[0] == "lost"] for fd, events in sorted(self.pipes.items()) if fd
            }
        else:
            rec["pipes"] = {
                fd: [("data", len(e[1]), hashlib.sha1(e[1]).hexdigest()[:12]) if e[0] == "data" else e for e in events]
                for fd, events in sorted(self.pipes.items())
            }
        rec["errors"] = self.errors
        rec["logs"] = self.logs
        return rec


def run_subprocess(impl: str, example: SubprocessExample) -> dict[str, Any]:
    return SubprocessRun(impl, example).record()
