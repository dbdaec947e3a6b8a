//! `rosguard sim --replay FILE`: a recording served by the simulator as a live router. Driven
//! poll by poll on the simulator's manual clock, rosguard's real cycle over the RouterOS API
//! decides what the offline replay of the same recording decides; the served tables and
//! context are the recorded ones; the binary serves a recording to `rosguard once`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rosguard::admin::replay_with;
use rosguard::recording::{Poll, Recording};
use rosguard::sim_replay::{FeedEvent, ReplayFeed, ROW_TIMEOUT};
use rosguard_core::backend::Backend;
use rosguard_core::model::{Connection, ListAddress, ListEntry};
use rosguard_core::observation::ObservePlan;
use rosguard_core::settings::Settings;
use rosguard_core::Family;
use rosguard_routeros::RouterOsBackend;
use routeros_client::{Client, Secret};
use routeros_sim::{Feed, SimConfig, SimHandle};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cli::until;
use crate::support::*;

fn fixture_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn fixture(name: &str) -> Recording {
    Recording::open(&fixture_path(name)).expect("the fixture reads")
}

/// A simulator serving a recording on its manual clock, and the feed's reports.
struct Served {
    sim: SimHandle,
    polls: Vec<Poll>,
    offsets: Vec<Duration>,
    events: mpsc::UnboundedReceiver<FeedEvent>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    async fn start(rec: Recording) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let feed = ReplayFeed::new(rec, "fixture").unwrap().with_events(tx);
        let mut cfg = SimConfig::default();
        feed.configure(&mut cfg).unwrap();
        let sim = sim_with(cfg).await;
        let (polls, offsets) = (feed.polls().to_vec(), feed.offsets().to_vec());
        let stop = CancellationToken::new();
        let task = tokio::spawn(feed.start(sim.clone(), stop.clone()));
        Self {
            sim,
            polls,
            offsets,
            events,
            stop,
            task,
        }
    }

    /// The feed's next report, within a generous deadline (the report paces this, not time).
    async fn next_event(&mut self) -> FeedEvent {
        tokio::time::timeout(Duration::from_secs(30), self.events.recv())
            .await
            .expect("the feed reports within 30 s")
            .expect("the feed is running")
    }

    /// Moves the sim clock to poll `i`'s time and waits until the feed serves it.
    async fn advance_to_poll(&mut self, i: usize) {
        let (at, now) = (self.offsets[i], self.sim.now());
        if at > now {
            self.sim.advance(at - now);
        }
        loop {
            match self.next_event().await {
                FeedEvent::Served { poll, .. } if poll == i => return,
                FeedEvent::Served { poll, .. } if poll < i => {}
                other => panic!("waiting for poll {i}: {other:?}"),
            }
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the feed stops when cancelled")
            .unwrap();
        self.sim.shutdown().await;
    }
}

/// (seconds after the first poll, address, level, timeout, comment) of a block.
type Block = (u64, IpAddr, u32, String, String);

/// Every poll of `name` served on the sim clock and a real cycle run at each, against the
/// offline replay of the same recording with the same settings.
async fn served_and_offline(name: &str, settings: &Settings) -> (Vec<Block>, Vec<Block>) {
    let rec = fixture(name);
    let offline = replay_with(rec.clone(), "lab", settings).await.unwrap();
    let offline: Vec<Block> = offline
        .blocks
        .iter()
        .map(|b| {
            (
                b.at,
                b.address,
                b.level,
                b.timeout.clone(),
                b.comment.clone(),
            )
        })
        .collect();

    let mut served = Served::start(rec).await;
    let mut router = router_for(&served.sim, "lab");
    router.settings = settings.clone();
    let mut rig = Rig::new(router).await;
    let first = served.polls[0].time();
    let mut live = Vec::new();
    for i in 0..served.polls.len() {
        served.advance_to_poll(i).await;
        let now = served.polls[i].time();
        let report = rig.cycle_at(now).await;
        for b in report.new_blocks() {
            live.push((
                now.saturating_sub(first).as_secs(),
                b.address,
                b.level,
                routeros_proto::format_duration(b.timeout),
                b.comment.clone(),
            ));
        }
    }
    // The blocks are on the simulator's list, where a firewall rule would act on them.
    let listed = list_addresses(&served.sim, &settings.blocking.address_list);
    for (_, address, ..) in &live {
        assert!(
            listed.contains(&address.to_string()),
            "{address} not in {listed:?}"
        );
    }
    served.stop().await;
    (live, offline)
}

#[tokio::test]
async fn the_served_lab_recording_blocks_what_its_offline_replay_blocks() {
    let (live, offline) = served_and_offline("lab-default-traffic.rec", &Settings::default()).await;
    assert!(
        live.len() >= 10,
        "the lab's offenders are blocked: {live:?}"
    );
    assert_eq!(live, offline);
}

#[tokio::test]
async fn the_served_demo_recording_blocks_what_its_offline_replay_blocks_under_a_strict_config() {
    let settings = Settings::default();
    let (live, offline) = served_and_offline("demo-scenario.rec", &settings).await;
    assert!(!live.is_empty());
    assert_eq!(live, offline);
    let mut strict = Settings::default();
    strict.detection.min_observations = 3;
    strict.detection.min_flagged_connections = 2;
    let (strict_live, strict_offline) = served_and_offline("demo-scenario.rec", &strict).await;
    assert!(
        strict_live.len() < live.len(),
        "{strict_live:?} vs {live:?}"
    );
    assert_eq!(strict_live, strict_offline);
}

/// What identifies a row and what rosguard reads of it, without the `.id`.
fn row_key(c: &Connection) -> String {
    format!(
        "{:?} {} {} -> {} orig={:?} repl={:?} orig_bytes={:?} repl_bytes={:?} state={:?}",
        c.family,
        c.protocol,
        c.src,
        c.dst,
        c.orig_total(),
        c.repl_total(),
        c.orig_bytes,
        c.repl_bytes,
        c.tcp_state
    )
}

/// Both tables as another API client reads them, whole, with the `.id` of each row.
async fn served_rows(client: &Client) -> Vec<Connection> {
    let mut out = Vec::new();
    for f in [Family::V4, Family::V6] {
        let cmd = routeros_proto::Command::new(&f.path("firewall/connection/print"))
            .proplist(rosguard_routeros::CONNECTION_PROPLIST);
        for r in &client.call(cmd).await.expect("the table prints").rows {
            out.push(rosguard_routeros::connection(r, f).expect("a readable row"));
        }
    }
    out
}

fn sorted_keys(rows: &[Connection]) -> Vec<String> {
    let mut v: Vec<String> = rows.iter().map(row_key).collect();
    v.sort();
    v
}

async fn observer(sim: &SimHandle) -> Client {
    Client::connect(routeros_client::ClientConfig::new(
        "observer",
        sim.local_addr().to_string(),
        "admin",
        Secret::new(String::new()),
    ))
    .await
    .expect("an observer connects")
}

#[tokio::test]
async fn the_served_table_at_each_poll_is_that_polls_rows_with_ids_kept_per_flow() {
    let mut served = Served::start(fixture("lab-default-traffic.rec")).await;
    let client = observer(&served.sim).await;
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    let mut kept = 0;
    let last = served.polls.len() - 1;
    for k in [2, 3, 4, 7, last] {
        served.advance_to_poll(k).await;
        let rec = &served.polls[k].observation;
        let rows = served_rows(&client).await;
        assert_eq!(rows.len(), rec.candidates.len(), "poll {k}");
        for family in [Family::V4, Family::V6] {
            assert_eq!(
                rows.iter().filter(|c| c.family == family).count(),
                rec.candidates.iter().filter(|c| c.family == family).count(),
                "poll {k} {family:?}"
            );
        }
        // Every row with its counters, as recorded (the FastTrack counters folded in: the
        // simulator prints 0 where the recorded router printed none).
        assert_eq!(sorted_keys(&rows), sorted_keys(&rec.candidates), "poll {k}");
        let busiest = rec
            .candidates
            .iter()
            .max_by_key(|c| (c.orig_total(), c.src, c.dst))
            .unwrap();
        let served_busiest = rows
            .iter()
            .find(|c| {
                c.src == busiest.src && c.dst == busiest.dst && c.protocol == busiest.protocol
            })
            .expect("the busiest recorded row is served");
        assert_eq!(served_busiest.orig_packets, busiest.orig_packets);
        assert_eq!(served_busiest.repl_packets, busiest.repl_packets);
        assert_eq!(
            client.connection_tracking_total().await.unwrap(),
            rec.table_size,
            "total-entries is the recorded table size at poll {k}"
        );
        // A flow served before keeps its `.id`.
        let tuple = |c: &Connection| format!("{} {} {}", c.protocol, c.src, c.dst);
        let mut now_ids = BTreeMap::new();
        for c in &rows {
            if let Some(before) = ids.get(&tuple(c)) {
                assert_eq!(before, c.id.as_str(), "{} at poll {k}", tuple(c));
                kept += 1;
            }
            now_ids.insert(tuple(c), c.id.as_str().to_owned());
        }
        ids = now_ids;
    }
    assert!(kept > 100, "flows seen at several polls: {kept}");

    // After the last poll: the end is reported and the last state stays, served again before
    // its rows would time out.
    let last_rows = sorted_keys(&served_rows(&client).await);
    served.sim.advance(Duration::from_secs(3600));
    assert_eq!(
        served.next_event().await,
        FeedEvent::Ended {
            polls: served.polls.len()
        }
    );
    served.sim.advance(ROW_TIMEOUT * 3);
    match served.next_event().await {
        FeedEvent::Served { poll, .. } => assert_eq!(poll, last, "the last poll, served again"),
        other => panic!("{other:?}"),
    }
    assert_eq!(sorted_keys(&served_rows(&client).await), last_rows);
    client.close().await;
    served.stop().await;
}

#[tokio::test]
async fn the_router_context_served_is_what_the_first_poll_saw() {
    for name in ["lab-default-traffic.rec", "demo-scenario.rec"] {
        let served = Served::start(fixture(name)).await;
        let rec = served.polls[0].observation.clone();
        let router = router_for(&served.sim, "lab");
        let mut backend = RouterOsBackend::new(
            router.client_config(),
            rosguard_routeros::DEFAULT_MAX_CANDIDATES,
        );
        backend.connect().await.unwrap();
        let plan = ObservePlan {
            refresh_protected: true,
            ..ObservePlan::default()
        };
        let obs = backend.observe(&plan, &Settings::default()).await.unwrap();
        assert_eq!(obs.addresses, rec.addresses, "{name}");
        let sets = |o: &rosguard_core::observation::Observation| {
            o.protected
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().copied().collect::<BTreeSet<_>>()))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(sets(&obs), sets(&rec), "{name}");
        let entries = |l: &[ListEntry]| {
            l.iter()
                .map(|e| (e.list.clone(), e.address.to_string(), e.comment.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(entries(&obs.allowlist), entries(&rec.allowlist), "{name}");
        backend.close().await;
        served.stop().await;
    }
}

fn entry(list: &str, address: &str, timeout: Option<Duration>, comment: &str) -> ListEntry {
    ListEntry {
        id: "*99".into(),
        list: list.into(),
        address: address.parse::<ListAddress>().unwrap(),
        timeout,
        dynamic: timeout.is_some(),
        disabled: false,
        comment: Some(comment.into()),
    }
}

#[tokio::test]
async fn the_block_list_is_seeded_once_and_the_allowlist_follows_every_poll() {
    let mut rec = fixture("demo-scenario.rec");
    rec.polls[0].observation.block_list = vec![entry(
        "rosguard_block",
        "203.0.113.99",
        Some(Duration::from_secs(3600)),
        "rosguard: earlier",
    )];
    let mut disabled = entry("allowlist", "2001:db8::53", None, "off");
    disabled.disabled = true;
    rec.polls[1].observation.allowlist = vec![
        entry("allowlist", "9.9.9.9", None, "Quad9"),
        disabled.clone(),
    ];
    // Later polls' block lists are the client's business, not the recording's.
    rec.polls[1].observation.block_list.clear();
    let mut served = Served::start(rec).await;
    let sim = served.sim.clone();
    let block = sim.address_list(Family::V4, "rosguard_block");
    assert_eq!(block.len(), 1, "{block:?}");
    assert_eq!(block[0].address, "203.0.113.99");
    assert_eq!(block[0].timeout_remaining, Some(Duration::from_secs(3600)));
    assert_eq!(list_addresses(&sim, "allowlist"), ["1.1.1.1"]);

    served.advance_to_poll(1).await;
    assert_eq!(
        list_addresses(&sim, "allowlist"),
        ["2001:db8::53", "9.9.9.9"]
    );
    assert!(sim.address_list(Family::V6, "allowlist")[0].disabled);
    let block = sim.address_list(Family::V4, "rosguard_block");
    assert_eq!(block.len(), 1, "the seeded block stays: {block:?}");
    assert!(block[0].timeout_remaining < Some(Duration::from_secs(3600)));

    served.advance_to_poll(2).await;
    assert_eq!(list_addresses(&sim, "allowlist"), ["1.1.1.1"]);
    served.stop().await;
}

#[tokio::test]
async fn sim_replay_refuses_a_missing_file_by_name_and_help_names_the_flag() {
    let (ok, _, err) = output(bare(&["sim", "--replay", "missing.rec"])).await;
    assert!(!ok);
    assert!(
        err.contains("cannot open missing.rec"),
        "the file is named: {err}"
    );
    let (ok, out, _) = output(bare(&["sim", "--help"])).await;
    assert!(ok);
    assert!(out.contains("--replay <FILE>"), "{out}");
    let (ok, _, err) = output(bare(&["sim", "--replay", "x.rec", "--connections", "10"])).await;
    assert!(!ok);
    assert!(err.contains("cannot be used with"), "{err}");
}

#[tokio::test]
async fn rosguard_once_reads_the_recording_the_sim_binary_serves() {
    let path = fixture_path("demo-scenario.rec");
    // kill_on_drop: a failing assertion must not leave a simulator running.
    let mut child = bare(&[
        "sim",
        "--listen",
        "127.0.0.1:0",
        "--replay",
        path.to_str().unwrap(),
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .kill_on_drop(true)
    .spawn()
    .unwrap();
    let pid = Pid::from_raw(child.id().unwrap() as i32);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = until(&mut lines, "replaying").await;
    assert!(
        line.contains("demo-scenario.rec (router lab, 9 polls"),
        "{line}"
    );
    let addr = line
        .split(" on ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .expect("the line says where it listens");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rosguard.toml");
    std::fs::write(
        &config,
        format!(
            "[[router]]\nname = \"lab\"\naddress = \"{addr}\"\nusername = \"admin\"\npassword_env = \"{PASSWORD_VAR}\"\n"
        ),
    )
    .unwrap();
    let mut once = bare(&["once", "--dry-run", "--json"]);
    once.arg("-c")
        .arg(&config)
        .arg("--state")
        .arg(dir.path().join("state"));
    let (ok, out, err) = output(once).await;
    assert!(ok, "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    // The table size the router had at one of the polls, not the count of the rows served.
    let sizes: Vec<u64> = fixture("demo-scenario.rec")
        .polls
        .iter()
        .filter_map(|p| p.observation.table_size)
        .collect();
    let size = report[0]["report"]["table_size"].as_u64();
    assert!(
        size.is_some_and(|n| sizes.contains(&n)),
        "{size:?} not in {sizes:?}: {report}"
    );
    assert!(
        report[0]["report"]["scanned"].as_u64() > Some(0),
        "{report}"
    );

    kill(pid, Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("SIGTERM stops the simulator and its feed")
        .unwrap();
    assert!(status.success());
}
