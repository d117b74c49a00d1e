//! Filtered Active queries read only the records filed under their key (issue 12), and still
//! send exactly what a query reading the whole journal and filtering each record would: the
//! newest state of each binding that matches, DataMissing when a record of theirs was lost,
//! CatchUpComplete after a catch-up. A model run against the brute-force reading, and the
//! cost: a filtered catch-up reads the records that match, a change wakes the queries it
//! concerns.

use std::net::Ipv6Addr;
use std::time::Instant;

use lqd::codec::{
    BuildOptions, Decoded, DhcpOption, FrameDecoder, MessageBuilder, MessageRepr, MessageType,
    OptionCode, QueryType, ServerTime, Status,
};
use lqd::engine::active::{EncodeCache, Watchers};
use lqd::engine::query::Selector;
use lqd::engine::session::{ActiveSettings, AllowAll, Ctx, Session};
use lqd::store::journal::Journal;
use lqd::store::{
    Binding, Change, History, Lease, LeaseKind, LeaseState, RelayInfo, RemoteIdKey, Store, record,
};
use proptest::prelude::*;

const SERVER: [u8; 6] = [0, 3, 0, 1, 0xaa, 0xbb];
const T0: ServerTime = ServerTime(800_000_000);

type Hist = History<Journal<Vec<u8>>>;

fn link(k: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, k, 0, 0, 0, 1)
}

fn client(n: u16) -> Box<[u8]> {
    vec![0, 3, 0, 1, 0x66, (n >> 8) as u8, n as u8].into()
}

fn relay_id(r: u16) -> Box<[u8]> {
    vec![0, 2, 0, 0, 0, 9, (r >> 8) as u8, r as u8].into()
}

fn remote_id(r: u16) -> RemoteIdKey {
    RemoteIdKey {
        enterprise_number: 9,
        remote_id: format!("port-{r}").into_bytes().into(),
    }
}

/// An address lease of client `n` on link `l` (clients 25 apart share it, so one displaces
/// the other), or its delegated /56.
fn lease(n: u16, l: u16, prefix: bool, state: LeaseState, cltt: ServerTime) -> Lease {
    let (kind, address, prefix_len) = if prefix {
        (
            LeaseKind::Prefix,
            Ipv6Addr::new(0x3fff, 0, l, n << 8, 0, 0, 0, 0),
            56,
        )
    } else {
        (
            LeaseKind::Address,
            Ipv6Addr::new(0x2001, 0xdb8, 0, l, 0, 0, 1, n % 25),
            128,
        )
    };
    Lease {
        kind,
        address,
        prefix_len,
        iaid: 1,
        preferred_lifetime: 3600,
        valid_lifetime: 7200,
        cltt,
        state,
    }
}

/// One step of the model: client `n` on link `l` changes one lease, relayed by relay `r`.
#[derive(Debug, Clone, Copy)]
struct Op {
    n: u16,
    l: u16,
    r: u16,
    prefix: bool,
    release: bool,
}

fn change(op: Op, now: ServerTime) -> Change {
    let state = if op.release {
        LeaseState::Released
    } else {
        LeaseState::Active
    };
    Change {
        client_id: client(op.n),
        link: link(op.l),
        lease: lease(op.n, op.l, op.prefix, state, now),
        relay: Some(RelayInfo {
            relay_ids: vec![relay_id(op.r)],
            remote_ids: vec![remote_id(op.n % 5)],
            relay_message: None,
        }),
    }
}

/// The filters the model tries, with the ACTIVELEASEQUERY asking for each.
fn filter(kind: u8, k: u16) -> (Selector, MessageBuilder) {
    let q = MessageBuilder::active_leasequery(7).client_id(&[0, 3, 0, 1, 9, 9]);
    match kind % 6 {
        0 => (
            Selector::LinkAddress(link(k % 4)),
            q.lq_query(QueryType::ByLinkAddress, link(k % 4), |q| q),
        ),
        1 => (
            Selector::RelayId {
                relay_id: relay_id(k % 3),
                link: None,
            },
            q.lq_query(QueryType::ByRelayId, Ipv6Addr::UNSPECIFIED, |q| {
                q.relay_id(&relay_id(k % 3))
            }),
        ),
        2 => (
            Selector::RemoteId {
                remote_id: remote_id(k % 5),
                link: None,
            },
            q.lq_query(QueryType::ByRemoteId, Ipv6Addr::UNSPECIFIED, |q| {
                q.remote_id(9, &remote_id(k % 5).remote_id)
            }),
        ),
        3 => (
            Selector::ClientId {
                client_id: client(k % 40),
                link: None,
            },
            q.lq_query(QueryType::ByClientId, Ipv6Addr::UNSPECIFIED, |q| {
                q.client_id(&client(k % 40))
            }),
        ),
        4 => {
            let address = lease(k % 40, k % 4, false, LeaseState::Active, T0).address;
            (
                Selector::Address {
                    address,
                    link: None,
                },
                q.lq_query(QueryType::ByAddress, Ipv6Addr::UNSPECIFIED, |q| {
                    q.iaaddr(address, 0, 0)
                }),
            )
        }
        _ => {
            // An address inside a delegated prefix.
            let p = lease(k % 40, k % 4, true, LeaseState::Active, T0).address;
            let address = Ipv6Addr::from(u128::from(p) | (5 << 64) | 1);
            (
                Selector::Address {
                    address,
                    link: None,
                },
                q.lq_query(QueryType::ByAddress, Ipv6Addr::UNSPECIFIED, |q| {
                    q.iaaddr(address, 0, 0)
                }),
            )
        }
    }
}

/// What the requestor sees of a message: a client's data, or a status.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// A client and its addresses and prefixes, each with whether it is still valid.
    Client(Vec<u8>, Vec<(Ipv6Addr, bool)>),
    Status(Status),
}

fn seen(wire: &[u8]) -> Vec<Seen> {
    let mut dec = FrameDecoder::default();
    let mut rest = wire;
    let mut out = Vec::new();
    while let Ok(Decoded::Frame { message, consumed }) = dec.decode(rest) {
        let m = MessageRepr::parse(message).expect("lqd's message parses");
        if let Some(DhcpOption::ClientData(cd)) = m.options.get(OptionCode::ClientData) {
            out.push(Seen::Client(
                cd.client_id().expect("client-id").as_bytes().to_vec(),
                cd.iter()
                    .filter_map(|o| match o {
                        DhcpOption::IaAddr(x) => Some((x.address, x.valid_lifetime > 0)),
                        DhcpOption::IaPrefix(p) => Some((p.prefix, p.valid_lifetime > 0)),
                        _ => None,
                    })
                    .collect(),
            ));
        } else if let Some(s) = m.options.status() {
            if m.msg_type() == MessageType::LeasequeryData {
                out.push(Seen::Status(s.status));
            }
        }
        rest = &rest[consumed..];
    }
    assert!(rest.is_empty(), "a partial frame");
    out
}

/// What a binding's record sends: its client and its leases, each valid or ended.
fn expected(b: &Binding) -> Seen {
    Seen::Client(
        b.key.client_id.to_vec(),
        b.leases
            .iter()
            .map(|l| (l.address, l.state.is_active() && l.valid_lifetime > 0))
            .collect(),
    )
}

/// The brute-force reader: every record since `pos`, the newest of its binding and matching
/// the filter; DataMissing when a matching record was evicted before it was read: any, for a
/// link or a Relay-ID; for a key of one binding (D46), one that would have been sent (its
/// binding's newest) or that ended the key.
struct Reference {
    pos: u64,
    /// Every record ever written: its binding.
    log: Vec<Binding>,
}

impl Reference {
    fn record_new(&mut self, h: &Hist) {
        let j = h.journal();
        let from = self.log.len() as u64;
        let mut c = j.cursor_at(from).expect("the new records are in the ring");
        while let Some(r) = j.read(&mut c).expect("read") {
            self.log.push(record::decode(r.payload).expect("decodes"));
        }
    }

    /// True when the loss of record `s`, which matches `f`, is told (DataMissing).
    fn told(&self, f: &Selector, s: u64) -> bool {
        let s = s as usize;
        let b = &self.log[s];
        let newest = !self.log[s + 1..].iter().any(|o| o.key == b.key);
        match f {
            Selector::LinkAddress(_) | Selector::RelayId { .. } => true,
            Selector::Address { address, .. } => {
                newest
                    || b.leases
                        .iter()
                        .any(|l| l.covers(*address) && l.state != LeaseState::Active)
            }
            Selector::ClientId { .. } | Selector::RemoteId { .. } => {
                newest || b.leases.iter().all(|l| l.state != LeaseState::Active)
            }
        }
    }

    fn read(&mut self, h: &Hist, f: &Selector, catch_up_until: &mut Option<u64>) -> Vec<Seen> {
        let j = h.journal();
        let first = j.first_seq().unwrap_or(j.next_seq());
        let mut out = Vec::new();
        let lost = (self.pos..first).any(|s| f.matches(&self.log[s as usize]) && self.told(f, s));
        if lost {
            out.push(Seen::Status(Status::DataMissing));
            *catch_up_until = None;
            self.pos = j.next_seq();
            return out;
        }
        for s in self.pos.max(first)..j.next_seq() {
            let mut c = j.cursor_at(s).expect("in ring");
            let r = j.read(&mut c).expect("read").expect("record");
            let b = &self.log[s as usize];
            if h.is_latest(s, r.payload) && f.matches(b) {
                if catch_up_until.is_some_and(|u| s >= u) {
                    out.push(Seen::Status(Status::CatchUpComplete));
                    *catch_up_until = None;
                }
                out.push(expected(b));
            }
        }
        if catch_up_until.is_some() {
            out.push(Seen::Status(Status::CatchUpComplete));
            *catch_up_until = None;
        }
        self.pos = j.next_seq();
        out
    }
}

/// The engine's context over `h` at `now`.
fn ctx(h: &Hist, now: ServerTime) -> Ctx<'_, Journal<Vec<u8>>> {
    Ctx {
        history: h,
        server_id: &SERVER,
        now,
        mono: Instant::now(),
        active: ActiveSettings::default(),
    }
}

fn drain(h: &Hist, cache: &mut EncodeCache, s: &mut Session, now: ServerTime) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let ctx = ctx(h, now);
        if !s.fill(&ctx, cache, &mut out, usize::MAX) {
            return out;
        }
    }
}

fn op() -> impl Strategy<Value = Op> {
    (
        0..40u16,
        0..4u16,
        0..3u16,
        any::<bool>(),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(n, l, r, prefix, release)| Op {
            n,
            l,
            r,
            prefix,
            release,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// A filtered query, live or catching up, sends what the brute-force reader sends, over
    /// rings small enough to evict while it is behind.
    #[test]
    fn a_filtered_query_sends_what_reading_every_record_sends(
        ring in prop::sample::select(vec![16 * 1024usize, 64 * 1024, 1 << 20]),
        kind in 0u8..6,
        k in 0u16..400,
        catch_up in any::<bool>(),
        before in prop::collection::vec(op(), 0..150),
        chunks in prop::collection::vec(prop::collection::vec(op(), 0..120), 1..6),
    ) {
        let mut h: Hist = History::open(Store::new(), Journal::format(vec![0; ring]).unwrap()).0;
        let mut cache = EncodeCache::new();
        let mut now = T0;
        let mut reference = Reference { pos: 0, log: Vec::new() };
        for o in &before {
            h.apply(&change(*o, now), now).unwrap();
            reference.record_new(&h);
        }
        now = ServerTime(now.0 + 1);
        let (selector, builder) = filter(kind, k);
        let builder = if catch_up { builder.start_time(T0) } else { builder };
        let mut session = Session::new(4);
        let mut out = Vec::new();
        let ctx = ctx(&h, now);
        session
            .handle_bytes(&builder.build_frame().unwrap(), &ctx, &AllowAll, &mut out, &mut Vec::new())
            .unwrap();
        let j = h.journal();
        let evicted = j.evicted_time().is_some_and(|e| e >= T0);
        let mut until = None;
        if catch_up && !evicted {
            reference.pos = j.seek_time(T0).unwrap().seq();
            until = Some(j.next_seq());
        } else {
            reference.pos = j.next_seq();
            // DataMissing in the reply, then the end of an empty catch-up (D19).
            if catch_up {
                until = Some(j.next_seq());
            }
        }
        for chunk in std::iter::once(&Vec::new()).chain(&chunks) {
            for o in chunk {
                h.apply(&change(*o, now), now).unwrap();
                reference.record_new(&h);
            }
            let got = seen(&drain(&h, &mut cache, &mut session, now));
            let want = reference.read(&h, &selector, &mut until);
            prop_assert_eq!(got, want);
            now = ServerTime(now.0 + 1);
        }
    }
}

/// 100,000 records over 1,000 links, 100 on each: a catch-up filtered by one link reads its
/// 100, not the journal.
#[test]
fn a_filtered_catch_up_reads_only_the_records_of_its_key() {
    let mut h: Hist = History::open(Store::new(), Journal::format(vec![0; 64 << 20]).unwrap()).0;
    for i in 0..100_000u32 {
        let op = Op {
            n: (i / 1000) as u16,
            l: (i % 1000) as u16,
            r: 0,
            prefix: true,
            release: false,
        };
        let mut c = change(op, T0);
        c.lease.cltt = ServerTime(T0.0 + i);
        h.apply(&c, T0).unwrap();
    }
    assert_eq!(h.journal().len(), 100_000);
    let mut s = Session::new(4);
    let ctx = ctx(&h, T0);
    let req = MessageBuilder::active_leasequery(3)
        .lq_query(QueryType::ByLinkAddress, link(7), |q| q)
        .start_time(T0)
        .build_frame()
        .unwrap();
    s.handle_bytes(&req, &ctx, &AllowAll, &mut Vec::new(), &mut Vec::new())
        .unwrap();
    let got = seen(&drain(&h, &mut EncodeCache::new(), &mut s, T0));
    let q = &s.active_queries()[0];
    assert_eq!(q.records_read(), 100, "only link 7's records are read");
    // Each of link 7's 100 clients is sent once, then CatchUpComplete.
    assert_eq!(got.last(), Some(&Seen::Status(Status::CatchUpComplete)));
    let clients = got.iter().filter(|m| matches!(m, Seen::Client(..))).count();
    assert_eq!(clients, 100);
}

/// 10,000 queries each on its own link, 100 unfiltered: a change wakes its link's query and
/// the unfiltered ones, nothing else; an address inside a delegated prefix wakes its query.
#[test]
fn a_change_wakes_only_the_queries_it_concerns() {
    let mut h: Hist = History::open(Store::new(), Journal::format(vec![0; 8 << 20]).unwrap()).0;
    let mut watchers = Watchers::new();
    let mut sessions = Vec::new();
    let start = |h: &Hist, req: MessageBuilder| {
        let mut s = Session::new(4);
        let ctx = ctx(h, T0);
        s.handle_bytes(
            &req.build_frame().unwrap(),
            &ctx,
            &AllowAll,
            &mut Vec::new(),
            &mut Vec::new(),
        )
        .unwrap();
        s
    };
    for token in 0..10_000u16 {
        let req = MessageBuilder::active_leasequery(1).lq_query(
            QueryType::ByLinkAddress,
            link(token),
            |q| q,
        );
        sessions.push(start(&h, req));
    }
    for _ in 0..100 {
        sessions.push(start(&h, MessageBuilder::active_leasequery(1)));
    }
    let p = lease(3, 9, true, LeaseState::Active, T0).address;
    let inside = Ipv6Addr::from(u128::from(p) | (7 << 64) | 1);
    sessions.push(start(
        &h,
        MessageBuilder::active_leasequery(1).lq_query(
            QueryType::ByAddress,
            Ipv6Addr::UNSPECIFIED,
            |q| q.iaaddr(inside, 0, 0),
        ),
    ));
    for (token, s) in sessions.iter().enumerate() {
        watchers.watch(&s.active_queries()[0], token, h.postings());
    }
    let unfiltered: Vec<usize> = (10_000..10_100).collect();

    // Applies client `n`'s change on link `l`: the tokens woken, each once.
    let woken_by = |h: &mut Hist, watchers: &Watchers, n: u16, l: u16, prefix: bool| {
        let before = h.journal().next_seq();
        let op = Op {
            n,
            l,
            r: 0,
            prefix,
            release: false,
        };
        h.apply(&change(op, T0), T0).unwrap();
        let mut woken = Vec::new();
        watchers.woken(h.postings(), before, h.journal().next_seq(), &mut woken);
        woken.sort_unstable();
        woken.dedup();
        woken
    };
    let woken = woken_by(&mut h, &watchers, 1, 4321, false);
    let mut want = vec![4321];
    want.extend(&unfiltered);
    assert_eq!(woken, want);

    // Client 3's /56 on link 9 holds the watched address.
    let woken = woken_by(&mut h, &watchers, 3, 9, true);
    let mut want = vec![9];
    want.extend(&unfiltered);
    want.push(10_100);
    assert_eq!(woken, want);
    let got = seen(&drain(
        &h,
        &mut EncodeCache::new(),
        sessions.last_mut().unwrap(),
        T0,
    ));
    let id = h.store().by_client_link(&client(3), link(9)).unwrap();
    assert_eq!(
        got,
        vec![expected(&h.store().get(id).unwrap().to_binding())]
    );

    // Once gone, a query is woken no more.
    for (token, s) in sessions.iter().enumerate().take(10_000) {
        watchers.unwatch(&s.active_queries()[0], token, h.postings());
    }
    let woken = woken_by(&mut h, &watchers, 2, 17, false);
    assert_eq!(woken, unfiltered);
}

/// A query on a key of one binding (its client, D46) is woken by that binding's change, though
/// the record is not listed under the key; when the keys the records since a wake-up hold are
/// no longer all kept (more than the postings keep), every filtered query is woken, and each
/// still sends exactly its own.
#[test]
fn a_query_on_a_key_of_one_binding_is_woken_by_its_change() {
    let mut h: Hist = History::open(Store::new(), Journal::format(vec![0; 32 << 20]).unwrap()).0;
    let mut watchers = Watchers::new();
    let mut session = Session::new(4);
    let ctx = ctx(&h, T0);
    let (_, req) = filter(3, 5);
    session
        .handle_bytes(
            &req.build_frame().unwrap(),
            &ctx,
            &AllowAll,
            &mut Vec::new(),
            &mut Vec::new(),
        )
        .unwrap();
    watchers.watch(&session.active_queries()[0], 7, h.postings());
    let mut cache = EncodeCache::new();
    let op = |n, l| Op {
        n,
        l,
        r: 0,
        prefix: false,
        release: false,
    };
    let woken = |h: &Hist, since: u64| {
        let mut w = Vec::new();
        watchers.woken(h.postings(), since, h.journal().next_seq(), &mut w);
        w.dedup();
        w
    };
    let before = h.journal().next_seq();
    h.apply(&change(op(6, 1), T0), T0).unwrap();
    assert_eq!(woken(&h, before), Vec::<usize>::new(), "another client");
    let before = h.journal().next_seq();
    h.apply(&change(op(5, 1), T0), T0).unwrap();
    assert_eq!(woken(&h, before), vec![7]);
    assert_eq!(seen(&drain(&h, &mut cache, &mut session, T0)).len(), 1);

    // Client 5 changes again, then 40,000 changes of others: more keys than are kept.
    let before = h.journal().next_seq();
    h.apply(&change(op(5, 2), T0), T0).unwrap();
    for i in 0..40_000u32 {
        let mut c = change(op(6 + (i % 30) as u16, 3), T0);
        c.lease.cltt = ServerTime(T0.0 + i);
        h.apply(&c, T0).unwrap();
    }
    assert_eq!(
        woken(&h, before),
        vec![7],
        "woken though its key is no longer kept"
    );
    let got = seen(&drain(&h, &mut cache, &mut session, T0));
    let id = h.store().by_client_link(&client(5), link(2)).unwrap();
    assert_eq!(
        got,
        vec![expected(&h.store().get(id).unwrap().to_binding())]
    );
}

/// A filtered query whose key had no change is not told DataMissing when the ring wraps
/// under other keys' churn; one whose record was evicted before it read it is.
#[test]
fn data_missing_only_for_a_query_that_lost_a_record_of_its_own() {
    let mut h: Hist = History::open(Store::new(), Journal::format(vec![0; 32 * 1024]).unwrap()).0;
    let start = |h: &Hist, l: u16| {
        let mut s = Session::new(4);
        let ctx = ctx(h, T0);
        let req = MessageBuilder::active_leasequery(1)
            .lq_query(QueryType::ByLinkAddress, link(l), |q| q)
            .build_frame()
            .unwrap();
        s.handle_bytes(&req, &ctx, &AllowAll, &mut Vec::new(), &mut Vec::new())
            .unwrap();
        s
    };
    let mut quiet = start(&h, 1);
    let mut behind = start(&h, 2);
    let mut cache = EncodeCache::new();
    // Link 2 changes once; its query does not read it before the ring wraps many times over
    // changes on link 3.
    let op = |n, l| Op {
        n,
        l,
        r: 0,
        prefix: false,
        release: false,
    };
    h.apply(&change(op(1, 2), T0), T0).unwrap();
    for i in 0..2_000u16 {
        let mut c = change(op(i % 40, 3), T0);
        c.lease.cltt = ServerTime(T0.0 + u32::from(i));
        h.apply(&c, T0).unwrap();
    }
    assert!(h.journal().first_seq().unwrap() > 1, "the ring wrapped");
    assert_eq!(seen(&drain(&h, &mut cache, &mut quiet, T0)), vec![]);
    assert_eq!(
        seen(&drain(&h, &mut cache, &mut behind, T0)),
        vec![Seen::Status(Status::DataMissing)]
    );
    // Both go on from the head.
    h.apply(&change(op(5, 1), T0), T0).unwrap();
    h.apply(&change(op(6, 2), T0), T0).unwrap();
    assert_eq!(seen(&drain(&h, &mut cache, &mut quiet, T0)).len(), 1);
    assert_eq!(seen(&drain(&h, &mut cache, &mut behind, T0)).len(), 1);
}
