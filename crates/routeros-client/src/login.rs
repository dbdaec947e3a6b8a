//! The login exchange, run on the fresh connection before the reader and writer tasks start.
//!
//! Sends `/login =name=U =password=P` (RouterOS 6.43+) and falls back to the legacy MD5
//! challenge only when the router answers with `=ret=`. It deliberately never logs or formats
//! the login command, and wipes the encoded bytes after sending, because they hold the
//! password. Timeouts are the caller's (`login_timeout` around the whole exchange).
//!
//! The router's first bytes are looked at before they are decoded, because the login is
//! where a wrong port shows: an API-SSL port answers with a TLS alert, a web server with
//! `HTTP/1.1 400`, and decoding those as words would wait for bytes that never come.

use bytes::BytesMut;
use routeros_proto::{login::challenge_response, Command, Reply, ReplyKind};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use std::io;

use crate::config::ClientConfig;
use crate::error::Error;
use crate::multiplexer::{buffer_cap, fill, read_sentence, ReadError};

/// Logs in on `io`. Bytes the router sent after the last login reply stay in `buf`.
pub(crate) async fn login<T: AsyncRead + AsyncWrite + Unpin>(
    cfg: &ClientConfig,
    io: &mut T,
    buf: &mut BytesMut,
) -> Result<(), Error> {
    let first = Command::new("/login")
        .attr("name", &cfg.username)
        .attr("password", cfg.password.expose());
    let Some(challenge) = exchange(cfg, io, buf, &first, true).await? else {
        tracing::debug!(router = %cfg.router, user = %cfg.username, "logged in");
        return Ok(());
    };
    tracing::debug!(
        router = %cfg.router,
        "router asked for the legacy challenge login (RouterOS before 6.43)"
    );
    let response =
        challenge_response(cfg.password.expose().as_bytes(), &challenge).map_err(|source| {
            Error::Protocol {
                router: cfg.router.clone(),
                source,
            }
        })?;
    let second = Command::new("/login")
        .attr("name", &cfg.username)
        .attr("response", response);
    exchange(cfg, io, buf, &second, false).await?;
    tracing::debug!(router = %cfg.router, user = %cfg.username, "logged in (legacy challenge)");
    Ok(())
}

/// What the first bytes from the peer say it is.
#[derive(Debug, PartialEq, Eq)]
enum Peer {
    /// Too few bytes to tell.
    Unknown,
    /// A RouterOS reply: a short first word (length < 0x80) that starts with `!`.
    Api,
    /// A TLS record (alert or handshake, any TLS version): an API-SSL port.
    Tls,
    /// Something else; what it looks like, for the error.
    Other(String),
}

/// Classifies the first bytes the peer sent. Leading empty sentences (`00`) are skipped, as
/// the decoder does.
///
/// What is shown of a foreign peer is kept short: a port that echoes (a misconfigured
/// forward) sends our own `/login` back, and its first 16 bytes end before the password word
/// can start (`/login` and the `=name=` word take at least 14 bytes, `=password=` 11 more).
fn identify(buf: &[u8]) -> Peer {
    let start = buf.iter().position(|&b| b != 0).unwrap_or(buf.len());
    let bytes = &buf[start..];
    let [first, second, ..] = *bytes else {
        return Peer::Unknown;
    };
    if (0x14..=0x17).contains(&first) && second == 0x03 {
        return Peer::Tls;
    }
    if first < 0x80 && second == b'!' {
        return Peer::Api;
    }
    if b"HTTP/".starts_with(&bytes[..bytes.len().min(5)]) && bytes.len() < 5 {
        return Peer::Unknown;
    }
    if bytes.starts_with(b"HTTP/") {
        let line = bytes
            .split(|&b| b == b'\r' || b == b'\n')
            .next()
            .unwrap_or(bytes);
        return Peer::Other(format!("an HTTP response ({})", quote(line, 64)));
    }
    Peer::Other(format!(
        "bytes that are not a RouterOS reply ({})",
        quote(bytes, 16)
    ))
}

/// Up to `max` bytes from the network as a quoted, escaped string.
fn quote(bytes: &[u8], max: usize) -> String {
    let shown = &bytes[..bytes.len().min(max)];
    let more = if bytes.len() > shown.len() { "..." } else { "" };
    format!("\"{}{more}\"", shown.escape_ascii())
}

/// `text` with every occurrence of the password (as [`quote`] escapes it) replaced by `***`:
/// what a foreign peer sent may be our own login echoed back.
fn redact(text: String, password: &str) -> String {
    if password.is_empty() {
        return text;
    }
    let escaped = password.as_bytes().escape_ascii().to_string();
    text.replace(&escaped, "***")
}

/// Reads until the first bytes show what answered, and fails unless it is the RouterOS API.
/// Nothing is consumed.
async fn expect_api<T: AsyncRead + Unpin>(
    cfg: &ClientConfig,
    io: &mut T,
    buf: &mut BytesMut,
) -> Result<(), Error> {
    let cap = buffer_cap(&cfg.limits);
    loop {
        match identify(buf) {
            Peer::Api => return Ok(()),
            Peer::Tls => {
                return Err(Error::TlsPort {
                    router: cfg.router.clone(),
                    address: cfg.address.clone(),
                })
            }
            Peer::Other(found) => {
                return Err(Error::NotApi {
                    router: cfg.router.clone(),
                    address: cfg.address.clone(),
                    found: redact(found, cfg.password.expose()),
                })
            }
            Peer::Unknown => {}
        }
        if let Err(e) = fill(io, buf, cap).await {
            return Err(match e {
                ReadError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof && buf.is_empty() => {
                    Error::Io {
                        router: cfg.router.clone(),
                        source: io::Error::new(
                            e.kind(),
                            "the router closed the connection before answering the login (an \
                             API-SSL port does that to a plain client: if this is one, set tls \
                             = true or use port 8728; a service limited to other addresses \
                             does it too: see /ip service print)",
                        ),
                    }
                }
                e => e.into_error(&cfg.router),
            });
        }
    }
}

/// Sends one untagged login command and reads replies up to its `!done`. Returns the
/// `!done`'s `=ret=`; a `!trap` becomes [`Error::LoginFailed`]. `first`: this is the first
/// exchange, so the reply is also the first thing the peer says; check what it is.
async fn exchange<T: AsyncRead + AsyncWrite + Unpin>(
    cfg: &ClientConfig,
    io: &mut T,
    buf: &mut BytesMut,
    cmd: &Command,
    first: bool,
) -> Result<Option<String>, Error> {
    let router = || cfg.router.clone();
    let mut out = Vec::new();
    let encoded = cmd.encode(None, &mut out);
    let written = match encoded {
        Ok(()) => io.write_all(&out).await.and(io.flush().await),
        Err(source) => {
            // The password cannot make this fail (values are free-form bytes); say which part did.
            return Err(Error::InvalidCommand {
                router: router(),
                source,
            });
        }
    };
    out.fill(0);
    written.map_err(|source| Error::Io {
        router: router(),
        source,
    })?;

    if first {
        expect_api(cfg, io, buf).await?;
    }
    let mut refused: Option<String> = None;
    loop {
        let sentence = read_sentence(io, buf, &cfg.limits)
            .await
            .map_err(|e| e.into_error(&cfg.router))?;
        let reply = Reply::parse(sentence).map_err(|source| Error::Protocol {
            router: router(),
            source,
        })?;
        match reply.kind() {
            ReplyKind::Done => {
                return match refused {
                    Some(message) => {
                        tracing::debug!(router = %cfg.router, user = %cfg.username, reason = %message, "login refused");
                        Err(Error::LoginFailed {
                            router: router(),
                            message,
                        })
                    }
                    None => Ok(reply.ret().map(str::to_owned)),
                };
            }
            ReplyKind::Trap => {
                if refused.is_none() {
                    refused = Some(
                        reply
                            .message()
                            .unwrap_or_else(|| "the router refused the login".into()),
                    );
                }
            }
            ReplyKind::Fatal => {
                return Err(Error::Fatal {
                    router: router(),
                    reason: reply.message().unwrap_or_else(|| "no reason given".into()),
                });
            }
            ReplyKind::Re | ReplyKind::Empty => {
                tracing::debug!(router = %cfg.router, kind = reply.kind().as_word(), "ignoring a reply during login");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_tell_the_api_from_tls_and_the_rest() {
        assert_eq!(identify(b""), Peer::Unknown);
        assert_eq!(identify(b"\x05"), Peer::Unknown);
        assert_eq!(identify(b"\x05!done\x00"), Peer::Api);
        assert_eq!(identify(b"\x00\x00\x05!trap"), Peer::Api);
        assert_eq!(identify(b"\x06!fatal"), Peer::Api);
        // A TLS alert (TLS 1.2 record) and a handshake record.
        assert_eq!(identify(b"\x15\x03\x03\x00\x02\x02\x32"), Peer::Tls);
        assert_eq!(identify(b"\x16\x03\x01"), Peer::Tls);
        // "HTT" could still be HTTP: wait; "HTTP/" is.
        assert_eq!(identify(b"HTT"), Peer::Unknown);
        assert_eq!(
            identify(b"HTTP/1.1 400 Bad Request\r\nServer: x\r\n\r\n"),
            Peer::Other("an HTTP response (\"HTTP/1.1 400 Bad Request\")".into())
        );
        assert_eq!(
            identify(b"SSH-2.0-ROSSSH\r\n"),
            Peer::Other("bytes that are not a RouterOS reply (\"SSH-2.0-ROSSSH\\r\\n\")".into())
        );
        // A long first word is no RouterOS reply either.
        assert!(matches!(identify(b"\x81\x00!"), Peer::Other(_)));
        let long = vec![b'x'; 100];
        let Peer::Other(found) = identify(&long) else {
            panic!()
        };
        assert!(
            found.ends_with(&format!("(\"{}...\")", "x".repeat(16))),
            "{found}"
        );
        // The HTTP status line is shown up to 64 bytes.
        let line = format!("HTTP/1.1 400 {}", "y".repeat(100));
        let Peer::Other(found) = identify(line.as_bytes()) else {
            panic!()
        };
        assert!(
            found.ends_with(&format!("{}...\")", "y".repeat(51))),
            "{found}"
        );
    }

    #[test]
    fn an_echoed_login_never_shows_the_password() {
        for (name, password) in [("a", "hunter2"), ("admin", "x"), ("a", "p\u{e9}ss")] {
            let mut echo = Vec::new();
            Command::new("/login")
                .attr("name", name)
                .attr("password", password)
                .encode(None, &mut echo)
                .unwrap();
            let Peer::Other(found) = identify(&echo) else {
                panic!()
            };
            let shown = redact(found, password);
            assert!(shown.contains("/login"), "{shown}");
            assert!(!shown.contains("=password="), "{shown}");
        }
        assert_eq!(
            redact("\"HTTP/1.1 400 hunter2\"".into(), "hunter2"),
            "\"HTTP/1.1 400 ***\""
        );
        assert_eq!(redact("x".into(), ""), "x");
    }
}
