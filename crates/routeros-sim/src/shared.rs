//! The state one running simulator shares between its accept loop, its sessions and the
//! [`SimHandle`](crate::SimHandle): settings read once at start, the clock, the router behind
//! its lock, the faults in force, counters, and the cancellation tokens of the sessions.
//!
//! It deliberately holds no router logic (see `router`) and starts no task (see `server`).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use routeros_proto::Limits;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Faults;
use crate::kinds::{AddressFormat, QueryCompare};
use crate::router::Router;

/// What the server reads from the configuration once.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) users: Vec<(String, String)>,
    pub(crate) address_format: AddressFormat,
    pub(crate) query_compare: QueryCompare,
    pub(crate) empty_replies: bool,
    pub(crate) legacy_login: bool,
    pub(crate) limits: Limits,
    pub(crate) max_sessions: Option<usize>,
}

/// Counters, updated lock-free.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) logins: AtomicU64,
    pub(crate) failed_logins: AtomicU64,
    pub(crate) commands: AtomicU64,
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
}
