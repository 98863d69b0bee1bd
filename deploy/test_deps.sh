#!/usr/bin/env bash
# `make deps` (a prerequisite of `make test`): what the test suite needs besides the venv.
#  - Debian packages, installed when missing and running as root: docker.io and debootstrap (the
#    docker-runtime suite), docker-compose (compose file checks), chromium (browser suite).
#  - PostgreSQL and Redis on 127.0.0.1 (production-profile suite), started when not running.
# Never fatal: what cannot be set up is named in one line here, and the tests that need it fail
# naming it (pytest.fail in tests/browser, tests/docker, tests/production), never skip.
set -uo pipefail

missing=()
for pkg_cmd in docker.io:dockerd debootstrap:debootstrap docker-compose:docker-compose chromium:chromium; do
  pkg=${pkg_cmd%%:*}; cmd=${pkg_cmd##*:}
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "deps: installing Debian packages: ${missing[*]}"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
      echo "deps: could not install ${missing[*]} (apt-get failed); the tests that need them will fail naming them"
    fi
  else
    echo "deps: missing ${missing[*]}: install them (as root: apt-get install ${missing[*]}); the tests that need them will fail"
  fi
fi

pg_host=127.0.0.1
if command -v pg_isready >/dev/null && ! pg_isready -q -h $pg_host -p 5432; then
  if [[ -d /etc/postgresql ]] && command -v pg_ctlcluster >/dev/null; then
    ver=$(ls /etc/postgresql | sort -V | tail -1)
    echo "deps: starting PostgreSQL $ver"
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
    for _ in $(seq 30); do pg_isready -q -h $pg_host -p 5432 && break; sleep 1; done
  fi
fi
if ! command -v pg_isready >/dev/null || ! pg_isready -q -h $pg_host -p 5432; then
  echo "deps: PostgreSQL is not running on $pg_host:5432 (install postgresql, trust auth on loopback); the production suite will fail"
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  if command -v redis-server >/dev/null; then
    echo "deps: starting Redis"
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
    for _ in $(seq 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done
  fi
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 \
    || echo "deps: Redis is not running on 127.0.0.1:6379 (install redis-server); the production suite will fail"
fi
exit 0
