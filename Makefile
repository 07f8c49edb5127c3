# The two entry points of the README. Each sets up .venv (once, again when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
# Azurite, the Azure Blob emulator the azure backend's tests run against (npm, pinned)
AZURITE := servers/azurite

.PHONY: demo test test-oldest lint bench

$(STAMP): pyproject.toml $(AZURITE)/package-lock.json
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	npm ci --prefix $(AZURITE) --no-audit --no-fund --loglevel=error
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/python -m demo

test: $(STAMP)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The provider and end-to-end tests on the oldest Synapse we support (tox.ini, env oldest).
test-oldest: $(STAMP)
	$(VENV)/bin/tox -e oldest $(if $(PYTEST_ARGS),-- $(PYTEST_ARGS))

# ruff on everything Python in the repository; mypy --strict on the package (pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench:
	bench/run
