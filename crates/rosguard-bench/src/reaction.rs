//! Benchmark 3: reaction time. `rosguard run` watches a simulator with a generated table; an
//! anomalous connection (counters already over the thresholds) appears at a random moment of
//! the daemon's cycle, and the clock runs until its address is on the block list.
//!
//! The steady state comes first: one `rosguard once` blocks the table's existing anomalies, so
//! the daemon under test has nothing else to do and its list is as big as on a router that has
//! been protected for a while. The list is watched in-process with `SimHandle::list_contains`
//! every 5 ms. It deliberately uses the daemon's defaults (filter pushed, panic brake on) apart
//! from the lifted caps: the figure is what an operator gets.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use routeros_sim::{Family, SimConnection};

use crate::ctx::{blocking, Ctx, SplitMix};
use crate::daemon::{self, DaemonConfig};
use crate::results::{Reaction, Stat};

/// How often the harness looks at the list.
const POLL: Duration = Duration::from_millis(5);

/// The `i`-th injected connection: a LAN host whose TLS handshakes to a fresh address go
/// unanswered (10 packets out, 1 back).
fn anomaly(i: usize) -> (SimConnection, Ipv4Addr) {
    let dst = Ipv4Addr::new(198, 18, (i / 250) as u8, 1 + (i % 250) as u8);
    let src = SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(192, 168, 88, 200)),
        40_000 + i as u16,
    );
    let c = SimConnection::tcp(src, SocketAddr::new(IpAddr::V4(dst), 443)).packets(10, 1);
    (c, dst)
}

pub async fn run(ctx: &Ctx, size: usize, samples: usize) -> Result<Reaction> {
    let dir = ctx.out.join(format!("{size}"));
    std::fs::create_dir_all(&dir)?;
    let sim = ctx.start_sim(size).await?;
    let cfg = dir.join("reaction.toml");
    let mut c = DaemonConfig::new(sim.local_addr().port(), dir.join("state-reaction"));
    c.unlimited = true;
    c.loop_delay = ctx.loop_delay;
    c.write(&cfg)?;
    let list = c.address_list.clone();

    // Steady state: the table's own anomalies are blocked already.
    let (rosguard, cfg2, log) = (
        ctx.rosguard.clone(),
        cfg.clone(),
        dir.join("reaction-once.log"),
    );
    let (pre, _) = blocking(move || daemon::once(&rosguard, &cfg2, false, &log)).await?;
    // A second cycle: what one cycle costs once everything is blocked.
    let (rosguard, cfg2, log) = (
        ctx.rosguard.clone(),
        cfg.clone(),
        dir.join("reaction-once.log"),
    );
    let (steady, _) = blocking(move || daemon::once(&rosguard, &cfg2, false, &log)).await?;
    ctx.progress(&format!(
        "{size} rows, reaction: {} existing anomalies blocked; a steady cycle takes {} ms",
        pre.added(),
        steady.duration_ms
    ));

    let daemon = daemon::spawn_run(&ctx.rosguard, &cfg, &dir.join("reaction-run.log"))?;
    // Let it connect and finish its first cycle.
    tokio::time::sleep(Duration::from_millis(1000 + 2 * steady.duration_ms)).await;
    let period = ctx.loop_delay + Duration::from_millis(steady.duration_ms);
    let deadline = 2 * period + Duration::from_secs(5);
    let mut rng = SplitMix(ctx.seed ^ size as u64);
    let mut times = Vec::new();
    let mut missed = 0;
    for i in 0..samples {
        if !daemon.is_running() {
            break;
        }
        let phase = period.mul_f64(rng.unit());
        tokio::time::sleep(phase).await;
        let (conn, dst) = anomaly(i);
        let dst = dst.to_string();
        let started = Instant::now();
        sim.add_connection(conn);
        loop {
            if sim.list_contains(Family::V4, &list, &dst) {
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                ctx.progress(&format!(
                    "{size} rows, reaction sample {}/{samples}: {ms:.0} ms",
                    i + 1
                ));
                times.push(ms);
                break;
            }
            if started.elapsed() > deadline {
                missed += 1;
                ctx.progress(&format!(
                    "{size} rows, reaction sample {}/{samples}: no entry after {deadline:?}",
                    i + 1
                ));
                break;
            }
            tokio::time::sleep(POLL).await;
        }
    }
    let alive = daemon.is_running();
    let done = blocking(move || daemon.stop(Duration::from_secs(15))).await?;
    sim.shutdown().await;
    if !alive {
        bail!(
            "`rosguard run` exited early with {}; see {}",
            done.status,
            dir.join("reaction-run.log").display()
        );
    }
    Ok(Reaction {
        loop_delay_ms: ctx.loop_delay.as_millis() as u64,
        samples_ms: Stat::of(times),
        missed,
        daemon_rss_kib: done.maxrss_kib,
        cycle_ms: steady.duration_ms,
    })
}
