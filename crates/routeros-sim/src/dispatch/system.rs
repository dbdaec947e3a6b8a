//! The read-only menus: `/ip/address`, `/ipv6/address`, `/ip/route`, `/ipv6/route`,
//! `/ip/dns`, `/ip/firewall/connection/tracking`, `/system/resource`, `/system/identity`, and
//! `/user/active` (one row per logged-in API session).
//!
//! Each answers a print of rows the router computes on the spot. It deliberately accepts no
//! command that changes anything.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::connection::format_id;
use crate::kinds::Family;
use crate::request::Request;
use crate::shared::Shared;
use crate::writer::{End, ReplyWriter};

use super::print::print_owned;

/// A read-only menu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadOnly {
    Address(Family),
    Route(Family),
    Dns,
    Tracking,
    Resource,
    Identity,
    ActiveUsers,
}

/// `print` of a read-only menu.
pub(crate) async fn print(
    menu: ReadOnly,
    req: &Request,
    cancel: &AtomicBool,
    w: &mut ReplyWriter,
    shared: &Shared,
) -> Result<(), End> {
    let now = shared.clock.now();
    let rows = match menu {
        ReadOnly::Address(f) => shared.router().address_rows(f),
        ReadOnly::Route(f) => shared.router().route_rows(f),
        ReadOnly::Dns => shared.router().dns_rows(),
        ReadOnly::Tracking => {
            let hide_totals = shared.faults().hide_tracking_totals;
            shared.router().tracking_rows(now, hide_totals)
        }
        ReadOnly::Resource => {
            let commands = shared.stats.commands.load(Ordering::Relaxed);
            shared.router().resource_rows(now, commands)
        }
        ReadOnly::Identity => shared.router().identity_rows(),
        ReadOnly::ActiveUsers => active_user_rows(shared),
    };
    print_owned(rows, req, cancel, w, shared).await
}

/// `/user/active`: every logged-in session, with the address the router sees (the peer's, or
/// `session_address` for a client behind NAT).
fn active_user_rows(shared: &Shared) -> Vec<Vec<(String, String)>> {
    shared
        .active_sessions()
        .into_iter()
        .map(|(id, s)| {
            vec![
                (".id".to_owned(), format_id(id)),
                ("when".into(), shared.clock.wall_stamp(s.since)),
                ("name".into(), s.user),
                ("address".into(), s.address.to_string()),
                ("via".into(), s.via.as_str().to_owned()),
                ("group".into(), "full".into()),
                ("radius".into(), "false".into()),
            ]
        })
        .collect()
}
