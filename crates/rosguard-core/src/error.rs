//! The error types of the core: a router row that cannot become a checked domain type, and a
//! configuration string that is not a valid value.
//!
//! Nothing here is fatal for the daemon: a [`RowError`] means "log this row and skip it", a
//! [`ParseError`] means "reject this configuration value". Offending values are truncated so a
//! hostile router cannot make a log line arbitrarily long.

/// The longest excerpt of an offending value kept in an error.
const EXCERPT_CHARS: usize = 64;

/// A lossy, truncated copy of a value for an error message.
pub(crate) fn excerpt(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(&value[..value.len().min(EXCERPT_CHARS * 4)]);
    let mut out: String = text.chars().take(EXCERPT_CHARS).collect();
    if out.len() < text.len() || value.len() > EXCERPT_CHARS * 4 {
        out.push('…');
    }
    out
}

/// A reply row that cannot become a [`Connection`](crate::model::Connection) or a
/// [`ListEntry`](crate::model::ListEntry). The caller logs it and skips the row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RowError {
    /// A property the row cannot do without is absent.
    #[error("row has no `{field}` property")]
    Missing {
        /// The RouterOS property name.
        field: &'static str,
    },
    /// A property is present but its value is not understood.
    #[error("row has a bad `{field}` value {value:?}")]
    Invalid {
        /// The RouterOS property name.
        field: &'static str,
        /// The offending value, lossily decoded and truncated.
        value: String,
    },
}

impl RowError {
    pub(crate) fn invalid(field: &'static str, value: &[u8]) -> Self {
        RowError::Invalid {
            field,
            value: excerpt(value),
        }
    }
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
    pub(crate) fn new(what: &'static str, value: &str, hint: &'static str) -> Self {
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
    fn messages_name_the_field() {
        let e = RowError::invalid("src-address", b"1.2.3");
        assert_eq!(e.to_string(), "row has a bad `src-address` value \"1.2.3\"");
        let e = RowError::Missing { field: ".id" };
        assert_eq!(e.to_string(), "row has no `.id` property");
    }
}
