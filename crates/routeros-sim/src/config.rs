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

/// Failures to inject. Sentence counts are per session and count every sentence the simulator
/// sent on that session (login replies included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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
