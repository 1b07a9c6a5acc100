//! TLS policy: which server certificates are trusted. The system roots or a CA file
//! ([`tls_config`]), with a certificate from the CA file also accepted when the server presents
//! exactly it; or one certificate pinned by its SHA-256 fingerprint ([`tls_config_pinned`]).
//! Certificate failures are described in plain words ([`certificate_problem`]).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::{Error, Result};

/// Build the TLS client configuration: the system roots, or only the certificates in `ca_file`.
///
/// A certificate in `ca_file` is also accepted when the server presents exactly it as its own
/// certificate (a pinned self-signed certificate, as many private servers use), even if it is
/// marked as a CA, which the WebPKI rules alone would refuse. Anything else must chain to a
/// trusted root and match the host name.
pub fn tls_config(ca_file: Option<&std::path::Path>) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    let mut pinned = Vec::new();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| {
                Error::Config(format!("cannot read CA file {}: {e}", path.display()))
            })?;
            for cert in certs {
                let cert = cert.map_err(|e| {
                    Error::Config(format!("bad certificate in {}: {e}", path.display()))
                })?;
                roots.add(cert.clone()).map_err(|e| {
                    Error::Config(format!("unusable certificate in {}: {e}", path.display()))
                })?;
                pinned.push(cert);
            }
            if roots.is_empty() {
                return Err(Error::Config(format!(
                    "no certificate in {}",
                    path.display()
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A broken system certificate is skipped, as every TLS client does.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(Error::Config(
                    "no system CA certificates found (install ca-certificates or use --ca-file)"
                        .into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| Error::Config(format!("TLS setup: {e}")))?;
    let verifier = Arc::new(PinnedOrWebPki { webpki, pinned });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A SHA-256 certificate fingerprint, as `--tls-fingerprint sha256:HEX` gives it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// Parse `sha256:HEX`; the prefix is optional, and the hex may be in either case and
    /// separated by colons (as `openssl x509 -fingerprint -sha256` prints it).
    pub fn parse(s: &str) -> std::result::Result<Fingerprint, String> {
        let s = s.trim();
        let hex = match s.split_once(':') {
            Some((algo, rest)) if algo.eq_ignore_ascii_case("sha256") => rest,
            Some((algo, _)) if algo.len() > 2 => {
                return Err(format!(
                    "only sha256 fingerprints are supported, not {algo}"
                ))
            }
            _ => s,
        };
        let digits: Vec<u8> = hex.bytes().filter(|&b| b != b':').collect();
        let mut out = [0u8; 32];
        let value = |d: u8| (d as char).to_digit(16);
        if digits.len() != 64 || digits.iter().any(|&d| value(d).is_none()) {
            return Err("expected sha256: and 64 hex digits".into());
        }
        for (i, pair) in digits.chunks(2).enumerate() {
            out[i] = (value(pair[0]).unwrap_or(0) * 16 + value(pair[1]).unwrap_or(0)) as u8;
        }
        Ok(Fingerprint(out))
    }

    /// The fingerprint of a DER certificate.
    pub fn of(der: &[u8]) -> Fingerprint {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Fingerprint(out)
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("sha256:")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// A TLS configuration that accepts exactly the server certificate whose SHA-256 is
/// `fingerprint`, whoever signed it and whatever names it holds; the handshake signature is
/// still checked against that certificate's key, so only the holder of its private key passes.
pub fn tls_config_pinned(fingerprint: Fingerprint) -> Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(FingerprintPin {
        expected: fingerprint,
        algorithms: provider.signature_verification_algorithms,
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct FingerprintPin {
    expected: Fingerprint,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

/// The server's certificate is not the pinned one.
#[derive(Debug)]
struct FingerprintMismatch(Fingerprint);

impl std::fmt::Display for FingerprintMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "its fingerprint is {}, not the one given with --tls-fingerprint",
            self.0
        )
    }
}

impl std::error::Error for FingerprintMismatch {}

impl ServerCertVerifier for FingerprintPin {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let presented = Fingerprint::of(end_entity.as_ref());
        if presented == self.expected {
            return Ok(ServerCertVerified::assertion());
        }
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Other(rustls::OtherError(Arc::new(FingerprintMismatch(
                presented,
            )))),
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// WebPKI verification, plus exact matches of certificates the user pinned with --ca-file.
#[derive(Debug)]
struct PinnedOrWebPki {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for PinnedOrWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(v) => Ok(v),
            Err(e)
                if self
                    .pinned
                    .iter()
                    .any(|p| p.as_ref() == end_entity.as_ref()) =>
            {
                log::debug!("accepting the pinned certificate from --ca-file ({e})");
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// A certificate problem in words a user can act on.
pub(crate) fn certificate_problem(c: &rustls::CertificateError, peer: &str) -> String {
    use rustls::CertificateError as C;
    let what = match c {
        C::UnknownIssuer | C::BadSignature => {
            "it is not signed by a trusted authority (for a private server, give its certificate \
             or CA with --ca-file)"
                .to_string()
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "it is not valid for this host name".to_string()
        }
        C::Expired | C::ExpiredContext { .. } => "it has expired".to_string(),
        C::NotValidYet | C::NotValidYetContext { .. } => "it is not valid yet".to_string(),
        C::Revoked => "it has been revoked".to_string(),
        C::Other(o) if o.0.downcast_ref::<FingerprintMismatch>().is_some() => o.0.to_string(),
        C::Other(o) if format!("{o:?}").contains("CaUsedAsEndEntity") => {
            "the server presents a CA certificate as its own (pin it with --ca-file)".to_string()
        }
        other => format!("{other:?}"),
    };
    format!("the certificate of {peer} was rejected: {what}")
}
