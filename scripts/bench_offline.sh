#!/usr/bin/env bash
# Offline figures (issue 16): an offline start from the saved copy, ls -l and cached cat with
# the server gone beside the same online, how fast an uncached read fails, and how long the
# mount takes to be live and writable again once the server answers. Prints figures only:
# nothing about time is asserted.
# Usage: scripts/bench_offline.sh   (BENCH_OFFLINE_MESSAGES=N sets the folder size; 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo test --release --test bench_offline -- --ignored --nocapture bench_offline
