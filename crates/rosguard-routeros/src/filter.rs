//! The filter rosguard pushes to the router as API query words, so that only rows some rule
//! could flag cross the link, and the check that the router honoured it.
//!
//! The query, for the default settings:
//!
//! ```text
//! ?=protocol=tcp ?=protocol=udp ?#|                     one of the protocols
//! ?>orig-packets=3 ?>orig-fasttrack-packets=0 ?#| ?#&   orig > min, or FastTracked packets
//! ?<repl-packets=3 ?#&                                  repl <= max (slow path)
//! ?=protocol=tcp ?=tcp-state=syn-sent ?#& ?=repl-packets=0 ?#&   an unanswered attempt
//! ?#|                                                   either
//! ?=protocol=tcp ?=tcp-state=established ?=tcp-state=fin-wait ?#| ?=tcp-state=close-wait ?#|
//!   ?=tcp-state=last-ack ?#| ?#& ?<repl-packets=65 ?#&    a flow the stall rule watches
//! ?#|                                                   any of them
//! ```
//!
//! It is a superset of the local test ([`is_candidate`](rosguard_core::detect::is_candidate)):
//! a FastTracked flow's slow-path orig counter may stay low while its total is high, so any
//! FastTracked row with few slow-path replies comes back and the totals decide locally; a
//! router without the FastTrack properties simply never matches that term. Ports are not
//! pushed (the port property differs between the two address formats). Whether `?>` compares
//! numbers or strings on this table is unconfirmed, so every returned row is checked with
//! [`matches_pushed_filter`] and a router that returns rows the filter excludes is switched to
//! local filtering.
//!
//! It deliberately decides nothing: the decision re-checks every row.

use rosguard_core::detect::STALL_STATES;
use rosguard_core::model::{Connection, Protocol, TcpState};
use rosguard_core::settings::Detection;
use routeros_proto::{Command, QueryOps};

/// Adds the query words to a connection-table `print`.
pub fn pushed_filter(cmd: Command, d: &Detection) -> Command {
    let mut cmd = cmd;
    // The asymmetric part.
    for (i, p) in d.protocols.iter().enumerate() {
        cmd = cmd.query_eq("protocol", p.to_string());
        if i > 0 {
            cmd = cmd.query_ops(&QueryOps::or());
        }
    }
    cmd = cmd
        .query_gt("orig-packets", d.min_orig_packets.to_string())
        .query_gt("orig-fasttrack-packets", "0")
        .query_ops(&QueryOps::or());
    if !d.protocols.is_empty() {
        cmd = cmd.query_ops(&QueryOps::and());
    }
    // `max + 1` overflows only for "any number of replies": then there is nothing to push.
    if let Some(bound) = d.max_repl_packets.checked_add(1) {
        cmd = cmd
            .query_lt("repl-packets", bound.to_string())
            .query_ops(&QueryOps::and());
    }
    // The scan part.
    if d.scan.enabled && !d.scan.states.is_empty() {
        cmd = tcp_in_states(cmd, &d.scan.states)
            .query_eq("repl-packets", "0")
            .query_ops(&QueryOps::and())
            .query_ops(&QueryOps::or());
    }
    // The stall part: TCP flows that carry data and got few replies so far.
    if d.stall.enabled && d.protocols.contains(&Protocol::Tcp) {
        cmd = tcp_in_states(cmd, STALL_STATES);
        if let Some(bound) = d.stall.max_repl_packets.checked_add(1) {
            cmd = cmd
                .query_lt("repl-packets", bound.to_string())
                .query_ops(&QueryOps::and());
        }
        cmd = cmd.query_ops(&QueryOps::or());
    }
    cmd
}

/// `protocol=tcp` and `tcp-state` one of `states` (at least one), as one term.
fn tcp_in_states(cmd: Command, states: &[TcpState]) -> Command {
    let mut cmd = cmd.query_eq("protocol", "tcp");
    for (i, s) in states.iter().enumerate() {
        cmd = cmd.query_eq("tcp-state", s.as_str());
        if i > 0 {
            cmd = cmd.query_ops(&QueryOps::or());
        }
    }
    cmd.query_ops(&QueryOps::and())
}

/// Whether a row returned by the router satisfies the filter [`pushed_filter`] sent. A router
/// that compares counters as strings returns rows that do not (`"10" < "3"`). A property the
/// row lacks counts as satisfied (it cannot prove the router wrong).
pub fn matches_pushed_filter(c: &Connection, d: &Detection) -> bool {
    let protocol_ok = d.protocols.is_empty() || d.protocols.contains(&c.protocol);
    let orig_ok = c.orig_packets.is_none_or(|n| n > d.min_orig_packets)
        || c.orig_fasttrack_packets.is_some_and(|n| n > 0);
    let repl_ok = c.repl_packets.is_none_or(|n| n <= d.max_repl_packets);
    let attempt = d.scan.enabled
        && c.protocol == Protocol::Tcp
        && c.tcp_state.is_some_and(|s| d.scan.states.contains(&s))
        && c.repl_packets.is_none_or(|n| n == 0);
    let stalled = d.stall.enabled
        && d.protocols.contains(&Protocol::Tcp)
        && c.protocol == Protocol::Tcp
        && c.tcp_state.is_none_or(|s| STALL_STATES.contains(&s))
        && c.repl_packets.is_none_or(|n| n <= d.stall.max_repl_packets);
    (protocol_ok && orig_ok && repl_ok) || attempt || stalled
}

#[cfg(test)]
mod tests {
    use super::*;
    use rosguard_core::model::{ConnId, Endpoint, Family, TcpState};
    use rosguard_core::settings::{Scan, Stall};

    fn words(c: &Command) -> Vec<String> {
        c.words()
            .map(|w| String::from_utf8(w.to_vec()).unwrap())
            .collect()
    }

    fn base() -> Command {
        Command::new("/ip/firewall/connection/print").proplist(crate::rows::CONNECTION_PROPLIST)
    }

    #[test]
    fn the_default_query() {
        let c = pushed_filter(base(), &Detection::default());
        assert_eq!(
            words(&c)[2..],
            [
                "?=protocol=tcp",
                "?=protocol=udp",
                "?#|",
                "?>orig-packets=3",
                "?>orig-fasttrack-packets=0",
                "?#|",
                "?#&",
                "?<repl-packets=3",
                "?#&",
                "?=protocol=tcp",
                "?=tcp-state=syn-sent",
                "?#&",
                "?=repl-packets=0",
                "?#&",
                "?#|",
                "?=protocol=tcp",
                "?=tcp-state=established",
                "?=tcp-state=fin-wait",
                "?#|",
                "?=tcp-state=close-wait",
                "?#|",
                "?=tcp-state=last-ack",
                "?#|",
                "?#&",
                "?<repl-packets=65",
                "?#&",
                "?#|",
            ]
        );
        assert!(c.validate().is_ok());
    }

    #[test]
    fn variants_of_the_query() {
        let no_scan = |d: Detection| Detection {
            scan: Scan {
                enabled: false,
                ..Scan::default()
            },
            stall: Stall {
                enabled: false,
                ..Stall::default()
            },
            ..d
        };
        let three = no_scan(Detection {
            protocols: vec![Protocol::Tcp, Protocol::Udp, Protocol::Gre],
            min_orig_packets: 5,
            max_repl_packets: 0,
            ..Detection::default()
        });
        assert_eq!(
            words(&pushed_filter(base(), &three))[2..],
            [
                "?=protocol=tcp",
                "?=protocol=udp",
                "?#|",
                "?=protocol=gre",
                "?#|",
                "?>orig-packets=5",
                "?>orig-fasttrack-packets=0",
                "?#|",
                "?#&",
                "?<repl-packets=1",
                "?#&",
            ]
        );
        let any_repl = no_scan(Detection {
            protocols: vec![Protocol::Tcp],
            max_repl_packets: u64::MAX,
            ..Detection::default()
        });
        assert_eq!(
            words(&pushed_filter(base(), &any_repl))[2..],
            [
                "?=protocol=tcp",
                "?>orig-packets=3",
                "?>orig-fasttrack-packets=0",
                "?#|",
                "?#&"
            ]
        );
        let two_states = Detection {
            scan: Scan {
                states: vec![TcpState::SynSent, TcpState::Close],
                ..Scan::default()
            },
            ..Detection::default()
        };
        let w = words(&pushed_filter(base(), &two_states));
        assert_eq!(
            w[11..19],
            [
                "?=protocol=tcp",
                "?=tcp-state=syn-sent",
                "?=tcp-state=close",
                "?#|",
                "?#&",
                "?=repl-packets=0",
                "?#&",
                "?#|",
            ]
        );
    }

    fn row(o: u64, r: u64) -> Connection {
        Connection {
            id: ConnId::new("*1"),
            family: Family::V4,
            protocol: Protocol::Tcp,
            src: Endpoint {
                addr: "10.0.0.2".parse().unwrap(),
                port: Some(1),
            },
            dst: Endpoint {
                addr: "10.0.0.3".parse().unwrap(),
                port: Some(443),
            },
            orig_packets: Some(o),
            repl_packets: Some(r),
            orig_bytes: None,
            repl_bytes: None,
            orig_fasttrack_packets: None,
            repl_fasttrack_packets: None,
            tcp_state: Some(TcpState::Established),
        }
    }

    #[test]
    fn rows_the_filter_excludes_are_noticed() {
        let d = Detection::default();
        assert!(matches_pushed_filter(&row(4, 0), &d));
        assert!(
            !matches_pushed_filter(&row(10, 100), &d),
            "a string-comparing router"
        );
        let mut few = row(2, 0);
        few.tcp_state = Some(TcpState::TimeWait);
        assert!(!matches_pushed_filter(&few, &d), "too few packets sent");
        let mut ft = row(2, 1);
        ft.orig_fasttrack_packets = Some(7);
        assert!(matches_pushed_filter(&ft, &d));
        let mut syn = row(1, 0);
        syn.tcp_state = Some(TcpState::SynSent);
        assert!(matches_pushed_filter(&syn, &d));
        let mut udp = row(10, 0);
        udp.protocol = Protocol::Icmp;
        assert!(!matches_pushed_filter(&udp, &d));
    }

    #[test]
    fn the_stall_part_returns_watched_flows_only() {
        let d = Detection::default();
        // A frozen download: replies stopped at 8, within the stall rule's bound.
        assert!(matches_pushed_filter(&row(18, 8), &d));
        assert!(
            !matches_pushed_filter(&row(400, 65), &d),
            "too many replies"
        );
        let mut closing = row(18, 8);
        closing.tcp_state = Some(TcpState::TimeWait);
        assert!(
            !matches_pushed_filter(&closing, &d),
            "not a state that carries data"
        );
        let udp_only = Detection {
            protocols: vec![Protocol::Udp],
            ..Detection::default()
        };
        assert!(
            !matches_pushed_filter(&row(18, 8), &udp_only),
            "TCP is not monitored"
        );
        let off = Detection {
            stall: Stall {
                enabled: false,
                ..Stall::default()
            },
            ..Detection::default()
        };
        assert!(!matches_pushed_filter(&row(18, 8), &off));
        let w = words(&pushed_filter(base(), &off));
        assert!(!w.iter().any(|w| w == "?=tcp-state=established"));
        let tighter = Detection {
            stall: Stall {
                max_repl_packets: 20,
                ..Stall::default()
            },
            ..Detection::default()
        };
        let w = words(&pushed_filter(base(), &tighter));
        assert!(w.iter().any(|w| w == "?<repl-packets=21"), "{w:?}");
        assert!(pushed_filter(base(), &tighter).validate().is_ok());
    }
}
