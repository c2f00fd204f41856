#!/usr/bin/env bash
# Idempotent set-up of everything pg_authz needs to build and test on a fresh Debian bookworm
# machine: apt packages, cargo-pgrx 0.18.0, and `cargo pgrx init` against the system PostgreSQL 15.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
PACKAGES=(postgresql-15 postgresql-server-dev-15 libclang-dev clang pkg-config sudo pgbouncer postgresql-15-pgaudit)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
    # Debian starts a default cluster on 5432; pg_authz's tests use their own throwaway clusters.
fi

if ! cargo pgrx --version 2>/dev/null | grep -q "0.18.0"; then
    echo "setup: installing cargo-pgrx 0.18.0 (takes a few minutes)"
    cargo install cargo-pgrx --version 0.18.0 --locked --force
fi

PGRX_HOME="${PGRX_HOME:-$HOME/.pgrx}"
if ! grep -qs "pg15 = \"$PG_CONFIG\"" "$PGRX_HOME/config.toml"; then
    echo "setup: cargo pgrx init --pg15 $PG_CONFIG"
    cargo pgrx init --pg15 "$PG_CONFIG"
fi

# PyCasbin, the oracle of the Casbin tests (tests/casbin_oracle.rs), in the tests' Python
# environment target/pyenv (tests/python_client.rs adds psycopg there), under the same lock.
TARGET="${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target}"
PYCASBIN="casbin==1.43.0"
if ! "$TARGET/pyenv/bin/python" -c 'import casbin' 2>/dev/null; then
    echo "setup: installing $PYCASBIN into $TARGET/pyenv"
    mkdir -p "$TARGET"
    flock -w 600 "$TARGET/pyenv.lock" sh -c "
        set -e
        [ -x '$TARGET/pyenv/bin/python' ] || python3 -m venv '$TARGET/pyenv'
        '$TARGET/pyenv/bin/python' -m pip install --quiet --disable-pip-version-check --no-input '$PYCASBIN'"
fi
echo "setup: done"
