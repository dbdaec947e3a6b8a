//! The one error type of the client crate.
//!
//! Every variant names the router and its message says what to do. It deliberately carries no
//! command words: a `/login` command holds the password, so errors name only a command's path.

use std::fmt;
use std::time::Duration;

use routeros_proto::ProtoError;

/// Everything that can go wrong talking to one router.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The socket failed (connect refused, reset, closed by the router, ...).
    #[error(
        "router {router}: connection error: {source}; check that the router is reachable and \
         that its API service is enabled (/ip service)"
    )]
    Io {
        router: String,
        #[source]
        source: std::io::Error,
    },
    /// The TLS setup or handshake failed; the message says what to check.
    #[error("router {router}: TLS error: {message}")]
    Tls { router: String, message: String },
    /// The port answered the login with TLS: it is an API-SSL port, and this router is
    /// configured for plain TCP.
    #[error(
        "router {router}: {address} answered the login with TLS, so it is an API-SSL port; \
         set tls = true or use port 8728"
    )]
    TlsPort { router: String, address: String },
    /// What answers on the port is not the RouterOS API at all (an HTTP server, SSH, ...).
    #[error(
        "router {router}: {address} answered the login with {found}: this is not the RouterOS \
         API; it listens on 8728 (API) / 8729 (API-SSL), see /ip service print"
    )]
    NotApi {
        router: String,
        address: String,
        /// What came back, e.g. `an HTTP response ("HTTP/1.1 400 Bad Request")`.
        found: String,
    },
    /// The router sent bytes that are not valid RouterOS API; the connection is dropped.
    #[error(
        "router {router}: protocol error: {source}; the connection was dropped, check that the \
         address points at the RouterOS API port (8728, or 8729 for TLS)"
    )]
    Protocol {
        router: String,
        #[source]
        source: ProtoError,
    },
    /// The router sent a reply that belongs to no command of this client: tagged with a tag
    /// that was never issued, or untagged although every command is tagged. Replies can no
    /// longer be matched to commands, so the connection was dropped.
    #[error(
        "router {router}: protocol error: {detail}; replies can no longer be matched to \
         commands, so the connection was dropped; check that the address points straight at \
         the router's API service (no proxy or port forward shared with another client), and \
         report the RouterOS version if it repeats"
    )]
    UnmatchedReply { router: String, detail: String },
    /// A command could not be encoded (bad path or property name); nothing was sent and the
    /// connection is fine. This is a bug in the caller.
    #[error(
        "router {router}: command not sent: {source}; this is a bug in rosguard, please report it"
    )]
    InvalidCommand {
        router: String,
        #[source]
        source: ProtoError,
    },
    /// The router refused a command with `!trap`. The connection is fine.
    #[error(
        "router {router}: the router refused the command: {message}{}; check the command's \
         arguments and that the API user's group has the policies it needs",
        category_note(.category)
    )]
    Trap {
        router: String,
        category: Option<u32>,
        message: String,
    },
    /// A collected reply ([`crate::Client::call`] and the helpers built on it) grew past a
    /// limit of [`crate::ClientConfig`] (`setting`: `max_reply_rows` or `max_reply_bytes`)
    /// before its `!done`. The connection was dropped to stop the rest of the reply, so every
    /// command in flight on it failed with this error, and the rows were freed.
    #[error(
        "router {router}: {what} passed the limit of {limit} {} ({setting}) before it ended; \
         the connection was dropped to stop it and free the memory; if the router really holds \
         that much, raise {setting}, otherwise check the command's query",
        limit_unit(setting)
    )]
    ReplyTooLarge {
        router: String,
        /// What was being read, e.g. `the reply to /ip/firewall/address-list/print`.
        what: String,
        limit: usize,
        /// The config field that set the limit.
        setting: &'static str,
    },
    /// The router sent `!fatal` and closed the session.
    #[error(
        "router {router}: the router ended the session: {reason}; reconnect, and check the \
         router's log if it repeats"
    )]
    Fatal { router: String, reason: String },
    /// Nothing arrived within the timeout named by `setting` (a [`crate::ClientConfig`] field:
    /// `connect_timeout`, `login_timeout` or `command_timeout`).
    ///
    /// After a command timeout the connection has been dropped: every command in flight on
    /// it failed with this error, and the client [`is_closed`](crate::Client::is_closed).
    #[error(
        "router {router}: timed out after {after:?} waiting for {what}{}; check the network and \
         the router's load, or raise {setting}",
        dropped_note(setting)
    )]
    Timeout {
        router: String,
        what: String,
        /// The config field that set the limit.
        setting: &'static str,
        /// How long was waited.
        after: Duration,
    },
    /// The router refused the username or password.
    #[error(
        "router {router}: login failed: {message}; check the username and password, and that the \
         user's group has the api policy (read,write,api)"
    )]
    LoginFailed { router: String, message: String },
    /// The connection is closed (by [`crate::Client::close`] or after an earlier failure).
    #[error("router {router}: the connection is closed; reconnect to send more commands")]
    Closed { router: String },
    /// The router answered, but not in the shape this client needs (a `count-only` without a
    /// number, a `print` without rows where one is required). The connection is fine.
    #[error(
        "router {router}: unexpected answer: {message}; check that the RouterOS version is \
         supported"
    )]
    Unexpected { router: String, message: String },
}

/// `; the connection was dropped` for a command timeout, which closes the connection.
fn dropped_note(setting: &str) -> &'static str {
    if setting == "command_timeout" {
        "; the connection was dropped (reconnect to go on)"
    } else {
        ""
    }
}

/// `rows` or `bytes`, for the limit named by `setting`.
fn limit_unit(setting: &str) -> &'static str {
    if setting.ends_with("bytes") {
        "bytes"
    } else {
        "rows"
    }
}

/// A human note for a trap category, e.g. ` (category 1: argument value failure)`.
fn category_note(category: &Option<u32>) -> CategoryNote {
    CategoryNote(*category)
}

struct CategoryNote(Option<u32>);

impl fmt::Display for CategoryNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(c) = self.0 else { return Ok(()) };
        let name = match c {
            0 => "missing item or command",
            1 => "argument value failure",
            2 => "execution interrupted",
            3 => "scripting failure",
            4 => "general failure",
            5 => "API failure",
            6 => "TTY failure",
            7 => "value generated with :return",
            _ => return write!(f, " (category {c})"),
        };
        write!(f, " (category {c}: {name})")
    }
}

impl Error {
    /// True when the connection is gone (or unusable) and the caller should reconnect:
    /// `Io`, `Tls`, `TlsPort`, `NotApi`, `Protocol`, `UnmatchedReply`, `ReplyTooLarge`,
    /// `Fatal`, `Timeout` and `Closed`. (`TlsPort` and `NotApi` are configuration mistakes:
    /// reconnecting repeats them until the config is fixed.)
    ///
    /// A `Timeout` counts because a router that stops answering one command usually stops
    /// answering all of them: a command timeout closes the connection.
    pub fn is_connection_lost(&self) -> bool {
        matches!(
            self,
            Error::Io { .. }
                | Error::Tls { .. }
                | Error::TlsPort { .. }
                | Error::NotApi { .. }
                | Error::Protocol { .. }
                | Error::UnmatchedReply { .. }
                | Error::ReplyTooLarge { .. }
                | Error::Fatal { .. }
                | Error::Timeout { .. }
                | Error::Closed { .. }
        )
    }

    /// The router this error is about.
    pub fn router(&self) -> &str {
        match self {
            Error::Io { router, .. }
            | Error::Tls { router, .. }
            | Error::TlsPort { router, .. }
            | Error::NotApi { router, .. }
            | Error::Protocol { router, .. }
            | Error::UnmatchedReply { router, .. }
            | Error::ReplyTooLarge { router, .. }
            | Error::InvalidCommand { router, .. }
            | Error::Trap { router, .. }
            | Error::Fatal { router, .. }
            | Error::Timeout { router, .. }
            | Error::LoginFailed { router, .. }
            | Error::Closed { router }
            | Error::Unexpected { router, .. } => router,
        }
    }

    /// The trap message, when this is a `!trap`.
    pub fn trap_message(&self) -> Option<&str> {
        match self {
            Error::Trap { message, .. } => Some(message),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_names_the_router() {
        let r = || "edge-1".to_string();
        let all = [
            Error::Io {
                router: r(),
                source: std::io::Error::other("x"),
            },
            Error::Tls {
                router: r(),
                message: "x".into(),
            },
            Error::TlsPort {
                router: r(),
                address: "x".into(),
            },
            Error::NotApi {
                router: r(),
                address: "x".into(),
                found: "x".into(),
            },
            Error::Protocol {
                router: r(),
                source: ProtoError::BadChallenge,
            },
            Error::UnmatchedReply {
                router: r(),
                detail: "x".into(),
            },
            Error::InvalidCommand {
                router: r(),
                source: ProtoError::BadChallenge,
            },
            Error::Trap {
                router: r(),
                category: Some(1),
                message: "x".into(),
            },
            Error::ReplyTooLarge {
                router: r(),
                what: "x".into(),
                limit: 1,
                setting: "max_reply_rows",
            },
            Error::Fatal {
                router: r(),
                reason: "x".into(),
            },
            Error::Timeout {
                router: r(),
                what: "x".into(),
                setting: "command_timeout",
                after: Duration::from_secs(30),
            },
            Error::LoginFailed {
                router: r(),
                message: "x".into(),
            },
            Error::Closed { router: r() },
            Error::Unexpected {
                router: r(),
                message: "x".into(),
            },
        ];
        for e in &all {
            assert_eq!(e.router(), "edge-1");
            assert!(e.to_string().starts_with("router edge-1: "), "{e}");
        }
        let lost: Vec<bool> = all.iter().map(Error::is_connection_lost).collect();
        assert_eq!(
            lost,
            [
                true, true, true, true, true, true, false, false, true, true, true, false, true,
                false
            ]
        );
    }

    #[test]
    fn timeouts_name_the_setting_and_the_wait() {
        let e = Error::Timeout {
            router: "edge-1".into(),
            what: "the reply to /ip/address/print".into(),
            setting: "command_timeout",
            after: Duration::from_secs(30),
        };
        assert_eq!(
            e.to_string(),
            "router edge-1: timed out after 30s waiting for the reply to /ip/address/print; the \
             connection was dropped (reconnect to go on); check the network and the router's \
             load, or raise command_timeout"
        );
        let e = Error::Timeout {
            router: "edge-1".into(),
            what: "the login as \"admin\"".into(),
            setting: "login_timeout",
            after: Duration::from_millis(1500),
        };
        assert_eq!(
            e.to_string(),
            "router edge-1: timed out after 1.5s waiting for the login as \"admin\"; check the \
             network and the router's load, or raise login_timeout"
        );
    }

    #[test]
    fn reply_too_large_names_the_limit_and_the_setting() {
        let e = Error::ReplyTooLarge {
            router: "edge-1".into(),
            what: "the reply to /ip/firewall/address-list/print".into(),
            limit: 200_000,
            setting: "max_reply_rows",
        };
        assert_eq!(
            e.to_string(),
            "router edge-1: the reply to /ip/firewall/address-list/print passed the limit of \
             200000 rows (max_reply_rows) before it ended; the connection was dropped to stop \
             it and free the memory; if the router really holds that much, raise \
             max_reply_rows, otherwise check the command's query"
        );
        let e = Error::ReplyTooLarge {
            router: "edge-1".into(),
            what: "the reply to /ip/address/print".into(),
            limit: 4096,
            setting: "max_reply_bytes",
        };
        assert!(
            e.to_string()
                .contains("limit of 4096 bytes (max_reply_bytes)"),
            "{e}"
        );
    }

    #[test]
    fn trap_display_names_the_category() {
        let e = Error::Trap {
            router: "r".into(),
            category: Some(1),
            message: "invalid value".into(),
        };
        assert!(e
            .to_string()
            .contains("invalid value (category 1: argument value failure)"));
        let e = Error::Trap {
            router: "r".into(),
            category: None,
            message: "failure: already have such entry".into(),
        };
        assert!(e
            .to_string()
            .contains("refused the command: failure: already have such entry;"));
    }
}
