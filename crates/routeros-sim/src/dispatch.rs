//! What the simulated router answers to each command: login, `/quit`, `/cancel`, the menus
//! and their commands, unknown commands.
//!
//! Handlers take the router lock only for short synchronous steps; the connection-table print
//! streams chunk by chunk and checks for `/cancel` between chunks. Every reply carries the
//! command's `.tag` (the writer appends it). This module deliberately does not read the socket
//! or order commands: the session does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use routeros_proto::{login::challenge_response, parse_duration};

use crate::address_list::{EntryChanges, EntryView, ListError};
use crate::config::{Family, QueryCompare};
use crate::connection::{format_id, parse_id, ConnRow, RowView};
use crate::filter::RULE_PARAMS;
use crate::query::{Props, Query};
use crate::request::Request;
use crate::server::Shared;
use crate::writer::{End, ReplyWriter};

/// Rows produced per router-lock acquisition during a connection print.
const CHUNK: usize = 256;

/// Per-session login state.
#[derive(Debug, Default)]
pub(crate) struct SessionState {
    pub(crate) logged_in: bool,
    challenge: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Menu {
    Connection(Family),
    Tracking,
    AddressList(Family),
    Filter(Family),
    Address(Family),
    Route,
    Dns,
    Resource,
    Identity,
}

const PRINT: &[&str] = &["print", "getall"];

const MENUS: &[(&str, Menu, &[&str])] = &[
    (
        "ip/firewall/connection",
        Menu::Connection(Family::V4),
        &["print", "getall", "remove"],
    ),
    (
        "ipv6/firewall/connection",
        Menu::Connection(Family::V6),
        &["print", "getall", "remove"],
    ),
    ("ip/firewall/connection/tracking", Menu::Tracking, PRINT),
    (
        "ip/firewall/address-list",
        Menu::AddressList(Family::V4),
        &["print", "getall", "add", "remove", "set"],
    ),
    (
        "ipv6/firewall/address-list",
        Menu::AddressList(Family::V6),
        &["print", "getall", "add", "remove", "set"],
    ),
    (
        "ip/firewall/filter",
        Menu::Filter(Family::V4),
        &[
            "print", "getall", "add", "remove", "set", "move", "enable", "disable",
        ],
    ),
    (
        "ipv6/firewall/filter",
        Menu::Filter(Family::V6),
        &[
            "print", "getall", "add", "remove", "set", "move", "enable", "disable",
        ],
    ),
    ("ip/address", Menu::Address(Family::V4), PRINT),
    ("ipv6/address", Menu::Address(Family::V6), PRINT),
    ("ip/route", Menu::Route, PRINT),
    ("ip/dns", Menu::Dns, PRINT),
    ("system/resource", Menu::Resource, PRINT),
    ("system/identity", Menu::Identity, PRINT),
];

/// Finds the menu and command of a path, or the path part RouterOS would name as unknown.
fn resolve(path: &str) -> Result<(Menu, &str), &str> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let segs: Vec<&str> = trimmed.split('/').collect();
    let n = segs.len();
    if n >= 2 {
        let dir = segs[..n - 1].join("/");
        if let Some((_, menu, cmds)) = MENUS.iter().find(|(p, _, _)| *p == dir) {
            return if cmds.contains(&segs[n - 1]) {
                Ok((*menu, segs[n - 1]))
            } else {
                Err(segs[n - 1])
            };
        }
    }
    for k in 1..n {
        let prefix = segs[..k].join("/");
        let known = MENUS
            .iter()
            .any(|(p, _, _)| *p == prefix || p.starts_with(&format!("{prefix}/")));
        if !known {
            return Err(segs[k - 1]);
        }
    }
    Err(segs.last().copied().unwrap_or(""))
}

/// Answers one command. `Err` ends the session.
pub(crate) async fn execute(
    req: &Request,
    cancel: &AtomicBool,
    st: &mut SessionState,
    w: &mut ReplyWriter,
    shared: &Shared,
) -> Result<(), End> {
    w.set_tag(req.tag.clone());
    if let Some(delay) = shared.faults().reply_delay {
        tokio::time::sleep(delay).await;
    }
    match req.path.as_str() {
        "/login" => return login(req, st, w, shared).await,
        "/quit" => return Err(w.fatal("session terminated on request").await),
        _ => {}
    }
    if !st.logged_in {
        tracing::debug!(path = %req.path, "command before login");
        return Err(w.fatal("not logged in").await);
    }
    if cancel.load(Ordering::Acquire) {
        return interrupted(w).await;
    }
    if req.path == "/cancel" {
        // The reader already flagged the target command(s); this answers the /cancel itself.
        return w.done(None).await;
    }
    let (menu, cmd) = match resolve(&req.path) {
        Ok(found) => found,
        Err(unknown) => {
            w.trap(
                Some(0),
                &format!("no such command or directory ({unknown})"),
            )
            .await?;
            w.trap(None, "no such command prefix").await?;
            return w.done(None).await;
        }
    };
    let now = shared.clock.now();
    match (menu, cmd) {
        (Menu::Connection(f), "print" | "getall") => {
            print_connections(f, req, cancel, w, shared).await
        }
        (Menu::Connection(f), "remove") => {
            if let Some(p) = req.unknown_param(&[".id", "numbers"]) {
                return unknown_param(w, p).await;
            }
            let Some(items) = items_of(req) else {
                return w
                    .trap_done(None, "missing value(s) of argument(s) numbers")
                    .await;
            };
            let mut failed = false;
            {
                let mut r = shared.router();
                for item in items {
                    let ok = parse_id(item)
                        .is_some_and(|id| r.conns.exists_in(id, f, now) && r.conns.remove(id, now));
                    if !ok {
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
        (Menu::AddressList(f), "print" | "getall") => {
            let args = match PrintArgs::parse(req) {
                Ok(a) => a,
                Err(m) => return w.trap_done(None, &m).await,
            };
            let mode = shared.settings.query_compare;
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
            emit_rows(rows, count, &args, w, shared).await
        }
        (Menu::AddressList(f), "add") => list_add(f, req, w, shared, now).await,
        (Menu::AddressList(f), "remove") => {
            if let Some(p) = req.unknown_param(&[".id", "numbers"]) {
                return unknown_param(w, p).await;
            }
            let Some(items) = items_of(req) else {
                return w
                    .trap_done(None, "missing value(s) of argument(s) numbers")
                    .await;
            };
            let mut failed = false;
            {
                let mut r = shared.router();
                for item in items {
                    if !parse_id(item).is_some_and(|id| r.lists(f).remove(id, now)) {
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
        (Menu::AddressList(f), "set") => list_set(f, req, w, shared, now).await,
        (Menu::Filter(f), "print" | "getall") => {
            let rows = shared.router().filters_ref(f).rows();
            print_owned(rows, req, w, shared).await
        }
        (Menu::Filter(f), _) => filter_command(f, cmd, req, w, shared).await,
        (Menu::Address(f), _) => {
            let rows = shared.router().address_rows(f);
            print_owned(rows, req, w, shared).await
        }
        (Menu::Tracking, _) => {
            let hide_totals = shared.faults().hide_tracking_totals;
            let rows = shared.router().tracking_rows(now, hide_totals);
            print_owned(rows, req, w, shared).await
        }
        (Menu::Route, _) => {
            let rows = shared.router().route_rows();
            print_owned(rows, req, w, shared).await
        }
        (Menu::Dns, _) => {
            let rows = shared.router().dns_rows();
            print_owned(rows, req, w, shared).await
        }
        (Menu::Resource, _) => {
            let commands = shared.stats.commands.load(Ordering::Relaxed);
            let rows = shared.router().resource_rows(now, commands);
            print_owned(rows, req, w, shared).await
        }
        (Menu::Identity, _) => {
            let rows = shared.router().identity_rows();
            print_owned(rows, req, w, shared).await
        }
        (m, c) => {
            // Unreachable: MENUS lists only commands handled above.
            tracing::error!(menu = ?m, command = c, "command listed but not handled");
            w.trap_done(Some(0), &format!("no such command or directory ({c})"))
                .await
        }
    }
}

async fn interrupted(w: &mut ReplyWriter) -> Result<(), End> {
    w.trap_done(Some(2), "interrupted").await
}

async fn unknown_param(w: &mut ReplyWriter, name: &str) -> Result<(), End> {
    w.trap_done(None, &format!("unknown parameter {name}"))
        .await
}

/// The comma-separated items of `=.id=` or `=numbers=`.
fn items_of(req: &Request) -> Option<Vec<&str>> {
    let v = req.attr(".id").or_else(|| req.attr("numbers"))?;
    let items: Vec<&str> = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    (!items.is_empty()).then_some(items)
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "yes" | "true" => Some(true),
        "no" | "false" => Some(false),
        _ => None,
    }
}

fn random_challenge() -> String {
    use std::hash::BuildHasher;
    use std::sync::atomic::AtomicU64;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let state = std::collections::hash_map::RandomState::new();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let a = state.hash_one(n);
    let b = state.hash_one(a ^ 0x5DEE_CE66_D1CE_4E5B);
    format!("{a:016x}{b:016x}")
}

async fn login(
    req: &Request,
    st: &mut SessionState,
    w: &mut ReplyWriter,
    shared: &Shared,
) -> Result<(), End> {
    const BAD: &str = "invalid user name or password (6)";
    let fail = |shared: &Shared| {
        shared.stats.failed_logins.fetch_add(1, Ordering::Relaxed);
    };
    if shared.faults().refuse_logins {
        fail(shared);
        st.challenge = None;
        return w.trap_done(None, BAD).await;
    }
    let name = req.attr("name");
    let password_ok = |name: &str, password: &str| {
        shared
            .settings
            .users
            .iter()
            .any(|(u, p)| u == name && p == password)
    };
    if let Some(response) = req.attr("response") {
        let challenge = st.challenge.take();
        let ok = match (challenge, name) {
            (Some(ch), Some(name)) => shared.settings.users.iter().any(|(u, p)| {
                u == name
                    && challenge_response(p.as_bytes(), &ch)
                        .is_ok_and(|expected| expected.eq_ignore_ascii_case(response))
            }),
            _ => false,
        };
        if ok {
            st.logged_in = true;
            shared.stats.logins.fetch_add(1, Ordering::Relaxed);
            return w.done(None).await;
        }
        fail(shared);
        return w.trap_done(None, BAD).await;
    }
    let password = req.attr("password");
    if shared.settings.legacy_login || (name.is_none() && password.is_none()) {
        let challenge = random_challenge();
        st.challenge = Some(challenge.clone());
        return w.done(Some(&challenge)).await;
    }
    if password_ok(name.unwrap_or(""), password.unwrap_or("")) {
        st.logged_in = true;
        shared.stats.logins.fetch_add(1, Ordering::Relaxed);
        w.done(None).await
    } else {
        fail(shared);
        w.trap_done(None, BAD).await
    }
}

/// The flags and filters of a print.
struct PrintArgs {
    query: Query,
    proplist: Option<Vec<String>>,
    count_only: bool,
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
    fn parse(req: &Request) -> Result<Self, String> {
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
fn project<P: Props + ?Sized>(
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
fn select_rows<P: Props>(
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

async fn finish_print(
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

/// Sends already selected rows.
async fn emit_rows(
    rows: Vec<Vec<(String, String)>>,
    count: u64,
    args: &PrintArgs,
    w: &mut ReplyWriter,
    shared: &Shared,
) -> Result<(), End> {
    for row in &rows {
        w.sentence("!re", |words| {
            for (n, v) in row {
                words.attr(n, v);
            }
        })
        .await?;
    }
    finish_print(count, args, w, shared).await
}

/// Print of a small table held as owned rows.
async fn print_owned(
    rows: Vec<Vec<(String, String)>>,
    req: &Request,
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
    emit_rows(selected, count, &args, w, shared).await
}

/// Streams the connection table: chunks of rows under a short lock, each matching row
/// encoded straight into the writer, `/cancel` checked between chunks.
async fn print_connections(
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
    let format = shared.settings.address_format;
    let mode = shared.settings.query_compare;
    let mut scratch = String::new();
    let mut stack = Vec::new();
    // `?.id=*X` alone (an API client's `get` of one row): look it up, as a router would,
    // instead of walking the whole table. The query still decides whether it matches.
    if let Some(id) = args.query.only_eq(".id").and_then(parse_id) {
        let row = shared.router().conns.get(id, family, shared.clock.now());
        let mut count = 0u64;
        if let Some(row) = &row {
            let view = RowView { row, format };
            if args.query.matches(&view, mode, &mut scratch, &mut stack) {
                count = 1;
                if !args.count_only {
                    emit_connection(&view, args.proplist.as_deref(), &mut scratch, w).await?;
                }
            }
        }
        return finish_print(count, &args, w, shared).await;
    }
    let mut cursor = 0u64;
    let mut chunk: Vec<ConnRow> = Vec::with_capacity(CHUNK);
    let mut count = 0u64;
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
                .matches(&RowView { row, format }, mode, &mut scratch, &mut stack)
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
            let view = RowView { row, format };
            emit_connection(&view, args.proplist.as_deref(), &mut scratch, w).await?;
        }
        match next {
            Some(c) => cursor = c,
            None => break,
        }
        // Let other sessions run between chunks (a count-only print never awaits otherwise).
        tokio::task::yield_now().await;
    }
    finish_print(count, &args, w, shared).await
}

/// One connection row as a `!re`, with the properties of `proplist` (all when `None`).
async fn emit_connection(
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

fn parse_timeout(v: &str) -> Result<Option<Duration>, ()> {
    if v.is_empty() || v == "none" {
        return Ok(None);
    }
    match parse_duration(v) {
        Ok(d) if d.is_zero() => Ok(None),
        Ok(d) => Ok(Some(d)),
        Err(_) => Err(()),
    }
}

async fn list_error(w: &mut ReplyWriter, e: ListError) -> Result<(), End> {
    match e {
        ListError::Duplicate => w.trap_done(None, "failure: already have such entry").await,
        ListError::InvalidAddress(m) => w.trap_done(Some(1), &m).await,
        ListError::NoSuchItem => w.trap_done(None, "no such item (4)").await,
    }
}

async fn list_add(
    f: Family,
    req: &Request,
    w: &mut ReplyWriter,
    shared: &Shared,
    now: Duration,
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
    let added = shared
        .router()
        .lists(f)
        .add(list, address, timeout, comment, disabled, now);
    match added {
        Ok(id) => w.done(Some(&format_id(id))).await,
        Err(e) => list_error(w, e).await,
    }
}

async fn list_set(
    f: Family,
    req: &Request,
    w: &mut ReplyWriter,
    shared: &Shared,
    now: Duration,
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
    let timeout = match req.attr("timeout").map(parse_timeout) {
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

async fn filter_command(
    f: Family,
    cmd: &str,
    req: &Request,
    w: &mut ReplyWriter,
    shared: &Shared,
) -> Result<(), End> {
    let trap = |m: String| -> (Option<u32>, String) {
        let cat = m.starts_with("invalid value").then_some(1);
        (cat, m)
    };
    let outcome: Result<Option<String>, (Option<u32>, String)> = {
        let mut r = shared.router();
        let table = r.filters(f);
        let positions = |items: Option<Vec<&str>>| -> Result<Vec<usize>, (Option<u32>, String)> {
            let Some(items) = items else {
                return Err((None, "missing value(s) of argument(s) numbers".into()));
            };
            items
                .iter()
                .map(|i| {
                    table
                        .resolve(i)
                        .ok_or((None, "no such item (4)".to_owned()))
                })
                .collect()
        };
        match cmd {
            "add" => {
                let mut allowed: Vec<&str> = RULE_PARAMS.to_vec();
                allowed.push("place-before");
                if let Some(p) = req.unknown_param(&allowed) {
                    Err((None, format!("unknown parameter {p}")))
                } else {
                    let before = match req.attr("place-before") {
                        None => Ok(None),
                        Some(p) => table
                            .resolve(p)
                            .map(Some)
                            .ok_or((None, "no such item (4)".to_owned())),
                    };
                    before.and_then(|before| {
                        let props = req
                            .attrs
                            .iter()
                            .filter(|(n, _)| n != "place-before")
                            .cloned()
                            .collect();
                        table
                            .add(props, before)
                            .map(|id| Some(format_id(id)))
                            .map_err(trap)
                    })
                }
            }
            "remove" => {
                if let Some(p) = req.unknown_param(&[".id", "numbers"]) {
                    Err((None, format!("unknown parameter {p}")))
                } else {
                    positions(items_of(req)).map(|ps| {
                        table.remove(&ps);
                        None
                    })
                }
            }
            "set" => {
                let mut allowed: Vec<&str> = RULE_PARAMS.to_vec();
                allowed.extend([".id", "numbers"]);
                if let Some(p) = req.unknown_param(&allowed) {
                    Err((None, format!("unknown parameter {p}")))
                } else {
                    let props: Vec<(String, String)> = req
                        .attrs
                        .iter()
                        .filter(|(n, _)| n != ".id" && n != "numbers")
                        .cloned()
                        .collect();
                    positions(items_of(req)).and_then(|ps| {
                        ps.iter()
                            .try_for_each(|&p| table.set(p, props.clone()))
                            .map(|()| None)
                            .map_err(trap)
                    })
                }
            }
            "enable" | "disable" => {
                if let Some(p) = req.unknown_param(&[".id", "numbers"]) {
                    Err((None, format!("unknown parameter {p}")))
                } else {
                    let v = if cmd == "disable" { "yes" } else { "no" };
                    positions(items_of(req)).and_then(|ps| {
                        ps.iter()
                            .try_for_each(|&p| table.set(p, vec![("disabled".into(), v.into())]))
                            .map(|()| None)
                            .map_err(trap)
                    })
                }
            }
            "move" => {
                if let Some(p) = req.unknown_param(&[".id", "numbers", "destination"]) {
                    Err((None, format!("unknown parameter {p}")))
                } else {
                    let dest = match req.attr("destination").filter(|d| !d.is_empty()) {
                        None => Ok(None),
                        Some(d) => table
                            .resolve(d)
                            .map(Some)
                            .ok_or((None, "no such item (4)".to_owned())),
                    };
                    let moved = positions(items_of(req));
                    dest.and_then(|dest| {
                        moved.map(|ps| {
                            table.move_rules(&ps, dest);
                            None
                        })
                    })
                }
            }
            other => Err((Some(0), format!("no such command or directory ({other})"))),
        }
    };
    match outcome {
        Ok(ret) => w.done(ret.as_deref()).await,
        Err((cat, m)) => w.trap_done(cat, &m).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_paths_like_routeros() {
        assert_eq!(
            resolve("/ip/firewall/connection/print"),
            Ok((Menu::Connection(Family::V4), "print"))
        );
        assert_eq!(resolve("/ip/adress/print"), Err("adress"));
        assert_eq!(resolve("/ip/address/frob"), Err("frob"));
        assert_eq!(resolve("/nosuch"), Err("nosuch"));
        assert_eq!(resolve("/ip/firewall/print"), Err("print"));
        assert_eq!(resolve("/"), Err(""));
    }
}
