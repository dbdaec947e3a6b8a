//! API-SSL: CA-file verification, a pinned fingerprint (match and mismatch), insecure mode.
//! Certificates are made per test with rcgen: a CA and a leaf for `localhost`/127.0.0.1.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use routeros_client::{format_fingerprint, Client, Error, TlsConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

use crate::support::{config, serve_tls, still_works, Logs, TestServer};

pub struct Pki {
    ca_pem: String,
    leaf_der: CertificateDer<'static>,
    pub acceptor: TlsAcceptor,
}

/// A fresh CA, a leaf for localhost/127.0.0.1, and a TLS acceptor serving the leaf.
pub fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "rosguard test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();

    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "router");
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let leaf_der = leaf.der().clone();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf_der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        leaf_der,
        acceptor: TlsAcceptor::from(Arc::new(server_config)),
    }
}

/// A uniquely named file under the temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "routeros-client-test-{}-{name}",
            std::process::id()
        ));
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A TLS server that accepts the login and answers one identity print.
async fn tls_router(pki: &Pki) -> TestServer {
    serve_tls(pki.acceptor.clone(), |mut c| async move {
        c.login().await;
        c.answer_done("/system/identity/print", &[]).await;
    })
    .await
}

async fn connect_and_call(server: TestServer, tls: TlsConfig, name: Option<&str>) {
    let mut cfg = config(server.addr);
    cfg.tls = Some(tls);
    cfg.tls_server_name = name.map(str::to_owned);
    let client = Client::connect(cfg).await.unwrap();
    still_works(&client).await;
    server.join().await;
}

#[tokio::test]
async fn ca_file_verifies_by_ip_and_by_name() {
    let pki = pki();
    let ca = TempFile::new("ca-ok.pem", &pki.ca_pem);
    // Default server name: the host part of the address, 127.0.0.1 (an IP SAN).
    connect_and_call(
        tls_router(&pki).await,
        TlsConfig::CaFile(ca.0.clone()),
        None,
    )
    .await;
    connect_and_call(
        tls_router(&pki).await,
        TlsConfig::CaFile(ca.0.clone()),
        Some("localhost"),
    )
    .await;
}

#[tokio::test]
async fn ca_file_with_the_wrong_ca_or_name_is_a_tls_error() {
    let pki = pki();
    let other = self::pki();
    let wrong_ca = TempFile::new("ca-wrong.pem", &other.ca_pem);
    let right_ca = TempFile::new("ca-right.pem", &pki.ca_pem);
    for (ca, name) in [(&wrong_ca, None), (&right_ca, Some("router.example"))] {
        let server = tls_router(&pki).await;
        let mut cfg = config(server.addr);
        cfg.tls = Some(TlsConfig::CaFile(ca.0.clone()));
        cfg.tls_server_name = name.map(str::to_owned);
        let err = Client::connect(cfg).await.unwrap_err();
        let Error::Tls { message, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(message.contains("certificate was rejected"), "{message}");
        assert!(message.contains(&ca.0.display().to_string()), "{message}");
        assert!(err.is_connection_lost());
        server.join().await;
    }
    // A CA file that cannot be read (it is read after the TCP connect).
    let server = tls_router(&pki).await;
    let mut cfg = config(server.addr);
    cfg.tls = Some(TlsConfig::CaFile("/nonexistent/ca.pem".into()));
    let err = Client::connect(cfg).await.unwrap_err();
    assert!(
        matches!(&err, Error::Tls { message, .. } if message.contains("cannot read CA file /nonexistent/ca.pem")),
        "{err:?}"
    );
}

#[tokio::test]
async fn pinned_fingerprint_matches() {
    let pki = pki();
    let fp: [u8; 32] = Sha256::digest(pki.leaf_der.as_ref()).into();
    // Name and CA are ignored when pinning: a name not in the certificate still works.
    connect_and_call(
        tls_router(&pki).await,
        TlsConfig::Fingerprint(fp),
        Some("not-in-the-cert.example"),
    )
    .await;
}

#[tokio::test]
async fn pinned_fingerprint_mismatch_shows_what_was_seen() {
    let pki = pki();
    let seen: [u8; 32] = Sha256::digest(pki.leaf_der.as_ref()).into();
    let pinned = [0x42u8; 32];
    let server = tls_router(&pki).await;
    let mut cfg = config(server.addr);
    cfg.tls = Some(TlsConfig::Fingerprint(pinned));
    let err = Client::connect(cfg).await.unwrap_err();
    let Error::Tls { router, message } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(router, "test-router");
    assert!(message.contains("fingerprint mismatch"), "{message}");
    assert!(message.contains(&format_fingerprint(&seen)), "{message}");
    assert!(message.contains(&format_fingerprint(&pinned)), "{message}");
    server.join().await;
}

#[tokio::test]
async fn insecure_connects_and_warns_every_time() {
    let (logs, _guard) = Logs::capture();
    let pki = pki();
    for round in 1..=2 {
        connect_and_call(tls_router(&pki).await, TlsConfig::Insecure, None).await;
        let warnings = logs
            .lines()
            .into_iter()
            .filter(|l| l.starts_with("WARN") && l.contains("verification is OFF"))
            .count();
        assert_eq!(warnings, round, "{:?}", logs.lines());
    }
}
