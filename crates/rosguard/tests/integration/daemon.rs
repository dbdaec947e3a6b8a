//! The daemon loop and the "beyond the script" behaviour: reconnects, restoring blocks after
//! a router reboot, hand removals, escalation, caps and the panic brake under a flood, several
//! routers with one down, shared blocks.

use std::time::Duration;

use rosguard::config::DaemonSettings;
use rosguard::cycle::CycleEnv;
use rosguard::events::{Event, Link};
use rosguard::state::unix_now;
use rosguard_core::backend::Backend;
use rosguard_core::decide::{AddKind, Cap};
use rosguard_core::outcome::AddResult;
use routeros_sim::{Family, Faults, SimConfig, SimConnection};

use crate::support::*;

#[tokio::test]
async fn reconnects_after_the_router_drops_the_connection() {
    let sim = sim().await;
    let mut d = Running::start(config(fast(), vec![router_for(&sim, "core")]), memory_env());
    d.wait_for("connected", |e| {
        matches!(e, Event::Link { link: Link::Up, .. }).then_some(())
    })
    .await;
    d.cycle_of("core").await;
    sim.drop_sessions();
    d.wait_for("disconnected", |e| {
        matches!(
            e,
            Event::Link {
                link: Link::Down { .. },
                ..
            }
        )
        .then_some(())
    })
    .await;
    d.wait_for("connected again", |e| {
        matches!(e, Event::Link { link: Link::Up, .. }).then_some(())
    })
    .await;
    sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    d.wait_for("a block after reconnecting", |e| match e {
        Event::Cycle(r) if r.new_blocks().count() == 1 => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(list_addresses(&sim, "tls_block"), ["203.0.113.45"]);
    d.stop().await;
}

#[tokio::test]
async fn blocks_are_restored_with_their_remaining_time_after_a_router_reboot() {
    let sim = sim().await;
    let env = memory_env();
    // The block was made an hour ago.
    let mut rig = Rig::with_env(router_for(&sim, "core"), env.clone()).await;
    sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    let hour_ago = unix_now() - Duration::from_secs(3600);
    assert_eq!(rig.cycle_at(hour_ago).await.new_blocks().count(), 1);
    rig.backend.close().await;
    // The router reboots: timed entries and the connection table vanish.
    sim.reboot();
    assert!(list_addresses(&sim, "tls_block").is_empty());
    let mut d = Running::start(config(fast(), vec![router_for(&sim, "core")]), env);
    let restored = d
        .wait_for("the restore", |e| match e {
            Event::Cycle(r) => r
                .blocks
                .iter()
                .find(|b| b.kind == AddKind::Restored && b.result == AddResult::Added)
                .cloned(),
            _ => None,
        })
        .await;
    assert_eq!(restored.address.to_string(), "203.0.113.45");
    let entry = &sim.address_list(Family::V4, "tls_block")[0];
    let left = entry.timeout_remaining.unwrap();
    // The remainder of 1d after an hour (a second either way for the clock between the two).
    assert!(
        left >= Duration::from_secs(82_798) && left <= Duration::from_secs(82_801),
        "{left:?}"
    );
    assert!(entry.comment.as_deref().unwrap().starts_with("rosguard:"));
    d.stop().await;
}

#[tokio::test]
async fn a_block_removed_on_the_router_by_hand_is_not_restored() {
    let sim = sim().await;
    let mut router = router_for(&sim, "core");
    router.settings.cycle.reconcile_interval = Duration::from_secs(1);
    // The router has been up for a while when the block is made.
    sim.advance(Duration::from_secs(600));
    let env = memory_env();
    let mut rig = Rig::with_env(router, env.clone()).await;
    sim.add_connection(
        SimConnection::udp(sa("192.168.88.50:5000"), sa("203.0.113.45:443")).packets(30, 0),
    );
    let now = unix_now();
    assert_eq!(rig.cycle_at(now).await.new_blocks().count(), 1);
    // The operator removes it on the router, as the script's README says; no reboot.
    let id = sim.address_list(Family::V4, "tls_block")[0].id.clone();
    assert!(sim.remove_list_entry(Family::V4, &id));
    sim.remove_connection(&sim_connection_id(&sim).await);
    // The router's uptime goes on with the clock: no reboot.
    sim.advance(Duration::from_secs(5));
    let r = rig.cycle_at(now + Duration::from_secs(5)).await;
    assert_eq!(r.lifts.len(), 1, "{r:?}");
    assert!(r.blocks.is_empty());
    assert!(list_addresses(&sim, "tls_block").is_empty());
    sim.advance(Duration::from_secs(5));
    let r = rig.cycle_at(now + Duration::from_secs(10)).await;
    assert!(
        r.blocks.is_empty(),
        "still not restored at the next reconcile: {r:?}"
    );
    // The history says so.
    let store = env.store.lock().unwrap();
    let row = &store.blocks_for("203.0.113.45".parse().unwrap()).unwrap()[0];
    assert_eq!(row.lift_reason.as_deref(), Some("removed-on-router"));
}

/// The id of the simulator's only connection.
async fn sim_connection_id(sim: &routeros_sim::SimHandle) -> String {
    let client = routeros_client::Client::connect(routeros_client::ClientConfig::new(
        "observer",
        sim.local_addr().to_string(),
        "admin",
        routeros_client::Secret::new(String::new()),
    ))
    .await
    .unwrap();
    let rows = client
        .call(routeros_proto::Command::new("/ip/firewall/connection/print").proplist(&[".id"]))
        .await
        .unwrap()
        .rows;
    rows[0].get_str(".id").unwrap().to_owned()
}

#[tokio::test]
async fn the_reconcile_interval_restores_when_the_router_cannot_tell_a_reboot() {
    // The router will not say its uptime: a missing entry might have been wiped by a reboot,
    // so at the reconcile interval it is put back (fail closed), and not before.
    let sim = sim().await;
    sim.set_faults(Faults {
        permission_denied: routeros_sim::PathMatch::prefixes(["/system/resource/print"]),
        ..Faults::default()
    });
    let mut router = router_for(&sim, "core");
    router.settings.cycle.reconcile_interval = Duration::from_secs(60);
    let mut rig = Rig::new(router).await;
    sim.add_connection(
        SimConnection::udp(sa("192.168.88.50:5000"), sa("203.0.113.45:443")).packets(30, 0),
    );
    let now = unix_now();
    assert_eq!(rig.cycle_at(now).await.new_blocks().count(), 1);
    sim.remove_connection(&sim_connection_id(&sim).await);
    let id = sim.address_list(Family::V4, "tls_block")[0].id.clone();
    assert!(sim.remove_list_entry(Family::V4, &id));
    let r = rig.cycle_at(now + Duration::from_secs(10)).await;
    assert!(
        r.blocks.is_empty(),
        "before the reconcile interval nothing is checked: {r:?}"
    );
    let r = rig.cycle_at(now + Duration::from_secs(61)).await;
    assert_eq!(
        r.blocks
            .iter()
            .filter(|b| b.kind == AddKind::Restored)
            .count(),
        1,
        "{r:?}"
    );
    assert_eq!(list_addresses(&sim, "tls_block"), ["203.0.113.45"]);
}

#[tokio::test]
async fn repeat_offenders_get_longer_timeouts() {
    let sim = sim().await;
    let mut router = router_for(&sim, "core");
    router.settings.blocking.escalation_factor = 2.0;
    router.settings.blocking.block_timeout = Duration::from_secs(3600);
    let mut rig = Rig::new(router).await;
    sim.add_connection(frozen_tls("192.168.88.50:1000", "203.0.113.45:443"));
    let first = rig.cycle().await;
    assert_eq!(
        (first.blocks[0].level, first.blocks[0].timeout),
        (0, Duration::from_secs(3600))
    );
    // The entry expires and the address misbehaves again.
    sim.advance(Duration::from_secs(3601));
    sim.add_connection(frozen_tls("192.168.88.50:1001", "203.0.113.45:443"));
    let second = rig.cycle_at(unix_now() + Duration::from_secs(3601)).await;
    assert_eq!(
        (second.blocks[0].level, second.blocks[0].timeout),
        (1, Duration::from_secs(7200))
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
    assert!(r.caps_hit.contains(&Cap::PanicBrake), "{:?}", r.caps_hit);
    assert!(list_addresses(&sim, "tls_block").is_empty());
    assert_eq!(table(&sim).await.len(), 200, "nothing removed either");

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
    router.settings.blocking.max_blocks_per_hour = 30;
    let mut rig = Rig::new(router).await;
    let r = rig.cycle().await;
    assert!(!r.caps_hit.contains(&Cap::PanicBrake));
    assert_eq!(r.new_blocks().count(), 30, "max_blocks_per_hour");
    assert!(r.caps_hit.contains(&Cap::MaxBlocksPerHour));
    assert_eq!(
        r.connections_removed(),
        30,
        "connections of capped targets stay"
    );
    assert_eq!(table(&sim).await.len(), 400 + 170);
    let r = rig.cycle().await;
    assert_eq!(r.new_blocks().count(), 0, "the hour is not over");
    assert_eq!(list_addresses(&sim, "tls_block").len(), 30);

    let mut router = router_for(&sim, "core");
    router.settings.blocking.max_list_size = 40;
    let mut rig = Rig::new(router).await;
    let r = rig.cycle().await;
    assert_eq!(r.new_blocks().count(), 10, "only room for 10 more");
    assert!(r.caps_hit.contains(&Cap::MaxListSize));
    assert_eq!(list_addresses(&sim, "tls_block").len(), 40);
}

#[tokio::test]
async fn failed_adds_do_not_use_up_the_hourly_cap() {
    let sim = sim().await;
    for i in 1..=3 {
        sim.add_connection(
            SimConnection::udp(
                sa(&format!("192.168.88.50:{}", 5000 + i)),
                sa(&format!("203.0.113.{i}:443")),
            )
            .packets(30, 0),
        );
    }
    sim.set_faults(Faults {
        permission_denied: routeros_sim::PathMatch::prefixes(["/ip/firewall/address-list/add"]),
        ..Faults::default()
    });
    let mut router = router_for(&sim, "core");
    router.settings.blocking.max_blocks_per_hour = 3;
    let mut rig = Rig::new(router).await;
    let r = rig.cycle().await;
    assert_eq!(
        r.failed_adds(),
        (3, true),
        "every add refused for lack of permission"
    );
    assert!(list_addresses(&sim, "tls_block").is_empty());
    // The permission is fixed: all three go through within the same hour.
    sim.set_faults(Faults::default());
    let r = rig.cycle().await;
    assert_eq!(r.new_blocks().count(), 3, "{r:?}");
    assert!(r.caps_hit.is_empty());
}

#[tokio::test]
async fn one_router_that_never_answers_never_delays_the_others() {
    let up = sim().await;
    up.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    // A router that accepts TCP and then answers nothing, not even the login.
    let silent = sim_with(SimConfig::default()).await;
    silent.set_faults(Faults {
        reply_delay: Some(Duration::from_secs(3600)),
        ..Faults::default()
    });
    let mut down = router_for(&silent, "down");
    down.connect_timeout = Duration::from_secs(20);
    let mut d = Running::start(
        config(fast(), vec![down, router_for(&up, "up")]),
        memory_env(),
    );
    // Several cycles of `up` while `down` still waits for its login: nothing of "down" may
    // come first, or the routers ran one after the other.
    let mut cycles = 0;
    d.wait_for("four cycles of up", |e| match e {
        Event::Cycle(r) if r.router == "up" => {
            cycles += 1;
            (cycles == 4).then_some(())
        }
        Event::Link { router, .. } if router == "down" => {
            panic!("the silent router finished its login attempt first")
        }
        _ => None,
    })
    .await;
    assert_eq!(list_addresses(&up, "tls_block"), ["203.0.113.45"]);
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
    let mut d = Running::start(
        config(
            DaemonSettings {
                share_blocks: true,
                ..fast()
            },
            vec![
                router_for(&a, "a"),
                router_for(&b, "b"),
                router_for(&c, "c"),
            ],
        ),
        memory_env(),
    );
    d.wait_for("the shared block on b", |e| match e {
        Event::Cycle(r) if r.router == "b" => r
            .blocks
            .iter()
            .any(|x| matches!(x.kind, AddKind::Shared { .. }) && x.result == AddResult::Added)
            .then_some(()),
        _ => None,
    })
    .await;
    assert_eq!(list_addresses(&a, "tls_block"), ["203.0.113.45"]);
    assert_eq!(list_addresses(&b, "tls_block"), ["203.0.113.45"]);
    let comment = b.address_list(Family::V4, "tls_block")[0]
        .comment
        .clone()
        .unwrap();
    assert!(comment.contains("shared from a"), "{comment}");
    // c must have had the offer before its list says anything: b's cycle began after a's
    // block was published, so the second cycle of c after it began after that too, and its
    // inbox held the offer. (A refusal is quiet, so it is its effect that is checked; the
    // next test shows the same offer going through where it is not protected.)
    for _ in 0..2 {
        d.cycle_of("c").await;
    }
    d.stop().await;
    assert!(
        list_addresses(&c, "tls_block").is_empty(),
        "allowlisted on c"
    );
}

#[tokio::test]
async fn a_shared_block_is_refused_where_the_address_is_protected() {
    // Through the cycle itself, so the refusal is visible: the shared candidate of an
    // allowlisted address never becomes an add on c.
    let c = sim().await;
    c.add_list_entry(Family::V4, "allowlist", "203.0.113.45", None, None);
    let mut rig = Rig::new(router_for(&c, "c")).await;
    let shared = vec![rosguard_core::SharedCandidate {
        from_router: "a".into(),
        address: "203.0.113.45".parse().unwrap(),
        expires: unix_now() + Duration::from_secs(600),
        comment: "rosguard: x".into(),
        evidence_json: "{}".into(),
    }];
    let r = rosguard::cycle::run_cycle(
        &mut rig.backend,
        "c",
        &rig.router.settings,
        &mut rig.state,
        &rig.env,
        &mut rig.notes,
        shared.clone(),
        unix_now(),
        &rosguard::cycle::Limits::default(),
    )
    .await
    .unwrap();
    assert!(r.blocks.is_empty(), "{r:?}");
    assert!(list_addresses(&c, "tls_block").is_empty());
    // The same offer for an unprotected address goes through.
    let mut other = shared;
    other[0].address = "203.0.113.46".parse().unwrap();
    let r = rosguard::cycle::run_cycle(
        &mut rig.backend,
        "c",
        &rig.router.settings,
        &mut rig.state,
        &rig.env,
        &mut rig.notes,
        other,
        unix_now(),
        &rosguard::cycle::Limits::default(),
    )
    .await
    .unwrap();
    assert_eq!(r.new_blocks().count(), 1);
}

#[tokio::test]
async fn min_observations_waits_for_consecutive_polls() {
    let sim = sim().await;
    sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    let mut router = router_for(&sim, "core");
    router.settings.detection.min_observations = 3;
    let mut rig = Rig::new(router).await;
    assert_eq!(rig.cycle().await.new_blocks().count(), 0);
    assert_eq!(rig.cycle().await.new_blocks().count(), 0);
    assert_eq!(
        rig.cycle().await.new_blocks().count(),
        1,
        "third poll in a row"
    );
}

#[tokio::test]
async fn observation_state_survives_a_restart() {
    let sim = sim().await;
    sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    let dir = tempfile::tempdir().unwrap();
    let open = || CycleEnv {
        store: std::sync::Arc::new(std::sync::Mutex::new(
            rosguard_store::Store::open(&dir.path().join("rosguard.db")).unwrap(),
        )),
        events: rosguard::events::Events::new(),
    };
    let mut router = router_for(&sim, "core");
    router.settings.detection.min_observations = 3;
    {
        let mut rig = Rig::with_env(router.clone(), open()).await;
        assert_eq!(rig.cycle().await.new_blocks().count(), 0);
        assert_eq!(rig.cycle().await.new_blocks().count(), 0);
        rig.backend.close().await;
    }
    // A new process: fresh state, the same store. The third poll in a row still counts.
    let mut rig = Rig::with_env(router, open()).await;
    assert_eq!(rig.cycle().await.new_blocks().count(), 1);
}

#[tokio::test]
async fn a_capped_target_keeps_all_its_connections() {
    let sim = sim().await;
    sim.add_list_entry(Family::V4, "tls_block", "198.18.7.9", None, Some("by hand"));
    for port in [1000, 1001, 1002] {
        sim.add_connection(frozen_tls(
            &format!("192.168.88.50:{port}"),
            "203.0.113.45:443",
        ));
    }
    let mut router = router_for(&sim, "core");
    router.settings.blocking.max_list_size = 1;
    let mut rig = Rig::new(router).await;
    let r = rig.cycle().await;
    assert_eq!(r.new_blocks().count(), 0);
    assert_eq!(r.caps_hit, [Cap::MaxListSize]);
    assert!(r.removals.is_empty(), "no block, so no removal either");
    assert_eq!(
        table(&sim).await.len(),
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
    assert_eq!(rig.cycle().await.new_blocks().count(), 3);
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
    assert!(r.caps_hit.contains(&Cap::PanicBrake));
    assert!(
        list_addresses(&sim, "tls_block").is_empty(),
        "the brake holds restores too"
    );

    // Healthy again, but the list may only hold two entries: two of the three come back.
    sim.reboot();
    let mut router = router_for(&sim, "core");
    router.settings.blocking.max_list_size = 2;
    let mut rig = Rig::with_env(router, env).await;
    let r = rig.cycle().await;
    assert_eq!(
        r.blocks
            .iter()
            .filter(|b| b.kind == AddKind::Restored)
            .count(),
        2
    );
    assert_eq!(list_addresses(&sim, "tls_block").len(), 2);
}

#[tokio::test]
async fn a_reload_does_not_reset_the_hourly_cap() {
    let sim = sim().await;
    sim.add_connection(frozen_tls("192.168.88.50:1000", "203.0.113.1:443"));
    let mut router = router_for(&sim, "core");
    router.settings.blocking.max_blocks_per_hour = 1;
    let mut rig = Rig::new(router.clone()).await;
    assert_eq!(rig.cycle().await.new_blocks().count(), 1);
    // SIGHUP with an unrelated change.
    let mut reloaded = router.clone();
    reloaded.settings.blocking.allow = vec!["10.0.0.0/8".parse().unwrap()];
    rig.state.reconfigure(&reloaded.settings);
    rig.router = reloaded;
    sim.add_connection(frozen_tls("192.168.88.50:1001", "203.0.113.2:443"));
    let r = rig.cycle().await;
    assert_eq!(r.new_blocks().count(), 0);
    assert_eq!(r.caps_hit, [Cap::MaxBlocksPerHour]);
}
