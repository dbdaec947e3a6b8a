//! `rosguard stats` (the routers' health and the cumulative counters) and `rosguard status`
//! (what the running daemon says about itself and each router, from the state store, without
//! a router password).

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Result;
use rosguard_core::backend::Backend;
use rosguard_core::model::Family;
use rosguard_store::Store;
use routeros_proto::Command;
use serde::Serialize;

use super::common::{connect, exit, format_unix, router_failed};
use crate::config::Config;
use crate::outln;
use crate::output::printable;
use crate::state::{secs, unix_now};

#[derive(Serialize, Default)]
struct RouterStats {
    router: String,
    address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    version: Option<String>,
    board: Option<String>,
    uptime: Option<String>,
    cpu_load: Option<String>,
    connections_v4: Option<u64>,
    connections_v6: Option<u64>,
    block_list: String,
    block_entries: Option<usize>,
    block_entries_rosguard: Option<usize>,
    allowlist_entries: Option<usize>,
    /// Cumulative counters from the state store (cycles, flagged, blocked, dry_run_blocked,
    /// skipped_*, cap_*).
    history: BTreeMap<String, u64>,
}

/// `rosguard stats`. `store` is `None` when there is no state yet.
pub async fn stats(
    cfg: &Config,
    only: Option<&str>,
    json: bool,
    store: Option<&Store>,
) -> Result<ExitCode> {
    let mut all = Vec::new();
    let mut failed = false;
    for router in cfg.select(only)? {
        let mut s = RouterStats {
            router: router.name.clone(),
            address: router.address.clone(),
            block_list: router.settings.blocking.address_list.clone(),
            history: match store {
                Some(st) => st.counters(&router.name)?,
                None => BTreeMap::new(),
            },
            ..RouterStats::default()
        };
        let result = async {
            let mut b = connect(router, cfg.daemon.max_candidates).await?;
            let client = b.client()?.clone();
            let res = client
                .system_resource()
                .await
                .map_err(|e| rosguard_routeros::backend_error(e, "reading /system/resource"))?;
            s.version = res.get_str("version").map(str::to_owned);
            s.board = res.get_str("board-name").map(str::to_owned);
            s.uptime = res.get_str("uptime").map(str::to_owned);
            s.cpu_load = res.get_str("cpu-load").map(str::to_owned);
            for f in Family::BOTH {
                let n = client
                    .count(Command::new(&f.path("firewall/connection/print")))
                    .await;
                match (f, n) {
                    (Family::V4, Ok(n)) => s.connections_v4 = Some(n),
                    (Family::V6, Ok(n)) => s.connections_v6 = Some(n),
                    (Family::V4, Err(e)) => {
                        return Err(rosguard_routeros::backend_error(e, "counting connections"))
                    }
                    (Family::V6, Err(_)) => {}
                }
            }
            let blocked = b.list(&router.settings.blocking.address_list).await?;
            s.block_entries = Some(blocked.len());
            s.block_entries_rosguard = Some(blocked.iter().filter(|e| e.is_rosguard()).count());
            s.allowlist_entries = Some(
                b.list(&router.settings.blocking.allowlist_name)
                    .await?
                    .len(),
            );
            b.close().await;
            Ok::<(), rosguard_core::BackendError>(())
        }
        .await;
        if let Err(e) = result {
            if !json {
                router_failed(&mut failed, &router.name, &e);
            }
            failed = true;
            s.error = Some(e.message);
        }
        all.push(s);
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(exit(failed));
    }
    let opt = |v: &Option<String>| v.as_deref().map(printable).unwrap_or_else(|| "?".into());
    for s in &all {
        outln!("router {} ({})", s.router, s.address);
        match &s.error {
            Some(e) => outln!("  UNREACHABLE: {}", printable(e)),
            None => {
                outln!(
                    "  RouterOS {} on {}, up {}, cpu {}%",
                    opt(&s.version),
                    opt(&s.board),
                    opt(&s.uptime),
                    opt(&s.cpu_load)
                );
                outln!(
                    "  connections: {} IPv4, {}",
                    s.connections_v4.unwrap_or(0),
                    s.connections_v6
                        .map_or("no IPv6 table".to_string(), |n| format!("{n} IPv6"))
                );
                outln!(
                    "  {}: {} entries ({} by rosguard); allowlist: {} entries",
                    s.block_list,
                    s.block_entries.unwrap_or(0),
                    s.block_entries_rosguard.unwrap_or(0),
                    s.allowlist_entries.unwrap_or(0)
                );
            }
        }
        if s.history.is_empty() {
            outln!("  no history in the state store yet");
        } else {
            let (dry, real): (Vec<_>, Vec<_>) = s
                .history
                .iter()
                .partition(|(k, _)| k.starts_with("dry_run_"));
            let line = |v: &[(&String, &u64)]| {
                v.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            outln!("  since the state began: {}", line(&real));
            if !dry.is_empty() {
                outln!("  dry-run decisions (not applied): {}", line(&dry));
            }
            if s.history.keys().any(|k| k.starts_with("cap_")) {
                outln!("  a safety cap was hit (cap_*): see the log, and raise the cap if the blocks were wanted");
            }
        }
    }
    Ok(exit(failed))
}

/// True when a process with this pid runs and is a rosguard.
fn alive(pid: u64) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("rosguard"))
        .unwrap_or(false)
}

/// `rosguard status`: like `fail2ban-client status`, from what the daemon records.
pub fn status(cfg: &Config, store: Option<&Store>, json: bool) -> Result<ExitCode> {
    let rows = match store {
        Some(s) => s.statuses()?,
        None => Vec::new(),
    };
    let now = secs(unix_now());
    let stale_after = secs(cfg.daemon.loop_delay * 3) + 30 + secs(cfg.daemon.cycle_deadline);
    let daemon = rows.iter().find(|r| r.key.is_empty());
    let pid = daemon.and_then(|d| d.json["pid"].as_u64());
    let running = pid.is_some_and(alive);
    if json {
        let routers: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .filter(|r| !r.key.is_empty())
            .map(|r| {
                let mut v = r.json.clone();
                v["updated_unix"] = r.updated_unix.into();
                (r.key.clone(), v)
            })
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "running": running,
                "daemon": daemon.map(|d| &d.json),
                "routers": routers,
            }))?
        );
        return Ok(exit(!running));
    }
    match (daemon, running) {
        (Some(d), true) => outln!(
            "rosguard {} running (pid {}) since {}",
            d.json["version"].as_str().unwrap_or("?"),
            pid.unwrap_or(0),
            format_unix(d.json["started_unix"].as_i64().unwrap_or(0))
        ),
        (Some(d), false) => outln!(
            "rosguard is not running (last ran as pid {}, started {})",
            pid.unwrap_or(0),
            format_unix(d.json["started_unix"].as_i64().unwrap_or(0))
        ),
        (None, _) => outln!("rosguard has not run with this state directory yet"),
    }
    for r in cfg.routers.iter() {
        let Some(row) = rows.iter().find(|x| x.key == r.name) else {
            outln!("router {}: no status recorded yet", r.name);
            continue;
        };
        let j = &row.json;
        let stale = now - row.updated_unix > stale_after;
        let state = match (j["connected"].as_bool(), j["last_error"].as_str()) {
            (Some(true), None) => "connected".to_owned(),
            (Some(true), Some(e)) => format!("connected, last cycle failed: {}", printable(e)),
            (_, Some(e)) => format!("in backoff: {}", printable(e)),
            _ => "not connected".to_owned(),
        };
        outln!(
            "router {} ({}): {state}{}",
            r.name,
            printable(j["address"].as_str().unwrap_or("?")),
            if stale {
                " (stale: no news for a while)"
            } else {
                ""
            }
        );
        if let Some(t) = j["last_cycle_unix"].as_i64() {
            outln!("  last cycle: {}", format_unix(t));
        }
        if let Some(n) = j["list_size"].as_u64() {
            outln!("  block list: {n} of max_list_size {}", j["max_list_size"]);
        }
        if let Some(n) = j["blocks_last_hour"].as_u64() {
            outln!(
                "  blocks in the last hour: {n} of max_blocks_per_hour {}",
                j["max_blocks_per_hour"]
            );
        }
        if let Some(caps) = j["caps_hit"].as_array().filter(|c| !c.is_empty()) {
            let caps: Vec<String> = caps
                .iter()
                .filter_map(|c| c.as_str())
                .map(printable)
                .collect();
            outln!("  caps hit in the last cycle: {}", caps.join(", "));
        }
        if j["dry_run"].as_bool() == Some(true) {
            outln!("  dry run: nothing is changed on this router");
        }
    }
    Ok(exit(!running))
}
