# The project's public commands. `make run` is the main job; `make test` runs the tests.
SHELL := /bin/bash
.DEFAULT_GOAL := help

export PYTHONPATH := $(CURDIR)
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
ML_PY := $(CURDIR)/.venvs/ml/bin/python
AIRFLOW_BIN := $(CURDIR)/.venvs/airflow/bin

DATA ?=
MODEL_DIR ?=

.PHONY: help setup setup-ml setup-airflow setup-monitoring data train run test lint bench

help:  ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

setup: setup-ml setup-airflow setup-monitoring  ## create both pinned environments, install Prometheus (idempotent)

setup-ml:
	@scripts/setup_env.sh ml

setup-airflow:
	@scripts/setup_env.sh airflow

setup-monitoring:
	@scripts/setup_monitoring.sh

data: setup-ml  ## get the real dataset (DATA=<csv>, ../shared/data, or Kaggle); prints its path
	@$(ML_PY) -m data.fetch $(if $(DATA),--source "$(DATA)")

train: setup-ml  ## run the TFX pipeline on DATA=<csv or folder>, push the blessed model under MODEL_DIR
	@$(ML_PY) -m tfx_modules.train --data "$(DATA)" $(if $(MODEL_DIR),--model-dir "$(MODEL_DIR)")

run: setup  ## the main job: start the stack, run the DAG on the real (or generated) data, print the outcome
	@data="$$($(ML_PY) -m data.fetch --or-generate)" && $(AIRFLOW_BIN)/python scripts/stack.py run "$$data"

test: setup  ## run the test suite
	@$(ML_PY) -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi; exit $$rc

lint: setup-ml  ## ruff
	@$(ML_PY) -m ruff check . && $(ML_PY) -m ruff format --check .

bench: setup-ml  ## model vs LightGBM on three splits of the real data, pipeline time (bench/results/train_quality.json)
	@$(ML_PY) -m pip install --quiet -r requirements/bench.in -c requirements/ml.lock
	@$(ML_PY) -m bench.train_quality

# Serving (serving/): the local TF Serving stand-in, its client and benchmark.
PORT ?= 8501
.PHONY: serve predict bench-serving

serve: setup-ml  ## serve the newest version under MODEL_DIR on 127.0.0.1:PORT (TF Serving REST API, hot swap)
	@$(ML_PY) -m serving.server $(if $(MODEL_DIR),--model-dir "$(MODEL_DIR)") --port "$(PORT)"

predict: setup-ml  ## print probability and label from the server on PORT for ROWS=<json|csv> (default 5 generated rows)
	@$(ML_PY) -m serving.client --url "http://127.0.0.1:$(PORT)" $(if $(ROWS),--file "$(ROWS)",--generate 5)

bench-serving: setup-ml  ## serving latency/throughput vs in-process and a swap under load (bench/results/serving.json)
	@$(ML_PY) -m bench.serving_load $(if $(MODEL_DIR),--model-dir "$(MODEL_DIR)")

# Retraining DAG (dags/): Airflow on this machine, one DAG run, the DAG's benchmark.
BATCH ?=
CONF ?= {}
.PHONY: up down run-dag bench-dag

up: setup  ## start the local stack: Prometheus, Alertmanager, StatsD bridge, model server, Airflow (UI :8080)
	@$(AIRFLOW_BIN)/python scripts/stack.py up

down:  ## stop what `make up` started
	@$(AIRFLOW_BIN)/python scripts/stack.py down

run-dag: setup  ## one DAG run on BATCH=<csv> (CONF='{"force_retrain": true}'); last line: the outcome
	@$(AIRFLOW_BIN)/python scripts/airflow_local.py run-dag $(if $(BATCH),"$(BATCH)") --conf '$(CONF)'

bench-dag: setup  ## drift gate on 32k rows, a retraining and a no-drift DAG run (bench/results/dag.json)
	@$(ML_PY) -m bench.drift_gate
