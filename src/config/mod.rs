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

mod file;
mod options;
mod secrets;

pub use file::*;
pub use options::*;
pub use secrets::*;

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

/// How folders show their messages (the filesystem's choice, named here for the options).
pub use crate::fs::layout::Layout;

/// When listings come with attributes (the filesystem's choice, named here for the options).
pub use crate::fs::ReaddirPlus;

/// Options of `imapfs mount` beyond the account: what `mount::run` and the filesystem read.
#[derive(Debug, Clone)]
pub struct MountOptions {
    pub mountpoint: PathBuf,
    pub foreground: bool,
    /// Bytes of message content kept in memory.
    pub cache_size: u64,
    /// `cache_dir=`: where bodies and indexes are kept (`None`: `$XDG_CACHE_HOME/imapfs`).
    pub cache_dir: Option<PathBuf>,
    /// `disk_cache_size=`: most bytes of message bodies kept on disk (0: none).
    pub disk_cache_size: u64,
    /// How long a directory listing is trusted before asking the server again.
    pub dir_ttl: Duration,
    /// Most connections opened to the server at once.
    pub connections: usize,
    pub allow_other: bool,
    /// `ro` / `--read-only`: no write reaches the server (mounted read-only).
    pub read_only: bool,
    /// `delete=expunge|trash`: what `rm` does.
    pub delete: DeleteMode,
    /// `trash=FOLDER`: the trash folder of `delete=trash` (and of removal without UIDPLUS).
    pub trash: Option<String>,
    /// `subscribed`: show only subscribed mailboxes (LSUB / LIST (SUBSCRIBED)).
    pub subscribed_only: bool,
    /// `idle=yes|no`: watch for changes with IDLE (live updates).
    pub idle: bool,
    /// `offline=yes|no`: start from what an earlier mount saved when the server cannot be
    /// reached (read-only until it can), or refuse to mount.
    pub offline: bool,
    /// `layout=eml|maildir` (or `maildir`): how folders show their messages.
    pub layout: Layout,
    /// `readdirplus=always|auto`: when the kernel asks for listings with attributes.
    pub readdirplus: ReaddirPlus,
    /// `nonempty`: allow mounting over a directory that is not empty.
    pub nonempty: bool,
    /// `prefetch=`: folders whose bodies are fetched into the disk cache in the background.
    pub prefetch: Option<crate::store::prefetch::FolderPatterns>,
    /// `prefetch_budget=`: the daily download bound of prefetching.
    pub prefetch_budget: u64,
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
        s.set_list("offline=no").unwrap();
        assert!(!s.offline);
        s.set_list("trash=/INBOX/Trash/").unwrap();
        assert_eq!(s.trash.as_deref(), Some("INBOX/Trash"));
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
                "idle" | "offline" | "compress" => Some("yes".into()),
                "layout" => Some("maildir".into()),
                "readdirplus" => Some("auto".into()),
                "auth" => Some("plain".into()),
                "timeout" | "connections" | "dir_ttl" => Some("3".into()),
                "cache_size" | "max_literal" | "disk_cache_size" | "prefetch_budget" => {
                    Some("1M".into())
                }
                "cache_dir" => Some("/var/cache/x".into()),
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
        assert!(err(&mut s, "trash=/").contains("needs a folder name"));
        let e = err(&mut s, "password=hunter2");
        assert!(!e.contains("hunter2"), "{e}");
        assert!(err(&mut s, "prefetch=").contains("option prefetch: needs folder names"));
        assert!(err(&mut s, "prefetch=INBOX,/").contains("needs folder names"));
        assert!(err(&mut s, "prefetch_budget=lots").contains("option prefetch_budget"));
        assert!(err(&mut s, "prefetch_budget=5T").contains("unknown size unit"));
    }

    #[test]
    fn prefetch_takes_the_folders_after_it() {
        use crate::store::prefetch::FolderPatterns;
        let mut s = Settings::default();
        assert_eq!(s.prefetch_budget, 500 << 20);
        s.set_list("prefetch=INBOX,Work/*,ro,prefetch_budget=1G")
            .unwrap();
        let want = FolderPatterns::parse(["INBOX", "Work/*"]).unwrap();
        assert_eq!(s.prefetch, Some(want));
        assert!(s.read_only);
        assert_eq!(s.prefetch_budget, 1 << 30);
        s.set_list("prefetch=all").unwrap();
        assert_eq!(s.prefetch, Some(FolderPatterns::parse(["*"]).unwrap()));
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
