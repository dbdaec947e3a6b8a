//! Addresses that are never a host on the internet and must never go on a block list: the
//! unspecified and broadcast addresses, loopback, multicast and link-local, in both families
//! (an IPv4-mapped IPv6 address counts as the IPv4 address it is).
//!
//! It deliberately holds only the fixed IANA ranges; the router's own networks and the
//! operator's lists are [`policy`](crate::policy)'s.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Why an address is special.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Special {
    /// `0.0.0.0/8` or `::`.
    Unspecified,
    /// `255.255.255.255`.
    Broadcast,
    /// `127.0.0.0/8` or `::1`.
    Loopback,
    /// `224.0.0.0/4` or `ff00::/8`.
    Multicast,
    /// `169.254.0.0/16` or `fe80::/10`.
    LinkLocal,
}

impl Special {
    /// What the address is, if it is special.
    pub fn of(addr: IpAddr) -> Option<Special> {
        match addr.to_canonical() {
            IpAddr::V4(a) => {
                if a.octets()[0] == 0 {
                    Some(Special::Unspecified)
                } else if a.is_broadcast() {
                    Some(Special::Broadcast)
                } else if a.is_loopback() {
                    Some(Special::Loopback)
                } else if a.is_multicast() {
                    Some(Special::Multicast)
                } else if a.is_link_local() {
                    Some(Special::LinkLocal)
                } else {
                    None
                }
            }
            IpAddr::V6(a) => {
                if a.is_unspecified() {
                    Some(Special::Unspecified)
                } else if a.is_loopback() {
                    Some(Special::Loopback)
                } else if a.is_multicast() {
                    Some(Special::Multicast)
                } else if a.segments()[0] & 0xffc0 == 0xfe80 {
                    Some(Special::LinkLocal)
                } else {
                    None
                }
            }
        }
    }
}

impl fmt::Display for Special {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Special::Unspecified => "the unspecified address",
            Special::Broadcast => "the broadcast address",
            Special::Loopback => "a loopback address",
            Special::Multicast => "a multicast address",
            Special::LinkLocal => "a link-local address",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_special_range_and_nothing_else() {
        let of = |s: &str| Special::of(s.parse().unwrap());
        for (a, k) in [
            ("0.0.0.0", Special::Unspecified),
            ("0.1.2.3", Special::Unspecified),
            ("::", Special::Unspecified),
            ("255.255.255.255", Special::Broadcast),
            ("127.0.0.1", Special::Loopback),
            ("127.9.9.9", Special::Loopback),
            ("::1", Special::Loopback),
            ("::ffff:127.0.0.1", Special::Loopback),
            ("224.0.0.251", Special::Multicast),
            ("239.255.255.250", Special::Multicast),
            ("ff02::1", Special::Multicast),
            ("169.254.1.1", Special::LinkLocal),
            ("fe80::1", Special::LinkLocal),
            ("febf::1", Special::LinkLocal),
            ("::ffff:169.254.1.1", Special::LinkLocal),
        ] {
            assert_eq!(of(a), Some(k), "{a}");
        }
        for a in [
            "1.1.1.1",
            "203.0.113.45",
            "192.168.88.1",
            "223.255.255.255",
            "240.0.0.1",
            "255.255.255.254",
            "2001:db8::1",
            "fec0::1",
            "fd00::1",
            "::ffff:203.0.113.1",
        ] {
            assert_eq!(of(a), None, "{a}");
        }
    }
}
