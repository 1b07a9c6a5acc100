//! Faults for tests/resilience.rs: `doveadm kick` (BYE on every session), SIGSTOP of every
//! server process (SIGCONT when the [`Paused`] guard drops, panics included), and a kill and
//! restart on the same ports and maildir.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{contains, run, Dovecot};

/// The server's processes stopped with SIGSTOP; dropping this sends SIGCONT (also when the
/// test panics), see [`Dovecot::pause`].
pub struct Paused {
    pids: Vec<u32>,
}

impl Paused {
    /// Sends SIGCONT now (instead of at drop).
    pub fn resume(self) {}
}

impl Drop for Paused {
    fn drop(&mut self) {
        for &pid in &self.pids {
            signal(pid, libc::SIGCONT);
        }
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid of a process this test started; no memory is involved.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

impl Dovecot {
    /// Every process of this instance: the master and what it started.
    pub fn processes(&self) -> Vec<u32> {
        let mut pids = vec![self.child.id()];
        pids.extend(
            descendants(self.child.id())
                .into_iter()
                .filter(|&p| is_dovecot_process(p)),
        );
        pids
    }

    /// The `imap` processes that serve logged-in sessions (not `imap-login`).
    pub fn imap_processes(&self) -> Vec<u32> {
        self.processes()
            .into_iter()
            .filter(|pid| {
                let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let first = cmdline
                    .split(|&b| b == 0 || b == b' ')
                    .next()
                    .unwrap_or(&[]);
                first.ends_with(b"/imap")
            })
            .collect()
    }

    /// `doveadm kick USER`: the server says BYE on every session of the test user and closes
    /// it. Panics if doveadm fails.
    pub fn kick(&self) {
        let conf = self.conf.to_string_lossy().into_owned();
        let out = run(
            &["doveadm", "-c", &conf, "kick", &self.user],
            Duration::from_secs(20),
        );
        assert!(
            out.status.success(),
            "doveadm kick: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// SIGSTOP every process of the instance: connections stay open (the kernel even accepts
    /// new ones) but nothing answers, until the returned guard is dropped.
    pub fn pause(&self) -> Paused {
        let pids = self.processes();
        for &pid in &pids {
            signal(pid, libc::SIGSTOP);
        }
        Paused { pids }
    }

    /// Kills the whole instance, as [`Drop`] does, but keeps its directory: the ports refuse
    /// connections until [`Dovecot::start_again`].
    pub fn kill_server(&mut self) {
        self.stop();
        // A process killed while it held a maildir's dotlock (dovecot-uidlist.lock) leaves the
        // lock behind, and the restarted server would wait minutes for it to turn stale. Every
        // process of this instance is gone, so no lock is held: remove them.
        remove_lock_files(&self.mail_dir);
    }

    /// Starts the instance again after [`Dovecot::kill_server`]: same config, ports, certificate
    /// and maildir (so the same UIDVALIDITY and UIDs). Panics if it does not come up.
    pub fn start_again(&mut self) {
        let stderr = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.dir.join("dovecot.stderr"))
            .expect("open stderr file");
        self.child = Command::new("dovecot")
            .arg("-F")
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().expect("clone file"))
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run dovecot: {e}"));
        if let Err(why) = self.wait_ready() {
            panic!("dovecot did not start again: {why}\n{}", self.logs());
        }
    }
}

/// Every process whose parent chain leads to `root`, found through each process's
/// `/proc/PID/task/TID/children` so that only the server's own processes are read: scanning
/// every `/proc/*/stat` blocks (for a minute and more, seen here) on an unrelated process
/// whose memory lock is held, e.g. one waiting in a page fault on another test's FUSE mount.
pub(super) fn descendants(root: u32) -> Vec<u32> {
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        if let Ok(tasks) = fs::read_dir(format!("/proc/{parent}/task")) {
            for task in tasks.flatten() {
                if let Ok(children) = fs::read_to_string(task.path().join("children")) {
                    for child in children
                        .split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok())
                    {
                        if !found.contains(&child) {
                            found.push(child);
                        }
                    }
                }
            }
        }
        i += 1;
    }
    found.remove(0);
    found
}

pub(super) fn is_dovecot_process(pid: u32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| contains(&cmdline, b"dovecot"))
        .unwrap_or(false)
}

/// Removes `*.lock` files below `dir` (dotlocks of a server that was killed).
pub(super) fn remove_lock_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => remove_lock_files(&path),
            Ok(_) if path.extension().is_some_and(|e| e == "lock") => {
                let _ = fs::remove_file(&path);
            }
            _ => {}
        }
    }
}
