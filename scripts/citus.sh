#!/usr/bin/env bash
# Citus for pg_authz's tests: use an installed Citus when present, otherwise build the vendored
# Citus 13.2.2 (with the PostgreSQL 15.20 patch beside it) once, in a cache outside the repository,
# and install it into the PostgreSQL that PG_CONFIG names. Idempotent; safe from make, CI (root, no
# stdin) and the test harness: exit 0 when Citus is installed, a message and non-zero otherwise.
#
#   CITUS_VENDOR_DIR  the folder holding citus-13.2.2.tar.gz and its patch
#                     (default: ../shared/vendor relative to the repository root)
#   CITUS_CACHE_DIR   where the unpacked, built tree is kept between runs
#                     (default: /var/cache/pg_authz-citus as root, else ~/.cache/pg_authz/citus)
#   PG_CONFIG / PG_BIN  the PostgreSQL to build against (default: PostgreSQL 15's pg_config)
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

CITUS_VERSION=13.2.2
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
VENDOR_DIR="${CITUS_VENDOR_DIR:-$REPO_ROOT/../shared/vendor}"
if [ -n "${PG_CONFIG:-}" ]; then :
elif [ -n "${PG_BIN:-}" ]; then PG_CONFIG="$PG_BIN/pg_config"
else PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config; fi
if [ "$(id -u)" -eq 0 ]; then DEFAULT_CACHE=/var/cache/pg_authz-citus; else DEFAULT_CACHE="$HOME/.cache/pg_authz/citus"; fi
CACHE_DIR="${CITUS_CACHE_DIR:-$DEFAULT_CACHE}"

die() { echo "citus.sh: $*" >&2; exit 1; }

[ -x "$PG_CONFIG" ] || die "pg_config not found at $PG_CONFIG (set PG_CONFIG or PG_BIN)"
PKGLIBDIR="$("$PG_CONFIG" --pkglibdir)"
SHAREDIR="$("$PG_CONFIG" --sharedir)"

installed() { [ -f "$PKGLIBDIR/citus.so" ] && [ -f "$SHAREDIR/extension/citus.control" ]; }

if installed; then
    echo "citus.sh: Citus already installed ($PKGLIBDIR/citus.so, $(grep -h default_version "$SHAREDIR/extension/citus.control" | tr -d "'" | sed 's/.*= *//')); nothing to do"
    exit 0
fi

TARBALL="$VENDOR_DIR/citus-$CITUS_VERSION.tar.gz"
PATCH="$VENDOR_DIR/citus-$CITUS_VERSION-pg15.20.patch"
[ -f "$TARBALL" ] || die "Citus is not installed and $TARBALL is missing (set CITUS_VENDOR_DIR, or install Citus from its packages)"
[ -f "$PATCH" ] || die "Citus is not installed and $PATCH is missing (set CITUS_VENDOR_DIR)"

SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo -n"

# Build dependencies (the vendor README's measured list, plus the compiler and make).
PACKAGES=(build-essential liblz4-dev libzstd-dev libcurl4-openssl-dev libkrb5-dev libselinux1-dev libpam0g-dev flex bison autoconf)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "citus.sh: installing build dependencies: ${missing[*]}"
    $SUDO apt-get update -q </dev/null || die "apt-get update failed"
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null \
        || die "could not install ${missing[*]}"
fi

# One build at a time (make -j and the test harness may call this concurrently).
mkdir -p "$CACHE_DIR" || die "cannot create cache directory $CACHE_DIR (set CITUS_CACHE_DIR)"
exec 9>"$CACHE_DIR/.lock"
flock 9
if installed; then echo "citus.sh: Citus installed by a concurrent run"; exit 0; fi

# The tree depends on the sources and on the PostgreSQL it is built against; a safe name only.
STAMP="$( (sha256sum "$TARBALL" "$PATCH"; "$PG_CONFIG" --version; echo "$PKGLIBDIR") | sha256sum | cut -c1-16)"
SRC="$CACHE_DIR/citus-$CITUS_VERSION-$STAMP"
LOG="$CACHE_DIR/build-$STAMP.log"
start=$(date +%s)
if [ ! -f "$SRC/.built" ]; then
    echo "citus.sh: building Citus $CITUS_VERSION in $SRC (about 2 minutes; log: $LOG)"
    rm -rf "$SRC" && mkdir -p "$SRC"
    tar -xzf "$TARBALL" -C "$SRC" || die "cannot unpack $TARBALL"
    (cd "$SRC" && patch -p1 --forward <"$PATCH") >"$LOG" 2>&1 || { cat "$LOG" >&2; die "patch failed"; }
    if ! (cd "$SRC" && ./configure PG_CONFIG="$PG_CONFIG" && make -j"$(nproc)") >>"$LOG" 2>&1; then
        tail -n 60 "$LOG" >&2
        die "Citus build failed (full log: $LOG)"
    fi
    touch "$SRC/.built"
else
    echo "citus.sh: using the cached build in $SRC"
fi
if ! (cd "$SRC" && $SUDO make install) >>"$LOG" 2>&1; then
    tail -n 30 "$LOG" >&2
    die "make install failed (full log: $LOG)"
fi
installed || die "make install finished but $PKGLIBDIR/citus.so is still missing"
echo "citus.sh: Citus $CITUS_VERSION installed into $PKGLIBDIR in $(( $(date +%s) - start ))s"
