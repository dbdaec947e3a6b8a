//! The records the store takes and gives back, and how a row read from the file becomes one.
//!
//! Decoding is defensive: a row whose address does not parse, whose evidence is not JSON or
//! whose numbers are out of range is skipped (and counted by [`Store::skipped_rows`]), never
//! a panic and never an error that hides the good rows.
//!
//! These types deliberately know nothing of rosguard's domain types (connections, rules,
//! config): they are plain values, so this crate builds on its own and the daemon maps at the
//! edge.
//!
//! [`Store::skipped_rows`]: crate::Store::skipped_rows

use std::net::IpAddr;
use std::str::FromStr;

use rusqlite::Row;
use serde::{Deserialize, Serialize};

/// Everything one detection cycle of one router leaves behind, written in one transaction by
/// [`Store::record_cycle`](crate::Store::record_cycle).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CycleRecord {
    /// The router's name, as in the config.
    pub router: String,
    /// When the cycle ran, unix seconds.
    pub at_unix: i64,
    /// The blocks decided in this cycle (dry-run ones included, marked).
    pub blocks: Vec<NewBlock>,
    /// Blocks put back on the router this cycle (restored after a reboot): (list, address).
    #[serde(default)]
    pub placed: Vec<(String, IpAddr)>,
    /// Blocks lifted this cycle (an entry removed on the router by hand).
    #[serde(default)]
    pub lifts: Vec<Lifted>,
    /// Counter increments, added to the router's cumulative counters (a name may repeat).
    pub counters: Vec<(String, u64)>,
    /// The router's whole observation state after this cycle, replacing what was stored;
    /// `None` leaves the stored state as it is (e.g. a cycle that could not poll).
    pub strikes: Option<Vec<Strike>>,
}

/// A block decided in a cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewBlock {
    /// The address list it went (or would go) to.
    pub list: String,
    /// The blocked address.
    pub address: IpAddr,
    /// The timeout given to the list entry.
    pub timeout_secs: u64,
    /// Escalation level: how many earlier blocks made the timeout longer (0 = first).
    pub level: u32,
    /// The comment put on the list entry.
    pub comment: String,
    /// Why: connection tuple, protocol, counters, tcp-state, the rule that fired, the config
    /// values. Stored as JSON, read back as it was given.
    pub evidence: serde_json::Value,
    /// Decided but not applied (`dry_run = true` in the config, or `rosguard demo`).
    pub dry_run: bool,
}

/// A block lifted in a cycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifted {
    /// The address list.
    pub list: String,
    /// The address.
    pub address: IpAddr,
    /// Why (`removed-on-router`, ...).
    pub reason: String,
}

/// An operator unblock: re-blocking suppressed until `until_unix`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnblockRow {
    /// The router.
    pub router: String,
    /// The address.
    pub address: IpAddr,
    /// When it was unblocked.
    pub at_unix: i64,
    /// Until when re-blocking is suppressed.
    pub until_unix: i64,
    /// Why (`unblock`, `allow`, ...), with the operator's comment if any.
    pub reason: String,
}

/// What the daemon last said about itself or a router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusRow {
    /// A router name, or `""` for the daemon.
    pub key: String,
    /// The status, as the daemon wrote it.
    pub json: serde_json::Value,
    /// When it was written.
    pub updated_unix: i64,
}

/// A stored block, for `rosguard why`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockRow {
    /// Row id, increasing with insertion.
    pub id: i64,
    /// The router's name.
    pub router: String,
    /// The address list.
    pub list: String,
    /// The blocked address.
    pub address: IpAddr,
    /// When it was decided, unix seconds.
    pub at_unix: i64,
    /// The timeout given.
    pub timeout_secs: u64,
    /// `at_unix + timeout_secs`.
    pub expires_unix: i64,
    /// Escalation level.
    pub level: u32,
    /// The list entry's comment.
    pub comment: String,
    /// The evidence, as recorded.
    pub evidence: serde_json::Value,
    /// When `rosguard unblock`/`clear` lifted it (or it was removed on the router), if so.
    pub lifted_unix: Option<i64>,
    /// Why it was lifted.
    pub lift_reason: Option<String>,
    /// When it was last put on the router (restores included).
    pub placed_unix: i64,
    /// Decided but not applied.
    pub dry_run: bool,
}

/// A block that should still be on the router, for restoring after a reboot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveBlock {
    /// The address list.
    pub list: String,
    /// When it was last put on the router (decided, restored or adopted), unix seconds.
    pub placed_unix: i64,
    /// The blocked address.
    pub address: IpAddr,
    /// When it ends, unix seconds: re-add with `expires_unix - now` as the timeout.
    pub expires_unix: i64,
    /// The list entry's comment.
    pub comment: String,
    /// Escalation level.
    pub level: u32,
}

/// Observation state of one key (a connection or a target, as the daemon encodes it) that
/// spans polls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Strike {
    /// What is being observed; opaque to the store, unique per router.
    pub key: String,
    /// How many times it has been seen.
    pub count: u32,
    /// First seen, unix seconds.
    pub first_unix: i64,
    /// Last seen, unix seconds.
    pub last_unix: i64,
}

/// A router that has recorded at least one cycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterSeen {
    /// The router's name.
    pub router: String,
    /// When its last cycle was committed, unix seconds.
    pub last_cycle_unix: i64,
}

/// The text an address is stored as: its canonical form, with IPv4-mapped IPv6 addresses
/// (`::ffff:a.b.c.d`) written as the IPv4 address they are, so a lookup finds a block whichever
/// form the caller holds.
pub(crate) fn address_text(address: IpAddr) -> String {
    address.to_canonical().to_string()
}

/// The columns [`block_row`] decodes, in order.
pub(crate) const BLOCK_COLUMNS: &str = "id, router, list, address, at_unix, timeout_secs, \
     expires_unix, level, comment, evidence, lifted_unix, dry_run, lift_reason, \
     coalesce(placed_unix, at_unix)";

/// A row of [`BLOCK_COLUMNS`], or `None` if it does not decode.
pub(crate) fn block_row(row: &Row<'_>) -> Option<BlockRow> {
    Some(BlockRow {
        id: row.get(0).ok()?,
        router: row.get(1).ok()?,
        list: row.get(2).ok()?,
        address: IpAddr::from_str(&row.get::<_, String>(3).ok()?).ok()?,
        at_unix: row.get(4).ok()?,
        timeout_secs: u64::try_from(row.get::<_, i64>(5).ok()?).ok()?,
        expires_unix: row.get(6).ok()?,
        level: u32::try_from(row.get::<_, i64>(7).ok()?).ok()?,
        comment: row.get(8).ok()?,
        evidence: serde_json::from_str(&row.get::<_, String>(9).ok()?).ok()?,
        lifted_unix: row.get(10).ok()?,
        dry_run: flag(row.get(11).ok()?)?,
        lift_reason: row.get(12).ok()?,
        placed_unix: row.get(13).ok()?,
    })
}

/// The columns [`active_block`] decodes, in order.
pub(crate) const ACTIVE_COLUMNS: &str =
    "list, address, expires_unix, comment, level, coalesce(placed_unix, at_unix)";

/// A row of [`ACTIVE_COLUMNS`], or `None` if it does not decode.
pub(crate) fn active_block(row: &Row<'_>) -> Option<ActiveBlock> {
    Some(ActiveBlock {
        list: row.get(0).ok()?,
        address: IpAddr::from_str(&row.get::<_, String>(1).ok()?).ok()?,
        expires_unix: row.get(2).ok()?,
        comment: row.get(3).ok()?,
        level: u32::try_from(row.get::<_, i64>(4).ok()?).ok()?,
        placed_unix: row.get(5).ok()?,
    })
}

/// A row of `router, address, at_unix, until_unix, reason`, or `None` if it does not decode.
pub(crate) fn unblock(row: &Row<'_>) -> Option<UnblockRow> {
    Some(UnblockRow {
        router: row.get(0).ok()?,
        address: IpAddr::from_str(&row.get::<_, String>(1).ok()?).ok()?,
        at_unix: row.get(2).ok()?,
        until_unix: row.get(3).ok()?,
        reason: row.get(4).ok()?,
    })
}

/// A row of `key, json, updated_unix`, or `None` if it does not decode.
pub(crate) fn status(row: &Row<'_>) -> Option<StatusRow> {
    Some(StatusRow {
        key: row.get(0).ok()?,
        json: serde_json::from_str(&row.get::<_, String>(1).ok()?).ok()?,
        updated_unix: row.get(2).ok()?,
    })
}

/// A row of `key, count, first_unix, last_unix`, or `None` if it does not decode.
pub(crate) fn strike(row: &Row<'_>) -> Option<Strike> {
    Some(Strike {
        key: row.get(0).ok()?,
        count: u32::try_from(row.get::<_, i64>(1).ok()?).ok()?,
        first_unix: row.get(2).ok()?,
        last_unix: row.get(3).ok()?,
    })
}

/// A row of `name, value`, or `None` if it does not decode.
pub(crate) fn counter(row: &Row<'_>) -> Option<(String, u64)> {
    Some((
        row.get(0).ok()?,
        u64::try_from(row.get::<_, i64>(1).ok()?).ok()?,
    ))
}

/// A row of `router, last_cycle_unix`, or `None` if it does not decode.
pub(crate) fn router_seen(row: &Row<'_>) -> Option<RouterSeen> {
    Some(RouterSeen {
        router: row.get(0).ok()?,
        last_cycle_unix: row.get(1).ok()?,
    })
}

/// A row of one `at_unix` column, or `None` if it does not decode.
pub(crate) fn time(row: &Row<'_>) -> Option<i64> {
    row.get(0).ok()
}

fn flag(value: i64) -> Option<bool> {
    match value {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}
