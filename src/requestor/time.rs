//! Server time and local time (digest §11).
//!
//! A message's relative values are relative to its OPTION_LQ_BASE_TIME `B`, the server's clock
//! when it built the message. It arrives at local wall-clock time `L`. The skew `δ = L − B`
//! (network delay included, normally negligible) maps any server time `S` to local `S + δ`;
//! a lifetime `t` ends at local `L + t`; the client's last transaction was at
//! `L − clt_time`. A message without base-time (plain RFC 5007) is relative to its arrival,
//! and with no base-time ever seen the two clocks are assumed to agree.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::codec::ServerTime;

/// The time context of one received message: its base-time, if it carried one, and when it
/// arrived (wall clock, to the millisecond).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBase {
    /// OPTION_LQ_BASE_TIME, in the server's context.
    pub base_time: Option<ServerTime>,
    /// Local time of arrival.
    pub received: SystemTime,
}

/// Local time truncated to the millisecond (what the state file keeps).
pub(crate) fn now_ms() -> SystemTime {
    truncate_ms(SystemTime::now())
}

pub(crate) fn truncate_ms(t: SystemTime) -> SystemTime {
    let ms = unix_ms(t);
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Milliseconds since the Unix epoch (negative before it).
pub(crate) fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis())
            .map(|v| -v)
            .unwrap_or(i64::MIN),
    }
}

/// The local time `ms` milliseconds after the Unix epoch.
pub(crate) fn from_unix_ms(ms: i64) -> SystemTime {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

fn add_secs(t: SystemTime, secs: u32) -> SystemTime {
    t.checked_add(Duration::from_secs(u64::from(secs)))
        .unwrap_or(t)
}

impl TimeBase {
    /// A message that arrived now.
    #[must_use]
    pub fn now(base_time: Option<ServerTime>) -> Self {
        Self {
            base_time,
            received: now_ms(),
        }
    }

    /// The skew `δ = L − B` in milliseconds (local ahead of the server when positive); `None`
    /// without a base-time.
    #[must_use]
    pub fn skew_ms(&self) -> Option<i64> {
        let b = self.base_time?;
        let b_ms = i64::try_from(b.to_unix()).ok()?.checked_mul(1000)?;
        unix_ms(self.received).checked_sub(b_ms)
    }

    /// The local time at which a relative lifetime of `secs` seconds ends; `None` for
    /// infinity (0xFFFFFFFF, never added).
    #[must_use]
    pub fn lifetime_end(&self, secs: u32) -> Option<SystemTime> {
        (secs != u32::MAX).then(|| add_secs(self.received, secs))
    }

    /// The server times at which lifetimes of `preferred` and `valid` seconds end: the
    /// base-time plus each. `None` without a base-time, or when either is infinite.
    #[must_use]
    pub fn server_ends(&self, preferred: u32, valid: u32) -> Option<(ServerTime, ServerTime)> {
        let b = self.base_time?;
        (preferred != u32::MAX && valid != u32::MAX).then(|| {
            (
                ServerTime(b.0.saturating_add(preferred)),
                ServerTime(b.0.saturating_add(valid)),
            )
        })
    }

    /// The local time `secs` seconds before arrival (OPTION_CLT_TIME).
    #[must_use]
    pub fn seconds_ago(&self, secs: u32) -> SystemTime {
        self.received
            .checked_sub(Duration::from_secs(u64::from(secs)))
            .unwrap_or(self.received)
    }

    /// The local time of server time `s`: `s + δ`, or `s` itself without a base-time.
    #[must_use]
    pub fn to_local(&self, s: ServerTime) -> SystemTime {
        let unix_ms = i64::try_from(s.to_unix())
            .unwrap_or(i64::MAX)
            .saturating_mul(1000);
        from_unix_ms(unix_ms.saturating_add(self.skew_ms().unwrap_or(0)))
    }

    /// The server time of local time `t`: `t − δ` (seconds, truncated), or `t` itself without
    /// a base-time. For START/END given by a person; prefer base-times the server sent.
    #[must_use]
    pub fn to_server(&self, t: SystemTime) -> ServerTime {
        let ms = unix_ms(t).saturating_sub(self.skew_ms().unwrap_or(0));
        ServerTime::from_unix(u64::try_from(ms.div_euclid(1000)).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix_ms: i64, base: Option<u32>) -> TimeBase {
        TimeBase {
            base_time: base.map(ServerTime),
            received: from_unix_ms(unix_ms),
        }
    }

    #[test]
    fn relative_values_are_relative_to_arrival() {
        // The server's clock is 100 s behind ours: B = 1000 server seconds after 2000.
        let l = (ServerTime(1000).to_unix() as i64 + 100) * 1000 + 250;
        let tb = at(l, Some(1000));
        assert_eq!(tb.skew_ms(), Some(100_250));
        assert_eq!(tb.lifetime_end(60), Some(from_unix_ms(l + 60_000)));
        assert_eq!(tb.lifetime_end(u32::MAX), None, "infinity is never added");
        assert_eq!(tb.seconds_ago(10), from_unix_ms(l - 10_000));
        // A server time maps through the skew, and back.
        let s = ServerTime(2000);
        let local = tb.to_local(s);
        assert_eq!(unix_ms(local), s.to_unix() as i64 * 1000 + 100_250);
        assert_eq!(tb.to_server(local), s);
    }

    #[test]
    fn without_base_time_the_clocks_are_taken_to_agree() {
        let tb = at(1_700_000_000_123, None);
        assert_eq!(tb.skew_ms(), None);
        let s = ServerTime(789_004_800);
        assert_eq!(unix_ms(tb.to_local(s)), 1_735_689_600_000);
        assert_eq!(tb.to_server(tb.to_local(s)), s);
    }

    #[test]
    fn arrival_is_kept_to_the_millisecond() {
        let t = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        assert_eq!(unix_ms(truncate_ms(t)), 1_700_000_000_123);
        assert_eq!(from_unix_ms(-5), UNIX_EPOCH - Duration::from_millis(5));
        assert_eq!(unix_ms(from_unix_ms(-5)), -5);
    }
}
