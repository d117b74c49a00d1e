//! Active Leasequery through the sans-IO engine, with a fake clock (digest §10; decisions D2,
//! D5–D7, D9, D10, D18, D19, D23): live updates and filters, catch-up and CatchUpComplete,
//! DataMissing in the REPLY and in a DATA, coalescing for a requestor that fell behind,
//! keepalives, expiry applied by the engine, QueryTerminated, and hours of demo churn whose
//! stream rebuilds the server's bindings exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use lqd::codec::{
    BuildOptions, Decoded, DhcpOption, FrameDecoder, MessageBuilder, MessageRepr, MessageType,
    OptionCode, QueryType, ServerTime, Status, Xid,
};
use lqd::engine::active::EncodeCache;
use lqd::engine::session::{ActiveSettings, AllowAll, CloseReason, Ctx, Event, Policy, Session};
use lqd::feed::{DemoConfig, DemoSource};
use lqd::store::journal::Journal;
use lqd::store::{Change, History, Lease, LeaseKind, LeaseState, RelayInfo, RemoteIdKey, Store};

const SERVER: [u8; 6] = [0, 3, 0, 1, 0xaa, 0xbb];
const REQUESTOR: [u8; 10] = [0, 3, 0, 1, 0, 0x11, 0x22, 0x33, 0x44, 0x55];
const T0: ServerTime = ServerTime(800_000_000);

type Hist = History<Journal<Vec<u8>>>;

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn link(k: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, k, 0, 0, 0, 1)
}

fn history(ring: usize) -> Hist {
    History::open(Store::new(), Journal::format(vec![0; ring]).unwrap()).0
}

fn client(n: u16) -> Box<[u8]> {
    vec![0, 3, 0, 1, 0x66, (n >> 8) as u8, n as u8].into()
}

/// Client `n`'s address on link `1 + n % 2`, in `state`, granted at `cltt`.
fn change(n: u16, state: LeaseState, cltt: ServerTime) -> Change {
    let l = 1 + n % 2;
    Change {
        client_id: client(n),
        link: link(l),
        lease: Lease {
            kind: LeaseKind::Address,
            address: Ipv6Addr::new(0x2001, 0xdb8, 0, l, 0, 0, 1, n),
            prefix_len: 128,
            iaid: 1,
            preferred_lifetime: 3600,
            valid_lifetime: 7200,
            cltt,
            state,
        },
        relay: Some(RelayInfo {
            relay_ids: vec![vec![0, 2, 0, 0, 0, 9, l as u8].into()],
            remote_ids: vec![RemoteIdKey {
                enterprise_number: 9,
                remote_id: format!("port-{n}").into_bytes().into(),
            }],
            relay_message: None,
        }),
    }
}

/// The engine at one moment: the history, a clock, and the connection's session.
struct Sim {
    h: Hist,
    cache: EncodeCache,
    now: ServerTime,
    mono: Instant,
    settings: ActiveSettings,
}

impl Sim {
    fn new(ring: usize) -> Self {
        Self {
            h: history(ring),
            cache: EncodeCache::new(),
            now: T0,
            mono: Instant::now(),
            settings: ActiveSettings::default(),
        }
    }

    fn ctx(&self) -> Ctx<'_, Journal<Vec<u8>>> {
        Ctx {
            history: &self.h,
            server_id: &SERVER,
            now: self.now,
            mono: self.mono,
            active: self.settings,
        }
    }

    fn advance(&mut self, secs: u32) {
        self.now = ServerTime(self.now.0 + secs);
        self.mono += Duration::from_secs(u64::from(secs));
    }

    fn apply(&mut self, c: &Change) {
        self.h.apply(c, self.now).unwrap();
    }

    /// Sends `request` on `session`; what came back at once.
    fn send(&mut self, session: &mut Session, request: &[u8]) -> Result<Vec<Msg>, CloseReason> {
        let mut out = Vec::new();
        let mut events = Vec::new();
        let ctx = self.ctx();
        session.handle_bytes(request, &ctx, &AllowAll, &mut out, &mut events)?;
        Ok(messages(&out))
    }

    /// Everything the session has to send now, with an unlimited buffer.
    fn drain(&mut self, session: &mut Session) -> Vec<Msg> {
        let mut out = Vec::new();
        loop {
            let ctx = Ctx {
                history: &self.h,
                server_id: &SERVER,
                now: self.now,
                mono: self.mono,
                active: self.settings,
            };
            let more = session.fill(&ctx, &mut self.cache, &mut out, usize::MAX);
            if !more {
                return messages(&out);
            }
        }
    }
}

/// A client's DUID and its addresses (and prefixes) with valid lifetimes.
type ClientData = (Vec<u8>, Vec<(Ipv6Addr, u32)>);

/// One message as the requestor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    kind: MessageType,
    xid: u32,
    status: Option<Status>,
    base_time: Option<ServerTime>,
    /// The client DUID and its addresses with valid lifetimes.
    client: Option<ClientData>,
}

fn messages(wire: &[u8]) -> Vec<Msg> {
    let mut dec = FrameDecoder::default();
    let mut rest = wire;
    let mut out = Vec::new();
    while let Ok(Decoded::Frame { message, consumed }) = dec.decode(rest) {
        let m = MessageRepr::parse(message).unwrap();
        let base_time = m.options.iter().find_map(|o| match o {
            DhcpOption::LqBaseTime(t) => Some(t),
            _ => None,
        });
        let client = match m.options.get(OptionCode::ClientData) {
            Some(DhcpOption::ClientData(cd)) => Some((
                cd.client_id().unwrap().as_bytes().to_vec(),
                cd.iter()
                    .filter_map(|o| match o {
                        DhcpOption::IaAddr(x) => Some((x.address, x.valid_lifetime)),
                        DhcpOption::IaPrefix(p) => Some((p.prefix, p.valid_lifetime)),
                        _ => None,
                    })
                    .collect(),
            )),
            _ => None,
        };
        out.push(Msg {
            kind: m.msg_type(),
            xid: m.xid().unwrap().value(),
            status: m.options.status().map(|s| s.status),
            base_time,
            client,
        });
        rest = &rest[consumed..];
    }
    assert!(rest.is_empty(), "a partial frame");
    out
}

fn active(xid: u32) -> MessageBuilder {
    MessageBuilder::active_leasequery(xid).client_id(&REQUESTOR)
}

fn clients(msgs: &[Msg]) -> Vec<Vec<u8>> {
    msgs.iter()
        .filter_map(|m| m.client.as_ref().map(|c| c.0.clone()))
        .collect()
}

#[test]
fn every_change_is_streamed_live_with_base_time_when_asked_d18() {
    let mut sim = Sim::new(1 << 20);
    sim.apply(&change(1, LeaseState::Active, T0));
    let mut s = Session::new(4);
    let req = active(7)
        .oro(&[OptionCode::LqBaseTime])
        .build_frame()
        .unwrap();
    let first = sim.send(&mut s, &req).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].kind, MessageType::LeasequeryReply);
    assert_eq!(first[0].status, Some(Status::Success));
    assert_eq!(first[0].base_time, Some(T0));
    // What happened before the query is not sent without START_TIME.
    assert!(sim.drain(&mut s).is_empty());

    sim.advance(5);
    for n in 2..=4 {
        sim.apply(&change(n, LeaseState::Active, sim.now));
    }
    let live = sim.drain(&mut s);
    assert_eq!(live.len(), 3);
    for (m, n) in live.iter().zip(2..) {
        assert_eq!((m.kind, m.xid), (MessageType::LeasequeryData, 7));
        assert_eq!(m.base_time, Some(sim.now));
        let (duid, addrs) = m.client.clone().unwrap();
        assert_eq!(duid, client(n).to_vec());
        assert_eq!(
            addrs,
            vec![(change(n, LeaseState::Active, T0).lease.address, 7200)]
        );
    }
    // D5: a release is reported with zero lifetimes.
    sim.advance(10);
    sim.apply(&change(3, LeaseState::Released, sim.now));
    let ended = sim.drain(&mut s);
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].client.as_ref().unwrap().1[0].1, 0);
    // An identical re-send is not a change.
    sim.apply(&change(2, LeaseState::Active, ServerTime(T0.0 + 5)));
    assert!(sim.drain(&mut s).is_empty());
}

#[test]
fn a_query_option_filters_the_stream_by_each_query_type() {
    let filters: Vec<(&str, MessageBuilder, Vec<u16>)> = vec![
        (
            "address",
            active(1).lq_query(QueryType::ByAddress, Ipv6Addr::UNSPECIFIED, |q| {
                q.iaaddr(a("2001:db8:0:2::1:3"), 0, 0)
            }),
            vec![3],
        ),
        (
            "client-id",
            active(1).lq_query(QueryType::ByClientId, Ipv6Addr::UNSPECIFIED, |q| {
                q.client_id(&client(4))
            }),
            vec![4],
        ),
        (
            "relay-id",
            active(1).lq_query(QueryType::ByRelayId, Ipv6Addr::UNSPECIFIED, |q| {
                q.relay_id(&[0, 2, 0, 0, 0, 9, 2])
            }),
            vec![1, 3, 5],
        ),
        (
            "link-address",
            active(1).lq_query(QueryType::ByLinkAddress, link(1), |q| q),
            vec![2, 4, 6],
        ),
        (
            "remote-id",
            active(1).lq_query(QueryType::ByRemoteId, Ipv6Addr::UNSPECIFIED, |q| {
                q.remote_id(9, b"port-5")
            }),
            vec![5],
        ),
    ];
    for (what, req, want) in filters {
        let mut sim = Sim::new(1 << 20);
        let mut s = Session::new(4);
        let reply = sim.send(&mut s, &req.build_frame().unwrap()).unwrap();
        assert_eq!(reply[0].status, Some(Status::Success), "{what}");
        for n in 1..=6 {
            sim.apply(&change(n, LeaseState::Active, sim.now));
        }
        let got = clients(&sim.drain(&mut s));
        let want: Vec<_> = want.iter().map(|n| client(*n).to_vec()).collect();
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn end_time_policy_and_switches_refuse_and_close_d7_d10_d23() {
    let mut sim = Sim::new(1 << 20);
    let mut s = Session::new(4);
    let req = active(2).end_time(T0).build_frame().unwrap();
    let mut out = Vec::new();
    let ctx = sim.ctx();
    let err = s
        .handle_bytes(&req, &ctx, &AllowAll, &mut out, &mut Vec::new())
        .unwrap_err();
    assert_eq!(err, CloseReason::ActiveRefused(Status::MalformedQuery));
    assert_eq!(messages(&out)[0].status, Some(Status::MalformedQuery));

    struct LinkOnly;
    impl Policy for LinkOnly {
        fn allows(&self, t: QueryType) -> bool {
            t == QueryType::ByLinkAddress
        }
    }
    // Without a filter a requestor sees every binding: only for one allowed every type.
    let mut out = Vec::new();
    let err = Session::new(4)
        .handle_bytes(
            &active(3).build_frame().unwrap(),
            &ctx,
            &LinkOnly,
            &mut out,
            &mut Vec::new(),
        )
        .unwrap_err();
    assert_eq!(err, CloseReason::ActiveRefused(Status::NotAllowed));
    let by_link = active(4)
        .lq_query(QueryType::ByLinkAddress, link(1), |q| q)
        .build_frame()
        .unwrap();
    let mut session = Session::new(4);
    session
        .handle_bytes(&by_link, &ctx, &LinkOnly, &mut Vec::new(), &mut Vec::new())
        .unwrap();
    assert!(session.has_active());

    sim.settings.catch_up = false;
    let ctx = sim.ctx();
    let mut out = Vec::new();
    let err = Session::new(4)
        .handle_bytes(
            &active(5).start_time(T0).build_frame().unwrap(),
            &ctx,
            &AllowAll,
            &mut out,
            &mut Vec::new(),
        )
        .unwrap_err();
    assert_eq!(err, CloseReason::ActiveRefused(Status::NotSupported));
}

#[test]
fn catch_up_sends_each_changed_binding_once_then_catch_up_complete_d19() {
    let mut sim = Sim::new(1 << 20);
    // Bindings 1–10 change at T0; 4–10 change again at T0 + 100, some of them twice.
    for n in 1..=10 {
        sim.apply(&change(n, LeaseState::Active, sim.now));
    }
    sim.advance(100);
    let start = sim.now;
    for n in 4..=10 {
        sim.apply(&change(n, LeaseState::Active, sim.now));
    }
    sim.advance(1);
    for n in [5, 6] {
        sim.apply(&change(n, LeaseState::Active, sim.now));
    }
    sim.apply(&change(10, LeaseState::Released, sim.now));
    sim.advance(60);

    let mut s = Session::new(4);
    let mut events = Vec::new();
    let mut out = Vec::new();
    let req = active(9)
        .oro(&[OptionCode::LqBaseTime])
        .start_time(start)
        .build_frame()
        .unwrap();
    let ctx = sim.ctx();
    s.handle_bytes(&req, &ctx, &AllowAll, &mut out, &mut events)
        .unwrap();
    assert_eq!(
        events,
        vec![Event::ActiveStarted {
            xid: Xid::new(9),
            catching_up: true
        }]
    );
    let reply = messages(&out);
    assert_eq!(reply[0].kind, MessageType::LeasequeryReply);
    let msgs = sim.drain(&mut s);
    let (catch_up, rest) = msgs.split_at(msgs.len() - 1);
    let sent: BTreeSet<_> = clients(catch_up).into_iter().collect();
    let want: BTreeSet<_> = (4..=10).map(|n| client(n).to_vec()).collect();
    assert_eq!(sent, want);
    assert_eq!(clients(catch_up).len(), 7, "each binding once");
    // Client 10 was released: zero lifetimes (D5).
    let ten = catch_up
        .iter()
        .find(|m| m.client.as_ref().unwrap().0 == client(10).to_vec())
        .unwrap();
    assert_eq!(ten.client.as_ref().unwrap().1[0].1, 0);
    assert_eq!(rest[0].status, Some(Status::CatchUpComplete));
    assert_eq!(rest[0].base_time, Some(sim.now));
    // Then live updates.
    sim.apply(&change(1, LeaseState::Released, sim.now));
    assert_eq!(clients(&sim.drain(&mut s)), vec![client(1).to_vec()]);

    // Catch-up from after the last change: CatchUpComplete at once.
    let mut s = Session::new(4);
    sim.send(
        &mut s,
        &active(10)
            .start_time(ServerTime(sim.now.0 + 1))
            .build_frame()
            .unwrap(),
    )
    .unwrap();
    let msgs = sim.drain(&mut s);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].status, Some(Status::CatchUpComplete));
}

#[test]
fn data_missing_when_the_journal_does_not_reach_back_or_a_cursor_is_overrun_d19() {
    // A 64 KiB ring holds a few hundred records.
    let mut sim = Sim::new(64 * 1024);
    let start = sim.now;
    for round in 0..20u32 {
        sim.advance(1);
        for n in 1..=100 {
            let mut c = change(n, LeaseState::Active, sim.now);
            c.lease.iaid = round;
            sim.apply(&c);
        }
    }
    assert!(sim.h.journal().oldest_time().unwrap() > start);
    let mut s = Session::new(4);
    let reply = sim
        .send(&mut s, &active(1).start_time(start).build_frame().unwrap())
        .unwrap();
    assert_eq!(reply[0].status, Some(Status::DataMissing));
    assert_eq!(reply[0].base_time, Some(sim.now), "base-time even unasked");
    let after: Vec<_> = sim.drain(&mut s).iter().map(|m| m.status).collect();
    assert_eq!(
        after,
        vec![Some(Status::CatchUpComplete)],
        "then the end of the empty catch-up, and live updates only"
    );

    // A live cursor that falls a whole ring behind.
    let mut slow = Session::new(4);
    sim.send(&mut slow, &active(2).build_frame().unwrap())
        .unwrap();
    for round in 0..20u32 {
        sim.advance(1);
        for n in 1..=100 {
            let mut c = change(n, LeaseState::Active, sim.now);
            c.lease.iaid = 100 + round;
            sim.apply(&c);
        }
    }
    let msgs = sim.drain(&mut slow);
    assert_eq!(msgs[0].kind, MessageType::LeasequeryData);
    assert_eq!(msgs[0].status, Some(Status::DataMissing));
    assert_eq!(msgs[0].base_time, Some(sim.now));
    // It continues from the head: the next change arrives.
    sim.apply(&change(1, LeaseState::Released, sim.now));
    assert_eq!(clients(&sim.drain(&mut slow)), vec![client(1).to_vec()]);
}

#[test]
fn a_requestor_that_fell_behind_gets_each_binding_once_in_its_current_state() {
    let mut sim = Sim::new(64 << 20);
    let mut s = Session::new(4);
    sim.send(&mut s, &active(1).build_frame().unwrap()).unwrap();
    let mut current = BTreeMap::new();
    // 100,000 changes to 1,000 bindings while the requestor reads nothing.
    for k in 0..100_000u32 {
        if k % 1000 == 0 {
            sim.advance(1);
        }
        let n = (k % 1000) as u16;
        let mut c = change(n, LeaseState::Active, sim.now);
        c.lease.valid_lifetime = 7200 + k;
        current.insert(client(n).to_vec(), c.lease.valid_lifetime);
        sim.apply(&c);
    }
    let msgs = sim.drain(&mut s);
    assert_eq!(msgs.len(), 1000, "each binding once");
    let got: BTreeMap<_, _> = msgs
        .iter()
        .map(|m| {
            let (duid, addrs) = m.client.clone().unwrap();
            (duid, addrs[0].1)
        })
        .collect();
    assert_eq!(got, current, "each in its current state");
    // The records were read from the journal: no queue was kept for the session.
    assert_eq!(sim.h.journal().len(), 100_000);
}

#[test]
fn a_keepalive_after_the_idle_timeout_d2() {
    let mut sim = Sim::new(1 << 20);
    let mut s = Session::new(4);
    sim.send(&mut s, &active(4).build_frame().unwrap()).unwrap();
    sim.advance(59);
    assert!(sim.drain(&mut s).is_empty());
    sim.advance(1);
    let k = sim.drain(&mut s);
    assert_eq!(k.len(), 1);
    assert_eq!(
        (
            k[0].kind,
            k[0].xid,
            k[0].status,
            k[0].base_time,
            k[0].client.clone()
        ),
        (MessageType::LeasequeryData, 4, None, Some(sim.now), None),
        "base-time only, though not asked for"
    );
    sim.advance(30);
    sim.apply(&change(1, LeaseState::Active, sim.now));
    assert_eq!(sim.drain(&mut s).len(), 1);
    // A change resets the idle clock.
    sim.advance(59);
    assert!(sim.drain(&mut s).is_empty());
    sim.advance(1);
    assert_eq!(sim.drain(&mut s).len(), 1);
}

#[test]
fn expiry_is_applied_and_streamed_by_the_engine_d6() {
    let mut sim = Sim::new(1 << 20);
    sim.apply(&change(1, LeaseState::Active, sim.now));
    let mut s = Session::new(4);
    sim.send(&mut s, &active(5).build_frame().unwrap()).unwrap();
    sim.advance(7199);
    assert_eq!(sim.h.expire(sim.now).unwrap(), 0);
    sim.advance(1);
    assert_eq!(sim.h.expire(sim.now).unwrap(), 1);
    let msgs = sim.drain(&mut s);
    let (duid, addrs) = msgs[0].client.clone().unwrap();
    assert_eq!((duid, addrs[0].1), (client(1).to_vec(), 0));
    assert!(sim.h.store().is_empty());
}

#[test]
fn shutdown_ends_an_active_query_with_query_terminated_d9() {
    let mut sim = Sim::new(1 << 20);
    let mut s = Session::new(4);
    sim.send(
        &mut s,
        &active(6)
            .oro(&[OptionCode::LqBaseTime])
            .build_frame()
            .unwrap(),
    )
    .unwrap();
    let mut out = Vec::new();
    s.terminate_all(&SERVER, sim.now, &mut out);
    let m = messages(&out);
    assert_eq!(
        (m[0].kind, m[0].status, m[0].base_time),
        (
            MessageType::LeasequeryDone,
            Some(Status::QueryTerminated),
            Some(sim.now)
        )
    );
    assert!(!s.has_active());
}

/// Three hours of demo churn at 20 changes a second, read by one requestor that keeps up and
/// one that reads only every ten minutes; both end with exactly the server's bindings, and
/// the stream's message count shows the slow one got coalesced updates.
#[test]
fn hours_of_churn_rebuild_the_bindings_exactly() {
    let mut sim = Sim::new(32 << 20);
    let config = DemoConfig {
        clients: 2_000,
        links: 4,
        valid_lifetime: 1800,
        preferred_lifetime: 900,
        seed: 42,
        ..DemoConfig::default()
    };
    let mut demo = DemoSource::new(config);
    let mut fast = Session::new(4);
    let mut slow = Session::new(4);
    sim.send(&mut fast, &active(1).build_frame().unwrap())
        .unwrap();
    sim.send(&mut slow, &active(2).build_frame().unwrap())
        .unwrap();
    let mut replicas = [BTreeMap::new(), BTreeMap::new()];
    let mut counts = [0usize, 0];
    let apply = |replica: &mut BTreeMap<Vec<u8>, BTreeSet<Ipv6Addr>>, msgs: &[Msg]| {
        for m in msgs {
            if let Some((duid, addrs)) = &m.client {
                let live: BTreeSet<_> = addrs.iter().filter(|x| x.1 > 0).map(|x| x.0).collect();
                if live.is_empty() {
                    replica.remove(duid);
                } else {
                    replica.insert(duid.clone(), live);
                }
            }
        }
    };
    for second in 0..3 * 3600u32 {
        sim.advance(1);
        for _ in 0..20 {
            let c = demo.next_change(sim.now);
            sim.h.apply(&c, sim.now).unwrap();
        }
        sim.h.expire(sim.now).unwrap();
        let m = sim.drain(&mut fast);
        counts[0] += m.len();
        apply(&mut replicas[0], &m);
        if second % 600 == 599 {
            let m = sim.drain(&mut slow);
            counts[1] += m.len();
            apply(&mut replicas[1], &m);
        }
    }
    let m = sim.drain(&mut slow);
    counts[1] += m.len();
    apply(&mut replicas[1], &m);
    let mut truth: BTreeMap<Vec<u8>, BTreeSet<Ipv6Addr>> = BTreeMap::new();
    for (_, b) in sim.h.store().iter() {
        truth
            .entry(b.client_id().to_vec())
            .or_default()
            .extend(b.leases().iter().map(|l| l.address));
    }
    assert!(truth.len() > 1_000, "{} clients hold leases", truth.len());
    assert_eq!(replicas[0], truth, "the requestor that kept up");
    assert_eq!(
        replicas[1], truth,
        "the requestor that read every ten minutes"
    );
    assert!(
        counts[1] < counts[0] / 2,
        "coalesced: {} messages to the slow one, {} to the fast one",
        counts[1],
        counts[0]
    );
    // Keepalives never went out: something changed every second.
    assert!(sim.h.tombstones() < 10_000);
}

/// D21: a Bulk query reusing the xid of an Active query running on the connection is dropped,
/// the Active query untouched.
#[test]
fn a_bulk_query_with_a_running_active_xid_is_dropped_d21() {
    let mut sim = Sim::new(1 << 20);
    let mut s = Session::new(4);
    sim.send(&mut s, &active(8).build_frame().unwrap()).unwrap();
    let bulk = MessageBuilder::leasequery(8)
        .client_id(&REQUESTOR)
        .lq_query(QueryType::ByLinkAddress, link(1), |q| q)
        .build_frame()
        .unwrap();
    let mut out = Vec::new();
    let mut events = Vec::new();
    let ctx = sim.ctx();
    s.handle_bytes(&bulk, &ctx, &AllowAll, &mut out, &mut events)
        .unwrap();
    assert_eq!(events, vec![Event::DuplicateXid(Xid::new(8))]);
    assert!(out.is_empty());
    assert_eq!((s.running(), s.bulk_running()), (1, 0));
    sim.apply(&change(1, LeaseState::Active, sim.now));
    assert_eq!(clients(&sim.drain(&mut s)), vec![client(1).to_vec()]);
}

/// Requestors catching up from the same START_TIME read the same records at different times
/// (one may be thousands of records ahead of another): each record is still encoded once for
/// all of them, as long as they are within the encode cache's reach (16,384 records).
#[test]
fn requestors_thousands_of_records_apart_share_each_encoded_message() {
    let mut sim = Sim::new(1 << 24);
    let start = sim.now;
    for n in 0..5_000 {
        sim.apply(&change(n, LeaseState::Active, sim.now));
    }
    sim.advance(10);
    let req = active(3)
        .oro(&[OptionCode::LqBaseTime])
        .start_time(start)
        .build_frame()
        .unwrap();
    let mut sessions: Vec<Session> = (0..3).map(|_| Session::new(4)).collect();
    for s in &mut sessions {
        sim.send(s, &req).unwrap();
    }
    // One requestor reads the whole catch-up before the others start.
    for s in &mut sessions {
        let msgs = sim.drain(s);
        assert_eq!(clients(&msgs).len(), 5_000);
        assert_eq!(msgs.last().unwrap().status, Some(Status::CatchUpComplete));
    }
    assert_eq!(
        sim.cache.built(),
        5_000,
        "each record encoded once for all three"
    );
}
