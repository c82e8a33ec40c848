# The one definition of build, lint and test for ferroloop.
# `make help` lists the targets. Everything starts from nothing: virtual
# environments are created and filled from PyPI on first use.

SHELL := /bin/bash
.DEFAULT_GOAL := help
PYVERSIONS ?= 3.11 3.12 3.13
PY ?= 3.11
VENV = .venv-$(PY)
VPY = $(VENV)/bin/python
# One cargo target dir per interpreter: PyO3 rebuilds when the interpreter changes.
TARGET = target/py$(PY)
PYTEST_ARGS ?=

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# One pattern rule per interpreter: the version comes from the target's own
# name ($*), never from a variable a target may override (`bench: PY = ...`
# would not reach a prerequisite's name, which is expanded when make reads this file).
.venv-%/.ready: requirements-dev.txt
	@PYBIN=$$(scripts/find-python.sh $*) && $$PYBIN -m venv .venv-$*
	.venv-$*/bin/python -m pip install -q --upgrade pip
	.venv-$*/bin/python -m pip install -q -r requirements-dev.txt
	touch $@

.venv-%/.bench-ready: .venv-%/.ready requirements-bench.txt
	.venv-$*/bin/python -m pip install -q -r requirements-bench.txt
	touch $@

# Keep the stamps: they are real outputs, not intermediates to delete.
.PRECIOUS: .venv-%/.ready .venv-%/.bench-ready

.PHONY: venv
venv: $(VENV)/.ready ## create .venv-$(PY) with the dev requirements

.PHONY: build-dev
build-dev: venv ## build the extension (debug) into .venv-$(PY)
	CARGO_TARGET_DIR=$(TARGET) VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop -q

.PHONY: build-release
build-release: venv ## build the extension (release, LTO) into .venv-$(PY)
	CARGO_TARGET_DIR=$(TARGET) VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop -q --release

.PHONY: test-rust
test-rust: ## cargo test of the pure-Rust core (and of the benchmarks' netbench)
	cargo test -q -p ferroloop-core
	cargo test -q $(NETBENCH_CARGO)

.PHONY: test-py
test-py: build-dev ## pytest on one interpreter (PY=3.x)
	$(VPY) -m pytest -q $(PYTEST_ARGS)

.PHONY: test-debug
test-debug: build-dev ## pytest with PYTHONASYNCIODEBUG=1
	PYTHONASYNCIODEBUG=1 $(VPY) -m pytest -q $(PYTEST_ARGS)

.PHONY: conformance
conformance: build-dev ## CPython's own test_asyncio against ferroloop (PY=3.x)
	$(VPY) scripts/conformance.py

# Not part of `make test`: its own ASan build (target/asan) and venv (.venv-memcheck).
.PHONY: memcheck
memcheck: ## Rust tests and pytest under AddressSanitizer + LeakSanitizer, CPython 3.12 (docs/memcheck.md)
	scripts/memcheck.sh

.PHONY: lint
lint: venv ## cargo fmt --check, clippy -D warnings, ruff
	cargo fmt --all -- --check
	CARGO_TARGET_DIR=$(TARGET) PYO3_PYTHON=$(abspath $(VPY)) cargo clippy -q --all-targets -- -D warnings
	cargo fmt --manifest-path benchmarks/netbench/Cargo.toml -- --check
	cargo clippy -q $(NETBENCH_CARGO) --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests benchmarks scripts
	$(VENV)/bin/ruff format --check python tests benchmarks scripts
	$(VENV)/bin/mypy python/ferroloop

# The documentation site (mkdocs, Material theme), with its own venv
# (.venv-docs, requirements-docs.txt). Strict: a broken link or anchor, or a
# page left out of mkdocs.yml's nav, fails the build. The benchmark charts it
# shows, docs/assets/{bench,net}-latest.png, are written by every full `make bench`.
DOCS_VENV = .venv-docs

$(DOCS_VENV)/.ready: requirements-docs.txt
	@PYBIN=$$(scripts/find-python.sh 3.12) && $$PYBIN -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/python -m pip install -q --upgrade pip
	$(DOCS_VENV)/bin/python -m pip install -q -r requirements-docs.txt
	touch $@

# NO_MKDOCS_2_WARNING: silences the theme's banner about its own end of life, not our warnings.
.PHONY: docs
docs: $(DOCS_VENV)/.ready ## build the documentation site (mkdocs, strict) into target/site
	NO_MKDOCS_2_WARNING=1 $(DOCS_VENV)/bin/mkdocs build --strict
	@echo "open target/site/index.html"

# CPython's test_asyncio on asyncio's own loop (the reference), ferroloop,
# uvloop and rloop, then docs/compatibility-matrix.md from the JSON results.
# Not part of `make test`: each loop runs the whole suite (the page records the run times).
MATRIX_PY ?= 3.12
MATRIX_LOOPS = asyncio ferroloop uvloop rloop

.PHONY: conformance-matrix
conformance-matrix: ## test_asyncio on asyncio, ferroloop, uvloop, rloop (MATRIX_PY=3.12) into docs/compatibility-matrix.md
	@$(MAKE) --no-print-directory build-dev PY=$(MATRIX_PY)
	@$(MAKE) --no-print-directory .venv-$(MATRIX_PY)/.bench-ready
	@set -e; for l in $(MATRIX_LOOPS); do \
	  .venv-$(MATRIX_PY)/bin/python scripts/conformance_matrix.py run --loop $$l \
	    --json target/conformance-$$l-$(MATRIX_PY).json; \
	done
	.venv-$(MATRIX_PY)/bin/python scripts/conformance_matrix.py render --out docs/compatibility-matrix.md \
	  $(foreach l,$(MATRIX_LOOPS),target/conformance-$(l)-$(MATRIX_PY).json)

.PHONY: format
format: venv ## apply cargo fmt and ruff format
	cargo fmt --all
	cargo fmt --manifest-path benchmarks/netbench/Cargo.toml
	$(VENV)/bin/ruff format python tests benchmarks scripts
	$(VENV)/bin/ruff check --fix python tests benchmarks scripts

.PHONY: test
test: test-rust lint ## everything CI runs: Rust tests, lints, pytest and conformance on 3.11, 3.12, 3.13
	@set -e; for v in $(PYVERSIONS); do \
	  $(MAKE) --no-print-directory build-dev PY=$$v; \
	  echo "=== CPython $$v: pytest, and beside it pytest in asyncio debug mode [+$${SECONDS}s]"; \
	  scripts/pytest_pair.sh .venv-$$v/bin/python $(PYTEST_ARGS); \
	  echo "=== CPython $$v: conformance [+$${SECONDS}s]"; $(MAKE) --no-print-directory conformance PY=$$v; \
	done; echo "=== make test: pytest and conformance took $${SECONDS}s"

# Soak sizes: 1 = the full runs (tests/soak/test_soak.py); CI runs a short form.
SOAK_SCALE ?= 1
FERROLOOP_FUZZ_EXAMPLES ?= 5000
SOAK_REPORT ?= target/soak-report.jsonl

.PHONY: soak
soak: build-dev ## soak tests and the differential fuzzer on one interpreter (PY=3.x, SOAK_SCALE=1), then a table
	@mkdir -p $(dir $(SOAK_REPORT)) && rm -f $(SOAK_REPORT)
	@rc=0; FERROLOOP_SOAK_SCALE=$(SOAK_SCALE) FERROLOOP_SOAK_REPORT=$(abspath $(SOAK_REPORT)) \
	  FERROLOOP_FUZZ_EXAMPLES=$(FERROLOOP_FUZZ_EXAMPLES) \
	  $(VPY) -m pytest -q $(PYTEST_ARGS) tests/soak tests/test_fuzz_differential.py tests/test_fuzz_transports.py || rc=$$?; \
	  $(VPY) scripts/soak_report.py $(SOAK_REPORT); exit $$rc

# The benchmark interpreter (the peers' wheels exist for it).
BENCH_PY ?= 3.12
# netbench (the network group's client and reference servers) is its own cargo
# project with its own target dir: not part of the extension's workspace.
NETBENCH_CARGO = --manifest-path benchmarks/netbench/Cargo.toml --target-dir target/netbench

.PHONY: bench
bench: ## release builds on CPython 3.12 (BENCH_PY=3.x to change), then the benchmark groups: sched, net, proc, obs (tables, JSON, PNG)
	@$(MAKE) --no-print-directory build-release PY=$(BENCH_PY)
	@$(MAKE) --no-print-directory .venv-$(BENCH_PY)/.bench-ready
	@$(MAKE) --no-print-directory netbench bench-tools
	.venv-$(BENCH_PY)/bin/python benchmarks/run.py $(BENCH_ARGS)

.PHONY: netbench
netbench: ## build the network group's load generator and reference servers (release)
	cargo build -q --release $(NETBENCH_CARGO)

# wrk is optional (the HTTP rows fall back to netbench's own client): install
# it only if it is missing, we are root and apt works; never fail the bench.
.PHONY: bench-tools
bench-tools:
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "wrk is missing: installing it with apt-get"; \
	    { apt-get install -y -qq wrk >/dev/null 2>&1 || \
	      { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq wrk >/dev/null 2>&1; }; } || \
	      echo "could not install wrk: the HTTP rows use netbench's client"; \
	  fi; }

# Wheels are built by the tools of their own venv (.venv-wheel: maturin, ziglang
# as the manylinux linker, auditwheel; requirements-wheel.txt), never by a
# .venv-3.X, into cargo target dirs of their own (one per interpreter, as
# TARGET: a rebuild with nothing changed is then a no-op). zig links against
# glibc 2.17's symbols, so the wheels are manylinux2014 without a container.
WHEEL_VENV = .venv-wheel
WHEEL_TARGET = target/wheel
MANYLINUX ?= manylinux2014

$(WHEEL_VENV)/.ready: requirements-wheel.txt
	@PYBIN=$$(scripts/find-python.sh 3.12) && $$PYBIN -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/python -m pip install -q --upgrade pip
	$(WHEEL_VENV)/bin/python -m pip install -q -r requirements-wheel.txt
	touch $@

.PHONY: wheel
wheel: $(WHEEL_VENV)/.ready ## release wheels (manylinux2014, zig) for CPython 3.11-3.13 and an sdist into dist/
	@set -e; mkdir -p dist && rm -f dist/ferroloop-*.whl dist/ferroloop-*.tar.gz; \
	  export PATH="$(abspath $(WHEEL_VENV))/bin:$$PATH"; \
	  for v in $(PYVERSIONS); do py=$$(scripts/find-python.sh $$v); ( set -x; \
	    CARGO_TARGET_DIR=$(WHEEL_TARGET)/py$$v maturin build --release --zig --compatibility $(MANYLINUX) --auditwheel check --out dist -i $$py ); \
	  done; \
	  ( set -x; CARGO_TARGET_DIR=$(WHEEL_TARGET)/sdist maturin sdist --out dist ); \
	  for w in dist/ferroloop-*.whl; do ( set -x; auditwheel show "$$w" ); done
	@ls -l dist/

.PHONY: wheel-check
wheel-check: wheel ## install each wheel in a fresh venv without Rust on PATH, build the sdist with cargo; smoke-test both
	PYVERSIONS="$(PYVERSIONS)" scripts/wheel_check.sh

.PHONY: clean
clean: ## remove build outputs and virtual environments
	rm -rf target .venv-* python/ferroloop/*.so
