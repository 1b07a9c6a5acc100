//! The standard seed ([`Seed::standard`](super::Seed::standard)): INBOX with mixed flags and
//! encoded subjects, a small hierarchy, awkward names, and `Big` (220 messages, two over 5 MB,
//! [`PHRASE`] in 15 of them at known places). Deterministic: one fixed PRNG seed.

use super::seed::{decode_display, push_common_headers};
use super::text::STD_ALPHABET;
use super::{days_from_civil, Rng, Seed, Subject, TextMessage, PHRASE};

const BIG_COUNT: u32 = 220;
/// The `Big` UIDs that carry [`PHRASE`]; 37 and 200 are the two messages over 5 MB (in 200 the
/// phrase sits after the attachment, so only a reader that reaches the end finds it).
const PHRASE_UIDS: [u32; 15] = [
    3, 17, 29, 37, 48, 62, 75, 90, 104, 121, 139, 156, 170, 188, 200,
];
const HUGE: [(u32, usize); 2] = [(37, 5_300_000), (200, 6_100_000)];

const ADDRESSES: [&str; 6] = [
    "Alice Example <alice@example.org>",
    "Bob Builder <bob@example.net>",
    "=?UTF-8?Q?J=C3=B6rg_M=C3=BCller?= <joerg@example.de>",
    "Carol <carol@example.com>",
    "\"Dave, the reviewer\" <dave@example.org>",
    "ops@example.com",
];

const WORDS: [&str; 48] = [
    "account",
    "budget",
    "quarter",
    "review",
    "meeting",
    "schedule",
    "numbers",
    "draft",
    "please",
    "attached",
    "report",
    "server",
    "mailbox",
    "folder",
    "update",
    "thanks",
    "regards",
    "team",
    "project",
    "deadline",
    "notes",
    "agenda",
    "invoice",
    "payment",
    "customer",
    "release",
    "version",
    "tested",
    "minor",
    "major",
    "change",
    "request",
    "approved",
    "pending",
    "monday",
    "friday",
    "tomorrow",
    "yesterday",
    "office",
    "remote",
    "coffee",
    "lunch",
    "plan",
    "issue",
    "fixed",
    "merged",
    "branch",
    "summary",
];

pub(super) fn build_standard_seed() -> Seed {
    let mut seed = Seed::new();
    let mut rng = Rng::new(0x1a2b_3c4d_5e6f_7788);
    let me = "Test User <tester@example.org>";

    let inbox: [(Subject, &[&str]); 10] = [
        (Subject::Plain("Welcome to imapfs"), &["\\Seen"]),
        (Subject::Base64("Grüße aus Köln"), &["\\Flagged", "\\Seen"]),
        (Subject::Quoted("Café menu – déjà vu"), &[]),
        (
            Subject::Plain("Re: Quarterly numbers"),
            &["\\Answered", "\\Seen"],
        ),
        (Subject::Base64("日本語の件名"), &["\\Flagged"]),
        (Subject::Plain("Meeting notes 2024-03-05"), &[]),
        (Subject::Base64("Ünïcødé and emoji 🚀"), &["\\Seen"]),
        (Subject::Plain("Draft: plans"), &["\\Draft"]),
        (Subject::Plain("Lunch?"), &["\\Seen"]),
        (
            Subject::Plain("A subject that is fairly long but still fits on one header line"),
            &[],
        ),
    ];
    let base = days_from_civil(2024, 3, 1) * 86_400 + 9 * 3600;
    for (i, (subject, flags)) in inbox.into_iter().enumerate() {
        let uid = i as i64 + 1;
        let count = 5 + rng.below(30) as usize;
        let mut body_lines = text_lines(&mut rng, count);
        if uid == 7 {
            body_lines.push("Ünïcødé body line: Grüße, déjà vu, 日本語.".to_string());
        }
        let message = TextMessage {
            from: ADDRESSES[i % ADDRESSES.len()],
            to: me,
            subject,
            date: base + uid * 7200,
            message_id: format!("<inbox.{uid}@imapfs.test>"),
            body_lines,
        };
        seed.folder_mut("INBOX").push_text(&message, flags);
    }

    let small_folders: [(&str, &[Subject]); 7] = [
        (
            "Archive",
            &[
                Subject::Plain("Old invoice"),
                Subject::Plain("Holiday photos"),
                Subject::Plain("Contract signed"),
            ],
        ),
        (
            "Archive.2024",
            &[
                Subject::Plain("January report"),
                Subject::Plain("February report"),
                Subject::Base64("März Bericht"),
                Subject::Plain("April report"),
            ],
        ),
        ("Empty", &[]),
        (
            "Lists.rust",
            &[
                Subject::Plain("[rust] This week in Rust"),
                Subject::Plain("[rust] RFC discussion"),
                Subject::Plain("[rust] Release notes"),
            ],
        ),
        (
            "Old Projects",
            &[
                Subject::Plain("Project X kickoff"),
                Subject::Plain("Project X retro"),
            ],
        ),
        (
            "R&D",
            &[
                Subject::Plain("R&D budget"),
                Subject::Quoted("Prototype résumé"),
            ],
        ),
        (
            "Ünïcødé Folder",
            &[
                Subject::Base64("Ünïcødé subject one"),
                Subject::Base64("Привет, мир"),
                Subject::Plain("plain ascii in a unicode folder"),
            ],
        ),
    ];
    for (f, (name, subjects)) in small_folders.into_iter().enumerate() {
        let folder = seed.folder_mut(name);
        let base = days_from_civil(2023, 1 + f as i64, 10) * 86_400;
        for (i, subject) in subjects.iter().enumerate() {
            let uid = i as i64 + 1;
            let count = 3 + rng.below(20) as usize;
            let flags: &[&str] = if i % 2 == 0 { &["\\Seen"] } else { &[] };
            let message = TextMessage {
                from: ADDRESSES[(i + f) % ADDRESSES.len()],
                to: me,
                subject: *subject,
                date: base + uid * 86_400,
                message_id: format!("<f{f}.{uid}@imapfs.test>"),
                body_lines: text_lines(&mut rng, count),
            };
            folder.push_text(&message, flags);
        }
    }

    let base = days_from_civil(2024, 1, 1) * 86_400;
    let mut date = base;
    for uid in 1..=BIG_COUNT {
        date += 3 * 3600 + rng.below(3600) as i64;
        let target = match HUGE.iter().find(|(u, _)| *u == uid) {
            Some(&(_, size)) => size,
            None => match rng.below(100) {
                0..=74 => rng.range(2_000, 16_000),
                75..=91 => rng.range(16_000, 128_000),
                92..=98 => rng.range(128_000, 1_000_000),
                _ => rng.range(1_000_000, 2_500_000),
            },
        };
        let phrase = if uid == 200 {
            PhrasePlace::AfterAttachment
        } else if PHRASE_UIDS.contains(&uid) {
            PhrasePlace::InText
        } else {
            PhrasePlace::Nowhere
        };
        let decoded_subject;
        let subject = match uid % 5 {
            0 => {
                decoded_subject = format!("Rechnung Nr. {uid} – Grüße");
                Subject::Base64(&decoded_subject)
            }
            1 => {
                decoded_subject = format!("Café order {uid}");
                Subject::Quoted(&decoded_subject)
            }
            _ => {
                decoded_subject = format!(
                    "Report {uid}: {} {}",
                    WORDS[rng.below(WORDS.len() as u64) as usize],
                    WORDS[rng.below(WORDS.len() as u64) as usize]
                );
                Subject::Plain(&decoded_subject)
            }
        };
        let from = ADDRESSES[uid as usize % ADDRESSES.len()];
        let message_id = format!("<big.{uid}@imapfs.test>");
        let bytes = big_message(
            &mut rng,
            uid,
            from,
            me,
            subject,
            date,
            &message_id,
            target,
            phrase,
        );
        let mut flags = Vec::new();
        if uid % 3 == 0 {
            flags.push("\\Seen");
        }
        if uid % 7 == 0 {
            flags.push("\\Flagged");
        }
        if uid % 11 == 0 {
            flags.push("\\Answered");
        }
        let pushed = seed.folder_mut("Big").push(
            bytes,
            &flags,
            &decoded_subject,
            &decode_display(from),
            &message_id,
            date,
            date + 37,
        );
        assert_eq!(
            pushed.has_phrase,
            phrase != PhrasePlace::Nowhere,
            "phrase leak in uid {uid}"
        );
    }
    seed
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PhrasePlace {
    Nowhere,
    InText,
    AfterAttachment,
}

/// A `Big` message of about `target` bytes: text/plain below 256 KiB, otherwise a
/// multipart/mixed with a text part and a base64 attachment of pseudo-random bytes.
#[allow(clippy::too_many_arguments)]
fn big_message(
    rng: &mut Rng,
    uid: u32,
    from: &str,
    to: &str,
    subject: Subject<'_>,
    date: i64,
    message_id: &str,
    target: usize,
    phrase: PhrasePlace,
) -> Vec<u8> {
    let mut out = String::with_capacity(target + 1024);
    push_common_headers(&mut out, from, to, subject, date);
    out.push_str(&format!("Message-ID: {message_id}\r\n"));
    out.push_str("MIME-Version: 1.0\r\n");
    let phrase_line = format!("Please pay {PHRASE} by Friday.");
    if target < 256 * 1024 {
        out.push_str("Content-Type: text/plain; charset=utf-8\r\n\r\n");
        let mut lines = Vec::new();
        let mut len = out.len();
        while len < target {
            let line = text_line(rng);
            len += line.len() + 2;
            lines.push(line);
        }
        if phrase == PhrasePlace::InText {
            let at = rng.below(lines.len() as u64 + 1) as usize;
            lines.insert(at, phrase_line);
        }
        for line in lines {
            out.push_str(&line);
            out.push_str("\r\n");
        }
        return out.into_bytes();
    }

    let boundary = format!("=_imapfs_{uid}_boundary");
    out.push_str(&format!(
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n"
    ));
    out.push_str("This is a multi-part message in MIME format.\r\n");
    out.push_str(&format!(
        "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    ));
    let mut lines = text_lines(rng, 20);
    if phrase == PhrasePlace::InText {
        lines.insert(7, phrase_line.clone());
    }
    for line in lines {
        out.push_str(&line);
        out.push_str("\r\n");
    }
    out.push_str(&format!(
        "--{boundary}\r\nContent-Type: application/octet-stream; name=\"data-{uid}.bin\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"data-{uid}.bin\"\r\n\r\n"
    ));
    // Base64 text drawn straight from the PRNG (10 digits per u64), 76 per line: valid base64
    // of pseudo-random bytes, never repeating, and cheap in an unoptimised test build.
    let lines = target.saturating_sub(out.len() + 200) / 78;
    let mut line = [0u8; 80];
    for _ in 0..lines {
        for digits in line.chunks_mut(10) {
            let mut bits = rng.next_u64();
            for digit in digits {
                *digit = STD_ALPHABET[(bits & 63) as usize];
                bits >>= 6;
            }
        }
        out.push_str(std::str::from_utf8(&line[..76]).expect("ASCII"));
        out.push_str("\r\n");
    }
    if phrase == PhrasePlace::AfterAttachment {
        out.push_str(&format!(
            "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{phrase_line}\r\n"
        ));
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    out.into_bytes()
}

fn text_lines(rng: &mut Rng, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            if i % 6 == 5 {
                String::new()
            } else {
                text_line(rng)
            }
        })
        .collect()
}

fn text_line(rng: &mut Rng) -> String {
    let mut line = String::new();
    let words = 6 + rng.below(7);
    for i in 0..words {
        if i > 0 {
            line.push(' ');
        }
        line.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
    }
    line.push('.');
    line
}
