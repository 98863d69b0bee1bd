#!/usr/bin/env bash
# The official apache/airflow image's entrypoint contract, for the local-build stand-in
# (deploy/local/Dockerfile, target airflow; `make up-local`), as docker-compose.yaml uses it:
# - waits for the metadata database (CONNECTION_CHECK_MAX_COUNT tries, 0 = no wait);
# - _AIRFLOW_DB_MIGRATE: `airflow db migrate`;
# - _AIRFLOW_WWW_USER_CREATE: the admin user (_AIRFLOW_WWW_USER_USERNAME / _PASSWORD), kept if it exists;
# - `bash ...` / `python ...` run as given; anything else is an airflow command (`celery worker`
#   -> `airflow celery worker`).
set -euo pipefail

if [[ "${CONNECTION_CHECK_MAX_COUNT:-20}" -gt 0 && "${1:-}" != bash && "${1:-}" != python ]]; then
    for ((i = 1; ; i++)); do
        if airflow db check > /dev/null 2>&1; then
            break
        fi
        if ((i >= ${CONNECTION_CHECK_MAX_COUNT:-20})); then
            echo "entrypoint: the metadata database is unreachable after $i tries; last error:" >&2
            airflow db check 2>&1 | tail -5 >&2 || true
            exit 1
        fi
        sleep "${CONNECTION_CHECK_SLEEP_TIME:-3}"
    done
fi
if [[ -n "${_AIRFLOW_DB_MIGRATE:-}" ]]; then
    airflow db migrate
fi
if [[ -n "${_AIRFLOW_WWW_USER_CREATE:-}" ]]; then
    : "${_AIRFLOW_WWW_USER_USERNAME:?}" "${_AIRFLOW_WWW_USER_PASSWORD:?}"
    airflow users create --role Admin --username "${_AIRFLOW_WWW_USER_USERNAME}" \
        --password "${_AIRFLOW_WWW_USER_PASSWORD}" --firstname Airflow --lastname Admin \
        --email "${_AIRFLOW_WWW_USER_EMAIL:-admin@example.com}"
fi
case "${1:-}" in
    bash | python) exec "$@" ;;
    *) exec airflow "$@" ;;
esac
