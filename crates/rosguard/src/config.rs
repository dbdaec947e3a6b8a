//! The configuration file: TOML in, checked settings out.
//!
//! Every `cfg*` global of the original RouterOS script keeps its meaning and default. Unknown
//! keys are errors, and every error names the key and says how to fix it. Router passwords are
//! read from an environment variable or a file (or systemd's copy of that file in
//! `$CREDENTIALS_DIRECTORY`, under the file's name), never from the config itself.
//!
//! This module does not touch the network; it reads the config file and the password sources
//! it names.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use ipnet::IpNet;
use rosguard_core::detect::{BlockTarget, Rules};
use rosguard_core::model::Protocol;
use routeros_client::{Secret, TlsConfig};
use serde::Deserialize;

/// Default RouterOS API ports.
const API_PORT: u16 = 8728;
const API_SSL_PORT: u16 = 8729;

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub daemon: DaemonSettings,
    pub routers: Vec<RouterConfig>,
}

/// `[daemon]`: how the daemon runs.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonSettings {
    /// cfgLoopDelay: pause between two cycles.
    pub loop_delay: Duration,
    /// cfgMaxConnPerCycle: flagged connections acted on per cycle.
    pub max_conn_per_cycle: usize,
    /// cfgLogLevel.
    pub log_level: LogLevel,
    /// Where the SQLite state lives; `None` = the platform default (see `state_dir()`).
    pub state_dir: Option<PathBuf>,
    /// Serve Prometheus `/metrics` and `/health` here.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// How often blocks that should still stand are re-checked and restored.
    pub reconcile_interval: Duration,
    /// Block an address on every router once one router blocked it.
    pub share_blocks: bool,
}

/// cfgLogLevel values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    Warning,
    Error,
}

impl LogLevel {
    /// The tracing filter directive for this level.
    pub fn directive(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warning => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// `[detection]`, merged with a router's own overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectionSettings {
    /// cfgEnabled: when false the daemon connects and reports but flags nothing.
    pub enabled: bool,
    pub rules: Rules,
    /// Push the protocol and counter filters to the router (re-checked locally either way).
    pub server_filter: bool,
    /// A connection must be flagged in this many polls in a row before it counts.
    pub min_observations: u32,
    /// Distinct flagged connections to one address, within `window`, before it is blocked.
    pub min_flagged_connections: u32,
    pub window: Duration,
}

/// `[blocking]`, merged with a router's own overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockingSettings {
    pub address_list: String,
    pub allowlist_name: String,
    pub allow: Vec<IpNet>,
    pub block_timeout: Duration,
    pub remove_tcp_conn: bool,
    pub check_local_addr: bool,
    pub dry_run: bool,
    /// Each new block of a repeat offender multiplies the timeout by this (1 = off).
    pub escalation_factor: f64,
    pub max_block_timeout: Duration,
    /// Block history older than this is forgotten (no escalation from it).
    pub forget_after: Duration,
    /// Caps per router; 0 = no cap.
    pub max_blocks_per_hour: u32,
    pub max_list_size: u32,
    /// Block nothing in a cycle where more than this share of the scanned rows is flagged.
    pub panic_ratio: f64,
}

/// One `[[router]]`.
#[derive(Clone)]
pub struct RouterConfig {
    pub name: String,
    /// `host:port`.
    pub address: String,
    pub username: String,
    pub password: Secret,
    pub tls: Option<TlsConfig>,
    pub detection: DetectionSettings,
    pub blocking: BlockingSettings,
}

impl std::fmt::Debug for RouterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterConfig")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("username", &self.username)
            .field("password", &"***")
            .field("tls", &self.tls.as_ref().map(tls_mode_name))
            .field("detection", &self.detection)
            .field("blocking", &self.blocking)
            .finish()
    }
}

impl RouterConfig {
    /// True when connecting again is needed to apply a new version of this router's config.
    pub fn connection_differs(&self, other: &RouterConfig) -> bool {
        self.address != other.address
            || self.username != other.username
            || self.password.expose() != other.password.expose()
            || self.tls.as_ref().map(tls_mode_name) != other.tls.as_ref().map(tls_mode_name)
    }
}

/// A short name for a TLS mode, for logs.
pub fn tls_mode_name(tls: &TlsConfig) -> String {
    match tls {
        TlsConfig::CaFile(p) => format!("ca_file {}", p.display()),
        TlsConfig::Fingerprint(fp) => format!("fingerprint {}", hex::encode(fp)),
        TlsConfig::Insecure => "insecure".into(),
    }
}

impl Default for DaemonSettings {
    fn default() -> Self {
        Self {
            loop_delay: Duration::from_secs(2),
            max_conn_per_cycle: 50,
            log_level: LogLevel::Warning,
            state_dir: None,
            metrics_listen: None,
            reconcile_interval: Duration::from_secs(300),
            share_blocks: false,
        }
    }
}

impl Default for DetectionSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            rules: Rules::default(),
            server_filter: true,
            min_observations: 1,
            min_flagged_connections: 1,
            window: Duration::from_secs(60),
        }
    }
}

impl Default for BlockingSettings {
    fn default() -> Self {
        Self {
            address_list: "tls_block".into(),
            allowlist_name: "allowlist".into(),
            allow: Vec::new(),
            block_timeout: Duration::from_secs(86_400),
            remove_tcp_conn: true,
            check_local_addr: true,
            dry_run: false,
            escalation_factor: 1.0,
            max_block_timeout: Duration::from_secs(28 * 86_400),
            forget_after: Duration::from_secs(30 * 86_400),
            max_blocks_per_hour: 1000,
            max_list_size: 30_000,
            panic_ratio: 0.5,
        }
    }
}

// ---- the file format ------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    detection: RawDetection,
    #[serde(default)]
    blocking: RawBlocking,
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default, rename = "router")]
    routers: Vec<RawRouter>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDetection {
    enabled: Option<bool>,
    monitored_ports: Option<Vec<i64>>,
    protocols: Option<Vec<toml::Value>>,
    min_orig_packets: Option<i64>,
    max_repl_packets: Option<i64>,
    block_target: Option<String>,
    server_filter: Option<bool>,
    min_observations: Option<i64>,
    min_flagged_connections: Option<i64>,
    window: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlocking {
    address_list: Option<String>,
    allowlist_name: Option<String>,
    allow: Option<Vec<String>>,
    block_timeout: Option<String>,
    remove_tcp_conn: Option<bool>,
    check_local_addr: Option<bool>,
    dry_run: Option<bool>,
    escalation_factor: Option<f64>,
    max_block_timeout: Option<String>,
    forget_after: Option<String>,
    max_blocks_per_hour: Option<i64>,
    max_list_size: Option<i64>,
    panic_ratio: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    loop_delay: Option<String>,
    max_conn_per_cycle: Option<i64>,
    log_level: Option<String>,
    state_dir: Option<PathBuf>,
    metrics_listen: Option<String>,
    reconcile_interval: Option<String>,
    share_blocks: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouter {
    name: Option<String>,
    address: Option<String>,
    username: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    #[serde(default)]
    tls: bool,
    ca_file: Option<PathBuf>,
    fingerprint: Option<String>,
    #[serde(default)]
    tls_insecure: bool,
    #[serde(default)]
    detection: RawDetection,
    #[serde(default)]
    blocking: RawBlocking,
}

impl RawDetection {
    /// `self` with `over`'s keys taking precedence.
    fn overlay(&self, over: &RawDetection) -> RawDetection {
        RawDetection {
            enabled: over.enabled.or(self.enabled),
            monitored_ports: over
                .monitored_ports
                .clone()
                .or_else(|| self.monitored_ports.clone()),
            protocols: over.protocols.clone().or_else(|| self.protocols.clone()),
            min_orig_packets: over.min_orig_packets.or(self.min_orig_packets),
            max_repl_packets: over.max_repl_packets.or(self.max_repl_packets),
            block_target: over
                .block_target
                .clone()
                .or_else(|| self.block_target.clone()),
            server_filter: over.server_filter.or(self.server_filter),
            min_observations: over.min_observations.or(self.min_observations),
            min_flagged_connections: over
                .min_flagged_connections
                .or(self.min_flagged_connections),
            window: over.window.clone().or_else(|| self.window.clone()),
        }
    }

    fn check(&self, at: &str) -> Result<DetectionSettings> {
        let d = DetectionSettings::default();
        let mut rules = d.rules.clone();
        if let Some(ports) = &self.monitored_ports {
            rules.monitored_ports = ports
                .iter()
                .map(|&p| {
                    u16::try_from(p).ok().filter(|&p| p > 0).ok_or_else(|| {
                        anyhow!("{at}.monitored_ports: {p} is not a port; use numbers from 1 to 65535 (an empty list monitors every port)")
                    })
                })
                .collect::<Result<_>>()?;
        }
        if let Some(protos) = &self.protocols {
            if protos.is_empty() {
                bail!("{at}.protocols: the list is empty, so nothing would ever be flagged; name at least one, e.g. [\"tcp\", \"udp\"]");
            }
            rules.protocols = protos
                .iter()
                .map(|v| {
                    let text = match v {
                        toml::Value::String(s) => s.clone(),
                        toml::Value::Integer(i) => i.to_string(),
                        other => format!("a {}", other.type_str()),
                    };
                    text.parse::<Protocol>().map_err(|_| {
                        anyhow!("{at}.protocols: unknown protocol {text}; use a name (tcp, udp, icmp, gre) or a protocol number from 0 to 255")
                    })
                })
                .collect::<Result<_>>()?;
        }
        if let Some(n) = self.min_orig_packets {
            rules.min_orig_packets = u64::try_from(n)
                .map_err(|_| anyhow!("{at}.min_orig_packets: {n} is negative; use 0 or more (flag when orig-packets > this)"))?;
        }
        if let Some(n) = self.max_repl_packets {
            rules.max_repl_packets = u64::try_from(n)
                .map_err(|_| anyhow!("{at}.max_repl_packets: {n} is negative; use 0 or more (flag when repl-packets <= this)"))?;
        }
        if let Some(t) = &self.block_target {
            rules.block_target = match t.as_str() {
                "dst" => BlockTarget::Dst,
                "src" => BlockTarget::Src,
                "remote" => BlockTarget::Remote,
                other => {
                    bail!("{at}.block_target: {other:?} is not one of \"dst\", \"src\", \"remote\"")
                }
            };
        }
        Ok(DetectionSettings {
            enabled: self.enabled.unwrap_or(d.enabled),
            rules,
            server_filter: self.server_filter.unwrap_or(d.server_filter),
            min_observations: positive(
                at,
                "min_observations",
                self.min_observations,
                d.min_observations,
            )?,
            min_flagged_connections: positive(
                at,
                "min_flagged_connections",
                self.min_flagged_connections,
                d.min_flagged_connections,
            )?,
            window: duration_key(at, "window", &self.window, d.window, Duration::from_secs(1))?,
        })
    }
}

impl RawBlocking {
    fn overlay(&self, over: &RawBlocking) -> RawBlocking {
        RawBlocking {
            address_list: over
                .address_list
                .clone()
                .or_else(|| self.address_list.clone()),
            allowlist_name: over
                .allowlist_name
                .clone()
                .or_else(|| self.allowlist_name.clone()),
            allow: over.allow.clone().or_else(|| self.allow.clone()),
            block_timeout: over
                .block_timeout
                .clone()
                .or_else(|| self.block_timeout.clone()),
            remove_tcp_conn: over.remove_tcp_conn.or(self.remove_tcp_conn),
            check_local_addr: over.check_local_addr.or(self.check_local_addr),
            dry_run: over.dry_run.or(self.dry_run),
            escalation_factor: over.escalation_factor.or(self.escalation_factor),
            max_block_timeout: over
                .max_block_timeout
                .clone()
                .or_else(|| self.max_block_timeout.clone()),
            forget_after: over
                .forget_after
                .clone()
                .or_else(|| self.forget_after.clone()),
            max_blocks_per_hour: over.max_blocks_per_hour.or(self.max_blocks_per_hour),
            max_list_size: over.max_list_size.or(self.max_list_size),
            panic_ratio: over.panic_ratio.or(self.panic_ratio),
        }
    }

    fn check(&self, at: &str) -> Result<BlockingSettings> {
        let d = BlockingSettings::default();
        let list_name = |key: &str, v: &Option<String>, default: &str| -> Result<String> {
            match v {
                None => Ok(default.to_owned()),
                Some(s)
                    if s.trim().is_empty() || s.len() > 255 || s.chars().any(char::is_control) =>
                {
                    bail!("{at}.{key}: {s:?} is not a usable address-list name; use a short name such as \"{default}\"")
                }
                Some(s) => Ok(s.clone()),
            }
        };
        let allow = self
            .allow
            .iter()
            .flatten()
            .map(|s| parse_net(s).ok_or_else(|| anyhow!("{at}.allow: {s:?} is not an IP address or CIDR (e.g. \"10.0.0.5\", \"192.168.88.0/24\", \"2001:db8::/32\")")))
            .collect::<Result<_>>()?;
        let block_timeout = match &self.block_timeout {
            None => d.block_timeout,
            Some(s) => {
                let t = routeros_proto::parse_duration(s)
                    .map_err(|e| anyhow!("{at}.block_timeout: {e}"))?;
                if t < Duration::from_secs(1) {
                    bail!("{at}.block_timeout: {s:?} is shorter than one second; use e.g. \"1d\", \"12h\" or \"30m\"");
                }
                t
            }
        };
        Ok(BlockingSettings {
            address_list: list_name("address_list", &self.address_list, &d.address_list)?,
            allowlist_name: list_name("allowlist_name", &self.allowlist_name, &d.allowlist_name)?,
            allow,
            block_timeout,
            remove_tcp_conn: self.remove_tcp_conn.unwrap_or(d.remove_tcp_conn),
            check_local_addr: self.check_local_addr.unwrap_or(d.check_local_addr),
            dry_run: self.dry_run.unwrap_or(d.dry_run),
            escalation_factor: match self.escalation_factor {
                None => d.escalation_factor,
                Some(f) if f.is_finite() && (1.0..=100.0).contains(&f) => f,
                Some(f) => bail!("{at}.escalation_factor: {f} must be between 1 (off) and 100, e.g. 2 doubles each repeat block"),
            },
            max_block_timeout: duration_key(at, "max_block_timeout", &self.max_block_timeout, d.max_block_timeout, Duration::from_secs(1))?,
            forget_after: duration_key(at, "forget_after", &self.forget_after, d.forget_after, Duration::from_secs(60))?,
            max_blocks_per_hour: cap(at, "max_blocks_per_hour", self.max_blocks_per_hour, d.max_blocks_per_hour)?,
            max_list_size: cap(at, "max_list_size", self.max_list_size, d.max_list_size)?,
            panic_ratio: match self.panic_ratio {
                None => d.panic_ratio,
                Some(r) if r > 0.0 && r <= 1.0 => r,
                Some(r) => bail!("{at}.panic_ratio: {r} must be above 0 and at most 1 (1 turns the brake off)"),
            },
        })
    }
}

/// A RouterOS duration key with a lower bound.
fn duration_key(
    at: &str,
    key: &str,
    v: &Option<String>,
    default: Duration,
    min: Duration,
) -> Result<Duration> {
    let Some(s) = v else { return Ok(default) };
    let d = routeros_proto::parse_duration(s).map_err(|e| anyhow!("{at}.{key}: {e}"))?;
    if d < min {
        bail!(
            "{at}.{key}: {s:?} is too short; use at least {}",
            routeros_proto::format_duration(min)
        );
    }
    Ok(d)
}

/// A count of at least 1.
fn positive(at: &str, key: &str, v: Option<i64>, default: u32) -> Result<u32> {
    match v {
        None => Ok(default),
        Some(n) => u32::try_from(n).ok().filter(|&n| n >= 1).ok_or_else(|| {
            anyhow!(
                "{at}.{key}: {n} must be a whole number of at least 1 (1 = the script's behaviour)"
            )
        }),
    }
}

/// A cap: 0 turns it off.
fn cap(at: &str, key: &str, v: Option<i64>, default: u32) -> Result<u32> {
    match v {
        None => Ok(default),
        Some(n) => u32::try_from(n)
            .map_err(|_| anyhow!("{at}.{key}: {n} must be 0 (no cap) or a positive number")),
    }
}

/// Parses an IP or a CIDR.
pub fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

impl RawDaemon {
    fn check(&self) -> Result<DaemonSettings> {
        let d = DaemonSettings::default();
        let loop_delay = match &self.loop_delay {
            None => d.loop_delay,
            Some(s) => {
                let t = routeros_proto::parse_duration(s)
                    .map_err(|e| anyhow!("daemon.loop_delay: {e}"))?;
                if t < Duration::from_millis(100) {
                    bail!("daemon.loop_delay: {s:?} is below 100ms and would hammer the router; use e.g. \"2s\"");
                }
                t
            }
        };
        let max_conn_per_cycle = match self.max_conn_per_cycle {
            None => d.max_conn_per_cycle,
            Some(n) if n >= 1 => n as usize,
            Some(n) => bail!(
                "daemon.max_conn_per_cycle: {n} must be at least 1 (the script's default is 50)"
            ),
        };
        let log_level = match self.log_level.as_deref() {
            None => d.log_level,
            Some("debug") => LogLevel::Debug,
            Some("info") => LogLevel::Info,
            Some("warning" | "warn") => LogLevel::Warning,
            Some("error") => LogLevel::Error,
            Some(other) => {
                bail!("daemon.log_level: {other:?} is not one of debug, info, warning, error")
            }
        };
        let metrics_listen = match &self.metrics_listen {
            None => None,
            Some(s) => Some(s.parse().map_err(|_| {
                anyhow!(
                    "daemon.metrics_listen: {s:?} is not an address:port; e.g. \"127.0.0.1:9464\""
                )
            })?),
        };
        let reconcile_interval = duration_key(
            "daemon",
            "reconcile_interval",
            &self.reconcile_interval,
            d.reconcile_interval,
            Duration::from_secs(1),
        )?;
        Ok(DaemonSettings {
            loop_delay,
            max_conn_per_cycle,
            log_level,
            state_dir: self.state_dir.clone(),
            metrics_listen,
            reconcile_interval,
            share_blocks: self.share_blocks.unwrap_or(d.share_blocks),
        })
    }
}

/// Where a password comes from, resolved at load time.
fn read_password(
    at: &str,
    env: &Option<String>,
    file: &Option<PathBuf>,
    base: &Path,
) -> Result<Secret> {
    match (env, file) {
        (Some(_), Some(_)) => bail!("{at}: set only one of password_env and password_file"),
        (Some(var), None) => match std::env::var(var) {
            Ok(v) => Ok(Secret::new(v)),
            Err(std::env::VarError::NotPresent) => {
                bail!("{at}.password_env: environment variable {var} is not set; export it (e.g. in the systemd unit's EnvironmentFile) or use password_file")
            }
            Err(std::env::VarError::NotUnicode(_)) => bail!("{at}.password_env: environment variable {var} is not valid UTF-8"),
        },
        (None, Some(path)) => {
            let path = if path.is_relative() { base.join(path) } else { path.clone() };
            let credentials = std::env::var_os("CREDENTIALS_DIRECTORY")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from);
            read_password_file(at, &path, credentials.as_deref())
        }
        (None, None) => bail!(
            "{at}: no password source; set password_env = \"ROSGUARD_PASSWORD\" or password_file = \"/etc/rosguard/password\" (passwords are never written in the config)"
        ),
    }
}

/// The password of `password_file`. Under systemd the service user usually cannot read the
/// file (0600 root); the unit hands it over with `LoadCredential=NAME:PATH`, NAME being the
/// file's name, and systemd puts a copy the service can read in `$CREDENTIALS_DIRECTORY`
/// (`credentials`). That copy is read when it is there, else the file itself. A file that
/// group or others can read is worth a warning (never with the password in it).
fn read_password_file(at: &str, path: &Path, credentials: Option<&Path>) -> Result<Secret> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let name = name.as_deref().unwrap_or("password");
    let original = std::fs::metadata(path);
    if let Ok(meta) = &original {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                file = %shown,
                mode = format!("{mode:04o}"),
                "{at}.password_file {shown} can be read by other users (mode {mode:04o}); chmod 0600 {shown} (under systemd keep it root-owned: the unit passes it with LoadCredential={name}:{shown})"
            );
        }
    }
    let credential = credentials
        .zip(path.file_name())
        .map(|(dir, file)| dir.join(file))
        .filter(|c| c.is_file());
    let text = match credential {
        Some(credential) => {
            let text = std::fs::read_to_string(&credential).map_err(|e| {
                anyhow!("{at}.password_file: cannot read the systemd credential {} (the copy of {shown}): {e}", credential.display())
            })?;
            // The shipped unit's `SetCredential=` default: systemd passes an empty line when
            // the file is missing, so that password_env setups start.
            if text.trim_end_matches(['\r', '\n']).is_empty() {
                if let Err(e) = &original {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        bail!("{at}.password_file: {shown} does not exist (systemd passed an empty credential {name} in its place); create it with the router password, mode 0600 root");
                    }
                }
            }
            text
        }
        None => std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow!(
                "{at}.password_file: {shown} does not exist; create it with the router password (mode 0600)"
            ),
            std::io::ErrorKind::PermissionDenied => anyhow!(
                "{at}.password_file: cannot read {shown}: permission denied; under systemd keep it 0600 root and pass it to the service with LoadCredential={name}:{shown} in the unit (rosguard then reads $CREDENTIALS_DIRECTORY/{name}); otherwise make it mode 0600, owned by the user rosguard runs as"
            ),
            _ => anyhow!("{at}.password_file: cannot read {shown}: {e}; it must be a file holding the router password (mode 0600)"),
        })?,
    };
    Ok(Secret::new(text.trim_end_matches(['\r', '\n']).to_owned()))
}

impl RawRouter {
    fn check(
        &self,
        index: usize,
        det: &RawDetection,
        blk: &RawBlocking,
        base: &Path,
    ) -> Result<RouterConfig> {
        let name = match &self.name {
            Some(n) if !n.trim().is_empty() && !n.chars().any(char::is_control) => n.clone(),
            Some(n) => bail!("router[{index}].name: {n:?} is not a usable name"),
            None => bail!("router[{index}]: name is missing; give every [[router]] a name, e.g. name = \"core\""),
        };
        let at = format!("router {name:?}");
        let tls = self.check_tls(&at, base)?;
        let address = match &self.address {
            None => bail!("{at}: address is missing; e.g. address = \"192.168.88.1:8728\""),
            Some(a) => normalise_address(a, if tls.is_some() { API_SSL_PORT } else { API_PORT })
                .ok_or_else(|| anyhow!("{at}.address: {a:?} is not host:port (e.g. \"192.168.88.1:8728\" or \"router.lan:8729\")"))?,
        };
        let username = match &self.username {
            Some(u) if !u.is_empty() => u.clone(),
            _ => bail!(
                "{at}: username is missing; use a RouterOS user with the read,write,api policies"
            ),
        };
        let password = read_password(&at, &self.password_env, &self.password_file, base)?;
        let detection = det
            .overlay(&self.detection)
            .check(&format!("{at}.detection"))?;
        let blocking = blk
            .overlay(&self.blocking)
            .check(&format!("{at}.blocking"))?;
        Ok(RouterConfig {
            name,
            address,
            username,
            password,
            tls,
            detection,
            blocking,
        })
    }

    fn check_tls(&self, at: &str, base: &Path) -> Result<Option<TlsConfig>> {
        let chosen = [
            self.ca_file.is_some(),
            self.fingerprint.is_some(),
            self.tls_insecure,
        ];
        if !self.tls {
            if chosen.iter().any(|&c| c) {
                bail!("{at}: ca_file, fingerprint and tls_insecure only apply with tls = true");
            }
            return Ok(None);
        }
        match chosen.iter().filter(|&&c| c).count() {
            0 => bail!(
                "{at}: tls = true needs a way to verify the router: ca_file = \"/path/ca.pem\", fingerprint = \"<sha256 of the router certificate>\", or tls_insecure = true (not recommended)"
            ),
            1 => {}
            _ => bail!("{at}: set only one of ca_file, fingerprint, tls_insecure"),
        }
        if let Some(p) = &self.ca_file {
            let p = if p.is_relative() {
                base.join(p)
            } else {
                p.clone()
            };
            if !p.is_file() {
                bail!(
                    "{at}.ca_file: {} does not exist or is not a file",
                    p.display()
                );
            }
            return Ok(Some(TlsConfig::CaFile(p)));
        }
        if let Some(fp) = &self.fingerprint {
            let clean: String = fp.chars().filter(|c| !matches!(c, ':' | ' ')).collect();
            let bytes = hex::decode(&clean).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()).ok_or_else(|| {
                anyhow!("{at}.fingerprint: expected the SHA-256 of the router certificate as 64 hex digits (colons allowed)")
            })?;
            return Ok(Some(TlsConfig::Fingerprint(bytes)));
        }
        Ok(Some(TlsConfig::Insecure))
    }
}

/// `host:port`, with the API port added when missing. IPv6 literals need brackets with a port.
fn normalise_address(a: &str, default_port: u16) -> Option<String> {
    let a = a.trim();
    if a.is_empty() || a.contains(char::is_whitespace) {
        return None;
    }
    if let Ok(ip) = a.parse::<IpAddr>() {
        return Some(std::net::SocketAddr::new(ip, default_port).to_string());
    }
    if a.parse::<std::net::SocketAddr>().is_ok() {
        return Some(a.to_owned());
    }
    match a.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            port.parse::<u16>().ok().filter(|&p| p > 0)?;
            (!host.is_empty()).then(|| a.to_owned())
        }
        Some(_) => None,
        None => Some(format!("{a}:{default_port}")),
    }
}

impl DaemonSettings {
    /// The state directory: `state_dir` from the config, else systemd's `$STATE_DIRECTORY`,
    /// else `$XDG_STATE_HOME/rosguard` or `~/.local/state/rosguard`, else `/var/lib/rosguard`.
    pub fn resolved_state_dir(&self) -> PathBuf {
        if let Some(d) = &self.state_dir {
            return d.clone();
        }
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        if let Some(d) = env("STATE_DIRECTORY") {
            // systemd may list several, separated by ':'.
            let first = d
                .to_string_lossy()
                .split(':')
                .next()
                .unwrap_or_default()
                .to_owned();
            return PathBuf::from(first);
        }
        if let Some(d) = env("XDG_STATE_HOME") {
            return d.join("rosguard");
        }
        if let Some(home) = env("HOME") {
            return home.join(".local/state/rosguard");
        }
        PathBuf::from("/var/lib/rosguard")
    }
}

impl Config {
    /// Parses and checks a config. `base` is where relative paths (password_file, ca_file) start.
    pub fn from_toml(text: &str, base: &Path) -> Result<Config> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| anyhow!("{}", toml_error_line(text, &e)))?;
        let mut daemon = raw.daemon.check()?;
        if let Some(d) = &daemon.state_dir {
            if d.is_relative() {
                daemon.state_dir = Some(base.join(d));
            }
        }
        // Check the global sections on their own too, so their errors name the global key.
        raw.detection.check("detection")?;
        raw.blocking.check("blocking")?;
        let mut routers = Vec::new();
        for (i, r) in raw.routers.iter().enumerate() {
            let r = r.check(i, &raw.detection, &raw.blocking, base)?;
            if routers.iter().any(|o: &RouterConfig| o.name == r.name) {
                bail!(
                    "router {:?}: the name is used twice; router names must be unique",
                    r.name
                );
            }
            routers.push(r);
        }
        Ok(Config { daemon, routers })
    }

    /// A config with no routers and every default: what `rosguard demo` starts from.
    pub fn defaults() -> Config {
        Config {
            daemon: DaemonSettings::default(),
            routers: Vec::new(),
        }
    }

    /// The routers selected by `--router` (all when `None`).
    pub fn select(&self, router: Option<&str>) -> Result<Vec<&RouterConfig>> {
        if self.routers.is_empty() {
            bail!("the config has no [[router]] section; add one with name, address, username and password_env or password_file");
        }
        match router {
            None => Ok(self.routers.iter().collect()),
            Some(name) => match self.routers.iter().find(|r| r.name == name) {
                Some(r) => Ok(vec![r]),
                None => {
                    let names: Vec<&str> = self.routers.iter().map(|r| r.name.as_str()).collect();
                    bail!(
                        "no router named {name:?} in the config; routers: {}",
                        names.join(", ")
                    )
                }
            },
        }
    }
}

/// A TOML error on one line: where, and what.
fn toml_error_line(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// Reads and checks the config file at `path`.
pub fn read_config(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Config::from_toml(&text, &base).with_context(|| format!("config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config> {
        Config::from_toml(text, Path::new("/nonexistent"))
    }

    fn err(text: &str) -> String {
        format!("{:#}", load(text).unwrap_err())
    }

    const ROUTER: &str = r#"
[[router]]
name = "core"
address = "192.168.88.1"
username = "rosguard"
password_env = "ROSGUARD_TEST_PASSWORD_SET"
"#;

    fn with_password<T>(f: impl FnOnce() -> T) -> T {
        std::env::set_var("ROSGUARD_TEST_PASSWORD_SET", "s3cret-value");
        f()
    }

    #[test]
    fn empty_file_means_the_scripts_defaults() {
        let c = load("").unwrap();
        assert_eq!(c.daemon, DaemonSettings::default());
        assert_eq!(c.daemon.loop_delay, Duration::from_secs(2));
        assert_eq!(c.daemon.max_conn_per_cycle, 50);
        assert_eq!(c.daemon.log_level, LogLevel::Warning);
        assert!(c.routers.is_empty());
        let d = DetectionSettings::default();
        assert_eq!(d.rules.monitored_ports, vec![443, 80, 8443]);
        assert_eq!(d.rules.min_orig_packets, 3);
        assert_eq!(d.rules.max_repl_packets, 2);
        assert_eq!(d.rules.block_target, BlockTarget::Dst);
        let b = BlockingSettings::default();
        assert_eq!(
            (b.address_list.as_str(), b.allowlist_name.as_str()),
            ("tls_block", "allowlist")
        );
        assert_eq!(b.block_timeout, Duration::from_secs(86_400));
        assert!(b.remove_tcp_conn && b.check_local_addr && !b.dry_run);
    }

    #[test]
    fn full_example_parses_and_router_inherits_globals() {
        let c = with_password(|| {
            load(&format!(
                r#"
[detection]
enabled = true
monitored_ports = [443, 22]
protocols = ["tcp", "udp", 47, "icmp"]
min_orig_packets = 5
max_repl_packets = 1
block_target = "remote"
server_filter = false

[blocking]
address_list = "bad"
allowlist_name = "good"
allow = ["10.0.0.5", "192.168.0.0/16", "2001:db8::/32"]
block_timeout = "2d12h"
remove_tcp_conn = false
check_local_addr = true
dry_run = true

[daemon]
loop_delay = "5s"
max_conn_per_cycle = 20
log_level = "debug"
{ROUTER}
[router.blocking]
block_timeout = "1h"
"#
            ))
        })
        .unwrap();
        assert_eq!(c.daemon.loop_delay, Duration::from_secs(5));
        assert_eq!(c.daemon.max_conn_per_cycle, 20);
        let r = &c.routers[0];
        assert_eq!(r.address, "192.168.88.1:8728", "default API port added");
        assert_eq!(r.password.expose(), "s3cret-value");
        assert_eq!(r.detection.rules.monitored_ports, vec![443, 22]);
        assert_eq!(r.detection.rules.protocols.len(), 4);
        assert_eq!(r.detection.rules.block_target, BlockTarget::Remote);
        assert!(!r.detection.server_filter);
        assert_eq!(r.blocking.address_list, "bad");
        assert_eq!(r.blocking.allow.len(), 3);
        assert_eq!(
            r.blocking.block_timeout,
            Duration::from_secs(3600),
            "router override wins"
        );
        assert!(r.blocking.dry_run, "global value inherited");
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let e = err("[detection]\nmin_orig_packet = 3\n");
        assert!(e.contains("min_orig_packet"), "{e}");
        assert!(
            e.contains("min_orig_packets"),
            "suggests the right key: {e}"
        );
        assert!(err("[nonsense]\n").contains("nonsense"));
    }

    #[test]
    fn bad_values_name_the_key_and_the_fix() {
        let cases = [
            (
                "[blocking]\nblock_timeout = \"1x\"",
                "blocking.block_timeout",
            ),
            ("[blocking]\nallow = [\"10.0.0.300\"]", "blocking.allow"),
            (
                "[detection]\nmonitored_ports = [70000]",
                "detection.monitored_ports",
            ),
            ("[detection]\nprotocols = [\"tcpp\"]", "detection.protocols"),
            ("[detection]\nprotocols = []", "detection.protocols"),
            (
                "[detection]\nblock_target = \"both\"",
                "detection.block_target",
            ),
            (
                "[detection]\nmin_orig_packets = -1",
                "detection.min_orig_packets",
            ),
            ("[daemon]\nloop_delay = \"10ms\"", "daemon.loop_delay"),
            (
                "[daemon]\nmax_conn_per_cycle = 0",
                "daemon.max_conn_per_cycle",
            ),
            ("[daemon]\nlog_level = \"verbose\"", "daemon.log_level"),
        ];
        for (text, key) in cases {
            let e = err(text);
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn router_errors_name_the_router() {
        let e = err("[[router]]\nname = \"edge\"\nusername = \"u\"\npassword_env = \"X\"\n");
        assert!(e.contains("edge") && e.contains("address"), "{e}");
        let e = err("[[router]]\nname = \"edge\"\naddress = \"1.2.3.4\"\nusername = \"u\"\n");
        assert!(
            e.contains("password_env") && e.contains("password_file"),
            "{e}"
        );
        let e = err("[[router]]\nname = \"edge\"\naddress = \"1.2.3.4\"\nusername = \"u\"\npassword_env = \"ROSGUARD_SURELY_UNSET_VAR\"\n");
        assert!(
            e.contains("ROSGUARD_SURELY_UNSET_VAR") && e.contains("not set"),
            "{e}"
        );
        let e = err("[[router]]\nname = \"edge\"\naddress = \"1.2.3.4\"\nusername = \"u\"\npassword_env = \"X\"\ntls = true\n");
        assert!(e.contains("ca_file") && e.contains("fingerprint"), "{e}");
        let e = with_password(|| err(&format!("{ROUTER}{ROUTER}")));
        assert!(e.contains("used twice"), "{e}");
    }

    #[test]
    fn password_file_is_read_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "hunter2\n").unwrap();
        let text = "[[router]]\nname = \"r\"\naddress = \"10.0.0.1:8729\"\nusername = \"u\"\npassword_file = \"pw\"\ntls = true\ntls_insecure = true\n";
        let c = Config::from_toml(text, dir.path()).unwrap();
        assert_eq!(c.routers[0].password.expose(), "hunter2");
        assert!(!format!("{:?}", c.routers[0]).contains("hunter2"));
        assert!(matches!(c.routers[0].tls, Some(TlsConfig::Insecure)));
        let missing =
            Config::from_toml(&text.replace("\"pw\"", "\"nope\""), dir.path()).unwrap_err();
        assert!(
            format!("{missing:#}").contains("password_file"),
            "{missing:#}"
        );
    }

    /// Log lines `f` emits, as text, with a subscriber of its own.
    fn warnings_of<T>(f: impl FnOnce() -> T) -> (T, String) {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let out = tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        (out, text)
    }

    fn write_mode(path: &Path, text: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// systemd's copy in $CREDENTIALS_DIRECTORY, named after the file, wins over the file.
    #[test]
    fn password_file_is_read_from_the_systemd_credential_of_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("credentials");
        std::fs::create_dir(&creds).unwrap();
        let file = dir.path().join("password");
        write_mode(&file, "on-disk\n", 0o600);
        write_mode(&creds.join("password"), "from-credential\n", 0o400);
        let pw = read_password_file("router \"r\"", &file, Some(&creds)).unwrap();
        assert_eq!(pw.expose(), "from-credential");

        // Another file name: the credential is not for this file, the file is read.
        let other = dir.path().join("core.password");
        write_mode(&other, "core-secret\n", 0o600);
        let pw = read_password_file("router \"r\"", &other, Some(&creds)).unwrap();
        assert_eq!(pw.expose(), "core-secret");
        // No credentials directory at all: the file.
        let pw = read_password_file("router \"r\"", &file, None).unwrap();
        assert_eq!(pw.expose(), "on-disk");
    }

    /// The credential is there even when the file itself cannot be read by this user: that is
    /// the point of it. Without the credential, the error says how to pass the file.
    #[test]
    fn an_unreadable_password_file_names_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        // A directory in its place cannot be read by anyone, root included.
        std::fs::create_dir(&file).unwrap();
        let e = format!(
            "{:#}",
            read_password_file("router \"r\"", &file, None).unwrap_err()
        );
        assert!(e.contains(&file.display().to_string()), "{e}");
        assert!(e.contains("0600"), "{e}");

        std::fs::remove_dir(&file).unwrap();
        let e = format!(
            "{:#}",
            read_password_file("router \"r\"", &file, None).unwrap_err()
        );
        assert!(e.contains("does not exist") && e.contains("0600"), "{e}");
        assert!(e.contains(&file.display().to_string()), "{e}");

        let creds = dir.path().join("credentials");
        std::fs::create_dir(&creds).unwrap();
        // What the shipped unit's `SetCredential=password:\n` passes when the file is missing.
        write_mode(&creds.join("password"), "\n", 0o400);
        let e = format!(
            "{:#}",
            read_password_file("router \"r\"", &file, Some(&creds)).unwrap_err()
        );
        assert!(
            e.contains("does not exist") && e.contains("empty credential"),
            "{e}"
        );
    }

    /// A password file others can read is worth a warning, which names the file and the fix
    /// and never the password; a 0600 one is not.
    #[test]
    fn a_password_file_others_can_read_is_warned_about_without_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        write_mode(&file, "s3cret-in-file\n", 0o644);
        let (pw, logs) = warnings_of(|| read_password_file("router \"r\"", &file, None));
        assert_eq!(pw.unwrap().expose(), "s3cret-in-file");
        assert!(logs.contains("WARN"), "{logs}");
        assert!(logs.contains(&file.display().to_string()), "{logs}");
        assert!(
            logs.contains("0644") && logs.contains("chmod 0600"),
            "{logs}"
        );
        assert!(logs.contains("LoadCredential=password:"), "{logs}");
        assert!(!logs.contains("s3cret"), "{logs}");

        write_mode(&file, "s3cret-in-file\n", 0o640);
        let (_, logs) = warnings_of(|| read_password_file("router \"r\"", &file, None));
        assert!(
            logs.contains("0640"),
            "group-readable is warned about too: {logs}"
        );

        write_mode(&file, "s3cret-in-file\n", 0o600);
        let (_, logs) = warnings_of(|| read_password_file("router \"r\"", &file, None));
        assert!(logs.is_empty(), "{logs}");
    }

    #[test]
    fn fingerprints_accept_colons() {
        let fp = "AB:".repeat(31) + "AB";
        let text = format!("[[router]]\nname = \"r\"\naddress = \"10.0.0.1\"\nusername = \"u\"\npassword_env = \"ROSGUARD_TEST_PASSWORD_SET\"\ntls = true\nfingerprint = \"{fp}\"\n");
        let c = with_password(|| load(&text)).unwrap();
        assert_eq!(
            c.routers[0].address, "10.0.0.1:8729",
            "API-SSL port by default with tls"
        );
        assert!(matches!(c.routers[0].tls, Some(TlsConfig::Fingerprint(b)) if b == [0xAB; 32]));
        assert!(with_password(|| load(&text.replace(&fp, "abcd"))).is_err());
    }

    #[test]
    fn addresses_are_normalised() {
        assert_eq!(
            normalise_address("10.0.0.1", 8728).as_deref(),
            Some("10.0.0.1:8728")
        );
        assert_eq!(
            normalise_address("router.lan", 8728).as_deref(),
            Some("router.lan:8728")
        );
        assert_eq!(
            normalise_address("router.lan:9000", 8728).as_deref(),
            Some("router.lan:9000")
        );
        assert_eq!(
            normalise_address("2001:db8::1", 8729).as_deref(),
            Some("[2001:db8::1]:8729")
        );
        assert_eq!(
            normalise_address("[2001:db8::1]:8728", 8729).as_deref(),
            Some("[2001:db8::1]:8728")
        );
        assert_eq!(normalise_address("host:0", 8728), None);
        assert_eq!(normalise_address("a b", 8728), None);
    }

    #[test]
    fn select_names_the_known_routers() {
        let c = with_password(|| load(ROUTER)).unwrap();
        assert_eq!(c.select(None).unwrap().len(), 1);
        let e = c.select(Some("edge")).unwrap_err().to_string();
        assert!(e.contains("edge") && e.contains("core"), "{e}");
        assert!(load("").unwrap().select(None).is_err());
    }
}

#[cfg(test)]
mod example_file {
    use super::*;

    /// The shipped example must stay a valid config with the documented defaults.
    #[test]
    fn the_shipped_example_parses_with_the_defaults_it_documents() {
        std::env::set_var("ROSGUARD_PASSWORD", "example");
        let text = include_str!("../../../dist/rosguard.example.toml");
        // The example's password file exists only on an installed system; the environment
        // variable it names as the alternative stands in for it here.
        let file = "password_file = \"/etc/rosguard/password\"";
        assert!(
            text.contains(file),
            "the example uses the installed password file"
        );
        let text = text.replace(file, "password_env = \"ROSGUARD_PASSWORD\"");
        let c = Config::from_toml(&text, Path::new("/")).unwrap();
        let r = &c.routers[0];
        assert_eq!(r.detection, DetectionSettings::default());
        assert_eq!(r.blocking, BlockingSettings::default());
        // state_dir is set to the shipped unit's StateDirectory; the rest is the default.
        assert_eq!(
            c.daemon.state_dir.as_deref(),
            Some(Path::new("/var/lib/rosguard"))
        );
        let daemon = DaemonSettings {
            state_dir: None,
            ..c.daemon.clone()
        };
        assert_eq!(daemon, DaemonSettings::default());
    }
}
