#!/usr/bin/env bash
# Disk body cache benchmark (issue 16): grep -r over 10,000 messages read back from the disk
# cache after a remount, beside grep -r over the same maildir on local disk (goal: within
# 1.5x). Prints figures; asserts nothing about time. BENCH_MESSAGES (default 10000);
# BENCH_PERF=DIR records a `perf` profile of the daemon during the two warm greps there.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
./scripts/setup.sh
cargo test --release --test bench -- --ignored --nocapture disk_cache_grep
