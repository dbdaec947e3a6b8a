//! One cycle against the simulator: each seed feature and each skip reason, the cap, dry-run,
//! duplicates, both address formats, IPv6, string-comparing routers.

use std::time::Duration;

use routeros_sim::{AddressFormat, Family, QueryCompare, SimConfig, SimConnection};

use crate::support::*;

#[tokio::test]
async fn blocks_the_destination_of_a_frozen_tls_flow_with_comment_and_timeout() {
    let sim = sim().await;
    let id = sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    let mut rig = Rig::new(router_for(&sim, "core")).await;
    let r = rig.cycle().await;
    assert_eq!(r.flagged, 1);
    assert_eq!(r.blocks.len(), 1);
    assert_eq!(r.blocks[0].outcome, "added");
    let entries = sim.address_list(Family::V4, "tls_block");
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e.address, "203.0.113.45");
    assert_eq!(
        e.comment.as_deref(),
        Some("rosguard: tcp 192.168.88.50:54321 -> 203.0.113.45:443 orig=9 repl=1")
    );
    assert_eq!(e.timeout_remaining, Some(Duration::from_secs(86_400)));
    assert!(e.dynamic);
    // cfgRemoveTCPConn: the flagged connection is gone from the table.
    assert_eq!(r.connections_removed, 1);
    sim.remove_connection(&id); // removing a vanished id is harmless for the sim too
    let again = rig.cycle().await;
    assert_eq!(again.flagged, 0, "the removed connection is not seen again");
}

#[tokio::test]
async fn normal_traffic_other_ports_and_thresholds_are_left_alone() {
    let sim = sim().await;
    // Symmetric HTTPS.
    sim.add_connection(
        SimConnection::tcp(sa("192.168.88.10:40000"), sa("198.18.0.1:443")).packets(40, 38),
    );
    // Asymmetric, but on an unmonitored port.
    sim.add_connection(
        SimConnection::tcp(sa("192.168.88.10:40001"), sa("198.18.0.2:22")).packets(40, 0),
    );
    // Exactly at the thresholds: orig must be > 3, repl <= 2.
    sim.add_connection(
        SimConnection::tcp(sa("192.168.88.10:40002"), sa("198.18.0.3:443")).packets(3, 0),
    );
    sim.add_connection(
        SimConnection::tcp(sa("192.168.88.10:40003"), sa("198.18.0.4:443")).packets(10, 3),
    );
    // ICMP has no port: not monitored with a port list.
    sim.add_connection(
        SimConnection::icmp(
            "192.168.88.10".parse().unwrap(),
            "198.18.0.5".parse().unwrap(),
        )
        .packets(50, 0),
    );
    let mut rig = Rig::new(router_for(&sim, "core")).await;
    let r = rig.cycle().await;
    assert_eq!(r.flagged, 0, "{r:?}");
    assert!(list_addresses(&sim, "tls_block").is_empty());
}

#[tokio::test]
async fn udp_sprays_are_flagged_and_udp_connections_are_not_removed() {
    let sim = sim().await;
    sim.add_connection(
        SimConnection::udp(sa("192.168.88.20:5000"), sa("198.18.1.1:443")).packets(30, 0),
    );
    let mut rig = Rig::new(router_for(&sim, "core")).await;
    let r = rig.cycle().await;
    assert_eq!(r.flagged, 1);
    assert_eq!(list_addresses(&sim, "tls_block"), ["198.18.1.1"]);
    assert_eq!(r.connections_removed, 0, "only TCP connections are removed");
}

#[tokio::test]
async fn every_skip_reason_spares_the_address_and_says_why() {
    let sim = sim().await;
    // Router allowlist (address-list `allowlist`, as a CIDR).
    sim.add_list_entry(Family::V4, "allowlist", "1.1.1.0/24", None, Some("trusted"));
    sim.add_connection(frozen_tls("192.168.88.50:50001", "1.1.1.1:443"));
    // rosguard's own allow list.
    sim.add_connection(frozen_tls("192.168.88.50:50002", "9.9.9.9:443"));
    // A router-local address (from /ip/address, not by regex).
    sim.add_connection(frozen_tls("203.0.113.99:50003", "192.168.88.1:443"));
    sim.add_connection(frozen_tls("203.0.113.99:50004", "198.51.100.2:8443"));
    // rosguard's own address: the daemon talks to the router from 127.0.0.1.
    sim.add_connection(frozen_tls("192.168.88.50:50005", "127.0.0.1:443"));
    let mut router = router_for(&sim, "core");
    router.blocking.allow = vec!["9.9.9.9/32".parse().unwrap()];
    let mut rig = Rig::new(router).await;
    let r = rig.cycle().await;
    assert_eq!(r.flagged, 5);
    assert!(
        list_addresses(&sim, "tls_block").is_empty(),
        "nothing protected is blocked"
    );
    let mut kinds: Vec<(String, String)> = r
        .skipped
        .iter()
        .map(|s| (s.address.to_string(), s.kind.clone()))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("1.1.1.1".to_string(), "router-allowlist".to_string()),
            ("127.0.0.1".into(), "own".into()),
            ("192.168.88.1".into(), "local".into()),
            ("198.51.100.2".into(), "local".into()),
            ("9.9.9.9".into(), "config-allow".into()),
        ]
    );
    assert_eq!(
        r.connections_removed, 0,
        "connections of spared addresses stay"
    );
}

#[tokio::test]
async fn check_local_addr_off_lets_router_addresses_through() {
    let sim = sim().await;
    sim.add_connection(frozen_tls("203.0.113.99:50003", "192.168.88.1:443"));
    let mut router = router_for(&sim, "core");
    router.blocking.check_local_addr = false;
    let mut rig = Rig::new(router).await;
    rig.cycle().await;
    assert_eq!(list_addresses(&sim, "tls_block"), ["192.168.88.1"]);
}

#[tokio::test]
async fn block_target_src_and_remote() {
    let sim = sim().await;
    // An inbound scan of the router's WAN address from outside.
    sim.add_connection(frozen_tls("203.0.113.7:40000", "198.51.100.2:443"));
    let mut router = router_for(&sim, "core");
    router.detection.rules.block_target = rosguard_core::detect::BlockTarget::Remote;
    let mut rig = Rig::new(router).await;
    rig.cycle().await;
    assert_eq!(
        list_addresses(&sim, "tls_block"),
        ["203.0.113.7"],
        "remote picks the outside end"
    );

    let other = crate::support::sim().await;
    other.add_connection(frozen_tls("192.168.88.77:40000", "203.0.113.8:443"));
    let mut router = router_for(&other, "core");
    router.detection.rules.block_target = rosguard_core::detect::BlockTarget::Src;
    let mut rig = Rig::new(router).await;
    rig.cycle().await;
    assert_eq!(list_addresses(&other, "tls_block"), ["192.168.88.77"]);
}

#[tokio::test]
async fn the_cycle_cap_holds_and_the_rest_wait_for_the_next_cycle() {
    let sim = sim().await;
    // Healthy traffic around the flood, as on a real router (the panic brake stays off).
    for i in 0..100 {
        sim.add_connection(
            SimConnection::tcp(
                sa(&format!("192.168.88.60:{}", 20000 + i)),
                sa("198.18.9.9:443"),
            )
            .packets(50, 48),
        );
    }
    for i in 0..60 {
        sim.add_connection(frozen_tls(
            &format!("192.168.88.50:{}", 40000 + i),
            &format!("203.0.113.{}:443", i + 1),
        ));
    }
    let mut rig = Rig::new(router_for(&sim, "core")).await;
    let r = rig.cycle().await;
    assert_eq!(r.flagged, 60);
    assert_eq!(r.effective_blocks().count(), 50, "cfgMaxConnPerCycle = 50");
    assert_eq!(r.deferred, 10);
    assert_eq!(list_addresses(&sim, "tls_block").len(), 50);
    let r = rig.cycle().await;
    assert_eq!(r.effective_blocks().count(), 10, "the rest come next cycle");
    assert_eq!(list_addresses(&sim, "tls_block").len(), 60);
}

#[tokio::test]
async fn dry_run_changes_nothing_and_says_what_it_would_do() {
    let sim = sim().await;
    sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    let mut router = router_for(&sim, "core");
    router.blocking.dry_run = true;
    let mut rig = Rig::new(router).await;
    let r = rig.cycle().await;
    assert!(r.dry_run);
    assert_eq!(r.blocks.len(), 1);
    assert_eq!(r.blocks[0].outcome, "would-add");
    assert_eq!(r.connections_removed, 0);
    assert!(list_addresses(&sim, "tls_block").is_empty());
    assert_eq!(
        rig.cycle().await.flagged,
        1,
        "the connection is still there"
    );
}

#[tokio::test]
async fn duplicates_are_not_added_twice() {
    let sim = sim().await;
    sim.add_list_entry(
        Family::V4,
        "tls_block",
        "203.0.113.45",
        Some(Duration::from_secs(600)),
        Some("by hand"),
    );
    sim.add_connection(frozen_tls("192.168.88.50:1000", "203.0.113.45:443"));
    sim.add_connection(frozen_tls("192.168.88.51:1001", "203.0.113.46:443"));
    sim.add_connection(frozen_tls("192.168.88.52:1002", "203.0.113.46:8443"));
    let mut rig = Rig::new(router_for(&sim, "core")).await;
    let r = rig.cycle().await;
    assert_eq!(r.flagged, 3);
    assert_eq!(r.effective_blocks().count(), 1, "{r:?}");
    let entries = sim.address_list(Family::V4, "tls_block");
    assert_eq!(entries.len(), 2);
    let hand = entries
        .iter()
        .find(|e| e.address == "203.0.113.45")
        .unwrap();
    assert_eq!(
        hand.comment.as_deref(),
        Some("by hand"),
        "the existing entry is left as it was"
    );
    assert_eq!(
        r.connections_removed, 3,
        "every flagged TCP connection is still removed"
    );
}

#[tokio::test]
async fn both_address_formats_are_read() {
    for format in [AddressFormat::Combined, AddressFormat::Separate] {
        let sim = sim_with(SimConfig {
            address_format: format,
            ..SimConfig::default()
        })
        .await;
        sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
        // Not monitored: port 22. Must not be flagged in either format.
        sim.add_connection(
            SimConnection::tcp(sa("192.168.88.50:54322"), sa("203.0.113.46:22")).packets(9, 1),
        );
        let mut rig = Rig::new(router_for(&sim, "core")).await;
        let r = rig.cycle().await;
        assert_eq!(r.flagged, 1, "{format:?}");
        assert_eq!(
            list_addresses(&sim, "tls_block"),
            ["203.0.113.45"],
            "{format:?}"
        );
        let comment = sim.address_list(Family::V4, "tls_block")[0]
            .comment
            .clone()
            .unwrap();
        assert!(
            comment.contains("192.168.88.50:54321 -> 203.0.113.45:443"),
            "{format:?}: {comment}"
        );
    }
}

#[tokio::test]
async fn ipv6_connections_go_to_the_ipv6_list() {
    let sim = sim().await;
    sim.add_connection(frozen_tls("[fd00:88::50]:54321", "[2001:db8::45]:443"));
    let mut rig = Rig::new(router_for(&sim, "core")).await;
    let r = rig.cycle().await;
    assert_eq!(r.flagged, 1);
    let v6 = sim.address_list(Family::V6, "tls_block");
    assert_eq!(v6.len(), 1);
    assert_eq!(v6[0].address, "2001:db8::45");
    assert!(sim.address_list(Family::V4, "tls_block").is_empty());
}

#[tokio::test]
async fn a_string_comparing_router_is_detected_and_filtered_locally() {
    let sim = sim_with(SimConfig {
        query_compare: QueryCompare::String,
        ..SimConfig::default()
    })
    .await;
    // orig = 15: "15" > "3" is false as strings, so the pushed filter hides it.
    sim.add_connection(
        SimConnection::tcp(sa("192.168.88.50:1000"), sa("203.0.113.15:443")).packets(15, 1),
    );
    // repl = 10: "10" < "3" is true as strings, so the router returns a row that fails.
    sim.add_connection(
        SimConnection::tcp(sa("192.168.88.50:1001"), sa("203.0.113.50:443")).packets(50, 10),
    );
    let mut rig = Rig::new(router_for(&sim, "core")).await;
    let first = rig.cycle().await;
    assert_eq!(first.flagged, 0, "the string-compared filter hid the row");
    assert!(rig.state.server_filter_broken, "the mismatch was noticed");
    let second = rig.cycle().await;
    assert_eq!(second.flagged, 1);
    assert_eq!(list_addresses(&sim, "tls_block"), ["203.0.113.15"]);
}

#[tokio::test]
async fn server_filter_off_reads_everything_and_finds_the_same() {
    let sim = sim_with(SimConfig {
        query_compare: QueryCompare::String,
        ..SimConfig::default()
    })
    .await;
    sim.add_connection(
        SimConnection::tcp(sa("192.168.88.50:1000"), sa("203.0.113.15:443")).packets(15, 1),
    );
    sim.add_connection(
        SimConnection::tcp(sa("192.168.88.50:1001"), sa("203.0.113.16:443")).packets(15, 15),
    );
    let mut router = router_for(&sim, "core");
    router.detection.server_filter = false;
    let mut rig = Rig::new(router).await;
    let r = rig.cycle().await;
    assert_eq!(r.scanned, 2, "every row is read");
    assert_eq!(r.flagged, 1);
    assert_eq!(list_addresses(&sim, "tls_block"), ["203.0.113.15"]);
}

#[tokio::test]
async fn disabled_detection_reads_but_flags_nothing() {
    let sim = sim().await;
    sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    let mut router = router_for(&sim, "core");
    router.detection.enabled = false;
    let mut rig = Rig::new(router).await;
    let r = rig.cycle().await;
    assert_eq!(r.flagged, 0);
    assert!(list_addresses(&sim, "tls_block").is_empty());
}

#[tokio::test]
async fn the_router_gateway_and_dns_servers_are_protected() {
    let sim = sim().await;
    // The simulator's default route goes via 198.51.100.1; its DNS servers are 1.1.1.1, 9.9.9.9.
    sim.add_connection(frozen_tls("192.168.88.50:1000", "198.51.100.1:443"));
    sim.add_connection(
        SimConnection::udp(sa("192.168.88.50:1001"), sa("9.9.9.9:443")).packets(9, 0),
    );
    let mut rig = Rig::new(router_for(&sim, "core")).await;
    let r = rig.cycle().await;
    assert_eq!(r.flagged, 2);
    assert!(list_addresses(&sim, "tls_block").is_empty(), "{r:?}");
    assert!(
        r.skipped.iter().all(|s| s.kind == "protected"),
        "{:?}",
        r.skipped
    );
}
