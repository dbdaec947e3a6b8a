//! The daemon's one event stream: every router task publishes what happened (link state,
//! cycles, blocks, lifts, caps) on one broadcast channel, and whoever cares subscribes:
//! metrics, block sharing, the demo, tests, later a status page or CrowdSec.
//!
//! Publishing never blocks and never fails: with no subscriber the event is dropped; a
//! subscriber that falls behind by more than [`CAPACITY`] events learns how many it missed.
//!
//! This module only carries events; it does not act on them.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rosguard_core::decide::{AddKind, Cap};
use tokio::sync::broadcast;

use crate::report::CycleReport;

/// Events a slow subscriber may fall behind by before it misses some.
pub const CAPACITY: usize = 4096;

/// The state of a router's API connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Connected and logged in.
    Up,
    /// Lost or refused; the daemon retries with backoff.
    Down {
        /// What failed, in one line.
        error: String,
        /// A stable kind (`io:ConnectionRefused`, `login`, `timeout`, `deadline`, ...).
        label: String,
    },
}

/// An address-list addition that took effect (or would have, in dry run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockEvent {
    /// The router.
    pub router: String,
    /// The address.
    pub address: IpAddr,
    /// When it ends, time since the UNIX epoch.
    pub expires: Duration,
    /// Its timeout.
    pub timeout: Duration,
    /// Its comment.
    pub comment: String,
    /// Its evidence, as JSON text.
    pub evidence_json: String,
    /// Why it was made.
    pub kind: AddKind,
    /// A dry-run decision.
    pub dry_run: bool,
}

/// What the daemon tells its subscribers.
#[derive(Debug, Clone)]
pub enum Event {
    /// A router's connection changed state.
    Link { router: String, link: Link },
    /// A cycle completed.
    Cycle(Arc<CycleReport>),
    /// A cycle failed without losing the connection.
    CycleFailed { router: String, error: String },
    /// An address went on a list.
    Block(BlockEvent),
    /// A block was lifted (removed on the router by hand).
    Lift { router: String, address: IpAddr },
    /// A cap or brake held something back.
    Cap {
        router: String,
        cap: Cap,
        message: String,
    },
}

impl Event {
    /// The router the event is about.
    pub fn router(&self) -> &str {
        match self {
            Event::Link { router, .. }
            | Event::CycleFailed { router, .. }
            | Event::Lift { router, .. }
            | Event::Cap { router, .. } => router,
            Event::Cycle(r) => &r.router,
            Event::Block(b) => &b.router,
        }
    }
}

/// The publishing end, cloned into every router task.
#[derive(Debug, Clone)]
pub struct Events {
    tx: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    /// A stream with no subscriber yet.
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
        }
    }

    /// Publishes `e` to every current subscriber.
    pub fn emit(&self, e: Event) {
        let _ = self.tx.send(e);
    }

    /// A new subscriber: it sees every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}
