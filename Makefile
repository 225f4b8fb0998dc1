# Two commands for a new user: `make test` and `make demo`. Both install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP_PY := $(VENV)/.installed
STAMP_NODE := node_modules/.installed
PYTEST_ARGS ?=

.PHONY: install browser test unit lint bench demo devhost clean

install: $(STAMP_PY) $(STAMP_NODE)

$(STAMP_PY): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

$(STAMP_NODE): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The dashboard's browser tests (tests/dashboard) drive Debian's chromium through Playwright
# (whose own browser download cannot work here). Installed when missing and apt can (root, or
# sudo without a password); where it cannot be had, those tests skip and say so.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
		|| [ -n "$$CHROMIUM_PATH" ]; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "no chromium and no apt-get: the dashboard's browser tests will skip"; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
			|| echo "chromium could not be installed: the dashboard's browser tests will skip"; \
	elif sudo -n true 2>/dev/null; then \
		sudo -n apt-get update -qq && sudo -n env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq chromium \
			|| echo "chromium could not be installed: the dashboard's browser tests will skip"; \
	else \
		echo "no chromium, and apt needs root: the dashboard's browser tests will skip"; \
	fi

# `make unit`: the tests that need no Azurite, with RETRAIN_NO_AZURITE=1 so that any of them
# trying to start it fails (tests/README.md). `make test`: ruff, that part, then the Azurite
# part. Exit status 5 is pytest's "no test selected" (PYTEST_ARGS naming one part's files).
unit: install
	RETRAIN_NO_AZURITE=1 $(PY) -m pytest -n 2 -m "not azurite" $(PYTEST_ARGS) || test $$? -eq 5

test: install browser
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports
	RETRAIN_NO_AZURITE=1 $(PY) -m pytest -n 2 -m "not azurite" $(PYTEST_ARGS) || test $$? -eq 5
	$(PY) -m pytest -n 2 -m azurite $(PYTEST_ARGS) || test $$? -eq 5

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: install
	$(PY) -m benchmarks

# The app under devhost with local.settings.json (made from the sample on first use). devhost
# starts this checkout's Azurite, the local endpoint and the MLflow UI on free ports (unless the
# settings pin them), prints where they are and writes it to .local/devhost.json for the CLI.
devhost: install
	@test -f local.settings.json || cp local.settings.sample.json local.settings.json
	$(PY) -m devhost --settings local.settings.json

# `make demo STORY=rings` (alias `decay`): the second story (shadow, two rings, retrain on decay).
demo: install
	$(PY) -m devhost.demo $(if $(STORY),--story $(STORY))

clean:
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache .hypothesis .local
