//! Async (tokio) client for the MikroTik RouterOS API.
//!
//! [`Client::connect`] opens a TCP or TLS connection, logs in (6.43+ style, falling back to the
//! legacy challenge), and then multiplexes many tagged commands over that one connection: one
//! reader task matches replies to waiters by `.tag`, one writer task puts whole sentences on the
//! wire. [`Client::call`] collects a command's rows, [`Client::stream`] hands them over as they
//! arrive through a bounded channel, and a few typed helpers ([`Client::address_list_add`], ...)
//! turn the router's well-known traps into outcomes instead of errors.
//!
//! Framing, reply parsing and the command builder live in [`routeros_proto`]; this crate adds
//! the socket, the clock and the tasks. It deliberately does not reconnect, retry, or turn rows
//! into domain types: a lost connection is reported ([`Error::is_connection_lost`]) and the
//! caller decides what to do.
//!
//! # What the router can make the client hold or wait for
//!
//! Every limit is a [`ClientConfig`] field (the daemon's per-router config uses the same names):
//!
//! | setting | default | bounds |
//! |---|---|---|
//! | `connect_timeout` | 10 s | the TCP connect, and separately the TLS handshake |
//! | `login_timeout` | 10 s | the whole login exchange |
//! | `command_timeout` | 30 s | a [`Client::call`] / [`Client::count`] / each command of [`Client::call_many`]; the gap between two replies of a stream |
//! | `max_reply_rows` | 200,000 | the `!re` rows of one collected reply ([`Client::call`] and every helper on it) |
//! | `max_reply_bytes` | 64 MiB | the bytes those rows (and traps) hold: wire size plus 16 per word |
//! | `limits` ([`Limits`]) | 16 MiB words, 4,096 words | one word, one sentence (decoder) |
//!
//! Fixed caps: a stream buffers about [`STREAM_CAPACITY`] replies before the reader waits for
//! its consumer (and stops reading the socket); an incomplete sentence is buffered up to
//! 64 MiB (one word plus 1 MiB if `limits` allows longer words; the sentence cap of `limits`
//! if that is lower); a command keeps at most 8 trap messages.
//! The row limit's default is above the largest list a field report saw a router handle
//! (~146,000 entries) and far above a 30,000-entry block list; the byte limit holds about
//! 190,000 address-list rows as rosguard reads them (~350 bytes each), and each row costs a
//! further ~350 bytes of fixed bookkeeping (the parsed reply, its slot in the rows), bounded
//! by the row limit: at the defaults a collected reply holds at most about 135 MB.
//!
//! # When the connection is dropped
//!
//! A connection is closed, failing every command in flight on it with the same error, after
//! which [`Client::is_closed`] is true and new commands fail fast with [`Error::Closed`]:
//!
//! - a command timeout ([`Error::Timeout`] naming `command_timeout`): a router that stops
//!   answering one command has, as far as the client can tell, stopped answering all of them,
//!   and keeping the dead connection would make every later command wait out its timeout too;
//! - a collected reply over `max_reply_rows` or `max_reply_bytes` ([`Error::ReplyTooLarge`]):
//!   the rest of the reply would keep the shared connection busy for as long as it takes to
//!   arrive, and a router that sends without end may well ignore `/cancel` too. Closing stops
//!   it at once and frees every row held; the caller reconnects as after any lost connection;
//! - a reply that belongs to no command ([`Error::UnmatchedReply`]: a tag never issued, or
//!   none, since every command is tagged); replies for tags that were issued and are no longer
//!   awaited (late replies after `/cancel`) are dropped quietly;
//! - `!fatal`, EOF, an IO or protocol error, or [`Client::close`].
//!
//! A caller that merely gives up (drops a `call` future or a [`RowStream`]) cancels just that
//! command with `/cancel`; the connection stays.
//!
//! # Connection mistakes
//!
//! The router's first bytes are checked before they are decoded: plain TCP to an API-SSL port
//! is [`Error::TlsPort`], a port that is not the RouterOS API at all (a web server) is
//! [`Error::NotApi`], and TLS to a plain API port is an [`Error::Tls`] that says to set
//! `tls = false` or use port 8729. No error or log line holds the password.

mod api;
mod client;
mod config;
mod error;
mod login;
mod multiplexer;
mod stream;
mod tls;

pub use api::{
    address_list_add_command, remove_command, AddOutcome, Family, RemoveOutcome, ADDRESS_LIST_PROPS,
};
pub use client::{Client, RowStream};
pub use config::{ClientConfig, Secret, TlsConfig};
pub use error::Error;
pub use multiplexer::STREAM_CAPACITY;
pub use stream::Response;
pub use tls::{format_fingerprint, parse_fingerprint};

pub use routeros_proto::{Command, Limits, QueryOps, Reply, ReplyKind};
