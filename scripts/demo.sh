#!/usr/bin/env bash
# A two-minute tour: build imapfs, start a throwaway Dovecot with sample mail on a free loopback
# port (everything under ./.demo), mount it at ./demo-mail and look around with ls, cat, grep
# and getfattr, search on the server through .search and save an attachment from .parts, then
# change some mail. Running it again first tears down what the previous run left.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEMO=$ROOT/.demo
MNT=$ROOT/demo-mail
DEMO_USER=demo
DEMO_PASSWORD=demo-password
export PATH="$HOME/.cargo/bin:$PATH"

say() {
    printf '\n\033[1m$ %s\033[0m\n' "$*"
}

die() {
    echo "demo.sh: $*" >&2
    exit 1
}

# mountinfo escapes spaces etc. as octal; compare on the escaped form, never stat the mount
# point (a dead FUSE mount answers ENOTCONN).
is_mounted() {
    local escaped=${1// /\\040}
    awk -v mp="$escaped" '$5 == mp { found = 1 } END { exit !found }' /proc/self/mountinfo
}

cleanup_previous_run() {
    if is_mounted "$MNT"; then
        echo "demo.sh: unmounting the previous demo at $MNT"
        fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || fusermount3 -u -z "$MNT"
    fi
    if [ -f "$DEMO/run/master.pid" ]; then
        local pid
        pid=$(cat "$DEMO/run/master.pid")
        if kill -0 "$pid" 2>/dev/null && grep -q dovecot "/proc/$pid/cmdline" 2>/dev/null; then
            echo "demo.sh: stopping the previous demo dovecot (pid $pid)"
            kill -TERM "$pid"
            for _ in $(seq 100); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -rf "$DEMO"
    if [ -d "$MNT" ]; then
        rmdir "$MNT" 2>/dev/null || die "$MNT is not empty and not a mount; move it away first"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

./scripts/setup.sh
say cargo build --release
cargo build --release
cleanup_previous_run
mkdir -p "$DEMO"/{run,state,home} "$MNT"

# Dovecot refuses to hand mail to root; as root the mail belongs to nobody, otherwise to us.
if [ "$(id -u)" -eq 0 ]; then
    MAIL_UID=$(id -u nobody)
    MAIL_GID=$(id -g nobody)
    AS_USER=""
else
    MAIL_UID=$(id -u)
    MAIL_GID=$(id -g)
    AS_USER="default_login_user = $(id -un)
default_internal_user = $(id -un)"
fi

echo "demo.sh: creating a certificate and sample mail in $DEMO"
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=localhost \
    -addext basicConstraints=critical,CA:FALSE \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$DEMO/key.pem" -out "$DEMO/cert.pem" 2>/dev/null

# Sample mail written straight into Dovecot's maildir++ layout: folder A/B is .A.B with the
# name in modified UTF-7, messages in cur/ with flags after ":2,", mtime = arrival time.
python3 - "$DEMO/mail" <<'PY'
import base64, email.header, email.utils, os, random, sys, time

root = sys.argv[1]
rng = random.Random(7)

def mutf7(name):
    out, buf = [], []
    def flush():
        if buf:
            b = ''.join(buf).encode('utf-16-be')
            out.append('&' + base64.b64encode(b).decode().rstrip('=').replace('/', ',') + '-')
            buf.clear()
    for ch in name:
        if 0x20 <= ord(ch) <= 0x7e:
            flush()
            out.append('&-' if ch == '&' else ch)
        else:
            buf.append(ch)
    flush()
    return ''.join(out)

PEOPLE = ['Alice Example <alice@example.org>', 'Bob Builder <bob@example.net>',
          'Jörg Müller <joerg@example.de>', 'Carol <carol@example.com>']
WORDS = ('quarterly numbers budget meeting schedule review draft attached report server '
         'project deadline notes agenda payment customer release plan summary coffee').split()
FOLDERS = {
    'INBOX': ['Welcome to imapfs', 'Re: Quarterly numbers', 'Lunch on Friday?',
              'Your invoice #1042', 'Grüße aus Köln', 'Build failed on main',
              'Meeting notes', 'Re: Re: the plan'],
    'Archive': ['Old invoice #0999', 'Holiday photos', 'Contract signed'],
    'Archive.2024': ['January report', 'February report', 'Invoice March', 'April report'],
    'Work': ['Team offsite', 'New laptop'],
    'Work.Projects': ['Project X kickoff', 'Project X retro', 'Invoice for Project X'],
    'Receipts': ['Receipt: coffee beans', 'Receipt: train ticket', 'Receipt: books',
                 'Receipt: invoice paid', 'Receipt: cloud storage'],
    'Ünïcødé Folder': ['Привет, мир', '日本語の件名', 'Ünïcødé and emoji 🚀'],
}
FLAGS = ['S', 'S', '', 'FS', 'RS', '']

t = time.time() - 60 * 86400
for folder, subjects in FOLDERS.items():
    d = root if folder == 'INBOX' else os.path.join(root, '.' + mutf7(folder))
    for sub in ('cur', 'new', 'tmp'):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    if folder != 'INBOX':
        open(os.path.join(d, 'maildirfolder'), 'w').close()
    for i, subject in enumerate(subjects, 1):
        t += rng.randint(3600, 86400)
        sender = rng.choice(PEOPLE)
        name, addr = email.utils.parseaddr(sender)
        lines = [' '.join(rng.choice(WORDS) for _ in range(rng.randint(6, 12))) + '.'
                 for _ in range(rng.randint(4, 25))]
        if 'nvoice' in subject:
            lines.insert(1, 'Please find the invoice attached; due in 30 days.')
        headers = [
            'From: ' + email.utils.formataddr((name, addr), charset='utf-8'),
            'To: Demo User <demo@example.org>',
            'Subject: ' + (subject if subject.isascii()
                           else email.header.Header(subject, 'utf-8').encode(linesep='\r\n')),
            'Date: ' + email.utils.formatdate(t),
            'Message-ID: <demo.%d.%d@imapfs.example>' % (int(t), i),
            'MIME-Version: 1.0',
        ]
        text = '\r\n'.join(lines) + '\r\n'
        if subject == 'Your invoice #1042':
            # One message with an attachment, for the .parts view.
            pdf = b'%PDF-1.4\n% demo invoice 1042\n' + bytes(rng.randrange(256) for _ in range(3000)) + b'\n%%EOF\n'
            b64 = base64.encodebytes(pdf).decode().replace('\n', '\r\n')
            headers.append('Content-Type: multipart/mixed; boundary="demo-boundary"')
            body = ('\r\n'.join(headers) + '\r\n\r\n--demo-boundary\r\n'
                    'Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n'
                    + text + '--demo-boundary\r\n'
                    'Content-Type: application/pdf; name="invoice-1042.pdf"\r\n'
                    'Content-Disposition: attachment; filename="invoice-1042.pdf"\r\n'
                    'Content-Transfer-Encoding: base64\r\n\r\n' + b64 + '--demo-boundary--\r\n')
            with open(os.path.join(root, '..', 'invoice-1042.pdf'), 'wb') as f:
                f.write(pdf)
        else:
            headers += ['Content-Type: text/plain; charset=utf-8', 'Content-Transfer-Encoding: 8bit']
            body = '\r\n'.join(headers) + '\r\n\r\n' + text
        flags = FLAGS[(i + len(folder)) % len(FLAGS)]
        path = os.path.join(d, 'cur', '%d.M%06dP1.demo:2,%s' % (1500000000 + i, i, flags))
        with open(path, 'wb') as f:
            f.write(body.encode('utf-8'))
        os.utime(path, (t, t))
print('demo.sh: %d messages in %d folders' % (sum(map(len, FOLDERS.values())), len(FOLDERS)))
PY
chown -R "$MAIL_UID:$MAIL_GID" "$DEMO/mail" "$DEMO/home"
echo "$DEMO_USER:{PLAIN}$DEMO_PASSWORD:$MAIL_UID:$MAIL_GID::$DEMO/home::" >"$DEMO/passwd"

PORT=$(free_port)
PLAIN_PORT=$(free_port)
cat >"$DEMO/dovecot.conf" <<EOF
# Throwaway IMAP server for scripts/demo.sh; loopback only.
base_dir = $DEMO/run
state_dir = $DEMO/state
instance_name = imapfs-demo
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <$DEMO/cert.pem
ssl_key = <$DEMO/key.pem
disable_plaintext_auth = no
log_path = $DEMO/dovecot.log
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:$DEMO/mail
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $DEMO/passwd
}
userdb {
  driver = passwd-file
  args = username_format=%u $DEMO/passwd
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $PLAIN_PORT
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $PORT
    ssl = yes
  }
}
$AS_USER
EOF

# The daemon must not inherit our stdout: `demo.sh | less` would never see end of file.
dovecot -c "$DEMO/dovecot.conf" </dev/null >"$DEMO/dovecot.stderr" 2>&1 ||
    die "dovecot did not start: $(cat "$DEMO/dovecot.stderr")"
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done
(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || die "dovecot is not listening on $PORT; see $DEMO/dovecot.log"
DOVECOT_PID=$(cat "$DEMO/run/master.pid")
echo "demo.sh: dovecot (pid $DOVECOT_PID) serves imaps://$DEMO_USER@127.0.0.1:$PORT"

# Without -f imapfs returns once the mount is ready and keeps serving in the background.
say "IMAPFS_PASSWORD=... imapfs mount --ca-file .demo/cert.pem imaps://$DEMO_USER@127.0.0.1:$PORT ./demo-mail"
IMAPFS_PASSWORD=$DEMO_PASSWORD target/release/imapfs mount --ca-file "$DEMO/cert.pem" \
    "imaps://$DEMO_USER@127.0.0.1:$PORT" "$MNT" </dev/null >/dev/null 2>"$DEMO/imapfs.log" ||
    die "imapfs mount failed: $(cat "$DEMO/imapfs.log")"
for _ in $(seq 100); do
    is_mounted "$MNT" && break
    sleep 0.1
done
is_mounted "$MNT" || die "$MNT did not appear; see $DEMO/imapfs.log"

cd "$ROOT"
say ls -la demo-mail
ls -la demo-mail
say ls -l demo-mail/Work/Projects
ls -l demo-mail/Work/Projects
say ls "demo-mail/Ünïcødé Folder"
ls "demo-mail/Ünïcødé Folder"
say head -n 12 demo-mail/INBOX/2.eml
head -n 12 demo-mail/INBOX/2.eml
say grep -rl invoice demo-mail
grep -rl invoice demo-mail || true
say getfattr -d -m - demo-mail/INBOX/5.eml
getfattr -d -m - demo-mail/INBOX/5.eml
say getfattr --only-values -n user.mail.subject demo-mail/INBOX/5.eml
getfattr --only-values -n user.mail.subject demo-mail/INBOX/5.eml
echo

# The views: server-side search as directories, attachments as files. Neither is listed by
# ls -a, find or grep -r; they appear when named.
say ls -l "demo-mail/INBOX/.search/SUBJECT invoice"
ls -l "demo-mail/INBOX/.search/SUBJECT invoice"
say ls "demo-mail/.search/from:alice since:2000-01-01"
ls "demo-mail/.search/from:alice since:2000-01-01"
say grep -l attached "demo-mail/INBOX/.search/TEXT invoice/"*
grep -l attached "demo-mail/INBOX/.search/TEXT invoice/"* || true
say ls -l demo-mail/INBOX/.parts/4
ls -l demo-mail/INBOX/.parts/4
say getfattr -d demo-mail/INBOX/.parts/4/2-invoice-1042.pdf
getfattr -d demo-mail/INBOX/.parts/4/2-invoice-1042.pdf
say cp demo-mail/INBOX/.parts/4/2-invoice-1042.pdf .demo/saved.pdf
cp demo-mail/INBOX/.parts/4/2-invoice-1042.pdf "$DEMO/saved.pdf"
cmp "$DEMO/saved.pdf" "$DEMO/invoice-1042.pdf" && echo "saved.pdf is the attachment, byte for byte"

# Changing mail: a flag, a new folder, a move, a new message, a removal.
say setfattr -n user.imap.flags -v '+\\Flagged' demo-mail/INBOX/5.eml
setfattr -n user.imap.flags -v '+\Flagged' demo-mail/INBOX/5.eml
getfattr --only-values -n user.imap.flags demo-mail/INBOX/5.eml
echo
say mkdir demo-mail/Later
mkdir demo-mail/Later
say mv demo-mail/INBOX/5.eml demo-mail/INBOX/6.eml demo-mail/Later/
mv demo-mail/INBOX/5.eml demo-mail/INBOX/6.eml demo-mail/Later/
ls -l demo-mail/Later
say "printf 'Subject: note to self\\nMessage-ID: <demo.note@imapfs.example>\\n\\nwritten with printf\\n' > demo-mail/Later/note.eml"
printf 'Subject: note to self\nMessage-ID: <demo.note@imapfs.example>\n\nwritten with printf\n' > demo-mail/Later/note.eml
ls -l demo-mail/Later
say rm demo-mail/INBOX/1.eml
rm demo-mail/INBOX/1.eml
ls demo-mail/INBOX

cat <<EOF

The demo account stays mounted at ./demo-mail. When you are done:
  fusermount3 -u ./demo-mail      # unmount (imapfs exits)
  $(printf '%-31s' "kill $DOVECOT_PID") # stop the demo Dovecot
  rm -rf .demo demo-mail          # or just run ./scripts/demo.sh again
Server log: .demo/dovecot.log; plain IMAP for other clients: 127.0.0.1:$PLAIN_PORT
(user $DEMO_USER, password $DEMO_PASSWORD).
EOF
