//! The simulator's configuration: users, wire-format variants, TLS, traffic, faults, clock.
//!
//! Plain data with defaults that match a fresh RouterOS 7.24 CHR with the default
//! configuration (user `admin` with an empty password, LAN 192.168.88.1/24 on `bridge`).
//! It deliberately holds no behaviour: the server reads it once at start, except [`Faults`],
//! which a running simulator can swap with `SimHandle::set_faults`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use routeros_proto::Limits;

use crate::generate::GenerateSpec;
use crate::kinds::{AddressFormat, FastTrackCounters, QueryCompare, SimClock};
use crate::scenario::Scenario;

/// API-SSL: serve TLS instead of plain TCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimTls {
    /// A fresh self-signed certificate for `localhost`, `127.0.0.1` and `::1`; its DER and
    /// fingerprint are available from `SimHandle::tls_cert_der`.
    GeneratedSelfSigned,
    /// PEM files: a certificate chain and its private key.
    Files {
        /// The certificate chain (PEM).
        cert: PathBuf,
        /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
}

/// The command paths a fault applies to: a path matches when one of the prefixes is a
/// leading run of its segments (`/ip/route` matches `/ip/route/print`, not `/ip/routes`;
/// `/` matches everything). The leading `/` may be left out. Empty: nothing matches.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathMatch {
    prefixes: Vec<String>,
}

impl PathMatch {
    /// Matches nothing (the default).
    pub fn none() -> Self {
        Self::default()
    }

    /// Matches every command.
    pub fn all() -> Self {
        Self::prefixes(["/"])
    }

    /// Matches the commands under any of these prefixes.
    pub fn prefixes<S: Into<String>>(prefixes: impl IntoIterator<Item = S>) -> Self {
        Self {
            prefixes: prefixes.into_iter().map(Into::into).collect(),
        }
    }

    /// Whether nothing matches.
    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// Whether `path` (e.g. `/ip/route/print`) is under one of the prefixes.
    pub fn matches(&self, path: &str) -> bool {
        let segments = |p: &str| -> Vec<String> {
            p.split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let path = segments(path);
        self.prefixes.iter().any(|p| {
            let prefix = segments(p);
            path.len() >= prefix.len() && path[..prefix.len()] == prefix[..]
        })
    }
}

/// Prints that send one row every `every`, then `!done` after `rows` rows, or never.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trickle {
    /// The prints it applies to.
    pub paths: PathMatch,
    /// The pause before each row (tokio time: a test with a paused clock drives it).
    pub every: Duration,
    /// `!done` after this many rows (valid synthetic rows follow the table's own when it has
    /// fewer); `None`: rows keep coming and `!done` never does.
    pub rows: Option<u64>,
}

/// Commands read but never answered; the connection stays open.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Silent {
    /// Every command from this one on (counted per session from 1, `/login` included).
    pub from_command: Option<u64>,
    /// Every command on these paths.
    pub paths: PathMatch,
}

impl Silent {
    fn is_off(&self) -> bool {
        self.from_command.is_none() && self.paths.is_empty()
    }
}

/// What a wrong-tag fault puts on the replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrongTag {
    /// A tag the command did not ask for (also on untagged commands).
    Other,
    /// No tag at all.
    Missing,
}

/// Replies with the wrong `.tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrongTags {
    /// The commands it applies to.
    pub paths: PathMatch,
    /// What their replies carry instead of the command's tag.
    pub tag: WrongTag,
}

/// What is wrong with an injected row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRowKind {
    /// `orig-packets=abc` (a counter that is no number).
    UnparseableCounter,
    /// The row has no `.id`.
    MissingId,
}

/// A print that injects one bad row after `after` good ones, then goes on normally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    /// The prints it applies to (e.g. `/ip/firewall/connection/print`).
    pub paths: PathMatch,
    /// Good rows before the bad one (a print with fewer rows gets none).
    pub after: u64,
    /// What is wrong with it.
    pub kind: BadRowKind,
}

/// Failures to inject. Sentence counts are per session and count every sentence the simulator
/// sent on that session (login replies included). Every fault can be swapped at runtime with
/// `SimHandle::set_faults` (it applies from the next command, or the next sentence for the
/// sentence-count faults).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Faults {
    /// Wait this long (real time) before answering each command.
    pub reply_delay: Option<Duration>,
    /// After this many sentences, close the socket instead of sending the next one.
    pub close_after_sentences: Option<u64>,
    /// After this many sentences, send `!fatal` (reason `simulated failure`) and close.
    pub fatal_after_sentences: Option<u64>,
    /// After this many sentences, send bytes that are no valid sentence (a reserved control
    /// byte), then stay silent until the client closes.
    pub garbage_after_sentences: Option<u64>,
    /// After this many sentences, send a length prefix announcing a 4 GiB word, then stay
    /// silent until the client closes.
    pub oversized_prefix_after_sentences: Option<u64>,
    /// Answer every `/login` with `!trap =message=invalid user name or password (6)`.
    pub refuse_logins: bool,
    /// Leave `total-entries` out of `/ip/firewall/connection/tracking` (a router that does
    /// not report it), so a client has to count the table itself.
    pub hide_tracking_totals: bool,
    /// Prints on these paths never end: after the table's own rows, valid synthetic rows of
    /// the same menu follow forever (with TCP backpressure; `/cancel` stops them) and `!done`
    /// never comes.
    pub endless: PathMatch,
    /// Prints that trickle out one row at a time.
    pub trickle: Option<Trickle>,
    /// Commands read but never answered.
    pub silent: Silent,
    /// Replies with a `.tag` the command did not ask for, or none.
    pub wrong_tags: Option<WrongTags>,
    /// Commands on these paths answer `!trap =message=not enough permissions (9)` then
    /// `!done` and change nothing (a user whose group lacks the policy; fix it by clearing
    /// the path at runtime).
    pub permission_denied: PathMatch,
    /// A print that injects an unparseable row mid-stream.
    pub bad_row: Option<BadRow>,
    /// `remove` commands on these paths find their connections already gone (timed out
    /// between the client's print and its remove): they answer `no such item (4)`.
    pub vanishing: PathMatch,
}

impl Faults {
    /// Whether any fault that acts on sentence counts is set (checked on every sentence).
    pub(crate) fn counts_sentences(&self) -> bool {
        self.close_after_sentences.is_some()
            || self.fatal_after_sentences.is_some()
            || self.garbage_after_sentences.is_some()
            || self.oversized_prefix_after_sentences.is_some()
    }

    /// Whether command number `n` of a session, on `path`, goes unanswered.
    pub(crate) fn silences(&self, n: u64, path: &str) -> bool {
        !self.silent.is_off()
            && (self.silent.from_command.is_some_and(|from| n >= from)
                || self.silent.paths.matches(path))
    }
}

/// One address of the router itself (`/ip/address`, `/ipv6/address`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterAddress {
    /// The address.
    pub address: IpAddr,
    /// The prefix length (`/24`).
    pub prefix: u8,
    /// The interface it sits on (`bridge`, `ether1`).
    pub interface: String,
    /// Shown as `dynamic=true` (e.g. a DHCP-client address).
    pub dynamic: bool,
}

impl RouterAddress {
    /// An address on an interface.
    pub fn new(address: IpAddr, prefix: u8, interface: &str) -> Self {
        Self {
            address,
            prefix,
            interface: interface.to_owned(),
            dynamic: false,
        }
    }

    /// The defaults: LAN `192.168.88.1/24` on `bridge`, WAN `198.51.100.2/24` on `ether1`,
    /// and `fd00:88::1/64` on `bridge`.
    pub fn defaults() -> Vec<RouterAddress> {
        vec![
            RouterAddress::new(IpAddr::from([192, 168, 88, 1]), 24, "bridge"),
            RouterAddress::new(IpAddr::from([198, 51, 100, 2]), 24, "ether1"),
            RouterAddress::new(
                IpAddr::from([0xfd00, 0x88, 0, 0, 0, 0, 0, 1u16]),
                64,
                "bridge",
            ),
        ]
    }
}

/// Everything the simulator needs to start.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Users as (name, password); default `[("admin", "")]`.
    pub users: Vec<(String, String)>,
    /// How connection rows show ports.
    pub address_format: AddressFormat,
    /// How queries compare values.
    pub query_compare: QueryCompare,
    /// Whether rows without FastTrack show the FastTrack counters (as `0`) or lack them.
    pub fasttrack_counters: FastTrackCounters,
    /// `true`: an empty print answers `!empty` then `!done` (RouterOS 7.18+);
    /// `false`: only `!done` (7.17 and older).
    pub empty_replies: bool,
    /// Pre-6.43 login: every `/login` without `=response=` gets `!done =ret=<challenge>`, and
    /// only the MD5 response logs in.
    pub legacy_login: bool,
    /// Serve API-SSL instead of plain API.
    pub tls: Option<SimTls>,
    /// Traffic played over time, plus allowlist seeds.
    pub scenario: Option<Scenario>,
    /// A large synthetic table (overrides a scenario's own `[generate]`).
    pub generate: Option<GenerateSpec>,
    /// Failures to inject.
    pub faults: Faults,
    /// At most this many logged-in-or-not sessions at once; the next one gets
    /// `!fatal too many sessions` and is closed.
    pub max_sessions: Option<usize>,
    /// The router's own addresses.
    pub router_addresses: Vec<RouterAddress>,
    /// Real or manual time.
    pub clock: SimClock,
    /// Per-session caps on what a client may send (word length, words per sentence).
    pub limits: Limits,
    /// `/system/resource` `version`.
    pub version: String,
    /// The address `/user/active` shows for every API session instead of the real peer (the
    /// client reaches the router through NAT). `None`: the peer's address, or the
    /// scenario's `[router] session_address`.
    pub session_address: Option<IpAddr>,
    /// The gateway of the IPv4 default route (`/ip/route` `0.0.0.0/0`). `None`: the
    /// scenario's, else `.1` of the WAN address's /24.
    pub ipv4_gateway: Option<Ipv4Addr>,
    /// The gateway of the IPv6 default route (`/ipv6/route` `::/0`; a link-local gateway is
    /// shown with the WAN interface, `fe80::1%ether1`). `None`: the scenario's, else
    /// `fe80::1`.
    pub ipv6_gateway: Option<Ipv6Addr>,
    /// Static DNS servers (`/ip/dns` `servers`). `None`: the scenario's, else
    /// `1.1.1.1,9.9.9.9`.
    pub dns_servers: Option<Vec<IpAddr>>,
    /// Dynamic DNS servers, as learnt by a DHCP client or PPP (`/ip/dns` `dynamic-servers`).
    /// `None`: the scenario's, else none.
    pub dynamic_dns_servers: Option<Vec<IpAddr>>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            users: vec![("admin".into(), String::new())],
            address_format: AddressFormat::default(),
            query_compare: QueryCompare::default(),
            fasttrack_counters: FastTrackCounters::default(),
            empty_replies: true,
            legacy_login: false,
            tls: None,
            scenario: None,
            generate: None,
            faults: Faults::default(),
            max_sessions: None,
            router_addresses: RouterAddress::defaults(),
            clock: SimClock::default(),
            limits: Limits {
                max_word_len: 1024 * 1024,
                max_words: 1024,
            },
            version: "7.24 (stable)".into(),
            session_address: None,
            ipv4_gateway: None,
            ipv6_gateway: None,
            dns_servers: None,
            dynamic_dns_servers: None,
        }
    }
}
