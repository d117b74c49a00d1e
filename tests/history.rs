//! The store and its journal together (architecture, core idea 2): every change that alters a
//! binding is one record; the mirror is rebuilt from the journal at start, and a source
//! re-sending what the journal already holds writes nothing new.

use std::collections::BTreeMap;

use lqd::codec::ServerTime;
use lqd::feed::{DemoConfig, DemoSource};
use lqd::store::journal::Journal;
use std::net::Ipv6Addr;

use lqd::store::{
    Binding, BindingKey, Change, History, Lease, LeaseKind, LeaseState, Store, record,
};

type Hist = History<Journal<Vec<u8>>>;

fn snapshot(store: &Store) -> BTreeMap<BindingKey, Binding> {
    store
        .iter()
        .map(|(_, b)| {
            let b = b.to_binding();
            (b.key.clone(), b)
        })
        .collect()
}

/// The records of relay templates' definitions in `j`.
fn definitions(j: &Journal<Vec<u8>>) -> u64 {
    let mut cursor = j.tail();
    let mut n = 0;
    while let Ok(Some(r)) = j.read(&mut cursor) {
        n += u64::from(record::definition_of(r.payload).is_some());
    }
    n
}

/// What a lease store holds for these bindings: one change per lease, as a source re-sends it.
fn resend(store: &Store) -> Vec<Change> {
    store
        .iter()
        .flat_map(|(_, b)| {
            let b = b.to_binding();
            b.leases
                .iter()
                .map(|l| Change {
                    client_id: b.key.client_id.clone(),
                    link: b.key.link,
                    lease: *l,
                    relay: Some(b.relay.clone()),
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_mirror_is_rebuilt_from_the_journal_and_a_resend_is_not_a_change() {
    let mut h: Hist = History::open(Store::new(), Journal::format(vec![0; 16 << 20]).unwrap()).0;
    let mut demo = DemoSource::new(DemoConfig {
        clients: 2_000,
        links: 4,
        seed: 3,
        ..DemoConfig::default()
    });
    let t0 = 800_000_000u32;
    let mut written = 0usize;
    for k in 0..20_000u32 {
        let now = ServerTime(t0 + k / 10);
        written += h.apply(&demo.next_change(now), now).unwrap();
    }
    // Besides them, the definitions of the relay templates the records name (D42).
    let definitions = definitions(h.journal());
    assert!(definitions > 0);
    assert_eq!(
        h.journal().len(),
        written as u64 + definitions,
        "one record per altered binding"
    );
    let before = snapshot(h.store());
    let records = h.journal().len();

    let (_, journal) = h.into_parts();
    let (journal, recovered) = Journal::open(journal.into_inner()).unwrap();
    assert_eq!(recovered.records, records);
    let (mut h, restored) = History::open(Store::new(), journal);
    assert_eq!(restored.records, records);
    assert_eq!(restored.unreadable, 0);
    assert_eq!(snapshot(h.store()), before, "the mirror as it was");

    let now = ServerTime(t0 + 3000);
    for c in resend(h.store()) {
        assert_eq!(h.apply(&c, now).unwrap(), 0, "unchanged: {c:?}");
    }
    assert_eq!(h.journal().len(), records);
    // A real change after the restart is journaled as usual.
    let mut c = resend(h.store()).remove(0);
    c.lease.state = LeaseState::Released;
    assert_eq!(h.apply(&c, now).unwrap(), 1);
    assert_eq!(h.journal().len(), records + 1);
}

#[test]
fn an_address_moving_to_another_client_journals_both_bindings() {
    let mut h: Hist = History::open(Store::new(), Journal::format(vec![0; 1 << 20]).unwrap()).0;
    let mut demo = DemoSource::new(DemoConfig {
        clients: 10,
        links: 1,
        ..DemoConfig::default()
    });
    let now = ServerTime(800_000_000);
    let first = demo.next_change(now);
    h.apply(&first, now).unwrap();
    let mut thief = first.clone();
    thief.client_id = vec![0, 3, 0, 1, 1, 2, 3, 4, 5, 6].into();
    let n = h.journal().len();
    assert_eq!(h.apply(&thief, now).unwrap(), 2, "the loser and the winner");
    assert_eq!(h.journal().len(), n + 2);
    // The loser's record is its final state: it is the newest record of an ended binding.
    let mut cursor = h.journal().tail();
    let mut latest = Vec::new();
    while let Ok(Some(r)) = h.journal().read(&mut cursor) {
        if record::definition_of(r.payload).is_none() {
            latest.push(h.is_latest(r.seq, r.payload));
        }
    }
    assert_eq!(latest, vec![false, true, true]);
}

#[test]
fn relay_templates_outlive_the_ring_wrapping_many_times() {
    // A small ring that the churn of relayed clients overwrites many times: every record left
    // in it still finds its template's definition, at start and through the history (D42).
    let mut h: Hist = History::open(Store::new(), Journal::format(vec![0; 96 << 10]).unwrap()).0;
    let mut demo = DemoSource::new(DemoConfig {
        clients: 60,
        links: 6,
        seed: 5,
        relay_share: 1.0,
        two_hop_share: 0.5,
        pd_share: 0.5,
        ..DemoConfig::default()
    });
    let t0 = 800_000_000u32;
    for k in 0..30_000u32 {
        let now = ServerTime(t0 + k / 10);
        h.apply(&demo.next_change(now), now).unwrap();
    }
    assert!(h.journal().first_seq().unwrap() > 1_000, "the ring wrapped");
    let mut cursor = h.journal().tail();
    while let Ok(Some(r)) = h.journal().read(&mut cursor) {
        if record::definition_of(r.payload).is_none() {
            h.read_payload(r.payload).expect("every record reads");
        }
    }
    let before = snapshot(h.store());
    let (_, journal) = h.into_parts();
    let (journal, _) = Journal::open(journal.into_inner()).unwrap();
    let (h, restored) = History::open(Store::new(), journal);
    assert_eq!(restored.unreadable, 0);
    assert_eq!(snapshot(h.store()), before, "the mirror as it was");
}

#[test]
fn a_full_replay_keeps_the_templates_of_the_records_it_read_defined() {
    // Relayed records, a restart that replays them all, then changes with no relayed message
    // until the ring has dropped the older half of those records and their templates' first
    // definitions: the records left still find their templates' definitions at the next
    // start. The replay must note each record's template as used (D42), or the definitions
    // are not written again and those records cannot be read.
    let mut h: Hist = History::open(Store::new(), Journal::format(vec![0; 96 << 10]).unwrap()).0;
    let mut relayed = DemoSource::new(DemoConfig {
        clients: 300,
        links: 6,
        seed: 5,
        relay_share: 1.0,
        two_hop_share: 0.5,
        ..DemoConfig::default()
    });
    let t0 = 800_000_000u32;
    for k in 0..300u32 {
        let now = ServerTime(t0 + k);
        h.apply(&relayed.next_change(now), now).unwrap();
    }
    let (p0, p1) = (h.journal().first_seq().unwrap(), h.journal().next_seq());
    assert_eq!(p0, 0, "the relayed records all fit");
    assert!(definitions(h.journal()) >= 6, "templates were defined");
    let (_, journal) = h.into_parts();
    let (journal, _) = Journal::open(journal.into_inner()).unwrap();
    let (mut h, restored) = History::open(Store::new(), journal);
    assert_eq!(restored.unreadable, 0);

    // Clients of their own, directly on a link: their records name no template.
    let mut k = 0u32;
    while h.journal().first_seq().unwrap() < p0 + (p1 - p0) / 2 {
        let now = ServerTime(t0 + 1_000 + k / 10);
        let lease = Lease {
            kind: LeaseKind::Address,
            address: Ipv6Addr::from(0x2001_0db8_0fff_u128 << 80 | u128::from(k)),
            prefix_len: 128,
            iaid: 1,
            preferred_lifetime: 3600,
            valid_lifetime: 7200,
            cltt: now,
            state: LeaseState::Active,
        };
        let change = Change {
            client_id: [&[0, 3, 0, 1, 0xee][..], &k.to_be_bytes()].concat().into(),
            link: Ipv6Addr::new(0x2001, 0xdb8, 0xfff, 0, 0, 0, 0, 1),
            lease,
            relay: None,
        };
        h.apply(&change, now).unwrap();
        k += 1;
    }
    let (_, journal) = h.into_parts();
    let (journal, _) = Journal::open(journal.into_inner()).unwrap();
    let (_, restored) = History::open(Store::new(), journal);
    assert_eq!(
        restored.unreadable, 0,
        "records whose template was not defined again"
    );
}
