#!/usr/bin/env bash
# Chaos test, long run: thousands of operations (ls, cat, stat, getfattr, setfattr, rm, mv,
# cp, mkdir, rmdir, folder rename) through a mount of a scripted server that answers every
# command validly but adversarially at random (tests/safety/chaos.rs). Every success must be
# true in the server's model, every failure an errno, no hang, no panic. Not part of
# scripts/test.sh (a short run of 300 operations is).
#   scripts/chaos.sh [OPS] [SEED]     default 5000 operations, a new seed (printed)
# Environment knob: IMAPFS_CHAOS_RATE (percentage of commands that get a fault, 30).
# A failing run prints its seed and leaves the server's journal in $TMPDIR.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export IMAPFS_CHAOS_OPS="${1:-${IMAPFS_CHAOS_OPS:-5000}}"
case "$IMAPFS_CHAOS_OPS" in
    ''|*[!0-9]*) echo "usage: $0 [OPS] [SEED]" >&2; exit 64 ;;
esac
if [ -n "${2:-}" ]; then
    export IMAPFS_CHAOS_SEED="$2"
fi
./scripts/setup.sh
cargo test --release --test safety -- --ignored --nocapture chaos::chaos_long_run
