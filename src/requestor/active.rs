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
    /// The server ended the query with LEASEQUERY-DONE (QueryTerminated on shutdown, D9).
    Terminated {
        /// The DONE's status.
        status: Status,
        /// Its status message.
        message: String,
    },
    /// Connecting, sending or receiving failed, or the server broke the protocol.
    Failed(Error),
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
            Self::Terminated { status, message } if message.is_empty() => {
                write!(f, "the server ended the query: {status}")
            }
            Self::Terminated { status, message } => {
                write!(f, "the server ended the query: {status} ({message})")
            }
            Self::Failed(e) => e.fmt(f),
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
    Event(Event),
    /// The deadline passed first.
    Idle,
    /// The stop flag is set.
    Stopped,
}

/// An event, and the resume point once it has been returned.
#[derive(Debug)]
struct Pending {
    event: Event,
    resume: Option<ServerTime>,
}

/// An Active Leasequery subscription to one server.
#[derive(Debug)]
pub struct Subscription {
    server: SocketAddr,
    settings: ActiveSettings,
    conn: Option<Connection>,
    xid: Xid,
    phase: Phase,
    sent_start: Option<ServerTime>,
    resume: Option<ServerTime>,
    skew_ms: Option<i64>,
    failures: u32,
    retry_at: Option<Instant>,
    queue: VecDeque<Pending>,
}

impl Subscription {
    /// A subscription to `server` that will resume from `resume_from` (sent as START_TIME);
    /// it connects on the first [`next_event`](Self::next_event).
    #[must_use]
    pub const fn new(
        server: SocketAddr,
        settings: ActiveSettings,
        resume_from: Option<ServerTime>,
    ) -> Self {
        Self {
            server,
            settings,
            conn: None,
            xid: Xid::new(0),
            phase: Phase::Disconnected,
            sent_start: None,
            resume: resume_from,
            skew_ms: None,
            failures: 0,
            retry_at: None,
            queue: VecDeque::new(),
        }
    }

    /// The state machine's phase.
    #[must_use]
    pub const fn phase(&self) -> Phase {
        self.phase
    }

    /// The base-time a reconnect would send as START_TIME, as of the last event returned.
    #[must_use]
    pub const fn resume_point(&self) -> Option<ServerTime> {
        self.resume
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

    /// Drops the connection; the next call reconnects at once from the resume point.
    pub fn disconnect(&mut self) {
        self.conn = None;
        self.phase = Phase::Disconnected;
        self.retry_at = None;
    }

    /// The next event, blocking until there is one. `Ok(None)` once the stop flag is set;
    /// [`Error::Refused`] when the server refuses the query (the subscription is then
    /// disconnected; calling again retries).
    pub fn next_event(&mut self) -> Result<Option<Event>> {
        loop {
            match self.next_before(None)? {
                Next::Event(e) => return Ok(Some(e)),
                Next::Stopped => return Ok(None),
                Next::Idle => {}
            }
        }
    }

    /// The same, but returns [`Next::Idle`] at `deadline` if nothing happened before.
    pub(crate) fn next_before(&mut self, deadline: Option<Instant>) -> Result<Next> {
        loop {
            if let Some(p) = self.queue.pop_front() {
                self.resume = p.resume;
                return Ok(Next::Event(p.event));
            }
            if self.settings.stopped() {
                return Ok(Next::Stopped);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Next::Idle);
            }
            if self.conn.is_none() {
                self.try_connect();
                continue;
            }
            self.receive()?;
        }
    }

    fn try_connect(&mut self) {
        if let Some(at) = self.retry_at {
            let left = at.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                std::thread::sleep(left.min(TICK));
                return;
            }
        }
        self.retry_at = None;
        let start = self.resume;
        let sent = Connection::connect(self.server, &self.settings.requestor).and_then(|mut c| {
            let xid = c.new_xid();
            let mut b =
                MessageBuilder::active_leasequery(xid.value()).client_id(&self.settings.requestor);
            b = if self.settings.relay_data {
                b.oro(&[OptionCode::LqBaseTime, OptionCode::LqRelayData])
            } else {
                b.oro(&[OptionCode::LqBaseTime])
            };
            if let Some(f) = &self.settings.filter {
                b = f.add_to(b, self.settings.relay_data);
            }
            if let Some(t) = start {
                b = b.start_time(t);
            }
            let frame = b
                .build_frame()
                .map_err(|e| Error::Invalid(format!("cannot encode the query: {e}")))?;
            c.send(&frame)?;
            Ok((c, xid))
        });
        match sent {
            Ok((c, xid)) => {
                self.conn = Some(c);
                self.xid = xid;
                self.phase = Phase::AwaitReply;
                self.sent_start = start;
                self.push(Event::Connected {
                    server: self.server,
                    xid,
                    start_time: start,
                });
            }
            Err(e) => self.lost(Disconnect::Failed(e)),
        }
    }

    /// Queues `event`, keeping the current resume point.
    fn push(&mut self, event: Event) {
        let resume = self.queue.back().map_or(self.resume, |p| p.resume);
        self.queue.push_back(Pending { event, resume });
    }

    /// Moves the resume point to `to` once the events queued so far have been returned.
    fn advance(&mut self, to: Option<ServerTime>) {
        if to.is_none() {
            return;
        }
        match self.queue.back_mut() {
            Some(p) => p.resume = to,
            None => self.resume = to,
        }
    }

    fn lost(&mut self, reason: Disconnect) {
        self.conn = None;
        self.phase = Phase::Disconnected;
        self.failures = self.failures.saturating_add(1);
        let exp = self.failures.saturating_sub(1).min(20);
        let retry_in = self
            .settings
            .reconnect_min
            .saturating_mul(1u32 << exp)
            .min(self.settings.reconnect_max);
        self.retry_at = Some(Instant::now() + retry_in);
        self.push(Event::Disconnected { reason, retry_in });
    }

    /// Reads one message (or times out) and queues what it means.
    fn receive(&mut self) -> Result<()> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let dead_at = conn.last_received() + self.settings.rcv_timeout;
        let deadline = dead_at.min(Instant::now() + TICK);
        match conn.recv_until(deadline) {
            Ok(Some(bytes)) => self.handle(&bytes),
            Ok(None) => {
                if Instant::now() >= dead_at {
                    self.lost(Disconnect::ReceiveTimeout(self.settings.rcv_timeout));
                }
                Ok(())
            }
            Err(Error::Closed) => {
                self.lost(Disconnect::Closed);
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
        if msg.xid() != Some(self.xid) {
            return Ok(());
        }
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
        match (self.phase, msg.msg_type()) {
            (Phase::AwaitReply, MessageType::LeasequeryReply) => match code {
                Status::Success => {
                    self.failures = 0;
                    self.phase = if self.sent_start.is_some() {
                        Phase::CatchingUp
                    } else {
                        Phase::Live
                    };
                    self.bindings(clients);
                    if self.phase == Phase::Live {
                        self.advance(base);
                    }
                }
                Status::DataMissing => {
                    self.failures = 0;
                    self.phase = Phase::Live;
                    self.push(Event::DataMissing {
                        start: self.sent_start,
                        end: base,
                        time,
                    });
                    self.bindings(clients);
                    self.advance(base);
                }
                _ => {
                    self.conn = None;
                    self.phase = Phase::Disconnected;
                    return Err(Error::Refused {
                        status: code,
                        message,
                    });
                }
            },
            (Phase::CatchingUp | Phase::Live, MessageType::LeasequeryData) => {
                let catching_up = self.phase == Phase::CatchingUp;
                match code {
                    Status::CatchUpComplete => {
                        self.phase = Phase::Live;
                        self.bindings(clients);
                        if catching_up {
                            self.push(Event::CatchUpComplete(time));
                        }
                    }
                    Status::DataMissing => {
                        let start = if catching_up {
                            self.sent_start
                        } else {
                            self.queue.back().map_or(self.resume, |p| p.resume)
                        };
                        self.phase = Phase::Live;
                        self.push(Event::DataMissing {
                            start,
                            end: base,
                            time,
                        });
                        self.bindings(clients);
                    }
                    _ if clients.is_empty() => self.push(Event::Keepalive(time)),
                    _ => self.bindings(clients),
                }
                if self.phase == Phase::Live {
                    self.advance(base);
                }
            }
            (_, MessageType::LeasequeryDone) => {
                self.bindings(clients);
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

    fn bindings(&mut self, clients: Vec<ClientData>) {
        for c in clients {
            self.push(Event::Binding(c));
        }
    }
}
