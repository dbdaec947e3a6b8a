//! One connection, many commands: the tag -> waiter table, the reader task that fills it and
//! the writer task that puts whole sentences on the wire.
//!
//! The reader owns the read half and the receive buffer; it is the only place that decodes.
//! The writer owns the write half; callers hand it encoded sentences through a channel, so a
//! caller that is cancelled mid-command can never leave half a sentence on the wire. This
//! module deliberately knows nothing about what a command means (traps, counts, `=ret=`): it
//! routes replies by `.tag`, counts what a collected reply holds against its limits, and
//! reports why the connection ended. Any end but [`crate::Client::close`] aborts both tasks,
//! so the socket goes at once.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use routeros_proto::{
    decode_sentence, encoded_length_len, Limits, ProtoError, Reply, ReplyKind, Sentence,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::error::Error;

/// How many replies a [`crate::RowStream`] buffers before the reader waits for its consumer.
pub const STREAM_CAPACITY: usize = 1024;

/// The most replies of one stream handed over at once. The reader gathers the rows it has
/// already received into batches of this size (or fewer, before it waits for the socket), so a
/// million-row print costs a few channel operations and wake-ups per batch, not per row.
pub(crate) const STREAM_BATCH: usize = 64;

/// How much the read buffer grows by per read.
const READ_CHUNK: usize = 64 * 1024;

/// The most bytes of one incomplete sentence the reader buffers, on top of what
/// [`Limits`] allows per word and per sentence: a peer cannot make us hold more than this
/// (or the sentence cap of the limits, if lower) while it trickles a sentence in.
const MAX_BUFFERED_SENTENCE: usize = 64 * 1024 * 1024;

pub(crate) fn buffer_cap(limits: &Limits) -> usize {
    limits
        .max_sentence_bytes()
        .min(MAX_BUFFERED_SENTENCE.max(limits.max_word_len.saturating_add(1024 * 1024)))
}

/// Why reading a sentence failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(io::Error),
    Protocol(ProtoError),
}

impl ReadError {
    pub(crate) fn into_error(self, router: &str) -> Error {
        match self {
            ReadError::Io(source) => Error::Io {
                router: router.to_owned(),
                source,
            },
            ReadError::Protocol(source) => Error::Protocol {
                router: router.to_owned(),
                source,
            },
        }
    }
}

/// Reads more bytes into `buf`, which holds no whole sentence, refusing to grow it past `cap`.
/// EOF is an `UnexpectedEof` IO error that says whether it cut a sentence.
pub(crate) async fn fill<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    cap: usize,
) -> Result<(), ReadError> {
    if buf.len() >= cap {
        return Err(ReadError::Protocol(ProtoError::MalformedWord(format!(
            "incomplete sentence larger than {cap} bytes"
        ))));
    }
    // Grow by a fixed chunk, never by a length read from the wire.
    buf.reserve(READ_CHUNK);
    let n = rd.read_buf(buf).await.map_err(ReadError::Io)?;
    if n == 0 {
        let message = if buf.is_empty() {
            "the router closed the connection"
        } else {
            "the router closed the connection in the middle of a reply"
        };
        return Err(ReadError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            message,
        )));
    }
    Ok(())
}

/// Reads until `buf` holds one whole sentence and takes it off. EOF is an
/// `UnexpectedEof` IO error that says whether it cut a sentence.
pub(crate) async fn read_sentence<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Sentence, ReadError> {
    let cap = buffer_cap(limits);
    loop {
        if let Some(sentence) = decode_sentence(buf, limits).map_err(ReadError::Protocol)? {
            return Ok(sentence);
        }
        fill(rd, buf, cap).await?;
    }
}

/// The caps on one collected reply ([`crate::ClientConfig::max_reply_rows`] and
/// [`crate::ClientConfig::max_reply_bytes`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplyLimits {
    pub(crate) rows: usize,
    pub(crate) bytes: usize,
}

/// What one reply counts against [`ReplyLimits::bytes`]: its size on the wire (each word's
/// shortest length prefix and bytes, and the terminating empty word) plus
/// [`WORD_INDEX_BYTES`] per word for the index the client keeps of it. The fixed cost of a
/// row (the `Reply` itself) is bounded by the row limit instead.
pub(crate) fn reply_bytes(reply: &Reply) -> usize {
    reply
        .sentence()
        .words()
        .map(|w| {
            let len = u32::try_from(w.len()).unwrap_or(u32::MAX);
            encoded_length_len(len) + w.len() + WORD_INDEX_BYTES
        })
        .sum::<usize>()
        + 1
}

/// Index bytes per word: the word's place in the sentence and, for attributes, where its
/// value starts (two `(u32, u32)`-sized entries).
pub(crate) const WORD_INDEX_BYTES: usize = 16;

/// The collecting end of a `call`: an unbounded channel (the consumer collects everything
/// anyway, so the reader never waits for it), bounded instead by [`ReplyLimits`], which the
/// reader checks as each reply arrives. The check is here, not in the consumer, because a
/// pipelined command's rows arrive while its caller still waits for an earlier command.
pub(crate) struct Collector {
    tx: mpsc::UnboundedSender<Reply>,
    /// For the error: `the reply to /path`.
    path: String,
    limits: ReplyLimits,
    rows: usize,
    bytes: usize,
}

impl Collector {
    pub(crate) fn new(tx: mpsc::UnboundedSender<Reply>, path: &str, limits: ReplyLimits) -> Self {
        Self {
            tx,
            path: path.to_owned(),
            limits,
            rows: 0,
            bytes: 0,
        }
    }

    /// Counts `reply` (rows and traps are held; `!empty` and `!done` are not); `Err` when it
    /// takes the reply past a limit.
    fn count(&mut self, reply: &Reply) -> Result<(), CloseReason> {
        let (setting, limit) = match reply.kind() {
            ReplyKind::Re => {
                self.rows += 1;
                self.bytes = self.bytes.saturating_add(reply_bytes(reply));
                if self.rows > self.limits.rows {
                    ("max_reply_rows", self.limits.rows)
                } else if self.bytes > self.limits.bytes {
                    ("max_reply_bytes", self.limits.bytes)
                } else {
                    return Ok(());
                }
            }
            ReplyKind::Trap => {
                self.bytes = self.bytes.saturating_add(reply_bytes(reply));
                if self.bytes > self.limits.bytes {
                    ("max_reply_bytes", self.limits.bytes)
                } else {
                    return Ok(());
                }
            }
            _ => return Ok(()),
        };
        Err(CloseReason::ReplyTooLarge {
            what: format!("the reply to {}", self.path),
            limit,
            setting,
        })
    }
}

/// Where the replies of one command go.
pub(crate) enum Sink {
    /// `call`: collected whole, within [`ReplyLimits`].
    Collect(Collector),
    /// `stream`: bounded, in batches of at most [`STREAM_BATCH`] replies; the reader waits when
    /// the consumer falls behind (see `dispatch`).
    Stream(mpsc::Sender<Vec<Reply>>),
}

/// Replies of one stream gathered by the reader, not yet handed over.
pub(crate) struct Batch {
    tag: u64,
    tx: mpsc::Sender<Vec<Reply>>,
    replies: Vec<Reply>,
    /// The `!done` is in: the tag is no longer in the table, hand over regardless.
    done: bool,
}

/// Why the connection ended, kept so every waiter can be given the same clear error.
#[derive(Debug, Clone)]
pub(crate) enum CloseReason {
    Io {
        kind: io::ErrorKind,
        message: String,
    },
    Protocol(ProtoError),
    /// A reply no command of ours can own (see [`Error::UnmatchedReply`]).
    Unmatched(String),
    /// A collected reply passed a [`ReplyLimits`] cap: the connection is dropped so the rest
    /// of it stops coming (see [`Error::ReplyTooLarge`]).
    ReplyTooLarge {
        what: String,
        limit: usize,
        setting: &'static str,
    },
    Fatal(String),
    /// A command got no reply within its timeout: the router (or the path to it) stopped
    /// answering, so the connection is dropped rather than kept busy.
    Timeout {
        what: String,
        setting: &'static str,
        after: Duration,
    },
    /// Closed by us ([`crate::Client::close`]).
    Closed,
}

impl CloseReason {
    fn from_read_error(e: ReadError) -> Self {
        match e {
            ReadError::Io(e) => CloseReason::Io {
                kind: e.kind(),
                message: e.to_string(),
            },
            ReadError::Protocol(e) => CloseReason::Protocol(e),
        }
    }

    pub(crate) fn to_error(&self, router: &str) -> Error {
        let router = router.to_owned();
        match self {
            CloseReason::Io { kind, message } => Error::Io {
                router,
                source: io::Error::new(*kind, message.clone()),
            },
            CloseReason::Protocol(source) => Error::Protocol {
                router,
                source: source.clone(),
            },
            CloseReason::Unmatched(detail) => Error::UnmatchedReply {
                router,
                detail: detail.clone(),
            },
            CloseReason::ReplyTooLarge {
                what,
                limit,
                setting,
            } => Error::ReplyTooLarge {
                router,
                what: what.clone(),
                limit: *limit,
                setting,
            },
            CloseReason::Fatal(reason) => Error::Fatal {
                router,
                reason: reason.clone(),
            },
            CloseReason::Timeout {
                what,
                setting,
                after,
            } => Error::Timeout {
                router,
                what: what.clone(),
                setting,
                after: *after,
            },
            CloseReason::Closed => Error::Closed { router },
        }
    }
}

struct State {
    pending: HashMap<u64, Sink>,
    closed: Option<CloseReason>,
    /// The reader and writer tasks, aborted when the connection is lost so the socket is
    /// dropped at once (both halves), not when the last client handle goes.
    tasks: Option<[AbortHandle; 2]>,
}

/// The state the client handles, the reader and the writer share.
pub(crate) struct Shared {
    router: String,
    state: Mutex<State>,
    /// The next `.tag` to issue. Tags are issued in order from 1, so the reader can tell a
    /// tag that was issued (finished or cancelled: late replies are dropped quietly) from one
    /// that never was (a protocol error).
    next_tag: AtomicU64,
}

impl Shared {
    pub(crate) fn new(router: String) -> Self {
        Self {
            router,
            state: Mutex::new(State {
                pending: HashMap::new(),
                closed: None,
                tasks: None,
            }),
            next_tag: AtomicU64::new(1),
        }
    }

    /// A fresh tag for a command (a `/cancel` too: every command this client sends after
    /// login is tagged, so an untagged reply is a protocol error).
    pub(crate) fn issue_tag(&self) -> u64 {
        self.next_tag.fetch_add(1, Ordering::Relaxed)
    }

    /// The tag of `reply`, if it is one this client issued; else why the reply is foreign.
    fn issued_tag(&self, reply: &Reply) -> Result<u64, String> {
        let kind = reply.kind().as_word();
        let Some(text) = reply.tag() else {
            return Err(format!(
                "an untagged {kind} reply, but every command this client sends is tagged"
            ));
        };
        match text.parse::<u64>() {
            // A tag is issued before its command is queued, so its replies never come first.
            Ok(tag) if tag >= 1 && tag < self.next_tag.load(Ordering::Relaxed) => Ok(tag),
            _ => Err(format!(
                "a {kind} reply tagged {:?}, a tag this client never sent",
                text.chars().take(32).collect::<String>()
            )),
        }
    }

    pub(crate) fn router(&self) -> &str {
        &self.router
    }

    /// The lock is only ever held for map operations, never across an await; a panic while
    /// holding it cannot leave the map half-updated, so a poisoned lock is still usable.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands over the reader and writer tasks, so that losing the connection stops them. If it
    /// was lost before they were handed over, they are stopped now.
    pub(crate) fn set_tasks(&self, reader: AbortHandle, writer: AbortHandle) {
        let mut st = self.lock();
        match &st.closed {
            Some(reason) if !matches!(reason, CloseReason::Closed) => {
                reader.abort();
                writer.abort();
            }
            _ => st.tasks = Some([reader, writer]),
        }
    }

    /// Starts waiting for replies tagged `tag`; fails fast when the connection is closed.
    pub(crate) fn register(&self, tag: u64, sink: Sink) -> Result<(), Error> {
        let mut st = self.lock();
        if st.closed.is_some() {
            return Err(Error::Closed {
                router: self.router.clone(),
            });
        }
        st.pending.insert(tag, sink);
        Ok(())
    }

    /// Stops waiting for `tag`; true if it was still awaited.
    pub(crate) fn forget(&self, tag: u64) -> bool {
        self.lock().pending.remove(&tag).is_some()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }

    /// Number of commands in flight (for tests and metrics).
    pub(crate) fn in_flight(&self) -> usize {
        self.lock().pending.len()
    }

    /// Marks the connection closed (the first reason wins) and fails every waiter: dropping
    /// their senders wakes them, and they read the reason through [`Shared::lost_error`].
    ///
    /// For any reason but [`CloseReason::Closed`] (where [`crate::Client::close`] still sends
    /// `/quit` and joins the tasks itself) the reader and writer are aborted, which drops the
    /// socket: the router sees the connection end and stops sending.
    pub(crate) fn close(&self, reason: CloseReason) {
        let (pending, tasks) = {
            let mut st = self.lock();
            let tasks = if matches!(reason, CloseReason::Closed) {
                None
            } else {
                st.tasks.take()
            };
            if st.closed.is_none() {
                match &reason {
                    CloseReason::Closed => {
                        tracing::debug!(router = %self.router, in_flight = st.pending.len(), "connection closed");
                    }
                    other => {
                        let error = other.to_error(&self.router);
                        // The caller reports this once per change of state; here it is detail.
                        tracing::debug!(router = %self.router, in_flight = st.pending.len(), %error, "connection lost");
                    }
                }
                st.closed = Some(reason);
            }
            (std::mem::take(&mut st.pending), tasks)
        };
        drop(pending);
        for task in tasks.into_iter().flatten() {
            task.abort();
        }
    }

    /// The error for a waiter whose channel closed before its `!done`.
    pub(crate) fn lost_error(&self) -> Error {
        match &self.lock().closed {
            Some(reason) => reason.to_error(&self.router),
            None => Error::Closed {
                router: self.router.clone(),
            },
        }
    }

    /// Hands one reply to whoever waits for its tag, or drops it quietly when its tag was
    /// issued but is no longer awaited (late replies after `/cancel`, the `/cancel`'s own
    /// replies). A reply with a tag never issued, or none, is `Err`: the connection must end,
    /// since replies can no longer be matched to commands. Replies of a stream
    /// are gathered in `batch` and handed over when it is full, when its `!done` arrives, when
    /// a reply for another tag comes, or (the reader calls [`Shared::flush`]) before the
    /// reader waits for the socket: gathering never delays a row that has arrived.
    async fn dispatch(&self, reply: Reply, batch: &mut Option<Batch>) -> Result<(), CloseReason> {
        let kind = reply.kind().as_word();
        let tag = self.issued_tag(&reply).map_err(CloseReason::Unmatched)?;
        let is_done = reply.kind() == ReplyKind::Done;
        if let Some(b) = batch.as_mut().filter(|b| b.tag == tag) {
            b.replies.push(reply);
            if is_done {
                self.lock().pending.remove(&tag);
                b.done = true;
            }
            if is_done || b.replies.len() >= STREAM_BATCH {
                self.flush(batch).await;
            }
            return Ok(());
        }
        self.flush(batch).await;
        let stream = {
            let mut st = self.lock();
            match st.pending.get_mut(&tag) {
                None => None,
                Some(Sink::Collect(c)) => {
                    // Counted and handed over under the lock: the send never waits.
                    c.count(&reply)?;
                    let delivered = c.tx.send(reply).is_ok();
                    if is_done || !delivered {
                        // Done, or the waiter went away without forgetting its tag (it always
                        // should): either way the rest of its replies are dropped.
                        st.pending.remove(&tag);
                    }
                    return Ok(());
                }
                Some(Sink::Stream(tx)) => {
                    let tx = tx.clone();
                    if is_done {
                        st.pending.remove(&tag);
                    }
                    Some(tx)
                }
            }
        };
        match stream {
            None => {
                // Late replies after /cancel, and the /cancel's own: expected, harmless.
                tracing::debug!(router = %self.router, tag, kind, "dropping a reply nobody waits for");
                Ok(())
            }
            Some(tx) => {
                let mut replies = Vec::with_capacity(if is_done { 1 } else { STREAM_BATCH });
                replies.push(reply);
                *batch = Some(Batch {
                    tag,
                    tx,
                    replies,
                    done: is_done,
                });
                if is_done {
                    self.flush(batch).await;
                }
                Ok(())
            }
        }
    }

    /// Hands the gathered replies of a stream to its consumer, unless it stopped waiting
    /// for them meanwhile (cancelled, timed out, dropped).
    ///
    /// Backpressure, chosen deliberately: when a stream's consumer is behind, the reader
    /// waits here, stops reading the socket, and TCP flow control slows the router. The cost
    /// is that every other tag on this connection waits too, so a consumer must not await
    /// another command on the same client while its stream has more than STREAM_CAPACITY
    /// undelivered rows (collect first, or use a second connection). The alternative, an
    /// unbounded buffer, would hold a 1,000,000-row table in memory.
    pub(crate) async fn flush(&self, batch: &mut Option<Batch>) {
        let Some(b) = batch.take() else { return };
        if !b.done && !self.lock().pending.contains_key(&b.tag) {
            tracing::debug!(router = %self.router, tag = b.tag, rows = b.replies.len(), "dropping replies nobody waits for");
            return;
        }
        if b.tx.send(b.replies).await.is_err() {
            self.forget(b.tag);
        }
    }
}

/// The reader task: decodes sentences and dispatches them until the connection ends, then
/// fails every waiter with the reason.
pub(crate) async fn run_reader<R: AsyncRead + Unpin>(
    mut rd: R,
    mut buf: BytesMut,
    limits: Limits,
    shared: std::sync::Arc<Shared>,
) {
    let cap = buffer_cap(&limits);
    let mut batch = None;
    let reason = loop {
        let sentence = match decode_sentence(&mut buf, &limits) {
            Ok(Some(s)) => s,
            Ok(None) => {
                // Nothing more without waiting for the socket: hand over what is gathered.
                shared.flush(&mut batch).await;
                match fill(&mut rd, &mut buf, cap).await {
                    Ok(()) => continue,
                    Err(e) => break CloseReason::from_read_error(e),
                }
            }
            Err(e) => break CloseReason::Protocol(e),
        };
        let reply = match Reply::parse(sentence) {
            Ok(r) => r,
            Err(e) => break CloseReason::Protocol(e),
        };
        if reply.kind() == ReplyKind::Fatal {
            break CloseReason::Fatal(reply.message().unwrap_or_else(|| "no reason given".into()));
        }
        if let Err(reason) = shared.dispatch(reply, &mut batch).await {
            break reason;
        }
    };
    // Rows that arrived before the end are still delivered, then the error.
    shared.flush(&mut batch).await;
    shared.close(reason);
}

/// What callers ask of the writer task.
///
/// The channel is unbounded on purpose: dropping a `RowStream` (or a `call` future) must queue
/// its `/cancel` without blocking, and every other entry is a command whose caller is waiting
/// for its reply, so the queue is bounded by the callers' own concurrency.
pub(crate) enum WriterMsg {
    /// One or more encoded sentences.
    Send(Vec<u8>),
    /// Write these bytes (`/quit`), then shut the write half down and stop.
    Quit(Vec<u8>),
}

/// How many queued bytes the writer gathers into one write.
const WRITE_BATCH: usize = 64 * 1024;

/// The writer task: writes queued sentences whole, gathering what is queued into one write
/// (a burst of pipelined commands costs a few system calls, not one each) and flushing once
/// per burst. A write error closes the connection for everyone.
pub(crate) async fn run_writer<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::UnboundedReceiver<WriterMsg>,
    shared: std::sync::Arc<Shared>,
) {
    let mut out: Vec<u8> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut quit = false;
        let mut result = Ok(());
        while let Some(msg) = next.take() {
            match msg {
                WriterMsg::Send(b) => out.extend_from_slice(&b),
                WriterMsg::Quit(b) => {
                    out.extend_from_slice(&b);
                    quit = true;
                }
            }
            if quit || out.len() >= WRITE_BATCH {
                result = wr.write_all(&out).await;
                out.clear();
                if result.is_err() || quit {
                    break;
                }
            }
            next = rx.try_recv().ok();
        }
        if result.is_ok() && !out.is_empty() {
            result = wr.write_all(&out).await;
        }
        out.clear();
        if out.capacity() > 4 * WRITE_BATCH {
            // One huge command must not pin its buffer for the life of the connection.
            out = Vec::new();
        }
        let result = match result {
            Ok(()) => wr.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            if !quit {
                shared.close(CloseReason::Io {
                    kind: e.kind(),
                    message: format!("writing to the router failed: {e}"),
                });
            }
            return;
        }
        if quit {
            break;
        }
    }
    // Best effort: a FIN (and a TLS close_notify) so the router sees a clean close.
    let _ = wr.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(words: &[&str]) -> Reply {
        Reply::parse(Sentence::from_words(words)).unwrap()
    }

    #[test]
    fn reply_bytes_is_the_wire_size_plus_the_index() {
        // 03 "!re" 04 "=a=b" 00: 10 bytes on the wire, two words.
        assert_eq!(reply_bytes(&reply(&["!re", "=a=b"])), 10 + 2 * 16);
        // A 200-byte word has a 2-byte length prefix (80 C8).
        let long = format!("={}", "v".repeat(199));
        assert_eq!(
            reply_bytes(&reply(&["!re", &long, ".tag=12"])),
            (1 + 3) + (2 + 200) + (1 + 7) + 1 + 3 * 16
        );
    }

    fn collector(rows: usize, bytes: usize) -> (Collector, mpsc::UnboundedReceiver<Reply>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Collector::new(tx, "/x/print", ReplyLimits { rows, bytes }),
            rx,
        )
    }

    #[test]
    fn collector_counts_rows_and_bytes_up_to_the_limit() {
        let row = reply(&["!re", "=a=b"]); // 42 bytes
        let (mut c, _rx) = collector(3, 1000);
        for _ in 0..3 {
            c.count(&row).unwrap();
        }
        c.count(&reply(&["!empty"])).unwrap();
        c.count(&reply(&["!done"])).unwrap();
        let Err(CloseReason::ReplyTooLarge {
            limit,
            setting,
            what,
        }) = c.count(&row)
        else {
            panic!("row 4 of 3 passed")
        };
        assert_eq!(
            (limit, setting, what.as_str()),
            (3, "max_reply_rows", "the reply to /x/print")
        );

        let (mut c, _rx) = collector(100, 2 * 42);
        c.count(&row).unwrap();
        c.count(&row).unwrap();
        assert!(matches!(
            c.count(&row),
            Err(CloseReason::ReplyTooLarge {
                limit: 84,
                setting: "max_reply_bytes",
                ..
            })
        ));
        // Traps are held too (their messages), so they count against the bytes.
        let (mut c, _rx) = collector(100, 20);
        assert!(matches!(
            c.count(&reply(&["!trap", "=message=a long enough message"])),
            Err(CloseReason::ReplyTooLarge {
                setting: "max_reply_bytes",
                ..
            })
        ));
    }

    #[test]
    fn buffer_cap_is_bounded_and_fits_one_word() {
        let d = Limits::default();
        assert_eq!(buffer_cap(&d), MAX_BUFFERED_SENTENCE);
        let small = Limits {
            max_word_len: 10,
            max_words: 2,
        };
        assert_eq!(buffer_cap(&small), small.max_sentence_bytes());
        let big = Limits {
            max_word_len: 100 * 1024 * 1024,
            max_words: 16,
        };
        assert!(buffer_cap(&big) > big.max_word_len);
    }

    #[tokio::test]
    async fn hostile_prefix_is_a_protocol_error() {
        let mut rd: &[u8] = b"\xF0\xFF\xFF\xFF\xFF";
        let mut buf = BytesMut::new();
        let e = read_sentence(&mut rd, &mut buf, &Limits::default())
            .await
            .unwrap_err();
        assert!(matches!(
            e,
            ReadError::Protocol(ProtoError::WordTooLong { .. })
        ));
        assert!(buf.capacity() <= 2 * READ_CHUNK);
    }

    #[tokio::test]
    async fn eof_mid_sentence_says_so() {
        let mut rd: &[u8] = b"\x05!do";
        let mut buf = BytesMut::new();
        let e = read_sentence(&mut rd, &mut buf, &Limits::default())
            .await
            .unwrap_err();
        let ReadError::Io(e) = e else { panic!("{e:?}") };
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(e.to_string().contains("middle of a reply"));
    }

    /// Endless 16 MiB words with no terminator: legal word by word, but the sentence never
    /// ends. The reader must give up at the buffer cap instead of growing without bound.
    struct EndlessWords {
        pos: u64,
    }

    impl AsyncRead for EndlessWords {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            const WORD: u64 = 16 * 1024 * 1024;
            const PREFIX: [u8; 4] = [0xE1, 0x00, 0x00, 0x00];
            while buf.remaining() > 0 {
                let at = self.pos % (WORD + 4);
                if at < 4 {
                    buf.put_slice(&PREFIX[at as usize..at as usize + 1]);
                    self.pos += 1;
                } else {
                    let n = ((WORD + 4 - at) as usize).min(buf.remaining());
                    buf.put_slice(&vec![b'a'; n]);
                    self.pos += n as u64;
                }
            }
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn endless_sentence_stops_at_the_buffer_cap() {
        let mut rd = EndlessWords { pos: 0 };
        let mut buf = BytesMut::new();
        let e = read_sentence(&mut rd, &mut buf, &Limits::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ReadError::Protocol(ProtoError::MalformedWord(m)) if m.contains("larger than")),
            "{e:?}"
        );
        assert!(buf.len() < MAX_BUFFERED_SENTENCE + 2 * READ_CHUNK);
    }
}
