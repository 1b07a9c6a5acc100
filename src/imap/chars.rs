//! The character classes of the IMAP grammar (RFC 3501 section 9): which bytes an atom and
//! an astring may hold without quoting. The decoder scans with them, the encoder decides
//! between atom, quoted string and literal with them, and the values that validate their
//! text on construction ([`crate::imap::types::Tag`], [`crate::imap::types::Flag`],
//! [`crate::imap::gmail::Label`]) check against them.

/// ATOM-CHAR of RFC 3501: any CHAR except atom-specials.
pub fn is_atom_char(b: u8) -> bool {
    (0x21..0x7f).contains(&b) && !b"(){ %*\"\\]".contains(&b)
}

/// ASTRING-CHAR: ATOM-CHAR or `]`.
pub fn is_astring_char(b: u8) -> bool {
    is_atom_char(b) || b == b']'
}
