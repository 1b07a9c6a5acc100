//! Running a mount: connect, log in, daemonise, serve until unmounted or signalled.
//!
//! The first session is opened before anything is mounted, so a wrong password, an unreachable
//! server or a certificate that does not verify ends `imapfs mount` with one line and nothing
//! mounted. Without `--foreground` the process then forks: the child mounts and reports success
//! or the mount error through a pipe, and the parent exits only once it knows, with the child's
//! verdict. SIGINT, SIGTERM and SIGHUP unmount cleanly; an external `fusermount3 -u` ends the
//! serving thread, which the main thread notices.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use fuser::{Config as FuseConfig, MountOption, SessionACL};

use crate::config::MountOptions;
use crate::error::{Error, Result};
use crate::fs::{FsOptions, ImapFs};
use crate::imap::auth::{connect, ServerConfig};
use crate::imap::pool::Pool;
use crate::store::{Account, StoreOptions};

/// Mount the account and serve it until unmounted. Returns once the mount is gone.
pub fn run(server: ServerConfig, mut opts: MountOptions) -> Result<()> {
    if !opts.mountpoint.is_dir() {
        return Err(Error::Config(format!(
            "mount point {} is not a directory",
            opts.mountpoint.display()
        )));
    }
    // Absolute, so that unmounting still finds it after the daemon leaves its directory.
    opts.mountpoint = opts
        .mountpoint
        .canonicalize()
        .map_err(|e| Error::Config(format!("mount point {}: {e}", opts.mountpoint.display())))?;
    let first = connect(&server)?;
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
    log::info!(
        "logged in to {}:{} as {}",
        server.host,
        server.port,
        server.user
    );
    let notify = if opts.foreground {
        None
    } else {
        Some(daemonize()?)
    };
    block_signals();
    let pool = Pool::new(server, opts.connections, Some(first));
    let store_opts = StoreOptions {
        cache_size: opts.cache_size,
        ..StoreOptions::default()
    };
    let account = Arc::new(Account::new(pool, store_opts));
    let fs_opts = FsOptions {
        dir_ttl: opts.dir_ttl,
        ..FsOptions::default()
    };
    let fs = ImapFs::new(account.clone(), fs_opts);
    let (invalidations, tree) = fs
        .invalidation_channel()
        .map_err(|e| Error::io("starting the change thread", e))?;

    let mut cfg = FuseConfig::default();
    cfg.mount_options = vec![
        MountOption::FSName(fsname),
        MountOption::Subtype("imapfs".into()),
        MountOption::RO,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoExec,
        MountOption::NoAtime,
        MountOption::DefaultPermissions,
    ];
    if opts.allow_other {
        cfg.acl = SessionACL::All;
    }
    cfg.n_threads = Some(opts.connections.clamp(2, 8));
    let session = match fuser::Session::new(fs, &opts.mountpoint, &cfg) {
        Ok(s) => s,
        Err(e) => {
            let err = Error::Config(format!(
                "cannot mount on {}: {e}",
                opts.mountpoint.display()
            ));
            if let Some(fd) = notify {
                report(fd, Err(&err));
            }
            return Err(err);
        }
    };
    let bg = session
        .spawn()
        .map_err(|e| Error::io("starting the FUSE session", e))?;
    let notifier = bg.notifier();
    std::thread::Builder::new()
        .name("invalidate".into())
        .spawn(move || crate::fs::invalidate::run(invalidations, tree, notifier))
        .map_err(|e| Error::io("starting the invalidation thread", e))?;
    log::info!("mounted on {}", opts.mountpoint.display());
    if let Some(fd) = notify {
        report(fd, Ok(()));
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
            if let Err(e) = bg.umount_and_join() {
                log::warn!("unmount: {e}");
            }
            break;
        }
    }
    account.pool().close_all();
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
            if verdict == "ok" {
                std::process::exit(0);
            }
            let msg = if verdict.is_empty() {
                "the mount process died".into()
            } else {
                verdict
            };
            eprintln!("imapfs: {msg}");
            std::process::exit(69);
        }
    }
}

fn report(fd: OwnedFd, result: std::result::Result<(), &Error>) {
    let mut f = std::fs::File::from(fd);
    let _ = match result {
        Ok(()) => f.write_all(b"ok"),
        Err(e) => f.write_all(e.to_string().as_bytes()),
    };
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
