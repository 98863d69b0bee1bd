# The commands the README names. Everything runs from the project venv (.venv) on Python 3.11.
SHELL := /bin/bash
PY_VERSION ?= 3.11
VENV := .venv
PY := $(VENV)/bin/python
DATA_ROOT ?= $(CURDIR)/var
DAYS ?= 14
USE_CASE ?= telco_churn
# empty: the DAYS days ending today (UTC), so that unpausing a DAG after the demo finds data
START ?=

export PAVEDML_DATA_ROOT ?= $(DATA_ROOT)
export AIRFLOW_HOME ?= $(DATA_ROOT)/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION := True
export TQDM_DISABLE := 1
export GX_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export FEAST_USAGE := False

.PHONY: help venv install shellenv deps demo run test test-fast lint bench airflow status env image image-local docker-down up up-local down clean pins

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

# uv from PATH, else bootstrapped into .uv-bootstrap/ (never into the system's Python: PEP 668)
UV_BOOTSTRAP := .uv-bootstrap
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	@uv=$$(command -v uv || true); \
	if [ -z "$$uv" ]; then \
	  echo "uv not found: installing it into $(UV_BOOTSTRAP)/"; \
	  python3 -m venv $(UV_BOOTSTRAP) 2>/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null && python3 -m venv $(UV_BOOTSTRAP); } \
	    || { echo "make install: cannot create a venv: install python3-venv (Debian) or uv"; exit 1; }; \
	  $(UV_BOOTSTRAP)/bin/pip install -q uv || exit 1; \
	  uv=$(CURDIR)/$(UV_BOOTSTRAP)/bin/uv; \
	fi; \
	set -x; \
	$$uv venv --allow-existing --python $(PY_VERSION) $(VENV) && \
	$$uv pip install --python $(PY) --compile-bytecode -r requirements.txt -r requirements-dev.txt && \
	$$uv pip install --python $(PY) --compile-bytecode --no-deps -e .
	touch $@

install: $(VENV)/.installed  ## create .venv and install the pinned stack (idempotent)
	@# the project's own modules byte-compiled too (the editable install is not): with
	@# PYTHONDONTWRITEBYTECODE set, every step and DAG-parsing process would compile them again
	@$(PY) -m compileall -q -j 0 include dags plugins >/dev/null || true

demo: install  ## run every DAG end to end on SQLite + local stores: Telco simulated for DAYS (14) days ending today, or USE_CASE=<name> on its imported history
	$(PY) -m pavedml.tools.demo --use-case $(USE_CASE) --days $(DAYS) $(if $(START),--start $(START))

run: install  ## run one DAG for one day: make run DAG=<dag_id> DATE=<YYYY-MM-DD> [CONF='{"reason": "..."}']
	@test -n "$(DAG)" -a -n "$(DATE)" || { echo "usage: make run DAG=<dag_id> DATE=<YYYY-MM-DD> [CONF='<json>']"; exit 2; }
	$(PY) -m pavedml.airflow.devrun "$$DAG" "$$DATE" --conf "$$CONF"

shellenv:  ## print the project's environment for a shell: eval "$$(make -s shellenv)", then `airflow dags test ...`
	@echo 'export PATH="$(CURDIR)/$(VENV)/bin:$$PATH"'
	@for v in PAVEDML_DATA_ROOT AIRFLOW_HOME AIRFLOW__CORE__DAGS_FOLDER AIRFLOW__CORE__PLUGINS_FOLDER \
	  AIRFLOW__CORE__LOAD_EXAMPLES AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION TQDM_DISABLE GX_ANALYTICS_ENABLED \
	  MLFLOW_DISABLE_TELEMETRY DO_NOT_TRACK FEAST_USAGE; do printf 'export %s=%q\n' "$$v" "$${!v}"; done

deps:  ## what the tests need besides the venv: Debian packages (as root) and PostgreSQL/Redis running
	@bash deploy/test_deps.sh

# the suite's two pytest-xdist workers (tests/conftest.py groups the tests; TEST_WORKERS=0: one process)
TEST_WORKERS ?= 2

test: install deps lint  ## lint, then the full test suite (what CI runs; sets up its own services)
	$(PY) -m pytest $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder)

test-fast: install  ## DAG integrity and unit tests only
	$(PY) -m pytest -m "dags or unit"

lint: install  ## ruff (with Airflow AIR rules) on everything, mypy on the package
	$(VENV)/bin/ruff check dags plugins include tests benchmarks feature_repo deploy
	$(VENV)/bin/mypy

bench: install  ## benchmarks that take minutes (see benchmarks/README.md for the 1M/5M runs)
	$(PY) benchmarks/bench_dag_parse.py
	$(PY) benchmarks/bench_feature_pipeline.py --rows 100000 --reps 3
	$(PY) benchmarks/bench_training.py --rows 100000 --reps 3
	$(PY) benchmarks/bench_scoring.py --rows 100000 --reps 3
	$(PY) benchmarks/bench_psi.py --sizes 1000000 --skip-preset

status: install  ## one screen: champion, last DAG runs, latest PSI, open quarantines
	@$(PY) -m pavedml status --use-case $${USE_CASE:-telco_churn} 2>/dev/null

airflow: install  ## Airflow (UI on :8080, AIRFLOW_PORT) and the MLflow UI (:5000, MLFLOW_PORT) until Ctrl-C
	$(PY) -m pavedml.tools.devstack

# `docker compose` (v2) when the client has it, else Debian's docker-compose (v1)
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
export COMPOSE_PROJECT_NAME ?= pavedml
# the stack's secrets (make env writes it; never committed)
ENV_FILE ?= .env

env:  ## write .env with fresh random secrets for the production stack (never committed); an existing .env keeps its values and gets only what it lacks
	python3 deploy/gen_env.py --update --path $(ENV_FILE)

image:  ## build the task, Airflow and MLflow images (tag = git commit; needs a Docker engine)
	GIT_COMMIT=$$(git rev-parse --short HEAD) $(COMPOSE) --env-file $(ENV_FILE) build

image-local: install  ## without a registry: start dockerd if none runs, make the Debian base image, build pavedml-task:<commit> offline
	$(PY) deploy/docker_local.py up

docker-down:  ## stop the dockerd that image-local started (never one it found running), with all it started
	$(PY) deploy/docker_local.py down

up: image  ## start the production stack (docker-compose.yaml, registry images); UIs on 127.0.0.1 only
	GIT_COMMIT=$$(git rev-parse --short HEAD) $(COMPOSE) --env-file $(ENV_FILE) up -d

SMOKE ?= 1
up-local: install env  ## the production stack without a registry: every image built here, up, healthy, then a feature day, training and scoring through it (SMOKE=0: no day)
	$(PY) deploy/stack_local.py up --env-file $(ENV_FILE) $(if $(filter 1,$(SMOKE)),--smoke)

down:  ## stop the production stack (make up or up-local; volumes are kept, VOLUMES=1 removes them)
	$(PY) deploy/stack_local.py down --env-file $(ENV_FILE) $(if $(VOLUMES),--volumes)

clean:  ## remove generated data (var/)
	rm -rf $(DATA_ROOT)

pins:  ## re-resolve requirements*.txt from requirements*.in (see README "Refreshing the pins")
	uv pip compile requirements.in --python-version $(PY_VERSION) -o requirements.txt
	uv pip compile requirements-dev.in --python-version $(PY_VERSION) -o requirements-dev.txt
	uv pip compile deploy/local/requirements-local.in -c requirements.txt -c requirements-dev.txt --python-version $(PY_VERSION) -o deploy/local/requirements-local.txt
