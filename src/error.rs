//! The crate's one error type, an enum of causes, and the one place that maps causes to errno
//! values (for the filesystem) and to exit codes (for the CLI).
//!
//! Server text (greeting, BYE, ALERT, NO and BAD texts, excerpts of bad frames, mailbox names)
//! is untrusted: an escape sequence in it could drive the user's terminal when it is logged or
//! printed. [`printable`] is the one filter for it: every `Display` here passes its text
//! through it, and so does every log line of the engine that quotes the server.

use std::fmt;
use std::sync::Arc;

use crate::imap::types::{Code, ResponseText, UidValidity};
pub use crate::printable::{printable, printable_bytes};

/// Everything that can go wrong between the user and the server.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A socket error (connection refused, reset, ...), with what we were doing.
    Io {
        context: String,
        source: std::io::Error,
    },
    /// TLS failed; `certificate` is true when the server's certificate did not verify.
    Tls { message: String, certificate: bool },
    /// The server did not answer within the deadline.
    Timeout { what: String },
    /// The server sent bytes we could not decode, or broke the protocol.
    Protocol(String),
    /// The server answered NO.
    No {
        command: &'static str,
        text: ResponseText,
    },
    /// The server sent more than the engine holds for one command (see
    /// [`Limits`](crate::imap::codec::Limits)); what it sent was dropped and the connection
    /// goes on.
    TooLarge { what: &'static str, limit: u64 },
    /// A folder listing with more messages than the store holds for one folder (a sanity
    /// cap, `store::sync::MAX_LISTING`): nothing of it was installed.
    TooManyMessages { limit: usize },
    /// The server answered BAD.
    Bad {
        command: &'static str,
        text: ResponseText,
    },
    /// The server closed the connection (BYE or EOF).
    Bye(String),
    /// Login failed: the server's own words.
    Auth(String),
    /// Login refused because the account has too many connections open (Dovecot's
    /// `NO [LIMIT] Maximum number of connections ...`, Gmail's `NO [ALERT] Too many
    /// simultaneous connections`): the pool shrinks to what it has instead of failing.
    TooManyConnections(String),
    /// A message larger than the server accepts (its APPENDLIMIT): refused before sending.
    MessageTooLarge { len: u64, limit: u64 },
    /// The user gave a value that cannot be sent (a NUL byte, an invalid flag, ...).
    InvalidInput(String),
    /// A mailbox that does not exist (any more).
    NoMailbox(String),
    /// A message the server no longer has.
    NoMessage(String),
    /// The mailbox is not at the generation (UIDVALIDITY) the caller meant: it was deleted and
    /// recreated since the caller listed it, so what the caller named is gone (ENOENT).
    ValidityChanged {
        mailbox: String,
        expected: UidValidity,
        found: UidValidity,
    },
    /// The server's answer to `command` lacks what the protocol promises or the request asked
    /// for, or does not fit the request (no UIDVALIDITY after SELECT, a block at another
    /// offset, no data for a part): a server fault, EIO. The connection goes on.
    BadReply { command: &'static str, what: String },
    /// An invariant of imapfs itself did not hold (a bug, never server input): EIO.
    Internal(&'static str),
    /// One failure shared by several requests that went out as one command (a MOVE of many
    /// messages): each request gets the same cause, and the errno that goes with it.
    Shared(Arc<Error>),
    /// A file or directory name that does not exist in the mount.
    NoEntry(String),
    /// Not allowed here, whatever the server would say (EPERM): renaming a message within its
    /// folder, removing INBOX, a flag outside PERMANENTFLAGS, an expunge that could hit
    /// messages the user did not name.
    NotPermitted(String),
    /// The mount is read-only.
    ReadOnly,
    /// Another client changed the thing meanwhile; our change was not made (EBUSY).
    Conflict(String),
    /// The server accepted a change but did not make it (it answered OK to a `UID EXPUNGE`
    /// and kept the message): EIO, nothing was done.
    Unconfirmed(String),
    /// The folder still holds messages or folders.
    NotEmpty(String),
    /// A folder of that name exists already.
    AlreadyExists(String),
    /// Something this filesystem does not do (an unknown xattr, ...).
    Unsupported(String),
    /// A configuration problem (bad URL, unreadable CA file, ...).
    Config(String),
    /// The server could not be reached lately and the pool is waiting before it tries again;
    /// `error` is the last connection error, `retry_in` the time left until the next attempt.
    Unavailable {
        error: String,
        retry_in: std::time::Duration,
    },
    /// The mount is offline (the server cannot be reached) and what was asked is not held:
    /// a body never cached, a folder never listed, a search (EIO).
    Offline(String),
    /// The mount is offline: it serves what it holds read-only until the server is back
    /// (EROFS for every change).
    OfflineReadOnly,
    /// `imapfs mount` could not reach the server and does not start offline (`offline=no`,
    /// or nothing saved to serve): the connection error, and why there is no offline start.
    Unreachable { cause: Box<Error>, why: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        if matches!(
            source.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            return Error::Timeout {
                what: context.into(),
            };
        }
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The errno a filesystem operation that failed this way should return.
    pub fn errno(&self) -> i32 {
        match self {
            Error::No { text, .. } => match &text.code {
                Some(Code::Nonexistent) => libc::ENOENT,
                Some(Code::AlreadyExists) => libc::EEXIST,
                Some(Code::NoPerm) => libc::EACCES,
                Some(Code::OverQuota) | Some(Code::Limit) => libc::EDQUOT,
                Some(Code::TryCreate) => libc::ENOENT,
                Some(Code::Cannot) => libc::EINVAL,
                Some(Code::InUse) => libc::EBUSY,
                Some(Code::HasChildren) => libc::ENOTEMPTY,
                Some(Code::ExpungeIssued) => libc::ENOENT,
                _ => libc::EIO,
            },
            Error::InvalidInput(_) => libc::EINVAL,
            Error::NoMailbox(_) | Error::NoMessage(_) | Error::NoEntry(_) => libc::ENOENT,
            Error::NotPermitted(_) => libc::EPERM,
            Error::ReadOnly | Error::OfflineReadOnly => libc::EROFS,
            // Not EAGAIN: the kernel's FUSE setxattr path turns that into EOPNOTSUPP (seen
            // on Linux 6.18), which would read as "flags not supported".
            Error::Conflict(_) => libc::EBUSY,
            Error::NotEmpty(_) => libc::ENOTEMPTY,
            Error::AlreadyExists(_) => libc::EEXIST,
            Error::Unsupported(_) => libc::ENOTSUP,
            Error::Auth(_) => libc::EACCES,
            Error::ValidityChanged { .. } => libc::ENOENT,
            Error::Shared(e) => e.errno(),
            // Only reaches a user when no connection at all could be opened.
            Error::TooManyConnections(_) => libc::EAGAIN,
            Error::MessageTooLarge { .. } => libc::EFBIG,
            _ => libc::EIO,
        }
    }

    /// Whether a failure to connect means the server cannot be reached now (refused, reset,
    /// no route, a name that does not resolve, silence, a BYE instead of a greeting), as
    /// opposed to a server that answered and refused us (a wrong password, a certificate
    /// that does not verify, no STARTTLS): only the first lets a mount start offline.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Error::Io { .. } | Error::Timeout { .. } | Error::Bye(_) => true,
            Error::Unavailable { .. } | Error::Unreachable { .. } => true,
            Error::Shared(e) => e.is_unreachable(),
            _ => false,
        }
    }

    /// Whether the connection that produced this error is unusable afterwards.
    pub fn is_fatal_to_connection(&self) -> bool {
        matches!(
            self,
            Error::Io { .. }
                | Error::Tls { .. }
                | Error::Timeout { .. }
                | Error::Protocol(_)
                | Error::Bye(_)
        )
    }

    /// The process exit code for a CLI failing with this error (sysexits.h).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::InvalidInput(_) => 64, // EX_USAGE
            Error::Auth(_) => 77,                            // EX_NOPERM
            Error::Io { .. }
            | Error::Timeout { .. }
            | Error::Tls { .. }
            | Error::Unavailable { .. } => 69, // EX_UNAVAILABLE
            Error::Internal(_) => 70,                        // EX_SOFTWARE
            // Offline, or unreachable without an offline start: try again later.
            Error::Unreachable { .. } | Error::Offline(_) => 75, // EX_TEMPFAIL
            Error::Shared(e) => e.exit_code(),
            _ => 76, // EX_PROTOCOL
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every text below may hold server bytes (or names the server chose): filtered.
        match self {
            Error::Io { context, source } => {
                write!(
                    f,
                    "{}: {}",
                    printable(context),
                    printable(&source.to_string())
                )
            }
            Error::Tls {
                message,
                certificate: true,
            } => {
                write!(
                    f,
                    "TLS certificate verification failed: {}",
                    printable(message)
                )
            }
            Error::Tls { message, .. } => write!(f, "TLS error: {}", printable(message)),
            Error::Timeout { what } => write!(f, "timed out: {}", printable(what)),
            Error::Protocol(m) => write!(f, "protocol error: {}", printable(m)),
            Error::TooLarge { what, limit } => {
                write!(f, "{what} exceeded the limit of {limit} bytes")
            }
            Error::TooManyMessages { limit } => {
                write!(
                    f,
                    "the folder lists more than {limit} messages, the most imapfs holds"
                )
            }
            Error::No { command, text } => write!(f, "server refused {command}: {}", show(text)),
            Error::Bad { command, text } => write!(f, "server rejected {command}: {}", show(text)),
            Error::Bye(m) => write!(f, "server closed the connection: {}", printable(m)),
            Error::Auth(m) => write!(f, "authentication failed: {}", printable(m)),
            Error::MessageTooLarge { len, limit } => write!(
                f,
                "the message ({len} bytes) is larger than the server accepts ({limit} bytes, \
                 its APPENDLIMIT)"
            ),
            Error::TooManyConnections(m) => write!(
                f,
                "the server refuses more connections for this account: {}",
                printable(m)
            ),
            Error::InvalidInput(m) => write!(f, "invalid input: {}", printable(m)),
            Error::NoMailbox(m) => write!(f, "no such mailbox: {}", printable(m)),
            Error::NoMessage(m) => write!(f, "no such message: {}", printable(m)),
            Error::ValidityChanged {
                mailbox,
                expected,
                found,
            } => write!(
                f,
                "{} was recreated (UIDVALIDITY {expected} is now {found})",
                printable(mailbox)
            ),
            Error::BadReply { command, what } => {
                write!(f, "unusable reply to {command}: {}", printable(what))
            }
            Error::Internal(what) => write!(f, "internal error: {what}"),
            Error::Shared(e) => e.fmt(f),
            Error::NoEntry(m) => write!(f, "no such file or directory: {}", printable(m)),
            Error::NotPermitted(m) => write!(f, "not permitted: {}", printable(m)),
            Error::ReadOnly => write!(f, "the mount is read-only"),
            Error::Conflict(m) => {
                write!(f, "changed meanwhile by another client: {}", printable(m))
            }
            Error::Unconfirmed(m) => write!(f, "the server did not do it: {}", printable(m)),
            Error::NotEmpty(m) => write!(f, "not empty: {}", printable(m)),
            Error::AlreadyExists(m) => write!(f, "already exists: {}", printable(m)),
            Error::Unsupported(m) => write!(f, "not supported: {}", printable(m)),
            Error::Config(m) => write!(f, "{}", printable(m)),
            Error::Unavailable { error, retry_in } => write!(
                f,
                "server unavailable, next attempt in {:.1} s (last error: {})",
                retry_in.as_secs_f64(),
                printable(error)
            ),
            Error::Offline(what) => {
                write!(
                    f,
                    "offline (the server cannot be reached): {}",
                    printable(what)
                )
            }
            Error::OfflineReadOnly => write!(
                f,
                "offline (the server cannot be reached): read-only until it is back"
            ),
            Error::Unreachable { cause, why } => write!(f, "{cause} ({})", printable(why)),
        }
    }
}

fn show(t: &ResponseText) -> String {
    match &t.code {
        Some(c) => format!("[{}] {}", printable(&format!("{c:?}")), printable(&t.text)),
        None => printable(&t.text).into_owned(),
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_what_could_drive_a_terminal() {
        assert!(matches!(
            printable("plain \u{dc}mlaut text"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            printable("a\x1b]0;owned\x07\x1b[2Jb\r\n\u{9b}c\u{202e}d\x7f"),
            "a\\x1b]0;owned\\x07\\x1b[2Jb\\x0d\\x0a\\x9bc\\u{202e}d\\x7f"
        );
        assert_eq!(printable_bytes(b"x\xff\x1by"), "x\u{fffd}\\x1by");
    }

    #[test]
    fn server_text_in_errors_is_printable() {
        let e = Error::Bye("bye\x1b[31m red".into());
        assert_eq!(
            e.to_string(),
            "server closed the connection: bye\\x1b[31m red"
        );
        let e = Error::No {
            command: "SELECT",
            text: ResponseText {
                code: Some(Code::Alert),
                text: "\x1b[2Jgone".into(),
            },
        };
        assert_eq!(e.to_string(), "server refused SELECT: [Alert] \\x1b[2Jgone");
    }

    #[test]
    fn typed_causes_map_to_their_errno_and_keep_the_connection() {
        let v = |n| UidValidity::new(n).unwrap();
        let changed = Error::ValidityChanged {
            mailbox: "Gen\x1b".into(),
            expected: v(1),
            found: v(2),
        };
        assert_eq!(changed.errno(), libc::ENOENT);
        assert_eq!(
            changed.to_string(),
            "Gen\\x1b was recreated (UIDVALIDITY 1 is now 2)"
        );
        let bad = Error::BadReply {
            command: "FETCH",
            what: "a block at origin 7".into(),
        };
        assert_eq!(bad.errno(), libc::EIO);
        assert_eq!(Error::Internal("x").errno(), libc::EIO);
        for e in [&changed, &bad, &Error::Internal("x")] {
            assert!(!e.is_fatal_to_connection(), "{e}");
        }
        // A shared failure carries its cause's errno and words.
        let gone = Error::Shared(Arc::new(Error::NoMessage("UID 3".into())));
        assert_eq!(gone.errno(), libc::ENOENT);
        assert_eq!(gone.to_string(), "no such message: UID 3");
        let busy = Error::Shared(Arc::new(Error::Conflict("x".into())));
        assert_eq!(busy.errno(), libc::EBUSY);
    }
}
