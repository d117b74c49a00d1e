//! Active Leasequery (RFC 7653; digest §10.5, §10.6, decision D3): a subscription that stays
//! subscribed.
//!
//! [`Subscription::next_event`] connects, sends the ACTIVELEASEQUERY (START_TIME = the resume
//! point when there is one), and turns what arrives into [`Event`]s. A lost connection (EOF,
//! LEASEQUERY-DONE, an I/O error, or ACTIVE_LQ_RCV_TIMEOUT without a single octet) becomes
//! an [`Event::Disconnected`], and the next call reconnects after a backoff that doubles from
//! `reconnect_min` to `reconnect_max` while connections keep failing, resuming from the
//! resume point. Only a LEASEQUERY-REPLY with an error status ends the subscription, as
//! [`Error::Refused`].
//!
//! One connection may carry several *streams* ([`Subscription::with_streams`]): one
//! ACTIVELEASEQUERY each, with its own xid and OPTION_LQ_QUERY, so each has its own catch-up,
//! CatchUpComplete, keepalives, DataMissing and resume point, told apart by xid (digest §10.5
//! step 3). A lost connection loses them all, and the reconnect sends each its own START_TIME.
//!
//! The resume point follows the state machine in the [module docs](super): it is the
//! base-time of the latest message received while LIVE and does not move during catch-up. It
//! moves when the *last* event of the message that carried it is returned, so a caller that
//! saves it after applying each event never saves a point beyond what it has applied.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::binding::ClientData;
use super::conn::Connection;
use super::error::{Error, Result};
use super::query::Query;
use super::time::TimeBase;
use super::tls::TlsClient;
use crate::codec::{
    BuildOptions, MessageBuilder, MessageRepr, MessageType, OptionCode, ServerTime, Status, Xid,
};

/// How often a blocked call looks at the stop flag.
const TICK: Duration = Duration::from_millis(100);

/// How an Active subscription behaves.
#[derive(Debug, Clone)]
pub struct ActiveSettings {
    /// The requestor's DUID (OPTION_CLIENTID).
    pub requestor: Vec<u8>,
    /// OPTION_LQ_QUERY: only changes matching it; `None` for every change.
    pub filter: Option<Query>,
    /// Ask for OPTION_LQ_RELAY_DATA in each binding.
    pub relay_data: bool,
    /// ACTIVE_LQ_RCV_TIMEOUT (default 120 s).
    pub rcv_timeout: Duration,
    /// The wait before the first reconnect attempt (default 200 ms).
    pub reconnect_min: Duration,
    /// The longest wait between reconnect attempts (default 10 s).
    pub reconnect_max: Duration,
    /// When set, blocked calls return `Ok(None)` soon after it becomes true.
    pub stop: Option<Arc<AtomicBool>>,
    /// TLS (STARTTLS first) on every connection, reconnects included; `None`: plaintext.
    /// A TLS failure ends the subscription (decision D28).
    pub tls: Option<TlsClient>,
    /// Other servers that follow the same lease store and give the same times (lqd
    /// instances on one lease database, D33): when the connection to one is lost or cannot
    /// be made, the next in turn is tried, each stream resuming from its saved base-time. Empty:
    /// only the subscription's own server.
    pub failover: Vec<SocketAddr>,
}

impl ActiveSettings {
    /// The defaults for a requestor with this DUID.
    #[must_use]
    pub fn new(requestor: &[u8]) -> Self {
        Self {
            requestor: requestor.to_vec(),
            filter: None,
            relay_data: false,
            rcv_timeout: super::ACTIVE_LQ_RCV_TIMEOUT,
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(10),
            stop: None,
            tls: None,
            failover: Vec::new(),
        }
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
    }
}

/// Where the subscription is in the digest §10.6 state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No connection (before the first, or waiting to reconnect).
    Disconnected,
    /// The ACTIVELEASEQUERY is sent; the LEASEQUERY-REPLY has not come yet.
    AwaitReply,
    /// START_TIME was sent and neither CatchUpComplete nor DataMissing has come: base-times
    /// are not saved.
    CatchingUp,
    /// Live updates; each message's base-time becomes the resume point.
    Live,
}

/// Why a connection was lost.
#[derive(Debug)]
pub enum Disconnect {
    /// Nothing arrived for ACTIVE_LQ_RCV_TIMEOUT (D3).
    ReceiveTimeout(Duration),
    /// The server closed the connection.
    Closed,
    /// The server closed the connection before answering any of its queries: it may refuse
    /// this requestor, or limit the connections of one requestor (BULK_LQ_MAX_CONNS).
    ClosedBeforeReply,
    /// The server ended the query with LEASEQUERY-DONE (QueryTerminated on shutdown, D9).
    Terminated {
        /// The DONE's status.
        status: Status,
        /// Its status message.
        message: String,
    },
    /// Connecting, sending or receiving failed, or the server broke the protocol.
    Failed(Error),
    /// A stream's LEASEQUERY-REPLY did not come within the receive timeout while the
    /// connection was up: the server most likely runs fewer queries per connection than this
    /// one carries and left the query unread (digest §10.4 step 18).
    NoReply {
        /// The stream's filter (`None`: every change).
        query: Option<Query>,
        /// Its place among the connection's queries, from 1.
        position: usize,
        /// The number of queries on the connection.
        of: usize,
        /// How long the reply was waited for.
        after: Duration,
    },
}

impl core::fmt::Display for Disconnect {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::ReceiveTimeout(d) => {
                write!(
                    f,
                    "nothing received for {}s (ACTIVE_LQ_RCV_TIMEOUT)",
                    d.as_secs_f64()
                )
            }
            Self::Closed => f.write_str("the server closed the connection"),
            Self::ClosedBeforeReply => f.write_str(
                "the server closed the connection before answering (does it refuse this \
                 requestor, or limit its connections?)",
            ),
            Self::Terminated { status, message } if message.is_empty() => {
                write!(f, "the server ended the query: {status}")
            }
            Self::Terminated { status, message } => {
                write!(f, "the server ended the query: {status} ({message})")
            }
            Self::Failed(e) => e.fmt(f),
            Self::NoReply {
                query,
                position,
                of,
                after,
            } => {
                write!(f, "no LEASEQUERY-REPLY within {}s to ", after.as_secs_f64())?;
                match query {
                    Some(q) => write!(f, "the query for {q}")?,
                    None => f.write_str("the query")?,
                }
                write!(
                    f,
                    " ({position} of {of} on the connection): the server may run fewer queries \
                     per connection"
                )
            }
        }
    }
}

/// What an Active subscription reports.
#[derive(Debug)]
pub enum Event {
    /// Connected, and the ACTIVELEASEQUERY sent with this xid and START_TIME.
    Connected {
        /// The server.
        server: SocketAddr,
        /// The query's xid, fresh on this connection.
        xid: Xid,
        /// OPTION_LQ_START_TIME sent, if any.
        start_time: Option<ServerTime>,
    },
    /// One client's current data (a catch-up or a live change).
    Binding(ClientData),
    /// CatchUpComplete: every change since START_TIME has been sent.
    CatchUpComplete(TimeBase),
    /// DataMissing: changes between `start` and `end` (server times) may be lost; live
    /// updates follow. Recover with Bulk (see [`Recovery`](super::Recovery)).
    DataMissing {
        /// The START_TIME sent (in a REPLY or during catch-up), or the resume point before
        /// this message (a live stream the server's history overran).
        start: Option<ServerTime>,
        /// The base-time of the message that said so.
        end: Option<ServerTime>,
        /// That message's time context.
        time: TimeBase,
    },
    /// A LEASEQUERY-DATA with nothing but base-time: the connection is alive (D2).
    Keepalive(TimeBase),
    /// The connection is gone; the next call reconnects after `retry_in`.
    Disconnected {
        /// Why.
        reason: Disconnect,
        /// The wait before the next attempt.
        retry_in: Duration,
    },
}

/// What [`Subscription::next_before`] found.
#[derive(Debug)]
pub(crate) enum Next {
    /// An event, and the stream it belongs to (`None`: the connection, for
    /// [`Event::Disconnected`]).
    Event(Option<usize>, Event),
    /// The deadline passed first.
    Idle,
    /// The stop flag is set.
    Stopped,
}

/// An event, the stream it belongs to, and that stream's resume point once it has been
/// returned.
#[derive(Debug)]
struct Pending {
    stream: Option<usize>,
    event: Event,
    resume: Option<ServerTime>,
}

/// One ACTIVELEASEQUERY of a subscription, and where it is in the §10.6 state machine.
#[derive(Debug)]
struct Stream {
    filter: Option<Query>,
    xid: Xid,
    phase: Phase,
    sent_start: Option<ServerTime>,
    sent_at: Instant,
    resume: Option<ServerTime>,
}

/// An Active Leasequery subscription to one server: one connection carrying one
/// ACTIVELEASEQUERY per stream, each with its own xid, filter, catch-up and resume point.
///
/// A server runs only so many queries on one connection at once (lqd: 4 by default)
/// and leaves the rest unread (digest §10.4 step 18), so a caller with more filters spreads
/// them over several subscriptions. A stream whose LEASEQUERY-REPLY does not come within the
/// receive timeout is taken for such a query: the connection is dropped with
/// [`Disconnect::NoReply`] and made again.
#[derive(Debug)]
pub struct Subscription {
    /// The server, then `settings.failover`: connections go to `servers[current]`.
    servers: Vec<SocketAddr>,
    current: usize,
    settings: ActiveSettings,
    conn: Option<Connection>,
    streams: Vec<Stream>,
    skew_ms: Option<i64>,
    failures: u32,
    retry_at: Option<Instant>,
    queue: VecDeque<Pending>,
}

impl Subscription {
    /// A subscription to `server` with one stream, filtered by `settings.filter`, that will
    /// resume from `resume_from` (sent as START_TIME); it connects on the first
    /// [`next_event`](Self::next_event).
    #[must_use]
    pub fn new(
        server: SocketAddr,
        settings: ActiveSettings,
        resume_from: Option<ServerTime>,
    ) -> Self {
        let filter = settings.filter.clone();
        Self::with_streams(server, settings, [(filter, resume_from)])
    }

    /// A subscription with one stream per `(filter, resume_from)`, all on one connection
    /// (`settings.filter` is not used). Without any, one stream filtered by
    /// `settings.filter`, without START_TIME.
    #[must_use]
    pub fn with_streams(
        server: SocketAddr,
        settings: ActiveSettings,
        streams: impl IntoIterator<Item = (Option<Query>, Option<ServerTime>)>,
    ) -> Self {
        let now = Instant::now();
        let mut streams: Vec<Stream> = streams
            .into_iter()
            .map(|(filter, resume)| Stream {
                filter,
                xid: Xid::new(0),
                phase: Phase::Disconnected,
                sent_start: None,
                sent_at: now,
                resume,
            })
            .collect();
        if streams.is_empty() {
            streams.push(Stream {
                filter: settings.filter.clone(),
                xid: Xid::new(0),
                phase: Phase::Disconnected,
                sent_start: None,
                sent_at: now,
                resume: None,
            });
        }
        let servers = std::iter::once(server)
            .chain(settings.failover.iter().copied().filter(|s| *s != server))
            .collect();
        Self {
            servers,
            current: 0,
            settings,
            conn: None,
            streams,
            skew_ms: None,
            failures: 0,
            retry_at: None,
            queue: VecDeque::new(),
        }
    }

    /// The first stream's phase in the state machine.
    #[must_use]
    pub fn phase(&self) -> Phase {
        self.stream_phase(0)
    }

    /// The base-time a reconnect would send as the first stream's START_TIME, as of the last
    /// event returned.
    #[must_use]
    pub fn resume_point(&self) -> Option<ServerTime> {
        self.stream_resume_point(0)
    }

    /// The number of streams.
    #[must_use]
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// Stream `i`'s filter (OPTION_LQ_QUERY), if any.
    #[must_use]
    pub fn stream_filter(&self, i: usize) -> Option<&Query> {
        self.streams.get(i).and_then(|s| s.filter.as_ref())
    }

    /// Stream `i`'s phase (`Disconnected` for a stream that does not exist).
    #[must_use]
    pub fn stream_phase(&self, i: usize) -> Phase {
        self.streams.get(i).map_or(Phase::Disconnected, |s| s.phase)
    }

    /// Stream `i`'s resume point, as of the last event returned.
    #[must_use]
    pub fn stream_resume_point(&self, i: usize) -> Option<ServerTime> {
        self.streams.get(i).and_then(|s| s.resume)
    }

    /// The latest clock skew `δ = local − server` in milliseconds (digest §11).
    #[must_use]
    pub const fn skew_ms(&self) -> Option<i64> {
        self.skew_ms
    }

    /// The settings.
    #[must_use]
    pub const fn settings(&self) -> &ActiveSettings {
        &self.settings
    }

    /// Drops the connection; the next call reconnects at once from the resume points.
    pub fn disconnect(&mut self) {
        self.conn = None;
        for s in &mut self.streams {
            s.phase = Phase::Disconnected;
        }
        self.retry_at = None;
    }

    /// The next event, blocking until there is one. `Ok(None)` once the stop flag is set;
    /// [`Error::Refused`] when the server refuses a query (the subscription is then
    /// disconnected; calling again retries).
    pub fn next_event(&mut self) -> Result<Option<Event>> {
        Ok(self.next_stream_event()?.map(|(_, e)| e))
    }

    /// The same, with the index of the stream the event belongs to (`None` for
    /// [`Event::Disconnected`], which concerns the connection and so every stream).
    pub fn next_stream_event(&mut self) -> Result<Option<(Option<usize>, Event)>> {
        loop {
            match self.next_before(None)? {
                Next::Event(i, e) => return Ok(Some((i, e))),
                Next::Stopped => return Ok(None),
                Next::Idle => {}
            }
        }
    }

    /// The same, but returns [`Next::Idle`] at `deadline` if nothing happened before.
    pub(crate) fn next_before(&mut self, deadline: Option<Instant>) -> Result<Next> {
        loop {
            if let Some(p) = self.queue.pop_front() {
                if let Some(s) = p.stream.and_then(|i| self.streams.get_mut(i)) {
                    s.resume = p.resume;
                }
                return Ok(Next::Event(p.stream, p.event));
            }
            if self.settings.stopped() {
                return Ok(Next::Stopped);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Next::Idle);
            }
            if self.conn.is_none() {
                self.try_connect()?;
                continue;
            }
            self.receive()?;
        }
    }

    /// Connects and sends every stream's query; a failure is a disconnect to retry, except a
    /// TLS failure, which is returned (D28).
    fn try_connect(&mut self) -> Result<()> {
        if let Some(at) = self.retry_at {
            let left = at.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                std::thread::sleep(left.min(TICK));
                return Ok(());
            }
        }
        self.retry_at = None;
        let tls = self.settings.tls.as_ref();
        let server = self.server();
        let sent = Connection::open(server, &self.settings.requestor, tls).and_then(|mut c| {
            let mut xids = Vec::with_capacity(self.streams.len());
            for s in &self.streams {
                let xid = c.new_xid();
                c.send(&self.query_frame(xid, s.filter.as_ref(), s.resume)?)?;
                xids.push(xid);
            }
            Ok((c, xids))
        });
        match sent {
            Ok((c, xids)) => {
                self.conn = Some(c);
                let now = Instant::now();
                for (i, xid) in xids.into_iter().enumerate() {
                    let Some(s) = self.streams.get_mut(i) else {
                        continue;
                    };
                    s.xid = xid;
                    s.phase = Phase::AwaitReply;
                    s.sent_start = s.resume;
                    s.sent_at = now;
                    let start_time = s.resume;
                    self.push(
                        Some(i),
                        Event::Connected {
                            server,
                            xid,
                            start_time,
                        },
                    );
                }
            }
            Err(e) if e.is_tls() => {
                self.retry_at = None;
                return Err(e);
            }
            Err(e) => self.lost(Disconnect::Failed(e)),
        }
        Ok(())
    }

    /// One framed ACTIVELEASEQUERY.
    fn query_frame(
        &self,
        xid: Xid,
        filter: Option<&Query>,
        start: Option<ServerTime>,
    ) -> Result<Vec<u8>> {
        let mut b =
            MessageBuilder::active_leasequery(xid.value()).client_id(&self.settings.requestor);
        b = if self.settings.relay_data {
            b.oro(&[OptionCode::LqBaseTime, OptionCode::LqRelayData])
        } else {
            b.oro(&[OptionCode::LqBaseTime])
        };
        if let Some(f) = filter {
            b = f.add_to(b, self.settings.relay_data);
        }
        if let Some(t) = start {
            b = b.start_time(t);
        }
        b.build_frame()
            .map_err(|e| Error::Invalid(format!("cannot encode the query: {e}")))
    }

    /// Stream `i`'s resume point once the events queued for it so far have been returned.
    fn queued_resume(&self, i: usize) -> Option<ServerTime> {
        self.queue
            .iter()
            .rev()
            .find(|p| p.stream == Some(i))
            .map_or_else(|| self.streams.get(i).and_then(|s| s.resume), |p| p.resume)
    }

    /// Queues `event` for stream `stream` (or the connection), keeping its resume point.
    fn push(&mut self, stream: Option<usize>, event: Event) {
        let resume = stream.and_then(|i| self.queued_resume(i));
        self.queue.push_back(Pending {
            stream,
            event,
            resume,
        });
    }

    /// Moves stream `i`'s resume point to `to` once the events queued for it so far have
    /// been returned.
    fn advance(&mut self, i: usize, to: Option<ServerTime>) {
        if to.is_none() {
            return;
        }
        match self.queue.iter_mut().rev().find(|p| p.stream == Some(i)) {
            Some(p) => p.resume = to,
            None => {
                if let Some(s) = self.streams.get_mut(i) {
                    s.resume = to;
                }
            }
        }
    }

    /// The server the subscription connects to now.
    #[must_use]
    pub fn server(&self) -> SocketAddr {
        self.servers
            .get(self.current)
            .or_else(|| self.servers.first())
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([0u16; 8], 547)))
    }

    fn lost(&mut self, reason: Disconnect) {
        self.conn = None;
        // The next server in turn (D33: the saved base-times are valid there too).
        self.current = (self.current + 1) % self.servers.len().max(1);
        for s in &mut self.streams {
            s.phase = Phase::Disconnected;
        }
        self.failures = self.failures.saturating_add(1);
        let exp = self.failures.saturating_sub(1).min(20);
        let retry_in = self
            .settings
            .reconnect_min
            .saturating_mul(1u32 << exp)
            .min(self.settings.reconnect_max);
        self.retry_at = Some(Instant::now() + retry_in);
        self.push(None, Event::Disconnected { reason, retry_in });
    }

    /// Reads one message (or times out) and queues what it means.
    fn receive(&mut self) -> Result<()> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let now = Instant::now();
        let rcv_timeout = self.settings.rcv_timeout;
        let unanswered = self
            .streams
            .iter()
            .position(|s| s.phase == Phase::AwaitReply && now >= s.sent_at + rcv_timeout);
        if let Some(i) = unanswered {
            let query = self.streams.get(i).and_then(|s| s.filter.clone());
            let position = i.saturating_add(1);
            let of = self.streams.len();
            self.lost(Disconnect::NoReply {
                query,
                position,
                of,
                after: rcv_timeout,
            });
            return Ok(());
        }
        let dead_at = conn.last_received() + rcv_timeout;
        let deadline = dead_at.min(now + TICK);
        match conn.recv_until(deadline) {
            Ok(Some(bytes)) => self.handle(&bytes),
            Ok(None) => {
                if Instant::now() >= dead_at {
                    self.lost(Disconnect::ReceiveTimeout(rcv_timeout));
                }
                Ok(())
            }
            Err(Error::Closed) => {
                let unanswered = self.streams.iter().all(|s| s.phase == Phase::AwaitReply);
                self.lost(if unanswered {
                    Disconnect::ClosedBeforeReply
                } else {
                    Disconnect::Closed
                });
                Ok(())
            }
            Err(e) => {
                self.lost(Disconnect::Failed(e));
                Ok(())
            }
        }
    }

    fn handle(&mut self, bytes: &[u8]) -> Result<()> {
        let msg = match MessageRepr::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                let e = Error::Protocol(format!("unparsable message: {e}"));
                self.lost(Disconnect::Failed(e));
                return Ok(());
            }
        };
        let Some(xid) = msg.xid() else {
            return Ok(());
        };
        let Some(i) = self
            .streams
            .iter()
            .position(|s| s.xid == xid && s.phase != Phase::Disconnected)
        else {
            return Ok(());
        };
        let base = msg.options.base_time();
        let time = TimeBase::now(base);
        if let Some(skew) = time.skew_ms() {
            self.skew_ms = Some(skew);
        }
        let status = msg.options.status();
        let code = status.map_or(Status::Success, |s| s.status);
        let message = status
            .map(|s| s.message_lossy().into_owned())
            .unwrap_or_default();
        let clients = ClientData::all_in(&msg, time);
        let (phase, sent_start) = self
            .streams
            .get(i)
            .map_or((Phase::Disconnected, None), |s| (s.phase, s.sent_start));
        match (phase, msg.msg_type()) {
            (Phase::AwaitReply, MessageType::LeasequeryReply) => match code {
                Status::Success => {
                    self.failures = 0;
                    let next = if sent_start.is_some() {
                        Phase::CatchingUp
                    } else {
                        Phase::Live
                    };
                    self.set_phase(i, next);
                    self.bindings(i, clients);
                    if next == Phase::Live {
                        self.advance(i, base);
                    }
                }
                Status::DataMissing => {
                    self.failures = 0;
                    // After a START_TIME the server still ends the catch-up with
                    // CatchUpComplete: whatever it can send of it (everything since its journal
                    // began, when that is what it lacks) comes first (D19).
                    let next = if sent_start.is_some() {
                        Phase::CatchingUp
                    } else {
                        Phase::Live
                    };
                    self.set_phase(i, next);
                    self.push(
                        Some(i),
                        Event::DataMissing {
                            start: sent_start,
                            end: base,
                            time,
                        },
                    );
                    self.bindings(i, clients);
                    if next == Phase::Live {
                        self.advance(i, base);
                    }
                }
                _ => {
                    self.conn = None;
                    for s in &mut self.streams {
                        s.phase = Phase::Disconnected;
                    }
                    let message = match (self.stream_filter(i), message.is_empty()) {
                        (Some(f), true) => f.to_string(),
                        (Some(f), false) => format!("{f}: {message}"),
                        (None, _) => message,
                    };
                    return Err(Error::Refused {
                        status: code,
                        message,
                    });
                }
            },
            (Phase::CatchingUp | Phase::Live, MessageType::LeasequeryData) => {
                let catching_up = phase == Phase::CatchingUp;
                match code {
                    Status::CatchUpComplete => {
                        self.set_phase(i, Phase::Live);
                        self.bindings(i, clients);
                        if catching_up {
                            self.push(Some(i), Event::CatchUpComplete(time));
                        }
                    }
                    Status::DataMissing => {
                        let start = if catching_up {
                            sent_start
                        } else {
                            self.queued_resume(i)
                        };
                        self.set_phase(i, Phase::Live);
                        self.push(
                            Some(i),
                            Event::DataMissing {
                                start,
                                end: base,
                                time,
                            },
                        );
                        self.bindings(i, clients);
                    }
                    _ if clients.is_empty() => self.push(Some(i), Event::Keepalive(time)),
                    _ => self.bindings(i, clients),
                }
                if self.stream_phase(i) == Phase::Live {
                    self.advance(i, base);
                }
            }
            (_, MessageType::LeasequeryDone) => {
                self.bindings(i, clients);
                self.lost(Disconnect::Terminated {
                    status: code,
                    message,
                });
            }
            (phase, other) => {
                let e = Error::Protocol(format!("unexpected {other} while {phase:?}"));
                self.lost(Disconnect::Failed(e));
            }
        }
        Ok(())
    }

    fn set_phase(&mut self, i: usize, phase: Phase) {
        if let Some(s) = self.streams.get_mut(i) {
            s.phase = phase;
        }
    }

    fn bindings(&mut self, i: usize, clients: Vec<ClientData>) {
        for c in clients {
            self.push(Some(i), Event::Binding(c));
        }
    }
}
