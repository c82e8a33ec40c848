"""ferroloop: Python's asyncio event loop, rebuilt in Rust.

Three ways to use it::

    ferroloop.run(main())                                        # like asyncio.run
    asyncio.run(main(), loop_factory=ferroloop.new_event_loop)   # Python 3.12+
    ferroloop.install(); asyncio.run(main())                     # via the policy
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Coroutine
from typing import Any, TypeVar

from . import _compat, _ferroloop, _hooks
from ._blocking import BlockingDetector, BlockingReport, detect_blocking
from ._loop import Loop
from ._stats import LoopLoad, LoopStats, SlowestCallback, TimerLag, stats

__all__ = [
    "BlockingDetector",
    "BlockingReport",
    "EventLoopPolicy",
    "Loop",
    "LoopLoad",
    "LoopStats",
    "SlowestCallback",
    "TimerLag",
    "detect_blocking",
    "install",
    "new_event_loop",
    "run",
    "stats",
]
__version__: str = _ferroloop.__version__

_ferroloop._set_hooks(
    _hooks.handle_repr, _hooks.report_error, _hooks.slow_callback, _hooks.extract_stack, _hooks.fileobj_to_fd
)

_T = TypeVar("_T")


def new_event_loop() -> Loop:
    """Return a new ferroloop event loop."""
    return Loop()


class EventLoopPolicy(_compat.DefaultEventLoopPolicy):
    """An asyncio event loop policy whose loops are ferroloop loops."""

    def _loop_factory(self) -> Loop:
        return new_event_loop()


def install() -> None:
    """Make ferroloop the loop that ``asyncio.run`` and ``asyncio.new_event_loop`` create.

    This sets an event loop policy; asyncio deprecates policies from Python
    3.14 on, and so does this function there: use ``ferroloop.run(main())`` or
    ``asyncio.run(main(), loop_factory=ferroloop.new_event_loop)``.
    """
    if _compat.PY314:
        warnings.warn(
            "ferroloop.install() is deprecated from Python 3.14 on, as asyncio's event loop policies are: "
            "use ferroloop.run(main()) or asyncio.run(main(), loop_factory=ferroloop.new_event_loop)",
            DeprecationWarning,
            stacklevel=2,
        )
    with warnings.catch_warnings():
        # Policies are deprecated from Python 3.14 on; prefer loop_factory there.
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(EventLoopPolicy())


def run(main: Coroutine[Any, Any, _T], *, debug: bool | None = None) -> _T:
    """Run a coroutine on a new ferroloop loop, as ``asyncio.run`` does."""
    if asyncio.events._get_running_loop() is not None:
        raise RuntimeError("ferroloop.run() cannot be called from a running event loop")
    with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
        return runner.run(main)
