//! [`Store`]: an open state database and the queries rosguard needs of it.
//!
//! Writes: [`Store::record_cycle`] (one transaction per detection cycle),
//! [`Store::mark_unblocked`] / [`Store::mark_list_unblocked`] (operator lifts) and
//! [`Store::prune`]. Everything else only reads.
//!
//! It deliberately reads no clock (every time is passed in, unix seconds), computes no policy
//! (it stores the level and timeout it is given and hands back earlier block times; the
//! escalation arithmetic is the core's) and is synchronous: the daemon calls it from a
//! blocking thread, never from an async task.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OpenFlags, Params, Row, TransactionBehavior};

use crate::error::StoreError;
use crate::rows::{
    self, address_text, ActiveBlock, BlockRow, CycleRecord, RouterSeen, StatusRow, Strike,
    UnblockRow,
};
use crate::schema::{checked_version, migrate, MIGRATIONS};
use crate::state_dir::{create_private_dir, create_private_file};

/// How long a write waits for another process's lock (e.g. `rosguard unblock` while the daemon
/// commits a cycle) before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The most `PRAGMA integrity_check` messages put into a [`StoreError::Corrupt`].
const MAX_INTEGRITY_MESSAGES: usize = 5;

/// An open rosguard state database.
///
/// `Send` but not `Sync`: own it from one thread (or behind a mutex).
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    /// For error messages; `:memory:` for an in-memory store.
    path: PathBuf,
    /// Rows skipped by reads because they did not decode, since open.
    skipped: Cell<u64>,
}

impl Store {
    /// Opens (creating it and its parent directory if missing) the state database at `path`
    /// and brings its schema up to date. A directory it creates is 0700 and a database file
    /// 0600 (SQLite gives the `-wal` and `-shm` the file's mode); existing ones keep theirs.
    ///
    /// Fails with [`StoreError::Migration`] for a file written by a newer rosguard and with
    /// [`StoreError::Corrupt`] for a file that is some other program's database.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_with(path, MIGRATIONS)
    }

    /// Opens with a given migration list (the real one, or a test's).
    pub(crate) fn open_with(path: &Path, migrations: &[&str]) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir)?;
        }
        create_private_file(path)?;
        let sqlite = |error| StoreError::Sqlite {
            path: path.to_path_buf(),
            error,
        };
        let mut conn = Connection::open(path).map_err(sqlite)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
        // Migrate first: it refuses another program's file before anything is written to it.
        migrate(&mut conn, path, migrations)?;
        // WAL: readers (`rosguard why`, `stats`) never block the daemon's writes, and a
        // commit is one append to the -wal file. On filesystems without shared memory SQLite
        // keeps its rollback journal instead, which is just as crash-safe, so the returned
        // mode is not insisted on.
        let _mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(sqlite)?;
        // synchronous=NORMAL: in WAL mode a commit is complete once it is in the -wal file,
        // and the file is fsynced at checkpoints, not at every commit. A killed process
        // (crash, SIGKILL, OOM) therefore loses nothing committed: the OS still writes its
        // page cache out. Only an OS crash or power cut can roll back the last few cycles,
        // never corrupt the file; those blocks are on the router with their timeouts anyway.
        // FULL would add an fsync per cycle for that case alone.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sqlite)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
            skipped: Cell::new(0),
        })
    }

    /// Opens an existing state database for reading only (`rosguard why`, `stats`, a
    /// monitoring job), never creating, migrating or writing anything: not the file, not its
    /// directory, not the `-wal`/`-shm` companions where they are missing. The write methods
    /// of the store it returns fail (SQLite's "attempt to write a readonly database").
    ///
    /// It works without write permission on the file or its directory, as another user with
    /// read permission: while the daemon runs, SQLite reads the daemon's `-wal` and `-shm`
    /// (which must then be readable too) and sees every committed cycle; when no `-wal` is
    /// there (the daemon closed the file cleanly) and the `-shm` cannot be created, the file
    /// is opened as immutable, which is exact as long as no writer starts meanwhile.
    ///
    /// Fails with [`StoreError::NotFound`] when there is no file at `path`,
    /// [`StoreError::Outdated`] for a file with an older schema (only a writer upgrades),
    /// [`StoreError::Migration`] for one from a newer rosguard and [`StoreError::Corrupt`] for
    /// another program's database.
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => {
                return Err(StoreError::Io {
                    path: path.to_path_buf(),
                    error: std::io::Error::other("not a regular file"),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound {
                    path: path.to_path_buf(),
                })
            }
            Err(error) => {
                return Err(StoreError::Unreadable {
                    path: path.to_path_buf(),
                    reason: error.to_string(),
                })
            }
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let unreadable = |error: rusqlite::Error| {
            if cannot_open_companions(&error) {
                StoreError::Unreadable {
                    path: path.to_path_buf(),
                    reason: error.to_string(),
                }
            } else {
                sqlite_error(path, error)
            }
        };
        let open = |uri: &str| -> Result<Connection, StoreError> {
            let conn = Connection::open_with_flags(uri, flags).map_err(unreadable)?;
            conn.busy_timeout(BUSY_TIMEOUT).map_err(unreadable)?;
            Ok(conn)
        };
        let uri = file_uri(path);
        let mut conn = open(&uri)?;
        let version = match checked_version(&conn, path) {
            // SQLite opens lazily: the first read is where a -shm that cannot be created (a
            // directory this user cannot write) shows. With no -wal there is nothing beyond
            // the main file to read, so reading it as immutable (no -shm, no locks) is exact.
            Err(StoreError::Sqlite { error, .. })
                if cannot_open_companions(&error) && !wal_path(path).exists() =>
            {
                conn = open(&format!("{uri}?immutable=1"))?;
                match checked_version(&conn, path) {
                    Err(StoreError::Sqlite { error, .. }) => return Err(unreadable(error)),
                    other => other?,
                }
            }
            Err(StoreError::Sqlite { error, .. }) => return Err(unreadable(error)),
            other => other?,
        };
        let supported = u32::try_from(MIGRATIONS.len()).unwrap_or(u32::MAX);
        if version > supported {
            return Err(StoreError::Migration {
                path: path.to_path_buf(),
                found: version,
                supported,
            });
        }
        if version < supported {
            return Err(StoreError::Outdated {
                path: path.to_path_buf(),
                found: version,
                supported,
            });
        }
        Ok(Store {
            conn,
            path: path.to_path_buf(),
            skipped: Cell::new(0),
        })
    }

    /// A store that lives in memory and is gone when dropped: for tests and `rosguard demo`.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let path = PathBuf::from(":memory:");
        let mut conn = Connection::open_in_memory().map_err(|error| StoreError::Sqlite {
            path: path.clone(),
            error,
        })?;
        migrate(&mut conn, &path, MIGRATIONS)?;
        Ok(Store {
            conn,
            path,
            skipped: Cell::new(0),
        })
    }

    /// The file this store was opened from (`:memory:` for an in-memory one).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's schema version (after open, the newest this build knows).
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| self.sqlite(e))?;
        u32::try_from(version).map_err(|_| self.corrupt(format!("schema version {version}")))
    }

    /// Rows that reads have skipped since open because they did not decode (a damaged or
    /// hand-edited file). The daemon logs it when it grows.
    pub fn skipped_rows(&self) -> u64 {
        self.skipped.get()
    }

    /// Writes one detection cycle in one transaction: its blocks, its counter increments,
    /// its observation state and the router's last-cycle time. Either all of it is stored or,
    /// on an error or a kill at any point, none of it.
    pub fn record_cycle(&mut self, cycle: &CycleRecord) -> Result<(), StoreError> {
        record_cycle(&mut self.conn, cycle).map_err(|e| sqlite_error(&self.path, e))
    }

    /// Every stored block of `address` on every router, dry runs and lifted ones included,
    /// newest first: the history `rosguard why` tells.
    pub fn blocks_for(&self, address: IpAddr) -> Result<Vec<BlockRow>, StoreError> {
        let sql = format!(
            "SELECT {} FROM blocks WHERE address = ?1 ORDER BY at_unix DESC, id DESC",
            rows::BLOCK_COLUMNS
        );
        self.collect(&sql, [address_text(address)], rows::block_row)
    }

    /// When `address` was blocked on `router` at or after `since_unix`, oldest first, for
    /// escalation. Dry runs do not count; blocks lifted by an operator do (they happened).
    pub fn previous_blocks(
        &self,
        router: &str,
        address: IpAddr,
        since_unix: i64,
    ) -> Result<Vec<i64>, StoreError> {
        self.collect(
            "SELECT at_unix FROM blocks \
             WHERE address = ?2 AND router = ?1 AND dry_run = 0 AND at_unix >= ?3 \
             ORDER BY at_unix, id",
            params![router, address_text(address), since_unix],
            rows::time,
        )
    }

    /// What should be on `router`'s lists at `now_unix`: for each (list, address), its latest
    /// non-dry-run block, if that has not expired and was not lifted. Sorted by list, then
    /// address text. After a router reboot the daemon re-adds each with the remaining time.
    pub fn active_blocks(
        &self,
        router: &str,
        now_unix: i64,
    ) -> Result<Vec<ActiveBlock>, StoreError> {
        let sql = format!(
            "SELECT {} FROM blocks AS b \
             WHERE b.router = ?1 AND b.expires_unix > ?2 AND b.dry_run = 0 \
               AND b.lifted_unix IS NULL \
               AND b.id = (SELECT l.id FROM blocks AS l \
                           WHERE l.router = b.router AND l.list = b.list \
                             AND l.address = b.address AND l.dry_run = 0 \
                           ORDER BY l.at_unix DESC, l.id DESC LIMIT 1) \
             ORDER BY b.list, b.address",
            rows::ACTIVE_COLUMNS
        );
        self.collect(&sql, params![router, now_unix], rows::active_block)
    }

    /// Lifts the blocks of `address` on `router`'s `list` that are still running at `at_unix`
    /// (`rosguard unblock`), so they are not restored. Returns how many were lifted.
    pub fn mark_unblocked(
        &mut self,
        router: &str,
        list: &str,
        address: IpAddr,
        at_unix: i64,
    ) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "UPDATE blocks SET lifted_unix = ?4, lift_reason = 'unblock' \
                 WHERE router = ?1 AND list = ?2 AND address = ?3 \
                   AND lifted_unix IS NULL AND dry_run = 0 AND expires_unix > ?4",
                params![router, list, address_text(address), at_unix],
            )
            .map_err(|e| self.sqlite(e))
    }

    /// An operator unblock: lifts the running blocks of `address` on `router`'s `list` (as
    /// [`Store::mark_unblocked`], with `reason`) and suppresses re-blocking it there until
    /// `until_unix`, in one transaction. Returns how many blocks were lifted.
    pub fn unblock(
        &mut self,
        router: &str,
        list: &str,
        address: IpAddr,
        at_unix: i64,
        until_unix: i64,
        reason: &str,
    ) -> Result<usize, StoreError> {
        let run = |conn: &mut Connection| -> rusqlite::Result<usize> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE blocks SET lifted_unix = ?4, lift_reason = ?5 \
                 WHERE router = ?1 AND list = ?2 AND address = ?3 \
                   AND lifted_unix IS NULL AND dry_run = 0 AND expires_unix > ?4",
                params![router, list, address_text(address), at_unix, reason],
            )?;
            tx.execute(
                "INSERT INTO unblocks (router, address, at_unix, until_unix, reason) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (router, address) DO UPDATE SET at_unix = excluded.at_unix, \
                   until_unix = excluded.until_unix, reason = excluded.reason",
                params![router, address_text(address), at_unix, until_unix, reason],
            )?;
            tx.commit()?;
            Ok(n)
        };
        run(&mut self.conn).map_err(|e| sqlite_error(&self.path, e))
    }

    /// The unblocks of `router` still suppressing at `now_unix`.
    pub fn unblocks(&self, router: &str, now_unix: i64) -> Result<Vec<UnblockRow>, StoreError> {
        self.collect(
            "SELECT router, address, at_unix, until_unix, reason FROM unblocks \
             WHERE router = ?1 AND until_unix > ?2 ORDER BY address",
            params![router, now_unix],
            rows::unblock,
        )
    }

    /// Every unblock of `address`, on any router, newest first (`rosguard why`).
    pub fn unblocks_for(&self, address: IpAddr) -> Result<Vec<UnblockRow>, StoreError> {
        self.collect(
            "SELECT router, address, at_unix, until_unix, reason FROM unblocks \
             WHERE address = ?1 ORDER BY at_unix DESC",
            [address_text(address)],
            rows::unblock,
        )
    }

    /// Ends a suppression early (`rosguard block` of an unblocked address).
    pub fn end_unblock(&mut self, router: &str, address: IpAddr) -> Result<(), StoreError> {
        self.conn
            .execute(
                "DELETE FROM unblocks WHERE router = ?1 AND address = ?2",
                params![router, address_text(address)],
            )
            .map(|_| ())
            .map_err(|e| self.sqlite(e))
    }

    /// Writes what the daemon says about itself (`key = ""`) or a router.
    pub fn set_status(
        &mut self,
        key: &str,
        json: &serde_json::Value,
        at_unix: i64,
    ) -> Result<(), StoreError> {
        let text = json.to_string();
        self.conn
            .execute(
                "INSERT INTO status (key, json, updated_unix) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (key) DO UPDATE SET json = excluded.json, \
                   updated_unix = excluded.updated_unix",
                params![key, text, at_unix],
            )
            .map(|_| ())
            .map_err(|e| self.sqlite(e))
    }

    /// Every status the daemon wrote, by key.
    pub fn statuses(&self) -> Result<Vec<StatusRow>, StoreError> {
        self.collect(
            "SELECT key, json, updated_unix FROM status ORDER BY key",
            [],
            rows::status,
        )
    }

    /// Lifts every block on `router`'s `list` still running at `at_unix` (`rosguard clear`).
    /// Returns how many were lifted.
    pub fn mark_list_unblocked(
        &mut self,
        router: &str,
        list: &str,
        at_unix: i64,
    ) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "UPDATE blocks SET lifted_unix = ?3, lift_reason = 'clear' \
                 WHERE router = ?1 AND list = ?2 \
                   AND lifted_unix IS NULL AND dry_run = 0 AND expires_unix > ?3",
                params![router, list, at_unix],
            )
            .map_err(|e| self.sqlite(e))
    }

    /// `router`'s cumulative counters, by name (`cycles`, `scanned`, `blocked`, ...: whatever
    /// names the daemon increments).
    pub fn counters(&self, router: &str) -> Result<BTreeMap<String, u64>, StoreError> {
        let rows = self.collect(
            "SELECT name, value FROM counters WHERE router = ?1",
            [router],
            rows::counter,
        )?;
        Ok(rows.into_iter().collect())
    }

    /// `router`'s observation state as the last cycle that recorded one left it, by key.
    pub fn load_strikes(&self, router: &str) -> Result<Vec<Strike>, StoreError> {
        self.collect(
            "SELECT key, count, first_unix, last_unix FROM strikes \
             WHERE router = ?1 ORDER BY key",
            [router],
            rows::strike,
        )
    }

    /// The routers that have recorded a cycle, by name, with their last cycle's time.
    pub fn routers(&self) -> Result<Vec<RouterSeen>, StoreError> {
        self.collect(
            "SELECT router, last_cycle_unix FROM routers ORDER BY router",
            [],
            rows::router_seen,
        )
    }

    /// Forgets blocks decided before `older_than_unix` whose timeout also ended before it
    /// (a block still running is kept, so it can be restored). Returns how many were removed.
    pub fn prune(&mut self, older_than_unix: i64) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "DELETE FROM blocks WHERE at_unix < ?1 AND expires_unix < ?1",
                [older_than_unix],
            )
            .map_err(|e| self.sqlite(e))
    }

    /// Runs SQLite's full consistency check (`PRAGMA integrity_check`): `Ok` if the file is
    /// sound, [`StoreError::Corrupt`] with SQLite's first findings if not. Reads every page:
    /// for `rosguard check` and tests, not for every start.
    pub fn integrity_check(&self) -> Result<(), StoreError> {
        let messages = (|| -> rusqlite::Result<Vec<String>> {
            let mut stmt = self.conn.prepare("PRAGMA integrity_check")?;
            let mut rows = stmt.query([])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                if out.len() < MAX_INTEGRITY_MESSAGES {
                    out.push(row.get::<_, String>(0).unwrap_or_else(|e| e.to_string()));
                }
            }
            Ok(out)
        })()
        .map_err(|e| self.sqlite(e))?;
        if messages.len() == 1 && messages[0] == "ok" {
            Ok(())
        } else {
            Err(self.corrupt(messages.join("; ")))
        }
    }

    /// Runs a read, decoding each row with `decode` and skipping (and counting) rows that do
    /// not decode.
    fn collect<T, P: Params>(
        &self,
        sql: &str,
        params: P,
        decode: fn(&Row<'_>) -> Option<T>,
    ) -> Result<Vec<T>, StoreError> {
        let read = || -> rusqlite::Result<Vec<T>> {
            let mut stmt = self.conn.prepare_cached(sql)?;
            let mut rows = stmt.query(params)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                match decode(row) {
                    Some(value) => out.push(value),
                    None => self.skipped.set(self.skipped.get().saturating_add(1)),
                }
            }
            Ok(out)
        };
        read().map_err(|e| self.sqlite(e))
    }

    fn sqlite(&self, error: rusqlite::Error) -> StoreError {
        sqlite_error(&self.path, error)
    }

    fn corrupt(&self, detail: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            detail,
        }
    }
}

/// Whether SQLite failed because it could not open or create the `-shm`/`-wal` companions
/// (or the file itself) for a read-only connection.
fn cannot_open_companions(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::CannotOpen | ErrorCode::ReadOnly | ErrorCode::PermissionDenied)
    )
}

/// The `-wal` file beside a database.
fn wal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// `path` as an SQLite `file:` URI (RFC 3986 percent-encoding of everything but unreserved
/// characters and `/`), so that query parameters can follow it.
fn file_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file:");
    for &byte in path.as_os_str().as_bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            uri.push(char::from(byte));
        } else {
            uri.push_str(&format!("%{byte:02X}"));
        }
    }
    uri
}

fn sqlite_error(path: &Path, error: rusqlite::Error) -> StoreError {
    StoreError::Sqlite {
        path: path.to_path_buf(),
        error,
    }
}

/// A u64 as SQLite's i64, saturating (no timeout or counter gets anywhere near).
fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn record_cycle(conn: &mut Connection, cycle: &CycleRecord) -> rusqlite::Result<()> {
    // IMMEDIATE: take the write lock up front, so a concurrent writer makes this wait
    // (busy_timeout) instead of failing halfway.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO blocks (router, list, address, at_unix, timeout_secs, expires_unix, \
                                 level, comment, evidence, dry_run) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        for block in &cycle.blocks {
            let timeout = saturating_i64(block.timeout_secs);
            let evidence = serde_json::to_string(&block.evidence)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            insert.execute(params![
                cycle.router,
                block.list,
                address_text(block.address),
                cycle.at_unix,
                timeout,
                cycle.at_unix.saturating_add(timeout),
                i64::from(block.level),
                block.comment,
                evidence,
                block.dry_run,
            ])?;
        }

        // The latest live block of each restored entry was placed again now.
        let mut placed = tx.prepare_cached(
            "UPDATE blocks SET placed_unix = ?4 WHERE id = ( \
               SELECT id FROM blocks WHERE router = ?1 AND list = ?2 AND address = ?3 \
                 AND dry_run = 0 AND lifted_unix IS NULL \
               ORDER BY at_unix DESC, id DESC LIMIT 1)",
        )?;
        for (list, address) in &cycle.placed {
            placed.execute(params![
                cycle.router,
                list,
                address_text(*address),
                cycle.at_unix
            ])?;
        }
        let mut lift = tx.prepare_cached(
            "UPDATE blocks SET lifted_unix = ?4, lift_reason = ?5 \
             WHERE router = ?1 AND list = ?2 AND address = ?3 \
               AND lifted_unix IS NULL AND dry_run = 0 AND expires_unix > ?4",
        )?;
        for l in &cycle.lifts {
            lift.execute(params![
                cycle.router,
                l.list,
                address_text(l.address),
                cycle.at_unix,
                l.reason
            ])?;
        }

        let mut bump = tx.prepare_cached(
            "INSERT INTO counters (router, name, value) VALUES (?1, ?2, ?3) \
             ON CONFLICT (router, name) DO UPDATE SET value = \
               CASE WHEN value > 9223372036854775807 - excluded.value \
                    THEN 9223372036854775807 \
                    ELSE value + excluded.value END",
        )?;
        for (name, increment) in &cycle.counters {
            bump.execute(params![cycle.router, name, saturating_i64(*increment)])?;
        }

        if let Some(strikes) = &cycle.strikes {
            tx.execute("DELETE FROM strikes WHERE router = ?1", [&cycle.router])?;
            let mut put = tx.prepare_cached(
                "INSERT INTO strikes (router, key, count, first_unix, last_unix) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (router, key) DO UPDATE SET count = excluded.count, \
                   first_unix = excluded.first_unix, last_unix = excluded.last_unix",
            )?;
            for strike in strikes {
                put.execute(params![
                    cycle.router,
                    strike.key,
                    i64::from(strike.count),
                    strike.first_unix,
                    strike.last_unix,
                ])?;
            }
        }

        tx.execute(
            "INSERT INTO routers (router, last_cycle_unix) VALUES (?1, ?2) \
             ON CONFLICT (router) DO UPDATE SET last_cycle_unix = excluded.last_cycle_unix",
            params![cycle.router, cycle.at_unix],
        )?;
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::NewBlock;

    fn cycle(at: i64, address: &str) -> CycleRecord {
        CycleRecord {
            router: "r1".into(),
            at_unix: at,
            blocks: vec![NewBlock {
                list: "rosguard".into(),
                address: address.parse().unwrap(),
                timeout_secs: 3600,
                level: 0,
                comment: "c".into(),
                evidence: serde_json::json!({"rule": "tls"}),
                dry_run: false,
            }],
            counters: vec![("blocked".into(), 1)],
            strikes: None,
            ..CycleRecord::default()
        }
    }

    /// Opening a file written by an older schema upgrades it and keeps its rows.
    #[test]
    fn open_upgrades_an_older_file_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let mut old = Store::open_with(&path, MIGRATIONS).unwrap();
        old.record_cycle(&cycle(100, "192.0.2.1")).unwrap();
        assert_eq!(old.schema_version().unwrap(), MIGRATIONS.len() as u32);
        drop(old);

        let next = "ALTER TABLE blocks ADD COLUMN note2 TEXT; \
                    CREATE INDEX blocks_by_note ON blocks (note2);";
        let newer: Vec<&str> = MIGRATIONS.iter().copied().chain([next]).collect();
        let store = Store::open_with(&path, &newer).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as u32 + 1);
        let rows = store.blocks_for("192.0.2.1".parse().unwrap()).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].at_unix, 100);
        drop(store);

        // And the build that knows one version less now refuses it.
        let err = Store::open(&path).unwrap_err();
        let (found, supported) = (MIGRATIONS.len() as u32 + 1, MIGRATIONS.len() as u32);
        assert!(
            matches!(err, StoreError::Migration { found: f, supported: s, .. } if f == found && s == supported),
            "{err}"
        );
    }

    #[test]
    fn the_store_can_move_to_a_blocking_thread() {
        fn send<T: Send>() {}
        send::<Store>();
    }
}
