#!/usr/bin/env bash
# Prefetch figures (issues 15 and 16): prefetch=INBOX from mount to done beside a cold
# `cat INBOX/*` without it, `cat` of the folder offline afterwards, and a reader of another
# folder while the prefetch runs (it yields). Prints figures only: nothing about time is
# asserted.
# Usage: scripts/bench_prefetch.sh   (BENCH_PREFETCH_MESSAGES=N sets the folder size; 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo test --release --test bench_prefetch -- --ignored --nocapture bench_prefetch
