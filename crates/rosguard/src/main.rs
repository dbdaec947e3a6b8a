//! The `rosguard` command line: parses arguments, installs logging and signal handling, and
//! hands checked settings to the library's daemon, one-shot commands or demo.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use rosguard::config::{read_config, read_config_with, Config, LogLevel, Secrets, DEFAULT_CONFIG};
use rosguard::cycle::CycleEnv;
use rosguard::events::Events;
use rosguard::logging::{self, LogFormat};
use rosguard::state::{self, secs, unix_now};
use rosguard::{admin, daemon, demo, metrics, outln};
use tokio_util::sync::CancellationToken;

/// Detects asymmetric connections (failed TLS handshakes behind a DPI freeze, swallowed QUIC,
/// floods) and port scans in a MikroTik router's connection table and blocks them through an
/// address-list, over the RouterOS API.
#[derive(Debug, Parser)]
#[command(
    name = "rosguard",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,

    /// Directory of the state store (block history, unblocks, counters); overrides
    /// daemon.state_dir. Default: daemon.state_dir, $STATE_DIRECTORY, /var/lib/rosguard.
    #[arg(long, global = true, value_name = "DIR", env = "ROSGUARD_STATE")]
    state: Option<PathBuf>,

    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// The config file (TOML). See the README's configuration reference.
    #[arg(short, long, value_name = "FILE", env = "ROSGUARD_CONFIG", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
}

#[derive(Debug, Args)]
struct RouterArg {
    /// Only this router (a [[router]] name from the config); default: every router.
    #[arg(long, value_name = "NAME")]
    router: Option<String>,
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    routeros_proto::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the daemon: watch every configured router until SIGTERM or Ctrl-C.
    ///
    /// SIGHUP reloads the config file; a bad new config is reported and the old one kept.
    /// SIGTERM and SIGINT stop at once: a cycle in progress is abandoned (nothing of it is
    /// half-recorded). Only one daemon runs per state directory.
    Run {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        router: RouterArg,
    },
    /// Run one cycle and print what was done (or, with --dry-run, what would be done).
    ///
    /// Exits 0 after a completed cycle on every selected router, non-zero when a router cannot
    /// be reached, logged into or read, or refused every add.
    Once {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        router: RouterArg,
        /// Decide and report, but change nothing on the router.
        #[arg(long)]
        dry_run: bool,
        /// Print the reports as JSON (one object per router: its report, or its error).
        #[arg(long)]
        json: bool,
    },
    /// Record one router's polls to a file, to replay offline (`rosguard replay`).
    ///
    /// Every loop_delay it reads the connection tables under a loose pre-filter (rows with
    /// at most 10 replies, or the config's max_repl_packets if higher, any port; the stall
    /// rule's flows; unanswered TCP attempts) plus the router's addresses, protected
    /// addresses, allowlist and block list. It changes nothing on the router. Stops after
    /// --duration, or at Ctrl-C or SIGTERM; a file cut short stays readable.
    Record {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        router: RouterArg,
        /// How long to record (RouterOS duration: 10m, 1h, 1d).
        #[arg(long, value_name = "DURATION", value_parser = duration_arg, default_value = "1h")]
        duration: Duration,
        /// The recording file to write.
        #[arg(short, long, value_name = "FILE", default_value = "rosguard.rec")]
        output: PathBuf,
    },
    /// Replay a recording through the daemon's decisions: what would have been blocked.
    ///
    /// Runs the same cycle as `run` on the recording's clock (no waiting), with the
    /// detection and blocking settings of -c CONFIG (its router of the recorded name, or
    /// --router), or the defaults. Needs no router and no password. Settings looser than
    /// what the recording kept are reported as NOT ANSWERED.
    Replay {
        /// The recording (from `rosguard record`).
        file: PathBuf,
        /// The config whose settings to replay (default: the built-in defaults).
        #[arg(short, long, value_name = "CONFIG")]
        config: Option<PathBuf>,
        /// A second config: print what each blocks and the difference.
        #[arg(long, value_name = "CONFIG2")]
        compare: Option<PathBuf>,
        #[command(flatten)]
        router: RouterArg,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Sweep the detection settings over a recording: what each would have blocked.
    ///
    /// Replays the recording under every combination of the values below (the daemon's own
    /// decisions, on the recording's clock), starting from the settings of -c CONFIG (or the
    /// defaults), and prints per setting the addresses blocked, the block-hours and how many
    /// flagged addresses the allowlist caught; with --labels, true and false positives,
    /// precision and recall. It marks the frontier (settings no other beats on both) and
    /// suggests one, as TOML for [detection]. Settings looser than the recording kept are
    /// NOT ANSWERED. A grid of more than 5000 settings is refused. Changes nothing.
    Tune {
        /// The recording (from `rosguard record` or the daemon's [record]).
        file: PathBuf,
        /// The config whose other settings to keep (default: the built-in defaults).
        #[arg(short, long, value_name = "CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        router: RouterArg,
        /// Known good and bad addresses: lines `good ADDRESS[/PREFIX]`, `bad ADDRESS`, or
        /// `bad SRC -> DST[:PORT]` (labels the flow's remote end); or the lab's labels.json.
        #[arg(long, value_name = "FILE")]
        labels: Option<PathBuf>,
        /// Also draw the sweep as a PNG scatter plot (caught against wrongly caught).
        #[arg(long, value_name = "OUT.png")]
        chart: Option<PathBuf>,
        /// Values of detection.min_orig_packets to try.
        #[arg(
            long,
            value_name = "N,..",
            value_delimiter = ',',
            default_value = "2,3,5,8"
        )]
        min_orig_packets: Vec<u64>,
        /// Values of detection.max_repl_packets to try.
        #[arg(
            long,
            value_name = "N,..",
            value_delimiter = ',',
            default_value = "0,1,2,4"
        )]
        max_repl_packets: Vec<u64>,
        /// Values of detection.min_observations to try.
        #[arg(
            long,
            value_name = "N,..",
            value_delimiter = ',',
            default_value = "1,2,3"
        )]
        min_observations: Vec<u32>,
        /// Values of detection.min_flagged_connections to try.
        #[arg(
            long,
            value_name = "N,..",
            value_delimiter = ',',
            default_value = "1,2,3"
        )]
        min_flagged_connections: Vec<u32>,
        /// Values of detection.window to try (where min_flagged_connections > 1).
        #[arg(long, value_name = "DURATION,..", value_delimiter = ',', value_parser = duration_arg, default_value = "1m,5m")]
        window: Vec<Duration>,
        /// Print every setting, not only the frontier, the current and the suggested.
        #[arg(long)]
        all: bool,
        /// Print the sweep as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check the config file and exit 0, or print the problem and exit 1.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArg,
        /// Print the effective settings of every router, overrides applied (TOML).
        #[arg(long)]
        print: bool,
    },
    /// List the entries of the block address-list: address, remaining timeout, comment.
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        router: RouterArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Unblock an address: remove it from the block list and its connections from the table,
    /// and keep rosguard from blocking it again for a while (the running daemon honours it).
    Unblock {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        router: RouterArg,
        /// The address to unblock (IPv4 or IPv6).
        address: String,
        /// How long rosguard must not block it again (RouterOS duration: 12h, 1w, ...);
        /// default: blocking.unblock_hold (1w).
        #[arg(long = "for", value_name = "DURATION", value_parser = duration_arg)]
        hold: Option<Duration>,
        /// Why (shown by `rosguard why`).
        #[arg(long)]
        comment: Option<String>,
    },
    /// Block an address by hand, through the same safety checks as rosguard's own blocks.
    Block {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        router: RouterArg,
        /// The address to block (IPv4 or IPv6).
        address: String,
        /// How long (default: blocking.block_timeout).
        #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
        timeout: Option<Duration>,
        /// Why (put on the entry and shown by `rosguard why`).
        #[arg(long)]
        comment: Option<String>,
        /// Block it even if it is allowlisted, local, a LAN host, a gateway or a DNS server.
        #[arg(long)]
        force: bool,
    },
    /// Allow an address for good: add it to the router's allowlist and lift any block.
    Allow {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        router: RouterArg,
        /// The address to allow (IPv4 or IPv6).
        address: String,
        /// Why (put on the allowlist entry).
        #[arg(long)]
        comment: Option<String>,
    },
    /// Remove rosguard's entries from the block address-list (with --all: every entry).
    Clear {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        router: RouterArg,
        /// Remove every entry of the list, including ones rosguard did not add.
        #[arg(long)]
        all: bool,
    },
    /// Explain why an address was blocked: its history with the evidence, in plain words.
    ///
    /// Reads the state store only: no router, no password needed.
    Why {
        #[command(flatten)]
        config: ConfigArg,
        /// The address (IPv4 or IPv6).
        address: String,
        /// Print the raw history as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show whether the daemon runs and, per router, its last cycle, connection, list size
    /// and caps, from what the daemon records (no router password needed).
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show counters from the router and the state store: list sizes, connection table size,
    /// router health, what rosguard did so far and which caps were hit.
    Stats {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        router: RouterArg,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print (or install, or remove) the firewall filter rules that make the list block.
    ///
    /// rosguard only fills an address-list; these drop rules make it take effect. They match
    /// the side that block_target puts in the list; with detection.scan.staging_list set, two
    /// psd rules stage port scanners for rosguard. Installed rules carry a signature comment,
    /// so --install is idempotent and --remove is exact.
    Firewall {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        router: RouterArg,
        /// Add the missing rules on the router (at the top of the filter table).
        #[arg(long, conflicts_with = "remove")]
        install: bool,
        /// Remove the rules rosguard installed.
        #[arg(long)]
        remove: bool,
    },
    /// Run the built-in simulator and the daemon against it: no router, no config needed.
    Demo(demo::DemoArgs),
    /// Run the RouterOS API simulator on its own (for tests, benchmarks and experiments), or
    /// serve a recording as a live router (--replay) to reproduce what rosguard saw.
    Sim(Box<SimCmd>),
}

#[derive(Debug, Args)]
struct SimCmd {
    #[command(flatten)]
    sim: routeros_sim::SimArgs,

    /// Serve this recording (from `rosguard record`) as the router: each poll's connection
    /// rows at its recorded time (real speed), with the router's addresses, default gateways,
    /// DNS servers, allowlist and the block list of the first poll. Point `rosguard once` or
    /// `run` at --listen to see what the router saw. The tables hold only the rows the
    /// recording kept (its pre-filter), not the whole table.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["scenario", "connections", "conntrack_netns"]
    )]
    replay: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = cli.log_format;
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            let text = rosguard::output::printable(&format!("{e:#}"));
            logging::fatal(format, &text);
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// The log level of the one-shot admin commands: their output is the report.
const QUIET: LogLevel = LogLevel::Warning;

/// A one-shot command that talks to routers: config (with passwords), logging, a runtime.
fn with_routers<F, Fut>(
    path: &Path,
    level: Option<LogLevel>,
    format: LogFormat,
    job: F,
) -> Result<ExitCode>
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = Result<ExitCode>>,
{
    // Logging first, so that what reading the config warns about is seen.
    let log = logging::init(level.unwrap_or_default(), format)?;
    let cfg = read_config(path)?;
    log.set_level(level.unwrap_or(cfg.daemon.log_level));
    runtime()?.block_on(job(cfg))
}

fn real_main(cli: Cli) -> Result<ExitCode> {
    let format = cli.log_format;
    let state_flag = cli.state;
    let state_for = |cfg: &Config| state::state_dir(cfg, state_flag.as_deref());
    match cli.command {
        Cmd::CheckConfig { config, print } => {
            let cfg = read_config(&config.config)?;
            if print {
                outln!("{}", cfg.effective_toml()?);
                return Ok(ExitCode::SUCCESS);
            }
            outln!("{}: OK", config.config.display());
            for r in &cfg.routers {
                outln!(
                    "  router {:?}: {} as {}{}{}",
                    r.name,
                    r.address,
                    r.username,
                    if r.tls.is_some() { ", TLS" } else { "" },
                    if r.settings.blocking.dry_run {
                        ", dry run"
                    } else {
                        ""
                    }
                );
            }
            outln!("  state: {}", state_for(&cfg).display());
            if let Some(d) = &cfg.record.dir {
                outln!(
                    "  recording: {}/<router>.rec, {} bytes a file, {} older files kept",
                    d.display(),
                    cfg.record.max_bytes,
                    cfg.record.keep
                );
            }
            if cfg.routers.is_empty() {
                outln!("  no [[router]] yet: `run` and `once` need at least one");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run { config, router } => {
            let log = logging::init(LogLevel::default(), format)?;
            let cfg = read_config(&config.config)?;
            log.set_level(cfg.daemon.log_level);
            cfg.select(router.router.as_deref())?;
            let dir = state_for(&cfg);
            runtime()?.block_on(run_daemon(config.config, router.router, cfg, log, dir))
        }
        Cmd::Once {
            config,
            router,
            dry_run,
            json,
        } => with_routers(&config.config, None, format, |cfg| async move {
            let dir = state_for(&cfg);
            // A real cycle is a writer like the daemon: not while one runs on this state.
            let _lock = if dry_run { None } else { state::lock(&dir)? };
            let env = CycleEnv {
                store: state::open_daemon(&dir)?,
                events: Events::new(),
            };
            admin::once(&cfg, router.router.as_deref(), dry_run, json, &env).await
        }),
        Cmd::Record {
            config,
            router,
            duration,
            output,
        } => with_routers(&config.config, Some(QUIET), format, |cfg| async move {
            admin::record(&cfg, router.router.as_deref(), duration, &output).await
        }),
        Cmd::Replay {
            file,
            config,
            compare,
            router,
            json,
        } => {
            logging::init(LogLevel::Error, format)?;
            let read = |p: &Option<PathBuf>| -> Result<Option<Config>> {
                p.as_deref()
                    .map(|p| rosguard::config::read_config_with(p, rosguard::config::Secrets::Skip))
                    .transpose()
            };
            let (a, b) = (read(&config)?, read(&compare)?);
            runtime()?.block_on(admin::replay(
                &file,
                a.as_ref(),
                b.as_ref(),
                router.router.as_deref(),
                json,
            ))
        }
        Cmd::Tune {
            file,
            config,
            router,
            labels,
            chart,
            min_orig_packets,
            max_repl_packets,
            min_observations,
            min_flagged_connections,
            window,
            all,
            json,
        } => {
            logging::init(LogLevel::Error, format)?;
            let cfg = config
                .as_deref()
                .map(|p| rosguard::config::read_config_with(p, rosguard::config::Secrets::Skip))
                .transpose()?;
            let grid = admin::Grid {
                min_orig_packets,
                max_repl_packets,
                min_observations,
                min_flagged_connections,
                window,
            };
            admin::tune(
                &file,
                cfg.as_ref(),
                router.router.as_deref(),
                &grid,
                labels.as_deref(),
                chart.as_deref(),
                all,
                json,
            )
        }
        Cmd::List {
            config,
            router,
            json,
        } => with_routers(&config.config, Some(QUIET), format, |cfg| async move {
            admin::list(&cfg, router.router.as_deref(), json).await
        }),
        Cmd::Unblock {
            config,
            router,
            address,
            hold,
            comment,
        } => with_routers(&config.config, Some(QUIET), format, |cfg| async move {
            let store = Arc::new(Mutex::new(state::open_writer(&state_for(&cfg))?));
            admin::unblock(
                &cfg,
                router.router.as_deref(),
                &address,
                hold,
                comment.as_deref(),
                &store,
            )
            .await
        }),
        Cmd::Block {
            config,
            router,
            address,
            timeout,
            comment,
            force,
        } => with_routers(&config.config, Some(QUIET), format, |cfg| async move {
            let store = Arc::new(Mutex::new(state::open_writer(&state_for(&cfg))?));
            let args = admin::BlockArgs {
                timeout,
                comment,
                force,
            };
            admin::block(&cfg, router.router.as_deref(), &address, &args, &store).await
        }),
        Cmd::Allow {
            config,
            router,
            address,
            comment,
        } => with_routers(&config.config, Some(QUIET), format, |cfg| async move {
            let store = Arc::new(Mutex::new(state::open_writer(&state_for(&cfg))?));
            admin::allow(
                &cfg,
                router.router.as_deref(),
                &address,
                comment.as_deref(),
                &store,
            )
            .await
        }),
        Cmd::Clear {
            config,
            router,
            all,
        } => with_routers(&config.config, Some(QUIET), format, |cfg| async move {
            let store = Arc::new(Mutex::new(state::open_writer(&state_for(&cfg))?));
            admin::clear(&cfg, router.router.as_deref(), all, &store).await
        }),
        Cmd::Stats {
            config,
            router,
            json,
        } => with_routers(&config.config, Some(QUIET), format, |cfg| async move {
            let store = state::open_reader(&state_for(&cfg)).ok();
            admin::stats(&cfg, router.router.as_deref(), json, store.as_ref()).await
        }),
        Cmd::Why {
            config,
            address,
            json,
        } => {
            let cfg = read_config_with(&config.config, Secrets::Skip)?;
            logging::init(QUIET, format)?;
            let store = state::open_reader(&state_for(&cfg))?;
            admin::why(&store, &address, json)
        }
        Cmd::Status { config, json } => {
            let cfg = read_config_with(&config.config, Secrets::Skip)?;
            logging::init(QUIET, format)?;
            let store = state::open_reader(&state_for(&cfg)).ok();
            admin::status(&cfg, store.as_ref(), json)
        }
        Cmd::Firewall {
            config,
            router,
            install,
            remove,
        } => {
            let action = if install {
                admin::FirewallAction::Install
            } else if remove {
                admin::FirewallAction::Remove
            } else {
                admin::FirewallAction::Print
            };
            if action == admin::FirewallAction::Print {
                // Printing needs no router and no password.
                let cfg = read_config_with(&config.config, Secrets::Skip)?;
                logging::init(QUIET, format)?;
                return runtime()?.block_on(admin::firewall(
                    &cfg,
                    router.router.as_deref(),
                    action,
                ));
            }
            with_routers(&config.config, Some(QUIET), format, |cfg| async move {
                admin::firewall(&cfg, router.router.as_deref(), action).await
            })
        }
        Cmd::Demo(args) => {
            logging::init(LogLevel::Info, format)?;
            runtime()?.block_on(demo::run(args))
        }
        Cmd::Sim(cmd) => {
            logging::init(LogLevel::Info, format)?;
            let feed = cmd
                .replay
                .as_deref()
                .map(rosguard::sim_replay::ReplayFeed::open)
                .transpose()?;
            runtime()?.block_on(async {
                match feed {
                    Some(feed) => {
                        routeros_sim::run_cli_with(cmd.sim, shutdown_signal(), feed).await?
                    }
                    None => routeros_sim::run_cli(cmd.sim, shutdown_signal()).await?,
                }
                Ok(ExitCode::SUCCESS)
            })
        }
    }
}

/// The keys a reload cannot apply to a running daemon. (`[record]` is not one: each router's
/// recording follows the config at its next poll.)
fn restart_only_changes(
    running: &rosguard::config::DaemonSettings,
    new: &Config,
) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if running.state_dir != new.daemon.state_dir {
        keys.push("state_dir");
    }
    if running.metrics_listen != new.daemon.metrics_listen {
        keys.push("metrics_listen");
    }
    if running.metrics_max_connections != new.daemon.metrics_max_connections {
        keys.push("metrics_max_connections");
    }
    if running.max_candidates != new.daemon.max_candidates {
        keys.push("max_candidates");
    }
    keys
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `rosguard run`: the daemon, with SIGHUP reload and prompt shutdown.
async fn run_daemon(
    path: PathBuf,
    only: Option<String>,
    cfg: Config,
    log: logging::LogHandle,
    dir: PathBuf,
) -> Result<ExitCode> {
    // A config without routers is refused at start and at every reload alike.
    let narrow = |mut c: Config| -> Result<Config> {
        c.select(only.as_deref())?;
        if let Some(name) = &only {
            c.routers.retain(|r| &r.name == name);
        }
        Ok(c)
    };
    let cfg = narrow(cfg)?;
    let _lock = state::lock(&dir)?;
    tracing::warn!(
        "rosguard {} starting with {} router(s), state in {}",
        env!("CARGO_PKG_VERSION"),
        cfg.routers.len(),
        dir.display()
    );
    let store = state::open_daemon(&dir)?;
    if let Ok(mut s) = store.lock() {
        let me = serde_json::json!({
            "pid": std::process::id(),
            "version": env!("CARGO_PKG_VERSION"),
            "started_unix": secs(unix_now()),
            "routers": cfg.routers.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
        });
        if let Err(e) = s.set_status("", &me, secs(unix_now())) {
            tracing::error!("state store: {e}");
        }
    }
    let shutdown = CancellationToken::new();
    let events = Events::new();
    let health = Arc::new(Mutex::new(metrics::HealthSpec::for_config(&cfg)));
    let mut side_tasks = Vec::new();
    if let Some(addr) = cfg.daemon.metrics_listen {
        let listener = metrics::bind(addr).await?;
        let m = Arc::new(metrics::Metrics::default());
        side_tasks.push(tokio::spawn(
            m.clone().follow(events.subscribe(), shutdown.clone()),
        ));
        tracing::info!("serving /metrics and /health on http://{addr}");
        side_tasks.push(tokio::spawn(metrics::serve(
            listener,
            m,
            health.clone(),
            cfg.daemon.metrics_max_connections,
            shutdown.clone(),
        )));
    }
    let running = cfg.daemon.clone();
    let env = CycleEnv { store, events };
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(cfg));
    // SIGHUP is caught before the daemon connects: a reload sent as soon as it logs must not
    // meet the default action (termination).
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let daemon = tokio::spawn(daemon::run(rx, shutdown.clone(), env, daemon::routeros()));

    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        #[cfg(unix)]
        let reload = hup.recv();
        #[cfg(not(unix))]
        let reload = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = &mut stop => {
                tracing::warn!("stopping");
                break;
            }
            _ = reload => match read_config(&path).and_then(narrow) {
                Ok(new) => {
                    for key in restart_only_changes(&running, &new) {
                        tracing::warn!("daemon.{key} changed: it takes effect at the next restart");
                    }
                    log.set_level(new.daemon.log_level);
                    if let Ok(mut h) = health.lock() {
                        *h = metrics::HealthSpec::for_config(&new);
                    }
                    tracing::warn!("reloaded {} ({} router(s))", path.display(), new.routers.len());
                    let _ = tx.send(Arc::new(new));
                }
                Err(e) => tracing::error!("reload failed, keeping the running config: {e:#}"),
            },
        }
    }
    shutdown.cancel();
    daemon.await.context("the daemon task")?;
    for t in side_tasks {
        let _ = t.await;
    }
    tracing::warn!("stopped");
    Ok(ExitCode::SUCCESS)
}
