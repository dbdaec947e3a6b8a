//! What every `print` shares: its flags (`count-only`, `.proplist`, the query), selecting and
//! projecting rows, and the end of a print (`!empty` on 7.18+, `!done`, `=ret=` for
//! count-only).
//!
//! It deliberately does not stream big tables (the connection print does that itself) and
//! knows no menu.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::connection::format_id;
use crate::kinds::QueryCompare;
use crate::query::{Props, Query};
use crate::request::Request;
use crate::shared::Shared;
use crate::writer::{End, ReplyWriter};

use super::args::interrupted;
use super::shaping::{hang_until_cancelled, spoil, Shaping, SYNTHETIC_ID_BASE};

/// The flags and filters of a print.
pub(crate) struct PrintArgs {
    pub(crate) query: Query,
    pub(crate) proplist: Option<Vec<String>>,
    pub(crate) count_only: bool,
}

const PRINT_FLAGS: &[&str] = &[
    "count-only",
    "without-paging",
    "detail",
    "terse",
    "brief",
    "show-ids",
    "stats",
    "as-value",
    "value-list",
];

impl PrintArgs {
    pub(crate) fn parse(req: &Request) -> Result<Self, String> {
        if let Some(p) = req.unknown_param(PRINT_FLAGS) {
            return Err(if matches!(p, "follow" | "follow-only" | "interval") {
                format!("unknown parameter {p} (routeros-sim does not implement {p})")
            } else {
                format!("unknown parameter {p}")
            });
        }
        let query = Query::parse(&req.queries).map_err(|m| format!("invalid query: {m}"))?;
        Ok(Self {
            query,
            proplist: req.proplist.clone(),
            count_only: req.attr("count-only").is_some(),
        })
    }
}

/// Properties of `row` selected by `proplist` (all when `None`), as owned pairs.
pub(crate) fn project<P: Props + ?Sized>(
    row: &P,
    proplist: Option<&[String]>,
    scratch: &mut String,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match proplist {
        Some(names) => {
            for n in names {
                scratch.clear();
                if row.value(n, scratch) {
                    out.push((n.clone(), scratch.clone()));
                }
            }
        }
        None => row.for_each(scratch, &mut |n, v| out.push((n.to_owned(), v.to_owned()))),
    }
    out
}

/// Filters rows by the query and projects them by the proplist (nothing kept for count-only).
pub(crate) fn select_rows<P: Props>(
    rows: impl Iterator<Item = P>,
    args: &PrintArgs,
    mode: QueryCompare,
) -> (Vec<Vec<(String, String)>>, u64) {
    let mut scratch = String::new();
    let mut stack = Vec::new();
    let mut out = Vec::new();
    let mut count = 0;
    for row in rows {
        if args.query.matches(&row, mode, &mut scratch, &mut stack) {
            count += 1;
            if !args.count_only {
                out.push(project(&row, args.proplist.as_deref(), &mut scratch));
            }
        }
    }
    (out, count)
}

/// The end of a print: `=ret=<count>` for count-only, else `!empty` (when nothing matched and
/// the router is 7.18+) and `!done`.
pub(crate) async fn finish_print(
    count: u64,
    args: &PrintArgs,
    w: &mut ReplyWriter,
    shared: &Shared,
) -> Result<(), End> {
    if args.count_only {
        return w.done(Some(&count.to_string())).await;
    }
    if count == 0 && shared.settings.empty_replies {
        w.empty().await?;
    }
    w.done(None).await
}

async fn send_row(w: &mut ReplyWriter, row: &[(String, String)]) -> Result<(), End> {
    w.sentence("!re", |words| {
        for (n, v) in row {
            words.attr(n, v);
        }
    })
    .await
}

/// Sends already selected rows, then ends the print; the faults in force on `req`'s path may
/// pace the rows, inject a bad one, or keep rows coming (copies of these with fresh ids).
pub(crate) async fn emit_rows(
    rows: Vec<Vec<(String, String)>>,
    count: u64,
    args: &PrintArgs,
    req: &Request,
    cancel: &AtomicBool,
    w: &mut ReplyWriter,
    shared: &Shared,
) -> Result<(), End> {
    let mut shaping = Shaping::of(&req.path, &shared.faults());
    if shaping.is_plain() {
        for row in &rows {
            send_row(w, row).await?;
        }
        return finish_print(count, args, w, shared).await;
    }
    if args.count_only {
        return if shaping.never_ends() {
            hang_until_cancelled(cancel, w).await
        } else {
            finish_print(count, args, w, shared).await
        };
    }
    let mut sent = 0u64;
    for row in &rows {
        if cancel.load(Ordering::Acquire) {
            return interrupted(w).await;
        }
        if !shaping.next_row(w).await? {
            return finish_print(sent, args, w, shared).await;
        }
        if let Some(kind) = shaping.bad_row_due() {
            let mut bad = row.clone();
            spoil(&mut bad, kind);
            send_row(w, &bad).await?;
        }
        send_row(w, row).await?;
        sent += 1;
    }
    if shaping.continues() && rows.is_empty() {
        // Nothing to repeat: the print just never ends.
        return hang_until_cancelled(cancel, w).await;
    }
    let mut next_id = SYNTHETIC_ID_BASE;
    while shaping.continues() {
        for row in &rows {
            if cancel.load(Ordering::Acquire) {
                return interrupted(w).await;
            }
            if !shaping.next_row(w).await? {
                break;
            }
            let mut copy = row.clone();
            if let Some(slot) = copy.iter_mut().find(|(n, _)| n == ".id") {
                slot.1 = format_id(next_id);
            }
            next_id += 1;
            send_row(w, &copy).await?;
            sent += 1;
        }
        tokio::task::yield_now().await;
    }
    if shaping.never_ends() {
        return hang_until_cancelled(cancel, w).await;
    }
    finish_print(sent, args, w, shared).await
}

/// Print of a small table held as owned rows.
pub(crate) async fn print_owned(
    rows: Vec<Vec<(String, String)>>,
    req: &Request,
    cancel: &AtomicBool,
    w: &mut ReplyWriter,
    shared: &Shared,
) -> Result<(), End> {
    let args = match PrintArgs::parse(req) {
        Ok(a) => a,
        Err(m) => return w.trap_done(None, &m).await,
    };
    let (selected, count) = select_rows(
        rows.iter().map(Vec::as_slice),
        &args,
        shared.settings.query_compare,
    );
    emit_rows(selected, count, &args, req, cancel, w, shared).await
}
