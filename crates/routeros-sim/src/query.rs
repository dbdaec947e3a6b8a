//! Print queries (`?name`, `?-name`, `?name=x`, `?=name=x`, `?<name=x`, `?>name=x`, `?#ops`)
//! and `.proplist`, evaluated over any row that can name its properties.
//!
//! Queries are evaluated as a stack exactly as MikroTik documents it: each comparison word
//! pushes a boolean, `?#` words operate on the stack, and a row is returned when every value
//! left on the stack is true. The stack depth does not depend on the row, so a query that
//! would underflow is refused once, before any row is looked at.
//!
//! It deliberately knows nothing about tables: rows come in through the [`Props`] trait.

use std::cmp::Ordering;
use std::net::IpAddr;
use std::time::Duration;

use routeros_proto::parse_duration;

use crate::kinds::QueryCompare;

/// A row whose properties can be looked up by name and listed in print order.
pub(crate) trait Props {
    /// Appends the value of `name` to `out`; `false` when the row lacks the property.
    fn value(&self, name: &str, out: &mut String) -> bool;
    /// Calls `f(name, value)` for every property the row has, in print order. `scratch` is a
    /// reusable buffer for formatting values.
    fn for_each(&self, scratch: &mut String, f: &mut dyn FnMut(&str, &str));
    /// The value of `name` when the row holds it as a number that is always present (packet
    /// and byte counters), so a query can compare it without printing and parsing it back;
    /// `None` means "ask `value`".
    fn number(&self, _name: &str) -> Option<u64> {
        None
    }
}

/// A row held as owned name/value pairs (small tables: lists, rules, read-only menus).
impl Props for [(String, String)] {
    fn value(&self, name: &str, out: &mut String) -> bool {
        match self.iter().find(|(n, _)| n == name) {
            Some((_, v)) => {
                out.push_str(v);
                true
            }
            None => false,
        }
    }

    fn for_each(&self, _scratch: &mut String, f: &mut dyn FnMut(&str, &str)) {
        for (n, v) in self {
            f(n, v);
        }
    }
}

/// A reference to a row is a row.
impl<T: Props + ?Sized> Props for &T {
    fn value(&self, name: &str, out: &mut String) -> bool {
        (**self).value(name, out)
    }

    fn for_each(&self, scratch: &mut String, f: &mut dyn FnMut(&str, &str)) {
        (**self).for_each(scratch, f)
    }

    fn number(&self, name: &str) -> Option<u64> {
        (**self).number(name)
    }
}

/// One stack operation of a `?#` word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Not,
    And,
    Or,
    /// `.` not after an index: push a copy of the top.
    Dup,
    /// An index followed by another character: push a copy of the value at that index.
    Push(usize),
    /// An index at the end of the word: replace the whole stack by the value at that index.
    Replace(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Has(String),
    Lacks(String),
    Eq(String, Value),
    Lt(String, Value),
    Gt(String, Value),
    Ops(Vec<Op>),
}

/// A query's comparison value, with every typed reading of it worked out once at compile
/// time instead of once per row (a million-row print compares a million times).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Value {
    text: String,
    boolean: Option<bool>,
    number: Option<i128>,
    ip: Option<IpAddr>,
    duration: Option<Duration>,
    duration_like: bool,
}

impl Value {
    fn new(text: String) -> Self {
        Self {
            boolean: as_bool(&text),
            number: as_number(&text),
            ip: text.parse().ok(),
            duration: parse_duration(&text).ok(),
            duration_like: is_duration_like(&text),
            text,
        }
    }
}

/// A compiled query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Query {
    items: Vec<Item>,
}

fn name_value(s: &str) -> Result<(String, Value), String> {
    match s.split_once('=') {
        Some((n, v)) if !n.is_empty() => Ok((n.to_owned(), Value::new(v.to_owned()))),
        _ => Err(format!("expected name=value in query word ?{s}")),
    }
}

fn parse_ops(ops: &str) -> Result<Vec<Op>, String> {
    let bytes = ops.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let index: usize = ops[start..i]
                .parse()
                .map_err(|_| format!("stack index too large in ?#{ops}"))?;
            if i == bytes.len() {
                out.push(Op::Replace(index));
            } else {
                out.push(Op::Push(index));
                // `.` after an index does nothing.
                if bytes[i] == b'.' {
                    i += 1;
                }
            }
            continue;
        }
        out.push(match b {
            b'!' => Op::Not,
            b'&' => Op::And,
            b'|' => Op::Or,
            b'.' => Op::Dup,
            other => {
                return Err(format!(
                    "unknown operation {:?} in ?#{ops}",
                    char::from(other)
                ))
            }
        });
        i += 1;
    }
    if out.is_empty() {
        return Err("empty ?# operations".into());
    }
    Ok(out)
}

impl Query {
    /// Compiles query words (without their leading `?`), checking that the stack never
    /// underflows.
    pub(crate) fn parse(words: &[String]) -> Result<Self, String> {
        let mut items = Vec::with_capacity(words.len());
        for w in words {
            let item = if let Some(ops) = w.strip_prefix('#') {
                Item::Ops(parse_ops(ops)?)
            } else if let Some(name) = w.strip_prefix('-') {
                if name.is_empty() {
                    return Err("empty property name in ?-".into());
                }
                Item::Lacks(name.to_owned())
            } else if let Some(rest) = w.strip_prefix('=') {
                let (n, v) = name_value(rest)?;
                Item::Eq(n, v)
            } else if let Some(rest) = w.strip_prefix('<') {
                let (n, v) = name_value(rest)?;
                Item::Lt(n, v)
            } else if let Some(rest) = w.strip_prefix('>') {
                let (n, v) = name_value(rest)?;
                Item::Gt(n, v)
            } else if w.contains('=') {
                let (n, v) = name_value(w)?;
                Item::Eq(n, v)
            } else if w.is_empty() {
                return Err("empty query word".into());
            } else {
                Item::Has(w.clone())
            };
            items.push(item);
        }
        let q = Query { items };
        q.check_depth()?;
        Ok(q)
    }

    fn check_depth(&self) -> Result<(), String> {
        let mut depth = 0usize;
        for item in &self.items {
            match item {
                Item::Ops(ops) => {
                    for op in ops {
                        depth = match *op {
                            Op::Not if depth >= 1 => depth,
                            Op::And | Op::Or if depth >= 2 => depth - 1,
                            Op::Dup if depth >= 1 => depth + 1,
                            Op::Push(i) if i < depth => depth + 1,
                            Op::Replace(i) if i < depth => 1,
                            _ => return Err("query stack underflow".into()),
                        };
                    }
                }
                _ => depth += 1,
            }
        }
        Ok(())
    }

    /// The value of a query that is exactly one equality on `name` (`?name=x` or `?=name=x`),
    /// so a caller can look that one row up instead of scanning; `None` for any other query.
    pub(crate) fn only_eq(&self, name: &str) -> Option<&str> {
        match self.items.as_slice() {
            [Item::Eq(n, v)] if n == name => Some(&v.text),
            _ => None,
        }
    }

    /// Evaluates the query on `row`. `scratch` and `stack` are reusable buffers.
    pub(crate) fn matches<P: Props + ?Sized>(
        &self,
        row: &P,
        mode: QueryCompare,
        scratch: &mut String,
        stack: &mut Vec<bool>,
    ) -> bool {
        if self.items.is_empty() {
            return true;
        }
        stack.clear();
        for item in &self.items {
            let v = match item {
                Item::Has(n) => {
                    scratch.clear();
                    row.value(n, scratch)
                }
                Item::Lacks(n) => {
                    scratch.clear();
                    !row.value(n, scratch)
                }
                Item::Eq(n, x) => match typed(row, n, x, mode) {
                    Some(o) => o == Ordering::Equal,
                    None => {
                        scratch.clear();
                        row.value(n, scratch) && equal(scratch, x, mode)
                    }
                },
                Item::Lt(n, x) => match typed(row, n, x, mode) {
                    Some(o) => o == Ordering::Less,
                    None => {
                        scratch.clear();
                        row.value(n, scratch) && compare(scratch, x, mode) == Ordering::Less
                    }
                },
                Item::Gt(n, x) => match typed(row, n, x, mode) {
                    Some(o) => o == Ordering::Greater,
                    None => {
                        scratch.clear();
                        row.value(n, scratch) && compare(scratch, x, mode) == Ordering::Greater
                    }
                },
                Item::Ops(ops) => {
                    apply_ops(ops, stack);
                    continue;
                }
            };
            stack.push(v);
        }
        stack.iter().all(|&b| b)
    }
}

/// The ordering of a numeric property against a numeric query value, without text, when the
/// row has the property as a number and the comparison is numeric: the same answer `compare`
/// gives on the printed value. `None`: compare the printed value.
fn typed<P: Props + ?Sized>(
    row: &P,
    name: &str,
    q: &Value,
    mode: QueryCompare,
) -> Option<Ordering> {
    if mode == QueryCompare::String {
        return None;
    }
    let b = q.number?;
    Some(i128::from(row.number(name)?).cmp(&b))
}

/// Applies stack operations; depth was checked at compile time, so a short stack cannot
/// happen, but every access is still guarded (no panic on any input).
fn apply_ops(ops: &[Op], stack: &mut Vec<bool>) {
    for op in ops {
        match *op {
            Op::Not => {
                if let Some(top) = stack.last_mut() {
                    *top = !*top;
                }
            }
            Op::And | Op::Or => {
                let (Some(a), Some(b)) = (stack.pop(), stack.pop()) else {
                    return;
                };
                stack.push(if *op == Op::And { a && b } else { a || b });
            }
            Op::Dup => {
                if let Some(&top) = stack.last() {
                    stack.push(top);
                }
            }
            Op::Push(i) => {
                if let Some(&v) = stack.len().checked_sub(i + 1).and_then(|p| stack.get(p)) {
                    stack.push(v);
                }
            }
            Op::Replace(i) => {
                if let Some(&v) = stack.len().checked_sub(i + 1).and_then(|p| stack.get(p)) {
                    stack.clear();
                    stack.push(v);
                }
            }
        }
    }
}

fn as_bool(s: &str) -> Option<bool> {
    match s {
        "true" | "yes" => Some(true),
        "false" | "no" => Some(false),
        _ => None,
    }
}

fn as_number(s: &str) -> Option<i128> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn is_duration_like(s: &str) -> bool {
    s.bytes().any(|b| b.is_ascii_alphabetic() || b == b':') && parse_duration(s).is_ok()
}

/// Equality as the router's typed properties would see it: booleans accept `yes`/`no`.
fn equal(row: &str, q: &Value, mode: QueryCompare) -> bool {
    if let Some(b) = q.boolean {
        if let Some(a) = as_bool(row) {
            return a == b;
        }
    }
    compare(row, q, mode) == Ordering::Equal
}

/// Ordering of a row value against a query value: as numbers when both are numbers, else as
/// addresses when both are addresses, else as durations when both are (and one looks like
/// one), else as bytes. Only the row's side is parsed here; the query's was at compile time.
fn compare(row: &str, q: &Value, mode: QueryCompare) -> Ordering {
    if mode == QueryCompare::String {
        return row.as_bytes().cmp(q.text.as_bytes());
    }
    if let Some(b) = q.number {
        if let Some(a) = as_number(row) {
            return a.cmp(&b);
        }
    }
    if let Some(b) = q.ip {
        if let Ok(a) = row.parse::<IpAddr>() {
            return a.cmp(&b);
        }
    }
    if let Some(b) = q.duration {
        if is_duration_like(row) || q.duration_like {
            if let Ok(a) = parse_duration(row) {
                return a.cmp(&b);
            }
        }
    }
    row.as_bytes().cmp(q.text.as_bytes())
}

/// Parses a `.proplist` value: comma-separated names, blanks dropped.
pub(crate) fn parse_proplist(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    fn q(words: &[&str]) -> Query {
        Query::parse(&words.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    fn hit(query: &Query, r: &[(String, String)], mode: QueryCompare) -> bool {
        query.matches(r, mode, &mut String::new(), &mut Vec::new())
    }

    #[test]
    fn documented_or_example() {
        let query = q(&["type=ether", "type=vlan", "#|"]);
        let n = QueryCompare::Numeric;
        assert!(hit(&query, &row(&[("type", "ether")]), n));
        assert!(hit(&query, &row(&[("type", "vlan")]), n));
        assert!(!hit(&query, &row(&[("type", "bridge")]), n));
    }

    #[test]
    fn numeric_versus_string_compare() {
        let r = row(&[("orig-packets", "10")]);
        let gt3 = q(&[">orig-packets=3"]);
        assert!(hit(&gt3, &r, QueryCompare::Numeric));
        assert!(!hit(&gt3, &r, QueryCompare::String));
    }

    #[test]
    fn index_operations() {
        // stack: [a=true, b=false]; "1" at end replaces the stack with index 1 (a).
        let r = row(&[("a", "1")]);
        assert!(hit(&q(&["a", "b", "#1"]), &r, QueryCompare::Numeric));
        assert!(!hit(&q(&["a", "b", "#0"]), &r, QueryCompare::Numeric));
        // "1&" pushes a copy of index 1 (a) then ands with top... [a,b,a] -> [a, b&a]
        assert!(!hit(&q(&["a", "b", "#1&"]), &r, QueryCompare::Numeric));
        assert!(hit(&q(&["a", "b", "#!"]), &r, QueryCompare::Numeric));
        assert!(hit(&q(&["b", "#!."]), &r, QueryCompare::Numeric));
        assert!(hit(&q(&["a", "#0.&"]), &r, QueryCompare::Numeric));
    }

    #[test]
    fn underflow_is_refused() {
        let words = |w: &[&str]| w.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(Query::parse(&words(&["#|"])).is_err());
        assert!(Query::parse(&words(&["a", "#&"])).is_err());
        assert!(Query::parse(&words(&["a", "#1"])).is_err());
        assert!(Query::parse(&words(&["a", "#x"])).is_err());
        assert!(Query::parse(&words(&["<a"])).is_err());
    }

    #[test]
    fn only_eq_recognises_a_single_equality() {
        assert_eq!(q(&[".id=*1A"]).only_eq(".id"), Some("*1A"));
        assert_eq!(q(&["=.id=*1A"]).only_eq(".id"), Some("*1A"));
        assert_eq!(q(&[".id=*1A"]).only_eq("list"), None);
        assert_eq!(q(&[".id=*1A", ".id=*2", "#|"]).only_eq(".id"), None);
        assert_eq!(q(&[">.id=*1A"]).only_eq(".id"), None);
        assert_eq!(Query::default().only_eq(".id"), None);
    }

    #[test]
    fn booleans_accept_yes_no() {
        let r = row(&[("dynamic", "true")]);
        assert!(hit(&q(&["=dynamic=yes"]), &r, QueryCompare::Numeric));
        assert!(!hit(&q(&["dynamic=no"]), &r, QueryCompare::String));
    }

    #[test]
    fn durations_and_addresses_compare_typed() {
        let r = row(&[("timeout", "1m30s"), ("address", "10.0.0.9")]);
        assert!(hit(&q(&[">timeout=1m"]), &r, QueryCompare::Numeric));
        assert!(hit(&q(&["<address=10.0.0.10"]), &r, QueryCompare::Numeric));
        assert!(!hit(&q(&["<address=10.0.0.10"]), &r, QueryCompare::String));
    }

    /// A counter held as a number, answering both ways.
    struct Counter(u64);

    impl Props for Counter {
        fn value(&self, name: &str, out: &mut String) -> bool {
            if name != "orig-packets" {
                return false;
            }
            out.push_str(&self.0.to_string());
            true
        }

        fn for_each(&self, scratch: &mut String, f: &mut dyn FnMut(&str, &str)) {
            scratch.clear();
            self.value("orig-packets", scratch);
            f("orig-packets", scratch);
        }

        fn number(&self, name: &str) -> Option<u64> {
            (name == "orig-packets").then_some(self.0)
        }
    }

    #[test]
    fn numbers_compare_the_same_with_or_without_text() {
        let values = [
            "0",
            "3",
            "10",
            "007",
            "-1",
            "1.5",
            "abc",
            "",
            "1m",
            "340282366920938463463374607431768211455",
        ];
        for n in [0u64, 3, 7, 10, u64::MAX] {
            let typed = Counter(n);
            let text = row(&[("orig-packets", &n.to_string())]);
            for v in values {
                for op in ["", "<", ">"] {
                    let query = q(&[&format!("{op}orig-packets={v}")]);
                    for mode in [QueryCompare::Numeric, QueryCompare::String] {
                        assert_eq!(
                            query.matches(&typed, mode, &mut String::new(), &mut Vec::new()),
                            hit(&query, &text, mode),
                            "{n} {op}{v} {mode:?}"
                        );
                    }
                }
            }
        }
    }
}
