#!/bin/sh
# The official postgres image's entrypoint contract, for the local-build stand-in (deploy/local/
# Dockerfile, target postgres; `make up-local`): on the first start (no PG_VERSION in PGDATA)
# initdb with POSTGRES_USER / POSTGRES_PASSWORD (password auth over TCP, trust on the socket
# inside the container), POSTGRES_DB, then /docker-entrypoint-initdb.d/*.sql and *.sh on a
# socket-only server; then the server on every interface. Any other command runs as given.
set -eu
if [ "${1:-postgres}" != postgres ]; then
    exec "$@"
fi
[ "$#" -gt 0 ] && shift
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set (run make env)}"
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb --username="$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8 -D "$PGDATA" > /dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql" -w start > /dev/null
    if [ "$db" != postgres ]; then
        psql -v ON_ERROR_STOP=1 -h /var/run/postgresql -U "$user" -d postgres -c "CREATE DATABASE \"$db\"" > /dev/null
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sql) echo "entrypoint: running $f"; psql -v ON_ERROR_STOP=1 -q -h /var/run/postgresql -U "$user" -d "$db" -f "$f" ;;
            *.sh) echo "entrypoint: running $f"; . "$f" ;;
            *) ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop > /dev/null
    echo "entrypoint: PostgreSQL init process complete; ready for start up"
fi
exec postgres -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql "$@"
