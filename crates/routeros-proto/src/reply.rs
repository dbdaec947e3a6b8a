//! Typed replies: `!re`, `!done`, `!trap`, `!fatal`, `!empty`.

use bytes::Bytes;

use crate::error::ProtoError;
use crate::sentence::Sentence;

/// The type of a reply sentence, from its first word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyKind {
    /// `!re`: one row of data.
    Re,
    /// `!done`: the last reply to a command; may carry `=ret=`.
    Done,
    /// `!trap`: an error; a `!done` follows.
    Trap,
    /// `!fatal`: the router closes the connection after it.
    Fatal,
    /// `!empty`: RouterOS 7.18+ says "no rows"; a `!done` follows.
    Empty,
}

impl ReplyKind {
    /// The reply word as it appears on the wire.
    pub fn as_word(self) -> &'static str {
        match self {
            ReplyKind::Re => "!re",
            ReplyKind::Done => "!done",
            ReplyKind::Trap => "!trap",
            ReplyKind::Fatal => "!fatal",
            ReplyKind::Empty => "!empty",
        }
    }

    fn from_word(word: &[u8]) -> Option<Self> {
        Some(match word {
            b"!re" => ReplyKind::Re,
            b"!done" => ReplyKind::Done,
            b"!trap" => ReplyKind::Trap,
            b"!fatal" => ReplyKind::Fatal,
            b"!empty" => ReplyKind::Empty,
            _ => return None,
        })
    }
}

/// Where an attribute's name and value sit inside the sentence's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AttrPos {
    word: u32,
    /// Byte offset of the value inside the word; the name is `word[1..value - 1]`.
    value: u32,
}

/// One attribute of a reply: a name (ASCII) and a value (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr<'a> {
    /// The property name, e.g. `orig-packets` or `.id`.
    pub name: &'a str,
    /// The raw value; RouterOS values are bytes, usually but not always UTF-8.
    pub value: &'a [u8],
}

impl Attr<'_> {
    /// The value as text, if it is UTF-8.
    pub fn value_str(&self) -> Option<&str> {
        std::str::from_utf8(self.value).ok()
    }
}

/// A parsed reply sentence. Attribute lookups are slices into the original buffer.
#[derive(Clone, PartialEq, Eq)]
pub struct Reply {
    kind: ReplyKind,
    sentence: Sentence,
    attrs: Vec<AttrPos>,
    tag: Option<u32>,
    /// Bare words (the `!fatal` reason); indices into the sentence.
    bare: Vec<u32>,
}

impl Reply {
    /// Parses a decoded sentence into a reply.
    ///
    /// The `.tag` word may stand anywhere. `=name=value` words split on the first two `=` only;
    /// other API words (`.section=...`) are kept as attributes under their dotted name. Bare words
    /// are kept as the reason of a `!fatal`; in any other reply they are an error.
    pub fn parse(sentence: Sentence) -> Result<Self, ProtoError> {
        let first = sentence.word(0).unwrap_or_default();
        let kind = ReplyKind::from_word(first).ok_or_else(|| {
            ProtoError::UnknownReply(
                String::from_utf8_lossy(&first[..first.len().min(64)]).into_owned(),
            )
        })?;
        let mut attrs = Vec::with_capacity(sentence.len().saturating_sub(1));
        let mut tag = None;
        let mut bare = Vec::new();
        for (i, word) in sentence.words().enumerate().skip(1) {
            let i = i as u32;
            match word.first() {
                Some(b'=') => {
                    let eq = word[1..].iter().position(|&b| b == b'=').map(|p| p + 1);
                    // `=name` with no second `=` is read as an empty value.
                    let (name_end, value) = match eq {
                        Some(p) => (p, p + 1),
                        None => (word.len(), word.len()),
                    };
                    check_name(&word[1..name_end])?;
                    attrs.push(AttrPos {
                        word: i,
                        value: value as u32,
                    });
                }
                Some(b'.') => {
                    if let Some(rest) = word.strip_prefix(b".tag=") {
                        std::str::from_utf8(rest)
                            .map_err(|_| ProtoError::MalformedWord("non-UTF-8 .tag".into()))?;
                        tag = Some(i);
                    } else {
                        // `.name=value` API attribute other than the tag: keep it as `.name`.
                        let p = word.iter().position(|&b| b == b'=').unwrap_or(word.len());
                        check_name(&word[1..p])?;
                        attrs.push(AttrPos {
                            word: i,
                            value: (p + 1).min(word.len()) as u32,
                        });
                    }
                }
                _ if kind == ReplyKind::Fatal => bare.push(i),
                _ => {
                    return Err(ProtoError::MalformedWord(format!(
                        "unexpected word {:?} in {}",
                        String::from_utf8_lossy(&word[..word.len().min(64)]),
                        kind.as_word()
                    )))
                }
            }
        }
        Ok(Self {
            kind,
            sentence,
            attrs,
            tag,
            bare,
        })
    }

    /// The reply type.
    pub fn kind(&self) -> ReplyKind {
        self.kind
    }

    /// The underlying sentence.
    pub fn sentence(&self) -> &Sentence {
        &self.sentence
    }

    /// The `.tag` value, if the reply carries one.
    pub fn tag(&self) -> Option<&str> {
        let w = self.sentence.word(self.tag? as usize)?;
        std::str::from_utf8(&w[5..]).ok()
    }

    fn attr_at(&self, pos: &AttrPos) -> Attr<'_> {
        let word = self.sentence.word(pos.word as usize).unwrap_or_default();
        let value_at = pos.value as usize;
        // `=name=value`: name is word[1..value_at-1]; `.name=value` keeps its dot.
        let name_start = usize::from(word.first() == Some(&b'='));
        let name_end = if value_at > 0 && word.get(value_at - 1) == Some(&b'=') {
            value_at - 1
        } else {
            value_at
        };
        let name = std::str::from_utf8(&word[name_start..name_end.max(name_start)]).unwrap_or("");
        Attr {
            name,
            value: &word[value_at.min(word.len())..],
        }
    }

    /// The attributes in wire order (the tag excluded).
    pub fn attrs(&self) -> impl ExactSizeIterator<Item = Attr<'_>> + '_ {
        self.attrs.iter().map(|p| self.attr_at(p))
    }

    /// The value of the first attribute named `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.attrs().find(|a| a.name == name).map(|a| a.value)
    }

    /// The value of `name` as text (`None` when absent or not UTF-8).
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The value of `name` as a zero-copy buffer handle.
    pub fn get_bytes(&self, name: &str) -> Option<Bytes> {
        let pos = self.attrs.iter().find(|p| self.attr_at(p).name == name)?;
        let word = self.sentence.word_bytes(pos.word as usize)?;
        Some(word.slice((pos.value as usize).min(word.len())..))
    }

    /// `=ret=` of a `!done`.
    pub fn ret(&self) -> Option<&str> {
        self.get_str("ret")
    }

    /// `=message=` of a `!trap`, or the reason of a `!fatal`.
    pub fn message(&self) -> Option<String> {
        if self.kind == ReplyKind::Fatal && !self.bare.is_empty() {
            let parts: Vec<String> = self
                .bare
                .iter()
                .filter_map(|&i| self.sentence.word(i as usize))
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect();
            return Some(parts.join(" "));
        }
        self.get("message")
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// `=category=` of a `!trap`, when present and numeric.
    pub fn category(&self) -> Option<u32> {
        self.get_str("category")?.parse().ok()
    }
}

fn check_name(name: &[u8]) -> Result<(), ProtoError> {
    if name.is_ascii() {
        Ok(())
    } else {
        Err(ProtoError::MalformedWord(format!(
            "non-ASCII attribute name {:?}",
            String::from_utf8_lossy(&name[..name.len().min(64)])
        )))
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("kind", &self.kind)
            .field("tag", &self.tag())
            .field("sentence", &self.sentence)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(words: &[&[u8]]) -> Result<Reply, ProtoError> {
        Reply::parse(Sentence::from_words(words))
    }

    #[test]
    fn row_with_tag_first_or_last() {
        for words in [
            &[
                &b"!re"[..],
                b".tag=7",
                b"=.id=*1A",
                b"=comment=a=b",
                b"=empty=",
            ][..],
            &[
                &b"!re"[..],
                b"=.id=*1A",
                b"=comment=a=b",
                b"=empty=",
                b".tag=7",
            ][..],
        ] {
            let r = reply(words).unwrap();
            assert_eq!(r.kind(), ReplyKind::Re);
            assert_eq!(r.tag(), Some("7"));
            assert_eq!(r.get_str(".id"), Some("*1A"));
            assert_eq!(
                r.get_str("comment"),
                Some("a=b"),
                "split on the first two = only"
            );
            assert_eq!(r.get_str("empty"), Some(""));
            assert_eq!(r.get("missing"), None);
            assert_eq!(r.attrs().len(), 3);
            assert_eq!(r.get_bytes("comment").as_deref(), Some(&b"a=b"[..]));
        }
    }

    #[test]
    fn done_with_ret() {
        let r = reply(&[b"!done", b"=ret=93b438ec9b80057c06dd9fe67d56aa9a"]).unwrap();
        assert_eq!(r.kind(), ReplyKind::Done);
        assert_eq!(r.ret(), Some("93b438ec9b80057c06dd9fe67d56aa9a"));
        assert_eq!(r.tag(), None);
    }

    #[test]
    fn trap_with_and_without_category() {
        let r = reply(&[
            b"!trap",
            b"=category=0",
            b"=message=no such command or directory (adress)",
        ])
        .unwrap();
        assert_eq!(r.kind(), ReplyKind::Trap);
        assert_eq!(r.category(), Some(0));
        assert_eq!(
            r.message().as_deref(),
            Some("no such command or directory (adress)")
        );
        let r = reply(&[b"!trap", b"=message=no such command prefix"]).unwrap();
        assert_eq!(r.category(), None);
        assert_eq!(r.message().as_deref(), Some("no such command prefix"));
    }

    #[test]
    fn fatal_reason_is_a_bare_word() {
        let r = reply(&[b"!fatal", b"not logged in"]).unwrap();
        assert_eq!(r.kind(), ReplyKind::Fatal);
        assert_eq!(r.message().as_deref(), Some("not logged in"));
    }

    #[test]
    fn empty_reply() {
        let r = reply(&[b"!empty", b".tag=3"]).unwrap();
        assert_eq!(r.kind(), ReplyKind::Empty);
        assert_eq!(r.tag(), Some("3"));
    }

    #[test]
    fn unknown_reply_is_an_error() {
        assert!(matches!(reply(&[b"!nope"]), Err(ProtoError::UnknownReply(w)) if w == "!nope"));
        assert!(matches!(
            reply(&[b"=a=b"]),
            Err(ProtoError::UnknownReply(_))
        ));
    }

    #[test]
    fn bare_word_outside_fatal_is_an_error() {
        assert!(matches!(
            reply(&[b"!re", b"oops"]),
            Err(ProtoError::MalformedWord(_))
        ));
    }

    #[test]
    fn values_are_bytes() {
        let r = reply(&[b"!re", b"=data=\xFF\x00"]).unwrap();
        assert_eq!(r.get("data"), Some(&b"\xFF\x00"[..]));
        assert_eq!(r.get_str("data"), None);
    }

    #[test]
    fn other_api_words_keep_their_dot() {
        let r = reply(&[b"!re", b".section=2", b"=name=x"]).unwrap();
        assert_eq!(r.get_str(".section"), Some("2"));
        assert_eq!(r.get_str("name"), Some("x"));
    }

    #[test]
    fn name_without_value() {
        let r = reply(&[b"!re", b"=flag"]).unwrap();
        assert_eq!(r.get_str("flag"), Some(""));
    }
}
