# The commands every contributor and user share. A new user needs two: `make run`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CONFIG ?= config.toml
# The development environment includes the optional Ray engine so its tests run.
EXTRAS ?= test,ray,lint
PYTEST_ARGS ?=

.PHONY: install run test lint bench clean

install: $(STAMP)

# Reinstalls only when pyproject.toml changed (or the venv is missing).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/python -c "import tensorflow_hub, soundfile, soxr, watchdog, apscheduler, fastapi, uvicorn, prometheus_client; print('install ok')"
	@touch $(STAMP)

run: install
	$(BIN)/ecosight-daemon --config $(CONFIG) run

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Types checked strictly on the package (settings in pyproject.toml); style and bugs by ruff.
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: install
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
