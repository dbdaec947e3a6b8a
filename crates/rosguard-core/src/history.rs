//! What the decision needs to know of the past beyond its own [`GuardState`]: earlier blocks
//! (escalation), blocks that should still stand (restore after a reboot, hand removals), and
//! operator unblocks. The daemon answers from its SQLite store;
//! [`MemoryHistory`](crate::memory::MemoryHistory) answers from memory for replays and tests.
//!
//! Errors are plain text: the decision fails closed on them (an unreadable unblock list blocks
//! nothing new) and the caller logs them.
//!
//! [`GuardState`]: crate::decide::GuardState
//!
//! It is a leaf: it knows no decision, only the questions one asks.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// A history lookup that failed; the text says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HistoryError(pub String);

/// A block that should still be on the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveRecord {
    /// The address.
    pub address: IpAddr,
    /// When it was last put on the router (decided, restored or adopted), since the epoch.
    pub placed: Duration,
    /// When it ends, since the epoch.
    pub expires: Duration,
    /// The entry's comment.
    pub comment: String,
    /// Escalation level.
    pub level: u32,
}

/// The past of one router's block list, as the decision asks for it. Times are durations
/// since the UNIX epoch.
pub trait History {
    /// When `addr` was blocked on this router since `since` (real blocks only).
    fn previous_blocks(&self, addr: IpAddr, since: Duration)
        -> Result<Vec<Duration>, HistoryError>;
    /// The blocks of this router's list that have not ended and were not lifted.
    fn active_blocks(&self, now: Duration) -> Result<Vec<ActiveRecord>, HistoryError>;
    /// Addresses an operator unblocked on this router, and until when re-blocking them is
    /// suppressed.
    fn unblocked(&self, now: Duration) -> Result<HashMap<IpAddr, Duration>, HistoryError>;
}
