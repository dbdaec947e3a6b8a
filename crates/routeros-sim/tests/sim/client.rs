//! A small raw RouterOS API client for the tests, built on routeros-proto only: it encodes
//! command words and decodes reply sentences, nothing more (no login logic, no tag routing),
//! so tests see exactly what the simulator sends.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use routeros_proto::{decode_sentence, encode_sentence, Limits, ProtoError, Reply, ReplyKind};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous bound on any single awaited event.
pub const WAIT: Duration = Duration::from_secs(20);

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What reading a reply can end in.
#[derive(Debug)]
pub enum ReadError {
    /// The server closed the connection.
    Eof,
    /// The bytes were no valid sentence.
    Proto(ProtoError),
    /// Socket error (kept for the failure message).
    Io(#[allow(dead_code)] std::io::Error),
}

pub struct Client {
    io: Box<dyn Io>,
    buf: BytesMut,
    pub limits: Limits,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let s = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect failed");
        Client::over(Box::new(s))
    }

    pub fn over(io: Box<dyn Io>) -> Client {
        Client {
            io,
            buf: BytesMut::new(),
            limits: Limits::default(),
        }
    }

    /// Connects and logs in as admin with the empty password.
    pub async fn admin(addr: SocketAddr) -> Client {
        let mut c = Client::connect(addr).await;
        c.login("admin", "").await;
        c
    }

    pub async fn send(&mut self, words: &[&str]) {
        let mut out = Vec::new();
        encode_sentence(words, &mut out);
        self.send_raw(&out).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.expect("write failed");
        self.io.flush().await.expect("flush failed");
    }

    /// The next reply, within [`WAIT`].
    pub async fn try_read(&mut self) -> Result<Reply, ReadError> {
        tokio::time::timeout(WAIT, async {
            loop {
                match decode_sentence(&mut self.buf, &self.limits) {
                    Ok(Some(s)) => {
                        return Reply::parse(s).map_err(ReadError::Proto);
                    }
                    Ok(None) => {}
                    Err(e) => return Err(ReadError::Proto(e)),
                }
                self.buf.reserve(64 * 1024);
                match self.io.read_buf(&mut self.buf).await {
                    Ok(0) => return Err(ReadError::Eof),
                    Ok(_) => {}
                    Err(e) => return Err(ReadError::Io(e)),
                }
            }
        })
        .await
        .expect("timed out waiting for a reply")
    }

    pub async fn read(&mut self) -> Reply {
        match self.try_read().await {
            Ok(r) => r,
            Err(e) => panic!("expected a reply, got {e:?}"),
        }
    }

    /// Reads until EOF (or a socket error); fails on any further reply.
    pub async fn expect_eof(&mut self) {
        match self.try_read().await {
            Err(ReadError::Eof) | Err(ReadError::Io(_)) => {}
            other => panic!("expected the server to close, got {other:?}"),
        }
    }

    /// Reads replies up to and including `!done` (or a `!fatal`).
    pub async fn until_done(&mut self) -> Vec<Reply> {
        let mut out = Vec::new();
        loop {
            let r = self.read().await;
            let kind = r.kind();
            out.push(r);
            if matches!(kind, ReplyKind::Done | ReplyKind::Fatal) {
                return out;
            }
        }
    }

    /// Sends a command and reads its replies.
    pub async fn call(&mut self, words: &[&str]) -> Vec<Reply> {
        self.send(words).await;
        self.until_done().await
    }

    pub async fn login(&mut self, user: &str, password: &str) {
        let name = format!("=name={user}");
        let pass = format!("=password={password}");
        let r = self.call(&["/login", &name, &pass]).await;
        assert_eq!(kinds(&r), [ReplyKind::Done], "login failed: {r:?}");
    }

    /// `!re` rows of a command.
    pub async fn rows(&mut self, words: &[&str]) -> Vec<Reply> {
        let r = self.call(words).await;
        assert_eq!(r.last().map(Reply::kind), Some(ReplyKind::Done), "{r:?}");
        assert!(
            r.iter()
                .all(|x| matches!(x.kind(), ReplyKind::Re | ReplyKind::Done | ReplyKind::Empty)),
            "unexpected reply in {r:?}"
        );
        r.into_iter()
            .filter(|x| x.kind() == ReplyKind::Re)
            .collect()
    }
}

pub fn kinds(replies: &[Reply]) -> Vec<ReplyKind> {
    replies.iter().map(Reply::kind).collect()
}

/// `name` of every row.
pub fn col(rows: &[Reply], name: &str) -> Vec<String> {
    rows.iter()
        .map(|r| r.get_str(name).unwrap_or("<absent>").to_owned())
        .collect()
}

/// The names of a row's attributes, in order.
pub fn names(row: &Reply) -> Vec<String> {
    row.attrs().map(|a| a.name.to_owned()).collect()
}
