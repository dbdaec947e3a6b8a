//! A MikroTik RouterOS API server you can run on 127.0.0.1.
//!
//! `routeros-sim` is what every integration test, benchmark and `rosguard demo` talks to when
//! there is no real router. It speaks the RouterOS API (plain TCP or TLS) as described in the
//! project's `routeros-api.md`, built on the sans-IO codec of `routeros-proto`:
//!
//! - login both ways (6.43+ name/password and the legacy MD5 challenge), bad credentials,
//!   commands before login, unknown commands, `/cancel`, `/quit`, `!empty` (7.18+) or not;
//! - the connection tables (`/ip/firewall/connection`, `/ipv6/firewall/connection`) with every
//!   query operator, `.proplist`, `count-only` and `remove`, in both address formats seen in the
//!   field, with numeric or string comparison;
//! - address-lists (add/set/remove, timeouts that expire on the simulator's clock, reboot),
//!   filter rules (add/move/remove with `place-before`), and read-only menus (`/ip/address`,
//!   `/system/resource` with an `uptime` that restarts at a reboot, `/ip/route` and
//!   `/ipv6/route` with configurable default gateways, `/ip/dns` with static and dynamic
//!   servers, `/ip/firewall/connection/tracking` with its `total-entries`, `/user/active` with
//!   one row per logged-in session and the address the router sees, NAT included:
//!   [`SimConfig::session_address`]);
//! - traffic: scenario files that play flows over time ([`Scenario`], see `SCENARIO.md`:
//!   normal, FastTracked, DPI-frozen TLS, UDP sprays, port scans of filtered or closed ports),
//!   and a generator for tables of millions of rows derived from index and seed
//!   ([`GenerateSpec`]);
//! - filter rules that react to that traffic: `add-src-to-address-list` rules with the `psd`
//!   port-scan matcher (and a few others) put scanners on their list on the sim clock;
//! - fault injection ([`Faults`], swappable at runtime with [`SimHandle::set_faults`], most of
//!   it aimed at command paths with a [`PathMatch`]): delays, closes, `!fatal`, garbage,
//!   oversized length prefixes, refused logins, prints that never end or trickle one row at a
//!   time ([`Trickle`], on tokio time), commands read but never answered ([`Silent`]), replies
//!   with a wrong or no `.tag` ([`WrongTags`]), `not enough permissions (9)` traps, a bad row
//!   mid-stream ([`BadRow`]), connections gone by the time their `remove` arrives;
//! - a real kernel's table: [`ConntrackReader`] reads a Linux network namespace's conntrack
//!   and maps it to RouterOS's connection properties (the lab, `lab/README.md`);
//! - a manual clock ([`SimClock::Manual`]) for deterministic tests.
//!
//! Big prints stream: rows are produced in small chunks under a short lock and written with
//! TCP backpressure, never collected whole.
//!
//! # Connections from outside
//!
//! A bridge from the kernel's conntrack, or a replay of a recording, feeds the table through
//! three calls on [`SimHandle`]:
//!
//! - [`SimHandle::sync_connections`]`(family, rows)` makes that family's table exactly these
//!   [`SimConnection`]s. A row whose 5-tuple ([`ConnTuple`]: protocol, source and destination
//!   address and port) was already there keeps its `.id`, so a client that remembers ids sees
//!   one flow as one row across syncs; new rows get fresh ids. From the first call on, the
//!   family's generated and scenario rows are gone: the source owns the table.
//! - [`SimHandle::removed_connections`] is a `tokio::sync::broadcast` receiver of every
//!   [`RemovedConnection`] a client removed through the API, so the bridge can drop the same
//!   flow at its source (`conntrack -D`).
//! - [`SimHandle::list_changes`] is a broadcast receiver of every [`ListChange`] (added,
//!   updated, removed with its [`ListRemoval`] cause), in order, so a bridge can mirror a list
//!   into nftables; after `RecvError::Lagged` it re-reads [`SimHandle::address_lists`].
//!
//! A source that plays on the simulator's time waits with [`SimHandle::sleep_until`] (a
//! manual clock's `advance` wakes it), and one that serves part of a bigger table says how big
//! with [`SimHandle::set_table_size`]. The command line runs such a source beside the
//! simulator with [`run_cli_with`] and a [`Feed`].
//!
//! Both receivers hold at most [`REMOVAL_BACKLOG`] / [`LIST_CHANGE_BACKLOG`] unread items.
//!
//! It deliberately does not route packets, drop traffic by filter rules, resolve DNS names in
//! address-lists or implement `follow`, and it only emulates the menus rosguard uses.

mod address_list;
mod cli;
mod clock;
mod config;
mod connection;
mod conntable;
mod dispatch;
mod error;
mod filter;
mod firewall;
mod generate;
mod kernel;
mod kernel_bridge;
mod kinds;
mod query;
mod request;
mod router;
mod scenario;
mod server;
mod session;
mod shared;
mod tls;
mod writer;

pub use address_list::{ListChange, ListRemoval, SimListEntry};
pub use cli::{run_cli, run_cli_with, AddressFormatArg, FastTrackCountersArg, Feed, SimArgs};
pub use config::{
    BadRow, BadRowKind, Faults, PathMatch, RouterAddress, Silent, SimConfig, SimTls, Trickle,
    WrongTag, WrongTags,
};
pub use connection::{
    ConnFlags, ConnTuple, RemovedConnection, SimConnection, SimProtocol, TcpState,
};
pub use error::SimError;
pub use firewall::PSD_MAX_TRACKED_SOURCES;
pub use generate::GenerateSpec;
pub use kernel::{
    parse_conntrack, render_rows, ConntrackDump, ConntrackReader, KernelConnection,
    CONNTRACK_MAX_OUTPUT, CONNTRACK_TIMEOUT,
};
pub use kernel_bridge::{BridgeEvent, KernelBridge, BRIDGE_INTERVAL, MIRROR_TABLE};
pub use kinds::{AddressFormat, Family, FastTrackCounters, QueryCompare, SimClock};
pub use scenario::{
    demo_scenario, Flow, FlowKind, ListSeed, RouterSettings, Scenario, Vary, DEMO_SCENARIO,
};
pub use server::{Sim, SimHandle, SimStats};
pub use shared::{LIST_CHANGE_BACKLOG, REMOVAL_BACKLOG};
