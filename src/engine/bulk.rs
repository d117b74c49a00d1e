//! Bulk Leasequery (RFC 5460 with the RFC 7653 time options): one query's answer, streamed.
//!
//! A [`BulkAnswer`] is a cursor over the store's index for the query's selector. Each call to
//! [`BulkAnswer::fill`] appends framed messages to the connection's outbound buffer until it
//! reaches the caller's high-water mark, so a large answer is produced only as fast as the
//! socket drains and never held whole in memory (architecture, core ideas 5 and 6).
//!
//! The sequence (digest §9.1; decisions D12–D14, D17, D18, D20): the first binding in a
//! LEASEQUERY-REPLY with Server-ID and Client-ID, each further binding in a LEASEQUERY-DATA
//! (one OPTION_CLIENT_DATA per client and link, D13), then a LEASEQUERY-DONE with status
//! Success (D14). Nothing found: one LEASEQUERY-REPLY with neither status nor client data, and
//! no DONE (D12). OPTION_LQ_BASE_TIME in every message when asked for (D18); OPTION_LQ_RELAY_DATA
//! inside each OPTION_CLIENT_DATA when asked for (D17); START / END bound each binding's last
//! change time (D20).

use std::net::Ipv6Addr;

use super::query::{Query, Selector};
use super::reply::{client_data, push_frame, recycle};
use crate::codec::{
    DhcpOption, Duid, MessageRepr, MessageType, Options, ServerTime, Status, StatusCode,
};
use crate::store::{BindingId, BindingRef, Store};

/// Where the answer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// Nothing sent yet.
    Start,
    /// The REPLY is sent; the cursor resumes after this binding (or, for a query by client-id
    /// on every link, after this link).
    After(BindingId, Ipv6Addr),
    /// The last message is written.
    Finished,
}

/// What a call to [`BulkAnswer::fill`] left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// The buffer reached the high-water mark; call again once it drains.
    More,
    /// The answer is complete (its last message is in the buffer).
    Finished,
}

/// One Bulk query's answer in progress.
#[derive(Debug, Clone)]
pub struct BulkAnswer {
    query: Query,
    position: Position,
    sent: u64,
    started: Option<ServerTime>,
}

impl BulkAnswer {
    /// Starts answering `query`.
    #[must_use]
    pub const fn new(query: Query) -> Self {
        Self {
            query,
            started: None,
            position: Position::Start,
            sent: 0,
        }
    }

    /// Notes when the query arrived (for the requestor view).
    #[must_use]
    pub const fn started_at(mut self, t: ServerTime) -> Self {
        self.started = Some(t);
        self
    }

    /// When the query arrived, if noted.
    #[must_use]
    pub const fn started(&self) -> Option<ServerTime> {
        self.started
    }

    /// The query being answered.
    #[must_use]
    pub const fn query(&self) -> &Query {
        &self.query
    }

    /// Bindings sent so far.
    #[must_use]
    pub const fn sent(&self) -> u64 {
        self.sent
    }

    /// True once the last message has been written.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.position == Position::Finished
    }

    /// Appends framed messages to `out` until it holds `high_water` octets or the answer is
    /// complete. Bindings removed from the store since the last call are simply not reached.
    pub fn fill(
        &mut self,
        store: &Store,
        server_id: &[u8],
        now: ServerTime,
        out: &mut Vec<u8>,
        high_water: usize,
    ) -> Fill {
        let mut scratch = Vec::new();
        let mut with_relay = Vec::new();
        let mut relay = Vec::new();
        while out.len() < high_water {
            if self.position == Position::Finished {
                return Fill::Finished;
            }
            match self.next_binding(store) {
                Some((id, binding)) => {
                    let first = self.position == Position::Start;
                    if self.query.want_relay_data {
                        // The relayed message is rebuilt from its relay template into `relay`,
                        // which the options borrow: they take a vector of their own lifetime.
                        let mut opts = recycle(std::mem::take(&mut with_relay));
                        relay.clear();
                        let from = binding.relay_message_into(&mut relay);
                        let message = from.map(|f| (f, &relay[..]));
                        client_data(binding, None, now, message, &mut opts);
                        self.write(first, server_id, now, Some(&opts), None, out);
                        with_relay = recycle(opts);
                    } else {
                        scratch.clear();
                        client_data(binding, None, now, None, &mut scratch);
                        self.write(first, server_id, now, Some(&scratch), None, out);
                    }
                    self.position = Position::After(id, binding.link());
                    self.sent = self.sent.saturating_add(1);
                }
                None => {
                    if self.position == Position::Start {
                        // Nothing found (D12): an empty REPLY, and no DONE.
                        self.write(true, server_id, now, None, None, out);
                    } else {
                        self.write(false, server_id, now, None, Some(Status::Success), out);
                    }
                    self.position = Position::Finished;
                    return Fill::Finished;
                }
            }
        }
        if self.position == Position::Finished {
            Fill::Finished
        } else {
            Fill::More
        }
    }

    /// Ends the answer early with a LEASEQUERY-DONE carrying `status` (D9), or, if nothing was
    /// sent yet, a LEASEQUERY-REPLY carrying it (D8).
    pub fn terminate(
        &mut self,
        status: Status,
        reason: &str,
        server_id: &[u8],
        now: ServerTime,
        out: &mut Vec<u8>,
    ) {
        if self.position == Position::Finished {
            return;
        }
        let first = self.position == Position::Start;
        let status_opt = [DhcpOption::StatusCode(StatusCode::new(status, reason))];
        self.write_with(first, server_id, now, &status_opt, out);
        self.position = Position::Finished;
    }

    /// The next binding the query selects after the current position.
    fn next_binding<'s>(&self, store: &'s Store) -> Option<(BindingId, BindingRef<'s>)> {
        let after = match self.position {
            Position::After(id, _) => Some(id),
            Position::Start | Position::Finished => None,
        };
        let q = &self.query;
        let in_window = |b: &BindingRef<'_>| {
            q.start.is_none_or(|s| b.last_change() >= s)
                && q.end.is_none_or(|e| b.last_change() <= e)
        };
        let on_link =
            |b: &BindingRef<'_>, link: Option<Ipv6Addr>| link.is_none_or(|l| b.link() == l);
        let pick = |id: BindingId| store.get(id).map(|b| (id, b));
        match &q.selector {
            Selector::Address { address, link } => {
                if after.is_some() {
                    return None;
                }
                store
                    .by_address(*address)
                    .and_then(pick)
                    .filter(|(_, b)| on_link(b, *link) && in_window(b))
            }
            Selector::ClientId {
                client_id,
                link: Some(l),
            } => {
                if after.is_some() {
                    return None;
                }
                store
                    .by_client_link(client_id, *l)
                    .and_then(pick)
                    .filter(|(_, b)| in_window(b))
            }
            Selector::ClientId {
                client_id,
                link: None,
            } => {
                let last_link = match self.position {
                    Position::After(_, l) => Some(l),
                    Position::Start | Position::Finished => None,
                };
                store
                    .by_client(client_id)
                    .filter_map(pick)
                    .filter(|(_, b)| last_link.is_none_or(|l| b.link() > l))
                    .find(|(_, b)| in_window(b))
            }
            Selector::RelayId { relay_id, link } => store
                .by_relay_id(relay_id, after)
                .filter_map(pick)
                .find(|(_, b)| on_link(b, *link) && in_window(b)),
            Selector::LinkAddress(link) => store
                .by_link(*link, after)
                .filter_map(pick)
                .find(|(_, b)| in_window(b)),
            Selector::RemoteId { remote_id, link } => store
                .by_remote_id(remote_id, after)
                .filter_map(pick)
                .find(|(_, b)| on_link(b, *link) && in_window(b)),
        }
    }

    /// Writes one message: the REPLY when `first`, else a DATA (with client data) or the DONE
    /// (with a status).
    fn write(
        &self,
        first: bool,
        server_id: &[u8],
        now: ServerTime,
        client: Option<&[DhcpOption<'_>]>,
        done: Option<Status>,
        out: &mut Vec<u8>,
    ) {
        let mut opts = Vec::with_capacity(2);
        if let Some(c) = client {
            opts.push(DhcpOption::ClientData(Options::from_items(c)));
        }
        if let Some(s) = done {
            opts.push(DhcpOption::StatusCode(StatusCode::new(s, "")));
        }
        self.write_with(first, server_id, now, &opts, out);
    }

    fn write_with(
        &self,
        first: bool,
        server_id: &[u8],
        now: ServerTime,
        body: &[DhcpOption<'_>],
        out: &mut Vec<u8>,
    ) {
        let q = &self.query;
        let mut top = Vec::with_capacity(5);
        let msg_type = if first {
            top.push(DhcpOption::ServerId(Duid(server_id)));
            if let Some(r) = &q.requestor_id {
                top.push(DhcpOption::ClientId(Duid(r)));
            }
            MessageType::LeasequeryReply
        } else if body.iter().any(|o| matches!(o, DhcpOption::ClientData(_))) {
            MessageType::LeasequeryData
        } else {
            MessageType::LeasequeryDone
        };
        if q.want_base_time {
            top.push(DhcpOption::LqBaseTime(now));
        }
        top.extend_from_slice(body);
        let msg = MessageRepr::new(msg_type, q.xid, Options::from_items(&top));
        // A binding too large for one message (over 65535 octets) is left out rather than
        // sent broken.
        push_frame(&msg, out);
    }
}
