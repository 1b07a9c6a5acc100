#!/usr/bin/env bash
# The memory of a big folder's cold listing (issue 17): peak RSS of the daemon during a cold
# `ls -l` of BENCH_LISTING_MESSAGES (300,000) messages, and the bytes a message beyond the
# fixed part. Prints figures only.
# Usage: scripts/bench_listing_memory.sh [BINARY...]
#   Each BINARY (an imapfs built elsewhere, e.g. from the commit before a change) is measured
#   in the same session, twice, in turn; none: the one this tree builds.
#   BENCH_LISTING_WRAP=PROGRAM runs PROGRAM instead, the binary in BENCH_LISTING_BINARY
#   (e.g. a script running `heaptrack -o FILE "$BENCH_LISTING_BINARY" "$@"`).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
if [ $# -gt 0 ]; then
    BENCH_LISTING_BINARIES=$(IFS=:; echo "$*")
    export BENCH_LISTING_BINARIES
fi
cargo test --release --test bench_listing_memory -- --ignored --nocapture bench_listing_memory
