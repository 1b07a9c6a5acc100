//! What a mount needs to know, and where each piece comes from: the account (a URL or an entry
//! of the config file), the credentials, and the options.
//!
//! Every option has one name, used alike in `-o name[=value]` lists (sshfs and fstab style),
//! in the `options` of an account in the config file, and (with dashes) as a `--long-flag`:
//! [`Settings::set`] is the one place that parses and checks a value. Settings are layered:
//! defaults, then the account's entry, then `-o` lists, then explicit flags; a later layer
//! wins. Credentials are the exception: if the command line names any password or token
//! source, the account's sources are ignored, so that one never mixes two accounts' secrets.
//!
//! Secrets never come from argv. In order: an OAuth2 token command, a password command (first
//! line of its output), a password file (refused unless private: mode 0600 or stricter and
//! owned by the user), a `password` in the config file (refused likewise), the
//! `IMAPFS_PASSWORD` environment variable (overwritten in place once read), and a prompt on
//! the terminal.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::imap::auth::{run_secret_command, AuthMethod, Credential, Secret, Security};
use crate::imap::transport::Fingerprint;

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
             use --password-command, --password-file, IMAPFS_PASSWORD or the prompt",
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

/// What `rm` of a message does (the store's choice, named here for the options).
pub use crate::store::DeleteMode;

/// Options of `imapfs mount` beyond the account: what `mount::run` and the filesystem read.
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
    /// `ro` / `--read-only`: no write reaches the server (mounted read-only).
    pub read_only: bool,
    /// `delete=expunge|trash`: what `rm` does.
    pub delete: DeleteMode,
    /// `subscribed`: show only subscribed mailboxes (LSUB / LIST (SUBSCRIBED)).
    pub subscribed_only: bool,
    /// `idle=yes|no`: watch for changes with IDLE (live updates).
    pub idle: bool,
    /// `nonempty`: allow mounting over a directory that is not empty.
    pub nonempty: bool,
}

/// Longest `timeout=`: a day. Beyond that a silent server is dead, and the derived command
/// deadline (ten times the timeout) stays far from overflowing an `Instant`.
pub const MAX_TIMEOUT_SECS: u64 = 86_400;
/// Longest `dir_ttl=`: a day.
pub const MAX_DIR_TTL_SECS: u64 = 86_400;
/// Most `connections=`.
pub const MAX_CONNECTIONS: usize = 64;

/// One option that `-o`, the config file and the flags share.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    /// The name in `-o` lists (the flag is `--` and the name with `-` for `_`).
    pub name: &'static str,
    /// The value's placeholder, or `None` for a switch.
    pub value: Option<&'static str>,
    pub help: &'static str,
}

/// Every option [`Settings::set`] understands, for help texts, the man page test and error
/// messages. Generic mount(8) options are in [`GENERIC_MOUNT_OPTIONS`].
pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "account",
        value: Some("NAME"),
        help: "use this account of the config file",
    },
    OptionSpec {
        name: "ca_file",
        value: Some("FILE"),
        help: "trust only the CA certificates in this PEM file",
    },
    OptionSpec {
        name: "tls_fingerprint",
        value: Some("sha256:HEX"),
        help: "accept exactly the server certificate with this SHA-256 fingerprint",
    },
    OptionSpec {
        name: "insecure",
        value: None,
        help: "with imap:// only: no TLS at all (password and mail in clear text)",
    },
    OptionSpec {
        name: "password_command",
        value: Some("CMD"),
        help: "shell command printing the password (first line)",
    },
    OptionSpec {
        name: "password_file",
        value: Some("FILE"),
        help: "file holding the password (first line); mode 0600, owned by you",
    },
    OptionSpec {
        name: "oauth2_token_command",
        value: Some("CMD"),
        help: "shell command printing an OAuth2 access token, run for every new connection",
    },
    OptionSpec {
        name: "auth",
        value: Some("MECH"),
        help: "auto, login, plain, cram-md5, xoauth2 or oauthbearer",
    },
    OptionSpec {
        name: "tunnel",
        value: Some("CMD"),
        help: "speak IMAP over the stdin/stdout of this shell command",
    },
    OptionSpec {
        name: "timeout",
        value: Some("SECS"),
        help: "longest silence from the server while it owes an answer (1-86400)",
    },
    OptionSpec {
        name: "max_literal",
        value: Some("SIZE"),
        help: "largest literal accepted from the server",
    },
    OptionSpec {
        name: "log_file",
        value: Some("FILE"),
        help: "append log lines to this file (created 0600)",
    },
    OptionSpec {
        name: "debug",
        value: None,
        help: "log at debug level (like RUST_LOG=debug); secrets are never logged",
    },
    OptionSpec {
        name: "foreground",
        value: None,
        help: "stay in the foreground",
    },
    OptionSpec {
        name: "cache_size",
        value: Some("SIZE"),
        help: "memory for cached message content",
    },
    OptionSpec {
        name: "dir_ttl",
        value: Some("SECS"),
        help: "seconds a folder listing is trusted (0-86400)",
    },
    OptionSpec {
        name: "connections",
        value: Some("N"),
        help: "most connections to the server (1-64)",
    },
    OptionSpec {
        name: "allow_other",
        value: None,
        help: "let other users access the mount",
    },
    OptionSpec {
        name: "ro",
        value: None,
        help: "read-only: nothing is ever changed on the server",
    },
    OptionSpec {
        name: "rw",
        value: None,
        help: "read-write (the default)",
    },
    OptionSpec {
        name: "delete",
        value: Some("expunge|trash"),
        help: "what rm does: expunge the message, or move it to Trash",
    },
    OptionSpec {
        name: "subscribed",
        value: None,
        help: "show only subscribed folders",
    },
    OptionSpec {
        name: "idle",
        value: Some("yes|no"),
        help: "live updates with IDLE",
    },
    OptionSpec {
        name: "nonempty",
        value: None,
        help: "allow a mount point that is not empty",
    },
];

/// Options mount(8), mount.fuse3 and systemd put in `-o` lists, which mean nothing to imapfs
/// (or are handled by them) and are ignored, with or without a value (`user=NAME`,
/// `comment=...`). Also ignored: every `x-*` (fstab annotations for systemd, GVfs, ...).
pub const GENERIC_MOUNT_OPTIONS: &[&str] = &[
    "defaults", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "_netdev", "auto", "noauto",
    "user", "users", "nouser", "nofail", "atime", "noatime", "relatime", "async", "comment",
];

/// Every setting, resolved from defaults, the account's entry, `-o` lists and flags.
#[derive(Debug, Clone)]
pub struct Settings {
    pub account: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub tls_fingerprint: Option<Fingerprint>,
    pub insecure: bool,
    pub secrets: SecretSources,
    pub auth: AuthMethod,
    pub tunnel: Option<String>,
    pub timeout: Duration,
    pub max_literal: u64,
    pub log_file: Option<PathBuf>,
    pub debug: bool,
    pub foreground: bool,
    pub cache_size: u64,
    pub dir_ttl: Duration,
    pub connections: usize,
    pub allow_other: bool,
    pub read_only: bool,
    pub delete: DeleteMode,
    pub subscribed_only: bool,
    pub idle: bool,
    pub nonempty: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            account: None,
            ca_file: None,
            tls_fingerprint: None,
            insecure: false,
            secrets: SecretSources::default(),
            auth: AuthMethod::Auto,
            tunnel: None,
            timeout: Duration::from_secs(30),
            max_literal: 64 << 20,
            log_file: None,
            debug: false,
            foreground: false,
            cache_size: 256 << 20,
            dir_ttl: Duration::from_secs(10),
            connections: 4,
            allow_other: false,
            read_only: false,
            delete: DeleteMode::Expunge,
            subscribed_only: false,
            idle: true,
            nonempty: false,
        }
    }
}

impl Settings {
    /// Apply one option. `name` may use `-` or `_`; `value` is what followed `=`.
    /// An unknown option, a missing or unexpected value, or a bad value is an
    /// [`Error::Config`] naming the option.
    pub fn set(&mut self, name: &str, value: Option<&str>) -> Result<()> {
        let key = name.trim().replace('-', "_");
        if is_generic_mount_option(&key) {
            return Ok(());
        }
        if key == "password" {
            return Err(Error::Config(
                "option password= is not accepted: it would show in the process list \
                 (use password_command=, password_file= or IMAPFS_PASSWORD)"
                    .into(),
            ));
        }
        let Some(spec) = OPTIONS.iter().find(|o| o.name == key) else {
            return Err(Error::Config(format!(
                "unknown option `{}` (see imapfs mount --help)",
                printable(name)
            )));
        };
        let value = match (spec.value, value) {
            (Some(_), Some(v)) => v,
            (Some(placeholder), None) => {
                return Err(Error::Config(format!(
                    "option {key} needs a value ({key}={placeholder})"
                )))
            }
            (None, None) => "",
            (None, Some(_)) => {
                return Err(Error::Config(format!("option {key} takes no value")));
            }
        };
        let bad = |why: String| Error::Config(format!("option {key}: {why}"));
        match key.as_str() {
            "account" => self.account = Some(value.to_string()),
            "ca_file" => self.ca_file = Some(expand_home(value)),
            "tls_fingerprint" => {
                self.tls_fingerprint = Some(Fingerprint::parse(value).map_err(bad)?);
            }
            "insecure" => self.insecure = true,
            "password_command" => self.secrets.password_command = Some(value.to_string()),
            "password_file" => self.secrets.password_file = Some(expand_home(value)),
            "oauth2_token_command" => self.secrets.token_command = Some(value.to_string()),
            "auth" => self.auth = value.parse().map_err(bad)?,
            "tunnel" => self.tunnel = Some(value.to_string()),
            "timeout" => {
                let secs = parse_number(value, 1, MAX_TIMEOUT_SECS).map_err(bad)?;
                self.timeout = Duration::from_secs(secs);
            }
            "max_literal" => self.max_literal = parse_size(value).map_err(bad)?,
            "log_file" => self.log_file = Some(expand_home(value)),
            "debug" => self.debug = true,
            "foreground" => self.foreground = true,
            "cache_size" => self.cache_size = parse_size(value).map_err(bad)?,
            "dir_ttl" => {
                let secs = parse_number(value, 0, MAX_DIR_TTL_SECS).map_err(bad)?;
                self.dir_ttl = Duration::from_secs(secs);
            }
            "connections" => {
                let n = parse_number(value, 1, MAX_CONNECTIONS as u64).map_err(bad)?;
                self.connections = n as usize;
            }
            "allow_other" => self.allow_other = true,
            "ro" => self.read_only = true,
            "rw" => self.read_only = false,
            "delete" => {
                self.delete = match value.to_ascii_lowercase().as_str() {
                    "expunge" => DeleteMode::Expunge,
                    "trash" => DeleteMode::Trash,
                    _ => {
                        return Err(bad(format!(
                            "`{}` is not expunge or trash",
                            printable(value)
                        )))
                    }
                }
            }
            "subscribed" => self.subscribed_only = true,
            "idle" => self.idle = parse_yes_no(value).map_err(bad)?,
            "nonempty" => self.nonempty = true,
            _ => unreachable!("every OPTIONS entry is handled"),
        }
        Ok(())
    }

    /// Apply a `-o` list: `name[=value]` items separated by commas; `\,` is a comma inside a
    /// value and `\\` a backslash.
    pub fn set_list(&mut self, list: &str) -> Result<()> {
        for (name, value) in parse_option_list(list) {
            self.set(&name, value.as_deref())?;
        }
        Ok(())
    }

    /// Apply an account of the config file: its URL is returned; its fields and `options`
    /// become settings.
    pub fn apply_account(&mut self, account: &AccountEntry, file: &Path) -> Result<String> {
        if let Some(v) = &account.ca_file {
            self.set("ca_file", Some(v))?;
        }
        if let Some(v) = &account.tls_fingerprint {
            self.set("tls_fingerprint", Some(v))?;
        }
        if let Some(v) = &account.auth {
            self.set("auth", Some(v))?;
        }
        if let Some(v) = &account.tunnel {
            self.set("tunnel", Some(v))?;
        }
        if let Some(v) = &account.password_command {
            self.set("password_command", Some(v))?;
        }
        if let Some(v) = &account.password_file {
            self.set("password_file", Some(v))?;
        }
        if let Some(v) = &account.oauth2_token_command {
            self.set("oauth2_token_command", Some(v))?;
        }
        if account.password.is_some() {
            check_private_file(file, "it holds a password")?;
            self.secrets.config_password = account.password.clone();
        }
        match &account.options {
            Some(OptionList::Line(line)) => self.set_list(line)?,
            Some(OptionList::Items(items)) => {
                for item in items {
                    self.set_list(item)?;
                }
            }
            None => {}
        }
        Ok(account.url.clone())
    }

    /// The options `mount::run` needs, for `mountpoint`.
    pub fn mount_options(&self, mountpoint: PathBuf) -> MountOptions {
        MountOptions {
            mountpoint,
            foreground: self.foreground,
            cache_size: self.cache_size,
            dir_ttl: self.dir_ttl,
            connections: self.connections,
            allow_other: self.allow_other,
            read_only: self.read_only,
            delete: self.delete,
            subscribed_only: self.subscribed_only,
            idle: self.idle,
            nonempty: self.nonempty,
        }
    }
}

fn is_generic_mount_option(key: &str) -> bool {
    GENERIC_MOUNT_OPTIONS.contains(&key) || key.starts_with("x_")
}

/// Split a `-o` list into `(name, value)` pairs. `\,` and `\\` escape; an empty item is
/// skipped.
pub fn parse_option_list(list: &str) -> Vec<(String, Option<String>)> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut chars = list.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next) => current.push(next),
                None => current.push('\\'),
            },
            ',' => items.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    items.push(current);
    items
        .into_iter()
        .filter(|item| !item.trim().is_empty())
        .map(|item| match item.split_once('=') {
            Some((name, value)) => (name.trim().to_string(), Some(value.to_string())),
            None => (item.trim().to_string(), None),
        })
        .collect()
}

fn parse_number(value: &str, min: u64, max: u64) -> std::result::Result<u64, String> {
    match value.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{}` is not a whole number from {min} to {max}",
            printable(value)
        )),
    }
}

fn parse_yes_no(value: &str) -> std::result::Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "on" | "true" | "1" => Ok(true),
        "no" | "off" | "false" | "0" => Ok(false),
        _ => Err(format!("`{}` is not yes or no", printable(value))),
    }
}

/// A value shown in an error: control characters dropped, length bounded.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(80).collect()
}

/// `~/x` is `$HOME/x` (fstab and the config file have no shell to expand it).
fn expand_home(value: &str) -> PathBuf {
    match (value.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(value),
    }
}

/// The config file: `[accounts.NAME]` tables.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The account `imapfs check` uses when none is named (else the only one).
    pub default_account: Option<String>,
    #[serde(default)]
    pub accounts: BTreeMap<String, AccountEntry>,
}

/// One `[accounts.NAME]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountEntry {
    /// `imaps://user@host[:port]` or `imap://user@host[:port]`.
    pub url: String,
    pub password_command: Option<String>,
    pub password_file: Option<String>,
    /// Accepted only if the config file is private (mode 0600, owned by the user).
    pub password: Option<String>,
    pub oauth2_token_command: Option<String>,
    pub ca_file: Option<String>,
    pub tls_fingerprint: Option<String>,
    pub auth: Option<String>,
    pub tunnel: Option<String>,
    /// Options as in `-o`: one string `"ro,cache_size=1G"` or a list of them.
    pub options: Option<OptionList>,
}

/// The `options` of an account: a `-o` style string or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OptionList {
    Line(String),
    Items(Vec<String>),
}

/// Where the config file is: `$XDG_CONFIG_HOME/imapfs/config.toml`, else
/// `~/.config/imapfs/config.toml`.
pub fn config_path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".config"),
    };
    Some(base.join("imapfs").join("config.toml"))
}

impl ConfigFile {
    /// Read and parse the config file at `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<ConfigFile> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ConfigFile::default()),
            Err(e) => {
                return Err(Error::Config(format!(
                    "cannot read {}: {e}",
                    path.display()
                )))
            }
        };
        toml::from_str(&text).map_err(|e| {
            // toml's message spans several lines (a source excerpt): keep the first.
            let first = e
                .message()
                .lines()
                .next()
                .unwrap_or("syntax error")
                .to_string();
            let at = e
                .span()
                .map(|span| format!(" (line {})", text[..span.start].lines().count().max(1)))
                .unwrap_or_default();
            Error::Config(format!("{}{at}: {first}", path.display()))
        })
    }

    /// The entry `name`, or an error naming the file and the accounts it has.
    pub fn account(&self, name: &str, path: &Path) -> Result<&AccountEntry> {
        self.accounts.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.accounts.keys().map(String::as_str).collect();
            let known = if known.is_empty() {
                "it has none".to_string()
            } else {
                format!("it has {}", known.join(", "))
            };
            Error::Config(format!(
                "no account `{}` in {} ({known})",
                printable(name),
                path.display()
            ))
        })
    }

    /// The account to use when none is named: `default_account`, else the only one.
    pub fn default_account(&self) -> Option<&str> {
        match &self.default_account {
            Some(name) => Some(name.as_str()),
            None if self.accounts.len() == 1 => self.accounts.keys().next().map(String::as_str),
            None => None,
        }
    }
}

/// Refuse a file that holds a secret unless only its owner, the user, can read it.
pub fn check_private_file(path: &Path, why: &str) -> Result<()> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(Error::Config(format!(
            "refusing {}: {why} but belongs to uid {}, not to you (uid {me})",
            path.display(),
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Config(format!(
            "refusing {}: {why} but is readable by others (mode {mode:04o}); chmod 600 it",
            path.display()
        )));
    }
    Ok(())
}

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

    #[test]
    fn option_lists_split_on_unescaped_commas() {
        let items = parse_option_list(
            "ro,cache_size=1G,password_command=pass show a\\,b,,x-systemd.automount",
        );
        assert_eq!(
            items,
            vec![
                ("ro".to_string(), None),
                ("cache_size".to_string(), Some("1G".to_string())),
                (
                    "password_command".to_string(),
                    Some("pass show a,b".to_string())
                ),
                ("x-systemd.automount".to_string(), None),
            ]
        );
    }

    #[test]
    fn every_option_applies() {
        let mut s = Settings::default();
        s.set_list("ro,delete=trash,subscribed,idle=no,nonempty,cache-size=1G,connections=2")
            .unwrap();
        s.set_list("timeout=60,dir_ttl=0,allow_other,auth=xoauth2,debug,max_literal=1M")
            .unwrap();
        assert!(s.read_only && s.subscribed_only && !s.idle && s.nonempty && s.allow_other);
        assert_eq!(s.delete, DeleteMode::Trash);
        assert_eq!((s.cache_size, s.connections), (1 << 30, 2));
        assert_eq!(
            (s.timeout, s.dir_ttl),
            (Duration::from_secs(60), Duration::ZERO)
        );
        assert_eq!(s.auth, AuthMethod::XOAuth2);
        s.set("rw", None).unwrap();
        assert!(!s.read_only);
        for spec in OPTIONS {
            let mut s = Settings::default();
            let value = match spec.name {
                "tls_fingerprint" => Some("sha256:".to_string() + &"ab".repeat(32)),
                "delete" => Some("trash".into()),
                "idle" => Some("yes".into()),
                "auth" => Some("plain".into()),
                "timeout" | "connections" | "dir_ttl" => Some("3".into()),
                "cache_size" | "max_literal" => Some("1M".into()),
                _ => spec.value.map(|_| "x".to_string()),
            };
            s.set(spec.name, value.as_deref())
                .unwrap_or_else(|e| panic!("{}: {e}", spec.name));
        }
    }

    #[test]
    fn fstab_generic_options_are_ignored() {
        let mut s = Settings::default();
        s.set_list("defaults,noauto,user,users,_netdev,nofail,rw,dev,nodev,suid,nosuid,exec,noexec,auto,x-systemd.automount,x-systemd.idle-timeout=60,user=alice,comment=x")
            .unwrap();
        assert!(!s.read_only);
    }

    #[test]
    fn bad_options_say_which() {
        let mut s = Settings::default();
        let err = |s: &mut Settings, list: &str| s.set_list(list).unwrap_err().to_string();
        assert!(err(&mut s, "bogus").contains("unknown option `bogus`"));
        assert!(err(&mut s, "timeout").contains("needs a value"));
        assert!(err(&mut s, "ro=1").contains("takes no value"));
        assert!(err(&mut s, "timeout=18446744073709551615").contains("from 1 to 86400"));
        assert!(err(&mut s, "timeout=0").contains("from 1 to 86400"));
        assert!(err(&mut s, "delete=shred").contains("expunge or trash"));
        assert!(err(&mut s, "idle=maybe").contains("yes or no"));
        let e = err(&mut s, "password=hunter2");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn config_file_accounts() {
        let text = r#"
            default_account = "work"
            [accounts.work]
            url = "imaps://me@mail.example.org"
            password_command = "pass show work"
            options = "ro,delete=trash"
            [accounts.home]
            url = "imap://me@home.example.org"
            options = ["cache_size=1G", "subscribed"]
        "#;
        let cfg: ConfigFile = toml::from_str(text).unwrap();
        let path = Path::new("/nonexistent/config.toml");
        let mut s = Settings::default();
        let url = s
            .apply_account(cfg.account("work", path).unwrap(), path)
            .unwrap();
        assert_eq!(url, "imaps://me@mail.example.org");
        assert!(s.read_only && s.delete == DeleteMode::Trash);
        assert_eq!(
            s.secrets.password_command.as_deref(),
            Some("pass show work")
        );
        let mut s = Settings::default();
        s.apply_account(cfg.account("home", path).unwrap(), path)
            .unwrap();
        assert!(s.subscribed_only && s.cache_size == 1 << 30);
        let e = cfg.account("play", path).unwrap_err().to_string();
        assert!(
            e.contains("no account `play`") && e.contains("home, work"),
            "{e}"
        );
        assert_eq!(cfg.default_account(), Some("work"));
        assert!(
            toml::from_str::<ConfigFile>("[accounts.x]\nurl = \"imaps://a@b\"\nbogus = 1\n")
                .is_err()
        );
    }
}
