//! What a server's refusals mean beyond NO: the words and codes by which a server says
//! "not now" rather than "no". Read by the pool (throttling) and by login (connection caps),
//! so that each provider's wording is recognised in one place (see docs/providers.md).

use std::time::Duration;

use crate::error::Error;
use crate::imap::types::{Code, ResponseText};

/// Whether a refused login means "too many connections for this account" rather than bad
/// credentials: the `[LIMIT]` code (RFC 5530; Dovecot's `mail_max_userip_connections`), or the
/// words Gmail (`[ALERT] Too many simultaneous connections`) and others use without a code.
pub fn is_connection_cap(text: &ResponseText) -> bool {
    if text.code == Some(Code::Limit) {
        return true;
    }
    let words = text.text.to_ascii_lowercase();
    [
        "too many simultaneous connections",
        "too many connections",
        "maximum number of connections",
        "connection limit",
    ]
    .iter()
    .any(|p| words.contains(p))
}

/// Longest wait a throttle reply can impose on one attempt.
const THROTTLE_MAX: Duration = Duration::from_secs(10);
/// Shortest wait after a throttle reply (one that suggests 0 ms is not asking for a storm).
const THROTTLE_MIN: Duration = Duration::from_millis(50);
/// The wait when a throttle reply names no time.
const THROTTLE_DEFAULT: Duration = Duration::from_secs(1);

/// The wait a NO (or BAD) reply asks for when it throttles: Microsoft 365's `Request is
/// throttled. Suggested Backoff Time: N milliseconds`, capped at [`THROTTLE_MAX`]; `None` for
/// any other error.
pub fn throttle_wait(e: &Error) -> Option<Duration> {
    let (Error::No { text, .. } | Error::Bad { text, .. }) = e else {
        return None;
    };
    let words = text.text.to_ascii_lowercase();
    if !words.contains("throttled") {
        return None;
    }
    let millis = words
        .split_once("backoff time:")
        .and_then(|(_, rest)| {
            let digits: String = rest
                .trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse::<u64>().ok()
        })
        .map(Duration::from_millis);
    Some(
        millis
            .unwrap_or(THROTTLE_DEFAULT)
            .clamp(THROTTLE_MIN, THROTTLE_MAX),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_reply_asks_for_its_wait_capped() {
        use crate::imap::types::ResponseText;
        let no = |text: &str| Error::No {
            command: "FETCH",
            text: ResponseText {
                code: None,
                text: text.into(),
            },
        };
        let m365 = "Request is throttled. Suggested Backoff Time: 250 milliseconds";
        assert_eq!(throttle_wait(&no(m365)), Some(Duration::from_millis(250)));
        let long = "Request is throttled. Suggested Backoff Time: 99999999 milliseconds";
        assert_eq!(throttle_wait(&no(long)), Some(THROTTLE_MAX));
        assert_eq!(
            throttle_wait(&no("Request is throttled.")),
            Some(THROTTLE_DEFAULT)
        );
        assert_eq!(throttle_wait(&no("Mailbox does not exist")), None);
        assert_eq!(throttle_wait(&Error::Bye(m365.into())), None);
    }

    #[test]
    fn a_refused_login_for_the_number_of_connections_is_recognised() {
        let text = |code, words: &str| ResponseText {
            code,
            text: words.into(),
        };
        assert!(is_connection_cap(&text(
            Some(Code::Limit),
            "Maximum number"
        )));
        assert!(is_connection_cap(&text(
            Some(Code::Alert),
            "Too many simultaneous connections. (Failure)"
        )));
        assert!(!is_connection_cap(&text(
            Some(Code::AuthenticationFailed),
            "Invalid credentials"
        )));
    }
}
