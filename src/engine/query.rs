//! Reading a LEASEQUERY: the query it asks, or the status it must be refused with.
//!
//! The rules (digest §6, §8.1, §9.2; decisions D8, D11, D15, D17, D18, D20):
//!
//! - exactly one OPTION_LQ_QUERY, or MalformedQuery;
//! - a query type 1–5, or UnknownQueryType;
//! - over UDP, the Bulk-only types 3–5 get NotAllowed (D11);
//! - each type's key option (IAADDR, CLIENTID, RELAY_ID, REMOTE_ID) present, or MalformedQuery;
//!   QUERY_BY_LINK_ADDRESS needs a link-address other than `::` (D15);
//! - START_TIME and END_TIME (RFC 7653) bound the last-change time of the bindings returned
//!   (D20); END before START is MalformedQuery;
//! - base-time is asked for by code 100 in the top-level ORO or the query's ORO (D18); relay
//!   data by code 47 in either (D17);
//! - with configured links, a link-address names the link whose prefix holds it, and a link or
//!   address outside them is NotConfigured ([`resolve_links`], D16, digest §8.1 item 7).

use std::net::Ipv6Addr;

use super::session::Policy;
use crate::codec::{
    DhcpOption, MessageRepr, MessageType, OptionCode, Options, QueryType, ServerTime, Status, Xid,
};
use crate::store::{Binding, RemoteIdKey, Store};

/// How the query arrived: it decides which query types are allowed (D11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP Leasequery (RFC 5007): one reply.
    Udp,
    /// Bulk Leasequery over TCP (RFC 5460): a stream of replies.
    Tcp,
}

/// What a query selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// QUERY_BY_ADDRESS: the binding holding this address, or a prefix containing it.
    Address {
        /// The address asked about.
        address: Ipv6Addr,
        /// The link, when the requestor named one.
        link: Option<Ipv6Addr>,
    },
    /// QUERY_BY_CLIENTID: the client's bindings.
    ClientId {
        /// The client's DUID.
        client_id: Box<[u8]>,
        /// Only this link, when named; every link otherwise.
        link: Option<Ipv6Addr>,
    },
    /// QUERY_BY_RELAY_ID: the bindings a relay with this DUID relayed.
    RelayId {
        /// The relay's DUID.
        relay_id: Box<[u8]>,
        /// Only this link, when named (D15: `::` searches every link).
        link: Option<Ipv6Addr>,
    },
    /// QUERY_BY_LINK_ADDRESS: the bindings on a link.
    LinkAddress(Ipv6Addr),
    /// QUERY_BY_REMOTE_ID: the bindings whose relays sent this Remote-ID.
    RemoteId {
        /// Enterprise number and value.
        remote_id: RemoteIdKey,
        /// Only this link, when named.
        link: Option<Ipv6Addr>,
    },
}

impl Selector {
    /// The query type that asks for this selection.
    #[must_use]
    pub const fn query_type(&self) -> QueryType {
        match self {
            Self::Address { .. } => QueryType::ByAddress,
            Self::ClientId { .. } => QueryType::ByClientId,
            Self::RelayId { .. } => QueryType::ByRelayId,
            Self::LinkAddress { .. } => QueryType::ByLinkAddress,
            Self::RemoteId { .. } => QueryType::ByRemoteId,
        }
    }

    /// True when `binding` is one this selector asks for: the filter of an Active query
    /// (digest §10.4 item 10), the same rules as the Bulk query types.
    #[must_use]
    pub fn matches(&self, binding: &Binding) -> bool {
        let on = |link: &Option<Ipv6Addr>| link.is_none_or(|l| l == binding.key.link);
        match self {
            Self::Address { address, link } => {
                on(link) && binding.leases.iter().any(|l| l.covers(*address))
            }
            Self::ClientId { client_id, link } => on(link) && binding.key.client_id == *client_id,
            Self::RelayId { relay_id, link } => {
                on(link) && binding.relay.relay_ids.iter().any(|r| r == relay_id)
            }
            Self::LinkAddress(l) => binding.key.link == *l,
            Self::RemoteId { remote_id, link } => {
                on(link) && binding.relay.remote_ids.iter().any(|r| r == remote_id)
            }
        }
    }
}

/// An ACTIVELEASEQUERY lqd will serve (digest §10.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveRequest {
    /// The requestor's transaction id, in every message of the stream.
    pub xid: Xid,
    /// The requestor's own DUID, echoed in the LEASEQUERY-REPLY.
    pub requestor_id: Option<Box<[u8]>>,
    /// Only changes to bindings this selects; `None` (no OPTION_LQ_QUERY) for every change.
    pub filter: Option<Selector>,
    /// The query type of the filter, for the requestor's policy (D23).
    pub query_type: Option<QueryType>,
    /// Catch up from this time (OPTION_LQ_START_TIME).
    pub start: Option<ServerTime>,
    /// Put OPTION_LQ_BASE_TIME in every message (D18).
    pub want_base_time: bool,
    /// Put OPTION_LQ_RELAY_DATA in each OPTION_CLIENT_DATA (D17).
    pub want_relay_data: bool,
}

/// Reads a parsed ACTIVELEASEQUERY (message type 22). OPTION_LQ_QUERY is optional (without it
/// every change is sent); when present it is read by the LEASEQUERY rules. OPTION_LQ_END_TIME is
/// MalformedQuery (D7).
pub fn read_active(msg: &MessageRepr<'_>) -> Result<ActiveRequest, Refusal> {
    let refuse = |status, reason| Refusal::of(msg, status, reason);
    if msg.msg_type() != MessageType::ActiveLeasequery {
        return Err(refuse(Status::MalformedQuery, "not an ACTIVELEASEQUERY"));
    }
    let mut queries = 0usize;
    let mut start = None;
    for o in msg.options.iter() {
        match o {
            DhcpOption::LqQuery(_) => queries = queries.saturating_add(1),
            DhcpOption::LqStartTime(t) => start = Some(t),
            DhcpOption::LqEndTime(_) => {
                return Err(refuse(
                    Status::MalformedQuery,
                    "OPTION_LQ_END_TIME in an ACTIVELEASEQUERY",
                ));
            }
            _ => {}
        }
    }
    let asks = |code| {
        msg.options.requests(code)
            || msg
                .options
                .lq_query()
                .is_some_and(|q| q.options.requests(code))
    };
    let (filter, query_type) = match queries {
        0 => (None, None),
        1 => {
            let q = read_leasequery_options(msg, Transport::Tcp)?;
            (
                Some(q.selector),
                msg.options.lq_query().map(|q| q.query_type),
            )
        }
        _ => {
            return Err(refuse(
                Status::MalformedQuery,
                "more than one OPTION_LQ_QUERY",
            ));
        }
    };
    let (xid, requestor_id) = echoed(msg);
    Ok(ActiveRequest {
        xid,
        requestor_id,
        filter,
        query_type,
        start,
        want_base_time: asks(OptionCode::LqBaseTime),
        want_relay_data: asks(OptionCode::LqRelayData),
    })
}

/// A query lqd will answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The requestor's transaction id, echoed in every reply.
    pub xid: Xid,
    /// The requestor's own DUID (top-level OPTION_CLIENTID), echoed in the first reply.
    pub requestor_id: Option<Box<[u8]>>,
    /// What to return.
    pub selector: Selector,
    /// Only bindings changed at or after this time (OPTION_LQ_START_TIME).
    pub start: Option<ServerTime>,
    /// Only bindings changed at or before this time (OPTION_LQ_END_TIME, Bulk only).
    pub end: Option<ServerTime>,
    /// Put OPTION_LQ_BASE_TIME in every message of the answer (D18).
    pub want_base_time: bool,
    /// Put OPTION_LQ_RELAY_DATA in each OPTION_CLIENT_DATA (D17).
    pub want_relay_data: bool,
}

/// A query refused before any data: answered with a LEASEQUERY-REPLY carrying `status` (D8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The transaction id to answer with.
    pub xid: Xid,
    /// The requestor's DUID, echoed.
    pub requestor_id: Option<Box<[u8]>>,
    /// UnknownQueryType, MalformedQuery or NotAllowed.
    pub status: Status,
    /// The status message: what was wrong, for the requestor's operator.
    pub reason: &'static str,
}

impl Refusal {
    /// A refusal of `msg`: its xid and the requestor's DUID, echoed.
    #[must_use]
    pub fn of(msg: &MessageRepr<'_>, status: Status, reason: &'static str) -> Self {
        let (xid, requestor_id) = echoed(msg);
        Self {
            xid,
            requestor_id,
            status,
            reason,
        }
    }
}

/// What every answer to `msg` echoes: its xid and the requestor's DUID.
fn echoed(msg: &MessageRepr<'_>) -> (Xid, Option<Box<[u8]>>) {
    (
        msg.xid().unwrap_or_default(),
        msg.options
            .client_id()
            .map(|d| Box::<[u8]>::from(d.as_bytes())),
    )
}

/// Reads a parsed LEASEQUERY (message type 14) that arrived over `transport`.
pub fn read_leasequery(msg: &MessageRepr<'_>, transport: Transport) -> Result<Query, Refusal> {
    if msg.msg_type() != MessageType::Leasequery {
        return Err(Refusal::of(msg, Status::MalformedQuery, "not a LEASEQUERY"));
    }
    read_leasequery_options(msg, transport)
}

/// The options of a LEASEQUERY (or of an ACTIVELEASEQUERY holding OPTION_LQ_QUERY), whatever
/// the message type.
fn read_leasequery_options(msg: &MessageRepr<'_>, transport: Transport) -> Result<Query, Refusal> {
    let (xid, requestor_id) = echoed(msg);
    let refuse = |status, reason| Refusal::of(msg, status, reason);
    let mut lq = None;
    let (mut start, mut end) = (None, None);
    for o in msg.options.iter() {
        match o {
            DhcpOption::LqQuery(_) if lq.is_some() => {
                return Err(refuse(
                    Status::MalformedQuery,
                    "more than one OPTION_LQ_QUERY",
                ));
            }
            DhcpOption::LqQuery(q) => lq = Some(q),
            DhcpOption::LqStartTime(t) => start = Some(t),
            DhcpOption::LqEndTime(t) => end = Some(t),
            _ => {}
        }
    }
    let Some(q) = lq else {
        return Err(refuse(Status::MalformedQuery, "no OPTION_LQ_QUERY"));
    };
    if let (Some(s), Some(e)) = (start, end) {
        if e < s {
            return Err(refuse(Status::MalformedQuery, "END_TIME before START_TIME"));
        }
    }

    let link = (!q.link_address.is_unspecified()).then_some(q.link_address);
    let selector = match q.query_type {
        QueryType::ByAddress => match find_address(&q.options) {
            Some(address) => Selector::Address { address, link },
            None => {
                return Err(refuse(
                    Status::MalformedQuery,
                    "QUERY_BY_ADDRESS without OPTION_IAADDR",
                ));
            }
        },
        QueryType::ByClientId => match q.options.client_id() {
            Some(d) => Selector::ClientId {
                client_id: d.as_bytes().into(),
                link,
            },
            None => {
                return Err(refuse(
                    Status::MalformedQuery,
                    "QUERY_BY_CLIENTID without OPTION_CLIENTID",
                ));
            }
        },
        QueryType::ByRelayId | QueryType::ByLinkAddress | QueryType::ByRemoteId
            if transport == Transport::Udp =>
        {
            return Err(refuse(
                Status::NotAllowed,
                "Bulk Leasequery query type over UDP",
            ));
        }
        QueryType::ByRelayId => match q.options.iter().find_map(|o| match o {
            DhcpOption::RelayId(d) => Some(d),
            _ => None,
        }) {
            Some(d) => Selector::RelayId {
                relay_id: d.as_bytes().into(),
                link,
            },
            None => {
                return Err(refuse(
                    Status::MalformedQuery,
                    "QUERY_BY_RELAY_ID without OPTION_RELAY_ID",
                ));
            }
        },
        QueryType::ByLinkAddress => match link {
            Some(l) => Selector::LinkAddress(l),
            None => {
                return Err(refuse(
                    Status::MalformedQuery,
                    "QUERY_BY_LINK_ADDRESS with link-address ::",
                ));
            }
        },
        QueryType::ByRemoteId => match q.options.iter().find_map(|o| match o {
            DhcpOption::RemoteId(r) => Some(r),
            _ => None,
        }) {
            Some(r) => Selector::RemoteId {
                remote_id: RemoteIdKey {
                    enterprise_number: r.enterprise_number,
                    remote_id: r.remote_id.into(),
                },
                link,
            },
            None => {
                return Err(refuse(
                    Status::MalformedQuery,
                    "QUERY_BY_REMOTE_ID without OPTION_REMOTE_ID",
                ));
            }
        },
        QueryType::Unknown(_) => {
            return Err(refuse(Status::UnknownQueryType, "unknown query type"));
        }
    };

    let asks = |code| msg.options.requests(code) || q.options.requests(code);
    Ok(Query {
        xid,
        requestor_id,
        selector,
        start,
        end,
        want_base_time: asks(OptionCode::LqBaseTime),
        want_relay_data: asks(OptionCode::LqRelayData),
    })
}

/// Refuses with NotAllowed a query type this requestor may not ask (D23).
pub fn allowed(query: Query, query_type: QueryType, policy: &dyn Policy) -> Result<Query, Refusal> {
    if policy.allows(query_type) {
        Ok(query)
    } else {
        Err(Refusal {
            xid: query.xid,
            requestor_id: query.requestor_id,
            status: Status::NotAllowed,
            reason: "query type not allowed for this requestor",
        })
    }
}

/// Names the query's link by its canonical address and refuses, with NotConfigured, a link or
/// address outside the configured links (D16, digest §8.1 item 7).
///
/// Without configured links every link is taken as named. Otherwise a link-address is a
/// configured link's address or any address inside its prefixes; a link the store has bindings
/// on is accepted too (the source is the authority on where its clients are). An address asked
/// about must lie in managed space unless the store holds it anyway.
pub fn resolve_links(mut query: Query, store: &Store) -> Result<Query, Refusal> {
    match resolve_selector(&mut query.selector, store) {
        Ok(()) => Ok(query),
        Err(reason) => Err(Refusal {
            xid: query.xid,
            requestor_id: query.requestor_id,
            status: Status::NotConfigured,
            reason,
        }),
    }
}

/// [`resolve_links`] for an Active query's filter.
pub fn resolve_active_links(
    mut request: ActiveRequest,
    store: &Store,
) -> Result<ActiveRequest, Refusal> {
    let Some(filter) = request.filter.as_mut() else {
        return Ok(request);
    };
    match resolve_selector(filter, store) {
        Ok(()) => Ok(request),
        Err(reason) => Err(Refusal {
            xid: request.xid,
            requestor_id: request.requestor_id,
            status: Status::NotConfigured,
            reason,
        }),
    }
}

/// Names the selector's link by its canonical address; the reason for NotConfigured otherwise.
fn resolve_selector(selector: &mut Selector, store: &Store) -> Result<(), &'static str> {
    let map = store.link_map();
    if map.is_empty() {
        return Ok(());
    }
    let named = match selector {
        Selector::Address { address, .. }
            if !map.manages(*address) && store.by_address(*address).is_none() =>
        {
            return Err("the address is not in any configured link or pool");
        }
        Selector::Address { link, .. }
        | Selector::ClientId { link, .. }
        | Selector::RelayId { link, .. }
        | Selector::RemoteId { link, .. } => link.as_mut(),
        Selector::LinkAddress(l) => Some(l),
    };
    if let Some(l) = named {
        match map.link_of(*l).or_else(|| store.has_link(*l).then_some(*l)) {
            Some(canonical) => *l = canonical,
            None => return Err("the link-address is not a configured link"),
        }
    }
    Ok(())
}

fn find_address(opts: &Options<'_>) -> Option<Ipv6Addr> {
    opts.iter().find_map(|o| match o {
        DhcpOption::IaAddr(a) => Some(a.address),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{BuildOptions, MessageBuilder};

    const REQUESTOR: [u8; 10] = [0, 3, 0, 1, 0, 0x11, 0x22, 0x33, 0x44, 0x55];

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn read(bytes: &[u8], t: Transport) -> Result<Query, Refusal> {
        read_leasequery(&MessageRepr::parse(bytes).unwrap(), t)
    }

    #[test]
    fn reads_each_query_type() {
        let q = MessageBuilder::leasequery(7)
            .client_id(&REQUESTOR)
            .lq_query(QueryType::ByAddress, Ipv6Addr::UNSPECIFIED, |q| {
                q.iaaddr(a("2001:db8::5"), 0, 0)
            })
            .build()
            .unwrap();
        let q = read(&q, Transport::Udp).unwrap();
        assert_eq!(
            q.selector,
            Selector::Address {
                address: a("2001:db8::5"),
                link: None
            }
        );
        assert_eq!(q.requestor_id.as_deref(), Some(&REQUESTOR[..]));
        assert_eq!(q.xid, Xid::new(7));

        let q = MessageBuilder::leasequery(8)
            .lq_query(QueryType::ByClientId, a("2001:db8:1::1"), |q| {
                q.client_id(&[0, 3, 0, 1, 9])
            })
            .build()
            .unwrap();
        assert_eq!(
            read(&q, Transport::Udp).unwrap().selector,
            Selector::ClientId {
                client_id: vec![0, 3, 0, 1, 9].into(),
                link: Some(a("2001:db8:1::1"))
            }
        );

        // digest §15.4: by relay-id, base-time asked at top level, relay data inside the query.
        let q = MessageBuilder::leasequery(0xabcdef)
            .client_id(&REQUESTOR)
            .oro(&[OptionCode::LqBaseTime])
            .lq_query(QueryType::ByRelayId, Ipv6Addr::UNSPECIFIED, |q| {
                q.relay_id(&[0, 2, 0, 0, 0, 9, 1, 2, 3, 4, 5])
                    .oro(&[OptionCode::LqRelayData])
            })
            .start_time(ServerTime(100))
            .end_time(ServerTime(200))
            .build()
            .unwrap();
        let q = read(&q, Transport::Tcp).unwrap();
        assert_eq!(
            q.selector,
            Selector::RelayId {
                relay_id: vec![0, 2, 0, 0, 0, 9, 1, 2, 3, 4, 5].into(),
                link: None
            }
        );
        assert_eq!(
            (q.start, q.end),
            (Some(ServerTime(100)), Some(ServerTime(200)))
        );
        assert!(q.want_base_time && q.want_relay_data);

        let q = MessageBuilder::leasequery(9)
            .lq_query(QueryType::ByLinkAddress, a("2001:db8:2::1"), |q| q)
            .build()
            .unwrap();
        let q = read(&q, Transport::Tcp).unwrap();
        assert_eq!(q.selector, Selector::LinkAddress(a("2001:db8:2::1")));
        assert!(!q.want_base_time && !q.want_relay_data);

        let q = MessageBuilder::leasequery(10)
            .lq_query(QueryType::ByRemoteId, Ipv6Addr::UNSPECIFIED, |q| {
                q.remote_id(9, b"circuit-1")
            })
            .build()
            .unwrap();
        assert_eq!(
            read(&q, Transport::Tcp).unwrap().selector,
            Selector::RemoteId {
                remote_id: RemoteIdKey {
                    enterprise_number: 9,
                    remote_id: b"circuit-1".to_vec().into()
                },
                link: None
            }
        );
    }

    #[test]
    fn refusals_carry_the_right_status() {
        let cases: Vec<(Vec<u8>, Transport, Status)> = vec![
            // No LQ_QUERY.
            (
                MessageBuilder::leasequery(1)
                    .client_id(&REQUESTOR)
                    .build()
                    .unwrap(),
                Transport::Tcp,
                Status::MalformedQuery,
            ),
            // Two LQ_QUERY options.
            (
                MessageBuilder::leasequery(1)
                    .lq_query(QueryType::ByLinkAddress, a("2001:db8::1"), |q| q)
                    .lq_query(QueryType::ByLinkAddress, a("2001:db8::2"), |q| q)
                    .build()
                    .unwrap(),
                Transport::Tcp,
                Status::MalformedQuery,
            ),
            // Unknown query type.
            (
                MessageBuilder::leasequery(1)
                    .lq_query(QueryType::Unknown(6), a("::"), |q| q)
                    .build()
                    .unwrap(),
                Transport::Tcp,
                Status::UnknownQueryType,
            ),
            // Bulk-only types over UDP: NotAllowed (D11).
            (
                MessageBuilder::leasequery(1)
                    .lq_query(QueryType::ByLinkAddress, a("2001:db8::1"), |q| q)
                    .build()
                    .unwrap(),
                Transport::Udp,
                Status::NotAllowed,
            ),
            (
                MessageBuilder::leasequery(1)
                    .lq_query(QueryType::ByRelayId, a("::"), |q| q.relay_id(&[1]))
                    .build()
                    .unwrap(),
                Transport::Udp,
                Status::NotAllowed,
            ),
            (
                MessageBuilder::leasequery(1)
                    .lq_query(QueryType::ByRemoteId, a("::"), |q| q.remote_id(1, b"x"))
                    .build()
                    .unwrap(),
                Transport::Udp,
                Status::NotAllowed,
            ),
            // Missing key options.
            (
                MessageBuilder::leasequery(1)
                    .lq_query(QueryType::ByAddress, a("::"), |q| q)
                    .build()
                    .unwrap(),
                Transport::Udp,
                Status::MalformedQuery,
            ),
            (
                MessageBuilder::leasequery(1)
                    .lq_query(QueryType::ByClientId, a("::"), |q| q)
                    .build()
                    .unwrap(),
                Transport::Udp,
                Status::MalformedQuery,
            ),
            (
                MessageBuilder::leasequery(1)
                    .lq_query(QueryType::ByRelayId, a("::"), |q| q)
                    .build()
                    .unwrap(),
                Transport::Tcp,
                Status::MalformedQuery,
            ),
            (
                MessageBuilder::leasequery(1)
                    .lq_query(QueryType::ByRemoteId, a("::"), |q| q)
                    .build()
                    .unwrap(),
                Transport::Tcp,
                Status::MalformedQuery,
            ),
            // D15: by link-address with ::.
            (
                MessageBuilder::leasequery(1)
                    .lq_query(QueryType::ByLinkAddress, a("::"), |q| q)
                    .build()
                    .unwrap(),
                Transport::Tcp,
                Status::MalformedQuery,
            ),
            // END before START.
            (
                MessageBuilder::leasequery(1)
                    .lq_query(QueryType::ByLinkAddress, a("2001:db8::1"), |q| q)
                    .start_time(ServerTime(10))
                    .end_time(ServerTime(9))
                    .build()
                    .unwrap(),
                Transport::Tcp,
                Status::MalformedQuery,
            ),
            // Not a LEASEQUERY at all.
            (
                MessageBuilder::reply(1).build().unwrap(),
                Transport::Tcp,
                Status::MalformedQuery,
            ),
        ];
        for (bytes, t, status) in cases {
            let r = read(&bytes, t).unwrap_err();
            assert_eq!(r.status, status, "{}", r.reason);
            assert_eq!(r.xid, Xid::new(1));
            assert!(!r.reason.is_empty());
        }
    }
}
