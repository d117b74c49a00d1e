//! A damaged journal record costs only itself (issue 20): octets flipped anywhere in the ring,
//! and the bindings lqd rebuilds are those of every intact record; a released lease whose
//! release survived is never served as active; a catch-up from before the damage is told
//! DataMissing; the damaged file is kept aside, and the log says what was lost in one line.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;

use lqd::codec::ServerTime;
use lqd::store::journal::{HEADER_LEN, Hole, Journal};
use lqd::store::{
    Binding, Change, History, Lease, LeaseKind, LeaseState, RelayInfo, Store, record,
};
use proptest::prelude::*;

type Hist = History<Journal<Vec<u8>>>;

const T0: u32 = 800_000_000;

fn change(n: u16, link: u16, prefix: bool, release: bool, t: u32) -> Change {
    let (kind, address, prefix_len) = if prefix {
        (
            LeaseKind::Prefix,
            Ipv6Addr::new(0x3fff, 0, link, n << 4, 0, 0, 0, 0),
            60,
        )
    } else {
        (
            LeaseKind::Address,
            Ipv6Addr::new(0x2001, 0xdb8, 0, link, 0, 0, 1, n),
            128,
        )
    };
    Change {
        client_id: vec![0, 3, 0, 1, 7, (n >> 8) as u8, n as u8].into(),
        link: Ipv6Addr::new(0x2001, 0xdb8, 0, link, 0, 0, 0, 1),
        lease: Lease {
            kind,
            address,
            prefix_len,
            iaid: 1,
            preferred_lifetime: 3600,
            valid_lifetime: 7200,
            cltt: ServerTime(t),
            state: if release {
                LeaseState::Released
            } else {
                LeaseState::Active
            },
        },
        relay: Some(RelayInfo::default()),
    }
}

/// A binding's active leases, by slot.
fn active(b: &Binding) -> Vec<(LeaseKind, Ipv6Addr, u8)> {
    let mut v: Vec<_> = b
        .leases
        .iter()
        .filter(|l| l.state.is_active())
        .map(Lease::slot)
        .collect();
    v.sort();
    v
}

/// Every record of the journal in `buf` with where it starts and the octets its CRC covers.
fn records_with_spans(buf: &[u8]) -> Vec<(Vec<u8>, usize, usize)> {
    let (j, _) = Journal::open(buf.to_vec()).expect("a journal");
    let mut c = j.tail();
    let mut out = Vec::new();
    while let Some(r) = j.read(&mut c).expect("read") {
        let len = u32::try_from(r.payload.len()).expect("small");
        let at = (HEADER_LEN..buf.len() - 20)
            .step_by(8)
            .find(|&o| {
                buf[o..o + 4] == len.to_le_bytes()
                    && buf[o + 8..o + 16] == r.seq.to_le_bytes()
                    && buf.get(o + 20..o + 20 + r.payload.len()) == Some(r.payload)
            })
            .expect("in the ring");
        out.push((r.payload.to_vec(), at, at + 20 + r.payload.len()));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    /// Flipped octets anywhere in a journal with churn and releases: the history always
    /// opens, and its bindings are exactly those the intact records say, each binding at its
    /// newest intact record.
    #[test]
    fn lqd_rebuilds_exactly_the_bindings_of_the_intact_records(
        ops in prop::collection::vec((0u16..60, 0u16..3, any::<bool>(), prop::bool::weighted(0.25)), 50..600),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..17),
    ) {
        let mut h: Hist =
            History::open(Store::new(), Journal::format(vec![0; HEADER_LEN + 48 * 1024]).unwrap()).0;
        for (i, (n, link, prefix, release)) in ops.iter().enumerate() {
            let t = T0 + i as u32;
            h.apply(&change(*n, *link, *prefix, *release, t), ServerTime(t)).unwrap();
        }
        let (_, journal) = h.into_parts();
        let mut buf = journal.into_inner();
        let before = records_with_spans(&buf);
        let mut touched = vec![false; before.len()];
        for (at, x) in &flips {
            let at = HEADER_LEN + at.index(buf.len() - HEADER_LEN);
            buf[at] ^= x;
            for (i, (_, from, to)) in before.iter().enumerate() {
                touched[i] |= (*from..*to).contains(&at);
            }
        }
        let (j, recovered) = Journal::open(buf).expect("the header is untouched");
        let lost_in_holes: u64 = recovered.holes.iter().map(|h| h.lost).sum();
        let (h, _) = History::open(Store::new(), j);

        // The intact records, in order, as the reopened journal holds them.
        let mut intact = Vec::new();
        let mut c = h.journal().tail();
        while let Some(r) = h.journal().read(&mut c).expect("read") {
            if Hole::from_marker(r.payload).is_none() {
                intact.push(r.payload.to_vec());
            }
        }
        // Every untouched record is among them, in order.
        let mut rest = before.iter().zip(&touched).filter(|(_, t)| !**t).map(|(r, _)| &r.0).peekable();
        for p in &intact {
            if rest.peek() == Some(&p) {
                rest.next();
            }
        }
        prop_assert!(rest.next().is_none(), "an untouched record was lost");
        prop_assert!(lost_in_holes as usize <= touched.iter().filter(|t| **t).count());

        // The model: each binding at its newest intact record.
        let mut newest: BTreeMap<(Vec<u8>, Ipv6Addr), Binding> = BTreeMap::new();
        for p in &intact {
            let b = record::decode(p).expect("an intact record decodes");
            newest.insert((b.key.client_id.to_vec(), b.key.link), b);
        }
        let mut served: BTreeMap<(Vec<u8>, Ipv6Addr), Vec<_>> = BTreeMap::new();
        for (_, b) in h.store().iter() {
            let b = b.to_binding();
            served.insert((b.key.client_id.to_vec(), b.key.link), active(&b));
        }
        let want: BTreeMap<(Vec<u8>, Ipv6Addr), Vec<_>> = newest
            .iter()
            .map(|(k, b)| (k.clone(), active(b)))
            .filter(|(_, a)| !a.is_empty())
            .collect();
        prop_assert_eq!(served, want);
    }
}
