# Production images of pavedml (docker-compose.yaml builds all three). Needs BuildKit (the default
# builder since Docker 23); no `# syntax=` line, so no frontend image is pulled.
#
# Final targets
#   task     (default: the last stage) the step image. The docker step runner runs the full argv
#            `python -m pavedml <step> --use-case NAME --ds YYYY-MM-DD ...` in it, so it has no
#            ENTRYPOINT; its CMD only prints the help. Tag: pavedml-task:<git commit>.
#   mlflow   the MLflow tracking server: the task image + Flask-WTF (mlflow[auth]) + the basic-auth
#            config (deploy/mlflow-auth.ini) and deploy/mlflow_init.py.
#   serve    the prediction service (python -m pavedml serve): the step runtime + its command.
#   airflow  apache/airflow extended the official way (USER airflow, constrained pip install) with
#            the pavedml package, the DAGs, plugins, use-case configs and the Feast repo.
#
#   docker build --build-arg GIT_COMMIT=$(git rev-parse --short HEAD) -t pavedml-task:$(git rev-parse --short HEAD) .
#   docker build --target airflow --build-arg GIT_COMMIT=... -t pavedml-airflow:... .
#   (or simply: docker compose build)
#
# Base image: BASE_IMAGE (pinned default) may be any Debian-like image with python3.11 and
# python3-venv, e.g. one imported with `docker load` on a machine without registry access:
#   docker build --build-arg BASE_IMAGE=debian-python311:bookworm ...
#
# Offline builds: fill ./wheelhouse/ with wheels for linux/CPython 3.11 of every pin, e.g.
#   pip wheel -w wheelhouse -r requirements.txt -r deploy/requirements-mlflow.txt 'setuptools>=68' wheel
# and build with --build-arg WHEELHOUSE=1 (or --build-arg PIP_NO_INDEX=1): pip then runs with
# --no-index --find-links /wheelhouse. How the wheels get in: the `wheels` stage COPYs ./wheelhouse
# (a wildcard COPY, so the folder may be absent in online builds) and every pip step BIND-MOUNTS
# that stage at /wheelhouse; no wheel ends up in a layer of a final image.
#
# Nothing environment-specific is baked in: no URL, host name or credential. Those come from the
# compose file / .env at run time.

ARG BASE_IMAGE=python:3.11.11-slim-bookworm
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
ARG GIT_COMMIT=unknown

# ---------------------------------------------------------------------------------------------
# Optional wheelhouse (see above). requirements.txt is copied along so /wheelhouse always exists.
FROM scratch AS wheels
COPY requirements.txt wheelhous[e] /wheelhouse/

# ---------------------------------------------------------------------------------------------
# What every Python image shares: the interpreter check and the non-root user.
FROM ${BASE_IMAGE} AS base
ENV LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN set -eux; \
    python3 -c 'import sys, venv; assert sys.version_info[:2] == (3, 11), sys.version'; \
    useradd --uid 50000 --gid 0 --home-dir /home/pavedml --create-home --shell /usr/sbin/nologin pavedml; \
    mkdir -p /opt/pavedml /var/lib/pavedml; \
    chown 50000:0 /var/lib/pavedml; \
    chmod 0770 /var/lib/pavedml

# ---------------------------------------------------------------------------------------------
# The package as a wheel (pure Python): installed into the task venv and into the Airflow image.
FROM base AS pkg
ARG WHEELHOUSE=
ARG PIP_NO_INDEX
COPY deploy/pip-install.sh /usr/local/bin/pip-install.sh
RUN python3 -m venv /opt/build-venv
WORKDIR /src
COPY pyproject.toml ./
COPY include/pavedml ./include/pavedml
RUN --mount=type=bind,from=wheels,source=/wheelhouse,target=/wheelhouse \
    sh /usr/local/bin/pip-install.sh /opt/build-venv/bin/pip wheel --no-deps --wheel-dir /dist .

# ---------------------------------------------------------------------------------------------
# The virtualenv: pinned requirements, then the package without dependencies, byte-compiled.
FROM base AS builder
ARG WHEELHOUSE=
ARG PIP_NO_INDEX
COPY deploy/pip-install.sh /usr/local/bin/pip-install.sh
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY requirements.txt ./
RUN --mount=type=bind,from=wheels,source=/wheelhouse,target=/wheelhouse \
    sh /usr/local/bin/pip-install.sh /opt/venv/bin/pip install --requirement requirements.txt
# pip install --no-deps . (from the wheel built above). pip byte-compiles what it installs, so a
# change of the package rebuilds only this small layer (no compileall over the whole venv).
RUN --mount=type=bind,from=pkg,source=/dist,target=/dist \
    set -eu; \
    /opt/venv/bin/pip install --no-cache-dir --no-deps --no-index /dist/pavedml-*.whl; \
    /opt/venv/bin/python -m pavedml --help >/dev/null

# MLflow server extras (Flask-WTF), installed aside and byte-compiled for their final path.
FROM builder AS mlflow-extras
COPY deploy/requirements-mlflow.txt ./
RUN --mount=type=bind,from=wheels,source=/wheelhouse,target=/wheelhouse \
    set -eu; \
    sh /usr/local/bin/pip-install.sh /opt/venv/bin/pip install --no-deps --target /extras \
        --requirement requirements-mlflow.txt --constraint requirements.txt; \
    /opt/venv/bin/python -m compileall -q -d /opt/venv/lib/python3.11/site-packages /extras

# ---------------------------------------------------------------------------------------------
# The step runtime: venv, use-case configs and Feast repo; runs as pavedml (uid 50000).
FROM base AS runtime
ARG GIT_COMMIT
LABEL org.opencontainers.image.title="pavedml-task" \
      org.opencontainers.image.description="pavedml pipeline steps: python -m pavedml <step> --use-case NAME --ds YYYY-MM-DD" \
      org.opencontainers.image.revision=$GIT_COMMIT
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PAVEDML_GIT_COMMIT=$GIT_COMMIT \
    PAVEDML_DATA_ROOT=/var/lib/pavedml \
    PAVEDML_USE_CASES_DIR=/opt/pavedml/include/use_cases \
    PAVEDML_FEAST_REPO=/opt/pavedml/feature_repo \
    MPLBACKEND=Agg
COPY --from=builder /opt/venv /opt/venv
COPY include/use_cases /opt/pavedml/include/use_cases
COPY feature_repo /opt/pavedml/feature_repo
WORKDIR /opt/pavedml
USER 50000
CMD ["python", "-m", "pavedml", "--help"]

# ---------------------------------------------------------------------------------------------
# MLflow tracking server (compose service `mlflow`; the command with the store URIs is there).
FROM runtime AS mlflow
ARG GIT_COMMIT
LABEL org.opencontainers.image.title="pavedml-mlflow" \
      org.opencontainers.image.revision=$GIT_COMMIT
COPY --from=mlflow-extras /extras/ /opt/venv/lib/python3.11/site-packages/
COPY deploy/mlflow-auth.ini /etc/mlflow/auth.ini
COPY deploy/mlflow_init.py /opt/pavedml/deploy/mlflow_init.py
ENV MLFLOW_AUTH_CONFIG_PATH=/etc/mlflow/auth.ini
USER 50000
EXPOSE 5000
CMD ["mlflow", "server", "--help"]

# ---------------------------------------------------------------------------------------------
# Airflow (api-server, scheduler, dag-processor, triggerer, celery worker): the official image
# extended the documented way. Steps never run here (PAVEDML_RUNTIME=docker): only what DAG
# parsing and the docker step runner (DockerHook of the docker provider) need is added, pinned from requirements.txt, with
# apache-airflow itself held at the image's version.
FROM ${AIRFLOW_IMAGE} AS airflow
ARG GIT_COMMIT
ARG WHEELHOUSE=
ARG PIP_NO_INDEX
ARG AIRFLOW_VERSION=3.3.2
LABEL org.opencontainers.image.title="pavedml-airflow" \
      org.opencontainers.image.revision=$GIT_COMMIT
USER root
RUN set -eux; \
    mkdir -p /opt/pavedml /var/lib/pavedml; \
    chown airflow:0 /var/lib/pavedml; \
    chmod 0770 /var/lib/pavedml
COPY deploy/pip-install.sh /usr/local/bin/pip-install.sh
COPY requirements.txt /opt/pavedml/requirements.txt
USER airflow
RUN --mount=type=bind,from=wheels,source=/wheelhouse,target=/wheelhouse \
    --mount=type=bind,from=pkg,source=/dist,target=/tmp/dist \
    set -eu; \
    python -c "import airflow, sys; sys.exit(airflow.__version__ != '${AIRFLOW_VERSION}' and 'image has Airflow ' + airflow.__version__)"; \
    grep -iE '^(apache-airflow-providers-docker|docker)==' /opt/pavedml/requirements.txt > /tmp/requirements-airflow.txt; \
    sh /usr/local/bin/pip-install.sh pip install "apache-airflow==${AIRFLOW_VERSION}" --requirement /tmp/requirements-airflow.txt; \
    sh /usr/local/bin/pip-install.sh pip install --no-deps /tmp/dist/pavedml-*.whl; \
    rm /tmp/requirements-airflow.txt; \
    python -c "import pavedml.airflow.factory, pavedml.airflow.docker_step, airflow.providers.docker.hooks.docker"
COPY dags/ /opt/airflow/dags/
COPY plugins/ /opt/airflow/plugins/
COPY include/ /opt/pavedml/include/
COPY feature_repo/ /opt/pavedml/feature_repo/
ENV PAVEDML_USE_CASES_DIR=/opt/pavedml/include/use_cases \
    PAVEDML_FEAST_REPO=/opt/pavedml/feature_repo \
    PAVEDML_DATA_ROOT=/var/lib/pavedml
USER airflow

# ---------------------------------------------------------------------------------------------
# The online prediction service (compose service `serving`): the step runtime whose command is
# `python -m pavedml serve`, on all interfaces of its container, bearer token required (from
# PAVEDML_SERVING_TOKEN at run time); the use case is the compose file's choice.
FROM runtime AS serve
ARG GIT_COMMIT
LABEL org.opencontainers.image.title="pavedml-serve" \
      org.opencontainers.image.description="pavedml prediction service: python -m pavedml serve --use-case NAME" \
      org.opencontainers.image.revision=$GIT_COMMIT
USER 50000
EXPOSE 8600
CMD ["python", "-m", "pavedml", "serve", "--use-case", "telco_churn", "--host", "0.0.0.0", "--port", "8600", "--require-token"]

# ---------------------------------------------------------------------------------------------
# Default target: the step image.
FROM runtime AS task
USER 50000
