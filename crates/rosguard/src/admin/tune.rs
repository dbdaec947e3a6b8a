//! `rosguard tune`: replays one recording under a grid of detection settings and says, per
//! setting, what it would have blocked, what the allowlist would have caught, and (with a
//! labels file) how precise and complete it was; marks the settings no other beats and
//! suggests one.
//!
//! Every setting is a [`Replayer`] (the daemon's own cycle and `decide()`), all fed from one
//! streaming read of the file, split over the machine's cores. A setting looser than the
//! recording's pre-filter is not replayed: it is listed as not answered.
//!
//! It deliberately changes nothing and writes no config: the suggestion is printed, as TOML,
//! for the operator to review.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use rosguard_core::settings::Settings;
use routeros_proto::format_duration;
use serde::Serialize;

use crate::config::Config;
use crate::outln;
use crate::recording::{Poll, Reader};

use super::chart::{Dot, Plot};
use super::replay::{settings_for, Replayer};

/// The values `tune` tries for each detection setting (every combination is one setting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grid {
    /// `detection.min_orig_packets`.
    pub min_orig_packets: Vec<u64>,
    /// `detection.max_repl_packets`.
    pub max_repl_packets: Vec<u64>,
    /// `detection.min_observations`.
    pub min_observations: Vec<u32>,
    /// `detection.min_flagged_connections`.
    pub min_flagged_connections: Vec<u32>,
    /// `detection.window` (only varied where `min_flagged_connections` > 1: it is the window
    /// of that count and changes nothing at 1).
    pub window: Vec<Duration>,
}

impl Default for Grid {
    fn default() -> Self {
        Self {
            min_orig_packets: vec![2, 3, 5, 8],
            max_repl_packets: vec![0, 1, 2, 4],
            min_observations: vec![1, 2, 3],
            min_flagged_connections: vec![1, 2, 3],
            window: vec![Duration::from_secs(60), Duration::from_secs(300)],
        }
    }
}

/// One setting of the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Point {
    pub min_orig_packets: u64,
    pub max_repl_packets: u64,
    pub min_observations: u32,
    pub min_flagged_connections: u32,
    /// Seconds.
    pub window: u64,
}

impl Point {
    /// The point `s` is at.
    pub fn of(s: &Settings) -> Self {
        let d = &s.detection;
        Self {
            min_orig_packets: d.min_orig_packets,
            max_repl_packets: d.max_repl_packets,
            min_observations: d.min_observations,
            min_flagged_connections: d.min_flagged_connections,
            window: d.window.as_secs(),
        }
    }

    /// `base` moved to this point.
    pub fn apply(&self, base: &Settings) -> Settings {
        let mut s = base.clone();
        let d = &mut s.detection;
        d.min_orig_packets = self.min_orig_packets;
        d.max_repl_packets = self.max_repl_packets;
        d.min_observations = self.min_observations;
        d.min_flagged_connections = self.min_flagged_connections;
        d.window = Duration::from_secs(self.window);
        s
    }

    /// The point as the config's `[detection]` keys.
    pub fn toml(&self) -> String {
        format!(
            "min_orig_packets = {}\nmax_repl_packets = {}\nmin_observations = {}\nmin_flagged_connections = {}\nwindow = \"{}\"",
            self.min_orig_packets,
            self.max_repl_packets,
            self.min_observations,
            self.min_flagged_connections,
            format_duration(Duration::from_secs(self.window))
        )
    }

    /// How this point compares with `other` in strictness (`Greater`: it flags less). Ties
    /// of a suggestion go to the strictest.
    fn strictness(&self, other: &Self) -> Ordering {
        self.min_observations
            .cmp(&other.min_observations)
            .then(
                self.min_flagged_connections
                    .cmp(&other.min_flagged_connections),
            )
            .then(self.min_orig_packets.cmp(&other.min_orig_packets))
            .then(other.max_repl_packets.cmp(&self.max_repl_packets))
            // A shorter window is harder to fill with `min_flagged_connections`.
            .then(other.window.cmp(&self.window))
    }
}

/// The most settings one sweep replays: each holds a replay's state (a store, the trackers).
pub const MAX_SETTINGS: usize = 5000;

impl Grid {
    /// How many settings the grid holds at most (the current one and repeats not counted).
    pub fn size(&self) -> usize {
        let flagged_one = self
            .min_flagged_connections
            .iter()
            .filter(|&&f| f <= 1)
            .count();
        let flagged_more = self.min_flagged_connections.len() - flagged_one;
        [
            self.min_orig_packets.len(),
            self.max_repl_packets.len(),
            self.min_observations.len(),
            flagged_one.saturating_add(flagged_more.saturating_mul(self.window.len())),
        ]
        .into_iter()
        .fold(1usize, usize::saturating_mul)
    }

    /// Every point of the grid, plus `current` (so the config in use is always compared).
    pub fn points(&self, current: Point) -> Vec<Point> {
        let mut out = BTreeSet::new();
        for &o in &self.min_orig_packets {
            for &r in &self.max_repl_packets {
                for &obs in &self.min_observations {
                    for &f in &self.min_flagged_connections {
                        let windows: Vec<u64> = if f > 1 {
                            self.window.iter().map(Duration::as_secs).collect()
                        } else {
                            vec![current.window]
                        };
                        for w in windows {
                            out.insert(Point {
                                min_orig_packets: o,
                                max_repl_packets: r,
                                min_observations: obs,
                                min_flagged_connections: f,
                                window: w,
                            });
                        }
                    }
                }
            }
        }
        out.insert(current);
        out.into_iter().collect()
    }
}

/// Addresses marked good (never to be blocked) or bad (to be blocked).
#[derive(Debug, Clone, Default)]
pub struct Labels {
    good: Vec<IpNet>,
    bad: Vec<IpNet>,
    /// Flows, resolved to their remote end once the router's networks are known.
    flows: Vec<(bool, IpAddr, IpAddr)>,
}

impl Labels {
    /// Reads a labels file: either lines of `good|bad ADDRESS[/PREFIX]` or
    /// `good|bad SRC[:PORT] -> DST[:PORT]` (a flow: it labels its remote end, the address
    /// `block_target = "remote"` would block), `#` comments; or the lab's `labels.json`
    /// (`classes[].block` bad, `classes[].spare` and `always_spared` good).
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the labels file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("labels file {}", path.display()))
    }

    /// [`Labels::read`] on text.
    pub fn parse(text: &str) -> Result<Self> {
        if text.trim_start().starts_with('{') {
            return Self::lab_json(text);
        }
        let mut l = Self::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (mark, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let good = match mark {
                "good" => true,
                "bad" => false,
                other => bail!(
                    "line {}: {other:?} is not a label; start the line with good or bad",
                    n + 1
                ),
            };
            let rest = rest.trim();
            if let Some((src, dst)) = rest.split_once("->") {
                let end = |s: &str| -> Result<IpAddr> {
                    endpoint(s.trim()).with_context(|| {
                        format!(
                            "line {}: {:?} is not an address or ADDRESS:PORT",
                            n + 1,
                            s.trim()
                        )
                    })
                };
                l.flows.push((good, end(src)?, end(dst)?));
            } else {
                let net = net(rest).with_context(|| {
                    format!(
                        "line {}: {rest:?} is not an address, a network or a flow (SRC -> DST)",
                        n + 1
                    )
                })?;
                if good {
                    l.good.push(net);
                } else {
                    l.bad.push(net);
                }
            }
        }
        if l.good.is_empty() && l.bad.is_empty() && l.flows.is_empty() {
            bail!(
                "it labels nothing; write lines like `bad 203.0.113.7` or `good 192.168.88.0/24`"
            );
        }
        Ok(l)
    }

    fn lab_json(text: &str) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(text).context("not valid JSON")?;
        let mut l = Self::default();
        let mut add = |v: &serde_json::Value, good: bool| -> Result<()> {
            for a in v.as_array().into_iter().flatten() {
                let s = a.as_str().context("an address that is not a string")?;
                let n = net(s).with_context(|| format!("{s:?} is not an address"))?;
                if good {
                    l.good.push(n);
                } else {
                    l.bad.push(n);
                }
            }
            Ok(())
        };
        add(&v["always_spared"], true)?;
        for c in v["classes"].as_array().into_iter().flatten() {
            add(&c["block"], false)?;
            add(&c["spare"], true)?;
        }
        if l.good.is_empty() && l.bad.is_empty() {
            bail!("a JSON labels file needs `classes` with `block` and `spare` lists (the lab's labels.json)");
        }
        Ok(l)
    }

    /// Resolves flow labels to their remote ends, given the router's networks.
    fn resolve(&mut self, router: &[IpNet]) {
        let inside = |a: &IpAddr| router.iter().any(|n| n.contains(a));
        for (good, src, dst) in self.flows.drain(..) {
            // As `block_target = "remote"`: the source of a flow from outside to inside, else
            // the destination.
            let remote = if inside(&dst) && !inside(&src) {
                src
            } else {
                dst
            };
            if good {
                self.good.push(IpNet::from(remote));
            } else {
                self.bad.push(IpNet::from(remote));
            }
        }
        // An address labelled twice counts once (in recall's denominator too).
        for l in [&mut self.good, &mut self.bad] {
            l.sort_unstable();
            l.dedup();
        }
    }

    /// `Some(true)` good, `Some(false)` bad (bad wins where both match: a labelled offender
    /// inside a good network), `None` unlabelled.
    pub fn label(&self, a: IpAddr) -> Option<bool> {
        if self.bad.iter().any(|n| n.contains(&a)) {
            Some(false)
        } else if self.good.iter().any(|n| n.contains(&a)) {
            Some(true)
        } else {
            None
        }
    }
}

fn net(s: &str) -> Result<IpNet> {
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n);
    }
    Ok(IpNet::from(s.parse::<IpAddr>()?))
}

fn endpoint(s: &str) -> Result<IpAddr> {
    if let Ok(a) = s.parse::<IpAddr>() {
        return Ok(a);
    }
    Ok(s.parse::<std::net::SocketAddr>()?.ip())
}

/// What one setting did.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub setting: Point,
    /// Replayed (false: looser than the recording kept, see `not_answered`).
    pub answered: bool,
    pub not_answered: Vec<String>,
    /// Distinct addresses blocked.
    pub blocked: usize,
    /// Blocks made (an address blocked again after its block ran out counts again).
    pub blocks: usize,
    /// The blocks' timeouts added up, in hours.
    pub block_hours: f64,
    /// Distinct flagged addresses the allowlist kept from being blocked.
    pub allowlist_caught: usize,
    /// Flagged addresses the other safety rules kept (local, LAN, gateway, DNS, own).
    pub spared: usize,
    /// Cycles in which a cap or brake held something back.
    pub caps_hit: u64,
    /// With labels: blocked bad, blocked good, bad not blocked, blocked unlabelled.
    pub true_positives: Option<usize>,
    pub false_positives: Option<usize>,
    pub missed: Option<usize>,
    pub unlabelled: Option<usize>,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    /// No other setting is at least as good on both of the chart's measures and better on one.
    pub frontier: bool,
    /// The config in use.
    pub current: bool,
    /// The addresses it blocked.
    #[serde(skip)]
    pub addresses: BTreeSet<IpAddr>,
}

impl Row {
    /// A row of `setting` with nothing counted yet.
    fn new(setting: Point, current: bool) -> Self {
        Self {
            setting,
            answered: true,
            not_answered: Vec::new(),
            blocked: 0,
            blocks: 0,
            block_hours: 0.0,
            allowlist_caught: 0,
            spared: 0,
            caps_hit: 0,
            true_positives: None,
            false_positives: None,
            missed: None,
            unlabelled: None,
            precision: None,
            recall: None,
            frontier: false,
            current,
            addresses: BTreeSet::new(),
        }
    }

    /// What it caught and what it caught wrongly, the frontier's and the chart's measures.
    /// With labels: true and false positives; without: addresses blocked and the flagged
    /// addresses the allowlist kept.
    fn measures(&self) -> (f64, f64) {
        match (self.true_positives, self.false_positives) {
            (Some(tp), Some(fp)) => (tp as f64, fp as f64),
            _ => (self.blocked as f64, self.allowlist_caught as f64),
        }
    }
}

/// The sweep's result.
#[derive(Debug, Clone, Serialize)]
pub struct Sweep {
    pub router: String,
    pub polls: usize,
    pub rows: u64,
    /// Seconds from the first poll to the last.
    pub span: u64,
    pub cut: Option<String>,
    pub labelled: bool,
    pub settings: Vec<Row>,
    /// The index in `settings` of the suggestion.
    pub suggested: Option<usize>,
    /// Why it is the suggestion.
    pub reason: String,
    /// What the suggestion blocks that the current setting does not.
    pub only_suggested: Vec<IpAddr>,
    /// What the current setting blocks that the suggestion does not.
    pub only_current: Vec<IpAddr>,
}

/// Replays the recording `reader` under every point, on `threads` threads.
pub fn sweep<R: std::io::Read>(
    mut reader: Reader<R>,
    router: &str,
    base: &Settings,
    points: &[Point],
    mut labels: Option<Labels>,
    threads: usize,
) -> Result<Sweep> {
    let current = Point::of(base);
    let prefilter = reader.header.prefilter.clone();
    let mut rows: Vec<Row> = points
        .iter()
        .map(|p| {
            let not_answered = prefilter.blind_spots(&p.apply(base).detection);
            Row {
                answered: not_answered.is_empty(),
                not_answered,
                ..Row::new(*p, *p == current)
            }
        })
        .collect();
    let todo: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].answered).collect();
    let threads = threads.clamp(1, todo.len().max(1));
    let mut first_poll: Option<Arc<Poll>> = None;
    let (mut polls, mut nrows, mut last) = (0usize, 0u64, Duration::ZERO);
    let outcomes = std::thread::scope(
        |scope| -> Result<Vec<(usize, super::replay::ReplayOutcome)>> {
            let mut senders = Vec::new();
            let mut workers = Vec::new();
            for chunk in todo.chunks(todo.len().div_ceil(threads).max(1)) {
                let (tx, rx) = sync_channel::<Arc<Poll>>(8);
                senders.push(tx);
                let chunk = chunk.to_vec();
                let points: Vec<Point> = chunk.iter().map(|&i| rows[i].setting).collect();
                let router = router.to_owned();
                let prefilter = prefilter.clone();
                workers.push(scope.spawn(
                    move || -> Result<Vec<(usize, super::replay::ReplayOutcome)>> {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()?;
                        let mut reps: Vec<Replayer> = points
                            .iter()
                            .map(|p| Replayer::new(&router, &p.apply(base), &prefilter))
                            .collect();
                        rt.block_on(async {
                            for poll in rx {
                                for r in &mut reps {
                                    r.step(&poll).await?;
                                }
                            }
                            anyhow::Ok(())
                        })?;
                        Ok(chunk
                            .into_iter()
                            .zip(reps)
                            .map(|(i, r)| (i, r.finish(None)))
                            .collect())
                    },
                ));
            }
            for poll in reader.by_ref() {
                let poll = Arc::new(poll);
                if first_poll.is_none() {
                    first_poll = Some(poll.clone());
                }
                polls += 1;
                nrows += poll.observation.candidates.len() as u64;
                last = poll.time();
                for tx in &senders {
                    // A worker that failed has hung up: its error is reported at the join.
                    let _ = tx.send(poll.clone());
                }
            }
            drop(senders);
            let mut all = Vec::new();
            for w in workers {
                all.extend(
                    w.join()
                        .map_err(|_| anyhow::anyhow!("a replay thread panicked"))??,
                );
            }
            Ok(all)
        },
    )?;
    let cut = reader.cut().map(str::to_owned);
    if let (Some(l), Some(p)) = (labels.as_mut(), &first_poll) {
        l.resolve(&p.observation.addresses);
    }
    let span = first_poll
        .as_ref()
        .map_or(0, |p| last.saturating_sub(p.time()).as_secs());
    for (i, o) in outcomes {
        let r = &mut rows[i];
        let blocked = o.blocked();
        r.addresses.clone_from(&blocked);
        r.blocked = blocked.len();
        r.blocks = o.blocks.len();
        r.block_hours = o.blocks.iter().map(|b| b.timeout_secs as f64).sum::<f64>() / 3600.0;
        r.allowlist_caught = o.allowlisted.len();
        r.spared = o
            .spared
            .keys()
            .filter(|a| !o.allowlisted.contains(a))
            .count();
        r.caps_hit = o.caps_hit.values().sum();
        if let Some(l) = &labels {
            let (mut tp, mut fp, mut un) = (0, 0, 0);
            for a in &blocked {
                match l.label(*a) {
                    Some(false) => tp += 1,
                    Some(true) => fp += 1,
                    None => un += 1,
                }
            }
            // A bad network counts as found when a block lands in it.
            let missed = l
                .bad
                .iter()
                .filter(|n| !blocked.iter().any(|a| n.contains(a)))
                .count();
            let found = l.bad.len() - missed;
            r.true_positives = Some(tp);
            r.false_positives = Some(fp);
            r.unlabelled = Some(un);
            r.missed = Some(missed);
            r.precision = (tp + fp > 0).then(|| tp as f64 / (tp + fp) as f64);
            r.recall = (!l.bad.is_empty()).then(|| found as f64 / l.bad.len() as f64);
        }
    }
    mark_frontier(&mut rows);
    let (suggested, reason) = suggest(&rows, labels.is_some());
    let (mut only_suggested, mut only_current) = (Vec::new(), Vec::new());
    if let (Some(i), Some(c)) = (suggested, rows.iter().find(|r| r.current && r.answered)) {
        let s = &rows[i].addresses;
        only_suggested = s.difference(&c.addresses).copied().collect();
        only_current = c.addresses.difference(s).copied().collect();
    }
    Ok(Sweep {
        only_suggested,
        only_current,
        router: router.to_owned(),
        polls,
        rows: nrows,
        span,
        cut,
        labelled: labels.is_some(),
        settings: rows,
        suggested,
        reason,
    })
}

/// Marks the answered rows that no other answered row dominates on [`Row::measures`].
fn mark_frontier(rows: &mut [Row]) {
    let m: Vec<Option<(f64, f64)>> = rows
        .iter()
        .map(|r| r.answered.then(|| r.measures()))
        .collect();
    for i in 0..rows.len() {
        let Some((a, b)) = m[i] else { continue };
        // Dominated: another caught at least as much and no more wrongly, and beat it on one.
        rows[i].frontier = !m
            .iter()
            .flatten()
            .any(|&(x, y)| x >= a && y <= b && (x > a || y < b));
    }
}

/// The suggestion and why. With labels: the frontier setting with the best F1 score (the
/// harmonic mean of precision and recall), then the fewest block-hours; without: of the
/// frontier settings that flag the fewest allowlisted addresses, the one that blocks the most.
/// Ties go to the setting nearest the current one (the fewest grid steps away: the current
/// itself when it is among the best), then to the strictest.
fn suggest(rows: &[Row], labelled: bool) -> (Option<usize>, String) {
    let near = nearness(rows);
    let f = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.answered && r.frontier);
    if labelled {
        let f1 = |r: &Row| match (r.precision, r.recall) {
            (Some(p), Some(q)) if p + q > 0.0 => 2.0 * p * q / (p + q),
            _ => 0.0,
        };
        let best = f.max_by(|(_, a), (_, b)| {
            f1(a)
                .total_cmp(&f1(b))
                .then(b.block_hours.total_cmp(&a.block_hours))
                .then(near(b).cmp(&near(a)))
                .then(a.setting.strictness(&b.setting))
        });
        match best {
            Some((i, r)) => (
                Some(i),
                format!(
                    "the best balance of precision and recall on the labels (F1 {:.2})",
                    f1(r)
                ),
            ),
            None => (None, "no setting could be replayed".into()),
        }
    } else {
        let best = f.min_by(|(_, a), (_, b)| {
            a.allowlist_caught
                .cmp(&b.allowlist_caught)
                .then(b.blocked.cmp(&a.blocked))
                .then(near(a).cmp(&near(b)))
                .then(b.setting.strictness(&a.setting))
        });
        match best {
            Some((i, r)) => (
                Some(i),
                format!(
                    "of the settings that flag the fewest allowlisted addresses ({}), it blocks \
                     the most; without --labels the allowlist is the only known-good set, so \
                     review what it blocks",
                    r.allowlist_caught
                ),
            ),
            None => (None, "no setting could be replayed".into()),
        }
    }
}

/// How many grid steps each row's setting is from the current one (0 for the current; every
/// row when no row is current).
fn nearness(rows: &[Row]) -> impl Fn(&Row) -> usize {
    let axes = |p: &Point| {
        [
            p.min_orig_packets,
            p.max_repl_packets,
            u64::from(p.min_observations),
            u64::from(p.min_flagged_connections),
            p.window,
        ]
    };
    let mut values: [Vec<u64>; 5] = Default::default();
    for r in rows {
        for (k, v) in axes(&r.setting).into_iter().enumerate() {
            values[k].push(v);
        }
    }
    for v in &mut values {
        v.sort_unstable();
        v.dedup();
    }
    let current = rows.iter().find(|r| r.current).map(|r| axes(&r.setting));
    move |r: &Row| {
        let Some(c) = current else { return 0 };
        let a = axes(&r.setting);
        (0..5)
            .map(|k| {
                let pos = |x: u64| values[k].binary_search(&x).unwrap_or(0);
                pos(a[k]).abs_diff(pos(c[k]))
            })
            .sum()
    }
}

/// `rosguard tune`.
#[allow(clippy::too_many_arguments)]
pub fn tune(
    file: &Path,
    cfg: Option<&Config>,
    only: Option<&str>,
    grid: &Grid,
    labels: Option<&Path>,
    chart: Option<&Path>,
    all: bool,
    json: bool,
) -> Result<ExitCode> {
    let reader = Reader::open(file)?;
    let (router, base) = settings_for(cfg, only, &reader.header.router)?;
    let labels = labels.map(Labels::read).transpose()?;
    if grid.size() > MAX_SETTINGS {
        bail!(
            "the grid holds {} settings, more than the {MAX_SETTINGS} one sweep replays; give fewer values to --min-orig-packets, --max-repl-packets, --min-observations, --min-flagged-connections or --window",
            grid.size()
        );
    }
    let points = grid.points(Point::of(&base));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let s = sweep(reader, &router, &base, &points, labels, threads)?;
    if s.polls == 0 {
        bail!(
            "{} holds no complete poll{}: record for longer (rosguard record --duration)",
            file.display(),
            s.cut
                .as_deref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default()
        );
    }
    if let Some(path) = chart {
        let png = super::chart::render(&plot(&s));
        std::fs::write(path, png)
            .with_context(|| format!("cannot write the chart to {}", path.display()))?;
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print_sweep(&s, all);
        if let Some(path) = chart {
            outln!("chart: {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The rows to print and, for each, how many more frontier rows had the same outcome: every
/// row with `all`; else the suggested, the current and one row per other frontier outcome.
fn shown(s: &Sweep, all: bool) -> Vec<(usize, usize)> {
    if all {
        return (0..s.settings.len()).map(|i| (i, 0)).collect();
    }
    let key = |r: &Row| {
        (
            r.blocked,
            r.blocks,
            r.block_hours.to_bits(),
            r.allowlist_caught,
            r.true_positives,
            r.false_positives,
            r.missed,
        )
    };
    let mut reps: Vec<(usize, usize)> = Vec::new();
    let pinned = |i: usize| s.suggested == Some(i) || s.settings[i].current;
    for i in 0..s.settings.len() {
        if pinned(i) {
            reps.push((i, 0));
        }
    }
    for (i, r) in s.settings.iter().enumerate() {
        if !r.answered || !r.frontier || pinned(i) {
            continue;
        }
        match reps
            .iter_mut()
            .find(|(j, _)| key(&s.settings[*j]) == key(r))
        {
            Some((_, n)) => *n += 1,
            None => reps.push((i, 0)),
        }
    }
    reps.sort_unstable();
    reps
}

/// The sweep as the chart draws it: with labels bad blocked against good blocked, without
/// them blocked against flagged allowlisted addresses.
fn plot(s: &Sweep) -> Plot {
    let dots = s
        .settings
        .iter()
        .enumerate()
        .filter(|(_, r)| r.answered)
        .map(|(i, r)| {
            let (y, x) = r.measures();
            Dot {
                x,
                y,
                frontier: r.frontier,
                current: r.current,
                suggested: s.suggested == Some(i),
            }
        })
        .collect::<Vec<_>>();
    Plot {
        not_answered: s.settings.len() - dots.len(),
        dots,
        labelled: s.labelled,
        polls: s.polls,
    }
}

fn print_sweep(s: &Sweep, all: bool) {
    let answered = s.settings.iter().filter(|r| r.answered).count();
    outln!(
        "tune of router {}: {} polls over {}, {} recorded rows; {} settings replayed{}",
        crate::output::printable(&s.router),
        s.polls,
        format_duration(Duration::from_secs(s.span)),
        s.rows,
        answered,
        match s.settings.len() - answered {
            0 => String::new(),
            n => format!(", {n} NOT ANSWERED (looser than the recording's pre-filter)"),
        }
    );
    if let Some(cut) = &s.cut {
        outln!(
            "  the recording was cut short: {}",
            crate::output::printable(cut)
        );
    }
    let labels = if s.labelled {
        "  tp  fp  missed  precision  recall"
    } else {
        ""
    };
    outln!("  orig>  repl<=  obs  flagged  window  blocked  block-h  allowlist{labels}");
    let rows = shown(s, all);
    for &(i, same) in &rows {
        let r = &s.settings[i];
        let p = &r.setting;
        let mut line = format!(
            "  {:>5}  {:>6}  {:>3}  {:>7}  {:>6}",
            p.min_orig_packets,
            p.max_repl_packets,
            p.min_observations,
            p.min_flagged_connections,
            format_duration(Duration::from_secs(p.window))
        );
        if !r.answered {
            line.push_str("  NOT ANSWERED: ");
            line.push_str(&crate::output::printable(&r.not_answered.join("; ")));
        } else {
            line.push_str(&format!(
                "  {:>7}  {:>7.1}  {:>9}",
                r.blocked, r.block_hours, r.allowlist_caught
            ));
            if s.labelled {
                let pct =
                    |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.0}%", v * 100.0));
                line.push_str(&format!(
                    "  {:>2}  {:>2}  {:>6}  {:>9}  {:>6}",
                    r.true_positives.unwrap_or(0),
                    r.false_positives.unwrap_or(0),
                    r.missed.unwrap_or(0),
                    pct(r.precision),
                    pct(r.recall)
                ));
            }
        }
        let mut marks = Vec::new();
        if r.frontier {
            marks.push("frontier");
        }
        if r.current {
            marks.push("current");
        }
        if s.suggested == Some(i) {
            marks.push("SUGGESTED");
        }
        if !marks.is_empty() {
            line.push_str(&format!("  [{}]", marks.join(", ")));
        }
        if same > 0 {
            line.push_str(&format!(" +{same} more alike"));
        }
        outln!("{line}");
    }
    if !all {
        outln!(
            "  (shown: the suggested, the current, and one frontier setting per outcome, \
             +N counting the others alike; --all shows all {})",
            s.settings.len()
        );
    }
    match s.suggested {
        Some(i) => {
            let r = &s.settings[i];
            outln!("suggested: {}", s.reason);
            if r.current {
                outln!("  it is the current setting: no change");
            } else {
                outln!("  [detection]");
                for l in r.setting.toml().lines() {
                    outln!("  {l}");
                }
                let list = |v: &[IpAddr]| {
                    v.iter()
                        .map(IpAddr::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                if !s.only_suggested.is_empty() {
                    outln!(
                        "  it also blocks what the current setting does not: {}",
                        list(&s.only_suggested)
                    );
                }
                if !s.only_current.is_empty() {
                    outln!(
                        "  it no longer blocks what the current setting does: {}",
                        list(&s.only_current)
                    );
                }
                if !s.labelled && !s.only_suggested.is_empty() {
                    outln!(
                        "  check those before you adopt it: label them (--labels) or see why with rosguard replay"
                    );
                }
            }
        }
        None => outln!("no suggestion: {}", s.reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_varies_the_window_only_where_it_counts_and_holds_the_current_setting() {
        let g = Grid {
            min_orig_packets: vec![3],
            max_repl_packets: vec![2],
            min_observations: vec![1],
            min_flagged_connections: vec![1, 2],
            window: vec![Duration::from_secs(30), Duration::from_secs(90)],
        };
        let current = Point::of(&Settings::default());
        let pts = g.points(current);
        // flagged 1 at the current window (it is the current point), flagged 2 at 30 s and 90 s.
        assert_eq!(pts.len(), 3, "{pts:?}");
        assert!(pts.contains(&current));
        assert!(pts
            .iter()
            .any(|p| p.min_flagged_connections == 2 && p.window == 30));
        let mut other = current;
        other.min_orig_packets = 99;
        assert_eq!(g.points(other).len(), 4);
        assert_eq!(g.size(), 3);
        assert_eq!(Grid::default().size(), 240);
        assert_eq!(Grid::default().points(current).len(), 240);
    }

    #[test]
    fn strictness_orders_by_each_key_in_turn() {
        let p = |orig, repl, obs, flagged, window| Point {
            min_orig_packets: orig,
            max_repl_packets: repl,
            min_observations: obs,
            min_flagged_connections: flagged,
            window,
        };
        let base = p(3, 2, 1, 1, 60);
        for (stricter, why) in [
            (p(2, 9, 2, 1, 600), "more observations"),
            (p(2, 9, 1, 2, 600), "more flagged connections"),
            (p(5, 9, 1, 1, 600), "more packets out"),
            (p(3, 1, 1, 1, 600), "fewer replies"),
            (p(3, 2, 1, 1, 30), "a shorter window"),
        ] {
            assert_eq!(stricter.strictness(&base), Ordering::Greater, "{why}");
            assert_eq!(base.strictness(&stricter), Ordering::Less, "{why}");
        }
        assert_eq!(base.strictness(&base), Ordering::Equal);
    }

    #[test]
    fn labels_read_addresses_networks_flows_and_the_lab_json() {
        let mut l = Labels::parse(
            "# offenders\nbad 203.0.113.20\ngood 192.168.88.0/24  # the LAN\nbad 192.168.88.10 -> 198.51.100.7:443\ngood [2001:db8::5]:5000 -> 192.168.88.20:443\n",
        )
        .unwrap();
        l.resolve(&["192.168.88.1/24".parse().unwrap()]);
        let at = |s: &str| l.label(s.parse().unwrap());
        assert_eq!(at("203.0.113.20"), Some(false));
        assert_eq!(at("192.168.88.77"), Some(true));
        // A flow labels its remote end.
        assert_eq!(at("198.51.100.7"), Some(false));
        assert_eq!(at("2001:db8::5"), Some(true));
        assert_eq!(at("198.51.100.8"), None);
        // Both ends outside, or both inside: the destination.
        let mut both =
            Labels::parse("bad 198.51.100.1 -> 203.0.113.9\ngood 192.168.88.5 -> 192.168.88.6")
                .unwrap();
        both.resolve(&["192.168.88.1/24".parse().unwrap()]);
        assert_eq!(both.label("203.0.113.9".parse().unwrap()), Some(false));
        assert_eq!(both.label("198.51.100.1".parse().unwrap()), None);
        assert_eq!(both.label("192.168.88.6".parse().unwrap()), Some(true));
        assert_eq!(both.label("192.168.88.5".parse().unwrap()), None);
        let mut twice = Labels::parse("bad 203.0.113.9\nbad 192.168.88.5 -> 203.0.113.9").unwrap();
        twice.resolve(&["192.168.88.1/24".parse().unwrap()]);
        assert_eq!(twice.bad.len(), 1);
        // A file of flows alone, or of the lab's spared addresses alone, labels something.
        assert!(Labels::parse("good 192.168.88.5 -> 203.0.113.9").is_ok());
        assert!(Labels::parse(r#"{"classes":[{"spare":["192.0.2.1"]}]}"#).is_ok());
        assert!(Labels::parse(r#"{"classes":[{"block":["192.0.2.1"]}]}"#).is_ok());
        let j = Labels::parse(
            r#"{"always_spared":["192.168.88.1"],"classes":[{"block":["203.0.113.20"],"spare":["192.168.88.30"]}]}"#,
        )
        .unwrap();
        assert_eq!(j.label("203.0.113.20".parse().unwrap()), Some(false));
        assert_eq!(j.label("192.168.88.30".parse().unwrap()), Some(true));
        assert_eq!(j.label("192.168.88.1".parse().unwrap()), Some(true));
    }

    #[test]
    fn bad_labels_say_which_line_and_what_to_write() {
        for (text, want) in [
            ("maybe 1.2.3.4", "line 1"),
            ("bad\n\nbad 1.2.3.4.5", "line 1"),
            ("good 1.2.3.4\nbad nowhere", "line 2"),
            ("# nothing\n", "labels nothing"),
            ("{\"classes\": []}", "classes"),
        ] {
            let e = format!("{:#}", Labels::parse(text).unwrap_err());
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    fn row(blocked: usize, allow: usize, min_obs: u32) -> Row {
        let setting = Point {
            min_orig_packets: 3,
            max_repl_packets: 2,
            min_observations: min_obs,
            min_flagged_connections: 1,
            window: 60,
        };
        Row {
            blocked,
            blocks: blocked,
            block_hours: blocked as f64,
            allowlist_caught: allow,
            ..Row::new(setting, false)
        }
    }

    #[test]
    fn the_frontier_holds_the_undominated_and_the_suggestion_spares_the_allowlist() {
        let mut rows = vec![
            row(10, 2, 1), // frontier: blocks the most
            row(8, 0, 1),  // frontier: the most with no allowlist catch
            row(8, 0, 2),  // frontier too (equal), and stricter
            row(5, 0, 3),  // dominated by the 8/0 ones
            row(9, 3, 1),  // dominated by 10/2
            row(8, 1, 1),  // dominated by 8/0 on the allowlist alone
        ];
        rows.push(Row {
            answered: false,
            ..row(100, 0, 1)
        });
        mark_frontier(&mut rows);
        let f: Vec<bool> = rows.iter().map(|r| r.frontier).collect();
        assert_eq!(f, [true, true, true, false, false, false, false]);
        let (i, why) = suggest(&rows, false);
        assert_eq!(i, Some(2), "{why}");
        // Every setting flagging an allowlisted address: the one flagging the fewest.
        let mut some = vec![row(3, 1, 1), row(4, 2, 1), row(2, 1, 1)];
        mark_frontier(&mut some);
        let (i, why) = suggest(&some, false);
        assert_eq!(i, Some(0), "{why}");
        assert!(why.contains("fewest allowlisted addresses (1)"), "{why}");
        assert!(why.contains("--labels"), "{why}");
        assert_eq!(suggest(&[], false).0, None);
    }

    #[test]
    fn with_labels_the_suggestion_is_the_best_f1_on_the_frontier() {
        let lab = |tp: usize, fp: usize, bad: usize, min_obs: u32| {
            let mut r = row(tp + fp, 0, min_obs);
            r.true_positives = Some(tp);
            r.false_positives = Some(fp);
            r.precision = (tp + fp > 0).then(|| tp as f64 / (tp + fp) as f64);
            r.recall = Some(tp as f64 / bad as f64);
            r
        };
        // 10 bad addresses: 9 found with 1 wrong beats 10 with 6 wrong and 5 with none.
        let mut rows = vec![lab(10, 6, 10, 1), lab(9, 1, 10, 2), lab(5, 0, 10, 3)];
        mark_frontier(&mut rows);
        assert!(rows.iter().all(|r| r.frontier));
        let (i, why) = suggest(&rows, true);
        assert_eq!(i, Some(1), "{why}");
        assert!(why.contains("F1 0.90"), "{why}");
        // A setting with neither precision nor recall (nothing bad found, something good
        // blocked) is never the best, even when nothing beats it on both counts.
        let mut rows = vec![lab(0, 1, 10, 1), lab(1, 5, 10, 2)];
        mark_frontier(&mut rows);
        assert!(rows.iter().all(|r| r.frontier));
        assert_eq!(suggest(&rows, true).0, Some(1));
    }
}
