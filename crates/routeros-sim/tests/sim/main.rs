//! Integration tests of routeros-sim over real sockets on 127.0.0.1, with a raw test client
//! built on routeros-proto (and, in `librouteros`, a real third-party client).

mod cli;
mod client;
mod commands;
mod connections;
mod faults;
mod fields;
mod filter;
mod generator;
mod kernel;
mod librouteros;
mod lists;
mod login;
mod portscan;
mod scenario;
mod seam;
mod sessions;
mod system;

use routeros_sim::{Sim, SimClock, SimConfig, SimHandle};

/// Starts a simulator on a free loopback port.
pub async fn start(cfg: SimConfig) -> SimHandle {
    Sim::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator did not start")
}

/// The default configuration with a manual clock.
pub fn manual() -> SimConfig {
    SimConfig {
        clock: SimClock::Manual,
        ..SimConfig::default()
    }
}
