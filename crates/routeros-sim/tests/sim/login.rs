//! Login both ways, bad credentials, commands before login.

use routeros_proto::{login::challenge_response, ReplyKind};
use routeros_sim::SimConfig;

use crate::client::{kinds, Client};
use crate::{manual, start};

#[tokio::test]
async fn modern_login_and_bad_credentials_keep_the_connection() {
    let sim = start(SimConfig {
        users: vec![
            ("admin".into(), String::new()),
            ("ops".into(), "s3cret".into()),
        ],
        ..manual()
    })
    .await;
    let mut c = Client::connect(sim.local_addr()).await;
    let r = c
        .call(&["/login", "=name=ops", "=password=wrong", ".tag=1"])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Trap, ReplyKind::Done]);
    assert_eq!(
        r[0].message().as_deref(),
        Some("invalid user name or password (6)")
    );
    assert!(r.iter().all(|x| x.tag() == Some("1")));
    // Still open: a right password works on the same connection.
    c.login("ops", "s3cret").await;
    let rows = c.rows(&["/system/identity/print"]).await;
    assert_eq!(rows[0].get_str("name"), Some("MikroTik"));
    let stats = sim.stats();
    assert_eq!((stats.logins, stats.failed_logins), (1, 1));
    sim.shutdown().await;
}

#[tokio::test]
async fn challenge_login_on_a_modern_router_and_in_legacy_mode() {
    for legacy in [false, true] {
        let sim = start(SimConfig {
            legacy_login: legacy,
            users: vec![("admin".into(), "pw".into())],
            ..manual()
        })
        .await;
        let mut c = Client::connect(sim.local_addr()).await;
        // A 6.43+ client sends name+password first; a legacy router answers with a challenge.
        let first = if legacy {
            c.call(&["/login", "=name=admin", "=password=pw"]).await
        } else {
            c.call(&["/login"]).await
        };
        assert_eq!(kinds(&first), [ReplyKind::Done]);
        let challenge = first[0].ret().expect("=ret= challenge").to_owned();
        assert_eq!(challenge.len(), 32);
        assert!(challenge.bytes().all(|b| b.is_ascii_hexdigit()));
        // A wrong response is refused...
        let bad = challenge_response(b"nope", &challenge).unwrap();
        let r = c
            .call(&["/login", "=name=admin", &format!("=response={bad}")])
            .await;
        assert_eq!(kinds(&r), [ReplyKind::Trap, ReplyKind::Done]);
        // ...and needs a fresh challenge; the right one logs in.
        let ch = c.call(&["/login"]).await[0].ret().unwrap().to_owned();
        let good = challenge_response(b"pw", &ch).unwrap();
        let r = c
            .call(&["/login", "=name=admin", &format!("=response={good}")])
            .await;
        assert_eq!(kinds(&r), [ReplyKind::Done], "legacy={legacy}: {r:?}");
        assert_eq!(c.rows(&["/system/resource/print"]).await.len(), 1);
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn command_before_login_is_fatal_and_closes() {
    let sim = start(manual()).await;
    let mut c = Client::connect(sim.local_addr()).await;
    let r = c.call(&["/ip/firewall/connection/print", ".tag=9"]).await;
    assert_eq!(kinds(&r), [ReplyKind::Fatal]);
    assert_eq!(r[0].message().as_deref(), Some("not logged in"));
    c.expect_eof().await;
    sim.shutdown().await;
}
