//! What one command's replies become: a collected [`Response`], or a [`RowStream`] that hands
//! rows over as they arrive.
//!
//! Both read `!re` as a row, `!empty` as "no rows" (RouterOS 7.18+; older routers send only
//! `!done`), a `!trap` as the command's error (reported once its `!done` arrives), and `!done`
//! as the end. It deliberately does not interpret rows: they stay [`Reply`]s.

use std::time::Duration;

use routeros_proto::{Reply, ReplyKind};
use tokio::sync::mpsc;

use crate::multiplexer::Shared;
use crate::{Client, Error};

/// The collected replies of a finished command.
#[derive(Debug, Clone, Default)]
pub struct Response {
    /// The `!re` rows, in order.
    pub rows: Vec<Reply>,
    /// `=ret=` of the `!done` (the new `.id` of an `add`, the number of a `count-only`).
    pub ret: Option<String>,
}

/// The most trap messages of one command kept in its error; later ones are only counted. A
/// router sends one or two; the cap keeps a stream that is fed traps without end (a stream is
/// not held to the collected-reply limits) from growing the message without bound.
pub(crate) const MAX_TRAP_MESSAGES: usize = 8;

/// Accumulates the `!trap`s of one command into one error. An unknown command gets two traps;
/// the first keeps its category, the messages are joined with `; `.
#[derive(Default)]
pub(crate) struct Traps {
    first: Option<(Option<u32>, String)>,
    kept: usize,
    dropped: usize,
}

impl Traps {
    pub(crate) fn add(&mut self, reply: &Reply) {
        if self.kept >= MAX_TRAP_MESSAGES {
            self.dropped += 1;
            return;
        }
        self.kept += 1;
        let message = reply.message().unwrap_or_else(|| "no message given".into());
        match &mut self.first {
            None => self.first = Some((reply.category(), message)),
            Some((_, m)) => {
                m.push_str("; ");
                m.push_str(&message);
            }
        }
    }

    pub(crate) fn into_error(self, router: &str) -> Option<Error> {
        let dropped = self.dropped;
        self.first.map(|(category, mut message)| {
            if dropped > 0 {
                message.push_str(&format!(" (and {dropped} more traps)"));
            }
            Error::Trap {
                router: router.to_owned(),
                category,
                message,
            }
        })
    }
}

/// Collects replies until `!done`. A channel that closes first means the connection ended.
pub(crate) async fn collect(
    rx: &mut mpsc::UnboundedReceiver<Reply>,
    shared: &Shared,
) -> Result<Response, Error> {
    let mut rows = Vec::new();
    let mut traps = Traps::default();
    while let Some(reply) = rx.recv().await {
        match reply.kind() {
            ReplyKind::Re => rows.push(reply),
            ReplyKind::Empty => {}
            ReplyKind::Trap => traps.add(&reply),
            ReplyKind::Done => {
                return match traps.into_error(shared.router()) {
                    Some(e) => Err(e),
                    None => Ok(Response {
                        rows,
                        ret: reply.ret().map(str::to_owned),
                    }),
                };
            }
            // The reader never forwards `!fatal`; it ends the connection instead.
            ReplyKind::Fatal => return Err(shared.lost_error()),
        }
    }
    Err(shared.lost_error())
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

#[cfg(test)]
mod tests {
    use routeros_proto::Sentence;

    use super::*;

    fn trap(message: &str) -> Reply {
        Reply::parse(Sentence::from_words([
            "!trap",
            &format!("=message={message}"),
        ]))
        .unwrap()
    }

    #[test]
    fn traps_keep_a_bounded_number_of_messages() {
        let mut traps = Traps::default();
        for i in 0..MAX_TRAP_MESSAGES + 3 {
            traps.add(&trap(&format!("m{i}")));
        }
        let Some(Error::Trap { message, .. }) = traps.into_error("r") else {
            panic!("no trap error")
        };
        assert_eq!(message, "m0; m1; m2; m3; m4; m5; m6; m7 (and 3 more traps)");
    }
}
