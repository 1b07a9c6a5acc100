//! External commands under a deadline ([`run`], [`run_command`], [`finish`] for the imapfs
//! command line), digests computed by tools that are not the code under test, temp
//! directories and process lookups.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::contains;
use super::wait::wait_child;

/// Runs `cmd` (program and arguments) with stdin closed and a deadline; panics if it does not
/// finish in time (the process is killed first). Exit status is for the caller to judge.
/// One extended attribute's raw value read with getfattr(1) (the real tool, under a 30 s
/// deadline), or getfattr's error text (e.g. "No such attribute").
pub fn getfattr_bytes(path: &std::path::Path, name: &str) -> Result<Vec<u8>, String> {
    let out = run(
        &[
            "getfattr",
            "--absolute-names",
            "--only-values",
            "-n",
            name,
            &path.to_string_lossy(),
        ],
        Duration::from_secs(30),
    );
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// [`getfattr_bytes`] as text.
pub fn getfattr(path: &std::path::Path, name: &str) -> Result<String, String> {
    getfattr_bytes(path, name).map(|v| String::from_utf8_lossy(&v).into_owned())
}

pub fn run<S: AsRef<OsStr>>(cmd: &[S], timeout: Duration) -> Output {
    try_run(cmd, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`run`], but a timeout is an `Err` describing the command.
pub fn try_run<S: AsRef<OsStr>>(cmd: &[S], timeout: Duration) -> Result<Output, String> {
    let mut command = Command::new(&cmd[0]);
    command.args(&cmd[1..]);
    run_command(command, None, timeout)
}

/// Spawns `command` with piped output, feeds `stdin`, and waits at most `timeout`.
pub fn run_command(
    mut command: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output, String> {
    let description = format!("{command:?}");
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run {description}: {e}"))?;
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        let input = input.to_vec();
        thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    match wait_child(&mut child, timeout) {
        Some(status) => Ok(Output {
            status,
            stdout: stdout.recv().unwrap_or_default(),
            stderr: stderr.recv().unwrap_or_default(),
        }),
        None => {
            let _ = child.kill();
            let _ = wait_child(&mut child, Duration::from_secs(5));
            let err = stderr
                .recv_timeout(Duration::from_secs(1))
                .unwrap_or_default();
            Err(format!(
                "timed out after {timeout:?}: {description}\nstderr: {}",
                String::from_utf8_lossy(&err)
            ))
        }
    }
}

/// SHA-256 of `data`, lower-case hex (computed by `sha256sum`, not by code under test).
pub fn sha256_hex(data: &[u8]) -> String {
    let output = run_command(
        Command::new("sha256sum"),
        Some(data),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(output.status.success(), "sha256sum failed");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}

/// SHA-256 of each item, in one `python3` run.
pub fn sha256_hex_many(items: &[&[u8]]) -> Vec<String> {
    let mut input = Vec::new();
    for item in items {
        input.extend_from_slice(format!("{}\n", item.len()).as_bytes());
        input.extend_from_slice(item);
    }
    let script = "import sys, hashlib\n\
                  data = sys.stdin.buffer\n\
                  while True:\n\
                  \x20   line = data.readline()\n\
                  \x20   if not line: break\n\
                  \x20   print(hashlib.sha256(data.read(int(line))).hexdigest())\n";
    let mut command = Command::new("python3");
    command.args(["-c", script]);
    let output = run_command(command, Some(&input), Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Parses `sha256sum` output (`<hex>  <path>` lines) into path -> hex.
pub fn parse_sha256sum(stdout: &[u8]) -> BTreeMap<PathBuf, String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|line| line.split_once("  "))
        .map(|(hex, path)| (PathBuf::from(path), hex.to_string()))
        .collect()
}

/// A new empty directory under the system temp dir, named for this process and `kind`.
pub fn unique_temp_dir(kind: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let base = fs::canonicalize(std::env::temp_dir()).expect("temp dir");
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let dir = base.join(format!(
            "imapfs-test-{kind}-{}-{n}-{nanos:x}",
            std::process::id()
        ));
        match fs::create_dir(&dir) {
            Ok(()) => return dir,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("create {}: {e}", dir.display()),
        }
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `imapfs` with a clean environment: no password, log level or certificate variables from
/// the caller, and `config_home` as `XDG_CONFIG_HOME` (it need not exist), so that the
/// user's own config file is never read.
pub fn imapfs_command(config_home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_imapfs"));
    command
        .env_remove("IMAPFS_PASSWORD")
        .env_remove("RUST_LOG")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .env("XDG_CONFIG_HOME", config_home);
    command
}

/// What a finished command said.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// The exit code (panics if a signal ended the process).
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal: {self:?}"))
    }
}

/// Runs `command` with stdin closed and a deadline (panics when it passes).
pub fn finish(command: Command, timeout: Duration) -> Finished {
    let output = run_command(command, None, timeout).unwrap_or_else(|e| panic!("{e}"));
    Finished {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The one non-empty line of `text`; panics if there are none or several.
pub fn single_line(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{text}");
    lines[0].to_string()
}

/// The ids of the processes whose command line contains `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline")) {
            if contains(&cmdline, needle.as_bytes()) {
                found.push(pid);
            }
        }
    }
    found
}

/// Runs `cmd` with a one-minute deadline and requires it to succeed (its stderr in the panic).
pub fn run_ok(cmd: &[&str]) -> Output {
    let out = run(cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn drain(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// The peak resident memory (VmHWM) of process `pid` in kB; 0 if it cannot be read.
pub fn vm_hwm_kb(pid: u32) -> u64 {
    proc_status_kb(pid, "VmHWM:")
}

/// The resident memory now (VmRSS) of process `pid` in kB; 0 if it cannot be read.
pub fn vm_rss_kb(pid: u32) -> u64 {
    proc_status_kb(pid, "VmRSS:")
}

/// A `kB` field of `/proc/PID/status`; 0 if it cannot be read.
fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
