#!/usr/bin/env bash
# Makes the IMAP servers other than Dovecot available to tests/compat.rs, and does nothing when
# they already are.
#
#   mailutils  GNU mailutils imap4d        (Debian mailutils-imap4d)
#   courier    Courier-IMAP + authdaemond  (Debian courier-imap, courier-base, courier-authlib,
#                                           courier-authdaemon)
#   cyrus      Cyrus IMAP master + imapd   (Debian cyrus-imapd, cyrus-common; saslpasswd2 from
#                                           sasl2-bin)
#
# The server packages conflict with dovecot-imapd (they all provide imap-server) and their
# maintainer scripts would start system services, so they are never installed: each is fetched
# with `apt-get download` and unpacked with `dpkg -x` into its own tree
#
#   ${IMAPFS_TEST_SERVERS_DIR:-/var/cache/imapfs-test-servers}/<server>/{etc,usr,...}
#
# Only the shared libraries they link against are installed normally with apt-get (plain
# library packages, no services). tests/common/servers.rs runs each server in private mount and
# PID namespaces where that tree is overlaid on /usr and /etc, so the binaries find their
# modules and configuration at the paths they were compiled for, and nothing of them is visible
# outside the test.
#
# A tree is complete when its .packages stamp lists the packages unpacked into it; delete the
# directory to fetch again (e.g. after a Debian security update). Needs root (apt-get, and the
# tests need root for the namespaces anyway).
set -euo pipefail

die() {
    echo "servers.sh: $*" >&2
    exit 1
}

ROOT=${IMAPFS_TEST_SERVERS_DIR:-/var/cache/imapfs-test-servers}
SERVERS=(mailutils courier cyrus)

# Packages unpacked into the private tree.
declare -A UNPACK=(
    [mailutils]="mailutils-imap4d"
    [courier]="courier-imap courier-base courier-authlib courier-authdaemon"
    [cyrus]="cyrus-imapd cyrus-common sasl2-bin"
)
# Library packages installed normally (what the binaries above link against and the base
# system may lack; gamin is courier-imap's file-alteration monitor for IDLE).
declare -A LIBS=(
    [mailutils]="libmailutils9 mailutils-common libgsasl18 libwrap0 libnsl2 libunistring2 libgnutls30 libldap-2.5-0 libkrb5-3 libpam0g"
    [courier]="libcourier-unicode4 libidn12 libgamin0 gamin libltdl7 libgdbm6 libpam0g libpam-modules libgnutls30 libpcre3"
    [cyrus]="libical3 libpcre3 libxapian30 libicu72 libjansson4 libpq5 libsasl2-2 libsasl2-modules libsasl2-modules-db libsqlite3-0 libxml2 libssl3 libwrap0 libldap-2.5-0 libkrb5-3 libdb5.3"
)
# Binaries whose libraries must all resolve, relative to the tree.
declare -A BINARIES=(
    [mailutils]="usr/sbin/imap4d"
    [courier]="usr/bin/imapd usr/lib/courier/courier/imaplogin usr/sbin/couriertcpd usr/lib/courier/courier-authlib/authdaemond"
    [cyrus]="usr/lib/cyrus/bin/master usr/lib/cyrus/bin/imapd usr/lib/cyrus/bin/ctl_cyrusdb usr/sbin/saslpasswd2"
)

updated=no
apt_update_once() {
    if [ "$updated" = no ]; then
        apt-get update -qq || die "apt-get update failed"
        updated=yes
    fi
}

missing_libs() {
    local pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
            printf '%s\n' "$pkg"
        fi
    done
}

tree_complete() {
    local server=$1
    [ -f "$ROOT/$server/.packages" ] && [ "$(cat "$ROOT/$server/.packages")" = "${UNPACK[$server]}" ]
}

unresolved() {
    local server=$1 tree="$ROOT/$1" bin
    for bin in ${BINARIES[$server]}; do
        [ -x "$tree/$bin" ] || {
            echo "$bin: missing"
            continue
        }
        LD_LIBRARY_PATH="$tree/usr/lib/x86_64-linux-gnu:$tree/usr/lib" ldd "$tree/$bin" |
            grep 'not found' | sed "s|^|$bin: |" || true
    done
}

# Fast path: every tree complete and every library package installed.
all_there=yes
for server in "${SERVERS[@]}"; do
    if ! tree_complete "$server" || [ -n "$(missing_libs ${LIBS[$server]})" ]; then
        all_there=no
    fi
done
[ "$all_there" = yes ] && exit 0

[ "$(id -u)" -eq 0 ] || die "the test IMAP servers are not installed; run as root: scripts/servers.sh"
command -v apt-get >/dev/null 2>&1 || die "no apt-get: the test IMAP servers need Debian packages"
export DEBIAN_FRONTEND=noninteractive

for server in "${SERVERS[@]}"; do
    mapfile -t libs < <(missing_libs ${LIBS[$server]})
    if [ ${#libs[@]} -gt 0 ]; then
        echo "servers.sh: installing libraries for $server: ${libs[*]}"
        if ! apt-get install -y -qq --no-install-recommends "${libs[@]}" >/dev/null; then
            apt_update_once
            apt-get install -y -qq --no-install-recommends "${libs[@]}" >/dev/null ||
                die "apt-get install ${libs[*]} failed"
        fi
    fi

    if ! tree_complete "$server"; then
        echo "servers.sh: unpacking $server (${UNPACK[$server]}) into $ROOT/$server"
        work=$(mktemp -d "${TMPDIR:-/tmp}/imapfs-servers.XXXXXX")
        # apt-get download drops privileges to _apt, which must be able to write here.
        chmod 0777 "$work"
        # shellcheck disable=SC2086
        if ! (cd "$work" && apt-get download -qq ${UNPACK[$server]} 2>/dev/null); then
            apt_update_once
            # shellcheck disable=SC2086
            (cd "$work" && apt-get download -qq ${UNPACK[$server]}) ||
                die "apt-get download ${UNPACK[$server]} failed"
        fi
        mkdir -p "$ROOT"
        rm -rf "$ROOT/$server.new"
        mkdir "$ROOT/$server.new"
        for deb in "$work"/*.deb; do
            dpkg -x "$deb" "$ROOT/$server.new"
            dpkg-deb -f "$deb" Package Version | paste -sd' ' >>"$ROOT/$server.new/.versions"
        done
        rm -rf "$work"
        printf '%s\n' "${UNPACK[$server]}" >"$ROOT/$server.new/.packages"
        rm -rf "$ROOT/$server"
        mv "$ROOT/$server.new" "$ROOT/$server"
    fi

    problems=$(unresolved "$server")
    [ -z "$problems" ] || die "$server cannot run, unresolved libraries:
$problems"
done
echo "servers.sh: test IMAP servers ready in $ROOT"
