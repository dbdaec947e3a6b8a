//! The one-shot commands: `once`, `list`, `unblock`, `clear`, `block`, `allow`, `stats`,
//! `status`, `why`, `firewall`, `record`, `replay`, `tune`.
//!
//! Each does one thing per selected router through the same RouterOS backend the daemon uses,
//! prints what it can for every router (a router that cannot be reached is marked, the others
//! are still shown), and exits non-zero when any router failed, after printing the rest.
//! Operator decisions (unblock, block, allow, clear) are recorded in the state store the
//! daemon reads, so the running daemon honours them at its next cycle.

mod chart;
mod common;
mod firewall;
mod lists;
mod once;
mod replay;
mod stats;
mod tune;
mod why;

pub use common::{connect, format_unix, parse_address};
pub use firewall::{firewall, firewall_rules, FilterRule, FirewallAction, RULE_SIGNATURE};
pub use lists::{allow, block, clear, list, unblock, BlockArgs};
pub use once::{once, print_report};
pub use replay::{record, replay, replay_with, ReplayBlock, ReplayOutcome, Replayer};
pub use stats::{stats, status};
pub use tune::{sweep, tune, Grid, Labels, Point, Row, Sweep};
pub use why::why;
