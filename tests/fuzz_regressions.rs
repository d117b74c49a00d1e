//! Regression tests for what the cargo-fuzz targets in `fuzz/` found (issue 13, point 4): each
//! test is the smallest input that shows the bug, written out inline, and fails until it is
//! fixed. The targets and how to replay their findings are in `fuzz/README.md`.
//!
//! A finding not fixed yet gets its test `#[ignore]`d (run them with `cargo test --test
//! fuzz_regressions -- --include-ignored`) until the fix drops the `ignore`; none is open now.

use lqd::codec::ServerTime;
use lqd::store::journal::{HEADER_LEN, Journal, inspect};

/// Every record from the oldest on: (seq, time, payload).
fn contents(j: &Journal<Vec<u8>>) -> Vec<(u64, ServerTime, Vec<u8>)> {
    let mut c = j.tail();
    let mut out = Vec::new();
    while let Some(r) = j.read(&mut c).expect("the tail is never overrun") {
        out.push((r.seq, r.time, r.payload.to_vec()));
    }
    out
}

/// A record as the journal lays it out (module documentation of `store::journal`): length,
/// CRC32C of seq, time and payload, seq, time, payload, zero padding to a multiple of 8.
fn record_image(seq: u64, time: ServerTime, payload: &[u8]) -> Vec<u8> {
    let mut covered = seq.to_le_bytes().to_vec();
    covered.extend_from_slice(&time.0.to_le_bytes());
    covered.extend_from_slice(payload);
    let mut r = u32::try_from(payload.len()).unwrap().to_le_bytes().to_vec();
    r.extend_from_slice(&crc32c::crc32c(&covered).to_le_bytes());
    r.extend_from_slice(&covered);
    r.resize(r.len().next_multiple_of(8), 0);
    r
}

/// Writes header slot `i` (0 or 1) of `file` with a valid CRC: generation, tail offset and
/// seq, head offset and seq, flags, evicted time (the slot table of `store::journal`).
fn write_slot(file: &mut [u8], i: usize, fields: [u64; 5], flags: u32, evicted: u32) {
    let at = 64 + 64 * i;
    for (k, v) in fields.iter().enumerate() {
        file[at + 8 * k..at + 8 * k + 8].copy_from_slice(&v.to_le_bytes());
    }
    file[at + 40..at + 44].copy_from_slice(&flags.to_le_bytes());
    file[at + 44..at + 48].copy_from_slice(&evicted.to_le_bytes());
    file[at + 48..at + 60].fill(0);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&file[..24]), &file[at..at + 60]);
    file[at + 60..at + 64].copy_from_slice(&crc.to_le_bytes());
}

/// Found by the `journal` target: a header (valid CRC) whose sequence numbers are at the end
/// of their range opens, and then every append returns `Ok` with the same seq (`u64::MAX`,
/// `saturating_add`) and no record ever reads back: changes are silently lost. Fuzz input
/// (structured, see `fuzz/src/fixture.rs`): a slot with tail seq and head seq `u64::MAX` over
/// an empty ring. Either `open` refuses such a header or an append fails or reads back.
#[test]
fn a_header_at_the_end_of_the_seq_range_does_not_swallow_appends() {
    let mut file = Journal::format(vec![0; HEADER_LEN + 1024])
        .unwrap()
        .into_inner();
    file[64..192].fill(0);
    write_slot(
        &mut file,
        1,
        [1, 32, u64::MAX, 32, u64::MAX],
        1,
        218_959_117,
    );
    let Ok((mut j, _)) = Journal::open(file) else {
        return; // refusing the header is a fix too
    };
    let mut appended = Vec::new();
    for i in 0..3u8 {
        match j.append(ServerTime(218_959_118), &[i; 40]) {
            Ok(seq) => appended.push((seq, vec![i; 40])),
            Err(_) => return, // so is refusing the append
        }
    }
    let seqs: Vec<u64> = appended.iter().map(|a| a.0).collect();
    assert!(
        seqs.windows(2).all(|w| w[0].checked_add(1) == Some(w[1])),
        "appends returned the sequence numbers {seqs:?}"
    );
    let read: Vec<(u64, Vec<u8>)> = contents(&j).into_iter().map(|r| (r.0, r.2)).collect();
    assert_eq!(read, appended, "the appended records do not read back");
}

/// Found by the `journal` target (the same cause): a record with seq `u64::MAX` at the header's
/// tail is an intact record for `inspect` (`lqd journal check`), but `open` recovers nothing:
/// the record after it would need seq `u64::MAX + 1`, and with `saturating_add` the journal's
/// next seq equals its tail's, so it holds no records.
#[test]
fn a_record_with_the_last_seq_is_recovered_as_inspect_counts_it() {
    let mut file = Journal::format(vec![0; HEADER_LEN + 576])
        .unwrap()
        .into_inner();
    let r = record_image(u64::MAX, ServerTime(1000), b"the last seq");
    file[HEADER_LEN..HEADER_LEN + r.len()].copy_from_slice(&r);
    file[64..192].fill(0);
    write_slot(&mut file, 1, [1, 0, u64::MAX, 0, u64::MAX], 0, 0);
    // Both may refuse the header (the fix: sequence numbers stop at `SEQ_LIMIT`), or both read
    // it, and then they count the same records.
    match (inspect(&file), Journal::open(file)) {
        (Err(_), Err(_)) => {}
        (Ok(seen), Ok((_, rec))) => assert_eq!(
            rec.records, seen.records,
            "open and inspect disagree: {rec:?} / {seen:?}"
        ),
        (seen, opened) => panic!(
            "open and inspect disagree: {seen:?} / {:?}",
            opened.map(|o| o.1)
        ),
    }
}

/// Found by the `journal` target: an append does not clear what is left of the record it
/// overwrote past its own end, and recovery reads at the head whatever is there. Here a payload
/// (an evicted record's, that is: a binding's DUIDs and relay messages, which clients and relays
/// choose) holds the image of a record with the next seq and a valid CRC, and the head lands on
/// it after a wrap: after a clean close and reopen, that record, never appended, comes back.
#[test]
fn a_payload_left_past_the_head_is_not_recovered_as_a_record() {
    let t = ServerTime(1000);
    let mut j = Journal::format(vec![0; HEADER_LEN + 1024]).unwrap();
    // Four records of 256 octets fill the 1024-octet ring; the first one's payload holds, at
    // ring offset 24, the image of record 5.
    let phantom = record_image(5, t, b"not appended");
    let mut first = vec![0u8; 236];
    first[4..4 + phantom.len()].copy_from_slice(&phantom);
    j.append(t, &first).unwrap();
    for i in 1..4u8 {
        j.append(t, &[i; 236]).unwrap();
    }
    // Record 4 (24 octets) evicts record 0 and goes to offset 0: the head is now 24.
    assert_eq!(j.append(t, &[4; 4]).unwrap(), 4);
    let before = contents(&j);
    assert_eq!(before.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3, 4]);

    let (j, rec) = Journal::open(j.into_inner()).unwrap();
    let after = contents(&j);
    assert_eq!(
        after.iter().map(|r| r.0).collect::<Vec<_>>(),
        [1, 2, 3, 4],
        "a clean close and reopen changed the records ({rec:?}); the last one read: {:?}",
        after.last().map(|r| String::from_utf8_lossy(&r.2))
    );
    assert_eq!(after, before);
}

/// Found by the `journal` target (the same cause as the previous test, without a CRC): after
/// appends and a clean close, the leftover of an evicted record's payload at the head, where
/// the next seq happens to be, makes the reopen report a torn record (`Recovered::discarded`,
/// logged at start) although nothing was torn.
#[test]
fn a_clean_close_reports_no_torn_record() {
    let t = ServerTime(1000);
    let mut j = Journal::format(vec![0; HEADER_LEN + 1024]).unwrap();
    // As above, but the leftover at ring offset 24 is a length that does not fit, then a CRC,
    // then seq 5.
    let mut first = vec![0u8; 236];
    first[4..8].copy_from_slice(&0x2726_2524u32.to_le_bytes());
    first[8..12].copy_from_slice(&0x2b2a_2928u32.to_le_bytes());
    first[12..20].copy_from_slice(&5u64.to_le_bytes());
    j.append(t, &first).unwrap();
    for i in 1..4u8 {
        j.append(t, &[i; 236]).unwrap();
    }
    assert_eq!(j.append(t, &[4; 4]).unwrap(), 4);
    let before = contents(&j);

    let (j, rec) = Journal::open(j.into_inner()).unwrap();
    assert_eq!(contents(&j), before);
    assert_eq!(
        rec.discarded, None,
        "a clean close reported as a torn record"
    );
}

/// Found by the `journal` target: when the header's tail is a wrap marker, `open` clears the
/// free part of the ring only from the head to that marker, not the rest of the ring past the
/// marker, which it counts as the oldest record's. Once appends have overwritten the marker, a
/// stale record left there (here with a higher seq: from a lost write, or from what was in the
/// file before) is found by the next recovery after a clean close, which reports a hole, rebuilds
/// the ring with new sequence numbers and serves that record as a change.
#[test]
fn a_stale_record_past_a_wrap_marker_at_the_tail_stays_dead() {
    let t = ServerTime(1000);
    let mut file = Journal::format(vec![0; HEADER_LEN + 1024])
        .unwrap()
        .into_inner();
    let ring = HEADER_LEN;
    // Record 0 at ring offset 0, the wrap marker before it at 512, a stale record 10 at 600.
    let r0 = record_image(0, t, &[0xaa; 20]);
    file[ring..ring + r0.len()].copy_from_slice(&r0);
    file[ring + 512..ring + 516].copy_from_slice(&u32::MAX.to_le_bytes());
    let stale = record_image(10, t, b"stale, never appended");
    file[ring + 600..ring + 600 + stale.len()].copy_from_slice(&stale);
    file[64..192].fill(0);
    write_slot(&mut file, 1, [1, 512, 0, 40, 1], 0, 0);

    let (mut j, rec) = Journal::open(file).unwrap();
    assert!(rec.holes.is_empty() && rec.discarded.is_none(), "{rec:?}");
    assert_eq!(contents(&j).len(), 1, "record 0 only");
    // Records 1 to 8, 64 octets each, from offset 40 to 552: over the marker, short of 600.
    for i in 1..=8u8 {
        assert_eq!(j.append(t, &[i; 44]).unwrap(), u64::from(i));
    }
    let before = contents(&j);

    let (j, rec) = Journal::open(j.into_inner()).unwrap();
    let after = contents(&j);
    assert!(
        rec.holes.is_empty(),
        "a clean close reopened as damaged: {rec:?}; the last record: {:?}",
        after.last().map(|r| String::from_utf8_lossy(&r.2))
    );
    assert_eq!(after, before);
}

/// Found by the `journal` target (a wrap marker at the tail, as above): a record that runs over
/// the wrap marker the header's tail points at ends recovery ("overlaps the oldest"), but
/// `inspect` (`lqd journal check`) counts it as intact, so the check promises a record that
/// lqd then drops.
#[test]
fn inspect_counts_what_open_recovers_when_a_record_overlaps_the_tail_marker() {
    let t = ServerTime(1000);
    let mut file = Journal::format(vec![0; HEADER_LEN + 1024])
        .unwrap()
        .into_inner();
    let ring = HEADER_LEN;
    // Records 0 to 3 from offset 0 to 432; record 4 from 432 to 552, over the wrap marker at
    // 512 (its payload holds the marker's octets); the tail is that marker.
    let mut at = 0;
    for (seq, len) in [(0u64, 76usize), (1, 76), (2, 97), (3, 97)] {
        let r = record_image(seq, t, &vec![seq as u8; len]);
        file[ring + at..ring + at + r.len()].copy_from_slice(&r);
        at += r.len();
    }
    assert_eq!(at, 432);
    let mut last = vec![4u8; 98];
    last[60..64].fill(0xff);
    let r = record_image(4, t, &last);
    file[ring + 432..ring + 432 + r.len()].copy_from_slice(&r);
    assert_eq!(file[ring + 512..ring + 516], [0xff; 4], "the marker at 512");
    file[64..192].fill(0);
    write_slot(&mut file, 1, [1, 512, 0, 552, 5], 0, 0);

    let seen = inspect(&file).unwrap();
    let (_, rec) = Journal::open(file).unwrap();
    assert_eq!(
        seen.records, rec.records,
        "lqd journal check and open disagree: {seen:?} / {rec:?}"
    );
}

/// Found by the `journal` target: the header's two slots are written alternately, each with a
/// generation one more than the last (wrapping at the end of `u64`), and `open` took the slot
/// with the higher generation. Across the wrap, the slot of generation `u64::MAX` won over the
/// newer one of generation 0, so after a clean close the journal reopened from the header that
/// `open` had written before the appends. Here that header's tail is an empty journal's, at ring
/// offset 248: the first append wrapped (a marker at 248, the record at 0), the last one filled
/// the ring over that marker, and the reopen, from the old tail, found no record there, rebuilt
/// the ring and lost the newest record.
#[test]
fn the_newer_header_slot_wins_across_the_generation_wrap() {
    let t = ServerTime(1000);
    let mut file = Journal::format(vec![0; HEADER_LEN + 256])
        .unwrap()
        .into_inner();
    file[64..192].fill(0);
    // An empty journal at offset 248, generation u64::MAX - 1 (slot 0). `open` writes
    // generation u64::MAX (slot 1), the clean close generation 0 (slot 0).
    write_slot(&mut file, 0, [u64::MAX - 1, 248, 0, 248, 0], 0, 0);
    let (mut j, _) = Journal::open(file).unwrap();
    // Four records of 64 octets: a wrap marker at 248, then the whole ring from offset 0.
    for i in 0..4u8 {
        assert_eq!(j.append(t, &[i; 44]).unwrap(), u64::from(i));
    }
    let before = contents(&j);
    assert_eq!(before.len(), 4);

    let (j, rec) = Journal::open(j.into_inner()).unwrap();
    assert_eq!(contents(&j), before, "a clean close lost records: {rec:?}");
}

/// Found by the `config` target: a `log` filter whose span field value is a long pattern of
/// `.` took tracing's regular-expression engine over 5 s to compile in a release build (71 s in
/// the fuzz build), so `lqd --check-config`, a start or a reload stalled on 243 octets of
/// configuration. Field values are now matched as text (`lqd::config::log_filter`); checking the
/// same configuration takes microseconds. The bound is 10 s on its own thread so that a
/// regression fails the test rather than hanging it; without the fix a debug build takes far
/// longer than that.
#[test]
fn a_log_filter_with_a_long_field_pattern_is_checked_at_once() {
    let text = format!(
        "log=\"1<[\\tj={{g=st{}{}{}` d{}ate_dirgggs={{l=0}} U#\u{7784}:\"",
        "F".repeat(38),
        ".".repeat(126),
        "F".repeat(10),
        "F".repeat(25),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = text.clone();
    std::thread::spawn(move || {
        let _ = tx.send(
            lqd::config::Config::from_toml(&worker)
                .map(|_| ())
                .map_err(|e| e.to_string()),
        );
    });
    let result = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("checking {text:?} took over 10 s"));
    let err = result.expect_err("that filter is not valid");
    assert!(err.contains("log filter"), "{err}");

    // A field value in a directive is still accepted, as text.
    lqd::config::log_filter("lqd[conn{peer=a.b}]=debug,info").expect("a span field filter");
}
