//! A private Dovecot per test: config, certificate and maildir in a fresh temp directory, two
//! loopback ports (`imap` with STARTTLS, `imaps`), the seed written as maildir++ files before
//! the server starts. `Drop` kills every process of the instance and removes the directory.
//! The oracle methods are in oracle.rs, the faults (kick, pause, restart) in faults.rs.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use super::faults::{descendants, is_dovecot_process};
use super::maildir::{chown_tree, write_maildir, MailOwner};
use super::oracle::write_oracle;
use super::wait::{wait_child, POLL};
use super::{free_port, run, tail, unique_temp_dir, Seed, PASSWORD, USER};

const SERVER_START_TIMEOUT: Duration = Duration::from_secs(10);

/// A private Dovecot instance; see the module documentation.
pub struct Dovecot {
    pub imap_port: u16,
    pub imaps_port: u16,
    pub user: String,
    pub password: String,
    /// The server's self-signed certificate, which is also the CA file a client must trust.
    pub ca_file: PathBuf,
    /// The instance's own directory (config, certificate, maildir, logs, runtime sockets).
    pub dir: PathBuf,
    /// The maildir++ root (INBOX; other folders are `.Name` below it).
    pub mail_dir: PathBuf,
    /// Dovecot's log file.
    pub log_file: PathBuf,
    pub conf: PathBuf,
    pub(super) child: Child,
    pub(super) oracle_script: PathBuf,
}

impl Dovecot {
    /// The engine's account settings for this server (`security` picks the port), with
    /// generous timeouts: tests of the engine without a mount use it.
    pub fn server_config(
        &self,
        security: imapfs::imap::auth::Security,
    ) -> imapfs::imap::auth::ServerConfig {
        use imapfs::imap::auth::{AuthMethod, Credential, Secret, Security, ServerConfig};
        ServerConfig {
            host: "127.0.0.1".into(),
            port: if security == Security::Tls {
                self.imaps_port
            } else {
                self.imap_port
            },
            security,
            tls: imapfs::imap::transport::tls_config(Some(&self.ca_file)).expect("tls config"),
            user: self.user.clone(),
            credential: Credential::Secret(Secret::new(self.password.clone().into_bytes())),
            timeouts: imapfs::imap::session::Timeouts {
                inactivity: Duration::from_secs(10),
                command: Duration::from_secs(60),
            },
            limits: imapfs::imap::codec::Limits::default(),
            auth: AuthMethod::Auto,
            tunnel: None,
            compress: true,
        }
    }
    /// Starts a server holding `seed`; panics (with the server log) if it cannot.
    pub fn start(seed: &Seed) -> Dovecot {
        Dovecot::start_with(seed, "")
    }

    /// Like [`Dovecot::start`], with `extra_conf` appended to dovecot.conf (later settings win),
    /// e.g. `imap_capability = IMAP4rev1 LITERAL+` to hide extensions.
    pub fn start_with(seed: &Seed, extra_conf: &str) -> Dovecot {
        let mut last_error = String::new();
        // Ports are picked free but handed to Dovecot only later: another process can take one
        // in between, so a bind failure is retried with new ports.
        for _ in 0..5 {
            match Dovecot::try_start(seed, extra_conf) {
                Ok(dovecot) => return dovecot,
                Err((error, retry)) if retry => last_error = error,
                Err((error, _)) => panic!("{error}"),
            }
        }
        panic!("{last_error}");
    }

    fn try_start(seed: &Seed, extra_conf: &str) -> Result<Dovecot, (String, bool)> {
        let dir = unique_temp_dir("dovecot");
        let mail_dir = dir.join("mail");
        let home = dir.join("home");
        let log_file = dir.join("dovecot.log");
        let conf = dir.join("dovecot.conf");
        let ca_file = dir.join("cert.pem");
        let key_file = dir.join("key.pem");
        for sub in ["run", "state", "home"] {
            fs::create_dir(dir.join(sub)).expect("create dovecot dir");
        }

        let (cert_pem, key_pem) = self_signed_certificate();
        fs::write(&ca_file, cert_pem).expect("write cert");
        fs::write(&key_file, key_pem).expect("write key");

        let owner = MailOwner::for_this_process();
        write_maildir(&mail_dir, seed);
        chown_tree(&mail_dir, owner.uid, owner.gid);
        chown_tree(&home, owner.uid, owner.gid);

        let passwd = dir.join("passwd");
        fs::write(
            &passwd,
            format!(
                "{USER}:{{PLAIN}}{PASSWORD}:{}:{}::{}::\n",
                owner.uid,
                owner.gid,
                home.display()
            ),
        )
        .expect("write passwd");

        let imap_port = free_port();
        let imaps_port = loop {
            let port = free_port();
            if port != imap_port {
                break port;
            }
        };
        let d = dir.display();
        let mut text = format!(
            "# Generated by tests/common/dovecot.rs for one test.\n\
             base_dir = {d}/run\n\
             state_dir = {d}/state\n\
             instance_name = imapfs-test-{unique}\n\
             login_greeting = {unique} ready.\n\
             protocols = imap\n\
             listen = 127.0.0.1\n\
             ssl = yes\n\
             ssl_cert = <{d}/cert.pem\n\
             ssl_key = <{d}/key.pem\n\
             disable_plaintext_auth = no\n\
             auth_mechanisms = plain login\n\
             log_path = {d}/dovecot.log\n\
             first_valid_uid = 1\n\
             first_valid_gid = 1\n\
             mail_fsync = never\n\
             mail_location = maildir:{d}/mail\n\
             passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {d}/passwd\n}}\n\
             userdb {{\n  driver = passwd-file\n  args = username_format=%u {d}/passwd\n}}\n\
             service imap-login {{\n\
             \x20 inet_listener imap {{\n    address = 127.0.0.1\n    port = {imap_port}\n  }}\n\
             \x20 inet_listener imaps {{\n    address = 127.0.0.1\n    port = {imaps_port}\n    ssl = yes\n  }}\n\
             }}\n",
            unique = dir.file_name().unwrap_or_default().to_string_lossy(),
        );
        if let Some(name) = &owner.unprivileged_user {
            // Not root: every Dovecot process runs as us.
            text.push_str(&format!(
                "default_login_user = {name}\ndefault_internal_user = {name}\n"
            ));
        }
        text.push_str(extra_conf);
        text.push('\n');
        fs::write(&conf, text).expect("write dovecot.conf");

        let oracle_script = write_oracle(&dir);

        let stderr = fs::File::create(dir.join("dovecot.stderr")).expect("create stderr file");
        let child = Command::new("dovecot")
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().expect("clone file"))
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run dovecot (run scripts/setup.sh): {e}"));

        let mut dovecot = Dovecot {
            imap_port,
            imaps_port,
            user: USER.to_string(),
            password: PASSWORD.to_string(),
            ca_file,
            dir,
            mail_dir,
            log_file,
            conf,
            child,
            oracle_script,
        };
        match dovecot.wait_ready() {
            Ok(()) => Ok(dovecot),
            Err(why) => {
                let logs = dovecot.logs();
                let retry = logs.contains("Address already in use");
                Err((format!("dovecot did not start: {why}\n{logs}"), retry))
            }
        }
    }

    pub(super) fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("dovecot exited with {status}"));
            }
            // Ours only if the greeting names this instance: the ports were free when picked,
            // and a server another test started on one of them meanwhile greets too. (Dovecot
            // binds every listener before it serves one, so our greeting means both ports.)
            let unique = self.dir.file_name().unwrap_or_default().to_string_lossy();
            if read_greeting(self.imap_port).is_ok_and(|g| g.contains(&*unique))
                && TcpStream::connect((Ipv4Addr::LOCALHOST, self.imaps_port)).is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("not accepting after {SERVER_START_TIMEOUT:?}"));
            }
            thread::sleep(POLL);
        }
    }

    /// `imaps://tester@127.0.0.1:<imaps_port>`.
    pub fn url(&self) -> String {
        format!("imaps://{}@127.0.0.1:{}", self.user, self.imaps_port)
    }

    /// The master process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The untagged greeting on the plaintext port (`* OK [CAPABILITY ...] ...`).
    pub fn greeting(&self) -> String {
        read_greeting(self.imap_port).unwrap_or_else(|e| panic!("greeting: {e}"))
    }

    /// The greeting on the implicit-TLS port, read by Python's ssl module trusting only
    /// `ca_file` (so it also proves the certificate verifies for 127.0.0.1).
    pub fn tls_greeting(&self) -> String {
        let port = self.imaps_port.to_string();
        let ca = self.ca_file.to_string_lossy().into_owned();
        String::from_utf8_lossy(&self.oracle(&["greeting-tls", &ca, &port], None)).into_owned()
    }

    /// Capabilities after STARTTLS and LOGIN on the plaintext port.
    pub fn starttls_capabilities(&self) -> Vec<String> {
        let ca = self.ca_file.to_string_lossy().into_owned();
        let out = self.oracle(&["starttls", &ca], None);
        String::from_utf8_lossy(&out)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    /// Dovecot's log and stderr, for failure messages.
    pub fn logs(&self) -> String {
        let log = fs::read_to_string(&self.log_file).unwrap_or_default();
        let stderr = fs::read_to_string(self.dir.join("dovecot.stderr")).unwrap_or_default();
        format!(
            "--- {} ---\n{log}--- dovecot stderr ---\n{stderr}",
            self.log_file.display()
        )
    }

    /// Kills the instance: master first (so it restarts nothing), then every process it had
    /// started. SIGKILL rather than SIGTERM because the master's graceful shutdown takes over a
    /// second, per test, and nothing in the throwaway directory needs a clean close.
    pub(super) fn stop(&mut self) {
        let family = descendants(self.child.id());
        let _ = self.child.kill();
        let _ = wait_child(&mut self.child, Duration::from_secs(10));
        for pid in family {
            if is_dovecot_process(pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

impl Drop for Dovecot {
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

/// Reads the server greeting on a plaintext port.
fn read_greeting(port: u16) -> Result<String, String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            Ok(_) => return Err("connection closed before greeting".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
    let line = String::from_utf8_lossy(&line).into_owned();
    if line.starts_with("* OK") {
        let _ = stream.write_all(b"a LOGOUT\r\n");
        Ok(line)
    } else {
        Err(format!("unexpected greeting {line:?}"))
    }
}

/// A self-signed certificate for `localhost` / `127.0.0.1`, made once per test binary.
/// `CA:FALSE`, so that it passes plain WebPKI rules too (which reject an end-entity
/// certificate marked as a CA, `openssl req -x509`'s default; imapfs accepts that one only as
/// an exact pin from --ca-file). Shared with the scripted servers of tests/hostile.rs.
pub fn self_signed_certificate() -> (String, String) {
    static PAIR: OnceLock<(String, String)> = OnceLock::new();
    PAIR.get_or_init(|| {
        let dir = unique_temp_dir("cert");
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        let (cert_s, key_s) = (cert.to_string_lossy(), key.to_string_lossy());
        let output = run(
            &[
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "3650",
                "-subj",
                "/CN=localhost",
                "-addext",
                "basicConstraints=critical,CA:FALSE",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-keyout",
                &key_s,
                "-out",
                &cert_s,
            ],
            Duration::from_secs(60),
        );
        assert!(
            output.status.success(),
            "openssl req failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let pair = (
            fs::read_to_string(&cert).expect("cert"),
            fs::read_to_string(&key).expect("key"),
        );
        let _ = fs::remove_dir_all(&dir);
        pair
    })
    .clone()
}
