//! The persistent state of rosguard: one SQLite file under `state_dir`.
//!
//! It keeps, per router:
//! - every block decided (router, list, address, when, timeout, escalation level, comment and
//!   the evidence as JSON), for `rosguard why ADDR`, for escalation of repeat offenders and
//!   for restoring the blocks that should still run after a router reboot;
//! - cumulative counters for `rosguard stats`;
//! - the observation state ("strikes") that spans polls, so a restart does not reset it.
//!
//! Durability: each detection cycle is written in one transaction ([`Store::record_cycle`]),
//! in WAL mode, so a crash or SIGKILL at any point loses at most the cycle in progress. The
//! schema is versioned (`PRAGMA user_version`) and migrated forward on open; a file from a
//! newer rosguard is refused rather than misread.
//!
//! On disk: a state directory the store creates is 0700 and the database 0600 (its `-wal` and
//! `-shm` follow the file's mode); existing ones keep theirs. [`Store::open_read_only`] is for
//! readers (`rosguard why`, `stats`): it never creates, migrates or writes anything, says
//! plainly when there is no file yet, and works for a user who may read but not write the
//! file and its directory.
//!
//! One writer: [`StateLock::acquire`] takes an exclusive lock on the state directory that the
//! kernel releases when its holder exits or dies, so a second daemon on the same directory
//! fails at once, naming the process that holds it, instead of doubling the hourly caps.
//!
//! It deliberately does not: read the clock (every time is an `i64` of unix seconds passed
//! in), decide anything (escalation, restore and expiry policy are the core's and the
//! daemon's), touch the network, or depend on the other rosguard crates (its API is plain
//! `IpAddr`, `String`, integers and `serde_json::Value`). It is synchronous: the daemon calls
//! it from a blocking thread.
//!
//! ```
//! use rosguard_store::{CycleRecord, NewBlock, Store};
//!
//! let mut store = Store::open_in_memory()?;
//! store.record_cycle(&CycleRecord {
//!     router: "edge".into(),
//!     at_unix: 1_700_000_000,
//!     blocks: vec![NewBlock {
//!         list: "rosguard".into(),
//!         address: "203.0.113.9".parse().unwrap(),
//!         timeout_secs: 86_400,
//!         level: 0,
//!         comment: "rosguard: tls-handshake".into(),
//!         evidence: serde_json::json!({"rule": "tls-handshake", "orig_packets": 40}),
//!         dry_run: false,
//!     }],
//!     counters: vec![("cycles".into(), 1), ("blocked".into(), 1)],
//!     strikes: Some(vec![]),
//!     ..CycleRecord::default()
//! })?;
//! let active = store.active_blocks("edge", 1_700_000_060)?;
//! assert_eq!(active[0].expires_unix, 1_700_086_400);
//! # Ok::<(), rosguard_store::StoreError>(())
//! ```

mod error;
mod rows;
mod schema;
mod state_dir;
mod store;

pub use error::StoreError;
pub use rows::{
    ActiveBlock, BlockRow, CycleRecord, Lifted, NewBlock, RouterSeen, StatusRow, Strike, UnblockRow,
};
pub use state_dir::StateLock;
pub use store::Store;
