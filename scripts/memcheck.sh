#!/usr/bin/env bash
# make memcheck: ferroloop under AddressSanitizer (+ LeakSanitizer).
# The recipe, what is checked and how to read a report: docs/memcheck.md.
#
#   1. builds a canary cdylib and the extension with -Zsanitizer=address
#      (stable rustc, RUSTC_BOOTSTRAP=1) into target/asan, installs the
#      extension's wheel into .venv-memcheck (never into .venv-3.x);
#   2. checks the canary's deliberate errors are reported (else: exit 3);
#   3. cargo test of the Rust crates under ASan (executables: rustc's runtime);
#   4. pytest under ASan: the interpreter runs with gcc's shared ASan runtime
#      preloaded and PYTHONMALLOC=malloc; child interpreters inherit both;
#   5. sorts the reports written to target/asan/reports (memcheck_reports.py).
# Exit status: 0 clean; 1 a memory error, a leak of ferroloop's, a failing Rust
# test or a pytest run that did not complete; 2 a missing prerequisite; 3 the
# canary's errors were not all reported.
#
# Environment: MEMCHECK_PY (3.12), MEMCHECK_TESTS (pytest arguments; default:
# the whole suite but the soak tests and the RSS-based test),
# FERROLOOP_FUZZ_EXAMPLES (150 here), MEMCHECK_LEAKS
# (1: LeakSanitizer on in the interpreter too; 0: memory errors only),
# BUILD_LOCK (a lock file every cargo/maturin call is wrapped in with flock;
# /tmp/ferroloop-build.lock by default, empty for none).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

PYV=${MEMCHECK_PY:-3.12}
VENV=$ROOT/.venv-memcheck
VPY=$VENV/bin/python
TARGET=$ROOT/target/asan
REPORTS=$TARGET/reports
TRIPLE=x86_64-unknown-linux-gnu
LEAKS=${MEMCHECK_LEAKS:-1}
BUILD_LOCK=${BUILD_LOCK-/tmp/ferroloop-build.lock}
DEFAULT_TESTS=(tests --ignore=tests/soak
  --deselect tests/test_reliability.py::test_memory_of_a_large_batch_is_given_back)
if [ -n "${MEMCHECK_TESTS:-}" ]; then
  read -r -a TESTS <<<"$MEMCHECK_TESTS"
else
  TESTS=("${DEFAULT_TESTS[@]}")
fi

say() { printf '=== memcheck: %s\n' "$*"; }
die() { printf 'memcheck: %s\n' "$*" >&2; exit 2; }

locked() {
  if [ -n "$BUILD_LOCK" ] && command -v flock >/dev/null 2>&1; then
    flock "$BUILD_LOCK" "$@"
  else
    "$@"
  fi
}

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

# --- the shared ASan runtime for a non-instrumented interpreter --------------
# rustc links its ASan runtime into executables only; a cdylib loaded by
# python needs a shared runtime loaded first. gcc's libasan implements the
# same instrumentation ABI (version 8 of the mismatch check).
LIBASAN=$(gcc -print-file-name=libasan.so 2>/dev/null || true)
if [ -z "$LIBASAN" ] || [ ! -e "$LIBASAN" ]; then
  die "gcc's shared ASan runtime (libasan.so) is missing: apt-get install gcc (Debian: libasan8)"
fi
LIBASAN=$(readlink -f "$LIBASAN")
nm -D "$LIBASAN" | grep -c ' __asan_version_mismatch_check_v8$' >/dev/null ||
  die "$LIBASAN does not implement ASan ABI v8 (rustc's LLVM): see docs/memcheck.md"

# --- the virtual environment -------------------------------------------------
# The stamp holds the interpreter version: MEMCHECK_PY=3.x recreates the venv.
if [ "$(cat "$VENV/.ready" 2>/dev/null)" != "$PYV" ] || [ requirements-dev.txt -nt "$VENV/.ready" ]; then
  say "creating $VENV (CPython $PYV)"
  PYBIN=$(scripts/find-python.sh "$PYV")
  rm -rf "$VENV"
  "$PYBIN" -m venv "$VENV"
  "$VPY" -m pip install -q --upgrade pip
  # The test requirements (libraries the suite runs on both loops included),
  # without the linters.
  grep -vE '^(ruff|mypy)([<>=!~ ]|$)' requirements-dev.txt >"$VENV/requirements-memcheck.txt"
  "$VPY" -m pip install -q -r "$VENV/requirements-memcheck.txt"
  echo "$PYV" >"$VENV/.ready"
fi

# --- the instrumented builds -------------------------------------------------
# --target: only the target's crates are instrumented, not build scripts and
# proc-macros (which run inside cargo, without the runtime). Legacy symbol
# mangling: gcc's runtime demangles it, not Rust's v0 mangling. Frame
# pointers: the sanitizers record allocation stacks with the fast (frame
# pointer) unwinder, which skips the frames of functions without one.
export RUSTC_BOOTSTRAP=1
export RUSTFLAGS="-Zsanitizer=address -Zunstable-options -Csymbol-mangling-version=legacy -Cforce-frame-pointers=yes"
export CARGO_TARGET_DIR=$TARGET

say "building the canary"
mkdir -p "$TARGET/canary"
locked rustc --edition 2021 --crate-type cdylib --crate-name memcheck_canary -g -Copt-level=0 \
  $RUSTFLAGS --target "$TRIPLE" -o "$TARGET/canary/libmemcheck_canary.so" scripts/memcheck_canary.rs

say "building the extension (debug, ASan) into $TARGET"
rm -rf "$TARGET/wheels"
locked env VIRTUAL_ENV="$VENV" "$VENV/bin/maturin" build -q --profile dev --target "$TRIPLE" \
  -i "$VPY" --out "$TARGET/wheels"
"$VPY" -m pip install -q --no-deps --force-reinstall "$TARGET"/wheels/ferroloop-*.whl
SO=$(ls "$VENV"/lib/python*/site-packages/ferroloop/_ferroloop*.so)
nm -D "$SO" | grep -c ' U __asan_report_store' >/dev/null || die "$SO is not instrumented"

# --- the environment of every checked interpreter ----------------------------
# PYTHONMALLOC=malloc: Python objects come from malloc too, so ASan sees them
# (redzones, quarantine) when ferroloop's code touches them.
# allocator_may_return_null: tests that ask for huge sizes get NULL (then
# MemoryError) as with glibc, not an ASan "allocation-size-too-big" report.
# abort_on_error=1 + exitcode=0: a memory error still kills the process (with
# SIGABRT), but a leak report at exit leaves the exit status alone: CPython
# always leaks at exit, and tests check their child interpreters' status. The
# report files, sorted at the end, are the verdict.
asan_env() { # $1: report directory
  local opts="allocator_may_return_null=1:detect_stack_use_after_return=1:log_path=$1/asan"
  opts+=":abort_on_error=1:exitcode=0:detect_leaks=$LEAKS"
  env LD_PRELOAD="$LIBASAN" PYTHONMALLOC=malloc ASAN_OPTIONS="$opts" \
    LSAN_OPTIONS="suppressions=$ROOT/scripts/memcheck-lsan.supp:print_suppressions=0" \
    PYTHONDONTWRITEBYTECODE=1 "${@:2}"
}

# --- the canary --------------------------------------------------------------
say "canary: each deliberate error must be reported"
CANARY=$TARGET/canary
canary_ok=1
for fn in canary_overflow canary_use_after_free canary_leak; do
  rm -rf "$CANARY/$fn" && mkdir -p "$CANARY/$fn"
  asan_env "$CANARY/$fn" "$VPY" -c "import ctypes; ctypes.CDLL('$CANARY/libmemcheck_canary.so').$fn()" \
    >/dev/null 2>&1 || true
  case $fn in
    canary_overflow) want='ERROR: AddressSanitizer: heap-buffer-overflow' ;;
    canary_use_after_free) want='ERROR: AddressSanitizer: heap-use-after-free' ;;
    canary_leak) want='Direct leak of' ;;
  esac
  if [ "$fn" = canary_leak ] && [ "$LEAKS" != 1 ]; then continue; fi
  if grep -qs "$want" "$CANARY/$fn"/asan.* && grep -qs 'memcheck_canary.rs' "$CANARY/$fn"/asan.*; then
    echo "  $fn: reported"
  else
    echo "  $fn: NOT reported"
    canary_ok=0
  fi
done
[ "$canary_ok" = 1 ] || { echo "memcheck: the checker does not see the canary's errors: a clean run would mean nothing" >&2; exit 3; }

rm -rf "$REPORTS" && mkdir -p "$REPORTS"
start=$(date +%s)
status=0

# --- Rust tests --------------------------------------------------------------
# Executables get rustc's own (static) runtime; LeakSanitizer is on.
say "cargo test under ASan: ferroloop-core, netbench"
rust_opts="detect_stack_use_after_return=1:log_path=$REPORTS/asan"
locked env ASAN_OPTIONS="$rust_opts" cargo test -q -p ferroloop-core --target "$TRIPLE" || status=1
locked env ASAN_OPTIONS="$rust_opts" cargo test -q --manifest-path benchmarks/netbench/Cargo.toml \
  --target "$TRIPLE" || status=1

# --- pytest --------------------------------------------------------------------
rust_done=$(date +%s)
# The differential fuzzer (tests/test_fuzz_differential.py) drives the native
# error paths with invalid arguments: kept, with fewer examples than its 300.
export FERROLOOP_FUZZ_EXAMPLES=${FERROLOOP_FUZZ_EXAMPLES:-150}
say "pytest under ASan: ${TESTS[*]} (fuzzer: $FERROLOOP_FUZZ_EXAMPLES examples per test)"
pytest_rc=0
asan_env "$REPORTS" timeout 2400 "$VPY" -m pytest -q -p no:cacheprovider "${TESTS[@]}" || pytest_rc=$?
pytest_done=$(date +%s)
# 1 (some tests failed) is make test's business: the reports decide here. A
# crash, a timeout or an interrupted run means the code was not all checked.
case $pytest_rc in
  0) ;;
  1) say "WARNING: some tests failed under the checker (listed above); not a memory report by itself" ;;
  *) say "pytest did not complete (exit status $pytest_rc)"; status=1 ;;
esac

# --- the reports ---------------------------------------------------------------
say "reports (in $REPORTS)"
"$VPY" scripts/memcheck_reports.py "$REPORTS" || status=1

say "durations: Rust tests $((rust_done - start))s, pytest $((pytest_done - rust_done))s (exit status $pytest_rc)"
if [ "$status" = 0 ]; then
  say "OK: no memory errors reported"
else
  say "FAILED: see the reports above and docs/memcheck.md"
fi
exit "$status"
