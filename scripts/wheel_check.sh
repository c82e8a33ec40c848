#!/usr/bin/env bash
# `make wheel-check` (after `make wheel` filled dist/): prove the wheels and the
# sdist install and work.
#  - each wheel (one per CPython of PYVERSIONS) goes into a fresh venv under
#    target/wheel-check with PATH=<venv>/bin:/usr/bin:/bin and no other
#    environment: no cargo, no rustc (checked), no index (pip --no-index), so
#    nothing can be compiled; scripts/wheel_smoke.py then runs in that venv;
#    first `auditwheel show` must find the wheel consistent with its own tag;
#  - the sdist is built from source by pip (maturin's PEP 517 backend, cargo on
#    PATH, a new cargo target dir) into a fresh venv of CPython $SDIST_PY, and
#    the same smoke runs.
# The version every artefact must carry is Cargo.toml's: the one source.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
PYVERSIONS=${PYVERSIONS:-3.11 3.12 3.13}
SDIST_PY=${SDIST_PY:-3.12}
work=$root/target/wheel-check
smoke=$root/scripts/wheel_smoke.py
auditwheel=${AUDITWHEEL:-$root/.venv-wheel/bin/auditwheel}

die() { echo "wheel_check: FAILED: $*" >&2; exit 1; }
one() {  # the single file a glob names
  local files=("$@")
  [ "${#files[@]}" -eq 1 ] && [ -e "${files[0]}" ] || die "expected one file, found: ${files[*]}"
  echo "${files[0]}"
}

rm -rf "$work" && mkdir -p "$work"
version=$("$(scripts/find-python.sh "$SDIST_PY")" -c \
  'import tomllib; print(tomllib.load(open("Cargo.toml", "rb"))["package"]["version"])')
echo "=== Cargo.toml version: $version"

for v in $PYVERSIONS; do
  start=$SECONDS
  tag=cp${v/./}
  whl=$(one "$root"/dist/ferroloop-*-"$tag"-"$tag"-*.whl)
  name=$(basename "$whl")
  [ "$(echo "$name" | cut -d- -f2)" = "$version" ] || die "$name does not carry version $version"
  echo "=== CPython $v: $name"
  # auditwheel's verdict: the most compatible tag the wheel's symbols allow must be one it claims.
  shown=$("$auditwheel" show "$whl" | tr '\n' ' ')
  allowed=$(echo "$shown" | sed -n 's/.*consistent with the following platform tag: *"\([^"]*\)".*/\1/p')
  [ -n "$allowed" ] || die "auditwheel show: $shown"
  case $name in *"$allowed"*) echo "auditwheel: consistent with $allowed" ;; *) die "auditwheel: $shown" ;; esac
  venv=$work/venv-$v
  "$(scripts/find-python.sh "$v")" -m venv "$venv"
  bare=(env -i HOME="$HOME" LANG=C.UTF-8 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH="$venv/bin:/usr/bin:/bin")
  if "${bare[@]}" bash -c 'command -v cargo || command -v rustc'; then
    die "cargo or rustc is reachable without ~/.cargo/bin on PATH"
  fi
  "${bare[@]}" bash -c 'echo "PATH=$PATH; cargo: $(command -v cargo || echo none); rustc: $(command -v rustc || echo none)"'
  "${bare[@]}" "$venv/bin/python" -m pip install -q --no-index --only-binary=:all: "$whl"
  (cd "$work" && "${bare[@]}" "$venv/bin/python" "$smoke" "$version")
  echo "=== CPython $v: wheel OK in $((SECONDS - start)) s"
done

start=$SECONDS
sdist=$(one "$root"/dist/ferroloop-*.tar.gz)
[ "$(basename "$sdist")" = "ferroloop-$version.tar.gz" ] || die "$(basename "$sdist") does not carry version $version"
command -v cargo >/dev/null || die "building the sdist needs cargo on PATH"
echo "=== CPython $SDIST_PY: $(basename "$sdist") built from source with $(cargo --version)"
venv=$work/sdist-venv-$SDIST_PY
"$(scripts/find-python.sh "$SDIST_PY")" -m venv "$venv"
log=$work/sdist-build.log
# A cargo target dir of its own, new each time: a cached one would find the
# sources unchanged (cargo keys them relative to the package) and compile nothing.
CARGO_TARGET_DIR=$work/sdist-target PIP_DISABLE_PIP_VERSION_CHECK=1 \
  "$venv/bin/python" -m pip install -v --no-cache-dir --no-binary ferroloop "$sdist" >"$log" 2>&1 ||
  { tail -40 "$log"; die "pip could not build $(basename "$sdist") (log: $log)"; }
grep -q "Compiling ferroloop v$version" "$log" || die "cargo did not compile ferroloop (log: $log)"
grep -E "Compiling ferroloop|Finished|Built wheel" "$log" | sed 's/^ */    /'
(cd "$work" && "$venv/bin/python" "$smoke" "$version")
echo "=== CPython $SDIST_PY: sdist OK in $((SECONDS - start)) s"
