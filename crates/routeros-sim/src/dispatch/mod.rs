//! What the simulated router answers to each command: the routing from a command path to the
//! menu that handles it, `/login`, `/quit`, `/cancel`, and unknown commands.
//!
//! One file per menu family answers its commands: `connections` (the connection tables),
//! `address_lists`, `filter_rules`, `system` (the read-only menus), `login`; `print`,
//! `shaping` (faults that change how a print streams) and `args` hold what they share. The
//! command-level faults (silent, wrong tags, permission traps) are applied here. Those modules never import this one back: the routing lives
//! here alone. Handlers take the router lock only for short synchronous steps; every reply
//! carries the command's `.tag` (the writer appends it). This module deliberately does not
//! read the socket or order commands: the session does.

mod address_lists;
mod args;
mod connections;
mod filter_rules;
mod login;
mod print;
mod shaping;
mod system;

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

use crate::config::WrongTag;
use crate::kinds::Family;
use crate::request::Request;
use crate::shared::Shared;
use crate::writer::{End, ReplyWriter};

pub(crate) use login::SessionState;
use system::ReadOnly;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Menu {
    Connection(Family),
    AddressList(Family),
    Filter(Family),
    ReadOnly(ReadOnly),
}

const PRINT: &[&str] = &["print", "getall"];
const FILTER_COMMANDS: &[&str] = &[
    "print", "getall", "add", "remove", "set", "move", "enable", "disable",
];
const LIST_COMMANDS: &[&str] = &["print", "getall", "add", "remove", "set"];
const CONNECTION_COMMANDS: &[&str] = &["print", "getall", "remove"];

const MENUS: &[(&str, Menu, &[&str])] = &[
    (
        "ip/firewall/connection",
        Menu::Connection(Family::V4),
        CONNECTION_COMMANDS,
    ),
    (
        "ipv6/firewall/connection",
        Menu::Connection(Family::V6),
        CONNECTION_COMMANDS,
    ),
    (
        "ip/firewall/connection/tracking",
        Menu::ReadOnly(ReadOnly::Tracking),
        PRINT,
    ),
    (
        "ip/firewall/address-list",
        Menu::AddressList(Family::V4),
        LIST_COMMANDS,
    ),
    (
        "ipv6/firewall/address-list",
        Menu::AddressList(Family::V6),
        LIST_COMMANDS,
    ),
    (
        "ip/firewall/filter",
        Menu::Filter(Family::V4),
        FILTER_COMMANDS,
    ),
    (
        "ipv6/firewall/filter",
        Menu::Filter(Family::V6),
        FILTER_COMMANDS,
    ),
    (
        "ip/address",
        Menu::ReadOnly(ReadOnly::Address(Family::V4)),
        PRINT,
    ),
    (
        "ipv6/address",
        Menu::ReadOnly(ReadOnly::Address(Family::V6)),
        PRINT,
    ),
    (
        "ip/route",
        Menu::ReadOnly(ReadOnly::Route(Family::V4)),
        PRINT,
    ),
    (
        "ipv6/route",
        Menu::ReadOnly(ReadOnly::Route(Family::V6)),
        PRINT,
    ),
    ("ip/dns", Menu::ReadOnly(ReadOnly::Dns), PRINT),
    ("user/active", Menu::ReadOnly(ReadOnly::ActiveUsers), PRINT),
    ("system/resource", Menu::ReadOnly(ReadOnly::Resource), PRINT),
    ("system/identity", Menu::ReadOnly(ReadOnly::Identity), PRINT),
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
    st.commands += 1;
    let faults = shared.faults();
    if faults.silences(st.commands, &req.path) {
        tracing::debug!(path = %req.path, n = st.commands, "fault: leaving a command unanswered");
        shared
            .stats
            .commands_ignored
            .fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    w.set_tag(match faults.wrong_tags.as_ref() {
        Some(wt) if wt.paths.matches(&req.path) => match wt.tag {
            WrongTag::Other => Some(format!(
                "{}-not-asked",
                req.tag.as_deref().unwrap_or("untagged")
            )),
            WrongTag::Missing => None,
        },
        _ => req.tag.clone(),
    });
    if let Some(delay) = faults.reply_delay {
        tokio::time::sleep(delay).await;
    }
    match req.path.as_str() {
        "/login" => return login::login(req, st, w, shared).await,
        "/quit" => return Err(w.fatal("session terminated on request").await),
        _ => {}
    }
    if !st.logged_in() {
        tracing::debug!(path = %req.path, "command before login");
        return Err(w.fatal("not logged in").await);
    }
    if cancel.load(Ordering::Acquire) {
        return args::interrupted(w).await;
    }
    if faults.permission_denied.matches(&req.path) {
        return w.trap_done(None, "not enough permissions (9)").await;
    }
    drop(faults);
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
    match (menu, cmd) {
        (Menu::Connection(f), "print" | "getall") => {
            connections::print(f, req, cancel, w, shared).await
        }
        (Menu::Connection(f), "remove") => connections::remove(f, req, w, shared).await,
        (Menu::AddressList(f), "print" | "getall") => {
            address_lists::print(f, req, cancel, w, shared).await
        }
        (Menu::AddressList(f), "add") => address_lists::add(f, req, w, shared).await,
        (Menu::AddressList(f), "remove") => address_lists::remove(f, req, w, shared).await,
        (Menu::AddressList(f), "set") => address_lists::set(f, req, w, shared).await,
        (Menu::Filter(f), "print" | "getall") => {
            filter_rules::print(f, req, cancel, w, shared).await
        }
        (Menu::Filter(f), _) => filter_rules::command(f, cmd, req, w, shared).await,
        (Menu::ReadOnly(m), _) => system::print(m, req, cancel, w, shared).await,
        (m, c) => {
            // Unreachable: MENUS lists only commands handled above.
            tracing::error!(menu = ?m, command = c, "command listed but not handled");
            w.trap_done(Some(0), &format!("no such command or directory ({c})"))
                .await
        }
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
