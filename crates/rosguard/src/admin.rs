//! The one-shot commands: `once`, `list`, `unblock`, `clear`, `stats`, `firewall`.
//!
//! Each connects to the selected routers, does one thing, prints a result for humans (or JSON)
//! and exits with a code that says whether it worked. They share the daemon's cycle and the
//! client's typed helpers; none of them keeps state.

use std::net::IpAddr;
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use rosguard_core::detect::BlockTarget;
use rosguard_core::model::{Family, ListAddress, ListEntry};
use routeros_client::{Client, Family as ApiFamily, RemoveOutcome};
use routeros_proto::{format_duration, Command};
use serde::Serialize;

use crate::config::{Config, RouterConfig};
use crate::cycle::{explain, list_entries, run_cycle, CycleEnv, CycleReport, RouterState};
use crate::daemon::client_config;
use crate::outln;

/// The comment prefix that marks rosguard's own address-list entries.
pub const ENTRY_SIGNATURE: &str = "rosguard:";
/// The comment prefix that marks rosguard's firewall rules.
pub const RULE_SIGNATURE: &str = "rosguard-firewall:";

async fn connect(router: &RouterConfig) -> Result<Client> {
    Client::connect(client_config(router))
        .await
        .map_err(anyhow::Error::new)
}

const BOTH: [Family; 2] = [Family::V4, Family::V6];

fn api(f: Family) -> ApiFamily {
    match f {
        Family::V4 => ApiFamily::V4,
        Family::V6 => ApiFamily::V6,
    }
}

fn family_of(e: &ListEntry) -> Family {
    match &e.address {
        ListAddress::Net(n) if n.addr().is_ipv6() => Family::V6,
        ListAddress::Range(a, _) if a.is_ipv6() => Family::V6,
        _ => Family::V4,
    }
}

fn address_text(e: &ListEntry) -> String {
    match &e.address {
        ListAddress::Net(n) if n.prefix_len() == n.max_prefix_len() => n.addr().to_string(),
        ListAddress::Net(n) => n.to_string(),
        ListAddress::Range(a, b) => format!("{a}-{b}"),
        ListAddress::Dns(d) => d.clone(),
        #[allow(unreachable_patterns)]
        _ => String::from("?"),
    }
}

/// `rosguard once`.
pub async fn once(
    cfg: &Config,
    only: Option<&str>,
    dry_run: bool,
    json: bool,
    env: &CycleEnv,
) -> Result<ExitCode> {
    let mut reports = Vec::new();
    let mut failed = false;
    for router in cfg.select(only)? {
        let mut router = router.clone();
        router.blocking.dry_run |= dry_run;
        let result = async {
            let client = connect(&router).await?;
            let mut state = RouterState::new(&router, env);
            let report = run_cycle(&client, &router, &cfg.daemon, &mut state, env).await;
            client.close().await;
            report
        }
        .await;
        match result {
            Ok(r) => reports.push(r),
            Err(e) => {
                failed = true;
                eprintln!("error: {}", crate::daemon::one_line(e.as_ref()));
            }
        }
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            print_report(r);
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Prints a cycle report for humans.
pub fn print_report(r: &CycleReport) {
    let mode = if r.dry_run {
        " (dry run: nothing was changed)"
    } else {
        ""
    };
    outln!("router {}{mode}", r.router);
    outln!(
        "  scanned {} connections ({} unreadable rows skipped), flagged {}, in {} ms",
        r.scanned,
        r.bad_rows,
        r.flagged,
        r.duration_ms
    );
    for b in &r.blocks {
        let verb = match b.outcome.as_str() {
            "added" => "blocked",
            "would-add" => "would block",
            "already-present" => "already blocked",
            "restored" => "restored (lost from the router, still due)",
            "shared" => "blocked (shared by another router)",
            _ => "FAILED to block",
        };
        outln!(
            "  {verb} {} in {} for {}: {}",
            b.address,
            b.list,
            b.timeout,
            b.comment
        );
        if b.outcome.starts_with("failed") {
            outln!("    {}", b.outcome);
        }
    }
    for s in &r.skipped {
        outln!("  spared {} ({}): {}", s.address, s.connection, s.reason);
    }
    if r.deferred > 0 {
        outln!(
            "  {} flagged connections left for the next cycle (max_conn_per_cycle)",
            r.deferred
        );
    }
    if r.capped > 0 {
        outln!(
            "  {} blocks held back by a safety cap ({})",
            r.capped,
            r.caps_hit.join(", ")
        );
    }
    if r.connections_removed > 0 {
        outln!("  removed {} TCP connections", r.connections_removed);
    }
    if r.flagged == 0 {
        outln!("  nothing suspicious");
    }
}

#[derive(Serialize)]
struct ListRow {
    router: String,
    id: String,
    address: String,
    timeout: Option<String>,
    dynamic: bool,
    disabled: bool,
    comment: Option<String>,
}

/// `rosguard list`.
pub async fn list(cfg: &Config, only: Option<&str>, json: bool) -> Result<ExitCode> {
    let mut rows = Vec::new();
    for router in cfg.select(only)? {
        let client = connect(router).await?;
        let entries = list_entries(&client, &router.blocking.address_list, &BOTH)
            .await
            .map_err(|e| explain(e, "reading the block list"))?;
        client.close().await;
        rows.extend(entries.into_iter().map(|e| ListRow {
            router: router.name.clone(),
            address: address_text(&e),
            id: e.id,
            timeout: e.timeout.map(format_duration),
            dynamic: e.dynamic,
            disabled: e.disabled,
            comment: e.comment,
        }));
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        outln!("the block list is empty");
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<10} {:<40} {:<14} COMMENT",
        "ROUTER",
        "ADDRESS",
        "TIMEOUT"
    );
    for r in &rows {
        outln!(
            "{:<10} {:<40} {:<14} {}",
            r.router,
            r.address,
            r.timeout.as_deref().unwrap_or("permanent"),
            r.comment.as_deref().unwrap_or("")
        );
    }
    outln!("{} entries", rows.len());
    Ok(ExitCode::SUCCESS)
}

/// `rosguard unblock ADDR`.
pub async fn unblock(
    cfg: &Config,
    only: Option<&str>,
    address: &str,
    env: &CycleEnv,
) -> Result<ExitCode> {
    let ip: IpAddr = address.trim().parse().map_err(|_| {
        anyhow!("{address:?} is not an IP address; give one like 203.0.113.45 or 2001:db8::1")
    })?;
    let routers = cfg.select(only)?;
    // Lift it in the history first, for every router, so that no router restores it later,
    // even one that cannot be reached right now.
    if let Some(store) = &env.store {
        let mut store = store
            .lock()
            .map_err(|_| anyhow!("state store lock poisoned"))?;
        for router in &routers {
            store.mark_unblocked(&router.name, &router.blocking.address_list, ip, unix_now())?;
        }
    }
    let mut removed = 0;
    let mut failed = false;
    for router in routers {
        let list = &router.blocking.address_list;
        let result = async {
            let client = connect(router).await?;
            let entries = list_entries(&client, list, &BOTH)
                .await
                .map_err(|e| explain(e, "reading the block list"))?;
            let mut n = 0;
            for e in entries.iter().filter(|e| {
                matches!(&e.address, ListAddress::Net(net) if net.addr() == ip && net.prefix_len() == net.max_prefix_len())
            }) {
                match client.address_list_remove(api(family_of(e)), &e.id).await {
                    Ok(RemoveOutcome::Removed) => n += 1,
                    Ok(_) => {}
                    Err(e) => return Err(explain(e, "removing from the block list")),
                }
            }
            client.close().await;
            Ok::<usize, anyhow::Error>(n)
        }
        .await;
        match result {
            Ok(0) => {}
            Ok(n) => {
                removed += n;
                outln!("router {}: removed {ip} from {list}", router.name);
            }
            Err(e) => {
                failed = true;
                eprintln!("error: {}", crate::daemon::one_line(e.as_ref()));
            }
        }
    }
    if failed {
        return Ok(ExitCode::FAILURE);
    }
    if removed == 0 {
        outln!("{ip} is not in the block list");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `rosguard clear [--all]`.
pub async fn clear(
    cfg: &Config,
    only: Option<&str>,
    all: bool,
    env: &CycleEnv,
) -> Result<ExitCode> {
    for router in cfg.select(only)? {
        let client = connect(router).await?;
        let list = &router.blocking.address_list;
        let entries = list_entries(&client, list, &BOTH)
            .await
            .map_err(|e| explain(e, "reading the block list"))?;
        let doomed: Vec<&ListEntry> = entries
            .iter()
            .filter(|e| {
                all || e
                    .comment
                    .as_deref()
                    .is_some_and(|c| c.starts_with(ENTRY_SIGNATURE))
            })
            .collect();
        let mut set = tokio::task::JoinSet::new();
        for e in &doomed {
            let (client, id, fam) = (client.clone(), e.id.clone(), api(family_of(e)));
            set.spawn(async move { client.address_list_remove(fam, &id).await });
        }
        let mut removed = 0;
        while let Some(res) = set.join_next().await {
            match res.context("remove task")? {
                Ok(RemoveOutcome::Removed) => removed += 1,
                Ok(_) => {}
                Err(e) => return Err(explain(e, "removing from the block list")),
            }
        }
        if let Some(store) = &env.store {
            store
                .lock()
                .map_err(|_| anyhow!("state store lock poisoned"))?
                .mark_list_unblocked(&router.name, list, unix_now())?;
        }
        let kept = entries.len() - doomed.len();
        outln!(
            "router {}: removed {removed} entries from {list}{}",
            router.name,
            if kept > 0 {
                format!(" ({kept} entries not added by rosguard kept; --all removes them too)")
            } else {
                String::new()
            }
        );
        client.close().await;
    }
    Ok(ExitCode::SUCCESS)
}

fn unix_now() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// `2026-11-24 16:30:02 UTC`.
pub fn format_unix(t: i64) -> String {
    let st = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64);
    humantime::format_rfc3339_seconds(st)
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC")
}

/// `rosguard why ADDR`: the block history of an address, in plain language.
pub fn why(store: &rosguard_store::Store, address: &str, json: bool) -> Result<ExitCode> {
    let ip: IpAddr = address.trim().parse().map_err(|_| {
        anyhow!("{address:?} is not an IP address; give one like 203.0.113.45 or 2001:db8::1")
    })?;
    let rows = store.blocks_for(ip)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        outln!(
            "rosguard has no record of blocking {ip} (state: {})",
            store.path().display()
        );
        return Ok(ExitCode::FAILURE);
    }
    let real = rows.iter().filter(|r| !r.dry_run).count();
    outln!(
        "{ip}: {real} block(s){}, newest first",
        if real < rows.len() {
            " and dry-run decisions"
        } else {
            ""
        }
    );
    let now = unix_now();
    for r in &rows {
        let verb = if r.dry_run {
            "would have been blocked (dry run)"
        } else {
            "was blocked"
        };
        outln!(
            "\n{}: {verb} on router {} in {} for {}{}",
            format_unix(r.at_unix),
            r.router,
            r.list,
            format_duration(std::time::Duration::from_secs(r.timeout_secs)),
            if r.level > 0 {
                format!(" (repeat offender, escalation level {})", r.level)
            } else {
                String::new()
            }
        );
        let ev = &r.evidence;
        if let Some(conn) = ev.get("connection") {
            let field = |k: &str| {
                conn.get(k)
                    .map(|v| v.to_string().trim_matches('"').to_owned())
                    .unwrap_or_else(|| "?".into())
            };
            let cfg = ev.get("config");
            let cfgv = |k: &str| {
                cfg.and_then(|c| c.get(k))
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "?".into())
            };
            outln!(
                "  because {} connection {} -> {} sent {} packets and got {} back (rule {}: orig-packets > {}, repl-packets <= {}){}",
                field("protocol"),
                endpoint(conn.get("src")),
                endpoint(conn.get("dst")),
                field("orig_packets"),
                field("repl_packets"),
                ev.get("rule").map(|v| v.to_string().trim_matches('"').to_owned()).unwrap_or_else(|| "?".into()),
                cfgv("min_orig_packets"),
                cfgv("max_repl_packets"),
                conn.get("tcp_state").and_then(|v| v.as_str()).map(|s| format!(", tcp-state {s}")).unwrap_or_default()
            );
        } else if let Some(from) = ev.get("shared_from").and_then(|v| v.as_str()) {
            outln!("  because router {from} blocked it and share_blocks is on");
        }
        outln!("  comment: {}", r.comment);
        match r.lifted_unix {
            Some(t) => outln!("  lifted by hand at {}", format_unix(t)),
            None if r.dry_run => {}
            None if r.expires_unix > now => {
                outln!("  in force until {}", format_unix(r.expires_unix))
            }
            None => outln!("  expired at {}", format_unix(r.expires_unix)),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn endpoint(v: Option<&serde_json::Value>) -> String {
    let Some(v) = v else { return "?".into() };
    let addr = v.get("addr").and_then(|a| a.as_str()).unwrap_or("?");
    match v.get("port").and_then(serde_json::Value::as_u64) {
        Some(p) if addr.contains(':') => format!("[{addr}]:{p}"),
        Some(p) => format!("{addr}:{p}"),
        None => addr.to_owned(),
    }
}

#[derive(Serialize)]
struct RouterStats {
    router: String,
    address: String,
    version: Option<String>,
    board: Option<String>,
    uptime: Option<String>,
    cpu_load: Option<String>,
    connections_v4: u64,
    connections_v6: Option<u64>,
    block_list: String,
    block_entries: usize,
    block_entries_rosguard: usize,
    allowlist_entries: usize,
    /// Cumulative counters from the state store (cycles, flagged, blocked, skipped_*, cap_*).
    history: std::collections::BTreeMap<String, u64>,
}

/// `rosguard stats`.
pub async fn stats(
    cfg: &Config,
    only: Option<&str>,
    json: bool,
    env: &CycleEnv,
) -> Result<ExitCode> {
    let mut all = Vec::new();
    for router in cfg.select(only)? {
        let client = connect(router).await?;
        let res = client
            .system_resource()
            .await
            .map_err(|e| explain(e, "reading /system/resource"))?;
        let count = |f: Family| {
            let client = client.clone();
            async move {
                client
                    .count(Command::new(&api(f).path("firewall/connection/print")))
                    .await
            }
        };
        let v4 = count(Family::V4)
            .await
            .map_err(|e| explain(e, "counting connections"))?;
        let v6 = count(Family::V6).await.ok();
        let blocked = list_entries(&client, &router.blocking.address_list, &BOTH)
            .await
            .map_err(|e| explain(e, "reading the block list"))?;
        let allow = list_entries(&client, &router.blocking.allowlist_name, &BOTH)
            .await
            .map_err(|e| explain(e, "reading the allowlist"))?;
        client.close().await;
        all.push(RouterStats {
            router: router.name.clone(),
            address: router.address.clone(),
            version: res.get_str("version").map(str::to_owned),
            board: res.get_str("board-name").map(str::to_owned),
            uptime: res.get_str("uptime").map(str::to_owned),
            cpu_load: res.get_str("cpu-load").map(str::to_owned),
            connections_v4: v4,
            connections_v6: v6,
            block_list: router.blocking.address_list.clone(),
            block_entries_rosguard: blocked
                .iter()
                .filter(|e| {
                    e.comment
                        .as_deref()
                        .is_some_and(|c| c.starts_with(ENTRY_SIGNATURE))
                })
                .count(),
            block_entries: blocked.len(),
            allowlist_entries: allow.len(),
            history: match &env.store {
                Some(store) => store
                    .lock()
                    .map_err(|_| anyhow!("state store lock poisoned"))?
                    .counters(&router.name)?,
                None => Default::default(),
            },
        });
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    for s in &all {
        outln!("router {} ({})", s.router, s.address);
        outln!(
            "  RouterOS {} on {}, up {}, cpu {}%",
            s.version.as_deref().unwrap_or("?"),
            s.board.as_deref().unwrap_or("?"),
            s.uptime.as_deref().unwrap_or("?"),
            s.cpu_load.as_deref().unwrap_or("?")
        );
        outln!(
            "  connections: {} IPv4, {}",
            s.connections_v4,
            s.connections_v6
                .map_or("no IPv6 table".to_string(), |n| format!("{n} IPv6"))
        );
        outln!(
            "  {}: {} entries ({} by rosguard); allowlist: {} entries",
            s.block_list,
            s.block_entries,
            s.block_entries_rosguard,
            s.allowlist_entries
        );
        if s.history.is_empty() {
            outln!("  no history in the state store yet");
        } else {
            let line: Vec<String> = s.history.iter().map(|(k, v)| format!("{k}={v}")).collect();
            outln!("  since the state began: {}", line.join(" "));
            if s.history.keys().any(|k| k.starts_with("cap_")) {
                outln!("  a safety cap was hit (cap_*): see the log, and raise the cap if the blocks were wanted");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `rosguard firewall` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirewallAction {
    Print,
    Install,
    Remove,
}

/// One filter rule: its attributes in RouterOS order, without the comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterRule {
    pub chain: &'static str,
    pub matcher: &'static str,
    pub list: String,
    pub comment: String,
}

/// The drop rules that make `list` block, for a block target. With "dst" the list holds the
/// far end of outgoing connections, so the rules match the *destination*: the original
/// script's README matched the source, which never fires for what the script adds.
pub fn firewall_rules(list: &str, target: BlockTarget) -> Vec<FilterRule> {
    let rule = |chain: &'static str, matcher: &'static str| FilterRule {
        chain,
        matcher,
        list: list.to_owned(),
        comment: format!("{RULE_SIGNATURE} {chain} drop {matcher}={list}"),
    };
    match target {
        BlockTarget::Dst => vec![
            rule("forward", "dst-address-list"),
            rule("output", "dst-address-list"),
        ],
        BlockTarget::Src => vec![
            rule("forward", "src-address-list"),
            rule("input", "src-address-list"),
        ],
        _ => vec![
            rule("forward", "src-address-list"),
            rule("forward", "dst-address-list"),
            rule("input", "src-address-list"),
            rule("output", "dst-address-list"),
        ],
    }
}

/// `rosguard firewall [--install | --remove]`.
pub async fn firewall(
    cfg: &Config,
    only: Option<&str>,
    action: FirewallAction,
) -> Result<ExitCode> {
    for router in cfg.select(only)? {
        let rules = firewall_rules(
            &router.blocking.address_list,
            router.detection.rules.block_target,
        );
        if action == FirewallAction::Print {
            outln!(
                "# router {}: rules that make {} block",
                router.name,
                router.blocking.address_list
            );
            for fam in ["ip", "ipv6"] {
                for r in &rules {
                    outln!(
                        "/{fam} firewall filter add chain={} action=drop {}={} comment=\"{}\" place-before=0",
                        r.chain, r.matcher, r.list, r.comment
                    );
                }
            }
            continue;
        }
        let client = connect(router).await?;
        for fam in BOTH {
            let path = |rest: &str| api(fam).path(&format!("firewall/filter/{rest}"));
            let existing = match client
                .call(Command::new(&path("print")).proplist(&[".id", "comment"]))
                .await
            {
                Ok(r) => r.rows,
                Err(e)
                    if fam == Family::V6
                        && matches!(&e, routeros_client::Error::Trap { message, .. } if message.starts_with("no such command")) =>
                {
                    continue
                }
                Err(e) => return Err(explain(e, "reading the firewall filter rules")),
            };
            let ours: Vec<(String, String)> = existing
                .iter()
                .filter_map(|r| {
                    Some((
                        r.get_str(".id")?.to_owned(),
                        r.get_str("comment")?.to_owned(),
                    ))
                })
                .filter(|(_, c)| c.starts_with(RULE_SIGNATURE))
                .collect();
            let family = if fam == Family::V4 { "IPv4" } else { "IPv6" };
            match action {
                FirewallAction::Install => {
                    let first = existing
                        .iter()
                        .find_map(|r| r.get_str(".id").map(str::to_owned));
                    let mut added = 0;
                    // Insert in reverse so that, each placed before the first rule, they end up in order.
                    for r in rules.iter().rev() {
                        if ours.iter().any(|(_, c)| c == &r.comment) {
                            continue;
                        }
                        let mut cmd = Command::new(&path("add"))
                            .attr("chain", r.chain)
                            .attr("action", "drop")
                            .attr(r.matcher, &r.list)
                            .attr("comment", &r.comment);
                        if let Some(first) = client_first(&client, &path("print"))
                            .await
                            .or(first.clone())
                        {
                            cmd = cmd.attr("place-before", first);
                        }
                        client
                            .call(cmd)
                            .await
                            .map_err(|e| explain(e, "adding a firewall filter rule"))?;
                        added += 1;
                    }
                    outln!(
                        "router {} {family}: {added} rules added, {} already installed",
                        router.name,
                        rules.len() - added
                    );
                }
                FirewallAction::Remove => {
                    for (id, _) in &ours {
                        client
                            .call(Command::new(&path("remove")).attr(".id", id))
                            .await
                            .map_err(|e| explain(e, "removing a firewall filter rule"))?;
                    }
                    outln!(
                        "router {} {family}: {} rules removed",
                        router.name,
                        ours.len()
                    );
                }
                FirewallAction::Print => unreachable!("handled above"),
            }
        }
        client.close().await;
    }
    Ok(ExitCode::SUCCESS)
}

/// The `.id` of the first filter rule right now (the previous insert changed it).
async fn client_first(client: &Client, print: &str) -> Option<String> {
    let rows = client
        .call(Command::new(print).proplist(&[".id"]))
        .await
        .ok()?
        .rows;
    rows.first()
        .and_then(|r| r.get_str(".id").map(str::to_owned))
}
