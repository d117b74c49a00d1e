//! The requestors: `--workers` threads, each a `mio::Poll` over its share of the N
//! connections, every delivery checked and timed.
//!
//! A connection is framed one of two ways, and either way yields DHCPv6 messages for the same
//! tracker: lqd's and the raw sender's TCP framing (a 2-octet length, lqd's own
//! [`FrameDecoder`]), or Redis pub/sub pushes whose payload is the message
//! ([`RespDecoder`]). Before the measurement each connection does its handshake: an
//! ACTIVELEASEQUERY answered by a LEASEQUERY-REPLY (lqd), a SUBSCRIBE confirmed (Redis), or
//! nothing (raw).
//!
//! The tracker: a stream is in journal order, so each connection must receive change 0, 1,
//! 2, … in turn. Every delivery names its change `k` exactly (see [`super::changes`]): `k`
//! past the next expected one means the ones between were lost, `k` before it is a duplicate.
//! A skipped change whose binding changed again later in the run (change `j` with
//! `j + M` injected too) is counted apart, as coalesced: RFC 7653 lets a server send a
//! requestor that fell behind only a binding's current state, and lqd does.
//! Each delivery's latency is measured from its change's intended injection time (not from
//! when it was written, so a late injector or a queue anywhere shows), in microseconds, into
//! the worker's own histogram (1 µs to 60 s, 3 significant digits; larger values are clamped
//! and counted); the histograms are merged at the end.
//!
//! Filtered (`--filter`), requestor `i` asks only for key `i` (its query's OPTION_LQ_QUERY; to
//! the raw sender it says `i` in four octets; in Redis it subscribes to channel `i`), and
//! must receive changes `i`, `i + N`, `i + 2N`, … in turn: the same accounting with a stride of
//! N, and a change of another key is counted as misdelivered.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use lqd::codec::{
    BuildOptions, Decoded, FrameDecoder, MessageBuilder, OptionCode, ServerTime, Status,
};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use rustls::{ClientConfig, ClientConnection};

use super::changes::{Model, Schedule, Seen};
use crate::nats::{NatsDecoder, NatsPush, subject, subscribe_commands};
use crate::process::REQUESTOR;
use crate::redis::{Push, RespDecoder, channel, subscribe_command};

/// The xid of every Active query loadgen sends, and of the baselines' messages.
pub(crate) const XID: u32 = 0x00_4c_47;

/// The histograms' highest trackable value: 60 s in µs.
pub(crate) const HIST_MAX_US: u64 = 60_000_000;

/// Reads per connection per readiness before other connections get a turn.
const READ_BUDGET: usize = 16;

/// Connections a worker opens between two looks at the ones it has.
const CONNECT_BATCH: usize = 32;

/// Connections, over all workers, whose handshake may be under way at once. Below the
/// servers' accept queue (lqd's is mio's default of 128): a full queue drops the SYN, and the
/// connect waits a second for its retransmission.
pub(crate) const MAX_HANDSHAKES: usize = 96;

/// How a connection's stream is opened and framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// An ACTIVELEASEQUERY to lqd; frames; the REPLY first.
    Active,
    /// loadgen's raw sender; frames from the first octet.
    Raw,
    /// A Redis SUBSCRIBE; pushes whose payloads are messages.
    Redis,
    /// A NATS CONNECT, SUB and PING; MSG payloads are messages, the PONG confirms the SUB.
    Nats,
}

/// What the receivers are to do.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Where to connect.
    pub(crate) addr: SocketAddr,
    pub(crate) protocol: Protocol,
    pub(crate) model: Model,
    /// Requestors (connections).
    pub(crate) requestors: usize,
    /// Changes every connection must receive: 0 to `expected - 1` (filtered: those of its key).
    pub(crate) expected: u64,
    /// Requestor `i` asks only for key `i` of the model's keys; otherwise for every change.
    pub(crate) filtered: bool,
    /// OPTION_LQ_START_TIME of each requestor's query (a catch-up), by requestor; none: live.
    pub(crate) start_times: Option<Vec<ServerTime>>,
    /// A connection is complete only after CatchUpComplete (as well as every change).
    pub(crate) catch_up: bool,
    /// With a client configuration, each Active requestor sends STARTTLS first and runs its
    /// query inside TLS (`--tls`, [`crate::tls`]).
    pub(crate) tls: Option<Arc<ClientConfig>>,
}

impl Plan {
    /// The keys requestors ask for, when filtered.
    fn keys(&self) -> Option<super::changes::Keys> {
        self.model.keys().filter(|_| self.filtered)
    }

    /// How far apart a requestor's changes are: N filtered, 1 otherwise.
    fn stride(&self) -> u64 {
        self.keys().map_or(1, |k| u64::from(k.count))
    }
}

/// Counters the receivers keep up to date for the run's driver.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Connections opened.
    pub(crate) connected: AtomicUsize,
    /// Connections whose handshake is done.
    pub(crate) ready: AtomicUsize,
    /// Connections that received everything expected.
    pub(crate) complete: AtomicUsize,
    /// Connections that failed (closed, a bad message, an error status).
    pub(crate) failed: AtomicUsize,
    /// Deliveries so far, all connections.
    pub(crate) deliveries: AtomicU64,
    /// Set to make the workers finish.
    pub(crate) stop: AtomicBool,
    /// The injection schedule, once it is fixed: latencies are measured against it.
    pub(crate) schedule: OnceLock<Schedule>,
    /// The first few failures, for the report.
    pub(crate) errors: Mutex<Vec<String>>,
}

impl Shared {
    fn error(&self, e: String) {
        if let Ok(mut errors) = self.errors.lock() {
            if errors.len() < 20 {
                errors.push(e);
            }
        }
    }

    /// The failures recorded so far.
    pub(crate) fn errors(&self) -> Vec<String> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

/// What one connection saw.
#[derive(Debug, Clone)]
pub(crate) struct ConnReport {
    /// The requestor's number (0 to N - 1).
    pub(crate) requestor: usize,
    /// Changes received in order (the last one's successors).
    pub(crate) received: u64,
    /// Changes skipped over, plus those still missing at the end (not counting `coalesced`).
    pub(crate) lost: u64,
    /// Changes skipped over whose binding changed again later in the run.
    pub(crate) coalesced: u64,
    /// Changes received again, or out of order.
    pub(crate) duplicated: u64,
    /// Changes of another requestor's key (filtered runs).
    pub(crate) misdelivered: u64,
    /// Ended leases received (a release in Kea's lease database: `loadgen pgsql`).
    pub(crate) released: u64,
    /// The last OPTION_LQ_BASE_TIME seen.
    pub(crate) base_time: Option<ServerTime>,
    /// From connecting to CatchUpComplete.
    pub(crate) catch_up: Option<Duration>,
    /// From connecting to the stream's start (the query answered, the subscription
    /// confirmed).
    pub(crate) ready_after: Option<Duration>,
    /// Why it failed.
    pub(crate) error: Option<String>,
}

/// What one worker saw.
pub(crate) struct WorkerReport {
    /// Delivery latency from the intended injection time, µs.
    pub(crate) latency: Histogram<u64>,
    /// Latencies above [`HIST_MAX_US`], recorded as that.
    pub(crate) clamped: u64,
    pub(crate) conns: Vec<ConnReport>,
    /// When the last delivery arrived.
    pub(crate) last_delivery: Option<Instant>,
    /// When the last connection completed.
    pub(crate) last_complete: Option<Instant>,
}

/// The running workers.
pub(crate) struct Receivers {
    handles: Vec<JoinHandle<Result<WorkerReport, String>>>,
    requestors: usize,
    /// Their counters.
    pub(crate) shared: Arc<Shared>,
}

impl Receivers {
    /// Starts `workers` threads that connect the plan's requestors (requestor `i` on worker
    /// `i mod workers`) and follow their streams until [`finish`](Self::finish).
    pub(crate) fn start(plan: Plan, workers: usize) -> Result<Self, String> {
        let requestors = plan.requestors;
        let plan = Arc::new(plan);
        let shared = Arc::new(Shared::default());
        let workers = workers.clamp(1, plan.requestors.max(1));
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let mine: Vec<usize> = (w..plan.requestors).step_by(workers).collect();
            let (plan, shared) = (Arc::clone(&plan), Arc::clone(&shared));
            let h = std::thread::Builder::new()
                .name(format!("loadgen-rx-{w}"))
                .spawn(move || Worker::new(plan, shared, mine)?.run())
                .map_err(|e| format!("cannot start a receiver thread: {e}"))?;
            handles.push(h);
        }
        Ok(Self {
            handles,
            requestors,
            shared,
        })
    }

    /// The requestors they connect.
    pub(crate) const fn requestors(&self) -> usize {
        self.requestors
    }

    /// Stops the workers and returns what each saw.
    pub(crate) fn finish(self) -> Result<Vec<WorkerReport>, String> {
        self.shared.stop.store(true, Ordering::Release);
        self.handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a receiver thread panicked".to_owned()))
            })
            .collect()
    }
}

/// What a connection's framing yields.
#[derive(Debug, Clone, Copy)]
enum Unit<'a> {
    /// A DHCPv6 message.
    Message(&'a [u8]),
    /// Redis or NATS confirmed the subscription.
    Subscribed,
}

/// How a connection's bytes become messages.
enum Framing {
    /// 2-octet length prefix; `buf` holds an incomplete frame's octets.
    Frames { decoder: FrameDecoder, buf: Vec<u8> },
    /// Redis pushes.
    Resp(RespDecoder),
    /// NATS server operations.
    Nats(NatsDecoder),
}

impl Framing {
    /// Takes `bytes` read from the socket and hands every complete message to `each`.
    fn input(
        &mut self,
        bytes: &[u8],
        mut each: impl FnMut(Unit<'_>) -> Result<(), String>,
    ) -> Result<(), String> {
        match self {
            Self::Frames { decoder, buf } => {
                let from_buf = !buf.is_empty();
                if from_buf {
                    buf.extend_from_slice(bytes);
                }
                let src: &[u8] = if from_buf { buf } else { bytes };
                let mut pos = 0;
                loop {
                    let rest = src.get(pos..).unwrap_or_default();
                    match decoder
                        .decode(rest)
                        .map_err(|e| format!("bad frame: {e}"))?
                    {
                        Decoded::Frame { message, consumed } => {
                            each(Unit::Message(message))?;
                            pos += consumed;
                        }
                        Decoded::Incomplete { .. } => break,
                    }
                }
                if from_buf {
                    buf.drain(..pos.min(buf.len()));
                } else {
                    buf.extend_from_slice(bytes.get(pos..).unwrap_or_default());
                }
                Ok(())
            }
            Self::Resp(decoder) => {
                decoder.feed(bytes);
                while let Some(push) = decoder.next()? {
                    match push {
                        Push::Message(payload) => each(Unit::Message(payload))?,
                        Push::Subscribed(_) => each(Unit::Subscribed)?,
                        Push::Other => return Err("an unexpected Redis push".to_owned()),
                    }
                }
                Ok(())
            }
            Self::Nats(decoder) => {
                decoder.feed(bytes);
                while let Some(op) = decoder.next()? {
                    match op {
                        NatsPush::Msg(payload) => each(Unit::Message(payload))?,
                        // The one PING of the handshake is answered after the SUB: the
                        // subscription is in place.
                        NatsPush::Pong => each(Unit::Subscribed)?,
                        // nats-server's own PINGs come every `ping_interval`, an hour as
                        // loadgen runs it: left unanswered, as a run ends long before two are
                        // missed.
                        NatsPush::Info | NatsPush::Ping | NatsPush::Ok => {}
                        NatsPush::Err(e) => return Err(format!("nats-server: -ERR {e}")),
                    }
                }
                Ok(())
            }
        }
    }

    /// Octets of an incomplete frame or operation held back.
    fn pending(&self) -> usize {
        match self {
            Self::Frames { buf, .. } => buf.len(),
            Self::Resp(d) => d.pending(),
            Self::Nats(d) => d.pending(),
        }
    }
}

/// One connection's progress through the stream.
struct Track {
    handshake: bool,
    /// Its key, when filtered: it receives the changes `k` with `k mod N = key` only.
    key: Option<u64>,
    next: u64,
    received: u64,
    lost: u64,
    coalesced: u64,
    duplicated: u64,
    misdelivered: u64,
    released: u64,
    base_time: Option<ServerTime>,
    connected_at: Instant,
    caught_up: Option<Instant>,
    ready_at: Option<Instant>,
    complete: bool,
}

/// What a worker's connections share while handling messages.
struct Ctx<'a> {
    plan: &'a Plan,
    shared: &'a Shared,
    schedule: Option<Schedule>,
    now: Instant,
    latency: &'a mut Histogram<u64>,
    clamped: &'a mut u64,
    deliveries: &'a mut u64,
    last_delivery: &'a mut Option<Instant>,
    last_complete: &'a mut Option<Instant>,
}

impl Track {
    /// Takes one message, or Redis's subscribe confirmation.
    fn unit(&mut self, unit: Unit<'_>, cx: &mut Ctx<'_>) -> Result<(), String> {
        let message = match unit {
            Unit::Message(m) => m,
            Unit::Subscribed
                if matches!(cx.plan.protocol, Protocol::Redis | Protocol::Nats)
                    && !self.handshake =>
            {
                self.ready(cx);
                return Ok(());
            }
            Unit::Subscribed => return Err("an unexpected subscribe confirmation".to_owned()),
        };
        let seen = cx.plan.model.classify(message, Some(XID))?;
        if !self.handshake {
            return match seen {
                Seen::Reply {
                    status: Status::Success,
                    base_time,
                } if cx.plan.protocol == Protocol::Active => {
                    self.base_time = base_time;
                    self.ready(cx);
                    Ok(())
                }
                Seen::Reply { status, .. } => Err(format!("LEASEQUERY-REPLY with {status}")),
                other => Err(format!("{other:?} before the handshake ended")),
            };
        }
        match seen {
            Seen::Change { k } => self.change(k, cx),
            Seen::Released { .. } => {
                self.released += 1;
                Ok(())
            }
            Seen::Status {
                status: Status::CatchUpComplete,
                base_time,
            } => {
                self.base_time = base_time.or(self.base_time);
                self.caught_up.get_or_insert(cx.now);
                self.check_complete(cx);
                Ok(())
            }
            Seen::Keepalive { base_time } => {
                self.base_time = base_time.or(self.base_time);
                Ok(())
            }
            Seen::Status { status, .. } => Err(format!("LEASEQUERY-DATA with {status}")),
            Seen::Done { status } => Err(format!("LEASEQUERY-DONE with {status}")),
            Seen::Reply { status, .. } => Err(format!("a second LEASEQUERY-REPLY ({status})")),
        }
    }

    fn ready(&mut self, cx: &mut Ctx<'_>) {
        self.handshake = true;
        self.ready_at = Some(cx.now);
        cx.shared.ready.fetch_add(1, Ordering::AcqRel);
        self.check_complete(cx);
    }

    fn change(&mut self, k: u64, cx: &mut Ctx<'_>) -> Result<(), String> {
        if k >= cx.plan.expected {
            return Err(format!(
                "change {k} delivered, but only {} were injected",
                cx.plan.expected
            ));
        }
        let stride = cx.plan.stride();
        if self.key.is_some_and(|key| k % stride != key) {
            self.misdelivered += 1;
            return Ok(());
        }
        if k < self.next {
            self.duplicated += 1;
            return Ok(());
        }
        // Skipped changes j < expected - M had a newer change of their binding (j + M, of the
        // same key: M is a multiple of N). Skipped ones are `stride` apart.
        let newer = cx
            .plan
            .expected
            .saturating_sub(u64::from(cx.plan.model.bindings()));
        let coalesced = k.min(newer).saturating_sub(self.next).div_ceil(stride);
        self.coalesced += coalesced;
        self.lost += (k - self.next) / stride - coalesced;
        self.next = k + stride;
        self.received += 1;
        *cx.deliveries += 1;
        *cx.last_delivery = Some(cx.now);
        if let Some(s) = &cx.schedule {
            let us = cx.now.saturating_duration_since(s.at(k)).as_micros();
            let us = u64::try_from(us).unwrap_or(u64::MAX).max(1);
            if us > HIST_MAX_US {
                *cx.clamped += 1;
            }
            cx.latency.saturating_record(us);
        }
        self.check_complete(cx);
        Ok(())
    }

    fn check_complete(&mut self, cx: &mut Ctx<'_>) {
        if !self.complete
            && self.handshake
            && self.next >= cx.plan.expected
            && (!cx.plan.catch_up || self.caught_up.is_some())
        {
            self.complete = true;
            *cx.last_complete = Some(cx.now);
            cx.shared.complete.fetch_add(1, Ordering::AcqRel);
        }
    }
}

struct Conn {
    requestor: usize,
    stream: TcpStream,
    framing: Framing,
    track: Track,
    tls: Tls,
    error: Option<String>,
}

/// Where a connection is with TLS.
enum Tls {
    /// Cleartext all along.
    Off,
    /// STARTTLS sent, its answer awaited in cleartext; the ACTIVELEASEQUERY (framed) to send
    /// inside TLS once it comes.
    Awaiting(Vec<u8>),
    /// The TLS session: the handshake under way, or done and the stream inside it.
    On(Box<ClientConnection>),
}

/// Writes what `tls` has for the peer until it has nothing or the socket is full (a
/// writable event brings the rest).
fn flush_tls(tls: &mut ClientConnection, stream: &mut TcpStream) -> Result<(), String> {
    while tls.wants_write() {
        match tls.write_tls(stream) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("TLS write: {e}")),
        }
    }
    Ok(())
}

/// Moves the decrypted octets `tls` holds into `chunk`, as many as fit: how many.
fn drain_plaintext(tls: &mut ClientConnection, chunk: &mut [u8]) -> Result<usize, String> {
    let mut filled = 0;
    while let Some(room) = chunk.get_mut(filled..).filter(|r| !r.is_empty()) {
        match tls.reader().read(room) {
            Ok(0) => return Err("the server closed the TLS session (close_notify)".to_owned()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(format!("TLS: {e}")),
        }
    }
    Ok(filled)
}

/// What one read from a connection gave.
enum Got<'a> {
    /// Octets of the stream (decrypted, under TLS), maybe none (TLS records of the handshake).
    Bytes(&'a [u8]),
    /// Nothing more for now.
    WouldBlock,
}

/// One read: cleartext from the socket, or TLS records read, processed and decrypted into
/// `plain` (the decrypted octets of several records gathered up to its size).
fn read_once<'a>(
    stream: &mut TcpStream,
    tls: Option<&mut ClientConnection>,
    chunk: &'a mut [u8],
) -> Result<Got<'a>, String> {
    let Some(tls) = tls else {
        return match stream.read(chunk) {
            Ok(0) => Err("the server closed the connection".to_owned()),
            Ok(n) => Ok(Got::Bytes(chunk.get(..n).unwrap_or_default())),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Got::WouldBlock),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Got::Bytes(&[])),
            Err(e) => Err(format!("read: {e}")),
        };
    };
    flush_tls(tls, stream)?;
    // First what rustls holds decrypted already (a previous read filled `chunk`): reading
    // more records before would overfill its plaintext buffer.
    let held = drain_plaintext(tls, chunk)?;
    if held > 0 {
        return Ok(Got::Bytes(chunk.get(..held).unwrap_or_default()));
    }
    let got = match tls.read_tls(stream) {
        Ok(0) => return Err("the server closed the connection".to_owned()),
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
        Err(e) => return Err(format!("TLS read: {e}")),
    };
    if let Err(e) = tls.process_new_packets() {
        // rustls queued an alert for the peer: send it, best effort.
        let _ = flush_tls(tls, stream);
        return Err(format!("TLS: {e}"));
    }
    let filled = drain_plaintext(tls, chunk)?;
    flush_tls(tls, stream)?;
    if got == 0 && filled == 0 {
        return Ok(Got::WouldBlock);
    }
    Ok(Got::Bytes(chunk.get(..filled).unwrap_or_default()))
}

/// Where a worker is with opening its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connecting {
    /// More to open right away.
    More,
    /// More to open once some handshakes end.
    Paced,
    /// All open.
    Done,
}

struct Worker {
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    poll: Poll,
    conns: Vec<Conn>,
    to_connect: std::vec::IntoIter<usize>,
    latency: Histogram<u64>,
    clamped: u64,
    last_delivery: Option<Instant>,
    last_complete: Option<Instant>,
}

impl Worker {
    fn new(plan: Arc<Plan>, shared: Arc<Shared>, mine: Vec<usize>) -> Result<Self, String> {
        Ok(Self {
            poll: Poll::new().map_err(|e| format!("epoll: {e}"))?,
            conns: Vec::with_capacity(mine.len()),
            to_connect: mine.into_iter(),
            latency: Histogram::new_with_bounds(1, HIST_MAX_US, 3)
                .map_err(|e| format!("histogram: {e}"))?,
            clamped: 0,
            last_delivery: None,
            last_complete: None,
            plan,
            shared,
        })
    }

    fn run(mut self) -> Result<WorkerReport, String> {
        let mut events = Events::with_capacity(1024);
        let mut pending: Vec<usize> = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut connecting = Connecting::More;
        loop {
            if connecting != Connecting::Done {
                connecting = match self.connect_some() {
                    Ok(c) => c,
                    Err(e) => {
                        // Every connection this worker did not open counts as failed, so that
                        // the driver stops waiting for them.
                        self.shared.error(e.clone());
                        self.shared
                            .failed
                            .fetch_add(1 + self.to_connect.len(), Ordering::AcqRel);
                        return Err(e);
                    }
                };
            }
            let timeout = if connecting == Connecting::More || !pending.is_empty() {
                Duration::ZERO
            } else if connecting == Connecting::Paced {
                Duration::from_millis(1)
            } else {
                Duration::from_millis(20)
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("epoll: {e}")),
            }
            pending.extend(events.iter().map(|e| e.token().0));
            pending.sort_unstable();
            pending.dedup();
            let mut deliveries = 0u64;
            let schedule = self.shared.schedule.get().copied();
            for key in std::mem::take(&mut pending) {
                if self.service(key, schedule, &mut chunk, &mut deliveries) {
                    pending.push(key);
                }
            }
            if deliveries > 0 {
                self.shared
                    .deliveries
                    .fetch_add(deliveries, Ordering::Relaxed);
            }
            if self.shared.stop.load(Ordering::Acquire) {
                break;
            }
        }
        Ok(self.report())
    }

    /// Opens the next few connections.
    fn connect_some(&mut self) -> Result<Connecting, String> {
        for _ in 0..CONNECT_BATCH {
            let shared = &self.shared;
            let busy = shared.connected.load(Ordering::Acquire).saturating_sub(
                shared.ready.load(Ordering::Acquire) + shared.failed.load(Ordering::Acquire),
            );
            if busy >= MAX_HANDSHAKES {
                return Ok(Connecting::Paced);
            }
            let Some(i) = self.to_connect.next() else {
                return Ok(Connecting::Done);
            };
            let keys = self.plan.keys();
            let own = u32::try_from(i).map_err(|_| format!("requestor {i}: too many"))?;
            let mut query = match self.plan.protocol {
                Protocol::Active => {
                    let mut b = MessageBuilder::active_leasequery(XID)
                        .client_id(&REQUESTOR)
                        .oro(&[OptionCode::LqBaseTime]);
                    if let Some(keys) = keys {
                        b = keys.query(own, b);
                    }
                    if let Some(t) = self.plan.start_times.as_ref().and_then(|s| s.get(i)) {
                        b = b.start_time(*t);
                    }
                    b.build_frame()
                        .map_err(|e| format!("building the ACTIVELEASEQUERY: {e}"))?
                }
                Protocol::Raw => keys.map_or_else(Vec::new, |_| own.to_be_bytes().to_vec()),
                Protocol::Redis => subscribe_command(&channel(keys.map(|_| own))),
                Protocol::Nats => subscribe_commands(&subject(keys.map(|_| own))),
            };
            // Under TLS, STARTTLS goes first, in cleartext, and the query waits for the
            // session.
            let (hello, tls) = match &self.plan.tls {
                Some(_) if self.plan.protocol == Protocol::Active => (
                    crate::tls::starttls_frame(XID)?,
                    Tls::Awaiting(std::mem::take(&mut query)),
                ),
                _ => (query, Tls::Off),
            };
            let connected_at = Instant::now();
            let stream = connect(self.plan.addr, &hello)
                .map_err(|e| format!("requestor {i}: connecting to {}: {e}", self.plan.addr))?;
            self.shared.connected.fetch_add(1, Ordering::AcqRel);
            let mut stream = TcpStream::from_std(stream);
            let key = self.conns.len();
            // A TLS connection writes too (its handshake, and what did not fit the socket).
            let interest = match tls {
                Tls::Off => Interest::READABLE,
                _ => Interest::READABLE | Interest::WRITABLE,
            };
            self.poll
                .registry()
                .register(&mut stream, Token(key), interest)
                .map_err(|e| format!("epoll: {e}"))?;
            let framing = match self.plan.protocol {
                Protocol::Redis => Framing::Resp(RespDecoder::new()),
                Protocol::Nats => Framing::Nats(NatsDecoder::new()),
                _ => Framing::Frames {
                    decoder: FrameDecoder::default(),
                    buf: Vec::new(),
                },
            };
            self.conns.push(Conn {
                requestor: i,
                stream,
                framing,
                track: Track {
                    handshake: false,
                    key: keys.map(|_| u64::from(own)),
                    next: keys.map_or(0, |_| u64::from(own)),
                    received: 0,
                    lost: 0,
                    coalesced: 0,
                    duplicated: 0,
                    misdelivered: 0,
                    released: 0,
                    base_time: None,
                    connected_at,
                    caught_up: None,
                    ready_at: None,
                    complete: false,
                },
                tls,
                error: None,
            });
            if self.plan.protocol == Protocol::Raw {
                let (mut deliveries, schedule) = (0, None);
                let Self {
                    plan,
                    shared,
                    conns,
                    latency,
                    clamped,
                    last_delivery,
                    last_complete,
                    ..
                } = self;
                let mut cx = Ctx {
                    plan,
                    shared,
                    schedule,
                    now: connected_at,
                    latency,
                    clamped,
                    deliveries: &mut deliveries,
                    last_delivery,
                    last_complete,
                };
                if let Some(c) = conns.last_mut() {
                    c.track.ready(&mut cx);
                }
            }
        }
        Ok(Connecting::More)
    }

    /// Reads what connection `key` has, up to the budget; true when it may have more.
    fn service(
        &mut self,
        key: usize,
        schedule: Option<Schedule>,
        chunk: &mut [u8],
        deliveries: &mut u64,
    ) -> bool {
        let Self {
            plan,
            shared,
            conns,
            latency,
            clamped,
            last_delivery,
            last_complete,
            poll,
            ..
        } = self;
        let Some(conn) = conns.get_mut(key) else {
            return false;
        };
        if conn.error.is_some() {
            return false;
        }
        for _ in 0..READ_BUDGET {
            let tls = match &mut conn.tls {
                Tls::On(tls) => Some(&mut **tls),
                _ => None,
            };
            let result = match read_once(&mut conn.stream, tls, chunk) {
                Ok(Got::WouldBlock) => return false,
                Ok(Got::Bytes(bytes)) if matches!(conn.tls, Tls::Awaiting(_)) => {
                    starttls_answer(conn, bytes, plan)
                }
                Ok(Got::Bytes(bytes)) => {
                    let mut cx = Ctx {
                        plan,
                        shared,
                        schedule,
                        now: Instant::now(),
                        latency,
                        clamped,
                        deliveries,
                        last_delivery,
                        last_complete,
                    };
                    let track = &mut conn.track;
                    conn.framing.input(bytes, |m| track.unit(m, &mut cx))
                }
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                let _ = poll.registry().deregister(&mut conn.stream);
                if !(conn.track.complete && shared.stop.load(Ordering::Acquire)) {
                    shared.error(format!("requestor connection {key}: {e}"));
                    shared.failed.fetch_add(1, Ordering::AcqRel);
                    conn.error = Some(e);
                }
                return false;
            }
        }
        true
    }

    fn report(self) -> WorkerReport {
        let (expected, stride) = (self.plan.expected, self.plan.stride());
        let conns = self
            .conns
            .iter()
            .map(|c| {
                let t = &c.track;
                ConnReport {
                    requestor: c.requestor,
                    received: t.received,
                    lost: t.lost + expected.saturating_sub(t.next).div_ceil(stride),
                    coalesced: t.coalesced,
                    duplicated: t.duplicated,
                    misdelivered: t.misdelivered,
                    released: t.released,
                    base_time: t.base_time,
                    catch_up: t
                        .caught_up
                        .map(|at| at.saturating_duration_since(t.connected_at)),
                    ready_after: t
                        .ready_at
                        .map(|at| at.saturating_duration_since(t.connected_at)),
                    error: c.error.clone(),
                }
            })
            .collect();
        WorkerReport {
            latency: self.latency,
            clamped: self.clamped,
            conns,
            last_delivery: self.last_delivery,
            last_complete: self.last_complete,
        }
    }
}

/// Takes cleartext `bytes` of a connection awaiting lqd's answer to STARTTLS: once the whole
/// answer is in (and nothing after it: the server speaks next inside TLS, after our
/// ClientHello), checks it, starts the TLS session and queues the ACTIVELEASEQUERY inside it.
fn starttls_answer(conn: &mut Conn, bytes: &[u8], plan: &Plan) -> Result<(), String> {
    let mut answered = false;
    conn.framing.input(bytes, |unit| match unit {
        Unit::Message(m) if !answered => {
            crate::tls::check_starttls_answer(m, XID)?;
            answered = true;
            Ok(())
        }
        _ => Err("cleartext after the STARTTLS answer, before the TLS handshake".to_owned()),
    })?;
    if !answered {
        return Ok(());
    }
    if conn.framing.pending() > 0 {
        return Err("cleartext after the STARTTLS answer, before the TLS handshake".to_owned());
    }
    let config = plan
        .tls
        .as_ref()
        .ok_or("STARTTLS without a TLS configuration")?;
    let mut tls = crate::tls::client(config, plan.addr)?;
    let Tls::Awaiting(query) = std::mem::replace(&mut conn.tls, Tls::Off) else {
        return Err("a STARTTLS answer out of turn".to_owned());
    };
    // rustls holds it until the handshake is done.
    tls.writer()
        .write_all(&query)
        .map_err(|e| format!("TLS: queueing the ACTIVELEASEQUERY: {e}"))?;
    flush_tls(&mut tls, &mut conn.stream)?;
    conn.tls = Tls::On(Box::new(tls));
    Ok(())
}

/// Connects to `addr` (retrying briefly: a full accept queue or ephemeral ports in
/// TIME_WAIT), sends `hello`, and makes the socket non-blocking.
pub(crate) fn connect(addr: SocketAddr, hello: &[u8]) -> io::Result<std::net::TcpStream> {
    let started = Instant::now();
    let mut s = loop {
        match std::net::TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(e) if started.elapsed() > Duration::from_secs(10) => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    s.set_nodelay(true)?;
    if !hello.is_empty() {
        s.write_all(hello)?;
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::FilterKind;
    use crate::fanout::changes::Keys;

    /// Feeds `changes` to requestor `i`'s tracker (of `n`, filtered or not, `expected` changes
    /// over `bindings` bindings); its report: (received, lost, coalesced, duplicated,
    /// misdelivered, complete).
    fn track(
        filtered: bool,
        n: u32,
        i: u32,
        bindings: u32,
        expected: u64,
        changes: &[u64],
    ) -> (u64, u64, u64, u64, u64, bool) {
        let keys = Keys {
            kind: FilterKind::Link,
            count: n,
        };
        let plan = Plan {
            addr: SocketAddr::from(([0u16; 8], 0)),
            protocol: Protocol::Active,
            model: Model::new(bindings).unwrap().keyed(keys).unwrap(),
            requestors: n as usize,
            expected,
            filtered,
            start_times: None,
            catch_up: false,
            tls: None,
        };
        let shared = Shared::default();
        let mut latency = Histogram::new_with_bounds(1, HIST_MAX_US, 3).unwrap();
        let (mut clamped, mut deliveries) = (0, 0);
        let (mut last_delivery, mut last_complete) = (None, None);
        let mut cx = Ctx {
            plan: &plan,
            shared: &shared,
            schedule: None,
            now: Instant::now(),
            latency: &mut latency,
            clamped: &mut clamped,
            deliveries: &mut deliveries,
            last_delivery: &mut last_delivery,
            last_complete: &mut last_complete,
        };
        let mut t = Track {
            handshake: true,
            key: filtered.then_some(u64::from(i)),
            next: if filtered { u64::from(i) } else { 0 },
            received: 0,
            lost: 0,
            coalesced: 0,
            duplicated: 0,
            misdelivered: 0,
            released: 0,
            base_time: None,
            connected_at: Instant::now(),
            caught_up: None,
            ready_at: None,
            complete: false,
        };
        t.check_complete(&mut cx);
        for &k in changes {
            t.change(k, &mut cx).unwrap();
        }
        let missing = expected.saturating_sub(t.next).div_ceil(plan.stride());
        (
            t.received,
            t.lost + missing,
            t.coalesced,
            t.duplicated,
            t.misdelivered,
            t.complete,
        )
    }

    /// Requestors against a small STARTTLS server (rustls, `crate::tls::tests`): each sends
    /// STARTTLS, does the handshake, and gets its REPLY and `changes` changes inside TLS; or,
    /// with `refuse`, is refused. The receivers' shared counters and reports.
    fn against_starttls_server(
        refuse: bool,
        requestors: usize,
        changes: u64,
    ) -> (Arc<Shared>, Vec<WorkerReport>) {
        use crate::tls::tests::{read_frame, starttls_server};
        let pki = crate::tls::Pki::new().expect("PKI");
        let model = Model::new(100).expect("model");
        let (addr, server) = starttls_server(&pki, requestors, refuse, move |_, tls| {
            let query = read_frame(tls).expect("the query inside TLS");
            let parsed = lqd::codec::MessageRepr::parse(&query).expect("a message");
            assert_eq!(parsed.msg_type(), lqd::codec::MessageType::ActiveLeasequery);
            let mut out = MessageBuilder::reply(XID)
                .server_id(&[0, 3, 0, 1, 1, 2, 3, 4, 5, 6])
                .build_frame()
                .expect("REPLY");
            let now = lqd::feed::system_time();
            for k in 0..changes {
                let m = model.data_message(k, XID, now).expect("DATA");
                out.extend_from_slice(&u16::try_from(m.len()).expect("size").to_be_bytes());
                out.extend_from_slice(&m);
            }
            tls.write_all(&out).expect("answers");
            tls.flush().expect("flush");
            // Until the requestor goes.
            let mut rest = Vec::new();
            let _ = tls.read_to_end(&mut rest);
        });
        let receivers = Receivers::start(
            Plan {
                addr,
                protocol: Protocol::Active,
                model,
                requestors,
                expected: changes,
                filtered: false,
                start_times: None,
                catch_up: false,
                tls: Some(pki.client_config().expect("client config")),
            },
            2,
        )
        .expect("receivers");
        let started = Instant::now();
        let shared = Arc::clone(&receivers.shared);
        while shared.complete.load(Ordering::Acquire) + shared.failed.load(Ordering::Acquire)
            < requestors
            && started.elapsed() < Duration::from_secs(20)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let reports = receivers.finish().expect("reports");
        server.join().expect("the STARTTLS server");
        (shared, reports)
    }

    #[test]
    fn tls_requestors_stream_inside_tls() {
        let (shared, reports) = against_starttls_server(false, 5, 40);
        assert_eq!(shared.errors(), Vec::<String>::new());
        assert_eq!(shared.ready.load(Ordering::Acquire), 5);
        assert_eq!(shared.complete.load(Ordering::Acquire), 5);
        let conns: Vec<&ConnReport> = reports.iter().flat_map(|r| &r.conns).collect();
        assert_eq!(conns.len(), 5);
        for c in conns {
            assert_eq!((c.received, c.lost, c.duplicated), (40, 0, 0));
            assert!(c.ready_after.is_some());
        }
    }

    #[test]
    fn a_refused_starttls_fails_the_requestor() {
        let (shared, _) = against_starttls_server(true, 2, 1);
        assert_eq!(shared.failed.load(Ordering::Acquire), 2);
        let errors = shared.errors();
        assert!(
            errors.iter().all(|e| e.contains("TLSConnectionRefused")),
            "{errors:?}"
        );
    }

    #[test]
    fn unfiltered_every_change_in_turn() {
        assert_eq!(
            track(false, 4, 2, 100, 5, &[0, 1, 2, 3, 4]),
            (5, 0, 0, 0, 0, true)
        );
        assert_eq!(
            track(false, 4, 2, 100, 5, &[0, 2, 2, 1, 3]),
            (3, 2, 0, 2, 0, false),
            "1 skipped, 4 missing; 2 and 1 again"
        );
        // 10 changes over 4 bindings: changes 0 to 5 have newer ones (4 to 9).
        assert_eq!(
            track(false, 4, 2, 4, 10, &[3, 7, 9]),
            (3, 2, 5, 0, 0, true),
            "0-2, 4 and 5 coalesced; 6 and 8 lost"
        );
    }

    #[test]
    fn filtered_only_the_changes_of_its_key() {
        // Requestor 1 of 4, 10 changes: 1, 5, 9.
        assert_eq!(
            track(true, 4, 1, 100, 10, &[1, 5, 9]),
            (3, 0, 0, 0, 0, true)
        );
        assert_eq!(
            track(true, 4, 1, 100, 10, &[1, 2, 5, 5, 1, 4]),
            (2, 1, 0, 2, 2, false),
            "2 and 4 are other keys', 5 and 1 again, 9 missing"
        );
        assert_eq!(
            track(true, 4, 1, 100, 10, &[9]),
            (1, 2, 0, 0, 0, true),
            "1 and 5 lost"
        );
        // 20 changes over 8 bindings (keys 0 to 3 twice): 1, 5 and 9 have newer ones.
        assert_eq!(track(true, 4, 1, 8, 20, &[13, 17]), (2, 0, 3, 0, 0, true));
        assert_eq!(
            track(true, 4, 1, 8, 20, &[17]),
            (1, 1, 3, 0, 0, true),
            "13 lost"
        );
        // A requestor whose key has no change is complete at once.
        assert_eq!(track(true, 4, 3, 100, 3, &[]), (0, 0, 0, 0, 0, true));
    }
}
