//! The state one running simulator shares between its accept loop, its sessions and the
//! [`SimHandle`](crate::SimHandle): settings read once at start, the clock, the router behind
//! its lock, the faults in force, counters, and the cancellation tokens of the sessions.
//!
//! It deliberately holds no router logic (see `router`) and starts no task (see `server`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use routeros_proto::Limits;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::address_list::ListChange;

use crate::clock::Clock;
use crate::config::Faults;
use crate::connection::{RemovedConnection, RowStyle};
use crate::kinds::QueryCompare;
use crate::router::Router;

/// What the server reads from the configuration once.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) users: Vec<(String, String)>,
    pub(crate) row_style: RowStyle,
    pub(crate) query_compare: QueryCompare,
    pub(crate) empty_replies: bool,
    pub(crate) legacy_login: bool,
    pub(crate) limits: Limits,
    pub(crate) max_sessions: Option<usize>,
    /// The address `/user/active` shows for every session instead of the real peer (a client
    /// behind NAT).
    pub(crate) session_address: Option<IpAddr>,
}

/// How a session reached the router (`via` in `/user/active`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    Api,
    ApiSsl,
}

impl Via {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Via::Api => "api",
            Via::ApiSsl => "api-ssl",
        }
    }
}

/// A logged-in session, as `/user/active` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ActiveSession {
    pub(crate) user: String,
    pub(crate) address: IpAddr,
    pub(crate) via: Via,
    /// Sim time of the login.
    pub(crate) since: Duration,
}

/// Counters, updated lock-free.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) logins: AtomicU64,
    pub(crate) failed_logins: AtomicU64,
    pub(crate) commands: AtomicU64,
    pub(crate) commands_ignored: AtomicU64,
    pub(crate) sentences_sent: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) sessions_accepted: AtomicU64,
    pub(crate) sessions_refused: AtomicU64,
    pub(crate) sessions_active: AtomicU64,
}

/// How many removed connections `SimHandle::removed_connections` keeps for a receiver that
/// has not read them yet; a receiver further behind gets `RecvError::Lagged` and should
/// re-read the table.
pub const REMOVAL_BACKLOG: usize = 4096;

/// How many address-list changes `SimHandle::list_changes` keeps for a receiver that has not
/// read them yet; a receiver further behind gets `RecvError::Lagged` and should re-read the
/// lists (`SimHandle::address_lists`).
pub const LIST_CHANGE_BACKLOG: usize = 4096;

/// The router, locked; releasing it publishes the address-list changes made meanwhile.
pub(crate) struct RouterGuard<'a> {
    guard: MutexGuard<'a, Router>,
    shared: &'a Shared,
}

impl Deref for RouterGuard<'_> {
    type Target = Router;
    fn deref(&self) -> &Router {
        &self.guard
    }
}

impl DerefMut for RouterGuard<'_> {
    fn deref_mut(&mut self) -> &mut Router {
        &mut self.guard
    }
}

impl Drop for RouterGuard<'_> {
    fn drop(&mut self) {
        let changes = self.guard.take_list_changes();
        if changes.is_empty() {
            return;
        }
        // Published in order, still under the lock, so observers see changes as they happened.
        let now = self.shared.clock.now();
        for (family, change) in changes {
            let _ = self
                .shared
                .list_changes
                .send(change.publish(family, now, &self.shared.clock));
        }
    }
}

/// State shared by the accept loop, the sessions and the handle.
pub(crate) struct Shared {
    pub(crate) settings: Settings,
    pub(crate) clock: Clock,
    router: Mutex<Router>,
    faults: Mutex<Arc<Faults>>,
    pub(crate) stats: Counters,
    root: CancellationToken,
    generation: Mutex<CancellationToken>,
    next_session: AtomicU64,
    active: Mutex<BTreeMap<u64, ActiveSession>>,
    pub(crate) removals: broadcast::Sender<RemovedConnection>,
    list_changes: broadcast::Sender<ListChange>,
}

impl Shared {
    pub(crate) fn new(settings: Settings, clock: Clock, router: Router, faults: Faults) -> Self {
        let root = CancellationToken::new();
        Self {
            settings,
            clock,
            router: Mutex::new(router),
            faults: Mutex::new(Arc::new(faults)),
            stats: Counters::default(),
            generation: Mutex::new(root.child_token()),
            root,
            next_session: AtomicU64::new(1),
            active: Mutex::new(BTreeMap::new()),
            removals: broadcast::channel(REMOVAL_BACKLOG).0,
            list_changes: broadcast::channel(LIST_CHANGE_BACKLOG).0,
        }
    }

    /// The router, locked (hold it for one short step).
    pub(crate) fn router(&self) -> RouterGuard<'_> {
        let mut guard = self.router.lock().unwrap_or_else(PoisonError::into_inner);
        guard.record_list_changes(self.list_changes.receiver_count() > 0);
        // Whatever the caller does next sees the router caught up with the clock.
        guard.housekeep(self.clock.now());
        RouterGuard {
            guard,
            shared: self,
        }
    }

    /// A receiver of address-list changes from now on.
    pub(crate) fn subscribe_list_changes(&self) -> broadcast::Receiver<ListChange> {
        self.list_changes.subscribe()
    }

    /// The faults in force now (cheap: a shared pointer).
    pub(crate) fn faults(&self) -> Arc<Faults> {
        self.faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_faults(&self, faults: Faults) {
        *self.faults.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(faults);
    }

    /// The token that stops everything (shutdown, last handle dropped).
    pub(crate) fn root(&self) -> &CancellationToken {
        &self.root
    }

    /// A token for a new session: cancelled by `drop_sessions` or shutdown.
    pub(crate) fn session_token(&self) -> CancellationToken {
        self.generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .child_token()
    }

    /// Closes every session open now; later sessions get a fresh generation.
    pub(crate) fn drop_sessions(&self) {
        let mut g = self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        g.cancel();
        *g = self.root.child_token();
    }

    /// A fresh session number (the `.id` of its `/user/active` row once logged in).
    pub(crate) fn new_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Lists a session in `/user/active` (again, after a second login).
    pub(crate) fn session_logged_in(&self, id: u64, session: ActiveSession) {
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, session);
    }

    /// Takes a session out of `/user/active` (it ended).
    pub(crate) fn session_ended(&self, id: u64) {
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    /// The logged-in sessions, in session order.
    pub(crate) fn active_sessions(&self) -> Vec<(u64, ActiveSession)> {
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(id, s)| (*id, s.clone()))
            .collect()
    }
}
