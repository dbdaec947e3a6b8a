//! The connection tables: proplist, every query operator, compare modes, count-only, !empty,
//! remove, address formats, counters and timeouts on the manual clock.

use std::time::Duration;

use routeros_proto::ReplyKind;
use routeros_sim::{AddressFormat, QueryCompare, SimConfig, SimConnection, SimHandle, TcpState};

use crate::client::{col, kinds, names, Client};
use crate::{manual, start};

struct Ids {
    frozen: String,
    web: String,
    dns: String,
    ping: String,
    syn: String,
    v6: String,
}

fn seed(sim: &SimHandle) -> Ids {
    let sa = |s: &str| s.parse().unwrap();
    Ids {
        frozen: sim.add_connection(
            SimConnection::tcp(sa("192.168.88.50:54321"), sa("203.0.113.45:443")).packets(10, 1),
        ),
        web: sim.add_connection(
            SimConnection::tcp(sa("192.168.88.51:40000"), sa("142.250.74.46:443"))
                .packets(100, 120)
                .srcnat("198.51.100.2".parse().unwrap()),
        ),
        dns: sim.add_connection(
            SimConnection::udp(sa("192.168.88.52:5353"), sa("9.9.9.9:53")).packets(1, 1),
        ),
        ping: sim.add_connection(
            SimConnection::icmp("192.168.88.53".parse().unwrap(), "8.8.8.8".parse().unwrap())
                .packets(3, 3),
        ),
        syn: sim.add_connection(
            SimConnection::tcp(sa("192.168.88.54:41000"), sa("203.0.113.46:80"))
                .packets(3, 0)
                .state(TcpState::SynSent),
        ),
        v6: sim.add_connection(
            SimConnection::tcp(sa("[fd00:88::5]:40000"), sa("[2001:db8::1]:443")).packets(7, 1),
        ),
    }
}

const PRINT: &str = "/ip/firewall/connection/print";

async fn ids_of(c: &mut Client, words: &[&str]) -> Vec<String> {
    let mut cmd = vec![PRINT, "=.proplist=.id"];
    cmd.extend_from_slice(words);
    col(&c.rows(&cmd).await, ".id")
}

#[tokio::test]
async fn proplist_keeps_only_named_present_properties() {
    let sim = start(manual()).await;
    let ids = seed(&sim);
    let mut c = Client::admin(sim.local_addr()).await;
    let rows = c
        .rows(&[
            PRINT,
            "=.proplist=.id,dst-port,connection-type,orig-packets,protocol",
        ])
        .await;
    assert_eq!(rows.len(), 5, "IPv6 rows are not in /ip");
    let ping = rows
        .iter()
        .find(|r| r.get_str(".id") == Some(&ids.ping))
        .unwrap();
    assert_eq!(names(ping), [".id", "orig-packets", "protocol"]);
    let web = rows
        .iter()
        .find(|r| r.get_str(".id") == Some(&ids.web))
        .unwrap();
    assert_eq!(names(web), [".id", "dst-port", "orig-packets", "protocol"]);
    for id in col(&rows, ".id") {
        let hex = id.strip_prefix('*').unwrap();
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()),
            "{id}"
        );
    }
    // Without a proplist every property comes, per routeros-api.md section 5.
    let full = c.rows(&[PRINT, &format!("?.id={}", ids.web)]).await;
    let r = &full[0];
    for (n, v) in [
        ("protocol", "tcp"),
        ("src-address", "192.168.88.51"),
        ("src-port", "40000"),
        ("dst-address", "142.250.74.46"),
        ("dst-port", "443"),
        ("reply-src-address", "142.250.74.46"),
        ("reply-src-port", "443"),
        ("reply-dst-address", "198.51.100.2"),
        ("reply-dst-port", "40000"),
        ("tcp-state", "established"),
        ("timeout", "1d"),
        ("orig-packets", "100"),
        ("repl-packets", "120"),
        ("assured", "true"),
        ("seen-reply", "true"),
        ("confirmed", "true"),
        ("dying", "false"),
        ("fasttrack", "false"),
        ("srcnat", "true"),
        ("dstnat", "false"),
        ("connection-mark", ""),
    ] {
        assert_eq!(r.get_str(n), Some(v), "{n} in {r:?}");
    }
    for n in ["orig-bytes", "repl-bytes", "orig-rate", "repl-rate"] {
        assert!(
            r.get_str(n).is_some_and(|v| v.parse::<u64>().is_ok()),
            "{n}"
        );
    }
    assert_eq!(r.get_str("connection-type"), None);
    sim.shutdown().await;
}

#[tokio::test]
async fn every_query_operator() {
    let sim = start(manual()).await;
    let i = seed(&sim);
    let mut c = Client::admin(sim.local_addr()).await;
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let want = |v: &[&String]| sorted(v.iter().map(|s| (*s).clone()).collect());
    let cases: Vec<(Vec<&str>, Vec<&String>)> = vec![
        (vec!["?dst-port"], vec![&i.frozen, &i.web, &i.dns, &i.syn]),
        (vec!["?-dst-port"], vec![&i.ping]),
        (vec!["?protocol=udp"], vec![&i.dns]),
        (vec!["?=protocol=tcp"], vec![&i.frozen, &i.web, &i.syn]),
        (vec!["?<repl-packets=3"], vec![&i.frozen, &i.dns, &i.syn]),
        (vec!["?>orig-packets=3"], vec![&i.frozen, &i.web]),
        (
            vec!["?>orig-packets=3", "?<repl-packets=3"],
            vec![&i.frozen],
        ),
        (
            vec!["?protocol=udp", "?protocol=icmp", "?#|"],
            vec![&i.dns, &i.ping],
        ),
        (vec!["?protocol=tcp", "?#!"], vec![&i.dns, &i.ping]),
        (
            vec!["?protocol=udp", "?protocol=icmp", "?dst-port", "?#|&"],
            vec![&i.dns],
        ),
        (vec!["?protocol=udp", "?#.|"], vec![&i.dns]),
        (vec!["?protocol=udp", "?protocol=tcp", "?#1"], vec![&i.dns]),
        (
            vec!["?protocol=icmp", "?protocol=tcp", "?#1|"],
            vec![&i.ping],
        ),
        (
            vec!["?tcp-state=syn-sent", "?seen-reply=no", "?#&"],
            vec![&i.syn],
        ),
        (vec!["?=dst-address=9.9.9.9"], vec![&i.dns]),
    ];
    for (query, expected) in cases {
        assert_eq!(
            sorted(ids_of(&mut c, &query).await),
            want(&expected),
            "query {query:?}"
        );
    }
    // A query that underflows the stack is refused.
    let r = c.call(&[PRINT, "?#|"]).await;
    assert_eq!(kinds(&r), [ReplyKind::Trap, ReplyKind::Done]);
    // IPv6 has its own table.
    let v6 = ids_of_v6(&mut c).await;
    assert_eq!(v6, std::slice::from_ref(&i.v6));
    sim.shutdown().await;
}

async fn ids_of_v6(c: &mut Client) -> Vec<String> {
    col(
        &c.rows(&[
            "/ipv6/firewall/connection/print",
            "=.proplist=.id,src-address",
        ])
        .await,
        ".id",
    )
}

#[tokio::test]
async fn numeric_and_string_compare_modes() {
    for (mode, expected) in [(QueryCompare::Numeric, 2), (QueryCompare::String, 0)] {
        let sim = start(SimConfig {
            query_compare: mode,
            ..manual()
        })
        .await;
        seed(&sim);
        let mut c = Client::admin(sim.local_addr()).await;
        // "10" and "100" are greater than "3" as numbers, smaller as strings.
        let got = ids_of(&mut c, &["?>orig-packets=3"]).await;
        assert_eq!(got.len(), expected, "{mode:?}");
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn count_only_and_empty_replies() {
    for empty_replies in [true, false] {
        let sim = start(SimConfig {
            empty_replies,
            ..manual()
        })
        .await;
        seed(&sim);
        let mut c = Client::admin(sim.local_addr()).await;
        let r = c
            .call(&[PRINT, "=count-only=", "?>orig-packets=3", ".tag=n"])
            .await;
        assert_eq!(kinds(&r), [ReplyKind::Done]);
        assert_eq!((r[0].ret(), r[0].tag()), (Some("2"), Some("n")));
        let r = c.call(&[PRINT, "=count-only=", "?protocol=gre"]).await;
        assert_eq!((kinds(&r), r[0].ret()), (vec![ReplyKind::Done], Some("0")));
        let r = c.call(&[PRINT, "?protocol=gre", ".tag=e"]).await;
        if empty_replies {
            assert_eq!(kinds(&r), [ReplyKind::Empty, ReplyKind::Done]);
        } else {
            assert_eq!(kinds(&r), [ReplyKind::Done]);
        }
        assert!(r.iter().all(|x| x.tag() == Some("e")));
        // Empty address-list prints behave the same.
        let r = c
            .call(&["/ip/firewall/address-list/print", "?list=nothing"])
            .await;
        assert_eq!(r.len(), if empty_replies { 2 } else { 1 });
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn remove_and_vanished_ids() {
    let sim = start(manual()).await;
    let i = seed(&sim);
    let mut c = Client::admin(sim.local_addr()).await;
    let remove = |id: &str| format!("=.id={id}");
    let r = c
        .call(&[
            "/ip/firewall/connection/remove",
            &remove(&format!("{},{}", i.frozen, i.syn)),
        ])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    let r = c
        .call(&[
            "/ip/firewall/connection/remove",
            &remove(&i.frozen),
            ".tag=7",
        ])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Trap, ReplyKind::Done]);
    assert!(r[0].message().unwrap().starts_with("no such item"));
    assert!(r.iter().all(|x| x.tag() == Some("7")));
    // An IPv6 connection is not removable through /ip.
    let r = c
        .call(&["/ip/firewall/connection/remove", &remove(&i.v6)])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Trap, ReplyKind::Done]);
    let r = c
        .call(&["/ipv6/firewall/connection/remove", &remove(&i.v6)])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    assert_eq!(ids_of(&mut c, &[]).await.len(), 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn combined_address_format() {
    let sim = start(SimConfig {
        address_format: AddressFormat::Combined,
        ..manual()
    })
    .await;
    let i = seed(&sim);
    let mut c = Client::admin(sim.local_addr()).await;
    let rows = c.rows(&[PRINT, &format!("?.id={}", i.frozen)]).await;
    assert_eq!(rows[0].get_str("src-address"), Some("192.168.88.50:54321"));
    assert_eq!(rows[0].get_str("dst-address"), Some("203.0.113.45:443"));
    assert_eq!(
        rows[0].get_str("reply-src-address"),
        Some("203.0.113.45:443")
    );
    assert_eq!(rows[0].get_str("src-port"), None);
    assert_eq!(rows[0].get_str("dst-port"), None);
    let rows = c.rows(&[PRINT, "?protocol=icmp"]).await;
    assert_eq!(rows[0].get_str("dst-address"), Some("8.8.8.8"));
    let rows = c.rows(&["/ipv6/firewall/connection/print"]).await;
    assert_eq!(rows[0].get_str("dst-address"), Some("[2001:db8::1]:443"));
    sim.shutdown().await;
}

#[tokio::test]
async fn counters_grow_and_connections_time_out_on_the_manual_clock() {
    let sim = start(manual()).await;
    let sa = |s: &str| s.parse().unwrap();
    let growing = sim.add_connection(
        SimConnection::tcp(sa("192.168.88.60:50000"), sa("203.0.113.9:443"))
            .packets(3, 1)
            .rates(1.0, 0.0),
    );
    let idle = sim.add_connection(
        SimConnection::udp(sa("192.168.88.61:50000"), sa("203.0.113.9:443"))
            .timeout(Duration::from_secs(10)),
    );
    let mut c = Client::admin(sim.local_addr()).await;
    let q = |id: &str| format!("?.id={id}");
    let orig = |rows: &[routeros_proto::Reply]| col(rows, "orig-packets");
    assert_eq!(orig(&c.rows(&[PRINT, &q(&growing)]).await), ["3"]);
    sim.advance(Duration::from_secs(5));
    assert_eq!(orig(&c.rows(&[PRINT, &q(&growing)]).await), ["8"]);
    let rows = c.rows(&[PRINT, &q(&idle)]).await;
    assert_eq!(col(&rows, "timeout"), ["5s"]);
    sim.set_connection_counters(&growing, 100, 50);
    assert_eq!(orig(&c.rows(&[PRINT, &q(&growing)]).await), ["100"]);
    sim.advance(Duration::from_secs(6));
    assert!(c.rows(&[PRINT, &q(&idle)]).await.is_empty(), "timed out");
    assert_eq!(orig(&c.rows(&[PRINT, &q(&growing)]).await), ["106"]);
    sim.remove_connection(&growing);
    assert!(c.rows(&[PRINT]).await.is_empty());
    sim.shutdown().await;
}
