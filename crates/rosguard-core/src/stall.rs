//! Stalled flows: a TCP flow whose reply counter stands still across polls while its sender
//! keeps sending (retransmissions, a FIN): the peer, or a DPI box between, went silent after
//! the flow had carried data. A freeze after N kilobytes looks like this on Linux conntrack:
//! 8/8 packets when the freeze hits, then orig climbs to 18 while repl stays at 8.
//!
//! Per flow it remembers the counters at the last poll its reply counter moved; a flow that
//! has sent `min_orig_growth` packets since then, seen again with the same reply count, is a
//! finding. A flow not seen in a poll is forgotten (it ended, or left the candidate rows).
//! Memory is bounded by `max_tracked`: past it, new flows wait for a later cycle.
//!
//! It deliberately decides nothing about blocking: the finding goes through the policy like
//! any other.

use foldhash::{HashMap, HashMapExt};
use std::time::Duration;

use crate::detect::{choose_target, is_stall_candidate, Evidence, Finding, Rule};
use crate::model::{Connection, Networks};
use crate::settings::Detection;
use crate::state::ConnKey;

/// The counters of a flow when its reply counter last moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Base {
    orig: u64,
    repl: u64,
}

/// Remembers the watched flows between polls.
#[derive(Debug, Clone, Default)]
pub struct StallTracker {
    flows: HashMap<ConnKey, Base>,
}

impl StallTracker {
    /// A tracker that remembers nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Flows remembered.
    pub fn tracked(&self) -> usize {
        self.flows.len()
    }

    /// One poll: the poll's rows in, a finding per stalled flow out (again each poll while it
    /// stays stalled; the policy skips what is blocked already).
    pub fn observe<'a>(
        &mut self,
        rows: impl IntoIterator<Item = &'a Connection>,
        d: &Detection,
        inside: &Networks,
        _now: Duration,
    ) -> Vec<Finding> {
        let s = &d.stall;
        if !s.enabled {
            self.flows.clear();
            return Vec::new();
        }
        let mut next: HashMap<ConnKey, Base> = HashMap::new();
        let mut out = Vec::new();
        for c in rows.into_iter().filter(|c| is_stall_candidate(c, d)) {
            let (Some(orig), Some(repl)) = (c.orig_total(), c.repl_total()) else {
                continue;
            };
            let key = ConnKey::of(c);
            if next.contains_key(&key) {
                continue;
            }
            let base = match self.flows.get(&key) {
                // Replies arrived (or the counters went back: a new flow on the same tuple):
                // start over from here.
                Some(b) if b.repl == repl && orig >= b.orig => *b,
                _ => Base { orig, repl },
            };
            if base.repl == repl && orig.saturating_sub(base.orig) >= s.min_orig_growth && repl > 0
            {
                out.push(Finding {
                    target: choose_target(c, d.block_target, inside),
                    rule: Rule::Stall,
                    evidence: Evidence::Stalled {
                        sent: orig - base.orig,
                        connection: c.clone(),
                    },
                });
            }
            if next.len() < s.max_tracked {
                next.insert(key, base);
            }
        }
        self.flows = next;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ConnId, Endpoint, Family, Protocol, TcpState};

    fn row(orig: u64, repl: u64) -> Connection {
        Connection {
            id: ConnId::new("*1"),
            family: Family::V4,
            protocol: Protocol::Tcp,
            src: Endpoint {
                addr: "192.168.88.10".parse().unwrap(),
                port: Some(40000),
            },
            dst: Endpoint {
                addr: "203.0.113.31".parse().unwrap(),
                port: Some(443),
            },
            orig_packets: Some(orig),
            repl_packets: Some(repl),
            orig_bytes: None,
            repl_bytes: None,
            orig_fasttrack_packets: None,
            repl_fasttrack_packets: None,
            tcp_state: Some(TcpState::Established),
        }
    }

    fn t(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn inside() -> Networks {
        Networks::new(["192.168.88.0/24".parse().unwrap()])
    }

    #[test]
    fn a_flow_frozen_after_carrying_data_is_found() {
        let d = Detection::default();
        let mut s = StallTracker::new();
        // The lab's numbers: 8/8 at the freeze, then orig climbs while repl stands.
        assert!(s.observe(&[row(8, 8)], &d, &inside(), t(0)).is_empty());
        assert!(
            s.observe(&[row(10, 8)], &d, &inside(), t(2)).is_empty(),
            "2 sent: not yet"
        );
        let f = s.observe(&[row(12, 8)], &d, &inside(), t(4));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rule, Rule::Stall);
        assert_eq!(
            f[0].target.to_string(),
            "203.0.113.31",
            "the far end, as remote picks it"
        );
        assert!(matches!(f[0].evidence, Evidence::Stalled { sent: 4, .. }));
        assert_eq!(
            s.observe(&[row(18, 8)], &d, &inside(), t(6)).len(),
            1,
            "still stalled"
        );
    }

    #[test]
    fn replies_reset_it_and_healthy_flows_never_stall() {
        let d = Detection::default();
        let mut s = StallTracker::new();
        s.observe(&[row(8, 8)], &d, &inside(), t(0));
        s.observe(&[row(11, 8)], &d, &inside(), t(2));
        assert!(
            s.observe(&[row(14, 9)], &d, &inside(), t(4)).is_empty(),
            "a reply came"
        );
        assert!(
            s.observe(&[row(17, 9)], &d, &inside(), t(6)).is_empty(),
            "3 since that reply"
        );
        // A download: replies grow faster than requests.
        let mut h = StallTracker::new();
        for i in 0..10u64 {
            assert!(h
                .observe(&[row(4 + i * 3, 6 + i * 5)], &d, &inside(), t(i))
                .is_empty());
        }
        // Too many replies already: not watched at all.
        let mut big = StallTracker::new();
        big.observe(&[row(100, 80)], &d, &inside(), t(0));
        assert!(big.observe(&[row(120, 80)], &d, &inside(), t(2)).is_empty());
        assert_eq!(big.tracked(), 0);
    }

    #[test]
    fn a_flow_that_stalls_after_its_replies_moved_counts_from_the_last_reply() {
        let d = Detection::default();
        let mut s = StallTracker::new();
        s.observe(&[row(8, 8)], &d, &inside(), t(0));
        assert!(s.observe(&[row(12, 12)], &d, &inside(), t(2)).is_empty());
        let f = s.observe(&[row(16, 12)], &d, &inside(), t(4));
        assert_eq!(f.len(), 1, "4 sent since the reply counter last moved");
        assert!(matches!(f[0].evidence, Evidence::Stalled { sent: 4, .. }));
    }

    #[test]
    fn a_flow_never_answered_is_no_stall() {
        // No reply at all is the asymmetric rule's case, not a freeze after data.
        let d = Detection::default();
        let mut s = StallTracker::new();
        s.observe(&[row(2, 0)], &d, &inside(), t(0));
        assert!(s.observe(&[row(9, 0)], &d, &inside(), t(2)).is_empty());
        assert_eq!(s.tracked(), 1, "watched all the same");
    }

    #[test]
    fn a_flow_gone_for_a_poll_starts_over_and_memory_is_bounded() {
        let d = Detection::default();
        let mut s = StallTracker::new();
        s.observe(&[row(8, 8)], &d, &inside(), t(0));
        s.observe(&[], &d, &inside(), t(2));
        assert!(
            s.observe(&[row(12, 8)], &d, &inside(), t(4)).is_empty(),
            "its base is new"
        );
        let small = Detection {
            stall: crate::settings::Stall {
                max_tracked: 3,
                ..Default::default()
            },
            ..Detection::default()
        };
        let rows: Vec<Connection> = (0..10u16)
            .map(|i| {
                let mut r = row(8, 8);
                r.src.port = Some(40000 + i);
                r
            })
            .collect();
        s.observe(&rows, &small, &inside(), t(6));
        assert_eq!(s.tracked(), 3);
        let off = Detection {
            stall: crate::settings::Stall {
                enabled: false,
                ..Default::default()
            },
            ..Detection::default()
        };
        assert!(s.observe(&rows, &off, &inside(), t(8)).is_empty());
        assert_eq!(s.tracked(), 0);
    }
}
