//! Faults that change how a print streams: rows paced one at a time (`Trickle`), rows that
//! never end (`Faults::endless`, or a trickle without a row limit), and one bad row injected
//! mid-stream (`BadRow`).
//!
//! A print asks [`Shaping::next_row`] before each row and [`Shaping::continues`] when its
//! table runs out; synthetic rows that follow the table's own are valid rows of the same menu
//! (fresh `.id`s, the `.proplist` applied; the query is not, so a client's own check of what
//! came back sees them). Memory stays bounded: rows are made one chunk at a time and written
//! with the writer's backpressure. It deliberately knows no menu: the print supplies the rows.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::config::{BadRowKind, Faults};
use crate::writer::{End, ReplyWriter};

use super::args::interrupted;

/// Ids of synthetic rows start here (far above any id a table hands out).
pub(crate) const SYNTHETIC_ID_BASE: u64 = 0x4000_0000_0000;

/// How often a print that has nothing more to send, but must not end, looks for `/cancel`.
const IDLE_POLL: Duration = Duration::from_millis(50);

/// The shaping of one print.
#[derive(Debug, Default)]
pub(crate) struct Shaping {
    pace: Option<Duration>,
    limit: Option<u64>,
    endless: bool,
    trickle: bool,
    bad: Option<(u64, BadRowKind)>,
    /// Good rows let through so far.
    sent: u64,
}

impl Shaping {
    /// The shaping the faults in force give a print on `path`.
    pub(crate) fn of(path: &str, faults: &Faults) -> Self {
        let mut s = Shaping {
            endless: faults.endless.matches(path),
            ..Shaping::default()
        };
        if let Some(t) = faults.trickle.as_ref().filter(|t| t.paths.matches(path)) {
            s.trickle = true;
            s.pace = Some(t.every);
            s.limit = t.rows;
        }
        if let Some(b) = faults.bad_row.as_ref().filter(|b| b.paths.matches(path)) {
            s.bad = Some((b.after, b.kind));
        }
        s
    }

    /// No fault shapes this print.
    pub(crate) fn is_plain(&self) -> bool {
        !self.endless && !self.trickle && self.bad.is_none()
    }

    /// Whether another row may go out (after waiting for its turn, with what is buffered
    /// flushed so the client sees the previous row); `false` once the row limit is reached.
    pub(crate) async fn next_row(&mut self, w: &mut ReplyWriter) -> Result<bool, End> {
        if self.limit.is_some_and(|l| self.sent >= l) {
            return Ok(false);
        }
        if let Some(pace) = self.pace {
            w.flush().await?;
            tokio::time::sleep(pace).await;
        }
        self.sent += 1;
        Ok(true)
    }

    /// The bad row to send before the row `next_row` just let through, once per print.
    pub(crate) fn bad_row_due(&mut self) -> Option<BadRowKind> {
        match self.bad {
            Some((after, kind)) if self.sent == after + 1 => {
                self.bad = None;
                Some(kind)
            }
            _ => None,
        }
    }

    /// Whether synthetic rows follow once the table's own are out.
    pub(crate) fn continues(&self) -> bool {
        (self.endless || self.trickle) && self.limit.is_none_or(|l| self.sent < l)
    }

    /// Whether the print must never send `!done`.
    pub(crate) fn never_ends(&self) -> bool {
        self.endless || (self.trickle && self.limit.is_none())
    }
}

/// Spoils a row the way `kind` says.
pub(crate) fn spoil(row: &mut Vec<(String, String)>, kind: BadRowKind) {
    match kind {
        BadRowKind::UnparseableCounter => match row.iter_mut().find(|(n, _)| n == "orig-packets") {
            Some(slot) => slot.1 = "abc".into(),
            None => row.push(("orig-packets".into(), "abc".into())),
        },
        BadRowKind::MissingId => row.retain(|(n, _)| n != ".id"),
    }
}

/// A print with nothing more to send that must not end: waits for `/cancel`.
pub(crate) async fn hang_until_cancelled(
    cancel: &AtomicBool,
    w: &mut ReplyWriter,
) -> Result<(), End> {
    w.flush().await?;
    while !cancel.load(Ordering::Acquire) {
        tokio::time::sleep(IDLE_POLL).await;
    }
    interrupted(w).await
}
