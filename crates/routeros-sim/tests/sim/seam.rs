//! The seam for external connection sources: `sync_connections` (ids kept by 5-tuple), the
//! connections a client removed, and address-list changes, each with its backlog limit; the
//! table size a source reports, waiting on the sim clock, and seeding disabled entries.

use std::net::SocketAddr;
use std::time::Duration;

use routeros_proto::ReplyKind;
use routeros_sim::{
    ConnTuple, Family, GenerateSpec, ListChange, ListRemoval, Scenario, SimConfig, SimConnection,
    SimProtocol, LIST_CHANGE_BACKLOG, REMOVAL_BACKLOG,
};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::client::{col, kinds, Client};
use crate::{manual, start};

const PRINT: &str = "/ip/firewall/connection/print";
const PRINT6: &str = "/ipv6/firewall/connection/print";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn conn(src: &str, dst: &str, orig: u64) -> SimConnection {
    SimConnection::tcp(sa(src), sa(dst)).packets(orig, 1)
}

async fn count(c: &mut Client, path: &str) -> u64 {
    let r = c.call(&[path, "=count-only="]).await;
    r[0].ret().unwrap().parse().unwrap()
}

#[tokio::test]
async fn sync_makes_the_table_exactly_the_rows_given_and_keeps_ids_by_tuple() {
    let scenario = Scenario::from_toml(
        "[[flow]]\nkind = \"normal\"\nsrc = \"192.168.88.70\"\ndst = \"142.250.74.46:443\"\n\n\
         [[flow]]\nkind = \"normal\"\nsrc = \"192.168.88.71\"\ndst = \"142.250.74.47:443\"\nstart = \"30s\"\n",
        "bg.toml",
    )
    .unwrap();
    let sim = start(SimConfig {
        scenario: Some(scenario),
        generate: Some(GenerateSpec {
            connections: 200,
            ipv6_share: 0.2,
            ..GenerateSpec::default()
        }),
        ..manual()
    })
    .await;
    let kept = sim.add_connection(conn("192.168.88.50:40000", "203.0.113.45:443", 4));
    let mut c = Client::admin(sim.local_addr()).await;
    let v6_before = count(&mut c, PRINT6).await;
    assert!(v6_before > 0 && count(&mut c, PRINT).await > 100);

    let ids = sim
        .sync_connections(
            Family::V4,
            vec![
                conn("192.168.88.50:40000", "203.0.113.45:443", 9),
                conn("192.168.88.51:40000", "203.0.113.46:443", 1),
            ],
        )
        .unwrap();
    assert_eq!(ids[0], kept, "same 5-tuple, same .id");
    assert_ne!(ids[1], kept);
    let rows = c
        .rows(&[PRINT, "=.proplist=.id,src-address,orig-packets"])
        .await;
    assert_eq!(col(&rows, ".id"), ids);
    assert_eq!(col(&rows, "orig-packets"), ["9", "1"], "counters as given");
    assert_eq!(count(&mut c, PRINT6).await, v6_before, "IPv6 untouched");
    let tracking = c.rows(&["/ip/firewall/connection/tracking/print"]).await;
    assert_eq!(
        col(&tracking, "total-entries"),
        [(2 + v6_before).to_string()]
    );

    // Again: one row stays (id kept), one goes, one is new; a flow that starts later and
    // the generated rows stay gone.
    let second = sim
        .sync_connections(
            Family::V4,
            vec![
                conn("192.168.88.51:40000", "203.0.113.46:443", 2),
                conn("192.168.88.52:40000", "203.0.113.47:443", 1),
            ],
        )
        .unwrap();
    assert_eq!(second[0], ids[1]);
    assert!(!ids.contains(&second[1]) && second[1] != kept);
    sim.advance(Duration::from_secs(40));
    let rows = c.rows(&[PRINT, "=.proplist=.id"]).await;
    assert_eq!(col(&rows, ".id"), second);
    // A port is part of the tuple: another source port is another connection.
    let third = sim
        .sync_connections(
            Family::V4,
            vec![conn("192.168.88.51:40001", "203.0.113.46:443", 2)],
        )
        .unwrap();
    assert_ne!(third[0], second[0]);
    // The other family is refused, changing nothing.
    let e = sim
        .sync_connections(
            Family::V4,
            vec![conn("[fd00::1]:1", "[2001:db8::1]:443", 1)],
        )
        .unwrap_err();
    assert!(e.to_string().contains("other family"), "{e}");
    assert_eq!(col(&c.rows(&[PRINT, "=.proplist=.id"]).await, ".id"), third);
    // An empty sync empties the table; a reboot does not bring generated rows back.
    sim.sync_connections(Family::V4, Vec::new()).unwrap();
    assert_eq!(count(&mut c, PRINT).await, 0);
    sim.reboot();
    let mut c = Client::admin(sim.local_addr()).await;
    assert_eq!(count(&mut c, PRINT).await, 0);
    assert_eq!(
        count(&mut c, PRINT6).await,
        v6_before,
        "IPv6 generated rows are back"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn removals_by_clients_are_reported_with_their_tuples() {
    let sim = start(manual()).await;
    let mut removed = sim.removed_connections();
    let ids = sim
        .sync_connections(
            Family::V4,
            vec![
                conn("192.168.88.50:40000", "203.0.113.45:443", 4),
                conn("192.168.88.51:40000", "203.0.113.46:443", 4),
                conn("192.168.88.52:40000", "203.0.113.47:443", 4),
            ],
        )
        .unwrap();
    let v6 = sim
        .sync_connections(
            Family::V6,
            vec![conn("[fd00::5]:5000", "[2001:db8::9]:443", 4)],
        )
        .unwrap();
    let mut c = Client::admin(sim.local_addr()).await;
    let r = c
        .call(&[
            "/ip/firewall/connection/remove",
            &format!("=.id={},{}", ids[0], ids[1]),
        ])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    let first = removed.try_recv().unwrap();
    assert_eq!(first.id, ids[0]);
    assert_eq!(first.family, Family::V4);
    assert_eq!(
        first.tuple,
        ConnTuple {
            protocol: SimProtocol::Tcp,
            src: "192.168.88.50".parse().unwrap(),
            src_port: Some(40000),
            dst: "203.0.113.45".parse().unwrap(),
            dst_port: Some(443),
        }
    );
    assert_eq!(removed.try_recv().unwrap().id, ids[1]);
    // A list that fails part-way: what was removed before the failure is reported.
    let r = c
        .call(&[
            "/ip/firewall/connection/remove",
            &format!("=.id={},*FFFFFF", ids[2]),
        ])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Trap, ReplyKind::Done]);
    assert_eq!(removed.try_recv().unwrap().id, ids[2]);
    let r = c
        .call(&[
            "/ipv6/firewall/connection/remove",
            &format!("=.id={}", v6[0]),
        ])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    assert_eq!(removed.try_recv().unwrap().family, Family::V6);
    // The handle's own removals are not reported.
    let id = sim.add_connection(conn("192.168.88.60:1", "203.0.113.1:443", 1));
    sim.remove_connection(&id);
    assert_eq!(removed.try_recv(), Err(TryRecvError::Empty));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_removal_receiver_that_falls_behind_the_backlog_is_told_so() {
    let sim = start(manual()).await;
    let mut removed = sim.removed_connections();
    let n = REMOVAL_BACKLOG + 1;
    let conns = (0..n)
        .map(|i| {
            conn(
                &format!("10.{}.{}.{}:40000", i >> 16, (i >> 8) & 255, i & 255),
                "203.0.113.45:443",
                1,
            )
        })
        .collect();
    let ids = sim.sync_connections(Family::V4, conns).unwrap();
    let mut c = Client::admin(sim.local_addr()).await;
    let r = c
        .call(&[
            "/ip/firewall/connection/remove",
            &format!("=.id={}", ids.join(",")),
        ])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    assert_eq!(removed.recv().await, Err(RecvError::Lagged(1)));
    assert_eq!(
        removed.recv().await.unwrap().id,
        ids[1],
        "the newest are kept"
    );
    sim.shutdown().await;
}

fn entry(change: &ListChange) -> (&'static str, String, String) {
    match change {
        ListChange::Added { entry, .. } => ("added", entry.list.clone(), entry.address.clone()),
        ListChange::Updated { after, .. } => ("updated", after.list.clone(), after.address.clone()),
        ListChange::Removed { entry, .. } => ("removed", entry.list.clone(), entry.address.clone()),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn address_list_changes_are_published_in_order() {
    let sim = start(manual()).await;
    let mut changes = sim.list_changes();
    let mut c = Client::admin(sim.local_addr()).await;
    let r = c
        .call(&[
            "/ip/firewall/address-list/add",
            "=list=tls_block",
            "=address=203.0.113.45",
            "=timeout=1m",
        ])
        .await;
    let id = r[0].ret().unwrap().to_owned();
    let added = changes.try_recv().unwrap();
    assert_eq!(
        entry(&added),
        ("added", "tls_block".into(), "203.0.113.45".into())
    );
    match &added {
        ListChange::Added { family, entry } => {
            assert_eq!(*family, Family::V4);
            assert_eq!(entry.id, id);
            assert!(entry.dynamic);
            assert_eq!(entry.timeout_remaining, Some(Duration::from_secs(60)));
        }
        other => panic!("{other:?}"),
    }
    c.call(&[
        "/ip/firewall/address-list/set",
        &format!("=.id={id}"),
        "=comment=seen",
    ])
    .await;
    match changes.try_recv().unwrap() {
        ListChange::Updated { before, after, .. } => {
            assert_eq!((before.comment, after.comment), (None, Some("seen".into())));
        }
        other => panic!("{other:?}"),
    }
    // Expiry is published by the time `advance` returns.
    sim.advance(Duration::from_secs(61));
    match changes.try_recv().unwrap() {
        ListChange::Removed { entry, cause, .. } => {
            assert_eq!(
                (entry.id.as_str(), cause),
                (id.as_str(), ListRemoval::Expired)
            );
        }
        other => panic!("{other:?}"),
    }
    // The handle, the API, a reboot; IPv6 too.
    let static_id = sim
        .add_list_entry(Family::V4, "allowlist", "1.1.1.1", None, None)
        .unwrap();
    sim.add_list_entry(
        Family::V6,
        "tls_block",
        "2001:db8::1",
        Some(Duration::from_secs(600)),
        None,
    )
    .unwrap();
    let r = c
        .call(&[
            "/ip/firewall/address-list/remove",
            &format!("=.id={static_id}"),
        ])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    sim.reboot();
    let got: Vec<_> = std::iter::from_fn(|| changes.try_recv().ok()).collect();
    let causes: Vec<_> = got
        .iter()
        .map(|ch| match ch {
            ListChange::Added { family, .. } => format!("added {family:?}"),
            ListChange::Removed { family, cause, .. } => format!("removed {family:?} {cause:?}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        causes,
        [
            "added V4",
            "added V6",
            "removed V4 Api",
            "removed V6 Reboot"
        ]
    );
    let id = sim
        .add_list_entry(Family::V4, "allowlist", "9.9.9.9", None, None)
        .unwrap();
    assert!(sim.remove_list_entry(Family::V4, &id));
    assert!(!sim.remove_list_entry(Family::V4, &id));
    assert!(matches!(changes.try_recv(), Ok(ListChange::Added { .. })));
    assert!(matches!(
        changes.try_recv(),
        Ok(ListChange::Removed {
            cause: ListRemoval::Handle,
            ..
        })
    ));
    assert_eq!(changes.try_recv(), Err(TryRecvError::Empty));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_list_change_receiver_that_falls_behind_the_backlog_is_told_so() {
    let sim = start(manual()).await;
    let mut changes = sim.list_changes();
    for i in 0..=LIST_CHANGE_BACKLOG {
        let address = format!("10.0.{}.{}", i >> 8, i & 255);
        sim.add_list_entry(Family::V4, "bulk", &address, None, None)
            .unwrap();
    }
    assert_eq!(changes.recv().await, Err(RecvError::Lagged(1)));
    match changes.recv().await.unwrap() {
        ListChange::Added { entry, .. } => assert_eq!(entry.address, "10.0.0.1"),
        other => panic!("{other:?}"),
    }
    // A lagging receiver re-reads the lists.
    assert_eq!(sim.address_lists(Family::V4).len(), LIST_CHANGE_BACKLOG + 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_reported_table_size_replaces_the_count_of_total_entries_until_cleared() {
    let sim = start(manual()).await;
    sim.sync_connections(
        Family::V4,
        vec![conn("192.168.88.50:40000", "203.0.113.45:443", 4)],
    )
    .unwrap();
    let mut c = Client::admin(sim.local_addr()).await;
    let total = |rows: &[routeros_proto::Reply]| col(rows, "total-entries");
    let tracking = "/ip/firewall/connection/tracking/print";
    assert_eq!(total(&c.rows(&[tracking]).await), ["1"]);
    sim.set_table_size(Some(52_000));
    assert_eq!(total(&c.rows(&[tracking]).await), ["52000"]);
    assert_eq!(
        count(&mut c, PRINT).await,
        1,
        "count-only counts the rows served"
    );
    sim.set_table_size(None);
    assert_eq!(total(&c.rows(&[tracking]).await), ["1"]);
    sim.set_table_size(Some(7));
    sim.reboot();
    let mut c = Client::admin(sim.local_addr()).await;
    assert_eq!(
        total(&c.rows(&[tracking]).await),
        ["0"],
        "a reboot counts again"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn sleep_until_ends_when_the_manual_clock_is_advanced_there() {
    let sim = start(manual()).await;
    sim.sleep_until(Duration::ZERO).await;
    let waiter = tokio::spawn({
        let sim = sim.clone();
        async move {
            sim.sleep_until(Duration::from_secs(90)).await;
            sim.now()
        }
    });
    sim.advance(Duration::from_secs(60));
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!waiter.is_finished(), "woke before its time");
    sim.advance(Duration::from_secs(45));
    let woke_at = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("the advance past 90 s ends the wait")
        .unwrap();
    assert_eq!(woke_at, Duration::from_secs(105));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_seeded_entry_can_be_disabled() {
    let sim = start(manual()).await;
    sim.add_list_entry_as(Family::V4, "allowlist", "1.1.1.1", None, None, true)
        .unwrap();
    sim.add_list_entry_as(Family::V4, "allowlist", "9.9.9.9", None, Some("dns"), false)
        .unwrap();
    let mut c = Client::admin(sim.local_addr()).await;
    let rows = c
        .rows(&["/ip/firewall/address-list/print", "?list=allowlist"])
        .await;
    assert_eq!(col(&rows, "address"), ["1.1.1.1", "9.9.9.9"]);
    assert_eq!(col(&rows, "disabled"), ["true", "false"]);
    sim.shutdown().await;
}
