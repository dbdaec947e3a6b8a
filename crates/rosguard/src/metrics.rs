//! Prometheus metrics and the health endpoint; this module owns every metric name.
//!
//! [`Metrics::follow`] subscribes to the daemon's event stream and keeps the counters;
//! `/metrics` serves the OpenMetrics text format and `/health` answers 200 when every router
//! has completed a cycle recently and 503 (naming the stale routers) otherwise. Dry-run
//! decisions are counted apart (`rosguard_dry_run_blocks_total`), never as blocks.
//!
//! The HTTP side is a deliberately tiny GET-only responder: two fixed paths do not justify a
//! web framework. It is bounded like everything facing the network: at most
//! `daemon.metrics_max_connections` connections at once (more wait in the kernel's backlog),
//! a request head of at most [`MAX_REQUEST`] bytes read within [`REQUEST_TIMEOUT`] (split
//! across as many TCP segments as the client likes), and an `accept` that fails (EMFILE, ...)
//! backs off instead of spinning.
//!
//! This module does not decide anything; it listens to the daemon.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, Semaphore};
// tokio's clock, so that a paused test clock drives `/health` too.
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::events::{Event, Link};
use crate::report::CycleReport;

/// The longest request head read.
pub const MAX_REQUEST: usize = 8192;
/// How long a client has to send its request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause after a failed `accept` (too many open files, ...), doubling up to a second.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

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
    dry_run_blocked: Family<RouterLabel, Counter>,
    restored: Family<RouterLabel, Counter>,
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
        registry.register(
            "cycle_duration_seconds",
            "Duration of one cycle",
            cycle_seconds.clone(),
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
            "Findings: asymmetric connections, scanners, staged addresses",
            flagged.clone(),
        );
        let blocked = Family::<RouterLabel, Counter>::default();
        registry.register(
            "blocked",
            "Addresses added to the block list (new and shared)",
            blocked.clone(),
        );
        let dry_run_blocked = Family::<RouterLabel, Counter>::default();
        registry.register(
            "dry_run_blocks",
            "Addresses a dry run would have added",
            dry_run_blocked.clone(),
        );
        let restored = Family::<RouterLabel, Counter>::default();
        registry.register(
            "restored",
            "Blocks put back after the router lost them",
            restored.clone(),
        );
        let skipped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "skipped",
            "Findings not acted on, by reason",
            skipped.clone(),
        );
        let errors = Family::<KindLabel, Counter>::default();
        registry.register("errors", "Errors, by kind", errors.clone());
        let caps_hit = Family::<KindLabel, Counter>::default();
        registry.register(
            "caps_hit",
            "Cycles in which a safety cap or brake held blocks back, by cap",
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
            dry_run_blocked,
            restored,
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
    /// Takes in one event.
    pub fn apply(&self, e: &Event) {
        match e {
            Event::Cycle(r) => self.cycle(r),
            Event::Link { router: name, link } => {
                self.connected
                    .get_or_create(&router(name))
                    .set(i64::from(*link == Link::Up));
                if let Link::Down { label, .. } = link {
                    self.error(name, label);
                }
            }
            Event::CycleFailed { router: name, .. } => self.error(name, "cycle"),
            Event::Block(_) | Event::Lift { .. } | Event::Cap { .. } => {}
        }
    }

    /// Keeps the metrics from `events` until the stream ends or `shutdown`.
    pub async fn follow(
        self: Arc<Self>,
        mut events: broadcast::Receiver<Event>,
        shutdown: CancellationToken,
    ) {
        loop {
            let e = tokio::select! {
                _ = shutdown.cancelled() => return,
                e = events.recv() => e,
            };
            match e {
                Ok(e) => self.apply(&e),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(
                        "metrics missed {n} events (the daemon was faster than the metrics task)"
                    )
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    fn cycle(&self, r: &CycleReport) {
        let l = router(&r.router);
        self.cycles.get_or_create(&l).inc();
        self.cycle_seconds
            .get_or_create(&l)
            .observe(r.duration_ms as f64 / 1000.0);
        self.scanned.get_or_create(&l).inc_by(r.scanned);
        self.flagged.get_or_create(&l).inc_by(r.flagged);
        let new = r.new_blocks().count() as u64;
        if r.dry_run {
            self.dry_run_blocked.get_or_create(&l).inc_by(new);
        } else {
            self.blocked.get_or_create(&l).inc_by(new);
        }
        let restored = r
            .blocks
            .iter()
            .filter(|b| b.kind == rosguard_core::AddKind::Restored && b.result.took_effect())
            .count() as u64;
        self.restored.get_or_create(&l).inc_by(restored);
        let reason = |reason: &str| ReasonLabel {
            router: r.router.clone(),
            reason: reason.to_owned(),
        };
        for s in &r.skipped {
            self.skipped.get_or_create(&reason(s.reason.kind())).inc();
        }
        if r.capped > 0 {
            self.skipped
                .get_or_create(&reason("capped"))
                .inc_by(r.capped);
        }
        if r.deferred > 0 {
            self.skipped
                .get_or_create(&reason("over_cycle_cap"))
                .inc_by(r.deferred);
        }
        for cap in &r.caps_hit {
            self.caps_hit
                .get_or_create(&KindLabel {
                    router: r.router.clone(),
                    kind: cap.as_str().to_owned(),
                })
                .inc();
        }
        let (failed, _) = r.failed_adds();
        if failed > 0 {
            self.errors
                .get_or_create(&KindLabel {
                    router: r.router.clone(),
                    kind: "add".into(),
                })
                .inc_by(failed as u64);
        }
        self.list_size.get_or_create(&l).set(r.list_size as i64);
        if let Ok(mut m) = self.last_cycle.lock() {
            m.insert(r.router.clone(), Instant::now());
        }
    }

    fn error(&self, router_name: &str, kind: &str) {
        self.errors
            .get_or_create(&KindLabel {
                router: router_name.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
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

/// Reads a request head: bytes until the blank line, at most [`MAX_REQUEST`], within
/// [`REQUEST_TIMEOUT`]. `None` when the client sends too much, too slowly, or closes.
async fn read_head<R: AsyncReadExt + Unpin>(stream: &mut R) -> Option<Vec<u8>> {
    let read = async {
        let mut buf = Vec::with_capacity(512);
        let mut chunk = [0u8; 1024];
        loop {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                // A client that half-closed after its request line still gets an answer.
                return (!buf.is_empty()).then_some(buf);
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
                return Some(buf);
            }
            if buf.len() > MAX_REQUEST {
                return None;
            }
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read)
        .await
        .ok()
        .flatten()
}

fn respond(
    request: &[u8],
    metrics: &Metrics,
    health: &Mutex<HealthSpec>,
) -> (&'static str, &'static str, String) {
    let request = String::from_utf8_lossy(request);
    let mut words = request.split_whitespace();
    let (method, path) = (words.next(), words.next().unwrap_or(""));
    match (method, path) {
        (Some("GET"), "/metrics") => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        (Some("GET"), "/health") => {
            let spec = health.lock().map(|h| h.clone()).unwrap_or(HealthSpec {
                routers: vec![],
                max_age: Duration::ZERO,
            });
            let stale = metrics.stale_routers(&spec.routers, spec.max_age);
            if spec.routers.is_empty() {
                (
                    "503 Service Unavailable",
                    "text/plain",
                    "no routers configured\n".to_owned(),
                )
            } else if stale.is_empty() {
                ("200 OK", "text/plain", "ok\n".to_owned())
            } else {
                (
                    "503 Service Unavailable",
                    "text/plain",
                    format!("no recent cycle: {}\n", stale.join(", ")),
                )
            }
        }
        (Some("GET"), _) => (
            "404 Not Found",
            "text/plain",
            "try /metrics or /health\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_owned(),
        ),
    }
}

/// Where the metrics listener's connections come from: a [`TcpListener`], or in tests a
/// listener that fails on purpose.
pub trait Accept: Send + Sync {
    /// The next connection.
    fn accept_stream(&self)
        -> impl std::future::Future<Output = std::io::Result<TcpStream>> + Send;
}

impl Accept for TcpListener {
    async fn accept_stream(&self) -> std::io::Result<TcpStream> {
        self.accept().await.map(|(s, _)| s)
    }
}

/// Serves `/metrics` and `/health` until `shutdown`, at most `max_connections` at once.
pub async fn serve(
    listener: impl Accept,
    metrics: Arc<Metrics>,
    health: Arc<Mutex<HealthSpec>>,
    max_connections: usize,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let mut conns = tokio::task::JoinSet::new();
    let mut backoff = ACCEPT_BACKOFF;
    loop {
        // Wait for a free slot before accepting: further clients queue in the backlog.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept_stream() => a,
        };
        let mut stream = match accepted {
            Ok(s) => {
                backoff = ACCEPT_BACKOFF;
                s
            }
            Err(e) => {
                // EMFILE and friends: the next accept would fail at once. Wait, doubling.
                tracing::debug!("metrics listener: accept failed: {e}; waiting {backoff:?}");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let (metrics, health) = (metrics.clone(), health.clone());
        conns.spawn(async move {
            let _permit = permit;
            let Some(head) = read_head(&mut stream).await else {
                return;
            };
            let (status, ctype, body) = respond(&head, &metrics, &health);
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let write = async {
                stream.write_all(head.as_bytes()).await?;
                stream.write_all(body.as_bytes()).await?;
                stream.shutdown().await
            };
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, write).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_split_across_segments_is_read_whole() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move { read_head(&mut server).await });
        client.write_all(b"GET /met").await.unwrap();
        tokio::task::yield_now().await;
        client
            .write_all(b"rics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let head = reader.await.unwrap().expect("a whole head");
        assert!(head.starts_with(b"GET /metrics HTTP/1.1\r\n"));
        let m = Metrics::default();
        let h = Mutex::new(HealthSpec {
            routers: vec!["r".into()],
            max_age: Duration::from_secs(1),
        });
        assert_eq!(respond(&head, &m, &h).0, "200 OK");
        assert_eq!(
            respond(b"GET /health HTTP/1.1\r\n\r\n", &m, &h).0,
            "503 Service Unavailable"
        );
        assert_eq!(
            respond(b"POST /metrics HTTP/1.1\r\n\r\n", &m, &h).0,
            "405 Method Not Allowed"
        );
    }

    #[tokio::test]
    async fn an_endless_request_head_is_cut_off() {
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        let reader = tokio::spawn(async move { read_head(&mut server).await });
        client
            .write_all(&vec![b'a'; MAX_REQUEST + 2048])
            .await
            .unwrap();
        assert_eq!(reader.await.unwrap(), None);
    }

    /// Fails like `accept` under EMFILE, `fails` times, then waits for ever.
    struct Failing {
        calls: std::sync::atomic::AtomicUsize,
        fails: usize,
        done: tokio::sync::Notify,
    }

    impl Accept for Failing {
        async fn accept_stream(&self) -> std::io::Result<TcpStream> {
            let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if n < self.fails {
                return Err(std::io::Error::from_raw_os_error(24)); // EMFILE
            }
            self.done.notify_one();
            std::future::pending().await
        }
    }

    /// A failing `accept` is retried after 50 ms, doubling up to a second: ten failures take at
    /// least 0.05 + 0.1 + 0.2 + 0.4 + 0.8 + 5 x 1 s of (paused) time, where a busy loop takes none.
    #[tokio::test(start_paused = true)]
    async fn a_failing_accept_backs_off_instead_of_spinning() {
        let failing = Arc::new(Failing {
            calls: 0.into(),
            fails: 10,
            done: tokio::sync::Notify::new(),
        });
        struct Shared(Arc<Failing>);
        impl Accept for Shared {
            async fn accept_stream(&self) -> std::io::Result<TcpStream> {
                self.0.accept_stream().await
            }
        }
        let shutdown = CancellationToken::new();
        let health = Arc::new(Mutex::new(HealthSpec {
            routers: vec![],
            max_age: Duration::from_secs(1),
        }));
        let start = tokio::time::Instant::now();
        let server = tokio::spawn(serve(
            Shared(failing.clone()),
            Arc::new(Metrics::default()),
            health,
            4,
            shutdown.clone(),
        ));
        failing.done.notified().await;
        let waited = start.elapsed();
        assert_eq!(failing.calls.load(std::sync::atomic::Ordering::SeqCst), 11);
        assert!(waited >= Duration::from_millis(6550), "{waited:?}");
        assert!(waited < Duration::from_millis(6600), "{waited:?}");
        shutdown.cancel();
        server.await.unwrap();
    }

    /// At most `max_connections` at once: with the one slot held by a client that sends
    /// nothing, the next client waits in the backlog until the first one's time is up.
    #[tokio::test(start_paused = true)]
    async fn a_client_over_the_cap_waits_for_a_free_slot() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let health = Arc::new(Mutex::new(HealthSpec {
            routers: vec![],
            max_age: Duration::from_secs(1),
        }));
        let server = tokio::spawn(serve(
            listener,
            Arc::new(Metrics::default()),
            health,
            1,
            shutdown.clone(),
        ));
        let start = tokio::time::Instant::now();
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut reply = String::new();
        client.read_to_string(&mut reply).await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
        assert!(
            start.elapsed() >= REQUEST_TIMEOUT,
            "served while the only slot was taken"
        );
        let mut rest = Vec::new();
        assert_eq!(idle.read_to_end(&mut rest).await.unwrap(), 0);
        shutdown.cancel();
        server.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_times_out() {
        let (_client, mut server) = tokio::io::duplex(64);
        assert_eq!(read_head(&mut server).await, None);
    }
}
