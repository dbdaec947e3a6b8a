//! The body of the `decode` fuzz target, shared with the ordinary test that replays the
//! checked-in corpus on stable Rust. Not part of the supported API.

use bytes::BytesMut;

use crate::length::{decode_length, encode_length};
use crate::reply::Reply;
use crate::sentence::{decode_sentence, Limits};
use routeros_types::parse_duration;

/// Decodes arbitrary bytes as a reply stream and checks that whatever decodes re-encodes to
/// the same words, that typed parsing never panics, and that the length codec round-trips.
/// Returns how many sentences decoded and how many of them were valid replies.
///
/// # Panics
/// When an invariant is broken: that is the finding the fuzzer looks for.
pub fn decode_round_trip(data: &[u8]) -> (usize, usize) {
    let (mut sentences, mut replies) = (0, 0);
    let limits = Limits {
        max_word_len: 64 * 1024,
        max_words: 512,
    };
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        match decode_sentence(&mut buf, &limits) {
            Ok(Some(sentence)) => {
                assert!(buf.len() < before, "a decoded sentence consumed nothing");
                let mut wire = Vec::new();
                sentence.encode(&mut wire);
                let mut again = BytesMut::from(&wire[..]);
                let decoded = decode_sentence(&mut again, &limits)
                    .expect("re-encoded sentence decodes")
                    .expect("re-encoded sentence is complete");
                assert_eq!(decoded, sentence, "sentence round trip");
                assert!(again.is_empty(), "re-encoding left trailing bytes");
                sentences += 1;
                if let Ok(reply) = Reply::parse(sentence) {
                    replies += 1;
                    let _ = (reply.tag(), reply.message(), reply.category(), reply.ret());
                    for attr in reply.attrs() {
                        assert!(attr.name.is_ascii());
                    }
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    if let Ok(Some((len, used))) = decode_length(data) {
        assert!((1..=5).contains(&used));
        let mut out = Vec::new();
        encode_length(len, &mut out);
        assert_eq!(decode_length(&out), Ok(Some((len, out.len()))));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_duration(text);
    }
    (sentences, replies)
}
