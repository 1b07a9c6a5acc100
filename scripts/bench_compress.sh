#!/usr/bin/env bash
# COMPRESS=DEFLATE on a slow link (issue 15): cold cat of 10,000 text messages through a proxy
# with a 20 ms round trip and 50 Mbit/s each way, with and without compression, beside the
# raw uncompressed client and the link's limit for the uncompressed bytes. Prints figures
# and ratios; asserts nothing about time. BENCH_MESSAGES (10000), BENCH_RTT_MS (20),
# BENCH_MBIT (50).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
./scripts/setup.sh
cargo test --release --test bench_compress -- --ignored --nocapture bench_compress
