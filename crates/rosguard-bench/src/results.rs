//! The results: every sample kept, medians computed once, written as `results.json` (read by
//! `python/chart.py`) and as `results.md` (the tables pasted into BENCHMARKS.md).
//!
//! It deliberately holds numbers and words only: nothing here measures or decides what to run.

use std::fmt::Write as _;

use serde::Serialize;

/// Several measurements of one figure.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub samples: Vec<f64>,
}

impl Stat {
    pub fn of(samples: Vec<f64>) -> Self {
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => 0.0,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Self {
            median,
            min: sorted.first().copied().unwrap_or(0.0),
            max: sorted.last().copied().unwrap_or(0.0),
            samples,
        }
    }
}

/// The machine the numbers come from.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cpus: usize,
    pub mem_gib: f64,
    pub kernel: String,
    pub rustc: String,
    pub load_before: String,
    pub load_after: String,
    /// The peak RSS any measured child shows at the least (`true` run the same way).
    pub rss_floor_kib: u64,
}

/// The harness's settings for this run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Settings {
    pub sizes: Vec<usize>,
    pub runs: usize,
    pub quick: bool,
    pub seed: u64,
    pub anomaly_share: f64,
    pub ipv6_share: f64,
    pub rosguard: String,
}

/// One `rosguard once` mode over one table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Scan {
    pub runs: usize,
    /// Rows the daemon read (both families).
    pub scanned: u64,
    /// Rows in the table (the daemon's own count; with the filter pushed, as counted by the router).
    pub table_size: u64,
    pub flagged: u64,
    /// The cycle as the daemon reports it (after login).
    pub cycle_ms: Stat,
    /// The process from start to exit.
    pub wall_ms: Stat,
    pub cpu_ms: Stat,
    pub sim_cpu_ms: Stat,
    pub rss_kib: Stat,
    /// Bytes the simulator sent for the whole process (login and context reads included).
    pub bytes: Stat,
    /// Rows read per second of cycle (median cycle).
    pub rows_per_s: f64,
    /// Table rows covered per second of cycle: with the filter pushed, the rows the router
    /// looked at for us.
    pub table_rows_per_s: f64,
    pub rss_mib: f64,
}

impl Scan {
    pub fn finish(&mut self) {
        let secs = self.cycle_ms.median / 1000.0;
        if secs > 0.0 {
            self.rows_per_s = self.scanned as f64 / secs;
            self.table_rows_per_s = self.table_size.max(self.scanned) as f64 / secs;
        }
        self.rss_mib = self.rss_kib.median / 1024.0;
    }
}

/// librouteros printing the same tables.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Librouteros {
    pub runs: usize,
    pub rows: u64,
    /// The prints, timed inside Python after login.
    pub print_ms: Stat,
    pub wall_ms: Stat,
    pub cpu_ms: Stat,
    pub sim_cpu_ms: Stat,
    pub rss_kib: Stat,
    pub bytes: Stat,
    pub rows_per_s: f64,
    pub rss_mib: f64,
    /// Why fewer runs (or none) were made.
    pub note: Option<String>,
}

impl Librouteros {
    pub fn finish(&mut self) {
        let secs = self.print_ms.median / 1000.0;
        if secs > 0.0 {
            self.rows_per_s = self.rows as f64 / secs;
        }
        self.rss_mib = self.rss_kib.median / 1024.0;
    }
}

/// rosguard's blocking cycle against the script's algorithm, for the same anomalies.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Act {
    pub runs: usize,
    pub flagged: u64,
    /// Addresses rosguard added in its cycle.
    pub rosguard_added: u64,
    pub rosguard_cycle_ms: Stat,
    pub rosguard_wall_ms: Stat,
    pub rosguard_rss_kib: Stat,
    pub script_runs: usize,
    pub script_candidates: u64,
    pub script_added: u64,
    /// Candidates whose address was on the list already (a duplicate target).
    pub script_already: u64,
    pub script_rss_kib: Stat,
    pub script_ms: Stat,
    pub script_find_ms: Stat,
    pub script_sim_cpu_ms: Stat,
    pub script_note: Option<String>,
}

/// From an anomalous connection appearing to its address-list entry existing.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Reaction {
    pub loop_delay_ms: u64,
    pub samples_ms: Stat,
    /// Samples that saw no entry before the deadline.
    pub missed: usize,
    /// The daemon's peak RSS over the whole run.
    pub daemon_rss_kib: u64,
    /// The daemon's cycle with these settings, as one `rosguard once` measured it.
    pub cycle_ms: u64,
}

/// One table size.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Table {
    pub size: usize,
    pub full: Scan,
    pub filtered: Scan,
    pub librouteros: Option<Librouteros>,
    pub act: Option<Act>,
    pub reaction: Option<Reaction>,
}

/// Pipelined address-list adds against one at a time.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Bulk {
    pub adds: usize,
    pub runs: usize,
    pub sequential_ms: Stat,
    pub pipelined_ms: Stat,
    pub ratio: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PythonInfo {
    pub version: String,
    pub librouteros: String,
}

/// Everything.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Results {
    pub machine: Machine,
    pub settings: Settings,
    pub python: PythonInfo,
    pub tables: Vec<Table>,
    pub bulk: Option<Bulk>,
    pub total_seconds: f64,
}

fn count(n: f64) -> String {
    let n = n.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn size(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n.is_multiple_of(1_000_000) => format!("{}M", n / 1_000_000),
        n if n >= 1000 && n.is_multiple_of(1000) => format!("{}k", n / 1000),
        n => count(n as f64),
    }
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        count(v)
    } else {
        format!("{v:.1}")
    }
}

fn mib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

fn bytes(b: f64) -> String {
    match b {
        b if b >= 1024.0 * 1024.0 => format!("{:.1} MiB", b / 1024.0 / 1024.0),
        b if b >= 1024.0 => format!("{:.1} KiB", b / 1024.0),
        b => format!("{b:.0} B"),
    }
}

fn ratio(a: f64, b: f64) -> String {
    if a > 0.0 && b > 0.0 {
        format!("{:.1}x", a / b)
    } else {
        "n/a".into()
    }
}

fn runs(n: usize) -> String {
    format!("{n} run{}", if n == 1 { "" } else { "s" })
}

impl Results {
    /// The Markdown tables (medians; ranges in brackets where they say something).
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let _ = writeln!(
            md,
            "Machine: {} x {}, {:.0} GiB, Linux {}, {}; {}, librouteros {}. Load average before/after: {} / {}.\n",
            m.cpus, m.cpu, m.mem_gib, m.kernel, m.rustc, self.python.version, self.python.librouteros, m.load_before, m.load_after
        );
        let _ = writeln!(
            md,
            "Peak RSS of a child process that does nothing (`true`, spawned the same way): {}; every RSS figure below includes it.\n",
            mib(m.rss_floor_kib as f64)
        );
        let _ = writeln!(
            md,
            "Tables: {} connections each, {:.0}% anomalous, {:.0}% IPv6, seed {}; medians of {} unless a row says otherwise. Total harness time {:.0} s.\n",
            self.settings.sizes.iter().map(|&s| size(s)).collect::<Vec<_>>().join(", "),
            self.settings.anomaly_share * 100.0,
            self.settings.ipv6_share * 100.0,
            self.settings.seed,
            runs(self.settings.runs),
            self.total_seconds
        );

        md.push_str("### 1. Full scan (`server_filter = false`): rosguard against librouteros\n\n");
        md.push_str("| rows | rosguard cycle | rosguard rows/s | rosguard peak RSS | rosguard CPU | librouteros print | librouteros rows/s | librouteros peak RSS | rows/s ratio | memory ratio |\n");
        md.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for t in &self.tables {
            let f = &t.full;
            let (lr_time, lr_rate, lr_rss, r_rate, r_mem) = match &t.librouteros {
                Some(l) if l.runs > 0 => (
                    format!("{} ms ({})", ms(l.print_ms.median), runs(l.runs)),
                    count(l.rows_per_s),
                    mib(l.rss_kib.median),
                    ratio(f.rows_per_s, l.rows_per_s),
                    ratio(l.rss_kib.median, f.rss_kib.median),
                ),
                Some(l) => {
                    let note = l.note.clone().unwrap_or_else(|| "skipped".into());
                    (note, "-".into(), "-".into(), "-".into(), "-".into())
                }
                None => (
                    "not run".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ),
            };
            let _ = writeln!(
                md,
                "| {} | {} ms [{}-{}] | {} | {} | {} ms | {} | {} | {} | {} | {} |",
                count(f.scanned as f64),
                ms(f.cycle_ms.median),
                ms(f.cycle_ms.min),
                ms(f.cycle_ms.max),
                count(f.rows_per_s),
                mib(f.rss_kib.median),
                ms(f.cpu_ms.median),
                lr_time,
                lr_rate,
                lr_rss,
                r_rate,
                r_mem
            );
        }
        md.push_str("\nrosguard cycle: the daemon's own `duration_ms` (connect and login excluded, every read of the cycle included: addresses, lists, routes, both connection tables, detection, the state store). librouteros print: timed in Python around the two prints, after login. Peak RSS: `ru_maxrss` of each client process, read with `wait4`. CPU: the daemon process, user + system.\n\n");

        md.push_str("### 2. Filter pushed to the router (`server_filter = true`, the default) against the full scan\n\n");
        md.push_str("| rows | full: cycle | full: bytes on the wire | filtered: cycle | filtered: rows returned | filtered: bytes on the wire | bytes saved | simulator CPU full / filtered | librouteros bytes |\n");
        md.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for t in &self.tables {
            let (f, g) = (&t.full, &t.filtered);
            let lr_bytes = t
                .librouteros
                .as_ref()
                .filter(|l| l.runs > 0)
                .map_or("-".into(), |l| bytes(l.bytes.median));
            let _ = writeln!(
                md,
                "| {} | {} ms | {} | {} ms | {} | {} | {} | {} / {} ms | {} |",
                count(t.size as f64),
                ms(f.cycle_ms.median),
                bytes(f.bytes.median),
                ms(g.cycle_ms.median),
                count(g.scanned as f64),
                bytes(g.bytes.median),
                ratio(f.bytes.median, g.bytes.median),
                ms(f.sim_cpu_ms.median),
                ms(g.sim_cpu_ms.median),
                lr_bytes
            );
        }
        md.push_str("\nBytes on the wire: what the simulator sent during the whole `rosguard once` process (login, context reads, both tables; with the filter pushed also the read of `total-entries` the panic brake needs). Simulator CPU: the harness process (which hosts the simulator) over the same span: the router's share of the work.\n\n");

        if self.tables.iter().any(|t| t.reaction.is_some()) {
            md.push_str("### 3. Reaction time (`rosguard run`, filter pushed, blocks of the existing anomalies already in place)\n\n");
            md.push_str("| rows | loop_delay | daemon cycle | samples | median | max | target (loop_delay + 100 ms) | daemon peak RSS |\n");
            md.push_str("|---:|---:|---:|---:|---:|---:|:---|---:|\n");
            for t in &self.tables {
                let Some(r) = &t.reaction else { continue };
                let target = r.loop_delay_ms as f64 + 100.0;
                let verdict = if r.missed > 0 {
                    format!("missed ({} samples saw no entry)", r.missed)
                } else if r.samples_ms.max <= target {
                    "met".into()
                } else if r.samples_ms.median <= target {
                    format!(
                        "median met; max over by {} ms",
                        ms(r.samples_ms.max - target)
                    )
                } else {
                    format!("missed by {} ms (median)", ms(r.samples_ms.median - target))
                };
                let _ = writeln!(
                    md,
                    "| {} | {} ms | {} ms | {} | {} ms | {} ms | {} | {} |",
                    count(t.size as f64),
                    r.loop_delay_ms,
                    r.cycle_ms,
                    r.samples_ms.samples.len(),
                    ms(r.samples_ms.median),
                    ms(r.samples_ms.max),
                    verdict,
                    mib(r.daemon_rss_kib as f64)
                );
            }
            md.push_str("\nThe anomalous connection is added to the simulator at a random moment of the daemon's cycle; the time runs until `SimHandle::list_contains` (polled every 5 ms in the harness process) sees its address in the list.\n\n");
        }

        if let Some(b) = &self.bulk {
            md.push_str("### 4. Bulk blocking: address-list adds over one connection\n\n");
            md.push_str("| adds | one at a time | pipelined (`call_many`) | adds/s one at a time | adds/s pipelined | speed-up |\n");
            md.push_str("|---:|---:|---:|---:|---:|---:|\n");
            let rate = |ms: f64| {
                if ms > 0.0 {
                    b.adds as f64 / (ms / 1000.0)
                } else {
                    0.0
                }
            };
            let _ = writeln!(
                md,
                "| {} | {} ms | {} ms | {} | {} | {:.1}x |\n",
                count(b.adds as f64),
                ms(b.sequential_ms.median),
                ms(b.pipelined_ms.median),
                count(rate(b.sequential_ms.median)),
                count(rate(b.pipelined_ms.median)),
                b.ratio
            );
            let _ = writeln!(md, "Medians of {}, each against a fresh simulator, with `routeros-client` in a client process of its own (a multi-threaded tokio runtime, like the daemon's).\n", runs(b.runs));
        }

        if self.tables.iter().any(|t| t.act.is_some()) {
            md.push_str("### 5. Blocking every anomaly: one rosguard cycle against the script's algorithm over the API (librouteros)\n\n");
            md.push_str("| rows | flagged | rosguard added | rosguard cycle | script candidates | script added | script time | of which the find | simulator CPU meanwhile | ratio | the script at 50 per 2 s |\n");
            md.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            for t in &self.tables {
                let Some(a) = &t.act else { continue };
                let (s_time, s_find, s_sim, s_ratio) = if a.script_runs > 0 {
                    (
                        format!("{} ms ({})", ms(a.script_ms.median), runs(a.script_runs)),
                        format!("{} ms", ms(a.script_find_ms.median)),
                        format!("{} ms", ms(a.script_sim_cpu_ms.median)),
                        ratio(a.script_ms.median, a.rosguard_cycle_ms.median),
                    )
                } else {
                    (
                        a.script_note.clone().unwrap_or_else(|| "skipped".into()),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                    )
                };
                // The script acts on at most 50 connections per pass and sleeps 2 s in between.
                let passes = (a.flagged as f64 / 50.0).ceil();
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} ms ({}) | {} | {} | {} | {} | {} | {} | {} passes, >= {} s |",
                    count(t.size as f64),
                    count(a.flagged as f64),
                    count(a.rosguard_added as f64),
                    ms(a.rosguard_cycle_ms.median),
                    runs(a.runs),
                    count(a.script_candidates as f64),
                    count(a.script_added as f64),
                    s_time,
                    s_find,
                    s_sim,
                    s_ratio,
                    count(passes),
                    count(passes * 2.0)
                );
            }
            md.push_str("\nrosguard: `rosguard once` with every cap lifted (`max_conn_per_cycle` 1,000,000, `max_blocks_per_hour` and `max_list_size` 0) and `remove_tcp_conn = false`, against a fresh simulator; its cycle includes the scan with the filter pushed, the adds (pipelined) and the state store. Script: `python/script_replica.py` against another fresh simulator with the same table: one `find` of candidate `.id`s (the same filter), then per candidate a `print ?.id=` (the script's `get`), a `print` of the list by address (its `find`) and an `add`, timed after login; the simulator's CPU over the same span (mostly its list `find`s, a scan of the list that grows with every add) is shown beside it. The last column is how long the original script, acting on at most 50 connections per 2 s pass, would need for the same anomalies at the very least.\n");
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max() {
        let s = Stat::of(vec![3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Stat::of(vec![4.0, 1.0, 2.0, 3.0]).median, 2.5);
        assert_eq!(Stat::of(Vec::new()).median, 0.0);
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(count(1_234_567.0), "1,234,567");
        assert_eq!(size(1_000_000), "1M");
        assert_eq!(size(100_000), "100k");
        assert_eq!(ratio(10.0, 4.0), "2.5x");
        assert_eq!(ratio(1.0, 0.0), "n/a");
    }
}
