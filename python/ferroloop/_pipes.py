"""The read pipe transport's ``_read_ready`` as a Python method.

asyncio's ``_UnixReadPipeTransport.__init__`` schedules
``self._add_reader(self._fileno, self._read_ready)``; when that registration
fails (epoll refuses ``/dev/null``) the exception handler's message shows the
handle, whose arguments include ``<bound method
_UnixReadPipeTransport._read_ready of ...>``. A Python function on the native
class gives the same repr; it calls the native method. The native reader
never goes through it: ``_add_reader`` recognises this method of its own
transport and starts reading natively (``src/transports/pipes.rs``).
"""

from __future__ import annotations

from typing import Any

from . import _ferroloop

_READ_PIPE = _ferroloop._UnixReadPipeTransport
_native_read_ready = _READ_PIPE.__dict__["_read_ready"]


def _read_ready(self: Any) -> None:
    _native_read_ready(self)


_read_ready.__qualname__ = "_UnixReadPipeTransport._read_ready"
_READ_PIPE._read_ready = _read_ready  # type: ignore[method-assign]
