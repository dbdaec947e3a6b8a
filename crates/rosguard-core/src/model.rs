//! Checked domain types: [`Connection`], [`ListEntry`], [`ListAddress`], the address set
//! [`AddrSet`], and the small value types they are made of ([`Protocol`], [`Endpoint`],
//! [`TcpState`], [`ConnId`]).
//!
//! Parse, then trust: a backend (the RouterOS API, a recording, the Linux kernel) turns its rows
//! into these types once, at the edge, and the rest of rosguard never looks at raw strings
//! again. A connection's [`ConnId`] is the backend's handle for removing it: opaque here.
//!
//! This module deliberately does not decide anything (that is [`detect`](mod@crate::detect) and
//! [`policy`](crate::policy)), does no IO and knows no wire format. DNS names in address lists
//! are kept as text and never resolved.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::ParseError;

pub use routeros_types::Family;

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
    /// A name (`"tcp"`) or a number (`6`, `"47"`).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Protocol;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a protocol name (tcp, udp, icmp, gre) or a protocol number from 0 to 255",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Protocol, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Protocol, E> {
                u8::try_from(v)
                    .map(Protocol::from_number)
                    .map_err(|_| E::custom(format!("{v} is not a protocol number (0 to 255)")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Protocol, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("{v} is not a protocol number (0 to 255)")))
                    .and_then(|v| self.visit_u64(v))
            }
        }
        d.deserialize_any(V)
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

/// A backend's handle for one connection (RouterOS: the row's `.id`, such as `*1A2B`). Opaque
/// to the core: it is only handed back to the backend to remove the connection. Shared, not
/// copied, when a row is cloned (a replay hands every poll's rows to many settings).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConnId(std::sync::Arc<str>);

impl ConnId {
    /// Wraps a backend's handle.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into().into())
    }

    /// The handle as the backend gave it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for ConnId {
    fn from(s: &str) -> Self {
        Self(s.into())
    }
}

/// The state of a TCP connection as RouterOS names it (`tcp-state`). Linux conntrack's states
/// map onto these one to one; an unknown name becomes [`TcpState::Other`] (the text is not kept,
/// so nothing a router sends can reach a terminal through it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TcpState {
    /// `syn-sent`: the handshake was started and not answered.
    SynSent,
    /// `syn-recv`.
    SynRecv,
    /// `established`.
    Established,
    /// `fin-wait`.
    FinWait,
    /// `close-wait`.
    CloseWait,
    /// `last-ack`.
    LastAck,
    /// `time-wait`.
    TimeWait,
    /// `close` (for example after a RST).
    Close,
    /// `listen`.
    Listen,
    /// A state name rosguard does not know.
    Other,
}

/// The names [`TcpState`] parses from and prints as.
const TCP_STATES: &[(&str, TcpState)] = &[
    ("syn-sent", TcpState::SynSent),
    ("syn-recv", TcpState::SynRecv),
    ("established", TcpState::Established),
    ("fin-wait", TcpState::FinWait),
    ("close-wait", TcpState::CloseWait),
    ("last-ack", TcpState::LastAck),
    ("time-wait", TcpState::TimeWait),
    ("close", TcpState::Close),
    ("listen", TcpState::Listen),
];

impl TcpState {
    /// Parses a state name as it appears on the wire; anything unknown is [`TcpState::Other`].
    pub fn from_wire(value: &[u8]) -> Self {
        TCP_STATES
            .iter()
            .find(|(name, _)| name.as_bytes() == value)
            .map_or(TcpState::Other, |&(_, s)| s)
    }

    /// The RouterOS name (`syn-sent`, ...), `other` for an unknown state.
    pub fn as_str(self) -> &'static str {
        TCP_STATES
            .iter()
            .find(|&&(_, s)| s == self)
            .map_or("other", |&(name, _)| name)
    }
}

impl FromStr for TcpState {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match TcpState::from_wire(s.trim().as_bytes()) {
            TcpState::Other => Err(ParseError::new(
                "tcp-state",
                s,
                "expected syn-sent, syn-recv, established, fin-wait, close-wait, last-ack, time-wait, close or listen",
            )),
            state => Ok(state),
        }
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for TcpState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TcpState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(TcpState::from_wire(s.as_bytes()))
    }
}

/// One row of a connection table (`/ip/firewall/connection`, `/ipv6/firewall/connection`, or
/// the kernel's conntrack behind them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Connection {
    /// The backend's handle, used to remove the row.
    pub id: ConnId,
    /// The table the row came from (not inferred from the addresses).
    pub family: Family,
    /// The IP protocol.
    pub protocol: Protocol,
    /// The originating side.
    pub src: Endpoint,
    /// The destination (service) side.
    pub dst: Endpoint,
    /// Packets from `src` to `dst` on the slow path; `None` when the row did not carry the
    /// counter.
    pub orig_packets: Option<u64>,
    /// Packets from `dst` back to `src` on the slow path.
    pub repl_packets: Option<u64>,
    /// Bytes from `src` to `dst`.
    pub orig_bytes: Option<u64>,
    /// Bytes from `dst` back to `src`.
    pub repl_bytes: Option<u64>,
    /// Packets from `src` to `dst` that FastTrack forwarded (RouterOS counts them apart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orig_fasttrack_packets: Option<u64>,
    /// Packets from `dst` back to `src` that FastTrack forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repl_fasttrack_packets: Option<u64>,
    /// `tcp-state` for TCP rows.
    pub tcp_state: Option<TcpState>,
}

impl Connection {
    /// Every packet sent from `src`: the slow-path counter plus FastTrack's. `None` when the
    /// row has no `orig-packets` at all.
    pub fn orig_total(&self) -> Option<u64> {
        self.orig_packets
            .map(|n| n.saturating_add(self.orig_fasttrack_packets.unwrap_or(0)))
    }

    /// Every packet sent back from `dst`: the slow-path counter plus FastTrack's.
    pub fn repl_total(&self) -> Option<u64> {
        self.repl_packets
            .map(|n| n.saturating_add(self.repl_fasttrack_packets.unwrap_or(0)))
    }

    /// `tcp 192.168.88.50:54321 -> 203.0.113.45:443`.
    pub fn summary(&self) -> String {
        format!("{} {} -> {}", self.protocol, self.src, self.dst)
    }
}

/// Decimal digits only, no sign, no separators, no overflow: how RouterOS and the kernel write
/// counters. Shared by the backends' row readers.
pub fn parse_decimal(v: &[u8]) -> Option<u64> {
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

/// A port: 1 to 5 decimal digits, at most 65535.
pub fn parse_port(v: &[u8]) -> Option<u16> {
    if v.len() > 5 {
        return None;
    }
    u16::try_from(parse_decimal(v)?).ok()
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

/// `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:80`, as an
/// address and an optional port. Shared by the backends' row readers.
pub fn parse_host_port(v: &[u8]) -> Option<(IpAddr, Option<u16>)> {
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

/// The comment prefix that marks the address-list entries rosguard added.
pub const ENTRY_SIGNATURE: &str = "rosguard:";

impl ListEntry {
    /// The family of the entry's address (a DNS name counts as IPv4: the IPv4 list resolves
    /// names).
    pub fn family(&self) -> Family {
        match &self.address {
            ListAddress::Net(n) => Family::of(n.addr()),
            ListAddress::Range(a, _) => Family::of(*a),
            ListAddress::Dns(_) => Family::V4,
        }
    }

    /// The address of a single-address entry (`/32`, `/128`), `None` for networks, ranges and
    /// names.
    pub fn host(&self) -> Option<IpAddr> {
        match &self.address {
            ListAddress::Net(n) if n.prefix_len() == n.max_prefix_len() => Some(n.addr()),
            _ => None,
        }
    }

    /// True when the comment says rosguard added the entry.
    pub fn is_rosguard(&self) -> bool {
        self.comment
            .as_deref()
            .is_some_and(|c| c.starts_with(ENTRY_SIGNATURE))
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
            ListAddress::Net(IpNet::V6(n)) => {
                self.push_v6(u128::from(n.network()), u128::from(n.broadcast()))
            }
            ListAddress::Range(IpAddr::V4(a), IpAddr::V4(b)) => {
                let (a, b) = (u32::from(a), u32::from(b));
                self.v4.push((a.min(b), a.max(b)));
            }
            ListAddress::Range(IpAddr::V6(a), IpAddr::V6(b)) => {
                let (a, b) = (u128::from(a), u128::from(b));
                self.push_v6(a.min(b), a.max(b));
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

    /// An IPv6 range; the part of it inside `::ffff:0.0.0.0/96` also covers the IPv4
    /// addresses it maps, so an IPv4 lookup finds a member written in its mapped form.
    fn push_v6(&mut self, lo: u128, hi: u128) {
        self.v6.push((lo, hi));
        const MAPPED_LO: u128 = 0xffff_0000_0000;
        const MAPPED_HI: u128 = 0xffff_ffff_ffff;
        let (a, b) = (lo.max(MAPPED_LO), hi.min(MAPPED_HI));
        if a <= b {
            // Both are within the mapped block: the low 32 bits are the IPv4 address.
            self.v4
                .push(((a & 0xffff_ffff) as u32, (b & 0xffff_ffff) as u32));
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

/// The networks of the router's own interfaces (`/ip/address`, `/ipv6/address`): what is
/// "inside" for `block_target = "remote"`, and what is never blocked unless
/// `block_lan_hosts` says so.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks(Vec<IpNet>);

impl Networks {
    /// The networks, with host bits cleared and duplicates dropped.
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        let mut v: Vec<IpNet> = nets.into_iter().map(|n| n.trunc()).collect();
        v.sort_unstable();
        v.dedup();
        Networks(v)
    }

    /// The most specific network holding `addr` (IPv4-mapped IPv6 counts as IPv4).
    pub fn containing(&self, addr: IpAddr) -> Option<IpNet> {
        let addr = addr.to_canonical();
        self.0
            .iter()
            .filter(|n| n.contains(&addr))
            .max_by_key(|n| n.prefix_len())
            .copied()
    }

    /// True when `addr` is inside one of the networks.
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.containing(addr).is_some()
    }

    /// The networks.
    pub fn iter(&self) -> impl Iterator<Item = &IpNet> {
        self.0.iter()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
    fn counters_are_plain_decimal() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_decimal(b"18446744073709551616"), None);
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"+1"), None);
        assert_eq!(parse_port(b"65535"), Some(65535));
        assert_eq!(parse_port(b"65536"), None);
        assert_eq!(parse_port(b"000443"), None);
        assert_eq!(parse_port(b"0443"), Some(443));
    }

    #[test]
    fn connection_totals_add_fasttrack_and_tcp_states_parse() {
        let c = Connection {
            id: ConnId::new("*1"),
            family: Family::V4,
            protocol: Protocol::Tcp,
            src: "10.0.0.2:40000".parse().unwrap(),
            dst: "203.0.113.5:443".parse().unwrap(),
            orig_packets: Some(3),
            repl_packets: Some(2),
            orig_bytes: None,
            repl_bytes: None,
            orig_fasttrack_packets: Some(400),
            repl_fasttrack_packets: Some(380),
            tcp_state: Some(TcpState::Established),
        };
        assert_eq!((c.orig_total(), c.repl_total()), (Some(403), Some(382)));
        let bare = Connection {
            orig_fasttrack_packets: None,
            repl_packets: None,
            ..c.clone()
        };
        assert_eq!((bare.orig_total(), bare.repl_total()), (Some(3), None));
        assert_eq!(c.summary(), "tcp 10.0.0.2:40000 -> 203.0.113.5:443");
        for (name, state) in TCP_STATES {
            assert_eq!(TcpState::from_wire(name.as_bytes()), *state);
            assert_eq!(state.to_string(), *name);
        }
        assert_eq!(TcpState::from_wire(b"\x1b[2J"), TcpState::Other);
        assert_eq!(TcpState::Other.to_string(), "other");
        assert!("bogus".parse::<TcpState>().is_err());
        assert_eq!(parse_host_port(b"[::1]"), Some((ip("::1"), None)));
    }

    #[test]
    fn list_entries_know_their_family_host_and_author() {
        let e = |a: &str, c: Option<&str>| ListEntry {
            id: "*1".into(),
            list: "l".into(),
            address: a.parse().unwrap(),
            timeout: None,
            dynamic: false,
            disabled: false,
            comment: c.map(str::to_owned),
        };
        assert_eq!(e("2001:db8::1", None).family(), Family::V6);
        assert_eq!(e("10.0.0.1-10.0.0.9", None).family(), Family::V4);
        assert_eq!(e("2001:db8::/32", None).host(), None);
        assert_eq!(e("192.0.2.7", None).host(), Some(ip("192.0.2.7")));
        assert!(e("192.0.2.7", Some("rosguard: tcp ...")).is_rosguard());
        assert!(!e("192.0.2.7", Some("by hand")).is_rosguard());
        assert!(!e("192.0.2.7", None).is_rosguard());
    }

    #[test]
    fn a_member_in_ipv4_mapped_form_matches_its_ipv4_address() {
        let set = AddrSet::parse(["::ffff:10.0.0.3", "::ffff:192.168.0.0/120"]).unwrap();
        assert!(set.contains(ip("10.0.0.3")));
        assert!(set.contains(ip("192.168.0.200")));
        assert!(!set.contains(ip("192.168.1.1")));
        assert!(!set.contains(ip("10.0.0.4")));
        let wide = AddrSet::parse(["::/0"]).unwrap();
        assert!(
            wide.contains(ip("203.0.113.1")),
            "::/0 covers the mapped block too"
        );
    }

    #[test]
    fn networks_find_the_most_specific_match() {
        let n = Networks::new(
            ["192.168.88.1/24", "192.168.0.0/16", "2001:db8::1/64"].map(|s| s.parse().unwrap()),
        );
        assert_eq!(
            n.containing(ip("192.168.88.7")),
            Some("192.168.88.0/24".parse().unwrap())
        );
        assert_eq!(
            n.containing(ip("192.168.1.7")),
            Some("192.168.0.0/16".parse().unwrap())
        );
        assert_eq!(
            n.containing(ip("::ffff:192.168.88.7")),
            Some("192.168.88.0/24".parse().unwrap())
        );
        assert!(n.contains(ip("2001:db8::99")));
        assert!(!n.contains(ip("203.0.113.1")));
        assert!(Networks::default().is_empty());
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
        fn endpoints_round_trip(a in any::<IpAddr>(), port in any::<Option<u16>>()) {
            let e = Endpoint { addr: a, port };
            let text = e.to_string();
            prop_assert_eq!(parse_host_port(text.as_bytes()), Some((a, port)));
        }
    }
}
