//! The RouterOS API backend: one router, one API connection, the reads of a poll and the
//! writes of a decision, over `routeros-client`.
//!
//! A poll reads the router's addresses, (when due) its gateways, DNS servers and rosguard's
//! sessions, the allowlist, block and staging lists, (when due) the uptime, and streams both
//! connection tables with the pushed filter, keeping at most `max_candidates` rows. A decision
//! is applied with bounded pipelining: at most [`MAX_IN_FLIGHT`] commands at once, so a slow
//! router (~130 requests/s on a CHR) is not buried under timeouts.
//!
//! It remembers across reconnects what it learnt about the router: that it has no IPv6
//! package, that it compares counters as strings. It deliberately decides nothing and keeps
//! no history: that is the core's and the daemon's.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use rosguard_core::backend::Backend;
use rosguard_core::decide::Decision;
use rosguard_core::detect::{is_flag_candidate, is_stall_candidate};
use rosguard_core::model::{Connection, Family, ListEntry};
use rosguard_core::observation::{Observation, ObservePlan};
use rosguard_core::outcome::{AddResult, Applied, BackendError, FailureKind, RemoveResult};
use rosguard_core::policy::Protected;
use rosguard_core::settings::Settings;
use routeros_client::{AddOutcome, Client, ClientConfig, Error as ClientError, RemoveOutcome};
use routeros_proto::{parse_duration, Command, Reply};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::filter::{matches_pushed_filter, pushed_filter};
use crate::rows::{connection, list_entry, CONNECTION_PROPLIST};

/// Commands in flight at once when adding or removing in bulk.
pub const MAX_IN_FLIGHT: usize = 64;

/// The most candidate rows one poll keeps by default (`daemon.max_candidates`): far above
/// what `max_conn_per_cycle` can act on, far below what a hostile router could stream.
pub const DEFAULT_MAX_CANDIDATES: usize = 100_000;

/// A trap that means "this path does not exist here" (e.g. the IPv6 package is disabled).
fn is_missing_path(e: &ClientError) -> bool {
    e.trap_message()
        .is_some_and(|m| m.starts_with("no such command"))
}

/// A trap that means the API user lacks a policy.
pub fn is_permission(e: &ClientError) -> bool {
    e.trap_message()
        .is_some_and(|m| m.contains("not enough permissions"))
}

/// A client error as a backend failure that says what to do. `what` is what was being done
/// ("reading the block list").
pub fn backend_error(e: ClientError, what: &str) -> BackendError {
    use routeros_client::Error as E;
    let kind = match &e {
        E::LoginFailed { .. } => FailureKind::Login,
        e if e.is_connection_lost() => FailureKind::ConnectionLost,
        _ => FailureKind::Refused,
    };
    let label = match &e {
        E::LoginFailed { .. } => "login".to_owned(),
        E::Tls { .. } => "tls".to_owned(),
        E::Timeout { .. } => "timeout".to_owned(),
        E::Fatal { .. } => "fatal".to_owned(),
        E::Io { source, .. } => format!("io:{:?}", source.kind()),
        E::Protocol { .. } => "protocol".to_owned(),
        E::Closed { .. } => "closed".to_owned(),
        E::ReplyTooLarge { .. } => "reply-too-large".to_owned(),
        E::UnmatchedReply { .. } => "unmatched-reply".to_owned(),
        E::TlsPort { .. } => "tls-port".to_owned(),
        E::NotApi { .. } => "not-api".to_owned(),
        e if is_permission(e) => "permission".to_owned(),
        E::Trap { .. } => "trap".to_owned(),
        _ => "other".to_owned(),
    };
    let message = match e.trap_message() {
        Some(m) if is_permission(&e) => format!(
            "router {}: permission denied for {what} ({m}); give the rosguard user a group with the read,write,api policies",
            e.router()
        ),
        _ => format!("{what}: {}", one_line(&e)),
    };
    BackendError {
        kind,
        label,
        message,
    }
}

/// An error and its causes on one line, without repeating a cause its parent already quotes.
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// One router over the RouterOS API.
pub struct RouterOsBackend {
    config: ClientConfig,
    max_candidates: usize,
    client: Option<Client>,
    ipv6_missing: bool,
    filter_broken: bool,
}

impl std::fmt::Debug for RouterOsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterOsBackend")
            .field("router", &self.config.router)
            .field("connected", &self.client.is_some())
            .finish()
    }
}

impl RouterOsBackend {
    /// A backend for the router `config` describes; nothing is connected yet.
    pub fn new(config: ClientConfig, max_candidates: usize) -> Self {
        Self {
            config,
            max_candidates: max_candidates.max(1),
            client: None,
            ipv6_missing: false,
            filter_broken: false,
        }
    }

    /// The router's name.
    pub fn router(&self) -> &str {
        &self.config.router
    }

    /// The live client, for admin commands.
    pub fn client(&self) -> Result<&Client, BackendError> {
        self.client
            .as_ref()
            .filter(|c| !c.is_closed())
            .ok_or_else(|| BackendError {
                kind: FailureKind::ConnectionLost,
                label: "closed".into(),
                message: format!("router {}: not connected", self.config.router),
            })
    }

    fn families(&self) -> Vec<Family> {
        if self.ipv6_missing {
            vec![Family::V4]
        } else {
            Family::BOTH.to_vec()
        }
    }

    fn note_no_ipv6(&mut self) {
        if !self.ipv6_missing {
            info!(
                router = self.config.router.as_str(),
                "no IPv6 connection table on this router; scanning IPv4 only"
            );
            self.ipv6_missing = true;
        }
    }

    /// Both families' entries of one address-list; rows that cannot be read are logged and
    /// skipped.
    pub async fn list(&self, list: &str) -> Result<Vec<ListEntry>, BackendError> {
        let client = self.client()?;
        let mut out = Vec::new();
        for f in Family::BOTH {
            let rows = match client.address_list_print(f, list).await {
                Ok(rows) => rows,
                Err(e) if f == Family::V6 && is_missing_path(&e) => continue,
                Err(e) => return Err(backend_error(e, &format!("reading address-list {list}"))),
            };
            for row in rows {
                match list_entry(&row) {
                    Ok(e) => out.push(e),
                    Err(e) => warn!(router = client.router(), "skipping address-list row: {e}"),
                }
            }
        }
        Ok(out)
    }

    /// Removes address-list entries; returns how many were removed (vanished ones are fine).
    pub async fn remove_entries(&self, entries: &[ListEntry]) -> Result<usize, BackendError> {
        let client = self.client()?;
        let mut set = JoinSet::new();
        let mut removed = 0;
        let mut first_err = None;
        for e in entries {
            let (c, id, fam) = (client.clone(), e.id.clone(), e.family());
            set.spawn(async move { c.address_list_remove(fam, &id).await });
            if set.len() >= MAX_IN_FLIGHT {
                join_remove(&mut set, &mut removed, &mut first_err).await;
            }
        }
        while !set.is_empty() {
            join_remove(&mut set, &mut removed, &mut first_err).await;
        }
        match first_err {
            Some(e) => Err(backend_error(e, "removing from an address-list")),
            None => Ok(removed),
        }
    }

    /// Adds one address-list entry.
    pub async fn add_entry(
        &self,
        list: &str,
        address: IpAddr,
        timeout: Option<Duration>,
        comment: &str,
    ) -> Result<AddResult, BackendError> {
        let client = self.client()?;
        match client
            .address_list_add(
                Family::of(address),
                list,
                &address.to_string(),
                timeout,
                comment,
            )
            .await
        {
            Ok(AddOutcome::Added { .. }) => Ok(AddResult::Added),
            Ok(_) => Ok(AddResult::AlreadyPresent),
            Err(e) => Err(backend_error(e, &format!("adding to address-list {list}"))),
        }
    }

    /// Removes every connection with `addr` at either end, in both tables (TCP and UDP alike:
    /// the flows that would flag it again). Reads the whole table once; keeps only the ids.
    pub async fn remove_connections_of(&self, addr: IpAddr) -> Result<usize, BackendError> {
        let client = self.client()?;
        let family = Family::of(addr.to_canonical());
        let cmd =
            Command::new(&family.path("firewall/connection/print")).proplist(CONNECTION_PROPLIST);
        let mut rows = match client.connections(family, cmd).await {
            Ok(s) => s,
            Err(e) if family == Family::V6 && is_missing_path(&e) => return Ok(0),
            Err(e) => return Err(backend_error(e, "reading the connection table")),
        };
        let addr = addr.to_canonical();
        let mut ids = Vec::new();
        while let Some(row) = rows.next().await {
            let row = row.map_err(|e| backend_error(e, "reading the connection table"))?;
            if let Ok(c) = connection(&row, family) {
                if c.src.addr.to_canonical() == addr || c.dst.addr.to_canonical() == addr {
                    ids.push(c.id);
                }
            }
        }
        let mut removed = 0;
        for id in ids {
            match client.connection_remove(family, id.as_str()).await {
                Ok(RemoveOutcome::Removed) => removed += 1,
                Ok(_) => {}
                Err(e) => return Err(backend_error(e, "removing a connection")),
            }
        }
        Ok(removed)
    }

    async fn addresses(&mut self) -> Result<Vec<IpNet>, BackendError> {
        let client = self.client()?.clone();
        let mut out = Vec::new();
        for f in self.families() {
            let rows = match client.addresses(f).await {
                Ok(rows) => rows,
                Err(e) if f == Family::V6 && is_missing_path(&e) => {
                    self.note_no_ipv6();
                    continue;
                }
                Err(e) => return Err(backend_error(e, &format!("reading {}", f.path("address")))),
            };
            for row in &rows {
                let Some(text) = row.get_str("address") else {
                    continue;
                };
                if let Ok(net) = text.parse::<IpNet>() {
                    out.push(net);
                } else if let Ok(ip) = text.parse::<IpAddr>() {
                    out.push(IpNet::from(ip));
                }
            }
        }
        Ok(out)
    }

    /// One protected set; `Ok(None)` when the router would not say (logged), an error only
    /// when the connection is lost.
    async fn protected(&self, kind: Protected) -> Result<Option<Vec<IpAddr>>, BackendError> {
        let client = self.client()?;
        let name = self.config.router.as_str();
        let mut out = Vec::new();
        let mut read = |rows: &[Reply], keys: &[&str]| {
            for row in rows {
                for key in keys {
                    for part in row.get_str(key).unwrap_or("").split([',', '%', ' ']) {
                        if let Ok(ip) = part.trim().parse::<IpAddr>() {
                            out.push(ip);
                        }
                    }
                }
            }
        };
        let cmds: Vec<(Command, Family, &[&str])> = match kind {
            Protected::Gateway => self
                .families()
                .into_iter()
                .map(|f| {
                    let default_route = if f == Family::V4 { "0.0.0.0/0" } else { "::/0" };
                    (
                        Command::new(&f.path("route/print"))
                            .proplist(&["dst-address", "gateway", "immediate-gw"])
                            .query_eq("dst-address", default_route),
                        f,
                        &["gateway", "immediate-gw"][..],
                    )
                })
                .collect(),
            Protected::Dns => vec![(
                Command::new("/ip/dns/print").proplist(&["servers", "dynamic-servers"]),
                Family::V4,
                &["servers", "dynamic-servers"][..],
            )],
            Protected::Session => vec![(
                Command::new("/user/active/print")
                    .proplist(&["name", "address", "via"])
                    .query_eq("name", self.config.username.as_str()),
                Family::V4,
                &["address"][..],
            )],
        };
        for (cmd, family, keys) in cmds {
            let path = cmd.path().to_owned();
            match client.call(cmd).await {
                Ok(resp) => read(&resp.rows, keys),
                Err(e) if e.is_connection_lost() => {
                    return Err(backend_error(e, &format!("reading {path}")))
                }
                Err(e) if family == Family::V6 && is_missing_path(&e) => {}
                Err(e) => {
                    // The cycle says once that protection is incomplete; the detail is here.
                    debug!(
                        router = name,
                        "cannot read {}: {}",
                        kind.source(),
                        one_line(&e)
                    );
                    return Ok(None);
                }
            }
        }
        Ok(Some(out))
    }

    async fn uptime(&self) -> Result<Option<Duration>, BackendError> {
        match self.client()?.system_resource().await {
            Ok(r) => Ok(r.get_str("uptime").and_then(|u| parse_duration(u).ok())),
            Err(e) if e.is_connection_lost() => Err(backend_error(e, "reading /system/resource")),
            Err(e) => {
                debug!(
                    router = self.config.router.as_str(),
                    "no uptime: {}",
                    one_line(&e)
                );
                Ok(None)
            }
        }
    }

    /// The number of connections in the router's tables: `total-entries` of the connection
    /// tracking settings (one cheap read), else `count-only` prints (which walk the table on
    /// the router) when `count` says the caller needs it. `Ok(None)`: unknown.
    async fn table_size(&self, count: bool) -> Result<Option<u64>, BackendError> {
        let client = self.client()?;
        let name = self.config.router.as_str();
        match client.connection_tracking_total().await {
            // `total-entries` covers IPv4 and IPv6 alike. Should a router count only IPv4
            // there, the brake's ratio comes out higher: it errs on the safe side.
            Ok(Some(n)) => return Ok(Some(n)),
            Ok(None) => debug!(router = name, "no total-entries in connection tracking"),
            Err(e) if e.is_connection_lost() => {
                return Err(backend_error(e, "reading connection tracking"))
            }
            Err(e) => debug!(
                router = name,
                "connection tracking unreadable ({})",
                one_line(&e)
            ),
        }
        if !count {
            return Ok(None);
        }
        let mut total = 0u64;
        for f in self.families() {
            match client
                .count(Command::new(&f.path("firewall/connection/print")))
                .await
            {
                Ok(n) => total += n,
                Err(e) if e.is_connection_lost() => {
                    return Err(backend_error(e, "counting connections"))
                }
                Err(e) if f == Family::V6 && is_missing_path(&e) => {}
                Err(e) => {
                    debug!(router = name, "count-only failed: {}", one_line(&e));
                    return Ok(None);
                }
            }
        }
        Ok(Some(total))
    }

    /// Streams the connection tables into `obs`.
    async fn connections(
        &mut self,
        settings: &Settings,
        obs: &mut Observation,
    ) -> Result<bool, BackendError> {
        let d = &settings.detection;
        // With detection off the rows are still read and counted, none is kept.
        let pushed = d.enabled && d.server_filter && !self.filter_broken;
        let client = self.client()?.clone();
        let name = self.config.router.clone();
        let mut misfiltered = 0u64;
        let (mut flagging, mut watched, mut unwatched) = (0usize, 0usize, 0u64);
        for family in self.families() {
            let mut cmd = Command::new(&family.path("firewall/connection/print"))
                .proplist(CONNECTION_PROPLIST);
            if pushed {
                cmd = pushed_filter(cmd, d);
            }
            let mut rows = match client.connections(family, cmd).await {
                Ok(s) => s,
                Err(e) if family == Family::V6 && is_missing_path(&e) => {
                    self.note_no_ipv6();
                    continue;
                }
                Err(e) => return Err(backend_error(e, "reading the connection table")),
            };
            while let Some(row) = rows.next().await {
                let row = match row {
                    Ok(r) => r,
                    Err(e) if family == Family::V6 && is_missing_path(&e) => {
                        self.note_no_ipv6();
                        break;
                    }
                    Err(e) => return Err(backend_error(e, "reading the connection table")),
                };
                obs.rows_read += 1;
                let conn: Connection = match connection(&row, family) {
                    Ok(c) => c,
                    Err(e) => {
                        obs.bad_rows += 1;
                        warn!(router = name.as_str(), "skipping connection row: {e}");
                        continue;
                    }
                };
                if pushed && !matches_pushed_filter(&conn, d) {
                    misfiltered += 1;
                }
                if is_flag_candidate(&conn, d) {
                    if flagging >= self.max_candidates {
                        obs.truncated = true;
                        rows.cancel().await;
                        break;
                    }
                    flagging += 1;
                    obs.candidates.push(conn);
                } else if d.enabled && is_stall_candidate(&conn, d) {
                    // Flows the stall rule watches: bounded apart, and past the bound they
                    // wait (the tracker cannot hold more); the other rules lose nothing.
                    if watched < d.stall.max_tracked {
                        watched += 1;
                        obs.candidates.push(conn);
                    } else {
                        unwatched += 1;
                    }
                }
            }
            if obs.truncated {
                break;
            }
        }
        if unwatched > 0 {
            debug!(
                router = name.as_str(),
                "{unwatched} flows not watched for stalls this cycle: stall.max_tracked = {} reached",
                d.stall.max_tracked
            );
        }
        if misfiltered > 0 && !self.filter_broken {
            self.filter_broken = true;
            warn!(
                router = name.as_str(),
                "the router returned {misfiltered} rows that do not match the pushed filter (it compares counters as strings); filtering locally from now on (set server_filter = false to make this permanent)"
            );
        }
        Ok(pushed)
    }
}

async fn join_remove(
    set: &mut JoinSet<Result<RemoveOutcome, ClientError>>,
    removed: &mut usize,
    first_err: &mut Option<ClientError>,
) {
    match set.join_next().await {
        Some(Ok(Ok(RemoveOutcome::Removed))) => *removed += 1,
        Some(Ok(Ok(_))) => {}
        Some(Ok(Err(e))) => {
            first_err.get_or_insert(e);
        }
        _ => {}
    }
}

impl Backend for RouterOsBackend {
    async fn connect(&mut self) -> Result<(), BackendError> {
        if let Some(old) = self.client.take() {
            old.close().await;
        }
        let client = Client::connect(self.config.clone())
            .await
            .map_err(|e| backend_error(e, "connecting"))?;
        self.client = Some(client);
        Ok(())
    }

    async fn observe(
        &mut self,
        plan: &ObservePlan,
        settings: &Settings,
    ) -> Result<Observation, BackendError> {
        let b = &settings.blocking;
        let mut obs = Observation {
            addresses: self.addresses().await?,
            ..Observation::default()
        };
        if plan.refresh_protected {
            for kind in Protected::ALL {
                if let Some(set) = self.protected(kind).await? {
                    obs.protected.push((kind, set));
                }
            }
        }
        obs.allowlist = self.list(&b.allowlist_name).await?;
        obs.block_list = self.list(&b.address_list).await?;
        let staging = &settings.detection.scan.staging_list;
        if settings.detection.enabled && !plan.context_only && !staging.is_empty() {
            match self.list(staging).await {
                Ok(l) => obs.staging = l,
                Err(e) if e.is_connection_lost() => return Err(e),
                Err(e) => debug!(router = self.router(), "staging list unreadable: {e}"),
            }
        }
        if plan.read_uptime {
            obs.uptime = self.uptime().await?;
        }
        let client = self.client()?;
        obs.own = vec![client.local_addr().ip(), client.peer_addr().ip()];
        if !plan.context_only {
            let pushed = self.connections(settings, &mut obs).await?;
            obs.filtered = pushed;
            if pushed {
                let count = !obs.candidates.is_empty() && b.panic_ratio < 1.0;
                obs.table_size = self.table_size(count).await?;
            }
        }
        Ok(obs)
    }

    async fn apply(&mut self, d: &Decision, settings: &Settings) -> Applied {
        if d.dry_run {
            return Applied {
                adds: d.adds.iter().map(|_| AddResult::WouldAdd).collect(),
                removals: d
                    .removals
                    .iter()
                    .map(|_| RemoveResult::WouldRemove)
                    .collect(),
                lost: None,
            };
        }
        let client = match self.client() {
            Ok(c) => c.clone(),
            Err(e) => {
                return Applied {
                    adds: d.adds.iter().map(|_| AddResult::NotSent).collect(),
                    removals: d.removals.iter().map(|_| RemoveResult::NotSent).collect(),
                    lost: Some(e),
                }
            }
        };
        let list = settings.blocking.address_list.as_str();
        let mut out = Applied::default();
        // Adds, at most MAX_IN_FLIGHT at once, results in input order.
        let mut results: Vec<Option<AddResult>> = vec![None; d.adds.len()];
        let mut set = JoinSet::new();
        let mut next = 0;
        while next < d.adds.len() || !set.is_empty() {
            while next < d.adds.len() && set.len() < MAX_IN_FLIGHT && out.lost.is_none() {
                let a = &d.adds[next];
                let (c, list, addr, comment) = (
                    client.clone(),
                    list.to_owned(),
                    a.address.to_string(),
                    a.comment.clone(),
                );
                let (family, timeout, i) = (a.family, a.timeout, next);
                set.spawn(async move {
                    (
                        i,
                        c.address_list_add(family, &list, &addr, Some(timeout), &comment)
                            .await,
                    )
                });
                next += 1;
            }
            if out.lost.is_some() && set.is_empty() {
                break;
            }
            let Some(Ok((i, r))) = set.join_next().await else {
                continue;
            };
            results[i] = Some(match r {
                Ok(AddOutcome::Added { .. }) => AddResult::Added,
                Ok(_) => AddResult::AlreadyPresent,
                Err(e) if e.is_connection_lost() => {
                    out.lost
                        .get_or_insert(backend_error(e, "changing the block list"));
                    AddResult::NotSent
                }
                Err(e) => {
                    let permission = is_permission(&e);
                    let message =
                        backend_error(e, &format!("adding {} to {list}", d.adds[i].address))
                            .message;
                    AddResult::Failed {
                        message,
                        permission,
                    }
                }
            });
        }
        out.adds = results
            .into_iter()
            .map(|r| r.unwrap_or(AddResult::NotSent))
            .collect();
        // Removals, only while the connection holds.
        let mut removals: Vec<Option<RemoveResult>> = vec![None; d.removals.len()];
        if out.lost.is_none() {
            let mut set = JoinSet::new();
            let mut next = 0;
            while next < d.removals.len() || !set.is_empty() {
                while next < d.removals.len() && set.len() < MAX_IN_FLIGHT {
                    let r = &d.removals[next];
                    let (c, family, id, i) = (client.clone(), r.family, r.id.clone(), next);
                    set.spawn(async move { (i, c.connection_remove(family, id.as_str()).await) });
                    next += 1;
                }
                let Some(Ok((i, r))) = set.join_next().await else {
                    continue;
                };
                removals[i] = Some(match r {
                    Ok(RemoveOutcome::Removed) => RemoveResult::Removed,
                    Ok(_) => RemoveResult::Gone,
                    Err(e) if e.is_connection_lost() => {
                        out.lost
                            .get_or_insert(backend_error(e, "removing connections"));
                        RemoveResult::NotSent
                    }
                    Err(e) => RemoveResult::Failed {
                        message: one_line(&e),
                    },
                });
            }
        }
        out.removals = removals
            .into_iter()
            .map(|r| r.unwrap_or(RemoveResult::NotSent))
            .collect();
        out
    }

    async fn close(&mut self) {
        if let Some(c) = self.client.take() {
            c.close().await;
        }
    }
}
