#!/usr/bin/env bash
# Memory under read patterns (issue 17): the daemon's peak and steady RSS (VmRSS/VmHWM from
# /proc) with --cache-size 128M over a 10,000-message folder with a tail of big messages and a
# folder of 20-50 MB ones, each read pattern (cat in name order, grep -r, xargs -P4 cat, dd of
# random parts of big messages, .search, .parts, two folders at once) on a fresh mount and
# then all on one mount, each figure against the bound (cache + 64 MiB). Prints figures only.
# Knobs: BENCH_MEMORY_CACHE (MiB, 128), BENCH_MESSAGES (10000), BENCH_BIG_MB ("20,35,50").
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo test --release --test bench -- --ignored --nocapture memory_bound
