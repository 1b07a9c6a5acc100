# The other client of tests/common/other_client.rs: one long-lived imaplib session driven line
# by line over stdin/stdout. Shares the mUTF-7 and LIST parsing with the oracles.
import imaplib, os, re, sys

from oracle_common import LIST_RE, mutf7_decode, mutf7_encode, quote, unquote

def mailbox(name):
    return quote(mutf7_encode(name))

def connect():
    c = imaplib.IMAP4('127.0.0.1', int(os.environ['ORACLE_PORT']))
    c.login(os.environ['ORACLE_USER'], os.environ['ORACLE_PASSWORD'])
    return c

m = connect()
out = sys.stdout

def folders():
    typ, data = m.list('""', '*')
    assert typ == 'OK', data
    for item in data:
        if not item:
            continue
        if isinstance(item, tuple):
            head, name = item[0], item[1]
            g = LIST_RE.match(head)
        else:
            g = LIST_RE.match(item)
            name = unquote(g.group('name'))
        if b'\\Noselect' in g.group('attrs') or b'\\NonExistent' in g.group('attrs'):
            continue
        yield mutf7_decode(name.decode('ascii'))

def snapshot():
    for name in folders():
        h = name.encode().hex()
        out.write('folder\t%s\n' % h)
        typ, data = m.select(mailbox(name), readonly=True)
        if typ != 'OK':
            continue
        if int(data[0]) == 0:
            continue
        typ, data = m.uid('FETCH', '1:*', '(UID FLAGS BODY.PEEK[HEADER.FIELDS (X-MODEL-TOKEN)])')
        assert typ == 'OK', data
        for item in data:
            if isinstance(item, tuple):
                head, body = item[0], item[1]
            else:
                continue
            uid = re.search(rb'UID (\d+)', head).group(1).decode()
            fl = re.search(rb'FLAGS \(([^)]*)\)', head)
            if fl is None:
                raise imaplib.IMAP4.error('no FLAGS in %r' % head)
            flags = fl.group(1).decode().split()
            t = re.search(rb'X-Model-Token:\s*(\S+)', body, re.I)
            token = t.group(1).decode() if t else '-'
            out.write('msg\t%s\t%s\t%s\t%s\n' % (h, uid, token, ' '.join(
                f for f in flags if f != '\\Recent')))

def main():
    global m
    for line in sys.stdin:
        # Dovecot closes a session whose selected folder another client deleted: log in
        # again and run the command once more.
        for attempt in (0, 1):
            try:
                run(line)
                break
            except (imaplib.IMAP4.abort, OSError) as e:
                m = connect()
                if line.startswith('append') or attempt == 1:
                    # Never sent twice: the first may have been stored.
                    out.write('no aborted %s\n' % str(e).replace('\n', ' '))
                    break
            except imaplib.IMAP4.error as e:
                out.write('no %s\n' % str(e).replace('\n', ' '))
                break
        out.write('.\n')
        out.flush()

def run(line):
        w = line.split()
        if True:
            if w[0] == 'hello':
                out.write('ok\n')
            elif w[0] == 'append':
                name = bytes.fromhex(w[1]).decode()
                flags = None if w[2] == '-' else '(%s)' % bytes.fromhex(w[2]).decode()
                typ, data = m.append(mailbox(name), flags, None, bytes.fromhex(w[3]))
                if typ == 'OK':
                    out.write('ok %s\n' % re.search(rb'APPENDUID \d+ (\d+)', data[0]).group(1).decode())
                else:
                    out.write('no %r\n' % data)
            elif w[0] == 'reflag':
                name = bytes.fromhex(w[1]).decode()
                typ, data = m.select(mailbox(name))
                if typ != 'OK':
                    out.write('gone\n')
                else:
                    typ, data = m.uid('SEARCH', 'HEADER', 'X-Model-Token', '"%s"' % w[2])
                    uids = (data[0] or b'').split()
                    if typ != 'OK' or len(uids) != 1:
                        out.write('gone\n')
                    else:
                        flag = bytes.fromhex(w[4]).decode()
                        typ, data = m.uid('STORE', uids[0].decode(), w[3], '(%s)' % flag)
                        ok = typ == 'OK' and any(d for d in data if d)
                        out.write('ok\n' if ok else 'gone\n')
            elif w[0] == 'snapshot':
                snapshot()
            else:
                out.write('error unknown command\n')

main()
