//! The store against a naive model: after any sequence of changes, every query answers what a
//! plain replay of the changes says it should.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv6Addr;

use lqd::codec::ServerTime;
use lqd::store::{
    Applied, Change, Lease, LeaseKind, LeaseState, RelayInfo, RemoteIdKey, Store, prefix_contains,
};
use proptest::prelude::*;

const CLIENTS: u8 = 6;

fn link(i: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, u16::from(i), 0, 0, 0, 0, 1)
}

fn relay_id(i: u8) -> Box<[u8]> {
    vec![0, 2, 0, 0, 0, 9, i].into_boxed_slice()
}

fn remote_id(i: u8) -> RemoteIdKey {
    RemoteIdKey {
        enterprise_number: 9,
        remote_id: vec![b'c', i].into_boxed_slice(),
    }
}

fn lease_strategy() -> impl Strategy<Value = Lease> {
    let kind = prop_oneof![
        (0u16..12).prop_map(|i| (
            LeaseKind::Address,
            Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, i),
            128
        )),
        // /56 and /60 from one pool, so delegations can nest.
        (0u16..4).prop_map(|i| (
            LeaseKind::Prefix,
            Ipv6Addr::new(0x2001, 0xdb8, 0xff00 | (i << 8), 0, 0, 0, 0, 0),
            56
        )),
        (0u16..8).prop_map(|i| (
            LeaseKind::Prefix,
            Ipv6Addr::new(0x2001, 0xdb8, 0xff00 | (i << 4), 0, 0, 0, 0, 0),
            60
        )),
    ];
    let state = prop_oneof![
        6 => Just(LeaseState::Active),
        1 => Just(LeaseState::Released),
        1 => Just(LeaseState::Expired),
        1 => Just(LeaseState::Declined),
        1 => Just(LeaseState::Deleted),
    ];
    (kind, 0u32..3, 0u32..4, state).prop_map(|((kind, address, prefix_len), iaid, t, state)| {
        Lease {
            kind,
            address,
            prefix_len,
            iaid,
            preferred_lifetime: 3600,
            valid_lifetime: 7200 + t,
            cltt: ServerTime(1000 + t),
            state,
        }
    })
}

fn change_strategy() -> impl Strategy<Value = Change> {
    let relay =
        prop::option::of(
            (0u8..3, 0u8..3, any::<bool>()).prop_map(|(r, m, both)| RelayInfo {
                relay_ids: if both {
                    vec![relay_id(r), relay_id((r + 1) % 3)]
                } else {
                    vec![relay_id(r)]
                },
                remote_ids: vec![remote_id(m)],
                relay_message: None,
            }),
        );
    (0..CLIENTS, 0u8..3, lease_strategy(), relay).prop_map(|(c, l, lease, relay)| Change {
        client_id: vec![0, 3, 0, 1, c].into_boxed_slice(),
        link: link(l),
        lease,
        relay,
    })
}

/// A binding in the naive replay: its leases, relay information and last-change time.
type ModelBinding = (Vec<Lease>, RelayInfo, u32);

/// The naive replay: bindings as a map, everything found by scanning.
#[derive(Default)]
struct Model {
    bindings: BTreeMap<(Box<[u8]>, Ipv6Addr), ModelBinding>,
}

impl Model {
    fn apply(&mut self, c: &Change, now: u32) {
        let key = (c.client_id.clone(), c.link);
        if c.lease.state == LeaseState::Active {
            // The address or prefix leaves any other binding.
            let mut emptied = Vec::new();
            for (k, (leases, _, t)) in self.bindings.iter_mut() {
                if *k != key {
                    let before = leases.len();
                    leases.retain(|l| l.slot() != c.lease.slot());
                    if leases.len() != before {
                        *t = now;
                    }
                    if leases.is_empty() {
                        emptied.push(k.clone());
                    }
                }
            }
            for k in emptied {
                self.bindings.remove(&k);
            }
            let entry = self
                .bindings
                .entry(key)
                .or_insert_with(|| (Vec::new(), c.relay.clone().unwrap_or_default(), now));
            let same = entry.0.contains(&c.lease) && c.relay.as_ref().is_none_or(|r| *r == entry.1);
            if !same {
                match entry.0.iter_mut().find(|l| l.slot() == c.lease.slot()) {
                    Some(l) => *l = c.lease,
                    None => entry.0.push(c.lease),
                }
                if let Some(r) = &c.relay {
                    entry.1 = r.clone();
                }
                entry.2 = now;
            }
        } else if let Some(entry) = self.bindings.get_mut(&key) {
            let before = entry.0.len();
            entry.0.retain(|l| l.slot() != c.lease.slot());
            if entry.0.len() != before {
                entry.2 = now;
            }
            if entry.0.is_empty() {
                self.bindings.remove(&key);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn every_query_matches_a_naive_replay(changes in prop::collection::vec(change_strategy(), 1..60)) {
        let mut store = Store::new();
        let mut model = Model::default();
        for (i, c) in changes.iter().enumerate() {
            let now = 2000 + i as u32;
            let out = store.apply(c, ServerTime(now));
            model.apply(c, now);
            // Applying the same change again is a no-op.
            let again = store.apply(c, ServerTime(now + 100_000));
            prop_assert_eq!(again.applied, Applied::Unchanged);
            prop_assert!(again.displaced.is_none());
            if let Applied::Removed(b) = &out.applied {
                prop_assert!(b.leases.iter().any(|l| l.valid_lifetime == 0), "D5: the ended lease at zero lifetimes");
            }
        }
        prop_assert_eq!(store.len(), model.bindings.len());
        for ((client, l), (leases, relay, t)) in &model.bindings {
            let id = store.by_client_link(client, *l);
            prop_assert!(id.is_some());
            let b = store.get(id.unwrap()).unwrap().to_binding();
            let mut got = b.leases.clone();
            let mut want = leases.clone();
            got.sort_by_key(Lease::slot);
            want.sort_by_key(Lease::slot);
            prop_assert_eq!(got, want);
            prop_assert_eq!(&b.relay, relay);
            prop_assert_eq!(b.last_change, ServerTime(*t));
        }
        // By address: exact addresses, and addresses inside delegated prefixes.
        for probe in (0u16..12).map(|i| Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, i))
            .chain((0u16..16).map(|i| Ipv6Addr::new(0x2001, 0xdb8, 0xff00 | (i << 4), 0, 0, 0, 0, 7)))
        {
            let want = model.bindings.iter()
                .filter_map(|(k, (leases, _, _))| leases.iter().filter(|l| l.covers(probe)).map(|l| l.prefix_len).max().map(|len| (len, k.clone())))
                .max_by_key(|(len, _)| *len)
                .map(|(_, k)| k);
            let got = store.by_address(probe).map(|id| {
                let b = store.get(id).unwrap();
                (Box::<[u8]>::from(b.client_id()), b.link())
            });
            prop_assert_eq!(got, want, "by address {}", probe);
        }
        // By client on every link; by link; by relay-id; by remote-id; by change time.
        for c in 0..CLIENTS {
            let client: Box<[u8]> = vec![0, 3, 0, 1, c].into_boxed_slice();
            let got: Vec<Ipv6Addr> = store.by_client(&client).map(|id| store.get(id).unwrap().link()).collect();
            let want: Vec<Ipv6Addr> = model.bindings.keys().filter(|(k, _)| *k == client).map(|(_, l)| *l).collect();
            prop_assert_eq!(got, want);
        }
        let keys = |ids: Vec<lqd::store::BindingId>| -> BTreeSet<(Box<[u8]>, Ipv6Addr)> {
            ids.into_iter().map(|id| { let b = store.get(id).unwrap(); (Box::<[u8]>::from(b.client_id()), b.link()) }).collect()
        };
        for l in 0..3 {
            let want: BTreeSet<_> = model.bindings.keys().filter(|k| k.1 == link(l)).cloned().collect();
            let all: Vec<_> = store.by_link(link(l), None).collect();
            prop_assert_eq!(keys(all.clone()), want);
            // A cursor resumes after the last binding sent, missing and repeating nothing.
            if all.len() >= 2 {
                let rest: Vec<_> = store.by_link(link(l), Some(all[0])).collect();
                prop_assert_eq!(&rest[..], &all[1..]);
            }
        }
        for r in 0..3 {
            let want: BTreeSet<_> = model.bindings.iter().filter(|(_, v)| v.1.relay_ids.contains(&relay_id(r))).map(|(k, _)| k.clone()).collect();
            prop_assert_eq!(keys(store.by_relay_id(&relay_id(r), None).collect()), want);
            let want: BTreeSet<_> = model.bindings.iter().filter(|(_, v)| v.1.remote_ids.contains(&remote_id(r))).map(|(k, _)| k.clone()).collect();
            prop_assert_eq!(keys(store.by_remote_id(&remote_id(r), None).collect()), want);
        }
        let (lo, hi) = (2000 + changes.len() as u32 / 3, 2000 + 2 * changes.len() as u32 / 3);
        let want: BTreeSet<_> = model.bindings.iter().filter(|(_, v)| (lo..=hi).contains(&v.2)).map(|(k, _)| k.clone()).collect();
        prop_assert_eq!(keys(store.changed_between(Some(ServerTime(lo)), Some(ServerTime(hi))).collect()), want);
        // Expiry: every active lease whose valid lifetime ran out, and no other (D6).
        let at = ServerTime(1000 + 7200 + 1);
        let mut got: Vec<_> = store.expired(at).into_iter().map(|c| (c.client_id, c.link, c.lease.slot())).collect();
        let mut want: Vec<_> = model.bindings.iter().flat_map(|((c, l), v)| v.0.iter().filter(|x| x.expires().is_some_and(|e| e <= at)).map(move |x| (c.clone(), *l, x.slot()))).collect();
        got.sort();
        want.sort();
        prop_assert_eq!(got, want);
        let _ = prefix_contains;
    }
}

#[test]
fn removal_reports_the_final_state_with_zero_lifetimes() {
    // D5: the ended lease, at zero lifetimes, in the binding's last state.
    let mut store = Store::new();
    let lease = Lease {
        kind: LeaseKind::Address,
        address: "2001:db8:1::100".parse().unwrap(),
        prefix_len: 128,
        iaid: 1,
        preferred_lifetime: 3600,
        valid_lifetime: 7200,
        cltt: ServerTime(10),
        state: LeaseState::Active,
    };
    let pd = Lease {
        kind: LeaseKind::Prefix,
        address: "2001:db8:ff00::".parse().unwrap(),
        prefix_len: 56,
        ..lease
    };
    let client: Box<[u8]> = vec![0, 3, 0, 1, 1].into_boxed_slice();
    let change = |lease| Change {
        client_id: client.clone(),
        link: link(1),
        lease,
        relay: None,
    };
    assert!(matches!(
        store.apply(&change(lease), ServerTime(10)).applied,
        Applied::Updated { ended: None, .. }
    ));
    assert!(matches!(
        store.apply(&change(pd), ServerTime(11)).applied,
        Applied::Updated { ended: None, .. }
    ));
    assert_eq!(
        store.by_address("2001:db8:ff00:3::1".parse().unwrap()),
        store.by_client_link(&client, link(1))
    );
    // Releasing the address leaves the prefix; the ended address is reported at zero.
    let out = store.apply(
        &change(Lease {
            state: LeaseState::Released,
            ..lease
        }),
        ServerTime(12),
    );
    let Applied::Updated {
        ended: Some(ended),
        id,
    } = out.applied
    else {
        panic!("{out:?}")
    };
    assert_eq!(
        (ended.valid_lifetime, ended.preferred_lifetime, ended.state),
        (0, 0, LeaseState::Released)
    );
    assert_eq!(store.get(id).unwrap().leases(), &[pd][..]);
    assert_eq!(store.by_address(lease.address), None);
    // Expiring the prefix ends the binding.
    let out = store.apply(
        &change(Lease {
            state: LeaseState::Expired,
            ..pd
        }),
        ServerTime(13),
    );
    let Applied::Removed(last) = out.applied else {
        panic!("{out:?}")
    };
    assert_eq!(last.leases.len(), 1);
    assert_eq!(
        (last.leases[0].valid_lifetime, last.leases[0].state),
        (0, LeaseState::Expired)
    );
    assert_eq!(last.last_change, ServerTime(13));
    assert!(store.is_empty());
    assert_eq!(store.by_link(link(1), None).count(), 0);
    // Ending it again changes nothing.
    assert_eq!(
        store
            .apply(
                &change(Lease {
                    state: LeaseState::Expired,
                    ..pd
                }),
                ServerTime(14)
            )
            .applied,
        Applied::Unchanged
    );
}
