//! [`MemoryHistory`]: a [`History`] kept in memory, for replays and tests, fed with each
//! decision the way the daemon's store is.
//!
//! It deliberately does no IO and keeps everything (a replay is bounded by its recording).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::decide::{AddKind, Decision};
use crate::history::{ActiveRecord, History, HistoryError};
use crate::outcome::AddResult;

/// One block [`MemoryHistory`] remembers.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryBlock {
    /// The address.
    pub address: IpAddr,
    /// When it was decided.
    pub at: Duration,
    /// When it was last put on the router.
    pub placed: Duration,
    /// When it ends.
    pub expires: Duration,
    /// Its comment.
    pub comment: String,
    /// Its escalation level.
    pub level: u32,
    /// Lifted (by an operator, or removed on the router by hand).
    pub lifted: bool,
    /// A dry-run decision.
    pub dry_run: bool,
}

/// A [`History`] in memory, fed with [`MemoryHistory::record`] after each decision.
#[derive(Debug, Clone, Default)]
pub struct MemoryHistory {
    /// Every block recorded, oldest first.
    pub blocks: Vec<MemoryBlock>,
    unblocks: HashMap<IpAddr, Duration>,
}

impl MemoryHistory {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// An operator unblock: lifts the address's blocks and suppresses it until `until`.
    pub fn unblock(&mut self, addr: IpAddr, until: Duration) {
        let addr = addr.to_canonical();
        for b in self
            .blocks
            .iter_mut()
            .filter(|b| b.address.to_canonical() == addr)
        {
            b.lifted = true;
        }
        self.unblocks.insert(addr, until);
    }

    /// Records what a decision did, as the daemon's store does: new and shared blocks that
    /// took effect (or would have, in dry run), restores and adoptions as placements, hand
    /// removals as lifts that hold like an operator's unblock.
    pub fn record(&mut self, d: &Decision, results: &[AddResult], now: Duration) {
        for (a, r) in d.adds.iter().zip(results) {
            let effective = matches!(r, AddResult::Added | AddResult::WouldAdd);
            match (&a.kind, effective) {
                (AddKind::New | AddKind::Shared { .. }, true) => self.blocks.push(MemoryBlock {
                    address: a.address,
                    at: now,
                    placed: now,
                    expires: now + a.timeout,
                    comment: a.comment.clone(),
                    level: a.level,
                    lifted: false,
                    dry_run: d.dry_run,
                }),
                (AddKind::Restored, true) => {
                    for b in self.live_mut(a.address, now) {
                        b.placed = now;
                    }
                }
                _ => {}
            }
        }
        for l in &d.lifts {
            self.unblock(l.address, l.until);
        }
        for a in &d.adopted {
            self.blocks.push(MemoryBlock {
                address: a.address,
                at: now,
                placed: now,
                expires: now + a.remaining,
                comment: a.comment.clone(),
                level: 0,
                lifted: false,
                dry_run: false,
            });
        }
    }

    fn live_mut(&mut self, addr: IpAddr, now: Duration) -> impl Iterator<Item = &mut MemoryBlock> {
        let addr = addr.to_canonical();
        self.blocks.iter_mut().filter(move |b| {
            b.address.to_canonical() == addr && !b.lifted && !b.dry_run && b.expires > now
        })
    }
}

impl History for MemoryHistory {
    fn previous_blocks(
        &self,
        addr: IpAddr,
        since: Duration,
    ) -> Result<Vec<Duration>, HistoryError> {
        let addr = addr.to_canonical();
        Ok(self
            .blocks
            .iter()
            .filter(|b| b.address.to_canonical() == addr && !b.dry_run && b.at >= since)
            .map(|b| b.at)
            .collect())
    }

    fn active_blocks(&self, now: Duration) -> Result<Vec<ActiveRecord>, HistoryError> {
        // The latest live block of each address, as the store's restore query.
        let mut latest: HashMap<IpAddr, &MemoryBlock> = HashMap::new();
        for b in self
            .blocks
            .iter()
            .filter(|b| !b.lifted && !b.dry_run && b.expires > now)
        {
            let e = latest.entry(b.address.to_canonical()).or_insert(b);
            if b.expires > e.expires {
                *e = b;
            }
        }
        let mut out: Vec<ActiveRecord> = latest
            .into_values()
            .map(|b| ActiveRecord {
                address: b.address,
                placed: b.placed,
                expires: b.expires,
                comment: b.comment.clone(),
                level: b.level,
            })
            .collect();
        out.sort_by_key(|a| a.address);
        Ok(out)
    }

    fn unblocked(&self, now: Duration) -> Result<HashMap<IpAddr, Duration>, HistoryError> {
        Ok(self
            .unblocks
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(a, u)| (*a, *u))
            .collect())
    }
}
