//! What a cycle saw and did, for people and programs: the typed [`CycleReport`] that `once`
//! prints, `once --json` serializes, and the daemon publishes as an event.
//!
//! It is a view of the core's [`Decision`] joined with what the backend did with each action
//! ([`Applied`]); it decides nothing.

use std::net::IpAddr;
use std::time::Duration;

use rosguard_core::decide::{AddKind, Adopted, Brake, Cap, Decision, Ignored, Lift, Skip};
use rosguard_core::observation::Observation;
use rosguard_core::outcome::{AddResult, Applied, RemoveResult};
use rosguard_core::policy::Protected;
use rosguard_core::settings::duration;
use serde::Serialize;

/// One planned addition and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockRecord {
    pub address: IpAddr,
    pub list: String,
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Escalation level: how many earlier blocks of this address are remembered.
    pub level: u32,
    pub comment: String,
    /// Why it was made.
    #[serde(flatten)]
    pub kind: AddKind,
    /// What became of it.
    pub result: AddResult,
}

impl BlockRecord {
    /// A new or shared block that is (or in dry run would be) on the list now.
    pub fn is_new_block(&self) -> bool {
        self.result.took_effect() && !matches!(self.kind, AddKind::Restored)
    }
}

/// One planned connection removal and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemovalRecord {
    /// `tcp 10.0.0.2:40000 -> 203.0.113.5:443`.
    pub connection: String,
    /// The address it was flagged for.
    pub target: IpAddr,
    pub result: RemoveResult,
}

/// What a cycle saw and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CycleReport {
    pub router: String,
    pub dry_run: bool,
    /// Detection is off: rows were not looked at.
    pub detection_off: bool,
    /// Rows read from the tables (with the filter on the router: the rows it returned).
    pub scanned: u64,
    /// The tables' size as far as the cycle knows.
    pub table_size: u64,
    /// The filter ran on the router (so `scanned` is a part of `table_size`).
    pub filtered_on_router: bool,
    pub bad_rows: u64,
    /// Findings: asymmetric connections, scanners, staged addresses.
    pub flagged: u64,
    /// Of those, confirmed by the tracker.
    pub confirmed: u64,
    /// Candidate rows not flagged, by why.
    pub ignored: Ignored,
    pub blocks: Vec<BlockRecord>,
    pub removals: Vec<RemovalRecord>,
    pub skipped: Vec<Skip>,
    /// Flagged connections over `max_conn_per_cycle`: they wait for the next cycle.
    pub deferred: u64,
    /// Blocks a safety cap or brake held back.
    pub capped: u64,
    /// Flagged connections acted on (blocked and/or removed).
    pub acted: u64,
    /// Caps that held something back this cycle.
    pub caps_hit: Vec<Cap>,
    pub brake: Option<Brake>,
    /// Entries removed on the router by hand, honoured as lifts.
    pub lifts: Vec<Lift>,
    /// rosguard entries found without a record, recorded now.
    pub adopted: Vec<Adopted>,
    /// Protected sets the router has not told yet (nothing is blocked until it does).
    pub protection_missing: Vec<Protected>,
    /// Entries in the block list when the cycle started.
    pub list_size: usize,
    pub duration_ms: u64,
}

impl CycleReport {
    /// Joins a decision with what the backend did.
    pub fn new(
        router: &str,
        list: &str,
        obs: &Observation,
        d: &Decision,
        applied: &Applied,
    ) -> Self {
        Self {
            router: router.to_owned(),
            dry_run: d.dry_run,
            detection_off: d.detection_off,
            scanned: obs.rows_read,
            table_size: d.table_size,
            filtered_on_router: obs.filtered,
            bad_rows: obs.bad_rows,
            flagged: d.flagged,
            confirmed: d.confirmed,
            ignored: d.ignored,
            blocks: d
                .adds
                .iter()
                .zip(&applied.adds)
                .map(|(a, r)| BlockRecord {
                    address: a.address,
                    list: list.to_owned(),
                    timeout: a.timeout,
                    level: a.level,
                    comment: a.comment.clone(),
                    kind: a.kind.clone(),
                    result: r.clone(),
                })
                .collect(),
            removals: d
                .removals
                .iter()
                .zip(&applied.removals)
                .map(|(rm, r)| RemovalRecord {
                    connection: rm.summary.clone(),
                    target: rm.target,
                    result: r.clone(),
                })
                .collect(),
            skipped: d.skipped.clone(),
            deferred: d.deferred,
            capped: d.capped,
            acted: d.acted,
            caps_hit: d.caps.iter().map(|c| c.cap).collect(),
            brake: d.brake,
            lifts: d.lifts.clone(),
            adopted: d.adopted.clone(),
            protection_missing: d.protection_missing.clone(),
            list_size: obs.block_list.len(),
            duration_ms: 0,
        }
    }

    /// New and shared blocks that took effect (or would, in dry run).
    pub fn new_blocks(&self) -> impl Iterator<Item = &BlockRecord> {
        self.blocks.iter().filter(|b| b.is_new_block())
    }

    /// Connections removed.
    pub fn connections_removed(&self) -> u64 {
        self.removals
            .iter()
            .filter(|r| r.result == RemoveResult::Removed)
            .count() as u64
    }

    /// Adds the router refused, and whether every refusal was a permission problem.
    pub fn failed_adds(&self) -> (usize, bool) {
        let failed: Vec<bool> = self
            .blocks
            .iter()
            .filter_map(|b| match &b.result {
                AddResult::Failed { permission, .. } => Some(*permission),
                _ => None,
            })
            .collect();
        (
            failed.len(),
            !failed.is_empty() && failed.iter().all(|p| *p),
        )
    }
}
