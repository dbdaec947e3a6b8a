//! The pure decision logic of rosguard.
//!
//! Router rows become checked types ([`model`]), rows are tested for the asymmetric pattern
//! ([`detect`](mod@detect)), findings are confirmed across polls and scored ([`state`]), and a
//! cycle's findings become a plan of address-list additions and connection removals that never
//! touches an allowlisted, local, own or protected address ([`policy`]).
//!
//! This crate deliberately does no IO, reads no clock (every time is a `now` argument) and does
//! not depend on tokio, so every verdict can be replayed in a test. Talking to the router,
//! persisting history and logging are the daemon's job.

pub mod detect;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod model;
pub mod policy;
pub mod state;

pub use detect::{
    check, check_owned, detect, is_asymmetric, server_filter, BlockTarget, Finding, Rule, Rules,
};
pub use error::{ParseError, RowError};
pub use model::{AddrSet, Connection, Endpoint, Family, ListAddress, ListEntry, Protocol};
pub use policy::{plan, BlockAction, Plan, PolicyContext, SkipReason};
pub use state::{panic_brake, ConnKey, Escalation, RateCap, Tracker, TrackerSettings};
