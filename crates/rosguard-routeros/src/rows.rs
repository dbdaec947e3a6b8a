//! RouterOS reply rows into rosguard's checked domain types: a `!re` row of the connection
//! tables becomes a [`Connection`], a row of an address-list a [`ListEntry`].
//!
//! Parse, then trust: each attribute is read once; both address formats of the connection
//! table (`src-address=1.2.3.4:80`, and `src-address=1.2.3.4` + `src-port=80`) are accepted per
//! row; FastTrack's counters are read when present. A row that cannot be read is a
//! [`RowError`]: the caller logs it and skips the row, the cycle goes on.
//!
//! It deliberately decides nothing and does no IO: it reads [`Reply`] values someone else
//! decoded.

use std::net::IpAddr;

use rosguard_core::model::{
    parse_decimal, parse_host_port, parse_port, ConnId, Connection, Endpoint, Family, ListEntry,
    Protocol, TcpState,
};
use routeros_proto::{parse_duration, Reply};

use crate::error::RowError;

/// The properties [`connection`] reads; send them as `.proplist`.
pub const CONNECTION_PROPLIST: &[&str] = &[
    ".id",
    "protocol",
    "src-address",
    "dst-address",
    "src-port",
    "dst-port",
    "orig-packets",
    "repl-packets",
    "orig-bytes",
    "repl-bytes",
    "orig-fasttrack-packets",
    "repl-fasttrack-packets",
    "tcp-state",
];

/// The properties [`list_entry`] reads; send them as `.proplist`.
pub const LIST_ENTRY_PROPLIST: &[&str] = &[
    ".id", "list", "address", "timeout", "dynamic", "disabled", "comment",
];

/// Builds a connection from one `!re` row of the `family` connection table.
///
/// Accepts the port attached to the address (`192.168.2.248:32815`, `[2001:db8::1]:443`) and
/// separate `src-port`/`dst-port` properties (which win when both are present). Missing
/// counters are `None`; a missing or garbled `.id`, `protocol` or address, or a garbled port
/// or counter, is an error. An unknown `tcp-state` is [`TcpState::Other`].
pub fn connection(reply: &Reply, family: Family) -> Result<Connection, RowError> {
    let mut id = None;
    let mut protocol = None;
    let mut src = None;
    let mut dst = None;
    let mut src_port = None;
    let mut dst_port = None;
    let mut orig_packets = None;
    let mut repl_packets = None;
    let mut orig_bytes = None;
    let mut repl_bytes = None;
    let mut orig_fasttrack_packets = None;
    let mut repl_fasttrack_packets = None;
    let mut tcp_state = None;
    for attr in reply.attrs() {
        let v = attr.value;
        match attr.name {
            ".id" => id = Some(v),
            "protocol" => protocol = Some(v),
            "src-address" => src = Some(v),
            "dst-address" => dst = Some(v),
            "src-port" => src_port = Some(v),
            "dst-port" => dst_port = Some(v),
            "orig-packets" => orig_packets = Some(counter("orig-packets", v)?),
            "repl-packets" => repl_packets = Some(counter("repl-packets", v)?),
            "orig-bytes" => orig_bytes = Some(counter("orig-bytes", v)?),
            "repl-bytes" => repl_bytes = Some(counter("repl-bytes", v)?),
            "orig-fasttrack-packets" => {
                orig_fasttrack_packets = Some(counter("orig-fasttrack-packets", v)?)
            }
            "repl-fasttrack-packets" => {
                repl_fasttrack_packets = Some(counter("repl-fasttrack-packets", v)?)
            }
            "tcp-state" if !v.is_empty() => tcp_state = Some(TcpState::from_wire(v)),
            _ => {}
        }
    }
    let id = check_id(id.ok_or(RowError::Missing { field: ".id" })?)?;
    let protocol_raw = protocol.ok_or(RowError::Missing { field: "protocol" })?;
    let protocol = Protocol::from_wire(protocol_raw)
        .ok_or_else(|| RowError::invalid("protocol", protocol_raw))?;
    let src = endpoint("src-address", src, "src-port", src_port)?;
    let dst = endpoint("dst-address", dst, "dst-port", dst_port)?;
    Ok(Connection {
        id: ConnId::new(id),
        family,
        protocol,
        src,
        dst,
        orig_packets,
        repl_packets,
        orig_bytes,
        repl_bytes,
        orig_fasttrack_packets,
        repl_fasttrack_packets,
        tcp_state,
    })
}

/// Builds an entry from one `!re` row of an address-list.
///
/// `.id`, `list` and `address` are required. The rest is read leniently, because these rows
/// feed allowlists and a strict reader would drop an allowlisted address over a cosmetic
/// field: an unreadable `timeout` counts as absent, an unreadable flag as `false`. Control
/// characters in a comment are replaced, so a comment can never drive a terminal.
pub fn list_entry(reply: &Reply) -> Result<ListEntry, RowError> {
    let mut id = None;
    let mut list = None;
    let mut address = None;
    let mut timeout = None;
    let mut dynamic = false;
    let mut disabled = false;
    let mut comment = None;
    for attr in reply.attrs() {
        let v = attr.value;
        match attr.name {
            ".id" => id = Some(v),
            "list" => list = Some(v),
            "address" => address = Some(v),
            "timeout" => {
                timeout = std::str::from_utf8(v)
                    .ok()
                    .filter(|t| !t.is_empty())
                    .and_then(|t| parse_duration(t).ok())
            }
            "dynamic" => dynamic = v == b"true" || v == b"yes",
            "disabled" => disabled = v == b"true" || v == b"yes",
            "comment" if !v.is_empty() => comment = Some(printable(v)),
            _ => {}
        }
    }
    let id = check_id(id.ok_or(RowError::Missing { field: ".id" })?)?;
    let list_raw = list.ok_or(RowError::Missing { field: "list" })?;
    let list = std::str::from_utf8(list_raw)
        .ok()
        .filter(|l| !l.chars().any(char::is_control))
        .ok_or_else(|| RowError::invalid("list", list_raw))?
        .to_owned();
    let addr_raw = address.ok_or(RowError::Missing { field: "address" })?;
    let address = std::str::from_utf8(addr_raw)
        .ok()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| RowError::invalid("address", addr_raw))?;
    Ok(ListEntry {
        id,
        list,
        address,
        timeout,
        dynamic,
        disabled,
        comment,
    })
}

/// Text with every control character replaced by U+FFFD.
fn printable(v: &[u8]) -> String {
    String::from_utf8_lossy(v)
        .chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

/// A RouterOS `.id`: `*` and up to 16 hex digits. Anything else (a comma in particular, which
/// `remove` would read as a list) is refused.
pub fn check_id(v: &[u8]) -> Result<String, RowError> {
    match v.split_first() {
        Some((b'*', hex))
            if (1..=16).contains(&hex.len()) && hex.iter().all(u8::is_ascii_hexdigit) =>
        {
            // All ASCII, checked above.
            Ok(String::from_utf8_lossy(v).into_owned())
        }
        _ => Err(RowError::invalid(".id", v)),
    }
}

fn counter(field: &'static str, v: &[u8]) -> Result<u64, RowError> {
    parse_decimal(v).ok_or_else(|| RowError::invalid(field, v))
}

fn endpoint(
    addr_field: &'static str,
    addr: Option<&[u8]>,
    port_field: &'static str,
    port: Option<&[u8]>,
) -> Result<Endpoint, RowError> {
    let raw = addr.ok_or(RowError::Missing { field: addr_field })?;
    let (addr, attached): (IpAddr, Option<u16>) =
        parse_host_port(raw).ok_or_else(|| RowError::invalid(addr_field, raw))?;
    let port = match port {
        // An empty separate port (port-less protocols) means "no port".
        Some(p) if !p.is_empty() => {
            Some(parse_port(p).ok_or_else(|| RowError::invalid(port_field, p))?)
        }
        _ => attached,
    };
    Ok(Endpoint { addr, port })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use routeros_proto::Sentence;
    use std::time::Duration;

    use ipnet::IpNet;
    use rosguard_core::model::ListAddress;

    fn reply(words: &[&str]) -> Reply {
        Reply::parse(Sentence::from_words(
            std::iter::once("!re").chain(words.iter().copied()),
        ))
        .unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn fasttrack_counters_and_hostile_text() {
        let c = connection(
            &reply(&[
                "=.id=*2",
                "=protocol=tcp",
                "=src-address=192.168.88.10:40000",
                "=dst-address=203.0.113.9:443",
                "=orig-packets=3",
                "=repl-packets=2",
                "=orig-fasttrack-packets=900",
                "=repl-fasttrack-packets=870",
                "=tcp-state=\x1b[2Jestablished",
            ]),
            Family::V4,
        )
        .unwrap();
        assert_eq!((c.orig_total(), c.repl_total()), (Some(903), Some(872)));
        assert_eq!(c.tcp_state, Some(TcpState::Other));
        let e = list_entry(&reply(&[
            "=.id=*9",
            "=list=tls_block",
            "=address=192.0.2.1",
            "=comment=a\x1b[2Jb\nc",
        ]))
        .unwrap();
        assert_eq!(e.comment.as_deref(), Some("a\u{FFFD}[2Jb\u{FFFD}c"));
        assert!(list_entry(&reply(&["=.id=*9", "=list=a\nb", "=address=192.0.2.1"])).is_err());
    }

    #[test]
    fn connection_older_format_port_attached() {
        let c = connection(
            &reply(&[
                "=.id=*1A",
                "=protocol=tcp",
                "=src-address=192.168.2.248:32815",
                "=dst-address=74.125.138.188:5228",
                "=orig-packets=9",
                "=repl-packets=1",
                "=orig-bytes=540",
                "=repl-bytes=60",
                "=tcp-state=established",
                "=assured=true",
            ]),
            Family::V4,
        )
        .unwrap();
        assert_eq!(c.id.as_str(), "*1A");
        assert_eq!(c.protocol, Protocol::Tcp);
        assert_eq!(c.src.to_string(), "192.168.2.248:32815");
        assert_eq!(c.dst.to_string(), "74.125.138.188:5228");
        assert_eq!((c.orig_packets, c.repl_packets), (Some(9), Some(1)));
        assert_eq!((c.orig_bytes, c.repl_bytes), (Some(540), Some(60)));
        assert_eq!(c.tcp_state, Some(TcpState::Established));
        assert_eq!(c.family, Family::V4);
    }

    #[test]
    fn connection_newer_format_separate_ports() {
        let c = connection(
            &reply(&[
                "=.id=*5802",
                "=protocol=udp",
                "=src-address=172.31.255.29",
                "=src-port=56454",
                "=dst-address=172.31.255.30",
                "=dst-port=22",
                "=orig-packets=4",
            ]),
            Family::V4,
        )
        .unwrap();
        assert_eq!(c.src.to_string(), "172.31.255.29:56454");
        assert_eq!(c.dst.to_string(), "172.31.255.30:22");
        assert_eq!(c.orig_packets, Some(4));
        assert_eq!(
            c.repl_packets, None,
            "missing counter is None, not an error"
        );
        assert_eq!(c.tcp_state, None);
    }

    #[test]
    fn connection_icmp_has_no_ports() {
        let c = connection(
            &reply(&[
                "=.id=*3",
                "=protocol=icmp",
                "=src-address=10.0.0.2",
                "=dst-address=8.8.8.8",
                "=src-port=",
            ]),
            Family::V4,
        )
        .unwrap();
        assert_eq!(c.src.port, None);
        assert_eq!(c.dst.port, None);
    }

    #[test]
    fn connection_ipv6_both_forms() {
        let c = connection(
            &reply(&[
                "=.id=*B",
                "=protocol=tcp",
                "=src-address=2001:db8::10",
                "=src-port=40000",
                "=dst-address=[2001:db8::1]:443",
            ]),
            Family::V6,
        )
        .unwrap();
        assert_eq!(c.src.to_string(), "[2001:db8::10]:40000");
        assert_eq!(c.dst.to_string(), "[2001:db8::1]:443");
    }

    #[test]
    fn separate_port_wins_over_attached() {
        let c = connection(
            &reply(&[
                "=.id=*1",
                "=protocol=tcp",
                "=src-address=1.1.1.1:1",
                "=src-port=2",
                "=dst-address=2.2.2.2:3",
            ]),
            Family::V4,
        )
        .unwrap();
        assert_eq!(c.src.port, Some(2));
        assert_eq!(c.dst.port, Some(3));
    }

    #[test]
    fn connection_errors_name_the_field() {
        let base = [
            "=.id=*1",
            "=protocol=tcp",
            "=src-address=1.1.1.1",
            "=dst-address=2.2.2.2",
        ];
        let with = |replace: usize, word: &str| {
            let mut w = base.to_vec();
            w[replace] = word;
            connection(&reply(&w), Family::V4).unwrap_err()
        };
        let without = |drop: usize| {
            let mut w = base.to_vec();
            w.remove(drop);
            connection(&reply(&w), Family::V4).unwrap_err()
        };
        assert_eq!(without(0), RowError::Missing { field: ".id" });
        assert_eq!(without(1), RowError::Missing { field: "protocol" });
        assert_eq!(
            without(2),
            RowError::Missing {
                field: "src-address"
            }
        );
        assert_eq!(
            without(3),
            RowError::Missing {
                field: "dst-address"
            }
        );
        assert_eq!(
            with(2, "=src-address=1.1.1"),
            RowError::Invalid {
                field: "src-address",
                value: "1.1.1".into()
            }
        );
        assert!(matches!(
            with(3, "=dst-address=1.1.1.1:99999"),
            RowError::Invalid {
                field: "dst-address",
                ..
            }
        ));
        assert!(matches!(
            with(0, "=.id=*1,*2"),
            RowError::Invalid { field: ".id", .. }
        ));
        assert!(matches!(
            with(0, "=.id=1"),
            RowError::Invalid { field: ".id", .. }
        ));
        assert!(matches!(
            with(1, "=protocol=bogus"),
            RowError::Invalid {
                field: "protocol",
                ..
            }
        ));
        let mut w = base.to_vec();
        w.push("=orig-packets=47 603");
        assert!(matches!(
            connection(&reply(&w), Family::V4).unwrap_err(),
            RowError::Invalid {
                field: "orig-packets",
                ..
            }
        ));
        let mut w = base.to_vec();
        w.push("=dst-port=http");
        assert!(matches!(
            connection(&reply(&w), Family::V4).unwrap_err(),
            RowError::Invalid {
                field: "dst-port",
                ..
            }
        ));
        let long = format!("=src-address={}", "9".repeat(500));
        let RowError::Invalid { value, .. } = with(2, &long) else {
            panic!("expected Invalid")
        };
        assert!(value.chars().count() <= 65, "value is truncated");
    }

    #[test]
    fn list_entry_from_reply() {
        let e = list_entry(&reply(&[
            "=.id=*7",
            "=list=tls_block",
            "=address=203.0.113.45",
            "=timeout=23h59m50s",
            "=dynamic=true",
            "=disabled=false",
            "=comment=rosguard: x",
            "=creation-time=2025-01-01 00:00:00",
        ]))
        .unwrap();
        assert_eq!(e.id, "*7");
        assert_eq!(e.list, "tls_block");
        assert_eq!(e.address, ListAddress::Net(IpNet::from(ip("203.0.113.45"))));
        assert_eq!(e.timeout, Some(Duration::from_secs(86_390)));
        assert!(e.dynamic && !e.disabled);
        assert_eq!(e.comment.as_deref(), Some("rosguard: x"));

        let e = list_entry(&reply(&[
            "=.id=*8",
            "=list=allowlist",
            "=address=10.0.0.1-10.0.0.9",
            "=timeout=garbage",
            "=disabled=true",
        ]))
        .unwrap();
        assert_eq!(
            e.address,
            ListAddress::Range(ip("10.0.0.1"), ip("10.0.0.9"))
        );
        assert_eq!(e.timeout, None, "lenient timeout");
        assert!(e.disabled && !e.dynamic);
        assert_eq!(e.comment, None);

        assert_eq!(
            list_entry(&reply(&["=.id=*8", "=address=1.2.3.4"])).unwrap_err(),
            RowError::Missing { field: "list" }
        );
        assert!(matches!(
            list_entry(&reply(&["=.id=*8", "=list=a", "=address=a b"])).unwrap_err(),
            RowError::Invalid {
                field: "address",
                ..
            }
        ));
    }

    proptest! {
        #[test]
        fn from_reply_never_panics(words in proptest::collection::vec(
            ("[a-z.-]{1,12}", proptest::collection::vec(any::<u8>(), 0..40)), 0..12)) {
            let words: Vec<Vec<u8>> = std::iter::once(b"!re".to_vec())
                .chain(words.into_iter().map(|(n, v)| {
                    let mut w = format!("={n}=").into_bytes();
                    w.extend(v);
                    w
                }))
                .collect();
            if let Ok(r) = Reply::parse(Sentence::from_words(words)) {
                let _ = connection(&r, Family::V4);
                let _ = list_entry(&r);
            }
        }

    }
}
