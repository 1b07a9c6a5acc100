#!/usr/bin/env bash
# Benchmarks: prints figures side by side (no pass/fail on time): imapfs, a raw pipelined client,
# mbsync (Debian isync, if installed), an in-memory FUSE floor and cat of the maildir files.
# Takes several minutes and about 2 GB of memory with the defaults. Environment knobs:
#   BENCH_MESSAGES (default 10000), BENCH_BIG_MB (sizes of the big messages, "20,35,50"),
#   BENCH_RTT_MS (20; 0 skips the delayed run)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
./scripts/setup.sh
# mbsync is the peer the figures compare with; the benchmark runs without it too.
if ! command -v mbsync >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get install -y isync >/dev/null || echo "bench.sh: no mbsync (isync); that column stays empty" >&2
fi
cargo test --release --test bench -- --ignored --nocapture bench
# At scale: 100,000 messages against the FUSE floor (BENCH_SCALE_MILLION=1 adds 1,000,000).
./scripts/bench_scale.sh
./scripts/bench_scale_engine.sh

# Memory under read patterns against --cache-size + 64 MiB (issue 17).
./scripts/bench_memory.sh
