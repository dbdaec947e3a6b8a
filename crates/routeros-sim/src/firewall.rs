//! The filter rules' reaction to scenario traffic: the first packet of every scenario
//! connection goes through the `input` (to one of the router's addresses) or `forward` chain,
//! and rules whose action is `add-src-to-address-list` / `add-dst-to-address-list` put the
//! address on their list, with their `address-list-timeout`, at the packet's sim time. The
//! `psd` matcher (port-scan detection) is emulated per rule and per source.
//!
//! Matchers emulated: `protocol`, `src-address`, `dst-address`, `src-port`, `dst-port`,
//! `in-interface`, `in-interface-list` (`WAN` is the WAN address's interface, `LAN` the
//! others), `connection-state` (a first packet is `new`), `src-address-list`,
//! `dst-address-list` and `psd`, each with `!` for "not". A rule with any other matcher never
//! fires here. Rules are taken in order; `accept`, `drop`, `reject`, `tarpit` and `return` end
//! a packet's walk, `jump` is not followed. It deliberately does not drop or count traffic:
//! the connection table is the scenario's, whatever the rules say.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use crate::address_list::AddressLists;
use crate::config::RouterAddress;
use crate::connection::SimProtocol;
use crate::filter::{list_timeout, FilterRule, FilterTable, Psd};

/// How many sources one `psd` rule keeps track of; past that, the one seen longest ago is
/// forgotten (the kernel's matcher keeps a fixed-size table too).
pub const PSD_MAX_TRACKED_SOURCES: usize = 4096;

/// The first packet of a connection, at sim time `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FlowPacket {
    pub(crate) at: Duration,
    pub(crate) protocol: SimProtocol,
    pub(crate) src: IpAddr,
    pub(crate) src_port: Option<u16>,
    pub(crate) dst: IpAddr,
    pub(crate) dst_port: Option<u16>,
}

/// One source's current scan sequence under one `psd` rule.
#[derive(Debug)]
struct Track {
    /// Sim time of its last packet to a new port.
    last: Duration,
    weight: u32,
    ports: HashSet<u16>,
}

/// What the emulation remembers between packets (RAM: a reboot forgets it).
#[derive(Debug, Default)]
pub(crate) struct Firewall {
    /// Per rule id: per source, its sequence.
    psd: HashMap<u64, HashMap<IpAddr, Track>>,
}

/// What a packet's walk through the rules sees of the router.
pub(crate) struct Router<'a> {
    pub(crate) filters: &'a FilterTable,
    pub(crate) lists: &'a mut AddressLists,
    pub(crate) addresses: &'a [RouterAddress],
    pub(crate) wan_interface: &'a str,
}

/// A matcher's value with its optional leading `!`.
fn negatable(v: &str) -> (bool, &str) {
    match v.strip_prefix('!') {
        Some(rest) => (true, rest.trim()),
        None => (false, v.trim()),
    }
}

fn address_in(ip: IpAddr, v: &str) -> Option<bool> {
    if let Some((a, b)) = v.split_once('-') {
        let (a, b): (IpAddr, IpAddr) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
        return Some(a <= ip && ip <= b);
    }
    if v.contains('/') {
        let net: ipnet::IpNet = v.parse().ok()?;
        return Some(net.contains(&ip));
    }
    Some(v.parse::<IpAddr>().ok()? == ip)
}

fn port_in(port: Option<u16>, v: &str) -> Option<bool> {
    let mut hit = false;
    for part in v.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?),
            None => {
                let p = part.trim().parse::<u16>().ok()?;
                (p, p)
            }
        };
        hit |= port.is_some_and(|p| lo <= p && p <= hi);
    }
    Some(hit)
}

fn protocol_is(p: SimProtocol, v: &str) -> Option<bool> {
    Some(SimProtocol::parse(v)? == p)
}

/// Properties of a rule that are no matchers.
const NOT_MATCHERS: &[&str] = &[
    "chain",
    "action",
    "comment",
    "log",
    "log-prefix",
    "address-list",
    "address-list-timeout",
    "jump-target",
    "reject-with",
    "hw-offload",
    "psd",
];

impl Firewall {
    /// A reboot forgets every sequence.
    pub(crate) fn reboot(&mut self) {
        self.psd.clear();
    }

    /// Whether any rule of `filters` can react to traffic (so packets need walking at all).
    pub(crate) fn reacts(filters: &FilterTable) -> bool {
        filters.rules().iter().any(|r| {
            !r.disabled
                && matches!(
                    prop(r, "action"),
                    Some("add-src-to-address-list" | "add-dst-to-address-list")
                )
        })
    }

    /// Walks one packet through the chain it takes.
    pub(crate) fn packet(&mut self, p: &FlowPacket, router: Router<'_>) {
        let chain = if router.addresses.iter().any(|a| a.address == p.dst) {
            "input"
        } else {
            "forward"
        };
        let interface = router
            .addresses
            .iter()
            .find(|a| {
                ipnet::IpNet::new(a.address, a.prefix).is_ok_and(|n| n.trunc().contains(&p.src))
            })
            .map_or(router.wan_interface, |a| a.interface.as_str());
        for rule in router.filters.rules() {
            if rule.disabled || prop(rule, "chain") != Some(chain) {
                continue;
            }
            let others = rule
                .props
                .iter()
                .filter(|(n, _)| !NOT_MATCHERS.contains(&n.as_str()))
                .map(|(n, v)| {
                    let (not, v) = negatable(v);
                    let hit = match n.as_str() {
                        "protocol" => protocol_is(p.protocol, v),
                        "src-address" => address_in(p.src, v),
                        "dst-address" => address_in(p.dst, v),
                        "src-port" => port_in(p.src_port, v),
                        "dst-port" => port_in(p.dst_port, v),
                        "in-interface" => Some(v == interface),
                        "in-interface-list" => match v {
                            "WAN" => Some(interface == router.wan_interface),
                            "LAN" => Some(interface != router.wan_interface),
                            "all" => Some(true),
                            "none" => Some(false),
                            _ => None,
                        },
                        "connection-state" => Some(v.split(',').any(|s| s.trim() == "new")),
                        "src-address-list" => Some(router.lists.has(v, &p.src.to_string(), p.at)),
                        "dst-address-list" => Some(router.lists.has(v, &p.dst.to_string(), p.at)),
                        _ => None,
                    };
                    hit.map(|h| h != not)
                })
                .collect::<Option<Vec<bool>>>();
            // A matcher this emulation does not know: the rule never fires here.
            let Some(others) = others else { continue };
            if !others.iter().all(|&b| b) {
                continue;
            }
            if let Some(v) = prop(rule, "psd") {
                let (not, v) = negatable(v);
                let Some(psd) = Psd::parse(v) else { continue };
                if self.psd_hit(rule.id, &psd, p) == not {
                    continue;
                }
            }
            match prop(rule, "action").unwrap_or("accept") {
                action @ ("add-src-to-address-list" | "add-dst-to-address-list") => {
                    let Some(list) = prop(rule, "address-list").filter(|l| !l.is_empty()) else {
                        continue;
                    };
                    let timeout =
                        list_timeout(prop(rule, "address-list-timeout").unwrap_or("")).flatten();
                    let who = if action == "add-src-to-address-list" {
                        p.src
                    } else {
                        p.dst
                    };
                    // An address already listed stays as it is.
                    let added =
                        router
                            .lists
                            .add(list, &who.to_string(), timeout, None, false, p.at);
                    if added.is_ok() {
                        tracing::debug!(rule = rule.id, list, address = %who, "firewall rule added to list");
                    }
                }
                "accept" | "drop" | "reject" | "tarpit" | "return" => return,
                _ => {}
            }
        }
    }

    /// The `psd` matcher for one packet: distinct destination ports from one source, each
    /// within the delay of the previous new port, add up their weights; the packet matches
    /// once the sum reaches the threshold. A port already seen in the sequence adds nothing
    /// and does not match; a gap longer than the delay starts a new sequence.
    fn psd_hit(&mut self, rule: u64, psd: &Psd, p: &FlowPacket) -> bool {
        let (Some(port), SimProtocol::Tcp | SimProtocol::Udp) = (p.dst_port, p.protocol) else {
            return false;
        };
        let sources = self.psd.entry(rule).or_default();
        if !sources.contains_key(&p.src) && sources.len() >= PSD_MAX_TRACKED_SOURCES {
            if let Some(oldest) = sources
                .iter()
                .min_by_key(|(_, t)| t.last)
                .map(|(ip, _)| *ip)
            {
                sources.remove(&oldest);
            }
        }
        let fresh = || Track {
            last: p.at,
            weight: psd.weight(port),
            ports: HashSet::from([port]),
        };
        match sources.get_mut(&p.src) {
            Some(t) if p.at.saturating_sub(t.last) <= psd.delay => {
                if t.ports.contains(&port) {
                    return false;
                }
                t.last = p.at;
                if t.weight < psd.weight_threshold {
                    t.weight = t.weight.saturating_add(psd.weight(port));
                    t.ports.insert(port);
                }
                t.weight >= psd.weight_threshold
            }
            _ => {
                let t = fresh();
                let hit = t.weight >= psd.weight_threshold;
                sources.insert(p.src, t);
                hit
            }
        }
    }
}

fn prop<'a>(rule: &'a FilterRule, name: &str) -> Option<&'a str> {
    rule.props
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(at: u64, port: u16) -> FlowPacket {
        FlowPacket {
            at: Duration::from_secs(at),
            protocol: SimProtocol::Tcp,
            src: "203.0.113.66".parse().unwrap(),
            src_port: Some(61_000),
            dst: "198.51.100.2".parse().unwrap(),
            dst_port: Some(port),
        }
    }

    #[test]
    fn psd_weights_ports_within_the_delay() {
        let psd = Psd::parse("21,3s,3,1").unwrap();
        let mut fw = Firewall::default();
        // Six privileged ports a second apart weigh 18: no scan yet; the seventh makes 21.
        for (i, port) in [21, 22, 23, 25, 53, 80].iter().enumerate() {
            assert!(
                !fw.psd_hit(1, &psd, &packet(i as u64, *port)),
                "port {port}"
            );
        }
        assert!(
            !fw.psd_hit(1, &psd, &packet(6, 80)),
            "a repeated port adds nothing"
        );
        assert!(fw.psd_hit(1, &psd, &packet(7, 110)));
        assert!(
            fw.psd_hit(1, &psd, &packet(8, 111)),
            "a scan goes on matching"
        );
        // A gap longer than the delay starts over.
        assert!(!fw.psd_hit(1, &psd, &packet(20, 443)));
        // High ports weigh 1: 21 of them, 3 s apart at most.
        let mut fw = Firewall::default();
        let hits: Vec<bool> = (0..21)
            .map(|i| fw.psd_hit(1, &psd, &packet(i * 3, 2000 + i as u16)))
            .collect();
        assert_eq!(hits.iter().position(|&h| h), Some(20));
        let mut fw = Firewall::default();
        let hits: Vec<bool> = (0..30)
            .map(|i| fw.psd_hit(1, &psd, &packet(i * 4, 2000 + i as u16)))
            .collect();
        assert!(
            hits.iter().all(|&h| !h),
            "4 s apart is too slow for a 3 s delay"
        );
    }

    #[test]
    fn psd_tracks_a_bounded_number_of_sources() {
        let psd = Psd::parse("100,1m,1,1").unwrap();
        let mut fw = Firewall::default();
        for i in 0..=PSD_MAX_TRACKED_SOURCES as u32 {
            let mut p = packet(u64::from(i), 1000);
            p.src = IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + i));
            fw.psd_hit(7, &psd, &p);
        }
        let tracked = &fw.psd[&7];
        assert_eq!(tracked.len(), PSD_MAX_TRACKED_SOURCES);
        assert!(
            !tracked.contains_key(&IpAddr::from([10, 0, 0, 0])),
            "the oldest went"
        );
    }

    #[test]
    fn matcher_values() {
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(address_in(ip, "10.0.0.0/24"), Some(true));
        assert_eq!(address_in(ip, "10.0.0.6-10.0.0.9"), Some(false));
        assert_eq!(address_in(ip, "10.0.0.5"), Some(true));
        assert_eq!(address_in(ip, "ten"), None);
        assert_eq!(port_in(Some(22), "21-23,80"), Some(true));
        assert_eq!(port_in(None, "22"), Some(false));
        assert_eq!(port_in(Some(22), "ssh"), None);
        assert_eq!(negatable("!tcp"), (true, "tcp"));
    }
}
