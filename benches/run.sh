#!/usr/bin/env bash
# make bench / make bench-quick: build and run the benchmarks (each starts its own throwaway
# clusters and uses the installed release build of pg_authz). The main benchmark rewrites
# BENCHMARKS.md; the scaling benchmark (issue #15) then replaces only its own section in it.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-quick}
cargo bench --bench pg_authz_bench -- "$mode"
cargo bench --bench scale -- "$mode"
