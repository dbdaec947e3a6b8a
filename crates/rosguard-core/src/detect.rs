//! Detection: which connection rows are *asymmetric* (many packets out, almost none back), and
//! which address each one points at.
//!
//! This is the seed script's test, row by row: the protocol is monitored, the destination
//! (service) port is monitored, `orig-packets > min_orig_packets` and
//! `repl-packets <= max_repl_packets`, on the totals: a router's FastTrack counters are added
//! to the slow-path ones, because a FastTracked healthy flow's main counters stop early and can
//! look one-sided. [`is_candidate`] is the looser test a backend applies while it streams a
//! table, so that only rows some rule could flag are kept.
//!
//! Port scans are [`scan`](crate::scan)'s; this module only says what a scan attempt is.
//!
//! It deliberately does not decide whether to block (allowlists, caps and duplicates are
//! [`policy`](crate::policy)'s job) and keeps no memory between polls (that is
//! [`state`](crate::state)).

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::{Connection, Networks, Protocol, TcpState};
use crate::settings::{BlockTarget, Detection};

/// Which test flagged an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Rule {
    /// Many original-direction packets, (almost) no replies.
    Asymmetric,
    /// Unanswered attempts at many distinct ports or hosts within a window.
    PortScan,
    /// The router's `psd` rule staged the address.
    RouterPsd,
    /// A flow whose replies stopped after it carried data: sent on, nothing back.
    Stall,
}

impl Rule {
    /// A stable name for logs, metrics and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Asymmetric => "asymmetric",
            Rule::PortScan => "port-scan",
            Rule::RouterPsd => "router-psd",
            Rule::Stall => "stall",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a finding rests on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Evidence {
    /// One asymmetric connection, as read.
    Connection {
        /// The row.
        connection: Connection,
    },
    /// A scan: `tried` distinct (host, port) pairs left unanswered within the window.
    Scan {
        /// How many distinct pairs were tried.
        tried: u32,
        /// One of the attempts, as read.
        example: Connection,
    },
    /// The router's `psd` rule put the address in the staging list.
    Staged {
        /// The staging list.
        list: String,
    },
    /// A flow that sent `sent` packets since its reply counter last moved, and got none.
    Stalled {
        /// Packets sent since the last reply.
        sent: u64,
        /// The row, as read now.
        connection: Connection,
    },
}

/// A flagged address and why.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Finding {
    /// The address to block.
    pub target: IpAddr,
    /// The test that fired.
    pub rule: Rule,
    /// What it fired on.
    pub evidence: Evidence,
}

impl Finding {
    /// An asymmetric-connection finding.
    pub fn asymmetric(connection: Connection, target: IpAddr) -> Self {
        Finding {
            target,
            rule: Rule::Asymmetric,
            evidence: Evidence::Connection { connection },
        }
    }

    /// The connection the finding rests on: the flagged row, or a scan's example row.
    pub fn connection(&self) -> Option<&Connection> {
        match &self.evidence {
            Evidence::Connection { connection } => Some(connection),
            Evidence::Scan { example, .. } => Some(example),
            Evidence::Stalled { connection, .. } => Some(connection),
            Evidence::Staged { .. } => None,
        }
    }
}

/// Why a candidate row was not flagged as asymmetric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Miss {
    /// The protocol is not monitored.
    Protocol,
    /// The destination port is not monitored.
    Port,
    /// The counters are within the thresholds (or missing).
    Counters,
}

/// The seed script's test on the totals: protocol watched, destination port watched (any port
/// when `monitored_ports` is empty; a port-less row only then), `orig > min` and
/// `repl <= max`. A row missing either packet counter is never flagged.
pub fn asymmetric_miss(conn: &Connection, d: &Detection) -> Option<Miss> {
    let (Some(orig), Some(repl)) = (conn.orig_total(), conn.repl_total()) else {
        return Some(Miss::Counters);
    };
    if orig <= d.min_orig_packets || repl > d.max_repl_packets {
        return Some(Miss::Counters);
    }
    if !d.protocols.contains(&conn.protocol) {
        return Some(Miss::Protocol);
    }
    let port_ok = d.monitored_ports.is_empty()
        || conn
            .dst
            .port
            .is_some_and(|p| d.monitored_ports.contains(&p));
    if port_ok {
        None
    } else {
        Some(Miss::Port)
    }
}

/// True when the row is asymmetric under `d`.
pub fn is_asymmetric(conn: &Connection, d: &Detection) -> bool {
    asymmetric_miss(conn, d).is_none()
}

/// True when the row is an unanswered TCP attempt in one of the scan states.
pub fn is_scan_attempt(conn: &Connection, d: &Detection) -> bool {
    d.scan.enabled
        && conn.protocol == Protocol::Tcp
        && conn.dst.port.is_some()
        && conn.repl_total() == Some(0)
        && conn.tcp_state.is_some_and(|s| d.scan.states.contains(&s))
}

/// The TCP states a stalled flow can be in: it carried data, and it is not over.
pub const STALL_STATES: &[TcpState] = &[
    TcpState::Established,
    TcpState::FinWait,
    TcpState::CloseWait,
    TcpState::LastAck,
];

/// True when the row is a flow the stall rule watches: TCP to a monitored port, in a state
/// that carries data, with few replies so far (it froze early, if at all).
pub fn is_stall_candidate(conn: &Connection, d: &Detection) -> bool {
    d.stall.enabled
        && conn.protocol == Protocol::Tcp
        && d.protocols.contains(&Protocol::Tcp)
        && conn.tcp_state.is_some_and(|s| STALL_STATES.contains(&s))
        && conn
            .repl_total()
            .is_some_and(|r| r <= d.stall.max_repl_packets)
        && (d.monitored_ports.is_empty()
            || conn
                .dst
                .port
                .is_some_and(|p| d.monitored_ports.contains(&p)))
}

/// The looser test a backend applies while streaming: could any rule flag this row? Ports are
/// not looked at by the asymmetric part (the decision counts the rows it ignores for their
/// port).
pub fn is_candidate(conn: &Connection, d: &Detection) -> bool {
    is_flag_candidate(conn, d) || (d.enabled && is_stall_candidate(conn, d))
}

/// [`is_candidate`] without the stall rule's rows: a row the asymmetric or the scan rule could
/// flag in this very poll. A backend caps these apart from the stall rule's watched flows,
/// which are many more on a busy router and are bounded by `stall.max_tracked`.
pub fn is_flag_candidate(conn: &Connection, d: &Detection) -> bool {
    if !d.enabled {
        return false;
    }
    let counters = matches!(
        (conn.orig_total(), conn.repl_total()),
        (Some(o), Some(r)) if o > d.min_orig_packets && r <= d.max_repl_packets
    );
    (counters && d.protocols.contains(&conn.protocol)) || is_scan_attempt(conn, d)
}

/// The address a flagged connection points at, following `target`. `inside` holds the networks
/// of the router's interfaces.
pub fn choose_target(conn: &Connection, target: BlockTarget, inside: &Networks) -> IpAddr {
    match target {
        BlockTarget::Dst => conn.dst.addr,
        BlockTarget::Src => conn.src.addr,
        BlockTarget::Remote => {
            if inside.contains(conn.dst.addr) && !inside.contains(conn.src.addr) {
                conn.src.addr
            } else {
                conn.dst.addr
            }
        }
    }
}

/// Checks one row: `Some(finding)` when it is asymmetric.
pub fn check(conn: &Connection, d: &Detection, inside: &Networks) -> Option<Finding> {
    is_asymmetric(conn, d)
        .then(|| Finding::asymmetric(conn.clone(), choose_target(conn, d.block_target, inside)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ConnId, Endpoint, Family};

    pub(crate) fn conn(
        proto: Protocol,
        src: &str,
        dst: &str,
        dport: Option<u16>,
        o: u64,
        r: u64,
    ) -> Connection {
        Connection {
            id: ConnId::new("*1"),
            family: Family::V4,
            protocol: proto,
            src: Endpoint {
                addr: src.parse().unwrap(),
                port: dport.map(|_| 50000),
            },
            dst: Endpoint {
                addr: dst.parse().unwrap(),
                port: dport,
            },
            orig_packets: Some(o),
            repl_packets: Some(r),
            orig_bytes: None,
            repl_bytes: None,
            orig_fasttrack_packets: None,
            repl_fasttrack_packets: None,
            tcp_state: None,
        }
    }

    #[test]
    fn thresholds_are_strict_above_and_inclusive_below() {
        let d = Detection::default();
        let c = |o, r| conn(Protocol::Tcp, "10.0.0.2", "1.1.1.1", Some(443), o, r);
        assert!(!is_asymmetric(&c(3, 0), &d), "orig must exceed 3");
        assert!(is_asymmetric(&c(4, 0), &d));
        assert!(is_asymmetric(&c(4, 2), &d), "repl <= 2");
        assert!(!is_asymmetric(&c(4, 3), &d));
        assert!(is_asymmetric(&c(u64::MAX, 0), &d));
    }

    #[test]
    fn fasttrack_counters_count_toward_the_totals() {
        let d = Detection::default();
        // A healthy FastTracked flow: the slow path saw 3 out and 2 back, FastTrack the rest.
        let mut healthy = conn(Protocol::Tcp, "10.0.0.2", "1.1.1.1", Some(443), 3, 2);
        healthy.orig_fasttrack_packets = Some(500);
        healthy.repl_fasttrack_packets = Some(480);
        assert!(!is_asymmetric(&healthy, &d));
        assert!(!is_candidate(&healthy, &d));
        // A frozen flow whose retransmissions went through FastTrack.
        let mut frozen = conn(Protocol::Tcp, "10.0.0.2", "1.1.1.1", Some(443), 3, 1);
        frozen.orig_fasttrack_packets = Some(9);
        frozen.repl_fasttrack_packets = Some(0);
        assert!(is_asymmetric(&frozen, &d));
        assert!(is_candidate(&frozen, &d));
    }

    #[test]
    fn missing_counters_are_never_flagged() {
        let d = Detection::default();
        let mut c = conn(Protocol::Tcp, "10.0.0.2", "1.1.1.1", Some(443), 9, 0);
        c.repl_packets = None;
        assert_eq!(asymmetric_miss(&c, &d), Some(Miss::Counters));
        c.repl_packets = Some(0);
        c.orig_packets = None;
        assert!(!is_asymmetric(&c, &d));
    }

    #[test]
    fn ports_and_protocols() {
        let d = Detection::default();
        let miss = |p, port| asymmetric_miss(&conn(p, "10.0.0.2", "1.1.1.1", port, 9, 0), &d);
        assert_eq!(miss(Protocol::Tcp, Some(443)), None);
        assert_eq!(miss(Protocol::Udp, Some(80)), None);
        assert_eq!(miss(Protocol::Tcp, Some(8443)), None);
        assert_eq!(miss(Protocol::Tcp, Some(22)), Some(Miss::Port));
        assert_eq!(miss(Protocol::Icmp, None), Some(Miss::Protocol));
        // The source port does not count: only the service port does.
        let mut c = conn(Protocol::Tcp, "10.0.0.2", "1.1.1.1", Some(5555), 9, 0);
        c.src.port = Some(443);
        assert!(!is_asymmetric(&c, &d));

        let every = Detection {
            monitored_ports: vec![],
            protocols: vec![Protocol::Tcp, Protocol::Icmp, Protocol::Gre],
            ..Detection::default()
        };
        let ok = |p, port| is_asymmetric(&conn(p, "10.0.0.2", "1.1.1.1", port, 9, 0), &every);
        assert!(ok(Protocol::Tcp, Some(22)));
        assert!(
            ok(Protocol::Icmp, None),
            "port-less only when every port is watched"
        );
        assert!(ok(Protocol::Gre, None));
        assert!(!ok(Protocol::Udp, Some(53)));
    }

    #[test]
    fn candidates_are_looser_than_findings_and_include_scan_attempts() {
        let d = Detection::default();
        let off_port = conn(Protocol::Tcp, "10.0.0.2", "1.1.1.1", Some(22), 9, 0);
        assert!(is_candidate(&off_port, &d) && !is_asymmetric(&off_port, &d));
        let mut syn = conn(
            Protocol::Tcp,
            "203.0.113.9",
            "192.168.88.5",
            Some(8080),
            1,
            0,
        );
        assert!(!is_candidate(&syn, &d), "no tcp-state: not an attempt");
        syn.tcp_state = Some(TcpState::SynSent);
        assert!(is_candidate(&syn, &d) && is_scan_attempt(&syn, &d));
        syn.repl_packets = Some(1);
        assert!(!is_scan_attempt(&syn, &d), "answered");
        let off = Detection {
            enabled: false,
            ..Detection::default()
        };
        assert!(!is_candidate(&off_port, &off));
        let no_scan = Detection {
            scan: crate::settings::Scan {
                enabled: false,
                ..Default::default()
            },
            ..Detection::default()
        };
        syn.repl_packets = Some(0);
        assert!(!is_candidate(&syn, &no_scan));
    }

    #[test]
    fn block_target_rules() {
        let inside =
            Networks::new(["192.168.88.0/24", "203.0.113.1/32"].map(|s| s.parse().unwrap()));
        let pick = |t, src: &str, dst: &str| {
            let d = Detection {
                block_target: t,
                ..Detection::default()
            };
            check(&conn(Protocol::Tcp, src, dst, Some(443), 9, 0), &d, &inside)
                .unwrap()
                .target
                .to_string()
        };
        use BlockTarget::*;
        assert_eq!(pick(Dst, "192.168.88.5", "1.1.1.1"), "1.1.1.1");
        assert_eq!(pick(Src, "192.168.88.5", "1.1.1.1"), "192.168.88.5");
        // outside -> inside: the remote end is the source
        assert_eq!(pick(Remote, "198.51.100.7", "203.0.113.1"), "198.51.100.7");
        assert_eq!(
            pick(Remote, "198.51.100.7", "192.168.88.20"),
            "198.51.100.7"
        );
        // inside -> outside: the destination
        assert_eq!(pick(Remote, "192.168.88.5", "1.1.1.1"), "1.1.1.1");
        // both inside, neither inside: the destination
        assert_eq!(pick(Remote, "192.168.88.5", "192.168.88.6"), "192.168.88.6");
        assert_eq!(pick(Remote, "8.8.8.8", "1.1.1.1"), "1.1.1.1");
    }
}
