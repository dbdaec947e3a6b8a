//! Sans-IO codec for the MikroTik RouterOS API.
//!
//! This crate turns bytes into words, words into sentences and sentences into typed replies,
//! and builds command sentences from a typed builder. It also holds the legacy login challenge, and
//! re-exports the value types of `routeros-types` (durations, the address family).
//!
//! It deliberately does no IO, reads no clock and does not depend on tokio: the caller owns the
//! socket and the buffer. "Need more bytes" is `Ok(None)`, never an error, and no length read
//! from the wire is trusted before it is checked against [`Limits`].

mod command;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod length;
pub mod login;
mod reply;
mod sentence;

pub use command::{Command, QueryOps};
pub use error::ProtoError;
pub use length::{decode_length, encode_length, encoded_length_len, MAX_WORD_LEN};
pub use reply::{Attr, Reply, ReplyKind};
pub use routeros_types::{format_duration, parse_duration, DurationError, Family};
pub use sentence::{decode_sentence, encode_sentence, Limits, Sentence};
