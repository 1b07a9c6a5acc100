//! Every command the filesystem sends, byte for byte: synchronising literals split into
//! chunks, LITERAL+ in one, user text always through AString.

use imapfs::imap::codec::encode::imap_date_time;
use imapfs::imap::codec::{
    Command, EncodeError, FetchAttr, ListReturn, QResync, SearchDate, SearchKey, SearchReturn,
    SelectSync, StoreMode,
};
use imapfs::imap::types::{Flag, MailboxName, ModSeq, SequenceSet, UidValidity};

/// The command as one string (it must need no continuation).
fn one(cmd: &Command) -> String {
    let e = cmd.encode("A1", false).unwrap();
    assert_eq!(e.chunks.len(), 1, "{:?}", e.chunks);
    String::from_utf8(e.chunks[0].clone()).unwrap()
}

fn chunks(cmd: &Command, literal_plus: bool) -> Vec<Vec<u8>> {
    cmd.encode("A1", literal_plus).unwrap().chunks
}

/// The command is refused as `EncodeError::Invalid`, for the reason named by `why`.
fn invalid(cmd: Command, why: &str) {
    match cmd.encode("A1", false) {
        Err(EncodeError::Invalid(reason)) => assert!(
            reason.contains(why),
            "{cmd:?}: refused for {reason:?}, not for {why:?}"
        ),
        other => panic!(
            "{cmd:?}: {:?}, not Invalid({why:?})",
            other.map(|e| e.chunks)
        ),
    }
}

fn mbox(s: &str) -> MailboxName {
    MailboxName::from_utf8(s, false)
}

fn set(nums: &[u32]) -> SequenceSet {
    SequenceSet::from_numbers(nums.iter().copied())
}

#[test]
fn select_and_examine() {
    let select = Command::Select {
        mailbox: mbox("INBOX"),
        read_only: false,
        sync: SelectSync::Plain,
    };
    assert_eq!(one(&select), "A1 SELECT INBOX\r\n");
    let examine = Command::Select {
        mailbox: mbox("Archive/2024"),
        read_only: true,
        sync: SelectSync::CondStore,
    };
    assert_eq!(one(&examine), "A1 EXAMINE Archive/2024 (CONDSTORE)\r\n");
    let examine = Command::Select {
        mailbox: mbox("\u{dc}n\u{ef}c\u{f8}d\u{e9} Folder"),
        read_only: true,
        sync: SelectSync::Plain,
    };
    assert_eq!(
        one(&examine),
        "A1 EXAMINE \"&ANw-n&AO8-c&APg-d&AOk- Folder\"\r\n"
    );
}

#[test]
fn select_qresync() {
    // RFC 7162 section 3.2.5.2 example.
    let q = QResync {
        uidvalidity: UidValidity::new(67890007).unwrap(),
        modseq: ModSeq(20050715194045000),
        known_uids: Some(SequenceSet(vec![(41, 41), (43, 211), (214, 541)])),
        seq_match: None,
    };
    let c = Command::Select {
        mailbox: mbox("INBOX"),
        read_only: false,
        sync: SelectSync::QResync(q.clone()),
    };
    assert_eq!(
        one(&c),
        "A1 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))\r\n"
    );
    assert_eq!(c.name(), "SELECT");
    let bare = QResync {
        known_uids: None,
        ..q.clone()
    };
    let c = Command::Select {
        mailbox: mbox("INBOX"),
        read_only: true,
        sync: SelectSync::QResync(bare),
    };
    assert_eq!(
        one(&c),
        "A1 EXAMINE INBOX (QRESYNC (67890007 20050715194045000))\r\n"
    );
    assert_eq!(c.name(), "EXAMINE");
    let with_match = QResync {
        seq_match: Some((
            SequenceSet(vec![(1, 15), (17, 17)]),
            SequenceSet(vec![(4, 4), (8, 9)]),
        )),
        ..q
    };
    let c = Command::Select {
        mailbox: mbox("INBOX"),
        read_only: false,
        sync: SelectSync::QResync(with_match),
    };
    assert_eq!(
        one(&c),
        "A1 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541 (1:15,17 4,8:9)))\r\n"
    );
}

#[test]
fn status() {
    let c = Command::Status {
        mailbox: mbox("Sent Items"),
        items: vec!["MESSAGES", "UIDNEXT", "UIDVALIDITY", "HIGHESTMODSEQ"],
    };
    assert_eq!(
        one(&c),
        "A1 STATUS \"Sent Items\" (MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)\r\n"
    );
    let bad = Command::Status {
        mailbox: mbox("INBOX"),
        items: vec!["MESSAGES)"],
    };
    invalid(bad, "`MESSAGES)` is not an atom");
}

#[test]
fn create_delete_rename() {
    assert_eq!(
        one(&Command::Create(mbox("Projects/R&D"))),
        "A1 CREATE Projects/R&-D\r\n"
    );
    assert_eq!(
        one(&Command::Delete(mbox("Old Stuff"))),
        "A1 DELETE \"Old Stuff\"\r\n"
    );
    let r = Command::Rename {
        from: mbox("a"),
        to: mbox("caf\u{e9}"),
    };
    assert_eq!(one(&r), "A1 RENAME a caf&AOk-\r\n");
    // With UTF8=ACCEPT the name is UTF-8 on the wire, hence a literal.
    let r = Command::Rename {
        from: mbox("a"),
        to: MailboxName::from_utf8("caf\u{e9}", true),
    };
    assert_eq!(
        chunks(&r, false),
        vec![b"A1 RENAME a {5}\r\n".to_vec(), "caf\u{e9}\r\n".into()]
    );
}

#[test]
fn store_variants() {
    let mut c = Command::Store {
        uid: true,
        set: set(&[1041]),
        mode: StoreMode::Add,
        silent: true,
        flags: vec![Flag::Deleted],
        unchanged_since: None,
    };
    assert_eq!(one(&c), "A1 UID STORE 1041 +FLAGS.SILENT (\\Deleted)\r\n");
    if let Command::Store {
        mode,
        silent,
        flags,
        unchanged_since,
        ..
    } = &mut c
    {
        *mode = StoreMode::Remove;
        *silent = false;
        *flags = vec![Flag::Seen, Flag::Keyword("$Forwarded".into())];
        *unchanged_since = Some(ModSeq(12345));
    }
    assert_eq!(
        one(&c),
        "A1 UID STORE 1041 (UNCHANGEDSINCE 12345) -FLAGS (\\Seen $Forwarded)\r\n"
    );
    let replace = Command::Store {
        uid: false,
        set: SequenceSet(vec![(2, 4)]),
        mode: StoreMode::Replace,
        silent: true,
        flags: vec![],
        unchanged_since: None,
    };
    assert_eq!(one(&replace), "A1 STORE 2:4 FLAGS.SILENT ()\r\n");
}

#[test]
fn copy_move_expunge() {
    let c = Command::Copy {
        uid: true,
        set: set(&[5, 6, 7, 9]),
        mailbox: mbox("Archive"),
    };
    assert_eq!(one(&c), "A1 UID COPY 5:7,9 Archive\r\n");
    let m = Command::Move {
        uid: true,
        set: set(&[42]),
        mailbox: mbox("Trash"),
    };
    assert_eq!(one(&m), "A1 UID MOVE 42 Trash\r\n");
    let m = Command::Move {
        uid: false,
        set: SequenceSet::from(3),
        mailbox: mbox("Junk"),
    };
    assert_eq!(one(&m), "A1 MOVE 3:* Junk\r\n");
    assert_eq!(one(&Command::Expunge), "A1 EXPUNGE\r\n");
    assert_eq!(
        one(&Command::UidExpunge(set(&[1042]))),
        "A1 UID EXPUNGE 1042\r\n"
    );
    invalid(
        Command::UidExpunge(SequenceSet::default()),
        "empty sequence set",
    );
    invalid(Command::UidExpunge(set(&[0])), "number 0");
}

#[test]
fn append_synchronising_and_literal_plus() {
    let msg = b"From: a@b\r\nSubject: hi\r\n\r\nbody\r\n".to_vec();
    let c = Command::Append {
        mailbox: mbox("Drafts"),
        flags: vec![Flag::Seen, Flag::Draft],
        date: Some(imap_date_time(1583223120)),
        message: msg.clone(),
    };
    let sync = chunks(&c, false);
    assert_eq!(
        sync,
        vec![
            b"A1 APPEND Drafts (\\Seen \\Draft) \" 3-Mar-2020 08:12:00 +0000\" {32}\r\n".to_vec(),
            [&msg[..], b"\r\n"].concat(),
        ]
    );
    let plus = chunks(&c, true);
    assert_eq!(plus.len(), 1);
    assert_eq!(
        plus[0],
        [
            &b"A1 APPEND Drafts (\\Seen \\Draft) \" 3-Mar-2020 08:12:00 +0000\" {32+}\r\n"[..],
            &msg,
            b"\r\n"
        ]
        .concat()
    );
    // Bare form; an empty message is still a literal.
    let c = Command::Append {
        mailbox: mbox("INBOX"),
        flags: vec![],
        date: None,
        message: vec![],
    };
    assert_eq!(
        chunks(&c, true),
        vec![b"A1 APPEND INBOX {0+}\r\n\r\n".to_vec()]
    );
    // A mailbox name that needs a literal, then the message: two continuations.
    let c = Command::Append {
        mailbox: MailboxName::from_wire(b"a\r\nb".to_vec(), false),
        flags: vec![],
        date: None,
        message: b"x".to_vec(),
    };
    assert_eq!(
        chunks(&c, false),
        vec![
            b"A1 APPEND {4}\r\n".to_vec(),
            b"a\r\nb {1}\r\n".to_vec(),
            b"x\r\n".to_vec()
        ]
    );
    let nul = Command::Append {
        mailbox: mbox("INBOX"),
        flags: vec![],
        date: None,
        message: b"a\0".to_vec(),
    };
    assert_eq!(nul.encode("A1", true), Err(EncodeError::Nul));
}

#[test]
fn date_time_for_append() {
    assert_eq!(imap_date_time(0), " 1-Jan-1970 00:00:00 +0000");
    assert_eq!(imap_date_time(837596665), "17-Jul-1996 09:44:25 +0000");
    assert_eq!(imap_date_time(-1), "31-Dec-1969 23:59:59 +0000");
    assert_eq!(imap_date_time(951782400), "29-Feb-2000 00:00:00 +0000");
}

#[test]
fn enable_id_namespace_idle_noop_quota() {
    let e = Command::Enable(vec!["QRESYNC".into(), "CONDSTORE".into()]);
    assert_eq!(one(&e), "A1 ENABLE QRESYNC CONDSTORE\r\n");
    invalid(Command::Enable(vec!["A B".into()]), "`A B` is not an atom");
    let id = Command::Id(vec![
        ("name".into(), "imapfs".into()),
        ("version".into(), "0.1.0".into()),
    ]);
    assert_eq!(
        one(&id),
        "A1 ID (\"name\" \"imapfs\" \"version\" \"0.1.0\")\r\n"
    );
    assert_eq!(one(&Command::Id(vec![])), "A1 ID NIL\r\n");
    assert_eq!(one(&Command::Namespace), "A1 NAMESPACE\r\n");
    assert_eq!(one(&Command::Idle), "A1 IDLE\r\n");
    // DONE carries no tag.
    assert_eq!(one(&Command::Done), "DONE\r\n");
    assert_eq!(one(&Command::Noop), "A1 NOOP\r\n");
    assert_eq!(
        one(&Command::GetQuotaRoot(mbox("INBOX"))),
        "A1 GETQUOTAROOT INBOX\r\n"
    );
    assert_eq!(
        one(&Command::GetQuota(b"".to_vec())),
        "A1 GETQUOTA \"\"\r\n"
    );
}

#[test]
fn list_plain_and_extended() {
    let l = Command::List {
        reference: b"".to_vec(),
        pattern: b"*".to_vec(),
    };
    assert_eq!(one(&l), "A1 LIST \"\" \"*\"\r\n");
    let ret = ListReturn {
        children: true,
        special_use: false,
        status: vec!["MESSAGES", "UIDNEXT"],
    };
    let l = Command::ListExtended {
        reference: b"".to_vec(),
        pattern: b"*".to_vec(),
        ret,
    };
    assert_eq!(
        one(&l),
        "A1 LIST \"\" \"*\" RETURN (CHILDREN STATUS (MESSAGES UIDNEXT))\r\n"
    );
    let ret = ListReturn {
        children: true,
        special_use: true,
        status: vec![],
    };
    let l = Command::ListExtended {
        reference: b"".to_vec(),
        pattern: b"%".to_vec(),
        ret,
    };
    assert_eq!(
        one(&l),
        "A1 LIST \"\" \"%\" RETURN (CHILDREN SPECIAL-USE)\r\n"
    );
    let ret = ListReturn {
        status: vec!["UIDVALIDITY"],
        ..ListReturn::default()
    };
    let l = Command::ListExtended {
        reference: b"".to_vec(),
        pattern: b"*".to_vec(),
        ret,
    };
    assert_eq!(
        one(&l),
        "A1 LIST \"\" \"*\" RETURN (STATUS (UIDVALIDITY))\r\n"
    );
}

#[test]
fn fetch_forms() {
    let f = Command::Fetch {
        uid: true,
        set: SequenceSet::from(1),
        attrs: vec![
            FetchAttr::Uid,
            FetchAttr::Flags,
            FetchAttr::Rfc822Size,
            FetchAttr::InternalDate,
            FetchAttr::ModSeq,
        ],
        changed_since: Some(ModSeq(7)),
    };
    assert_eq!(
        one(&f),
        "A1 UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE MODSEQ) (CHANGEDSINCE 7)\r\n"
    );
    let f = Command::Fetch {
        uid: true,
        set: set(&[7]),
        attrs: vec![
            FetchAttr::Envelope,
            FetchAttr::BodyStructure,
            FetchAttr::BodyPeek {
                section: "HEADER.FIELDS (SUBJECT FROM)".into(),
                partial: None,
            },
            FetchAttr::BodyPeek {
                section: String::new(),
                partial: Some((1048576, 1048576)),
            },
        ],
        changed_since: None,
    };
    assert_eq!(
        one(&f),
        "A1 UID FETCH 7 (ENVELOPE BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)] BODY.PEEK[]<1048576.1048576>)\r\n"
    );
}

#[test]
fn search_criteria() {
    let d = SearchDate::new(1994, 2, 1).unwrap();
    let c = Command::Search {
        uid: true,
        criteria: vec![SearchKey::Since(d), SearchKey::Uid(SequenceSet::from(100))],
        ret: vec![],
        utf8: false,
    };
    assert_eq!(one(&c), "A1 UID SEARCH SINCE 1-Feb-1994 UID 100:*\r\n");
    assert_eq!(c.name(), "UID SEARCH");
    let c = Command::Search {
        uid: false,
        criteria: vec![
            SearchKey::All,
            SearchKey::Text(b"invoice".to_vec()),
            SearchKey::Header {
                field: b"Message-ID".to_vec(),
                value: b"<a b@c>".to_vec(),
            },
            SearchKey::Not(Box::new(SearchKey::Deleted)),
            SearchKey::Or(
                Box::new(SearchKey::Seen),
                Box::new(SearchKey::ModSeq(ModSeq(9))),
            ),
            SearchKey::Before(SearchDate::new(2024, 12, 31).unwrap()),
        ],
        ret: vec![
            SearchReturn::Min,
            SearchReturn::Max,
            SearchReturn::Count,
            SearchReturn::All,
        ],
        utf8: false,
    };
    assert_eq!(
        one(&c),
        "A1 SEARCH RETURN (MIN MAX COUNT ALL) ALL TEXT invoice HEADER Message-ID \"<a b@c>\" NOT DELETED OR SEEN MODSEQ 9 BEFORE 31-Dec-2024\r\n"
    );
}

#[test]
fn search_user_text_never_breaks_the_command() {
    // CR/LF in user text goes as a literal, after a continuation.
    let c = Command::Search {
        uid: true,
        criteria: vec![SearchKey::Text(b"x\r\nA2 DELETE INBOX".to_vec())],
        ret: vec![],
        utf8: false,
    };
    assert_eq!(
        chunks(&c, false),
        vec![
            b"A1 UID SEARCH TEXT {18}\r\n".to_vec(),
            b"x\r\nA2 DELETE INBOX\r\n".to_vec()
        ]
    );
    // Non-ASCII text names its charset, unless UTF8=ACCEPT is on.
    let text = "Gr\u{fc}\u{df}e".as_bytes().to_vec();
    let c = Command::Search {
        uid: true,
        criteria: vec![SearchKey::Text(text.clone())],
        ret: vec![],
        utf8: false,
    };
    assert_eq!(
        chunks(&c, true),
        vec![[
            &b"A1 UID SEARCH CHARSET UTF-8 TEXT {7+}\r\n"[..],
            &text,
            b"\r\n"
        ]
        .concat()]
    );
    let c = Command::Search {
        uid: true,
        criteria: vec![SearchKey::Text(text.clone())],
        ret: vec![],
        utf8: true,
    };
    assert_eq!(
        chunks(&c, true),
        vec![[&b"A1 UID SEARCH TEXT {7+}\r\n"[..], &text, b"\r\n"].concat()]
    );
    // NUL cannot be sent; empty criteria are refused.
    let c = Command::Search {
        uid: true,
        criteria: vec![SearchKey::Text(b"\0".to_vec())],
        ret: vec![],
        utf8: false,
    };
    assert_eq!(c.encode("A1", false), Err(EncodeError::Nul));
    let c = Command::Search {
        uid: true,
        criteria: vec![],
        ret: vec![],
        utf8: false,
    };
    invalid(c, "SEARCH without criteria");
    // A hand-built chain of NOTs cannot recurse without end.
    let mut k = SearchKey::All;
    for _ in 0..1_000 {
        k = SearchKey::Not(Box::new(k));
    }
    let c = Command::Search {
        uid: true,
        criteria: vec![k],
        ret: vec![],
        utf8: false,
    };
    invalid(c, "nested too deeply");
}

#[test]
fn search_dates() {
    assert!(SearchDate::new(2023, 2, 29).is_none());
    assert!(SearchDate::new(2024, 2, 29).is_some());
    assert!(SearchDate::new(2024, 13, 1).is_none());
    assert!(SearchDate::new(0, 1, 1).is_none());
    assert_eq!(SearchDate::from_unix(0).to_string(), "1-Jan-1970");
    assert_eq!(SearchDate::from_unix(1583223120).to_string(), "3-Mar-2020");
}

#[test]
fn login_and_authenticate() {
    let c = Command::Login {
        user: b"me@example.org".to_vec(),
        password: b"p\"w\\".to_vec(),
    };
    let e = c.encode("A1", false).unwrap();
    assert!(e.sensitive);
    assert_eq!(
        e.chunks,
        vec![b"A1 LOGIN me@example.org \"p\\\"w\\\\\"\r\n".to_vec()]
    );
    let c = Command::Authenticate {
        mechanism: "XOAUTH2".into(),
        initial: Some("dXNlcj0=".into()),
    };
    let e = c.encode("A1", false).unwrap();
    assert!(e.sensitive);
    assert_eq!(
        e.chunks,
        vec![b"A1 AUTHENTICATE XOAUTH2 dXNlcj0=\r\n".to_vec()]
    );
    let c = Command::Authenticate {
        mechanism: "CRAM-MD5".into(),
        initial: None,
    };
    assert_eq!(one(&c), "A1 AUTHENTICATE CRAM-MD5\r\n");
}
