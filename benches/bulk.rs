//! One Bulk Leasequery answer in process: the engine's cost per binding of a by-link answer
//! (index walk, OPTION_CLIENT_DATA, encoding, framing), without sockets, over the carrier mix of
//! `loadgen scale` (every client relayed, a quarter behind an aggregation relay too, half with
//! a delegated prefix), one link of 100,000 bindings.
//!
//! - `plain`: the query asks for nothing more;
//! - `relay_data`: the query asks for OPTION_LQ_RELAY_DATA, so each binding's relayed message
//!   is rebuilt from its relay template (issue 19) and sent.
//!
//! Throughput is counted in bindings. Run with `cargo bench --bench bulk`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use lqd::codec::{BuildOptions, MessageBuilder, MessageRepr, OptionCode, QueryType, ServerTime};
use lqd::engine::bulk::{BulkAnswer, Fill};
use lqd::engine::query::{Transport, read_leasequery};
use lqd::feed::demo::{DemoConfig, DemoSource};
use lqd::store::{LinkMap, Store};

const CLIENTS: usize = 100_000;
const SERVER: [u8; 6] = [0, 3, 0, 1, 0xaa, 0xbb];

fn population() -> (Store, usize) {
    let config = DemoConfig {
        clients: CLIENTS,
        links: 1,
        pd_share: 0.5,
        relay_share: 1.0,
        two_hop_share: 0.25,
        ..DemoConfig::default()
    };
    let links = LinkMap::new(&DemoSource::link_defs(&config)).expect("links");
    let mut demo = DemoSource::new(config);
    let mut store = Store::with_links(links);
    while !demo.initial_done() {
        store.apply(&demo.next_change(ServerTime(1000)), ServerTime(1000));
    }
    let n = store.len();
    (store, n)
}

/// Runs one by-link answer to its end; the octets written.
fn answer(store: &Store, request: &[u8], out: &mut Vec<u8>) -> usize {
    let msg = MessageRepr::parse(request).expect("query");
    let query = read_leasequery(&msg, Transport::Tcp).expect("leasequery");
    let mut answer = BulkAnswer::new(query);
    let mut total = 0;
    loop {
        out.clear();
        let fill = answer.fill(store, &SERVER, ServerTime(5000), out, 64 * 1024);
        total += out.len();
        if fill == Fill::Finished {
            return total;
        }
    }
}

fn bench(c: &mut Criterion) {
    let (store, bindings) = population();
    let link = DemoSource::link_address(1);
    let plain = MessageBuilder::leasequery(1)
        .client_id(&[0, 3, 0, 1, 1, 2, 3, 4, 5, 6])
        .lq_query(QueryType::ByLinkAddress, link, |q| q)
        .build()
        .expect("query");
    let relay = MessageBuilder::leasequery(2)
        .client_id(&[0, 3, 0, 1, 1, 2, 3, 4, 5, 6])
        .oro(&[OptionCode::LqRelayData])
        .lq_query(QueryType::ByLinkAddress, link, |q| q)
        .build()
        .expect("query");
    let mut out = Vec::with_capacity(128 * 1024);
    let with = answer(&store, &relay, &mut out);
    let without = answer(&store, &plain, &mut out);
    assert!(
        with > without + bindings * 50,
        "relay data sent: {with} {without}"
    );
    let mut g = c.benchmark_group("bulk_by_link");
    g.throughput(Throughput::Elements(bindings as u64));
    g.measurement_time(Duration::from_secs(8));
    g.sample_size(20);
    g.bench_function("plain", |b| {
        b.iter(|| black_box(answer(&store, &plain, &mut out)));
    });
    g.bench_function("relay_data", |b| {
        b.iter(|| black_box(answer(&store, &relay, &mut out)));
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
