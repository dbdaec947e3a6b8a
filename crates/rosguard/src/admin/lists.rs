//! The list commands: `list`, `unblock`, `clear`, `block`, `allow`.
//!
//! An operator's decision is recorded first, in the store the daemon reads, for every selected
//! router (also one that cannot be reached right now), then carried out on each router.

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use rosguard_core::backend::Backend;
use rosguard_core::decide::{context, protected_of};
use rosguard_core::model::{ListEntry, ENTRY_SIGNATURE};
use rosguard_core::observation::ObservePlan;
use rosguard_core::outcome::AddResult;
use rosguard_core::policy::truncate_to;
use rosguard_store::{CycleRecord, NewBlock};
use routeros_proto::format_duration;
use serde::Serialize;
use serde_json::json;

use super::common::{connect, exit, format_unix, parse_address, router_failed};
use crate::config::{Config, RouterConfig};
use crate::outln;
use crate::output::printable;
use crate::state::{secs, unix_now, SharedStore, StoreHistory};

#[derive(Serialize)]
struct ListRow {
    router: String,
    id: String,
    address: String,
    timeout: Option<String>,
    dynamic: bool,
    disabled: bool,
    comment: Option<String>,
}

#[derive(Serialize)]
struct RouterList {
    router: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    entries: Option<Vec<ListRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `rosguard list`.
pub async fn list(cfg: &Config, only: Option<&str>, json: bool) -> Result<ExitCode> {
    let mut out = Vec::new();
    let mut failed = false;
    for router in cfg.select(only)? {
        let result = async {
            let mut b = connect(router, cfg.daemon.max_candidates).await?;
            let entries = b.list(&router.settings.blocking.address_list).await;
            b.close().await;
            entries
        }
        .await;
        match result {
            Ok(entries) => out.push(RouterList {
                router: router.name.clone(),
                entries: Some(
                    entries
                        .into_iter()
                        .map(|e| ListRow {
                            router: router.name.clone(),
                            address: e.address.to_string(),
                            id: e.id,
                            timeout: e.timeout.map(format_duration),
                            dynamic: e.dynamic,
                            disabled: e.disabled,
                            comment: e.comment.map(|c| printable(&c)),
                        })
                        .collect(),
                ),
                error: None,
            }),
            Err(e) => {
                if !json {
                    router_failed(&mut failed, &router.name, &e);
                }
                failed = true;
                out.push(RouterList {
                    router: router.name.clone(),
                    entries: None,
                    error: Some(e.message),
                });
            }
        }
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(exit(failed));
    }
    let rows: Vec<&ListRow> = out
        .iter()
        .flat_map(|r| r.entries.iter().flatten())
        .collect();
    if !rows.is_empty() {
        outln!(
            "{:<10} {:<40} {:<14} COMMENT",
            "ROUTER",
            "ADDRESS",
            "TIMEOUT"
        );
        for r in &rows {
            outln!(
                "{:<10} {:<40} {:<14} {}",
                r.router,
                r.address,
                r.timeout.as_deref().unwrap_or("permanent"),
                r.comment.as_deref().unwrap_or("")
            );
        }
    }
    for r in &out {
        match (&r.entries, &r.error) {
            (Some(e), _) if e.is_empty() => outln!("router {}: the block list is empty", r.router),
            (Some(e), _) => outln!("router {}: {} entries", r.router, e.len()),
            (None, Some(err)) => outln!("router {}: FAILED: {}", r.router, printable(err)),
            _ => {}
        }
    }
    Ok(exit(failed))
}

fn entries_of(entries: &[ListEntry], ip: IpAddr) -> Vec<ListEntry> {
    entries
        .iter()
        .filter(|e| {
            e.host()
                .is_some_and(|h| h.to_canonical() == ip.to_canonical())
        })
        .cloned()
        .collect()
}

/// `rosguard unblock ADDR [--for D]`: records the operator's decision (the address is not
/// blocked again on these routers until D has passed), removes it from the block list and
/// removes every connection that would flag it again.
pub async fn unblock(
    cfg: &Config,
    only: Option<&str>,
    address: &str,
    hold: Option<Duration>,
    comment: Option<&str>,
    store: &SharedStore,
) -> Result<ExitCode> {
    let ip = parse_address(address)?;
    let routers = cfg.select(only)?;
    let now = unix_now();
    let reason = match comment {
        Some(c) => format!("unblock: {}", printable(c)),
        None => "unblock".to_owned(),
    };
    {
        let mut s = store
            .lock()
            .map_err(|_| anyhow!("the state store lock is poisoned"))?;
        for r in &routers {
            let hold = hold.unwrap_or(r.settings.blocking.unblock_hold);
            s.unblock(
                &r.name,
                &r.settings.blocking.address_list,
                ip,
                secs(now),
                secs(now + hold),
                &reason,
            )?;
        }
    }
    let mut failed = false;
    for router in routers {
        let list = &router.settings.blocking.address_list;
        let until = format_unix(secs(
            now + hold.unwrap_or(router.settings.blocking.unblock_hold),
        ));
        let result = async {
            let mut b = connect(router, cfg.daemon.max_candidates).await?;
            let doomed = entries_of(&b.list(list).await?, ip);
            let removed = b.remove_entries(&doomed).await?;
            let flows = b.remove_connections_of(ip).await?;
            b.close().await;
            Ok::<_, rosguard_core::BackendError>((removed, flows))
        }
        .await;
        match result {
            Ok((removed, flows)) => outln!(
                "router {}: {} {ip} from {list}; removed {flows} of its connections; not blocked again before {until}",
                router.name,
                if removed > 0 { "removed" } else { "(not in the list) recorded" }
            ),
            Err(e) => router_failed(&mut failed, &router.name, &e),
        }
    }
    if failed {
        outln!("the unblock is recorded for every router: the daemon honours it there, and lifts the entry at its next reconcile");
    }
    Ok(exit(failed))
}

/// `rosguard clear [--all]`.
pub async fn clear(
    cfg: &Config,
    only: Option<&str>,
    all: bool,
    store: &SharedStore,
) -> Result<ExitCode> {
    let mut failed = false;
    for router in cfg.select(only)? {
        let list = &router.settings.blocking.address_list;
        let result = async {
            let mut b = connect(router, cfg.daemon.max_candidates).await?;
            let entries = b.list(list).await?;
            let doomed: Vec<ListEntry> = entries
                .iter()
                .filter(|e| all || e.is_rosguard())
                .cloned()
                .collect();
            let removed = b.remove_entries(&doomed).await?;
            b.close().await;
            Ok::<_, rosguard_core::BackendError>((removed, entries.len() - doomed.len()))
        }
        .await;
        match result {
            Ok((removed, kept)) => {
                store
                    .lock()
                    .map_err(|_| anyhow!("the state store lock is poisoned"))?
                    .mark_list_unblocked(&router.name, list, secs(unix_now()))?;
                outln!(
                    "router {}: removed {removed} entries from {list}{}",
                    router.name,
                    if kept > 0 {
                        format!(
                            " ({kept} entries not added by rosguard kept; --all removes them too)"
                        )
                    } else {
                        String::new()
                    }
                );
            }
            Err(e) => router_failed(&mut failed, &router.name, &e),
        }
    }
    Ok(exit(failed))
}

/// The options of `rosguard block`.
#[derive(Debug, Clone)]
pub struct BlockArgs {
    pub timeout: Option<Duration>,
    pub comment: Option<String>,
    pub force: bool,
}

/// `rosguard block ADDR`: a manual block through the same safety checks as rosguard's own
/// (`--force` overrides them), recorded with its reason for `why`.
pub async fn block(
    cfg: &Config,
    only: Option<&str>,
    address: &str,
    args: &BlockArgs,
    store: &SharedStore,
) -> Result<ExitCode> {
    let ip = parse_address(address)?;
    let mut failed = false;
    for router in cfg.select(only)? {
        match block_one(cfg, router, ip, args, store).await {
            Ok(line) => outln!("router {}: {line}", router.name),
            Err(e) => router_failed(&mut failed, &router.name, &format!("{e:#}")),
        }
    }
    Ok(exit(failed))
}

async fn block_one(
    cfg: &Config,
    router: &RouterConfig,
    ip: IpAddr,
    args: &BlockArgs,
    store: &SharedStore,
) -> Result<String> {
    let s = &router.settings;
    let list = &s.blocking.address_list;
    let mut b = connect(router, cfg.daemon.max_candidates).await?;
    // The router's context, without reading its connection table.
    let plan = ObservePlan {
        refresh_protected: true,
        read_uptime: false,
        context_only: true,
    };
    let obs = b.observe(&plan, s).await?;
    let now = unix_now();
    let reason = {
        let st = store
            .lock()
            .map_err(|_| anyhow!("the state store lock is poisoned"))?;
        let unblocked = rosguard_core::History::unblocked(
            &StoreHistory {
                store: &st,
                router: &router.name,
                list,
            },
            now,
        )
        .ok();
        context(&obs, s, &protected_of(&obs), unblocked).never_block_reason(ip)
    };
    if let Some(reason) = reason {
        if !args.force {
            bail!("refusing to block {ip}: {reason}; --force overrides the safety checks");
        }
        tracing::warn!(
            router = router.name.as_str(),
            "blocking {ip} although it is protected ({reason}): --force"
        );
    }
    let timeout = args.timeout.unwrap_or(s.blocking.block_timeout);
    let comment = format!(
        "{ENTRY_SIGNATURE} manual block{}",
        args.comment
            .as_deref()
            .map(|c| format!(": {}", printable(c)))
            .unwrap_or_default()
    );
    let comment = truncate_to(&comment, rosguard_core::policy::MAX_COMMENT_BYTES).to_owned();
    let result = b.add_entry(list, ip, Some(timeout), &comment).await?;
    b.close().await;
    let mut st = store
        .lock()
        .map_err(|_| anyhow!("the state store lock is poisoned"))?;
    st.end_unblock(&router.name, ip)?;
    if result == AddResult::Added {
        st.record_cycle(&CycleRecord {
            router: router.name.clone(),
            at_unix: secs(now),
            blocks: vec![NewBlock {
                list: list.clone(),
                address: ip,
                timeout_secs: timeout.as_secs(),
                level: 0,
                comment: comment.clone(),
                evidence: json!({ "manual": true, "comment": args.comment, "forced": reason.map(|r| r.to_string()) }),
                dry_run: false,
            }],
            counters: vec![("manual_blocks".into(), 1)],
            ..CycleRecord::default()
        })?;
        Ok(format!(
            "blocked {ip} in {list} for {}",
            format_duration(timeout)
        ))
    } else {
        Ok(format!("{ip} is already in {list}"))
    }
}

/// How long `rosguard allow` suppresses re-blocking in the store (the allowlist entry does the
/// real work; this only keeps `why` and the daemon consistent if the entry is removed).
const ALLOW_HOLD: Duration = Duration::from_secs(10 * 365 * 86_400);

/// `rosguard allow ADDR`: adds it to the router's allowlist (static) and lifts any block.
pub async fn allow(
    cfg: &Config,
    only: Option<&str>,
    address: &str,
    comment: Option<&str>,
    store: &SharedStore,
) -> Result<ExitCode> {
    let ip = parse_address(address)?;
    let routers = cfg.select(only)?;
    let now = unix_now();
    let reason = match comment {
        Some(c) => format!("allow: {}", printable(c)),
        None => "allow".to_owned(),
    };
    {
        let mut s = store
            .lock()
            .map_err(|_| anyhow!("the state store lock is poisoned"))?;
        for r in &routers {
            s.unblock(
                &r.name,
                &r.settings.blocking.address_list,
                ip,
                secs(now),
                secs(now + ALLOW_HOLD),
                &reason,
            )?;
        }
    }
    let entry_comment = truncate_to(
        &format!(
            "rosguard allow{}",
            comment
                .map(|c| format!(": {}", printable(c)))
                .unwrap_or_default()
        ),
        255,
    )
    .to_owned();
    let mut failed = false;
    for router in routers {
        let bl = &router.settings.blocking;
        let result = async {
            let mut b = connect(router, cfg.daemon.max_candidates).await?;
            let added = b
                .add_entry(&bl.allowlist_name, ip, None, &entry_comment)
                .await?;
            let doomed = entries_of(&b.list(&bl.address_list).await?, ip);
            let removed = b.remove_entries(&doomed).await?;
            b.close().await;
            Ok::<_, rosguard_core::BackendError>((added, removed))
        }
        .await;
        match result {
            Ok((added, removed)) => outln!(
                "router {}: {ip} {} {}{}",
                router.name,
                if added == AddResult::Added {
                    "added to"
                } else {
                    "already in"
                },
                bl.allowlist_name,
                if removed > 0 {
                    format!("; removed from {}", bl.address_list)
                } else {
                    String::new()
                }
            ),
            Err(e) => router_failed(&mut failed, &router.name, &e),
        }
    }
    Ok(exit(failed))
}
