//! Parsing allocates nothing: a counting global allocator watches `MessageRepr::parse`, option
//! iteration (nested lists and embedded messages included), the raw views and the frame decoder.
//!
//! It runs without libtest's harness (`harness = false` in Cargo.toml), as a plain program with
//! one thread, so that nothing else allocates while it measures.

use std::alloc::System;
use std::hint::black_box;
use std::net::Ipv6Addr;

use lqd::codec::{
    BuildOptions, Decoded, DhcpOption, FrameDecoder, Message, MessageBuilder, MessageRepr,
    MessageType, OptionCode, Options, QueryType, ServerTime, Status,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Visits every option at every depth (and every item of ORO, LQ_CLIENT_LINK and status
/// text), returning how many it saw.
fn walk(opts: &Options<'_>) -> usize {
    let mut n = 0usize;
    opts.walk(&mut |_, o| {
        n += 1 + match o {
            DhcpOption::Oro(l) => l.iter().count(),
            DhcpOption::LqClientLink(l) => l.iter().count(),
            DhcpOption::StatusCode(s) => s.message.len(),
            _ => 0,
        };
    });
    n
}

fn samples() -> Vec<Vec<u8>> {
    let a = |s: &str| s.parse::<Ipv6Addr>().unwrap();
    let duid = [0u8, 3, 0, 1, 0, 0x11, 0x22, 0x33, 0x44, 0x55];
    let relay_chain =
        MessageBuilder::relay(MessageType::RelayForw, 0, a("2001:db8:1::1"), a("fe80::1"))
            .raw(18, b"eth0")
            .remote_id(9, b"circuit-7")
            .relay_id(&[0, 2, 0, 0, 0, 9, 1])
            .build()
            .unwrap();
    vec![
        MessageBuilder::leasequery(0xabcdef)
            .client_id(&duid)
            .oro(&[OptionCode::LqBaseTime])
            .lq_query(QueryType::ByRelayId, Ipv6Addr::UNSPECIFIED, |q| {
                q.relay_id(&[0, 2, 0, 0, 0, 9, 1, 2, 3, 4, 5])
                    .oro(&[OptionCode::LqRelayData])
            })
            .start_time(ServerTime(1))
            .end_time(ServerTime(2))
            .build()
            .unwrap(),
        MessageBuilder::data(7)
            .base_time(ServerTime(789_005_400))
            .client_data(|c| {
                c.client_id(&duid)
                    .iaaddr(a("2001:db8:1::100"), 3600, 7200)
                    .iaprefix(a("2001:db8:ff00::"), 56, 3600, 7200)
                    .clt_time(60)
                    .relay_data(a("2001:db8:1::1"), &relay_chain)
            })
            .build()
            .unwrap(),
        MessageBuilder::reply(9)
            .status(Status::NotConfigured, "no such link")
            .client_link(&[a("2001:db8:1::"), a("2001:db8:2::")])
            .build()
            .unwrap(),
        MessageBuilder::relay(MessageType::RelayForw, 1, a("2001:db8::1"), a("fe80::2"))
            .relay_msg(&relay_chain)
            .build()
            .unwrap(),
    ]
}

fn main() {
    parsing_allocates_nothing();
    println!("codec_alloc: 1 passed, 0 failed");
}

fn parsing_allocates_nothing() {
    let messages = samples();
    let frames: Vec<Vec<u8>> = messages
        .iter()
        .map(|m| {
            let mut f = (m.len() as u16).to_be_bytes().to_vec();
            f.extend_from_slice(m);
            f
        })
        .collect();
    let stream: Vec<u8> = frames.concat();
    let mut decoder = FrameDecoder::default();

    let region = Region::new(GLOBAL);
    let mut seen = 0usize;
    for _ in 0..100 {
        for m in &messages {
            let repr = MessageRepr::parse(black_box(m)).unwrap();
            seen += walk(&repr.options);
            seen += usize::from(repr.options.requests(OptionCode::LqBaseTime));
            let view = Message::new_checked(&m[..]).unwrap();
            seen += view.options().filter(Result::is_ok).count();
        }
        let mut rest = &stream[..];
        while let Ok(Decoded::Frame { message, consumed }) = decoder.decode(black_box(rest)) {
            seen += MessageRepr::parse(message).map_or(0, |r| walk(&r.options));
            rest = &rest[consumed..];
        }
    }
    let stats = region.change();
    assert!(seen > 0);
    assert_eq!(
        (
            stats.allocations,
            stats.reallocations,
            stats.bytes_allocated
        ),
        (0, 0, 0),
        "parsing allocated: {stats:?}"
    );

    // The counter does see allocations: the builder allocates, so this must register.
    let region = Region::new(GLOBAL);
    black_box(samples());
    assert!(
        region.change().allocations > 0,
        "the counting allocator is not counting"
    );
}
