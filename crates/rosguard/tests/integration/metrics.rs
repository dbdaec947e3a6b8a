//! `/metrics` and `/health`: a real cycle feeds the registry, a scrape parses the output.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rosguard::metrics::{serve, HealthSpec, Metrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::support::*;

pub async fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// `name{labels} value` lines of an OpenMetrics text, as (series, value).
pub fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("series and value");
            (
                series.to_owned(),
                value
                    .parse::<f64>()
                    .unwrap_or_else(|_| panic!("bad value in {l:?}")),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_scrape_shows_the_cycle_and_health_follows_the_routers() {
    let sim = sim().await;
    sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    sim.add_connection(frozen_tls("192.168.88.50:54322", "192.168.88.1:443"));
    let metrics = Arc::new(Metrics::default());
    let env = memory_env();
    let mut events = env.events.subscribe();
    let mut rig = Rig::with_env(router_for(&sim, "core"), env).await;
    rig.cycle().await;
    // What the daemon published, fed to the metrics as their subscriber task does.
    while let Ok(e) = events.try_recv() {
        metrics.apply(&e);
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let health = Arc::new(Mutex::new(HealthSpec {
        routers: vec!["core".into()],
        max_age: Duration::from_secs(60),
    }));
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve(listener, metrics, health.clone(), 8, stop.clone()));

    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        body.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );
    let s = samples(&body);
    let value = |series: &str| s.iter().find(|(k, _)| k == series).map(|(_, v)| *v);
    assert_eq!(value("rosguard_cycles_total{router=\"core\"}"), Some(1.0));
    assert_eq!(value("rosguard_flagged_total{router=\"core\"}"), Some(2.0));
    assert_eq!(value("rosguard_blocked_total{router=\"core\"}"), Some(1.0));
    assert_eq!(
        value("rosguard_skipped_total{router=\"core\",reason=\"local\"}"),
        Some(1.0)
    );
    assert_eq!(
        value("rosguard_rows_scanned_total{router=\"core\"}"),
        Some(2.0)
    );
    assert_eq!(
        value("rosguard_cycle_duration_seconds_count{router=\"core\"}"),
        Some(1.0)
    );

    let (status, body) = get(addr, "/health").await;
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 200 OK", "ok\n")
    );
    health.lock().unwrap().routers.push("edge".into());
    let (status, body) = get(addr, "/health").await;
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
    assert!(body.contains("edge"), "{body}");
    let (status, _) = get(addr, "/nope").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    stop.cancel();
    server.await.unwrap();
}
