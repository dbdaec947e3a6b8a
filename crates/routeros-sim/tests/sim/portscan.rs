//! Port scans in the connection table (filtered and closed ports) and RouterOS's `psd`
//! matcher adding scanners to an address-list on the sim clock.

use std::collections::BTreeSet;
use std::time::Duration;

use routeros_proto::ReplyKind;
use routeros_sim::{Family, ListChange, Scenario, SimConfig, SimHandle};

use crate::client::{col, kinds, Client};
use crate::{manual, start};

const PRINT: &str = "/ip/firewall/connection/print";

async fn scenario_sim(text: &str) -> SimHandle {
    start(SimConfig {
        scenario: Some(Scenario::from_toml(text, "scan.toml").unwrap()),
        ..manual()
    })
    .await
}

#[tokio::test]
async fn filtered_ports_stay_syn_sent_with_one_packet() {
    let sim = scenario_sim(
        "[[flow]]\nkind = \"port-scan\"\nsrc = \"203.0.113.66:61000\"\ndst = \"198.51.100.2:1\"\n\
         ports = 100\nrate = 10\n",
    )
    .await;
    let mut c = Client::admin(sim.local_addr()).await;
    sim.advance(Duration::from_secs(5));
    let rows = c.rows(&[PRINT, "?src-address=203.0.113.66"]).await;
    assert_eq!(rows.len(), 51, "one probe every 100 ms");
    for r in &rows {
        assert_eq!(r.get_str("tcp-state"), Some("syn-sent"), "{r:?}");
        assert_eq!(r.get_str("orig-packets"), Some("1"));
        assert_eq!(r.get_str("repl-packets"), Some("0"));
        assert_eq!(r.get_str("seen-reply"), Some("false"));
        assert_eq!(r.get_str("assured"), Some("false"));
    }
    let ports: BTreeSet<String> = col(&rows, "dst-port").into_iter().collect();
    assert_eq!(ports.len(), 51, "a port per probe");
    assert!(ports.contains("1") && ports.contains("51"));
    // Retransmissions do not raise orig, however long the scanner keeps trying.
    sim.advance(Duration::from_secs(2));
    let rows = c.rows(&[PRINT, "?dst-port=1"]).await;
    assert_eq!(col(&rows, "orig-packets"), ["1"]);
    // The scanner gives up (3 s), conntrack forgets the rows 5 s later.
    sim.advance(Duration::from_secs(11));
    assert!(c.rows(&[PRINT]).await.is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn closed_ports_answer_with_a_reset_and_vanish_ten_seconds_later() {
    let sim = scenario_sim(
        "[[flow]]\nkind = \"port-scan\"\nsrc = \"203.0.113.66:61000\"\ndst = \"198.51.100.2:20\"\n\
         ports = 5\nrate = 1\nfiltered = false\nstart = \"2s\"\n",
    )
    .await;
    let mut c = Client::admin(sim.local_addr()).await;
    sim.advance(Duration::from_secs(2));
    let rows = c.rows(&[PRINT]).await;
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    for (n, v) in [
        ("tcp-state", "close"),
        ("orig-packets", "1"),
        ("repl-packets", "1"),
        ("seen-reply", "true"),
        ("assured", "false"),
        ("timeout", "10s"),
        ("dst-port", "20"),
    ] {
        assert_eq!(r.get_str(n), Some(v), "{n}: {r:?}");
    }
    sim.advance(Duration::from_millis(9_500));
    let rows = c.rows(&[PRINT, "?dst-port=20"]).await;
    assert_eq!(col(&rows, "timeout"), ["0s"], "still there just before");
    sim.advance(Duration::from_millis(500));
    assert!(
        c.rows(&[PRINT, "?dst-port=20"]).await.is_empty(),
        "gone 10 s after"
    );
    assert_eq!(
        c.rows(&[PRINT]).await.len(),
        4,
        "the later probes are still there"
    );
    for bad in [
        (
            "kind = \"normal\"\nsrc = \"1.2.3.4\"\ndst = \"5.6.7.8:80\"\nports = 5\n",
            "ports",
        ),
        (
            "kind = \"port-scan\"\nsrc = \"1.2.3.4\"\ndst = \"5.6.7.8:80\"\nrate = 0\n",
            "rate",
        ),
        (
            "kind = \"port-scan\"\nsrc = \"1.2.3.4\"\ndst = \"5.6.7.8:80\"\nports = 5\ncount = 5\n",
            "ports",
        ),
        (
            "kind = \"port-scan\"\nprotocol = \"udp\"\nsrc = \"1.2.3.4\"\ndst = \"5.6.7.8:80\"\n",
            "protocol",
        ),
    ] {
        let e = Scenario::from_toml(&format!("[[flow]]\n{}", bad.0), "bad.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains(bad.1), "{e}");
    }
    sim.shutdown().await;
}

const PSD_SCANS: &str = "\
# Privileged ports (weight 3), 0.5 s apart: the 7th probe, at 13 s, reaches 21.
[[flow]]
kind = \"port-scan\"
src = \"203.0.113.66:61000\"
dst = \"198.51.100.2:20\"
ports = 20
rate = 2
start = \"10s\"

# High ports (weight 1), 1 s apart: the 21st probe, at 30 s, reaches 21.
[[flow]]
kind = \"port-scan\"
src = \"203.0.113.99:61000\"
dst = \"198.51.100.2:2000\"
ports = 25
rate = 1
start = \"10s\"

# Too slow: 5 s between probes is more than the 3 s delay.
[[flow]]
kind = \"port-scan\"
src = \"203.0.113.77:61000\"
dst = \"198.51.100.2:20\"
ports = 30
rate = 0.2
start = \"10s\"

# Through the router to a LAN host: the forward chain, not input.
[[flow]]
kind = \"port-scan\"
src = \"203.0.113.88:61000\"
dst = \"192.168.88.10:20\"
ports = 30
rate = 10
start = \"10s\"

# Ordinary traffic to the router: one port.
[[flow]]
kind = \"normal\"
src = \"203.0.113.55\"
dst = \"198.51.100.2:443\"
count = 30
interval = \"100ms\"
start = \"10s\"
";

#[tokio::test]
async fn psd_puts_scanners_on_the_list_when_they_cross_the_threshold() {
    let sim = scenario_sim(PSD_SCANS).await;
    let mut changes = sim.list_changes();
    let mut c = Client::admin(sim.local_addr()).await;
    let r = c
        .call(&[
            "/ip/firewall/filter/add",
            "=chain=input",
            "=protocol=tcp",
            "=in-interface=ether1",
            "=psd=21,3s,3,1",
            "=action=add-src-to-address-list",
            "=address-list=port_scanners",
            "=address-list-timeout=2w",
            "=place-before=0",
        ])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Done], "{r:?}");
    let r = c
        .call(&["/ip/firewall/filter/add", "=chain=input", "=psd=21,3s,3"])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Trap, ReplyKind::Done]);
    assert!(r[0].message().unwrap().contains("psd"));

    let listed = |sim: &SimHandle| -> Vec<String> {
        sim.address_list(Family::V4, "port_scanners")
            .into_iter()
            .map(|e| e.address)
            .collect()
    };
    sim.advance(Duration::from_millis(12_900));
    assert!(listed(&sim).is_empty());
    sim.advance(Duration::from_millis(100));
    assert_eq!(listed(&sim), ["203.0.113.66"]);
    let rows = c
        .rows(&["/ip/firewall/address-list/print", "?list=port_scanners"])
        .await;
    assert_eq!(col(&rows, "timeout"), ["2w"]);
    assert_eq!(col(&rows, "dynamic"), ["true"]);
    assert_eq!(col(&rows, "creation-time"), ["2025-01-01 00:00:13"]);
    match changes.try_recv().unwrap() {
        ListChange::Added { family, entry } => {
            assert_eq!(
                (family, entry.address.as_str()),
                (Family::V4, "203.0.113.66")
            );
        }
        other => panic!("{other:?}"),
    }
    sim.advance(Duration::from_millis(16_900));
    assert_eq!(listed(&sim), ["203.0.113.66"]);
    sim.advance(Duration::from_millis(100));
    assert_eq!(listed(&sim), ["203.0.113.66", "203.0.113.99"]);
    // Long after every flow ended: the slow scanner, the forwarded scan and the ordinary
    // client were never listed.
    sim.advance(Duration::from_secs(300));
    assert_eq!(listed(&sim), ["203.0.113.66", "203.0.113.99"]);
    // A reboot forgets dynamic entries, like any other.
    sim.reboot();
    assert!(listed(&sim).is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn psd_reacts_only_to_what_the_rule_matches_and_only_after_it_exists() {
    // The same scans, with rules that must not fire: forward-only, another interface, a
    // disabled rule, an unknown matcher; then a rule added after the scans began.
    let sim = scenario_sim(PSD_SCANS).await;
    let mut c = Client::admin(sim.local_addr()).await;
    for extra in [
        &["=chain=forward", "=dst-address=10.0.0.0/8"][..],
        &["=chain=input", "=in-interface=bridge"],
        &["=chain=input", "=disabled=yes"],
        &["=chain=input", "=src-address-type=!local"],
        &["=chain=input", "=protocol=udp"],
    ] {
        let mut words = vec![
            "/ip/firewall/filter/add",
            "=psd=21,3s,3,1",
            "=action=add-src-to-address-list",
            "=address-list=port_scanners",
        ];
        words.extend_from_slice(extra);
        let r = c.call(&words).await;
        assert_eq!(kinds(&r), [ReplyKind::Done], "{extra:?}: {r:?}");
    }
    sim.advance(Duration::from_secs(12));
    assert!(sim.address_list(Family::V4, "port_scanners").is_empty());
    // Installed at 12 s, after the probe sent at 12 s: the first scanner's probes from
    // 12.5 s on count, and the 7th of them (15.5 s) reaches the threshold.
    c.call(&[
        "/ip/firewall/filter/add",
        "=chain=input",
        "=psd=21,3s,3,1",
        "=action=add-src-to-address-list",
        "=address-list=late",
        "=address-list-timeout=1m",
    ])
    .await;
    sim.advance(Duration::from_millis(3_400));
    assert!(sim.address_list(Family::V4, "late").is_empty());
    sim.advance(Duration::from_millis(100));
    let late = sim.address_list(Family::V4, "late");
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].address, "203.0.113.66");
    assert_eq!(late[0].timeout_remaining, Some(Duration::from_secs(60)));
    sim.shutdown().await;

    // The forward chain sees the scan of the LAN host.
    let sim = scenario_sim(PSD_SCANS).await;
    let mut c = Client::admin(sim.local_addr()).await;
    c.call(&[
        "/ip/firewall/filter/add",
        "=chain=forward",
        "=in-interface-list=WAN",
        "=dst-address=192.168.88.0/24",
        "=psd=21,3s,3,1",
        "=action=add-src-to-address-list",
        "=address-list=scanners_of_lan",
    ])
    .await;
    sim.advance(Duration::from_secs(20));
    let got: Vec<String> = sim
        .address_list(Family::V4, "scanners_of_lan")
        .into_iter()
        .map(|e| e.address)
        .collect();
    assert_eq!(got, ["203.0.113.88"]);
    sim.shutdown().await;
}
