//! The option table and [`Settings`]: one parser for `-o` lists, flags and the config file.

use super::*;
use crate::store::prefetch::{FolderPatterns, DEFAULT_BUDGET};

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
        name: "cache_dir",
        value: Some("DIR"),
        help: "where message bodies and folder indexes are kept between mounts \
               (default $XDG_CACHE_HOME/imapfs)",
    },
    OptionSpec {
        name: "disk_cache_size",
        value: Some("SIZE"),
        help: "disk space for message bodies kept between mounts (0: none; default 1G)",
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
        name: "trash",
        value: Some("FOLDER"),
        help: "the trash folder for delete=trash (path in the mount, e.g. INBOX/Trash)",
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
        name: "offline",
        value: Some("yes|no"),
        help: "start from the copy saved by an earlier mount when the server cannot be \
               reached (read-only until it can); no: refuse to mount",
    },
    OptionSpec {
        name: "compress",
        value: Some("yes|no"),
        help: "COMPRESS=DEFLATE where the server offers it (fewer bytes on a slow link)",
    },
    OptionSpec {
        name: "layout",
        value: Some("eml|maildir"),
        help: "how folders show messages: NUMBER.eml files, or a Maildir (cur/ new/ tmp/)",
    },
    OptionSpec {
        name: "maildir",
        value: None,
        help: "the Maildir layout (layout=maildir)",
    },
    OptionSpec {
        name: "readdirplus",
        value: Some("always|auto"),
        help: "listings with every entry's attributes always (find, du, ls -l), or as the \
               kernel sees them used (a plain ls of a huge folder gets names alone)",
    },
    OptionSpec {
        name: "prefetch",
        value: Some("FOLDERS|all"),
        help: "fetch these folders' messages (INBOX,Work/*: * matches anything; all: every \
               folder) into the disk cache in the background, for offline use",
    },
    OptionSpec {
        name: "prefetch_budget",
        value: Some("SIZE"),
        help: "prefetch only while the account downloaded less than this today (UTC; \
               default 500M)",
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
    pub cache_dir: Option<PathBuf>,
    pub disk_cache_size: u64,
    pub dir_ttl: Duration,
    pub connections: usize,
    pub allow_other: bool,
    pub read_only: bool,
    pub delete: DeleteMode,
    pub trash: Option<String>,
    pub subscribed_only: bool,
    pub idle: bool,
    pub offline: bool,
    /// `compress=yes|no`: COMPRESS=DEFLATE where offered.
    pub compress: bool,
    pub layout: Layout,
    pub readdirplus: ReaddirPlus,
    pub nonempty: bool,
    pub prefetch: Option<FolderPatterns>,
    pub prefetch_budget: u64,
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
            cache_dir: None,
            disk_cache_size: 1 << 30,
            dir_ttl: Duration::from_secs(10),
            connections: 4,
            allow_other: false,
            read_only: false,
            delete: DeleteMode::Expunge,
            trash: None,
            subscribed_only: false,
            idle: true,
            offline: true,
            compress: true,
            layout: Layout::Eml,
            readdirplus: ReaddirPlus::Always,
            nonempty: false,
            prefetch: None,
            prefetch_budget: DEFAULT_BUDGET,
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
            "cache_dir" => {
                let dir = expand_home(value.trim());
                if !dir.is_absolute() {
                    return Err(bad("needs an absolute path".into()));
                }
                self.cache_dir = Some(dir);
            }
            "disk_cache_size" => self.disk_cache_size = parse_size(value).map_err(bad)?,
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
            "trash" => {
                let folder = value.trim().trim_matches('/');
                if folder.is_empty() {
                    return Err(bad("needs a folder name".into()));
                }
                self.trash = Some(folder.to_string());
            }
            "subscribed" => self.subscribed_only = true,
            "idle" => self.idle = parse_yes_no(value).map_err(bad)?,
            "offline" => self.offline = parse_yes_no(value).map_err(bad)?,
            "compress" => self.compress = parse_yes_no(value).map_err(bad)?,
            "layout" => self.layout = value.parse().map_err(bad)?,
            "maildir" => self.layout = Layout::Maildir,
            "readdirplus" => self.readdirplus = value.parse().map_err(bad)?,
            "nonempty" => self.nonempty = true,
            "prefetch" => {
                self.prefetch = Some(FolderPatterns::parse(value.split(',')).map_err(bad)?);
            }
            "prefetch_budget" => self.prefetch_budget = parse_size(value).map_err(bad)?,
            _ => unreachable!("every OPTIONS entry is handled"),
        }
        Ok(())
    }

    /// Apply a `-o` list: `name[=value]` items separated by commas; `\,` is a comma inside a
    /// value and `\\` a backslash. Items after `prefetch=` that have no `=` and name no
    /// option are more folders of it (`-o prefetch=INBOX,Work/*,ro`).
    pub fn set_list(&mut self, list: &str) -> Result<()> {
        let mut items = parse_option_list(list).into_iter().peekable();
        while let Some((name, value)) = items.next() {
            let mut value = value;
            if name.trim().replace('-', "_") == "prefetch" {
                while let Some((more, None)) = items.peek() {
                    let key = more.trim().replace('-', "_");
                    if OPTIONS.iter().any(|o| o.name == key) || is_generic_mount_option(&key) {
                        break;
                    }
                    let folder = more.clone();
                    items.next();
                    if let Some(v) = value.as_mut() {
                        v.push(',');
                        v.push_str(&folder);
                    }
                }
            }
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
            cache_dir: self.cache_dir.clone(),
            disk_cache_size: self.disk_cache_size,
            dir_ttl: self.dir_ttl,
            connections: self.connections,
            allow_other: self.allow_other,
            read_only: self.read_only,
            delete: self.delete,
            trash: self.trash.clone(),
            subscribed_only: self.subscribed_only,
            idle: self.idle,
            offline: self.offline,
            layout: self.layout,
            readdirplus: self.readdirplus,
            nonempty: self.nonempty,
            prefetch: self.prefetch.clone(),
            prefetch_budget: self.prefetch_budget,
        }
    }
}

pub(super) fn is_generic_mount_option(key: &str) -> bool {
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

pub(super) fn parse_number(value: &str, min: u64, max: u64) -> std::result::Result<u64, String> {
    match value.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{}` is not a whole number from {min} to {max}",
            printable(value)
        )),
    }
}

pub(super) fn parse_yes_no(value: &str) -> std::result::Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "on" | "true" | "1" => Ok(true),
        "no" | "off" | "false" | "0" => Ok(false),
        _ => Err(format!("`{}` is not yes or no", printable(value))),
    }
}

/// A value shown in an error: control characters dropped, length bounded.
pub(super) fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(80).collect()
}

/// `~/x` is `$HOME/x` (fstab and the config file have no shell to expand it).
pub(super) fn expand_home(value: &str) -> PathBuf {
    match (value.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(value),
    }
}
