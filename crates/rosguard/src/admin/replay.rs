//! `rosguard record` and `rosguard replay`: keep what a router's polls showed, and ask offline
//! what a setting would have blocked on it.
//!
//! The replay drives the daemon's own cycle (`run_cycle`, so `decide()`) over a
//! [`RecordingBackend`], on the recording's clock with an in-memory store: nothing sleeps, a
//! day replays in a minute or two, and the same config gives the same decisions as it did live.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rosguard_core::backend::Backend;
use rosguard_core::decide::GuardState;
use rosguard_core::observation::ObservePlan;
use rosguard_core::policy::SkipReason;
use rosguard_core::settings::Settings;
use routeros_proto::format_duration;
use serde::Serialize;

use crate::config::Config;
use crate::cycle::{run_cycle, CycleEnv, Limits, Notes};
use crate::events::Events;
use crate::outln;
use crate::output::printable;
use crate::record_files::{FileSet, RecordFile};
use crate::record_tap::RecordingTap;
use crate::recording::{Header, Poll, Prefilter, Reader, Recording, RecordingBackend};
use crate::state::{memory, unix_now};

use super::common::connect;

/// `rosguard record`: polls one router every `loop_delay` for `duration` (or until Ctrl-C or
/// SIGTERM) and writes each poll to `out`.
pub async fn record(
    cfg: &Config,
    only: Option<&str>,
    duration: Duration,
    out: &Path,
) -> Result<ExitCode> {
    let routers = cfg.select(only)?;
    let [router] = routers.as_slice() else {
        bail!(
            "record reads one router; choose it with --router (one of: {})",
            cfg.routers
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let header = Header::new(
        &router.name,
        Prefilter::for_settings(&router.settings),
        unix_now().as_secs_f64(),
    );
    // Opened before connecting: a file that cannot be written fails at once.
    let file = RecordFile::start(FileSet::single(out.to_path_buf()), header)?;
    let backend = connect(router, cfg.daemon.max_candidates)
        .await
        .map_err(|e| anyhow::anyhow!("router {:?}: {e}", router.name))?;
    // The daemon's tap: the same loose read, the same writer, one file without rotation.
    let mut tap = RecordingTap::to_file(backend, &router.name, file);
    let started = Instant::now();
    let stop = stop_signal();
    tokio::pin!(stop);
    let plan = ObservePlan {
        refresh_protected: true,
        ..ObservePlan::default()
    };
    let mut failed = None;
    loop {
        if let Err(e) = tap.observe(&plan, &router.settings).await {
            failed = Some(anyhow::anyhow!("router {:?}: {e}", router.name));
            break;
        }
        if tap.stats().error.is_some() {
            break;
        }
        let left = duration.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.daemon.loop_delay.min(left)) => {}
            _ = &mut stop => break,
        }
    }
    tap.close().await;
    let w = tap.finish().await;
    if let Some(e) = failed {
        return Err(e);
    }
    if let Some(e) = w.error {
        bail!("recording to {} failed: {e}", out.display());
    }
    let per_row = w.bytes.checked_div(w.rows).unwrap_or(0);
    eprintln!(
        "recorded {} polls, {} rows, {} bytes ({per_row} per row) of router {:?} to {}",
        w.polls,
        w.rows,
        w.bytes,
        router.name,
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// One block a replay made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayBlock {
    /// Seconds after the recording's first poll.
    pub at: u64,
    pub address: IpAddr,
    /// The entry's timeout.
    pub timeout: String,
    /// The same, in seconds.
    pub timeout_secs: u64,
    pub level: u32,
    /// The comment (the evidence in one line).
    pub comment: String,
}

/// What a replay decided.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayOutcome {
    pub polls: usize,
    pub rows: u64,
    /// Seconds from the first poll to the last.
    pub span: u64,
    pub blocks: Vec<ReplayBlock>,
    /// Addresses flagged but never to be blocked, with why (each reason once).
    pub spared: BTreeMap<IpAddr, BTreeSet<String>>,
    /// The spared addresses the allowlist (the router's or the config's) kept.
    pub allowlisted: BTreeSet<IpAddr>,
    /// Caps and brakes that held something back, with how many cycles they fired in.
    pub caps_hit: BTreeMap<String, u64>,
    /// What the settings could flag that the recording did not keep.
    pub blind_spots: Vec<String>,
    /// The recording was cut short.
    pub cut: Option<String>,
}

impl ReplayOutcome {
    /// The addresses blocked.
    pub fn blocked(&self) -> BTreeSet<IpAddr> {
        self.blocks.iter().map(|b| b.address).collect()
    }
}

/// One setting's replay, fed poll by poll: several run side by side over one read of a
/// recording (`--compare`, `rosguard tune`).
pub struct Replayer {
    router: String,
    settings: Settings,
    backend: RecordingBackend,
    state: GuardState,
    env: CycleEnv,
    notes: Notes,
    limits: Limits,
    first: Option<Duration>,
    out: ReplayOutcome,
}

impl Replayer {
    /// A replay of `router`'s recording (made under `prefilter`) with `settings`.
    pub fn new(router: &str, settings: &Settings, prefilter: &Prefilter) -> Self {
        let mut settings = settings.clone();
        // A replay asks what would have been blocked: it "adds" to its own list.
        settings.blocking.dry_run = false;
        Self {
            router: router.to_owned(),
            state: GuardState::new(&settings),
            out: ReplayOutcome {
                blind_spots: prefilter.blind_spots(&settings.detection),
                ..ReplayOutcome::default()
            },
            settings,
            backend: RecordingBackend::new(),
            env: CycleEnv {
                store: memory(),
                events: Events::new(),
            },
            notes: Notes::default(),
            limits: Limits {
                replay: true,
                ..Limits::default()
            },
            first: None,
        }
    }

    /// Runs the daemon's cycle on `poll`, at the poll's time.
    pub async fn step(&mut self, poll: &Arc<Poll>) -> Result<()> {
        let now = poll.time();
        let first = *self.first.get_or_insert(now);
        self.out.polls += 1;
        self.out.rows += poll.observation.candidates.len() as u64;
        self.out.span = now.saturating_sub(first).as_secs();
        self.backend.feed(poll.clone());
        let r = run_cycle(
            &mut self.backend,
            &self.router,
            &self.settings,
            &mut self.state,
            &self.env,
            &mut self.notes,
            Vec::new(),
            now,
            &self.limits,
        )
        .await
        .map_err(|e| anyhow::anyhow!("replaying: {e}"))?;
        let out = &mut self.out;
        let at = out.span;
        for b in r.new_blocks() {
            out.blocks.push(ReplayBlock {
                at,
                address: b.address,
                timeout: format_duration(b.timeout),
                timeout_secs: b.timeout.as_secs(),
                level: b.level,
                comment: b.comment.clone(),
            });
        }
        for s in r.skipped.iter().filter(|s| s.reason.is_safety()) {
            if matches!(
                s.reason,
                SkipReason::RouterAllowlist | SkipReason::ConfigAllow
            ) {
                out.allowlisted.insert(s.address);
            }
            out.spared
                .entry(s.address)
                .or_default()
                .insert(s.reason.to_string());
        }
        for c in &r.caps_hit {
            *out.caps_hit.entry(c.as_str().to_owned()).or_default() += 1;
        }
        if let Some(b) = &r.brake {
            if !r.caps_hit.contains(&b.cap) {
                *out.caps_hit.entry(b.cap.as_str().to_owned()).or_default() += 1;
            }
        }
        Ok(())
    }

    /// What the replay decided; `cut` is why the recording ended early, if it did.
    pub fn finish(mut self, cut: Option<&str>) -> ReplayOutcome {
        self.out.cut = cut.map(str::to_owned);
        self.out
    }
}

/// Replays `recording` under `settings` through the daemon's cycle.
pub async fn replay_with(
    recording: Recording,
    router: &str,
    settings: &Settings,
) -> Result<ReplayOutcome> {
    let mut r = Replayer::new(router, settings, &recording.header.prefilter);
    for p in recording.polls {
        r.step(&Arc::new(p)).await?;
    }
    Ok(r.finish(recording.cut.as_deref()))
}

/// The settings a replay uses: the router of the config the recording names (or `--router`),
/// or the defaults without a config.
pub(super) fn settings_for(
    cfg: Option<&Config>,
    only: Option<&str>,
    recorded: &str,
) -> Result<(String, Settings)> {
    let Some(cfg) = cfg else {
        return Ok((recorded.to_owned(), Settings::default()));
    };
    let name = only.unwrap_or(recorded);
    match (
        cfg.routers.iter().find(|r| r.name == name),
        cfg.routers.as_slice(),
    ) {
        (Some(r), _) => Ok((r.name.clone(), r.settings.clone())),
        (None, [one]) if only.is_none() => Ok((one.name.clone(), one.settings.clone())),
        _ => bail!(
            "the config has no router {name:?}; choose one with --router (one of: {})",
            cfg.routers
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `rosguard replay`.
pub async fn replay(
    file: &Path,
    a: Option<&Config>,
    b: Option<&Config>,
    only: Option<&str>,
    json: bool,
) -> Result<ExitCode> {
    let mut reader = Reader::open(file)?;
    let recorded = reader.header.router.clone();
    let prefilter = reader.header.prefilter.clone();
    let (name, sa) = settings_for(a, only, &recorded)?;
    let mut first = Replayer::new(&name, &sa, &prefilter);
    let mut second = match b {
        Some(b) => {
            let (_, sb) = settings_for(Some(b), only, &recorded)?;
            Some(Replayer::new(&name, &sb, &prefilter))
        }
        None => None,
    };
    // One pass over the file, however long: each poll is read once and dropped.
    for poll in reader.by_ref() {
        let poll = Arc::new(poll);
        first.step(&poll).await?;
        if let Some(s) = &mut second {
            s.step(&poll).await?;
        }
    }
    let first = first.finish(reader.cut());
    let second = second.map(|s| s.finish(reader.cut()));
    if json {
        let v = match &second {
            None => serde_json::json!({ "router": name, "replay": first }),
            Some(s) => serde_json::json!({
                "router": name,
                "a": first,
                "b": s,
                "only_a": first.blocked().difference(&s.blocked()).collect::<Vec<_>>(),
                "only_b": s.blocked().difference(&first.blocked()).collect::<Vec<_>>(),
                "both": first.blocked().intersection(&s.blocked()).collect::<Vec<_>>(),
            }),
        };
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    print_outcome(&name, "", &first);
    if let Some(s) = &second {
        print_outcome(&name, " (--compare)", s);
        let (ba, bb) = (first.blocked(), s.blocked());
        let list = |v: Vec<&IpAddr>| {
            if v.is_empty() {
                "-".to_owned()
            } else {
                v.iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        outln!("compared:");
        outln!(
            "  only under the first config:  {}",
            list(ba.difference(&bb).collect())
        );
        outln!(
            "  only under --compare:         {}",
            list(bb.difference(&ba).collect())
        );
        outln!(
            "  under both:                   {}",
            list(ba.intersection(&bb).collect())
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_outcome(router: &str, which: &str, o: &ReplayOutcome) {
    outln!(
        "replay of router {}{which}: {} polls over {}, {} recorded rows",
        printable(router),
        o.polls,
        format_duration(Duration::from_secs(o.span)),
        o.rows
    );
    if let Some(cut) = &o.cut {
        outln!("  the recording was cut short: {}", printable(cut));
    }
    for b in &o.blind_spots {
        outln!("  NOT ANSWERED: {}", printable(b));
    }
    if o.blocks.is_empty() {
        outln!("  would block nothing");
    }
    for b in &o.blocks {
        outln!(
            "  +{}s block {} for {}{}: {}",
            b.at,
            b.address,
            b.timeout,
            if b.level > 0 {
                format!(" (repeat offender, level {})", b.level)
            } else {
                String::new()
            },
            printable(&b.comment)
        );
    }
    for (a, why) in &o.spared {
        outln!(
            "  spared {a}: {}",
            printable(&why.iter().cloned().collect::<Vec<_>>().join("; "))
        );
    }
    for (c, n) in &o.caps_hit {
        outln!("  held back by {} in {n} cycles", printable(c));
    }
}
