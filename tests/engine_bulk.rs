//! Bulk Leasequery answers streamed by the sans-IO engine (digest §9.1–9.2; decisions D12–D14,
//! D17, D18, D20): the message sequence, every binding exactly once across many small fills,
//! the time window, and relay data inside CLIENT_DATA.

use std::collections::BTreeSet;
use std::net::Ipv6Addr;

use lqd::codec::{
    BuildOptions, Decoded, DhcpOption, FrameDecoder, MessageBuilder, MessageRepr, MessageType,
    OptionCode, QueryType, ServerTime, Status, Xid,
};
use lqd::engine::bulk::{BulkAnswer, Fill};
use lqd::engine::query::{Transport, read_leasequery};
use lqd::store::{Change, Lease, LeaseKind, LeaseState, RelayInfo, RemoteIdKey, Store};

const SERVER: [u8; 6] = [0, 3, 0, 1, 0xca, 0xfe];
const REQUESTOR: [u8; 6] = [0, 3, 0, 1, 0xbe, 0xef];

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn link(i: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, i, 0, 0, 0, 0, 1)
}

/// `n` clients on two links; client i changed at time 1000 + i; every third behind relay 7.
fn store(n: u16) -> Store {
    let mut s = Store::new();
    for i in 0..n {
        let relayed = i % 3 == 0;
        let relay = relayed.then(|| RelayInfo {
            relay_ids: vec![vec![0, 2, 0, 0, 0, 9, 7].into()],
            remote_ids: vec![RemoteIdKey {
                enterprise_number: 9,
                remote_id: b"circuit".to_vec().into(),
            }],
            relay_message: Some((
                link(i % 2 + 1),
                MessageBuilder::relay(MessageType::RelayForw, 0, link(i % 2 + 1), a("fe80::1"))
                    .build()
                    .unwrap()
                    .into(),
            )),
        });
        let change = Change {
            client_id: vec![0, 3, 0, 1, (i >> 8) as u8, i as u8].into(),
            link: link(i % 2 + 1),
            lease: Lease {
                kind: LeaseKind::Address,
                address: Ipv6Addr::new(0x2001, 0xdb8, i % 2 + 1, 0, 0, 0, 1, i),
                prefix_len: 128,
                iaid: 1,
                preferred_lifetime: 3600,
                valid_lifetime: 7200,
                cltt: ServerTime(1000 + u32::from(i)),
                state: LeaseState::Active,
            },
            relay,
        };
        s.apply(&change, ServerTime(1000 + u32::from(i)));
    }
    s
}

/// Runs a query to the end with a small high-water mark, returning every message's bytes.
fn run(store: &Store, request: &[u8], high_water: usize) -> Vec<Vec<u8>> {
    let query = read_leasequery(&MessageRepr::parse(request).unwrap(), Transport::Tcp).unwrap();
    let mut answer = BulkAnswer::new(query);
    let mut wire = Vec::new();
    let mut calls = 0;
    loop {
        let mut out = Vec::new();
        let fill = answer.fill(store, &SERVER, ServerTime(5000), &mut out, high_water);
        wire.extend_from_slice(&out);
        calls += 1;
        assert!(calls < 100_000);
        if fill == Fill::Finished {
            break;
        }
        assert!(
            out.len() >= high_water,
            "More means the buffer reached the mark"
        );
    }
    assert!(answer.is_finished());
    let mut dec = FrameDecoder::default();
    let mut rest = &wire[..];
    let mut messages = Vec::new();
    while !rest.is_empty() {
        let Decoded::Frame { message, consumed } = dec.decode(rest).unwrap() else {
            panic!("partial frame")
        };
        messages.push(message.to_vec());
        rest = &rest[consumed..];
    }
    messages
}

fn by_link(l: Ipv6Addr) -> Vec<u8> {
    MessageBuilder::leasequery(0x1234)
        .client_id(&REQUESTOR)
        .oro(&[OptionCode::LqBaseTime])
        .lq_query(QueryType::ByLinkAddress, l, |q| q)
        .build()
        .unwrap()
}

fn clients_of(messages: &[Vec<u8>]) -> Vec<Vec<u8>> {
    messages
        .iter()
        .filter_map(|m| {
            let r = MessageRepr::parse(m).unwrap();
            match r.options.get(OptionCode::ClientData) {
                Some(DhcpOption::ClientData(cd)) => cd.client_id().map(|d| d.as_bytes().to_vec()),
                _ => None,
            }
        })
        .collect()
}

#[test]
fn by_link_streams_reply_data_done_with_every_binding_once() {
    let s = store(1000);
    for high_water in [1, 64, 1500, 1 << 20] {
        let messages = run(&s, &by_link(link(1)), high_water);
        assert_eq!(messages.len(), 500 + 1, "REPLY + 499 DATA + DONE");
        let types: Vec<_> = messages
            .iter()
            .map(|m| MessageRepr::parse(m).unwrap().msg_type())
            .collect();
        assert_eq!(types[0], MessageType::LeasequeryReply);
        assert!(
            types[1..500]
                .iter()
                .all(|t| *t == MessageType::LeasequeryData)
        );
        assert_eq!(types[500], MessageType::LeasequeryDone);
        for m in &messages {
            let r = MessageRepr::parse(m).unwrap();
            assert_eq!(r.xid(), Some(Xid::new(0x1234)));
            assert_eq!(
                r.options.base_time(),
                Some(ServerTime(5000)),
                "D18: base-time in every message"
            );
        }
        let first = MessageRepr::parse(&messages[0]).unwrap();
        assert!(first.options.get(OptionCode::ServerId).is_some());
        assert_eq!(
            first.options.client_id().map(|d| d.as_bytes().to_vec()),
            Some(REQUESTOR.to_vec())
        );
        let done = MessageRepr::parse(&messages[500]).unwrap();
        assert_eq!(
            done.options.status().map(|s| s.status),
            Some(Status::Success),
            "D14"
        );
        let clients = clients_of(&messages);
        let distinct: BTreeSet<_> = clients.iter().cloned().collect();
        assert_eq!(
            (clients.len(), distinct.len()),
            (500, 500),
            "each binding exactly once"
        );
    }
}

#[test]
fn nothing_found_is_one_empty_reply_and_no_done_d12() {
    let messages = run(&store(10), &by_link(link(9)), 1500);
    assert_eq!(messages.len(), 1);
    let r = MessageRepr::parse(&messages[0]).unwrap();
    assert_eq!(r.msg_type(), MessageType::LeasequeryReply);
    assert!(r.options.status().is_none() && r.options.get(OptionCode::ClientData).is_none());
}

#[test]
fn start_and_end_bound_the_last_change_d20() {
    let s = store(100);
    let q = MessageBuilder::leasequery(1)
        .client_id(&REQUESTOR)
        .lq_query(QueryType::ByLinkAddress, link(2), |q| q)
        .start_time(ServerTime(1010))
        .end_time(ServerTime(1020))
        .build()
        .unwrap();
    let clients = clients_of(&run(&s, &q, 200));
    // Link 2 holds the odd clients: 1011, 1013, ..., 1019.
    let want: Vec<Vec<u8>> = [11u8, 13, 15, 17, 19]
        .iter()
        .map(|i| vec![0, 3, 0, 1, 0, *i])
        .collect();
    let got: BTreeSet<_> = clients.into_iter().collect();
    assert_eq!(got, want.into_iter().collect());
}

#[test]
fn relay_id_remote_id_and_client_id_queries() {
    let s = store(30);
    let q = MessageBuilder::leasequery(2)
        .client_id(&REQUESTOR)
        .lq_query(QueryType::ByRelayId, Ipv6Addr::UNSPECIFIED, |q| {
            q.relay_id(&[0, 2, 0, 0, 0, 9, 7])
                .oro(&[OptionCode::LqRelayData])
        })
        .build()
        .unwrap();
    let messages = run(&s, &q, 100);
    assert_eq!(clients_of(&messages).len(), 10, "every third of 30 clients");
    for m in &messages[..messages.len() - 1] {
        let r = MessageRepr::parse(m).unwrap();
        let Some(DhcpOption::ClientData(cd)) = r.options.get(OptionCode::ClientData) else {
            panic!()
        };
        assert!(
            cd.get(OptionCode::LqRelayData).is_some(),
            "D17: relay data inside CLIENT_DATA"
        );
        assert!(r.options.get(OptionCode::LqRelayData).is_none());
    }
    // Narrowed to one link.
    let q = MessageBuilder::leasequery(3)
        .client_id(&REQUESTOR)
        .lq_query(QueryType::ByRemoteId, link(1), |q| {
            q.remote_id(9, b"circuit")
        })
        .build()
        .unwrap();
    assert_eq!(clients_of(&run(&s, &q, 100)).len(), 5);
    // By client-id on every link: one binding here.
    let q = MessageBuilder::leasequery(4)
        .client_id(&REQUESTOR)
        .lq_query(QueryType::ByClientId, Ipv6Addr::UNSPECIFIED, |q| {
            q.client_id(&[0, 3, 0, 1, 0, 4])
        })
        .build()
        .unwrap();
    let messages = run(&s, &q, 100);
    assert_eq!(messages.len(), 2, "REPLY with the binding, then DONE");
}

#[test]
fn bindings_removed_midway_are_skipped_without_harm() {
    let mut s = store(200);
    let query = read_leasequery(
        &MessageRepr::parse(&by_link(link(1))).unwrap(),
        Transport::Tcp,
    )
    .unwrap();
    let mut answer = BulkAnswer::new(query);
    let mut out = Vec::new();
    assert_eq!(
        answer.fill(&s, &SERVER, ServerTime(5000), &mut out, 1),
        Fill::More
    );
    // Remove every binding on the link but the first three sent.
    for i in (6..200u16).step_by(2) {
        let c = Change {
            client_id: vec![0, 3, 0, 1, (i >> 8) as u8, i as u8].into(),
            link: link(1),
            lease: Lease {
                kind: LeaseKind::Address,
                address: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 1, i),
                prefix_len: 128,
                iaid: 1,
                preferred_lifetime: 3600,
                valid_lifetime: 7200,
                cltt: ServerTime(1000),
                state: LeaseState::Released,
            },
            relay: None,
        };
        s.apply(&c, ServerTime(6000));
    }
    while answer.fill(&s, &SERVER, ServerTime(5000), &mut out, 1 << 20) == Fill::More {}
    assert!(answer.sent() <= 4);
}

#[test]
fn terminate_sends_done_query_terminated_d9() {
    let s = store(50);
    let query = read_leasequery(
        &MessageRepr::parse(&by_link(link(1))).unwrap(),
        Transport::Tcp,
    )
    .unwrap();
    let mut answer = BulkAnswer::new(query);
    let mut out = Vec::new();
    answer.fill(&s, &SERVER, ServerTime(5000), &mut out, 1);
    answer.terminate(
        Status::QueryTerminated,
        "shutting down",
        &SERVER,
        ServerTime(5001),
        &mut out,
    );
    let mut dec = FrameDecoder::default();
    let mut rest = &out[..];
    let mut last = Vec::new();
    while let Ok(Decoded::Frame { message, consumed }) = dec.decode(rest) {
        last = message.to_vec();
        rest = &rest[consumed..];
    }
    let done = MessageRepr::parse(&last).unwrap();
    assert_eq!(done.msg_type(), MessageType::LeasequeryDone);
    assert_eq!(
        done.options.status().map(|s| s.status),
        Some(Status::QueryTerminated)
    );
    assert!(answer.is_finished());
}
