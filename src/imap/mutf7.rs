//! Modified UTF-7 for mailbox names (RFC 3501 section 5.1.3).
//!
//! Printable ASCII stands for itself except `&`, written `&-`; every other run of characters is
//! UTF-16BE in base64 with `,` for `/`, between `&` and `-`. Decoding is strict: a name that is
//! not canonical modified UTF-7 is an error, and the caller keeps the raw bytes instead, so
//! that every name still round-trips to the server exactly.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/// Encode a UTF-8 name to modified UTF-7.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 8);
    let mut pending: Vec<u16> = Vec::new();
    for ch in name.chars() {
        if (' '..='~').contains(&ch) {
            flush(&mut out, &mut pending);
            if ch == '&' {
                out.push_str("&-");
            } else {
                out.push(ch);
            }
        } else {
            let mut units = [0u16; 2];
            pending.extend_from_slice(ch.encode_utf16(&mut units));
        }
    }
    flush(&mut out, &mut pending);
    out
}

fn flush(out: &mut String, pending: &mut Vec<u16>) {
    if pending.is_empty() {
        return;
    }
    let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
    out.push('&');
    let mut bits: u32 = 0;
    let mut nbits = 0;
    for b in bytes {
        bits = (bits << 8) | u32::from(b);
        nbits += 8;
        while nbits >= 6 {
            nbits -= 6;
            out.push(ALPHABET[((bits >> nbits) & 63) as usize] as char);
        }
    }
    if nbits > 0 {
        out.push(ALPHABET[((bits << (6 - nbits)) & 63) as usize] as char);
    }
    out.push('-');
    pending.clear();
}

/// Why a name is not valid modified UTF-7.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidMutf7;

/// Decode a modified UTF-7 name to UTF-8.
pub fn decode(raw: &[u8]) -> Result<String, InvalidMutf7> {
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if !(0x20..=0x7e).contains(&b) {
            return Err(InvalidMutf7);
        }
        if b != b'&' {
            out.push(b as char);
            i += 1;
            continue;
        }
        let end = raw[i + 1..]
            .iter()
            .position(|&c| c == b'-')
            .ok_or(InvalidMutf7)?
            + i
            + 1;
        let run = &raw[i + 1..end];
        if run.is_empty() {
            out.push('&');
        } else {
            decode_run(run, &mut out)?;
        }
        i = end + 1;
    }
    Ok(out)
}

fn decode_run(run: &[u8], out: &mut String) -> Result<(), InvalidMutf7> {
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut bytes = Vec::with_capacity(run.len());
    for &c in run {
        let v = ALPHABET.iter().position(|&a| a == c).ok_or(InvalidMutf7)? as u32;
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            bytes.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    // Leftover bits must be zero padding, and the bytes must form whole UTF-16 units.
    if bits != 0 || bytes.len() % 2 != 0 {
        return Err(InvalidMutf7);
    }
    let units: Vec<u16> = bytes
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    let s = String::from_utf16(&units).map_err(|_| InvalidMutf7)?;
    // A run must not encode what could be written directly (canonical form).
    if s.chars().any(|c| c.is_ascii()) {
        return Err(InvalidMutf7);
    }
    out.push_str(&s);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3501_example_round_trips() {
        let wire = "~peter/mail/&U,BTFw-/&ZeVnLIqe-";
        let text = "~peter/mail/\u{53f0}\u{5317}/\u{65e5}\u{672c}\u{8a9e}";
        assert_eq!(decode(wire.as_bytes()).unwrap(), text);
        assert_eq!(encode(text), wire);
    }

    #[test]
    fn ampersand_and_plain_ascii() {
        assert_eq!(encode("R&D"), "R&-D");
        assert_eq!(decode(b"R&-D").unwrap(), "R&D");
        assert_eq!(encode("Old Projects"), "Old Projects");
    }

    #[test]
    fn latin_and_astral_characters() {
        for s in [
            "\u{dc}n\u{ef}c\u{f8}d\u{e9} Folder",
            "caf\u{e9}",
            "\u{1f4e7} mail",
            "\u{e9}",
        ] {
            let enc = encode(s);
            assert!(enc.is_ascii());
            assert_eq!(decode(enc.as_bytes()).unwrap(), s, "{enc}");
        }
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            &b"&"[..],
            b"&Jjo",
            b"&Jjo!-",
            b"caf\xc3\xa9",
            b"&AGE-",
            b"&AAA-x",
        ] {
            assert!(decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
