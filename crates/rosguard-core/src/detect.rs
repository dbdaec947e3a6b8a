//! Detection: which connection rows are *asymmetric* (many packets out, almost none back), and
//! which address each one points at.
//!
//! This is the seed script's test, row by row: the protocol is monitored, the destination
//! (service) port is monitored, `orig-packets > min_orig_packets` and
//! `repl-packets <= max_repl_packets`. [`check`] is called per row while the daemon streams the
//! table; [`server_filter`] pushes the cheap part of the test to the router.
//!
//! It deliberately does not decide whether to block (allowlists, caps and duplicates are
//! [`policy`](crate::policy)'s job) and keeps no memory between polls (that is
//! [`state`](crate::state)).

use std::fmt;
use std::net::IpAddr;

use routeros_proto::{Command, QueryOps};
use serde::{Deserialize, Serialize};

use crate::model::{AddrSet, Connection, Protocol};

/// The properties the daemon requests from the connection table (`.proplist`).
pub const PROPLIST: &[&str] = Connection::PROPLIST;

/// Which end of a flagged connection is blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockTarget {
    /// The destination (the seed script's behaviour).
    #[default]
    Dst,
    /// The source.
    Src,
    /// The remote end: the source when the destination is local and the source is not
    /// (an outside host talking to us), otherwise the destination (inside-out traffic, and the
    /// ambiguous both-local and neither-local cases, keep the script's behaviour).
    Remote,
}

/// Which test flagged a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Rule {
    /// Many original-direction packets, (almost) no replies.
    Asymmetric,
}

impl Rule {
    /// A stable name for logs and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Asymmetric => "asymmetric",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The detection thresholds. The default is the seed script's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// Destination ports watched; empty means every port (and then port-less protocols too).
    pub monitored_ports: Vec<u16>,
    /// Protocols watched; empty means none (nothing is flagged).
    pub protocols: Vec<Protocol>,
    /// A row is flagged only when `orig-packets` is strictly above this.
    pub min_orig_packets: u64,
    /// ... and `repl-packets` is at most this.
    pub max_repl_packets: u64,
    /// Which end gets blocked.
    pub block_target: BlockTarget,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            monitored_ports: vec![443, 80, 8443],
            protocols: vec![Protocol::Tcp, Protocol::Udp],
            min_orig_packets: 3,
            max_repl_packets: 2,
            block_target: BlockTarget::Dst,
        }
    }
}

/// A flagged connection and the address it points at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Finding {
    /// The row as read.
    pub connection: Connection,
    /// The address to block, chosen by [`Rules::block_target`].
    pub target: IpAddr,
    /// The test that fired.
    pub rule: Rule,
}

/// The seed script's test: protocol watched, destination port watched (any port when
/// `monitored_ports` is empty; a port-less row only then), `orig > min` and `repl <= max`.
/// A row missing either packet counter is never flagged.
pub fn is_asymmetric(conn: &Connection, rules: &Rules) -> bool {
    let (Some(orig), Some(repl)) = (conn.orig_packets, conn.repl_packets) else {
        return false;
    };
    if orig <= rules.min_orig_packets || repl > rules.max_repl_packets {
        return false;
    }
    if !rules.protocols.contains(&conn.protocol) {
        return false;
    }
    rules.monitored_ports.is_empty()
        || conn
            .dst
            .port
            .is_some_and(|p| rules.monitored_ports.contains(&p))
}

/// The address a flagged connection points at, following `target`. `local` holds the
/// router's own addresses and the networks of its interfaces.
pub fn choose_target(conn: &Connection, target: BlockTarget, local: &AddrSet) -> IpAddr {
    match target {
        BlockTarget::Dst => conn.dst.addr,
        BlockTarget::Src => conn.src.addr,
        BlockTarget::Remote => {
            if local.contains(conn.dst.addr) && !local.contains(conn.src.addr) {
                conn.src.addr
            } else {
                conn.dst.addr
            }
        }
    }
}

/// Checks one row: `Some(finding)` when it is asymmetric. `local` is only used for
/// [`BlockTarget::Remote`]. Cheap, allocation-free for rows that are not flagged; the daemon
/// calls it on every streamed row.
pub fn check(conn: &Connection, rules: &Rules, local: &AddrSet) -> Option<Finding> {
    if !is_asymmetric(conn, rules) {
        return None;
    }
    Some(Finding {
        connection: conn.clone(),
        target: choose_target(conn, rules.block_target, local),
        rule: Rule::Asymmetric,
    })
}

/// [`check`] that takes ownership of the row, avoiding the clone of a flagged one.
pub fn check_owned(conn: Connection, rules: &Rules, local: &AddrSet) -> Option<Finding> {
    if !is_asymmetric(&conn, rules) {
        return None;
    }
    let target = choose_target(&conn, rules.block_target, local);
    Some(Finding {
        connection: conn,
        target,
        rule: Rule::Asymmetric,
    })
}

/// Every flagged row of a snapshot.
pub fn detect(
    rows: impl IntoIterator<Item = Connection>,
    rules: &Rules,
    local: &AddrSet,
) -> Vec<Finding> {
    rows.into_iter()
        .filter_map(|c| check_owned(c, rules, local))
        .collect()
}

/// Adds query words to a `print` so the router returns only candidate rows: one of the
/// protocols, `orig-packets > min` and `repl-packets <= max`, all three required.
///
/// The words, for the default rules:
/// `?=protocol=tcp ?=protocol=udp ?#| ?>orig-packets=3 ?#& ?<repl-packets=3 ?#&`.
/// Each `?#&` folds the new condition into the one entry left on the query stack, so exactly
/// one entry remains and it is the conjunction. Ports are not pushed (the port property differs
/// between the two address formats), and with no protocols no protocol words are sent. The
/// router's comparison is not trusted: whether `?>` compares numbers or strings on this table is
/// unconfirmed, so the daemon must re-run [`check`] on every row and must be able to switch this
/// filter off.
pub fn server_filter(cmd: Command, rules: &Rules) -> Command {
    let mut cmd = cmd;
    for (i, p) in rules.protocols.iter().enumerate() {
        cmd = cmd.query_eq("protocol", p.to_string());
        if i > 0 {
            cmd = cmd.query_ops(&QueryOps::or());
        }
    }
    cmd = cmd.query_gt("orig-packets", rules.min_orig_packets.to_string());
    if !rules.protocols.is_empty() {
        cmd = cmd.query_ops(&QueryOps::and());
    }
    // `max + 1` overflows only for "any number of replies": then there is nothing to push.
    if let Some(bound) = rules.max_repl_packets.checked_add(1) {
        cmd = cmd
            .query_lt("repl-packets", bound.to_string())
            .query_ops(&QueryOps::and());
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Endpoint, Family};

    fn conn(
        proto: Protocol,
        src: &str,
        dst: &str,
        dport: Option<u16>,
        o: u64,
        r: u64,
    ) -> Connection {
        Connection {
            id: "*1".into(),
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
            tcp_state: None,
        }
    }

    #[test]
    fn thresholds_are_strict_above_and_inclusive_below() {
        let rules = Rules::default();
        let c = |o, r| conn(Protocol::Tcp, "10.0.0.2", "1.1.1.1", Some(443), o, r);
        assert!(!is_asymmetric(&c(3, 0), &rules), "orig must exceed 3");
        assert!(is_asymmetric(&c(4, 0), &rules));
        assert!(is_asymmetric(&c(4, 2), &rules), "repl <= 2");
        assert!(!is_asymmetric(&c(4, 3), &rules));
        assert!(is_asymmetric(&c(u64::MAX, 0), &rules));
    }

    #[test]
    fn missing_counters_are_never_flagged() {
        let rules = Rules::default();
        let mut c = conn(Protocol::Tcp, "10.0.0.2", "1.1.1.1", Some(443), 9, 0);
        c.repl_packets = None;
        assert!(!is_asymmetric(&c, &rules));
        c.repl_packets = Some(0);
        c.orig_packets = None;
        assert!(!is_asymmetric(&c, &rules));
    }

    #[test]
    fn ports_and_protocols() {
        let rules = Rules::default();
        let ok = |p, port| is_asymmetric(&conn(p, "10.0.0.2", "1.1.1.1", port, 9, 0), &rules);
        assert!(ok(Protocol::Tcp, Some(443)));
        assert!(ok(Protocol::Udp, Some(80)));
        assert!(ok(Protocol::Tcp, Some(8443)));
        assert!(!ok(Protocol::Tcp, Some(22)));
        assert!(!ok(Protocol::Icmp, None));
        assert!(!ok(Protocol::Gre, None));
        // The source port does not count: only the service port does.
        let mut c = conn(Protocol::Tcp, "10.0.0.2", "1.1.1.1", Some(5555), 9, 0);
        c.src.port = Some(443);
        assert!(!is_asymmetric(&c, &rules));

        let every = Rules {
            monitored_ports: vec![],
            protocols: vec![Protocol::Tcp, Protocol::Icmp, Protocol::Gre],
            ..Rules::default()
        };
        let ok = |p, port| is_asymmetric(&conn(p, "10.0.0.2", "1.1.1.1", port, 9, 0), &every);
        assert!(ok(Protocol::Tcp, Some(22)));
        assert!(
            ok(Protocol::Icmp, None),
            "port-less only when every port is watched"
        );
        assert!(ok(Protocol::Gre, None));
        assert!(!ok(Protocol::Udp, Some(53)));

        let none = Rules {
            protocols: vec![],
            ..Rules::default()
        };
        assert!(!is_asymmetric(
            &conn(Protocol::Tcp, "10.0.0.2", "1.1.1.1", Some(443), 9, 0),
            &none
        ));
    }

    #[test]
    fn block_target_rules() {
        let local = AddrSet::parse(["192.168.88.0/24", "203.0.113.1"]).unwrap();
        let pick = |t, src: &str, dst: &str| {
            let rules = Rules {
                block_target: t,
                ..Rules::default()
            };
            check(
                &conn(Protocol::Tcp, src, dst, Some(443), 9, 0),
                &rules,
                &local,
            )
            .unwrap()
            .target
            .to_string()
        };
        use BlockTarget::*;
        assert_eq!(pick(Dst, "192.168.88.5", "1.1.1.1"), "1.1.1.1");
        assert_eq!(pick(Src, "192.168.88.5", "1.1.1.1"), "192.168.88.5");
        // outside -> inside: the remote end is the source
        assert_eq!(pick(Remote, "198.51.100.7", "203.0.113.1"), "198.51.100.7");
        // inside -> outside: the destination
        assert_eq!(pick(Remote, "192.168.88.5", "1.1.1.1"), "1.1.1.1");
        // both local, neither local: the destination
        assert_eq!(pick(Remote, "192.168.88.5", "192.168.88.6"), "192.168.88.6");
        assert_eq!(pick(Remote, "8.8.8.8", "1.1.1.1"), "1.1.1.1");
    }

    #[test]
    fn check_and_detect_agree() {
        let rules = Rules::default();
        let local = AddrSet::new();
        let rows = vec![
            conn(Protocol::Tcp, "10.0.0.2", "1.1.1.1", Some(443), 9, 1),
            conn(Protocol::Tcp, "10.0.0.2", "1.1.1.2", Some(443), 9, 9),
            conn(Protocol::Udp, "10.0.0.2", "1.1.1.3", Some(8443), 5, 0),
        ];
        let found = detect(rows.clone(), &rules, &local);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].target.to_string(), "1.1.1.1");
        assert_eq!(found[1].target.to_string(), "1.1.1.3");
        assert_eq!(found[0].rule, Rule::Asymmetric);
        let per_row: Vec<Finding> = rows
            .iter()
            .filter_map(|c| check(c, &rules, &local))
            .collect();
        assert_eq!(per_row, found);
    }

    fn words(c: &Command) -> Vec<String> {
        c.words()
            .map(|w| String::from_utf8(w.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn server_filter_words() {
        let base = || Command::new("/ip/firewall/connection/print").proplist(PROPLIST);
        let c = server_filter(base(), &Rules::default());
        assert_eq!(
            words(&c)[2..],
            [
                "?=protocol=tcp",
                "?=protocol=udp",
                "?#|",
                "?>orig-packets=3",
                "?#&",
                "?<repl-packets=3",
                "?#&",
            ]
        );
        assert!(c.validate().is_ok());

        let three = Rules {
            protocols: vec![Protocol::Tcp, Protocol::Udp, Protocol::Gre],
            min_orig_packets: 5,
            max_repl_packets: 0,
            ..Rules::default()
        };
        assert_eq!(
            words(&server_filter(base(), &three))[2..],
            [
                "?=protocol=tcp",
                "?=protocol=udp",
                "?#|",
                "?=protocol=gre",
                "?#|",
                "?>orig-packets=5",
                "?#&",
                "?<repl-packets=1",
                "?#&",
            ]
        );

        let one = Rules {
            protocols: vec![Protocol::Tcp],
            max_repl_packets: u64::MAX,
            ..Rules::default()
        };
        assert_eq!(
            words(&server_filter(base(), &one))[2..],
            ["?=protocol=tcp", "?>orig-packets=3", "?#&"]
        );

        let none = Rules {
            protocols: vec![],
            ..Rules::default()
        };
        assert_eq!(
            words(&server_filter(base(), &none))[2..],
            ["?>orig-packets=3", "?<repl-packets=3", "?#&"]
        );
    }

    #[test]
    fn proplist_is_what_from_reply_reads() {
        assert_eq!(PROPLIST.len(), 11);
        assert!(PROPLIST.contains(&".id") && PROPLIST.contains(&"tcp-state"));
    }
}
