//! How fast lease changes get from a source into lqd's engine.
//!
//! The changes are the demo's (50,000 clients, their initial leases then churn, relays
//! included), written out twice: as JSON lines in the documented schema (`schema/`), and as the
//! rows Kea 2.2's memfile backend would write for them (a lease6 CSV with the 17-column header,
//! extended info in `user_context`). The rows:
//!
//! - `jsonl/parse`: `parse_line` alone, line after line (line → change);
//! - `kea/parse_row`: `parse_row` alone, row after row (row → fields);
//! - `kea/parse_map`: `parse_row` then `KeaMapper::apply` (row → change), what the kea-csv
//!   source does for each row, the counterpart of `jsonl/parse`;
//! - `jsonl/file_to_history`, `kea/file_to_history`: the whole path lqd runs: the source's
//!   thread reads the file and parses it, the feed channel carries the changes, and the
//!   receiving side applies each to a `History` (store and journal) as the event loop does;
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
use lqd::feed::kea::{Applied, KeaHeader, KeaMapper, parse_row};
use lqd::feed::{
    DemoConfig, DemoSource, FeedHandle, JsonlInput, feed, spawn_jsonl, spawn_kea_csv_with,
};
use lqd::store::journal::Journal;
use lqd::store::{Change, History, LeaseKind, LeaseState, RelayInfo, Store};

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

/// Kea 2.2's lease6 header: 17 columns.
const KEA_HEADER: &str = "address,duid,valid_lifetime,expire,subnet_id,pref_lifetime,\
lease_type,iaid,prefix_len,fqdn_fwd,fqdn_rev,hostname,hwaddr,state,user_context,hwtype,\
hwaddr_source";

/// Kea's decline-probation-period default, seconds.
const PROBATION: u32 = 86_400;

/// Kea's text for a DUID or a hardware address: colon hex.
fn colon_hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The subnet id of a demo link (`2001:db8:0:K::1` is subnet K).
fn subnet_id(link: std::net::Ipv6Addr) -> u32 {
    u32::from(link.segments()[3])
}

/// Kea 2.2's extended info for one relay: its link-address and peer, and its options
/// (remote-id 37, relay-id 53, interface-id 18) in hex, commas escaped as Kea writes them.
fn user_context(link: std::net::Ipv6Addr, r: &RelayInfo) -> String {
    let mut options = Vec::new();
    for id in &r.remote_ids {
        options.extend_from_slice(&37u16.to_be_bytes());
        options.extend_from_slice(&u16::try_from(id.remote_id.len() + 4).unwrap().to_be_bytes());
        options.extend_from_slice(&id.enterprise_number.to_be_bytes());
        options.extend_from_slice(&id.remote_id);
    }
    for id in &r.relay_ids {
        options.extend_from_slice(&53u16.to_be_bytes());
        options.extend_from_slice(&u16::try_from(id.len()).unwrap().to_be_bytes());
        options.extend_from_slice(id);
    }
    let ifname = format!("ge-0/0/{}.{}", subnet_id(link) % 4, 100 + subnet_id(link));
    options.extend_from_slice(&18u16.to_be_bytes());
    options.extend_from_slice(&u16::try_from(ifname.len()).unwrap().to_be_bytes());
    options.extend_from_slice(ifname.as_bytes());
    let peer = r
        .relay_message
        .as_ref()
        .map_or_else(|| "fe80::1".to_owned(), |(p, _)| p.to_string());
    format!(
        "{{ \"ISC\": {{ \"relays\": [ {{ \"hop\": 0, \"link\": \"{link}\", \"options\": \"0x{}\", \"peer\": \"{peer}\" }} ] }} }}",
        hex(&options).to_uppercase()
    )
    .replace(',', "&#x2c")
}

/// Writes the Kea rows for a stream of changes, as Kea 2.2's memfile does: a row per lease
/// change; renewals append rows for the same address; a release is written with lifetime 0, a
/// reclaimed lease with state 2, a declined address with DUID `00` and state 1 for the
/// probation period. Kea keeps a lease's extended info in every later row, so a row whose
/// change carries no relay info repeats the last one written for that lease.
#[derive(Default)]
struct KeaWriter {
    contexts: std::collections::HashMap<(LeaseKind, std::net::Ipv6Addr), String>,
}

impl KeaWriter {
    fn row(&mut self, c: &Change) -> String {
        let l = &c.lease;
        let key = (l.kind, l.address);
        if let Some(r) = &c.relay {
            self.contexts.insert(key, user_context(c.link, r));
        }
        let ctx = self.contexts.get(&key).cloned().unwrap_or_default();
        let cltt = u64::from(l.cltt.0) + UNIX_2000;
        let (lease_type, prefix_len) = match l.kind {
            LeaseKind::Address => (0, 128),
            LeaseKind::Prefix => (2, l.prefix_len),
        };
        let (duid, valid, pref, state) = match l.state {
            LeaseState::Active => (
                colon_hex(&c.client_id),
                l.valid_lifetime,
                l.preferred_lifetime,
                0,
            ),
            LeaseState::Released => (colon_hex(&c.client_id), 0, 0, 0),
            LeaseState::Expired => (
                colon_hex(&c.client_id),
                l.valid_lifetime,
                l.preferred_lifetime,
                2,
            ),
            LeaseState::Deleted => (colon_hex(&c.client_id), 0, 0, 2),
            LeaseState::Declined => ("00".to_owned(), PROBATION, 0, 1),
        };
        // A DUID-LL (type 3, Ethernet) gives Kea the client's hardware address (source 2).
        let (hwaddr, hwtype, hwsource) = match &*c.client_id {
            [0, 3, 0, 1, mac @ ..] if mac.len() == 6 && l.state != LeaseState::Declined => {
                (colon_hex(mac), 1, 2)
            }
            _ => (String::new(), 0, 0),
        };
        format!(
            "{},{duid},{valid},{},{},{pref},{lease_type},{},{prefix_len},0,0,,{hwaddr},{state},{ctx},{hwtype},{hwsource}",
            l.address,
            cltt + u64::from(valid),
            subnet_id(c.link),
            l.iaid,
        )
    }
}

/// Runs a source into a fresh `History` until `expected` changes were applied; the time that
/// took, from the source's start.
fn file_to_history(expected: usize, now: ServerTime, spawn: impl FnOnce(FeedHandle)) -> Duration {
    let mut h = history();
    let poll = mio::Poll::new().unwrap();
    let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
    let (handle, mut rx) = feed(65_536, waker);
    let started = Instant::now();
    spawn(handle);
    let mut applied = 0usize;
    while applied < expected {
        let d = rx.drain(4096, |change| {
            h.apply(&change, now).unwrap();
        });
        applied += d.count;
        if d.count == 0 {
            std::thread::yield_now();
        }
    }
    let took = started.elapsed();
    // Dropping the receiver ends the source's thread at its next send or poll.
    drop(rx);
    took
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
    write_lines(&path, None, &lines);
    let octets: usize = lines.iter().map(|l| l.len() + 1).sum();
    eprintln!(
        "{CHANGES} changes, {} MB of JSON lines ({} octets a line)",
        octets / 1_000_000,
        octets / CHANGES
    );

    // The same changes as Kea's rows, and Kea's subnets (the demo's links).
    let mut writer = KeaWriter::default();
    let rows: Vec<String> = changes.iter().map(|(_, c)| writer.row(c)).collect();
    let subnets: std::collections::HashMap<u32, std::net::Ipv6Addr> = (1..=DemoConfig::default()
        .links)
        .map(|k| (u32::from(k), DemoSource::link_address(k)))
        .collect();
    let header = KeaHeader::parse(KEA_HEADER).unwrap();
    assert_eq!(header.columns(), 17);
    // The rows say what the changes say (relay data aside: Kea's file has none), and count
    // the changes the source sends (a row equal to the lease's last one is not sent again).
    let mut mapper = KeaMapper::new(subnets.clone());
    let mut kea_changes = 0usize;
    for (k, ((_, c), r)) in changes.iter().zip(&rows).enumerate() {
        match mapper.apply(&parse_row(&header, r).unwrap()) {
            Applied::Change(m) => {
                kea_changes += 1;
                if k < 1000 {
                    let key = |c: &Change| {
                        (
                            c.client_id.clone(),
                            c.link,
                            c.lease.slot(),
                            c.lease.iaid,
                            c.lease.state,
                        )
                    };
                    assert_eq!(key(&m), key(c), "{r}");
                }
            }
            other => assert!(k >= 1000, "{r}: {other:?}"),
        }
    }
    let relayed = rows.iter().filter(|r| r.contains("relays")).count();
    let pd = changes
        .iter()
        .filter(|(_, c)| c.lease.kind == LeaseKind::Prefix)
        .count();
    let kea_path = dir.path().join("kea-leases6.csv");
    write_lines(&kea_path, Some(KEA_HEADER), &rows);
    let kea_octets: usize = rows.iter().map(|l| l.len() + 1).sum();
    eprintln!(
        "{CHANGES} Kea rows ({pd} PD, {relayed} with relay info), {} MB ({} octets a row); \
         the source sends {kea_changes} changes",
        kea_octets / 1_000_000,
        kea_octets / CHANGES
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
    g.bench_function("kea/parse_row", |b| {
        b.iter(|| {
            for r in &rows {
                black_box(parse_row(&header, r).unwrap());
            }
        });
    });
    g.bench_function("kea/parse_map", |b| {
        b.iter(|| {
            let mut mapper = KeaMapper::new(subnets.clone());
            for r in &rows {
                black_box(mapper.apply(&parse_row(&header, r).unwrap()));
            }
        });
    });
    let now = ServerTime(t0 + 1000);
    g.bench_function("jsonl/file_to_history", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    file_to_history(CHANGES, now, |handle| {
                        spawn_jsonl(JsonlInput::File(path.clone()), handle).unwrap();
                    })
                })
                .sum()
        });
    });
    g.bench_function("kea/file_to_history", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    file_to_history(kea_changes, now, |handle| {
                        spawn_kea_csv_with(kea_path.clone(), subnets.clone(), handle).unwrap();
                    })
                })
                .sum()
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

/// Writes `lines` to a new file at `path`, after `header` if given.
fn write_lines(path: &std::path::Path, header: Option<&str>, lines: &[String]) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for l in header.into_iter().chain(lines.iter().map(String::as_str)) {
        writeln!(f, "{l}").unwrap();
    }
    f.flush().unwrap();
}
