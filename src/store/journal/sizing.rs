//! How much time the journal holds at the churn its own records show (issue 19).
//!
//! A requestor catching up after a reboot reaches back as far as the journal's oldest record;
//! operators size the journal for the catch-up window they need (`catch_up_window`,
//! docs/operations.md). At start lqd reads the churn off the ring it opened: how many records
//! it holds over how many seconds, and how many octets they take. From those it knows how many
//! seconds a full ring holds at that churn, and what `journal_size` would hold the window.
//! The estimate is only as good as the history: a ring that holds a burst (the first load of
//! a lease store) overstates the churn, and one with a minute of records understates changes
//! that come in waves.

use std::time::Duration;

use super::layout::HEADER_LEN;
use super::ring::Journal;

/// The churn the ring's records show, and what it means for the time the ring holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reach {
    /// Records in the ring.
    pub records: u64,
    /// Seconds from the oldest record to the newest.
    pub span_secs: u32,
    /// Changes a second over that span.
    pub changes_per_sec: f64,
    /// Octets of ring a record takes, on average (framing and alignment included).
    pub octets_per_record: f64,
    /// Octets of ring.
    pub ring_len: u64,
}

impl Reach {
    /// How long a full ring holds at this churn.
    #[must_use]
    pub fn holds(&self) -> Duration {
        let records = self.ring_len as f64 / self.octets_per_record.max(1.0);
        Duration::from_secs_f64((records / self.changes_per_sec.max(f64::MIN_POSITIVE)).min(1e12))
    }

    /// The `journal_size` (header included) that holds `window` at this churn.
    #[must_use]
    pub fn size_for(&self, window: Duration) -> u64 {
        let octets = window.as_secs_f64() * self.changes_per_sec * self.octets_per_record;
        (octets.ceil() as u64).saturating_add(HEADER_LEN as u64)
    }
}

/// The churn `journal` shows: `None` while it holds fewer than two records, or all of one
/// second (no rate can be read off it yet).
pub fn reach<B: AsRef<[u8]> + AsMut<[u8]>>(journal: &Journal<B>) -> Option<Reach> {
    let records = journal.len();
    let (oldest, newest) = (journal.oldest_time()?, journal.newest_time()?);
    let span_secs = newest.0.checked_sub(oldest.0).filter(|s| *s > 0)?;
    if records < 2 {
        return None;
    }
    Some(Reach {
        records,
        span_secs,
        changes_per_sec: records.saturating_sub(1) as f64 / f64::from(span_secs),
        octets_per_record: journal.used_bytes() as f64 / records as f64,
        ring_len: journal.capacity() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::ServerTime;

    #[test]
    fn the_churn_and_the_time_a_ring_holds_are_read_off_its_records() {
        let mut j = Journal::format(vec![0u8; HEADER_LEN + 64 * 1024]).unwrap();
        assert_eq!(reach(&j), None, "no records");
        j.append(ServerTime(1000), &[7; 44]).unwrap();
        assert_eq!(reach(&j), None, "one record");
        j.append(ServerTime(1000), &[7; 44]).unwrap();
        assert_eq!(reach(&j), None, "all in one second");
        // 101 records of 64 octets (20 of framing, 44 of payload) over 50 s: 2 a second.
        for i in 2..101u32 {
            j.append(ServerTime(1000 + i / 2), &[7; 44]).unwrap();
        }
        let r = reach(&j).unwrap();
        assert_eq!((r.records, r.span_secs), (101, 50));
        assert!((r.changes_per_sec - 2.0).abs() < 1e-9);
        assert!((r.octets_per_record - 64.0).abs() < 1e-9);
        // 64 KiB of ring is 1,024 records: 512 s at 2 a second.
        assert_eq!(r.ring_len, 64 * 1024);
        assert_eq!(r.holds(), Duration::from_secs(512));
        // An hour at 2 records of 64 octets a second, and the header.
        assert_eq!(
            r.size_for(Duration::from_secs(3600)),
            3600 * 2 * 64 + HEADER_LEN as u64
        );
    }
}
