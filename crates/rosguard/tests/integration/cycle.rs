//! One cycle against the simulator: each seed feature and each skip reason, the cap, dry-run,
//! duplicates, both address formats, IPv6, string-comparing routers, FastTrack, scans.

use std::time::Duration;

use rosguard_core::decide::AddKind;
use rosguard_core::outcome::{AddResult, RemoveResult};
use rosguard_core::settings::BlockTarget;
use routeros_sim::{AddressFormat, Family, QueryCompare, SimConfig, SimConnection, TcpState};

use crate::support::*;

#[tokio::test]
async fn blocks_the_destination_of_a_frozen_tls_flow_with_comment_and_timeout() {
    let sim = sim().await;
    sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    sim.add_connection(
        SimConnection::tcp(sa("192.168.88.51:40000"), sa("198.18.0.1:443")).packets(40, 38),
    );
    let mut rig = Rig::new(router_for(&sim, "core")).await;
    let r = rig.cycle().await;
    assert_eq!(r.flagged, 1);
    assert_eq!(r.blocks.len(), 1);
    assert_eq!(
        (&r.blocks[0].kind, &r.blocks[0].result),
        (&AddKind::New, &AddResult::Added)
    );
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
    // cfgRemoveTCPConn: the flagged connection is gone from the router's table, the healthy
    // one is still there.
    assert_eq!(r.connections_removed(), 1);
    assert_eq!(
        table(&sim).await,
        [(
            "192.168.88.51:40000".to_owned(),
            "198.18.0.1:443".to_owned()
        )]
    );
    assert_eq!(
        rig.cycle().await.flagged,
        0,
        "the removed connection is not seen again"
    );
}

/// The rows of every table seen from the boundary: exactly at the thresholds, other ports,
/// ICMP, symmetric traffic. None may be flagged, whether the router filters or rosguard does,
/// and whatever the router's query engine compares.
#[tokio::test]
async fn normal_traffic_other_ports_and_thresholds_are_left_alone() {
    for (server_filter, compare) in [
        (true, QueryCompare::Numeric),
        (false, QueryCompare::Numeric),
        (true, QueryCompare::String),
        (false, QueryCompare::String),
    ] {
        let sim = sim_with(SimConfig {
            query_compare: compare,
            ..SimConfig::default()
        })
        .await;
        let rows = [
            // Symmetric HTTPS.
            SimConnection::tcp(sa("192.168.88.10:40000"), sa("198.18.0.1:443")).packets(40, 38),
            // Asymmetric, but on an unmonitored port.
            SimConnection::tcp(sa("192.168.88.10:40001"), sa("198.18.0.2:22")).packets(40, 0),
            // Exactly at the thresholds: orig must be > 3, repl <= 2.
            SimConnection::tcp(sa("192.168.88.10:40002"), sa("198.18.0.3:443")).packets(3, 0),
            SimConnection::tcp(sa("192.168.88.10:40003"), sa("198.18.0.4:443")).packets(10, 3),
            // ICMP has no port: not monitored with a port list.
            SimConnection::icmp(
                "192.168.88.10".parse().unwrap(),
                "198.18.0.5".parse().unwrap(),
            )
            .packets(50, 0),
        ];
        let n = rows.len() as u64;
        for c in rows {
            sim.add_connection(c);
        }
        // The one row that is flagged, so a broken local check shows.
        sim.add_connection(
            SimConnection::tcp(sa("192.168.88.10:40009"), sa("198.18.0.9:443")).packets(4, 2),
        );
        let mut router = router_for(&sim, "core");
        router.settings.detection.server_filter = server_filter;
        let mut rig = Rig::new(router).await;
        let r = rig.cycle().await;
        let what = format!("server_filter {server_filter}, {compare:?}");
        assert_eq!(r.flagged, 1, "{what}: {r:?}");
        assert_eq!(list_addresses(&sim, "tls_block"), ["198.18.0.9"], "{what}");
        if !server_filter {
            assert_eq!(
                r.scanned,
                n + 1,
                "{what}: every row is read and checked locally"
            );
        }
    }
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
    assert!(r.removals.is_empty(), "only TCP connections are removed");
    assert_eq!(
        table(&sim).await.len(),
        1,
        "the UDP flow is still in the table"
    );
}

#[tokio::test]
async fn every_skip_reason_spares_the_address_and_says_why() {
    let sim = sim_with(SimConfig {
        // The router sees rosguard's session come from this address (rosguard behind NAT).
        session_address: Some("203.0.113.250".parse().unwrap()),
        ipv6_gateway: Some("2001:db8:ffff::1".parse().unwrap()),
        ..SimConfig::default()
    })
    .await;
    // Router allowlist (address-list `allowlist`, as a CIDR).
    sim.add_list_entry(Family::V4, "allowlist", "1.1.1.0/24", None, Some("trusted"));
    sim.add_connection(frozen_tls("192.168.88.50:50001", "1.1.1.1:443"));
    // rosguard's own allow list.
    sim.add_connection(frozen_tls("192.168.88.50:50002", "9.9.9.10:443"));
    // A router-local address (from /ip/address, not by regex), LAN and WAN side.
    sim.add_connection(frozen_tls("192.168.88.50:50003", "192.168.88.1:443"));
    sim.add_connection(frozen_tls("192.168.88.50:50004", "198.51.100.2:8443"));
    // The address the router sees rosguard come from (NAT).
    sim.add_connection(frozen_tls("192.168.88.50:50005", "203.0.113.250:443"));
    // The IPv6 default gateway and a DNS server.
    sim.add_connection(frozen_tls("[fd00:88::50]:50006", "[2001:db8:ffff::1]:443"));
    sim.add_connection(
        SimConnection::udp(sa("192.168.88.50:50007"), sa("9.9.9.9:443")).packets(9, 0),
    );
    // A host of the router's LAN, as the destination of a spray from outside.
    sim.add_connection(
        SimConnection::udp(sa("203.0.113.66:40000"), sa("192.168.88.20:443")).packets(30, 0),
    );
    let mut router = router_for(&sim, "core");
    router.settings.blocking.allow = vec!["9.9.9.10".parse().unwrap()];
    router.settings.detection.block_target = BlockTarget::Dst;
    let mut rig = Rig::new(router).await;
    let r = rig.cycle().await;
    assert_eq!(r.flagged, 8);
    assert!(
        list_addresses(&sim, "tls_block").is_empty(),
        "nothing protected is blocked: {r:?}"
    );
    let mut kinds: Vec<(String, &str)> = r
        .skipped
        .iter()
        .map(|s| (s.address.to_string(), s.reason.kind()))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("1.1.1.1".to_string(), "router-allowlist"),
            ("192.168.88.1".into(), "local"),
            ("192.168.88.20".into(), "lan"),
            ("198.51.100.2".into(), "local"),
            ("2001:db8:ffff::1".into(), "protected"),
            ("203.0.113.250".into(), "protected"),
            ("9.9.9.10".into(), "config-allow"),
            ("9.9.9.9".into(), "protected"),
        ]
    );
    assert!(
        r.removals.is_empty(),
        "connections of spared addresses stay"
    );
    assert_eq!(table(&sim).await.len(), 8);
}

#[tokio::test]
async fn check_local_addr_off_lets_router_addresses_through() {
    let sim = sim().await;
    sim.add_connection(frozen_tls("203.0.113.99:50003", "198.51.100.2:443"));
    let mut router = router_for(&sim, "core");
    router.settings.blocking.check_local_addr = false;
    router.settings.blocking.block_lan_hosts = true;
    router.settings.detection.block_target = BlockTarget::Dst;
    let mut rig = Rig::new(router).await;
    rig.cycle().await;
    assert_eq!(list_addresses(&sim, "tls_block"), ["198.51.100.2"]);
}

#[tokio::test]
async fn block_target_remote_src_and_dst() {
    // An inbound probe of the router's WAN address from outside: "remote" (the default)
    // picks the outside end, "dst" would have picked the router (and spared it).
    let sim = sim().await;
    sim.add_connection(frozen_tls("203.0.113.7:40000", "198.51.100.2:443"));
    let mut rig = Rig::new(router_for(&sim, "core")).await;
    rig.cycle().await;
    assert_eq!(
        list_addresses(&sim, "tls_block"),
        ["203.0.113.7"],
        "remote picks the outside end"
    );

    let other = sim_with(SimConfig::default()).await;
    other.add_connection(frozen_tls("192.168.88.77:40000", "203.0.113.8:443"));
    let mut router = router_for(&other, "core");
    router.settings.detection.block_target = BlockTarget::Src;
    router.settings.blocking.block_lan_hosts = true;
    let mut rig = Rig::new(router).await;
    rig.cycle().await;
    assert_eq!(
        list_addresses(&other, "tls_block"),
        ["192.168.88.77"],
        "a deliberate quarantine"
    );
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
    assert_eq!(r.new_blocks().count(), 50, "cfgMaxConnPerCycle = 50");
    assert_eq!(r.deferred, 10);
    assert_eq!(list_addresses(&sim, "tls_block").len(), 50);
    let r = rig.cycle().await;
    assert_eq!(r.new_blocks().count(), 10, "the rest come next cycle");
    assert_eq!(list_addresses(&sim, "tls_block").len(), 60);
}

#[tokio::test]
async fn dry_run_changes_nothing_and_says_what_it_would_do() {
    let sim = sim().await;
    sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    let mut router = router_for(&sim, "core");
    router.settings.blocking.dry_run = true;
    let mut rig = Rig::new(router).await;
    let r = rig.cycle().await;
    assert!(r.dry_run);
    assert_eq!(r.blocks.len(), 1);
    assert_eq!(r.blocks[0].result, AddResult::WouldAdd);
    assert_eq!(r.removals.len(), 1);
    assert_eq!(r.removals[0].result, RemoveResult::WouldRemove);
    assert_eq!(
        r.removals[0].connection, "tcp 192.168.88.50:54321 -> 203.0.113.45:443",
        "named by its endpoints"
    );
    assert!(list_addresses(&sim, "tls_block").is_empty());
    assert_eq!(table(&sim).await.len(), 1, "the connection is still there");
    let again = rig.cycle().await;
    assert_eq!(again.flagged, 1);
    assert!(
        again.blocks.is_empty() && again.removals.is_empty(),
        "each would-be action is reported once"
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
    assert_eq!(r.new_blocks().count(), 1, "{r:?}");
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
        r.connections_removed(),
        3,
        "every flagged TCP connection is still removed"
    );
    assert!(table(&sim).await.is_empty());
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
    let mut router = router_for(&sim, "core");
    // The stall rule's branch of the filter would return the first row anyway.
    router.settings.detection.stall.enabled = false;
    let mut rig = Rig::new(router).await;
    let first = rig.cycle().await;
    assert_eq!(first.flagged, 0, "the string-compared filter hid the row");
    assert!(first.filtered_on_router);
    let second = rig.cycle().await;
    assert!(
        !second.filtered_on_router,
        "the mismatch was noticed: filtering locally now"
    );
    assert_eq!(second.flagged, 1);
    assert_eq!(list_addresses(&sim, "tls_block"), ["203.0.113.15"]);
}

#[tokio::test]
async fn disabled_detection_reads_and_reports_but_flags_nothing() {
    let sim = sim().await;
    sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    sim.add_connection(
        SimConnection::tcp(sa("192.168.88.51:40000"), sa("198.18.0.1:443")).packets(40, 38),
    );
    let mut router = router_for(&sim, "core");
    router.settings.detection.enabled = false;
    let mut rig = Rig::new(router).await;
    let r = rig.cycle().await;
    assert!(r.detection_off);
    assert_eq!(r.scanned, 2, "the rows were read");
    assert_eq!(r.flagged, 0);
    assert!(list_addresses(&sim, "tls_block").is_empty());
    assert_eq!(table(&sim).await.len(), 2);
}

#[tokio::test]
async fn a_fasttracked_healthy_flow_is_judged_on_its_totals() {
    let sim = sim().await;
    // Main counters 3/1 (they stopped when FastTrack took over), the rest in FastTrack's.
    sim.add_connection(
        SimConnection::tcp(sa("192.168.88.50:1000"), sa("203.0.113.70:443"))
            .packets(3, 1)
            .fasttracked(600, 580),
    );
    // A frozen flow whose retransmissions went through FastTrack: 3 + 9 out, 1 + 0 back.
    sim.add_connection(
        SimConnection::tcp(sa("192.168.88.50:1001"), sa("203.0.113.71:443"))
            .packets(3, 1)
            .fasttracked(9, 0),
    );
    let mut rig = Rig::new(router_for(&sim, "core")).await;
    let r = rig.cycle().await;
    assert_eq!(r.flagged, 1, "{r:?}");
    assert_eq!(list_addresses(&sim, "tls_block"), ["203.0.113.71"]);
    assert!(
        r.blocks[0].comment.ends_with("orig=12 repl=1"),
        "{}",
        r.blocks[0].comment
    );
}

#[tokio::test]
async fn an_inbound_port_scan_blocks_the_scanner_and_spares_the_lan_host() {
    let sim = sim().await;
    for port in 1..=40u16 {
        sim.add_connection(
            SimConnection::tcp(
                sa("203.0.113.9:40000"),
                sa(&format!("192.168.88.20:{port}")),
            )
            .packets(1, 0)
            .state(TcpState::SynSent),
        );
    }
    // A LAN host trying many dead servers is spared.
    for host in 1..=30u16 {
        sim.add_connection(
            SimConnection::tcp(
                sa("192.168.88.30:40000"),
                sa(&format!("198.18.5.{host}:443")),
            )
            .packets(1, 0)
            .state(TcpState::SynSent),
        );
    }
    let mut rig = Rig::new(router_for(&sim, "core")).await;
    let r = rig.cycle().await;
    assert_eq!(list_addresses(&sim, "tls_block"), ["203.0.113.9"], "{r:?}");
    assert!(
        r.skipped
            .iter()
            .any(|s| s.address.to_string() == "192.168.88.30" && s.reason.kind() == "lan"),
        "{:?}",
        r.skipped
    );
}

#[tokio::test]
async fn a_bad_row_mid_stream_is_skipped_and_the_cycle_goes_on() {
    let sim = sim().await;
    for i in 0..6u16 {
        sim.add_connection(frozen_tls(
            &format!("192.168.88.50:{}", 1000 + i),
            &format!("203.0.113.{}:443", i + 1),
        ));
    }
    sim.set_faults(routeros_sim::Faults {
        bad_row: Some(routeros_sim::BadRow {
            paths: routeros_sim::PathMatch::prefixes(["/ip/firewall/connection/print"]),
            after: 3,
            kind: routeros_sim::BadRowKind::UnparseableCounter,
        }),
        ..routeros_sim::Faults::default()
    });
    let mut rig = Rig::new(router_for(&sim, "core")).await;
    let r = rig.cycle().await;
    assert_eq!(r.bad_rows, 1);
    assert_eq!(r.flagged, 6, "the rows after the bad one were read: {r:?}");
    assert_eq!(list_addresses(&sim, "tls_block").len(), 6);
}

#[tokio::test]
async fn a_connection_that_vanished_before_its_removal_is_fine() {
    let sim = sim().await;
    sim.add_connection(frozen_tls("192.168.88.50:1000", "203.0.113.45:443"));
    sim.set_faults(routeros_sim::Faults {
        vanishing: routeros_sim::PathMatch::prefixes(["/ip/firewall/connection/remove"]),
        ..routeros_sim::Faults::default()
    });
    let mut rig = Rig::new(router_for(&sim, "core")).await;
    let r = rig.cycle().await;
    assert_eq!(r.removals.len(), 1);
    assert_eq!(r.removals[0].result, RemoveResult::Gone);
    assert_eq!(
        list_addresses(&sim, "tls_block"),
        ["203.0.113.45"],
        "the block went through"
    );
}

#[tokio::test]
async fn a_flow_frozen_after_it_carried_data_blocks_its_server_once_the_sender_retransmits() {
    let sim = sim().await;
    // A download that froze after 8 packets each way (a DPI freeze after N kilobytes): the
    // replies already passed max_repl_packets, so only the stall rule can see it.
    let frozen = sim.add_connection(
        SimConnection::tcp(sa("192.168.88.50:40000"), sa("203.0.113.80:443")).packets(8, 8),
    );
    // A slow but healthy download: few packets, but every poll brings replies.
    let slow = sim.add_connection(
        SimConnection::tcp(sa("192.168.88.51:40001"), sa("203.0.113.81:443")).packets(8, 8),
    );
    // An idle keep-alive: nothing moves.
    sim.add_connection(
        SimConnection::tcp(sa("192.168.88.52:40002"), sa("203.0.113.82:443")).packets(9, 9),
    );
    let mut rig = Rig::new(router_for(&sim, "core")).await;
    assert_eq!(rig.cycle().await.flagged, 0, "a first look is not a stall");
    sim.set_connection_counters(&frozen, 11, 8);
    sim.set_connection_counters(&slow, 11, 11);
    assert_eq!(
        rig.cycle().await.flagged,
        0,
        "3 packets without a reply is below min_orig_growth = 4"
    );
    sim.set_connection_counters(&frozen, 13, 8);
    sim.set_connection_counters(&slow, 14, 14);
    let r = rig.cycle().await;
    assert_eq!(r.flagged, 1, "{r:#?}");
    assert_eq!(
        r.new_blocks()
            .map(|b| b.address.to_string())
            .collect::<Vec<_>>(),
        ["203.0.113.80"]
    );
    assert_eq!(list_addresses(&sim, "tls_block"), ["203.0.113.80"]);
    let comment: Vec<String> = sim
        .address_list(Family::V4, "tls_block")
        .into_iter()
        .map(|e| e.comment.unwrap_or_default())
        .collect();
    assert!(comment[0].contains("stalled"), "{comment:?}");
    // The frozen flow is removed from the router's table; the others stay.
    let left: Vec<String> = table(&sim).await.into_iter().map(|(_, dst)| dst).collect();
    assert_eq!(left, ["203.0.113.81:443", "203.0.113.82:443"]);
}
