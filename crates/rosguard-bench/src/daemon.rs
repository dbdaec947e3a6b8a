//! The daemon side: config files for the `rosguard` binary under test and the two ways it is
//! run (`rosguard once --json`, `rosguard run`).
//!
//! Configs are written as TOML next to the results, one per purpose, with the script's
//! defaults except the keys a benchmark has to set (the simulator's port, `server_filter`, the
//! caps that would otherwise stop a 10,000-address block). The password comes from an
//! environment variable that is set, empty, for each child (the simulator's `admin` has an
//! empty password). It deliberately does not parse rosguard's config: it only writes one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::child::{self, Finished, Running, Spec};

/// The environment variable the generated configs name in `password_env`.
const PASSWORD_ENV: &str = "ROSGUARD_BENCH_PASSWORD";

/// The keys a benchmark sets; everything else keeps rosguard's defaults.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub port: u16,
    pub server_filter: bool,
    pub address_list: String,
    pub state_dir: PathBuf,
    /// `daemon.loop_delay`, for `rosguard run`.
    pub loop_delay: Duration,
    /// Act on every flagged connection in one cycle (caps off), instead of the script's 50.
    pub unlimited: bool,
    /// `blocking.remove_tcp_conn`.
    pub remove_tcp_conn: bool,
}

impl DaemonConfig {
    pub fn new(port: u16, state_dir: PathBuf) -> Self {
        Self {
            port,
            server_filter: true,
            address_list: "tls_block".into(),
            state_dir,
            loop_delay: Duration::from_secs(2),
            unlimited: false,
            remove_tcp_conn: true,
        }
    }

    fn to_toml(&self) -> String {
        let mut caps = String::new();
        let mut per_cycle = String::new();
        if self.unlimited {
            caps = "max_blocks_per_hour = 0\nmax_list_size = 0\n".into();
            per_cycle = "max_conn_per_cycle = 1000000\n".into();
        }
        format!(
            "# Written by rosguard-bench.\n\
             [detection]\n\
             server_filter = {filter}\n\
             \n\
             [blocking]\n\
             address_list = \"{list}\"\n\
             remove_tcp_conn = {remove}\n\
             {caps}\
             \n\
             [daemon]\n\
             loop_delay = \"{delay}ms\"\n\
             {per_cycle}\
             log_level = \"warning\"\n\
             state_dir = \"{state}\"\n\
             \n\
             [[router]]\n\
             name = \"sim\"\n\
             address = \"127.0.0.1:{port}\"\n\
             username = \"admin\"\n\
             password_env = \"{PASSWORD_ENV}\"\n",
            filter = self.server_filter,
            list = self.address_list,
            remove = self.remove_tcp_conn,
            delay = self.loop_delay.as_millis(),
            state = self.state_dir.display().to_string().replace('\\', "\\\\"),
            port = self.port,
        )
    }

    /// Writes the config to `path` and creates its state directory.
    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::create_dir_all(&self.state_dir)
            .with_context(|| format!("creating {}", self.state_dir.display()))?;
        std::fs::write(path, self.to_toml()).with_context(|| format!("writing {}", path.display()))
    }
}

/// The fields of rosguard's JSON cycle report the harness reads.
#[derive(Debug, Clone, Deserialize)]
pub struct CycleReport {
    pub scanned: u64,
    pub table_size: u64,
    pub flagged: u64,
    pub duration_ms: u64,
    #[serde(default)]
    pub blocks: Vec<BlockRecord>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BlockRecord {
    pub outcome: String,
}

impl CycleReport {
    /// Blocks that were added (or would be, in a dry run).
    pub fn added(&self) -> usize {
        self.blocks
            .iter()
            .filter(|b| matches!(b.outcome.as_str(), "added" | "would-add"))
            .count()
    }
}

/// `rosguard once -c CONFIG --json [--dry-run]`, measured as its own process.
pub fn once(
    rosguard: &Path,
    config: &Path,
    dry_run: bool,
    log: &Path,
) -> Result<(CycleReport, Finished)> {
    let mut spec = Spec::new(rosguard)
        .arg("once")
        .arg("-c")
        .arg(config)
        .arg("--json");
    if dry_run {
        spec = spec.arg("--dry-run");
    }
    let spec = spec.env(PASSWORD_ENV, "").env_remove("RUST_LOG");
    let done = child::run(spec, log)?;
    if done.status != 0 {
        bail!(
            "`rosguard once` exited with {}; its log ({}) ends with:\n{}",
            done.status,
            log.display(),
            child::tail(log, 10)
        );
    }
    let reports: Vec<CycleReport> = serde_json::from_slice(&done.stdout)
        .context("reading the JSON report of `rosguard once`")?;
    let Some(report) = reports.into_iter().next() else {
        bail!("`rosguard once` reported no cycle");
    };
    Ok((report, done))
}

/// `rosguard run -c CONFIG`, left running.
pub fn spawn_run(rosguard: &Path, config: &Path, log: &Path) -> Result<Running> {
    let spec = Spec::new(rosguard)
        .arg("run")
        .arg("-c")
        .arg(config)
        .env(PASSWORD_ENV, "")
        .env_remove("RUST_LOG");
    Running::spawn(spec, log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_every_key_it_sets() {
        let mut c = DaemonConfig::new(18728, PathBuf::from("/tmp/state"));
        c.server_filter = false;
        c.unlimited = true;
        let t = c.to_toml();
        for needle in [
            "server_filter = false",
            "address = \"127.0.0.1:18728\"",
            "loop_delay = \"2000ms\"",
            "max_conn_per_cycle = 1000000",
            "max_blocks_per_hour = 0",
            "state_dir = \"/tmp/state\"",
        ] {
            assert!(t.contains(needle), "{needle} missing in\n{t}");
        }
    }
}
