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
log=$(mktemp)
trap 'rm -f "$log"' EXIT
RUST_BACKTRACE="${RUST_BACKTRACE:-1}" cargo test 2>&1 | tee "$log"
step "all checks passed"
# The closing line, over every test binary: "N passed, N failed".
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
