//! `loadgen bulk`: simultaneous whole-link Bulk Leasequery answers.
//!
//! Each round opens `--concurrent` TCP connections at once, each asking QUERY_BY_LINK_ADDRESS
//! for the population's link, and reads every answer to its end, parsing every message with
//! lqd's codec. It reports each answer's rate, the aggregate rate, lqd's memory (RSS before
//! the round, its peak during it, RSS after) and lqd's CPU time, and checks each answer against
//! the population: every client the churn did not touch exactly once, nobody unknown.

use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpStream};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use lqd::codec::{
    BuildOptions, Decoded, DhcpOption, FrameDecoder, MessageBuilder, MessageRepr, MessageType,
    OptionCode, QueryType, Status,
};
use serde::Serialize;

use crate::population::Population;
use crate::process::{Lqd, REQUESTOR, own_cpu_secs};
use crate::report::{mib, rate};
use crate::{Common, Outcome};

/// Options of `loadgen bulk`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// Clients in lqd's demo population, all on one link: one binding each.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) bindings: usize,
    /// Simultaneous queries, each on its own connection; a comma-separated list runs one set
    /// of rounds per value, in order, against the same lqd.
    #[arg(long, default_value = "1", value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) concurrent: Vec<u32>,
    /// Rounds per concurrency value.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) rounds: u32,
    /// Also over TLS: lqd offers TLS (a throwaway CA and server certificate), and every round
    /// runs twice against the same lqd, in cleartext and with each query's connection on
    /// STARTTLS and a rustls handshake (the order alternating from round to round), so that
    /// the two are side by side.
    #[arg(long)]
    pub(crate) tls: bool,
    #[command(flatten)]
    pub(crate) common: Common,
}

/// One by-link answer as read.
pub(crate) struct Answer {
    /// OPTION_CLIENT_DATA messages: bindings.
    pub(crate) bindings: u64,
    /// Messages of any type.
    pub(crate) messages: u64,
    /// Octets read, framing included.
    pub(crate) bytes: u64,
    /// From sending the query to the REPLY's arrival.
    pub(crate) first: Duration,
    /// From sending the query to the answer's last message.
    pub(crate) elapsed: Duration,
    /// One bit per client: received.
    pub(crate) received: Vec<u64>,
    /// Bindings of a client already received in this answer.
    pub(crate) duplicates: u64,
    /// Bindings of a client the population does not have.
    pub(crate) unknown: u64,
    /// Each binding's client and address, when asked for.
    pub(crate) addresses: Vec<(u32, Ipv6Addr)>,
}

/// The clients a by-link answer is read against: the demo [`Population`], or the bindings
/// loadgen itself gave lqd through its feed (`fanout`'s change model).
pub(crate) trait Clients {
    /// The link every client is on.
    fn link(&self) -> Ipv6Addr;
    /// How many clients there are.
    fn clients(&self) -> usize;
    /// The number of the client with this DUID, if it is one of them.
    fn client(&self, duid: &[u8]) -> Option<u32>;
}

impl Clients for Population {
    fn link(&self) -> Ipv6Addr {
        Self::link(self)
    }

    fn clients(&self) -> usize {
        Self::clients(self)
    }

    fn client(&self, duid: &[u8]) -> Option<u32> {
        Self::client(self, duid)
    }
}

/// A by-link query for `clients`' link, framed, with transaction id `xid`.
pub(crate) fn link_query(clients: &impl Clients, xid: u32) -> Result<Vec<u8>, String> {
    MessageBuilder::leasequery(xid)
        .client_id(&REQUESTOR)
        .lq_query(QueryType::ByLinkAddress, clients.link(), |q| q)
        .build_frame()
        .map_err(|e| format!("building the query: {e}"))
}

/// Sends a by-link query for the population's link on a new connection and reads the whole
/// answer; with `collect`, keeps each binding's IA address.
pub(crate) fn query_link(
    addr: SocketAddr,
    population: &impl Clients,
    xid: u32,
    collect: bool,
) -> Result<Answer, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let query = link_query(population, xid)?;
    let started = Instant::now();
    s.write_all(&query)
        .map_err(|e| format!("sending the query: {e}"))?;
    read_answer(&mut s, population, xid, collect, started)
}

/// [`query_link`] over TLS: STARTTLS and the handshake first (not counted in the answer's
/// times, which start when the query is sent), then the query and its answer inside TLS.
pub(crate) fn query_link_tls(
    addr: SocketAddr,
    config: &std::sync::Arc<rustls::ClientConfig>,
    population: &impl Clients,
    xid: u32,
) -> Result<(Answer, crate::tls::Timing), String> {
    let (mut s, timing) = crate::tls::connect(addr, config, xid, Duration::from_secs(30))?;
    let query = link_query(population, xid)?;
    let started = Instant::now();
    s.write_all(&query)
        .and_then(|()| s.flush())
        .map_err(|e| format!("sending the query: {e}"))?;
    let answer = read_answer(&mut s, population, xid, false, started)?;
    Ok((answer, timing))
}

/// Reads, from `s`, the whole answer to the by-link query `xid` sent at `started`, and not an
/// octet more; with `collect`, keeps each binding's IA address.
pub(crate) fn read_answer(
    s: &mut impl Read,
    population: &impl Clients,
    xid: u32,
    collect: bool,
    started: Instant,
) -> Result<Answer, String> {
    let mut answer = Answer {
        bindings: 0,
        messages: 0,
        bytes: 0,
        first: Duration::ZERO,
        elapsed: Duration::ZERO,
        received: vec![0; population.clients().div_ceil(64)],
        duplicates: 0,
        unknown: 0,
        addresses: Vec::new(),
    };
    let mut decoder = FrameDecoder::default();
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let n = s
            .read(&mut chunk)
            .map_err(|e| format!("xid {xid}: reading after {} bindings: {e}", answer.bindings))?;
        if n == 0 {
            return Err(format!(
                "xid {xid}: connection closed after {} bindings, before the answer ended",
                answer.bindings
            ));
        }
        answer.bytes += n as u64;
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        let mut pos = 0;
        let mut done = false;
        while !done {
            let rest = buf.get(pos..).unwrap_or_default();
            let Decoded::Frame { message, consumed } = decoder
                .decode(rest)
                .map_err(|e| format!("xid {xid}: bad frame: {e}"))?
            else {
                break;
            };
            pos += consumed;
            done = answer.message(message, xid, population, collect)?;
            if answer.messages == 1 {
                answer.first = started.elapsed();
            }
        }
        buf.drain(..pos);
        if done {
            answer.elapsed = started.elapsed();
            if !buf.is_empty() {
                return Err(format!(
                    "xid {xid}: {} octets after the answer ended",
                    buf.len()
                ));
            }
            return Ok(answer);
        }
    }
}

impl Answer {
    /// Takes one message of the answer; true when it is the last.
    fn message(
        &mut self,
        message: &[u8],
        xid: u32,
        population: &impl Clients,
        collect: bool,
    ) -> Result<bool, String> {
        let m = MessageRepr::parse(message)
            .map_err(|e| format!("xid {xid}: message {} unparsable: {e}", self.messages + 1))?;
        self.messages += 1;
        if m.xid().map(|x| x.value()) != Some(xid) {
            return Err(format!("xid {xid}: a message with xid {:?}", m.xid()));
        }
        let first = self.messages == 1;
        let data = match m.options.get(OptionCode::ClientData) {
            Some(DhcpOption::ClientData(cd)) => Some(cd),
            _ => None,
        };
        let status = m.options.status().map(|s| s.status);
        match (m.msg_type(), first) {
            (MessageType::LeasequeryReply, true) => {
                if m.options.get(OptionCode::ServerId).is_none() {
                    return Err(format!("xid {xid}: REPLY without Server-ID"));
                }
                if status.is_some_and(|s| s != Status::Success) {
                    return Err(format!("xid {xid}: REPLY with status {status:?}"));
                }
                if data.is_none() {
                    // An empty answer: the REPLY alone (RFC 5460 §7.3 / D12).
                    return Ok(true);
                }
            }
            (MessageType::LeasequeryData, false) => {
                if data.is_none() {
                    return Err(format!("xid {xid}: DATA without client data"));
                }
            }
            (MessageType::LeasequeryDone, false) => {
                if status.is_some_and(|s| s != Status::Success) {
                    return Err(format!(
                        "xid {xid}: DONE with status {status:?} after {} bindings",
                        self.bindings
                    ));
                }
                return Ok(true);
            }
            (t, _) => {
                return Err(format!(
                    "xid {xid}: unexpected {t} as message {}",
                    self.messages
                ));
            }
        }
        let Some(cd) = data else {
            return Ok(false);
        };
        self.bindings += 1;
        let Some(i) = cd.client_id().and_then(|d| population.client(d.as_bytes())) else {
            self.unknown += 1;
            return Ok(false);
        };
        let (word, bit) = ((i / 64) as usize, 1u64 << (i % 64));
        if let Some(w) = self.received.get_mut(word) {
            if *w & bit != 0 {
                self.duplicates += 1;
            }
            *w |= bit;
        }
        if collect {
            for o in cd.iter() {
                if let DhcpOption::IaAddr(a) = o {
                    self.addresses.push((i, a.address));
                }
            }
        }
        Ok(false)
    }

    /// True when client `i`'s binding was received.
    pub(crate) fn has(&self, i: u32) -> bool {
        self.received
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
    }

    /// The checks against the population (replayed up to the answer's end): clients not
    /// touched by the churn but missing, and the failures found while reading.
    pub(crate) fn check(&self, population: &Population, what: &str) -> Vec<String> {
        let mut failures = Vec::new();
        let mut missing = 0u64;
        let mut example = None;
        for i in 0..population.clients() as u32 {
            if !population.touched(i) && !self.has(i) {
                missing += 1;
                example.get_or_insert(i);
            }
        }
        if missing > 0 {
            failures.push(format!(
                "{what}: {missing} bindings lost (held by lqd all along, not in the answer; \
                 the first is client #{})",
                example.unwrap_or_default()
            ));
        }
        if self.duplicates > 0 {
            failures.push(format!("{what}: {} bindings sent twice", self.duplicates));
        }
        if self.unknown > 0 {
            failures.push(format!(
                "{what}: {} bindings of clients not in the population",
                self.unknown
            ));
        }
        // Received ⊆ population (no unknown, no duplicate) and every untouched client
        // received: the count can only differ from the population's by touched clients.
        let held = population.clients() as i64;
        let diff = (self.bindings as i64 - held).unsigned_abs();
        if diff > population.touched_count() as u64 {
            failures.push(format!(
                "{what}: {} bindings received, lqd holds {held} (± {} touched by churn)",
                self.bindings,
                population.touched_count()
            ));
        }
        failures
    }
}

/// One query of a round, for the report.
#[derive(Debug, Clone, Serialize)]
struct QueryRow {
    bindings: u64,
    messages: u64,
    bytes: u64,
    seconds: f64,
    first_message_ms: f64,
    bindings_per_sec: f64,
}

/// One round: `concurrent` queries at once.
#[derive(Debug, Clone, Serialize)]
struct RoundRow {
    concurrent: u32,
    round: u32,
    /// Each query on STARTTLS and TLS.
    tls: bool,
    /// Under TLS, each query's STARTTLS exchange and handshake, ms (slowest of the round).
    handshake_ms: Option<f64>,
    queries: Vec<QueryRow>,
    /// From the first query sent to the last answer ended.
    wall_seconds: f64,
    /// All bindings received over the wall time.
    aggregate_bindings_per_sec: f64,
    /// lqd's bindings held per the population model at the round's end.
    expected_bindings: usize,
    touched_by_churn: usize,
    lqd_cpu_seconds: f64,
    loadgen_cpu_seconds: f64,
    rss_before_kib: u64,
    /// VmHWM during the round (reset before it), or since lqd started when resetting failed.
    peak_rss_kib: u64,
    peak_is_since_round_start: bool,
    rss_end_kib: u64,
}

/// Runs `loadgen bulk`.
pub(crate) fn run(args: &Args) -> Result<Outcome, String> {
    let max_concurrent = args.concurrent.iter().copied().max().unwrap_or(1);
    // BULK_LQ_MAX_CONNS (10 per requestor by default) must not refuse our connections.
    let pki = args.tls.then(crate::tls::Pki::new).transpose()?;
    let extra = format!(
        "max_connections_per_requestor = {}\n{}",
        (max_concurrent as usize + 1).max(10),
        pki.as_ref().map_or(String::new(), |p| p.lqd_table("offer"))
    );
    let (mut lqd, mut population, ready) = Lqd::start(&args.common, args.bindings, &extra)?;
    let client = pki
        .as_ref()
        .map(crate::tls::Pki::client_config)
        .transpose()?;
    // Cleartext, then TLS; the next round TLS first.
    let passes = |round: u32| -> Vec<bool> {
        match (&client, round % 2) {
            (None, _) => vec![false],
            (Some(_), 1) => vec![false, true],
            (Some(_), _) => vec![true, false],
        }
    };
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mut xid = 1u32;
    for &concurrent in &args.concurrent {
        for (round, tls) in
            (1..=args.rounds).flat_map(|r| passes(r).into_iter().map(move |t| (r, t)))
        {
            let before = lqd.stats()?;
            let reset = lqd.reset_peak();
            let own_before = own_cpu_secs();
            let barrier = Barrier::new(concurrent as usize);
            let started = Instant::now();
            let base = xid;
            xid += concurrent;
            let client = client.as_ref().filter(|_| tls);
            type Timed = Result<(Answer, Option<crate::tls::Timing>), String>;
            let results: Vec<Timed> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..concurrent)
                    .map(|q| {
                        let (barrier, population) = (&barrier, &population);
                        let addr = lqd.addr;
                        scope.spawn(move || {
                            barrier.wait();
                            match client {
                                Some(c) => query_link_tls(addr, c, population, base + q)
                                    .map(|(a, t)| (a, Some(t))),
                                None => {
                                    query_link(addr, population, base + q, false).map(|a| (a, None))
                                }
                            }
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err("reader panicked".to_owned()))
                    })
                    .collect()
            });
            let wall = started.elapsed();
            let after = lqd.stats()?;
            let own = own_cpu_secs() - own_before;
            lqd.check_alive()?;
            population.replay_until(&ready.churn, Instant::now());
            let mut queries = Vec::new();
            let mut total = 0u64;
            let mut handshake: Option<Duration> = None;
            for (q, result) in results.into_iter().enumerate() {
                let what = format!(
                    "concurrent {concurrent}, round {round}{}, query {}",
                    if tls { " (TLS)" } else { "" },
                    q + 1
                );
                match result {
                    Ok((a, timing)) => {
                        if let Some(t) = timing {
                            let took = t.starttls + t.handshake;
                            handshake = Some(handshake.map_or(took, |h| h.max(took)));
                        }
                        failures.extend(a.check(&population, &what));
                        total += a.bindings;
                        queries.push(QueryRow {
                            bindings: a.bindings,
                            messages: a.messages,
                            bytes: a.bytes,
                            seconds: a.elapsed.as_secs_f64(),
                            first_message_ms: a.first.as_secs_f64() * 1e3,
                            bindings_per_sec: rate(a.bindings, a.elapsed),
                        });
                    }
                    Err(e) => failures.push(format!("{what}: {e}")),
                }
            }
            let row = RoundRow {
                concurrent,
                round,
                tls,
                handshake_ms: handshake.map(|h| h.as_secs_f64() * 1e3),
                queries,
                wall_seconds: wall.as_secs_f64(),
                aggregate_bindings_per_sec: rate(total, wall),
                expected_bindings: population.held(),
                touched_by_churn: population.touched_count(),
                lqd_cpu_seconds: after.cpu_secs - before.cpu_secs,
                loadgen_cpu_seconds: own,
                rss_before_kib: before.rss_kib,
                peak_rss_kib: after.hwm_kib,
                peak_is_since_round_start: reset,
                rss_end_kib: after.rss_kib,
            };
            eprintln!(
                "loadgen: concurrent {concurrent} round {round}{}: {total} bindings in {:.2} s",
                if tls { " over TLS" } else { "" },
                row.wall_seconds
            );
            rows.push(row);
        }
    }
    let refused = lqd.log_count("connection refused");
    if refused > 0 {
        failures.push(format!("lqd refused {refused} connections (see its log)"));
    }
    let markdown = table(args, &population, &ready, &rows);
    let json = serde_json::json!({
        "mode": "bulk",
        "bindings": population.clients(),
        "leases": population.leases(),
        "churn_per_sec": args.common.churn,
        "seed": args.common.seed,
        "load_seconds": ready.load.as_secs_f64(),
        "rss_loaded_kib": ready.stats.rss_kib,
        "peak_rss_loading_kib": ready.stats.hwm_kib,
        "churn_changes_replayed": population.replayed(),
        "rounds": rows,
        "failures": failures,
    });
    Ok(Outcome {
        markdown,
        json,
        failures,
    })
}

fn table(
    args: &Args,
    population: &Population,
    ready: &crate::process::Ready,
    rows: &[RoundRow],
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Bulk Leasequery by link: {} bindings ({} leases) on one link, churn {}/s; \
         loaded in {:.2} s, RSS {:.1} MiB (peak while loading {:.1} MiB)\n",
        population.clients(),
        population.leases(),
        args.common.churn,
        ready.load.as_secs_f64(),
        mib(ready.stats.rss_kib),
        mib(ready.stats.hwm_kib),
    );
    let _ = writeln!(
        out,
        "| concurrent | round | TLS | bindings/query | per query, bindings/s | aggregate bindings/s | wall s | lqd CPU s | loadgen CPU s | RSS before MiB | peak RSS MiB | RSS end MiB |"
    );
    let _ = writeln!(
        out,
        "|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in rows {
        let per: Vec<String> = r
            .queries
            .iter()
            .map(|q| format!("{:.0}", q.bindings_per_sec))
            .collect();
        let counts: Vec<String> = {
            let mut c: Vec<u64> = r.queries.iter().map(|q| q.bindings).collect();
            c.dedup();
            c.iter().map(u64::to_string).collect()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1}{} | {:.1} |",
            r.concurrent,
            r.round,
            match r.handshake_ms {
                Some(ms) if r.tls => format!("yes (handshakes ≤ {ms:.1} ms)"),
                _ if r.tls => "yes".to_owned(),
                _ => "no".to_owned(),
            },
            counts.join(" / "),
            per.join(" / "),
            r.aggregate_bindings_per_sec,
            r.wall_seconds,
            r.lqd_cpu_seconds,
            r.loadgen_cpu_seconds,
            mib(r.rss_before_kib),
            mib(r.peak_rss_kib),
            if r.peak_is_since_round_start {
                ""
            } else {
                " (since start)"
            },
            mib(r.rss_end_kib),
        );
    }
    out.push_str(&tls_ratios(rows));
    out
}

/// TLS against cleartext, per concurrency: the mean over its rounds of the aggregate
/// bindings/s, of lqd's CPU seconds and of its peak RSS; empty without TLS rounds.
fn tls_ratios(rows: &[RoundRow]) -> String {
    use std::fmt::Write as _;
    let mean = |c: u32, tls: bool, f: &dyn Fn(&RoundRow) -> f64| -> Option<f64> {
        let v: Vec<f64> = rows
            .iter()
            .filter(|r| r.concurrent == c && r.tls == tls)
            .map(f)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let mut concurrent: Vec<u32> = rows
        .iter()
        .filter(|r| r.tls)
        .map(|r| r.concurrent)
        .collect();
    concurrent.dedup();
    if concurrent.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\nTLS against cleartext, the mean of each one's rounds (above 1: TLS is faster, \
         costs more CPU, holds more memory):\n\n\
         | concurrent | TLS/cleartext aggregate bindings/s | lqd CPU s | peak RSS |\n\
         |---:|--:|--:|--:|\n",
    );
    for c in concurrent {
        let ratio = |f: &dyn Fn(&RoundRow) -> f64| {
            mean(c, true, f)
                .zip(mean(c, false, f))
                .filter(|(_, p)| *p > 0.0)
                .map_or_else(|| "–".to_owned(), |(t, p)| format!("{:.2}×", t / p))
        };
        let _ = writeln!(
            out,
            "| {c} | {} | {} | {} |",
            ratio(&|r| r.aggregate_bindings_per_sec),
            ratio(&|r| r.lqd_cpu_seconds),
            ratio(&|r| r.peak_rss_kib as f64),
        );
    }
    out
}
