//! The `imapfs` command: parse the command line (src/cli.rs), run it, print what it found and
//! exit with the code [`Error::exit_code`] gives (sysexits.h). Every failure is one line on
//! stderr, `imapfs: ...`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use imapfs::check::{Report, USED_EXTENSIONS};
use imapfs::cli::{helper_form, Cli, Cmd};
use imapfs::config::Settings;
use imapfs::imap::auth::Security;
use imapfs::Error;

/// The extended attribute of a mount's root that holds its statistics.
const STATS_XATTR: &str = "user.imapfs.stats";

fn main() -> ExitCode {
    limit_malloc_retention();
    let cli = match Cli::try_parse_from(helper_form(std::env::args_os().collect())) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and succeed; a usage error is EX_USAGE.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 64 } else { 0 });
        }
    };
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("imapfs: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn run(cmd: Cmd) -> Result<ExitCode, Error> {
    match cmd {
        Cmd::Mount(args) => {
            let resolved = args.resolve()?;
            init_logging(&resolved.settings)?;
            let opts = resolved.settings.mount_options(args.mountpoint);
            imapfs::mount::check_mountpoint(&opts.mountpoint, opts.nonempty)?;
            warn_if_insecure(resolved.url.security);
            let credential = resolved.credential()?;
            let server = resolved.server_config(credential)?;
            spawn_heap_trimmer();
            imapfs::mount::run(server, opts)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Check(args) => {
            let resolved = args.resolve()?;
            init_logging(&resolved.settings)?;
            warn_if_insecure(resolved.url.security);
            let credential = resolved.credential()?;
            let server = resolved.server_config(credential)?;
            let report = imapfs::check::check(&server)?;
            let where_ = format!(
                "{}:{} ({}) as {}",
                server.host,
                server.port,
                match server.security {
                    Security::Tls => "TLS",
                    Security::StartTls => "STARTTLS",
                    _ => "no TLS",
                },
                server.user
            );
            print_report(&where_, &report);
            if report.usable() {
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("imapfs: the account is not usable: INBOX does not answer STATUS");
                Ok(ExitCode::from(76))
            }
        }
        Cmd::Umount { mountpoint } => {
            let status = std::process::Command::new("fusermount3")
                .arg("-u")
                .arg(&mountpoint)
                .status()
                .map_err(|e| Error::Config(format!("cannot run fusermount3: {e}")))?;
            if status.success() {
                Ok(ExitCode::SUCCESS)
            } else {
                Err(Error::Config(format!(
                    "fusermount3 -u {} failed",
                    mountpoint.display()
                )))
            }
        }
        Cmd::Status { mountpoint } => {
            let stats = read_stats(&mountpoint)?;
            let mut out = std::io::stdout().lock();
            let width = stats.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            for (key, value) in stats {
                let _ = writeln!(out, "{key:width$}  {value}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Cache(args) => {
            let (dir, account) = args.resolve()?;
            let account = account.as_deref();
            if args.clear {
                for a in imapfs::cache_report::clear(&dir, account)? {
                    println!(
                        "{}: removed {} messages ({} bytes) and {} folder indexes",
                        a.account, a.messages, a.body_bytes, a.indexes
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            let found = imapfs::cache_report::report(&dir, account)?;
            if found.is_empty() {
                println!("nothing cached in {}", dir.display());
            }
            for a in found {
                print_cache(&a, args.stats);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "imapfs", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_cache(a: &imapfs::cache_report::AccountCache, stats: bool) {
    let mut out = std::io::stdout().lock();
    let rate = a
        .hit_rate()
        .map_or_else(|| "none yet".to_string(), |r| format!("{r:.1}%"));
    let _ = writeln!(out, "{}  ({})", a.account, a.dir.display());
    let _ = writeln!(
        out,
        "  bodies:   {} messages in {} folders, {} files, {} bytes",
        a.messages, a.folders, a.entries, a.body_bytes
    );
    let _ = writeln!(
        out,
        "  indexes:  {} folders, {} bytes",
        a.indexes, a.index_bytes
    );
    let _ = writeln!(out, "  hit rate: {rate} (all mounts so far)");
    if stats {
        let t = &a.totals;
        for (k, v) in [
            ("hits", t.hits),
            ("hit_bytes", t.hit_bytes),
            ("misses", t.misses),
            ("writes", t.writes),
            ("write_bytes", t.write_bytes),
            ("evicted", t.evicted),
            ("discarded", t.discarded),
        ] {
            let _ = writeln!(out, "  {k:12}{v}");
        }
    }
}

fn warn_if_insecure(security: Security) {
    if security == Security::Plaintext {
        eprintln!(
            "imapfs: warning: --insecure: no TLS, the password and the mail cross the network \
             in clear text"
        );
    }
}

fn print_report(where_: &str, r: &Report) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "server:        {where_}");
    if let Some(g) = &r.greeting {
        let _ = writeln!(out, "greeting:      {g}");
    }
    let _ = writeln!(out, "capabilities:  {}", r.capabilities.join(" "));
    let profile = r.profile();
    let _ = writeln!(out, "profile:       {}", profile.name());
    for note in profile.notes(&r.capabilities) {
        let _ = writeln!(out, "  does:        {note}");
    }
    if r.quota.is_empty() {
        let what = if r.has("QUOTA") {
            "none set"
        } else {
            "not offered"
        };
        let _ = writeln!(out, "quota:         {what}");
    }
    for (root, resources) in &r.quota {
        let parts: Vec<String> = resources
            .iter()
            .map(|q| match q.name.to_ascii_uppercase().as_str() {
                "STORAGE" => format!("STORAGE {} of {} KiB", q.usage, q.limit),
                _ => format!("{} {} of {}", q.name, q.usage, q.limit),
            })
            .collect();
        let root = if root.is_empty() { "\"\"" } else { root };
        let _ = writeln!(out, "quota:         {root}: {}", parts.join(", "));
    }
    let _ = writeln!(
        out,
        "folders:       {} ({} with messages)",
        r.folders, r.selectable
    );
    let _ = writeln!(out, "messages:      {}", r.messages);
    for (name, why) in &r.status_failures {
        let _ = writeln!(out, "unreadable:    {name}: {why}");
    }
    for (cap, what) in USED_EXTENSIONS {
        let used = if r.has(cap) { "yes" } else { "no " };
        let _ = writeln!(out, "uses {cap:10} {used}  {what}");
    }
    let usable = if r.usable() { "yes" } else { "no" };
    let _ = writeln!(out, "usable:        {usable}");
}

/// The `key=value` lines of the mount root's statistics attribute.
fn read_stats(mountpoint: &Path) -> Result<Vec<(String, String)>, Error> {
    use std::os::unix::ffi::OsStrExt;
    let shown = mountpoint.display();
    let path = std::ffi::CString::new(mountpoint.as_os_str().as_bytes())
        .map_err(|_| Error::Config(format!("{shown}: a path with a NUL byte")))?;
    let name = std::ffi::CString::new(STATS_XATTR).unwrap_or_default();
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: valid C strings and a buffer of the given length.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => Error::Config(format!(
                "{shown} has no imapfs statistics (not an imapfs mount, or an imapfs without them)"
            )),
            _ => Error::Config(format!("{shown}: {e}")),
        });
    }
    buf.truncate(n as usize);
    Ok(String::from_utf8_lossy(&buf)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
            None => (l.trim().to_string(), String::new()),
        })
        .collect())
}

/// Log to stderr, or to the log file (created 0600; it survives daemonising). The level comes
/// from RUST_LOG, else `debug` with --debug, else `warn`.
fn init_logging(settings: &Settings) -> Result<(), Error> {
    let default = if settings.debug { "debug" } else { "warn" };
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default));
    builder.format_timestamp_millis();
    if let Some(path) = &settings.log_file {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
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

/// How often the mount gives freed heap memory back to the system.
const HEAP_TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// A thread that gives freed heap memory back to the system every [`HEAP_TRIM_EVERY`]. glibc
/// returns only the top of each arena by itself; blocks, responses and listings freed in any
/// order by many threads left 30-40 MiB of free memory resident after a burst of reads
/// (issue 17, `scripts/bench_memory.sh`). `malloc_trim` walks only the free chunks.
fn spawn_heap_trimmer() {
    let spawned = std::thread::Builder::new()
        .name("heap-trim".into())
        .spawn(|| loop {
            std::thread::sleep(HEAP_TRIM_EVERY);
            // SAFETY: malloc_trim only returns free pages; it is thread-safe.
            unsafe { libc::malloc_trim(0) };
        });
    if let Err(e) = spawned {
        log::warn!("no heap trimming thread: {e}");
    }
}
