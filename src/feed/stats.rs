//! What a source reports about itself while it runs: rows it rejected, how far behind its file
//! it is, and the newest row time it has seen (issue 16, `docs/metrics.md`).
//!
//! The source's thread sets these; the metrics endpoint reads them. lqd hands a source the
//! counters of its [`Metrics`](crate::server::metrics::Metrics) (see
//! [`Metrics::source_stats`](crate::server::metrics::Metrics::source_stats)); a source started
//! without metrics gets counters of its own that nobody reads ([`SourceStats::default`]).
//!
//! | field | metric | set by |
//! |---|---|---|
//! | [`rejected`](SourceStats::rejected) | `lqd_feed_changes_rejected_total` | each line or row skipped as malformed (a bad field, an unknown state, a bad header's rows; a `lease6` row lqd cannot map) |
//! | [`lag_bytes`](SourceStats::lag_bytes) | `lqd_source_lag_bytes` | file sources, after each read pass: the followed file's size now less the octets taken from it as lines (a last line still without its newline counts as lag); `kea-pgsql`, at each confirmation to the slot: the server's WAL end as it last said less the position lqd confirmed (octets of WAL the slot holds for lqd) |
//! | [`newest_time`](SourceStats::newest_time) | `lqd_source_newest_row_timestamp_seconds` | each row read: the largest row time so far (Kea: `expire − valid_lifetime`; a JSON line: `cltt`; `kea-pgsql`: the newest commit time, or the snapshot's), Unix seconds; 0 until a row is read |

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A source's counters, shared with whoever reads them: see the [module documentation](self).
/// Cloning shares the counters.
#[derive(Debug, Clone, Default)]
pub struct SourceStats {
    /// Lines or rows skipped as malformed.
    pub rejected: Arc<AtomicU64>,
    /// File sources: octets between what was read and the end of the followed file.
    pub lag_bytes: Arc<AtomicU64>,
    /// The newest row time seen, Unix seconds; 0 while none was.
    pub newest_time: Arc<AtomicU64>,
}

impl SourceStats {
    /// One line or row rejected.
    pub fn reject(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// The followed file has `octets` past what was read.
    pub fn set_lag(&self, octets: u64) {
        self.lag_bytes.store(octets, Ordering::Relaxed);
    }

    /// A row of time `unix` (Unix seconds; a negative one, before 1970, counts as 0) was read.
    pub fn saw_time(&self, unix: i64) {
        let t = u64::try_from(unix).unwrap_or(0);
        self.newest_time.fetch_max(t, Ordering::Relaxed);
    }

    /// Rows rejected so far.
    #[must_use]
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// The last lag set.
    #[must_use]
    pub fn lag_bytes(&self) -> u64 {
        self.lag_bytes.load(Ordering::Relaxed)
    }

    /// The newest row time seen (0: none yet).
    #[must_use]
    pub fn newest_time(&self) -> u64 {
        self.newest_time.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_counters_and_the_newest_time_only_grows() {
        let a = SourceStats::default();
        let b = a.clone();
        b.reject();
        b.reject();
        b.set_lag(17);
        b.saw_time(1_700_000_100);
        b.saw_time(1_700_000_000);
        b.saw_time(-5);
        assert_eq!(a.rejected(), 2);
        assert_eq!(a.lag_bytes(), 17);
        assert_eq!(a.newest_time(), 1_700_000_100);
        let other = SourceStats::default();
        assert_eq!(other.rejected(), 0);
    }
}
