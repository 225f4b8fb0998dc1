# Two commands for a new user: `make test` and `make demo`. Both install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP_PY := $(VENV)/.installed
STAMP_NODE := node_modules/.installed
PYTEST_ARGS ?=

.PHONY: install test unit lint bench demo devhost clean

install: $(STAMP_PY) $(STAMP_NODE)

$(STAMP_PY): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

$(STAMP_NODE): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# `make unit`: the tests that need no Azurite, with RETRAIN_NO_AZURITE=1 so that any of them
# trying to start it fails (tests/README.md). `make test`: ruff, that part, then the Azurite
# part. Exit status 5 is pytest's "no test selected" (PYTEST_ARGS naming one part's files).
unit: install
	RETRAIN_NO_AZURITE=1 $(PY) -m pytest -n 2 -m "not azurite" $(PYTEST_ARGS) || test $$? -eq 5

test: install
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

# The app under devhost with local.settings.json (made from the sample on first use), and the
# local endpoint it deploys to (stops with devhost).
devhost: install
	@test -f local.settings.json || cp local.settings.sample.json local.settings.json
	@mkdir -p .local/endpoint
	@# One key for the local endpoint's routes, in the environment of the server and the app.
	export LOCAL_ENDPOINT_KEY="$${LOCAL_ENDPOINT_KEY:-$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(32))')}"; \
	$(PY) -m endpoint_server --port 5080 --data-dir .local/endpoint \
		--tracking-uri sqlite:///.local/mlflow.db --max-lifetime 86400 --parent-pid $$$$ & \
	$(PY) -m devhost --settings local.settings.json

demo: install
	$(PY) -m devhost.demo

clean:
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache .hypothesis .local
