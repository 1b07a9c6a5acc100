//! The response grammar a client meets, beyond the basics: ENVELOPE, BODYSTRUCTURE, ESEARCH,
//! NAMESPACE, QUOTA, ID, literal8; and the server quirks from the field notes, each pinned by a
//! test named after it with its source.

use imapfs::imap::codec::parse::parse_response;
use imapfs::imap::codec::{Limits, ResponseDecoder};
use imapfs::imap::types::*;

fn parse(frame: &[u8]) -> Response {
    parse_response(frame, 64, false)
        .unwrap_or_else(|e| panic!("{e} in {:?}", String::from_utf8_lossy(frame)))
}

fn fetch(frame: &[u8]) -> Vec<FetchItem> {
    match parse(frame) {
        Response::Untagged(Untagged::Fetch { items, .. }) => items,
        other => panic!("not a FETCH: {other:?}"),
    }
}

fn untagged(frame: &[u8]) -> Untagged {
    match parse(frame) {
        Response::Untagged(u) => u,
        other => panic!("not untagged: {other:?}"),
    }
}

fn body_of(frame: &[u8]) -> BodyStructure {
    fetch(frame)
        .into_iter()
        .find_map(|i| match i {
            FetchItem::BodyStructure(b) => Some(*b),
            _ => None,
        })
        .expect("a BODYSTRUCTURE item")
}

fn s(v: &str) -> Option<Vec<u8>> {
    Some(v.as_bytes().to_vec())
}

fn addr(name: Option<&str>, mailbox: &str, host: &str) -> Address {
    Address {
        name: name.and_then(s),
        adl: None,
        mailbox: s(mailbox),
        host: s(host),
    }
}

fn all(wire: &[u8]) -> Vec<Result<Response, String>> {
    let mut d = ResponseDecoder::new(Limits::default());
    d.feed(wire);
    let mut out = Vec::new();
    loop {
        match d.next_response() {
            Ok(Some(r)) => out.push(Ok(r)),
            Ok(None) => break,
            Err(e) if e.is_recoverable() => out.push(Err(e.to_string())),
            Err(e) => panic!("{e}"),
        }
    }
    out
}

// ----- ENVELOPE -----

#[test]
fn envelope_with_groups_nil_and_literal() {
    let wire = b"* 3 FETCH (ENVELOPE (\"Tue, 3 Mar 2020 09:12:00 +0100\" {10}\r\nRe: caf\xc3\xa9! ((\"Ann\" NIL \"ann\" \"example.org\")) NIL NIL ((NIL NIL \"team\" NIL)(NIL NIL \"bob\" \"example.net\")(NIL NIL NIL NIL)) NIL NIL \"<a@b>\" \"<c@d>\"))\r\n";
    let items = fetch(wire);
    let FetchItem::Envelope(env) = &items[0] else {
        panic!("{items:?}")
    };
    assert_eq!(env.date, s("Tue, 3 Mar 2020 09:12:00 +0100"));
    assert_eq!(env.subject, Some(b"Re: caf\xc3\xa9!".to_vec()));
    assert_eq!(env.from, vec![addr(Some("Ann"), "ann", "example.org")]);
    assert!(env.sender.is_empty() && env.reply_to.is_empty());
    // A group: start marker (host NIL), member, end marker (all NIL).
    assert_eq!(env.to.len(), 3);
    assert_eq!(
        env.to[0],
        Address {
            mailbox: s("team"),
            ..Address::default()
        }
    );
    assert_eq!(env.to[1], addr(None, "bob", "example.net"));
    assert_eq!(env.to[2], Address::default());
    assert_eq!(env.in_reply_to, s("<a@b>"));
    assert_eq!(env.message_id, s("<c@d>"));
}

// ----- BODYSTRUCTURE -----

#[test]
fn bodystructure_text_with_extension_data() {
    let b = body_of(b"* 1 FETCH (BODYSTRUCTURE (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"UTF-8\" \"FORMAT\" \"flowed\") \"<id@x>\" \"A note\" \"QUOTED-PRINTABLE\" 1234 42 \"md5sum\" (\"inline\" (\"filename\" \"a.txt\")) (\"en\" \"de\") \"http://x/a.txt\" 7 (\"future\" (1 2))))\r\n");
    assert_eq!(
        b,
        BodyStructure::Single {
            media_type: "TEXT".into(),
            subtype: "PLAIN".into(),
            params: vec![
                ("CHARSET".into(), "UTF-8".into()),
                ("FORMAT".into(), "flowed".into())
            ],
            id: s("<id@x>"),
            description: s("A note"),
            encoding: "QUOTED-PRINTABLE".into(),
            size: 1234,
            lines: Some(42),
            message: None,
            ext: BodyExtension {
                md5: s("md5sum"),
                disposition: Some(("inline".into(), vec![("filename".into(), "a.txt".into())])),
                language: vec!["en".into(), "de".into()],
                location: s("http://x/a.txt"),
            },
        }
    );
}

#[test]
fn bodystructure_nested_multipart_with_message_rfc822() {
    let wire = b"* 9 FETCH (UID 77 BODYSTRUCTURE (((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 10 1 NIL NIL NIL NIL)(\"text\" \"html\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 20 2 NIL NIL NIL NIL) \"alternative\" (\"boundary\" \"b2\") NIL NIL NIL)(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 300 (\"Mon, 1 Jan 2024 00:00:00 +0000\" \"inner\" ((NIL NIL \"x\" \"y\")) NIL NIL NIL NIL NIL NIL NIL) (\"text\" \"plain\" NIL NIL NIL \"8bit\" 5 1) 12 NIL (\"attachment\" NIL) NIL NIL) \"mixed\" (\"boundary\" \"b1\") NIL (\"en\") NIL))\r\n";
    let b = body_of(wire);
    let BodyStructure::Multi {
        parts,
        subtype,
        params,
        ext,
    } = b
    else {
        panic!()
    };
    assert_eq!(subtype, "mixed");
    assert_eq!(params, vec![("boundary".into(), "b1".into())]);
    assert_eq!(ext.language, vec!["en".to_string()]);
    assert_eq!(parts.len(), 2);
    let BodyStructure::Multi {
        parts: alt,
        subtype: alt_sub,
        ..
    } = &parts[0]
    else {
        panic!()
    };
    assert_eq!(alt_sub, "alternative");
    assert_eq!(alt.len(), 2);
    let BodyStructure::Single {
        media_type,
        subtype,
        size,
        lines,
        message,
        ext,
        ..
    } = &parts[1]
    else {
        panic!()
    };
    assert_eq!(
        (media_type.as_str(), subtype.as_str(), *size, *lines),
        ("message", "rfc822", 300, Some(12))
    );
    let (env, inner) = message
        .as_ref()
        .expect("message/rfc822 carries envelope and body");
    assert_eq!(env.subject, s("inner"));
    assert!(matches!(
        **inner,
        BodyStructure::Single {
            size: 5,
            lines: Some(1),
            ..
        }
    ));
    assert_eq!(ext.disposition, Some(("attachment".into(), vec![])));
}

#[test]
fn body_without_extension_data() {
    // FETCH BODY (the non-extensible form) reads into the same structure.
    let b = body_of(
        b"* 2 FETCH (BODY (\"IMAGE\" \"PNG\" (\"NAME\" \"x.png\") NIL NIL \"BASE64\" 4096))\r\n",
    );
    assert!(matches!(
        b,
        BodyStructure::Single { size: 4096, lines: None, message: None, ref ext, .. } if *ext == BodyExtension::default()
    ));
}

#[test]
fn bodystructure_multipart_without_parts() {
    // net-imap bug 7153: servers send multipart/* with no parts as `("MIXED")`.
    let b = body_of(b"* 1038 FETCH (BODY (\"MIXED\"))\r\n");
    assert!(
        matches!(b, BodyStructure::Multi { ref parts, ref subtype, .. } if parts.is_empty() && subtype == "MIXED")
    );
    // ... and with extension data, inside a message/rfc822 (net-imap, mixed boundary case).
    let wire = b"* 1 FETCH (BODYSTRUCTURE (\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 2177 (NIL \"s\" NIL NIL NIL NIL NIL NIL NIL NIL) (\"MIXED\" (\"BOUNDARY\" \"000e\") NIL NIL) 37 NIL NIL NIL))\r\n";
    let BodyStructure::Single {
        message: Some((_, inner)),
        lines,
        ..
    } = body_of(wire)
    else {
        panic!()
    };
    assert_eq!(lines, Some(37));
    assert!(matches!(*inner, BodyStructure::Multi { ref params, .. } if params[0].1 == "000e"));
}

#[test]
fn bodystructure_message_rfc822_sent_as_basic() {
    // net-imap bug 6397/7147: message/rfc822 without envelope, body and lines.
    let wire = b"* 980 FETCH (BODYSTRUCTURE ((\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 1 1)(\"MESSAGE\" \"RFC822\" (\"NAME\" \"Fw.eml\") NIL NIL \"7BIT\" 1980088 NIL (\"ATTACHMENT\" (\"FILENAME\" \"Fw.eml\")) NIL) \"MIXED\"))\r\n";
    let BodyStructure::Multi { parts, .. } = body_of(wire) else {
        panic!()
    };
    let BodyStructure::Single {
        message, size, ext, ..
    } = &parts[1]
    else {
        panic!()
    };
    assert!(message.is_none());
    assert_eq!(*size, 1980088);
    assert_eq!(ext.disposition.as_ref().unwrap().0, "ATTACHMENT");
}

#[test]
fn bodystructure_nesting_is_bounded() {
    // 199 multiparts around one text part: 200 levels of body.
    let mut wire = b"* 1 FETCH (BODYSTRUCTURE ".to_vec();
    wire.extend(std::iter::repeat_n(b'(', 199));
    wire.extend_from_slice(b"(\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 1 1)");
    for _ in 0..199 {
        wire.extend_from_slice(b" \"MIXED\")");
    }
    wire.extend_from_slice(b")\r\n");
    let err = parse_response(&wire, 64, false).unwrap_err();
    assert!(err.to_string().contains("nesting"), "{err}");
    // Within the limit the same shape parses.
    assert!(parse_response(&wire, 256, false).is_ok());
    // Deep envelopes inside message/rfc822 count too.
    let mut wire = b"* 1 FETCH (BODYSTRUCTURE ".to_vec();
    let msg = b"(\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 1 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) ";
    for _ in 0..100 {
        wire.extend_from_slice(msg);
    }
    wire.extend_from_slice(b"(\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 1 1)");
    for _ in 0..100 {
        wire.extend_from_slice(b" 1)");
    }
    wire.extend_from_slice(b")\r\n");
    let err = parse_response(&wire, 64, false).unwrap_err();
    assert!(err.to_string().contains("nesting deeper than 64"), "{err}");
    assert!(parse_response(&wire, 512, false).is_ok());
}

// ----- literal8 -----

#[test]
fn literal8_where_strings_may_appear() {
    let items = fetch(b"* 4 FETCH (UID 9 BINARY[1] ~{4}\r\n\x00\x01\r\n BINARY.SIZE[1] 4)\r\n");
    assert_eq!(
        items[1],
        FetchItem::Body {
            section: "1".into(),
            origin: None,
            data: Some(b"\x00\x01\r\n".to_vec())
        }
    );
    assert_eq!(
        items[2],
        FetchItem::BinarySize {
            section: "1".into(),
            size: 4
        }
    );
    let u = untagged(b"* LIST () \"/\" ~{3}\r\na/b\r\n");
    let Untagged::List(item) = u else { panic!() };
    assert_eq!(item.name.raw(), b"a/b");
    // Through the decoder, split anywhere.
    let wire = b"* 4 FETCH (BINARY[] ~{3}\r\n)\r\n BODY[]<0> {0}\r\n)\r\n";
    let rs = all(wire);
    assert_eq!(rs.len(), 1);
    let Ok(Response::Untagged(Untagged::Fetch { items, .. })) = &rs[0] else {
        panic!("{rs:?}")
    };
    assert_eq!(items.len(), 2);
}

// ----- ESEARCH, NAMESPACE, QUOTA, ID -----

#[test]
fn esearch_full() {
    let u = untagged(b"* ESEARCH (TAG \"A1\") UID MIN 1 MAX 5 COUNT 3 ALL 1:3,5 MODSEQ 7\r\n");
    assert_eq!(
        u,
        Untagged::ESearch(ESearch {
            tag: Some("A1".into()),
            uid: true,
            min: Some(1),
            max: Some(5),
            count: Some(3),
            all: Some(SequenceSet(vec![(1, 3), (5, 5)])),
            modseq: Some(ModSeq(7)),
            partial: None,
            other: vec![],
        })
    );
}

#[test]
fn esearch_empty_and_unknown_return_data() {
    assert_eq!(
        untagged(b"* ESEARCH (TAG \"A2\")\r\n"),
        Untagged::ESearch(ESearch {
            tag: Some("A2".into()),
            ..ESearch::default()
        })
    );
    let Untagged::ESearch(es) =
        untagged(b"* ESEARCH (TAG \"A3\" MAILBOX \"INBOX\" UIDVALIDITY 5) UID PARTIAL (1:10 101:105) COUNT 9\r\n")
    else {
        panic!()
    };
    assert_eq!(es.count, Some(9));
    assert_eq!(
        es.partial,
        Some(PartialResult {
            range: (1, 10),
            results: SequenceSet(vec![(101, 105)]),
        })
    );
    let Untagged::ESearch(es) = untagged(b"* ESEARCH UID X-NEW (1 (2)) COUNT 1\r\n") else {
        panic!()
    };
    assert_eq!(es.other, vec![("X-NEW".to_string(), b"(1 (2))".to_vec())]);
    assert_eq!(es.count, Some(1));
}

/// Issue 17: PARTIAL as Dovecot 2.3 (CONTEXT=SEARCH, RFC 5267) and RFC 9394 send it: a
/// positive or negative range of positions, then a UID set or NIL.
#[test]
fn esearch_partial_pages() {
    let partial = |line: &[u8]| match untagged(line) {
        Untagged::ESearch(es) => es.partial,
        other => panic!("{other:?}"),
    };
    // RFC 9394 section 4.1's examples.
    assert_eq!(
        partial(b"* ESEARCH (TAG \"A01\") UID PARTIAL (-1:-100 200:250,252:300)\r\n"),
        Some(PartialResult {
            range: (-1, -100),
            results: SequenceSet(vec![(200, 250), (252, 300)]),
        })
    );
    assert_eq!(
        partial(b"* ESEARCH (TAG \"A04\") UID PARTIAL (23500:24000 NIL)\r\n"),
        Some(PartialResult {
            range: (23500, 24000),
            results: SequenceSet::default(),
        })
    );
    // Dovecot 2.3's form, with COUNT beside it.
    let Untagged::ESearch(es) =
        untagged(b"* ESEARCH (TAG \"c\") UID COUNT 500002 PARTIAL (1:3 2,4:5)\r\n")
    else {
        panic!()
    };
    assert_eq!(es.count, Some(500_002));
    assert_eq!(
        es.partial.unwrap().results,
        SequenceSet(vec![(2, 2), (4, 5)])
    );
    // Broken pages are errors, not guesses.
    for bad in [
        &b"* ESEARCH UID PARTIAL (0:5 1)\r\n"[..],
        b"* ESEARCH UID PARTIAL (1:-5 1)\r\n",
        b"* ESEARCH UID PARTIAL (1:5)\r\n",
        b"* ESEARCH UID PARTIAL 1:5 1\r\n",
    ] {
        assert!(
            parse_response(bad, 64, false).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn namespace_with_nil_groups_and_extensions() {
    assert_eq!(
        untagged(b"* NAMESPACE ((\"\" \"/\")(\"#mh/\" \"/\" \"X-PARAM\" (\"FLAG1\" \"FLAG2\"))) NIL ((\"#shared/\" NIL))\r\n"),
        Untagged::Namespace(Namespaces {
            personal: vec![(b"".to_vec(), Some('/')), (b"#mh/".to_vec(), Some('/'))],
            other: vec![],
            shared: vec![(b"#shared/".to_vec(), None)],
        })
    );
    assert_eq!(
        untagged(b"* NAMESPACE NIL NIL NIL\r\n"),
        Untagged::Namespace(Namespaces::default())
    );
}

#[test]
fn quota_and_quotaroot() {
    assert_eq!(
        untagged(b"* QUOTA \"\" (STORAGE 10 512 message 3 1000)\r\n"),
        Untagged::Quota {
            root: vec![],
            resources: vec![
                QuotaResource {
                    name: "STORAGE".into(),
                    usage: 10,
                    limit: 512
                },
                QuotaResource {
                    name: "MESSAGE".into(),
                    usage: 3,
                    limit: 1000
                },
            ],
        }
    );
    assert_eq!(
        untagged(b"* QUOTA \"User quota\" ()\r\n"),
        Untagged::Quota {
            root: b"User quota".to_vec(),
            resources: vec![]
        }
    );
    let Untagged::QuotaRoot { mailbox, roots } = untagged(b"* QUOTAROOT INBOX \"\" \"other\"\r\n")
    else {
        panic!()
    };
    assert_eq!(mailbox.as_str(), "INBOX");
    assert_eq!(roots, vec![b"".to_vec(), b"other".to_vec()]);
    let Untagged::QuotaRoot { roots, .. } = untagged(b"* QUOTAROOT comp.mail.mime\r\n") else {
        panic!()
    };
    assert!(roots.is_empty());
}

#[test]
fn id_nil_and_list() {
    assert_eq!(untagged(b"* ID NIL\r\n"), Untagged::Id(vec![]));
    assert_eq!(
        untagged(b"* ID (\"name\" \"Dovecot\" \"version\" NIL \"os\" {5}\r\nLinux)\r\n"),
        Untagged::Id(vec![
            ("name".into(), Some("Dovecot".into())),
            ("version".into(), None),
            ("os".into(), Some("Linux".into())),
        ])
    );
}

// ----- unknown things stay Other -----

#[test]
fn unknown_responses_items_and_codes_are_kept_raw() {
    let u = untagged(b"* XPIG-LATIN ow-nay eaking-spay (ig-pay {3}\r\natl)\r\n");
    let Untagged::Other { keyword, raw } = u else {
        panic!()
    };
    assert_eq!(keyword, "XPIG-LATIN");
    assert!(raw.starts_with(b"* XPIG-LATIN"));
    assert!(matches!(
        untagged(b"* 7 XFOO bar\r\n"),
        Untagged::Other { .. }
    ));
    let items = fetch(
        b"* 1 FETCH (X-ACME-TAGS (\"\\\\Inbox\" foo) UID 3 X-SNIPPET[1]<0> \"hi\" PREVIEW NIL)\r\n",
    );
    assert_eq!(
        items[0],
        FetchItem::Other {
            name: "X-ACME-TAGS".into(),
            raw: b"(\"\\\\Inbox\" foo)".to_vec()
        }
    );
    assert_eq!(items[1], FetchItem::Uid(Uid::new(3).unwrap()));
    assert_eq!(
        items[2],
        FetchItem::Other {
            name: "X-SNIPPET[1]<0>".into(),
            raw: b"\"hi\"".to_vec()
        }
    );
    assert_eq!(
        items[3],
        FetchItem::Other {
            name: "PREVIEW".into(),
            raw: b"NIL".to_vec()
        }
    );
    let Response::Tagged(t) = parse(b"A1 NO [X-NEW-CODE (1 2)] nope\r\n") else {
        panic!()
    };
    assert_eq!(
        t.text.code,
        Some(Code::Other {
            name: "X-NEW-CODE".into(),
            rest: Some("(1 2)".into())
        })
    );
    // A known code that does not parse is kept raw too, never an error.
    let Response::Tagged(t) = parse(b"A1 OK [UIDNEXT x] hm\r\n") else {
        panic!()
    };
    assert_eq!(
        t.text.code,
        Some(Code::Other {
            name: "UIDNEXT".into(),
            rest: Some("x".into())
        })
    );
    // Unknown STATUS items with non-numeric values are skipped.
    let Untagged::StatusData { items, .. } =
        untagged(b"* STATUS INBOX (MAILBOXID (F2212ea87) MESSAGES 4)\r\n")
    else {
        panic!()
    };
    assert_eq!(items, vec![StatusItem::Messages(4)]);
}

#[test]
fn new_response_codes() {
    let code = |w: &[u8]| match parse(w) {
        Response::Tagged(t) => t.text.code,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        code(b"A1 NO [HASCHILDREN] has children\r\n"),
        Some(Code::HasChildren)
    );
    assert_eq!(
        code(b"A1 NO [BADCHARSET (UTF-8 \"US-ASCII\")] bad\r\n"),
        Some(Code::BadCharset(vec!["UTF-8".into(), "US-ASCII".into()]))
    );
    assert_eq!(
        code(b"A1 OK [UIDNOTSTICKY] x\r\n"),
        Some(Code::UidNotSticky)
    );
}

#[test]
fn known_response_that_does_not_parse_is_an_error_and_the_stream_goes_on() {
    // Source: FIELD-NOTES "A truncated or unparsable FETCH is an error to report".
    let rs = all(b"* 1 FETCH (UID)\r\n* 2 FETCH (UID 5)\r\n");
    assert_eq!(rs.len(), 2, "{rs:?}");
    let err = rs[0].as_ref().unwrap_err();
    assert_eq!(
        err,
        "malformed server response (FETCH: expected a space at byte 14): * 1 FETCH (UID).."
    );
    assert!(rs[1].is_ok(), "{:?}", rs[1]);
}

// ----- server quirks (FIELD-NOTES "Server quirks a client must survive") -----

#[test]
fn quirk_exchange_status_double_space() {
    // Source: FIELD-NOTES (Exchange STATUS: doubled and trailing spaces).
    let u = untagged(b"* STATUS  \"INBOX\"  (MESSAGES 231  UIDNEXT 44292 )\r\n");
    let Untagged::StatusData { mailbox, items } = u else {
        panic!()
    };
    assert_eq!(mailbox.as_str(), "INBOX");
    assert_eq!(
        items,
        vec![
            StatusItem::Messages(231),
            StatusItem::UidNext(Uid::new(44292).unwrap())
        ]
    );
}

#[test]
fn quirk_gmail_missing_resp_text() {
    // Source: FIELD-NOTES (Gmail, iCloud: missing resp-text).
    let Response::Tagged(t) = parse(b"A1 OK\r\n") else {
        panic!()
    };
    assert_eq!((t.status, t.text.text.as_str()), (Status::Ok, ""));
    let u = untagged(b"* OK [UIDVALIDITY 42]\r\n");
    let Untagged::Status { text, .. } = u else {
        panic!()
    };
    assert_eq!(
        text.code,
        Some(Code::UidValidity(UidValidity::new(42).unwrap()))
    );
    assert_eq!(parse(b"+\r\n"), Response::Continue(ResponseText::default()));
    assert!(matches!(
        parse(b"* BYE\r\n"),
        Response::Untagged(Untagged::Status {
            status: Status::Bye,
            ..
        })
    ));
}

#[test]
fn quirk_mailru_nil_string() {
    // Source: FIELD-NOTES (Mail.ru: NIL where a string belongs).
    let b = body_of(b"* 1 FETCH (BODYSTRUCTURE (\"text\" \"plain\" NIL NIL NIL NIL 12 NIL))\r\n");
    assert!(
        matches!(b, BodyStructure::Single { ref encoding, size: 12, lines: None, .. } if encoding.is_empty())
    );
    let u = untagged(b"* LIST (\\HasNoChildren) NIL NIL\r\n");
    assert!(matches!(u, Untagged::List(_)));
    let items = fetch(b"* 1 FETCH (UID 4 BODY[] NIL)\r\n");
    assert_eq!(
        items[1],
        FetchItem::Body {
            section: String::new(),
            origin: None,
            data: None
        }
    );
}

#[test]
fn quirk_icloud_no_rfc822() {
    // Source: FIELD-NOTES (iCloud omits RFC822 items; fetch BODY[] / BODY.PEEK[] instead).
    // The reply to `UID FETCH n (UID RFC822.SIZE BODY.PEEK[])` may lack RFC822.SIZE: the
    // response still parses and the body is there.
    let items = fetch(b"* 5 FETCH (UID 12 BODY[] {5}\r\nhello)\r\n");
    assert_eq!(items.len(), 2);
    assert!(!items
        .iter()
        .any(|i| matches!(i, FetchItem::Rfc822Size(_) | FetchItem::Rfc822 { .. })));
    assert_eq!(
        items[1],
        FetchItem::Body {
            section: String::new(),
            origin: None,
            data: Some(b"hello".to_vec())
        }
    );
}

#[test]
fn quirk_ok_progress_lines_during_fetch() {
    // Source: FIELD-NOTES (`* OK` progress lines during long commands).
    let wire = b"* 1 FETCH (UID 1 BODY[] {3}\r\nabc)\r\n* OK Still here\r\n* OK [INPROGRESS (\"A7\" 1 2)] Working {5}\r\n* 2 FETCH (UID 2 BODY[] {3}\r\ndef)\r\nA7 OK Fetch completed.\r\n";
    let rs = all(wire);
    assert_eq!(rs.len(), 5, "{rs:?}");
    assert!(rs.iter().all(|r| r.is_ok()));
    let Ok(Response::Untagged(Untagged::Status { text, .. })) = &rs[2] else {
        panic!()
    };
    assert!(matches!(&text.code, Some(Code::Other { name, .. }) if name == "INPROGRESS"));
    assert_eq!(text.text, "Working {5}");
}

#[test]
fn quirk_8bit_in_quoted_and_text() {
    // Source: FIELD-NOTES (8-bit bytes in quoted strings and resp-text).
    let Response::Tagged(t) = parse(b"A1 NO Ung\xfcltiger Name \xe2\x80\x94 \xff\r\n") else {
        panic!()
    };
    assert!(t.text.text.starts_with("Ung"));
    let Untagged::List(item) = untagged(b"* LIST () \"/\" \"Entw\xc3\xbcrfe\"\r\n") else {
        panic!()
    };
    assert_eq!(item.name.raw(), b"Entw\xc3\xbcrfe");
    let items = fetch(b"* 1 FETCH (ENVELOPE (NIL \"\xe6\x97\xa5\xe6\x9c\xac\" NIL NIL NIL NIL NIL NIL NIL NIL))\r\n");
    let FetchItem::Envelope(env) = &items[0] else {
        panic!()
    };
    assert_eq!(env.subject.as_deref(), Some("\u{65e5}\u{672c}".as_bytes()));
}

#[test]
fn quirk_yahoo_search_extra_spaces() {
    // Source: FIELD-NOTES (Yahoo SEARCH: extra spaces).
    assert_eq!(
        untagged(b"* SEARCH  1 2   3 \r\n"),
        Untagged::Search {
            nums: vec![1, 2, 3],
            modseq: None
        }
    );
    assert_eq!(
        untagged(b"* SEARCH 2 5 ( MODSEQ 917162500 ) \r\n"),
        Untagged::Search {
            nums: vec![2, 5],
            modseq: Some(ModSeq(917162500))
        }
    );
}

#[test]
fn quirk_fetch_items_any_order() {
    // Source: FIELD-NOTES (FETCH items in any order).
    let a = fetch(b"* 3 FETCH (UID 9 FLAGS (\\Seen) RFC822.SIZE 10 INTERNALDATE \"01-Jan-2020 00:00:00 +0000\" MODSEQ (5))\r\n");
    let mut b = fetch(b"* 3 FETCH (MODSEQ (5) INTERNALDATE \"01-Jan-2020 00:00:00 +0000\" RFC822.SIZE 10 FLAGS (\\Seen) UID 9)\r\n");
    b.reverse();
    assert_eq!(a, b);
}

#[test]
fn quirk_literals_anywhere_a_string_can_be() {
    // Source: FIELD-NOTES (literals anywhere a string can be).
    let u = untagged(b"* STATUS {5}\r\nINBOX (MESSAGES 1)\r\n");
    assert!(matches!(u, Untagged::StatusData { ref mailbox, .. } if mailbox.as_str() == "INBOX"));
    let b = body_of(b"* 1 FETCH (BODYSTRUCTURE ({4}\r\nTEXT {5}\r\nPLAIN ({7}\r\nCHARSET {5}\r\nUTF-8) NIL NIL {4}\r\n7BIT 3 1))\r\n");
    assert!(matches!(b, BodyStructure::Single { ref params, .. } if params[0].1 == "UTF-8"));
    let Untagged::Quota { root, .. } = untagged(b"* QUOTA {4}\r\nroot (STORAGE 1 2)\r\n") else {
        panic!()
    };
    assert_eq!(root, b"root");
}

#[test]
fn quirk_outlook_extra_space_in_address_list() {
    // Source: net-imap quirky_behaviors.yml ("outlook.com puts an extra SP in ENVELOPE
    // address lists").
    let items = fetch(b"* 24 FETCH (UID 60 ENVELOPE (\"Mon, 24 May 2021 09:47:50 +0000\" \"Zoom\" ((\"A\" NIL \"a\" \"x.test\")) NIL NIL ((\"r\" NIL \"r\" \"h.test\") (\"s\" NIL \"s\" \"k.test\")) NIL NIL NIL \"<m@x>\"))\r\n");
    let FetchItem::Envelope(env) = &items[1] else {
        panic!()
    };
    assert_eq!(env.to.len(), 2);
    assert_eq!(env.message_id, s("<m@x>"));
}

#[test]
fn quirk_gmail_flags_with_atom_specials() {
    // Source: net-imap issue 241 (Gmail keywords holding `[` `]` and spaces).
    let u = untagged(
        b"* FLAGS (\\Answered \\Seen $Junk OIB-Seen-[Google Mail]/Alle Nachrichten \\*)\r\n",
    );
    let Untagged::Flags(flags) = u else { panic!() };
    assert_eq!(flags.len(), 7);
    assert_eq!(flags[3], Flag::Keyword("OIB-Seen-[Google".into()));
    assert_eq!(flags[4], Flag::Keyword("Mail]/Alle".into()));
    assert_eq!(flags[6], Flag::MayCreate);
}

#[test]
fn quirk_exchange_invalid_resp_text_code() {
    // Source: net-imap issue 597 (Exchange sends `[Error="..." ...]` as a response code).
    let Response::Tagged(t) = parse(b"A1 OK [Error=\"Microsoft.Exchange: Cross Server access is not allowed\" Proxy=X:1993:SSL] AUTHENTICATE completed.\r\n") else {
        panic!()
    };
    assert_eq!(t.status, Status::Ok);
    assert!(matches!(t.text.code, Some(Code::Other { .. })));
    assert_eq!(t.text.text, "AUTHENTICATE completed.");
}

#[test]
fn quirk_internaldate_without_zone() {
    // Source: defensive; some servers omit the zone of INTERNALDATE (read as UTC).
    let items = fetch(b"* 1 FETCH (INTERNALDATE \"17-Jul-1996 02:44:25\")\r\n");
    assert_eq!(items[0], FetchItem::InternalDate(837571465));
}
