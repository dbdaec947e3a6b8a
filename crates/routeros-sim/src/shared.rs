//! The state one running simulator shares between its accept loop, its sessions and the
//! [`SimHandle`](crate::SimHandle): settings read once at start, the clock, the router behind
//! its lock, the faults in force, counters, and the cancellation tokens of the sessions.
//!
//! It deliberately holds no router logic (see `router`) and starts no task (see `server`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use routeros_proto::Limits;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Faults;
use crate::connection::RowStyle;
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
        }
    }

    pub(crate) fn router(&self) -> MutexGuard<'_, Router> {
        self.router.lock().unwrap_or_else(PoisonError::into_inner)
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
