//! `[record]`: the daemon's rolling recording. What it records replays to the blocks the daemon
//! made; it rotates within its bound; it changes no decision; a recording that cannot be
//! written stops no block; reloads turn it on and off; `rosguard record` is the same tap.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rosguard::admin::replay_with;
use rosguard::config::RecordSettings;
use rosguard::cycle::{run_cycle, Limits, Notes};
use rosguard::record_files::FileSet;
use rosguard::record_tap::{RecordingTap, Source};
use rosguard::recording::Recording;
use rosguard::report::CycleReport;
use rosguard_core::backend::Backend;
use rosguard_core::decide::GuardState;
use rosguard_core::settings::Settings;
use rosguard_routeros::RouterOsBackend;
use routeros_sim::{SimConnection, SimHandle, TcpState};

use crate::support::*;

fn recording_to(dir: &Path, max_bytes: u64, keep: usize) -> RecordSettings {
    RecordSettings {
        dir: Some(dir.to_path_buf()),
        max_bytes,
        keep,
    }
}

/// Healthy traffic, an off-port flow and one to the router itself: read, never blocked.
fn background(sim: &SimHandle) {
    sim.add_connection(
        SimConnection::tcp(sa("192.168.88.51:40000"), sa("203.0.113.9:443")).packets(40, 38),
    );
    sim.add_connection(
        SimConnection::tcp(sa("192.168.88.52:40000"), sa("203.0.113.10:22")).packets(9, 0),
    );
    sim.add_connection(frozen_tls("203.0.113.77:50000", "192.168.88.1:443"));
    // Few replies: kept by the recording's wider filter, not flagged by the defaults.
    sim.add_connection(
        SimConnection::tcp(sa("192.168.88.53:40000"), sa("203.0.113.11:443"))
            .packets(30, 6)
            .state(TcpState::TimeWait),
    );
}

/// The traffic of a scenario, changed after cycle `i` of the daemon.
fn after_cycle(sim: &SimHandle, i: usize, flash: &mut String) {
    match i {
        // Seen in two polls in a row: blocked with min_observations = 2.
        0 => {
            sim.add_connection(frozen_tls("192.168.88.50:40000", "203.0.113.45:443"));
        }
        1 => {
            sim.add_connection(
                SimConnection::udp(sa("192.0.2.7:5000"), sa("192.168.88.60:443")).packets(12, 0),
            );
        }
        // Seen in one poll only: spared.
        2 => *flash = sim.add_connection(frozen_tls("192.168.88.54:40002", "203.0.113.46:443")),
        3 => sim.remove_connection(flash),
        _ => {}
    }
}

#[tokio::test]
async fn the_daemons_recording_replays_to_the_blocks_it_made_live() {
    let sim = sim().await;
    background(&sim);
    // Frozen, and allowlisted on the router: spared.
    sim.add_list_entry(
        routeros_sim::Family::V4,
        "allowlist",
        "203.0.113.99",
        None,
        None,
    );
    sim.add_connection(frozen_tls("192.168.88.57:40000", "203.0.113.99:443"));
    let rec = tempfile::tempdir().unwrap();
    let mut router = router_for(&sim, "core");
    router.settings.detection.min_observations = 2;
    let settings = router.settings.clone();
    let mut cfg = config(
        rosguard::config::DaemonSettings {
            loop_delay: Duration::from_millis(250),
            ..fast()
        },
        vec![router],
    );
    cfg.record = recording_to(rec.path(), 1 << 20, 2);
    let mut d = Running::start(cfg, memory_env());
    let mut live = Vec::new();
    let mut flash = String::new();
    let cycles = 8;
    for i in 0..cycles {
        let r = d.cycle_of("core").await;
        live.extend(live_blocks(&r));
        after_cycle(&sim, i, &mut flash);
    }
    d.stop().await;
    let blocked: Vec<&str> = live.iter().map(|b| b.0.as_str()).collect();
    // The outside source of a flow to the router, then the two offenders; not the flash.
    assert_eq!(
        blocked,
        ["203.0.113.77", "203.0.113.45", "192.0.2.7"],
        "{live:#?}"
    );

    let recording = Recording::open(&rec.path().join("core.rec")).unwrap();
    assert!(recording.cut.is_none(), "{:?}", recording.cut);
    assert_eq!(recording.header.router, "core");
    assert!(
        recording.polls.len() >= cycles,
        "{} polls for {cycles} cycles",
        recording.polls.len()
    );
    let out = replay_with(recording, "core", &settings).await.unwrap();
    assert!(out.blind_spots.is_empty(), "{:?}", out.blind_spots);
    assert_eq!(replayed_blocks(&out), live);
    // What the daemon spared, the replay spared for the same reason.
    assert!(
        out.spared.contains_key(&"203.0.113.99".parse().unwrap()),
        "{:?}",
        out.spared
    );
}

/// A cycle's report without what depends on how much was read or how long it took: with the
/// filter on the router, the recording's wider filter brings more rows over (`scanned`);
/// nothing else may differ.
fn decided(mut r: CycleReport) -> CycleReport {
    if r.filtered_on_router {
        r.scanned = 0;
    }
    r.duration_ms = 0;
    r
}

/// One router's cycles on fixed times, with or without the tap.
async fn cycles_of<B: Backend>(
    sim: &SimHandle,
    backend: &mut B,
    settings: &Settings,
    start: Duration,
) -> Vec<CycleReport> {
    let env = memory_env();
    let mut state = GuardState::new(settings);
    let mut notes = Notes::default();
    let mut stall = String::new();
    let mut reports = Vec::new();
    for i in 0..10u64 {
        match i {
            1 => {
                sim.add_connection(frozen_tls("192.168.88.50:40000", "203.0.113.45:443"));
                stall = sim.add_connection(
                    SimConnection::tcp(sa("192.168.88.55:40000"), sa("203.0.113.50:443"))
                        .packets(20, 10),
                );
            }
            // The stalled flow sends on, its replies stand still.
            3 => sim.set_connection_counters(&stall, 30, 10),
            4 => {
                for p in 0..25u16 {
                    sim.add_connection(
                        SimConnection::tcp(
                            sa("192.0.2.20:50000"),
                            sa(&format!("192.168.88.70:{}", 1000 + p)),
                        )
                        .packets(1, 0)
                        .state(TcpState::SynSent),
                    );
                }
            }
            6 => {
                sim.add_connection(
                    SimConnection::udp(sa("192.168.88.56:5000"), sa("203.0.113.60:8443"))
                        .packets(4, 1),
                );
            }
            _ => {}
        }
        let now = start + Duration::from_secs(2 * i);
        let r = run_cycle(
            backend,
            "core",
            settings,
            &mut state,
            &env,
            &mut notes,
            Vec::new(),
            now,
            &Limits::default(),
        )
        .await
        .expect("a cycle completes");
        reports.push(decided(r));
        sim.advance(Duration::from_secs(2));
    }
    reports
}

fn backend_for(sim: &SimHandle) -> RouterOsBackend {
    RouterOsBackend::new(
        router_for(sim, "core").client_config(),
        rosguard_routeros::DEFAULT_MAX_CANDIDATES,
    )
}

#[tokio::test]
async fn the_tap_changes_no_decision() {
    let rec = tempfile::tempdir().unwrap();
    let mut tight = Settings::default();
    tight.detection.min_orig_packets = 5;
    tight.detection.max_repl_packets = 1;
    tight.detection.monitored_ports = vec![443];
    tight.detection.stall.min_orig_growth = 8;
    let mut off = Settings::default();
    off.detection.enabled = false;
    let start = rosguard::state::unix_now();
    let mut blocked = Vec::new();
    for (name, settings) in [
        ("defaults", Settings::default()),
        ("tight", tight),
        ("detection off", off),
    ] {
        let plain_sim = sim().await;
        background(&plain_sim);
        let mut plain = backend_for(&plain_sim);
        plain.connect().await.unwrap();
        let without = cycles_of(&plain_sim, &mut plain, &settings, start).await;

        let tapped_sim = sim().await;
        background(&tapped_sim);
        let set = FileSet {
            current: rec.path().join(format!("{name}.rec")),
            max_bytes: 1 << 20,
            keep: 0,
        };
        let mut tap = RecordingTap::new(
            backend_for(&tapped_sim),
            "core",
            Source::Fixed(set.clone()),
            None,
        );
        tap.connect().await.unwrap();
        let with = cycles_of(&tapped_sim, &mut tap, &settings, start).await;
        let stats = tap.finish().await;

        assert_eq!(with, without, "{name}");
        blocked.push(
            without
                .iter()
                .flat_map(|r| r.new_blocks().map(|b| b.address.to_string()))
                .collect::<Vec<_>>(),
        );
        if name == "detection off" {
            // Unfiltered: the rows read are the whole table, with the tap too.
            assert!(with.iter().all(|r| r.scanned > 0 && !r.filtered_on_router));
        }
        assert_eq!(stats.error, None, "{name}");
        assert_eq!(
            Recording::open(&set.current).unwrap().polls.len() as u64,
            stats.polls,
            "{name}"
        );
    }
    // The scenario blocks, and the settings differ in what: the tap cut each its own way.
    let [defaults, tight, off] = blocked.as_slice() else {
        unreachable!()
    };
    assert!(
        defaults.contains(&"203.0.113.60".to_owned()),
        "{defaults:?}"
    );
    assert!(!tight.contains(&"203.0.113.60".to_owned()), "{tight:?}");
    assert!(
        tight.contains(&"192.0.2.20".to_owned()),
        "the scan: {tight:?}"
    );
    assert!(
        tight.contains(&"203.0.113.50".to_owned()),
        "the stall: {tight:?}"
    );
    assert!(off.is_empty(), "{off:?}");
}

#[tokio::test]
async fn the_recording_rotates_within_its_bound_and_every_file_replays_alone() {
    let sim = sim().await;
    background(&sim);
    // Rows the recording keeps and the defaults do not flag, so that polls have some size.
    for p in 0..40u16 {
        sim.add_connection(
            SimConnection::tcp(
                sa(&format!("192.168.88.80:{}", 41000 + p)),
                sa(&format!("203.0.113.{}:443", 100 + p)),
            )
            .packets(30, 5)
            .state(TcpState::TimeWait),
        );
    }
    let rec = tempfile::tempdir().unwrap();
    let (max_bytes, keep) = (1500u64, 2usize);
    let mut cfg = config(fast(), vec![router_for(&sim, "core")]);
    // Below what the config accepts, to rotate every few polls.
    cfg.record = recording_to(rec.path(), max_bytes, keep);
    let mut d = Running::start(cfg, memory_env());
    let cycles = 16;
    for _ in 0..cycles {
        d.cycle_of("core").await;
    }
    d.stop().await;
    let set = FileSet {
        current: rec.path().join("core.rec"),
        max_bytes,
        keep,
    };
    let mut names: Vec<String> = std::fs::read_dir(rec.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["core.1.rec", "core.2.rec", "core.rec"]);
    let mut total = 0;
    let mut polls = 0;
    let mut last_t = f64::MAX;
    for p in set.existing() {
        let size = std::fs::metadata(&p).unwrap().len();
        assert!(size <= max_bytes, "{}: {size} bytes", p.display());
        total += size;
        let r = Recording::open(&p).unwrap();
        assert!(r.cut.is_none(), "{}: {:?}", p.display(), r.cut);
        assert_eq!(r.header.router, "core");
        assert!(!r.polls.is_empty(), "{} holds a poll", p.display());
        // Newest first: each file ends before the newer one starts.
        assert!(r.polls.last().unwrap().t < last_t, "{}", p.display());
        last_t = r.polls[0].t;
        polls += r.polls.len();
        // Alone, with the router's context from its first poll: replays, blocks nothing.
        let kinds: Vec<_> = r.polls[0]
            .observation
            .protected
            .iter()
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(kinds.len(), 3, "{}: {kinds:?}", p.display());
        let out = replay_with(r, "core", &Settings::default()).await.unwrap();
        assert!(out.blocks.is_empty(), "{:?}", out.blocks);
    }
    assert!(total <= max_bytes * (keep as u64 + 1), "{total} bytes");
    assert!(
        polls < cycles,
        "the oldest files were deleted: {polls} polls kept of {cycles}"
    );
}

#[tokio::test]
async fn a_recording_that_cannot_be_written_stops_no_block_and_says_so() {
    let (logs, _guard) = Captured::install();
    let sim = sim().await;
    let tmp = tempfile::tempdir().unwrap();
    // A directory under a regular file cannot be made, even as root.
    let blocker = tmp.path().join("not-a-directory");
    std::fs::write(&blocker, b"x").unwrap();
    let mut cfg = config(fast(), vec![router_for(&sim, "core")]);
    cfg.record = recording_to(&blocker.join("sub"), 1 << 20, 1);
    let mut d = Running::start(cfg, memory_env());
    d.cycle_of("core").await;
    sim.add_connection(frozen_tls("192.168.88.50:40000", "203.0.113.45:443"));
    let mut blocked = Vec::new();
    for _ in 0..3 {
        blocked.extend(live_blocks(&*d.cycle_of("core").await));
    }
    d.stop().await;
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    assert_eq!(list_addresses(&sim, "tls_block"), ["203.0.113.45"]);
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert_eq!(
        logs.lines_with("WARN", "recording failed"),
        1,
        "logged once, not at every poll:\n{text}"
    );
    assert_eq!(
        logs.lines_with("WARN", "cannot create the recording directory"),
        1,
        "{text}"
    );
    assert_eq!(logs.lines_with("WARN", "not-a-directory/sub"), 1, "{text}");
}

#[tokio::test]
async fn a_reload_turns_the_recording_on_and_off_at_the_next_poll() {
    let sim = sim().await;
    let rec = tempfile::tempdir().unwrap();
    let off = config(fast(), vec![router_for(&sim, "core")]);
    let mut on = off.clone();
    on.record = recording_to(rec.path(), 1 << 20, 1);
    let mut d = Running::start(off.clone(), memory_env());
    d.cycle_of("core").await;
    assert!(!rec.path().join("core.rec").exists(), "off at first");
    d._config.send(Arc::new(on)).unwrap();
    // Of these three, the first may have read the router before the reload.
    for _ in 0..3 {
        d.cycle_of("core").await;
    }
    d._config.send(Arc::new(off)).unwrap();
    // Of these, only the first may have read the router before the reload.
    for _ in 0..4 {
        d.cycle_of("core").await;
    }
    d.stop().await;
    let recorded = Recording::open(&rec.path().join("core.rec"))
        .unwrap()
        .polls
        .len();
    assert!(
        (2..=4).contains(&recorded),
        "{recorded} polls recorded: on for 2 or 3 cycles, off for 3 or 4"
    );
}

#[tokio::test]
async fn rosguard_record_writes_a_replayable_file_and_fails_clearly() {
    let sim = sim().await;
    sim.add_connection(frozen_tls("192.168.88.50:40000", "203.0.113.45:443"));
    let s = crate::cli::setup(&sim, "[daemon]\nloop_delay = \"200ms\"");
    let out = s.dir.path().join("today.rec");
    let (ok, _, err) = crate::cli::run(
        &s,
        &["record", "--duration", "1s", "-o", out.to_str().unwrap()],
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        err.contains("recorded") && err.contains("today.rec"),
        "{err}"
    );
    let r = Recording::open(&out).unwrap();
    assert!(r.polls.len() >= 2, "{} polls", r.polls.len());
    assert!(
        r.polls.iter().all(|p| p.observation.protected.len() == 3),
        "every poll reads the router's context"
    );
    let replay = replay_with(r, "core", &Settings::default()).await.unwrap();
    let blocked: Vec<String> = replay.blocked().iter().map(|a| a.to_string()).collect();
    assert_eq!(blocked, ["203.0.113.45"]);

    let blocker = s.dir.path().join("a-file");
    std::fs::write(&blocker, b"x").unwrap();
    let bad = blocker.join("sub/today.rec");
    let (ok, _, err) = crate::cli::run(
        &s,
        &["record", "--duration", "1s", "-o", bad.to_str().unwrap()],
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("cannot create the recording directory") && err.contains("a-file/sub"),
        "{err}"
    );
}
