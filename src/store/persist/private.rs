//! Private files of ours: written atomically (a temporary file, fsync, rename, fsync of the
//! directory) and read back only after the directory and the file were checked, on their
//! open fds, to be ours and private (see the parent module's "Where" and "Trust").

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Largest file read back (a listing of millions of messages stays below).
const MAX_FILE: u64 = 512 << 20;

/// Write `bytes` to `path` so that a crash leaves either the old file or the new one, whole:
/// a new temporary file in the same directory (O_EXCL, O_NOFOLLOW), written and fsynced,
/// renamed over `path`, then the directory fsynced. The directory is created private if
/// missing, and opened without following a symlink; the file is made relative to that fd.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let (dir, file) = split(path)?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let dirfd = open_private_dir(dir)?;
    let tmp = format!("{}.tmp{}", file.to_string_lossy(), std::process::id());
    let tmp = cstr(std::ffi::OsStr::new(&tmp))?;
    let name = cstr(file)?;
    // SAFETY: openat with a valid directory fd and a NUL-terminated name; the fd returned is
    // owned by the File below.
    let fd = unsafe {
        libc::openat(
            dirfd.as_raw_fd(),
            tmp.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let mut f = unsafe { fs::File::from_raw_fd(fd) };
    let unlink_tmp = || {
        // SAFETY: unlinkat with a valid directory fd and a NUL-terminated name.
        unsafe { libc::unlinkat(dirfd.as_raw_fd(), tmp.as_ptr(), 0) };
    };
    if let Err(e) = f.write_all(bytes).and_then(|_| f.sync_all()) {
        unlink_tmp();
        return Err(e);
    }
    drop(f);
    // SAFETY: renameat within one directory fd, NUL-terminated names.
    let r = unsafe {
        libc::renameat(
            dirfd.as_raw_fd(),
            tmp.as_ptr(),
            dirfd.as_raw_fd(),
            name.as_ptr(),
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        unlink_tmp();
        return Err(e);
    }
    dirfd.sync_all()
}

/// Run `edit` with the private directory `dir` (created if missing) locked against every
/// other process that edits files in it this way (`flock` on the directory's fd, released
/// when the fd closes): a read-add-write of a file shared by the mounts of an account loses
/// no other mount's update.
pub(crate) fn with_dir_locked<T>(
    dir: &Path,
    edit: impl FnOnce() -> std::io::Result<T>,
) -> std::io::Result<T> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let d = open_private_dir(dir)?;
    // SAFETY: flock on an open fd; released when `d` is closed.
    if unsafe { libc::flock(d.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    edit()
}

/// The directory and file name of `path`.
fn split(path: &Path) -> std::io::Result<(&Path, &std::ffi::OsStr)> {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(file)) => Ok((dir, file)),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no directory and file name",
        )),
    }
}

fn cstr(s: &std::ffi::OsStr) -> std::io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(s.as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in a path"))
}

/// Open a directory that must be ours and private (0700 or stricter), refusing a symlink;
/// the checks are made on the open fd, so nothing can be swapped in after them.
fn open_private_dir(dir: &Path) -> std::io::Result<fs::File> {
    let d = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)?;
    let meta = d.metadata()?;
    if !meta.is_dir() || meta.uid() != euid() || meta.mode() & 0o077 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{} is not a private directory of ours", dir.display()),
        ));
    }
    Ok(d)
}

pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// A private file of ours, decoded: `None` if there is none or `decode` finds it is for
/// another key (`Ok(None)`). One that is not ours, too large, or that `decode` refuses
/// (`Err`) is discarded: logged, removed, and reported as none.
pub(super) fn load_private<T>(
    path: &Path,
    decode: impl FnOnce(Vec<u8>) -> Result<Option<T>, String>,
) -> Option<T> {
    read_private(path)
        .and_then(|data| data.map_or(Ok(None), decode))
        .unwrap_or_else(|why| {
            log::info!("{}: discarded ({why})", path.display());
            if let Err(e) = remove_private(path) {
                log::info!("{}: not removed ({e})", path.display());
            }
            None
        })
}

/// Remove a file from a private directory of ours, relative to that directory's checked fd:
/// a directory swapped for a symlink (or no longer private) is refused, so nothing outside
/// the checked directory is ever unlinked.
pub(crate) fn remove_private(path: &Path) -> std::io::Result<()> {
    let (dir, file) = split(path)?;
    let dirfd = open_private_dir(dir)?;
    let name = cstr(file)?;
    // SAFETY: unlinkat with a valid directory fd and a NUL-terminated name.
    if unsafe { libc::unlinkat(dirfd.as_raw_fd(), name.as_ptr(), 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The bytes of a private file of ours: `Ok(None)` if there is none, `Err` with the reason
/// if it is not ours or too large. The file is opened once, without following a symlink (in
/// a private directory opened the same way); its type, owner, mode and size are checked on
/// that fd, and the bytes are read from it: what was checked is what is read.
pub(crate) fn read_private(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let (dir, file) = split(path).map_err(|e| e.to_string())?;
    let dirfd = match open_private_dir(dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let file = cstr(file).map_err(|e| e.to_string())?;
    // SAFETY: openat with a valid directory fd and a NUL-terminated name; the fd returned is
    // owned by the File below.
    let fd = unsafe {
        libc::openat(
            dirfd.as_raw_fd(),
            file.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::NotFound {
            return Ok(None);
        }
        return Err(e.to_string());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let mut f = unsafe { fs::File::from_raw_fd(fd) };
    let meta = f.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() || meta.uid() != euid() || meta.mode() & 0o077 != 0 {
        return Err("not a private file of ours".into());
    }
    if meta.len() > MAX_FILE {
        return Err("too large".into());
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    Read::take(&mut f, MAX_FILE + 1)
        .read_to_end(&mut data)
        .map_err(|e| e.to_string())?;
    if data.len() as u64 > MAX_FILE {
        return Err("too large".into());
    }
    Ok(Some(data))
}
