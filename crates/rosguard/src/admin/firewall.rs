//! `rosguard firewall`: prints, installs or removes the filter rules that make the block list
//! block (drop rules matching the side `block_target` puts on the list), and the `psd` rules
//! that stage port scanners in `detection.scan.staging_list` for rosguard to promote.
//!
//! Installed rules carry a signature comment, so `--install` is idempotent and `--remove`
//! takes exactly those away. New rules go to the top of the filter table, before any accept
//! rule, in the order printed.

use std::process::ExitCode;

use anyhow::Result;
use rosguard_core::backend::Backend;
use rosguard_core::model::Family;
use rosguard_core::settings::{BlockTarget, Settings};
use routeros_proto::Command;

use super::common::{connect, exit, router_failed};
use crate::config::Config;
use crate::outln;

/// The comment prefix that marks rosguard's firewall rules.
pub const RULE_SIGNATURE: &str = "rosguard-firewall:";

/// What `rosguard firewall` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirewallAction {
    Print,
    Install,
    Remove,
}

/// The `psd` matcher of the staging rules: weight threshold 21 within 3 s, low ports weigh 3,
/// high ports 1 (RouterOS's example values: seven low ports, or 21 high ports).
pub const PSD: &str = "21,3s,3,1";
/// How long a staged scanner stays in the staging list.
pub const STAGING_TIMEOUT: &str = "10m";

/// One filter rule: its attributes in RouterOS order, and its comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterRule {
    pub chain: &'static str,
    pub action: &'static str,
    /// The matchers and action arguments, in order.
    pub attrs: Vec<(&'static str, String)>,
    pub comment: String,
}

impl FilterRule {
    /// The RouterOS CLI line for one family (`ip` or `ipv6`).
    pub fn cli(&self, family: &str) -> String {
        let attrs: Vec<String> = self.attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(
            "/{family} firewall filter add chain={} action={} {} comment=\"{}\" place-before=0",
            self.chain,
            self.action,
            attrs.join(" "),
            self.comment
        )
    }
}

/// The rules for a router's settings: with "dst" the list holds the far end of outgoing
/// connections, so the rules match the *destination* (the original script's README matched
/// the source, which never fires for what the script adds); "src" matches the source;
/// "remote" installs both directions. With a staging list, two `psd` rules stage scanners.
pub fn firewall_rules(list: &str, target: BlockTarget, staging: &str) -> Vec<FilterRule> {
    let drop = |chain: &'static str, matcher: &'static str| FilterRule {
        chain,
        action: "drop",
        attrs: vec![(matcher, list.to_owned())],
        comment: format!("{RULE_SIGNATURE} {chain} drop {matcher}={list}"),
    };
    let mut rules = match target {
        BlockTarget::Dst => vec![
            drop("forward", "dst-address-list"),
            drop("output", "dst-address-list"),
        ],
        BlockTarget::Src => vec![
            drop("forward", "src-address-list"),
            drop("input", "src-address-list"),
        ],
        BlockTarget::Remote => vec![
            drop("forward", "src-address-list"),
            drop("forward", "dst-address-list"),
            drop("input", "src-address-list"),
            drop("output", "dst-address-list"),
        ],
    };
    if !staging.is_empty() {
        for chain in ["input", "forward"] {
            rules.push(FilterRule {
                chain,
                action: "add-src-to-address-list",
                attrs: vec![
                    ("protocol", "tcp".into()),
                    ("psd", PSD.into()),
                    ("address-list", staging.to_owned()),
                    ("address-list-timeout", STAGING_TIMEOUT.into()),
                ],
                comment: format!("{RULE_SIGNATURE} {chain} psd to {staging}"),
            });
        }
    }
    rules
}

fn rules_for(s: &Settings) -> Vec<FilterRule> {
    firewall_rules(
        &s.blocking.address_list,
        s.detection.block_target,
        &s.detection.scan.staging_list,
    )
}

/// `rosguard firewall [--install | --remove]`.
pub async fn firewall(
    cfg: &Config,
    only: Option<&str>,
    action: FirewallAction,
) -> Result<ExitCode> {
    let mut failed = false;
    for router in cfg.select(only)? {
        let rules = rules_for(&router.settings);
        if action == FirewallAction::Print {
            outln!(
                "# router {}: rules that make {} block",
                router.name,
                router.settings.blocking.address_list
            );
            for fam in ["ip", "ipv6"] {
                for r in &rules {
                    outln!("{}", r.cli(fam));
                }
            }
            continue;
        }
        let result = async {
            let mut b = connect(router, cfg.daemon.max_candidates).await?;
            let client = b.client()?.clone();
            let mut lines = Vec::new();
            for fam in Family::BOTH {
                let path = |rest: &str| fam.path(&format!("firewall/filter/{rest}"));
                let print = || Command::new(&path("print")).proplist(&[".id", "comment"]);
                let existing = match client.call(print()).await {
                    Ok(r) => r.rows,
                    Err(e)
                        if fam == Family::V6
                            && e.trap_message()
                                .is_some_and(|m| m.starts_with("no such command")) =>
                    {
                        continue
                    }
                    Err(e) => {
                        return Err(rosguard_routeros::backend_error(
                            e,
                            "reading the firewall filter rules",
                        ))
                    }
                };
                let ours: Vec<(String, String)> = existing
                    .iter()
                    .filter_map(|r| {
                        Some((
                            r.get_str(".id")?.to_owned(),
                            r.get_str("comment")?.to_owned(),
                        ))
                    })
                    .filter(|(_, c)| c.starts_with(RULE_SIGNATURE))
                    .collect();
                let family = if fam == Family::V4 { "IPv4" } else { "IPv6" };
                match action {
                    FirewallAction::Install => {
                        let mut added = 0;
                        // Insert in reverse, each before the current first rule, so they end
                        // up on top in the printed order.
                        for r in rules.iter().rev() {
                            if ours.iter().any(|(_, c)| c == &r.comment) {
                                continue;
                            }
                            let first = client
                                .call(Command::new(&path("print")).proplist(&[".id"]))
                                .await
                                .map_err(|e| {
                                    rosguard_routeros::backend_error(
                                        e,
                                        "reading the firewall filter rules",
                                    )
                                })?
                                .rows
                                .first()
                                .and_then(|row| row.get_str(".id").map(str::to_owned));
                            let mut cmd = Command::new(&path("add"))
                                .attr("chain", r.chain)
                                .attr("action", r.action);
                            for (k, v) in &r.attrs {
                                cmd = cmd.attr(k, v);
                            }
                            cmd = cmd.attr("comment", &r.comment);
                            if let Some(first) = first {
                                cmd = cmd.attr("place-before", first);
                            }
                            client.call(cmd).await.map_err(|e| {
                                rosguard_routeros::backend_error(e, "adding a firewall filter rule")
                            })?;
                            added += 1;
                        }
                        lines.push(format!(
                            "router {} {family}: {added} rules added, {} already installed",
                            router.name,
                            rules.len() - added
                        ));
                    }
                    FirewallAction::Remove => {
                        for (id, _) in &ours {
                            client
                                .call(Command::new(&path("remove")).attr(".id", id))
                                .await
                                .map_err(|e| {
                                    rosguard_routeros::backend_error(
                                        e,
                                        "removing a firewall filter rule",
                                    )
                                })?;
                        }
                        lines.push(format!(
                            "router {} {family}: {} rules removed",
                            router.name,
                            ours.len()
                        ));
                    }
                    FirewallAction::Print => unreachable!("handled above"),
                }
            }
            b.close().await;
            Ok::<_, rosguard_core::BackendError>(lines)
        }
        .await;
        match result {
            Ok(lines) => {
                for l in lines {
                    outln!("{l}");
                }
            }
            Err(e) => router_failed(&mut failed, &router.name, &e),
        }
    }
    Ok(exit(failed))
}
