#!/usr/bin/env bash
# Disk body cache benchmark (issue 16): grep -r over 10,000 messages read back from the disk
# cache after a remount, beside grep -r over the same maildir on local disk (goal: within
# 1.5x). Prints figures; asserts nothing about time. BENCH_MESSAGES (default 10000);
# BENCH_PERF=DIR records a `perf` profile of the daemon during each grep there (the first
# mount's, which writes the cache, and the two warm ones).
# Usage: scripts/bench_cache.sh [BEFORE_BINARY]
#   BEFORE_BINARY (or BENCH_CACHE_BEFORE): another imapfs binary measured in the same rounds,
#   alternating with this build's; BENCH_CACHE_RUNS rounds (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
if [ -n "${1:-}" ]; then
    BENCH_CACHE_BEFORE="$(realpath "$1")"
    export BENCH_CACHE_BEFORE
fi
./scripts/setup.sh
cargo test --release --test bench -- --ignored --nocapture disk_cache_grep
