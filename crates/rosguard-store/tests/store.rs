//! Integration tests of the state store, against real files in temporary directories:
//! round trips of every query, one transaction per cycle, restore and escalation semantics,
//! pruning, schema versions, damaged rows, a writer killed with SIGKILL, the modes of what the
//! store creates, read-only opening by a reader that cannot write, and the one-writer lock.
//!
//! The tests of a reader that cannot write run `rosguard-store-probe` without write
//! permission: as root, as a throwaway uid (root writes through any mode); otherwise as the
//! test's own user on files and a directory whose write bits are taken away.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rosguard_store::{
    ActiveBlock, CycleRecord, Lifted, NewBlock, StateLock, Store, StoreError, Strike,
};
use serde_json::json;

/// The schema version this build writes.
const SCHEMA: u32 = 2;

const ROUTER: &str = "edge";
const LIST: &str = "rosguard";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn block(address: &str, timeout_secs: u64, level: u32) -> NewBlock {
    NewBlock {
        list: LIST.into(),
        address: ip(address),
        timeout_secs,
        level,
        comment: format!("rosguard: tls level {level}"),
        evidence: json!({
            "rule": "tls-handshake",
            "conn": {"src": "198.51.100.7:51234", "dst": "192.0.2.1:443", "proto": "tcp"},
            "orig_packets": 40, "repl_packets": 1, "tcp_state": "syn-received",
            "config": {"min_packets": 20, "max_ratio": 0.05}
        }),
        dry_run: false,
    }
}

fn cycle(router: &str, at_unix: i64, blocks: Vec<NewBlock>) -> CycleRecord {
    CycleRecord {
        router: router.into(),
        at_unix,
        blocks,
        counters: vec![("cycles".into(), 1)],
        strikes: None,
        ..CycleRecord::default()
    }
}

fn strike(key: &str, count: u32, first_unix: i64, last_unix: i64) -> Strike {
    Strike {
        key: key.into(),
        count,
        first_unix,
        last_unix,
    }
}

fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state").join("rosguard.db");
    (dir, path)
}

fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

fn count(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

mod open {
    use super::*;

    #[test]
    fn creates_the_directory_uses_wal_and_persists_across_reopen() {
        let (_dir, path) = temp_db();
        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.path(), path);
        assert_eq!(store.schema_version().unwrap(), SCHEMA);
        store.integrity_check().unwrap();
        store
            .record_cycle(&cycle(ROUTER, 100, vec![block("192.0.2.1", 600, 0)]))
            .unwrap();
        drop(store);

        let conn = raw(&path);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(conn);

        let store = Store::open(&path).unwrap();
        assert_eq!(store.blocks_for(ip("192.0.2.1")).unwrap().len(), 1);
        assert_eq!(store.counters(ROUTER).unwrap()["cycles"], 1);
    }

    #[test]
    fn in_memory_store_works_and_is_not_shared() {
        let mut store = Store::open_in_memory().unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA);
        store
            .record_cycle(&cycle(ROUTER, 100, vec![block("192.0.2.1", 600, 0)]))
            .unwrap();
        assert_eq!(store.active_blocks(ROUTER, 100).unwrap().len(), 1);
        let other = Store::open_in_memory().unwrap();
        assert!(other.blocks_for(ip("192.0.2.1")).unwrap().is_empty());
    }

    #[test]
    fn an_empty_version_zero_database_is_upgraded() {
        let (_dir, path) = temp_db();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let conn = raw(&path);
        assert_eq!(count(&conn, "PRAGMA user_version"), 0);
        drop(conn);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA);
    }

    #[test]
    fn a_database_from_a_newer_rosguard_is_refused_and_left_alone() {
        let (_dir, path) = temp_db();
        drop(Store::open(&path).unwrap());
        raw(&path).pragma_update(None, "user_version", 99).unwrap();

        let err = Store::open(&path).unwrap_err();
        match &err {
            StoreError::Migration {
                path: p,
                found,
                supported,
            } => {
                assert_eq!(
                    (p.as_path(), *found, *supported),
                    (path.as_path(), 99, SCHEMA)
                );
            }
            other => panic!("expected Migration, got {other:?}"),
        }
        let message = err.to_string();
        assert!(message.contains("upgrade rosguard"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert_eq!(count(&raw(&path), "PRAGMA user_version"), 99);
    }

    #[test]
    fn another_programs_database_is_refused() {
        let (_dir, path) = temp_db();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        raw(&path)
            .execute_batch("CREATE TABLE photos (id INTEGER PRIMARY KEY);")
            .unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("not a rosguard database"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_a_database_gives_advice() {
        let (_dir, path) = temp_db();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            b"this is not an SQLite database, just some text\n".repeat(100),
        )
        .unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Sqlite { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("move it"), "{message}");
    }

    #[test]
    fn an_unwritable_location_is_an_io_error() {
        let (dir, _) = temp_db();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"").unwrap();
        // The parent "directory" is a regular file.
        let err = Store::open(&file.join("rosguard.db")).unwrap_err();
        assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    }
}

mod history {
    use super::*;

    #[test]
    fn blocks_for_returns_every_router_newest_first_with_evidence() {
        let (_dir, path) = temp_db();
        let mut store = Store::open(&path).unwrap();
        store
            .record_cycle(&cycle(ROUTER, 100, vec![block("2001:db8::7", 600, 0)]))
            .unwrap();
        let mut dry = block("2001:db8::7", 1200, 1);
        dry.dry_run = true;
        store
            .record_cycle(&cycle("branch", 200, vec![dry.clone()]))
            .unwrap();
        store
            .record_cycle(&cycle(ROUTER, 300, vec![block("2001:db8::8", 600, 0)]))
            .unwrap();

        let rows = store.blocks_for(ip("2001:db8::7")).unwrap();
        assert_eq!(rows.len(), 2);
        let (newest, oldest) = (&rows[0], &rows[1]);
        assert!(newest.id > oldest.id);
        assert_eq!(newest.router, "branch");
        assert_eq!(newest.at_unix, 200);
        assert_eq!(newest.timeout_secs, 1200);
        assert_eq!(newest.expires_unix, 1400);
        assert_eq!(newest.level, 1);
        assert!(newest.dry_run);
        assert_eq!(newest.evidence, dry.evidence);
        assert_eq!(newest.comment, dry.comment);
        assert_eq!(newest.lifted_unix, None);
        assert_eq!(oldest.router, ROUTER);
        assert_eq!(oldest.list, LIST);
        assert_eq!(oldest.address, ip("2001:db8::7"));
        assert!(!oldest.dry_run);
        assert!(store.blocks_for(ip("192.0.2.99")).unwrap().is_empty());
    }

    #[test]
    fn addresses_are_stored_canonically() {
        let mut store = Store::open_in_memory().unwrap();
        // Non-canonical IPv6 spelling and an IPv4-mapped address.
        store
            .record_cycle(&cycle(
                ROUTER,
                100,
                vec![
                    block("2001:0db8:0000::0001", 600, 0),
                    block("::ffff:192.0.2.5", 600, 0),
                ],
            ))
            .unwrap();
        let rows = store.blocks_for(ip("2001:db8::1")).unwrap();
        assert_eq!(rows.len(), 1);
        let rows = store.blocks_for(ip("192.0.2.5")).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].address, ip("192.0.2.5"));
        assert_eq!(store.blocks_for(ip("::ffff:192.0.2.5")).unwrap().len(), 1);
    }

    #[test]
    fn previous_blocks_respects_since_router_and_dry_run() {
        let mut store = Store::open_in_memory().unwrap();
        let a = "198.51.100.20";
        for at in [100, 200, 300] {
            store
                .record_cycle(&cycle(ROUTER, at, vec![block(a, 60, 0)]))
                .unwrap();
        }
        let mut dry = block(a, 60, 0);
        dry.dry_run = true;
        store.record_cycle(&cycle(ROUTER, 400, vec![dry])).unwrap();
        store
            .record_cycle(&cycle("branch", 500, vec![block(a, 60, 0)]))
            .unwrap();
        // A lifted block still happened: it counts.
        assert_eq!(store.mark_unblocked(ROUTER, LIST, ip(a), 320).unwrap(), 1);

        assert_eq!(
            store.previous_blocks(ROUTER, ip(a), 0).unwrap(),
            [100, 200, 300]
        );
        assert_eq!(
            store.previous_blocks(ROUTER, ip(a), 200).unwrap(),
            [200, 300]
        );
        assert_eq!(
            store.previous_blocks(ROUTER, ip(a), 301).unwrap(),
            [] as [i64; 0]
        );
        assert_eq!(store.previous_blocks("branch", ip(a), 0).unwrap(), [500]);
        assert!(store
            .previous_blocks(ROUTER, ip("198.51.100.21"), 0)
            .unwrap()
            .is_empty());
    }
}

mod restore {
    use super::*;

    fn active(store: &Store, now: i64) -> Vec<(String, IpAddr, i64, u32)> {
        store
            .active_blocks(ROUTER, now)
            .unwrap()
            .into_iter()
            .map(|b| (b.list, b.address, b.expires_unix, b.level))
            .collect()
    }

    #[test]
    fn active_blocks_respect_expiry() {
        let mut store = Store::open_in_memory().unwrap();
        store
            .record_cycle(&cycle(ROUTER, 100, vec![block("192.0.2.1", 100, 0)]))
            .unwrap();
        let expected = ActiveBlock {
            list: LIST.into(),
            address: ip("192.0.2.1"),
            expires_unix: 200,
            comment: "rosguard: tls level 0".into(),
            level: 0,
            placed_unix: 100,
        };
        assert_eq!(
            store.active_blocks(ROUTER, 100).unwrap(),
            std::slice::from_ref(&expected)
        );
        assert_eq!(store.active_blocks(ROUTER, 199).unwrap(), [expected]);
        assert!(store.active_blocks(ROUTER, 200).unwrap().is_empty());
        assert!(store.active_blocks("branch", 150).unwrap().is_empty());
    }

    #[test]
    fn restores_move_the_placement_and_hand_removals_lift() {
        let mut store = Store::open_in_memory().unwrap();
        store
            .record_cycle(&cycle(
                ROUTER,
                100,
                vec![block("192.0.2.1", 1000, 0), block("192.0.2.2", 1000, 0)],
            ))
            .unwrap();
        store
            .record_cycle(&CycleRecord {
                placed: vec![(LIST.into(), ip("192.0.2.1"))],
                lifts: vec![Lifted {
                    list: LIST.into(),
                    address: ip("192.0.2.2"),
                    reason: "removed-on-router".into(),
                }],
                ..cycle(ROUTER, 300, vec![])
            })
            .unwrap();
        let active = store.active_blocks(ROUTER, 400).unwrap();
        assert_eq!(active.len(), 1);
        assert_eq!(
            (active[0].address, active[0].placed_unix),
            (ip("192.0.2.1"), 300)
        );
        let lifted = &store.blocks_for(ip("192.0.2.2")).unwrap()[0];
        assert_eq!(lifted.lifted_unix, Some(300));
        assert_eq!(lifted.lift_reason.as_deref(), Some("removed-on-router"));
        assert_eq!(
            store.blocks_for(ip("192.0.2.1")).unwrap()[0].placed_unix,
            300
        );
    }

    #[test]
    fn unblocks_lift_and_suppress_until_their_end() {
        let mut store = Store::open_in_memory().unwrap();
        store
            .record_cycle(&cycle(ROUTER, 100, vec![block("192.0.2.1", 1000, 0)]))
            .unwrap();
        let n = store
            .unblock(
                ROUTER,
                LIST,
                ip("192.0.2.1"),
                150,
                750,
                "unblock: false positive",
            )
            .unwrap();
        assert_eq!(n, 1);
        assert!(store.active_blocks(ROUTER, 200).unwrap().is_empty());
        let u = store.unblocks(ROUTER, 200).unwrap();
        assert_eq!(u.len(), 1);
        assert_eq!((u[0].address, u[0].until_unix), (ip("192.0.2.1"), 750));
        assert!(store.unblocks(ROUTER, 750).unwrap().is_empty(), "ended");
        assert!(store.unblocks("branch", 200).unwrap().is_empty());
        assert_eq!(
            store.unblocks_for(ip("192.0.2.1")).unwrap()[0].reason,
            "unblock: false positive"
        );
        // Unblocking again replaces the suppression.
        store
            .unblock(ROUTER, LIST, ip("192.0.2.1"), 160, 900, "again")
            .unwrap();
        assert_eq!(store.unblocks(ROUTER, 800).unwrap()[0].until_unix, 900);
        store.end_unblock(ROUTER, ip("192.0.2.1")).unwrap();
        assert!(store.unblocks(ROUTER, 200).unwrap().is_empty());
        let row = &store.blocks_for(ip("192.0.2.1")).unwrap()[0];
        assert_eq!(row.lift_reason.as_deref(), Some("unblock: false positive"));
    }

    #[test]
    fn statuses_are_replaced_per_key() {
        let mut store = Store::open_in_memory().unwrap();
        store
            .set_status("", &serde_json::json!({"pid": 1}), 10)
            .unwrap();
        store
            .set_status("core", &serde_json::json!({"connected": true}), 11)
            .unwrap();
        store
            .set_status("", &serde_json::json!({"pid": 2}), 12)
            .unwrap();
        let s = store.statuses().unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (
                s[0].key.as_str(),
                s[0].json["pid"].as_i64(),
                s[0].updated_unix
            ),
            ("", Some(2), 12)
        );
        assert_eq!(s[1].json["connected"], serde_json::json!(true));
    }

    #[test]
    fn dry_runs_are_never_restored() {
        let mut store = Store::open_in_memory().unwrap();
        let mut dry = block("192.0.2.2", 1000, 0);
        dry.dry_run = true;
        store.record_cycle(&cycle(ROUTER, 100, vec![dry])).unwrap();
        assert!(active(&store, 150).is_empty());
        // A dry run after a real block does not hide or replace it either.
        store
            .record_cycle(&cycle(ROUTER, 200, vec![block("192.0.2.3", 1000, 0)]))
            .unwrap();
        let mut dry = block("192.0.2.3", 10, 4);
        dry.dry_run = true;
        store.record_cycle(&cycle(ROUTER, 300, vec![dry])).unwrap();
        assert_eq!(
            active(&store, 350),
            [(LIST.into(), ip("192.0.2.3"), 1200, 0)]
        );
    }

    #[test]
    fn the_latest_block_of_an_entry_wins() {
        let mut store = Store::open_in_memory().unwrap();
        store
            .record_cycle(&cycle(ROUTER, 100, vec![block("192.0.2.4", 1000, 0)]))
            .unwrap();
        store
            .record_cycle(&cycle(ROUTER, 150, vec![block("192.0.2.4", 2000, 1)]))
            .unwrap();
        let mut other_list = block("192.0.2.4", 50, 0);
        other_list.list = "rosguard-v6".into();
        store
            .record_cycle(&cycle(ROUTER, 160, vec![other_list]))
            .unwrap();
        assert_eq!(
            active(&store, 200),
            [
                (LIST.into(), ip("192.0.2.4"), 2150, 1),
                ("rosguard-v6".into(), ip("192.0.2.4"), 210, 0),
            ]
        );
    }

    #[test]
    fn lifted_blocks_are_not_restored_until_blocked_again() {
        let mut store = Store::open_in_memory().unwrap();
        store
            .record_cycle(&cycle(
                ROUTER,
                100,
                vec![block("192.0.2.5", 1000, 0), block("192.0.2.6", 1000, 0)],
            ))
            .unwrap();
        store
            .record_cycle(&cycle(ROUTER, 110, vec![block("192.0.2.5", 1000, 1)]))
            .unwrap();
        // Both running blocks of .5 are lifted; a second lift finds nothing.
        assert_eq!(
            store
                .mark_unblocked(ROUTER, LIST, ip("192.0.2.5"), 120)
                .unwrap(),
            2
        );
        assert_eq!(
            store
                .mark_unblocked(ROUTER, LIST, ip("192.0.2.5"), 121)
                .unwrap(),
            0
        );
        assert_eq!(
            active(&store, 130),
            [(LIST.into(), ip("192.0.2.6"), 1100, 0)]
        );
        let rows = store.blocks_for(ip("192.0.2.5")).unwrap();
        assert!(rows.iter().all(|r| r.lifted_unix == Some(120)));

        // Blocked again later: restored again.
        store
            .record_cycle(&cycle(ROUTER, 200, vec![block("192.0.2.5", 1000, 2)]))
            .unwrap();
        assert_eq!(active(&store, 210).len(), 2);

        // `clear` lifts the whole list; expired blocks keep their history untouched.
        store
            .record_cycle(&cycle(ROUTER, 300, vec![block("192.0.2.7", 10, 0)]))
            .unwrap();
        assert_eq!(store.mark_list_unblocked(ROUTER, LIST, 400).unwrap(), 2);
        assert!(active(&store, 401).is_empty());
        let expired = store.blocks_for(ip("192.0.2.7")).unwrap();
        assert_eq!(expired[0].lifted_unix, None);
    }

    #[test]
    fn lifting_is_per_router_and_list() {
        let mut store = Store::open_in_memory().unwrap();
        store
            .record_cycle(&cycle(ROUTER, 100, vec![block("192.0.2.8", 1000, 0)]))
            .unwrap();
        store
            .record_cycle(&cycle("branch", 100, vec![block("192.0.2.8", 1000, 0)]))
            .unwrap();
        assert_eq!(
            store
                .mark_unblocked("branch", LIST, ip("192.0.2.8"), 150)
                .unwrap(),
            1
        );
        assert_eq!(
            store
                .mark_unblocked(ROUTER, "other", ip("192.0.2.8"), 150)
                .unwrap(),
            0
        );
        assert_eq!(active(&store, 150).len(), 1);
        assert!(store.active_blocks("branch", 150).unwrap().is_empty());
    }
}

mod cycles {
    use super::*;

    #[test]
    fn counters_accumulate_per_router_and_saturate() {
        let mut store = Store::open_in_memory().unwrap();
        let mut c = cycle(ROUTER, 100, vec![]);
        c.counters = vec![
            ("cycles".into(), 1),
            ("scanned".into(), 500),
            ("skipped_allowlist".into(), 2),
            ("scanned".into(), 5),
        ];
        store.record_cycle(&c).unwrap();
        c.at_unix = 110;
        store.record_cycle(&c).unwrap();
        store.record_cycle(&cycle("branch", 110, vec![])).unwrap();
        let expected: BTreeMap<String, u64> = [
            ("cycles".to_string(), 2),
            ("scanned".to_string(), 1010),
            ("skipped_allowlist".to_string(), 4),
        ]
        .into();
        assert_eq!(store.counters(ROUTER).unwrap(), expected);
        assert_eq!(store.counters("branch").unwrap()["cycles"], 1);
        assert!(store.counters("nobody").unwrap().is_empty());

        c.counters = vec![("huge".into(), u64::MAX), ("huge".into(), u64::MAX)];
        store.record_cycle(&c).unwrap();
        assert_eq!(store.counters(ROUTER).unwrap()["huge"], i64::MAX as u64);
    }

    #[test]
    fn strikes_are_replaced_kept_or_cleared() {
        let mut store = Store::open_in_memory().unwrap();
        let mut c = cycle(ROUTER, 100, vec![]);
        c.strikes = Some(vec![strike("b", 1, 100, 100), strike("a", 3, 40, 100)]);
        store.record_cycle(&c).unwrap();
        assert_eq!(
            store.load_strikes(ROUTER).unwrap(),
            [strike("a", 3, 40, 100), strike("b", 1, 100, 100)]
        );

        // None: a cycle that could not observe keeps the state.
        store.record_cycle(&cycle(ROUTER, 110, vec![])).unwrap();
        assert_eq!(store.load_strikes(ROUTER).unwrap().len(), 2);

        // Some: replaces the whole table; a repeated key keeps the last.
        c.at_unix = 120;
        c.strikes = Some(vec![strike("c", 1, 120, 120), strike("c", 2, 110, 120)]);
        store.record_cycle(&c).unwrap();
        assert_eq!(
            store.load_strikes(ROUTER).unwrap(),
            [strike("c", 2, 110, 120)]
        );

        // Other routers are untouched; an empty list clears.
        let mut other = cycle("branch", 120, vec![]);
        other.strikes = Some(vec![strike("x", 9, 1, 2)]);
        store.record_cycle(&other).unwrap();
        c.strikes = Some(vec![]);
        store.record_cycle(&c).unwrap();
        assert!(store.load_strikes(ROUTER).unwrap().is_empty());
        assert_eq!(store.load_strikes("branch").unwrap().len(), 1);
    }

    #[test]
    fn routers_remember_their_last_cycle() {
        let mut store = Store::open_in_memory().unwrap();
        store.record_cycle(&cycle(ROUTER, 100, vec![])).unwrap();
        store.record_cycle(&cycle("branch", 105, vec![])).unwrap();
        store.record_cycle(&cycle(ROUTER, 130, vec![])).unwrap();
        let seen: Vec<(String, i64)> = store
            .routers()
            .unwrap()
            .into_iter()
            .map(|r| (r.router, r.last_cycle_unix))
            .collect();
        assert_eq!(seen, [("branch".into(), 105), (ROUTER.into(), 130)]);
    }

    /// A cycle that fails halfway leaves nothing of itself: not its blocks, counters,
    /// strikes or last-cycle time. The failure is real: a trigger aborts the strike insert,
    /// which runs after the blocks and counters have been written inside the transaction.
    #[test]
    fn a_failing_cycle_leaves_nothing_half_written() {
        let (_dir, path) = temp_db();
        let mut store = Store::open(&path).unwrap();
        let mut first = cycle(ROUTER, 100, vec![block("192.0.2.10", 1000, 0)]);
        first.strikes = Some(vec![strike("keep", 1, 100, 100)]);
        store.record_cycle(&first).unwrap();

        raw(&path)
            .execute_batch(
                "CREATE TRIGGER fail_on_boom BEFORE INSERT ON strikes WHEN NEW.key = 'boom' \
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
            )
            .unwrap();

        let mut failing = cycle(
            ROUTER,
            200,
            vec![block("192.0.2.11", 1000, 0), block("192.0.2.12", 1000, 0)],
        );
        failing.counters = vec![("cycles".into(), 1), ("blocked".into(), 2)];
        failing.strikes = Some(vec![
            strike("fine", 1, 200, 200),
            strike("boom", 1, 200, 200),
        ]);
        let err = store.record_cycle(&failing).unwrap_err();
        assert!(err.to_string().contains("injected failure"), "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );

        // Seen from the same connection and from a fresh one.
        for store in [&store, &Store::open(&path).unwrap()] {
            assert!(store.blocks_for(ip("192.0.2.11")).unwrap().is_empty());
            assert!(store.blocks_for(ip("192.0.2.12")).unwrap().is_empty());
            let counters = store.counters(ROUTER).unwrap();
            assert_eq!(counters.get("cycles"), Some(&1));
            assert_eq!(counters.get("blocked"), None);
            assert_eq!(
                store.load_strikes(ROUTER).unwrap(),
                [strike("keep", 1, 100, 100)]
            );
            assert_eq!(store.routers().unwrap()[0].last_cycle_unix, 100);
        }
        let conn = raw(&path);
        assert_eq!(count(&conn, "SELECT count(*) FROM blocks"), 1);

        // The store is still usable afterwards.
        failing.strikes = Some(vec![strike("fine", 1, 200, 200)]);
        store.record_cycle(&failing).unwrap();
        assert_eq!(count(&conn, "SELECT count(*) FROM blocks"), 3);
    }
}

mod maintenance {
    use super::*;

    #[test]
    fn prune_forgets_old_finished_blocks_only() {
        let (_dir, path) = temp_db();
        let mut store = Store::open(&path).unwrap();
        store
            .record_cycle(&cycle(
                ROUTER,
                100,
                vec![block("192.0.2.20", 50, 0), block("192.0.2.21", 10_000, 3)],
            ))
            .unwrap();
        store
            .record_cycle(&cycle(ROUTER, 900, vec![block("192.0.2.22", 50, 0)]))
            .unwrap();

        assert_eq!(store.prune(500).unwrap(), 1);
        assert!(store.blocks_for(ip("192.0.2.20")).unwrap().is_empty());
        // Decided long ago but still running: kept, for restore and for `why`.
        assert_eq!(store.blocks_for(ip("192.0.2.21")).unwrap().len(), 1);
        assert_eq!(store.blocks_for(ip("192.0.2.22")).unwrap().len(), 1);
        assert_eq!(store.prune(500).unwrap(), 0);
        // Counters are cumulative and not pruned.
        assert_eq!(store.counters(ROUTER).unwrap()["cycles"], 2);
        assert_eq!(store.prune(i64::MAX).unwrap(), 2);
        store.integrity_check().unwrap();
    }

    /// Rows damaged in the file (hand edits, bit rot the checks did not stop) are skipped
    /// and counted; the good rows still come back and nothing panics.
    #[test]
    fn rows_that_do_not_decode_are_skipped_and_counted() {
        let (_dir, path) = temp_db();
        let mut store = Store::open(&path).unwrap();
        store
            .record_cycle(&cycle(ROUTER, 100, vec![block("192.0.2.30", 1000, 0)]))
            .unwrap();
        let mut c = cycle(ROUTER, 100, vec![]);
        c.strikes = Some(vec![strike("good", 1, 1, 1)]);
        store.record_cycle(&c).unwrap();

        let conn = raw(&path);
        conn.execute_batch(
            "PRAGMA ignore_check_constraints = ON;
             INSERT INTO blocks (router, list, address, at_unix, timeout_secs, expires_unix,
                                 level, comment, evidence, dry_run)
             VALUES ('edge', 'rosguard', 'not-an-address', 100, 1000, 1100, 0, '', '{}', 0),
                    ('edge', 'rosguard', '192.0.2.30', 101, 1000, 1101, -1, '', '{}', 0),
                    ('edge', 'rosguard', '192.0.2.30', 102, -5, 1102, 0, '', '{}', 0),
                    ('edge', 'rosguard', '192.0.2.30', 103, 1000, 1103, 0, '', '{', 0),
                    ('edge', 'rosguard', '192.0.2.30', 104, 1000, 1104, 0, '', '{}', 7);
             INSERT INTO strikes VALUES ('edge', 'bad', -1, 0, 0);
             INSERT INTO counters VALUES ('edge', 'negative', -3);",
        )
        .unwrap();

        let rows = store.blocks_for(ip("192.0.2.30")).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].at_unix, 100);
        assert_eq!(store.skipped_rows(), 4);
        assert_eq!(
            store.load_strikes(ROUTER).unwrap(),
            [strike("good", 1, 1, 1)]
        );
        assert_eq!(store.counters(ROUTER).unwrap().get("negative"), None);
        assert_eq!(store.skipped_rows(), 6);
        // Restore decodes fewer columns: the latest plain row of 192.0.2.30 (at 103, whose
        // evidence is damaged) still restores; the unparsable address is skipped.
        let active = store.active_blocks(ROUTER, 150).unwrap();
        assert_eq!(active.len(), 1);
        assert_eq!(
            (active[0].address, active[0].expires_unix),
            (ip("192.0.2.30"), 1103)
        );
        assert_eq!(store.skipped_rows(), 7);
    }
}

/// Blocks and strikes per cycle of the crash writer (`src/bin/rosguard-store-crash-writer.rs`);
/// these must match its constants.
const KILL9_BLOCKS: u64 = 25;
const KILL9_STRIKES: u64 = 40;

/// Writers started and killed in the kill test.
const ROUNDS: u64 = 24;

/// Kills the child on drop, so a failing assertion does not leave a writer running.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A writer killed with SIGKILL at arbitrary points, [`ROUNDS`] times over the same file: after
/// each kill the file passes `PRAGMA integrity_check`, holds every cycle the writer reported
/// as committed, and holds each cycle entirely or not at all (at most one committed cycle
/// was not yet reported). Synchronisation is by the child's stdout lines only.
#[test]
fn kill9_loses_at_most_the_cycle_in_progress() {
    let (_dir, path) = temp_db();
    let exe = env!("CARGO_BIN_EXE_rosguard-store-crash-writer");
    let mut stored: u64 = 0;
    for round in 0..ROUNDS {
        let wait_for = [3_u64, 17, 1, 9, 2][round as usize % 5];
        let child = Command::new(exe)
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut child = KillOnDrop(child);
        let stdout = child.0.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();

        let mut reported = stored;
        let mut note = |line: String| {
            if let Some(n) = line.strip_prefix("committed ") {
                let n: u64 = n.trim().parse().unwrap();
                assert_eq!(n, reported + 1, "cycles are reported in order");
                reported = n;
            }
        };
        let mut seen = 0;
        while seen < wait_for {
            let line = lines
                .next()
                .expect("the writer ended before it was killed")
                .unwrap();
            if line.starts_with("committed ") {
                seen += 1;
            }
            note(line);
        }
        // Not synchronisation (that is the lines above): a spread of delays so the kills
        // land at different points of a cycle, not always just after a commit.
        std::thread::sleep(Duration::from_micros(round * 97 % 1500));
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        // Lines written before the kill are commitments too: read them all.
        for line in lines {
            note(line.unwrap());
        }

        let store = Store::open(&path).unwrap();
        store.integrity_check().unwrap();
        let cycles = store.counters(ROUTER).unwrap()["cycles"];
        assert!(
            cycles == reported || cycles == reported + 1,
            "reported {reported} committed, the file holds {cycles}"
        );
        let conn = raw(&path);
        let mut per_cycle = conn
            .prepare("SELECT at_unix, count(*) FROM blocks GROUP BY at_unix ORDER BY at_unix")
            .unwrap();
        let per_cycle: Vec<(i64, i64)> = per_cycle
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let expected: Vec<(i64, i64)> = (1..=cycles)
            .map(|n| (n as i64, KILL9_BLOCKS as i64))
            .collect();
        assert_eq!(per_cycle, expected);
        assert_eq!(
            store.counters(ROUTER).unwrap()["blocked"],
            cycles * KILL9_BLOCKS
        );
        let strikes = store.load_strikes(ROUTER).unwrap();
        assert_eq!(strikes.len() as u64, KILL9_STRIKES);
        assert!(strikes.iter().all(|s| u64::from(s.count) == cycles));
        assert_eq!(store.routers().unwrap()[0].last_cycle_unix, cycles as i64);
        let last = store
            .blocks_for(format!("2001:db8::{cycles:x}:0").parse().unwrap())
            .unwrap();
        assert_eq!(last[0].evidence["cycle"], cycles);
        stored = cycles;
    }
    assert!(stored >= ROUNDS / 5 * 32);
}

/// The permission bits of a file or directory.
fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The uid and gid the probe runs as when the tests run as root: no account has them.
const THROWAWAY_ID: u32 = 61_234;

/// The probe, copied into `dir` (so a throwaway uid can run it wherever the build tree is).
fn probe(dir: &Path) -> PathBuf {
    let to = dir.join("rosguard-store-probe");
    std::fs::copy(env!("CARGO_BIN_EXE_rosguard-store-probe"), &to).unwrap();
    chmod(&to, 0o755);
    to
}

/// Whether the tests run as root: a file this process creates is owned by its effective uid.
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    tempfile::tempfile().unwrap().metadata().unwrap().uid() == 0
}

/// A command that runs without write permission on what the test made read-only: as a
/// throwaway uid when the test runs as root, else as the test's own user.
fn as_reader(program: &Path) -> Command {
    let mut command = Command::new(program);
    if running_as_root() {
        command.uid(THROWAWAY_ID).gid(THROWAWAY_ID);
    }
    command.stdin(Stdio::null());
    command
}

/// The probe's `read` output, or its error on stderr.
fn probe_read(probe: &Path, db: &Path) -> Result<String, String> {
    let out = as_reader(probe)
        .arg("read")
        .arg(db)
        .arg(ROUTER)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The names in a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A temporary directory every user can enter (the probe may run as another uid), holding
/// `state/`; gives the write bits back on drop so it can be removed.
struct Shared {
    dir: tempfile::TempDir,
}

impl Shared {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        Shared { dir }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn db(&self) -> PathBuf {
        self.state().join("rosguard.db")
    }

    /// Takes the write bits away from the state directory and every file in it, and gives
    /// everyone read access: what a reader with read permission only gets.
    fn make_read_only(&self) {
        for name in names(&self.state()) {
            chmod(&self.state().join(name), 0o444);
        }
        chmod(&self.state(), 0o555);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let state = self.state();
        if state.is_dir() {
            chmod(&state, 0o755);
        }
    }
}

mod modes {
    use super::*;

    /// The block history is nobody else's business: a directory the store creates is 0700,
    /// the database and its -wal and -shm 0600, whatever the umask.
    #[test]
    fn a_new_state_directory_is_private_and_so_are_the_database_and_its_companions() {
        let (_dir, path) = temp_db();
        let mut store = Store::open(&path).unwrap();
        store
            .record_cycle(&cycle(ROUTER, 100, vec![block("192.0.2.1", 600, 0)]))
            .unwrap();
        let state = path.parent().unwrap();
        assert_eq!(mode(state), 0o700, "state directory");
        assert_eq!(mode(&path), 0o600, "database");
        for companion in ["rosguard.db-wal", "rosguard.db-shm"] {
            let file = state.join(companion);
            assert!(file.exists(), "{companion} exists while the store is open");
            assert_eq!(mode(&file), 0o600, "{companion}");
        }
    }

    /// What exists already keeps its mode: an operator may have opened it up on purpose.
    #[test]
    fn an_existing_directory_and_database_keep_their_modes() {
        let (_dir, path) = temp_db();
        let state = path.parent().unwrap();
        std::fs::create_dir_all(state).unwrap();
        chmod(state, 0o750);
        drop(Store::open(&path).unwrap());
        chmod(&path, 0o640);
        drop(Store::open(&path).unwrap());
        assert_eq!((mode(state), mode(&path)), (0o750, 0o640));
    }
}

mod read_only {
    use super::*;

    fn written(path: &Path, cycles: i64) -> Store {
        let mut store = Store::open(path).unwrap();
        for at in 1..=cycles {
            store
                .record_cycle(&cycle(
                    ROUTER,
                    at,
                    vec![block(&format!("192.0.2.{at}"), 600, 0)],
                ))
                .unwrap();
        }
        store
    }

    #[test]
    fn a_missing_database_is_a_clear_error_and_nothing_is_created() {
        let (dir, path) = temp_db();
        let err = Store::open_read_only(&path).unwrap_err();
        assert!(
            matches!(&err, StoreError::NotFound { path: p } if *p == path),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("has not run yet"), "{message}");
        assert!(message.contains("state_dir"), "{message}");
        assert!(
            !path.parent().unwrap().exists(),
            "the directory was not created"
        );
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn it_reads_what_the_writer_commits_and_cannot_write() {
        let (_dir, path) = temp_db();
        let mut writer = written(&path, 1);
        let reader = Store::open_read_only(&path).unwrap();
        assert_eq!(reader.counters(ROUTER).unwrap()["cycles"], 1);
        writer
            .record_cycle(&cycle(ROUTER, 2, vec![block("192.0.2.2", 600, 0)]))
            .unwrap();
        assert_eq!(reader.counters(ROUTER).unwrap()["cycles"], 2);
        assert_eq!(reader.active_blocks(ROUTER, 2).unwrap().len(), 2);

        let mut reader = reader;
        let err = reader.record_cycle(&cycle(ROUTER, 3, vec![])).unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
        assert_eq!(writer.counters(ROUTER).unwrap()["cycles"], 2);
    }

    #[test]
    fn an_empty_file_is_outdated_and_left_as_it_is() {
        let (_dir, path) = temp_db();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"").unwrap();
        let err = Store::open_read_only(&path).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Outdated {
                    found: 0,
                    supported: SCHEMA,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("start the daemon once"), "{err}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn a_file_from_a_newer_rosguard_or_another_program_is_refused() {
        let (_dir, path) = temp_db();
        drop(written(&path, 1));
        raw(&path).pragma_update(None, "user_version", 7).unwrap();
        let err = Store::open_read_only(&path).unwrap_err();
        assert!(
            matches!(err, StoreError::Migration { found: 7, .. }),
            "{err:?}"
        );

        let other = path.with_file_name("photos.db");
        raw(&other)
            .execute_batch("CREATE TABLE photos (id INTEGER PRIMARY KEY);")
            .unwrap();
        let err = Store::open_read_only(&other).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    }

    /// While the daemon runs, a reader with read permission only (no write on the file, its
    /// -wal and -shm, or the directory) sees every committed cycle, including those still
    /// only in the -wal, and creates nothing.
    #[test]
    fn a_reader_that_cannot_write_reads_a_live_wal_database() {
        let shared = Shared::new();
        let probe = probe(shared.dir.path());
        let writer = written(&shared.db(), 3);
        let wal = shared.state().join("rosguard.db-wal");
        assert!(
            std::fs::metadata(&wal).unwrap().len() > 0,
            "the cycles are in the -wal, not yet in the main file"
        );
        shared.make_read_only();
        let before = names(&shared.state());
        let out = probe_read(&probe, &shared.db()).unwrap();
        assert_eq!(out, "cycles 3\nblocks 3\n");
        assert_eq!(names(&shared.state()), before);
        drop(writer);
    }

    /// With the daemon stopped (no -wal, no -shm) and a directory the reader cannot write, the
    /// -shm cannot be created: the file is read as immutable, and still nothing is created.
    #[test]
    fn a_reader_that_cannot_write_reads_a_closed_database() {
        let shared = Shared::new();
        let probe = probe(shared.dir.path());
        drop(written(&shared.db(), 2));
        assert_eq!(names(&shared.state()), ["rosguard.db"]);
        shared.make_read_only();
        let out = probe_read(&probe, &shared.db()).unwrap();
        assert_eq!(out, "cycles 2\nblocks 2\n");
        assert_eq!(names(&shared.state()), ["rosguard.db"]);
    }

    /// A reader without read permission is told what to do, not to make state_dir writable.
    #[test]
    fn a_reader_without_read_permission_is_told_who_can_read() {
        let shared = Shared::new();
        let probe = probe(shared.dir.path());
        drop(written(&shared.db(), 1));
        chmod(&shared.state(), 0o755);
        chmod(&shared.db(), 0o600);
        if !running_as_root() {
            chmod(&shared.db(), 0o000);
        }
        let err = probe_read(&probe, &shared.db()).unwrap_err();
        assert!(err.contains(&shared.db().display().to_string()), "{err}");
        assert!(err.contains("as the daemon's user or as root"), "{err}");
    }
}

mod lock {
    use super::*;

    #[test]
    fn a_second_acquirer_is_told_which_process_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let lock = StateLock::acquire(&state).unwrap();
        assert_eq!(lock.path(), state.join("rosguard.lock"));
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(lock.path()), 0o600);
        let pid = std::process::id();
        assert_eq!(
            std::fs::read_to_string(lock.path()).unwrap(),
            format!("{pid}\n")
        );

        let err = StateLock::acquire(&state).unwrap_err();
        match &err {
            StoreError::Locked {
                dir,
                lock_file,
                holder,
            } => {
                assert_eq!(dir, &state);
                assert_eq!(lock_file, &state.join("rosguard.lock"));
                assert_eq!(*holder, Some(pid));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        let message = err.to_string();
        assert!(message.contains(&format!("pid {pid}")), "{message}");
        assert!(message.contains(&state.display().to_string()), "{message}");

        drop(lock);
        let again = StateLock::acquire(&state).unwrap();
        drop(again);
    }

    /// The kernel releases the lock of a process that dies, however it dies: a daemon killed
    /// with SIGKILL does not keep the next one from starting.
    #[test]
    fn the_lock_is_released_when_its_holder_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let child = Command::new(env!("CARGO_BIN_EXE_rosguard-store-probe"))
            .arg("lock")
            .arg(&state)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut child = KillOnDrop(child);
        let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
        let line = lines.next().expect("the holder reports").unwrap();
        let child_pid = child.0.id();
        assert_eq!(line, format!("locked {child_pid}"));

        let err = StateLock::acquire(&state).unwrap_err();
        assert!(
            matches!(err, StoreError::Locked { holder: Some(p), .. } if p == child_pid),
            "{err:?}"
        );

        child.0.kill().unwrap();
        child.0.wait().unwrap();
        let lock = StateLock::acquire(&state).unwrap();
        assert_eq!(
            std::fs::read_to_string(lock.path()).unwrap(),
            format!("{}\n", std::process::id())
        );
    }

    /// A holder that ends normally releases it too, and a stale pid is not left behind.
    #[test]
    fn a_holder_that_exits_releases_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_rosguard-store-probe"))
            .arg("lock")
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(lines.next().unwrap().unwrap().starts_with("locked "));
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
        assert_eq!(
            std::fs::read_to_string(dir.path().join(StateLock::FILE_NAME)).unwrap(),
            ""
        );
        drop(StateLock::acquire(dir.path()).unwrap());
    }
}
