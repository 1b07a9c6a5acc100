//! Running a mount: connect, log in, daemonise, serve until unmounted or signalled.
//!
//! The first session is opened before anything is mounted, so a wrong password, an unreachable
//! server or a certificate that does not verify ends `imapfs mount` with one line and nothing
//! mounted. Without `--foreground` the process then forks: the child mounts and reports success
//! or the mount error through a pipe, and the parent exits only once it knows, with the child's
//! verdict and exit code. SIGINT, SIGTERM and SIGHUP unmount cleanly, lazily (detached) if the
//! mount is busy, so that the daemon never exits leaving a dead mount ("Transport endpoint is
//! not connected"); an external `fusermount3 -u` ends the serving thread, which the main thread
//! notices.
//!
//! Before anything else the mount point is checked: it must exist, be a directory, be empty
//! (unless `nonempty`) and not be a mount point already, so that a second `imapfs mount` on
//! the same place fails with one line and leaves the first mount alone.
//!
//! Offline start: when the server cannot be reached (refused, silent, a name that does not
//! resolve; never a refused login or certificate) and an earlier mount saved the folder list,
//! the mount comes up from what was saved, read-only, says so on stderr, and the link thread
//! (`store/link.rs`) keeps trying; the first attempt then waits at most
//! [`OFFLINE_START_WAIT`]. With `offline=no`, or nothing saved, it fails with
//! [`Error::Unreachable`] (exit 75).

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::{BackgroundSession, Config as FuseConfig, MountOption, SessionACL};

use crate::config::MountOptions;
use crate::error::{Error, Result};
use crate::fs::{FsOptions, ImapFs};
use crate::imap::auth::{connect, ServerConfig};
use crate::imap::pool::Pool;
use crate::imap::session::Session;
use crate::store::disk_cache::DiskOptions;
use crate::store::persist::saved_mailbox_list;
use crate::store::{Account, MailboxInfo, PersistOptions, StoreOptions};

/// Longest the first connection attempt may take when the mount could start offline: a
/// server slower than this is reached a moment later by the link thread.
pub const OFFLINE_START_WAIT: Duration = Duration::from_secs(5);

/// How the mount starts.
enum Start {
    /// Logged in: the first session.
    Online(Box<Session>),
    /// The server cannot be reached (`error`): serving the folder list an earlier mount
    /// saved, and what else it saved, read-only.
    Offline {
        saved: Vec<MailboxInfo>,
        error: Error,
    },
}

/// Mount the account and serve it until unmounted. Returns once the mount is gone.
pub fn run(server: ServerConfig, mut opts: MountOptions) -> Result<()> {
    // Absolute, so that unmounting still finds it after the daemon leaves its directory.
    opts.mountpoint = check_mountpoint(&opts.mountpoint, opts.nonempty)?;
    let persist = persist_options(&server, &opts);
    let first = first_contact(&server, &opts, persist.as_ref())?;
    // Shown in the mount table. Mount options are comma-separated: keep only safe characters
    // so that a user name cannot smuggle in an option.
    let fsname: String = format!("imapfs:{}@{}", server.user, server.host)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@.:-_+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let notice = match &first {
        Start::Online(_) => {
            log::info!(
                "logged in to {}:{} as {}",
                server.host,
                server.port,
                server.user
            );
            None
        }
        Start::Offline { error, .. } => {
            let notice = format!(
                "{error}; serving the copy saved by an earlier mount, read-only, until the \
                 server can be reached (trying again in the background)"
            );
            log::warn!("{notice}");
            Some(notice)
        }
    };
    if let (Some(n), true) = (&notice, opts.foreground) {
        // The user's terminal (in the background the parent prints it, see `daemonize`).
        eprintln!("imapfs: {n}");
    }
    let notify = if opts.foreground {
        None
    } else {
        Some(daemonize()?)
    };
    block_signals();
    // How long an unmount asked for by a signal may take (docs/usage.md, Unmount).
    let unmount_grace = server.timeouts.inactivity + Duration::from_secs(5);
    let (bg, account) = match start_serving(server, &opts, first, persist, fsname) {
        Ok(started) => started,
        Err(e) => {
            if let Some(fd) = notify {
                // The parent prints it; the child's own stderr would say it twice.
                report(fd, Err(&e));
                detach_stdio();
            }
            return Err(e);
        }
    };
    log::info!("mounted on {}", opts.mountpoint.display());
    if let Some(fd) = notify {
        report(fd, Ok(notice.as_deref()));
        detach_stdio();
        // A daemon must not keep the directory it was started in busy (unmountable).
        let _ = std::env::set_current_dir("/");
    }
    loop {
        if bg.guard.is_finished() {
            log::info!("unmounted externally");
            let _ = bg.join();
            break;
        }
        if let Some(sig) = wait_signal(Duration::from_millis(500)) {
            log::info!("signal {sig}: unmounting");
            unmount_watchdog(&opts.mountpoint, unmount_grace);
            stall_unmount_for_tests();
            if let Err(e) = bg.umount_and_join() {
                // Busy (a process has its cwd or a file open inside): as root fuser's
                // umount(2) has no MNT_DETACH and fails with EBUSY. Detach lazily rather
                // than exit and leave a dead mount behind.
                log::warn!("unmount: {e}; detaching lazily");
                lazy_unmount(&opts.mountpoint)?;
            }
            break;
        }
    }
    account.close();
    Ok(())
}

/// Build the store and the filesystem, mount, and start the serving threads.
fn start_serving(
    server: ServerConfig,
    opts: &MountOptions,
    first: Start,
    persist: Option<PersistOptions>,
    fsname: String,
) -> Result<(BackgroundSession, Arc<Account>)> {
    // Bodies are kept beside the indexes, in the same account directory (store/disk_cache).
    let disk = persist
        .as_ref()
        .filter(|_| opts.disk_cache_size > 0)
        .map(|p| DiskOptions {
            dir: p.dir.clone(),
            account: p.account.clone(),
            bound: opts.disk_cache_size,
        });
    let (pool, saved) = match first {
        Start::Online(session) => (Pool::new(server, opts.connections, Some(*session)), None),
        Start::Offline { saved, error } => {
            (Pool::offline(server, opts.connections, &error), Some(saved))
        }
    };
    let store_opts = StoreOptions {
        persist,
        disk,
        cache_size: opts.cache_size,
        delete: opts.delete,
        trash: opts.trash.clone(),
        idle: opts.idle,
        prefetch: opts
            .prefetch
            .clone()
            .map(|folders| crate::store::prefetch::PrefetchOptions {
                folders,
                budget: opts.prefetch_budget,
            }),
        ..StoreOptions::default()
    };
    let account = Account::new(pool, store_opts).shared();
    if let Some(saved) = saved {
        account.serve_offline(saved);
    }
    let fs_opts = FsOptions {
        dir_ttl: opts.dir_ttl,
        read_only: opts.read_only,
        subscribed_only: opts.subscribed_only,
        idle: opts.idle,
        layout: opts.layout,
        readdirplus: opts.readdirplus,
        ..FsOptions::default()
    };
    let fs = ImapFs::new(account.clone(), fs_opts);
    let (invalidations, tree) = fs
        .invalidation_channel()
        .map_err(|e| Error::io("starting the change thread", e))?;

    let cfg = fuse_config(fsname, opts.read_only, opts.allow_other, opts.connections);
    let session = fuser::Session::new(fs, &opts.mountpoint, &cfg).map_err(|e| {
        Error::Config(format!(
            "cannot mount on {}: {e}",
            opts.mountpoint.display()
        ))
    })?;
    let bg = session
        .spawn()
        .map_err(|e| Error::io("starting the FUSE session", e))?;
    let notifier = bg.notifier();
    std::thread::Builder::new()
        .name("invalidate".into())
        .spawn(move || crate::fs::invalidate::run(invalidations, tree, notifier))
        .map_err(|e| Error::io("starting the invalidation thread", e))?;
    account.start_link()?;
    account.start_prefetch()?;
    if opts.idle {
        account.start_watcher()?;
    }
    Ok((bg, account))
}

/// Indexes, the folder list and bodies are kept between mounts under the user's cache
/// directory (or `cache_dir=`), per account.
fn persist_options(server: &ServerConfig, opts: &MountOptions) -> Option<PersistOptions> {
    let dir = opts.cache_dir.clone().or_else(PersistOptions::default_dir);
    dir.map(|dir| PersistOptions {
        dir,
        account: PersistOptions::account_key(&server.user, &server.host, server.port),
    })
}

/// The first connection: a session, or an offline start when the server cannot be reached
/// and an earlier mount saved the folder list (unless `offline=no`). A refused login, a
/// certificate that does not verify and the like fail as they are: the server answered.
fn first_contact(
    server: &ServerConfig,
    opts: &MountOptions,
    persist: Option<&PersistOptions>,
) -> Result<Start> {
    let saved = persist
        .filter(|_| opts.offline)
        .and_then(saved_mailbox_list);
    let mut attempt = server.clone();
    if saved.is_some() {
        let t = &mut attempt.timeouts;
        t.inactivity = t.inactivity.min(OFFLINE_START_WAIT);
        t.command = t.command.min(OFFLINE_START_WAIT);
    }
    match connect(&attempt) {
        Ok(mut session) => {
            session.set_timeouts(server.timeouts.clone());
            Ok(Start::Online(Box::new(session)))
        }
        Err(error) if error.is_unreachable() => match saved {
            Some(saved) => Ok(Start::Offline { saved, error }),
            None => Err(Error::Unreachable {
                cause: Box::new(error),
                why: if opts.offline {
                    "no copy saved by an earlier mount to serve offline".into()
                } else {
                    "offline=no".into()
                },
            }),
        },
        Err(error) => Err(error),
    }
}

/// The FUSE session imapfs mounts: options, who may enter, serving threads. Public so that the
/// benchmark's in-memory floor (tests/bench/floor.rs) mounts with exactly these settings and
/// cannot drift from them; what imapfs asks of the kernel at init is
/// [`crate::fs::kernel_init`], shared the same way.
pub fn fuse_config(
    fsname: String,
    read_only: bool,
    allow_other: bool,
    connections: usize,
) -> FuseConfig {
    let mut cfg = FuseConfig::default();
    cfg.mount_options = vec![
        MountOption::FSName(fsname),
        MountOption::Subtype("imapfs".into()),
        if read_only {
            MountOption::RO
        } else {
            MountOption::RW
        },
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoExec,
        MountOption::NoAtime,
        MountOption::DefaultPermissions,
    ];
    if allow_other {
        cfg.acl = SessionACL::All;
    }
    cfg.n_threads = Some(connections.clamp(2, 8));
    cfg
}

/// Check the mount point and return its canonical path: an existing, empty (unless
/// `nonempty`) directory that is not already a mount point. [`run`] checks it again; the CLI
/// calls this first too, so that nobody types a password for a mount that cannot happen.
pub fn check_mountpoint(path: &Path, nonempty: bool) -> Result<PathBuf> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::Config(format!("mount point {shown} does not exist"))
        }
        _ if e.raw_os_error() == Some(libc::ENOTCONN) => Error::Config(format!(
            "mount point {shown} is a dead mount (its server is gone); \
             unmount it first: fusermount3 -u {shown}"
        )),
        _ => Error::Config(format!("mount point {shown}: {e}")),
    })?;
    if !meta.is_dir() {
        return Err(Error::Config(format!(
            "mount point {shown} is not a directory"
        )));
    }
    let absolute = path
        .canonicalize()
        .map_err(|e| Error::Config(format!("mount point {shown}: {e}")))?;
    if is_mount_point(&absolute) {
        return Err(Error::Config(format!(
            "{shown} is already a mount point (unmount it first: fusermount3 -u {shown})"
        )));
    }
    if !nonempty {
        let mut entries = std::fs::read_dir(&absolute)
            .map_err(|e| Error::Config(format!("mount point {shown}: {e}")))?;
        if entries.next().is_some() {
            return Err(Error::Config(format!(
                "mount point {shown} is not empty (-o nonempty mounts over it anyway)"
            )));
        }
    }
    Ok(absolute)
}

/// Whether /proc/self/mountinfo lists `path` (canonical) as a mount point.
pub fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let wanted = path.as_os_str().as_bytes();
    std::fs::read("/proc/self/mountinfo")
        .unwrap_or_default()
        .split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .any(|field| unescape_mountinfo(field) == wanted)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` (octal).
fn unescape_mountinfo(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|_| field[i] == b'\\')
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match octal {
            Some(b) => {
                out.push(b);
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

/// A signal asked for the end, and the end must come: if the unmount has not finished in
/// `grace` (a request stuck on a server that stopped answering mid-command, or a bug that
/// stopped the serving threads), detach the mount and exit, so that neither the shell that
/// sent the signal nor the mount point waits forever.
fn unmount_watchdog(mountpoint: &Path, grace: Duration) {
    let mountpoint = mountpoint.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("unmount-watchdog".into())
        .spawn(move || {
            std::thread::sleep(grace);
            log::error!(
                "unmount did not finish in {} s: detaching {} and exiting",
                grace.as_secs(),
                mountpoint.display()
            );
            let _ = lazy_unmount(&mountpoint);
            std::process::exit(EXIT_UNMOUNT_STUCK);
        });
    if let Err(e) = spawned {
        log::warn!("no unmount watchdog ({e})");
    }
}

/// Test hook, in debug builds only: with `IMAPFS_TEST_STALL_UNMOUNT` set, an unmount asked
/// for by a signal never begins, as if the thread serving it were stuck for good, so that
/// `tests/cli.rs` sees [`unmount_watchdog`] force it. The cases the watchdog is for (a
/// serving thread that a bug stopped) cannot be brought about in a correct daemon, and a
/// server that stops answering only holds a request for `timeout`; release builds do not
/// read the variable.
fn stall_unmount_for_tests() {
    if cfg!(debug_assertions) && std::env::var_os("IMAPFS_TEST_STALL_UNMOUNT").is_some() {
        log::warn!("IMAPFS_TEST_STALL_UNMOUNT: the unmount stalls (a test of its watchdog)");
        loop {
            std::thread::park();
        }
    }
}

/// The exit code of a mount whose unmount had to be forced ([`unmount_watchdog`]).
const EXIT_UNMOUNT_STUCK: i32 = 70;

/// Detach a busy mount: umount2(MNT_DETACH) (root), else `fusermount3 -u -z`. Fails only if
/// the mount is still there afterwards.
fn lazy_unmount(mountpoint: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(c) = std::ffi::CString::new(mountpoint.as_os_str().as_bytes()) {
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
            return Ok(());
        }
    }
    let status = std::process::Command::new("fusermount3")
        .args(["-u", "-z", "--"])
        .arg(mountpoint)
        .stdin(std::process::Stdio::null())
        .status();
    if is_mount_point(mountpoint) {
        return Err(Error::Config(format!(
            "cannot unmount {} ({status:?})",
            mountpoint.display()
        )));
    }
    Ok(())
}

/// Fork; the parent waits for the child's verdict and exits with it. Returns the pipe to
/// report on, in the child.
fn daemonize() -> Result<OwnedFd> {
    let mut fds = [0; 2];
    // SAFETY: pipe fills two fds on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::io("pipe", std::io::Error::last_os_error()));
    }
    // SAFETY: the fds were just created and are owned here.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: no other threads exist yet (the pool opens connections lazily, and the first
    // session is a plain socket), so fork is safe.
    match unsafe { libc::fork() } {
        -1 => Err(Error::io("fork", std::io::Error::last_os_error())),
        0 => {
            drop(rd);
            // SAFETY: plain syscall in the child.
            unsafe { libc::setsid() };
            Ok(wr)
        }
        _ => {
            drop(wr);
            let mut verdict = String::new();
            let _ = std::fs::File::from(rd).read_to_string(&mut verdict);
            let (code, msg) = match read_verdict(&verdict) {
                Ok(notice) => {
                    if let Some(n) = notice {
                        eprintln!("imapfs: {n}");
                    }
                    std::process::exit(0)
                }
                Err(failure) => failure,
            };
            eprintln!("imapfs: {msg}");
            std::process::exit(code);
        }
    }
}

fn report(fd: OwnedFd, result: std::result::Result<Option<&str>, &Error>) {
    let _ = std::fs::File::from(fd).write_all(verdict(result).as_bytes());
}

/// What the child tells the parent: `ok` (with a line for the user after a newline: the
/// mount started offline), or its exit code and the error line, so that the parent exits as
/// the child would have (64 for a configuration error, not always 69).
fn verdict(result: std::result::Result<Option<&str>, &Error>) -> String {
    match result {
        Ok(None) => "ok".into(),
        Ok(Some(notice)) => format!("ok\n{notice}"),
        Err(e) => format!("{} {e}", e.exit_code()),
    }
}

/// The parent's reading of [`verdict`]; nothing at all means the child died.
fn read_verdict(verdict: &str) -> std::result::Result<Option<String>, (i32, String)> {
    if verdict == "ok" {
        return Ok(None);
    }
    if let Some(notice) = verdict.strip_prefix("ok\n") {
        return Ok(Some(notice.to_string()));
    }
    match verdict.split_once(' ') {
        Some((code, msg)) => match code.parse::<u8>() {
            Ok(code) if code != 0 => Err((i32::from(code), msg.to_string())),
            _ => Err((69, verdict.to_string())),
        },
        None if verdict.is_empty() => Err((69, "the mount process died".into())),
        None => Err((69, verdict.to_string())),
    }
}

fn detach_stdio() {
    let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    else {
        return;
    };
    use std::os::fd::AsRawFd;
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard descriptors.
        unsafe { libc::dup2(null.as_raw_fd(), fd) };
    }
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigset operations on a zeroed set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Block the termination signals in this thread and every thread it starts later, so that
/// only [`wait_signal`] receives them.
fn block_signals() {
    let set = signal_set();
    // SAFETY: a valid set; the old mask is not needed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

fn wait_signal(timeout: Duration) -> Option<i32> {
    let set = signal_set();
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as _,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    // SAFETY: valid set and timespec; no siginfo wanted.
    let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 8: the parent exited 69 for every failure of the child, although a
    /// configuration error is 64.
    #[test]
    fn verdict_carries_the_childs_exit_code() {
        let config = Error::Config("cannot mount on /mnt: Permission denied".into());
        assert_eq!(
            read_verdict(&verdict(Err(&config))),
            Err((64, "cannot mount on /mnt: Permission denied".into()))
        );
        let auth = Error::Auth("Authentication failed.".into());
        assert_eq!(read_verdict(&verdict(Err(&auth))).unwrap_err().0, 77);
        assert_eq!(read_verdict(&verdict(Ok(None))), Ok(None));
        let offline = "server unreachable; serving the saved copy";
        assert_eq!(
            read_verdict(&verdict(Ok(Some(offline)))),
            Ok(Some(offline.into()))
        );
        let unreachable = Error::Unreachable {
            cause: Box::new(Error::Timeout {
                what: "connecting".into(),
            }),
            why: "offline=no".into(),
        };
        assert_eq!(read_verdict(&verdict(Err(&unreachable))).unwrap_err().0, 75);
        assert_eq!(read_verdict("").unwrap_err().0, 69);
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(b"/tmp/a\\040b\\134c"), b"/tmp/a b\\c");
    }
}
