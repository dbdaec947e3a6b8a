//! The `rosguard` command line: parses arguments, installs logging and signal handling, and
//! hands checked settings to the library's daemon, one-shot commands or demo.

use rosguard::outln;
use rosguard::{admin, config, daemon, demo, logging, metrics};

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use std::sync::Mutex;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use rosguard::cycle::CycleEnv;
use rosguard_store::Store;
use tokio_util::sync::CancellationToken;

use rosguard::config::{read_config, LogLevel};
use rosguard::logging::LogFormat;

/// Detects asymmetric connections (failed TLS handshakes, scans, floods) in a MikroTik router's
/// connection table and blocks them through an address-list, over the RouterOS API.
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

    /// Directory of the state store (block history, counters); overrides daemon.state_dir.
    #[arg(long, global = true, value_name = "DIR", env = "ROSGUARD_STATE")]
    state: Option<PathBuf>,

    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// The config file (TOML). See the README's configuration reference.
    #[arg(short, long, value_name = "FILE", env = "ROSGUARD_CONFIG")]
    config: PathBuf,
}

#[derive(Debug, Args)]
struct RouterArg {
    /// Only this router (a [[router]] name from the config); default: every router.
    #[arg(long, value_name = "NAME")]
    router: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the daemon: watch every configured router until SIGTERM or Ctrl-C.
    ///
    /// SIGHUP reloads the config file; a bad new config is reported and the old one kept.
    /// SIGTERM and SIGINT stop after the current cycle.
    Run {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        router: RouterArg,
    },
    /// Run one cycle and print what was done (or, with --dry-run, what would be done).
    ///
    /// Exits 0 after a completed cycle on every selected router, non-zero when a router cannot
    /// be reached, logged into or read.
    Once {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        router: RouterArg,
        /// Decide and report, but change nothing on the router.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check the config file and exit 0, or print the problem and exit 1.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArg,
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
    /// Remove an address from the block address-list.
    Unblock {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        router: RouterArg,
        /// The address to unblock (IPv4 or IPv6).
        address: String,
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
    /// Explain why an address was blocked: its block history with the evidence, in plain words.
    Why {
        /// The config file (for daemon.state_dir); --state alone also works.
        #[arg(short, long, value_name = "FILE", env = "ROSGUARD_CONFIG")]
        config: Option<PathBuf>,
        /// The address (IPv4 or IPv6).
        address: String,
        /// Print the raw history as JSON.
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
    /// the side that block_target puts in the list (dst-address-list for "dst"). Installed
    /// rules carry a signature comment, so --install is idempotent and --remove is exact.
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
    /// Run the RouterOS API simulator on its own (for tests, benchmarks and experiments).
    Sim(routeros_sim::SimArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", daemon::one_line(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// Opens the state store: `--state`, else the config's `daemon.state_dir`, else the default.
fn open_store(cfg: &config::Config, state: &Option<PathBuf>) -> Result<Arc<Mutex<Store>>> {
    let dir = state
        .clone()
        .unwrap_or_else(|| cfg.daemon.resolved_state_dir());
    let path = dir.join("rosguard.db");
    let store = Store::open(&path).map_err(|e| {
        anyhow::anyhow!("{e}; choose another directory with --state DIR or daemon.state_dir")
    })?;
    Ok(Arc::new(Mutex::new(store)))
}

/// The store, metrics and shared-block channel for commands that change the router.
///
/// Protecting the network matters more than remembering that it did: when the state file
/// cannot be opened, rosguard says so loudly and keeps its state in memory.
fn cycle_env(cfg: &config::Config, state: &Option<PathBuf>) -> Result<CycleEnv> {
    let store = match open_store(cfg, state) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(
                "{}; running without persistent state: history, escalation and restores after a restart are lost",
                daemon::one_line(e.as_ref())
            );
            Arc::new(Mutex::new(Store::open_in_memory()?))
        }
    };
    Ok(CycleEnv {
        store: Some(store),
        ..CycleEnv::default()
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// What every command shares from the command line.
struct GlobalOpts {
    log_format: LogFormat,
    state: Option<PathBuf>,
}

/// The log level of the one-shot admin commands: their output is the report.
const QUIET: Option<LogLevel> = Some(LogLevel::Warning);

/// The shape of every one-shot command: read the config, install logging (`level`, or the
/// config's), open the state store when the command uses it, and run `job` to completion.
fn one_shot<F, Fut>(
    path: &Path,
    level: Option<LogLevel>,
    uses_state: bool,
    opts: &GlobalOpts,
    job: F,
) -> Result<ExitCode>
where
    F: FnOnce(config::Config, CycleEnv) -> Fut,
    Fut: std::future::Future<Output = Result<ExitCode>>,
{
    let cfg = read_config(path)?;
    logging::init(level.unwrap_or(cfg.daemon.log_level), opts.log_format)?;
    let env = if uses_state {
        cycle_env(&cfg, &opts.state)?
    } else {
        CycleEnv::default()
    };
    runtime()?.block_on(job(cfg, env))
}

fn real_main(cli: Cli) -> Result<ExitCode> {
    let opts = GlobalOpts {
        log_format: cli.log_format,
        state: cli.state,
    };
    match cli.command {
        Cmd::CheckConfig { config } => {
            let cfg = read_config(&config.config)?;
            outln!("{}: OK", config.config.display());
            for r in &cfg.routers {
                outln!(
                    "  router {:?}: {} as {}{}{}",
                    r.name,
                    r.address,
                    r.username,
                    if r.tls.is_some() { ", TLS" } else { "" },
                    if r.blocking.dry_run { ", dry run" } else { "" }
                );
            }
            if cfg.routers.is_empty() {
                outln!("  no [[router]] yet: `run` and `once` need at least one");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run { config, router } => {
            let cfg = read_config(&config.config)?;
            let handle = logging::init(cfg.daemon.log_level, opts.log_format)?;
            cfg.select(router.router.as_deref())?;
            let env = cycle_env(&cfg, &opts.state)?;
            runtime()?.block_on(run_daemon(config.config, router.router, cfg, handle, env))
        }
        Cmd::Once {
            config,
            router,
            dry_run,
            json,
        } => one_shot(&config.config, None, true, &opts, |cfg, env| async move {
            admin::once(&cfg, router.router.as_deref(), dry_run, json, &env).await
        }),
        Cmd::List {
            config,
            router,
            json,
        } => one_shot(&config.config, QUIET, false, &opts, |cfg, _| async move {
            admin::list(&cfg, router.router.as_deref(), json).await
        }),
        Cmd::Unblock {
            config,
            router,
            address,
        } => one_shot(&config.config, QUIET, true, &opts, |cfg, env| async move {
            admin::unblock(&cfg, router.router.as_deref(), &address, &env).await
        }),
        Cmd::Clear {
            config,
            router,
            all,
        } => one_shot(&config.config, QUIET, true, &opts, |cfg, env| async move {
            admin::clear(&cfg, router.router.as_deref(), all, &env).await
        }),
        Cmd::Stats {
            config,
            router,
            json,
        } => one_shot(&config.config, QUIET, true, &opts, |cfg, env| async move {
            admin::stats(&cfg, router.router.as_deref(), json, &env).await
        }),
        Cmd::Why {
            config,
            address,
            json,
        } => {
            let cfg = match &config {
                Some(path) => read_config(path)?,
                None => config::Config::defaults(),
            };
            let store = open_store(&cfg, &opts.state)?;
            let store = store
                .lock()
                .map_err(|_| anyhow::anyhow!("state store lock poisoned"))?;
            admin::why(&store, &address, json)
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
            one_shot(&config.config, QUIET, false, &opts, |cfg, _| async move {
                admin::firewall(&cfg, router.router.as_deref(), action).await
            })
        }
        Cmd::Demo(args) => {
            logging::init(LogLevel::Info, opts.log_format)?;
            runtime()?.block_on(demo::run(args))
        }
        Cmd::Sim(args) => {
            logging::init(LogLevel::Info, opts.log_format)?;
            runtime()?.block_on(async {
                routeros_sim::run_cli(args, shutdown_signal()).await?;
                Ok(ExitCode::SUCCESS)
            })
        }
    }
}

/// The keys a reload cannot apply to a running daemon.
fn restart_only_changes(
    running: &config::DaemonSettings,
    new: &config::Config,
) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if running.state_dir != new.daemon.state_dir {
        keys.push("state_dir");
    }
    if running.metrics_listen != new.daemon.metrics_listen {
        keys.push("metrics_listen");
    }
    if running.share_blocks != new.daemon.share_blocks {
        keys.push("share_blocks");
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

/// `rosguard run`: the daemon, with SIGHUP reload and orderly shutdown.
async fn run_daemon(
    path: PathBuf,
    only: Option<String>,
    cfg: config::Config,
    log: logging::LogHandle,
    mut env: CycleEnv,
) -> Result<ExitCode> {
    let narrow = |mut c: config::Config| -> Result<config::Config> {
        if let Some(name) = &only {
            c.select(Some(name))?;
            c.routers.retain(|r| &r.name == name);
        }
        Ok(c)
    };
    let cfg = narrow(cfg)?;
    tracing::info!(
        "rosguard {} starting with {} router(s)",
        env!("CARGO_PKG_VERSION"),
        cfg.routers.len()
    );
    let shutdown = CancellationToken::new();
    if cfg.daemon.share_blocks {
        env.share = Some(tokio::sync::broadcast::channel(4096).0);
    }
    let health = Arc::new(Mutex::new(metrics::HealthSpec::for_config(&cfg)));
    let mut metrics_task = None;
    if let Some(addr) = cfg.daemon.metrics_listen {
        let listener = metrics::bind(addr).await?;
        let m = Arc::new(metrics::Metrics::default());
        env.metrics = Some(m.clone());
        tracing::info!("serving /metrics and /health on http://{addr}");
        metrics_task = Some(tokio::spawn(metrics::serve(
            listener,
            m,
            health.clone(),
            shutdown.clone(),
        )));
    }
    let running = cfg.daemon.clone();
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(cfg));
    let daemon = tokio::spawn(daemon::run(rx, shutdown.clone(), None, env));

    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        #[cfg(unix)]
        let reload = hup.recv();
        #[cfg(not(unix))]
        let reload = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = &mut stop => {
                tracing::warn!("stopping after the current cycle");
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
                Err(e) => tracing::error!(
                    "reload failed, keeping the running config: {}",
                    daemon::one_line(e.as_ref())
                ),
            },
        }
    }
    shutdown.cancel();
    daemon.await?;
    if let Some(t) = metrics_task {
        t.await?;
    }
    tracing::warn!("stopped");
    Ok(ExitCode::SUCCESS)
}
