//! Codec throughput, side by side with dhcproto 0.15.0 on the same bytes.
//!
//! Two messages, each parsed and emitted by both codecs:
//!
//! - a Bulk LEASEQUERY by relay-id (digest §15.4): CLIENT_ID, a top-level ORO, OPTION_LQ_QUERY
//!   with RELAY_ID and an inner ORO, LQ_START_TIME and LQ_END_TIME (82 octets);
//! - a LEASEQUERY-DATA carrying one CLIENT_DATA (CLIENT_ID, IAADDR, IAPREFIX, CLT_TIME) and
//!   LQ_BASE_TIME (95 octets).
//!
//! Both messages are in ascending option-code order, so dhcproto (which sorts options by code)
//! re-encodes them to the identical bytes; the setup checks that every side produces the same
//! bytes before measuring.
//!
//! What "parse" means on each side, so the work is comparable:
//!
//! - lqd: `MessageRepr::parse` (which validates the whole message, nested lists included),
//!   then a walk that types every option, recursing into LQ_QUERY's and CLIENT_DATA's lists
//!   and reading every field into a checksum.
//! - dhcproto: `Message::decode` (which allocates a typed tree), then decoding the nested
//!   option lists that it keeps as opaque blobs (LQ_QUERY's query-options, CLIENT_DATA) with
//!   its own `DhcpOptions::decode`, and the same kind of checksum walk over its tree.
//!
//! "Emit", in two pairs:
//!
//! - headline (`emit_*/lqd` vs `emit_*/dhcproto`): each side builds the message from its typed
//!   values. lqd emits a `MessageRepr` built with `List::from_items` (how the server builds its
//!   replies) into a reused buffer. dhcproto has no types for LQ_QUERY or CLIENT_DATA, so its
//!   user encodes the nested typed list into a blob, puts it in the message and encodes the
//!   message into a reused `Vec`: that is what it costs a dhcproto-based server to make a
//!   fresh reply.
//! - re-encoding what was decoded (`emit_*/lqd_reemit` vs `emit_*/dhcproto_reencode`): lqd
//!   emits the repr it parsed (nested lists are checked wire bytes, copied), dhcproto encodes
//!   the message it decoded (nested lists are opaque blobs, copied).
//!
//! Two extra rows help read the parse figures: `parse_*/lqd_validate_only` is
//! `MessageRepr::parse` alone (validation, without typing the options afterwards), and
//! `parse_*/lqd_iterate_only` adds iterating every option without reading its fields.
//!
//! Run with `cargo bench --bench codec`; each benchmark is short (1 s warm-up, 3 s measuring,
//! 30 samples) so the whole run takes about a minute.

use std::hint::black_box;
use std::net::Ipv6Addr;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use dhcproto::v6 as dp;
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use lqd::codec::{
    DhcpOption, Duid, IaAddr, IaPrefix, List, LqQuery, MessageRepr, MessageType, Options,
    QueryType, ServerTime, Xid,
};

/// The requestor's DUID-LL (digest §15).
const REQUESTOR_DUID: [u8; 10] = [0, 3, 0, 1, 0, 0x11, 0x22, 0x33, 0x44, 0x55];
/// The client's DUID-LL.
const CLIENT_DUID: [u8; 10] = [0, 3, 0, 1, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb];
/// A relay agent's DUID-EN.
const RELAY_DUID: [u8; 11] = [0, 2, 0, 0, 0, 9, 1, 2, 3, 4, 5];

/// Digest §15.4, the Bulk LEASEQUERY by relay-id (82 octets).
const LEASEQUERY: [u8; 82] = [
    0x0e, 0xab, 0xcd, 0xef, // LEASEQUERY, xid
    0x00, 0x01, 0x00, 0x0a, 0x00, 0x03, 0x00, 0x01, 0x00, 0x11, 0x22, 0x33, 0x44,
    0x55, // CLIENTID
    0x00, 0x06, 0x00, 0x02, 0x00, 0x64, // ORO: LQ_BASE_TIME
    0x00, 0x2c, 0x00, 0x26, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // LQ_QUERY
    0x00, 0x35, 0x00, 0x0b, 0x00, 0x02, 0x00, 0x00, 0x00, 0x09, 0x01, 0x02, 0x03, 0x04,
    0x05, // RELAY_ID
    0x00, 0x06, 0x00, 0x02, 0x00, 0x2f, // ORO: LQ_RELAY_DATA
    0x00, 0x65, 0x00, 0x04, 0x2f, 0x07, 0x42, 0x00, // LQ_START_TIME
    0x00, 0x66, 0x00, 0x04, 0x2f, 0x07, 0x44, 0x58, // LQ_END_TIME
];

fn addr(s: &str) -> Ipv6Addr {
    s.parse().expect("address")
}

// ---------------------------------------------------------------------------------------------
// The parse walks: read every field of every option, recursively, into a checksum.

fn sum_addr(a: Ipv6Addr) -> u64 {
    let o = a.octets();
    u64::from_be_bytes([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
        ^ u64::from_be_bytes([o[8], o[9], o[10], o[11], o[12], o[13], o[14], o[15]])
}

/// Touches a byte string the way a consumer holding it would (its length and both ends),
/// without a per-byte loop that would cost the same on both sides and hide the codecs' cost.
fn sum_bytes(b: &[u8]) -> u64 {
    let ends =
        u64::from(b.first().copied().unwrap_or(0)) ^ u64::from(b.last().copied().unwrap_or(0));
    (b.len() as u64).wrapping_add(ends)
}

/// lqd: types every option (the parse has already validated the bytes).
fn walk_ours(opts: Options<'_>) -> u64 {
    let mut acc = 0u64;
    for o in opts.iter() {
        let v = match o {
            DhcpOption::ClientId(d) | DhcpOption::ServerId(d) | DhcpOption::RelayId(d) => {
                sum_bytes(d.as_bytes())
            }
            DhcpOption::IaNa(ia) | DhcpOption::IaPd(ia) => {
                u64::from(ia.iaid ^ ia.t1 ^ ia.t2).wrapping_add(walk_ours(ia.options))
            }
            DhcpOption::IaAddr(x) => sum_addr(x.address)
                .wrapping_add(u64::from(x.preferred_lifetime ^ x.valid_lifetime))
                .wrapping_add(walk_ours(x.options)),
            DhcpOption::IaPrefix(p) => sum_addr(p.prefix)
                .wrapping_add(u64::from(p.preferred_lifetime ^ p.valid_lifetime))
                .wrapping_add(u64::from(p.prefix_len))
                .wrapping_add(walk_ours(p.options)),
            DhcpOption::Oro(l) => l.iter().map(u64::from).sum(),
            DhcpOption::RelayMsg(e) => e.message().map_or(0, |m| walk_ours(m.options)),
            DhcpOption::StatusCode(s) => {
                u64::from(s.status.value()).wrapping_add(sum_bytes(s.message))
            }
            DhcpOption::InterfaceId(b) => sum_bytes(b),
            DhcpOption::RemoteId(r) => {
                u64::from(r.enterprise_number).wrapping_add(sum_bytes(r.remote_id))
            }
            DhcpOption::LqQuery(q) => u64::from(q.query_type.value())
                .wrapping_add(sum_addr(q.link_address))
                .wrapping_add(walk_ours(q.options)),
            DhcpOption::ClientData(l) => walk_ours(l),
            DhcpOption::CltTime(v) => u64::from(v),
            DhcpOption::LqRelayData(r) => sum_addr(r.peer_address).wrapping_add(
                r.relay_message
                    .message()
                    .map_or(0, |m| walk_ours(m.options)),
            ),
            DhcpOption::LqClientLink(l) => l.iter().map(sum_addr).sum(),
            DhcpOption::LqBaseTime(t) | DhcpOption::LqStartTime(t) | DhcpOption::LqEndTime(t) => {
                u64::from(t.0)
            }
            DhcpOption::Unknown(raw) => sum_bytes(raw.data),
            _ => 0,
        };
        acc = acc.wrapping_add(u64::from(o.code_value())).wrapping_add(v);
    }
    acc
}

fn parse_ours(bytes: &[u8]) -> u64 {
    let msg = MessageRepr::parse(bytes).expect("lqd parses the benchmark message");
    u64::from(msg.msg_type().value())
        .wrapping_add(u64::from(msg.xid().map_or(0, Xid::value)))
        .wrapping_add(walk_ours(msg.options))
}

/// dhcproto: walks its tree, decoding the nested lists it keeps as blobs.
fn walk_dp(opts: &dp::DhcpOptions) -> u64 {
    let mut acc = 0u64;
    for o in opts.iter() {
        let v = match o {
            dp::DhcpOption::ClientId(d) | dp::DhcpOption::ServerId(d) => sum_bytes(d),
            dp::DhcpOption::IANA(ia) => {
                u64::from(ia.id ^ ia.t1 ^ ia.t2).wrapping_add(walk_dp(&ia.opts))
            }
            dp::DhcpOption::IAPD(ia) => {
                u64::from(ia.id ^ ia.t1 ^ ia.t2).wrapping_add(walk_dp(&ia.opts))
            }
            dp::DhcpOption::IAAddr(x) => sum_addr(x.addr)
                .wrapping_add(u64::from(x.preferred_life ^ x.valid_life))
                .wrapping_add(walk_dp(&x.opts)),
            dp::DhcpOption::IAPrefix(p) => sum_addr(p.prefix_ip)
                .wrapping_add(u64::from(p.preferred_lifetime ^ p.valid_lifetime))
                .wrapping_add(u64::from(p.prefix_len))
                .wrapping_add(walk_dp(&p.opts)),
            dp::DhcpOption::ORO(l) => l.opts.iter().map(|c| u64::from(u16::from(*c))).sum(),
            dp::DhcpOption::StatusCode(s) => {
                u64::from(u16::from(s.status)).wrapping_add(sum_bytes(s.msg.as_bytes()))
            }
            dp::DhcpOption::Unknown(u) => {
                let data = u.data();
                match u16::from(u.code()) {
                    // LQ_QUERY: query-type, link-address, then an option list.
                    44 if data.len() >= 17 => {
                        let nested = dp::DhcpOptions::decode(&mut Decoder::new(&data[17..]))
                            .expect("dhcproto decodes the query-options");
                        let link: [u8; 16] = data[1..17].try_into().expect("16 octets");
                        u64::from(data[0])
                            .wrapping_add(sum_addr(Ipv6Addr::from(link)))
                            .wrapping_add(walk_dp(&nested))
                    }
                    // CLIENT_DATA: an option list.
                    45 => {
                        let nested = dp::DhcpOptions::decode(&mut Decoder::new(data))
                            .expect("dhcproto decodes CLIENT_DATA");
                        walk_dp(&nested)
                    }
                    // CLT_TIME, LQ_BASE_TIME, LQ_START_TIME, LQ_END_TIME: a u32.
                    46 | 100..=102 => {
                        u64::from(u32::from_be_bytes(data.try_into().expect("4 octets")))
                    }
                    _ => sum_bytes(data),
                }
            }
            _ => 0,
        };
        acc = acc
            .wrapping_add(u64::from(u16::from(dp::OptionCode::from(o))))
            .wrapping_add(v);
    }
    acc
}

fn parse_dp(bytes: &[u8]) -> u64 {
    let msg = dp::Message::decode(&mut Decoder::new(bytes)).expect("dhcproto decodes");
    u64::from(u8::from(msg.msg_type()))
        .wrapping_add(u64::from(msg.xid_num()))
        .wrapping_add(walk_dp(msg.opts()))
}

// ---------------------------------------------------------------------------------------------

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .configure_from_args()
}

fn dp_encode(msg: &dp::Message, out: &mut Vec<u8>) {
    out.clear();
    msg.encode(&mut Encoder::new(out))
        .expect("dhcproto encodes");
}

fn main() {
    let mut c = config();

    // The LEASEQUERY from typed items.
    let query_opts = [
        DhcpOption::RelayId(Duid(&RELAY_DUID)),
        DhcpOption::Oro(List::from_items(&[47])),
    ];
    let top_query = [
        DhcpOption::ClientId(Duid(&REQUESTOR_DUID)),
        DhcpOption::Oro(List::from_items(&[100])),
        DhcpOption::LqQuery(LqQuery {
            query_type: QueryType::ByRelayId,
            link_address: Ipv6Addr::UNSPECIFIED,
            options: List::from_items(&query_opts),
        }),
        DhcpOption::LqStartTime(ServerTime(789_004_800)),
        DhcpOption::LqEndTime(ServerTime(789_005_400)),
    ];
    let query_repr = MessageRepr::new(
        MessageType::Leasequery,
        Xid::new(0xabcdef),
        List::from_items(&top_query),
    );

    // The LEASEQUERY-DATA from typed items.
    let client = [
        DhcpOption::ClientId(Duid(&CLIENT_DUID)),
        DhcpOption::IaAddr(IaAddr {
            address: addr("2001:db8:1::100"),
            preferred_lifetime: 3600,
            valid_lifetime: 7200,
            options: Options::EMPTY,
        }),
        DhcpOption::IaPrefix(IaPrefix {
            preferred_lifetime: 3600,
            valid_lifetime: 7200,
            prefix_len: 56,
            prefix: addr("2001:db8:ff00::"),
            options: Options::EMPTY,
        }),
        DhcpOption::CltTime(60),
    ];
    let top_data = [
        DhcpOption::ClientData(List::from_items(&client)),
        DhcpOption::LqBaseTime(ServerTime(789_005_400)),
    ];
    let data_repr = MessageRepr::new(
        MessageType::LeasequeryData,
        Xid::new(0x123456),
        List::from_items(&top_data),
    );
    let mut data_bytes = Vec::new();
    data_repr.emit_to_vec(&mut data_bytes).expect("emit");
    let data_bytes = data_bytes;

    // Same bytes on every side before measuring anything.
    let mut ours_buf = [0u8; 512];
    let n = query_repr.emit(&mut ours_buf).expect("emit");
    assert_eq!(&ours_buf[..n], &LEASEQUERY[..], "lqd LEASEQUERY bytes");
    let dp_query = dp::Message::decode(&mut Decoder::new(&LEASEQUERY)).expect("decode");
    let dp_data = dp::Message::decode(&mut Decoder::new(&data_bytes)).expect("decode");
    let mut dp_buf = Vec::with_capacity(512);
    dp_encode(&dp_query, &mut dp_buf);
    assert_eq!(dp_buf, LEASEQUERY, "dhcproto LEASEQUERY bytes");
    dp_encode(&dp_data, &mut dp_buf);
    assert_eq!(dp_buf, data_bytes, "dhcproto LEASEQUERY-DATA bytes");
    assert_eq!(data_bytes.len(), 95);
    // Both parses read the same values: their checksums agree.
    assert_eq!(
        parse_ours(&LEASEQUERY),
        parse_dp(&LEASEQUERY),
        "LEASEQUERY checksum"
    );
    assert_eq!(
        parse_ours(&data_bytes),
        parse_dp(&data_bytes),
        "DATA checksum"
    );

    // dhcproto building the nested lists it has no types for: encode the typed nested list
    // into a blob on every call, as a dhcproto user emitting a fresh reply must.
    let mut dp_query_typed = dp_query.clone();
    dp_query_typed.opts_mut().remove(dp::OptionCode::LqQuery);
    let dp_query_nested: dp::DhcpOptions = [
        dp::DhcpOption::Unknown(dp::UnknownOption::new(
            dp::OptionCode::RelayId,
            RELAY_DUID.to_vec(),
        )),
        dp::DhcpOption::ORO(dp::ORO {
            opts: vec![dp::OptionCode::LqRelayData],
        }),
    ]
    .into_iter()
    .collect();
    let mut dp_data_typed = dp_data.clone();
    dp_data_typed.opts_mut().remove(dp::OptionCode::ClientData);
    let dp_data_nested =
        dp::DhcpOptions::decode(&mut Decoder::new(&data_bytes[8..87])).expect("decode CLIENT_DATA");
    assert_eq!(&data_bytes[4..8], &[0, 45, 0, 79]);
    // The LQ_QUERY prefix (query-type 3, link-address ::) and the CLIENT_DATA prefix (none).
    let mut query_prefix = vec![3u8];
    query_prefix.extend_from_slice(&Ipv6Addr::UNSPECIFIED.octets());
    // Note: dhcproto sorts the nested list by code, so the relay-id query-options come out
    // as ORO, RELAY_ID; the bytes differ from LEASEQUERY only in that order.
    let mut nested_buf = Vec::with_capacity(256);
    let mut encode_nested = |msg: &mut dp::Message,
                             code: dp::OptionCode,
                             prefix: &[u8],
                             nested: &dp::DhcpOptions,
                             out: &mut Vec<u8>| {
        nested_buf.clear();
        nested
            .encode(&mut Encoder::new(&mut nested_buf))
            .expect("encode nested");
        let mut blob = Vec::with_capacity(prefix.len() + nested_buf.len());
        blob.extend_from_slice(prefix);
        blob.extend_from_slice(&nested_buf);
        msg.opts_mut()
            .insert(dp::DhcpOption::Unknown(dp::UnknownOption::new(code, blob)));
        dp_encode(msg, out);
        msg.opts_mut().remove(code);
    };
    encode_nested(
        &mut dp_data_typed,
        dp::OptionCode::ClientData,
        &[],
        &dp_data_nested,
        &mut dp_buf,
    );
    assert_eq!(dp_buf, data_bytes, "dhcproto typed LEASEQUERY-DATA bytes");
    encode_nested(
        &mut dp_query_typed,
        dp::OptionCode::LqQuery,
        &query_prefix,
        &dp_query_nested,
        &mut dp_buf,
    );
    assert_eq!(
        dp_buf.len(),
        LEASEQUERY.len(),
        "dhcproto typed LEASEQUERY length"
    );

    let cases: [(&str, &[u8], &MessageRepr<'_>, &dp::Message); 2] = [
        ("leasequery", &LEASEQUERY, &query_repr, &dp_query),
        ("leasequery_data", &data_bytes, &data_repr, &dp_data),
    ];

    for (name, bytes, _, _) in cases {
        let mut g = c.benchmark_group(format!("parse_{name}"));
        g.throughput(Throughput::Elements(1));
        g.bench_function("lqd", |b| b.iter(|| parse_ours(black_box(bytes))));
        g.bench_function("dhcproto", |b| b.iter(|| parse_dp(black_box(bytes))));
        // For the profile: parse, then iterate every option (into CLIENT_DATA) without reading
        // any field, to separate the cost of decoding from the cost of the checksum walk.
        g.bench_function("lqd_iterate_only", |b| {
            b.iter(|| {
                let msg = MessageRepr::parse(black_box(bytes)).expect("parse");
                let mut n = 0usize;
                for o in msg.options.iter() {
                    n += 1;
                    if let DhcpOption::ClientData(l) = o {
                        n += l.iter().count();
                    }
                }
                n
            })
        });
        // For the profile: our validation alone, without typing the options afterwards.
        g.bench_function("lqd_validate_only", |b| {
            b.iter(|| MessageRepr::parse(black_box(bytes)).map(|m| m.options.buffer_len()))
        });
        g.finish();
    }

    let typed: [(&mut dp::Message, dp::OptionCode, &[u8], &dp::DhcpOptions); 2] = [
        (
            &mut dp_query_typed,
            dp::OptionCode::LqQuery,
            &query_prefix,
            &dp_query_nested,
        ),
        (
            &mut dp_data_typed,
            dp::OptionCode::ClientData,
            &[],
            &dp_data_nested,
        ),
    ];
    for ((name, bytes, repr, dp_msg), (typed_msg, code, prefix, nested)) in
        cases.into_iter().zip(typed)
    {
        let mut g = c.benchmark_group(format!("emit_{name}"));
        g.throughput(Throughput::Elements(1));
        // Headline: each side builds the message from its typed values, nested lists included
        // (how a server makes a fresh reply).
        g.bench_function("lqd", |b| {
            b.iter(|| {
                black_box(repr)
                    .emit(black_box(&mut ours_buf))
                    .expect("emit")
            });
        });
        g.bench_function("dhcproto", |b| {
            b.iter(|| {
                encode_nested(typed_msg, code, prefix, black_box(nested), &mut dp_buf);
                black_box(dp_buf.len())
            });
        });
        // Second pair: each side re-encodes what it decoded. dhcproto's decoded message holds
        // the leasequery lists as opaque blobs, and lqd's parsed repr holds them as checked
        // wire bytes, so both copy the nested lists.
        let parsed = MessageRepr::parse(bytes).expect("parse");
        g.bench_function("lqd_reemit", |b| {
            b.iter(|| {
                black_box(&parsed)
                    .emit(black_box(&mut ours_buf))
                    .expect("emit")
            });
        });
        g.bench_function("dhcproto_reencode", |b| {
            b.iter(|| {
                dp_encode(black_box(dp_msg), &mut dp_buf);
                black_box(dp_buf.len())
            });
        });
        g.finish();
    }

    c.final_summary();
}
