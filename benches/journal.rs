//! Change journal throughput: appends, cursor scans, `seek_time` and recovery.
//!
//! Every ring is 64 MiB and filled past capacity before measuring, so each append evicts (the
//! steady state of a running lqd). Records carry a 200-octet payload (224 octets in the ring).
//!
//! - `append/vec`: the ring over a `Vec<u8>`: the ring logic alone.
//! - `append/file_os`: the ring in a mapped file, `FlushPolicy::Os` (the kernel writes back).
//! - `append/file_interval_1s`: `FlushPolicy::Interval(1 s)`, with `tick` after each append:
//!   one synchronous header flush per 1/64 of the ring, the written range flushed each second.
//! - `append/file_always`: `FlushPolicy::Always`: each record forced to disk before `append`
//!   returns (this one measures the disk).
//! - `scan/cursor`: a cursor reads every record of the full ring, from the oldest to the head.
//! - `seek_time/random`: `seek_time` at a pseudo-random time within the ring's span.
//! - `recover/open`: `Journal::open` of the full ring (every record's CRC checked, the index
//!   rebuilt); the copy of the buffer it opens is made outside the timing.
//!
//! Run with `cargo bench --bench journal`; about a minute. The files go to the system's
//! temporary directory (set `TMPDIR` to measure another disk).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput};
use lqd::codec::ServerTime;
use lqd::store::journal::{FlushPolicy, HEADER_LEN, Journal, JournalFile};

const RING: usize = 64 << 20;
const PAYLOAD: usize = 200;

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .configure_from_args()
}

/// A full ring: appends until the ring has wrapped once and a bit. Times step every 16 records.
fn fill(mut append: impl FnMut(ServerTime, &[u8]) -> u64) -> u64 {
    let payload = [0x5au8; PAYLOAD];
    let n = (RING / 224 + RING / 224 / 8) as u64;
    for i in 0..n {
        append(ServerTime(1_000_000 + (i / 16) as u32), &payload);
    }
    n
}

fn main() {
    let mut c = config();
    let payload = [0xa5u8; PAYLOAD];
    let dir = tempfile::tempdir().expect("tempdir");

    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Elements(1));
    {
        let mut j = Journal::format(vec![0u8; HEADER_LEN + RING]).expect("format");
        let mut t = fill(|t, p| j.append(t, p).expect("append")) as u32;
        g.bench_function("vec", |b| {
            b.iter(|| {
                t = t.wrapping_add(1);
                black_box(j.append(ServerTime(2_000_000 + t / 16), black_box(&payload)))
            })
        });
    }
    let policies = [
        ("file_os", FlushPolicy::Os),
        (
            "file_interval_1s",
            FlushPolicy::Interval(Duration::from_secs(1)),
        ),
        ("file_always", FlushPolicy::Always),
    ];
    for (name, policy) in policies {
        let path = dir.path().join(name);
        let size = (HEADER_LEN + RING) as u64;
        // Filled under the Os policy (filling under Always would take minutes), then reopened.
        let (mut jf, _) = JournalFile::open(&path, size, FlushPolicy::Os).expect("create");
        let mut t = fill(|t, p| jf.append(t, p).expect("append")) as u32;
        jf.flush().expect("flush");
        drop(jf);
        let (mut jf, _) = JournalFile::open(&path, size, policy).expect("reopen");
        g.bench_function(name, |b| {
            b.iter(|| {
                t = t.wrapping_add(1);
                let seq = jf.append(ServerTime(2_000_000 + t / 16), black_box(&payload));
                jf.tick(Instant::now()).expect("tick");
                black_box(seq)
            })
        });
        drop(jf);
        let _ = std::fs::remove_file(&path);
    }
    g.finish();

    let mut j = Journal::format(vec![0u8; HEADER_LEN + RING]).expect("format");
    fill(|t, p| j.append(t, p).expect("append"));
    let records = j.len();

    let mut g = c.benchmark_group("scan");
    g.throughput(Throughput::Elements(records));
    g.bench_function("cursor", |b| {
        b.iter(|| {
            let mut cur = j.tail();
            let mut sum = 0usize;
            while let Ok(Some(r)) = j.read(&mut cur) {
                sum = sum
                    .wrapping_add(r.payload.len())
                    .wrapping_add(r.seq as usize);
            }
            black_box(sum)
        })
    });
    g.finish();

    let (lo, hi) = (
        j.oldest_time().expect("records").0,
        j.newest_time().expect("records").0,
    );
    let mut g = c.benchmark_group("seek_time");
    g.throughput(Throughput::Elements(1));
    let mut x = 0x9e37_79b9u32;
    g.bench_function("random", |b| {
        b.iter(|| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let t = ServerTime(lo.wrapping_add(1).wrapping_add(x % (hi - lo)));
            black_box(j.seek_time(t).map(|c| c.seq()))
        })
    });
    g.finish();

    let bytes = j.into_inner();
    let mut g = c.benchmark_group("recover");
    g.throughput(Throughput::Elements(records));
    g.sample_size(10);
    g.bench_function("open", |b| {
        b.iter_batched(
            || bytes.clone(),
            |buf| black_box(Journal::open(buf).expect("open").1),
            BatchSize::LargeInput,
        )
    });
    g.finish();

    c.final_summary();
}
