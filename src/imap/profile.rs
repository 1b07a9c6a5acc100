//! Which provider a server is, from its capabilities after login (and its greeting), and what
//! imapfs does there: what `imapfs check` prints (docs/providers.md has the long form).
//!
//! Sans-I/O and advisory: nothing in the engine branches on the profile. What imapfs does
//! follows the advertised capabilities alone (a server is never assumed to have what it did
//! not advertise); the profile names the provider so the user knows which of its manners
//! apply (connection caps, throttling, label semantics) and which page of the docs to read.
//! Detection goes by capabilities first, the greeting only to tell servers with the same
//! capability line apart: a Dovecot told to advertise Gmail's line is taken for Gmail.

/// A provider whose manners imapfs knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Gmail,
    Microsoft365,
    Yahoo,
    Fastmail,
    /// Any other server: what it lacks of what imapfs uses is listed.
    Standard,
}

impl Profile {
    /// The profile of a server that offered `capabilities` after login and greeted with
    /// `greeting` (`None` through a tunnel).
    pub fn detect(capabilities: &[String], greeting: Option<&str>) -> Profile {
        let has = |cap: &str| capabilities.iter().any(|c| c.eq_ignore_ascii_case(cap));
        let greeting = greeting.unwrap_or("").to_ascii_lowercase();
        if has("X-GM-EXT-1") {
            Profile::Gmail
        } else if has("XYMHIGHESTMODSEQ") || has("X-MSG-EXT") {
            Profile::Yahoo
        } else if greeting.contains("microsoft exchange")
            // Exchange advertises the bare `IMAP4` beside IMAP4rev1; AUTH=XOAUTH2 only
            // where OAuth2 is set up for the tenant.
            || (has("IMAP4") && !has("CONDSTORE"))
        {
            Profile::Microsoft365
        } else if greeting.contains("fastmail") {
            Profile::Fastmail
        } else {
            Profile::Standard
        }
    }

    /// The profile's name as `imapfs check` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Gmail => "Gmail",
            Profile::Microsoft365 => "Microsoft 365",
            Profile::Yahoo => "Yahoo",
            Profile::Fastmail => "Fastmail",
            Profile::Standard => "standard IMAP",
        }
    }

    /// What imapfs does on this server, one line each: the provider's manners first, then
    /// what follows from the capabilities offered.
    pub fn notes(self, capabilities: &[String]) -> Vec<String> {
        let has = |cap: &str| capabilities.iter().any(|c| c.eq_ignore_ascii_case(cap));
        let mut out: Vec<String> = match self {
            Profile::Gmail => vec![
                "labels are folders: a message in several is one inode, fetched once".into(),
                "labels read and written as user.gmail.labels; .search takes X-GM-RAW".into(),
                "rm in a label folder removes that label; -o delete=trash moves to [Gmail]/Trash"
                    .into(),
                "15 connections per account, shared with other clients: keep --connections <= 4"
                    .into(),
                "Workspace caps IMAP downloads at 2,500 MB a day (see user.imapfs.stats)".into(),
            ],
            Profile::Microsoft365 => vec![
                "throttled requests wait the suggested back-off and are sent again (reads only)"
                    .into(),
                "rm expunges; for recoverable deletion: -o delete=trash -o trash=\"Deleted Items\""
                    .into(),
            ],
            Profile::Yahoo => vec![
                "XYMHIGHESTMODSEQ is not CONDSTORE and is not used".into(),
                "rm expunges; for recoverable deletion name the trash folder (-o trash=...)".into(),
            ],
            Profile::Fastmail | Profile::Standard => Vec::new(),
        };
        if !has("CONDSTORE") {
            out.push(
                "no CONDSTORE: other clients' flag changes are found by rescanning a folder's \
                 flags when it is listed (one round trip, grows with the folder)"
                    .into(),
            );
        }
        if !has("IDLE") && !has("NOTIFY") {
            out.push("no IDLE or NOTIFY: changes show when dir_ttl has passed".into());
        }
        if has("COMPRESS=DEFLATE") {
            out.push("COMPRESS=DEFLATE on (-o compress=no turns it off)".into());
        }
        if has("OBJECTID") {
            out.push(
                "OBJECTID: user.imap.emailid and user.imap.threadid; a message in several \
                 folders is downloaded once"
                    .into(),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    // The capability lines of issue 15 (public client code and issue trackers).
    const GMAIL: &str = "IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1 \
                         UIDPLUS COMPRESS=DEFLATE ENABLE MOVE CONDSTORE ESEARCH UTF8=ACCEPT \
                         LIST-EXTENDED LIST-STATUS LITERAL- SPECIAL-USE APPENDLIMIT=35651584";
    const M365: &str = "IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT \
                        CHILDREN IDLE NAMESPACE LITERAL+";
    const YAHOO: &str = "IMAP4rev1 ID MOVE NAMESPACE XYMHIGHESTMODSEQ UIDPLUS LITERAL+ CHILDREN \
                         X-MSG-EXT UNSELECT OBJECTID";
    const DOVECOT: &str = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY \
                           THREAD=REFERENCES MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN \
                           NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH \
                           ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE \
                           SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE LITERAL+ \
                           NOTIFY SPECIAL-USE";

    #[test]
    fn each_providers_capability_line_names_it() {
        assert_eq!(Profile::detect(&caps(GMAIL), None), Profile::Gmail);
        assert_eq!(Profile::detect(&caps(M365), None), Profile::Microsoft365);
        assert_eq!(Profile::detect(&caps(YAHOO), None), Profile::Yahoo);
        assert_eq!(
            Profile::detect(&caps(DOVECOT), Some("* OK [CAPABILITY ...] Dovecot ready.")),
            Profile::Standard
        );
        // Capabilities decide: Dovecot told to advertise Gmail's line is Gmail.
        assert_eq!(
            Profile::detect(&caps(GMAIL), Some("* OK Dovecot ready.")),
            Profile::Gmail
        );
    }

    #[test]
    fn the_greeting_tells_servers_with_plain_lines_apart() {
        let plain = caps("IMAP4rev1 IDLE UIDPLUS MOVE CONDSTORE QRESYNC");
        assert_eq!(
            Profile::detect(
                &plain,
                Some("* OK The Microsoft Exchange IMAP4 service is ready.")
            ),
            Profile::Microsoft365
        );
        assert_eq!(
            Profile::detect(&plain, Some("* OK IMAP4 ready (Fastmail)")),
            Profile::Fastmail
        );
        assert_eq!(Profile::detect(&plain, None), Profile::Standard);
    }

    #[test]
    fn notes_follow_the_capabilities() {
        let m365 = Profile::Microsoft365.notes(&caps(M365));
        assert!(m365.iter().any(|n| n.contains("throttled")));
        assert!(m365.iter().any(|n| n.starts_with("no CONDSTORE")));
        let gmail = Profile::Gmail.notes(&caps(GMAIL));
        assert!(gmail.iter().any(|n| n.contains("one inode")));
        assert!(gmail.iter().any(|n| n.starts_with("COMPRESS=DEFLATE")));
        assert!(!gmail.iter().any(|n| n.starts_with("no CONDSTORE")));
        let dovecot = Profile::Standard.notes(&caps(DOVECOT));
        assert!(dovecot.is_empty(), "{dovecot:?}");
        let bare = Profile::Standard.notes(&caps("IMAP4rev1"));
        assert!(bare.iter().any(|n| n.contains("dir_ttl")));
    }
}
