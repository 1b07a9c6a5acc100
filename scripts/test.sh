#!/usr/bin/env bash
# Everything CI checks: dependencies, formatting, lints, and all tests (unit, engine against a
# private Dovecot, end to end through a real FUSE mount). Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

step() {
    echo "==> $*"
}

step setup
./scripts/setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --all-targets -- -D warnings

step "cargo test"
RUST_BACKTRACE="${RUST_BACKTRACE:-1}" cargo test

step "all checks passed"
