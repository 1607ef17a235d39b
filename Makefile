# Every target sets itself up from a clean clone: the venv, the packages, the tools.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
TOOLS := .tools/bin
export PATH := $(CURDIR)/$(TOOLS):$(PATH)

.PHONY: run test lint typecheck bench bench-quick chart soak tools docs docs-build status-screenshot clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench,docs]'
	touch $@

venv: $(VENV)/.installed

tools:
	bash scripts/fetch-tools.sh

run: $(VENV)/.installed
	$(VENV)/bin/sidecar

test: $(VENV)/.installed tools
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)
	$(MAKE) --no-print-directory docs-build
	$(MAKE) --no-print-directory lint

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
	rm -rf $(VENV) .tools build dist site *.egg-info
