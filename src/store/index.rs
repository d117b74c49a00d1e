//! The store: bindings in a slab of compact records, and one index per query type so no query
//! scans.
//!
//! | query | index |
//! |---|---|
//! | by address (RFC 5007) | exact addresses in a hash table; delegated prefixes in one hash table per prefix length, so an address inside a prefix is found by masking it once per length in use |
//! | by client-id, with or without link | the client's DUID in a hash table, to its first binding; a client's bindings are chained in link order |
//! | by relay-id, link-address, remote-id (RFC 5460) | `(key, binding)` pairs in B-trees, so a Bulk cursor resumes after the last binding it sent |
//! | START / END (RFC 7653) | `(last change, binding)` in a B-tree |
//! | expiry (decision D6) | `(expiry, binding)` in a B-tree |
//!
//! Applying a change is idempotent: an identical re-send changes nothing and says so.
//!
//! # Memory (issue 19)
//!
//! A carrier's lqd holds ten million bindings, so what one costs is counted in octets
//! (decision D40). A binding is one [`Slot`]: its leases inline (two fit without another
//! allocation), its link, last change and the next binding of the same client as 32-bit
//! numbers, and one allocation holding the client's DUID, its relays' relay-ids (as numbers
//! in an interner: a few thousand relays serve millions of clients), its remote-ids and the
//! relayed message. The indexes hold 32-bit binding numbers and 32-bit keys: the hash tables
//! keep no copy of a DUID or an address (they compare against the binding's own), links and
//! relay-ids are interned, and a remote-id (one per subscriber line, so not shared) is
//! indexed by 32 bits of its hash, each hit checked against the binding. Bindings live in pages
//! of slots, so the store grows a page at a time. `loadgen scale`
//! measures it (BENCHMARKS.md).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::io::{self, Read, Write};
use std::net::Ipv6Addr;
use std::ops::Bound;

use hashbrown::HashTable;
use smallvec::SmallVec;

use super::links::LinkMap;
use super::model::{
    Binding, BindingKey, BindingView, Change, Lease, LeaseKind, LeaseState, RelayInfo, RemoteIdKey,
};
use super::postings::PostingKey;
use super::record::template;
use super::snapshot::{self, SnapshotError, damaged};
use crate::codec::ServerTime;

/// A binding's handle in the store; stable for as long as the binding exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BindingId(u32);

impl BindingId {
    /// The handle's number (for logs and journal records).
    #[must_use]
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// No next binding in a client's chain.
const NONE: u32 = u32::MAX;

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

/// One binding as the store keeps it.
#[derive(Debug)]
struct Slot {
    /// The DUID, relay-ids, remote-ids and relayed message: see [`Blob`].
    data: Box<[u8]>,
    /// The active leases, in the order they were first seen.
    leases: SmallVec<[Lease; 2]>,
    /// The link, by its number in [`Store::links`].
    link: u32,
    last_change: ServerTime,
    /// The same client's binding on the next link, in link order, or [`NONE`].
    next: u32,
}

/// A slot's variable part, one allocation (little-endian):
///
/// | field | size |
/// |---|---|
/// | DUID length, DUID | 2 + n |
/// | relay-id count, then each relay-id's number in the interner | 2 + 4 × n |
/// | remote-id count, then each: enterprise number, length, octets | 2 + (4 + 2 + n) × n |
/// | relayed message: 0, or 1, the relay's address and the message (to the end), or 2, the number of its relay template (D42) in [`Store::templates`], the innermost peer-address and each hole's length and octets (to the end) | 1 (+ 16 + n, or + 4 + 16 + (2 + n) × n) |
///
/// Most relayed messages are kept as a template and holes (issue 19): the RELAY-FORW chain is
/// the same for every client behind the same relays, so a binding keeps only its client's
/// link-local address and the per-line part of its remote-id, about 20 octets instead of the
/// 100 to 200 of the chain.
#[derive(Clone, Copy)]
struct Blob<'a>(&'a [u8]);

/// A blob's relayed message, as kept.
#[derive(Clone, Copy)]
enum RelayMsg<'a> {
    /// The address the message came from, and the message.
    Whole(Ipv6Addr, &'a [u8]),
    /// A relay template's number, the innermost peer-address, and the holes (each a 16-bit
    /// length and its octets).
    Templated(u32, Ipv6Addr, &'a [u8]),
}

/// The holes of a templated message: each a 16-bit length and its octets.
fn holes(mut b: &[u8]) -> SmallVec<[&[u8]; 4]> {
    let mut out = SmallVec::new();
    while let Some((len, rest)) = b.split_first_chunk::<2>() {
        let n = usize::from(u16::from_le_bytes(*len));
        let Some((hole, rest)) = rest.split_at_checked(n) else {
            break;
        };
        out.push(hole);
        b = rest;
    }
    out
}

impl<'a> Blob<'a> {
    fn u16_at(&self, at: usize) -> usize {
        self.0
            .get(at..at + 2)
            .map_or(0, |b| usize::from(u16::from_le_bytes([b[0], b[1]])))
    }

    fn client_id(self) -> &'a [u8] {
        let n = self.u16_at(0);
        self.0.get(2..2 + n).unwrap_or_default()
    }

    /// Where the relay-id count is.
    fn relay_ids_at(self) -> usize {
        2 + self.u16_at(0)
    }

    fn relay_ids(self) -> impl Iterator<Item = u32> + 'a {
        let at = self.relay_ids_at();
        let n = self.u16_at(at);
        let ids = self.0.get(at + 2..at + 2 + 4 * n).unwrap_or_default();
        ids.chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
    }

    fn remote_ids_at(self) -> usize {
        let at = self.relay_ids_at();
        at + 2 + 4 * self.u16_at(at)
    }

    /// Each remote-id: enterprise number and value; then the offset after the last.
    fn remote_ids(self) -> RemoteIds<'a> {
        let at = self.remote_ids_at();
        RemoteIds {
            blob: self,
            left: self.u16_at(at),
            at: at + 2,
        }
    }

    fn relay_message(self) -> Option<RelayMsg<'a>> {
        let mut it = self.remote_ids();
        for _ in it.by_ref() {}
        let at = it.at;
        match self.0.get(at) {
            Some(1) => {
                let peer: [u8; 16] = self.0.get(at + 1..at + 17)?.try_into().ok()?;
                Some(RelayMsg::Whole(
                    Ipv6Addr::from(peer),
                    self.0.get(at + 17..)?,
                ))
            }
            Some(2) => {
                let t: [u8; 4] = self.0.get(at + 1..at + 5)?.try_into().ok()?;
                let peer: [u8; 16] = self.0.get(at + 5..at + 21)?.try_into().ok()?;
                Some(RelayMsg::Templated(
                    u32::from_le_bytes(t),
                    Ipv6Addr::from(peer),
                    self.0.get(at + 21..)?,
                ))
            }
            _ => None,
        }
    }
}

impl Blob<'_> {
    /// True when the blob is one [`Store::blob`] makes, naming relay-ids below `relay_ids`:
    /// every length inside it, and the relayed message's flag and address, fit (a snapshot's
    /// blob is checked so before it is used, D43).
    fn valid(self, relay_ids: impl Fn(u32) -> bool, templates: impl Fn(u32) -> bool) -> bool {
        let b = self.0;
        let Some(at) = 2usize.checked_add(self.u16_at(0)) else {
            return false;
        };
        if b.len() < at.saturating_add(2) {
            return false;
        }
        let ids_end = at + 2 + 4 * self.u16_at(at);
        if b.len() < ids_end.saturating_add(2) || !self.relay_ids().all(relay_ids) {
            return false;
        }
        let mut it = self.remote_ids();
        let count = it.left;
        if it.by_ref().count() != count {
            return false;
        }
        match b.get(it.at) {
            Some(0) => it.at + 1 == b.len(),
            Some(1) => b.len() >= it.at + 17,
            Some(2) => match self.relay_message() {
                Some(RelayMsg::Templated(t, _, h)) => {
                    // The holes cover the rest exactly.
                    let n: usize = holes(h).iter().map(|x| 2 + x.len()).sum();
                    templates(t) && n == h.len()
                }
                _ => false,
            },
            _ => false,
        }
    }
}

/// A blob's remote-ids.
struct RemoteIds<'a> {
    blob: Blob<'a>,
    left: usize,
    at: usize,
}

impl<'a> Iterator for RemoteIds<'a> {
    type Item = (u32, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let b = self.blob.0;
        let e = b.get(self.at..self.at + 4)?;
        let enterprise = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
        let n = self.blob.u16_at(self.at + 4);
        let value = b.get(self.at + 6..self.at + 6 + n)?;
        self.at += 6 + n;
        Some((enterprise, value))
    }
}

/// Why a change cannot be kept: a field too long for the store's compact form.
fn put_u16(out: &mut Vec<u8>, n: usize) -> bool {
    match u16::try_from(n) {
        Ok(n) => {
            out.extend_from_slice(&n.to_le_bytes());
            true
        }
        Err(_) => false,
    }
}

/// Byte strings many bindings share (relay-ids), each kept once, by number.
#[derive(Debug, Default)]
struct Interner {
    numbers: HashMap<Box<[u8]>, u32>,
    /// Each number's value and how many references it has.
    values: Vec<(Box<[u8]>, u32)>,
    free: Vec<u32>,
}

impl Interner {
    fn number(&self, value: &[u8]) -> Option<u32> {
        self.numbers.get(value).copied()
    }

    fn get(&self, n: u32) -> &[u8] {
        self.values.get(n as usize).map_or(&[], |(v, _)| v)
    }

    /// One more reference to `value`; its number.
    fn intern(&mut self, value: &[u8]) -> u32 {
        if let Some(&n) = self.numbers.get(value) {
            if let Some((_, refs)) = self.values.get_mut(n as usize) {
                *refs = refs.saturating_add(1);
            }
            return n;
        }
        let entry = (Box::<[u8]>::from(value), 1);
        let n = match self.free.pop() {
            Some(n) => {
                if let Some(slot) = self.values.get_mut(n as usize) {
                    *slot = entry;
                }
                n
            }
            None => {
                self.values.push(entry);
                u32::try_from(self.values.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.numbers.insert(value.into(), n);
        n
    }

    /// One reference fewer to number `n`; forgotten at none (then true).
    fn release(&mut self, n: u32) -> bool {
        let Some((value, refs)) = self.values.get_mut(n as usize) else {
            return false;
        };
        *refs = refs.saturating_sub(1);
        if *refs == 0 {
            let value = std::mem::take(value);
            self.numbers.remove(&value);
            self.free.push(n);
            return true;
        }
        false
    }
}

/// A binding in the store, read in place.
#[derive(Debug, Clone, Copy)]
pub struct BindingRef<'s> {
    store: &'s Store,
    slot: &'s Slot,
}

impl<'s> BindingRef<'s> {
    /// The client's DUID.
    #[must_use]
    pub fn client_id(&self) -> &'s [u8] {
        Blob(&self.slot.data).client_id()
    }

    /// The link.
    #[must_use]
    pub fn link(&self) -> Ipv6Addr {
        self.store.link_address(self.slot.link)
    }

    /// The client's active leases on the link, in the order they were first seen.
    #[must_use]
    pub fn leases(&self) -> &'s [Lease] {
        &self.slot.leases
    }

    /// When the binding last changed.
    #[must_use]
    pub fn last_change(&self) -> ServerTime {
        self.slot.last_change
    }

    /// Every relay's OPTION_RELAY_ID.
    pub fn relay_ids(&self) -> impl Iterator<Item = &'s [u8]> + 's {
        let store = self.store;
        Blob(&self.slot.data)
            .relay_ids()
            .map(move |n| store.relay_ids.get(n))
    }

    /// Every relay's OPTION_REMOTE_ID: enterprise number and value.
    pub fn remote_ids(&self) -> impl Iterator<Item = (u32, &'s [u8])> + 's {
        Blob(&self.slot.data).remote_ids()
    }

    /// Appends the relayed message for OPTION_LQ_RELAY_DATA to `out`; the address it came
    /// from, or `None` (nothing appended) when the relays sent none.
    pub fn relay_message_into(&self, out: &mut Vec<u8>) -> Option<Ipv6Addr> {
        self.store.message_into(Blob(&self.slot.data), out)
    }

    /// What the relays told the server, as the model has it.
    #[must_use]
    pub fn relay(&self) -> RelayInfo {
        RelayInfo {
            relay_ids: self.relay_ids().map(Into::into).collect(),
            remote_ids: self
                .remote_ids()
                .map(|(enterprise_number, r)| RemoteIdKey {
                    enterprise_number,
                    remote_id: r.into(),
                })
                .collect(),
            relay_message: {
                let mut m = Vec::new();
                self.relay_message_into(&mut m)
                    .map(|from| (from, m.into_boxed_slice()))
            },
        }
    }

    /// The binding as the model has it (for its journal record).
    #[must_use]
    pub fn to_binding(&self) -> Binding {
        Binding {
            key: BindingKey {
                client_id: self.client_id().into(),
                link: self.link(),
            },
            leases: self.leases().to_vec(),
            relay: self.relay(),
            last_change: self.last_change(),
        }
    }
}

impl<'s> BindingView<'s> for BindingRef<'s> {
    fn client_id(&self) -> &'s [u8] {
        Self::client_id(self)
    }

    fn link(&self) -> Ipv6Addr {
        Self::link(self)
    }

    fn leases(&self) -> &'s [Lease] {
        Self::leases(self)
    }

    fn last_change(&self) -> ServerTime {
        Self::last_change(self)
    }

    fn relay_message_into(&self, out: &mut Vec<u8>) -> Option<Ipv6Addr> {
        Self::relay_message_into(self, out)
    }

    fn has_relay_id(&self, relay_id: &[u8]) -> bool {
        self.relay_ids().any(|r| r == relay_id)
    }

    fn has_remote_id(&self, remote_id: &RemoteIdKey) -> bool {
        self.remote_ids()
            .any(|(e, r)| e == remote_id.enterprise_number && r == &remote_id.remote_id[..])
    }
}

/// Slots in a page hold this many bindings.
const PAGE: usize = 4096;

/// The bindings' slots, in pages of [`PAGE`]: the store grows a page at a time, never by
/// doubling and copying a vector (which at ten million bindings would leave up to 40 % of the
/// largest allocation unused, and need twice the memory while it copies). A freed slot is
/// reused first.
#[derive(Debug, Default)]
struct Slots {
    pages: Vec<Box<[Option<Slot>]>>,
    /// Free slots, the next to use last.
    free: Vec<u32>,
    len: usize,
}

impl Slots {
    fn get(&self, i: usize) -> Option<&Slot> {
        self.pages.get(i / PAGE)?.get(i % PAGE)?.as_ref()
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut Slot> {
        self.pages.get_mut(i / PAGE)?.get_mut(i % PAGE)?.as_mut()
    }

    /// Puts `slot` in a free place; its number, or the slot back when 2³² are in use.
    fn insert(&mut self, slot: Slot) -> Result<u32, Slot> {
        if self.free.is_empty() {
            let first = self.pages.len() * PAGE;
            let Ok(last) = u32::try_from(first + PAGE - 1) else {
                return Err(slot);
            };
            self.pages.push((0..PAGE).map(|_| None).collect());
            self.free.extend((first as u32..=last).rev());
        }
        let Some(i) = self.free.pop() else {
            return Err(slot);
        };
        match self
            .pages
            .get_mut(i as usize / PAGE)
            .and_then(|p| p.get_mut(i as usize % PAGE))
        {
            Some(place) => {
                *place = Some(slot);
                self.len += 1;
                Ok(i)
            }
            None => Err(slot),
        }
    }

    fn remove(&mut self, i: usize) -> Option<Slot> {
        let slot = self.pages.get_mut(i / PAGE)?.get_mut(i % PAGE)?.take()?;
        self.len -= 1;
        self.free.push(u32::try_from(i).unwrap_or(u32::MAX));
        Some(slot)
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn iter(&self) -> impl Iterator<Item = (usize, &Slot)> + '_ {
        self.pages.iter().enumerate().flat_map(|(p, page)| {
            page.iter()
                .enumerate()
                .filter_map(move |(j, s)| s.as_ref().map(|s| (p * PAGE + j, s)))
        })
    }
}

/// The lease tables' entries: a binding and the position of the lease in it.
type LeaseEntry = (u32, u32);

/// The lease mirror: every binding, indexed for every query type.
#[derive(Debug, Default)]
pub struct Store {
    bindings: Slots,
    hasher: RandomState,
    /// Each client's first binding (in link order), by the hash of its DUID.
    clients: HashTable<u32>,
    /// Addresses: each address lease, by the hash of its address.
    addresses: HashTable<LeaseEntry>,
    /// Delegated prefixes, one table per prefix length: each, by the hash of its masked prefix.
    prefixes: BTreeMap<u8, HashTable<LeaseEntry>>,
    /// Links by number, and numbers by link.
    links: Vec<Ipv6Addr>,
    link_numbers: HashMap<Ipv6Addr, u32>,
    relay_ids: Interner,
    /// The relay templates of the bindings' relayed messages (D42), by number, and each
    /// compiled for rebuilding.
    templates: Interner,
    compiled: Vec<Option<template::Compiled>>,
    by_link: BTreeSet<(u32, BindingId)>,
    by_relay_id: BTreeSet<(u32, BindingId)>,
    /// Remote-ids by 32 bits of their hash (enterprise number and value), checked on each hit.
    by_remote_id: BTreeSet<(u32, BindingId)>,
    by_change: BTreeSet<(ServerTime, BindingId)>,
    /// One entry per binding and expiry time its leases have.
    expiries: BTreeSet<(ServerTime, BindingId)>,
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

/// A lease's hash in its table: its address, or its prefix masked to its length.
fn lease_hash(hasher: &RandomState, l: &Lease) -> u64 {
    match l.kind {
        LeaseKind::Address => hasher.hash_one(u128::from(l.address)),
        LeaseKind::Prefix => hasher.hash_one(masked(l.address, l.prefix_len)),
    }
}

/// A lease entry's hash, read where it points: the lease tables rehash with it as they grow.
fn entry_hash<'a>(
    bindings: &'a Slots,
    hasher: &'a RandomState,
) -> impl Fn(&LeaseEntry) -> u64 + 'a {
    move |&(b, i)| {
        bindings
            .get(b as usize)
            .and_then(|s| s.leases.get(i as usize))
            .map_or(0, |l| lease_hash(hasher, l))
    }
}

/// Files `lease`, at `entry`, in its table: the addresses', or its prefix length's.
fn file_lease(
    bindings: &Slots,
    hasher: &RandomState,
    addresses: &mut HashTable<LeaseEntry>,
    prefixes: &mut BTreeMap<u8, HashTable<LeaseEntry>>,
    entry: LeaseEntry,
    lease: &Lease,
) {
    let h = lease_hash(hasher, lease);
    let rehash = entry_hash(bindings, hasher);
    match lease.kind {
        LeaseKind::Address => addresses.insert_unique(h, entry, rehash),
        LeaseKind::Prefix => prefixes
            .entry(lease.prefix_len)
            .or_default()
            .insert_unique(h, entry, rehash),
    };
}

/// A remote-id's key in its index (see [`Store::hash_remote`]).
fn remote_key(hasher: &RandomState, enterprise: u32, value: &[u8]) -> u32 {
    (hasher.hash_one((enterprise, value)) >> 32) as u32
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

    fn link_address(&self, n: u32) -> Ipv6Addr {
        self.links
            .get(n as usize)
            .copied()
            .unwrap_or(Ipv6Addr::UNSPECIFIED)
    }

    fn link_number(&mut self, link: Ipv6Addr) -> u32 {
        if let Some(&n) = self.link_numbers.get(&link) {
            return n;
        }
        let n = u32::try_from(self.links.len()).unwrap_or(u32::MAX);
        self.links.push(link);
        self.link_numbers.insert(link, n);
        n
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
        self.link_numbers.get(&link).is_some_and(|&n| {
            self.by_link
                .range((n, BindingId(0))..)
                .next()
                .is_some_and(|(l, _)| *l == n)
        })
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
            self.prefixes.values().map(HashTable::len).sum(),
        )
    }

    /// True when there are no bindings.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    /// The binding behind a handle.
    #[must_use]
    pub fn get(&self, id: BindingId) -> Option<BindingRef<'_>> {
        self.bindings
            .get(id.index())
            .map(|slot| BindingRef { store: self, slot })
    }

    /// Every binding, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (BindingId, BindingRef<'_>)> + '_ {
        self.bindings.iter().map(|(i, slot)| {
            (
                BindingId(u32::try_from(i).unwrap_or(u32::MAX)),
                BindingRef { store: self, slot },
            )
        })
    }

    fn hash_bytes(&self, b: &[u8]) -> u64 {
        self.hasher.hash_one(b)
    }

    /// A remote-id's key in its index: 32 bits of its hash (a remote-id is one subscriber's
    /// line, so keys are many and each is checked against the binding on a hit).
    fn hash_remote(&self, enterprise: u32, value: &[u8]) -> u32 {
        remote_key(&self.hasher, enterprise, value)
    }

    fn lease_at(&self, (id, i): LeaseEntry) -> Option<&Lease> {
        self.bindings.get(id as usize)?.leases.get(i as usize)
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

    /// The slot's variable part for a client and its relays, interning the relay-ids; `None`
    /// (nothing interned) when a field is too long for it.
    fn blob(&mut self, client_id: &[u8], relay: Option<&RelayInfo>) -> Option<Box<[u8]>> {
        let empty = RelayInfo::default();
        let r = relay.unwrap_or(&empty);
        let mut out = Vec::with_capacity(
            8 + client_id.len()
                + 4 * r.relay_ids.len()
                + r.remote_ids
                    .iter()
                    .map(|x| 6 + x.remote_id.len())
                    .sum::<usize>()
                + r.relay_message.as_ref().map_or(0, |(_, m)| 16 + m.len()),
        );
        let fits = put_u16(&mut out, client_id.len())
            && u16::try_from(r.relay_ids.len()).is_ok()
            && u16::try_from(r.remote_ids.len()).is_ok()
            && r.remote_ids
                .iter()
                .all(|x| u16::try_from(x.remote_id.len()).is_ok());
        if !fits {
            return None;
        }
        out.extend_from_slice(client_id);
        put_u16(&mut out, r.relay_ids.len());
        for id in &r.relay_ids {
            let n = self.relay_ids.intern(id);
            out.extend_from_slice(&n.to_le_bytes());
        }
        put_u16(&mut out, r.remote_ids.len());
        for x in &r.remote_ids {
            out.extend_from_slice(&x.enterprise_number.to_le_bytes());
            put_u16(&mut out, x.remote_id.len());
            out.extend_from_slice(&x.remote_id);
        }
        match &r.relay_message {
            None => out.push(0),
            Some((from, m)) => match template::split(*from, m) {
                Some(split) if split.holes.iter().all(|h| u16::try_from(h.len()).is_ok()) => {
                    out.push(2);
                    let t = self.templates.intern(&split.body);
                    let place = t as usize;
                    if self.compiled.len() <= place {
                        self.compiled.resize(place + 1, None);
                    }
                    if let Some(c @ None) = self.compiled.get_mut(place) {
                        *c = template::Compiled::of(&split.body);
                    }
                    out.extend_from_slice(&t.to_le_bytes());
                    out.extend_from_slice(&split.peer.octets());
                    for h in &split.holes {
                        put_u16(&mut out, h.len());
                        out.extend_from_slice(h);
                    }
                }
                _ => {
                    out.push(1);
                    out.extend_from_slice(&from.octets());
                    out.extend_from_slice(m);
                }
            },
        }
        Some(out.into_boxed_slice())
    }

    /// Releases the interned relay-ids and template of a blob that is going.
    fn release_blob(&mut self, data: &[u8]) {
        let b = Blob(data);
        for n in b.relay_ids() {
            self.relay_ids.release(n);
        }
        if let Some(RelayMsg::Templated(t, _, _)) = b.relay_message() {
            if self.templates.release(t) {
                if let Some(c) = self.compiled.get_mut(t as usize) {
                    *c = None;
                }
            }
        }
    }

    /// Appends a blob's relayed message to `out`; the address it came from.
    fn message_into(&self, b: Blob<'_>, out: &mut Vec<u8>) -> Option<Ipv6Addr> {
        match b.relay_message()? {
            RelayMsg::Whole(from, m) => {
                out.extend_from_slice(m);
                Some(from)
            }
            RelayMsg::Templated(t, peer, h) => {
                self.compiled
                    .get(t as usize)?
                    .as_ref()?
                    .rebuild(peer, &holes(h), out)
            }
        }
    }

    /// True when the binding's relays are exactly `r`.
    fn same_relay(&self, slot: &Slot, r: &RelayInfo) -> bool {
        let b = Blob(&slot.data);
        let ids_same = b.relay_ids().count() == r.relay_ids.len()
            && b.relay_ids()
                .zip(&r.relay_ids)
                .all(|(n, id)| self.relay_ids.get(n) == &id[..]);
        let remote_same = b.remote_ids().count() == r.remote_ids.len()
            && b.remote_ids()
                .zip(&r.remote_ids)
                .all(|((e, v), x)| e == x.enterprise_number && v == &x.remote_id[..]);
        let message_same = match (b.relay_message(), &r.relay_message) {
            (None, None) => true,
            (Some(RelayMsg::Whole(p, m)), Some((q, n))) => p == *q && m == &n[..],
            (Some(RelayMsg::Templated(..)), Some((q, n))) => {
                let mut m = Vec::with_capacity(n.len());
                self.message_into(b, &mut m) == Some(*q) && m == n[..]
            }
            _ => false,
        };
        ids_same && remote_same && message_same
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
            let Some(data) = self.blob(&change.client_id, change.relay.as_ref()) else {
                tracing::warn!("a change with a DUID or relay field over 65535 octets is not kept");
                return Outcome {
                    applied: Applied::Unchanged,
                    displaced,
                };
            };
            let link = self.link_number(change.link);
            let mut leases = SmallVec::new();
            leases.push(lease);
            let slot = Slot {
                data,
                leases,
                link,
                last_change: now,
                next: NONE,
            };
            let n = match self.bindings.insert(slot) {
                Ok(n) => n,
                Err(slot) => {
                    self.release_blob(&slot.data);
                    return Outcome {
                        applied: Applied::Unchanged,
                        displaced,
                    };
                }
            };
            let id = BindingId(n);
            self.chain_client(id);
            self.index_binding(id);
            self.index_lease(id, 0);
            return Outcome {
                applied: Applied::Updated { id, ended: None },
                displaced,
            };
        };

        let Some(slot) = self.bindings.get(id.index()) else {
            return Outcome {
                applied: Applied::Unchanged,
                displaced,
            };
        };
        let old = slot
            .leases
            .iter()
            .position(|l| l.slot() == lease.slot())
            .and_then(|i| Some((i, *slot.leases.get(i)?)));
        let relay_changed = change
            .relay
            .as_ref()
            .is_some_and(|r| !self.same_relay(slot, r));
        if old.map(|(_, l)| l) == Some(lease) && !relay_changed {
            return Outcome {
                applied: Applied::Unchanged,
                displaced,
            };
        }

        let new_data = if relay_changed {
            let client_id = Blob(&slot.data).client_id().to_vec();
            match self.blob(&client_id, change.relay.as_ref()) {
                Some(d) => Some(d),
                None => {
                    return Outcome {
                        applied: Applied::Unchanged,
                        displaced,
                    };
                }
            }
        } else {
            None
        };
        if new_data.is_some() {
            self.unindex_relays(id);
        }
        if let Some((i, _)) = old {
            self.unindex_lease(id, i);
        }
        let Some(slot) = self.bindings.get_mut(id.index()) else {
            return Outcome {
                applied: Applied::Unchanged,
                displaced,
            };
        };
        let before = slot.last_change;
        let at = match old {
            Some((i, _)) => {
                if let Some(l) = slot.leases.get_mut(i) {
                    *l = lease;
                }
                i
            }
            None => {
                slot.leases.push(lease);
                slot.leases.len() - 1
            }
        };
        slot.last_change = now;
        let old_data = new_data.map(|d| std::mem::replace(&mut slot.data, d));
        self.by_change.remove(&(before, id));
        self.by_change.insert((now, id));
        if let Some(old_data) = old_data {
            self.release_blob(&old_data);
            self.index_binding_relays(id);
        }
        self.index_lease(id, at);
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
        lease_slot: (LeaseKind, Ipv6Addr, u8),
        state: LeaseState,
        now: ServerTime,
    ) -> Option<Applied> {
        let slot = self.bindings.get(id.index())?;
        let pos = slot.leases.iter().position(|l| l.slot() == lease_slot)?;
        let old = *slot.leases.get(pos)?;
        let (count, changed) = (slot.leases.len(), slot.last_change);
        let ended = ended_copy(&old, state);
        if count == 1 {
            let mut gone = self.get(id)?.to_binding();
            self.unindex_lease(id, pos);
            self.unindex_relays(id);
            let link = self.bindings.get(id.index()).map_or(0, |s| s.link);
            self.by_link.remove(&(link, id));
            self.by_change.remove(&(changed, id));
            self.unchain_client(id);
            if let Some(slot) = self.bindings.remove(id.index()) {
                self.release_blob(&slot.data);
            }
            if let Some(l) = gone.leases.first_mut() {
                *l = ended;
            }
            gone.last_change = now;
            return Some(Applied::Removed(gone));
        }
        self.unindex_lease(id, pos);
        // The leases after it move down one place: their table entries follow.
        for i in pos + 1..count {
            self.renumber_lease(id, i, i - 1);
        }
        self.by_change.remove(&(changed, id));
        let slot = self.bindings.get_mut(id.index())?;
        slot.leases.remove(pos);
        slot.last_change = now;
        self.by_change.insert((now, id));
        Some(Applied::Updated {
            id,
            ended: Some(ended),
        })
    }

    /// The table a lease is filed in, and its hash there.
    fn lease_table(&mut self, lease: &Lease) -> (&mut HashTable<LeaseEntry>, u64) {
        let h = lease_hash(&self.hasher, lease);
        match lease.kind {
            LeaseKind::Address => (&mut self.addresses, h),
            LeaseKind::Prefix => (self.prefixes.entry(lease.prefix_len).or_default(), h),
        }
    }

    /// The lease at position `from` of binding `id` is now at `to`.
    fn renumber_lease(&mut self, id: BindingId, from: usize, to: usize) {
        let Some(lease) = self.lease_at((id.0, from as u32)).copied() else {
            return;
        };
        let (table, h) = self.lease_table(&lease);
        if let Ok(mut e) = table.find_entry(h, |&(b, i)| b == id.0 && i as usize == from) {
            e.get_mut().1 = u32::try_from(to).unwrap_or(u32::MAX);
        }
    }

    /// The binding holding this lease's address or prefix, if any.
    fn holder(&self, lease: &Lease) -> Option<BindingId> {
        match lease.kind {
            LeaseKind::Address => self.address_holder(lease.address),
            LeaseKind::Prefix => {
                let table = self.prefixes.get(&lease.prefix_len)?;
                self.prefix_holder(
                    table,
                    lease.prefix_len,
                    masked(lease.address, lease.prefix_len),
                )
            }
        }
    }

    fn address_holder(&self, addr: Ipv6Addr) -> Option<BindingId> {
        let h = self.hasher.hash_one(u128::from(addr));
        self.addresses
            .find(h, |&e| {
                self.lease_at(e)
                    .is_some_and(|l| l.kind == LeaseKind::Address && l.address == addr)
            })
            .map(|&(b, _)| BindingId(b))
    }

    fn prefix_holder(
        &self,
        table: &HashTable<LeaseEntry>,
        len: u8,
        key: u128,
    ) -> Option<BindingId> {
        let h = self.hasher.hash_one(key);
        table
            .find(h, |&e| {
                self.lease_at(e).is_some_and(|l| {
                    l.kind == LeaseKind::Prefix
                        && l.prefix_len == len
                        && masked(l.address, len) == key
                })
            })
            .map(|&(b, _)| BindingId(b))
    }

    /// Indexes the lease at position `at` of binding `id`, already in place.
    fn index_lease(&mut self, id: BindingId, at: usize) {
        let Some(lease) = self.lease_at((id.0, at as u32)).copied() else {
            return;
        };
        let entry = (id.0, u32::try_from(at).unwrap_or(u32::MAX));
        let Self {
            bindings,
            hasher,
            addresses,
            prefixes,
            ..
        } = self;
        file_lease(bindings, hasher, addresses, prefixes, entry, &lease);
        if let Some(t) = lease.expires() {
            self.expiries.insert((t, id));
        }
    }

    /// Removes the table entry of the lease at position `at` of binding `id`, still in place,
    /// and its expiry unless another lease of the binding expires at the same time.
    fn unindex_lease(&mut self, id: BindingId, at: usize) {
        let Some(lease) = self.lease_at((id.0, at as u32)).copied() else {
            return;
        };
        let (table, h) = self.lease_table(&lease);
        if let Ok(e) = table.find_entry(h, |&(b, i)| b == id.0 && i as usize == at) {
            e.remove();
        }
        if lease.kind == LeaseKind::Prefix
            && self
                .prefixes
                .get(&lease.prefix_len)
                .is_some_and(HashTable::is_empty)
        {
            self.prefixes.remove(&lease.prefix_len);
        }
        if let Some(t) = lease.expires() {
            let shared = self.bindings.get(id.index()).is_some_and(|s| {
                s.leases
                    .iter()
                    .enumerate()
                    .any(|(i, l)| i != at && l.expires() == Some(t))
            });
            if !shared {
                self.expiries.remove(&(t, id));
            }
        }
    }

    /// Puts a new binding into its client's chain, in link order.
    fn chain_client(&mut self, id: BindingId) {
        let Some(slot) = self.bindings.get(id.index()) else {
            return;
        };
        let client_id = Blob(&slot.data).client_id().to_vec();
        let link = self.link_address(slot.link);
        let h = self.hash_bytes(&client_id);
        let Some(head) = self.client_head(&client_id) else {
            let Self {
                bindings,
                hasher,
                clients,
                ..
            } = self;
            clients.insert_unique(h, id.0, |&e| {
                bindings
                    .get(e as usize)
                    .map_or(0, |s| hasher.hash_one(Blob(&s.data).client_id()))
            });
            return;
        };
        // The binding goes before the first of the chain on a later link.
        let (mut prev, mut at) = (NONE, head);
        while let Some(s) = self.bindings.get(at as usize) {
            if link < self.link_address(s.link) {
                break;
            }
            prev = at;
            at = s.next;
        }
        if let Some(s) = self.bindings.get_mut(id.index()) {
            s.next = at;
        }
        if prev == NONE {
            if let Ok(mut e) = self.clients.find_entry(h, |&e| e == head) {
                *e.get_mut() = id.0;
            }
        } else if let Some(s) = self.bindings.get_mut(prev as usize) {
            s.next = id.0;
        }
    }

    /// Takes a binding that is going out of its client's chain.
    fn unchain_client(&mut self, id: BindingId) {
        let Some(slot) = self.bindings.get(id.index()) else {
            return;
        };
        let next = slot.next;
        let client_id = Blob(&slot.data).client_id().to_vec();
        let h = self.hash_bytes(&client_id);
        if let Ok(mut e) = self.clients.find_entry(h, |&e| e == id.0) {
            if next == NONE {
                e.remove();
            } else {
                *e.get_mut() = next;
            }
            return;
        }
        let mut at = self.client_head(&client_id).unwrap_or(NONE);
        while let Some(s) = self.bindings.get(at as usize) {
            if s.next == id.0 {
                if let Some(s) = self.bindings.get_mut(at as usize) {
                    s.next = next;
                }
                return;
            }
            at = s.next;
        }
    }

    /// Indexes a new binding's link, relays and change time.
    fn index_binding(&mut self, id: BindingId) {
        let Some(s) = self.bindings.get(id.index()) else {
            return;
        };
        self.by_link.insert((s.link, id));
        self.by_change.insert((s.last_change, id));
        self.index_binding_relays(id);
    }

    fn index_binding_relays(&mut self, id: BindingId) {
        let Some(s) = self.bindings.get(id.index()) else {
            return;
        };
        let b = Blob(&s.data);
        for n in b.relay_ids() {
            self.by_relay_id.insert((n, id));
        }
        let remote: Vec<u32> = b
            .remote_ids()
            .map(|(e, v)| self.hash_remote(e, v))
            .collect();
        for h in remote {
            self.by_remote_id.insert((h, id));
        }
    }

    /// Removes a binding's relay-id and remote-id entries.
    fn unindex_relays(&mut self, id: BindingId) {
        let Some(s) = self.bindings.get(id.index()) else {
            return;
        };
        let b = Blob(&s.data);
        let relay: Vec<u32> = b.relay_ids().collect();
        let remote: Vec<u32> = b
            .remote_ids()
            .map(|(e, v)| self.hash_remote(e, v))
            .collect();
        for n in relay {
            self.by_relay_id.remove(&(n, id));
        }
        for h in remote {
            self.by_remote_id.remove(&(h, id));
        }
    }

    // ---- queries -------------------------------------------------------------------------

    /// QUERY_BY_ADDRESS: the binding that leases `addr`, or holds a delegated prefix that
    /// contains it (decision D16).
    #[must_use]
    pub fn by_address(&self, addr: Ipv6Addr) -> Option<BindingId> {
        if let Some(id) = self.address_holder(addr) {
            return Some(id);
        }
        // Longest prefix first, should delegations ever nest.
        self.prefixes
            .iter()
            .rev()
            .find_map(|(len, t)| self.prefix_holder(t, *len, masked(addr, *len)))
    }

    /// The bindings holding `key` now, a key of one binding
    /// ([`PostingKey::of_binding`]): the client's bindings on every link, those whose relays
    /// sent the Remote-ID, the holder of the address or of exactly that prefix. None for a
    /// link or a Relay-ID.
    pub fn holders(&self, key: &PostingKey, mut each: impl FnMut(BindingId)) {
        match key {
            PostingKey::ClientId(d) => self.by_client(d).for_each(each),
            PostingKey::RemoteId(r) => self.by_remote_id(r, None).for_each(each),
            PostingKey::Lease(p, len) => {
                if *len == 128 {
                    if let Some(id) = self.address_holder(*p) {
                        each(id);
                    }
                }
                let id = self
                    .prefixes
                    .get(len)
                    .and_then(|t| self.prefix_holder(t, *len, masked(*p, *len)));
                if let Some(id) = id {
                    each(id);
                }
            }
            PostingKey::Link(_) | PostingKey::RelayId(_) => {}
        }
    }

    /// The first binding of a client, in link order.
    fn client_head(&self, client_id: &[u8]) -> Option<u32> {
        let h = self.hash_bytes(client_id);
        self.clients
            .find(h, |&e| {
                self.bindings
                    .get(e as usize)
                    .is_some_and(|s| Blob(&s.data).client_id() == client_id)
            })
            .copied()
    }

    /// QUERY_BY_CLIENTID on one link.
    #[must_use]
    pub fn by_client_link(&self, client_id: &[u8], link: Ipv6Addr) -> Option<BindingId> {
        let n = *self.link_numbers.get(&link)?;
        self.by_client(client_id)
            .find(|id| self.bindings.get(id.index()).is_some_and(|s| s.link == n))
    }

    /// QUERY_BY_CLIENTID on every link: the client's bindings, ordered by link.
    pub fn by_client<'s>(&'s self, client_id: &[u8]) -> impl Iterator<Item = BindingId> + 's {
        let mut at = self.client_head(client_id).unwrap_or(NONE);
        std::iter::from_fn(move || {
            if at == NONE {
                return None;
            }
            let id = BindingId(at);
            at = self.bindings.get(at as usize).map_or(NONE, |s| s.next);
            Some(id)
        })
    }

    /// QUERY_BY_LINK_ADDRESS: the bindings on `link`, after `after` (a Bulk cursor resumes
    /// from the last binding it sent).
    pub fn by_link(
        &self,
        link: Ipv6Addr,
        after: Option<BindingId>,
    ) -> impl Iterator<Item = BindingId> + '_ {
        let n = self.link_numbers.get(&link).copied();
        let start = match after {
            Some(id) => Bound::Excluded((n.unwrap_or(NONE), id)),
            None => Bound::Included((n.unwrap_or(NONE), BindingId(0))),
        };
        self.by_link
            .range((start, Bound::Unbounded))
            .take_while(move |(l, _)| Some(*l) == n)
            .map(|(_, id)| *id)
    }

    /// QUERY_BY_RELAY_ID: the bindings any of whose relays sent this Relay-ID, after `after`.
    pub fn by_relay_id<'s>(
        &'s self,
        relay_id: &[u8],
        after: Option<BindingId>,
    ) -> impl Iterator<Item = BindingId> + 's {
        let n = self.relay_ids.number(relay_id);
        let start = match after {
            Some(id) => Bound::Excluded((n.unwrap_or(NONE), id)),
            None => Bound::Included((n.unwrap_or(NONE), BindingId(0))),
        };
        self.by_relay_id
            .range((start, Bound::Unbounded))
            .take_while(move |(r, _)| Some(*r) == n)
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
        let h = self.hash_remote(key.enterprise_number, &key.remote_id);
        let start = match after {
            Some(id) => Bound::Excluded((h, id)),
            None => Bound::Included((h, BindingId(0))),
        };
        self.by_remote_id
            .range((start, Bound::Unbounded))
            .take_while(move |(r, _)| *r == h)
            .map(|(_, id)| *id)
            .filter(move |id| self.get(*id).is_some_and(|b| b.has_remote_id(&key)))
    }

    /// Every link that has bindings, in order.
    pub fn links(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        let mut links: Vec<Ipv6Addr> = self
            .links
            .iter()
            .copied()
            .filter(|l| self.has_link(*l))
            .collect();
        links.sort_unstable();
        links.into_iter()
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
            Some(t) => Bound::Included((t, BindingId(u32::MAX))),
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
        let hi = Bound::Included((now, BindingId(u32::MAX)));
        let mut out = Vec::new();
        for (t, id) in self.expiries.range((Bound::Unbounded, hi)) {
            let Some(b) = self.get(*id) else {
                continue;
            };
            for lease in b.leases().iter().filter(|l| l.expires() == Some(*t)) {
                out.push(Change {
                    client_id: b.client_id().into(),
                    link: b.link(),
                    lease: Lease {
                        state: LeaseState::Expired,
                        ..*lease
                    },
                    relay: None,
                });
            }
        }
        out
    }

    /// The relay information of a binding.
    #[must_use]
    pub fn relay(&self, id: BindingId) -> Option<RelayInfo> {
        self.get(id).map(|b| b.relay())
    }
}

// ---- snapshot (D43) ----------------------------------------------------------------------

impl Store {
    /// Writes the bindings into a snapshot: the links and relay-ids by number, then each slot
    /// in [`iter`](Self::iter)'s order (its leases and its variable part, opaque). The indexes
    /// are not written: [`load_snapshot`](Self::load_snapshot) rebuilds them.
    pub(crate) fn save_snapshot<W: Write>(&self, w: &mut snapshot::Writer<W>) -> io::Result<()> {
        w.len32(self.links.len())?;
        for a in &self.links {
            w.addr(*a)?;
        }
        w.len32(self.relay_ids.values.len())?;
        for (value, refs) in &self.relay_ids.values {
            w.u8(u8::from(*refs > 0))?;
            if *refs > 0 {
                w.blob(value)?;
            }
        }
        // The relay templates (D44), each a body the bindings' relayed messages name.
        w.len32(self.templates.values.len())?;
        for (value, refs) in &self.templates.values {
            w.u8(u8::from(*refs > 0))?;
            if *refs > 0 {
                w.blob(value)?;
            }
        }
        w.u64(self.bindings.len() as u64)?;
        for (_, slot) in self.bindings.iter() {
            w.u32(slot.link)?;
            w.u32(slot.last_change.0)?;
            let n = u8::try_from(slot.leases.len())
                .map_err(|_| io::Error::other("a binding with over 255 leases"))?;
            w.u8(n)?;
            for l in &slot.leases {
                w.lease(l)?;
            }
            w.blob(&slot.data)?;
        }
        Ok(())
    }

    /// The store a snapshot holds, filing changes from now on under `link_map`; its bindings
    /// numbered in the order they were written, from 0. Every number and length is checked.
    /// Its indexes are empty until [`rebuild_indexes`](Self::rebuild_indexes) (which another
    /// thread may run while the rest of the snapshot is read).
    pub(crate) fn load_snapshot<R: Read>(
        link_map: LinkMap,
        r: &mut snapshot::Reader<R>,
    ) -> Result<Self, SnapshotError> {
        let mut store = Self::with_links(link_map);
        let links = r.count32(16)?;
        store.links.reserve_exact(links);
        for n in 0..links {
            let a = r.addr()?;
            let n = u32::try_from(n).map_err(|_| damaged("too many links"))?;
            if store.link_numbers.insert(a, n).is_some() {
                return Err(damaged(format!("link {a} twice")));
            }
            store.links.push(a);
        }
        let relays = r.count32(1)?;
        let mut present = Vec::with_capacity(relays);
        store.relay_ids.values.reserve_exact(relays);
        for n in 0..relays {
            let n = u32::try_from(n).map_err(|_| damaged("too many relay-ids"))?;
            let value = if r.flag()? {
                let v = r.blob()?;
                if store.relay_ids.numbers.insert(v.clone(), n).is_some() {
                    return Err(damaged("a relay-id twice"));
                }
                present.push(true);
                v
            } else {
                present.push(false);
                Box::default()
            };
            store.relay_ids.values.push((value, 0));
        }
        let templates = r.count32(1)?;
        let mut compiled = Vec::with_capacity(templates);
        store.templates.values.reserve_exact(templates);
        for n in 0..templates {
            let n = u32::try_from(n).map_err(|_| damaged("too many relay templates"))?;
            let value = if r.flag()? {
                let v = r.blob()?;
                let c = template::Compiled::of(&v)
                    .ok_or_else(|| damaged("a relay template that does not read"))?;
                if store.templates.numbers.insert(v.clone(), n).is_some() {
                    return Err(damaged("a relay template twice"));
                }
                compiled.push(Some(c));
                v
            } else {
                compiled.push(None);
                Box::default()
            };
            store.templates.values.push((value, 0));
        }
        let count = r.count64(4 + 4 + 1 + snapshot::LEASE_LEN as u64 + 4)?;
        if count > (u32::MAX as usize).saturating_sub(PAGE) {
            return Err(damaged(format!("{count} bindings")));
        }
        for _ in 0..count {
            let link = r.u32()?;
            if link as usize >= store.links.len() {
                return Err(damaged(format!("a binding on link number {link}")));
            }
            let last_change = ServerTime(r.u32()?);
            let n = r.u8()?;
            if n == 0 {
                return Err(damaged("a binding without a lease"));
            }
            let mut leases = SmallVec::with_capacity(usize::from(n));
            for _ in 0..n {
                let l = r.lease()?;
                if !l.state.is_active() {
                    return Err(damaged("a binding holding an ended lease"));
                }
                leases.push(l);
            }
            let data = r.blob()?;
            let known = |n: u32| present.get(n as usize).copied().unwrap_or(false);
            let template = |n: u32| compiled.get(n as usize).is_some_and(Option::is_some);
            if !Blob(&data).valid(known, template) {
                return Err(damaged("a binding's variable part"));
            }
            for n in Blob(&data).relay_ids() {
                if let Some((_, refs)) = store.relay_ids.values.get_mut(n as usize) {
                    *refs = refs.saturating_add(1);
                }
            }
            if let Some(RelayMsg::Templated(t, _, _)) = Blob(&data).relay_message() {
                if let Some((_, refs)) = store.templates.values.get_mut(t as usize) {
                    *refs = refs.saturating_add(1);
                }
            }
            let slot = Slot {
                data,
                leases,
                link,
                last_change,
                next: NONE,
            };
            if store.bindings.insert(slot).is_err() {
                return Err(damaged("too many bindings"));
            }
        }
        // A relay-id no binding names is free again.
        for (n, (value, refs)) in store.relay_ids.values.iter_mut().enumerate() {
            if *refs == 0 {
                let value = std::mem::take(value);
                store.relay_ids.numbers.remove(&value);
                store
                    .relay_ids
                    .free
                    .push(u32::try_from(n).unwrap_or(u32::MAX));
            }
        }
        store.relay_ids.free.reverse();
        // Likewise a template no binding names.
        for (n, (value, refs)) in store.templates.values.iter_mut().enumerate() {
            if *refs == 0 {
                let value = std::mem::take(value);
                store.templates.numbers.remove(&value);
                store
                    .templates
                    .free
                    .push(u32::try_from(n).unwrap_or(u32::MAX));
                if let Some(c) = compiled.get_mut(n) {
                    *c = None;
                }
            }
        }
        store.templates.free.reverse();
        store.compiled = compiled;
        Ok(store)
    }

    /// Builds every index from the slots: the hash tables reserved once, the B-trees in bulk
    /// from their entries sorted.
    pub(crate) fn rebuild_indexes(&mut self) {
        let n = self.bindings.len();
        let mut by_link = Vec::with_capacity(n);
        let mut by_change = Vec::with_capacity(n);
        let mut by_relay_id = Vec::with_capacity(n);
        let mut by_remote_id = Vec::with_capacity(n);
        let mut expiries = Vec::with_capacity(n);
        {
            let Self {
                bindings,
                hasher,
                addresses,
                prefixes,
                ..
            } = self;
            let rehash = entry_hash(bindings, hasher);
            addresses.reserve(n, &rehash);
            // Each prefix length's table at its size at once (no rehash as it grows).
            let mut per_len = [0usize; 129];
            for (_, slot) in bindings.iter() {
                for l in slot.leases.iter().filter(|l| l.kind == LeaseKind::Prefix) {
                    if let Some(c) = per_len.get_mut(usize::from(l.prefix_len)) {
                        *c += 1;
                    }
                }
            }
            for (len, &count) in per_len.iter().enumerate() {
                if let (Ok(len), true) = (u8::try_from(len), count > 0) {
                    prefixes.entry(len).or_default().reserve(count, &rehash);
                }
            }
            for (i, slot) in bindings.iter() {
                let id = BindingId(u32::try_from(i).unwrap_or(u32::MAX));
                by_link.push((slot.link, id));
                by_change.push((slot.last_change, id));
                let b = Blob(&slot.data);
                by_relay_id.extend(b.relay_ids().map(|r| (r, id)));
                by_remote_id.extend(b.remote_ids().map(|(e, v)| (remote_key(hasher, e, v), id)));
                for (at, lease) in slot.leases.iter().enumerate() {
                    let entry = (id.0, u32::try_from(at).unwrap_or(u32::MAX));
                    file_lease(bindings, hasher, addresses, prefixes, entry, lease);
                    if let Some(t) = lease.expires() {
                        expiries.push((t, id));
                    }
                }
            }
        }
        // Sorted in place first: the B-tree's own (stable) sort then finds one run.
        by_link.sort_unstable();
        by_change.sort_unstable();
        by_relay_id.sort_unstable();
        by_remote_id.sort_unstable();
        expiries.sort_unstable();
        self.by_link = BTreeSet::from_iter(by_link);
        self.by_change = BTreeSet::from_iter(by_change);
        self.by_relay_id = BTreeSet::from_iter(by_relay_id);
        self.by_remote_id = BTreeSet::from_iter(by_remote_id);
        self.expiries = BTreeSet::from_iter(expiries);
        let Self {
            bindings,
            hasher,
            clients,
            ..
        } = self;
        clients.reserve(n, |&e| {
            bindings
                .get(e as usize)
                .map_or(0, |s| hasher.hash_one(Blob(&s.data).client_id()))
        });
        for i in 0..n {
            let id = BindingId(u32::try_from(i).unwrap_or(u32::MAX));
            // The client's first binding, found or filed in one probe without copying its DUID;
            // a client's second binding goes into its chain (as `chain_client`).
            let second = {
                let Self {
                    bindings,
                    hasher,
                    clients,
                    ..
                } = &mut *self;
                let Some(client_id) = bindings.get(i).map(|s| Blob(&s.data).client_id()) else {
                    continue;
                };
                let entry = clients.entry(
                    hasher.hash_one(client_id),
                    |&e| {
                        bindings
                            .get(e as usize)
                            .is_some_and(|o| Blob(&o.data).client_id() == client_id)
                    },
                    |&e| {
                        bindings
                            .get(e as usize)
                            .map_or(0, |s| hasher.hash_one(Blob(&s.data).client_id()))
                    },
                );
                match entry {
                    hashbrown::hash_table::Entry::Occupied(_) => true,
                    hashbrown::hash_table::Entry::Vacant(v) => {
                        v.insert(id.0);
                        false
                    }
                }
            };
            if second {
                self.chain_client(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(n: u8) -> Slot {
        Slot {
            data: vec![n].into_boxed_slice(),
            leases: SmallVec::new(),
            link: 0,
            last_change: ServerTime(0),
            next: NONE,
        }
    }

    /// A change of client `n` behind the access relay of `port`, relayed as a carrier's relay
    /// sends it (the remote-id's per-line part after the `/`).
    fn relayed(n: u8, port: &str, message_whole: bool) -> Change {
        use crate::codec::{BuildOptions, MessageBuilder, MessageType};
        let link: Ipv6Addr = "2001:db8:0:1::1".parse().unwrap();
        let peer = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, u16::from(n));
        let remote = format!("ge-0/{port}/{n}").into_bytes();
        let mut m = MessageBuilder::relay(MessageType::RelayForw, 0, link, peer)
            .remote_id(9, &remote)
            .relay_id(&[0, 2, 0, 0, 0, 9, 1])
            .build()
            .unwrap();
        if message_whole {
            // Not a chain the split rebuilds octet for octet: kept whole.
            m.push(0);
        }
        Change {
            client_id: vec![0, 3, 0, 1, n].into(),
            link,
            lease: Lease {
                kind: LeaseKind::Address,
                address: Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, u16::from(n)),
                prefix_len: 128,
                iaid: 1,
                preferred_lifetime: 3600,
                valid_lifetime: 7200,
                cltt: ServerTime(100),
                state: LeaseState::Active,
            },
            relay: Some(RelayInfo {
                relay_ids: vec![vec![0, 2, 0, 0, 0, 9, 1].into()],
                remote_ids: vec![RemoteIdKey {
                    enterprise_number: 9,
                    remote_id: remote.into(),
                }],
                relay_message: Some(("2001:db8:ffff::1".parse().unwrap(), m.into())),
            }),
        }
    }

    /// Issue 19: bindings behind the same relays keep one relay template and their holes; the
    /// message comes back octet for octet, an identical re-send changes nothing, a message the
    /// split cannot rebuild is kept whole, and the template goes with its last binding.
    #[test]
    fn relayed_messages_are_kept_as_a_shared_template_and_holes() {
        let mut store = Store::new();
        let changes: Vec<Change> = (1..=20u8)
            .map(|n| relayed(n, if n % 2 == 0 { "0" } else { "1" }, n == 20))
            .collect();
        let mut ids = Vec::new();
        for c in &changes {
            let Applied::Updated { id, .. } = store.apply(c, ServerTime(100)).applied else {
                panic!("not kept: {c:?}");
            };
            ids.push(id);
        }
        // One chain for all: the per-line parts are holes, so one template.
        assert_eq!(store.templates.numbers.len(), 1);
        for (c, id) in changes.iter().zip(&ids) {
            let b = store.get(*id).unwrap();
            let mut m = Vec::new();
            let from = b.relay_message_into(&mut m);
            let (want_from, want) = c.relay.as_ref().unwrap().relay_message.clone().unwrap();
            assert_eq!((from, &m[..]), (Some(want_from), &want[..]));
            let kept = Blob(&store.bindings.get(id.index()).unwrap().data).relay_message();
            let whole = c.client_id[4] == 20;
            assert_eq!(matches!(kept, Some(RelayMsg::Whole(..))), whole);
            assert!(
                whole || b.slot.data.len() < 60,
                "{} octets",
                b.slot.data.len()
            );
            assert_eq!(b.to_binding().relay, *c.relay.as_ref().unwrap());
            assert_eq!(
                store.apply(c, ServerTime(101)).applied,
                Applied::Unchanged,
                "an identical re-send"
            );
        }
        for c in &changes {
            let end = Change {
                lease: Lease {
                    state: LeaseState::Released,
                    ..c.lease
                },
                ..c.clone()
            };
            store.apply(&end, ServerTime(102));
        }
        assert!(store.is_empty());
        assert!(store.templates.numbers.is_empty() && store.relay_ids.numbers.is_empty());
        assert!(
            store.compiled.iter().all(Option::is_none),
            "compiled forms freed"
        );
    }

    /// Slots grow a page at a time, reuse the place freed last, and iterate in place order.
    #[test]
    fn slots_grow_by_pages_and_reuse_freed_places() {
        let mut s = Slots::default();
        for i in 0..PAGE + 2 {
            assert_eq!(s.insert(slot(i as u8)).ok(), Some(i as u32));
        }
        assert_eq!((s.len(), s.pages.len()), (PAGE + 2, 2));
        assert_eq!(s.remove(3).map(|x| x.data[0]), Some(3));
        assert!(s.remove(3).is_none() && s.get(3).is_none());
        assert_eq!(
            s.remove(PAGE + 1).map(|x| x.data[0]),
            Some((PAGE + 1) as u8)
        );
        assert_eq!(s.len(), PAGE);
        assert_eq!(s.insert(slot(200)).ok(), Some((PAGE + 1) as u32));
        assert_eq!(s.insert(slot(201)).ok(), Some(3));
        assert_eq!(s.get(3).map(|x| x.data[0]), Some(201));
        let order: Vec<usize> = s.iter().map(|(i, _)| i).take(5).collect();
        assert_eq!(order, vec![0, 1, 2, 3, 4]);
        assert_eq!(s.iter().count(), PAGE + 2);
        assert!(s.get(2 * PAGE).is_none() && s.get_mut(usize::MAX).is_none());
    }
}
