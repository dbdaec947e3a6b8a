//! The log lines of a cycle, in the seed script's words where it had them
//! (`Detected asymmetric ...`, `Added ... to ...`, `Skipping ...: ...`, `Processed ...`), with
//! structured fields for JSON logs; conditions that last (detection off, protection unknown)
//! are logged once when they change.
//!
//! It only logs: it decides nothing and changes nothing.

use rosguard_core::decide::{AddKind, Decision};
use rosguard_core::detect::{Evidence, Finding};
use rosguard_core::observation::Observation;
use rosguard_core::outcome::{AddResult, Applied, RemoveResult};
use rosguard_core::policy::{self, Protected};
use rosguard_core::settings::Settings;
use routeros_proto::format_duration;
use tracing::{debug, error, info, warn};

/// What was last logged about conditions that last, so they are logged when they change.
#[derive(Debug, Default)]
pub struct LogMemory {
    protection_missing: Vec<Protected>,
    detection_off: bool,
}

/// Logs a decision in the seed script's words, before it is applied.
pub fn log_decision(
    router: &str,
    s: &Settings,
    obs: &Observation,
    d: &Decision,
    notes: &mut LogMemory,
) {
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
        Evidence::Connection { connection: c }
        | Evidence::Scan { example: c, .. }
        | Evidence::Stalled { connection: c, .. } => warn!(
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

/// Logs what the router did with a decision.
pub fn log_applied(router: &str, s: &Settings, d: &Decision, applied: &Applied) {
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
