//! How fast lease changes get from a source into lqd's engine.
//!
//! The changes are the demo's (50,000 clients, their initial leases then churn, relays
//! included), written out as JSON lines in the documented schema (`schema/`). Three rows:
//!
//! - `jsonl/parse`: `parse_line` alone, line after line;
//! - `jsonl/file_to_history`: the whole path lqd runs: the jsonl source's thread reads the
//!   file and parses it, the feed channel carries the changes, and the receiving side applies
//!   each to a `History` (store and journal) as the event loop does;
//! - `direct/history`: the same changes applied to a `History` without any source, the engine's
//!   own cost, for the ratio.
//!
//! Run with `cargo bench --bench sources`.

use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use lqd::codec::ServerTime;
use lqd::feed::jsonl::parse_line;
use lqd::feed::{DemoConfig, DemoSource, JsonlInput, feed, spawn_jsonl};
use lqd::store::journal::Journal;
use lqd::store::{Change, History, LeaseKind, LeaseState, Store};

const CHANGES: usize = 200_000;
const UNIX_2000: u64 = 946_684_800;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One change as a line of the jsonl schema.
fn line(c: &Change) -> String {
    let l = &c.lease;
    let kind = match l.kind {
        LeaseKind::Address => "na",
        LeaseKind::Prefix => "pd",
    };
    let state = match l.state {
        LeaseState::Active => "active",
        LeaseState::Released => "released",
        LeaseState::Declined => "declined",
        LeaseState::Expired => "expired",
        LeaseState::Deleted => "deleted",
    };
    let mut s = format!(
        "{{\"client_id\":\"{}\",\"link\":\"{}\",\"kind\":\"{kind}\",\"address\":\"{}\",\"prefix_len\":{},\"iaid\":{},\"preferred_lifetime\":{},\"valid_lifetime\":{},\"cltt\":{},\"state\":\"{state}\"",
        hex(&c.client_id),
        c.link,
        l.address,
        l.prefix_len,
        l.iaid,
        l.preferred_lifetime,
        l.valid_lifetime,
        u64::from(l.cltt.0) + UNIX_2000,
    );
    if let Some(r) = &c.relay {
        let ids: Vec<String> = r
            .relay_ids
            .iter()
            .map(|d| format!("\"{}\"", hex(d)))
            .collect();
        let remote: Vec<String> = r
            .remote_ids
            .iter()
            .map(|x| {
                format!(
                    "{{\"enterprise\":{},\"id\":\"{}\"}}",
                    x.enterprise_number,
                    hex(&x.remote_id)
                )
            })
            .collect();
        s.push_str(&format!(
            ",\"relay\":{{\"relay_ids\":[{}],\"remote_ids\":[{}]",
            ids.join(","),
            remote.join(",")
        ));
        if let Some((peer, m)) = &r.relay_message {
            s.push_str(&format!(
                ",\"relay_message\":{{\"peer\":\"{peer}\",\"message\":\"{}\"}}",
                hex(m)
            ));
        }
        s.push('}');
    }
    s.push('}');
    s
}

fn history() -> History<Journal<Vec<u8>>> {
    History::open(Store::new(), Journal::format(vec![0; 128 << 20]).unwrap()).0
}

fn main() {
    let mut demo = DemoSource::new(DemoConfig {
        clients: 50_000,
        ..DemoConfig::default()
    });
    let t0 = 800_000_000u32;
    let changes: Vec<(ServerTime, Change)> = (0..CHANGES)
        .map(|k| {
            let now = ServerTime(t0 + (k / 1000) as u32);
            (now, demo.next_change(now))
        })
        .collect();
    let lines: Vec<String> = changes.iter().map(|(_, c)| line(c)).collect();
    // The lines say what the changes say.
    for ((_, c), l) in changes.iter().zip(&lines).take(1000) {
        assert_eq!(&parse_line(l).unwrap().change, c, "{l}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("changes.jsonl");
    let mut f = std::fs::File::create(&path).unwrap();
    for l in &lines {
        writeln!(f, "{l}").unwrap();
    }
    drop(f);
    let octets: usize = lines.iter().map(|l| l.len() + 1).sum();
    eprintln!(
        "{CHANGES} changes, {} MB of JSON lines ({} octets a line)",
        octets / 1_000_000,
        octets / CHANGES
    );

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .sample_size(10);
    let mut g = c.benchmark_group("sources");
    g.throughput(Throughput::Elements(CHANGES as u64));
    g.bench_function("jsonl/parse", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(parse_line(l).unwrap());
            }
        });
    });
    g.bench_function("jsonl/file_to_history", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut h = history();
                let poll = mio::Poll::new().unwrap();
                let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
                let (handle, mut rx) = feed(65_536, waker);
                let started = Instant::now();
                let _reader = spawn_jsonl(JsonlInput::File(path.clone()), handle).unwrap();
                let mut applied = 0usize;
                let now = ServerTime(t0 + 1000);
                while applied < CHANGES {
                    let d = rx.drain(4096, |change| {
                        h.apply(&change, now).unwrap();
                    });
                    applied += d.count;
                    if d.count == 0 {
                        std::thread::yield_now();
                    }
                }
                total += started.elapsed();
                // Dropping the receiver ends the reader thread at its next send or poll.
                drop(rx);
            }
            total
        });
    });
    g.bench_function("direct/history", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut h = history();
                let started = Instant::now();
                for (now, c) in &changes {
                    h.apply(c, *now).unwrap();
                }
                total += started.elapsed();
            }
            total
        });
    });
    g.finish();
    c.final_summary();
}
