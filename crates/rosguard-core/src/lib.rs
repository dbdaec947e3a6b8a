//! The pure decision logic of rosguard.
//!
//! A backend turns what it reads into checked types ([`model`]) and one poll into an
//! [`Observation`]; [`decide`](decide::decide) turns the observation, the router's
//! [`GuardState`], the [`Settings`] and the [`History`] into a typed [`Decision`]: rows are
//! tested for the asymmetric pattern ([`detect`](mod@detect)) and for scans ([`scan`]),
//! findings are confirmed across polls and scored ([`state`]), and the cycle's findings become
//! additions and removals that never touch an allowlisted, local, LAN, own, special or
//! protected address ([`policy`]). The [`Backend`] trait is the seam the daemon drives.
//!
//! This crate deliberately does no IO, reads no clock (every time is a `now` argument), does
//! not depend on tokio or on the RouterOS wire format, so every verdict can be replayed: in a
//! test, from a recording, on fake time.

pub mod backend;
pub mod decide;
pub mod detect;
mod error;
pub mod history;
pub mod memory;
pub mod model;
pub mod observation;
pub mod outcome;
pub mod policy;
pub mod scan;
pub mod settings;
pub mod special;
pub mod stall;
pub mod state;

pub use backend::Backend;
pub use decide::{decide, AddKind, Cap, Decision, GuardState, PlannedAdd, Skip};
pub use detect::{Evidence, Finding, Rule};
pub use error::{excerpt, ParseError};
pub use history::{ActiveRecord, History, HistoryError};
pub use memory::MemoryHistory;
pub use model::{
    AddrSet, ConnId, Connection, Endpoint, Family, ListAddress, ListEntry, Networks, Protocol,
    TcpState,
};
pub use observation::{Observation, ObservePlan, SharedCandidate};
pub use outcome::{AddResult, Applied, BackendError, FailureKind, RemoveResult};
pub use policy::{PolicyContext, Protected, Removal, SkipReason};
pub use settings::{BlockTarget, Blocking, CycleLimits, Detection, Settings};
pub use state::{ConnKey, TrackerEntry};
