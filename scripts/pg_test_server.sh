#!/usr/bin/env bash
# A private PostgreSQL cluster for the test suite, in a folder of its own (CI and developers alike).
#
#   scripts/pg_test_server.sh start DIR    initdb + start; prints the URL to export as
#                                          QUEUECTL_TEST_POSTGRES_URL (and writes it to DIR/url)
#   scripts/pg_test_server.sh restart DIR  pg_ctl restart -m fast (the fault tests use it)
#   scripts/pg_test_server.sh stop DIR     stop the server (DIR is left for the caller to delete)
#
# The server listens on 127.0.0.1 on a random free port, its unix socket lives in DIR, and it takes
# only password (scram) logins with a random password. PostgreSQL refuses to run as root, so as root
# the cluster belongs to the unprivileged user "nobody". Binaries: PATH, else Debian's newest
# /usr/lib/postgresql/*/bin (apt-get install -y postgresql).
set -euo pipefail

usage() {
    echo "usage: $0 start|restart|stop DIR" >&2
    exit 2
}
[ $# -eq 2 ] || usage
action=$1
dir=$(realpath -m "$2")

bindir=""
if ! command -v pg_ctl >/dev/null 2>&1 || ! command -v initdb >/dev/null 2>&1; then
    bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -z "$bindir" ]; then
        echo "$0: PostgreSQL is not installed (apt-get install -y postgresql)" >&2
        exit 1
    fi
    bindir="$bindir/"
fi

as_owner() { # run a PostgreSQL binary as the cluster's owner
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u nobody -- "$@"
    else
        "$@"
    fi
}

pg_ctl_() {
    as_owner "${bindir}pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 "$@" >/dev/null
}

case "$action" in
start)
    mkdir -p "$dir"
    chmod 700 "$dir"
    [ "$(id -u)" -ne 0 ] || chown nobody "$dir"
    password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    umask 077
    printf '%s\n' "$password" >"$dir/pwfile"
    [ "$(id -u)" -ne 0 ] || chown nobody "$dir/pwfile"
    as_owner "${bindir}initdb" -D "$dir/data" -U queuectl --pwfile="$dir/pwfile" --auth=scram-sha-256 \
        -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        exit 1
    }
    rm -f "$dir/pwfile"
    cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    pg_ctl_ start || {
        cat "$dir/server.log" >&2
        exit 1
    }
    url="postgresql://queuectl:$password@127.0.0.1:$port/postgres"
    printf '%s\n' "$url" >"$dir/url"
    echo "$url"
    ;;
restart) pg_ctl_ restart -m fast ;;
stop) pg_ctl_ stop -m fast ;;
*) usage ;;
esac
