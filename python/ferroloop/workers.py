"""gunicorn workers that serve on ferroloop.

gunicorn scales an asyncio service across cores the usual way: one arbiter
process, N forked workers accepting on the same listening socket. Each worker
class here runs its server on a loop made by ``ferroloop.new_event_loop``;
neither installs an event loop policy, so nothing else in the worker process
changes::

    gunicorn -w 4 -k ferroloop.workers.UvicornWorker app:app      # ASGI, through uvicorn
    gunicorn -w 4 -k ferroloop.workers.AiohttpWorker mod:app      # aiohttp.web

``UvicornWorker`` is built on the ``uvicorn-worker`` package (or, when that is
not installed, on uvicorn's deprecated ``uvicorn.workers``) and needs
uvicorn >= 0.36, which takes a loop factory as ``"module:callable"``.
``AiohttpWorker`` is built on aiohttp's ``GunicornWebWorker``.

Everything gunicorn asks of a worker (the heartbeat, ``max_requests``, graceful
shutdown on SIGTERM, what SIGQUIT does, SIGUSR1 log reopening) is the base
classes' own code, unchanged, and behaves as it does on asyncio's loop.

The classes are made on first access, so importing this module never needs
gunicorn, uvicorn or aiohttp; naming a worker whose packages are missing
raises ``ImportError`` saying what to install.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable
from typing import Any

# The workers (UvicornWorker, AiohttpWorker) are module attributes made on
# first access; they stay out of __all__ so that a star import never needs
# their packages.
__all__ = ["LOOP_FACTORY"]

#: The loop factory as uvicorn (``--loop``, ``Config(loop=...)``) takes it.
LOOP_FACTORY = "ferroloop:new_event_loop"


def _finish(cls: type, doc: str) -> type:
    cls.__module__ = __name__
    cls.__qualname__ = cls.__name__
    cls.__doc__ = doc
    return cls


def _uvicorn_base() -> type:
    try:
        import gunicorn  # type: ignore[import-untyped]  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise ImportError(
            "ferroloop.workers.UvicornWorker needs gunicorn and uvicorn: pip install gunicorn uvicorn-worker"
        ) from exc
    if not hasattr(uvicorn.Config, "get_loop_factory"):
        raise ImportError(
            "ferroloop.workers.UvicornWorker needs uvicorn >= 0.36 (a loop factory as 'module:callable'); "
            f"uvicorn {uvicorn.__version__} is installed"
        )
    try:
        from uvicorn_worker import UvicornWorker as base  # type: ignore[import-untyped]
    except ImportError:
        try:
            with warnings.catch_warnings():
                # uvicorn.workers warns that uvicorn-worker replaces it; it is our fallback.
                warnings.simplefilter("ignore", DeprecationWarning)
                from uvicorn.workers import UvicornWorker as base
        except ImportError as exc:
            raise ImportError(
                "ferroloop.workers.UvicornWorker needs the uvicorn-worker package: pip install uvicorn-worker"
            ) from exc
    if not hasattr(base, "CONFIG_KWARGS") or not hasattr(base, "run"):  # pragma: no cover
        raise ImportError(f"{base.__module__}.UvicornWorker is not the worker ferroloop.workers knows")
    result: type = base
    return result


def _make_uvicorn_worker() -> type:
    base: Any = _uvicorn_base()

    class UvicornWorker(base):
        # uvicorn resolves the string to ferroloop.new_event_loop and runs the
        # server with asyncio.run(..., loop_factory=...) (asyncio.Runner on 3.11).
        CONFIG_KWARGS: dict[str, Any] = {**base.CONFIG_KWARGS, "loop": LOOP_FACTORY}

    return _finish(
        UvicornWorker,
        "uvicorn's gunicorn worker with ferroloop's loop: ``gunicorn -k ferroloop.workers.UvicornWorker app:app``.\n\n"
        "Subclass it and extend ``CONFIG_KWARGS`` to pass other ``uvicorn.Config`` options, e.g.\n"
        '``CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "http": "h11"}``.',
    )


def _make_aiohttp_worker() -> type:
    try:
        from aiohttp.worker import GunicornWebWorker
        from gunicorn.workers.base import Worker  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ImportError(
            "ferroloop.workers.AiohttpWorker needs gunicorn and aiohttp: pip install gunicorn aiohttp"
        ) from exc
    from . import new_event_loop

    base: Any = GunicornWebWorker

    class AiohttpWorker(base):
        def init_process(self) -> None:
            # GunicornWebWorker.init_process makes its loop with
            # asyncio.new_event_loop() (the policy's); this one makes a
            # ferroloop loop and sets it as the worker's current loop, which
            # run() and init_signals() then use as self.loop, and goes on to
            # gunicorn's Worker.init_process (signals, app, run()), which
            # GunicornWebWorker.init_process ends with too.
            self.loop = new_event_loop()
            asyncio.set_event_loop(self.loop)
            Worker.init_process(self)

    return _finish(
        AiohttpWorker,
        "aiohttp's gunicorn worker with ferroloop's loop: ``gunicorn -k ferroloop.workers.AiohttpWorker mod:app``.",
    )


_BUILDERS: dict[str, Callable[[], type]] = {
    "UvicornWorker": _make_uvicorn_worker,
    "AiohttpWorker": _make_aiohttp_worker,
}


def __getattr__(name: str) -> type:
    builder = _BUILDERS.get(name)
    if builder is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    cls = builder()
    globals()[name] = cls
    return cls


def __dir__() -> list[str]:
    return sorted({*globals(), *_BUILDERS})
