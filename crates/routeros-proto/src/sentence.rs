//! Sentences: words ended by an empty word, decoded incrementally from a byte buffer.

use bytes::{Buf, Bytes, BytesMut};

use crate::error::ProtoError;
use crate::length::{decode_length, encode_length};

/// Caps that keep a hostile or broken peer from making us allocate without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest word accepted, in bytes (default 16 MiB).
    pub max_word_len: usize,
    /// The most words one sentence may have (default 4096).
    pub max_words: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_word_len: 16 * 1024 * 1024,
            max_words: 4096,
        }
    }
}

impl Limits {
    /// The most bytes one sentence can occupy on the wire under these limits; a reader never
    /// needs to buffer more than this to make progress.
    pub fn max_sentence_bytes(&self) -> usize {
        self.max_words
            .saturating_mul(self.max_word_len.saturating_add(5))
            .saturating_add(1)
    }
}

/// One decoded sentence. The words are slices of one shared, reference-counted buffer, so a
/// sentence is cheap to move between tasks and decoding copies no word.
///
/// Two sentences are equal when their words are: the bytes around them (length prefixes, which
/// a peer may encode in a longer form than needed) do not matter.
#[derive(Clone)]
pub struct Sentence {
    data: Bytes,
    words: Vec<(u32, u32)>,
}

impl Sentence {
    /// Builds a sentence from owned words (used by tests, the simulator and encoders).
    pub fn from_words<I, W>(words: I) -> Self
    where
        I: IntoIterator<Item = W>,
        W: AsRef<[u8]>,
    {
        let mut data = Vec::new();
        let mut ranges = Vec::new();
        for w in words {
            let w = w.as_ref();
            let start = data.len() as u32;
            data.extend_from_slice(w);
            ranges.push((start, data.len() as u32));
        }
        Self {
            data: Bytes::from(data),
            words: ranges,
        }
    }

    /// Number of words (the terminating empty word is not counted).
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// True for a sentence with no words (never produced by the decoder).
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The word at `index`, if any.
    pub fn word(&self, index: usize) -> Option<&[u8]> {
        self.words
            .get(index)
            .map(|&(s, e)| &self.data[s as usize..e as usize])
    }

    /// The words in order.
    pub fn words(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.words
            .iter()
            .map(|&(s, e)| &self.data[s as usize..e as usize])
    }

    /// The word at `index` as a zero-copy `Bytes` handle.
    pub fn word_bytes(&self, index: usize) -> Option<Bytes> {
        self.words
            .get(index)
            .map(|&(s, e)| self.data.slice(s as usize..e as usize))
    }

    /// Appends the wire form of this sentence (with the terminating empty word) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_sentence(self.words(), out);
    }
}

impl PartialEq for Sentence {
    fn eq(&self, other: &Self) -> bool {
        self.words().eq(other.words())
    }
}

impl Eq for Sentence {}

impl std::fmt::Debug for Sentence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.words().map(|w| String::from_utf8_lossy(w)))
            .finish()
    }
}

/// Appends words and the terminating empty word to `out`.
///
/// # Panics
/// Never for words shorter than 4 GiB; longer words cannot be expressed on the wire and are
/// truncated in the length prefix, so callers must not build them (the command builder refuses).
pub fn encode_sentence<I, W>(words: I, out: &mut Vec<u8>)
where
    I: IntoIterator<Item = W>,
    W: AsRef<[u8]>,
{
    for w in words {
        let w = w.as_ref();
        encode_length(u32::try_from(w.len()).unwrap_or(u32::MAX), out);
        out.extend_from_slice(w);
    }
    out.push(0);
}

/// Takes one complete sentence off the front of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole sentence (nothing is consumed then,
/// except leading empty sentences, which are skipped). Lengths are checked against `limits`
/// before anything is reserved or sliced, so a 4 GiB prefix is an error, not an allocation.
pub fn decode_sentence(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Sentence>, ProtoError> {
    // Room for a typical row (a dozen words) up front: one allocation per sentence.
    let mut words: Vec<(u32, u32)> = Vec::with_capacity(16);
    let mut pos = 0usize;
    loop {
        let Some((len, prefix)) = decode_length(&buf[pos..])? else {
            return Ok(None);
        };
        if len == 0 {
            pos += prefix;
            if words.is_empty() {
                // An empty sentence: skip it and look for the next one.
                buf.advance(pos);
                pos = 0;
                continue;
            }
            let data = buf.split_to(pos).freeze();
            return Ok(Some(Sentence { data, words }));
        }
        if len as usize > limits.max_word_len {
            return Err(ProtoError::WordTooLong {
                len: u64::from(len),
                max: limits.max_word_len,
            });
        }
        if words.len() >= limits.max_words {
            return Err(ProtoError::TooManyWords {
                max: limits.max_words,
            });
        }
        let start = pos + prefix;
        let end = start + len as usize;
        if buf.len() < end {
            return Ok(None);
        }
        // A sentence is bounded by the limits, which keep offsets far below u32::MAX
        // for any sane configuration; refuse rather than wrap otherwise.
        let (Ok(s), Ok(e)) = (u32::try_from(start), u32::try_from(end)) else {
            return Err(ProtoError::WordTooLong {
                len: end as u64,
                max: limits.max_word_len,
            });
        };
        words.push((s, e));
        pos = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(bytes: &[u8]) -> Result<Vec<Sentence>, ProtoError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(s) = decode_sentence(&mut buf, &Limits::default())? {
            out.push(s);
        }
        assert!(buf.is_empty(), "trailing bytes left: {buf:02X?}");
        Ok(out)
    }

    #[test]
    fn decodes_a_login_reply_byte_for_byte() {
        // "!done" "=ret=abc" ""
        let bytes = b"\x05!done\x08=ret=abc\x00";
        let s = decode_all(bytes).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].word(0), Some(&b"!done"[..]));
        assert_eq!(s[0].word(1), Some(&b"=ret=abc"[..]));
        assert_eq!(s[0].len(), 2);
    }

    #[test]
    fn skips_empty_sentences() {
        let s = decode_all(b"\x00\x00\x05!done\x00\x00").unwrap();
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn partial_input_is_not_an_error_and_consumes_nothing() {
        let full = b"\x03!re\x0a=.id=*1A2B\x00";
        for cut in 0..full.len() {
            let mut buf = BytesMut::from(&full[..cut]);
            assert_eq!(
                decode_sentence(&mut buf, &Limits::default()),
                Ok(None),
                "cut {cut}"
            );
            assert_eq!(&buf[..], &full[..cut]);
        }
    }

    #[test]
    fn hostile_length_prefix_is_rejected_without_allocating() {
        // 0xF0 FF FF FF FF announces a 4 GiB word.
        let mut buf = BytesMut::from(&b"\xF0\xFF\xFF\xFF\xFF"[..]);
        let err = decode_sentence(&mut buf, &Limits::default()).unwrap_err();
        assert_eq!(
            err,
            ProtoError::WordTooLong {
                len: u64::from(u32::MAX),
                max: 16 * 1024 * 1024
            }
        );
    }

    #[test]
    fn control_byte_is_rejected() {
        let mut buf = BytesMut::from(&b"\x03!re\xF8"[..]);
        assert_eq!(
            decode_sentence(&mut buf, &Limits::default()),
            Err(ProtoError::ControlByte(0xF8))
        );
    }

    #[test]
    fn word_count_cap_holds() {
        let limits = Limits {
            max_words: 3,
            ..Limits::default()
        };
        let mut bytes = Vec::new();
        encode_sentence(["!re", "=a=1", "=b=2", "=c=3"], &mut bytes);
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(
            decode_sentence(&mut buf, &limits),
            Err(ProtoError::TooManyWords { max: 3 })
        );
    }

    #[test]
    fn word_length_cap_holds_exactly() {
        let limits = Limits {
            max_word_len: 4,
            ..Limits::default()
        };
        let mut ok = Vec::new();
        encode_sentence(["abcd"], &mut ok);
        assert!(decode_sentence(&mut BytesMut::from(&ok[..]), &limits)
            .unwrap()
            .is_some());
        let mut bad = Vec::new();
        encode_sentence(["abcde"], &mut bad);
        assert_eq!(
            decode_sentence(&mut BytesMut::from(&bad[..]), &limits),
            Err(ProtoError::WordTooLong { len: 5, max: 4 })
        );
    }

    #[test]
    fn equality_is_by_words_not_by_their_encoding() {
        // `80 00` is a two-byte encoding of a zero length: it ends the sentence like `00`
        // (found by the fuzzer; regression seed fuzz/corpus/decode/long_form_terminator).
        let long = decode_all(b"\x05!$one\x80\x00").unwrap();
        let short = decode_all(b"\x05!$one\x00").unwrap();
        assert_eq!(long, short);
        assert_ne!(short[0], Sentence::from_words(["!$two"]));
    }

    #[test]
    fn words_are_bytes_not_utf8() {
        let s = decode_all(b"\x03!re\x04\xFF\x00\xFE\x80\x00").unwrap();
        assert_eq!(s[0].word(1), Some(&[0xFF, 0x00, 0xFE, 0x80][..]));
    }

    proptest! {
        #[test]
        fn sentences_round_trip(
            sentences in proptest::collection::vec(
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 1..12),
                1..6,
            ),
            split in any::<prop::sample::Index>(),
        ) {
            let mut bytes = Vec::new();
            for s in &sentences {
                encode_sentence(s, &mut bytes);
            }
            // Feed the stream in two pieces at an arbitrary point.
            let at = split.index(bytes.len() + 1);
            let mut buf = BytesMut::from(&bytes[..at]);
            let mut got = Vec::new();
            while let Some(s) = decode_sentence(&mut buf, &Limits::default()).unwrap() {
                got.push(s);
            }
            buf.extend_from_slice(&bytes[at..]);
            while let Some(s) = decode_sentence(&mut buf, &Limits::default()).unwrap() {
                got.push(s);
            }
            prop_assert!(buf.is_empty());
            let got: Vec<Vec<Vec<u8>>> =
                got.iter().map(|s| s.words().map(<[u8]>::to_vec).collect()).collect();
            prop_assert_eq!(got, sentences);
        }
    }
}
