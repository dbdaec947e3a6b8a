//! Scenario files: traffic played over sim time, plus address-list seeds (TOML).
//!
//! A scenario is a list of flows; each flow is one or more connections that appear at
//! `start`, live for `duration` with counters that grow as a function of elapsed sim time
//! (no per-tick work), then time out the way conntrack would. The format is documented in
//! `SCENARIO.md`; `scenarios/example.toml` shows every key and `scenarios/demo.toml` is the
//! embedded [`DEMO_SCENARIO`] that `rosguard demo` plays.
//!
//! Parsing is strict (`deny_unknown_fields`) and every error names the flow and the key. This
//! module deliberately does not know about sessions or the wire: it turns (flow, instance,
//! time) into a [`ConnRow`](crate::connection::ConnRow), nothing more.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use routeros_proto::parse_duration;
use serde::Deserialize;

use crate::connection::{ConnRow, FastTrackCounts, Flags, SimProtocol, TcpState};
use crate::error::SimError;
use crate::generate::GenerateSpec;

/// The scenario `rosguard demo` plays: normal HTTPS/DNS, DPI-frozen TLS flows to distinct
/// servers, a QUIC (UDP 443) spray, a port scan, flows to an allowlisted and to a router-local
/// address, and an IPv6 frozen flow; the anomalous ones are flagged (orig > 3, repl <= 2)
/// within 3-9 s of sim time.
pub const DEMO_SCENARIO: &str = include_str!("../scenarios/demo.toml");

/// The embedded demo scenario, parsed.
pub fn demo_scenario() -> Scenario {
    Scenario::from_toml(DEMO_SCENARIO, "<demo>").unwrap_or_else(|e| {
        // The embedded text is covered by a test; this is unreachable in a released build.
        tracing::error!(error = %e, "embedded demo scenario does not parse");
        Scenario::default()
    })
}

/// What a flow's connections do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlowKind {
    /// Symmetric traffic: replies keep pace with requests.
    Normal,
    /// The TLS handshake completed, then the originator's packets go unanswered (a DPI
    /// "freeze"): orig keeps rising by retransmissions while repl stays at 1-2.
    TlsFreeze,
    /// One source to many destination ports/addresses, no replies (e.g. QUIC to a blocked
    /// service, or a UDP flood).
    UdpSpray,
    /// One source across many ports, SYN-only: orig 1-3, repl 0.
    Scan,
    /// A port scan as conntrack shows it: one probe per destination port at `rate` probes a
    /// second. Filtered ports (no answer) stay in `syn-sent` with orig 1, repl 0 (Linux does
    /// not count retransmitted SYNs of an unanswered handshake) until the scanner gives up;
    /// closed ports answer with a RST: a row in `close`, orig 1, repl 1, gone 10 s later.
    PortScan,
    /// Counters and rates exactly as given.
    Custom,
    /// A healthy flow on a router with the default FastTrack rule: traffic like `normal`,
    /// but each direction's main counter (`orig-packets`, `repl-packets`) stops at
    /// `fasttrack_after` packets and the rest is counted in `orig-fasttrack-*` /
    /// `repl-fasttrack-*`; the row has `fasttrack=true`.
    Fasttracked,
}

/// What changes between the `count` connections of one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Vary {
    /// Source port + i.
    SrcPort,
    /// Destination port + i.
    DstPort,
    /// Destination address + i.
    DstAddress,
    /// Source address + i.
    SrcAddress,
}

/// One `[[flow]]`: `count` connections that behave alike.
#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    /// What the connections do.
    pub kind: FlowKind,
    /// A label for logs and documentation.
    pub name: Option<String>,
    /// The protocol.
    pub protocol: SimProtocol,
    /// Source address of the first connection.
    pub src: IpAddr,
    /// Source port of the first connection (`None`: an ephemeral port picked from the flow's
    /// position).
    pub src_port: Option<u16>,
    /// Destination address of the first connection.
    pub dst: IpAddr,
    /// Destination port of the first connection.
    pub dst_port: Option<u16>,
    /// When the first connection appears (sim time since start).
    pub start: Duration,
    /// How long each connection carries traffic; conntrack times it out after that.
    pub duration: Duration,
    /// How many connections.
    pub count: u32,
    /// Delay between the starts of successive connections.
    pub interval: Duration,
    /// What differs between the connections.
    pub vary: Vary,
    /// Originator packets per second while active.
    pub orig_rate: f64,
    /// Reply packets per second while active.
    pub repl_rate: f64,
    /// Originator packets at the start.
    pub orig_packets: u64,
    /// Reply packets at the start.
    pub repl_packets: u64,
    /// TCP state while active (`custom` flows; others have their own).
    pub tcp_state: Option<TcpState>,
    /// Source NAT to the router's WAN address; `None`: automatic (private IPv4 source to a
    /// public unicast destination).
    pub srcnat: Option<bool>,
    /// `fasttracked` flows: packets per direction counted on the slow path (the main
    /// counters) before FastTrack takes over.
    pub fasttrack_after: u64,
    /// `port-scan` flows: the ports are filtered (no answer) rather than closed (RST).
    pub filtered: bool,
}

/// An address-list entry to create at start (`[[allowlist]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListSeed {
    /// The list (default `allowlist`).
    pub list: String,
    /// The address (IPv6 goes to the IPv6 list).
    pub address: String,
    /// A comment.
    pub comment: Option<String>,
    /// A timeout (makes the entry dynamic).
    pub timeout: Option<Duration>,
}

/// The router's own settings a scenario may set (`[router]`); `SimConfig`'s fields of the same
/// names win over these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouterSettings {
    /// The address `/user/active` shows for API sessions.
    pub session_address: Option<IpAddr>,
    /// The IPv4 default gateway.
    pub ipv4_gateway: Option<Ipv4Addr>,
    /// The IPv6 default gateway.
    pub ipv6_gateway: Option<Ipv6Addr>,
    /// Static DNS servers.
    pub dns_servers: Option<Vec<IpAddr>>,
    /// Dynamic DNS servers.
    pub dynamic_dns_servers: Option<Vec<IpAddr>>,
}

/// A parsed scenario.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scenario {
    /// What the scenario is about.
    pub description: Option<String>,
    /// The flows.
    pub flows: Vec<Flow>,
    /// Address-list entries to create at start.
    pub allowlist: Vec<ListSeed>,
    /// A large synthetic table to add.
    pub generate: Option<GenerateSpec>,
    /// The router's own settings (`[router]`).
    pub router: RouterSettings,
}

/// The most connections one scenario may describe (a generator is the tool for more).
const MAX_SCENARIO_CONNECTIONS: u64 = 1_000_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    description: Option<String>,
    #[serde(default)]
    flow: Vec<RawFlow>,
    #[serde(default)]
    allowlist: Vec<RawSeed>,
    generate: Option<RawGenerate>,
    router: Option<RawRouter>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouter {
    session_address: Option<String>,
    ipv4_gateway: Option<String>,
    ipv6_gateway: Option<String>,
    dns_servers: Option<Vec<String>>,
    dynamic_dns_servers: Option<Vec<String>>,
}

fn ip_of(key: &str, text: &str) -> Result<IpAddr, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("`{key}`: {text:?} is not an IP address"))
}

fn router_settings(raw: &RawRouter) -> Result<RouterSettings, String> {
    let one = |key: &str, v: &Option<String>| v.as_deref().map(|t| ip_of(key, t)).transpose();
    let many = |key: &str, v: &Option<Vec<String>>| {
        v.as_ref()
            .map(|list| {
                list.iter()
                    .map(|t| ip_of(key, t))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
    };
    let ipv4_gateway = match one("ipv4_gateway", &raw.ipv4_gateway)? {
        None => None,
        Some(IpAddr::V4(v4)) => Some(v4),
        Some(IpAddr::V6(_)) => return Err("`ipv4_gateway`: an IPv6 address".into()),
    };
    let ipv6_gateway = match one("ipv6_gateway", &raw.ipv6_gateway)? {
        None => None,
        Some(IpAddr::V6(v6)) => Some(v6),
        Some(IpAddr::V4(_)) => return Err("`ipv6_gateway`: an IPv4 address".into()),
    };
    Ok(RouterSettings {
        session_address: one("session_address", &raw.session_address)?,
        ipv4_gateway,
        ipv6_gateway,
        dns_servers: many("dns_servers", &raw.dns_servers)?,
        dynamic_dns_servers: many("dynamic_dns_servers", &raw.dynamic_dns_servers)?,
    })
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Seconds(f64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlow {
    kind: FlowKind,
    name: Option<String>,
    src: String,
    dst: String,
    protocol: Option<String>,
    start: Option<RawDuration>,
    duration: Option<RawDuration>,
    count: Option<u32>,
    interval: Option<RawDuration>,
    vary: Option<Vary>,
    orig_rate: Option<f64>,
    repl_rate: Option<f64>,
    orig_packets: Option<u64>,
    repl_packets: Option<u64>,
    tcp_state: Option<String>,
    srcnat: Option<bool>,
    fasttrack_after: Option<u64>,
    ports: Option<u32>,
    rate: Option<f64>,
    filtered: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSeed {
    address: String,
    list: Option<String>,
    comment: Option<String>,
    timeout: Option<RawDuration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGenerate {
    connections: usize,
    anomaly_share: Option<f64>,
    seed: Option<u64>,
    ipv6_share: Option<f64>,
}

fn duration_of(raw: &RawDuration) -> Result<Duration, String> {
    match raw {
        RawDuration::Seconds(s) if s.is_finite() && *s >= 0.0 && *s < 1e9 => {
            Ok(Duration::from_secs_f64(*s))
        }
        RawDuration::Seconds(s) => Err(format!("{s} is not a duration")),
        RawDuration::Text(t) => parse_duration(t).map_err(|e| e.to_string()),
    }
}

/// Parses `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1` or `[2001:db8::1]:443`.
fn endpoint(text: &str) -> Result<(IpAddr, Option<u16>), String> {
    let t = text.trim();
    if let Ok(sa) = t.parse::<SocketAddr>() {
        return Ok((sa.ip(), Some(sa.port())));
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok((ip, None));
    }
    let bare = t.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok((ip, None));
    }
    Err(format!(
        "{t:?} is not an address (examples: 192.168.88.50, 203.0.113.45:443, [2001:db8::1]:443)"
    ))
}

fn rate(value: Option<f64>, default: f64, key: &str) -> Result<f64, String> {
    match value {
        None => Ok(default),
        Some(v) if v.is_finite() && (0.0..=1e9).contains(&v) => Ok(v),
        Some(v) => Err(format!("`{key}`: {v} is not a rate in packets per second")),
    }
}

impl Scenario {
    /// Parses a scenario; `origin` names it in errors (a path, or `<demo>`).
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, SimError> {
        let err = |message: String| SimError::Scenario {
            origin: origin.to_owned(),
            message,
        };
        let raw: RawScenario = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        let mut flows = Vec::with_capacity(raw.flow.len());
        let mut total: u64 = 0;
        for (i, f) in raw.flow.iter().enumerate() {
            let flow = check_flow(f).map_err(|m| err(format!("[[flow]] #{}: {m}", i + 1)))?;
            total += u64::from(flow.count);
            if total > MAX_SCENARIO_CONNECTIONS {
                return Err(err(format!(
                    "[[flow]] #{}: `count`: more than {MAX_SCENARIO_CONNECTIONS} connections in \
                     all; use [generate] for large tables",
                    i + 1
                )));
            }
            flows.push(flow);
        }
        let mut allowlist = Vec::with_capacity(raw.allowlist.len());
        for (i, s) in raw.allowlist.iter().enumerate() {
            let at = |m: String| err(format!("[[allowlist]] #{}: {m}", i + 1));
            let timeout = s
                .timeout
                .as_ref()
                .map(duration_of)
                .transpose()
                .map_err(|m| at(format!("`timeout`: {m}")))?;
            let list = s.list.clone().unwrap_or_else(|| "allowlist".into());
            if list.is_empty() {
                return Err(at("`list`: empty list name".into()));
            }
            if s.address.trim().is_empty() {
                return Err(at("`address`: empty address".into()));
            }
            allowlist.push(ListSeed {
                list,
                address: s.address.trim().to_owned(),
                comment: s.comment.clone(),
                timeout,
            });
        }
        let generate = match raw.generate {
            None => None,
            Some(g) => {
                let spec = GenerateSpec {
                    connections: g.connections,
                    anomaly_share: g.anomaly_share.unwrap_or(0.01),
                    seed: g.seed.unwrap_or(1),
                    ipv6_share: g.ipv6_share.unwrap_or(0.05),
                };
                spec.validate()
                    .map_err(|m| err(format!("[generate]: {m}")))?;
                Some(spec)
            }
        };
        let router = match &raw.router {
            None => RouterSettings::default(),
            Some(r) => router_settings(r).map_err(|m| err(format!("[router]: {m}")))?,
        };
        Ok(Scenario {
            description: raw.description,
            flows,
            allowlist,
            generate,
            router,
        })
    }

    /// Reads and parses a scenario file.
    pub fn from_file(path: &Path) -> Result<Self, SimError> {
        let text = std::fs::read_to_string(path).map_err(|source| SimError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }
}

fn check_flow(f: &RawFlow) -> Result<Flow, String> {
    let (src, src_port) = endpoint(&f.src).map_err(|m| format!("`src`: {m}"))?;
    let (dst, dst_port) = endpoint(&f.dst).map_err(|m| format!("`dst`: {m}"))?;
    if src.is_ipv4() != dst.is_ipv4() {
        return Err("`src` and `dst` must be of the same address family".into());
    }
    let default_protocol = match f.kind {
        FlowKind::UdpSpray => SimProtocol::Udp,
        _ => SimProtocol::Tcp,
    };
    let mut protocol = match &f.protocol {
        None => default_protocol,
        Some(p) => SimProtocol::parse(p).ok_or_else(|| {
            format!("`protocol`: {p:?} is not a protocol (tcp, udp, icmp, icmpv6, gre or a number)")
        })?,
    };
    if protocol == SimProtocol::Icmp && src.is_ipv6() {
        protocol = SimProtocol::Icmpv6;
    }
    match (f.kind, protocol) {
        (FlowKind::TlsFreeze | FlowKind::Scan | FlowKind::PortScan, p) if p != SimProtocol::Tcp => {
            return Err(format!("`protocol`: a {:?} flow is TCP", f.kind))
        }
        (FlowKind::UdpSpray, p) if p != SimProtocol::Udp => {
            return Err("`protocol`: a udp-spray flow is UDP".into())
        }
        _ => {}
    }
    if protocol.has_ports() && dst_port.is_none() {
        return Err(format!(
            "`dst`: {:?} needs a port for {} (e.g. 203.0.113.45:443)",
            f.dst,
            match protocol {
                SimProtocol::Udp => "udp",
                _ => "tcp",
            }
        ));
    }
    let tcp = protocol == SimProtocol::Tcp;
    // (duration, orig_rate, repl_rate, orig0, repl0, vary)
    let (duration, orig_rate, repl_rate, orig0, repl0, vary) = match f.kind {
        FlowKind::Normal | FlowKind::Fasttracked if tcp => (600.0, 10.0, 15.0, 3, 2, Vary::SrcPort),
        FlowKind::Fasttracked => (60.0, 10.0, 10.0, 1, 1, Vary::SrcPort),
        FlowKind::Normal => (1.0, 0.0, 0.0, 1, 1, Vary::SrcPort),
        FlowKind::TlsFreeze => (120.0, 1.0, 0.5, 3, 1, Vary::SrcPort),
        FlowKind::UdpSpray => (30.0, 2.0, 0.0, 1, 0, Vary::DstPort),
        FlowKind::Scan => (5.0, 0.5, 0.0, 1, 0, Vary::DstPort),
        FlowKind::PortScan if f.filtered == Some(false) => (0.001, 0.0, 0.0, 1, 1, Vary::DstPort),
        FlowKind::PortScan => (3.0, 0.0, 0.0, 1, 0, Vary::DstPort),
        FlowKind::Custom => (60.0, 0.0, 0.0, 1, 0, Vary::SrcPort),
    };
    let dur = |raw: &Option<RawDuration>, default: f64, key: &str| -> Result<Duration, String> {
        match raw {
            None => Ok(Duration::from_secs_f64(default)),
            Some(r) => duration_of(r).map_err(|m| format!("`{key}`: {m}")),
        }
    };
    let tcp_state = match &f.tcp_state {
        None => None,
        Some(_) if !tcp => return Err("`tcp_state`: only TCP flows have a TCP state".into()),
        Some(_) if f.kind != FlowKind::Custom => {
            return Err("`tcp_state`: only custom flows choose their TCP state".into())
        }
        Some(s) => Some(TcpState::parse(s).ok_or_else(|| {
            format!("`tcp_state`: {s:?} is not a TCP state (syn-sent, established, time-wait, ...)")
        })?),
    };
    let fasttrack_after = match (f.fasttrack_after, f.kind) {
        (Some(_), k) if k != FlowKind::Fasttracked => {
            return Err("`fasttrack_after`: only fasttracked flows have it".into())
        }
        (Some(n), _) => n,
        (None, _) => 3,
    };
    if f.kind != FlowKind::PortScan {
        for (key, set) in [
            ("ports", f.ports.is_some()),
            ("rate", f.rate.is_some()),
            ("filtered", f.filtered.is_some()),
        ] {
            if set {
                return Err(format!("`{key}`: only port-scan flows have it"));
            }
        }
    } else if f.ports.is_some() && f.count.is_some() {
        return Err("`ports`: give `ports` or `count`, not both".into());
    } else if f.rate.is_some() && f.interval.is_some() {
        return Err("`rate`: give `rate` or `interval`, not both".into());
    }
    let interval = match f.rate {
        Some(r) if r.is_finite() && r > 0.0 && r <= 1e6 => Some(Duration::from_secs_f64(1.0 / r)),
        Some(r) => return Err(format!("`rate`: {r} is not a rate in probes per second")),
        None => None,
    };
    let count = f.ports.or(f.count).unwrap_or(1);
    if count == 0 {
        return Err("`count`: must be at least 1".into());
    }
    let duration = dur(&f.duration, duration, "duration")?;
    if duration.is_zero() {
        return Err("`duration`: must be more than 0s".into());
    }
    Ok(Flow {
        kind: f.kind,
        name: f.name.clone(),
        protocol,
        src,
        src_port: if protocol.has_ports() { src_port } else { None },
        dst,
        dst_port: if protocol.has_ports() { dst_port } else { None },
        start: dur(&f.start, 0.0, "start")?,
        duration,
        count,
        interval: match interval {
            Some(i) => i,
            None => dur(&f.interval, 0.0, "interval")?,
        },
        vary: f.vary.unwrap_or(vary),
        orig_rate: rate(f.orig_rate, orig_rate, "orig_rate")?,
        repl_rate: rate(f.repl_rate, repl_rate, "repl_rate")?,
        orig_packets: f.orig_packets.unwrap_or(orig0),
        repl_packets: f.repl_packets.unwrap_or(repl0),
        tcp_state,
        srcnat: f.srcnat,
        fasttrack_after,
        filtered: f.filtered.unwrap_or(true),
    })
}

fn add_to_ip(ip: IpAddr, n: u32) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4).wrapping_add(n))),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6).wrapping_add(u128::from(n)))),
    }
}

fn add_to_port(port: u16, n: u32) -> u16 {
    // Stay within 1..=65535, wrapping from the top back to 1024.
    let p = u32::from(port) + n;
    if p <= 65_535 {
        p as u16
    } else {
        (1024 + (p - 65_536) % (65_535 - 1024 + 1)) as u16
    }
}

/// Whether an IPv4 address is private/LAN (RFC 1918, CGNAT, link-local).
fn is_private_v4(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_link_local()
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xC0) == 64)
        }
        IpAddr::V6(_) => false,
    }
}

/// Whether a router would masquerade traffic to this destination out of its WAN: a unicast
/// IPv4 address outside the private, loopback, link-local, multicast, broadcast and
/// unspecified ranges (documentation ranges count as public: scenarios use them so).
fn is_public_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !is_private_v4(ip)
                && !v4.is_loopback()
                && !v4.is_multicast()
                && !v4.is_broadcast()
                && !v4.is_unspecified()
        }
        IpAddr::V6(_) => false,
    }
}

impl Flow {
    /// The start of connection `i`.
    pub(crate) fn start_of(&self, i: u32) -> Duration {
        self.start.saturating_add(self.interval.saturating_mul(i))
    }

    fn per_packet(&self) -> (u64, u64) {
        match (self.kind, self.protocol) {
            (FlowKind::Normal | FlowKind::Fasttracked, SimProtocol::Tcp) => (120, 1200),
            (FlowKind::Normal | FlowKind::Fasttracked, _) => (70, 150),
            (FlowKind::TlsFreeze, _) => (400, 60),
            (FlowKind::UdpSpray, _) => (1250, 0),
            (FlowKind::Scan, _) => (60, 0),
            (FlowKind::PortScan, _) => (60, 40),
            (FlowKind::Custom, _) => (100, 1000),
        }
    }

    /// The addresses and ports of connection `i`: (src, src port, dst, dst port).
    pub(crate) fn tuple_of(&self, i: u32) -> (IpAddr, Option<u16>, IpAddr, Option<u16>) {
        let (mut src, mut src_port, mut dst, mut dst_port) =
            (self.src, self.src_port, self.dst, self.dst_port);
        if self.protocol.has_ports() && src_port.is_none() {
            // An ephemeral port derived from the flow's addresses, stable across calls.
            let h = crate::generate::mix(
                u64::from(dst_port.unwrap_or(0))
                    ^ ip_bits(self.dst)
                    ^ ip_bits(self.src).rotate_left(17),
            );
            src_port = Some(40_000 + (h % 20_000) as u16);
        }
        match self.vary {
            Vary::SrcPort => src_port = src_port.map(|p| add_to_port(p, i)),
            Vary::DstPort => dst_port = dst_port.map(|p| add_to_port(p, i)),
            Vary::DstAddress => dst = add_to_ip(dst, i),
            Vary::SrcAddress => src = add_to_ip(src, i),
        }
        (src, src_port, dst, dst_port)
    }

    /// The row of connection `i` at sim time `now`, or `None` when it does not exist (not yet
    /// started, or timed out). `wan` is the router's address used for source NAT.
    pub(crate) fn row_at(
        &self,
        i: u32,
        id: u64,
        now: Duration,
        wan: Option<IpAddr>,
    ) -> Option<ConnRow> {
        let start = self.start_of(i);
        let since = now.checked_sub(start)?;
        // A closed port answers at once: the row is over when it appears.
        let active_for = if self.kind == FlowKind::PortScan && !self.filtered {
            Duration::ZERO
        } else {
            self.duration
        };
        let active = since < active_for;
        let elapsed = if active { since } else { active_for };
        let e = elapsed.as_secs_f64();
        let grow = |base: u64, rate: f64| base.saturating_add((rate * e) as u64);
        let mut orig = grow(self.orig_packets, self.orig_rate);
        let mut repl = grow(self.repl_packets, self.repl_rate);
        match self.kind {
            FlowKind::TlsFreeze => repl = repl.min(self.repl_packets.max(2)),
            FlowKind::Scan => orig = orig.min(self.orig_packets.max(3)),
            FlowKind::UdpSpray => repl = self.repl_packets,
            // Retransmitted SYNs do not raise orig; a RST is the one reply.
            FlowKind::PortScan => (orig, repl) = (self.orig_packets, self.repl_packets),
            _ => {}
        }
        let tcp = self.protocol == SimProtocol::Tcp;
        let state = if tcp {
            Some(match (self.kind, active) {
                (FlowKind::Scan, _) => TcpState::SynSent,
                (FlowKind::PortScan, _) if self.filtered => TcpState::SynSent,
                (FlowKind::PortScan, _) => TcpState::Close,
                (FlowKind::Normal | FlowKind::Fasttracked, false) => TcpState::TimeWait,
                (FlowKind::TlsFreeze, false) => TcpState::Close,
                (FlowKind::Custom, _) => self.tcp_state.unwrap_or(TcpState::Established),
                _ => TcpState::Established,
            })
        } else {
            None
        };
        let assured = repl > 0
            && self.kind != FlowKind::PortScan
            && match state {
                Some(s) => s != TcpState::SynSent && s != TcpState::SynRecv,
                None => orig + repl > 2,
            };
        let timeout = match (state, self.protocol) {
            (Some(s), _) => s.default_timeout(),
            (None, SimProtocol::Udp) if assured => Duration::from_secs(180),
            (None, SimProtocol::Udp | SimProtocol::Icmp | SimProtocol::Icmpv6) => {
                Duration::from_secs(10)
            }
            (None, _) => Duration::from_secs(600),
        };
        let remaining = if active {
            timeout.saturating_sub(Duration::from_nanos(u64::from(since.subsec_nanos())))
        } else {
            let idle = since - active_for;
            if idle >= timeout {
                return None;
            }
            timeout - idle
        };
        let (src, src_port, dst, dst_port) = self.tuple_of(i);
        let nat = match self.srcnat {
            Some(false) => None,
            Some(true) => wan,
            None if is_private_v4(src) && is_public_unicast(dst) => wan,
            None => None,
        };
        let (osz, rsz) = self.per_packet();
        let mut flags = Flags::CONFIRMED;
        if repl > 0 {
            flags |= Flags::SEEN_REPLY;
        }
        let mut fasttrack = FastTrackCounts::default();
        if self.kind == FlowKind::Fasttracked {
            // The slow path counts the first packets each way; FastTrack the rest.
            let (main_orig, main_repl) = (
                orig.min(self.fasttrack_after),
                repl.min(self.fasttrack_after),
            );
            fasttrack = FastTrackCounts {
                orig_packets: orig - main_orig,
                orig_bytes: (orig - main_orig).saturating_mul(osz),
                repl_packets: repl - main_repl,
                repl_bytes: (repl - main_repl).saturating_mul(rsz),
            };
            (orig, repl) = (main_orig, main_repl);
            flags |= Flags::FASTTRACK;
        }
        if assured {
            flags |= Flags::ASSURED;
        }
        if nat.is_some() {
            flags |= Flags::SRCNAT;
        }
        let (orig_rate, repl_rate) = if active {
            (
                (self.orig_rate * osz as f64 * 8.0) as u64,
                if self.kind == FlowKind::UdpSpray {
                    0
                } else {
                    (self.repl_rate * rsz as f64 * 8.0) as u64
                },
            )
        } else {
            (0, 0)
        };
        Some(ConnRow {
            id,
            protocol: self.protocol,
            src,
            src_port,
            dst,
            dst_port,
            reply_src: dst,
            reply_src_port: dst_port,
            reply_dst: nat.unwrap_or(src),
            reply_dst_port: src_port,
            tcp_state: state,
            timeout: remaining,
            orig_packets: orig,
            orig_bytes: orig.saturating_mul(osz),
            repl_packets: repl,
            repl_bytes: repl.saturating_mul(rsz.max(60)),
            orig_rate,
            repl_rate,
            flags,
            fasttrack,
            mark: None,
            kind: None,
        })
    }
}

fn ip_bits(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => {
            let b = u128::from(v6);
            (b as u64) ^ ((b >> 64) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Result<Scenario, String> {
        Scenario::from_toml(text, "t.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn embedded_demo_and_example_parse() {
        let demo = Scenario::from_toml(DEMO_SCENARIO, "<demo>").unwrap();
        assert!(demo.flows.len() >= 6);
        assert!(demo
            .allowlist
            .iter()
            .any(|s| s.address == "1.1.1.1" && s.list == "allowlist"));
        let example = include_str!("../scenarios/example.toml");
        Scenario::from_toml(example, "example.toml").unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let e = one(
            "[[flow]]\nkind = \"normal\"\nsrc = \"1.2.3.4\"\ndst = \"5.6.7.8:80\"\nbogus = 1\n",
        )
        .unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        let e = one("[[flow]]\nkind = \"normal\"\nsrc = \"1.2.3.4\"\ndst = \"5.6.7.8:80\"\nstart = \"5x\"\n")
            .unwrap_err();
        assert!(e.contains("`start`") && e.contains("#1"), "{e}");
        let e = one("[[flow]]\nkind = \"frozen\"\nsrc = \"1.2.3.4\"\ndst = \"5.6.7.8:80\"\n")
            .unwrap_err();
        assert!(e.contains("frozen") && e.contains("tls-freeze"), "{e}");
        let e =
            one("[[flow]]\nkind = \"normal\"\nsrc = \"1.2.3.4\"\ndst = \"5.6.7.8\"\n").unwrap_err();
        assert!(e.contains("`dst`") && e.contains("port"), "{e}");
        let e = one("[[allowlist]]\naddress = \"1.1.1.1\"\ntimeout = \"soon\"\n").unwrap_err();
        assert!(
            e.contains("[[allowlist]] #1") && e.contains("`timeout`"),
            "{e}"
        );
        let e = one("[generate]\nconnections = 10\nanomaly_share = 2.0\n").unwrap_err();
        assert!(e.contains("anomaly_share"), "{e}");
    }

    #[test]
    fn tls_freeze_counters_over_time() {
        let s = one("[[flow]]\nkind = \"tls-freeze\"\nsrc = \"192.168.88.50:50000\"\ndst = \"203.0.113.45:443\"\nstart = \"5s\"\nduration = \"60s\"\n").unwrap();
        let f = &s.flows[0];
        let wan = Some(IpAddr::from([198, 51, 100, 2]));
        assert!(f.row_at(0, 1, Duration::from_secs(4), wan).is_none());
        let r = f.row_at(0, 1, Duration::from_secs(5), wan).unwrap();
        assert_eq!((r.orig_packets, r.repl_packets), (3, 1));
        let r = f.row_at(0, 1, Duration::from_secs(15), wan).unwrap();
        assert_eq!((r.orig_packets, r.repl_packets), (13, 2));
        assert_eq!(r.reply_dst, IpAddr::from([198, 51, 100, 2]));
        assert_eq!(r.tcp_state, Some(TcpState::Established));
        let r = f.row_at(0, 1, Duration::from_secs(66), wan).unwrap();
        assert_eq!(r.tcp_state, Some(TcpState::Close));
        assert_eq!(r.orig_packets, 63);
        assert!(f.row_at(0, 1, Duration::from_secs(76), wan).is_none());
    }

    #[test]
    fn count_and_vary() {
        let s = one("[[flow]]\nkind = \"udp-spray\"\nsrc = \"192.168.88.7\"\ndst = \"203.0.113.100:443\"\ncount = 3\nvary = \"dst-address\"\ninterval = 1\n").unwrap();
        let f = &s.flows[0];
        let r = f.row_at(2, 9, Duration::from_secs(2), None).unwrap();
        assert_eq!(r.dst, IpAddr::from([203, 0, 113, 102]));
        assert!(f.row_at(2, 9, Duration::from_millis(1999), None).is_none());
        assert_eq!(add_to_port(65_535, 1), 1024);
    }
}
