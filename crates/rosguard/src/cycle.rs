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

use std::collections::{HashMap, HashSet};
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
    /// Dry run: what would have been added, until when (unix time), so it is not "added"
    /// again every cycle.
    dry_run_blocked: HashMap<IpAddr, Duration>,
    last_prune: Option<Instant>,
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
            dry_run_blocked: HashMap::new(),
            last_prune: None,
            tracker_loaded: false,
            tracker_persists: d.min_observations > 1 || d.min_flagged_connections > 1,
        }
    }
}

impl RouterState {
    /// The router has no IPv6 connection table (the package is off): scan IPv4 only.
    fn note_no_ipv6(&mut self, router: &str) {
        info!(
            router,
            "no IPv6 connection table on this router; scanning IPv4 only"
        );
        self.ipv6_missing = true;
    }

    /// Applies a reloaded config: a new tracker when the detection settings changed, the new
    /// hourly limit on the blocks already counted (a reload must not reset a cap).
    pub fn reconfigure(&mut self, old: &RouterConfig, new: &RouterConfig) {
        if old.detection != new.detection {
            let d = &new.detection;
            self.tracker = Tracker::new(TrackerSettings {
                min_observations: d.min_observations,
                min_flagged_connections: d.min_flagged_connections,
                window: d.window,
                ..TrackerSettings::default()
            });
            self.tracker_persists = d.min_observations > 1 || d.min_flagged_connections > 1;
            self.tracker_loaded = true;
        }
        self.rate
            .set_limit(Some(new.blocking.max_blocks_per_hour).filter(|&n| n > 0));
        if !new.blocking.dry_run {
            self.dry_run_blocked.clear();
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
    /// Rows in the tables as far as the cycle knows: with the filter on the router, the
    /// router's count when the panic brake needed one, else the rows returned (`scanned`).
    pub table_size: u64,
    pub bad_rows: u64,
    pub flagged: u64,
    /// Flagged connections confirmed by the tracker (`min_observations`, ...).
    pub confirmed: u64,
    pub blocks: Vec<BlockRecord>,
    pub skipped: Vec<SkipRecord>,
    /// Flagged connections over `max_conn_per_cycle`: they wait for the next cycle.
    pub deferred: u64,
    /// Blocks a safety cap or the panic brake stopped this cycle.
    pub capped: u64,
    /// Flagged connections acted on (blocked and/or removed).
    pub acted: u64,
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

/// The number of connections in the router's tables: `total-entries` of the connection
/// tracking settings, one cheap read; when the router does not report it, `count-only` prints
/// of each table, which walk the whole table on the router. `Ok(None)`: the router would not
/// say. Only a lost connection is an error.
async fn table_size(
    client: &Client,
    families: &[Family],
    name: &str,
) -> Result<Option<u64>, routeros_client::Error> {
    match client.connection_tracking_total().await {
        // `total-entries` covers IPv4 and IPv6 alike. Should a router count only IPv4 there,
        // the brake's ratio comes out higher, so it errs on the safe side.
        Ok(Some(n)) => return Ok(Some(n)),
        Ok(None) => debug!(
            router = name,
            "no total-entries in connection tracking; counting"
        ),
        Err(e) if e.is_connection_lost() => return Err(e),
        Err(e) => debug!(
            router = name,
            "connection tracking unreadable ({e}); counting"
        ),
    }
    let mut total = 0u64;
    for &family in families {
        let cmd = Command::new(&api(family).path("firewall/connection/print"));
        match client.count(cmd).await {
            Ok(n) => total += n,
            Err(e) if e.is_connection_lost() => return Err(e),
            Err(e) if family == Family::V6 && is_missing_path(&e) => {}
            Err(e) => {
                debug!(router = name, "count-only failed: {e}");
                return Ok(None);
            }
        }
    }
    Ok(Some(total))
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

/// The router's default gateways, its DNS servers, and the addresses the router sees rosguard's
/// own API sessions come from (rosguard may sit behind NAT): blocking them would cut the
/// operator off.
async fn protected_addresses(
    client: &Client,
    families: &[Family],
    username: &str,
) -> Result<AddrSet, ClientError> {
    let mut set = AddrSet::default();
    let add_all = |text: &str, set: &mut AddrSet| {
        for part in text.split([',', '%', ' ']) {
            if let Ok(ip) = part.trim().parse::<IpAddr>() {
                set.insert_addr(ip);
            }
        }
    };
    for &f in families {
        let default_route = if f == Family::V4 { "0.0.0.0/0" } else { "::/0" };
        let cmd = Command::new(&api(f).path("route/print"))
            .proplist(&["dst-address", "gateway", "immediate-gw"])
            .query_eq("dst-address", default_route);
        match client.call(cmd).await {
            Ok(resp) => {
                for row in &resp.rows {
                    for key in ["gateway", "immediate-gw"] {
                        add_all(row.get_str(key).unwrap_or(""), &mut set);
                    }
                }
            }
            Err(e) if f == Family::V6 && is_missing_path(&e) => {}
            Err(e) => return Err(e),
        }
    }
    let dns = client
        .call(Command::new("/ip/dns/print").proplist(&["servers", "dynamic-servers"]))
        .await?;
    for row in &dns.rows {
        for key in ["servers", "dynamic-servers"] {
            add_all(row.get_str(key).unwrap_or(""), &mut set);
        }
    }
    // Best effort: an older router or a restricted user may not list active sessions.
    let sessions = Command::new("/user/active/print")
        .proplist(&["name", "address", "via"])
        .query_eq("name", username);
    if let Ok(resp) = client.call(sessions).await {
        for row in &resp.rows {
            add_all(row.get_str("address").unwrap_or(""), &mut set);
        }
    }
    Ok(set)
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
        match protected_addresses(client, &families, &router.username).await {
            Ok(set) => {
                state.protected = set;
                state.protected_at = Some(Instant::now());
            }
            // Keep what was known and try again next cycle; never fail open silently.
            Err(e) if e.is_connection_lost() => {
                return Err(explain(e, "reading the gateways and DNS servers"))
            }
            Err(e) => warn!(
                router = name,
                "could not read the gateways and DNS servers to protect ({e}); keeping the previous set and retrying next cycle"
            ),
        }
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
        // A disabled entry blocks nothing: such an address may be added again.
        already_blocked: AddrSet::from_entries(blocked_entries.iter().filter(|e| !e.disabled)),
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
                state.note_no_ipv6(name);
                continue;
            }
            Err(e) => return Err(explain(e, "reading the connection table")),
        };
        let mut misfiltered = 0u64;
        while let Some(row) = rows.next().await {
            let row = match row {
                Ok(r) => r,
                Err(e) if family == Family::V6 && is_missing_path(&e) => {
                    state.note_no_ipv6(name);
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

    // In dry run, what rosguard would have added counts as blocked, as it would on the router.
    state.dry_run_blocked.retain(|_, until| *until > now);
    for ip in state.dry_run_blocked.keys() {
        ctx.already_blocked.insert_addr(*ip);
    }

    // Blocks that should still stand (router reboot, manual wipe) are due now and then.
    let restore_due = !blocking.dry_run
        && (state.needs_restore
            || state
                .last_restore
                .is_none_or(|t| t.elapsed() >= daemon.reconcile_interval));
    let usable = |ctx: &PolicyContext, ip: IpAddr| {
        ctx.never_block_reason(ip).is_none() && !ctx.already_blocked.contains(ip)
    };

    // The panic brake needs the size of the whole table, and with the filter on the router
    // only candidate rows came back: ask the router for it, but only when the brake could
    // change anything this cycle (a steady cycle whose findings are all blocked already has
    // nothing for it to hold back).
    let brake_matters = report.flagged > 0
        && blocking.panic_ratio < 1.0
        && (restore_due
            || state.inbox.as_ref().is_some_and(|i| !i.is_empty())
            || confirmed.iter().any(|f| usable(&ctx, f.target)));
    if pushed && brake_matters {
        let total = table_size(client, &families, name)
            .await
            .map_err(|e| explain(e, "counting connections"))?;
        // If the router will not say, the brake sees only the candidates and errs on the
        // safe side.
        report.table_size = total.unwrap_or(report.scanned).max(report.scanned);
    }

    // The panic brake: when most of the table looks one-sided, block nothing at all.
    let braked =
        brake_matters && panic_brake(report.table_size, report.flagged, blocking.panic_ratio);
    if braked {
        let ratio = blocking.panic_ratio;
        let (flagged, total) = (report.flagged, report.table_size);
        report.cap_hit(state, "panic_brake", || {
            format!(
                "panic brake: {flagged} of {total} connections look one-sided (more than panic_ratio = {ratio}); is the uplink down? blocking nothing until this clears"
            )
        });
        report.capped = confirmed.len() as u64;
        for f in &confirmed {
            debug!(
                router = name,
                "{} (panic brake)",
                policy::detected_message(f, &detection.rules)
            );
        }
    } else if brake_matters {
        state.caps_reported.remove("panic_brake");
    }

    // What may still be added this cycle: the list-size cap, then the hourly cap per add.
    let mut list_room = match blocking.max_list_size {
        0 => usize::MAX,
        max => (max as usize).saturating_sub(report.list_size),
    };
    let mut adds: Vec<PlannedAdd> = Vec::new();
    let mut taken: HashSet<IpAddr> = HashSet::new();
    let mut capped_any = false;

    // Blocks that should still stand (router reboot, manual wipe), then blocks shared by other
    // routers: both pass the same safety checks and caps as this cycle's own.
    let mut candidates: Vec<PlannedAdd> = Vec::new();
    if restore_due && !braked {
        let (r, at) = (name.to_owned(), secs(now));
        if let Some(active) = with_store(env, name, move |s| s.active_blocks(&r, at)).await {
            for a in active
                .into_iter()
                .filter(|a| a.list == blocking.address_list)
            {
                let remaining = a.expires_unix - secs(now);
                if remaining > 0 {
                    candidates.push(PlannedAdd {
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
            state.needs_restore = false;
            state.last_restore = Some(Instant::now());
        }
    }
    if let Some(inbox) = state.inbox.as_mut() {
        loop {
            match inbox.try_recv() {
                Ok(s) if s.from_router != name && !braked => {
                    let remaining = s.expires_unix - secs(now);
                    if remaining > 0 {
                        let suffix = format!(" (shared from {})", s.from_router);
                        candidates.push(PlannedAdd {
                            address: s.address,
                            family: Family::of(s.address),
                            timeout: Duration::from_secs(remaining as u64),
                            level: 0,
                            comment: fit_comment(&s.comment, &suffix),
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
    for c in candidates {
        if !usable(&ctx, c.address) || !taken.insert(c.address) {
            continue;
        }
        if list_room == 0 || (c.kind == "shared" && !state.rate.try_take(now)) {
            capped_any = true;
            report.capped += 1;
            continue;
        }
        list_room -= 1;
        ctx.already_blocked.insert_addr(c.address);
        adds.push(c);
    }

    // Decide on this cycle's own findings.
    let mut remove_connections = Vec::new();
    if !braked {
        // Which target each connection was flagged for, to keep the connections of targets a
        // cap stops below.
        let target_of: std::collections::HashMap<(Family, String), IpAddr> = confirmed
            .iter()
            .map(|f| ((f.connection.family, f.connection.id.clone()), f.target))
            .collect();
        let plan = policy::plan(
            confirmed,
            &ctx,
            daemon.max_conn_per_cycle,
            blocking.remove_tcp_conn,
        );
        for (f, reason) in &plan.skipped {
            debug!(
                router = name,
                "{}",
                policy::detected_message(f, &detection.rules)
            );
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
        report.deferred = plan.deferred.len() as u64;
        report.acted = plan.acted as u64;

        // Caps, then escalation, for this cycle's own blocks.
        let escalation = Escalation {
            factor: blocking.escalation_factor,
            max_timeout: blocking.max_block_timeout,
            forget_after: blocking.forget_after,
        };
        let mut capped_targets: HashSet<IpAddr> = HashSet::new();
        for b in plan.blocks {
            warn!(
                router = name,
                "{}",
                policy::detected_message(&b.finding, &detection.rules)
            );
            if list_room == 0 {
                capped_targets.insert(b.target);
                let max = blocking.max_list_size;
                report.cap_hit(state, "max_list_size", || {
                    format!("max_list_size = {max} reached: the block list is full, not adding more (raise it, or shorten block_timeout)")
                });
                continue;
            }
            if !state.rate.try_take(now) {
                capped_targets.insert(b.target);
                let max = blocking.max_blocks_per_hour;
                report.cap_hit(state, "max_blocks_per_hour", || {
                    format!("max_blocks_per_hour = {max} reached: not adding more blocks this hour (raise it if this is a real attack)")
                });
                continue;
            }
            list_room -= 1;
            let (timeout, level) = if escalation.factor > 1.0 {
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
        // Connections of targets a cap stopped stay: removing them without the block would
        // only make the client retry.
        remove_connections = plan.remove_connections;
        remove_connections.retain(|k| target_of.get(k).is_none_or(|t| !capped_targets.contains(t)));
        report.capped += capped_targets.len() as u64;
        capped_any |= !capped_targets.is_empty();
    }
    if !capped_any && adds.iter().any(|a| a.kind == "added") {
        // Blocks went through uncapped: the next time a cap is hit is news again.
        state.caps_reported.remove("max_list_size");
        state.caps_reported.remove("max_blocks_per_hour");
    }

    // Act.
    let list = &blocking.address_list;
    let mut stored: Vec<NewBlock> = Vec::new();
    let mut lost: Option<ClientError> = None;
    if blocking.dry_run {
        for a in adds.iter().filter(|a| a.kind == "added") {
            let t = format_duration(a.timeout);
            warn!(
                router = name,
                "DRY RUN: would add {} to {list} (timeout: {t}) comment={:?}", a.address, a.comment
            );
            state.dry_run_blocked.insert(a.address, now + a.timeout);
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
            warn!(
                router = name,
                "DRY RUN: would remove {} connection {id}",
                family.as_str()
            );
        }
    } else {
        let results = bounded_adds(client, list, &adds).await;
        for (a, res) in adds.iter().zip(results) {
            let t = format_duration(a.timeout);
            let outcome = match res {
                Ok(AddOutcome::Added { .. }) => {
                    match a.kind {
                        "restored" => {
                            info!(
                                router = name,
                                "Restored {} to {list} (remaining: {t})", a.address
                            )
                        }
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
            };
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
                timeout: t,
                level: a.level,
                comment: a.comment.clone(),
                outcome,
            });
        }
        if lost.is_none() {
            let mut set = JoinSet::new();
            for (family, id) in remove_connections.iter().cloned() {
                let client = client.clone();
                set.spawn(async move { client.connection_remove(api(family), &id).await });
                if set.len() >= MAX_IN_FLIGHT {
                    join_removal(&mut set, &mut report, &mut lost, name).await;
                }
            }
            while !set.is_empty() {
                join_removal(&mut set, &mut report, &mut lost, name).await;
            }
        }
    }
    if report.acted > 0 {
        info!(
            router = name,
            "{}",
            policy::processed_message(report.acted as usize)
        );
    }
    report.duration_ms = started.elapsed().as_millis() as u64;

    // Remember, also when the connection broke halfway: the adds that went through happened.
    if state.last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
        let before = secs(now.saturating_sub(blocking.forget_after));
        with_store(env, name, move |s| s.prune(before)).await;
        state.last_prune = Some(Instant::now());
    }
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
    match lost {
        Some(e) => Err(explain(e, "changing the block list")),
        None => Ok(report),
    }
}

/// Commands in flight at once when adding or removing in bulk: enough to pipeline, few enough
/// that a slow router (~130 requests/s on a CHR) is not buried under timeouts.
const MAX_IN_FLIGHT: usize = 64;

/// How often history past `forget_after` is pruned from the store.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Adds every entry, at most [`MAX_IN_FLIGHT`] at once; results in input order.
async fn bounded_adds(
    client: &Client,
    list: &str,
    adds: &[PlannedAdd],
) -> Vec<Result<AddOutcome, ClientError>> {
    let mut results: Vec<Option<Result<AddOutcome, ClientError>>> =
        (0..adds.len()).map(|_| None).collect();
    let mut set = JoinSet::new();
    let mut next = 0;
    while next < adds.len() || !set.is_empty() {
        while next < adds.len() && set.len() < MAX_IN_FLIGHT {
            let a = &adds[next];
            let (client, list, address, comment) = (
                client.clone(),
                list.to_owned(),
                a.address.to_string(),
                a.comment.clone(),
            );
            let (family, timeout, i) = (api(a.family), a.timeout, next);
            set.spawn(async move {
                let r = client
                    .address_list_add(family, &list, &address, Some(timeout), &comment)
                    .await;
                (i, r)
            });
            next += 1;
        }
        if let Some(Ok((i, r))) = set.join_next().await {
            results[i] = Some(r);
        }
    }
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(ClientError::Closed {
                    router: client.router().to_owned(),
                })
            })
        })
        .collect()
}

/// Joins one connection removal and accounts for it.
async fn join_removal(
    set: &mut JoinSet<Result<RemoveOutcome, ClientError>>,
    report: &mut CycleReport,
    lost: &mut Option<ClientError>,
    name: &str,
) {
    match set.join_next().await {
        Some(Ok(Ok(RemoveOutcome::Removed))) => report.connections_removed += 1,
        Some(Ok(Ok(_))) => {} // gone already: fine
        Some(Ok(Err(e))) if e.is_connection_lost() => {
            lost.get_or_insert(e);
        }
        Some(Ok(Err(e))) => warn!(router = name, "could not remove a connection: {e}"),
        _ => {}
    }
}

/// `comment` with `suffix`, within RouterOS's comment length.
fn fit_comment(comment: &str, suffix: &str) -> String {
    let max = policy::MAX_COMMENT_BYTES.saturating_sub(suffix.len());
    let mut cut = comment.len().min(max);
    while !comment.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", &comment[..cut])
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
        ("capped".to_owned(), r.capped),
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
