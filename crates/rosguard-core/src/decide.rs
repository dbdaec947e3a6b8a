//! One cycle's decision, pure: [`decide`] takes what a poll saw, the router's [`GuardState`],
//! the settings, the [`History`] and the time, and returns a typed [`Decision`]; after the
//! backend applied it, [`GuardState::settle`] takes in what took effect.
//!
//! Everything that is policy lives here: the never-block sets (fail closed while the router's
//! protected addresses are unknown), detection, confirmation across polls, scans and the
//! router's staging list, the panic brake, restores after a reboot and hand removals, blocks
//! shared by other routers, the per-cycle cap, the list-size and hourly caps (which count only
//! adds that took effect), escalation, and what dry run reports once.
//!
//! Time is an argument, never read: the daemon passes the wall clock as time since the UNIX
//! epoch (block times are persisted), a replay passes the recording's clock, a test any value.
//! Same inputs, same decision.
//!
//! It deliberately does no IO: the backend observes and applies, the daemon persists and logs.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::detect::{
    asymmetric_miss, choose_target, is_scan_attempt, is_stall_candidate, Evidence, Finding, Miss,
    Rule,
};
use crate::history::{ActiveRecord, History};
use crate::model::{AddrSet, Family, ListAddress, Networks};
use crate::observation::{Observation, ObservePlan};
use crate::outcome::AddResult;
use crate::policy::{self, PolicyContext, Protected, Removal, SkipReason, MAX_COMMENT_BYTES};
use crate::scan::ScanTracker;
use crate::settings::Settings;
use crate::stall::StallTracker;
use crate::state::{panic_brake, Escalation, RateCap, Tracker, TrackerEntry, TrackerSettings};

/// How often the gateways, DNS servers and sessions are re-read once known.
pub const PROTECTED_REFRESH: Duration = Duration::from_secs(300);

/// A safety cap or brake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cap {
    /// `blocking.max_list_size`.
    MaxListSize,
    /// `blocking.max_blocks_per_hour`.
    MaxBlocksPerHour,
    /// `blocking.panic_ratio`: most of the table looks one-sided.
    PanicBrake,
    /// The backend's candidate limit was reached: the picture is incomplete.
    CandidateLimit,
}

impl Cap {
    /// The stable name (metrics label, counters).
    pub fn as_str(self) -> &'static str {
        match self {
            Cap::MaxListSize => "max_list_size",
            Cap::MaxBlocksPerHour => "max_blocks_per_hour",
            Cap::PanicBrake => "panic_brake",
            Cap::CandidateLimit => "candidate_limit",
        }
    }
}

/// A cap that stopped something this cycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapHit {
    /// Which.
    pub cap: Cap,
    /// The first cycle of this episode: log it loudly (once), not every cycle.
    pub news: bool,
    /// What happened and what to do, for the log.
    pub message: String,
}

/// Why a planned add is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum AddKind {
    /// This cycle's own finding.
    New,
    /// A block that should still stand and is missing from the router (reboot, wipe).
    Restored,
    /// Another router's block (`share_blocks`).
    Shared {
        /// The router that made it.
        from: String,
    },
}

/// One planned address-list addition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedAdd {
    /// The address.
    pub address: IpAddr,
    /// Its family (which list menu).
    pub family: Family,
    /// The entry's timeout.
    pub timeout: Duration,
    /// Escalation level (earlier blocks remembered).
    pub level: u32,
    /// The entry's comment.
    pub comment: String,
    /// Why.
    pub kind: AddKind,
    /// The finding behind a new block.
    pub finding: Option<Finding>,
    /// The other router's evidence behind a shared block (JSON text).
    pub shared_evidence: Option<String>,
}

/// A finding not acted on, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skip {
    /// The address that was not blocked.
    pub address: IpAddr,
    /// The rule that flagged it.
    pub rule: Rule,
    /// `tcp 10.0.0.2:40000 -> 203.0.113.5:443`, or the staging list.
    pub what: String,
    /// Why not.
    pub reason: SkipReason,
}

/// A rosguard entry an operator removed on the router by hand (the router did not reboot):
/// honoured as a lift, not restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lift {
    /// The address.
    pub address: IpAddr,
    /// Re-blocking it is suppressed until then (`blocking.unblock_hold` from now).
    pub until: Duration,
}

/// An entry of rosguard's (a `rosguard:` comment) found on the router without a record, for
/// example after a crash between the add and the record: recorded now, so `why` and restores
/// know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adopted {
    /// The address.
    pub address: IpAddr,
    /// What remains of its timeout on the router.
    pub remaining: Duration,
    /// Its comment.
    pub comment: String,
}

/// Why nothing new was blocked this cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Brake {
    /// Which brake.
    pub cap: Cap,
    /// Asymmetric connections flagged.
    pub flagged: u64,
    /// The table's size as far as the cycle knows.
    pub table_size: u64,
}

/// Candidate rows not flagged, by why: for the debug log, aggregated per cycle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ignored {
    /// Protocol not monitored.
    pub protocol: u64,
    /// Destination port not monitored.
    pub port: u64,
    /// Counters within the thresholds.
    pub counters: u64,
}

/// What one cycle decided.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Decided in dry run: nothing is to change on the router.
    pub dry_run: bool,
    /// Detection is off (`detection.enabled = false`): nothing was looked at.
    pub detection_off: bool,
    /// Findings this cycle: asymmetric connections, scanners, staged addresses.
    pub flagged: u64,
    /// Of those, the ones the tracker confirmed (`min_observations`, ...).
    pub confirmed: u64,
    /// Candidate rows that were not flagged, by why.
    pub ignored: Ignored,
    /// The table's size as far as the cycle knows.
    pub table_size: u64,
    /// Address-list additions, in order: restores, shared, new.
    pub adds: Vec<PlannedAdd>,
    /// Connections to remove (in dry run: the ones not reported before).
    pub removals: Vec<Removal>,
    /// Findings not acted on.
    pub skipped: Vec<Skip>,
    /// Findings over `max_conn_per_cycle`: they come back next cycle.
    pub deferred: u64,
    /// Blocks a cap or brake held back.
    pub capped: u64,
    /// Findings acted on (a block, a removal or both).
    pub acted: u64,
    /// The caps that held something back.
    pub caps: Vec<CapHit>,
    /// The brake, when it held everything back.
    pub brake: Option<Brake>,
    /// Hand removals honoured.
    pub lifts: Vec<Lift>,
    /// Entries adopted.
    pub adopted: Vec<Adopted>,
    /// Protected sets still unknown (nothing is blocked while any is).
    pub protection_missing: Vec<Protected>,
    /// History lookups that failed (the decision failed closed on them).
    pub history_errors: Vec<String>,
    /// The blocks that should still stand were checked this cycle.
    pub reconciled: bool,
    /// The router's uptime showed a reboot since a block that had to be restored.
    pub rebooted: bool,
}

/// What the decision keeps about one router across cycles and reconnects.
#[derive(Debug, Clone)]
pub struct GuardState {
    tracker: Tracker,
    scans: ScanTracker,
    stalls: StallTracker,
    rate: RateCap,
    protected: HashMap<Protected, AddrSet>,
    protected_at: Option<Duration>,
    caps_reported: HashSet<Cap>,
    dry_run_blocked: HashMap<IpAddr, Duration>,
    dry_run_removals: HashMap<IpAddr, Duration>,
    needs_restore: bool,
    last_restore: Option<Duration>,
}

fn tracker_settings(s: &Settings) -> TrackerSettings {
    TrackerSettings {
        min_observations: s.detection.min_observations,
        min_flagged_connections: s.detection.min_flagged_connections,
        window: s.detection.window,
        ..TrackerSettings::default()
    }
}

fn hourly_cap(s: &Settings) -> Option<u32> {
    Some(s.blocking.max_blocks_per_hour).filter(|&n| n > 0)
}

impl GuardState {
    /// Fresh state: nothing learnt, protected addresses unknown, restore due.
    pub fn new(s: &Settings) -> Self {
        Self {
            tracker: Tracker::new(tracker_settings(s)),
            scans: ScanTracker::new(),
            stalls: StallTracker::new(),
            rate: RateCap::new(hourly_cap(s)),
            protected: HashMap::new(),
            protected_at: None,
            caps_reported: HashSet::new(),
            dry_run_blocked: HashMap::new(),
            dry_run_removals: HashMap::new(),
            needs_restore: true,
            last_restore: None,
        }
    }

    /// New settings (a config reload): what the tracker learnt and the blocks the hourly cap
    /// counted are kept; dry-run memory goes when dry run is switched off.
    pub fn reconfigure(&mut self, s: &Settings) {
        self.tracker.set_settings(tracker_settings(s));
        self.rate.set_limit(hourly_cap(s));
        if !s.blocking.dry_run {
            self.dry_run_blocked.clear();
            self.dry_run_removals.clear();
        }
    }

    /// A new connection to the router: check the blocks that should stand at the next cycle.
    pub fn connected(&mut self) {
        self.needs_restore = true;
    }

    /// What the backend should read this cycle.
    pub fn plan(&self, s: &Settings, now: Duration) -> ObservePlan {
        let refresh_protected = Protected::ALL
            .iter()
            .any(|k| !self.protected.contains_key(k))
            || self
                .protected_at
                .is_none_or(|t| now.saturating_sub(t) >= PROTECTED_REFRESH);
        ObservePlan {
            refresh_protected,
            read_uptime: self.restore_due(s, now),
            context_only: false,
        }
    }

    fn restore_due(&self, s: &Settings, now: Duration) -> bool {
        !s.blocking.dry_run
            && (self.needs_restore
                || self
                    .last_restore
                    .is_none_or(|t| now.saturating_sub(t) >= s.cycle.reconcile_interval))
    }

    /// The tracker's memory, for persisting (empty with the script's K = N = 1).
    pub fn export_tracker(&self, now: Duration) -> Vec<TrackerEntry> {
        self.tracker.export(now)
    }

    /// Restores persisted tracker memory after a restart; a streak older than three loop
    /// delays (at least 10 s) is broken.
    pub fn import_tracker(
        &mut self,
        entries: impl IntoIterator<Item = TrackerEntry>,
        s: &Settings,
        now: Duration,
    ) {
        let gap = (s.cycle.loop_delay * 3).max(Duration::from_secs(10));
        self.tracker.import(entries, now, gap);
    }

    /// True when the tracker remembers anything across polls (K or N above 1).
    pub fn tracker_persists(s: &Settings) -> bool {
        s.detection.min_observations > 1 || s.detection.min_flagged_connections > 1
    }

    /// Takes in what the backend did with `d`: an add that took effect (or would have, in dry
    /// run) uses the hourly budget; a failed or no-op add does not.
    pub fn settle(&mut self, d: &Decision, results: &[AddResult], now: Duration) {
        let mut effective_new = false;
        for (a, r) in d.adds.iter().zip(results) {
            if !r.took_effect() {
                continue;
            }
            if matches!(a.kind, AddKind::New | AddKind::Shared { .. }) {
                self.rate.try_take(now);
                effective_new = true;
            }
            if d.dry_run {
                self.dry_run_blocked
                    .insert(a.address.to_canonical(), now + a.timeout);
            }
        }
        let capped = d
            .caps
            .iter()
            .any(|c| matches!(c.cap, Cap::MaxListSize | Cap::MaxBlocksPerHour));
        if effective_new && !capped {
            // Blocks went through uncapped: the next time a cap is hit is news again.
            self.caps_reported.remove(&Cap::MaxListSize);
            self.caps_reported.remove(&Cap::MaxBlocksPerHour);
        }
    }

    /// Blocks still allowed in the current hour (`None`: no cap).
    pub fn hourly_budget(&mut self, now: Duration) -> Option<u32> {
        self.rate.remaining(now)
    }

    fn cap_hit(&mut self, caps: &mut Vec<CapHit>, cap: Cap, message: impl FnOnce() -> String) {
        if caps.iter().any(|c| c.cap == cap) {
            return;
        }
        let news = self.caps_reported.insert(cap);
        caps.push(CapHit {
            cap,
            news,
            message: message(),
        });
    }
}

/// The addresses of list entries, for membership.
fn entry_set<'a>(entries: impl IntoIterator<Item = &'a crate::model::ListEntry>) -> AddrSet {
    AddrSet::from_entries(entries)
}

/// `comment` with `suffix`, within RouterOS's comment length.
fn fit_comment(comment: &str, suffix: &str) -> String {
    let max = MAX_COMMENT_BYTES.saturating_sub(suffix.len());
    format!("{}{suffix}", policy::truncate_to(comment, max))
}

/// What must never be blocked, from one observation: the router's allowlist and own
/// addresses, its networks (unless `block_lan_hosts`), rosguard's addresses, the protected
/// sets known so far (a kind not in `protected` blocks everything), the operator unblocks
/// (`None`: unreadable, which blocks everything too) and the enabled entries of the block list.
/// The same checks guard `rosguard block`.
pub fn context(
    obs: &Observation,
    s: &Settings,
    protected: &HashMap<Protected, AddrSet>,
    unblocked: Option<HashMap<IpAddr, Duration>>,
) -> PolicyContext {
    let b = &s.blocking;
    PolicyContext {
        router_allowlist: entry_set(&obs.allowlist),
        config_allow: b.allow.iter().map(|n| ListAddress::Net(n.0)).collect(),
        local: if b.check_local_addr {
            obs.addresses.iter().map(|n| n.addr()).collect()
        } else {
            AddrSet::default()
        },
        lan: if b.block_lan_hosts {
            Networks::default()
        } else {
            Networks::new(obs.addresses.iter().copied())
        },
        own: obs.own.clone(),
        protected: protected.clone(),
        unknown: Protected::ALL
            .into_iter()
            .filter(|k| !protected.contains_key(k))
            .collect(),
        unblocks_unknown: unblocked.is_none(),
        unblocked: unblocked.unwrap_or_default(),
        already_blocked: entry_set(obs.block_list.iter().filter(|e| !e.disabled)),
    }
}

/// The protected sets an observation read, by kind.
pub fn protected_of(obs: &Observation) -> HashMap<Protected, AddrSet> {
    obs.protected
        .iter()
        .map(|(k, v)| (*k, v.iter().copied().collect()))
        .collect()
}

/// Decides one cycle. See the module docs.
pub fn decide(
    obs: &Observation,
    st: &mut GuardState,
    s: &Settings,
    history: &dyn History,
    now: Duration,
) -> Decision {
    let d = &s.detection;
    let b = &s.blocking;
    let mut out = Decision {
        dry_run: b.dry_run,
        detection_off: !d.enabled,
        ..Decision::default()
    };

    // What must never be blocked. Protected sets read this poll replace what was known; a
    // set that could not be read keeps its last known value; one never read blocks everything.
    for (kind, addrs) in &obs.protected {
        st.protected.insert(*kind, addrs.iter().copied().collect());
    }
    if Protected::ALL
        .iter()
        .all(|k| obs.protected.iter().any(|(r, _)| r == k))
    {
        st.protected_at = Some(now);
    }
    out.protection_missing = Protected::ALL
        .into_iter()
        .filter(|k| !st.protected.contains_key(k))
        .collect();
    let networks = Networks::new(obs.addresses.iter().copied());
    let unblocked = match history.unblocked(now) {
        Ok(u) => Some(u),
        Err(e) => {
            out.history_errors
                .push(format!("reading operator unblocks: {e}"));
            None
        }
    };
    st.dry_run_blocked.retain(|_, until| *until > now);
    st.dry_run_removals.retain(|_, until| *until > now);
    let mut ctx = context(obs, s, &st.protected, unblocked);
    if b.dry_run {
        ctx.already_blocked
            .extend(st.dry_run_blocked.keys().copied());
    }

    // Detection.
    let mut asymmetric = Vec::new();
    let mut extra = Vec::new();
    let mut stalled_flows = 0u64;
    if d.enabled {
        for c in &obs.candidates {
            match asymmetric_miss(c, d) {
                None => asymmetric.push(Finding::asymmetric(
                    c.clone(),
                    choose_target(c, d.block_target, &networks),
                )),
                Some(_) if is_scan_attempt(c, d) || is_stall_candidate(c, d) => {}
                Some(Miss::Protocol) => out.ignored.protocol += 1,
                Some(Miss::Port) => out.ignored.port += 1,
                Some(Miss::Counters) => out.ignored.counters += 1,
            }
        }
        extra = st.scans.observe(&obs.candidates, d, now);
        let stalled = st.stalls.observe(&obs.candidates, d, &networks, now);
        stalled_flows = stalled.len() as u64;
        extra.extend(stalled);
        if !d.scan.staging_list.is_empty() {
            extra.extend(obs.staging.iter().filter_map(|e| {
                Some(Finding {
                    target: e.host()?,
                    rule: Rule::RouterPsd,
                    evidence: Evidence::Staged {
                        list: d.scan.staging_list.clone(),
                    },
                })
            }));
        }
    }
    // Everything one-sided counts for the panic brake: a dead uplink makes flows look
    // asymmetric and stall alike; scans and staged addresses are no symptom of it.
    let flagged_asymmetric = asymmetric.len() as u64 + stalled_flows;
    // Stalled flows are in `extra` too: count each finding once.
    out.flagged = asymmetric.len() as u64 + extra.len() as u64;
    let mut confirmed = st.tracker.observe(asymmetric, now);
    confirmed.extend(extra);
    out.confirmed = confirmed.len() as u64;

    // The brakes: an incomplete picture, or most of the table one-sided (only when the brake
    // could change anything: something new to add).
    out.table_size = obs.table_size.unwrap_or(obs.rows_read).max(obs.rows_read);
    let restore_due = st.restore_due(s, now);
    let usable = |ctx: &PolicyContext, ip: IpAddr| {
        ctx.never_block_reason(ip).is_none() && !ctx.already_blocked.contains(ip)
    };
    let anything_new =
        restore_due || !obs.shared.is_empty() || confirmed.iter().any(|f| usable(&ctx, f.target));
    if obs.truncated && anything_new {
        out.brake = Some(Brake {
            cap: Cap::CandidateLimit,
            flagged: flagged_asymmetric,
            table_size: out.table_size,
        });
        let n = obs.candidates.len();
        st.cap_hit(&mut out.caps, Cap::CandidateLimit, || {
            format!("the connection table held more than {n} candidate rows: the picture is incomplete, blocking nothing this cycle")
        });
    } else if flagged_asymmetric > 0 && b.panic_ratio < 1.0 && anything_new {
        if panic_brake(out.table_size, flagged_asymmetric, b.panic_ratio) {
            out.brake = Some(Brake {
                cap: Cap::PanicBrake,
                flagged: flagged_asymmetric,
                table_size: out.table_size,
            });
            let (ratio, total) = (b.panic_ratio, out.table_size);
            st.cap_hit(&mut out.caps, Cap::PanicBrake, || {
                format!("panic brake: {flagged_asymmetric} of {total} connections look one-sided (more than panic_ratio = {ratio}); is the uplink down? blocking nothing until this clears")
            });
        } else {
            st.caps_reported.remove(&Cap::PanicBrake);
        }
    }
    if !obs.truncated {
        st.caps_reported.remove(&Cap::CandidateLimit);
    }
    let braked = out.brake.is_some();
    if braked {
        out.capped = confirmed.len() as u64;
    }

    // Room under the caps.
    let mut list_room = match b.max_list_size {
        0 => usize::MAX,
        max => (max as usize).saturating_sub(obs.block_list.len()),
    };
    let mut budget = st.rate.remaining(now).map_or(u64::MAX, u64::from);
    let mut taken: HashSet<IpAddr> = HashSet::new();

    // Blocks that should still stand, and hand removals.
    let mut candidates: Vec<PlannedAdd> = Vec::new();
    if restore_due && !braked {
        match history.active_blocks(now) {
            Ok(active) => {
                reconcile(obs, s, &active, &ctx, now, &mut out, &mut candidates);
                st.needs_restore = false;
                st.last_restore = Some(now);
                out.reconciled = true;
            }
            Err(e) => out
                .history_errors
                .push(format!("reading the blocks to restore: {e}")),
        }
    }
    if !braked {
        for sh in &obs.shared {
            let Some(remaining) = sh.expires.checked_sub(now).filter(|r| !r.is_zero()) else {
                continue;
            };
            candidates.push(PlannedAdd {
                address: sh.address,
                family: Family::of(sh.address),
                timeout: Duration::from_secs(remaining.as_secs().max(1)),
                level: 0,
                comment: fit_comment(&sh.comment, &format!(" (shared from {})", sh.from_router)),
                kind: AddKind::Shared {
                    from: sh.from_router.clone(),
                },
                finding: None,
                shared_evidence: Some(sh.evidence_json.clone()),
            });
        }
    }
    for c in candidates {
        if !usable(&ctx, c.address) || !taken.insert(c.address.to_canonical()) {
            continue;
        }
        let shared = matches!(c.kind, AddKind::Shared { .. });
        if list_room == 0 {
            out.capped += 1;
            list_cap(st, &mut out, b.max_list_size);
            continue;
        }
        if shared && budget == 0 {
            out.capped += 1;
            hour_cap(st, &mut out, b.max_blocks_per_hour);
            continue;
        }
        list_room -= 1;
        if shared {
            budget -= 1;
        }
        ctx.already_blocked.insert_addr(c.address);
        out.adds.push(c);
    }

    // This cycle's own findings.
    if !braked {
        let plan = policy::plan(
            confirmed,
            &ctx,
            s.cycle.max_conn_per_cycle,
            b.remove_tcp_conn,
        );
        for (f, reason) in &plan.skipped {
            out.skipped.push(Skip {
                address: f.target,
                rule: f.rule,
                what: match &f.evidence {
                    Evidence::Staged { list } => format!("staged in {list}"),
                    _ => f.connection().map(|c| c.summary()).unwrap_or_default(),
                },
                reason: *reason,
            });
        }
        out.deferred = plan.deferred.len() as u64;
        out.acted = plan.acted as u64;
        let escalation = Escalation {
            factor: b.escalation_factor,
            max_timeout: b.max_block_timeout,
            forget_after: b.forget_after,
        };
        let mut capped_targets: HashSet<IpAddr> = HashSet::new();
        for a in plan.blocks {
            if list_room == 0 {
                capped_targets.insert(a.target);
                list_cap(st, &mut out, b.max_list_size);
                continue;
            }
            if budget == 0 {
                capped_targets.insert(a.target);
                hour_cap(st, &mut out, b.max_blocks_per_hour);
                continue;
            }
            list_room -= 1;
            budget -= 1;
            let (timeout, level) = if escalation.factor > 1.0 {
                let since = now.saturating_sub(b.forget_after);
                match history.previous_blocks(a.target, since) {
                    Ok(previous) => escalation.timeout_for(b.block_timeout, &previous, now),
                    Err(e) => {
                        out.history_errors
                            .push(format!("reading earlier blocks of {}: {e}", a.target));
                        (b.block_timeout, 0)
                    }
                }
            } else {
                (b.block_timeout, 0)
            };
            out.adds.push(PlannedAdd {
                address: a.target,
                family: a.family,
                timeout,
                level,
                comment: a.comment,
                kind: AddKind::New,
                finding: Some(a.finding),
                shared_evidence: None,
            });
        }
        // Connections of targets a cap stopped stay: removing them without the block would
        // only make the client retry.
        let mut removals = plan.remove_connections;
        removals.retain(|r| !capped_targets.contains(&r.target));
        if b.dry_run {
            // Report each would-be removal once per address and block timeout.
            removals.retain(|r| !st.dry_run_removals.contains_key(&r.target.to_canonical()));
            for r in &removals {
                st.dry_run_removals
                    .insert(r.target.to_canonical(), now + b.block_timeout);
            }
        }
        out.removals = removals;
        out.capped += capped_targets.len() as u64;
    }
    out
}

fn list_cap(st: &mut GuardState, out: &mut Decision, max: u32) {
    st.cap_hit(&mut out.caps, Cap::MaxListSize, || {
        format!("max_list_size = {max} reached: the block list is full, not adding more (raise it, or shorten block_timeout)")
    });
}

fn hour_cap(st: &mut GuardState, out: &mut Decision, max: u32) {
    st.cap_hit(&mut out.caps, Cap::MaxBlocksPerHour, || {
        format!("max_blocks_per_hour = {max} reached: not adding more blocks this hour (raise it if this is a real attack)")
    });
}

/// Compares the blocks that should stand with the list: a missing one is restored when the
/// router rebooted since it was placed (or when that cannot be told), and honoured as a hand
/// removal when it did not; a rosguard entry without a record is adopted.
fn reconcile(
    obs: &Observation,
    s: &Settings,
    active: &[ActiveRecord],
    ctx: &PolicyContext,
    now: Duration,
    out: &mut Decision,
    candidates: &mut Vec<PlannedAdd>,
) {
    let on_list = entry_set(&obs.block_list);
    // An entry the router was about to expire anyway is neither restored nor lifted.
    let grace = (s.cycle.loop_delay * 2).max(Duration::from_secs(10));
    // The router reports its uptime in whole seconds and the store keeps whole seconds: a
    // placement within this of the boot cannot be told from one before it, and is restored
    // (fail closed: a block stays rather than goes).
    const CLOCK_SLACK: Duration = Duration::from_secs(2);
    let boot = obs.uptime.map(|up| now.saturating_sub(up) + CLOCK_SLACK);
    let mut recorded: HashSet<IpAddr> = HashSet::new();
    for a in active {
        recorded.insert(a.address.to_canonical());
        if on_list.contains(a.address) || a.expires <= now + grace {
            continue;
        }
        match boot {
            Some(boot) if a.placed >= boot => out.lifts.push(Lift {
                address: a.address,
                until: now + s.blocking.unblock_hold,
            }),
            _ => {
                out.rebooted |= boot.is_some();
                candidates.push(PlannedAdd {
                    address: a.address,
                    family: Family::of(a.address),
                    timeout: Duration::from_secs((a.expires - now).as_secs().max(1)),
                    level: a.level,
                    comment: a.comment.clone(),
                    kind: AddKind::Restored,
                    finding: None,
                    shared_evidence: None,
                });
            }
        }
    }
    for e in obs.block_list.iter().filter(|e| e.is_rosguard()) {
        let (Some(address), Some(remaining)) = (e.host(), e.timeout) else {
            continue;
        };
        let canonical = address.to_canonical();
        if recorded.contains(&canonical)
            || ctx.unblocked.contains_key(&canonical)
            || remaining.is_zero()
        {
            continue;
        }
        recorded.insert(canonical);
        out.adopted.push(Adopted {
            address,
            remaining,
            comment: e.comment.clone().unwrap_or_default(),
        });
    }
}

#[cfg(test)]
mod tests;
