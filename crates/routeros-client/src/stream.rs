//! What one command's replies become: a collected [`Response`] (a [`RowStream`], in
//! `client`, hands them over as they arrive instead).
//!
//! Both read `!re` as a row, `!empty` as "no rows" (RouterOS 7.18+; older routers send only
//! `!done`), a `!trap` as the command's error (reported once its `!done` arrives), and `!done`
//! as the end. It deliberately does not interpret rows: they stay [`Reply`]s.

use routeros_proto::{Reply, ReplyKind};
use tokio::sync::mpsc;

use crate::error::Error;
use crate::multiplexer::Shared;

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
