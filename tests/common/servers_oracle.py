
import datetime, hashlib, os, re, socket, sys

from oracle_common import fetch_uid, list_line, mailbox, meta_line, quote, status_line

# A raw IMAP4rev1 client over one plaintext socket: every command and response is exactly what
# crosses the wire, so the same code serves as oracle and as probe of a server's quirks.

class Failed(Exception):
    pass

class Client:
    def __init__(self):
        self.sock = socket.create_connection(('127.0.0.1', int(os.environ['ORACLE_PORT'])), timeout=60)
        self.file = self.sock.makefile('rb')
        self.tags = 0
        self.greeting = self.line()

    def line(self):
        l = self.file.readline()
        if not l:
            raise Failed('server closed the connection')
        return l

    def response(self):
        """One response: (text with literals cut out, [literal bytes])."""
        l = self.line()
        text, parts = b'', []
        while True:
            m = re.search(rb'\{(\d+)\}\r\n$', l)
            if not m:
                return text + l.rstrip(b'\r\n'), parts
            n = int(m.group(1))
            parts.append(self.file.read(n))
            text += l[:-2]
            l = self.line()

    def command(self, cmd, literal=None):
        """Runs one command; returns (status, text, [(untagged text, literals)]). With `literal`,
        `cmd` ends in the literal's place and the data is sent as a synchronising literal."""
        self.tags += 1
        tag = b'o%d' % self.tags
        cmd = cmd.encode() if isinstance(cmd, str) else cmd
        untagged = []
        if literal is None:
            self.sock.sendall(tag + b' ' + cmd + b'\r\n')
        else:
            self.sock.sendall(tag + b' ' + cmd + b' {%d}\r\n' % len(literal))
            while True:
                text, parts = self.response()
                if text.startswith(b'+'):
                    break
                if text.startswith(tag + b' '):
                    status, _, rest = text[len(tag) + 1:].partition(b' ')
                    return status.decode(), rest, untagged
                untagged.append((text, parts))
            self.sock.sendall(literal + b'\r\n')
        while True:
            text, parts = self.response()
            if text.startswith(tag + b' '):
                status, _, rest = text[len(tag) + 1:].partition(b' ')
                return status.decode(), rest, untagged
            untagged.append((text, parts))

    def ok(self, cmd, literal=None):
        status, text, untagged = self.command(cmd, literal)
        if status != 'OK':
            raise Failed('%s: %s %s' % (cmd if isinstance(cmd, str) else cmd.decode(errors='replace'), status, text.decode(errors='replace')))
        return text, untagged

    def login(self):
        return self.ok('LOGIN %s %s' % (quote(os.environ['ORACLE_USER']), quote(os.environ['ORACLE_PASSWORD'])))

    def capabilities(self):
        _, untagged = self.ok('CAPABILITY')
        for text, _ in untagged:
            if text.upper().startswith(b'* CAPABILITY '):
                return text[len(b'* CAPABILITY '):].decode()
        raise Failed('no CAPABILITY response')

    def select(self, folder_hex, readonly=True):
        """SELECT or EXAMINE; returns EXISTS."""
        _, untagged = self.ok('%s %s' % ('EXAMINE' if readonly else 'SELECT', mailbox(folder_hex)))
        exists = 0
        for text, _ in untagged:
            m = re.match(rb'\* (\d+) EXISTS', text)
            if m:
                exists = int(m.group(1))
        return exists

def esc(b):
    """A response line as printable ASCII (one line, tabs and controls escaped)."""
    out = []
    for c in b:
        if 0x20 <= c <= 0x7e and c != 0x5c:
            out.append(chr(c))
        elif c == 0x5c:
            out.append('\\\\')
        else:
            out.append('\\x%02x' % c)
    return ''.join(out)

def fetch_lines(c, uids, items):
    """UID FETCH; yields (uid, text, literals) per FETCH response that has a UID."""
    _, untagged = c.ok('UID FETCH %s %s' % (uids, items))
    for text, parts in untagged:
        if re.match(rb'\* \d+ FETCH', text):
            uid = fetch_uid(text)
            if uid is not None:
                yield uid, text, parts

def bodies(c, folder_hex, uids):
    if c.select(folder_hex) == 0:
        return
    for uid, text, parts in fetch_lines(c, uids, '(UID BODY.PEEK[])'):
        if not parts:
            raise Failed('FETCH without a literal body: %r' % text)
        yield uid, parts[0]

def cmd_list(c):
    _, untagged = c.ok('LIST "" "*"')
    for text, parts in untagged:
        line = list_line(text, parts[0] if parts else None)
        if line is not None:
            sys.stdout.write(line + '\n')

def cmd_fetch(c, folder_hex, uids):
    out = sys.stdout.buffer
    for uid, body in bodies(c, folder_hex, uids):
        out.write(b'%d %d\n' % (uid, len(body)))
        out.write(body)

def cmd_sha256(c, folder_hex):
    for uid, body in bodies(c, folder_hex, '1:*'):
        print(uid, hashlib.sha256(body).hexdigest())

def cmd_meta(c, folder_hex):
    if c.select(folder_hex) == 0:
        return
    for _, text, _ in fetch_lines(c, '1:*', '(UID FLAGS RFC822.SIZE INTERNALDATE)'):
        print(meta_line(text))

def cmd_status(c, folder_hex):
    _, untagged = c.ok('STATUS %s (UIDVALIDITY UIDNEXT MESSAGES)' % mailbox(folder_hex))
    print(status_line(b' '.join(t for t, _ in untagged if t.upper().startswith(b'* STATUS'))))

def cmd_store(c, folder_hex, uid, op, flags):
    c.select(folder_hex, readonly=False)
    c.ok('UID STORE %s %s (%s)' % (uid, op, flags))

def cmd_expunge(c, folder_hex, uid):
    uidplus = 'UIDPLUS' in c.capabilities().upper().split()
    c.select(folder_hex, readonly=False)
    c.ok('UID STORE %s +FLAGS.SILENT (\\Deleted)' % uid)
    # Without UIDPLUS only a plain EXPUNGE exists: it removes every \Deleted message here.
    c.ok('UID EXPUNGE %s' % uid if uidplus else 'EXPUNGE')

def imap_date(unix):
    return datetime.datetime.fromtimestamp(int(unix), datetime.timezone.utc).strftime('%d-%b-%Y %H:%M:%S +0000')

def append(c, folder_hex, flags, date, message):
    """APPENDs; returns the new UID, from APPENDUID or else the highest UID afterwards."""
    cmd = 'APPEND %s' % mailbox(folder_hex)
    if flags:
        cmd += ' (%s)' % flags
    if date:
        cmd += ' "%s"' % imap_date(date)
    text, _ = c.ok(cmd, message)
    m = re.search(rb'\[APPENDUID \d+ (\d+)\]', text, re.I)
    if m:
        return int(m.group(1))
    # Read-write: mailutils numbers a message in new/ afresh at every EXAMINE and keeps its
    # UID only once a SELECT has moved it to cur/.
    c.select(folder_hex, readonly=False)
    _, untagged = c.ok('UID SEARCH ALL')
    uids = [int(u) for t, _ in untagged if t.upper().startswith(b'* SEARCH') for u in t.split()[2:]]
    c.ok('CLOSE')
    return max(uids)

def cmd_append(c, folder_hex, flags):
    print(append(c, folder_hex, flags, None, sys.stdin.buffer.read()))

def cmd_create(c, folder_hex):
    c.ok('CREATE %s' % mailbox(folder_hex))

def cmd_delete(c, folder_hex):
    c.ok('DELETE %s' % mailbox(folder_hex))

def cmd_seed(c):
    """stdin: `F <folder hex>` creates a folder (INBOX is never created); `M <folder hex>
    <unix date> <flags or -> <length>` and that many bytes appends a message. After each folder,
    its UIDs must be 1..n in append order."""
    data = sys.stdin.buffer
    expected = {}
    while True:
        header = data.readline()
        if not header:
            break
        fields = header.decode().split()
        if fields[0] == 'F':
            if bytes.fromhex(fields[1]).decode().upper() != 'INBOX':
                c.ok('CREATE %s' % mailbox(fields[1]))
            expected[fields[1]] = 0
        else:
            folder_hex, date, flags, length = fields[1:]
            message = data.read(int(length))
            flags = '' if flags == '-' else flags.replace(',', ' ')
            uid = append(c, folder_hex, flags, date, message)
            expected[folder_hex] += 1
            if uid != expected[folder_hex]:
                raise Failed('seed: message %d of %s got UID %d' % (expected[folder_hex], bytes.fromhex(folder_hex).decode(), uid))

def cmd_caps(c):
    print('GREETING\t' + esc(c.greeting.rstrip(b'\r\n')))
    print('PRE\t' + c.capabilities())
    text, untagged = c.login()
    print('LOGIN\t' + esc(text))
    print('POST\t' + c.capabilities())

def transcript(status, text, untagged):
    for line, parts in untagged:
        print('S\t' + esc(line))
    print('R\t%s\t%s' % (status, esc(text)))

def cmd_session(c, *commands):
    """Each argument is one command line; prints C/S/R lines. Literals are cut out of S lines,
    leaving their `{n}` marker."""
    for cmd in commands:
        print('C\t' + cmd)
        try:
            transcript(*c.command(cmd))
        except Failed:
            # The server hung up (after LOGOUT, or on its own): say so and stop.
            print('R\tEOF\t')
            sys.stdout.flush()
            os._exit(0)

def cmd_session_append(c, folder_hex, flags):
    cmd = 'APPEND %s' % mailbox(folder_hex) + (' (%s)' % flags if flags else '')
    print('C\t' + cmd + ' {...}')
    transcript(*c.command(cmd, sys.stdin.buffer.read()))

def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    c = Client()
    try:
        if cmd != 'caps':
            c.login()
        globals()['cmd_' + cmd.replace('-', '_')](c, *args)
        c.command('LOGOUT')
    except Failed as e:
        sys.exit('oracle %s: %s' % (cmd, e))

main()
