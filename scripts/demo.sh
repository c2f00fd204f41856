#!/usr/bin/env bash
# `make demo`: a throwaway cluster, the cryo-EM example platform, locally minted tokens, and what
# each identity sees of the same query. Exits 0 and leaves nothing running (--shell keeps psql open).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d /tmp/pg_authz_demo.XXXXXX)
port=$(scripts/free_port.sh)
trap 'scripts/cluster.sh stop "$dir"' EXIT
scripts/cluster.sh start "$dir" "$port"
sql() { psql -X -q -h "$dir" -p "$port" -U "$1" -d postgres -v ON_ERROR_STOP=1 "${@:2}"; }
secret="demo-secret-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
mint() { python3 tests/tools/mint_hs256.py "$secret" demo-key "$@"; }

echo "== setting up: extension, example platform (policies/examples/cryoem_sessions.sql), key, logins"
sql postgres -c "CREATE EXTENSION pg_authz"
sql postgres -c "LOAD 'pg_authz'" -c "ALTER SYSTEM SET authz.audit = 'all'" -c "SELECT pg_reload_conf()" >/dev/null
sql postgres -f policies/examples/cryoem_sessions.sql >/dev/null
sql postgres -c "SELECT authz.add_key('demo-key', 'HS256', '$secret')" >/dev/null
sql postgres >/dev/null <<'SQL'
CREATE ROLE app LOGIN;            -- the web application's pooled login: no rights of its own
CREATE ROLE ann LOGIN;            -- an analyst with her own psql login
GRANT SELECT, INSERT, UPDATE, DELETE ON images TO app, ann;
GRANT SELECT ON sessions, projects TO app, ann;
SELECT authz.create_principal('ann', 'user', 'ann');
SELECT authz.assign_role('ann', 'viewer', 'session', '12');
SQL

query="SELECT s.name AS session, count(*) AS images FROM images i JOIN sessions s ON s.id = i.session_id GROUP BY 1 ORDER BY 1"
as_token() { # who token
    echo; echo "== $1 (app login, token for '$1', SET LOCAL inside a transaction)"
    sql app -c "BEGIN" -c "SET LOCAL authz.token = '$2'" -c "$query" -c "COMMIT"
}
as_token admin1 "$(mint admin1)"
as_token operator1 "$(mint operator1)"
as_token viewer1 "$(mint viewer1)"
as_token member1 "$(mint member1)"
echo; echo "== anonymous (app login, no token): only the public project"
sql app -c "$query"
echo; echo "== ann in psql on her own login (no token needed): her session 12 and the public tutorial"
sql ann -c "$query"
echo; echo "== ann tries to escape"
sql ann -c "SET row_security = off" -c "SELECT count(*) FROM images" 2>&1 | sed 's/^/   /' || true
echo; echo "== a forged token (signed with another secret) is rejected"
forged=$(python3 tests/tools/mint_hs256.py "not-the-real-secret-not-the-real-secret" demo-key admin1)
set +e
out=$(psql -X -h "$dir" -p "$port" -U app -d postgres -v VERBOSITY=verbose -c "BEGIN" -c "SET LOCAL authz.token = '$forged'" -c "SELECT count(*) FROM images" 2>&1)
set -e
echo "$out" | grep -E "ERROR|DETAIL" | sed 's/^/   /'
echo "   SQLSTATE: $(echo "$out" | grep -oE 'ERROR:  [0-9A-Z]{5}' | awk '{print $2}')"
echo; echo "== deny beats allow: operator1 holds operator on project 1, but session 13 is under embargo"
sql postgres -c "SELECT outcome, effect, rule, granted_via FROM authz.explain('operator1', 'session', '13', 'read')"
echo; echo "== the audit lines those queries wrote to the server log"
grep -o 'pg_authz audit: .*' "$dir/server.log" | tail -n 12 | cut -c1-220
if [ "${1:-}" = "--shell" ]; then
    echo; echo "== psql as superuser; try: BEGIN; SET LOCAL authz.token = '$(mint viewer1)'; SELECT ..."
    psql -h "$dir" -p "$port" -U postgres -d postgres
fi
echo; echo "demo finished; the cluster is removed"
