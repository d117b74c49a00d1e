//! `loadgen catch-up --carrier`: catch-up at carrier scale (issue 19, point 4).
//!
//! One release lqd, fed through its JSON-lines UNIX socket, holds a carrier's population: the
//! mix of `loadgen scale` (lqd's own `DemoSource`, regenerated here from its seed: every client
//! behind an access relay with a relay-id and a remote-id per subscriber line, `--links` links
//! each behind its own relay, a share of those behind an aggregation relay, `--pd-percent` of
//! the clients with a delegated prefix beside their address). Each client's DUID is replaced by
//! a DUID-EN (enterprise 32473) carrying the client's number, so that a delivery names its
//! binding without a table of ten million DUIDs; everything else (links, addresses, prefixes,
//! relay-ids, remote-ids, the relayed messages) is the demo's.
//!
//! Then, for the whole run, a steady churn of `--churn` changes a second: change `c` renews the
//! address lease of binding `b(c)` (a hash of the seed and `c`, so a binding may renew twice
//! and lqd may coalesce), with its valid lifetime set to `BASE + 1 + c` (preferred: half). A
//! LEASEQUERY-DATA reports the lifetime left and OPTION_CLT_TIME at its base-time, whose sum
//! is the lifetime granted: each delivery names its change `c` exactly, and its latency is
//! taken from `c`'s intended injection time `t0 + c / rate`, as `loadgen active` measures.
//!
//! Requestors, every one a gateway asking for its own link (QUERY_BY_LINK_ADDRESS):
//!
//! - `--requestors` catch-up requestors (requestor `j` on link `j + 1`): each connects, starts
//!   its Active query, takes the base-time of the REPLY and disconnects. After `--away-seconds`
//!   of churn they all reconnect at once with OPTION_LQ_START_TIME = that base-time, and each
//!   must reach CatchUpComplete; they stay on, live, to the end.
//! - `--live-requestors` live requestors, connected from before the catch-up requestors leave
//!   to the end, on the next links (requestor `i` on link `requestors + i + 1`; links are
//!   shared, round the `--links`, only when there are more requestors than links). Their
//!   deliveries' latency is reported for the catch-up window (the first reconnect to the last
//!   CatchUpComplete) and for `--baseline-seconds` before and after it.
//!
//! The check, at the end (the churn stopped and lqd drained), against the churn loadgen
//! injected: a requestor receives only changes of bindings on its link, each binding's changes
//! in increasing order and none twice, none from before its query's start (its START_TIME, a
//! second of slack for the base-time's granularity); by its CatchUpComplete a catch-up
//! requestor holds, for every binding of its link changed while it was away, that binding's
//! last change injected before it reconnected, or a newer one (lqd sends a binding's newest
//! record only: RFC 7653 coalescing); and by the end every requestor holds the last change of
//! every binding of its link changed since its query started. A binding's change skipped for a
//! newer one is counted as coalesced, not as lost.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use lqd::codec::{
    BuildOptions, Decoded, DhcpOption, FrameDecoder, MessageBuilder, MessageRepr, MessageType,
    OptionCode, QueryType, ServerTime, Status,
};
use lqd::config::DemoSettings;
use lqd::feed::DemoSource;
use lqd::store::{Change, LeaseKind};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

use super::receiver::{HIST_MAX_US, XID};
use crate::Outcome;
use crate::process::{Lqd, REQUESTOR, proc_memory, proc_stats};
use crate::redis::raise_nofile;
use crate::report::mib;
use crate::scrape::TurnsBetween;

/// Valid lifetime of every lease of the population, seconds (ten days: nothing expires in a
/// run); change `c` grants `BASE + 1 + c`.
const BASE: u32 = 864_000;
/// The enterprise number of the clients' DUID-EN (32473: RFC 5612, for documentation).
const ENTERPRISE: u32 = 32_473;
/// DUID-EN's type code (RFC 8415 §11.3).
const DUID_EN: u16 = 2;
/// A delivery's `c` when it reports the population's state (no change of the churn).
const POPULATION: u32 = u32::MAX;
/// The most churn changes written in one go.
const MAX_BATCH: u64 = 4096;
/// Reads per connection per readiness before other connections get a turn.
const READ_BUDGET: usize = 16;
/// How long lqd may take from reading a change to journaling it, for the checks: a change
/// injected this long before a query's start is surely in the journal when the query starts.
const APPLY_MARGIN_US: u64 = 500_000;
/// The base-time is in whole seconds: a record from up to this long before the REPLY may
/// carry the same second, and be sent by a catch-up from that START_TIME.
const BASE_TIME_SLACK_US: u64 = 1_000_000;
/// Descriptors beyond the requestors: lqd's own files and listeners, loadgen's.
const FD_MARGIN: u64 = 256;

/// Options of the carrier-scale catch-up (`loadgen catch-up --carrier`); `--requestors` is
/// the number of catch-up requestors, `--bindings` the population.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CarrierArgs {
    /// Run the carrier-scale catch-up: a carrier population loaded into one lqd, steady churn,
    /// `--requestors` gateways away for `--away-seconds` reconnecting at once with START_TIME
    /// while `--live-requestors` stay connected (issue 19). lqd only.
    #[arg(long)]
    pub(crate) carrier: bool,
    /// Requestors connected all along, whose live latency is measured (with --carrier).
    #[arg(long, default_value_t = 1000)]
    pub(crate) live_requestors: u32,
    /// How long the catch-up requestors stay away while the churn goes on, seconds (with
    /// --carrier).
    #[arg(long, default_value_t = 600.0)]
    pub(crate) away_seconds: f64,
    /// Churn, changes per second, for the whole run (with --carrier).
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) churn: u32,
    /// Links of the population, each behind its own access relay (with --carrier).
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) links: u16,
    /// Share of the clients holding a delegated prefix besides their address, percent (with
    /// --carrier).
    #[arg(long, default_value_t = 50)]
    pub(crate) pd_percent: u8,
    /// Share of the links whose relay is behind an aggregation relay too, percent (with
    /// --carrier).
    #[arg(long, default_value_t = 25)]
    pub(crate) two_hop_percent: u8,
    /// Live latency is reported for the changes due in the catch-up window (from the first
    /// reconnect to the last CatchUpComplete, at least a second) and, as baselines, for those
    /// due this long before and after it, seconds; the churn goes on past it (with --carrier).
    #[arg(long, default_value_t = 30.0)]
    pub(crate) baseline_seconds: f64,
    /// The population's and the churn's seed (with --carrier).
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// lqd's `journal_size`, octets (with --carrier; default: room for the population's and
    /// the run's records, at least lqd's default 128 MiB).
    #[arg(long)]
    pub(crate) journal_size: Option<u64>,
}

/// What loadgen knows of each client of the population: its link and its address lease.
pub(crate) struct Clients {
    /// Link number (1-based, `DemoSource::link_address`).
    link: Vec<u16>,
    address: Vec<Ipv6Addr>,
    iaid: Vec<u32>,
}

impl Clients {
    fn len(&self) -> usize {
        self.link.len()
    }

    fn link_of(&self, b: u32) -> Option<u16> {
        self.link.get(b as usize).copied()
    }
}

/// Client `b`'s DUID: a DUID-EN, enterprise 32473, identifier `b` in four octets.
fn duid(b: u32) -> [u8; 10] {
    let mut d = [0u8; 10];
    d[..2].copy_from_slice(&DUID_EN.to_be_bytes());
    d[2..6].copy_from_slice(&ENTERPRISE.to_be_bytes());
    d[6..].copy_from_slice(&b.to_be_bytes());
    d
}

/// The client number of a DUID made by [`duid`].
fn client_number(d: &[u8]) -> Option<u32> {
    match d {
        [t0, t1, e0, e1, e2, e3, i0, i1, i2, i3]
            if u16::from_be_bytes([*t0, *t1]) == DUID_EN
                && u32::from_be_bytes([*e0, *e1, *e2, *e3]) == ENTERPRISE =>
        {
            Some(u32::from_be_bytes([*i0, *i1, *i2, *i3]))
        }
        _ => None,
    }
}

fn hex(out: &mut Vec<u8>, octets: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for o in octets {
        out.push(DIGITS[usize::from(o >> 4)]);
        out.push(DIGITS[usize::from(o & 15)]);
    }
}

/// Appends a population change as a JSON line (`schema/lease-change.schema.json`): client `b`'s
/// DUID, the demo's link, lease and relay information, lifetimes `BASE`, `cltt` given.
fn population_line(change: &Change, b: u32, cltt_unix: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"client_id\":\"");
    hex(out, &duid(b));
    let lease = &change.lease;
    let kind = match lease.kind {
        LeaseKind::Address => "na",
        LeaseKind::Prefix => "pd",
    };
    let _ = write!(
        out,
        "\",\"link\":\"{}\",\"kind\":\"{kind}\",\"address\":\"{}\",\"prefix_len\":{},\
         \"iaid\":{},\"preferred_lifetime\":{},\"valid_lifetime\":{BASE},\"cltt\":{cltt_unix},\
         \"state\":\"active\"",
        change.link,
        lease.address,
        lease.prefix_len,
        lease.iaid,
        BASE / 2,
    );
    if let Some(relay) = &change.relay {
        out.extend_from_slice(b",\"relay\":{\"relay_ids\":[");
        for (i, id) in relay.relay_ids.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'"');
            hex(out, id);
            out.push(b'"');
        }
        out.extend_from_slice(b"],\"remote_ids\":[");
        for (i, r) in relay.remote_ids.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let _ = write!(out, "{{\"enterprise\":{},\"id\":\"", r.enterprise_number);
            hex(out, &r.remote_id);
            out.extend_from_slice(b"\"}");
        }
        out.push(b']');
        if let Some((peer, message)) = &relay.relay_message {
            let _ = write!(
                out,
                ",\"relay_message\":{{\"peer\":\"{peer}\",\"message\":\""
            );
            hex(out, message);
            out.extend_from_slice(b"\"}");
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"}\n");
}

/// Unix seconds now.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The churn: change `c` renews binding `b(c)` at `t0 + c / rate`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Churn {
    seed: u64,
    clients: u32,
    rate: u32,
}

impl Churn {
    /// The binding change `c` renews: a hash of the seed and `c` (SplitMix64's finalizer).
    fn binding(self, c: u64) -> u32 {
        let mut z = self
            .seed
            .wrapping_add(c.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        u32::try_from(z % u64::from(self.clients.max(1))).unwrap_or(0)
    }

    /// Change `c`'s intended injection time, µs after `t0`.
    fn at_us(self, c: u64) -> u64 {
        c.saturating_mul(1_000_000) / u64::from(self.rate.max(1))
    }

    /// Changes due by `us` after `t0`.
    fn due(self, us: u64) -> u64 {
        (u128::from(us) * u128::from(self.rate) / 1_000_000)
            .try_into()
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    fn line(self, clients: &Clients, c: u64, cltt_unix: u64, out: &mut Vec<u8>) {
        let b = self.binding(c);
        let i = b as usize;
        let (Some(link), Some(address), Some(iaid)) = (
            clients.link.get(i),
            clients.address.get(i),
            clients.iaid.get(i),
        ) else {
            return;
        };
        let valid = BASE
            .saturating_add(1)
            .saturating_add(u32::try_from(c).unwrap_or(u32::MAX - BASE - 2));
        out.extend_from_slice(b"{\"client_id\":\"");
        hex(out, &duid(b));
        let _ = writeln!(
            out,
            "\",\"link\":\"{}\",\"kind\":\"na\",\"address\":\"{address}\",\"iaid\":{iaid},\
             \"preferred_lifetime\":{},\"valid_lifetime\":{valid},\"cltt\":{cltt_unix},\
             \"state\":\"active\"}}",
            DemoSource::link_address(*link),
            valid / 2,
        );
    }
}

/// What the churn thread did: when each change's write to lqd's socket ended, µs after `t0`
/// (change `c` at `written_us[c]`). A live delivery's latency is taken from the change's
/// intended time; this says how much of it the injector's own lateness was.
#[derive(Debug, Clone)]
struct ChurnReport {
    written_us: Vec<u64>,
}

impl ChurnReport {
    /// The changes written (`0..written`).
    fn written(&self) -> u64 {
        self.written_us.len() as u64
    }

    /// The worst delay between a change's intended time and the end of its write, µs.
    fn max_late_us(&self, churn: Churn) -> u64 {
        (0u64..)
            .zip(&self.written_us)
            .map(|(c, &w)| w.saturating_sub(churn.at_us(c)))
            .max()
            .unwrap_or(0)
    }
}

/// Writes the churn until `stop`; `written` counts the changes written so far.
fn spawn_churn(
    mut feed: UnixStream,
    clients: Arc<Clients>,
    churn: Churn,
    t0: Instant,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
) -> Result<JoinHandle<Result<ChurnReport, String>>, String> {
    std::thread::Builder::new()
        .name("loadgen-churn".into())
        .spawn(move || {
            let mut sent = 0u64;
            let mut written_us = Vec::new();
            let mut buf = Vec::with_capacity(1 << 20);
            // No change before its time, the first included: a catch-up requestor whose sync
            // came before `t0` is then owed every change (the check counts from the sync).
            std::thread::sleep(t0.saturating_duration_since(Instant::now()));
            while !stop.load(Ordering::Acquire) {
                let now_us = since_us(t0, Instant::now());
                let due = churn.due(now_us);
                if due > sent {
                    let end = due.min(sent + MAX_BATCH);
                    buf.clear();
                    let cltt = unix_now();
                    for c in sent..end {
                        churn.line(&clients, c, cltt, &mut buf);
                    }
                    feed.write_all(&buf)
                        .map_err(|e| format!("writing the churn to lqd's feed socket: {e}"))?;
                    let done_us = since_us(t0, Instant::now());
                    written_us.resize(usize::try_from(end).unwrap_or(usize::MAX), done_us);
                    sent = end;
                    written.store(sent, Ordering::Release);
                } else {
                    let next = t0 + Duration::from_micros(churn.at_us(sent));
                    std::thread::sleep(
                        next.saturating_duration_since(Instant::now())
                            .min(Duration::from_millis(50)),
                    );
                }
            }
            Ok(ChurnReport { written_us })
        })
        .map_err(|e| format!("cannot start the churn thread: {e}"))
}

/// Microseconds from `origin` to `t` (0 when `t` is earlier).
fn since_us(origin: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(origin).as_micros()).unwrap_or(u64::MAX)
}

/// What one requestor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Role {
    /// Connected from the start to the end.
    Live,
    /// Synced, away, reconnected with START_TIME.
    CatchUp,
}

/// One delivery: binding `b`'s change `c` ([`POPULATION`]: the population's state), received
/// `at_us` after `t0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivery {
    b: u32,
    c: u32,
    at_us: u64,
}

/// What one requestor saw, all times in µs after `t0`.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    /// The requestor's number (live ones first, then the catch-up ones).
    r: usize,
    role: Role,
    link: u16,
    /// When its query started as far as the checks go: the REPLY of its live query, or of
    /// its sync before it went away.
    from_us: u64,
    /// When it (re)connected, for the measured connection.
    connected_us: u64,
    /// Its REPLY on the measured connection.
    ready_us: Option<u64>,
    caught_up_us: Option<u64>,
    /// Deliveries before its CatchUpComplete.
    caught_up_after: usize,
    deliveries: Vec<Delivery>,
    error: Option<String>,
}

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    Reply {
        status: Status,
        base_time: Option<ServerTime>,
    },
    Data {
        b: u32,
        c: u32,
    },
    CatchUpComplete,
    Keepalive,
}

/// Reads one message of a requestor's stream.
fn classify(clients: &Clients, message: &[u8]) -> Result<Msg, String> {
    let m = MessageRepr::parse(message).map_err(|e| format!("unparsable message: {e}"))?;
    if m.xid().map(|x| x.value()) != Some(XID) {
        return Err(format!("a message with xid {:?}", m.xid()));
    }
    let status = m.options.status().map_or(Status::Success, |s| s.status);
    match m.msg_type() {
        MessageType::LeasequeryReply => Ok(Msg::Reply {
            status,
            base_time: m.options.base_time(),
        }),
        MessageType::LeasequeryData => match m.options.get(OptionCode::ClientData) {
            Some(DhcpOption::ClientData(cd)) => {
                let id = cd.client_id().ok_or("client data without a client id")?;
                let b = client_number(id.as_bytes())
                    .filter(|&b| (b as usize) < clients.len())
                    .ok_or_else(|| format!("client data of an unknown client {id:?}"))?;
                let mine = clients.address.get(b as usize).copied();
                let (mut valid, mut clt) = (None, None);
                for o in cd.iter() {
                    match o {
                        DhcpOption::IaAddr(a) if Some(a.address) == mine => {
                            valid = Some(a.valid_lifetime);
                        }
                        DhcpOption::IaAddr(a) => {
                            return Err(format!(
                                "binding {b} with a foreign address {}",
                                a.address
                            ));
                        }
                        DhcpOption::CltTime(t) => clt = Some(t),
                        _ => {}
                    }
                }
                let valid = valid.ok_or_else(|| format!("binding {b} without its address"))?;
                let clt = clt.ok_or("client data without CLT_TIME")?;
                let granted = valid.saturating_add(clt);
                let c = match granted.checked_sub(BASE) {
                    Some(0) => POPULATION,
                    Some(g) => g - 1,
                    None => return Err(format!("binding {b} with a lifetime of {granted} s")),
                };
                Ok(Msg::Data { b, c })
            }
            _ => match m.options.status() {
                Some(_) if status == Status::CatchUpComplete => Ok(Msg::CatchUpComplete),
                Some(_) => Err(format!("LEASEQUERY-DATA with {status}")),
                None => Ok(Msg::Keepalive),
            },
        },
        MessageType::LeasequeryDone => Err(format!("LEASEQUERY-DONE with {status}")),
        t => Err(format!("an unexpected {t}")),
    }
}

/// Requestor `link`'s ACTIVELEASEQUERY, framed, with START_TIME when catching up.
fn query_frame(link: u16, start: Option<ServerTime>) -> Result<Vec<u8>, String> {
    let mut b = MessageBuilder::active_leasequery(XID)
        .client_id(&REQUESTOR)
        .oro(&[OptionCode::LqBaseTime])
        .lq_query(
            QueryType::ByLinkAddress,
            DemoSource::link_address(link),
            |q| q,
        );
    if let Some(t) = start {
        b = b.start_time(t);
    }
    b.build_frame()
        .map_err(|e| format!("building the ACTIVELEASEQUERY: {e}"))
}

/// The catch-up requestors' sync: each connects, starts its query, takes the REPLY's
/// base-time and disconnects. Their base-times and when each REPLY came, µs after `t0`.
fn sync(
    addr: SocketAddr,
    links: &[u16],
    clients: &Clients,
    t0: Instant,
) -> Result<Vec<(ServerTime, u64)>, String> {
    let mut out = Vec::with_capacity(links.len());
    let mut chunk = vec![0u8; 64 * 1024];
    for (j, &link) in links.iter().enumerate() {
        let frame = query_frame(link, None)?;
        let mut s = std::net::TcpStream::connect(addr)
            .map_err(|e| format!("catch-up requestor {j}: connecting: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .and_then(|()| s.write_all(&frame))
            .map_err(|e| format!("catch-up requestor {j}: {e}"))?;
        let mut decoder = FrameDecoder::default();
        let mut buf: Vec<u8> = Vec::new();
        // The first message must be the REPLY; what follows it is not read.
        let got = loop {
            let n = s
                .read(&mut chunk)
                .map_err(|e| format!("catch-up requestor {j}: reading its REPLY: {e}"))?;
            if n == 0 {
                return Err(format!("catch-up requestor {j}: closed before its REPLY"));
            }
            buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
            if let Decoded::Frame { message, .. } = decoder
                .decode(&buf)
                .map_err(|e| format!("catch-up requestor {j}: bad frame: {e}"))?
            {
                match classify(clients, message)? {
                    Msg::Reply {
                        status: Status::Success,
                        base_time: Some(t),
                    } => break t,
                    other => {
                        return Err(format!(
                            "catch-up requestor {j}: {other:?} instead of its REPLY"
                        ));
                    }
                }
            }
        };
        out.push((got, since_us(t0, Instant::now())));
    }
    Ok(out)
}

/// Counters the receivers keep for the driver.
#[derive(Default)]
struct Shared {
    live_ready: AtomicUsize,
    caught_up: AtomicUsize,
    failed: AtomicUsize,
    deliveries: AtomicU64,
    /// The catch-up requestors' START_TIMEs: set to make them reconnect.
    reconnect: OnceLock<Vec<ServerTime>>,
    stop: AtomicBool,
    errors: Mutex<Vec<String>>,
}

impl Shared {
    fn error(&self, e: String) {
        if let Ok(mut errors) = self.errors.lock() {
            if errors.len() < 20 {
                errors.push(e);
            }
        }
    }
}

struct Conn {
    /// Index into the plan's requestors.
    r: usize,
    stream: TcpStream,
    decoder: FrameDecoder,
    buf: Vec<u8>,
    rec: Record,
    closed: bool,
}

/// The requestors: index `< live` a live one, then the catch-up ones; each with its link.
struct Plan {
    addr: SocketAddr,
    t0: Instant,
    clients: Arc<Clients>,
    links: Vec<u16>,
    live: usize,
}

struct Worker {
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    poll: Poll,
    conns: Vec<Conn>,
    mine: Vec<usize>,
    reconnected: bool,
}

impl Worker {
    fn run(mut self) -> Result<Vec<Record>, String> {
        let live: Vec<usize> = self
            .mine
            .iter()
            .copied()
            .filter(|&r| r < self.plan.live)
            .collect();
        for r in live {
            self.open(r, None)?;
        }
        let mut events = Events::with_capacity(1024);
        let mut pending: Vec<usize> = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if !self.reconnected {
                if let Some(starts) = self.shared.reconnect.get().cloned() {
                    self.reconnected = true;
                    let cu: Vec<usize> = self
                        .mine
                        .iter()
                        .copied()
                        .filter(|&r| r >= self.plan.live)
                        .collect();
                    for r in cu {
                        let start = starts.get(r - self.plan.live).copied();
                        if start.is_none() {
                            return Err(format!("no START_TIME for requestor {r}"));
                        }
                        self.open(r, start)?;
                    }
                }
            }
            let timeout = if pending.is_empty() {
                Duration::from_millis(20)
            } else {
                Duration::ZERO
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("epoll: {e}")),
            }
            pending.extend(events.iter().map(|e| e.token().0));
            pending.sort_unstable();
            pending.dedup();
            for key in std::mem::take(&mut pending) {
                if self.service(key, &mut chunk) {
                    pending.push(key);
                }
            }
            if self.shared.stop.load(Ordering::Acquire) {
                break;
            }
        }
        Ok(self.conns.into_iter().map(|c| c.rec).collect())
    }

    fn open(&mut self, r: usize, start: Option<ServerTime>) -> Result<(), String> {
        let link = *self.plan.links.get(r).ok_or("no such requestor")?;
        let frame = query_frame(link, start)?;
        let connected_us = since_us(self.plan.t0, Instant::now());
        let std = super::receiver::connect(self.plan.addr, &frame)
            .map_err(|e| format!("requestor {r}: connecting to {}: {e}", self.plan.addr))?;
        let mut stream = TcpStream::from_std(std);
        let key = self.conns.len();
        self.poll
            .registry()
            .register(&mut stream, Token(key), Interest::READABLE)
            .map_err(|e| format!("epoll: {e}"))?;
        self.conns.push(Conn {
            r,
            stream,
            decoder: FrameDecoder::default(),
            buf: Vec::new(),
            rec: Record {
                r,
                role: if start.is_some() {
                    Role::CatchUp
                } else {
                    Role::Live
                },
                link,
                from_us: connected_us,
                connected_us,
                ready_us: None,
                caught_up_us: None,
                caught_up_after: 0,
                deliveries: Vec::new(),
                error: None,
            },
            closed: false,
        });
        Ok(())
    }

    /// Reads what connection `key` has, up to the budget; true when it may have more.
    fn service(&mut self, key: usize, chunk: &mut [u8]) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        if conn.closed {
            return false;
        }
        for _ in 0..READ_BUDGET {
            let n = match conn.stream.read(chunk) {
                Ok(0) => {
                    fail(conn, &self.shared, "lqd closed the connection".to_owned());
                    return false;
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    fail(conn, &self.shared, format!("read: {e}"));
                    return false;
                }
            };
            let now_us = since_us(self.plan.t0, Instant::now());
            let bytes = chunk.get(..n).unwrap_or_default();
            if let Err(e) = input(conn, bytes, now_us, &self.plan.clients, &self.shared) {
                fail(conn, &self.shared, e);
                return false;
            }
        }
        true
    }
}

fn fail(conn: &mut Conn, shared: &Shared, e: String) {
    let e = format!("requestor {} (link {}): {e}", conn.r, conn.rec.link);
    shared.error(e.clone());
    conn.rec.error.get_or_insert(e);
    conn.closed = true;
    shared.failed.fetch_add(1, Ordering::AcqRel);
}

/// Takes octets read from a connection.
fn input(
    conn: &mut Conn,
    bytes: &[u8],
    now_us: u64,
    clients: &Clients,
    shared: &Shared,
) -> Result<(), String> {
    conn.buf.extend_from_slice(bytes);
    let mut pos = 0;
    let mut delivered = 0u64;
    loop {
        let rest = conn.buf.get(pos..).unwrap_or_default();
        let (message, consumed) = match conn
            .decoder
            .decode(rest)
            .map_err(|e| format!("bad frame: {e}"))?
        {
            Decoded::Frame { message, consumed } => (message, consumed),
            Decoded::Incomplete { .. } => break,
        };
        let msg = classify(clients, message)?;
        pos += consumed;
        let rec = &mut conn.rec;
        match msg {
            Msg::Reply {
                status: Status::Success,
                ..
            } if rec.ready_us.is_none() => {
                rec.ready_us = Some(now_us);
                if rec.role == Role::Live {
                    rec.from_us = now_us;
                    shared.live_ready.fetch_add(1, Ordering::AcqRel);
                }
            }
            Msg::Reply { status, .. } => return Err(format!("LEASEQUERY-REPLY with {status}")),
            _ if rec.ready_us.is_none() => return Err(format!("{msg:?} before the REPLY")),
            Msg::Data { b, c } => {
                rec.deliveries.push(Delivery {
                    b,
                    c,
                    at_us: now_us,
                });
                delivered += 1;
            }
            Msg::CatchUpComplete if rec.role == Role::CatchUp && rec.caught_up_us.is_none() => {
                rec.caught_up_us = Some(now_us);
                rec.caught_up_after = rec.deliveries.len();
                shared.caught_up.fetch_add(1, Ordering::AcqRel);
            }
            Msg::CatchUpComplete => return Err("an unexpected CatchUpComplete".to_owned()),
            Msg::Keepalive => {}
        }
    }
    conn.buf.drain(..pos.min(conn.buf.len()));
    if delivered > 0 {
        shared.deliveries.fetch_add(delivered, Ordering::Relaxed);
    }
    Ok(())
}

/// The running receivers.
struct Receivers {
    handles: Vec<JoinHandle<Result<Vec<Record>, String>>>,
    shared: Arc<Shared>,
}

impl Receivers {
    /// `workers` threads for the live requestors and as many for the catch-up ones: a
    /// thread busy with the reconnect storm (its connects are blocking) must not hold up the
    /// live requestors' reads, or loadgen's own delay would show as lqd's latency.
    fn start(plan: Plan, workers: usize) -> Result<Self, String> {
        let n = plan.links.len();
        let live = plan.live;
        let plan = Arc::new(plan);
        let shared = Arc::new(Shared::default());
        let mut handles = Vec::new();
        for (group, range) in [("live", 0..live), ("cu", live..n)] {
            let count = workers.clamp(1, range.len().max(1));
            for w in 0..count {
                let mine: Vec<usize> = range.clone().skip(w).step_by(count).collect();
                if mine.is_empty() {
                    continue;
                }
                let worker = Worker {
                    plan: Arc::clone(&plan),
                    shared: Arc::clone(&shared),
                    poll: Poll::new().map_err(|e| format!("epoll: {e}"))?,
                    conns: Vec::new(),
                    mine,
                    reconnected: false,
                };
                let shared = Arc::clone(&shared);
                handles.push(
                    std::thread::Builder::new()
                        .name(format!("loadgen-rx-{group}-{w}"))
                        .spawn(move || {
                            let out = worker.run();
                            if let Err(e) = &out {
                                shared.error(e.clone());
                                shared.failed.fetch_add(1, Ordering::AcqRel);
                            }
                            out
                        })
                        .map_err(|e| format!("cannot start a receiver thread: {e}"))?,
                );
            }
        }
        Ok(Self { handles, shared })
    }

    /// Stops the workers; every requestor's record (in no particular order).
    fn finish(self) -> Result<Vec<Record>, String> {
        self.shared.stop.store(true, Ordering::Release);
        let mut out = Vec::new();
        for h in self.handles {
            out.extend(
                h.join()
                    .unwrap_or_else(|_| Err("a receiver thread panicked".to_owned()))?,
            );
        }
        Ok(out)
    }
}

/// What the check found for one requestor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Checked {
    /// Deliveries before CatchUpComplete (catch-up requestors).
    caught_up_records: u64,
    /// Bindings of its link changed while it was away (catch-up requestors): what a catch-up
    /// that sent each binding's newest state once would send.
    changed_while_away: u64,
    /// Changes it never received because a newer change of the same binding came instead.
    coalesced: u64,
    errors: Vec<String>,
}

/// The churn's changes, by link and binding: `(link, b, c)` sorted.
pub(crate) struct ByLink {
    changes: Vec<(u16, u32, u32)>,
}

impl ByLink {
    fn new(churn: Churn, clients: &Clients, written: u64) -> Self {
        let mut changes: Vec<(u16, u32, u32)> = (0..written)
            .filter_map(|c| {
                let b = churn.binding(c);
                Some((clients.link_of(b)?, b, u32::try_from(c).ok()?))
            })
            .collect();
        changes.sort_unstable();
        Self { changes }
    }

    /// Link `link`'s changes, by binding then change.
    fn of(&self, link: u16) -> &[(u16, u32, u32)] {
        let lo = self.changes.partition_point(|x| x.0 < link);
        let hi = self.changes.partition_point(|x| x.0 <= link);
        self.changes.get(lo..hi).unwrap_or_default()
    }
}

/// Timing bounds of the checks, µs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// The worst lateness of the churn's writes.
    max_late_us: u64,
    /// Changes written in all (`0..written`).
    written: u64,
}

/// Checks one requestor's deliveries against the churn (the module's doc says what).
pub(crate) fn check(
    rec: &Record,
    churn: Churn,
    clients: &Clients,
    by_link: &ByLink,
    bounds: Bounds,
) -> Checked {
    let mut out = Checked::default();
    let err = |out: &mut Checked, e: String| {
        if out.errors.len() < 5 {
            out.errors.push(e);
        }
    };
    if let Some(e) = &rec.error {
        err(&mut out, e.clone());
    }
    let mine = by_link.of(rec.link);
    // A binding's changes the requestor may skip over: those after its query started.
    let changes_of = |b: u32| -> &[(u16, u32, u32)] {
        let lo = mine.partition_point(|x| x.1 < b);
        let hi = mine.partition_point(|x| x.1 <= b);
        mine.get(lo..hi).unwrap_or_default()
    };
    let too_old = rec.from_us.saturating_sub(BASE_TIME_SLACK_US);
    let mut last: HashMap<u32, u32> = HashMap::new();
    let mut at_catch_up: Option<HashMap<u32, u32>> = None;
    for (i, d) in rec.deliveries.iter().enumerate() {
        if rec.role == Role::CatchUp && i == rec.caught_up_after && rec.caught_up_us.is_some() {
            at_catch_up = Some(last.clone());
        }
        if i < rec.caught_up_after {
            out.caught_up_records += 1;
        }
        let b = d.b;
        if d.c == POPULATION {
            // The churn starts more than a second after the population's last record (see
            // `run`), so no START_TIME reaches back to it.
            err(&mut out, format!("binding {b}'s state from the population"));
            continue;
        }
        if clients.link_of(b) != Some(rec.link) {
            err(
                &mut out,
                format!("binding {b} of link {:?}, not its own", clients.link_of(b)),
            );
            continue;
        }
        let c = u64::from(d.c);
        if c >= bounds.written || churn.binding(c) != b {
            err(
                &mut out,
                format!("change {c} for binding {b}: never injected for it"),
            );
            continue;
        }
        if churn.at_us(c) + bounds.max_late_us < too_old {
            err(
                &mut out,
                format!("change {c} of binding {b}, from before its query's start"),
            );
        }
        let prev = last.get(&b).copied();
        if prev.is_some_and(|p| p >= d.c) {
            err(
                &mut out,
                format!(
                    "change {c} of binding {b} after change {prev:?}: repeated or out of order"
                ),
            );
            continue;
        }
        out.coalesced += changes_of(b)
            .iter()
            .filter(|x| {
                prev.is_none_or(|p| x.2 > p)
                    && x.2 < d.c
                    && churn.at_us(u64::from(x.2)) >= rec.from_us
            })
            .count() as u64;
        last.insert(b, d.c);
    }
    if rec.role == Role::CatchUp {
        if rec.caught_up_us.is_none() {
            err(&mut out, "no CatchUpComplete".to_owned());
        }
        let held = at_catch_up.unwrap_or_else(|| last.clone());
        // Surely journaled before the reconnect, and surely after the START_TIME.
        let before = rec
            .connected_us
            .saturating_sub(bounds.max_late_us + APPLY_MARGIN_US);
        let mut b_prev = None;
        for &(_, b, c) in mine {
            let at = churn.at_us(u64::from(c));
            if at >= rec.from_us && at < rec.connected_us && b_prev != Some(b) {
                out.changed_while_away += 1;
                b_prev = Some(b);
            }
        }
        let mut must: HashMap<u32, u32> = HashMap::new();
        for &(_, b, c) in mine {
            let at = churn.at_us(u64::from(c));
            if at >= rec.from_us && at < before {
                must.insert(b, c);
            }
        }
        let mut missing: Vec<(u32, u32)> = must
            .iter()
            .filter(|(b, c)| held.get(b).is_none_or(|h| h < c))
            .map(|(b, c)| (*b, *c))
            .collect();
        missing.sort_unstable();
        if let Some((b, c)) = missing.first() {
            err(
                &mut out,
                format!(
                    "CatchUpComplete without {} binding(s) changed while away, such as binding \
                     {b}'s change {c}",
                    missing.len()
                ),
            );
        }
    }
    // By the end: the last change of every binding of the link changed since the start.
    let mut must: HashMap<u32, u32> = HashMap::new();
    for &(_, b, c) in mine {
        if churn.at_us(u64::from(c)) >= rec.from_us {
            must.insert(b, c);
        }
    }
    let mut wrong: Vec<(u32, u32, Option<u32>)> = must
        .iter()
        .filter(|(b, c)| last.get(b) != Some(c))
        .map(|(b, c)| (*b, *c, last.get(b).copied()))
        .collect();
    wrong.sort_unstable();
    if let Some((b, c, got)) = wrong.first() {
        err(
            &mut out,
            format!(
                "by the end, {} binding(s) without their last change, such as binding {b}: \
                 change {c}, received {got:?}",
                wrong.len()
            ),
        );
    }
    out
}

/// Percentiles of a latency histogram, ms.
#[derive(Debug, Clone, Copy, Serialize)]
struct Latency {
    deliveries: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |v: u64| v as f64 / 1e3;
        Self {
            deliveries: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }

    fn cell(self) -> String {
        if self.deliveries == 0 {
            return "no deliveries".to_owned();
        }
        format!(
            "{:.2} / {:.2} / {:.1} ms ({})",
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            crate::summary::number(self.deliveries as f64)
        )
    }
}

/// Percentiles of a list of counts or times.
#[derive(Debug, Clone, Copy, Serialize)]
struct Spread {
    min: f64,
    p50: f64,
    p99: f64,
    max: f64,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Self {
        v.sort_by(f64::total_cmp);
        let at = |q: f64| {
            v.get(((v.len() as f64 - 1.0) * q).round().max(0.0) as usize)
                .copied()
                .unwrap_or(0.0)
        };
        Self {
            min: at(0.0),
            p50: at(0.5),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// Percentiles of a list of times, ms.
#[derive(Debug, Clone, Copy, Serialize)]
struct TimeSpread {
    min_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl TimeSpread {
    fn of(ms: Vec<f64>) -> Self {
        let s = Spread::of(ms);
        Self {
            min_ms: s.min,
            p50_ms: s.p50,
            p99_ms: s.p99,
            max_ms: s.max,
        }
    }
}

/// lqd's CPU time at the phases' bounds, seconds.
#[derive(Debug, Clone, Copy, Serialize)]
struct Cpu {
    /// Loading the population.
    load_seconds: f64,
    /// From the churn's start to the first reconnect (the live requestors, the sync, away).
    away_percent: f64,
    /// From the first reconnect to the last CatchUpComplete.
    catch_up_percent: f64,
    catch_up_seconds: f64,
    /// After it, to the end of the churn.
    after_percent: f64,
}

/// Everything the run measured.
#[derive(Debug, Clone, Serialize)]
struct Report {
    bindings: usize,
    leases: u64,
    links: u16,
    pd_percent: u8,
    two_hop_percent: u8,
    churn_per_sec: u32,
    catch_up_requestors: usize,
    live_requestors: usize,
    away_seconds: f64,
    journal_size: u64,
    load_seconds: f64,
    /// The churn's changes written, and its worst lateness.
    churn_changes: u64,
    churn_max_late_ms: f64,
    /// From the first reconnect to the last CatchUpComplete.
    all_caught_up_seconds: f64,
    caught_up: usize,
    /// Each catch-up requestor's time from its reconnect to its CatchUpComplete, ms.
    catch_up_per_requestor: TimeSpread,
    /// Records each received before its CatchUpComplete.
    records_caught_up: Spread,
    records_caught_up_total: u64,
    /// Bindings of each one's link changed while it was away.
    changed_while_away: Spread,
    catch_up_deliveries_per_sec: f64,
    catch_up_coalesced: u64,
    live_coalesced: u64,
    /// Live requestors' latency, from each change's intended injection time.
    live_before: Latency,
    live_during: Latency,
    /// The same deliveries, from the end of their change's write to lqd's socket.
    live_during_from_write: Latency,
    /// How late the injector wrote the changes due in the catch-up window (the part of
    /// `live_during` that is loadgen's).
    churn_late_during: Latency,
    /// lqd's turns from the reconnect to the last CatchUpComplete (its
    /// `lqd_loop_turn_seconds`), when it times them.
    lqd_turns_during: Option<TurnsBetween>,
    live_after: Latency,
    live_whole_run: Latency,
    live_p99_goal_met: bool,
    cpu: Cpu,
    rss_after_load_kib: u64,
    rss_end_kib: u64,
    rss_anon_end_kib: u64,
    rss_file_end_kib: u64,
    hwm_kib: u64,
    load_average: String,
    failures: Vec<String>,
}

/// Loads the population into lqd through `feed`; what loadgen keeps of it, its lease count,
/// and the last lease (client, address) to ask lqd about.
fn load_population(
    settings: &DemoSettings,
    feed: &mut UnixStream,
) -> Result<(Clients, u64, (u32, Ipv6Addr)), String> {
    let mut source = DemoSource::new(settings.demo_config());
    let n = settings.clients;
    let mut clients = Clients {
        link: Vec::with_capacity(n),
        address: Vec::with_capacity(n),
        iaid: Vec::with_capacity(n),
    };
    let cltt = unix_now();
    let now = lqd::feed::system_time();
    let mut buf = Vec::with_capacity(1 << 20);
    let mut previous: Option<Box<[u8]>> = None;
    let mut leases = 0u64;
    let mut last = (0u32, Ipv6Addr::UNSPECIFIED);
    while !source.initial_done() {
        let change = source.next_change(now);
        if !change.lease.state.is_active() {
            return Err(format!("unexpected initial change {change:?}"));
        }
        if previous.as_deref() != Some(&change.client_id[..]) {
            let link = change.link.segments()[3];
            if DemoSource::link_address(link) != change.link {
                return Err(format!("a demo link {} loadgen cannot name", change.link));
            }
            clients.link.push(link);
            clients.address.push(Ipv6Addr::UNSPECIFIED);
            clients.iaid.push(0);
            previous = Some(change.client_id.clone());
        }
        let b = u32::try_from(clients.len() - 1).map_err(|_| "too many clients")?;
        if change.lease.kind == LeaseKind::Address {
            if let (Some(a), Some(i)) = (clients.address.last_mut(), clients.iaid.last_mut()) {
                if !a.is_unspecified() {
                    return Err(format!("client {b} with two addresses"));
                }
                *a = change.lease.address;
                *i = change.lease.iaid;
            }
        }
        population_line(&change, b, cltt, &mut buf);
        leases += 1;
        if change.lease.kind == LeaseKind::Address {
            last = (b, change.lease.address);
        }
        if buf.len() >= 1 << 20 {
            feed.write_all(&buf)
                .map_err(|e| format!("writing the population to lqd's feed socket: {e}"))?;
            buf.clear();
        }
    }
    feed.write_all(&buf)
        .map_err(|e| format!("writing the population to lqd's feed socket: {e}"))?;
    if clients.len() != n {
        return Err(format!(
            "the demo population has {} clients, not {n}",
            clients.len()
        ));
    }
    if let Some(b) = clients.address.iter().position(Ipv6Addr::is_unspecified) {
        return Err(format!("client {b} without an address"));
    }
    Ok((clients, leases, last))
}

/// Waits until lqd answers `address` with client `b`: the whole population is in.
fn wait_loaded(lqd: &mut Lqd, b: u32, address: Ipv6Addr, limit: Duration) -> Result<(), String> {
    let started = Instant::now();
    let sock = crate::scale::udp_to(lqd.addr)?;
    let mut buf = vec![0u8; 65_536];
    loop {
        lqd.check_alive()?;
        if crate::scale::who_leases(&sock, address, &mut buf).as_deref() == Some(&duid(b)[..]) {
            return Ok(());
        }
        if started.elapsed() > limit {
            return Err(format!(
                "lqd did not hold the population's last lease within {limit:?}; log:\n{}",
                lqd.log_tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `done` or `limit`, failing early when lqd exits or every requestor failed;
/// prints progress every 10 s.
fn wait_until(
    lqd: &mut Lqd,
    shared: &Shared,
    limit: Duration,
    what: &str,
    done: impl Fn(&Shared) -> bool,
) -> Result<bool, String> {
    let started = Instant::now();
    let mut said = Instant::now();
    while !done(shared) {
        lqd.check_alive()?;
        if started.elapsed() > limit {
            return Ok(false);
        }
        if said.elapsed() >= Duration::from_secs(10) {
            eprintln!(
                "loadgen: {what}: {} s; live ready {}, caught up {}, failed {}, deliveries {}",
                started.elapsed().as_secs(),
                shared.live_ready.load(Ordering::Acquire),
                shared.caught_up.load(Ordering::Acquire),
                shared.failed.load(Ordering::Acquire),
                shared.deliveries.load(Ordering::Relaxed),
            );
            said = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(true)
}

/// Runs `loadgen catch-up --carrier`.
pub(crate) fn run(args: &super::catchup::Args) -> Result<Outcome, String> {
    let a = &args.carrier;
    let common = &args.common;
    let cu = *args
        .requestors
        .first()
        .ok_or("--requestors needs a value")? as usize;
    if args.requestors.len() > 1 {
        return Err("--carrier takes one --requestors value".to_owned());
    }
    if !(a.away_seconds > 0.0 && a.away_seconds.is_finite()) {
        return Err("--away-seconds must be positive".to_owned());
    }
    if !(a.baseline_seconds >= 0.0 && a.baseline_seconds.is_finite()) {
        return Err("--baseline-seconds must be 0 or more".to_owned());
    }
    if common.filter.is_some_and(|f| f != super::FilterKind::Link) {
        return Err("--carrier: each gateway asks for its own link; --filter link only".to_owned());
    }
    let live = a.live_requestors as usize;
    let bindings = common.bindings as usize;
    let links: Vec<u16> = (0..live + cu)
        .map(|r| {
            // Live requestors first (links after the catch-up ones'), then the catch-up ones
            // on links 1, 2, …
            let slot = if r < live { cu + r } else { r - live };
            u16::try_from(slot % usize::from(a.links) + 1).unwrap_or(1)
        })
        .collect();
    let fds = (live + cu) as u64 * 2 + FD_MARGIN;
    let got = raise_nofile(fds)?;
    if got < fds {
        return Err(format!(
            "{} requestors need {fds} open files, and RLIMIT_NOFILE stays at {got}",
            live + cu
        ));
    }
    let settings = DemoSettings {
        clients: bindings,
        links: a.links,
        changes_per_sec: 0,
        seed: a.seed,
        churn_limit: Some(0),
        pd_percent: a.pd_percent,
        relayed_percent: 100,
        two_hop_percent: a.two_hop_percent,
    };
    // Room for the population (1.5 leases a client) and the run's churn, 128 octets a record.
    let run_seconds = a.away_seconds + 2.0 * a.baseline_seconds + args.timeout_seconds + 120.0;
    let records = bindings as f64 * 1.6 + f64::from(a.churn) * run_seconds;
    let journal = a
        .journal_size
        .unwrap_or_else(|| ((records * 128.0) as u64).max(128 << 20).div_ceil(1 << 20) << 20);
    // lqd's metrics, read twice: its turns over the catch-up.
    let metrics = crate::process::fresh_port()?;
    let (mut lqd, mut feed) = Lqd::start_jsonl(
        &common.lqd,
        common.keep_state,
        // Every requestor is [::1]: one requestor to lqd's per-requestor limit.
        &format!(
            "journal_size = {journal}\nmax_connections = {conns}\n\
             max_connections_per_requestor = {conns}\nmetrics_listen = \"{metrics}\"\n",
            conns = live + cu + 1000
        ),
    )?;
    eprintln!(
        "loadgen: lqd (pid {}) started; loading {bindings} bindings ({} links, {} % with a \
         prefix, all relayed), journal {journal} octets",
        lqd.pid(),
        a.links,
        a.pd_percent
    );
    let spawned = Instant::now();
    let (clients, leases, last) = load_population(&settings, &mut feed)?;
    let limit = Duration::from_secs(300) + Duration::from_micros(leases * 200);
    wait_loaded(&mut lqd, last.0, last.1, limit)?;
    let load = spawned.elapsed();
    let loaded = proc_stats(lqd.pid())?;
    eprintln!(
        "loadgen: lqd holds {bindings} bindings ({leases} leases) after {:.1} s; RSS {:.0} MiB",
        load.as_secs_f64(),
        mib(loaded.rss_kib)
    );
    let clients = Arc::new(clients);
    // The base-time is in whole seconds, and a catch-up sends the records of START_TIME's
    // second: with the population's last record more than a second before any query starts,
    // none of it is due to a catch-up (it matters in small runs, whose load takes a second).
    std::thread::sleep(Duration::from_millis(1100));
    let churn = Churn {
        seed: a.seed,
        clients: u32::try_from(bindings).map_err(|_| "too many bindings")?,
        rate: a.churn,
    };
    let t0 = Instant::now() + Duration::from_millis(10);
    let stop_churn = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let churn_thread = spawn_churn(
        feed,
        Arc::clone(&clients),
        churn,
        t0,
        Arc::clone(&stop_churn),
        Arc::clone(&written),
    )?;
    let result = measure(
        args,
        &mut lqd,
        &clients,
        churn,
        t0,
        &links,
        live,
        (load, loaded),
        (leases, journal, metrics),
        (&stop_churn, &written, churn_thread),
    );
    stop_churn.store(true, Ordering::Release);
    result
}

/// The run after the load: the requestors, the away time, the catch-up, the checks.
#[allow(clippy::too_many_arguments)]
fn measure(
    args: &super::catchup::Args,
    lqd: &mut Lqd,
    clients: &Arc<Clients>,
    churn: Churn,
    t0: Instant,
    links: &[u16],
    live: usize,
    (load, loaded): (Duration, crate::process::ProcStats),
    (leases, journal, metrics): (u64, u64, SocketAddr),
    (stop_churn, written, churn_thread): (
        &AtomicBool,
        &AtomicU64,
        JoinHandle<Result<ChurnReport, String>>,
    ),
) -> Result<Outcome, String> {
    let a = &args.carrier;
    let cu = links.len() - live;
    let cpu_start = proc_stats(lqd.pid())?.cpu_secs;
    let receivers = Receivers::start(
        Plan {
            addr: lqd.addr,
            t0,
            clients: Arc::clone(clients),
            links: links.to_vec(),
            live,
        },
        args.common.workers.map_or_else(
            || std::thread::available_parallelism().map_or(2, |n| n.get()),
            |w| w as usize,
        ),
    )?;
    let shared = Arc::clone(&receivers.shared);
    if !wait_until(
        lqd,
        &shared,
        Duration::from_secs(120),
        "live requestors",
        |s| s.live_ready.load(Ordering::Acquire) + s.failed.load(Ordering::Acquire) >= live,
    )? {
        return Err("the live requestors did not all start within 120 s".to_owned());
    }
    eprintln!("loadgen: {live} live requestors connected; syncing {cu} catch-up requestors");
    let synced = sync(lqd.addr, links.get(live..).unwrap_or_default(), clients, t0)?;
    let away_from = Instant::now();
    eprintln!(
        "loadgen: {cu} catch-up requestors synced and gone; away for {} s at {} changes/s",
        a.away_seconds, a.churn
    );
    let mut say = away_from + Duration::from_secs(60);
    while away_from.elapsed().as_secs_f64() < a.away_seconds {
        lqd.check_alive()?;
        let left = a.away_seconds - away_from.elapsed().as_secs_f64();
        if Instant::now() >= say {
            eprintln!(
                "loadgen: away, {left:.0} s left; {} changes written, {} live deliveries, {} \
                 requestors failed",
                written.load(Ordering::Acquire),
                shared.deliveries.load(Ordering::Relaxed),
                shared.failed.load(Ordering::Acquire),
            );
            say += Duration::from_secs(60);
        }
        std::thread::sleep(Duration::from_millis(50).min(Duration::from_secs_f64(left.max(0.0))));
    }
    let turns_before = crate::scrape::loop_turn_buckets(metrics);
    let cpu_reconnect = proc_stats(lqd.pid())?.cpu_secs;
    let reconnect_at = Instant::now();
    let _ = shared
        .reconnect
        .set(synced.iter().map(|(t, _)| *t).collect());
    eprintln!("loadgen: {cu} catch-up requestors reconnecting with START_TIME");
    let all = wait_until(
        lqd,
        &shared,
        Duration::from_secs_f64(args.timeout_seconds),
        "catching up",
        |s| s.caught_up.load(Ordering::Acquire) + s.failed.load(Ordering::Acquire) >= cu,
    )?;
    let caught_at = Instant::now();
    let cpu_caught = proc_stats(lqd.pid())?.cpu_secs;
    let turns_after = crate::scrape::loop_turn_buckets(metrics);
    eprintln!(
        "loadgen: {} of {cu} caught up in {:.3} s (as seen by the driver); {} s more of churn",
        shared.caught_up.load(Ordering::Acquire),
        caught_at.duration_since(reconnect_at).as_secs_f64(),
        a.baseline_seconds
    );
    // The catch-up window is at least a second long (see below), then the baseline after it.
    std::thread::sleep(Duration::from_secs_f64(a.baseline_seconds + 1.0));
    stop_churn.store(true, Ordering::Release);
    let churned = churn_thread
        .join()
        .unwrap_or_else(|_| Err("the churn thread panicked".to_owned()))?;
    let cpu_end = proc_stats(lqd.pid())?.cpu_secs;
    let churn_end = Instant::now();
    // Drain: until no delivery came for a second, or --drain-seconds.
    let mut seen = shared.deliveries.load(Ordering::Acquire);
    let mut quiet = Instant::now();
    while churn_end.elapsed().as_secs_f64() < args.common.drain_seconds
        && quiet.elapsed() < Duration::from_secs(1)
    {
        std::thread::sleep(Duration::from_millis(50));
        let now = shared.deliveries.load(Ordering::Acquire);
        if now != seen {
            seen = now;
            quiet = Instant::now();
        }
    }
    let mem = proc_memory(lqd.pid())?;
    let mut failures: Vec<String> = shared.errors.lock().map(|e| e.clone()).unwrap_or_default();
    let mut records = receivers.finish()?;
    // The catch-up requestors' query started at their sync.
    for rec in &mut records {
        if rec.role == Role::CatchUp {
            if let Some((_, at)) = synced.get(rec.r.wrapping_sub(live)) {
                rec.from_us = *at;
            }
        }
    }
    if records.len() != links.len() {
        failures.push(format!(
            "{} of {} requestors connected",
            records.len(),
            links.len()
        ));
    }
    if !all {
        failures.push(format!(
            "{} of {cu} catch-up requestors reached CatchUpComplete within {} s",
            shared.caught_up.load(Ordering::Acquire),
            args.timeout_seconds
        ));
    }
    let bounds = Bounds {
        max_late_us: churned.max_late_us(churn),
        written: churned.written(),
    };
    let by_link = ByLink::new(churn, clients, churned.written());
    let mut cu_records = Vec::new();
    let mut cu_times = Vec::new();
    let mut cu_changed = Vec::new();
    let (mut cu_coalesced, mut live_coalesced) = (0u64, 0u64);
    let mut bad = 0usize;
    for rec in &records {
        let checked = check(rec, churn, clients, &by_link, bounds);
        if !checked.errors.is_empty() {
            bad += 1;
            if failures.len() < 30 {
                failures.extend(
                    checked
                        .errors
                        .iter()
                        .map(|e| format!("{:?} requestor on link {}: {e}", rec.role, rec.link)),
                );
            }
        }
        match rec.role {
            Role::CatchUp => {
                cu_coalesced += checked.coalesced;
                cu_records.push(checked.caught_up_records as f64);
                cu_changed.push(checked.changed_while_away as f64);
                if let Some(t) = rec.caught_up_us {
                    cu_times.push(t.saturating_sub(rec.connected_us) as f64 / 1e3);
                }
            }
            Role::Live => live_coalesced += checked.coalesced,
        }
    }
    if bad > 0 {
        failures.push(format!("{bad} requestors failed the check"));
    }
    // The catch-up window, µs after t0.
    let first_reconnect = records
        .iter()
        .filter(|r| r.role == Role::CatchUp)
        .map(|r| r.connected_us)
        .min()
        .unwrap_or_else(|| since_us(t0, reconnect_at));
    let last_caught = records
        .iter()
        .filter_map(|r| r.caught_up_us)
        .max()
        .unwrap_or_else(|| since_us(t0, caught_at));
    let base = (a.baseline_seconds * 1e6) as u64;
    let hist = || Histogram::<u64>::new_with_bounds(1, HIST_MAX_US, 3);
    let hist_err = |e: hdrhistogram::CreationError| format!("histogram: {e}");
    let (mut before, mut during, mut after, mut whole) = (
        hist().map_err(hist_err)?,
        hist().map_err(hist_err)?,
        hist().map_err(hist_err)?,
        hist().map_err(hist_err)?,
    );
    // The same deliveries during the catch-up, from the end of their change's write; and the
    // injector's lateness for the changes due in the window.
    let (mut during_written, mut late_during) =
        (hist().map_err(hist_err)?, hist().map_err(hist_err)?);
    // Live latency by when each change was due: during the catch-up window (at least a
    // second long, so that a quick catch-up still has live changes in it), and the baselines
    // before and after it.
    let window_end = last_caught.max(first_reconnect + 1_000_000);
    for rec in records.iter().filter(|r| r.role == Role::Live) {
        for d in rec.deliveries.iter().filter(|d| d.c != POPULATION) {
            let due = churn.at_us(u64::from(d.c));
            let lat = d.at_us.saturating_sub(due).max(1);
            whole.saturating_record(lat);
            let h = if due < first_reconnect {
                (due + base >= first_reconnect).then_some(&mut before)
            } else if due <= window_end {
                if let Some(&w) = churned.written_us.get(d.c as usize) {
                    during_written.saturating_record(d.at_us.saturating_sub(w).max(1));
                }
                Some(&mut during)
            } else {
                (due <= window_end + base).then_some(&mut after)
            };
            if let Some(h) = h {
                h.saturating_record(lat);
            }
        }
    }
    let first_due = churn.due(first_reconnect);
    for c in first_due..churn.due(window_end) {
        if let Some(&w) = churned
            .written_us
            .get(usize::try_from(c).unwrap_or(usize::MAX))
        {
            late_during.saturating_record(w.saturating_sub(churn.at_us(c)).max(1));
        }
    }
    let live_during = Latency::of(&during);
    let total_cu: u64 = cu_records.iter().map(|&x| x as u64).sum();
    let window_us = last_caught.saturating_sub(first_reconnect);
    let window = Duration::from_micros(window_us);
    let catch_up_cpu = cpu_caught - cpu_reconnect;
    let caught_up = records.iter().filter(|r| r.caught_up_us.is_some()).count();
    if during.is_empty() && live > 0 {
        failures.push("no live delivery during the catch-up window".to_owned());
    }
    let report = Report {
        bindings: clients.len(),
        leases,
        links: a.links,
        pd_percent: a.pd_percent,
        two_hop_percent: a.two_hop_percent,
        churn_per_sec: a.churn,
        catch_up_requestors: cu,
        live_requestors: live,
        away_seconds: a.away_seconds,
        journal_size: journal,
        load_seconds: load.as_secs_f64(),
        churn_changes: churned.written(),
        churn_max_late_ms: bounds.max_late_us as f64 / 1e3,
        all_caught_up_seconds: window.as_secs_f64(),
        caught_up,
        catch_up_per_requestor: TimeSpread::of(cu_times),
        records_caught_up: Spread::of(cu_records),
        records_caught_up_total: total_cu,
        changed_while_away: Spread::of(cu_changed),
        catch_up_deliveries_per_sec: crate::report::rate(total_cu, window),
        catch_up_coalesced: cu_coalesced,
        live_coalesced,
        live_before: Latency::of(&before),
        live_during,
        live_during_from_write: Latency::of(&during_written),
        churn_late_during: Latency::of(&late_during),
        lqd_turns_during: match (&turns_before, &turns_after) {
            (Ok(b), Ok(a)) => TurnsBetween::of(b, a),
            _ => None,
        },
        live_after: Latency::of(&after),
        live_whole_run: Latency::of(&whole),
        live_p99_goal_met: live_during.deliveries > 0 && live_during.p99_ms < 100.0,
        cpu: Cpu {
            load_seconds: loaded.cpu_secs,
            away_percent: pct(cpu_reconnect - cpu_start, reconnect_at.duration_since(t0)),
            catch_up_percent: pct(catch_up_cpu, caught_at.duration_since(reconnect_at)),
            catch_up_seconds: catch_up_cpu,
            after_percent: pct(cpu_end - cpu_caught, churn_end.duration_since(caught_at)),
        },
        rss_after_load_kib: loaded.rss_kib,
        rss_end_kib: mem.rss_kib,
        rss_anon_end_kib: mem.anon_kib,
        rss_file_end_kib: mem.file_kib,
        hwm_kib: mem.hwm_kib,
        load_average: crate::scale::load_average(),
        failures: failures.clone(),
    };
    let markdown = markdown(&report);
    let json = serde_json::to_value(&report).map_err(|e| format!("JSON: {e}"))?;
    Ok(Outcome {
        markdown,
        json,
        failures,
    })
}

fn pct(secs: f64, over: Duration) -> f64 {
    let s = over.as_secs_f64();
    if s > 0.0 { 100.0 * secs / s } else { 0.0 }
}

fn markdown(r: &Report) -> String {
    let mut md = format!(
        "Carrier-scale catch-up (issue 19): {} bindings ({} leases) on {} links, all relayed, \
         {} % with a prefix; churn {} changes/s; {} catch-up requestors away {} s, then \
         reconnecting at once with START_TIME; {} live requestors; each asks for its own \
         link.\n\n",
        r.bindings,
        r.leases,
        r.links,
        r.pd_percent,
        r.churn_per_sec,
        r.catch_up_requestors,
        r.away_seconds,
        r.live_requestors,
    );
    md.push_str(
        "| all caught up | caught up | per requestor p50 / p99 / max | records caught up per \
         requestor min / p50 / max (total) | bindings changed while away, p50 | deliveries/s \
         | live p50 / p99 / max before | during | after | p99 < 100 ms | lqd CPU during \
         catch-up | lqd RSS MiB end (peak) |\n|--:|--:|---|---|--:|--:|---|---|---|---|--:|--:|\n",
    );
    let _ = writeln!(
        md,
        "| {:.3} s | {}/{} | {:.0} / {:.0} / {:.0} ms | {:.0} / {:.0} / {:.0} ({}) | {:.0} | {:.0} \
         | {} | {} | {} | {} | {:.0} % ({:.2} s) | {:.0} ({:.0}) |",
        r.all_caught_up_seconds,
        r.caught_up,
        r.catch_up_requestors,
        r.catch_up_per_requestor.p50_ms,
        r.catch_up_per_requestor.p99_ms,
        r.catch_up_per_requestor.max_ms,
        r.records_caught_up.min,
        r.records_caught_up.p50,
        r.records_caught_up.max,
        r.records_caught_up_total,
        r.changed_while_away.p50,
        r.catch_up_deliveries_per_sec,
        r.live_before.cell(),
        r.live_during.cell(),
        r.live_after.cell(),
        if r.live_p99_goal_met { "yes" } else { "**no**" },
        r.cpu.catch_up_percent,
        r.cpu.catch_up_seconds,
        mib(r.rss_end_kib),
        mib(r.hwm_kib),
    );
    let _ = writeln!(
        md,
        "\nLoad {:.1} s (lqd CPU {:.1} s, RSS {:.0} MiB after it); churn {} changes, worst \
         lateness {:.1} ms; coalesced: {} (catch-up), {} (live); lqd CPU away {:.0} %, after \
         {:.0} %; load average {}. During the catch-up, live p50 / p99 / max from the end of \
         each change's write {}; the injector's lateness for the changes due then {}.",
        r.load_seconds,
        r.cpu.load_seconds,
        mib(r.rss_after_load_kib),
        r.churn_changes,
        r.churn_max_late_ms,
        r.catch_up_coalesced,
        r.live_coalesced,
        r.cpu.away_percent,
        r.cpu.after_percent,
        r.load_average,
        r.live_during_from_write.cell(),
        r.churn_late_during.cell(),
    );
    if let Some(t) = r.lqd_turns_during {
        let _ = writeln!(
            md,
            "\nlqd's turns during the catch-up: {}, of them over 10 ms {}, over 25 ms {}, over \
             50 ms {}, over 100 ms {}.",
            t.turns, t.over_10_ms, t.over_25_ms, t.over_50_ms, t.over_100_ms
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clients(n: u32, links: u16) -> Clients {
        Clients {
            link: (0..n).map(|b| (b % u32::from(links)) as u16 + 1).collect(),
            address: (0..n)
                .map(|b| Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(b)))
                .collect(),
            iaid: vec![1; n as usize],
        }
    }

    /// A catch-up requestor on `link` that received, in order, `cs` (each change's own
    /// binding), its CatchUpComplete after `cu` of them.
    fn record(
        churn: Churn,
        link: u16,
        from_us: u64,
        connected_us: u64,
        cs: &[u64],
        cu: usize,
    ) -> Record {
        Record {
            r: 0,
            role: Role::CatchUp,
            link,
            from_us,
            connected_us,
            ready_us: Some(connected_us),
            caught_up_us: Some(connected_us + 1000),
            caught_up_after: cu,
            deliveries: cs
                .iter()
                .map(|&c| Delivery {
                    b: churn.binding(c),
                    c: c as u32,
                    at_us: connected_us + 10,
                })
                .collect(),
            error: None,
        }
    }

    #[test]
    fn the_check_passes_a_right_catch_up_and_fails_wrong_ones() {
        let cl = clients(40, 4);
        let churn = Churn {
            seed: 7,
            clients: 40,
            rate: 100,
        };
        // 300 changes over 3 s; the requestor on link 1 synced at 0.5 s, reconnected at 2 s.
        let written = 300;
        let by_link = ByLink::new(churn, &cl, written);
        let bounds = Bounds {
            max_late_us: 0,
            written,
        };
        let (from, back) = (500_000, 2_000_000);
        let link = 1;
        // What lqd should send: each binding of link 1 changed since 0.5 s, its newest change
        // as of the reconnect, then after CatchUpComplete each later change.
        let mine: Vec<u64> = (0..written)
            .filter(|&c| cl.link_of(churn.binding(c)) == Some(link) && churn.at_us(c) >= from)
            .collect();
        let before: Vec<u64> = mine
            .iter()
            .copied()
            .filter(|&c| churn.at_us(c) < back)
            .filter(|&c| {
                !mine.iter().any(|&d| {
                    d > c && churn.binding(d) == churn.binding(c) && churn.at_us(d) < back
                })
            })
            .collect();
        let after: Vec<u64> = mine
            .iter()
            .copied()
            .filter(|&c| churn.at_us(c) >= back)
            .collect();
        assert!(before.len() > 3 && after.len() > 3, "{before:?} {after:?}");
        let right: Vec<u64> = before.iter().chain(&after).copied().collect();
        let ok = check(
            &record(churn, link, from, back, &right, before.len()),
            churn,
            &cl,
            &by_link,
            bounds,
        );
        assert_eq!(ok.errors, Vec::<String>::new());
        assert_eq!(ok.caught_up_records, before.len() as u64);
        assert!(ok.coalesced > 0, "some binding changed twice while away");

        // A binding changed while away left out of the catch-up.
        let mut missing = right.clone();
        missing.remove(0);
        let r = check(
            &record(churn, link, from, back, &missing, before.len() - 1),
            churn,
            &cl,
            &by_link,
            bounds,
        );
        assert!(
            r.errors
                .iter()
                .any(|e| e.contains("CatchUpComplete without")),
            "{r:?}"
        );

        // A change sent twice.
        let mut twice = right.clone();
        twice.insert(1, right[0]);
        let r = check(
            &record(churn, link, from, back, &twice, before.len() + 1),
            churn,
            &cl,
            &by_link,
            bounds,
        );
        assert!(r.errors.iter().any(|e| e.contains("repeated")), "{r:?}");

        // Another link's change.
        let other = (0..written)
            .find(|&c| cl.link_of(churn.binding(c)) == Some(2))
            .unwrap();
        let mut foreign = right.clone();
        foreign.push(other);
        let r = check(
            &record(churn, link, from, back, &foreign, before.len()),
            churn,
            &cl,
            &by_link,
            bounds,
        );
        assert!(r.errors.iter().any(|e| e.contains("not its own")), "{r:?}");

        // The last change of a binding never received.
        let mut short = right.clone();
        short.pop();
        let r = check(
            &record(churn, link, from, back, &short, before.len()),
            churn,
            &cl,
            &by_link,
            bounds,
        );
        assert!(r.errors.iter().any(|e| e.contains("by the end")), "{r:?}");

        // A change from before the START_TIME (and the second of slack).
        let old = (0..written)
            .find(|&c| cl.link_of(churn.binding(c)) == Some(link) && churn.at_us(c) < 1_000_000)
            .unwrap();
        let far = record(churn, link, 2_500_000, 2_600_000, &[old], 1);
        let r = check(&far, churn, &cl, &by_link, bounds);
        assert!(
            r.errors.iter().any(|e| e.contains("before its query")),
            "{r:?}"
        );

        // No CatchUpComplete.
        let mut none = record(churn, link, from, back, &right, before.len());
        none.caught_up_us = None;
        let r = check(&none, churn, &cl, &by_link, bounds);
        assert!(
            r.errors.iter().any(|e| e.contains("no CatchUpComplete")),
            "{r:?}"
        );
    }

    #[test]
    fn a_population_line_follows_the_schema() {
        let mut source = DemoSource::new(
            DemoSettings {
                clients: 10,
                links: 3,
                relayed_percent: 100,
                pd_percent: 50,
                ..DemoSettings::default()
            }
            .demo_config(),
        );
        let change = source.next_change(ServerTime(1000));
        let mut out = Vec::new();
        population_line(&change, 5, 1_700_000_000, &mut out);
        let line = std::str::from_utf8(&out).unwrap();
        assert!(
            lqd::feed::jsonl::parse_line(line.trim_end()).is_ok(),
            "{line}"
        );
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["client_id"], "000200007ed900000005");
        assert_eq!(v["valid_lifetime"], BASE);
        assert!(v["relay"]["relay_ids"][0].is_string());
        assert!(v["relay"]["relay_message"]["message"].is_string());
        assert_eq!(client_number(&duid(123_456)), Some(123_456));
    }
}
