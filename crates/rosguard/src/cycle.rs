//! One cycle against one router, as a thin shell around the core: observe -> decide -> apply
//! -> settle -> persist -> emit.
//!
//! The backend reads and writes the router, `rosguard_core::decide` decides, `narrate` logs,
//! `record` writes the store in one transaction, and this module publishes the events. It
//! bounds a cycle by a deadline and a stop request, and does not loop, sleep or reconnect:
//! the daemon does that.

use std::time::{Duration, Instant};

use rosguard_core::backend::Backend;
use rosguard_core::decide::{decide, Decision, GuardState};
use rosguard_core::observation::SharedCandidate;
use rosguard_core::outcome::{Applied, BackendError};
use rosguard_core::settings::Settings;
use routeros_proto::format_duration;
use tokio_util::sync::CancellationToken;
use tracing::error;

use crate::events::{BlockEvent, Event, Events};
use crate::narrate::{log_applied, log_decision, LogMemory};
use crate::record::{persist, planned_evidence, PruneClock};
use crate::report::CycleReport;
use crate::state::{strike_to_entry, SharedStore, StoreHistory};

/// What the shell remembers between cycles: what was logged, when history was pruned.
#[derive(Debug, Default)]
pub struct Notes {
    log: LogMemory,
    prune: PruneClock,
}

/// What every cycle of a router shares: the store and the event stream.
#[derive(Clone)]
pub struct CycleEnv {
    pub store: SharedStore,
    pub events: Events,
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
    /// The cycle replays a recording into a store of its own, in memory: it keeps only what
    /// `decide()` reads back (blocks, lifts), not counters or the tracker's state.
    pub replay: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            stop: CancellationToken::new(),
            deadline: Duration::from_secs(60),
            replay: false,
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
    log_decision(router, settings, &obs, &decision, &mut notes.log);
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
        &env.store,
        router,
        settings,
        state,
        &mut notes.prune,
        &decision,
        &applied,
        &report,
        now,
        limits.replay,
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
