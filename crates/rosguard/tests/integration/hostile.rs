//! Hostile and broken routers (issue 11): replies that never end, rows that trickle, a
//! connection that goes silent or answers with the wrong tags, reads refused for lack of
//! permission, special and LAN addresses in the rows, and the daemon's own guards (a second
//! daemon, a reload to an empty config, a stop during a cycle that never ends). Each test
//! names the item of the issue it pins.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rosguard::events::{Event, Link};
use rosguard_core::backend::Backend;
use rosguard_core::settings::BlockTarget;
use rosguard_core::SkipReason;
use routeros_sim::{
    Family, Faults, GenerateSpec, PathMatch, Silent, SimConfig, SimConnection, Trickle, WrongTag,
    WrongTags,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::cli::{rosguard, run, setup, until, Setup};
use crate::support::*;

const CONNECTION_PRINT: &str = "/ip/firewall/connection/print";
const LIST_PRINT: &str = "/ip/firewall/address-list/print";

/// The cycle counter the store keeps for `router` (0 when no cycle was ever recorded).
fn recorded_cycles(env: &rosguard::cycle::CycleEnv, router: &str) -> u64 {
    let store = env.store.lock().unwrap();
    store
        .counters(router)
        .unwrap()
        .get("cycles")
        .copied()
        .unwrap_or(0)
}

/// Item 1: every collected read of a cycle is bounded by `max_reply_rows`. A router that
/// streams rows of any of them and never sends `!done` fails the cycle at the limit, with an
/// error that names the setting, and the connection is dropped (not waited on for 30 s).
#[tokio::test]
async fn an_endless_reply_to_any_read_fails_the_cycle_at_max_reply_rows() {
    for path in [
        LIST_PRINT,
        "/ip/address/print",
        "/ip/route/print",
        "/ip/dns/print",
        "/user/active/print",
    ] {
        let sim = sim().await;
        sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
        // A row to repeat (an endless print of an empty table just never ends, which is
        // the command timeout's business).
        seed_block_list(&sim);
        sim.set_faults(Faults {
            endless: PathMatch::prefixes([path]),
            ..Faults::default()
        });
        let mut router = router_for(&sim, "core");
        router.max_reply_rows = 50;
        // Far above the test's patience: only the row limit can end the read in time.
        router.command_timeout = Duration::from_secs(3600);
        let mut rig = Rig::new(router).await;
        let err = tokio::time::timeout(Duration::from_secs(30), rig.try_cycle())
            .await
            .unwrap_or_else(|_| panic!("{path}: the cycle waited on an endless reply"))
            .expect_err(path);
        assert!(err.is_connection_lost(), "{path}: {err:?}");
        assert!(
            err.message.contains("max_reply_rows") && err.message.contains(path),
            "{path}: {err}"
        );
        assert_eq!(list_addresses(&sim, "tls_block"), ["203.0.113.9"], "{path}");
        assert_eq!(recorded_cycles(&rig.env, "core"), 0, "{path}");
    }
}

/// Item 1, on the command line: `rosguard list` against an endless print exits non-zero and
/// says which limit it hit.
#[tokio::test]
async fn list_against_an_endless_print_fails_at_max_reply_rows() {
    let sim = sim().await;
    seed_block_list(&sim);
    sim.set_faults(Faults {
        endless: PathMatch::prefixes([LIST_PRINT]),
        ..Faults::default()
    });
    let s = setup(&sim, "");
    append_to_router(&s, "max_reply_rows = 20\ncommand_timeout = \"1h\"\n");
    let out = tokio::time::timeout(Duration::from_secs(30), run(&s, &["list"]))
        .await
        .expect("list waited on an endless reply");
    let (ok, _, err) = out;
    assert!(!ok, "{err}");
    assert!(err.contains("max_reply_rows"), "{err}");
}

/// One entry in the block list and one in the allowlist.
fn seed_block_list(sim: &routeros_sim::SimHandle) {
    sim.add_list_entry(
        Family::V4,
        "tls_block",
        "203.0.113.9",
        None,
        Some("by hand"),
    );
    sim.add_list_entry(Family::V4, "allowlist", "198.51.100.99", None, None);
}

/// Adds router keys to the config of `s` (its `[[router]]` table is the last one).
fn append_to_router(s: &Setup, keys: &str) {
    let mut text = std::fs::read_to_string(&s.config).unwrap();
    text.push_str(keys);
    std::fs::write(&s.config, text).unwrap();
}

/// Item 2: a connection table that trickles rows for ever cannot hold a cycle past its
/// deadline: the cycle fails as `deadline`, drops the connection and records nothing.
#[tokio::test]
async fn a_trickling_connection_table_ends_the_cycle_at_its_deadline() {
    let sim = sim().await;
    sim.set_faults(Faults {
        trickle: Some(Trickle {
            paths: PathMatch::prefixes([CONNECTION_PRINT]),
            every: Duration::from_millis(20),
            rows: None,
        }),
        ..Faults::default()
    });
    let mut rig = Rig::new(router_for(&sim, "core")).await;
    let limits = rosguard::cycle::Limits {
        stop: CancellationToken::new(),
        deadline: Duration::from_millis(500),
        replay: false,
    };
    let cycle = rosguard::cycle::run_cycle(
        &mut rig.backend,
        "core",
        &rig.router.settings,
        &mut rig.state,
        &rig.env,
        &mut rig.notes,
        Vec::new(),
        rosguard::state::unix_now(),
        &limits,
    );
    let err = tokio::time::timeout(Duration::from_secs(30), cycle)
        .await
        .expect("the cycle outlived its deadline")
        .expect_err("a table that never ends cannot complete a cycle");
    assert_eq!(err.label, "deadline", "{err}");
    assert!(err.is_connection_lost(), "the daemon reconnects: {err:?}");
    assert!(
        err.message.contains("daemon.cycle_deadline = 500ms"),
        "{err}"
    );
    assert_eq!(recorded_cycles(&rig.env, "core"), 0);
}

/// Item 2: an endless table of rows, some of them flagged, keeps at most `max_candidates`
/// findings: the read is cancelled there, the cycle completes, and an incomplete picture
/// blocks nothing.
#[tokio::test]
async fn an_endless_flagged_table_keeps_at_most_max_candidates() {
    let sim = sim_with(SimConfig {
        generate: Some(GenerateSpec {
            connections: 200,
            anomaly_share: 1.0,
            seed: 7,
            ipv6_share: 0.0,
        }),
        ..SimConfig::default()
    })
    .await;
    sim.set_faults(Faults {
        endless: PathMatch::prefixes([CONNECTION_PRINT]),
        ..Faults::default()
    });
    let router = router_for(&sim, "core");
    let env = memory_env();
    let mut backend = rosguard_routeros::RouterOsBackend::new(router.client_config(), 10);
    backend.connect().await.unwrap();
    let mut state =
        rosguard::cycle::load_state(&env, "core", &router.settings, rosguard::state::unix_now());
    let mut notes = rosguard::cycle::Notes::default();
    let limits = rosguard::cycle::Limits::default();
    let cycle = rosguard::cycle::run_cycle(
        &mut backend,
        "core",
        &router.settings,
        &mut state,
        &env,
        &mut notes,
        Vec::new(),
        rosguard::state::unix_now(),
        &limits,
    );
    let r = tokio::time::timeout(Duration::from_secs(30), cycle)
        .await
        .expect("the candidate limit ends the read")
        .expect("the cycle completes");
    assert!(r.flagged <= 10, "{r:?}");
    assert!(
        r.caps_hit.contains(&rosguard_core::Cap::CandidateLimit),
        "{r:?}"
    );
    assert!(list_addresses(&sim, "tls_block").is_empty());
}

/// Item 3: a stop request abandons a cycle that a trickling router would keep alive for an
/// hour: the daemon ends at once and nothing of the cycle is recorded.
#[tokio::test]
async fn a_stop_abandons_a_cycle_that_never_ends() {
    let sim = sim().await;
    sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    sim.set_faults(Faults {
        trickle: Some(Trickle {
            paths: PathMatch::prefixes([CONNECTION_PRINT]),
            every: Duration::from_secs(3600),
            rows: None,
        }),
        ..Faults::default()
    });
    let env = memory_env();
    let mut d = Running::start(config(fast(), vec![router_for(&sim, "core")]), env.clone());
    // The cycle starts right after the link comes up, and its read of the table cannot end.
    d.wait_for("the link", |e| {
        matches!(e, Event::Link { link: Link::Up, .. }).then_some(())
    })
    .await;
    d.stop().await;
    assert_eq!(recorded_cycles(&env, "core"), 0);
    assert!(list_addresses(&sim, "tls_block").is_empty());
}

/// Item 3, through the binary: SIGTERM during a cycle that trickles one row an hour stops
/// `rosguard run` with status 0.
#[tokio::test]
async fn sigterm_stops_run_during_a_trickling_cycle() {
    let sim = sim().await;
    sim.set_faults(Faults {
        trickle: Some(Trickle {
            paths: PathMatch::prefixes([CONNECTION_PRINT]),
            every: Duration::from_secs(3600),
            rows: None,
        }),
        ..Faults::default()
    });
    let s = setup(&sim, "[daemon]\nlog_level = \"info\"");
    let mut child = rosguard(&s, &["run"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(child.id().unwrap() as i32);
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    until(&mut lines, "connected to").await;
    kill(pid, Signal::SIGTERM).unwrap();
    until(&mut lines, "stopped").await;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("run stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}

/// The next `Link::Down` of the daemon, then the `Link::Up` of its reconnection.
async fn down_then_up(d: &mut Running) -> (String, String) {
    let down = d
        .wait_for("the connection to be dropped", |e| match e {
            Event::Link {
                link: Link::Down { error, label },
                ..
            } => Some((label.clone(), error.clone())),
            _ => None,
        })
        .await;
    d.wait_for("a reconnection", |e| {
        matches!(e, Event::Link { link: Link::Up, .. }).then_some(())
    })
    .await;
    down
}

/// Item 4: a connection that stops answering is dropped at the command timeout and a new one
/// made; once the router answers again, blocking goes on.
#[tokio::test]
async fn a_silent_connection_is_dropped_and_replaced() {
    let sim = sim().await;
    // The login is answered, every command after it is not.
    sim.set_faults(Faults {
        silent: Silent {
            from_command: Some(2),
            paths: PathMatch::none(),
        },
        ..Faults::default()
    });
    let mut router = router_for(&sim, "core");
    router.command_timeout = Duration::from_millis(300);
    let mut d = Running::start(config(fast(), vec![router]), memory_env());
    let (label, error) = down_then_up(&mut d).await;
    assert_eq!(label, "timeout", "{error}");
    assert!(error.contains("command_timeout"), "{error}");
    assert!(sim.stats().sessions_accepted >= 2);
    sim.set_faults(Faults::default());
    sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    d.wait_for("a block", |e| matches!(e, Event::Block(_)).then_some(()))
        .await;
    d.stop().await;
    assert_eq!(list_addresses(&sim, "tls_block"), ["203.0.113.45"]);
}

/// Item 4: replies with a tag rosguard never sent, or none, drop the connection too.
#[tokio::test]
async fn wrong_tags_drop_the_connection_and_a_new_one_is_made() {
    for tag in [WrongTag::Other, WrongTag::Missing] {
        let sim = sim().await;
        sim.set_faults(Faults {
            wrong_tags: Some(WrongTags {
                paths: PathMatch::prefixes([CONNECTION_PRINT]),
                tag,
            }),
            ..Faults::default()
        });
        let mut d = Running::start(config(fast(), vec![router_for(&sim, "core")]), memory_env());
        let (label, error) = down_then_up(&mut d).await;
        assert!(error.contains("tag"), "{tag:?}: {label}: {error}");
        sim.set_faults(Faults::default());
        sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
        d.wait_for("a block", |e| matches!(e, Event::Block(_)).then_some(()))
            .await;
        d.stop().await;
    }
}

/// Item 6: while the gateway, the DNS servers or rosguard's session address cannot be read
/// (here: a permission trap), nothing is blocked and the report says why; once the read
/// works, the outsider is blocked and the protected address still is not.
#[tokio::test]
async fn nothing_is_blocked_until_the_protected_addresses_can_be_read() {
    // The simulator's defaults: gateway 198.51.100.1, DNS 1.1.1.1 and 9.9.9.9, and the
    // session address is where the test connects from.
    for (path, protected) in [
        ("/ip/route/print", "198.51.100.1:443"),
        ("/ip/dns/print", "9.9.9.9:443"),
        ("/user/active/print", "127.0.0.1:8443"),
    ] {
        let sim = sim().await;
        sim.add_connection(frozen_tls("192.168.88.50:50001", protected));
        sim.add_connection(frozen_tls("192.168.88.50:50002", "203.0.113.45:443"));
        sim.set_faults(Faults {
            permission_denied: PathMatch::prefixes([path]),
            ..Faults::default()
        });
        let mut rig = Rig::new(router_for(&sim, "core")).await;
        for _ in 0..2 {
            let r = rig.cycle().await;
            assert!(!r.protection_missing.is_empty(), "{path}: {r:?}");
            assert!(r.new_blocks().next().is_none(), "{path}: {r:?}");
            // The outsider waits for the protected set; the protected address is spared
            // either way (the gateway is in the WAN network, so also a LAN address).
            let reason = |a: &str| {
                let ip = sa(a).ip();
                r.skipped.iter().find(|s| s.address == ip).map(|s| s.reason)
            };
            assert!(
                matches!(
                    reason("203.0.113.45:443"),
                    Some(SkipReason::ProtectionUnknown { .. })
                ),
                "{path}: {:?}",
                r.skipped
            );
            assert!(
                reason(protected).is_some_and(SkipReason::is_safety),
                "{path}: {:?}",
                r.skipped
            );
            assert!(list_addresses(&sim, "tls_block").is_empty(), "{path}");
        }
        // The permission is fixed: the next cycle reads it again.
        sim.set_faults(Faults::default());
        let r = rig.cycle().await;
        assert!(r.protection_missing.is_empty(), "{path}: {r:?}");
        assert_eq!(
            list_addresses(&sim, "tls_block"),
            ["203.0.113.45"],
            "{path}: {r:?}"
        );
    }
}

/// Items 7 and 8: with `block_target = "dst"`, a spray from outside at a LAN host (IPv4 or
/// IPv6, the networks of /ip/address and /ipv6/address) or at a special address never puts
/// it on the list; the reason names the network or the kind of address.
#[tokio::test]
async fn lan_hosts_and_special_addresses_in_the_rows_are_never_blocked() {
    let sim = sim().await;
    let spray = |src: &str, dst: &str| SimConnection::udp(sa(src), sa(dst)).packets(30, 0);
    let lan = [
        ("203.0.113.66:40000", "192.168.88.20:443", "192.168.88.0/24"),
        ("[2001:db8::66]:40000", "[fd00:88::20]:443", "fd00:88::/64"),
    ];
    for (src, dst, _) in lan {
        sim.add_connection(spray(src, dst));
    }
    let special = [
        ("192.168.88.50:40001", "0.0.0.0:443"),
        ("192.168.88.50:40002", "255.255.255.255:443"),
        ("192.168.88.50:40003", "224.0.0.251:443"),
        ("192.168.88.50:40004", "169.254.1.1:443"),
        ("[fd00:88::50]:40005", "[ff02::1]:443"),
        ("[fd00:88::50]:40006", "[fe80::1]:443"),
        ("[fd00:88::50]:40007", "[::]:443"),
        ("[fd00:88::50]:40008", "[::1]:443"),
    ];
    for (src, dst) in special {
        sim.add_connection(spray(src, dst));
    }
    let mut router = router_for(&sim, "core");
    router.settings.detection.block_target = BlockTarget::Dst;
    let mut rig = Rig::new(router).await;
    let r = rig.cycle().await;
    assert_eq!(r.flagged, (lan.len() + special.len()) as u64, "{r:?}");
    assert!(r.new_blocks().next().is_none(), "{r:?}");
    assert!(list_addresses(&sim, "tls_block").is_empty());
    let reason = |addr: &str| {
        let ip: std::net::IpAddr = sa(addr).ip();
        r.skipped
            .iter()
            .find(|s| s.address == ip)
            .unwrap_or_else(|| panic!("{addr} not among the skipped: {:?}", r.skipped))
            .reason
    };
    for (_, dst, network) in lan {
        let why = reason(dst);
        assert_eq!(why.kind(), "lan", "{dst}");
        assert!(why.to_string().contains(network), "{dst}: {why}");
    }
    for (_, dst) in special {
        assert_eq!(reason(dst).kind(), "special", "{dst}");
    }
}

/// Item 9: a SIGHUP to a config without any `[[router]]` is refused like at startup; the
/// running config keeps protecting.
#[tokio::test]
async fn a_reload_to_a_config_without_routers_is_refused() {
    let sim = sim().await;
    let daemon = "[daemon]\nlog_level = \"info\"\nloop_delay = \"200ms\"";
    let s = setup(&sim, daemon);
    let mut child = rosguard(&s, &["run"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(child.id().unwrap() as i32);
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    until(&mut lines, "connected to").await;
    std::fs::write(&s.config, format!("{daemon}\n")).unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    let line = until(&mut lines, "reload failed").await;
    assert!(line.contains("[[router]]"), "{line}");
    sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    until(&mut lines, "Added 203.0.113.45 to tls_block").await;
    kill(pid, Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

/// Item 10: `rosguard once` whose every add is refused for lack of permission exits non-zero
/// and says the user lacks the `write` policy.
#[tokio::test]
async fn once_fails_when_every_add_is_refused_and_names_the_write_policy() {
    let sim = sim().await;
    sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    sim.set_faults(Faults {
        permission_denied: PathMatch::prefixes(["/ip/firewall/address-list/add"]),
        ..Faults::default()
    });
    let s = setup(&sim, "");
    let (ok, out, err) = run(&s, &["once"]).await;
    assert!(!ok, "{out}\n{err}");
    assert!(err.contains("write"), "{out}\n{err}");
    assert!(list_addresses(&sim, "tls_block").is_empty());
}

/// Item 11: an entry of rosguard's list with a `rosguard:` comment and no record (the daemon
/// was killed between the add and the store write) is adopted into the store once, and is
/// restored after a reboot like any other block.
#[tokio::test]
async fn rosguard_entries_without_a_record_are_adopted_and_restored() {
    let sim = sim().await;
    sim.add_list_entry(
        Family::V4,
        "tls_block",
        "203.0.113.77",
        Some(Duration::from_secs(3600)),
        Some("rosguard: tcp 192.168.88.50:1 -> 203.0.113.77:443 orig=9 repl=1"),
    );
    sim.add_list_entry(
        Family::V4,
        "tls_block",
        "203.0.113.78",
        Some(Duration::from_secs(3600)),
        Some("added by hand"),
    );
    let mut rig = Rig::new(router_for(&sim, "core")).await;
    let r = rig.cycle().await;
    let adopted: Vec<String> = r.adopted.iter().map(|a| a.address.to_string()).collect();
    assert_eq!(adopted, ["203.0.113.77"]);
    {
        let store = rig.env.store.lock().unwrap();
        let rows = store.blocks_for("203.0.113.77".parse().unwrap()).unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].evidence["adopted"], true);
        assert!(store
            .blocks_for("203.0.113.78".parse().unwrap())
            .unwrap()
            .is_empty());
    }
    assert!(rig.cycle().await.adopted.is_empty(), "adopted once");
    rig.backend.close().await;
    // The router reboots: timed entries vanish; a new start reads the store.
    sim.reboot();
    let mut rig = Rig::with_env(router_for(&sim, "core"), rig.env.clone()).await;
    let r = rig.cycle().await;
    assert!(
        r.blocks
            .iter()
            .any(|b| b.address.to_string() == "203.0.113.77"),
        "{r:?}"
    );
    assert_eq!(list_addresses(&sim, "tls_block"), ["203.0.113.77"]);
}

/// Item 12: a second `rosguard run` on the same state directory refuses to start and names
/// the process that holds the lock.
#[tokio::test]
async fn a_second_daemon_on_the_same_state_is_refused() {
    let sim = sim().await;
    let s = setup(&sim, "[daemon]\nlog_level = \"info\"");
    let mut first = rosguard(&s, &["run"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = first.id().unwrap();
    let mut lines = BufReader::new(first.stderr.take().unwrap()).lines();
    until(&mut lines, "connected to").await;
    let second = tokio::time::timeout(Duration::from_secs(30), rosguard(&s, &["run"]).output())
        .await
        .expect("the second daemon exits")
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{err}");
    assert!(err.contains(&pid.to_string()), "names the holder: {err}");
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
    assert!(first.wait().await.unwrap().success());
}

/// Items 13 and 14: `why` needs no router password, and the text it prints from the state
/// (router-supplied comments, tcp-state) has its control characters escaped; so has `list`.
#[tokio::test]
async fn why_needs_no_password_and_list_and_why_escape_control_characters() {
    let sim = sim().await;
    let s = setup(&sim, "");
    let forged = "rosguard: \u{1b}[2J\r\nINFO forged line";
    {
        let mut store = rosguard::state::open_writer(&s.dir.path().join("state")).unwrap();
        store
            .record_cycle(&rosguard_store::CycleRecord {
                router: "core".into(),
                at_unix: rosguard::state::secs(rosguard::state::unix_now()),
                blocks: vec![rosguard_store::NewBlock {
                    list: "tls_block".into(),
                    address: "203.0.113.45".parse().unwrap(),
                    timeout_secs: 600,
                    level: 0,
                    comment: forged.into(),
                    evidence: serde_json::json!({
                        "rule": "asymmetric",
                        "connection": {
                            "protocol": "tcp",
                            "src": { "addr": "192.168.88.50", "port": 1 },
                            "dst": { "addr": "203.0.113.45", "port": 443 },
                            "tcp_state": "\u{1b}[2Jestablished",
                        },
                    }),
                    dry_run: false,
                }],
                counters: vec![("cycles".into(), 1)],
                ..rosguard_store::CycleRecord::default()
            })
            .unwrap();
    }
    // No password anywhere: the variable the config names is not set.
    let out = rosguard(&s, &["why", "203.0.113.45"])
        .env_remove(crate::cli::PASSWORD_VAR)
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("was blocked on router core"), "{stdout}");
    assert!(
        !stdout.contains('\u{1b}') && !stdout.contains('\r'),
        "{stdout:?}"
    );
    assert!(
        stdout.contains("\\u{1b}[2J") && stdout.contains("\\r\\nINFO forged line"),
        "{stdout}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("INFO")).count(),
        0,
        "{stdout}"
    );

    sim.add_list_entry(
        Family::V4,
        "tls_block",
        "203.0.113.46",
        None,
        Some("\u{1b}[2Jhand\r\nmade"),
    );
    let (ok, stdout, stderr) = run(&s, &["list"]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("203.0.113.46"), "{stdout}");
    // Router text is made safe as it is read: a control character is U+FFFD from then on.
    assert!(
        !stdout.contains('\u{1b}') && !stdout.contains('\r'),
        "{stdout:?}"
    );
    assert!(stdout.contains("\u{FFFD}[2Jhand"), "{stdout}");
}
