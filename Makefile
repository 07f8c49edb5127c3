# The two entry points of the README. Each sets up .venv (once, again when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
# Azurite, the Azure Blob emulator the azure backend's tests run against (npm, pinned)
AZURITE := tests/servers/azurite

.PHONY: demo test bench

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

bench:
	bench/run
