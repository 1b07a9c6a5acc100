//! The config file of named accounts (TOML), and the check that a file holding a secret is
//! private.

use super::*;

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
