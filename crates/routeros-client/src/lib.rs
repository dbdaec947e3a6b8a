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
pub use client::Client;
pub use config::{ClientConfig, Secret, TlsConfig};
pub use error::Error;
pub use multiplexer::STREAM_CAPACITY;
pub use stream::{Response, RowStream};
pub use tls::{format_fingerprint, parse_fingerprint};

pub use routeros_proto::{Command, Limits, QueryOps, Reply, ReplyKind};
