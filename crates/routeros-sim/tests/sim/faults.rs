//! Fault injection: delays, closes, fatal, garbage, oversized prefix, refused logins,
//! session limits, endless and trickling prints, silent commands, wrong tags, permission
//! traps, a bad row mid-stream, vanishing connections.

use std::time::{Duration, Instant};

use routeros_proto::{ProtoError, ReplyKind};
use routeros_sim::{
    BadRow, BadRowKind, Family, Faults, PathMatch, Silent, SimConfig, SimConnection, Trickle,
    WrongTag, WrongTags,
};

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

const CONN: &str = "/ip/firewall/connection/print";

fn seed3(sim: &routeros_sim::SimHandle) -> Vec<String> {
    let sa = |s: &str| -> std::net::SocketAddr { s.parse().unwrap() };
    (0..3)
        .map(|i| {
            sim.add_connection(
                SimConnection::tcp(
                    sa(&format!("192.168.88.{}:40000", 10 + i)),
                    sa("203.0.113.45:443"),
                )
                .packets(5, 1),
            )
        })
        .collect()
}

/// Reads replies of one tag until `!trap`+`!done` after a `/cancel`: the print stops.
async fn cancel_and_expect_interrupted(c: &mut Client, tag: &str) {
    c.send(&["/cancel", &format!("=tag={tag}"), ".tag=c"]).await;
    loop {
        let r = c.read().await;
        match (r.kind(), r.tag()) {
            (ReplyKind::Re, Some(t)) if t == tag => {}
            (ReplyKind::Trap, Some(t)) if t == tag => {
                assert_eq!(r.message().as_deref(), Some("interrupted"));
                break;
            }
            other => panic!("unexpected {other:?} {r:?}"),
        }
    }
    let r = c.read().await;
    assert_eq!((r.kind(), r.tag()), (ReplyKind::Done, Some(tag)));
    let r = c.read().await;
    assert_eq!((r.kind(), r.tag()), (ReplyKind::Done, Some("c")));
}

#[tokio::test]
async fn endless_prints_stream_forever_with_backpressure() {
    let sim = start(manual()).await;
    let seeded = seed3(&sim);
    sim.set_faults(Faults {
        endless: PathMatch::prefixes(["/ip/firewall/connection", "/ip/route"]),
        ..Faults::default()
    });
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(32 * 1024).unwrap();
    let recv_buffer = u64::from(socket.recv_buffer_size().unwrap());
    let mut c = Client::over(Box::new(socket.connect(sim.local_addr()).await.unwrap()));
    c.login("admin", "").await;
    let base = sim.stats().sentences_sent;
    c.send(&[CONN, ".tag=e"]).await;
    let n = 30_000u64;
    let mut ids = std::collections::HashSet::new();
    let mut first = Vec::new();
    let (mut max_lead, mut min_row) = (0u64, u64::MAX);
    for received in 1..=n {
        let r = c.read().await;
        assert_eq!((r.kind(), r.tag()), (ReplyKind::Re, Some("e")), "{r:?}");
        for name in [
            "protocol",
            "src-address",
            "dst-address",
            "orig-packets",
            "timeout",
        ] {
            assert!(r.get_str(name).is_some(), "{name} missing: {r:?}");
        }
        assert!(
            r.get_str("orig-packets").unwrap().parse::<u64>().is_ok(),
            "{r:?}"
        );
        let id = r.get_str(".id").unwrap().to_owned();
        assert!(!id.contains(':'), "an IPv4 table row: {r:?}");
        if first.len() < 3 {
            first.push(id.clone());
        }
        assert!(ids.insert(id), "a repeated .id in {r:?}");
        min_row = min_row.min(crate::generator::wire_len(&r));
        let produced = sim.stats().sentences_sent - base;
        max_lead = max_lead.max(produced.saturating_sub(received));
    }
    assert_eq!(first, seeded, "the table's own rows come first");
    let bound = (crate::generator::max_send_buffer() + 2 * recv_buffer + 256 * 1024) / min_row;
    assert!(
        max_lead <= bound,
        "{max_lead} rows ahead of the client: the endless print is not held back"
    );
    cancel_and_expect_interrupted(&mut c, "e").await;

    // An owned menu repeats its rows with fresh ids.
    c.send(&["/ip/route/print", "=.proplist=.id,dst-address", ".tag=r"])
        .await;
    let mut dsts = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for _ in 0..12 {
        let r = c.read().await;
        assert_eq!((r.kind(), r.tag()), (ReplyKind::Re, Some("r")), "{r:?}");
        assert!(ids.insert(r.get_str(".id").unwrap().to_owned()));
        dsts.push(r.get_str("dst-address").unwrap().to_owned());
    }
    assert_eq!(dsts[0], "0.0.0.0/0");
    assert!(
        dsts.iter().filter(|d| *d == "0.0.0.0/0").count() >= 3,
        "{dsts:?}"
    );
    cancel_and_expect_interrupted(&mut c, "r").await;
    // Other menus are not affected.
    assert_eq!(c.rows(&["/system/identity/print"]).await.len(), 1);
    sim.shutdown().await;
}

/// Rows come one per `every` of tokio time: with the paused clock the test takes no real
/// time, and row k cannot arrive before k * every.
#[tokio::test(start_paused = true)]
async fn trickle_sends_one_row_per_interval() {
    let every = Duration::from_secs(5);
    let sim = start(manual()).await;
    seed3(&sim);
    sim.set_faults(Faults {
        trickle: Some(Trickle {
            paths: PathMatch::prefixes(["/ip/firewall/connection/print"]),
            every,
            rows: Some(2),
        }),
        ..Faults::default()
    });
    let mut c = Client::admin(sim.local_addr()).await;
    let t0 = tokio::time::Instant::now();
    c.send(&[CONN, ".tag=t"]).await;
    for k in 1..=2u32 {
        let r = c.read().await;
        assert_eq!(r.kind(), ReplyKind::Re);
        assert!(
            t0.elapsed() >= every * k,
            "row {k} after {:?}",
            t0.elapsed()
        );
    }
    let r = c.read().await;
    assert_eq!(
        r.kind(),
        ReplyKind::Done,
        "!done after the row limit: {r:?}"
    );

    // Without a limit rows keep coming past the table's own (3), and !done never does.
    sim.set_faults(Faults {
        trickle: Some(Trickle {
            paths: PathMatch::prefixes(["/ip/firewall/connection/print"]),
            every,
            rows: None,
        }),
        ..Faults::default()
    });
    let t0 = tokio::time::Instant::now();
    c.send(&[CONN, "=.proplist=.id", ".tag=u"]).await;
    for k in 1..=6u32 {
        let r = c.read().await;
        assert_eq!((r.kind(), r.tag()), (ReplyKind::Re, Some("u")), "{r:?}");
        assert!(t0.elapsed() >= every * k);
    }
    cancel_and_expect_interrupted(&mut c, "u").await;
    // Other prints are not paced.
    let t0 = tokio::time::Instant::now();
    assert_eq!(c.rows(&["/ip/route/print"]).await.len(), 3);
    assert!(t0.elapsed() < every);
    sim.shutdown().await;
}

/// Waits (yielding, on this test's single thread) until the simulator has swallowed `n`
/// commands in all.
async fn until_ignored(sim: &routeros_sim::SimHandle, n: u64) {
    let deadline = Instant::now() + WAIT;
    while sim.stats().commands_ignored < n {
        assert!(Instant::now() < deadline, "the command was never read");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn silent_commands_are_read_but_never_answered() {
    let sim = start(manual()).await;
    let mut c = Client::admin(sim.local_addr()).await;
    // Command 1 was the login; 2 is answered, 3 and later are not.
    sim.set_faults(Faults {
        silent: Silent {
            from_command: Some(3),
            ..Silent::default()
        },
        ..Faults::default()
    });
    assert_eq!(c.rows(&["/system/identity/print"]).await.len(), 1);
    c.send(&["/system/identity/print", ".tag=s1"]).await;
    c.send(&["/ip/address/print", ".tag=s2"]).await;
    until_ignored(&sim, 2).await;
    assert_eq!(sim.stats().sessions_active, 1, "the connection stays open");
    sim.set_faults(Faults::default());
    // The first reply after the silent ones is for the next command: nothing was sent for them.
    let r = c.call(&["/system/identity/print", ".tag=next"]).await;
    assert!(r.iter().all(|x| x.tag() == Some("next")), "{r:?}");

    // By path: only those commands go unanswered.
    sim.set_faults(Faults {
        silent: Silent {
            paths: PathMatch::prefixes(["/ip/route"]),
            ..Silent::default()
        },
        ..Faults::default()
    });
    c.send(&["/ip/route/print", ".tag=quiet"]).await;
    let r = c.call(&["/ip/address/print", ".tag=loud"]).await;
    assert!(r.iter().all(|x| x.tag() == Some("loud")), "{r:?}");
    assert_eq!(sim.stats().commands_ignored, 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn wrong_tags_other_or_missing() {
    let sim = start(manual()).await;
    let mut c = Client::admin(sim.local_addr()).await;
    for (tag, expect) in [(WrongTag::Other, "x-not-asked"), (WrongTag::Missing, "")] {
        sim.set_faults(Faults {
            wrong_tags: Some(WrongTags {
                paths: PathMatch::prefixes(["/ip/address"]),
                tag,
            }),
            ..Faults::default()
        });
        let r = c.call(&["/ip/address/print", ".tag=x"]).await;
        assert!(r.len() > 1);
        for reply in &r {
            assert_eq!(reply.tag().unwrap_or(""), expect, "{tag:?}: {reply:?}");
        }
        let r = c.call(&["/system/identity/print", ".tag=y"]).await;
        assert!(r.iter().all(|x| x.tag() == Some("y")));
    }
    // An untagged command gets a tag it never asked for.
    sim.set_faults(Faults {
        wrong_tags: Some(WrongTags {
            paths: PathMatch::all(),
            tag: WrongTag::Other,
        }),
        ..Faults::default()
    });
    let r = c.call(&["/system/identity/print"]).await;
    assert!(
        r.iter().all(|x| x.tag() == Some("untagged-not-asked")),
        "{r:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn permission_traps_until_fixed_at_runtime() {
    let sim = start(manual()).await;
    let mut c = Client::admin(sim.local_addr()).await;
    sim.set_faults(Faults {
        permission_denied: PathMatch::prefixes([
            "/ip/route/print",
            "/ip/firewall/address-list/add",
        ]),
        ..Faults::default()
    });
    let add = [
        "/ip/firewall/address-list/add",
        "=list=tls_block",
        "=address=203.0.113.9",
        ".tag=a",
    ];
    for words in [&["/ip/route/print", ".tag=a"][..], &add[..]] {
        let r = c.call(words).await;
        assert_eq!(kinds(&r), [ReplyKind::Trap, ReplyKind::Done], "{words:?}");
        assert_eq!(
            r[0].message().as_deref(),
            Some("not enough permissions (9)")
        );
        assert!(r.iter().all(|x| x.tag() == Some("a")));
    }
    assert!(
        sim.address_list(Family::V4, "tls_block").is_empty(),
        "nothing added"
    );
    // Other commands work, and the session survives.
    assert_eq!(c.rows(&["/ip/address/print"]).await.len(), 2);
    assert!(c
        .rows(&["/ip/firewall/address-list/print"])
        .await
        .is_empty());
    // The permission is fixed.
    sim.set_faults(Faults::default());
    let r = c.call(&add).await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    assert_eq!(c.rows(&["/ip/route/print"]).await.len(), 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_bad_row_mid_stream_then_the_rest() {
    let sim = start(manual()).await;
    let ids = seed3(&sim);
    let mut c = Client::admin(sim.local_addr()).await;
    for kind in [BadRowKind::UnparseableCounter, BadRowKind::MissingId] {
        sim.set_faults(Faults {
            bad_row: Some(BadRow {
                paths: PathMatch::prefixes([CONN]),
                after: 2,
                kind,
            }),
            ..Faults::default()
        });
        let rows = c
            .rows(&[CONN, "=.proplist=.id,orig-packets,repl-packets"])
            .await;
        assert_eq!(rows.len(), 4, "{kind:?}: {rows:?}");
        let good = |r: &routeros_proto::Reply| {
            r.get_str(".id").is_some()
                && r.get_str("orig-packets")
                    .is_some_and(|v| v.parse::<u64>().is_ok())
        };
        assert!(good(&rows[0]) && good(&rows[1]) && good(&rows[3]));
        assert!(
            !good(&rows[2]),
            "{kind:?}: row 3 should be bad: {:?}",
            rows[2]
        );
        match kind {
            BadRowKind::UnparseableCounter => {
                assert_eq!(rows[2].get_str("orig-packets"), Some("abc"));
                assert_eq!(rows[2].get_str(".id"), Some(ids[2].as_str()));
            }
            BadRowKind::MissingId => assert_eq!(rows[2].get_str("orig-packets"), Some("5")),
        }
        let good_ids: Vec<_> = [&rows[0], &rows[1], &rows[3]]
            .iter()
            .map(|r| r.get_str(".id").unwrap().to_owned())
            .collect();
        assert_eq!(good_ids, ids, "every good row still comes, in order");
    }
    // A print too short for the fault gets no bad row; other menus are untouched.
    sim.set_faults(Faults {
        bad_row: Some(BadRow {
            paths: PathMatch::prefixes([CONN]),
            after: 3,
            kind: BadRowKind::MissingId,
        }),
        ..Faults::default()
    });
    assert_eq!(c.rows(&[CONN]).await.len(), 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_vanishing_connection_answers_no_such_item() {
    let sim = start(manual()).await;
    let ids = seed3(&sim);
    let mut c = Client::admin(sim.local_addr()).await;
    sim.set_faults(Faults {
        vanishing: PathMatch::prefixes(["/ip/firewall/connection/remove"]),
        ..Faults::default()
    });
    let listed = c.rows(&[CONN, "=.proplist=.id"]).await;
    assert_eq!(listed.len(), 3, "listed before the remove");
    let r = c
        .call(&[
            "/ip/firewall/connection/remove",
            &format!("=.id={}", ids[0]),
        ])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Trap, ReplyKind::Done]);
    assert!(r[0].message().unwrap().starts_with("no such item"), "{r:?}");
    assert_eq!(c.rows(&[CONN]).await.len(), 2, "it is gone all the same");
    sim.set_faults(Faults::default());
    let r = c
        .call(&[
            "/ip/firewall/connection/remove",
            &format!("=.id={}", ids[1]),
        ])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    sim.shutdown().await;
}

#[test]
fn path_matching_is_by_segments() {
    let m = PathMatch::prefixes(["/ip/route", "ip/firewall/connection/"]);
    assert!(m.matches("/ip/route/print"));
    assert!(m.matches("/ip/firewall/connection/remove"));
    assert!(!m.matches("/ip/routes/print"));
    assert!(!m.matches("/ipv6/route/print"));
    assert!(PathMatch::all().matches("/system/identity/print"));
    assert!(!PathMatch::none().matches("/ip/route/print"));
}
