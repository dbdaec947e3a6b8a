//! The one error type of the protocol layer.

/// Everything that can be wrong with bytes that came from the wire or with a command that is
/// about to go onto it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// A length prefix started with a reserved control byte (`0xF8..=0xFF`).
    #[error("reserved control byte 0x{0:02X} where a word length was expected")]
    ControlByte(u8),
    /// A word announced a length above the configured cap.
    #[error("word of {len} bytes exceeds the limit of {max} bytes")]
    WordTooLong { len: u64, max: usize },
    /// A sentence had more words than the configured cap.
    #[error("sentence has more than {max} words")]
    TooManyWords { max: usize },
    /// A reply sentence began with a word that is not a known reply type.
    #[error("unknown reply type {0:?}")]
    UnknownReply(String),
    /// A reply word could not be understood (bad attribute syntax, non-ASCII name, ...).
    #[error("malformed reply word: {0}")]
    MalformedWord(String),
    /// A command could not be encoded (empty path, bad attribute name, ...).
    #[error("invalid command: {0}")]
    InvalidCommand(String),
    /// The legacy login challenge was not hex.
    #[error("login challenge is not hexadecimal")]
    BadChallenge,
}
