//! Stateful scoring across polls, beyond the seed script: confirmation over several polls and
//! several connections ([`Tracker`]), escalating timeouts for repeat offenders
//! ([`Escalation`]), a sliding-window cap on blocks ([`RateCap`]) and the panic brake
//! ([`panic_brake`]). Every default keeps the script's behaviour: block on the first glimpse,
//! fixed timeout, no rate cap.
//!
//! Time: every function takes `now: Duration`, the time since a fixed epoch the caller picks
//! and keeps. The daemon uses the UNIX epoch, because block times are persisted and read back
//! as `previous_blocks`; tests use small fake values. Time going backwards is tolerated
//! (nothing panics; windows just see fewer or more entries).
//!
//! It deliberately reads no clock, persists nothing (the daemon stores block history and
//! passes it back in) and does not decide safety (that is [`policy`](crate::policy), which
//! runs after the tracker).

use std::collections::{HashSet, VecDeque};

use foldhash::{HashMap, HashMapExt};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::detect::Finding;
use crate::error::ParseError;
use crate::model::{Connection, Endpoint, Family, Protocol};

/// What identifies a connection across polls (its `.id` may be reused by the router).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// The table.
    pub family: Family,
    /// The protocol.
    pub protocol: Protocol,
    /// The originating side.
    pub src: Endpoint,
    /// The destination side.
    pub dst: Endpoint,
}

impl ConnKey {
    /// The key of a connection.
    pub fn of(conn: &Connection) -> Self {
        Self {
            family: conn.family,
            protocol: conn.protocol,
            src: conn.src,
            dst: conn.dst,
        }
    }
}

impl fmt::Display for ConnKey {
    /// `ipv4 tcp 192.168.88.50:54321 203.0.113.45:443`: the persisted form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.family,
            self.protocol.number(),
            self.src,
            self.dst
        )
    }
}

impl FromStr for ConnKey {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseError::new("connection key", s, "expected `ipv4|ipv6 PROTO SRC DST`");
        let mut parts = s.split(' ');
        let family = match parts.next() {
            Some("ipv4") => Family::V4,
            Some("ipv6") => Family::V6,
            _ => return Err(bad()),
        };
        let protocol: Protocol = parts.next().ok_or_else(bad)?.parse()?;
        let src: Endpoint = parts.next().ok_or_else(bad)?.parse()?;
        let dst: Endpoint = parts.next().ok_or_else(bad)?.parse()?;
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Self {
            family,
            protocol,
            src,
            dst,
        })
    }
}

/// One remembered fact of a [`Tracker`], for persistence across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackerEntry {
    /// A connection flagged in `polls` consecutive polls, the last one at `at`.
    Streak {
        key: ConnKey,
        polls: u32,
        at: Duration,
    },
    /// A counted connection of `target`, last counted at `at`.
    Hit {
        target: IpAddr,
        key: ConnKey,
        at: Duration,
    },
}

/// Settings of the [`Tracker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackerSettings {
    /// K: polls in a row a connection must be flagged in before it counts (default 1).
    pub min_observations: u32,
    /// N: distinct counted connections pointing at one target, within `window`, before the
    /// target is acted on (default 1).
    pub min_flagged_connections: u32,
    /// How long a counted connection keeps counting toward its target's N.
    pub window: Duration,
    /// The most connections and the most targets remembered; beyond it the oldest are dropped.
    pub max_tracked: usize,
}

impl Default for TrackerSettings {
    fn default() -> Self {
        Self {
            min_observations: 1,
            min_flagged_connections: 1,
            window: Duration::from_secs(600),
            max_tracked: 100_000,
        }
    }
}

/// Counted connections of one target, newest last; at most N kept.
#[derive(Debug, Clone, Default)]
struct TargetHits {
    conns: Vec<(ConnKey, Duration)>,
    last: Duration,
}

/// Confirms findings over polls before they are acted on.
///
/// Each [`Tracker::observe`] call is one poll. A connection (by [`ConnKey`]) counts once it is
/// flagged in `min_observations` consecutive polls; a poll in which it is not flagged resets
/// it. A target is ready once `min_flagged_connections` distinct counted connections pointed
/// at it within `window`; from then on every counted finding for it is returned, so the
/// policy can remove further connections of an already-blocked target.
///
/// Memory is bounded: the streak map only ever holds the last poll's findings (capped at
/// `max_tracked`), and at most `max_tracked` targets with at most N connections each are kept.
/// A poll that failed should not be observed at all (an empty observation resets streaks).
#[derive(Debug, Clone)]
pub struct Tracker {
    settings: TrackerSettings,
    streaks: HashMap<ConnKey, u32>,
    targets: HashMap<IpAddr, TargetHits>,
}

impl Tracker {
    /// A tracker with `settings`; zero thresholds are read as 1.
    pub fn new(settings: TrackerSettings) -> Self {
        Self {
            settings,
            streaks: HashMap::new(),
            targets: HashMap::new(),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &TrackerSettings {
        &self.settings
    }

    /// New settings (a config reload) without forgetting what was learnt: streaks and counted
    /// connections stay and are judged by the new thresholds from the next poll on.
    pub fn set_settings(&mut self, settings: TrackerSettings) {
        self.settings = settings;
    }

    /// Connections currently on a streak, and targets currently remembered.
    pub fn tracked(&self) -> (usize, usize) {
        (self.streaks.len(), self.targets.len())
    }

    /// One poll: takes its findings, returns those ready to act on, in input order.
    pub fn observe(&mut self, findings: Vec<Finding>, now: Duration) -> Vec<Finding> {
        let k = self.settings.min_observations.max(1);
        let n = self.settings.min_flagged_connections.max(1) as usize;
        if k == 1 && n == 1 {
            // The script's behaviour: everything counts at once, nothing to remember.
            return findings;
        }
        let cap = self.settings.max_tracked.max(1);

        // Stage 1: consecutive polls per connection.
        let mut streaks: HashMap<ConnKey, u32> = HashMap::with_capacity(findings.len().min(cap));
        let mut counted: Vec<(ConnKey, Finding)> = Vec::new();
        let mut counted_direct: Vec<Finding> = Vec::new();
        for f in findings {
            let Some(conn) = f.connection() else {
                // Not a connection finding (scans, staged): nothing to confirm across polls.
                counted_direct.push(f);
                continue;
            };
            let key = ConnKey::of(conn);
            let streak = match streaks.get(&key) {
                // The same connection twice in one poll: one observation.
                Some(&s) => s,
                None => {
                    let s = self.streaks.get(&key).map_or(1, |s| s.saturating_add(1));
                    if streaks.len() < cap {
                        streaks.insert(key, s);
                    }
                    s
                }
            };
            if streak >= k {
                counted.push((key, f));
            }
        }
        self.streaks = streaks;
        if n == 1 {
            return counted
                .into_iter()
                .map(|(_, f)| f)
                .chain(counted_direct)
                .collect();
        }

        // Stage 2: distinct counted connections per target within the window.
        let since = now.saturating_sub(self.settings.window);
        for (key, f) in &counted {
            let hits = self.targets.entry(f.target).or_default();
            hits.last = hits.last.max(now);
            hits.conns.retain(|(_, t)| *t >= since);
            match hits.conns.iter_mut().find(|(k, _)| k == key) {
                Some(entry) => entry.1 = now,
                None => {
                    if hits.conns.len() >= n {
                        // Keep the N most recent: N is all that is ever needed.
                        if let Some(oldest) = hits
                            .conns
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, (_, t))| *t)
                            .map(|(i, _)| i)
                        {
                            hits.conns.swap_remove(oldest);
                        }
                    }
                    hits.conns.push((*key, now));
                }
            }
        }
        self.targets.retain(|_, h| {
            h.conns.retain(|(_, t)| *t >= since);
            !h.conns.is_empty()
        });
        let ready: HashSet<IpAddr> = self
            .targets
            .iter()
            .filter(|(_, h)| h.conns.len() >= n)
            .map(|(ip, _)| *ip)
            .collect();
        if self.targets.len() > cap {
            self.evict_oldest_targets(cap);
        }
        counted
            .into_iter()
            .filter(|(_, f)| ready.contains(&f.target))
            .map(|(_, f)| f)
            .chain(counted_direct)
            .collect()
    }

    /// Everything the tracker remembers, for the caller to persist. Empty with the default
    /// settings (K = N = 1 remember nothing).
    pub fn export(&self, now: Duration) -> Vec<TrackerEntry> {
        let mut out: Vec<TrackerEntry> = self
            .streaks
            .iter()
            .map(|(key, &polls)| TrackerEntry::Streak {
                key: *key,
                polls,
                at: now,
            })
            .collect();
        for (target, hits) in &self.targets {
            out.extend(hits.conns.iter().map(|(key, at)| TrackerEntry::Hit {
                target: *target,
                key: *key,
                at: *at,
            }));
        }
        out
    }

    /// Restores what [`Tracker::export`] gave, e.g. after a restart. Streaks older than
    /// `max_gap` are dropped (the polls in between were missed, so the streak is broken);
    /// hits outside the window expire as usual. The memory bounds hold.
    pub fn import(
        &mut self,
        entries: impl IntoIterator<Item = TrackerEntry>,
        now: Duration,
        max_gap: Duration,
    ) {
        let cap = self.settings.max_tracked.max(1);
        let n = self.settings.min_flagged_connections.max(1) as usize;
        let since = now.saturating_sub(self.settings.window);
        for e in entries {
            match e {
                TrackerEntry::Streak { key, polls, at } => {
                    if now.saturating_sub(at) <= max_gap && self.streaks.len() < cap {
                        self.streaks.insert(key, polls);
                    }
                }
                TrackerEntry::Hit { target, key, at } => {
                    if at < since
                        || (self.targets.len() >= cap && !self.targets.contains_key(&target))
                    {
                        continue;
                    }
                    let hits = self.targets.entry(target).or_default();
                    if hits.conns.len() < n && !hits.conns.iter().any(|(k, _)| *k == key) {
                        hits.conns.push((key, at));
                        hits.last = hits.last.max(at);
                    }
                }
            }
        }
    }

    /// Drops the least recently seen targets down to three quarters of `cap`, so eviction is
    /// amortized rather than paid on every insertion.
    fn evict_oldest_targets(&mut self, cap: usize) {
        let keep = (cap / 4 * 3).max(1);
        let mut ages: Vec<(Duration, IpAddr)> =
            self.targets.iter().map(|(ip, h)| (h.last, *ip)).collect();
        ages.sort_unstable_by(|a, b| b.cmp(a));
        for (_, ip) in ages.into_iter().skip(keep) {
            self.targets.remove(&ip);
        }
    }
}

/// Longer timeouts for addresses blocked before.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Escalation {
    /// Each earlier block (within `forget_after`) multiplies the timeout by this; 1 = off.
    pub factor: f64,
    /// The longest escalated timeout (the base timeout itself is never shortened).
    pub max_timeout: Duration,
    /// Earlier blocks older than this are forgotten.
    pub forget_after: Duration,
}

impl Default for Escalation {
    fn default() -> Self {
        Self {
            factor: 1.0,
            max_timeout: Duration::from_secs(28 * 86_400),
            forget_after: Duration::from_secs(30 * 86_400),
        }
    }
}

impl Escalation {
    /// The timeout for a new block of an address whose earlier blocks happened at
    /// `previous_blocks`, and its level: the number of earlier blocks within `forget_after`
    /// of `now` (times in the future count as recent).
    ///
    /// `base * factor^level`, capped at `max(max_timeout, base)`. A factor below 1, NaN or
    /// infinite is read as 1 (no escalation).
    pub fn timeout_for(
        &self,
        base: Duration,
        previous_blocks: &[Duration],
        now: Duration,
    ) -> (Duration, u32) {
        let level = previous_blocks
            .iter()
            .filter(|&&t| now.saturating_sub(t) <= self.forget_after)
            .count();
        let level = u32::try_from(level).unwrap_or(u32::MAX);
        let factor = if self.factor.is_finite() && self.factor >= 1.0 {
            self.factor
        } else {
            1.0
        };
        let cap = self.max_timeout.max(base);
        if level == 0 || factor == 1.0 {
            return (base, level);
        }
        let exp = i32::try_from(level).unwrap_or(i32::MAX);
        let secs = base.as_secs_f64() * factor.powi(exp);
        let timeout = if secs.is_finite() && secs < cap.as_secs_f64() {
            Duration::from_secs_f64(secs)
        } else {
            cap
        };
        // Whole seconds: RouterOS timeouts read best that way.
        let timeout = Duration::from_secs(timeout.as_secs()).clamp(base.min(cap), cap);
        (timeout, level)
    }
}

/// A sliding one-hour cap on blocks: a block taken at `t` counts until `t + 1h`.
#[derive(Debug, Clone, Default)]
pub struct RateCap {
    max_blocks_per_hour: Option<u32>,
    taken: VecDeque<Duration>,
}

const HOUR: Duration = Duration::from_secs(3600);

impl RateCap {
    /// At most `max_blocks_per_hour` blocks in any hour; `None` = no cap (the default).
    pub fn new(max_blocks_per_hour: Option<u32>) -> Self {
        Self {
            max_blocks_per_hour,
            taken: VecDeque::new(),
        }
    }

    /// Changes the limit, keeping the blocks already counted (a config reload must not reset
    /// the window).
    pub fn set_limit(&mut self, max_blocks_per_hour: Option<u32>) {
        self.max_blocks_per_hour = max_blocks_per_hour;
    }

    /// The cap.
    pub fn max_blocks_per_hour(&self) -> Option<u32> {
        self.max_blocks_per_hour
    }

    fn expire(&mut self, now: Duration) {
        let since = now.saturating_sub(HOUR);
        while self
            .taken
            .front()
            .is_some_and(|&t| t <= since && now >= HOUR)
        {
            self.taken.pop_front();
        }
    }

    /// Takes one block from the budget: `false` when the last hour already used it up.
    pub fn try_take(&mut self, now: Duration) -> bool {
        let Some(max) = self.max_blocks_per_hour else {
            return true;
        };
        self.expire(now);
        if self.taken.len() >= max as usize {
            return false;
        }
        self.taken.push_back(now);
        true
    }

    /// Blocks still allowed in the current hour (`None` without a cap).
    pub fn remaining(&mut self, now: Duration) -> Option<u32> {
        let max = self.max_blocks_per_hour?;
        self.expire(now);
        Some(max.saturating_sub(u32::try_from(self.taken.len()).unwrap_or(u32::MAX)))
    }
}

/// The fewest scanned rows for which [`panic_brake`] can fire: on a nearly empty table a few
/// flagged rows are a high ratio without meaning anything.
pub const PANIC_MIN_SCANNED: u64 = 20;

/// True when this cycle must block nothing: at least [`PANIC_MIN_SCANNED`] rows were scanned
/// and more than `panic_ratio` of them were flagged (a broken uplink makes every connection
/// look asymmetric). `scanned` must count the whole table, not only the rows a server-side
/// filter let through. A ratio of 1 or more, or NaN, never fires.
pub fn panic_brake(scanned: u64, flagged: u64, panic_ratio: f64) -> bool {
    scanned >= PANIC_MIN_SCANNED && (flagged as f64 / scanned as f64) > panic_ratio
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ConnId;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn f(src_port: u16, dst: &str) -> Finding {
        let dst: IpAddr = dst.parse().unwrap();
        Finding::asymmetric(
            Connection {
                id: ConnId::new(format!("*{src_port:X}")),
                family: Family::V4,
                protocol: Protocol::Tcp,
                src: Endpoint {
                    addr: "10.0.0.2".parse().unwrap(),
                    port: Some(src_port),
                },
                dst: Endpoint {
                    addr: dst,
                    port: Some(443),
                },
                orig_packets: Some(9),
                repl_packets: Some(0),
                orig_bytes: None,
                repl_bytes: None,
                orig_fasttrack_packets: None,
                repl_fasttrack_packets: None,
                tcp_state: None,
            },
            dst,
        )
    }

    fn ids(v: &[Finding]) -> Vec<&str> {
        v.iter()
            .map(|f| f.connection().unwrap().id.as_str())
            .collect()
    }

    #[test]
    fn default_tracker_passes_everything_through() {
        let mut t = Tracker::new(TrackerSettings::default());
        let out = t.observe(vec![f(1, "1.1.1.1"), f(2, "1.1.1.2")], secs(0));
        assert_eq!(out.len(), 2);
        assert_eq!(t.tracked(), (0, 0));
    }

    #[test]
    fn exported_state_survives_a_restart() {
        // Streaks: K = 3; two polls before the restart, the third after it counts.
        let k3 = TrackerSettings {
            min_observations: 3,
            ..TrackerSettings::default()
        };
        let mut t = Tracker::new(k3);
        assert!(t.observe(vec![f(1, "1.1.1.1")], secs(0)).is_empty());
        assert!(t.observe(vec![f(1, "1.1.1.1")], secs(2)).is_empty());
        let saved = t.export(secs(2));
        for e in &saved {
            if let TrackerEntry::Streak { key, .. } = e {
                assert_eq!(
                    key.to_string().parse::<ConnKey>().unwrap(),
                    *key,
                    "the persisted form"
                );
            }
        }
        let mut restarted = Tracker::new(k3);
        restarted.import(saved.clone(), secs(3), secs(10));
        assert_eq!(restarted.observe(vec![f(1, "1.1.1.1")], secs(4)).len(), 1);
        let mut fresh = Tracker::new(k3);
        assert!(
            fresh.observe(vec![f(1, "1.1.1.1")], secs(4)).is_empty(),
            "a fresh tracker starts over"
        );
        let mut late = Tracker::new(k3);
        late.import(saved, secs(100), secs(10));
        assert_eq!(
            late.tracked(),
            (0, 0),
            "a streak older than the gap is broken"
        );

        // Hits: N = 2; one connection before the restart, the second after it completes N.
        let n2 = TrackerSettings {
            min_flagged_connections: 2,
            window: secs(60),
            ..TrackerSettings::default()
        };
        let mut t = Tracker::new(n2);
        assert!(t.observe(vec![f(1, "1.1.1.1")], secs(0)).is_empty());
        let saved = t.export(secs(0));
        let mut restarted = Tracker::new(n2);
        restarted.import(saved.clone(), secs(1), secs(10));
        assert_eq!(
            ids(&restarted.observe(vec![f(2, "1.1.1.1")], secs(1))),
            ["*2"]
        );
        let mut fresh = Tracker::new(n2);
        assert!(fresh.observe(vec![f(2, "1.1.1.1")], secs(1)).is_empty());
        let mut late = Tracker::new(n2);
        late.import(saved, secs(61), secs(10));
        assert!(
            late.observe(vec![f(2, "1.1.1.1")], secs(61)).is_empty(),
            "hits outside the window expire"
        );
    }

    #[test]
    fn conn_keys_round_trip_v4_and_v6() {
        let v6 = ConnKey {
            family: Family::V6,
            protocol: Protocol::Udp,
            src: "[2001:db8::1]:5353".parse().unwrap(),
            dst: "[2001:db8::2]:443".parse().unwrap(),
        };
        let icmp = ConnKey {
            family: Family::V4,
            protocol: Protocol::Icmp,
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
        };
        for k in [v6, icmp] {
            assert_eq!(k.to_string().parse::<ConnKey>().unwrap(), k, "{k}");
        }
        assert!("ipv5 6 1.2.3.4:1 1.2.3.4:2".parse::<ConnKey>().is_err());
        assert!("ipv4 6 1.2.3.4:1".parse::<ConnKey>().is_err());
    }

    #[test]
    fn k_consecutive_polls_and_reset() {
        let mut t = Tracker::new(TrackerSettings {
            min_observations: 3,
            ..TrackerSettings::default()
        });
        assert!(t.observe(vec![f(1, "1.1.1.1")], secs(0)).is_empty());
        assert!(t.observe(vec![f(1, "1.1.1.1")], secs(2)).is_empty());
        assert_eq!(ids(&t.observe(vec![f(1, "1.1.1.1")], secs(4))), ["*1"]);
        assert_eq!(ids(&t.observe(vec![f(1, "1.1.1.1")], secs(6))), ["*1"]);
        // A poll without it resets the streak.
        assert!(t.observe(vec![], secs(8)).is_empty());
        assert!(t.observe(vec![f(1, "1.1.1.1")], secs(10)).is_empty());
        assert!(t.observe(vec![f(1, "1.1.1.1")], secs(12)).is_empty());
        assert_eq!(ids(&t.observe(vec![f(1, "1.1.1.1")], secs(14))), ["*1"]);
        // The same row twice in a poll is one observation.
        let mut t = Tracker::new(TrackerSettings {
            min_observations: 2,
            ..TrackerSettings::default()
        });
        assert!(t
            .observe(vec![f(1, "1.1.1.1"), f(1, "1.1.1.1")], secs(0))
            .is_empty());
        assert_eq!(t.observe(vec![f(1, "1.1.1.1")], secs(1)).len(), 1);
    }

    #[test]
    fn n_distinct_connections_within_window() {
        let mut t = Tracker::new(TrackerSettings {
            min_flagged_connections: 3,
            window: secs(60),
            ..TrackerSettings::default()
        });
        assert!(t.observe(vec![f(1, "9.9.9.9")], secs(0)).is_empty());
        // The same connection again does not add a second one.
        assert!(t.observe(vec![f(1, "9.9.9.9")], secs(10)).is_empty());
        assert!(t.observe(vec![f(2, "9.9.9.9")], secs(20)).is_empty());
        // A different target does not count for 9.9.9.9.
        assert!(t.observe(vec![f(5, "8.8.8.8")], secs(25)).is_empty());
        assert_eq!(ids(&t.observe(vec![f(3, "9.9.9.9")], secs(30))), ["*3"]);
        // Later findings for a ready target keep coming out.
        assert_eq!(
            ids(&t.observe(vec![f(4, "9.9.9.9"), f(6, "8.8.8.8")], secs(40))),
            ["*4"]
        );
        // Outside the window the old ones stop counting.
        let mut t = Tracker::new(TrackerSettings {
            min_flagged_connections: 2,
            window: secs(60),
            ..TrackerSettings::default()
        });
        assert!(t.observe(vec![f(1, "9.9.9.9")], secs(0)).is_empty());
        assert!(t.observe(vec![f(2, "9.9.9.9")], secs(61)).is_empty());
        assert_eq!(t.tracked().1, 1);
        assert_eq!(t.observe(vec![f(3, "9.9.9.9")], secs(100)).len(), 1);
        // Everything forgotten after a quiet window.
        assert!(t.observe(vec![], secs(1000)).is_empty());
        assert_eq!(t.tracked(), (0, 0));
    }

    #[test]
    fn k_and_n_combine() {
        let mut t = Tracker::new(TrackerSettings {
            min_observations: 2,
            min_flagged_connections: 2,
            window: secs(60),
            ..TrackerSettings::default()
        });
        let both = || vec![f(1, "9.9.9.9"), f(2, "9.9.9.9")];
        assert!(t.observe(both(), secs(0)).is_empty(), "not yet K polls");
        assert_eq!(ids(&t.observe(both(), secs(2))), ["*1", "*2"]);
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_targets_go_first() {
        let cap = 100;
        let mut t = Tracker::new(TrackerSettings {
            min_observations: 2,
            min_flagged_connections: 2,
            window: secs(3600),
            max_tracked: cap,
        });
        // Poll p shows 50 new connections and, for the second time, the 50 of poll p-1: those
        // complete K = 2 and feed their targets (one connection each, so none is ready).
        let target = |p: u64, i: u16| format!("10.{p}.{i}.1");
        let port = |p: u64, i: u16| (p as u16) * 100 + i;
        let mut fed = 0;
        for p in 0..12u64 {
            let mut findings: Vec<Finding> =
                (0..50).map(|i| f(port(p, i), &target(p, i))).collect();
            if p > 0 {
                findings.extend((0..50).map(|i| f(port(p - 1, i), &target(p - 1, i))));
                fed += 50;
            }
            assert!(
                t.observe(findings, secs(p)).is_empty(),
                "N = 2 is never reached"
            );
            let (streaks, targets) = t.tracked();
            assert!(
                streaks <= cap && targets <= cap,
                "poll {p}: {streaks} {targets}"
            );
        }
        assert!(fed > cap, "more targets were fed ({fed}) than the cap");
        assert!(
            t.tracked().1 >= cap / 2,
            "the target stage holds the recent targets"
        );
        // A recent target is still remembered: a second connection makes it ready...
        let recent = target(10, 7);
        t.observe(vec![f(60_000, &recent)], secs(12));
        assert_eq!(
            ids(&t.observe(vec![f(60_000, &recent)], secs(13))),
            ["*EA60"]
        );
        // ... the oldest one was evicted: one more connection is not enough.
        let oldest = target(0, 7);
        t.observe(vec![f(60_001, &oldest)], secs(14));
        assert!(t.observe(vec![f(60_001, &oldest)], secs(15)).is_empty());
    }

    #[test]
    fn escalation_multiplies_and_caps() {
        let day = secs(86_400);
        let e = Escalation {
            factor: 2.0,
            max_timeout: secs(7 * 86_400),
            forget_after: secs(30 * 86_400),
        };
        let now = secs(100 * 86_400);
        assert_eq!(e.timeout_for(day, &[], now), (day, 0));
        assert_eq!(e.timeout_for(day, &[now - day], now), (secs(2 * 86_400), 1));
        assert_eq!(
            e.timeout_for(day, &[now - day, now - secs(3 * 86_400)], now),
            (secs(4 * 86_400), 2)
        );
        // Capped.
        let many = vec![now - day; 10];
        assert_eq!(e.timeout_for(day, &many, now), (secs(7 * 86_400), 10));
        let absurd = vec![now; 5000];
        assert_eq!(e.timeout_for(day, &absurd, now).0, secs(7 * 86_400));
        // Forgotten.
        assert_eq!(
            e.timeout_for(day, &[now - secs(31 * 86_400)], now),
            (day, 0)
        );
        // Off by default; a base above the cap is kept.
        let off = Escalation::default();
        assert_eq!(off.timeout_for(day, &[now - day], now), (day, 1));
        let big = secs(60 * 86_400);
        assert_eq!(e.timeout_for(big, &[now - day], now).0, big);
        // Nonsense factors mean "off".
        for bad in [f64::NAN, f64::INFINITY, 0.5, -2.0] {
            let e = Escalation { factor: bad, ..e };
            assert_eq!(e.timeout_for(day, &[now - day], now).0, day);
        }
        // A clock before the epoch of the history does not panic.
        assert_eq!(e.timeout_for(day, &[secs(5)], secs(1)).1, 1);
    }

    #[test]
    fn rate_cap_slides() {
        let mut r = RateCap::new(Some(2));
        assert!(r.try_take(secs(10_000)));
        assert!(r.try_take(secs(10_100)));
        assert!(!r.try_take(secs(10_200)));
        assert_eq!(r.remaining(secs(10_200)), Some(0));
        assert!(
            !r.try_take(secs(13_599)),
            "within the hour the first still counts"
        );
        assert!(r.try_take(secs(13_600)), "an hour later it no longer does");
        assert!(!r.try_take(secs(13_650)));
        assert!(r.try_take(secs(13_700)));
        let mut none = RateCap::new(None);
        assert!((0..10_000).all(|i| none.try_take(secs(i))));
        assert_eq!(none.remaining(secs(0)), None);
        let mut zero = RateCap::new(Some(0));
        assert!(!zero.try_take(secs(0)));
        // Early fake times (below one hour) and a clock going backwards do not panic.
        let mut r = RateCap::new(Some(1));
        assert!(r.try_take(secs(5)));
        assert!(!r.try_take(secs(1)));
    }

    #[test]
    fn panic_brake_needs_enough_rows() {
        assert!(!panic_brake(19, 19, 0.5), "too few rows to judge");
        assert!(panic_brake(20, 11, 0.5));
        assert!(!panic_brake(20, 10, 0.5), "exactly the ratio does not fire");
        assert!(!panic_brake(1000, 1000, 1.0));
        assert!(!panic_brake(1000, 1000, f64::NAN));
        assert!(!panic_brake(0, 0, 0.0));
        assert!(panic_brake(100, 1, 0.0));
    }
}
