//! A tiny scripted RouterOS API server for the client tests: it accepts one connection on
//! 127.0.0.1:0 and runs a per-test script against it. It is deliberately dumb (no menus, no
//! state): each test says exactly which sentences come back, so odd router behaviour
//! (reordering, late replies, garbage) is easy to stage. The real simulator is routeros-sim.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use routeros_client::{Client, ClientConfig, Secret};
use routeros_proto::{decode_sentence, encode_sentence, Command, Limits};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub const PASSWORD: &str = "s3cret-Passw0rd";

pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A running scripted server.
pub struct TestServer {
    pub addr: SocketAddr,
    handle: JoinHandle<()>,
}

impl TestServer {
    /// Waits for the script to finish; a panic in the script fails the test here.
    pub async fn join(self) {
        self.handle.await.expect("server script panicked");
    }
}

/// Accepts one plain TCP connection and runs `script` on it.
pub async fn serve<F, Fut>(script: F) -> TestServer
where
    F: FnOnce(Conn) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        script(Conn::new(Box::new(tcp))).await;
    });
    TestServer { addr, handle }
}

/// Like [`serve`], with the listening socket's send buffer (which the accepted connection
/// inherits, and which then does not grow on its own) set to `send_buffer` bytes: the kernel
/// holds little of what the server writes, so what it manages to write shows what the client
/// took in.
pub async fn serve_with_send_buffer<F, Fut>(send_buffer: u32, script: F) -> TestServer
where
    F: FnOnce(Conn) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(send_buffer).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(16).unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        script(Conn::new(Box::new(tcp))).await;
    });
    TestServer { addr, handle }
}

/// Accepts one plain TCP connection and hands the raw socket to `script`: for peers that
/// are not the RouterOS API (a TLS-only port, a web server).
pub async fn serve_tcp<F, Fut>(script: F) -> TestServer
where
    F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        script(tcp).await;
    });
    TestServer { addr, handle }
}

/// Reads whatever arrives next on `tcp` (at least one byte); `None` at EOF or error.
pub async fn read_some(tcp: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut buf = vec![0; 64 * 1024];
    match tcp.read(&mut buf).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.truncate(n);
            Some(buf)
        }
    }
}

/// Reads until EOF (the client hung up); panics if the client never does so cleanly.
pub async fn until_eof(tcp: &mut tokio::net::TcpStream) {
    while read_some(tcp).await.is_some() {}
}

/// Accepts `count` plain TCP connections, one after the other, and runs `script(i, conn)` on
/// the `i`-th (from 0) before accepting the next: for tests where the client reconnects.
pub async fn serve_each<F, Fut>(count: usize, script: F) -> TestServer
where
    F: Fn(usize, Conn) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        for i in 0..count {
            let (tcp, _) = listener.accept().await.unwrap();
            script(i, Conn::new(Box::new(tcp))).await;
        }
    });
    TestServer { addr, handle }
}

/// Accepts one TLS connection and runs `script` on it; if the client rejects the handshake
/// the script is not run.
pub async fn serve_tls<F, Fut>(acceptor: tokio_rustls::TlsAcceptor, script: F) -> TestServer
where
    F: FnOnce(Conn) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        if let Ok(tls) = acceptor.accept(tcp).await {
            script(Conn::new(Box::new(tls))).await;
        }
    });
    TestServer { addr, handle }
}

/// The client still works after what a test did to it: one more command goes through (the
/// test's server must answer `/system/identity/print`).
pub async fn still_works(client: &Client) {
    client
        .call(Command::new("/system/identity/print"))
        .await
        .unwrap();
}

/// A client config for `addr` with the test credentials.
pub fn config(addr: SocketAddr) -> ClientConfig {
    ClientConfig::new(
        "test-router",
        addr.to_string(),
        "admin",
        Secret::new(PASSWORD.into()),
    )
}

/// One command the client sent, as text words.
#[derive(Debug, Clone)]
pub struct Sent {
    pub words: Vec<String>,
}

impl Sent {
    pub fn path(&self) -> &str {
        &self.words[0]
    }

    /// The value of `=name=value`.
    pub fn attr(&self, name: &str) -> Option<&str> {
        let prefix = format!("={name}=");
        self.words.iter().find_map(|w| w.strip_prefix(&prefix))
    }

    pub fn tag(&self) -> Option<&str> {
        self.words.iter().find_map(|w| w.strip_prefix(".tag="))
    }

    pub fn has(&self, word: &str) -> bool {
        self.words.iter().any(|w| w == word)
    }
}

/// The server side of one connection.
pub struct Conn {
    io: Box<dyn Io>,
    buf: BytesMut,
}

impl Conn {
    fn new(io: Box<dyn Io>) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
        }
    }

    /// The next command, or `None` at EOF (or a broken connection).
    pub async fn recv(&mut self) -> Option<Sent> {
        loop {
            let Ok(decoded) = decode_sentence(&mut self.buf, &Limits::default()) else {
                return None; // not the API (e.g. a TLS ClientHello): treat as gone
            };
            if let Some(s) = decoded {
                let words = s
                    .words()
                    .map(|w| String::from_utf8_lossy(w).into_owned())
                    .collect();
                return Some(Sent { words });
            }
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The next command, which must have this path.
    pub async fn expect(&mut self, path: &str) -> Sent {
        let sent = self
            .recv()
            .await
            .unwrap_or_else(|| panic!("EOF while waiting for {path}"));
        assert_eq!(sent.path(), path, "unexpected command {sent:?}");
        sent
    }

    /// Sends one sentence.
    pub async fn send(&mut self, words: &[&str]) {
        let mut out = Vec::new();
        encode_sentence(words, &mut out);
        self.raw(&out).await;
    }

    /// Sends one sentence with `.tag=tag` appended.
    pub async fn send_tagged(&mut self, tag: &str, words: &[&str]) {
        let tag_word = format!(".tag={tag}");
        let mut all: Vec<&str> = words.to_vec();
        all.push(&tag_word);
        self.send(&all).await;
    }

    /// One write attempt that does not wait: `Some(n)` bytes written (0 if the client has
    /// gone), `None` if the socket is full (the client is not reading).
    pub async fn write_now(&mut self, bytes: &[u8]) -> Option<usize> {
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match Pin::new(&mut self.io).poll_write(cx, bytes) {
                std::task::Poll::Ready(Ok(n)) => Some(n),
                std::task::Poll::Ready(Err(_)) => Some(0),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }

    /// Writes `bytes`; false once the client has gone (the write failed).
    pub async fn try_raw(&mut self, bytes: &[u8]) -> bool {
        self.io.write_all(bytes).await.is_ok()
    }

    pub async fn raw(&mut self, bytes: &[u8]) {
        // The client may have gone away; scripts that care check with recv().
        let _ = self.io.write_all(bytes).await;
        let _ = self.io.flush().await;
    }

    /// Accepts a 6.43+ login with the test credentials.
    pub async fn login(&mut self) {
        let l = self.expect("/login").await;
        assert_eq!(l.attr("name"), Some("admin"));
        assert_eq!(l.attr("password"), Some(PASSWORD));
        self.send(&["!done"]).await;
    }

    /// Answers the next command (which must have `path`) with `!done` plus `extra` words.
    pub async fn answer_done(&mut self, path: &str, extra: &[&str]) -> Sent {
        let c = self.expect(path).await;
        let tag = c.tag().expect("client commands are tagged").to_owned();
        let mut words = vec!["!done"];
        words.extend_from_slice(extra);
        self.send_tagged(&tag, &words).await;
        c
    }

    /// Closes the connection.
    pub async fn close(mut self) {
        let _ = self.io.shutdown().await;
    }
}

/// Captured tracing events as `LEVEL message field=value ...` lines.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<String>>>);

impl Logs {
    /// Captures every event on this thread until the guard is dropped. Tests that use it run
    /// on the current-thread runtime, so the client's tasks log on this thread too.
    pub fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let guard = tracing::subscriber::set_default(Capture(logs.clone()));
        (logs, guard)
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn any(&self, pred: impl Fn(&str) -> bool) -> bool {
        self.lines().iter().any(|l| pred(l))
    }
}

struct Capture(Logs);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut f = Fields(format!("SPAN {}", span.metadata().name()));
        span.record(&mut f);
        self.0 .0.lock().unwrap().push(f.0);
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut f = Fields("SPAN-RECORD".into());
        values.record(&mut f);
        self.0 .0.lock().unwrap().push(f.0);
    }

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut f = Fields(event.metadata().level().to_string());
        event.record(&mut f);
        self.0 .0.lock().unwrap().push(f.0);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}
