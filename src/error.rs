//! The crate's one error type, an enum of causes, and the one place that maps causes to errno
//! values (for the filesystem) and to exit codes (for the CLI).

use std::fmt;

use crate::imap::types::{Code, ResponseText};

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
    /// The server answered BAD.
    Bad {
        command: &'static str,
        text: ResponseText,
    },
    /// The server closed the connection (BYE or EOF).
    Bye(String),
    /// Login failed: the server's own words.
    Auth(String),
    /// The user gave a value that cannot be sent (a NUL byte, an invalid flag, ...).
    InvalidInput(String),
    /// A mailbox that does not exist (any more).
    NoMailbox(String),
    /// A message the server no longer has, or whose mailbox changed generation (UIDVALIDITY)
    /// since it was listed.
    NoMessage(String),
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
    /// The folder still holds messages or folders.
    NotEmpty(String),
    /// A folder of that name exists already.
    AlreadyExists(String),
    /// Something this filesystem does not do (an unknown xattr, ...).
    Unsupported(String),
    /// A configuration problem (bad URL, unreadable CA file, ...).
    Config(String),
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
            Error::ReadOnly => libc::EROFS,
            // Not EAGAIN: the kernel's FUSE setxattr path turns that into EOPNOTSUPP (seen
            // on Linux 6.18), which would read as "flags not supported".
            Error::Conflict(_) => libc::EBUSY,
            Error::NotEmpty(_) => libc::ENOTEMPTY,
            Error::AlreadyExists(_) => libc::EEXIST,
            Error::Unsupported(_) => libc::ENOTSUP,
            Error::Auth(_) => libc::EACCES,
            _ => libc::EIO,
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
            Error::Io { .. } | Error::Timeout { .. } | Error::Tls { .. } => 69, // EX_UNAVAILABLE
            _ => 76,                                         // EX_PROTOCOL
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::Tls {
                message,
                certificate: true,
            } => {
                write!(f, "TLS certificate verification failed: {message}")
            }
            Error::Tls { message, .. } => write!(f, "TLS error: {message}"),
            Error::Timeout { what } => write!(f, "timed out: {what}"),
            Error::Protocol(m) => write!(f, "protocol error: {m}"),
            Error::No { command, text } => write!(f, "server refused {command}: {}", show(text)),
            Error::Bad { command, text } => write!(f, "server rejected {command}: {}", show(text)),
            Error::Bye(m) => write!(f, "server closed the connection: {m}"),
            Error::Auth(m) => write!(f, "authentication failed: {m}"),
            Error::InvalidInput(m) => write!(f, "invalid input: {m}"),
            Error::NoMailbox(m) => write!(f, "no such mailbox: {m}"),
            Error::NoMessage(m) => write!(f, "no such message: {m}"),
            Error::NoEntry(m) => write!(f, "no such file or directory: {m}"),
            Error::NotPermitted(m) => write!(f, "not permitted: {m}"),
            Error::ReadOnly => write!(f, "the mount is read-only"),
            Error::Conflict(m) => write!(f, "changed meanwhile by another client: {m}"),
            Error::NotEmpty(m) => write!(f, "not empty: {m}"),
            Error::AlreadyExists(m) => write!(f, "already exists: {m}"),
            Error::Unsupported(m) => write!(f, "not supported: {m}"),
            Error::Config(m) => write!(f, "{m}"),
        }
    }
}

fn show(t: &ResponseText) -> String {
    // Server text may hold control characters: never let them reach a terminal raw.
    let clean: String = t.text.chars().filter(|c| !c.is_control()).collect();
    match &t.code {
        Some(c) => format!("[{c:?}] {clean}"),
        None => clean,
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
