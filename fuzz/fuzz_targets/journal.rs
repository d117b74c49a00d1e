//! Fuzz target: journal recovery from any file contents.
//!
//! The input is a journal file, or, most of the time, a header slot and a ring from which a
//! file with a valid header is made (see `lqd_fuzz::fixture::journal_file`), so that recovery
//! walks the fuzzer's ring rather than stopping at a header CRC.
//!
//! What must hold: `inspect` and `Journal::open` never panic and agree (the same holes); every
//! record the opened journal reads back is one whose CRC matched in the file (the same time
//! and payload at an aligned ring offset; a repair renumbers) or a hole's marker, with consecutive sequence numbers and times that never go back; the records
//! are intact in the journal's own buffer; a clean close reopens to the same records; and after
//! appends, the journal reads its surviving old records then the new ones, and reopens to them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lqd::codec::ServerTime;
use lqd::store::journal::{HEADER_LEN, Hole, Journal, JournalError, SEQ_LIMIT, inspect};

type Rec = (u64, ServerTime, Vec<u8>);

/// Every record from the oldest on.
fn contents(j: &Journal<Vec<u8>>) -> Vec<Rec> {
    let mut c = j.tail();
    let mut out = Vec::new();
    while let Some(r) = j.read(&mut c).expect("the tail is never overrun") {
        out.push((r.seq, r.time, r.payload.to_vec()));
        assert!(out.len() as u64 <= j.len(), "more records than len()");
    }
    out
}

/// True when the ring of `file` holds `rec` at an aligned offset, its CRC matching; `seq` is
/// checked when given.
fn intact_in(file: &[u8], time: ServerTime, payload: &[u8], seq: Option<u64>) -> bool {
    let Some(ring) = file.get(HEADER_LEN..) else {
        return false;
    };
    let Ok(len) = u32::try_from(payload.len()) else {
        return false;
    };
    (0..ring.len()).step_by(8).any(|o| {
        let Some(r) = ring.get(o..o + 20 + payload.len()) else {
            return false;
        };
        r[0..4] == len.to_le_bytes()
            && r[16..20] == time.0.to_le_bytes()
            && seq.is_none_or(|s| r[8..16] == s.to_le_bytes())
            && &r[20..] == payload
            && r[4..8] == crc32c::crc32c(&r[8..]).to_le_bytes()
    })
}

/// Checks the order of `records` and that each is intact in `buf`.
fn check_records(records: &[Rec], buf: &[u8]) {
    for w in records.windows(2) {
        assert_eq!(w[1].0, w[0].0 + 1, "sequence numbers are not consecutive");
        assert!(w[1].1 >= w[0].1, "a record goes back in time");
    }
    for (seq, time, payload) in records {
        assert!(
            intact_in(buf, *time, payload, Some(*seq)),
            "record {seq} is not intact in the journal's buffer"
        );
    }
}

/// Closes `j` cleanly and opens it again: the same records, nothing lost or repaired.
fn reopen(j: Journal<Vec<u8>>, records: &[Rec]) -> Journal<Vec<u8>> {
    let buf = j.into_inner();
    check_records(records, &buf);
    let (j, rec) = Journal::open(buf).expect("a cleanly closed journal opens");
    assert!(rec.holes.is_empty(), "holes after a clean close: {rec:?}");
    assert_eq!(rec.discarded, None, "records discarded after a clean close");
    assert_eq!(contents(&j), records, "a clean close changed the records");
    j
}

fuzz_target!(|data: &[u8]| {
    let file = lqd_fuzz::fixture::journal_file(data);
    let seen = inspect(&file);
    let opened = Journal::open(file.clone());
    let (j, rec) = match opened {
        Ok(x) => x,
        Err(e) => {
            let _ = e.to_string();
            assert!(seen.is_err(), "inspect accepts what open refuses: {e}");
            return;
        }
    };
    let seen = seen.expect("inspect refuses what open accepts");
    assert_eq!(
        seen.holes, rec.holes,
        "inspect and open see different holes"
    );

    let records = contents(&j);
    assert_eq!(records.len() as u64, rec.records, "Recovered.records");
    assert_eq!(
        records.first().map(|r| r.0),
        rec.first_seq,
        "Recovered.first_seq"
    );
    assert_eq!(j.next_seq(), rec.next_seq, "Recovered.next_seq");
    if let Some(last) = records.last() {
        assert_eq!(
            last.0 + 1,
            j.next_seq(),
            "next_seq follows the newest record"
        );
    }
    // A repair (a damaged ring) renumbers the records, so only their time and payload are
    // compared with the file's.
    let rebuilt = !rec.holes.is_empty();
    let mut markers = 0;
    for (seq, time, payload) in &records {
        if Hole::from_marker(payload).is_some() && rebuilt {
            markers += 1;
            continue;
        }
        assert!(
            intact_in(&file, *time, payload, None),
            "record {seq} came back but is not a CRC-valid record of the file"
        );
    }
    if rebuilt {
        assert!(markers <= rec.holes.len(), "more markers than holes");
    } else {
        assert_eq!(
            seen.records, rec.records,
            "inspect and open count different records"
        );
    }
    let _ = j.seek_time(ServerTime(12345));
    let _ = j.seek_time(records.last().map_or(ServerTime(0), |r| r.1));

    // A clean close and reopen, then appends.
    let mut j = reopen(j, &records);
    let max = j.max_payload();
    // What the journal should hold: the old records then the appended ones, less the oldest
    // the ring evicted (the appended records' times may be raised to keep time from going back).
    let mut expected: Vec<(u64, Option<ServerTime>, Vec<u8>)> = records
        .iter()
        .map(|(seq, time, payload)| (*seq, Some(*time), payload.clone()))
        .collect();
    let n = data.len() % 23 + 1;
    for i in 0..n {
        let len = (i * 37 + data.len()) % (max + 1);
        let payload: Vec<u8> = (0..len).map(|k| (k as u8) ^ (i as u8)).collect();
        let seq = match j.append(ServerTime(1 + i as u32), &payload) {
            Ok(seq) => seq,
            Err(JournalError::SeqExhausted) => {
                assert!(
                    j.next_seq() >= SEQ_LIMIT,
                    "SeqExhausted at seq {}",
                    j.next_seq()
                );
                break;
            }
            Err(e) => panic!("an append that fits failed: {e}"),
        };
        expected.push((seq, None, payload));
    }
    let after = contents(&j);
    assert!(
        after.len() <= expected.len(),
        "records appeared from nowhere"
    );
    let kept = &expected[expected.len() - after.len()..];
    for (got, want) in after.iter().zip(kept) {
        assert_eq!(got.0, want.0, "not the newest records after appends");
        assert_eq!(got.2, want.2, "record {} changed", got.0);
        if let Some(t) = want.1 {
            assert_eq!(got.1, t, "record {} changed its time", got.0);
        }
    }
    assert_eq!(
        after.last().map(|r| r.0),
        expected.last().map(|r| r.0),
        "the last append is not read back"
    );
    let j = reopen(j, &after);
    let _ = j.seek_time(ServerTime(2));
});
