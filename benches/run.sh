#!/usr/bin/env bash
# make bench / make bench-quick: build and run the benchmarks (each starts its own throwaway
# clusters and uses the installed release build of pg_authz). The main benchmark rewrites
# BENCHMARKS.md; the scaling (issue #15) and Citus (issue #16) benchmarks then replace only their
# own sections in it. The Citus benchmark needs Citus (scripts/citus.sh installs or builds it).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-quick}
cargo bench --bench pg_authz_bench -- "$mode"
cargo bench --bench scale -- "$mode"
bash scripts/citus.sh
cargo bench --bench citus -- "$mode"
