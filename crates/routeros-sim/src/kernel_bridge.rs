//! A simulator whose connection tables are a Linux namespace's kernel conntrack
//! (`rosguard sim --conntrack-netns NAME`), for the lab (`lab/README.md`).
//!
//! Every [`KernelBridge::interval`] (500 ms by default) it reads both families with a
//! [`ConntrackReader`] and makes the simulator's tables exactly those rows with
//! [`SimHandle::sync_connections`] (a row keeps its `.id` while its 5-tuple lives). A
//! connection a client removes through the API (`/ip/firewall/connection/remove`, as rosguard
//! does with `remove_tcp_conn`) is deleted from the kernel too (`conntrack -D`), at once.
//!
//! With `mirror_nft`, the drop rules clients add to the simulator's filter (what
//! `rosguard firewall --install` adds: `chain=forward|input|output action=drop` with a
//! `dst-address-list` or `src-address-list`) become nftables rules in the namespace
//! (`ip daddr @LIST_v4 drop`, `ip6 saddr @LIST_v6 drop`, ...) in table `inet rosguard_mirror`,
//! and the entries of those lists its sets, re-applied whenever a list changes (at once, from
//! [`SimHandle::list_changes`]) or the rules do (checked every interval): so blocking in the
//! simulator blocks in the lab's router. The table is removed when the bridge stops.
//!
//! It deliberately does not mirror other rule kinds (accept, jump, address ranges), disabled
//! entries or DNS names in lists, and it never touches the namespace's other tables.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::connection::{ConnTuple, SimProtocol};
use crate::kernel::{ConntrackReader, KernelConnection};
use crate::kinds::Family;
use crate::server::SimHandle;

/// [`KernelBridge::interval`]'s default.
pub const BRIDGE_INTERVAL: Duration = Duration::from_millis(500);
/// The nftables table the mirror owns.
pub const MIRROR_TABLE: &str = "rosguard_mirror";
/// The longest one `nft` run may take.
const NFT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the bridge did, for an observer (the lab's trace); the simulator does not need it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum BridgeEvent {
    /// One family's kernel rows as read and synced.
    Rows {
        /// The family.
        family: Family,
        /// The rows.
        rows: Vec<KernelConnection>,
    },
    /// A removal through the API reached the kernel (`found`: an entry was deleted).
    Deleted {
        /// The removed connection's tuple.
        tuple: ConnTuple,
        /// Whether the kernel still had it.
        found: bool,
    },
    /// The nftables mirror was (re)applied.
    Mirrored {
        /// The nftables statements, `chain|statement`.
        rules: Vec<String>,
        /// Addresses in the sets.
        addresses: usize,
    },
    /// Something failed; the bridge goes on.
    Error(String),
}

/// The bridge's settings.
#[derive(Debug, Clone)]
pub struct KernelBridge {
    /// Where the rows come from.
    pub reader: ConntrackReader,
    /// How often the kernel table is re-read (and the filter rules checked).
    pub interval: Duration,
    /// Mirror the simulator's drop rules on address-lists into the namespace's nftables.
    pub mirror_nft: bool,
}

/// The mirrored state: statements per chain, and the addresses of every set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Mirror {
    rules: BTreeSet<String>,
    sets: BTreeMap<String, BTreeSet<String>>,
}

impl KernelBridge {
    /// A bridge reading `reader` every [`BRIDGE_INTERVAL`].
    pub fn new(reader: ConntrackReader, mirror_nft: bool) -> Self {
        Self {
            reader,
            interval: BRIDGE_INTERVAL,
            mirror_nft,
        }
    }

    /// Runs until `shutdown` is cancelled, then removes the mirror table.
    pub async fn run(
        self,
        sim: SimHandle,
        shutdown: CancellationToken,
        events: Option<mpsc::UnboundedSender<BridgeEvent>>,
    ) {
        let emit = |e: BridgeEvent| {
            if let Some(tx) = &events {
                let _ = tx.send(e);
            }
        };
        let mut removals = sim.removed_connections();
        let mut changes = sim.list_changes();
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut applied: Option<Mirror> = None;
        let mut last_error = String::new();
        loop {
            let mut mirror_due = false;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    for family in [Family::V4, Family::V6] {
                        match self.reader.read(family).await {
                            Ok(dump) => {
                                for (line, why) in &dump.errors {
                                    tracing::warn!(line, error = %why, "unreadable conntrack line");
                                }
                                let conns = dump.rows.iter().map(KernelConnection::to_sim_connection).collect();
                                if let Err(e) = sim.sync_connections(family, conns) {
                                    emit(BridgeEvent::Error(e.to_string()));
                                }
                                emit(BridgeEvent::Rows { family, rows: dump.rows });
                            }
                            Err(e) => {
                                let msg = e.to_string();
                                if msg != last_error {
                                    tracing::warn!(error = %msg, "reading the kernel's conntrack");
                                    last_error = msg.clone();
                                }
                                emit(BridgeEvent::Error(msg));
                            }
                        }
                    }
                    mirror_due = self.mirror_nft;
                }
                r = removals.recv() => match r {
                    Ok(gone) => {
                        let t = gone.tuple;
                        let r = self.reader.delete_tuple(
                            gone.family, protocol_number(t.protocol), t.src, t.src_port, t.dst, t.dst_port,
                        ).await;
                        match r {
                            Ok(found) => emit(BridgeEvent::Deleted { tuple: t, found }),
                            Err(e) => {
                                tracing::warn!(error = %e, "deleting a removed connection from the kernel");
                                emit(BridgeEvent::Error(e.to_string()));
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "connection removals came faster than the kernel could delete them");
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                c = changes.recv(), if self.mirror_nft => match c {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => mirror_due = true,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
            if mirror_due {
                let want = desired_mirror(&sim);
                if applied.as_ref() != Some(&want) {
                    match self.nft(&mirror_ruleset(&want)).await {
                        Ok(()) => {
                            tracing::info!(
                                rules = want.rules.len(),
                                addresses = want.sets.values().map(BTreeSet::len).sum::<usize>(),
                                "nftables mirror applied"
                            );
                            emit(BridgeEvent::Mirrored {
                                rules: want.rules.iter().cloned().collect(),
                                addresses: want.sets.values().map(BTreeSet::len).sum(),
                            });
                            applied = Some(want);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "applying the nftables mirror");
                            emit(BridgeEvent::Error(e));
                        }
                    }
                }
            }
        }
        if applied.is_some() {
            let _ = self
                .nft(&format!(
                    "table inet {MIRROR_TABLE}\ndelete table inet {MIRROR_TABLE}\n"
                ))
                .await;
        }
    }

    async fn nft(&self, script: &str) -> Result<(), String> {
        let mut cmd = match self.reader.netns() {
            Some(ns) => {
                let mut c = tokio::process::Command::new("ip");
                c.args(["netns", "exec", ns, "nft", "-f", "-"]);
                c
            }
            None => {
                let mut c = tokio::process::Command::new("nft");
                c.args(["-f", "-"]);
                c
            }
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run nft ({e}); install nftables"))?;
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| format!("writing to nft: {e}"))?;
        drop(stdin);
        let out = tokio::time::timeout(NFT_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| format!("nft did not finish within {NFT_TIMEOUT:?}"))?
            .map_err(|e| format!("waiting for nft: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "nft: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

fn protocol_number(p: SimProtocol) -> u8 {
    match p {
        SimProtocol::Tcp => 6,
        SimProtocol::Udp => 17,
        SimProtocol::Icmp => 1,
        SimProtocol::Icmpv6 => 58,
        SimProtocol::Gre => 47,
        SimProtocol::Other(n) => n,
    }
}

fn set_name(list: &str, family: Family) -> String {
    let base: String = list
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    match family {
        Family::V4 => format!("{base}_v4"),
        Family::V6 => format!("{base}_v6"),
    }
}

/// The statements for one family's filter rules (as printed: name/value pairs).
fn mirror_rules(
    family: Family,
    rules: &[Vec<(String, String)>],
    out: &mut BTreeSet<String>,
    lists: &mut BTreeSet<String>,
) {
    let ip = match family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    };
    for rule in rules {
        let get = |k: &str| rule.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        if get("action") != Some("drop") || get("disabled") == Some("true") {
            continue;
        }
        let Some(chain @ ("forward" | "input" | "output")) = get("chain") else {
            continue;
        };
        for (prop, dir) in [("dst-address-list", "daddr"), ("src-address-list", "saddr")] {
            if let Some(list) = get(prop) {
                lists.insert(list.to_owned());
                out.insert(format!(
                    "{chain}|{ip} {dir} @{} counter drop",
                    set_name(list, family)
                ));
            }
        }
    }
}

fn desired_mirror(sim: &SimHandle) -> Mirror {
    let mut m = Mirror::default();
    for family in [Family::V4, Family::V6] {
        let mut lists = BTreeSet::new();
        mirror_rules(
            family,
            &sim.filter_rules_of(family),
            &mut m.rules,
            &mut lists,
        );
        for list in &lists {
            m.sets.entry(set_name(list, family)).or_default();
        }
        for e in sim.address_lists(family) {
            if e.disabled || !lists.contains(&e.list) {
                continue;
            }
            let ok =
                e.address.parse::<IpAddr>().is_ok() || e.address.parse::<ipnet::IpNet>().is_ok();
            if ok {
                m.sets
                    .entry(set_name(&e.list, family))
                    .or_default()
                    .insert(e.address.clone());
            }
        }
    }
    m
}

/// One atomic nftables transaction that replaces the mirror table.
fn mirror_ruleset(m: &Mirror) -> String {
    let t = MIRROR_TABLE;
    let mut s = format!("table inet {t}\ndelete table inet {t}\ntable inet {t} {{\n");
    for name in m.sets.keys() {
        let ty = if name.ends_with("_v6") {
            "ipv6_addr"
        } else {
            "ipv4_addr"
        };
        s.push_str(&format!(
            "  set {name} {{ type {ty}; flags interval; auto-merge; }}\n"
        ));
    }
    // Before the lab's own filter chains (priority filter), so a block wins over an accept.
    for chain in ["forward", "input", "output"] {
        s.push_str(&format!(
            "  chain {chain} {{\n    type filter hook {chain} priority filter - 10; policy accept;\n"
        ));
        let prefix = format!("{chain}|");
        for r in m.rules.iter().filter_map(|r| r.strip_prefix(&prefix)) {
            s.push_str(&format!("    {r}\n"));
        }
        s.push_str("  }\n");
    }
    s.push_str("}\n");
    for (name, addrs) in &m.sets {
        if !addrs.is_empty() {
            let elems: Vec<&str> = addrs.iter().map(String::as_str).collect();
            s.push_str(&format!(
                "add element inet {t} {name} {{ {} }}\n",
                elems.join(", ")
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn firewall_rules_become_nft_statements() {
        let rules = vec![
            rule(&[
                ("chain", "forward"),
                ("action", "drop"),
                ("dst-address-list", "tls_block"),
            ]),
            rule(&[
                ("chain", "output"),
                ("action", "drop"),
                ("dst-address-list", "tls_block"),
            ]),
            rule(&[
                ("chain", "input"),
                ("action", "drop"),
                ("src-address-list", "scan-list"),
            ]),
            rule(&[
                ("chain", "forward"),
                ("action", "accept"),
                ("src-address-list", "allowlist"),
            ]),
            rule(&[
                ("chain", "forward"),
                ("action", "drop"),
                ("disabled", "true"),
                ("src-address-list", "off"),
            ]),
            rule(&[
                ("chain", "srcnat"),
                ("action", "drop"),
                ("src-address-list", "x"),
            ]),
        ];
        let (mut out, mut lists) = (BTreeSet::new(), BTreeSet::new());
        mirror_rules(Family::V6, &rules, &mut out, &mut lists);
        let got: Vec<&str> = out.iter().map(String::as_str).collect();
        assert_eq!(
            got,
            [
                "forward|ip6 daddr @tls_block_v6 counter drop",
                "input|ip6 saddr @scan_list_v6 counter drop",
                "output|ip6 daddr @tls_block_v6 counter drop",
            ]
        );
        assert_eq!(lists.len(), 2);
    }

    #[test]
    fn the_ruleset_replaces_the_table_atomically() {
        let mut m = Mirror::default();
        m.rules
            .insert("forward|ip daddr @tls_block_v4 counter drop".into());
        m.sets.insert(
            "tls_block_v4".into(),
            ["203.0.113.20".to_owned(), "198.51.100.0/24".to_owned()].into(),
        );
        m.sets.insert("tls_block_v6".into(), BTreeSet::new());
        let s = mirror_ruleset(&m);
        assert!(s.starts_with("table inet rosguard_mirror\ndelete table inet rosguard_mirror\n"));
        assert!(s.contains("set tls_block_v4 { type ipv4_addr; flags interval; auto-merge; }"));
        assert!(s.contains("set tls_block_v6 { type ipv6_addr;"));
        assert!(s.contains(
            "chain forward {\n    type filter hook forward priority filter - 10; policy accept;\n    ip daddr @tls_block_v4 counter drop\n  }"
        ));
        assert!(s.contains(
            "add element inet rosguard_mirror tls_block_v4 { 198.51.100.0/24, 203.0.113.20 }"
        ));
        assert!(!s.contains("add element inet rosguard_mirror tls_block_v6"));
    }
}
