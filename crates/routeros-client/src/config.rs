//! What [`crate::Client::connect`] needs to know: where, who, how to verify TLS, how long to wait.
//!
//! This is the client's own runtime configuration, already checked. It deliberately does not
//! read files or parse TOML: the daemon's config layer builds it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use routeros_proto::Limits;

/// A password. `Debug` and `Display` print `***`; only [`Secret::expose`] gives the text.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a password.
    pub fn new(secret: String) -> Self {
        Self(secret)
    }

    /// The password itself. Only the login code calls this.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How to verify the router's TLS certificate (API-SSL, port 8729).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsConfig {
    /// Verify the chain against the CA certificates in this PEM file, and the name against
    /// [`ClientConfig::tls_server_name`] (or the host part of the address).
    CaFile(PathBuf),
    /// Accept exactly the end-entity certificate with this SHA-256 (of its DER form); name and
    /// issuer are ignored. Handshake signatures are still verified.
    Fingerprint([u8; 32]),
    /// Accept any certificate. Logged as a warning on every connect.
    Insecure,
}

/// Everything needed to connect to and log in to one router.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The router's name, used in every error and log line.
    pub router: String,
    /// `host:port`, e.g. `192.168.88.1:8728` or `[2001:db8::1]:8729`.
    pub address: String,
    /// The API user.
    pub username: String,
    /// The API user's password.
    pub password: Secret,
    /// `None` = plain TCP.
    pub tls: Option<TlsConfig>,
    /// SNI and certificate name; default: the host part of `address`.
    pub tls_server_name: Option<String>,
    /// TCP connect, and separately the TLS handshake (default 10 s).
    pub connect_timeout: Duration,
    /// The whole login exchange (default 10 s).
    pub login_timeout: Duration,
    /// For [`crate::Client::call`] (and `count`, `call_many`): the whole command; for streams:
    /// the longest gap between two replies (default 30 s). On expiry the connection is
    /// dropped: every command on it fails with [`crate::Error::Timeout`].
    pub command_timeout: Duration,
    /// Decoder caps for everything the router sends.
    pub limits: Limits,
    /// The most `!re` rows one collected reply ([`crate::Client::call`] and every helper
    /// built on it) may have; default [`ClientConfig::DEFAULT_MAX_REPLY_ROWS`]. Checked as
    /// rows arrive: one more fails the command with [`crate::Error::ReplyTooLarge`] and drops
    /// the connection. Streams ([`crate::Client::stream`]) are not collected and not limited.
    pub max_reply_rows: usize,
    /// The most bytes the rows (and traps) of one collected reply may hold, counted as their
    /// size on the wire plus 16 bytes per word for the client's index of them; default
    /// [`ClientConfig::DEFAULT_MAX_REPLY_BYTES`]. Checked and enforced like `max_reply_rows`.
    pub max_reply_bytes: usize,
}

impl ClientConfig {
    /// Default of [`ClientConfig::max_reply_rows`]: 200,000 rows. Well above what rosguard
    /// collects in one command (a 30,000-entry block list, an allowlist of tens of thousands,
    /// the router's addresses), and above the ~146,000-entry list a CCR2116 stalled at, so a
    /// router that streams rows without end is stopped long before it matters.
    pub const DEFAULT_MAX_REPLY_ROWS: usize = 200_000;
    /// Default of [`ClientConfig::max_reply_bytes`]: 64 MiB. An address-list row as rosguard
    /// reads it (8 properties, a short comment) counts about 350 bytes, so this holds about
    /// 190,000 of them; it mainly stops a reply of few, huge rows. On top of it, each row
    /// costs a fixed ~350 bytes of bookkeeping, bounded by the row limit.
    pub const DEFAULT_MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

    /// A plain-TCP config with default timeouts and limits.
    pub fn new(
        router: impl Into<String>,
        address: impl Into<String>,
        username: impl Into<String>,
        password: Secret,
    ) -> Self {
        Self {
            router: router.into(),
            address: address.into(),
            username: username.into(),
            password,
            tls: None,
            tls_server_name: None,
            connect_timeout: Duration::from_secs(10),
            login_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(30),
            limits: Limits::default(),
            max_reply_rows: Self::DEFAULT_MAX_REPLY_ROWS,
            max_reply_bytes: Self::DEFAULT_MAX_REPLY_BYTES,
        }
    }

    /// The host part of `address`: `[v6]:port` -> `v6`, `host:port` -> `host`, `host` -> `host`.
    pub(crate) fn host(&self) -> &str {
        let a = self.address.trim();
        if let Some(rest) = a.strip_prefix('[') {
            return rest.split_once(']').map_or(rest, |(h, _)| h);
        }
        match a.rsplit_once(':') {
            // A bare IPv6 address without port has several colons: keep it whole.
            Some((h, _)) if !h.contains(':') => h,
            _ => a,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        let cfg = ClientConfig::new("r", "h:1", "u", s);
        assert!(!format!("{cfg:?}").contains("hunter2"));
        assert_eq!(cfg.password.expose(), "hunter2");
    }

    #[test]
    fn host_part() {
        let mut c = ClientConfig::new("r", "10.0.0.1:8729", "u", Secret::default());
        assert_eq!(c.host(), "10.0.0.1");
        c.address = "[2001:db8::1]:8729".into();
        assert_eq!(c.host(), "2001:db8::1");
        c.address = "router.lan:8728".into();
        assert_eq!(c.host(), "router.lan");
        c.address = "router.lan".into();
        assert_eq!(c.host(), "router.lan");
        c.address = "2001:db8::1".into();
        assert_eq!(c.host(), "2001:db8::1");
    }

    #[test]
    fn defaults() {
        let c = ClientConfig::new("r", "h:1", "u", Secret::default());
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.login_timeout, Duration::from_secs(10));
        assert_eq!(c.command_timeout, Duration::from_secs(30));
        assert!(c.tls.is_none() && c.tls_server_name.is_none());
        assert_eq!(c.max_reply_rows, 200_000);
        assert_eq!(c.max_reply_bytes, 64 * 1024 * 1024);
    }
}
