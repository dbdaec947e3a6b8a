//! The state store as the binary uses it: where it is, how each command opens it, and the
//! adapters between the store's plain rows and the core's types ([`StoreHistory`], the
//! tracker's persisted facts, evidence).
//!
//! One truth for the daemon and the CLI: the state directory is `--state`/`ROSGUARD_STATE`,
//! else `daemon.state_dir`, else systemd's `$STATE_DIRECTORY`, else `/var/lib/rosguard`,
//! whoever runs the command. The daemon opens it for writing and falls back to memory (with a
//! loud error) rather than stop protecting; commands that record an operator's decision
//! (`unblock`, `block`, `allow`, `clear`, `once`) must be able to write it or fail; commands
//! that only read it (`why`, `status`, `stats`) open it read-only and never create it.
//!
//! It deliberately makes no decision.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Result};
use rosguard_core::history::{ActiveRecord, History, HistoryError};
use rosguard_core::state::TrackerEntry;
use rosguard_store::{Store, Strike};

use crate::config::Config;

/// The name of the database file in the state directory.
pub const DB_FILE: &str = "rosguard.db";

/// A store shared by the router tasks (each cycle locks it briefly).
pub type SharedStore = Arc<Mutex<Store>>;

/// The wall clock as time since the UNIX epoch: the one place the binary reads it for
/// decisions.
pub fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Seconds, saturating into the store's `i64`.
pub fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// The store's seconds back as a duration (negative = the epoch).
pub fn from_secs(s: i64) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

/// The state directory for `cfg`, `--state` first.
pub fn state_dir(cfg: &Config, state: Option<&Path>) -> PathBuf {
    state.map_or_else(|| cfg.daemon.resolved_state_dir(), Path::to_path_buf)
}

/// Opens the store for a command that must record what it does.
pub fn open_writer(dir: &Path) -> Result<Store> {
    Store::open(&dir.join(DB_FILE)).map_err(|e| {
        anyhow!("{e}; run as the user the service runs as (or root), or choose the directory with --state DIR or daemon.state_dir")
    })
}

/// Opens the store for a command that only reads it; never creates anything.
pub fn open_reader(dir: &Path) -> Result<Store> {
    Store::open_read_only(&dir.join(DB_FILE)).map_err(|e| anyhow!("{e}"))
}

/// Opens the daemon's store; when it cannot be opened, says so loudly and keeps the state in
/// memory: protecting the network matters more than remembering that it did.
pub fn open_daemon(dir: &Path) -> Result<SharedStore> {
    let store = match open_writer(dir) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(
                "{e:#}; running without persistent state: history, escalation and restores after a restart are lost"
            );
            Store::open_in_memory()?
        }
    };
    Ok(Arc::new(Mutex::new(store)))
}

/// The one-writer lock of a state directory, for `run` and `once`: a second daemon on the same
/// state would double the hourly cap. `Ok(None)`: the directory cannot be made at all (the
/// store then falls back to memory, and there is nothing to share).
pub fn lock(dir: &Path) -> Result<Option<rosguard_store::StateLock>> {
    match rosguard_store::StateLock::acquire(dir) {
        Ok(l) => Ok(Some(l)),
        Err(e @ rosguard_store::StoreError::Locked { .. }) => Err(anyhow!(
            "{e}; only one rosguard may write a state directory (stop the other, use `once --dry-run`, or give this one its own --state DIR)"
        )),
        Err(e) => {
            tracing::error!("{e}");
            Ok(None)
        }
    }
}

/// A store in memory (`rosguard demo`, tests).
pub fn memory() -> SharedStore {
    Arc::new(Mutex::new(
        Store::open_in_memory().expect("an in-memory SQLite database opens"),
    ))
}

/// One router's history, answered from the store.
pub struct StoreHistory<'a> {
    pub store: &'a Store,
    pub router: &'a str,
    pub list: &'a str,
}

fn history_error(e: rosguard_store::StoreError) -> HistoryError {
    HistoryError(e.to_string())
}

impl History for StoreHistory<'_> {
    fn previous_blocks(
        &self,
        addr: IpAddr,
        since: Duration,
    ) -> Result<Vec<Duration>, HistoryError> {
        Ok(self
            .store
            .previous_blocks(self.router, addr, secs(since))
            .map_err(history_error)?
            .into_iter()
            .map(from_secs)
            .collect())
    }

    fn active_blocks(&self, now: Duration) -> Result<Vec<ActiveRecord>, HistoryError> {
        Ok(self
            .store
            .active_blocks(self.router, secs(now))
            .map_err(history_error)?
            .into_iter()
            .filter(|a| a.list == self.list)
            .map(|a| ActiveRecord {
                address: a.address,
                placed: from_secs(a.placed_unix),
                expires: from_secs(a.expires_unix),
                comment: a.comment,
                level: a.level,
            })
            .collect())
    }

    fn unblocked(&self, now: Duration) -> Result<HashMap<IpAddr, Duration>, HistoryError> {
        Ok(self
            .store
            .unblocks(self.router, secs(now))
            .map_err(history_error)?
            .into_iter()
            .map(|u| (u.address.to_canonical(), from_secs(u.until_unix)))
            .collect())
    }
}

/// A tracker fact as a store row: `streak <conn>` or `hit <target> <conn>`.
pub fn entry_to_strike(e: &TrackerEntry) -> Strike {
    match *e {
        TrackerEntry::Streak { key, polls, at } => Strike {
            key: format!("streak {key}"),
            count: polls,
            first_unix: secs(at),
            last_unix: secs(at),
        },
        TrackerEntry::Hit { target, key, at } => Strike {
            key: format!("hit {target} {key}"),
            count: 1,
            first_unix: secs(at),
            last_unix: secs(at),
        },
    }
}

/// A store row back as a tracker fact; rows that do not parse are dropped.
pub fn strike_to_entry(s: &Strike) -> Option<TrackerEntry> {
    let at = Duration::from_secs(u64::try_from(s.last_unix).ok()?);
    if let Some(key) = s.key.strip_prefix("streak ") {
        return Some(TrackerEntry::Streak {
            key: key.parse().ok()?,
            polls: s.count,
            at,
        });
    }
    let (target, key) = s.key.strip_prefix("hit ")?.split_once(' ')?;
    Some(TrackerEntry::Hit {
        target: target.parse().ok()?,
        key: key.parse().ok()?,
        at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_facts_round_trip_through_store_rows() {
        let key = "ipv6 17 [2001:db8::1]:5353 [2001:db8::2]:443"
            .parse()
            .unwrap();
        let at = Duration::from_secs(1_800_000_000);
        for e in [
            TrackerEntry::Streak { key, polls: 2, at },
            TrackerEntry::Hit {
                target: "2001:db8::2".parse().unwrap(),
                key,
                at,
            },
        ] {
            assert_eq!(strike_to_entry(&entry_to_strike(&e)), Some(e));
        }
        let junk = Strike {
            key: "hit nonsense".into(),
            count: 1,
            first_unix: 0,
            last_unix: 0,
        };
        assert_eq!(strike_to_entry(&junk), None);
    }

    #[test]
    fn readers_never_create_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let e = format!("{:#}", open_reader(dir.path()).unwrap_err());
        assert!(e.contains("has not run yet"), "{e}");
        assert!(!dir.path().join(DB_FILE).exists());
        drop(open_writer(dir.path()).unwrap());
        open_reader(dir.path()).unwrap();
    }
}
