//! Prometheus metrics and the health endpoint; this module owns every metric name.
//!
//! `/metrics` serves the OpenMetrics text format, `/health` answers 200 when every router has
//! completed a cycle recently and 503 (naming the stale routers) otherwise. The HTTP side is a
//! deliberately tiny GET-only responder on one loopback-friendly listener: two fixed paths do
//! not justify a web framework.
//!
//! This module does not decide anything; the daemon reports into it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cycle::CycleReport;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouterLabel {
    router: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    router: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    router: String,
    kind: String,
}

/// Every metric rosguard exports.
pub struct Metrics {
    registry: Registry,
    cycles: Family<RouterLabel, Counter>,
    cycle_seconds: Family<RouterLabel, Histogram>,
    scanned: Family<RouterLabel, Counter>,
    flagged: Family<RouterLabel, Counter>,
    blocked: Family<RouterLabel, Counter>,
    skipped: Family<ReasonLabel, Counter>,
    errors: Family<KindLabel, Counter>,
    caps_hit: Family<KindLabel, Counter>,
    connected: Family<RouterLabel, Gauge>,
    list_size: Family<RouterLabel, Gauge>,
    last_cycle: Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("rosguard");
        let cycles = Family::<RouterLabel, Counter>::default();
        registry.register("cycles", "Completed cycles", cycles.clone());
        let cycle_seconds = Family::<RouterLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.005, 2.0, 14))) as fn() -> Histogram,
        );
        let cycle_seconds_reg = cycle_seconds.clone();
        registry.register(
            "cycle_duration_seconds",
            "Duration of one cycle",
            cycle_seconds_reg,
        );
        let scanned = Family::<RouterLabel, Counter>::default();
        registry.register(
            "rows_scanned",
            "Connection-table rows read",
            scanned.clone(),
        );
        let flagged = Family::<RouterLabel, Counter>::default();
        registry.register(
            "flagged",
            "Connections flagged as asymmetric",
            flagged.clone(),
        );
        let blocked = Family::<RouterLabel, Counter>::default();
        registry.register(
            "blocked",
            "Addresses added to the block list",
            blocked.clone(),
        );
        let skipped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "skipped",
            "Flagged connections not acted on, by reason",
            skipped.clone(),
        );
        let errors = Family::<KindLabel, Counter>::default();
        registry.register("errors", "Errors, by kind", errors.clone());
        let caps_hit = Family::<KindLabel, Counter>::default();
        registry.register(
            "caps_hit",
            "Times a safety cap stopped blocking, by cap",
            caps_hit.clone(),
        );
        let connected = Family::<RouterLabel, Gauge>::default();
        registry.register(
            "connected",
            "1 while the API connection is up",
            connected.clone(),
        );
        let list_size = Family::<RouterLabel, Gauge>::default();
        registry.register(
            "list_size",
            "Entries in the block list at the last cycle",
            list_size.clone(),
        );
        Self {
            registry,
            cycles,
            cycle_seconds,
            scanned,
            flagged,
            blocked,
            skipped,
            errors,
            caps_hit,
            connected,
            list_size,
            last_cycle: Mutex::new(HashMap::new()),
        }
    }
}

fn router(r: &str) -> RouterLabel {
    RouterLabel {
        router: r.to_owned(),
    }
}

impl Metrics {
    /// Records a completed cycle.
    pub fn cycle(&self, r: &CycleReport) {
        let l = router(&r.router);
        self.cycles.get_or_create(&l).inc();
        self.cycle_seconds
            .get_or_create(&l)
            .observe(r.duration_ms as f64 / 1000.0);
        self.scanned.get_or_create(&l).inc_by(r.scanned);
        self.flagged.get_or_create(&l).inc_by(r.flagged);
        self.blocked
            .get_or_create(&l)
            .inc_by(r.effective_blocks().count() as u64);
        for s in &r.skipped {
            self.skipped
                .get_or_create(&ReasonLabel {
                    router: r.router.clone(),
                    reason: s.kind.clone(),
                })
                .inc();
        }
        if r.capped > 0 {
            self.skipped
                .get_or_create(&ReasonLabel {
                    router: r.router.clone(),
                    reason: "capped".into(),
                })
                .inc_by(r.capped);
        }
        if r.deferred > 0 {
            self.skipped
                .get_or_create(&ReasonLabel {
                    router: r.router.clone(),
                    reason: "over_cycle_cap".into(),
                })
                .inc_by(r.deferred);
        }
        for cap in &r.caps_hit {
            self.caps_hit
                .get_or_create(&KindLabel {
                    router: r.router.clone(),
                    kind: cap.clone(),
                })
                .inc();
        }
        self.list_size.get_or_create(&l).set(r.list_size as i64);
        if let Ok(mut m) = self.last_cycle.lock() {
            m.insert(r.router.clone(), Instant::now());
        }
    }

    /// Records an error of a kind (`connect`, `login`, `cycle`, ...).
    pub fn error(&self, router_name: &str, kind: &str) {
        self.errors
            .get_or_create(&KindLabel {
                router: router_name.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Sets the connection gauge.
    pub fn connected(&self, router_name: &str, up: bool) {
        self.connected
            .get_or_create(&router(router_name))
            .set(i64::from(up));
    }

    /// The OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Routers (of `expected`) that have not completed a cycle within `max_age`.
    pub fn stale_routers(&self, expected: &[String], max_age: Duration) -> Vec<String> {
        let now = Instant::now();
        let m = self
            .last_cycle
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        expected
            .iter()
            .filter(|r| m.get(*r).is_none_or(|t| now.duration_since(*t) > max_age))
            .cloned()
            .collect()
    }
}

/// What `/health` checks against.
#[derive(Debug, Clone)]
pub struct HealthSpec {
    pub routers: Vec<String>,
    pub max_age: Duration,
}

impl HealthSpec {
    /// Every router of `cfg`, each expected to finish a cycle within three loop delays plus
    /// 30 s (a slow router's cycle, a reconnect).
    pub fn for_config(cfg: &crate::config::Config) -> Self {
        Self {
            routers: cfg.routers.iter().map(|r| r.name.clone()).collect(),
            max_age: cfg.daemon.loop_delay * 3 + Duration::from_secs(30),
        }
    }
}

/// Serves `/metrics` and `/health` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Mutex<HealthSpec>>,
    shutdown: CancellationToken,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let Ok((mut stream, _)) = accepted else {
            continue;
        };
        let (metrics, health) = (metrics.clone(), health.clone());
        conns.spawn(async move {
            let mut buf = [0u8; 2048];
            let n = match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let (status, ctype, body) = match (request.split_whitespace().next(), path) {
                (Some("GET"), "/metrics") => (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    metrics.render(),
                ),
                (Some("GET"), "/health") => {
                    let spec = health.lock().map(|h| h.clone()).unwrap_or(HealthSpec { routers: vec![], max_age: Duration::ZERO });
                    let stale = metrics.stale_routers(&spec.routers, spec.max_age);
                    if stale.is_empty() {
                        ("200 OK", "text/plain", "ok\n".to_owned())
                    } else {
                        ("503 Service Unavailable", "text/plain", format!("no recent cycle: {}\n", stale.join(", ")))
                    }
                }
                (Some("GET"), _) => ("404 Not Found", "text/plain", "try /metrics or /health\n".to_owned()),
                _ => ("405 Method Not Allowed", "text/plain", "GET only\n".to_owned()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
        while conns.try_join_next().is_some() {}
    }
    conns.shutdown().await;
}

/// Binds the metrics listener, with an error that says what to change.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "daemon.metrics_listen: cannot listen on {addr}: {e}; pick a free address:port"
        )
    })
}
