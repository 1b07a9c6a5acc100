//! The capabilities a server advertised, parsed once into a typed set ([`Capabilities`]):
//! the engine branches on a bit per [`Capability`] it knows instead of scanning strings,
//! and keeps the names as written for callers that list them (`imapfs check`) or ask for
//! one it has no variant for.

/// Capabilities the engine branches on, looked up in a bit set instead of a string scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Capability {
    LiteralPlus,
    Idle,
    CondStore,
    QResync,
    Unselect,
    UidPlus,
    Move,
    Notify,
    Enable,
    Utf8Accept,
    StartTls,
    LoginDisabled,
    SaslIr,
    Esearch,
    Binary,
    Quota,
    SpecialUse,
    ListExtended,
    Namespace,
    /// RFC 7888: non-synchronising literals only up to 4096 bytes (Gmail).
    LiteralMinus,
    /// Gmail's X-GM-EXT-1: labels, X-GM-MSGID, X-GM-THRID, X-GM-RAW.
    GmExt,
    /// RFC 8474: EMAILID and THREADID.
    ObjectId,
    /// RFC 4978.
    CompressDeflate,
}

const KNOWN: [(&str, Capability); 23] = [
    ("COMPRESS=DEFLATE", Capability::CompressDeflate),
    ("LITERAL+", Capability::LiteralPlus),
    ("IDLE", Capability::Idle),
    ("CONDSTORE", Capability::CondStore),
    ("QRESYNC", Capability::QResync),
    ("UNSELECT", Capability::Unselect),
    ("UIDPLUS", Capability::UidPlus),
    ("MOVE", Capability::Move),
    ("NOTIFY", Capability::Notify),
    ("ENABLE", Capability::Enable),
    ("UTF8=ACCEPT", Capability::Utf8Accept),
    ("STARTTLS", Capability::StartTls),
    ("LOGINDISABLED", Capability::LoginDisabled),
    ("SASL-IR", Capability::SaslIr),
    ("ESEARCH", Capability::Esearch),
    ("BINARY", Capability::Binary),
    ("QUOTA", Capability::Quota),
    ("SPECIAL-USE", Capability::SpecialUse),
    ("LIST-EXTENDED", Capability::ListExtended),
    ("NAMESPACE", Capability::Namespace),
    ("LITERAL-", Capability::LiteralMinus),
    ("X-GM-EXT-1", Capability::GmExt),
    ("OBJECTID", Capability::ObjectId),
];

/// The capabilities the server advertised, parsed once when they arrive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// As the server wrote them (callers list them, e.g. `imapfs check`).
    names: Vec<String>,
    /// Bit `i` set: `KNOWN[i]` is among `names`.
    known: u32,
}

impl Capabilities {
    pub fn new(names: Vec<String>) -> Capabilities {
        let mut known = 0;
        for (i, (name, _)) in KNOWN.iter().enumerate() {
            if names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                known |= 1 << i;
            }
        }
        Capabilities { names, known }
    }

    pub fn has(&self, cap: Capability) -> bool {
        KNOWN
            .iter()
            .position(|(_, c)| *c == cap)
            .is_some_and(|i| self.known & (1 << i) != 0)
    }

    /// Stop using `cap` although it was advertised (a server that answered BAD to it).
    pub fn withdraw(&mut self, cap: Capability) {
        if let Some(i) = KNOWN.iter().position(|(_, c)| *c == cap) {
            self.known &= !(1 << i);
        }
    }

    /// Any capability by name (case-insensitive), known to [`Capability`] or not.
    pub fn contains(&self, name: &str) -> bool {
        match KNOWN.iter().position(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some(i) => self.known & (1 << i) != 0,
            None => self.names.iter().any(|n| n.eq_ignore_ascii_case(name)),
        }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// APPENDLIMIT=N (RFC 7889): the largest message the server accepts, if it says.
    pub fn append_limit(&self) -> Option<u64> {
        self.names.iter().find_map(|n| {
            let (name, value) = n.split_once('=')?;
            if name.eq_ignore_ascii_case("APPENDLIMIT") {
                value.parse().ok()
            } else {
                None
            }
        })
    }

    /// How literals may be sent: without waiting for `+` (LITERAL+), only small ones so
    /// (LITERAL-), or each after the server's `+`.
    pub fn literals(&self) -> crate::imap::codec::Literals {
        use crate::imap::codec::Literals;
        if self.has(Capability::LiteralPlus) {
            Literals::Plus
        } else if self.has(Capability::LiteralMinus) {
            Literals::Minus
        } else {
            Literals::Sync
        }
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_parsed_once_case_insensitively() {
        let caps = Capabilities::new(
            [
                "IMAP4rev1",
                "esearch",
                "BINARY",
                "Special-Use",
                "X-CUSTOM",
                "AUTH=PLAIN",
            ]
            .map(String::from)
            .to_vec(),
        );
        assert!(caps.has(Capability::Esearch));
        assert!(caps.has(Capability::Binary));
        assert!(caps.has(Capability::SpecialUse));
        assert!(!caps.has(Capability::ListExtended));
        assert!(!caps.has(Capability::Quota));
        assert!(!caps.has(Capability::Namespace));
        assert!(caps.contains("ESEARCH") && caps.contains("x-custom"));
        assert!(caps.contains("auth=plain") && !caps.contains("AUTH=LOGIN"));
        // Every known capability has its own bit.
        for (name, cap) in KNOWN {
            let only = Capabilities::new(vec![name.to_ascii_lowercase()]);
            assert!(only.has(cap), "{name}");
            assert_eq!(
                KNOWN.iter().filter(|(_, c)| only.has(*c)).count(),
                1,
                "{name}"
            );
        }
    }
}
