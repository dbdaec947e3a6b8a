//! The writer half of the store's SIGKILL test (`tests/store.rs`,
//! `kill9_loses_at_most_the_cycle_in_progress`): opens the store given as its only argument,
//! records cycles in a loop, continuing from what the file holds, and prints `committed N`
//! after each commit. The test kills it at arbitrary points and checks the file.
//!
//! A development tool, not part of rosguard's interface: every value it writes is derived from
//! the cycle number so the test can tell whether a cycle is there entirely or not at all.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use rosguard_store::{CycleRecord, NewBlock, Store, Strike};
use serde_json::json;

const ROUTER: &str = "edge";
const LIST: &str = "rosguard";
/// Blocks per cycle: enough that a kill often lands inside a transaction.
const BLOCKS: u64 = 25;
/// Strikes per cycle.
const STRIKES: u64 = 40;

fn cycle(n: u64) -> CycleRecord {
    let at = i64::try_from(n).unwrap_or(i64::MAX);
    CycleRecord {
        router: ROUTER.into(),
        at_unix: at,
        blocks: (0..BLOCKS)
            .map(|i| NewBlock {
                list: LIST.into(),
                address: format!("2001:db8::{n:x}:{i:x}")
                    .parse()
                    .expect("valid IPv6"),
                timeout_secs: 3600,
                level: 0,
                comment: format!("cycle {n}"),
                evidence: json!({"cycle": n, "index": i, "padding": "x".repeat(200)}),
                dry_run: false,
            })
            .collect(),
        counters: vec![("cycles".into(), 1), ("blocked".into(), BLOCKS)],
        strikes: Some(
            (0..STRIKES)
                .map(|i| Strike {
                    key: format!("conn-{i}"),
                    count: u32::try_from(n).unwrap_or(u32::MAX),
                    first_unix: 1,
                    last_unix: at,
                })
                .collect(),
        ),
        ..CycleRecord::default()
    }
}

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: rosguard-store-crash-writer DB");
        return ExitCode::FAILURE;
    };
    let mut store = match Store::open(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let done = store
        .counters(ROUTER)
        .ok()
        .and_then(|c| c.get("cycles").copied())
        .unwrap_or(0);
    let mut out = std::io::stdout().lock();
    // Bounded, in case the parent never kills it; a closed pipe also ends it (write error).
    for n in done + 1..done + 100_001 {
        if let Err(e) = store.record_cycle(&cycle(n)) {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
        if writeln!(out, "committed {n}")
            .and_then(|()| out.flush())
            .is_err()
        {
            return ExitCode::SUCCESS;
        }
    }
    ExitCode::SUCCESS
}
