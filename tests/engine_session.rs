//! One connection's protocol state (decisions D8, D21, D22, D24, D25): pipelined queries,
//! the concurrent-query limit, refusals that keep the connection, violations that close it.

use std::net::Ipv6Addr;

use lqd::codec::{
    BuildOptions, Decoded, FrameDecoder, MessageBuilder, MessageRepr, MessageType, QueryType,
    ServerTime, Status, Xid,
};
use lqd::engine::active::EncodeCache;
use lqd::engine::session::{ActiveSettings, Ctx};
use lqd::engine::session::{AllowAll, CloseReason, Event, Policy, Session};
use lqd::store::journal::Journal;
use lqd::store::{Change, History, Lease, LeaseKind, LeaseState, LinkDef, LinkMap, Store};

type Hist = History<Journal<Vec<u8>>>;

/// `store` with an empty journal beside it.
fn history(store: Store) -> Hist {
    History::open(store, Journal::format(vec![0; 1 << 20]).unwrap()).0
}

fn ctx(h: &Hist) -> Ctx<'_, Journal<Vec<u8>>> {
    Ctx {
        history: h,
        server_id: &SERVER,
        now: ServerTime(2000),
        mono: std::time::Instant::now(),
        active: ActiveSettings::default(),
    }
}

const SERVER: [u8; 6] = [0, 3, 0, 1, 0xca, 0xfe];
const REQUESTOR: [u8; 6] = [0, 3, 0, 1, 0xbe, 0xef];

fn link() -> Ipv6Addr {
    "2001:db8:1::1".parse().unwrap()
}

fn store(n: u16) -> Hist {
    history(plain_store(n))
}

fn plain_store(n: u16) -> Store {
    let mut s = Store::new();
    for i in 0..n {
        let c = Change {
            client_id: vec![0, 3, 0, 1, (i >> 8) as u8, i as u8].into(),
            link: link(),
            lease: Lease {
                kind: LeaseKind::Address,
                address: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 1, i),
                prefix_len: 128,
                iaid: 1,
                preferred_lifetime: 3600,
                valid_lifetime: 7200,
                cltt: ServerTime(1000),
                state: LeaseState::Active,
            },
            relay: None,
        };
        s.apply(&c, ServerTime(1000));
    }
    s
}

fn query(xid: u32) -> Vec<u8> {
    MessageBuilder::leasequery(xid)
        .client_id(&REQUESTOR)
        .lq_query(QueryType::ByLinkAddress, link(), |q| q)
        .build_frame()
        .unwrap()
}

fn messages(wire: &[u8]) -> Vec<(MessageType, Xid, Option<Status>)> {
    let mut dec = FrameDecoder::default();
    let mut rest = wire;
    let mut out = Vec::new();
    while let Ok(Decoded::Frame { message, consumed }) = dec.decode(rest) {
        let m = MessageRepr::parse(message).unwrap();
        out.push((
            m.msg_type(),
            m.xid().unwrap(),
            m.options.status().map(|s| s.status),
        ));
        rest = &rest[consumed..];
    }
    assert!(rest.is_empty());
    out
}

/// Feeds `input`, reading more whenever the session wants it, and fills until every answer
/// is done; returns everything written.
fn drive(
    session: &mut Session,
    store: &Hist,
    mut input: &[u8],
    events: &mut Vec<Event>,
) -> Result<Vec<u8>, CloseReason> {
    let mut wire = Vec::new();
    for _ in 0..10_000 {
        if session.wants_read() {
            let n = session.handle_bytes(input, &ctx(store), &AllowAll, &mut wire, events)?;
            input = &input[n..];
        }
        session.fill(&ctx(store), &mut EncodeCache::new(), &mut wire, usize::MAX);
        if session.running() == 0 && input.is_empty() {
            return Ok(wire);
        }
    }
    panic!("the session never finished");
}

#[test]
fn pipelined_queries_in_one_write_are_all_answered() {
    // Kea drops every query after the first in one TCP read; lqd answers them all.
    let s = store(20);
    let mut input = Vec::new();
    for xid in [1, 2, 3] {
        input.extend_from_slice(&query(xid));
    }
    let mut session = Session::new(4);
    let mut events = Vec::new();
    let wire = drive(&mut session, &s, &input, &mut events).unwrap();
    let msgs = messages(&wire);
    for xid in [1u32, 2, 3] {
        let mine: Vec<_> = msgs.iter().filter(|m| m.1 == Xid::new(xid)).collect();
        assert_eq!(mine.len(), 21, "REPLY + 19 DATA + DONE for xid {xid}");
        assert_eq!(mine[0].0, MessageType::LeasequeryReply);
        assert_eq!(mine[20].0, MessageType::LeasequeryDone);
    }
    assert!(events.is_empty());
}

#[test]
fn at_the_query_limit_the_connection_is_not_read_d22() {
    let s = store(5);
    let mut input = Vec::new();
    for xid in 1..=6 {
        input.extend_from_slice(&query(xid));
    }
    let mut session = Session::new(4);
    let mut out = Vec::new();
    let mut events = Vec::new();
    let n = session
        .handle_bytes(&input, &ctx(&s), &AllowAll, &mut out, &mut events)
        .unwrap();
    assert_eq!(n, 4 * query(1).len(), "exactly four frames consumed");
    assert!(!session.wants_read());
    assert_eq!(
        session
            .handle_bytes(&input[n..], &ctx(&s), &AllowAll, &mut out, &mut events)
            .unwrap(),
        0
    );
    // Once answers finish, the rest is read.
    session.fill(&ctx(&s), &mut EncodeCache::new(), &mut out, 1 << 20);
    assert!(session.wants_read());
    let m = session
        .handle_bytes(&input[n..], &ctx(&s), &AllowAll, &mut out, &mut events)
        .unwrap();
    assert_eq!(m, 2 * query(1).len());
}

#[test]
fn a_partial_frame_waits_for_the_rest() {
    let q = query(9);
    let mut session = Session::new(4);
    let (mut out, mut events) = (Vec::new(), Vec::new());
    assert_eq!(
        session
            .handle_bytes(
                &q[..5],
                &ctx(&history(Store::new())),
                &AllowAll,
                &mut out,
                &mut events
            )
            .unwrap(),
        0
    );
    assert_eq!(session.running(), 0);
    assert_eq!(
        session
            .handle_bytes(
                &q,
                &ctx(&history(Store::new())),
                &AllowAll,
                &mut out,
                &mut events
            )
            .unwrap(),
        q.len()
    );
    assert_eq!(session.running(), 1);
}

#[test]
fn duplicate_xid_is_dropped_and_the_running_query_untouched_d21() {
    let s = store(3);
    let mut input = query(7);
    input.extend_from_slice(&query(7));
    let mut session = Session::new(4);
    let mut events = Vec::new();
    let wire = drive(&mut session, &s, &input, &mut events).unwrap();
    assert_eq!(events, vec![Event::DuplicateXid(Xid::new(7))]);
    assert_eq!(messages(&wire).len(), 4, "one answer: REPLY, 2 DATA, DONE");
}

#[test]
fn refusals_keep_the_connection_open_d8() {
    let s = store(2);
    let mut input = MessageBuilder::leasequery(1)
        .client_id(&REQUESTOR)
        .lq_query(QueryType::Unknown(9), Ipv6Addr::UNSPECIFIED, |q| q)
        .build_frame()
        .unwrap();
    input.extend_from_slice(&query(2));
    let mut session = Session::new(4);
    let mut events = Vec::new();
    let wire = drive(&mut session, &s, &input, &mut events).unwrap();
    let msgs = messages(&wire);
    assert_eq!(
        msgs[0],
        (
            MessageType::LeasequeryReply,
            Xid::new(1),
            Some(Status::UnknownQueryType)
        )
    );
    assert_eq!(msgs.iter().filter(|m| m.1 == Xid::new(2)).count(), 3);
    assert!(matches!(
        events[0],
        Event::Refused {
            status: Status::UnknownQueryType,
            ..
        }
    ));

    // A policy refusing the type: NotAllowed (D23).
    struct NoLink;
    impl Policy for NoLink {
        fn allows(&self, t: QueryType) -> bool {
            t != QueryType::ByLinkAddress
        }
    }
    let mut session = Session::new(4);
    let (mut out, mut events) = (Vec::new(), Vec::new());
    session
        .handle_bytes(&query(3), &ctx(&s), &NoLink, &mut out, &mut events)
        .unwrap();
    assert_eq!(
        messages(&out),
        vec![(
            MessageType::LeasequeryReply,
            Xid::new(3),
            Some(Status::NotAllowed)
        )]
    );
    assert_eq!(session.running(), 0);
}

#[test]
fn violations_close_the_connection_d24() {
    type Check = fn(&CloseReason) -> bool;
    let cases: Vec<(Vec<u8>, Check)> = vec![
        (vec![0, 3, 14, 0, 0], |r| {
            matches!(r, CloseReason::BadFrame(_))
        }),
        (vec![0, 6, 14, 0, 0, 1, 0, 46], |r| {
            matches!(r, CloseReason::BadMessage(_))
        }),
        (MessageBuilder::reply(1).build_frame().unwrap(), |r| {
            matches!(
                r,
                CloseReason::UnexpectedMessage(MessageType::LeasequeryReply)
            )
        }),
        (MessageBuilder::done(1).build_frame().unwrap(), |r| {
            matches!(r, CloseReason::UnexpectedMessage(_))
        }),
    ];
    for (input, check) in cases {
        let mut session = Session::new(4);
        let (mut out, mut events) = (Vec::new(), Vec::new());
        let err = session
            .handle_bytes(
                &input,
                &ctx(&history(Store::new())),
                &AllowAll,
                &mut out,
                &mut events,
            )
            .unwrap_err();
        assert!(check(&err), "{err}");
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn starttls_is_refused_in_plain_mode_and_active_is_not_supported() {
    let mut input = MessageBuilder::new(MessageType::StartTls, 1)
        .client_id(&REQUESTOR)
        .build_frame()
        .unwrap();
    input.extend_from_slice(&query(2));
    let mut session = Session::new(4);
    let (mut out, mut events) = (Vec::new(), Vec::new());
    session
        .handle_bytes(
            &input,
            &ctx(&history(Store::new())),
            &AllowAll,
            &mut out,
            &mut events,
        )
        .unwrap();
    assert_eq!(
        messages(&out),
        vec![(
            MessageType::LeasequeryReply,
            Xid::new(1),
            Some(Status::TlsConnectionRefused)
        )]
    );
    assert_eq!(
        session.running(),
        1,
        "the connection stays usable in plain mode (D25)"
    );

    let active = MessageBuilder::active_leasequery(3)
        .client_id(&REQUESTOR)
        .build_frame()
        .unwrap();
    // D10: with Active Leasequery switched off, NotSupported and close.
    let mut session = Session::new(4);
    let mut out = Vec::new();
    let h = history(Store::new());
    let off = Ctx {
        active: ActiveSettings {
            enabled: false,
            ..ActiveSettings::default()
        },
        ..ctx(&h)
    };
    let err = session
        .handle_bytes(&active, &off, &AllowAll, &mut out, &mut events)
        .unwrap_err();
    assert_eq!(err, CloseReason::ActiveRefused(Status::NotSupported));
    assert_eq!(
        messages(&out),
        vec![(
            MessageType::LeasequeryReply,
            Xid::new(3),
            Some(Status::NotSupported)
        )]
    );
}

#[test]
fn shutdown_terminates_running_answers_d9() {
    let s = store(50);
    let mut session = Session::new(4);
    let (mut out, mut events) = (Vec::new(), Vec::new());
    session
        .handle_bytes(&query(4), &ctx(&s), &AllowAll, &mut out, &mut events)
        .unwrap();
    session.fill(&ctx(&s), &mut EncodeCache::new(), &mut out, 1);
    session.terminate_all(&SERVER, ServerTime(2001), &mut out);
    let msgs = messages(&out);
    assert_eq!(
        msgs.last().unwrap(),
        &(
            MessageType::LeasequeryDone,
            Xid::new(4),
            Some(Status::QueryTerminated)
        )
    );
    assert_eq!(session.running(), 0);
}

/// D16: with configured links, a Bulk query may name a link by any address inside its prefix;
/// a link-address outside every configured link is refused with NotConfigured (D8) and the
/// connection stays open for the next query.
#[test]
fn a_link_is_named_by_any_address_on_it_and_an_unknown_one_is_not_configured_d16() {
    let links = LinkMap::new(&[LinkDef {
        address: link(),
        prefixes: vec!["2001:db8:1::/64".parse().unwrap()],
        pd_pools: vec![],
    }])
    .unwrap();
    let mut s = Store::with_links(links);
    let plain = plain_store(5);
    for (_, b) in plain.iter() {
        s.apply(
            &Change {
                client_id: b.client_id().into(),
                link: "2001:db8:1::fe".parse().unwrap(),
                lease: b.leases()[0],
                relay: None,
            },
            ServerTime(1000),
        );
    }
    let ask = |xid: u32, l: &str| {
        MessageBuilder::leasequery(xid)
            .client_id(&REQUESTOR)
            .lq_query(QueryType::ByLinkAddress, l.parse().unwrap(), |q| q)
            .build_frame()
            .unwrap()
    };
    let mut input = ask(1, "2001:db8:9::1");
    input.extend_from_slice(&ask(2, "2001:db8:1::42"));
    let mut session = Session::new(4);
    let mut events = Vec::new();
    let wire = drive(&mut session, &history(s), &input, &mut events).unwrap();
    let msgs = messages(&wire);
    assert_eq!(
        msgs[0],
        (
            MessageType::LeasequeryReply,
            Xid::new(1),
            Some(Status::NotConfigured)
        )
    );
    let two: Vec<_> = msgs.iter().filter(|m| m.1 == Xid::new(2)).collect();
    assert_eq!(two.len(), 6, "REPLY + 4 DATA + DONE: {msgs:?}");
    assert_eq!(two[5].2, Some(Status::Success));
    assert_eq!(
        events,
        vec![Event::Refused {
            xid: Xid::new(1),
            status: Status::NotConfigured,
            reason: "the link-address is not a configured link",
        }]
    );
}
