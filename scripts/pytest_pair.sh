#!/usr/bin/env bash
# usage: scripts/pytest_pair.sh PYTHON [pytest args...]
#
# The test suite twice on one interpreter, side by side: as is, and with
# PYTHONASYNCIODEBUG=1 (asyncio's debug mode). The suite keeps about one CPU
# busy (it waits on timers, sockets and child processes), so the two runs
# together take little more than the longer one. The debug run's output is
# printed after the plain run's; the status is the first failure's.
set -u
py=$1
shift
log=$(mktemp "${TMPDIR:-/tmp}/ferroloop-debug-pytest.XXXXXX")
# A command run in the background by a shell without job control starts
# with SIGINT and SIGQUIT ignored, and Python keeps an ignored SIGINT (no
# KeyboardInterrupt): the signal tests need both back at their defaults.
PYTHONASYNCIODEBUG=1 "$py" -c '
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
signal.signal(signal.SIGQUIT, signal.SIG_DFL)
os.execv(sys.executable, [sys.executable, "-m", "pytest", *sys.argv[1:]])
' -q -p no:cacheprovider "$@" </dev/null >"$log" 2>&1 &
debug_pid=$!
trap 'kill "$debug_pid" 2>/dev/null; rm -f "$log"' EXIT
"$py" -m pytest -q "$@"
plain=$?
wait "$debug_pid"
debug=$?
echo "=== the same tests in asyncio debug mode (PYTHONASYNCIODEBUG=1), run beside them:"
cat "$log"
if [ "$plain" -ne 0 ]; then exit "$plain"; fi
exit "$debug"
