#!/usr/bin/env bash
# Benchmarks: prints figures and ratios (no pass/fail on time). Environment knobs:
#   BENCH_MESSAGES (default 1000), BENCH_BIG_MB (50), BENCH_RTT_MS (20; 0 skips the delayed run)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
./scripts/setup.sh
cargo test --release --test bench -- --ignored --nocapture bench
