//! Firewall address-lists (`/ip/firewall/address-list`, `/ipv6/firewall/address-list`).
//!
//! Entries are keyed by (list, address); an entry with a timeout is dynamic, expires on the
//! sim clock (an ordered expiry index, purged on every access) and is gone after a reboot.
//! Addresses are normalised like RouterOS does (`10.0.0.5/32` is `10.0.0.5`, host bits of a
//! CIDR are cleared, a range that is a CIDR becomes one). An IPv6 literal in the IPv4 list is
//! taken as a DNS name and refused. It deliberately does not resolve DNS names.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnet::{Ipv4Net, Ipv6Net};

use crate::clock::Clock;
use crate::connection::{format_id, write_timeout};
use crate::kinds::Family;
use crate::query::Props;

/// One entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListEntry {
    pub(crate) id: u64,
    pub(crate) list: String,
    pub(crate) address: String,
    pub(crate) expires_at: Option<Duration>,
    pub(crate) created_at: Duration,
    pub(crate) comment: Option<String>,
    pub(crate) disabled: bool,
}

/// Why an address-list operation failed (the trap to send).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListError {
    /// `failure: already have such entry`
    Duplicate,
    /// A bad address; the full trap message.
    InvalidAddress(String),
    /// `no such item (4)`
    NoSuchItem,
}

/// What `set` may change.
#[derive(Debug, Clone, Default)]
pub(crate) struct EntryChanges {
    pub(crate) list: Option<String>,
    pub(crate) address: Option<String>,
    /// `Some(None)`: remove the timeout (`=timeout=` empty); `Some(Some(d))`: set it.
    pub(crate) timeout: Option<Option<Duration>>,
    pub(crate) comment: Option<String>,
    pub(crate) disabled: Option<bool>,
}

/// Why an entry left a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListRemoval {
    /// A client's `remove`.
    Api,
    /// Its timeout ran out.
    Expired,
    /// A reboot (dynamic entries live in RAM).
    Reboot,
    /// `SimHandle::remove_list_entry`.
    Handle,
}

/// One change to an address-list, as `SimHandle::list_changes` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListChange {
    /// An entry was added (by a client, the handle, or a firewall rule such as `psd`).
    Added {
        /// The family of the list.
        family: Family,
        /// The new entry.
        entry: SimListEntry,
    },
    /// A client's `set` changed an entry (its list, address, timeout, comment or disabled).
    Updated {
        /// The family of the list.
        family: Family,
        /// The entry before.
        before: SimListEntry,
        /// The entry after.
        after: SimListEntry,
    },
    /// An entry left its list.
    Removed {
        /// The family of the list.
        family: Family,
        /// The entry as it was.
        entry: SimListEntry,
        /// Why.
        cause: ListRemoval,
    },
}

/// A change recorded under the router lock, published when the lock is released.
#[derive(Debug, Clone)]
pub(crate) enum RawListChange {
    Added(ListEntry),
    Updated(ListEntry, ListEntry),
    Removed(ListEntry, ListRemoval),
}

impl RawListChange {
    /// The public form at `now`.
    pub(crate) fn publish(self, family: Family, now: Duration, clock: &Clock) -> ListChange {
        let view = |e: &ListEntry| SimListEntry::of(e, now, clock);
        match self {
            RawListChange::Added(e) => ListChange::Added {
                family,
                entry: view(&e),
            },
            RawListChange::Updated(b, a) => ListChange::Updated {
                family,
                before: view(&b),
                after: view(&a),
            },
            RawListChange::Removed(e, cause) => ListChange::Removed {
                family,
                entry: view(&e),
                cause,
            },
        }
    }
}

/// The lists of one family.
#[derive(Debug)]
pub(crate) struct AddressLists {
    family: Family,
    next_id: u64,
    entries: BTreeMap<u64, ListEntry>,
    by_key: HashMap<(String, String), u64>,
    expiry: BTreeSet<(Duration, u64)>,
    /// Record changes (someone observes them); they wait in `changes` until taken.
    record: bool,
    changes: Vec<RawListChange>,
}

const INVALID_DNS_NAME: &str = "invalid value for argument address: failure: invalid dns name";

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        && s.bytes().any(|b| b.is_ascii_alphabetic())
}

/// Normalises an address for a list of `family`, or gives the trap message.
pub(crate) fn normalize_address(family: Family, raw: &str) -> Result<String, String> {
    let s = raw.trim();
    let invalid = || format!("invalid value for argument address: {s}");
    match family {
        Family::V4 => {
            if s.contains(':') {
                return Err(INVALID_DNS_NAME.into());
            }
            if let Ok(ip) = s.parse::<Ipv4Addr>() {
                return Ok(ip.to_string());
            }
            if let Some((a, b)) = s.split_once('-') {
                let (Ok(a), Ok(b)) = (a.trim().parse::<Ipv4Addr>(), b.trim().parse::<Ipv4Addr>())
                else {
                    return Err(invalid());
                };
                if a > b {
                    return Err(invalid());
                }
                if a == b {
                    return Ok(a.to_string());
                }
                // A range that is exactly one CIDR block is stored as that block.
                let span = u32::from(b) - u32::from(a);
                if span.wrapping_add(1).is_power_of_two() {
                    let len = 32 - (span.wrapping_add(1)).trailing_zeros() as u8;
                    if let Ok(net) = Ipv4Net::new(a, len) {
                        if net.network() == a {
                            return Ok(net.to_string());
                        }
                    }
                }
                return Ok(format!("{a}-{b}"));
            }
            if let Some((a, len)) = s.split_once('/') {
                let (Ok(a), Ok(len)) = (a.parse::<Ipv4Addr>(), len.parse::<u8>()) else {
                    return Err(invalid());
                };
                let net = Ipv4Net::new(a, len).map_err(|_| invalid())?;
                return Ok(if len == 32 {
                    a.to_string()
                } else {
                    net.trunc().to_string()
                });
            }
            if is_dns_name(s) {
                Ok(s.to_ascii_lowercase())
            } else {
                Err(invalid())
            }
        }
        Family::V6 => {
            if let Ok(ip) = s.parse::<Ipv6Addr>() {
                return Ok(ip.to_string());
            }
            if let Some((a, len)) = s.split_once('/') {
                let (Ok(a), Ok(len)) = (a.parse::<Ipv6Addr>(), len.parse::<u8>()) else {
                    return Err(invalid());
                };
                let net = Ipv6Net::new(a, len).map_err(|_| invalid())?;
                return Ok(if len == 128 {
                    a.to_string()
                } else {
                    net.trunc().to_string()
                });
            }
            if s.parse::<IpAddr>().is_ok() || !is_dns_name(s) {
                return Err(invalid());
            }
            Ok(s.to_ascii_lowercase())
        }
    }
}

impl AddressLists {
    pub(crate) fn new(family: Family) -> Self {
        Self {
            family,
            next_id: 1,
            entries: BTreeMap::new(),
            by_key: HashMap::new(),
            expiry: BTreeSet::new(),
            record: false,
            changes: Vec::new(),
        }
    }

    /// Starts or stops recording changes (stopping drops what was recorded).
    pub(crate) fn record_changes(&mut self, on: bool) {
        self.record = on;
        if !on {
            self.changes.clear();
        }
    }

    /// The changes recorded since the last call.
    pub(crate) fn take_changes(&mut self) -> Vec<RawListChange> {
        std::mem::take(&mut self.changes)
    }

    fn note(&mut self, change: impl FnOnce() -> RawListChange) {
        if self.record {
            self.changes.push(change());
        }
    }

    /// Drops entries whose timeout has run out.
    pub(crate) fn purge(&mut self, now: Duration) {
        while let Some(&(at, id)) = self.expiry.first() {
            if at > now {
                break;
            }
            self.expiry.pop_first();
            if let Some(e) = self.entries.remove(&id) {
                self.by_key.remove(&(e.list.clone(), e.address.clone()));
                self.note(|| RawListChange::Removed(e, ListRemoval::Expired));
            }
        }
    }

    pub(crate) fn add(
        &mut self,
        list: &str,
        address: &str,
        timeout: Option<Duration>,
        comment: Option<String>,
        disabled: bool,
        now: Duration,
    ) -> Result<u64, ListError> {
        self.purge(now);
        let address = normalize_address(self.family, address).map_err(ListError::InvalidAddress)?;
        let key = (list.to_owned(), address);
        if self.by_key.contains_key(&key) {
            return Err(ListError::Duplicate);
        }
        let id = self.next_id;
        self.next_id += 1;
        let expires_at = timeout.map(|t| now.saturating_add(t));
        if let Some(at) = expires_at {
            self.expiry.insert((at, id));
        }
        self.by_key.insert(key.clone(), id);
        let entry = ListEntry {
            id,
            list: key.0,
            address: key.1,
            expires_at,
            created_at: now,
            comment,
            disabled,
        };
        self.note(|| RawListChange::Added(entry.clone()));
        self.entries.insert(id, entry);
        Ok(id)
    }

    pub(crate) fn remove(&mut self, id: u64, cause: ListRemoval, now: Duration) -> bool {
        self.purge(now);
        match self.entries.remove(&id) {
            Some(e) => {
                self.by_key.remove(&(e.list.clone(), e.address.clone()));
                if let Some(at) = e.expires_at {
                    self.expiry.remove(&(at, id));
                }
                self.note(|| RawListChange::Removed(e, cause));
                true
            }
            None => false,
        }
    }

    /// Whether `list` holds `address` (normalised first) now; a hash lookup.
    pub(crate) fn has(&mut self, list: &str, address: &str, now: Duration) -> bool {
        self.purge(now);
        normalize_address(self.family, address)
            .is_ok_and(|a| self.by_key.contains_key(&(list.to_owned(), a)))
    }

    #[cfg(test)]
    pub(crate) fn contains(&mut self, id: u64, now: Duration) -> bool {
        self.purge(now);
        self.entries.contains_key(&id)
    }

    pub(crate) fn set(&mut self, id: u64, c: EntryChanges, now: Duration) -> Result<(), ListError> {
        self.purge(now);
        let Some(old) = self.entries.get(&id).cloned() else {
            return Err(ListError::NoSuchItem);
        };
        let address = match &c.address {
            Some(a) => normalize_address(self.family, a).map_err(ListError::InvalidAddress)?,
            None => old.address.clone(),
        };
        let list = c.list.clone().unwrap_or_else(|| old.list.clone());
        let new_key = (list.clone(), address.clone());
        if new_key != (old.list.clone(), old.address.clone()) && self.by_key.contains_key(&new_key)
        {
            return Err(ListError::Duplicate);
        }
        self.by_key.remove(&(old.list.clone(), old.address.clone()));
        self.by_key.insert(new_key, id);
        let mut e = old.clone();
        e.list = list;
        e.address = address;
        if let Some(t) = c.timeout {
            if let Some(at) = e.expires_at {
                self.expiry.remove(&(at, id));
            }
            e.expires_at = t.map(|d| now.saturating_add(d));
            if let Some(at) = e.expires_at {
                self.expiry.insert((at, id));
            }
        }
        if let Some(comment) = c.comment {
            e.comment = Some(comment).filter(|s| !s.is_empty());
        }
        if let Some(d) = c.disabled {
            e.disabled = d;
        }
        self.note(|| RawListChange::Updated(old, e.clone()));
        self.entries.insert(id, e);
        Ok(())
    }

    /// A reboot: dynamic (timed) entries live in RAM and are gone.
    pub(crate) fn reboot(&mut self) {
        let dynamic: Vec<u64> = self.expiry.iter().map(|&(_, id)| id).collect();
        for id in dynamic {
            if let Some(e) = self.entries.remove(&id) {
                self.by_key.remove(&(e.list.clone(), e.address.clone()));
                self.note(|| RawListChange::Removed(e, ListRemoval::Reboot));
            }
        }
        self.expiry.clear();
    }

    /// Every live entry, in id order (call `purge` first).
    pub(crate) fn entries(&self) -> impl Iterator<Item = &ListEntry> {
        self.entries.values()
    }
}

/// An address-list entry as seen from a test or an observer of list changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimListEntry {
    /// `.id`, e.g. `*3`.
    pub id: String,
    /// The list.
    pub list: String,
    /// The (normalised) address.
    pub address: String,
    /// Time left before it expires, for dynamic entries.
    pub timeout_remaining: Option<Duration>,
    /// True when it has a timeout.
    pub dynamic: bool,
    /// The comment.
    pub comment: Option<String>,
    /// Disabled.
    pub disabled: bool,
    /// `creation-time` as printed.
    pub creation_time: String,
}

impl SimListEntry {
    /// The public view of an entry at `now`.
    pub(crate) fn of(e: &ListEntry, now: Duration, clock: &Clock) -> Self {
        SimListEntry {
            id: format_id(e.id),
            list: e.list.clone(),
            address: e.address.clone(),
            timeout_remaining: e.expires_at.map(|at| at.saturating_sub(now)),
            dynamic: e.expires_at.is_some(),
            comment: e.comment.clone(),
            disabled: e.disabled,
            creation_time: clock.wall_stamp(e.created_at),
        }
    }
}

/// An entry as the router prints it at `now`.
pub(crate) struct EntryView<'a> {
    pub(crate) entry: &'a ListEntry,
    pub(crate) now: Duration,
    pub(crate) clock: &'a Clock,
}

const ENTRY_NAMES: &[&str] = &[
    ".id",
    "list",
    "address",
    "creation-time",
    "timeout",
    "dynamic",
    "disabled",
    "comment",
];

impl Props for EntryView<'_> {
    fn value(&self, name: &str, out: &mut String) -> bool {
        let e = self.entry;
        match name {
            ".id" => {
                out.push_str(&format_id(e.id));
                true
            }
            "list" => {
                out.push_str(&e.list);
                true
            }
            "address" => {
                out.push_str(&e.address);
                true
            }
            "creation-time" => {
                out.push_str(&self.clock.wall_stamp(e.created_at));
                true
            }
            "timeout" => match e.expires_at {
                Some(at) => {
                    write_timeout(out, at.saturating_sub(self.now));
                    true
                }
                None => false,
            },
            "dynamic" => {
                out.push_str(if e.expires_at.is_some() {
                    "true"
                } else {
                    "false"
                });
                true
            }
            "disabled" => {
                out.push_str(if e.disabled { "true" } else { "false" });
                true
            }
            "comment" => match &e.comment {
                Some(c) => {
                    out.push_str(c);
                    true
                }
                None => false,
            },
            _ => false,
        }
    }

    fn for_each(&self, scratch: &mut String, f: &mut dyn FnMut(&str, &str)) {
        for name in ENTRY_NAMES {
            scratch.clear();
            if self.value(name, scratch) {
                f(name, scratch);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        let v4 = |s| normalize_address(Family::V4, s);
        assert_eq!(v4("10.0.0.5/32").unwrap(), "10.0.0.5");
        assert_eq!(v4("10.0.0.5/24").unwrap(), "10.0.0.0/24");
        assert_eq!(v4("10.0.0.0-10.0.0.255").unwrap(), "10.0.0.0/24");
        assert_eq!(v4("10.0.0.1-10.0.0.5").unwrap(), "10.0.0.1-10.0.0.5");
        assert_eq!(v4("Example.COM").unwrap(), "example.com");
        assert!(v4("2001:db8::1").unwrap_err().contains("invalid dns name"));
        assert!(v4("10.0.0.300").is_err());
        let v6 = |s| normalize_address(Family::V6, s);
        assert_eq!(v6("2001:db8::1/128").unwrap(), "2001:db8::1");
        assert_eq!(v6("2001:db8::1/64").unwrap(), "2001:db8::/64");
        assert!(v6("1.2.3.4").is_err());
    }

    #[test]
    fn add_duplicate_expire_reboot() {
        let mut l = AddressLists::new(Family::V4);
        let t0 = Duration::ZERO;
        let a = l
            .add(
                "tls_block",
                "1.2.3.4",
                Some(Duration::from_secs(60)),
                None,
                false,
                t0,
            )
            .unwrap();
        assert_eq!(
            l.add("tls_block", "1.2.3.4/32", None, None, false, t0),
            Err(ListError::Duplicate)
        );
        let b = l
            .add("allowlist", "1.1.1.1", None, None, false, t0)
            .unwrap();
        assert!(l.contains(a, Duration::from_secs(59)));
        assert!(l.has("tls_block", "1.2.3.4/32", Duration::from_secs(59)));
        assert!(!l.has("allowlist", "1.2.3.4", Duration::from_secs(59)));
        assert!(!l.contains(a, Duration::from_secs(60)));
        assert!(!l.has("tls_block", "1.2.3.4", Duration::from_secs(60)));
        l.add(
            "tls_block",
            "5.6.7.8",
            Some(Duration::from_secs(60)),
            None,
            false,
            t0,
        )
        .unwrap();
        l.reboot();
        assert_eq!(l.entries().map(|e| e.id).collect::<Vec<_>>(), vec![b]);
    }
}
