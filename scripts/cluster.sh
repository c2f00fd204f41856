#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster run as the postgres OS user (PostgreSQL refuses root).
#   scripts/cluster.sh start DIR PORT   initdb (if needed) and start; prints nothing else
#   scripts/cluster.sh stop DIR         stop fast and remove DIR
set -euo pipefail
BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
cmd=$1; dir=$2
as_pg() { if [ "$(id -un)" = postgres ]; then "$@"; else sudo -u postgres "$@"; fi; }
case "$cmd" in
start)
    port=$3
    mkdir -p "$dir"; chown postgres: "$dir" 2>/dev/null || true
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_pg "$BIN/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1
    fi
    as_pg "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
    ;;
stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_pg "$BIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
*) echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
