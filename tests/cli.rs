//! The command line as a new user meets it (issue 9 "Daily use", and the CLI defects of
//! issue 8): every start-up failure ends with one clear line on stderr, a non-zero exit,
//! nothing mounted and no process left; `-o` options, the mount helper form and
//! `mount -t fuse.imapfs`; config-file accounts and password sources; TLS pinning and
//! `--insecure`; `imapfs check`; the OAuth2 token command; secrets that never show; the man
//! page and shell completions.
//!
//! Servers: the harness's Dovecot, and small scripted servers here for what Dovecot will not
//! do (XOAUTH2, no STARTTLS, a certificate for another name).

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::CommandFactory;
use common::{
    finish, imapfs_command, is_mounted, processes_mentioning, run, single_line, wait_for, Dovecot,
    Finished, Mount, MountOptions, Seed, PASSWORD, USER,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Deadline for one imapfs run that is expected to fail or report.
const RUN: Duration = Duration::from_secs(40);
/// Deadline for a small filesystem command on a mount.
const QUICK: Duration = Duration::from_secs(20);

// --- failures a new user meets -----------------------------------------------------------------

#[test]
fn wrong_password_is_one_line_and_exit_77() {
    let dovecot = Dovecot::start(&Seed::new());
    let scratch = Scratch::new();
    let mut command = scratch.mount_command(&dovecot.url(), &dovecot.ca_file);
    command.env("IMAPFS_PASSWORD", "not-the-password-93");
    let (code, line) = scratch.expect_failure(command);
    assert_eq!(code, 77, "{line}");
    assert!(line.contains("authentication failed"), "{line}");
    assert!(!line.contains("not-the-password-93"), "{line}");
}

#[test]
fn unknown_host_is_one_line() {
    // In a network namespace of its own, so that the resolver fails without sending a query.
    let scratch = Scratch::new();
    let mut command = Command::new("unshare");
    command
        .arg("-n")
        .arg(env!("CARGO_BIN_EXE_imapfs"))
        .arg("mount")
        .arg(format!("imaps://{USER}@no-such-host.invalid"))
        .arg(&scratch.mountpoint)
        .env("IMAPFS_PASSWORD", PASSWORD)
        .env("XDG_CONFIG_HOME", &scratch.config_home)
        .env_remove("RUST_LOG");
    let (code, line) = scratch.expect_failure(command);
    // 75: unreachable, and no copy saved to start offline from (issue 16).
    assert_eq!(code, 75, "{line}");
    assert!(
        line.contains("cannot resolve no-such-host.invalid"),
        "{line}"
    );
}

#[test]
fn refused_port_is_one_line() {
    let scratch = Scratch::new();
    let refusing = common::ports::RefusingPort::new();
    let url = format!("imaps://{USER}@127.0.0.1:{}", refusing.port);
    let (code, line) = scratch.expect_failure(scratch.without_ca(&url));
    // 75: unreachable, and no copy saved to start offline from (issue 16).
    assert_eq!(code, 75, "{line}");
    assert!(
        line.contains("cannot connect") && line.contains("refused"),
        "{line}"
    );
}

#[test]
fn certificate_for_another_name_is_refused() {
    // A certificate signed by a CA we trust, but for mail.example.org, not 127.0.0.1.
    let scratch = Scratch::new();
    let (ca, cert, key) = ca_signed_certificate(&scratch.dir, "DNS:mail.example.org");
    let server = FakeServer::start_with("127.0.0.1", Tls::Yes, "IMAP4rev1 AUTH=PLAIN", (cert, key));
    let url = format!("imaps://{USER}@127.0.0.1:{}", server.port);
    let command = scratch.mount_command(&url, &ca);
    let (code, line) = scratch.expect_failure(command);
    assert_eq!(code, 69, "{line}");
    assert!(line.contains("not valid for this host name"), "{line}");
    assert_eq!(server.logins(), 0, "logged in despite the certificate");
}

#[test]
fn self_signed_certificate_without_ca_file_is_refused() {
    let dovecot = Dovecot::start(&Seed::new());
    let scratch = Scratch::new();
    let (code, line) = scratch.expect_failure(scratch.without_ca(&dovecot.url()));
    assert_eq!(code, 69, "{line}");
    assert!(
        line.contains("certificate") && line.contains("--ca-file"),
        "{line}"
    );
}

#[test]
fn wrong_fingerprint_is_refused_and_the_right_one_mounts() {
    let dovecot = Dovecot::start(Seed::standard());
    let scratch = Scratch::new();
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let mut command = imapfs_command(&scratch.config_home);
    command
        .args(["mount", "--tls-fingerprint", &wrong, &dovecot.url()])
        .arg(&scratch.mountpoint)
        .env("IMAPFS_PASSWORD", PASSWORD);
    let (code, line) = scratch.expect_failure(command);
    assert_eq!(code, 69, "{line}");
    assert!(
        line.contains("--tls-fingerprint")
            && line.contains(&certificate_fingerprint(&dovecot.ca_file)),
        "the error should name the fingerprint the server has: {line}"
    );

    // The right one, in openssl's own notation (upper case, colons), without any CA file.
    let right = openssl_fingerprint(&dovecot.ca_file);
    let mount = MountOptions::new(&dovecot)
        .without_ca_file()
        .args(&["--tls-fingerprint", &right])
        .start()
        .unwrap_or_else(|f| panic!("{f}"));
    assert!(list(mount.path()).contains("INBOX"));
}

#[test]
fn mount_point_problems_are_one_line_each() {
    let dovecot = Dovecot::start(&Seed::new());
    let scratch = Scratch::new();

    let missing = scratch.dir.join("missing");
    let (code, line) = scratch.expect_failure_at(&dovecot, &missing, &[]);
    assert_no_process_names(&missing);
    assert_eq!(code, 64, "{line}");
    assert!(line.contains("does not exist"), "{line}");

    let file = scratch.dir.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let (code, line) = scratch.expect_failure_at(&dovecot, &file, &[]);
    assert_no_process_names(&file);
    assert_eq!(code, 64, "{line}");
    assert!(line.contains("is not a directory"), "{line}");

    let full = scratch.dir.join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("keep.txt"), b"mine").unwrap();
    let (code, line) = scratch.expect_failure_at(&dovecot, &full, &[]);
    assert_no_process_names(&full);
    assert_eq!(code, 64, "{line}");
    assert!(
        line.contains("is not empty") && line.contains("nonempty"),
        "{line}"
    );

    // -o nonempty mounts over it; the file is hidden, not touched.
    let mut command = imapfs_command(&scratch.config_home);
    command
        .args(["mount", "-f", "--ca-file"])
        .arg(&dovecot.ca_file)
        .arg(dovecot.url())
        .arg(&full)
        .args(["-o", "nonempty"])
        .env("IMAPFS_PASSWORD", PASSWORD)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = command.spawn().unwrap();
    let guard = KillOnDrop(&mut child, full.clone());
    wait_for("the nonempty mount", Duration::from_secs(15), || {
        is_mounted(&full).then_some(())
    });
    assert!(list(&full).contains("INBOX"));
    drop(guard);
    assert_eq!(std::fs::read(full.join("keep.txt")).unwrap(), b"mine");
}

#[test]
fn an_existing_mount_is_refused_and_left_intact() {
    let dovecot = Dovecot::start(Seed::standard());
    let mount = Mount::start(&dovecot, &[]).unwrap_or_else(|f| panic!("{f}"));
    let scratch = Scratch::new();
    let (code, line) = scratch.expect_failure_at(&dovecot, mount.path(), &[]);
    assert_eq!(code, 64, "{line}");
    assert!(line.contains("already a mount point"), "{line}");
    let left = processes_mentioning(&mount.path().to_string_lossy());
    assert_eq!(left, vec![mount.pid()], "an imapfs process is left");
    assert!(mount.is_mounted());
    assert!(
        list(mount.path()).contains("INBOX"),
        "the first mount broke"
    );
}

#[test]
fn imap_without_starttls_is_refused_and_insecure_is_the_only_way() {
    let server = FakeServer::start("127.0.0.1", Tls::No, "IMAP4rev1 AUTH=PLAIN");
    let scratch = Scratch::new();
    let url = format!("imap://{USER}@127.0.0.1:{}", server.port);
    let command = scratch.mount_command(&url, &server.ca_file);
    let (code, line) = scratch.expect_failure(command);
    assert_eq!(code, 69, "{line}");
    assert!(
        line.contains("does not offer STARTTLS") && line.contains("--insecure"),
        "{line}"
    );
    assert_eq!(server.logins(), 0, "the password went out in clear");

    // --insecure with imaps:// makes no sense: one line, exit 64.
    let mut command = imapfs_command(&scratch.config_home);
    command.args([
        "check",
        "--insecure",
        &format!("imaps://{USER}@127.0.0.1:1"),
    ]);
    let out = finish(command, RUN);
    assert_eq!(out.code(), 64, "{out:?}");
    assert!(single_line(&out.stderr).contains("only with imap://"));

    // With --insecure it logs in without TLS, and says so.
    let dovecot = Dovecot::start(&Seed::new());
    let mut command = imapfs_command(&scratch.config_home);
    command
        .args(["check", "--insecure"])
        .arg(format!("imap://{USER}@127.0.0.1:{}", dovecot.imap_port))
        .env("IMAPFS_PASSWORD", PASSWORD);
    let out = finish(command, RUN);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        single_line(&out.stderr).contains("warning: --insecure"),
        "{out:?}"
    );
}

#[test]
fn config_file_password_readable_by_others_is_refused() {
    let dovecot = Dovecot::start(Seed::standard());
    let scratch = Scratch::new();
    let config = scratch.write_config(&format!(
        "[accounts.work]\nurl = \"{}\"\nca_file = \"{}\"\npassword = \"{PASSWORD}\"\n",
        dovecot.url(),
        dovecot.ca_file.display()
    ));
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut command = imapfs_command(&scratch.config_home);
    command.args(["mount", "work"]).arg(&scratch.mountpoint);
    let (code, line) = scratch.expect_failure(command);
    assert_eq!(code, 64, "{line}");
    assert!(
        line.contains(&config.display().to_string()) && line.contains("readable by others"),
        "{line}"
    );
    assert!(!line.contains(PASSWORD));

    // Private, it works: the account name alone mounts.
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut command = imapfs_command(&scratch.config_home);
    command.args(["mount", "work"]).arg(&scratch.mountpoint);
    let out = finish(command, RUN);
    assert_eq!(out.code(), 0, "{out:?}");
    let guard = Unmount(scratch.mountpoint.clone());
    assert!(list(&scratch.mountpoint).contains("INBOX"));
    drop(guard);
}

#[test]
fn unknown_account_is_one_line() {
    let scratch = Scratch::new();
    scratch.write_config("[accounts.work]\nurl = \"imaps://me@127.0.0.1:1\"\n");
    let mut command = imapfs_command(&scratch.config_home);
    command.args(["mount", "play"]).arg(&scratch.mountpoint);
    let (code, line) = scratch.expect_failure(command);
    assert_eq!(code, 64, "{line}");
    assert!(
        line.contains("no account `play`") && line.contains("work"),
        "{line}"
    );
}

#[test]
fn password_file_readable_by_others_is_refused() {
    let scratch = Scratch::new();
    let file = scratch.dir.join("pw");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let mut command = imapfs_command(&scratch.config_home);
    command
        .args(["mount", "--password-file"])
        .arg(&file)
        .arg(format!("imaps://{USER}@127.0.0.1:1"))
        .arg(&scratch.mountpoint);
    let (code, line) = scratch.expect_failure(command);
    assert_eq!(code, 64, "{line}");
    assert!(
        line.contains(&file.display().to_string()) && line.contains("mode 0640"),
        "{line}"
    );
}

#[test]
fn unknown_option_is_one_line_and_exit_64() {
    let scratch = Scratch::new();
    let mut command = imapfs_command(&scratch.config_home);
    command
        .arg(format!("imaps://{USER}@127.0.0.1:1"))
        .arg(&scratch.mountpoint)
        .args(["-o", "ro,frobnicate=3"]);
    let (code, line) = scratch.expect_failure(command);
    assert_eq!(code, 64, "{line}");
    assert!(line.contains("unknown option `frobnicate`"), "{line}");
}

/// Issue 16: a bad `prefetch=` or `prefetch_budget=` is refused before anything else.
#[test]
fn bad_prefetch_values_are_one_line_and_exit_64() {
    for (list, words) in [
        ("prefetch=/", "option prefetch: needs folder names"),
        (
            "prefetch=INBOX,prefetch_budget=lots",
            "option prefetch_budget",
        ),
    ] {
        let scratch = Scratch::new();
        let mut command = imapfs_command(&scratch.config_home);
        command
            .arg(format!("imaps://{USER}@127.0.0.1:1"))
            .arg(&scratch.mountpoint)
            .args(["-o", list]);
        let (code, line) = scratch.expect_failure(command);
        assert_eq!(code, 64, "{line}");
        assert!(line.contains(words), "{list}: {line}");
    }
}

/// Issue 8: `--timeout 18446744073709551615` overflowed the command deadline.
#[test]
fn huge_timeout_is_refused_with_one_line() {
    let scratch = Scratch::new();
    let mut command = imapfs_command(&scratch.config_home);
    command
        .args(["mount", "--timeout", "18446744073709551615"])
        .arg(format!("imaps://{USER}@127.0.0.1:1"))
        .arg(&scratch.mountpoint);
    let (code, line) = scratch.expect_failure(command);
    assert_eq!(code, 64, "{line}");
    assert!(line.contains("timeout") && line.contains("86400"), "{line}");
}

// --- secrets -----------------------------------------------------------------------------------

#[test]
fn password_is_nowhere_with_trace_logging() {
    let dovecot = Dovecot::start(Seed::standard());
    let scratch = Scratch::new();
    let pw = scratch.dir.join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let log = scratch.dir.join("trace.log");
    let mount = MountOptions::new(&dovecot)
        .password(None)
        .args(&[
            "--password-file",
            pw.to_str().unwrap(),
            "--debug",
            "--log-file",
            log.to_str().unwrap(),
        ])
        .start()
        .unwrap_or_else(|f| panic!("{f}"));
    assert!(list(&mount.join("INBOX")).len() > 1);
    // The login itself is in the log (the session traces at this RUST_LOG), so the check
    // below looks where the password would be if it leaked.
    let bytes = std::fs::read(&log).unwrap();
    assert!(
        logs_the_login(&bytes),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert_secret_hidden(PASSWORD, mount.pid(), &[&log, mount.log_path()]);

    // RUST_LOG=trace as well.
    drop(mount);
    let trace = scratch.dir.join("trace2.log");
    let mut command = imapfs_command(&scratch.config_home);
    command
        .args(["mount", "-f", "--debug", "--ca-file"])
        .arg(&dovecot.ca_file)
        .arg("--password-file")
        .arg(&pw)
        .arg("--log-file")
        .arg(&trace)
        .arg(dovecot.url())
        .arg(&scratch.mountpoint)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = command.spawn().unwrap();
    let pid = child.id();
    let guard = KillOnDrop(&mut child, scratch.mountpoint.clone());
    wait_for("the trace mount", Duration::from_secs(15), || {
        is_mounted(&scratch.mountpoint).then_some(())
    });
    assert!(list(&scratch.mountpoint.join("INBOX")).len() > 1);
    let bytes = std::fs::read(&trace).unwrap();
    assert!(
        logs_the_login(&bytes),
        "RUST_LOG=trace logs the wire, the login too"
    );
    assert_secret_hidden(PASSWORD, pid, &[&trace]);
    drop(guard);
}

/// Whether a log traces the command that logged in (a `C: ` line naming LOGIN or AUTHENTICATE).
fn logs_the_login(log: &[u8]) -> bool {
    String::from_utf8_lossy(log)
        .lines()
        .any(|l| l.contains("C: ") && (l.contains(" LOGIN") || l.contains(" AUTHENTICATE")))
}

/// Issue 8: the log file was created with the umask's mode (0644), readable by others.
#[test]
fn log_file_is_created_0600() {
    let dovecot = Dovecot::start(&Seed::new());
    let scratch = Scratch::new();
    let log = scratch.dir.join("new.log");
    let mount = MountOptions::new(&dovecot)
        .args(&["--log-file", log.to_str().unwrap()])
        .start()
        .unwrap_or_else(|f| panic!("{f}"));
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "log file mode {mode:o}");
    drop(mount);
}

// --- OAuth2 -------------------------------------------------------------------------------------

#[test]
fn oauth2_token_command_runs_again_for_each_new_connection() {
    let server = FakeServer::start("127.0.0.1", Tls::Yes, "IMAP4rev1 SASL-IR AUTH=XOAUTH2");
    let scratch = Scratch::new();
    let counter = scratch.dir.join("count");
    // Prints Tok-<n>-Secret, n counting calls: every run gives a distinct token.
    let token_command = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; echo Tok-$n-Secret",
        c = counter.display()
    );
    let url = format!("imaps://{USER}@127.0.0.1:{}", server.port);
    let log = scratch.dir.join("oauth.log");
    let mount = MountOptions::custom(url, server.ca_file.clone(), "")
        .password(None)
        .rust_log("trace")
        .args(&[
            "--oauth2-token-command",
            &token_command,
            "--dir-ttl",
            "0",
            "--debug",
            "--log-file",
            log.to_str().unwrap(),
        ])
        .start()
        .unwrap_or_else(|f| panic!("{f}"));
    assert!(list(mount.path()).contains("INBOX"));
    let first = server.distinct_tokens();
    assert!(!first.is_empty(), "no XOAUTH2 login seen");
    assert!(server.mechanisms().iter().all(|m| m == "XOAUTH2"));

    // The server drops every connection; the next access must log in again, with a new token.
    server.drop_connections();
    wait_for(
        "a login with a fresh token",
        Duration::from_secs(30),
        || {
            let _ = common::try_run(
                &["ls", &mount.path().join("INBOX").to_string_lossy()],
                QUICK,
            );
            (server.distinct_tokens().len() > first.len()).then_some(())
        },
    );
    let tokens = server.distinct_tokens();
    assert!(tokens.len() >= 2, "{tokens:?}");
    let logged = std::fs::read(&log).unwrap();
    assert!(
        common::contains(&logged, b"AUTHENTICATE <credentials hidden>"),
        "the trace log should show the login, hidden"
    );
    let mut secrets: Vec<String> = tokens.into_iter().collect();
    secrets.retain(|t| t.starts_with("Tok-"));
    for token in &secrets {
        assert_secret_hidden(token, mount.pid(), &[&log, mount.log_path()]);
    }
    drop(mount);
}

#[test]
fn oauth2_auto_picks_oauthbearer_when_that_is_all() {
    let server = FakeServer::start("127.0.0.1", Tls::Yes, "IMAP4rev1 SASL-IR AUTH=OAUTHBEARER");
    let scratch = Scratch::new();
    let mut command = imapfs_command(&scratch.config_home);
    command
        .args(["check", "--ca-file"])
        .arg(&server.ca_file)
        .args(["--oauth2-token-command", "echo bearer-7"])
        .arg(format!("imaps://{USER}@127.0.0.1:{}", server.port));
    let out = finish(command, RUN);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(server.mechanisms(), vec!["OAUTHBEARER".to_string()]);
    assert!(server.distinct_tokens().contains("bearer-7"));
}

// --- imapfs check ------------------------------------------------------------------------------

#[test]
fn check_reports_capabilities_and_counts() {
    let seed = Seed::standard();
    let dovecot = Dovecot::start(seed);
    let scratch = Scratch::new();
    let mut command = imapfs_command(&scratch.config_home);
    command
        .args(["check", "--ca-file"])
        .arg(&dovecot.ca_file)
        .arg(dovecot.url())
        .env("IMAPFS_PASSWORD", PASSWORD);
    let out = finish(command, RUN);
    assert_eq!(out.code(), 0, "{out:?}");
    let field = |name: &str| -> String {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{}", out.stdout))
            .trim()
            .to_string()
    };
    assert!(field("greeting:").starts_with("* OK"), "{}", out.stdout);
    assert!(field("capabilities:").contains("IMAP4rev1"));
    let folders = dovecot.oracle_list().len();
    assert!(
        field("folders:").starts_with(&format!("{folders} ")),
        "{}",
        out.stdout
    );
    let messages: usize = seed.folders().iter().map(|f| f.messages.len()).sum();
    assert_eq!(field("messages:"), messages.to_string());
    assert!(field("uses IDLE").starts_with("yes"));
    assert!(field("usable:") == "yes");
    assert!(!out.stdout.contains(PASSWORD) && !out.stderr.contains(PASSWORD));
}

#[test]
fn check_fails_with_the_same_line_as_mount() {
    let dovecot = Dovecot::start(&Seed::new());
    let scratch = Scratch::new();
    let refusing = common::ports::RefusingPort::new();
    let refused = format!("imaps://{USER}@127.0.0.1:{}", refusing.port);
    for (url, password, ca) in [
        (dovecot.url(), "wrong-pw-5", true),
        (refused, PASSWORD, true),
        (dovecot.url(), PASSWORD, false),
    ] {
        let mut args = Vec::new();
        if ca {
            args.push("--ca-file".to_string());
            args.push(dovecot.ca_file.display().to_string());
        }
        let mut mount = imapfs_command(&scratch.config_home);
        mount
            .arg("mount")
            .args(&args)
            .arg(&url)
            .arg(&scratch.mountpoint)
            .env("IMAPFS_PASSWORD", password);
        let (mount_code, mount_line) = scratch.expect_failure(mount);
        let mut check = imapfs_command(&scratch.config_home);
        check
            .arg("check")
            .args(&args)
            .arg(&url)
            .env("IMAPFS_PASSWORD", password);
        let out = finish(check, RUN);
        let line = single_line(&out.stderr);
        if mount_code == 75 {
            // Unreachable: the mount says why it did not start offline (docs/usage.md, exit
            // codes: check 69, mount 75); the cause is the same line.
            assert_eq!(out.code(), 69, "{out:?}");
            assert!(
                mount_line.starts_with(&format!("{line} (")),
                "mount: {mount_line:?}, check: {line:?}"
            );
        } else {
            assert_eq!(out.code(), mount_code, "{out:?}");
            assert_eq!(line, mount_line);
        }
    }
}

// --- issue 8: a busy mount and SIGTERM ---------------------------------------------------------

/// Issue 8: as root, SIGTERM on a mount that a shell had its cwd in failed to unmount
/// (EBUSY), and the daemon exited 0 leaving a dead "Transport endpoint is not connected" mount.
#[test]
fn sigterm_on_a_busy_mount_detaches_it_instead_of_leaving_it_dead() {
    let dovecot = Dovecot::start(Seed::standard());
    let mut mount = Mount::start(&dovecot, &[]).unwrap_or_else(|f| panic!("{f}"));
    let inbox = mount.join("INBOX");
    assert!(list(&inbox).len() > 1);
    // A process with its cwd inside the mount keeps it busy.
    let mut busy = Command::new("sleep")
        .arg("120")
        .current_dir(&inbox)
        .spawn()
        .unwrap();
    let out = run(&["kill", "-TERM", &mount.pid().to_string()], QUICK);
    assert!(out.status.success());
    let status = mount.wait_exit(Duration::from_secs(20));
    let _ = busy.kill();
    let _ = busy.wait();
    assert!(status.is_some(), "imapfs did not exit on SIGTERM");
    assert!(
        !mount.is_mounted(),
        "SIGTERM on a busy mount left it mounted (dead)"
    );
}

/// The unmount watchdog (docs/usage.md, Unmount): an unmount asked for by a signal that has
/// not finished `timeout` + 5 s later is forced: the mount is detached and the daemon exits
/// 70. The debug-build hook `IMAPFS_TEST_STALL_UNMOUNT` makes the unmount never begin (see
/// `stall_unmount_for_tests` in src/mount.rs); release builds ignore it, so there the test
/// has nothing to check.
#[test]
fn a_stuck_unmount_after_a_signal_is_forced_and_exits_70() {
    if !cfg!(debug_assertions) {
        eprintln!("skipped: the stall hook exists in debug builds only");
        return;
    }
    let timeout = Duration::from_secs(1);
    let grace = timeout + Duration::from_secs(5);
    let dovecot = Dovecot::start(Seed::standard());
    let mut mount = MountOptions::new(&dovecot)
        .args(&["--timeout", &timeout.as_secs().to_string()])
        .env("IMAPFS_TEST_STALL_UNMOUNT", "1")
        .start()
        .unwrap_or_else(|f| panic!("{f}"));
    assert!(list(&mount.join("INBOX")).len() > 1);
    let signalled = Instant::now();
    let out = run(&["kill", "-TERM", &mount.pid().to_string()], QUICK);
    assert!(out.status.success());
    wait_for("the unmount to stall", QUICK, || {
        mount.log().contains("the unmount stalls").then_some(())
    });
    // Nothing unmounted it: whatever detaches it from here is the watchdog.
    assert!(mount.is_mounted(), "the stalled unmount went ahead");
    let status = mount
        .wait_exit(grace + Duration::from_secs(20))
        .unwrap_or_else(|| panic!("imapfs still running {grace:?} after SIGTERM"));
    assert!(
        signalled.elapsed() >= grace,
        "forced before its grace ({:?})",
        signalled.elapsed()
    );
    assert_eq!(status.code(), Some(70), "{status:?}\n{}", mount.log());
    assert!(!mount.is_mounted(), "the forced unmount left it mounted");
    assert!(
        mount.log().contains("unmount did not finish in 6 s"),
        "{}",
        mount.log()
    );
}

// --- -o options, the helper form, mount -t fuse.imapfs, fstab ----------------------------------

#[test]
fn helper_form_with_o_options_mounts() {
    let dovecot = Dovecot::start(Seed::standard());
    let scratch = Scratch::new();
    let mut command = imapfs_command(&scratch.config_home);
    command
        .arg(dovecot.url())
        .arg(&scratch.mountpoint)
        .arg("-o")
        .arg(format!(
            "ro,noauto,user,_netdev,nofail,x-systemd.automount,ca_file={},cache_size=16M",
            dovecot.ca_file.display()
        ))
        .args([
            "-o",
            "delete=trash,subscribed,idle=no,connections=2,timeout=20",
        ])
        .env("IMAPFS_PASSWORD", PASSWORD);
    let out = finish(command, RUN);
    assert_eq!(out.code(), 0, "{out:?}");
    let guard = Unmount(scratch.mountpoint.clone());
    let mnt = scratch.mountpoint.clone();
    assert!(list(&mnt).contains("INBOX"));
    // The options act. ro: a new file is refused with EROFS.
    let new = mnt.join("INBOX/new.eml");
    let refused = wait_for("a write to be refused", QUICK, move || {
        Some(std::fs::write(&new, b"Subject: x\r\n\r\nx\r\n").expect_err("ro mount wrote"))
    });
    assert_eq!(refused.raw_os_error(), Some(libc::EROFS), "{refused}");
    // subscribed: only subscribed folders (the seed subscribes none; INBOX is always there,
    // Big exists on the server).
    let root = list(&mnt);
    assert!(root.contains("INBOX") && !root.contains("Big"), "{root:?}");
    // connections=2: eight messages read at once open at most two connections.
    let seed = Seed::standard();
    let inbox: Vec<_> = seed.folder("INBOX").messages.iter().take(8).collect();
    assert_eq!(inbox.len(), 8, "the premise: eight messages in INBOX");
    let readers: Vec<_> = inbox
        .iter()
        .map(|m| {
            let (path, want) = (mnt.join("INBOX").join(m.file_name()), m.bytes.clone());
            thread::spawn(move || {
                let got = std::fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
                assert!(got == want, "{path:?} differs");
            })
        })
        .collect();
    for r in readers {
        r.join().expect("reader");
    }
    let opened = mount_stat(&mnt, "connections_opened");
    assert!((1..=2).contains(&opened), "{opened} connections opened");
    // idle=no: no watcher. Asked last, after the reads: a watcher starts with the mount and
    // connects in about a login's time, so a check at once could pass only because it had
    // not connected yet.
    assert_eq!(mount_stat(&mnt, "watching"), 0);
    drop(guard);
}

/// `mount -t fuse.imapfs` runs mount.fuse3, which runs `imapfs SOURCE MOUNTPOINT -o OPTS`
/// through `/bin/sh -c` with no PATH (mount(8) drops it), so imapfs must be in the shell's
/// default PATH (/usr/local/sbin, /usr/local/bin, /usr/sbin, /usr/bin, /sbin, /bin). Here, in
/// a private mount namespace, a directory holding it is bound over /usr/local/sbin, so the
/// system is not touched. An fstab line's `noauto,user` (which mount(8) turns into
/// `noexec,nosuid,nodev`) and `_netdev` reach the option parser too.
#[test]
fn mount_t_fuse_imapfs_works() {
    let dovecot = Dovecot::start(Seed::standard());
    let scratch = Scratch::new();
    let bin = scratch.dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_imapfs"), bin.join("imapfs")).unwrap();
    let pw = scratch.dir.join("pw");
    std::fs::write(&pw, PASSWORD).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let options = format!(
        "noauto,user,_netdev,password_file={},ca_file={},ro",
        pw.display(),
        dovecot.ca_file.display()
    );
    let mnt = scratch.mountpoint.display().to_string();
    let script = format!(
        "set -e\n\
         mount --bind '{bin}' /usr/local/sbin\n\
         mount -t fuse.imapfs -o '{options}' '{url}' '{mnt}'\n\
         grep -F ' {mnt} ' /proc/self/mountinfo | sed 's/.* - //' | cut -d' ' -f1\n\
         ls '{mnt}'\n\
         umount '{mnt}'\n",
        bin = bin.display(),
        url = dovecot.url(),
    );
    let mut command = Command::new("unshare");
    command
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .env("XDG_CONFIG_HOME", &scratch.config_home)
        .env_remove("IMAPFS_PASSWORD");
    let out = finish(command, RUN);
    assert!(out.status.success(), "{out:?}");
    let mut lines = out.stdout.lines();
    // fuser mounts with type `fuse` (its subtype goes in as an option).
    let fstype = lines.next().unwrap_or_default();
    assert!(fstype.starts_with("fuse"), "{out:?}");
    assert!(lines.any(|l| l == "INBOX"), "{out:?}");
    assert_no_process_names(&scratch.mountpoint);
}

// --- status, man page, completions -------------------------------------------------------------

/// `user.imapfs.stats` of a mount, read with getfattr: (key, value) in the attribute's order.
fn mount_stats(mountpoint: &Path) -> Vec<(String, String)> {
    let out = run(
        &[
            "getfattr",
            "--absolute-names",
            "--only-values",
            "-n",
            "user.imapfs.stats",
            &mountpoint.to_string_lossy(),
        ],
        QUICK,
    );
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("{l:?}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// One number of [`mount_stats`].
fn mount_stat(mountpoint: &Path, key: &str) -> u64 {
    let stats = mount_stats(mountpoint);
    stats
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no number {key} in {stats:?}"))
}

#[test]
fn status_prints_the_mounts_statistics() {
    let dovecot = Dovecot::start(Seed::standard());
    // No watcher: nothing changes the counters between the reads below.
    let mount = Mount::start(&dovecot, &["--idle", "no"]).unwrap_or_else(|f| panic!("{f}"));
    assert!(list(&mount.join("INBOX")).len() > 1);
    let before = mount_stats(mount.path());
    let scratch = Scratch::new();
    let mut command = imapfs_command(&scratch.config_home);
    command.arg("status").arg(mount.path());
    let out = finish(command, RUN);
    assert_eq!(out.code(), 0, "{out:?}");
    let after = mount_stats(mount.path());
    assert_eq!(before, after, "the counters moved while status ran");
    // One row per statistic, in the attribute's order: the key, then its value.
    let rows: Vec<(String, String)> = out
        .stdout
        .lines()
        .map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [key, value] => (key.to_string(), value.to_string()),
            _ => panic!("status row {l:?}"),
        })
        .collect();
    assert_eq!(rows, before, "{}", out.stdout);
    let value = |key: &str| {
        rows.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {key} in {rows:?}"))
    };
    assert_eq!(value("watching"), "0");
    assert_eq!(value("errors"), "0");
    assert_ne!(value("round_trips"), "0", "the listing went to the server");
}

#[test]
fn status_of_a_directory_without_statistics_is_one_line() {
    let scratch = Scratch::new();
    let mut command = imapfs_command(&scratch.config_home);
    command.arg("status").arg(&scratch.dir);
    let out = finish(command, RUN);
    assert_ne!(out.code(), 0);
    assert!(
        single_line(&out.stderr).contains("no imapfs statistics"),
        "{out:?}"
    );
}

#[test]
fn man_page_names_every_long_option_and_o_option() {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/imapfs.1"))
        .expect("docs/imapfs.1");
    let text = page.replace("\\-", "-").replace("\\_", "_");
    let mut missing = BTreeSet::new();
    let mut stack = vec![imapfs::cli::Cli::command()];
    while let Some(command) = stack.pop() {
        for arg in command.get_arguments() {
            if let Some(long) = arg.get_long() {
                if !["help", "version"].contains(&long) && !text.contains(&format!("--{long}")) {
                    missing.insert(format!("--{long}"));
                }
            }
        }
        for sub in command.get_subcommands() {
            if !text.contains(sub.get_name()) {
                missing.insert(sub.get_name().to_string());
            }
            stack.push(sub.clone());
        }
    }
    for option in imapfs::config::OPTIONS {
        if !text.contains(option.name) {
            missing.insert(format!("-o {}", option.name));
        }
    }
    assert!(missing.is_empty(), "docs/imapfs.1 lacks {missing:?}");
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    let scratch = Scratch::new();
    for shell in ["bash", "zsh", "fish"] {
        let mut command = imapfs_command(&scratch.config_home);
        command.args(["completions", shell]);
        let out = finish(command, RUN);
        assert_eq!(out.code(), 0, "{out:?}");
        assert!(
            out.stdout.contains("imapfs") && out.stdout.contains("tls-fingerprint"),
            "{shell}"
        );
    }
}

// --- helpers -----------------------------------------------------------------------------------

/// A directory of its own for one test: a mount point `mnt` and a config home `config`.
/// `Drop` unmounts whatever is still mounted there and removes the files one by one.
struct Scratch {
    dir: PathBuf,
    mountpoint: PathBuf,
    config_home: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = common::unique_temp_dir("cli");
        let mountpoint = dir.join("mnt");
        std::fs::create_dir(&mountpoint).unwrap();
        Scratch {
            config_home: dir.join("config"),
            mountpoint,
            dir,
        }
    }

    /// `imapfs mount --ca-file CA URL MOUNTPOINT` with the harness password in the
    /// environment (daemon mode: the form a user types).
    fn mount_command(&self, url: &str, ca_file: &Path) -> Command {
        let mut command = imapfs_command(&self.config_home);
        command
            .args(["mount", "--ca-file"])
            .arg(ca_file)
            .arg(url)
            .arg(&self.mountpoint)
            .env("IMAPFS_PASSWORD", PASSWORD);
        command
    }

    /// The same without `--ca-file`.
    fn without_ca(&self, url: &str) -> Command {
        let mut command = imapfs_command(&self.config_home);
        command
            .arg("mount")
            .arg(url)
            .arg(&self.mountpoint)
            .env("IMAPFS_PASSWORD", PASSWORD);
        command
    }

    /// Mount `dovecot` on `mountpoint` (daemon mode), expecting failure.
    fn expect_failure_at(
        &self,
        dovecot: &Dovecot,
        mountpoint: &Path,
        extra: &[&str],
    ) -> (i32, String) {
        let mut command = imapfs_command(&self.config_home);
        command
            .args(["mount", "--ca-file"])
            .arg(&dovecot.ca_file)
            .args(extra)
            .arg(dovecot.url())
            .arg(mountpoint)
            .env("IMAPFS_PASSWORD", PASSWORD);
        self.expect_failure(command)
    }

    /// Runs `command`, which must fail: non-zero exit, one line on stderr, nothing mounted
    /// on the scratch mount point, no process left that names it.
    fn expect_failure(&self, command: Command) -> (i32, String) {
        let started = Instant::now();
        let out: Finished = finish(command, RUN);
        assert!(!out.status.success(), "it succeeded: {out:?}");
        let line = single_line(&out.stderr);
        eprintln!("imapfs said ({:?}): {line}", started.elapsed());
        assert!(line.starts_with("imapfs: "), "{line}");
        assert!(!is_mounted(&self.mountpoint), "a failed start left a mount");
        let needle = self.mountpoint.to_string_lossy().into_owned();
        wait_for("no imapfs process left", Duration::from_secs(10), || {
            processes_mentioning(&needle).is_empty().then_some(())
        });
        (out.code(), line)
    }

    /// Writes `text` as the config file (mode 0600) and returns its path.
    fn write_config(&self, text: &str) -> PathBuf {
        let dir = self.config_home.join("imapfs");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        force_unmount(&self.mountpoint);
        let _ = std::fs::remove_file(self.config_home.join("imapfs").join("config.toml"));
        let _ = std::fs::remove_dir(self.config_home.join("imapfs"));
        let _ = std::fs::remove_dir(&self.config_home);
        let _ = std::fs::remove_dir(&self.mountpoint);
        // Whatever else a test made here is small; never recursive while something may be
        // mounted below.
        if !is_mounted(&self.mountpoint) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn assert_no_process_names(path: &Path) {
    let needle = path.to_string_lossy().into_owned();
    wait_for("no imapfs process left", Duration::from_secs(10), || {
        processes_mentioning(&needle).is_empty().then_some(())
    });
}

/// Unmounts a daemon-mode mount at the end of a test (also on panic) and waits for its
/// process to go.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        force_unmount(&self.0);
        let needle = self.0.to_string_lossy().into_owned();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !processes_mentioning(&needle).is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A foreground imapfs: unmounted and reaped at the end of a test.
struct KillOnDrop<'a>(&'a mut std::process::Child, PathBuf);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        force_unmount(&self.1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn force_unmount(path: &Path) {
    if is_mounted(path) {
        let p = path.to_string_lossy().into_owned();
        let _ = common::try_run(&["fusermount3", "-u", &p], QUICK);
        if is_mounted(path) {
            let _ = common::try_run(&["umount", "-l", &p], QUICK);
        }
    }
}

/// The names in a directory, read under a deadline.
fn list(dir: &Path) -> BTreeSet<String> {
    let out = run(&["ls", "-a", &dir.to_string_lossy()], QUICK);
    assert!(
        out.status.success(),
        "ls {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| *l != "." && *l != "..")
        .map(str::to_string)
        .collect()
}

/// `secret` appears in none of the files, nor in /proc/PID/cmdline or environ. Each must be
/// readable: a missing file or a process already gone would pass for want of anything to read.
fn assert_secret_hidden(secret: &str, pid: u32, files: &[&Path]) {
    for what in ["cmdline", "environ"] {
        let bytes = std::fs::read(format!("/proc/{pid}/{what}"))
            .unwrap_or_else(|e| panic!("/proc/{pid}/{what}: {e}"));
        assert!(
            !common::contains(&bytes, secret.as_bytes()),
            "{secret} is readable in /proc/{pid}/{what}"
        );
    }
    for file in files {
        let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(
            !common::contains(&bytes, secret.as_bytes()),
            "{secret} is in {}",
            file.display()
        );
    }
}

/// `openssl x509 -fingerprint -sha256` of a PEM file, as `sha256:AB:CD:...`.
fn openssl_fingerprint(pem: &Path) -> String {
    let out = run(
        &[
            "openssl",
            "x509",
            "-noout",
            "-fingerprint",
            "-sha256",
            "-in",
            &pem.to_string_lossy(),
        ],
        QUICK,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text
        .trim()
        .split_once('=')
        .map(|(_, h)| h.to_string())
        .unwrap_or_else(|| panic!("openssl said {text}"));
    format!("sha256:{hex}")
}

/// A CA (its PEM file in `dir`) and a certificate it signed for `san` (`DNS:name`), with
/// its key: `(ca_file, cert_pem, key_pem)`.
fn ca_signed_certificate(dir: &Path, san: &str) -> (PathBuf, String, String) {
    let p = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let steps: [Vec<String>; 3] = [
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=Test CA",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.pem"),
        ]
        .map(str::to_string)
        .to_vec(),
        [
            "openssl",
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=mail",
            "-keyout",
            &p("leaf.key"),
            "-out",
            &p("leaf.csr"),
        ]
        .map(str::to_string)
        .to_vec(),
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            &p("leaf.csr"),
            "-CA",
            &p("ca.pem"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-days",
            "30",
            "-out",
            &p("leaf.pem"),
            "-extfile",
            &p("leaf.ext"),
        ]
        .map(str::to_string)
        .to_vec(),
    ];
    std::fs::write(
        dir.join("leaf.ext"),
        format!("basicConstraints=CA:FALSE\nsubjectAltName={san}\n"),
    )
    .unwrap();
    for step in &steps {
        let out = run(step, Duration::from_secs(60));
        assert!(
            out.status.success(),
            "{step:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (
        dir.join("ca.pem"),
        std::fs::read_to_string(dir.join("leaf.pem")).unwrap(),
        std::fs::read_to_string(dir.join("leaf.key")).unwrap(),
    )
}

/// The same fingerprint as imapfs prints it: lower case, no colons.
fn certificate_fingerprint(pem: &Path) -> String {
    openssl_fingerprint(pem)
        .replace(':', "")
        .replacen("sha256", "sha256:", 1)
        .to_lowercase()
}

// --- a scripted server -------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tls {
    Yes,
    No,
}

/// A minimal IMAP server: an empty INBOX, any login accepted, the bearer tokens of
/// AUTHENTICATE recorded. [`FakeServer::drop_connections`] says BYE on every open connection.
struct FakeServer {
    port: u16,
    ca_file: PathBuf,
    dir: PathBuf,
    stop: Arc<AtomicBool>,
    state: Arc<FakeState>,
}

#[derive(Default)]
struct FakeState {
    /// Bumped to make every connection opened before say BYE and close.
    generation: AtomicUsize,
    logins: AtomicUsize,
    /// (mechanism, token) of each AUTHENTICATE with a bearer token.
    tokens: Mutex<Vec<(String, String)>>,
}

type Stream = Box<dyn ReadWrite>;
trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

impl FakeServer {
    /// Serves the harness certificate (its `ca_file`).
    fn start(ip: &str, tls: Tls, capabilities: &str) -> FakeServer {
        FakeServer::start_with(ip, tls, capabilities, common::self_signed_certificate())
    }

    fn start_with(
        ip: &str,
        tls: Tls,
        capabilities: &str,
        (cert_pem, key_pem): (String, String),
    ) -> FakeServer {
        let dir = common::unique_temp_dir("fake-cli");
        let ca_file = dir.join("cert.pem");
        std::fs::write(&ca_file, &cert_pem).unwrap();
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .map(|c| c.unwrap())
                .collect();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap(),
        );
        let listener = TcpListener::bind((ip, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(FakeState::default());
        let (st, shared) = (stop.clone(), state.clone());
        let caps = capabilities.to_string();
        thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((tcp, _)) => {
                        let (config, st, shared, caps) =
                            (config.clone(), st.clone(), shared.clone(), caps.clone());
                        thread::spawn(move || {
                            tcp.set_nonblocking(false).ok();
                            tcp.set_read_timeout(Some(Duration::from_millis(100))).ok();
                            let stream: Stream = match tls {
                                Tls::Yes => Box::new(rustls::StreamOwned::new(
                                    rustls::ServerConnection::new(config).unwrap(),
                                    tcp,
                                )),
                                Tls::No => Box::new(tcp),
                            };
                            serve(stream, &caps, &st, &shared);
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FakeServer {
            port,
            ca_file,
            dir,
            stop,
            state,
        }
    }

    fn logins(&self) -> usize {
        self.state.logins.load(Ordering::SeqCst)
    }

    fn distinct_tokens(&self) -> BTreeSet<String> {
        let tokens = self.state.tokens.lock().unwrap();
        tokens.iter().map(|(_, t)| t.clone()).collect()
    }

    fn mechanisms(&self) -> Vec<String> {
        let tokens = self.state.tokens.lock().unwrap();
        tokens.iter().map(|(m, _)| m.clone()).collect()
    }

    fn drop_connections(&self) {
        self.state.generation.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::fs::remove_file(&self.ca_file);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn serve(mut stream: Stream, caps: &str, stop: &AtomicBool, state: &FakeState) {
    let born = state.generation.load(Ordering::SeqCst);
    let say = |stream: &mut Stream, s: String| {
        let _ = stream.write_all(s.as_bytes());
        let _ = stream.flush();
    };
    say(
        &mut stream,
        format!("* OK [CAPABILITY {caps}] fake ready\r\n"),
    );
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    let mut idling: Option<String> = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if state.generation.load(Ordering::SeqCst) != born {
            say(&mut stream, "* BYE dropping every connection\r\n".into());
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => return,
        }
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line).trim_end().to_string();
            if let Some(tag) = idling.take() {
                say(&mut stream, format!("{tag} OK idle done\r\n"));
                continue;
            }
            let mut words = line.splitn(3, ' ');
            let tag = words.next().unwrap_or("*").to_string();
            let verb = words.next().unwrap_or("").to_ascii_uppercase();
            let rest = words.next().unwrap_or("").to_string();
            let reply = match verb.as_str() {
                "CAPABILITY" => format!("* CAPABILITY {caps}\r\n{tag} OK done\r\n"),
                "LOGIN" => {
                    state.logins.fetch_add(1, Ordering::SeqCst);
                    format!("{tag} OK logged in\r\n")
                }
                "AUTHENTICATE" => {
                    state.logins.fetch_add(1, Ordering::SeqCst);
                    let mut parts = rest.split(' ');
                    let mechanism = parts.next().unwrap_or("").to_ascii_uppercase();
                    let ir = parts.next().unwrap_or("");
                    if let Some(token) = bearer_token(ir) {
                        state.tokens.lock().unwrap().push((mechanism, token));
                    }
                    format!("{tag} OK authenticated\r\n")
                }
                "LOGOUT" => {
                    say(&mut stream, format!("* BYE bye\r\n{tag} OK done\r\n"));
                    return;
                }
                "LIST" => format!("* LIST (\\HasNoChildren) \"/\" INBOX\r\n{tag} OK done\r\n"),
                "STATUS" => format!("* STATUS INBOX (MESSAGES 0)\r\n{tag} OK done\r\n"),
                "EXAMINE" | "SELECT" => format!(
                    "* 0 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 1] ok\r\n\
                     {tag} OK [READ-ONLY] done\r\n"
                ),
                "IDLE" => {
                    idling = Some(tag.clone());
                    "+ idling\r\n".to_string()
                }
                _ => format!("{tag} OK done\r\n"),
            };
            say(&mut stream, reply);
        }
    }
}

/// The token in a base64 XOAUTH2 or OAUTHBEARER initial response (`auth=Bearer TOKEN^A`).
fn bearer_token(initial_response: &str) -> Option<String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(initial_response)
        .ok()?;
    let text = String::from_utf8_lossy(&raw);
    let start = text.find("auth=Bearer ")? + "auth=Bearer ".len();
    let token = &text[start..];
    Some(token[..token.find('\x01')?].to_string())
}
