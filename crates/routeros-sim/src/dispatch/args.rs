//! Argument helpers every menu's handlers share: `.id` lists, booleans, durations, and the
//! traps for unknown parameters and interrupted commands.
//!
//! It deliberately knows no menu: handlers decide which arguments they accept.

use std::time::Duration;

use routeros_proto::parse_duration;

use crate::request::Request;
use crate::writer::{End, ReplyWriter};

/// `!trap =category=2 =message=interrupted` then `!done`: a `/cancel`led command.
pub(crate) async fn interrupted(w: &mut ReplyWriter) -> Result<(), End> {
    w.trap_done(Some(2), "interrupted").await
}

/// `!trap =message=unknown parameter NAME` then `!done`.
pub(crate) async fn unknown_param(w: &mut ReplyWriter, name: &str) -> Result<(), End> {
    w.trap_done(None, &format!("unknown parameter {name}"))
        .await
}

/// The comma-separated items of `=.id=` or `=numbers=`.
pub(crate) fn items_of(req: &Request) -> Option<Vec<&str>> {
    let v = req.attr(".id").or_else(|| req.attr("numbers"))?;
    let items: Vec<&str> = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    (!items.is_empty()).then_some(items)
}

/// `yes`/`true` or `no`/`false`.
pub(crate) fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "yes" | "true" => Some(true),
        "no" | "false" => Some(false),
        _ => None,
    }
}

/// A `timeout` argument: empty, `none` or zero mean no timeout.
pub(crate) fn parse_timeout(v: &str) -> Result<Option<Duration>, ()> {
    if v.is_empty() || v == "none" {
        return Ok(None);
    }
    match parse_duration(v) {
        Ok(d) if d.is_zero() => Ok(None),
        Ok(d) => Ok(Some(d)),
        Err(_) => Err(()),
    }
}
