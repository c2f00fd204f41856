#!/usr/bin/env bash
# make bench / make bench-quick: build and run the benchmark (it starts its own throwaway cluster,
# uses the installed release build of pg_authz, and writes BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-quick}
cargo bench --bench pg_authz_bench -- "$mode"
