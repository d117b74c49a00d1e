//! Named writers' marks in the journal (issue 20): a numbered line's mark is durable in the
//! record of the change it made, a line that made none is carried by the next record (or one of
//! marks alone), a line at or below the mark is not applied again, marks come back at start,
//! a quiet writer keeps its mark while the ring turns, and a journal that lost live bindings
//! voids every mark, for good.

use std::net::Ipv6Addr;

use lqd::codec::ServerTime;
use lqd::store::journal::{HEADER_LEN, Journal};
use lqd::store::record::{self, RecordError, Trailer};
use lqd::store::{Change, History, Lease, LeaseKind, LeaseState, Restored, Store};

type Hist = History<Journal<Vec<u8>>>;

const T0: u32 = 800_000_000;
const LINK: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 1);

fn history(ring: usize) -> Hist {
    History::open(
        Store::new(),
        Journal::format(vec![0; HEADER_LEN + ring]).unwrap(),
    )
    .0
}

/// lqd restarted on the same journal.
fn reopen(h: Hist) -> (Hist, Restored) {
    let (_, journal) = h.into_parts();
    let (journal, _) = Journal::open(journal.into_inner()).unwrap();
    History::open(Store::new(), journal)
}

/// Client `n` holds address `n` on `LINK`, last seen at `cltt`, or ended.
fn lease(n: u16, cltt: u32, state: LeaseState) -> Change {
    Change {
        client_id: vec![0, 3, 0, 1, 2, 0, 0, 0, (n >> 8) as u8, n as u8].into(),
        link: LINK,
        lease: Lease {
            kind: LeaseKind::Address,
            address: Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, n),
            prefix_len: 128,
            iaid: 1,
            preferred_lifetime: 3600,
            valid_lifetime: 7200,
            cltt: ServerTime(cltt),
            state,
        },
        relay: None,
    }
}

fn active(n: u16, cltt: u32) -> Change {
    lease(n, cltt, LeaseState::Active)
}

/// Every record: its sequence number, whether it holds a binding, and its trailer.
fn records(h: &Hist) -> Vec<(u64, bool, Option<Trailer>)> {
    let mut cursor = h.journal().tail();
    let mut out = Vec::new();
    while let Ok(Some(r)) = h.journal().read(&mut cursor) {
        let p = record::read(r.payload).unwrap();
        out.push((r.seq, p.binding.is_some(), p.trailer));
    }
    out
}

fn marks_of(t: &Option<Trailer>) -> Vec<(String, u64)> {
    t.as_ref()
        .map(|t| t.marks.iter().map(|(w, s)| (w.to_string(), *s)).collect())
        .unwrap_or_default()
}

#[test]
fn a_numbered_change_carries_its_mark_and_the_mark_comes_back_at_start() {
    let mut h = history(1 << 20);
    let now = ServerTime(T0);
    for seq in 1..=10u16 {
        let written = h
            .apply_numbered(&active(seq, T0), now, "kea", u64::from(seq))
            .unwrap();
        assert_eq!(written, Some(1));
        // Journaled with the change: nothing pending, the mark is what lqd may acknowledge.
        assert_eq!(h.mark("kea"), Some(u64::from(seq)));
        assert!(!h.marks_pending());
    }
    let recs = records(&h);
    assert_eq!(recs.len(), 10);
    for (i, (_, binding, trailer)) in recs.iter().enumerate() {
        assert!(binding);
        assert_eq!(marks_of(trailer), vec![("kea".into(), i as u64 + 1)]);
        assert_eq!(trailer.as_ref().unwrap().bindings, i as u32 + 1);
    }
    let mut told = Vec::new();
    h.take_recorded(|w, s| told.push((w.to_owned(), s)));
    assert_eq!(told, vec![("kea".to_owned(), 10)]);

    let (h, restored) = reopen(h);
    assert_eq!((restored.marks, restored.marks_void), (1, false));
    assert_eq!(h.mark("kea"), Some(10));
    assert_eq!(h.marks().collect::<Vec<_>>(), vec![("kea", 10)]);
    assert_eq!(h.mark("other"), None);
}

#[test]
fn a_line_at_or_below_the_mark_is_not_applied_again() {
    let mut h = history(1 << 20);
    let now = ServerTime(T0);
    h.apply_numbered(&active(1, T0), now, "kea", 1).unwrap();
    h.apply_numbered(&active(1, T0 + 60), now, "kea", 2)
        .unwrap();
    let n = h.journal().len();
    // A writer resuming from an older place re-sends line 1: the binding does not go back.
    assert_eq!(
        h.apply_numbered(&active(1, T0), now, "kea", 1).unwrap(),
        None
    );
    assert_eq!(
        h.apply_numbered(&active(1, T0), now, "kea", 2).unwrap(),
        None
    );
    assert_eq!(h.journal().len(), n);
    let (_, b) = h.store().iter().next().unwrap();
    assert_eq!(b.leases()[0].cltt, ServerTime(T0 + 60));
    // Marks are per writer: another writer's line 1 is its own.
    assert_eq!(
        h.apply_numbered(&active(2, T0), now, "dhcp-2", 1).unwrap(),
        Some(1)
    );
    // And after a restart too.
    let (mut h, _) = reopen(h);
    assert_eq!(
        h.apply_numbered(&active(1, T0), now, "kea", 2).unwrap(),
        None
    );
    assert_eq!(
        h.apply_numbered(&active(1, T0 + 120), now, "kea", 3)
            .unwrap(),
        Some(1)
    );
}

#[test]
fn a_line_that_changes_nothing_is_acknowledged_once_a_record_carries_it() {
    let mut h = history(1 << 20);
    let now = ServerTime(T0);
    h.apply_numbered(&active(1, T0), now, "kea", 1).unwrap();
    // An identical re-send: no record, the mark pending, not yet what lqd acknowledges.
    assert_eq!(
        h.apply_numbered(&active(1, T0), now, "kea", 2).unwrap(),
        Some(0)
    );
    assert!(h.marks_pending());
    assert_eq!(h.mark("kea"), Some(1));
    // But it is taken: a re-send of it is not applied again.
    assert_eq!(
        h.apply_numbered(&active(1, T0), now, "kea", 2).unwrap(),
        None
    );

    // Any record carries it: here an unnumbered change of another source.
    h.apply(&active(7, T0), now).unwrap();
    assert!(!h.marks_pending());
    assert_eq!(h.mark("kea"), Some(2));
    let last = records(&h).pop().unwrap();
    assert!(last.1);
    assert_eq!(marks_of(&last.2), vec![("kea".into(), 2)]);

    // With no record coming, a record of marks alone; Active readers skip it.
    h.apply_numbered(&active(1, T0), now, "kea", 3).unwrap();
    assert!(h.marks_pending());
    assert!(h.flush_marks(now).unwrap());
    assert!(!h.flush_marks(now).unwrap(), "nothing left to write");
    assert_eq!(h.mark("kea"), Some(3));
    let mut cursor = h.journal().cursor_at(h.journal().next_seq() - 1).unwrap();
    let r = h.journal().read(&mut cursor).unwrap().unwrap();
    assert_eq!(record::decode(r.payload), Err(RecordError::NoBinding));
    assert!(!h.is_latest(r.seq, r.payload));
    assert_eq!(h.binding_of(r.payload), None);

    let (h, restored) = reopen(h);
    assert_eq!(
        restored.unreadable, 0,
        "a record of marks is not unreadable"
    );
    assert_eq!(restored.bindings, 2);
    assert_eq!(h.mark("kea"), Some(3));
}

#[test]
fn a_rejected_line_moves_the_mark() {
    let mut h = history(1 << 20);
    let now = ServerTime(T0);
    assert!(h.reject_numbered("kea", 5));
    assert!(!h.reject_numbered("kea", 5));
    assert!(!h.reject_numbered("kea", 4));
    assert_eq!(
        h.apply_numbered(&active(1, T0), now, "kea", 5).unwrap(),
        None
    );
    assert!(h.flush_marks(now).unwrap());
    assert_eq!(h.mark("kea"), Some(5));
}

#[test]
fn pending_marks_of_several_writers_ride_the_next_record_even_an_expiry() {
    let mut h = history(1 << 20);
    let now = ServerTime(T0);
    h.apply(&active(1, T0), now).unwrap();
    // Two writers' lines that change nothing: the end of leases lqd never had.
    h.apply_numbered(&lease(50, T0, LeaseState::Released), now, "a", 7)
        .unwrap();
    h.apply_numbered(&lease(51, T0, LeaseState::Released), now, "b", 9)
        .unwrap();
    assert_eq!((h.mark("a"), h.mark("b")), (None, None));
    // Client 1's lease runs out (D6): its record carries both marks.
    assert_eq!(h.expire(ServerTime(T0 + 7200)).unwrap(), 1);
    assert_eq!((h.mark("a"), h.mark("b")), (Some(7), Some(9)));
    let last = records(&h).pop().unwrap();
    let mut marks = marks_of(&last.2);
    marks.sort();
    assert_eq!(marks, vec![("a".into(), 7), ("b".into(), 9)]);
    assert_eq!(last.2.unwrap().bindings, 0);
}

#[test]
fn a_change_of_two_records_carries_its_mark_in_the_last() {
    let mut h = history(1 << 20);
    let now = ServerTime(T0);
    h.apply(&active(1, T0), now).unwrap();
    // Client 2 takes client 1's address: client 1's record first, then client 2's. A crash
    // between them must not leave the line acknowledged with only half of it journaled.
    let mut thief = active(1, T0);
    thief.client_id = active(2, T0).client_id;
    assert_eq!(h.apply_numbered(&thief, now, "kea", 1).unwrap(), Some(2));
    let recs = records(&h);
    assert_eq!(recs.len(), 3);
    assert_eq!(marks_of(&recs[1].2), vec![]);
    assert_eq!(marks_of(&recs[2].2), vec![("kea".into(), 1)]);
}

#[test]
fn a_quiet_writers_mark_outlives_many_laps_of_the_ring() {
    let mut h = history(16 << 10);
    let now = ServerTime(T0);
    // The quiet writer's only line changed nothing; a record of marks carries it.
    h.apply_numbered(&lease(99, T0, LeaseState::Released), now, "quiet", 41)
        .unwrap();
    h.flush_marks(now).unwrap();
    let first = h.journal().next_seq();
    // Another source churns a few bindings: the ring turns many times over.
    let mut k = 0u32;
    while h.journal().first_seq().unwrap() < first + 20 * 150 {
        h.apply(&active((k % 5) as u16, T0 + k), now).unwrap();
        k += 1;
    }
    assert!(!h.marks_pending(), "carried again by the churn's records");
    assert_eq!(h.mark("quiet"), Some(41));
    let (h, restored) = reopen(h);
    assert!(!restored.marks_void);
    assert_eq!(h.mark("quiet"), Some(41));
    // Carried again about once per lap, not with every record.
    let carrying = records(&h)
        .iter()
        .filter(|(_, _, t)| !marks_of(t).is_empty())
        .count();
    assert!((1..=3).contains(&carrying), "{carrying} records carry it");
}

#[test]
fn a_journal_that_lost_live_bindings_voids_every_mark_for_good() {
    let mut h = history(16 << 10);
    let now = ServerTime(T0);
    // Client 1 from an unnumbered source, a few other changes, then the writer's line 100.
    let gone = h.journal().next_seq();
    h.apply(&active(1, T0), now).unwrap();
    let mut k = 0u32;
    let mut churn = |h: &mut Hist| {
        h.apply(&active(10 + (k % 3) as u16, T0 + k), now).unwrap();
        k += 1;
    };
    for _ in 0..10 {
        churn(&mut h);
    }
    let marked = h.journal().next_seq();
    h.apply_numbered(&active(2, T0), now, "kea", 100).unwrap();
    // Churn until client 1's only record leaves the ring, the writer's still in it.
    while h.journal().first_seq() <= Some(gone) {
        churn(&mut h);
    }
    assert!(h.journal().first_seq() < Some(marked));
    let (mut h, restored) = reopen(h);
    assert!(restored.marks_void, "client 1 is gone: lqd cannot vouch");
    assert_eq!((restored.marks, h.mark("kea")), (0, None));
    // Told it has nothing, the writer re-sends its state, numbering from 1 again.
    assert_eq!(
        h.apply_numbered(&active(2, T0), now, "kea", 1).unwrap(),
        Some(0)
    );
    h.flush_marks(now).unwrap();
    assert_eq!(h.mark("kea"), Some(1));
    let last = records(&h).pop().unwrap();
    assert!(
        last.2.unwrap().reset,
        "the first record after the void says so"
    );
    // At the next start the void marks stay void: line 1 is the writer's mark, not 100.
    let (h, restored) = reopen(h);
    assert!(!restored.marks_void);
    assert_eq!(h.mark("kea"), Some(1));
}

#[test]
fn a_journal_of_version_1_records_opens_as_before() {
    let mut j = Journal::format(vec![0; HEADER_LEN + (1 << 20)]).unwrap();
    let mut h = history(1 << 20);
    let now = ServerTime(T0);
    for n in 1..=3 {
        h.apply(&active(n, T0), now).unwrap();
    }
    // The same records as an older lqd wrote them: version 1, no flags, no trailer.
    let mut cursor = h.journal().tail();
    while let Ok(Some(r)) = h.journal().read(&mut cursor) {
        assert_eq!(r.payload[0], 3);
        let b = h.decode(r.payload).unwrap();
        let mut v2 = Vec::new();
        record::encode_v2(Some(&b), 0, false, std::iter::empty(), &mut v2).unwrap();
        let mut v1 = vec![1];
        v1.extend_from_slice(&v2[2..v2.len() - 5]);
        j.append(r.time, &v1).unwrap();
    }
    let (old, restored) = History::open(Store::new(), j);
    assert_eq!((restored.records, restored.unreadable), (3, 0));
    assert_eq!((restored.bindings, restored.marks), (3, 0));
    assert!(!restored.marks_void);
    assert_eq!(old.store().len(), 3);
}
