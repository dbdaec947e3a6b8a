//! A [`Backend`] that records what it reads ([`RecordingTap`]): the daemon's rolling recording
//! (`[record]`) and `rosguard record` are both this one wrapper.
//!
//! Each `observe` reads the router once, under the recording's loose pre-filter
//! ([`Prefilter`]), hands the poll to a writer thread, and returns to its caller what its own
//! settings would have read: the rows cut down by their candidate test, exactly as
//! [`RecordingBackend`](crate::recording::RecordingBackend) does in a replay. So the daemon
//! decides as it would without the tap, and a replay of the recording with the same settings
//! decides as the daemon did. What does change with the tap on: the router sends more rows
//! (so `rows_scanned`, and with `server_filter` the rows a poll reports, count the wider
//! filter), and `daemon.max_candidates` counts the rows the pre-filter keeps, so a flood
//! reaches it sooner (a truncated poll blocks nothing new, as always).
//!
//! The writer thread owns the files ([`RecordFile`]): the cycle never waits for the disk. At
//! most [`QUEUED_POLLS`] polls wait for it; past that a poll is left out of the recording,
//! with a warning. A failure (disk full, no permission) is logged and recording pauses for
//! [`RETRY_AFTER`], then tries a new file; `rosguard record` stops at its first failure
//! instead. [`RecordingTap::finish`] lets the thread write what is queued, waiting at most
//! [`FINISH_TIMEOUT`]. The daemon's tap follows `[record]` on every reload: a change applies
//! at each router's next poll, in a new file.
//!
//! It deliberately decides nothing, and writes nothing to the router: `apply` is the inner
//! backend's, untouched.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rosguard_core::backend::Backend;
use rosguard_core::decide::Decision;
use rosguard_core::observation::{Observation, ObservePlan};
use rosguard_core::outcome::{Applied, BackendError};
use rosguard_core::policy::Protected;
use rosguard_core::settings::Settings;
use tokio::sync::{oneshot, watch};
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::record_files::{FileSet, RecordFile, Wrote};
use crate::recording::{as_read_by, Header, Poll, Prefilter};
use crate::state::unix_now;

/// The most polls waiting for the disk (each up to `daemon.max_candidates` rows): the memory
/// the recording may hold besides the poll being written.
pub const QUEUED_POLLS: usize = 2;
/// How long the daemon's recording pauses after a failure before it tries a new file.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);
/// The longest [`RecordingTap::finish`] waits for the writer to write what is queued.
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a tap learns what to record.
pub enum Source {
    /// The daemon's config, as reloaded: `[record]`, retried after a failure.
    Config(watch::Receiver<Arc<Config>>),
    /// One file set, fixed; recording stops at the first failure (`rosguard record`).
    Fixed(FileSet),
}

/// What a tap has recorded so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordStats {
    /// Polls written.
    pub polls: u64,
    /// Rows in them.
    pub rows: u64,
    /// Bytes written, headers included.
    pub bytes: u64,
    /// Files started.
    pub files: u64,
    /// Polls left out: the disk fell behind, a failure paused recording, or a poll did not fit
    /// in `max_bytes`.
    pub lost: u64,
    /// The failure recording is paused or stopped by, if any.
    pub error: Option<String>,
}

#[derive(Debug, Default)]
struct Counters {
    polls: AtomicU64,
    rows: AtomicU64,
    bytes: AtomicU64,
    files: AtomicU64,
    lost: AtomicU64,
    error: Mutex<Option<String>>,
}

impl Counters {
    fn set_error(&self, e: Option<String>) {
        match self.error.lock() {
            Ok(mut g) => *g = e,
            Err(p) => *p.into_inner() = e,
        }
    }

    fn snapshot(&self) -> RecordStats {
        let error = match self.error.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        RecordStats {
            polls: self.polls.load(Ordering::Relaxed),
            rows: self.rows.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            files: self.files.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            error,
        }
    }
}

/// One poll for the writer, with where it goes.
struct Job {
    set: Arc<FileSet>,
    header: Header,
    poll: Poll,
    context: Arc<Vec<(Protected, Vec<IpAddr>)>>,
}

enum Msg {
    Poll(Box<Job>),
    /// Recording was turned off: close the file.
    Close,
    /// Answer once everything before this is written.
    Sync(oneshot::Sender<()>),
    /// A disk that does not answer: say so on the first, wait until the second says go.
    #[cfg(test)]
    Hold(std::sync::mpsc::Sender<()>, Receiver<()>),
}

/// The writer thread and the ways to reach it.
struct WriterThread {
    tx: SyncSender<Msg>,
    done: oneshot::Receiver<()>,
    handle: std::thread::JoinHandle<()>,
}

/// Sends on `done` when the thread ends, however it ends.
struct DoneGuard(Option<oneshot::Sender<()>>);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// A backend that records every poll it reads; see the module documentation.
pub struct RecordingTap<B> {
    inner: B,
    router: String,
    source: Source,
    retry_after: Option<Duration>,
    /// What is recorded now (`None`: nothing).
    target: Option<Arc<FileSet>>,
    writer: Option<WriterThread>,
    /// A file opened before the writer started (`rosguard record` fails at once without it).
    opened: Option<RecordFile>,
    /// The router's protected addresses as last read, for the first poll of each file.
    context: Arc<Vec<(Protected, Vec<IpAddr>)>>,
    close_pending: bool,
    /// The queue was full and no poll got through since (its warning was given).
    behind: bool,
    counters: Arc<Counters>,
}

impl<B: Backend> RecordingTap<B> {
    /// The daemon's tap for `router`, following `[record]` of `config`.
    pub fn following(inner: B, router: &str, config: watch::Receiver<Arc<Config>>) -> Self {
        Self::new(inner, router, Source::Config(config), Some(RETRY_AFTER))
    }

    /// A tap writing to `file`, already started (its header written), stopping at the first
    /// failure.
    pub fn to_file(inner: B, router: &str, file: RecordFile) -> Self {
        let mut tap = Self::new(inner, router, Source::Fixed(file.set().clone()), None);
        tap.opened = Some(file);
        tap
    }

    /// A tap over `inner` for `router`; after a failure, recording resumes after `retry_after`
    /// (`None`: never).
    pub fn new(inner: B, router: &str, source: Source, retry_after: Option<Duration>) -> Self {
        Self {
            inner,
            router: router.to_owned(),
            source,
            retry_after,
            target: None,
            writer: None,
            opened: None,
            context: Arc::new(Vec::new()),
            close_pending: false,
            behind: false,
            counters: Arc::new(Counters::default()),
        }
    }

    /// What was recorded so far.
    pub fn stats(&self) -> RecordStats {
        self.counters.snapshot()
    }

    /// The backend it wraps.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// Waits until every poll handed to the writer so far is written (or left out).
    pub async fn written(&self) {
        let Some(w) = &self.writer else { return };
        let (tx, rx) = oneshot::channel();
        let sender = w.tx.clone();
        // The queue may be full: wait for room off the executor.
        let sent = tokio::task::spawn_blocking(move || sender.send(Msg::Sync(tx)).is_ok()).await;
        if matches!(sent, Ok(true)) {
            let _ = rx.await;
        }
    }

    /// Lets the writer write what is queued (at most [`FINISH_TIMEOUT`]) and says what was
    /// recorded.
    pub async fn finish(mut self) -> RecordStats {
        if let Some(w) = self.writer.take() {
            drop(w.tx);
            match tokio::time::timeout(FINISH_TIMEOUT, w.done).await {
                Ok(_) => {
                    // The thread is past its last write: joining does not wait for the disk.
                    let _ = w.handle.join();
                }
                Err(_) => warn!(
                    router = self.router.as_str(),
                    "the recording did not finish writing within {}s (a slow disk?); its last polls may be missing",
                    FINISH_TIMEOUT.as_secs()
                ),
            }
        }
        self.counters.snapshot()
    }

    /// Follows the source: what should be recorded now.
    fn follow(&mut self) {
        let wanted = match &self.source {
            Source::Fixed(set) => Some(set.clone()),
            Source::Config(rx) => {
                let cfg = rx.borrow();
                cfg.record
                    .current_file(&self.router)
                    .map(|current| FileSet {
                        current,
                        max_bytes: cfg.record.max_bytes,
                        keep: cfg.record.keep,
                    })
            }
        };
        if wanted.as_ref() == self.target.as_deref() {
            return;
        }
        let router = self.router.as_str();
        match &wanted {
            Some(s) => info!(
                router,
                "recording every poll to {} ({} bytes a file, {} older files kept)",
                s.current.display(),
                s.max_bytes,
                s.keep
            ),
            None => {
                info!(router, "recording stopped ([record] has no dir)");
                self.close_pending = self.writer.is_some();
            }
        }
        self.target = wanted.map(Arc::new);
    }

    /// Remembers the protected addresses `obs` read.
    fn learn(&mut self, obs: &Observation) {
        if obs.protected.is_empty() {
            return;
        }
        let mut context = self.context.as_ref().clone();
        for (kind, set) in &obs.protected {
            context.retain(|(k, _)| k != kind);
            context.push((*kind, set.clone()));
        }
        context.sort_by_key(|(k, _)| *k);
        self.context = Arc::new(context);
    }

    /// Hands a poll to the writer without waiting for it.
    fn send(&mut self, job: Job) {
        let router = self.router.as_str();
        let w = match &mut self.writer {
            Some(w) => w,
            None => match spawn_writer(
                router,
                self.opened.take(),
                self.retry_after,
                self.counters.clone(),
            ) {
                Ok(w) => self.writer.insert(w),
                Err(e) => {
                    self.counters.lost.fetch_add(1, Ordering::Relaxed);
                    warn!(router, "cannot start the recording writer: {e}; protection goes on without it, trying again at the next poll");
                    return;
                }
            },
        };
        if self.close_pending {
            // Not sent while the queue is full: tried again at the next poll.
            self.close_pending = w.tx.try_send(Msg::Close).is_err();
        }
        match w.tx.try_send(Msg::Poll(Box::new(job))) {
            Ok(()) => self.behind = false,
            Err(TrySendError::Full(_)) => {
                self.counters.lost.fetch_add(1, Ordering::Relaxed);
                if !self.behind {
                    warn!(router, "the recording falls behind the disk ({QUEUED_POLLS} polls waiting): polls are left out of it until it catches up; protection goes on");
                    self.behind = true;
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                self.counters.lost.fetch_add(1, Ordering::Relaxed);
                warn!(
                    router,
                    "the recording writer stopped; starting it again at the next poll"
                );
                self.writer = None;
            }
        }
    }
}

/// The settings the tap reads with: the pre-filter's, with the router-side filter pushed only
/// when the caller's settings push it too (detection off reads the whole table), so the rows
/// a poll reports stay those the caller would have read.
fn reading_settings(prefilter: &Prefilter, settings: &Settings) -> Settings {
    let mut r = prefilter.reading_settings(settings);
    r.detection.server_filter = settings.detection.server_filter && settings.detection.enabled;
    r
}

impl<B: Backend> Backend for RecordingTap<B> {
    async fn connect(&mut self) -> Result<(), BackendError> {
        self.inner.connect().await
    }

    async fn observe(
        &mut self,
        plan: &ObservePlan,
        settings: &Settings,
    ) -> Result<Observation, BackendError> {
        self.follow();
        let target = match &self.target {
            Some(t) if !plan.context_only => t.clone(),
            _ => {
                let obs = self.inner.observe(plan, settings).await?;
                self.learn(&obs);
                return Ok(obs);
            }
        };
        let prefilter = Prefilter::for_settings(settings);
        let reading = reading_settings(&prefilter, settings);
        // A file's first poll needs the protected addresses: read them if none are known.
        let unknown = Protected::ALL
            .iter()
            .any(|k| !self.context.iter().any(|(c, _)| c == k));
        let read_plan = ObservePlan {
            refresh_protected: plan.refresh_protected || unknown,
            ..*plan
        };
        let t = unix_now();
        let obs = self.inner.observe(&read_plan, &reading).await?;
        self.learn(&obs);
        let theirs = as_read_by(&obs, settings, plan.refresh_protected, true);
        let header = Header::new(&self.router, prefilter, t.as_secs_f64());
        let job = Job {
            set: target,
            header,
            poll: Poll {
                t: t.as_secs_f64(),
                observation: obs,
            },
            context: self.context.clone(),
        };
        self.send(job);
        Ok(theirs)
    }

    async fn apply(&mut self, decision: &Decision, settings: &Settings) -> Applied {
        self.inner.apply(decision, settings).await
    }

    async fn close(&mut self) {
        self.inner.close().await
    }
}

fn spawn_writer(
    router: &str,
    opened: Option<RecordFile>,
    retry_after: Option<Duration>,
    counters: Arc<Counters>,
) -> std::io::Result<WriterThread> {
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUED_POLLS);
    let (done_tx, done) = oneshot::channel();
    // Its log lines go where the daemon's go (a test's captured log too).
    let dispatch = tracing::dispatcher::get_default(|d| d.clone());
    let name = router.to_owned();
    let handle = std::thread::Builder::new()
        .name("rosguard-record".into())
        .spawn(move || {
            let _done = DoneGuard(Some(done_tx));
            tracing::dispatcher::with_default(&dispatch, || {
                let mut w = Writing {
                    router: name,
                    file: opened,
                    retry_after,
                    paused_until: None,
                    stopped: false,
                    failing: None,
                    counters,
                };
                w.run(rx);
            });
        })?;
    Ok(WriterThread { tx, done, handle })
}

/// The writer thread's state.
struct Writing {
    router: String,
    file: Option<RecordFile>,
    retry_after: Option<Duration>,
    /// After a failure, polls are left out until then.
    paused_until: Option<Instant>,
    /// A failure without retry: everything is left out.
    stopped: bool,
    /// The failure last logged, so a lasting one is logged once.
    failing: Option<String>,
    counters: Arc<Counters>,
}

impl Writing {
    fn run(&mut self, rx: Receiver<Msg>) {
        for msg in rx {
            match msg {
                Msg::Close => self.file = None,
                Msg::Poll(job) => self.poll(*job),
                Msg::Sync(tx) => {
                    let _ = tx.send(());
                }
                #[cfg(test)]
                Msg::Hold(held, go) => {
                    let _ = held.send(());
                    let _ = go.recv();
                }
            }
        }
    }

    fn lose(&self) {
        self.counters.lost.fetch_add(1, Ordering::Relaxed);
    }

    fn poll(&mut self, job: Job) {
        if self.stopped {
            return self.lose();
        }
        if let Some(until) = self.paused_until {
            if Instant::now() < until {
                return self.lose();
            }
            self.paused_until = None;
        }
        // A new destination, or a new pre-filter (a reload), starts a new file.
        if self
            .file
            .as_ref()
            .is_some_and(|f| *f.set() != *job.set || f.header().prefilter != job.header.prefilter)
        {
            self.file = None;
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => match RecordFile::start((*job.set).clone(), job.header) {
                Ok(f) => {
                    self.counters.files.fetch_add(1, Ordering::Relaxed);
                    self.counters.bytes.fetch_add(f.len(), Ordering::Relaxed);
                    self.file.insert(f)
                }
                Err(e) => return self.failed(&job.set, e),
            },
        };
        let before = file.len();
        let rows = job.poll.observation.candidates.len() as u64;
        let result = file.poll(job.poll, &job.context);
        let after = file.len();
        match result {
            Ok(wrote) => {
                let grown = if wrote == Wrote::Rotated {
                    self.counters.files.fetch_add(1, Ordering::Relaxed);
                    debug!(
                        router = self.router.as_str(),
                        "recording: started a new {}",
                        job.set.current.display()
                    );
                    after
                } else {
                    after.saturating_sub(before)
                };
                self.counters.bytes.fetch_add(grown, Ordering::Relaxed);
                if let Wrote::TooLarge { bytes } = wrote {
                    self.lose();
                    warn!(
                        router = self.router.as_str(),
                        "a poll of {bytes} bytes does not fit in record.max_bytes = {} and was left out of the recording; raise record.max_bytes",
                        job.set.max_bytes
                    );
                    return;
                }
                self.counters.polls.fetch_add(1, Ordering::Relaxed);
                self.counters.rows.fetch_add(rows, Ordering::Relaxed);
                if self.failing.take().is_some() {
                    self.counters.set_error(None);
                    warn!(
                        router = self.router.as_str(),
                        "recording to {} again",
                        job.set.current.display()
                    );
                }
            }
            Err(e) => {
                // The file may hold part of the poll: it stays readable up to the last whole
                // one, and the next attempt starts a new file.
                self.file = None;
                self.failed(&job.set, e);
            }
        }
    }

    fn failed(&mut self, set: &FileSet, e: anyhow::Error) {
        self.lose();
        let text = format!("{e:#}");
        self.counters.set_error(Some(text.clone()));
        let router = self.router.as_str();
        let dir = set
            .current
            .parent()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        match self.retry_after {
            Some(after) => {
                self.paused_until = Some(Instant::now() + after);
                if self.failing.as_deref() != Some(text.as_str()) {
                    warn!(
                        router,
                        "recording failed: {text}; protection goes on without it; trying again in {}s (check that {dir} exists, is writable and has room, or change [record] dir)",
                        after.as_secs()
                    );
                } else {
                    debug!(router, "recording failed again: {text}");
                }
            }
            None => {
                self.stopped = true;
                warn!(router, "recording stopped: {text}");
            }
        }
        self.failing = Some(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::Recording;
    use rosguard_core::detect::is_candidate;
    use rosguard_core::model::{ConnId, Connection, Endpoint, Family, Protocol, TcpState};

    /// A router of fixed rows, read the way a backend reads: every row counted, the rows its
    /// settings' candidate test keeps returned. It records what it was asked.
    struct Rows {
        rows: Vec<Connection>,
        plans: Vec<ObservePlan>,
    }

    fn conn(i: u16, orig: u64, repl: u64, port: u16, p: Protocol) -> Connection {
        Connection {
            id: ConnId::new(format!("*{i}")),
            family: Family::V4,
            protocol: p,
            src: Endpoint {
                addr: "192.168.88.50".parse().unwrap(),
                port: Some(40000 + i),
            },
            dst: Endpoint {
                addr: "203.0.113.45".parse().unwrap(),
                port: Some(port),
            },
            tcp_state: (p == Protocol::Tcp).then_some(TcpState::Established),
            orig_packets: Some(orig),
            repl_packets: Some(repl),
            orig_fasttrack_packets: None,
            repl_fasttrack_packets: None,
            orig_bytes: None,
            repl_bytes: None,
        }
    }

    impl Backend for Rows {
        async fn connect(&mut self) -> Result<(), BackendError> {
            Ok(())
        }
        async fn observe(
            &mut self,
            plan: &ObservePlan,
            s: &Settings,
        ) -> Result<Observation, BackendError> {
            self.plans.push(*plan);
            Ok(Observation {
                candidates: self
                    .rows
                    .iter()
                    .filter(|c| is_candidate(c, &s.detection))
                    .cloned()
                    .collect(),
                rows_read: self.rows.len() as u64,
                protected: if plan.refresh_protected {
                    Protected::ALL
                        .iter()
                        .map(|k| (*k, vec!["192.168.88.254".parse().unwrap()]))
                        .collect()
                } else {
                    Vec::new()
                },
                ..Observation::default()
            })
        }
        async fn apply(&mut self, _d: &Decision, _s: &Settings) -> Applied {
            Applied::default()
        }
        async fn close(&mut self) {}
    }

    fn rows() -> Rows {
        Rows {
            rows: vec![
                conn(1, 9, 1, 443, Protocol::Tcp),
                conn(2, 9, 5, 443, Protocol::Tcp),
                conn(3, 2, 0, 443, Protocol::Udp),
                conn(4, 9, 0, 22, Protocol::Tcp),
                conn(5, 90, 80, 443, Protocol::Tcp),
                conn(6, 9, 0, 443, Protocol::Gre),
            ],
            plans: Vec::new(),
        }
    }

    fn strict() -> Settings {
        let mut s = Settings::default();
        s.detection.min_orig_packets = 5;
        s.detection.max_repl_packets = 1;
        s.detection.stall.enabled = false;
        s.detection.scan.enabled = false;
        s
    }

    #[tokio::test]
    async fn the_caller_gets_what_it_would_read_itself_and_the_file_more() {
        let dir = tempfile::tempdir().unwrap();
        let set = FileSet {
            current: dir.path().join("core.rec"),
            max_bytes: 1 << 20,
            keep: 1,
        };
        for settings in [Settings::default(), strict(), {
            let mut off = strict();
            off.detection.enabled = false;
            off
        }] {
            let mut tap = RecordingTap::new(rows(), "core", Source::Fixed(set.clone()), None);
            let mut plain = rows();
            for refresh in [true, false, false] {
                let plan = ObservePlan {
                    refresh_protected: refresh,
                    ..ObservePlan::default()
                };
                let got = tap.observe(&plan, &settings).await.unwrap();
                let want = plain.observe(&plan, &settings).await.unwrap();
                assert_eq!(got, want, "{settings:?}");
                // Polls come seconds apart in use; here, let the writer keep up.
                tap.written().await;
            }
            // The tap read the router once per poll, with the protected addresses at first.
            assert_eq!(tap.inner().plans.len(), 3);
            assert!(tap.inner().plans[0].refresh_protected);
            let stats = tap.finish().await;
            assert_eq!((stats.polls, stats.error), (3, None));
            let r = Recording::open(&set.current).unwrap();
            assert_eq!(r.polls.len(), 3);
            // The recording kept every row the pre-filter keeps, whatever the settings.
            let kept: Vec<&str> = r.polls[1]
                .observation
                .candidates
                .iter()
                .map(|c| c.id.as_str())
                .collect();
            assert_eq!(kept, ["*1", "*2", "*3", "*4"], "{settings:?}");
        }
    }

    #[tokio::test]
    async fn protected_addresses_are_read_when_unknown_and_hidden_when_not_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let set = FileSet::single(dir.path().join("core.rec"));
        let mut tap = RecordingTap::new(rows(), "core", Source::Fixed(set.clone()), None);
        let plan = ObservePlan::default();
        let got = tap.observe(&plan, &Settings::default()).await.unwrap();
        tap.written().await;
        assert!(tap.inner().plans[0].refresh_protected, "read for the file");
        assert!(got.protected.is_empty(), "the caller did not ask");
        tap.observe(&plan, &Settings::default()).await.unwrap();
        assert!(!tap.inner().plans[1].refresh_protected, "known now");
        tap.finish().await;
        let r = Recording::open(&set.current).unwrap();
        assert_eq!(r.polls[0].observation.protected.len(), 3);
    }

    #[tokio::test]
    async fn a_failure_is_retried_in_a_new_file_and_context_only_reads_are_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("rec");
        std::fs::write(&blocker, b"not a directory").unwrap();
        let set = FileSet {
            current: blocker.join("core.rec"),
            max_bytes: 1 << 20,
            keep: 1,
        };
        let mut tap = RecordingTap::new(
            rows(),
            "core",
            Source::Fixed(set.clone()),
            Some(Duration::ZERO),
        );
        let s = Settings::default();
        let plan = ObservePlan::default();
        let got = tap.observe(&plan, &s).await.unwrap();
        assert_eq!(got.candidates.len(), 3, "the caller is served all the same");
        tap.written().await;
        let e = tap.stats().error.unwrap();
        assert!(e.contains("cannot create the recording directory"), "{e}");
        std::fs::remove_file(&blocker).unwrap();
        tap.observe(&plan, &s).await.unwrap();
        tap.written().await;
        tap.observe(
            &ObservePlan {
                context_only: true,
                ..plan
            },
            &s,
        )
        .await
        .unwrap();
        let stats = tap.finish().await;
        assert_eq!(stats.polls, 1, "{stats:?}");
        assert_eq!(stats.lost, 1, "{stats:?}");
        assert_eq!(stats.error, None, "recovered");
        assert_eq!(Recording::open(&set.current).unwrap().polls.len(), 1);
    }

    /// Records one poll, then holds the writer thread until the returned sender is sent to.
    async fn held_after_one_poll<B: Backend>(
        tap: &mut RecordingTap<B>,
        plan: &ObservePlan,
        s: &Settings,
    ) -> std::sync::mpsc::Sender<()> {
        tap.observe(plan, s).await.unwrap();
        tap.written().await;
        let (held_tx, held) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel();
        let tx = tap.writer.as_ref().unwrap().tx.clone();
        tx.send(Msg::Hold(held_tx, go_rx)).unwrap();
        drop(tx);
        held.recv().unwrap();
        go
    }

    #[tokio::test]
    async fn a_disk_that_falls_behind_loses_polls_not_time() {
        let dir = tempfile::tempdir().unwrap();
        let set = FileSet::single(dir.path().join("core.rec"));
        let mut tap = RecordingTap::new(rows(), "core", Source::Fixed(set.clone()), None);
        let (plan, s) = (ObservePlan::default(), Settings::default());
        let go = held_after_one_poll(&mut tap, &plan, &s).await;
        // The writer is stuck: the queue fills, then polls are left out, and every observe
        // returns at once.
        for _ in 0..QUEUED_POLLS + 3 {
            assert_eq!(tap.observe(&plan, &s).await.unwrap().candidates.len(), 3);
        }
        assert_eq!(tap.stats().lost, 3);
        go.send(()).unwrap();
        let stats = tap.finish().await;
        assert_eq!((stats.polls, stats.lost), (1 + QUEUED_POLLS as u64, 3));
        assert_eq!(
            Recording::open(&set.current).unwrap().polls.len(),
            1 + QUEUED_POLLS
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_disk_does_not_hold_up_the_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let set = FileSet::single(dir.path().join("core.rec"));
        let mut tap = RecordingTap::new(rows(), "core", Source::Fixed(set), None);
        let (plan, s) = (ObservePlan::default(), Settings::default());
        let go = held_after_one_poll(&mut tap, &plan, &s).await;
        tap.observe(&plan, &s).await.unwrap();
        let waited = tokio::time::Instant::now();
        let stats = tap.finish().await;
        assert_eq!(
            waited.elapsed(),
            FINISH_TIMEOUT,
            "gave up after the timeout"
        );
        assert_eq!(stats.polls, 1, "the queued poll was not written");
        go.send(()).unwrap();
    }
}
