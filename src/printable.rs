//! Untrusted text made safe to show. Server text (greeting, BYE, ALERT, NO and BAD texts,
//! excerpts of bad frames, mailbox names) could drive the user's terminal with an escape
//! sequence when it is logged or printed; [`printable`] is the one filter for it. A leaf: it
//! imports nothing of the crate, so the error type and the protocol's values can both use it.

use std::borrow::Cow;

/// `text` made safe to print on a terminal or in a log: every control character (C0, DEL,
/// C1, including ESC, CR and LF) and every invisible formatting character that can reorder
/// what is shown (bidirectional overrides, zero-width characters) becomes a visible escape,
/// `\xNN` or `\u{NNNN}`. Everything else, non-ASCII letters included, is kept as it is.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !needs_escape(c) {
            out.push(c);
        } else if (c as u32) < 0x100 {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:04x}}}", c as u32));
        }
    }
    Cow::Owned(out)
}

/// [`printable`] for bytes that may not be UTF-8 (invalid sequences become U+FFFD).
pub fn printable_bytes(bytes: &[u8]) -> String {
    printable(&String::from_utf8_lossy(bytes)).into_owned()
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200b}'..='\u{200f}'   // zero-width space/joiners, LRM, RLM
            | '\u{202a}'..='\u{202e}' // bidirectional embeddings and overrides
            | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
            | '\u{2066}'..='\u{2069}' // bidirectional isolates
            | '\u{feff}'               // zero-width no-break space
        )
}
