//! Address-lists (`/ip/firewall/address-list`, `/ipv6/firewall/address-list`): print, add,
//! set, remove, with RouterOS's traps (`already have such entry`, `no such item`, invalid
//! addresses and timeouts).
//!
//! It deliberately does not normalise addresses or expire entries: the lists do.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::address_list::{EntryChanges, EntryView, ListError, ListRemoval};
use crate::connection::{format_id, parse_id};
use crate::kinds::Family;
use crate::request::Request;
use crate::shared::Shared;
use crate::writer::{End, ReplyWriter};

use super::args::{items_of, parse_bool, parse_timeout, unknown_param};
use super::print::{emit_rows, select_rows, PrintArgs};

/// `print` of the lists of one family.
pub(crate) async fn print(
    f: Family,
    req: &Request,
    cancel: &AtomicBool,
    w: &mut ReplyWriter,
    shared: &Shared,
) -> Result<(), End> {
    let args = match PrintArgs::parse(req) {
        Ok(a) => a,
        Err(m) => return w.trap_done(None, &m).await,
    };
    let mode = shared.settings.query_compare;
    let now = shared.clock.now();
    let (rows, count) = {
        let mut r = shared.router();
        let lists = r.lists(f);
        lists.purge(now);
        select_rows(
            lists.entries().map(|entry| EntryView {
                entry,
                now,
                clock: &shared.clock,
            }),
            &args,
            mode,
        )
    };
    emit_rows(rows, count, &args, req, cancel, w, shared).await
}

async fn list_error(w: &mut ReplyWriter, e: ListError) -> Result<(), End> {
    match e {
        ListError::Duplicate => w.trap_done(None, "failure: already have such entry").await,
        ListError::InvalidAddress(m) => w.trap_done(Some(1), &m).await,
        ListError::NoSuchItem => w.trap_done(None, "no such item (4)").await,
    }
}

/// `add =list=L =address=A [=timeout=T] [=comment=C] [=disabled=yes]` -> `!done =ret=*ID`.
pub(crate) async fn add(
    f: Family,
    req: &Request,
    w: &mut ReplyWriter,
    shared: &Shared,
) -> Result<(), End> {
    if let Some(p) = req.unknown_param(&["list", "address", "timeout", "comment", "disabled"]) {
        return unknown_param(w, p).await;
    }
    let Some(list) = req.attr("list").filter(|l| !l.is_empty()) else {
        return w
            .trap_done(None, "missing value(s) of argument(s) list")
            .await;
    };
    let Some(address) = req.attr("address").filter(|a| !a.is_empty()) else {
        return w
            .trap_done(None, "missing value(s) of argument(s) address")
            .await;
    };
    let Ok(timeout) = parse_timeout(req.attr("timeout").unwrap_or("")) else {
        return w
            .trap_done(Some(1), "invalid value for argument timeout")
            .await;
    };
    let disabled = match req.attr("disabled").map(parse_bool) {
        None => false,
        Some(Some(b)) => b,
        Some(None) => {
            return w
                .trap_done(Some(1), "invalid value for argument disabled")
                .await
        }
    };
    let comment = req
        .attr("comment")
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    let now = shared.clock.now();
    let added = shared
        .router()
        .lists(f)
        .add(list, address, timeout, comment, disabled, now);
    match added {
        Ok(id) => w.done(Some(&format_id(id))).await,
        Err(e) => list_error(w, e).await,
    }
}

/// `remove =.id=*A,*B`.
pub(crate) async fn remove(
    f: Family,
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
    let mut failed = false;
    {
        let mut r = shared.router();
        for item in items {
            if !parse_id(item).is_some_and(|id| r.lists(f).remove(id, ListRemoval::Api, now)) {
                failed = true;
                break;
            }
        }
    }
    if failed {
        w.trap_done(None, "no such item (4)").await
    } else {
        w.done(None).await
    }
}

/// `set =.id=*A [=list=] [=address=] [=timeout=] [=comment=] [=disabled=]`.
pub(crate) async fn set(
    f: Family,
    req: &Request,
    w: &mut ReplyWriter,
    shared: &Shared,
) -> Result<(), End> {
    if let Some(p) = req.unknown_param(&[
        ".id", "numbers", "list", "address", "timeout", "comment", "disabled",
    ]) {
        return unknown_param(w, p).await;
    }
    let Some(items) = items_of(req) else {
        return w
            .trap_done(None, "missing value(s) of argument(s) numbers")
            .await;
    };
    let timeout: Option<Option<Duration>> = match req.attr("timeout").map(parse_timeout) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(())) => {
            return w
                .trap_done(Some(1), "invalid value for argument timeout")
                .await
        }
    };
    let disabled = match req.attr("disabled").map(parse_bool) {
        None => None,
        Some(Some(b)) => Some(b),
        Some(None) => {
            return w
                .trap_done(Some(1), "invalid value for argument disabled")
                .await
        }
    };
    let changes = EntryChanges {
        list: req.attr("list").map(str::to_owned),
        address: req.attr("address").map(str::to_owned),
        timeout,
        comment: req.attr("comment").map(str::to_owned),
        disabled,
    };
    let now = shared.clock.now();
    let mut result = Ok(());
    {
        let mut r = shared.router();
        for item in items {
            let Some(id) = parse_id(item) else {
                result = Err(ListError::NoSuchItem);
                break;
            };
            if let Err(e) = r.lists(f).set(id, changes.clone(), now) {
                result = Err(e);
                break;
            }
        }
    }
    match result {
        Ok(()) => w.done(None).await,
        Err(e) => list_error(w, e).await,
    }
}
