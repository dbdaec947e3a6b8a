//! Address-lists: add, duplicates, address checks, set, remove, expiry, reboot.

use std::time::Duration;

use routeros_proto::ReplyKind;
use routeros_sim::Family;

use crate::client::{col, kinds, Client};
use crate::{manual, start};

const ADD: &str = "/ip/firewall/address-list/add";
const PRINT: &str = "/ip/firewall/address-list/print";

#[tokio::test]
async fn add_duplicate_invalid_set_remove() {
    let sim = start(manual()).await;
    let mut c = Client::admin(sim.local_addr()).await;
    let r = c
        .call(&[
            ADD,
            "=list=tls_block",
            "=address=203.0.113.45",
            "=timeout=1d",
            "=comment=rosguard: tls",
            ".tag=a",
        ])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    let id = r[0].ret().unwrap().to_owned();
    assert!(id.starts_with('*'));
    assert_eq!(r[0].tag(), Some("a"));

    let r = c
        .call(&[ADD, "=list=tls_block", "=address=203.0.113.45/32"])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Trap, ReplyKind::Done]);
    assert_eq!(
        r[0].message().as_deref(),
        Some("failure: already have such entry")
    );

    let r = c
        .call(&[ADD, "=list=tls_block", "=address=2001:db8::1"])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Trap, ReplyKind::Done]);
    let m = r[0].message().unwrap();
    assert!(
        m.starts_with("invalid value for argument address") && m.contains("invalid dns name"),
        "{m}"
    );

    let r = c
        .call(&[ADD, "=list=tls_block", "=address=10.0.0.1", "=timeout=soon"])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Trap, ReplyKind::Done]);
    assert_eq!(r[0].category(), Some(1));

    let r = c
        .call(&[ADD, "=list=tls_block", "=address=10.0.0.1", "=colour=red"])
        .await;
    assert_eq!(r[0].message().as_deref(), Some("unknown parameter colour"));

    let r = c
        .call(&[ADD, "=list=tls_block", "=address=10.9.8.7/32"])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    let static_id = r[0].ret().unwrap().to_owned();

    let rows = c.rows(&[PRINT, "?list=tls_block"]).await;
    assert_eq!(col(&rows, "address"), ["203.0.113.45", "10.9.8.7"]);
    let dynamic = &rows[0];
    assert_eq!(dynamic.get_str(".id"), Some(id.as_str()));
    assert_eq!(dynamic.get_str("timeout"), Some("1d"));
    assert_eq!(dynamic.get_str("dynamic"), Some("true"));
    assert_eq!(dynamic.get_str("disabled"), Some("false"));
    assert_eq!(dynamic.get_str("comment"), Some("rosguard: tls"));
    assert_eq!(
        dynamic.get_str("creation-time"),
        Some("2025-01-01 00:00:00")
    );
    assert_eq!(rows[1].get_str("timeout"), None);
    assert_eq!(rows[1].get_str("dynamic"), Some("false"));
    assert_eq!(rows[1].get_str("comment"), None);

    sim.advance(Duration::from_secs(10));
    let r = c
        .call(&[
            "/ip/firewall/address-list/set",
            &format!("=.id={id}"),
            "=timeout=2h",
            "=comment=changed",
            "=disabled=yes",
        ])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    let rows = c
        .rows(&[
            PRINT,
            "?comment=changed",
            "=.proplist=timeout,disabled,comment",
        ])
        .await;
    assert_eq!(col(&rows, "timeout"), ["2h"]);
    assert_eq!(col(&rows, "disabled"), ["true"]);

    let remove = |id: &str| format!("=.id={id}");
    let r = c
        .call(&["/ip/firewall/address-list/remove", &remove(&static_id)])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    let r = c
        .call(&["/ip/firewall/address-list/remove", &remove(&static_id)])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Trap, ReplyKind::Done]);
    assert!(r[0].message().unwrap().starts_with("no such item"));

    // IPv6 goes to its own list.
    let r = c
        .call(&[
            "/ipv6/firewall/address-list/add",
            "=list=tls_block",
            "=address=2001:db8::1/128",
        ])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    assert_eq!(
        sim.address_list(Family::V6, "tls_block")[0].address,
        "2001:db8::1"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn timed_entries_expire_on_the_sim_clock() {
    let sim = start(manual()).await;
    let mut c = Client::admin(sim.local_addr()).await;
    c.call(&[
        ADD,
        "=list=tls_block",
        "=address=198.18.0.1",
        "=timeout=30s",
    ])
    .await;
    sim.advance(Duration::from_secs(12));
    let rows = c.rows(&[PRINT, "?list=tls_block"]).await;
    assert_eq!(col(&rows, "timeout"), ["18s"]);
    let e = &sim.address_list(Family::V4, "tls_block")[0];
    assert_eq!(e.timeout_remaining, Some(Duration::from_secs(18)));
    assert!(e.dynamic);
    assert!(sim.list_contains(Family::V4, "tls_block", "198.18.0.1/32"));
    assert!(!sim.list_contains(Family::V4, "allowlist", "198.18.0.1"));
    assert!(!sim.list_contains(Family::V6, "tls_block", "198.18.0.1"));
    sim.advance(Duration::from_secs(18));
    assert!(c.rows(&[PRINT, "?list=tls_block"]).await.is_empty());
    assert!(sim.address_list(Family::V4, "tls_block").is_empty());
    assert!(!sim.list_contains(Family::V4, "tls_block", "198.18.0.1"));
    // The same address can be added again once expired.
    let r = c
        .call(&[ADD, "=list=tls_block", "=address=198.18.0.1"])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    sim.shutdown().await;
}

#[tokio::test]
async fn reboot_clears_dynamic_entries_and_drops_sessions() {
    let sim = start(manual()).await;
    let seeded = sim
        .add_list_entry(Family::V4, "allowlist", "1.1.1.1", None, Some("Cloudflare"))
        .expect("seeded");
    assert!(sim
        .add_list_entry(Family::V4, "allowlist", "1.1.1.1", None, None)
        .is_none());
    let mut c = Client::admin(sim.local_addr()).await;
    c.call(&[
        ADD,
        "=list=tls_block",
        "=address=203.0.113.7",
        "=timeout=1d",
    ])
    .await;
    let rows = c.rows(&[PRINT]).await;
    assert_eq!(col(&rows, ".id")[0], seeded);
    assert_eq!(rows.len(), 2);
    sim.reboot();
    c.expect_eof().await;
    let mut c = Client::admin(sim.local_addr()).await;
    let rows = c.rows(&[PRINT]).await;
    assert_eq!(col(&rows, "address"), ["1.1.1.1"]);
    assert_eq!(col(&rows, "comment"), ["Cloudflare"]);
    let uptime = c.rows(&["/system/resource/print"]).await;
    assert_eq!(uptime[0].get_str("uptime"), Some("0s"));
    sim.shutdown().await;
}
