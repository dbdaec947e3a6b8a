//! Checked domain types built from router rows and configuration strings: [`Connection`],
//! [`ListEntry`], [`ListAddress`] and the address set [`AddrSet`].
//!
//! Parse, then trust: a reply row becomes a typed value here, once, at the edge, and the rest of
//! rosguard never looks at RouterOS strings again. Both address formats of the connection table
//! (`src-address=1.2.3.4:80`, and `src-address=1.2.3.4` + `src-port=80`) are accepted per row.
//!
//! This module deliberately does not decide anything (that is [`detect`](mod@crate::detect) and
//! [`policy`](crate::policy)) and does no IO: it reads [`Reply`] values someone else decoded.
//! DNS names in address lists are kept as text and never resolved.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use routeros_proto::{parse_duration, Reply};
use serde::{Deserialize, Serialize};

use crate::error::{ParseError, RowError};

/// The address family of a table, an address or an address list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4: `/ip/...` menus.
    V4,
    /// IPv6: `/ipv6/...` menus.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// `/ip/firewall/connection` or `/ipv6/firewall/connection`.
    pub fn connection_menu(self) -> &'static str {
        match self {
            Family::V4 => "/ip/firewall/connection",
            Family::V6 => "/ipv6/firewall/connection",
        }
    }

    /// `/ip/firewall/address-list` or `/ipv6/firewall/address-list`.
    pub fn address_list_menu(self) -> &'static str {
        match self {
            Family::V4 => "/ip/firewall/address-list",
            Family::V6 => "/ipv6/firewall/address-list",
        }
    }

    /// `ipv4` or `ipv6`, for log fields.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An IP protocol, as RouterOS names it.
///
/// Parsing normalizes: `tcp` and `6` both give [`Protocol::Tcp`], and a number or name of a
/// protocol without its own variant gives [`Protocol::Other`]. Build values from numbers with
/// [`Protocol::from_number`] so that `Other` never holds the number of a named variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMP (1).
    Icmp,
    /// ICMPv6 (58); RouterOS says `icmpv6`, `ipv6-icmp` is accepted too.
    Icmpv6,
    /// GRE (47).
    Gre,
    /// Any other protocol number.
    Other(u8),
}

/// RouterOS protocol names and their numbers (the names its firewall menus accept).
const PROTOCOL_NAMES: &[(&str, u8)] = &[
    ("icmp", 1),
    ("igmp", 2),
    ("ggp", 3),
    ("ip-encap", 4),
    ("st", 5),
    ("tcp", 6),
    ("egp", 8),
    ("pup", 12),
    ("udp", 17),
    ("hmp", 20),
    ("xns-idp", 22),
    ("rdp", 27),
    ("iso-tp4", 29),
    ("dccp", 33),
    ("xtp", 36),
    ("ddp", 37),
    ("idpr-cmtp", 38),
    ("ipv6-encap", 41),
    ("ipv6-route", 43),
    ("ipv6-frag", 44),
    ("rsvp", 46),
    ("gre", 47),
    ("ipsec-esp", 50),
    ("ipsec-ah", 51),
    ("icmpv6", 58),
    ("ipv6-nonxt", 59),
    ("ipv6-opts", 60),
    ("rspf", 73),
    ("vmtp", 81),
    ("ospf", 89),
    ("ipip", 94),
    ("etherip", 97),
    ("encap", 98),
    ("pim", 103),
    ("vrrp", 112),
    ("l2tp", 115),
    ("sctp", 132),
    ("udp-lite", 136),
];

impl Protocol {
    /// The protocol with IANA number `n`.
    pub fn from_number(n: u8) -> Self {
        match n {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            1 => Protocol::Icmp,
            58 => Protocol::Icmpv6,
            47 => Protocol::Gre,
            n => Protocol::Other(n),
        }
    }

    /// The IANA protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Icmp => 1,
            Protocol::Icmpv6 => 58,
            Protocol::Gre => 47,
            Protocol::Other(n) => n,
        }
    }

    /// True for protocols whose connections carry ports (tcp, udp, dccp, sctp, udp-lite).
    pub fn has_ports(self) -> bool {
        matches!(self.number(), 6 | 17 | 33 | 132 | 136)
    }

    /// Parses a protocol as it appears on the wire (bytes), without allocating.
    pub fn from_wire(value: &[u8]) -> Option<Self> {
        // The common cases first: this runs once per connection row.
        match value {
            b"tcp" => return Some(Protocol::Tcp),
            b"udp" => return Some(Protocol::Udp),
            b"icmp" => return Some(Protocol::Icmp),
            b"gre" => return Some(Protocol::Gre),
            b"icmpv6" | b"ipv6-icmp" => return Some(Protocol::Icmpv6),
            _ => {}
        }
        if !value.is_empty() && value.len() <= 3 && value.iter().all(u8::is_ascii_digit) {
            let n = value
                .iter()
                .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'));
            return u8::try_from(n).ok().map(Self::from_number);
        }
        PROTOCOL_NAMES
            .iter()
            .find(|(name, _)| name.as_bytes().eq_ignore_ascii_case(value))
            .map(|&(_, n)| Self::from_number(n))
    }

    /// The RouterOS name (`tcp`, `ipsec-esp`, ...), or `None` for an unnamed number.
    pub fn name(self) -> Option<&'static str> {
        let n = self.number();
        PROTOCOL_NAMES
            .iter()
            .find(|&&(_, num)| num == n)
            .map(|&(name, _)| name)
    }
}

impl FromStr for Protocol {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_wire(s.trim().to_ascii_lowercase().as_bytes()).ok_or_else(|| {
            ParseError::new(
                "protocol",
                s,
                "expected a RouterOS protocol name (tcp, udp, icmp, gre, ...) or a number 0-255",
            )
        })
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "{}", self.number()),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One end of a connection: an address and, for port-based protocols, a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Endpoint {
    /// The IP address.
    pub addr: IpAddr,
    /// The port; `None` for icmp, gre and other port-less protocols.
    pub port: Option<u16>,
}

impl fmt::Display for Endpoint {
    /// `1.2.3.4:443`, `[2001:db8::1]:443`, or the bare address without a port.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.addr, self.port) {
            (IpAddr::V6(a), Some(p)) => write!(f, "[{a}]:{p}"),
            (a, Some(p)) => write!(f, "{a}:{p}"),
            (a, None) => write!(f, "{a}"),
        }
    }
}

/// One row of `/ip/firewall/connection` or `/ipv6/firewall/connection`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Connection {
    /// The row's `.id` (`*1A2B`), used to remove it.
    pub id: String,
    /// The table the row came from (not inferred from the addresses).
    pub family: Family,
    /// The IP protocol.
    pub protocol: Protocol,
    /// The originating side.
    pub src: Endpoint,
    /// The destination (service) side.
    pub dst: Endpoint,
    /// Packets from `src` to `dst`; `None` when the row did not carry the counter.
    pub orig_packets: Option<u64>,
    /// Packets from `dst` back to `src`.
    pub repl_packets: Option<u64>,
    /// Bytes from `src` to `dst`.
    pub orig_bytes: Option<u64>,
    /// Bytes from `dst` back to `src`.
    pub repl_bytes: Option<u64>,
    /// `tcp-state` (`syn-sent`, `established`, ...) for TCP rows.
    pub tcp_state: Option<String>,
}

impl Connection {
    /// The properties [`Connection::from_reply`] reads; send them as `.proplist`.
    pub const PROPLIST: &'static [&'static str] = &[
        ".id",
        "protocol",
        "src-address",
        "dst-address",
        "src-port",
        "dst-port",
        "orig-packets",
        "repl-packets",
        "orig-bytes",
        "repl-bytes",
        "tcp-state",
    ];

    /// Builds a connection from one `!re` row of the `family` connection table.
    ///
    /// Reads the attributes once. Accepts the port attached to the address
    /// (`192.168.2.248:32815`, `[2001:db8::1]:443`) and separate `src-port`/`dst-port`
    /// properties (which win when both are present). Missing counters are `None`; a missing or
    /// garbled `.id`, `protocol` or address, or a garbled port or counter, is an error.
    pub fn from_reply(reply: &Reply, family: Family) -> Result<Self, RowError> {
        let mut id = None;
        let mut protocol = None;
        let mut src = None;
        let mut dst = None;
        let mut src_port = None;
        let mut dst_port = None;
        let mut orig_packets = None;
        let mut repl_packets = None;
        let mut orig_bytes = None;
        let mut repl_bytes = None;
        let mut tcp_state = None;
        for attr in reply.attrs() {
            let v = attr.value;
            match attr.name {
                ".id" => id = Some(v),
                "protocol" => protocol = Some(v),
                "src-address" => src = Some(v),
                "dst-address" => dst = Some(v),
                "src-port" => src_port = Some(v),
                "dst-port" => dst_port = Some(v),
                "orig-packets" => orig_packets = Some(counter("orig-packets", v)?),
                "repl-packets" => repl_packets = Some(counter("repl-packets", v)?),
                "orig-bytes" => orig_bytes = Some(counter("orig-bytes", v)?),
                "repl-bytes" => repl_bytes = Some(counter("repl-bytes", v)?),
                "tcp-state" => tcp_state = Some(v),
                _ => {}
            }
        }
        let id = check_id(id.ok_or(RowError::Missing { field: ".id" })?)?;
        let protocol_raw = protocol.ok_or(RowError::Missing { field: "protocol" })?;
        let protocol = Protocol::from_wire(protocol_raw)
            .ok_or_else(|| RowError::invalid("protocol", protocol_raw))?;
        let src = endpoint("src-address", src, "src-port", src_port)?;
        let dst = endpoint("dst-address", dst, "dst-port", dst_port)?;
        let tcp_state = match tcp_state {
            Some(v) if !v.is_empty() => Some(
                std::str::from_utf8(v)
                    .map_err(|_| RowError::invalid("tcp-state", v))?
                    .to_owned(),
            ),
            _ => None,
        };
        Ok(Connection {
            id,
            family,
            protocol,
            src,
            dst,
            orig_packets,
            repl_packets,
            orig_bytes,
            repl_bytes,
            tcp_state,
        })
    }
}

/// A RouterOS `.id`: `*` and up to 16 hex digits. Anything else (a comma in particular, which
/// `remove` would read as a list) is refused.
fn check_id(v: &[u8]) -> Result<String, RowError> {
    match v.split_first() {
        Some((b'*', hex))
            if (1..=16).contains(&hex.len()) && hex.iter().all(u8::is_ascii_hexdigit) =>
        {
            // All ASCII, checked above.
            Ok(String::from_utf8_lossy(v).into_owned())
        }
        _ => Err(RowError::invalid(".id", v)),
    }
}

fn counter(field: &'static str, v: &[u8]) -> Result<u64, RowError> {
    parse_u64(v).ok_or_else(|| RowError::invalid(field, v))
}

/// Decimal digits only, no sign, no separators, no overflow.
fn parse_u64(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in v {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d))?;
    }
    Some(n)
}

fn parse_port(v: &[u8]) -> Option<u16> {
    if v.len() > 5 {
        return None;
    }
    u16::try_from(parse_u64(v)?).ok()
}

fn endpoint(
    addr_field: &'static str,
    addr: Option<&[u8]>,
    port_field: &'static str,
    port: Option<&[u8]>,
) -> Result<Endpoint, RowError> {
    let raw = addr.ok_or(RowError::Missing { field: addr_field })?;
    let (addr, attached) =
        parse_host_port(raw).ok_or_else(|| RowError::invalid(addr_field, raw))?;
    let port = match port {
        // An empty separate port (port-less protocols) means "no port".
        Some(p) if !p.is_empty() => {
            Some(parse_port(p).ok_or_else(|| RowError::invalid(port_field, p))?)
        }
        _ => attached,
    };
    Ok(Endpoint { addr, port })
}

impl FromStr for Endpoint {
    type Err = ParseError;

    /// The [`Display`](fmt::Display) form back: `1.2.3.4:80`, `[2001:db8::1]:80` or a bare address.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_host_port(s.trim().as_bytes())
            .map(|(addr, port)| Endpoint { addr, port })
            .ok_or_else(|| {
                ParseError::new(
                    "endpoint",
                    s,
                    "expected 1.2.3.4:80, [2001:db8::1]:80 or an address",
                )
            })
    }
}

/// `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:80`.
fn parse_host_port(v: &[u8]) -> Option<(IpAddr, Option<u16>)> {
    if let Some(rest) = v.strip_prefix(b"[") {
        let close = rest.iter().position(|&b| b == b']')?;
        let ip: Ipv6Addr = std::str::from_utf8(&rest[..close]).ok()?.parse().ok()?;
        let port = match &rest[close + 1..] {
            [] => None,
            [b':', p @ ..] => Some(parse_port(p)?),
            _ => return None,
        };
        return Some((IpAddr::V6(ip), port));
    }
    let mut colons = v.iter().enumerate().filter(|(_, &b)| b == b':');
    match (colons.next(), colons.next()) {
        (None, _) => {
            let ip: Ipv4Addr = std::str::from_utf8(v).ok()?.parse().ok()?;
            Some((IpAddr::V4(ip), None))
        }
        (Some((at, _)), None) => {
            let ip: Ipv4Addr = std::str::from_utf8(&v[..at]).ok()?.parse().ok()?;
            Some((IpAddr::V4(ip), Some(parse_port(&v[at + 1..])?)))
        }
        _ => {
            let ip: Ipv6Addr = std::str::from_utf8(v).ok()?.parse().ok()?;
            Some((IpAddr::V6(ip), None))
        }
    }
}

/// The `address` of an address-list entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListAddress {
    /// A single address (as a host network, `/32` or `/128`) or a CIDR network.
    Net(IpNet),
    /// An inclusive range `first-last` of one family, `first <= last`.
    Range(IpAddr, IpAddr),
    /// A DNS name; RouterOS resolves it, rosguard never matches it.
    Dns(String),
}

impl FromStr for ListAddress {
    type Err = ParseError;

    /// Accepts `1.2.3.4`, `10.0.0.0/8`, `2001:db8::/32`, `10.0.0.1-10.0.0.9` and DNS names.
    /// A reversed range is put in order; a range across families is an error.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Ok(ip) = t.parse::<IpAddr>() {
            return Ok(ListAddress::Net(IpNet::from(ip)));
        }
        if t.contains('/') {
            return t.parse::<IpNet>().map(ListAddress::Net).map_err(|_| {
                ParseError::new("address", s, "expected a CIDR network like 10.0.0.0/8")
            });
        }
        if let Some((a, b)) = t.split_once('-') {
            if let (Ok(a), Ok(b)) = (a.trim().parse::<IpAddr>(), b.trim().parse::<IpAddr>()) {
                if Family::of(a) != Family::of(b) {
                    return Err(ParseError::new(
                        "address range",
                        s,
                        "both ends must be of the same family",
                    ));
                }
                return Ok(ListAddress::Range(a.min(b), a.max(b)));
            }
        }
        let hostname = !t.is_empty()
            && t.len() <= 253
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            && t.bytes().any(|b| b.is_ascii_alphabetic());
        if hostname {
            Ok(ListAddress::Dns(t.to_owned()))
        } else {
            Err(ParseError::new(
                "address",
                s,
                "expected an IP address, a CIDR network, a range a-b or a DNS name",
            ))
        }
    }
}

impl fmt::Display for ListAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListAddress::Net(n) if n.prefix_len() == n.max_prefix_len() => {
                write!(f, "{}", n.addr())
            }
            ListAddress::Net(n) => write!(f, "{n}"),
            ListAddress::Range(a, b) => write!(f, "{a}-{b}"),
            ListAddress::Dns(d) => f.write_str(d),
        }
    }
}

impl Serialize for ListAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ListAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One row of `/ip/firewall/address-list` or `/ipv6/firewall/address-list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    /// The row's `.id`.
    pub id: String,
    /// The list name.
    pub list: String,
    /// The address, network, range or DNS name.
    pub address: ListAddress,
    /// The remaining timeout of a dynamic entry.
    pub timeout: Option<Duration>,
    /// Entries with a timeout are dynamic (RAM only, gone after a reboot).
    pub dynamic: bool,
    /// A disabled entry.
    pub disabled: bool,
    /// The entry's comment.
    pub comment: Option<String>,
}

impl ListEntry {
    /// The properties [`ListEntry::from_reply`] reads; send them as `.proplist`.
    pub const PROPLIST: &'static [&'static str] = &[
        ".id", "list", "address", "timeout", "dynamic", "disabled", "comment",
    ];

    /// Builds an entry from one `!re` row.
    ///
    /// `.id`, `list` and `address` are required. The rest is read leniently, because these rows
    /// feed allowlists and a strict reader would drop an allowlisted address over a cosmetic
    /// field: an unreadable `timeout` counts as absent, an unreadable flag as `false`.
    pub fn from_reply(reply: &Reply) -> Result<Self, RowError> {
        let mut id = None;
        let mut list = None;
        let mut address = None;
        let mut timeout = None;
        let mut dynamic = false;
        let mut disabled = false;
        let mut comment = None;
        for attr in reply.attrs() {
            let v = attr.value;
            match attr.name {
                ".id" => id = Some(v),
                "list" => list = Some(v),
                "address" => address = Some(v),
                "timeout" => {
                    timeout = std::str::from_utf8(v)
                        .ok()
                        .filter(|t| !t.is_empty())
                        .and_then(|t| parse_duration(t).ok())
                }
                "dynamic" => dynamic = v == b"true" || v == b"yes",
                "disabled" => disabled = v == b"true" || v == b"yes",
                "comment" if !v.is_empty() => {
                    comment = Some(String::from_utf8_lossy(v).into_owned())
                }
                _ => {}
            }
        }
        let id = check_id(id.ok_or(RowError::Missing { field: ".id" })?)?;
        let list_raw = list.ok_or(RowError::Missing { field: "list" })?;
        let list = std::str::from_utf8(list_raw)
            .map_err(|_| RowError::invalid("list", list_raw))?
            .to_owned();
        let addr_raw = address.ok_or(RowError::Missing { field: "address" })?;
        let address = std::str::from_utf8(addr_raw)
            .ok()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| RowError::invalid("address", addr_raw))?;
        Ok(ListEntry {
            id,
            list,
            address,
            timeout,
            dynamic,
            disabled,
            comment,
        })
    }
}

/// An integer an address maps to, for range arithmetic.
trait AddrInt: Copy + Ord {
    fn succ(self) -> Option<Self>;
}

impl AddrInt for u32 {
    fn succ(self) -> Option<Self> {
        self.checked_add(1)
    }
}

impl AddrInt for u128 {
    fn succ(self) -> Option<Self> {
        self.checked_add(1)
    }
}

/// Sorts inclusive ranges and merges overlapping and adjacent ones.
fn normalize<T: AddrInt>(ranges: &mut Vec<(T, T)>) {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for &(lo, hi) in ranges.iter() {
        match out.last_mut() {
            Some(last) if last.1.succ().is_none_or(|next| lo <= next) => {
                last.1 = last.1.max(hi);
            }
            _ => out.push((lo, hi)),
        }
    }
    *ranges = out;
}

fn lookup<T: AddrInt>(ranges: &[(T, T)], x: T) -> bool {
    let i = ranges.partition_point(|r| r.0 <= x);
    i > 0 && ranges[i - 1].1 >= x
}

/// A set of IPv4 and IPv6 addresses, networks and ranges with a fast [`AddrSet::contains`]
/// (sorted, merged ranges and a binary search).
///
/// DNS names are kept aside for reporting and never match anything. An IPv4-mapped IPv6
/// address (`::ffff:1.2.3.4`) matches when its IPv4 address does, so a mapped form cannot slip
/// past an allowlist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddrSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
    dns: Vec<String>,
}

impl AddrSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The set of the addresses of `entries`, disabled entries included (a disabled allowlist
    /// entry still protects: erring towards never blocking is the safe side).
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = &'a ListEntry>) -> Self {
        entries.into_iter().map(|e| e.address.clone()).collect()
    }

    /// Parses configuration strings (addresses, CIDRs, ranges, DNS names).
    pub fn parse<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Result<Self, ParseError> {
        let parsed: Vec<ListAddress> = items
            .into_iter()
            .map(|s| s.as_ref().parse())
            .collect::<Result<_, _>>()?;
        Ok(parsed.into_iter().collect())
    }

    fn push(&mut self, item: ListAddress) {
        match item {
            ListAddress::Net(IpNet::V4(n)) => self
                .v4
                .push((u32::from(n.network()), u32::from(n.broadcast()))),
            ListAddress::Net(IpNet::V6(n)) => self
                .v6
                .push((u128::from(n.network()), u128::from(n.broadcast()))),
            ListAddress::Range(IpAddr::V4(a), IpAddr::V4(b)) => {
                let (a, b) = (u32::from(a), u32::from(b));
                self.v4.push((a.min(b), a.max(b)));
            }
            ListAddress::Range(IpAddr::V6(a), IpAddr::V6(b)) => {
                let (a, b) = (u128::from(a), u128::from(b));
                self.v6.push((a.min(b), a.max(b)));
            }
            // A range across families has no meaning; the parser never builds one.
            ListAddress::Range(..) => {}
            ListAddress::Dns(name) => {
                if !self.dns.contains(&name) {
                    self.dns.push(name);
                }
            }
        }
    }

    fn normalize(&mut self) {
        normalize(&mut self.v4);
        normalize(&mut self.v6);
    }

    /// Adds one address, network, range or DNS name.
    pub fn insert(&mut self, item: ListAddress) {
        self.push(item);
        self.normalize();
    }

    /// Adds one address.
    pub fn insert_addr(&mut self, addr: IpAddr) {
        self.insert(ListAddress::Net(IpNet::from(addr)));
    }

    /// Adds every member of `other`.
    pub fn union_with(&mut self, other: &AddrSet) {
        self.v4.extend_from_slice(&other.v4);
        self.v6.extend_from_slice(&other.v6);
        for d in &other.dns {
            if !self.dns.contains(d) {
                self.dns.push(d.clone());
            }
        }
        self.normalize();
    }

    /// True when `addr` is inside one of the addresses, networks or ranges.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => lookup(&self.v4, u32::from(a)),
            IpAddr::V6(a) => {
                lookup(&self.v6, u128::from(a))
                    || a.to_ipv4_mapped()
                        .is_some_and(|v4| lookup(&self.v4, u32::from(v4)))
            }
        }
    }

    /// The DNS names that were given; they are never matched.
    pub fn dns_names(&self) -> &[String] {
        &self.dns
    }

    /// Number of merged ranges (IPv4 plus IPv6).
    pub fn range_count(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// True when no address can match (DNS names do not count).
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

impl Extend<ListAddress> for AddrSet {
    fn extend<I: IntoIterator<Item = ListAddress>>(&mut self, iter: I) {
        for item in iter {
            self.push(item);
        }
        self.normalize();
    }
}

impl Extend<IpAddr> for AddrSet {
    fn extend<I: IntoIterator<Item = IpAddr>>(&mut self, iter: I) {
        self.extend(iter.into_iter().map(|a| ListAddress::Net(IpNet::from(a))));
    }
}

impl FromIterator<ListAddress> for AddrSet {
    fn from_iter<I: IntoIterator<Item = ListAddress>>(iter: I) -> Self {
        let mut set = AddrSet::new();
        set.extend(iter);
        set
    }
}

impl FromIterator<IpAddr> for AddrSet {
    fn from_iter<I: IntoIterator<Item = IpAddr>>(iter: I) -> Self {
        let mut set = AddrSet::new();
        set.extend(iter);
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use routeros_proto::Sentence;

    fn reply(words: &[&str]) -> Reply {
        Reply::parse(Sentence::from_words(
            std::iter::once("!re").chain(words.iter().copied()),
        ))
        .unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn protocol_names_and_numbers() {
        for (s, p) in [
            ("tcp", Protocol::Tcp),
            ("6", Protocol::Tcp),
            ("udp", Protocol::Udp),
            ("17", Protocol::Udp),
            ("icmp", Protocol::Icmp),
            ("1", Protocol::Icmp),
            ("gre", Protocol::Gre),
            ("47", Protocol::Gre),
            ("icmpv6", Protocol::Icmpv6),
            ("ipv6-icmp", Protocol::Icmpv6),
            ("58", Protocol::Icmpv6),
            ("sctp", Protocol::Other(132)),
            ("132", Protocol::Other(132)),
            ("253", Protocol::Other(253)),
            (" TCP ", Protocol::Tcp),
        ] {
            assert_eq!(s.parse::<Protocol>().unwrap(), p, "{s}");
        }
        for bad in ["", "256", "tcpp", "-1", "6.0", "0x6"] {
            assert!(bad.parse::<Protocol>().is_err(), "{bad}");
        }
        assert_eq!(Protocol::Tcp.to_string(), "tcp");
        assert_eq!(Protocol::Icmpv6.to_string(), "icmpv6");
        assert_eq!(Protocol::Other(50).to_string(), "ipsec-esp");
        assert_eq!(Protocol::Other(253).to_string(), "253");
        assert_eq!(Protocol::from_number(6), Protocol::Tcp);
    }

    #[test]
    fn serde_uses_the_routeros_text_forms() {
        use serde::de::value::{Error, StrDeserializer};
        use serde::de::IntoDeserializer;
        let de = |s: &'static str| -> StrDeserializer<'static, Error> { s.into_deserializer() };
        assert_eq!(Protocol::deserialize(de("gre")).unwrap(), Protocol::Gre);
        assert_eq!(
            Protocol::deserialize(de("132")).unwrap(),
            Protocol::Other(132)
        );
        assert!(Protocol::deserialize(de("nope")).is_err());
        assert_eq!(
            ListAddress::deserialize(de("10.0.0.0/8")).unwrap(),
            ListAddress::Net("10.0.0.0/8".parse().unwrap())
        );
        assert!(ListAddress::deserialize(de("a b")).is_err());
    }

    #[test]
    fn protocol_display_parses_back() {
        for n in 0..=255u8 {
            let p = Protocol::from_number(n);
            assert_eq!(p.to_string().parse::<Protocol>().unwrap(), p);
            assert_eq!(p.number(), n);
        }
    }

    #[test]
    fn endpoint_display() {
        let e = |a: &str, p| {
            Endpoint {
                addr: ip(a),
                port: p,
            }
            .to_string()
        };
        assert_eq!(e("1.2.3.4", Some(443)), "1.2.3.4:443");
        assert_eq!(e("2001:db8::1", Some(443)), "[2001:db8::1]:443");
        assert_eq!(e("2001:db8::1", None), "2001:db8::1");
        assert_eq!(e("1.2.3.4", None), "1.2.3.4");
    }

    #[test]
    fn connection_older_format_port_attached() {
        let c = Connection::from_reply(
            &reply(&[
                "=.id=*1A",
                "=protocol=tcp",
                "=src-address=192.168.2.248:32815",
                "=dst-address=74.125.138.188:5228",
                "=orig-packets=9",
                "=repl-packets=1",
                "=orig-bytes=540",
                "=repl-bytes=60",
                "=tcp-state=established",
                "=assured=true",
            ]),
            Family::V4,
        )
        .unwrap();
        assert_eq!(c.id, "*1A");
        assert_eq!(c.protocol, Protocol::Tcp);
        assert_eq!(c.src.to_string(), "192.168.2.248:32815");
        assert_eq!(c.dst.to_string(), "74.125.138.188:5228");
        assert_eq!((c.orig_packets, c.repl_packets), (Some(9), Some(1)));
        assert_eq!((c.orig_bytes, c.repl_bytes), (Some(540), Some(60)));
        assert_eq!(c.tcp_state.as_deref(), Some("established"));
        assert_eq!(c.family, Family::V4);
    }

    #[test]
    fn connection_newer_format_separate_ports() {
        let c = Connection::from_reply(
            &reply(&[
                "=.id=*5802",
                "=protocol=udp",
                "=src-address=172.31.255.29",
                "=src-port=56454",
                "=dst-address=172.31.255.30",
                "=dst-port=22",
                "=orig-packets=4",
            ]),
            Family::V4,
        )
        .unwrap();
        assert_eq!(c.src.to_string(), "172.31.255.29:56454");
        assert_eq!(c.dst.to_string(), "172.31.255.30:22");
        assert_eq!(c.orig_packets, Some(4));
        assert_eq!(
            c.repl_packets, None,
            "missing counter is None, not an error"
        );
        assert_eq!(c.tcp_state, None);
    }

    #[test]
    fn connection_icmp_has_no_ports() {
        let c = Connection::from_reply(
            &reply(&[
                "=.id=*3",
                "=protocol=icmp",
                "=src-address=10.0.0.2",
                "=dst-address=8.8.8.8",
                "=src-port=",
            ]),
            Family::V4,
        )
        .unwrap();
        assert_eq!(c.src.port, None);
        assert_eq!(c.dst.port, None);
    }

    #[test]
    fn connection_ipv6_both_forms() {
        let c = Connection::from_reply(
            &reply(&[
                "=.id=*B",
                "=protocol=tcp",
                "=src-address=2001:db8::10",
                "=src-port=40000",
                "=dst-address=[2001:db8::1]:443",
            ]),
            Family::V6,
        )
        .unwrap();
        assert_eq!(c.src.to_string(), "[2001:db8::10]:40000");
        assert_eq!(c.dst.to_string(), "[2001:db8::1]:443");
        assert_eq!(
            parse_host_port(b"[::1]"),
            Some((ip("::1"), None)),
            "brackets without a port"
        );
    }

    #[test]
    fn separate_port_wins_over_attached() {
        let c = Connection::from_reply(
            &reply(&[
                "=.id=*1",
                "=protocol=tcp",
                "=src-address=1.1.1.1:1",
                "=src-port=2",
                "=dst-address=2.2.2.2:3",
            ]),
            Family::V4,
        )
        .unwrap();
        assert_eq!(c.src.port, Some(2));
        assert_eq!(c.dst.port, Some(3));
    }

    #[test]
    fn connection_errors_name_the_field() {
        let base = [
            "=.id=*1",
            "=protocol=tcp",
            "=src-address=1.1.1.1",
            "=dst-address=2.2.2.2",
        ];
        let with = |replace: usize, word: &str| {
            let mut w = base.to_vec();
            w[replace] = word;
            Connection::from_reply(&reply(&w), Family::V4).unwrap_err()
        };
        let without = |drop: usize| {
            let mut w = base.to_vec();
            w.remove(drop);
            Connection::from_reply(&reply(&w), Family::V4).unwrap_err()
        };
        assert_eq!(without(0), RowError::Missing { field: ".id" });
        assert_eq!(without(1), RowError::Missing { field: "protocol" });
        assert_eq!(
            without(2),
            RowError::Missing {
                field: "src-address"
            }
        );
        assert_eq!(
            without(3),
            RowError::Missing {
                field: "dst-address"
            }
        );
        assert_eq!(
            with(2, "=src-address=1.1.1"),
            RowError::Invalid {
                field: "src-address",
                value: "1.1.1".into()
            }
        );
        assert!(matches!(
            with(3, "=dst-address=1.1.1.1:99999"),
            RowError::Invalid {
                field: "dst-address",
                ..
            }
        ));
        assert!(matches!(
            with(0, "=.id=*1,*2"),
            RowError::Invalid { field: ".id", .. }
        ));
        assert!(matches!(
            with(0, "=.id=1"),
            RowError::Invalid { field: ".id", .. }
        ));
        assert!(matches!(
            with(1, "=protocol=bogus"),
            RowError::Invalid {
                field: "protocol",
                ..
            }
        ));
        let mut w = base.to_vec();
        w.push("=orig-packets=47 603");
        assert!(matches!(
            Connection::from_reply(&reply(&w), Family::V4).unwrap_err(),
            RowError::Invalid {
                field: "orig-packets",
                ..
            }
        ));
        let mut w = base.to_vec();
        w.push("=dst-port=http");
        assert!(matches!(
            Connection::from_reply(&reply(&w), Family::V4).unwrap_err(),
            RowError::Invalid {
                field: "dst-port",
                ..
            }
        ));
        let long = format!("=src-address={}", "9".repeat(500));
        let RowError::Invalid { value, .. } = with(2, &long) else {
            panic!("expected Invalid")
        };
        assert!(value.chars().count() <= 65, "value is truncated");
    }

    #[test]
    fn counters_are_plain_decimal() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"+1"), None);
        assert_eq!(parse_port(b"65535"), Some(65535));
        assert_eq!(parse_port(b"65536"), None);
        assert_eq!(parse_port(b"000443"), None);
    }

    #[test]
    fn list_entry_from_reply() {
        let e = ListEntry::from_reply(&reply(&[
            "=.id=*7",
            "=list=tls_block",
            "=address=203.0.113.45",
            "=timeout=23h59m50s",
            "=dynamic=true",
            "=disabled=false",
            "=comment=rosguard: x",
            "=creation-time=2025-01-01 00:00:00",
        ]))
        .unwrap();
        assert_eq!(e.id, "*7");
        assert_eq!(e.list, "tls_block");
        assert_eq!(e.address, ListAddress::Net(IpNet::from(ip("203.0.113.45"))));
        assert_eq!(e.timeout, Some(Duration::from_secs(86_390)));
        assert!(e.dynamic && !e.disabled);
        assert_eq!(e.comment.as_deref(), Some("rosguard: x"));

        let e = ListEntry::from_reply(&reply(&[
            "=.id=*8",
            "=list=allowlist",
            "=address=10.0.0.1-10.0.0.9",
            "=timeout=garbage",
            "=disabled=true",
        ]))
        .unwrap();
        assert_eq!(
            e.address,
            ListAddress::Range(ip("10.0.0.1"), ip("10.0.0.9"))
        );
        assert_eq!(e.timeout, None, "lenient timeout");
        assert!(e.disabled && !e.dynamic);
        assert_eq!(e.comment, None);

        assert_eq!(
            ListEntry::from_reply(&reply(&["=.id=*8", "=address=1.2.3.4"])).unwrap_err(),
            RowError::Missing { field: "list" }
        );
        assert!(matches!(
            ListEntry::from_reply(&reply(&["=.id=*8", "=list=a", "=address=a b"])).unwrap_err(),
            RowError::Invalid {
                field: "address",
                ..
            }
        ));
    }

    #[test]
    fn list_address_forms() {
        let p = |s: &str| s.parse::<ListAddress>();
        assert_eq!(p("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(p("1.2.3.4").unwrap().to_string(), "1.2.3.4");
        assert_eq!(p("2001:db8::/32").unwrap().to_string(), "2001:db8::/32");
        assert_eq!(
            p("10.0.0.9-10.0.0.1").unwrap().to_string(),
            "10.0.0.1-10.0.0.9"
        );
        assert_eq!(
            p("example.com").unwrap(),
            ListAddress::Dns("example.com".into())
        );
        assert_eq!(p("my-host").unwrap(), ListAddress::Dns("my-host".into()));
        assert!(p("10.0.0.1-2001:db8::1").is_err());
        assert!(p("10.0.0.0/33").is_err());
        assert!(p("").is_err());
        assert!(
            p("1.2.3").is_err(),
            "digits and dots only is not a DNS name"
        );
        assert!(p("a b").is_err());
    }

    #[test]
    fn addr_set_contains() {
        let set = AddrSet::parse([
            "10.0.0.0/8",
            "192.168.1.5",
            "172.16.0.10-172.16.0.20",
            "2001:db8::/32",
            "example.com",
            "0.0.0.0/32",
            "255.255.255.255",
        ])
        .unwrap();
        for yes in [
            "10.0.0.0",
            "10.255.255.255",
            "192.168.1.5",
            "172.16.0.10",
            "172.16.0.20",
            "2001:db8::1",
            "::ffff:10.1.2.3",
            "0.0.0.0",
            "255.255.255.255",
        ] {
            assert!(set.contains(ip(yes)), "{yes}");
        }
        for no in [
            "11.0.0.0",
            "9.255.255.255",
            "192.168.1.4",
            "192.168.1.6",
            "172.16.0.21",
            "2001:db9::1",
            "::1",
        ] {
            assert!(!set.contains(ip(no)), "{no}");
        }
        assert_eq!(set.dns_names(), ["example.com".to_string()]);
        assert!(AddrSet::parse(["bad address!"]).is_err());
        assert!(AddrSet::new().is_empty());
        assert!(!AddrSet::new().contains(ip("1.1.1.1")));
    }

    #[test]
    fn addr_set_merges_and_unions() {
        let mut set = AddrSet::parse(["10.0.0.0/25", "10.0.0.128/25", "10.0.0.5"]).unwrap();
        assert_eq!(
            set.range_count(),
            1,
            "adjacent and overlapping ranges merge"
        );
        set.insert_addr(ip("::"));
        set.insert_addr(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
        assert!(set.contains(ip("::")));
        let other = AddrSet::parse(["1.1.1.1", "x.example"]).unwrap();
        set.union_with(&other);
        assert!(set.contains(ip("1.1.1.1")) && set.contains(ip("10.0.0.200")));
        assert_eq!(set.dns_names().len(), 1);
        let entries = [ListEntry {
            id: "*1".into(),
            list: "allowlist".into(),
            address: "8.8.8.8".parse().unwrap(),
            timeout: None,
            dynamic: false,
            disabled: true,
            comment: None,
        }];
        assert!(AddrSet::from_entries(&entries).contains(ip("8.8.8.8")));
    }

    proptest! {
        #[test]
        fn addr_set_matches_a_linear_scan(
            ranges in proptest::collection::vec((any::<u32>(), 0u32..5000), 0..40),
            probes in proptest::collection::vec(any::<u32>(), 0..40),
        ) {
            let items: Vec<ListAddress> = ranges
                .iter()
                .map(|&(lo, len)| {
                    let hi = lo.saturating_add(len);
                    ListAddress::Range(IpAddr::V4(lo.into()), IpAddr::V4(hi.into()))
                })
                .collect();
            let set: AddrSet = items.into_iter().collect();
            let edges = ranges.iter().flat_map(|&(lo, len)| {
                let hi = lo.saturating_add(len);
                [lo.wrapping_sub(1), lo, hi, hi.wrapping_add(1)]
            });
            for x in probes.iter().copied().chain(edges) {
                let expected = ranges
                    .iter()
                    .any(|&(lo, len)| lo <= x && x <= lo.saturating_add(len));
                prop_assert_eq!(set.contains(IpAddr::V4(x.into())), expected, "{}", x);
            }
        }

        #[test]
        fn from_reply_never_panics(words in proptest::collection::vec(
            ("[a-z.-]{1,12}", proptest::collection::vec(any::<u8>(), 0..40)), 0..12)) {
            let words: Vec<Vec<u8>> = std::iter::once(b"!re".to_vec())
                .chain(words.into_iter().map(|(n, v)| {
                    let mut w = format!("={n}=").into_bytes();
                    w.extend(v);
                    w
                }))
                .collect();
            if let Ok(r) = Reply::parse(Sentence::from_words(words)) {
                let _ = Connection::from_reply(&r, Family::V4);
                let _ = ListEntry::from_reply(&r);
            }
        }

        #[test]
        fn endpoints_round_trip(a in any::<IpAddr>(), port in any::<Option<u16>>()) {
            let e = Endpoint { addr: a, port };
            let text = e.to_string();
            prop_assert_eq!(parse_host_port(text.as_bytes()), Some((a, port)));
        }
    }
}
