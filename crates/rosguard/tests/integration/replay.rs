//! Record and replay: a recording of the polls the daemon saw, replayed through the same cycle
//! with the same settings, makes the same decisions.

use std::time::Duration;

use rosguard::admin::replay_with;
use rosguard::recording::{Header, Poll, Prefilter, Recording, Writer};
use rosguard_core::backend::Backend;
use rosguard_core::observation::ObservePlan;
use rosguard_core::settings::Settings;
use rosguard_routeros::RouterOsBackend;
use routeros_sim::{SimConnection, SimHandle};

use crate::support::*;

/// Records polls of a simulator the way `rosguard record` does.
struct Recorder {
    backend: RouterOsBackend,
    reading: Settings,
    writer: Writer<Vec<u8>>,
}

impl Recorder {
    async fn new(sim: &SimHandle, settings: &Settings) -> Self {
        let router = router_for(sim, "recorder");
        let mut backend = RouterOsBackend::new(
            router.client_config(),
            rosguard_routeros::DEFAULT_MAX_CANDIDATES,
        );
        backend.connect().await.expect("the recorder connects");
        let prefilter = Prefilter::for_settings(settings);
        let header = Header::new("core", prefilter.clone(), 0.0);
        Self {
            backend,
            reading: prefilter.reading_settings(settings),
            writer: Writer::new(Vec::new(), &header).unwrap(),
        }
    }

    async fn poll(&mut self, now: Duration) {
        let plan = ObservePlan {
            refresh_protected: true,
            ..ObservePlan::default()
        };
        let observation = self
            .backend
            .observe(&plan, &self.reading)
            .await
            .expect("the recorder reads");
        self.writer
            .poll(&Poll {
                t: now.as_secs_f64(),
                observation,
            })
            .unwrap();
    }

    fn recording(self) -> Recording {
        let bytes = self.writer.into_inner();
        Recording::read(&bytes[..]).expect("the recording reads back")
    }
}

type Blocks = Vec<Block>;

#[tokio::test]
async fn a_live_cycle_and_the_replay_of_its_poll_decide_the_same() {
    let sim = sim().await;
    sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    sim.add_connection(
        SimConnection::udp(sa("198.51.100.7:5000"), sa("192.168.88.60:443")).packets(12, 0),
    );
    // Healthy, off-port, and a router-local destination: spared or not looked at.
    sim.add_connection(
        SimConnection::tcp(sa("192.168.88.51:40000"), sa("203.0.113.9:443")).packets(40, 38),
    );
    sim.add_connection(
        SimConnection::tcp(sa("192.168.88.52:40000"), sa("203.0.113.10:22")).packets(9, 0),
    );
    sim.add_connection(frozen_tls("203.0.113.77:50000", "192.168.88.1:443"));
    let router = router_for(&sim, "core");
    let mut rec = Recorder::new(&sim, &router.settings).await;
    let now = rosguard::state::unix_now();
    rec.poll(now).await;
    let mut rig = Rig::new(router.clone()).await;
    let live = live_blocks(&rig.cycle_at(now).await);
    assert_eq!(live.len(), 2, "{live:?}");
    let replayed = replay_with(rec.recording(), "core", &router.settings)
        .await
        .unwrap();
    let replayed: Blocks = replayed.blocks.iter().map(replayed_block).collect();
    assert_eq!(replayed, live);
}

#[tokio::test]
async fn a_recorded_scenario_replays_to_the_blocks_the_daemon_made_with_streaks_and_escalation() {
    let sim = sim().await;
    let mut router = router_for(&sim, "core");
    router.settings.detection.min_observations = 2;
    router.settings.blocking.block_timeout = Duration::from_secs(10);
    router.settings.blocking.escalation_factor = 2.0;
    let mut rec = Recorder::new(&sim, &router.settings).await;
    let mut rig = Rig::new(router.clone()).await;
    let start = rosguard::state::unix_now();
    let mut live: Vec<(usize, Blocks)> = Vec::new();
    let mut flash = String::new();
    for i in 0..12usize {
        match i {
            // An offender, twice: the second time after its first block expired.
            0 => {
                sim.add_connection(frozen_tls("192.168.88.50:40000", "203.0.113.45:443"));
            }
            8 => {
                sim.add_connection(frozen_tls("192.168.88.50:40001", "203.0.113.45:443"));
            }
            // Seen in one poll only: min_observations = 2 spares it.
            3 => {
                flash = sim.add_connection(frozen_tls("192.168.88.51:40002", "203.0.113.46:443"));
            }
            4 => sim.remove_connection(&flash),
            _ => {}
        }
        let now = start + Duration::from_secs(2 * i as u64);
        rec.poll(now).await;
        let blocks = live_blocks(&rig.cycle_at(now).await);
        if !blocks.is_empty() {
            live.push((i, blocks));
        }
        sim.advance(Duration::from_secs(2));
    }
    let levels: Vec<u32> = live
        .iter()
        .flat_map(|(_, b)| b.iter().map(|b| b.2))
        .collect();
    assert_eq!(
        levels,
        [0, 1],
        "blocked twice, escalated the second time: {live:?}"
    );
    let replayed = replay_with(rec.recording(), "core", &router.settings)
        .await
        .unwrap();
    let replayed: Vec<(usize, Blocks)> = replayed
        .blocks
        .iter()
        .map(|b| ((b.at / 2) as usize, vec![replayed_block(b)]))
        .collect();
    assert_eq!(replayed, live);
}

#[tokio::test]
async fn a_looser_setting_than_the_recording_kept_is_not_answered_silently() {
    let sim = sim().await;
    sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    let settings = Settings::default();
    let mut rec = Recorder::new(&sim, &settings).await;
    rec.poll(rosguard::state::unix_now()).await;
    let mut loose = settings.clone();
    loose.detection.max_repl_packets = 50;
    let out = replay_with(rec.recording(), "core", &loose).await.unwrap();
    assert_eq!(out.blind_spots.len(), 1, "{:?}", out.blind_spots);
    assert!(out.blind_spots[0].contains("max_repl_packets = 50"));
}

fn fixture(name: &str) -> Recording {
    Recording::open(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .expect("the fixture reads")
}

fn blocked(o: &rosguard::admin::ReplayOutcome) -> Vec<String> {
    o.blocked().iter().map(|a| a.to_string()).collect()
}

/// The lab's traffic (lab/run score --record: real kernel counters of every class, no daemon)
/// replayed with the default settings: exactly the labelled offenders, no LAN host.
#[tokio::test]
async fn the_recorded_lab_traffic_replays_to_its_labels_with_default_settings() {
    let rec = fixture("lab-default-traffic.rec");
    assert!(rec.cut.is_none());
    assert!(rec.polls.len() >= 10, "{} polls", rec.polls.len());
    let out = replay_with(rec, "lab", &Settings::default()).await.unwrap();
    assert!(out.blind_spots.is_empty(), "{:?}", out.blind_spots);
    let mut want = vec![
        "192.0.2.130",      // scan-inbound
        "192.0.2.131",      // udp-spray-inbound
        "2001:db8:113::20", // tls-sni-frozen
        "2001:db8:113::31", // nkb-freeze
        "2001:db8:113::40", // quic-swallowed
        "2001:db8:3::2",    // scan-inbound
        "2001:db8:3::3",    // udp-spray-inbound
        "203.0.113.20",     // tls-sni-frozen
        "203.0.113.31",     // nkb-freeze
        "203.0.113.40",     // quic-swallowed
    ];
    want.sort();
    let mut got = blocked(&out);
    got.sort();
    assert_eq!(got, want);
}

/// A recording of the simulator's demo scenario: the defaults block the frozen flows and
/// spare the allowlisted and router-local addresses; a stricter config blocks a subset.
#[tokio::test]
async fn the_recorded_demo_scenario_replays_and_compares() {
    let rec = fixture("demo-scenario.rec");
    let out = replay_with(rec.clone(), "lab", &Settings::default())
        .await
        .unwrap();
    let got = blocked(&out);
    assert!(got.contains(&"203.0.113.45".to_owned()), "{got:?}");
    for spared in ["1.1.1.1", "192.168.88.1"] {
        assert!(!got.contains(&spared.to_owned()), "{got:?}");
        assert!(
            out.spared.contains_key(&spared.parse().unwrap()),
            "{spared} not reported spared: {:?}",
            out.spared
        );
    }
    let mut strict = Settings::default();
    strict.detection.min_observations = 3;
    strict.detection.min_flagged_connections = 2;
    let strict = replay_with(rec, "lab", &strict).await.unwrap();
    let s = blocked(&strict);
    assert!(s.len() < got.len(), "{s:?} vs {got:?}");
    assert!(s.iter().all(|a| got.contains(a)), "{s:?} vs {got:?}");
}

/// A file of format version 1 (each poll whole, as the first rosguard wrote it) reads and
/// replays to exactly what the same polls rewritten in version 2 (deltas) replay to.
#[tokio::test]
async fn a_version_1_recording_replays_as_its_version_2_rewrite() {
    let v1 = fixture("demo-scenario-v1.rec");
    let v2 = fixture("demo-scenario.rec");
    assert_eq!(
        (v1.header.version, v2.header.version),
        (1, rosguard::recording::VERSION)
    );
    assert_eq!(v1.polls, v2.polls);
    let (a, b) = (
        replay_with(v1, "lab", &Settings::default()).await.unwrap(),
        replay_with(v2, "lab", &Settings::default()).await.unwrap(),
    );
    assert_eq!(a.blocks, b.blocks);
    assert!(!a.blocks.is_empty());
}
