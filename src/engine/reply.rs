//! Building OPTION_CLIENT_DATA from a binding (digest §4.11; decisions D5, D13, D17).
//!
//! Lifetimes are what remains at `now`, as RFC 5007 asks (valid lifetime minus the time since
//! the client's last transaction, never below zero; infinity stays infinity), and
//! OPTION_CLT_TIME is the time since that last transaction.

use std::net::Ipv6Addr;

use crate::codec::{
    DhcpOption, Duid, Embedded, IaAddr, IaPrefix, LqRelayData, MessageRepr, Options, ServerTime,
    StatusCode, encode_frame,
};
use crate::store::{BindingView, Lease, LeaseKind};

/// Lifetime `granted` at `cltt`, as it stands at `now`.
#[must_use]
pub fn remaining(granted: u32, cltt: ServerTime, now: ServerTime) -> u32 {
    if granted == u32::MAX {
        return u32::MAX;
    }
    granted.saturating_sub(now.0.saturating_sub(cltt.0))
}

/// One lease as OPTION_IAADDR or OPTION_IAPREFIX at `now`.
#[must_use]
pub fn lease_option(lease: &Lease, now: ServerTime) -> DhcpOption<'static> {
    let preferred_lifetime = remaining(lease.preferred_lifetime, lease.cltt, now);
    let valid_lifetime = remaining(lease.valid_lifetime, lease.cltt, now);
    match lease.kind {
        LeaseKind::Address => DhcpOption::IaAddr(IaAddr {
            options: Options::EMPTY,
            address: lease.address,
            preferred_lifetime,
            valid_lifetime,
        }),
        LeaseKind::Prefix => DhcpOption::IaPrefix(IaPrefix {
            options: Options::EMPTY,
            prefix: lease.address,
            preferred_lifetime,
            valid_lifetime,
            prefix_len: lease.prefix_len,
        }),
    }
}

/// The options of one OPTION_CLIENT_DATA for `binding` at `now`, appended to `out`: the client's
/// DUID, every lease (then `ended`, a lease the change being reported ended, at zero lifetimes),
/// OPTION_CLT_TIME, and OPTION_LQ_RELAY_DATA of `relay` (the relayed message and the address it
/// came from) when the requestor asked for it and the binding has one. `out` is the caller's
/// scratch, reused from reply to reply (see [`recycle`]).
pub fn client_data<'b>(
    binding: impl BindingView<'b>,
    ended: Option<&Lease>,
    now: ServerTime,
    relay: Option<(Ipv6Addr, &'b [u8])>,
    out: &mut Vec<DhcpOption<'b>>,
) {
    out.push(DhcpOption::ClientId(Duid(binding.client_id())));
    out.extend(binding.leases().iter().map(|l| lease_option(l, now)));
    out.extend(ended.map(|l| lease_option(l, now)));
    out.push(DhcpOption::CltTime(now.0.saturating_sub(binding.cltt().0)));
    if let Some((peer, message)) = relay {
        out.extend(relay_data(peer, message));
    }
}

/// `v` emptied, for options of another lifetime: its allocation is kept (the collect reuses
/// it in place), so a scratch vector can hold each reply's options in turn even when they
/// borrow from a buffer the caller refills between replies.
#[must_use]
#[expect(
    clippy::unnecessary_filter_map,
    reason = "an empty vector changes its items' lifetime in place; no item is ever mapped"
)]
pub fn recycle<'x, 'y>(mut v: Vec<DhcpOption<'x>>) -> Vec<DhcpOption<'y>> {
    v.clear();
    v.into_iter().filter_map(|_| None).collect()
}

/// OPTION_LQ_RELAY_DATA of a relayed `message` received from `peer` (a binding has one only
/// when its relays sent one, §4.14).
#[must_use]
pub fn relay_data(peer: Ipv6Addr, message: &[u8]) -> Option<DhcpOption<'_>> {
    let relay_message = Embedded::parse(message).ok()?;
    Some(DhcpOption::LqRelayData(LqRelayData {
        relay_message,
        peer_address: peer,
    }))
}

/// The options of a LEASEQUERY-REPLY refusing a query (D8, digest §8.1 step 12): Server-ID,
/// the requestor's Client-ID, and the status.
#[must_use]
pub fn refusal_options<'a>(
    server_id: &'a [u8],
    requestor: Option<&'a [u8]>,
    status: StatusCode<'a>,
) -> Vec<DhcpOption<'a>> {
    let mut top = vec![DhcpOption::ServerId(Duid(server_id))];
    top.extend(requestor.map(|r| DhcpOption::ClientId(Duid(r))));
    top.push(DhcpOption::StatusCode(status));
    top
}

/// Appends `msg` to `out` as one TCP frame. A message too large for a frame (over 65535
/// octets) is left out, `out` unchanged, and `false` returned.
pub fn push_frame(msg: &MessageRepr<'_>, out: &mut Vec<u8>) -> bool {
    let start = out.len();
    out.resize(start.saturating_add(msg.buffer_len()).saturating_add(2), 0);
    match out.get_mut(start..).map(|buf| encode_frame(msg, buf)) {
        Some(Ok(n)) => {
            out.truncate(start.saturating_add(n));
            true
        }
        _ => {
            out.truncate(start);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Bulk answer refills one scratch vector per binding: its allocation must survive.
    #[test]
    fn recycle_keeps_the_allocation() {
        let mut v: Vec<DhcpOption<'_>> = Vec::with_capacity(16);
        v.push(DhcpOption::CltTime(1));
        let (ptr, cap) = (v.as_ptr() as usize, v.capacity());
        let w: Vec<DhcpOption<'static>> = recycle(v);
        assert!(w.is_empty());
        assert_eq!((w.as_ptr() as usize, w.capacity()), (ptr, cap));
    }
    use crate::store::{Binding, BindingKey, LeaseState, RelayInfo};

    #[test]
    fn lifetimes_count_down_from_the_last_transaction() {
        assert_eq!(remaining(7200, ServerTime(1000), ServerTime(1060)), 7140);
        assert_eq!(remaining(7200, ServerTime(1000), ServerTime(9000)), 0);
        assert_eq!(
            remaining(u32::MAX, ServerTime(1000), ServerTime(9000)),
            u32::MAX
        );
        // A clock that went back does not inflate a lifetime.
        assert_eq!(remaining(7200, ServerTime(1000), ServerTime(900)), 7200);
    }

    #[test]
    fn client_data_holds_every_lease_and_the_clt_time() {
        let lease = Lease {
            kind: LeaseKind::Address,
            address: "2001:db8:1::100".parse().unwrap(),
            prefix_len: 128,
            iaid: 1,
            preferred_lifetime: 3600,
            valid_lifetime: 7200,
            cltt: ServerTime(1000),
            state: LeaseState::Active,
        };
        let pd = Lease {
            kind: LeaseKind::Prefix,
            address: "2001:db8:ff00::".parse().unwrap(),
            prefix_len: 56,
            cltt: ServerTime(1030),
            ..lease
        };
        let binding = Binding {
            key: BindingKey {
                client_id: vec![0, 3, 0, 1, 7].into(),
                link: "2001:db8:1::1".parse().unwrap(),
            },
            leases: vec![lease, pd],
            relay: RelayInfo::default(),
            last_change: ServerTime(1030),
        };
        let mut out = Vec::new();
        client_data(
            &binding,
            None,
            ServerTime(1060),
            binding.relay_message(),
            &mut out,
        );
        assert_eq!(out.len(), 4, "no relay data when none is known: {out:?}");
        assert_eq!(out[0], DhcpOption::ClientId(Duid(&[0, 3, 0, 1, 7])));
        let DhcpOption::IaAddr(a) = out[1] else {
            panic!()
        };
        assert_eq!((a.preferred_lifetime, a.valid_lifetime), (3540, 7140));
        let DhcpOption::IaPrefix(p) = out[2] else {
            panic!()
        };
        assert_eq!(
            (p.prefix_len, p.preferred_lifetime, p.valid_lifetime),
            (56, 3570, 7170)
        );
        assert_eq!(out[3], DhcpOption::CltTime(30));
    }
}
