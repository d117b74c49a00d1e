//! The binding model: what a lease store tells lqd, and what lqd answers about.
//!
//! A *lease* is one address (IA_NA) or one delegated prefix (IA_PD) held by a client. A
//! *binding* is one client (its DUID) on one link: all of that client's leases on that link,
//! the time of its last transaction, and what its relays told the server about it. That is
//! exactly what one OPTION_CLIENT_DATA reports (architecture, core idea 1; decision D13).
//!
//! Sources send [`Change`]s, one lease at a time; the store groups them into bindings.

use std::net::Ipv6Addr;

use crate::codec::ServerTime;

/// Whether a lease is an address or a delegated prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeaseKind {
    /// A non-temporary address (IA_NA, reported as OPTION_IAADDR).
    Address,
    /// A delegated prefix (IA_PD, reported as OPTION_IAPREFIX).
    Prefix,
}

/// Where a lease stands, as the lease store sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseState {
    /// Granted and in use.
    Active,
    /// Released by the client.
    Released,
    /// Declined by the client (address in use elsewhere).
    Declined,
    /// Its valid lifetime ran out (reclaimed by the server, or expired by lqd itself, D6).
    Expired,
    /// Removed from the lease store.
    Deleted,
}

impl LeaseState {
    /// True while the lease is held; every other state ends it (decision D5).
    #[must_use]
    pub const fn is_active(self) -> bool {
        matches!(self, Self::Active)
    }
}

/// One address or delegated prefix of a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    /// Address or prefix.
    pub kind: LeaseKind,
    /// The address, or the prefix (host bits zero).
    pub address: Ipv6Addr,
    /// 128 for an address; the delegated prefix length for a prefix.
    pub prefix_len: u8,
    /// The IAID of the IA_NA / IA_PD the lease belongs to.
    pub iaid: u32,
    /// Preferred lifetime granted at `cltt`, seconds.
    pub preferred_lifetime: u32,
    /// Valid lifetime granted at `cltt`, seconds (0xFFFFFFFF is infinity).
    pub valid_lifetime: u32,
    /// When the server last talked to the client about this lease (server time).
    pub cltt: ServerTime,
    /// Active, or how it ended.
    pub state: LeaseState,
}

impl Lease {
    /// The identity of the lease inside its binding: kind, address or prefix, and length.
    #[must_use]
    pub const fn slot(&self) -> (LeaseKind, Ipv6Addr, u8) {
        (self.kind, self.address, self.prefix_len)
    }

    /// When the valid lifetime runs out, or `None` for an infinite lifetime.
    #[must_use]
    pub fn expires(&self) -> Option<ServerTime> {
        if self.valid_lifetime == u32::MAX {
            return None;
        }
        Some(ServerTime(self.cltt.0.saturating_add(self.valid_lifetime)))
    }

    /// True when `addr` is this lease's address, or lies inside this delegated prefix.
    #[must_use]
    pub fn covers(&self, addr: Ipv6Addr) -> bool {
        match self.kind {
            LeaseKind::Address => self.address == addr,
            LeaseKind::Prefix => prefix_contains(self.address, self.prefix_len, addr),
        }
    }
}

/// True when `addr` lies inside `prefix/len`.
#[must_use]
pub fn prefix_contains(prefix: Ipv6Addr, len: u8, addr: Ipv6Addr) -> bool {
    let len = u32::from(len.min(128));
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    (u128::from(prefix) & mask) == (u128::from(addr) & mask)
}

/// A relay agent's Remote-ID (OPTION_REMOTE_ID, RFC 4649): both parts must match a query.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteIdKey {
    /// `enterprise-number`.
    pub enterprise_number: u32,
    /// `remote-id`.
    pub remote_id: Box<[u8]>,
}

/// What the relays in front of a client told the server, kept for queries by relay-id and
/// remote-id and for OPTION_LQ_RELAY_DATA.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RelayInfo {
    /// OPTION_RELAY_ID of every relay layer (RFC 5460 §5.4.1).
    pub relay_ids: Vec<Box<[u8]>>,
    /// OPTION_REMOTE_ID of every relay layer.
    pub remote_ids: Vec<RemoteIdKey>,
    /// The last relayed message, for OPTION_LQ_RELAY_DATA: the address of the relay it came
    /// from and the RELAY-FORW chain with the innermost OPTION_RELAY_MSG removed.
    pub relay_message: Option<(Ipv6Addr, Box<[u8]>)>,
}

/// One change from a lease store: the new state of one lease of one client on one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The client's DUID.
    pub client_id: Box<[u8]>,
    /// The client's link: the first relay's link-address, or the configured link of a directly
    /// connected client (decision D16).
    pub link: Ipv6Addr,
    /// The lease as it now is; a state other than `Active` ends it.
    pub lease: Lease,
    /// The relays' information, when the source knows it; `None` keeps what the binding has.
    pub relay: Option<RelayInfo>,
}

/// A binding's key: one client on one link.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BindingKey {
    /// The client's DUID.
    pub client_id: Box<[u8]>,
    /// The link.
    pub link: Ipv6Addr,
}

/// One client on one link: what one OPTION_CLIENT_DATA reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Client and link.
    pub key: BindingKey,
    /// The client's active leases on the link, in the order they were first seen.
    pub leases: Vec<Lease>,
    /// What the relays told the server about this client.
    pub relay: RelayInfo,
    /// When the binding last changed (server time): START / END filtering (D20) and catch-up.
    pub last_change: ServerTime,
}

/// A binding to report, wherever it is kept: a [`Binding`] decoded from a journal record, or
/// one read in place in the store ([`BindingRef`](super::BindingRef)). `'a` is how long what
/// it lends lives.
pub trait BindingView<'a> {
    /// The client's DUID.
    fn client_id(&self) -> &'a [u8];
    /// The link.
    fn link(&self) -> Ipv6Addr;
    /// The client's leases on the link.
    fn leases(&self) -> &'a [Lease];
    /// When the binding last changed.
    fn last_change(&self) -> ServerTime;
    /// Appends the relayed message for OPTION_LQ_RELAY_DATA to `out`; the address of the relay
    /// it came from, or `None` (nothing appended) when the relays sent none.
    fn relay_message_into(&self, out: &mut Vec<u8>) -> Option<Ipv6Addr>;
    /// True when one of its relays sent this OPTION_RELAY_ID.
    fn has_relay_id(&self, relay_id: &[u8]) -> bool;
    /// True when one of its relays sent this OPTION_REMOTE_ID.
    fn has_remote_id(&self, remote_id: &RemoteIdKey) -> bool;
    /// The client's last transaction time over all its leases.
    fn cltt(&self) -> ServerTime {
        self.leases()
            .iter()
            .map(|l| l.cltt)
            .max()
            .unwrap_or_else(|| self.last_change())
    }
}

impl<'a> BindingView<'a> for &'a Binding {
    fn client_id(&self) -> &'a [u8] {
        &self.key.client_id
    }

    fn link(&self) -> Ipv6Addr {
        self.key.link
    }

    fn leases(&self) -> &'a [Lease] {
        &self.leases
    }

    fn last_change(&self) -> ServerTime {
        self.last_change
    }

    fn relay_message_into(&self, out: &mut Vec<u8>) -> Option<Ipv6Addr> {
        let (from, m) = self.relay.relay_message.as_ref()?;
        out.extend_from_slice(m);
        Some(*from)
    }

    fn has_relay_id(&self, relay_id: &[u8]) -> bool {
        self.relay.relay_ids.iter().any(|r| &r[..] == relay_id)
    }

    fn has_remote_id(&self, remote_id: &RemoteIdKey) -> bool {
        self.relay.remote_ids.iter().any(|r| r == remote_id)
    }
}

impl Binding {
    /// The relayed message for OPTION_LQ_RELAY_DATA, with the address of the relay it came
    /// from.
    #[must_use]
    pub fn relay_message(&self) -> Option<(Ipv6Addr, &[u8])> {
        self.relay.relay_message.as_ref().map(|(p, m)| (*p, &m[..]))
    }

    /// The client's last transaction time over all its leases (OPTION_CLT_TIME is `now` minus
    /// this).
    #[must_use]
    pub fn cltt(&self) -> ServerTime {
        self.leases
            .iter()
            .map(|l| l.cltt)
            .max()
            .unwrap_or(self.last_change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn prefix_containment() {
        assert!(prefix_contains(
            a("2001:db8:ff00::"),
            56,
            a("2001:db8:ff00:12::1")
        ));
        assert!(!prefix_contains(
            a("2001:db8:ff00::"),
            56,
            a("2001:db8:ff01::1")
        ));
        assert!(prefix_contains(a("::"), 0, a("2001:db8::1")));
        assert!(prefix_contains(a("2001:db8::1"), 128, a("2001:db8::1")));
        assert!(!prefix_contains(a("2001:db8::1"), 128, a("2001:db8::2")));
    }

    #[test]
    fn lease_expiry_and_cover() {
        let lease = Lease {
            kind: LeaseKind::Prefix,
            address: a("2001:db8:ff00::"),
            prefix_len: 56,
            iaid: 1,
            preferred_lifetime: 3600,
            valid_lifetime: 7200,
            cltt: ServerTime(1000),
            state: LeaseState::Active,
        };
        assert_eq!(lease.expires(), Some(ServerTime(8200)));
        assert!(lease.covers(a("2001:db8:ff00:1::5")));
        let forever = Lease {
            valid_lifetime: u32::MAX,
            ..lease
        };
        assert_eq!(forever.expires(), None);
    }
}
