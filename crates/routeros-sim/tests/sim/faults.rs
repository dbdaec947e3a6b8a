//! Fault injection: delays, closes, fatal, garbage, oversized prefix, refused logins,
//! session limits.

use std::time::{Duration, Instant};

use routeros_proto::{ProtoError, ReplyKind};
use routeros_sim::{Faults, SimConfig};

use crate::client::{kinds, Client, ReadError, WAIT};
use crate::{manual, start};

#[tokio::test]
async fn reply_delay() {
    let sim = start(manual()).await;
    let mut c = Client::admin(sim.local_addr()).await;
    sim.set_faults(Faults {
        reply_delay: Some(Duration::from_millis(300)),
        ..Faults::default()
    });
    let t = Instant::now();
    assert_eq!(c.rows(&["/system/identity/print"]).await.len(), 1);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn close_fatal_garbage_oversized_after_n_sentences() {
    // Login answers with one sentence (!done); the fault fires on the next one.
    let cases: [(Faults, &str); 4] = [
        (
            Faults {
                close_after_sentences: Some(1),
                ..Faults::default()
            },
            "close",
        ),
        (
            Faults {
                fatal_after_sentences: Some(1),
                ..Faults::default()
            },
            "fatal",
        ),
        (
            Faults {
                garbage_after_sentences: Some(1),
                ..Faults::default()
            },
            "garbage",
        ),
        (
            Faults {
                oversized_prefix_after_sentences: Some(1),
                ..Faults::default()
            },
            "oversized",
        ),
    ];
    for (faults, what) in cases {
        let sim = start(SimConfig { faults, ..manual() }).await;
        let mut c = Client::admin(sim.local_addr()).await;
        c.send(&["/system/identity/print"]).await;
        let got = c.try_read().await;
        match what {
            "close" => assert!(
                matches!(got, Err(ReadError::Eof | ReadError::Io(_))),
                "{got:?}"
            ),
            "fatal" => {
                let r = got.unwrap();
                assert_eq!(r.kind(), ReplyKind::Fatal);
                assert_eq!(r.message().as_deref(), Some("simulated failure"));
                c.expect_eof().await;
            }
            "garbage" => assert!(
                matches!(got, Err(ReadError::Proto(ProtoError::ControlByte(_)))),
                "{got:?}"
            ),
            _ => assert!(
                matches!(got, Err(ReadError::Proto(ProtoError::WordTooLong { .. }))),
                "{got:?}"
            ),
        }
        drop(c);
        // Other sessions and the server are unaffected once the fault is cleared.
        sim.set_faults(Faults::default());
        let mut c = Client::admin(sim.local_addr()).await;
        assert_eq!(c.rows(&["/system/identity/print"]).await.len(), 1, "{what}");
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn refused_logins() {
    let sim = start(SimConfig {
        faults: Faults {
            refuse_logins: true,
            ..Faults::default()
        },
        ..manual()
    })
    .await;
    let mut c = Client::connect(sim.local_addr()).await;
    let r = c.call(&["/login", "=name=admin", "=password="]).await;
    assert_eq!(kinds(&r), [ReplyKind::Trap, ReplyKind::Done]);
    assert_eq!(
        r[0].message().as_deref(),
        Some("invalid user name or password (6)")
    );
    sim.set_faults(Faults::default());
    c.login("admin", "").await;
    sim.shutdown().await;
}

#[tokio::test]
async fn too_many_sessions() {
    let sim = start(SimConfig {
        max_sessions: Some(1),
        ..manual()
    })
    .await;
    let mut first = Client::admin(sim.local_addr()).await;
    let mut second = Client::connect(sim.local_addr()).await;
    second.send(&["/login", "=name=admin", "=password="]).await;
    let r = second.read().await;
    assert_eq!(r.kind(), ReplyKind::Fatal);
    assert_eq!(r.message().as_deref(), Some("too many sessions"));
    second.expect_eof().await;
    assert_eq!(sim.stats().sessions_refused, 1);
    // Once the first leaves, there is room again.
    first.call(&["/quit"]).await;
    drop(first);
    let deadline = Instant::now() + WAIT;
    while sim.stats().sessions_active > 0 {
        assert!(Instant::now() < deadline, "sessions did not end");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut third = Client::admin(sim.local_addr()).await;
    assert_eq!(third.rows(&["/system/identity/print"]).await.len(), 1);
    sim.shutdown().await;
}
