//! Shared helpers: a simulator, a router config pointing at it, one cycle, a running daemon.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rosguard::config::{Config, DaemonSettings, RouterConfig};
use rosguard::cycle::{load_state, run_cycle, CycleEnv, Notes};
use rosguard::events::{Event, Events};
use rosguard::report::CycleReport;
use rosguard::state::unix_now;
use rosguard_core::backend::Backend;
use rosguard_core::decide::GuardState;
use rosguard_core::settings::Settings;
use rosguard_routeros::RouterOsBackend;
use routeros_client::Secret;
use routeros_sim::{Family, Sim, SimClock, SimConfig, SimConnection, SimHandle};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

pub async fn sim_with(cfg: SimConfig) -> SimHandle {
    Sim::start(
        SimConfig {
            clock: SimClock::Manual,
            ..cfg
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("simulator starts")
}

pub async fn sim() -> SimHandle {
    sim_with(SimConfig::default()).await
}

pub fn router_for(sim: &SimHandle, name: &str) -> RouterConfig {
    RouterConfig {
        name: name.into(),
        address: sim.local_addr().to_string(),
        username: "admin".into(),
        password: Secret::new(String::new()),
        tls: None,
        tls_server_name: None,
        connect_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_secs(30),
        max_reply_rows: routeros_client::ClientConfig::DEFAULT_MAX_REPLY_ROWS,
        max_reply_bytes: routeros_client::ClientConfig::DEFAULT_MAX_REPLY_BYTES,
        settings: Settings::default(),
    }
}

pub fn memory_env() -> CycleEnv {
    CycleEnv {
        store: rosguard::state::memory(),
        events: Events::new(),
    }
}

/// A test's connection to one router with rosguard's per-router state.
pub struct Rig {
    pub backend: RouterOsBackend,
    pub router: RouterConfig,
    pub state: GuardState,
    pub env: CycleEnv,
    pub notes: Notes,
}

impl Rig {
    pub async fn new(router: RouterConfig) -> Self {
        Self::with_env(router, memory_env()).await
    }

    pub async fn with_env(router: RouterConfig, env: CycleEnv) -> Self {
        let mut backend = RouterOsBackend::new(
            router.client_config(),
            rosguard_routeros::DEFAULT_MAX_CANDIDATES,
        );
        backend.connect().await.expect("connects to the simulator");
        let state = load_state(&env, &router.name, &router.settings, unix_now());
        Self {
            backend,
            router,
            state,
            env,
            notes: Notes::default(),
        }
    }

    pub async fn try_cycle(&mut self) -> Result<CycleReport, rosguard_core::BackendError> {
        self.try_cycle_at(unix_now()).await
    }

    pub async fn try_cycle_at(
        &mut self,
        now: Duration,
    ) -> Result<CycleReport, rosguard_core::BackendError> {
        run_cycle(
            &mut self.backend,
            &self.router.name,
            &self.router.settings,
            &mut self.state,
            &self.env,
            &mut self.notes,
            Vec::new(),
            now,
            &rosguard::cycle::Limits::default(),
        )
        .await
    }

    pub async fn cycle(&mut self) -> CycleReport {
        self.try_cycle().await.expect("cycle completes")
    }

    pub async fn cycle_at(&mut self, now: Duration) -> CycleReport {
        self.try_cycle_at(now).await.expect("cycle completes")
    }
}

pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A DPI-frozen TLS flow: orig climbing, repl stuck at 1.
pub fn frozen_tls(src: &str, dst: &str) -> SimConnection {
    SimConnection::tcp(sa(src), sa(dst)).packets(9, 1)
}

/// Addresses in a simulator's address-list.
pub fn list_addresses(sim: &SimHandle, list: &str) -> Vec<String> {
    let mut v: Vec<String> = [Family::V4, Family::V6]
        .into_iter()
        .flat_map(|f| sim.address_list(f, list))
        .map(|e| e.address)
        .collect();
    v.sort();
    v
}

/// A running daemon and its event stream.
pub struct Running {
    pub events: broadcast::Receiver<Event>,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
    pub _config: watch::Sender<Arc<Config>>,
}

impl Running {
    pub fn start(config: Config, env: CycleEnv) -> Self {
        let (tx, rx) = watch::channel(Arc::new(config));
        let events = env.events.subscribe();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(rosguard::daemon::run(
            rx,
            shutdown.clone(),
            env,
            rosguard::daemon::routeros(),
        ));
        Self {
            events,
            shutdown,
            task,
            _config: tx,
        }
    }

    /// The next event matching `f`, within a generous deadline (events, not sleeps, pace this).
    pub async fn wait_for<T>(&mut self, what: &str, mut f: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = tokio::time::sleep(Duration::from_secs(30));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => panic!("timed out waiting for {what}"),
                ev = self.events.recv() => match ev {
                    Ok(ev) => if let Some(t) = f(&ev) { return t },
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => panic!("daemon ended while waiting for {what}"),
                }
            }
        }
    }

    pub async fn cycle_of(&mut self, router: &str) -> Arc<CycleReport> {
        self.wait_for(&format!("a cycle of {router}"), |e| match e {
            Event::Cycle(r) if r.router == router => Some(r.clone()),
            _ => None,
        })
        .await
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("daemon stops")
            .unwrap();
    }
}

pub fn fast() -> DaemonSettings {
    DaemonSettings {
        loop_delay: Duration::from_millis(100),
        ..DaemonSettings::default()
    }
}

/// A config of these routers with `daemon`, their cycle limits following it.
pub fn config(daemon: DaemonSettings, mut routers: Vec<RouterConfig>) -> Config {
    for r in &mut routers {
        r.settings.cycle.loop_delay = daemon.loop_delay;
        r.settings.cycle.max_conn_per_cycle = daemon.max_conn_per_cycle;
        r.settings.cycle.reconcile_interval = daemon.reconcile_interval;
    }
    Config {
        daemon,
        routers,
        record: rosguard::config::RecordSettings::default(),
    }
}

/// The simulator's connection tables as another API client reads them: (src, dst) of every
/// row, sorted. Claims of removal are checked against this, not against rosguard's counters.
pub async fn table(sim: &SimHandle) -> Vec<(String, String)> {
    let client = routeros_client::Client::connect(routeros_client::ClientConfig::new(
        "observer",
        sim.local_addr().to_string(),
        "admin",
        Secret::new(String::new()),
    ))
    .await
    .expect("an observer connects");
    let mut out = Vec::new();
    for f in [rosguard_core::Family::V4, rosguard_core::Family::V6] {
        let cmd = routeros_proto::Command::new(&f.path("firewall/connection/print"))
            .proplist(rosguard_routeros::CONNECTION_PROPLIST);
        let rows = client.call(cmd).await.expect("the table prints").rows;
        for r in &rows {
            let c = rosguard_routeros::connection(r, f).expect("a readable row");
            out.push((c.src.to_string(), c.dst.to_string()));
        }
    }
    client.close().await;
    out.sort();
    out
}

/// The rosguard binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_rosguard");
/// The environment variable the binary tests' configs name for the router password.
pub const PASSWORD_VAR: &str = "ROSGUARD_TEST_PASSWORD";

/// The binary with a clean environment for config and state: no `-c`, no `--state`, no
/// `RUST_LOG`, so it finds both the way an admin's shell does.
pub fn bare(args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(BIN);
    c.args(args)
        .env(PASSWORD_VAR, "")
        .env_remove("RUST_LOG")
        .env_remove("ROSGUARD_CONFIG")
        .env_remove("ROSGUARD_STATE")
        .env_remove("STATE_DIRECTORY")
        .stdin(std::process::Stdio::null());
    c
}

/// (success, stdout, stderr) of a finished command.
pub async fn output(mut c: tokio::process::Command) -> (bool, String, String) {
    let out = c.output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Log lines, for the promises about what is logged.
#[derive(Clone, Default)]
pub struct Captured(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Captures this thread's log lines, at debug and above, until the guard is dropped.
    pub fn install() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    pub fn lines_with(&self, level: &str, needle: &str) -> usize {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        text.lines()
            .filter(|l| l.contains(level) && l.contains(needle))
            .count()
    }
}

/// (address, timeout, level, comment) of a block, live or replayed, to compare the two.
pub type Block = (String, String, u32, String);

/// The new blocks of a live cycle.
pub fn live_blocks(r: &rosguard::report::CycleReport) -> Vec<Block> {
    r.new_blocks()
        .map(|b| {
            (
                b.address.to_string(),
                routeros_proto::format_duration(b.timeout),
                b.level,
                b.comment.clone(),
            )
        })
        .collect()
}

/// One block of a replay.
pub fn replayed_block(b: &rosguard::admin::ReplayBlock) -> Block {
    (
        b.address.to_string(),
        b.timeout.clone(),
        b.level,
        b.comment.clone(),
    )
}

/// The blocks of a replay.
pub fn replayed_blocks(o: &rosguard::admin::ReplayOutcome) -> Vec<Block> {
    o.blocks.iter().map(replayed_block).collect()
}
