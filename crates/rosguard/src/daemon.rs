//! The long-running daemon: one task per router, each looping connect -> cycle -> wait.
//!
//! A router that is down, slow or misbehaving only delays its own task. Lost connections are
//! retried with capped exponential backoff and jitter, and logged once per change of state,
//! not once per attempt. A new config (SIGHUP) reaches every task through a watch channel;
//! shutdown is a cancellation token, honoured between cycles, and every task is joined.
//!
//! This module does not parse config or decide what to block: see `config` and `cycle`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::RngExt;
use routeros_client::{Client, ClientConfig};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::{Config, RouterConfig};
use crate::cycle::{run_cycle, CycleEnv, CycleReport, RouterState};

/// What the daemon tells its observers (the demo, tests).
#[derive(Debug, Clone)]
pub enum DaemonEvent {
    Connected { router: String },
    Disconnected { router: String, error: String },
    Cycle(CycleReport),
    CycleFailed { router: String, error: String },
}

/// Builds the client settings for a router.
pub fn client_config(router: &RouterConfig) -> ClientConfig {
    let mut c = ClientConfig::new(
        router.name.clone(),
        router.address.clone(),
        router.username.clone(),
        router.password.clone(),
    );
    c.tls = router.tls.clone();
    c
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
pub async fn run(
    mut config: watch::Receiver<Arc<Config>>,
    shutdown: CancellationToken,
    events: Option<mpsc::UnboundedSender<DaemonEvent>>,
    env: CycleEnv,
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
            let handle = tasks.spawn(run_router(
                r.name.clone(),
                config.clone(),
                token,
                events.clone(),
                env.clone(),
            ));
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
    /// Not connected yet, or connected without a completed cycle.
    Starting,
    /// The last cycle completed.
    Up,
    /// Failing, for this kind of reason (the kind, not the text, so changing details such as
    /// a port number do not make every attempt news).
    Down(String),
}

/// The kind of a connection-level failure, for [`Health::Down`].
fn failure_kind(e: &routeros_client::Error) -> String {
    use routeros_client::Error as E;
    match e {
        E::LoginFailed { .. } => "login".into(),
        E::Tls { .. } => "tls".into(),
        E::Timeout { .. } => "timeout".into(),
        E::Fatal { .. } => "fatal".into(),
        E::Io { source, .. } => format!("io:{:?}", source.kind()),
        _ => "connection".into(),
    }
}

/// One router's life: connect, cycle until the connection is lost, back off, repeat.
async fn run_router(
    name: String,
    mut config: watch::Receiver<Arc<Config>>,
    shutdown: CancellationToken,
    events: Option<mpsc::UnboundedSender<DaemonEvent>>,
    env: CycleEnv,
) {
    let send = |e: DaemonEvent| {
        if let Some(tx) = &events {
            let _ = tx.send(e);
        }
    };
    let metrics = env.metrics.clone();
    let gauge = |up: bool| {
        if let Some(m) = &metrics {
            m.connected(&name, up);
        }
    };
    let count_error = |kind: &str| {
        if let Some(m) = &metrics {
            m.error(&name, kind);
        }
    };
    let router_name = name.as_str();
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    let mut health = Health::Starting;
    // Logs a failure when it is news: the first one, or one of another kind.
    let fail = |health: &mut Health, kind: String, text: &str, what: &str| {
        let new = Health::Down(kind);
        if *health != new {
            error!(
                router = router_name,
                "{what}: {text}; retrying with backoff (up to 60s)"
            );
            send(DaemonEvent::Disconnected {
                router: name.clone(),
                error: text.to_owned(),
            });
        } else {
            debug!(router = router_name, "{what} again: {text}");
        }
        *health = new;
    };
    let mut state: Option<(RouterConfig, RouterState)> = None;
    gauge(false);
    while !shutdown.is_cancelled() {
        let cfg = config.borrow_and_update().clone();
        let Some(router) = cfg.routers.iter().find(|r| r.name == name).cloned() else {
            return;
        };
        let connect = Client::connect(client_config(&router));
        let client = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = connect => c,
        };
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                count_error(if matches!(e, routeros_client::Error::LoginFailed { .. }) {
                    "login"
                } else {
                    "connect"
                });
                fail(
                    &mut health,
                    failure_kind(&e),
                    &one_line(&e),
                    "cannot connect",
                );
                if wait_or_stop(backoff.next_delay(), &shutdown).await {
                    return;
                }
                continue;
            }
        };
        debug!(
            router = router_name,
            "connected to {} as {}", router.address, router.username
        );
        if health == Health::Starting {
            info!(
                router = router_name,
                "connected to {} as {}", router.address, router.username
            );
        }
        send(DaemonEvent::Connected {
            router: name.clone(),
        });
        gauge(true);
        if let Some((_, s)) = state.as_mut() {
            // The router may have rebooted (timed entries gone): restore at the next cycle.
            s.needs_restore = true;
        }
        // The last cycle error logged on this connection, so a persistent one is logged once.
        let mut last_cycle_error: Option<String> = None;
        loop {
            let cfg = config.borrow_and_update().clone();
            let Some(router) = cfg.routers.iter().find(|r| r.name == name) else {
                client.close().await;
                gauge(false);
                return;
            };
            // A reloaded config (SIGHUP) keeps the counted blocks and what was learnt.
            match state.as_mut() {
                Some((seen, s)) => {
                    if seen.detection != router.detection || seen.blocking != router.blocking {
                        s.reconfigure(seen, router);
                        *seen = router.clone();
                    }
                }
                None => state = Some((router.clone(), RouterState::new(router, &env))),
            }
            let Some((_, router_state)) = state.as_mut() else {
                continue;
            };
            match run_cycle(&client, router, &cfg.daemon, router_state, &env).await {
                Ok(report) => {
                    if matches!(health, Health::Down(_)) {
                        warn!(router = router_name, "connection restored");
                    }
                    health = Health::Up;
                    // Only a completed cycle proves the router is back: a router that accepts
                    // the login and then drops us keeps backing off.
                    backoff.reset();
                    last_cycle_error = None;
                    send(DaemonEvent::Cycle(report));
                }
                Err(e) => {
                    let text = one_line(e.as_ref());
                    if client.is_closed() {
                        count_error("connection_lost");
                        fail(&mut health, "lost".into(), &text, "lost the connection");
                        break;
                    }
                    count_error("cycle");
                    if last_cycle_error.as_deref() != Some(text.as_str()) {
                        warn!(router = router_name, "cycle failed: {text}");
                    } else {
                        debug!(router = router_name, "cycle failed again: {text}");
                    }
                    send(DaemonEvent::CycleFailed {
                        router: name.clone(),
                        error: text.clone(),
                    });
                    last_cycle_error = Some(text);
                }
            }
            if wait_or_stop(cfg.daemon.loop_delay, &shutdown).await {
                client.close().await;
                gauge(false);
                return;
            }
        }
        gauge(false);
        client.close().await;
        if wait_or_stop(backoff.next_delay(), &shutdown).await {
            return;
        }
    }
}

/// An error and its causes on one line, without repeating a cause its parent already quotes.
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
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
