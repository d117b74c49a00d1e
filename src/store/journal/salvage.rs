//! Finding every intact record of a damaged ring: a damaged record costs only itself.
//!
//! Recovery walks the records from the header's tail, each the previous one's successor. Where
//! a record fails (its length does not fit, its CRC does not match, it goes back in time, or
//! its sequence number is not the next one), the walk used to end, and every newer record was
//! lost with it. [`scan`] instead looks further on, octet group by octet group (records are
//! 8-aligned), for the next record that is intact (its CRC matches), newer (a higher sequence
//! number, no earlier time) and plausible (no further ahead than the ring could hold records),
//! and goes on from there. What it skipped is a [`Hole`]: how many records, between which
//! times. Records of an older lap, in the free part of the ring, have lower sequence numbers
//! and are never taken.
//!
//! The scan only reads; [`Journal::open`](super::Journal::open) rebuilds a ring with holes
//! from what it found (see there).

use super::Hole;
use super::layout::{self, ALIGN, Entry, RECORD_HEADER, SEQ_LIMIT};
use crate::codec::ServerTime;

/// An intact record found by the scan.
#[derive(Debug, Clone, Copy)]
pub(super) struct Found {
    pub(super) seq: u64,
    pub(super) time: ServerTime,
    /// Its offset in the ring.
    pub(super) at: usize,
    /// Its size in the ring.
    pub(super) size: usize,
}

/// What a scan of the ring found.
#[derive(Debug, Default)]
pub(super) struct Scan {
    pub(super) found: Vec<Found>,
    pub(super) holes: Vec<Hole>,
    /// For each hole, how many records were found before it.
    pub(super) hole_at: Vec<usize>,
    /// Damaged octets were stepped over (a hole, or a damaged wrap marker that lost no
    /// record): the ring must be rebuilt for the usual walk to read it.
    pub(super) damaged: bool,
}

/// The record at `off` if it is intact and follows a record with sequence number `after - 1`
/// at time `min_time`: exactly `after` when `exact`, else any number from `after` to `max_seq`
/// (records may have been lost in between, or none: a damaged wrap marker).
fn intact(
    ring: &[u8],
    off: usize,
    max_payload: usize,
    after: u64,
    max_seq: u64,
    min_time: ServerTime,
    exact: bool,
) -> Option<Found> {
    let Entry::Record(r) = layout::entry_at(ring, off, max_payload) else {
        return None;
    };
    let seq_ok = r.seq < SEQ_LIMIT
        && if exact {
            r.seq == after
        } else {
            r.seq >= after && r.seq <= max_seq
        };
    if !seq_ok || r.time < min_time || r.covered.is_none() || !r.crc_ok() {
        return None;
    }
    Some(Found {
        seq: r.seq,
        time: r.time,
        at: off,
        size: r.size,
    })
}

/// Every intact record from `tail_off` (sequence number `tail_seq`, no earlier than
/// `evicted`) on, in order, and the holes between them.
pub(super) fn scan(
    ring: &[u8],
    max_payload: usize,
    tail_off: usize,
    tail_seq: u64,
    evicted: Option<ServerTime>,
) -> Scan {
    let n = ring.len();
    let smallest = layout::record_size(0).unwrap_or(RECORD_HEADER).max(ALIGN);
    let most = n.checked_div(smallest).unwrap_or(0) as u64;
    let mut out = Scan::default();
    let (mut off, mut seq) = (tail_off, tail_seq);
    let mut min_time = evicted.unwrap_or_default();
    let mut last_time: Option<ServerTime> = None;
    // Octets walked or skipped since the tail: one lap at most.
    let mut walked = 0usize;
    while walked < n {
        // A wrap marker sends the walk to offset 0.
        if off != 0 && matches!(layout::entry_at(ring, off, max_payload), Entry::Wrap) {
            walked = walked.saturating_add(n.saturating_sub(off));
            off = 0;
            continue;
        }
        if let Some(f) = intact(ring, off, max_payload, seq, seq, min_time, true) {
            // A record that runs past one lap from the tail overlaps the oldest: the end, as
            // for the walk of `Journal::open` (else `lqd journal check` would count a record
            // that lqd then drops).
            if walked.saturating_add(f.size) > n {
                break;
            }
            out.found.push(f);
            seq = seq.saturating_add(1);
            min_time = f.time;
            last_time = Some(f.time);
            walked = walked.saturating_add(f.size);
            off = off.saturating_add(f.size);
            if off >= n {
                off = 0;
            }
            continue;
        }
        // Not the next record: look on for a newer intact one, within the rest of the lap.
        let max_seq = tail_seq.saturating_add(most);
        let Some((f, skip)) = look_on(ring, off, n.saturating_sub(walked), (seq, max_seq), |at| {
            intact(ring, at, max_payload, seq, max_seq, min_time, false)
        }) else {
            break;
        };
        out.damaged = true;
        if f.seq > seq {
            out.hole_at.push(out.found.len());
            out.holes.push(Hole {
                lost: f.seq.saturating_sub(seq),
                after: last_time,
                before: f.time,
            });
        }
        seq = f.seq;
        walked = walked.saturating_add(skip);
        off = f.at;
    }
    out
}

/// The first position after `off` (8-aligned, wrapping, less than `within` octets on) where
/// `check` finds a record, and how far on it is. Most positions are free space, older laps or
/// the middle of a record: only those whose sequence-number field lies in `seqs` are checked
/// in full.
fn look_on(
    ring: &[u8],
    off: usize,
    within: usize,
    seqs: (u64, u64),
    check: impl Fn(usize) -> Option<Found>,
) -> Option<(Found, usize)> {
    let n = ring.len();
    let mut skip = ALIGN;
    while skip < within {
        let at = off.saturating_add(skip).checked_rem(n).unwrap_or(0);
        let end = n.min(at.saturating_add(within.saturating_sub(skip)));
        let words = ring.get(at..end).unwrap_or_default();
        // Word i+1 is the sequence number of a record starting at word i.
        let mut seq_words = words.chunks_exact(ALIGN).skip(1);
        for i in 0..words.len() / ALIGN {
            let seq = seq_words
                .next()
                .and_then(|w| w.try_into().ok())
                .map_or(0, u64::from_le_bytes);
            if seq >= seqs.0 && seq <= seqs.1 {
                let p = at.saturating_add(i.saturating_mul(ALIGN));
                if let Some(f) = check(p) {
                    return Some((f, skip.saturating_add(i.saturating_mul(ALIGN))));
                }
            }
        }
        let stepped = words.len().max(ALIGN);
        skip = skip.saturating_add(stepped.div_ceil(ALIGN).saturating_mul(ALIGN));
    }
    None
}
