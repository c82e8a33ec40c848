"""``python -m ferroloop [options] (script.py | -m module | -c code) [args]``.

Runs a program with ferroloop installed as asyncio's loop, as ``python``
would run it: the same ``sys.argv``, ``sys.path[0]``, ``__main__``, exit
status, error messages for a missing script or module, and a traceback that
starts in the program. Interpreter options (``-X dev``, ``-W``, ``-u``...) go
before ``-m ferroloop``: ``python -X dev -m ferroloop app.py`` runs asyncio in
debug mode, as ``PYTHONASYNCIODEBUG=1`` does.
"""

from __future__ import annotations

import argparse
import atexit
import builtins
import importlib.machinery
import importlib.util
import io
import linecache
import os
import runpy
import signal
import sys
import types
import zipfile
from collections.abc import Callable

PROG = "python -m ferroloop"


def _parser() -> argparse.ArgumentParser:
    import ferroloop

    p = argparse.ArgumentParser(
        prog=PROG,
        description="Run a Python program with ferroloop as asyncio's event loop.",
        usage=f"{PROG} [-h] [--version] [--stats] [--detect-blocking SECONDS] (script.py | -m module | -c code) "
        "[args ...]",
        epilog="Everything after the program is passed to it in sys.argv. Interpreter options such as "
        "-X dev go before -m ferroloop.",
    )
    p.add_argument("--version", action="version", version=f"ferroloop {ferroloop.__version__}")
    p.add_argument(
        "--stats",
        action="store_true",
        help="print the event loops' statistics when the program exits (and on SIGUSR1 while it runs)",
    )
    p.add_argument(
        "--detect-blocking",
        metavar="SECONDS",
        type=_positive_seconds,
        help="warn (on the 'ferroloop' logger) about any callback that blocks the loop for longer than SECONDS, "
        "with the blocking line, while it blocks",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("-m", dest="module", metavar="module", help="run a library module as a script")
    what.add_argument("-c", dest="code", metavar="code", help="run a program passed as a string")
    what.add_argument("script", nargs="?", help="the program's file (or a directory or zip with __main__.py)")
    return p


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value


# Our options that take a value as the next argument.
_VALUED = ("--detect-blocking",)


def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    """Our options (up to and including the program) and the program's arguments."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-m", "-c"):
            return argv[: i + 2], argv[i + 2 :]
        if (arg.startswith("-m") or arg.startswith("-c")) and not arg.startswith("--"):
            return argv[: i + 1], argv[i + 1 :]  # -mmodule, -ccode, as python accepts
        if arg == "--":
            return argv[: i + 2], argv[i + 2 :]
        if arg in _VALUED:
            i += 2
            continue
        if not arg.startswith("-") or arg == "-":
            return argv[: i + 1], argv[i + 1 :]
        i += 1
    return argv, []


def _interpreter() -> str:
    """How Python names itself in its own error messages."""
    orig = getattr(sys, "orig_argv", None)
    return orig[0] if orig else (sys.executable or "python")


def _fail(message: str, status: int) -> None:
    sys.stderr.write(f"{_interpreter()}: {message}\n")
    raise SystemExit(status)


def _run(program: Callable[[], object]) -> None:
    """Run ``program``; an uncaught exception is reported from the program's first frame on."""
    try:
        program()
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == _run.__code__.co_filename:
            tb = tb.tb_next
        # The display ignores the tb argument of an exception that has one.
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        del exc, tb
        raise SystemExit(1) from None


def _new_main(**attrs: object) -> dict[str, object]:
    """A fresh ``__main__`` module, made the process's ``__main__`` for good (as python does)."""
    main = types.ModuleType("__main__")
    main.__builtins__ = builtins  # type: ignore[attr-defined]
    for name, value in attrs.items():
        setattr(main, name, value)
    sys.modules["__main__"] = main
    return main.__dict__


def _run_code(code: str) -> None:
    if sys.version_info >= (3, 13):
        # 3.13's tracebacks show the lines of a -c program.
        linecache.cache["<string>"] = (len(code), None, code.splitlines(True), "<string>")
    exec(compile(code, "<string>", "exec"), _new_main())


def _run_script(path: str) -> None:
    with io.open_code(path) as f:
        source = f.read()
    code = compile(source, path, "exec")
    loader = importlib.machinery.SourceFileLoader("__main__", path)
    exec(code, _new_main(__file__=path, __cached__=None, __loader__=loader))


def _run_main_of(spec: importlib.machinery.ModuleSpec) -> None:
    """The ``__main__`` module of a directory or zip file (``spec`` found on ``sys.path[0]``)."""
    code = spec.loader.get_code("__main__")  # type: ignore[union-attr]
    exec(
        code,
        _new_main(__file__=spec.origin, __cached__=spec.cached, __loader__=spec.loader, __spec__=spec, __package__=""),
    )


def _print_stats_at_exit() -> None:
    """``--stats``: the summary on stderr at exit, and on SIGUSR1."""
    import weakref

    from . import _stats

    _stats.tracked = weakref.WeakSet()

    def show(*_: object) -> None:
        sys.stderr.write(_stats.report() + "\n")
        sys.stderr.flush()

    atexit.register(show)
    if hasattr(signal, "SIGUSR1"):
        signal.signal(signal.SIGUSR1, show)


def main(argv: list[str]) -> None:
    ours, rest = _split(argv)
    if not ours:
        _parser().print_usage(sys.stderr)
        raise SystemExit(2)
    args = _parser().parse_args(ours)
    import ferroloop

    ferroloop.install()
    if args.detect_blocking is not None:
        from . import _blocking

        # Reports are WARNINGs of the 'ferroloop' logger: without logging set
        # up, Python's last-resort handler prints them on stderr.
        _blocking.default_threshold = args.detect_blocking
    if args.stats:
        _print_stats_at_exit()
    if args.code is not None:
        sys.argv = ["-c", *rest]
        sys.path[0] = ""
        _run(lambda: _run_code(args.code))
    elif args.module is not None:
        sys.argv = [args.module, *rest]
        sys.path[0] = os.getcwd()
        try:
            spec = importlib.util.find_spec(args.module)
        except (ImportError, ValueError) as e:
            spec = None
            _fail(f"Error while finding module specification for {args.module!r} ({type(e).__name__}: {e})", 1)
        if spec is None:
            _fail(f"No module named {args.module}", 1)
        _run(lambda: runpy.run_module(args.module, run_name="__main__", alter_sys=True))
    else:
        # As python: joined to the working directory, not normalised.
        path = os.path.join(os.getcwd(), args.script)
        if not os.path.exists(path):
            _fail(f"can't open file {path!r}: [Errno 2] No such file or directory", 2)
        sys.argv = [args.script, *rest]
        if os.path.isfile(path) and not zipfile.is_zipfile(path):
            sys.path[0] = os.path.dirname(os.path.realpath(path))
            _run(lambda: _run_script(path))
            return
        # A directory or zip file with a __main__ module.
        sys.path[0] = path
        main_spec = importlib.machinery.PathFinder.find_spec("__main__", [path])
        if main_spec is None or main_spec.loader is None:
            _fail(f"can't find '__main__' module in {path!r}", 1)
            return
        _run(lambda: _run_main_of(main_spec))


if __name__ == "__main__":
    main(sys.argv[1:])
