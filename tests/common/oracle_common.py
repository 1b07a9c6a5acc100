# What the two Python oracles share (oracle.py over imaplib for Dovecot, servers_oracle.py over
# a raw socket for the other servers): modified UTF-7, quoting, and the parsing of LIST, FETCH
# metadata and STATUS answers into the lines the Rust harness reads. Written here, not taken
# from imapfs, so an oracle never agrees with imapfs by sharing its mistakes.

import base64, datetime, re

def mutf7_encode(s):
    out, buf = [], []
    def flush():
        if buf:
            b = ''.join(buf).encode('utf-16-be')
            out.append('&' + base64.b64encode(b).decode().rstrip('=').replace('/', ',') + '-')
            buf.clear()
    for ch in s:
        if 0x20 <= ord(ch) <= 0x7e:
            flush()
            out.append('&-' if ch == '&' else ch)
        else:
            buf.append(ch)
    flush()
    return ''.join(out)

def mutf7_decode(s):
    out, i = [], 0
    while i < len(s):
        if s[i] == '&':
            j = s.index('-', i)
            if j == i + 1:
                out.append('&')
            else:
                b = s[i + 1:j].replace(',', '/')
                out.append(base64.b64decode(b + '=' * (-len(b) % 4)).decode('utf-16-be'))
            i = j + 1
        else:
            out.append(s[i])
            i += 1
    return ''.join(out)

def quote(s):
    return '"' + s.replace('\\', '\\\\').replace('"', '\\"') + '"'

def unquote(b):
    if b.startswith(b'"'):
        return re.sub(rb'\\(.)', rb'\1', b[1:-1])
    return b

def mailbox(folder_hex):
    """A folder name given as hex of its UTF-8, as a quoted modified UTF-7 mailbox argument."""
    return quote(mutf7_encode(bytes.fromhex(folder_hex).decode()))

# A LIST response with or without its `* LIST ` (imaplib strips it); the name may be a literal,
# cut out of the text and passed on its own.
LIST_RE = re.compile(rb'^(?:\* LIST )?\((?P<attrs>[^)]*)\) (?P<delim>NIL|"(?:\\.|[^"\\])*") ?(?P<name>.*)$', re.I)

def list_line(text, literal=None):
    """`<name hex>\\t<delimiter>\\t<attributes>` for one LIST response, or None if it is not one."""
    g = LIST_RE.match(text)
    if not g:
        return None
    name = literal if literal is not None else unquote(g.group('name'))
    delim = g.group('delim')
    delim = '' if delim.upper() == b'NIL' else unquote(delim).decode()
    decoded = mutf7_decode(name.decode('ascii'))
    return '%s\t%s\t%s' % (decoded.encode().hex(), delim, g.group('attrs').decode())

def fetch_uid(text):
    """The UID item of a FETCH response, or None."""
    m = re.search(rb'UID (\d+)', text)
    return int(m.group(1)) if m else None

def meta_line(text):
    """`<uid>\\t<size>\\t<internal date, unix>\\t<flags>` for one FETCH response with UID, FLAGS,
    RFC822.SIZE and INTERNALDATE; the session flag \\Recent left out."""
    size = re.search(rb'RFC822\.SIZE (\d+)', text).group(1).decode()
    flags = re.search(rb'FLAGS \(([^)]*)\)', text).group(1).decode().split()
    flags = [f for f in flags if f.lower() != '\\recent']
    date = re.search(rb'INTERNALDATE "([^"]+)"', text).group(1).decode().strip()
    unix = int(datetime.datetime.strptime(date, '%d-%b-%Y %H:%M:%S %z').timestamp())
    return '%d\t%s\t%d\t%s' % (fetch_uid(text), size, unix, ' '.join(flags))

def status_line(text):
    """`<uidvalidity> <uidnext> <messages>` from a STATUS response."""
    if isinstance(text, bytes):
        text = text.decode()
    return ' '.join(re.search(key + r' (\d+)', text).group(1) for key in ('UIDVALIDITY', 'UIDNEXT', 'MESSAGES'))
