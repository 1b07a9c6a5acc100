#!/usr/bin/env bash
# Installs what building and testing imapfs needs, and nothing when it is already there.
#
#   fuse3          fusermount3 (unmounting; mounting as non-root)
#   dovecot-imapd  the IMAP server the tests and the demo run privately on loopback ports
#   openssl        makes the throwaway self-signed certificates
#   attr           getfattr/setfattr, to look at the xattrs
#   python3        the independent IMAP client the tests compare against (imaplib)
#   mblaze         Maildir tools tests/maildir_clients.rs drives through the mount (mlist, ...)
#   notmuch        the mail indexer tests/maildir_clients.rs drives through the mount
#   neomutt, tmux  the mail client and the terminal to drive it in (tests/maildir_tty.rs)
#   maildir-utils  mu, the indexer tests/maildir_clients.rs drives through the mount
#   aerc           the terminal mail client tests/maildir_tty.rs drives in tmux
#   isync          mbsync, the peer of scripts/bench-maildir.sh (notmuch over 10,000 messages)
#
# Then scripts/servers.sh: GNU mailutils imap4d, Courier-IMAP and Cyrus IMAP for
# tests/compat.rs, unpacked privately beside dovecot-imapd (their packages conflict with it);
# free when they are already there. As root a failure there is fatal; otherwise it is a
# warning and tests/compat.rs says which servers it skips and why.
#
# apt-get update runs only when something is missing. If Debian's package starts the system
# dovecot service, it is stopped and disabled again: the tests never use it, and an IMAP
# server left listening on 143/993 is not what anyone asked for. A dovecot that was already
# running before this script is left alone.
set -euo pipefail

export PATH="$HOME/.cargo/bin:$PATH"

die() {
    echo "setup.sh: $*" >&2
    exit 1
}

# package -> a file that proves it is installed (works without dpkg too)
declare -A PROOF=(
    [fuse3]=fusermount3
    [dovecot-imapd]=dovecot
    [openssl]=openssl
    [attr]=getfattr
    [python3]=python3
    [mblaze]=mlist
    [notmuch]=notmuch
    [neomutt]=neomutt
    [tmux]=tmux
    [maildir-utils]=mu
    [isync]=mbsync
    [strace]=strace
    [aerc]=aerc
)

missing=()
for pkg in fuse3 dovecot-imapd openssl attr python3 mblaze notmuch neomutt tmux maildir-utils aerc isync strace; do
    if ! command -v "${PROOF[$pkg]}" >/dev/null 2>&1; then
        missing+=("$pkg")
    fi
done
# dovecot-core alone has the dovecot binary but not the IMAP service.
if [[ ! " ${missing[*]} " =~ " dovecot-imapd " ]] && [ ! -x /usr/lib/dovecot/imap ]; then
    missing+=(dovecot-imapd)
fi

if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 ||
        die "missing ${missing[*]} and there is no apt-get; install them with your package manager"
    if [ "$(id -u)" -ne 0 ]; then
        die "missing ${missing[*]}; run as root, or: sudo apt-get install ${missing[*]}"
    fi
    echo "setup.sh: installing ${missing[*]}"
    dovecot_was_running=no
    if [ -f /run/dovecot/master.pid ] && kill -0 "$(cat /run/dovecot/master.pid)" 2>/dev/null; then
        dovecot_was_running=yes
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" ||
        die "apt-get install ${missing[*]} failed"
    if [[ " ${missing[*]} " =~ " dovecot-imapd " ]] && [ "$dovecot_was_running" = no ]; then
        # Debian starts the system service on install. Stop it whichever init is in charge.
        if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
            systemctl disable --now dovecot.service dovecot.socket >/dev/null 2>&1 || true
        else
            service dovecot stop >/dev/null 2>&1 || true
            update-rc.d dovecot disable >/dev/null 2>&1 || true
        fi
        if [ -f /run/dovecot/master.pid ]; then
            pid=$(cat /run/dovecot/master.pid)
            if kill -0 "$pid" 2>/dev/null; then
                kill -TERM "$pid" 2>/dev/null || true
            fi
        fi
        echo "setup.sh: stopped the system dovecot service that the package started"
    fi
fi

for pkg in fuse3 dovecot-imapd openssl attr python3; do
    command -v "${PROOF[$pkg]}" >/dev/null 2>&1 || die "$pkg is still missing after installing"
done

if ! command -v cargo >/dev/null 2>&1; then
    die "cargo not found. Install Rust 1.95 or newer with rustup:
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y
then open a new shell (or: export PATH=\"\$HOME/.cargo/bin:\$PATH\")"
fi
for component in fmt clippy; do
    if ! cargo "$component" --version >/dev/null 2>&1; then
        if command -v rustup >/dev/null 2>&1; then
            rustup component add "$( [ "$component" = fmt ] && echo rustfmt || echo clippy)" ||
                die "cannot add the cargo $component component"
        else
            die "cargo $component is missing (rustup component add rustfmt clippy)"
        fi
    fi
done

if [ ! -e /dev/fuse ]; then
    echo "setup.sh: warning: /dev/fuse does not exist; mounting will fail (modprobe fuse?)" >&2
fi

if [ "$(id -u)" -eq 0 ]; then
    "$(dirname "$0")/servers.sh" || die "installing the test IMAP servers failed"
elif ! "$(dirname "$0")/servers.sh" 2>/dev/null; then
    echo "setup.sh: warning: the other test IMAP servers are missing (run scripts/servers.sh as root); tests/compat.rs will skip them" >&2
fi
