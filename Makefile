# commbox-etl — `make help` lists the targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help install run test test-faults lint format simulate clean

help: ## List the targets with one line each
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) ## Create .venv with the pinned dependencies

run: $(STAMP) ## Simulator -> pipeline -> commbox.duckdb -> views -> SLA summary
	$(BIN)/commbox-etl demo

test: $(STAMP) ## Run the test-suite (simulator over loopback, DuckDB, PostgreSQL if installed), one worker per core (up to 4)
	$(BIN)/pytest -n auto --maxprocesses=4

test-faults: $(STAMP) ## Run only the fault-injection suite
	$(BIN)/pytest -m faults

lint: $(STAMP) ## Check style with ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## Format and fix with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

simulate: $(STAMP) ## Serve the CommBox API simulator on 127.0.0.1:8765
	$(BIN)/commbox-etl simulate --port 8765

clean: ## Remove the virtualenv, local warehouses and dlt working folders
	rm -rf $(VENV) .airflow-venv .dbt-venv commbox.duckdb .dlt/pipelines reports

# The Airflow virtualenv too: scenario 7 runs the DAG with `airflow dags test` (its stamp is a
# prerequisite added where `AIRFLOW_STAMP` is defined, below).
bench: $(STAMP) ## Benchmark pipeline vs the API's limit vs dlt rest_api (~25 min) -> bench/results.md
	$(BIN)/pip install --quiet py-spy==0.4.3 pyinstrument==5.1.3
	$(BIN)/python -m bench

bench-quick: $(STAMP) ## Small benchmark run (under 2 min) -> bench/runs/quick.md
	$(BIN)/python -m bench --quick

.PHONY: bench bench-quick

AIRFLOW_VENV  := .airflow-venv
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed-stamp

$(AIRFLOW_STAMP): pyproject.toml constraints.txt dags/airflow-constraints.txt
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install --quiet --upgrade pip
	$(AIRFLOW_VENV)/bin/pip install --quiet -c constraints.txt -c dags/airflow-constraints.txt \
		"apache-airflow==3.3.2" -e ".[dev]"
	touch $(AIRFLOW_STAMP)

bench: $(AIRFLOW_STAMP)

.PHONY: test-airflow
test-airflow: $(STAMP) $(AIRFLOW_STAMP) ## Airflow in .airflow-venv: `airflow dags test` of dags/commbox.py against the simulator
	COMMBOX_REQUIRE_AIRFLOW=1 $(AIRFLOW_VENV)/bin/pytest -p no:cacheprovider tests/test_airflow_dag.py

DBT_VENV  := .dbt-venv
DBT_STAMP := $(DBT_VENV)/.installed-stamp

# dbt has a virtualenv of its own: its dependencies pin below this project's (python-dateutil).
$(DBT_STAMP): tests/dbt-constraints.txt
	$(PYTHON) -m venv $(DBT_VENV)
	$(DBT_VENV)/bin/pip install --quiet --upgrade pip
	$(DBT_VENV)/bin/pip install --quiet -c tests/dbt-constraints.txt \
		"dbt-core==1.11.16" "dbt-duckdb==1.11.1" "dbt-postgres==1.11.0"
	touch $(DBT_STAMP)

.PHONY: test-dbt
test-dbt: $(STAMP) $(DBT_STAMP) ## dbt in .dbt-venv: `dbt build` of sql/ on DuckDB and PostgreSQL equals the runner's marts
	COMMBOX_REQUIRE_DBT=1 COMMBOX_DBT=$(DBT_VENV)/bin/dbt $(BIN)/pytest -p no:cacheprovider tests/test_dbt.py tests/test_templates.py
