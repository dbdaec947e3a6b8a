//! Policy: turns one cycle's findings into a [`Plan`] of address-list additions and connection
//! removals, applying the never-block sets, the per-cycle cap and de-duplication; and the
//! human log lines of the seed script.
//!
//! Safety is decided here and only here: an address in the router's allowlist, the configured
//! allow list, the router's own addresses, rosguard's own addresses or the protected set is
//! never blocked, and its connection is never removed. The safety proptests at the bottom pin
//! that down.
//!
//! It deliberately does not talk to the router, read the clock, pick timeouts or remember past
//! cycles (escalation and rate caps live in [`state`](crate::state)).

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::detect::{Finding, Rules};
use crate::model::{AddrSet, Connection, Family, Protocol};

/// Everything that must never be blocked, plus what is blocked already.
#[derive(Debug, Clone, Default)]
pub struct PolicyContext {
    /// The router's allowlist address-list (`allowlist` in the seed script).
    pub router_allowlist: AddrSet,
    /// rosguard's configured allow list.
    pub config_allow: AddrSet,
    /// The router's own addresses.
    pub local: AddrSet,
    /// The address rosguard connects from and the router's management address. Besides never
    /// being blocked, a connection with either end here is never removed.
    pub own: Vec<IpAddr>,
    /// Other never-block addresses: gateways, DNS servers.
    pub protected: AddrSet,
    /// The block list's current contents.
    pub already_blocked: AddrSet,
}

impl PolicyContext {
    /// Why `addr` must never be blocked, or `None` when it may be. Does not look at
    /// `already_blocked` (that is not a safety rule).
    pub fn never_block_reason(&self, addr: IpAddr) -> Option<SkipReason> {
        if self.router_allowlist.contains(addr) {
            Some(SkipReason::RouterAllowlist)
        } else if self.config_allow.contains(addr) {
            Some(SkipReason::ConfigAllow)
        } else if self.local.contains(addr) {
            Some(SkipReason::Local)
        } else if self.is_own(addr) {
            Some(SkipReason::Own)
        } else if self.protected.contains(addr) {
            Some(SkipReason::Protected)
        } else {
            None
        }
    }

    /// True when `addr` is one of [`PolicyContext::own`] (IPv4-mapped IPv6 forms included).
    pub fn is_own(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        self.own.iter().any(|o| o.to_canonical() == addr)
    }

    fn touches_own(&self, conn: &Connection) -> bool {
        self.is_own(conn.src.addr) || self.is_own(conn.dst.addr)
    }
}

/// Why a finding was not acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkipReason {
    /// In the router's allowlist address-list.
    RouterAllowlist,
    /// In rosguard's configured allow list.
    ConfigAllow,
    /// One of the router's own addresses.
    Local,
    /// rosguard's own address or the router's management address.
    Own,
    /// A protected address (gateway, DNS server).
    Protected,
    /// Already in the block list, and nothing else to do.
    AlreadyBlocked,
    /// Blocked earlier in this cycle, and nothing else to do.
    DuplicateInCycle,
}

impl SkipReason {
    /// True for the reasons that protect an address (as opposed to "nothing left to do").
    pub fn is_safety(self) -> bool {
        !matches!(
            self,
            SkipReason::AlreadyBlocked | SkipReason::DuplicateInCycle
        )
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::RouterAllowlist => "in address-list allowlist",
            SkipReason::ConfigAllow => "in the configured allow list",
            SkipReason::Local => "router-local address",
            SkipReason::Own => "rosguard's own or the router's management address",
            SkipReason::Protected => "protected address (gateway or DNS server)",
            SkipReason::AlreadyBlocked => "already in the block list",
            SkipReason::DuplicateInCycle => "already blocked in this cycle",
        })
    }
}

/// One address-list addition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockAction {
    /// The address to add.
    pub target: IpAddr,
    /// The family of `target`: which address-list menu it goes to.
    pub family: Family,
    /// The entry's comment, from [`block_comment`].
    pub comment: String,
    /// The finding that caused it.
    pub finding: Finding,
}

/// What one cycle does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Address-list additions, at most one per target.
    pub blocks: Vec<BlockAction>,
    /// Connections to remove: the table's family and the row's `.id`.
    pub remove_connections: Vec<(Family, String)>,
    /// Findings not acted on, and why.
    pub skipped: Vec<(Finding, SkipReason)>,
    /// Findings over the per-cycle cap; the caller warns and they come back next poll.
    pub deferred: Vec<Finding>,
    /// How many findings were acted on (a block, a removal, or both): at most the cap.
    pub acted: usize,
}

impl Plan {
    /// True when there is nothing to send to the router.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty() && self.remove_connections.is_empty()
    }
}

/// The longest comment RouterOS is given, in bytes.
pub const MAX_COMMENT_BYTES: usize = 255;

/// `rosguard: tcp 192.168.88.50:54321 -> 203.0.113.45:443 orig=9 repl=1`, at most
/// [`MAX_COMMENT_BYTES`] bytes.
pub fn block_comment(finding: &Finding) -> String {
    let c = &finding.connection;
    let count = |n: Option<u64>| n.map_or_else(|| "?".to_owned(), |n| n.to_string());
    let mut s = format!(
        "rosguard: {} {} -> {} orig={} repl={}",
        c.protocol,
        c.src,
        c.dst,
        count(c.orig_packets),
        count(c.repl_packets)
    );
    if s.len() > MAX_COMMENT_BYTES {
        let mut end = MAX_COMMENT_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Decides what to do with one cycle's findings, in order.
///
/// - A finding whose target is allowlisted, config-allowed, router-local, own or protected is
///   skipped with that reason: no block, no removal.
/// - Otherwise it needs a block when its target is neither in the block list nor blocked
///   earlier in this plan, and a removal when `remove_tcp_conn` is set, the connection is TCP
///   and neither of its ends is an `own` address. A finding that needs neither is skipped
///   ([`SkipReason::AlreadyBlocked`] or [`SkipReason::DuplicateInCycle`]) and costs nothing.
/// - Each finding that needs something counts once toward `max_conn_per_cycle`, whether it
///   brings a block, a removal or both; past the cap findings go to `deferred`.
pub fn plan(
    findings: Vec<Finding>,
    ctx: &PolicyContext,
    max_conn_per_cycle: usize,
    remove_tcp_conn: bool,
) -> Plan {
    let mut out = Plan::default();
    let mut blocked_now: HashSet<IpAddr> = HashSet::new();
    for finding in findings {
        let target = finding.target;
        if let Some(reason) = ctx.never_block_reason(target) {
            out.skipped.push((finding, reason));
            continue;
        }
        let in_list = ctx.already_blocked.contains(target);
        let dup = blocked_now.contains(&target);
        let needs_block = !in_list && !dup;
        let needs_removal = remove_tcp_conn
            && finding.connection.protocol == Protocol::Tcp
            && !ctx.touches_own(&finding.connection);
        if !needs_block && !needs_removal {
            let reason = if in_list {
                SkipReason::AlreadyBlocked
            } else {
                SkipReason::DuplicateInCycle
            };
            out.skipped.push((finding, reason));
            continue;
        }
        if out.acted >= max_conn_per_cycle {
            out.deferred.push(finding);
            continue;
        }
        out.acted += 1;
        if needs_removal {
            out.remove_connections
                .push((finding.connection.family, finding.connection.id.clone()));
        }
        if needs_block {
            blocked_now.insert(target);
            out.blocks.push(BlockAction {
                target,
                family: Family::of(target),
                comment: block_comment(&finding),
                finding,
            });
        }
    }
    out
}

/// `Detected asymmetric tcp connection: 192.168.1.50:54321 -> 203.0.113.45:443 (orig>3, repl<=2)`
pub fn detected_message(finding: &Finding, rules: &Rules) -> String {
    let c = &finding.connection;
    format!(
        "Detected asymmetric {} connection: {} -> {} (orig>{}, repl<={})",
        c.protocol, c.src, c.dst, rules.min_orig_packets, rules.max_repl_packets
    )
}

/// `Added 203.0.113.45 to tls_block (timeout: 1d)`
pub fn added_message(addr: IpAddr, list: &str, timeout: &str) -> String {
    format!("Added {addr} to {list} (timeout: {timeout})")
}

/// `Processed 5 suspicious connections`
pub fn processed_message(n: usize) -> String {
    format!("Processed {n} suspicious connections")
}

/// `Skipping 8.8.8.8: in address-list allowlist`
pub fn skipped_message(finding: &Finding, reason: SkipReason) -> String {
    format!("Skipping {}: {reason}", finding.target)
}

/// `Reached the limit of 50 connections per cycle; 7 left for the next cycle`
pub fn deferred_message(deferred: usize, cap: usize) -> String {
    format!("Reached the limit of {cap} connections per cycle; {deferred} left for the next cycle")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{detect, BlockTarget, Rule};
    use crate::model::Endpoint;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn finding(id: &str, proto: Protocol, src: &str, dst: &str) -> Finding {
        Finding {
            connection: Connection {
                id: id.into(),
                family: Family::of(ip(dst)),
                protocol: proto,
                src: Endpoint {
                    addr: ip(src),
                    port: Some(54321),
                },
                dst: Endpoint {
                    addr: ip(dst),
                    port: Some(443),
                },
                orig_packets: Some(9),
                repl_packets: Some(1),
                orig_bytes: None,
                repl_bytes: None,
                tcp_state: Some("established".into()),
            },
            target: ip(dst),
            rule: Rule::Asymmetric,
        }
    }

    #[test]
    fn comment_and_messages_match_the_seed_wording() {
        let f = finding("*1", Protocol::Tcp, "192.168.88.50", "203.0.113.45");
        assert_eq!(
            block_comment(&f),
            "rosguard: tcp 192.168.88.50:54321 -> 203.0.113.45:443 orig=9 repl=1"
        );
        let f = finding("*1", Protocol::Tcp, "192.168.1.50", "203.0.113.45");
        assert_eq!(
            detected_message(&f, &Rules::default()),
            "Detected asymmetric tcp connection: 192.168.1.50:54321 -> 203.0.113.45:443 (orig>3, repl<=2)"
        );
        assert_eq!(
            added_message(ip("203.0.113.45"), "tls_block", "1d"),
            "Added 203.0.113.45 to tls_block (timeout: 1d)"
        );
        assert_eq!(processed_message(5), "Processed 5 suspicious connections");
        assert_eq!(
            skipped_message(&f, SkipReason::RouterAllowlist),
            "Skipping 203.0.113.45: in address-list allowlist"
        );
        assert_eq!(SkipReason::Local.to_string(), "router-local address");
        let v6 = finding("*2", Protocol::Udp, "2001:db8::5", "2001:db8:ffff::1");
        assert_eq!(
            block_comment(&v6),
            "rosguard: udp [2001:db8::5]:54321 -> [2001:db8:ffff::1]:443 orig=9 repl=1"
        );
        let long = finding(
            "*3",
            Protocol::Tcp,
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        );
        assert!(block_comment(&long).len() <= MAX_COMMENT_BYTES);
    }

    #[test]
    fn skips_every_never_block_set_with_its_reason() {
        let ctx = PolicyContext {
            router_allowlist: AddrSet::parse(["8.8.8.8"]).unwrap(),
            config_allow: AddrSet::parse(["1.1.1.0/24"]).unwrap(),
            local: AddrSet::parse(["192.168.88.1"]).unwrap(),
            own: vec![ip("192.168.88.10")],
            protected: AddrSet::parse(["9.9.9.9"]).unwrap(),
            already_blocked: AddrSet::new(),
        };
        let fs = vec![
            finding("*1", Protocol::Tcp, "10.0.0.2", "8.8.8.8"),
            finding("*2", Protocol::Tcp, "10.0.0.2", "1.1.1.7"),
            finding("*3", Protocol::Tcp, "10.0.0.2", "192.168.88.1"),
            finding("*4", Protocol::Tcp, "10.0.0.2", "192.168.88.10"),
            finding("*5", Protocol::Tcp, "10.0.0.2", "9.9.9.9"),
        ];
        let p = plan(fs, &ctx, 50, true);
        assert!(p.is_empty());
        assert_eq!(p.acted, 0);
        let reasons: Vec<SkipReason> = p.skipped.iter().map(|s| s.1).collect();
        assert_eq!(
            reasons,
            [
                SkipReason::RouterAllowlist,
                SkipReason::ConfigAllow,
                SkipReason::Local,
                SkipReason::Own,
                SkipReason::Protected
            ]
        );
        assert!(reasons.iter().all(|r| r.is_safety()));
    }

    #[test]
    fn one_block_per_target_but_every_tcp_connection_removed() {
        let fs = vec![
            finding("*1", Protocol::Tcp, "10.0.0.2", "203.0.113.45"),
            finding("*2", Protocol::Tcp, "10.0.0.3", "203.0.113.45"),
            finding("*3", Protocol::Udp, "10.0.0.4", "203.0.113.45"),
            finding("*4", Protocol::Udp, "10.0.0.4", "203.0.113.46"),
        ];
        let p = plan(fs, &PolicyContext::default(), 50, true);
        let targets: Vec<String> = p.blocks.iter().map(|b| b.target.to_string()).collect();
        assert_eq!(targets, ["203.0.113.45", "203.0.113.46"]);
        assert_eq!(
            p.remove_connections,
            [
                (Family::V4, "*1".to_string()),
                (Family::V4, "*2".to_string())
            ]
        );
        assert_eq!(p.skipped.len(), 1);
        assert_eq!(p.skipped[0].1, SkipReason::DuplicateInCycle);
        assert_eq!(p.skipped[0].0.connection.id, "*3");
        assert_eq!(p.acted, 3);
        assert_eq!(p.blocks[0].family, Family::V4);
        assert_eq!(p.blocks[0].finding.connection.id, "*1");
    }

    #[test]
    fn already_blocked_target_still_loses_its_tcp_connection() {
        let ctx = PolicyContext {
            already_blocked: AddrSet::parse(["203.0.113.0/24"]).unwrap(),
            ..PolicyContext::default()
        };
        let fs = vec![
            finding("*1", Protocol::Tcp, "10.0.0.2", "203.0.113.45"),
            finding("*2", Protocol::Udp, "10.0.0.2", "203.0.113.45"),
        ];
        let p = plan(fs.clone(), &ctx, 50, true);
        assert!(p.blocks.is_empty());
        assert_eq!(p.remove_connections, [(Family::V4, "*1".to_string())]);
        assert_eq!(p.skipped.len(), 1);
        assert_eq!(p.skipped[0].1, SkipReason::AlreadyBlocked);
        // Without removal there is nothing to do at all.
        let p = plan(fs, &ctx, 50, false);
        assert!(p.is_empty());
        assert_eq!(p.skipped.len(), 2);
    }

    #[test]
    fn cap_counts_findings_acted_on() {
        let fs: Vec<Finding> = (0..5)
            .map(|i| {
                finding(
                    &format!("*{i}"),
                    Protocol::Tcp,
                    "10.0.0.2",
                    &format!("203.0.113.{i}"),
                )
            })
            .collect();
        let p = plan(fs.clone(), &PolicyContext::default(), 3, true);
        assert_eq!(p.blocks.len(), 3);
        assert_eq!(p.remove_connections.len(), 3);
        assert_eq!(p.acted, 3);
        assert_eq!(p.deferred.len(), 2);
        assert_eq!(p.deferred[0].connection.id, "*3");
        let p = plan(fs, &PolicyContext::default(), 0, true);
        assert!(p.is_empty());
        assert_eq!(p.deferred.len(), 5);
        assert_eq!(
            deferred_message(5, 0),
            "Reached the limit of 0 connections per cycle; 5 left for the next cycle"
        );
    }

    #[test]
    fn own_connections_are_never_removed() {
        let ctx = PolicyContext {
            own: vec![ip("10.0.0.9")],
            ..PolicyContext::default()
        };
        let p = plan(
            vec![finding("*1", Protocol::Tcp, "10.0.0.9", "203.0.113.45")],
            &ctx,
            50,
            true,
        );
        assert_eq!(p.blocks.len(), 1);
        assert!(p.remove_connections.is_empty());
        // An IPv4-mapped form of an own address is own too.
        assert!(ctx.is_own(ip("::ffff:10.0.0.9")));
    }

    #[test]
    fn ipv6_target_goes_to_the_ipv6_family() {
        let p = plan(
            vec![finding("*1", Protocol::Tcp, "2001:db8::2", "2001:db8:1::1")],
            &PolicyContext::default(),
            50,
            true,
        );
        assert_eq!(p.blocks[0].family, Family::V6);
        assert_eq!(p.remove_connections, [(Family::V6, "*1".to_string())]);
    }

    // ---- safety properties -------------------------------------------------------------

    /// A small address pool so that collisions between findings and sets are frequent.
    fn pool() -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = (1..=12).map(|i| ip(&format!("10.0.0.{i}"))).collect();
        v.extend(
            [
                "2001:db8::1",
                "2001:db8::2",
                "::ffff:10.0.0.3",
                "2001:db8::3",
            ]
            .map(ip),
        );
        v
    }

    fn set_from(mask: u16) -> AddrSet {
        pool()
            .into_iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, a)| a)
            .collect()
    }

    fn row_strategy() -> impl Strategy<Value = (u8, usize, usize, Option<u16>, u64, u64, bool)> {
        (
            0u8..3,
            0usize..16,
            0usize..16,
            prop::option::weighted(0.8, prop::sample::select(vec![22u16, 80, 443, 8443])),
            0u64..8,
            0u64..4,
            prop::bool::weighted(0.9),
        )
    }

    /// A sparse mask over the pool (each address in with probability 1/8), so that a good
    /// share of findings survive the five never-block sets and reach the cap logic.
    fn sparse_mask() -> impl Strategy<Value = u16> {
        (any::<u16>(), any::<u16>(), any::<u16>()).prop_map(|(a, b, c)| a & b & c)
    }

    fn ctx_strategy() -> impl Strategy<Value = (u16, u16, u16, u16, u16, u16)> {
        (
            sparse_mask(),
            sparse_mask(),
            sparse_mask(),
            sparse_mask(),
            sparse_mask(),
            sparse_mask(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn plan_is_safe(
            rows in prop::collection::vec(row_strategy(), 0..60),
            masks in ctx_strategy(),
            ports in prop::collection::vec(prop::sample::select(vec![22u16, 80, 443, 8443]), 0..3),
            protos in prop::collection::vec(0u8..3, 0..5),
            min_orig in 0u64..4,
            max_repl in 0u64..3,
            target in prop::sample::select(vec![BlockTarget::Dst, BlockTarget::Src, BlockTarget::Remote]),
            cap in 0usize..12,
            remove in any::<bool>(),
        ) {
            let addrs = pool();
            let proto = |p: u8| [Protocol::Tcp, Protocol::Udp, Protocol::Icmp][p as usize];
            let conns: Vec<Connection> = rows
                .iter()
                .enumerate()
                .map(|(i, &(p, s, d, port, o, r, has_counters))| Connection {
                    id: format!("*{i:X}"),
                    family: Family::of(addrs[d]),
                    protocol: proto(p),
                    src: Endpoint { addr: addrs[s], port: port.map(|_| 40000) },
                    dst: Endpoint { addr: addrs[d], port },
                    orig_packets: Some(o),
                    repl_packets: has_counters.then_some(r),
                    orig_bytes: None,
                    repl_bytes: None,
                    tcp_state: None,
                })
                .collect();
            let rules = Rules {
                monitored_ports: ports,
                protocols: protos.into_iter().map(proto).collect(),
                min_orig_packets: min_orig,
                max_repl_packets: max_repl,
                block_target: target,
            };
            let (a, b, c, d, e, f) = masks;
            let ctx = PolicyContext {
                router_allowlist: set_from(a),
                config_allow: set_from(b),
                local: set_from(c),
                own: pool().into_iter().enumerate()
                    .filter(|(i, _)| d & (1 << i) != 0).map(|(_, x)| x).collect(),
                protected: set_from(e),
                already_blocked: set_from(f),
            };
            let findings = detect(conns.clone(), &rules, &ctx.local);
            let by_id: HashMap<String, Finding> =
                findings.iter().map(|f| (f.connection.id.clone(), f.clone())).collect();
            let p = plan(findings.clone(), &ctx, cap, remove);

            let protected = |a: IpAddr| ctx.router_allowlist.contains(a)
                || ctx.config_allow.contains(a)
                || ctx.local.contains(a)
                || ctx.is_own(a)
                || ctx.protected.contains(a);

            // 1. No block target is ever protected or already in the list.
            for b in &p.blocks {
                prop_assert!(!protected(b.target), "blocked a protected address {}", b.target);
                prop_assert!(!ctx.already_blocked.contains(b.target));
                prop_assert_eq!(b.target, b.finding.target);
                prop_assert_eq!(b.family, Family::of(b.target));
                prop_assert!(b.comment.starts_with("rosguard:") && b.comment.len() <= MAX_COMMENT_BYTES);
            }
            // 2. A target is blocked at most once.
            let targets: HashSet<IpAddr> = p.blocks.iter().map(|b| b.target).collect();
            prop_assert_eq!(targets.len(), p.blocks.len());
            // 3. Every removal belongs to a finding acted on for an unprotected target: a
            //    TCP row, removal enabled, no own address on either end, each id once.
            let removed: HashSet<&String> = p.remove_connections.iter().map(|(_, id)| id).collect();
            prop_assert_eq!(removed.len(), p.remove_connections.len());
            for (fam, id) in &p.remove_connections {
                let f = by_id.get(id).expect("removal of an unknown connection");
                prop_assert!(remove);
                prop_assert_eq!(f.connection.protocol, Protocol::Tcp);
                prop_assert_eq!(*fam, f.connection.family);
                prop_assert!(!protected(f.target), "removed a connection of protected {}", f.target);
                prop_assert!(!ctx.is_own(f.connection.src.addr) && !ctx.is_own(f.connection.dst.addr));
            }
            // 4. The cap bounds the findings acted on (block and/or removal).
            let acted: HashSet<&String> = p.blocks.iter().map(|b| &b.finding.connection.id)
                .chain(removed.iter().copied()).collect();
            prop_assert_eq!(acted.len(), p.acted);
            prop_assert!(p.acted <= cap);
            prop_assert!(p.blocks.len() <= cap && p.remove_connections.len() <= cap);
            // 5. Nothing is deferred while the cap has room.
            if p.acted < cap { prop_assert!(p.deferred.is_empty()); }
            // 6. Every finding is accounted for exactly once.
            let mut seen: Vec<&String> = acted.iter().copied()
                .chain(p.skipped.iter().map(|(f, _)| &f.connection.id))
                .chain(p.deferred.iter().map(|f| &f.connection.id))
                .collect();
            seen.sort();
            let mut all: Vec<&String> = findings.iter().map(|f| &f.connection.id).collect();
            all.sort();
            prop_assert_eq!(seen, all);
            // 7. A safety skip carries the right reason, and its connection is untouched.
            for (f, reason) in &p.skipped {
                if reason.is_safety() {
                    prop_assert!(protected(f.target));
                    prop_assert!(!removed.contains(&f.connection.id));
                } else {
                    prop_assert!(!protected(f.target));
                }
            }
        }
    }
}
