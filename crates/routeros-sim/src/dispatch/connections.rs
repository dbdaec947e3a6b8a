//! The connection tables (`/ip/firewall/connection`, `/ipv6/firewall/connection`): the
//! streaming print and `remove` (each removed row is reported to
//! `SimHandle::removed_connections`).
//!
//! The print holds the router lock only for a chunk of rows at a time, runs the query under it
//! (only matching rows are copied out), encodes each row straight into the writer and checks
//! for `/cancel` between chunks. It deliberately does not decide which rows exist: the table
//! does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::connection::{format_id, parse_id, ConnRow, RemovedConnection, RowView};
use crate::generate::GenerateSpec;
use crate::kinds::Family;
use crate::query::Props;
use crate::request::Request;
use crate::shared::Shared;
use crate::writer::{End, ReplyWriter};

use super::args::{interrupted, items_of, unknown_param};
use super::print::{finish_print, project, PrintArgs};
use super::shaping::{hang_until_cancelled, spoil, Shaping, SYNTHETIC_ID_BASE};

/// Rows produced per router-lock acquisition during a connection print.
const CHUNK: usize = 256;

/// Streams the connection table of `family`.
pub(crate) async fn print(
    family: Family,
    req: &Request,
    cancel: &AtomicBool,
    w: &mut ReplyWriter,
    shared: &Shared,
) -> Result<(), End> {
    let args = match PrintArgs::parse(req) {
        Ok(a) => a,
        Err(m) => return w.trap_done(None, &m).await,
    };
    let style = shared.settings.row_style;
    let mode = shared.settings.query_compare;
    let mut scratch = String::new();
    let mut stack = Vec::new();
    let mut shaping = Shaping::of(&req.path, &shared.faults());
    // `?.id=*X` alone (an API client's `get` of one row): look it up, as a router would,
    // instead of walking the whole table. The query still decides whether it matches.
    if let Some(id) = args
        .query
        .only_eq(".id")
        .and_then(parse_id)
        .filter(|_| shaping.is_plain())
    {
        let row = shared.router().conns.get(id, family, shared.clock.now());
        let mut count = 0u64;
        if let Some(row) = &row {
            let view = RowView { row, style };
            if args.query.matches(&view, mode, &mut scratch, &mut stack) {
                count = 1;
                if !args.count_only {
                    emit(&view, args.proplist.as_deref(), &mut scratch, w).await?;
                }
            }
        }
        return finish_print(count, &args, w, shared).await;
    }
    let mut cursor = 0u64;
    let mut chunk: Vec<ConnRow> = Vec::with_capacity(CHUNK);
    let mut count = 0u64;
    let mut sent = 0u64;
    loop {
        if cancel.load(Ordering::Acquire) {
            return interrupted(w).await;
        }
        chunk.clear();
        let now = shared.clock.now();
        // The query runs under the table's lock, on each row as it is made: only matching
        // rows are copied out to be sent, and a count-only print copies none.
        let mut keep = |row: &ConnRow| {
            if !args
                .query
                .matches(&RowView { row, style }, mode, &mut scratch, &mut stack)
            {
                return false;
            }
            count += 1;
            !args.count_only
        };
        let next = shared.router().conns.collect(
            cursor,
            family,
            now,
            &mut chunk,
            CHUNK,
            CHUNK * 16,
            &mut keep,
        );
        for row in &chunk {
            let view = RowView { row, style };
            if !shaping.is_plain() {
                if cancel.load(Ordering::Acquire) {
                    return interrupted(w).await;
                }
                if !shaping.next_row(w).await? {
                    return finish_print(sent, &args, w, shared).await;
                }
                if let Some(kind) = shaping.bad_row_due() {
                    let mut bad = project(&view, args.proplist.as_deref(), &mut scratch);
                    spoil(&mut bad, kind);
                    w.sentence("!re", |words| {
                        for (n, v) in &bad {
                            words.attr(n, v);
                        }
                    })
                    .await?;
                }
            }
            emit(&view, args.proplist.as_deref(), &mut scratch, w).await?;
            sent += 1;
        }
        match next {
            Some(c) => cursor = c,
            None => break,
        }
        // Let other sessions run between chunks (a count-only print never awaits otherwise).
        tokio::task::yield_now().await;
    }
    if shaping.is_plain() {
        return finish_print(count, &args, w, shared).await;
    }
    if !args.count_only {
        // The table is out; an endless or trickling print goes on with synthetic rows.
        let spec = GenerateSpec {
            connections: 0,
            anomaly_share: 0.01,
            seed: 0x5EED,
            ipv6_share: if family == Family::V6 { 1.0 } else { 0.0 },
        };
        let mut idx = 0u64;
        while shaping.continues() {
            if cancel.load(Ordering::Acquire) {
                return interrupted(w).await;
            }
            if !shaping.next_row(w).await? {
                break;
            }
            let row = spec.row(idx, SYNTHETIC_ID_BASE + idx, Duration::ZERO, None);
            emit(
                &RowView { row: &row, style },
                args.proplist.as_deref(),
                &mut scratch,
                w,
            )
            .await?;
            sent += 1;
            idx += 1;
            if idx.is_multiple_of(CHUNK as u64) {
                tokio::task::yield_now().await;
            }
        }
    }
    if shaping.never_ends() {
        return hang_until_cancelled(cancel, w).await;
    }
    finish_print(if args.count_only { count } else { sent }, &args, w, shared).await
}

/// One connection row as a `!re`, with the properties of `proplist` (all when `None`).
async fn emit(
    view: &RowView<'_>,
    proplist: Option<&[String]>,
    scratch: &mut String,
    w: &mut ReplyWriter,
) -> Result<(), End> {
    w.sentence("!re", |words| match proplist {
        Some(names) => {
            for n in names {
                scratch.clear();
                if view.value(n, scratch) {
                    words.attr(n, scratch);
                }
            }
        }
        None => view.for_each(scratch, &mut |n, v| words.attr(n, v)),
    })
    .await
}

/// `remove =.id=*A,*B`: all or nothing is reported, as RouterOS does (it stops at the first
/// item that does not exist).
pub(crate) async fn remove(
    family: Family,
    req: &Request,
    w: &mut ReplyWriter,
    shared: &Shared,
) -> Result<(), End> {
    if let Some(p) = req.unknown_param(&[".id", "numbers"]) {
        return unknown_param(w, p).await;
    }
    let Some(items) = items_of(req) else {
        return w
            .trap_done(None, "missing value(s) of argument(s) numbers")
            .await;
    };
    let now = shared.clock.now();
    let vanishing = shared.faults().vanishing.matches(&req.path);
    let mut failed = false;
    let mut removed = Vec::new();
    {
        let mut r = shared.router();
        if vanishing {
            // Gone by the time the remove arrives, the way conntrack drops an entry that
            // timed out between a client's print and its remove.
            for id in items.iter().filter_map(|i| parse_id(i)) {
                if r.conns.exists_in(id, family, now) {
                    tracing::debug!(id, "fault: the connection vanished before its remove");
                    r.conns.remove(id, now);
                }
            }
        }
        for item in items {
            let gone = parse_id(item).and_then(|id| {
                let row = r.conns.get(id, family, now)?;
                r.conns.remove(id, now).then_some(row)
            });
            match gone {
                Some(row) => removed.push(RemovedConnection {
                    id: format_id(row.id),
                    family,
                    tuple: row.tuple(),
                }),
                None => {
                    failed = true;
                    break;
                }
            }
        }
    }
    // Those removed before a failing item stay removed, as on RouterOS; the owner of the
    // table hears about each.
    for r in removed {
        let _ = shared.removals.send(r);
    }
    if failed {
        w.trap_done(None, "no such item (4)").await
    } else {
        w.done(None).await
    }
}
