//! What the one-shot commands share: connecting to a router, reading an address argument,
//! showing times, and reporting per-router failures for the exit code.

use std::net::IpAddr;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use rosguard_core::backend::Backend;
use rosguard_core::outcome::BackendError;
use rosguard_routeros::RouterOsBackend;

use crate::config::RouterConfig;
use crate::output::printable;

/// Connects to one router.
pub async fn connect(
    router: &RouterConfig,
    max_candidates: usize,
) -> Result<RouterOsBackend, BackendError> {
    let mut b = RouterOsBackend::new(router.client_config(), max_candidates);
    b.connect().await?;
    Ok(b)
}

/// Parses an address argument.
pub fn parse_address(address: &str) -> Result<IpAddr> {
    address.trim().parse().map_err(|_| {
        anyhow!(
            "{:?} is not an IP address; give one like 203.0.113.45 or 2001:db8::1",
            printable(address)
        )
    })
}

/// `2026-11-24 16:30:02 UTC`.
pub fn format_unix(t: i64) -> String {
    let st = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64);
    humantime::format_rfc3339_seconds(st)
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC")
}

/// Reports a router that failed and remembers it for the exit code.
pub(crate) fn router_failed(failed: &mut bool, router: &str, e: &dyn std::fmt::Display) {
    *failed = true;
    eprintln!("error: router {router}: {}", printable(&e.to_string()));
}

/// The exit code of a command that went over several routers.
pub(crate) fn exit(failed: bool) -> ExitCode {
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
