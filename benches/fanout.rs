//! Active Leasequery fan-out in process: the engine's cost to deliver binding changes to many
//! requestors, without sockets.
//!
//! Each iteration applies a batch of `BATCH` changes to a [`History`] over a memory ring (one
//! journal record each), then fills every session's output buffer, as the event loop does on a
//! turn where the feed brought changes. Throughput is counted in deliveries (one LEASEQUERY-DATA
//! to one requestor), so `requestors × BATCH` elements an iteration.
//!
//! Two variants of the same work:
//!
//! - `encode_once`: the [`EncodeCache`] as lqd runs it: a record is decoded and its message
//!   built once per second, then copied with the xid patched for every session;
//! - `encode_each`: a one-slot cache, so every session decodes and builds its own message, the
//!   way a server without the cache would.
//!
//! And `filtered`: each requestor asks for its own link (QUERY_BY_LINK_ADDRESS), each change is
//! on one link, so it concerns one requestor; a turn wakes, through [`Watchers`], only the
//! sessions the batch concerns and fills those. Counted in changes: the cost of a change must
//! not grow with the number of requestors (issue 12).
//!
//! Run with `cargo bench --bench fanout`.

use std::hint::black_box;
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use lqd::codec::{BuildOptions, Decoded, FrameDecoder, MessageBuilder, ServerTime};
use lqd::engine::active::{EncodeCache, Watchers};
use lqd::engine::session::{ActiveSettings, AllowAll, Ctx, Session};
use lqd::store::journal::Journal;
use lqd::store::{Change, History, Lease, LeaseKind, LeaseState, RelayInfo, RemoteIdKey, Store};

const BATCH: u32 = 64;
const CLIENTS: u32 = 10_000;
const SERVER: [u8; 6] = [0, 3, 0, 1, 0xaa, 0xbb];

type Hist = History<Journal<Vec<u8>>>;

fn change(i: u32, round: u32, now: ServerTime) -> Change {
    let n = i % CLIENTS;
    Change {
        client_id: vec![0, 3, 0, 1, 0x66, (n >> 16) as u8, (n >> 8) as u8, n as u8].into(),
        link: Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 1),
        lease: Lease {
            kind: LeaseKind::Address,
            address: Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, (n >> 16) as u16, n as u16),
            prefix_len: 128,
            iaid: round,
            preferred_lifetime: 3600,
            valid_lifetime: 7200,
            cltt: now,
            state: LeaseState::Active,
        },
        relay: Some(RelayInfo {
            relay_ids: vec![vec![0, 2, 0, 0, 0, 9, 1, 2, 3].into()],
            remote_ids: vec![RemoteIdKey {
                enterprise_number: 9,
                remote_id: format!("ge-0/0/1:{n}").into_bytes().into(),
            }],
            relay_message: None,
        }),
    }
}

struct Setup {
    h: Hist,
    sessions: Vec<Session>,
    cache: EncodeCache,
    out: Vec<u8>,
    round: u32,
    now: ServerTime,
}

impl Setup {
    fn new(requestors: usize, slots: usize) -> Self {
        let h = History::open(Store::new(), Journal::format(vec![0; 64 << 20]).unwrap()).0;
        let now = ServerTime(800_000_000);
        let mut sessions = Vec::with_capacity(requestors);
        let request = MessageBuilder::active_leasequery(7)
            .client_id(&[0, 3, 0, 1, 0, 0x11, 0x22, 0x33, 0x44, 0x55])
            .build_frame()
            .unwrap();
        let ctx = Ctx {
            history: &h,
            server_id: &SERVER,
            now,
            mono: Instant::now(),
            active: ActiveSettings::default(),
        };
        for _ in 0..requestors {
            let mut s = Session::new(4);
            let mut out = Vec::new();
            s.handle_bytes(&request, &ctx, &AllowAll, &mut out, &mut Vec::new())
                .unwrap();
            sessions.push(s);
        }
        Self {
            h,
            sessions,
            cache: EncodeCache::with_slots(slots),
            out: Vec::with_capacity(1 << 20),
            round: 0,
            now,
        }
    }

    /// One loop turn: a batch of changes, then every session filled; `each` sees every
    /// session's output. Octets produced.
    fn turn_with(&mut self, mut each: impl FnMut(&[u8])) -> usize {
        self.round += 1;
        for i in 0..BATCH {
            let c = change(self.round * BATCH + i, self.round, self.now);
            self.h.apply(&c, self.now).unwrap();
        }
        let ctx = Ctx {
            history: &self.h,
            server_id: &SERVER,
            now: self.now,
            mono: Instant::now(),
            active: ActiveSettings::default(),
        };
        let mut total = 0;
        for s in &mut self.sessions {
            self.out.clear();
            s.fill(&ctx, &mut self.cache, &mut self.out, 1 << 20);
            each(&self.out);
            total += self.out.len();
        }
        total
    }

    fn turn(&mut self) -> usize {
        self.turn_with(|_| {})
    }

    /// A turn whose every session's output is decoded: each must hold `BATCH` messages.
    fn check(&mut self) {
        self.turn_with(|out| {
            let mut dec = FrameDecoder::default();
            let (mut rest, mut n) = (out, 0);
            while let Ok(Decoded::Frame { consumed, .. }) = dec.decode(rest) {
                rest = &rest[consumed..];
                n += 1;
            }
            assert_eq!(n, BATCH, "every session gets every change");
        });
    }
}

/// Requestors each on their own link, and the watchers that wake them.
struct Filtered {
    h: Hist,
    sessions: Vec<Session>,
    watchers: Watchers,
    cache: EncodeCache,
    out: Vec<u8>,
    woken: Vec<usize>,
    round: u32,
    now: ServerTime,
}

fn link(i: u32) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, (i >> 16) as u16, i as u16, 0, 0, 0, 1)
}

impl Filtered {
    fn new(requestors: u32) -> Self {
        let h = History::open(Store::new(), Journal::format(vec![0; 64 << 20]).unwrap()).0;
        let now = ServerTime(800_000_000);
        let mut sessions = Vec::new();
        let mut watchers = Watchers::new();
        let ctx = Ctx {
            history: &h,
            server_id: &SERVER,
            now,
            mono: Instant::now(),
            active: ActiveSettings::default(),
        };
        for i in 0..requestors {
            let request = MessageBuilder::active_leasequery(7)
                .lq_query(lqd::codec::QueryType::ByLinkAddress, link(i), |q| q)
                .build_frame()
                .unwrap();
            let mut s = Session::new(4);
            s.handle_bytes(&request, &ctx, &AllowAll, &mut Vec::new(), &mut Vec::new())
                .unwrap();
            watchers.watch(&s.active_queries()[0], i as usize, h.postings());
            sessions.push(s);
        }
        Self {
            h,
            sessions,
            watchers,
            cache: EncodeCache::new(),
            out: Vec::with_capacity(1 << 20),
            woken: Vec::new(),
            round: 0,
            now,
        }
    }

    /// One loop turn: a batch of changes, each on the link of the next requestor, then the
    /// sessions they concern filled. Messages produced.
    fn turn(&mut self) -> usize {
        self.round += 1;
        let n = self.sessions.len() as u32;
        let before = self.h.journal().next_seq();
        for i in 0..BATCH {
            let k = self.round * BATCH + i;
            let mut c = change(k, self.round, self.now);
            c.link = link(k % n);
            self.h.apply(&c, self.now).unwrap();
        }
        self.woken.clear();
        self.watchers.woken(
            self.h.postings(),
            before,
            self.h.journal().next_seq(),
            &mut self.woken,
        );
        self.woken.sort_unstable();
        self.woken.dedup();
        let ctx = Ctx {
            history: &self.h,
            server_id: &SERVER,
            now: self.now,
            mono: Instant::now(),
            active: ActiveSettings::default(),
        };
        let mut messages = 0;
        for &k in &self.woken {
            self.out.clear();
            self.sessions[k].fill(&ctx, &mut self.cache, &mut self.out, 1 << 20);
            let mut dec = FrameDecoder::default();
            let mut rest = &self.out[..];
            while let Ok(Decoded::Frame { consumed, .. }) = dec.decode(rest) {
                rest = &rest[consumed..];
                messages += 1;
            }
        }
        messages
    }
}

fn filtered(c: &mut Criterion) {
    let mut g = c.benchmark_group("filtered");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    g.throughput(Throughput::Elements(u64::from(BATCH)));
    for requestors in [100u32, 1_000, 10_000] {
        let mut setup = Filtered::new(requestors);
        assert_eq!(
            setup.turn(),
            BATCH as usize,
            "each change reaches its requestor"
        );
        g.bench_with_input(
            BenchmarkId::new("wake_concerned", requestors),
            &requestors,
            |b, _| b.iter(|| black_box(setup.turn())),
        );
    }
    g.finish();
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    for requestors in [100usize, 1_000, 5_000] {
        g.throughput(Throughput::Elements(requestors as u64 * u64::from(BATCH)));
        for (name, slots) in [("encode_once", 256), ("encode_each", 1)] {
            let mut setup = Setup::new(requestors, slots);
            setup.check();
            g.bench_with_input(BenchmarkId::new(name, requestors), &requestors, |b, _| {
                b.iter(|| black_box(setup.turn()));
            });
        }
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default();
    fanout(&mut c);
    filtered(&mut c);
    c.final_summary();
}
