//! Deadlines: every poll and every filesystem call that could hang runs under one, so a hung
//! mount fails a test instead of the run. Nothing here sleeps to synchronise: it polls a
//! condition every [`POLL`].

use std::path::Path;
use std::process::{Child, ExitStatus};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

pub(super) const POLL: Duration = Duration::from_millis(20);

/// Runs `f` on its own thread and returns its result, or panics after `timeout`: for direct
/// filesystem calls on the mount, which would otherwise hang the test if imapfs hangs. (The
/// stuck thread is abandoned; unmounting in `Mount::drop` releases it.)
pub fn within<T: Send + 'static>(
    what: &str,
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(timeout) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: no result after {timeout:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: panicked"),
    }
}

/// Polls `probe` until it returns `Some`, or panics after `timeout` naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(POLL);
    }
}

/// setxattr(2) directly, under a deadline, for the exact errno (setfattr cannot send an empty
/// value and reports errors as text).
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<(), i32> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
    let name = std::ffi::CString::new(name).expect("name");
    let value = value.to_vec();
    within("setxattr", Duration::from_secs(30), move || {
        // SAFETY: valid C strings and a buffer of the given length.
        let r = unsafe {
            libc::setxattr(
                path.as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        }
    })
}

pub(super) fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
            _ => return None,
        }
    }
}
