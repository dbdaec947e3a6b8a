//! One cycle against one router, as a thin shell around the core: observe -> decide -> apply
//! -> settle -> persist -> emit.
//!
//! The backend reads and writes the router, `rosguard_core::decide` decides, this module logs
//! the decision in the seed script's words, records it in the store in one transaction and
//! publishes its events. It does not loop, sleep, reconnect or time out: the daemon does that.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use rosguard_core::backend::{AddResult, Applied, Backend, BackendError, RemoveResult};
use rosguard_core::decide::{decide, AddKind, Decision, GuardState, PlannedAdd};
use rosguard_core::detect::{Evidence, Finding};
use rosguard_core::observation::{Observation, SharedCandidate};
use rosguard_core::policy::{self, Protected};
use rosguard_core::settings::Settings;
use rosguard_store::{CycleRecord, Lifted, NewBlock};
use routeros_proto::format_duration;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::events::{BlockEvent, Event, Events};
use crate::report::CycleReport;
use crate::state::{entry_to_strike, secs, strike_to_entry, SharedStore, StoreHistory};

/// How often history past `forget_after` is pruned from the store.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// What every cycle of a router shares: the store and the event stream.
#[derive(Clone)]
pub struct CycleEnv {
    pub store: SharedStore,
    pub events: Events,
}

/// What the shell remembers to log things once per change, not once per cycle.
#[derive(Debug, Default)]
pub struct Notes {
    protection_missing: Vec<Protected>,
    detection_off: bool,
    last_prune: Option<Duration>,
}

/// The decision state of a router, continued from the store (the tracker's memory survives a
/// restart when `min_observations` or `min_flagged_connections` are above 1).
pub fn load_state(env: &CycleEnv, router: &str, settings: &Settings, now: Duration) -> GuardState {
    let mut state = GuardState::new(settings);
    if GuardState::tracker_persists(settings) {
        let strikes = env.store.lock().map_err(|_| ()).and_then(|s| {
            s.load_strikes(router).map_err(|e| {
                error!(router, "state store: {e}");
            })
        });
        if let Ok(strikes) = strikes {
            state.import_tracker(strikes.iter().filter_map(strike_to_entry), settings, now);
        }
    }
    state
}

/// When a cycle must give up: a stop request and a deadline for the router's part (reads
/// and writes). Once the writes are done, the record is always written: a cycle is abandoned
/// before it changes anything, or recorded whole.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Cancelled on SIGTERM/SIGINT.
    pub stop: CancellationToken,
    /// `daemon.cycle_deadline` from the cycle's start.
    pub deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            stop: CancellationToken::new(),
            deadline: Duration::from_secs(60),
        }
    }
}

fn abandoned(router: &str, label: &str, message: String) -> BackendError {
    let _ = router;
    BackendError {
        kind: rosguard_core::FailureKind::ConnectionLost,
        label: label.into(),
        message,
    }
}

/// How long the writes of a cycle may go on after a stop request, so that a cycle that has
/// started changing the router usually finishes (and is recorded) instead of being cut.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// Runs `f` unless the stop (after `grace`) or the deadline comes first.
async fn bounded<T>(
    router: &str,
    limits: &Limits,
    until: tokio::time::Instant,
    grace: Duration,
    f: impl std::future::Future<Output = Result<T, BackendError>>,
) -> Result<T, BackendError> {
    let stopped = async {
        limits.stop.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        r = f => r,
        _ = stopped => Err(abandoned(router, "stopped", format!("router {router}: stopping; the cycle in progress was abandoned"))),
        _ = tokio::time::sleep_until(until) => Err(abandoned(router, "deadline", format!(
            "router {router}: the cycle took longer than daemon.cycle_deadline = {} (the router kept sending or stopped answering); dropped the connection",
            format_duration(limits.deadline)
        ))),
    }
}

/// Runs one cycle. Errors are the backend's (connection lost, a read refused), a stop, or
/// the deadline; a bad row or a refused single add is logged and the cycle goes on. What went
/// through before a connection broke is recorded all the same.
#[allow(clippy::too_many_arguments)]
pub async fn run_cycle<B: Backend>(
    backend: &mut B,
    router: &str,
    settings: &Settings,
    state: &mut GuardState,
    env: &CycleEnv,
    notes: &mut Notes,
    shared: Vec<SharedCandidate>,
    now: Duration,
    limits: &Limits,
) -> Result<CycleReport, BackendError> {
    let started = Instant::now();
    let until = tokio::time::Instant::now() + limits.deadline;
    let plan = state.plan(settings, now);
    let mut obs = bounded(
        router,
        limits,
        until,
        Duration::ZERO,
        backend.observe(&plan, settings),
    )
    .await?;
    obs.shared = shared;
    let decision = {
        let store = env.store.lock().map_err(|_| BackendError {
            kind: rosguard_core::FailureKind::Refused,
            label: "store".into(),
            message: "the state store lock is poisoned".into(),
        })?;
        let history = StoreHistory {
            store: &store,
            router,
            list: &settings.blocking.address_list,
        };
        decide(&obs, state, settings, &history, now)
    };
    log_decision(router, settings, &obs, &decision, notes);
    let applied = bounded(router, limits, until, STOP_GRACE, async {
        Ok(backend.apply(&decision, settings).await)
    })
    .await?;
    state.settle(&decision, &applied.adds, now);
    log_applied(router, settings, &decision, &applied);
    let mut report = CycleReport::new(
        router,
        &settings.blocking.address_list,
        &obs,
        &decision,
        &applied,
    );
    report.duration_ms = started.elapsed().as_millis() as u64;
    persist(
        env, router, settings, state, notes, &decision, &applied, &report, now,
    )
    .await;
    emit(env, router, settings, &decision, &applied, now);
    env.events
        .emit(Event::Cycle(std::sync::Arc::new(report.clone())));
    match applied.lost {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

fn log_decision(router: &str, s: &Settings, obs: &Observation, d: &Decision, notes: &mut Notes) {
    let list = &s.blocking.address_list;
    if d.detection_off != notes.detection_off {
        notes.detection_off = d.detection_off;
        if d.detection_off {
            warn!(router, "detection is off (detection.enabled = false): reading the router, flagging nothing");
        }
    }
    if d.protection_missing != notes.protection_missing {
        if d.protection_missing.is_empty() {
            warn!(
                router,
                "the router's gateways, DNS servers and sessions are known: blocking resumes"
            );
        } else {
            let what: Vec<&str> = d.protection_missing.iter().map(|p| p.source()).collect();
            warn!(
                router,
                "cannot read {}; blocking nothing until they are known, retrying every cycle",
                what.join(", ")
            );
        }
        notes.protection_missing = d.protection_missing.clone();
    }
    for e in &d.history_errors {
        error!(router, "state store: {e}");
    }
    let of_total = if obs.filtered {
        format!(
            " (of {} in the tables; filtered on the router)",
            d.table_size
        )
    } else {
        String::new()
    };
    debug!(
        router,
        rows = obs.rows_read,
        candidates = obs.candidates.len(),
        "scanned {} rows{of_total}",
        obs.rows_read
    );
    let i = d.ignored;
    if i.port + i.protocol + i.counters > 0 {
        debug!(
            router,
            "not flagged: {} rows for their port, {} for their protocol, {} within the thresholds",
            i.port,
            i.protocol,
            i.counters
        );
    }
    let (min, max) = (s.detection.min_orig_packets, s.detection.max_repl_packets);
    for a in &d.adds {
        if let Some(f) = &a.finding {
            detected(router, f, min, max);
        }
    }
    for sk in &d.skipped {
        let line = format!("Skipping {}: {}", sk.address, sk.reason);
        if sk.reason.is_safety() {
            info!(router, address = %sk.address, reason = sk.reason.kind(), "{line}");
        } else {
            debug!(router, address = %sk.address, reason = sk.reason.kind(), "{line}");
        }
    }
    if d.deferred > 0 {
        warn!(
            router,
            "{}",
            policy::deferred_message(d.deferred as usize, s.cycle.max_conn_per_cycle)
        );
    }
    for c in d.caps.iter().filter(|c| c.news) {
        error!(router, cap = c.cap.as_str(), "{}", c.message);
    }
    for l in &d.lifts {
        warn!(router, address = %l.address, "{} was removed from {list} on the router by hand (no reboot): honoured as an unblock, not restored", l.address);
    }
    for a in &d.adopted {
        info!(router, address = %a.address, "adopted {} from {list}: a rosguard entry without a record (remaining {})", a.address, format_duration(a.remaining));
    }
    if d.dry_run {
        for a in d.adds.iter().filter(|a| a.kind == AddKind::New) {
            warn!(router, address = %a.address, timeout = %format_duration(a.timeout), "DRY RUN: would add {} to {list} (timeout: {}) comment={:?}", a.address, format_duration(a.timeout), a.comment);
        }
        for r in &d.removals {
            warn!(
                router,
                "DRY RUN: would remove {} connection {}", r.family, r.summary
            );
        }
    }
}

fn detected(router: &str, f: &Finding, min: u64, max: u64) {
    let line = policy::detected_message(f, min, max);
    match &f.evidence {
        Evidence::Connection { connection: c } | Evidence::Scan { example: c, .. } => warn!(
            router,
            rule = f.rule.as_str(),
            protocol = %c.protocol,
            src = %c.src,
            dst = %c.dst,
            orig = c.orig_total().unwrap_or(0),
            repl = c.repl_total().unwrap_or(0),
            "{line}"
        ),
        Evidence::Staged { .. } => {
            warn!(router, rule = f.rule.as_str(), address = %f.target, "{line}")
        }
    }
}

fn log_applied(router: &str, s: &Settings, d: &Decision, applied: &Applied) {
    let list = &s.blocking.address_list;
    for (a, r) in d.adds.iter().zip(&applied.adds) {
        let t = format_duration(a.timeout);
        match (r, &a.kind) {
            (AddResult::Added, AddKind::New) => {
                info!(router, address = %a.address, timeout = %t, "{}", policy::added_message(a.address, list, &t))
            }
            (AddResult::Added, AddKind::Restored) => {
                warn!(router, address = %a.address, timeout = %t, "Restored {} to {list} (remaining: {t}): the entry was gone after a router reboot", a.address)
            }
            (AddResult::Added, AddKind::Shared { from }) => {
                info!(router, address = %a.address, timeout = %t, "Added {} to {list} (timeout: {t}), shared by router {from}", a.address)
            }
            (AddResult::AlreadyPresent, _) => debug!(router, "{} is already in {list}", a.address),
            (AddResult::Failed { message, .. }, _) => {
                warn!(router, address = %a.address, "could not add {} to {list}: {message}", a.address)
            }
            _ => {}
        }
    }
    for (rm, r) in d.removals.iter().zip(&applied.removals) {
        match r {
            RemoveResult::Failed { message } => warn!(
                router,
                "could not remove connection {}: {message}", rm.summary
            ),
            RemoveResult::Removed => debug!(router, "removed connection {}", rm.summary),
            _ => {}
        }
    }
    if d.acted > 0 {
        info!(router, "{}", policy::processed_message(d.acted as usize));
    }
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
    }
    v
}

fn planned_evidence(a: &PlannedAdd, s: &Settings) -> serde_json::Value {
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

#[allow(clippy::too_many_arguments)]
async fn persist(
    env: &CycleEnv,
    router: &str,
    s: &Settings,
    state: &GuardState,
    notes: &mut Notes,
    d: &Decision,
    applied: &Applied,
    report: &CycleReport,
    now: Duration,
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
        counters: counters(report),
        strikes: GuardState::tracker_persists(s).then(|| {
            state
                .export_tracker(now)
                .iter()
                .map(entry_to_strike)
                .collect()
        }),
    };
    let prune_before = notes
        .last_prune
        .is_none_or(|t| now.saturating_sub(t) >= PRUNE_EVERY)
        .then(|| secs(now.saturating_sub(s.blocking.forget_after)));
    if prune_before.is_some() {
        notes.last_prune = Some(now);
    }
    let holds: Vec<(IpAddr, i64)> = d.lifts.iter().map(|l| (l.address, secs(l.until))).collect();
    let store = env.store.clone();
    let name = router.to_owned();
    let list = list.clone();
    let result = tokio::task::spawn_blocking(move || {
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
    })
    .await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => error!(router, "state store: {e}"),
        Err(e) => error!(router, "state store task failed: {e}"),
    }
}

fn emit(
    env: &CycleEnv,
    router: &str,
    s: &Settings,
    d: &Decision,
    applied: &Applied,
    now: Duration,
) {
    for (a, r) in d.adds.iter().zip(&applied.adds) {
        if !r.took_effect() {
            continue;
        }
        env.events.emit(Event::Block(BlockEvent {
            router: router.to_owned(),
            address: a.address,
            expires: now + a.timeout,
            timeout: a.timeout,
            comment: a.comment.clone(),
            evidence_json: planned_evidence(a, s).to_string(),
            kind: a.kind.clone(),
            dry_run: d.dry_run,
        }));
    }
    for l in &d.lifts {
        env.events.emit(Event::Lift {
            router: router.to_owned(),
            address: l.address,
        });
    }
    for c in &d.caps {
        env.events.emit(Event::Cap {
            router: router.to_owned(),
            cap: c.cap,
            message: c.message.clone(),
        });
    }
}
