//! What a mount needs to know: the account URL, the password source and the mount options.
//!
//! The CLI (`main.rs`) fills [`MountOptions`]; [`parse_account_url`] turns
//! `imaps://user@host[:port]` into the pieces of an [`crate::imap::auth::ServerConfig`].
//! Passwords never come from argv: only from `IMAPFS_PASSWORD`, a `--password-command`, or a
//! prompt on the terminal.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::imap::auth::{Secret, Security};

/// The parts of an account URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountUrl {
    pub security: Security,
    pub user: String,
    pub host: String,
    pub port: u16,
}

/// Parse `imaps://user@host[:port]` (implicit TLS, port 993) or `imap://user@host[:port]`
/// (STARTTLS, port 143). The user part is percent-decoded (`me%40example.org`).
pub fn parse_account_url(url: &str) -> Result<AccountUrl> {
    // The URL is not echoed: a user may have put a password in it.
    let bad = |why: &str| Error::Config(format!("bad account URL: {why}"));
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("expected imaps://user@host"))?;
    let (security, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "imaps" => (Security::Tls, 993),
        "imap" => (Security::StartTls, 143),
        _ => return Err(bad("the scheme must be imaps:// or imap://")),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (userinfo, hostport) = rest
        .rsplit_once('@')
        .ok_or_else(|| bad("no user name (user@host)"))?;
    if userinfo.contains(':') {
        return Err(bad(
            "a password in the URL is not accepted (it would show in the process list); \
             use IMAPFS_PASSWORD, --password-command or the prompt",
        ));
    }
    let user = percent_decode(userinfo).ok_or_else(|| bad("bad percent escape in the user"))?;
    if user.is_empty() {
        return Err(bad("empty user name"));
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("unclosed [ in host"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
            None if after.is_empty() => default_port,
            None => return Err(bad("junk after the host")),
        };
        (h.to_string(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad("bad port"))?),
            None => (hostport.to_string(), default_port),
        }
    };
    if host.is_empty() || host.contains('/') || port == 0 {
        return Err(bad("bad host or port"));
    }
    Ok(AccountUrl {
        security,
        user,
        host,
        port,
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Where the password comes from, in order of preference.
#[derive(Debug, Clone)]
pub enum PasswordSource {
    /// Run a command (through `sh -c`) and take the first line of its output.
    Command(String),
    /// The `IMAPFS_PASSWORD` environment variable, else a prompt on the terminal.
    EnvOrPrompt,
}

/// Obtain the password. The environment variable is removed once read, so that nothing the
/// mount starts later inherits it.
pub fn read_password(source: &PasswordSource, user: &str, host: &str) -> Result<Secret> {
    match source {
        PasswordSource::Command(cmd) => {
            let out = Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .stdin(Stdio::inherit())
                .stderr(Stdio::inherit())
                .output()
                .map_err(|e| Error::Config(format!("cannot run the password command: {e}")))?;
            if !out.status.success() {
                return Err(Error::Config(format!(
                    "the password command failed ({})",
                    out.status
                )));
            }
            let line = out.stdout.split(|&b| b == b'\n').next().unwrap_or_default();
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            Ok(Secret::new(line.to_vec()))
        }
        PasswordSource::EnvOrPrompt => {
            if let Some(p) = std::env::var_os("IMAPFS_PASSWORD") {
                scrub_env_value("IMAPFS_PASSWORD");
                std::env::remove_var("IMAPFS_PASSWORD");
                use std::os::unix::ffi::OsStringExt;
                return Ok(Secret::new(p.into_vec()));
            }
            prompt_password(&format!("Password for {user}@{host}: "))
        }
    }
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
            "no password: set IMAPFS_PASSWORD, use --password-command, or run on a terminal".into(),
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

/// Options of `imapfs mount` beyond the account.
#[derive(Debug, Clone)]
pub struct MountOptions {
    pub mountpoint: PathBuf,
    pub foreground: bool,
    /// Bytes of message content kept in memory.
    pub cache_size: u64,
    /// How long a directory listing is trusted before asking the server again.
    pub dir_ttl: Duration,
    /// Most connections opened to the server at once.
    pub connections: usize,
    pub allow_other: bool,
}

/// Parse a size such as `256M`, `1G`, `4096`, `512k`.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (s, 1u64),
        Some((i, _)) => {
            let m = match s[i..]
                .to_ascii_lowercase()
                .trim_end_matches("ib")
                .trim_end_matches('b')
            {
                "" => 1,
                "k" => 1 << 10,
                "m" => 1 << 20,
                "g" => 1 << 30,
                other => return Err(format!("unknown size unit `{other}` (use K, M or G)")),
            };
            (&s[..i], m)
        }
    };
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a size"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_account_url("imaps://me%40x.org@mail.x.org").unwrap();
        assert_eq!(
            (u.user.as_str(), u.host.as_str(), u.port),
            ("me@x.org", "mail.x.org", 993)
        );
        assert_eq!(u.security, Security::Tls);
        let u = parse_account_url("imap://me@127.0.0.1:1143").unwrap();
        assert_eq!((u.port, u.security), (1143, Security::StartTls));
        let u = parse_account_url("imaps://me@[::1]:994").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 994));
        assert!(parse_account_url("imaps://me:secret@host").is_err());
        assert!(parse_account_url("http://me@host").is_err());
        assert!(parse_account_url("imaps://host").is_err());
        let e = parse_account_url("imaps://me:hunter2@host")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12X").is_err());
    }
}
