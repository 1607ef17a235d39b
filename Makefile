# Every target sets itself up from a clean clone: the venv, the packages, the tools.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
TOOLS := .tools/bin
export PATH := $(CURDIR)/$(TOOLS):$(PATH)

.PHONY: run test lint typecheck bench bench-quick chart soak tools status-screenshot clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $@

venv: $(VENV)/.installed

tools:
	bash scripts/fetch-tools.sh

run: $(VENV)/.installed
	$(VENV)/bin/sidecar

test: $(VENV)/.installed tools
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)
	$(MAKE) --no-print-directory lint

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check sidecar tests bench scripts
	$(VENV)/bin/mypy

typecheck: lint

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
	rm -rf $(VENV) .tools build dist *.egg-info
