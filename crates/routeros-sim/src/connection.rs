//! Connection-table rows: the public [`SimConnection`] a test adds by hand, and the compact,
//! copyable row every table source (scenario flows, the generator, hand-added connections)
//! produces and that is rendered onto the wire.
//!
//! A row is a fixed-size value (addresses, counters, flags) plus two rarely set strings
//! (`connection-mark`, `connection-type`) shared with their source: making a row allocates
//! nothing, so a million-row print formats values into one reusable buffer. This module deliberately does
//! not decide which rows exist or how counters grow: that is the table's and the sources' job.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::kinds::{AddressFormat, Family, FastTrackCounters};
use crate::query::Props;

/// The `protocol` of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimProtocol {
    /// `tcp`
    Tcp,
    /// `udp`
    Udp,
    /// `icmp` (no ports)
    Icmp,
    /// `icmpv6` (no ports)
    Icmpv6,
    /// `gre` (no ports)
    Gre,
    /// Any other IP protocol, printed as its number (no ports).
    Other(u8),
}

impl SimProtocol {
    /// Whether rows of this protocol carry ports.
    pub fn has_ports(self) -> bool {
        matches!(self, SimProtocol::Tcp | SimProtocol::Udp)
    }

    /// Parses `tcp`, `udp`, `icmp`, `icmpv6`, `gre` or a protocol number.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "tcp" | "6" => SimProtocol::Tcp,
            "udp" | "17" => SimProtocol::Udp,
            "icmp" | "1" => SimProtocol::Icmp,
            "icmpv6" | "58" => SimProtocol::Icmpv6,
            "gre" | "47" => SimProtocol::Gre,
            other => SimProtocol::Other(other.parse().ok()?),
        })
    }

    fn write(self, out: &mut String) {
        match self {
            SimProtocol::Tcp => out.push_str("tcp"),
            SimProtocol::Udp => out.push_str("udp"),
            SimProtocol::Icmp => out.push_str("icmp"),
            SimProtocol::Icmpv6 => out.push_str("icmpv6"),
            SimProtocol::Gre => out.push_str("gre"),
            SimProtocol::Other(n) => {
                let _ = write!(out, "{n}");
            }
        }
    }
}

/// The `tcp-state` of a TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpState {
    /// `syn-sent`
    SynSent,
    /// `syn-recv`
    SynRecv,
    /// `established`
    Established,
    /// `fin-wait`
    FinWait,
    /// `close-wait`
    CloseWait,
    /// `last-ack`
    LastAck,
    /// `time-wait`
    TimeWait,
    /// `close`
    Close,
    /// `listen`
    Listen,
}

impl TcpState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TcpState::SynSent => "syn-sent",
            TcpState::SynRecv => "syn-recv",
            TcpState::Established => "established",
            TcpState::FinWait => "fin-wait",
            TcpState::CloseWait => "close-wait",
            TcpState::LastAck => "last-ack",
            TcpState::TimeWait => "time-wait",
            TcpState::Close => "close",
            TcpState::Listen => "listen",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "syn-sent" => TcpState::SynSent,
            "syn-recv" => TcpState::SynRecv,
            "established" => TcpState::Established,
            "fin-wait" => TcpState::FinWait,
            "close-wait" => TcpState::CloseWait,
            "last-ack" => TcpState::LastAck,
            "time-wait" => TcpState::TimeWait,
            "close" => TcpState::Close,
            "listen" => TcpState::Listen,
            _ => return None,
        })
    }

    /// RouterOS's default conntrack timeout for this state (`/ip/firewall/connection/tracking`).
    pub fn default_timeout(self) -> Duration {
        match self {
            TcpState::Established => Duration::from_secs(86_400),
            TcpState::SynSent | TcpState::SynRecv => Duration::from_secs(5),
            TcpState::Listen => Duration::from_secs(120),
            _ => Duration::from_secs(10),
        }
    }
}

/// The flags of a connection row, as `/ip/firewall/connection` prints them (`true`/`false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnFlags {
    /// `expected`: a related connection a helper expects.
    pub expected: bool,
    /// `seen-reply`: a packet came back.
    pub seen_reply: bool,
    /// `assured`: traffic flowed both ways long enough not to be dropped first.
    pub assured: bool,
    /// `confirmed`: the entry left the unconfirmed list (every listed entry, normally).
    pub confirmed: bool,
    /// `dying`: on its way out of the table.
    pub dying: bool,
    /// `fasttrack`: marked by a `fasttrack-connection` rule.
    pub fasttrack: bool,
    /// `hw-offload`: offloaded to the switch chip.
    pub hw_offload: bool,
    /// `srcnat`: source NAT applied.
    pub srcnat: bool,
    /// `dstnat`: destination NAT applied.
    pub dstnat: bool,
    /// `uses-helper`: handled by a conntrack helper (FTP, SIP, ...).
    pub uses_helper: bool,
}

impl ConnFlags {
    pub(crate) fn bits(self) -> u16 {
        let mut b = 0;
        for (on, bit) in [
            (self.expected, Flags::EXPECTED),
            (self.seen_reply, Flags::SEEN_REPLY),
            (self.assured, Flags::ASSURED),
            (self.confirmed, Flags::CONFIRMED),
            (self.dying, Flags::DYING),
            (self.fasttrack, Flags::FASTTRACK),
            (self.hw_offload, Flags::HW_OFFLOAD),
            (self.srcnat, Flags::SRCNAT),
            (self.dstnat, Flags::DSTNAT),
            (self.uses_helper, Flags::USES_HELPER),
        ] {
            if on {
                b |= bit;
            }
        }
        b
    }
}

/// A connection added by hand with `SimHandle::add_connection` (or given to
/// `SimHandle::sync_connections` by an external source such as a kernel-conntrack bridge).
///
/// It can carry every property of a `/ip/firewall/connection` row (`routeros-api.md`
/// section 5). Counters start at the given values and grow by `orig_pps`/`repl_pps` (and the
/// FastTrack counters by `orig_fasttrack_pps`/`repl_fasttrack_pps`) per second of sim time.
/// While any rate is non-zero the conntrack timeout is refreshed; otherwise it counts down
/// from `timeout` and the row disappears when it reaches zero. Whatever is `None` is derived
/// the way conntrack would: the reply tuple mirrors the original one (with `srcnat_to`
/// applied), flags follow the counters and the tuples, rates follow the packet rates.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConnection {
    /// The protocol.
    pub protocol: SimProtocol,
    /// Original-direction source address.
    pub src: IpAddr,
    /// Source port (ignored for protocols without ports).
    pub src_port: Option<u16>,
    /// Original-direction destination address.
    pub dst: IpAddr,
    /// Destination port (ignored for protocols without ports).
    pub dst_port: Option<u16>,
    /// TCP state (TCP only).
    pub tcp_state: Option<TcpState>,
    /// Packets sent by the originator so far.
    pub orig_packets: u64,
    /// Packets sent in reply so far.
    pub repl_packets: u64,
    /// Bytes sent by the originator so far.
    pub orig_bytes: u64,
    /// Bytes sent in reply so far.
    pub repl_bytes: u64,
    /// Originator packets per second of sim time from now on.
    pub orig_pps: f64,
    /// Reply packets per second of sim time from now on.
    pub repl_pps: f64,
    /// Conntrack timeout.
    pub timeout: Duration,
    /// Source NAT to this address: `srcnat=true`, `reply-dst-address` is this address.
    pub srcnat_to: Option<IpAddr>,
    /// `reply-src-address` (default: `dst`; a destination NAT changes it).
    pub reply_src: Option<IpAddr>,
    /// `reply-src-port` (default: `dst_port`).
    pub reply_src_port: Option<u16>,
    /// `reply-dst-address` (default: `srcnat_to`, else `src`).
    pub reply_dst: Option<IpAddr>,
    /// `reply-dst-port` (default: `src_port`).
    pub reply_dst_port: Option<u16>,
    /// Exactly these flags; `None`: derived (confirmed; seen-reply once a reply came;
    /// assured once replies flowed on an established or non-TCP flow; srcnat/dstnat when the
    /// reply tuple differs from the original one; fasttrack when it has FastTrack counters).
    pub flags: Option<ConnFlags>,
    /// `orig-fasttrack-packets`: originator packets that took the FastTrack path.
    pub orig_fasttrack_packets: u64,
    /// `orig-fasttrack-bytes`.
    pub orig_fasttrack_bytes: u64,
    /// `repl-fasttrack-packets`.
    pub repl_fasttrack_packets: u64,
    /// `repl-fasttrack-bytes`.
    pub repl_fasttrack_bytes: u64,
    /// Growth of `orig-fasttrack-packets` per second of sim time.
    pub orig_fasttrack_pps: f64,
    /// Growth of `repl-fasttrack-packets` per second of sim time.
    pub repl_fasttrack_pps: f64,
    /// `connection-mark` (printed empty when `None`).
    pub connection_mark: Option<String>,
    /// `connection-type` (a helper's name, `ftp`, `sip`, ...; absent when `None`).
    pub connection_type: Option<String>,
    /// `orig-rate` in bits per second; `None`: `orig_pps` (plus `orig_fasttrack_pps`) times
    /// the packet size.
    pub orig_rate: Option<u64>,
    /// `repl-rate` in bits per second; `None`: derived like `orig_rate`.
    pub repl_rate: Option<u64>,
}

impl SimConnection {
    fn base(protocol: SimProtocol, src: SocketAddr, dst: SocketAddr) -> Self {
        let ports = protocol.has_ports();
        Self {
            protocol,
            src: src.ip(),
            src_port: ports.then_some(src.port()),
            dst: dst.ip(),
            dst_port: ports.then_some(dst.port()),
            tcp_state: (protocol == SimProtocol::Tcp).then_some(TcpState::Established),
            orig_packets: 1,
            repl_packets: 0,
            orig_bytes: 60,
            repl_bytes: 0,
            orig_pps: 0.0,
            repl_pps: 0.0,
            timeout: match protocol {
                SimProtocol::Tcp => TcpState::Established.default_timeout(),
                SimProtocol::Udp => Duration::from_secs(180),
                _ => Duration::from_secs(600),
            },
            srcnat_to: None,
            reply_src: None,
            reply_src_port: None,
            reply_dst: None,
            reply_dst_port: None,
            flags: None,
            orig_fasttrack_packets: 0,
            orig_fasttrack_bytes: 0,
            repl_fasttrack_packets: 0,
            repl_fasttrack_bytes: 0,
            orig_fasttrack_pps: 0.0,
            repl_fasttrack_pps: 0.0,
            connection_mark: None,
            connection_type: None,
            orig_rate: None,
            repl_rate: None,
        }
    }

    /// An established TCP connection (1 packet out, none back).
    pub fn tcp(src: SocketAddr, dst: SocketAddr) -> Self {
        Self::base(SimProtocol::Tcp, src, dst)
    }

    /// A UDP connection (1 packet out, none back).
    pub fn udp(src: SocketAddr, dst: SocketAddr) -> Self {
        Self::base(SimProtocol::Udp, src, dst)
    }

    /// An ICMP (or ICMPv6) exchange: no ports.
    pub fn icmp(src: IpAddr, dst: IpAddr) -> Self {
        let protocol = match src {
            IpAddr::V4(_) => SimProtocol::Icmp,
            IpAddr::V6(_) => SimProtocol::Icmpv6,
        };
        let mut c = Self::base(protocol, SocketAddr::new(src, 0), SocketAddr::new(dst, 0));
        c.timeout = Duration::from_secs(10);
        c
    }

    /// A connection of any protocol (ports only kept for TCP and UDP).
    pub fn new(protocol: SimProtocol, src: SocketAddr, dst: SocketAddr) -> Self {
        let mut c = Self::base(protocol, src, dst);
        if !protocol.has_ports() && protocol != SimProtocol::Gre {
            c.timeout = Duration::from_secs(10);
        }
        c
    }

    /// Sets the packet counters (bytes follow at 100 bytes per packet out, 1000 back).
    pub fn packets(mut self, orig: u64, repl: u64) -> Self {
        self.orig_packets = orig;
        self.repl_packets = repl;
        self.orig_bytes = orig.saturating_mul(100);
        self.repl_bytes = repl.saturating_mul(1000);
        self
    }

    /// Sets the byte counters (after `packets`, which sets them from a packet size).
    pub fn bytes(mut self, orig: u64, repl: u64) -> Self {
        self.orig_bytes = orig;
        self.repl_bytes = repl;
        self
    }

    /// Sets the growth rates in packets per second of sim time.
    pub fn rates(mut self, orig_pps: f64, repl_pps: f64) -> Self {
        self.orig_pps = orig_pps;
        self.repl_pps = repl_pps;
        self
    }

    /// Sets `orig-rate` and `repl-rate` (bits per second) as given instead of deriving them.
    pub fn bit_rates(mut self, orig_bps: u64, repl_bps: u64) -> Self {
        self.orig_rate = Some(orig_bps);
        self.repl_rate = Some(repl_bps);
        self
    }

    /// Sets the TCP state (and its default timeout).
    pub fn state(mut self, state: TcpState) -> Self {
        self.tcp_state = Some(state);
        self.timeout = state.default_timeout();
        self
    }

    /// Sets the conntrack timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Source-NATs the connection to `addr` (the router's WAN address, typically).
    pub fn srcnat(mut self, addr: IpAddr) -> Self {
        self.srcnat_to = Some(addr);
        self
    }

    /// Destination-NATs the connection to `to` (a port forward): the reply comes from `to`.
    pub fn dstnat(mut self, to: SocketAddr) -> Self {
        self.reply_src = Some(to.ip());
        self.reply_src_port = self.protocol.has_ports().then_some(to.port());
        self
    }

    /// Sets the whole reply tuple (`reply-src-address`/`-port`, `reply-dst-address`/`-port`).
    pub fn reply(mut self, reply_src: SocketAddr, reply_dst: SocketAddr) -> Self {
        let ports = self.protocol.has_ports();
        self.reply_src = Some(reply_src.ip());
        self.reply_src_port = ports.then_some(reply_src.port());
        self.reply_dst = Some(reply_dst.ip());
        self.reply_dst_port = ports.then_some(reply_dst.port());
        self
    }

    /// Shows exactly these flags instead of deriving them.
    pub fn flags(mut self, flags: ConnFlags) -> Self {
        self.flags = Some(flags);
        self
    }

    /// FastTracked: `fasttrack=true` with these FastTrack packet counters (bytes at the
    /// connection's packet sizes); the main counters keep what went the slow path.
    pub fn fasttracked(mut self, orig_packets: u64, repl_packets: u64) -> Self {
        let (osz, rsz) = self.packet_sizes();
        self.orig_fasttrack_packets = orig_packets;
        self.repl_fasttrack_packets = repl_packets;
        self.orig_fasttrack_bytes = orig_packets.saturating_mul(osz);
        self.repl_fasttrack_bytes = repl_packets.saturating_mul(rsz);
        if let Some(f) = self.flags.as_mut() {
            f.fasttrack = true;
        }
        self
    }

    /// Growth of the FastTrack packet counters in packets per second of sim time.
    pub fn fasttrack_rates(mut self, orig_pps: f64, repl_pps: f64) -> Self {
        self.orig_fasttrack_pps = orig_pps;
        self.repl_fasttrack_pps = repl_pps;
        self
    }

    /// Sets `connection-mark`.
    pub fn mark(mut self, mark: &str) -> Self {
        self.connection_mark = Some(mark.to_owned());
        self
    }

    /// Sets `connection-type` (the helper, e.g. `ftp`).
    pub fn connection_type(mut self, kind: &str) -> Self {
        self.connection_type = Some(kind.to_owned());
        self
    }

    /// The table this connection is listed in.
    pub fn family(&self) -> Family {
        Family::of(self.src)
    }

    /// The 5-tuple that identifies this connection.
    pub fn tuple(&self) -> ConnTuple {
        let ports = self.protocol.has_ports();
        ConnTuple {
            protocol: self.protocol,
            src: self.src,
            src_port: if ports { self.src_port } else { None },
            dst: self.dst,
            dst_port: if ports { self.dst_port } else { None },
        }
    }

    /// Whether any counter grows.
    pub(crate) fn is_active(&self) -> bool {
        self.orig_pps > 0.0
            || self.repl_pps > 0.0
            || self.orig_fasttrack_pps > 0.0
            || self.repl_fasttrack_pps > 0.0
    }

    /// Bytes per packet each way, from the counters (100 out and 1000 back when unknown).
    fn packet_sizes(&self) -> (u64, u64) {
        (
            self.orig_bytes
                .checked_div(self.orig_packets)
                .unwrap_or(100),
            self.repl_bytes
                .checked_div(self.repl_packets)
                .unwrap_or(1000),
        )
    }

    /// The row at `elapsed` sim time after the counters were set, with `remaining` timeout;
    /// `strings` are the interned `connection-mark` and `connection-type`.
    pub(crate) fn row_at(
        &self,
        id: u64,
        elapsed: Duration,
        remaining: Duration,
        strings: &RowStrings,
    ) -> ConnRow {
        let secs = elapsed.as_secs_f64();
        let grow = |base: u64, pps: f64| -> u64 {
            if pps > 0.0 {
                base.saturating_add((pps * secs) as u64)
            } else {
                base
            }
        };
        let orig_packets = grow(self.orig_packets, self.orig_pps);
        let repl_packets = grow(self.repl_packets, self.repl_pps);
        let ft_orig = grow(self.orig_fasttrack_packets, self.orig_fasttrack_pps);
        let ft_repl = grow(self.repl_fasttrack_packets, self.repl_fasttrack_pps);
        let (orig_size, repl_size) = self.packet_sizes();
        let ports = self.protocol.has_ports();
        let src_port = if ports { self.src_port } else { None };
        let dst_port = if ports { self.dst_port } else { None };
        let reply_src = self.reply_src.unwrap_or(self.dst);
        let reply_src_port = if ports {
            self.reply_src_port.or(dst_port)
        } else {
            None
        };
        let reply_dst = self.reply_dst.or(self.srcnat_to).unwrap_or(self.src);
        let reply_dst_port = if ports {
            self.reply_dst_port.or(src_port)
        } else {
            None
        };
        let fasttracked = self.orig_fasttrack_packets > 0
            || self.repl_fasttrack_packets > 0
            || self.orig_fasttrack_pps > 0.0
            || self.repl_fasttrack_pps > 0.0;
        let flags = match self.flags {
            Some(f) => f.bits(),
            None => {
                let mut flags = Flags::CONFIRMED;
                let replies = repl_packets + ft_repl;
                if replies > 0 {
                    flags |= Flags::SEEN_REPLY;
                    if self.tcp_state == Some(TcpState::Established)
                        || (self.protocol != SimProtocol::Tcp
                            && replies + orig_packets + ft_orig > 2)
                    {
                        flags |= Flags::ASSURED;
                    }
                }
                if (reply_dst, reply_dst_port) != (self.src, src_port) {
                    flags |= Flags::SRCNAT;
                }
                if (reply_src, reply_src_port) != (self.dst, dst_port) {
                    flags |= Flags::DSTNAT;
                }
                if fasttracked {
                    flags |= Flags::FASTTRACK;
                }
                flags
            }
        };
        let ft_orig_size = self
            .orig_fasttrack_bytes
            .checked_div(self.orig_fasttrack_packets)
            .unwrap_or(orig_size);
        let ft_repl_size = self
            .repl_fasttrack_bytes
            .checked_div(self.repl_fasttrack_packets)
            .unwrap_or(repl_size);
        let derived_rate =
            |pps: f64, ft_pps: f64, size: u64| ((pps + ft_pps) * size as f64 * 8.0) as u64;
        ConnRow {
            id,
            protocol: self.protocol,
            src: self.src,
            src_port,
            dst: self.dst,
            dst_port,
            reply_src,
            reply_src_port,
            reply_dst,
            reply_dst_port,
            tcp_state: if self.protocol == SimProtocol::Tcp {
                self.tcp_state
            } else {
                None
            },
            timeout: remaining,
            orig_packets,
            orig_bytes: self
                .orig_bytes
                .saturating_add((orig_packets - self.orig_packets).saturating_mul(orig_size)),
            repl_packets,
            repl_bytes: self
                .repl_bytes
                .saturating_add((repl_packets - self.repl_packets).saturating_mul(repl_size)),
            orig_rate: self
                .orig_rate
                .unwrap_or_else(|| derived_rate(self.orig_pps, self.orig_fasttrack_pps, orig_size)),
            repl_rate: self
                .repl_rate
                .unwrap_or_else(|| derived_rate(self.repl_pps, self.repl_fasttrack_pps, repl_size)),
            flags,
            fasttrack: FastTrackCounts {
                orig_packets: ft_orig,
                orig_bytes: self.orig_fasttrack_bytes.saturating_add(
                    (ft_orig - self.orig_fasttrack_packets).saturating_mul(ft_orig_size),
                ),
                repl_packets: ft_repl,
                repl_bytes: self.repl_fasttrack_bytes.saturating_add(
                    (ft_repl - self.repl_fasttrack_packets).saturating_mul(ft_repl_size),
                ),
            },
            mark: strings.mark.clone(),
            kind: strings.kind.clone(),
        }
    }
}

/// The 5-tuple of a connection: what identifies it in conntrack (and in
/// `SimHandle::sync_connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnTuple {
    /// The protocol.
    pub protocol: SimProtocol,
    /// Original-direction source address.
    pub src: IpAddr,
    /// Source port (TCP and UDP only).
    pub src_port: Option<u16>,
    /// Original-direction destination address.
    pub dst: IpAddr,
    /// Destination port (TCP and UDP only).
    pub dst_port: Option<u16>,
}

/// The string properties of a hand-added row, shared by every row made from it (made once
/// when the connection is added, so printing a row allocates nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RowStrings {
    pub(crate) mark: Option<Arc<str>>,
    pub(crate) kind: Option<Arc<str>>,
}

impl RowStrings {
    pub(crate) fn of(c: &SimConnection) -> Self {
        Self {
            mark: c.connection_mark.as_deref().map(Arc::from),
            kind: c.connection_type.as_deref().map(Arc::from),
        }
    }
}

/// Connection flags as bits.
pub(crate) struct Flags;

impl Flags {
    pub(crate) const EXPECTED: u16 = 1;
    pub(crate) const SEEN_REPLY: u16 = 1 << 1;
    pub(crate) const ASSURED: u16 = 1 << 2;
    pub(crate) const CONFIRMED: u16 = 1 << 3;
    pub(crate) const DYING: u16 = 1 << 4;
    pub(crate) const FASTTRACK: u16 = 1 << 5;
    pub(crate) const HW_OFFLOAD: u16 = 1 << 6;
    pub(crate) const SRCNAT: u16 = 1 << 7;
    pub(crate) const DSTNAT: u16 = 1 << 8;
    pub(crate) const USES_HELPER: u16 = 1 << 9;
}

/// The FastTrack counters of a row (kept apart from the main ones, as RouterOS does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct FastTrackCounts {
    pub(crate) orig_packets: u64,
    pub(crate) orig_bytes: u64,
    pub(crate) repl_packets: u64,
    pub(crate) repl_bytes: u64,
}

/// One connection-table row at one instant: fixed size apart from two shared strings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ConnRow {
    pub(crate) id: u64,
    pub(crate) protocol: SimProtocol,
    pub(crate) src: IpAddr,
    pub(crate) src_port: Option<u16>,
    pub(crate) dst: IpAddr,
    pub(crate) dst_port: Option<u16>,
    pub(crate) reply_src: IpAddr,
    pub(crate) reply_src_port: Option<u16>,
    pub(crate) reply_dst: IpAddr,
    pub(crate) reply_dst_port: Option<u16>,
    pub(crate) tcp_state: Option<TcpState>,
    pub(crate) timeout: Duration,
    pub(crate) orig_packets: u64,
    pub(crate) orig_bytes: u64,
    pub(crate) repl_packets: u64,
    pub(crate) repl_bytes: u64,
    pub(crate) orig_rate: u64,
    pub(crate) repl_rate: u64,
    pub(crate) flags: u16,
    pub(crate) fasttrack: FastTrackCounts,
    /// `connection-mark` (empty when `None`).
    pub(crate) mark: Option<Arc<str>>,
    /// `connection-type` (absent when `None`).
    pub(crate) kind: Option<Arc<str>>,
}

impl ConnRow {
    /// The row's 5-tuple.
    pub(crate) fn tuple(&self) -> ConnTuple {
        ConnTuple {
            protocol: self.protocol,
            src: self.src,
            src_port: self.src_port,
            dst: self.dst,
            dst_port: self.dst_port,
        }
    }
}

/// A connection a client removed with `/ip/firewall/connection/remove` (or the IPv6 one), as
/// `SimHandle::removed_connections` reports it: an external source (a kernel-conntrack
/// bridge) deletes the same flow where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedConnection {
    /// Its `.id` (`*1A`).
    pub id: String,
    /// The table it was in.
    pub family: Family,
    /// Its 5-tuple.
    pub tuple: ConnTuple,
}

/// How a router prints rows: the address format and whether rows without FastTrack show the
/// FastTrack counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct RowStyle {
    pub(crate) format: AddressFormat,
    pub(crate) fasttrack: FastTrackCounters,
}

/// A row as one router would print it (its [`RowStyle`] applied).
pub(crate) struct RowView<'a> {
    pub(crate) row: &'a ConnRow,
    pub(crate) style: RowStyle,
}

impl RowView<'_> {
    /// Whether the row shows the FastTrack counters.
    fn shows_fasttrack(&self) -> bool {
        self.style.fasttrack == FastTrackCounters::Always || self.row.flags & Flags::FASTTRACK != 0
    }
}

const NAMES_SEPARATE: &[&str] = &[
    ".id",
    "protocol",
    "src-address",
    "src-port",
    "dst-address",
    "dst-port",
    "reply-src-address",
    "reply-src-port",
    "reply-dst-address",
    "reply-dst-port",
    "tcp-state",
    "timeout",
    "orig-packets",
    "orig-bytes",
    "orig-fasttrack-packets",
    "orig-fasttrack-bytes",
    "repl-packets",
    "repl-bytes",
    "repl-fasttrack-packets",
    "repl-fasttrack-bytes",
    "orig-rate",
    "repl-rate",
    "expected",
    "seen-reply",
    "assured",
    "confirmed",
    "dying",
    "fasttrack",
    "hw-offload",
    "srcnat",
    "dstnat",
    "uses-helper",
    "connection-mark",
    "connection-type",
];

fn write_addr(out: &mut String, ip: IpAddr, port: Option<u16>, format: AddressFormat) {
    match (format, port, ip) {
        (AddressFormat::Combined, Some(p), IpAddr::V4(v4)) => {
            let _ = write!(out, "{v4}:{p}");
        }
        (AddressFormat::Combined, Some(p), IpAddr::V6(v6)) => {
            let _ = write!(out, "[{v6}]:{p}");
        }
        _ => {
            let _ = write!(out, "{ip}");
        }
    }
}

fn write_port(out: &mut String, port: Option<u16>, format: AddressFormat) -> bool {
    match (format, port) {
        (AddressFormat::Separate, Some(p)) => {
            let _ = write!(out, "{p}");
            true
        }
        _ => false,
    }
}

fn write_bool(out: &mut String, v: bool) -> bool {
    out.push_str(if v { "true" } else { "false" });
    true
}

/// Writes a timeout the way RouterOS prints it, at whole-second resolution.
pub(crate) fn write_timeout(out: &mut String, d: Duration) {
    let mut secs = d.as_secs();
    if secs == 0 {
        out.push_str("0s");
        return;
    }
    for (unit, size) in [
        ("w", 604_800u64),
        ("d", 86_400),
        ("h", 3_600),
        ("m", 60),
        ("s", 1),
    ] {
        let n = secs / size;
        secs %= size;
        if n > 0 {
            let _ = write!(out, "{n}{unit}");
        }
    }
}

impl Props for RowView<'_> {
    fn value(&self, name: &str, out: &mut String) -> bool {
        let r = self.row;
        let f = self.style.format;
        let num = |out: &mut String, n: u64| {
            let _ = write!(out, "{n}");
            true
        };
        match name {
            ".id" => {
                let _ = write!(out, "*{:X}", r.id);
                true
            }
            "protocol" => {
                r.protocol.write(out);
                true
            }
            "src-address" => {
                write_addr(out, r.src, r.src_port, f);
                true
            }
            "dst-address" => {
                write_addr(out, r.dst, r.dst_port, f);
                true
            }
            "reply-src-address" => {
                write_addr(out, r.reply_src, r.reply_src_port, f);
                true
            }
            "reply-dst-address" => {
                write_addr(out, r.reply_dst, r.reply_dst_port, f);
                true
            }
            "src-port" => write_port(out, r.src_port, f),
            "dst-port" => write_port(out, r.dst_port, f),
            "reply-src-port" => write_port(out, r.reply_src_port, f),
            "reply-dst-port" => write_port(out, r.reply_dst_port, f),
            "tcp-state" => match r.tcp_state {
                Some(s) => {
                    out.push_str(s.as_str());
                    true
                }
                None => false,
            },
            "timeout" => {
                write_timeout(out, r.timeout);
                true
            }
            "orig-packets" => num(out, r.orig_packets),
            "orig-bytes" => num(out, r.orig_bytes),
            "repl-packets" => num(out, r.repl_packets),
            "repl-bytes" => num(out, r.repl_bytes),
            "orig-fasttrack-packets"
            | "orig-fasttrack-bytes"
            | "repl-fasttrack-packets"
            | "repl-fasttrack-bytes" => match self.number(name) {
                Some(n) => num(out, n),
                None => false,
            },
            "orig-rate" => num(out, r.orig_rate),
            "repl-rate" => num(out, r.repl_rate),
            "expected" => write_bool(out, r.flags & Flags::EXPECTED != 0),
            "seen-reply" => write_bool(out, r.flags & Flags::SEEN_REPLY != 0),
            "assured" => write_bool(out, r.flags & Flags::ASSURED != 0),
            "confirmed" => write_bool(out, r.flags & Flags::CONFIRMED != 0),
            "dying" => write_bool(out, r.flags & Flags::DYING != 0),
            "fasttrack" => write_bool(out, r.flags & Flags::FASTTRACK != 0),
            "hw-offload" => write_bool(out, r.flags & Flags::HW_OFFLOAD != 0),
            "srcnat" => write_bool(out, r.flags & Flags::SRCNAT != 0),
            "dstnat" => write_bool(out, r.flags & Flags::DSTNAT != 0),
            "uses-helper" => write_bool(out, r.flags & Flags::USES_HELPER != 0),
            "connection-mark" => {
                if let Some(m) = &r.mark {
                    out.push_str(m);
                }
                true
            }
            "connection-type" => match &r.kind {
                Some(k) => {
                    out.push_str(k);
                    true
                }
                None => false,
            },
            _ => false,
        }
    }

    fn number(&self, name: &str) -> Option<u64> {
        let r = self.row;
        match name {
            "orig-packets" => Some(r.orig_packets),
            "orig-bytes" => Some(r.orig_bytes),
            "repl-packets" => Some(r.repl_packets),
            "repl-bytes" => Some(r.repl_bytes),
            "orig-rate" => Some(r.orig_rate),
            "repl-rate" => Some(r.repl_rate),
            "orig-fasttrack-packets" if self.shows_fasttrack() => Some(r.fasttrack.orig_packets),
            "orig-fasttrack-bytes" if self.shows_fasttrack() => Some(r.fasttrack.orig_bytes),
            "repl-fasttrack-packets" if self.shows_fasttrack() => Some(r.fasttrack.repl_packets),
            "repl-fasttrack-bytes" if self.shows_fasttrack() => Some(r.fasttrack.repl_bytes),
            _ => None,
        }
    }

    fn for_each(&self, scratch: &mut String, f: &mut dyn FnMut(&str, &str)) {
        for name in NAMES_SEPARATE {
            scratch.clear();
            if self.value(name, scratch) {
                f(name, scratch);
            }
        }
    }
}

/// Parses an `.id` like `*1A2B`.
pub(crate) fn parse_id(s: &str) -> Option<u64> {
    let hex = s.trim().strip_prefix('*')?;
    if hex.is_empty() || hex.len() > 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Formats an `.id`.
pub(crate) fn format_id(id: u64) -> String {
    format!("*{id:X}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(c: &SimConnection, format: AddressFormat) -> Vec<(String, String)> {
        let row = c.row_at(
            0x1A2B,
            Duration::ZERO,
            Duration::from_secs(86_399),
            &RowStrings::of(c),
        );
        let view = RowView {
            row: &row,
            style: RowStyle {
                format,
                ..RowStyle::default()
            },
        };
        let mut out = Vec::new();
        view.for_each(&mut String::new(), &mut |n, v| {
            out.push((n.to_owned(), v.to_owned()))
        });
        out
    }

    fn get<'a>(p: &'a [(String, String)], n: &str) -> Option<&'a str> {
        p.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str())
    }

    #[test]
    fn both_address_formats() {
        let c = SimConnection::tcp(
            "192.168.88.50:54321".parse().unwrap(),
            "203.0.113.45:443".parse().unwrap(),
        )
        .packets(5, 1);
        let sep = props(&c, AddressFormat::Separate);
        assert_eq!(get(&sep, ".id"), Some("*1A2B"));
        assert_eq!(get(&sep, "src-address"), Some("192.168.88.50"));
        assert_eq!(get(&sep, "src-port"), Some("54321"));
        assert_eq!(get(&sep, "reply-src-port"), Some("443"));
        assert_eq!(get(&sep, "timeout"), Some("23h59m59s"));
        assert_eq!(get(&sep, "tcp-state"), Some("established"));
        let comb = props(&c, AddressFormat::Combined);
        assert_eq!(get(&comb, "src-address"), Some("192.168.88.50:54321"));
        assert_eq!(get(&comb, "src-port"), None);
        let icmp = SimConnection::icmp("192.168.88.2".parse().unwrap(), "8.8.8.8".parse().unwrap());
        let p = props(&icmp, AddressFormat::Combined);
        assert_eq!(get(&p, "dst-address"), Some("8.8.8.8"));
        assert_eq!(get(&p, "tcp-state"), None);
        let v6 = SimConnection::tcp(
            "[fd00:88::5]:40000".parse().unwrap(),
            "[2001:db8::1]:443".parse().unwrap(),
        );
        let p = props(&v6, AddressFormat::Combined);
        assert_eq!(get(&p, "dst-address"), Some("[2001:db8::1]:443"));
    }

    #[test]
    fn ids() {
        assert_eq!(parse_id("*1A2B"), Some(0x1A2B));
        assert_eq!(parse_id("*a"), Some(10));
        assert_eq!(parse_id("1"), None);
        assert_eq!(parse_id("*"), None);
        assert_eq!(format_id(0x5802), "*5802");
    }
}
