//! `rosguard once`: one cycle per router, printed for people or as JSON.

use std::process::ExitCode;

use anyhow::Result;
use rosguard_core::backend::Backend;
use rosguard_core::decide::AddKind;
use rosguard_core::outcome::{AddResult, RemoveResult};
use routeros_proto::format_duration;
use serde::Serialize;

use super::common::{connect, exit};
use crate::config::Config;
use crate::cycle::{load_state, run_cycle, CycleEnv, Limits, Notes};
use crate::outln;
use crate::output::printable;
use crate::report::CycleReport;
use crate::state::unix_now;

/// One router's line of `once --json`: its report, or why there is none.
#[derive(Serialize)]
struct Outcome {
    router: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<CycleReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `rosguard once`.
pub async fn once(
    cfg: &Config,
    only: Option<&str>,
    dry_run: bool,
    json: bool,
    env: &CycleEnv,
) -> Result<ExitCode> {
    let mut out = Vec::new();
    let mut failed = false;
    for router in cfg.select(only)? {
        let mut settings = router.settings.clone();
        settings.blocking.dry_run |= dry_run;
        let result = async {
            let mut backend = connect(router, cfg.daemon.max_candidates).await?;
            let now = unix_now();
            let mut state = load_state(env, &router.name, &settings, now);
            let mut notes = Notes::default();
            let limits = Limits {
                deadline: cfg.daemon.cycle_deadline,
                ..Limits::default()
            };
            let report = run_cycle(
                &mut backend,
                &router.name,
                &settings,
                &mut state,
                env,
                &mut notes,
                Vec::new(),
                now,
                &limits,
            )
            .await;
            backend.close().await;
            report
        }
        .await;
        match result {
            Ok(r) => {
                if let (n, true) = r.failed_adds() {
                    failed = true;
                    eprintln!("error: router {}: the router refused all {n} adds for lack of permission: give the rosguard user a group with the read,write,api policies (write is needed to change address-lists)", router.name);
                }
                out.push(Outcome {
                    router: router.name.clone(),
                    report: Some(r),
                    error: None,
                });
            }
            Err(e) => {
                failed = true;
                let text = printable(&e.to_string());
                if !json {
                    eprintln!("error: {text}");
                }
                out.push(Outcome {
                    router: router.name.clone(),
                    report: None,
                    error: Some(text),
                });
            }
        }
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for o in &out {
            match (&o.report, &o.error) {
                (Some(r), _) => print_report(r),
                (None, Some(e)) => outln!("router {}: FAILED: {e}", o.router),
                _ => {}
            }
        }
    }
    Ok(exit(failed))
}

/// Prints a cycle report for humans.
pub fn print_report(r: &CycleReport) {
    let mode = if r.dry_run {
        " (dry run: nothing was changed)"
    } else {
        ""
    };
    outln!("router {}{mode}", r.router);
    if r.detection_off {
        outln!("  detection is off (detection.enabled = false): nothing was looked at");
        return;
    }
    let of = if r.filtered_on_router {
        format!(
            " of {} in the tables (filtered on the router)",
            r.table_size
        )
    } else {
        String::new()
    };
    outln!(
        "  scanned {} connections{of} ({} unreadable rows skipped), flagged {}, in {} ms",
        r.scanned,
        r.bad_rows,
        r.flagged,
        r.duration_ms
    );
    for b in &r.blocks {
        let verb = match (&b.result, &b.kind) {
            (AddResult::Added, AddKind::New) => "blocked".to_owned(),
            (AddResult::Added, AddKind::Restored) => {
                "restored (lost from the router, still due)".to_owned()
            }
            (AddResult::Added, AddKind::Shared { from }) => {
                format!("blocked (shared by router {from})")
            }
            (AddResult::WouldAdd, _) => "would block".to_owned(),
            (AddResult::AlreadyPresent, _) => "already blocked".to_owned(),
            (AddResult::NotSent, _) => "NOT SENT (connection lost) to block".to_owned(),
            (AddResult::Failed { .. }, _) => "FAILED to block".to_owned(),
        };
        outln!(
            "  {verb} {} in {} for {}: {}",
            b.address,
            b.list,
            format_duration(b.timeout),
            printable(&b.comment)
        );
        if let AddResult::Failed { message, .. } = &b.result {
            outln!("    {}", printable(message));
        }
    }
    for rm in &r.removals {
        let verb = match &rm.result {
            RemoveResult::Removed => "removed",
            RemoveResult::WouldRemove => "would remove",
            RemoveResult::Gone => "already gone:",
            RemoveResult::Failed { .. } => "FAILED to remove",
            RemoveResult::NotSent => "NOT SENT (connection lost): remove",
        };
        outln!("  {verb} connection {}", rm.connection);
    }
    for s in &r.skipped {
        outln!(
            "  spared {} ({}): {}",
            s.address,
            printable(&s.what),
            s.reason
        );
    }
    for l in &r.lifts {
        outln!(
            "  {} was removed on the router by hand: recorded as lifted, not restored",
            l.address
        );
    }
    for a in &r.adopted {
        outln!(
            "  adopted {} (a rosguard entry without a record, {} left)",
            a.address,
            format_duration(a.remaining)
        );
    }
    if !r.protection_missing.is_empty() {
        let what: Vec<&str> = r.protection_missing.iter().map(|p| p.source()).collect();
        outln!("  blocking nothing: cannot read {}", what.join(", "));
    }
    if r.deferred > 0 {
        outln!(
            "  {} flagged connections left for the next cycle (max_conn_per_cycle)",
            r.deferred
        );
    }
    if r.capped > 0 {
        let caps: Vec<&str> = r.caps_hit.iter().map(|c| c.as_str()).collect();
        outln!(
            "  {} blocks held back by a safety cap ({})",
            r.capped,
            caps.join(", ")
        );
    }
    if r.flagged == 0 {
        outln!("  nothing suspicious");
    }
}
