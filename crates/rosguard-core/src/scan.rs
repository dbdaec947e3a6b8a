//! Port-scan detection from the connection table: one source with unanswered TCP attempts at
//! many distinct (host, port) pairs within a window is a scanner.
//!
//! A connect scan of filtered ports leaves one row per port in `syn-sent`, orig-packets 1,
//! repl-packets 0 (Linux conntrack does not count a retransmitted SYN), for as long as the
//! router's `syn-sent` timeout; a scan spread over several polls adds up across them within
//! `window`. Closed ports, answered by RST, leave almost nothing to poll: the router's own
//! `psd` matcher sees those (the staging list, see [`decide`](crate::decide)).
//!
//! Memory is bounded: at most `min_ports` pairs per source (that is all the threshold needs)
//! and at most [`ScanTracker::MAX_SOURCES`] sources, the least recently seen dropped first.
//!
//! It deliberately does not decide whether a scanner may be blocked: a LAN host scanning out is
//! flagged like any other, and [`policy`](crate::policy) spares it.

use foldhash::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::detect::{is_scan_attempt, Evidence, Finding, Rule};
use crate::model::Connection;
use crate::settings::Detection;

/// The attempts of one source.
#[derive(Debug, Clone, Default)]
struct Attempts {
    /// (host, port) -> last seen.
    tried: HashMap<(IpAddr, u16), Duration>,
    last: Duration,
    example: Option<Connection>,
}

/// Counts unanswered attempts per source across polls.
#[derive(Debug, Clone, Default)]
pub struct ScanTracker {
    sources: HashMap<IpAddr, Attempts>,
}

impl ScanTracker {
    /// The most sources remembered at once.
    pub const MAX_SOURCES: usize = 10_000;

    /// A tracker that remembers nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sources currently remembered.
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }

    /// One poll: takes the poll's rows, returns a finding for every source at or over the
    /// threshold (again in every poll while it stays there: the policy skips what is blocked
    /// already).
    pub fn observe<'a>(
        &mut self,
        rows: impl IntoIterator<Item = &'a Connection>,
        d: &Detection,
        now: Duration,
    ) -> Vec<Finding> {
        let s = &d.scan;
        if !s.enabled {
            self.sources.clear();
            return Vec::new();
        }
        let keep = s.min_ports.max(1) as usize;
        for c in rows.into_iter().filter(|c| is_scan_attempt(c, d)) {
            let Some(port) = c.dst.port else { continue };
            let src = c.src.addr.to_canonical();
            if !self.sources.contains_key(&src) && self.sources.len() >= Self::MAX_SOURCES {
                self.evict_oldest();
            }
            let a = self.sources.entry(src).or_default();
            a.last = a.last.max(now);
            let pair = (c.dst.addr, port);
            if !a.tried.contains_key(&pair) && a.tried.len() >= keep {
                // Keep the most recent pairs: the threshold needs no more than `keep`.
                if let Some(oldest) = a.tried.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k) {
                    a.tried.remove(&oldest);
                }
            }
            a.tried.insert(pair, now);
            a.example = Some(c.clone());
        }
        let since = now.saturating_sub(s.window);
        self.sources.retain(|_, a| {
            a.tried.retain(|_, t| *t >= since);
            !a.tried.is_empty()
        });
        let mut out: Vec<Finding> = self
            .sources
            .iter()
            .filter(|(_, a)| a.tried.len() >= keep)
            .filter_map(|(src, a)| {
                Some(Finding {
                    target: *src,
                    rule: Rule::PortScan,
                    evidence: Evidence::Scan {
                        tried: u32::try_from(a.tried.len()).unwrap_or(u32::MAX),
                        example: a.example.clone()?,
                    },
                })
            })
            .collect();
        out.sort_by_key(|f| f.target);
        out
    }

    fn evict_oldest(&mut self) {
        let keep = Self::MAX_SOURCES / 4 * 3;
        let mut ages: Vec<(Duration, IpAddr)> =
            self.sources.iter().map(|(ip, a)| (a.last, *ip)).collect();
        ages.sort_unstable_by(|a, b| b.cmp(a));
        for (_, ip) in ages.into_iter().skip(keep) {
            self.sources.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ConnId, Endpoint, Family, Protocol, TcpState};

    fn syn(src: &str, dst: &str, port: u16) -> Connection {
        Connection {
            id: ConnId::new(format!("*{port:X}")),
            family: Family::V4,
            protocol: Protocol::Tcp,
            src: Endpoint {
                addr: src.parse().unwrap(),
                port: Some(40000),
            },
            dst: Endpoint {
                addr: dst.parse().unwrap(),
                port: Some(port),
            },
            orig_packets: Some(1),
            repl_packets: Some(0),
            orig_bytes: Some(60),
            repl_bytes: Some(0),
            orig_fasttrack_packets: None,
            repl_fasttrack_packets: None,
            tcp_state: Some(TcpState::SynSent),
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn many_unanswered_ports_make_a_scanner_few_do_not() {
        let d = Detection::default();
        let mut t = ScanTracker::new();
        let few: Vec<Connection> = (1..20)
            .map(|p| syn("203.0.113.9", "192.168.88.5", p))
            .collect();
        assert!(
            t.observe(&few, &d, secs(100)).is_empty(),
            "19 ports: below 20"
        );
        let many: Vec<Connection> = (1..=20)
            .map(|p| syn("203.0.113.9", "192.168.88.5", p))
            .collect();
        let f = t.observe(&many, &d, secs(102));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].target.to_string(), "203.0.113.9");
        assert_eq!(f[0].rule, Rule::PortScan);
        assert!(matches!(f[0].evidence, Evidence::Scan { tried: 20, .. }));
    }

    #[test]
    fn attempts_add_up_across_polls_within_the_window_only() {
        let d = Detection::default();
        let mut t = ScanTracker::new();
        let part = |r: std::ops::Range<u16>| -> Vec<Connection> {
            r.map(|p| syn("203.0.113.9", "192.168.88.5", p)).collect()
        };
        assert!(t.observe(&part(1..11), &d, secs(10)).is_empty());
        assert_eq!(
            t.observe(&part(11..21), &d, secs(40)).len(),
            1,
            "10 + 10 within 60 s"
        );
        let mut late = ScanTracker::new();
        assert!(late.observe(&part(1..11), &d, secs(10)).is_empty());
        assert!(
            late.observe(&part(11..21), &d, secs(80)).is_empty(),
            "the first 10 expired"
        );
        // Many hosts on one port count too (a sweep).
        let sweep: Vec<Connection> = (1..=20)
            .map(|h| syn("198.51.100.7", &format!("192.168.88.{h}"), 22))
            .collect();
        assert_eq!(ScanTracker::new().observe(&sweep, &d, secs(1)).len(), 1);
    }

    #[test]
    fn answered_or_established_rows_and_repeats_do_not_count() {
        let d = Detection::default();
        let mut t = ScanTracker::new();
        let mut rows: Vec<Connection> = (1..=30)
            .map(|p| syn("203.0.113.9", "192.168.88.5", p))
            .collect();
        for r in rows.iter_mut().skip(11) {
            r.repl_packets = Some(1);
        }
        rows[0].tcp_state = Some(TcpState::Established);
        assert!(
            t.observe(&rows, &d, secs(1)).is_empty(),
            "10 unanswered syn-sent only"
        );
        let same: Vec<Connection> = (0..40)
            .map(|_| syn("203.0.113.9", "192.168.88.5", 443))
            .collect();
        assert!(
            t.observe(&same, &d, secs(2)).is_empty(),
            "one port tried 40 times is one pair"
        );
    }

    #[test]
    fn memory_stays_bounded() {
        let d = Detection::default();
        let mut t = ScanTracker::new();
        let rows: Vec<Connection> = (0..(ScanTracker::MAX_SOURCES as u32 + 500))
            .map(|i| {
                let src = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
                syn(&src, "192.168.88.5", 80)
            })
            .collect();
        t.observe(&rows, &d, secs(1));
        assert!(t.tracked() <= ScanTracker::MAX_SOURCES);
        let one: Vec<Connection> = (1..=500)
            .map(|p| syn("203.0.113.9", "192.168.88.5", p))
            .collect();
        t.observe(&one, &d, secs(2));
        let a = &t.sources[&"203.0.113.9".parse::<IpAddr>().unwrap()];
        assert_eq!(
            a.tried.len(),
            d.scan.min_ports as usize,
            "pairs per source are capped"
        );
    }
}
