//! The address family: IPv4 (`/ip/...` menus) or IPv6 (`/ipv6/...` menus).

use std::fmt;
use std::net::IpAddr;

/// The address family of a table, an address or an address list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum Family {
    /// IPv4: `/ip/...` menus.
    V4,
    /// IPv6: `/ipv6/...` menus.
    V6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    /// The family of an address. An IPv4-mapped IPv6 address (`::ffff:1.2.3.4`) is IPv6 here:
    /// callers that want the IPv4 menu for it canonicalise first.
    pub fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// `/ip` or `/ipv6`.
    pub fn prefix(self) -> &'static str {
        match self {
            Family::V4 => "/ip",
            Family::V6 => "/ipv6",
        }
    }

    /// The full path of `rest` under this family, e.g.
    /// `Family::V6.path("firewall/connection/print") == "/ipv6/firewall/connection/print"`.
    pub fn path(self, rest: &str) -> String {
        format!("{}/{}", self.prefix(), rest.trim_start_matches('/'))
    }

    /// `ipv4` or `ipv6`, for log fields and persisted keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_names() {
        assert_eq!(
            Family::V4.path("/firewall/connection/print"),
            "/ip/firewall/connection/print"
        );
        assert_eq!(Family::V6.path("address/print"), "/ipv6/address/print");
        assert_eq!(Family::of("2001:db8::1".parse().unwrap()), Family::V6);
        assert_eq!(Family::of("192.0.2.1".parse().unwrap()), Family::V4);
        assert_eq!(Family::V6.to_string(), "ipv6");
    }
}
