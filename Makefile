# segflow: `make run` runs the main job on embedded defaults, `make test` passes the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run serve test lint bench reliability notebooks lab install clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,notebook]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/segflow demo

serve: $(STAMP)
	$(BIN)/segflow serve --clock wall

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench

reliability: $(STAMP)  # SIGKILL loops, poison, fuzzing, auth, erasure, personal data, slow clients, a 60 s soak
	$(BIN)/python -m bench.reliability

notebooks: $(STAMP)  # the four notebooks at their full size on clean kernels (make test runs them smaller)
	SEGFLOW_NOTEBOOK_USERS=800 SEGFLOW_NOTEBOOK_DAYS=14 $(BIN)/python -m pytest -q tests/test_notebooks.py

lab: $(STAMP)  # JupyterLab in notebooks/ (runs tracked in notebooks/mlflow.db unless MLFLOW_TRACKING_URI says)
	cd notebooks && ../$(BIN)/jupyter lab

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache .hypothesis
