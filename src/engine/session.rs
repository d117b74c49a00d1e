//! One TCP connection's protocol state, sans-IO: framing, the queries running on it, and
//! what is refused or closes it (digest §9.2; decisions D8, D21, D22, D24, D25).
//!
//! The server reads bytes and hands them to [`Session::handle_bytes`], which consumes whole
//! frames only while fewer than `max_concurrent_queries` answers are running (D22: the
//! connection is not read while at the limit, so unread queries wait in the socket). It fills
//! the outbound buffer with [`Session::fill`], round-robin over the running answers, up to the
//! high-water mark.

use std::fmt;

use std::time::{Duration, Instant};

use super::active::{ActiveQuery, EncodeCache};
use super::bulk::{BulkAnswer, Fill};
use super::query::{
    ActiveRequest, Refusal, Transport, allowed, read_active, read_leasequery, resolve_active_links,
    resolve_links,
};
use super::reply::{push_frame, refusal_options};
use super::tally::{QueryMessage, Tally};
use crate::codec::{
    Decoded, DhcpOption, Duid, FrameDecoder, MessageRepr, MessageType, Options, QueryType,
    ServerTime, Status, StatusCode, Xid,
};
use crate::store::{History, Log};

/// Why a session must be closed. Every variant names the reason for the log line (D24).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// A frame shorter than a DHCPv6 header or longer than allowed.
    BadFrame(crate::codec::Error),
    /// A frame whose message does not parse.
    BadMessage(crate::codec::Error),
    /// A message type a requestor may not send on a Bulk connection.
    UnexpectedMessage(MessageType),
    /// An ACTIVELEASEQUERY refused with this status (D8: then close; D10 when Active is off).
    ActiveRefused(Status),
    /// A query on a plain connection where TLS is required (D25): refused with NotAllowed.
    TlsRequired,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadFrame(e) => write!(f, "bad frame: {e}"),
            Self::BadMessage(e) => write!(f, "unparsable message: {e}"),
            Self::UnexpectedMessage(t) => write!(f, "{t} is not a requestor's message"),
            Self::ActiveRefused(s) => write!(f, "ACTIVELEASEQUERY refused with {s}"),
            Self::TlsRequired => write!(f, "query without TLS where TLS is required"),
        }
    }
}

/// What the policy allows a requestor (decision D23).
pub trait Policy {
    /// True when this requestor may run queries of this type.
    fn allows(&self, query_type: QueryType) -> bool;
}

/// A policy that allows everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Policy for AllowAll {
    fn allows(&self, _: QueryType) -> bool {
        true
    }
}

/// Something worth a log line that did not close the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A query was refused with this status (D8).
    Refused {
        /// Its xid.
        xid: Xid,
        /// The status sent.
        status: Status,
        /// Why.
        reason: &'static str,
    },
    /// A query whose xid is already running was dropped (D21).
    DuplicateXid(Xid),
    /// A STARTTLS was answered with TLSConnectionRefused (D25).
    StartTlsRefused,
    /// A STARTTLS was accepted: the TLS handshake follows (D25).
    StartTls,
    /// An Active query started.
    ActiveStarted {
        /// Its xid.
        xid: Xid,
        /// True when it asked for a catch-up the journal covers.
        catching_up: bool,
    },
}

/// What Active Leasequery service is offered (D10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveSettings {
    /// ACTIVELEASEQUERY is served; otherwise NotSupported.
    pub enabled: bool,
    /// OPTION_LQ_START_TIME is honoured; otherwise NotSupported.
    pub catch_up: bool,
    /// ACTIVE_LQ_IDLE_TIMEOUT: a keepalive after this long without sending (D2).
    pub idle_timeout: Duration,
}

impl Default for ActiveSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            catch_up: true,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// What a session works with on one turn of the loop.
#[derive(Debug)]
pub struct Ctx<'a, L: Log> {
    /// The bindings and the journal.
    pub history: &'a History<L>,
    /// This server's DUID.
    pub server_id: &'a [u8],
    /// The server time (OPTION_LQ_BASE_TIME, lifetimes).
    pub now: ServerTime,
    /// The monotonic time (keepalives).
    pub mono: Instant,
    /// The Active service offered.
    pub active: ActiveSettings,
}

/// What a session does with STARTTLS, and with queries before it (D25).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TlsOffer {
    /// STARTTLS gets TLSConnectionRefused; the connection stays plain.
    #[default]
    Off,
    /// STARTTLS is accepted; plain queries are served too.
    Offer,
    /// STARTTLS is accepted; a query before it gets NotAllowed, then the connection closes.
    Require,
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Session {
    decoder: FrameDecoder,
    answers: Vec<BulkAnswer>,
    active: Vec<ActiveQuery>,
    next: usize,
    max_concurrent: usize,
    received_any: bool,
    tls: TlsOffer,
    /// The connection runs TLS (after STARTTLS and the handshake).
    secured: bool,
    /// STARTTLS was accepted and the server has not switched to TLS yet: no frame after it is
    /// read as plain text (the octets after it belong to the handshake).
    upgrading: bool,
    /// Counts for the metrics (the Active queries keep their own).
    tally: Tally,
    /// Active queries list the records they deliver, for the fan-out latency.
    time_deliveries: bool,
}

impl Session {
    /// A session allowing `max_concurrent` queries at once (D22).
    #[must_use]
    pub fn new(max_concurrent: usize) -> Self {
        Self {
            decoder: FrameDecoder::default(),
            answers: Vec::new(),
            active: Vec::new(),
            next: 0,
            max_concurrent: max_concurrent.max(1),
            received_any: false,
            tls: TlsOffer::Off,
            secured: false,
            upgrading: false,
            tally: Tally::default(),
            time_deliveries: false,
        }
    }

    /// Has this session's Active queries list the journal records they deliver (in the
    /// tally's `delivered`), for a server that times its fan-out.
    pub fn time_deliveries(&mut self, on: bool) {
        self.time_deliveries = on;
    }

    /// What this session did since the last call, for the metrics; the counts start again.
    /// The delivered sequence numbers are [`take_delivered`](Self::take_delivered)'s: those
    /// not taken are dropped here.
    pub fn take_tally(&mut self, into: &mut Tally) {
        into.absorb(&mut self.tally);
        for q in &mut self.active {
            q.tally.delivered.clear();
            into.absorb(&mut q.tally);
        }
    }

    /// Moves the journal sequence numbers delivered into Active streams since the last call
    /// (see [`Tally::delivered`]) to `into`, leaving the other counts for
    /// [`take_tally`](Self::take_tally): what the server needs after every fill, cheaply.
    pub fn take_delivered(&mut self, into: &mut Vec<u64>) {
        for q in &mut self.active {
            if !q.tally.delivered.is_empty() {
                into.append(&mut q.tally.delivered);
            }
        }
    }

    /// Sets what STARTTLS gets on this connection (before its first message).
    pub fn set_tls(&mut self, offer: TlsOffer) {
        self.tls = offer;
    }

    /// True once STARTTLS was accepted and until [`secured`](Self::secured): the server
    /// switches the connection to TLS, and hands the octets after the STARTTLS frame to the
    /// handshake.
    #[must_use]
    pub fn upgrading(&self) -> bool {
        self.upgrading
    }

    /// The server has switched the connection to TLS: frames are read again (they arrive
    /// decrypted), and queries are allowed under [`TlsOffer::Require`].
    pub fn secured(&mut self) {
        self.upgrading = false;
        self.secured = true;
    }

    /// True while the session can take another query: the server reads the socket only then.
    #[must_use]
    pub fn wants_read(&self) -> bool {
        self.running() < self.max_concurrent
    }

    /// True when `buf` starts with a whole frame (or a frame header the decoder will refuse):
    /// buffered queries the session has yet to take.
    #[must_use]
    pub fn holds_whole_frame(&self, buf: &[u8]) -> bool {
        match buf {
            [a, b, rest @ ..] => rest.len() >= usize::from(u16::from_be_bytes([*a, *b])),
            _ => false,
        }
    }

    /// The number of queries in progress, Bulk and Active.
    #[must_use]
    pub fn running(&self) -> usize {
        self.answers.len().saturating_add(self.active.len())
    }

    /// The number of Bulk answers in progress (each has more to send until it finishes).
    #[must_use]
    pub fn bulk_running(&self) -> usize {
        self.answers.len()
    }

    /// True while an Active query runs on this connection (it never finishes by itself).
    #[must_use]
    pub fn has_active(&self) -> bool {
        !self.active.is_empty()
    }

    /// The Active queries running.
    #[must_use]
    pub fn active_queries(&self) -> &[ActiveQuery] {
        &self.active
    }

    /// The Bulk answers in progress.
    #[must_use]
    pub fn bulk_answers(&self) -> &[BulkAnswer] {
        &self.answers
    }

    /// Consumes whole frames from `buf` while the session can take queries; returns the octets
    /// consumed (the caller keeps the rest). Refusals and other immediate replies go to `out`,
    /// log-worthy events to `events`. An error means: close the connection.
    pub fn handle_bytes<L: Log>(
        &mut self,
        buf: &[u8],
        ctx: &Ctx<'_, L>,
        policy: &dyn Policy,
        out: &mut Vec<u8>,
        events: &mut Vec<Event>,
    ) -> Result<usize, CloseReason> {
        let mut consumed = 0;
        while self.wants_read() && !self.upgrading {
            let rest = buf.get(consumed..).unwrap_or(&[]);
            match self.decoder.decode(rest).map_err(CloseReason::BadFrame)? {
                Decoded::Incomplete { .. } => break,
                Decoded::Frame {
                    message,
                    consumed: n,
                } => {
                    consumed += n;
                    self.handle_message(message, ctx, policy, out, events)?;
                }
            }
        }
        Ok(consumed)
    }

    fn handle_message<L: Log>(
        &mut self,
        bytes: &[u8],
        ctx: &Ctx<'_, L>,
        policy: &dyn Policy,
        out: &mut Vec<u8>,
        events: &mut Vec<Event>,
    ) -> Result<(), CloseReason> {
        let server_id = ctx.server_id;
        let store = ctx.history.store();
        let msg = MessageRepr::parse(bytes).map_err(CloseReason::BadMessage)?;
        let first = !self.received_any;
        self.received_any = true;
        match msg.msg_type() {
            MessageType::Leasequery | MessageType::ActiveLeasequery
                if self.tls == TlsOffer::Require && !self.secured =>
            {
                // D25: TLS is required and this connection has not started it.
                let xid = msg.xid().unwrap_or_default();
                let requestor = msg.options.client_id().map(|d| d.as_bytes());
                reply_status(
                    xid,
                    requestor,
                    server_id,
                    Status::NotAllowed,
                    "TLS is required: send STARTTLS first",
                    out,
                );
                let message = if msg.msg_type() == MessageType::ActiveLeasequery {
                    QueryMessage::Active
                } else {
                    QueryMessage::Leasequery
                };
                let query_type = msg.options.lq_query().map(|q| q.query_type);
                self.tally.outcome(message, query_type, Status::NotAllowed);
                return Err(CloseReason::TlsRequired);
            }
            MessageType::Leasequery => {}
            MessageType::StartTls if first && self.tls != TlsOffer::Off => {
                // D25: accept with a STARTTLS of the same xid; the handshake follows.
                let xid = msg.xid().unwrap_or_default();
                let requestor = msg.options.client_id().map(|d| d.as_bytes());
                let mut top = vec![DhcpOption::ServerId(Duid(server_id))];
                top.extend(requestor.map(|r| DhcpOption::ClientId(Duid(r))));
                push_frame(
                    &MessageRepr::new(MessageType::StartTls, xid, Options::from_items(&top)),
                    out,
                );
                self.upgrading = true;
                self.tally.starttls_accepted = self.tally.starttls_accepted.saturating_add(1);
                events.push(Event::StartTls);
                return Ok(());
            }
            MessageType::StartTls if first => {
                // D25: no TLS configured: refuse and stay in plain mode.
                let xid = msg.xid().unwrap_or_default();
                let requestor = msg.options.client_id().map(|d| d.as_bytes());
                reply_status(
                    xid,
                    requestor,
                    server_id,
                    Status::TlsConnectionRefused,
                    "TLS is not configured",
                    out,
                );
                self.tally.starttls_refused = self.tally.starttls_refused.saturating_add(1);
                events.push(Event::StartTlsRefused);
                return Ok(());
            }
            MessageType::ActiveLeasequery => {
                return self.start_active(&msg, ctx, policy, out, events);
            }
            other => return Err(CloseReason::UnexpectedMessage(other)),
        }
        let query_type = msg
            .options
            .lq_query()
            .map_or(QueryType::Unknown(0), |q| q.query_type);
        let checked = read_leasequery(&msg, Transport::Tcp)
            .and_then(|q| resolve_links(q, store))
            .and_then(|q| allowed(q, query_type, policy));
        let query = match checked {
            Ok(q) => q,
            Err(Refusal {
                xid,
                requestor_id,
                status,
                reason,
            }) => {
                reply_status(xid, requestor_id.as_deref(), server_id, status, reason, out);
                self.tally
                    .outcome(QueryMessage::Leasequery, Some(query_type), status);
                events.push(Event::Refused {
                    xid,
                    status,
                    reason,
                });
                return Ok(());
            }
        };
        if self.is_running(query.xid) {
            events.push(Event::DuplicateXid(query.xid));
            return Ok(());
        }
        self.answers
            .push(BulkAnswer::new(query).started_at(ctx.now));
        Ok(())
    }

    /// True when a query with this xid runs on this connection, Bulk or Active (D21).
    fn is_running(&self, xid: Xid) -> bool {
        self.answers.iter().any(|a| a.query().xid == xid)
            || self.active.iter().any(|a| a.xid() == xid)
    }

    /// Starts an Active query (digest §10.4), or refuses it with a LEASEQUERY-REPLY and asks
    /// for the connection to close (D8, D10).
    fn start_active<L: Log>(
        &mut self,
        msg: &MessageRepr<'_>,
        ctx: &Ctx<'_, L>,
        policy: &dyn Policy,
        out: &mut Vec<u8>,
        events: &mut Vec<Event>,
    ) -> Result<(), CloseReason> {
        let checked = read_active(msg)
            .and_then(|r| allowed_active(r, policy, ctx.active))
            .and_then(|r| resolve_active_links(r, ctx.history.store()));
        let request = match checked {
            Ok(r) => r,
            Err(Refusal {
                xid,
                requestor_id,
                status,
                reason,
            }) => {
                reply_status(
                    xid,
                    requestor_id.as_deref(),
                    ctx.server_id,
                    status,
                    reason,
                    out,
                );
                let query_type = msg.options.lq_query().map(|q| q.query_type);
                self.tally.outcome(QueryMessage::Active, query_type, status);
                events.push(Event::Refused {
                    xid,
                    status,
                    reason,
                });
                return Err(CloseReason::ActiveRefused(status));
            }
        };
        if self.is_running(request.xid) {
            events.push(Event::DuplicateXid(request.xid));
            return Ok(());
        }
        let query_type = request.query_type;
        let mut query =
            ActiveQuery::start(request, ctx.history, ctx.server_id, ctx.now, ctx.mono, out);
        let status = if query.tally.data_missing > 0 {
            Status::DataMissing
        } else {
            Status::Success
        };
        self.tally.outcome(QueryMessage::Active, query_type, status);
        events.push(Event::ActiveStarted {
            xid: query.xid(),
            catching_up: query.catching_up(),
        });
        query.time_deliveries = self.time_deliveries;
        self.active.push(query);
        Ok(())
    }

    /// Appends the running queries' messages to `out` until it holds `high_water` octets or
    /// nothing is left to send: Active streams first (they are live), then the Bulk answers
    /// round-robin. Finished Bulk answers are dropped. True when an Active query has records
    /// left to read.
    pub fn fill<L: Log>(
        &mut self,
        ctx: &Ctx<'_, L>,
        cache: &mut EncodeCache,
        out: &mut Vec<u8>,
        high_water: usize,
    ) -> bool {
        let mut more = false;
        for q in &mut self.active {
            more |= q.fill(
                ctx.history,
                cache,
                ctx.now,
                ctx.mono,
                ctx.active.idle_timeout,
                out,
                high_water,
            );
        }
        let (store, server_id, now) = (ctx.history.store(), ctx.server_id, ctx.now);
        while out.len() < high_water && !self.answers.is_empty() {
            if self.next >= self.answers.len() {
                self.next = 0;
            }
            // A small share per turn keeps several answers moving together.
            let share = out.len().saturating_add(4096).min(high_water);
            let Some(answer) = self.answers.get_mut(self.next) else {
                break;
            };
            if answer.fill(store, server_id, now, out, share) == Fill::Finished {
                let query_type = answer.query().selector.query_type();
                self.tally
                    .outcome(QueryMessage::Leasequery, Some(query_type), Status::Success);
                self.answers.remove(self.next);
            } else {
                self.next += 1;
            }
        }
        more
    }

    /// A keepalive on every Active query now (D2), whatever the idle time: lqd writes at once
    /// when the requestor closed its side, to learn whether it is still there.
    pub fn keepalive_now<L: Log>(&mut self, ctx: &Ctx<'_, L>, out: &mut Vec<u8>) {
        for q in &mut self.active {
            q.keepalive_now(ctx.now, ctx.mono, out);
        }
    }

    /// Ends every running answer with LEASEQUERY-DONE QueryTerminated (D9), for shutdown.
    pub fn terminate_all(&mut self, server_id: &[u8], now: ServerTime, out: &mut Vec<u8>) {
        for answer in &mut self.answers {
            answer.terminate(
                Status::QueryTerminated,
                "server shutting down",
                server_id,
                now,
                out,
            );
        }
        self.answers.clear();
        for query in &self.active {
            query.terminate(Status::QueryTerminated, "server shutting down", now, out);
        }
        self.active.clear();
    }
}

/// A LEASEQUERY-REPLY carrying only Server-ID, Client-ID and a status (D8).
fn reply_status(
    xid: Xid,
    requestor: Option<&[u8]>,
    server_id: &[u8],
    status: Status,
    reason: &str,
    out: &mut Vec<u8>,
) {
    let top = refusal_options(server_id, requestor, StatusCode::new(status, reason));
    push_frame(
        &MessageRepr::new(MessageType::LeasequeryReply, xid, Options::from_items(&top)),
        out,
    );
}

/// Refuses an Active query the configuration or the requestor's policy does not allow: Active
/// or catch-up switched off (NotSupported, D10), a filter type not allowed, or no filter for a
/// requestor not allowed every type (it would see every binding) (NotAllowed, D23).
fn allowed_active(
    request: ActiveRequest,
    policy: &dyn Policy,
    settings: ActiveSettings,
) -> Result<ActiveRequest, Refusal> {
    let refuse = |request: ActiveRequest, status, reason| Refusal {
        xid: request.xid,
        requestor_id: request.requestor_id,
        status,
        reason,
    };
    if !settings.enabled {
        return Err(refuse(
            request,
            Status::NotSupported,
            "Active Leasequery is not served",
        ));
    }
    if request.start.is_some() && !settings.catch_up {
        return Err(refuse(
            request,
            Status::NotSupported,
            "catch-up (OPTION_LQ_START_TIME) is not served",
        ));
    }
    let allowed = match request.query_type {
        Some(t) => policy.allows(t),
        None => [
            QueryType::ByAddress,
            QueryType::ByClientId,
            QueryType::ByRelayId,
            QueryType::ByLinkAddress,
            QueryType::ByRemoteId,
        ]
        .into_iter()
        .all(|t| policy.allows(t)),
    };
    if allowed {
        Ok(request)
    } else {
        Err(refuse(
            request,
            Status::NotAllowed,
            "query type not allowed for this requestor",
        ))
    }
}
