//! TLS for API-SSL: rustls (ring provider) with CA-file verification, a pinned SHA-256
//! certificate fingerprint, or an explicit, loudly logged "insecure" mode.
//!
//! It turns rustls failures into one [`Error::Tls`] line that says what to check. It
//! deliberately offers no client certificates, no system trust store and no session resumption:
//! a router's API-SSL certificate is either signed by a CA the operator names, or pinned.

use std::io;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::{ClientConfig, TlsConfig};
use crate::error::Error;

/// `AB:CD:...`: a SHA-256 fingerprint the way certificate tools print it.
pub fn format_fingerprint(fingerprint: &[u8; 32]) -> String {
    let mut out = String::with_capacity(32 * 3);
    for (i, b) in fingerprint.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02X}"));
    }
    out
}

/// Parses a SHA-256 fingerprint written as 64 hex digits, with or without `:` separators,
/// in any case. `None` when it is not exactly 32 bytes of hex.
pub fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let digits: String = text
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect();
    let bytes = hex::decode(digits).ok()?;
    bytes.try_into().ok()
}

fn sha256(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// Wraps an established TCP stream in TLS according to `tls`.
pub(crate) async fn handshake(
    cfg: &ClientConfig,
    tls: &TlsConfig,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>, Error> {
    let router = &cfg.router;
    let tls_error = |message: String| Error::Tls {
        router: router.clone(),
        message,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(format!("cannot set up TLS: {e}")))?;
    let seen = Arc::new(Mutex::new(None));
    let client_config = match tls {
        TlsConfig::CaFile(path) => {
            let roots = load_roots(path).map_err(tls_error)?;
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsConfig::Fingerprint(expected) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                expected: Some(*expected),
                seen: seen.clone(),
                provider: provider.clone(),
            }))
            .with_no_client_auth(),
        TlsConfig::Insecure => {
            tracing::warn!(
                router = %router,
                address = %cfg.address,
                "TLS certificate verification is OFF (tls_insecure = true): anyone on the path can \
                 impersonate this router; pin its certificate fingerprint instead"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                    expected: None,
                    seen: seen.clone(),
                    provider: provider.clone(),
                }))
                .with_no_client_auth()
        }
    };
    let name = cfg
        .tls_server_name
        .clone()
        .unwrap_or_else(|| cfg.host().to_owned());
    let server_name = ServerName::try_from(name.clone()).map_err(|_| {
        tls_error(format!(
            "{name:?} is not a valid TLS server name; set tls_server_name to the name in the \
             router's certificate"
        ))
    })?;
    let connector = TlsConnector::from(Arc::new(client_config));
    match connector.connect(server_name, tcp).await {
        Ok(stream) => {
            if let Some(fp) = *seen.lock().unwrap_or_else(|e| e.into_inner()) {
                tracing::debug!(router = %router, fingerprint = %format_fingerprint(&fp), "TLS established");
            }
            Ok(stream)
        }
        Err(e) => {
            let seen = *seen.lock().unwrap_or_else(|e| e.into_inner());
            Err(tls_error(describe_handshake_error(tls, &name, seen, &e)))
        }
    }
}

fn load_roots(path: &std::path::Path) -> Result<RootCertStore, String> {
    let pem = std::fs::read(path).map_err(|e| {
        format!(
            "cannot read CA file {}: {e}; check the path and its permissions",
            path.display()
        )
    })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| {
            format!(
                "CA file {} is not valid PEM ({e}); it must hold PEM certificates",
                path.display()
            )
        })?;
        roots.add(cert).map_err(|e| {
            format!(
                "CA file {} holds a certificate that cannot be a trust anchor: {e}",
                path.display()
            )
        })?;
    }
    if roots.is_empty() {
        return Err(format!(
            "CA file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(roots)
}

fn describe_handshake_error(
    tls: &TlsConfig,
    name: &str,
    seen: Option<[u8; 32]>,
    e: &io::Error,
) -> String {
    if let (TlsConfig::Fingerprint(expected), Some(seen)) = (tls, seen) {
        if seen != *expected {
            return format!(
                "certificate fingerprint mismatch: the router presented SHA-256 {}, but {} is \
                 pinned; if the router's certificate was replaced on purpose, pin the new \
                 fingerprint, otherwise something is impersonating the router",
                format_fingerprint(&seen),
                format_fingerprint(expected)
            );
        }
    }
    let rustls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match (rustls_error, tls) {
        (Some(rustls::Error::InvalidCertificate(c)), TlsConfig::CaFile(path)) => format!(
            "the router's certificate was rejected ({c:?}); check that {} holds the CA that \
             signed it and that {name:?} (tls_server_name) is a name in the certificate",
            path.display()
        ),
        (Some(r @ (rustls::Error::PeerIncompatible(_) | rustls::Error::AlertReceived(_))), _) => {
            format!(
                "handshake failed ({r}); the router may have no certificate for api-ssl: give \
                 it one (/ip service set api-ssl certificate=...)"
            )
        }
        // What a plain API port sends back (a RouterOS reply, or nothing but EOF) is no TLS.
        (Some(r @ rustls::Error::InvalidMessage(_)), _) => format!(
            "handshake failed ({r}): the router answered with bytes that are not TLS, so this \
             looks like the plain API port; set tls = false, or use the API-SSL port 8729"
        ),
        (Some(r), _) => format!("handshake failed: {r}"),
        (None, _) if e.kind() == io::ErrorKind::UnexpectedEof => {
            "the router closed the connection during the handshake: if this is the plain API \
             port, set tls = false, or use the API-SSL port 8729; otherwise check that api-ssl \
             is enabled (/ip service print)"
                .to_owned()
        }
        (None, _) => format!(
            "handshake failed: {e}; check that the address is the API-SSL port (8729) and that \
             api-ssl is enabled (/ip service print)"
        ),
    }
}

/// Accepts exactly one end-entity certificate by SHA-256 (`expected: Some`), or any
/// certificate (`expected: None`, insecure mode). Signatures are verified either way, so the
/// peer must hold the certificate's private key.
#[derive(Debug)]
struct PinnedVerifier {
    expected: Option<[u8; 32]>,
    seen: Arc<Mutex<Option<[u8; 32]>>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = sha256(end_entity.as_ref());
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(fp);
        match self.expected {
            Some(expected) if expected != fp => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_round_trip() {
        let mut fp = [0u8; 32];
        fp[0] = 0xAB;
        fp[31] = 0x01;
        let text = format_fingerprint(&fp);
        assert!(text.starts_with("AB:00:"));
        assert!(text.ends_with(":01"));
        assert_eq!(text.len(), 32 * 3 - 1);
        assert_eq!(parse_fingerprint(&text), Some(fp));
        assert_eq!(
            parse_fingerprint(&text.replace(':', "").to_lowercase()),
            Some(fp)
        );
        assert_eq!(parse_fingerprint("AB:CD"), None);
        assert_eq!(parse_fingerprint(&"zz".repeat(32)), None);
    }
}
