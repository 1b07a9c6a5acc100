#!/usr/bin/env bash
# Soak: 8 concurrent readers on a mount for a few minutes while another client appends,
# expunges and re-flags on the same Dovecot; fails on any error or wrong byte, prints counts
# and imapfs's RSS over time (tests/soak.rs). Not part of scripts/test.sh.
#   scripts/soak.sh [SECONDS]     default 180 (3 min), at most 3600
# Environment knobs: SOAK_READERS (8), SOAK_MESSAGES (200 at the start).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export SOAK_SECS="${1:-${SOAK_SECS:-180}}"
case "$SOAK_SECS" in
    ''|*[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 64 ;;
esac
if [ "$SOAK_SECS" -gt 3600 ]; then
    echo "$0: at most 3600 seconds" >&2
    exit 64
fi
./scripts/setup.sh
cargo test --release --test soak -- --ignored --nocapture soak
