//! Firewall filter rules (`/ip/firewall/filter`, `/ipv6/firewall/filter`): an ordered list
//! with add (`place-before`), set, remove, move, enable/disable.
//!
//! Enough for a tool to install, find and remove its drop rules, with RouterOS's addressing of
//! items by `.id` (`*5`) or by position in print order (`0`). It deliberately does not match
//! packets: rules are data, no traffic is dropped (the `firewall` module reads the few that
//! react to scenario traffic, such as `psd` with `add-src-to-address-list`).

use crate::connection::{format_id, parse_id};
use std::time::Duration;

use routeros_proto::parse_duration;

use crate::kinds::Family;

/// Properties `add`/`set` accept (besides `place-before` on add).
pub(crate) const RULE_PARAMS: &[&str] = &[
    "chain",
    "action",
    "comment",
    "disabled",
    "log",
    "log-prefix",
    "src-address",
    "dst-address",
    "src-address-list",
    "dst-address-list",
    "src-port",
    "dst-port",
    "port",
    "protocol",
    "in-interface",
    "out-interface",
    "in-interface-list",
    "out-interface-list",
    "connection-state",
    "connection-nat-state",
    "connection-mark",
    "connection-limit",
    "jump-target",
    "reject-with",
    "tcp-flags",
    "hw-offload",
    "address-list",
    "address-list-timeout",
    "limit",
    "content",
    "layer7-protocol",
    "icmp-options",
    "packet-mark",
    "routing-mark",
    "src-mac-address",
    "ttl",
    "psd",
    "src-address-type",
    "dst-address-type",
    "connection-type",
    "nth",
    "random",
    "dst-limit",
    "tcp-mss",
    "packet-size",
    "ipv4-options",
    "priority",
    "dscp",
];

const ACTIONS: &[&str] = &[
    "accept",
    "drop",
    "reject",
    "jump",
    "return",
    "log",
    "passthrough",
    "fasttrack-connection",
    "add-src-to-address-list",
    "add-dst-to-address-list",
    "tarpit",
];

/// A rule's `psd=WeightThreshold,DelayThreshold,LowPortWeight,HighPortWeight` (MikroTik's
/// firewall manual): the weight of packets to distinct destination ports from one source, each
/// within DelayThreshold of the previous one, that makes a port scan; a port below 1024 weighs
/// LowPortWeight, others HighPortWeight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Psd {
    pub(crate) weight_threshold: u32,
    pub(crate) delay: Duration,
    pub(crate) low_port_weight: u32,
    pub(crate) high_port_weight: u32,
}

impl Psd {
    /// Parses `21,3s,3,1` (the delay is a duration; a bare number is seconds).
    pub(crate) fn parse(v: &str) -> Option<Self> {
        let parts: Vec<&str> = v.split(',').map(str::trim).collect();
        let [w, d, lo, hi] = parts.as_slice() else {
            return None;
        };
        Some(Psd {
            weight_threshold: w.parse().ok().filter(|&w: &u32| w > 0)?,
            delay: parse_duration(d).ok()?,
            low_port_weight: lo.parse().ok()?,
            high_port_weight: hi.parse().ok()?,
        })
    }

    /// The weight of a packet to `port`.
    pub(crate) fn weight(&self, port: u16) -> u32 {
        if port < 1024 {
            self.low_port_weight
        } else {
            self.high_port_weight
        }
    }
}

/// `address-list-timeout`: a duration, or `none-dynamic`/`none-static` (no timeout). `Some(None)`
/// for no timeout, `None` when invalid.
pub(crate) fn list_timeout(v: &str) -> Option<Option<Duration>> {
    match v {
        "none-dynamic" | "none-static" | "" => Some(None),
        d => match parse_duration(d) {
            Ok(d) if d.is_zero() => Some(None),
            Ok(d) => Some(Some(d)),
            Err(_) => None,
        },
    }
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FilterRule {
    pub(crate) id: u64,
    /// Settable properties in the order they were given (`disabled` kept apart).
    pub(crate) props: Vec<(String, String)>,
    pub(crate) disabled: bool,
}

/// The rules of one family.
#[derive(Debug)]
pub(crate) struct FilterTable {
    next_id: u64,
    rules: Vec<FilterRule>,
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "yes" | "true" => Some(true),
        "no" | "false" => Some(false),
        _ => None,
    }
}

impl FilterTable {
    /// The rules a fresh router has (a subset of RouterOS's defconf).
    pub(crate) fn new(family: Family) -> Self {
        let mut t = Self {
            next_id: 1,
            rules: Vec::new(),
        };
        let defconf: &[&[(&str, &str)]] = match family {
            Family::V4 => &[
                &[
                    ("chain", "input"),
                    ("action", "accept"),
                    ("connection-state", "established,related,untracked"),
                    ("comment", "defconf: accept established,related,untracked"),
                ],
                &[
                    ("chain", "input"),
                    ("action", "drop"),
                    ("connection-state", "invalid"),
                    ("comment", "defconf: drop invalid"),
                ],
                &[
                    ("chain", "forward"),
                    ("action", "fasttrack-connection"),
                    ("connection-state", "established,related"),
                    ("hw-offload", "yes"),
                    ("comment", "defconf: fasttrack"),
                ],
                &[
                    ("chain", "forward"),
                    ("action", "accept"),
                    ("connection-state", "established,related,untracked"),
                    ("comment", "defconf: accept established,related, untracked"),
                ],
            ],
            Family::V6 => &[
                &[
                    ("chain", "input"),
                    ("action", "accept"),
                    ("connection-state", "established,related,untracked"),
                    ("comment", "defconf: accept established,related,untracked"),
                ],
                &[
                    ("chain", "input"),
                    ("action", "drop"),
                    ("connection-state", "invalid"),
                    ("comment", "defconf: drop invalid"),
                ],
            ],
        };
        for rule in defconf {
            let props = rule
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect();
            // Defaults are valid by construction.
            let _ = t.add(props, None);
        }
        t
    }

    /// Position (0-based, print order) of an item given as `*ID` or as a position number.
    pub(crate) fn resolve(&self, item: &str) -> Option<usize> {
        let item = item.trim();
        if let Some(id) = parse_id(item) {
            return self.rules.iter().position(|r| r.id == id);
        }
        let n: usize = item.parse().ok()?;
        (n < self.rules.len()).then_some(n)
    }

    fn check(props: &[(String, String)]) -> Result<(), String> {
        for (n, v) in props {
            match n.as_str() {
                "action" if !ACTIONS.contains(&v.as_str()) => {
                    return Err(format!("invalid value for argument action: {v}"))
                }
                "disabled" | "log" if parse_bool(v).is_none() => {
                    return Err(format!("invalid value for argument {n}: {v}"))
                }
                "psd" if Psd::parse(v).is_none() => {
                    return Err(format!("invalid value for argument psd: {v}"))
                }
                "address-list-timeout" if list_timeout(v).is_none() => {
                    return Err(format!(
                        "invalid value for argument address-list-timeout: {v}"
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Adds a rule before position `before` (or at the end).
    pub(crate) fn add(
        &mut self,
        props: Vec<(String, String)>,
        before: Option<usize>,
    ) -> Result<u64, String> {
        Self::check(&props)?;
        if !props.iter().any(|(n, v)| n == "chain" && !v.is_empty()) {
            return Err("missing value(s) of argument(s) chain".into());
        }
        let mut disabled = false;
        let mut kept = Vec::with_capacity(props.len() + 1);
        for (n, v) in props {
            if n == "disabled" {
                disabled = parse_bool(&v).unwrap_or(false);
            } else {
                kept.push((n, v));
            }
        }
        if !kept.iter().any(|(n, _)| n == "action") {
            kept.insert(1.min(kept.len()), ("action".into(), "accept".into()));
        }
        let id = self.next_id;
        self.next_id += 1;
        let rule = FilterRule {
            id,
            props: kept,
            disabled,
        };
        let at = before.unwrap_or(self.rules.len()).min(self.rules.len());
        self.rules.insert(at, rule);
        Ok(id)
    }

    /// Changes properties of the rule at `pos`.
    pub(crate) fn set(&mut self, pos: usize, props: Vec<(String, String)>) -> Result<(), String> {
        Self::check(&props)?;
        let Some(rule) = self.rules.get_mut(pos) else {
            return Err("no such item (4)".into());
        };
        for (n, v) in props {
            if n == "disabled" {
                rule.disabled = parse_bool(&v).unwrap_or(rule.disabled);
            } else if v.is_empty() && n != "comment" {
                rule.props.retain(|(k, _)| *k != n);
            } else if let Some(slot) = rule.props.iter_mut().find(|(k, _)| *k == n) {
                slot.1 = v;
            } else {
                rule.props.push((n, v));
            }
        }
        Ok(())
    }

    /// Removes the rules at these positions.
    pub(crate) fn remove(&mut self, positions: &[usize]) {
        let ids: Vec<u64> = positions
            .iter()
            .filter_map(|&p| self.rules.get(p).map(|r| r.id))
            .collect();
        self.rules.retain(|r| !ids.contains(&r.id));
    }

    /// Moves the rules at `positions` (keeping their order) before the rule at `destination`,
    /// or to the end.
    pub(crate) fn move_rules(&mut self, positions: &[usize], destination: Option<usize>) {
        let mut ids: Vec<u64> = positions
            .iter()
            .filter_map(|&p| self.rules.get(p).map(|r| r.id))
            .collect();
        ids.dedup();
        let dest_id = destination.and_then(|d| self.rules.get(d).map(|r| r.id));
        if dest_id.is_some_and(|d| ids.contains(&d)) {
            return;
        }
        let mut moved: Vec<FilterRule> = Vec::new();
        for id in &ids {
            if let Some(p) = self.rules.iter().position(|r| r.id == *id) {
                moved.push(self.rules.remove(p));
            }
        }
        let at = dest_id
            .and_then(|d| self.rules.iter().position(|r| r.id == d))
            .unwrap_or(self.rules.len());
        for (k, r) in moved.into_iter().enumerate() {
            self.rules.insert(at + k, r);
        }
    }

    /// Every rule as the router prints it.
    pub(crate) fn rows(&self) -> Vec<Vec<(String, String)>> {
        self.rules
            .iter()
            .map(|r| {
                let mut row = Vec::with_capacity(r.props.len() + 6);
                row.push((".id".to_owned(), format_id(r.id)));
                row.extend(r.props.iter().cloned());
                for (n, v) in [
                    ("invalid", "false"),
                    ("dynamic", "false"),
                    ("disabled", if r.disabled { "true" } else { "false" }),
                    ("bytes", "0"),
                    ("packets", "0"),
                ] {
                    row.push((n.to_owned(), v.to_owned()));
                }
                row
            })
            .collect()
    }

    /// The rules in order.
    pub(crate) fn rules(&self) -> &[FilterRule] {
        &self.rules
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.rules.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    fn chains(t: &FilterTable) -> Vec<String> {
        t.rows()
            .iter()
            .map(|r| {
                r.iter()
                    .find(|(n, _)| n == "comment")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            })
            .collect()
    }

    #[test]
    fn psd_values() {
        let p = Psd::parse("21,3s,3,1").unwrap();
        assert_eq!(
            p,
            Psd {
                weight_threshold: 21,
                delay: Duration::from_secs(3),
                low_port_weight: 3,
                high_port_weight: 1
            }
        );
        assert_eq!((p.weight(1023), p.weight(1024)), (3, 1));
        assert_eq!(
            Psd::parse("21, 3, 3, 1").unwrap().delay,
            Duration::from_secs(3)
        );
        for bad in [
            "",
            "21,3s,3",
            "x,3s,3,1",
            "0,3s,3,1",
            "21,soon,3,1",
            "21,3s,3,1,1",
        ] {
            assert!(Psd::parse(bad).is_none(), "{bad}");
        }
        let mut t = FilterTable::new(Family::V4);
        assert!(t
            .add(p2(&[("chain", "input"), ("psd", "21,3s")]), None)
            .unwrap_err()
            .contains("psd"));
        assert!(t
            .add(
                p2(&[("chain", "input"), ("address-list-timeout", "later")]),
                None
            )
            .is_err());
        assert_eq!(list_timeout("none-dynamic"), Some(None));
        assert_eq!(
            list_timeout("2w"),
            Some(Some(Duration::from_secs(1_209_600)))
        );
    }

    fn p2(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        p(pairs)
    }

    #[test]
    fn add_place_before_move_remove() {
        let mut t = FilterTable::new(Family::V4);
        let n = t.len();
        let a = t
            .add(
                p(&[("chain", "forward"), ("action", "drop"), ("comment", "A")]),
                Some(0),
            )
            .unwrap();
        assert_eq!(chains(&t)[0], "A");
        t.add(p(&[("chain", "forward"), ("comment", "B")]), None)
            .unwrap();
        assert_eq!(chains(&t)[n + 1], "B");
        let pos_a = t.resolve(&format_id(a)).unwrap();
        t.move_rules(&[pos_a], None);
        assert_eq!(chains(&t)[n + 1], "A");
        assert!(t.add(p(&[("action", "drop")]), None).is_err());
        assert!(t
            .add(p(&[("chain", "x"), ("action", "explode")]), None)
            .is_err());
        let pos = t.resolve(&format_id(a)).unwrap();
        t.remove(&[pos]);
        assert_eq!(t.len(), n + 1);
        assert!(t.resolve(&format_id(a)).is_none());
    }
}
