//! Getting from a greeting to an authenticated session: TLS policy, STARTTLS, and the login
//! mechanisms.
//!
//! [`connect`] is the one entry point: TCP, then implicit TLS or STARTTLS, the greeting, the
//! capabilities, and a login with the mechanism [`ServerConfig::auth`] names, or by default the
//! best one offered (AUTHENTICATE PLAIN with SASL-IR, AUTHENTICATE PLAIN, LOGIN unless
//! LOGINDISABLED, else AUTHENTICATE CRAM-MD5). A
//! plaintext login is never attempted on a connection without TLS unless the caller explicitly
//! allowed it ([`Security::Plaintext`]), and never when the server says LOGINDISABLED. Credentials live in [`Secret`],
//! whose `Debug` prints nothing, and are never logged.
//!
//! The SASL mechanisms (PLAIN, CRAM-MD5, XOAUTH2, OAUTHBEARER) are small sans-I/O state
//! machines ([`Sasl`]): given the server's decoded challenge they say what to answer, so their
//! wire form is tested without a socket. One loop ([`login_with`]) drives any of them over a
//! session. For the bearer-token mechanisms the token is the [`Credential`]: a fixed secret,
//! or a command run for every new connection so that each gets a fresh token; when the
//! server rejects it, its error challenge (base64 JSON) is answered as the mechanism requires
//! and its text is carried into the error the user sees.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, Mac};

use crate::error::{printable, printable_bytes, Error, Result};
use crate::imap::codec::{Command, Limits};
use crate::imap::refusals::is_connection_cap;
use crate::imap::session::{Capability, Session, Timeouts};
use crate::imap::transport::Transport;
use crate::imap::types::{Code, Response, Status};

mod sasl;

pub use sasl::Sasl;

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
    /// Plain TCP and no TLS at all (`imap://` with `--insecure`): the password and the mail
    /// cross the network readable by anyone on the path.
    Plaintext,
}

/// What proves who we are: a secret known in advance, or a command that prints a fresh
/// OAuth 2 access token, run again for each new connection (tokens expire within the hour).
#[derive(Clone)]
pub enum Credential {
    /// A password, or a token that does not change.
    Secret(Secret),
    /// A shell command whose first output line is an access token.
    TokenCommand(String),
}

impl Credential {
    /// The secret to log in with now (runs the token command).
    pub fn obtain(&self) -> Result<Secret> {
        match self {
            Credential::Secret(s) => Ok(s.clone()),
            Credential::TokenCommand(cmd) => run_secret_command(cmd, "OAuth2 token command"),
        }
    }
}

/// Run `cmd` through `sh -c` and take the first line of its output (without the line end).
/// `what` names it in errors; the command text is not shown (it may hold a secret).
pub fn run_secret_command(cmd: &str, what: &str) -> Result<Secret> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| Error::Config(format!("cannot run the {what}: {e}")))?;
    let stdout = Secret::new(out.stdout);
    if !out.status.success() {
        return Err(Error::Config(format!("the {what} failed ({})", out.status)));
    }
    let line = stdout
        .expose()
        .split(|&b| b == b'\n')
        .next()
        .unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(Error::Config(format!("the {what} printed nothing")));
    }
    Ok(Secret::new(line.to_vec()))
}

/// Everything needed to open an authenticated session.
#[derive(Clone)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub tls: Arc<rustls::ClientConfig>,
    pub user: String,
    pub credential: Credential,
    pub timeouts: Timeouts,
    pub limits: Limits,
    /// Which login mechanism to use; [`AuthMethod::Auto`] picks the best plain-password one.
    pub auth: AuthMethod,
    /// Connect by running this shell command and speaking IMAP over its stdin and stdout
    /// (`ssh host /usr/lib/dovecot/imap`). The tunnel is the protection: no TLS on top, and a
    /// PREAUTH greeting is accepted. `host` and `port` then only name the account.
    pub tunnel: Option<String>,
    /// Turn on COMPRESS=DEFLATE (RFC 4978) after login where the server offers it.
    pub compress: bool,
}

/// The login mechanism, as chosen by the user (`mechanism` option).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMethod {
    /// Over TLS: AUTHENTICATE PLAIN if offered, else LOGIN unless LOGINDISABLED, else
    /// AUTHENTICATE CRAM-MD5. Never a clear-text password without TLS or a tunnel.
    #[default]
    Auto,
    /// The LOGIN command (refused when the server says LOGINDISABLED).
    Login,
    /// AUTHENTICATE PLAIN (RFC 4616).
    Plain,
    /// AUTHENTICATE CRAM-MD5 (RFC 2195): the password never crosses the wire.
    CramMd5,
    /// AUTHENTICATE XOAUTH2 (Google, Microsoft): the password is an OAuth 2 access token.
    XOAuth2,
    /// AUTHENTICATE OAUTHBEARER (RFC 7628): the password is an OAuth 2 access token.
    OAuthBearer,
}

impl AuthMethod {
    /// The method named by a `mechanism` option value (case-insensitive): `auto`, `login`,
    /// `plain`, `cram-md5`, `xoauth2`, `oauthbearer`.
    pub fn parse(name: &str) -> Option<AuthMethod> {
        Some(match name.to_ascii_lowercase().as_str() {
            "auto" => AuthMethod::Auto,
            "login" => AuthMethod::Login,
            "plain" => AuthMethod::Plain,
            "cram-md5" => AuthMethod::CramMd5,
            "xoauth2" => AuthMethod::XOAuth2,
            "oauthbearer" => AuthMethod::OAuthBearer,
            _ => return None,
        })
    }

    /// The SASL mechanism name (`None` for Auto and Login).
    pub fn sasl_name(self) -> Option<&'static str> {
        match self {
            AuthMethod::Auto | AuthMethod::Login => None,
            AuthMethod::Plain => Some("PLAIN"),
            AuthMethod::CramMd5 => Some("CRAM-MD5"),
            AuthMethod::XOAuth2 => Some("XOAUTH2"),
            AuthMethod::OAuthBearer => Some("OAUTHBEARER"),
        }
    }
}

impl std::str::FromStr for AuthMethod {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<AuthMethod, String> {
        AuthMethod::parse(s).ok_or_else(|| {
            format!("unknown mechanism `{s}` (auto, login, plain, cram-md5, xoauth2, oauthbearer)")
        })
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("user", &self.user)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// Open a connection and log in, all of it (TCP, TLS handshake, greeting, STARTTLS, login,
/// capabilities) within one [`Timeouts::command`](crate::imap::session::Timeouts::command).
pub fn connect(cfg: &ServerConfig) -> Result<Session> {
    let deadline = Instant::now() + cfg.timeouts.command;
    let (mut session, preauth) = match &cfg.tunnel {
        Some(command) => Session::start_before(
            Transport::tunnel(command)?,
            cfg.timeouts.clone(),
            cfg.limits,
            deadline.min(Instant::now() + cfg.timeouts.inactivity),
        )?,
        None => open_network(cfg, deadline)?,
    };
    if cfg.security == Security::Plaintext {
        // The user said so explicitly (--insecure).
        session.allow_clear_text();
    }
    session.set_deadline_cap(Some(deadline));
    if !preauth {
        let method = match (&cfg.credential, cfg.auth) {
            (Credential::TokenCommand(_), AuthMethod::Auto) => oauth_method(&mut session)?,
            (_, method) => method,
        };
        if matches!(cfg.credential, Credential::TokenCommand(_)) {
            log::debug!("running the OAuth2 token command for a new connection");
        }
        let secret = cfg.credential.obtain()?;
        log::debug!(
            "logging in to {}:{} as {} ({method:?})",
            cfg.host,
            cfg.port,
            cfg.user
        );
        login_with(
            &mut session,
            method,
            &cfg.user,
            &secret,
            &cfg.host,
            cfg.port,
        )?;
    }
    let mut session = finish_login(session, cfg.compress)?;
    session.set_deadline_cap(None);
    Ok(session)
}

/// The bearer-token mechanism to use with a token command: XOAUTH2, else OAUTHBEARER.
fn oauth_method(session: &mut Session) -> Result<AuthMethod> {
    for method in [AuthMethod::XOAuth2, AuthMethod::OAuthBearer] {
        let name = method.sasl_name().unwrap_or_default();
        if session.has_capability(&format!("AUTH={name}")) {
            return Ok(method);
        }
    }
    Err(Error::Auth(
        "the server offers neither AUTH=XOAUTH2 nor AUTH=OAUTHBEARER for the OAuth2 token".into(),
    ))
}

/// TCP, then implicit TLS or STARTTLS: a session ready to log in, and whether the greeting
/// was PREAUTH (accepted only over TLS).
fn open_network(cfg: &ServerConfig, deadline: Instant) -> Result<(Session, bool)> {
    // Each step may also take at most the inactivity timeout.
    let step = || deadline.min(Instant::now() + cfg.timeouts.inactivity);
    let connect_timeout = step()
        .saturating_duration_since(Instant::now())
        .min(Duration::from_secs(30));
    let mut transport = Transport::connect(&cfg.host, cfg.port, connect_timeout)?;
    if cfg.security == Security::Tls {
        transport = transport.start_tls(cfg.tls.clone(), &cfg.host, step())?;
    }
    let (mut session, preauth) =
        Session::start_before(transport, cfg.timeouts.clone(), cfg.limits, step())?;
    session.set_deadline_cap(Some(deadline));
    if cfg.security == Security::StartTls {
        if preauth {
            return Err(Error::Protocol(
                "server greeted with PREAUTH on a plaintext connection; refusing without TLS"
                    .into(),
            ));
        }
        // Asked explicitly so that a failure (a tampered reply) is reported as itself.
        session.capabilities()?;
        if !session.supports(Capability::StartTls) {
            return Err(Error::Tls {
                message: format!(
                    "{} does not offer STARTTLS; use imaps://, or --insecure to log in without TLS",
                    cfg.host
                ),
                certificate: false,
            });
        }
        session = session.start_tls(cfg.tls.clone(), &cfg.host)?;
    }
    Ok((session, preauth))
}

/// After authentication: learn the capabilities afresh and enable what we use.
fn finish_login(mut session: Session, compress: bool) -> Result<Session> {
    session.forget_capabilities();
    // COMPRESS first, so that everything after it (ENABLE, ID, every command) is compressed.
    // A refusal leaves the connection uncompressed and working.
    if compress && session.supports(Capability::CompressDeflate) {
        match session.start_compress() {
            Ok(()) => log::debug!("COMPRESS=DEFLATE on"),
            Err(e) if !e.is_fatal_to_connection() => log::info!("COMPRESS refused: {e}"),
            Err(e) => return Err(e),
        }
    }
    // One ENABLE for everything wanted: UTF8=ACCEPT (names as UTF-8) and QRESYNC
    // (incremental resynchronisation, RFC 7162). Each counts only if the server says ENABLED
    // (RFC 5161); a refusal is no reason to fail: modified UTF-7 and full listings still work.
    let wanted: Vec<String> = ["UTF8=ACCEPT", "QRESYNC"]
        .into_iter()
        .filter(|c| session.has_capability(c) && session.has_capability("ENABLE"))
        .map(String::from)
        .collect();
    if !wanted.is_empty() {
        match session.run(Command::Enable(wanted)) {
            Ok(_) => {}
            Err(e) if !e.is_fatal_to_connection() => {}
            Err(e) => return Err(e),
        }
        let utf8 = session.is_enabled("UTF8=ACCEPT");
        session.set_utf8(utf8);
    }
    // ID (RFC 2971) where offered: providers ask clients to name themselves (Google does),
    // and a server's operators can then tell imapfs apart in their logs. Its answer is only
    // logged; a refusal changes nothing.
    if session.has_capability("ID") {
        let fields = vec![
            ("name".to_string(), "imapfs".to_string()),
            ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ];
        match session.run(Command::Id(fields)) {
            Ok(_) => {}
            Err(e) if !e.is_fatal_to_connection() => log::debug!("ID refused: {e}"),
            Err(e) => return Err(e),
        }
    }
    Ok(session)
}

/// Log in with the best password mechanism the server offers (see [`AuthMethod::Auto`]).
pub fn login(session: &mut Session, user: &str, password: &Secret) -> Result<()> {
    login_with(session, AuthMethod::Auto, user, password, "", 0)
}

/// Log in with `method`. `host` and `port` are only used by OAUTHBEARER, which names them.
/// A failure is [`Error::Auth`] with the server's own words (and, for the bearer-token
/// mechanisms, the error details the server sent in its challenge).
pub fn login_with(
    session: &mut Session,
    method: AuthMethod,
    user: &str,
    secret: &Secret,
    host: &str,
    port: u16,
) -> Result<()> {
    session.capabilities()?;
    let method = match method {
        AuthMethod::Auto => choose_password_method(session)?,
        other => other,
    };
    if matches!(method, AuthMethod::Login | AuthMethod::Plain) && !session.may_send_password() {
        return Err(Error::Auth(
            "refusing to send the password in clear text on a connection without TLS".into(),
        ));
    }
    let sasl = match method {
        // (Auto was resolved above.)
        AuthMethod::Auto | AuthMethod::Login => {
            if session.supports(Capability::LoginDisabled) {
                return Err(Error::Auth(
                    "the server has disabled LOGIN (LOGINDISABLED)".into(),
                ));
            }
            return login_command(session, user, secret);
        }
        AuthMethod::Plain => Sasl::plain(user, secret),
        AuthMethod::CramMd5 => Sasl::cram_md5(user, secret),
        AuthMethod::XOAuth2 => Sasl::xoauth2(user, secret),
        AuthMethod::OAuthBearer => Sasl::oauthbearer(user, secret, host, port),
    };
    let mechanism = sasl.mechanism();
    if !session.has_capability(&format!("AUTH={mechanism}")) {
        return Err(Error::Auth(format!(
            "the server does not offer AUTH={mechanism}"
        )));
    }
    let mut sasl = sasl;
    let result = run_sasl(session, &mut sasl);
    result.map_err(|e| auth_error(e, sasl.server_error()))
}

/// What `auto` means on this connection: the first of AUTHENTICATE PLAIN, LOGIN (unless
/// LOGINDISABLED) and AUTHENTICATE CRAM-MD5 that the server offers. Over TLS (or a tunnel)
/// the first two are as safe as CRAM-MD5 and need no plaintext-equivalent password stored on
/// the server, so they come first; without TLS (unless the user allowed it, `--insecure`)
/// only CRAM-MD5, which never sends the password.
fn choose_password_method(session: &mut Session) -> Result<AuthMethod> {
    let protected = session.may_send_password();
    if protected && session.has_capability("AUTH=PLAIN") {
        Ok(AuthMethod::Plain)
    } else if protected && !session.supports(Capability::LoginDisabled) {
        Ok(AuthMethod::Login)
    } else if session.has_capability("AUTH=CRAM-MD5") {
        Ok(AuthMethod::CramMd5)
    } else {
        let offered: Vec<String> = session
            .capabilities()?
            .iter()
            .filter(|c| c.len() > 5 && c[..5].eq_ignore_ascii_case("AUTH="))
            .map(|c| printable(c).into_owned())
            .collect();
        Err(Error::Auth(format!(
            "the server has disabled LOGIN and offers no password mechanism imapfs can use \
             here (offered: {})",
            if offered.is_empty() {
                "none".to_string()
            } else {
                offered.join(" ")
            }
        )))
    }
}

fn login_command(session: &mut Session, user: &str, secret: &Secret) -> Result<()> {
    let cmd = Command::Login {
        user: user.as_bytes().to_vec(),
        password: secret.expose().to_vec(),
    };
    session.run(cmd).map(drop).map_err(|e| auth_error(e, None))
}

/// A NO or BAD from the server becomes [`Error::Auth`] with its words, or
/// [`Error::TooManyConnections`] when it refuses the login for the number of connections
/// ([`is_connection_cap`]); other errors pass.
fn auth_error(e: Error, detail: Option<String>) -> Error {
    match e {
        Error::No { text, .. } | Error::Bad { text, .. } if is_connection_cap(&text) => {
            Error::TooManyConnections(printable(&text.text).into_owned())
        }
        Error::No { text, .. } | Error::Bad { text, .. } => {
            let words = printable(&text.text).into_owned();
            let words = if words.is_empty() {
                "rejected by the server".to_string()
            } else {
                words
            };
            let words = match (&text.code, text.code == Some(Code::AuthenticationFailed)) {
                (Some(code), false) => format!("[{code:?}] {words}"),
                _ => words,
            };
            match detail {
                Some(d) => Error::Auth(format!("{words} ({d})")),
                None => Error::Auth(words),
            }
        }
        other => other,
    }
}

/// More challenges than any mechanism here needs: a server that keeps asking is cut off.
const MAX_SASL_ROUNDS: u32 = 8;

/// Drive one AUTHENTICATE exchange to its tagged completion.
fn run_sasl(session: &mut Session, sasl: &mut Sasl) -> Result<()> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let initial = sasl.initial_response();
    let use_ir = initial.is_some() && session.supports(Capability::SaslIr);
    let (ir_arg, mut pending) = match initial {
        Some(ir) if use_ir => (
            Some(Secret::new(b64.encode(ir.expose()).into_bytes())),
            None,
        ),
        other => (None, other),
    };
    let ir_string = ir_arg
        .as_ref()
        .map(|s| String::from_utf8_lossy(s.expose()).into_owned());
    let tag = session.send(&Command::Authenticate {
        mechanism: sasl.mechanism().into(),
        initial: ir_string,
    })?;
    let mut rounds = 0;
    loop {
        match session.next_response()? {
            Response::Continue(_) if rounds >= MAX_SASL_ROUNDS => {
                return Err(Error::Protocol(format!(
                    "the server sent more than {MAX_SASL_ROUNDS} authentication challenges"
                )));
            }
            Response::Continue(text) => {
                rounds += 1;
                let reply = match pending.take() {
                    // A client-first mechanism without SASL-IR: the first `+` asks for it.
                    Some(ir) => Some(ir),
                    None => match b64.decode(text.text.trim()) {
                        Ok(challenge) => sasl.step(&challenge),
                        Err(_) => None,
                    },
                };
                match reply {
                    Some(r) => {
                        let line = Secret::new(b64.encode(r.expose()).into_bytes());
                        session.send_line(line.expose())?;
                    }
                    // Nothing sensible to say: cancel the exchange (RFC 3501 section 6.2.2).
                    None => session.send_line(b"*")?,
                }
            }
            Response::Tagged(t) if t.tag == tag => {
                return match t.status {
                    Status::Ok => Ok(()),
                    Status::No => Err(Error::No {
                        command: "AUTHENTICATE",
                        text: t.text,
                    }),
                    _ => Err(Error::Bad {
                        command: "AUTHENTICATE",
                        text: t.text,
                    }),
                };
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names() {
        assert_eq!(AuthMethod::parse("CRAM-MD5"), Some(AuthMethod::CramMd5));
        assert_eq!("xoauth2".parse::<AuthMethod>(), Ok(AuthMethod::XOAuth2));
        assert_eq!(
            AuthMethod::parse("oauthbearer"),
            Some(AuthMethod::OAuthBearer)
        );
        assert_eq!(AuthMethod::default(), AuthMethod::Auto);
        assert!(AuthMethod::parse("kerberos").is_none());
        assert_eq!(AuthMethod::XOAuth2.sasl_name(), Some("XOAUTH2"));
    }

    #[test]
    fn auth_error_carries_server_words_and_details() {
        let text = crate::imap::types::ResponseText {
            code: Some(Code::AuthenticationFailed),
            text: "Invalid credentials (Failure)".into(),
        };
        let e = auth_error(
            Error::No {
                command: "AUTHENTICATE",
                text,
            },
            Some("{\"status\":\"400\"}".into()),
        );
        match e {
            Error::Auth(m) => assert_eq!(m, "Invalid credentials (Failure) ({\"status\":\"400\"})"),
            other => panic!("{other:?}"),
        }
    }
}
