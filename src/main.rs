//! The `imapfs` command line: parse arguments, build the configuration, run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use imapfs::config::{parse_account_url, parse_size, read_password, MountOptions, PasswordSource};
use imapfs::imap::auth::{AuthMethod, ServerConfig};
use imapfs::imap::codec::Limits;
use imapfs::imap::session::Timeouts;
use imapfs::imap::transport::tls_config;
use imapfs::Error;

#[derive(Parser)]
#[command(
    name = "imapfs",
    version,
    about = "Mount an IMAP mail account as a filesystem"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Mount an account: imapfs mount imaps://user@host[:port] MOUNTPOINT
    ///
    /// The password comes from IMAPFS_PASSWORD, --password-command, or a prompt.
    Mount {
        /// imaps://user@host[:port] (TLS) or imap://user@host[:port] (STARTTLS)
        url: String,
        mountpoint: PathBuf,
        /// Trust only the CA certificates in this PEM file (instead of the system's)
        #[arg(long, value_name = "FILE")]
        ca_file: Option<PathBuf>,
        /// Memory for cached message content, e.g. 256M or 1G
        #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = parse_size)]
        cache_size: u64,
        /// Stay in the foreground (logs go to stderr)
        #[arg(short, long)]
        foreground: bool,
        /// Seconds without an answer from the server before an operation fails
        #[arg(long, value_name = "SECS", default_value_t = 30)]
        timeout: u64,
        /// Seconds a directory listing is trusted before asking the server again
        #[arg(long, value_name = "SECS", default_value_t = 10)]
        dir_ttl: u64,
        /// Most connections to open to the server
        #[arg(long, value_name = "N", default_value_t = 4)]
        connections: usize,
        /// Run this shell command and use the first line it prints as the password
        #[arg(long, value_name = "CMD")]
        password_command: Option<String>,
        /// Let other users access the mount (needs user_allow_other in /etc/fuse.conf)
        #[arg(long)]
        allow_other: bool,
        /// Login mechanism: auto, login, plain, cram-md5, xoauth2 or oauthbearer (for the
        /// OAuth ones the password is the access token, e.g. from --password-command)
        #[arg(long, value_name = "MECH", default_value = "auto", value_parser = parse_auth)]
        auth: AuthMethod,
        /// Speak IMAP over the stdin/stdout of this shell command instead of a TCP
        /// connection, e.g. 'ssh mailhost /usr/lib/dovecot/imap' (a PREAUTH tunnel)
        #[arg(long, value_name = "CMD")]
        tunnel: Option<String>,
        /// Largest literal accepted from the server (a bigger one is refused and the
        /// connection dropped), e.g. 64M
        #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size)]
        max_literal: u64,
        /// Append log lines to this file (they go to stderr otherwise, which a daemon has
        /// closed); the level comes from RUST_LOG (error, warn, info, debug, trace)
        #[arg(long, value_name = "FILE")]
        log_file: Option<PathBuf>,
    },
    /// Unmount a mount point (same as fusermount3 -u)
    Umount { mountpoint: PathBuf },
}

fn main() -> ExitCode {
    limit_malloc_retention();
    let cli = Cli::parse();
    let log_file = match &cli.command {
        Cmd::Mount { log_file, .. } => log_file.clone(),
        Cmd::Umount { .. } => None,
    };
    if let Err(e) = init_logging(log_file.as_deref()) {
        eprintln!("imapfs: {e}");
        return ExitCode::from(e.exit_code() as u8);
    }
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imapfs: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// Log to stderr, or to `file` (which survives daemonising). Level from RUST_LOG, default warn.
fn init_logging(file: Option<&std::path::Path>) -> Result<(), Error> {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"));
    builder.format_timestamp_millis();
    if let Some(path) = file {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::Config(format!("cannot open log file {}: {e}", path.display())))?;
        builder.target(env_logger::Target::Pipe(Box::new(f)));
    }
    builder.init();
    Ok(())
}

/// Keep the memory promise of --cache-size. glibc raises its mmap threshold after large
/// blocks are freed, so later 1 MiB blocks come from heap arenas (one per thread) that keep
/// freed memory: reading a 50 MB message with a 16 MB cache peaked at 70 MB. A fixed threshold
/// keeps big blocks mmapped, so freeing one returns it to the system.
fn limit_malloc_retention() {
    // SAFETY: mallopt only tunes the allocator; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

fn parse_auth(s: &str) -> Result<AuthMethod, String> {
    AuthMethod::parse(s).ok_or_else(|| {
        format!("unknown mechanism `{s}` (auto, login, plain, cram-md5, xoauth2, oauthbearer)")
    })
}

fn run(cmd: Cmd) -> Result<(), Error> {
    match cmd {
        Cmd::Mount {
            url,
            mountpoint,
            ca_file,
            cache_size,
            foreground,
            timeout,
            dir_ttl,
            connections,
            password_command,
            allow_other,
            auth,
            tunnel,
            log_file: _,
            max_literal,
        } => {
            let account = parse_account_url(&url)?;
            let tls = tls_config(ca_file.as_deref())?;
            let source = match password_command {
                Some(c) => PasswordSource::Command(c),
                None => PasswordSource::EnvOrPrompt,
            };
            // A PREAUTH tunnel needs no password; ask for one only if a password source is
            // there or no tunnel is used (a tunnel that does want one gets an empty one).
            let password = if tunnel.is_some()
                && matches!(source, PasswordSource::EnvOrPrompt)
                && std::env::var_os("IMAPFS_PASSWORD").is_none()
            {
                imapfs::imap::auth::Secret::default()
            } else {
                read_password(&source, &account.user, &account.host)?
            };
            let timeouts = Timeouts {
                inactivity: Duration::from_secs(timeout.max(1)),
                command: Duration::from_secs(timeout.max(1) * 10),
            };
            let server = ServerConfig {
                host: account.host,
                port: account.port,
                security: account.security,
                tls,
                user: account.user,
                password,
                timeouts,
                limits: Limits {
                    max_literal,
                    ..Limits::default()
                },
                auth,
                tunnel,
            };
            let opts = MountOptions {
                mountpoint,
                foreground,
                cache_size,
                dir_ttl: Duration::from_secs(dir_ttl),
                connections: connections.max(1),
                allow_other,
            };
            imapfs::mount::run(server, opts)
        }
        Cmd::Umount { mountpoint } => {
            let status = std::process::Command::new("fusermount3")
                .arg("-u")
                .arg(&mountpoint)
                .status()
                .map_err(|e| Error::Config(format!("cannot run fusermount3: {e}")))?;
            if status.success() {
                Ok(())
            } else {
                Err(Error::Config(format!(
                    "fusermount3 -u {} failed",
                    mountpoint.display()
                )))
            }
        }
    }
}
