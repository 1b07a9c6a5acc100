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

step "cargo doc (private items, warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --document-private-items --quiet

step "cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
RUST_BACKTRACE="${RUST_BACKTRACE:-1}" cargo test 2>&1 | tee "$log"
step "all checks passed"
# The closing line, over every test binary: "N passed, N failed, N skipped". Skipped are the
# ignored tests and the tests that printed `SKIPPED: <crate>::<test> (<why>)` (a test that could
# not check what it is for, e.g. tests/compat.rs without root or without its server): cargo
# reports those as passed, so they move from passed to skipped here (one count per test, however
# many lines it printed; a skipping test that also failed stays failed). Under
# IMAPFS_REQUIRE_COMPAT=1 (CI) a skip fails its test instead.
awk '
    # cargo: "Running tests/compat.rs (target/debug/deps/compat-0123abcd)"
    /Running .*\(.*deps\/.*\)/ {
        bin = $0; sub(/.*deps\//, "", bin); sub(/-[0-9a-f]+\)$/, "", bin)
    }
    /^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
    /^---- .* stdout ----$/ { failed[bin "::" $2] = 1 }
    /SKIPPED: / {
        # Anywhere in a line: stderr may land after a "test x ... " that awaits its result.
        t = substr($0, index($0, "SKIPPED: ") + 9); sub(/ .*/, "", t); skipped[t] = 1
    }
    END {
        for (t in skipped) if (!(t in failed)) { p--; s++; print "skipped: " t }
        printf "tests: %d passed, %d failed, %d skipped\n", p, f, s
    }' "$log"
