//! `rosguard`: protects MikroTik RouterOS networks from the outside, over the RouterOS API.
//!
//! This crate is the edge of the system: config, the daemon loop, the one-shot commands, the
//! demo and the logs. It touches the network, the clock and the disk so that the crates below
//! (`rosguard-core` above all) do not. The detection and policy logic itself lives in
//! `rosguard-core`; this crate only wires it to routers.

pub mod admin;
pub mod config;
pub mod cycle;
pub mod daemon;
pub mod demo;
pub mod logging;
pub mod metrics;
pub mod output;
