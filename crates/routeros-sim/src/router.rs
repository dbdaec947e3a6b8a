//! The router's state behind one lock: connection table, address-lists, filter rules, its own
//! addresses, and the read-only menus (`/ip/address`, `/ipv6/address`, `/system/resource`,
//! `/ip/route`, `/ipv6/route`, `/ip/dns`, `/system/identity`).
//!
//! Every method is synchronous and short; callers hold the lock only for a call (prints of big
//! tables go chunk by chunk). It deliberately knows nothing about sessions or the wire.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::address_list::{AddressLists, RawListChange};
use crate::config::RouterAddress;
use crate::connection::{format_id, write_timeout};
use crate::conntable::ConnTable;
use crate::filter::FilterTable;
use crate::firewall::{self, Firewall};
use crate::generate::GenerateSpec;
use crate::kinds::Family;
use crate::scenario::{Flow, ListSeed};

/// Everything a client can read or change.
#[derive(Debug)]
pub(crate) struct Router {
    pub(crate) conns: ConnTable,
    lists_v4: AddressLists,
    lists_v6: AddressLists,
    filter_v4: FilterTable,
    filter_v6: FilterTable,
    pub(crate) addresses: Vec<RouterAddress>,
    version: String,
    ipv4_gateway: Option<Ipv4Addr>,
    ipv6_gateway: Ipv6Addr,
    dns_servers: Vec<IpAddr>,
    dynamic_dns_servers: Vec<IpAddr>,
    firewall_v4: Firewall,
    firewall_v6: Firewall,
    /// How far scenario traffic has been through the firewall (see `ConnTable::first_packets`).
    packets_cursor: usize,
    /// `total-entries` as an external source says it is, instead of the rows served.
    reported_total: Option<u64>,
}

/// Scenario packets taken through the firewall per step of `housekeep`.
const PACKET_BATCH: usize = 4096;

/// The router's own configuration, as the server worked it out from `SimConfig` and the
/// scenario.
#[derive(Debug, Clone)]
pub(crate) struct RouterSetup {
    pub(crate) addresses: Vec<RouterAddress>,
    pub(crate) version: String,
    /// `None`: `.1` of the WAN address's /24.
    pub(crate) ipv4_gateway: Option<Ipv4Addr>,
    pub(crate) ipv6_gateway: Ipv6Addr,
    pub(crate) dns_servers: Vec<IpAddr>,
    pub(crate) dynamic_dns_servers: Vec<IpAddr>,
}

/// The router's WAN address: the first public IPv4 address, else the first IPv4 one.
fn wan_address(addresses: &[RouterAddress]) -> Option<IpAddr> {
    let v4 = || addresses.iter().filter(|a| a.address.is_ipv4());
    v4().find(|a| match a.address {
        IpAddr::V4(ip) => !ip.is_private() && !ip.is_loopback() && !ip.is_link_local(),
        IpAddr::V6(_) => false,
    })
    .or_else(|| v4().next())
    .map(|a| a.address)
}

impl Router {
    pub(crate) fn new(
        setup: RouterSetup,
        flows: Vec<Flow>,
        generate: Option<GenerateSpec>,
        seeds: &[ListSeed],
    ) -> Result<Self, String> {
        let wan = wan_address(&setup.addresses);
        let mut r = Router {
            conns: ConnTable::new(flows, generate, wan),
            lists_v4: AddressLists::new(Family::V4),
            lists_v6: AddressLists::new(Family::V6),
            filter_v4: FilterTable::new(Family::V4),
            filter_v6: FilterTable::new(Family::V6),
            addresses: setup.addresses,
            version: setup.version,
            ipv4_gateway: setup.ipv4_gateway,
            ipv6_gateway: setup.ipv6_gateway,
            dns_servers: setup.dns_servers,
            dynamic_dns_servers: setup.dynamic_dns_servers,
            firewall_v4: Firewall::default(),
            firewall_v6: Firewall::default(),
            packets_cursor: 0,
            reported_total: None,
        };
        for s in seeds {
            let family = if s.address.contains(':') {
                Family::V6
            } else {
                Family::V4
            };
            r.lists(family)
                .add(
                    &s.list,
                    &s.address,
                    s.timeout,
                    s.comment.clone(),
                    false,
                    Duration::ZERO,
                )
                .map_err(|e| format!("allowlist entry {:?}: {e:?}", s.address))?;
        }
        Ok(r)
    }

    /// Reports `total-entries` as `n` (`None`: the rows in the table).
    pub(crate) fn set_reported_total(&mut self, n: Option<u64>) {
        self.reported_total = n;
    }

    pub(crate) fn lists(&mut self, family: Family) -> &mut AddressLists {
        match family {
            Family::V4 => &mut self.lists_v4,
            Family::V6 => &mut self.lists_v6,
        }
    }

    pub(crate) fn filters(&mut self, family: Family) -> &mut FilterTable {
        match family {
            Family::V4 => &mut self.filter_v4,
            Family::V6 => &mut self.filter_v6,
        }
    }

    pub(crate) fn filters_ref(&self, family: Family) -> &FilterTable {
        match family {
            Family::V4 => &self.filter_v4,
            Family::V6 => &self.filter_v6,
        }
    }

    /// Starts or stops recording address-list changes in both families.
    pub(crate) fn record_list_changes(&mut self, on: bool) {
        self.lists_v4.record_changes(on);
        self.lists_v6.record_changes(on);
    }

    /// The address-list changes recorded since the last call, per family.
    pub(crate) fn take_list_changes(&mut self) -> Vec<(Family, RawListChange)> {
        let v4 = self
            .lists_v4
            .take_changes()
            .into_iter()
            .map(|c| (Family::V4, c));
        let v6 = self
            .lists_v6
            .take_changes()
            .into_iter()
            .map(|c| (Family::V6, c));
        v4.chain(v6).collect()
    }

    /// Catches up with time: the scenario connections started since the last call go through
    /// the firewall in start order (rules such as `psd` with `add-src-to-address-list` react
    /// at each packet's sim time), then expired list entries leave (reported as changes).
    /// Cheap when there is nothing to do: it runs at every lock.
    pub(crate) fn housekeep(&mut self, now: Duration) {
        let reacts = Firewall::reacts(&self.filter_v4) || Firewall::reacts(&self.filter_v6);
        if !reacts {
            self.conns.skip_packets(&mut self.packets_cursor, now);
        } else {
            let wan_interface = self.wan_interface();
            let mut batch = Vec::new();
            loop {
                batch.clear();
                self.conns
                    .first_packets(&mut self.packets_cursor, now, PACKET_BATCH, &mut batch);
                if batch.is_empty() {
                    break;
                }
                for p in &batch {
                    let (firewall, filters, lists) = match Family::of(p.src) {
                        Family::V4 => (&mut self.firewall_v4, &self.filter_v4, &mut self.lists_v4),
                        Family::V6 => (&mut self.firewall_v6, &self.filter_v6, &mut self.lists_v6),
                    };
                    firewall.packet(
                        p,
                        firewall::Router {
                            filters,
                            lists,
                            addresses: &self.addresses,
                            wan_interface: &wan_interface,
                        },
                    );
                }
            }
        }
        self.lists_v4.purge(now);
        self.lists_v6.purge(now);
    }

    /// A reboot: connections flushed, dynamic list entries gone, configuration kept.
    pub(crate) fn reboot(&mut self, now: Duration) {
        self.housekeep(now);
        self.firewall_v4.reboot();
        self.firewall_v6.reboot();
        self.conns.reboot(now);
        self.reported_total = None;
        self.lists_v4.reboot();
        self.lists_v6.reboot();
    }

    /// `/ip/address` or `/ipv6/address` rows.
    pub(crate) fn address_rows(&self, family: Family) -> Vec<Vec<(String, String)>> {
        self.addresses
            .iter()
            .enumerate()
            .filter(|(_, a)| Family::of(a.address) == family)
            .map(|(i, a)| {
                let mut row = vec![
                    (".id".to_owned(), format_id(i as u64 + 1)),
                    ("address".to_owned(), format!("{}/{}", a.address, a.prefix)),
                ];
                match a.address {
                    IpAddr::V4(ip) => {
                        let net = ipnet::Ipv4Net::new(ip, a.prefix.min(32))
                            .map(|n| n.network().to_string())
                            .unwrap_or_else(|_| ip.to_string());
                        row.push(("network".into(), net));
                    }
                    IpAddr::V6(_) => {
                        row.push(("from-pool".into(), String::new()));
                        row.push(("advertise".into(), "true".into()));
                        row.push(("eui-64".into(), "false".into()));
                        row.push(("no-dad".into(), "false".into()));
                        row.push(("link-local".into(), "false".into()));
                    }
                }
                row.push(("interface".into(), a.interface.clone()));
                row.push(("actual-interface".into(), a.interface.clone()));
                row.push(("invalid".into(), "false".into()));
                row.push(("dynamic".into(), a.dynamic.to_string()));
                row.push(("disabled".into(), "false".into()));
                row
            })
            .collect()
    }

    /// `/system/resource` (one row, no `.id`).
    pub(crate) fn resource_rows(&self, now: Duration, commands: u64) -> Vec<Vec<(String, String)>> {
        let mut uptime = String::new();
        write_timeout(&mut uptime, now.saturating_sub(self.conns.boot_at()));
        let pairs: Vec<(&str, String)> = vec![
            ("uptime", uptime),
            ("version", self.version.clone()),
            ("build-time", "2025-06-30 10:00:00".into()),
            ("factory-software", "7.1".into()),
            ("free-memory", "812646400".into()),
            ("total-memory", "1073741824".into()),
            ("cpu", "QEMU".into()),
            ("cpu-count", "2".into()),
            ("cpu-frequency", "2400".into()),
            ("cpu-load", (2 + commands % 7).to_string()),
            ("free-hdd-space", "93249536".into()),
            ("total-hdd-space", "134217728".into()),
            ("write-sect-since-reboot", "1530".into()),
            ("write-sect-total", "1530".into()),
            ("architecture-name", "x86_64".into()),
            ("board-name", "CHR".into()),
            ("platform", "MikroTik".into()),
        ];
        vec![pairs.into_iter().map(|(n, v)| (n.to_owned(), v)).collect()]
    }

    /// `/ip/firewall/connection/tracking` (one row, no `.id`): the settings of a default
    /// RouterOS 7 and the read-only `total-entries` (IPv4 and IPv6 rows together, as the
    /// kernel's one conntrack table counts them) and `max-entries`.
    pub(crate) fn tracking_rows(
        &self,
        now: Duration,
        hide_totals: bool,
    ) -> Vec<Vec<(String, String)>> {
        let total = self
            .reported_total
            .unwrap_or_else(|| self.conns.live_count(now));
        let mut pairs: Vec<(&str, String)> = vec![
            ("enabled", "auto".into()),
            ("active-ipv4", "yes".into()),
            ("active-ipv6", "yes".into()),
            ("tcp-syn-sent-timeout", "5s".into()),
            ("tcp-syn-received-timeout", "5s".into()),
            ("tcp-established-timeout", "1d".into()),
            ("tcp-fin-wait-timeout", "10s".into()),
            ("tcp-close-wait-timeout", "10s".into()),
            ("tcp-last-ack-timeout", "10s".into()),
            ("tcp-time-wait-timeout", "10s".into()),
            ("tcp-close-timeout", "10s".into()),
            ("tcp-max-retrans-timeout", "5m".into()),
            ("tcp-unacked-timeout", "5m".into()),
            ("loose-tcp-tracking", "true".into()),
            ("udp-timeout", "10s".into()),
            ("udp-stream-timeout", "3m".into()),
            ("icmp-timeout", "10s".into()),
            ("generic-timeout", "10m".into()),
        ];
        if !hide_totals {
            pairs.push(("max-entries", total.max(1_048_576).to_string()));
            pairs.push(("total-entries", total.to_string()));
        }
        vec![pairs.into_iter().map(|(n, v)| (n.to_owned(), v)).collect()]
    }

    /// The interface of the WAN address (where the default routes point).
    fn wan_interface(&self) -> String {
        let wan = wan_address(&self.addresses);
        self.addresses
            .iter()
            .find(|a| Some(a.address) == wan)
            .map_or_else(|| "ether1".to_owned(), |a| a.interface.clone())
    }

    /// `/ip/route` or `/ipv6/route` rows: a static default route via the gateway, then the
    /// connected networks of the router's addresses (dynamic, `connect=true`).
    pub(crate) fn route_rows(&self, family: Family) -> Vec<Vec<(String, String)>> {
        let mut rows = Vec::new();
        let mut id = 1u64;
        let default_route = |dst: &str, gateway: String, id: u64| {
            vec![
                (".id".to_owned(), format_id(id)),
                ("dst-address".into(), dst.to_owned()),
                ("gateway".into(), gateway),
                ("distance".into(), "1".into()),
                ("active".into(), "true".into()),
                ("static".into(), "true".into()),
                ("dynamic".into(), "false".into()),
                ("disabled".into(), "false".into()),
            ]
        };
        match family {
            Family::V4 => {
                let gw = self.ipv4_gateway.or(match wan_address(&self.addresses) {
                    Some(IpAddr::V4(wan)) => Some(Ipv4Addr::from(u32::from(wan) & 0xFFFF_FF00 | 1)),
                    _ => None,
                });
                if let Some(gw) = gw {
                    rows.push(default_route("0.0.0.0/0", gw.to_string(), id));
                    id += 1;
                }
            }
            Family::V6 => {
                let gw = self.ipv6_gateway;
                // A link-local gateway only means something with its interface.
                let shown = if (gw.segments()[0] & 0xffc0) == 0xfe80 {
                    format!("{gw}%{}", self.wan_interface())
                } else {
                    gw.to_string()
                };
                rows.push(default_route("::/0", shown, id));
                id += 1;
            }
        }
        for a in &self.addresses {
            let net = match (family, a.address) {
                (Family::V4, IpAddr::V4(ip)) => ipnet::Ipv4Net::new(ip, a.prefix.min(32))
                    .map(|n| n.trunc().to_string())
                    .ok(),
                (Family::V6, IpAddr::V6(ip)) => ipnet::Ipv6Net::new(ip, a.prefix.min(128))
                    .map(|n| n.trunc().to_string())
                    .ok(),
                _ => None,
            };
            let Some(net) = net else { continue };
            rows.push(vec![
                (".id".into(), format_id(id)),
                ("dst-address".into(), net),
                ("gateway".into(), a.interface.clone()),
                ("distance".into(), "0".into()),
                ("active".into(), "true".into()),
                ("connect".into(), "true".into()),
                ("dynamic".into(), "true".into()),
                ("disabled".into(), "false".into()),
            ]);
            id += 1;
        }
        rows
    }

    /// `/ip/dns` (one row, no `.id`).
    pub(crate) fn dns_rows(&self) -> Vec<Vec<(String, String)>> {
        vec![vec![
            ("servers".into(), join(&self.dns_servers)),
            ("dynamic-servers".into(), join(&self.dynamic_dns_servers)),
            ("allow-remote-requests".into(), "true".into()),
            ("max-udp-packet-size".into(), "4096".into()),
            ("cache-size".into(), "2048KiB".into()),
            ("cache-max-ttl".into(), "1w".into()),
            ("cache-used".into(), "37KiB".into()),
        ]]
    }

    /// `/system/identity` (one row, no `.id`).
    pub(crate) fn identity_rows(&self) -> Vec<Vec<(String, String)>> {
        vec![vec![("name".into(), "MikroTik".into())]]
    }
}

/// `a,b,c` (RouterOS's list form).
fn join(addrs: &[IpAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
