#!/bin/sh
# pip with the image build's index policy (used by the Dockerfile only).
#
#   sh deploy/pip-install.sh PIP SUBCOMMAND [ARGS...]     e.g.  sh pip-install.sh /opt/venv/bin/pip install -r requirements.txt
#
# Online (default): the configured package index (PIP_INDEX_URL etc. may be passed as build args).
# Offline: when the build arg WHEELHOUSE is non-empty or PIP_NO_INDEX=1, only the wheels of
# ./wheelhouse/ (bind-mounted at /wheelhouse) are used: --no-index --find-links /wheelhouse.
set -eu
pip="$1"
shift
sub="$1"
shift
offline=
[ -n "${WHEELHOUSE:-}" ] && offline=1
case "${PIP_NO_INDEX:-}" in 1|[Tt][Rr][Uu][Ee]|[Yy][Ee][Ss]|[Oo][Nn]) offline=1 ;; esac
if [ -n "$offline" ]; then
    if ! ls /wheelhouse/*.whl >/dev/null 2>&1; then
        echo "offline build (WHEELHOUSE/PIP_NO_INDEX set) but ./wheelhouse/ holds no wheels;" >&2
        echo "fill it first: pip wheel -w wheelhouse -r requirements.txt -r deploy/requirements-mlflow.txt 'setuptools>=68' wheel" >&2
        exit 1
    fi
    exec "$pip" "$sub" --no-cache-dir --no-index --find-links /wheelhouse "$@"
fi
exec "$pip" "$sub" --no-cache-dir "$@"
