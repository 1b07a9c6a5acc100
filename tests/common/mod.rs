//! The shared end-to-end harness: a private Dovecot, a seeded mail store, an independent oracle
//! client and a real `imapfs` mount.
//!
//! Every integration test binary that needs a server says `mod common;` and uses:
//!
//! - [`Seed`]: folders and messages described in memory, deterministic byte for byte
//!   ([`Seed::standard`] is the fixture most tests share). A message's UID is its 1-based
//!   position in its folder.
//! - [`Dovecot`]: a throwaway Dovecot running as a child of the test, listening on two random
//!   loopback ports (`imap` with STARTTLS, `imaps`), with a fresh self-signed certificate that is
//!   also the CA file. The seed is written as maildir++ files *before* the server starts, so
//!   seeding costs a file write, not an APPEND per message. `Drop` stops the server and removes
//!   its directory, also when the test panics.
//! - The oracle (`Dovecot::oracle_*`): Python's `imaplib` on the plaintext port, a client that is
//!   not ours, so it can tell what the server really holds.
//! - [`other_client::OtherClient`]: a long-lived imaplib process (another client that appends
//!   and re-flags, and reads the whole account in one go), for tests/safety/model.rs.
//! - [`Mount`]: `imapfs mount -f` on a fresh mountpoint, waited for until the kernel lists the
//!   mount; `Drop` unmounts and reaps the process. [`MountOptions`] varies URL, password and CA
//!   file to provoke the start-up failures.
//! - Faults (`Dovecot::kick`, `pause`, `kill_server` / `start_again`, `imap_processes`):
//!   `doveadm kick`, SIGSTOP of every server process (SIGCONT when the [`Paused`] guard
//!   drops), and a restart on the same ports and maildir, for tests/resilience.rs.
//! - [`run`] / [`within`] / [`wait_for`]: every external command and every filesystem access
//!   that could hang runs under a deadline, so a hung mount fails a test instead of the run.
//!
//! # Layout
//!
//! | file | holds |
//! |---|---|
//! | seed.rs, seed_standard.rs | [`Seed`] and message composition; the standard fixture |
//! | maildir.rs | a seed written as maildir++ files, owned by the mail user |
//! | dovecot.rs | [`Dovecot`]: start, config, certificate, logs, teardown |
//! | oracle.rs, oracle.py | the imaplib oracle (`Dovecot::oracle_*`) |
//! | oracle_common.py | mUTF-7 and response parsing shared by both Python oracles |
//! | faults.rs | kick, pause ([`Paused`]), kill and restart |
//! | mount.rs | [`Mount`], [`MountOptions`], [`MountFailure`], [`is_mounted`] |
//! | command.rs | [`run`] and friends, the imapfs command line, digests, temp directories |
//! | wait.rs | [`within`], [`wait_for`], [`set_xattr`]: deadlines |
//! | text.rs | mUTF-7, base64, dates, hex, [`Rng`] |
//! | ports.rs, proxy.rs | held ports, [`free_port`], whose listener a port is; the cutting proxy |
//! | counting_proxy.rs | a proxy that counts the bytes on the wire (tests/disk_cache.rs) |
//! | servers.rs, servers_oracle.py | other real servers (tests/compat.rs) and their raw oracle |
//! | other_client.rs | a long-lived imaplib client for tests/safety/model.rs |
//!
//! Invariants: nothing here sleeps to synchronise, it polls a condition with a deadline; no
//! directory is removed recursively while something may still be mounted below it.

#![allow(dead_code)]

mod command;
pub mod counting_proxy;
mod dovecot;
mod faults;
mod maildir;
mod mount;
mod oracle;
pub mod other_client;
pub mod ports;
pub mod provider_proxy;
pub mod proxy;
mod seed;
mod seed_standard;
pub mod servers;
mod text;
mod wait;

// Every name a test uses is reachable as `common::NAME`, wherever it lives; each test binary
// uses a part, so the others would warn.
#[allow(unused_imports)]
pub use self::{
    command::{
        finish, getfattr, getfattr_bytes, imapfs_command, parse_sha256sum, processes_mentioning,
        run, run_command, run_ok, sha256_hex, sha256_hex_many, single_line, tail, try_run,
        unique_temp_dir, vm_hwm_kb, vm_rss_kb, Finished,
    },
    dovecot::{self_signed_certificate, Dovecot},
    faults::Paused,
    maildir::{big_folder_message, fill_folder},
    mount::{is_mounted, Mount, MountFailure, MountOptions},
    oracle::{ListEntry, OracleMeta, OraclePart, OracleParts, OracleStatus},
    ports::free_port,
    seed::{compose_text, mailbox_path, Seed, SeedFolder, SeedMessage, Subject, TextMessage},
    text::{contains, days_from_civil, hex_decode, hex_encode, mutf7_encode, rfc5322_date, Rng},
    wait::{set_xattr, wait_for, within},
};

/// The account every test server has.
pub const USER: &str = "tester";
/// Distinctive, so a test can assert it never appears in output or logs.
pub const PASSWORD: &str = "Pw-4Kq9-zN7u";
/// A phrase placed in a known subset of the `Big` folder's messages (see [`Seed::phrase_hits`]).
pub const PHRASE: &str = "ZEBRA-INVOICE-7731";
/// The hierarchy delimiter of Dovecot's default maildir++ layout.
pub const DELIMITER: char = '.';
