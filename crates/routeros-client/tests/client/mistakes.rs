//! Connection mistakes, each against a real listener, each answered with an error that names
//! the fix: plain TCP on an API-SSL port, TLS on a plain API port, and a port that is not the
//! RouterOS API at all. None of them may show the password, in the error or in the logs.

use std::time::Duration;

use routeros_client::{Client, Error, TlsConfig};
use routeros_proto::encode_sentence;
use tokio::io::AsyncWriteExt;

use crate::support::{config, read_some, serve_tcp, until_eof, Logs, PASSWORD};
use crate::tls::pki;

/// The password is nowhere in the error or the captured logs.
fn assert_no_password(err: &Error, logs: &Logs) {
    assert!(!err.to_string().contains(PASSWORD), "{err}");
    assert!(!format!("{err:?}").contains(PASSWORD), "{err:?}");
    assert!(
        !logs.any(|l| l.contains(PASSWORD)),
        "password in the logs: {:?}",
        logs.lines()
    );
}

/// Plain TCP to an API-SSL port: the TLS server takes the `/login` for a broken record and
/// answers with a TLS alert.
#[tokio::test]
async fn plain_client_on_an_api_ssl_port_says_set_tls() {
    let (logs, _guard) = Logs::capture();
    let acceptor = pki().acceptor;
    let server = serve_tcp(|tcp| async move {
        let refused = acceptor.accept(tcp).await;
        assert!(refused.is_err(), "a plain /login passed as a TLS handshake");
    })
    .await;
    let err = Client::connect(config(server.addr)).await.unwrap_err();
    let Error::TlsPort { router, address } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(router, "test-router");
    assert_eq!(address, &server.addr.to_string());
    assert!(
        err.to_string()
            .ends_with("so it is an API-SSL port; set tls = true or use port 8728"),
        "{err}"
    );
    assert!(err.is_connection_lost());
    assert_no_password(&err, &logs);
    server.join().await;
}

/// An API-SSL port that hangs up on garbage without an alert: the end of the connection
/// before any answer carries the same hint.
#[tokio::test]
async fn plain_client_on_a_port_that_hangs_up_says_set_tls() {
    let server = serve_tcp(|mut tcp| async move {
        read_some(&mut tcp).await.unwrap();
        tcp.shutdown().await.unwrap();
    })
    .await;
    let err = Client::connect(config(server.addr)).await.unwrap_err();
    let Error::Io { source, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(source.kind(), std::io::ErrorKind::UnexpectedEof);
    let text = err.to_string();
    assert!(text.contains("before answering the login"), "{text}");
    assert!(text.contains("set tls = true or use port 8728"), "{text}");
    assert!(text.contains("/ip service print"), "{text}");
    server.join().await;
}

/// TLS to a plain API port. What the router does with a ClientHello it reads as words is not
/// known; each way it can go names the fix: it answers like the API (`!fatal`), it hangs up,
/// or it waits for the rest of the "sentence" until `connect_timeout`.
#[tokio::test]
async fn tls_client_on_a_plain_api_port_says_set_tls_false() {
    for answer in ["fatal", "hang up"] {
        let server = serve_tcp(move |mut tcp| async move {
            let hello = read_some(&mut tcp).await.unwrap();
            assert_eq!(hello[0], 0x16, "not a TLS handshake record");
            if answer == "fatal" {
                let mut out = Vec::new();
                encode_sentence(["!fatal", "not logged in"], &mut out);
                tcp.write_all(&out).await.unwrap();
            }
            tcp.shutdown().await.unwrap();
            until_eof(&mut tcp).await;
        })
        .await;
        let mut cfg = config(server.addr);
        cfg.tls = Some(TlsConfig::Insecure);
        let err = Client::connect(cfg).await.unwrap_err();
        let Error::Tls { message, .. } = &err else {
            panic!("{answer}: {err:?}")
        };
        assert!(
            message.contains("set tls = false, or use the API-SSL port 8729"),
            "{answer}: {message}"
        );
        assert!(err.is_connection_lost());
        server.join().await;
    }
}

#[tokio::test]
async fn tls_client_on_a_silent_plain_api_port_times_out_with_the_hint() {
    let server = serve_tcp(|mut tcp| async move {
        read_some(&mut tcp).await.unwrap();
        // The ClientHello is in; the "router" waits for the rest of a sentence. Nothing is
        // in flight, so time may jump to the handshake timeout.
        tokio::time::pause();
        until_eof(&mut tcp).await;
    })
    .await;
    let mut cfg = config(server.addr);
    cfg.tls = Some(TlsConfig::Insecure);
    let err = Client::connect(cfg).await.unwrap_err();
    let Error::Timeout {
        what,
        setting,
        after,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(
        (*setting, *after),
        ("connect_timeout", Duration::from_secs(10))
    );
    assert!(what.contains("the TLS handshake with"), "{what}");
    assert!(
        what.contains("set tls = false, or use the API-SSL port 8729"),
        "{what}"
    );
    server.join().await;
}

/// A web server on the port: it answers `HTTP/1.1 400` and keeps the connection open. The
/// client must tell at once, not wait for the rest of a 72-byte "word" starting at `H`.
#[tokio::test]
async fn http_server_on_the_port_is_not_the_api() {
    let (logs, _guard) = Logs::capture();
    let server = serve_tcp(|mut tcp| async move {
        read_some(&mut tcp).await.unwrap();
        tcp.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        until_eof(&mut tcp).await;
    })
    .await;
    let err = Client::connect(config(server.addr)).await.unwrap_err();
    let Error::NotApi { found, address, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(found, "an HTTP response (\"HTTP/1.1 400 Bad Request\")");
    assert_eq!(address, &server.addr.to_string());
    assert!(
        err.to_string().ends_with(
            "this is not the RouterOS API; it listens on 8728 (API) / 8729 (API-SSL), see /ip \
             service print"
        ),
        "{err}"
    );
    assert!(err.is_connection_lost());
    assert_no_password(&err, &logs);
    server.join().await;
}

/// A port that speaks first (SSH), and one that echoes the login back: both are not the API,
/// and the echo, which holds the password, does not leak it into the error.
#[tokio::test]
async fn banner_and_echo_ports_are_not_the_api_and_hide_the_password() {
    let (logs, _guard) = Logs::capture();
    for peer in ["ssh", "echo"] {
        let server = serve_tcp(move |mut tcp| async move {
            if peer == "ssh" {
                tcp.write_all(b"SSH-2.0-ROSSSH\r\n").await.unwrap();
            } else {
                let login = read_some(&mut tcp).await.unwrap();
                assert!(login
                    .windows(PASSWORD.len())
                    .any(|w| w == PASSWORD.as_bytes()));
                tcp.write_all(&login).await.unwrap();
            }
            until_eof(&mut tcp).await;
        })
        .await;
        let err = Client::connect(config(server.addr)).await.unwrap_err();
        let Error::NotApi { found, .. } = &err else {
            panic!("{peer}: {err:?}")
        };
        assert!(
            found.starts_with("bytes that are not a RouterOS reply"),
            "{found}"
        );
        let expected = if peer == "ssh" { "SSH-2.0" } else { "/login" };
        assert!(found.contains(expected), "{peer}: {found}");
        assert_no_password(&err, &logs);
        server.join().await;
    }
}
