//! Small value types that every layer of rosguard shares, from the wire codec to the decision
//! core: the address [`Family`] of a RouterOS menu, table or list, and RouterOS durations
//! ([`parse_duration`], [`format_duration`]), which are both the API's value format and the
//! config file's.
//!
//! It deliberately has no dependencies beyond `thiserror` (and `serde` behind the `serde`
//! feature), does no IO and knows nothing of the protocol: it is the leaf every other crate can
//! depend on without pulling in the codec or the decision logic.

mod duration;
mod family;

pub use duration::{format_duration, parse_duration, DurationError};
pub use family::Family;
