//! A small typed builder for command sentences.

use crate::error::ProtoError;
use crate::sentence::encode_sentence;

/// A stack program for a `?#` query word: digits and the operators `!` (not), `&` (and),
/// `|` (or), `.` (copy top).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryOps(String);

impl QueryOps {
    /// Checks that `ops` only holds query stack operators and digits.
    pub fn new(ops: &str) -> Result<Self, ProtoError> {
        if ops.is_empty()
            || !ops
                .bytes()
                .all(|b| matches!(b, b'!' | b'&' | b'|' | b'.' | b'0'..=b'9'))
        {
            return Err(ProtoError::InvalidCommand(format!(
                "bad query operators {ops:?}"
            )));
        }
        Ok(Self(ops.to_owned()))
    }

    /// `|`: or of the two top entries.
    pub fn or() -> Self {
        Self("|".into())
    }

    /// `&`: and of the two top entries.
    pub fn and() -> Self {
        Self("&".into())
    }

    /// `!`: negate the top entry.
    pub fn not() -> Self {
        Self("!".into())
    }

    /// The operator string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A command sentence: a path, then attribute, API-attribute and query words.
///
/// The tag is not part of the command: the client adds it when it sends, so one `Command` can
/// be sent more than once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    words: Vec<Vec<u8>>,
    error: Option<String>,
}

impl Command {
    /// Starts a command for `path`, e.g. `/ip/firewall/connection/print`.
    pub fn new(path: &str) -> Self {
        let error = if !path.starts_with('/')
            || path.len() < 2
            || path.bytes().any(|b| b <= b' ' || b == b'=')
        {
            Some(format!("bad command path {path:?}"))
        } else {
            None
        };
        Self {
            words: vec![path.as_bytes().to_vec()],
            error,
        }
    }

    fn check_name(&mut self, name: &str) {
        if self.error.is_none()
            && (name.is_empty()
                || name
                    .bytes()
                    .any(|b| b == b'=' || b <= b' ' || !b.is_ascii()))
        {
            self.error = Some(format!("bad property name {name:?}"));
        }
    }

    fn push(mut self, prefix: &[u8], name: &str, sep: &[u8], value: &[u8]) -> Self {
        self.check_name(name);
        let mut w = Vec::with_capacity(prefix.len() + name.len() + sep.len() + value.len());
        w.extend_from_slice(prefix);
        w.extend_from_slice(name.as_bytes());
        w.extend_from_slice(sep);
        w.extend_from_slice(value);
        self.words.push(w);
        self
    }

    /// `=name=value`.
    pub fn attr(self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.push(b"=", name, b"=", value.as_ref())
    }

    /// A flag attribute, sent as `=name=` (e.g. `follow`, `count-only`).
    pub fn flag(self, name: &str) -> Self {
        self.push(b"=", name, b"=", b"")
    }

    /// `=.proplist=a,b,c`: only these properties come back.
    pub fn proplist(mut self, names: &[&str]) -> Self {
        for n in names {
            self.check_name(n);
            if n.contains(',') && self.error.is_none() {
                self.error = Some(format!("bad property name {n:?}"));
            }
        }
        self.push(b"=", ".proplist", b"=", names.join(",").as_bytes())
    }

    /// `?name`: the row has the property.
    pub fn query_has(self, name: &str) -> Self {
        self.push(b"?", name, b"", b"")
    }

    /// `?-name`: the row lacks the property.
    pub fn query_lacks(self, name: &str) -> Self {
        self.push(b"?-", name, b"", b"")
    }

    /// `?=name=value`: equality.
    pub fn query_eq(self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.push(b"?=", name, b"=", value.as_ref())
    }

    /// `?<name=value`: less than.
    pub fn query_lt(self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.push(b"?<", name, b"=", value.as_ref())
    }

    /// `?>name=value`: greater than.
    pub fn query_gt(self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.push(b"?>", name, b"=", value.as_ref())
    }

    /// `?#ops`: combine the previous query results on the stack.
    pub fn query_ops(mut self, ops: &QueryOps) -> Self {
        self.words.push(format!("?#{}", ops.0).into_bytes());
        self
    }

    /// The command path (first word).
    pub fn path(&self) -> &str {
        std::str::from_utf8(&self.words[0]).unwrap_or("")
    }

    /// The words after the path, as they will be sent (without a tag).
    pub fn words(&self) -> impl Iterator<Item = &[u8]> {
        self.words.iter().map(Vec::as_slice)
    }

    /// Checks the command: the first bad path or property name given to the builder.
    pub fn validate(&self) -> Result<(), ProtoError> {
        match &self.error {
            Some(e) => Err(ProtoError::InvalidCommand(e.clone())),
            None if self.words.iter().any(|w| w.len() > u32::MAX as usize) => {
                Err(ProtoError::InvalidCommand("word longer than 4 GiB".into()))
            }
            None => Ok(()),
        }
    }

    /// Appends the wire form, with `.tag=` when `tag` is given, to `out`.
    pub fn encode(&self, tag: Option<&str>, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        self.validate()?;
        match tag {
            Some(t) => {
                let tag_word = format!(".tag={t}");
                encode_sentence(
                    self.words().chain(std::iter::once(tag_word.as_bytes())),
                    out,
                );
            }
            None => encode_sentence(self.words(), out),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(c: &Command) -> Vec<String> {
        c.words()
            .map(|w| String::from_utf8(w.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn builds_a_filtered_print() {
        let c = Command::new("/ip/firewall/connection/print")
            .proplist(&[".id", "protocol", "orig-packets"])
            .query_eq("protocol", "tcp")
            .query_eq("protocol", "udp")
            .query_ops(&QueryOps::or())
            .query_gt("orig-packets", "3")
            .query_lt("repl-packets", "3")
            .query_has("dst-port")
            .query_lacks("dying");
        assert_eq!(
            words(&c),
            [
                "/ip/firewall/connection/print",
                "=.proplist=.id,protocol,orig-packets",
                "?=protocol=tcp",
                "?=protocol=udp",
                "?#|",
                "?>orig-packets=3",
                "?<repl-packets=3",
                "?dst-port",
                "?-dying",
            ]
        );
        assert!(c.validate().is_ok());
    }

    #[test]
    fn encodes_with_tag_last() {
        let c = Command::new("/login")
            .attr("name", "admin")
            .attr("password", "");
        let mut out = Vec::new();
        c.encode(Some("1"), &mut out).unwrap();
        assert_eq!(
            out,
            b"\x06/login\x0b=name=admin\x0a=password=\x06.tag=1\x00"
        );
    }

    #[test]
    fn flags_and_values_with_equals() {
        let c = Command::new("/ip/firewall/address-list/add")
            .attr("comment", "a=b")
            .flag("count-only");
        assert_eq!(words(&c)[1..], ["=comment=a=b", "=count-only="]);
    }

    #[test]
    fn rejects_bad_paths_and_names() {
        assert!(Command::new("ip/x").validate().is_err());
        assert!(Command::new("/ip x").validate().is_err());
        assert!(Command::new("/x").attr("a=b", "1").validate().is_err());
        assert!(Command::new("/x").attr("", "1").validate().is_err());
        assert!(Command::new("/x").proplist(&["a,b"]).validate().is_err());
        let mut out = Vec::new();
        assert!(Command::new("/x")
            .attr("a b", "1")
            .encode(None, &mut out)
            .is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn query_ops_accept_only_operators() {
        assert!(QueryOps::new("|&!.12").is_ok());
        assert!(QueryOps::new("").is_err());
        assert!(QueryOps::new("|x").is_err());
    }
}
