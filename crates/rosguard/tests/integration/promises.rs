//! README promises that no other test pinned (issue 15): the own addresses of the API
//! connection, the backoff and its logging, `/health` going stale, the scraped series, the
//! environment's say over config and state, `--router`, JSON logs, `RUST_LOG`, `stats`,
//! SIGINT and what a reload leaves for a restart.

use std::net::IpAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rosguard::config::{Config, DaemonSettings};
use rosguard::events::{Event, Link};
use rosguard::metrics::{HealthSpec, Metrics};
use rosguard_core::backend::Backend;
use rosguard_core::decide::{Cap, Decision};
use rosguard_core::observation::{Observation, ObservePlan};
use rosguard_core::outcome::{Applied, BackendError, FailureKind};
use rosguard_core::settings::Settings;
use rosguard_core::Protected;
use rosguard_routeros::RouterOsBackend;
use routeros_sim::{Family, Sim, SimClock, SimConfig, SimConnection, SimHandle};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::metrics::{get, samples};
use crate::support::*;

// ---- the API connection's own addresses ------------------------------------------------

/// "rosguard's own address and the router's address there" are two addresses: with the
/// simulator on 127.0.0.2 the connection runs 127.0.0.1 -> 127.0.0.2, so dropping either end
/// shows. `/user/active` is read too: it names the session's address as the router sees it.
#[tokio::test]
async fn both_ends_of_the_api_connection_and_the_session_are_protected() {
    let sim = Sim::start(
        SimConfig {
            clock: SimClock::Manual,
            ..SimConfig::default()
        },
        "127.0.0.2:0".parse().unwrap(),
    )
    .await
    .expect("the simulator listens on 127.0.0.2");
    let router = router_for(&sim, "core");
    let mut b = RouterOsBackend::new(
        router.client_config(),
        rosguard_routeros::DEFAULT_MAX_CANDIDATES,
    );
    b.connect().await.unwrap();
    let plan = ObservePlan {
        refresh_protected: true,
        ..ObservePlan::default()
    };
    let obs = b.observe(&plan, &router.settings).await.unwrap();
    let mut own = obs.own.clone();
    own.sort();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(own, [ip("127.0.0.1"), ip("127.0.0.2")], "local and peer");
    let sessions = obs
        .protected
        .iter()
        .find(|(k, _)| *k == Protected::Session)
        .map(|(_, v)| v.clone());
    assert_eq!(
        sessions,
        Some(vec![ip("127.0.0.1")]),
        "the session as /user/active shows it"
    );
    b.close().await;
}

// ---- backoff and its logging, on a paused clock ----------------------------------------

/// A backend whose connections are accepted and then fail at the first read, except the
/// connection numbered `good` (from 0), whose first cycle completes.
struct Flaky {
    connects: mpsc::UnboundedSender<tokio::time::Instant>,
    count: usize,
    good: usize,
    good_cycles: usize,
}

impl Backend for Flaky {
    async fn connect(&mut self) -> Result<(), BackendError> {
        self.count += 1;
        let _ = self.connects.send(tokio::time::Instant::now());
        Ok(())
    }

    async fn observe(
        &mut self,
        _plan: &ObservePlan,
        _settings: &Settings,
    ) -> Result<Observation, BackendError> {
        if self.count == self.good + 1 && self.good_cycles == 0 {
            self.good_cycles += 1;
            return Ok(Observation::default());
        }
        Err(BackendError {
            kind: FailureKind::ConnectionLost,
            label: "closed".into(),
            message: "router flaky: the router closed the connection".into(),
        })
    }

    async fn apply(&mut self, _d: &Decision, _s: &Settings) -> Applied {
        Applied::default()
    }

    async fn close(&mut self) {}
}

#[tokio::test(start_paused = true)]
async fn the_backoff_resets_only_after_a_completed_cycle_and_failures_are_logged_once() {
    let (logs, _guard) = Captured::install();

    let (tx, mut connects) = mpsc::unbounded_channel();
    let backend = Mutex::new(Some(Flaky {
        connects: tx,
        count: 0,
        good: 5,
        good_cycles: 0,
    }));
    let factory: rosguard::daemon::BackendFactory<Flaky> =
        Arc::new(move |_, _| backend.lock().unwrap().take().expect("one router"));
    let loop_delay = Duration::from_secs(10);
    let mut router = router_for_address("flaky", "127.0.0.1:9");
    router.settings.cycle.loop_delay = loop_delay;
    let cfg = Config {
        daemon: DaemonSettings {
            loop_delay,
            ..DaemonSettings::default()
        },
        routers: vec![router],
        record: rosguard::config::RecordSettings::default(),
    };
    let (_cfg_tx, cfg_rx) = watch::channel(Arc::new(cfg));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(rosguard::daemon::run(
        cfg_rx,
        shutdown.clone(),
        memory_env(),
        factory,
    ));
    let mut at = Vec::new();
    for _ in 0..8 {
        at.push(connects.recv().await.expect("the daemon reconnects"));
    }
    shutdown.cancel();
    task.await.unwrap();
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    // Attempt n waits between half of and all of min(2^n s, 60 s): a login that succeeds is
    // no reason to reset.
    for (n, gap) in gaps[..5].iter().enumerate() {
        let ceiling = Duration::from_secs(1 << n);
        assert!(
            *gap >= ceiling / 2 && *gap <= ceiling,
            "attempt {n}: {gap:?} ({gaps:?})"
        );
    }
    // Connection 5 completed a cycle: the failure after the next loop delay starts over.
    assert!(
        gaps[5] >= loop_delay + Duration::from_millis(500)
            && gaps[5] <= loop_delay + Duration::from_secs(1),
        "reset after the completed cycle: {gaps:?}"
    );
    assert!(gaps[6] >= Duration::from_secs(1), "{gaps:?}");
    // Seven failures, two changes of state (starting -> down, up -> down): two error lines.
    assert_eq!(logs.lines_with("ERROR", "lost the connection"), 2);
    assert_eq!(
        logs.lines_with("WARN", "connected to"),
        1,
        "the first connection only"
    );
    assert_eq!(logs.lines_with("WARN", "connection restored"), 1);
}

fn router_for_address(name: &str, address: &str) -> rosguard::config::RouterConfig {
    rosguard::config::RouterConfig {
        name: name.into(),
        address: address.into(),
        username: "admin".into(),
        password: routeros_client::Secret::new(String::new()),
        tls: None,
        tls_server_name: None,
        connect_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_secs(30),
        max_reply_rows: routeros_client::ClientConfig::DEFAULT_MAX_REPLY_ROWS,
        max_reply_bytes: routeros_client::ClientConfig::DEFAULT_MAX_REPLY_BYTES,
        settings: Settings::default(),
    }
}

// ---- /health and the scraped series ----------------------------------------------------

#[tokio::test]
async fn health_goes_stale_three_loop_delays_plus_30s_after_the_last_cycle() {
    let sim = sim().await;
    let env = memory_env();
    let mut events = env.events.subscribe();
    let mut rig = Rig::with_env(router_for(&sim, "core"), env).await;
    rig.cycle().await;
    let cfg = config(
        DaemonSettings {
            loop_delay: Duration::from_secs(10),
            ..DaemonSettings::default()
        },
        vec![router_for(&sim, "core")],
    );
    let spec = HealthSpec::for_config(&cfg);
    assert_eq!(spec.max_age, Duration::from_secs(60));
    // From here on the clock only moves when told.
    tokio::time::pause();
    let metrics = Metrics::default();
    while let Ok(e) = events.try_recv() {
        metrics.apply(&e);
    }
    let routers = spec.routers.clone();
    assert!(metrics.stale_routers(&routers, spec.max_age).is_empty());
    tokio::time::advance(Duration::from_secs(60)).await;
    assert!(
        metrics.stale_routers(&routers, spec.max_age).is_empty(),
        "exactly three loop delays plus 30 s is still fresh"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(metrics.stale_routers(&routers, spec.max_age), ["core"]);
}

#[tokio::test]
async fn the_scraped_series_carry_what_the_routers_went_through() {
    // "up" hits its list-size cap; "down" refuses the connection.
    let up = sim().await;
    up.add_list_entry(Family::V4, "tls_block", "198.18.7.9", None, Some("by hand"));
    up.add_connection(frozen_tls("192.168.88.50:1000", "203.0.113.45:443"));
    let mut up_router = router_for(&up, "up");
    up_router.settings.blocking.max_list_size = 1;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let down = router_for_address("down", &closed.to_string());
    let mut d = Running::start(config(fast(), vec![up_router, down]), memory_env());
    let metrics = Metrics::default();
    let (mut up_cycle, mut down_label) = (false, None);
    d.wait_for("a cycle of up and a failure of down", |e| {
        metrics.apply(e);
        match e {
            Event::Cycle(r) if r.router == "up" => up_cycle = true,
            Event::Link {
                router,
                link: Link::Down { label, .. },
            } if router == "down" => down_label = Some(label.clone()),
            _ => {}
        }
        (up_cycle && down_label.is_some()).then_some(())
    })
    .await;
    d.stop().await;
    let label = down_label.unwrap();
    let s = samples(&metrics.render());
    let value = |series: &str| s.iter().find(|(k, _)| k == series).map(|(_, v)| *v);
    assert_eq!(value("rosguard_connected{router=\"up\"}"), Some(1.0));
    assert_eq!(value("rosguard_connected{router=\"down\"}"), Some(0.0));
    assert_eq!(
        value(&format!(
            "rosguard_errors_total{{router=\"down\",kind=\"{label}\"}}"
        )),
        Some(1.0),
        "{s:?}"
    );
    assert_eq!(
        value("rosguard_caps_hit_total{router=\"up\",kind=\"max_list_size\"}"),
        Some(1.0),
        "{s:?}"
    );
    assert_eq!(value("rosguard_list_size{router=\"up\"}"), Some(1.0));
    assert_eq!(value("rosguard_blocked_total{router=\"up\"}"), Some(0.0));
    assert!(
        !s.iter()
            .any(|(k, _)| k.starts_with("rosguard_errors_total{router=\"up\"")),
        "up had no errors: {s:?}"
    );
    assert_eq!(Cap::MaxListSize.as_str(), "max_list_size");
}

// ---- the binary: environment, --router, logs, stats, SIGINT, reload ------------------

fn router_toml(name: &str, sim: &SimHandle) -> String {
    format!(
        "[[router]]\nname = \"{name}\"\naddress = \"{}\"\nusername = \"admin\"\npassword_env = \"{PASSWORD_VAR}\"\n",
        sim.local_addr()
    )
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn db(dir: &Path) -> bool {
    dir.join("rosguard.db").exists()
}

#[tokio::test]
async fn the_environment_names_the_config_and_the_state_directory() {
    let sim = sim().await;
    sim.add_connection(
        SimConnection::udp(sa("192.168.88.50:5000"), sa("203.0.113.45:443")).packets(30, 0),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = |p: &str| dir.path().join(p);
    let cfg = path("rosguard.toml");
    write(&cfg, &router_toml("core", &sim));

    // ROSGUARD_CONFIG instead of -c, ROSGUARD_STATE instead of --state.
    let mut c = bare(&["once"]);
    c.env("ROSGUARD_CONFIG", &cfg)
        .env("ROSGUARD_STATE", path("s1"))
        .current_dir(dir.path());
    let (ok, _, err) = output(c).await;
    assert!(ok, "{err}");
    assert!(db(&path("s1")));
    assert_eq!(list_addresses(&sim, "tls_block"), ["203.0.113.45"]);

    // Neither: systemd's $STATE_DIRECTORY (the first of several).
    let mut c = bare(&["once", "-c"]);
    c.arg(&cfg).env(
        "STATE_DIRECTORY",
        format!("{}:{}", path("s2").display(), path("s2b").display()),
    );
    let (ok, _, err) = output(c).await;
    assert!(ok, "{err}");
    assert!(db(&path("s2")) && !path("s2b").exists());

    // daemon.state_dir beats $STATE_DIRECTORY; ROSGUARD_STATE beats daemon.state_dir.
    let with_dir = path("with_dir.toml");
    write(
        &with_dir,
        &format!(
            "[daemon]\nstate_dir = \"{}\"\n{}",
            path("s3").display(),
            router_toml("core", &sim)
        ),
    );
    let mut c = bare(&["once", "-c"]);
    c.arg(&with_dir).env("STATE_DIRECTORY", path("s4"));
    let (ok, _, err) = output(c).await;
    assert!(ok, "{err}");
    assert!(db(&path("s3")) && !path("s4").exists());
    let mut c = bare(&["once", "-c"]);
    c.arg(&with_dir).env("ROSGUARD_STATE", path("s5"));
    let (ok, _, err) = output(c).await;
    assert!(ok, "{err}");
    assert!(db(&path("s5")));

    // Without any of them the default config path is named in the error.
    let mut c = bare(&["once", "--state"]);
    c.arg(path("s6"));
    let (ok, _, err) = output(c).await;
    assert!(!ok);
    assert!(
        err.contains("/etc/rosguard/rosguard.toml") && err.contains("ROSGUARD_CONFIG"),
        "{err}"
    );
}

#[tokio::test]
async fn router_picks_one_router_and_an_unknown_name_is_refused() {
    let a = sim().await;
    let b = sim().await;
    a.add_connection(frozen_tls("192.168.88.50:1000", "203.0.113.1:443"));
    b.add_connection(frozen_tls("192.168.88.50:1000", "203.0.113.2:443"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rosguard.toml");
    write(
        &cfg,
        &format!("{}{}", router_toml("a", &a), router_toml("b", &b)),
    );
    let state = dir.path().join("state");
    let mut c = bare(&["once", "--router", "b", "-c"]);
    c.arg(&cfg).arg("--state").arg(&state);
    let (ok, _, err) = output(c).await;
    assert!(ok, "{err}");
    assert_eq!(list_addresses(&b, "tls_block"), ["203.0.113.2"]);
    assert!(
        list_addresses(&a, "tls_block").is_empty(),
        "a was not polled"
    );
    assert_eq!(table(&a).await.len(), 1);

    let mut c = bare(&["once", "--router", "nope", "-c"]);
    c.arg(&cfg).arg("--state").arg(&state);
    let (ok, _, err) = output(c).await;
    assert!(!ok);
    assert!(err.contains("nope"), "{err}");
    assert!(list_addresses(&a, "tls_block").is_empty());
}

#[tokio::test]
async fn json_logs_are_json_on_every_line_and_rust_log_overrides_the_level() {
    let sim = sim().await;
    sim.add_connection(frozen_tls("192.168.88.50:1000", "203.0.113.45:443"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rosguard.toml");
    let state = dir.path().join("state");
    // At "error" an add (info) is not logged...
    write(
        &cfg,
        &format!(
            "[daemon]\nlog_level = \"error\"\n{}",
            router_toml("core", &sim)
        ),
    );
    let mut c = bare(&["once", "--dry-run", "--log-format", "json", "-c"]);
    c.arg(&cfg).arg("--state").arg(&state);
    let (ok, _, err) = output(c).await;
    assert!(ok, "{err}");
    assert!(!err.contains("DRY RUN"), "{err}");
    // ... unless RUST_LOG says otherwise.
    let mut c = bare(&["once", "--log-format", "json", "-c"]);
    c.arg(&cfg)
        .arg("--state")
        .arg(&state)
        .env("RUST_LOG", "info");
    let (ok, _, err) = output(c).await;
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let added = lines
        .iter()
        .find(|v| v.to_string().contains("Added 203.0.113.45"))
        .unwrap_or_else(|| panic!("no add line at RUST_LOG=info: {err}"));
    assert_eq!(added["level"], "INFO", "{added}");
    assert_eq!(list_addresses(&sim, "tls_block"), ["203.0.113.45"]);

    // A fatal error is one JSON line too.
    write(&cfg, "[daemon]\nnonsense = 1\n");
    let mut c = bare(&["once", "--log-format", "json", "-c"]);
    c.arg(&cfg).arg("--state").arg(&state);
    let (ok, _, err) = output(c).await;
    assert!(!ok);
    let mut fatal = 0;
    for l in err.lines() {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        if v.to_string().contains("nonsense") {
            fatal += 1;
        }
    }
    assert_eq!(fatal, 1, "{err}");
}

#[tokio::test]
async fn stats_shows_the_router_and_the_counters_of_the_store() {
    let sim = sim().await;
    sim.add_connection(
        SimConnection::udp(sa("192.168.88.50:5000"), sa("203.0.113.45:443")).packets(30, 0),
    );
    sim.add_list_entry(Family::V4, "tls_block", "198.18.7.9", None, Some("by hand"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rosguard.toml");
    let state = dir.path().join("state");
    write(&cfg, &router_toml("core", &sim));
    let mut c = bare(&["once", "-c"]);
    c.arg(&cfg).arg("--state").arg(&state);
    assert!(output(c).await.0);
    let mut c = bare(&["stats", "--json", "-c"]);
    c.arg(&cfg).arg("--state").arg(&state);
    let (ok, out, err) = output(c).await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let r = &v[0];
    assert_eq!(r["router"], "core");
    assert_eq!(r["connections_v4"], 1, "{r}");
    assert_eq!(r["block_entries"], 2, "{r}");
    assert_eq!(r["block_entries_rosguard"], 1, "{r}");
    assert_eq!(r["history"]["cycles"], 1, "{r}");
    assert_eq!(r["history"]["blocked"], 1, "{r}");
    assert_eq!(r["history"]["flagged"], 1, "{r}");
    let mut c = bare(&["stats", "-c"]);
    c.arg(&cfg).arg("--state").arg(&state);
    let (ok, out, _) = output(c).await;
    assert!(ok);
    assert!(
        out.contains("tls_block: 2 entries (1 by rosguard)"),
        "{out}"
    );
}

/// Reads lines until one contains `needle`.
async fn until<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    needle: &str,
) -> String {
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains(needle) {
                return line;
            }
        }
        panic!("stderr ended before {needle:?}");
    })
    .await;
    found.unwrap_or_else(|_| panic!("timed out waiting for {needle:?}"))
}

fn free_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn a_reload_says_what_waits_for_a_restart_and_sigint_stops() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rosguard.toml");
    let (first, second) = (free_port(), free_port());
    let text = |listen: std::net::SocketAddr, list: &str, candidates: u32, level: &str| {
        format!(
            "[daemon]\nlog_level = \"{level}\"\nloop_delay = \"200ms\"\nmetrics_listen = \"{listen}\"\nmax_candidates = {candidates}\n[blocking]\naddress_list = \"{list}\"\n{}",
            router_toml("core", &sim)
        )
    };
    write(&cfg, &text(first, "list_a", 10_000, "info"));
    let mut c = bare(&["run", "-c"]);
    c.arg(&cfg)
        .arg("--state")
        .arg(dir.path().join("state"))
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    let mut child = c.spawn().unwrap();
    let pid = Pid::from_raw(child.id().unwrap() as i32);
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    until(&mut lines, "connected to").await;
    assert_eq!(get(first, "/metrics").await.0, "HTTP/1.1 200 OK");

    write(&cfg, &text(second, "list_b", 20_000, "debug"));
    kill(pid, Signal::SIGHUP).unwrap();
    let mut said = Vec::new();
    loop {
        let line = until(&mut lines, "").await;
        if line.contains("reloaded") {
            break;
        }
        said.push(line);
    }
    for key in ["metrics_listen", "max_candidates"] {
        assert!(
            said.iter().any(|l| l.contains(&format!(
                "daemon.{key} changed: it takes effect at the next restart"
            ))),
            "{key}: {said:?}"
        );
    }
    assert!(
        !said.iter().any(|l| l.contains("address_list")),
        "the list changes now: {said:?}"
    );
    // The new level and list are used at once (the second cycle logged at debug began
    // after the reload); the metrics stay where they were.
    until(&mut lines, "scanned").await;
    until(&mut lines, "scanned").await;
    sim.add_connection(frozen_tls("192.168.88.50:1001", "203.0.113.46:443"));
    until(&mut lines, "Added 203.0.113.46 to list_b").await;
    assert_eq!(get(first, "/metrics").await.0, "HTTP/1.1 200 OK");
    assert!(
        tokio::net::TcpStream::connect(second).await.is_err(),
        "nothing listens on the new address before a restart"
    );

    kill(pid, Signal::SIGINT).unwrap();
    until(&mut lines, "stopped").await;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// Issue "safe to leave running", item 5: restores after a reboot are logged at warning.
#[tokio::test]
async fn a_restore_after_a_reboot_is_logged_at_warning() {
    let (logs, _guard) = Captured::install();
    let sim = sim().await;
    let env = memory_env();
    let mut rig = Rig::with_env(router_for(&sim, "core"), env.clone()).await;
    sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    assert_eq!(rig.cycle().await.new_blocks().count(), 1);
    rig.backend.close().await;
    sim.reboot();
    let mut rig = Rig::with_env(router_for(&sim, "core"), env).await;
    let r = rig.cycle().await;
    assert!(
        r.blocks
            .iter()
            .any(|b| b.kind == rosguard_core::decide::AddKind::Restored
                && b.result == rosguard_core::outcome::AddResult::Added),
        "{r:#?}"
    );
    assert_eq!(logs.lines_with("WARN", "Restored 203.0.113.45"), 1);
}

/// Issue "safe to leave running", item 12: debug shows every decision, rows skipped for their
/// port or protocol aggregated per cycle, "scanned N of the table's total" when the router
/// filtered, and detection off says so instead of "nothing suspicious".
#[tokio::test]
async fn debug_shows_every_decision_and_detection_off_says_so() {
    let (logs, _guard) = Captured::install();
    let sim = sim().await;
    sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    // Asymmetric, but to a port and with a protocol that are not monitored.
    sim.add_connection(
        SimConnection::tcp(sa("192.168.88.51:40000"), sa("203.0.113.9:22")).packets(9, 0),
    );
    sim.add_connection(
        SimConnection::tcp(sa("192.168.88.52:40000"), sa("203.0.113.10:25")).packets(9, 0),
    );
    // Healthy: filtered on the router, so the table is larger than what was scanned.
    for p in 0..3u16 {
        sim.add_connection(
            SimConnection::tcp(
                sa(&format!("192.168.88.53:{}", 41000 + p)),
                sa("203.0.113.11:443"),
            )
            .packets(400, 380)
            .state(routeros_sim::TcpState::TimeWait),
        );
    }
    let mut rig = Rig::new(router_for(&sim, "core")).await;
    let r = rig.cycle().await;
    assert_eq!(r.new_blocks().count(), 1);
    assert_eq!(
        logs.lines_with(
            "DEBUG",
            &format!(
                "scanned {} rows (of 6 in the tables; filtered on the router)",
                r.scanned
            )
        ),
        1,
        "{}",
        String::from_utf8_lossy(&logs.0.lock().unwrap())
    );
    assert!(r.scanned < 6);
    assert_eq!(
        logs.lines_with("DEBUG", "not flagged: 2 rows for their port"),
        1
    );
    assert_eq!(
        logs.lines_with("WARN", "Detected asymmetric tcp connection"),
        1
    );
    let mut off = router_for(&sim, "core");
    off.settings.detection.enabled = false;
    let mut rig = Rig::new(off).await;
    let r = rig.cycle().await;
    assert!(r.detection_off);
    assert_eq!(logs.lines_with("WARN", "detection is off"), 1);
    rig.cycle().await;
    assert_eq!(
        logs.lines_with("WARN", "detection is off"),
        1,
        "once per change"
    );
}

/// Issue "safe to leave running", item 4, end to end: an unblock made while the daemon runs is
/// honoured at its next cycle, even though the address is still flagged.
#[tokio::test]
async fn a_running_daemon_honours_an_unblock_while_the_address_is_still_flagged() {
    let sim = sim().await;
    let mut router = router_for(&sim, "core");
    // The flow stays in the table after the block, so the address keeps being flagged.
    router.settings.blocking.remove_tcp_conn = false;
    let env = memory_env();
    let cfg = config(fast(), vec![router]);
    sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    let mut d = Running::start(cfg.clone(), env.clone());
    d.wait_for("the block", |e| match e {
        Event::Cycle(r) if r.new_blocks().count() == 1 => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(list_addresses(&sim, "tls_block"), ["203.0.113.45"]);
    let code = rosguard::admin::unblock(&cfg, None, "203.0.113.45", None, None, &env.store)
        .await
        .unwrap();
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    // A new flow to it after the unblock: flagged again, and spared for the unblock.
    sim.add_connection(frozen_tls("192.168.88.50:54322", "203.0.113.45:443"));
    let spared = d
        .wait_for("a cycle that spares the unblocked address", |e| match e {
            Event::Cycle(r) => r
                .skipped
                .iter()
                .find(|s| s.address.to_string() == "203.0.113.45")
                .cloned(),
            _ => None,
        })
        .await;
    assert_eq!(spared.reason.kind(), "unblocked", "{spared:?}");
    let after = d.cycle_of("core").await;
    assert_eq!(after.new_blocks().count(), 0, "{after:#?}");
    assert!(list_addresses(&sim, "tls_block").is_empty());
    d.stop().await;
}

/// Issue "safe to leave running", item 16: without -c and ROSGUARD_CONFIG the config is
/// /etc/rosguard/rosguard.toml (read if it is there, named in the error if not).
#[tokio::test]
async fn the_config_defaults_to_etc_rosguard() {
    let out = Command::new(env!("CARGO_BIN_EXE_rosguard"))
        .arg("check-config")
        .env_remove("ROSGUARD_CONFIG")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("/etc/rosguard/rosguard.toml"), "{text}");
    if !Path::new("/etc/rosguard/rosguard.toml").exists() {
        assert!(!out.status.success());
        assert!(text.contains("-c FILE or ROSGUARD_CONFIG"), "{text}");
    }
}
