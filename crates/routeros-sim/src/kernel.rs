//! The Linux kernel's connection tracking table, read as RouterOS would show it.
//!
//! RouterOS is Linux-based: its `/ip/firewall/connection` is the kernel's netfilter conntrack.
//! This module reads the conntrack table of a network namespace (the lab's router, see
//! `lab/README.md`) and maps every entry to the properties of `routeros-api.md` section 5, so
//! the simulator can serve a real kernel's table.
//!
//! # How it reads: the `conntrack` tool, not netlink
//!
//! It runs `conntrack -L -f ipv4|ipv6 -o extended,id` (conntrack-tools, through
//! `ip netns exec NAME` for a namespace) and parses the text. Deleting runs `conntrack -D`
//! with the entry's original tuple. The choice over a netlink crate, and why:
//!
//! - The lab needs the tool anyway (to flush, to wait for rows), and it runs as root on Linux
//!   only; the simulator builds everywhere. A netlink reader would be Linux-only code behind
//!   `cfg`, and a socket in another namespace means `setns(2)` on a thread, which does not mix
//!   with a tokio worker pool; `ip netns exec` does it in a child process.
//! - The maintained MIT netlink crate (`netlink-packet-netfilter` 0.4) decodes tuples, status,
//!   timeout and TCP state but not the counters or the entry id, so the attributes rosguard
//!   needs most would be decoded by hand anyway; the other conntrack crate has no stated
//!   licence in its manifest. conntrack-tools is GPL, and is only run as a program, never
//!   linked: the project stays MIT.
//! - The text format is stable (conntrack-tools 1.4) and self-describing (`key=value`), and
//!   the same tool prints what an operator would look at.
//!
//! The price is a process per read (a few milliseconds for the lab's tables), held to
//! [`ConntrackReader::timeout`] and [`ConntrackReader::max_output`].
//!
//! # The mapping
//!
//! | RouterOS | kernel |
//! |---|---|
//! | `.id` | the entry's `id=` (conntrack's own id, stable while the entry lives) as `*HEX` |
//! | `protocol` | the layer-4 name (`tcp`, `udp`, `icmp`, `icmpv6`, `gre`), else its number |
//! | `src-address` ... `reply-dst-port` | the original and reply tuples |
//! | `tcp-state` | `SYN_SENT` `syn-sent`, `SYN_RECV` `syn-recv`, `ESTABLISHED` `established`, `FIN_WAIT` `fin-wait`, `CLOSE_WAIT` `close-wait`, `LAST_ACK` `last-ack`, `TIME_WAIT` `time-wait`, `CLOSE` `close`; state 9 (`SYN_SENT2`, printed `LISTEN` by older tools: the slot RouterOS names `listen`) `listen`; `NONE` no tcp-state |
//! | `timeout` | the seconds left, as a RouterOS duration |
//! | `orig-/repl-packets/bytes` | `packets=`/`bytes=` of each direction (needs `nf_conntrack_acct=1`) |
//! | `seen-reply` | not `[UNREPLIED]` |
//! | `assured` | `[ASSURED]` |
//! | `fasttrack`, `hw-offload` | `[OFFLOAD]`, `[HW_OFFLOAD]` (the kernel's flowtable, Linux's FastTrack) |
//! | `srcnat`, `dstnat` | the reply tuple differs from the swapped original (destination, source) |
//! | `uses-helper` | a `helper=` is shown |
//! | `connection-mark` | a non-zero `mark=`, as its number |
//! | `confirmed` | always true: a listing shows only confirmed entries |
//!
//! It deliberately does not produce what the text does not carry: `expected` and `dying` are
//! always false (the tool prints neither status bit), the FastTrack counters are zero (the
//! kernel counts offloaded packets in the main counters) and rates are absent (one snapshot
//! has no time axis). Lines it cannot read are returned as errors next to the rows, never
//! fatal: one odd entry does not hide the table.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt as _;
use tokio::process::Command;

use crate::connection::{write_timeout, ConnFlags, SimConnection, SimProtocol, TcpState};
use crate::error::SimError;
use crate::kinds::{AddressFormat, Family};

/// One kernel conntrack entry, in RouterOS's terms (field names follow the properties).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelConnection {
    /// The kernel's entry id (`.id` is `*` and this in hex).
    pub id: u32,
    /// The table it is listed in.
    pub family: Family,
    /// The layer-4 protocol number (6 tcp, 17 udp, 1 icmp, 58 icmpv6, 47 gre, ...).
    pub protocol_number: u8,
    /// `src-address` (original direction).
    pub src_address: IpAddr,
    /// `src-port` (protocols with ports only).
    pub src_port: Option<u16>,
    /// `dst-address`.
    pub dst_address: IpAddr,
    /// `dst-port`.
    pub dst_port: Option<u16>,
    /// `reply-src-address`.
    pub reply_src_address: IpAddr,
    /// `reply-src-port`.
    pub reply_src_port: Option<u16>,
    /// `reply-dst-address` (the router's WAN address under masquerade).
    pub reply_dst_address: IpAddr,
    /// `reply-dst-port`.
    pub reply_dst_port: Option<u16>,
    /// `tcp-state` (TCP only, and not for the kernel's `NONE`).
    pub tcp_state: Option<TcpState>,
    /// `timeout`: what is left of the entry's life.
    pub timeout: Duration,
    /// `orig-packets`.
    pub orig_packets: u64,
    /// `orig-bytes`.
    pub orig_bytes: u64,
    /// `repl-packets`.
    pub repl_packets: u64,
    /// `repl-bytes`.
    pub repl_bytes: u64,
    /// `assured`.
    pub assured: bool,
    /// `seen-reply`.
    pub seen_reply: bool,
    /// `fasttrack` (the kernel's software flow offload).
    pub fasttrack: bool,
    /// `hw-offload`.
    pub hw_offload: bool,
    /// `srcnat`.
    pub srcnat: bool,
    /// `dstnat`.
    pub dstnat: bool,
    /// The conntrack helper handling it (`helper=ftp`): `uses-helper`, `connection-type`.
    pub helper: Option<String>,
    /// `connection-mark` (the kernel mark, when not zero).
    pub connection_mark: Option<u32>,
}

impl KernelConnection {
    /// `.id` as RouterOS prints it.
    pub fn routeros_id(&self) -> String {
        format!("*{:X}", self.id)
    }

    /// `protocol` as RouterOS prints it.
    pub fn protocol(&self) -> String {
        match self.protocol_number {
            6 => "tcp".into(),
            17 => "udp".into(),
            1 => "icmp".into(),
            58 => "icmpv6".into(),
            47 => "gre".into(),
            n => n.to_string(),
        }
    }

    /// The row's properties as a RouterOS router prints them, in either address format
    /// (`routeros-api.md` section 5). Absent properties (a port of icmp, a tcp-state of udp)
    /// are left out, as RouterOS leaves them out.
    pub fn properties(&self, format: AddressFormat) -> Vec<(&'static str, String)> {
        let mut p: Vec<(&'static str, String)> = Vec::with_capacity(32);
        p.push((".id", self.routeros_id()));
        p.push(("protocol", self.protocol()));
        let endpoints = [
            ("src-address", "src-port", self.src_address, self.src_port),
            ("dst-address", "dst-port", self.dst_address, self.dst_port),
            (
                "reply-src-address",
                "reply-src-port",
                self.reply_src_address,
                self.reply_src_port,
            ),
            (
                "reply-dst-address",
                "reply-dst-port",
                self.reply_dst_address,
                self.reply_dst_port,
            ),
        ];
        for (addr_name, port_name, ip, port) in endpoints {
            match (format, port) {
                (AddressFormat::Combined, Some(port)) => p.push((
                    addr_name,
                    match ip {
                        IpAddr::V4(v4) => format!("{v4}:{port}"),
                        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
                    },
                )),
                (AddressFormat::Separate, Some(port)) => {
                    p.push((addr_name, ip.to_string()));
                    p.push((port_name, port.to_string()));
                }
                (_, None) => p.push((addr_name, ip.to_string())),
            }
        }
        if let Some(state) = self.tcp_state {
            p.push(("tcp-state", state.as_str().into()));
        }
        let mut timeout = String::new();
        write_timeout(&mut timeout, self.timeout);
        p.push(("timeout", timeout));
        for (name, v) in [
            ("orig-packets", self.orig_packets),
            ("orig-bytes", self.orig_bytes),
            ("orig-fasttrack-packets", 0),
            ("orig-fasttrack-bytes", 0),
            ("repl-packets", self.repl_packets),
            ("repl-bytes", self.repl_bytes),
            ("repl-fasttrack-packets", 0),
            ("repl-fasttrack-bytes", 0),
        ] {
            p.push((name, v.to_string()));
        }
        for (name, v) in [
            ("expected", false),
            ("seen-reply", self.seen_reply),
            ("assured", self.assured),
            ("confirmed", true),
            ("dying", false),
            ("fasttrack", self.fasttrack),
            ("hw-offload", self.hw_offload),
            ("srcnat", self.srcnat),
            ("dstnat", self.dstnat),
            ("uses-helper", self.helper.is_some()),
        ] {
            p.push((name, v.to_string()));
        }
        if let Some(mark) = self.connection_mark {
            p.push(("connection-mark", mark.to_string()));
        }
        if let Some(helper) = &self.helper {
            p.push(("connection-type", helper.clone()));
        }
        p
    }

    /// The row as a simulator connection with every property above, growing no further
    /// (what `SimHandle::sync_connections` takes).
    pub fn to_sim_connection(&self) -> SimConnection {
        let protocol = match self.protocol_number {
            6 => SimProtocol::Tcp,
            17 => SimProtocol::Udp,
            1 => SimProtocol::Icmp,
            58 => SimProtocol::Icmpv6,
            47 => SimProtocol::Gre,
            n => SimProtocol::Other(n),
        };
        SimConnection {
            protocol,
            src: self.src_address,
            src_port: self.src_port,
            dst: self.dst_address,
            dst_port: self.dst_port,
            tcp_state: self.tcp_state,
            orig_packets: self.orig_packets,
            repl_packets: self.repl_packets,
            orig_bytes: self.orig_bytes,
            repl_bytes: self.repl_bytes,
            orig_pps: 0.0,
            repl_pps: 0.0,
            timeout: self.timeout,
            srcnat_to: self.srcnat.then_some(self.reply_dst_address),
            reply_src: Some(self.reply_src_address),
            reply_src_port: self.reply_src_port,
            reply_dst: Some(self.reply_dst_address),
            reply_dst_port: self.reply_dst_port,
            flags: Some(ConnFlags {
                expected: false,
                seen_reply: self.seen_reply,
                assured: self.assured,
                confirmed: true,
                dying: false,
                fasttrack: self.fasttrack,
                hw_offload: self.hw_offload,
                srcnat: self.srcnat,
                dstnat: self.dstnat,
                uses_helper: self.helper.is_some(),
            }),
            orig_fasttrack_packets: 0,
            orig_fasttrack_bytes: 0,
            repl_fasttrack_packets: 0,
            repl_fasttrack_bytes: 0,
            orig_fasttrack_pps: 0.0,
            repl_fasttrack_pps: 0.0,
            connection_mark: self.connection_mark.map(|m| m.to_string()),
            connection_type: self.helper.clone(),
            orig_rate: None,
            repl_rate: None,
        }
    }
}

/// What one listing gave: the rows read, and the lines that could not be read (line number
/// from 1, and why).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConntrackDump {
    /// The entries, in the tool's order.
    pub rows: Vec<KernelConnection>,
    /// Lines that are no conntrack entry in the expected format.
    pub errors: Vec<(usize, String)>,
}

/// Parses the output of `conntrack -L -o extended,id` (entries of both families may be
/// mixed). Blank lines and the tool's summary line are skipped.
pub fn parse_conntrack(text: &str) -> ConntrackDump {
    let mut dump = ConntrackDump::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("conntrack v") {
            continue;
        }
        match parse_line(line) {
            Ok(row) => dump.rows.push(row),
            Err(e) => dump.errors.push((i + 1, e)),
        }
    }
    dump
}

/// One direction's tuple as the text gives it.
#[derive(Default)]
struct Tuple {
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    sport: Option<u16>,
    dport: Option<u16>,
    packets: Option<u64>,
    bytes: Option<u64>,
    /// icmp type/code/id, gre keys: part of the tuple, not of the row.
    other: u8,
}

impl Tuple {
    /// Takes `key=value` if it belongs to a tuple of `protocol` and is not set yet; `Ok(false)`
    /// when the key starts something else (the next tuple, or the entry's own fields: an
    /// icmp tuple's `id=` comes before the entry's `id=`).
    fn take(&mut self, protocol: u8, key: &str, value: &str) -> Result<bool, String> {
        fn num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
            v.parse().map_err(|_| format!("{key}={v} is not a number"))
        }
        fn ip(key: &str, v: &str) -> Result<IpAddr, String> {
            v.parse()
                .map_err(|_| format!("{key}={v} is not an address"))
        }
        let bit = |name: &str| match (protocol, name) {
            (1 | 58, "type") => 1u8,
            (1 | 58, "code") => 2,
            (1 | 58, "id") => 4,
            (47, "srckey") => 8,
            (47, "dstkey") => 16,
            _ => 0,
        };
        match key {
            "src" if self.src.is_none() => self.src = Some(ip(key, value)?),
            "dst" if self.dst.is_none() => self.dst = Some(ip(key, value)?),
            "sport" if self.sport.is_none() => self.sport = Some(num(key, value)?),
            "dport" if self.dport.is_none() => self.dport = Some(num(key, value)?),
            "packets" if self.packets.is_none() => self.packets = Some(num(key, value)?),
            "bytes" if self.bytes.is_none() => self.bytes = Some(num(key, value)?),
            _ if bit(key) != 0 && self.other & bit(key) == 0 => self.other |= bit(key),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

fn tcp_state(name: &str) -> Result<Option<TcpState>, String> {
    Ok(Some(match name {
        "SYN_SENT" => TcpState::SynSent,
        "SYN_RECV" => TcpState::SynRecv,
        "ESTABLISHED" => TcpState::Established,
        "FIN_WAIT" => TcpState::FinWait,
        "CLOSE_WAIT" => TcpState::CloseWait,
        "LAST_ACK" => TcpState::LastAck,
        "TIME_WAIT" => TcpState::TimeWait,
        "CLOSE" => TcpState::Close,
        // Kernel state 9: SYN_SENT2 (simultaneous open) since Linux 2.6.36, LISTEN before;
        // RouterOS's list of states has `listen` for that slot.
        "SYN_SENT2" | "LISTEN" => TcpState::Listen,
        "NONE" => return Ok(None),
        other => return Err(format!("unknown TCP state {other}")),
    }))
}

fn parse_line(line: &str) -> Result<KernelConnection, String> {
    let mut tokens = line.split_ascii_whitespace();
    let mut next = |what: &str| tokens.next().ok_or_else(|| format!("no {what}"));
    let family = match next("layer-3 name")? {
        "ipv4" => Family::V4,
        "ipv6" => Family::V6,
        other => return Err(format!("unknown layer-3 protocol {other}")),
    };
    next("layer-3 number")?;
    next("layer-4 name")?;
    let protocol_number: u8 = next("layer-4 number")?
        .parse()
        .map_err(|_| "layer-4 number is not a number".to_owned())?;
    let timeout: u64 = next("timeout")?
        .parse()
        .map_err(|_| "timeout is not a number".to_owned())?;
    let mut state = None;
    let mut tuples = [Tuple::default(), Tuple::default()];
    let mut current = 0usize; // 0 original, 1 reply, 2 the entry's own fields
    let (mut assured, mut unreplied, mut offload, mut hw_offload) = (false, false, false, false);
    let (mut id, mut mark, mut helper) = (None, None, None);
    for tok in tokens {
        if let Some(flag) = tok.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            match flag {
                "ASSURED" => assured = true,
                "UNREPLIED" => unreplied = true,
                "OFFLOAD" => offload = true,
                "HW_OFFLOAD" => hw_offload = true,
                _ => {} // other status words carry nothing RouterOS shows
            }
            continue;
        }
        let Some((key, value)) = tok.split_once('=') else {
            if current == 0 && tuples[0].src.is_none() && state.is_none() {
                state = Some(tok);
                continue;
            }
            return Err(format!("unexpected word {tok:?}"));
        };
        while current < 2 {
            if tuples[current].take(protocol_number, key, value)? {
                break;
            }
            current += 1;
        }
        if current == 2 {
            match key {
                "id" => id = Some(value.parse::<u32>().map_err(|_| format!("id={value}"))?),
                "mark" => mark = Some(value.parse::<u32>().map_err(|_| format!("mark={value}"))?),
                "helper" => helper = Some(value.to_owned()),
                _ => {} // use=, zone=, secctx=, labels: not RouterOS properties
            }
        }
    }
    let id = id.ok_or("no id= (list with -o extended,id)")?;
    let [orig, reply] = tuples;
    let need = |t: &Tuple, dir: &str| -> Result<(IpAddr, IpAddr, u64, u64), String> {
        Ok((
            t.src.ok_or(format!("no {dir} src"))?,
            t.dst.ok_or(format!("no {dir} dst"))?,
            t.packets.ok_or(format!(
                "no {dir} packets (set net.netfilter.nf_conntrack_acct=1)"
            ))?,
            t.bytes.ok_or(format!("no {dir} bytes"))?,
        ))
    };
    let (src, dst, orig_packets, orig_bytes) = need(&orig, "original")?;
    let (rsrc, rdst, repl_packets, repl_bytes) = need(&reply, "reply")?;
    if Family::of(src) != family {
        return Err("addresses of the other family".into());
    }
    let tcp_state = if protocol_number == 6 {
        state.map(tcp_state).transpose()?.flatten()
    } else {
        None
    };
    Ok(KernelConnection {
        id,
        family,
        protocol_number,
        src_address: src,
        src_port: orig.sport,
        dst_address: dst,
        dst_port: orig.dport,
        reply_src_address: rsrc,
        reply_src_port: reply.sport,
        reply_dst_address: rdst,
        reply_dst_port: reply.dport,
        tcp_state,
        timeout: Duration::from_secs(timeout),
        orig_packets,
        orig_bytes,
        repl_packets,
        repl_bytes,
        assured,
        seen_reply: !unreplied,
        fasttrack: offload,
        hw_offload,
        srcnat: rdst != src || reply.dport != orig.sport,
        dstnat: rsrc != dst || reply.sport != orig.dport,
        helper,
        connection_mark: mark.filter(|m| *m != 0),
    })
}

/// Reads (and deletes from) the conntrack table of the current namespace or of a named one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConntrackReader {
    netns: Option<String>,
    /// The longest one `conntrack` run may take before it is killed (default 10 s).
    pub timeout: Duration,
    /// The most output one listing may produce before it is cut off and fails (default
    /// 64 MiB, about 250,000 entries).
    pub max_output: usize,
}

/// [`ConntrackReader::timeout`]'s default.
pub const CONNTRACK_TIMEOUT: Duration = Duration::from_secs(10);
/// [`ConntrackReader::max_output`]'s default.
pub const CONNTRACK_MAX_OUTPUT: usize = 64 * 1024 * 1024;

impl ConntrackReader {
    /// A reader of the namespace `netns` (a name under `/run/netns`, as `ip netns` uses), or
    /// of the current namespace with `None`.
    pub fn new(netns: Option<&str>) -> Result<Self, SimError> {
        if let Some(name) = netns {
            let ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                && !name.starts_with('.');
            if !ok {
                return Err(SimError::Config(format!(
                    "{name:?} is no network namespace name (letters, digits, '-', '_', '.')"
                )));
            }
        }
        Ok(Self {
            netns: netns.map(str::to_owned),
            timeout: CONNTRACK_TIMEOUT,
            max_output: CONNTRACK_MAX_OUTPUT,
        })
    }

    /// The namespace read, if not the current one.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "conntrack"]);
                c
            }
            None => Command::new("conntrack"),
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    fn error(&self, message: String) -> SimError {
        SimError::Conntrack {
            netns: self.netns.clone().unwrap_or_else(|| "(current)".into()),
            message,
        }
    }

    /// Runs conntrack; returns (exit success, stdout, stderr), bounded in time and size.
    async fn run(&self, args: &[&str]) -> Result<(bool, String, String), SimError> {
        let mut child = self.command(args).spawn().map_err(|e| {
            self.error(format!(
                "cannot run conntrack ({e}); install conntrack-tools (`apt-get install conntrack`)"
            ))
        })?;
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let limit = self.max_output as u64;
        let work = async {
            let mut out = Vec::new();
            let mut err = Vec::new();
            let mut out_capped = (&mut stdout).take(limit + 1);
            let mut err_capped = (&mut stderr).take(64 * 1024);
            let (r1, r2) = tokio::join!(
                out_capped.read_to_end(&mut out),
                err_capped.read_to_end(&mut err)
            );
            r1?;
            r2?;
            Ok::<_, std::io::Error>((out, err))
        };
        let (out, err) = match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Err(self.error(format!("reading conntrack's output: {e}"))),
            Err(_) => {
                let _ = child.kill().await;
                return Err(self.error(format!(
                    "conntrack did not finish within {:?}",
                    self.timeout
                )));
            }
        };
        if out.len() as u64 > limit {
            let _ = child.kill().await;
            return Err(self.error(format!(
                "conntrack printed more than {} bytes; the table is larger than this reader holds",
                self.max_output
            )));
        }
        let status = match tokio::time::timeout(self.timeout, child.wait()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(self.error(format!("waiting for conntrack: {e}"))),
            Err(_) => {
                let _ = child.kill().await;
                return Err(self.error("conntrack did not exit".into()));
            }
        };
        Ok((
            status.success(),
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        ))
    }

    /// Lists one family's table.
    pub async fn read(&self, family: Family) -> Result<ConntrackDump, SimError> {
        let fam = match family {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        };
        let (ok, out, err) = self.run(&["-L", "-f", fam, "-o", "extended,id"]).await?;
        if !ok {
            return Err(self.error(format!("conntrack -L failed: {}", err.trim())));
        }
        Ok(parse_conntrack(&out))
    }

    /// Deletes the kernel entry with this original tuple. `Ok(false)` when no entry matched
    /// (it was gone already: not an error, like `no such item` on RouterOS).
    pub async fn delete(&self, c: &KernelConnection) -> Result<bool, SimError> {
        self.delete_tuple(
            c.family,
            c.protocol_number,
            c.src_address,
            c.src_port,
            c.dst_address,
            c.dst_port,
        )
        .await
    }

    /// Deletes the kernel entry with this original tuple (ports for TCP and UDP); see
    /// [`ConntrackReader::delete`].
    pub async fn delete_tuple(
        &self,
        family: Family,
        protocol: u8,
        src: IpAddr,
        src_port: Option<u16>,
        dst: IpAddr,
        dst_port: Option<u16>,
    ) -> Result<bool, SimError> {
        let fam = match family {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        };
        let (src, dst, proto) = (src.to_string(), dst.to_string(), protocol.to_string());
        let mut args: Vec<String> = ["-D", "-f", fam, "-p", &proto, "-s", &src, "-d", &dst]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        if let (Some(sp), Some(dp), 6 | 17) = (src_port, dst_port, protocol) {
            args.extend(["--sport".into(), sp.to_string()]);
            args.extend(["--dport".into(), dp.to_string()]);
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, _, err) = self.run(&argv).await?;
        if ok {
            return Ok(true);
        }
        // conntrack exits 1 with "0 flow entries have been deleted" when nothing matched.
        if err.contains("0 flow entries") {
            return Ok(false);
        }
        Err(self.error(format!("conntrack -D failed: {}", err.trim())))
    }
}

/// Formats rows the way `/ip/firewall/connection/print` shows them on the terminal (one
/// `name=value` line per row): for the lab's reports and the tests' failure messages.
pub fn render_rows(rows: &[KernelConnection], format: AddressFormat) -> String {
    let mut out = String::new();
    for r in rows {
        for (i, (k, v)) in r.properties(format).iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            let _ = write!(out, "{k}={v}");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real output of the lab's router (`lab/run capture`), both families, every class.
    const LAB: &str = include_str!("../tests/fixtures/conntrack-lab.txt");

    fn prop<'a>(p: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
        p.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn every_captured_line_is_read() {
        let dump = parse_conntrack(LAB);
        assert!(dump.errors.is_empty(), "{:?}", dump.errors);
        assert!(dump.rows.len() >= 20, "{} rows", dump.rows.len());
        assert!(dump.rows.iter().any(|r| r.family == Family::V6));
        let ids: std::collections::HashSet<_> = dump.rows.iter().map(|r| r.id).collect();
        assert_eq!(ids.len(), dump.rows.len(), "ids are unique");
    }

    #[test]
    fn a_frozen_tls_flow_behind_masquerade() {
        let line = "ipv4     2 tcp      6 298 ESTABLISHED src=192.168.88.10 dst=203.0.113.20 \
            sport=55584 dport=443 packets=9 bytes=4095 src=203.0.113.20 dst=198.51.100.2 \
            sport=443 dport=55584 packets=1 bytes=60 [ASSURED] mark=0 use=1 id=2097428697";
        let r = &parse_conntrack(line).rows[0];
        assert_eq!(r.routeros_id(), "*7D0438D9");
        assert_eq!((r.orig_packets, r.repl_packets), (9, 1));
        assert_eq!((r.orig_bytes, r.repl_bytes), (4095, 60));
        assert_eq!(r.tcp_state, Some(TcpState::Established));
        assert!(r.srcnat && !r.dstnat && r.assured && r.seen_reply);
        assert_eq!(r.connection_mark, None);

        let p = r.properties(AddressFormat::Separate);
        assert_eq!(prop(&p, "src-address"), Some("192.168.88.10"));
        assert_eq!(prop(&p, "src-port"), Some("55584"));
        assert_eq!(prop(&p, "reply-dst-address"), Some("198.51.100.2"));
        assert_eq!(prop(&p, "reply-dst-port"), Some("55584"));
        assert_eq!(prop(&p, "tcp-state"), Some("established"));
        assert_eq!(prop(&p, "timeout"), Some("4m58s"));
        assert_eq!(prop(&p, "orig-packets"), Some("9"));
        assert_eq!(prop(&p, "repl-packets"), Some("1"));
        assert_eq!(prop(&p, "srcnat"), Some("true"));
        assert_eq!(prop(&p, "confirmed"), Some("true"));
        assert_eq!(prop(&p, "connection-mark"), None);

        let c = r.properties(AddressFormat::Combined);
        assert_eq!(prop(&c, "src-address"), Some("192.168.88.10:55584"));
        assert_eq!(prop(&c, "dst-address"), Some("203.0.113.20:443"));
        assert_eq!(prop(&c, "src-port"), None);
    }

    #[test]
    fn an_unreplied_ipv6_syn_and_combined_brackets() {
        let line = "ipv6     10 tcp      6 101 SYN_SENT src=2001:db8:3::2 dst=fd00:88::30 \
            sport=49045 dport=1000 packets=1 bytes=64 [UNREPLIED] src=fd00:88::30 \
            dst=2001:db8:3::2 sport=1000 dport=49045 packets=0 bytes=0 mark=0 use=1 id=243845042";
        let r = &parse_conntrack(line).rows[0];
        assert_eq!(r.family, Family::V6);
        assert!(!r.seen_reply && !r.assured && !r.srcnat && !r.dstnat);
        assert_eq!(r.tcp_state, Some(TcpState::SynSent));
        let c = r.properties(AddressFormat::Combined);
        assert_eq!(prop(&c, "src-address"), Some("[2001:db8:3::2]:49045"));
        assert_eq!(prop(&c, "seen-reply"), Some("false"));
        assert_eq!(prop(&c, "tcp-state"), Some("syn-sent"));
    }

    #[test]
    fn icmp_ids_are_not_the_entry_id() {
        let line = "ipv4     2 icmp     1 14 src=192.168.88.10 dst=198.51.100.1 type=8 code=0 \
            id=14691 packets=5 bytes=300 src=198.51.100.1 dst=198.51.100.2 type=0 code=0 \
            id=14691 packets=5 bytes=300 mark=0 use=1 id=1404980972";
        let r = &parse_conntrack(line).rows[0];
        assert_eq!(r.id, 1_404_980_972);
        assert_eq!(r.protocol(), "icmp");
        assert_eq!((r.src_port, r.dst_port), (None, None));
        assert_eq!(r.tcp_state, None);
        let p = r.properties(AddressFormat::Separate);
        assert_eq!(prop(&p, "dst-address"), Some("198.51.100.1"));
        assert_eq!(prop(&p, "src-port"), None);
        assert!(r.srcnat, "masqueraded ping");
        let c = r.properties(AddressFormat::Combined);
        assert_eq!(prop(&c, "src-address"), Some("192.168.88.10"));
    }

    #[test]
    fn every_linux_tcp_state_has_its_routeros_name() {
        for (linux, ros) in [
            ("SYN_SENT", Some("syn-sent")),
            ("SYN_RECV", Some("syn-recv")),
            ("ESTABLISHED", Some("established")),
            ("FIN_WAIT", Some("fin-wait")),
            ("CLOSE_WAIT", Some("close-wait")),
            ("LAST_ACK", Some("last-ack")),
            ("TIME_WAIT", Some("time-wait")),
            ("CLOSE", Some("close")),
            ("SYN_SENT2", Some("listen")),
            ("LISTEN", Some("listen")),
            ("NONE", None),
        ] {
            let line = format!(
                "ipv4 2 tcp 6 10 {linux} src=192.0.2.1 dst=192.0.2.2 sport=1 dport=2 packets=1 \
                 bytes=60 src=192.0.2.2 dst=192.0.2.1 sport=2 dport=1 packets=1 bytes=60 \
                 mark=0 use=1 id=7"
            );
            let r = &parse_conntrack(&line).rows[0];
            assert_eq!(r.tcp_state.map(TcpState::as_str), ros, "{linux}");
        }
        let bad = parse_conntrack(
            "ipv4 2 tcp 6 10 NAPPING src=192.0.2.1 dst=192.0.2.2 sport=1 dport=2 packets=1 \
             bytes=60 src=192.0.2.2 dst=192.0.2.1 sport=2 dport=1 packets=1 bytes=60 id=7",
        );
        assert!(bad.errors[0].1.contains("NAPPING"), "{:?}", bad.errors);
    }

    #[test]
    fn flags_nat_mark_helper_and_offload() {
        // Port-forwarded (dstnat) with a helper, a mark and the flowtable offload.
        let line = "ipv4 2 tcp 6 431999 ESTABLISHED src=192.0.2.130 dst=198.51.100.2 \
            sport=40000 dport=8443 packets=10 bytes=900 src=192.168.88.30 dst=192.0.2.130 \
            sport=443 dport=40000 packets=12 bytes=9000 [OFFLOAD] [HW_OFFLOAD] mark=7 \
            helper=ftp use=2 id=99";
        let r = &parse_conntrack(line).rows[0];
        assert!(r.dstnat && !r.srcnat && r.fasttrack && r.hw_offload);
        assert_eq!(r.helper.as_deref(), Some("ftp"));
        assert!(r.seen_reply && !r.assured);
        assert_eq!(r.connection_mark, Some(7));
        let p = r.properties(AddressFormat::Separate);
        assert_eq!(prop(&p, "timeout"), Some("4d23h59m59s"));
        assert_eq!(prop(&p, "connection-mark"), Some("7"));
        assert_eq!(prop(&p, "reply-src-address"), Some("192.168.88.30"));
        assert_eq!(prop(&p, "uses-helper"), Some("true"));
        assert_eq!(prop(&p, "connection-type"), Some("ftp"));
    }

    #[test]
    fn bad_lines_are_reported_and_the_rest_read() {
        let text = format!(
            "{}\nipv4 2 tcp 6 10 ESTABLISHED src=192.0.2.1 dst=192.0.2.2 sport=1 dport=2 \
             src=192.0.2.2 dst=192.0.2.1 sport=2 dport=1 id=3\nipx 9 foo\n\
             ipv4 2 udp 17 30 src=nope dst=192.0.2.2 sport=1 dport=2 packets=1 bytes=1 \
             src=192.0.2.2 dst=192.0.2.1 sport=2 dport=1 packets=0 bytes=0 id=4\n\
             conntrack v1.4.7 (conntrack-tools): 3 flow entries have been shown.\n",
            LAB.lines().next().unwrap()
        );
        let dump = parse_conntrack(&text);
        assert_eq!(dump.rows.len(), 1);
        assert_eq!(dump.errors.len(), 3, "{:?}", dump.errors);
        assert!(
            dump.errors[0].1.contains("nf_conntrack_acct"),
            "{:?}",
            dump.errors
        );
        assert!(dump.errors[1].1.contains("ipx"));
        assert!(dump.errors[2].1.contains("nope"));
    }

    #[test]
    fn a_kernel_row_becomes_a_sim_connection() {
        let dump = parse_conntrack(LAB);
        for r in &dump.rows {
            let c = r.to_sim_connection();
            assert_eq!((c.src, c.dst), (r.src_address, r.dst_address));
            assert_eq!(
                (c.orig_packets, c.repl_packets),
                (r.orig_packets, r.repl_packets)
            );
            assert_eq!(c.srcnat_to.is_some(), r.srcnat);
            assert_eq!(c.family(), r.family);
        }
    }

    #[test]
    fn namespace_names_are_checked() {
        assert!(ConntrackReader::new(Some("rgl0a1b2c-router")).is_ok());
        assert!(ConntrackReader::new(None).is_ok());
        for bad in ["", "../x", "a b", "a;b", ".hidden"] {
            assert!(ConntrackReader::new(Some(bad)).is_err(), "{bad:?}");
        }
    }
}
