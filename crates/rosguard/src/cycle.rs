//! One cycle against one router: fetch, detect, confirm, plan, cap, apply, record.
//!
//! This is the script's loop body done right: every row is checked on its own (a bad row is
//! logged and skipped, the cycle goes on); the allowlist, the router's own addresses, its
//! gateways and DNS servers and the address rosguard connects from are never blocked; at most
//! `max_conn_per_cycle` flagged connections are acted on; the hourly and list-size caps and the
//! panic brake hold; in dry-run nothing on the router changes. Blocks that should still stand
//! are restored after a reconnect (router reboot) and every `reconcile_interval`.
//!
//! This module does not loop, sleep or reconnect: the daemon does that.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::anyhow;
use rosguard_core::detect::{self, Finding};
use rosguard_core::model::{AddrSet, Connection, Family, ListAddress, ListEntry};
use rosguard_core::policy::{self, PolicyContext};
use rosguard_core::state::{
    panic_brake, Escalation, RateCap, Tracker, TrackerEntry, TrackerSettings,
};
use rosguard_store::{CycleRecord, NewBlock, Store, Strike};
use routeros_client::{
    AddOutcome, Client, Error as ClientError, Family as ApiFamily, RemoveOutcome,
};
use routeros_proto::{format_duration, Command};
use serde::Serialize;
use serde_json::json;
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::config::{DaemonSettings, RouterConfig};
use crate::metrics::Metrics;

/// How often the router's gateways and DNS servers are re-read.
const PROTECTED_REFRESH: Duration = Duration::from_secs(300);

/// A block one router made, offered to the others (`share_blocks`).
#[derive(Debug, Clone)]
pub struct SharedBlock {
    pub from_router: String,
    pub address: IpAddr,
    pub expires_unix: i64,
    pub comment: String,
    pub evidence: serde_json::Value,
}

/// What every router task shares: the store, the metrics, the shared-block channel.
#[derive(Clone, Default)]
pub struct CycleEnv {
    pub store: Option<Arc<Mutex<Store>>>,
    pub metrics: Option<Arc<Metrics>>,
    pub share: Option<broadcast::Sender<SharedBlock>>,
}

/// What the daemon keeps about one router across cycles and reconnects.
pub struct RouterState {
    /// Set once the router answered that it has no IPv6 tables.
    pub ipv6_missing: bool,
    /// Set once the router returned rows that fail its own filter: it compares as strings.
    pub server_filter_broken: bool,
    /// Restore blocks at the next cycle (set after every connect).
    pub needs_restore: bool,
    last_restore: Option<Instant>,
    tracker: Tracker,
    rate: RateCap,
    protected: AddrSet,
    protected_at: Option<Instant>,
    /// Caps already reported, so each is logged loudly once per episode, not every cycle.
    caps_reported: HashSet<&'static str>,
    inbox: Option<broadcast::Receiver<SharedBlock>>,
    /// Whether the tracker's persisted state was loaded (at the first cycle).
    tracker_loaded: bool,
    /// The tracker remembers anything at all (K or N above 1).
    tracker_persists: bool,
}

impl RouterState {
    /// Fresh state for `router`, subscribed to shared blocks when `env` shares them.
    pub fn new(router: &RouterConfig, env: &CycleEnv) -> Self {
        let d = &router.detection;
        Self {
            ipv6_missing: false,
            server_filter_broken: false,
            needs_restore: true,
            last_restore: None,
            tracker: Tracker::new(TrackerSettings {
                min_observations: d.min_observations,
                min_flagged_connections: d.min_flagged_connections,
                window: d.window,
                ..TrackerSettings::default()
            }),
            rate: RateCap::new(Some(router.blocking.max_blocks_per_hour).filter(|&n| n > 0)),
            protected: AddrSet::default(),
            protected_at: None,
            caps_reported: HashSet::new(),
            inbox: env.share.as_ref().map(broadcast::Sender::subscribe),
            tracker_loaded: false,
            tracker_persists: d.min_observations > 1 || d.min_flagged_connections > 1,
        }
    }
}

/// One block decision and its outcome.
#[derive(Debug, Clone, Serialize)]
pub struct BlockRecord {
    pub address: IpAddr,
    pub list: String,
    pub timeout: String,
    /// Escalation level: how many earlier blocks of this address are remembered.
    pub level: u32,
    pub comment: String,
    /// `added`, `already-present`, `would-add` (dry run), `restored`, `shared` or `failed: ...`.
    pub outcome: String,
}

/// One skipped finding.
#[derive(Debug, Clone, Serialize)]
pub struct SkipRecord {
    pub address: IpAddr,
    pub connection: String,
    /// Machine-readable reason (`router-allowlist`, `local`, `own`, ...).
    pub kind: String,
    /// The reason for humans.
    pub reason: String,
    /// True when the address was protected (as opposed to "nothing left to do").
    pub safety: bool,
}

/// What a cycle saw and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CycleReport {
    pub router: String,
    pub dry_run: bool,
    /// Rows read and checked.
    pub scanned: u64,
    /// Rows in the tables (differs from `scanned` when the filter runs on the router).
    pub table_size: u64,
    pub bad_rows: u64,
    pub flagged: u64,
    /// Flagged connections confirmed by the tracker (`min_observations`, ...).
    pub confirmed: u64,
    pub blocks: Vec<BlockRecord>,
    pub skipped: Vec<SkipRecord>,
    pub deferred: u64,
    pub connections_removed: u64,
    /// Entries in the block list when the cycle started.
    pub list_size: usize,
    /// Safety caps that stopped blocking in this cycle.
    pub caps_hit: Vec<String>,
    pub duration_ms: u64,
}

impl CycleReport {
    /// Blocks that took effect (or would, in dry run).
    pub fn effective_blocks(&self) -> impl Iterator<Item = &BlockRecord> {
        self.blocks
            .iter()
            .filter(|b| matches!(b.outcome.as_str(), "added" | "would-add" | "shared"))
    }
}

fn api(f: Family) -> ApiFamily {
    match f {
        Family::V4 => ApiFamily::V4,
        Family::V6 => ApiFamily::V6,
    }
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// A trap that means "this path does not exist here" (e.g. the IPv6 package is disabled).
fn is_missing_path(e: &ClientError) -> bool {
    e.trap_message()
        .is_some_and(|m| m.starts_with("no such command"))
}

/// Makes a router error say what to do.
pub fn explain(e: ClientError, what: &str) -> anyhow::Error {
    match e.trap_message() {
        Some(m) if m.contains("not enough permissions") => anyhow!(
            "router {}: permission denied for {what} ({m}); give the rosguard user a group with the read,write,api policies",
            e.router()
        ),
        _ => anyhow::Error::new(e).context(what.to_owned()),
    }
}

/// Runs a store operation off the async threads. A store failure is logged, never fatal:
/// protecting the network matters more than remembering that it did.
async fn with_store<T: Send + 'static>(
    env: &CycleEnv,
    router: &str,
    f: impl FnOnce(&mut Store) -> Result<T, rosguard_store::StoreError> + Send + 'static,
) -> Option<T> {
    let store = env.store.clone()?;
    let res = tokio::task::spawn_blocking(move || {
        let mut guard = store
            .lock()
            .map_err(|_| "the store lock is poisoned".to_owned())?;
        f(&mut guard).map_err(|e| e.to_string())
    })
    .await;
    match res {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            error!(router, "state store: {e}");
            if let Some(m) = &env.metrics {
                m.error(router, "store");
            }
            None
        }
        Err(e) => {
            error!(router, "state store task failed: {e}");
            None
        }
    }
}

/// The router's own addresses: the hosts (never blocked) and their networks (what is local
/// for `block_target = "remote"`).
async fn local_addresses(
    client: &Client,
    families: &[Family],
) -> Result<(AddrSet, AddrSet), ClientError> {
    let mut hosts = Vec::new();
    let mut nets = Vec::new();
    for &f in families {
        let rows = match client.addresses(api(f)).await {
            Ok(rows) => rows,
            Err(e) if f == Family::V6 && is_missing_path(&e) => continue,
            Err(e) => return Err(e),
        };
        for row in rows {
            let Some(text) = row.get_str("address") else {
                continue;
            };
            if let Ok(net) = text.parse::<ipnet::IpNet>() {
                hosts.push(ListAddress::Net(ipnet::IpNet::from(net.addr())));
                nets.push(ListAddress::Net(net.trunc()));
            } else if let Ok(ip) = text.parse::<IpAddr>() {
                hosts.push(ListAddress::Net(ip.into()));
            }
        }
    }
    Ok((hosts.into_iter().collect(), nets.into_iter().collect()))
}

/// The router's default gateways and DNS servers: blocking them would cut the operator off.
async fn protected_addresses(client: &Client, families: &[Family]) -> AddrSet {
    let mut set = AddrSet::default();
    for &f in families {
        let default_route = if f == Family::V4 { "0.0.0.0/0" } else { "::/0" };
        let cmd = Command::new(&api(f).path("route/print"))
            .proplist(&["dst-address", "gateway", "immediate-gw"])
            .query_eq("dst-address", default_route);
        if let Ok(resp) = client.call(cmd).await {
            for row in &resp.rows {
                for key in ["gateway", "immediate-gw"] {
                    for part in row.get_str(key).unwrap_or("").split([',', '%']) {
                        if let Ok(ip) = part.trim().parse::<IpAddr>() {
                            set.insert_addr(ip);
                        }
                    }
                }
            }
        }
    }
    if let Ok(resp) = client
        .call(Command::new("/ip/dns/print").proplist(&["servers", "dynamic-servers"]))
        .await
    {
        for row in &resp.rows {
            for key in ["servers", "dynamic-servers"] {
                for part in row.get_str(key).unwrap_or("").split(',') {
                    if let Ok(ip) = part.trim().parse::<IpAddr>() {
                        set.insert_addr(ip);
                    }
                }
            }
        }
    }
    set
}

/// Reads one address-list from both families.
pub async fn list_entries(
    client: &Client,
    list: &str,
    families: &[Family],
) -> Result<Vec<ListEntry>, ClientError> {
    let mut out = Vec::new();
    for &f in families {
        let rows = match client.address_list_print(api(f), list).await {
            Ok(rows) => rows,
            Err(e) if f == Family::V6 && is_missing_path(&e) => continue,
            Err(e) => return Err(e),
        };
        for row in rows {
            match ListEntry::from_reply(&row) {
                Ok(e) => out.push(e),
                Err(e) => warn!(router = client.router(), "skipping address-list row: {e}"),
            }
        }
    }
    Ok(out)
}

/// `tcp 192.168.88.50:54321 -> 203.0.113.45:443`.
pub fn connection_summary(c: &Connection) -> String {
    format!("{} {} -> {}", c.protocol, c.src, c.dst)
}

/// Whether a row returned by the router satisfies the filter rosguard pushed to it. A router
/// that compares counters as strings returns rows that do not (`"10" < "3"`).
fn matches_pushed_filter(c: &Connection, rules: &detect::Rules) -> bool {
    let protocol_ok = rules.protocols.is_empty() || rules.protocols.contains(&c.protocol);
    let orig_ok = c.orig_packets.is_none_or(|n| n > rules.min_orig_packets);
    let repl_ok = c.repl_packets.is_none_or(|n| n <= rules.max_repl_packets);
    protocol_ok && orig_ok && repl_ok
}

/// The evidence stored with a block: the connection, the rule and the settings in force.
fn evidence(
    f: &Finding,
    router: &RouterConfig,
    level: u32,
    timeout: Duration,
) -> serde_json::Value {
    let r = &router.detection.rules;
    json!({
        "connection": f.connection,
        "rule": f.rule,
        "target": f.target,
        "level": level,
        "timeout": format_duration(timeout),
        "config": {
            "monitored_ports": r.monitored_ports,
            "protocols": r.protocols,
            "min_orig_packets": r.min_orig_packets,
            "max_repl_packets": r.max_repl_packets,
            "block_target": r.block_target,
            "min_observations": router.detection.min_observations,
            "min_flagged_connections": router.detection.min_flagged_connections,
            "block_timeout": format_duration(router.blocking.block_timeout),
            "escalation_factor": router.blocking.escalation_factor,
        },
    })
}

/// One planned address-list addition, after caps and escalation.
struct PlannedAdd {
    address: IpAddr,
    family: Family,
    timeout: Duration,
    level: u32,
    comment: String,
    evidence: serde_json::Value,
    /// `added` on success, or `restored` / `shared` for those kinds of adds.
    kind: &'static str,
}

impl CycleReport {
    fn cap_hit(
        &mut self,
        state: &mut RouterState,
        cap: &'static str,
        message: impl FnOnce() -> String,
    ) {
        if !self.caps_hit.iter().any(|c| c == cap) {
            self.caps_hit.push(cap.to_owned());
        }
        if state.caps_reported.insert(cap) {
            error!(router = self.router.as_str(), "{}", message());
        }
    }
}

/// Runs one cycle. Errors are connection-level (the caller reconnects) or a command the router
/// refused outright; a bad row or a refused single add is logged and the cycle goes on.
pub async fn run_cycle(
    client: &Client,
    router: &RouterConfig,
    daemon: &DaemonSettings,
    state: &mut RouterState,
    env: &CycleEnv,
) -> anyhow::Result<CycleReport> {
    let started = Instant::now();
    let now = unix_now();
    let name = router.name.as_str();
    let blocking = &router.blocking;
    let detection = &router.detection;
    let mut report = CycleReport {
        router: name.to_owned(),
        dry_run: blocking.dry_run,
        ..Default::default()
    };
    let families: Vec<Family> = if state.ipv6_missing {
        vec![Family::V4]
    } else {
        vec![Family::V4, Family::V6]
    };

    // The context: the router's own addresses, its allowlist, what is blocked already.
    let (local_hosts, local_nets) = local_addresses(client, &families)
        .await
        .map_err(|e| explain(e, "reading /ip/address"))?;
    if state
        .protected_at
        .is_none_or(|t| t.elapsed() >= PROTECTED_REFRESH)
    {
        state.protected = protected_addresses(client, &families).await;
        state.protected_at = Some(Instant::now());
    }
    let allow_entries = list_entries(client, &blocking.allowlist_name, &families)
        .await
        .map_err(|e| explain(e, "reading the allowlist address-list"))?;
    let blocked_entries = list_entries(client, &blocking.address_list, &families)
        .await
        .map_err(|e| explain(e, "reading the block address-list"))?;
    report.list_size = blocked_entries.len();
    let mut ctx = PolicyContext {
        router_allowlist: AddrSet::from_entries(&allow_entries),
        config_allow: blocking
            .allow
            .iter()
            .copied()
            .map(ListAddress::Net)
            .collect(),
        local: if blocking.check_local_addr {
            local_hosts
        } else {
            AddrSet::default()
        },
        own: vec![client.local_addr().ip(), client.peer_addr().ip()],
        protected: state.protected.clone(),
        already_blocked: AddrSet::from_entries(&blocked_entries),
    };

    // Scan the connection tables.
    let mut findings: Vec<Finding> = Vec::new();
    let pushed = detection.server_filter && !state.server_filter_broken;
    for &family in &families {
        let mut cmd =
            Command::new(&api(family).path("firewall/connection/print")).proplist(detect::PROPLIST);
        if pushed {
            cmd = detect::server_filter(cmd, &detection.rules);
        }
        let mut rows = match client.connections(api(family), cmd).await {
            Ok(s) => s,
            Err(e) if family == Family::V6 && is_missing_path(&e) => {
                info!(
                    router = name,
                    "no IPv6 connection table on this router; scanning IPv4 only"
                );
                state.ipv6_missing = true;
                continue;
            }
            Err(e) => return Err(explain(e, "reading the connection table")),
        };
        let mut misfiltered = 0u64;
        while let Some(row) = rows.next().await {
            let row = match row {
                Ok(r) => r,
                Err(e) if family == Family::V6 && is_missing_path(&e) => {
                    info!(
                        router = name,
                        "no IPv6 connection table on this router; scanning IPv4 only"
                    );
                    state.ipv6_missing = true;
                    break;
                }
                Err(e) => return Err(explain(e, "reading the connection table")),
            };
            report.scanned += 1;
            let conn = match Connection::from_reply(&row, family) {
                Ok(c) => c,
                Err(e) => {
                    report.bad_rows += 1;
                    warn!(router = name, "skipping connection row: {e}");
                    continue;
                }
            };
            if pushed && !matches_pushed_filter(&conn, &detection.rules) {
                misfiltered += 1;
            }
            if detection.enabled {
                if let Some(f) = detect::check_owned(conn, &detection.rules, &local_nets) {
                    findings.push(f);
                }
            }
        }
        if misfiltered > 0 && !state.server_filter_broken {
            state.server_filter_broken = true;
            warn!(
                router = name,
                "the router returned {misfiltered} rows that do not match the pushed filter (it compares counters as strings); filtering locally from now on (set server_filter = false to make this permanent)"
            );
        }
    }
    report.flagged = findings.len() as u64;
    report.table_size = report.scanned;
    if pushed && blocking.panic_ratio < 1.0 && report.flagged > 0 {
        // Only candidate rows came back: the brake needs the size of the whole table.
        let mut total = 0;
        for &family in &families {
            let cmd = Command::new(&api(family).path("firewall/connection/print"));
            match client.count(cmd).await {
                Ok(n) => total += n,
                Err(e) if e.is_connection_lost() => return Err(explain(e, "counting connections")),
                Err(_) => total += report.scanned,
            }
        }
        report.table_size = total.max(report.scanned);
    }
    // The script's log lines, for what is new: an address already in the list (a UDP flow
    // that goes on after its block, say) is only worth a debug line each cycle.
    let mut fresh = 0usize;
    for f in &findings {
        let line = policy::detected_message(f, &detection.rules);
        if ctx.already_blocked.contains(f.target) {
            debug!(router = name, "{line} (already blocked)");
        } else {
            fresh += 1;
            warn!(router = name, "{line}");
        }
    }

    // Confirm across polls and connections (defaults: at once, as the script), continuing
    // from the persisted state after a restart.
    if state.tracker_persists && !state.tracker_loaded {
        let r = name.to_owned();
        if let Some(strikes) = with_store(env, name, move |s| s.load_strikes(&r)).await {
            let gap = (daemon.loop_delay * 3).max(Duration::from_secs(10));
            state
                .tracker
                .import(strikes.iter().filter_map(strike_to_entry), now, gap);
        }
    }
    state.tracker_loaded = true;
    let confirmed = state.tracker.observe(findings, now);
    report.confirmed = confirmed.len() as u64;

    // Shared blocks from other routers and restores, before this cycle's own decisions.
    let mut adds: Vec<PlannedAdd> = Vec::new();
    let mut taken: HashSet<IpAddr> = HashSet::new();
    let usable = |ctx: &PolicyContext, ip: IpAddr| {
        ctx.never_block_reason(ip).is_none() && !ctx.already_blocked.contains(ip)
    };
    if let Some(inbox) = state.inbox.as_mut() {
        loop {
            match inbox.try_recv() {
                Ok(s) if s.from_router != name => {
                    let remaining = s.expires_unix - secs(now);
                    if remaining > 0 && usable(&ctx, s.address) && taken.insert(s.address) {
                        adds.push(PlannedAdd {
                            address: s.address,
                            family: Family::of(s.address),
                            timeout: Duration::from_secs(remaining as u64),
                            level: 0,
                            comment: format!("{} (shared from {})", s.comment, s.from_router),
                            evidence: json!({ "shared_from": s.from_router, "evidence": s.evidence }),
                            kind: "shared",
                        });
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    warn!(
                        router = name,
                        "{n} shared blocks from other routers were dropped (too many at once)"
                    );
                }
                Err(_) => break,
            }
        }
    }
    let restore_due = state.needs_restore
        || state
            .last_restore
            .is_none_or(|t| t.elapsed() >= daemon.reconcile_interval);
    if restore_due && !blocking.dry_run {
        let (r, list, at) = (name.to_owned(), blocking.address_list.clone(), secs(now));
        if let Some(active) = with_store(env, name, move |s| s.active_blocks(&r, at)).await {
            for a in active
                .into_iter()
                .filter(|a| a.list == blocking.address_list)
            {
                let remaining = a.expires_unix - secs(now);
                if remaining > 0 && usable(&ctx, a.address) && taken.insert(a.address) {
                    adds.push(PlannedAdd {
                        address: a.address,
                        family: Family::of(a.address),
                        timeout: Duration::from_secs(remaining as u64),
                        level: a.level,
                        comment: a.comment,
                        evidence: serde_json::Value::Null,
                        kind: "restored",
                    });
                }
            }
            let _ = list;
        }
        state.needs_restore = false;
        state.last_restore = Some(Instant::now());
    }
    for a in &adds {
        ctx.already_blocked.insert_addr(a.address);
    }

    // Decide.
    let braked = blocking.panic_ratio < 1.0
        && panic_brake(report.table_size, report.flagged, blocking.panic_ratio);
    let plan = if braked {
        let ratio = blocking.panic_ratio;
        let (flagged, total) = (report.flagged, report.table_size);
        report.cap_hit(state, "panic_brake", || {
            format!(
                "panic brake: {flagged} of {total} connections look one-sided (more than panic_ratio = {ratio}); is the uplink down? blocking nothing until this clears"
            )
        });
        report.deferred = confirmed.len() as u64;
        None
    } else {
        state.caps_reported.remove("panic_brake");
        Some(policy::plan(
            confirmed,
            &ctx,
            daemon.max_conn_per_cycle,
            blocking.remove_tcp_conn,
        ))
    };
    let mut remove_connections = Vec::new();
    if let Some(plan) = plan {
        for (f, reason) in &plan.skipped {
            let line = policy::skipped_message(f, *reason);
            if reason.is_safety() {
                info!(router = name, "{line}");
            } else {
                debug!(router = name, "{line}");
            }
            report.skipped.push(SkipRecord {
                address: f.target,
                connection: connection_summary(&f.connection),
                kind: serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                reason: reason.to_string(),
                safety: reason.is_safety(),
            });
        }
        if !plan.deferred.is_empty() {
            warn!(
                router = name,
                "{}",
                policy::deferred_message(plan.deferred.len(), daemon.max_conn_per_cycle)
            );
        }
        report.deferred += plan.deferred.len() as u64;
        remove_connections = plan.remove_connections;

        // Caps, then escalation, for this cycle's own blocks.
        let escalation = Escalation {
            factor: blocking.escalation_factor,
            max_timeout: blocking.max_block_timeout,
            forget_after: blocking.forget_after,
        };
        let mut list_room = match blocking.max_list_size {
            0 => usize::MAX,
            max => (max as usize).saturating_sub(report.list_size + adds.len()),
        };
        let mut capped = 0u64;
        // Connections of targets a cap stopped stay: removing them without the block would
        // only make the client retry.
        let mut kept_connections: HashSet<String> = HashSet::new();
        for b in plan.blocks {
            if list_room == 0 || (!blocking.dry_run && state.rate.remaining(now) == Some(0)) {
                kept_connections.insert(b.finding.connection.id.clone());
            }
            if list_room == 0 {
                capped += 1;
                let max = blocking.max_list_size;
                report.cap_hit(state, "max_list_size", || {
                    format!("max_list_size = {max} reached: the block list is full, not adding more (raise it, or shorten block_timeout)")
                });
                continue;
            }
            if !blocking.dry_run && !state.rate.try_take(now) {
                capped += 1;
                let max = blocking.max_blocks_per_hour;
                report.cap_hit(state, "max_blocks_per_hour", || {
                    format!("max_blocks_per_hour = {max} reached: not adding more blocks this hour (raise it if this is a real attack)")
                });
                continue;
            }
            list_room -= 1;
            let level_and_timeout = if escalation.factor > 1.0 {
                let (r, ip, since) = (
                    name.to_owned(),
                    b.target,
                    secs(now.saturating_sub(blocking.forget_after)),
                );
                let previous = with_store(env, name, move |s| s.previous_blocks(&r, ip, since))
                    .await
                    .unwrap_or_default();
                let previous: Vec<Duration> = previous
                    .into_iter()
                    .map(|t| Duration::from_secs(t.max(0) as u64))
                    .collect();
                escalation.timeout_for(blocking.block_timeout, &previous, now)
            } else {
                (blocking.block_timeout, 0)
            };
            let (timeout, level) = level_and_timeout;
            adds.push(PlannedAdd {
                address: b.target,
                family: b.family,
                timeout,
                level,
                comment: b.comment.clone(),
                evidence: evidence(&b.finding, router, level, timeout),
                kind: "added",
            });
        }
        remove_connections.retain(|(_, id)| !kept_connections.contains(id));
        if capped > 0 {
            report.deferred += capped;
        } else {
            state.caps_reported.remove("max_list_size");
            state.caps_reported.remove("max_blocks_per_hour");
        }
    }

    // Act.
    let list = &blocking.address_list;
    let mut stored: Vec<NewBlock> = Vec::new();
    if blocking.dry_run {
        for a in adds.iter().filter(|a| a.kind == "added") {
            let t = format_duration(a.timeout);
            info!(
                router = name,
                "DRY RUN: would add {} to {list} (timeout: {t}) comment={:?}", a.address, a.comment
            );
            report.blocks.push(BlockRecord {
                address: a.address,
                list: list.clone(),
                timeout: t,
                level: a.level,
                comment: a.comment.clone(),
                outcome: "would-add".into(),
            });
            stored.push(NewBlock {
                list: list.clone(),
                address: a.address,
                timeout_secs: a.timeout.as_secs(),
                level: a.level,
                comment: a.comment.clone(),
                evidence: a.evidence.clone(),
                dry_run: true,
            });
        }
        for (family, id) in &remove_connections {
            info!(
                router = name,
                "DRY RUN: would remove {} connection {id}",
                family.as_str()
            );
        }
    } else {
        let mut set = JoinSet::new();
        for (i, a) in adds.iter().enumerate() {
            let client = client.clone();
            let (list, address, comment, family, timeout) = (
                list.clone(),
                a.address.to_string(),
                a.comment.clone(),
                api(a.family),
                a.timeout,
            );
            set.spawn(async move {
                (
                    i,
                    client
                        .address_list_add(family, &list, &address, Some(timeout), &comment)
                        .await,
                )
            });
        }
        let mut outcomes: Vec<Option<String>> = vec![None; adds.len()];
        let mut lost: Option<ClientError> = None;
        while let Some(joined) = set.join_next().await {
            let Ok((i, res)) = joined else { continue };
            let a = &adds[i];
            let t = format_duration(a.timeout);
            outcomes[i] = Some(match res {
                Ok(AddOutcome::Added { .. }) => {
                    match a.kind {
                        "restored" => info!(
                            router = name,
                            "Restored {} to {list} (remaining: {t})", a.address
                        ),
                        "shared" => info!(
                            router = name,
                            "Added {} to {list} (timeout: {t}), shared by another router",
                            a.address
                        ),
                        _ => info!(
                            router = name,
                            "{}",
                            policy::added_message(a.address, list, &t)
                        ),
                    }
                    a.kind.to_owned()
                }
                Ok(_) => {
                    debug!(router = name, "{} is already in {list}", a.address);
                    "already-present".into()
                }
                Err(e) if e.is_connection_lost() => {
                    lost.get_or_insert(e);
                    "failed: connection lost".into()
                }
                Err(e) => {
                    warn!(router = name, "could not add {} to {list}: {e}", a.address);
                    format!("failed: {e}")
                }
            });
        }
        for (a, outcome) in adds.iter().zip(outcomes) {
            let outcome = outcome.unwrap_or_else(|| "failed: task ended".into());
            if a.kind != "restored" && (outcome == "added" || outcome == "shared") {
                stored.push(NewBlock {
                    list: list.clone(),
                    address: a.address,
                    timeout_secs: a.timeout.as_secs(),
                    level: a.level,
                    comment: a.comment.clone(),
                    evidence: a.evidence.clone(),
                    dry_run: false,
                });
                if a.kind == "added" {
                    if let Some(tx) = &env.share {
                        let _ = tx.send(SharedBlock {
                            from_router: name.to_owned(),
                            address: a.address,
                            expires_unix: secs(now) + secs(a.timeout),
                            comment: a.comment.clone(),
                            evidence: a.evidence.clone(),
                        });
                    }
                }
            }
            report.blocks.push(BlockRecord {
                address: a.address,
                list: list.clone(),
                timeout: format_duration(a.timeout),
                level: a.level,
                comment: a.comment.clone(),
                outcome,
            });
        }
        if let Some(e) = lost {
            return Err(explain(e, "adding to the block list"));
        }
        let mut set = JoinSet::new();
        for (family, id) in remove_connections.iter().cloned() {
            let client = client.clone();
            set.spawn(async move { client.connection_remove(api(family), &id).await });
        }
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(Ok(RemoveOutcome::Removed)) => report.connections_removed += 1,
                Ok(Ok(_)) => {} // gone already: fine
                Ok(Err(e)) if e.is_connection_lost() => {
                    return Err(explain(e, "removing a connection"))
                }
                Ok(Err(e)) => warn!(router = name, "could not remove a connection: {e}"),
                Err(_) => {}
            }
        }
    }
    if fresh > 0 {
        info!(router = name, "{}", policy::processed_message(fresh));
    }
    report.duration_ms = started.elapsed().as_millis() as u64;

    // Remember.
    let record = CycleRecord {
        router: name.to_owned(),
        at_unix: secs(now),
        blocks: stored,
        counters: counters(&report),
        strikes: state.tracker_persists.then(|| {
            state
                .tracker
                .export(now)
                .iter()
                .map(entry_to_strike)
                .collect()
        }),
    };
    with_store(env, name, move |s| s.record_cycle(&record)).await;
    if let Some(m) = &env.metrics {
        m.cycle(&report);
    }
    Ok(report)
}

/// A tracker fact as a store row: `streak <conn>` or `hit <target> <conn>`.
fn entry_to_strike(e: &TrackerEntry) -> Strike {
    match *e {
        TrackerEntry::Streak { key, polls, at } => Strike {
            key: format!("streak {key}"),
            count: polls,
            first_unix: secs(at),
            last_unix: secs(at),
        },
        TrackerEntry::Hit { target, key, at } => Strike {
            key: format!("hit {target} {key}"),
            count: 1,
            first_unix: secs(at),
            last_unix: secs(at),
        },
    }
}

/// A store row back as a tracker fact; rows that do not parse are dropped.
fn strike_to_entry(s: &Strike) -> Option<TrackerEntry> {
    let at = Duration::from_secs(u64::try_from(s.last_unix).ok()?);
    if let Some(key) = s.key.strip_prefix("streak ") {
        return Some(TrackerEntry::Streak {
            key: key.parse().ok()?,
            polls: s.count,
            at,
        });
    }
    let (target, key) = s.key.strip_prefix("hit ")?.split_once(' ')?;
    Some(TrackerEntry::Hit {
        target: target.parse().ok()?,
        key: key.parse().ok()?,
        at,
    })
}

/// The cumulative counters a cycle adds to the store.
fn counters(r: &CycleReport) -> Vec<(String, u64)> {
    let mut c = vec![
        ("cycles".to_owned(), 1),
        ("rows_scanned".to_owned(), r.scanned),
        ("flagged".to_owned(), r.flagged),
        ("blocked".to_owned(), r.effective_blocks().count() as u64),
        (
            "restored".to_owned(),
            r.blocks.iter().filter(|b| b.outcome == "restored").count() as u64,
        ),
        ("deferred".to_owned(), r.deferred),
        ("connections_removed".to_owned(), r.connections_removed),
        ("bad_rows".to_owned(), r.bad_rows),
    ];
    for s in &r.skipped {
        c.push((format!("skipped_{}", s.kind), 1));
    }
    for cap in &r.caps_hit {
        c.push((format!("cap_{cap}"), 1));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_traps_name_the_policies_needed() {
        let e = ClientError::Trap {
            router: "core".into(),
            category: None,
            message: "not enough permissions (9)".into(),
        };
        let text = format!("{:#}", explain(e, "adding to the block list"));
        assert!(
            text.contains("router core") && text.contains("read,write,api"),
            "{text}"
        );
        let other = ClientError::Trap {
            router: "core".into(),
            category: Some(1),
            message: "bad value".into(),
        };
        let text = format!("{:#}", explain(other, "adding to the block list"));
        assert!(
            text.contains("adding to the block list") && text.contains("bad value"),
            "{text}"
        );
    }

    #[test]
    fn tracker_facts_round_trip_through_store_rows() {
        let key = "ipv6 17 [2001:db8::1]:5353 [2001:db8::2]:443"
            .parse()
            .unwrap();
        let at = Duration::from_secs(1_800_000_000);
        for e in [
            TrackerEntry::Streak { key, polls: 2, at },
            TrackerEntry::Hit {
                target: "2001:db8::2".parse().unwrap(),
                key,
                at,
            },
        ] {
            assert_eq!(strike_to_entry(&entry_to_strike(&e)), Some(e));
        }
        let junk = Strike {
            key: "hit nonsense".into(),
            count: 1,
            first_unix: 0,
            last_unix: 0,
        };
        assert_eq!(strike_to_entry(&junk), None);
    }
}
