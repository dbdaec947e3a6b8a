//! The daemon's behaviour on fake time, through `decide()`: a simulated router list, a
//! [`MemoryHistory`], and a clock that is just a number.

use std::net::IpAddr;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::memory::MemoryHistory;
use crate::model::{ConnId, Connection, Endpoint, ListEntry, Protocol, TcpState};
use crate::observation::SharedCandidate;
use crate::outcome::AddResult;
use crate::settings::{AllowNet, BlockTarget, Blocking, Detection};
use crate::special::Special;

const T0: u64 = 1_800_000_000;

fn at(s: u64) -> Duration {
    Duration::from_secs(T0 + s)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tcp(id: u32, src: &str, dst: &str, orig: u64, repl: u64) -> Connection {
    let dst: Endpoint = dst.parse().unwrap();
    Connection {
        id: ConnId::new(format!("*{id:X}")),
        family: Family::of(dst.addr),
        protocol: Protocol::Tcp,
        src: src.parse().unwrap(),
        dst,
        orig_packets: Some(orig),
        repl_packets: Some(repl),
        orig_bytes: None,
        repl_bytes: None,
        orig_fasttrack_packets: None,
        repl_fasttrack_packets: None,
        tcp_state: Some(TcpState::Established),
    }
}

fn frozen(id: u32, src: &str, dst: &str) -> Connection {
    tcp(id, src, dst, 9, 1)
}

fn udp_with(id: u32, src: &str, dst: &str, orig: u64, repl: u64) -> Connection {
    Connection {
        protocol: Protocol::Udp,
        tcp_state: None,
        ..tcp(id, src, dst, orig, repl)
    }
}

fn udp(id: u32, src: &str, dst: &str) -> Connection {
    Connection {
        protocol: Protocol::Udp,
        tcp_state: None,
        ..tcp(id, src, dst, 30, 0)
    }
}

/// A router with LAN 192.168.88.0/24, WAN 198.51.100.2/24, gateway 198.51.100.1, DNS 9.9.9.9,
/// rosguard at 192.168.88.10; its block list as the router would keep it.
struct Rig {
    s: Settings,
    st: GuardState,
    h: MemoryHistory,
    list: Vec<(ListEntry, Duration)>,
    uptime_base: Duration,
    /// How the next adds turn out (default: all added).
    results: Option<AddResult>,
    protected: bool,
}

impl Rig {
    fn new(s: Settings) -> Self {
        Self {
            st: GuardState::new(&s),
            s,
            h: MemoryHistory::new(),
            list: Vec::new(),
            uptime_base: at(0) - Duration::from_secs(86_400),
            results: None,
            protected: true,
        }
    }

    fn obs(&self, rows: Vec<Connection>, now: Duration) -> Observation {
        Observation {
            rows_read: rows.len() as u64 + 100,
            table_size: Some(rows.len() as u64 + 100),
            candidates: rows,
            addresses: vec![
                "192.168.88.1/24".parse().unwrap(),
                "198.51.100.2/24".parse().unwrap(),
                "fd00:88::1/64".parse().unwrap(),
            ],
            protected: if self.protected {
                vec![
                    (Protected::Gateway, vec![ip("198.51.100.1")]),
                    (Protected::Dns, vec![ip("9.9.9.9")]),
                    (Protected::Session, vec![ip("192.168.88.10")]),
                ]
            } else {
                vec![]
            },
            block_list: self
                .list
                .iter()
                .filter(|(_, until)| *until > now)
                .map(|(e, until)| ListEntry {
                    timeout: Some(*until - now),
                    ..e.clone()
                })
                .collect(),
            uptime: Some(now.saturating_sub(self.uptime_base)),
            own: vec![ip("192.168.88.10"), ip("192.168.88.1")],
            ..Observation::default()
        }
    }

    /// One cycle: decide, apply to the simulated list, record, settle.
    fn cycle_with(&mut self, obs: Observation, now: Duration) -> Decision {
        let d = decide(&obs, &mut self.st, &self.s, &self.h, now);
        let results: Vec<AddResult> = d
            .adds
            .iter()
            .map(|a| {
                let r = if d.dry_run {
                    AddResult::WouldAdd
                } else {
                    self.results.clone().unwrap_or(AddResult::Added)
                };
                if r == AddResult::Added {
                    self.list
                        .push((entry(a.address, &a.comment), now + a.timeout));
                }
                r
            })
            .collect();
        self.h.record(&d, &results, now);
        self.st.settle(&d, &results, now);
        d
    }

    fn cycle(&mut self, rows: Vec<Connection>, now: Duration) -> Decision {
        let obs = self.obs(rows, now);
        self.cycle_with(obs, now)
    }

    fn on_list(&self, now: Duration) -> Vec<String> {
        let mut v: Vec<String> = self
            .list
            .iter()
            .filter(|(_, u)| *u > now)
            .map(|(e, _)| e.address.to_string())
            .collect();
        v.sort();
        v
    }

    fn reboot(&mut self, now: Duration) {
        self.list.clear();
        self.uptime_base = now;
    }
}

fn entry(addr: IpAddr, comment: &str) -> ListEntry {
    ListEntry {
        id: "*1".into(),
        list: "tls_block".into(),
        address: ListAddress::Net(addr.into()),
        timeout: None,
        dynamic: true,
        disabled: false,
        comment: Some(comment.to_owned()),
    }
}

fn new_blocks(d: &Decision) -> Vec<String> {
    d.adds
        .iter()
        .filter(|a| a.kind == AddKind::New)
        .map(|a| a.address.to_string())
        .collect()
}

fn reasons(d: &Decision) -> Vec<(String, &'static str)> {
    d.skipped
        .iter()
        .map(|s| (s.address.to_string(), s.reason.kind()))
        .collect()
}

#[test]
fn the_scripts_defaults_block_at_first_sight() {
    let mut r = Rig::new(Settings::default());
    let d = r.cycle(
        vec![frozen(1, "192.168.88.50:50000", "203.0.113.45:443")],
        at(0),
    );
    assert_eq!(new_blocks(&d), ["203.0.113.45"]);
    assert_eq!(d.adds[0].timeout, Duration::from_secs(86_400));
    assert_eq!(d.removals.len(), 1, "the TCP connection goes too");
    assert_eq!(
        d.removals[0].summary,
        "tcp 192.168.88.50:50000 -> 203.0.113.45:443"
    );
    // Next cycle: already blocked, and the connection is still removed if it came back.
    let d = r.cycle(
        vec![frozen(2, "192.168.88.50:50001", "203.0.113.45:443")],
        at(2),
    );
    assert!(d.adds.is_empty());
    assert_eq!(d.removals.len(), 1);
}

#[test]
fn observations_and_windows_confirm_before_blocking() {
    let mut r = Rig::new(Settings {
        detection: Detection {
            min_observations: 2,
            min_flagged_connections: 2,
            window: Duration::from_secs(60),
            ..Detection::default()
        },
        ..Settings::default()
    });
    let a = || frozen(1, "192.168.88.50:50000", "203.0.113.45:443");
    let b = || frozen(2, "192.168.88.50:50001", "203.0.113.45:443");
    assert!(r.cycle(vec![a()], at(0)).adds.is_empty(), "seen once");
    assert!(
        r.cycle(vec![a()], at(2)).adds.is_empty(),
        "one connection confirmed, N = 2"
    );
    assert!(
        r.cycle(vec![b()], at(4)).adds.is_empty(),
        "the second seen once"
    );
    let d = r.cycle(vec![b()], at(6));
    assert_eq!(
        new_blocks(&d),
        ["203.0.113.45"],
        "two confirmed within the window"
    );
    // Outside the window the first no longer counts.
    let mut late = Rig::new(r.s.clone());
    late.cycle(vec![a()], at(0));
    late.cycle(vec![a()], at(2));
    late.cycle(vec![b()], at(100));
    assert!(late.cycle(vec![b()], at(102)).adds.is_empty());
}

#[test]
fn escalation_grows_the_timeout_of_repeat_offenders() {
    let mut r = Rig::new(Settings {
        blocking: Blocking {
            escalation_factor: 2.0,
            block_timeout: Duration::from_secs(3600),
            ..Blocking::default()
        },
        ..Settings::default()
    });
    let row = || frozen(1, "192.168.88.50:50000", "203.0.113.45:443");
    assert_eq!(
        r.cycle(vec![row()], at(0)).adds[0].timeout,
        Duration::from_secs(3600)
    );
    let d = r.cycle(vec![row()], at(3601));
    assert_eq!(
        (d.adds[0].timeout, d.adds[0].level),
        (Duration::from_secs(7200), 1)
    );
    let d = r.cycle(vec![row()], at(3601 + 7201));
    assert_eq!(
        (d.adds[0].timeout, d.adds[0].level),
        (Duration::from_secs(14_400), 2)
    );
}

#[test]
fn the_hourly_cap_counts_new_and_shared_blocks_that_took_effect() {
    let mut r = Rig::new(Settings {
        blocking: Blocking {
            max_blocks_per_hour: 3,
            ..Blocking::default()
        },
        ..Settings::default()
    });
    // Failed adds (a permission trap) do not use the budget.
    r.results = Some(AddResult::Failed {
        message: "not enough permissions (9)".into(),
        permission: true,
    });
    let rows = |n: u32, base: u32| -> Vec<Connection> {
        (0..n)
            .map(|i| {
                frozen(
                    base + i,
                    "192.168.88.50:50000",
                    &format!("203.0.113.{}:443", base + i),
                )
            })
            .collect()
    };
    let d = r.cycle(rows(3, 10), at(0));
    assert_eq!(d.adds.len(), 3);
    assert_eq!(r.st.hourly_budget(at(0)), Some(3), "nothing took effect");
    // Fixed permission: three go through, the fourth is capped, loudly once.
    r.results = None;
    let d = r.cycle(rows(4, 10), at(12));
    assert_eq!(d.adds.len(), 3);
    assert_eq!(d.capped, 1);
    assert_eq!(d.caps.len(), 1);
    assert!(d.caps[0].news && d.caps[0].cap == Cap::MaxBlocksPerHour);
    let d = r.cycle(rows(1, 20), at(14));
    assert_eq!(d.capped, 1);
    assert!(!d.caps[0].news, "logged once per episode");
    // A shared block needs budget too.
    let shared = |until: Duration| SharedCandidate {
        from_router: "edge".into(),
        address: ip("203.0.113.99"),
        expires: until,
        comment: "rosguard: x".into(),
        evidence_json: "{}".into(),
    };
    let mut o = r.obs(vec![], at(16));
    o.shared.push(shared(at(16 + 600)));
    let d = r.cycle_with(o, at(16));
    assert!(d.adds.is_empty() && d.capped == 1);
    // An hour later the budget is back; the shared block goes in with its remaining time.
    let mut o = r.obs(vec![], at(3620));
    o.shared.push(shared(at(3620 + 600)));
    let d = r.cycle_with(o, at(3620));
    assert_eq!(d.adds.len(), 1);
    assert_eq!(
        d.adds[0].kind,
        AddKind::Shared {
            from: "edge".into()
        }
    );
    assert_eq!(d.adds[0].timeout, Duration::from_secs(600));
    assert_eq!(d.adds[0].comment, "rosguard: x (shared from edge)");
    // Restores do not use the hourly budget: fill it, reboot, everything comes back.
    let d = r.cycle(rows(2, 30), at(3622));
    assert_eq!(d.adds.len(), 2);
    assert_eq!(r.st.hourly_budget(at(3622)), Some(0));
    r.reboot(at(3700));
    r.st.connected();
    let d = r.cycle(vec![], at(3702));
    let restored = d
        .adds
        .iter()
        .filter(|a| a.kind == AddKind::Restored)
        .count();
    assert_eq!(restored, 6, "{:?}", d.adds);
    assert!(d.rebooted && d.capped == 0);
}

#[test]
fn the_list_cap_holds_new_restored_and_shared_blocks() {
    let mut r = Rig::new(Settings {
        blocking: Blocking {
            max_list_size: 2,
            ..Blocking::default()
        },
        ..Settings::default()
    });
    let rows: Vec<Connection> = (0..3)
        .map(|i| frozen(i, "192.168.88.50:50000", &format!("203.0.113.{i}:443")))
        .collect();
    let d = r.cycle(rows, at(0));
    assert_eq!(d.adds.len(), 2);
    assert_eq!(d.caps[0].cap, Cap::MaxListSize);
    assert_eq!(
        d.removals.len(),
        2,
        "the capped target keeps its connection"
    );
    assert_eq!(r.on_list(at(0)).len(), 2);
}

#[test]
fn the_panic_brake_blocks_nothing_when_most_of_the_table_is_one_sided() {
    let mut r = Rig::new(Settings::default());
    let rows: Vec<Connection> = (0..30)
        .map(|i| frozen(i, "192.168.88.50:50000", &format!("203.0.113.{i}:443")))
        .collect();
    let mut o = r.obs(rows, at(0));
    o.table_size = Some(40);
    o.rows_read = 30;
    let d = r.cycle_with(o, at(0));
    assert!(d.adds.is_empty() && d.removals.is_empty());
    assert_eq!(
        d.brake.map(|b| (b.cap, b.flagged, b.table_size)),
        Some((Cap::PanicBrake, 30, 40))
    );
    assert_eq!(d.capped, 30);
    // With the table's real size (the filter on the router returned only candidates) it is
    // a small share and blocking goes on.
    let rows: Vec<Connection> = (0..30)
        .map(|i| frozen(i, "192.168.88.50:50000", &format!("203.0.113.{i}:443")))
        .collect();
    let mut o = r.obs(rows, at(2));
    o.table_size = Some(10_000);
    assert_eq!(r.cycle_with(o, at(2)).adds.len(), 30);
}

#[test]
fn an_incomplete_picture_blocks_nothing() {
    let mut r = Rig::new(Settings::default());
    let mut o = r.obs(
        vec![frozen(1, "192.168.88.50:50000", "203.0.113.45:443")],
        at(0),
    );
    o.truncated = true;
    let d = r.cycle_with(o, at(0));
    assert!(d.adds.is_empty());
    assert_eq!(d.brake.map(|b| b.cap), Some(Cap::CandidateLimit));
    assert!(d.caps[0].news);
}

#[test]
fn blocks_are_restored_after_a_reboot_with_the_time_that_remains() {
    let mut r = Rig::new(Settings::default());
    r.cycle(
        vec![frozen(1, "192.168.88.50:50000", "203.0.113.45:443")],
        at(0),
    );
    r.reboot(at(3600));
    r.st.connected();
    let d = r.cycle(vec![], at(3600 + 30));
    assert!(d.rebooted);
    assert_eq!(d.adds.len(), 1);
    assert_eq!(d.adds[0].kind, AddKind::Restored);
    assert_eq!(
        d.adds[0].timeout,
        Duration::from_secs(86_400 - 3630),
        "the remainder, not 1d"
    );
    assert_eq!(r.on_list(at(3631)), ["203.0.113.45"]);
}

#[test]
fn a_hand_removal_is_honoured_as_a_lift() {
    let mut r = Rig::new(Settings::default());
    r.cycle(
        vec![frozen(1, "192.168.88.50:50000", "203.0.113.45:443")],
        at(0),
    );
    // The operator removes the entry on the router; no reboot (uptime goes on).
    r.list.clear();
    r.st.connected();
    let d = r.cycle(vec![], at(600));
    assert!(d.adds.is_empty(), "{:?}", d.adds);
    assert_eq!(
        d.lifts,
        [Lift {
            address: ip("203.0.113.45"),
            until: at(600) + Duration::from_secs(7 * 86_400)
        }]
    );
    // Honoured like an unblock: still flagged, it is not blocked again while the hold lasts.
    let d = r.cycle(
        vec![frozen(2, "192.168.88.50:50001", "203.0.113.45:443")],
        at(700),
    );
    assert!(d.adds.is_empty());
    assert_eq!(reasons(&d), [("203.0.113.45".into(), "unblocked")]);
    // Lifted for good: a reboot later does not bring it back.
    r.reboot(at(900));
    r.st.connected();
    assert!(r.cycle(vec![], at(901)).adds.is_empty());
    // A reboot after a restore: the restored placement is what counts.
    let mut r = Rig::new(Settings::default());
    r.cycle(
        vec![frozen(1, "192.168.88.50:50000", "203.0.113.46:443")],
        at(0),
    );
    r.reboot(at(100));
    r.st.connected();
    assert_eq!(
        r.cycle(vec![], at(110)).adds.len(),
        1,
        "restored after the reboot"
    );
    r.list.clear();
    r.st.connected();
    let d = r.cycle(vec![], at(200));
    assert!(
        d.adds.is_empty() && d.lifts.len() == 1,
        "removed by hand after the restore"
    );
}

#[test]
fn rosguard_entries_without_a_record_are_adopted() {
    let mut r = Rig::new(Settings::default());
    r.list.push((
        entry(ip("203.0.113.77"), "rosguard: tcp a -> b orig=9 repl=1"),
        at(500),
    ));
    r.list
        .push((entry(ip("203.0.113.78"), "added by hand"), at(500)));
    let d = r.cycle(vec![], at(0));
    assert_eq!(d.adopted.len(), 1);
    assert_eq!(d.adopted[0].address, ip("203.0.113.77"));
    assert_eq!(d.adopted[0].remaining, Duration::from_secs(500));
    // Recorded now: after a reboot it is restored like any other block.
    r.reboot(at(100));
    r.st.connected();
    let d = r.cycle(vec![], at(101));
    assert_eq!(d.adds.len(), 1);
    assert!(d.adopted.is_empty());
}

#[test]
fn nothing_is_blocked_until_the_protected_addresses_are_known() {
    let mut r = Rig::new(Settings::default());
    r.protected = false;
    // The default gateway shows up as an unresponsive destination.
    let rows = || {
        vec![
            frozen(1, "192.168.88.50:50000", "198.51.100.1:443"),
            frozen(2, "192.168.88.50:50001", "203.0.113.45:443"),
        ]
    };
    let d = r.cycle(rows(), at(0));
    assert!(d.adds.is_empty());
    assert_eq!(d.protection_missing, Protected::ALL);
    // The gateway sits in the router's WAN network, which is protected anyway.
    assert_eq!(
        reasons(&d),
        [
            ("198.51.100.1".into(), "lan"),
            ("203.0.113.45".into(), "protection-unknown")
        ]
    );
    assert!(
        r.st.plan(&r.s, at(2)).refresh_protected,
        "retried every cycle"
    );
    r.protected = true;
    let d = r.cycle(rows(), at(2));
    assert_eq!(new_blocks(&d), ["203.0.113.45"]);
    assert_eq!(reasons(&d), [("198.51.100.1".into(), "lan")]);
    // Once known, a failed refresh keeps the last known set.
    r.protected = false;
    let d = r.cycle(
        vec![frozen(3, "192.168.88.50:50002", "9.9.9.9:443")],
        at(400),
    );
    assert_eq!(reasons(&d), [("9.9.9.9".into(), "protected")]);
    assert!(d.protection_missing.is_empty());
}

#[test]
fn lan_hosts_special_and_own_addresses_are_never_blocked() {
    // block_target = "dst" on purpose: an outsider's spray at a LAN host makes the LAN host
    // the destination.
    let mut r = Rig::new(Settings {
        detection: Detection {
            block_target: BlockTarget::Dst,
            ..Detection::default()
        },
        ..Settings::default()
    });
    let d = r.cycle(
        vec![
            udp(1, "203.0.113.66:40000", "192.168.88.20:443"),
            udp(2, "203.0.113.66:40000", "[fd00:88::20]:443"),
            udp(3, "192.168.88.20:5353", "224.0.0.251:443"),
            udp(4, "192.168.88.20:5353", "255.255.255.255:443"),
            udp(5, "192.168.88.20:5353", "[ff02::1]:443"),
            udp(6, "192.168.88.20:5353", "169.254.1.1:443"),
            udp(7, "192.168.88.20:5353", "0.0.0.0:443"),
            frozen(8, "192.168.88.50:50000", "192.168.88.10:443"),
        ],
        at(0),
    );
    assert!(d.adds.is_empty(), "{:?}", d.adds);
    assert_eq!(
        reasons(&d),
        [
            ("192.168.88.20".into(), "lan"),
            ("fd00:88::20".into(), "lan"),
            ("224.0.0.251".into(), "special"),
            ("255.255.255.255".into(), "special"),
            ("ff02::1".into(), "special"),
            ("169.254.1.1".into(), "special"),
            ("0.0.0.0".into(), "special"),
            ("192.168.88.10".into(), "own"),
        ]
    );
    assert!(d.skipped[0].reason.to_string().contains("192.168.88.0/24"));
    assert_eq!(d.skipped[7].reason, SkipReason::Own);
    let special = d.skipped[2].reason;
    assert_eq!(
        special,
        SkipReason::Special {
            what: Special::Multicast
        }
    );
    // The default target, "remote", blocks the outsider instead.
    let mut r = Rig::new(Settings::default());
    let d = r.cycle(
        vec![udp(1, "203.0.113.66:40000", "192.168.88.20:443")],
        at(0),
    );
    assert_eq!(new_blocks(&d), ["203.0.113.66"]);
    // A deliberate LAN quarantine is possible when the config says so.
    let mut r = Rig::new(Settings {
        detection: Detection {
            block_target: BlockTarget::Src,
            ..Detection::default()
        },
        blocking: Blocking {
            block_lan_hosts: true,
            ..Blocking::default()
        },
        ..Settings::default()
    });
    let d = r.cycle(
        vec![frozen(1, "192.168.88.50:50000", "203.0.113.45:443")],
        at(0),
    );
    assert_eq!(new_blocks(&d), ["192.168.88.50"]);
}

#[test]
fn allow_lists_spare_addresses() {
    let mut r = Rig::new(Settings {
        blocking: Blocking {
            allow: vec!["203.0.113.0/28".parse::<AllowNet>().unwrap()],
            ..Blocking::default()
        },
        ..Settings::default()
    });
    let mut o = r.obs(
        vec![
            frozen(1, "192.168.88.50:50000", "203.0.113.5:443"),
            frozen(2, "192.168.88.50:50001", "1.1.1.1:443"),
        ],
        at(0),
    );
    o.allowlist.push(ListEntry {
        list: "allowlist".into(),
        ..entry(ip("1.1.1.1"), "trusted")
    });
    let d = r.cycle_with(o, at(0));
    assert!(d.adds.is_empty());
    assert_eq!(
        reasons(&d),
        [
            ("203.0.113.5".into(), "config-allow"),
            ("1.1.1.1".into(), "router-allowlist")
        ]
    );
    assert!(
        d.removals.is_empty(),
        "a protected target's connection stays"
    );
}

#[test]
fn an_operator_unblock_suppresses_reblocking_until_it_ends() {
    let mut r = Rig::new(Settings::default());
    let row = || udp(1, "192.168.88.50:5000", "203.0.113.45:443");
    r.cycle(vec![row()], at(0));
    r.list.clear();
    r.h.unblock(ip("203.0.113.45"), at(3600));
    let d = r.cycle(vec![row()], at(10));
    assert!(d.adds.is_empty());
    assert_eq!(
        d.skipped[0].reason,
        SkipReason::Unblocked { until: at(3600) }
    );
    assert!(
        d.lifts.is_empty(),
        "an unblocked record is not a hand removal either"
    );
    assert_eq!(
        new_blocks(&r.cycle(vec![row()], at(3601))),
        ["203.0.113.45"]
    );
}

#[test]
fn dry_run_decides_counts_and_reports_each_action_once() {
    let mut r = Rig::new(Settings {
        blocking: Blocking {
            dry_run: true,
            ..Blocking::default()
        },
        ..Settings::default()
    });
    let rows = || vec![frozen(1, "192.168.88.50:50000", "203.0.113.45:443")];
    let d = r.cycle(rows(), at(0));
    assert!(d.dry_run);
    assert_eq!(new_blocks(&d), ["203.0.113.45"]);
    assert_eq!(d.removals.len(), 1);
    assert!(r.on_list(at(0)).is_empty(), "nothing changed on the router");
    for t in [2, 4, 6] {
        let d = r.cycle(rows(), at(t));
        assert!(
            d.adds.is_empty() && d.removals.is_empty(),
            "reported once: {d:?}"
        );
    }
    // After the would-be timeout it is news again.
    assert_eq!(r.cycle(rows(), at(86_401)).adds.len(), 1);
    // No restores are attempted in dry run.
    assert!(!r.st.plan(&r.s, at(86_403)).read_uptime);
}

#[test]
fn inbound_scanners_are_blocked_and_lan_scanners_spared() {
    let mut r = Rig::new(Settings::default());
    let syn = |i: u16, src: &str, dst: &str| Connection {
        tcp_state: Some(TcpState::SynSent),
        ..tcp(u32::from(i), src, &format!("{dst}:{i}"), 1, 0)
    };
    let mut rows: Vec<Connection> = (1..=40)
        .map(|p| syn(p, "203.0.113.9:40000", "192.168.88.20"))
        .collect();
    rows.extend((1..=40).map(|p| syn(1000 + p, "192.168.88.30:40000", "203.0.113.200")));
    let d = r.cycle(rows, at(0));
    assert_eq!(new_blocks(&d), ["203.0.113.9"]);
    assert_eq!(d.adds[0].finding.as_ref().unwrap().rule, Rule::PortScan);
    assert!(
        d.adds[0]
            .comment
            .starts_with("rosguard: port-scan 203.0.113.9 tried 20"),
        "{}",
        d.adds[0].comment
    );
    assert!(
        d.removals.is_empty(),
        "a scan's half-open rows are left to time out"
    );
    assert_eq!(reasons(&d), [("192.168.88.30".into(), "lan")]);
    assert_eq!(
        d.ignored,
        Ignored::default(),
        "attempts are not counted as ignored rows"
    );
}

#[test]
fn the_routers_staging_list_goes_through_the_same_checks() {
    let mut r = Rig::new(Settings::default());
    let mut o = r.obs(vec![], at(0));
    let staged = |a: &str| ListEntry {
        list: "rosguard_scan".into(),
        ..entry(ip(a), "")
    };
    o.staging = vec![
        staged("203.0.113.10"),
        staged("192.168.88.40"),
        staged("9.9.9.9"),
    ];
    let d = r.cycle_with(o, at(0));
    assert_eq!(new_blocks(&d), ["203.0.113.10"]);
    assert_eq!(d.adds[0].comment, "rosguard: router-psd list rosguard_scan");
    assert_eq!(
        reasons(&d),
        [
            ("192.168.88.40".into(), "lan"),
            ("9.9.9.9".into(), "protected")
        ]
    );
}

#[test]
fn a_flow_frozen_after_n_kilobytes_is_blocked_as_stalled() {
    let mut r = Rig::new(Settings::default());
    let row = |o| tcp(1, "192.168.88.50:50000", "203.0.113.31:443", o, 8);
    assert!(r.cycle(vec![row(8)], at(0)).adds.is_empty());
    assert!(r.cycle(vec![row(10)], at(2)).adds.is_empty());
    let d = r.cycle(vec![row(12)], at(4));
    assert_eq!(new_blocks(&d), ["203.0.113.31"]);
    let f = d.adds[0].finding.as_ref().unwrap();
    assert_eq!(f.rule, Rule::Stall);
    assert_eq!(
        d.adds[0].comment,
        "rosguard: tcp 192.168.88.50:50000 -> 203.0.113.31:443 stalled: 4 sent without a reply, orig=12 repl=8"
    );
    assert_eq!(d.removals.len(), 1, "the stalled TCP connection goes too");
    // Off: never.
    let mut off = Rig::new(Settings {
        detection: Detection {
            stall: crate::settings::Stall {
                enabled: false,
                ..Default::default()
            },
            ..Detection::default()
        },
        ..Settings::default()
    });
    for (i, o) in [8, 10, 12, 14].into_iter().enumerate() {
        assert!(off.cycle(vec![row(o)], at(i as u64 * 2)).adds.is_empty());
    }
}

#[test]
fn stalled_flows_count_for_the_panic_brake() {
    // The uplink died mid-transfer: every flow stalls at once.
    let mut r = Rig::new(Settings::default());
    let rows = |o| -> Vec<Connection> {
        (0..30u32)
            .map(|i| {
                tcp(
                    i,
                    &format!("192.168.88.50:{}", 40000 + i),
                    &format!("203.0.113.{}:443", i + 1),
                    o,
                    8,
                )
            })
            .collect()
    };
    let obs = |r: &Rig, o, t| {
        let mut x = r.obs(rows(o), at(t));
        x.table_size = Some(40);
        x.rows_read = 30;
        x
    };
    let o = obs(&r, 8, 0);
    r.cycle_with(o, at(0));
    let o = obs(&r, 14, 2);
    let d = r.cycle_with(o, at(2));
    assert!(d.adds.is_empty());
    assert_eq!(d.brake.map(|b| b.cap), Some(Cap::PanicBrake));
}

#[test]
fn ignored_rows_are_counted_and_detection_can_be_off() {
    let mut r = Rig::new(Settings::default());
    let d = r.cycle(
        vec![
            tcp(1, "192.168.88.50:50000", "203.0.113.45:22", 9, 0),
            Connection {
                protocol: Protocol::Gre,
                ..tcp(2, "192.168.88.50:50000", "203.0.113.46:443", 9, 0)
            },
            udp_with(3, "192.168.88.50:50000", "203.0.113.47:443", 2, 0),
        ],
        at(0),
    );
    assert_eq!(
        (d.ignored.port, d.ignored.protocol, d.ignored.counters),
        (1, 1, 1)
    );
    assert_eq!(d.flagged, 0);
    let mut off = Rig::new(Settings {
        detection: Detection {
            enabled: false,
            ..Detection::default()
        },
        ..Settings::default()
    });
    let d = off.cycle(
        vec![frozen(1, "192.168.88.50:50000", "203.0.113.45:443")],
        at(0),
    );
    assert!(d.detection_off && d.flagged == 0 && d.adds.is_empty());
}

#[test]
fn a_reload_keeps_what_the_tracker_learnt_and_the_hourly_count() {
    let s = Settings {
        detection: Detection {
            min_observations: 3,
            ..Detection::default()
        },
        blocking: Blocking {
            max_blocks_per_hour: 2,
            ..Blocking::default()
        },
        ..Settings::default()
    };
    let mut r = Rig::new(s.clone());
    let row = || frozen(1, "192.168.88.50:50000", "203.0.113.45:443");
    r.cycle(vec![row()], at(0));
    r.cycle(vec![row()], at(2));
    let mut reloaded = s.clone();
    reloaded.blocking.block_timeout = Duration::from_secs(60);
    r.st.reconfigure(&reloaded);
    r.s = reloaded;
    assert_eq!(
        r.cycle(vec![row()], at(4)).adds.len(),
        1,
        "the streak survived the reload"
    );
    assert_eq!(r.st.hourly_budget(at(4)), Some(1), "the count survived too");
}

#[test]
fn a_reload_that_changes_detection_keeps_the_streaks_and_applies_the_new_thresholds() {
    // README: "a reload keeps ... what the tracker has learnt (its thresholds change in
    // place)". Two polls seen at K = 3, then K becomes 4: the fourth poll in a row blocks,
    // not the third (old threshold) and not the fourth after the reload (forgotten streak).
    let s = Settings {
        detection: Detection {
            min_observations: 3,
            ..Detection::default()
        },
        ..Settings::default()
    };
    let mut r = Rig::new(s.clone());
    let row = || frozen(1, "192.168.88.50:50000", "203.0.113.45:443");
    assert!(r.cycle(vec![row()], at(0)).adds.is_empty());
    assert!(r.cycle(vec![row()], at(2)).adds.is_empty());
    let mut reloaded = s.clone();
    reloaded.detection.min_observations = 4;
    r.st.reconfigure(&reloaded);
    r.s = reloaded;
    assert!(
        r.cycle(vec![row()], at(4)).adds.is_empty(),
        "the new threshold applies"
    );
    assert_eq!(
        new_blocks(&r.cycle(vec![row()], at(6))),
        ["203.0.113.45"],
        "the streak survived the reload"
    );
}

#[test]
fn protected_sets_are_reread_every_five_minutes_and_kept_when_a_read_fails() {
    let mut r = Rig::new(Settings::default());
    r.cycle(vec![], at(0));
    assert!(
        !r.st.plan(&r.s, at(299)).refresh_protected,
        "known: not reread"
    );
    assert!(
        r.st.plan(&r.s, at(300)).refresh_protected,
        "every five minutes"
    );
    // The read at 300 s: a new DNS server replaces the set; the old one is no longer spared.
    let mut obs = r.obs(
        vec![
            frozen(1, "192.168.88.50:50000", "9.9.9.9:443"),
            frozen(2, "192.168.88.50:50001", "1.0.0.1:443"),
        ],
        at(300),
    );
    for (kind, set) in &mut obs.protected {
        if *kind == Protected::Dns {
            *set = vec![ip("1.0.0.1")];
        }
    }
    let d = r.cycle_with(obs, at(300));
    assert_eq!(new_blocks(&d), ["9.9.9.9"]);
    assert_eq!(reasons(&d), [("1.0.0.1".into(), "protected")]);
    assert!(!r.st.plan(&r.s, at(599)).refresh_protected);
    // At 600 s the read fails: the set of 300 s stays, and the next poll tries again.
    r.protected = false;
    let d = r.cycle(
        vec![frozen(3, "192.168.88.50:50002", "1.0.0.1:443")],
        at(600),
    );
    assert_eq!(reasons(&d), [("1.0.0.1".into(), "protected")]);
    assert!(d.protection_missing.is_empty());
    assert!(
        r.st.plan(&r.s, at(602)).refresh_protected,
        "a failed read is retried at the next poll"
    );
}

// ---- safety over sequences ------------------------------------------------------------

/// Addresses the sequences draw from: some protected in every way there is.
fn pool() -> Vec<&'static str> {
    vec![
        "203.0.113.1",
        "203.0.113.2",
        "203.0.113.3",
        "203.0.113.4",
        "198.51.100.1",  // gateway
        "9.9.9.9",       // DNS
        "192.168.88.10", // own
        "192.168.88.20", // LAN
        "1.1.1.1",       // router allowlist
        "8.8.8.8",       // config allow
        "224.0.0.251",   // special
        "2001:db8::5",
        "2001:db8::6",
        "fd00:88::7", // LAN (v6)
    ]
}

fn protected_in_rig(a: IpAddr) -> bool {
    let t = a.to_canonical().to_string();
    matches!(
        t.as_str(),
        "198.51.100.1"
            | "9.9.9.9"
            | "192.168.88.10"
            | "192.168.88.20"
            | "1.1.1.1"
            | "8.8.8.8"
            | "224.0.0.251"
            | "fd00:88::7"
    ) || t.starts_with("192.168.88.")
        || t.starts_with("198.51.100.")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_sequences_never_block_protected_addresses_nor_exceed_the_caps(
        polls in prop::collection::vec(
            (prop::collection::vec((0usize..14, 0usize..14, 0u64..8, 0u64..3, any::<bool>()), 0..25),
             1u64..900, any::<bool>(), any::<bool>()),
            1..25),
        hourly in 0u32..6,
        list_max in 0u32..8,
        k in 1u32..3,
        n in 1u32..3,
        target in prop::sample::select(vec![BlockTarget::Dst, BlockTarget::Src, BlockTarget::Remote]),
    ) {
        let s = Settings {
            detection: Detection {
                min_observations: k,
                min_flagged_connections: n,
                block_target: target,
                ..Detection::default()
            },
            blocking: Blocking {
                max_blocks_per_hour: hourly,
                max_list_size: list_max,
                allow: vec!["8.8.8.8".parse().unwrap()],
                ..Blocking::default()
            },
            ..Settings::default()
        };
        let mut r = Rig::new(s);
        let addrs = pool();
        let mut now = at(0);
        let mut effective: Vec<Duration> = Vec::new();
        for (rows, step, reboot, shared) in polls {
            now += Duration::from_secs(step);
            if reboot {
                r.reboot(now);
                r.st.connected();
            }
            let conns: Vec<Connection> = rows.iter().enumerate().map(|(i, &(sa, da, o, rp, is_udp))| {
                let (src, dst) = (ip(addrs[sa]), ip(addrs[da]));
                let c = tcp(i as u32, &Endpoint { addr: src, port: Some(40000) }.to_string(),
                    &Endpoint { addr: dst, port: Some(443) }.to_string(), o, rp);
                if is_udp { Connection { protocol: Protocol::Udp, tcp_state: None, ..c } } else { c }
            }).collect();
            let mut o = r.obs(conns, now);
            o.allowlist.push(ListEntry { list: "allowlist".into(), ..entry(ip("1.1.1.1"), "") });
            if shared {
                o.shared.push(SharedCandidate {
                    from_router: "other".into(),
                    address: ip(addrs[(step as usize) % addrs.len()]),
                    expires: now + Duration::from_secs(600),
                    comment: "rosguard: shared".into(),
                    evidence_json: "{}".into(),
                });
            }
            let list_before = o.block_list.len();
            let d = r.cycle_with(o, now);
            for a in &d.adds {
                prop_assert!(!protected_in_rig(a.address), "blocked {} ({:?})", a.address, a.kind);
            }
            for rm in &d.removals {
                prop_assert!(!protected_in_rig(rm.target));
            }
            if list_max > 0 {
                prop_assert!(list_before + d.adds.len() <= list_max as usize
                    || d.adds.is_empty(), "list {} + {} > {}", list_before, d.adds.len(), list_max);
            }
            effective.extend(d.adds.iter().filter(|a| a.kind != AddKind::Restored).map(|_| now));
            if hourly > 0 {
                let hour_ago = now.saturating_sub(Duration::from_secs(3600));
                let in_hour = effective.iter().filter(|t| **t > hour_ago).count();
                prop_assert!(in_hour <= hourly as usize, "{} blocks within an hour, cap {}", in_hour, hourly);
            }
        }
    }
}
