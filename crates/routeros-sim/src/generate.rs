//! A synthetic connection table of any size, derived row by row from (seed, index).
//!
//! Nothing is stored per row: a row is a pure function of the seed, its index and the sim time
//! since boot, so a million-row table costs a few bytes of memory and prints by streaming.
//! Anomalous rows (share `anomaly_share`) look like DPI-frozen TLS or unanswered QUIC
//! (orig > 3, repl <= 2); normal rows never satisfy that predicate, so a test can count the
//! anomalies it should find. It deliberately does not model row churn: the table is steady.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::connection::{ConnRow, FastTrackCounts, Flags, SimProtocol, TcpState};
use crate::kinds::Family;

/// A large synthetic table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerateSpec {
    /// How many rows (IPv4 and IPv6 together).
    pub connections: usize,
    /// Share of anomalous rows, 0.0..=1.0 (default 0.01).
    pub anomaly_share: f64,
    /// Seed; the same seed gives the same table.
    pub seed: u64,
    /// Share of IPv6 rows, 0.0..=1.0.
    pub ipv6_share: f64,
}

impl Default for GenerateSpec {
    fn default() -> Self {
        Self {
            connections: 10_000,
            anomaly_share: 0.01,
            seed: 1,
            ipv6_share: 0.05,
        }
    }
}

/// The most rows the generator makes (ids and counters stay far from overflow).
pub(crate) const MAX_GENERATED: usize = 100_000_000;

/// SplitMix64's finaliser: a fast, well-mixed 64-bit hash.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// First octets of public-looking IPv4 destinations.
const PUBLIC_FIRST_OCTETS: &[u8] = &[
    2, 5, 8, 13, 20, 23, 31, 34, 35, 37, 40, 45, 46, 52, 54, 62, 64, 66, 69, 72, 77, 80, 81, 85,
    87, 91, 93, 94, 95, 104, 108, 128, 130, 138, 142, 146, 151, 157, 162, 176, 178, 185, 188, 193,
    195, 199, 204, 208, 212, 213, 216, 217,
];

impl GenerateSpec {
    /// Checks the shares and the size.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.anomaly_share) {
            return Err(format!(
                "`anomaly_share`: {} is not between 0 and 1",
                self.anomaly_share
            ));
        }
        if !(0.0..=1.0).contains(&self.ipv6_share) {
            return Err(format!(
                "`ipv6_share`: {} is not between 0 and 1",
                self.ipv6_share
            ));
        }
        if self.connections > MAX_GENERATED {
            return Err(format!(
                "`connections`: {} is more than {MAX_GENERATED}",
                self.connections
            ));
        }
        Ok(())
    }

    fn h(&self, idx: u64, lane: u64) -> u64 {
        mix(self.seed.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ mix(idx ^ (lane << 58)))
    }

    /// The family of row `idx`.
    pub(crate) fn family_of(&self, idx: u64) -> Family {
        if unit(self.h(idx, 0)) < self.ipv6_share {
            Family::V6
        } else {
            Family::V4
        }
    }

    /// Whether row `idx` is anomalous.
    pub(crate) fn is_anomalous(&self, idx: u64) -> bool {
        unit(self.h(idx, 1)) < self.anomaly_share
    }

    /// Row `idx` with id `id`, `since_boot` sim time after the router booted.
    pub(crate) fn row(
        &self,
        idx: u64,
        id: u64,
        since_boot: Duration,
        wan: Option<IpAddr>,
    ) -> ConnRow {
        let v6 = self.family_of(idx) == Family::V6;
        let anomalous = self.is_anomalous(idx);
        let r = self.h(idx, 2);
        let rs = self.h(idx, 3);
        let rd = self.h(idx, 4);
        let rc = self.h(idx, 5);
        let pick = r % 100;
        let protocol = if anomalous {
            if pick < 85 {
                SimProtocol::Tcp
            } else {
                SimProtocol::Udp
            }
        } else if pick < 78 {
            SimProtocol::Tcp
        } else if pick < 97 {
            SimProtocol::Udp
        } else if v6 {
            SimProtocol::Icmpv6
        } else {
            SimProtocol::Icmp
        };
        let src = if v6 {
            IpAddr::V6(Ipv6Addr::new(
                0xfd00,
                0x88,
                0,
                0,
                (rs >> 48) as u16 | 1,
                (rs >> 32) as u16,
                (rs >> 16) as u16,
                rs as u16 | 2,
            ))
        } else {
            IpAddr::V4(Ipv4Addr::new(192, 168, 88, 2 + (rs % 250) as u8))
        };
        let dst = if v6 {
            IpAddr::V6(Ipv6Addr::new(
                0x2a00 | (rd & 0xff) as u16,
                (rd >> 8) as u16,
                (rd >> 24) as u16,
                0,
                0,
                0,
                (rd >> 40) as u16,
                (rd >> 52) as u16 | 1,
            ))
        } else {
            let first = PUBLIC_FIRST_OCTETS[(rd % PUBLIC_FIRST_OCTETS.len() as u64) as usize];
            IpAddr::V4(Ipv4Addr::new(
                first,
                (rd >> 8) as u8,
                (rd >> 16) as u8,
                1 + ((rd >> 24) as u8 % 254),
            ))
        };
        let port_pick = (r >> 8) % 100;
        let dst_port = match (protocol, anomalous) {
            (SimProtocol::Tcp, true) => Some(if port_pick < 90 { 443 } else { 8443 }),
            (SimProtocol::Udp, true) => Some(443),
            (SimProtocol::Tcp, false) => Some(match port_pick {
                0..=59 => 443,
                60..=74 => 80,
                75..=77 => 8443,
                78..=79 => 22,
                80..=82 => 993,
                83..=85 => 5228,
                86 => 25,
                _ => 1024 + ((r >> 16) % 50_000) as u16,
            }),
            (SimProtocol::Udp, false) => Some(match port_pick {
                0..=49 => 53,
                50..=74 => 443,
                75..=84 => 123,
                _ => 1024 + ((r >> 16) % 50_000) as u16,
            }),
            _ => None,
        };
        let src_port = dst_port.map(|_| 1024 + ((rs >> 32) % 64_511) as u16);
        let age = (rc % 3600) as f64 + since_boot.as_secs_f64();
        let pps = 0.5 + ((rc >> 12) % 500) as f64 / 10.0;
        let ratio = 0.8 + ((rc >> 24) % 80) as f64 / 100.0;
        let dns = protocol == SimProtocol::Udp && dst_port == Some(53);
        let (orig, repl, active_pps) = if anomalous {
            let rate = 0.2 + ((rc >> 32) % 80) as f64 / 100.0;
            let orig = 4 + (rate * age) as u64;
            let repl = if protocol == SimProtocol::Tcp {
                1 + (rc >> 40) % 2
            } else {
                0
            };
            (orig, repl, rate)
        } else if dns {
            (1, 1, 0.0)
        } else if matches!(protocol, SimProtocol::Icmp | SimProtocol::Icmpv6) {
            let n = 1 + (rc >> 40) % 5;
            (n, n, 0.0)
        } else {
            (3 + (pps * age) as u64, 3 + (pps * ratio * age) as u64, pps)
        };
        let (osz, rsz) = match (protocol, anomalous) {
            (SimProtocol::Tcp, true) => (400, 60),
            (SimProtocol::Udp, true) => (1250, 60),
            (SimProtocol::Tcp, false) => (120, 1200),
            (SimProtocol::Udp, false) => (90, 400),
            _ => (84, 84),
        };
        let tcp_state = (protocol == SimProtocol::Tcp).then_some(TcpState::Established);
        let timeout = match protocol {
            SimProtocol::Tcp => Duration::from_secs(86_400 - (rc >> 48) % 120),
            SimProtocol::Udp if dns || anomalous => Duration::from_secs(10 - (rc >> 48) % 9),
            SimProtocol::Udp => Duration::from_secs(180 - (rc >> 48) % 60),
            _ => Duration::from_secs(10 - (rc >> 48) % 9),
        };
        let mut flags = Flags::CONFIRMED;
        if repl > 0 {
            flags |= Flags::SEEN_REPLY;
            if protocol == SimProtocol::Tcp || orig + repl > 2 {
                flags |= Flags::ASSURED;
            }
        }
        let nat = if v6 { None } else { wan };
        if nat.is_some() {
            flags |= Flags::SRCNAT;
        }
        ConnRow {
            id,
            protocol,
            src,
            src_port,
            dst,
            dst_port,
            reply_src: dst,
            reply_src_port: dst_port,
            reply_dst: nat.unwrap_or(src),
            reply_dst_port: src_port,
            tcp_state,
            timeout,
            orig_packets: orig,
            orig_bytes: orig.saturating_mul(osz),
            repl_packets: repl,
            repl_bytes: repl.saturating_mul(rsz),
            orig_rate: (active_pps * osz as f64 * 8.0) as u64,
            repl_rate: if anomalous {
                0
            } else {
                (active_pps * ratio * rsz as f64 * 8.0) as u64
            },
            flags,
            fasttrack: FastTrackCounts::default(),
            mark: None,
            kind: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_anomalies_match_the_predicate() {
        let spec = GenerateSpec {
            connections: 20_000,
            anomaly_share: 0.05,
            seed: 42,
            ipv6_share: 0.1,
        };
        let mut flagged = 0;
        for idx in 0..spec.connections as u64 {
            let a = spec.row(idx, idx + 1, Duration::from_secs(7), None);
            let b = spec.row(idx, idx + 1, Duration::from_secs(7), None);
            assert_eq!(a, b);
            let predicate = a.orig_packets > 3 && a.repl_packets <= 2;
            assert_eq!(predicate, spec.is_anomalous(idx), "row {idx}: {a:?}");
            flagged += usize::from(predicate);
        }
        let share = flagged as f64 / spec.connections as f64;
        assert!((share - 0.05).abs() < 0.01, "share {share}");
    }

    #[test]
    fn different_seeds_differ() {
        let a = GenerateSpec {
            seed: 1,
            ..GenerateSpec::default()
        };
        let b = GenerateSpec {
            seed: 2,
            ..GenerateSpec::default()
        };
        let d = Duration::ZERO;
        assert!((0..100).any(|i| a.row(i, i, d, None) != b.row(i, i, d, None)));
    }
}
