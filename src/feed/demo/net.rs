//! The simulated network: links, relays, clients and their identifiers.

use std::net::Ipv6Addr;

use rand::Rng;
use rand::rngs::SmallRng;

use super::DemoConfig;
use crate::codec::{BuildOptions, DhcpOption, MessageBuilder, MessageType, ServerTime};
use crate::store::{RelayInfo, RemoteIdKey};

/// Relay vendors: enterprise number and name, for relay DUID-ENs and remote-ids.
const VENDORS: [(u32, &str); 3] = [(9, "cisco"), (2636, "juniper"), (6527, "nokia")];

/// OUIs for client link-layer addresses.
const OUIS: [[u8; 3]; 5] = [
    [0x00, 0x1b, 0x21],
    [0x3c, 0x22, 0xfb],
    [0xb8, 0x27, 0xeb],
    [0x00, 0x50, 0x56],
    [0xf0, 0x9f, 0xc2],
];

/// Enterprise numbers of client DUID-ENs (32473 is the documentation number, RFC 5612).
const CLIENT_ENTERPRISES: [u32; 3] = [311, 4491, 32473];

/// Where a client stands in the simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    /// Its initial leases are not reported yet.
    Fresh,
    /// No leases.
    Idle,
    /// Holds leases and renews them.
    Bound,
    /// Holds leases but has disappeared; they expire unless it comes back.
    Gone,
}

/// One simulated client.
#[derive(Debug)]
pub(super) struct Client {
    pub(super) duid: Box<[u8]>,
    /// Index into `DemoSource::links`.
    pub(super) link: u16,
    pub(super) iaid_na: u32,
    pub(super) iaid_pd: u32,
    pub(super) wants_pd: bool,
    /// Its address: the active one while it holds leases, else the last one it had.
    pub(super) na: Ipv6Addr,
    /// Its delegated prefix's pool number while it holds one.
    pub(super) pd: Option<u64>,
    /// Last transaction time; all of its active leases share it.
    pub(super) cltt: ServerTime,
    pub(super) status: Status,
    /// Bumped on every status change and renewal; stale rotation entries carry an old one.
    pub(super) epoch: u32,
    /// Position in the `idle` or `bound` list.
    pub(super) pos: u32,
    /// Interface identifier of its link-local address (the relay's peer-address).
    pub(super) peer_iid: u64,
}

/// A link's relays, when it is relayed.
#[derive(Debug)]
pub(super) struct Relay {
    /// The access relay's DUID-EN (OPTION_RELAY_ID).
    duid: Box<[u8]>,
    /// The access relay's vendor: the enterprise number of its remote-ids.
    enterprise: u32,
    vendor: &'static str,
    /// The access relay's upstream address (the peer-address the next hop sees).
    uplink: Ipv6Addr,
    /// OPTION_INTERFACE_ID of the client-facing interface.
    interface_id: Box<[u8]>,
    /// The aggregation relay in front of it: DUID-EN and address.
    upper: Option<(Box<[u8]>, Ipv6Addr)>,
}

/// One link of the simulated network.
#[derive(Debug)]
pub(super) struct Link {
    /// `2001:db8:0:k::`.
    pub(super) prefix: Ipv6Addr,
    /// `2001:db8:0:k::1`.
    pub(super) address: Ipv6Addr,
    pub(super) relay: Option<Relay>,
}

impl Link {
    /// What the relays of client `i` (`c`, on `link`) told the server, or `None` on a direct
    /// link.
    pub(super) fn relay_info(&self, i: usize, c: &Client) -> Option<RelayInfo> {
        let relay = self.relay.as_ref()?;
        let remote = RemoteIdKey {
            enterprise_number: relay.enterprise,
            remote_id: format!("{}-{}/{}/{}", relay.vendor, c.link + 1, i / 64, i % 64)
                .into_bytes()
                .into_boxed_slice(),
        };
        let peer = Ipv6Addr::from((0xfe80u128 << 112) | u128::from(c.peer_iid));
        // The access relay's RELAY-FORW as the server keeps it: the client's own message (the
        // innermost OPTION_RELAY_MSG) is left out.
        let inner = MessageBuilder::relay(MessageType::RelayForw, 0, self.address, peer)
            .option(DhcpOption::InterfaceId(&relay.interface_id))
            .remote_id(remote.enterprise_number, &remote.remote_id)
            .relay_id(&relay.duid)
            .build()
            .ok()?;
        let mut relay_ids = vec![relay.duid.clone()];
        let (from, message) = match &relay.upper {
            None => (relay.uplink, inner),
            Some((duid, address)) => {
                relay_ids.push(duid.clone());
                // An aggregation relay leaves link-address unspecified: the link is the
                // access relay's.
                let outer = MessageBuilder::relay(
                    MessageType::RelayForw,
                    1,
                    Ipv6Addr::UNSPECIFIED,
                    relay.uplink,
                )
                .relay_id(duid)
                .relay_msg(&inner)
                .build()
                .ok()?;
                (*address, outer)
            }
        };
        Some(RelayInfo {
            relay_ids,
            remote_ids: vec![remote],
            relay_message: Some((from, message.into_boxed_slice())),
        })
    }
}

/// The links, the first `round(links × relay_share)` of them relayed.
pub(super) fn build_links(config: &DemoConfig, rng: &mut SmallRng) -> Vec<Link> {
    let n = config.links;
    let mut relayed = (f64::from(n) * config.relay_share).round() as u16;
    if n >= 2 && config.relay_share > 0.0 && config.relay_share < 1.0 {
        relayed = relayed.clamp(1, n.saturating_sub(1));
    }
    let two_hop = (f64::from(relayed) * config.two_hop_share).round() as u16;
    (1..=n)
        .map(|k| {
            let prefix = Ipv6Addr::new(0x2001, 0xdb8, 0, k, 0, 0, 0, 0);
            let relay = (k <= relayed).then(|| {
                let at = usize::from(k) % VENDORS.len();
                let (enterprise, vendor) = VENDORS.get(at).copied().unwrap_or(VENDORS[0]);
                // An aggregation relay serves up to four access relays.
                let upper = (k <= two_hop).then(|| {
                    let a = (k - 1) / 4 + 1;
                    (
                        duid_en(enterprise, &[b"agg".as_slice(), &a.to_be_bytes()].concat()),
                        Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, a),
                    )
                });
                let serial: u32 = rng.r#gen();
                Relay {
                    duid: duid_en(
                        enterprise,
                        &[&k.to_be_bytes()[..], &serial.to_be_bytes()].concat(),
                    ),
                    enterprise,
                    vendor,
                    uplink: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, k),
                    interface_id: format!("ge-0/0/{k}").into_bytes().into_boxed_slice(),
                    upper,
                }
            });
            Link {
                prefix,
                address: super::DemoSource::link_address(k),
                relay,
            }
        })
        .collect()
}

/// A DUID-EN (type 2).
fn duid_en(enterprise: u32, identifier: &[u8]) -> Box<[u8]> {
    let mut d = vec![0, 2];
    d.extend_from_slice(&enterprise.to_be_bytes());
    d.extend_from_slice(identifier);
    d.into_boxed_slice()
}

/// Client `i`: a unique DUID of type 1, 2 or 3, a link, IAIDs and a first address.
pub(super) fn new_client(
    config: &DemoConfig,
    rng: &mut SmallRng,
    i: usize,
    nic_mask: u32,
) -> Client {
    // Multiplying by an odd number and xoring a mask is a bijection on 24 bits: every client
    // below MAX_CLIENTS gets its own NIC-specific part.
    let nic = ((i as u32).wrapping_mul(0x9e_3779) ^ nic_mask) & 0x00ff_ffff;
    let oui = OUIS
        .get(rng.gen_range(0..OUIS.len()))
        .copied()
        .unwrap_or(OUIS[0]);
    let [_, n0, n1, n2] = nic.to_be_bytes();
    let mac = [oui[0], oui[1], oui[2], n0, n1, n2];
    let kind = rng.gen_range(0..100u8);
    let duid: Vec<u8> = if kind < 45 {
        // DUID-LLT: Ethernet, generated some time in 2012–2024.
        let time: u32 = rng.gen_range(400_000_000..760_000_000);
        [&[0, 1, 0, 1][..], &time.to_be_bytes(), &mac].concat()
    } else if kind < 85 {
        [&[0, 3, 0, 1][..], &mac].concat()
    } else {
        let ent = CLIENT_ENTERPRISES
            .get(rng.gen_range(0..CLIENT_ENTERPRISES.len()))
            .copied()
            .unwrap_or(32473);
        let tail: u32 = rng.r#gen();
        let ident = [(i as u32).to_be_bytes(), tail.to_be_bytes()].concat();
        duid_en(ent, &ident).into_vec()
    };
    // EUI-64 from the MAC, universal/local bit flipped (RFC 4291 appendix A).
    let peer_iid = u64::from_be_bytes([
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ]);
    let link = rng.gen_range(0..config.links.max(1));
    let prefix = u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0, link + 1, 0, 0, 0, 0));
    let iid = rng.gen_range(0x100..=u64::MAX);
    Client {
        duid: duid.into_boxed_slice(),
        link,
        // IAIDs as common clients make them: small for the address, a different one for PD.
        iaid_na: rng.gen_range(1..=0xffff),
        iaid_pd: rng.gen_range(0x1_0000..=0xff_ffff),
        wants_pd: rng.gen_bool(config.pd_share),
        na: Ipv6Addr::from(prefix | u128::from(iid)),
        pd: None,
        cltt: ServerTime(0),
        status: Status::Fresh,
        epoch: 0,
        pos: 0,
        peer_iid,
    }
}
