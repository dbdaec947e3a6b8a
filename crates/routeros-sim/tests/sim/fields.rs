//! Every connection-table field of `routeros-api.md` section 5 on `SimConnection`, FastTrack
//! counters (hand-made, from a `fasttracked` scenario flow, and both "without FastTrack"
//! variants), and special addresses in rows.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use routeros_proto::Reply;
use routeros_sim::{
    AddressFormat, ConnFlags, FastTrackCounters, Scenario, SimConfig, SimConnection, SimProtocol,
    TcpState,
};

use crate::client::{col, names, Client};
use crate::{manual, start};

const PRINT: &str = "/ip/firewall/connection/print";
const PRINT6: &str = "/ipv6/firewall/connection/print";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn props(r: &Reply) -> BTreeMap<String, String> {
    r.attrs()
        .map(|a| {
            (
                a.name.to_owned(),
                String::from_utf8_lossy(a.value).into_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_field_of_a_connection_row_can_be_set() {
    let sim = start(manual()).await;
    let flags = ConnFlags {
        expected: true,
        seen_reply: true,
        assured: true,
        confirmed: true,
        dying: true,
        fasttrack: true,
        hw_offload: true,
        srcnat: true,
        dstnat: true,
        uses_helper: true,
    };
    let id = sim.add_connection(
        SimConnection::tcp(sa("192.168.88.20:40000"), sa("198.51.100.2:21"))
            .state(TcpState::FinWait)
            .timeout(Duration::from_secs(42))
            .packets(12, 9)
            .bytes(1_200, 9_000)
            .reply(sa("192.168.88.5:2121"), sa("198.51.100.2:40001"))
            .flags(flags)
            .fasttracked(100, 200)
            .mark("vpn")
            .connection_type("ftp")
            .bit_rates(1_760, 6_400),
    );
    let mut c = Client::admin(sim.local_addr()).await;
    let rows = c.rows(&[PRINT, &format!("?.id={id}")]).await;
    let p = props(&rows[0]);
    for (n, v) in [
        ("protocol", "tcp"),
        ("src-address", "192.168.88.20"),
        ("src-port", "40000"),
        ("dst-address", "198.51.100.2"),
        ("dst-port", "21"),
        ("reply-src-address", "192.168.88.5"),
        ("reply-src-port", "2121"),
        ("reply-dst-address", "198.51.100.2"),
        ("reply-dst-port", "40001"),
        ("tcp-state", "fin-wait"),
        ("timeout", "42s"),
        ("orig-packets", "12"),
        ("orig-bytes", "1200"),
        ("repl-packets", "9"),
        ("repl-bytes", "9000"),
        ("orig-fasttrack-packets", "100"),
        ("orig-fasttrack-bytes", "10000"),
        ("repl-fasttrack-packets", "200"),
        ("repl-fasttrack-bytes", "200000"),
        ("orig-rate", "1760"),
        ("repl-rate", "6400"),
        ("connection-mark", "vpn"),
        ("connection-type", "ftp"),
    ] {
        assert_eq!(p.get(n).map(String::as_str), Some(v), "{n} in {p:?}");
    }
    for flag in [
        "expected",
        "seen-reply",
        "assured",
        "confirmed",
        "dying",
        "fasttrack",
        "hw-offload",
        "srcnat",
        "dstnat",
        "uses-helper",
    ] {
        assert_eq!(p.get(flag).map(String::as_str), Some("true"), "{flag}");
    }
    // Explicit flags are exactly what is printed: all false is all false.
    let plain = sim.add_connection(
        SimConnection::udp(sa("192.168.88.21:5000"), sa("9.9.9.9:53"))
            .packets(5, 5)
            .flags(ConnFlags::default()),
    );
    let rows = c.rows(&[PRINT, &format!("?.id={plain}")]).await;
    let p = props(&rows[0]);
    assert!(
        ["seen-reply", "assured", "confirmed", "srcnat"]
            .iter()
            .all(|f| p[*f] == "false"),
        "{p:?}"
    );
    // A destination NAT is derived from the reply tuple; the timeout counts down.
    let forwarded = sim.add_connection(
        SimConnection::tcp(sa("203.0.113.9:50000"), sa("198.51.100.2:8080"))
            .dstnat(sa("192.168.88.10:80"))
            .timeout(Duration::from_secs(30)),
    );
    sim.advance(Duration::from_secs(10));
    let rows = c.rows(&[PRINT, &format!("?.id={forwarded}")]).await;
    let p = props(&rows[0]);
    assert_eq!(
        (p["dstnat"].as_str(), p["srcnat"].as_str()),
        ("true", "false")
    );
    assert_eq!(p["reply-src-address"], "192.168.88.10");
    assert_eq!(p["reply-src-port"], "80");
    assert_eq!(p["timeout"], "20s");
    // The older address format carries the reply ports in the addresses.
    sim.shutdown().await;
    let sim = start(SimConfig {
        address_format: AddressFormat::Combined,
        ..manual()
    })
    .await;
    let id = sim.add_connection(
        SimConnection::tcp(sa("203.0.113.9:50000"), sa("198.51.100.2:8080"))
            .dstnat(sa("192.168.88.10:80")),
    );
    let mut c = Client::admin(sim.local_addr()).await;
    let rows = c.rows(&[PRINT, &format!("?.id={id}")]).await;
    assert_eq!(
        rows[0].get_str("reply-src-address"),
        Some("192.168.88.10:80")
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn fasttrack_counters_grow_apart_and_answer_queries() {
    let sim = start(manual()).await;
    let ft = sim.add_connection(
        SimConnection::tcp(sa("192.168.88.30:40000"), sa("142.250.74.46:443"))
            .packets(3, 2)
            .fasttracked(0, 0)
            .fasttrack_rates(100.0, 150.0),
    );
    let slow = sim.add_connection(
        SimConnection::tcp(sa("192.168.88.31:40000"), sa("142.250.74.46:443")).packets(50, 60),
    );
    sim.advance(Duration::from_secs(10));
    let mut c = Client::admin(sim.local_addr()).await;
    let rows = c
        .rows(&[
            PRINT,
            "=.proplist=.id,orig-packets,repl-packets,orig-fasttrack-packets,repl-fasttrack-packets,fasttrack",
            &format!("?.id={ft}"),
        ])
        .await;
    assert_eq!(
        names(&rows[0]),
        [
            ".id",
            "orig-packets",
            "repl-packets",
            "orig-fasttrack-packets",
            "repl-fasttrack-packets",
            "fasttrack"
        ]
    );
    let p = props(&rows[0]);
    assert_eq!(
        (
            p["orig-packets"].as_str(),
            p["repl-packets"].as_str(),
            p["orig-fasttrack-packets"].as_str(),
            p["repl-fasttrack-packets"].as_str(),
            p["fasttrack"].as_str()
        ),
        ("3", "2", "1000", "1500", "true")
    );
    let ids = |rows: Vec<Reply>| col(&rows, ".id");
    // Numeric comparison on the FastTrack counters: "1000" > "999" as numbers only.
    assert_eq!(
        ids(c
            .rows(&[PRINT, "=.proplist=.id", "?>orig-fasttrack-packets=999"])
            .await),
        std::slice::from_ref(&ft)
    );
    assert_eq!(
        ids(c.rows(&[PRINT, "=.proplist=.id", "?fasttrack=true"]).await),
        std::slice::from_ref(&ft)
    );
    // Without FastTrack, a FastTrack-capable router shows zeros.
    let rows = c.rows(&[PRINT, &format!("?.id={slow}")]).await;
    assert_eq!(rows[0].get_str("orig-fasttrack-packets"), Some("0"));
    assert_eq!(rows[0].get_str("fasttrack"), Some("false"));
    assert_eq!(
        ids(c
            .rows(&[PRINT, "=.proplist=.id", "?orig-fasttrack-packets=0"])
            .await),
        std::slice::from_ref(&slow)
    );
    sim.shutdown().await;

    // The other variant: rows without FastTrack lack the counters.
    let sim = start(SimConfig {
        fasttrack_counters: FastTrackCounters::OnlyFastTracked,
        ..manual()
    })
    .await;
    let ft = sim.add_connection(
        SimConnection::tcp(sa("192.168.88.30:40000"), sa("142.250.74.46:443")).fasttracked(7, 8),
    );
    let slow = sim.add_connection(
        SimConnection::tcp(sa("192.168.88.31:40000"), sa("142.250.74.46:443")).packets(50, 60),
    );
    let mut c = Client::admin(sim.local_addr()).await;
    let rows = c.rows(&[PRINT, &format!("?.id={slow}")]).await;
    assert_eq!(rows[0].get_str("orig-fasttrack-packets"), None);
    assert_eq!(rows[0].get_str("repl-fasttrack-bytes"), None);
    let rows = c.rows(&[PRINT, &format!("?.id={ft}")]).await;
    assert_eq!(rows[0].get_str("orig-fasttrack-packets"), Some("7"));
    assert_eq!(
        ids(c
            .rows(&[PRINT, "=.proplist=.id", "?-repl-fasttrack-packets"])
            .await),
        std::slice::from_ref(&slow)
    );
    assert!(c
        .rows(&[PRINT, "=.proplist=.id", "?<orig-fasttrack-packets=1"])
        .await
        .is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn a_fasttracked_flow_stops_its_main_counters_early() {
    let scenario = Scenario::from_toml(
        "[[flow]]\nkind = \"fasttracked\"\nsrc = \"192.168.88.40:50000\"\ndst = \"142.250.74.46:443\"\n\n\
         [[flow]]\nkind = \"fasttracked\"\nprotocol = \"udp\"\nsrc = \"192.168.88.41:50000\"\n\
         dst = \"203.0.113.10:443\"\nfasttrack_after = 5\n",
        "ft.toml",
    )
    .unwrap();
    let sim = start(SimConfig {
        scenario: Some(scenario),
        ..manual()
    })
    .await;
    sim.advance(Duration::from_secs(10));
    let mut c = Client::admin(sim.local_addr()).await;
    let rows = c.rows(&[PRINT, "?protocol=tcp"]).await;
    let p = props(&rows[0]);
    // tcp defaults: orig 3 + 10/s, repl 2 + 15/s; the slow path keeps 3 each way.
    assert_eq!(p["orig-packets"], "3");
    assert_eq!(p["repl-packets"], "3");
    assert_eq!(p["orig-fasttrack-packets"], (103 - 3).to_string());
    assert_eq!(p["repl-fasttrack-packets"], (152 - 3).to_string());
    assert_eq!(p["orig-fasttrack-bytes"], (100 * 120).to_string());
    assert_eq!(p["fasttrack"], "true");
    assert_eq!(p["tcp-state"], "established");
    let rows = c.rows(&[PRINT, "?protocol=udp"]).await;
    let p = props(&rows[0]);
    assert_eq!(
        (p["orig-packets"].as_str(), p["repl-packets"].as_str()),
        ("5", "5")
    );
    assert_eq!(p["orig-fasttrack-packets"], (101 - 5).to_string());
    // A healthy fasttracked flow is not flagged by the frozen-flow rule.
    assert!(c
        .rows(&[PRINT, "?>orig-packets=3", "?<repl-packets=3"])
        .await
        .is_empty());
    let e = Scenario::from_toml(
        "[[flow]]\nkind = \"normal\"\nsrc = \"192.168.88.40\"\ndst = \"1.2.3.4:443\"\nfasttrack_after = 2\n",
        "bad.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("fasttrack_after"), "{e}");
    sim.shutdown().await;
}

const SPECIAL_V4: [&str; 5] = [
    "0.0.0.0",
    "255.255.255.255",
    "224.0.0.251",
    "169.254.1.1",
    "192.168.88.9",
];
const SPECIAL_V6: [&str; 4] = ["ff02::1", "fe80::1", "::", "::1"];

#[tokio::test]
async fn special_addresses_in_rows_from_the_handle_and_from_scenarios() {
    let scenario = Scenario::from_toml(
        "[[flow]]\nkind = \"normal\"\nprotocol = \"udp\"\nsrc = \"0.0.0.0:68\"\ndst = \"255.255.255.255:67\"\nduration = \"1m\"\n\n\
         [[flow]]\nkind = \"custom\"\nprotocol = \"udp\"\nsrc = \"169.254.1.1:5353\"\ndst = \"224.0.0.251:5353\"\n\n\
         [[flow]]\nkind = \"custom\"\nprotocol = \"icmpv6\"\nsrc = \"fe80::1\"\ndst = \"ff02::1\"\n\n\
         [[flow]]\nkind = \"custom\"\nprotocol = \"udp\"\nsrc = \"[::]:546\"\ndst = \"[::1]:547\"\n",
        "special.toml",
    )
    .unwrap();
    let sim = start(SimConfig {
        scenario: Some(scenario),
        ..manual()
    })
    .await;
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    for (src, dst) in [
        ("0.0.0.0", "255.255.255.255"),
        ("169.254.1.1", "224.0.0.251"),
    ] {
        sim.add_connection(SimConnection::icmp(ip(src), ip(dst)));
    }
    sim.add_connection(SimConnection::new(
        SimProtocol::Other(2),
        SocketAddr::new(ip("192.168.88.9"), 0),
        SocketAddr::new(ip("224.0.0.251"), 0),
    ));
    for (src, dst) in [("::", "ff02::1"), ("fe80::1", "::1")] {
        sim.add_connection(SimConnection::icmp(ip(src), ip(dst)));
    }
    sim.add_connection(SimConnection::udp(sa("[::]:546"), sa("[ff02::1]:547")));
    let mut c = Client::admin(sim.local_addr()).await;
    let v4 = c.rows(&[PRINT]).await;
    let v6 = c.rows(&[PRINT6]).await;
    assert_eq!((v4.len(), v6.len()), (5, 5), "{v4:?} {v6:?}");
    let seen: Vec<String> = [&v4, &v6]
        .iter()
        .flat_map(|rows| {
            col(rows, "src-address")
                .into_iter()
                .chain(col(rows, "dst-address"))
        })
        .collect();
    for a in SPECIAL_V4.iter().chain(&SPECIAL_V6) {
        assert!(seen.iter().any(|s| s == a), "{a} missing from {seen:?}");
    }
    // Queries find them; broadcast and multicast traffic is not source-NATed.
    let dhcp = c
        .rows(&[PRINT, "?src-address=0.0.0.0", "?protocol=udp"])
        .await;
    assert_eq!(col(&dhcp, "dst-address"), ["255.255.255.255"]);
    assert_eq!(col(&dhcp, "srcnat"), ["false"]);
    let mdns = c
        .rows(&[PRINT, "?dst-address=224.0.0.251", "?protocol=udp"])
        .await;
    assert_eq!(col(&mdns, "srcnat"), ["false"]);
    assert_eq!(col(&mdns, "reply-dst-address"), ["169.254.1.1"]);
    let igmp = c.rows(&[PRINT, "?protocol=2"]).await;
    assert_eq!(col(&igmp, "dst-address"), ["224.0.0.251"]);
    let unspecified = c.rows(&[PRINT6, "?src-address=::"]).await;
    assert_eq!(unspecified.len(), 3, "{unspecified:?}");
    let loopback = c.rows(&[PRINT6, "?dst-address=::1"]).await;
    assert_eq!(loopback.len(), 2, "{loopback:?}");
    sim.shutdown().await;

    // The older format brackets IPv6 with a port, even the unspecified address.
    let sim = start(SimConfig {
        address_format: AddressFormat::Combined,
        ..manual()
    })
    .await;
    sim.add_connection(SimConnection::udp(sa("[::]:546"), sa("[ff02::1]:547")));
    let mut c = Client::admin(sim.local_addr()).await;
    let rows = c.rows(&[PRINT6]).await;
    assert_eq!(col(&rows, "src-address"), ["[::]:546"]);
    assert_eq!(col(&rows, "dst-address"), ["[ff02::1]:547"]);
    sim.shutdown().await;
}
