//! The other-process half of the store's read-only and lock tests (`tests/store.rs`):
//!
//! - `rosguard-store-probe read DB ROUTER` opens DB with `Store::open_read_only` and prints
//!   `cycles N` (ROUTER's `cycles` counter) and `blocks N` (its active blocks at time 0), or
//!   the error and exits 1. The tests run it as another user, without write permission.
//! - `rosguard-store-probe lock DIR` takes the `StateLock` on DIR, prints `locked PID` and
//!   holds it until stdin ends (or it is killed), or prints the error and exits 1.
//!
//! A development tool, not part of rosguard's interface.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use rosguard_store::{StateLock, Store, StoreError};

fn read(db: PathBuf, router: &str) -> Result<(), StoreError> {
    let store = Store::open_read_only(&db)?;
    let cycles = store.counters(router)?.get("cycles").copied().unwrap_or(0);
    let blocks = store.active_blocks(router, 0)?.len();
    println!("cycles {cycles}");
    println!("blocks {blocks}");
    Ok(())
}

fn lock(dir: PathBuf) -> Result<(), StoreError> {
    let lock = StateLock::acquire(&dir)?;
    let mut out = std::io::stdout().lock();
    // The parent waits for this line; if it has gone, there is no one to hold the lock for.
    if writeln!(out, "locked {}", std::process::id())
        .and_then(|()| out.flush())
        .is_err()
    {
        return Ok(());
    }
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    drop(lock);
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["read", db, router] => read(PathBuf::from(db), router),
        ["lock", dir] => lock(PathBuf::from(dir)),
        _ => {
            eprintln!("usage: rosguard-store-probe read DB ROUTER | lock DIR");
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
