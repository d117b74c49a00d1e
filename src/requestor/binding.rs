//! One client's data as a server reported it (OPTION_CLIENT_DATA, digest §4.11), with every
//! relative time converted to local time (digest §11).

use std::net::Ipv6Addr;
use std::time::SystemTime;

use super::time::TimeBase;
use crate::codec::{DhcpOption, MessageRepr, Options, ServerTime};

/// An address (IA_NA) or a delegated prefix (IA_PD).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeaseKind {
    /// OPTION_IAADDR.
    Address,
    /// OPTION_IAPREFIX.
    Prefix,
}

/// One lease with its lifetimes as local end times (`None`: infinite).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    /// Address or delegated prefix.
    pub kind: LeaseKind,
    /// `IPv6-address`, or `IPv6-prefix`.
    pub address: Ipv6Addr,
    /// `prefix-length`; 128 for an address.
    pub prefix_len: u8,
    /// Local time the preferred lifetime ends.
    pub preferred_until: Option<SystemTime>,
    /// Local time the valid lifetime ends.
    pub valid_until: Option<SystemTime>,
    /// The server's time the (preferred, valid) lifetimes end: base-time plus lifetime, when
    /// the message had a base-time and the lifetimes are finite. Exact, unlike the local end
    /// times (which carry the arrival's jitter): the same lease sent again compares equal, and
    /// a renewal, even one second later, differs.
    pub server_ends: Option<(ServerTime, ServerTime)>,
}

impl Lease {
    /// The lease's identity: kind, address and prefix length.
    #[must_use]
    pub const fn key(&self) -> (LeaseKind, Ipv6Addr, u8) {
        (self.kind, self.address, self.prefix_len)
    }
}

/// One OPTION_CLIENT_DATA: a client's bindings on one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientData {
    /// The client's DUID (OPTION_CLIENTID inside the client data).
    pub client_id: Vec<u8>,
    /// Leases with a valid lifetime left.
    pub leases: Vec<Lease>,
    /// Leases reported at valid lifetime 0: ended (decision D5).
    pub ended: Vec<Lease>,
    /// Local time of the client's last transaction (OPTION_CLT_TIME).
    pub last_transaction: Option<SystemTime>,
    /// OPTION_LQ_RELAY_DATA's `peer-address` and relay message, when asked for and sent.
    pub relay_data: Option<(Ipv6Addr, Vec<u8>)>,
    /// The message's time context.
    pub time: TimeBase,
}

impl ClientData {
    /// Reads one OPTION_CLIENT_DATA body. `None` without the client's OPTION_CLIENTID.
    #[must_use]
    pub fn parse(options: &Options<'_>, time: TimeBase) -> Option<Self> {
        let client_id = options.client_id()?.as_bytes().to_vec();
        let mut data = Self {
            client_id,
            leases: Vec::new(),
            ended: Vec::new(),
            last_transaction: None,
            relay_data: None,
            time,
        };
        for o in options.iter() {
            let (lease, valid) = match o {
                DhcpOption::IaAddr(a) => (
                    Lease {
                        kind: LeaseKind::Address,
                        address: a.address,
                        prefix_len: 128,
                        preferred_until: time.lifetime_end(a.preferred_lifetime),
                        valid_until: time.lifetime_end(a.valid_lifetime),
                        server_ends: time.server_ends(a.preferred_lifetime, a.valid_lifetime),
                    },
                    a.valid_lifetime,
                ),
                DhcpOption::IaPrefix(p) => (
                    Lease {
                        kind: LeaseKind::Prefix,
                        address: p.prefix,
                        prefix_len: p.prefix_len,
                        preferred_until: time.lifetime_end(p.preferred_lifetime),
                        valid_until: time.lifetime_end(p.valid_lifetime),
                        server_ends: time.server_ends(p.preferred_lifetime, p.valid_lifetime),
                    },
                    p.valid_lifetime,
                ),
                DhcpOption::CltTime(secs) => {
                    data.last_transaction = Some(time.seconds_ago(secs));
                    continue;
                }
                DhcpOption::LqRelayData(r) => {
                    let message = r.relay_message.wire_bytes().unwrap_or_default().to_vec();
                    data.relay_data = Some((r.peer_address, message));
                    continue;
                }
                _ => continue,
            };
            if valid == 0 {
                data.ended.push(lease);
            } else {
                data.leases.push(lease);
            }
        }
        Some(data)
    }

    /// Every OPTION_CLIENT_DATA at the top of `msg`, read with `time`.
    pub(crate) fn all_in(msg: &MessageRepr<'_>, time: TimeBase) -> Vec<Self> {
        msg.options
            .iter()
            .filter_map(|o| match o {
                DhcpOption::ClientData(cd) => Self::parse(&cd, time),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{BuildOptions, MessageBuilder, ServerTime};
    use std::time::Duration;

    #[test]
    fn client_data_is_read_in_local_time_d5() {
        let bytes = MessageBuilder::data(7)
            .base_time(ServerTime(1000))
            .client_data(|c| {
                c.client_id(&[0, 3, 0, 1, 1, 2, 3, 4, 5, 6])
                    .iaaddr("2001:db8::1".parse().unwrap(), 100, 200)
                    .iaaddr("2001:db8::2".parse().unwrap(), 0, 0)
                    .iaprefix("3fff::".parse().unwrap(), 56, u32::MAX, u32::MAX)
                    .clt_time(30)
            })
            .build()
            .unwrap();
        let msg = MessageRepr::parse(&bytes).unwrap();
        let time = TimeBase::now(msg.options.base_time());
        let all = ClientData::all_in(&msg, time);
        let [cd] = all.as_slice() else {
            panic!("{all:?}")
        };
        assert_eq!(cd.client_id, [0, 3, 0, 1, 1, 2, 3, 4, 5, 6]);
        assert_eq!(cd.leases.len(), 2);
        assert_eq!(
            cd.leases[0].valid_until,
            Some(time.received + Duration::from_secs(200))
        );
        assert_eq!(
            cd.leases[0].preferred_until,
            Some(time.received + Duration::from_secs(100))
        );
        assert_eq!(
            cd.leases[1].key(),
            (LeaseKind::Prefix, "3fff::".parse().unwrap(), 56)
        );
        assert_eq!(cd.leases[1].valid_until, None);
        assert_eq!(cd.ended.len(), 1);
        assert_eq!(
            cd.last_transaction,
            Some(time.received - Duration::from_secs(30))
        );
    }
}
