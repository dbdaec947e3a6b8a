//! Benchmark 5, the blocking half: every anomaly of a table blocked by one rosguard cycle,
//! against the original script's algorithm replayed over the API with librouteros.
//!
//! Each run gets a fresh simulator with the same seed, so both sides see the same table, an
//! empty list and no leftovers of the other. rosguard runs with its caps lifted (the script's
//! 50 per cycle would make it a comparison of caps, not of work) and without removing
//! connections, like the replica. It deliberately does not decide how many script runs fit the
//! time budget: the caller passes that in.

use anyhow::Result;
use rosguard_core::Detection;
use rosguard_routeros::pushed_filter;
use routeros_proto::Command;

use crate::child::self_cpu;
use crate::ctx::{blocking, Ctx};
use crate::daemon::{self, DaemonConfig};
use crate::python::Python;
use crate::results::{Act, Stat};

/// The candidate filter rosguard pushes to the router, as query words for the replica.
fn filter_words() -> Vec<String> {
    let cmd = pushed_filter(
        Command::new("/ip/firewall/connection/print"),
        &Detection::default(),
    );
    cmd.words()
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .filter(|w| w.starts_with('?'))
        .collect()
}

pub async fn run(
    ctx: &Ctx,
    size: usize,
    python: Option<&Python>,
    script_runs: usize,
    script_note: Option<String>,
) -> Result<Act> {
    let dir = ctx.out.join(format!("{size}"));
    std::fs::create_dir_all(&dir)?;
    let runs = ctx.act_runs();
    let mut act = Act {
        runs,
        script_note,
        ..Act::default()
    };
    let (mut cycle, mut wall, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let sim = ctx.start_sim(size).await?;
        let cfg = dir.join("act.toml");
        let mut c = DaemonConfig::new(sim.local_addr().port(), dir.join(format!("state-act-{i}")));
        c.unlimited = true;
        c.remove_tcp_conn = false;
        c.write(&cfg)?;
        let (rosguard, log) = (ctx.rosguard.clone(), dir.join("act.log"));
        let (report, done) = blocking(move || daemon::once(&rosguard, &cfg, false, &log)).await?;
        sim.shutdown().await;
        act.flagged = report.flagged;
        act.rosguard_added = report.added() as u64;
        cycle.push(report.duration_ms as f64);
        wall.push(done.wall.as_secs_f64() * 1000.0);
        rss.push(done.maxrss_kib as f64);
        ctx.progress(&format!(
            "{size} rows, blocking run {}/{runs}: rosguard added {} in {} ms",
            i + 1,
            act.rosguard_added,
            report.duration_ms
        ));
    }
    act.rosguard_cycle_ms = Stat::of(cycle);
    act.rosguard_wall_ms = Stat::of(wall);
    act.rosguard_rss_kib = Stat::of(rss);

    if let Some(py) = python {
        let filter = filter_words();
        let (mut total, mut find, mut sim_cpu, mut rss) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..script_runs {
            let sim = ctx.start_sim(size).await?;
            let port = sim.local_addr().port();
            let (py, filter, log) = (py.clone(), filter.clone(), dir.join("script.log"));
            let cpu0 = self_cpu();
            let r = blocking(move || py.script_replica(port, "tls_block", &filter, &log)).await?;
            sim_cpu.push((self_cpu() - cpu0).as_secs_f64() * 1000.0);
            sim.shutdown().await;
            act.script_candidates = r.out.candidates;
            act.script_added = r.out.added;
            act.script_already = r.out.already;
            rss.push(r.process.maxrss_kib as f64);
            total.push(r.out.seconds * 1000.0);
            find.push(r.out.find_seconds * 1000.0);
            ctx.progress(&format!(
                "{size} rows, script run {}/{script_runs}: added {} in {:.0} ms",
                i + 1,
                r.out.added,
                r.out.seconds * 1000.0
            ));
        }
        act.script_runs = total.len();
        act.script_ms = Stat::of(total);
        act.script_find_ms = Stat::of(find);
        act.script_sim_cpu_ms = Stat::of(sim_cpu);
        act.script_rss_kib = Stat::of(rss);
    }
    Ok(act)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replica_gets_rosguards_filter() {
        assert_eq!(
            filter_words(),
            [
                "?=protocol=tcp",
                "?=protocol=udp",
                "?#|",
                "?>orig-packets=3",
                "?>orig-fasttrack-packets=0",
                "?#|",
                "?#&",
                "?<repl-packets=3",
                "?#&",
                "?=protocol=tcp",
                "?=tcp-state=syn-sent",
                "?#&",
                "?=repl-packets=0",
                "?#&",
                "?#|",
                "?=protocol=tcp",
                "?=tcp-state=established",
                "?=tcp-state=fin-wait",
                "?#|",
                "?=tcp-state=close-wait",
                "?#|",
                "?=tcp-state=last-ack",
                "?#|",
                "?#&",
                "?<repl-packets=65",
                "?#&",
                "?#|"
            ]
        );
    }
}
