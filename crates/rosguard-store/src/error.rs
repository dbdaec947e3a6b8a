//! The one error type of the crate. Every variant names the state file and says what the
//! operator can do about it, so the binary can print it as one line.
//!
//! It deliberately does not carry rusqlite's error as a `source()`: its text is already in the
//! message, and printing the chain (`{:#}`) would repeat it.

use std::path::PathBuf;

use rusqlite::ErrorCode;

/// What went wrong with the state database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite refused or failed an operation.
    #[error("state database {}: {error}{}", path.display(), advice(error))]
    Sqlite {
        /// The database file (`:memory:` for an in-memory store).
        path: PathBuf,
        /// What SQLite said.
        error: rusqlite::Error,
    },
    /// The state directory, or a file in it (the database, the lock file), could not be
    /// created, opened or read.
    #[error(
        "{}: {error}; check that the state directory exists or can be created, and that this \
         user can write it",
        path.display()
    )]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// [`Store::open_read_only`](crate::Store::open_read_only) found no database: nothing has
    /// been written there yet.
    #[error(
        "state database {} does not exist: the daemon has not run yet, or it uses another \
         state_dir (pass the same --state DIR or daemon.state_dir as the daemon)",
        path.display()
    )]
    NotFound {
        /// The database file looked for.
        path: PathBuf,
    },
    /// A read-only open could not read the database or its `-wal`/`-shm` companions.
    #[error(
        "state database {}: {reason}; a reader needs read permission on the file, and while the \
         daemon runs on its -wal and -shm too: run this as the daemon's user or as root",
        path.display()
    )]
    Unreadable {
        /// The database file.
        path: PathBuf,
        /// What the OS or SQLite said.
        reason: String,
    },
    /// A read-only open found a file with an older schema, which only a writer can upgrade.
    #[error(
        "state database {} has schema version {found}, older than this rosguard's {supported}: \
         start the daemon once (it upgrades the file), then try again",
        path.display()
    )]
    Outdated {
        /// The database file.
        path: PathBuf,
        /// The version found in the file.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// Another process holds the state directory's lock
    /// ([`StateLock`](crate::StateLock)): a second daemon on the same state_dir.
    #[error(
        "state directory {} is in use by another rosguard ({}; lock file {}): stop that one, or \
         give this one another state_dir",
        dir.display(),
        match holder { Some(pid) => format!("pid {pid}"), None => "pid not known yet".to_owned() },
        lock_file.display()
    )]
    Locked {
        /// The state directory.
        dir: PathBuf,
        /// Its lock file.
        lock_file: PathBuf,
        /// The holder's process id as it wrote it into the lock file (`None` if it had not
        /// written it yet, or the file was edited).
        holder: Option<u32>,
    },
    /// The file was written by a newer rosguard, with a schema this one does not know.
    #[error(
        "state database {} has schema version {found}, this rosguard knows versions up to \
         {supported}: it was written by a newer rosguard; upgrade rosguard (or point state_dir \
         at another directory)",
        path.display()
    )]
    Migration {
        /// The database file.
        path: PathBuf,
        /// The version found in the file.
        found: u32,
        /// The newest version this build can read.
        supported: u32,
    },
    /// The file is damaged, or is some other program's SQLite database.
    #[error(
        "state database {} is damaged or not a rosguard database ({detail}); stop rosguard, \
         move the file and its -wal/-shm companions aside and start again (the block history \
         is lost, the router's address lists are not)",
        path.display()
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
}

/// What the operator can do about an SQLite error, as a `; ...` suffix (empty if nothing
/// useful can be said).
fn advice(error: &rusqlite::Error) -> &'static str {
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            "; another process holds a lock on it (is a second rosguard using the same \
             state_dir?): stop it, or retry"
        }
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            "; the file is damaged or not a database: stop rosguard, move it and its -wal/-shm \
             companions aside and start again (the block history is lost, the router's address \
             lists are not)"
        }
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::ReadOnly) => {
            "; check that state_dir exists and that this user can write the directory and the \
             file"
        }
        Some(ErrorCode::DiskFull) => "; the disk is full: free some space",
        Some(ErrorCode::SystemIoFailure) => "; the disk reported an I/O error: check it",
        _ => "",
    }
}
