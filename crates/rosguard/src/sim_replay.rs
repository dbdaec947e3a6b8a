//! `rosguard sim --replay FILE`: the simulator serving a recording as a live router, so that a
//! reported false positive can be reproduced with the real client. `rosguard once`, `run` or
//! `record` pointed at it see what the router saw, poll by poll.
//!
//! [`ReplayFeed`] is a [`routeros_sim::Feed`]. Before the simulator starts it gives it the
//! router's context as the first poll saw it: its addresses (`/ip/address`, `/ipv6/address`),
//! its default gateways (`/ip/route`, `/ipv6/route`), its DNS servers (`/ip/dns`) and the
//! address its API sessions came from (`/user/active`); a flag given on the command line wins.
//! Then, at each poll's time on the simulator's clock (poll `i` at the start plus `t_i - t_0`:
//! real speed with the real clock, `SimHandle::advance` in tests), it makes both connection
//! tables exactly that poll's rows (a flow keeps its `.id` while its 5-tuple stays), reports
//! the poll's table size as `total-entries`, and makes the allowlist and the scan staging list
//! what the poll saw. The block list is seeded once, as it was at the first poll (remaining
//! timeouts included): from there on it is the client's. After the last poll it keeps serving
//! that poll. Polls that came due while it could not run are skipped: it serves the latest.
//!
//! It deliberately serves only what the recording kept. A recording holds the rows its
//! pre-filter ([`Prefilter`](crate::recording::Prefilter)) let through, not the whole table, so
//! the served tables are those rows (and `count-only` counts them; `total-entries` says the
//! recorded size). Counters stand still between polls, rows have no NAT or reply tuple of
//! their own and no timeout the router gave them ([`ROW_TIMEOUT`] from their poll), and a
//! connection a client removes comes back at the next poll if the recording has it. The
//! context is not followed after the first poll, a family with several default gateways or
//! several session addresses gets the first (the rest is logged), and rosguard's own address
//! on the API connection and the router's uptime are the simulator's. It holds the whole
//! recording in memory, so it takes at most [`MAX_SERVED_ROWS`] rows.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};
use rosguard_core::model::{Connection, Family, ListAddress, ListEntry, Protocol, TcpState};
use rosguard_core::policy::Protected;
use routeros_proto::format_duration;
use routeros_sim::{Feed, RouterAddress, SimConfig, SimConnection, SimHandle, SimProtocol};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::output::printable;
use crate::recording::{Poll, Recording};

/// How long a served row lasts after its poll without being served again (its conntrack
/// timeout on the simulator). Every poll serves its rows afresh, and after the last poll the
/// feed serves it again every half of this, so the last state never times out.
pub const ROW_TIMEOUT: Duration = Duration::from_secs(86_400);

/// The most rows, over all its polls, a served recording may hold: the feed keeps every poll
/// in memory (about 100 bytes a row, so about a gigabyte), and an hour of a router of 10,000
/// connections is about 7 million rows.
pub const MAX_SERVED_ROWS: u64 = 10_000_000;

/// What the feed did, for an observer (a test); the simulator does not need it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FeedEvent {
    /// Poll `poll` (counted from 0) is what the simulator serves from now on.
    Served {
        /// The poll.
        poll: usize,
        /// Its rows now in the tables.
        rows: usize,
        /// Its rows that could not be served (an address of the other family), skipped.
        bad_rows: usize,
        /// Earlier polls that came due at the same time and were never served.
        skipped: usize,
    },
    /// The last poll is served; the simulator keeps serving it.
    Ended {
        /// The polls of the recording.
        polls: usize,
    },
}

/// A recording served through the simulator.
pub struct ReplayFeed {
    /// What it plays, for messages: the file name.
    source: String,
    router: String,
    polls: Vec<Poll>,
    offsets: Vec<Duration>,
    events: Option<mpsc::UnboundedSender<FeedEvent>>,
}

impl std::fmt::Debug for ReplayFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayFeed")
            .field("source", &self.source)
            .field("polls", &self.polls.len())
            .finish()
    }
}

impl ReplayFeed {
    /// Reads the recording at `path`, at most [`MAX_SERVED_ROWS`] rows of it.
    pub fn open(path: &Path) -> Result<Self> {
        let rec = Recording::open_at_most(path, MAX_SERVED_ROWS)?;
        Self::new(rec, &path.display().to_string())
    }

    /// A feed of `recording`'s polls; `source` names it in messages. Refuses a recording
    /// without a complete poll: there would be nothing to serve.
    pub fn new(recording: Recording, source: &str) -> Result<Self> {
        if recording.polls.is_empty() {
            bail!(
                "{source} holds no complete poll, so there is nothing to serve; record one with `rosguard record`"
            );
        }
        if let Some(cut) = &recording.cut {
            warn!(
                recording = source,
                "the recording was cut short: {}",
                printable(cut)
            );
        }
        Ok(Self {
            source: source.to_owned(),
            router: recording.header.router.clone(),
            offsets: offsets(&recording.polls),
            polls: recording.polls,
            events: None,
        })
    }

    /// Reports what it does on `tx`.
    pub fn with_events(mut self, tx: mpsc::UnboundedSender<FeedEvent>) -> Self {
        self.events = Some(tx);
        self
    }

    /// The polls served.
    pub fn polls(&self) -> &[Poll] {
        &self.polls
    }

    /// When each poll is served, after the feed starts on the simulator's clock: its time
    /// after the first poll's (a poll stamped earlier than the one before it is served with it).
    pub fn offsets(&self) -> &[Duration] {
        &self.offsets
    }

    /// Sets the router's context in `cfg` from the first poll (flags already set in `cfg`
    /// win) and returns, in words, what of the recording the simulator cannot show.
    pub fn apply_context(&self, cfg: &mut SimConfig) -> Vec<String> {
        let mut notes = Vec::new();
        let first = &self.polls[0].observation;
        cfg.router_addresses = first
            .addresses
            .iter()
            .enumerate()
            .map(|(i, net)| {
                RouterAddress::new(net.addr(), net.prefix_len(), &format!("ether{}", i + 1))
            })
            .collect();
        let protected = |kind: Protected| -> Option<&Vec<IpAddr>> {
            self.polls.iter().find_map(|p| {
                p.observation
                    .protected
                    .iter()
                    .find(|(k, _)| *k == kind)
                    .map(|(_, v)| v)
            })
        };
        match protected(Protected::Gateway) {
            Some(gateways) => {
                let v4: Vec<Ipv4Addr> = gateways
                    .iter()
                    .filter_map(|a| match a {
                        IpAddr::V4(a) => Some(*a),
                        IpAddr::V6(_) => None,
                    })
                    .collect();
                let v6: Vec<Ipv6Addr> = gateways
                    .iter()
                    .filter_map(|a| match a {
                        IpAddr::V6(a) => Some(*a),
                        IpAddr::V4(_) => None,
                    })
                    .collect();
                if cfg.ipv4_gateway.is_none() {
                    cfg.ipv4_gateway = v4.first().copied();
                }
                if cfg.ipv6_gateway.is_none() {
                    cfg.ipv6_gateway = v6.first().copied();
                }
                if v4.len() > 1 || v6.len() > 1 {
                    notes.push(format!(
                        "the router had several default gateways ({}); the simulator shows one per family",
                        join(gateways)
                    ));
                }
                if v6.is_empty() {
                    notes.push(
                        "the router had no IPv6 default gateway; the simulator shows fe80::1"
                            .into(),
                    );
                }
            }
            None => notes.push(
                "the recording never read the default gateways; the simulator shows its own".into(),
            ),
        }
        match protected(Protected::Dns) {
            Some(servers) if cfg.dns_servers.is_none() => cfg.dns_servers = Some(servers.clone()),
            Some(_) => {}
            None => notes.push(
                "the recording never read the DNS servers; the simulator shows its own".into(),
            ),
        }
        match protected(Protected::Session) {
            Some(sessions) => {
                if cfg.session_address.is_none() {
                    cfg.session_address = sessions.first().copied();
                }
                let distinct: BTreeSet<&IpAddr> = sessions.iter().collect();
                if distinct.len() > 1 {
                    notes.push(format!(
                        "rosguard's API sessions came from several addresses ({}); the simulator shows {} for every session",
                        join(sessions),
                        cfg.session_address.map_or_else(|| "the client's".into(), |a| a.to_string())
                    ));
                }
            }
            None => notes.push(
                "the recording never read the API sessions; the simulator shows the client's address"
                    .into(),
            ),
        }
        notes
    }

    /// Makes the simulator serve poll `i` (and, the first time, seed the block list).
    fn serve(&self, sim: &SimHandle, i: usize, skipped: usize, names: &mut ListNames) {
        let Some(poll) = self.polls.get(i) else {
            return;
        };
        let obs = &poll.observation;
        let (mut v4, mut v6, mut bad) = (Vec::new(), Vec::new(), 0usize);
        for c in &obs.candidates {
            match to_sim_connection(c) {
                Some(s) if c.family == Family::V4 => v4.push(s),
                Some(s) => v6.push(s),
                None => {
                    bad += 1;
                    debug!(poll = i, row = %c.summary(), "a recorded row's addresses are not of its table's family; skipped");
                }
            }
        }
        let rows = v4.len() + v6.len();
        for (family, conns) in [(Family::V4, v4), (Family::V6, v6)] {
            if let Err(e) = sim.sync_connections(family, conns) {
                warn!(poll = i, error = %e, "serving a recorded table");
            }
        }
        sim.set_table_size(obs.table_size);
        if !names.seeded {
            names.seeded = true;
            seed(sim, &obs.block_list);
        }
        follow(sim, &obs.allowlist, &mut names.allowlist);
        follow(sim, &obs.staging, &mut names.staging);
        debug!(poll = i, rows, skipped, "serving a recorded poll");
        if bad > 0 {
            warn!(
                poll = i,
                rows = bad,
                "recorded rows with addresses of the other family were not served"
            );
        }
        self.emit(FeedEvent::Served {
            poll: i,
            rows,
            bad_rows: bad,
            skipped,
        });
    }

    fn emit(&self, e: FeedEvent) {
        if let Some(tx) = &self.events {
            let _ = tx.send(e);
        }
    }
}

/// The names of the lists the feed follows, as the recording's entries named them.
#[derive(Debug, Default)]
struct ListNames {
    seeded: bool,
    allowlist: BTreeSet<String>,
    staging: BTreeSet<String>,
}

impl Feed for ReplayFeed {
    fn configure(&self, cfg: &mut SimConfig) -> Result<()> {
        for note in self.apply_context(cfg) {
            warn!(recording = self.source.as_str(), "{note}");
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let span = self.offsets.last().copied().unwrap_or_default();
        format!(
            "replaying {} (router {}, {} polls over {})",
            self.source,
            printable(&self.router),
            self.polls.len(),
            format_duration(Duration::from_secs(span.as_secs()))
        )
    }

    fn start(
        self,
        sim: SimHandle,
        stop: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let start = sim.now();
        let mut names = ListNames::default();
        // The first poll is served before anyone is told where the simulator listens.
        self.serve(&sim, 0, 0, &mut names);
        async move {
            let mut next = 1;
            while next < self.polls.len() {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = sim.sleep_until(start + self.offsets[next]) => {}
                }
                let now = sim.now().saturating_sub(start);
                let due = self
                    .offsets
                    .partition_point(|o| *o <= now)
                    .saturating_sub(1)
                    .max(next);
                self.serve(&sim, due, due - next, &mut names);
                next = due + 1;
            }
            let last = self.polls.len() - 1;
            info!(
                recording = self.source.as_str(),
                polls = self.polls.len(),
                "the recording ended; serving its last poll from now on"
            );
            self.emit(FeedEvent::Ended {
                polls: self.polls.len(),
            });
            let mut at = sim.now();
            loop {
                at += ROW_TIMEOUT / 2;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = sim.sleep_until(at) => self.serve(&sim, last, 0, &mut names),
                }
            }
        }
    }
}

/// Each poll's time after the first's, never earlier than the one before.
fn offsets(polls: &[Poll]) -> Vec<Duration> {
    let t0 = polls.first().map_or(0.0, |p| p.t);
    let mut prev = Duration::ZERO;
    polls
        .iter()
        .map(|p| {
            let off = Duration::try_from_secs_f64(p.t - t0).unwrap_or(prev);
            prev = prev.max(off);
            prev
        })
        .collect()
}

fn join(addrs: &[IpAddr]) -> String {
    addrs
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A recorded row as the simulator serves it: the same tuple, state and counters, standing
/// still. `None` when an address is not of the row's table's family.
pub fn to_sim_connection(c: &Connection) -> Option<SimConnection> {
    if Family::of(c.src.addr) != c.family || Family::of(c.dst.addr) != c.family {
        return None;
    }
    let protocol = match c.protocol {
        Protocol::Tcp => SimProtocol::Tcp,
        Protocol::Udp => SimProtocol::Udp,
        Protocol::Icmp => SimProtocol::Icmp,
        Protocol::Icmpv6 => SimProtocol::Icmpv6,
        Protocol::Gre => SimProtocol::Gre,
        Protocol::Other(n) => SimProtocol::Other(n),
    };
    let end = |addr, port: Option<u16>| SocketAddr::new(addr, port.unwrap_or(0));
    let mut s = SimConnection::new(
        protocol,
        end(c.src.addr, c.src.port),
        end(c.dst.addr, c.dst.port),
    );
    s.tcp_state = match protocol {
        SimProtocol::Tcp => c.tcp_state.and_then(sim_state),
        _ => None,
    };
    s.orig_packets = c.orig_packets.unwrap_or(0);
    s.repl_packets = c.repl_packets.unwrap_or(0);
    s.orig_bytes = c.orig_bytes.unwrap_or(0);
    s.repl_bytes = c.repl_bytes.unwrap_or(0);
    s.orig_fasttrack_packets = c.orig_fasttrack_packets.unwrap_or(0);
    s.repl_fasttrack_packets = c.repl_fasttrack_packets.unwrap_or(0);
    s.timeout = ROW_TIMEOUT;
    Some(s)
}

fn sim_state(s: TcpState) -> Option<routeros_sim::TcpState> {
    use routeros_sim::TcpState as S;
    Some(match s {
        TcpState::SynSent => S::SynSent,
        TcpState::SynRecv => S::SynRecv,
        TcpState::Established => S::Established,
        TcpState::FinWait => S::FinWait,
        TcpState::CloseWait => S::CloseWait,
        TcpState::LastAck => S::LastAck,
        TcpState::TimeWait => S::TimeWait,
        TcpState::Close => S::Close,
        TcpState::Listen => S::Listen,
        TcpState::Other => return None,
    })
}

/// Adds `entries` to their lists as they were (remaining timeout, comment, disabled).
fn seed(sim: &SimHandle, entries: &[ListEntry]) {
    for e in entries {
        add(sim, e);
    }
}

fn add(sim: &SimHandle, e: &ListEntry) {
    let added = sim.add_list_entry_as(
        e.family(),
        &e.list,
        &e.address.to_string(),
        e.timeout,
        e.comment.as_deref(),
        e.disabled,
    );
    if added.is_none() {
        warn!(list = e.list.as_str(), address = %e.address, "the simulator refused a recorded list entry");
    }
}

/// Makes the lists named in `entries` (or named before, in `names`) hold exactly `entries`:
/// entries of those lists not recorded go, recorded ones missing are added.
fn follow(sim: &SimHandle, entries: &[ListEntry], names: &mut BTreeSet<String>) {
    names.extend(entries.iter().map(|e| e.list.clone()));
    if names.is_empty() {
        return;
    }
    let key = |list: &str, address: &ListAddress, disabled: bool| {
        (list.to_owned(), address.to_string(), disabled)
    };
    let want: BTreeSet<_> = entries
        .iter()
        .map(|e| key(&e.list, &e.address, e.disabled))
        .collect();
    let mut have = BTreeSet::new();
    for family in [Family::V4, Family::V6] {
        for e in sim.address_lists(family) {
            if !names.contains(&e.list) {
                continue;
            }
            let k = match e.address.parse::<ListAddress>() {
                Ok(a) => key(&e.list, &a, e.disabled),
                Err(_) => (e.list.clone(), e.address.clone(), e.disabled),
            };
            if want.contains(&k) {
                have.insert(k);
            } else {
                sim.remove_list_entry(family, &e.id);
            }
        }
    }
    for e in entries {
        if have.insert(key(&e.list, &e.address, e.disabled)) {
            add(sim, e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rosguard_core::model::{ConnId, Endpoint};
    use rosguard_core::observation::Observation;

    use crate::recording::{Header, Prefilter};

    fn recording(polls: Vec<Poll>) -> Recording {
        Recording {
            header: Header::new("core", Prefilter::for_settings(&Default::default()), 0.0),
            polls,
            cut: None,
        }
    }

    fn poll(t: f64, observation: Observation) -> Poll {
        Poll { t, observation }
    }

    fn conn(src: &str, dst: &str, family: Family) -> Connection {
        let ep = |s: &str| {
            let a: SocketAddr = s.parse().unwrap();
            Endpoint {
                addr: a.ip(),
                port: Some(a.port()),
            }
        };
        Connection {
            id: ConnId::new("*1"),
            family,
            protocol: Protocol::Tcp,
            src: ep(src),
            dst: ep(dst),
            orig_packets: Some(9),
            repl_packets: Some(1),
            orig_bytes: Some(900),
            repl_bytes: None,
            orig_fasttrack_packets: Some(4),
            repl_fasttrack_packets: None,
            tcp_state: Some(TcpState::SynSent),
        }
    }

    #[test]
    fn polls_are_served_at_their_time_after_the_first_and_never_out_of_order() {
        let polls = [100.0, 102.5, 101.0, 110.0, f64::NAN]
            .into_iter()
            .map(|t| poll(t, Observation::default()))
            .collect::<Vec<_>>();
        let secs: Vec<f64> = offsets(&polls).iter().map(Duration::as_secs_f64).collect();
        assert_eq!(secs, [0.0, 2.5, 2.5, 10.0, 10.0]);
    }

    #[test]
    fn a_recording_without_polls_is_refused_by_name() {
        let e = ReplayFeed::new(recording(Vec::new()), "cut.rec").unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("cut.rec holds no complete poll"), "{e}");
    }

    #[test]
    fn a_recorded_row_is_served_with_its_tuple_state_and_counters_standing_still() {
        let c = conn("192.168.88.50:40000", "203.0.113.45:443", Family::V4);
        let s = to_sim_connection(&c).unwrap();
        assert_eq!(s.protocol, SimProtocol::Tcp);
        assert_eq!((s.src, s.src_port), (c.src.addr, Some(40000)));
        assert_eq!((s.dst, s.dst_port), (c.dst.addr, Some(443)));
        assert_eq!(s.tcp_state, Some(routeros_sim::TcpState::SynSent));
        assert_eq!((s.orig_packets, s.repl_packets), (9, 1));
        assert_eq!((s.orig_bytes, s.repl_bytes), (900, 0));
        assert_eq!((s.orig_fasttrack_packets, s.repl_fasttrack_packets), (4, 0));
        assert_eq!((s.orig_pps, s.repl_pps), (0.0, 0.0));
        assert_eq!(s.timeout, ROW_TIMEOUT);
        // A row whose addresses are not of its table's family is not served.
        let bad = conn("[2001:db8::1]:40000", "203.0.113.45:443", Family::V4);
        assert!(to_sim_connection(&bad).is_none());
        let bad = conn("192.168.88.50:40000", "203.0.113.45:443", Family::V6);
        assert!(to_sim_connection(&bad).is_none());
    }

    #[test]
    fn the_context_comes_from_the_recording_and_flags_win() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let first = Observation {
            addresses: vec!["10.1.0.1/16".parse().unwrap()],
            protected: vec![
                (
                    Protected::Gateway,
                    vec![ip("10.1.0.254"), ip("10.1.0.253"), ip("2001:db8::1")],
                ),
                (Protected::Session, vec![ip("10.1.0.9")]),
            ],
            ..Observation::default()
        };
        let later = Observation {
            protected: vec![(Protected::Dns, vec![ip("10.1.0.53")])],
            ..Observation::default()
        };
        let feed =
            ReplayFeed::new(recording(vec![poll(1.0, first), poll(2.0, later)]), "x.rec").unwrap();
        let mut cfg = SimConfig {
            ipv6_gateway: Some("2001:db8::99".parse().unwrap()),
            ..SimConfig::default()
        };
        let notes = feed.apply_context(&mut cfg);
        assert_eq!(cfg.router_addresses.len(), 1);
        assert_eq!(cfg.router_addresses[0].address, ip("10.1.0.1"));
        assert_eq!(cfg.router_addresses[0].prefix, 16);
        assert_eq!(cfg.ipv4_gateway, Some("10.1.0.254".parse().unwrap()));
        assert_eq!(cfg.ipv6_gateway, Some("2001:db8::99".parse().unwrap()));
        // The first poll that read a set gives it.
        assert_eq!(cfg.dns_servers, Some(vec![ip("10.1.0.53")]));
        assert_eq!(cfg.session_address, Some(ip("10.1.0.9")));
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("several default gateways"), "{notes:?}");
    }
}
