//! The hostile requestors: what each attack does, and from which addresses.
//!
//! Each attack connects from addresses of its own, `127.N.0.1` on (bound before connecting;
//! Linux routes all of `127.0.0.0/8` to the loopback interface), so that lqd's per-requestor
//! limits and its log lines keep the attacks apart, and apart from the well-behaved requestors
//! (`127.0.0.1` and `127.0.0.2`). The many-address flood also connects from `::1`.
//!
//! An attack runs from [`start`] until [`Running::stop_attacking`] (the end of its measured
//! phase): the floods and the repeated attacks stop opening connections, the one-connection
//! attacks stop sending. What they leave open stays open, and a slowloris goes on sending its
//! bytes, until [`Running::finish`] (lqd closed everything, or the wait ran out).

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use lqd::codec::{
    BuildOptions, Decoded, DhcpOption, FrameDecoder, MessageBuilder, MessageRepr, MessageType,
    OptionCode, QueryType, Status,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};

use super::tracker::{Conn, Recorder, Tracker};
use crate::bulk::{Clients, link_query, read_answer};
use crate::fanout::changes::Model;
use crate::process::REQUESTOR;

/// How long a connect may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The declared length of a slowloris frame.
const SLOWLORIS_LENGTH: u16 = 1000;
/// The receive buffer of an Active requestor that stops reading: small, so that lqd's output
/// backs up within seconds.
const STALLED_RCVBUF: usize = 4096;
/// How long after a complete answer the xid-reuse attacker waits for a second one.
const EXTRA_WAIT: Duration = Duration::from_millis(300);
/// A round of the xid-reuse attack starts this often.
const XID_ROUND: Duration = Duration::from_secs(1);

/// The hostile requestors, one attack phase each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum AttackKind {
    /// Connections from one address, far beyond max_connections_per_requestor.
    FloodOne,
    /// Connections from many addresses (127.12.0.0/16 and ::1).
    FloodMany,
    /// A frame header, then a byte every few seconds.
    Slowloris,
    /// A declared length of 65,535 that never completes.
    LongFrame,
    /// Frames of random octets.
    Garbage,
    /// STARTTLS and unknown message types, connection after connection.
    Starttls,
    /// Thousands of queries pipelined on one connection.
    Pipelined,
    /// Active requestors that stop reading.
    StalledActive,
    /// A query's xid reused, many times, while it runs.
    XidReuse,
}

impl AttackKind {
    /// Every attack, in the order they run by default.
    pub(crate) const ALL: [Self; 9] = [
        Self::FloodOne,
        Self::FloodMany,
        Self::Slowloris,
        Self::LongFrame,
        Self::Garbage,
        Self::Starttls,
        Self::Pipelined,
        Self::StalledActive,
        Self::XidReuse,
    ];

    /// Its name on the command line and in the reports.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::FloodOne => "flood-one",
            Self::FloodMany => "flood-many",
            Self::Slowloris => "slowloris",
            Self::LongFrame => "long-frame",
            Self::Garbage => "garbage",
            Self::Starttls => "starttls",
            Self::Pipelined => "pipelined",
            Self::StalledActive => "stalled-active",
            Self::XidReuse => "xid-reuse",
        }
    }

    /// The second octet of its IPv4 source addresses.
    const fn net(self) -> u8 {
        match self {
            Self::FloodOne => 11,
            Self::FloodMany => 12,
            Self::Slowloris => 13,
            Self::LongFrame => 14,
            Self::Garbage => 15,
            Self::Starttls => 16,
            Self::Pipelined => 17,
            Self::StalledActive => 18,
            Self::XidReuse => 19,
        }
    }

    /// Its `i`-th IPv4 source address: `127.N.0.1` on, skipping the .0 and .255 of each /24.
    pub(super) fn source(self, i: u32) -> IpAddr {
        let [_, _, hi, lo] = (i / 254 * 256 + i % 254 + 1).to_be_bytes();
        IpAddr::V4(Ipv4Addr::new(127, self.net(), hi, lo))
    }
}

/// What the attacks need to know.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    /// lqd's `[::1]` address.
    pub(super) target_v6: SocketAddr,
    /// lqd's `127.0.0.1` address.
    pub(super) target_v4: SocketAddr,
    /// lqd's max_connections_per_requestor.
    pub(super) per_requestor: usize,
    /// Connection attempts a second of a flood.
    pub(super) flood_rate: f64,
    /// Connections the one-address flood keeps open or opening at once.
    pub(super) flood_one_open: usize,
    /// IPv4 addresses of the many-address flood (and `::1`).
    pub(super) flood_addresses: u32,
    /// Connections each of them keeps open or opening at once.
    pub(super) flood_per_address: usize,
    /// Addresses holding slowloris and long-frame connections, the per-requestor limit each.
    pub(super) hold_addresses: u32,
    /// Time between a slowloris' bytes.
    pub(super) slowloris_interval: Duration,
    /// Connections a second of the garbage and STARTTLS attacks.
    pub(super) attack_rate: f64,
    /// Queries of the pipelined attack.
    pub(super) pipelined: u32,
    /// Reuses of the running query's xid per round of the xid-reuse attack.
    pub(super) duplicates: u32,
    /// The bindings lqd holds.
    pub(super) model: Model,
    /// Seeds the garbage and the pipelined queries' addresses.
    pub(super) seed: u64,
}

/// Connects to lqd (its address of `source`'s family) from `source`, with a receive buffer of
/// `rcvbuf` octets when given; the stream and when the connect began.
pub(super) fn connect_from(
    source: IpAddr,
    s: &Settings,
    rcvbuf: Option<usize>,
) -> io::Result<(TcpStream, SystemTime)> {
    let to = if source.is_ipv4() {
        s.target_v4
    } else {
        s.target_v6
    };
    let sock = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    sock.bind(&SocketAddr::new(source, 0).into())?;
    if let Some(n) = rcvbuf {
        sock.set_recv_buffer_size(n)?;
    }
    let opened = SystemTime::now();
    sock.connect_timeout(&to.into(), CONNECT_TIMEOUT)?;
    let stream: TcpStream = sock.into();
    stream.set_nodelay(true)?;
    Ok((stream, opened))
}

/// Connects that failed (lqd's accept queue full, say): never a connection of lqd's.
#[derive(Debug, Default)]
struct ConnectFailures {
    count: AtomicU64,
    first: Mutex<Option<String>>,
}

impl ConnectFailures {
    fn note(&self, e: &io::Error) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first.lock() {
            first.get_or_insert_with(|| e.to_string());
        }
    }
}

/// The pipelined attack's answers.
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct PipelinedReport {
    /// Queries sent on the one connection.
    pub(super) queries: u32,
    /// Answers complete and right (the queried address's binding, then DONE).
    pub(super) answered: u32,
    /// Answers with the wrong binding, an error status, or no binding.
    pub(super) wrong: u32,
    /// From the first query written to the last answer read, seconds.
    pub(super) seconds: f64,
    /// Why reading stopped early, if it did.
    pub(super) error: Option<String>,
}

/// The xid-reuse attack's rounds.
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct XidReport {
    /// Rounds: a by-link query and its reuses in one write, then its answer read.
    pub(super) rounds: u32,
    /// Queries sent with the xid of the query running.
    pub(super) duplicates_sent: u64,
    /// Rounds whose answer held every binding once, and nothing followed it.
    pub(super) intact: u32,
    /// Rounds where something followed the answer (a reuse answered).
    pub(super) extra_answers: u32,
    /// Each round's answer time, seconds.
    pub(super) answer_seconds: Vec<f64>,
    /// Why the rounds stopped early, if they did.
    pub(super) error: Option<String>,
}

/// What an attack found besides its connections' fates.
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct Extra {
    /// The pipelined attack's answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) pipelined: Option<PipelinedReport>,
    /// The xid-reuse attack's rounds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) xid_reuse: Option<XidReport>,
    /// Octets a slowloris trickled, over all its connections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) slowloris_bytes: Option<u64>,
}

/// A running attack.
pub(super) struct Running {
    tracker: Tracker,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
    release: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Result<Extra, String>>>,
    failures: Arc<ConnectFailures>,
}

/// What an attack left.
pub(super) struct Finished {
    /// Every connection it opened, with what the attacker saw.
    pub(super) conns: Vec<Conn>,
    pub(super) extra: Extra,
    /// Connects that failed.
    pub(super) connect_failed: u64,
    /// The first connect error.
    pub(super) connect_error: Option<String>,
    /// Errors of the attack threads (an attacker that could not do its part).
    pub(super) errors: Vec<String>,
}

impl Running {
    /// Stops opening connections and sending queries (a slowloris goes on trickling).
    pub(super) fn stop_attacking(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Each connection opened so far: its local address (lqd's peer) and when it was opened.
    pub(super) fn conns(&self) -> Vec<(SocketAddr, SystemTime)> {
        self.recorder.snapshot()
    }

    /// Ends the attack: stops every thread, and closes what lqd has not closed
    /// (`closed_by_lqd` says what it has, by connection number).
    pub(super) fn finish(self, closed_by_lqd: impl Fn(usize) -> bool) -> Result<Finished, String> {
        self.stop.store(true, Ordering::Release);
        self.release.store(true, Ordering::Release);
        let mut extra = Extra::default();
        let mut errors = Vec::new();
        for t in self.threads {
            match t.join() {
                Ok(Ok(e)) => {
                    extra.pipelined = extra.pipelined.or(e.pipelined);
                    extra.xid_reuse = extra.xid_reuse.or(e.xid_reuse);
                    extra.slowloris_bytes = extra.slowloris_bytes.or(e.slowloris_bytes);
                }
                Ok(Err(e)) => errors.push(e),
                Err(_) => errors.push("an attack thread panicked".to_owned()),
            }
        }
        let conns = self.tracker.finish(closed_by_lqd)?;
        Ok(Finished {
            conns,
            extra,
            connect_failed: self.failures.count.load(Ordering::Relaxed),
            connect_error: self.failures.first.lock().ok().and_then(|f| f.clone()),
            errors,
        })
    }
}

/// What the threads of an attack share.
#[derive(Clone)]
struct Ctx {
    kind: AttackKind,
    s: Arc<Settings>,
    rec: Recorder,
    stop: Arc<AtomicBool>,
    release: Arc<AtomicBool>,
    failures: Arc<ConnectFailures>,
}

impl Ctx {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// A connection from `source`, recorded; `None` when the connect failed (counted).
    fn connect(
        &self,
        source: IpAddr,
        rcvbuf: Option<usize>,
    ) -> Result<Option<(usize, TcpStream)>, String> {
        match connect_from(source, &self.s, rcvbuf) {
            Ok((stream, opened)) => Ok(Some((self.rec.open(&stream, opened)?, stream))),
            Err(e) => {
                self.failures.note(&e);
                Ok(None)
            }
        }
    }
}

/// Starts attack `kind`.
pub(super) fn start(kind: AttackKind, s: &Settings) -> Result<Running, String> {
    let tracker = Tracker::start(kind.name())?;
    let cx = Ctx {
        kind,
        s: Arc::new(s.clone()),
        rec: tracker.recorder(),
        stop: Arc::new(AtomicBool::new(false)),
        release: Arc::new(AtomicBool::new(false)),
        failures: Arc::new(ConnectFailures::default()),
    };
    let sources = |n: u32| (0..n.max(1)).map(|i| kind.source(i)).collect::<Vec<_>>();
    let mut threads = Vec::new();
    let mut spawn = |name: &str, f: Box<dyn FnOnce(Ctx) -> Result<Extra, String> + Send>| {
        let c = cx.clone();
        std::thread::Builder::new()
            .name(format!("loadgen-{name}"))
            .spawn(move || f(c))
            .map(|h| threads.push(h))
            .map_err(|e| format!("cannot start an attack thread: {e}"))
    };
    match kind {
        AttackKind::FloodOne => {
            let plan = Repeat {
                sources: sources(1),
                open: s.flood_one_open,
                rate: s.flood_rate,
            };
            spawn(
                "flood",
                Box::new(move |c| repeat(&c, &plan, |_, _, _| Vec::new())),
            )?;
        }
        AttackKind::FloodMany => {
            let mut all = sources(s.flood_addresses);
            all.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
            let plan = Repeat {
                sources: all,
                open: s.flood_per_address,
                rate: s.flood_rate,
            };
            spawn(
                "flood",
                Box::new(move |c| repeat(&c, &plan, |_, _, _| Vec::new())),
            )?;
        }
        AttackKind::Garbage => {
            let plan = Repeat {
                sources: sources(4),
                open: s.per_requestor,
                rate: s.attack_rate,
            };
            spawn("garbage", Box::new(move |c| repeat(&c, &plan, garbage)))?;
        }
        AttackKind::Starttls => {
            let plan = Repeat {
                sources: sources(4),
                open: s.per_requestor,
                rate: s.attack_rate,
            };
            spawn("starttls", Box::new(move |c| repeat(&c, &plan, starttls)))?;
        }
        AttackKind::Slowloris => {
            let all = sources(s.hold_addresses);
            spawn("slowloris", Box::new(move |c| slowloris(&c, &all)))?;
        }
        AttackKind::LongFrame => {
            let all = sources(s.hold_addresses);
            spawn("long-frame", Box::new(move |c| long_frame(&c, &all)))?;
        }
        AttackKind::StalledActive => {
            spawn("stalled", Box::new(|c| stalled(&c)))?;
        }
        AttackKind::Pipelined => {
            spawn("pipelined", Box::new(|c| pipelined(&c)))?;
        }
        AttackKind::XidReuse => {
            spawn("xid-reuse", Box::new(|c| xid_reuse(&c)))?;
        }
    }
    Ok(Running {
        recorder: tracker.recorder(),
        tracker,
        stop: cx.stop,
        release: cx.release,
        threads,
        failures: cx.failures,
    })
}

/// Connection after connection, round-robin over `sources`, at `rate` a second, each source
/// keeping at most `open` open at once (a new one when lqd closes one).
struct Repeat {
    sources: Vec<IpAddr>,
    open: usize,
    rate: f64,
}

/// Runs a [`Repeat`] until stopped; each connection sends `payload(source, n, rng)` and is
/// then watched until lqd closes it.
fn repeat(
    cx: &Ctx,
    plan: &Repeat,
    mut payload: impl FnMut(usize, u64, &mut SmallRng) -> Vec<u8>,
) -> Result<Extra, String> {
    let counters: Vec<Arc<AtomicUsize>> = plan
        .sources
        .iter()
        .map(|_| Arc::new(AtomicUsize::new(0)))
        .collect();
    let mut rng = SmallRng::seed_from_u64(cx.s.seed ^ u64::from(cx.kind.net()));
    let started = Instant::now();
    let (mut n, mut next) = (0u64, 0usize);
    while !cx.stopped() {
        let due = (started.elapsed().as_secs_f64() * plan.rate) as u64 + 1;
        if n >= due {
            std::thread::sleep(Duration::from_micros(500));
            continue;
        }
        let count = plan.sources.len();
        let free = (0..count).map(|j| (next + j) % count).find(|&i| {
            counters
                .get(i)
                .is_some_and(|c| c.load(Ordering::Acquire) < plan.open)
        });
        let Some(i) = free else {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        };
        next = i + 1;
        let (Some(&source), Some(counter)) = (plan.sources.get(i), counters.get(i)) else {
            continue;
        };
        let bytes = payload(i, n, &mut rng);
        n += 1;
        let Some((id, mut stream)) = cx.connect(source, None)? else {
            continue;
        };
        counter.fetch_add(1, Ordering::AcqRel);
        // lqd may close it before everything is written: that is its answer, not an error.
        let _ = stream.write_all(&bytes);
        cx.rec.watch(id, stream, Some(Arc::clone(counter)))?;
    }
    Ok(Extra::default())
}

/// One to three frames of random octets. The first octet of each message (its type) is
/// never one a requestor may send (LEASEQUERY, ACTIVELEASEQUERY, STARTTLS): garbage, not a
/// query that happens to parse.
fn garbage(_: usize, _: u64, rng: &mut SmallRng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.gen_range(1..=3) {
        let len: u16 = rng.gen_range(0..=300);
        out.extend_from_slice(&len.to_be_bytes());
        let at = out.len();
        out.extend((0..len).map(|_| rng.r#gen::<u8>()));
        if let Some(t) = out.get_mut(at) {
            if matches!(*t, 14 | 22 | 23) {
                *t = 0xc8;
            }
        }
    }
    out
}

/// What the STARTTLS attacker sends, by source: STARTTLS twice; an unknown message type;
/// STARTTLS then a SOLICIT; STARTTLS alone (which lqd answers, D25, and then keeps in plain
/// mode: it is closed only as idle).
fn starttls(source: usize, n: u64, _: &mut SmallRng) -> Vec<u8> {
    let xid = (n & 0x00ff_ffff) as u32;
    let frame = |t: MessageType| {
        MessageBuilder::new(t, xid)
            .client_id(&REQUESTOR)
            .build_frame()
            .unwrap_or_default()
    };
    let tls = frame(MessageType::StartTls);
    match source % 4 {
        0 => [tls.clone(), tls].concat(),
        1 => frame(MessageType::from(200)),
        2 => [tls, frame(MessageType::from(1))].concat(),
        _ => tls,
    }
}

/// The per-requestor limit of connections from each of `sources`, each sending a frame header
/// and then one octet every interval, until released.
fn slowloris(cx: &Ctx, sources: &[IpAddr]) -> Result<Extra, String> {
    let mut writers = Vec::new();
    for &source in sources {
        for _ in 0..cx.s.per_requestor {
            let Some((id, mut stream)) = cx.connect(source, None)? else {
                continue;
            };
            let _ = stream.write_all(&SLOWLORIS_LENGTH.to_be_bytes());
            let writer = stream.try_clone().map_err(|e| format!("slowloris: {e}"))?;
            cx.rec.watch(id, stream, None)?;
            writers.push(Some(writer));
        }
    }
    let mut bytes = 0u64;
    let mut last = Instant::now();
    while !cx.release.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(50));
        if last.elapsed() < cx.s.slowloris_interval {
            continue;
        }
        last = Instant::now();
        for w in &mut writers {
            let Some(stream) = w else { continue };
            // The first octet of the body is LEASEQUERY's type; the rest zeros.
            let octet = if bytes == 0 { 14 } else { 0 };
            if stream.write_all(&[octet]).is_ok() {
                bytes += 1;
            } else {
                *w = None;
            }
        }
    }
    Ok(Extra {
        slowloris_bytes: Some(bytes),
        ..Extra::default()
    })
}

/// The per-requestor limit of connections from each of `sources`, each declaring a
/// 65,535-octet message and sending all of it but the last octet.
fn long_frame(cx: &Ctx, sources: &[IpAddr]) -> Result<Extra, String> {
    let mut frame = vec![0u8; 2 + 65_534];
    frame[..2].copy_from_slice(&u16::MAX.to_be_bytes());
    frame[2] = 14;
    for &source in sources {
        for _ in 0..cx.s.per_requestor {
            if cx.stopped() {
                return Ok(Extra::default());
            }
            let Some((id, mut stream)) = cx.connect(source, None)? else {
                continue;
            };
            let _ = stream.write_all(&frame);
            cx.rec.watch(id, stream, None)?;
        }
    }
    Ok(Extra::default())
}

/// The per-requestor limit of unfiltered Active queries from one address, on connections with
/// a small receive buffer that are never read.
fn stalled(cx: &Ctx) -> Result<Extra, String> {
    let query = MessageBuilder::active_leasequery(0x00_5a_5a)
        .client_id(&REQUESTOR)
        .build_frame()
        .map_err(|e| format!("building the ACTIVELEASEQUERY: {e}"))?;
    for _ in 0..cx.s.per_requestor {
        let Some((id, mut stream)) = cx.connect(cx.kind.source(0), Some(STALLED_RCVBUF))? else {
            continue;
        };
        stream
            .write_all(&query)
            .map_err(|e| format!("stalled requestor: {e}"))?;
        cx.rec.park(id, stream)?;
    }
    Ok(Extra::default())
}

/// Query-by-address for a random binding each, all written at once on one connection while
/// the answers are read; then the connection idles.
fn pipelined(cx: &Ctx) -> Result<Extra, String> {
    let model = cx.s.model;
    let n = cx.s.pipelined;
    let Some((id, stream)) = cx.connect(cx.kind.source(0), None)? else {
        return Err("pipelined: cannot connect".to_owned());
    };
    let mut rng = SmallRng::seed_from_u64(cx.s.seed);
    let mut expected = Vec::with_capacity(n as usize);
    let mut out = Vec::new();
    for q in 0..n {
        let b = rng.gen_range(0..model.bindings());
        expected.push(b);
        let frame = MessageBuilder::leasequery(q + 1)
            .client_id(&REQUESTOR)
            .lq_query(QueryType::ByAddress, Ipv6Addr::UNSPECIFIED, |o| {
                o.iaaddr(model.address_of(b), 0, 0)
            })
            .build_frame()
            .map_err(|e| format!("building a query: {e}"))?;
        out.extend_from_slice(&frame);
    }
    let mut writer = stream.try_clone().map_err(|e| format!("pipelined: {e}"))?;
    // A writer lqd stopped reading must not hold the attack up for ever.
    writer
        .set_write_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| format!("pipelined: {e}"))?;
    let started = Instant::now();
    let write = std::thread::spawn(move || writer.write_all(&out));
    let report = read_pipelined(&stream, model, &expected, started);
    let _ = write.join();
    cx.rec.watch(id, stream, None)?;
    Ok(Extra {
        pipelined: Some(report),
        ..Extra::default()
    })
}

/// Reads the answers to the pipelined queries (xid `q + 1` asked for binding `expected[q]`).
fn read_pipelined(
    mut stream: &TcpStream,
    model: Model,
    expected: &[u32],
    started: Instant,
) -> PipelinedReport {
    let mut r = PipelinedReport {
        queries: expected.len() as u32,
        ..PipelinedReport::default()
    };
    // 0: nothing yet; 1: the right binding in its REPLY; 2: done.
    let mut state = vec![0u8; expected.len()];
    let mut decoder = FrameDecoder::default();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 256 * 1024];
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    while r.answered + r.wrong < r.queries {
        let n = match stream.read(&mut chunk) {
            Ok(0) => {
                r.error = Some("lqd closed the connection".to_owned());
                break;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                r.error = Some(format!("reading: {e}"));
                break;
            }
        };
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        let mut pos = 0;
        loop {
            let rest = buf.get(pos..).unwrap_or_default();
            match decoder.decode(rest) {
                Ok(Decoded::Frame { message, consumed }) => {
                    pos += consumed;
                    pipelined_message(message, model, expected, &mut state, &mut r);
                }
                Ok(Decoded::Incomplete { .. }) => break,
                Err(e) => {
                    r.error = Some(format!("bad frame: {e}"));
                    return r;
                }
            }
        }
        buf.drain(..pos.min(buf.len()));
    }
    r.seconds = started.elapsed().as_secs_f64();
    r
}

/// Takes one message of the pipelined answers.
fn pipelined_message(
    message: &[u8],
    model: Model,
    expected: &[u32],
    state: &mut [u8],
    r: &mut PipelinedReport,
) {
    let Ok(m) = MessageRepr::parse(message) else {
        r.wrong += 1;
        return;
    };
    let q = m.xid().map_or(0, |x| x.value() as usize).wrapping_sub(1);
    let (Some(&b), Some(st)) = (expected.get(q), state.get_mut(q)) else {
        r.wrong += 1;
        return;
    };
    let status = m.options.status().map_or(Status::Success, |s| s.status);
    let binding = match m.options.get(OptionCode::ClientData) {
        Some(DhcpOption::ClientData(cd)) => cd.client_id().and_then(|d| model.client(d.as_bytes())),
        _ => None,
    };
    match (m.msg_type(), *st) {
        (MessageType::LeasequeryReply, 0) if status == Status::Success && binding == Some(b) => {
            *st = 1;
        }
        (MessageType::LeasequeryDone, 1) if status == Status::Success => {
            *st = 2;
            r.answered += 1;
        }
        _ => {
            *st = 2;
            r.wrong += 1;
        }
    }
}

/// Rounds, once a second until stopped: a by-link query and `duplicates` more with its xid in
/// one write, then the answer, which must hold every binding once and be followed by nothing.
fn xid_reuse(cx: &Ctx) -> Result<Extra, String> {
    let model = cx.s.model;
    let Some((id, mut stream)) = cx.connect(cx.kind.source(0), None)? else {
        return Err("xid-reuse: cannot connect".to_owned());
    };
    let mut r = XidReport::default();
    let mut xid = 0x00_78_00_00u32;
    while !cx.stopped() {
        let round = Instant::now();
        xid += 1;
        let query = link_query(&model, xid)?;
        let write = query.repeat(cx.s.duplicates as usize + 1);
        let result = stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())
            .and_then(|()| {
                stream
                    .write_all(&write)
                    .map_err(|e| format!("writing: {e}"))
            })
            .and_then(|()| read_answer(&mut stream, &model, xid, false, round));
        let answer = match result {
            Ok(a) => a,
            Err(e) => {
                // read_answer refuses octets read past the answer's end: a reuse answered.
                if e.contains("after the answer ended") {
                    r.extra_answers += 1;
                }
                r.error = Some(e);
                break;
            }
        };
        r.rounds += 1;
        r.duplicates_sent += u64::from(cx.s.duplicates);
        r.answer_seconds.push(answer.elapsed.as_secs_f64());
        let whole = answer.bindings == u64::from(model.bindings())
            && answer.duplicates == 0
            && answer.unknown == 0
            && (0..model.bindings()).all(|i| answer.has(i));
        let _ = stream.set_read_timeout(Some(EXTRA_WAIT));
        let mut more = [0u8; 1];
        let extra = matches!(stream.read(&mut more), Ok(n) if n > 0);
        if extra {
            r.extra_answers += 1;
            r.error = Some(format!("round {}: octets after the answer", r.rounds));
            break;
        }
        if whole {
            r.intact += 1;
        }
        while round.elapsed() < XID_ROUND && !cx.stopped() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    cx.rec.watch(id, stream, None)?;
    Ok(Extra {
        xid_reuse: Some(r),
        ..Extra::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_attack_has_addresses_of_its_own() {
        assert_eq!(
            AttackKind::FloodMany.source(0),
            "127.12.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            AttackKind::FloodMany.source(253),
            "127.12.0.254".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            AttackKind::FloodMany.source(254),
            "127.12.1.1".parse::<IpAddr>().unwrap()
        );
        let mut nets: Vec<u8> = AttackKind::ALL.iter().map(|k| k.net()).collect();
        nets.dedup();
        assert_eq!(nets.len(), AttackKind::ALL.len());
    }

    #[test]
    fn garbage_is_framed_and_never_a_query() {
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..1000 {
            let g = garbage(0, 0, &mut rng);
            let mut rest = &g[..];
            let mut frames = 0;
            while !rest.is_empty() {
                let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                assert!(rest.len() >= 2 + len);
                if len > 0 {
                    assert!(!matches!(rest[2], 14 | 22 | 23));
                }
                rest = &rest[2 + len..];
                frames += 1;
            }
            assert!((1..=3).contains(&frames));
        }
    }

    #[test]
    fn the_starttls_attacker_sends_four_kinds() {
        let types = |b: &[u8]| {
            let mut out = Vec::new();
            let mut rest = b;
            while !rest.is_empty() {
                let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                out.push(rest[2]);
                rest = &rest[2 + len..];
            }
            out
        };
        let mut rng = SmallRng::seed_from_u64(1);
        assert_eq!(types(&starttls(0, 1, &mut rng)), [23, 23]);
        assert_eq!(types(&starttls(1, 1, &mut rng)), [200]);
        assert_eq!(types(&starttls(2, 1, &mut rng)), [23, 1]);
        assert_eq!(types(&starttls(3, 1, &mut rng)), [23]);
    }
}
