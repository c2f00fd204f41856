#!/usr/bin/env bash
# The pg_regress contract suite (pg_test/) against a throwaway cluster, always stopped afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_REGRESS=$BIN/../lib/pgxs/src/test/regress/pg_regress
dir=$(mktemp -d /tmp/pg_authz_regress.XXXXXX)
port=$(scripts/free_port.sh)
trap 'scripts/cluster.sh stop "$dir"' EXIT
scripts/cluster.sh start "$dir" "$port"
"$BIN/createdb" -h "$dir" -p "$port" -U postgres pg_authz_regress
out=target/regress
rm -rf "$out"; mkdir -p "$out"
tests=$(ls pg_test/sql/*.sql | xargs -n1 basename | sed 's/\.sql$//' | sort)
status=0
"$PG_REGRESS" --use-existing --bindir="$BIN" --host="$dir" --port="$port" --user=postgres \
    --inputdir=pg_test --outputdir="$out" --dbname=pg_authz_regress $tests || status=$?
if [ $status -ne 0 ] && [ -f "$out/regression.diffs" ]; then
    head -c 20000 "$out/regression.diffs"
fi
exit $status
