//! The state directory on disk: created private (0700, files 0600), and [`StateLock`], the
//! one-writer lock that keeps a second daemon off a directory already in use.
//!
//! The block history says which addresses were blocked and why, and the lock file names the
//! daemon's process: nothing for other local users to read. So a directory the store creates
//! is 0700 and a file it creates is 0600 (SQLite gives the `-wal` and `-shm` companions the
//! database file's mode). A directory or file that already exists keeps the mode it has: an
//! operator may have opened it up on purpose (say, for a group that runs `rosguard why`).
//!
//! It deliberately does not delete the lock file (removing a file others may be about to lock
//! races them), does not wait for a lock (a second daemon should fail at once and say who
//! holds it) and does not work across machines (`flock` on NFS is not a reliable exclusion:
//! keep the state directory local).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::StoreError;

/// The mode of a directory the store creates.
const DIR_MODE: u32 = 0o700;
/// The mode of a file the store creates.
const FILE_MODE: u32 = 0o600;
/// The most bytes of a lock file read for the holder's pid.
const MAX_LOCK_CONTENT: u64 = 64;

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

/// An exclusive lock on a state directory: while one is held, [`StateLock::acquire`] on the
/// same directory fails with [`StoreError::Locked`], in this process or any other.
///
/// It is an `flock(2)` on [`StateLock::FILE_NAME`] in the directory, which holds the owner's
/// process id (for the error message of the next one to try). The kernel releases it when the
/// lock is dropped or the process ends in any way, `kill -9` included, so a crash never leaves
/// a stale lock behind. The file's descriptor is close-on-exec: a program the holder starts
/// does not inherit the lock.
///
/// ```
/// use rosguard_store::{StateLock, StoreError};
///
/// let dir = tempfile::tempdir()?;
/// let lock = StateLock::acquire(dir.path())?;
/// match StateLock::acquire(dir.path()) {
///     Err(StoreError::Locked { holder, .. }) => assert_eq!(holder, Some(std::process::id())),
///     other => panic!("a second lock: {other:?}"),
/// }
/// drop(lock);
/// StateLock::acquire(dir.path())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct StateLock {
    /// The open, locked file; closing it releases the lock.
    file: File,
    path: PathBuf,
}

impl StateLock {
    /// The lock file's name in the state directory.
    pub const FILE_NAME: &'static str = "rosguard.lock";

    /// Takes the lock on `dir` (created 0700 if missing), without waiting: if another holder
    /// has it, fails at once with [`StoreError::Locked`] naming that holder's pid. Other
    /// failures (the directory or the file cannot be created or opened) are
    /// [`StoreError::Io`].
    pub fn acquire(dir: &Path) -> Result<StateLock, StoreError> {
        create_private_dir(dir)?;
        let path = dir.join(Self::FILE_NAME);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        if let Err(error) = try_lock_exclusive(&file) {
            if error.kind() == ErrorKind::WouldBlock {
                return Err(StoreError::Locked {
                    dir: dir.to_path_buf(),
                    holder: read_holder(&mut file),
                    lock_file: path,
                });
            }
            return Err(io_error(&path, error));
        }
        let write_pid = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            writeln!(file, "{}", std::process::id())
        };
        write_pid(&mut file).map_err(|e| io_error(&path, e))?;
        Ok(StateLock { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // Closing the descriptor (when `file` drops) is what releases the lock. Emptying the
        // file first keeps a stale pid out of it; if that fails, the pid is merely stale.
        let _ = self.file.set_len(0);
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: `Err` of kind `WouldBlock` when another holder has it.
fn try_lock_exclusive(file: &File) -> std::io::Result<()> {
    loop {
        // SAFETY: flock only reads the descriptor number, which `file` keeps open for the
        // duration of the call.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            return Ok(());
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// The pid a holder wrote into the lock file, if it is there and reads as one.
fn read_holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(MAX_LOCK_CONTENT).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}
