//! Unit tests of the byte layout and of the ring's internals, over a `Vec<u8>`.
//! (The behaviour as a user sees it is in `tests/journal.rs`.)

use super::layout::{self, Entry, Slot, field};
use super::*;

fn ring(n: usize) -> Journal<Vec<u8>> {
    Journal::format(vec![0; HEADER_LEN + n]).expect("format")
}

fn all(j: &Journal<Vec<u8>>) -> Vec<(u64, u32, Vec<u8>)> {
    let mut c = j.tail();
    let mut out = Vec::new();
    while let Some(r) = j.read(&mut c).expect("no overrun") {
        out.push((r.seq, r.time.0, r.payload.to_vec()));
    }
    out
}

#[test]
fn record_bytes() {
    // seq 7, time 0x01020304, payload "abc": 23 octets padded to 24.
    let mut b = [0xa5u8; 24];
    assert!(layout::write_record(
        &mut b,
        7,
        ServerTime(0x0102_0304),
        b"abc"
    ));
    let crc = crc32c::crc32c(&b[8..23]);
    assert_eq!(&b[0..4], &[3, 0, 0, 0]);
    assert_eq!(&b[4..8], &crc.to_le_bytes());
    assert_eq!(&b[8..16], &[7, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&b[16..20], &[4, 3, 2, 1]);
    assert_eq!(&b[20..24], b"abc\0");
    let Entry::Record(r) = layout::entry_at(&b, 0, 100) else {
        panic!("a record")
    };
    assert!(r.crc_ok());
    assert_eq!(
        (r.seq, r.time, r.payload(), r.size),
        (7, ServerTime(0x0102_0304), &b"abc"[..], 24)
    );
    // Over the maximum payload, or running past the end: no payload, never a panic.
    let Entry::Record(r) = layout::entry_at(&b, 0, 2) else {
        panic!("a record")
    };
    assert!(r.covered.is_none() && !r.crc_ok());
    let Entry::Record(r) = layout::entry_at(&b[..22], 0, 100) else {
        panic!("a record")
    };
    assert!(r.covered.is_none());
    assert!(matches!(layout::entry_at(&b, 8, 100), Entry::Short));
    assert!(matches!(layout::entry_at(&b, 1000, 100), Entry::Short));
    assert_eq!(layout::record_size(0), Some(24));
    assert_eq!(layout::record_size(4), Some(24));
    assert_eq!(layout::record_size(5), Some(32));
    assert_eq!(layout::record_size(usize::MAX), None);
}

#[test]
fn header_bytes() {
    let j = ring(1024);
    let b = j.into_inner();
    assert_eq!(&b[0..8], b"LQDJRNL\0");
    assert_eq!(&b[8..12], &[2, 0, 0, 0]);
    assert_eq!(&b[12..16], &4096u32.to_le_bytes());
    assert_eq!(&b[16..24], &1024u64.to_le_bytes());
    let s = Slot::read(&b, 0).expect("slot 0 written by format");
    assert_eq!(s.generation, 0);
    assert_eq!(
        (s.tail_off, s.tail_seq, s.head_off, s.head_seq, s.evicted),
        (0, 0, 0, 0, None)
    );
    let s = Slot::read(&b, 1).expect("slot 1 written by into_inner");
    assert_eq!(s.generation, 1);
    assert_eq!(
        (s.tail_off, s.tail_seq, s.head_off, s.head_seq, s.evicted),
        (0, 0, 0, 0, None)
    );
    let mut fresh = vec![0; HEADER_LEN + 1024];
    assert!(layout::write_fixed(&mut fresh, 1024));
    assert!(Slot::read(&fresh, 0).is_none() && Slot::read(&fresh, 1).is_none());
}

#[test]
fn slots_alternate_and_a_torn_slot_falls_back() {
    let mut j = ring(4096);
    for i in 0..5u32 {
        j.append(ServerTime(100 + i), &[i as u8; 30])
            .expect("append");
    }
    let mut b = j.into_inner();
    let (s0, s1) = (
        Slot::read(&b, 0).expect("s0"),
        Slot::read(&b, 1).expect("s1"),
    );
    // format wrote generation 0; appends that evict nothing leave the header alone;
    // into_inner wrote generation 1, into slot 1.
    assert_eq!((s0.generation, s1.generation), (0, 1));
    assert_eq!((s0.head_seq, s1.head_seq), (0, 5));
    // Tear the newest slot: the older one is used, and the walk still finds all five records
    // (its head is only a hint).
    b[field::SLOTS[1] + 3] ^= 0x40;
    let (j, rec) = Journal::open(b).expect("open with one good slot");
    assert_eq!(rec.records, 5);
    assert_eq!(rec.discarded, None);
    assert_eq!(all(&j).len(), 5);
}

#[test]
fn the_index_follows_the_ring() {
    let mut j = ring(64 * 1024);
    for i in 0..5000u32 {
        j.append(ServerTime(i / 7), &vec![i as u8; (i % 90) as usize])
            .expect("append");
    }
    assert!(j.first_seq().expect("records") > 0, "the ring wrapped");
    // Each index entry points at the record with its implied seq.
    let first = j.first_seq().expect("records");
    let last = j.next_seq() - 1;
    let mut expect = first;
    let mut n = 0;
    while expect <= last {
        let t = ServerTime((expect / 7) as u32);
        let c = j.seek_time(t).expect("in range");
        // The first record at that time is at most 6 before `expect`.
        assert!(
            c.seq() <= expect && expect - c.seq() < 7,
            "{} vs {expect}",
            c.seq()
        );
        // And every record is found by its sequence number at once.
        let mut at = j.cursor_at(expect).expect("in the ring");
        assert_eq!(j.read(&mut at).expect("read").map(|r| r.seq), Some(expect));
        expect += 1;
        n += 1;
    }
    assert!(n > 10);
    assert!(j.cursor_at(first - 1).is_err(), "evicted");
    assert!(j.cursor_at(last + 2).is_err(), "not written");
    assert_eq!(j.cursor_at(last + 1).expect("the head"), j.head());
    // Reopened, the index is rebuilt the same.
    let before: Vec<_> = (0..200u32)
        .map(|t| j.seek_time(ServerTime(t * 4)).map(|c| c.seq()))
        .collect();
    let (j, _) = Journal::open(j.into_inner()).expect("reopen");
    let after: Vec<_> = (0..200u32)
        .map(|t| j.seek_time(ServerTime(t * 4)).map(|c| c.seq()))
        .collect();
    assert_eq!(before, after);
}

#[test]
fn header_tail_runs_ahead_with_a_reserve() {
    let mut j = ring(8192);
    j.set_reserve(2048);
    for i in 0..400u32 {
        j.append(ServerTime(i), &[i as u8; 40]).expect("append");
    }
    let in_memory = all(&j);
    let first = j.first_seq().expect("records");
    let b = j.into_inner();
    let s = Slot::read(&b, 0)
        .into_iter()
        .chain(Slot::read(&b, 1))
        .max_by_key(|s| s.generation);
    let s = s.expect("a slot");
    // The header's tail is ahead of the memory's, by less than the reserve and one record.
    assert!(s.tail_seq >= first);
    assert!(
        (s.tail_seq - first) * 64 <= 2048 + 64,
        "{} vs {first}",
        s.tail_seq
    );
    let (j, rec) = Journal::open(b).expect("reopen");
    assert_eq!(rec.first_seq, Some(s.tail_seq));
    assert_eq!(rec.discarded, None);
    let skip = (s.tail_seq - first) as usize;
    assert_eq!(all(&j), in_memory[skip..]);
    // The evicted time after the restart is the one just before the header's tail.
    assert_eq!(j.evicted_time(), Some(ServerTime(s.tail_seq as u32 - 1)));
}

#[test]
fn a_cursor_at_a_wrap_marker_reads_the_record_at_offset_0() {
    // 100-octet payloads take 120 octets: five fill 0..600 of a 640-octet ring, and the sixth
    // leaves a wrap marker at 600 and goes to offset 0 (evicting seq 0).
    let mut j = ring(640);
    let q = [9u8; 100];
    for t in 0..6 {
        j.append(ServerTime(t), &q).expect("append");
    }
    assert_eq!(j.first_seq(), Some(1));
    let mut at5 = j.tail();
    for _ in 0..4 {
        j.read(&mut at5).expect("read").expect("a record");
    }
    assert_eq!(at5.seq(), 5);
    // Evict up to seq 4: seq 5 is the oldest, and the tail is the marker before it.
    for t in 6..10 {
        j.append(ServerTime(t), &q).expect("append");
    }
    assert_eq!(j.first_seq(), Some(5));
    assert_eq!(j.used_bytes(), 640);
    let r = j
        .read(&mut at5)
        .expect("seq 5 is still there")
        .expect("a record");
    assert_eq!(r.seq, 5);
    let r = j.read(&mut at5).expect("seq 6").expect("a record");
    assert_eq!(r.seq, 6);
    // One more append evicts seq 5 and with it the marker.
    j.append(ServerTime(10), &q).expect("append");
    assert_eq!(j.first_seq(), Some(6));
    assert_eq!(j.read(&mut j.tail()).expect("read").map(|r| r.seq), Some(6));
    let (j, rec) = Journal::open(j.into_inner()).expect("reopen");
    assert_eq!(
        (rec.first_seq, rec.next_seq, rec.discarded),
        (Some(6), 11, None)
    );
    assert_eq!(all(&j).len(), 5);
}

#[test]
fn a_crash_right_after_the_header_tail_moved_recovers_what_is_left() {
    // The barrier runs after the header's tail moved and before any overwrite: a snapshot of
    // the buffer there is what a crash at that point leaves.
    let mut j = ring(2048);
    j.set_reserve(300);
    let mut checked = 0;
    for s in 0..200u64 {
        let before = all(&j);
        let mut snapshot = None;
        j.append_with(ServerTime(s as u32), &[s as u8; 50], |b| {
            snapshot = Some(b.clone());
            Ok(())
        })
        .expect("append");
        let Some(snap) = snapshot else { continue };
        let (r, rec) = Journal::open(snap).expect("the snapshot opens");
        assert_eq!(rec.discarded, None);
        let got = all(&r);
        // A suffix of what was there before the append, ending with the newest.
        assert!(!got.is_empty());
        assert_eq!(got[..], before[before.len() - got.len()..]);
        checked += 1;
    }
    assert!(checked > 5, "the barrier ran {checked} times");
}
