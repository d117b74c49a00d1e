//! `loadgen udp`: UDP Leasequery (RFC 5007) QUERY_BY_ADDRESS at a fixed window.
//!
//! The known addresses come from one Bulk by-link answer. Then `--clients` sockets, one thread
//! each, keep `--window` queries outstanding apiece for `--seconds`, each for a random known
//! address. A reply is matched to its query by transaction id and must carry the client data
//! of the address asked (its client's DUID and an IAADDR for it); a query unanswered within
//! `--timeout-ms` counts as missing. Reports queries/s, missing replies, latency percentiles
//! (hdrhistogram) and lqd's CPU use. A wrong answer (for an address the churn did not change)
//! or a reply to no query is a failure; a missing reply is only counted, since UDP may drop
//! datagrams (the smoke test requires none).

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use lqd::codec::{
    BuildOptions, DhcpOption, MessageBuilder, MessageRepr, MessageType, OptionCode, QueryType,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::bulk::query_link;
use crate::population::Population;
use crate::process::{Lqd, REQUESTOR, own_cpu_secs};
use crate::report::rate;
use crate::{Common, Outcome};

/// Options of `loadgen udp`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// Clients in lqd's demo population, all on one link: one address each.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) bindings: usize,
    /// UDP sockets sending queries, one thread each.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) clients: u32,
    /// Queries outstanding per socket; a comma-separated list runs one phase per value, in
    /// order, against the same lqd.
    #[arg(long, default_value = "16", value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) window: Vec<u32>,
    /// Length of each phase, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) seconds: f64,
    /// A query unanswered this long is counted missing.
    #[arg(long, default_value_t = 1000)]
    pub(crate) timeout_ms: u64,
    #[command(flatten)]
    pub(crate) common: Common,
}

/// What one socket saw.
struct ClientResult {
    sent: u64,
    answered: u64,
    /// Timed out.
    missing: u64,
    /// Replies to a query already counted missing.
    late: u64,
    /// Replies whose xid was never sent (or answered twice).
    unmatched: u64,
    /// Replies without the asked address's client data: (client, address, what was wrong).
    wrong: Vec<(u32, Ipv6Addr, String)>,
    /// Reply latency, microseconds.
    latency: Histogram<u64>,
}

/// One phase, for the report.
#[derive(Debug, Clone, Serialize)]
struct PhaseRow {
    clients: u32,
    window: u32,
    seconds: f64,
    sent: u64,
    answered: u64,
    queries_per_sec: f64,
    missing: u64,
    late: u64,
    unmatched: u64,
    /// Wrong answers for addresses the churn changed: expected, not failures.
    churned: u64,
    wrong: u64,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    lqd_cpu_percent: f64,
    loadgen_cpu_percent: f64,
}

/// Runs `loadgen udp`.
pub(crate) fn run(args: &Args) -> Result<Outcome, String> {
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        return Err("--seconds must be positive".to_owned());
    }
    let (mut lqd, mut population, ready) = Lqd::start(&args.common, args.bindings, "")?;
    let mut failures = Vec::new();
    let answer = query_link(lqd.addr, &population, 1, true)?;
    population.replay_until(&ready.churn, Instant::now());
    failures.extend(answer.check(&population, "the Bulk query for the addresses"));
    let targets = answer.addresses;
    if targets.is_empty() {
        return Err("lqd's by-link answer has no address".to_owned());
    }
    eprintln!(
        "loadgen: {} addresses from one Bulk answer ({} bindings in {:.2} s)",
        targets.len(),
        answer.bindings,
        answer.elapsed.as_secs_f64()
    );
    let timeout = Duration::from_millis(args.timeout_ms);
    let mut rows = Vec::new();
    for (phase, &window) in args.window.iter().enumerate() {
        let before = lqd.stats()?;
        let own_before = own_cpu_secs();
        let started = Instant::now();
        let until = started + Duration::from_secs_f64(args.seconds);
        let results: Vec<Result<ClientResult, String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..args.clients)
                .map(|c| {
                    let (targets, population) = (&targets, &population);
                    let addr = lqd.addr;
                    let seed = args.common.seed ^ (u64::from(c) << 32) ^ phase as u64;
                    scope.spawn(move || {
                        client(addr, population, targets, window, until, timeout, seed)
                            .map_err(|e| format!("socket {c}: {e}"))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("client panicked".to_owned()))
                })
                .collect()
        });
        let wall = started.elapsed();
        let after = lqd.stats()?;
        let own = own_cpu_secs() - own_before;
        lqd.check_alive()?;
        population.replay_until(&ready.churn, Instant::now());
        let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
            .map_err(|e| format!("histogram: {e}"))?;
        let mut row = PhaseRow {
            clients: args.clients,
            window,
            seconds: args.seconds,
            sent: 0,
            answered: 0,
            queries_per_sec: 0.0,
            missing: 0,
            late: 0,
            unmatched: 0,
            churned: 0,
            wrong: 0,
            p50_us: 0,
            p90_us: 0,
            p99_us: 0,
            p999_us: 0,
            max_us: 0,
            lqd_cpu_percent: 100.0 * (after.cpu_secs - before.cpu_secs) / wall.as_secs_f64(),
            loadgen_cpu_percent: 100.0 * own / wall.as_secs_f64(),
        };
        for result in results {
            let r = match result {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!("window {window}: {e}"));
                    continue;
                }
            };
            row.sent += r.sent;
            row.answered += r.answered;
            row.missing += r.missing;
            row.late += r.late;
            row.unmatched += r.unmatched;
            for (i, address, why) in &r.wrong {
                if population.touched(*i) {
                    row.churned += 1;
                } else {
                    row.wrong += 1;
                    if row.wrong <= 5 {
                        failures.push(format!(
                            "window {window}: the answer for {address} (client #{i}, untouched by churn): {why}"
                        ));
                    }
                }
            }
            latency
                .add(&r.latency)
                .map_err(|e| format!("histogram: {e}"))?;
        }
        row.queries_per_sec = rate(row.answered, Duration::from_secs_f64(args.seconds));
        row.p50_us = latency.value_at_quantile(0.50);
        row.p90_us = latency.value_at_quantile(0.90);
        row.p99_us = latency.value_at_quantile(0.99);
        row.p999_us = latency.value_at_quantile(0.999);
        row.max_us = latency.max();
        if row.wrong > 5 {
            failures.push(format!(
                "window {window}: {} wrong answers in all",
                row.wrong
            ));
        }
        if row.unmatched > 0 {
            failures.push(format!(
                "window {window}: {} replies to queries never sent",
                row.unmatched
            ));
        }
        if row.missing > 0 {
            // UDP may lose datagrams: a figure to report, not a wrong answer.
            eprintln!(
                "loadgen: window {window}: {} queries unanswered within {timeout:?} ({} answered late)",
                row.missing, row.late
            );
        }
        eprintln!(
            "loadgen: window {window}: {} answered, {:.0} queries/s",
            row.answered, row.queries_per_sec
        );
        rows.push(row);
    }
    let dropped = lqd.log_count("UDP query dropped");
    if dropped > 0 {
        failures.push(format!("lqd dropped {dropped} UDP queries (see its log)"));
    }
    let markdown = table(args, &population, answer.bindings, &rows);
    let json = serde_json::json!({
        "mode": "udp",
        "bindings": population.clients(),
        "addresses": targets.len(),
        "churn_per_sec": args.common.churn,
        "seed": args.common.seed,
        "timeout_ms": args.timeout_ms,
        "load_seconds": ready.load.as_secs_f64(),
        "rss_loaded_kib": ready.stats.rss_kib,
        "churn_changes_replayed": population.replayed(),
        "touched_by_churn": population.touched_count(),
        "phases": rows,
        "failures": failures,
    });
    Ok(Outcome {
        markdown,
        json,
        failures,
    })
}

/// One socket's loop: keeps `window` queries outstanding until `until`, then waits for the
/// last replies up to `timeout`.
fn client(
    server: SocketAddr,
    population: &Population,
    targets: &[(u32, Ipv6Addr)],
    window: u32,
    until: Instant,
    timeout: Duration,
    seed: u64,
) -> Result<ClientResult, String> {
    let sock = UdpSocket::bind("[::1]:0").map_err(|e| e.to_string())?;
    sock.connect(server).map_err(|e| e.to_string())?;
    // Short, so expiries are noticed when nothing arrives; a reply ends the wait at once.
    sock.set_read_timeout(Some(Duration::from_millis(5)))
        .map_err(|e| e.to_string())?;
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut r = ClientResult {
        sent: 0,
        answered: 0,
        missing: 0,
        late: 0,
        unmatched: 0,
        wrong: Vec::new(),
        latency: Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?,
    };
    // xid → (sent at, target index); xids of timed-out queries are remembered to tell late
    // replies from unmatched ones.
    let mut outstanding: HashMap<u32, (Instant, usize)> = HashMap::new();
    let mut expired: HashSet<u32> = HashSet::new();
    let mut next_xid = 1u32;
    let mut last_sweep = Instant::now();
    let mut buf = vec![0u8; 65_536];
    loop {
        let now = Instant::now();
        if now < until {
            while outstanding.len() < window as usize {
                // 24-bit transaction ids, skipping any still in use.
                let xid = loop {
                    let x = next_xid;
                    next_xid = (next_xid + 1) & 0x00ff_ffff;
                    if !outstanding.contains_key(&x) {
                        break x;
                    }
                };
                expired.remove(&xid);
                let t = rng.gen_range(0..targets.len());
                let Some(&(_, address)) = targets.get(t) else {
                    continue;
                };
                let q = MessageBuilder::leasequery(xid)
                    .client_id(&REQUESTOR)
                    .lq_query(QueryType::ByAddress, Ipv6Addr::UNSPECIFIED, |q| {
                        q.iaaddr(address, 0, 0)
                    })
                    .build()
                    .map_err(|e| e.to_string())?;
                match sock.send(&q) {
                    Ok(_) => {}
                    // A full socket buffer: try again after reading.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(format!("send: {e}")),
                }
                outstanding.insert(xid, (Instant::now(), t));
                r.sent += 1;
            }
        } else if outstanding.is_empty() || now > until + timeout {
            break;
        }
        match sock.recv(&mut buf) {
            Ok(n) => {
                let at = Instant::now();
                let reply = buf.get(..n).unwrap_or_default();
                let seen = Seen {
                    at,
                    population,
                    targets,
                };
                reply_in(reply, &seen, &mut outstanding, &mut expired, &mut r);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("receive: {e}")),
        }
        if last_sweep.elapsed() >= Duration::from_millis(10) {
            last_sweep = Instant::now();
            outstanding.retain(|&xid, &mut (sent, _)| {
                if last_sweep.duration_since(sent) < timeout {
                    return true;
                }
                r.missing += 1;
                expired.insert(xid);
                false
            });
        }
    }
    r.missing += outstanding.len() as u64;
    Ok(r)
}

/// Takes one reply: matches it by xid, records its latency and checks its content.
/// Where a reply is checked: when it arrived and what it should say.
struct Seen<'a> {
    at: Instant,
    population: &'a Population,
    targets: &'a [(u32, Ipv6Addr)],
}

fn reply_in(
    reply: &[u8],
    seen: &Seen<'_>,
    outstanding: &mut HashMap<u32, (Instant, usize)>,
    expired: &mut HashSet<u32>,
    r: &mut ClientResult,
) {
    let Ok(m) = MessageRepr::parse(reply) else {
        r.unmatched += 1;
        return;
    };
    let Some(xid) = m.xid().map(|x| x.value()) else {
        r.unmatched += 1;
        return;
    };
    let Some((sent, t)) = outstanding.remove(&xid) else {
        if expired.remove(&xid) {
            r.late += 1;
        } else {
            r.unmatched += 1;
        }
        return;
    };
    r.answered += 1;
    let micros = seen.at.duration_since(sent).as_micros().max(1);
    let _ = r.latency.record(u64::try_from(micros).unwrap_or(u64::MAX));
    let Some(&(client, address)) = seen.targets.get(t) else {
        return;
    };
    let wrong = if m.msg_type() == MessageType::LeasequeryReply {
        match m.options.get(OptionCode::ClientData) {
            Some(DhcpOption::ClientData(cd)) => {
                let has_address = cd
                    .iter()
                    .any(|o| matches!(o, DhcpOption::IaAddr(a) if a.address == address));
                let whose = cd
                    .client_id()
                    .and_then(|d| seen.population.client(d.as_bytes()));
                if !has_address {
                    Some("client data without the address".to_owned())
                } else if whose != Some(client) {
                    Some(format!("client data of client {whose:?}"))
                } else {
                    None
                }
            }
            _ => Some(format!(
                "no client data (status {:?})",
                m.options.status().map(|s| s.status)
            )),
        }
    } else {
        Some(format!("a {} instead of a REPLY", m.msg_type()))
    };
    if let Some(why) = wrong {
        r.wrong.push((client, address, why));
    }
}

fn table(args: &Args, population: &Population, bulk_bindings: u64, rows: &[PhaseRow]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "UDP Leasequery by address: {} bindings on one link ({} from the Bulk answer), churn {}/s, \
         {} sockets, {} s a phase, timeout {} ms\n",
        population.clients(),
        bulk_bindings,
        args.common.churn,
        args.clients,
        args.seconds,
        args.timeout_ms,
    );
    let _ = writeln!(
        out,
        "| sockets | window | queries/s | answered | missing | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | lqd CPU % | loadgen CPU % |"
    );
    let _ = writeln!(
        out,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} |",
            r.clients,
            r.window,
            r.queries_per_sec,
            r.answered,
            r.missing,
            r.p50_us,
            r.p90_us,
            r.p99_us,
            r.p999_us,
            r.max_us,
            r.lqd_cpu_percent,
            r.loadgen_cpu_percent,
        );
    }
    out
}
