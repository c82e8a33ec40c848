"""A read-only ``selectors`` view of the native reactor, as ``loop._selector``.

asyncio's transports only read the selector (``_test_selector_event`` calls
``get_key`` to describe a transport in its repr); every registration goes
through the loop's native ``_add_reader``/``_add_writer``. ``close()`` releases
the native reactor, which is what ``BaseSelectorEventLoop.close`` expects.
"""

from __future__ import annotations

import selectors
import weakref
from collections.abc import Iterator, Mapping
from typing import Any


class _KeyMap(Mapping[int, selectors.SelectorKey]):
    def __init__(self, view: NativeSelectorView) -> None:
        self._view = view

    def __len__(self) -> int:
        return len(self._view._loop_fds())

    def __iter__(self) -> Iterator[int]:
        return iter(self._view._loop_fds())

    def __getitem__(self, fileobj: Any) -> selectors.SelectorKey:
        return self._view.get_key(fileobj)


class NativeSelectorView:
    """The part of ``selectors.BaseSelector`` that asyncio reads."""

    def __init__(self, loop: Any) -> None:
        self._loop = weakref.ref(loop)

    def _native(self) -> Any:
        loop = self._loop()
        if loop is None:
            raise RuntimeError("Selector is closed")
        return loop

    def _loop_fds(self) -> list[int]:
        loop = self._loop()
        return [] if loop is None else loop._selector_fds()

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        found = self._native()._selector_key(fileobj)
        if found is None:
            raise KeyError(f"{fileobj!r} is not registered")
        return selectors.SelectorKey(*found)

    def get_map(self) -> Mapping[int, selectors.SelectorKey]:
        return _KeyMap(self)

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        raise NotImplementedError("register fds through loop.add_reader()/add_writer()")

    modify = register

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        raise NotImplementedError("unregister fds through loop.remove_reader()/remove_writer()")

    def select(self, timeout: float | None = None) -> list[Any]:
        raise NotImplementedError("the native loop polls its own reactor")

    def close(self) -> None:
        loop = self._loop()
        if loop is not None:
            loop._close_native()
