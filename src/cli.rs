//! The command line's shape: subcommands and flags (clap), the mount helper form, and how
//! flags, `-o` lists and a config-file account become one [`Settings`] and a
//! [`ServerConfig`].
//!
//! Every flag of `mount` and `check` is also an option name ([`crate::config::OPTIONS`]):
//! `--cache-size 1G` is `-o cache_size=1G`. A flag is turned into that pair and goes through
//! [`Settings::set`], so that a value is checked in one place whichever way it came. `main.rs`
//! runs what is parsed here and prints; nothing here prints.
//!
//! The mount helper form is what `mount -t fuse.imapfs` (through mount.fuse3) and fstab run:
//! `imapfs SOURCE MOUNTPOINT -o OPTIONS`; [`helper_form`] turns it into `imapfs mount ...`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{config_path, parse_account_url, AccountUrl, ConfigFile, Settings};
use crate::error::{Error, Result};
use crate::imap::auth::{Credential, Security, ServerConfig};
use crate::imap::codec::Limits;
use crate::imap::session::Timeouts;
use crate::imap::transport::{tls_config, tls_config_pinned};

/// `imapfs`: see `imapfs --help` and the man page imapfs(1).
#[derive(Debug, Parser)]
#[command(
    name = "imapfs",
    version,
    about = "Mount an IMAP mail account as a filesystem",
    after_help = "Also: imapfs SOURCE MOUNTPOINT [-o OPTIONS] (the form mount -t fuse.imapfs and \
                  fstab use) is imapfs mount SOURCE MOUNTPOINT -o OPTIONS.\n\
                  Accounts live in $XDG_CONFIG_HOME/imapfs/config.toml \
                  (~/.config/imapfs/config.toml). See imapfs(1)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

// One value per process: the size of the mount's many options costs nothing. The doc comments
// are clap's help text, where `[:PORT]` means optional, not a link.
#[allow(clippy::large_enum_variant, rustdoc::broken_intra_doc_links)]
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Mount an account: imapfs mount ACCOUNT|imaps://USER@HOST[:PORT] MOUNTPOINT [-o OPTIONS]
    ///
    /// The password comes from --password-command, --password-file, the account's config,
    /// IMAPFS_PASSWORD, or a prompt, in that order; or an OAuth2 token from
    /// --oauth2-token-command.
    Mount(MountArgs),
    /// Unmount a mount point (same as fusermount3 -u)
    Umount { mountpoint: PathBuf },
    /// Connect and log in, then report what the server offers and what imapfs will use
    ///
    /// Prints the greeting, capabilities, quota, the number of folders and messages, and
    /// the extensions imapfs uses. Exits 0 only if the account is usable.
    Check(CheckArgs),
    /// Show the statistics of a running mount (the user.imapfs.stats attribute of its root)
    Status { mountpoint: PathBuf },
    /// What the cache directory keeps per account (bodies, indexes, hit rates), or clear it
    Cache(CacheArgs),
    /// Print a shell completion script: imapfs completions bash|zsh|fish
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `imapfs mount`.
#[allow(rustdoc::broken_intra_doc_links)] // `[:PORT]` in clap's help text
#[derive(Debug, Args)]
pub struct MountArgs {
    /// An account name from the config file, or imaps://USER@HOST[:PORT] (TLS) or
    /// imap://USER@HOST[:PORT] (STARTTLS)
    pub source: String,
    pub mountpoint: PathBuf,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Stay in the foreground (logs go to stderr)
    #[arg(short, long)]
    pub foreground: bool,
    /// Memory for cached message content, e.g. 256M or 1G [default: 256M]
    #[arg(long, value_name = "SIZE")]
    pub cache_size: Option<String>,
    /// Where message bodies and folder indexes are kept between mounts
    /// [default: $XDG_CACHE_HOME/imapfs]
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<String>,
    /// Disk space for message bodies kept between mounts, e.g. 1G; 0 keeps none
    /// [default: 1G]
    #[arg(long, value_name = "SIZE")]
    pub disk_cache_size: Option<String>,
    /// Seconds a folder listing is trusted before asking the server again [default: 10]
    #[arg(long, value_name = "SECS")]
    pub dir_ttl: Option<String>,
    /// Most connections to open to the server [default: 4]
    #[arg(long, value_name = "N")]
    pub connections: Option<String>,
    /// Let other users access the mount (needs user_allow_other in /etc/fuse.conf)
    #[arg(long)]
    pub allow_other: bool,
    /// Never change anything on the server (also -o ro)
    #[arg(long)]
    pub read_only: bool,
    /// What rm does: expunge the message, or move it to Trash [default: expunge]
    #[arg(long, value_name = "expunge|trash")]
    pub delete: Option<String>,
    /// The trash folder for --delete trash, as a path in the mount (INBOX/Trash) [default: the
    /// \Trash special-use folder, else a folder named Trash at the top or under INBOX]
    #[arg(long, value_name = "FOLDER")]
    pub trash: Option<String>,
    /// Show only subscribed folders
    #[arg(long)]
    pub subscribed: bool,
    /// Live updates with IDLE: yes or no [default: yes]
    #[arg(long, value_name = "yes|no")]
    pub idle: Option<String>,
    /// When the server cannot be reached: start from the copy an earlier mount saved,
    /// read-only until it can (yes), or refuse to mount (no) [default: yes]
    #[arg(long, value_name = "yes|no")]
    pub offline: Option<String>,
    /// How folders show messages: NUMBER.eml files, or a Maildir with cur/ new/ tmp/ for
    /// notmuch, mutt, mblaze, mu and aerc (also -o maildir) [default: eml]
    #[arg(long, value_name = "eml|maildir")]
    pub layout: Option<String>,
    /// Allow a mount point that is not empty
    #[arg(long)]
    pub nonempty: bool,
}

/// `imapfs check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// An account name from the config file, or an account URL [default: the config's
    /// default_account, or its only account]
    pub source: Option<String>,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// `imapfs cache`.
#[derive(Debug, Args)]
pub struct CacheArgs {
    /// Only this account: a config file account name or an account URL [default: every
    /// account in the cache directory]
    #[arg(long)]
    pub account: Option<String>,
    /// The cache directory [default: the account's cache_dir, else $XDG_CACHE_HOME/imapfs]
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Delete the bodies and indexes kept (nothing may be mounted from them meanwhile)
    #[arg(long, conflicts_with = "stats")]
    pub clear: bool,
    /// Also print the counters summed over every mount
    #[arg(long)]
    pub stats: bool,
}

impl CacheArgs {
    /// The cache directory, and the account (`user@host:port`) if one was named.
    pub fn resolve(&self) -> Result<(PathBuf, Option<String>)> {
        let (settings, account) = match &self.account {
            Some(a) => {
                let r = resolve(Some(a), &[], &[])?;
                let key =
                    crate::store::PersistOptions::account_key(&r.url.user, &r.url.host, r.url.port);
                (r.settings, Some(key))
            }
            None => (Settings::default(), None),
        };
        let dir = self
            .cache_dir
            .clone()
            .or(settings.cache_dir)
            .or_else(crate::store::PersistOptions::default_dir)
            .ok_or_else(|| {
                Error::Config("no cache directory: set --cache-dir, XDG_CACHE_HOME or HOME".into())
            })?;
        Ok((dir, account))
    }
}

/// What `mount` and `check` share: how to reach the server and log in, and logging.
#[derive(Debug, Args)]
pub struct ConnectionArgs {
    /// Options, comma-separated: -o ro,cache_size=1G,delete=trash (repeatable; every flag
    /// is an option: --cache-size 1G is -o cache_size=1G; see imapfs(1))
    #[arg(short = 'o', value_name = "OPT[=VAL],...")]
    pub options: Vec<String>,
    /// Trust only the CA certificates in this PEM file (instead of the system's)
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<String>,
    /// Accept exactly the server certificate with this SHA-256 fingerprint
    #[arg(long, value_name = "sha256:HEX")]
    pub tls_fingerprint: Option<String>,
    /// With imap:// only: log in without TLS (the password and mail cross the network in
    /// clear text)
    #[arg(long)]
    pub insecure: bool,
    /// Run this shell command and use the first line it prints as the password
    #[arg(long, value_name = "CMD")]
    pub password_command: Option<String>,
    /// Read the password from the first line of this file (mode 0600, owned by you)
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<String>,
    /// Run this shell command for an OAuth2 access token (first line), again for every new
    /// connection; login with XOAUTH2 or OAUTHBEARER
    #[arg(long, value_name = "CMD")]
    pub oauth2_token_command: Option<String>,
    /// Login mechanism: auto, login, plain, cram-md5, xoauth2 or oauthbearer [default: auto]
    #[arg(long, value_name = "MECH")]
    pub auth: Option<String>,
    /// Speak IMAP over the stdin/stdout of this shell command instead of a TCP connection,
    /// e.g. 'ssh mailhost /usr/lib/dovecot/imap' (a PREAUTH tunnel)
    #[arg(long, value_name = "CMD")]
    pub tunnel: Option<String>,
    /// Seconds without an answer from the server before an operation fails (1-86400)
    /// [default: 30]
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<String>,
    /// Largest literal accepted from the server, e.g. 64M [default: 64M]
    #[arg(long, value_name = "SIZE")]
    pub max_literal: Option<String>,
    /// Append log lines to this file (created with mode 0600)
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<String>,
    /// Log at debug level, like RUST_LOG=debug (secrets are never logged)
    #[arg(long)]
    pub debug: bool,
}

/// The subcommand names: a first argument that is none of them (nor an option) starts the
/// mount helper form.
const SUBCOMMANDS: &[&str] = &[
    "mount",
    "umount",
    "check",
    "status",
    "cache",
    "completions",
    "help",
];

/// Turn the mount helper form `imapfs SOURCE MOUNTPOINT [-o OPTS]` into
/// `imapfs mount SOURCE MOUNTPOINT [-o OPTS]`; any other command line is returned as is.
pub fn helper_form(mut args: Vec<OsString>) -> Vec<OsString> {
    let starts_helper_form = args
        .get(1)
        .and_then(|a| a.to_str())
        .is_some_and(|first| !first.starts_with('-') && !SUBCOMMANDS.contains(&first))
        || args.get(1).is_some_and(|a| a.to_str().is_none());
    if starts_helper_form {
        args.insert(1, OsString::from("mount"));
    }
    args
}

/// A resolved account: where it is and every setting.
#[derive(Debug)]
pub struct Resolved {
    pub url: AccountUrl,
    pub settings: Settings,
}

impl ConnectionArgs {
    /// The flags as option pairs, in the order [`Settings::set`] applies them.
    fn pairs(&self) -> Vec<(&'static str, Option<String>)> {
        let mut out = Vec::new();
        let valued = [
            ("ca_file", &self.ca_file),
            ("tls_fingerprint", &self.tls_fingerprint),
            ("password_command", &self.password_command),
            ("password_file", &self.password_file),
            ("oauth2_token_command", &self.oauth2_token_command),
            ("auth", &self.auth),
            ("tunnel", &self.tunnel),
            ("timeout", &self.timeout),
            ("max_literal", &self.max_literal),
            ("log_file", &self.log_file),
        ];
        for (name, value) in valued {
            if let Some(v) = value {
                out.push((name, Some(v.clone())));
            }
        }
        for (name, on) in [("insecure", self.insecure), ("debug", self.debug)] {
            if on {
                out.push((name, None));
            }
        }
        out
    }
}

impl MountArgs {
    fn pairs(&self) -> Vec<(&'static str, Option<String>)> {
        let mut out = self.connection.pairs();
        let valued = [
            ("cache_size", &self.cache_size),
            ("cache_dir", &self.cache_dir),
            ("disk_cache_size", &self.disk_cache_size),
            ("dir_ttl", &self.dir_ttl),
            ("connections", &self.connections),
            ("delete", &self.delete),
            ("trash", &self.trash),
            ("idle", &self.idle),
            ("offline", &self.offline),
            ("layout", &self.layout),
        ];
        for (name, value) in valued {
            if let Some(v) = value {
                out.push((name, Some(v.clone())));
            }
        }
        let switches = [
            ("foreground", self.foreground),
            ("allow_other", self.allow_other),
            ("ro", self.read_only),
            ("subscribed", self.subscribed),
            ("nonempty", self.nonempty),
        ];
        for (name, on) in switches {
            if on {
                out.push((name, None));
            }
        }
        out
    }

    /// Resolve the source, the config file's account, `-o` lists and flags.
    pub fn resolve(&self) -> Result<Resolved> {
        resolve(Some(&self.source), &self.connection.options, &self.pairs())
    }
}

impl CheckArgs {
    pub fn resolve(&self) -> Result<Resolved> {
        resolve(
            self.source.as_deref(),
            &self.connection.options,
            &self.connection.pairs(),
        )
    }
}

/// Layer the settings: defaults, the account (if the source names one, or `account=`),
/// `-o` lists, then flags. The command line's secret sources replace the account's.
fn resolve(
    source: Option<&str>,
    option_lists: &[String],
    flags: &[(&'static str, Option<String>)],
) -> Result<Resolved> {
    let mut listed = Vec::new();
    for list in option_lists {
        listed.extend(crate::config::parse_option_list(list));
    }
    let account_option = listed
        .iter()
        .rev()
        .find(|(name, _)| name.replace('-', "_") == "account")
        .and_then(|(_, value)| value.clone());
    // `account=` wins over the source (fstab's first field is then free, e.g. `imapfs`).
    let (account, url) = match (account_option, source) {
        (Some(name), _) => (Some(name), None),
        (None, Some(s)) if s.contains("://") => (None, Some(s.to_string())),
        (None, Some(name)) => (Some(name.to_string()), None),
        (None, None) => (None, None),
    };
    let mut settings = Settings::default();
    let url = match (account, url) {
        (_, Some(url)) => url,
        (account, None) => {
            let path = config_path().ok_or_else(|| {
                Error::Config("no config file: neither XDG_CONFIG_HOME nor HOME is set".into())
            })?;
            if let (Some(name), false) = (&account, path.exists()) {
                return Err(Error::Config(format!(
                    "no account `{name}`: there is no config file {}",
                    path.display()
                )));
            }
            let config = ConfigFile::load(&path)?;
            let name = match account {
                Some(name) => name,
                None => config
                    .default_account()
                    .map(str::to_string)
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "name an account or an imaps:// URL (no default_account in {})",
                            path.display()
                        ))
                    })?,
            };
            let entry = config.account(&name, &path)?;
            settings.account = Some(name);
            settings.apply_account(entry, &path)?
        }
    };
    let account_secrets = std::mem::take(&mut settings.secrets);
    for (name, value) in &listed {
        settings.set(name, value.as_deref())?;
    }
    for (name, value) in flags {
        settings.set(name, value.as_deref())?;
    }
    if settings.secrets.is_empty() {
        settings.secrets = account_secrets;
    }
    let mut url = parse_account_url(&url)?;
    if settings.insecure {
        if url.security != Security::StartTls {
            return Err(Error::Config(
                "--insecure works only with imap:// (imaps:// is always TLS)".into(),
            ));
        }
        url.security = Security::Plaintext;
    }
    if settings.tls_fingerprint.is_some() && settings.ca_file.is_some() {
        return Err(Error::Config(
            "give --ca-file or --tls-fingerprint, not both (a pinned certificate needs no CA)"
                .into(),
        ));
    }
    Ok(Resolved { url, settings })
}

impl Resolved {
    /// The engine's configuration, with `credential` (see [`crate::config::SecretSources`]).
    pub fn server_config(&self, credential: Credential) -> Result<ServerConfig> {
        let s = &self.settings;
        let tls = match s.tls_fingerprint {
            Some(fingerprint) => tls_config_pinned(fingerprint)?,
            None => tls_config(s.ca_file.as_deref())?,
        };
        // Both bounded by MAX_TIMEOUT_SECS, so the product cannot overflow.
        let timeouts = Timeouts {
            inactivity: s.timeout,
            command: s.timeout.saturating_mul(10),
        };
        Ok(ServerConfig {
            host: self.url.host.clone(),
            port: self.url.port,
            security: self.url.security,
            tls,
            user: self.url.user.clone(),
            credential,
            timeouts,
            limits: Limits {
                max_literal: s.max_literal,
                ..Limits::default()
            },
            auth: s.auth,
            tunnel: s.tunnel.clone(),
            compress: s.compress,
        })
    }

    /// Read the credential (prompting if need be).
    pub fn credential(&self) -> Result<Credential> {
        self.settings.secrets.resolve(
            &self.url.user,
            &self.url.host,
            self.settings.tunnel.is_some(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn helper_form_becomes_mount() {
        assert_eq!(
            helper_form(os(&["imapfs", "work", "/mnt", "-o", "ro"])),
            os(&["imapfs", "mount", "work", "/mnt", "-o", "ro"])
        );
        for unchanged in [
            &["imapfs", "mount", "work", "/mnt"][..],
            &["imapfs", "--help"],
            &["imapfs", "check"],
            &["imapfs"],
        ] {
            assert_eq!(helper_form(os(unchanged)), os(unchanged));
        }
    }

    #[test]
    fn mount_takes_o_lists_and_flags() {
        let cli = Cli::try_parse_from(helper_form(os(&[
            "imapfs",
            "imaps://me@example.org",
            "/mnt",
            "-o",
            "ro,delete=trash",
            "-o",
            "noauto,user,_netdev,cache_size=1G",
            "--connections",
            "2",
        ])))
        .unwrap();
        let Cmd::Mount(args) = cli.command else {
            panic!("not mount")
        };
        let r = args.resolve().unwrap();
        assert!(r.settings.read_only);
        assert_eq!(r.settings.cache_size, 1 << 30);
        assert_eq!(r.settings.connections, 2);
        assert_eq!(r.url.host, "example.org");
    }

    #[test]
    fn insecure_only_with_imap() {
        let parse = |url: &str| {
            let cli =
                Cli::try_parse_from(os(&["imapfs", "mount", url, "/mnt", "--insecure"])).unwrap();
            let Cmd::Mount(args) = cli.command else {
                panic!("not mount")
            };
            args.resolve()
        };
        assert_eq!(
            parse("imap://me@h").unwrap().url.security,
            Security::Plaintext
        );
        assert!(parse("imaps://me@h").is_err());
    }
}
