//! The one error type of the simulator crate.
//!
//! Errors here are about setting the simulator up (scenario files, TLS material, configuration).
//! What a client does wrong on the wire is answered on the wire (`!trap`, `!fatal`), never
//! surfaced as an error of this type.

use std::path::PathBuf;

/// Everything that can stop the simulator from being set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// A scenario file is malformed; the message names the bad key.
    #[error("scenario {origin}: {message}")]
    Scenario {
        /// Where the scenario came from (a path or `<embedded>`).
        origin: String,
        /// What is wrong, naming the table and key.
        message: String,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be generated or loaded.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// A configuration value is out of range or inconsistent.
    #[error("invalid simulator configuration: {0}")]
    Config(String),
    /// Reading or changing a kernel conntrack table failed (`kernel`).
    #[error("conntrack of network namespace {netns}: {message}")]
    Conntrack {
        /// The namespace, or `(current)`.
        netns: String,
        /// What failed and what to do.
        message: String,
    },
    /// Binding the listener or another socket operation failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<SimError> for std::io::Error {
    fn from(e: SimError) -> Self {
        match e {
            SimError::Io(io) => io,
            other => std::io::Error::other(other),
        }
    }
}
