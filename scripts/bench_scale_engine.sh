#!/usr/bin/env bash
# Scale check of the listing engine (issue 17): a folder of 100,000 messages written straight
# into a private Dovecot's maildir, listed with `ls -l` through the mount; prints the phases'
# times and the daemon's peak RSS, and fails if the listing is not exact or the peak passes
# its bound. Called by scripts/bench.sh; runs alone too.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo test --release --test scale -- --ignored --nocapture
