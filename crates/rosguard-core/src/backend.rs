//! The seam between the decision and whatever holds the connection table: a [`Backend`]
//! connects, fills an [`Observation`] and carries out a [`Decision`], reporting per action what
//! became of it ([`Applied`]).
//!
//! The RouterOS API is one backend (crate `rosguard-routeros`); a recording is another; a
//! network namespace's kernel conntrack, served through the simulator, looks like the first.
//! The daemon drives any of them the same way: connect, then observe -> decide -> apply ->
//! settle until the connection is lost.
//!
//! It deliberately defines only the shape (what became of each action is in
//! [`outcome`](crate::outcome)): no runtime, no IO. The futures it returns are `Send` so a
//! daemon can run one backend per task.

use std::future::Future;

use crate::decide::Decision;
use crate::observation::{Observation, ObservePlan};
use crate::outcome::{Applied, BackendError};
use crate::settings::Settings;

/// A source of observations and a sink of decisions for one router.
pub trait Backend: Send {
    /// (Re)connects; the previous connection, if any, is dropped.
    fn connect(&mut self) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Reads one poll. Must be bounded in memory whatever the router sends (candidate limit)
    /// and must return [`FailureKind::ConnectionLost`](crate::outcome::FailureKind::ConnectionLost) when the connection is unusable.
    fn observe(
        &mut self,
        plan: &ObservePlan,
        settings: &Settings,
    ) -> impl Future<Output = Result<Observation, BackendError>> + Send;

    /// Carries out the adds and removals of `decision` (in dry run, reports what it would
    /// do and changes nothing).
    fn apply(
        &mut self,
        decision: &Decision,
        settings: &Settings,
    ) -> impl Future<Output = Applied> + Send;

    /// Closes the connection.
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}
