//! rosguard's integration tests, one binary grouped by feature, against `routeros-sim` on
//! 127.0.0.1:0. Each module names the seed feature or issue behaviour it covers.

mod support;

mod cli;
mod cycle;
mod daemon;
mod daemon_record;
mod docs;
mod hostile;
mod imports;
mod lab;
mod licences;
mod metrics;
mod operate;
mod promises;
mod replay;
mod service;
mod sim_replay;
mod tune;
