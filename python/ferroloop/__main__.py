"""``python -m ferroloop script.py [args]`` / ``python -m ferroloop -m module [args]``.

Runs a program with ferroloop installed as asyncio's loop, with the
``sys.argv``, ``__main__`` and exit status of ``python script.py``.
"""

from __future__ import annotations

import os
import runpy
import sys

USAGE = "usage: python -m ferroloop script.py [args ...]\n       python -m ferroloop -m module [args ...]\n"


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        sys.stderr.write(USAGE)
        raise SystemExit(0 if argv else 2)
    import ferroloop

    ferroloop.install()
    if argv[0] == "-m":
        if len(argv) < 2:
            sys.stderr.write("Argument expected for the -m option\n" + USAGE)
            raise SystemExit(2)
        sys.argv = argv[1:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        path = argv[0]
        sys.argv = argv[:]
        sys.path[0] = os.path.dirname(os.path.abspath(path))
        runpy.run_path(path, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
