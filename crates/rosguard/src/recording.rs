//! Recordings of a router's polls, and a [`Backend`] that plays them back.
//!
//! A recording is what a poll read under a loose pre-filter ([`Prefilter`]): every row any
//! sensible setting could flag, plus the context `decide()` needs (the router's addresses,
//! protected addresses, allowlist, block list, table size) and the poll's time. Replaying it
//! through the same cycle the daemon runs, on the recording's clock, shows what a setting would
//! have blocked.
//!
//! ## File format, version 2
//!
//! A sequence of gzip members (RFC 1952), each holding one line of JSON ending in `\n`:
//! - the first, the [`Header`]: `{"format":"rosguard-recording","version":2,"router":..,
//!   "rosguard":..,"prefilter":{..},"started":..}`;
//! - then one line per poll: `{"t":<seconds since the UNIX epoch, fractional>,"read":<rows
//!   read>,"bad":<rows skipped>,"size":<table size or null>,"filtered":..,"truncated":..,
//!   "uptime":..,"context":{..},"rows":[..]}`.
//!
//! `context` (the router's `addresses`, `protected`, `allowlist`, `block_list`, `staging`,
//! `own`, `shared`, as [`Observation`] names them) is present only when it changed since the
//! poll before; a list entry's `timeout` there is when it expires (seconds since the epoch),
//! so entries that only count down do not change it (their remaining time reads back within
//! two seconds). Each element of `rows`, in the poll's order, is one of:
//! - `[id, family, protocol, src, src_port, dst, dst_port, orig_packets, repl_packets,
//!   orig_bytes, repl_bytes, orig_fasttrack_packets, repl_fasttrack_packets, tcp_state]`
//!   (the first item a string): a row in full, the [`Connection`]'s fields in this order as
//!   it serialises them (`null`: absent);
//! - `[start, len]`: the previous poll's rows `start..start+len`, unchanged;
//! - `[index, orig_packets, repl_packets, orig_bytes, repl_bytes, orig_fasttrack_packets,
//!   repl_fasttrack_packets]`: the previous poll's row `index` (the same flow) with these
//!   counters (`null`: absent).
//!
//! Most rows of a conntrack table are unchanged from one poll to the next, so a poll costs
//! little more than its new and moving rows. A file starts with a poll in full (there is no
//! previous one); version 1 files (each poll a whole `{"t":..,"observation":{..}}`) still
//! read. A reader refuses a newer version, a reference to a row the previous poll did not
//! have, and a poll of more than [`MAX_POLL_ROWS`] rows.
//!
//! Every poll is its own member, written and flushed whole, so a recorder killed mid-write
//! leaves a file readable up to its last complete poll ([`Reader::cut`] says it was cut).
//! `zcat FILE` shows it as JSON lines. [`Reader`] streams a file poll by poll; [`Recording`]
//! reads one whole.
//!
//! It deliberately decides nothing: the replay runs `run_cycle` and `decide()` unchanged.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use ipnet::IpNet;
use rosguard_core::backend::Backend;
use rosguard_core::decide::Decision;
use rosguard_core::detect::is_candidate;
use rosguard_core::model::{
    ConnId, Connection, Endpoint, Family, ListAddress, ListEntry, Protocol,
};
use rosguard_core::observation::{Observation, ObservePlan, SharedCandidate};
use rosguard_core::outcome::{AddResult, Applied, BackendError, RemoveResult};
use rosguard_core::policy::Protected;
use rosguard_core::settings::{Detection, Settings};
use serde::{Deserialize, Serialize};

/// The format name in every header.
pub const FORMAT: &str = "rosguard-recording";
/// The version this build writes and the newest it reads.
pub const VERSION: u32 = 2;

/// What a recording kept of each poll: rows with at most `max_repl_packets` replies (FastTrack
/// included) and more than zero sent, of the listed protocols, to any port; TCP flows the stall
/// rule could watch up to `stall_max_repl_packets` replies; every unanswered TCP attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prefilter {
    /// The most replies a kept row has (the asymmetric test's widest `max_repl_packets`).
    pub max_repl_packets: u64,
    /// The most replies a kept TCP flow has for the stall rule.
    pub stall_max_repl_packets: u64,
    /// The protocols kept.
    pub protocols: Vec<Protocol>,
}

impl Prefilter {
    /// The default: 10 replies, 64 for stalls, and the config's protocols (at least TCP, UDP).
    pub fn for_settings(s: &Settings) -> Self {
        let d = &s.detection;
        let mut protocols = vec![Protocol::Tcp, Protocol::Udp];
        for p in &d.protocols {
            if !protocols.contains(p) {
                protocols.push(*p);
            }
        }
        Self {
            max_repl_packets: d.max_repl_packets.max(10),
            stall_max_repl_packets: d.stall.max_repl_packets.max(64),
            protocols,
        }
    }

    /// The settings the recorder reads with: every rule at its loosest within this filter.
    pub fn reading_settings(&self, s: &Settings) -> Settings {
        let mut s = s.clone();
        let d = &mut s.detection;
        d.enabled = true;
        d.monitored_ports.clear();
        d.protocols = self.protocols.clone();
        d.min_orig_packets = 0;
        d.max_repl_packets = self.max_repl_packets;
        d.scan.enabled = true;
        d.stall.enabled = true;
        d.stall.max_repl_packets = self.stall_max_repl_packets;
        s
    }

    /// What `d` could flag that this filter did not keep, in words (empty: nothing).
    pub fn blind_spots(&self, d: &Detection) -> Vec<String> {
        let mut out = Vec::new();
        if d.max_repl_packets > self.max_repl_packets {
            out.push(format!(
                "detection.max_repl_packets = {} is looser than the recording's pre-filter ({}): rows with more replies were not recorded",
                d.max_repl_packets, self.max_repl_packets
            ));
        }
        if d.stall.enabled && d.stall.max_repl_packets > self.stall_max_repl_packets {
            out.push(format!(
                "detection.stall.max_repl_packets = {} is looser than the recording's pre-filter ({})",
                d.stall.max_repl_packets, self.stall_max_repl_packets
            ));
        }
        for p in d.protocols.iter().filter(|p| !self.protocols.contains(p)) {
            out.push(format!("protocol {p} was not recorded"));
        }
        out
    }
}

/// The first line of a recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// The format version.
    pub version: u32,
    /// The router's name in the config.
    pub router: String,
    /// The rosguard version that recorded it.
    pub rosguard: String,
    /// What each poll kept.
    pub prefilter: Prefilter,
    /// When recording started, seconds since the UNIX epoch.
    pub started: f64,
}

impl Header {
    /// The header this build writes: the current format and version, this rosguard's version.
    pub fn new(router: &str, prefilter: Prefilter, started: f64) -> Self {
        Self {
            format: FORMAT.into(),
            version: VERSION,
            router: router.to_owned(),
            rosguard: env!("CARGO_PKG_VERSION").into(),
            prefilter,
            started,
        }
    }
}

/// One recorded poll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Poll {
    /// When it was read, seconds since the UNIX epoch.
    pub t: f64,
    /// What it saw, after the pre-filter.
    pub observation: Observation,
}

impl Poll {
    /// The poll's time.
    pub fn time(&self) -> Duration {
        Duration::try_from_secs_f64(self.t).unwrap_or_default()
    }
}

/// Writes a recording, one gzip member per line, each poll as a delta of the one before.
pub struct Writer<W: Write> {
    out: W,
    /// Bytes written so far.
    pub bytes: u64,
    /// Polls written so far.
    pub polls: u64,
    /// Rows written so far.
    pub rows: u64,
    /// What it keeps of the previous poll's rows, which this poll's refer to.
    prev: Vec<Kept>,
    /// The context last written (list timeouts as expiry times).
    context: Option<PollContext>,
    /// The line being built.
    buf: Vec<u8>,
}

impl<W: Write> Writer<W> {
    /// Starts a recording with its header.
    pub fn new(out: W, header: &Header) -> Result<Self> {
        let mut w = Self {
            out,
            bytes: 0,
            polls: 0,
            rows: 0,
            prev: Vec::new(),
            context: None,
            buf: Vec::new(),
        };
        let mut line = serde_json::to_vec(header)?;
        line.push(b'\n');
        w.member(&line)?;
        Ok(w)
    }

    /// Appends one poll, whole: its rows as references to the previous poll's where they are
    /// the same flow, its context only when it changed.
    pub fn poll(&mut self, poll: &Poll) -> Result<()> {
        let obs = &poll.observation;
        let t = poll.time();
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        write!(
            buf,
            "{{\"t\":{},\"read\":{},\"bad\":{},\"size\":{},\"filtered\":{},\"truncated\":{},\"uptime\":",
            serde_json::to_string(&poll.t)?,
            obs.rows_read,
            obs.bad_rows,
            opt(obs.table_size),
            obs.filtered,
            obs.truncated,
        )?;
        serde_json::to_writer(&mut buf, &obs.uptime)?;
        let changed = self.context.as_ref().is_none_or(|c| !c.same_as(obs, t));
        let context = changed.then(|| PollContext::of(obs, t));
        if let Some(c) = &context {
            buf.extend_from_slice(b",\"context\":");
            serde_json::to_writer(&mut buf, c)?;
        }
        buf.extend_from_slice(b",\"rows\":[");
        // Taken: if anything below fails, the next poll refers to nothing.
        let mut prev = std::mem::take(&mut self.prev);
        encode_rows(&mut buf, &mut prev, &obs.candidates)?;
        buf.extend_from_slice(b"]}\n");
        let r = self.member(&buf);
        self.buf = buf;
        if r.is_err() {
            // Not in the file: the next poll carries its context whole.
            self.context = None;
        }
        r?;
        if context.is_some() {
            self.context = context;
        }
        self.prev = prev;
        self.polls += 1;
        self.rows += obs.candidates.len() as u64;
        Ok(())
    }

    /// Makes the next poll a whole one, referring to nothing before it: after a poll whose
    /// bytes the caller did not keep (a file rotated, a poll too large), so that nothing
    /// refers to rows the file does not hold.
    pub fn forget(&mut self) {
        self.prev.clear();
        self.context = None;
    }

    fn member(&mut self, line: &[u8]) -> Result<()> {
        let mut gz = GzEncoder::new(Vec::with_capacity(line.len() / 4), Compression::fast());
        gz.write_all(line)?;
        let member = gz.finish()?;
        self.out.write_all(&member)?;
        self.out.flush()?;
        self.bytes += member.len() as u64;
        Ok(())
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "null".to_owned(), |v| v.to_string())
}

/// What the writer keeps of a row of the previous poll: enough to tell the same flow and
/// the same counters, without holding the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Kept {
    /// The row's `.id`, hashed.
    id: u64,
    /// Everything but the counters (the id included), hashed with another seed: a row
    /// matches only when both agree, so a wrong match takes two 64-bit collisions at once.
    flow: u64,
    counters: [Option<u64>; 6],
}

/// A 64-bit multiply-rotate hash (the Fx hash's step), seeded; not for hostile input (a
/// collision only costs a row written whole or, with the flow hash too, is out of reach).
struct Mix(u64);

impl Mix {
    fn add(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn bytes(&mut self, b: &[u8]) {
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        let mut last = [0u8; 8];
        last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.add(u64::from_le_bytes(last) ^ (b.len() as u64) << 56);
    }
    /// The hash, its bits spread (murmur3's finaliser): the multiply alone leaves the low
    /// bits, which pick a map's bucket, depending on the input's low bits only.
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }

    fn addr(&mut self, a: IpAddr) {
        let v = match a {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a) ^ (1 << 127),
        };
        self.add(v as u64);
        self.add((v >> 64) as u64);
    }
}

impl Kept {
    fn of(c: &Connection) -> Self {
        let mut id = Mix(0x9e37_79b9_7f4a_7c15);
        id.bytes(c.id.as_str().as_bytes());
        let mut flow = Mix(0xc2b2_ae3d_27d4_eb4f);
        flow.bytes(c.id.as_str().as_bytes());
        flow.add(match c.family {
            Family::V4 => 4,
            Family::V6 => 6,
        });
        flow.add(c.protocol.number().into());
        flow.addr(c.src.addr);
        flow.add(c.src.port.map_or(1 << 20, u64::from));
        flow.addr(c.dst.addr);
        flow.add(c.dst.port.map_or(1 << 20, u64::from));
        flow.bytes(c.tcp_state.map_or("", |s| s.as_str()).as_bytes());
        Self {
            id: id.finish(),
            flow: flow.finish(),
            counters: counters(c),
        }
    }
}

/// A row's six counters in the format's order (see the module doc).
fn counters(c: &Connection) -> [Option<u64>; 6] {
    [
        c.orig_packets,
        c.repl_packets,
        c.orig_bytes,
        c.repl_bytes,
        c.orig_fasttrack_packets,
        c.repl_fasttrack_packets,
    ]
}

/// Sets a row's six counters, in [`counters`]' order.
fn set_counters(c: &mut Connection, v: [Option<u64>; 6]) {
    [
        c.orig_packets,
        c.repl_packets,
        c.orig_bytes,
        c.repl_bytes,
        c.orig_fasttrack_packets,
        c.repl_fasttrack_packets,
    ] = v;
}

/// A `HashMap` hasher for keys that are hashes already.
#[derive(Default)]
struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, b: &[u8]) {
        for &x in b {
            self.0 = self.0.rotate_left(8) ^ u64::from(x);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Appends `n` in decimal.
fn number(buf: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

fn opt_number(buf: &mut Vec<u8>, v: Option<u64>) {
    match v {
        Some(n) => number(buf, n),
        None => buf.extend_from_slice(b"null"),
    }
}

/// Writes `rows` as elements referring to `prev` (the format's `rows`, see the module doc),
/// and makes `prev` what it keeps of `rows` for the next poll.
fn encode_rows(buf: &mut Vec<u8>, prev: &mut Vec<Kept>, rows: &[Connection]) -> Result<()> {
    type Index = HashMap<u64, usize, std::hash::BuildHasherDefault<Prehashed>>;
    let mut index: Option<Index> = None;
    let kept: Vec<Kept> = rows.iter().map(Kept::of).collect();
    // The run of unchanged rows being built: (start in prev, length).
    let mut run: Option<(usize, usize)> = None;
    let mut next = 0usize;
    let mut first = true;
    let sep = |buf: &mut Vec<u8>, first: &mut bool| {
        if !std::mem::take(first) {
            buf.push(b',');
        }
    };
    let flush = |buf: &mut Vec<u8>, first: &mut bool, run: Option<(usize, usize)>| {
        if let Some((s, n)) = run {
            sep(buf, first);
            buf.push(b'[');
            number(buf, s as u64);
            buf.push(b',');
            number(buf, n as u64);
            buf.push(b']');
        }
    };
    for (row, k) in rows.iter().zip(&kept) {
        // Rows mostly come back in the same order, a few gone: try the next ones first.
        let near = (next..prev.len().min(next + 4)).find(|&i| prev[i].id == k.id);
        let found = match near {
            Some(i) => Some(i),
            None => index
                .get_or_insert_with(|| prev.iter().enumerate().map(|(i, p)| (p.id, i)).collect())
                .get(&k.id)
                .copied(),
        }
        .filter(|&i| prev[i].flow == k.flow);
        match found {
            Some(i) if prev[i].counters == k.counters => {
                run = match run {
                    Some((s, n)) if s + n == i => Some((s, n + 1)),
                    other => {
                        flush(buf, &mut first, other);
                        Some((i, 1))
                    }
                };
                next = i + 1;
            }
            Some(i) => {
                flush(buf, &mut first, run.take());
                sep(buf, &mut first);
                buf.push(b'[');
                number(buf, i as u64);
                for c in k.counters {
                    buf.push(b',');
                    opt_number(buf, c);
                }
                buf.push(b']');
                next = i + 1;
            }
            None => {
                flush(buf, &mut first, run.take());
                sep(buf, &mut first);
                serde_json::to_writer(
                    &mut *buf,
                    &(
                        &row.id,
                        row.family,
                        row.protocol,
                        row.src.addr,
                        row.src.port,
                        row.dst.addr,
                        row.dst.port,
                        row.orig_packets,
                        row.repl_packets,
                        row.orig_bytes,
                        row.repl_bytes,
                        row.orig_fasttrack_packets,
                        row.repl_fasttrack_packets,
                        row.tcp_state,
                    ),
                )?;
            }
        }
    }
    flush(buf, &mut first, run);
    *prev = kept;
    Ok(())
}

/// What a poll knew besides its rows, as a recording keeps it: list entries' `timeout` is
/// when the entry expires (seconds since the UNIX epoch), so a list whose entries only count
/// down is the same context from poll to poll.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct PollContext {
    #[serde(default)]
    addresses: Vec<IpNet>,
    #[serde(default)]
    protected: Vec<(Protected, Vec<IpAddr>)>,
    #[serde(default)]
    allowlist: Vec<ListEntry>,
    #[serde(default)]
    block_list: Vec<ListEntry>,
    #[serde(default)]
    staging: Vec<ListEntry>,
    #[serde(default)]
    own: Vec<IpAddr>,
    #[serde(default)]
    shared: Vec<SharedCandidate>,
}

/// How far an entry's expiry may drift between polls and still be the same entry: the router
/// reports whole seconds, polls are read at fractional ones.
const EXPIRY_SLACK: Duration = Duration::from_secs(2);

impl PollContext {
    fn of(o: &Observation, t: Duration) -> Self {
        let expiring = |l: &[ListEntry]| {
            l.iter()
                .map(|e| ListEntry {
                    timeout: e.timeout.map(|d| t + d),
                    ..e.clone()
                })
                .collect()
        };
        Self {
            addresses: o.addresses.clone(),
            protected: o.protected.clone(),
            allowlist: expiring(&o.allowlist),
            block_list: expiring(&o.block_list),
            staging: expiring(&o.staging),
            own: o.own.clone(),
            shared: o.shared.clone(),
        }
    }

    fn same_as(&self, o: &Observation, t: Duration) -> bool {
        let same_list = |kept: &[ListEntry], now: &[ListEntry]| {
            kept.len() == now.len()
                && kept.iter().zip(now).all(|(k, n)| {
                    k.id == n.id
                        && k.list == n.list
                        && k.address == n.address
                        && k.dynamic == n.dynamic
                        && k.disabled == n.disabled
                        && k.comment == n.comment
                        && match (k.timeout, n.timeout) {
                            (None, None) => true,
                            (Some(end), Some(left)) => end.abs_diff(t + left) <= EXPIRY_SLACK,
                            _ => false,
                        }
                })
        };
        self.addresses == o.addresses
            && self.protected == o.protected
            && same_list(&self.allowlist, &o.allowlist)
            && same_list(&self.block_list, &o.block_list)
            && same_list(&self.staging, &o.staging)
            && self.own == o.own
            && self.shared == o.shared
    }

    /// Fills `o`'s context as it was at `t`.
    fn fill(&self, o: &mut Observation, t: Duration) {
        let left = |l: &[ListEntry]| {
            l.iter()
                .map(|e| ListEntry {
                    timeout: e.timeout.map(|end| end.saturating_sub(t)),
                    ..e.clone()
                })
                .collect()
        };
        o.addresses.clone_from(&self.addresses);
        o.protected.clone_from(&self.protected);
        o.allowlist = left(&self.allowlist);
        o.block_list = left(&self.block_list);
        o.staging = left(&self.staging);
        o.own.clone_from(&self.own);
        o.shared.clone_from(&self.shared);
    }
}

/// One poll as version 2 writes it.
#[derive(Deserialize)]
struct Line {
    t: f64,
    read: u64,
    bad: u64,
    size: Option<u64>,
    filtered: bool,
    truncated: bool,
    uptime: Option<Duration>,
    context: Option<PollContext>,
    rows: Vec<Element>,
}

/// The first item of an element of `rows`: a row's id (a row in full) or an index.
enum Head {
    Id(String),
    Index(u64),
}

impl<'de> Deserialize<'de> for Head {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Head;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a row's id or an index")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Head, E> {
                Ok(Head::Id(v.to_owned()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Head, E> {
                Ok(Head::Index(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// An element of a version 2 poll's `rows`.
enum Element {
    /// A row in full.
    Row(Box<Connection>),
    /// The previous poll's rows `start..start + len`, unchanged.
    Same { start: usize, len: usize },
    /// The previous poll's row `index` with these counters.
    Moved {
        index: usize,
        counters: [Option<u64>; 6],
    },
}

impl<'de> Deserialize<'de> for Element {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Element;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("[id, ..13 fields], [start, len] or [index, 6 counters]")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> Result<Element, A::Error> {
                use serde::de::Error;
                let index = match s.next_element::<Head>()? {
                    None => return Err(A::Error::invalid_length(0, &self)),
                    Some(Head::Index(i)) => i,
                    Some(Head::Id(id)) => {
                        let mut n = 0;
                        macro_rules! field {
                            () => {{
                                n += 1;
                                s.next_element()?
                                    .ok_or_else(|| A::Error::invalid_length(n, &self))?
                            }};
                        }
                        let row = Connection {
                            id: ConnId::new(id),
                            family: field!(),
                            protocol: field!(),
                            src: Endpoint {
                                addr: field!(),
                                port: field!(),
                            },
                            dst: Endpoint {
                                addr: field!(),
                                port: field!(),
                            },
                            orig_packets: field!(),
                            repl_packets: field!(),
                            orig_bytes: field!(),
                            repl_bytes: field!(),
                            orig_fasttrack_packets: field!(),
                            repl_fasttrack_packets: field!(),
                            tcp_state: field!(),
                        };
                        if s.next_element::<serde::de::IgnoredAny>()?.is_some() {
                            return Err(A::Error::invalid_length(15, &self));
                        }
                        return Ok(Element::Row(Box::new(row)));
                    }
                };
                let index = usize::try_from(index).map_err(A::Error::custom)?;
                let second: Option<u64> = s
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(1, &self))?;
                let mut counters = [second, None, None, None, None, None];
                let mut n = 1;
                while let Some(c) = s.next_element::<Option<u64>>()? {
                    if n == 6 {
                        return Err(A::Error::invalid_length(8, &self));
                    }
                    counters[n] = c;
                    n += 1;
                }
                match (n, second) {
                    (1, Some(len)) => Ok(Element::Same {
                        start: index,
                        len: usize::try_from(len).map_err(A::Error::custom)?,
                    }),
                    (6, _) => Ok(Element::Moved { index, counters }),
                    _ => Err(A::Error::invalid_length(n + 1, &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// The most rows one poll may expand to when read: ten times the daemon's default
/// `max_candidates`, far below what references in a crafted file could multiply to.
pub const MAX_POLL_ROWS: usize = 1_000_000;

/// Reads a recording poll by poll, holding one poll (and the one before) at a time.
pub struct Reader<R: Read> {
    input: BufReader<MultiGzDecoder<R>>,
    /// The recording's header.
    pub header: Header,
    max_line: u64,
    max_rows: usize,
    prev: Vec<Connection>,
    context: PollContext,
    read: usize,
    cut: Option<String>,
    done: bool,
}

impl Reader<File> {
    /// Opens a recording file.
    pub fn open(path: &Path) -> Result<Self> {
        let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Self::new(f).with_context(|| format!("{} is not a readable recording", path.display()))
    }
}

impl<R: Read> Reader<R> {
    /// Reads the header; the polls follow with [`Iterator::next`].
    pub fn new(r: R) -> Result<Self> {
        Self::with_limit(r, MAX_LINE_BYTES)
    }

    fn with_limit(r: R, max_line: u64) -> Result<Self> {
        Self::with_limits(r, max_line, MAX_POLL_ROWS)
    }

    fn with_limits(r: R, max_line: u64, max_rows: usize) -> Result<Self> {
        let mut input = BufReader::new(MultiGzDecoder::new(r));
        let first = match next_line(&mut input, max_line) {
            Some(Ok(l)) => l,
            Some(Err(e)) => bail!("no header: {e}"),
            None => bail!("the file is empty"),
        };
        let header: Header = serde_json::from_slice(&first)
            .context("the first line is not a rosguard recording header")?;
        if header.format != FORMAT {
            bail!("format {:?} is not {FORMAT:?}", header.format);
        }
        if header.version > VERSION || header.version == 0 {
            bail!(
                "format version {} is newer than this rosguard reads ({VERSION}); use a newer rosguard",
                header.version
            );
        }
        Ok(Self {
            input,
            header,
            max_line,
            max_rows,
            prev: Vec::new(),
            context: PollContext::default(),
            read: 0,
            cut: None,
            done: false,
        })
    }

    /// Why reading stopped before the end of the file (a recorder killed mid-write, damage),
    /// once the polls are read; `None` when the file ended after a complete poll.
    pub fn cut(&self) -> Option<&str> {
        self.cut.as_deref()
    }

    fn decode(&mut self, line: &[u8]) -> Result<Poll, String> {
        if self.header.version == 1 {
            return serde_json::from_slice::<Poll>(line).map_err(|e| e.to_string());
        }
        let l: Line = serde_json::from_slice(line).map_err(|e| e.to_string())?;
        let t =
            Duration::try_from_secs_f64(l.t).map_err(|_| format!("time {} is not valid", l.t))?;
        if let Some(c) = l.context {
            self.context = c;
        }
        let max = self.max_rows;
        let mut rows: Vec<Connection> = Vec::with_capacity(l.rows.len().min(max));
        let prev = &self.prev;
        let bad = |what: String| format!("{what} (the previous poll had {} rows)", prev.len());
        for e in l.rows {
            let n = match &e {
                Element::Same { len, .. } => *len,
                _ => 1,
            };
            if rows.len().saturating_add(n) > max {
                return Err(format!("a poll of more than {max} rows"));
            }
            match e {
                Element::Row(c) => rows.push(*c),
                Element::Same { start, len } => {
                    let r = prev
                        .get(start..start.saturating_add(len))
                        .ok_or_else(|| bad(format!("rows {start}..+{len} do not exist")))?;
                    rows.extend_from_slice(r);
                }
                Element::Moved { index, counters } => {
                    let mut c = prev
                        .get(index)
                        .ok_or_else(|| bad(format!("row {index} does not exist")))?
                        .clone();
                    set_counters(&mut c, counters);
                    rows.push(c);
                }
            }
        }
        let mut observation = Observation {
            candidates: Vec::new(),
            rows_read: l.read,
            bad_rows: l.bad,
            table_size: l.size,
            filtered: l.filtered,
            truncated: l.truncated,
            uptime: l.uptime,
            ..Observation::default()
        };
        self.context.fill(&mut observation, t);
        self.prev.clone_from(&rows);
        observation.candidates = rows;
        Ok(Poll {
            t: l.t,
            observation,
        })
    }
}

impl<R: Read> Iterator for Reader<R> {
    type Item = Poll;

    /// The next complete poll; `None` at the end or at a damaged poll ([`Reader::cut`] says
    /// which).
    fn next(&mut self) -> Option<Poll> {
        if self.done {
            return None;
        }
        let parsed = match next_line(&mut self.input, self.max_line)? {
            Ok(l) => self.decode(&l),
            Err(e) => Err(e.to_string()),
        };
        match parsed {
            Ok(p) => {
                self.read += 1;
                Some(p)
            }
            Err(e) => {
                self.done = true;
                self.cut = Some(format!(
                    "poll {} is incomplete or damaged ({e}); read the {} before it",
                    self.read + 1,
                    self.read
                ));
                None
            }
        }
    }
}

/// A recording read whole into memory (for small ones: tests, fixtures, the simulator's
/// replay); [`Reader`] streams.
#[derive(Debug, Clone)]
pub struct Recording {
    /// Its header.
    pub header: Header,
    /// Its complete polls, in order.
    pub polls: Vec<Poll>,
    /// Why reading stopped before the end of the file (a recorder killed mid-write), if it did.
    pub cut: Option<String>,
}

impl Recording {
    /// Reads a recording file.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self::collect(Reader::open(path)?))
    }

    /// Reads a recording; polls after a damaged or cut-off point are dropped and said so.
    pub fn read(r: impl Read) -> Result<Self> {
        Ok(Self::collect(Reader::new(r)?))
    }

    #[cfg(test)]
    fn read_with_limit(r: impl Read, max: u64) -> Result<Self> {
        Ok(Self::collect(Reader::with_limit(r, max)?))
    }

    /// Reads a recording file whole, refusing one of more than `max_rows` rows in all (the
    /// memory a whole read may take is the caller's to bound; [`Reader`] streams instead).
    pub fn open_at_most(path: &Path, max_rows: u64) -> Result<Self> {
        Self::read_at_most(Reader::open(path)?, max_rows)
            .with_context(|| format!("{} is too long to read whole", path.display()))
    }

    fn read_at_most<R: Read>(mut r: Reader<R>, max_rows: u64) -> Result<Self> {
        let mut polls = Vec::new();
        let mut rows = 0u64;
        for p in r.by_ref() {
            rows += p.observation.candidates.len() as u64;
            if rows > max_rows {
                bail!(
                    "it holds more than {max_rows} rows by poll {}; use a shorter recording (rosguard record --duration)",
                    polls.len() + 1
                );
            }
            polls.push(p);
        }
        Ok(Self {
            header: r.header.clone(),
            polls,
            cut: r.cut.take(),
        })
    }

    fn collect<R: Read>(mut r: Reader<R>) -> Self {
        let polls = r.by_ref().collect();
        Self {
            header: r.header.clone(),
            polls,
            cut: r.cut.take(),
        }
    }
}

/// The most bytes one line (a header or a poll) may hold once decompressed: far above a poll
/// of `max_candidates` rows, far below what a crafted file could unpack to.
pub const MAX_LINE_BYTES: u64 = 256 << 20;

/// The next line, without its newline; `None` at the end. A line over `max` bytes is an
/// error, not an allocation without end.
fn next_line(r: &mut impl BufRead, max: u64) -> Option<std::io::Result<Vec<u8>>> {
    let mut line = Vec::new();
    match r.take(max + 1).read_until(b'\n', &mut line) {
        Ok(0) => None,
        Ok(_) if line.last() == Some(&b'\n') => {
            line.pop();
            Some(Ok(line))
        }
        Ok(n) if n as u64 > max => Some(Err(std::io::Error::other(format!(
            "a line longer than {max} bytes"
        )))),
        // The last line, cut off before its newline.
        Ok(_) => Some(Ok(line)),
        Err(e) => Some(Err(e)),
    }
}

/// `obs`, read under the loose pre-filter, as `settings` would have read it: rows cut down
/// by their own candidate test (the test every backend applies), the staging list only with
/// detection on, and no protected sets unless the caller asked for them. The daemon's
/// recording tap hands the daemon this; a replay hands it to the replayed settings. Without
/// `with_block_list` the block list is left empty (a replay keeps its own).
pub fn as_read_by(
    obs: &Observation,
    settings: &Settings,
    asked_protected: bool,
    with_block_list: bool,
) -> Observation {
    let d = &settings.detection;
    // Every field named: a new one must be thought about here.
    let Observation {
        candidates,
        rows_read,
        bad_rows,
        table_size,
        filtered,
        truncated,
        addresses,
        protected,
        allowlist,
        block_list,
        staging,
        uptime,
        own,
        shared,
    } = obs;
    Observation {
        candidates: candidates
            .iter()
            .filter(|c| is_candidate(c, d))
            .cloned()
            .collect(),
        rows_read: *rows_read,
        bad_rows: *bad_rows,
        table_size: *table_size,
        filtered: *filtered,
        truncated: *truncated,
        addresses: addresses.clone(),
        protected: if asked_protected {
            protected.clone()
        } else {
            Vec::new()
        },
        allowlist: allowlist.clone(),
        block_list: if with_block_list {
            block_list.clone()
        } else {
            Vec::new()
        },
        staging: if d.enabled {
            staging.clone()
        } else {
            Vec::new()
        },
        uptime: *uptime,
        own: own.clone(),
        shared: shared.clone(),
    }
}

/// Plays a recording's polls as a router: each `observe` is the poll last [`fed`], as the
/// replayed settings would have read it ([`as_read_by`]); the block list is the recording's at the start
/// plus what the replay added (expiring on the recording's clock), not what the live daemon did.
///
/// [`fed`]: RecordingBackend::feed
#[derive(Default)]
pub struct RecordingBackend {
    next: Option<Arc<Poll>>,
    now: Duration,
    list: Vec<(ListEntry, Option<Duration>)>,
    next_id: u64,
    started: bool,
}

impl RecordingBackend {
    /// A backend with nothing to play yet.
    pub fn new() -> Self {
        Self {
            next_id: 1,
            ..Self::default()
        }
    }

    /// Makes `poll` what the next `observe` returns.
    pub fn feed(&mut self, poll: Arc<Poll>) {
        self.next = Some(poll);
    }
}

fn exhausted() -> BackendError {
    BackendError {
        kind: rosguard_core::FailureKind::ConnectionLost,
        label: "recording".into(),
        message: "no poll was fed to the recording backend".into(),
    }
}

impl Backend for RecordingBackend {
    async fn connect(&mut self) -> Result<(), BackendError> {
        Ok(())
    }

    async fn observe(
        &mut self,
        plan: &ObservePlan,
        settings: &Settings,
    ) -> Result<Observation, BackendError> {
        let poll = self.next.take().ok_or_else(exhausted)?;
        let now = poll.time();
        self.now = now;
        // What the live daemon was handed: the rows its settings read, the protected
        // addresses when its plan asked for them.
        let mut obs = as_read_by(&poll.observation, settings, plan.refresh_protected, false);
        if !self.started {
            // The list as it was when recording started; from here on, the replay's own.
            self.started = true;
            self.list = poll
                .observation
                .block_list
                .iter()
                .map(|e| (e.clone(), e.timeout.map(|t| now + t)))
                .collect();
        }
        self.list.retain(|(_, end)| end.is_none_or(|end| end > now));
        obs.block_list = self
            .list
            .iter()
            .map(|(e, end)| ListEntry {
                timeout: end.map(|end| end.saturating_sub(now)),
                ..e.clone()
            })
            .collect();
        Ok(obs)
    }

    async fn apply(&mut self, decision: &Decision, _settings: &Settings) -> Applied {
        let mut adds = Vec::with_capacity(decision.adds.len());
        for a in &decision.adds {
            if decision.dry_run {
                adds.push(AddResult::WouldAdd);
                continue;
            }
            let present = self
                .list
                .iter()
                .any(|(e, _)| e.address == ListAddress::Net(IpNet::from(a.address)));
            if present {
                adds.push(AddResult::AlreadyPresent);
                continue;
            }
            self.list.push((
                ListEntry {
                    id: format!("*R{}", self.next_id),
                    list: String::new(),
                    address: ListAddress::Net(IpNet::from(a.address)),
                    timeout: Some(a.timeout),
                    dynamic: true,
                    disabled: false,
                    comment: Some(a.comment.clone()),
                },
                Some(self.now + a.timeout),
            ));
            self.next_id += 1;
            adds.push(AddResult::Added);
        }
        let removals = decision
            .removals
            .iter()
            .map(|_| {
                if decision.dry_run {
                    RemoveResult::WouldRemove
                } else {
                    RemoveResult::Removed
                }
            })
            .collect();
        for l in &decision.lifts {
            self.list
                .retain(|(e, _)| e.address != ListAddress::Net(IpNet::from(l.address)));
        }
        Applied {
            adds,
            removals,
            lost: None,
        }
    }

    async fn close(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header::new("core", Prefilter::for_settings(&Settings::default()), 1.0e9)
    }

    #[test]
    fn a_recording_reads_back_and_a_cut_one_up_to_its_last_poll() {
        let mut w = Writer::new(Vec::new(), &header()).unwrap();
        let mut two = 0;
        for i in 0..3 {
            if i == 2 {
                two = w.bytes as usize;
            }
            let o = Observation {
                rows_read: i,
                ..Observation::default()
            };
            w.poll(&Poll {
                t: 1.0e9 + i as f64,
                observation: o,
            })
            .unwrap();
        }
        let bytes = w.into_inner();
        let r = Recording::read(&bytes[..]).unwrap();
        assert_eq!(r.header, header());
        assert_eq!(r.polls.len(), 3);
        assert_eq!(r.polls[2].observation.rows_read, 2);
        assert!(r.cut.is_none());
        // Killed in the middle of the last poll.
        let r = Recording::read(&bytes[..two + (bytes.len() - two) / 2]).unwrap();
        assert_eq!(r.polls.len(), 2);
        assert!(r.cut.as_deref().unwrap().contains("poll 3"), "{:?}", r.cut);
    }

    #[test]
    fn a_poll_over_the_line_limit_is_refused_not_read_without_end() {
        let mut w = Writer::new(Vec::new(), &header()).unwrap();
        let big = Observation {
            candidates: Vec::new(),
            own: vec!["192.0.2.1".parse().unwrap(); 500],
            ..Observation::default()
        };
        w.poll(&Poll {
            t: 1.0e9,
            observation: Observation::default(),
        })
        .unwrap();
        w.poll(&Poll {
            t: 1.0e9 + 1.0,
            observation: big,
        })
        .unwrap();
        let bytes = w.into_inner();
        let r = Recording::read_with_limit(&bytes[..], 2000).unwrap();
        assert_eq!(r.polls.len(), 1);
        assert!(
            r.cut.as_deref().unwrap().contains("longer than 2000"),
            "{:?}",
            r.cut
        );
        assert_eq!(Recording::read(&bytes[..]).unwrap().polls.len(), 2);
    }

    #[test]
    fn other_files_and_newer_versions_are_refused() {
        assert!(Recording::read(&b""[..]).is_err());
        assert!(Recording::read(&b"not gzip"[..]).is_err());
        let mut h = header();
        h.version = VERSION + 1;
        let bytes = Writer::new(Vec::new(), &h).unwrap().into_inner();
        let e = format!("{:#}", Recording::read(&bytes[..]).unwrap_err());
        assert!(e.contains("newer"), "{e}");
    }

    fn row(id: u32, orig: u64, repl: u64) -> Connection {
        use rosguard_core::model::{ConnId, Endpoint, Family};
        Connection {
            id: ConnId::new(format!("*{id:X}")),
            family: Family::V4,
            protocol: Protocol::Tcp,
            src: Endpoint {
                addr: IpAddr::from([192, 168, 88, (id % 200) as u8 + 2]),
                port: Some(40000 + id as u16),
            },
            dst: Endpoint {
                addr: IpAddr::from([203, 0, 113, 5]),
                port: Some(443),
            },
            orig_packets: Some(orig),
            repl_packets: Some(repl),
            orig_bytes: Some(orig * 60),
            repl_bytes: None,
            orig_fasttrack_packets: None,
            repl_fasttrack_packets: None,
            tcp_state: None,
        }
    }

    fn entry(id: u32, timeout: Option<u64>) -> ListEntry {
        ListEntry {
            id: format!("*{id}"),
            list: "tls_block".into(),
            address: ListAddress::Net(IpNet::from(IpAddr::from([198, 51, 100, id as u8]))),
            timeout: timeout.map(Duration::from_secs),
            dynamic: timeout.is_some(),
            disabled: false,
            comment: Some("rosguard: test".into()),
        }
    }

    fn write_all(polls: &[Poll]) -> (Vec<u8>, u64) {
        let mut w = Writer::new(Vec::new(), &header()).unwrap();
        for p in polls {
            w.poll(p).unwrap();
        }
        let bytes = w.bytes;
        (w.into_inner(), bytes)
    }

    #[test]
    fn unchanged_rows_are_written_as_references_and_read_back_whole() {
        let rows: Vec<Connection> = (0..500).map(|i| row(i, 5, 0)).collect();
        let mut moved = rows.clone();
        moved[7].orig_packets = Some(9);
        moved.remove(100);
        moved.push(row(999, 4, 1));
        let poll = |t: f64, candidates: &[Connection], left: u64| Poll {
            t,
            observation: Observation {
                candidates: candidates.to_vec(),
                rows_read: candidates.len() as u64,
                bad_rows: 2,
                table_size: Some(9000 + candidates.len() as u64),
                filtered: true,
                truncated: t > 1.0e9,
                block_list: vec![entry(1, Some(left)), entry(2, None)],
                ..Observation::default()
            },
        };
        // The block list's entry counts down: the same context.
        let polls = vec![poll(1.0e9, &rows, 600), poll(1.0e9 + 2.0, &moved, 598)];
        let (bytes, _) = write_all(&polls);
        // The second poll is a handful of references, not 500 rows again.
        let lines: Vec<String> = std::io::BufReader::new(MultiGzDecoder::new(&bytes[..]))
            .lines()
            .map(Result::unwrap)
            .collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].contains("\"context\""), "{}", &lines[1][..200]);
        assert!(!lines[2].contains("\"context\""), "{}", lines[2]);
        assert!(
            lines[2].contains("[0,7],[7,9,0,300,null,null,null],[8,92],[101,399],[\"*3E7\",\"v4\",\"tcp\",\"192.168.88.201\",40999,\"203.0.113.5\",443,4,1,240,null,null,null,null]]"),
            "{}",
            lines[2]
        );
        let back = Recording::read(&bytes[..]).unwrap();
        assert_eq!(back.polls, polls);
    }

    /// Writes to a `Vec`, failing the writes of the one poll it is told to.
    struct Flaky {
        out: Vec<u8>,
        fail: bool,
    }

    impl Write for Flaky {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if self.fail {
                return Err(std::io::Error::other("disk full"));
            }
            self.out.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A poll that failed to write is not one the next poll refers to, rows or context.
    #[test]
    fn after_a_failed_write_the_next_poll_stands_alone() {
        let flaky = Flaky {
            out: Vec::new(),
            fail: false,
        };
        let mut w = Writer::new(flaky, &header()).unwrap();
        let poll = |t: f64, rows: Vec<Connection>, own: u8| Poll {
            t,
            observation: Observation {
                candidates: rows,
                own: vec![IpAddr::from([192, 0, 2, own])],
                ..Observation::default()
            },
        };
        w.poll(&poll(1.0e9, vec![row(1, 5, 0)], 1)).unwrap();
        w.out.fail = true;
        let second = poll(1.0e9 + 2.0, vec![row(1, 5, 0), row(2, 4, 0)], 2);
        assert!(w.poll(&second).is_err());
        w.out.fail = false;
        // The same context and rows as the poll that was lost.
        let third = poll(1.0e9 + 4.0, vec![row(1, 5, 0), row(2, 4, 0)], 2);
        w.poll(&third).unwrap();
        let r = Recording::read(&w.into_inner().out[..]).unwrap();
        assert!(r.cut.is_none(), "{:?}", r.cut);
        assert_eq!(r.polls.len(), 2);
        assert_eq!(r.polls[1], third);
    }

    #[test]
    fn a_reference_to_a_row_that_was_not_there_cuts_the_recording() {
        for bad in [
            "[[0,3]]",
            "[[5,1,1,1,1,1,1]]",
            "[[0]]",
            "[[0,1,2]]",
            "[[0,1,1,1,1,1,1,1]]",
            r#"[["*9","v4","tcp"]]"#,
            r#"[["*9","v4","tcp","192.0.2.1",1,"192.0.2.2",2,1,1,1,1,null,null,null,"extra"]]"#,
            r#"[{"id":"*9"}]"#,
            "[[true]]",
        ] {
            let mut w = Writer::new(Vec::new(), &header()).unwrap();
            w.poll(&Poll {
                t: 1.0e9,
                observation: Observation {
                    candidates: vec![row(1, 5, 0), row(2, 5, 0)],
                    ..Observation::default()
                },
            })
            .unwrap();
            let line = format!(
                "{{\"t\":1000000002.0,\"read\":0,\"bad\":0,\"size\":null,\"filtered\":false,\"truncated\":false,\"uptime\":null,\"rows\":{bad}}}\n"
            );
            w.member(line.as_bytes()).unwrap();
            let r = Recording::read(&w.into_inner()[..]).unwrap();
            assert_eq!(r.polls.len(), 1, "{bad}");
            let cut = r.cut.unwrap();
            assert!(cut.contains("poll 2"), "{bad}: {cut}");
            // What a row may be, said where one is not.
            if bad.contains('{') {
                assert!(
                    cut.contains("expected [id, ..13 fields], [start, len]"),
                    "{cut}"
                );
            }
            if bad.contains("true") {
                assert!(cut.contains("expected a row's id or an index"), "{cut}");
            }
        }
    }

    /// Polls of references to the 10 rows before, read with a limit of 100 rows.
    fn read_refs(elements: &[&str]) -> Recording {
        let mut w = Writer::new(Vec::new(), &header()).unwrap();
        let rows: Vec<Connection> = (0..10).map(|i| row(i, 5, 0)).collect();
        w.poll(&Poll {
            t: 1.0e9,
            observation: Observation {
                candidates: rows,
                ..Observation::default()
            },
        })
        .unwrap();
        let line = format!(
            "{{\"t\":1000000002.0,\"read\":0,\"bad\":0,\"size\":null,\"filtered\":false,\"truncated\":false,\"uptime\":null,\"rows\":[{}]}}\n",
            elements.join(",")
        );
        w.member(line.as_bytes()).unwrap();
        let bytes = w.into_inner();
        let r = Reader::with_limits(&bytes[..], MAX_LINE_BYTES, 100).unwrap();
        Recording::collect(r)
    }

    #[test]
    fn references_cannot_multiply_a_poll_past_the_row_limit() {
        // Exactly the limit reads.
        let r = read_refs(&["[0,10]"; 10]);
        assert!(r.cut.is_none(), "{:?}", r.cut);
        assert_eq!(r.polls[1].observation.candidates.len(), 100);
        // One row more does not, however the rows come: runs of 9 reach 101 on the 12th.
        for over in [
            vec!["[0,10]"; 10]
                .into_iter()
                .chain(["[0,1]"])
                .collect::<Vec<_>>(),
            vec!["[0,9]"; 12],
        ] {
            let r = read_refs(&over);
            assert_eq!(r.polls.len(), 1, "{over:?}");
            assert!(
                r.cut.as_deref().unwrap().contains("more than 100 rows"),
                "{:?}",
                r.cut
            );
        }
        assert_eq!(MAX_POLL_ROWS, 1_000_000);
    }

    #[test]
    fn a_whole_read_is_refused_past_its_row_limit() {
        let polls: Vec<Poll> = (0..3)
            .map(|i| Poll {
                t: 1.0e9 + i as f64,
                observation: Observation {
                    candidates: vec![row(1, 5, 0), row(2, 5, 0)],
                    ..Observation::default()
                },
            })
            .collect();
        let (bytes, _) = write_all(&polls);
        let r = Recording::read_at_most(Reader::new(&bytes[..]).unwrap(), 6).unwrap();
        assert_eq!(r.polls, polls);
        let e = Recording::read_at_most(Reader::new(&bytes[..]).unwrap(), 5).unwrap_err();
        assert!(e.to_string().contains("more than 5 rows by poll 3"), "{e}");
    }

    #[test]
    fn a_version_1_recording_still_reads() {
        let mut h = header();
        h.version = 1;
        let p = Poll {
            t: 1.0e9,
            observation: Observation {
                candidates: vec![row(1, 5, 0)],
                rows_read: 3,
                ..Observation::default()
            },
        };
        let mut w = Writer::new(Vec::new(), &h).unwrap();
        let mut line = serde_json::to_vec(&p).unwrap();
        line.push(b'\n');
        w.member(&line).unwrap();
        let r = Recording::read(&w.into_inner()[..]).unwrap();
        assert_eq!(r.header.version, 1);
        assert_eq!(r.polls, vec![p]);
    }

    proptest::proptest! {
        /// Whatever rows come and go, move or reorder, a poll reads back as it was written.
        #[test]
        fn polls_read_back_as_written(
            steps in proptest::collection::vec(
                proptest::collection::vec((0u32..40, 0u64..4, 0u64..3, proptest::bool::ANY), 0..30),
                1..8,
            ),
            lists in proptest::collection::vec(proptest::option::of(0u64..5), 1..8),
        ) {
            let mut polls = Vec::new();
            for (i, rows) in steps.iter().enumerate() {
                let mut seen = std::collections::HashSet::new();
                let mut candidates: Vec<Connection> = rows
                    .iter()
                    .filter(|(id, ..)| seen.insert(*id))
                    .map(|&(id, o, r, udp)| {
                        let mut c = row(id, o, r);
                        if udp {
                            c.protocol = Protocol::Udp;
                        }
                        c
                    })
                    .collect();
                if i % 3 == 2 {
                    candidates.reverse();
                }
                let t = 1_000_000_000 + 2 * i as u64;
                let block_list = match lists[i % lists.len()] {
                    None => Vec::new(),
                    Some(n) => (0..n as u32).map(|k| entry(k, (k % 2 == 0).then_some(300))).collect(),
                };
                polls.push(Poll {
                    t: t as f64,
                    observation: Observation {
                        rows_read: candidates.len() as u64,
                        candidates,
                        block_list,
                        uptime: Some(Duration::from_secs(t)),
                        ..Observation::default()
                    },
                });
            }
            let (bytes, _) = write_all(&polls);
            let back = Recording::read(&bytes[..]).unwrap();
            proptest::prop_assert!(back.cut.is_none());
            proptest::prop_assert_eq!(back.polls.len(), polls.len());
            for (a, b) in back.polls.iter().zip(&polls) {
                proptest::prop_assert_eq!(&a.observation.candidates, &b.observation.candidates);
                proptest::prop_assert_eq!(a.observation.rows_read, b.observation.rows_read);
                proptest::prop_assert_eq!(a.observation.uptime, b.observation.uptime);
                proptest::prop_assert_eq!(a.observation.block_list.len(), b.observation.block_list.len());
                for (x, y) in a.observation.block_list.iter().zip(&b.observation.block_list) {
                    proptest::prop_assert_eq!(&x.address, &y.address);
                    let (x, y) = (x.timeout.map(|d| d.as_secs()), y.timeout.map(|d| d.as_secs()));
                    let close = match (x, y) {
                        (Some(x), Some(y)) => x.abs_diff(y) <= 2,
                        (x, y) => x == y,
                    };
                    proptest::prop_assert!(close, "{:?} {:?}", x, y);
                }
            }
        }
    }

    /// A replay is handed what the live daemon was: the rows its settings read, and the
    /// protected addresses only in the polls its plan asked for them.
    #[tokio::test]
    async fn a_replayed_poll_is_what_the_settings_and_the_plan_would_have_read() {
        let poll = Arc::new(Poll {
            t: 1.0e9,
            observation: Observation {
                // Flagged by the defaults (orig > 3, repl <= 2), and not.
                candidates: vec![row(1, 9, 0), row(2, 2, 1)],
                protected: vec![(Protected::Dns, vec![IpAddr::from([198, 51, 100, 53])])],
                block_list: vec![entry(1, Some(600))],
                ..Observation::default()
            },
        });
        let s = Settings::default();
        let mut b = RecordingBackend::new();
        for ask in [false, true] {
            b.feed(poll.clone());
            let plan = ObservePlan {
                refresh_protected: ask,
                ..ObservePlan::default()
            };
            let o = b.observe(&plan, &s).await.unwrap();
            assert_eq!(o.candidates, vec![row(1, 9, 0)]);
            assert_eq!(o.protected.is_empty(), !ask);
            // The block list is the recording's at the start, counting down on its clock.
            assert_eq!(o.block_list.len(), 1);
        }
    }

    #[test]
    fn settings_looser_than_the_prefilter_are_named() {
        let p = Prefilter::for_settings(&Settings::default());
        assert!(p.blind_spots(&Detection::default()).is_empty());
        let mut d = Detection {
            max_repl_packets: 20,
            ..Detection::default()
        };
        d.protocols.push(Protocol::Gre);
        let b = p.blind_spots(&d);
        assert_eq!(b.len(), 2, "{b:?}");
        assert!(b[0].contains("max_repl_packets = 20"));
    }
}
