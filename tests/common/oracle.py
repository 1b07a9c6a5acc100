# The Dovecot oracle: Python's imaplib on the plaintext port, one command per run (see
# tests/common/oracle.rs for the commands). Parsing shared with servers_oracle.py is in
# oracle_common.py.

import hashlib, imaplib, os, re, ssl, sys

from oracle_common import fetch_uid, list_line, mailbox, meta_line, status_line

HOST = '127.0.0.1'

def check(result, what):
    typ, data = result
    if typ != 'OK':
        sys.exit('oracle: %s failed: %s %r' % (what, typ, data))
    return data

def connect():
    m = imaplib.IMAP4(HOST, int(os.environ['ORACLE_PORT']))
    m.login(os.environ['ORACLE_USER'], os.environ['ORACLE_PASSWORD'])
    return m

def select(m, folder_hex, readonly=True):
    check(m.select(mailbox(folder_hex), readonly=readonly), 'SELECT')

def cmd_list(m):
    for item in check(m.list('""', '*'), 'LIST'):
        if not item:
            continue
        if isinstance(item, tuple):
            line = list_line(item[0], item[1])
        else:
            line = list_line(item)
        if line is None:
            sys.exit('oracle: unparsable LIST response %r' % (item,))
        sys.stdout.write(line + '\n')

def bodies(m, folder_hex, uids):
    select(m, folder_hex)
    for item in check(m.uid('FETCH', uids, '(UID BODY.PEEK[])'), 'FETCH'):
        if isinstance(item, tuple):
            yield fetch_uid(item[0]), item[1]

def cmd_fetch(m, folder_hex, uids):
    out = sys.stdout.buffer
    for uid, body in bodies(m, folder_hex, uids):
        out.write(b'%d %d\n' % (uid, len(body)))
        out.write(body)

def cmd_sha256(m, folder_hex):
    for uid, body in bodies(m, folder_hex, '1:*'):
        print(uid, hashlib.sha256(body).hexdigest())

def cmd_meta(m, folder_hex):
    select(m, folder_hex)
    for item in check(m.uid('FETCH', '1:*', '(UID FLAGS RFC822.SIZE INTERNALDATE)'), 'FETCH'):
        if isinstance(item, tuple):
            item = item[0]
        if item:
            print(meta_line(item))

def cmd_status(m, folder_hex):
    data = check(m.status(mailbox(folder_hex), '(UIDVALIDITY UIDNEXT MESSAGES)'), 'STATUS')
    print(status_line(data[0]))

def cmd_expunge(m, folder_hex, uid):
    select(m, folder_hex, readonly=False)
    check(m.uid('STORE', uid, '+FLAGS.SILENT', '(\\Deleted)'), 'STORE')
    check(m.uid('EXPUNGE', uid), 'UID EXPUNGE')

def cmd_store(m, folder_hex, uid, op, flags):
    select(m, folder_hex, readonly=False)
    check(m.uid('STORE', uid, op, '(%s)' % flags), 'STORE')

def cmd_append(m, folder_hex, flags):
    message = sys.stdin.buffer.read()
    data = check(m.append(mailbox(folder_hex), '(%s)' % flags if flags else None, None, message), 'APPEND')
    print(re.search(rb'APPENDUID \d+ (\d+)', data[0]).group(1).decode())

def cmd_search(m, folder_hex, criteria_hex, literal_hex=None):
    select(m, folder_hex)
    criteria = bytes.fromhex(criteria_hex).decode()
    if literal_hex is not None:
        m.literal = bytes.fromhex(literal_hex)
        data = check(m.uid('SEARCH', 'CHARSET', 'UTF-8', criteria), 'SEARCH')
    else:
        data = check(m.uid('SEARCH', criteria), 'SEARCH')
    print(' '.join(sorted((data[0] or b'').decode().split(), key=int)))

def fetch_section(m, uid, section):
    for item in check(m.uid('FETCH', uid, '(BODY.PEEK[%s])' % section), 'FETCH'):
        if isinstance(item, tuple):
            return item[1]
    sys.exit('oracle: no BODY[%s] for uid %s' % (section, uid))

def cmd_parts(m, folder_hex, uid):
    import email, email.policy
    select(m, folder_hex)
    raw = fetch_section(m, uid, '')
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    out = []
    def dash(s):
        return s if s else '-'
    def text_of(message):
        # The first text/plain, else text/html, that is not an attachment; not inside
        # attached messages.
        found = {}
        def look(p):
            if p.get_content_type() == 'message/rfc822':
                return
            if p.is_multipart():
                for sub in p.get_payload():
                    look(sub)
            elif p.get_content_maintype() == 'text' and p.get_content_disposition() != 'attachment':
                found.setdefault(p.get_content_subtype(), p)
        look(message)
        return found.get('plain') or found.get('html')
    def message(inner, prefix):
        header_section = prefix + '.HEADER' if prefix else 'HEADER'
        out.append('header\t%s\t%s' % (dash(prefix), fetch_section(m, uid, header_section).hex()))
        t = text_of(inner)
        if t is not None:
            out.append('text\t%s\t%s\t%s' % (dash(prefix), t.get_content_type(),
                                              t.get_content().encode('utf-8').hex()))
        if inner.is_multipart():
            for i, sub in enumerate(inner.get_payload(), 1):
                part(sub, '%s.%d' % (prefix, i) if prefix else str(i))
        else:
            part(inner, prefix + '.1' if prefix else '1')
    def part(p, section):
        # A message/rfc822 part counts as multipart to Python (its payload is a list).
        if p.get_content_type() == 'message/rfc822':
            message(p.get_payload()[0], section)
        elif p.is_multipart():
            for i, sub in enumerate(p.get_payload(), 1):
                part(sub, '%s.%d' % (section, i))
        else:
            name = p.get_filename()
            out.append('leaf\t%s\t%s\t%s\t%s\t%s' % (
                section, p.get_content_type(), dash(p.get_content_charset()),
                name.encode('utf-8').hex() if name else '-',
                (p.get_payload(decode=True) or b'').hex()))
    message(msg, '')
    sys.stdout.write(''.join(line + '\n' for line in out))

def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == 'greeting-tls':
        ctx = ssl.create_default_context(cafile=args[0])
        m = imaplib.IMAP4_SSL(HOST, int(args[1]), ssl_context=ctx)
        sys.stdout.write(m.welcome.decode())
        m.logout()
        return
    if cmd == 'starttls':
        m = imaplib.IMAP4(HOST, int(os.environ['ORACLE_PORT']))
        m.starttls(ssl.create_default_context(cafile=args[0]))
        m.login(os.environ['ORACLE_USER'], os.environ['ORACLE_PASSWORD'])
        print(check(m.capability(), 'CAPABILITY')[0].decode())
        m.logout()
        return
    m = connect()
    if cmd == 'create':
        check(m.create(mailbox(args[0])), 'CREATE')
    elif cmd == 'delete':
        check(m.delete(mailbox(args[0])), 'DELETE')
    elif cmd == 'rename':
        check(m.rename(mailbox(args[0]), mailbox(args[1])), 'RENAME')
    else:
        globals()['cmd_' + cmd](m, *args)
    m.logout()

main()
