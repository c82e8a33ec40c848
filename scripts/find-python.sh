#!/usr/bin/env bash
# Print the path of a CPython interpreter of version $1 (e.g. 3.12).
# Looks in pyenv (where these machines keep 3.11, 3.12 and 3.13) through the
# pyenv command if it is on PATH, then directly under $PYENV_ROOT or
# ~/.pyenv, then on PATH.
set -euo pipefail
v="$1"
if command -v pyenv >/dev/null 2>&1; then
  for p in $(pyenv versions --bare 2>/dev/null | grep -E "^${v//./\\.}(\.[0-9]+)?$" | sort -V -r); do
    prefix=$(pyenv prefix "$p" 2>/dev/null) || continue
    if [ -x "$prefix/bin/python$v" ]; then echo "$prefix/bin/python$v"; exit 0; fi
  done
fi
root="${PYENV_ROOT:-$HOME/.pyenv}"
for cand in $(ls -d "$root"/versions/"$v".* 2>/dev/null | sort -V -r); do
  if [ -x "$cand/bin/python$v" ]; then echo "$cand/bin/python$v"; exit 0; fi
done
if command -v "python$v" >/dev/null 2>&1; then command -v "python$v"; exit 0; fi
echo "python$v not found (install it with pyenv)" >&2
exit 1
