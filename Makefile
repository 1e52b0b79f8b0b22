# opsstack: `make up` starts the native stack on the demo platform; `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up down status test test-unit deps deps-test venv airflow-venv dashboards rules clean bench

up: deps venv
	$(BIN)/opsstack up

down:
	@if [ -x $(BIN)/opsstack ]; then $(BIN)/opsstack down; else echo "nothing to stop"; fi

status: venv
	$(BIN)/opsstack status

deps:
	@scripts/install-deps.sh

deps-test:
	@scripts/install-deps.sh --test

venv: $(STAMP)

# Apache Airflow 3 for the demo (demo.airflow) and its integration test, in a venv of its own
# (Airflow pins many packages; .venv is not touched). Pins: demo/airflow/requirements.txt.
# About 1 min and 300 MB the first time; nothing to do afterwards (the stamp).
AIRFLOW_VENV  := .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed

airflow-venv: $(AIRFLOW_STAMP)

$(AIRFLOW_STAMP): demo/airflow/requirements.txt
	@test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install -q --upgrade pip
	$(AIRFLOW_VENV)/bin/python -m pip install -q -r demo/airflow/requirements.txt
	@touch $(AIRFLOW_STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

# two lanes side by side (scripts/run_tests.py): tests/e2e in one pytest, the rest in another.
# --basetemp inside the checkout (.pytest-tmp/<lane>): another pytest run on the same machine
# (they share /tmp/pytest-of-$USER and prune each other's old folders) cannot delete this run's clusters
test: deps-test venv airflow-venv
	$(BIN)/python scripts/run_tests.py --basetemp $(CURDIR)/.pytest-tmp

test-unit: venv
	$(BIN)/python -m pytest -q tests/unit

dashboards: venv
	$(BIN)/opsstack dashboards generate

rules: venv
	$(BIN)/opsstack rules render

clean: down
	rm -rf .run
