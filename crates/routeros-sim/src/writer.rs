//! The reply side of a session: encodes reply sentences into a buffer, flushes it with
//! backpressure, appends the command's `.tag`, counts sentences and injects [`Faults`].
//!
//! Words are written straight into the output buffer (length prefix, then bytes), so a row
//! costs no intermediate allocation. The buffer is flushed once it passes a threshold, which
//! bounds memory however many rows a print produces. It deliberately does not decide what to
//! reply: the dispatcher does.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use routeros_proto::encode_length;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::config::Faults;
use crate::shared::Shared;

/// Flush once this many bytes are buffered.
const FLUSH_AT: usize = 64 * 1024;

/// How a session ends, as decided by the reply side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The peer is gone or the socket failed.
    Gone,
    /// `!fatal` was sent and writing shut down: give the peer a moment to read it.
    Linger,
    /// Garbage was sent on purpose: stay silent until the peer closes.
    Hang,
    /// Close the socket now.
    Abort,
}

/// Builds the words of one sentence.
pub(crate) struct Words<'a> {
    buf: &'a mut Vec<u8>,
}

impl Words<'_> {
    /// One raw word.
    pub(crate) fn word(&mut self, w: &[u8]) {
        encode_length(u32::try_from(w.len()).unwrap_or(u32::MAX), self.buf);
        self.buf.extend_from_slice(w);
    }

    /// `=name=value`.
    pub(crate) fn attr(&mut self, name: &str, value: &str) {
        let len = 2 + name.len() + value.len();
        encode_length(u32::try_from(len).unwrap_or(u32::MAX), self.buf);
        self.buf.push(b'=');
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(b'=');
        self.buf.extend_from_slice(value.as_bytes());
    }
}

/// The writing half of a session.
pub(crate) struct ReplyWriter {
    io: Box<dyn AsyncWrite + Unpin + Send>,
    buf: Vec<u8>,
    sent: u64,
    tag: Option<String>,
    shared: Arc<Shared>,
}

impl ReplyWriter {
    pub(crate) fn new(io: Box<dyn AsyncWrite + Unpin + Send>, shared: Arc<Shared>) -> Self {
        Self {
            io,
            buf: Vec::with_capacity(FLUSH_AT + 4096),
            sent: 0,
            tag: None,
            shared,
        }
    }

    /// The tag to append to every reply until the next command.
    pub(crate) fn set_tag(&mut self, tag: Option<String>) {
        self.tag = tag;
    }

    /// Writes out what is buffered.
    pub(crate) async fn flush(&mut self) -> Result<(), End> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let n = self.buf.len();
        let r = async {
            self.io.write_all(&self.buf).await?;
            self.io.flush().await
        }
        .await;
        self.buf.clear();
        match r {
            Ok(()) => {
                self.shared
                    .stats
                    .bytes_sent
                    .fetch_add(n as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                tracing::debug!(error = %e, "client socket write failed");
                Err(End::Gone)
            }
        }
    }

    async fn inject(&mut self, faults: &Faults) -> Result<(), End> {
        let due = |n: Option<u64>| n.is_some_and(|n| self.sent >= n);
        if due(faults.close_after_sentences) {
            tracing::info!(sent = self.sent, "fault: closing the session");
            self.flush().await?;
            return Err(End::Abort);
        }
        if due(faults.fatal_after_sentences) {
            tracing::info!(sent = self.sent, "fault: sending !fatal");
            return Err(self.fatal("simulated failure").await);
        }
        if due(faults.garbage_after_sentences) {
            tracing::info!(sent = self.sent, "fault: sending garbage");
            self.buf.extend_from_slice(b"\xF8\xFF\xFEgarbage\x00");
            self.flush().await?;
            return Err(End::Hang);
        }
        if due(faults.oversized_prefix_after_sentences) {
            tracing::info!(sent = self.sent, "fault: sending a 4 GiB length prefix");
            self.buf.extend_from_slice(b"\xF0\xFF\xFF\xFF\xFF!re=x=");
            self.flush().await?;
            return Err(End::Hang);
        }
        Ok(())
    }

    /// One reply sentence: `kind` (`!re`, `!done`, ...), the words from `f`, then the tag.
    pub(crate) async fn sentence(
        &mut self,
        kind: &str,
        f: impl FnOnce(&mut Words<'_>),
    ) -> Result<(), End> {
        let faults = self.shared.faults();
        if faults.counts_sentences() {
            self.inject(&faults).await?;
        }
        let mut w = Words { buf: &mut self.buf };
        w.word(kind.as_bytes());
        f(&mut w);
        if let Some(tag) = &self.tag {
            let len = 5 + tag.len();
            encode_length(u32::try_from(len).unwrap_or(u32::MAX), w.buf);
            w.buf.extend_from_slice(b".tag=");
            w.buf.extend_from_slice(tag.as_bytes());
        }
        w.buf.push(0);
        self.sent += 1;
        self.shared
            .stats
            .sentences_sent
            .fetch_add(1, Ordering::Relaxed);
        if self.buf.len() >= FLUSH_AT {
            self.flush().await?;
        }
        Ok(())
    }

    /// `!done`, with `=ret=` when given.
    pub(crate) async fn done(&mut self, ret: Option<&str>) -> Result<(), End> {
        self.sentence("!done", |w| {
            if let Some(r) = ret {
                w.attr("ret", r);
            }
        })
        .await
    }

    /// `!trap`, with `=category=` when given.
    pub(crate) async fn trap(&mut self, category: Option<u32>, message: &str) -> Result<(), End> {
        self.sentence("!trap", |w| {
            if let Some(c) = category {
                w.attr("category", &c.to_string());
            }
            w.attr("message", message);
        })
        .await
    }

    /// `!trap` then `!done`.
    pub(crate) async fn trap_done(
        &mut self,
        category: Option<u32>,
        message: &str,
    ) -> Result<(), End> {
        self.trap(category, message).await?;
        self.done(None).await
    }

    /// `!empty`.
    pub(crate) async fn empty(&mut self) -> Result<(), End> {
        self.sentence("!empty", |_| {}).await
    }

    /// `!fatal <reason>` (bare word, untagged), then shut down writing. Returns how the
    /// session ends.
    pub(crate) async fn fatal(&mut self, reason: &str) -> End {
        let mut w = Words { buf: &mut self.buf };
        w.word(b"!fatal");
        w.word(reason.as_bytes());
        w.buf.push(0);
        self.sent += 1;
        self.shared
            .stats
            .sentences_sent
            .fetch_add(1, Ordering::Relaxed);
        if self.flush().await.is_err() {
            return End::Gone;
        }
        let _ = self.io.shutdown().await;
        End::Linger
    }
}
