//! The change journal as its users see it: append and read, cursors, `seek_time`, recovery after
//! torn writes and garbage, the file backing (reopen, size checks, the lock), and a `kill -9`
//! in the middle of appends.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lqd::codec::ServerTime;
use lqd::store::journal::{
    FlushPolicy, HEADER_LEN, Hole, Journal, JournalError, JournalFile, Overrun, Recovered, TooOld,
    inspect,
};
use proptest::prelude::*;

type Rec = (u64, ServerTime, Vec<u8>);

fn vec_journal(ring: usize) -> Journal<Vec<u8>> {
    Journal::format(vec![0; HEADER_LEN + ring]).expect("format")
}

/// Every record from the oldest on.
fn contents<B: AsRef<[u8]> + AsMut<[u8]>>(j: &Journal<B>) -> Vec<Rec> {
    let mut c = j.tail();
    let mut out = Vec::new();
    while let Some(r) = j.read(&mut c).expect("the tail is never overrun") {
        out.push((r.seq, r.time, r.payload.to_vec()));
    }
    out
}

/// A payload that says which record it is.
fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seq as usize).wrapping_mul(31).wrapping_add(i) as u8)
        .collect()
}

/// The buffer offset of record `seq`, found by its seq field (records start on multiples of 8).
fn offset_of(b: &[u8], seq: u64) -> usize {
    (HEADER_LEN..b.len() - 16)
        .step_by(8)
        .find(|&o| b[o + 8..o + 16] == seq.to_le_bytes() && b[o..o + 4] != [0xff; 4])
        .expect("the record is in the ring")
}

// ---------------------------------------------------------------------------------------------
// Append and read

#[test]
fn append_and_read_in_order() {
    let mut j = vec_journal(64 * 1024);
    assert!(j.is_empty());
    assert_eq!(
        (
            j.first_seq(),
            j.next_seq(),
            j.oldest_time(),
            j.newest_time()
        ),
        (None, 0, None, None)
    );
    let mut want = Vec::new();
    for seq in 0..300u64 {
        let len = (seq as usize * 37) % 200;
        let t = ServerTime(1000 + seq as u32 / 3);
        assert_eq!(j.append(t, &payload(seq, len)).expect("append"), seq);
        want.push((seq, t, payload(seq, len)));
    }
    assert_eq!(contents(&j), want);
    assert_eq!((j.first_seq(), j.next_seq(), j.len()), (Some(0), 300, 300));
    assert_eq!(j.oldest_time(), Some(ServerTime(1000)));
    assert_eq!(j.newest_time(), Some(ServerTime(1099)));
    assert_eq!(j.evicted_time(), None);
    assert!(j.used_bytes() > 0 && j.used_bytes() <= j.capacity());
}

#[test]
fn time_never_goes_back() {
    let mut j = vec_journal(4096);
    j.append(ServerTime(500), b"a").expect("append");
    j.append(ServerTime(400), b"b").expect("append");
    j.append(ServerTime(600), b"c").expect("append");
    let times: Vec<u32> = contents(&j).iter().map(|r| r.1.0).collect();
    assert_eq!(times, [500, 500, 600]);
}

#[test]
fn payload_limits() {
    let mut j = vec_journal(1024);
    assert_eq!(j.max_payload(), 256);
    j.append(ServerTime(1), &[0; 256])
        .expect("a quarter of the ring fits");
    let e = j
        .append(ServerTime(1), &[0; 257])
        .expect_err("over a quarter");
    assert!(
        matches!(e, JournalError::RecordTooLarge { len: 257, max: 256 }),
        "{e}"
    );
    let mut big = vec_journal(1 << 20);
    assert_eq!(big.max_payload(), 64 * 1024);
    big.append(ServerTime(1), &vec![1; 64 * 1024])
        .expect("64 KiB fits");
    assert!(big.append(ServerTime(1), &vec![1; 64 * 1024 + 1]).is_err());
    assert_eq!(big.next_seq(), 1, "a refused record takes no seq");
    j.append(ServerTime(1), &[])
        .expect("an empty payload is a record too");
}

#[test]
fn wraps_many_times_with_varied_sizes() {
    let mut j = vec_journal(4096);
    let mut model: VecDeque<Rec> = VecDeque::new();
    for seq in 0..20_000u64 {
        let len = ((seq * 7919) % 1025) as usize;
        let t = ServerTime(seq as u32 / 10);
        j.append(t, &payload(seq, len)).expect("append");
        model.push_back((seq, t, payload(seq, len)));
        let first = j.first_seq().expect("never empty after an append");
        while model.front().is_some_and(|r| r.0 < first) {
            model.pop_front();
        }
        if seq % 997 == 0 {
            assert_eq!(contents(&j), Vec::from(model.clone()));
        }
    }
    assert_eq!(contents(&j), Vec::from(model));
    assert!(j.first_seq().expect("records") > 19_000);
}

// ---------------------------------------------------------------------------------------------
// The model: after any sequence of appends, the journal holds a suffix of what was appended,
// evicting no more than it must.

#[derive(Debug, Clone)]
struct Op {
    len: usize,
    /// Added to the previous input time; negative values test the clamp.
    dt: i32,
}

fn ops() -> impl Strategy<Value = (usize, Vec<Op>)> {
    (256usize..3000).prop_flat_map(|ring| {
        let ring = ring / 8 * 8;
        let max = ring / 4;
        let op = (0..=max, -3i32..6).prop_map(|(len, dt)| Op { len, dt });
        (Just(ring), prop::collection::vec(op, 1..300))
    })
}

fn record_size(len: usize) -> usize {
    (20 + len).div_ceil(8) * 8
}

fn check_against_model(j: &Journal<Vec<u8>>, all: &[Rec]) -> Result<(), TestCaseError> {
    let first = j.first_seq().expect("not empty");
    let kept: Vec<Rec> = all.iter().filter(|r| r.0 >= first).cloned().collect();
    prop_assert_eq!(contents(j), kept.clone());
    prop_assert_eq!(j.next_seq(), all.len() as u64);
    prop_assert_eq!(j.len(), kept.len() as u64);
    prop_assert_eq!(j.oldest_time(), kept.first().map(|r| r.1));
    prop_assert_eq!(j.newest_time(), kept.last().map(|r| r.1));
    let evicted = first.checked_sub(1).map(|e| all[e as usize].1);
    prop_assert_eq!(j.evicted_time(), evicted);
    // Eviction is not over-eager: what is kept, plus the last record evicted, plus at most a
    // wrap gap and the span of the append that evicted it, covers the ring.
    if let Some(e) = first.checked_sub(1) {
        let kept_bytes: usize = kept.iter().map(|r| record_size(r.2.len())).sum();
        let max_rec = record_size(j.max_payload());
        prop_assert!(
            kept_bytes + record_size(all[e as usize].2.len()) + 3 * max_rec >= j.capacity(),
            "kept {} octets of {}",
            kept_bytes,
            j.capacity()
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn model_of_appends((ring, ops) in ops()) {
        let mut j = vec_journal(ring);
        let mut all: Vec<Rec> = Vec::new();
        let mut input = 1000i64;
        let mut last = ServerTime(0);
        for (i, op) in ops.iter().enumerate() {
            input = (input + i64::from(op.dt)).max(0);
            let t = ServerTime(input as u32);
            let seq = j.append(t, &payload(i as u64, op.len)).expect("append");
            prop_assert_eq!(seq, i as u64);
            last = last.max(t);
            all.push((seq, last, payload(i as u64, op.len)));
            check_against_model(&j, &all)?;
        }
        // seek_time agrees with a linear search, and TooOld with the evicted time.
        let first = j.first_seq().expect("not empty");
        let kept: Vec<&Rec> = all.iter().filter(|r| r.0 >= first).collect();
        let lo = all[0].1.0.saturating_sub(2);
        let hi = all.last().expect("one").1.0 + 2;
        for t in lo..=hi {
            let t = ServerTime(t);
            match j.seek_time(t) {
                Err(TooOld { evicted }) => {
                    prop_assert_eq!(Some(evicted), j.evicted_time());
                    prop_assert!(t <= evicted);
                }
                Ok(c) => {
                    prop_assert!(j.evicted_time().is_none_or(|e| t > e));
                    let want = kept.iter().find(|r| r.1 >= t).map_or(j.next_seq(), |r| r.0);
                    prop_assert_eq!(c.seq(), want, "t {}", t.0);
                }
            }
        }
        // Reopened, the same.
        let (j, rec) = Journal::open(j.into_inner()).expect("reopen");
        prop_assert_eq!(rec.discarded, None);
        prop_assert_eq!(rec.next_seq, all.len() as u64);
        check_against_model(&j, &all)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Cursors

#[test]
fn a_head_cursor_sees_only_new_records() {
    let mut j = vec_journal(8192);
    for s in 0..5 {
        j.append(ServerTime(10), &payload(s, 10)).expect("append");
    }
    let mut c = j.head();
    assert_eq!(c.seq(), 5);
    assert_eq!(j.read(&mut c), Ok(None));
    for s in 5..8 {
        j.append(ServerTime(11), &payload(s, 10)).expect("append");
    }
    let seqs: Vec<u64> = std::iter::from_fn(|| j.read(&mut c).expect("read"))
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, [5, 6, 7]);
    assert_eq!(j.read(&mut c), Ok(None));
    assert_eq!(c, j.head());
}

#[test]
fn a_head_cursor_follows_across_the_wrap() {
    let mut j = vec_journal(1024);
    let mut c = j.head();
    let mut seen = 0;
    for s in 0..500u64 {
        j.append(ServerTime(1), &payload(s, (s % 200) as usize))
            .expect("append");
        let r = j.read(&mut c).expect("kept up").expect("the new record");
        assert_eq!((r.seq, r.payload), (s, &payload(s, (s % 200) as usize)[..]));
        seen += 1;
        assert_eq!(j.read(&mut c), Ok(None));
    }
    assert_eq!(seen, 500);
}

#[test]
fn an_overrun_cursor_is_told() {
    let mut j = vec_journal(1024);
    for s in 0..4 {
        j.append(ServerTime(1), &payload(s, 100)).expect("append");
    }
    let mut slow = j.tail();
    assert_eq!(j.read(&mut slow).expect("read").map(|r| r.seq), Some(0));
    let mut c = slow;
    for s in 4..20 {
        j.append(ServerTime(2), &payload(s, 100)).expect("append");
    }
    assert!(j.first_seq().expect("records") > 1);
    assert_eq!(j.read(&mut slow), Err(Overrun));
    assert_eq!(j.read(&mut c), Err(Overrun));
    assert_eq!(slow.seq(), 1, "an overrun cursor does not move");
    // The reader starts again at the head (or the tail) and goes on.
    let mut again = j.tail();
    assert_eq!(
        j.read(&mut again).expect("read").map(|r| r.seq),
        j.first_seq()
    );
    assert!(Overrun.to_string().contains("overwrote"));
}

#[test]
fn a_cursor_from_another_journal_is_an_overrun_not_a_panic() {
    let mut big = vec_journal(8192);
    for s in 0..50 {
        big.append(ServerTime(1), &payload(s, 30)).expect("append");
    }
    let mut c = big.head();
    let mut small = vec_journal(8192);
    small.append(ServerTime(1), b"x").expect("append");
    assert_eq!(small.read(&mut c), Err(Overrun));
    let mut c = big.tail();
    for _ in 0..10 {
        big.read(&mut c).expect("read");
    }
    for s in 0..20 {
        small.append(ServerTime(1), &payload(s, 7)).expect("append");
    }
    // Seq 10 exists in `small`, but not at that offset.
    assert!(matches!(small.read(&mut c), Err(Overrun) | Ok(Some(_))));
}

// ---------------------------------------------------------------------------------------------
// seek_time

fn times_journal() -> Journal<Vec<u8>> {
    // Times 100, 100, 100, 105, 105, 110, ... : three records every 5 s, 1,000 records.
    let mut j = vec_journal(1 << 20);
    for s in 0..1000u64 {
        j.append(ServerTime(100 + (s / 3) as u32 * 5), &payload(s, 50))
            .expect("append");
    }
    j
}

#[test]
fn seek_time_exact_between_and_past_the_newest() {
    let j = times_journal();
    // Exact: the first of the records at that time.
    assert_eq!(j.seek_time(ServerTime(100)).map(|c| c.seq()), Ok(0));
    assert_eq!(j.seek_time(ServerTime(105)).map(|c| c.seq()), Ok(3));
    assert_eq!(
        j.seek_time(ServerTime(100 + 200 * 5)).map(|c| c.seq()),
        Ok(600)
    );
    // Between two times: the later.
    assert_eq!(j.seek_time(ServerTime(101)).map(|c| c.seq()), Ok(3));
    assert_eq!(
        j.seek_time(ServerTime(100 + 200 * 5 - 1)).map(|c| c.seq()),
        Ok(600)
    );
    // Past the newest: the head.
    let newest = j.newest_time().expect("records");
    assert_eq!(newest, ServerTime(100 + 333 * 5));
    assert_eq!(j.seek_time(newest).map(|c| c.seq()), Ok(999));
    assert_eq!(j.seek_time(ServerTime(newest.0 + 1)), Ok(j.head()));
    assert_eq!(j.seek_time(ServerTime(u32::MAX)), Ok(j.head()));
    // Reading from a sought cursor gives that record and the rest.
    let mut c = j.seek_time(ServerTime(1600)).expect("in range");
    let r = j.read(&mut c).expect("read").expect("a record");
    assert_eq!((r.seq, r.time), (900, ServerTime(1600)));
    // Every time, against a linear search.
    let all = contents(&j);
    for t in 90..1800 {
        let want = all.iter().find(|r| r.1.0 >= t).map_or(1000, |r| r.0);
        assert_eq!(
            j.seek_time(ServerTime(t)).map(|c| c.seq()),
            Ok(want),
            "t {t}"
        );
    }
}

#[test]
fn seek_time_before_the_oldest() {
    let mut j = vec_journal(2048);
    for s in 0..5 {
        j.append(ServerTime(1000 + s as u32), &payload(s, 100))
            .expect("append");
    }
    // Nothing evicted: the journal holds everything since it was formatted.
    assert_eq!(j.seek_time(ServerTime(0)), Ok(j.tail()));
    assert_eq!(j.seek_time(ServerTime(999)), Ok(j.tail()));
    // Fill the ring with records at 2000 and later: 1000..=1004 get evicted, some at least.
    for s in 5..40 {
        j.append(ServerTime(2000 + s as u32), &payload(s, 100))
            .expect("append");
    }
    let evicted = j.evicted_time().expect("records were evicted");
    let oldest = j.oldest_time().expect("records");
    assert!(evicted < oldest);
    assert_eq!(j.seek_time(ServerTime(0)), Err(TooOld { evicted }));
    assert_eq!(j.seek_time(evicted), Err(TooOld { evicted }));
    // After the newest evicted time nothing was lost: from there the journal is complete.
    assert_eq!(j.seek_time(ServerTime(evicted.0 + 1)), Ok(j.tail()));
    assert_eq!(j.seek_time(oldest), Ok(j.tail()));
    assert!(
        TooOld { evicted }
            .to_string()
            .contains(&evicted.0.to_string())
    );
    // The rule survives a restart.
    let (j, _) = Journal::open(j.into_inner()).expect("reopen");
    assert_eq!(j.seek_time(evicted), Err(TooOld { evicted }));
    assert_eq!(j.seek_time(ServerTime(evicted.0 + 1)), Ok(j.tail()));
}

#[test]
fn seek_time_when_records_at_the_oldest_time_were_evicted() {
    // All records at one time: once any is evicted, that time is too old.
    let mut j = vec_journal(1024);
    for s in 0..30 {
        j.append(ServerTime(7), &payload(s, 40)).expect("append");
    }
    assert_eq!(j.oldest_time(), Some(ServerTime(7)));
    assert_eq!(
        j.seek_time(ServerTime(7)),
        Err(TooOld {
            evicted: ServerTime(7)
        })
    );
    assert_eq!(j.seek_time(ServerTime(8)), Ok(j.head()));
}

// ---------------------------------------------------------------------------------------------
// Recovery over a Vec

fn filled(ring: usize, n: u64) -> (Journal<Vec<u8>>, Vec<Rec>) {
    let mut j = vec_journal(ring);
    for s in 0..n {
        j.append(
            ServerTime(50 + s as u32),
            &payload(s, (s as usize * 13) % 150),
        )
        .expect("append");
    }
    let c = contents(&j);
    (j, c)
}

#[test]
fn reopen_gives_the_same_journal() {
    for (ring, n) in [(8192, 0), (8192, 10), (2048, 500), (1 << 16, 5000)] {
        let (j, before) = filled(ring, n);
        let (first, next, oldest, newest, used) = (
            j.first_seq(),
            j.next_seq(),
            j.oldest_time(),
            j.newest_time(),
            j.used_bytes(),
        );
        let (mut j, rec) = Journal::open(j.into_inner()).expect("reopen");
        let want = Recovered {
            records: before.len() as u64,
            first_seq: first,
            next_seq: next,
            discarded: None,
            holes: Vec::new(),
            kept: None,
            migrated_from: None,
        };
        assert_eq!(rec, want);
        assert_eq!(contents(&j), before);
        assert_eq!(
            (j.oldest_time(), j.newest_time(), j.used_bytes()),
            (oldest, newest, used)
        );
        // And it goes on from there.
        assert_eq!(j.append(ServerTime(1), b"next").expect("append"), n);
        assert_eq!(j.newest_time(), newest.or(Some(ServerTime(1))));
    }
}

/// Reopens `b` after `damage`, and checks recovery kept exactly the records before seq `keep`.
fn damaged(damage: impl FnOnce(&mut Vec<u8>, usize), why: &str) {
    let (j, before) = filled(4096, 300);
    let mut b = j.into_inner();
    let last_off = offset_of(&b, 299);
    damage(&mut b, last_off);
    let (mut j, rec) = Journal::open(b).expect("a torn record is not an error");
    let kept = &before[..before.len() - 1];
    assert_eq!(contents(&j), kept);
    assert_eq!(rec.next_seq, 299);
    let reason = rec.discarded.expect("says why");
    assert!(reason.contains(why), "{reason}");
    assert!(reason.contains(&format!("offset {last_off}")), "{reason}");
    // The torn record's seq is given to the next append.
    assert_eq!(j.append(ServerTime(1), b"again").expect("append"), 299);
}

#[test]
fn a_flipped_crc_byte_ends_recovery_before_that_record() {
    damaged(|b, at| b[at + 5] ^= 0x01, "CRC mismatch");
}

#[test]
fn a_zeroed_end_of_the_last_record_ends_recovery_before_it() {
    // As if the payload's last octets never reached the disk.
    damaged(
        |b, at| {
            let len = u32::from_le_bytes(b[at..at + 4].try_into().expect("4")) as usize;
            let end = at + 20 + len;
            b[end - 8.min(len)..end].fill(0);
            b[end - 1] = 0xee; // in case those octets were already zero
        },
        "CRC mismatch",
    );
}

#[test]
fn a_length_past_the_ring_ends_recovery_before_that_record() {
    damaged(
        |b, at| b[at..at + 4].copy_from_slice(&60_000u32.to_le_bytes()),
        "does not fit",
    );
}

/// The buffer offset of record `r`, matched on its length, sequence number, time and payload
/// (a sequence number alone can also match octets of an older lap).
fn exact_offset(b: &[u8], r: &Rec) -> usize {
    let len = u32::try_from(r.2.len()).expect("small");
    (HEADER_LEN..b.len() - 20)
        .step_by(8)
        .find(|&o| {
            b[o..o + 4] == len.to_le_bytes()
                && b[o + 8..o + 16] == r.0.to_le_bytes()
                && b[o + 16..o + 20] == r.1.0.to_le_bytes()
                && b.get(o + 20..o + 20 + r.2.len()) == Some(&r.2[..])
        })
        .expect("the record is in the ring")
}

/// The payloads and times of `records`, without sequence numbers (a repair renumbers).
fn bodies(records: &[Rec]) -> Vec<(ServerTime, Vec<u8>)> {
    records.iter().map(|r| (r.1, r.2.clone())).collect()
}

#[test]
fn a_corrupt_middle_record_costs_only_itself_issue_20() {
    let mut j = vec_journal(64 * 1024);
    for s in 0..100u64 {
        j.append(ServerTime(s as u32), &payload(s, 64))
            .expect("append");
    }
    let before = contents(&j);
    let mut b = j.into_inner();
    let at = HEADER_LEN + 40 * record_size(64);
    assert_eq!(&b[at + 8..at + 16], &40u64.to_le_bytes());
    b[at + 30] ^= 0xff;
    let seen = inspect(&b).expect("inspect");
    assert_eq!(seen.records, 99);
    let hole = Hole {
        lost: 1,
        after: Some(ServerTime(39)),
        before: ServerTime(41),
    };
    assert_eq!(seen.holes, vec![hole]);
    let (mut j, rec) = Journal::open(b).expect("open");
    assert_eq!(rec.holes, vec![hole]);
    assert_eq!(rec.discarded, None);
    // Every other record is kept, a marker record in place of the lost one.
    let after = contents(&j);
    let mut want = bodies(&before);
    want.remove(40);
    let got: Vec<_> = bodies(&after)
        .into_iter()
        .filter(|(_, p)| Hole::from_marker(p).is_none())
        .collect();
    assert_eq!(got, want);
    assert_eq!(Hole::from_marker(&after[40].2), Some(hole));
    // A catch-up from before the hole is told it misses records; from after it is not.
    assert!(j.seek_time(ServerTime(30)).is_err());
    assert!(
        j.seek_time(ServerTime(41)).is_err(),
        "the lost record may be from 41"
    );
    assert_eq!(
        j.seek_time(ServerTime(42)).expect("after the hole").seq(),
        42
    );
    // The repaired ring reopens as it is, the hole still known, and goes on.
    j.append(ServerTime(200), b"next").expect("append");
    let (j, rec) = Journal::open(j.into_inner()).expect("reopen");
    assert_eq!((rec.records, rec.discarded, rec.holes), (101, None, vec![]));
    assert!(j.seek_time(ServerTime(30)).is_err());
}

#[test]
fn a_stale_header_head_is_only_a_hint() {
    let (j, _) = filled(1 << 16, 20);
    let old_header = j.into_inner()[..HEADER_LEN].to_vec();
    let (j, _) = filled(1 << 16, 200);
    let before = contents(&j);
    let mut b = j.into_inner();
    // The header of when there were 20 records (same tail: nothing was evicted).
    b[..HEADER_LEN].copy_from_slice(&old_header);
    let (j, rec) = Journal::open(b).expect("open");
    assert_eq!((rec.records, rec.next_seq, rec.discarded), (200, 200, None));
    assert_eq!(contents(&j), before);
}

#[test]
fn records_the_header_counted_but_the_ring_lost_are_reported() {
    let (j, before) = filled(1 << 16, 200);
    let mut b = j.into_inner();
    // Lose the last 50 records entirely (as after a power loss): zero their octets.
    let at = offset_of(&b, 150);
    b[at..].fill(0);
    let (j, rec) = Journal::open(b).expect("open");
    assert_eq!(contents(&j), before[..150]);
    let why = rec.discarded.expect("the header said 200");
    assert!(why.contains("50 lost"), "{why}");
}

#[test]
fn bad_headers_are_errors() {
    let (j, _) = filled(4096, 10);
    let good = j.into_inner();
    let open = |b: Vec<u8>| Journal::open(b).map(|_| ()).expect_err("refused");

    let mut b = good.clone();
    b[0] = b'X';
    assert!(matches!(open(b), JournalError::BadHeader(_)));
    let mut b = good.clone();
    b[8] = 3;
    assert!(matches!(
        open(b),
        JournalError::WrongVersion {
            found: 3,
            supported: 2
        }
    ));
    let mut b = good.clone();
    b.truncate(HEADER_LEN + 2048);
    assert!(matches!(
        open(b),
        JournalError::GeometryMismatch {
            header: 4096,
            buffer: 2048
        }
    ));
    let mut b = good.clone();
    b[64 + 10] ^= 1;
    b[128 + 10] ^= 1;
    let e = open(b);
    assert!(
        matches!(&e, JournalError::BadHeader(w) if w.contains("CRC")),
        "{e}"
    );
    assert!(matches!(
        open(vec![0; 100]),
        JournalError::TooSmall { len: 100, .. }
    ));
    assert!(matches!(
        open(vec![0; HEADER_LEN + 4096]),
        JournalError::BadHeader(_)
    ));
    assert!(matches!(
        Journal::format(vec![0u8; HEADER_LEN + 255]),
        Err(JournalError::TooSmall { .. })
    ));
    // A slot whose CRC is fine but whose offsets are outside the ring.
    let mut b = vec_journal(4096).into_inner();
    b[64..64 + 8].copy_from_slice(&1000u64.to_le_bytes()); // the newest generation
    b[64 + 8..64 + 16].copy_from_slice(&5000u64.to_le_bytes());
    let crc = crc_of_slot(&b, 64);
    b[64 + 60..64 + 64].copy_from_slice(&crc.to_le_bytes());
    assert!(matches!(open(b), JournalError::BadHeader(w) if w.contains("outside")));
}

fn crc_of_slot(b: &[u8], at: usize) -> u32 {
    // CRC32C of header 0..24 then slot 0..60, as the module documentation says.
    let mut covered = b[..24].to_vec();
    covered.extend_from_slice(&b[at..at + 60]);
    crc32c(&covered)
}

/// A plain bitwise CRC32C (Castagnoli, reflected 0x82F63B78), independent of the crate's.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn record_crcs_are_crc32c_of_seq_time_payload() {
    assert_eq!(crc32c(b"123456789"), 0xE306_9283, "the CRC-32C check value");
    let mut j = vec_journal(4096);
    j.append(ServerTime(0x0a0b_0c0d), b"hello").expect("append");
    let b = j.into_inner();
    let r = &b[HEADER_LEN..HEADER_LEN + 32];
    assert_eq!(&r[0..4], &5u32.to_le_bytes());
    assert_eq!(
        u32::from_le_bytes(r[4..8].try_into().expect("4")),
        crc32c(&r[8..25])
    );
    assert_eq!(&r[8..16], &0u64.to_le_bytes());
    assert_eq!(&r[16..20], &0x0a0b_0c0du32.to_le_bytes());
    assert_eq!(&r[20..25], b"hello");
    assert_eq!(&r[25..32], &[0; 7]);
}

#[test]
fn error_messages_are_one_line() {
    let errors = [
        JournalError::TooSmall { len: 1, min: 4352 },
        JournalError::BadHeader("no journal magic".into()),
        JournalError::WrongVersion {
            found: 9,
            supported: 1,
        },
        JournalError::GeometryMismatch {
            header: 1,
            buffer: 2,
        },
        JournalError::RecordTooLarge { len: 3, max: 2 },
        JournalError::SizeMismatch {
            path: "/x/j".into(),
            file: 10,
            configured: 20,
        },
        JournalError::Locked {
            path: "/x/j".into(),
        },
        JournalError::Io {
            what: "map of /x/j".into(),
            source: std::io::Error::other("boom"),
        },
    ];
    for e in errors {
        let s = e.to_string();
        assert!(!s.is_empty() && !s.contains('\n'), "{s}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Any bytes at all: an error, or a journal that reads and appends. Never a panic.
    #[test]
    fn random_bytes_never_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..HEADER_LEN + 2048), valid_header in any::<bool>(), tail in 0u64..3000, seq in any::<u64>()) {
        if valid_header && bytes.len() >= HEADER_LEN + 256 {
            // A valid header over a garbage ring, with a random tail: the walk meets garbage.
            let ring = (bytes.len() - HEADER_LEN) / 8 * 8;
            let fresh = vec_journal(ring).into_inner();
            bytes[..HEADER_LEN].copy_from_slice(&fresh[..HEADER_LEN]);
            bytes[64..64 + 8].copy_from_slice(&1000u64.to_le_bytes());
            bytes[64 + 8..64 + 16].copy_from_slice(&(tail / 8 * 8).to_le_bytes());
            bytes[64 + 16..64 + 24].copy_from_slice(&seq.to_le_bytes());
            bytes[64 + 32..64 + 40].copy_from_slice(&seq.to_le_bytes());
            let crc = crc_of_slot(&bytes, 64);
            bytes[64 + 60..64 + 64].copy_from_slice(&crc.to_le_bytes());
        }
        if let Ok((mut j, _)) = Journal::open(bytes) {
            let _ = contents(&j);
            let _ = j.seek_time(ServerTime(12345));
            for s in 0..20u64 {
                let _ = j.append(ServerTime(1), &payload(s, 30));
            }
            let _ = contents(&j);
        }
    }

    /// Random damage to a valid journal's ring (issue 20): every record whose checked octets
    /// were not touched is kept, in order; the lost ones are exactly those touched, counted in
    /// the holes, a marker record in place of each.
    #[test]
    fn damage_costs_only_the_damaged_records(flips in prop::collection::vec((0usize..4096, any::<u8>()), 1..8), n in 1u64..400) {
        let (j, before) = filled(4096, n);
        let mut b = j.into_inner();
        // The octets each record's CRC covers (its header and payload), before the damage.
        let spans: Vec<(usize, usize)> = before
            .iter()
            .map(|r| {
                let at = exact_offset(&b, r);
                (at, at + 20 + r.2.len())
            })
            .collect();
        let mut touched = vec![false; before.len()];
        for (at, x) in &flips {
            let at = HEADER_LEN + at;
            b[at] ^= x | 1;
            for (i, (from, to)) in spans.iter().enumerate() {
                touched[i] |= (*from..*to).contains(&at);
            }
        }
        let seen = inspect(&b).expect("the header is intact");
        let (j, rec) = Journal::open(b).expect("the header is intact");
        prop_assert_eq!(&seen.holes, &rec.holes);
        let after = contents(&j);
        let markers = after.iter().filter(|r| Hole::from_marker(&r.2).is_some()).count();
        prop_assert_eq!(markers, rec.holes.len());
        let kept: Vec<_> = bodies(&after)
            .into_iter()
            .filter(|(_, p)| Hole::from_marker(p).is_none())
            .collect();
        let untouched: Vec<_> = before
            .iter()
            .zip(&touched)
            .filter(|(_, t)| !**t)
            .map(|(r, _)| (r.1, r.2.clone()))
            .collect();
        // Kept: the untouched records, and only touched ones that are still intact (a flip
        // that cancelled out, say) in between.
        let mut rest = untouched.iter().peekable();
        for k in &kept {
            if rest.peek() == Some(&k) {
                rest.next();
            }
        }
        prop_assert!(rest.next().is_none(), "an untouched record was lost");
        prop_assert!(kept.len() <= before.len());
        // The count of lost records is what the holes and the torn end say.
        let lost_in_holes: u64 = rec.holes.iter().map(|h| h.lost).sum();
        prop_assert!(lost_in_holes as usize <= before.len() - kept.len());
    }
}

// ---------------------------------------------------------------------------------------------
// The file

fn file_records(jf: &JournalFile) -> Vec<Rec> {
    contents(jf.journal())
}

#[test]
fn a_file_journal_survives_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal");
    let size = HEADER_LEN as u64 + 64 * 1024;
    let before = {
        let (mut jf, rec) = JournalFile::open(&path, size, FlushPolicy::Os).expect("create");
        assert_eq!(
            rec,
            Recovered {
                records: 0,
                first_seq: None,
                next_seq: 0,
                discarded: None,
                holes: Vec::new(),
                kept: None,
                migrated_from: None,
            }
        );
        for s in 0..2000u64 {
            jf.append(ServerTime(s as u32), &payload(s, (s % 100) as usize))
                .expect("append");
        }
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), size);
        assert!(!dir.path().join("journal.new").exists());
        file_records(&jf)
    };
    assert!(before.first().expect("records").0 > 0, "the ring wrapped");
    let (jf, rec) = JournalFile::open(&path, size, FlushPolicy::Os).expect("reopen");
    assert_eq!(rec.records, before.len() as u64);
    assert_eq!(rec.next_seq, 2000);
    assert_eq!(rec.discarded, None);
    assert_eq!(file_records(&jf), before);
    assert_eq!(jf.path(), path);
}

/// Resident octets of this process's mappings of files in `dir` (`Rss:` of /proc/self/smaps;
/// the journal is mapped under the temporary name it was made under).
fn mapped_rss(dir: &Path) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
    let name = format!("{}/", dir.to_str().expect("path"));
    let mut inside = false;
    let mut kib = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            inside = line.contains(&name);
        } else if inside && first == "Rss:" {
            kib += line
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    kib * 1024
}

/// Issue 19: a journal of gigabytes must not sit in lqd's resident set. Appends keep only a
/// window of pages around the head mapped; the records read back the same, in this process
/// and after reopening.
#[test]
fn a_file_journal_keeps_only_the_pages_near_its_head_resident() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal");
    let size = HEADER_LEN as u64 + (256 << 20);
    let (mut jf, _) = JournalFile::open(&path, size, FlushPolicy::Os).expect("create");
    let mut peak = 0;
    for s in 0..400_000u64 {
        jf.append(ServerTime(s as u32), &payload(s, 600 + (s % 200) as usize))
            .expect("append");
        if s % 10_000 == 0 {
            peak = peak.max(mapped_rss(dir.path()));
        }
    }
    let written = file_records(&jf);
    assert!(written.first().expect("records").0 > 0, "the ring wrapped");
    // Two windows of 16 MiB, and the header, the pages of the last few appends and the
    // pages a release rounds to.
    let bound = 34 << 20;
    assert!(
        peak > 0 && peak <= bound,
        "resident journal octets {peak}, bound {bound}"
    );
    assert!(
        mapped_rss(dir.path()) >= 256 << 20,
        "reading every record maps them again"
    );
    drop(jf);
    let (jf, rec) = JournalFile::open(&path, size, FlushPolicy::Os).expect("reopen");
    assert_eq!(rec.records, written.len() as u64);
    assert_eq!(file_records(&jf), written);
}

#[test]
fn flush_policies_write_the_same_journal() {
    for policy in [
        FlushPolicy::Always,
        FlushPolicy::Interval(Duration::from_millis(1)),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal");
        let size = HEADER_LEN as u64 + 16 * 1024;
        let before = {
            let (mut jf, _) = JournalFile::open(&path, size, policy).expect("create");
            for s in 0..600u64 {
                jf.append(ServerTime(s as u32), &payload(s, 50))
                    .expect("append");
                jf.tick(Instant::now()).expect("tick");
            }
            jf.flush().expect("flush");
            file_records(&jf)
        };
        let (jf, rec) = JournalFile::open(&path, size, FlushPolicy::Os).expect("reopen");
        assert_eq!(rec.discarded, None);
        let after = file_records(&jf);
        // With these policies the header's tail runs ahead by up to 1/64 of the ring: the
        // oldest few records may be gone after the restart, never the newest.
        assert!(!after.is_empty());
        assert_eq!(after[..], before[before.len() - after.len()..]);
        let lost: usize = (before.len() - after.len()) * record_size(50);
        assert!(
            lost <= 16 * 1024 / 64 + record_size(50),
            "{policy:?}: lost {lost} octets"
        );
    }
}

#[test]
fn a_file_of_another_size_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal");
    let size = HEADER_LEN as u64 + 8192;
    drop(JournalFile::open(&path, size, FlushPolicy::Os).expect("create"));
    let e = JournalFile::open(&path, size * 2, FlushPolicy::Os).expect_err("refused");
    let msg = e.to_string();
    assert!(matches!(e, JournalError::SizeMismatch { .. }), "{msg}");
    assert!(
        msg.contains(&size.to_string()) && msg.contains(&(size * 2).to_string()),
        "{msg}"
    );
    // Still intact for the right size.
    JournalFile::open(&path, size, FlushPolicy::Os).expect("the right size opens");
}

#[test]
fn a_truncated_file_is_refused_naming_both_sizes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal");
    let size = HEADER_LEN as u64 + 8192;
    {
        let (mut jf, _) = JournalFile::open(&path, size, FlushPolicy::Os).expect("create");
        jf.append(ServerTime(1), b"one").expect("append");
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open")
        .set_len(size - 1000)
        .expect("truncate");
    let e = JournalFile::open(&path, size, FlushPolicy::Os).expect_err("refused");
    let msg = e.to_string();
    assert!(
        msg.contains(&(size - 1000).to_string()) && msg.contains(&size.to_string()),
        "{msg}"
    );
    // Configured to the truncated size, the header's ring length no longer matches.
    let e = JournalFile::open(&path, size - 1000, FlushPolicy::Os).expect_err("refused");
    assert!(matches!(e, JournalError::GeometryMismatch { .. }), "{e}");
    // Too small to be a journal at all.
    let e = JournalFile::open(&dir.path().join("tiny"), 100, FlushPolicy::Os).expect_err("refused");
    assert!(matches!(e, JournalError::TooSmall { .. }), "{e}");
    assert!(!dir.path().join("tiny").exists());
}

#[test]
fn a_second_open_is_refused_while_the_first_lives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal");
    let size = HEADER_LEN as u64 + 8192;
    let (mut first, _) = JournalFile::open(&path, size, FlushPolicy::Os).expect("create");
    first.append(ServerTime(1), b"mine").expect("append");
    let e = JournalFile::open(&path, size, FlushPolicy::Os).expect_err("locked");
    assert!(
        matches!(&e, JournalError::Locked { path: p } if p == &path),
        "{e}"
    );
    assert!(e.to_string().contains("locked"));
    drop(first);
    let (second, rec) = JournalFile::open(&path, size, FlushPolicy::Os).expect("free again");
    assert_eq!(rec.records, 1);
    assert_eq!(file_records(&second)[0].2, b"mine");
}

// ---------------------------------------------------------------------------------------------
// kill -9

const CHILD_ENV: &str = "LQD_JOURNAL_TEST_CHILD";
const KILL_RING: u64 = HEADER_LEN as u64 + 256 * 1024;

/// Runs only as the child of `kill_9_loses_no_reported_record`: appends until killed, printing
/// each seq once its append has returned.
#[test]
fn kill_9_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (mut jf, rec) =
        JournalFile::open(Path::new(&path), KILL_RING, FlushPolicy::Os).expect("child open");
    let mut out = std::io::stdout().lock();
    writeln!(out, "start {}", rec.next_seq).expect("stdout");
    let mut seq = rec.next_seq;
    loop {
        let len = (seq as usize * 7) % 300;
        let got = jf
            .append(ServerTime(seq as u32 / 16), &payload(seq, len))
            .expect("append");
        assert_eq!(got, seq);
        writeln!(out, "seq {seq}").expect("stdout");
        out.flush().expect("flush");
        seq += 1;
    }
}

#[test]
fn kill_9_loses_no_reported_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal");
    let mut next = 0;
    // Three rounds: each child continues the journal the previous one was killed in.
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "kill_9_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the child");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut reported = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        // Kill after a round-dependent count, somewhere in the middle of the stream.
        let kill_after = 3000 + round * 1717;
        while reported.len() < kill_after {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the child reports");
            if let Some(s) = line.strip_prefix("seq ") {
                reported.push(s.parse::<u64>().expect("a seq"));
            } else if let Some(s) = line.strip_prefix("start ") {
                assert_eq!(
                    s.parse::<u64>().expect("a seq"),
                    next,
                    "round {round} starts where the last ended"
                );
            }
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        reader.join().expect("reader");
        // Lines the child wrote before it died count too.
        reported.extend(
            rx.try_iter()
                .filter_map(|l| l.strip_prefix("seq ").and_then(|s| s.parse::<u64>().ok())),
        );

        let (jf, rec) =
            JournalFile::open(&path, KILL_RING, FlushPolicy::Os).expect("reopen after kill -9");
        let j = jf.journal();
        let last = *reported.last().expect("reported");
        assert!(
            rec.next_seq > last,
            "round {round}: seq {last} was reported, the journal ends at {}",
            rec.next_seq
        );
        let first = j.first_seq().expect("records");
        assert!(
            first <= last.saturating_sub(200),
            "the ring holds far more than the last 200"
        );
        let present: std::collections::HashMap<u64, Vec<u8>> =
            contents(j).into_iter().map(|(s, _, p)| (s, p)).collect();
        for &s in reported.iter().filter(|&&s| s >= first) {
            let p = present
                .get(&s)
                .unwrap_or_else(|| panic!("round {round}: reported seq {s} is missing"));
            assert_eq!(p, &payload(s, (s as usize * 7) % 300), "seq {s}");
        }
        next = rec.next_seq;
    }
}

/// `b`'s header as an lqd before format 2 wrote it: version 1, both slots' CRCs to match.
fn as_version_1(mut b: Vec<u8>) -> Vec<u8> {
    b[8..12].copy_from_slice(&1u32.to_le_bytes());
    for at in [64usize, 128] {
        let mut covered = b[0..24].to_vec();
        covered.extend_from_slice(&b[at..at + 60]);
        let crc = crc32c(&covered);
        b[at + 60..at + 64].copy_from_slice(&crc.to_le_bytes());
    }
    b
}

#[test]
fn a_version_1_journal_is_migrated_and_keeps_its_records() {
    let (j, before) = filled(4096, 10);
    let v1 = as_version_1(j.into_inner());
    let (j, rec) = Journal::open(v1.clone()).expect("a version-1 journal opens");
    assert_eq!(rec.migrated_from, Some(1));
    assert_eq!(rec.records, before.len() as u64);
    let b = j.into_inner();
    assert_eq!(&b[8..12], &2u32.to_le_bytes(), "written as version 2");
    // An lqd that knows only version 1 compares the version and refuses the file.
    let (j, rec) = Journal::open(b.clone()).expect("reopens");
    assert_eq!(
        (rec.migrated_from, rec.records),
        (None, before.len() as u64)
    );
    drop(j);
    // A kill -9 in the middle of the migration: the version changed and only the slot written
    // for it is valid (the other still has the version-1 CRC), or the version not yet
    // changed: either opens with every record.
    let mut mid = b.clone();
    let (old_slot, _) = if u64::from_le_bytes(b[64..72].try_into().unwrap())
        > u64::from_le_bytes(b[128..136].try_into().unwrap())
    {
        (128usize, 64usize)
    } else {
        (64, 128)
    };
    mid[old_slot + 60] ^= 0xff;
    let (_, rec) = Journal::open(mid).expect("one valid slot is enough");
    assert_eq!(rec.records, before.len() as u64);
}
