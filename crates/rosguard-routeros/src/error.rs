//! The error of the RouterOS side: a reply row that cannot become a checked domain type. Not
//! fatal: the caller logs the row and skips it.

use rosguard_core::excerpt;

/// A reply row that cannot become a [`Connection`](rosguard_core::Connection) or a
/// [`ListEntry`](rosguard_core::ListEntry). The caller logs it and skips the row.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_field() {
        let e = RowError::invalid("src-address", b"1.2.3");
        assert_eq!(e.to_string(), "row has a bad `src-address` value \"1.2.3\"");
        let e = RowError::Missing { field: ".id" };
        assert_eq!(e.to_string(), "row has no `.id` property");
    }
}
