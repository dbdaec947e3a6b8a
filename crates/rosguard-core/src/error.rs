//! The error type of the core: a configuration or user-supplied string that is not a valid
//! value, and [`excerpt`], which every layer uses to quote an offending value safely.
//!
//! Offending values are truncated, and quoted with `{:?}` so control characters are escaped: a
//! hostile router or config cannot make an error line arbitrarily long or drive a terminal.

/// The longest excerpt of an offending value kept in an error.
const EXCERPT_CHARS: usize = 64;

/// A lossy, truncated copy of a value for an error message (quote it with `{:?}`).
pub fn excerpt(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(&value[..value.len().min(EXCERPT_CHARS * 4)]);
    let mut out: String = text.chars().take(EXCERPT_CHARS).collect();
    if out.len() < text.len() || value.len() > EXCERPT_CHARS * 4 {
        out.push('…');
    }
    out
}

/// A configuration or user-supplied string that is not a valid value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {hint}")]
pub struct ParseError {
    what: &'static str,
    value: String,
    hint: &'static str,
}

impl ParseError {
    /// A value that is not a valid `what`, with a hint for the fix.
    pub fn new(what: &'static str, value: &str, hint: &'static str) -> Self {
        Self {
            what,
            value: excerpt(value.as_bytes()),
            hint,
        }
    }

    /// What kind of value was expected (e.g. `protocol`, `address`).
    pub fn what(&self) -> &'static str {
        self.what
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_truncated_and_lossy() {
        assert_eq!(excerpt(b"abc"), "abc");
        let long = vec![b'x'; 1000];
        let e = excerpt(&long);
        assert_eq!(e.chars().count(), EXCERPT_CHARS + 1);
        assert!(e.ends_with('…'));
        assert_eq!(excerpt(b"\xFFa"), "\u{FFFD}a");
    }

    #[test]
    fn parse_errors_quote_the_value_escaped() {
        let e = ParseError::new("address", "a\x1bb", "expected an address");
        assert_eq!(
            e.to_string(),
            "invalid address \"a\\u{1b}b\": expected an address"
        );
    }
}
