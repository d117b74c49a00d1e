//! Bulk Leasequery (RFC 5460 with the RFC 7653 time window; digest §9.3): one query's answer
//! as an iterator of bindings.
//!
//! The answer is a LEASEQUERY-REPLY (an error status ends it: the query was refused; no client
//! data ends it: nothing matched, decision D12), then one LEASEQUERY-DATA per further binding,
//! then LEASEQUERY-DONE (an error status there means the answer is incomplete). Messages of
//! other xids on the connection (late answers to an abandoned query) are skipped.

use std::collections::VecDeque;
use std::time::Instant;

use super::binding::ClientData;
use super::conn::Connection;
use super::error::{Error, Result};
use super::query::{Query, TimeWindow};
use super::time::TimeBase;
use crate::codec::{
    BuildOptions, MessageBuilder, MessageRepr, MessageType, OptionCode, ServerTime, Status, Xid,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitReply,
    Streaming,
    Finished,
}

/// A running Bulk query: iterate it for the bindings, each an `Ok(ClientData)`. A refusal, an
/// incomplete answer or a connection failure comes as one `Err` and ends the iteration.
#[derive(Debug)]
pub struct Bulk<'c> {
    conn: &'c mut Connection,
    xid: Xid,
    state: State,
    queue: VecDeque<ClientData>,
    first_base_time: Option<ServerTime>,
    last_base_time: Option<ServerTime>,
    error: Option<Error>,
}

impl<'c> Bulk<'c> {
    /// Sends the LEASEQUERY (asking for base-time) and returns the answer to read.
    pub(crate) fn start(
        conn: &'c mut Connection,
        query: &Query,
        window: TimeWindow,
    ) -> Result<Self> {
        let xid = conn.new_xid();
        let b = MessageBuilder::leasequery(xid.value())
            .client_id(conn.requestor())
            .oro(&[OptionCode::LqBaseTime]);
        let frame = window
            .add_to(query.add_to(b, false))
            .build_frame()
            .map_err(|e| Error::Invalid(format!("cannot encode the query: {e}")))?;
        conn.send(&frame)?;
        Ok(Self {
            conn,
            xid,
            state: State::AwaitReply,
            queue: VecDeque::new(),
            first_base_time: None,
            last_base_time: None,
            error: None,
        })
    }

    /// The query's xid.
    #[must_use]
    pub const fn xid(&self) -> Xid {
        self.xid
    }

    /// OPTION_LQ_BASE_TIME of the answer's first message (the LEASEQUERY-REPLY), once read.
    #[must_use]
    pub const fn first_base_time(&self) -> Option<ServerTime> {
        self.first_base_time
    }

    /// OPTION_LQ_BASE_TIME of the answer's latest message.
    #[must_use]
    pub const fn last_base_time(&self) -> Option<ServerTime> {
        self.last_base_time
    }

    /// True once the whole answer has been read (or it failed).
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished && self.queue.is_empty() && self.error.is_none()
    }

    fn fail(&mut self, e: Error) -> Option<Result<ClientData>> {
        self.state = State::Finished;
        Some(Err(e))
    }

    /// Takes one message of this query; an error ends the answer.
    fn take(&mut self, msg: &MessageRepr<'_>) -> Result<()> {
        let base = msg.options.base_time();
        if base.is_some() {
            self.first_base_time = self.first_base_time.or(base);
            self.last_base_time = base;
        }
        let time = TimeBase::now(base);
        let status = msg.options.status();
        let code = status.map_or(Status::Success, |s| s.status);
        let message = || {
            status
                .map(|s| s.message_lossy().into_owned())
                .unwrap_or_default()
        };
        match (self.state, msg.msg_type()) {
            (State::AwaitReply, MessageType::LeasequeryReply) => {
                if code != Status::Success {
                    return Err(Error::Refused {
                        status: code,
                        message: message(),
                    });
                }
                let clients = ClientData::all_in(msg, time);
                self.state = if clients.is_empty() {
                    State::Finished
                } else {
                    State::Streaming
                };
                self.queue.extend(clients);
            }
            (State::Streaming, MessageType::LeasequeryData) => {
                self.queue.extend(ClientData::all_in(msg, time));
            }
            (State::Streaming, MessageType::LeasequeryDone) => {
                self.queue.extend(ClientData::all_in(msg, time));
                self.state = State::Finished;
                if code != Status::Success {
                    return Err(Error::Incomplete {
                        status: code,
                        message: message(),
                    });
                }
            }
            (_, other) => {
                return Err(Error::Protocol(format!(
                    "unexpected {other} in a Bulk answer"
                )));
            }
        }
        Ok(())
    }
}

impl Iterator for Bulk<'_> {
    type Item = Result<ClientData>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(cd) = self.queue.pop_front() {
                return Some(Ok(cd));
            }
            if let Some(e) = self.error.take() {
                return Some(Err(e));
            }
            if self.state == State::Finished {
                return None;
            }
            let deadline = Instant::now() + self.conn.data_timeout();
            let bytes = match self.conn.recv_until(deadline) {
                Ok(Some(b)) => b,
                Ok(None) => return self.fail(Error::Timeout),
                Err(e) => return self.fail(e),
            };
            let msg = match MessageRepr::parse(&bytes) {
                Ok(m) => m,
                Err(e) => return self.fail(Error::Protocol(format!("unparsable message: {e}"))),
            };
            if msg.xid() != Some(self.xid) {
                continue;
            }
            if let Err(e) = self.take(&msg) {
                // Bindings queued before the error (a DONE's own data) still come first.
                self.state = State::Finished;
                self.error = Some(e);
            }
        }
    }
}
