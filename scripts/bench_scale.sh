#!/usr/bin/env bash
# Benchmark at scale (issue 17): a folder of 100,000 messages listed through imapfs and through
# the FUSE floor (an in-memory fuser filesystem with imapfs's own session settings), every
# figure beside the floor's with the ratio and the goal, plus the "ask the kernel for less"
# experiments on the floor. Prints figures only: nothing about time is asserted.
# Usage: scripts/bench_scale.sh [--million]
#   --million (or BENCH_SCALE_MILLION=1) adds a 1,000,000-message folder (about 2 GB of
#   maildir, several minutes to write and index); BENCH_SCALE_MESSAGES sets the first size.
#   BENCH_SCALE_RDPLUS=1 first measures FUSE_READDIRPLUS_AUTO on the floor (`ls`, `ls -l`,
#   `find -printf`, each on a fresh mount, with and without it).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
if [ "${1:-}" = "--million" ]; then
    export BENCH_SCALE_MILLION=1
fi
if [ "${BENCH_SCALE_RDPLUS:-0}" = 1 ]; then
    cargo test --release --test bench_scale -- --ignored --nocapture bench_readdirplus_auto
fi
cargo test --release --test bench_scale -- --ignored --nocapture --exact bench_scale
