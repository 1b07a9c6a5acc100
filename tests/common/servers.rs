//! Real IMAP servers other than Dovecot, for compatibility tests: GNU mailutils `imap4d`,
//! Courier-IMAP and Cyrus IMAP, each a throwaway instance on a random loopback port.
//!
//! - [`ServerKind`]: which server, and what a client must know to address its folders (the
//!   personal namespace prefix and the hierarchy delimiter).
//! - [`ImapServer::start`]: a fresh instance holding a [`Seed`], or [`Unavailable`] saying why
//!   this machine cannot run that server (not installed, not root). `Drop` kills the instance
//!   and removes its directory, also when the test panics.
//! - The oracle (`ImapServer::oracle_*`): a raw IMAP client in Python (sockets, no imaplib
//!   state machine, nothing shared with `src/`) for what the server really holds, and
//!   [`ImapServer::oracle_session`] for exact transcripts of arbitrary commands, which is how the
//!   quirk tests of tests/compat.rs observe a server.
//!
//! How a server runs. Their Debian packages conflict with `dovecot-imapd`, so scripts/servers.sh
//! unpacks them with `dpkg -x` into `$IMAPFS_TEST_SERVERS_DIR` (default
//! `/var/cache/imapfs-test-servers/<kind>`). An instance is `unshare --mount --pid --fork`
//! running a generated `start.sh` that, inside those private namespaces only, overlays the
//! unpacked tree on `/usr` and `/etc` (so every binary finds its libraries, modules and compiled-in
//! paths), overlays the instance's own `passwd`/`shadow`/`group` (the test user `tester`, and
//! Cyrus's `cyrus` user) and configuration files on `/etc`, mounts a tmpfs on `/run`, and execs
//! the server in the foreground. Nothing is visible outside the namespaces, and killing the
//! namespace's init (the server) from outside ends every process of the instance. This needs
//! root, as the whole end-to-end suite does.
//!
//! Seeding goes through the server itself: after start, one oracle run CREATEs every seed folder
//! and APPENDs every message with its flags and INTERNALDATE, and checks that UIDs are 1..n in
//! seed order, as with the Dovecot harness. mailutils is the exception: its APPEND drops flags
//! and dates, so its seed is written as maildir files before the start (INTERNALDATE is then
//! the Date header: mailutils takes it from there). Seed folder names use `.` as delimiter and no
//! namespace prefix; [`ImapServer::mailbox`] maps them to the server's names.
//!
//! None of these servers is given TLS: they listen in plaintext on 127.0.0.1 only, so a mount
//! uses `imap://` with `--insecure`.

use std::collections::BTreeMap;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::oracle::{
    parse_appended_uid, parse_frames, parse_meta, parse_sha256, parse_status, write_oracle_script,
};
use super::ports::listener_belongs_to;
use super::{
    free_port, hex_encode, run_command, tail, unique_temp_dir, ListEntry, OracleMeta, OracleStatus,
    Seed, PASSWORD, USER,
};

const START_TIMEOUT: Duration = Duration::from_secs(20);
const ORACLE_TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(20);

/// Where scripts/servers.sh unpacks the servers unless `IMAPFS_TEST_SERVERS_DIR` says otherwise.
pub const DEFAULT_SERVERS_DIR: &str = "/var/cache/imapfs-test-servers";

/// One of the servers this module can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServerKind {
    /// GNU mailutils 3.15 `imap4d`: INBOX the maildir `~/Maildir`, folders maildirs below
    /// `~/Mail` (personal namespace `""`, delimiter `/`).
    Mailutils,
    /// Courier-IMAP 5.0 (`couriertcpd` + `imaplogin` + `imapd`, `authdaemond` with PAM), with
    /// Debian's `/etc/courier/imapd` settings.
    Courier,
    /// Cyrus IMAP 3.6 (`master` + `imapd`, SASL `sasldb`), with Debian's `imapd.conf` settings.
    Cyrus,
}

impl ServerKind {
    pub const ALL: [ServerKind; 3] = [
        ServerKind::Mailutils,
        ServerKind::Courier,
        ServerKind::Cyrus,
    ];

    /// Short name: the directory under the servers dir and the name tests print.
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Mailutils => "mailutils",
            ServerKind::Courier => "courier",
            ServerKind::Cyrus => "cyrus",
        }
    }

    /// The personal namespace prefix (NAMESPACE): folders other than INBOX live below it.
    pub fn prefix(self) -> &'static str {
        match self {
            ServerKind::Mailutils => "",
            ServerKind::Courier | ServerKind::Cyrus => "INBOX.",
        }
    }

    /// The hierarchy delimiter LIST reports.
    pub fn delimiter(self) -> char {
        match self {
            ServerKind::Mailutils => '/',
            ServerKind::Courier | ServerKind::Cyrus => '.',
        }
    }

    /// The unpacked Debian packages of this server.
    pub fn tree(self) -> PathBuf {
        let root = std::env::var_os("IMAPFS_TEST_SERVERS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SERVERS_DIR));
        root.join(self.name())
    }

    /// The Debian package versions unpacked (`Package: x Version: y` lines).
    pub fn versions(self) -> String {
        fs::read_to_string(self.tree().join(".versions")).unwrap_or_default()
    }
}

/// Why a server cannot run on this machine; tests report it with [`skip`].
#[derive(Debug, Clone)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A running server instance; see the module documentation.
pub struct ImapServer {
    pub kind: ServerKind,
    pub port: u16,
    pub user: String,
    pub password: String,
    /// The instance's directory: `start.sh`, `etc/`, the mail store, `server.log`.
    pub dir: PathBuf,
    /// `unshare`, whose only child is the namespace's init: the server.
    child: Child,
    oracle_script: PathBuf,
    log_file: PathBuf,
    stopped: bool,
}

/// One command of [`ImapServer::oracle_session`] and what the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// The command line as sent, without tag (an APPEND's message shows as `{...}`).
    pub command: String,
    /// Untagged and continuation lines, CRLF removed, each literal's bytes cut out (its `{n}`
    /// marker stays), bytes outside printable ASCII as `\xNN`.
    pub untagged: Vec<String>,
    /// `OK`, `NO` or `BAD`.
    pub status: String,
    /// The rest of the tagged line (response code and text).
    pub text: String,
}

impl Exchange {
    /// Whether any untagged line contains `needle` (ASCII case-insensitive).
    pub fn untagged_contains(&self, needle: &str) -> bool {
        let needle = needle.to_ascii_uppercase();
        self.untagged
            .iter()
            .any(|l| l.to_ascii_uppercase().contains(&needle))
    }
}

/// The greeting and capabilities, before and after LOGIN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    pub greeting: String,
    /// `CAPABILITY` before login, as one line.
    pub before_login: String,
    /// The LOGIN command's tagged OK text (some servers put capabilities there).
    pub login_text: String,
    /// `CAPABILITY` after login, as one line.
    pub after_login: String,
}

impl Capabilities {
    /// Whether the post-login CAPABILITY lists `name` (case-insensitive, whole word).
    pub fn has(&self, name: &str) -> bool {
        self.after_login
            .split_whitespace()
            .any(|c| c.eq_ignore_ascii_case(name))
    }
}

impl ImapServer {
    /// Starts `kind` holding `seed`, or says why it cannot run here. Panics (with the server
    /// log) if the server is installed but does not start or does not accept the seed.
    pub fn start(kind: ServerKind, seed: &Seed) -> Result<ImapServer, Unavailable> {
        available(kind)?;
        let mut last_error = String::new();
        // The port is picked free but bound by the server only later: another process can take
        // it in between, so a server that never listens is retried on a new port.
        for _ in 0..4 {
            match ImapServer::try_start(kind, seed) {
                Ok(server) => {
                    if kind != ServerKind::Mailutils {
                        server.seed(seed);
                    }
                    return Ok(server);
                }
                Err(e) => last_error = e,
            }
        }
        panic!("{} did not start: {last_error}", kind.name());
    }

    /// `imap://tester@127.0.0.1:PORT` (plaintext: mount with `--insecure`).
    pub fn url(&self) -> String {
        format!("imap://{}@127.0.0.1:{}", self.user, self.port)
    }

    /// The server's IMAP name of a seed folder name (`Archive.2024` is `INBOX.Archive.2024` on
    /// Courier and Cyrus); `INBOX` stays `INBOX`.
    pub fn mailbox(&self, seed_name: &str) -> String {
        if seed_name.eq_ignore_ascii_case("INBOX") {
            return "INBOX".to_string();
        }
        let delimiter = self.kind.delimiter().to_string();
        format!(
            "{}{}",
            self.kind.prefix(),
            seed_name.replace(super::DELIMITER, &delimiter)
        )
    }

    /// The server's output (Cyrus logs only to syslog, which the instance does not have).
    pub fn logs(&self) -> String {
        format!(
            "--- {} ---\n{}",
            self.log_file.display(),
            fs::read_to_string(&self.log_file).unwrap_or_default()
        )
    }

    /// The greeting line and capabilities before and after LOGIN.
    pub fn oracle_capabilities(&self) -> Capabilities {
        let out = String::from_utf8(self.oracle(&["caps"], None)).expect("UTF-8");
        let field = |key: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|l| l.strip_prefix('\t')))
                .unwrap_or_default()
                .to_string()
        };
        Capabilities {
            greeting: field("GREETING"),
            before_login: field("PRE"),
            login_text: field("LOGIN"),
            after_login: field("POST"),
        }
    }

    /// Runs each command line (without tag) in one logged-in session and returns what the
    /// server answered to each. A NO or BAD is recorded, not an error.
    pub fn oracle_session(&self, commands: &[&str]) -> Vec<Exchange> {
        let mut args = vec!["session"];
        args.extend_from_slice(commands);
        parse_transcript(&self.oracle(&args, None))
    }

    /// APPENDs `message` to `folder` (an IMAP name) with `flags` and returns the exchange, so a
    /// test can see APPENDUID or its absence.
    pub fn oracle_append_exchange(&self, folder: &str, flags: &[&str], message: &[u8]) -> Exchange {
        let out = self.oracle(
            &[
                "session-append",
                &hex_encode(folder.as_bytes()),
                &flags.join(" "),
            ],
            Some(message),
        );
        parse_transcript(&out)
            .pop()
            .expect("one exchange for APPEND")
    }

    /// `LIST "" "*"`, names decoded from modified UTF-7.
    pub fn oracle_list(&self) -> Vec<ListEntry> {
        let out = String::from_utf8(self.oracle(&["list"], None)).expect("UTF-8");
        out.lines()
            .map(|line| {
                let mut fields = line.split('\t');
                let name = hex_decode(fields.next().expect("name"));
                let delimiter = fields.next().expect("delimiter").chars().next();
                let attributes = fields
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
                ListEntry {
                    name: String::from_utf8(name).expect("UTF-8 name"),
                    delimiter,
                    attributes,
                }
            })
            .collect()
    }

    /// `BODY.PEEK[]` of one message of `folder` (an IMAP name).
    pub fn oracle_fetch(&self, folder: &str, uid: u32) -> Vec<u8> {
        self.fetch_frames(folder, &uid.to_string())
            .remove(&uid)
            .unwrap_or_else(|| panic!("oracle: {folder:?} has no uid {uid}"))
    }

    /// `BODY.PEEK[]` of every message of `folder`, by UID.
    pub fn oracle_fetch_all(&self, folder: &str) -> BTreeMap<u32, Vec<u8>> {
        self.fetch_frames(folder, "1:*")
    }

    /// SHA-256 (lower-case hex) of every message's `BODY[]` in `folder`, by UID.
    pub fn oracle_sha256_all(&self, folder: &str) -> BTreeMap<u32, String> {
        parse_sha256(&self.oracle(&["sha256", &hex_encode(folder.as_bytes())], None))
    }

    /// Flags (sorted, without `\Recent`), RFC822.SIZE and INTERNALDATE of every message.
    pub fn oracle_meta(&self, folder: &str) -> BTreeMap<u32, OracleMeta> {
        parse_meta(&self.oracle(&["meta", &hex_encode(folder.as_bytes())], None))
    }

    /// Flags of one message, sorted, without `\Recent`.
    pub fn oracle_flags(&self, folder: &str, uid: u32) -> Vec<String> {
        self.oracle_meta(folder)
            .remove(&uid)
            .unwrap_or_else(|| panic!("oracle: {folder:?} has no uid {uid}"))
            .flags
    }

    /// `STATUS folder (UIDVALIDITY UIDNEXT MESSAGES)`.
    pub fn oracle_status(&self, folder: &str) -> OracleStatus {
        parse_status(&self.oracle(&["status", &hex_encode(folder.as_bytes())], None))
    }

    /// `UID STORE uid <op> (flags)` with `op` one of `+FLAGS`, `-FLAGS`, `FLAGS` (and their
    /// `.SILENT` forms).
    pub fn oracle_store(&self, folder: &str, uid: u32, op: &str, flags: &[&str]) {
        self.oracle(
            &[
                "store",
                &hex_encode(folder.as_bytes()),
                &uid.to_string(),
                op,
                &flags.join(" "),
            ],
            None,
        );
    }

    /// Plants a `\Deleted` message as another client would: `UID STORE +FLAGS (\Deleted)` and
    /// nothing else, so the message stays until someone expunges.
    pub fn plant_deleted(&self, folder: &str, uid: u32) {
        self.oracle_store(folder, uid, "+FLAGS", &["\\Deleted"]);
    }

    /// Removes one message as another client would: `\Deleted`, then `UID EXPUNGE` of that UID
    /// where UIDPLUS exists, else a plain `EXPUNGE` (which removes every `\Deleted` message of
    /// the folder: plant none elsewhere in it first).
    pub fn oracle_expunge(&self, folder: &str, uid: u32) {
        self.oracle(
            &["expunge", &hex_encode(folder.as_bytes()), &uid.to_string()],
            None,
        );
    }

    /// APPENDs `bytes`; returns the new UID (APPENDUID, or the highest UID afterwards on a
    /// server without UIDPLUS).
    pub fn oracle_append(&self, folder: &str, bytes: &[u8]) -> u32 {
        self.oracle_append_with_flags(folder, bytes, &[])
    }

    pub fn oracle_append_with_flags(&self, folder: &str, bytes: &[u8], flags: &[&str]) -> u32 {
        let out = self.oracle(
            &["append", &hex_encode(folder.as_bytes()), &flags.join(" ")],
            Some(bytes),
        );
        parse_appended_uid(&out)
    }

    /// `CREATE folder`.
    pub fn oracle_create(&self, folder: &str) {
        self.oracle(&["create", &hex_encode(folder.as_bytes())], None);
    }

    /// `DELETE folder`.
    pub fn oracle_delete(&self, folder: &str) {
        self.oracle(&["delete", &hex_encode(folder.as_bytes())], None);
    }

    /// The process id of `unshare` (its child, the namespace's init, is the server).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    // --- starting -------------------------------------------------------------------------

    fn try_start(kind: ServerKind, seed: &Seed) -> Result<ImapServer, String> {
        let dir = unique_temp_dir(kind.name());
        let port = free_port();
        let tree = kind.tree();
        let etc = dir.join("etc");
        fs::create_dir(&etc).expect("create etc");

        let mut passwd = fs::read_to_string("/etc/passwd").expect("/etc/passwd");
        let mut shadow = fs::read_to_string("/etc/shadow").unwrap_or_default();
        let mut group = fs::read_to_string("/etc/group").expect("/etc/group");
        let mail_uid = free_id(&passwd, &group, 61_000);
        let home = dir.join("home");
        fs::create_dir(&home).expect("create home");
        push_line(
            &mut passwd,
            &format!("{USER}:x:{mail_uid}:{mail_uid}::{}:/bin/sh", home.display()),
        );
        push_line(
            &mut shadow,
            &format!("{USER}:{}:19000:0:99999:7:::", sha512_crypt(PASSWORD)),
        );
        push_line(&mut group, &format!("{USER}:x:{mail_uid}:"));

        let d = dir.display();
        // Lowest layer last: the system's /etc, then the package's, then the instance's own.
        let etc_layers = if tree.join("etc").is_dir() {
            format!("{d}/etc:{}/etc:/etc", tree.display())
        } else {
            format!("{d}/etc:/etc")
        };
        let mut script = format!(
            "# Generated by tests/common/servers.rs; runs inside `unshare --mount --pid`.\n\
             set -e\n\
             mount -t overlay overlay -o lowerdir={etc_layers} /etc\n\
             mount -t overlay overlay -o lowerdir={usr}:/usr /usr\n\
             mount -t tmpfs tmpfs /run\n\
             export LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu:/usr/lib\n",
            usr = tree.join("usr").display(),
        );

        match kind {
            ServerKind::Mailutils => {
                // APPEND would lose flags and dates here (see docs/compatibility.md), so the
                // seed is written as files before the start.
                write_mailutils_maildirs(&home, seed, kind);
                fs::write(
                    dir.join("imap4d.conf"),
                    format!(
                        "# GNU mailutils imap4d, one instance for one test.\n\
                         mode daemon;\n\
                         foreground yes;\n\
                         max-children 20;\n\
                         logging {{ syslog no; }};\n\
                         server 127.0.0.1:{port} {{ }};\n\
                         mailbox {{ mailbox-pattern \"maildir://{d}/home/Maildir\"; mailbox-type maildir; }};\n\
                         namespace personal {{ prefix \"\" {{ directory \"{d}/home/Mail\"; delimiter \"/\"; mailbox-type maildir; }}; }};\n\
                         tcp-wrappers {{ enable no; }};\n\
                         auth {{ authentication system; authorization system; }};\n"
                    ),
                )
                .expect("write imap4d.conf");
                script.push_str(&format!(
                    "exec /usr/sbin/imap4d --config-file={d}/imap4d.conf\n"
                ));
            }
            ServerKind::Courier => {
                make_maildir(&home.join("Maildir"));
                fs::create_dir(etc.join("pam.d")).expect("create pam.d");
                // authdaemond's authpam module asks PAM service "imap": the system's pam_unix
                // against the overlaid shadow file.
                fs::write(
                    etc.join("pam.d/imap"),
                    "@include common-auth\n@include common-account\n",
                )
                .expect("write pam.d/imap");
                script.push_str(&format!(
                    "mkdir -p /run/courier/authdaemon\n\
                     set -a\n\
                     . /etc/courier/authdaemonrc\n\
                     . /etc/courier/imapd\n\
                     set +a\n\
                     /usr/lib/courier/courier-authlib/authdaemond &\n\
                     # couriertcpd must not accept before authdaemond listens.\n\
                     i=0\n\
                     while [ ! -S /run/courier/authdaemon/socket ]; do\n\
                     \x20 i=$((i + 1)); [ $i -lt 500 ] || {{ echo 'authdaemond did not start' >&2; exit 1; }}\n\
                     \x20 sleep 0.02\n\
                     done\n\
                     exec /usr/sbin/couriertcpd -address=127.0.0.1 -maxprocs=$MAXDAEMONS \
                     -maxperip=$MAXPERIP $TCPDOPTS {port} /usr/lib/courier/courier/imaplogin \
                     /usr/bin/imapd $MAILDIRPATH\n"
                ));
            }
            ServerKind::Cyrus => {
                let cyrus_uid = if let Some(uid) = passwd_uid(&passwd, "cyrus") {
                    uid
                } else {
                    let uid = free_id(&passwd, &group, mail_uid + 1);
                    push_line(
                        &mut passwd,
                        &format!("cyrus:x:{uid}:8:Cyrus Mailsystem User:{d}/lib:/usr/sbin/nologin"),
                    );
                    push_line(&mut shadow, "cyrus:!:19000::::::");
                    uid
                };
                for sub in ["lib", "spool", "run"] {
                    fs::create_dir(dir.join(sub)).expect("create cyrus dir");
                    std::os::unix::fs::chown(dir.join(sub), Some(cyrus_uid), Some(8))
                        .expect("chown cyrus dir");
                }
                let password_file = dir.join("password");
                fs::write(&password_file, PASSWORD).expect("write password");
                fs::set_permissions(&password_file, fs::Permissions::from_mode(0o600))
                    .expect("chmod password");
                fs::write(etc.join("imapd.conf"), cyrus_imapd_conf(&dir)).expect("imapd.conf");
                fs::write(
                    etc.join("cyrus.conf"),
                    format!(
                        "# Cyrus master, one instance for one test: IMAP on loopback only.\n\
                         START {{\n  recover cmd=\"ctl_cyrusdb -r\"\n}}\n\
                         SERVICES {{\n  imap cmd=\"imapd\" listen=\"127.0.0.1:{port}\" prefork=0 maxchild=20\n}}\n\
                         EVENTS {{\n}}\n"
                    ),
                )
                .expect("cyrus.conf");
                script.push_str(&format!(
                    "/usr/sbin/saslpasswd2 -f {d}/sasldb2 -p -c {USER} < {d}/password\n\
                     chown cyrus:mail {d}/sasldb2\n\
                     exec /usr/lib/cyrus/bin/master -D\n"
                ));
            }
        }
        std::os::unix::fs::chown(&home, Some(mail_uid), Some(mail_uid)).expect("chown home");
        chown_tree(&home, mail_uid);
        fs::write(etc.join("passwd"), passwd).expect("write passwd");
        fs::write(etc.join("shadow"), shadow).expect("write shadow");
        fs::set_permissions(etc.join("shadow"), fs::Permissions::from_mode(0o640))
            .expect("chmod shadow");
        fs::write(etc.join("group"), group).expect("write group");
        let start_script = dir.join("start.sh");
        fs::write(&start_script, script).expect("write start.sh");
        let oracle_script = write_oracle_script(&dir, ORACLE_PY);

        let log_file = dir.join("server.log");
        let log = fs::File::create(&log_file).expect("create server.log");
        let child = Command::new("unshare")
            .args([
                "--mount",
                "--pid",
                "--fork",
                "--kill-child",
                "--mount-proc",
                "--propagation",
                "private",
                "/bin/sh",
            ])
            .arg(&start_script)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run unshare: {e}"))?;
        let mut server = ImapServer {
            kind,
            port,
            user: USER.to_string(),
            password: PASSWORD.to_string(),
            dir,
            child,
            oracle_script,
            log_file,
            stopped: false,
        };
        match server.wait_ready() {
            Ok(()) => Ok(server),
            Err(why) => Err(format!("{why}\n{}", tail(&server.logs(), 40))),
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("{} exited with {status}", self.kind.name()));
            }
            // Ours only if the listener is: the port was free when picked, and another
            // process may have taken it in between (and would greet too).
            if greeting(self.port).is_ok() && listener_belongs_to(self.port, self.child.id()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("not accepting after {START_TIMEOUT:?}"));
            }
            thread::sleep(POLL);
        }
    }

    fn seed(&self, seed: &Seed) {
        let mut input = Vec::new();
        for folder in seed.folders() {
            let name = hex_encode(self.mailbox(&folder.name).as_bytes());
            input.extend_from_slice(format!("F {name}\n").as_bytes());
            for message in &folder.messages {
                let flags = if message.flags.is_empty() {
                    "-".to_string()
                } else {
                    message.flags.join(",")
                };
                input.extend_from_slice(
                    format!(
                        "M {name} {} {flags} {}\n",
                        message.internal_date,
                        message.bytes.len()
                    )
                    .as_bytes(),
                );
                input.extend_from_slice(&message.bytes);
            }
        }
        if !input.is_empty() {
            self.oracle(&["seed"], Some(&input));
        }
    }

    fn fetch_frames(&self, folder: &str, uids: &str) -> BTreeMap<u32, Vec<u8>> {
        parse_frames(&self.oracle(&["fetch", &hex_encode(folder.as_bytes()), uids], None))
    }

    /// Runs one oracle command; panics with its stderr and the server log if it fails.
    fn oracle(&self, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
        let mut command = Command::new("python3");
        command
            .arg(&self.oracle_script)
            .args(args)
            .env("ORACLE_PORT", self.port.to_string())
            .env("ORACLE_USER", &self.user)
            .env("ORACLE_PASSWORD", &self.password);
        let output = run_command(command, stdin, ORACLE_TIMEOUT)
            .unwrap_or_else(|e| panic!("oracle {args:?} on {}: {e}", self.kind.name()));
        if !output.status.success() {
            panic!(
                "oracle {args:?} on {} failed ({}):\n{}\n{}",
                self.kind.name(),
                output.status,
                String::from_utf8_lossy(&output.stderr),
                tail(&self.logs(), 40)
            );
        }
        output.stdout
    }

    /// Kills the namespace's init (the server) with SIGKILL, which ends every process in the
    /// PID namespace, then `unshare` itself. SIGTERM is no use: `unshare --fork` ignores it,
    /// and a PID namespace's init ignores signals it has no handler for.
    fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        for pid in children(self.child.id()) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            thread::sleep(POLL);
        }
    }
}

impl Drop for ImapServer {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("{}", tail(&self.logs(), 60));
        }
        self.stop();
        if std::env::var_os("IMAPFS_TEST_KEEP").is_some() {
            eprintln!("kept {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Whether `kind` can run here; the reason if not.
pub fn available(kind: ServerKind) -> Result<(), Unavailable> {
    let me = fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    if me != 0 {
        return Err(Unavailable(format!(
            "{} runs in private mount namespaces, which needs root (uid is {me})",
            kind.name()
        )));
    }
    let tree = kind.tree();
    if !tree.join(".packages").is_file() {
        return Err(Unavailable(format!(
            "{} is not installed in {} (run scripts/servers.sh as root)",
            kind.name(),
            tree.display()
        )));
    }
    if Command::new("unshare")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        return Err(Unavailable("unshare (util-linux) is missing".to_string()));
    }
    Ok(())
}

/// [`ImapServer::start`], or `None` after [`skip`] reported why `kind` cannot run here.
pub fn start_or_skip(kind: ServerKind, seed: &Seed) -> Option<ImapServer> {
    match ImapServer::start(kind, seed) {
        Ok(server) => Some(server),
        Err(why) => {
            skip(&format!("{}: {why}", kind.name()));
            None
        }
    }
}

/// Reports that the running test leaves something unchecked, as a line
/// `SKIPPED: <crate>::<test> (<why>)` on the process's stderr (written past libtest's capture,
/// so it shows in every run; scripts/test.sh counts such a test as skipped, not passed).
/// Under `IMAPFS_REQUIRE_COMPAT=1` (CI, where scripts/setup.sh installed every server) a skip
/// is a failure instead.
pub fn skip(why: &str) {
    use std::io::Write;
    let test = format!(
        "{}::{}",
        env!("CARGO_CRATE_NAME"),
        thread::current().name().unwrap_or("main")
    );
    if std::env::var_os("IMAPFS_REQUIRE_COMPAT").is_some_and(|v| v == "1") {
        panic!("{test} cannot run here, and IMAPFS_REQUIRE_COMPAT=1 requires it: {why}");
    }
    // One write, so that parallel tests' lines do not interleave within a line.
    let line = format!("SKIPPED: {test} ({why})\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

fn cyrus_imapd_conf(dir: &Path) -> String {
    let d = dir.display();
    // Debian's /etc/imapd.conf, with every path moved into the instance and the SASL database
    // named; settings that change what a client sees are Debian's.
    format!(
        "# Cyrus imapd.conf, one instance for one test (Debian's settings, private paths).\n\
         configdirectory: {d}/lib\n\
         proc_path: {d}/run/proc\n\
         mboxname_lockpath: {d}/run/lock\n\
         defaultpartition: default\n\
         partition-default: {d}/spool\n\
         altnamespace: no\n\
         unixhierarchysep: no\n\
         allowanonymouslogin: no\n\
         autocreate_quota: 0\n\
         umask: 077\n\
         hashimapspool: true\n\
         allowplaintext: yes\n\
         sasl_pwcheck_method: auxprop\n\
         sasl_auxprop_plugin: sasldb\n\
         sasl_sasldb_path: {d}/sasldb2\n\
         sasl_mech_list: PLAIN LOGIN\n\
         sasl_auto_transition: no\n\
         lmtpsocket: {d}/run/lmtp\n\
         idlesocket: {d}/run/idle\n\
         notifysocket: {d}/run/notify\n\
         syslog_prefix: cyrus\n"
    )
}

/// The greeting on `port`, or why there is none yet.
fn greeting(port: u16) -> Result<String, String> {
    use std::io::{Read, Write};
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            Ok(_) => return Err("closed before greeting".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
    let _ = stream.write_all(b"g LOGOUT\r\n");
    let line = String::from_utf8_lossy(&line).into_owned();
    if line.starts_with("* OK") {
        Ok(line)
    } else {
        Err(format!("unexpected greeting {line:?}"))
    }
}

fn parse_transcript(out: &[u8]) -> Vec<Exchange> {
    let mut exchanges: Vec<Exchange> = Vec::new();
    for line in String::from_utf8_lossy(out).lines() {
        let (kind, rest) = line.split_once('\t').unwrap_or((line, ""));
        match kind {
            "C" => exchanges.push(Exchange {
                command: rest.to_string(),
                untagged: Vec::new(),
                status: String::new(),
                text: String::new(),
            }),
            "S" => exchanges
                .last_mut()
                .expect("S after C")
                .untagged
                .push(rest.to_string()),
            "R" => {
                let (status, text) = rest.split_once('\t').unwrap_or((rest, ""));
                let last = exchanges.last_mut().expect("R after C");
                last.status = status.to_string();
                last.text = text.to_string();
            }
            other => panic!("oracle transcript line {other:?}"),
        }
    }
    exchanges
}

/// Writes `seed` the way mailutils' maildir driver keeps mail: INBOX in `home/Maildir`, folder
/// `A.B` in `home/Mail/A/B` (each part in modified UTF-7), messages in `cur/` named
/// `<secs>.M<uid>P1.imapfs-seed,a=O,u=<uid>:2,<flags>` with LF line endings (imap4d serves
/// CRLF from them; a CRLF file is misparsed), and `.mu-prop` holding UIDVALIDITY and UIDNEXT.
fn write_mailutils_maildirs(home: &Path, seed: &Seed, kind: ServerKind) {
    make_maildir(&home.join("Maildir"));
    fs::create_dir_all(home.join("Mail")).expect("create Mail");
    for folder in seed.folders() {
        let dir = if folder.name.eq_ignore_ascii_case("INBOX") {
            home.join("Maildir")
        } else {
            let name = super::mutf7_encode(&folder.name);
            let relative: PathBuf = name.split(super::DELIMITER).collect();
            home.join("Mail").join(relative)
        };
        make_maildir(&dir);
        for message in &folder.messages {
            let letters: String = {
                let mut l: Vec<char> = message.flags.iter().map(|f| flag_letter(f)).collect();
                l.sort_unstable();
                l.into_iter().collect()
            };
            let name = format!(
                "{}.M{}P1.imapfs-seed,a=O,u={}:2,{letters}",
                1_500_000_000 + u64::from(message.uid),
                message.uid,
                message.uid
            );
            let lf = String::from_utf8_lossy(&message.bytes).replace("\r\n", "\n");
            assert_eq!(
                lf.replace('\n', "\r\n").as_bytes(),
                &message.bytes[..],
                "{}: a seed message must be UTF-8 with CRLF line endings only",
                kind.name()
            );
            fs::write(dir.join("cur").join(name), lf).expect("write message");
        }
        fs::write(
            dir.join(".mu-prop"),
            format!(
                "uidnext: {}\nversion: 3.15\nuid-validity: 1700000000\n",
                folder.messages.len() + 1
            ),
        )
        .expect("write .mu-prop");
    }
}

fn flag_letter(flag: &str) -> char {
    match flag {
        "\\Draft" => 'D',
        "\\Flagged" => 'F',
        "\\Answered" => 'R',
        "\\Seen" => 'S',
        "\\Deleted" => 'T',
        other => panic!("a seed has only system flags, not {other:?}"),
    }
}

fn make_maildir(path: &Path) {
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(path.join(sub)).expect("create maildir");
    }
}

fn chown_tree(path: &Path, id: u32) {
    std::os::unix::fs::chown(path, Some(id), Some(id))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    if path.is_dir() {
        for entry in fs::read_dir(path).expect("read_dir") {
            chown_tree(&entry.expect("entry").path(), id);
        }
    }
}

fn push_line(file: &mut String, line: &str) {
    if !file.is_empty() && !file.ends_with('\n') {
        file.push('\n');
    }
    file.push_str(line);
    file.push('\n');
}

fn passwd_uid(passwd: &str, name: &str) -> Option<u32> {
    passwd.lines().find_map(|l| {
        let fields: Vec<&str> = l.split(':').collect();
        (fields.len() > 3 && fields[0] == name)
            .then(|| fields[2].parse().ok())
            .flatten()
    })
}

/// The first id from `from` used neither as a uid in `passwd` nor as a gid in `group`.
fn free_id(passwd: &str, group: &str, from: u32) -> u32 {
    let used: Vec<u32> = passwd
        .lines()
        .chain(group.lines())
        .filter_map(|l| l.split(':').nth(2).and_then(|id| id.parse().ok()))
        .collect();
    (from..).find(|id| !used.contains(id)).expect("a free id")
}

/// A SHA-512 crypt(3) hash of `password` for /etc/shadow, by `openssl passwd` (password on
/// stdin, never in argv).
fn sha512_crypt(password: &str) -> String {
    let mut command = Command::new("openssl");
    command.args(["passwd", "-6", "-stdin"]);
    let output = run_command(command, Some(password.as_bytes()), Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(output.status.success(), "openssl passwd failed");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Direct children of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // `pid (comm) state ppid ...`; comm may contain spaces and parentheses.
            let ppid = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(pid) {
                found.push(child);
            }
        }
    }
    found
}

fn hex_decode(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The oracle: see the module documentation. Commands: `caps`, `list`, `fetch F UIDS`,
/// `sha256 F`, `meta F`, `status F`, `store F UID OP FLAGS`, `expunge F UID`, `append F FLAGS`
/// (message on stdin), `create F`, `delete F`, `seed` (frames on stdin), `session CMD...`,
/// `session-append F FLAGS`. `F` is an IMAP folder name as hex of its UTF-8.
const ORACLE_PY: &str = include_str!("servers_oracle.py");
