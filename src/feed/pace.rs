//! Pacing a source at a steady rate, with bounded catch-up.

use std::time::{Duration, Instant};

/// Paces a stream of sends at `rate` per second from an origin instant.
///
/// Send number `n` (counting from zero) is due at `origin + n / rate`. A sender that fell
/// behind (the thread slept too long, or a full feed made it wait) catches up by sending
/// without pause, but by at most [`MAX_CATCH_UP`](Self::MAX_CATCH_UP) worth of sends: a longer
/// stall is forgotten rather than paid back in one burst. Time is passed in, so the pacing is
/// testable without sleeping.
#[derive(Debug, Clone)]
pub struct Pacer {
    origin: Instant,
    rate: u32,
    sent: u64,
}

impl Pacer {
    /// The most lag that is caught up; older lag is dropped.
    pub const MAX_CATCH_UP: Duration = Duration::from_secs(1);

    /// A pacer for `rate` sends per second (at least one), whose first send is due at
    /// `origin`.
    #[must_use]
    pub fn new(rate: u32, origin: Instant) -> Self {
        Self {
            origin,
            rate: rate.max(1),
            sent: 0,
        }
    }

    /// When the next send is due.
    #[must_use]
    pub fn next_due(&self) -> Instant {
        let nanos = u128::from(self.sent) * 1_000_000_000 / u128::from(self.rate);
        let offset = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.origin.checked_add(offset).unwrap_or(self.origin)
    }

    /// How long to wait at `now` before the next send, or `None` when it is due. When the
    /// sender is more than [`MAX_CATCH_UP`](Self::MAX_CATCH_UP) behind, the excess lag is
    /// dropped first.
    pub fn delay(&mut self, now: Instant) -> Option<Duration> {
        let due = self.next_due();
        if due > now {
            return Some(due.duration_since(now));
        }
        let lag = now.duration_since(due);
        if let Some(excess) = lag.checked_sub(Self::MAX_CATCH_UP) {
            self.origin = self.origin.checked_add(excess).unwrap_or(self.origin);
        }
        None
    }

    /// Records one send.
    pub fn sent(&mut self) {
        self.sent = self.sent.saturating_add(1);
    }

    /// Sends recorded so far.
    #[must_use]
    pub const fn count(&self) -> u64 {
        self.sent
    }
}
