//! `rosguard sim`: the command-line face of the simulator (clap arguments and a run function
//! the binary crate mounts).
//!
//! It turns flags into a [`SimConfig`], starts the simulator, prints one line saying where it
//! listens (and the TLS fingerprint), and serves until the shutdown future completes. A crate
//! the simulator does not depend on can run a [`Feed`] beside it ([`run_cli_with`]): rosguard
//! serves a recording this way (`rosguard sim --replay FILE`). It deliberately installs no
//! signal handler and no logger: the binary owns those.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context as _;

use crate::config::{SimConfig, SimTls};
use crate::generate::GenerateSpec;
use crate::kernel::ConntrackReader;
use crate::kernel_bridge::KernelBridge;
use crate::kinds::{AddressFormat, FastTrackCounters, QueryCompare, SimClock};
use crate::scenario::Scenario;
use crate::server::{Sim, SimHandle};

/// A source of connections that [`run_cli_with`] runs beside the simulator, for a crate the
/// simulator does not depend on (rosguard's replay of a recording). It shapes the
/// configuration, names itself on the start line, then feeds the running simulator through
/// its [`SimHandle`] until told to stop.
pub trait Feed {
    /// Changes the configuration the flags made before the simulator starts; what a flag set
    /// should stay as the flag said. An error stops the start.
    fn configure(&self, cfg: &mut SimConfig) -> anyhow::Result<()>;

    /// What it serves, for the start line (`replaying FILE`).
    fn describe(&self) -> String;

    /// Starts feeding `sim`. Called once the simulator listens and before the start line is
    /// printed, so what it does before returning comes before any client is told where to
    /// connect. The future runs until `stop` is cancelled and is awaited at shutdown.
    fn start(
        self,
        sim: SimHandle,
        stop: tokio_util::sync::CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static;
}

/// No feed: [`run_cli`].
enum NoFeed {}

impl Feed for NoFeed {
    fn configure(&self, _: &mut SimConfig) -> anyhow::Result<()> {
        match *self {}
    }

    fn describe(&self) -> String {
        match *self {}
    }

    async fn start(self, _: SimHandle, _: tokio_util::sync::CancellationToken) {
        match self {}
    }
}

/// Address format names for `--address-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AddressFormatArg {
    /// `src-address=192.168.2.248:32815` (older RouterOS)
    Combined,
    /// `src-address=172.31.255.29 src-port=56454` (newer RouterOS)
    Separate,
}

/// `--fasttrack-counters` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FastTrackCountersArg {
    /// Every row shows the four *-fasttrack-* counters, 0 without FastTrack.
    Always,
    /// Only rows with fasttrack=true show them.
    OnlyFasttracked,
}

/// Run a simulated MikroTik RouterOS API server (for tests, benchmarks and experiments).
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Address and port to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8728", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,

    /// Scenario file (TOML) with traffic to play over time and allowlist seeds; see
    /// crates/routeros-sim/SCENARIO.md.
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,

    /// Add a synthetic connection table of N rows (derived from --seed; millions are fine).
    #[arg(long, value_name = "N")]
    pub connections: Option<usize>,

    /// Share of anomalous rows in the synthetic table (orig > 3, repl <= 2), 0.0 to 1.0.
    #[arg(long, default_value_t = 0.01, value_name = "F")]
    pub anomaly_share: f64,

    /// Share of IPv6 rows in the synthetic table, 0.0 to 1.0.
    #[arg(long, default_value_t = 0.05, value_name = "F")]
    pub ipv6_share: f64,

    /// Seed of the synthetic table: the same seed gives the same rows.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// How connection rows show ports: `combined` (ip:port in src-address, older RouterOS)
    /// or `separate` (src-port/dst-port fields, newer RouterOS).
    #[arg(long, value_enum, default_value = "separate")]
    pub address_format: AddressFormatArg,

    /// Compare query values as strings (`?>orig-packets=3` then matches "4" but not "10"),
    /// emulating a router whose query engine does not type the counters.
    #[arg(long)]
    pub string_compare: bool,

    /// Whether connection rows without FastTrack show the orig-/repl-fasttrack-packets/bytes
    /// counters as 0 (`always`) or lack them (`only-fasttracked`); unconfirmed on real
    /// routers, so both can be emulated.
    #[arg(long, value_enum, default_value = "always")]
    pub fasttrack_counters: FastTrackCountersArg,

    /// Emulate RouterOS 7.17 and older: no `!empty` reply for empty prints.
    #[arg(long)]
    pub no_empty: bool,

    /// Emulate a pre-6.43 router: login by MD5 challenge/response only.
    #[arg(long)]
    pub legacy_login: bool,

    /// A user as NAME:PASSWORD (repeatable; replaces the default `admin` with an empty
    /// password).
    #[arg(long = "user", value_name = "NAME:PASSWORD", value_parser = parse_user)]
    pub users: Vec<(String, String)>,

    /// Serve API-SSL with a freshly generated self-signed certificate; its SHA-256
    /// fingerprint is printed at start (pin it in rosguard's `fingerprint`).
    #[arg(long)]
    pub tls: bool,

    /// Serve API-SSL with this certificate chain (PEM) instead of a generated one.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Refuse sessions beyond this many at once (`!fatal too many sessions`).
    #[arg(long, value_name = "N")]
    pub max_sessions: Option<usize>,

    /// The address `/user/active` shows for every API session instead of the client's real
    /// one (emulates a client that reaches the router through NAT).
    #[arg(long, value_name = "IP")]
    pub session_address: Option<IpAddr>,

    /// Gateway of the IPv4 default route in `/ip/route` (default: .1 of the WAN /24).
    #[arg(long, value_name = "IPV4")]
    pub ipv4_gateway: Option<Ipv4Addr>,

    /// Gateway of the IPv6 default route in `/ipv6/route` (default: fe80::1 on the WAN
    /// interface).
    #[arg(long, value_name = "IPV6")]
    pub ipv6_gateway: Option<Ipv6Addr>,

    /// A static DNS server in `/ip/dns` `servers` (repeatable; default 1.1.1.1 and 9.9.9.9).
    #[arg(long = "dns-server", value_name = "IP")]
    pub dns_servers: Vec<IpAddr>,

    /// A dynamic DNS server in `/ip/dns` `dynamic-servers`, as a DHCP client would learn it
    /// (repeatable; default none).
    #[arg(long = "dynamic-dns-server", value_name = "IP")]
    pub dynamic_dns_servers: Vec<IpAddr>,

    /// Serve this Linux network namespace's kernel conntrack as the connection tables
    /// (re-read every --conntrack-interval-ms; removals through the API delete the kernel
    /// entry). Needs root, iproute2 and conntrack-tools; see lab/README.md.
    #[arg(long, value_name = "NAME")]
    pub conntrack_netns: Option<String>,

    /// How often --conntrack-netns re-reads the kernel's table, in milliseconds.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 500,
        requires = "conntrack_netns"
    )]
    pub conntrack_interval_ms: u64,

    /// Mirror the drop rules on address-lists added through the API (`rosguard firewall
    /// --install`) and those lists' entries into the namespace's nftables (table
    /// `inet rosguard_mirror`), so blocking in the simulator blocks in the namespace.
    #[arg(long, requires = "conntrack_netns")]
    pub mirror_nft: bool,
}

fn parse_user(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((name, password)) if !name.is_empty() => Ok((name.to_owned(), password.to_owned())),
        _ => Err(format!(
            "{s:?} is not NAME:PASSWORD (an empty password is `admin:`)"
        )),
    }
}

impl SimArgs {
    /// The simulator configuration these flags describe (real clock).
    pub fn to_config(&self) -> anyhow::Result<SimConfig> {
        let mut cfg = SimConfig {
            clock: SimClock::Real,
            address_format: match self.address_format {
                AddressFormatArg::Combined => AddressFormat::Combined,
                AddressFormatArg::Separate => AddressFormat::Separate,
            },
            query_compare: if self.string_compare {
                QueryCompare::String
            } else {
                QueryCompare::Numeric
            },
            fasttrack_counters: match self.fasttrack_counters {
                FastTrackCountersArg::Always => FastTrackCounters::Always,
                FastTrackCountersArg::OnlyFasttracked => FastTrackCounters::OnlyFastTracked,
            },
            empty_replies: !self.no_empty,
            legacy_login: self.legacy_login,
            max_sessions: self.max_sessions,
            session_address: self.session_address,
            ipv4_gateway: self.ipv4_gateway,
            ipv6_gateway: self.ipv6_gateway,
            dns_servers: (!self.dns_servers.is_empty()).then(|| self.dns_servers.clone()),
            dynamic_dns_servers: (!self.dynamic_dns_servers.is_empty())
                .then(|| self.dynamic_dns_servers.clone()),
            ..SimConfig::default()
        };
        if !self.users.is_empty() {
            cfg.users = self.users.clone();
        }
        cfg.tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(SimTls::Files {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ if self.tls => Some(SimTls::GeneratedSelfSigned),
            _ => None,
        };
        if let Some(path) = &self.scenario {
            cfg.scenario = Some(Scenario::from_file(path)?);
        }
        if let Some(n) = self.connections {
            let spec = GenerateSpec {
                connections: n,
                anomaly_share: self.anomaly_share,
                seed: self.seed,
                ipv6_share: self.ipv6_share,
            };
            spec.validate()
                .map_err(|m| anyhow::anyhow!("--connections/--anomaly-share/--ipv6-share: {m}"))?;
            cfg.generate = Some(spec);
        }
        Ok(cfg)
    }
}

/// Runs the simulator until `shutdown` completes.
pub async fn run_cli(args: SimArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    serve(args, shutdown, None::<NoFeed>).await
}

/// [`run_cli`] with `feed` beside the simulator: it configures it before the start, is started
/// once it listens, and is stopped and joined before the simulator shuts down.
pub async fn run_cli_with(
    args: SimArgs,
    shutdown: impl Future<Output = ()>,
    feed: impl Feed,
) -> anyhow::Result<()> {
    serve(args, shutdown, Some(feed)).await
}

async fn serve<F: Feed>(
    args: SimArgs,
    shutdown: impl Future<Output = ()>,
    feed: Option<F>,
) -> anyhow::Result<()> {
    let mut cfg = args.to_config()?;
    if let Some(f) = &feed {
        f.configure(&mut cfg)?;
    }
    let users: Vec<String> = cfg
        .users
        .iter()
        .map(|(u, p)| {
            if p.is_empty() {
                format!("{u} (empty password)")
            } else {
                u.clone()
            }
        })
        .collect();
    let handle = Sim::start(cfg, args.listen)
        .await
        .with_context(|| format!("cannot start the simulator on {}", args.listen))?;
    let mut line = format!(
        "routeros-sim: RouterOS API{} on {}; users: {}",
        if args.tls || args.tls_cert.is_some() {
            "-SSL"
        } else {
            ""
        },
        handle.local_addr(),
        users.join(", ")
    );
    if let Some(n) = args.connections {
        line.push_str(&format!("; {n} generated connections"));
    }
    if let Some(s) = &args.scenario {
        line.push_str(&format!("; scenario {}", s.display()));
    }
    if let Some(fp) = handle.tls_fingerprint() {
        line.push_str(&format!("; certificate SHA-256 fingerprint {fp}"));
    }
    let bridge = match &args.conntrack_netns {
        Some(ns) => {
            let mut b = KernelBridge::new(ConntrackReader::new(Some(ns))?, args.mirror_nft);
            b.interval = std::time::Duration::from_millis(args.conntrack_interval_ms.max(50));
            line.push_str(&format!("; connections from the conntrack of netns {ns}"));
            if args.mirror_nft {
                line.push_str(", blocks mirrored to its nftables");
            }
            let stop = tokio_util::sync::CancellationToken::new();
            let task = tokio::spawn(b.run(handle.clone(), stop.clone(), None));
            Some((stop, task))
        }
        None => None,
    };
    let fed = feed.map(|f| {
        line.push_str(&format!("; {}", f.describe()));
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(f.start(handle.clone(), stop.clone()));
        (stop, task)
    });
    println!("{line}");
    shutdown.await;
    for (stop, task) in bridge.into_iter().chain(fed) {
        stop.cancel();
        if let Err(e) = task.await {
            tracing::error!(error = %e, "a task beside the simulator failed");
        }
    }
    handle.shutdown().await;
    Ok(())
}
