//! `rosguard why ADDR`: the block history of an address with its evidence, in plain words.
//! It reads the state store only (no router, no password) and never creates it.

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use rosguard_store::Store;
use routeros_proto::format_duration;

use super::common::{format_unix, parse_address};
use crate::outln;
use crate::output::printable;
use crate::state::{secs, unix_now};

/// `rosguard why ADDR`.
pub fn why(store: &Store, address: &str, json: bool) -> Result<ExitCode> {
    let ip: IpAddr = parse_address(address)?;
    let rows = store.blocks_for(ip)?;
    let unblocks = store.unblocks_for(ip)?;
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "blocks": rows, "unblocks": unblocks })
            )?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let now = secs(unix_now());
    for u in &unblocks {
        let state = if u.until_unix > now {
            "not blocked again before"
        } else {
            "suppression ended"
        };
        outln!(
            "{ip}: unblocked on router {} at {} ({}); {state} {}",
            u.router,
            format_unix(u.at_unix),
            printable(&u.reason),
            format_unix(u.until_unix)
        );
    }
    if rows.is_empty() {
        if unblocks.is_empty() {
            outln!(
                "rosguard has no record of blocking {ip} (state: {})",
                store.path().display()
            );
            return Ok(ExitCode::FAILURE);
        }
        return Ok(ExitCode::SUCCESS);
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
            printable(&r.list),
            format_duration(Duration::from_secs(r.timeout_secs)),
            if r.level > 0 {
                format!(" (repeat offender, escalation level {})", r.level)
            } else {
                String::new()
            }
        );
        explain(&r.evidence);
        outln!("  comment: {}", printable(&r.comment));
        if r.placed_unix > r.at_unix {
            outln!(
                "  restored on the router at {} (it had lost the entry)",
                format_unix(r.placed_unix)
            );
        }
        match (r.lifted_unix, r.lift_reason.as_deref()) {
            (Some(t), Some("removed-on-router")) => {
                outln!(
                    "  removed from the router by hand at about {}: honoured, not restored",
                    format_unix(t)
                )
            }
            (Some(t), Some(reason)) => {
                outln!("  lifted at {} ({})", format_unix(t), printable(reason))
            }
            (Some(t), None) => outln!("  lifted by hand at {}", format_unix(t)),
            (None, _) if r.dry_run => {}
            (None, _) if r.expires_unix > now => {
                outln!("  in force until {}", format_unix(r.expires_unix))
            }
            (None, _) => outln!("  expired at {}", format_unix(r.expires_unix)),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The evidence in one line (or two).
fn explain(ev: &serde_json::Value) {
    let text = |v: Option<&serde_json::Value>| {
        printable(
            &v.map(|v| v.to_string().trim_matches('"').to_owned())
                .unwrap_or_else(|| "?".into()),
        )
    };
    if ev.get("manual").and_then(|v| v.as_bool()) == Some(true) {
        outln!(
            "  because an operator blocked it by hand (rosguard block){}",
            ev.get("comment")
                .and_then(|c| c.as_str())
                .map(|c| format!(": {}", printable(c)))
                .unwrap_or_default()
        );
        if let Some(f) = ev.get("forced").and_then(|f| f.as_str()) {
            outln!("  with --force, although {}", printable(f));
        }
        return;
    }
    if ev.get("adopted").and_then(|v| v.as_bool()) == Some(true) {
        outln!("  found on the router with a rosguard comment but no record (adopted)");
        return;
    }
    if let Some(from) = ev.get("shared_from").and_then(|v| v.as_str()) {
        outln!(
            "  because router {} blocked it and share_blocks is on",
            printable(from)
        );
        return;
    }
    if let Some(list) = ev.get("staged_in").and_then(|v| v.as_str()) {
        outln!(
            "  because the router's psd rule staged it in {} (a port scan the router saw)",
            printable(list)
        );
        return;
    }
    let Some(conn) = ev.get("connection") else {
        return;
    };
    let cfg = ev.get("config");
    let cfgv = |k: &str| text(cfg.and_then(|c| c.get(k)));
    let state = conn
        .get("tcp_state")
        .and_then(|v| v.as_str())
        .map(|s| format!(", tcp-state {}", printable(s)))
        .unwrap_or_default();
    if let Some(scan) = ev.get("scan") {
        outln!(
            "  because it tried {} ports or hosts without an answer within {} (rule port-scan: at least {}), e.g. {} {} -> {}{state}",
            text(scan.get("tried")),
            text(scan.get("window")),
            cfgv("scan_min_ports"),
            text(conn.get("protocol")),
            endpoint(conn.get("src")),
            endpoint(conn.get("dst")),
        );
        return;
    }
    if let Some(stall) = ev.get("stall") {
        outln!(
            "  because {} connection {} -> {} sent {} packets since its last reply, {} in all with {} back (rule stall: at least {} sent without a reply, repl-packets <= {}){state}",
            text(conn.get("protocol")),
            endpoint(conn.get("src")),
            endpoint(conn.get("dst")),
            text(stall.get("sent_since_last_reply")),
            text(conn.get("orig_packets")),
            text(conn.get("repl_packets")),
            cfgv("stall_min_orig_growth"),
            text(stall.get("max_repl_packets")),
        );
        return;
    }
    outln!(
        "  because {} connection {} -> {} sent {} packets and got {} back (rule {}: orig-packets > {}, repl-packets <= {}){state}",
        text(conn.get("protocol")),
        endpoint(conn.get("src")),
        endpoint(conn.get("dst")),
        text(conn.get("orig_packets")),
        text(conn.get("repl_packets")),
        text(ev.get("rule")),
        cfgv("min_orig_packets"),
        cfgv("max_repl_packets"),
    );
}

fn endpoint(v: Option<&serde_json::Value>) -> String {
    let Some(v) = v else { return "?".into() };
    let addr = printable(v.get("addr").and_then(|a| a.as_str()).unwrap_or("?"));
    match v.get("port").and_then(serde_json::Value::as_u64) {
        Some(p) if addr.contains(':') => format!("[{addr}]:{p}"),
        Some(p) => format!("{addr}:{p}"),
        None => addr,
    }
}
