//! The configuration file: TOML in, checked settings out, in one pass.
//!
//! Each `[[router]]`'s `[router.detection]` and `[router.blocking]` tables are merged over the
//! global `[detection]` and `[blocking]` ones, key by key (nested tables too), and the result
//! is deserialized once into the core's [`Detection`] and [`Blocking`]: a new key is one field
//! there. Every `cfg*` global of the original RouterOS script keeps its meaning and default.
//! Unknown keys are errors, durations are RouterOS durations or a bare number of seconds, and
//! every error names the key (`detection.min_orig_packets: expected an integer, got
//! "three"`) and says how to fix it. Router passwords come from an environment variable or a
//! file, never from the config itself.
//!
//! This module does not touch the network; it reads the config file and the password sources
//! it names.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rosguard_core::settings::{duration, Blocking, CycleLimits, Detection, Settings};
use routeros_client::{ClientConfig, Secret, TlsConfig};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use toml::{Table, Value};

/// Default RouterOS API ports.
const API_PORT: u16 = 8728;
const API_SSL_PORT: u16 = 8729;

/// Where the config is looked for when neither `-c` nor `ROSGUARD_CONFIG` says.
pub const DEFAULT_CONFIG: &str = "/etc/rosguard/rosguard.toml";

/// Where the state lives when nothing says otherwise: the same for the service and an admin's
/// shell, so `why`, `unblock` and the daemon agree.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/rosguard";

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub daemon: DaemonSettings,
    pub routers: Vec<RouterConfig>,
    /// `[record]`: the daemon's rolling recording (off by default).
    pub record: RecordSettings,
}

/// cfgLogLevel values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    #[default]
    #[serde(alias = "warn")]
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

/// `[daemon]`: how the daemon runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonSettings {
    /// cfgLoopDelay: pause between two cycles.
    #[serde(with = "duration")]
    pub loop_delay: Duration,
    /// cfgMaxConnPerCycle: flagged connections acted on per cycle.
    pub max_conn_per_cycle: usize,
    /// cfgLogLevel.
    pub log_level: LogLevel,
    /// Where the SQLite state lives; `None` = `$STATE_DIRECTORY`, else `/var/lib/rosguard`.
    pub state_dir: Option<PathBuf>,
    /// Serve Prometheus `/metrics` and `/health` here.
    pub metrics_listen: Option<SocketAddr>,
    /// How often blocks that should still stand are re-checked and restored.
    #[serde(with = "duration")]
    pub reconcile_interval: Duration,
    /// Block an address on every router once one router blocked it.
    pub share_blocks: bool,
    /// The longest one cycle may take (reads and writes); past it the cycle is abandoned and
    /// the connection dropped.
    #[serde(with = "duration")]
    pub cycle_deadline: Duration,
    /// The most candidate rows one poll keeps; a table with more is not acted on that cycle.
    pub max_candidates: usize,
    /// The most HTTP connections the metrics listener serves at once.
    pub metrics_max_connections: usize,
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
            cycle_deadline: Duration::from_secs(60),
            max_candidates: rosguard_routeros::DEFAULT_MAX_CANDIDATES,
            metrics_max_connections: 64,
        }
    }
}

impl DaemonSettings {
    fn validate(&self) -> Result<()> {
        if self.loop_delay < Duration::from_millis(100) {
            bail!(
                "daemon.loop_delay: {} is below 100ms and would hammer the router; use e.g. \"2s\"",
                fmt_duration(self.loop_delay)
            );
        }
        if self.max_conn_per_cycle == 0 {
            bail!("daemon.max_conn_per_cycle: 0 must be at least 1 (the script's default is 50)");
        }
        if self.reconcile_interval < Duration::from_secs(1) {
            bail!("daemon.reconcile_interval: is too short; use at least 1s");
        }
        if self.cycle_deadline < Duration::from_secs(1) {
            bail!("daemon.cycle_deadline: is too short; use at least 1s (default 60s)");
        }
        if self.max_candidates == 0 {
            bail!("daemon.max_candidates: must be at least 1 (default 100000)");
        }
        if self.metrics_max_connections == 0 {
            bail!("daemon.metrics_max_connections: must be at least 1 (default 64)");
        }
        Ok(())
    }

    /// The state directory: `state_dir` from the config, else systemd's `$STATE_DIRECTORY`,
    /// else `/var/lib/rosguard`.
    pub fn resolved_state_dir(&self) -> PathBuf {
        if let Some(d) = &self.state_dir {
            return d.clone();
        }
        if let Some(d) = std::env::var_os("STATE_DIRECTORY").filter(|v| !v.is_empty()) {
            // systemd may list several, separated by ':'.
            let first = d
                .to_string_lossy()
                .split(':')
                .next()
                .unwrap_or_default()
                .to_owned();
            return PathBuf::from(first);
        }
        PathBuf::from(DEFAULT_STATE_DIR)
    }
}

/// The smallest `record.max_bytes`: a file must hold its header and at least one poll.
pub const MIN_RECORD_BYTES: u64 = 64 << 10;
/// The most rotated files `record.keep` may ask for per router.
pub const MAX_RECORD_KEEP: usize = 100;

/// `[record]`: while the daemon runs, every router's polls are appended to `<dir>/<router>.rec`
/// (the format `rosguard record` writes), rotated to `<router>.1.rec` .. `<router>.<keep>.rec`
/// when a file would pass `max_bytes`. At most `max_bytes * (keep + 1)` bytes per router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordSettings {
    /// The directory of the recordings; unset: the daemon records nothing.
    pub dir: Option<PathBuf>,
    /// The most bytes one file holds; the poll that would pass it starts a new file.
    pub max_bytes: u64,
    /// Rotated files kept per router besides the current one; older ones are deleted.
    pub keep: usize,
}

impl Default for RecordSettings {
    fn default() -> Self {
        Self {
            dir: None,
            max_bytes: 256 << 20,
            keep: 4,
        }
    }
}

impl RecordSettings {
    fn validate(&self) -> Result<()> {
        if self.max_bytes < MIN_RECORD_BYTES {
            bail!(
                "record.max_bytes: {} is below {MIN_RECORD_BYTES} (64 KiB), too small for a header and a poll; the default is 268435456 (256 MiB)",
                self.max_bytes
            );
        }
        if self.keep > MAX_RECORD_KEEP {
            bail!(
                "record.keep: {} is more than {MAX_RECORD_KEEP} rotated files; raise record.max_bytes instead (default keep = 4)",
                self.keep
            );
        }
        if let Some(d) = &self.dir {
            if d.as_os_str().is_empty() {
                bail!("record.dir: is empty; give a directory, e.g. \"/var/lib/rosguard/recordings\", or remove the key to record nothing");
            }
        }
        Ok(())
    }

    /// The current recording file of `router` (`None`: recording is off). The router's name
    /// becomes a file name: every character other than ASCII letters, digits, `-` and `_` is
    /// written as `_`, so no name reaches outside `dir` or looks like a rotated file.
    pub fn current_file(&self, router: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(dir.join(format!("{}.rec", record_file_stem(router))))
    }

    /// Refuses routers whose recordings would share files.
    fn check_names(&self, routers: &[RouterConfig]) -> Result<()> {
        if self.dir.is_none() {
            return Ok(());
        }
        let stems: Vec<(String, &str)> = routers
            .iter()
            .map(|r| (record_file_stem(&r.name), r.name.as_str()))
            .collect();
        for (i, (a, an)) in stems.iter().enumerate() {
            if let Some((_, bn)) = stems[i + 1..].iter().find(|(b, _)| b == a) {
                bail!(
                    "record: routers {an:?} and {bn:?} would both record to {a}.rec (a name's characters other than letters, digits, - and _ become _); rename one of them"
                );
            }
        }
        Ok(())
    }
}

/// A router's name as the stem of its recording files.
fn record_file_stem(router: &str) -> String {
    router
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
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
    pub tls_server_name: Option<String>,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// The most rows, and bytes, one collected reply may hold (lists, addresses, routes).
    pub max_reply_rows: usize,
    pub max_reply_bytes: usize,
    /// The decision settings: the merged `[detection]` and `[blocking]`, and the `[daemon]`
    /// cycle limits.
    pub settings: Settings,
}

impl std::fmt::Debug for RouterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterConfig")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("username", &self.username)
            .field("password", &"***")
            .field("tls", &self.tls.as_ref().map(tls_mode_name))
            .field("settings", &self.settings)
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
            || self.tls_server_name != other.tls_server_name
            || self.connect_timeout != other.connect_timeout
            || self.command_timeout != other.command_timeout
            || self.max_reply_rows != other.max_reply_rows
            || self.max_reply_bytes != other.max_reply_bytes
    }

    /// The client settings for this router.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new(
            self.name.clone(),
            self.address.clone(),
            self.username.clone(),
            self.password.clone(),
        );
        c.tls = self.tls.clone();
        c.tls_server_name = self.tls_server_name.clone();
        c.connect_timeout = self.connect_timeout;
        c.login_timeout = self.connect_timeout;
        c.command_timeout = self.command_timeout;
        c.max_reply_rows = self.max_reply_rows;
        c.max_reply_bytes = self.max_reply_bytes;
        c
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

fn fmt_duration(d: Duration) -> String {
    routeros_proto::format_duration(d)
}

// ---- the file format ------------------------------------------------------------------------

/// The connection keys of a `[[router]]` (its `detection` and `blocking` tables are merged
/// separately).
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
    tls_server_name: Option<String>,
    #[serde(default = "default_connect_timeout", with = "duration")]
    connect_timeout: Duration,
    #[serde(default = "default_command_timeout", with = "duration")]
    command_timeout: Duration,
    #[serde(default = "default_max_reply_rows")]
    max_reply_rows: usize,
    #[serde(default = "default_max_reply_bytes")]
    max_reply_bytes: usize,
    #[serde(default)]
    detection: Table,
    #[serde(default)]
    blocking: Table,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_command_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_reply_rows() -> usize {
    ClientConfig::DEFAULT_MAX_REPLY_ROWS
}

fn default_max_reply_bytes() -> usize {
    ClientConfig::DEFAULT_MAX_REPLY_BYTES
}

/// `over` merged into `base`, key by key; nested tables merge too, anything else is replaced.
fn merge(mut base: Table, over: &Table) -> Table {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => {
                let merged = merge(std::mem::take(b), o);
                *b = merged;
            }
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
    base
}

/// Deserializes `table` as a `T`, naming the key of any error under `at`.
fn read<T: DeserializeOwned>(table: Table, at: &str) -> Result<T> {
    serde_path_to_error::deserialize::<_, T>(Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        let key = if path == "." || path.is_empty() {
            at.to_owned()
        } else {
            format!("{at}.{path}")
        };
        anyhow!("{key}: {}", humanize(&e.into_inner().to_string()))
    })
}

/// serde's type names in the words of a config file: `invalid type: string "three",
/// expected u64` -> `expected an integer, got "three"`.
fn humanize(message: &str) -> String {
    let message = message.trim().replace('\n', " ");
    let Some(rest) = message.strip_prefix("invalid type: ") else {
        return message;
    };
    let Some((got, expected)) = rest.rsplit_once(", expected ") else {
        return message;
    };
    // Some deserializers name the key again: "expected u64 in `min_orig_packets`".
    let expected = expected.split(" in `").next().unwrap_or(expected);
    let expected = match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" | "i64" | "i32" => "an integer (0 or more)",
        "f64" | "f32" => "a number",
        "a boolean" | "bool" => "true or false",
        "a string" | "string" => "a string",
        other => other,
    };
    let got = got
        .strip_prefix("string ")
        .or_else(|| got.strip_prefix("integer "))
        .or_else(|| got.strip_prefix("floating point "))
        .unwrap_or(got);
    format!("expected {expected}, got {got}")
}

impl RawRouter {
    fn check(
        self,
        index: usize,
        detection: &Table,
        blocking: &Table,
        cycle: &CycleLimits,
        base: &Path,
        secrets: Secrets,
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
            Some(u) if u.chars().any(char::is_control) => {
                bail!("{at}.username: {u:?} holds control characters; use the RouterOS user name as written")
            }
            Some(u) if !u.trim().is_empty() => u.clone(),
            _ => bail!(
                "{at}: username is missing; use a RouterOS user with the read,write,api policies"
            ),
        };
        if self.tls_server_name.is_some() && tls.is_none() {
            bail!("{at}.tls_server_name: only applies with tls = true");
        }
        for (key, t) in [
            ("connect_timeout", self.connect_timeout),
            ("command_timeout", self.command_timeout),
        ] {
            if t < Duration::from_secs(1) {
                bail!("{at}.{key}: is too short; use at least 1s");
            }
        }
        if self.max_reply_rows == 0 || self.max_reply_bytes < 4096 {
            bail!("{at}: max_reply_rows must be at least 1 and max_reply_bytes at least 4096 (defaults {} and {})", ClientConfig::DEFAULT_MAX_REPLY_ROWS, ClientConfig::DEFAULT_MAX_REPLY_BYTES);
        }
        let password = match secrets {
            Secrets::Read => {
                secrets::read_password(&at, &self.password_env, &self.password_file, base)?
            }
            Secrets::Skip => Secret::new(String::new()),
        };
        let det_at = format!("{at}.detection");
        let blk_at = format!("{at}.blocking");
        let detection: Detection = read(merge(detection.clone(), &self.detection), &det_at)?;
        detection.validate(&det_at)?;
        let blocking: Blocking = read(merge(blocking.clone(), &self.blocking), &blk_at)?;
        blocking.validate(&blk_at)?;
        Ok(RouterConfig {
            name,
            address,
            username,
            password,
            tls,
            tls_server_name: self.tls_server_name,
            connect_timeout: self.connect_timeout,
            command_timeout: self.command_timeout,
            max_reply_rows: self.max_reply_rows,
            max_reply_bytes: self.max_reply_bytes,
            settings: Settings {
                detection,
                blocking,
                cycle: cycle.clone(),
            },
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
        return Some(SocketAddr::new(ip, default_port).to_string());
    }
    if a.parse::<SocketAddr>().is_ok() {
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

/// A TOML syntax error on one line: where, and what.
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

/// Whether loading a config reads the router passwords.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    /// Read them: the command talks to routers.
    Read,
    /// Leave them: the command only reads the state store (`why`, `status`).
    Skip,
}

/// A section of the file as a table (absent = empty).
fn section(root: &mut Table, key: &str) -> Result<Table> {
    match root.remove(key) {
        None => Ok(Table::new()),
        Some(Value::Table(t)) => Ok(t),
        Some(other) => bail!(
            "{key}: expected a table ([{key}]), got {}",
            other.type_str()
        ),
    }
}

impl Config {
    /// Parses and checks a config. `base` is where relative paths (password_file, ca_file,
    /// state_dir, record.dir) start.
    pub fn from_toml(text: &str, base: &Path) -> Result<Config> {
        Self::from_toml_with(text, base, Secrets::Read)
    }

    /// [`Config::from_toml`], reading the passwords or not.
    pub fn from_toml_with(text: &str, base: &Path, secrets: Secrets) -> Result<Config> {
        let mut root: Table =
            toml::from_str(text).map_err(|e| anyhow!("{}", toml_error_line(text, &e)))?;
        let detection = section(&mut root, "detection")?;
        let blocking = section(&mut root, "blocking")?;
        let daemon_table = section(&mut root, "daemon")?;
        let record_table = section(&mut root, "record")?;
        let routers = match root.remove("router") {
            None => Vec::new(),
            Some(Value::Array(a)) => a,
            Some(_) => bail!("router: expected [[router]] entries"),
        };
        if let Some(unknown) = root.keys().next() {
            bail!("{unknown}: unknown section; the sections are [detection], [blocking], [daemon], [record] and [[router]]");
        }
        let mut daemon: DaemonSettings = read(daemon_table, "daemon")?;
        daemon.validate()?;
        if let Some(d) = &daemon.state_dir {
            if d.is_relative() {
                daemon.state_dir = Some(base.join(d));
            }
        }
        let mut record: RecordSettings = read(record_table, "record")?;
        record.validate()?;
        if let Some(d) = &record.dir {
            if d.is_relative() {
                record.dir = Some(base.join(d));
            }
        }
        // Check the global sections on their own too, so their errors name the global key.
        read::<Detection>(detection.clone(), "detection")?.validate("detection")?;
        read::<Blocking>(blocking.clone(), "blocking")?.validate("blocking")?;
        let cycle = CycleLimits {
            max_conn_per_cycle: daemon.max_conn_per_cycle,
            reconcile_interval: daemon.reconcile_interval,
            loop_delay: daemon.loop_delay,
        };
        let mut out: Vec<RouterConfig> = Vec::new();
        for (i, r) in routers.into_iter().enumerate() {
            let Value::Table(t) = r else {
                bail!("router[{i}]: expected a [[router]] table");
            };
            let raw: RawRouter = read(t, &format!("router[{i}]"))?;
            let r = raw.check(i, &detection, &blocking, &cycle, base, secrets)?;
            if out.iter().any(|o| o.name == r.name) {
                bail!(
                    "router {:?}: the name is used twice; router names must be unique",
                    r.name
                );
            }
            out.push(r);
        }
        record.check_names(&out)?;
        Ok(Config {
            daemon,
            routers: out,
            record,
        })
    }

    /// A config with no routers and every default: what `rosguard demo` starts from.
    pub fn defaults() -> Config {
        Config {
            daemon: DaemonSettings::default(),
            routers: Vec::new(),
            record: RecordSettings::default(),
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

    /// The effective settings of every router, overrides applied, as TOML
    /// (`check-config --print`). Passwords are never shown, only where they come from.
    pub fn effective_toml(&self) -> Result<String> {
        #[derive(Serialize)]
        struct Effective<'a> {
            daemon: &'a DaemonSettings,
            record: &'a RecordSettings,
            router: Vec<EffectiveRouter<'a>>,
        }
        #[derive(Serialize)]
        struct EffectiveRouter<'a> {
            name: &'a str,
            address: &'a str,
            username: &'a str,
            tls: String,
            #[serde(with = "duration")]
            connect_timeout: Duration,
            #[serde(with = "duration")]
            command_timeout: Duration,
            max_reply_rows: usize,
            max_reply_bytes: usize,
            detection: &'a Detection,
            blocking: &'a Blocking,
        }
        let e = Effective {
            daemon: &self.daemon,
            record: &self.record,
            router: self
                .routers
                .iter()
                .map(|r| EffectiveRouter {
                    name: &r.name,
                    address: &r.address,
                    username: &r.username,
                    tls: r
                        .tls
                        .as_ref()
                        .map_or_else(|| "off".to_owned(), tls_mode_name),
                    connect_timeout: r.connect_timeout,
                    command_timeout: r.command_timeout,
                    max_reply_rows: r.max_reply_rows,
                    max_reply_bytes: r.max_reply_bytes,
                    detection: &r.settings.detection,
                    blocking: &r.settings.blocking,
                })
                .collect(),
        };
        Ok(toml::to_string(&e)?)
    }
}

/// Reads and checks the config file at `path`.
pub fn read_config(path: &Path) -> Result<Config> {
    read_config_with(path, Secrets::Read)
}

/// [`read_config`], reading the passwords or not.
pub fn read_config_with(path: &Path, secrets: Secrets) -> Result<Config> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read config file {}; give another with -c FILE or ROSGUARD_CONFIG",
            path.display()
        )
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Config::from_toml_with(&text, &base, secrets)
        .with_context(|| format!("config file {}", path.display()))
}

mod secrets;
#[cfg(test)]
mod tests;
