//! What one poll of a router saw ([`Observation`]) and what the decision asks the backend to
//! read ([`ObservePlan`]).
//!
//! A backend fills an observation from whatever it reads (the RouterOS API, a recording, the
//! Linux kernel); the decision takes it as it is. Connections arrive already cut down to the
//! rows some rule could flag ([`detect::is_candidate`](crate::detect::is_candidate)), at most
//! a limit of them, so an observation's size is bounded whatever the table holds.
//!
//! It deliberately holds plain data: no handles, no clocks, nothing that talks back.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::model::{Connection, ListEntry};
use crate::policy::Protected;

/// What the backend should read this poll, besides what it always reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ObservePlan {
    /// Read the gateways, DNS servers and API sessions (at the start, every five minutes, and
    /// every poll while one of them is unknown).
    pub refresh_protected: bool,
    /// Read the router's uptime (when blocks are reconciled: it tells a reboot from a hand
    /// removal).
    pub read_uptime: bool,
    /// Leave the connection tables alone: only the router's context is wanted (`rosguard
    /// block` checks an address against it).
    pub context_only: bool,
}

/// A block another router made, offered to this one (`share_blocks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedCandidate {
    /// The router that made it.
    pub from_router: String,
    /// The address.
    pub address: IpAddr,
    /// When it ends there, time since the UNIX epoch.
    pub expires: Duration,
    /// Its comment there.
    pub comment: String,
    /// Its evidence there, as JSON text.
    pub evidence_json: String,
}

/// What one poll saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// The rows that passed the backend's candidate test, at most its limit.
    pub candidates: Vec<Connection>,
    /// Rows read from the tables (with a filter on the router: the rows it returned).
    pub rows_read: u64,
    /// Rows that could not be read and were skipped.
    pub bad_rows: u64,
    /// The number of connections in the tables, when the backend knows it.
    pub table_size: Option<u64>,
    /// The rows were filtered where they were read (on the router): `rows_read` is a part of
    /// the table, not all of it.
    pub filtered: bool,
    /// The candidate limit was reached and reading stopped early: the picture is incomplete.
    pub truncated: bool,
    /// The router's own addresses with their prefix length (`192.168.88.1/24`): the hosts
    /// never blocked and the connected networks.
    pub addresses: Vec<IpNet>,
    /// The protected sets read this poll; a kind absent here was not read (or could not be).
    pub protected: Vec<(Protected, Vec<IpAddr>)>,
    /// The router's allowlist address-list.
    pub allowlist: Vec<ListEntry>,
    /// The block list.
    pub block_list: Vec<ListEntry>,
    /// The scan staging list (`detection.scan.staging_list`), empty when off.
    pub staging: Vec<ListEntry>,
    /// The router's uptime, when it was read.
    pub uptime: Option<Duration>,
    /// rosguard's own address on the API connection and the router's address there.
    pub own: Vec<IpAddr>,
    /// Blocks other routers made (filled by the daemon, not the backend).
    pub shared: Vec<SharedCandidate>,
}
