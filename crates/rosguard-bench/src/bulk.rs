//! Benchmark 4: 10,000 address-list adds over one API connection, pipelined (`call_many`: all
//! sent at once, answers collected in order) against one at a time (each awaited before the
//! next is sent), each against a fresh simulator.
//!
//! The client side is `routeros-client` used directly, in a process of its own (this binary
//! started with [`BULK_ARG`]), with its own runtime like the daemon's: in the harness process
//! it would share threads with the simulator and measure the scheduler more than the protocol.
//! It deliberately checks every outcome, so a run that lost adds cannot pass for a fast one.

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use routeros_client::{address_list_add_command, AddOutcome, Client, ClientConfig, Family, Secret};
use routeros_sim::{Sim, SimConfig};

use crate::child::{self, Spec};
use crate::ctx::{blocking, Ctx};
use crate::results::{Bulk, Stat};

/// The hidden first argument that runs one client side: `__bulk PORT ADDS sequential|pipelined`.
pub const BULK_ARG: &str = "__bulk";

const TIMEOUT: Duration = Duration::from_secs(86_400);

fn address(i: usize) -> String {
    let i = i as u32;
    Ipv4Addr::from(0xC612_0000u32 | (i & 0xFFFF)).to_string() // 198.18.x.y
}

async fn sequential(client: &Client, n: usize) -> Result<Duration> {
    let started = Instant::now();
    for i in 0..n {
        let r = client
            .address_list_add(
                Family::V4,
                "bulk",
                &address(i),
                Some(TIMEOUT),
                "rosguard-bench",
            )
            .await?;
        if !matches!(r, AddOutcome::Added { .. }) {
            bail!("add {i} was not added: {r:?}");
        }
    }
    Ok(started.elapsed())
}

async fn pipelined(client: &Client, n: usize) -> Result<Duration> {
    let started = Instant::now();
    let cmds = (0..n).map(|i| {
        address_list_add_command(
            Family::V4,
            "bulk",
            &address(i),
            Some(TIMEOUT),
            "rosguard-bench",
        )
    });
    let results = client.call_many(cmds).await;
    let took = started.elapsed();
    for (i, r) in results.into_iter().enumerate() {
        if !matches!(AddOutcome::from_result(r)?, AddOutcome::Added { .. }) {
            bail!("add {i} was not added");
        }
    }
    Ok(took)
}

async fn client_side(port: u16, adds: usize, mode: &str) -> Result<Duration> {
    let client = Client::connect(ClientConfig::new(
        "bench",
        format!("127.0.0.1:{port}"),
        "admin",
        Secret::default(),
    ))
    .await?;
    let took = match mode {
        "sequential" => sequential(&client, adds).await?,
        "pipelined" => pipelined(&client, adds).await?,
        other => bail!("unknown mode {other}"),
    };
    client.close().await;
    Ok(took)
}

/// The client process: connects, adds, prints the milliseconds the adds took.
pub fn client_main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let run = || -> Result<Duration> {
        let [port, adds, mode] = args.as_slice() else {
            bail!("usage: rosguard-bench {BULK_ARG} PORT ADDS sequential|pipelined");
        };
        let port: u16 = port.parse().context("PORT")?;
        let adds: usize = adds.parse().context("ADDS")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(client_side(port, adds, mode))
    };
    match run() {
        Ok(took) => {
            println!("{}", took.as_secs_f64() * 1000.0);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rosguard-bench {BULK_ARG}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One client process against a fresh simulator; the milliseconds its adds took.
async fn one(ctx: &Ctx, adds: usize, mode: &'static str) -> Result<f64> {
    let sim = Sim::start(SimConfig::default(), "127.0.0.1:0".parse()?).await?;
    let port = sim.local_addr().port();
    let exe = std::env::current_exe().context("finding this binary")?;
    let log = ctx.out.join(format!("bulk-{mode}.log"));
    let spec = Spec::new(exe)
        .arg(BULK_ARG)
        .arg(port.to_string())
        .arg(adds.to_string())
        .arg(mode);
    let done = blocking(move || child::run(spec, &log)).await?;
    let listed = sim.address_list(routeros_sim::Family::V4, "bulk").len();
    sim.shutdown().await;
    if done.status != 0 {
        bail!(
            "the {mode} bulk client exited with {}: {}",
            done.status,
            child::tail(&ctx.out.join(format!("bulk-{mode}.log")), 5)
        );
    }
    if listed != adds {
        bail!("the {mode} bulk client left {listed} entries instead of {adds}");
    }
    String::from_utf8_lossy(&done.stdout)
        .trim()
        .parse()
        .context("reading the bulk client's time")
}

pub async fn run(ctx: &Ctx, adds: usize, runs: usize) -> Result<Bulk> {
    if adds > 65_536 {
        bail!("--bulk-adds is at most 65536 (one /16 of addresses)");
    }
    let (mut seq, mut pipe) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let s = one(ctx, adds, "sequential").await?;
        let p = one(ctx, adds, "pipelined").await?;
        ctx.progress(&format!(
            "bulk run {}/{runs}: {adds} adds one at a time {s:.0} ms, pipelined {p:.0} ms",
            i + 1
        ));
        seq.push(s);
        pipe.push(p);
    }
    let (seq, pipe) = (Stat::of(seq), Stat::of(pipe));
    let ratio = if pipe.median > 0.0 {
        seq.median / pipe.median
    } else {
        0.0
    };
    Ok(Bulk {
        adds,
        runs,
        sequential_ms: seq,
        pipelined_ms: pipe,
        ratio,
    })
}
