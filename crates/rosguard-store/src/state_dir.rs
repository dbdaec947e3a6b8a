//! The state directory on disk: created private (0700, files 0600).
//!
//! The block history says which addresses were blocked and why, and the lock file names the
//! daemon's process: nothing for other local users to read. So a directory the store creates
//! is 0700 and a file it creates is 0600 (SQLite gives the `-wal` and `-shm` companions the
//! database file's mode).
//!
//! It deliberately does not change the mode of a directory or file that already exists: an
//! operator may have opened it up on purpose (say, for a group that runs `rosguard why`).

use std::fs::{DirBuilder, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use crate::StoreError;

/// The mode of a directory the store creates.
const DIR_MODE: u32 = 0o700;
/// The mode of a file the store creates.
const FILE_MODE: u32 = 0o600;

fn io_error(path: &Path, error: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Creates `dir` (mode 0700) if it does not exist; missing parents get the default mode.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
    }
    match DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => Ok(()),
        // Created meanwhile by another process: fine if it is a directory.
        Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(io_error(dir, e)),
    }
}

/// Creates `path` empty with mode 0600 if it does not exist, so that SQLite (which would
/// create it 0644) opens a private file and gives its `-wal` and `-shm` the same mode.
pub(crate) fn create_private_file(path: &Path) -> Result<(), StoreError> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_error(path, e)),
    }
}
