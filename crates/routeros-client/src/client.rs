//! [`Client`]: one logged-in connection to one router, shared by cheap clones.
//!
//! `connect` opens TCP (and TLS), logs in, then starts the reader and writer tasks of
//! [`crate::multiplexer`]. Each command gets a fresh `.tag`; `call` collects its rows under one
//! whole-command timeout and the collected-reply limits, `stream` hands them over through a
//! bounded channel. A command whose caller gives up (dropped future, dropped or cancelled
//! stream) is cancelled with `/cancel`; a command that times out or overflows its limits
//! drops the whole connection instead.
//! It deliberately does not reconnect: once [`Client::is_closed`], make a new one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use routeros_proto::{Command, Reply, ReplyKind};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{timeout, timeout_at, Instant};

use crate::config::{ClientConfig, TlsConfig};
use crate::error::Error;
use crate::multiplexer::STREAM_CAPACITY;
use crate::multiplexer::{
    run_reader, run_writer, CloseReason, Collector, ReplyLimits, Shared, Sink, WriterMsg,
    STREAM_BATCH,
};
use crate::stream::{collect, Response, Traps};
use crate::{login, tls};

/// How long `close` gives the writer to send `/quit` before it is aborted.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

trait Transport: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Transport for T {}

struct Tasks {
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

struct Inner {
    shared: Arc<Shared>,
    writer: mpsc::UnboundedSender<WriterMsg>,
    tasks: tokio::sync::Mutex<Option<Tasks>>,
    local_addr: SocketAddr,
    peer_addr: SocketAddr,
    command_timeout: Duration,
    reply_limits: ReplyLimits,
}

impl Drop for Inner {
    /// The last handle is gone: stop both tasks (no `/quit`; the socket just closes).
    fn drop(&mut self) {
        if let Some(tasks) = self.tasks.get_mut().take() {
            tasks.reader.abort();
            tasks.writer.abort();
        }
    }
}

/// A logged-in connection to one router. Clones share the connection; commands from many
/// tasks are pipelined on it.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("router", &self.router())
            .field("peer_addr", &self.inner.peer_addr)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Cancels a command's tag if the future waiting for it is dropped or times out.
struct CancelOnDrop<'a> {
    client: &'a Client,
    tag: u64,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.client.cancel_tag(self.tag);
        }
    }
}

impl Client {
    /// Connects (TCP, or TLS when `cfg.tls` is set) and logs in.
    pub async fn connect(cfg: ClientConfig) -> Result<Client, Error> {
        let router = cfg.router.clone();
        let tcp = timeout(cfg.connect_timeout, TcpStream::connect(&cfg.address))
            .await
            .map_err(|_| Error::Timeout {
                router: router.clone(),
                what: format!("the TCP connection to {}", cfg.address),
                setting: "connect_timeout",
                after: cfg.connect_timeout,
            })?
            .map_err(|e| Error::Io {
                router: router.clone(),
                source: std::io::Error::new(e.kind(), format!("connect to {}: {e}", cfg.address)),
            })?;
        let io_error = |source| Error::Io {
            router: router.clone(),
            source,
        };
        // Small request sentences must not wait for Nagle.
        tcp.set_nodelay(true).map_err(io_error)?;
        let local_addr = tcp.local_addr().map_err(io_error)?;
        let peer_addr = tcp.peer_addr().map_err(io_error)?;
        let mut transport: Box<dyn Transport> = match &cfg.tls {
            None => Box::new(tcp),
            Some(tls) => Box::new(
                timeout(cfg.connect_timeout, tls::handshake(&cfg, tls, tcp))
                    .await
                    .map_err(|_| Error::Timeout {
                        router: router.clone(),
                        // A plain API port reads the ClientHello as the start of a sentence
                        // and waits for the rest: say so, it is the likely mistake.
                        what: format!(
                            "the TLS handshake with {} (a plain API port stays silent here: if \
                             this is one, set tls = false, or use the API-SSL port 8729)",
                            cfg.address
                        ),
                        setting: "connect_timeout",
                        after: cfg.connect_timeout,
                    })??,
            ),
        };
        let mut buf = BytesMut::new();
        timeout(
            cfg.login_timeout,
            login::login(&cfg, &mut transport, &mut buf),
        )
        .await
        .map_err(|_| Error::Timeout {
            router: router.clone(),
            what: format!("the login as {:?}", cfg.username),
            setting: "login_timeout",
            after: cfg.login_timeout,
        })??;

        let client = Self::start(router, transport, buf, &cfg, local_addr, peer_addr);
        tracing::info!(
            router = %client.router(),
            address = %cfg.address,
            %local_addr,
            tls = tls_mode(cfg.tls.as_ref()),
            "connected to the router API"
        );
        Ok(client)
    }

    fn start(
        router: String,
        transport: Box<dyn Transport>,
        buf: BytesMut,
        cfg: &ClientConfig,
        local_addr: SocketAddr,
        peer_addr: SocketAddr,
    ) -> Client {
        let shared = Arc::new(Shared::new(router));
        let (rd, wr) = tokio::io::split(transport);
        let (writer, writer_rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(run_reader(rd, buf, cfg.limits, shared.clone()));
        let writer_task = tokio::spawn(run_writer(wr, writer_rx, shared.clone()));
        shared.set_tasks(reader.abort_handle(), writer_task.abort_handle());
        Client {
            inner: Arc::new(Inner {
                shared,
                writer,
                tasks: tokio::sync::Mutex::new(Some(Tasks {
                    reader,
                    writer: writer_task,
                })),
                local_addr,
                peer_addr,
                command_timeout: cfg.command_timeout,
                reply_limits: ReplyLimits {
                    rows: cfg.max_reply_rows,
                    bytes: cfg.max_reply_bytes,
                },
            }),
        }
    }

    /// The router's name from the config.
    pub fn router(&self) -> &str {
        self.inner.shared.router()
    }

    /// Our side of the socket; the daemon must never block this address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The router's side of the socket.
    pub fn peer_addr(&self) -> SocketAddr {
        self.inner.peer_addr
    }

    /// True after `!fatal`, EOF, an IO or protocol error, a command timeout, or
    /// [`Client::close`].
    pub fn is_closed(&self) -> bool {
        self.inner.shared.is_closed()
    }

    /// How many commands are waiting for replies.
    pub fn in_flight(&self) -> usize {
        self.inner.shared.in_flight()
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// Encodes `cmd` with a fresh tag, registers `sink` for it and queues it for the writer.
    fn start_command(&self, cmd: &Command, sink: Sink) -> Result<u64, Error> {
        let tag = self.inner.shared.issue_tag();
        let mut bytes = Vec::new();
        cmd.encode(Some(&tag.to_string()), &mut bytes)
            .map_err(|source| Error::InvalidCommand {
                router: self.router().to_owned(),
                source,
            })?;
        self.inner.shared.register(tag, sink)?;
        if self.inner.writer.send(WriterMsg::Send(bytes)).is_err() {
            self.inner.shared.forget(tag);
            return Err(Error::Closed {
                router: self.router().to_owned(),
            });
        }
        tracing::trace!(router = %self.router(), tag, path = cmd.path(), "command sent");
        Ok(tag)
    }

    fn collector(&self, tx: mpsc::UnboundedSender<routeros_proto::Reply>, cmd: &Command) -> Sink {
        Sink::Collect(Collector::new(tx, cmd.path(), self.inner.reply_limits))
    }

    /// Stops waiting for `tag` and, if it was still running, tells the router to stop it.
    /// Never blocks; replies that still arrive for `tag` are dropped by the reader.
    pub(crate) fn cancel_tag(&self, tag: u64) {
        if !self.inner.shared.forget(tag) || self.is_closed() {
            return;
        }
        let mut bytes = Vec::new();
        // Tagged like every command, but nobody waits for the tag: its own `!done` is dropped
        // as a reply to a finished command.
        let own = self.inner.shared.issue_tag().to_string();
        if Command::new("/cancel")
            .attr("tag", tag.to_string())
            .encode(Some(&own), &mut bytes)
            .is_ok()
        {
            let _ = self.inner.writer.send(WriterMsg::Send(bytes));
        }
        tracing::debug!(router = %self.router(), tag, "command cancelled");
    }

    /// A command got nothing within `after` (`command_timeout`): drops the connection, so
    /// that every command on it fails now instead of each waiting out its own timeout, and
    /// returns the error. A router that stops answering one command has, as far as this
    /// client can tell, stopped answering all of them; a new connection is the way on.
    pub(crate) fn drop_on_timeout(&self, what: String, after: Duration) -> Error {
        let reason = CloseReason::Timeout {
            what,
            setting: "command_timeout",
            after,
        };
        let error = reason.to_error(self.router());
        tracing::debug!(router = %self.router(), %error, "dropping the connection");
        self.inner.shared.close(reason);
        error
    }

    /// Sends `cmd` and collects its rows. A `!trap` becomes [`Error::Trap`] (after its
    /// `!done`). More rows or bytes than `max_reply_rows` / `max_reply_bytes` fail it with
    /// [`Error::ReplyTooLarge`] as soon as they arrive, and drop the connection. The whole
    /// command must finish within `command_timeout`, else [`Error::Timeout`] is returned and
    /// the connection dropped (every other command on it fails too, and
    /// [`Client::is_closed`] is true).
    pub async fn call(&self, cmd: Command) -> Result<Response, Error> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let tag = self.start_command(&cmd, self.collector(tx, &cmd))?;
        let mut guard = CancelOnDrop {
            client: self,
            tag,
            armed: true,
        };
        let result = timeout(self.inner.command_timeout, collect(&mut rx, self.shared())).await;
        match result {
            Ok(r) => {
                guard.armed = false;
                r
            }
            // Dropping the connection also stops waiting for the tag; nothing to cancel.
            Err(_) => Err(self.drop_on_timeout(
                format!("the reply to {}", cmd.path()),
                self.inner.command_timeout,
            )),
        }
    }

    /// Sends all `cmds` at once (pipelined) and collects each one's result, in order.
    ///
    /// Each command gets `command_timeout` from the moment the one before it finished (the
    /// router works through them in turn); once one times out the connection is dropped,
    /// and the rest report what they got before that: their result if it was complete, else
    /// the same timeout.
    pub async fn call_many<I>(&self, cmds: I) -> Vec<Result<Response, Error>>
    where
        I: IntoIterator<Item = Command>,
    {
        let mut started = Vec::new();
        for cmd in cmds {
            let (tx, rx) = mpsc::unbounded_channel();
            let tag = self.start_command(&cmd, self.collector(tx, &cmd));
            let path = cmd.path().to_owned();
            started.push((
                path,
                tag.map(|tag| {
                    (
                        CancelOnDrop {
                            client: self,
                            tag,
                            armed: true,
                        },
                        rx,
                    )
                }),
            ));
        }
        let mut results = Vec::with_capacity(started.len());
        let mut deadline = Instant::now() + self.inner.command_timeout;
        let mut timed_out = false;
        for (path, entry) in started {
            let (mut guard, mut rx) = match entry {
                Ok(e) => e,
                Err(e) => {
                    results.push(Err(e));
                    continue;
                }
            };
            if timed_out {
                // The connection is closed, so every sender is gone: this cannot wait. It
                // yields the reply if it was complete, else the timeout that closed it.
                guard.armed = false;
                results.push(collect(&mut rx, self.shared()).await);
                continue;
            }
            match timeout_at(deadline, collect(&mut rx, self.shared())).await {
                Ok(r) => {
                    guard.armed = false;
                    results.push(r);
                    deadline = Instant::now() + self.inner.command_timeout;
                }
                Err(_) => {
                    timed_out = true;
                    guard.armed = false;
                    results.push(Err(self.drop_on_timeout(
                        format!("the reply to {path}"),
                        self.inner.command_timeout,
                    )));
                }
            }
        }
        results
    }

    /// Sends `cmd` and hands its rows over as they arrive; see [`RowStream`]. `command_timeout`
    /// bounds the gap between two replies, not the whole command; a gap longer than that
    /// drops the connection, as for [`Client::call`].
    pub async fn stream(&self, cmd: Command) -> Result<RowStream, Error> {
        // Batches of up to STREAM_BATCH replies: about STREAM_CAPACITY replies in all.
        let (tx, rx) = mpsc::channel((STREAM_CAPACITY / STREAM_BATCH).max(1));
        let tag = self.start_command(&cmd, Sink::Stream(tx))?;
        Ok(RowStream::new(
            self.clone(),
            tag,
            cmd.path().to_owned(),
            rx,
            self.inner.command_timeout,
        ))
    }

    /// Adds `=count-only=` to a print and returns the router's count (`!done =ret=N`). Timeouts
    /// as for [`Client::call`].
    pub async fn count(&self, cmd: Command) -> Result<u64, Error> {
        let path = cmd.path().to_owned();
        let response = self.call(cmd.flag("count-only")).await?;
        response
            .ret
            .as_deref()
            .and_then(|r| r.trim().parse().ok())
            .ok_or_else(|| Error::Unexpected {
                router: self.router().to_owned(),
                message: format!(
                    "{path} with count-only answered {:?} instead of a number",
                    response.ret
                ),
            })
    }

    /// Sends `/quit` (best effort), fails whatever is still waiting with [`Error::Closed`],
    /// and stops and joins the reader and writer tasks. Calling it again does nothing.
    pub async fn close(&self) {
        let mut tasks = self.inner.tasks.lock().await;
        let Some(Tasks { reader, mut writer }) = tasks.take() else {
            return;
        };
        let was_open = !self.is_closed();
        self.inner.shared.close(CloseReason::Closed);
        reader.abort();
        let _ = reader.await;
        let mut quit = Vec::new();
        if was_open && Command::new("/quit").encode(None, &mut quit).is_ok() {
            let _ = self.inner.writer.send(WriterMsg::Quit(quit));
        } else {
            let _ = self.inner.writer.send(WriterMsg::Quit(Vec::new()));
        }
        if timeout(CLOSE_GRACE, &mut writer).await.is_err() {
            writer.abort();
            let _ = writer.await;
        }
        tracing::debug!(router = %self.router(), "client closed");
    }
}

fn tls_mode(tls: Option<&TlsConfig>) -> &'static str {
    match tls {
        None => "off",
        Some(TlsConfig::CaFile(_)) => "ca-file",
        Some(TlsConfig::Fingerprint(_)) => "fingerprint",
        Some(TlsConfig::Insecure) => "insecure",
    }
}

/// Rows of one command, handed over as they arrive (a `print` of a large table, a `follow`).
///
/// The reader buffers about [`crate::STREAM_CAPACITY`] replies for a stream (handed over in
/// batches of the rows already received, never held back waiting for more), then waits for
/// its consumer, which also holds up every other command on the same connection: drain a
/// stream before awaiting other commands on the same [`Client`], or use a second client.
///
/// Dropping a stream before it ended cancels the command (fire and forget).
pub struct RowStream {
    client: Client,
    tag: u64,
    path: String,
    rx: mpsc::Receiver<Vec<Reply>>,
    /// The rest of the batch being handed out.
    batch: std::vec::IntoIter<Reply>,
    gap_timeout: Duration,
    traps: Traps,
    ret: Option<String>,
    finished: bool,
}

impl std::fmt::Debug for RowStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowStream")
            .field("router", &self.client.router())
            .field("tag", &self.tag)
            .field("path", &self.path)
            .field("finished", &self.finished)
            .finish()
    }
}

impl RowStream {
    pub(crate) fn new(
        client: Client,
        tag: u64,
        path: String,
        rx: mpsc::Receiver<Vec<Reply>>,
        gap_timeout: Duration,
    ) -> Self {
        Self {
            client,
            tag,
            path,
            rx,
            batch: Vec::new().into_iter(),
            gap_timeout,
            traps: Traps::default(),
            ret: None,
            finished: false,
        }
    }

    /// The next row; `None` after `!done`. A `!trap` is returned as `Err` when its `!done`
    /// arrives; any other `Err` (connection lost, no reply within `command_timeout`, which
    /// drops the connection) also ends the stream.
    pub async fn next(&mut self) -> Option<Result<Reply, Error>> {
        if self.finished {
            return None;
        }
        loop {
            if let Some(reply) = self.batch.next() {
                match reply.kind() {
                    ReplyKind::Re => return Some(Ok(reply)),
                    ReplyKind::Empty => {}
                    ReplyKind::Trap => self.traps.add(&reply),
                    ReplyKind::Done => {
                        self.finished = true;
                        self.ret = reply.ret().map(str::to_owned);
                        let traps = std::mem::take(&mut self.traps);
                        return traps.into_error(self.client.router()).map(Err);
                    }
                    ReplyKind::Fatal => {
                        self.finished = true;
                        return Some(Err(self.client.shared().lost_error()));
                    }
                }
                continue;
            }
            match tokio::time::timeout(self.gap_timeout, self.rx.recv()).await {
                Ok(Some(batch)) => self.batch = batch.into_iter(),
                Ok(None) => {
                    self.finished = true;
                    return Some(Err(self.client.shared().lost_error()));
                }
                Err(_) => {
                    self.finished = true;
                    return Some(Err(self.client.drop_on_timeout(
                        format!("the next reply to {}", self.path),
                        self.gap_timeout,
                    )));
                }
            }
        }
    }

    /// Stops the command: sends `/cancel =tag=X`; the router's late replies for it (an
    /// `interrupted` trap, maybe `!empty`, `!done`) are dropped quietly.
    pub async fn cancel(mut self) {
        if !self.finished {
            self.finished = true;
            self.client.cancel_tag(self.tag);
        }
    }

    /// `=ret=` of the `!done`, once the stream has ended.
    pub fn ret(&self) -> Option<&str> {
        self.ret.as_deref()
    }

    /// True once `next` has returned the end (or an error).
    pub fn is_finished(&self) -> bool {
        self.finished
    }
}

impl Drop for RowStream {
    fn drop(&mut self) {
        if !self.finished {
            self.client.cancel_tag(self.tag);
        }
    }
}
