//! API-SSL: a rustls (ring) server configuration from a generated self-signed certificate or
//! from PEM files, plus the certificate's SHA-256 fingerprint for pinning.
//!
//! It deliberately does not ask for client certificates and does not offer anonymous
//! Diffie-Hellman (what an unconfigured RouterOS offers, and what modern clients refuse).

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

use crate::config::SimTls;
use crate::error::SimError;

/// A ready TLS acceptor and the leaf certificate it presents.
pub(crate) struct TlsMaterial {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
    pub(crate) cert_der: Vec<u8>,
    pub(crate) cert_pem: String,
}

/// `AB:CD:...`: the SHA-256 fingerprint of a DER certificate, the way certificate tools (and
/// rosguard's `fingerprint` setting) write it.
pub(crate) fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub(crate) fn load(tls: &SimTls) -> Result<TlsMaterial, SimError> {
    let (chain, key, pem) = match tls {
        SimTls::GeneratedSelfSigned => {
            let ck = rcgen::generate_simple_self_signed(vec![
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
                "::1".to_owned(),
            ])
            .map_err(|e| SimError::Tls(format!("cannot generate a certificate: {e}")))?;
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
            (vec![ck.cert.der().clone()], key, ck.cert.pem())
        }
        SimTls::Files { cert, key } => {
            let read_err = |path: &std::path::Path, e: rustls_pki_types::pem::Error| {
                SimError::Tls(format!("{}: {e}", path.display()))
            };
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| read_err(cert, e))?
                .collect::<Result<_, _>>()
                .map_err(|e| read_err(cert, e))?;
            if chain.is_empty() {
                return Err(SimError::Tls(format!(
                    "{}: no certificate found (expected PEM)",
                    cert.display()
                )));
            }
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| read_err(key, e))?;
            let pem = std::fs::read_to_string(cert).map_err(|source| SimError::ReadFile {
                path: cert.clone(),
                source,
            })?;
            (chain, key, pem)
        }
    };
    let cert_der = chain[0].to_vec();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SimError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| SimError::Tls(format!("certificate and key do not fit: {e}")))?;
    Ok(TlsMaterial {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        cert_der,
        cert_pem: pem,
    })
}
