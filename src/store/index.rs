//! The store: bindings in a slab, and one index per query type so no query scans.
//!
//! | query | index |
//! |---|---|
//! | by address (RFC 5007) | exact addresses in a hash map; delegated prefixes in one hash map per prefix length, so an address inside a prefix is found by masking it once per length in use |
//! | by client-id, with or without link | `(client DUID, link)` in a B-tree: one entry, or the client's range |
//! | by relay-id, link-address, remote-id (RFC 5460) | `(key, binding)` pairs in B-trees, so a Bulk cursor resumes after the last binding it sent |
//! | START / END (RFC 7653) | `(last change, binding)` in a B-tree |
//! | expiry (decision D6) | `(expiry, binding, lease)` in a B-tree |
//!
//! Applying a change is idempotent: an identical re-send changes nothing and says so.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv6Addr;
use std::ops::Bound;

use slab::Slab;

use super::links::LinkMap;
use super::model::{
    Binding, BindingKey, Change, Lease, LeaseKind, LeaseState, RelayInfo, RemoteIdKey,
};
use crate::codec::ServerTime;

/// A binding's handle in the store; stable for as long as the binding exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BindingId(usize);

impl BindingId {
    /// The handle's number (for logs and journal records).
    #[must_use]
    pub const fn index(self) -> usize {
        self.0
    }
}

/// What applying one change did to one binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Nothing changed: an identical re-send, or the end of a lease the store did not have.
    Unchanged,
    /// The binding was created or changed and still holds at least one lease. `ended` is the
    /// lease the change ended, if any, with zero lifetimes: it is reported once more so the
    /// requestor learns it is gone (decision D5).
    Updated {
        /// The binding.
        id: BindingId,
        /// The lease this change ended, at zero lifetimes.
        ended: Option<Lease>,
    },
    /// The binding's last lease ended, so the binding is gone. Its final state is kept here,
    /// the ended lease at zero lifetimes (decision D5).
    Removed(Binding),
}

/// What applying a change did: to its own binding, and to another binding that held the same
/// address or prefix before (the lease store gave it to a new client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The change's own binding.
    pub applied: Applied,
    /// The binding that lost the lease to this change, if any.
    pub displaced: Option<Applied>,
}

/// The lease mirror: every binding, indexed for every query type.
#[derive(Debug, Default)]
pub struct Store {
    bindings: Slab<Binding>,
    /// Client DUID → its bindings, one per link, ordered by link. Looked up by `&[u8]`, so
    /// finding a binding allocates nothing.
    clients: HashMap<Box<[u8]>, Vec<(Ipv6Addr, BindingId)>>,
    addresses: HashMap<Ipv6Addr, BindingId>,
    /// Delegated prefixes, one map per prefix length: masked prefix → binding.
    prefixes: BTreeMap<u8, HashMap<u128, BindingId>>,
    by_link: BTreeSet<(Ipv6Addr, BindingId)>,
    by_relay_id: BTreeSet<(Box<[u8]>, BindingId)>,
    by_remote_id: BTreeSet<(RemoteIdKey, BindingId)>,
    by_change: BTreeSet<(ServerTime, BindingId)>,
    expiries: BTreeSet<(ServerTime, BindingId, LeaseKind, Ipv6Addr, u8)>,
    /// The configured links (D16): changes are filed under their canonical link address.
    link_map: LinkMap,
}

/// The zero-lifetime copy of an ended lease that D5 reports.
fn ended_copy(lease: &Lease, state: LeaseState) -> Lease {
    Lease {
        preferred_lifetime: 0,
        valid_lifetime: 0,
        state,
        ..*lease
    }
}

fn masked(addr: Ipv6Addr, len: u8) -> u128 {
    let len = u32::from(len.min(128));
    u128::from(addr) & u128::MAX.checked_shl(128 - len).unwrap_or(0)
}

impl Store {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store filing changes under the links of `link_map` (D16).
    #[must_use]
    pub fn with_links(link_map: LinkMap) -> Self {
        Self {
            link_map,
            ..Self::default()
        }
    }

    /// The configured links.
    #[must_use]
    pub fn link_map(&self) -> &LinkMap {
        &self.link_map
    }

    /// Replaces the configured links (a reload, D31): changes from now on are filed, and
    /// queries resolved, under the new map; bindings already held keep the link they were filed
    /// under, as after a restart.
    pub fn set_link_map(&mut self, link_map: LinkMap) {
        self.link_map = link_map;
    }

    /// True when some binding is on `link`.
    #[must_use]
    pub fn has_link(&self, link: Ipv6Addr) -> bool {
        self.by_link
            .range((link, BindingId(0))..)
            .next()
            .is_some_and(|(l, _)| *l == link)
    }

    /// The number of bindings.
    #[must_use]
    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    /// Leases held: addresses and delegated prefixes.
    #[must_use]
    pub fn lease_counts(&self) -> (usize, usize) {
        (
            self.addresses.len(),
            self.prefixes.values().map(HashMap::len).sum(),
        )
    }

    /// True when there are no bindings.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    /// The binding behind a handle.
    #[must_use]
    pub fn get(&self, id: BindingId) -> Option<&Binding> {
        self.bindings.get(id.0)
    }

    /// Every binding, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (BindingId, &Binding)> + '_ {
        self.bindings.iter().map(|(i, b)| (BindingId(i), b))
    }

    /// Applies one change at server time `now` (the binding's last-change time). A change
    /// whose link is inside a configured link's prefix is filed under that link (D16).
    pub fn apply(&mut self, change: &Change, now: ServerTime) -> Outcome {
        match self.link_map.link_of(change.link) {
            Some(link) if link != change.link => {
                let canonical = Change {
                    link,
                    ..change.clone()
                };
                self.apply_on_link(&canonical, now)
            }
            _ => self.apply_on_link(change, now),
        }
    }

    fn apply_on_link(&mut self, change: &Change, now: ServerTime) -> Outcome {
        if change.lease.state.is_active() {
            self.upsert(change, now)
        } else {
            Outcome {
                applied: self.end(change, now),
                displaced: None,
            }
        }
    }

    fn upsert(&mut self, change: &Change, now: ServerTime) -> Outcome {
        let lease = change.lease;
        let existing = self.by_client_link(&change.client_id, change.link);

        // An address or prefix held by another binding moves to this one.
        let displaced = match self.holder(&lease) {
            Some(other) if Some(other) != existing => {
                self.remove_lease(other, lease.slot(), LeaseState::Deleted, now)
            }
            _ => None,
        };

        let Some(id) = existing else {
            let binding = Binding {
                key: BindingKey {
                    client_id: change.client_id.clone(),
                    link: change.link,
                },
                leases: vec![lease],
                relay: change.relay.clone().unwrap_or_default(),
                last_change: now,
            };
            let id = BindingId(self.bindings.insert(binding));
            let links = self.clients.entry(change.client_id.clone()).or_default();
            let at = links.partition_point(|(l, _)| *l < change.link);
            // Most clients are on one link: grow by one, not to Vec's minimum of four.
            links.reserve_exact(1);
            links.insert(at, (change.link, id));
            self.index_binding(id);
            self.index_lease(id, &lease);
            return Outcome {
                applied: Applied::Updated { id, ended: None },
                displaced,
            };
        };

        let Some(binding) = self.bindings.get(id.0) else {
            return Outcome {
                applied: Applied::Unchanged,
                displaced,
            };
        };
        let old_lease = binding
            .leases
            .iter()
            .find(|l| l.slot() == lease.slot())
            .copied();
        let relay_changed = change.relay.as_ref().is_some_and(|r| *r != binding.relay);
        if old_lease == Some(lease) && !relay_changed {
            return Outcome {
                applied: Applied::Unchanged,
                displaced,
            };
        }

        if relay_changed {
            self.unindex_relays(id);
        }
        if let Some(old) = old_lease {
            self.unindex_lease(id, &old);
        }
        self.by_change
            .remove(&(self.bindings[id.0].last_change, id));
        let binding = &mut self.bindings[id.0];
        match binding.leases.iter_mut().find(|l| l.slot() == lease.slot()) {
            Some(slot) => *slot = lease,
            None => {
                // A binding holds one or two leases: exact growth keeps it small.
                binding.leases.reserve_exact(1);
                binding.leases.push(lease);
            }
        }
        if let Some(relay) = &change.relay {
            binding.relay = relay.clone();
        }
        binding.last_change = now;
        self.by_change.insert((now, id));
        if relay_changed {
            self.index_binding_relays(id);
        }
        self.index_lease(id, &lease);
        Outcome {
            applied: Applied::Updated { id, ended: None },
            displaced,
        }
    }

    fn end(&mut self, change: &Change, now: ServerTime) -> Applied {
        match self.by_client_link(&change.client_id, change.link) {
            Some(id) => self
                .remove_lease(id, change.lease.slot(), change.lease.state, now)
                .unwrap_or(Applied::Unchanged),
            None => Applied::Unchanged,
        }
    }

    /// Ends the lease `slot` of binding `id`; `None` when the binding does not hold it.
    fn remove_lease(
        &mut self,
        id: BindingId,
        slot: (LeaseKind, Ipv6Addr, u8),
        state: LeaseState,
        now: ServerTime,
    ) -> Option<Applied> {
        let binding = self.bindings.get(id.0)?;
        let pos = binding.leases.iter().position(|l| l.slot() == slot)?;
        let old = *binding.leases.get(pos)?;
        let (count, link, changed) = (binding.leases.len(), binding.key.link, binding.last_change);
        self.unindex_lease(id, &old);
        let ended = ended_copy(&old, state);
        if count == 1 {
            self.unindex_relays(id);
            self.by_link.remove(&(link, id));
            self.by_change.remove(&(changed, id));
            let mut gone = self.bindings.remove(id.0);
            if let Some(links) = self.clients.get_mut(&gone.key.client_id) {
                links.retain(|(_, i)| *i != id);
                if links.is_empty() {
                    self.clients.remove(&gone.key.client_id);
                }
            }
            gone.leases[0] = ended;
            gone.last_change = now;
            return Some(Applied::Removed(gone));
        }
        self.by_change.remove(&(changed, id));
        let binding = self.bindings.get_mut(id.0)?;
        binding.leases.remove(pos);
        binding.last_change = now;
        self.by_change.insert((now, id));
        Some(Applied::Updated {
            id,
            ended: Some(ended),
        })
    }

    /// The binding holding this lease's address or prefix, if any.
    fn holder(&self, lease: &Lease) -> Option<BindingId> {
        match lease.kind {
            LeaseKind::Address => self.addresses.get(&lease.address).copied(),
            LeaseKind::Prefix => self
                .prefixes
                .get(&lease.prefix_len)
                .and_then(|m| m.get(&masked(lease.address, lease.prefix_len)))
                .copied(),
        }
    }

    fn index_lease(&mut self, id: BindingId, lease: &Lease) {
        match lease.kind {
            LeaseKind::Address => {
                self.addresses.insert(lease.address, id);
            }
            LeaseKind::Prefix => {
                self.prefixes
                    .entry(lease.prefix_len)
                    .or_default()
                    .insert(masked(lease.address, lease.prefix_len), id);
            }
        }
        if let Some(t) = lease.expires() {
            self.expiries
                .insert((t, id, lease.kind, lease.address, lease.prefix_len));
        }
    }

    fn unindex_lease(&mut self, id: BindingId, lease: &Lease) {
        match lease.kind {
            LeaseKind::Address => {
                if self.addresses.get(&lease.address) == Some(&id) {
                    self.addresses.remove(&lease.address);
                }
            }
            LeaseKind::Prefix => {
                if let Some(m) = self.prefixes.get_mut(&lease.prefix_len) {
                    let k = masked(lease.address, lease.prefix_len);
                    if m.get(&k) == Some(&id) {
                        m.remove(&k);
                    }
                    if m.is_empty() {
                        self.prefixes.remove(&lease.prefix_len);
                    }
                }
            }
        }
        if let Some(t) = lease.expires() {
            self.expiries
                .remove(&(t, id, lease.kind, lease.address, lease.prefix_len));
        }
    }

    /// Indexes a new binding's link, relays and change time.
    fn index_binding(&mut self, id: BindingId) {
        let Some(b) = self.bindings.get(id.0) else {
            return;
        };
        self.by_link.insert((b.key.link, id));
        self.by_change.insert((b.last_change, id));
        self.index_binding_relays(id);
    }

    fn index_binding_relays(&mut self, id: BindingId) {
        let Some(b) = self.bindings.get(id.0) else {
            return;
        };
        for r in &b.relay.relay_ids {
            self.by_relay_id.insert((r.clone(), id));
        }
        for r in &b.relay.remote_ids {
            self.by_remote_id.insert((r.clone(), id));
        }
    }

    /// Removes a binding's relay-id and remote-id entries.
    fn unindex_relays(&mut self, id: BindingId) {
        let Some(b) = self.bindings.get(id.0) else {
            return;
        };
        for r in &b.relay.relay_ids {
            self.by_relay_id.remove(&(r.clone(), id));
        }
        for r in &b.relay.remote_ids {
            self.by_remote_id.remove(&(r.clone(), id));
        }
    }

    // ---- queries -------------------------------------------------------------------------

    /// QUERY_BY_ADDRESS: the binding that leases `addr`, or holds a delegated prefix that
    /// contains it (decision D16).
    #[must_use]
    pub fn by_address(&self, addr: Ipv6Addr) -> Option<BindingId> {
        if let Some(id) = self.addresses.get(&addr) {
            return Some(*id);
        }
        // Longest prefix first, should delegations ever nest.
        self.prefixes
            .iter()
            .rev()
            .find_map(|(len, m)| m.get(&masked(addr, *len)).copied())
    }

    /// QUERY_BY_CLIENTID on one link.
    #[must_use]
    pub fn by_client_link(&self, client_id: &[u8], link: Ipv6Addr) -> Option<BindingId> {
        self.clients
            .get(client_id)?
            .iter()
            .find(|(l, _)| *l == link)
            .map(|(_, id)| *id)
    }

    /// QUERY_BY_CLIENTID on every link: the client's bindings, ordered by link.
    pub fn by_client<'s>(&'s self, client_id: &[u8]) -> impl Iterator<Item = BindingId> + 's {
        self.clients
            .get(client_id)
            .into_iter()
            .flatten()
            .map(|(_, id)| *id)
    }

    /// QUERY_BY_LINK_ADDRESS: the bindings on `link`, after `after` (a Bulk cursor resumes
    /// from the last binding it sent).
    pub fn by_link(
        &self,
        link: Ipv6Addr,
        after: Option<BindingId>,
    ) -> impl Iterator<Item = BindingId> + '_ {
        let start = match after {
            Some(id) => Bound::Excluded((link, id)),
            None => Bound::Included((link, BindingId(0))),
        };
        self.by_link
            .range((start, Bound::Unbounded))
            .take_while(move |(l, _)| *l == link)
            .map(|(_, id)| *id)
    }

    /// QUERY_BY_RELAY_ID: the bindings any of whose relays sent this Relay-ID, after `after`.
    pub fn by_relay_id<'s>(
        &'s self,
        relay_id: &[u8],
        after: Option<BindingId>,
    ) -> impl Iterator<Item = BindingId> + 's {
        let key: Box<[u8]> = relay_id.into();
        let start = match after {
            Some(id) => Bound::Excluded((key.clone(), id)),
            None => Bound::Included((key.clone(), BindingId(0))),
        };
        self.by_relay_id
            .range((start, Bound::Unbounded))
            .take_while(move |(r, _)| *r == key)
            .map(|(_, id)| *id)
    }

    /// QUERY_BY_REMOTE_ID: the bindings any of whose relays sent this Remote-ID (enterprise
    /// number and value both match), after `after`.
    pub fn by_remote_id<'s>(
        &'s self,
        remote_id: &RemoteIdKey,
        after: Option<BindingId>,
    ) -> impl Iterator<Item = BindingId> + 's {
        let key = remote_id.clone();
        let start = match after {
            Some(id) => Bound::Excluded((key.clone(), id)),
            None => Bound::Included((key.clone(), BindingId(0))),
        };
        self.by_remote_id
            .range((start, Bound::Unbounded))
            .take_while(move |(r, _)| *r == key)
            .map(|(_, id)| *id)
    }

    /// Every link that has bindings, in order.
    pub fn links(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        let mut last = None;
        self.by_link.iter().filter_map(move |(l, _)| {
            if last == Some(*l) {
                None
            } else {
                last = Some(*l);
                Some(*l)
            }
        })
    }

    /// Bindings whose last change lies in `start..=end` (either bound optional, decision D20),
    /// in change order.
    pub fn changed_between(
        &self,
        start: Option<ServerTime>,
        end: Option<ServerTime>,
    ) -> impl Iterator<Item = BindingId> + '_ {
        let lo = Bound::Included((start.unwrap_or(ServerTime(0)), BindingId(0)));
        let hi = match end {
            Some(t) => Bound::Included((t, BindingId(usize::MAX))),
            None => Bound::Unbounded,
        };
        self.by_change.range((lo, hi)).map(|(_, id)| *id)
    }

    /// When the next lease expires, if any lease has a finite lifetime.
    #[must_use]
    pub fn next_expiry(&self) -> Option<ServerTime> {
        self.expiries.first().map(|e| e.0)
    }

    /// The leases whose valid lifetime has run out at `now`, as `Expired` changes for the
    /// engine to apply like any other (decision D6).
    #[must_use]
    pub fn expired(&self, now: ServerTime) -> Vec<Change> {
        let hi = Bound::Included((
            now,
            BindingId(usize::MAX),
            LeaseKind::Prefix,
            Ipv6Addr::from(u128::MAX),
            u8::MAX,
        ));
        self.expiries
            .range((Bound::Unbounded, hi))
            .filter_map(|(_, id, kind, addr, len)| {
                let b = self.bindings.get(id.0)?;
                let lease = b.leases.iter().find(|l| l.slot() == (*kind, *addr, *len))?;
                Some(Change {
                    client_id: b.key.client_id.clone(),
                    link: b.key.link,
                    lease: Lease {
                        state: LeaseState::Expired,
                        ..*lease
                    },
                    relay: None,
                })
            })
            .collect()
    }

    /// The relay information of a binding (convenience for replies).
    #[must_use]
    pub fn relay(&self, id: BindingId) -> Option<&RelayInfo> {
        self.get(id).map(|b| &b.relay)
    }
}
