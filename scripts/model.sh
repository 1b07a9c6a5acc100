#!/usr/bin/env bash
# Model-based test, long run: thousands of random operations through a mount (mv single and
# batched, rm, cp, setfattr, mkdir, rmdir, folder rename) while another client appends and
# re-flags and a proxy cuts connections at random; the server must equal the model every 50
# operations (tests/safety/model.rs). Not part of scripts/test.sh.
#   scripts/model.sh [OPS] [SEED]     default 3000 operations, a new seed (printed)
# Environment knob: IMAPFS_MODEL_CUTS (cuts per thousand commands, 15).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export IMAPFS_MODEL_OPS="${1:-${IMAPFS_MODEL_OPS:-3000}}"
case "$IMAPFS_MODEL_OPS" in
    ''|*[!0-9]*) echo "usage: $0 [OPS] [SEED]" >&2; exit 64 ;;
esac
if [ -n "${2:-}" ]; then
    export IMAPFS_MODEL_SEED="$2"
fi
./scripts/setup.sh
cargo test --release --test safety -- --ignored --nocapture model::model_long_sequence
