#!/usr/bin/env bash
# Compatibility with IMAP servers other than Dovecot: installs them if missing
# (scripts/servers.sh), runs tests/compat.rs (harness, one test per server quirk, and a read
# through the real mount per server) and tests/compat_write.rs (writes through the mount), and
# prints a matrix server x {login, list, read bytes, flags xattr, rm, mv, planted \Deleted
# survives, append, flags, mkdir/rmdir} from the tests' MATRIX lines. `refused` means imapfs
# refused the operation (EPERM) because the server lacks what makes it safe.
#
#   scripts/compat.sh            everything
#   scripts/compat.sh mount      only the mount matrix
#
# The mount cells need `imapfs mount --insecure` (these servers run without TLS); an imapfs
# without it fails them. Exits non-zero if any test fails.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

./scripts/servers.sh || exit 1

filter=""
[ "${1:-}" = mount ] && filter=mount_reads

log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo build --quiet --bin imapfs || exit 1
# --nocapture so the MATRIX lines reach the log (SKIPPED lines always do).
RUST_BACKTRACE="${RUST_BACKTRACE:-1}" cargo test --test compat -- --nocapture $filter 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
RUST_BACKTRACE="${RUST_BACKTRACE:-1}" cargo test --test compat_write -- --nocapture 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo
echo "== skipped servers"
grep -o 'SKIPPED: .*' "$log" | sort -u || echo "(none)"
echo
echo "== mount matrix (tests/compat.rs mount_reads, tests/compat_write.rs)"
awk '
    /^MATRIX / { cell[$2 " " $3] = $4; servers[$2] = 1 }
    END {
        n = split("login list read-bytes flags-xattr rm mv planted-deleted-survives append flags mkdir-rmdir", cols, " ")
        printf "%-10s", "server"
        for (i = 1; i <= n; i++) printf " %-12s", cols[i]
        printf "\n"
        split("mailutils courier cyrus", order, " ")
        for (s = 1; s <= 3; s++) {
            name = order[s]
            printf "%-10s", name
            for (i = 1; i <= n; i++) {
                v = cell[name " " cols[i]]
                printf " %-12s", (v == "" ? "-" : v)
            }
            printf "\n"
        }
    }' "$log"
exit "$status"
