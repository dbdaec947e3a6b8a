//! The body of the `rows` fuzz target, shared with the ordinary test that replays the
//! checked-in corpus on stable Rust. Not part of the supported API.

use bytes::BytesMut;
use routeros_proto::{decode_sentence, Limits, Reply};

use crate::detect::{check, Rules};
use crate::model::{AddrSet, Connection, Family, ListEntry};
use crate::state::ConnKey;

/// Decodes arbitrary bytes as reply sentences and turns every reply into the checked row types
/// the daemon uses, then runs detection on what parses. Nothing may panic; a parsed
/// connection's key must survive its text form.
///
/// # Panics
/// When an invariant is broken: that is the finding the fuzzer looks for.
pub fn rows(data: &[u8]) {
    let limits = Limits {
        max_word_len: 64 * 1024,
        max_words: 512,
    };
    let mut buf = BytesMut::from(data);
    let rules = Rules {
        monitored_ports: Vec::new(),
        ..Rules::default()
    };
    let local = AddrSet::default();
    while let Ok(Some(sentence)) = decode_sentence(&mut buf, &limits) {
        let Ok(reply) = Reply::parse(sentence) else {
            continue;
        };
        for family in [Family::V4, Family::V6] {
            if let Ok(conn) = Connection::from_reply(&reply, family) {
                let key = ConnKey::of(&conn);
                assert_eq!(
                    key.to_string().parse::<ConnKey>().ok(),
                    Some(key),
                    "key round trip"
                );
                let _ = check(&conn, &rules, &local);
            }
        }
        if let Ok(entry) = ListEntry::from_reply(&reply) {
            let set = AddrSet::from_entries([&entry]);
            let _ = set.contains("192.0.2.1".parse().expect("literal"));
        }
    }
}
