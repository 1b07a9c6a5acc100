//! imapfs: an IMAP account as a filesystem.
//!
//! # Layout
//!
//! Dependencies point one way: `fs` -> `store` -> `imap`.
//!
//! - [`imap`]: our own protocol engine. [`imap::codec`] is sans-I/O (bytes in, values out, and
//!   back); [`imap::transport`] moves bytes over TCP or TLS with deadlines; [`imap::session`]
//!   runs commands on one connection and tracks the selected mailbox.
//! - [`store`]: what the filesystem believes about the account: the mailbox list, a per-mailbox
//!   index keyed on UIDVALIDITY, a pool of sessions and a byte-bounded LRU block cache whose
//!   keys include UIDVALIDITY, so a cached byte can never belong to another message.
//! - [`fs`]: the FUSE adapter: inodes, names, attributes, xattrs, errno mapping.
//! - [`config`]: accounts (URL or config file), options, password sources.
//! - [`cli`]: the command line's shape (clap) and its resolution into settings; `main.rs`
//!   runs it. [`check`]: the `imapfs check` probe, on the engine alone.
//! - [`mount`]: mount point checks, daemonising, serving until unmounted.
//! - [`error`]: the crate's error enum and its mapping to errno and exit codes; [`printable`]:
//!   the filter for server text shown on a terminal or in a log.
//!
//! These docs are for the people who work on imapfs, read with
//! `cargo doc --document-private-items` (scripts/test.sh checks them so, warnings denied), so
//! a module's text may link to the private items it is made of.
#![allow(rustdoc::private_intra_doc_links)]

pub mod cache_report;
pub mod check;
pub mod cli;
pub mod config;
pub mod error;
pub mod fs;
pub mod imap;
pub mod mount;
pub mod printable;
pub mod store;

pub use error::{Error, Result};
