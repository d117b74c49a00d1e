//! UDP Leasequery through the sans-IO engine (digest §8.1; decisions D11, D17): what is
//! answered, what is refused with which status, and what is dropped without a word.

use std::net::Ipv6Addr;

use lqd::codec::{
    BuildOptions, DhcpOption, Header, MessageBuilder, MessageRepr, MessageType, OptionCode,
    QueryType, ServerTime, Status, Xid,
};
use lqd::engine::session::AllowAll;
use lqd::engine::udp::{UdpAnswer, answer};
use lqd::store::{Change, Lease, LeaseKind, LeaseState, LinkDef, LinkMap, RelayInfo, Store};

const SERVER: [u8; 14] = [0, 1, 0, 1, 0x2f, 0x07, 0x7a, 0, 0, 0, 0, 0, 0xca, 0xfe];
const REQUESTOR: [u8; 10] = [0, 3, 0, 1, 0, 0x11, 0x22, 0x33, 0x44, 0x55];
const NOW: ServerTime = ServerTime(10_060);

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn client(n: u8) -> Box<[u8]> {
    vec![0, 3, 0, 1, 0x66, n].into_boxed_slice()
}

fn lease(kind: LeaseKind, addr: &str, len: u8) -> Lease {
    Lease {
        kind,
        address: a(addr),
        prefix_len: len,
        iaid: 1,
        preferred_lifetime: 3600,
        valid_lifetime: 7200,
        cltt: ServerTime(10_000),
        state: LeaseState::Active,
    }
}

fn store() -> Store {
    let relay_chain =
        MessageBuilder::relay(MessageType::RelayForw, 0, a("2001:db8:1::1"), a("fe80::2"))
            .raw(18, b"ge-0/0/1")
            .build()
            .unwrap();
    let relay = RelayInfo {
        relay_ids: vec![vec![0, 2, 0, 0, 0, 9, 1].into()],
        remote_ids: vec![],
        relay_message: Some((a("2001:db8:1::1"), relay_chain.into())),
    };
    let mut s = Store::new();
    for change in [
        Change {
            client_id: client(1),
            link: a("2001:db8:1::1"),
            lease: lease(LeaseKind::Address, "2001:db8:1::100", 128),
            relay: Some(relay),
        },
        Change {
            client_id: client(1),
            link: a("2001:db8:1::1"),
            lease: lease(LeaseKind::Prefix, "2001:db8:ff00::", 56),
            relay: None,
        },
        // Client 2 is on two links.
        Change {
            client_id: client(2),
            link: a("2001:db8:1::1"),
            lease: lease(LeaseKind::Address, "2001:db8:1::200", 128),
            relay: None,
        },
        Change {
            client_id: client(2),
            link: a("2001:db8:2::1"),
            lease: lease(LeaseKind::Address, "2001:db8:2::200", 128),
            relay: None,
        },
    ] {
        s.apply(&change, ServerTime(10_000));
    }
    s
}

fn ask(store: &Store, query: &[u8]) -> (UdpAnswer, Vec<u8>) {
    let mut out = Vec::new();
    let verdict = answer(store, &SERVER, &AllowAll, query, NOW, &mut out);
    (verdict, out)
}

fn reply_of(bytes: &[u8]) -> MessageRepr<'_> {
    let r = MessageRepr::parse(bytes).unwrap();
    assert_eq!(r.msg_type(), MessageType::LeasequeryReply);
    r
}

#[test]
fn by_address_finds_the_client_and_its_prefix() {
    let s = store();
    for probe in ["2001:db8:1::100", "2001:db8:ff00:42::1"] {
        let q = MessageBuilder::leasequery(0x42)
            .client_id(&REQUESTOR)
            .lq_query(QueryType::ByAddress, Ipv6Addr::UNSPECIFIED, |q| {
                q.iaaddr(a(probe), 0, 0)
            })
            .build()
            .unwrap();
        let (verdict, out) = ask(&s, &q);
        assert_eq!(verdict, UdpAnswer::Reply);
        let r = reply_of(&out);
        assert_eq!(r.xid(), Some(Xid::new(0x42)));
        let opts: Vec<_> = r.options.iter().collect();
        assert_eq!(opts[0], DhcpOption::ServerId(lqd::codec::Duid(&SERVER)));
        assert_eq!(opts[1], DhcpOption::ClientId(lqd::codec::Duid(&REQUESTOR)));
        let Some(DhcpOption::ClientData(cd)) = r.options.get(OptionCode::ClientData) else {
            panic!("{r:?}")
        };
        assert_eq!(
            cd.client_id().map(|d| d.as_bytes().to_vec()),
            Some(client(1).to_vec())
        );
        let leases: Vec<_> = cd
            .iter()
            .filter(|o| matches!(o, DhcpOption::IaAddr(_) | DhcpOption::IaPrefix(_)))
            .collect();
        assert_eq!(leases.len(), 2);
        let DhcpOption::IaAddr(addr) = leases[0] else {
            panic!()
        };
        assert_eq!(
            (addr.preferred_lifetime, addr.valid_lifetime),
            (3540, 7140),
            "lifetimes remaining at NOW"
        );
        assert!(cd.iter().any(|o| o == DhcpOption::CltTime(60)));
        assert_eq!(r.options.status(), None);
        // Relay data was not asked for.
        assert!(r.options.get(OptionCode::LqRelayData).is_none());
    }
}

#[test]
fn relay_data_goes_at_the_top_level_when_asked_d17() {
    let q = MessageBuilder::leasequery(1)
        .client_id(&REQUESTOR)
        .lq_query(QueryType::ByAddress, Ipv6Addr::UNSPECIFIED, |q| {
            q.iaaddr(a("2001:db8:1::100"), 0, 0)
                .oro(&[OptionCode::LqRelayData])
        })
        .build()
        .unwrap();
    let (_, out) = ask(&store(), &q);
    let r = reply_of(&out);
    let Some(DhcpOption::LqRelayData(rd)) = r.options.get(OptionCode::LqRelayData) else {
        panic!("{r:?}")
    };
    assert_eq!(rd.peer_address, a("2001:db8:1::1"));
    let chain = rd.relay_message.message().unwrap();
    assert_eq!(chain.msg_type(), MessageType::RelayForw);
}

#[test]
fn nothing_found_is_a_reply_without_client_data() {
    let q = MessageBuilder::leasequery(1)
        .client_id(&REQUESTOR)
        .lq_query(QueryType::ByAddress, Ipv6Addr::UNSPECIFIED, |q| {
            q.iaaddr(a("2001:db8:9::9"), 0, 0)
        })
        .build()
        .unwrap();
    let (verdict, out) = ask(&store(), &q);
    assert_eq!(verdict, UdpAnswer::Reply);
    let r = reply_of(&out);
    assert!(r.options.get(OptionCode::ClientData).is_none());
    assert_eq!(r.options.status(), None);
    // The same address on the wrong link is not found either.
    let q = MessageBuilder::leasequery(1)
        .client_id(&REQUESTOR)
        .lq_query(QueryType::ByAddress, a("2001:db8:2::1"), |q| {
            q.iaaddr(a("2001:db8:1::100"), 0, 0)
        })
        .build()
        .unwrap();
    let (_, out) = ask(&store(), &q);
    assert!(reply_of(&out).options.get(OptionCode::ClientData).is_none());
}

#[test]
fn a_client_on_several_links_gets_client_link() {
    let s = store();
    let q = MessageBuilder::leasequery(1)
        .client_id(&REQUESTOR)
        .lq_query(QueryType::ByClientId, Ipv6Addr::UNSPECIFIED, |q| {
            q.client_id(&client(2))
        })
        .build()
        .unwrap();
    let (_, out) = ask(&s, &q);
    let r = reply_of(&out);
    assert!(r.options.get(OptionCode::ClientData).is_none());
    let Some(DhcpOption::LqClientLink(links)) = r.options.get(OptionCode::LqClientLink) else {
        panic!("{r:?}")
    };
    assert_eq!(
        links.iter().collect::<Vec<_>>(),
        vec![a("2001:db8:1::1"), a("2001:db8:2::1")]
    );
    // Naming one of the links gives that binding.
    let q = MessageBuilder::leasequery(1)
        .client_id(&REQUESTOR)
        .lq_query(QueryType::ByClientId, a("2001:db8:2::1"), |q| {
            q.client_id(&client(2))
        })
        .build()
        .unwrap();
    let (_, out) = ask(&s, &q);
    let r = reply_of(&out);
    let Some(DhcpOption::ClientData(cd)) = r.options.get(OptionCode::ClientData) else {
        panic!("{r:?}")
    };
    assert!(
        cd.iter()
            .any(|o| matches!(o, DhcpOption::IaAddr(x) if x.address == a("2001:db8:2::200")))
    );
}

#[test]
fn bulk_only_types_get_not_allowed_d11() {
    for qt in [
        QueryType::ByRelayId,
        QueryType::ByLinkAddress,
        QueryType::ByRemoteId,
    ] {
        let q = MessageBuilder::leasequery(5)
            .client_id(&REQUESTOR)
            .lq_query(qt, a("2001:db8:1::1"), |q| {
                q.relay_id(&[1]).remote_id(9, b"x")
            })
            .build()
            .unwrap();
        let (verdict, out) = ask(&store(), &q);
        assert_eq!(
            verdict,
            UdpAnswer::Refused(Status::NotAllowed, "Bulk Leasequery query type over UDP")
        );
        let r = reply_of(&out);
        assert_eq!(
            r.options.status().map(|s| s.status),
            Some(Status::NotAllowed),
            "{qt}"
        );
        assert!(r.options.get(OptionCode::ServerId).is_some() && r.options.client_id().is_some());
        assert_eq!(
            r.options.len(),
            3,
            "error replies carry only Server-ID, Client-ID, status"
        );
    }
    let q = MessageBuilder::leasequery(5)
        .client_id(&REQUESTOR)
        .lq_query(QueryType::Unknown(9), Ipv6Addr::UNSPECIFIED, |q| q)
        .build()
        .unwrap();
    let (_, out) = ask(&store(), &q);
    assert_eq!(
        reply_of(&out).options.status().map(|s| s.status),
        Some(Status::UnknownQueryType)
    );
}

#[test]
fn silent_drops() {
    let s = store();
    let drops = [
        b"\x0e\x00".to_vec(),
        MessageBuilder::reply(1)
            .client_id(&REQUESTOR)
            .build()
            .unwrap(),
        // No OPTION_CLIENTID.
        MessageBuilder::leasequery(1)
            .lq_query(QueryType::ByAddress, Ipv6Addr::UNSPECIFIED, |q| {
                q.iaaddr(a("2001:db8:1::100"), 0, 0)
            })
            .build()
            .unwrap(),
        // Another server's DUID.
        MessageBuilder::leasequery(1)
            .client_id(&REQUESTOR)
            .server_id(&[0, 3, 0, 1, 9, 9])
            .lq_query(QueryType::ByAddress, Ipv6Addr::UNSPECIFIED, |q| {
                q.iaaddr(a("2001:db8:1::100"), 0, 0)
            })
            .build()
            .unwrap(),
        // No OPTION_LQ_QUERY.
        MessageBuilder::leasequery(1)
            .client_id(&REQUESTOR)
            .build()
            .unwrap(),
    ];
    for q in drops {
        let (verdict, out) = ask(&s, &q);
        assert!(
            matches!(verdict, UdpAnswer::Drop(reason) if !reason.is_empty()),
            "{verdict:?}"
        );
        assert!(out.is_empty());
    }
    // Our own DUID is fine.
    let q = MessageBuilder::leasequery(1)
        .client_id(&REQUESTOR)
        .server_id(&SERVER)
        .lq_query(QueryType::ByAddress, Ipv6Addr::UNSPECIFIED, |q| {
            q.iaaddr(a("2001:db8:1::100"), 0, 0)
        })
        .build()
        .unwrap();
    assert_eq!(ask(&s, &q).0, UdpAnswer::Reply);
}

#[test]
fn a_relayed_query_is_answered_through_the_same_relays() {
    let query = MessageBuilder::leasequery(0x77)
        .client_id(&REQUESTOR)
        .lq_query(QueryType::ByAddress, Ipv6Addr::UNSPECIFIED, |q| {
            q.iaaddr(a("2001:db8:1::100"), 0, 0)
        })
        .build()
        .unwrap();
    let inner = MessageBuilder::relay(MessageType::RelayForw, 0, a("2001:db8:5::1"), a("fe80::5"))
        .raw(18, b"port-5")
        .relay_msg(&query)
        .build()
        .unwrap();
    let outer = MessageBuilder::relay(MessageType::RelayForw, 1, a("2001:db8:6::1"), a("fe80::6"))
        .relay_msg(&inner)
        .build()
        .unwrap();
    let (verdict, out) = ask(&store(), &outer);
    assert_eq!(verdict, UdpAnswer::Reply);
    let r = MessageRepr::parse(&out).unwrap();
    assert_eq!(
        r.header,
        Header::Relay {
            msg_type: MessageType::RelayRepl,
            hop_count: 1,
            link_address: a("2001:db8:6::1"),
            peer_address: a("fe80::6")
        }
    );
    let Some(DhcpOption::RelayMsg(m)) = r.options.get(OptionCode::RelayMsg) else {
        panic!()
    };
    let r2 = m.message().unwrap();
    assert_eq!(
        r2.header,
        Header::Relay {
            msg_type: MessageType::RelayRepl,
            hop_count: 0,
            link_address: a("2001:db8:5::1"),
            peer_address: a("fe80::5")
        }
    );
    assert_eq!(
        r2.options.get(OptionCode::InterfaceId),
        Some(DhcpOption::InterfaceId(b"port-5"))
    );
    let Some(DhcpOption::RelayMsg(m)) = r2.options.get(OptionCode::RelayMsg) else {
        panic!()
    };
    let reply = m.message().unwrap();
    assert_eq!(
        (reply.msg_type(), reply.xid()),
        (MessageType::LeasequeryReply, Some(Xid::new(0x77)))
    );
    assert!(reply.options.get(OptionCode::ClientData).is_some());
}

/// The same bindings, with configured links; the changes name link 1 by another address on it.
fn store_with_links() -> Store {
    let links = LinkMap::new(&[
        LinkDef {
            address: a("2001:db8:1::1"),
            prefixes: vec!["2001:db8:1::/64".parse().unwrap()],
            pd_pools: vec!["2001:db8:ff00::/40".parse().unwrap()],
        },
        LinkDef {
            address: a("2001:db8:2::1"),
            prefixes: vec!["2001:db8:2::/64".parse().unwrap()],
            pd_pools: vec![],
        },
    ])
    .unwrap();
    let mut s = Store::with_links(links);
    let old = store();
    for (_, b) in old.iter() {
        let b = b.to_binding();
        for l in &b.leases {
            let link = if b.key.link == a("2001:db8:1::1") {
                a("2001:db8:1::5")
            } else {
                b.key.link
            };
            s.apply(
                &Change {
                    client_id: b.key.client_id.clone(),
                    link,
                    lease: *l,
                    relay: None,
                },
                ServerTime(10_000),
            );
        }
    }
    s
}

fn status_of(out: &[u8]) -> Option<Status> {
    reply_of(out).options.status().map(|s| s.status)
}

/// D16 and digest §8.1 item 7: an address or link outside the configured links is
/// NotConfigured; any address on a link names it.
#[test]
fn configured_links_map_addresses_and_refuse_the_unknown_with_not_configured_d16() {
    let s = store_with_links();
    assert!(s.has_link(a("2001:db8:1::1")) && !s.has_link(a("2001:db8:1::5")));
    let by_address = |addr: &str| {
        MessageBuilder::leasequery(7)
            .client_id(&REQUESTOR)
            .lq_query(QueryType::ByAddress, Ipv6Addr::UNSPECIFIED, |q| {
                q.iaaddr(a(addr), 0, 0)
            })
            .build()
            .unwrap()
    };
    let (_, out) = ask(&s, &by_address("2001:db8:1::100"));
    assert!(reply_of(&out).options.get(OptionCode::ClientData).is_some());
    // Managed space without a binding: an empty reply, not an error.
    let (_, out) = ask(&s, &by_address("2001:db8:1::999"));
    assert!(reply_of(&out).options.get(OptionCode::ClientData).is_none());
    assert_eq!(status_of(&out), None);
    let (_, out) = ask(&s, &by_address("2001:db8:ff42::1"));
    assert_eq!(status_of(&out), None);
    let (_, out) = ask(&s, &by_address("2001:db8:3::1"));
    assert_eq!(status_of(&out), Some(Status::NotConfigured));
    assert!(reply_of(&out).options.get(OptionCode::ClientData).is_none());

    let by_client = |link: &str| {
        MessageBuilder::leasequery(8)
            .client_id(&REQUESTOR)
            .lq_query(QueryType::ByClientId, a(link), |q| q.client_id(&client(2)))
            .build()
            .unwrap()
    };
    // Any address inside a link's prefix names that link.
    for (named, held) in [
        ("2001:db8:2::abcd", "2001:db8:2::200"),
        ("2001:db8:1::77", "2001:db8:1::200"),
    ] {
        let (_, out) = ask(&s, &by_client(named));
        let r = reply_of(&out);
        let Some(DhcpOption::ClientData(cd)) = r.options.get(OptionCode::ClientData) else {
            panic!("{named}: {r:?}")
        };
        assert!(
            cd.iter()
                .any(|o| matches!(o, DhcpOption::IaAddr(x) if x.address == a(held))),
            "{named}"
        );
    }
    let (_, out) = ask(&s, &by_client("2001:db8:9::1"));
    assert_eq!(status_of(&out), Some(Status::NotConfigured));
}

/// D23: a requestor allowed only some query types gets NotAllowed for the others over UDP too.
#[test]
fn per_requestor_query_types_apply_over_udp_d23() {
    struct AddressOnly;
    impl lqd::engine::session::Policy for AddressOnly {
        fn allows(&self, t: QueryType) -> bool {
            t == QueryType::ByAddress
        }
    }
    let s = store();
    let by_client = MessageBuilder::leasequery(3)
        .client_id(&REQUESTOR)
        .lq_query(QueryType::ByClientId, Ipv6Addr::UNSPECIFIED, |q| {
            q.client_id(&client(1))
        })
        .build()
        .unwrap();
    let mut out = Vec::new();
    let verdict = answer(&s, &SERVER, &AddressOnly, &by_client, NOW, &mut out);
    assert_eq!(
        verdict,
        UdpAnswer::Refused(
            Status::NotAllowed,
            "query type not allowed for this requestor"
        )
    );
    let r = reply_of(&out);
    assert_eq!(
        r.options.status().map(|s| s.status),
        Some(Status::NotAllowed)
    );
    assert!(r.options.get(OptionCode::ClientData).is_none());
    let by_address = MessageBuilder::leasequery(4)
        .client_id(&REQUESTOR)
        .lq_query(QueryType::ByAddress, Ipv6Addr::UNSPECIFIED, |q| {
            q.iaaddr(a("2001:db8:1::100"), 0, 0)
        })
        .build()
        .unwrap();
    let verdict = answer(&s, &SERVER, &AddressOnly, &by_address, NOW, &mut out);
    assert_eq!(verdict, UdpAnswer::Reply);
    assert!(reply_of(&out).options.get(OptionCode::ClientData).is_some());
}
