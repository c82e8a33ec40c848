"""asyncio's ``Handle._repr_info`` and ``TimerHandle._repr_info`` on the native
handle classes.

``Handle.__repr__`` is native (``_hooks.handle_repr``), but code outside
asyncio calls the private ``_repr_info()`` too (it is how subclasses and
debugging helpers extend a handle's repr). ``Handle``'s is asyncio's own
function: it reads only attributes the native handle has (``_cancelled``,
``_callback``, ``_args``, ``_loop``, ``_source_traceback``).
``TimerHandle``'s adds ``when=`` as asyncio's does; asyncio's own calls
``super()``, which needs an instance of asyncio's class.
"""

from __future__ import annotations

from asyncio import events
from typing import Any

from . import _ferroloop

_ferroloop.Handle._repr_info = events.Handle._repr_info  # type: ignore[attr-defined]


def _timer_repr_info(self: Any) -> list[str]:
    info: list[str] = events.Handle._repr_info(self)  # type: ignore[attr-defined]
    pos = 2 if self._cancelled else 1
    info.insert(pos, f"when={self._when}")
    return info


_timer_repr_info.__qualname__ = "TimerHandle._repr_info"
_ferroloop.TimerHandle._repr_info = _timer_repr_info  # type: ignore[attr-defined]
