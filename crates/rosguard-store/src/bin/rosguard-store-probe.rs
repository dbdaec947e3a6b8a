//! The other-process half of the store's read-only tests (`tests/store.rs`):
//!
//! - `rosguard-store-probe read DB ROUTER` opens DB with `Store::open_read_only` and prints
//!   `cycles N` (ROUTER's `cycles` counter) and `blocks N` (its active blocks at time 0), or
//!   the error and exits 1. The tests run it as another user, without write permission.
//!
//! A development tool, not part of rosguard's interface.

use std::path::PathBuf;
use std::process::ExitCode;

use rosguard_store::{Store, StoreError};

fn read(db: PathBuf, router: &str) -> Result<(), StoreError> {
    let store = Store::open_read_only(&db)?;
    let cycles = store.counters(router)?.get("cycles").copied().unwrap_or(0);
    let blocks = store.active_blocks(router, 0)?.len();
    println!("cycles {cycles}");
    println!("blocks {blocks}");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["read", db, router] => read(PathBuf::from(db), router),
        _ => {
            eprintln!("usage: rosguard-store-probe read DB ROUTER");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
