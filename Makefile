# Every target sets itself up from a clean clone: the venv, the packages, the tools.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
TOOLS := .tools/bin
export PATH := $(CURDIR)/$(TOOLS):$(PATH)

.PHONY: run test test-oldest lint typecheck bench bench-quick chart soak tools docs docs-build status-screenshot clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench,docs]'
	touch $@

venv: $(VENV)/.installed

# The oldest aiohttp that setup.cfg allows (its `aiohttp>=` floor, e.g. 3.12 is 3.12.0), in a venv
# of its own: the modules that use aiohttp's internals are tested on it on every `make test`, not
# assumed to work. A wheel only: if the floor has none for this Python, this fails and says so.
OLDEST_VENV ?= .venv-oldest
OLDEST_PY := $(OLDEST_VENV)/bin/python
AIOHTTP_FLOOR = $(shell sed -n 's/^[[:space:]]*aiohttp>=\([0-9][0-9.]*\).*/\1/p' setup.cfg)
# The transport, the server and the proxy: what rests on aiohttp's internals.
OLDEST_TESTS := tests/test_aiohttp_contract.py tests/upstream tests/web tests/providers/test_proxy.py

$(OLDEST_VENV)/.installed: setup.cfg pyproject.toml
	@test -n "$(AIOHTTP_FLOOR)" || { echo "no aiohttp>= floor found in setup.cfg" >&2; exit 1; }
	$(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_PY) -m pip install --quiet --upgrade pip
	$(OLDEST_PY) -m pip install --quiet --only-binary aiohttp -e '.[test]' 'aiohttp==$(AIOHTTP_FLOOR)'
	touch $@

tools:
	bash scripts/fetch-tools.sh

run: $(VENV)/.installed
	$(VENV)/bin/sidecar

test: $(VENV)/.installed tools
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-oldest
	$(MAKE) --no-print-directory docs-build
	$(MAKE) --no-print-directory lint

test-oldest: $(OLDEST_VENV)/.installed
	$(OLDEST_PY) -c 'import aiohttp, sys; from packaging.version import Version as V; \
	    v = aiohttp.__version__; print("aiohttp", v, "(the oldest setup.cfg allows)"); \
	    sys.exit(0 if V(v) == V("$(AIOHTTP_FLOOR)") else f"expected aiohttp $(AIOHTTP_FLOOR), found {v}")'
	$(OLDEST_PY) -m pytest -q -p no:cacheprovider $(OLDEST_TESTS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check sidecar tests bench scripts
	$(VENV)/bin/mypy

typecheck: lint

# The documentation site (mkdocs.yml, docs/): `docs` serves it on http://127.0.0.1:8000 with live
# reload; `docs-build` writes it to site/ (git-ignored) and fails on any warning, a broken link or
# anchor included. mkdocs-material >= 9.7 prints an end-of-life banner on every run: a notice about
# the theme, not about these pages, so it is switched off to keep the build output to real warnings.
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

docs-build: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --clean --site-dir site

chart: $(VENV)/.installed tools
	$(PY) -m pytest -q tests/chart

bench: $(VENV)/.installed
	bash scripts/install-bench-tools.sh
	$(PY) -m bench $(BENCH_ARGS)

bench-quick: $(VENV)/.installed
	bash scripts/install-bench-tools.sh
	$(PY) -m bench --quick

DURATION ?= 10m
soak: $(VENV)/.installed
	$(PY) -m tests.reliability.soak --duration $(DURATION)

# docs/img/status-page.png: the status page of a real sidecar, in headless Chromium.
status-screenshot: $(VENV)/.installed tools
	$(PY) scripts/status_screenshot.py --out docs/img/status-page.png

clean:
	rm -rf $(VENV) $(OLDEST_VENV) .tools build dist site *.egg-info
