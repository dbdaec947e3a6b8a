//! Typed helpers for the few RouterOS menus the daemon uses: firewall address lists, the
//! connection table, interface addresses and system resources.
//!
//! They build the commands (always with `.proplist`) and turn the router's well-known traps
//! into outcomes: `already have such entry` is [`AddOutcome::AlreadyPresent`], `no such item`
//! is [`RemoveOutcome::NoSuchItem`]. They deliberately return raw [`Reply`] rows: turning rows
//! into checked domain types is the caller's boundary.

use std::time::Duration;

use routeros_proto::{format_duration, Command, Reply};

use crate::client::{Client, RowStream};
use crate::error::Error;
use crate::stream::Response;

pub use routeros_proto::Family;

/// What became of an address-list `add`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddOutcome {
    /// Added; `id` is the new entry's `.id` (empty if the router did not return one).
    Added { id: String },
    /// The router already has this (list, address) pair.
    AlreadyPresent,
}

impl AddOutcome {
    /// Classifies the result of an `add` sent with [`Client::call`] or [`Client::call_many`].
    pub fn from_result(result: Result<Response, Error>) -> Result<Self, Error> {
        match result {
            Ok(response) => Ok(AddOutcome::Added {
                id: response.ret.unwrap_or_default(),
            }),
            Err(Error::Trap { message, .. }) if message.contains("already have such entry") => {
                Ok(AddOutcome::AlreadyPresent)
            }
            Err(e) => Err(e),
        }
    }
}

/// What became of a `remove`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveOutcome {
    Removed,
    /// The item was already gone (it expired, or someone else removed it).
    NoSuchItem,
}

impl RemoveOutcome {
    /// Classifies the result of a `remove` sent with [`Client::call`] or [`Client::call_many`].
    pub fn from_result(result: Result<Response, Error>) -> Result<Self, Error> {
        match result {
            Ok(_) => Ok(RemoveOutcome::Removed),
            Err(Error::Trap { message, .. }) if message.starts_with("no such item") => {
                Ok(RemoveOutcome::NoSuchItem)
            }
            Err(e) => Err(e),
        }
    }
}

/// The properties `address_list_print` asks for.
pub const ADDRESS_LIST_PROPS: &[&str] = &[
    ".id",
    "list",
    "address",
    "timeout",
    "dynamic",
    "disabled",
    "comment",
    "creation-time",
];

/// `add =list=L =address=A [=timeout=T] [=comment=C]` on the family's address list. A zero
/// or absent timeout means a static entry; an empty comment is not sent.
pub fn address_list_add_command(
    family: Family,
    list: &str,
    address: &str,
    timeout: Option<Duration>,
    comment: &str,
) -> Command {
    let mut cmd = Command::new(&family.path("firewall/address-list/add"))
        .attr("list", list)
        .attr("address", address);
    if let Some(t) = timeout.filter(|t| !t.is_zero()) {
        cmd = cmd.attr("timeout", format_duration(t));
    }
    if !comment.is_empty() {
        cmd = cmd.attr("comment", comment);
    }
    cmd
}

/// `remove =.id=ID` under `menu` of the family (e.g. `firewall/address-list`).
pub fn remove_command(family: Family, menu: &str, id: &str) -> Command {
    Command::new(&family.path(&format!("{}/remove", menu.trim_end_matches('/')))).attr(".id", id)
}

impl Client {
    /// The entries of one address list (`?list=L`), with [`ADDRESS_LIST_PROPS`].
    pub async fn address_list_print(
        &self,
        family: Family,
        list: &str,
    ) -> Result<Vec<Reply>, Error> {
        let cmd = Command::new(&family.path("firewall/address-list/print"))
            .proplist(ADDRESS_LIST_PROPS)
            .query_eq("list", list);
        Ok(self.call(cmd).await?.rows)
    }

    /// Adds `address` to `list`; `timeout` is formatted the RouterOS way (`1d2h`).
    pub async fn address_list_add(
        &self,
        family: Family,
        list: &str,
        address: &str,
        timeout: Option<Duration>,
        comment: &str,
    ) -> Result<AddOutcome, Error> {
        let cmd = address_list_add_command(family, list, address, timeout, comment);
        let outcome = AddOutcome::from_result(self.call(cmd).await)?;
        if outcome == (AddOutcome::Added { id: String::new() }) {
            tracing::warn!(router = %self.router(), list, address, "address-list add returned no .id");
        }
        Ok(outcome)
    }

    /// Removes one address-list entry by `.id`.
    pub async fn address_list_remove(
        &self,
        family: Family,
        id: &str,
    ) -> Result<RemoveOutcome, Error> {
        RemoveOutcome::from_result(
            self.call(remove_command(family, "firewall/address-list", id))
                .await,
        )
    }

    /// Removes one connection-tracking entry by `.id`.
    pub async fn connection_remove(
        &self,
        family: Family,
        id: &str,
    ) -> Result<RemoveOutcome, Error> {
        RemoveOutcome::from_result(
            self.call(remove_command(family, "firewall/connection", id))
                .await,
        )
    }

    /// Streams a caller-built print of the family's connection table. The command's path
    /// must be `family.path("firewall/connection/print")`.
    pub async fn connections(&self, family: Family, cmd: Command) -> Result<RowStream, Error> {
        let expected = family.path("firewall/connection/print");
        if cmd.path() != expected {
            return Err(Error::InvalidCommand {
                router: self.router().to_owned(),
                source: routeros_proto::ProtoError::InvalidCommand(format!(
                    "connections() needs a {expected} command, got {}",
                    cmd.path()
                )),
            });
        }
        self.stream(cmd).await
    }

    /// The router's own addresses (`/ip/address/print` or `/ipv6/address/print`).
    pub async fn addresses(&self, family: Family) -> Result<Vec<Reply>, Error> {
        let cmd = Command::new(&family.path("address/print")).proplist(&[
            "address",
            "network",
            "interface",
            "disabled",
        ]);
        Ok(self.call(cmd).await?.rows)
    }

    /// The number of entries in the router's connection-tracking table
    /// (`/ip/firewall/connection/tracking` `total-entries`: IPv4 and IPv6 together), read
    /// without walking the table. `None` when the router does not report it.
    pub async fn connection_tracking_total(&self) -> Result<Option<u64>, Error> {
        let cmd =
            Command::new("/ip/firewall/connection/tracking/print").proplist(&["total-entries"]);
        Ok(self
            .call(cmd)
            .await?
            .rows
            .first()
            .and_then(|r| r.get_str("total-entries"))
            .and_then(|v| v.parse().ok()))
    }

    /// The first row of `/system/resource/print` (version, uptime, load, memory).
    pub async fn system_resource(&self) -> Result<Reply, Error> {
        let cmd = Command::new("/system/resource/print").proplist(&[
            "version",
            "uptime",
            "cpu-load",
            "free-memory",
            "total-memory",
            "board-name",
            "architecture-name",
        ]);
        self.call(cmd)
            .await?
            .rows
            .into_iter()
            .next()
            .ok_or_else(|| Error::Unexpected {
                router: self.router().to_owned(),
                message: "/system/resource/print returned no row".into(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(c: &Command) -> Vec<String> {
        c.words()
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect()
    }

    #[test]
    fn family_paths() {
        assert_eq!(Family::V4.prefix(), "/ip");
        assert_eq!(
            Family::V6.path("firewall/connection/print"),
            "/ipv6/firewall/connection/print"
        );
        assert_eq!(Family::V4.path("/address/print"), "/ip/address/print");
    }

    #[test]
    fn add_command_words() {
        let c = address_list_add_command(
            Family::V4,
            "rosguard",
            "203.0.113.7",
            Some(Duration::from_secs(86_400 + 7200)),
            "dpi freeze",
        );
        assert_eq!(
            words(&c),
            [
                "/ip/firewall/address-list/add",
                "=list=rosguard",
                "=address=203.0.113.7",
                // 1 day 2 hours, written out: the expectation must not come from the formatter
                // the command builder itself uses.
                "=timeout=1d2h",
                "=comment=dpi freeze",
            ]
        );
        for (timeout, word) in [
            (Duration::from_secs(8 * 86_400 + 61), "=timeout=1w1d1m1s"),
            (Duration::from_millis(1_500), "=timeout=1s500ms"),
        ] {
            let c = address_list_add_command(Family::V4, "l", "a", Some(timeout), "");
            assert_eq!(words(&c)[3], word);
        }
        // A zero timeout is a static entry: no timeout word at all.
        let c = address_list_add_command(Family::V4, "l", "a", Some(Duration::ZERO), "");
        assert_eq!(words(&c).len(), 3);
        let c = address_list_add_command(Family::V6, "l", "2001:db8::1", None, "");
        assert_eq!(
            words(&c),
            [
                "/ipv6/firewall/address-list/add",
                "=list=l",
                "=address=2001:db8::1"
            ]
        );
    }

    #[test]
    fn outcomes_from_traps() {
        let trap = |m: &str| {
            Err(Error::Trap {
                router: "r".into(),
                category: None,
                message: m.into(),
            })
        };
        assert_eq!(
            AddOutcome::from_result(trap("failure: already have such entry")).unwrap(),
            AddOutcome::AlreadyPresent
        );
        assert!(AddOutcome::from_result(trap("invalid value")).is_err());
        assert_eq!(
            RemoveOutcome::from_result(trap("no such item (4)")).unwrap(),
            RemoveOutcome::NoSuchItem
        );
        assert!(RemoveOutcome::from_result(trap("x no such item")).is_err());
        assert_eq!(
            RemoveOutcome::from_result(Ok(Response::default())).unwrap(),
            RemoveOutcome::Removed
        );
    }
}
