//! Session control from the handle (drop, shutdown, last handle dropped) and API-SSL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use routeros_sim::{SimConfig, SimTls};
use sha2::{Digest, Sha256};

use crate::client::{Client, WAIT};
use crate::{manual, start};

#[tokio::test]
async fn drop_sessions_closes_clients_and_reconnects_work() {
    let sim = start(manual()).await;
    let mut a = Client::admin(sim.local_addr()).await;
    let mut b = Client::admin(sim.local_addr()).await;
    sim.drop_sessions();
    a.expect_eof().await;
    b.expect_eof().await;
    let mut c = Client::admin(sim.local_addr()).await;
    assert_eq!(c.rows(&["/system/identity/print"]).await.len(), 1);
    assert_eq!(sim.stats().sessions_accepted, 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn shutdown_joins_everything_and_stops_listening() {
    let sim = start(manual()).await;
    let addr = sim.local_addr();
    let mut c = Client::admin(addr).await;
    // The client's session is open (logged in) when we shut down: it must be closed and joined.
    tokio::time::timeout(WAIT, sim.clone().shutdown())
        .await
        .expect("shutdown did not finish");
    c.expect_eof().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_server() {
    let sim = start(manual()).await;
    let addr = sim.local_addr();
    drop(sim);
    let deadline = Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn api_ssl_with_a_generated_certificate() {
    let sim = start(SimConfig {
        tls: Some(SimTls::GeneratedSelfSigned),
        ..manual()
    })
    .await;
    let der = sim.tls_cert_der().expect("certificate");
    assert!(sim
        .tls_cert_pem()
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    let fp = sim.tls_fingerprint().unwrap();
    let expected: Vec<String> = Sha256::digest(&der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    assert_eq!(fp, expected.join(":"));

    let mut c = tls_client(&sim).await;
    c.login("admin", "").await;
    assert_eq!(
        c.rows(&["/system/resource/print"]).await[0].get_str("board-name"),
        Some("CHR")
    );
    // A plain-TCP client gets nothing useful from a TLS port.
    let mut plain = Client::connect(sim.local_addr()).await;
    plain.send(&["/login", "=name=admin", "=password="]).await;
    assert!(plain.try_read().await.is_err());
    sim.shutdown().await;
}

/// A TLS client that trusts exactly the simulator's certificate.
pub async fn tls_client(sim: &routeros_sim::SimHandle) -> Client {
    let der = sim.tls_cert_der().expect("certificate");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der.into()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(sim.local_addr())
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .unwrap()
        .expect("TLS handshake with the pinned certificate");
    Client::over(Box::new(tls))
}
