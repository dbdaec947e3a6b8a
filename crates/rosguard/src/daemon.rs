//! The long-running daemon: one task per router, each looping connect -> cycle -> wait.
//!
//! A router that is down, slow or misbehaving only delays its own task. Lost connections are
//! retried with capped exponential backoff and jitter, and logged once per change of state,
//! not once per attempt; the backoff resets only after a completed cycle. Every cycle has a
//! deadline (`daemon.cycle_deadline`): a router that trickles rows cannot hold it for ever.
//! A new config (SIGHUP) reaches every task through a watch channel. Shutdown is a
//! cancellation token that abandons a cycle in progress at once (the store is only written in
//! one transaction at a cycle's end, so nothing is half-recorded), and every task is joined.
//!
//! The daemon drives any [`Backend`]; [`run`] takes a factory that makes one per router, and
//! wraps each in a [`RecordingTap`] that follows `[record]` (recording nothing while it is
//! off). This module does not parse config or decide what to block: see `config` and `cycle`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::RngExt;
use rosguard_core::backend::Backend;
use rosguard_core::decide::AddKind;
use rosguard_core::observation::SharedCandidate;
use rosguard_core::outcome::BackendError;
use rosguard_routeros::RouterOsBackend;
use serde_json::json;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::config::{Config, RouterConfig};
use crate::cycle::{load_state, run_cycle, CycleEnv, Limits, Notes};
use crate::events::{Event, Link};
use crate::record_tap::RecordingTap;
use crate::state::{secs, unix_now};

/// The longest a graceful close of a connection may take before it is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Makes the backend of a router (the RouterOS API for `rosguard run`).
pub type BackendFactory<B> = Arc<dyn Fn(&RouterConfig, &Config) -> B + Send + Sync>;

/// The RouterOS API backend factory.
pub fn routeros() -> BackendFactory<RouterOsBackend> {
    Arc::new(|r: &RouterConfig, c: &Config| {
        RouterOsBackend::new(r.client_config(), c.daemon.max_candidates)
    })
}

/// Capped exponential backoff with full jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The upper bound of the next wait (before jitter).
    pub fn ceiling(&self) -> Duration {
        self.base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.cap)
    }

    /// The next wait: uniformly between half the ceiling and the ceiling.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Runs the daemon until `shutdown` is cancelled. Routers are added, changed or removed as
/// new configs arrive on `config`.
pub async fn run<B: Backend + 'static>(
    mut config: watch::Receiver<Arc<Config>>,
    shutdown: CancellationToken,
    env: CycleEnv,
    factory: BackendFactory<B>,
) {
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut running: HashMap<String, (RouterConfig, CancellationToken)> = HashMap::new();
    let mut ids: HashMap<tokio::task::Id, String> = HashMap::new();
    loop {
        let current = config.borrow_and_update().clone();
        // Stop tasks whose router vanished or whose connection settings changed.
        running.retain(|name, (old, token)| {
            let keep = current
                .routers
                .iter()
                .any(|r| &r.name == name && !r.connection_differs(old));
            if !keep {
                token.cancel();
            }
            keep
        });
        for r in &current.routers {
            if running.contains_key(&r.name) {
                continue;
            }
            let token = shutdown.child_token();
            running.insert(r.name.clone(), (r.clone(), token.clone()));
            let mut backend =
                RecordingTap::following(factory(r, &current), &r.name, config.clone());
            let (name, rx, env) = (r.name.clone(), config.clone(), env.clone());
            let handle = tasks.spawn(async move {
                run_router(name, &mut backend, rx, token, env).await;
                backend.finish().await;
            });
            ids.insert(handle.id(), r.name.clone());
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = config.changed() => if changed.is_err() { break },
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let (id, panicked) = match &done {
                    Ok((id, ())) => (*id, false),
                    Err(e) => (e.id(), e.is_panic()),
                };
                if let Some(name) = ids.remove(&id) {
                    if panicked && !shutdown.is_cancelled() {
                        // A bug must not leave a router unwatched: log it and start it again.
                        error!(router = name.as_str(), "the router task failed unexpectedly; restarting it");
                        if let Some((_, token)) = running.remove(&name) {
                            token.cancel();
                        }
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
            }
        }
    }
    for (_, (_, token)) in running {
        token.cancel();
    }
    while tasks.join_next().await.is_some() {}
}

/// Waits for `d` unless `shutdown` comes first; true when it is time to stop.
async fn wait_or_stop(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

/// How a router is doing, so that only changes are logged.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Health {
    /// Not connected yet.
    Starting,
    /// The last cycle completed.
    Up,
    /// Failing, for this kind of reason (the kind, not the text, so changing details such as
    /// a port number do not make every attempt news).
    Down(String),
}

/// Blocks other routers made, from the event stream (`share_blocks`).
struct Inbox {
    rx: broadcast::Receiver<Event>,
}

impl Inbox {
    fn drain(&mut self, me: &str, on: bool) -> Vec<SharedCandidate> {
        let mut out = Vec::new();
        loop {
            match self.rx.try_recv() {
                Ok(Event::Block(b))
                    if on && b.router != me && !b.dry_run && b.kind == AddKind::New =>
                {
                    out.push(SharedCandidate {
                        from_router: b.router,
                        address: b.address,
                        expires: b.expires,
                        comment: b.comment,
                        evidence_json: b.evidence_json,
                    })
                }
                Ok(_) => {}
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    warn!(router = me, "{n} events from other routers were missed (too many at once); some shared blocks may be missing here")
                }
                Err(_) => break,
            }
        }
        out
    }
}

/// Writes what `rosguard status` shows for a router.
async fn write_status(env: &CycleEnv, router: &str, status: serde_json::Value) {
    let store = env.store.clone();
    let router = router.to_owned();
    let _ = tokio::task::spawn_blocking(move || {
        if let Ok(mut s) = store.lock() {
            if let Err(e) = s.set_status(&router, &status, secs(unix_now())) {
                debug!(router = router.as_str(), "status not written: {e}");
            }
        }
    })
    .await;
}

/// One router's life: connect, cycle until the connection is lost, back off, repeat.
async fn run_router<B: Backend>(
    name: String,
    backend: &mut B,
    mut config: watch::Receiver<Arc<Config>>,
    shutdown: CancellationToken,
    env: CycleEnv,
) {
    let router_name = name.as_str();
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    let mut health = Health::Starting;
    let mut inbox = Inbox {
        rx: env.events.subscribe(),
    };
    let mut notes = Notes::default();
    let mut state = None;
    let mut seen_settings = None;
    let link_down = |health: &mut Health, e: &BackendError, what: &str| {
        let new = Health::Down(e.label.clone());
        if *health != new {
            error!(
                router = router_name,
                "{what}: {e}; retrying with backoff (up to 60s)"
            );
        } else {
            debug!(router = router_name, "{what} again: {e}");
        }
        *health = new;
        env.events.emit(Event::Link {
            router: router_name.to_owned(),
            link: Link::Down {
                error: e.message.clone(),
                label: e.label.clone(),
            },
        });
    };
    let status = |connected: bool,
                  last_error: Option<&str>,
                  report: Option<&crate::report::CycleReport>,
                  budget: Option<u32>,
                  cfg: &RouterConfig| {
        json!({
            "connected": connected,
            "address": cfg.address,
            "last_error": last_error,
            "last_cycle_unix": report.map(|_| secs(unix_now())),
            "list_size": report.map(|r| r.list_size),
            "max_list_size": cfg.settings.blocking.max_list_size,
            "max_blocks_per_hour": cfg.settings.blocking.max_blocks_per_hour,
            "blocks_last_hour": budget.map(|b| cfg.settings.blocking.max_blocks_per_hour.saturating_sub(b)),
            "caps_hit": report.map(|r| r.caps_hit.iter().map(|c| c.as_str()).collect::<Vec<_>>()),
            "dry_run": cfg.settings.blocking.dry_run,
            "pid": std::process::id(),
        })
    };
    while !shutdown.is_cancelled() {
        let cfg = config.borrow_and_update().clone();
        let Some(router) = cfg.routers.iter().find(|r| r.name == name).cloned() else {
            return;
        };
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = backend.connect() => c,
        };
        if let Err(e) = connected {
            link_down(&mut health, &e, "cannot connect");
            write_status(
                &env,
                router_name,
                status(false, Some(&e.message), None, None, &router),
            )
            .await;
            if wait_or_stop(backoff.next_delay(), &shutdown).await {
                return;
            }
            continue;
        }
        // Once per change of state: the first connection is news; after a failure only a
        // completed cycle is ("connection restored"), so a router that accepts the login and
        // then drops us is not announced at every attempt.
        if health == Health::Starting {
            warn!(
                router = router_name,
                "connected to {} as {}", router.address, router.username
            );
        } else if health != Health::Up {
            debug!(
                router = router_name,
                "connected to {} as {}", router.address, router.username
            );
        }
        env.events.emit(Event::Link {
            router: name.clone(),
            link: Link::Up,
        });
        let state = state
            .get_or_insert_with(|| load_state(&env, router_name, &router.settings, unix_now()));
        state.connected();
        // The last cycle error logged on this connection, so a persistent one is logged once.
        let mut last_cycle_error: Option<String> = None;
        loop {
            let cfg = config.borrow_and_update().clone();
            let Some(router) = cfg.routers.iter().find(|r| r.name == name) else {
                close(backend).await;
                return;
            };
            // A reloaded config (SIGHUP) keeps the counted blocks and what was learnt.
            if seen_settings.as_ref() != Some(&router.settings) {
                if seen_settings.is_some() {
                    state.reconfigure(&router.settings);
                }
                seen_settings = Some(router.settings.clone());
            }
            let shared = inbox.drain(router_name, cfg.daemon.share_blocks);
            let limits = Limits {
                stop: shutdown.clone(),
                deadline: cfg.daemon.cycle_deadline,
                replay: false,
            };
            let result = run_cycle(
                &mut *backend,
                router_name,
                &router.settings,
                state,
                &env,
                &mut notes,
                shared,
                unix_now(),
                &limits,
            )
            .await;
            if shutdown.is_cancelled() {
                if result.is_err() {
                    warn!(router = router_name, "stopping: the cycle in progress was abandoned (what it added is adopted from the router at the next start)");
                }
                close(backend).await;
                return;
            }
            match result {
                Ok(report) => {
                    if matches!(health, Health::Down(_)) {
                        warn!(router = router_name, "connection restored");
                    }
                    health = Health::Up;
                    // Only a completed cycle proves the router is back: a router that accepts
                    // the login and then drops us keeps backing off.
                    backoff.reset();
                    last_cycle_error = None;
                    let budget = state.hourly_budget(unix_now());
                    write_status(
                        &env,
                        router_name,
                        status(true, None, Some(&report), budget, router),
                    )
                    .await;
                }
                Err(e) if e.is_connection_lost() => {
                    link_down(&mut health, &e, "lost the connection");
                    write_status(
                        &env,
                        router_name,
                        status(false, Some(&e.message), None, None, router),
                    )
                    .await;
                    break;
                }
                Err(e) => {
                    if last_cycle_error.as_deref() != Some(e.message.as_str()) {
                        warn!(router = router_name, "cycle failed: {e}");
                    } else {
                        debug!(router = router_name, "cycle failed again: {e}");
                    }
                    env.events.emit(Event::CycleFailed {
                        router: name.clone(),
                        error: e.message.clone(),
                    });
                    write_status(
                        &env,
                        router_name,
                        status(true, Some(&e.message), None, None, router),
                    )
                    .await;
                    last_cycle_error = Some(e.message);
                }
            }
            if wait_or_stop(cfg.daemon.loop_delay, &shutdown).await {
                close(backend).await;
                return;
            }
        }
        close(backend).await;
        if wait_or_stop(backoff.next_delay(), &shutdown).await {
            return;
        }
    }
}

/// Closes the backend's connection, giving a graceful close at most [`CLOSE_TIMEOUT`].
async fn close<B: Backend>(backend: &mut B) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, backend.close()).await;
}

/// An error and its causes on one line, without repeating a cause its parent already quotes.
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    rosguard_routeros::one_line(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut last_ceiling = Duration::ZERO;
        for _ in 0..12 {
            let ceiling = b.ceiling();
            assert!(ceiling >= last_ceiling && ceiling <= Duration::from_secs(60));
            let d = b.next_delay();
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
            last_ceiling = ceiling;
        }
        assert_eq!(b.ceiling(), Duration::from_secs(60));
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_secs(1));
    }
}
