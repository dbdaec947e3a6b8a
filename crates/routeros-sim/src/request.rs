//! A command sentence taken apart: path, `.tag`, attributes, `.proplist` and query words.
//!
//! Values are decoded as UTF-8 (lossily: a client's stray bytes become U+FFFD, never a panic).
//! This module deliberately does not judge whether a command or attribute exists: the
//! dispatcher does.

use routeros_proto::Sentence;

use crate::query::parse_proplist;

/// One command from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    /// The command path, e.g. `/ip/firewall/connection/print`.
    pub(crate) path: String,
    /// `.tag=` value.
    pub(crate) tag: Option<String>,
    /// `=name=value` words, in order.
    pub(crate) attrs: Vec<(String, String)>,
    /// `=.proplist=` (or `.proplist=`) names.
    pub(crate) proplist: Option<Vec<String>>,
    /// Query words without their leading `?`.
    pub(crate) queries: Vec<String>,
    /// Words with no known prefix.
    pub(crate) bare: Vec<String>,
}

impl Request {
    pub(crate) fn parse(s: &Sentence) -> Self {
        let mut words = s.words().map(|w| String::from_utf8_lossy(w).into_owned());
        let path = words.next().unwrap_or_default();
        let mut req = Request {
            path,
            tag: None,
            attrs: Vec::new(),
            proplist: None,
            queries: Vec::new(),
            bare: Vec::new(),
        };
        for w in words {
            if let Some(rest) = w.strip_prefix('=') {
                let (name, value) = rest.split_once('=').unwrap_or((rest, ""));
                if name == ".proplist" {
                    req.proplist = Some(parse_proplist(value));
                } else {
                    req.attrs.push((name.to_owned(), value.to_owned()));
                }
            } else if let Some(tag) = w.strip_prefix(".tag=") {
                req.tag = Some(tag.to_owned());
            } else if let Some(list) = w.strip_prefix(".proplist=") {
                req.proplist = Some(parse_proplist(list));
            } else if w.starts_with('.') {
                let (name, value) = w.split_once('=').unwrap_or((&w, ""));
                req.attrs.push((name.to_owned(), value.to_owned()));
            } else if let Some(q) = w.strip_prefix('?') {
                req.queries.push(q.to_owned());
            } else {
                req.bare.push(w);
            }
        }
        req
    }

    /// The value of attribute `name` (the last one given wins).
    pub(crate) fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first attribute whose name is not in `allowed`, or a bare word.
    pub(crate) fn unknown_param(&self, allowed: &[&str]) -> Option<&str> {
        self.attrs
            .iter()
            .map(|(n, _)| n.as_str())
            .find(|n| !allowed.contains(n))
            .or_else(|| self.bare.first().map(String::as_str))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_a_command_apart() {
        let s = Sentence::from_words([
            &b"/ip/firewall/connection/print"[..],
            b"=.proplist=.id,orig-packets",
            b"?>orig-packets=3",
            b"?#|",
            b"=comment=a=b",
            b"=flag",
            b".tag=7",
            b"\xFFoops",
        ]);
        let r = Request::parse(&s);
        assert_eq!(r.path, "/ip/firewall/connection/print");
        assert_eq!(r.tag.as_deref(), Some("7"));
        assert_eq!(r.proplist, Some(vec![".id".into(), "orig-packets".into()]));
        assert_eq!(
            r.queries,
            vec![">orig-packets=3".to_owned(), "#|".to_owned()]
        );
        assert_eq!(r.attr("comment"), Some("a=b"));
        assert_eq!(r.attr("flag"), Some(""));
        assert_eq!(r.bare.len(), 1);
        assert_eq!(r.unknown_param(&["comment", "flag"]), Some("\u{FFFD}oops"));
    }
}
