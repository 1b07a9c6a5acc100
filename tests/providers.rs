//! Provider behaviour (issue 15) against a real Dovecot configured like the provider: connection
//! caps, capability lines. (Scripted emulators of Gmail, Microsoft 365 and Yahoo are in
//! tests/providers_script.rs.)

mod common;

use std::process::Command as Process;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{Dovecot, Mount, Seed};
use imapfs::imap::auth::{connect, AuthMethod, Credential, Secret, Security, ServerConfig};
use imapfs::imap::codec::{Command, Limits};
use imapfs::imap::pool::{Pool, Retry};
use imapfs::imap::session::Timeouts;
use imapfs::imap::transport::tls_config;
use imapfs::imap::types::MailboxName;
use imapfs::Error;

/// Dovecot 2.3 refusing a user's fourth connection from one address, as a busy account at a
/// provider does (`NO [LIMIT] Maximum number of connections from user+IP exceeded`).
const THREE_CONNECTIONS: &str = "protocol imap {\n  mail_max_userip_connections = 3\n}\n";

fn server(d: &Dovecot, security: Security) -> ServerConfig {
    ServerConfig {
        host: "127.0.0.1".into(),
        port: if security == Security::Tls {
            d.imaps_port
        } else {
            d.imap_port
        },
        security,
        tls: tls_config(Some(&d.ca_file)).unwrap(),
        user: d.user.clone(),
        credential: Credential::Secret(Secret::new(d.password.clone().into_bytes())),
        timeouts: Timeouts {
            inactivity: Duration::from_secs(10),
            command: Duration::from_secs(60),
        },
        limits: Limits::default(),
        auth: AuthMethod::Auto,
        tunnel: None,
    }
}

#[test]
fn a_login_refused_for_the_number_of_connections_is_its_own_error() {
    let d = Dovecot::start_with(Seed::standard(), THREE_CONNECTIONS);
    let cfg = server(&d, Security::Tls);
    let held: Vec<_> = (0..3)
        .map(|i| connect(&cfg).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    match connect(&cfg) {
        Err(Error::TooManyConnections(words)) => {
            assert!(words.contains("Maximum number of connections"), "{words}")
        }
        Err(e) => panic!("a fourth connection: {e:?}, not TooManyConnections"),
        Ok(_) => panic!("Dovecot allowed a fourth connection: the test server is not capped"),
    }
    // The error maps to "try again", not to "permission denied" (EACCES is a wrong password).
    assert_eq!(
        Error::TooManyConnections(String::new()).errno(),
        libc::EAGAIN
    );
    drop(held);
}

#[test]
fn a_pool_larger_than_the_server_allows_shrinks_and_serves_every_request() {
    // Issue 15: with a limit of 3 and `--connections 8`, one or two of 300 parallel reads
    // failed with EACCES or EIO. Now the refused login shrinks the pool.
    let d = Dovecot::start_with(Seed::standard(), THREE_CONNECTIONS);
    let pool = Arc::new(Pool::new(server(&d, Security::Tls), 8, None));
    let inbox = MailboxName::from_utf8("INBOX", false);
    let workers: Vec<_> = (0..12)
        .map(|w| {
            let pool = pool.clone();
            let inbox = inbox.clone();
            thread::spawn(move || {
                for i in 0..25 {
                    pool.with_session(Some(&inbox), Retry::Idempotent, |s| {
                        s.run(Command::Status {
                            mailbox: inbox.clone(),
                            items: vec!["MESSAGES"],
                        })?;
                        s.run(Command::Noop)
                    })
                    .unwrap_or_else(|e| panic!("worker {w}, request {i}: {e:?}"));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let stats = pool.stats();
    assert!(stats.open <= 3, "{stats:?}");
    assert!(
        stats.connect_failures == 0,
        "a refused connection counted as a failure: {stats:?}"
    );
}

#[test]
fn parallel_reads_through_a_mount_at_a_connection_cap_all_succeed() {
    let d = Dovecot::start_with(Seed::standard(), THREE_CONNECTIONS);
    let mount = Mount::start(&d, &["--connections", "8"]).expect("mount");
    let want = d.oracle_fetch_all("Big");
    let dir = mount.join("Big");
    let names: Vec<String> = want.keys().map(|uid| format!("{uid}.eml")).collect();
    // 16 readers at once: far more than 3 connections.
    let out = Process::new("sh")
        .arg("-c")
        .arg("printf '%s\\n' \"$@\" | xargs -P 16 -n 4 sha256sum")
        .arg("sh")
        .args(&names)
        .current_dir(&dir)
        .output()
        .expect("xargs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "readers failed: {stderr}");
    let sums: std::collections::HashMap<String, String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(sum, name)| (name.to_string(), sum.to_string()))
        .collect();
    let bodies: Vec<&[u8]> = want.values().map(Vec::as_slice).collect();
    let expected = common::sha256_hex_many(&bodies);
    for (uid, sum) in want.keys().zip(&expected) {
        let name = format!("{uid}.eml");
        assert_eq!(sums.get(&name), Some(sum), "{name}");
    }
}
