//! Byte-exact parse and emit vectors: every example of digest §15 and every option kind.

use core::net::Ipv6Addr;

use super::*;

fn h(s: &str) -> Vec<u8> {
    let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(clean).unwrap()
}

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// Emits into a buffer pre-filled with 0xa5 (so a forgotten byte shows) of exactly
/// `buffer_len()` octets, and checks the result.
fn emit_exact(msg: &MessageRepr<'_>) -> Vec<u8> {
    let mut buf = vec![0xa5; msg.buffer_len()];
    let n = msg.emit(&mut buf).unwrap();
    assert_eq!(n, buf.len());
    // One octet short must fail cleanly, never panic or write out of bounds.
    let mut short = vec![0xa5; msg.buffer_len() - 1];
    assert_eq!(
        msg.emit(&mut short).unwrap_err().kind(),
        ErrorKind::BufferTooSmall
    );
    buf
}

/// Parses a TCP frame, checks it round-trips byte-exact, and returns the message bytes.
fn frame_round_trip(frame: &[u8]) -> &[u8] {
    let mut dec = FrameDecoder::default();
    let Decoded::Frame { message, consumed } = dec.decode(frame).unwrap() else {
        panic!("incomplete frame")
    };
    assert_eq!(consumed, frame.len());
    let msg = MessageRepr::parse(message).unwrap();
    assert_eq!(emit_exact(&msg), message);
    let mut framed = vec![0xa5; msg.buffer_len() + 2];
    assert_eq!(encode_frame(&msg, &mut framed).unwrap(), frame.len());
    assert_eq!(framed, frame);
    message
}

const REQUESTOR_DUID: [u8; 10] = [0, 3, 0, 1, 0, 0x11, 0x22, 0x33, 0x44, 0x55];
const CLIENT_DUID: [u8; 10] = [0, 3, 0, 1, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb];
const SERVER_DUID: [u8; 14] = [0, 1, 0, 1, 0x2f, 0x07, 0x7a, 0, 0, 0, 0, 0, 0xca, 0xfe];

#[test]
fn digest_15_1_activeleasequery() {
    let frame = h(
        "00 20 16 12 34 56 00 01 00 0a 00 03 00 01 00 11 22 33 44 55 00 06 00 02 00 64 00 65 00 04 2f 07 42 00",
    );
    let bytes = frame_round_trip(&frame);
    let msg = MessageRepr::parse(bytes).unwrap();
    assert_eq!(msg.msg_type(), MessageType::ActiveLeasequery);
    assert_eq!(msg.xid(), Some(Xid::new(0x123456)));
    let opts: Vec<_> = msg.options.iter().collect();
    assert_eq!(
        opts,
        vec![
            DhcpOption::ClientId(Duid(&REQUESTOR_DUID)),
            DhcpOption::Oro(CodeList::from_items(&[100])),
            DhcpOption::LqStartTime(ServerTime(789_004_800)),
        ]
    );
    assert!(msg.options.requests(OptionCode::LqBaseTime));
    // The builder makes the same bytes.
    let built = MessageBuilder::active_leasequery(0x123456)
        .client_id(&REQUESTOR_DUID)
        .oro(&[OptionCode::LqBaseTime])
        .start_time(ServerTime(789_004_800))
        .build_frame()
        .unwrap();
    assert_eq!(built, frame);
}

#[test]
fn digest_15_2_reply_with_client_data() {
    let frame = h(
        "00 62 0f 12 34 56 00 02 00 0e 00 01 00 01 2f 07 7a 00 00 00 00 00 ca fe 00 01 00 0a 00 03 00 01 00 11 22 33 44 55 00 64 00 04 2f 07 44 58 00 2d 00 32 00 01 00 0a 00 03 00 01 66 77 88 99 aa bb 00 05 00 18 20 01 0d b8 00 01 00 00 00 00 00 00 00 00 01 00 00 00 0e 10 00 00 1c 20 00 2e 00 04 00 00 00 3c",
    );
    let bytes = frame_round_trip(&frame);
    let msg = MessageRepr::parse(bytes).unwrap();
    assert_eq!(msg.msg_type(), MessageType::LeasequeryReply);
    assert_eq!(msg.options.base_time(), Some(ServerTime(789_005_400)));
    assert_eq!(msg.options.status(), None);

    // Built from reprs borrowing typed items (the server's way), byte-exact.
    let client = [
        DhcpOption::ClientId(Duid(&CLIENT_DUID)),
        DhcpOption::IaAddr(IaAddr {
            address: a("2001:db8:1::100"),
            preferred_lifetime: 3600,
            valid_lifetime: 7200,
            options: Options::EMPTY,
        }),
        DhcpOption::CltTime(60),
    ];
    let top = [
        DhcpOption::ServerId(Duid(&SERVER_DUID)),
        DhcpOption::ClientId(Duid(&REQUESTOR_DUID)),
        DhcpOption::LqBaseTime(ServerTime(789_005_400)),
        DhcpOption::ClientData(Options::from_items(&client)),
    ];
    let repr = MessageRepr::new(
        MessageType::LeasequeryReply,
        Xid::new(0x123456),
        Options::from_items(&top),
    );
    assert_eq!(repr, msg);
    assert_eq!(repr.buffer_len(), 98);
    assert_eq!(emit_exact(&repr), bytes);

    // And with the builder.
    let built = MessageBuilder::reply(0x123456)
        .server_id(&SERVER_DUID)
        .client_id(&REQUESTOR_DUID)
        .base_time(ServerTime(789_005_400))
        .client_data(|c| {
            c.client_id(&CLIENT_DUID)
                .iaaddr(a("2001:db8:1::100"), 3600, 7200)
                .clt_time(60)
        })
        .build_frame()
        .unwrap();
    assert_eq!(built, frame);
}

#[test]
fn digest_15_2_iaprefix() {
    let bytes =
        h("00 1a 00 19 00 00 0e 10 00 00 1c 20 38 20 01 0d b8 ff 00 00 00 00 00 00 00 00 00 00 00");
    let (opt, used) = DhcpOption::parse(&bytes).unwrap();
    assert_eq!(used, bytes.len());
    let want = DhcpOption::IaPrefix(IaPrefix {
        preferred_lifetime: 3600,
        valid_lifetime: 7200,
        prefix_len: 56,
        prefix: a("2001:db8:ff00::"),
        options: Options::EMPTY,
    });
    assert_eq!(opt, want);
    let mut out = vec![0xa5; want.buffer_len()];
    assert_eq!(want.emit(&mut out).unwrap(), bytes.len());
    assert_eq!(out, bytes);
}

#[test]
fn digest_15_3_done_query_terminated() {
    let frame = h("00 17 10 12 34 56 00 0d 00 0f 00 0b 73 68 75 74 74 69 6e 67 20 64 6f 77 6e");
    let msg = MessageRepr::parse(frame_round_trip(&frame)).unwrap();
    assert_eq!(msg.msg_type(), MessageType::LeasequeryDone);
    let status = msg.options.status().unwrap();
    assert_eq!(status.status, Status::QueryTerminated);
    assert_eq!(status.message_lossy(), "shutting down");
    let built = MessageBuilder::done(0x123456)
        .status(Status::QueryTerminated, "shutting down")
        .build_frame()
        .unwrap();
    assert_eq!(built, frame);
}

#[test]
fn digest_15_4_keepalive_catchup_error_starttls() {
    // Idle keepalive (D2): LEASEQUERY-DATA with base-time only.
    let keepalive = h("00 0c 11 12 34 56 00 64 00 04 2f 07 44 94");
    let msg = MessageRepr::parse(frame_round_trip(&keepalive)).unwrap();
    assert_eq!(msg.msg_type(), MessageType::LeasequeryData);
    assert_eq!(msg.options.len(), 1);
    assert_eq!(msg.options.base_time(), Some(ServerTime(0x2f07_4494)));

    // CatchUpComplete with an empty text, then base-time.
    let catchup = h("00 12 11 12 34 56 00 0d 00 02 00 0d 00 64 00 04 2f 07 44 5d");
    let msg = MessageRepr::parse(frame_round_trip(&catchup)).unwrap();
    assert_eq!(
        msg.options.status(),
        Some(StatusCode::new(Status::CatchUpComplete, ""))
    );
    let built = MessageBuilder::data(0x123456)
        .status(Status::CatchUpComplete, "")
        .base_time(ServerTime(0x2f07_445d))
        .build_frame()
        .unwrap();
    assert_eq!(built, catchup);

    // The error reply to an ACTIVELEASEQUERY carrying END_TIME (D7).
    let err = h(
        "00 3e 0f 12 34 56 00 02 00 0e 00 01 00 01 2f 07 7a 00 00 00 00 00 ca fe 00 01 00 0a 00 03 00 01 00 11 22 33 44 55 00 0d 00 16 00 08 45 4e 44 5f 54 49 4d 45 20 6e 6f 74 20 61 6c 6c 6f 77 65 64",
    );
    let msg = MessageRepr::parse(frame_round_trip(&err)).unwrap();
    let status = msg.options.status().unwrap();
    assert_eq!(
        (status.status, &*status.message_lossy()),
        (Status::MalformedQuery, "END_TIME not allowed")
    );

    // STARTTLS carries no options.
    let starttls = h("00 04 17 00 00 01");
    let msg = MessageRepr::parse(frame_round_trip(&starttls)).unwrap();
    assert_eq!(msg.msg_type(), MessageType::StartTls);
    assert!(msg.options.is_empty());
}

#[test]
fn digest_15_4_bulk_by_relay_id() {
    let frame = h("00 52 0e ab cd ef
        00 01 00 0a 00 03 00 01 00 11 22 33 44 55
        00 06 00 02 00 64
        00 2c 00 26 03 00000000000000000000000000000000
        00 35 00 0b 00 02 00 00 00 09 01 02 03 04 05
        00 06 00 02 00 2f
        00 65 00 04 2f 07 42 00
        00 66 00 04 2f 07 44 58");
    let msg = MessageRepr::parse(frame_round_trip(&frame)).unwrap();
    let q = msg.options.lq_query().unwrap();
    assert_eq!(q.query_type, QueryType::ByRelayId);
    assert_eq!(q.link_address, Ipv6Addr::UNSPECIFIED);
    assert_eq!(
        q.options.iter().collect::<Vec<_>>(),
        vec![
            DhcpOption::RelayId(Duid(&[0, 2, 0, 0, 0, 9, 1, 2, 3, 4, 5])),
            DhcpOption::Oro(CodeList::from_items(&[47])),
        ]
    );
    assert!(q.options.requests(OptionCode::LqRelayData));
    // The builder: a LEASEQUERY by relay-id with ORO and START/END in a few lines.
    let built = MessageBuilder::leasequery(0xabcdef)
        .client_id(&REQUESTOR_DUID)
        .oro(&[OptionCode::LqBaseTime])
        .lq_query(QueryType::ByRelayId, Ipv6Addr::UNSPECIFIED, |q| {
            q.relay_id(&[0, 2, 0, 0, 0, 9, 1, 2, 3, 4, 5])
                .oro(&[OptionCode::LqRelayData])
        })
        .start_time(ServerTime(0x2f07_4200))
        .end_time(ServerTime(0x2f07_4458))
        .build_frame()
        .unwrap();
    assert_eq!(built, frame);
}

/// One vector per typed option, plus an unknown one: parse, compare to the repr, re-emit.
#[test]
fn every_option_kind_parses_and_emits_byte_exact() {
    let relay_fwd = h(
        "0c 00 20010db8000000000000000000000001 fe800000000000000000000000000002
                       0012 0004 65746830
                       0025 0008 00000009 01020304
                       0035 0006 0002 00000009",
    );
    let relay_fwd_repr = MessageRepr::parse(&relay_fwd).unwrap();
    let inner_query = h("0e 000001 0001 0002 0003");
    let ia_na_addrs = [DhcpOption::IaAddr(IaAddr {
        address: a("2001:db8::5"),
        preferred_lifetime: 100,
        valid_lifetime: 200,
        options: Options::EMPTY,
    })];
    let success = [DhcpOption::StatusCode(StatusCode::new(Status::Success, ""))];
    let links = [a("2001:db8::1"), a("2001:db8::2")];
    let cases: Vec<(Vec<u8>, DhcpOption<'_>)> = vec![
        (
            h("0001 0003 00 03 07"),
            DhcpOption::ClientId(Duid(&[0, 3, 7])),
        ),
        (h("0002 0002 0004"), DhcpOption::ServerId(Duid(&[0, 4]))),
        (
            h(
                "0003 0028 00000001 00000e10 00001518  0005 0018 20010db8000000000000000000000005 00000064 000000c8",
            ),
            DhcpOption::IaNa(Ia {
                iaid: 1,
                t1: 3600,
                t2: 5400,
                options: Options::from_items(&ia_na_addrs),
            }),
        ),
        (
            h("0005 001e 20010db8000000000000000000000005 ffffffff ffffffff 000d 0002 0000"),
            DhcpOption::IaAddr(IaAddr {
                address: a("2001:db8::5"),
                preferred_lifetime: u32::MAX,
                valid_lifetime: u32::MAX,
                options: Options::from_items(&success),
            }),
        ),
        (
            h("0006 0004 0064 002f"),
            DhcpOption::Oro(CodeList::from_items(&[100, 47])),
        ),
        (
            h("0009 0006 0e000001 0000"),
            DhcpOption::Unknown(RawOption {
                code: 0xffff,
                data: &[],
            }),
        ), // replaced below
        (
            h("000d 0004 000c 6f6b"),
            DhcpOption::StatusCode(StatusCode::new(Status::DataMissing, "ok")),
        ),
        (h("0012 0003 657468"), DhcpOption::InterfaceId(b"eth")),
        (
            h("0019 000c 00000002 00000000 00000000"),
            DhcpOption::IaPd(Ia {
                iaid: 2,
                t1: 0,
                t2: 0,
                options: Options::EMPTY,
            }),
        ),
        (
            h("001a 0019 00000000 00000000 40 20010db8000100000000000000000000"),
            DhcpOption::IaPrefix(IaPrefix {
                preferred_lifetime: 0,
                valid_lifetime: 0,
                prefix_len: 64,
                prefix: a("2001:db8:1::"),
                options: Options::EMPTY,
            }),
        ),
        (
            h("0025 0007 00000009 616263"),
            DhcpOption::RemoteId(RemoteId {
                enterprise_number: 9,
                remote_id: b"abc",
            }),
        ),
        (
            h("002c 0015 02 20010db8000000000000000000000001 0001 0000"),
            DhcpOption::LqQuery(LqQuery {
                query_type: QueryType::ByClientId,
                link_address: a("2001:db8::1"),
                options: Options::from_items(&[DhcpOption::ClientId(Duid(&[]))]),
            }),
        ),
        (
            h("002c 0011 09 00000000000000000000000000000000"),
            DhcpOption::LqQuery(LqQuery {
                query_type: QueryType::Unknown(9),
                link_address: Ipv6Addr::UNSPECIFIED,
                options: Options::EMPTY,
            }),
        ),
        (
            h("002d 0008 002e 0004 00000001"),
            DhcpOption::ClientData(Options::from_items(&[DhcpOption::CltTime(1)])),
        ),
        (h("002e 0004 0000003c"), DhcpOption::CltTime(60)),
        (
            h("0030 0020 20010db8000000000000000000000001 20010db8000000000000000000000002"),
            DhcpOption::LqClientLink(AddrList::from_items(&links)),
        ),
        (
            h("0035 0004 00020000"),
            DhcpOption::RelayId(Duid(&[0, 2, 0, 0])),
        ),
        (
            h("0064 0004 00000001"),
            DhcpOption::LqBaseTime(ServerTime(1)),
        ),
        (
            h("0065 0004 00000002"),
            DhcpOption::LqStartTime(ServerTime(2)),
        ),
        (
            h("0066 0004 ffffffff"),
            DhcpOption::LqEndTime(ServerTime(u32::MAX)),
        ),
        (
            h("0026 0003 010203"),
            DhcpOption::Unknown(RawOption {
                code: 38,
                data: &[1, 2, 3],
            }),
        ),
        (
            h("ff00 0000"),
            DhcpOption::Unknown(RawOption {
                code: 0xff00,
                data: &[],
            }),
        ),
    ];
    let relay_msg_bytes = {
        let mut v = h("0009");
        v.extend_from_slice(&(inner_query.len() as u16).to_be_bytes());
        v.extend_from_slice(&inner_query);
        v
    };
    let inner_repr = MessageRepr::parse(&inner_query).unwrap();
    let relay_data_bytes = {
        let mut v = h("002f");
        v.extend_from_slice(&((16 + relay_fwd.len()) as u16).to_be_bytes());
        v.extend_from_slice(&a("2001:db8::1").octets());
        v.extend_from_slice(&relay_fwd);
        v
    };
    let mut cases = cases;
    cases[5] = (
        relay_msg_bytes,
        DhcpOption::RelayMsg(Embedded::from_repr(&inner_repr)),
    );
    cases.push((
        relay_data_bytes,
        DhcpOption::LqRelayData(LqRelayData {
            peer_address: a("2001:db8::1"),
            relay_message: Embedded::from_repr(&relay_fwd_repr),
        }),
    ));
    for (bytes, want) in &cases {
        let (got, used) = DhcpOption::parse(bytes).unwrap_or_else(|e| panic!("{want:?}: {e}"));
        assert_eq!(used, bytes.len(), "{want:?}");
        assert_eq!(&got, want);
        assert_eq!(got.buffer_len(), bytes.len());
        assert_eq!(want.buffer_len(), bytes.len(), "{want:?}");
        let mut out = vec![0xa5; want.buffer_len()];
        assert_eq!(want.emit(&mut out).unwrap(), bytes.len());
        assert_eq!(&out, bytes, "{want:?}");
        let mut out = vec![0xa5; got.buffer_len()];
        got.emit(&mut out).unwrap();
        assert_eq!(&out, bytes);
    }
    let codes: std::collections::BTreeSet<u16> =
        cases.iter().map(|(_, o)| o.code().value()).collect();
    for code in [
        1, 2, 3, 5, 6, 9, 13, 18, 25, 26, 37, 44, 45, 46, 47, 48, 53, 100, 101, 102,
    ] {
        assert!(codes.contains(&code), "no vector for option {code}");
    }
    // The relay chain's options are typed through the nesting.
    let DhcpOption::LqRelayData(rd) = &cases.last().unwrap().1 else {
        unreachable!()
    };
    let chain = rd.relay_message.message().unwrap();
    assert_eq!(
        chain.header,
        Header::Relay {
            msg_type: MessageType::RelayForw,
            hop_count: 0,
            link_address: a("2001:db8::1"),
            peer_address: a("fe80::2"),
        }
    );
    assert!(chain.options.iter().any(|o| o
        == DhcpOption::RemoteId(RemoteId {
            enterprise_number: 9,
            remote_id: &[1, 2, 3, 4]
        })));
}

#[test]
fn fixed_sizes_are_exact() {
    // digest §17.2: wrong lengths are errors naming the option.
    for (bytes, code, kind) in [
        (h("002e 0003 000000"), 46, ErrorKind::BadLength),
        (h("002e 0005 0000000000"), 46, ErrorKind::BadLength),
        (h("0064 0002 0000"), 100, ErrorKind::BadLength),
        (h("0065 0000"), 101, ErrorKind::BadLength),
        (h("0066 0008 0000000000000000"), 102, ErrorKind::BadLength),
        (
            h(
                "0030 0010 00000000000000000000000000000000 0030 000f 000000000000000000000000000000",
            ),
            48,
            ErrorKind::BadLength,
        ),
        (h("0006 0003 006400"), 6, ErrorKind::BadLength),
        (h("000d 0001 00"), 13, ErrorKind::BadLength),
        (
            h("002c 0010 01 000000000000000000000000000000"),
            44,
            ErrorKind::BadLength,
        ),
        (
            h("002f 000f 000000000000000000000000000000"),
            47,
            ErrorKind::BadLength,
        ),
        (
            h("0005 0017 0000000000000000000000000000000000000000000000"),
            5,
            ErrorKind::BadLength,
        ),
        (
            h("001a 0018 000000000000000000000000000000000000000000000000"),
            26,
            ErrorKind::BadLength,
        ),
        (
            h("001a 0019 00000000 00000000 81 00000000000000000000000000000000"),
            26,
            ErrorKind::BadValue,
        ),
        (
            h("0003 000b 0000000000000000000000"),
            3,
            ErrorKind::BadLength,
        ),
        (h("0025 0003 000000"), 37, ErrorKind::BadLength),
        (h("0009 0003 0e0000"), 9, ErrorKind::TooShort),
        (
            h("0009 0020 0c00000000000000000000000000000000000000000000000000000000000000"),
            9,
            ErrorKind::TooShort,
        ),
    ] {
        let mut msg = h("0f 000001");
        msg.extend_from_slice(&bytes);
        let err = MessageRepr::parse(&msg).unwrap_err();
        assert_eq!(
            (err.kind(), err.option()),
            (kind, Some(code)),
            "{}",
            hex::encode(&bytes)
        );
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn nested_lists_must_fill_their_container() {
    // CLIENT_DATA of 9 octets holding a CLT_TIME (8) and one stray octet.
    let msg = h("11 000001 002d 0009 002e 0004 00000001 00");
    let err = MessageRepr::parse(&msg).unwrap_err();
    assert_eq!((err.kind(), err.option()), (ErrorKind::Truncated, Some(45)));
    // An IAADDR whose sub-option overruns it.
    let msg = h("11 000001 0005 001d 20010db8000000000000000000000005 00000064 000000c8 000d 0002");
    assert_eq!(MessageRepr::parse(&msg).unwrap_err().option(), Some(5));
    // A top-level option running past the end of the message.
    let msg = h("11 000001 002e 0004 0000");
    assert_eq!(
        MessageRepr::parse(&msg).unwrap_err().kind(),
        ErrorKind::Truncated
    );
    // A lone trailing octet.
    let msg = h("11 000001 00");
    assert_eq!(
        MessageRepr::parse(&msg).unwrap_err().kind(),
        ErrorKind::Truncated
    );
    // A relay message shorter than its header.
    assert_eq!(
        MessageRepr::parse(&h("0c 00 0000")).unwrap_err().kind(),
        ErrorKind::TooShort
    );
    assert_eq!(
        MessageRepr::parse(&h("0e 0000")).unwrap_err().kind(),
        ErrorKind::TooShort
    );
    assert_eq!(
        MessageRepr::parse(&[]).unwrap_err().kind(),
        ErrorKind::TooShort
    );
}

#[test]
fn unknown_message_types_and_codes_pass_through() {
    let msg = h("63 010203 1234 0002 abcd 000d 0002 0063");
    let repr = MessageRepr::parse(&msg).unwrap();
    assert_eq!(repr.msg_type(), MessageType::Unknown(0x63));
    let opts: Vec<_> = repr.options.iter().collect();
    assert_eq!(
        opts[0],
        DhcpOption::Unknown(RawOption {
            code: 0x1234,
            data: &[0xab, 0xcd]
        })
    );
    assert_eq!(
        opts[1],
        DhcpOption::StatusCode(StatusCode {
            status: Status::Unknown(99),
            message: &[]
        })
    );
    assert_eq!(emit_exact(&repr), msg);
}

#[test]
fn nesting_depth_is_bounded() {
    // CLIENT_DATA inside CLIENT_DATA, 200 deep: rejected as TooDeep, not a stack overflow.
    let mut body: Vec<u8> = Vec::new();
    for _ in 0..200 {
        let mut outer = h("002d");
        outer.extend_from_slice(&(body.len() as u16).to_be_bytes());
        outer.extend_from_slice(&body);
        body = outer;
    }
    let mut msg = h("11 000001");
    msg.extend_from_slice(&body);
    assert_eq!(
        MessageRepr::parse(&msg).unwrap_err().kind(),
        ErrorKind::TooDeep
    );

    // A 32-hop relay chain (HOP_COUNT_LIMIT) is accepted.
    let mut inner = h("0e 000001");
    for hop in 0..32u8 {
        let mut relay = vec![12, hop];
        relay.extend_from_slice(&[0; 32]);
        relay.extend_from_slice(&h("0009"));
        relay.extend_from_slice(&(inner.len() as u16).to_be_bytes());
        relay.extend_from_slice(&inner);
        inner = relay;
    }
    let repr = MessageRepr::parse(&inner).unwrap();
    assert_eq!(emit_exact(&repr), inner);
}

#[test]
fn emit_rejects_overlong_and_mismatched() {
    let big = vec![0u8; 70_000];
    let opts = [DhcpOption::InterfaceId(&big)];
    let repr = MessageRepr::new(
        MessageType::LeasequeryReply,
        Xid::new(1),
        Options::from_items(&opts),
    );
    let mut buf = vec![0; repr.buffer_len()];
    let err = repr.emit(&mut buf).unwrap_err();
    assert_eq!((err.kind(), err.option()), (ErrorKind::TooLong, Some(18)));
    assert_eq!(
        MessageBuilder::reply(1)
            .raw(18, &big)
            .build()
            .unwrap_err()
            .kind(),
        ErrorKind::TooLong
    );

    let bad = MessageRepr::new(MessageType::RelayForw, Xid::new(1), Options::EMPTY);
    assert_eq!(
        bad.emit(&mut [0; 64]).unwrap_err().kind(),
        ErrorKind::HeaderMismatch
    );
    let opts = [DhcpOption::IaPrefix(IaPrefix {
        preferred_lifetime: 0,
        valid_lifetime: 0,
        prefix_len: 129,
        prefix: Ipv6Addr::UNSPECIFIED,
        options: Options::EMPTY,
    })];
    let repr = MessageRepr::new(
        MessageType::LeasequeryData,
        Xid::new(1),
        Options::from_items(&opts),
    );
    assert_eq!(
        repr.emit(&mut [0; 64]).unwrap_err().kind(),
        ErrorKind::BadValue
    );
    // A parsed (wire) list whose size is known up front still may not overflow its container.
    let mut many = Vec::new();
    while many.len() < 65_520 {
        many.extend_from_slice(&h("ff00 0000"));
    }
    let parsed = Options::parse(&many).unwrap();
    let opts = [DhcpOption::IaAddr(IaAddr {
        address: Ipv6Addr::UNSPECIFIED,
        preferred_lifetime: 0,
        valid_lifetime: 0,
        options: parsed,
    })];
    let repr = MessageRepr::new(
        MessageType::LeasequeryData,
        Xid::new(1),
        Options::from_items(&opts),
    );
    let mut buf = vec![0; repr.buffer_len()];
    let err = repr.emit(&mut buf).unwrap_err();
    assert_eq!((err.kind(), err.option()), (ErrorKind::TooLong, Some(5)));
    // A frame cannot hold more than 65535 octets.
    assert_eq!(frame_header(65_536).unwrap_err().kind(), ErrorKind::TooLong);
    assert_eq!(frame_header(65_535).unwrap(), [0xff, 0xff]);
}

#[test]
fn frame_decoder_tells_incomplete_from_malformed() {
    let f1 = h("00 04 17 00 00 01");
    let f2 = h("00 0c 11 12 34 56 00 64 00 04 2f 07 44 94");
    let mut stream = f1.clone();
    stream.extend_from_slice(&f2);

    // Every split point: feeding byte prefixes yields Incomplete until whole, never an error.
    for cut in 0..stream.len() {
        let mut dec = FrameDecoder::default();
        let mut frames = Vec::new();
        let mut pos = 0;
        let mut avail = cut;
        loop {
            match dec.decode(&stream[pos..avail]).unwrap() {
                Decoded::Frame { message, consumed } => {
                    frames.push(message.to_vec());
                    pos += consumed;
                }
                Decoded::Incomplete { needed } => {
                    assert!(needed > avail - pos);
                    if avail == stream.len() {
                        break;
                    }
                    avail = stream.len();
                }
            }
        }
        assert_eq!(
            frames,
            vec![f1[2..].to_vec(), f2[2..].to_vec()],
            "cut at {cut}"
        );
    }

    let mut dec = FrameDecoder::default();
    assert_eq!(dec.decode(&[0]).unwrap(), Decoded::Incomplete { needed: 2 });
    assert_eq!(
        dec.decode(&[0, 12, 0x11]).unwrap(),
        Decoded::Incomplete { needed: 14 }
    );
    // Below 4 octets is malformed (D24).
    for len in 0..4u8 {
        assert_eq!(
            FrameDecoder::default()
                .decode(&[0, len, 1, 2, 3])
                .unwrap_err()
                .kind(),
            ErrorKind::TooShort
        );
    }
    // Over the configured limit: rejected from the prefix alone, before any body arrives.
    assert_eq!(
        FrameDecoder::new(1024)
            .decode(&[0x04, 0x01])
            .unwrap_err()
            .kind(),
        ErrorKind::FrameTooLong
    );
    assert!(matches!(
        FrameDecoder::new(1024).decode(&[0x04, 0x00]),
        Ok(Decoded::Incomplete { needed: 1026 })
    ));
}

#[test]
fn frame_decoder_over_bytes_mut() {
    let mut dec = FrameDecoder::default();
    let mut buf = bytes::BytesMut::new();
    buf.extend_from_slice(&h("00 04 17 00 00 01 00 0c 11 12"));
    assert_eq!(
        dec.decode_buf(&mut buf).unwrap().as_deref(),
        Some(&h("17 00 00 01")[..])
    );
    assert_eq!(dec.decode_buf(&mut buf).unwrap(), None);
    buf.extend_from_slice(&h("34 56 00 64 00 04 2f 07 44 94"));
    assert_eq!(
        dec.decode_buf(&mut buf).unwrap().as_deref(),
        Some(&h("11 12 34 56 00 64 00 04 2f 07 44 94")[..])
    );
    assert!(buf.is_empty());
}

#[test]
fn set_xid_reuses_one_encoding() {
    // Encode once, patch the xid per session (architecture, core idea 4).
    let mut bytes = MessageBuilder::data(1)
        .base_time(ServerTime(5))
        .build()
        .unwrap();
    for xid in [2u32, 0xabcdef, 0xffffff] {
        Message::new_checked(&mut bytes[..])
            .unwrap()
            .set_xid(Xid::new(xid));
        assert_eq!(
            MessageRepr::parse(&bytes).unwrap().xid(),
            Some(Xid::new(xid))
        );
    }
}

#[test]
fn builder_reports_invalid_nested_input() {
    assert_eq!(
        MessageBuilder::reply(1)
            .relay_data(Ipv6Addr::UNSPECIFIED, &[1, 2])
            .build()
            .unwrap_err()
            .kind(),
        ErrorKind::TooShort
    );
    assert_eq!(
        MessageBuilder::reply(1)
            .client_data(|c| c.iaprefix(Ipv6Addr::UNSPECIFIED, 200, 0, 0))
            .build()
            .unwrap_err()
            .kind(),
        ErrorKind::BadValue
    );
    assert_eq!(
        MessageBuilder::new(MessageType::RelayForw, 1)
            .build()
            .unwrap_err()
            .kind(),
        ErrorKind::HeaderMismatch
    );
    let relay = MessageBuilder::relay(MessageType::RelayForw, 0, a("2001:db8::1"), a("fe80::1"))
        .relay_msg(&MessageBuilder::leasequery(7).build().unwrap())
        .build()
        .unwrap();
    let repr = MessageRepr::parse(&relay).unwrap();
    let Some(DhcpOption::RelayMsg(inner)) = repr.options.get(OptionCode::RelayMsg) else {
        panic!()
    };
    assert_eq!(inner.message().unwrap().xid(), Some(Xid::new(7)));
}

#[test]
fn walk_visits_every_option_depth_first() {
    let relay = MessageBuilder::relay(MessageType::RelayForw, 0, a("2001:db8::1"), a("fe80::1"))
        .raw(18, b"eth0")
        .remote_id(9, b"x")
        .build()
        .unwrap();
    let msg = MessageBuilder::data(1)
        .client_data(|c| {
            c.client_id(&CLIENT_DUID)
                .option(DhcpOption::IaAddr(IaAddr {
                    address: a("2001:db8::5"),
                    preferred_lifetime: 1,
                    valid_lifetime: 2,
                    options: Options::from_items(&[DhcpOption::StatusCode(StatusCode::new(
                        Status::Success,
                        "",
                    ))]),
                }))
                .relay_data(a("2001:db8::1"), &relay)
        })
        .base_time(ServerTime(7))
        .build()
        .unwrap();
    let repr = MessageRepr::parse(&msg).unwrap();
    let mut seen = Vec::new();
    repr.options
        .walk(&mut |depth, o| seen.push((depth, o.code_value())));
    assert_eq!(
        seen,
        vec![
            (0, 45),
            (1, 1),
            (1, 5),
            (2, 13),
            (1, 47),
            (2, 18),
            (2, 37),
            (0, 100)
        ]
    );
    assert_eq!(DhcpOption::CltTime(1).nested(), None);
}
