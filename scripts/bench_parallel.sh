#!/usr/bin/env bash
# Benchmark of parallel readers (issue 17): `ls | xargs -P4 -n 200 cat` of a 10,000-message
# folder and 8 readers over 8 folders, each on a fresh mount, beside the raw client with 1 and
# with 4 connections fetching the same bytes (implicit TLS, loopback, release build). Prints
# figures and ratios only: nothing about time is asserted.
# Usage: scripts/bench_parallel.sh [BEFORE_BINARY]
#   BEFORE_BINARY (or BENCH_PARALLEL_BEFORE): another imapfs binary measured in the same rounds
#   (e.g. a release build of an older commit). Knobs: BENCH_PARALLEL_MESSAGES (10000),
#   BENCH_PARALLEL_RUNS (2), BENCH_PERF (a directory for perf profiles of each imapfs figure).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
if [ -n "${1:-}" ]; then
    BENCH_PARALLEL_BEFORE="$(realpath "$1")"
    export BENCH_PARALLEL_BEFORE
fi
cargo test --release --test bench_parallel -- --ignored --nocapture bench_parallel
