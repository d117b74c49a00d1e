//! From one of Kea's lease6 rows to a lqd [`Change`]: the one mapper every reader of Kea's
//! leases shares (the memfile CSV today; a database source would build the same [`KeaRow`]
//! from its lease6 table).
//!
//! See the [`kea`](super) module documentation for the mapping table, the link of a lease and
//! the relays; [`relay_chain`] rebuilds the relayed message for OPTION_LQ_RELAY_DATA (D29).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::Ipv6Addr;

use serde_json::Value;

use super::config::KEA_CONFIG_ENV;
use crate::codec::ServerTime;
use crate::store::{Change, Lease, LeaseKind, LeaseState, RelayInfo, RemoteIdKey};

/// How many recent rows per lease are remembered to make re-reading idempotent.
pub const RECENT_ROWS: usize = 4;

/// Kea's lease states (`Lease::STATE_*`): default (granted), declined, expired-reclaimed.
pub(super) const STATE_DECLINED: u32 = 1;
pub(super) const STATE_EXPIRED_RECLAIMED: u32 = 2;
/// Released, and kept for lease affinity (Kea 2.7.1 and later).
pub(super) const STATE_RELEASED: u32 = 3;
/// Registered by the client with ADDR-REG-INFORM (RFC 9686; Kea 2.7.7 and later).
pub(super) const STATE_REGISTERED: u32 = 4;

/// One row of a lease file, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeaRow {
    /// The address, or for a prefix delegation the prefix.
    pub address: Ipv6Addr,
    /// The DUID octets (`[0]` for a declined address).
    pub duid: Vec<u8>,
    /// Seconds; 0 means the lease is gone.
    pub valid_lifetime: u32,
    /// Unix seconds.
    pub expire: i64,
    /// Kea's subnet id.
    pub subnet_id: u32,
    /// Seconds.
    pub pref_lifetime: u32,
    /// 0 NA, 1 TA, 2 PD.
    pub lease_type: u8,
    /// The IAID.
    pub iaid: u32,
    /// The prefix length (128 for an address).
    pub prefix_len: u8,
    /// 0 default, 1 declined, 2 expired-reclaimed, 3 released, 4 registered (0 when the
    /// column is absent).
    pub state: u32,
    /// `user_context`, unescaped; empty when absent.
    pub user_context: String,
}

impl KeaRow {
    /// True for a declined address's placeholder DUID (`00`) or an empty one.
    #[must_use]
    pub fn anonymous(&self) -> bool {
        self.duid.is_empty() || self.duid == [0]
    }

    fn digest(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }
}

/// What Kea's extended info says about the relays of a lease.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeaRelays {
    /// The link-address of the relay closest to the client that is not `::`.
    pub link: Option<Ipv6Addr>,
    /// The relay-ids and remote-ids found in the relays' options.
    pub info: RelayInfo,
}

fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let plain: String = s.chars().filter(|c| *c != ':').collect();
    hex::decode(plain).ok()
}

/// Walks DHCPv6 options (code u16, length u16, value) for relay-ids (53) and remote-ids (37).
pub fn walk_relay_options(bytes: &[u8], info: &mut RelayInfo) {
    let mut rest = bytes;
    while let [c0, c1, l0, l1, tail @ ..] = rest {
        let code = u16::from_be_bytes([*c0, *c1]);
        let len = usize::from(u16::from_be_bytes([*l0, *l1]));
        let Some(value) = tail.get(..len) else {
            return;
        };
        match code {
            53 if !value.is_empty() => info.relay_ids.push(value.into()),
            37 => {
                if let [e0, e1, e2, e3, id @ ..] = value {
                    info.remote_ids.push(RemoteIdKey {
                        enterprise_number: u32::from_be_bytes([*e0, *e1, *e2, *e3]),
                        remote_id: id.into(),
                    });
                }
            }
            _ => {}
        }
        rest = tail.get(len..).unwrap_or_default();
    }
}

/// One relay layer as Kea keeps it in a lease's extended info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayHop {
    /// The RELAY-FORW's hop-count.
    pub hop_count: u8,
    /// Its link-address.
    pub link: Ipv6Addr,
    /// Its peer-address (the client's, or the next relay's towards the client).
    pub peer: Ipv6Addr,
    /// Its options, without OPTION_RELAY_MSG, as received.
    pub options: Vec<u8>,
}

/// Kea 2.4+ may give a relay's ids without its options: they are the options lqd rebuilds
/// (OPTION_REMOTE_ID 37, then OPTION_RELAY_ID 53).
fn ids_as_options(relay: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    for (code, key) in [(37u16, "remote-id"), (53u16, "relay-id")] {
        if let Some(value) = relay.get(key).and_then(Value::as_str).and_then(hex_bytes)
            && !value.is_empty()
            && let Ok(len) = u16::try_from(value.len())
        {
            out.extend_from_slice(&code.to_be_bytes());
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&value);
        }
    }
    out
}

/// OPTION_RELAY_MSG.
const OPTION_RELAY_MSG: u16 = 9;
/// RELAY-FORW.
const RELAY_FORW: u8 = 12;

/// Rebuilds the relayed message of OPTION_LQ_RELAY_DATA from Kea's relay layers (outer relay
/// first, as Kea keeps them), as Kea's own lease_query hook does (D29): one RELAY-FORW per
/// layer with its hop-count, link-address, peer-address and options, each holding the next
/// layer in an OPTION_RELAY_MSG, the innermost without one (RFC 5007 §4.1.2.4: the client's
/// message is removed). The peer-address of the option is the outermost relay's link-address
/// (`::` when that is `::`): Kea does not keep the address its relay sent from, and the
/// link-address is the address that relay agent gave for itself on the link it relays for.
///
/// `None` when there are no layers or the chain would not fit a DHCPv6 option.
#[must_use]
pub fn relay_chain(hops: &[RelayHop]) -> Option<(Ipv6Addr, Box<[u8]>)> {
    let outer = hops.first()?;
    let mut message: Vec<u8> = Vec::new();
    for hop in hops.iter().rev() {
        let mut layer = Vec::with_capacity(34 + hop.options.len() + 4 + message.len());
        layer.push(RELAY_FORW);
        layer.push(hop.hop_count);
        layer.extend_from_slice(&hop.link.octets());
        layer.extend_from_slice(&hop.peer.octets());
        layer.extend_from_slice(&hop.options);
        if !message.is_empty() {
            let len = u16::try_from(message.len()).ok()?;
            layer.extend_from_slice(&OPTION_RELAY_MSG.to_be_bytes());
            layer.extend_from_slice(&len.to_be_bytes());
            layer.extend_from_slice(&message);
        }
        message = layer;
    }
    // OPTION_LQ_RELAY_DATA holds 16 octets of peer-address before the message.
    u16::try_from(message.len().checked_add(16)?).ok()?;
    Some((outer.link, message.into_boxed_slice()))
}

/// Reads the relays from a lease's `user_context` (unescaped JSON); `None` when it has none.
#[must_use]
pub fn relays_from_user_context(user_context: &str) -> Option<KeaRelays> {
    if user_context.trim().is_empty() {
        return None;
    }
    let value: Value = serde_json::from_str(user_context).ok()?;
    let isc = value.get("ISC")?;
    let relays = isc
        .get("relays")
        .or_else(|| isc.get("relay-info"))?
        .as_array()?;
    if relays.is_empty() {
        return None;
    }
    let mut out = KeaRelays::default();
    let mut hops = Vec::with_capacity(relays.len());
    for relay in relays {
        let options = match relay.get("options").and_then(Value::as_str) {
            Some(opts) => hex_bytes(opts),
            None => Some(ids_as_options(relay)),
        };
        if let Some(bytes) = &options {
            walk_relay_options(bytes, &mut out.info);
        }
        hops.push(options.and_then(|options| {
            Some(RelayHop {
                hop_count: relay
                    .get("hop")
                    .and_then(Value::as_u64)
                    .and_then(|h| u8::try_from(h).ok())?,
                link: relay.get("link").and_then(Value::as_str)?.parse().ok()?,
                peer: relay.get("peer").and_then(Value::as_str)?.parse().ok()?,
                options,
            })
        }));
    }
    out.link = relays
        .iter()
        .rev()
        .filter_map(|r| r.get("link").and_then(Value::as_str))
        .filter_map(|s| s.parse::<Ipv6Addr>().ok())
        .find(|a| !a.is_unspecified());
    // Every hop must be whole for the chain to be the one the server received.
    let hops: Option<Vec<RelayHop>> = hops.into_iter().collect();
    out.info.relay_message = hops.as_deref().and_then(relay_chain);
    Some(out)
}

/// What [`KeaMapper::apply`] made of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Send this change.
    Change(Change),
    /// The row equals one already applied for this lease (a re-read): nothing to send.
    Duplicate,
    /// The row says nothing lqd reports (IA_TA, or a declined address no client is known
    /// for); the reason, for a debug log.
    Ignored(String),
}

/// Who last held an address, and on which link.
#[derive(Debug, Clone)]
struct Holder {
    duid: Box<[u8]>,
    link: Ipv6Addr,
    iaid: u32,
    subnet_id: u32,
}

/// Turns rows into changes, remembering what it needs across rows and files.
///
/// Per lease (`lease_type`, `address`) it remembers the binding that last held it (for a
/// declined row, which has no DUID) and the digests of its last [`RECENT_ROWS`] rows (to skip
/// rows read again). Both are dropped when Kea deletes the lease (a row with valid lifetime
/// 0), so the memory is bounded by the leases Kea itself holds, not by the churn.
#[derive(Debug, Default)]
pub struct KeaMapper {
    subnets: HashMap<u32, Ipv6Addr>,
    holders: HashMap<(u8, Ipv6Addr), Holder>,
    recent: HashMap<(u8, Ipv6Addr), VecDeque<u64>>,
    warned_subnets: HashSet<u32>,
}

impl KeaMapper {
    /// A mapper with Kea's subnets (subnet id → the prefix's first address).
    #[must_use]
    pub fn new(subnets: HashMap<u32, Ipv6Addr>) -> Self {
        Self {
            subnets,
            ..Self::default()
        }
    }

    fn subnet_link(&mut self, subnet_id: u32) -> Ipv6Addr {
        if let Some(a) = self.subnets.get(&subnet_id) {
            return *a;
        }
        if self.warned_subnets.insert(subnet_id) {
            tracing::warn!(
                "kea-csv: subnet id {subnet_id} has no relay info and is not in Kea's \
                 configuration; its leases are on link ::{subnet_id:x} (set {KEA_CONFIG_ENV})"
            );
        }
        Ipv6Addr::from(u128::from(subnet_id))
    }

    /// How many leases the mapper remembers rows or a holder for: those not deleted yet.
    #[must_use]
    pub fn remembered(&self) -> usize {
        self.recent.len().max(self.holders.len())
    }

    /// Maps one row.
    pub fn apply(&mut self, row: &KeaRow) -> Applied {
        let kind = match row.lease_type {
            0 => LeaseKind::Address,
            2 => LeaseKind::Prefix,
            _ => return Applied::Ignored("an IA_TA lease".into()),
        };
        let key = (row.lease_type, row.address);
        let digest = row.digest();
        let recent = self.recent.entry(key).or_default();
        if recent.contains(&digest) {
            return Applied::Duplicate;
        }
        if recent.len() >= RECENT_ROWS {
            recent.pop_front();
        }
        recent.push_back(digest);

        let prefix_len = if kind == LeaseKind::Address {
            128
        } else {
            row.prefix_len
        };
        let cltt_unix = row.expire.saturating_sub(i64::from(row.valid_lifetime));
        let cltt = ServerTime::from_unix(u64::try_from(cltt_unix).unwrap_or(0));
        let gone = row.valid_lifetime == 0;
        let relays = relays_from_user_context(&row.user_context);

        let (client_id, link, iaid) = if row.anonymous() {
            // A declined address (or its deletion): the binding that last held it.
            let Some(h) = self.holders.get(&key) else {
                return Applied::Ignored(format!(
                    "{} has no known client (DUID {})",
                    row.address,
                    hex::encode(&row.duid)
                ));
            };
            (h.duid.clone(), h.link, h.iaid)
        } else {
            let previous = self
                .holders
                .get(&key)
                .filter(|h| *h.duid == *row.duid && h.subnet_id == row.subnet_id)
                .map(|h| h.link);
            let link = match (relays.as_ref().and_then(|r| r.link), previous) {
                (Some(l), _) | (None, Some(l)) => l,
                (None, None) => self.subnet_link(row.subnet_id),
            };
            let client_id: Box<[u8]> = row.duid.clone().into_boxed_slice();
            self.holders.insert(
                key,
                Holder {
                    duid: client_id.clone(),
                    link,
                    iaid: row.iaid,
                    subnet_id: row.subnet_id,
                },
            );
            (client_id, link, row.iaid)
        };
        let state = match row.state {
            STATE_RELEASED if !row.anonymous() => LeaseState::Released,
            0 if gone && !row.anonymous() => LeaseState::Released,
            _ if gone => LeaseState::Deleted,
            STATE_DECLINED => LeaseState::Declined,
            STATE_EXPIRED_RECLAIMED => LeaseState::Expired,
            // Default, or registered (RFC 9686): a binding the server knows of.
            _ => LeaseState::Active,
        };
        if gone {
            // Kea forgets a lease at a row with lifetime 0 (its loader erases it), and so does
            // the mapper: what it remembers stays bounded by the leases Kea holds.
            self.holders.remove(&key);
            self.recent.remove(&key);
        }
        Applied::Change(Change {
            client_id,
            link,
            lease: Lease {
                kind,
                address: row.address,
                prefix_len,
                iaid,
                preferred_lifetime: row.pref_lifetime.min(row.valid_lifetime),
                valid_lifetime: row.valid_lifetime,
                cltt,
                state,
            },
            relay: relays.map(|r| r.info),
        })
    }
}
