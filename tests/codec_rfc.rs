//! The server side of the RFC 3501 and RFC 9051 examples (section 8 sample sessions, the
//! section 7 response examples), each decoded to the value it must give.

use imapfs::imap::codec::{Limits, ResponseDecoder};
use imapfs::imap::types::*;

/// Decode a whole server transcript, fed in one piece.
fn decode(wire: &[u8]) -> Vec<Response> {
    let mut d = ResponseDecoder::new(Limits::default());
    d.feed(wire);
    let mut out = Vec::new();
    while let Some(r) = d.next_response().unwrap_or_else(|e| panic!("{e}")) {
        out.push(r);
    }
    assert_eq!(d.buffered(), 0, "bytes left over");
    out
}

/// Decode a transcript written one response per line (LF), sent with CRLF.
fn decode_lines(lines: &str) -> Vec<Response> {
    let wire: String = lines.lines().map(|l| format!("{l}\r\n")).collect();
    decode(wire.as_bytes())
}

fn text(code: Option<Code>, text: &str) -> ResponseText {
    ResponseText {
        code,
        text: text.into(),
    }
}

fn tagged(tag: &str, status: Status, code: Option<Code>, t: &str) -> Response {
    Response::Tagged(Tagged {
        tag: Tag::parse(tag.as_bytes()).unwrap(),
        status,
        text: text(code, t),
    })
}

fn status(status: Status, code: Option<Code>, t: &str) -> Response {
    Response::Untagged(Untagged::Status {
        status,
        text: text(code, t),
    })
}

fn u(x: Untagged) -> Response {
    Response::Untagged(x)
}

fn seq(n: u32) -> SeqNum {
    SeqNum::new(n).unwrap()
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

fn list(attrs: &[&str], delim: Option<char>, name: &str) -> ListItem {
    ListItem {
        attributes: attrs.iter().map(|a| a.to_string()).collect(),
        delimiter: delim,
        name: MailboxName::from_wire(name.as_bytes().to_vec(), false),
        extended: vec![],
    }
}

fn system_flags() -> Vec<Flag> {
    vec![
        Flag::Answered,
        Flag::Flagged,
        Flag::Deleted,
        Flag::Seen,
        Flag::Draft,
    ]
}

/// The FETCH 12 FULL reply of both sample sessions.
const FETCH_FULL: &str = "* 12 FETCH (FLAGS (\\Seen) INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" RFC822.SIZE 4286 ENVELOPE (\"Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\" \"IMAP4rev1 WG mtg summary and minutes\" ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) ((NIL NIL \"imap\" \"cac.washington.edu\")) ((NIL NIL \"minutes\" \"CNRI.Reston.VA.US\") (\"John Klensin\" NIL \"KLENSIN\" \"MIT.EDU\")) NIL NIL \"<B27397-0100000@cac.washington.edu>\") BODY (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 3028 92))";

/// The 342-byte header of message 12.
const HEADER: &str = "Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\nFrom: Terry Gray <gray@cac.washington.edu>\r\nSubject: IMAP4rev1 WG mtg summary and minutes\r\nTo: imap@cac.washington.edu\r\ncc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>\r\nMessage-Id: <B27397-0100000@cac.washington.edu>\r\nMIME-Version: 1.0\r\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\n";

fn fetch_full_value() -> Response {
    let gray = addr(Some("Terry Gray"), "gray", "cac.washington.edu");
    u(Untagged::Fetch {
        seq: seq(12),
        items: vec![
            FetchItem::Flags(vec![Flag::Seen]),
            FetchItem::InternalDate(837596665),
            FetchItem::Rfc822Size(4286),
            FetchItem::Envelope(Box::new(Envelope {
                date: s("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)"),
                subject: s("IMAP4rev1 WG mtg summary and minutes"),
                from: vec![gray.clone()],
                sender: vec![gray.clone()],
                reply_to: vec![gray],
                to: vec![addr(None, "imap", "cac.washington.edu")],
                cc: vec![
                    addr(None, "minutes", "CNRI.Reston.VA.US"),
                    addr(Some("John Klensin"), "KLENSIN", "MIT.EDU"),
                ],
                bcc: vec![],
                in_reply_to: None,
                message_id: s("<B27397-0100000@cac.washington.edu>"),
            })),
            FetchItem::BodyStructure(Box::new(BodyStructure::Single {
                media_type: "TEXT".into(),
                subtype: "PLAIN".into(),
                params: vec![("CHARSET".into(), "US-ASCII".into())],
                id: None,
                description: None,
                encoding: "7BIT".into(),
                size: 3028,
                lines: Some(92),
                message: None,
                ext: BodyExtension::default(),
            })),
        ],
    })
}

fn header_value() -> Response {
    assert_eq!(HEADER.len(), 342);
    u(Untagged::Fetch {
        seq: seq(12),
        items: vec![FetchItem::Body {
            section: "HEADER".into(),
            origin: None,
            data: Some(HEADER.as_bytes().to_vec()),
        }],
    })
}

#[test]
fn rfc3501_section8_sample_session() {
    let wire = format!(
        "* OK IMAP4rev1 Service Ready\r\n\
         a001 OK LOGIN completed\r\n\
         * 18 EXISTS\r\n\
         * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n\
         * 2 RECENT\r\n\
         * OK [UNSEEN 17] Message 17 is the first unseen message\r\n\
         * OK [UIDVALIDITY 3857529045] UIDs valid\r\n\
         a002 OK [READ-WRITE] SELECT completed\r\n\
         {FETCH_FULL}\r\n\
         a003 OK FETCH completed\r\n\
         * 12 FETCH (BODY[HEADER] {{342}}\r\n{HEADER})\r\n\
         a004 OK FETCH completed\r\n\
         * 12 FETCH (FLAGS (\\Seen \\Deleted))\r\n\
         a005 OK +FLAGS completed\r\n\
         * BYE IMAP4rev1 server terminating connection\r\n\
         a006 OK LOGOUT completed\r\n"
    );
    let expected = vec![
        status(Status::Ok, None, "IMAP4rev1 Service Ready"),
        tagged("a001", Status::Ok, None, "LOGIN completed"),
        u(Untagged::Exists(18)),
        u(Untagged::Flags(system_flags())),
        u(Untagged::Recent(2)),
        status(
            Status::Ok,
            Some(Code::Unseen(17)),
            "Message 17 is the first unseen message",
        ),
        status(
            Status::Ok,
            Some(Code::UidValidity(UidValidity::new(3857529045).unwrap())),
            "UIDs valid",
        ),
        tagged(
            "a002",
            Status::Ok,
            Some(Code::ReadWrite),
            "SELECT completed",
        ),
        fetch_full_value(),
        tagged("a003", Status::Ok, None, "FETCH completed"),
        header_value(),
        tagged("a004", Status::Ok, None, "FETCH completed"),
        u(Untagged::Fetch {
            seq: seq(12),
            items: vec![FetchItem::Flags(vec![Flag::Seen, Flag::Deleted])],
        }),
        tagged("a005", Status::Ok, None, "+FLAGS completed"),
        status(Status::Bye, None, "IMAP4rev1 server terminating connection"),
        tagged("a006", Status::Ok, None, "LOGOUT completed"),
    ];
    let got = decode(wire.as_bytes());
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g, e, "response {i}");
    }
}

#[test]
fn rfc9051_section8_sample_session() {
    // The IMAP4rev2 session: capabilities in the greeting, a SASL exchange (the challenges
    // are opaque base64 to the codec), ENABLE, and LIST in the SELECT reply.
    let wire = format!(
        "* OK [CAPABILITY STARTTLS AUTH=SCRAM-SHA-256 LOGINDISABLED IMAP4rev2] IMAP4rev2 Service Ready\r\n\
         a000 OK Proceed with TLS negotiation\r\n\
         + cj1yT3ByTkdmd0ViZVJXZ2JORWtxTyVodllEcFdVYTJSYVRDQWZ1eEZJbGopaE5sRiRrMCxzPVcyMlphSjBTTlk3c29Fc1VFamI2Z1E9PSxpPTQwOTY=\r\n\
         + dj02cnJpVFJCaTIzV3BSUi93dHVwK21NaFVaVW4vZEI1bkxUSlJzamw5NUc0PQ==\r\n\
         A001 OK SCRAM-SHA-256 authentication successful\r\n\
         * ENABLED UTF8=ACCEPT\r\n\
         babc OK ENABLE succeeded\r\n\
         * 18 EXISTS\r\n\
         * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n\
         * OK [UIDVALIDITY 3857529045] UIDs valid\r\n\
         * LIST () \"/\" INBOX\r\n\
         a002 OK [READ-WRITE] SELECT completed\r\n\
         {FETCH_FULL}\r\n\
         a003 OK FETCH completed\r\n\
         * 12 FETCH (BODY[HEADER] {{342}}\r\n{HEADER})\r\n\
         a004 OK FETCH completed\r\n\
         * 12 FETCH (FLAGS (\\Seen \\Deleted))\r\n\
         a005 OK +FLAGS completed\r\n\
         * BYE IMAP4rev2 server terminating connection\r\n\
         a006 OK LOGOUT completed\r\n"
    );
    let caps = [
        "STARTTLS",
        "AUTH=SCRAM-SHA-256",
        "LOGINDISABLED",
        "IMAP4rev2",
    ];
    let expected = vec![
        status(
            Status::Ok,
            Some(Code::Capability(caps.iter().map(|c| c.to_string()).collect())),
            "IMAP4rev2 Service Ready",
        ),
        tagged("a000", Status::Ok, None, "Proceed with TLS negotiation"),
        Response::Continue(text(None, "cj1yT3ByTkdmd0ViZVJXZ2JORWtxTyVodllEcFdVYTJSYVRDQWZ1eEZJbGopaE5sRiRrMCxzPVcyMlphSjBTTlk3c29Fc1VFamI2Z1E9PSxpPTQwOTY=")),
        Response::Continue(text(None, "dj02cnJpVFJCaTIzV3BSUi93dHVwK21NaFVaVW4vZEI1bkxUSlJzamw5NUc0PQ==")),
        tagged("A001", Status::Ok, None, "SCRAM-SHA-256 authentication successful"),
        u(Untagged::Enabled(vec!["UTF8=ACCEPT".into()])),
        tagged("babc", Status::Ok, None, "ENABLE succeeded"),
        u(Untagged::Exists(18)),
        u(Untagged::Flags(system_flags())),
        status(
            Status::Ok,
            Some(Code::UidValidity(UidValidity::new(3857529045).unwrap())),
            "UIDs valid",
        ),
        u(Untagged::List(list(&[], Some('/'), "INBOX"))),
        tagged("a002", Status::Ok, Some(Code::ReadWrite), "SELECT completed"),
        fetch_full_value(),
        tagged("a003", Status::Ok, None, "FETCH completed"),
        header_value(),
        tagged("a004", Status::Ok, None, "FETCH completed"),
        u(Untagged::Fetch {
            seq: seq(12),
            items: vec![FetchItem::Flags(vec![Flag::Seen, Flag::Deleted])],
        }),
        tagged("a005", Status::Ok, None, "+FLAGS completed"),
        status(Status::Bye, None, "IMAP4rev2 server terminating connection"),
        tagged("a006", Status::Ok, None, "LOGOUT completed"),
    ];
    assert_eq!(decode(wire.as_bytes()), expected);
}

#[test]
fn section7_1_status_responses() {
    let got = decode_lines(
        "* OK IMAP4rev1 server ready
* OK [ALERT] System shutdown in 10 minutes
A001 OK LOGIN Completed
* NO Disk is 98% full, please delete unnecessary data
A222 OK COPY completed
A223 NO COPY failed: disk is full
* BAD Command line too long
* BAD Empty command line
* BAD Disk crash, attempting salvage to a new disk!
* OK Salvage successful, no data lost
A443 OK Expunge completed
* PREAUTH IMAP4rev1 server logged in as Smith
* BYE Autologout; idle for too long",
    );
    assert_eq!(
        got,
        vec![
            status(Status::Ok, None, "IMAP4rev1 server ready"),
            status(
                Status::Ok,
                Some(Code::Alert),
                "System shutdown in 10 minutes"
            ),
            tagged("A001", Status::Ok, None, "LOGIN Completed"),
            status(
                Status::No,
                None,
                "Disk is 98% full, please delete unnecessary data"
            ),
            tagged("A222", Status::Ok, None, "COPY completed"),
            tagged("A223", Status::No, None, "COPY failed: disk is full"),
            status(Status::Bad, None, "Command line too long"),
            status(Status::Bad, None, "Empty command line"),
            status(
                Status::Bad,
                None,
                "Disk crash, attempting salvage to a new disk!"
            ),
            status(Status::Ok, None, "Salvage successful, no data lost"),
            tagged("A443", Status::Ok, None, "Expunge completed"),
            status(Status::PreAuth, None, "IMAP4rev1 server logged in as Smith"),
            status(Status::Bye, None, "Autologout; idle for too long"),
        ]
    );
}

#[test]
fn section7_2_server_and_mailbox_status() {
    let got = decode_lines(
        "* CAPABILITY IMAP4rev1 STARTTLS AUTH=GSSAPI XPIG-LATIN
* LIST (\\Noselect) \"/\" ~/Mail/foo
* LSUB () \".\" #news.comp.mail.misc
* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)
* SEARCH 2 3 6
* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
* 23 EXISTS
* 5 RECENT
* ENABLED CONDSTORE QRESYNC",
    );
    assert_eq!(
        got,
        vec![
            u(Untagged::Capability(
                ["IMAP4rev1", "STARTTLS", "AUTH=GSSAPI", "XPIG-LATIN"]
                    .map(String::from)
                    .to_vec()
            )),
            u(Untagged::List(list(
                &["\\Noselect"],
                Some('/'),
                "~/Mail/foo"
            ))),
            u(Untagged::Lsub(list(&[], Some('.'), "#news.comp.mail.misc"))),
            u(Untagged::StatusData {
                mailbox: MailboxName::from_wire(b"blurdybloop".to_vec(), false),
                items: vec![
                    StatusItem::Messages(231),
                    StatusItem::UidNext(Uid::new(44292).unwrap())
                ],
            }),
            u(Untagged::Search {
                nums: vec![2, 3, 6],
                modseq: None
            }),
            u(Untagged::Flags(system_flags())),
            u(Untagged::Exists(23)),
            u(Untagged::Recent(5)),
            u(Untagged::Enabled(vec![
                "CONDSTORE".into(),
                "QRESYNC".into()
            ])),
        ]
    );
}

#[test]
fn section7_4_message_status_and_continuation() {
    let got = decode_lines(
        "* 44 EXPUNGE
* 23 FETCH (FLAGS (\\Seen) RFC822.SIZE 44827)
+ Ready for additional command text
A001 OK LOGIN completed
A044 BAD No such command as \"BLURDYBLOOP\"",
    );
    assert_eq!(
        got,
        vec![
            u(Untagged::Expunge(seq(44))),
            u(Untagged::Fetch {
                seq: seq(23),
                items: vec![
                    FetchItem::Flags(vec![Flag::Seen]),
                    FetchItem::Rfc822Size(44827)
                ],
            }),
            Response::Continue(text(None, "Ready for additional command text")),
            tagged("A001", Status::Ok, None, "LOGIN completed"),
            tagged(
                "A044",
                Status::Bad,
                None,
                "No such command as \"BLURDYBLOOP\""
            ),
        ]
    );
}

#[test]
fn section7_4_2_bodystructure_multipart_example() {
    let got = decode_lines(
        "* 3 FETCH (BODYSTRUCTURE ((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 1152 23)(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\" \"NAME\" \"cc.diff\") \"<960723163407.20117h@cac.washington.edu>\" \"Compiler diff\" \"BASE64\" 4554 73) \"MIXED\"))",
    );
    let part =
        |params: Vec<(String, String)>, id, desc, enc: &str, size, lines| BodyStructure::Single {
            media_type: "TEXT".into(),
            subtype: "PLAIN".into(),
            params,
            id,
            description: desc,
            encoding: enc.into(),
            size,
            lines: Some(lines),
            message: None,
            ext: BodyExtension::default(),
        };
    let ascii = ("CHARSET".to_string(), "US-ASCII".to_string());
    let expected = BodyStructure::Multi {
        parts: vec![
            part(vec![ascii.clone()], None, None, "7BIT", 1152, 23),
            part(
                vec![ascii, ("NAME".into(), "cc.diff".into())],
                s("<960723163407.20117h@cac.washington.edu>"),
                s("Compiler diff"),
                "BASE64",
                4554,
                73,
            ),
        ],
        subtype: "MIXED".into(),
        params: vec![],
        ext: BodyExtension::default(),
    };
    assert_eq!(
        got,
        vec![u(Untagged::Fetch {
            seq: seq(3),
            items: vec![FetchItem::BodyStructure(Box::new(expected))]
        })]
    );
}

#[test]
fn section6_select_and_examine_replies() {
    let got = decode_lines(
        "* 172 EXISTS
* 1 RECENT
* OK [UNSEEN 12] Message 12 is first unseen
* OK [UIDVALIDITY 3857529045] UIDs valid
* OK [UIDNEXT 4392] Predicted next UID
* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited
A142 OK [READ-WRITE] SELECT completed
* OK [PERMANENTFLAGS ()] No permanent flags permitted
A932 OK [READ-ONLY] EXAMINE completed
A684 NO Name \"foo\" has inferior hierarchical names
* LIST () \".\" INBOX.bar",
    );
    assert_eq!(
        got,
        vec![
            u(Untagged::Exists(172)),
            u(Untagged::Recent(1)),
            status(
                Status::Ok,
                Some(Code::Unseen(12)),
                "Message 12 is first unseen"
            ),
            status(
                Status::Ok,
                Some(Code::UidValidity(UidValidity::new(3857529045).unwrap())),
                "UIDs valid"
            ),
            status(
                Status::Ok,
                Some(Code::UidNext(Uid::new(4392).unwrap())),
                "Predicted next UID"
            ),
            u(Untagged::Flags(system_flags())),
            status(
                Status::Ok,
                Some(Code::PermanentFlags(vec![
                    Flag::Deleted,
                    Flag::Seen,
                    Flag::MayCreate
                ])),
                "Limited"
            ),
            tagged(
                "A142",
                Status::Ok,
                Some(Code::ReadWrite),
                "SELECT completed"
            ),
            status(
                Status::Ok,
                Some(Code::PermanentFlags(vec![])),
                "No permanent flags permitted"
            ),
            tagged(
                "A932",
                Status::Ok,
                Some(Code::ReadOnly),
                "EXAMINE completed"
            ),
            tagged(
                "A684",
                Status::No,
                None,
                "Name \"foo\" has inferior hierarchical names"
            ),
            u(Untagged::List(list(&[], Some('.'), "INBOX.bar"))),
        ]
    );
}

#[test]
fn rfc9051_extension_responses() {
    // RFC 9051 sections 6.3.10 (NAMESPACE), 6.4.4 and 7.3.4 (ESEARCH), 6.3.9 (LIST with
    // CHILDINFO), RFC 4315 (UIDPLUS codes), RFC 7162 (CONDSTORE/QRESYNC).
    let got = decode_lines(
        "* NAMESPACE ((\"\" \"/\")) ((\"~\" \"/\")) NIL
* ESEARCH (TAG \"A282\") MIN 2 COUNT 3
* ESEARCH (TAG \"A283\") ALL 2,10:11
* ESEARCH (TAG \"A285\") UID MIN 7 MAX 3800
* LIST (\\Subscribed) \"/\" \"Foo\" (\"CHILDINFO\" (\"SUBSCRIBED\"))
A003 OK [APPENDUID 38505 3955] APPEND completed
A004 OK [COPYUID 38505 304,319:320 3956:3958] Done
* OK [HIGHESTMODSEQ 715194045007] Highest
* VANISHED (EARLIER) 41,43:116,118,120:211,214:540
* 3 FETCH (UID 12 MODSEQ (715194045007) FLAGS (\\Seen))",
    );
    let validity = UidValidity::new(38505).unwrap();
    let mut childinfo = list(&["\\Subscribed"], Some('/'), "Foo");
    childinfo.extended = vec![("CHILDINFO".into(), b"(\"SUBSCRIBED\")".to_vec())];
    assert_eq!(
        got,
        vec![
            u(Untagged::Namespace(Namespaces {
                personal: vec![(b"".to_vec(), Some('/'))],
                other: vec![(b"~".to_vec(), Some('/'))],
                shared: vec![],
            })),
            u(Untagged::ESearch(ESearch {
                tag: Some("A282".into()),
                min: Some(2),
                count: Some(3),
                ..ESearch::default()
            })),
            u(Untagged::ESearch(ESearch {
                tag: Some("A283".into()),
                all: Some(SequenceSet(vec![(2, 2), (10, 11)])),
                ..ESearch::default()
            })),
            u(Untagged::ESearch(ESearch {
                tag: Some("A285".into()),
                uid: true,
                min: Some(7),
                max: Some(3800),
                ..ESearch::default()
            })),
            u(Untagged::List(childinfo)),
            tagged(
                "A003",
                Status::Ok,
                Some(Code::AppendUid {
                    validity,
                    uids: SequenceSet::single(3955)
                }),
                "APPEND completed"
            ),
            tagged(
                "A004",
                Status::Ok,
                Some(Code::CopyUid {
                    validity,
                    source: SequenceSet(vec![(304, 304), (319, 320)]),
                    dest: SequenceSet(vec![(3956, 3958)]),
                }),
                "Done"
            ),
            status(
                Status::Ok,
                Some(Code::HighestModSeq(ModSeq(715194045007))),
                "Highest"
            ),
            u(Untagged::Vanished {
                earlier: true,
                uids: SequenceSet(vec![
                    (41, 41),
                    (43, 116),
                    (118, 118),
                    (120, 211),
                    (214, 540)
                ]),
            }),
            u(Untagged::Fetch {
                seq: seq(3),
                items: vec![
                    FetchItem::Uid(Uid::new(12).unwrap()),
                    FetchItem::ModSeq(ModSeq(715194045007)),
                    FetchItem::Flags(vec![Flag::Seen]),
                ],
            }),
        ]
    );
}

#[test]
fn rfc9208_quota_and_rfc2971_id_examples() {
    let got = decode_lines(
        "* QUOTAROOT INBOX \"\"
* QUOTA \"\" (STORAGE 10 512)
* QUOTAROOT comp.mail.mime
* ID (\"name\" \"Cyrus\" \"version\" \"1.5\" \"os\" \"sunos\" \"os-version\" \"5.5\" \"support-url\" \"mailto:cyrus-bugs+@andrew.cmu.edu\")
* ID NIL",
    );
    let id = [
        ("name", "Cyrus"),
        ("version", "1.5"),
        ("os", "sunos"),
        ("os-version", "5.5"),
        ("support-url", "mailto:cyrus-bugs+@andrew.cmu.edu"),
    ];
    assert_eq!(
        got,
        vec![
            u(Untagged::QuotaRoot {
                mailbox: MailboxName::from_wire(b"INBOX".to_vec(), false),
                roots: vec![vec![]],
            }),
            u(Untagged::Quota {
                root: vec![],
                resources: vec![QuotaResource {
                    name: "STORAGE".into(),
                    usage: 10,
                    limit: 512
                }],
            }),
            u(Untagged::QuotaRoot {
                mailbox: MailboxName::from_wire(b"comp.mail.mime".to_vec(), false),
                roots: vec![],
            }),
            u(Untagged::Id(
                id.iter()
                    .map(|(k, v)| (k.to_string(), Some(v.to_string())))
                    .collect()
            )),
            u(Untagged::Id(vec![])),
        ]
    );
}
