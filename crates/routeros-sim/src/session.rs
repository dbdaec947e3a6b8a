//! One client connection: a reader that decodes sentences and queues commands, and an
//! executor that answers them in order through the [`ReplyWriter`].
//!
//! The reader runs alongside the executor (in the same task), so it sees `/cancel` while a
//! long print is streaming and flags the target command; pipelined commands just queue
//! (bounded, so a client that floods us is slowed by TCP backpressure). A decode error (garbage,
//! an oversized length prefix) is answered with `!fatal` and a close. Every session ends when
//! its cancellation token fires (drop_sessions, reboot, shutdown). It deliberately does not
//! know what commands mean: the dispatcher does.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use routeros_proto::{decode_sentence, encode_sentence};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::dispatch::{execute, SessionState};
use crate::request::Request;
use crate::shared::{Shared, Via};
use crate::writer::{End, ReplyWriter};

/// Commands a client may have queued before the reader stops reading.
const QUEUE: usize = 256;
/// How long a session waits for the client to close after `!fatal`.
const LINGER: Duration = Duration::from_secs(2);
/// How long a TLS handshake may take.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// A byte stream the simulator can serve (TCP or TLS over TCP).
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

enum Inbound {
    Command(Request, Arc<AtomicBool>),
    Fatal(String),
}

/// Commands queued or running, with their cancel flags.
#[derive(Default)]
struct InFlight {
    entries: Mutex<Vec<(Option<String>, Arc<AtomicBool>)>>,
}

impl InFlight {
    fn register(&self, tag: Option<String>, flag: Arc<AtomicBool>) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((tag, flag));
    }

    fn unregister(&self, flag: &Arc<AtomicBool>) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(_, f)| !Arc::ptr_eq(f, flag));
    }

    /// `/cancel =tag=X` flags the commands tagged X; `/cancel` alone flags all of them.
    fn cancel(&self, tag: Option<&str>) {
        for (t, flag) in self
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            if tag.is_none() || t.as_deref() == tag {
                flag.store(true, Ordering::Release);
            }
        }
    }
}

/// Decrements the active-session count and takes the session out of `/user/active` when it
/// ends, however it ends.
struct ActiveGuard<'a>(&'a Shared, u64);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.session_ended(self.1);
        self.0.stats.sessions_active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves one accepted socket until the client leaves, a fault or fatal error ends it, or
/// `token` fires.
pub(crate) async fn serve(
    sock: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    token: CancellationToken,
) {
    let active = shared.stats.sessions_active.fetch_add(1, Ordering::AcqRel) + 1;
    let session_id = shared.new_session_id();
    let _guard = ActiveGuard(&shared, session_id);
    let via = if tls.is_some() { Via::ApiSsl } else { Via::Api };
    shared
        .stats
        .sessions_accepted
        .fetch_add(1, Ordering::Relaxed);
    let stream: Box<dyn Stream> = match tls {
        None => Box::new(sock),
        Some(acceptor) => {
            let handshake = tokio::time::timeout(HANDSHAKE, acceptor.accept(sock));
            tokio::select! {
                _ = token.cancelled() => return,
                r = handshake => match r {
                    Ok(Ok(s)) => Box::new(s),
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
            }
        }
    };
    if shared
        .settings
        .max_sessions
        .is_some_and(|max| active as usize > max)
    {
        shared
            .stats
            .sessions_refused
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(%peer, "refusing session: too many sessions");
        refuse(stream, &shared, &token).await;
        return;
    }
    tracing::debug!(%peer, "session started");
    let st = SessionState::new(session_id, peer, via);
    run(stream, st, shared.clone(), &token).await;
    tracing::debug!(%peer, "session ended");
}

/// `!fatal too many sessions`, then close.
async fn refuse(stream: Box<dyn Stream>, shared: &Shared, token: &CancellationToken) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut out = Vec::new();
    encode_sentence(["!fatal", "too many sessions"], &mut out);
    let work = async {
        if wr.write_all(&out).await.is_ok() && wr.flush().await.is_ok() {
            shared
                .stats
                .bytes_sent
                .fetch_add(out.len() as u64, Ordering::Relaxed);
            shared.stats.sentences_sent.fetch_add(1, Ordering::Relaxed);
            let _ = wr.shutdown().await;
            drain(&mut rd).await;
        }
    };
    tokio::select! {
        _ = token.cancelled() => {}
        _ = tokio::time::timeout(LINGER, work) => {}
    }
}

async fn drain(rd: &mut (impl AsyncRead + Unpin)) {
    let mut sink = [0u8; 4096];
    while let Ok(n) = rd.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

async fn run(
    stream: Box<dyn Stream>,
    st: SessionState,
    shared: Arc<Shared>,
    token: &CancellationToken,
) {
    let (rd, wr) = tokio::io::split(stream);
    let in_flight = Arc::new(InFlight::default());
    let (tx, rx) = mpsc::channel(QUEUE);
    let reader = read_loop(rd, tx, in_flight.clone(), shared.clone());
    let writer = ReplyWriter::new(Box::new(wr), shared.clone());
    let exec = exec_loop(rx, writer, st, in_flight, shared);
    tokio::pin!(reader);
    tokio::pin!(exec);
    let mut reader_done = false;
    let end = loop {
        tokio::select! {
            _ = token.cancelled() => return,
            end = &mut exec => break end,
            _ = &mut reader, if !reader_done => reader_done = true,
        }
    };
    if reader_done {
        return;
    }
    match end {
        End::Gone | End::Abort => {}
        End::Linger => {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = &mut reader => {}
                _ = tokio::time::sleep(LINGER) => {}
            }
        }
        End::Hang => {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = &mut reader => {}
            }
        }
    }
}

/// Decodes sentences and queues them; keeps reading (and discarding) after the executor is
/// gone so that a lingering close sees the client's EOF.
async fn read_loop(
    mut rd: impl AsyncRead + Unpin,
    tx: mpsc::Sender<Inbound>,
    in_flight: Arc<InFlight>,
    shared: Arc<Shared>,
) {
    let limits = shared.settings.limits;
    let max_pending = limits.max_sentence_bytes().min(16 * 1024 * 1024);
    let mut buf = BytesMut::with_capacity(8192);
    let mut forwarding = true;
    loop {
        while forwarding {
            match decode_sentence(&mut buf, &limits) {
                Ok(Some(sentence)) => {
                    let req = Request::parse(&sentence);
                    let flag = Arc::new(AtomicBool::new(false));
                    if req.path == "/cancel" {
                        in_flight.cancel(req.attr("tag"));
                    } else {
                        in_flight.register(req.tag.clone(), flag.clone());
                    }
                    if tx.send(Inbound::Command(req, flag)).await.is_err() {
                        forwarding = false;
                    }
                }
                Ok(None) => {
                    if buf.len() > max_pending {
                        let _ = tx.send(Inbound::Fatal("sentence too long".into())).await;
                        forwarding = false;
                    }
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "protocol error from client");
                    let _ = tx
                        .send(Inbound::Fatal(format!("protocol error: {e}")))
                        .await;
                    forwarding = false;
                }
            }
        }
        if !forwarding {
            buf.clear();
        }
        buf.reserve(8192);
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                shared
                    .stats
                    .bytes_received
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
}

/// Answers queued commands in order.
async fn exec_loop(
    mut rx: mpsc::Receiver<Inbound>,
    mut w: ReplyWriter,
    mut st: SessionState,
    in_flight: Arc<InFlight>,
    shared: Arc<Shared>,
) -> End {
    while let Some(item) = rx.recv().await {
        match item {
            Inbound::Fatal(reason) => return w.fatal(&reason).await,
            Inbound::Command(req, flag) => {
                shared.stats.commands.fetch_add(1, Ordering::Relaxed);
                let r = execute(&req, &flag, &mut st, &mut w, &shared).await;
                in_flight.unregister(&flag);
                if let Err(end) = r {
                    return end;
                }
                if rx.is_empty() {
                    if let Err(end) = w.flush().await {
                        return end;
                    }
                }
            }
        }
    }
    let _ = w.flush().await;
    End::Gone
}
