//! Policy: turns one cycle's findings into a [`Plan`] of address-list additions and connection
//! removals, applying the never-block sets, the per-cycle cap and de-duplication; and the
//! human log lines of the seed script.
//!
//! Safety is decided here and only here: a special address (unspecified, broadcast, loopback,
//! multicast, link-local), an address in the router's allowlist or the configured allow list,
//! one of the router's own addresses, rosguard's own addresses, an address inside the router's
//! connected networks (unless `block_lan_hosts`), a gateway, DNS server or the address the
//! router sees rosguard's session come from, and an address an operator unblocked, is never
//! blocked, and its connection is never removed. While the router's gateways, DNS servers or
//! sessions are not known, nothing is blocked at all (fail closed). The safety proptests at the
//! bottom pin that down.
//!
//! It deliberately does not talk to the router, read the clock, pick timeouts or remember past
//! cycles (escalation and rate caps live in [`state`](crate::state)).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::detect::{Evidence, Finding};
use crate::model::{AddrSet, ConnId, Connection, Family, Networks, Protocol};
use crate::special::Special;

/// Which kind of protected address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protected {
    /// A default gateway (`/ip/route`, `/ipv6/route`).
    Gateway,
    /// A DNS server (`/ip/dns`).
    Dns,
    /// The address the router sees rosguard's API session come from (`/user/active`).
    Session,
}

impl Protected {
    /// All three, in the order they are read.
    pub const ALL: [Protected; 3] = [Protected::Gateway, Protected::Dns, Protected::Session];

    /// What the router is asked for.
    pub fn source(self) -> &'static str {
        match self {
            Protected::Gateway => "the default gateways (/ip/route, /ipv6/route)",
            Protected::Dns => "the DNS servers (/ip/dns)",
            Protected::Session => "rosguard's API sessions (/user/active)",
        }
    }
}

impl fmt::Display for Protected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protected::Gateway => "a default gateway",
            Protected::Dns => "a DNS server",
            Protected::Session => "the address the router sees rosguard connect from",
        })
    }
}

/// Everything that must never be blocked, plus what is blocked already.
#[derive(Debug, Clone, Default)]
pub struct PolicyContext {
    /// The router's allowlist address-list (`allowlist` in the seed script).
    pub router_allowlist: AddrSet,
    /// rosguard's configured allow list.
    pub config_allow: AddrSet,
    /// The router's own addresses (empty with `check_local_addr = false`).
    pub local: AddrSet,
    /// The router's connected networks, protected unless `block_lan_hosts`.
    pub lan: Networks,
    /// The address rosguard connects from and the router's management address. Besides never
    /// being blocked, a connection with either end here is never removed.
    pub own: Vec<IpAddr>,
    /// Gateways, DNS servers and the session addresses, each with its kind.
    pub protected: HashMap<Protected, AddrSet>,
    /// Protected sets the router has not told yet: while any is missing, nothing is blocked.
    pub unknown: Vec<Protected>,
    /// Addresses an operator unblocked, and until when (time since the UNIX epoch).
    pub unblocked: HashMap<IpAddr, Duration>,
    /// The operator unblocks could not be read: nothing is blocked, an unblock must not be
    /// overridden.
    pub unblocks_unknown: bool,
    /// The block list's current contents.
    pub already_blocked: AddrSet,
}

impl PolicyContext {
    /// Why `addr` must never be blocked, or `None` when it may be. Does not look at
    /// `already_blocked` (that is not a safety rule).
    pub fn never_block_reason(&self, addr: IpAddr) -> Option<SkipReason> {
        let canonical = addr.to_canonical();
        if let Some(kind) = Special::of(addr) {
            Some(SkipReason::Special { what: kind })
        } else if self.router_allowlist.contains(addr) {
            Some(SkipReason::RouterAllowlist)
        } else if self.config_allow.contains(addr) {
            Some(SkipReason::ConfigAllow)
        } else if self.local.contains(addr) {
            Some(SkipReason::Local)
        } else if self.is_own(addr) {
            Some(SkipReason::Own)
        } else if let Some(network) = self.lan.containing(addr) {
            Some(SkipReason::Lan { network })
        } else if let Some(kind) = Protected::ALL
            .into_iter()
            .find(|k| self.protected.get(k).is_some_and(|s| s.contains(addr)))
        {
            Some(SkipReason::Protected { what: kind })
        } else if let Some(&until) = self.unblocked.get(&canonical) {
            Some(SkipReason::Unblocked { until })
        } else if let Some(&missing) = self.unknown.first() {
            Some(SkipReason::ProtectionUnknown { missing })
        } else if self.unblocks_unknown {
            Some(SkipReason::UnblocksUnknown)
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
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SkipReason {
    /// Never a host to block: unspecified, broadcast, loopback, multicast or link-local.
    Special {
        /// Which.
        what: Special,
    },
    /// In the router's allowlist address-list.
    RouterAllowlist,
    /// In rosguard's configured allow list.
    ConfigAllow,
    /// One of the router's own addresses.
    Local,
    /// rosguard's own address or the router's management address.
    Own,
    /// Inside one of the router's connected networks.
    Lan {
        /// The network.
        network: IpNet,
    },
    /// A gateway, DNS server or rosguard's session address.
    Protected {
        /// Which.
        what: Protected,
    },
    /// An operator unblocked it; re-blocking is suppressed until then.
    Unblocked {
        /// Until when, time since the UNIX epoch.
        until: Duration,
    },
    /// The router's protected addresses are not known yet: nothing is blocked until they are.
    ProtectionUnknown {
        /// The first set still missing.
        missing: Protected,
    },
    /// The operator unblocks in the state store could not be read: nothing is blocked until
    /// they can.
    UnblocksUnknown,
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

    /// A stable machine-readable name (metrics labels, counters, JSON `kind`).
    pub fn kind(self) -> &'static str {
        match self {
            SkipReason::Special { .. } => "special",
            SkipReason::RouterAllowlist => "router-allowlist",
            SkipReason::ConfigAllow => "config-allow",
            SkipReason::Local => "local",
            SkipReason::Own => "own",
            SkipReason::Lan { .. } => "lan",
            SkipReason::Protected { .. } => "protected",
            SkipReason::Unblocked { .. } => "unblocked",
            SkipReason::ProtectionUnknown { .. } => "protection-unknown",
            SkipReason::UnblocksUnknown => "unblocks-unknown",
            SkipReason::AlreadyBlocked => "already-blocked",
            SkipReason::DuplicateInCycle => "duplicate-in-cycle",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Special { what } => write!(f, "{what}"),
            SkipReason::RouterAllowlist => f.write_str("in address-list allowlist"),
            SkipReason::ConfigAllow => f.write_str("in the configured allow list"),
            SkipReason::Local => f.write_str("router-local address"),
            SkipReason::Own => f.write_str("rosguard's own or the router's management address"),
            SkipReason::Lan { network } => write!(
                f,
                "inside the router's connected network {network} (set blocking.block_lan_hosts = true to allow)"
            ),
            SkipReason::Protected { what } => write!(f, "protected address ({what})"),
            SkipReason::Unblocked { .. } => {
                f.write_str("unblocked by an operator (see rosguard why)")
            }
            SkipReason::ProtectionUnknown { missing } => write!(
                f,
                "blocking nothing until {} can be read",
                missing.source()
            ),
            SkipReason::UnblocksUnknown => f.write_str(
                "blocking nothing until the operator unblocks in the state store can be read",
            ),
            SkipReason::AlreadyBlocked => f.write_str("already in the block list"),
            SkipReason::DuplicateInCycle => f.write_str("already blocked in this cycle"),
        }
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

/// One connection to remove.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Removal {
    /// The table.
    pub family: Family,
    /// The backend's handle.
    pub id: ConnId,
    /// The address the connection was flagged for.
    pub target: IpAddr,
    /// `tcp 10.0.0.2:40000 -> 203.0.113.5:443`, for logs.
    pub summary: String,
}

/// What one cycle does with its findings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Address-list additions, at most one per target.
    pub blocks: Vec<BlockAction>,
    /// Connections to remove.
    pub remove_connections: Vec<Removal>,
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

/// `s` cut to at most `max` bytes on a character boundary.
pub fn truncate_to(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The entry comment: `rosguard: tcp 192.168.88.50:54321 -> 203.0.113.45:443 orig=9 repl=1`
/// for an asymmetric connection, `rosguard: port-scan 203.0.113.9 tried 57 ports, e.g. tcp ...`
/// for a scan, `rosguard: router-psd list rosguard_scan`; at most [`MAX_COMMENT_BYTES`].
pub fn block_comment(finding: &Finding) -> String {
    let count = |n: Option<u64>| n.map_or_else(|| "?".to_owned(), |n| n.to_string());
    let s = match &finding.evidence {
        Evidence::Connection { connection: c } => format!(
            "rosguard: {} {} -> {} orig={} repl={}",
            c.protocol,
            c.src,
            c.dst,
            count(c.orig_total()),
            count(c.repl_total())
        ),
        Evidence::Scan { tried, example } => format!(
            "rosguard: port-scan {} tried {tried} ports, e.g. {}",
            finding.target,
            example.summary()
        ),
        Evidence::Staged { list } => format!("rosguard: router-psd list {list}"),
        Evidence::Stalled {
            sent,
            connection: c,
        } => format!(
            "rosguard: {} {} -> {} stalled: {sent} sent without a reply, orig={} repl={}",
            c.protocol,
            c.src,
            c.dst,
            count(c.orig_total()),
            count(c.repl_total())
        ),
    };
    truncate_to(&s, MAX_COMMENT_BYTES).to_owned()
}

/// Decides what to do with one cycle's findings, in order.
///
/// - A finding whose target must never be blocked
///   ([`PolicyContext::never_block_reason`]) is skipped with that reason: no block, no removal.
/// - Otherwise it needs a block when its target is neither in the block list nor blocked
///   earlier in this plan, and a removal when `remove_tcp_conn` is set, it is an asymmetric
///   TCP connection and neither of its ends is an `own` address. A finding that needs neither
///   is skipped ([`SkipReason::AlreadyBlocked`] or [`SkipReason::DuplicateInCycle`]).
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
        let dup = blocked_now.contains(&target.to_canonical());
        let needs_block = !in_list && !dup;
        let removable = match &finding.evidence {
            Evidence::Connection { connection } | Evidence::Stalled { connection, .. } => {
                Some(connection)
            }
            _ => None,
        }
        .filter(|c| remove_tcp_conn && c.protocol == Protocol::Tcp && !ctx.touches_own(c));
        if !needs_block && removable.is_none() {
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
        if let Some(c) = removable {
            out.remove_connections.push(Removal {
                family: c.family,
                id: c.id.clone(),
                target,
                summary: c.summary(),
            });
        }
        if needs_block {
            blocked_now.insert(target.to_canonical());
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
/// (the seed script's wording), or the scan / psd equivalent.
pub fn detected_message(finding: &Finding, min_orig: u64, max_repl: u64) -> String {
    match &finding.evidence {
        Evidence::Connection { connection: c } => format!(
            "Detected asymmetric {} connection: {} -> {} (orig>{min_orig}, repl<={max_repl})",
            c.protocol, c.src, c.dst
        ),
        Evidence::Scan { tried, example } => format!(
            "Detected port scan from {}: {tried} unanswered ports or hosts, e.g. {}",
            finding.target,
            example.summary()
        ),
        Evidence::Staged { list } => format!(
            "Detected port scan from {}: staged in {list} by the router's psd rule",
            finding.target
        ),
        Evidence::Stalled { sent, connection: c } => format!(
            "Detected stalled {} connection: {} -> {} ({sent} packets sent since its last reply, {} replies in all)",
            c.protocol,
            c.src,
            c.dst,
            c.repl_total().unwrap_or(0)
        ),
    }
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
    use crate::detect::{check, choose_target, Rule};
    use crate::model::{Endpoint, TcpState};
    use crate::settings::{BlockTarget, Detection};
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn conn(id: &str, proto: Protocol, src: &str, dst: &str) -> Connection {
        Connection {
            id: ConnId::new(id),
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
            orig_fasttrack_packets: None,
            repl_fasttrack_packets: None,
            tcp_state: Some(TcpState::Established),
        }
    }

    fn finding(id: &str, proto: Protocol, src: &str, dst: &str) -> Finding {
        Finding::asymmetric(conn(id, proto, src, dst), ip(dst))
    }

    fn removed_ids(p: &Plan) -> Vec<&str> {
        p.remove_connections.iter().map(|r| r.id.as_str()).collect()
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
            detected_message(&f, 3, 2),
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
        let scan = Finding {
            target: ip("203.0.113.9"),
            rule: Rule::PortScan,
            evidence: Evidence::Scan {
                tried: 57,
                example: conn("*4", Protocol::Tcp, "203.0.113.9", "192.168.88.5"),
            },
        };
        assert_eq!(
            block_comment(&scan),
            "rosguard: port-scan 203.0.113.9 tried 57 ports, e.g. tcp 203.0.113.9:54321 -> 192.168.88.5:443"
        );
        let staged = Finding {
            target: ip("203.0.113.10"),
            rule: Rule::RouterPsd,
            evidence: Evidence::Staged {
                list: "rosguard_scan".into(),
            },
        };
        assert_eq!(
            block_comment(&staged),
            "rosguard: router-psd list rosguard_scan"
        );
        assert_eq!(truncate_to("aé", 2), "a");
    }

    #[test]
    fn skips_every_never_block_set_with_its_reason() {
        let ctx = PolicyContext {
            router_allowlist: AddrSet::parse(["8.8.8.8"]).unwrap(),
            config_allow: AddrSet::parse(["1.1.1.0/24"]).unwrap(),
            local: AddrSet::parse(["192.168.88.1"]).unwrap(),
            lan: Networks::new(["192.168.88.1/24".parse().unwrap()]),
            own: vec![ip("10.9.9.10")],
            protected: HashMap::from([
                (Protected::Gateway, AddrSet::parse(["9.9.9.9"]).unwrap()),
                (Protected::Dns, AddrSet::parse(["9.9.9.10"]).unwrap()),
                (Protected::Session, AddrSet::parse(["9.9.9.11"]).unwrap()),
            ]),
            unblocked: HashMap::from([(ip("9.9.9.12"), Duration::from_secs(99))]),
            ..PolicyContext::default()
        };
        let fs = vec![
            finding("*1", Protocol::Tcp, "10.0.0.2", "8.8.8.8"),
            finding("*2", Protocol::Tcp, "10.0.0.2", "1.1.1.7"),
            finding("*3", Protocol::Tcp, "10.0.0.2", "192.168.88.1"),
            finding("*4", Protocol::Tcp, "10.0.0.2", "10.9.9.10"),
            finding("*5", Protocol::Tcp, "10.0.0.2", "9.9.9.9"),
            finding("*6", Protocol::Tcp, "10.0.0.2", "9.9.9.10"),
            finding("*7", Protocol::Tcp, "10.0.0.2", "9.9.9.11"),
            finding("*8", Protocol::Tcp, "203.0.113.1", "192.168.88.50"),
            finding("*9", Protocol::Udp, "10.0.0.2", "255.255.255.255"),
            finding("*A", Protocol::Tcp, "10.0.0.2", "9.9.9.12"),
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
                SkipReason::Protected {
                    what: Protected::Gateway
                },
                SkipReason::Protected {
                    what: Protected::Dns
                },
                SkipReason::Protected {
                    what: Protected::Session
                },
                SkipReason::Lan {
                    network: "192.168.88.0/24".parse().unwrap()
                },
                SkipReason::Special {
                    what: Special::Broadcast
                },
                SkipReason::Unblocked {
                    until: Duration::from_secs(99)
                },
            ]
        );
        assert!(reasons.iter().all(|r| r.is_safety()));
        assert!(p.skipped[7].1.to_string().contains("192.168.88.0/24"));
    }

    #[test]
    fn unknown_protection_blocks_nothing() {
        let ctx = PolicyContext {
            unknown: vec![Protected::Dns],
            ..PolicyContext::default()
        };
        let p = plan(
            vec![finding("*1", Protocol::Tcp, "10.0.0.2", "203.0.113.45")],
            &ctx,
            50,
            true,
        );
        assert!(p.is_empty());
        assert_eq!(
            p.skipped[0].1,
            SkipReason::ProtectionUnknown {
                missing: Protected::Dns
            }
        );
        assert!(p.skipped[0].1.to_string().contains("/ip/dns"));
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
        assert_eq!(removed_ids(&p), ["*1", "*2"]);
        assert_eq!(
            p.remove_connections[0].summary,
            "tcp 10.0.0.2:54321 -> 203.0.113.45:443"
        );
        assert_eq!(p.skipped.len(), 1);
        assert_eq!(p.skipped[0].1, SkipReason::DuplicateInCycle);
        assert_eq!(p.skipped[0].0.connection().unwrap().id.as_str(), "*3");
        assert_eq!(p.acted, 3);
        assert_eq!(p.blocks[0].family, Family::V4);
    }

    #[test]
    fn scans_are_blocked_but_their_connections_kept() {
        let scan = Finding {
            target: ip("203.0.113.9"),
            rule: Rule::PortScan,
            evidence: Evidence::Scan {
                tried: 30,
                example: conn("*4", Protocol::Tcp, "203.0.113.9", "198.51.100.5"),
            },
        };
        let p = plan(vec![scan], &PolicyContext::default(), 50, true);
        assert_eq!(p.blocks.len(), 1);
        assert!(p.remove_connections.is_empty());
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
        assert_eq!(removed_ids(&p), ["*1"]);
        assert_eq!(p.skipped.len(), 1);
        assert_eq!(p.skipped[0].1, SkipReason::AlreadyBlocked);
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
        assert_eq!(p.deferred[0].connection().unwrap().id.as_str(), "*3");
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
        assert_eq!(p.remove_connections[0].family, Family::V6);
    }

    // ---- safety properties -------------------------------------------------------------

    /// A small address pool so that collisions between findings and sets are frequent. The
    /// first four IPv4 and IPv6 addresses sit inside the proptest's LAN networks; two are
    /// special; one is the IPv4-mapped form of another.
    fn pool() -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = (1..=10).map(|i| ip(&format!("10.0.0.{i}"))).collect();
        v.extend(
            [
                "2001:db8::1",
                "2001:db8::2",
                "::ffff:10.0.0.3",
                "2001:db8::9",
                "0.0.0.0",
                "ff02::1",
            ]
            .map(ip),
        );
        v
    }

    /// The oracle's own idea of "the same address": canonical forms equal. It never calls
    /// [`AddrSet`], so a bug there cannot hide in the oracle too.
    fn same(a: IpAddr, b: IpAddr) -> bool {
        a.to_canonical() == b.to_canonical()
    }

    fn in_mask(mask: u16, a: IpAddr) -> bool {
        pool()
            .into_iter()
            .enumerate()
            .any(|(i, p)| mask & (1 << i) != 0 && same(p, a))
    }

    /// Inside `10.0.0.0/30` or `2001:db8::/126`, by integer comparison.
    fn in_lan(a: IpAddr) -> bool {
        match a.to_canonical() {
            IpAddr::V4(v) => (0x0a00_0000..=0x0a00_0003).contains(&u32::from(v)),
            IpAddr::V6(v) => {
                let n = u128::from(v);
                let base = u128::from("2001:db8::".parse::<std::net::Ipv6Addr>().unwrap());
                (base..=base + 3).contains(&n)
            }
        }
    }

    fn is_special(a: IpAddr) -> bool {
        let t = a.to_canonical().to_string();
        t == "0.0.0.0" || t == "ff02::1"
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

    /// A sparse mask over the pool (each address in with probability 1/8).
    fn sparse_mask() -> impl Strategy<Value = u16> {
        (any::<u16>(), any::<u16>(), any::<u16>()).prop_map(|(a, b, c)| a & b & c)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn plan_is_safe(
            rows in prop::collection::vec(row_strategy(), 0..60),
            masks in prop::collection::vec(sparse_mask(), 9),
            ports in prop::collection::vec(prop::sample::select(vec![22u16, 80, 443, 8443]), 0..3),
            protos in prop::collection::vec(0u8..3, 1..5),
            min_orig in 0u64..4,
            max_repl in 0u64..3,
            target in prop::sample::select(vec![BlockTarget::Dst, BlockTarget::Src, BlockTarget::Remote]),
            lan_on in any::<bool>(),
            unknown in prop::bool::weighted(0.1),
            cap in 0usize..12,
            remove in any::<bool>(),
        ) {
            let addrs = pool();
            let proto = |p: u8| [Protocol::Tcp, Protocol::Udp, Protocol::Icmp][p as usize];
            let conns: Vec<Connection> = rows
                .iter()
                .enumerate()
                .map(|(i, &(p, s, d, port, o, r, has_counters))| Connection {
                    id: ConnId::new(format!("*{i:X}")),
                    family: Family::of(addrs[d]),
                    protocol: proto(p),
                    src: Endpoint { addr: addrs[s], port: port.map(|_| 40000) },
                    dst: Endpoint { addr: addrs[d], port },
                    orig_packets: Some(o),
                    repl_packets: has_counters.then_some(r),
                    orig_bytes: None,
                    repl_bytes: None,
                    orig_fasttrack_packets: None,
                    repl_fasttrack_packets: None,
                    tcp_state: None,
                })
                .collect();
            let d = Detection {
                monitored_ports: ports,
                protocols: protos.into_iter().map(proto).collect(),
                min_orig_packets: min_orig,
                max_repl_packets: max_repl,
                block_target: target,
                ..Detection::default()
            };
            let lan = Networks::new(["10.0.0.0/30", "2001:db8::/126"].map(|s| s.parse().unwrap()));
            let ctx = PolicyContext {
                router_allowlist: set_from(masks[0]),
                config_allow: set_from(masks[1]),
                local: set_from(masks[2]),
                lan: if lan_on { lan.clone() } else { Networks::default() },
                own: pool().into_iter().enumerate()
                    .filter(|(i, _)| masks[3] & (1 << i) != 0).map(|(_, x)| x).collect(),
                protected: HashMap::from([
                    (Protected::Gateway, set_from(masks[4])),
                    (Protected::Dns, set_from(masks[5])),
                    (Protected::Session, set_from(masks[6])),
                ]),
                unknown: if unknown { vec![Protected::Session] } else { vec![] },
                unblocked: pool().into_iter().enumerate()
                    .filter(|(i, _)| masks[7] & (1 << i) != 0)
                    .map(|(_, x)| (x.to_canonical(), Duration::from_secs(1))).collect(),
                already_blocked: set_from(masks[8]),
                unblocks_unknown: false,
            };
            let findings: Vec<Finding> =
                conns.iter().filter_map(|c| check(c, &d, &lan)).collect();
            for f in &findings {
                prop_assert_eq!(f.target, choose_target(f.connection().unwrap(), target, &lan));
            }
            let by_id: HashMap<ConnId, Finding> = findings
                .iter()
                .map(|f| (f.connection().unwrap().id.clone(), f.clone()))
                .collect();
            let p = plan(findings.clone(), &ctx, cap, remove);

            // The oracle: masks and integer ranges only.
            let protected = |a: IpAddr| is_special(a)
                || (0..3).any(|k| in_mask(masks[k], a))
                || in_mask(masks[3], a)
                || (lan_on && in_lan(a))
                || (4..8).any(|k| in_mask(masks[k], a))
                || unknown;
            let own = |a: IpAddr| in_mask(masks[3], a);

            // 1. No block target is ever protected or already in the list.
            for b in &p.blocks {
                prop_assert!(!protected(b.target), "blocked a protected address {}", b.target);
                prop_assert!(!in_mask(masks[8], b.target));
                prop_assert_eq!(b.target, b.finding.target);
                prop_assert_eq!(b.family, Family::of(b.target));
                prop_assert!(b.comment.starts_with("rosguard:") && b.comment.len() <= MAX_COMMENT_BYTES);
            }
            // 2. A target is blocked at most once (canonical forms included).
            let targets: HashSet<IpAddr> = p.blocks.iter().map(|b| b.target.to_canonical()).collect();
            prop_assert_eq!(targets.len(), p.blocks.len());
            // 3. Every removal belongs to a finding acted on for an unprotected target.
            let removed: HashSet<&ConnId> = p.remove_connections.iter().map(|r| &r.id).collect();
            prop_assert_eq!(removed.len(), p.remove_connections.len());
            for r in &p.remove_connections {
                let f = by_id.get(&r.id).expect("removal of an unknown connection");
                let c = f.connection().unwrap();
                prop_assert!(remove);
                prop_assert_eq!(c.protocol, Protocol::Tcp);
                prop_assert_eq!(r.family, c.family);
                prop_assert!(!protected(f.target), "removed a connection of protected {}", f.target);
                prop_assert!(!own(c.src.addr) && !own(c.dst.addr));
            }
            // 4. The cap bounds the findings acted on.
            let acted: HashSet<&ConnId> = p.blocks.iter()
                .map(|b| &b.finding.connection().unwrap().id)
                .chain(removed.iter().copied()).collect();
            prop_assert_eq!(acted.len(), p.acted);
            prop_assert!(p.acted <= cap);
            // 5. Nothing is deferred while the cap has room.
            if p.acted < cap { prop_assert!(p.deferred.is_empty()); }
            // 6. Every finding is accounted for exactly once.
            let mut seen: Vec<&ConnId> = acted.iter().copied()
                .chain(p.skipped.iter().map(|(f, _)| &f.connection().unwrap().id))
                .chain(p.deferred.iter().map(|f| &f.connection().unwrap().id))
                .collect();
            seen.sort();
            let mut all: Vec<&ConnId> = findings.iter().map(|f| &f.connection().unwrap().id).collect();
            all.sort();
            prop_assert_eq!(seen, all);
            // 7. A safety skip is exactly a protected target, and its connection is untouched.
            for (f, reason) in &p.skipped {
                prop_assert_eq!(reason.is_safety(), protected(f.target), "{:?} for {}", reason, f.target);
                if reason.is_safety() {
                    prop_assert!(!removed.contains(&f.connection().unwrap().id));
                }
            }
        }
    }
}
