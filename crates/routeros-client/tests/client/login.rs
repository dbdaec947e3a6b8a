//! Login: 6.43+ style, the legacy MD5 challenge, refused credentials, `!fatal` before login.

use routeros_client::{Client, Command, Error, Secret};

use crate::support::{config, serve, still_works, Logs, PASSWORD};

#[tokio::test]
async fn modern_login_then_a_command() {
    let server = serve(|mut c| async move {
        c.login().await;
        let cmd = c.expect("/system/identity/print").await;
        let tag = cmd.tag().unwrap().to_owned();
        c.send_tagged(&tag, &["!re", "=name=MikroTik"]).await;
        c.send_tagged(&tag, &["!done"]).await;
        assert!(c.recv().await.is_some_and(|q| q.path() == "/quit"));
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    assert_eq!(client.router(), "test-router");
    assert_eq!(client.peer_addr(), server.addr);
    assert_eq!(client.local_addr().ip(), server.addr.ip());
    assert_ne!(client.local_addr().port(), server.addr.port());
    let r = client
        .call(Command::new("/system/identity/print"))
        .await
        .unwrap();
    assert_eq!(r.rows.len(), 1);
    assert_eq!(r.rows[0].get_str("name"), Some("MikroTik"));
    client.close().await;
    server.join().await;
}

#[tokio::test]
async fn legacy_challenge_login_sends_the_documented_response() {
    let server = serve(|mut c| async move {
        let first = c.expect("/login").await;
        assert_eq!(first.attr("name"), Some("admin"));
        assert_eq!(first.attr("password"), Some(""));
        c.send(&["!done", "=ret=93b438ec9b80057c06dd9fe67d56aa9a"])
            .await;
        let second = c.expect("/login").await;
        assert_eq!(second.attr("name"), Some("admin"));
        assert_eq!(
            second.attr("response"),
            Some("00e134102a9d330dd7b1849fedfea3cb57")
        );
        assert_eq!(second.attr("password"), None);
        c.send(&["!done"]).await;
        c.answer_done("/system/identity/print", &[]).await;
    })
    .await;
    let mut cfg = config(server.addr);
    cfg.password = Secret::new(String::new());
    let client = Client::connect(cfg).await.unwrap();
    still_works(&client).await;
    server.join().await;
}

#[tokio::test]
async fn bad_credentials_are_login_failed_without_the_password() {
    for message in ["invalid user name or password (6)", "cannot log in"] {
        let (logs, _guard) = Logs::capture();
        let server = serve(move |mut c| async move {
            c.expect("/login").await;
            c.send(&["!trap", &format!("=message={message}")]).await;
            c.send(&["!done"]).await;
        })
        .await;
        let err = Client::connect(config(server.addr)).await.unwrap_err();
        let Error::LoginFailed { router, message: m } = &err else {
            panic!("expected LoginFailed, got {err:?}")
        };
        assert_eq!(router, "test-router");
        assert_eq!(m, message);
        let text = err.to_string();
        assert!(text.contains("test-router"), "{text}");
        assert!(text.contains("check the username and password"), "{text}");
        assert!(text.contains("read,write,api"), "{text}");
        assert!(!err.is_connection_lost());
        assert!(!text.contains(PASSWORD) && !format!("{err:?}").contains(PASSWORD));
        assert!(logs.any(|l| l.contains("login refused")));
        assert!(
            !logs.any(|l| l.contains(PASSWORD)),
            "password leaked into logs: {:?}",
            logs.lines()
        );
        server.join().await;
    }
}

#[tokio::test]
async fn fatal_during_login_is_fatal() {
    let server = serve(|mut c| async move {
        c.expect("/login").await;
        c.send(&["!fatal", "not logged in"]).await;
        c.close().await;
    })
    .await;
    let err = Client::connect(config(server.addr)).await.unwrap_err();
    assert!(
        matches!(&err, Error::Fatal { reason, .. } if reason == "not logged in"),
        "{err:?}"
    );
    server.join().await;
}

#[tokio::test]
async fn command_answered_not_logged_in_closes_the_client() {
    // A router that forgot the session (or a proxy that swallowed the login) answers the
    // first command with `!fatal not logged in` and hangs up.
    let server = serve(|mut c| async move {
        c.login().await;
        c.expect("/interface/print").await;
        c.send(&["!fatal", "not logged in"]).await;
        c.close().await;
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    let err = client
        .call(Command::new("/interface/print"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Fatal { reason, .. } if reason == "not logged in"),
        "{err:?}"
    );
    assert!(err.is_connection_lost());
    assert!(err.to_string().contains("not logged in"));
    assert!(client.is_closed());
    let again = client
        .call(Command::new("/interface/print"))
        .await
        .unwrap_err();
    assert!(matches!(again, Error::Closed { .. }), "{again:?}");
    server.join().await;
}
