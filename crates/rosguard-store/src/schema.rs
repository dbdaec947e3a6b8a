//! The schema: the ordered list of migrations, and the runner that brings a file up to date.
//!
//! The version is SQLite's `PRAGMA user_version`: version N means `MIGRATIONS[..N]` have been
//! applied. Each migration runs in its own `BEGIN IMMEDIATE` transaction together with the
//! version bump, so a crash during an upgrade leaves the file at the previous version, and two
//! processes opening the same file at once do not both apply a step. The file is marked with
//! `PRAGMA application_id` so another program's SQLite database is refused rather than
//! written into.
//!
//! It deliberately does not downgrade (a file from a newer rosguard is refused with
//! [`StoreError::Migration`]) and does not repair damaged files. Migrations are append-only:
//! a released one is never edited, a change is a new entry.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use crate::error::StoreError;

/// `PRAGMA application_id` of a rosguard state file: "RSGD" in ASCII.
pub(crate) const APPLICATION_ID: i32 = 0x5253_4744;

/// The migrations, oldest first. `MIGRATIONS[i]` takes a file from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[V1, V2];

/// Version 1. STRICT tables: SQLite enforces the column types on write, so what is read back
/// has the types the decoder expects unless the file was damaged or edited by hand.
const V1: &str = r#"
-- One row per block rosguard decided on, including dry runs. Kept for `rosguard why`,
-- escalation (earlier blocks of an address) and restore after a router reboot.
CREATE TABLE blocks (
    id           INTEGER PRIMARY KEY,
    router       TEXT    NOT NULL,
    list         TEXT    NOT NULL,
    address      TEXT    NOT NULL,              -- canonical text form (IPv4-mapped IPv6 as IPv4)
    at_unix      INTEGER NOT NULL,              -- when it was decided
    timeout_secs INTEGER NOT NULL CHECK (timeout_secs >= 0),
    expires_unix INTEGER NOT NULL,              -- at_unix + timeout_secs, saturating
    level        INTEGER NOT NULL CHECK (level >= 0),
    comment      TEXT    NOT NULL,              -- the comment put on the address-list entry
    evidence     TEXT    NOT NULL CHECK (json_valid(evidence)),
    dry_run      INTEGER NOT NULL CHECK (dry_run IN (0, 1)),
    lifted_unix  INTEGER                        -- set by `rosguard unblock` / `clear`
) STRICT;
-- `why ADDR` (all routers) and escalation (one router, since a time).
CREATE INDEX blocks_by_address ON blocks (address, router, at_unix);
-- Restore: the latest block of each (list, address) of a router.
CREATE INDEX blocks_by_entry ON blocks (router, list, address, at_unix);
-- Restore: only blocks that have not expired yet are looked at.
CREATE INDEX blocks_by_expiry ON blocks (router, expires_unix);
-- Prune.
CREATE INDEX blocks_by_time ON blocks (at_unix);

-- Cumulative per-router counters for `rosguard stats`.
CREATE TABLE counters (
    router TEXT    NOT NULL,
    name   TEXT    NOT NULL,
    value  INTEGER NOT NULL CHECK (value >= 0),
    PRIMARY KEY (router, name)
) STRICT, WITHOUT ROWID;

-- Observation state that spans polls, replaced as a whole by each cycle.
CREATE TABLE strikes (
    router     TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    count      INTEGER NOT NULL CHECK (count >= 0),
    first_unix INTEGER NOT NULL,
    last_unix  INTEGER NOT NULL,
    PRIMARY KEY (router, key)
) STRICT, WITHOUT ROWID;

-- The routers that have recorded a cycle, and when their last one was committed.
CREATE TABLE routers (
    router          TEXT    NOT NULL PRIMARY KEY,
    last_cycle_unix INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
"#;

const V2: &str = r#"
-- When a block was last put on the router (decided, restored, adopted): a missing entry placed
-- after the router's last boot was removed by hand. NULL = at_unix.
ALTER TABLE blocks ADD COLUMN placed_unix INTEGER;
-- Why a block was lifted: unblock, clear, allow, removed-on-router.
ALTER TABLE blocks ADD COLUMN lift_reason TEXT;

-- Operator unblocks: re-blocking the address on the router is suppressed until until_unix.
CREATE TABLE unblocks (
    router     TEXT    NOT NULL,
    address    TEXT    NOT NULL,
    at_unix    INTEGER NOT NULL,
    until_unix INTEGER NOT NULL,
    reason     TEXT    NOT NULL,
    PRIMARY KEY (router, address)
) STRICT, WITHOUT ROWID;

-- What the running daemon says about itself and each router (`rosguard status`); the key is
-- a router name, or '' for the daemon.
CREATE TABLE status (
    key          TEXT    NOT NULL PRIMARY KEY,
    json         TEXT    NOT NULL CHECK (json_valid(json)),
    updated_unix INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
"#;

/// Reads the file's version, refusing files that are not rosguard's.
pub(crate) fn checked_version(conn: &Connection, path: &Path) -> Result<u32, StoreError> {
    let sqlite = |error| StoreError::Sqlite {
        path: path.to_path_buf(),
        error,
    };
    let corrupt = |detail: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let app_id: i64 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(sqlite)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sqlite)?;
    let version = u32::try_from(version)
        .map_err(|_| corrupt(format!("schema version {version} is out of range")))?;
    if app_id != i64::from(APPLICATION_ID) {
        if app_id != 0 {
            return Err(corrupt(format!(
                "application id {app_id:#x} is another program's"
            )));
        }
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(sqlite)?;
        if version != 0 || tables != 0 {
            return Err(corrupt(
                "it holds tables that rosguard did not create".into(),
            ));
        }
    }
    Ok(version)
}

/// Applies the migrations the file lacks, one transaction each. Returns the final version.
pub(crate) fn migrate(
    conn: &mut Connection,
    path: &Path,
    migrations: &[&str],
) -> Result<u32, StoreError> {
    let supported = u32::try_from(migrations.len()).unwrap_or(u32::MAX);
    let sqlite = |error| StoreError::Sqlite {
        path: path.to_path_buf(),
        error,
    };
    loop {
        // IMMEDIATE: take the write lock before reading the version, so a second process
        // opening the file at the same moment waits and then sees the bumped version.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite)?;
        let version = checked_version(&tx, path)?;
        if version > supported {
            return Err(StoreError::Migration {
                path: path.to_path_buf(),
                found: version,
                supported,
            });
        }
        let Some(step) = migrations.get(version as usize) else {
            tx.commit().map_err(sqlite)?;
            return Ok(version);
        };
        tx.execute_batch(step).map_err(sqlite)?;
        if version == 0 {
            tx.pragma_update(None, "application_id", APPLICATION_ID)
                .map_err(sqlite)?;
        }
        tx.pragma_update(None, "user_version", version + 1)
            .map_err(sqlite)?;
        tx.commit().map_err(sqlite)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(conn: &Connection) -> i64 {
        conn.pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn applies_each_step_once_and_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let mut conn = Connection::open(&path).unwrap();
        let v1 = "CREATE TABLE t (x INTEGER NOT NULL) STRICT;";
        assert_eq!(migrate(&mut conn, &path, &[v1]).unwrap(), 1);
        conn.execute("INSERT INTO t VALUES (7)", []).unwrap();
        drop(conn);

        let mut conn = Connection::open(&path).unwrap();
        let v2 = "ALTER TABLE t ADD COLUMN y INTEGER NOT NULL DEFAULT 3;";
        let v3 = "CREATE INDEX t_by_x ON t (x);";
        assert_eq!(migrate(&mut conn, &path, &[v1, v2, v3]).unwrap(), 3);
        assert_eq!(version(&conn), 3);
        let row: (i64, i64) = conn
            .query_row("SELECT x, y FROM t", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!(row, (7, 3));
        // Idempotent: nothing left to apply.
        assert_eq!(migrate(&mut conn, &path, &[v1, v2, v3]).unwrap(), 3);
    }

    #[test]
    fn a_failing_step_rolls_back_and_leaves_the_previous_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let mut conn = Connection::open(&path).unwrap();
        let v1 = "CREATE TABLE t (x INTEGER NOT NULL) STRICT;";
        // Its first statement succeeds, its second fails: neither may stay.
        let bad = "CREATE TABLE u (y INTEGER); INSERT INTO no_such_table VALUES (1);";
        let err = migrate(&mut conn, &path, &[v1, bad]).unwrap_err();
        assert!(matches!(err, StoreError::Sqlite { .. }), "{err}");
        assert_eq!(version(&conn), 1);
        let u: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'u'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(u, 0);
    }

    #[test]
    fn refuses_a_newer_file_and_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let mut conn = Connection::open(&path).unwrap();
        migrate(
            &mut conn,
            &path,
            &["CREATE TABLE t (x INTEGER);", "SELECT 1;"],
        )
        .unwrap();
        let err = migrate(&mut conn, &path, &["CREATE TABLE t (x INTEGER);"]).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Migration {
                    found: 2,
                    supported: 1,
                    ..
                }
            ),
            "{err}"
        );

        let other = dir.path().join("other.db");
        let mut conn = Connection::open(&other).unwrap();
        conn.execute_batch("CREATE TABLE theirs (x);").unwrap();
        let err = migrate(&mut conn, &other, MIGRATIONS).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");

        let other = dir.path().join("other2.db");
        let mut conn = Connection::open(&other).unwrap();
        conn.pragma_update(None, "application_id", 42).unwrap();
        let err = migrate(&mut conn, &other, MIGRATIONS).unwrap_err();
        assert!(err.to_string().contains("0x2a"), "{err}");
    }
}
