//! What became of what a backend was asked: [`AddResult`] and [`RemoveResult`] per action,
//! [`Applied`] for a whole decision, [`BackendError`] for a call that failed. A backend
//! reports them, the decision's state settles on them, the history records them.
//!
//! Plain data, a leaf: it knows no decision, backend or history.

use serde::{Deserialize, Serialize};

/// What kind of failure a backend reports: whether the daemon must reconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The connection is gone or unusable: reconnect (with backoff).
    ConnectionLost,
    /// The login was refused: reconnect with backoff, the operator must fix credentials.
    Login,
    /// The router refused a read the cycle cannot do without (a permission, a missing menu);
    /// the connection is fine.
    Refused,
}

/// A backend failure, in one line that names the router and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    /// Reconnect or not.
    pub kind: FailureKind,
    /// A short stable name for metrics and for logging a failure only when it changes (`io`,
    /// `timeout`, `tls`, `login`, `permission`, ...).
    pub label: String,
    /// What failed and how to fix it.
    pub message: String,
}

impl BackendError {
    /// True when the daemon must reconnect.
    pub fn is_connection_lost(&self) -> bool {
        matches!(self.kind, FailureKind::ConnectionLost | FailureKind::Login)
    }
}

/// What became of one planned address-list addition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum AddResult {
    /// On the list now.
    Added,
    /// The list had it already (for example an entry the operator disabled): nothing changed.
    AlreadyPresent,
    /// Dry run: it would have been added.
    WouldAdd,
    /// The router refused it.
    Failed {
        /// Why, in one line.
        message: String,
        /// The refusal was a permission problem (the user lacks the `write` policy).
        permission: bool,
    },
    /// Not sent: the connection was lost first.
    NotSent,
}

impl AddResult {
    /// The entry is (or, in dry run, would be) on the list because of this add.
    pub fn took_effect(&self) -> bool {
        matches!(self, AddResult::Added | AddResult::WouldAdd)
    }
}

/// What became of one planned connection removal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum RemoveResult {
    /// Removed.
    Removed,
    /// It had vanished already: fine.
    Gone,
    /// Dry run: it would have been removed.
    WouldRemove,
    /// The router refused it.
    Failed {
        /// Why, in one line.
        message: String,
    },
    /// Not sent: the connection was lost first.
    NotSent,
}

/// What applying a decision did, action by action in the decision's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// One per `Decision::adds`.
    pub adds: Vec<AddResult>,
    /// One per `Decision::removals`.
    pub removals: Vec<RemoveResult>,
    /// The connection broke while applying; the results above say what went through.
    pub lost: Option<BackendError>,
}
