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

use rand::Rng;
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
        half + rand::thread_rng().gen_range(Duration::ZERO..=half)
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
            tasks.spawn(run_router(
                r.name.clone(),
                config.clone(),
                token,
                events.clone(),
                env.clone(),
            ));
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = config.changed() => if changed.is_err() { break },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
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
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    // The last failure logged, so a flapping router is logged once per change of state.
    let mut last_failure: Option<String> = None;
    let mut state: Option<(RouterConfig, RouterState)> = None;
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
                let text = e.to_string();
                let delay = backoff.next_delay();
                if last_failure.as_deref() != Some(text.as_str()) {
                    error!(
                        router = name.as_str(),
                        "cannot connect: {text}; retrying with backoff (up to 60s)"
                    );
                    send(DaemonEvent::Disconnected {
                        router: name.clone(),
                        error: text.clone(),
                    });
                    last_failure = Some(text);
                } else {
                    debug!(
                        router = name.as_str(),
                        "still cannot connect; next try in {delay:?}"
                    );
                }
                if wait_or_stop(delay, &shutdown).await {
                    return;
                }
                continue;
            }
        };
        info!(
            router = name.as_str(),
            "connected to {} as {}", router.address, router.username
        );
        if last_failure.take().is_some() {
            warn!(router = name.as_str(), "connection restored");
        }
        send(DaemonEvent::Connected {
            router: name.clone(),
        });
        gauge(true);
        backoff.reset();
        if let Some((_, s)) = state.as_mut() {
            // The router may have rebooted (timed entries gone): restore at the next cycle.
            s.needs_restore = true;
        }
        loop {
            let cfg = config.borrow_and_update().clone();
            let Some(router) = cfg.routers.iter().find(|r| r.name == name) else {
                client.close().await;
                gauge(false);
                return;
            };
            // New detection or blocking settings (SIGHUP) start a fresh tracker and caps.
            let fresh = match &state {
                Some((seen, _)) => {
                    seen.detection != router.detection || seen.blocking != router.blocking
                }
                None => true,
            };
            if fresh {
                state = Some((router.clone(), RouterState::new(router, &env)));
            }
            let Some((_, router_state)) = state.as_mut() else {
                continue;
            };
            match run_cycle(&client, router, &cfg.daemon, router_state, &env).await {
                Ok(report) => send(DaemonEvent::Cycle(report)),
                Err(e) => {
                    count_error(if client.is_closed() {
                        "connection_lost"
                    } else {
                        "cycle"
                    });
                    let text = format!("{e:#}");
                    if client.is_closed() {
                        warn!(
                            router = name.as_str(),
                            "lost the connection: {text}; reconnecting"
                        );
                        send(DaemonEvent::Disconnected {
                            router: name.clone(),
                            error: text.clone(),
                        });
                        last_failure = Some(text);
                        break;
                    }
                    warn!(router = name.as_str(), "cycle failed: {text}");
                    send(DaemonEvent::CycleFailed {
                        router: name.clone(),
                        error: text,
                    });
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
        let delay = backoff.next_delay();
        if wait_or_stop(delay, &shutdown).await {
            return;
        }
    }
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
