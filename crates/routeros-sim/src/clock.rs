//! The simulator's clock: sim time since start, real or manual, plus wall-clock stamps.
//!
//! Everything time-dependent in the simulator (counters, timeouts, expiry, uptime) is a pure
//! function of "sim time since start", read from here. It deliberately schedules nothing:
//! values are computed when they are read. The one thing that waits on it is
//! [`Clock::wait_until`], for a source outside the simulator that plays on its time (a replay
//! of a recording): it wakes when real time gets there or when `advance` moves past it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

use crate::kinds::SimClock;

/// 2025-01-01 00:00:00 UTC: the wall clock of a manual-clock simulator at start.
const MANUAL_WALL_BASE: u64 = 1_735_689_600;

/// Sim time.
#[derive(Debug)]
pub(crate) struct Clock {
    kind: SimClock,
    origin: Instant,
    /// Nanoseconds added by `advance` (the whole of time for a manual clock).
    offset_nanos: AtomicU64,
    /// Unix seconds at sim time zero.
    wall_base: u64,
    /// Woken at every `advance`, for `wait_until`.
    moved: Notify,
}

impl Clock {
    pub(crate) fn new(kind: SimClock) -> Self {
        let wall_base = match kind {
            SimClock::Manual => MANUAL_WALL_BASE,
            SimClock::Real => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(MANUAL_WALL_BASE),
        };
        Self {
            kind,
            origin: Instant::now(),
            offset_nanos: AtomicU64::new(0),
            wall_base,
            moved: Notify::new(),
        }
    }

    /// Real or manual.
    pub(crate) fn kind(&self) -> SimClock {
        self.kind
    }

    /// Sim time since start.
    pub(crate) fn now(&self) -> Duration {
        let offset = Duration::from_nanos(self.offset_nanos.load(Ordering::Acquire));
        match self.kind {
            SimClock::Manual => offset,
            SimClock::Real => self.origin.elapsed() + offset,
        }
    }

    /// Moves sim time forward by `d`.
    pub(crate) fn advance(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .offset_nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_add(nanos))
            });
        self.moved.notify_waiters();
    }

    /// Returns once sim time is `at` or later: at once if it is, else when real time gets
    /// there (real clock, tokio time) or an `advance` moves past it (either clock).
    pub(crate) async fn wait_until(&self, at: Duration) {
        loop {
            // Registered before time is read, so an `advance` in between is not missed.
            let moved = self.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            let now = self.now();
            if now >= at {
                return;
            }
            match self.kind {
                SimClock::Manual => moved.await,
                SimClock::Real => {
                    tokio::select! {
                        _ = moved => {}
                        _ = tokio::time::sleep(at - now) => {}
                    }
                }
            }
        }
    }

    /// `yyyy-mm-dd hh:mm:ss` (UTC) of the sim time `at`.
    pub(crate) fn wall_stamp(&self, at: Duration) -> String {
        format_wall(self.wall_base.saturating_add(at.as_secs()))
    }
}

/// Formats Unix seconds as `yyyy-mm-dd hh:mm:ss` (UTC), the RouterOS 7.10+ form.
pub(crate) fn format_wall(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_format() {
        assert_eq!(format_wall(0), "1970-01-01 00:00:00");
        assert_eq!(format_wall(MANUAL_WALL_BASE), "2025-01-01 00:00:00");
        assert_eq!(format_wall(951_782_400 + 3_661), "2000-02-29 01:01:01");
    }

    #[test]
    fn manual_clock_only_moves_by_advance() {
        let c = Clock::new(SimClock::Manual);
        assert_eq!(c.now(), Duration::ZERO);
        c.advance(Duration::from_secs(5));
        assert_eq!(c.now(), Duration::from_secs(5));
        assert_eq!(c.wall_stamp(c.now()), "2025-01-01 00:00:05");
    }

    #[tokio::test]
    async fn a_wait_on_the_manual_clock_ends_when_an_advance_reaches_it() {
        let c = std::sync::Arc::new(Clock::new(SimClock::Manual));
        c.wait_until(Duration::ZERO).await;
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.wait_until(Duration::from_secs(10)).await }
        });
        // Short of the mark: the waiter must still be waiting after it looked again.
        c.advance(Duration::from_secs(9));
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished());
        c.advance(Duration::from_secs(1));
        tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .expect("the advance to 10 s ends the wait")
            .unwrap();
    }
}
