//! The body of the `rows` fuzz target, shared with the ordinary test that replays the
//! checked-in corpus on stable Rust. Not part of the supported API.

use bytes::BytesMut;
use rosguard_core::detect::check;
use rosguard_core::model::{AddrSet, Family, Networks};
use rosguard_core::settings::Detection;
use rosguard_core::state::ConnKey;
use routeros_proto::{decode_sentence, Limits, Reply};

use crate::rows::{connection, list_entry};

/// What one input gave: sentences decoded, rows that became connections (in either table) and
/// address-list entries, and rows refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowsSummary {
    /// Reply sentences decoded.
    pub replies: usize,
    /// Replies that parsed as a connection row.
    pub connections: usize,
    /// Replies that parsed as an address-list entry.
    pub entries: usize,
    /// Replies that were neither.
    pub refused: usize,
}

/// Decodes arbitrary bytes as reply sentences and turns every reply into the checked row types
/// the daemon uses, then runs detection on what parses. Nothing may panic; a parsed
/// connection's key must survive its text form.
///
/// # Panics
/// When an invariant is broken: that is the finding the fuzzer looks for.
pub fn rows(data: &[u8]) -> RowsSummary {
    let limits = Limits {
        max_word_len: 64 * 1024,
        max_words: 512,
    };
    let mut buf = BytesMut::from(data);
    let d = Detection {
        monitored_ports: Vec::new(),
        ..Detection::default()
    };
    let inside = Networks::default();
    let mut out = RowsSummary::default();
    while let Ok(Some(sentence)) = decode_sentence(&mut buf, &limits) {
        let Ok(reply) = Reply::parse(sentence) else {
            continue;
        };
        out.replies += 1;
        let mut parsed = false;
        for family in Family::BOTH {
            if let Ok(conn) = connection(&reply, family) {
                let key = ConnKey::of(&conn);
                assert_eq!(
                    key.to_string().parse::<ConnKey>().ok(),
                    Some(key),
                    "key round trip"
                );
                let _ = check(&conn, &d, &inside);
                parsed = true;
            }
        }
        if parsed {
            out.connections += 1;
        }
        if let Ok(entry) = list_entry(&reply) {
            let set = AddrSet::from_entries([&entry]);
            let _ = set.contains("192.0.2.1".parse().expect("literal"));
            out.entries += 1;
            parsed = true;
        }
        if !parsed {
            out.refused += 1;
        }
    }
    out
}
