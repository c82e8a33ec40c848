"""Child reaping for ``subprocess_exec``/``subprocess_shell`` without a thread per child.

asyncio's loop asks the policy's child watcher to report a child's exit. On
3.12 and 3.13 the default watcher is ``PidfdChildWatcher`` (a pidfd per child,
watched by the loop); on 3.11 it is ``ThreadedChildWatcher``, one thread per
child blocked in ``waitpid`` (about 100 µs of a 320 µs spawn on the
development machine, docs/performance.md). Python 3.14 drops the watchers and
uses pidfds directly.

ferroloop does what 3.12's ``PidfdChildWatcher`` does, step for step, on every
version, as long as nobody chose a watcher (``asyncio.set_child_watcher`` or a
watcher already made by ``get_child_watcher()``): then the policy's watcher is
used, exactly as asyncio does. The pidfd is watched with ``loop._add_reader``
(a native watcher); the exit reaches ``loop._child_watcher_callback`` as from
asyncio's watcher.
"""

from __future__ import annotations

import os
import warnings
from asyncio import events, unix_events
from asyncio.log import logger
from typing import Any

from . import _compat

_pidfd_works: bool | None = None


def _can_use_pidfd() -> bool:
    """``unix_events.can_use_pidfd()`` (3.12+), checked once."""
    global _pidfd_works
    if _pidfd_works is None:
        try:
            fd = os.pidfd_open(os.getpid())
        except (AttributeError, OSError):
            _pidfd_works = False
        else:
            os.close(fd)
            _pidfd_works = True
    return _pidfd_works


def applies() -> bool:
    """True when no child watcher was chosen or made and pidfds work here."""
    if not _can_use_pidfd():
        return False
    if _compat.PY314:
        # get_event_loop_policy() is deprecated from 3.14 on (it never warns
        # before, where a catch_warnings() per spawn cost ~260 bytecodes).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            policy = events.get_event_loop_policy()
    else:
        policy = events.get_event_loop_policy()
    # A policy without watchers (3.14+) or one whose watcher was never made.
    return getattr(policy, "_watcher", None) is None


def add_child_handler(loop: Any, pid: int, callback: Any, *args: Any) -> None:
    """``PidfdChildWatcher.add_child_handler`` (3.12), for ``loop``."""
    pidfd = os.pidfd_open(pid)
    loop._add_reader(pidfd, _do_wait, loop, pid, pidfd, callback, args)


def _do_wait(loop: Any, pid: int, pidfd: int, callback: Any, args: tuple[Any, ...]) -> None:
    """``PidfdChildWatcher._do_wait`` (3.12)."""
    loop._remove_reader(pidfd)
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        # The child process is already reaped
        # (may happen if waitpid() is called elsewhere).
        returncode = 255
        logger.warning("child process pid %d exit status already read:  will report returncode 255", pid)
    else:
        returncode = unix_events.waitstatus_to_exitcode(status)  # type: ignore[attr-defined]
    os.close(pidfd)
    callback(pid, returncode, *args)
