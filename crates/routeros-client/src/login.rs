//! The login exchange, run on the fresh connection before the reader and writer tasks start.
//!
//! Sends `/login =name=U =password=P` (RouterOS 6.43+) and falls back to the legacy MD5
//! challenge only when the router answers with `=ret=`. It deliberately never logs or formats
//! the login command, and wipes the encoded bytes after sending, because they hold the
//! password. Timeouts are the caller's (`login_timeout` around the whole exchange).

use bytes::BytesMut;
use routeros_proto::{login::challenge_response, Command, Reply, ReplyKind};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::multiplexer::read_sentence;
use crate::{ClientConfig, Error};

/// Logs in on `io`. Bytes the router sent after the last login reply stay in `buf`.
pub(crate) async fn login<T: AsyncRead + AsyncWrite + Unpin>(
    cfg: &ClientConfig,
    io: &mut T,
    buf: &mut BytesMut,
) -> Result<(), Error> {
    let first = Command::new("/login")
        .attr("name", &cfg.username)
        .attr("password", cfg.password.expose());
    let Some(challenge) = exchange(cfg, io, buf, &first).await? else {
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
    exchange(cfg, io, buf, &second).await?;
    tracing::debug!(router = %cfg.router, user = %cfg.username, "logged in (legacy challenge)");
    Ok(())
}

/// Sends one untagged login command and reads replies up to its `!done`. Returns the
/// `!done`'s `=ret=`; a `!trap` becomes [`Error::LoginFailed`].
async fn exchange<T: AsyncRead + AsyncWrite + Unpin>(
    cfg: &ClientConfig,
    io: &mut T,
    buf: &mut BytesMut,
    cmd: &Command,
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
