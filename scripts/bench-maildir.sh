#!/usr/bin/env bash
# Maildir layout benchmark (issue 18): `notmuch new` over 10,000 messages through a
# `-o maildir` mount, cold and warm, beside mbsync pulling a local copy + `notmuch new` there
# (the goal: the mount beats the sync cold). Prints figures and the ratio; asserts nothing
# about time. MAILDIR_BENCH_MESSAGES=N sets the count (10000).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
./scripts/setup.sh
cargo test --release --test maildir_clients -- --ignored --nocapture bench_notmuch_new
