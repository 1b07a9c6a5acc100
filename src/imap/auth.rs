//! Getting from a greeting to an authenticated session: TLS policy, STARTTLS, and the login
//! mechanisms.
//!
//! [`connect`] is the one entry point: TCP, then implicit TLS or STARTTLS, the greeting, the
//! capabilities, and a login with the best mechanism offered (AUTHENTICATE PLAIN with SASL-IR,
//! AUTHENTICATE PLAIN, else LOGIN). A plaintext login is never attempted on a connection without
//! TLS unless the caller explicitly allowed it, and never when the server says LOGINDISABLED.
//! Credentials live in [`Secret`], whose `Debug` prints nothing, and are never logged.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;

use crate::error::{Error, Result};
use crate::imap::codec::{Command, Limits};
use crate::imap::session::{Session, Timeouts};
use crate::imap::transport::Transport;
use crate::imap::types::{Code, Response, Status};

/// A secret (password, token): its `Debug` and `Display` print nothing.
#[derive(Clone, Default)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Best effort: do not leave the secret lying in freed memory.
        for b in self.0.iter_mut() {
            // SAFETY: a volatile write to a valid, owned byte.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte (`imaps://`, port 993).
    Tls,
    /// Plain TCP upgraded with STARTTLS before login (`imap://`, port 143).
    StartTls,
}

/// Everything needed to open an authenticated session.
#[derive(Clone)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub tls: Arc<rustls::ClientConfig>,
    pub user: String,
    pub password: Secret,
    pub timeouts: Timeouts,
    pub limits: Limits,
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Open a connection and log in.
pub fn connect(cfg: &ServerConfig) -> Result<Session> {
    let connect_timeout = cfg.timeouts.inactivity.min(Duration::from_secs(30));
    let mut transport = Transport::connect(&cfg.host, cfg.port, connect_timeout)?;
    if cfg.security == Security::Tls {
        let deadline = std::time::Instant::now() + cfg.timeouts.inactivity;
        transport = transport.start_tls(cfg.tls.clone(), &cfg.host, deadline)?;
    }
    let (mut session, preauth) = Session::start(transport, cfg.timeouts.clone(), cfg.limits)?;
    if cfg.security == Security::StartTls {
        if preauth {
            return Err(Error::Protocol(
                "server greeted with PREAUTH on a plaintext connection; refusing without TLS".into(),
            ));
        }
        if !session.has_capability("STARTTLS") {
            return Err(Error::Tls {
                message: format!("{} does not offer STARTTLS; use imaps://", cfg.host),
                certificate: false,
            });
        }
        session = session.start_tls(cfg.tls.clone(), &cfg.host)?;
    }
    if !preauth {
        login(&mut session, &cfg.user, &cfg.password)?;
    }
    // Capabilities may differ after login; learn them afresh.
    session.forget_capabilities();
    if session.has_capability("UTF8=ACCEPT") {
        session.run(Command::Enable(vec!["UTF8=ACCEPT".into()]))?;
        session.set_utf8(true);
    }
    Ok(session)
}

/// Log in with the best mechanism the server offers.
pub fn login(session: &mut Session, user: &str, password: &Secret) -> Result<()> {
    if session.has_capability("LOGINDISABLED") && !session.has_capability("AUTH=PLAIN") {
        return Err(Error::Auth("the server has disabled LOGIN and offers no usable mechanism".into()));
    }
    let result = if session.has_capability("AUTH=PLAIN") {
        authenticate_plain(session, user, password)
    } else {
        session
            .run(Command::Login { user: user.as_bytes().to_vec(), password: password.expose().to_vec() })
            .map(drop)
    };
    result.map_err(|e| match e {
        Error::No { text, .. } | Error::Bad { text, .. } => {
            let words: String = text.text.chars().filter(|c| !c.is_control()).collect();
            let words = if words.is_empty() { "rejected by the server".to_string() } else { words };
            if text.code == Some(Code::AuthenticationFailed) || text.code.is_none() {
                Error::Auth(words)
            } else {
                Error::Auth(format!("[{:?}] {words}", text.code.unwrap_or(Code::Parse)))
            }
        }
        other => other,
    })
}

fn authenticate_plain(session: &mut Session, user: &str, password: &Secret) -> Result<()> {
    let mut raw = Vec::with_capacity(user.len() * 2 + password.expose().len() + 2);
    raw.push(0);
    raw.extend_from_slice(user.as_bytes());
    raw.push(0);
    raw.extend_from_slice(password.expose());
    let response = Secret::new(base64::engine::general_purpose::STANDARD.encode(&raw).into_bytes());
    raw.iter_mut().for_each(|b| *b = 0);
    let initial = if session.has_capability("SASL-IR") {
        Some(String::from_utf8_lossy(response.expose()).into_owned())
    } else {
        None
    };
    let ir_sent = initial.is_some();
    let tag = session.send(&Command::Authenticate { mechanism: "PLAIN".into(), initial })?;
    loop {
        match session.next_response()? {
            Response::Continue(_) if !ir_sent => {
                session.send_line(response.expose())?;
            }
            Response::Continue(_) => {
                // A second challenge for PLAIN: cancel the exchange.
                session.send_line(b"*")?;
            }
            Response::Tagged(t) if t.tag == tag => {
                return match t.status {
                    Status::Ok => {
                        if let Some(Code::Capability(_)) = t.text.code {
                            // The session learns them when the next command runs.
                        }
                        Ok(())
                    }
                    Status::No => Err(Error::No { command: "AUTHENTICATE", text: t.text }),
                    _ => Err(Error::Bad { command: "AUTHENTICATE", text: t.text }),
                };
            }
            _ => {}
        }
    }
}
