//! A real `imapfs mount -f` on a fresh mountpoint, waited for until the kernel lists it;
//! `Drop` unmounts, reaps the process and removes the files one by one (never recursively, so a
//! mount still present cannot lose mail). [`MountOptions`] varies URL, password, CA file, log
//! level and cache directory to provoke start-up failures.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::wait::{wait_child, POLL};
use super::{tail, try_run, unique_temp_dir, Dovecot};

/// The `XDG_CACHE_HOME` a mount gets unless the test names one (under the mount's directory).
const OWN_CACHE: &str = "xdg-cache";
const MOUNT_TIMEOUT: Duration = Duration::from_secs(15);

/// A running `imapfs mount -f`; see the module documentation.
pub struct Mount {
    child: Child,
    dir: PathBuf,
    mountpoint: PathBuf,
    log: PathBuf,
    finished: bool,
}

/// Why [`MountOptions::start`] returned without a mount.
#[derive(Debug)]
pub struct MountFailure {
    /// The exit status, or `None` if imapfs neither mounted nor exited within the deadline
    /// (it was killed).
    pub status: Option<ExitStatus>,
    /// Everything imapfs wrote to stderr.
    pub stderr: String,
    /// Whether the mountpoint was still mounted after imapfs exited (it must not be).
    pub left_mounted: bool,
    /// Time from spawn to exit.
    pub elapsed: Duration,
}

impl fmt::Display for MountFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) => write!(f, "imapfs exited with {status} after {:?}", self.elapsed)?,
            None => write!(f, "imapfs neither mounted nor exited in {:?}", self.elapsed)?,
        }
        write!(f, "; stderr:\n{}", self.stderr)
    }
}

/// How to run `imapfs mount`: defaults are the server's URL, its password in
/// `IMAPFS_PASSWORD`, `--ca-file` with its certificate, and `RUST_LOG=debug`.
pub struct MountOptions<'a> {
    /// The server's certificate, URL and password (from a Dovecot, or given).
    ca_path: PathBuf,
    default_url: String,
    default_password: String,
    _dovecot: std::marker::PhantomData<&'a Dovecot>,
    extra_args: Vec<String>,
    url: Option<String>,
    password: Option<Option<String>>,
    ca_file: bool,
    rust_log: Option<String>,
    cache_home: Option<PathBuf>,
    binary: Option<PathBuf>,
    envs: Vec<(String, String)>,
}

impl<'a> MountOptions<'a> {
    pub fn new(dovecot: &'a Dovecot) -> MountOptions<'a> {
        MountOptions::custom(dovecot.url(), dovecot.ca_file.clone(), &dovecot.password)
    }

    /// Options for a server that is not a harness Dovecot (e.g. a scripted fake server).
    pub fn custom(url: String, ca_file: PathBuf, password: &str) -> MountOptions<'a> {
        MountOptions {
            ca_path: ca_file,
            default_url: url,
            default_password: password.to_string(),
            _dovecot: std::marker::PhantomData,
            extra_args: Vec::new(),
            url: None,
            password: None,
            ca_file: true,
            rust_log: Some("debug,imapfs::imap::session=trace".to_string()),
            cache_home: None,
            binary: None,
            envs: Vec::new(),
        }
    }

    /// `XDG_CACHE_HOME` for imapfs (where it keeps indexes between mounts); the caller owns
    /// the directory. By default each mount gets a fresh one of its own, removed with it, so
    /// no test reads or writes the user's real cache.
    pub fn cache_home(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_home = Some(dir.into());
        self
    }

    /// Runs another imapfs binary than this build's (a benchmark's "before" figures).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Arguments placed after `--ca-file` and before the URL.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.extra_args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Replaces the account URL (e.g. a port nobody listens on).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// Replaces the password; `None` leaves `IMAPFS_PASSWORD` unset.
    pub fn password(mut self, password: Option<&str>) -> Self {
        self.password = Some(password.map(str::to_string));
        self
    }

    /// Omits `--ca-file`, so the self-signed certificate does not verify.
    pub fn without_ca_file(mut self) -> Self {
        self.ca_file = false;
        self
    }

    /// Runs without `RUST_LOG`, so stderr holds only what imapfs prints for the user.
    pub fn quiet(mut self) -> Self {
        self.rust_log = None;
        self
    }

    /// Sets an environment variable for imapfs.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_string(), value.to_string()));
        self
    }

    /// Runs with `RUST_LOG=level` instead of `debug`.
    pub fn rust_log(mut self, level: &str) -> Self {
        self.rust_log = Some(level.to_string());
        self
    }

    /// Spawns imapfs and waits until the mountpoint is mounted or imapfs exits.
    pub fn start(self) -> Result<Mount, MountFailure> {
        let dir = unique_temp_dir("mount");
        let mountpoint = dir.join("mnt");
        fs::create_dir(&mountpoint).expect("create mountpoint");
        let log = dir.join("imapfs.log");

        let mut command = Command::new(
            self.binary
                .clone()
                .unwrap_or_else(|| env!("CARGO_BIN_EXE_imapfs").into()),
        );
        command.arg("mount").arg("-f");
        if self.ca_file {
            command.arg("--ca-file").arg(&self.ca_path);
        }
        command
            .args(&self.extra_args)
            .arg(self.url.unwrap_or(self.default_url))
            .arg(&mountpoint)
            .env_remove("IMAPFS_PASSWORD")
            .env_remove("RUST_LOG")
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR")
            .env(
                "XDG_CACHE_HOME",
                self.cache_home
                    .clone()
                    .unwrap_or_else(|| dir.join(OWN_CACHE)),
            )
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("imapfs.stdout")).expect("stdout file"))
            .stderr(fs::File::create(&log).expect("log file"));
        match self.password {
            None => {
                command.env("IMAPFS_PASSWORD", &self.default_password);
            }
            Some(Some(password)) => {
                command.env("IMAPFS_PASSWORD", password);
            }
            Some(None) => {}
        }
        if let Some(level) = &self.rust_log {
            command.env("RUST_LOG", level);
        }
        command.envs(self.envs.iter().map(|(k, v)| (k, v)));

        let started = Instant::now();
        let child = command.spawn().expect("spawn imapfs");
        let mut mount = Mount {
            child,
            dir,
            mountpoint,
            log,
            finished: false,
        };
        let deadline = started + MOUNT_TIMEOUT;
        loop {
            if let Ok(Some(status)) = mount.child.try_wait() {
                return Err(mount.failed(Some(status), started.elapsed()));
            }
            if is_mounted(&mount.mountpoint) {
                return Ok(mount);
            }
            if Instant::now() >= deadline {
                let _ = mount.child.kill();
                let _ = mount.child.wait();
                return Err(mount.failed(None, started.elapsed()));
            }
            thread::sleep(POLL);
        }
    }
}

impl Mount {
    /// `imapfs mount -f --ca-file CERT [extra_args] URL MOUNTPOINT` against `dovecot`.
    pub fn start(dovecot: &Dovecot, extra_args: &[&str]) -> Result<Mount, MountFailure> {
        MountOptions::new(dovecot).args(extra_args).start()
    }

    /// The mount point (an absolute path without symlinks).
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// `path()` joined with a path relative to the mount root.
    pub fn join(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.mountpoint.join(relative)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// imapfs's stderr (with `RUST_LOG=debug` unless [`MountOptions::quiet`]).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Unmounts with `fusermount3 -u` and waits for imapfs to exit; returns its exit status.
    /// Panics if it does not exit within the deadline (it is killed then).
    pub fn unmount(mut self) -> ExitStatus {
        let status = self.shutdown();
        status.unwrap_or_else(|| {
            panic!(
                "imapfs did not exit after unmount\n{}",
                tail(&self.log(), 60)
            )
        })
    }

    /// Waits for imapfs to exit by itself (after a signal, say); `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, timeout)
    }

    /// One `key=value` line of the mount's `user.imapfs.stats` (docs/usage.md), if it has
    /// that key (`None` also when getfattr fails or hangs past its deadline).
    pub fn stat(&self, key: &str) -> Option<String> {
        let root = self.mountpoint.to_string_lossy().into_owned();
        let out = try_run(
            &[
                "getfattr",
                "--only-values",
                "-n",
                "user.imapfs.stats",
                &root,
            ],
            Duration::from_secs(20),
        )
        .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('=').map(str::to_string))
    }

    /// Whether the kernel still lists the mount.
    pub fn is_mounted(&self) -> bool {
        is_mounted(&self.mountpoint)
    }

    fn failed(mut self, status: Option<ExitStatus>, elapsed: Duration) -> MountFailure {
        self.finished = true;
        let left_mounted = is_mounted(&self.mountpoint);
        if left_mounted {
            force_unmount(&self.mountpoint);
        }
        let failure = MountFailure {
            status,
            stderr: self.log(),
            left_mounted,
            elapsed,
        };
        self.remove_files();
        failure
    }

    /// Unmounts, reaps the process, removes the files; `None` if imapfs had to be killed.
    fn shutdown(&mut self) -> Option<ExitStatus> {
        if self.finished {
            return None;
        }
        self.finished = true;
        if is_mounted(&self.mountpoint) {
            let mp = self.mountpoint.to_string_lossy().into_owned();
            let _ = try_run(&["fusermount3", "-u", &mp], Duration::from_secs(10));
            if is_mounted(&self.mountpoint) {
                let _ = try_run(&["umount", "-l", &mp], Duration::from_secs(10));
            }
        }
        // imapfs exits once its index saves are on disk (it waits up to a minute for them):
        // on a loaded machine an fsync alone took seconds, so 10 s was seen to be too short.
        let status = wait_child(&mut self.child, Duration::from_secs(40));
        if status.is_none() {
            let _ = self.child.kill();
            let _ = wait_child(&mut self.child, Duration::from_secs(5));
        }
        if is_mounted(&self.mountpoint) {
            force_unmount(&self.mountpoint);
        }
        self.remove_files();
        status
    }

    /// Removes the mountpoint and logs one by one, never recursively: if something is still
    /// mounted, `remove_dir` fails instead of deleting mail through the filesystem.
    fn remove_files(&self) {
        if std::env::var_os("IMAPFS_TEST_KEEP").is_some() {
            eprintln!("kept {}", self.dir.display());
            return;
        }
        let _ = fs::remove_dir(&self.mountpoint);
        let _ = fs::remove_file(&self.log);
        let _ = fs::remove_file(self.dir.join("imapfs.stdout"));
        // imapfs's own cache directory (a plain directory, never a mount point).
        let _ = fs::remove_dir_all(self.dir.join(OWN_CACHE));
        let _ = fs::remove_dir(&self.dir);
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if thread::panicking() && !self.finished {
            eprintln!(
                "--- imapfs log {} (tail) ---\n{}",
                self.log.display(),
                tail(&self.log(), 80)
            );
        }
        self.shutdown();
    }
}

fn force_unmount(mountpoint: &Path) {
    let mp = mountpoint.to_string_lossy().into_owned();
    let _ = try_run(&["umount", "-l", &mp], Duration::from_secs(10));
    if is_mounted(mountpoint) {
        let _ = try_run(&["fusermount3", "-u", "-z", &mp], Duration::from_secs(10));
    }
}

/// Whether `/proc/self/mountinfo` lists `path` as a mount point. Never touches the filesystem
/// at `path`, so it cannot hang on a dead FUSE server.
pub fn is_mounted(path: &Path) -> bool {
    let wanted = path.to_string_lossy();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|field| unescape_mountinfo(field) == wanted)
}

fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("x");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
