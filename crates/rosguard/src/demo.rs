//! `rosguard demo`: the built-in simulator and the daemon together, no router needed.
//!
//! The simulator plays the embedded scenario (normal traffic, DPI-frozen TLS flows, a UDP
//! spray, an allowlisted and a router-local address that must be spared, IPv6) on a free
//! loopback port; the daemon watches it with the default settings for a bounded time, its log
//! lines show live, and a short table of what was blocked and why ends the run.
//!
//! It writes nothing to disk and touches no network beyond 127.0.0.1.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use rosguard_core::outcome::AddResult;
use rosguard_core::settings::{Blocking, CycleLimits, Settings};
use routeros_client::Secret;
use routeros_sim::{Sim, SimConfig};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DaemonSettings, LogLevel, RouterConfig};
use crate::cycle::CycleEnv;
use crate::daemon;
use crate::events::{Event, Events};
use crate::outln;

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    routeros_proto::parse_duration(s).map_err(|e| e.to_string())
}

/// Options of `rosguard demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How long to run before printing the summary (RouterOS duration: 20s, 1m, ...).
    #[arg(long, default_value = "20s", value_parser = parse_duration_arg)]
    duration: Duration,
    /// Pause between two cycles (the script's cfgLoopDelay).
    #[arg(long, default_value = "2s", value_parser = parse_duration_arg)]
    loop_delay: Duration,
    /// Decide and log, but change nothing on the simulated router.
    #[arg(long)]
    dry_run: bool,
}

/// One line of the summary.
struct Blocked {
    at: Duration,
    comment: String,
    outcome: String,
}

pub async fn run(args: DemoArgs) -> Result<ExitCode> {
    let sim_cfg = SimConfig {
        scenario: Some(routeros_sim::demo_scenario()),
        ..SimConfig::default()
    };
    let sim = Sim::start(sim_cfg, "127.0.0.1:0".parse()?)
        .await
        .context("starting the built-in simulator")?;
    let addr = sim.local_addr();
    outln!("rosguard demo: a simulated RouterOS router listens on {addr}");
    outln!(
        "watching it for {} with the default settings (ports 443, 80, 8443; tcp and udp; orig > 3, repl <= 2; port scans){}",
        routeros_proto::format_duration(args.duration),
        if args.dry_run { ", dry run" } else { "" }
    );
    outln!("log lines follow; Ctrl-C ends early\n");

    let daemon_settings = DaemonSettings {
        loop_delay: args.loop_delay,
        log_level: LogLevel::Info,
        ..DaemonSettings::default()
    };
    let router = RouterConfig {
        name: "demo".into(),
        address: addr.to_string(),
        username: "admin".into(),
        password: Secret::new(String::new()),
        tls: None,
        tls_server_name: None,
        connect_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_secs(30),
        max_reply_rows: routeros_client::ClientConfig::DEFAULT_MAX_REPLY_ROWS,
        max_reply_bytes: routeros_client::ClientConfig::DEFAULT_MAX_REPLY_BYTES,
        settings: Settings {
            blocking: Blocking {
                dry_run: args.dry_run,
                ..Blocking::default()
            },
            cycle: CycleLimits {
                loop_delay: args.loop_delay,
                ..CycleLimits::default()
            },
            ..Settings::default()
        },
    };
    let config = Config {
        daemon: daemon_settings,
        routers: vec![router],
        record: crate::config::RecordSettings::default(),
    };
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(config));
    let shutdown = CancellationToken::new();
    // The demo keeps its state in memory: nothing is written to disk.
    let env = CycleEnv {
        store: crate::state::memory(),
        events: Events::new(),
    };
    let mut events = env.events.subscribe();
    let daemon = tokio::spawn(daemon::run(rx, shutdown.clone(), env, daemon::routeros()));

    let started = Instant::now();
    let deadline = tokio::time::sleep(args.duration);
    tokio::pin!(deadline);
    let mut blocked: BTreeMap<IpAddr, Blocked> = BTreeMap::new();
    let mut spared: BTreeMap<IpAddr, String> = BTreeMap::new();
    let (mut cycles, mut scanned, mut flagged) = (0u64, 0u64, 0u64);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = tokio::signal::ctrl_c() => break,
            ev = events.recv() => match ev {
                Ok(Event::Cycle(r)) => {
                    cycles += 1;
                    scanned += r.scanned;
                    flagged += r.flagged;
                    for b in &r.blocks {
                        blocked.entry(b.address).or_insert_with(|| Blocked {
                            at: started.elapsed(),
                            comment: b.comment.clone(),
                            outcome: match &b.result {
                                AddResult::Added => "added",
                                AddResult::WouldAdd => "would-add",
                                AddResult::AlreadyPresent => "present",
                                _ => "failed",
                            }
                            .to_owned(),
                        });
                    }
                    for s in &r.skipped {
                        if s.reason.is_safety() {
                            spared.entry(s.address).or_insert_with(|| s.reason.to_string());
                        }
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => break,
            },
        }
    }
    shutdown.cancel();
    daemon.await.context("daemon task")?;
    sim.shutdown().await;

    outln!(
        "\n== rosguard demo summary: {cycles} cycles, {scanned} rows scanned, {flagged} flagged =="
    );
    if blocked.is_empty() {
        outln!("nothing was blocked");
    } else {
        outln!("{:<28} {:>6}  {:<10} WHY", "BLOCKED", "AFTER", "OUTCOME");
        for (ip, b) in &blocked {
            outln!(
                "{:<28} {:>5}s  {:<10} {}",
                ip.to_string(),
                b.at.as_secs(),
                b.outcome,
                b.comment
            );
        }
    }
    if !spared.is_empty() {
        outln!("\n{:<28} REASON", "SPARED");
        for (ip, why) in &spared {
            outln!("{:<28} {why}", ip.to_string());
        }
    }
    outln!("\nNext: `rosguard firewall -c FILE` prints the drop rules that make the list block on a real router.");
    Ok(ExitCode::SUCCESS)
}
