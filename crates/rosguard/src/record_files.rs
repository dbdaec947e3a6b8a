//! A router's recording on disk as a size-capped set of rotated files: `<stem>.rec` is being
//! written, `<stem>.1.rec` is the one before it, up to `<stem>.<keep>.rec`; older ones are
//! deleted. Every file starts with its own header, so each one replays alone.
//!
//! The poll that would take the current file past `max_bytes` goes to a new file instead, so
//! no file is ever larger than `max_bytes` and a router's recordings never take more than
//! `max_bytes * (keep + 1)` bytes. A poll too large for an empty file is left out and said so
//! ([`Wrote::TooLarge`]). Every poll is written to the file whole, in one write, before the
//! next one is taken: a process killed in the middle leaves a file readable up to its last
//! complete poll.
//!
//! It encodes through [`Writer`] only, never by hand, so it follows the format wherever the
//! format goes. It deliberately does no threading, logging or retrying: the caller
//! (`record_tap`) decides what a failure means.

use std::fs::File;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use rosguard_core::policy::Protected;

use crate::recording::{Header, Poll, Writer};

/// Where a router's recording goes and how much of it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSet {
    /// The file being written (`<dir>/<router>.rec`).
    pub current: PathBuf,
    /// The most bytes one file holds.
    pub max_bytes: u64,
    /// Rotated files kept besides the current one.
    pub keep: usize,
}

impl FileSet {
    /// One file that is never rotated (`rosguard record -o FILE`); an existing one is
    /// replaced.
    pub fn single(path: PathBuf) -> Self {
        Self {
            current: path,
            max_bytes: u64::MAX,
            keep: 0,
        }
    }

    /// The `n`th file before the current one: `core.rec` -> `core.<n>.rec` (`n = 0`: the
    /// current one). A name without `.rec` gets `.<n>` appended.
    pub fn rotated(&self, n: usize) -> PathBuf {
        if n == 0 {
            return self.current.clone();
        }
        let name = self
            .current
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = match name.strip_suffix(".rec") {
            Some(stem) => format!("{stem}.{n}.rec"),
            None => format!("{name}.{n}"),
        };
        self.current.with_file_name(name)
    }

    /// The files of this set that exist, newest first.
    pub fn existing(&self) -> Vec<PathBuf> {
        (0..=self.keep)
            .map(|n| self.rotated(n))
            .filter(|p| p.exists())
            .collect()
    }

    /// Moves the current file to `.1`, `.1` to `.2` and so on, deleting what falls past
    /// `keep` (also the files a larger `keep` left behind).
    fn rotate(&self) -> Result<()> {
        for n in (self.keep + 1..=crate::config::MAX_RECORD_KEEP + 1).rev() {
            remove_if_present(&self.rotated(n))?;
        }
        if self.keep == 0 {
            return Ok(());
        }
        for n in (0..self.keep).rev() {
            let (from, to) = (self.rotated(n), self.rotated(n + 1));
            match std::fs::rename(&from, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot rotate {} to {}", from.display(), to.display())
                    })
                }
            }
        }
        Ok(())
    }
}

fn remove_if_present(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => {
            Err(e).with_context(|| format!("cannot delete the old recording {}", p.display()))
        }
    }
}

/// The router's protected addresses as last read: put into the first poll of each file that
/// lacks them, so that every file has the context its replay needs. The daemon reads them
/// only every few minutes and decides with what it read last; so does the replay of a file
/// that starts with them.
pub type RouterContext = [(Protected, Vec<IpAddr>)];

/// Adds to `poll` the kinds of `context` it lacks.
fn with_context(poll: &mut Poll, context: &RouterContext) {
    for (kind, set) in context {
        if !poll.observation.protected.iter().any(|(k, _)| k == kind) {
            poll.observation.protected.push((*kind, set.clone()));
        }
    }
}

/// What became of one poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrote {
    /// Appended to the current file.
    Appended,
    /// The current file was full: it was rotated and the poll starts a new one.
    Rotated,
    /// Even with nothing but a header before it, this poll (of `bytes` bytes) would not fit
    /// in `max_bytes`: left out.
    TooLarge { bytes: u64 },
}

/// A buffer the [`Writer`] encodes into, so that a poll's size is known before it reaches the
/// file.
#[derive(Clone, Default)]
struct Staged(Arc<Mutex<Vec<u8>>>);

impl Staged {
    fn take(&self) -> Vec<u8> {
        match self.0.lock() {
            Ok(mut b) => std::mem::take(&mut *b),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        }
    }
}

impl Write for Staged {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.lock() {
            Ok(mut b) => b.extend_from_slice(buf),
            Err(p) => p.into_inner().extend_from_slice(buf),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The file being written, with its header and size.
pub struct RecordFile {
    set: FileSet,
    header: Header,
    file: File,
    writer: Writer<Staged>,
    staged: Staged,
    /// Bytes in the file.
    len: u64,
    /// Polls in the file.
    polls: u64,
}

impl RecordFile {
    /// Starts a new current file of `set` with `header`: an existing current file is rotated
    /// away first (with `keep = 0`, replaced), the directory made if missing.
    pub fn start(set: FileSet, header: Header) -> Result<Self> {
        if let Some(dir) = set.current.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| {
                format!("cannot create the recording directory {}", dir.display())
            })?;
        }
        set.rotate()?;
        let file = File::create(&set.current)
            .with_context(|| format!("cannot create {}", set.current.display()))?;
        let staged = Staged::default();
        let writer = Writer::new(staged.clone(), &header)?;
        let mut f = Self {
            set,
            header,
            file,
            writer,
            staged,
            len: 0,
            polls: 0,
        };
        let bytes = f.staged.take();
        f.put(&bytes)?;
        Ok(f)
    }

    /// The set this file belongs to.
    pub fn set(&self) -> &FileSet {
        &self.set
    }

    /// The header of this file.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Bytes in the file so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True before the header is written (never, once started).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `poll`, or starts a new file with it when it would take this one past
    /// `max_bytes`. The first poll of a file gets what it lacks of `context`. On an error the
    /// file may hold part of the poll: drop it and start a new one.
    pub fn poll(&mut self, mut poll: Poll, context: &RouterContext) -> Result<Wrote> {
        if self.polls == 0 {
            with_context(&mut poll, context);
        }
        self.writer.poll(&poll)?;
        let bytes = self.staged.take();
        if self.len.saturating_add(bytes.len() as u64) <= self.set.max_bytes {
            self.put(&bytes)?;
            self.polls += 1;
            return Ok(Wrote::Appended);
        }
        if self.polls == 0 {
            // Not written: the next poll must not refer to its rows.
            self.writer.forget();
            return Ok(Wrote::TooLarge {
                bytes: bytes.len() as u64,
            });
        }
        let header = Header {
            started: poll.t,
            ..self.header.clone()
        };
        *self = Self::start(self.set.clone(), header)?;
        with_context(&mut poll, context);
        self.writer.poll(&poll)?;
        let bytes = self.staged.take();
        if self.len.saturating_add(bytes.len() as u64) > self.set.max_bytes {
            self.writer.forget();
            return Ok(Wrote::TooLarge {
                bytes: bytes.len() as u64,
            });
        }
        self.put(&bytes)?;
        self.polls += 1;
        Ok(Wrote::Rotated)
    }

    /// Writes `bytes` to the file in one go.
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .and_then(|()| self.file.flush())
            .with_context(|| format!("cannot write to {}", self.set.current.display()))?;
        self.len += bytes.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::{Prefilter, Recording};
    use rosguard_core::observation::Observation;
    use rosguard_core::settings::Settings;

    fn header() -> Header {
        Header::new("core", Prefilter::for_settings(&Settings::default()), 1.0e9)
    }

    /// A poll whose size (compressed) varies a little: the own addresses differ per `i`.
    fn poll(i: u64) -> Poll {
        let own = (0..8)
            .map(|k| IpAddr::from([10, (i % 200) as u8, k, (i * 7 % 250) as u8]))
            .collect();
        Poll {
            t: 1.0e9 + i as f64,
            observation: Observation {
                rows_read: i,
                own,
                ..Observation::default()
            },
        }
    }

    fn times(r: &Recording) -> Vec<u64> {
        r.polls.iter().map(|p| p.observation.rows_read).collect()
    }

    #[test]
    fn rotation_keeps_exactly_keep_files_each_readable_alone_and_within_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let set = FileSet {
            current: dir.path().join("rec/core.rec"),
            max_bytes: 1500,
            keep: 2,
        };
        let mut f = RecordFile::start(set.clone(), header()).unwrap();
        let mut rotations = 0;
        for i in 0..200 {
            match f.poll(poll(i), &[]).unwrap() {
                Wrote::Appended => {}
                Wrote::Rotated => rotations += 1,
                Wrote::TooLarge { bytes } => panic!("a poll of {bytes} bytes"),
            }
        }
        assert!(rotations >= 5, "{rotations} rotations");
        let files = set.existing();
        assert_eq!(
            files,
            [set.rotated(0), set.rotated(1), set.rotated(2)],
            "the current file and exactly keep rotated ones"
        );
        assert!(!set.rotated(3).exists(), "the oldest were deleted");
        let mut total = 0;
        let mut read = Vec::new();
        for p in &files {
            let size = std::fs::metadata(p).unwrap().len();
            assert!(size <= set.max_bytes, "{} is {size} bytes", p.display());
            total += size;
            let r = Recording::open(p).unwrap();
            assert_eq!(r.header.router, "core");
            assert!(r.cut.is_none(), "{:?}", r.cut);
            assert!(!r.polls.is_empty(), "{} has no poll", p.display());
            assert_eq!(r.header.started, r.polls[0].t, "its own header");
            read.push(times(&r));
        }
        assert!(total <= set.max_bytes * (set.keep as u64 + 1));
        // Newest first; together, the last polls in order, the first ones gone.
        read.reverse();
        let all: Vec<u64> = read.concat();
        let first = all[0];
        assert!(first > 0, "the oldest polls were deleted");
        assert_eq!(all, (first..200).collect::<Vec<_>>());
    }

    #[test]
    fn an_existing_recording_is_rotated_away_at_start_and_keep_zero_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let set = FileSet {
            current: dir.path().join("core.rec"),
            max_bytes: 1 << 20,
            keep: 1,
        };
        let mut f = RecordFile::start(set.clone(), header()).unwrap();
        f.poll(poll(1), &[]).unwrap();
        drop(f);
        let mut f = RecordFile::start(set.clone(), header()).unwrap();
        f.poll(poll(2), &[]).unwrap();
        assert_eq!(times(&Recording::open(&set.rotated(1)).unwrap()), [1]);
        assert_eq!(times(&Recording::open(&set.current).unwrap()), [2]);
        // A smaller keep deletes what a larger one left.
        let single = FileSet {
            keep: 0,
            ..set.clone()
        };
        let mut f = RecordFile::start(single, header()).unwrap();
        f.poll(poll(3), &[]).unwrap();
        assert_eq!(times(&Recording::open(&set.current).unwrap()), [3]);
        assert!(!set.rotated(1).exists());
        assert_eq!(
            FileSet::single("/x/today.gz".into()).rotated(2),
            Path::new("/x/today.gz.2")
        );
    }

    #[test]
    fn a_poll_too_large_for_a_file_is_left_out_and_the_bound_holds() {
        let dir = tempfile::tempdir().unwrap();
        let set = FileSet {
            current: dir.path().join("core.rec"),
            max_bytes: 400,
            keep: 1,
        };
        let mut f = RecordFile::start(set.clone(), header()).unwrap();
        let mut big = poll(1);
        big.observation.own = (0..200u32).map(|k| IpAddr::from(k.to_be_bytes())).collect();
        assert!(matches!(
            f.poll(big.clone(), &[]).unwrap(),
            Wrote::TooLarge { bytes } if bytes > 400
        ));
        assert!(Recording::open(&set.current).unwrap().polls.is_empty());
        let small = Poll {
            t: 2.0,
            observation: Observation::default(),
        };
        assert_eq!(f.poll(small.clone(), &[]).unwrap(), Wrote::Appended);
        // After a poll, a large one rotates and is still too large for the new file.
        assert!(matches!(f.poll(big, &[]).unwrap(), Wrote::TooLarge { .. }));
        for p in set.existing() {
            assert!(std::fs::metadata(&p).unwrap().len() <= 400);
        }
    }

    fn rows(n: u16) -> Vec<rosguard_core::model::Connection> {
        use rosguard_core::model::{ConnId, Connection, Endpoint, Family, Protocol};
        (0..n)
            .map(|i| Connection {
                id: ConnId::new(format!("*{i:X}")),
                family: Family::V4,
                protocol: Protocol::Udp,
                src: Endpoint {
                    addr: IpAddr::from([192, 168, 88, 10]),
                    port: Some(40000 + i),
                },
                dst: Endpoint {
                    addr: IpAddr::from([203, 0, 113, (i % 250) as u8]),
                    port: Some(443),
                },
                orig_packets: Some(5),
                repl_packets: Some(0),
                orig_bytes: Some(500),
                repl_bytes: Some(0),
                orig_fasttrack_packets: None,
                repl_fasttrack_packets: None,
                tcp_state: None,
            })
            .collect()
    }

    /// A poll left out is not one the next poll may refer to: the next is written whole.
    #[test]
    fn after_a_poll_left_out_the_next_refers_to_nothing_it_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let set = FileSet {
            current: dir.path().join("core.rec"),
            max_bytes: 1200,
            keep: 1,
        };
        let mut f = RecordFile::start(set.clone(), header()).unwrap();
        let with = |t: f64, n: u16| Poll {
            t,
            observation: Observation {
                candidates: rows(n),
                ..Observation::default()
            },
        };
        assert!(matches!(
            f.poll(with(1.0e9, 400), &[]).unwrap(),
            Wrote::TooLarge { .. }
        ));
        // The same first rows, now few enough to fit.
        assert_eq!(f.poll(with(1.0e9 + 2.0, 3), &[]).unwrap(), Wrote::Appended);
        let r = Recording::open(&set.current).unwrap();
        assert!(r.cut.is_none(), "{:?}", r.cut);
        assert_eq!(r.polls.len(), 1);
        assert_eq!(r.polls[0].observation.candidates, rows(3));
    }

    #[test]
    fn the_first_poll_of_every_file_carries_the_routers_context() {
        let dir = tempfile::tempdir().unwrap();
        let set = FileSet {
            current: dir.path().join("core.rec"),
            max_bytes: 1000,
            keep: 3,
        };
        let gateway: IpAddr = "192.168.88.254".parse().unwrap();
        let context = vec![(Protected::Gateway, vec![gateway])];
        let mut f = RecordFile::start(set.clone(), header()).unwrap();
        let mut rotated = false;
        for i in 0..20 {
            rotated |= f.poll(poll(i), &context).unwrap() == Wrote::Rotated;
        }
        assert!(rotated);
        for p in set.existing() {
            let r = Recording::open(&p).unwrap();
            assert_eq!(
                r.polls[0].observation.protected,
                context,
                "{} starts with the context",
                p.display()
            );
            assert!(
                r.polls[1..]
                    .iter()
                    .all(|p| p.observation.protected.is_empty()),
                "only the first poll gets it"
            );
        }
    }

    #[test]
    fn an_unusable_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let set = FileSet {
            current: file.join("sub/core.rec"),
            max_bytes: 1 << 20,
            keep: 1,
        };
        let e = format!("{:#}", RecordFile::start(set, header()).err().unwrap());
        assert!(
            e.contains("cannot create the recording directory") && e.contains("a-file/sub"),
            "{e}"
        );
    }
}
