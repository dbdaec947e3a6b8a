//! Benchmarks 1, 2 and the print half of 5: one simulator with a generated table, and against
//! it, interleaved run by run, `rosguard once --dry-run` fetching every row, the same with the
//! filter pushed to the router, and librouteros printing the same tables.
//!
//! Interleaving puts every client on the same simulator under the same machine load. The
//! daemon runs in dry-run, so nothing on the simulated router changes between runs. It
//! deliberately does not decide how many librouteros runs fit the time budget: the caller
//! passes that in.

use std::path::Path;

use anyhow::Result;
use routeros_sim::SimHandle;

use crate::child::self_cpu;
use crate::ctx::{blocking, Ctx};
use crate::daemon::{self, DaemonConfig};
use crate::python::Python;
use crate::results::{Librouteros, Scan, Stat};

/// Raw samples of one scan mode.
#[derive(Default)]
struct ScanSamples {
    cycle: Vec<f64>,
    wall: Vec<f64>,
    cpu: Vec<f64>,
    sim_cpu: Vec<f64>,
    rss: Vec<f64>,
    bytes: Vec<f64>,
    last: Option<daemon::CycleReport>,
}

impl ScanSamples {
    fn into_scan(self) -> Scan {
        let runs = self.cycle.len();
        let last = self.last;
        let mut s = Scan {
            runs,
            scanned: last.as_ref().map_or(0, |r| r.scanned),
            table_size: last.as_ref().map_or(0, |r| r.table_size),
            flagged: last.as_ref().map_or(0, |r| r.flagged),
            cycle_ms: Stat::of(self.cycle),
            wall_ms: Stat::of(self.wall),
            cpu_ms: Stat::of(self.cpu),
            sim_cpu_ms: Stat::of(self.sim_cpu),
            rss_kib: Stat::of(self.rss),
            bytes: Stat::of(self.bytes),
            ..Scan::default()
        };
        s.finish();
        s
    }
}

async fn once_sample(
    ctx: &Ctx,
    sim: &SimHandle,
    config: &Path,
    log: &Path,
    into: &mut ScanSamples,
) -> Result<()> {
    let (rosguard, config, log) = (ctx.rosguard.clone(), config.to_owned(), log.to_owned());
    let bytes0 = sim.stats().bytes_sent;
    let cpu0 = self_cpu();
    let (report, done) = blocking(move || daemon::once(&rosguard, &config, true, &log)).await?;
    into.sim_cpu
        .push((self_cpu() - cpu0).as_secs_f64() * 1000.0);
    into.bytes.push((sim.stats().bytes_sent - bytes0) as f64);
    into.cycle.push(report.duration_ms as f64);
    into.wall.push(done.wall.as_secs_f64() * 1000.0);
    into.cpu.push(done.cpu.as_secs_f64() * 1000.0);
    into.rss.push(done.maxrss_kib as f64);
    into.last = Some(report);
    Ok(())
}

/// The scans (and `lr_runs` librouteros prints) over one table of `size` rows.
pub async fn run(
    ctx: &Ctx,
    size: usize,
    python: Option<&Python>,
    lr_runs: usize,
    lr_note: Option<String>,
) -> Result<(Scan, Scan, Option<Librouteros>)> {
    let dir = ctx.out.join(format!("{size}"));
    std::fs::create_dir_all(&dir)?;
    let sim = ctx.start_sim(size).await?;
    let port = sim.local_addr().port();

    let full_cfg = dir.join("full.toml");
    let mut c = DaemonConfig::new(port, dir.join("state-scan"));
    c.server_filter = false;
    c.write(&full_cfg)?;
    let filtered_cfg = dir.join("filtered.toml");
    c.server_filter = true;
    c.write(&filtered_cfg)?;
    let log = dir.join("once.log");

    // One untimed cycle each: the binary and the state store are warm for every timed run.
    let mut warm = ScanSamples::default();
    once_sample(ctx, &sim, &full_cfg, &log, &mut warm).await?;
    once_sample(ctx, &sim, &filtered_cfg, &log, &mut warm).await?;

    let (mut full, mut filtered) = (ScanSamples::default(), ScanSamples::default());
    let mut lr_print = Vec::new();
    let (mut lr_wall, mut lr_cpu, mut lr_sim, mut lr_rss, mut lr_bytes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut lr_rows = 0;
    for i in 0..ctx.runs.max(lr_runs) {
        if i < ctx.runs {
            once_sample(ctx, &sim, &full_cfg, &log, &mut full).await?;
            once_sample(ctx, &sim, &filtered_cfg, &log, &mut filtered).await?;
            ctx.progress(&format!(
                "{size} rows, run {}/{}: full {} ms, filtered {} ms",
                i + 1,
                ctx.runs,
                full.cycle.last().copied().unwrap_or(0.0),
                filtered.cycle.last().copied().unwrap_or(0.0)
            ));
        }
        if let (Some(py), true) = (python, i < lr_runs) {
            let (py, log) = (py.clone(), dir.join("lr_print.log"));
            let bytes0 = sim.stats().bytes_sent;
            let cpu0 = self_cpu();
            let proplist = rosguard_routeros::CONNECTION_PROPLIST;
            let r = blocking(move || py.print_tables(port, proplist, &log)).await?;
            lr_sim.push((self_cpu() - cpu0).as_secs_f64() * 1000.0);
            lr_bytes.push((sim.stats().bytes_sent - bytes0) as f64);
            lr_print.push(r.out.seconds * 1000.0);
            lr_wall.push(r.process.wall.as_secs_f64() * 1000.0);
            lr_cpu.push(r.process.cpu.as_secs_f64() * 1000.0);
            lr_rss.push(r.process.maxrss_kib as f64);
            lr_rows = r.out.rows;
            ctx.progress(&format!(
                "{size} rows, librouteros run {}/{lr_runs}: {:.0} ms, {} rows",
                i + 1,
                r.out.seconds * 1000.0,
                r.out.rows
            ));
        }
    }
    sim.shutdown().await;

    let lr = python.map(|_| {
        let mut l = Librouteros {
            runs: lr_print.len(),
            rows: lr_rows,
            print_ms: Stat::of(lr_print),
            wall_ms: Stat::of(lr_wall),
            cpu_ms: Stat::of(lr_cpu),
            sim_cpu_ms: Stat::of(lr_sim),
            rss_kib: Stat::of(lr_rss),
            bytes: Stat::of(lr_bytes),
            note: lr_note,
            ..Librouteros::default()
        };
        l.finish();
        l
    });
    Ok((full.into_scan(), filtered.into_scan(), lr))
}
