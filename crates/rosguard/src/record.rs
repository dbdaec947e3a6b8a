//! What a cycle leaves in the state store: the blocks that took effect with their evidence,
//! restores as new placements, hand removals as lifts (holding like an unblock), adoptions,
//! the counters (dry-run decisions apart), and the tracker's memory, in one transaction.
//!
//! It decides nothing: it writes down what the decision and the backend did.

use std::net::IpAddr;
use std::time::Duration;

use rosguard_core::decide::{AddKind, Decision, GuardState, PlannedAdd};
use rosguard_core::detect::{Evidence, Finding};
use rosguard_core::outcome::{AddResult, Applied, RemoveResult};
use rosguard_core::settings::Settings;
use rosguard_store::{CycleRecord, Lifted, NewBlock};
use routeros_proto::format_duration;
use serde_json::json;
use tracing::error;

use crate::report::CycleReport;
use crate::state::{entry_to_strike, secs, SharedStore};

/// How often history past `forget_after` is pruned from the store.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// When history was last pruned.
#[derive(Debug, Default)]
pub struct PruneClock {
    last: Option<Duration>,
}

/// The evidence stored with a block: what fired, on what, and the settings in force.
pub fn evidence(f: &Finding, s: &Settings, level: u32, timeout: Duration) -> serde_json::Value {
    let d = &s.detection;
    let mut v = json!({
        "rule": f.rule,
        "target": f.target,
        "level": level,
        "timeout": format_duration(timeout),
        "config": {
            "monitored_ports": d.monitored_ports,
            "protocols": d.protocols,
            "min_orig_packets": d.min_orig_packets,
            "max_repl_packets": d.max_repl_packets,
            "block_target": d.block_target,
            "min_observations": d.min_observations,
            "min_flagged_connections": d.min_flagged_connections,
            "scan_min_ports": d.scan.min_ports,
            "stall_min_orig_growth": d.stall.min_orig_growth,
            "block_timeout": format_duration(s.blocking.block_timeout),
            "escalation_factor": s.blocking.escalation_factor,
        },
    });
    match &f.evidence {
        Evidence::Connection { connection } => v["connection"] = json!(connection),
        Evidence::Scan { tried, example } => {
            v["connection"] = json!(example);
            v["scan"] = json!({ "tried": tried, "window": format_duration(d.scan.window) });
        }
        Evidence::Staged { list } => v["staged_in"] = json!(list),
        Evidence::Stalled { sent, connection } => {
            v["connection"] = json!(connection);
            v["stall"] = json!({ "sent_since_last_reply": sent, "max_repl_packets": d.stall.max_repl_packets });
        }
    }
    v
}

/// The evidence of a planned add: its finding's, or the other router's for a shared block.
pub fn planned_evidence(a: &PlannedAdd, s: &Settings) -> serde_json::Value {
    match (&a.finding, &a.shared_evidence, &a.kind) {
        (Some(f), _, _) => evidence(f, s, a.level, a.timeout),
        (None, Some(text), AddKind::Shared { from }) => json!({
            "shared_from": from,
            "evidence": serde_json::from_str::<serde_json::Value>(text).unwrap_or(serde_json::Value::Null),
        }),
        _ => serde_json::Value::Null,
    }
}

/// The cumulative counters a cycle adds to the store. Dry-run decisions count apart.
fn counters(r: &CycleReport) -> Vec<(String, u64)> {
    let prefix = if r.dry_run { "dry_run_" } else { "" };
    let mut c = vec![
        ("cycles".to_owned(), 1),
        ("rows_scanned".to_owned(), r.scanned),
        ("flagged".to_owned(), r.flagged),
        (format!("{prefix}blocked"), r.new_blocks().count() as u64),
        (
            "restored".to_owned(),
            r.blocks
                .iter()
                .filter(|b| b.kind == AddKind::Restored && b.result == AddResult::Added)
                .count() as u64,
        ),
        ("failed_adds".to_owned(), r.failed_adds().0 as u64),
        ("deferred".to_owned(), r.deferred),
        ("capped".to_owned(), r.capped),
        (
            format!("{prefix}connections_removed"),
            r.removals
                .iter()
                .filter(|x| matches!(x.result, RemoveResult::Removed | RemoveResult::WouldRemove))
                .count() as u64,
        ),
        ("bad_rows".to_owned(), r.bad_rows),
        ("lifted_on_router".to_owned(), r.lifts.len() as u64),
        ("adopted".to_owned(), r.adopted.len() as u64),
    ];
    for s in &r.skipped {
        c.push((format!("skipped_{}", s.reason.kind()), 1));
    }
    for cap in &r.caps_hit {
        c.push((format!("cap_{}", cap.as_str()), 1));
    }
    c.retain(|(_, v)| *v > 0);
    c
}

/// Writes what a cycle did in one transaction (and prunes old history now and then). A
/// `replay` writes only what `decide()` reads back (blocks, lifts, holds), in place.
#[allow(clippy::too_many_arguments)]
pub async fn persist(
    store: &SharedStore,
    router: &str,
    s: &Settings,
    state: &GuardState,
    prune: &mut PruneClock,
    d: &Decision,
    applied: &Applied,
    report: &CycleReport,
    now: Duration,
    replay: bool,
) {
    let list = s.blocking.address_list.clone();
    let mut blocks: Vec<NewBlock> = d
        .adds
        .iter()
        .zip(&applied.adds)
        .filter(|(a, r)| r.took_effect() && a.kind != AddKind::Restored)
        .map(|(a, _)| NewBlock {
            list: list.clone(),
            address: a.address,
            timeout_secs: a.timeout.as_secs(),
            level: a.level,
            comment: a.comment.clone(),
            evidence: planned_evidence(a, s),
            dry_run: d.dry_run,
        })
        .collect();
    blocks.extend(d.adopted.iter().map(|a| NewBlock {
        list: list.clone(),
        address: a.address,
        timeout_secs: a.remaining.as_secs(),
        level: 0,
        comment: a.comment.clone(),
        evidence: json!({ "adopted": true, "note": "found on the router without a record" }),
        dry_run: false,
    }));
    let placed: Vec<(String, IpAddr)> = d
        .adds
        .iter()
        .zip(&applied.adds)
        .filter(|(a, r)| a.kind == AddKind::Restored && **r == AddResult::Added)
        .map(|(a, _)| (list.clone(), a.address))
        .collect();
    let lifts: Vec<Lifted> = d
        .lifts
        .iter()
        .map(|l| Lifted {
            list: list.clone(),
            address: l.address,
            reason: "removed-on-router".into(),
        })
        .collect();
    let record = CycleRecord {
        router: router.to_owned(),
        at_unix: secs(now),
        blocks,
        placed,
        lifts,
        counters: if replay { Vec::new() } else { counters(report) },
        strikes: (!replay && GuardState::tracker_persists(s)).then(|| {
            state
                .export_tracker(now)
                .iter()
                .map(entry_to_strike)
                .collect()
        }),
    };
    let prune_before = (!replay
        && prune
            .last
            .is_none_or(|t| now.saturating_sub(t) >= PRUNE_EVERY))
    .then(|| secs(now.saturating_sub(s.blocking.forget_after)));
    if prune_before.is_some() {
        prune.last = Some(now);
    }
    let holds: Vec<(IpAddr, i64)> = d.lifts.iter().map(|l| (l.address, secs(l.until))).collect();
    let store = store.clone();
    let name = router.to_owned();
    let list = list.clone();
    let write = move || {
        let mut s = store
            .lock()
            .map_err(|_| "the state store lock is poisoned".to_owned())?;
        if let Some(before) = prune_before {
            s.prune(before).map_err(|e| e.to_string())?;
        }
        s.record_cycle(&record).map_err(|e| e.to_string())?;
        // A hand removal holds like an operator's unblock.
        for (address, until) in holds {
            s.unblock(
                &name,
                &list,
                address,
                record.at_unix,
                until,
                "removed on the router by hand",
            )
            .map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    };
    // A replay's store is its own, in memory: written in place, not on a blocking thread.
    let result = if replay {
        Ok(write())
    } else {
        tokio::task::spawn_blocking(write).await
    };
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => error!(router, "state store: {e}"),
        Err(e) => error!(router, "state store task failed: {e}"),
    }
}
