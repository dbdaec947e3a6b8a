//! Firewall filter rules (`/ip/firewall/filter`, `/ipv6/firewall/filter`): print, add with
//! `place-before`, set, remove, move, enable and disable, items named by `.id` or position.
//!
//! It deliberately does not check what a rule's matchers mean: the rule table keeps them as
//! data (and the router reads the few it emulates, such as `psd`).

use std::sync::atomic::AtomicBool;

use crate::connection::format_id;
use crate::filter::RULE_PARAMS;
use crate::kinds::Family;
use crate::request::Request;
use crate::shared::Shared;
use crate::writer::{End, ReplyWriter};

use super::args::items_of;
use super::print::print_owned;

/// `print` of the rules of one family.
pub(crate) async fn print(
    f: Family,
    req: &Request,
    cancel: &AtomicBool,
    w: &mut ReplyWriter,
    shared: &Shared,
) -> Result<(), End> {
    let rows = shared.router().filters_ref(f).rows();
    print_owned(rows, req, cancel, w, shared).await
}

/// `add`, `set`, `remove`, `move`, `enable`, `disable`.
pub(crate) async fn command(
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
