//! SASL mechanisms for AUTHENTICATE: PLAIN, CRAM-MD5, XOAUTH2, OAUTHBEARER. Each builds its
//! initial response and answers challenges; secrets stay in [`Secret`].

use super::*;

/// A SASL client mechanism as a state machine: what to send first, and what to answer to
/// each (base64-decoded) server challenge. `None` from [`Sasl::step`] means "cancel".
#[derive(Debug)]
pub struct Sasl {
    kind: SaslKind,
    /// Challenges answered so far.
    steps: u32,
    /// The server's error report (bearer-token mechanisms), for the user.
    server_error: Option<String>,
}

#[derive(Debug)]
enum SaslKind {
    Plain { response: Secret },
    CramMd5 { user: String, secret: Secret },
    XOAuth2 { response: Secret },
    OAuthBearer { response: Secret },
}

impl Sasl {
    /// PLAIN (RFC 4616): `\0user\0password`, sent first.
    pub fn plain(user: &str, password: &Secret) -> Sasl {
        let mut raw = Vec::with_capacity(user.len() + password.expose().len() + 2);
        raw.push(0);
        raw.extend_from_slice(user.as_bytes());
        raw.push(0);
        raw.extend_from_slice(password.expose());
        Sasl::new(SaslKind::Plain {
            response: Secret::new(raw),
        })
    }

    /// CRAM-MD5 (RFC 2195): the server speaks first; the answer is `user hex(HMAC-MD5)`.
    pub fn cram_md5(user: &str, password: &Secret) -> Sasl {
        Sasl::new(SaslKind::CramMd5 {
            user: user.to_string(),
            secret: password.clone(),
        })
    }

    /// XOAUTH2: `user=U^Aauth=Bearer T^A^A`, sent first.
    pub fn xoauth2(user: &str, token: &Secret) -> Sasl {
        let mut raw = format!("user={user}\x01auth=Bearer ").into_bytes();
        raw.extend_from_slice(token.expose());
        raw.extend_from_slice(b"\x01\x01");
        Sasl::new(SaslKind::XOAuth2 {
            response: Secret::new(raw),
        })
    }

    /// OAUTHBEARER (RFC 7628): a GS2 header naming the user, then host, port and token.
    pub fn oauthbearer(user: &str, token: &Secret, host: &str, port: u16) -> Sasl {
        let saslname = user.replace('=', "=3D").replace(',', "=2C");
        let mut raw =
            format!("n,a={saslname},\x01host={host}\x01port={port}\x01auth=Bearer ").into_bytes();
        raw.extend_from_slice(token.expose());
        raw.extend_from_slice(b"\x01\x01");
        Sasl::new(SaslKind::OAuthBearer {
            response: Secret::new(raw),
        })
    }

    fn new(kind: SaslKind) -> Sasl {
        Sasl {
            kind,
            steps: 0,
            server_error: None,
        }
    }

    /// The mechanism's name for AUTHENTICATE.
    pub fn mechanism(&self) -> &'static str {
        match self.kind {
            SaslKind::Plain { .. } => "PLAIN",
            SaslKind::CramMd5 { .. } => "CRAM-MD5",
            SaslKind::XOAuth2 { .. } => "XOAUTH2",
            SaslKind::OAuthBearer { .. } => "OAUTHBEARER",
        }
    }

    /// The client's first message (raw, not base64) for client-first mechanisms.
    pub fn initial_response(&self) -> Option<Secret> {
        match &self.kind {
            SaslKind::Plain { response }
            | SaslKind::XOAuth2 { response }
            | SaslKind::OAuthBearer { response } => Some(response.clone()),
            SaslKind::CramMd5 { .. } => None,
        }
    }

    /// The answer (raw, not base64) to a server challenge; `None` to cancel.
    pub fn step(&mut self, challenge: &[u8]) -> Option<Secret> {
        self.steps += 1;
        match &self.kind {
            SaslKind::Plain { .. } => None,
            SaslKind::CramMd5 { user, secret } => {
                if self.steps > 1 {
                    return None;
                }
                let mut mac = Hmac::<md5::Md5>::new_from_slice(secret.expose()).ok()?;
                mac.update(challenge);
                let digest = mac.finalize().into_bytes();
                let mut out = format!("{user} ").into_bytes();
                for b in digest {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                Some(Secret::new(out))
            }
            SaslKind::XOAuth2 { .. } | SaslKind::OAuthBearer { .. } => {
                // The token was refused: the challenge is a JSON error report. Keep it for
                // the user and answer as the mechanism requires, so the server sends its NO.
                let report: String = printable_bytes(challenge).chars().take(512).collect();
                self.server_error = Some(report);
                if matches!(self.kind, SaslKind::XOAuth2 { .. }) {
                    Some(Secret::new(Vec::new()))
                } else {
                    Some(Secret::new(vec![0x01]))
                }
            }
        }
    }

    /// The error report the server sent in a challenge, if any.
    pub fn server_error(&self) -> Option<String> {
        self.server_error.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &Secret) -> String {
        base64::engine::general_purpose::STANDARD.encode(s.expose())
    }

    #[test]
    fn plain_encoding() {
        let s = Sasl::plain("tim", &Secret::new(b"tanstaaftanstaaf".to_vec()));
        assert_eq!(s.mechanism(), "PLAIN");
        assert_eq!(
            s.initial_response().unwrap().expose(),
            b"\0tim\0tanstaaftanstaaf"
        );
    }

    #[test]
    fn cram_md5_rfc2195_example() {
        // RFC 2195 section 2: the server's challenge, the user "tim", secret "tanstaaftanstaaf".
        let mut s = Sasl::cram_md5("tim", &Secret::new(b"tanstaaftanstaaf".to_vec()));
        assert!(s.initial_response().is_none());
        let challenge = base64::engine::general_purpose::STANDARD
            .decode("PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+")
            .unwrap();
        assert_eq!(challenge, b"<1896.697170952@postoffice.reston.mci.net>");
        let answer = s.step(&challenge).unwrap();
        assert_eq!(answer.expose(), b"tim b913a602c7eda7a495b4e6e7334d3890");
        assert_eq!(
            b64(&answer),
            "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"
        );
        // A second challenge makes no sense for CRAM-MD5: cancel.
        assert!(s.step(b"again").is_none());
    }

    #[test]
    fn xoauth2_encoding_and_error_challenge() {
        let token = Secret::new(b"ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg".to_vec());
        let mut s = Sasl::xoauth2("someuser@example.com", &token);
        let ir = s.initial_response().unwrap();
        assert_eq!(
            ir.expose(),
            &b"user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01"[..]
        );
        // The server's error: base64 of a JSON report, answered with an empty line.
        let json = br#"{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}"#;
        let reply = s.step(json).unwrap();
        assert!(reply.expose().is_empty());
        assert_eq!(s.server_error().unwrap(), String::from_utf8_lossy(json));
    }

    #[test]
    fn oauthbearer_encoding_and_error_challenge() {
        // RFC 7628 section 4.1, with a user name holding characters the GS2 header escapes.
        let token = Secret::new(b"vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==".to_vec());
        let mut s = Sasl::oauthbearer("user,x=y@example.com", &token, "server.example.com", 143);
        assert_eq!(
            s.initial_response().unwrap().expose(),
            &b"n,a=user=2Cx=3Dy@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01"[..]
        );
        let reply = s.step(br#"{"status":"invalid_token"}"#).unwrap();
        assert_eq!(reply.expose(), b"\x01");
        assert_eq!(s.server_error().unwrap(), r#"{"status":"invalid_token"}"#);
    }
}
