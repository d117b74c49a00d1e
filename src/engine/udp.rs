//! UDP Leasequery (RFC 5007): one datagram in, at most one datagram out (digest §8.1).
//!
//! - Discarded silently: anything that is not a LEASEQUERY (directly or inside RELAY-FORW), a
//!   LEASEQUERY without OPTION_CLIENTID or OPTION_LQ_QUERY, or one naming another server.
//! - Refused with a status in a LEASEQUERY-REPLY: what [`read_leasequery`] refuses, including
//!   the Bulk-only query types (NotAllowed, D11), and what [`resolve_links`] finds outside the
//!   configured links (NotConfigured, D16).
//! - Answered: one OPTION_CLIENT_DATA for the binding found, OPTION_LQ_CLIENT_LINK when a client
//!   asked about by DUID alone is on several links, or no client data when nothing matches.
//!   OPTION_LQ_RELAY_DATA, when asked for, goes at the top level of the reply (D17).
//! - A query that came relayed is answered in RELAY-REPL layers that mirror its RELAY-FORW
//!   chain (hop count, link and peer addresses, Interface-ID).

use std::net::Ipv6Addr;

use super::query::{Refusal, Selector, Transport, allowed, read_leasequery, resolve_links};
use super::reply::{client_data, refusal_options, relay_data};
use super::session::Policy;
use crate::codec::{
    AddrList, DhcpOption, Duid, Embedded, Header, MessageRepr, MessageType, Options, QueryType,
    ServerTime, Status, StatusCode,
};
use crate::store::{BindingId, Store};

/// What to do with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpAnswer {
    /// Send the reply now in the output buffer back to the query's source.
    Reply,
    /// Send the refusal now in the output buffer back to the query's source; the status and
    /// the reason are for the log line.
    Refused(Status, &'static str),
    /// Send nothing; the reason is for the log line.
    Drop(&'static str),
}

/// One relay layer the query came through, to mirror in the reply.
struct Layer<'a> {
    hop_count: u8,
    link_address: Ipv6Addr,
    peer_address: Ipv6Addr,
    interface_id: Option<&'a [u8]>,
}

/// Answers one UDP datagram from the store at `now`. The reply, if any, replaces the contents
/// of `out`.
pub fn answer(
    store: &Store,
    server_id: &[u8],
    policy: &dyn Policy,
    datagram: &[u8],
    now: ServerTime,
    out: &mut Vec<u8>,
) -> UdpAnswer {
    out.clear();
    let Ok(mut msg) = MessageRepr::parse(datagram) else {
        return UdpAnswer::Drop("unparsable message");
    };
    let mut layers = Vec::new();
    while let Header::Relay {
        msg_type: MessageType::RelayForw,
        hop_count,
        link_address,
        peer_address,
    } = msg.header
    {
        let mut inner = None;
        let mut interface_id = None;
        for o in msg.options.iter() {
            match o {
                DhcpOption::RelayMsg(m) => inner = m.message().ok(),
                DhcpOption::InterfaceId(i) => interface_id = Some(i),
                _ => {}
            }
        }
        let Some(inner) = inner else {
            return UdpAnswer::Drop("RELAY-FORW without a relayed message");
        };
        layers.push(Layer {
            hop_count,
            link_address,
            peer_address,
            interface_id,
        });
        msg = inner;
    }
    if msg.msg_type() != MessageType::Leasequery {
        return UdpAnswer::Drop("not a LEASEQUERY");
    }
    if msg.options.client_id().is_none() {
        return UdpAnswer::Drop("LEASEQUERY without OPTION_CLIENTID");
    }
    let named_server = msg.options.iter().find_map(|o| match o {
        DhcpOption::ServerId(d) => Some(d),
        _ => None,
    });
    if named_server.is_some_and(|d| d.as_bytes() != server_id) {
        return UdpAnswer::Drop("LEASEQUERY for another server");
    }
    if msg.options.lq_query().is_none() {
        return UdpAnswer::Drop("LEASEQUERY without OPTION_LQ_QUERY");
    }

    let query_type = msg
        .options
        .lq_query()
        .map_or(QueryType::Unknown(0), |q| q.query_type);
    let query = read_leasequery(&msg, Transport::Udp)
        .and_then(|q| allowed(q, query_type, policy))
        .and_then(|q| resolve_links(q, store));
    let mut refused = None;
    let reply = match query {
        Ok(query) => {
            let found = find(store, &query.selector);
            let mut relay = Vec::new();
            let mut top = vec![DhcpOption::ServerId(Duid(server_id))];
            if let Some(r) = &query.requestor_id {
                top.push(DhcpOption::ClientId(Duid(r)));
            }
            if query.want_base_time {
                top.push(DhcpOption::LqBaseTime(now));
            }
            let mut inner = Vec::new();
            let links: Vec<Ipv6Addr>;
            match found.as_slice() {
                [] => {}
                [id] => {
                    if let Some(b) = store.get(*id) {
                        client_data(b, None, now, None, &mut inner);
                        if query.want_relay_data {
                            if let Some(from) = b.relay_message_into(&mut relay) {
                                top.extend(relay_data(from, &relay));
                            }
                        }
                    }
                }
                many => {
                    links = many
                        .iter()
                        .filter_map(|id| store.get(*id).map(|b| b.link()))
                        .collect();
                    top.push(DhcpOption::LqClientLink(AddrList::from_items(&links)));
                }
            }
            if !inner.is_empty() {
                top.push(DhcpOption::ClientData(Options::from_items(&inner)));
            }
            emit(
                &MessageRepr::new(
                    MessageType::LeasequeryReply,
                    query.xid,
                    Options::from_items(&top),
                ),
                &layers,
                out,
            )
        }
        Err(Refusal {
            xid,
            requestor_id,
            status,
            reason,
        }) => {
            refused = Some((status, reason));
            let top = refusal_options(
                server_id,
                requestor_id.as_deref(),
                StatusCode::new(status, reason),
            );
            emit(
                &MessageRepr::new(MessageType::LeasequeryReply, xid, Options::from_items(&top)),
                &layers,
                out,
            )
        }
    };
    match reply {
        Ok(()) => refused.map_or(UdpAnswer::Reply, |(status, reason)| {
            UdpAnswer::Refused(status, reason)
        }),
        Err(_) => {
            out.clear();
            UdpAnswer::Drop("reply does not fit in a DHCPv6 message")
        }
    }
}

/// The bindings a UDP query selects: one, none, or (by DUID alone) one per link.
fn find(store: &Store, selector: &Selector) -> Vec<BindingId> {
    match selector {
        Selector::Address { address, link } => store
            .by_address(*address)
            .filter(|id| link.is_none_or(|l| store.get(*id).is_some_and(|b| b.link() == l)))
            .into_iter()
            .collect(),
        Selector::ClientId {
            client_id,
            link: Some(l),
        } => store.by_client_link(client_id, *l).into_iter().collect(),
        Selector::ClientId {
            client_id,
            link: None,
        } => store.by_client(client_id).collect(),
        // read_leasequery refuses the Bulk-only types over UDP.
        Selector::RelayId { .. } | Selector::LinkAddress(_) | Selector::RemoteId { .. } => {
            Vec::new()
        }
    }
}

/// Writes `reply`, wrapped in one RELAY-REPL per layer the query came through.
fn emit(
    reply: &MessageRepr<'_>,
    layers: &[Layer<'_>],
    out: &mut Vec<u8>,
) -> crate::codec::Result<()> {
    let mut bytes = Vec::new();
    reply.emit_to_vec(&mut bytes)?;
    for layer in layers.iter().rev() {
        let inner = std::mem::take(&mut bytes);
        let mut opts = Vec::with_capacity(2);
        if let Some(i) = layer.interface_id {
            opts.push(DhcpOption::InterfaceId(i));
        }
        let inner_repr = MessageRepr::parse(&inner)?;
        opts.push(DhcpOption::RelayMsg(Embedded::from_repr(&inner_repr)));
        let relay = MessageRepr {
            header: Header::Relay {
                msg_type: MessageType::RelayRepl,
                hop_count: layer.hop_count,
                link_address: layer.link_address,
                peer_address: layer.peer_address,
            },
            options: Options::from_items(&opts),
        };
        relay.emit_to_vec(&mut bytes)?;
    }
    *out = bytes;
    Ok(())
}
