//! The settings a decision is made under: [`Detection`] (what is suspicious), [`Blocking`]
//! (what is done about it, and the safety caps) and [`Settings`], which adds the per-cycle
//! limits.
//!
//! These are the config file's `[detection]` and `[blocking]` sections as they are written:
//! serde reads them directly (unknown keys are errors, every key has the original script's
//! default), durations are RouterOS durations or a bare number of seconds, and
//! [`Settings::validate`] checks what types alone cannot (ranges, empty lists), naming the key
//! and the fix. A new key is one field here, with its default in the `Default` impl.
//!
//! It deliberately does not read files, know about routers or merge per-router overrides:
//! that is the config layer's job.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::model::{Protocol, TcpState};

/// Which end of a flagged connection is blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockTarget {
    /// The destination (the seed script's behaviour).
    Dst,
    /// The source.
    Src,
    /// The end outside the router's connected networks: the destination of a flow a LAN host
    /// opened (the unresponsive server, as the script), the source of a flow that came in from
    /// outside (a scanner or a flood). When both or neither end is inside, the destination.
    #[default]
    Remote,
}

impl BlockTarget {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BlockTarget::Dst => "dst",
            BlockTarget::Src => "src",
            BlockTarget::Remote => "remote",
        }
    }
}

/// `[detection]`: which connections are suspicious.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Detection {
    /// cfgEnabled: when false, rosguard reads and reports but flags nothing.
    pub enabled: bool,
    /// cfgMonitoredPorts: destination (service) ports; empty = every port, and then port-less
    /// protocols too.
    pub monitored_ports: Vec<u16>,
    /// cfgProtocols.
    pub protocols: Vec<Protocol>,
    /// cfgMinOrigPackets: flag when orig-packets is strictly above this.
    pub min_orig_packets: u64,
    /// cfgMaxReplPackets: ... and repl-packets is at most this.
    pub max_repl_packets: u64,
    /// Which end goes on the list.
    pub block_target: BlockTarget,
    /// Push the protocol and counter filter to the router (re-checked locally either way).
    pub server_filter: bool,
    /// A connection must be flagged in this many polls in a row before it counts.
    pub min_observations: u32,
    /// Distinct flagged connections pointing at one address, within `window`, before it is
    /// blocked.
    pub min_flagged_connections: u32,
    /// The window of `min_flagged_connections`.
    #[serde(with = "duration")]
    pub window: Duration,
    /// `[detection.scan]`: port scans.
    pub scan: Scan,
    /// `[detection.stall]`: flows that froze after carrying data.
    pub stall: Stall,
}

impl Default for Detection {
    fn default() -> Self {
        Self {
            enabled: true,
            monitored_ports: vec![443, 80, 8443],
            protocols: vec![Protocol::Tcp, Protocol::Udp],
            min_orig_packets: 3,
            max_repl_packets: 2,
            block_target: BlockTarget::default(),
            server_filter: true,
            min_observations: 1,
            min_flagged_connections: 1,
            window: Duration::from_secs(60),
            scan: Scan::default(),
            stall: Stall::default(),
        }
    }
}

/// `[detection.stall]`: a TCP flow on a monitored port that stops getting answers after it
/// carried data (a DPI freeze after N kilobytes): its reply counter stands still across polls
/// while the sender retransmits. The asymmetric rule cannot see it, because the replies before
/// the freeze already passed `max_repl_packets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Stall {
    /// Look for stalled flows.
    pub enabled: bool,
    /// Only flows that froze early are watched: at most this many reply packets in all.
    pub max_repl_packets: u64,
    /// Packets sent since the last reply before the flow counts as stalled.
    pub min_orig_growth: u64,
    /// The most flows watched at once; more are left for later cycles (the rest of the
    /// detection is not affected).
    pub max_tracked: usize,
}

impl Default for Stall {
    fn default() -> Self {
        Self {
            enabled: true,
            max_repl_packets: 64,
            min_orig_growth: 4,
            max_tracked: 50_000,
        }
    }
}

/// `[detection.scan]`: one remote address with unanswered TCP connections to many distinct
/// ports or hosts within a window is a scanner; and the router's own `psd` matcher can stage
/// scanners in an address-list that rosguard promotes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scan {
    /// Look for scans in the connection table.
    pub enabled: bool,
    /// Distinct (host, port) pairs a source must have tried, unanswered, within `window`.
    pub min_ports: u32,
    /// How long a tried (host, port) pair counts.
    #[serde(with = "duration")]
    pub window: Duration,
    /// The `tcp-state`s of an unanswered attempt (`syn-sent`: the SYN got no answer, which is
    /// what a filtered port leaves behind).
    pub states: Vec<TcpState>,
    /// The router's staging address-list, filled by the `psd` rule that
    /// `rosguard firewall --install` adds; each cycle its entries go through the same checks
    /// as rosguard's own findings. Empty: off.
    pub staging_list: String,
}

impl Default for Scan {
    fn default() -> Self {
        Self {
            enabled: true,
            min_ports: 20,
            window: Duration::from_secs(60),
            states: vec![TcpState::SynSent],
            staging_list: "rosguard_scan".into(),
        }
    }
}

/// An address or a network never blocked (`blocking.allow`). Host bits in a network are
/// refused: `192.168.88.5/24` is either a typo for the network or for one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AllowNet(pub IpNet);

impl std::str::FromStr for AllowNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Ok(ip) = t.parse::<IpAddr>() {
            return Ok(AllowNet(IpNet::from(ip)));
        }
        let net: IpNet = t.parse().map_err(|_| {
            format!("{s:?} is not an IP address or CIDR (e.g. \"10.0.0.5\", \"192.168.88.0/24\", \"2001:db8::/32\")")
        })?;
        if net.trunc() != net {
            return Err(format!(
                "{s:?} has host bits set; write the network {} or the single address {}",
                net.trunc(),
                net.addr()
            ));
        }
        Ok(AllowNet(net))
    }
}

impl fmt::Display for AllowNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.prefix_len() == self.0.max_prefix_len() {
            write!(f, "{}", self.0.addr())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl Serialize for AllowNet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AllowNet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `[blocking]`: what is done with a finding, and the safety caps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Blocking {
    /// cfgAddressList: the address-list rosguard fills.
    pub address_list: String,
    /// cfgAllowlistName: the router's address-list of addresses never blocked.
    pub allowlist_name: String,
    /// Addresses and networks never blocked, besides the router's allowlist.
    pub allow: Vec<AllowNet>,
    /// cfgBlockTimeout.
    #[serde(with = "duration")]
    pub block_timeout: Duration,
    /// cfgRemoveTCPConn: remove the flagged TCP connection from the router's table.
    pub remove_tcp_conn: bool,
    /// cfgCheckLocalAddr: never block the router's own addresses.
    pub check_local_addr: bool,
    /// Allow blocking addresses inside the router's connected networks (a deliberate
    /// quarantine of LAN hosts, usually with `block_target = "src"`). Off: a LAN host can never
    /// be blocked, whatever an outsider sends at it.
    pub block_lan_hosts: bool,
    /// Decide and report, change nothing on the router.
    pub dry_run: bool,
    /// How long an operator's unblock holds: `rosguard unblock` without `--for`, and an entry
    /// removed on the router by hand, are not blocked again before this has passed.
    #[serde(with = "duration")]
    pub unblock_hold: Duration,
    /// Each new block of an address blocked before multiplies the timeout by this (1 = off).
    pub escalation_factor: f64,
    /// The longest escalated timeout.
    #[serde(with = "duration")]
    pub max_block_timeout: Duration,
    /// Earlier blocks older than this no longer escalate.
    #[serde(with = "duration")]
    pub forget_after: Duration,
    /// Blocks that took effect per router per hour; 0 = no cap.
    pub max_blocks_per_hour: u32,
    /// Entries in the block list per router; 0 = no cap.
    pub max_list_size: u32,
    /// Block nothing in a cycle where more than this share of the table is flagged (1 = off).
    pub panic_ratio: f64,
}

impl Default for Blocking {
    fn default() -> Self {
        Self {
            address_list: "tls_block".into(),
            allowlist_name: "allowlist".into(),
            allow: Vec::new(),
            block_timeout: Duration::from_secs(86_400),
            remove_tcp_conn: true,
            check_local_addr: true,
            block_lan_hosts: false,
            dry_run: false,
            unblock_hold: Duration::from_secs(7 * 86_400),
            escalation_factor: 1.0,
            max_block_timeout: Duration::from_secs(28 * 86_400),
            forget_after: Duration::from_secs(30 * 86_400),
            max_blocks_per_hour: 1000,
            max_list_size: 30_000,
            panic_ratio: 0.5,
        }
    }
}

/// Everything one router's decisions are made under.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Settings {
    /// `[detection]`, with the router's overrides.
    pub detection: Detection,
    /// `[blocking]`, with the router's overrides.
    pub blocking: Blocking,
    /// Limits of one cycle.
    pub cycle: CycleLimits,
}

/// What one cycle may act on and how often blocks are reconciled (`[daemon]` keys).
#[derive(Debug, Clone, PartialEq)]
pub struct CycleLimits {
    /// cfgMaxConnPerCycle: flagged connections acted on per cycle.
    pub max_conn_per_cycle: usize,
    /// How often blocks that should still stand are checked and restored.
    pub reconcile_interval: Duration,
    /// The pause between cycles: a persisted streak older than three of these is broken.
    pub loop_delay: Duration,
}

impl Default for CycleLimits {
    fn default() -> Self {
        Self {
            max_conn_per_cycle: 50,
            reconcile_interval: Duration::from_secs(300),
            loop_delay: Duration::from_secs(2),
        }
    }
}

/// A setting that is not usable: the key (relative to its section) and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SettingError {
    /// The key, e.g. `detection.protocols`.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

fn bad(key: &str, message: impl Into<String>) -> SettingError {
    SettingError {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// An address-list name RouterOS will take.
fn list_name_ok(s: &str) -> bool {
    !s.trim().is_empty() && s.len() <= 255 && !s.chars().any(char::is_control)
}

impl Detection {
    /// Checks what the types cannot; `at` prefixes the key (`detection`, or
    /// `router "core".detection`).
    pub fn validate(&self, at: &str) -> Result<(), SettingError> {
        let key = |k: &str| format!("{at}.{k}");
        if self.monitored_ports.contains(&0) {
            return Err(bad(
                &key("monitored_ports"),
                "0 is not a port; use numbers from 1 to 65535 (an empty list monitors every port)",
            ));
        }
        if self.protocols.is_empty() {
            return Err(bad(&key("protocols"), "the list is empty, so nothing would ever be flagged; name at least one, e.g. [\"tcp\", \"udp\"]"));
        }
        for (k, v) in [
            ("min_observations", self.min_observations),
            ("min_flagged_connections", self.min_flagged_connections),
        ] {
            if v == 0 {
                return Err(bad(
                    &key(k),
                    "must be at least 1 (1 = the script's behaviour: act at once)",
                ));
            }
        }
        if self.window < Duration::from_secs(1) {
            return Err(bad(&key("window"), "is too short; use at least 1s"));
        }
        let s = &self.scan;
        if s.min_ports < 2 {
            return Err(bad(
                &key("scan.min_ports"),
                "must be at least 2 (one unanswered port is not a scan); e.g. 20",
            ));
        }
        if s.window < Duration::from_secs(1) {
            return Err(bad(&key("scan.window"), "is too short; use at least 1s"));
        }
        if s.enabled && s.states.is_empty() {
            return Err(bad(&key("scan.states"), "is empty, so no attempt would count; e.g. [\"syn-sent\"], or set scan.enabled = false"));
        }
        if s.states.contains(&TcpState::Other) {
            return Err(bad(&key("scan.states"), "names an unknown tcp-state; use syn-sent, syn-recv, established, fin-wait, close-wait, last-ack, time-wait, close or listen"));
        }
        if self.stall.min_orig_growth == 0 {
            return Err(bad(
                &key("stall.min_orig_growth"),
                "must be at least 1 (packets sent without a reply); e.g. 4",
            ));
        }
        if self.stall.max_tracked == 0 {
            return Err(bad(
                &key("stall.max_tracked"),
                "must be at least 1, or set stall.enabled = false",
            ));
        }
        if !s.staging_list.is_empty() && !list_name_ok(&s.staging_list) {
            return Err(bad(
                &key("scan.staging_list"),
                "is not a usable address-list name; use a short name such as \"rosguard_scan\", or \"\" for none",
            ));
        }
        Ok(())
    }
}

impl Blocking {
    /// Checks what the types cannot; `at` prefixes the key.
    pub fn validate(&self, at: &str) -> Result<(), SettingError> {
        let key = |k: &str| format!("{at}.{k}");
        for (k, v, default) in [
            ("address_list", &self.address_list, "tls_block"),
            ("allowlist_name", &self.allowlist_name, "allowlist"),
        ] {
            if !list_name_ok(v) {
                return Err(bad(
                    &key(k),
                    format!("{v:?} is not a usable address-list name; use a short name such as \"{default}\""),
                ));
            }
        }
        if self.address_list == self.allowlist_name {
            return Err(bad(
                &key("address_list"),
                format!("is the same list as allowlist_name ({:?}): offenders would be added to the allowlist; give the block list its own name, e.g. \"tls_block\"", self.address_list),
            ));
        }
        if self.block_timeout < Duration::from_secs(1) {
            return Err(bad(
                &key("block_timeout"),
                "is shorter than one second; use e.g. \"1d\", \"12h\" or \"30m\"",
            ));
        }
        if !(self.escalation_factor.is_finite() && (1.0..=100.0).contains(&self.escalation_factor))
        {
            return Err(bad(
                &key("escalation_factor"),
                format!(
                    "{} must be between 1 (off) and 100, e.g. 2 doubles each repeat block",
                    self.escalation_factor
                ),
            ));
        }
        if self.max_block_timeout < Duration::from_secs(1) {
            return Err(bad(
                &key("max_block_timeout"),
                "is too short; use at least 1s",
            ));
        }
        if self.forget_after < Duration::from_secs(60) {
            return Err(bad(&key("forget_after"), "is too short; use at least 1m"));
        }
        if !(self.panic_ratio > 0.0 && self.panic_ratio <= 1.0) {
            return Err(bad(
                &key("panic_ratio"),
                format!(
                    "{} must be above 0 and at most 1 (1 turns the brake off)",
                    self.panic_ratio
                ),
            ));
        }
        Ok(())
    }
}

/// Serde for durations: a RouterOS duration string (`"1d"`, `"1h30m"`, `"00:05:00"`) or a bare
/// number of seconds (`5`, `1.5`), as RouterOS itself accepts; written back as a string.
pub mod duration {
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    /// Writes `d` as a RouterOS duration (`1d`, `2s`).
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&routeros_types::format_duration(*d))
    }

    /// Reads a duration string or a number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration such as \"30s\", \"5m\", \"1d\" or a number of seconds")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            routeros_types::parse_duration(v).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v).map(Duration::from_secs).map_err(|_| {
                E::custom(format!(
                    "{v} is negative; use a number of seconds of 0 or more"
                ))
            })
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            Duration::try_from_secs_f64(v)
                .map_err(|_| E::custom(format!("{v} is not a usable number of seconds")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct D {
        #[serde(with = "duration")]
        d: Duration,
    }

    fn dur(v: serde_json::Value) -> Result<Duration, String> {
        serde_json::from_value::<D>(serde_json::json!({ "d": v }))
            .map(|d| d.d)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn durations_are_routeros_strings_or_seconds() {
        assert_eq!(dur("1d".into()).unwrap(), Duration::from_secs(86_400));
        assert_eq!(dur("00:05:00".into()).unwrap(), Duration::from_secs(300));
        assert_eq!(dur(5.into()).unwrap(), Duration::from_secs(5));
        assert_eq!(dur(1.5.into()).unwrap(), Duration::from_millis(1500));
        assert!(dur((-5).into()).unwrap_err().contains("negative"));
        assert!(dur("soon".into()).is_err());
        assert!(dur(true.into()).is_err());
    }

    #[test]
    fn defaults_are_the_scripts_and_validate() {
        let d = Detection::default();
        assert_eq!(d.monitored_ports, [443, 80, 8443]);
        assert_eq!((d.min_orig_packets, d.max_repl_packets), (3, 2));
        assert_eq!(d.block_target, BlockTarget::Remote);
        d.validate("detection").unwrap();
        let b = Blocking::default();
        assert_eq!(b.address_list, "tls_block");
        assert_eq!(b.block_timeout, Duration::from_secs(86_400));
        assert!(!b.block_lan_hosts);
        b.validate("blocking").unwrap();
    }

    #[test]
    fn validation_names_the_key() {
        let b = Blocking {
            allowlist_name: "tls_block".into(),
            ..Blocking::default()
        };
        let e = b.validate("blocking").unwrap_err();
        assert_eq!(e.key, "blocking.address_list");
        assert!(e.message.contains("allowlist"), "{e}");
        let d = Detection {
            protocols: vec![],
            ..Detection::default()
        };
        assert_eq!(
            d.validate("router \"x\".detection").unwrap_err().key,
            "router \"x\".detection.protocols"
        );
        for bad in [
            Detection {
                monitored_ports: vec![0],
                ..Detection::default()
            },
            Detection {
                min_observations: 0,
                ..Detection::default()
            },
            Detection {
                window: Duration::ZERO,
                ..Detection::default()
            },
            Detection {
                scan: Scan {
                    min_ports: 1,
                    ..Scan::default()
                },
                ..Detection::default()
            },
            Detection {
                scan: Scan {
                    states: vec![TcpState::Other],
                    ..Scan::default()
                },
                ..Detection::default()
            },
        ] {
            assert!(bad.validate("d").is_err(), "{bad:?}");
        }
        for bad in [
            Blocking {
                panic_ratio: 0.0,
                ..Blocking::default()
            },
            Blocking {
                escalation_factor: 0.5,
                ..Blocking::default()
            },
            Blocking {
                block_timeout: Duration::ZERO,
                ..Blocking::default()
            },
            Blocking {
                address_list: " ".into(),
                ..Blocking::default()
            },
            Blocking {
                forget_after: Duration::from_secs(5),
                ..Blocking::default()
            },
        ] {
            assert!(bad.validate("b").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn allow_entries_refuse_host_bits() {
        assert_eq!(
            "192.168.88.0/24".parse::<AllowNet>().unwrap().to_string(),
            "192.168.88.0/24"
        );
        assert_eq!(
            "10.0.0.5".parse::<AllowNet>().unwrap().to_string(),
            "10.0.0.5"
        );
        let e = "192.168.88.5/24".parse::<AllowNet>().unwrap_err();
        assert!(
            e.contains("192.168.88.0/24") && e.contains("192.168.88.5"),
            "{e}"
        );
        assert!("nonsense".parse::<AllowNet>().is_err());
        assert!("2001:db8::1/32".parse::<AllowNet>().is_err());
    }
}
