//! The daemon loop and the "beyond the script" behaviour: reconnects, restoring blocks after
//! a router reboot, escalation, caps and the panic brake under a flood, several routers with
//! one down, shared blocks.

use std::sync::Arc;
use std::time::Duration;

use rosguard::config::{Config, DaemonSettings};
use rosguard::cycle::{CycleEnv, CycleReport};
use rosguard::daemon::{self, DaemonEvent};
use routeros_sim::{Family, Faults, SimConnection};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// A running daemon and its event stream.
struct Running {
    events: mpsc::UnboundedReceiver<DaemonEvent>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _config: watch::Sender<Arc<Config>>,
}

impl Running {
    fn start(config: Config, env: CycleEnv) -> Self {
        let (tx, rx) = watch::channel(Arc::new(config));
        let (etx, events) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(daemon::run(rx, shutdown.clone(), Some(etx), env));
        Self {
            events,
            shutdown,
            task,
            _config: tx,
        }
    }

    /// The next event matching `f`, within a generous deadline (events, not sleeps, pace this).
    async fn wait_for<T>(&mut self, what: &str, mut f: impl FnMut(&DaemonEvent) -> Option<T>) -> T {
        let deadline = tokio::time::sleep(Duration::from_secs(30));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => panic!("timed out waiting for {what}"),
                ev = self.events.recv() => {
                    let ev = ev.unwrap_or_else(|| panic!("daemon ended while waiting for {what}"));
                    if let Some(t) = f(&ev) {
                        return t;
                    }
                }
            }
        }
    }

    async fn cycle_of(&mut self, router: &str) -> CycleReport {
        self.wait_for(&format!("a cycle of {router}"), |e| match e {
            DaemonEvent::Cycle(r) if r.router == router => Some(r.clone()),
            _ => None,
        })
        .await
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("daemon stops")
            .unwrap();
    }
}

fn fast() -> DaemonSettings {
    DaemonSettings {
        loop_delay: Duration::from_millis(100),
        ..DaemonSettings::default()
    }
}

#[tokio::test]
async fn reconnects_after_the_router_drops_the_connection() {
    let sim = sim().await;
    let mut d = Running::start(
        Config {
            daemon: fast(),
            routers: vec![router_for(&sim, "core")],
        },
        memory_env(),
    );
    d.wait_for("connected", |e| {
        matches!(e, DaemonEvent::Connected { .. }).then_some(())
    })
    .await;
    d.cycle_of("core").await;
    sim.drop_sessions();
    d.wait_for("disconnected", |e| {
        matches!(e, DaemonEvent::Disconnected { .. }).then_some(())
    })
    .await;
    d.wait_for("connected again", |e| {
        matches!(e, DaemonEvent::Connected { .. }).then_some(())
    })
    .await;
    sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    d.wait_for("a block after reconnecting", |e| match e {
        DaemonEvent::Cycle(r) if r.effective_blocks().count() == 1 => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(list_addresses(&sim, "tls_block"), ["203.0.113.45"]);
    d.stop().await;
}

#[tokio::test]
async fn blocks_are_restored_with_their_remaining_time_after_a_router_reboot() {
    let sim = sim().await;
    let mut d = Running::start(
        Config {
            daemon: fast(),
            routers: vec![router_for(&sim, "core")],
        },
        memory_env(),
    );
    sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    d.wait_for("the block", |e| match e {
        DaemonEvent::Cycle(r) if r.effective_blocks().count() == 1 => Some(()),
        _ => None,
    })
    .await;
    // The router reboots: timed entries and the connection table vanish.
    sim.reboot();
    assert!(list_addresses(&sim, "tls_block").is_empty());
    let restored = d
        .wait_for("the restore", |e| match e {
            DaemonEvent::Cycle(r) => r.blocks.iter().find(|b| b.outcome == "restored").cloned(),
            _ => None,
        })
        .await;
    assert_eq!(restored.address.to_string(), "203.0.113.45");
    let entry = &sim.address_list(Family::V4, "tls_block")[0];
    let left = entry.timeout_remaining.unwrap();
    assert!(
        left <= Duration::from_secs(86_400) && left >= Duration::from_secs(86_000),
        "{left:?}"
    );
    assert!(entry.comment.as_deref().unwrap().starts_with("rosguard:"));
    d.stop().await;
}

#[tokio::test]
async fn repeat_offenders_get_longer_timeouts() {
    let sim = sim().await;
    let mut router = router_for(&sim, "core");
    router.blocking.escalation_factor = 2.0;
    router.blocking.block_timeout = Duration::from_secs(3600);
    let mut rig = Rig::new(router).await;
    sim.add_connection(frozen_tls("192.168.88.50:1000", "203.0.113.45:443"));
    let first = rig.cycle().await;
    assert_eq!(
        (first.blocks[0].level, first.blocks[0].timeout.as_str()),
        (0, "1h")
    );
    // The entry goes (expired, or removed by hand) and the address misbehaves again.
    let id = sim.address_list(Family::V4, "tls_block")[0].id.clone();
    rig.client
        .address_list_remove(routeros_client::Family::V4, &id)
        .await
        .unwrap();
    sim.add_connection(frozen_tls("192.168.88.50:1001", "203.0.113.45:443"));
    let second = rig.cycle().await;
    assert_eq!(
        (second.blocks[0].level, second.blocks[0].timeout.as_str()),
        (1, "2h")
    );
    assert_eq!(
        sim.address_list(Family::V4, "tls_block")[0].timeout_remaining,
        Some(Duration::from_secs(7200))
    );
}

#[tokio::test]
async fn the_panic_brake_and_the_caps_hold_under_a_flood() {
    // Everything one-sided (the uplink died): the brake blocks nothing.
    let sim = sim().await;
    for i in 0..200u32 {
        sim.add_connection(frozen_tls(
            &format!("192.168.88.{}:{}", i % 200 + 2, 30000 + i),
            &format!("198.18.{}.{}:443", i / 250, i % 250 + 1),
        ));
    }
    let mut rig = Rig::new(router_for(&sim, "core")).await;
    let r = rig.cycle().await;
    assert_eq!(r.flagged, 200);
    assert!(
        r.caps_hit.contains(&"panic_brake".to_string()),
        "{:?}",
        r.caps_hit
    );
    assert!(list_addresses(&sim, "tls_block").is_empty());

    // A real flood among healthy traffic: the hourly cap and the list-size cap stop it.
    for i in 0..400u32 {
        sim.add_connection(
            SimConnection::tcp(
                sa(&format!("192.168.89.{}:{}", i % 250 + 1, 20000 + i)),
                sa("198.19.0.1:443"),
            )
            .packets(90, 88),
        );
    }
    let mut router = router_for(&sim, "core");
    router.blocking.max_blocks_per_hour = 30;
    let mut rig = Rig::new(router).await;
    let r = rig.cycle().await;
    assert!(!r.caps_hit.contains(&"panic_brake".to_string()));
    assert_eq!(r.effective_blocks().count(), 30, "max_blocks_per_hour");
    assert!(r.caps_hit.contains(&"max_blocks_per_hour".to_string()));
    assert_eq!(
        r.connections_removed, 30,
        "connections of capped targets stay"
    );
    let r = rig.cycle().await;
    assert_eq!(r.effective_blocks().count(), 0, "the hour is not over");
    assert_eq!(list_addresses(&sim, "tls_block").len(), 30);

    let mut router = router_for(&sim, "core");
    router.blocking.max_list_size = 40;
    let mut rig = Rig::new(router).await;
    let r = rig.cycle().await;
    assert_eq!(r.effective_blocks().count(), 10, "only room for 10 more");
    assert!(r.caps_hit.contains(&"max_list_size".to_string()));
    assert_eq!(list_addresses(&sim, "tls_block").len(), 40);
}

#[tokio::test]
async fn the_table_is_counted_only_when_the_panic_brake_could_hold_something_back() {
    // With the filter on the router only candidates come back, and the brake needs the whole
    // table's size: `total-entries` of the tracking settings, else count-only prints, which
    // walk the router's whole table again. A cycle whose findings are all blocked already
    // asks for neither.
    let sim = sim().await;
    for i in 0..30u32 {
        sim.add_connection(
            SimConnection::tcp(
                sa(&format!("192.168.88.{}:{}", i + 2, 40000 + i)),
                sa("198.18.0.1:443"),
            )
            .packets(40, 38),
        );
    }
    sim.add_connection(
        SimConnection::udp(sa("192.168.88.20:5000"), sa("198.18.1.1:443")).packets(30, 0),
    );
    let mut rig = Rig::new(router_for(&sim, "core")).await;
    let r = rig.cycle().await;
    assert_eq!(
        (r.scanned, r.flagged),
        (1, 1),
        "the filter ran on the router"
    );
    assert_eq!(r.table_size, 31, "a new block: the table was counted");
    assert_eq!(list_addresses(&sim, "tls_block"), ["198.18.1.1"]);

    let r = rig.cycle().await;
    assert_eq!(r.flagged, 1, "the spray goes on");
    assert_eq!(r.table_size, 1, "nothing new to block: no count");
    assert!(r.caps_hit.is_empty(), "{:?}", r.caps_hit);

    sim.add_connection(
        SimConnection::udp(sa("192.168.88.21:5001"), sa("198.18.1.2:443")).packets(30, 0),
    );
    let r = rig.cycle().await;
    assert_eq!(r.table_size, 32, "a new finding: counted again");
    assert_eq!(r.effective_blocks().count(), 1);

    // A router without `total-entries`: the tables are counted with count-only prints.
    sim.set_faults(Faults {
        hide_tracking_totals: true,
        ..Faults::default()
    });
    let before = sim.stats().commands;
    let r = rig.cycle().await;
    let steady = sim.stats().commands - before;
    sim.add_connection(
        SimConnection::udp(sa("192.168.88.22:5002"), sa("198.18.1.3:443")).packets(30, 0),
    );
    let before = sim.stats().commands;
    let r2 = rig.cycle().await;
    assert_eq!(r.table_size, 2, "two sprays, both blocked: not counted");
    assert_eq!(r2.table_size, 33, "counted");
    // The tracking read, two count-only prints and the add.
    assert_eq!(sim.stats().commands - before, steady + 4);
}

#[tokio::test]
async fn one_router_down_never_delays_the_others() {
    let up = sim().await;
    up.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    // A router that refuses connections: a listener that is closed again at once.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut down = router_for(&up, "down");
    down.address = dead.to_string();
    let mut d = Running::start(
        Config {
            daemon: fast(),
            routers: vec![down, router_for(&up, "up")],
        },
        memory_env(),
    );
    d.wait_for("the down router's failure", |e| match e {
        DaemonEvent::Disconnected { router, .. } if router == "down" => Some(()),
        _ => None,
    })
    .await;
    let r = d.cycle_of("up").await;
    assert_eq!(r.effective_blocks().count(), 1);
    // Several cycles of `up` while `down` keeps failing.
    for _ in 0..3 {
        d.cycle_of("up").await;
    }
    d.stop().await;
}

#[tokio::test]
async fn shared_blocks_reach_every_router_unless_protected_there() {
    let a = sim().await;
    let b = sim().await;
    let c = sim().await;
    // On router c the address is allowlisted: it must not be blocked there.
    c.add_list_entry(Family::V4, "allowlist", "203.0.113.45", None, None);
    a.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    let env = CycleEnv {
        share: Some(tokio::sync::broadcast::channel(64).0),
        ..memory_env()
    };
    let mut d = Running::start(
        Config {
            daemon: DaemonSettings {
                share_blocks: true,
                ..fast()
            },
            routers: vec![
                router_for(&a, "a"),
                router_for(&b, "b"),
                router_for(&c, "c"),
            ],
        },
        env,
    );
    d.wait_for("the shared block on b", |e| match e {
        DaemonEvent::Cycle(r) if r.router == "b" => {
            r.blocks.iter().any(|x| x.outcome == "shared").then_some(())
        }
        _ => None,
    })
    .await;
    // c has cycled since a's block too (cycles are ordered per router; wait for two).
    d.cycle_of("c").await;
    d.cycle_of("c").await;
    assert_eq!(list_addresses(&a, "tls_block"), ["203.0.113.45"]);
    assert_eq!(list_addresses(&b, "tls_block"), ["203.0.113.45"]);
    let comment = b.address_list(Family::V4, "tls_block")[0]
        .comment
        .clone()
        .unwrap();
    assert!(comment.contains("shared from a"), "{comment}");
    assert!(
        list_addresses(&c, "tls_block").is_empty(),
        "allowlisted on c"
    );
    d.stop().await;
}

#[tokio::test]
async fn min_observations_waits_for_consecutive_polls() {
    let sim = sim().await;
    sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    let mut router = router_for(&sim, "core");
    router.detection.min_observations = 3;
    let mut rig = Rig::new(router).await;
    assert_eq!(rig.cycle().await.effective_blocks().count(), 0);
    assert_eq!(rig.cycle().await.effective_blocks().count(), 0);
    assert_eq!(
        rig.cycle().await.effective_blocks().count(),
        1,
        "third poll in a row"
    );
}

#[tokio::test]
async fn observation_state_survives_a_restart() {
    let sim = sim().await;
    sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let store = rosguard_store::Store::open(&dir.path().join("rosguard.db")).unwrap();
        CycleEnv {
            store: Some(Arc::new(std::sync::Mutex::new(store))),
            ..CycleEnv::default()
        }
    };
    let mut router = router_for(&sim, "core");
    router.detection.min_observations = 3;
    {
        let mut rig = Rig::with_env(router.clone(), open()).await;
        assert_eq!(rig.cycle().await.effective_blocks().count(), 0);
        assert_eq!(rig.cycle().await.effective_blocks().count(), 0);
        rig.client.close().await;
    }
    // A new process: fresh state, the same store. The third poll in a row still counts.
    let mut rig = Rig::with_env(router, open()).await;
    assert_eq!(rig.cycle().await.effective_blocks().count(), 1);
}

#[tokio::test]
async fn a_capped_target_keeps_all_its_connections() {
    let sim = sim().await;
    sim.add_list_entry(
        Family::V4,
        "tls_block",
        "198.51.100.9",
        None,
        Some("by hand"),
    );
    for port in [1000, 1001, 1002] {
        sim.add_connection(frozen_tls(
            &format!("192.168.88.50:{port}"),
            "203.0.113.45:443",
        ));
    }
    let mut router = router_for(&sim, "core");
    router.blocking.max_list_size = 1;
    let mut rig = Rig::new(router).await;
    let r = rig.cycle().await;
    assert_eq!(r.effective_blocks().count(), 0);
    assert_eq!(r.caps_hit, ["max_list_size"]);
    assert_eq!(r.connections_removed, 0, "no block, so no removal either");
    assert_eq!(
        rig.cycle().await.flagged,
        3,
        "the connections are all still there"
    );
}

#[tokio::test]
async fn restores_obey_the_list_cap_and_the_panic_brake() {
    let sim = sim().await;
    for i in 1..=3 {
        sim.add_connection(frozen_tls(
            &format!("192.168.88.50:{}", 1000 + i),
            &format!("203.0.113.{i}:443"),
        ));
    }
    let env = memory_env();
    let mut rig = Rig::with_env(router_for(&sim, "core"), env.clone()).await;
    assert_eq!(rig.cycle().await.effective_blocks().count(), 3);
    sim.reboot();

    // After the reboot the uplink looks dead: everything is one-sided. Nothing is restored.
    for i in 0..40u32 {
        sim.add_connection(frozen_tls(
            &format!("192.168.88.60:{}", 2000 + i),
            &format!("198.18.0.{}:443", i + 1),
        ));
    }
    let mut rig = Rig::with_env(router_for(&sim, "core"), env.clone()).await;
    let r = rig.cycle().await;
    assert!(r.caps_hit.contains(&"panic_brake".to_string()));
    assert!(
        list_addresses(&sim, "tls_block").is_empty(),
        "the brake holds restores too"
    );

    // Healthy again, but the list may only hold two entries: two of the three come back.
    sim.reboot();
    let mut router = router_for(&sim, "core");
    router.blocking.max_list_size = 2;
    let mut rig = Rig::with_env(router, env).await;
    let r = rig.cycle().await;
    assert_eq!(
        r.blocks.iter().filter(|b| b.outcome == "restored").count(),
        2
    );
    assert_eq!(list_addresses(&sim, "tls_block").len(), 2);
}

#[tokio::test]
async fn a_reload_does_not_reset_the_hourly_cap() {
    let sim = sim().await;
    sim.add_connection(frozen_tls("192.168.88.50:1000", "203.0.113.1:443"));
    let mut router = router_for(&sim, "core");
    router.blocking.max_blocks_per_hour = 1;
    let mut rig = Rig::new(router.clone()).await;
    assert_eq!(rig.cycle().await.effective_blocks().count(), 1);
    // SIGHUP with an unrelated change.
    let mut reloaded = router.clone();
    reloaded.blocking.allow = vec!["10.0.0.0/8".parse().unwrap()];
    rig.state.reconfigure(&router, &reloaded);
    rig.router = reloaded;
    sim.add_connection(frozen_tls("192.168.88.50:1001", "203.0.113.2:443"));
    let r = rig.cycle().await;
    assert_eq!(r.effective_blocks().count(), 0);
    assert_eq!(r.caps_hit, ["max_blocks_per_hour"]);
}

#[tokio::test]
async fn dry_run_decides_each_address_once_like_the_real_list_would() {
    let sim = sim().await;
    sim.add_connection(
        SimConnection::udp(sa("192.168.88.50:1000"), sa("203.0.113.1:443")).packets(30, 0),
    );
    let mut router = router_for(&sim, "core");
    router.blocking.dry_run = true;
    let mut rig = Rig::new(router).await;
    assert_eq!(rig.cycle().await.effective_blocks().count(), 1);
    let second = rig.cycle().await;
    assert_eq!(second.flagged, 1, "still there: nothing was removed");
    assert_eq!(
        second.effective_blocks().count(),
        0,
        "already (virtually) blocked"
    );
    assert!(list_addresses(&sim, "tls_block").is_empty());
}
