//! Where passwords and tokens come from, in one obvious order, and how they are read without
//! ever passing through argv or a log.

use super::*;

/// Where the secret may come from; see the module documentation for the order.
#[derive(Clone, Default)]
pub struct SecretSources {
    pub token_command: Option<String>,
    pub password_command: Option<String>,
    pub password_file: Option<PathBuf>,
    /// A `password` from a private config file.
    pub config_password: Option<String>,
}

impl std::fmt::Debug for SecretSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSources")
            .field("token_command", &self.token_command.is_some())
            .field("password_command", &self.password_command.is_some())
            .field("password_file", &self.password_file)
            .field("config_password", &self.config_password.is_some())
            .finish()
    }
}

impl SecretSources {
    pub fn is_empty(&self) -> bool {
        self.token_command.is_none()
            && self.password_command.is_none()
            && self.password_file.is_none()
            && self.config_password.is_none()
    }

    /// The credential to log in with. A token command is kept as a command (run again for
    /// each connection); every other source is read now. `tunnel` says a PREAUTH tunnel may
    /// need no password: then no prompt is shown and an empty password is used.
    pub fn resolve(&self, user: &str, host: &str, tunnel: bool) -> Result<Credential> {
        if let Some(cmd) = &self.token_command {
            return Ok(Credential::TokenCommand(cmd.clone()));
        }
        if let Some(cmd) = &self.password_command {
            return run_secret_command(cmd, "password command").map(Credential::Secret);
        }
        if let Some(path) = &self.password_file {
            return read_password_file(path).map(Credential::Secret);
        }
        if let Some(p) = &self.config_password {
            return Ok(Credential::Secret(Secret::new(p.as_bytes().to_vec())));
        }
        if let Some(p) = take_env_password() {
            return Ok(Credential::Secret(p));
        }
        if tunnel {
            return Ok(Credential::Secret(Secret::default()));
        }
        prompt_password(&format!("Password for {user}@{host}: ")).map(Credential::Secret)
    }
}

/// The first line of a private password file.
fn read_password_file(path: &Path) -> Result<Secret> {
    check_private_file(path, "it is a password file")?;
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
    let bytes = Secret::new(bytes);
    let line = bytes
        .expose()
        .split(|&b| b == b'\n')
        .next()
        .unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Ok(Secret::new(line.to_vec()))
}

/// `IMAPFS_PASSWORD`, removed (and overwritten where it lies) once read, so that nothing the
/// mount starts later inherits it and /proc/PID/environ does not show it.
fn take_env_password() -> Option<Secret> {
    use std::os::unix::ffi::OsStringExt;
    let p = std::env::var_os("IMAPFS_PASSWORD")?;
    scrub_env_value("IMAPFS_PASSWORD");
    std::env::remove_var("IMAPFS_PASSWORD");
    Some(Secret::new(p.into_vec()))
}

/// Overwrite the value of an environment variable where it lies. `remove_var` only unlinks
/// it, and /proc/PID/environ shows the process's original environment block, so without this
/// the password would stay readable there for the life of the mount.
fn scrub_env_value(name: &str) {
    let Ok(cname) = std::ffi::CString::new(name) else {
        return;
    };
    // SAFETY: called while the process is single-threaded (before any thread starts);
    // getenv returns a pointer to a NUL-terminated string in writable memory (the initial
    // environment block on the stack, or a setenv allocation), overwritten within its length.
    unsafe {
        let p = libc::getenv(cname.as_ptr());
        if !p.is_null() {
            let len = libc::strlen(p);
            std::ptr::write_bytes(p, b'*', len);
        }
    }
}

/// Ask on the controlling terminal with echo off.
fn prompt_password(prompt: &str) -> Result<Secret> {
    use std::os::fd::AsRawFd;
    let no_tty = || {
        Error::Config(
            "no password: use --password-command or --password-file, set IMAPFS_PASSWORD, \
             or run on a terminal"
                .into(),
        )
    };
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|_| no_tty())?;
    let fd = tty.as_raw_fd();
    // SAFETY: termios is plain data; tcgetattr fills it for a valid fd.
    let mut term: libc::termios = unsafe { std::mem::zeroed() };
    if unsafe { libc::tcgetattr(fd, &mut term) } != 0 {
        return Err(no_tty());
    }
    let saved = term;
    term.c_lflag &= !libc::ECHO;
    term.c_lflag |= libc::ECHONL;
    // SAFETY: a valid fd and a termios derived from its own settings.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &term) };
    let mut w = &tty;
    let _ = w.write_all(prompt.as_bytes());
    let mut line = String::new();
    let r = std::io::BufReader::new(&tty).read_line(&mut line);
    // SAFETY: restoring the settings read above.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    r.map_err(|e| Error::Config(format!("reading the password: {e}")))?;
    let p = line.trim_end_matches(['\r', '\n']).as_bytes().to_vec();
    Ok(Secret::new(p))
}
