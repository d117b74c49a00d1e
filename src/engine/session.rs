//! One TCP connection's protocol state, sans-IO: framing, the queries running on it, and
//! what is refused or closes it (digest §9.2; decisions D8, D21, D22, D24, D25).
//!
//! The server reads bytes and hands them to [`Session::handle_bytes`], which consumes whole
//! frames only while fewer than `max_concurrent_queries` answers are running (D22: the
//! connection is not read while at the limit, so unread queries wait in the socket). It fills
//! the outbound buffer with [`Session::fill`], round-robin over the running answers, up to the
//! high-water mark.

use std::fmt;

use super::bulk::{BulkAnswer, Fill};
use super::query::{Refusal, Transport, read_leasequery, resolve_links};
use super::reply::{push_frame, refusal_options};
use crate::codec::{
    Decoded, FrameDecoder, MessageRepr, MessageType, Options, QueryType, ServerTime, Status,
    StatusCode, Xid,
};
use crate::store::Store;

/// Why a session must be closed. Every variant names the reason for the log line (D24).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// A frame shorter than a DHCPv6 header or longer than allowed.
    BadFrame(crate::codec::Error),
    /// A frame whose message does not parse.
    BadMessage(crate::codec::Error),
    /// A message type a requestor may not send on a Bulk connection.
    UnexpectedMessage(MessageType),
    /// An ACTIVELEASEQUERY, refused (this server does not serve Active Leasequery yet, D10).
    ActiveRefused,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadFrame(e) => write!(f, "bad frame: {e}"),
            Self::BadMessage(e) => write!(f, "unparsable message: {e}"),
            Self::UnexpectedMessage(t) => write!(f, "{t} is not a requestor's message"),
            Self::ActiveRefused => f.write_str("ACTIVELEASEQUERY refused with NotSupported"),
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
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Session {
    decoder: FrameDecoder,
    answers: Vec<BulkAnswer>,
    next: usize,
    max_concurrent: usize,
    received_any: bool,
}

impl Session {
    /// A session allowing `max_concurrent` queries at once (D22).
    #[must_use]
    pub fn new(max_concurrent: usize) -> Self {
        Self {
            decoder: FrameDecoder::default(),
            answers: Vec::new(),
            next: 0,
            max_concurrent: max_concurrent.max(1),
            received_any: false,
        }
    }

    /// True while the session can take another query: the server reads the socket only then.
    #[must_use]
    pub fn wants_read(&self) -> bool {
        self.answers.len() < self.max_concurrent
    }

    /// The number of answers in progress.
    #[must_use]
    pub fn running(&self) -> usize {
        self.answers.len()
    }

    /// Consumes whole frames from `buf` while the session can take queries; returns the octets
    /// consumed (the caller keeps the rest). Refusals and other immediate replies go to `out`,
    /// log-worthy events to `events`. An error means: close the connection.
    pub fn handle_bytes(
        &mut self,
        buf: &[u8],
        store: &Store,
        server_id: &[u8],
        policy: &dyn Policy,
        out: &mut Vec<u8>,
        events: &mut Vec<Event>,
    ) -> Result<usize, CloseReason> {
        let mut consumed = 0;
        while self.wants_read() {
            let rest = buf.get(consumed..).unwrap_or(&[]);
            match self.decoder.decode(rest).map_err(CloseReason::BadFrame)? {
                Decoded::Incomplete { .. } => break,
                Decoded::Frame {
                    message,
                    consumed: n,
                } => {
                    consumed += n;
                    self.handle_message(message, store, server_id, policy, out, events)?;
                }
            }
        }
        Ok(consumed)
    }

    fn handle_message(
        &mut self,
        bytes: &[u8],
        store: &Store,
        server_id: &[u8],
        policy: &dyn Policy,
        out: &mut Vec<u8>,
        events: &mut Vec<Event>,
    ) -> Result<(), CloseReason> {
        let msg = MessageRepr::parse(bytes).map_err(CloseReason::BadMessage)?;
        let first = !self.received_any;
        self.received_any = true;
        match msg.msg_type() {
            MessageType::Leasequery => {}
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
                events.push(Event::StartTlsRefused);
                return Ok(());
            }
            MessageType::ActiveLeasequery => {
                let xid = msg.xid().unwrap_or_default();
                let requestor = msg.options.client_id().map(|d| d.as_bytes());
                reply_status(
                    xid,
                    requestor,
                    server_id,
                    Status::NotSupported,
                    "Active Leasequery is not served",
                    out,
                );
                return Err(CloseReason::ActiveRefused);
            }
            other => return Err(CloseReason::UnexpectedMessage(other)),
        }
        let query =
            match read_leasequery(&msg, Transport::Tcp).and_then(|q| resolve_links(q, store)) {
                Ok(q) => q,
                Err(Refusal {
                    xid,
                    requestor_id,
                    status,
                    reason,
                }) => {
                    reply_status(xid, requestor_id.as_deref(), server_id, status, reason, out);
                    events.push(Event::Refused {
                        xid,
                        status,
                        reason,
                    });
                    return Ok(());
                }
            };
        let query_type = msg
            .options
            .lq_query()
            .map_or(QueryType::Unknown(0), |q| q.query_type);
        if !policy.allows(query_type) {
            let reason = "query type not allowed for this requestor";
            reply_status(
                query.xid,
                query.requestor_id.as_deref(),
                server_id,
                Status::NotAllowed,
                reason,
                out,
            );
            events.push(Event::Refused {
                xid: query.xid,
                status: Status::NotAllowed,
                reason,
            });
            return Ok(());
        }
        if self.answers.iter().any(|a| a.query().xid == query.xid) {
            events.push(Event::DuplicateXid(query.xid));
            return Ok(());
        }
        self.answers.push(BulkAnswer::new(query));
        Ok(())
    }

    /// Appends the running answers' messages to `out`, round-robin, until it holds
    /// `high_water` octets or nothing is left to send. Finished answers are dropped.
    pub fn fill(
        &mut self,
        store: &Store,
        server_id: &[u8],
        now: ServerTime,
        out: &mut Vec<u8>,
        high_water: usize,
    ) {
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
                self.answers.remove(self.next);
            } else {
                self.next += 1;
            }
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
