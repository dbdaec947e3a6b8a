//! The RouterOS side of rosguard: RouterOS reply rows become checked domain types
//! ([`rows`]), the detection filter is pushed to the router as query words ([`filter`]), and
//! [`RouterOsBackend`] implements the core's [`Backend`](rosguard_core::Backend) seam over the
//! RouterOS API client, plus the operations the admin commands need (lists, entries,
//! connections of an address).
//!
//! It deliberately decides nothing (that is `rosguard-core`), keeps no history and reads no
//! configuration file: it is handed a client config and the settings of a cycle.

pub mod backend;
mod error;
pub mod filter;
#[doc(hidden)]
pub mod fuzzing;
pub mod rows;

pub use backend::{
    backend_error, is_permission, one_line, RouterOsBackend, DEFAULT_MAX_CANDIDATES, MAX_IN_FLIGHT,
};
pub use error::RowError;
pub use filter::{matches_pushed_filter, pushed_filter};
pub use rows::{connection, list_entry, CONNECTION_PROPLIST, LIST_ENTRY_PROPLIST};
