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

.PHONY: help setup setup-ml setup-airflow setup-monitoring setup-browser data train run test test-fast lint bench bench-trees

help:  ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

setup: setup-ml setup-airflow setup-monitoring setup-browser  ## create both pinned environments, install Prometheus and Chromium (idempotent)

setup-ml:
	@scripts/setup_env.sh ml dev

setup-airflow:
	@scripts/setup_env.sh airflow

setup-monitoring:
	@scripts/setup_monitoring.sh

setup-browser:
	@scripts/setup_browser.sh

data: setup-ml  ## get the real dataset (DATA=<csv>, ../shared/data, or Kaggle); prints its path
	@$(ML_PY) -m data.fetch $(if $(DATA),--source "$(DATA)")

train: setup-ml  ## run the TFX pipeline on DATA=<csv or folder>, push the blessed model under MODEL_DIR
	@$(ML_PY) -m tfx_modules.train --data "$(DATA)" $(if $(MODEL_DIR),--model-dir "$(MODEL_DIR)")

run: setup  ## the main job: start the stack, run the DAG on the real (or generated) data, send traffic, run the monitor
	@data="$$($(ML_PY) -m data.fetch --or-generate)" && $(AIRFLOW_BIN)/python scripts/stack.py run "$$data"

PYTEST_ARGS ?=
FAST_TESTS := not slow and not docker

test: setup  ## the full suite as CI runs it: docker tests beside the rest on two workers (PYTEST_ARGS='-k x' adds pytest options)
	@scripts/test_suite.sh $(PYTEST_ARGS)

test-fast: setup-ml  ## the development loop (~2 min): no TFX training, Airflow run or Docker; shuffled, two workers
	@$(ML_PY) -m pytest -m "$(FAST_TESTS)" -p randomly -n 2 --dist loadfile --no-loadscope-reorder --durations=10 $(PYTEST_ARGS)

lint: setup-ml  ## ruff, and the layers contract (lint-imports: pyproject.toml's [tool.importlinter])
	@$(ML_PY) -m ruff check . && $(ML_PY) -m ruff format --check . && $(CURDIR)/.venvs/ml/bin/lint-imports

bench: setup-ml  ## model vs LightGBM, XGBoost, CatBoost on three splits of the real data, ratio as recorded and recomputed (bench/results/train_quality.json)
	@$(ML_PY) -m pip install --quiet -r requirements/bench.in -c requirements/ml.lock
	@$(ML_PY) -m bench.train_quality

bench-trees: setup-ml  ## the model's tree settings tried on the three seeds' splits, in seconds (bench/results/tree_search.json)
	@$(ML_PY) -m bench.tree_search

# Serving (serving/): the local TF Serving stand-in, its client and benchmark.
PORT ?= 8501
.PHONY: serve predict bench-serving

serve: setup-ml  ## serve the newest version under MODEL_DIR on 127.0.0.1:PORT (TF Serving REST API, hot swap)
	@$(ML_PY) -m serving.server $(if $(MODEL_DIR),--model-dir "$(MODEL_DIR)") --port "$(PORT)"

predict: setup-ml  ## print probability and label from the server on PORT for ROWS=<json|csv> (default 5 generated rows)
	@$(ML_PY) -m serving.client --url "http://127.0.0.1:$(PORT)" $(if $(ROWS),--file "$(ROWS)",--generate 5)

bench-serving: setup-ml  ## serving latency/throughput vs in-process and a swap under load (bench/results/serving.json)
	@$(ML_PY) -m bench.serving_load $(if $(MODEL_DIR),--model-dir "$(MODEL_DIR)")

# Rollouts (serving/rollout_controller.py): shadow, canary steps, promote or roll back, through the running gateway.
VERSION_DIR ?=
STAGES ?=
SHADOW_REQUESTS ?=
CANARY_STEPS ?=
STEP_REQUESTS ?=
.PHONY: rollout bench-rollout
ROLLOUT_FLAGS = $(if $(STAGES),--stages "$(STAGES)") $(if $(SHADOW_REQUESTS),--shadow-requests "$(SHADOW_REQUESTS)") \
	$(if $(CANARY_STEPS),--canary-steps "$(CANARY_STEPS)") $(if $(STEP_REQUESTS),--step-requests "$(STEP_REQUESTS)")

rollout: setup-ml  ## roll VERSION_DIR=<pushed version> out on the local stack [STAGES= SHADOW_REQUESTS= CANARY_STEPS= STEP_REQUESTS=]; last line: the verdict
	@test -n "$(VERSION_DIR)" || { echo "usage: make rollout VERSION_DIR=<pushed SavedModel version folder>" >&2; exit 2; }
	@$(ML_PY) -m serving.rollout_controller "$(VERSION_DIR)" $(ROLLOUT_FLAGS)

bench-rollout: setup-ml  ## null-case promotions, a unit error caught, time to rollback, mirroring's added p99 at 200 req/s (bench/results/rollout.json)
	@$(ML_PY) -m bench.rollout

# Retraining DAG (dags/): Airflow on this machine, one DAG run, the DAG's benchmark.
BATCH ?=
CONF ?= {}
.PHONY: up down run-dag bench-dag bench-scale bench-runners bench-celery dashboards

up: setup  ## start the local stack: Prometheus, Alertmanager, StatsD bridge, model server, Airflow (UI :8080)
	@$(AIRFLOW_BIN)/python scripts/stack.py up

down:  ## stop what `make up` started
	@$(AIRFLOW_BIN)/python scripts/stack.py down

run-dag: setup  ## one DAG run on BATCH=<csv> (CONF='{"force_retrain": true}'); to the running Airflow if up; last line: the outcome
	@$(AIRFLOW_BIN)/python scripts/airflow_local.py run-dag $(if $(BATCH),"$(BATCH)") --conf '$(CONF)'

dashboards: setup-ml  ## draw the Grafana dashboards from the local Prometheus as HTML (no Docker needed); prints the paths
	@$(ML_PY) -m monitoring.dashboard_page

bench-dag: setup  ## drift gate, pipeline alone vs retraining DAG run (same data), no-drift runs (bench/results/dag.json)
	@$(ML_PY) -m bench.drift_gate

bench-scale: setup-ml  ## pipeline and drift gate on 32k, 320k and 3.2M generated rows: time, peak memory (bench/results/scale.json)
	@$(ML_PY) -m bench.scale $(if $(SIZES),--sizes $(SIZES))

bench-runners: setup-ml  ## the pipeline on the DirectRunner (in memory, multi-process) and the portable runner (bench/results/runners.json)
	@$(ML_PY) -m bench.runners

bench-celery: setup  ## one retraining DAG run, CeleryExecutor (2 workers) vs LocalExecutor (bench/results/celery.json)
	@$(ML_PY) -m bench.celery

# Live monitoring: traffic through the gateway (which logs every prediction), one monitoring DAG run, benchmark.
RATE ?= 20
SHIFT ?=
FILE ?=
.PHONY: run-monitor traffic outcomes bench-monitoring bench-outcomes

run-monitor: setup  ## one live-monitoring DAG run on the predictions logged since the last (CONF='{"min_predictions": 500}'); last line: its outcome
	@$(AIRFLOW_BIN)/python scripts/airflow_local.py run-monitor --conf '$(CONF)'

traffic: setup-ml  ## replay ROWS=<csv> (default: 500 generated rows) through the REST API at RATE=<per s> [SHIFT=<feature>=<factor>]
	@$(ML_PY) -m serving.traffic $(if $(ROWS),--rows "$(ROWS)") --rate "$(RATE)" $(if $(SHIFT),--shift "$(SHIFT)")

outcomes: setup-ml  ## drop FILE=<csv> of application_id,loan_status[,observed_at] into the outcome intake (the next run-monitor takes it in)
	@test -n "$(FILE)" || { echo "usage: make outcomes FILE=<csv>" >&2; exit 2; }
	@$(ML_PY) -m outcomes.intake drop "$(FILE)"

bench-outcomes: setup-ml  ## outcome join and performance on 100k predictions, CBPE against realized AUC over 20 windows (bench/results/outcomes.json)
	@$(ML_PY) -m bench.outcomes

bench-monitoring: setup  ## logging overhead, log throughput, a monitoring run on 100k predictions, false alarms (bench/results/monitoring.json)
	@$(ML_PY) -m bench.monitoring

# Fault drills (testing/fault_drills.py; the tests marked `faults` assert their bounds).
.PHONY: bench-faults

bench-faults: setup  ## kill -9 of model server, gateway, StatsD bridge, Prometheus: time to recover; alerts with channels down (bench/results/faults.json)
	@$(ML_PY) -m bench.faults $(if $(MODEL_DIR),--model-dir "$(MODEL_DIR)")

# The compose stack on a real Docker engine (containers/): the user's engine, or a private dockerd when root.
# AIRGAP=1 builds every image from a local Debian and PyPI (docker-compose.airgap.yml); PURGE=1 drops the volumes;
# CELERY=1 runs the tasks on the CeleryExecutor (the `celery` profile: Redis and CELERY_WORKERS airflow-worker replicas).
AIRGAP ?=
PURGE ?=
CELERY ?=
.PHONY: setup-docker images compose-up compose-down compose-run compose-rollout bench-compose

setup-docker:
	@scripts/setup_docker.sh

images: setup-ml setup-docker  ## build the stack's images (AIRGAP=1: from a local Debian and PyPI only)
	@$(ML_PY) -m containers.images $(if $(AIRGAP),--airgap)

compose-up: setup-ml setup-docker  ## build what is missing, start the compose stack, print the URLs and login
	@$(ML_PY) -m containers.stack up $(if $(AIRGAP),--airgap) $(if $(CELERY),--celery)

compose-down:  ## stop the compose stack (volumes kept unless PURGE=1) and a private dockerd
	@$(ML_PY) -m containers.stack down $(if $(PURGE),--purge)

compose-run: setup-ml setup-docker  ## the main job inside the compose stack: real data in, DAG over REST, outcome
	@data="$$($(ML_PY) -m data.fetch --or-generate)" && $(ML_PY) -m containers.stack run "$$data" $(if $(AIRGAP),--airgap) $(if $(CELERY),--celery)

compose-rollout: setup-ml setup-docker  ## roll VERSION=<pushed version> out over the compose stack's two model containers [STAGES= SHADOW_REQUESTS= CANARY_STEPS= STEP_REQUESTS=]
	@test -n "$(VERSION)" || { echo "usage: make compose-rollout VERSION=<a version under the stack's models/credit_risk/>" >&2; exit 2; }
	@$(ML_PY) -m containers.stack rollout "$(VERSION)" $(ROLLOUT_FLAGS)

bench-compose: setup-ml setup-docker  ## image build, up, swap, gateway figures; CELERY=1: up and a DAG run per executor
	@$(ML_PY) -m bench.compose $(if $(AIRGAP),--airgap) $(if $(CELERY),--celery)
