//! The embedded IMAP protocol engine. It knows nothing of FUSE.
//!
//! - [`codec`]: sans-I/O decoding of responses and encoding of commands.
//! - [`types`]: the protocol's values (UIDs, flags, mailbox names, responses).
//! - [`chars`]: the grammar's character classes (what an atom or an astring may hold).
//! - [`gmail`]: Gmail's X-GM-EXT-1 labels and ids ([`gmail::Label`]).
//! - [`mutf7`]: modified UTF-7, the wire form of mailbox names without UTF8=ACCEPT.
//! - [`transport`]: a blocking byte stream over TCP, plain or TLS, with deadlines.
//! - [`compress`]: COMPRESS=DEFLATE (RFC 4978), both directions as deflate streams.
//! - [`tls`]: which server certificates are trusted (roots, CA file, pinned fingerprint).
//! - [`session`]: one authenticated connection: tags, capabilities, the selected mailbox and
//!   the untagged updates the server sends about it.
//! - [`auth`]: login mechanisms.
//! - [`pool`]: a bounded pool of sessions, retry policy, outage back-off, statistics.

pub mod auth;
pub mod chars;
pub mod codec;
pub mod compress;
pub mod gmail;
pub mod mutf7;
pub mod pool;
pub mod profile;
pub mod refusals;
pub mod session;
pub mod tls;
pub mod transport;
pub mod types;
