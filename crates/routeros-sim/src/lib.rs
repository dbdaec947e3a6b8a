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
//! - traffic: scenario files that play flows over time ([`Scenario`], see `SCENARIO.md`), and a
//!   generator for tables of millions of rows derived from index and seed ([`GenerateSpec`]);
//! - fault injection ([`Faults`], swappable at runtime with [`SimHandle::set_faults`], most of
//!   it aimed at command paths with a [`PathMatch`]): delays, closes, `!fatal`, garbage,
//!   oversized length prefixes, refused logins, prints that never end or trickle one row at a
//!   time ([`Trickle`], on tokio time), commands read but never answered ([`Silent`]), replies
//!   with a wrong or no `.tag` ([`WrongTags`]), `not enough permissions (9)` traps, a bad row
//!   mid-stream ([`BadRow`]), connections gone by the time their `remove` arrives;
//! - a manual clock ([`SimClock::Manual`]) for deterministic tests.
//!
//! Big prints stream: rows are produced in small chunks under a short lock and written with
//! TCP backpressure, never collected whole.
//!
//! It deliberately does not route packets, enforce filter rules, resolve DNS names in
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
mod generate;
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

pub use address_list::SimListEntry;
pub use cli::{run_cli, AddressFormatArg, FastTrackCountersArg, SimArgs};
pub use config::{
    BadRow, BadRowKind, Faults, PathMatch, RouterAddress, Silent, SimConfig, SimTls, Trickle,
    WrongTag, WrongTags,
};
pub use connection::{ConnFlags, ConnTuple, SimConnection, SimProtocol, TcpState};
pub use error::SimError;
pub use generate::GenerateSpec;
pub use kinds::{AddressFormat, Family, FastTrackCounters, QueryCompare, SimClock};
pub use scenario::{
    demo_scenario, Flow, FlowKind, ListSeed, RouterSettings, Scenario, Vary, DEMO_SCENARIO,
};
pub use server::{Sim, SimHandle, SimStats};
