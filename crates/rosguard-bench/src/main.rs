//! `rosguard-bench`: rosguard measured at 10k to 1M connections, side by side with what
//! operators run today.
//!
//! It starts the RouterOS simulator in-process on 127.0.0.1 with a generated table (1% of the
//! rows anomalous) and measures, each figure the median of several runs:
//!
//! 1. a full scan (`rosguard once --dry-run`, `server_filter = false`): cycle time, rows/s, the
//!    daemon's peak RSS (the daemon is a separate process, measured with `wait4`);
//! 2. the same with the filter pushed to the router, and the bytes the simulator sent for each;
//! 3. reaction time: `rosguard run` with `loop_delay = 2s`, an anomaly appearing at a random
//!    moment, until its address-list entry exists;
//! 4. 10,000 address-list adds pipelined over one connection against one at a time;
//! 5. Python `librouteros` printing the same tables with the same `.proplist`, and the original
//!    script's algorithm replayed over the API with it, against one rosguard cycle blocking the
//!    same anomalies.
//!
//! It writes `results.json` and `results.md` to `--out` and draws the chart with
//! `python/chart.py`. Build the daemon first (`cargo build --release -p rosguard -p
//! rosguard-bench`); see BENCHMARKS.md for the commands and the numbers. It deliberately
//! asserts nothing: it is a benchmark, not a test; targets are judged in BENCHMARKS.md.

mod act;
mod bulk;
mod child;
mod ctx;
mod daemon;
mod python;
mod reaction;
mod results;
mod table;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::ctx::Ctx;
use crate::python::Python;
use crate::results::{Machine, PythonInfo, Results, Settings, Table};

/// Benchmarks rosguard against the RouterOS simulator at 10k to 1M connections, side by side
/// with Python librouteros. Writes results.json, results.md and a PNG chart.
#[derive(Debug, Parser)]
#[command(name = "rosguard-bench", version, max_term_width = 100)]
struct Cli {
    /// Table sizes (connections), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    sizes: Vec<usize>,

    /// Runs per figure; each figure is the median.
    #[arg(long, default_value_t = 5)]
    runs: usize,

    /// A short run: 10k and 100k rows, 3 runs, fewer samples (about a minute or two).
    #[arg(long)]
    quick: bool,

    /// Where results.json, results.md, the configs and the logs go.
    #[arg(long, default_value = "target/rosguard-bench")]
    out: PathBuf,

    /// Where to write the chart (default: OUT/bench.png).
    #[arg(long)]
    chart: Option<PathBuf>,

    /// The rosguard binary under test (default: `rosguard` next to this binary).
    #[arg(long)]
    rosguard: Option<PathBuf>,

    /// The Python interpreter for librouteros and the chart.
    #[arg(long, default_value = "python3")]
    python: String,

    /// Do not pip-install python/requirements.txt when librouteros or matplotlib is missing.
    #[arg(long)]
    no_pip: bool,

    /// Benchmarks to leave out: librouteros, script, reaction, bulk, chart (comma-separated).
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,

    /// Seconds of librouteros printing (and, separately, of the script replica) allowed per
    /// table size; fewer runs are made at a size where `--runs` would not fit.
    #[arg(long, default_value_t = 330.0)]
    python_budget: f64,

    /// Skip a Python run estimated to take longer than this many seconds.
    #[arg(long, default_value_t = 600.0)]
    python_max_secs: f64,

    /// Reaction-time samples per table size.
    #[arg(long)]
    reaction_samples: Option<usize>,

    /// Address-list adds in the bulk benchmark.
    #[arg(long, default_value_t = 10_000)]
    bulk_adds: usize,

    /// Seed of the generated tables.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Share of anomalous rows.
    #[arg(long, default_value_t = 0.01)]
    anomaly_share: f64,

    /// Share of IPv6 rows.
    #[arg(long, default_value_t = 0.05)]
    ipv6_share: f64,
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    let mem_kib: f64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    Machine {
        cpu,
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        mem_gib: mem_kib / 1024.0 / 1024.0,
        kernel: first_line("uname", &["-r"]),
        rustc: first_line("rustc", &["--version"]),
        load_before: loadavg(),
        load_after: String::new(),
        rss_floor_kib: child::rss_floor_kib().unwrap_or(0),
    }
}

fn default_rosguard() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding this binary")?;
    Ok(exe.with_file_name("rosguard"))
}

/// Librouteros or script runs that fit: `(runs, note)`, from an estimate of one run.
fn plan_runs(
    estimate: Option<f64>,
    budget: f64,
    max_one: f64,
    runs: usize,
) -> (usize, Option<String>) {
    match estimate {
        None => (runs, None),
        Some(secs) if secs > max_one => (
            0,
            Some(format!(
                "skipped: one run would take about {secs:.0} s (more than --python-max-secs)"
            )),
        ),
        Some(secs) => {
            let fit = ((budget / secs.max(0.001)).floor() as usize).clamp(1, runs);
            let note = (fit < runs).then(|| {
                format!(
                    "{fit} of {runs} runs: about {secs:.0} s each (--python-budget {budget:.0} s)"
                )
            });
            (fit, note)
        }
    }
}

async fn bench(cli: Cli) -> Result<Results> {
    let started = Instant::now();
    let (sizes, runs) = if cli.quick {
        (vec![10_000, 100_000], cli.runs.min(3))
    } else {
        (cli.sizes.clone(), cli.runs)
    };
    if sizes.is_empty() || runs == 0 {
        bail!("nothing to do: give at least one size and one run");
    }
    let mut sizes = sizes;
    sizes.sort_unstable();
    let skip = |what: &str| cli.skip.iter().any(|s| s == what);
    let rosguard = match &cli.rosguard {
        Some(p) => p.clone(),
        None => default_rosguard()?,
    };
    if !rosguard.is_file() {
        bail!(
            "no rosguard binary at {}: build it first with `cargo build --release -p rosguard -p rosguard-bench`, or pass --rosguard PATH",
            rosguard.display()
        );
    }
    std::fs::create_dir_all(&cli.out).with_context(|| format!("creating {}", cli.out.display()))?;
    let out = cli.out.canonicalize()?;
    let ctx = Ctx {
        out: out.clone(),
        rosguard: rosguard.canonicalize()?,
        runs,
        seed: cli.seed,
        anomaly_share: cli.anomaly_share,
        ipv6_share: cli.ipv6_share,
        loop_delay: Duration::from_secs(2),
        started,
    };
    let wants_python = !(skip("librouteros") && skip("script") && skip("chart"));
    let python = if wants_python {
        Some(Python::prepare(&cli.python, !cli.no_pip)?)
    } else {
        None
    };
    let mut results = Results {
        machine: machine(),
        settings: Settings {
            sizes: sizes.clone(),
            runs,
            quick: cli.quick,
            seed: cli.seed,
            anomaly_share: cli.anomaly_share,
            ipv6_share: cli.ipv6_share,
            rosguard: ctx.rosguard.display().to_string(),
        },
        python: python
            .as_ref()
            .map(|p| PythonInfo {
                version: p.version.clone(),
                librouteros: p.librouteros.clone(),
            })
            .unwrap_or_default(),
        ..Results::default()
    };
    ctx.progress(&format!(
        "sizes {sizes:?}, {runs} runs, rosguard {}, results in {}",
        ctx.rosguard.display(),
        out.display()
    ));

    let save = |r: &Results| -> Result<()> {
        std::fs::write(out.join("results.json"), serde_json::to_vec_pretty(r)?)?;
        std::fs::write(out.join("results.md"), r.markdown())?;
        Ok(())
    };

    if !skip("bulk") {
        let bulk_runs = if cli.quick { 3 } else { runs };
        results.bulk = Some(bulk::run(&ctx, cli.bulk_adds, bulk_runs).await?);
        save(&results)?;
    }

    let samples = cli
        .reaction_samples
        .unwrap_or(if cli.quick { 3 } else { 5 });
    let budget = if cli.quick {
        cli.python_budget.min(40.0)
    } else {
        cli.python_budget
    };
    // Estimates for the Python side, from the size before.
    let mut lr_rate: Option<f64> = None;
    let mut script_per_row: Option<f64> = None;
    for &size in &sizes {
        let lr_python = python.as_ref().filter(|_| !skip("librouteros"));
        let (lr_runs, lr_note) = plan_runs(
            lr_rate.map(|r| size as f64 / r),
            budget,
            cli.python_max_secs,
            runs,
        );
        let (full, filtered, lr) = table::run(&ctx, size, lr_python, lr_runs, lr_note).await?;
        if let Some(l) = lr.as_ref().filter(|l| l.rows_per_s > 0.0) {
            lr_rate = Some(l.rows_per_s);
        }
        results.tables.push(Table {
            size,
            full,
            filtered,
            librouteros: lr,
            ..Table::default()
        });
        save(&results)?;

        let script_python = python.as_ref().filter(|_| !skip("script"));
        let (script_runs, script_note) = plan_runs(
            script_per_row.map(|s| s * size as f64),
            budget,
            cli.python_max_secs,
            ctx.act_runs(),
        );
        let act = act::run(&ctx, size, script_python, script_runs, script_note).await?;
        if act.script_runs > 0 {
            script_per_row = Some(act.script_ms.median / 1000.0 / size as f64);
        }
        if let Some(t) = results.tables.last_mut() {
            t.act = Some(act);
        }
        save(&results)?;

        if !skip("reaction") && samples > 0 {
            let r = reaction::run(&ctx, size, samples).await?;
            if let Some(t) = results.tables.last_mut() {
                t.reaction = Some(r);
            }
            save(&results)?;
        }
    }

    results.machine.load_after = loadavg();
    results.total_seconds = started.elapsed().as_secs_f64();
    save(&results)?;
    if let (Some(py), false) = (&python, skip("chart")) {
        let png = cli.chart.clone().unwrap_or_else(|| out.join("bench.png"));
        py.chart(&out.join("results.json"), &png, &out.join("chart.log"))?;
        ctx.progress(&format!("chart: {}", png.display()));
    }
    ctx.progress(&format!(
        "done: {} and {}",
        out.join("results.md").display(),
        out.join("results.json").display()
    ));
    Ok(results)
}

fn main() -> Result<ExitCode> {
    match std::env::args_os().nth(1) {
        Some(a) if a == child::SPAWNER_ARG => return Ok(child::spawner_main()),
        Some(a) if a == bulk::BULK_ARG => return Ok(bulk::client_main()),
        _ => {}
    }
    // Before anything big exists in this process: see `child`.
    child::start_spawner()?;
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match runtime.block_on(bench(cli)) {
        Ok(results) => {
            println!("{}", results.markdown());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("rosguard-bench: {e:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_parses() {
        Cli::command().debug_assert();
        let c = Cli::parse_from(["rosguard-bench", "--sizes", "10,20", "--skip", "bulk,chart"]);
        assert_eq!(c.sizes, [10, 20]);
        assert_eq!(c.skip, ["bulk", "chart"]);
    }

    #[test]
    fn python_runs_fit_the_budget() {
        assert_eq!(plan_runs(None, 300.0, 600.0, 5), (5, None));
        assert_eq!(plan_runs(Some(10.0), 300.0, 600.0, 5).0, 5);
        assert_eq!(plan_runs(Some(100.0), 300.0, 600.0, 5).0, 3);
        assert_eq!(plan_runs(Some(400.0), 300.0, 600.0, 5).0, 1);
        assert_eq!(plan_runs(Some(700.0), 300.0, 600.0, 5).0, 0);
    }

    #[test]
    fn phases_are_uniform_enough() {
        let mut r = crate::ctx::SplitMix(7);
        let xs: Vec<f64> = (0..1000).map(|_| r.unit()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / 1000.0;
        assert!((0.4..0.6).contains(&mean));
    }
}
