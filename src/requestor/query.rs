//! What a query asks for: OPTION_LQ_QUERY's query-type, link-address and key (digest §6), and
//! the RFC 7653 time window.

use core::fmt;
use std::net::Ipv6Addr;

use crate::codec::{BuildOptions, MessageBuilder, OptionCode, QueryType, ServerTime};

/// One leasequery question (OPTION_LQ_QUERY). `link` is the query's link-address, `::` when
/// unspecified.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Query {
    /// QUERY_BY_ADDRESS: the client holding this address, or a delegated prefix holding it.
    Address {
        /// The address.
        address: Ipv6Addr,
        /// link-address.
        link: Ipv6Addr,
    },
    /// QUERY_BY_CLIENTID: this client's bindings.
    ClientId {
        /// The client's DUID.
        duid: Vec<u8>,
        /// link-address.
        link: Ipv6Addr,
    },
    /// QUERY_BY_RELAY_ID (Bulk and Active only): bindings tied to this relay's DUID.
    RelayId {
        /// The relay agent's DUID.
        duid: Vec<u8>,
        /// link-address.
        link: Ipv6Addr,
    },
    /// QUERY_BY_LINK_ADDRESS (Bulk and Active only): every binding on this link.
    LinkAddress(Ipv6Addr),
    /// QUERY_BY_REMOTE_ID (Bulk and Active only): bindings tied to this relay-inserted id.
    RemoteId {
        /// `enterprise-number`.
        enterprise_number: u32,
        /// `remote-id`.
        remote_id: Vec<u8>,
        /// link-address.
        link: Ipv6Addr,
    },
}

impl Query {
    /// The query-type.
    #[must_use]
    pub const fn query_type(&self) -> QueryType {
        match self {
            Self::Address { .. } => QueryType::ByAddress,
            Self::ClientId { .. } => QueryType::ByClientId,
            Self::RelayId { .. } => QueryType::ByRelayId,
            Self::LinkAddress(_) => QueryType::ByLinkAddress,
            Self::RemoteId { .. } => QueryType::ByRemoteId,
        }
    }

    /// The link-address field.
    #[must_use]
    pub const fn link(&self) -> Ipv6Addr {
        match self {
            Self::Address { link, .. }
            | Self::ClientId { link, .. }
            | Self::RelayId { link, .. }
            | Self::RemoteId { link, .. }
            | Self::LinkAddress(link) => *link,
        }
    }

    /// The same query narrowed to `link` (digest §8.2 step 4: repeat per OPTION_LQ_CLIENT_LINK).
    #[must_use]
    pub fn on_link(&self, new: Ipv6Addr) -> Self {
        let mut q = self.clone();
        match &mut q {
            Self::Address { link, .. }
            | Self::ClientId { link, .. }
            | Self::RelayId { link, .. }
            | Self::RemoteId { link, .. }
            | Self::LinkAddress(link) => *link = new,
        }
        q
    }

    /// Appends OPTION_LQ_QUERY for this query to `b`; `relay_data` adds an ORO asking for
    /// OPTION_LQ_RELAY_DATA.
    pub(crate) fn add_to(&self, b: MessageBuilder, relay_data: bool) -> MessageBuilder {
        b.lq_query(self.query_type(), self.link(), |q| {
            let q = match self {
                Self::Address { address, .. } => q.iaaddr(*address, 0, 0),
                Self::ClientId { duid, .. } => q.client_id(duid),
                Self::RelayId { duid, .. } => q.relay_id(duid),
                Self::LinkAddress(_) => q,
                Self::RemoteId {
                    enterprise_number,
                    remote_id,
                    ..
                } => q.remote_id(*enterprise_number, remote_id),
            };
            if relay_data {
                q.oro(&[OptionCode::LqRelayData])
            } else {
                q
            }
        })
    }
}

/// Lowercase hex without separators.
pub(crate) fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// `address=…`, `client-id=…`, `relay-id=…`, `link-address=…`, `remote-id=ENT:…`, with
/// `@LINK` when a link-address narrows it: the form `lq` accepts and prints.
impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Address { address, .. } => write!(f, "address={address}")?,
            Self::ClientId { duid, .. } => write!(f, "client-id={}", hex(duid))?,
            Self::RelayId { duid, .. } => write!(f, "relay-id={}", hex(duid))?,
            Self::LinkAddress(link) => return write!(f, "link-address={link}"),
            Self::RemoteId {
                enterprise_number,
                remote_id,
                ..
            } => write!(f, "remote-id={enterprise_number}:{}", hex(remote_id))?,
        }
        if self.link().is_unspecified() {
            Ok(())
        } else {
            write!(f, "@{}", self.link())
        }
    }
}

/// OPTION_LQ_START_TIME and OPTION_LQ_END_TIME of a Bulk query (decision D20: bindings whose
/// last change lies in `[start, end]`), in the server's context (digest §11).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeWindow {
    /// OPTION_LQ_START_TIME.
    pub start: Option<ServerTime>,
    /// OPTION_LQ_END_TIME.
    pub end: Option<ServerTime>,
}

impl TimeWindow {
    /// No bounds: every binding.
    pub const ALL: Self = Self {
        start: None,
        end: None,
    };

    pub(crate) fn add_to(self, mut b: MessageBuilder) -> MessageBuilder {
        if let Some(t) = self.start {
            b = b.start_time(t);
        }
        if let Some(t) = self.end {
            b = b.end_time(t);
        }
        b
    }
}
