//! `rosguard`: protects MikroTik RouterOS networks from the outside, over the RouterOS API.
//!
//! This crate is the edge of the system: config, the daemon loop and its cycle shell, the
//! state store's use, the event stream and its subscribers (metrics), the one-shot commands,
//! the demo and the logs. It touches the network, the clock and the disk so that the crates
//! below (`rosguard-core` above all) do not. The decisions themselves live in
//! `rosguard-core`; the RouterOS reads and writes in `rosguard-routeros`.

pub mod admin;
pub mod config;
pub mod cycle;
pub mod daemon;
pub mod demo;
pub mod events;
pub mod logging;
pub mod metrics;
pub mod narrate;
pub mod output;
pub mod record;
pub mod record_files;
pub mod record_tap;
pub mod recording;
pub mod report;
pub mod sim_replay;
pub mod state;
