//! New messages (issue 13 items 7, 8 and 12): drafts are sent only by a writer's close and
//! replaced when more bytes follow; a cut APPEND or COPY is proved by more than a
//! Message-ID; a header of any length is checked whole. See main.rs.

use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use crate::common::proxy::CuttingProxy;
use crate::common::{
    run, run_ok, try_run, unique_temp_dir, wait_for, within, Dovecot, Mount, MountOptions, Seed,
};

const QUICK: Duration = Duration::from_secs(30);

/// A temporary directory removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(kind: &str) -> TempDir {
        TempDir(unique_temp_dir(kind))
    }
    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A child process killed and reaped when the test ends, whatever way it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mount(dovecot: &Dovecot) -> Mount {
    Mount::start(dovecot, &[]).unwrap_or_else(|f| panic!("{f}"))
}

fn mount_through(dovecot: &Dovecot, proxy: &CuttingProxy) -> Mount {
    MountOptions::new(dovecot)
        .url(format!("imap://{}@127.0.0.1:{}", dovecot.user, proxy.port))
        .args(&["--insecure"])
        .start()
        .unwrap_or_else(|f| panic!("{f}"))
}

fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// How many messages of `folder` hold exactly `bytes`.
fn copies(dovecot: &Dovecot, folder: &str, bytes: &[u8]) -> usize {
    dovecot
        .oracle_fetch_all(folder)
        .values()
        .filter(|b| b.as_slice() == bytes)
        .count()
}

// --- item 8: drafts ---------------------------------------------------------------------------

#[test]
fn item_8_a_readers_cat_of_a_file_being_written_appends_nothing() {
    let dovecot = Dovecot::start(Seed::standard());
    let mount = mount(&dovecot);
    let before = dovecot.oracle_meta("Archive").len();
    let first = b"Subject: written in two halves\r\nMessage-ID: <halves.1@imapfs.test>\r\n\r\n";
    let second = b"the second half, written after a reader came and went\r\n";
    let path = mount.join("Archive/halves.eml");
    let mut writer = fs::File::create(&path).unwrap();
    writer.write_all(first).unwrap();
    // Another process reads the file being written and closes it.
    let out = run_ok(&["cat", &p(&path)]);
    assert_eq!(out.stdout, first);
    let out = run_ok(&["wc", "-c", &p(&path)]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&first.len().to_string()));
    assert_eq!(
        dovecot.oracle_meta("Archive").len(),
        before,
        "a reader's close sent the half-written message"
    );
    writer
        .write_all(second)
        .expect("writing on after a reader closed the file");
    drop(writer);
    let full = [&first[..], &second[..]].concat();
    assert_eq!(copies(&dovecot, "Archive", &full), 1);
    assert_eq!(dovecot.oracle_meta("Archive").len(), before + 1);
}

#[test]
fn item_8_a_second_writer_closing_early_is_replaced_by_the_full_message() {
    let dovecot = Dovecot::start(Seed::standard());
    let mount = mount(&dovecot);
    let before = dovecot.oracle_meta("Archive").len();
    let first = b"Subject: two writers\r\nMessage-ID: <writers.1@imapfs.test>\r\n\r\nfirst\r\n";
    let second = b"second\r\n";
    let path = mount.join("Archive/writers.eml");
    let mut writer = fs::File::create(&path).unwrap();
    writer.write_all(first).unwrap();
    // Another process opens it read-write and closes it: a writer's close, so the first
    // half is sent (FUSE cannot tell it is not the last close)...
    run_ok(&["sh", "-c", &format!("exec 3<>'{}'; exec 3>&-", p(&path))]);
    // ...and replaced once the first writer writes on and closes.
    writer.write_all(second).unwrap();
    writer.sync_all().expect("the full message is stored");
    drop(writer);
    let full = [&first[..], &second[..]].concat();
    let archive = dovecot.oracle_fetch_all("Archive");
    assert_eq!(archive.len(), before + 1, "a partial version stayed");
    assert_eq!(copies(&dovecot, "Archive", &full), 1);
}

#[test]
fn item_8_a_killed_writer_leaves_no_partial_message() {
    let dovecot = Dovecot::start(Seed::standard());
    let mount = mount(&dovecot);
    let before = dovecot.oracle_meta("Archive").len();
    let path = mount.join("Archive/killed.eml");
    let script = format!(
        "import sys, time\nf = open({:?}, 'wb')\nf.write(b'Subject: killed\\r\\n\\r\\nhalf')\n\
         f.flush()\nprint('written', flush=True)\ntime.sleep(120)\n",
        p(&path)
    );
    let mut child = Child(
        Command::new("python3")
            .args(["-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdout = child.0.stdout.take().unwrap();
    let mut line = [0u8; 8];
    std::io::Read::read_exact(&mut stdout, &mut line).unwrap();
    assert_eq!(&line, b"written\n");
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    // The draft is gone once the kernel released it; nothing reached the server.
    wait_for("the killed writer's draft to go", QUICK, || {
        (!path.exists()).then_some(())
    });
    assert_eq!(dovecot.oracle_meta("Archive").len(), before);
    assert!(mount.log().contains("was killed"), "{}", mount.log());
}

/// An earlier drafts rewrite (branch h-append) left a reader's `cat` of a file being written
/// hung in D state. Readers open the file through /proc/PID/fd (its name goes at the first
/// send) again and again while the writer writes, fsyncs (a send) and writes on (a
/// replacement); every `cat` must end within a deadline and see a prefix of the message.
#[test]
fn item_8_a_readers_cat_while_the_file_is_written_sent_and_replaced_completes() {
    let dovecot = Dovecot::start(Seed::standard());
    let mount = mount(&dovecot);
    let before = dovecot.oracle_meta("Archive").len();
    let head = b"Subject: read while written\r\nMessage-ID: <concurrent.8@imapfs.test>\r\n\r\n";
    let chunks: Vec<Vec<u8>> = (0..120)
        .map(|i| format!("line {i:04} {}\r\n", "x".repeat(200)).into_bytes())
        .collect();
    let full: Vec<u8> = chunks.iter().fold(head.to_vec(), |mut a, c| {
        a.extend_from_slice(c);
        a
    });
    let mut writer = fs::File::create(mount.join("Archive/concurrent.eml")).unwrap();
    writer.write_all(head).unwrap();
    let fd_path = format!("/proc/{}/fd/{}", std::process::id(), writer.as_raw_fd());
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let (tx, readers) = mpsc::channel();
    {
        let (done, reads, full) = (done.clone(), reads.clone(), full.clone());
        std::thread::spawn(move || {
            let r = (|| {
                while !done.load(Ordering::SeqCst) {
                    let out = try_run(&["cat", &fd_path], QUICK)?;
                    if out.status.success() && !full.starts_with(&out.stdout) {
                        return Err(format!("a reader saw {} bytes", out.stdout.len()));
                    }
                    reads.fetch_add(1, Ordering::SeqCst);
                }
                Ok(())
            })();
            let _ = tx.send(r);
        });
    }
    let writing = within("the writer", Duration::from_secs(120), move || {
        for (i, chunk) in chunks.iter().enumerate() {
            writer.write_all(chunk)?;
            if i % 20 == 19 {
                // A send (or a replacement), then wait until a reader came and went.
                writer.sync_all()?;
                let seen = reads.load(Ordering::SeqCst);
                wait_for("a reader's cat", QUICK, || {
                    (reads.load(Ordering::SeqCst) > seen).then_some(())
                });
            }
        }
        writer.sync_all()?;
        drop(writer);
        std::io::Result::Ok(())
    });
    done.store(true, Ordering::SeqCst);
    let read = readers
        .recv_timeout(QUICK)
        .expect("a reader's cat hung (no result within the deadline)");
    writing.expect("writing the file");
    read.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(copies(&dovecot, "Archive", &full), 1);
    assert_eq!(
        dovecot.oracle_meta("Archive").len(),
        before + 1,
        "a partial version stayed"
    );
}

#[test]
fn item_8_a_writer_killed_after_an_fsync_leaves_no_partial_message() {
    let dovecot = Dovecot::start(Seed::standard());
    let mount = mount(&dovecot);
    let before = dovecot.oracle_meta("Archive").len();
    let path = mount.join("Archive/synced-then-killed.eml");
    // The fsync stores the first half; the rest never gets a close.
    let script = format!(
        "import os, time\nf = open({:?}, 'wb')\nf.write(b'Subject: synced, then killed\\r\\n\\r\\nhalf')\n\
         f.flush()\nos.fsync(f.fileno())\nf.write(b' and more')\nf.flush()\n\
         print('written', flush=True)\ntime.sleep(120)\n",
        p(&path)
    );
    let mut child = Child(
        Command::new("python3")
            .args(["-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdout = child.0.stdout.take().unwrap();
    let mut line = [0u8; 8];
    std::io::Read::read_exact(&mut stdout, &mut line).unwrap();
    assert_eq!(&line, b"written\n");
    assert_eq!(
        dovecot.oracle_meta("Archive").len(),
        before + 1,
        "the fsync stored the first half"
    );
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    // The last release withdraws the partial version.
    wait_for("the partial version to be expunged", QUICK, || {
        (dovecot.oracle_meta("Archive").len() == before).then_some(())
    });
    assert!(mount.log().contains("was killed"), "{}", mount.log());
}

#[test]
fn item_8_a_file_a_parent_opened_and_closed_and_a_child_wrote_is_stored() {
    // subprocess.Popen(stdout=f); f.close(): the child's copy of the descriptor is the
    // only writer left, and its close (at exit) is the last one.
    let dovecot = Dovecot::start(Seed::standard());
    let mount = mount(&dovecot);
    let before = dovecot.oracle_meta("Archive").len();
    let msg: &[u8] =
        b"Subject: written by a child\r\nMessage-ID: <child.8@imapfs.test>\r\n\r\nbody\r\n";
    let script = format!(
        "import subprocess, sys\nf = open({:?}, 'wb')\n\
         c = subprocess.Popen(['cat'], stdin=subprocess.PIPE, stdout=f)\nf.close()\n\
         c.communicate(sys.stdin.buffer.read())\nsys.exit(c.returncode)\n",
        p(&mount.join("Archive/child.eml"))
    );
    let mut cmd = Command::new("python3");
    cmd.args(["-c", &script]);
    let out = crate::common::run_command(cmd, Some(msg), QUICK).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // cat's exit closed the file; its FLUSH has been answered once the process is gone.
    assert_eq!(copies(&dovecot, "Archive", msg), 1);
    assert_eq!(dovecot.oracle_meta("Archive").len(), before + 1);
}

/// Dovecot refusing messages over 4 KiB (quota plugin's `quota_max_mail_size`).
const SMALL_MAIL_ONLY: &str = "mail_plugins = $mail_plugins quota\n\
    protocol imap {\n  mail_plugins = $mail_plugins imap_quota\n}\n\
    plugin {\n  quota = maildir:User quota\n  quota_rule = *:storage=20M\n  \
    quota_max_mail_size = 4k\n}\n";

#[test]
fn item_8_cp_and_mv_of_a_message_the_server_refuses_fail_and_leave_nothing() {
    let dovecot = Dovecot::start_with(Seed::standard(), SMALL_MAIL_ONLY);
    let mount = mount(&dovecot);
    let before = dovecot.oracle_meta("Archive").len();
    let dir = TempDir::new("refused");
    let src = dir.join("big.eml");
    let mut body = b"Subject: too big\r\nMessage-ID: <big.refused@imapfs.test>\r\n\r\n".to_vec();
    body.extend(std::iter::repeat_n(b'x', 20_000));
    body.extend_from_slice(b"\r\n");
    fs::write(&src, &body).unwrap();
    let out = run(&["cp", &p(&src), &p(&mount.join("Archive/"))], QUICK);
    assert!(!out.status.success(), "cp of a refused message succeeded");
    let out = run(&["mv", &p(&src), &p(&mount.join("Archive/"))], QUICK);
    assert!(!out.status.success(), "mv of a refused message succeeded");
    assert!(
        src.exists(),
        "mv removed the source of a message never stored"
    );
    assert_eq!(dovecot.oracle_meta("Archive").len(), before);
    let listed = run_ok(&["ls", &p(&mount.join("Archive"))]);
    assert!(!String::from_utf8_lossy(&listed.stdout).contains("big.eml"));
}

// --- item 7: proof of a cut APPEND or COPY ----------------------------------------------------

const OLDER: &[u8] = b"Subject: same id\r\nMessage-ID: <same.7@imapfs.test>\r\n\r\nsame bytes\r\n";

#[test]
fn item_7_an_append_cut_before_the_server_got_it_is_not_proved_by_an_older_copy() {
    let dovecot = Dovecot::start(Seed::standard());
    // The target already holds a message with the same Message-ID, byte for byte.
    dovecot.oracle_append("Archive", OLDER);
    let proxy = CuttingProxy::start_before_server(dovecot.imap_port, b"APPEND");
    let mount = mount_through(&dovecot, &proxy);
    run_ok(&["ls", &p(&mount.join("Archive"))]);
    fs::write(mount.join("Archive/again.eml"), OLDER).expect("stored after the cut");
    assert_eq!(proxy.cuts(), 1, "the proxy never cut the APPEND");
    assert_eq!(
        copies(&dovecot, "Archive", OLDER),
        2,
        "close() succeeded, but the server holds only the older copy"
    );
}

#[test]
fn item_7_an_append_cut_after_the_server_answered_is_stored_once_beside_an_older_copy() {
    let dovecot = Dovecot::start(Seed::standard());
    dovecot.oracle_append("Archive", OLDER);
    let proxy = CuttingProxy::start(dovecot.imap_port, b"APPEND");
    let mount = mount_through(&dovecot, &proxy);
    run_ok(&["ls", &p(&mount.join("Archive"))]);
    fs::write(mount.join("Archive/again.eml"), OLDER).expect("stored after the cut");
    assert_eq!(proxy.cuts(), 1, "the proxy never cut the APPEND");
    assert_eq!(copies(&dovecot, "Archive", OLDER), 2);
}

#[test]
fn item_7_a_cut_copy_with_an_older_same_message_id_in_the_target_keeps_the_source() {
    // No MOVE: the mount moves with UID COPY, then removes the source.
    let dovecot = Dovecot::start_with(
        Seed::standard(),
        "imap_capability = IMAP4rev1 LITERAL+ UIDPLUS CONDSTORE IDLE",
    );
    let source = dovecot.oracle_fetch("INBOX", 9);
    // An older message in the target with the source's Message-ID, other bytes.
    let id = String::from_utf8_lossy(&source)
        .lines()
        .find_map(|l| {
            l.strip_prefix("Message-ID:")
                .or_else(|| l.strip_prefix("Message-Id:"))
                .map(|v| v.trim().to_string())
        })
        .expect("seed message 9 has a Message-ID");
    let older = format!("Subject: an older one\r\nMessage-ID: {id}\r\n\r\nother bytes\r\n");
    dovecot.oracle_append("Archive", older.as_bytes());
    let proxy = CuttingProxy::start_before_server(dovecot.imap_port, b"UID COPY");
    let mount = mount_through(&dovecot, &proxy);
    run_ok(&["ls", &p(&mount.join("Archive"))]);
    let _ = run(
        &[
            "mv",
            &p(&mount.join("INBOX/9.eml")),
            &p(&mount.join("Archive/")),
        ],
        QUICK,
    );
    // The listing waits for the queued move.
    run_ok(&["ls", &p(&mount.join("Archive"))]);
    assert_eq!(proxy.cuts(), 1, "the proxy never cut the COPY");
    let in_inbox = dovecot.oracle_meta("INBOX").contains_key(&9);
    let in_archive = copies(&dovecot, "Archive", &source);
    assert!(
        in_inbox || in_archive > 0,
        "the source was expunged but never copied"
    );
    // The COPY never ran, so nothing proved it: it was sent again, and moved once.
    assert_eq!((in_inbox, in_archive), (false, 1));
    assert_eq!(copies(&dovecot, "Archive", older.as_bytes()), 1);
}

// --- item 12: long headers --------------------------------------------------------------------

#[test]
fn item_12_a_200_kib_header_is_stored_byte_exact() {
    let dovecot = Dovecot::start(Seed::standard());
    let mount = mount(&dovecot);
    let mut msg = Vec::new();
    let mut i = 0;
    while msg.len() < 200 << 10 {
        msg.extend_from_slice(
            format!(
                "Received: from relay{i}.example.org (relay{i}.example.org [192.0.2.{}])\r\n\
                 \tby mx.example.org with ESMTPS id {i:08x}; Mon, 1 Jan 2024 00:00:00 +0000\r\n",
                i % 250
            )
            .as_bytes(),
        );
        i += 1;
    }
    msg.extend_from_slice(
        b"Subject: long header\r\nMessage-ID: <long.12@imapfs.test>\r\n\r\nbody\r\n",
    );
    let dir = TempDir::new("long-header");
    let src = dir.join("long.eml");
    fs::write(&src, &msg).unwrap();
    run_ok(&["cp", &p(&src), &p(&mount.join("Archive/"))]);
    assert_eq!(copies(&dovecot, "Archive", &msg), 1);
}
