//! Per-key lists of journal records, beside the ring: what a filtered Active query reads.
//!
//! Every record of the journal is filed, by sequence number, under each key its binding
//! carries: its link, its client's DUID, each relay-id and remote-id its relays sent, and each
//! address or delegated prefix it holds or just ended. An Active query filtering on one of
//! these reads only its key's list, so a change costs the queries it concerns, and a
//! filtered catch-up the records that match, not the whole ring (issue 12; architecture, core
//! idea 3).
//!
//! The lists hold sequence numbers only; the journal's dense index turns one into the
//! record ([`Journal::cursor_at`](super::journal::Journal::cursor_at)). They follow the ring:
//! when it evicts a record, the record's entries leave the front of their lists, in the same
//! order they were filed (the keys of each record are kept, in order, for exactly that). A
//! list remembers the newest sequence number it lost that way, so a query still behind it
//! knows it missed a record of its key (DataMissing) rather than records of other keys.
//!
//! An emptied list is kept until [`Postings::forget_emptied`] is told its key is not
//! watched, so that a watched key's loss mark survives.
//!
//! Memory: a record files about five keys, 4 octets each to remember them and 8 in a list:
//! about 60 octets a record, bounded by the ring; and each key once, with its list (about 80
//! octets, and the key's own octets for a DUID or a remote-id).

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::io::{self, Read, Write};
use std::net::Ipv6Addr;

use hashbrown::HashTable;

use super::model::{Binding, Lease, LeaseKind, RemoteIdKey};
use super::snapshot::{self, SnapshotError, damaged};

/// What a record is filed under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PostingKey {
    /// The binding's link (its canonical link-address).
    Link(Ipv6Addr),
    /// The client's DUID.
    ClientId(Box<[u8]>),
    /// A relay's DUID (OPTION_RELAY_ID).
    RelayId(Box<[u8]>),
    /// A relay's Remote-ID (OPTION_REMOTE_ID).
    RemoteId(RemoteIdKey),
    /// An address (length 128) or delegated prefix the binding holds or has just ended, with
    /// the host bits cleared.
    Lease(Ipv6Addr, u8),
}

impl PostingKey {
    /// The lease key of `address` inside a prefix of length `len`.
    #[must_use]
    pub fn lease(address: Ipv6Addr, len: u8) -> Self {
        let len = len.min(128);
        let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
        Self::Lease(Ipv6Addr::from(u128::from(address) & mask), len)
    }

    /// Every key a binding's record is filed under (each once).
    pub fn of(binding: &Binding, mut each: impl FnMut(Self)) {
        /// True for the first of equal items.
        fn first<T: PartialEq>(items: &[T], i: usize) -> bool {
            items
                .get(..i)
                .is_none_or(|before| items.get(i).is_none_or(|x| !before.contains(x)))
        }
        each(Self::Link(binding.key.link));
        each(Self::ClientId(binding.key.client_id.clone()));
        let relay = &binding.relay;
        for (i, r) in relay.relay_ids.iter().enumerate() {
            if first(&relay.relay_ids, i) {
                each(Self::RelayId(r.clone()));
            }
        }
        for (i, r) in relay.remote_ids.iter().enumerate() {
            if first(&relay.remote_ids, i) {
                each(Self::RemoteId(r.clone()));
            }
        }
        let leases: smallvec::SmallVec<[Self; 4]> =
            binding.leases.iter().map(Self::of_lease).collect();
        for (i, key) in leases.iter().enumerate() {
            if first(&leases, i) {
                each(key.clone());
            }
        }
    }

    /// The key of a lease: its address, or its prefix at its length.
    fn of_lease(l: &Lease) -> Self {
        match l.kind {
            LeaseKind::Address => Self::lease(l.address, 128),
            LeaseKind::Prefix => Self::lease(l.address, l.prefix_len),
        }
    }
}

/// One key's sequence numbers, oldest first: up to two inline (most keys, a client's or an
/// address's, have one or two records in the ring), more in a deque.
#[derive(Debug)]
enum Seqs {
    Few(u8, [u64; 2]),
    Many(VecDeque<u64>),
}

impl Seqs {
    fn len(&self) -> usize {
        match self {
            Self::Few(n, _) => usize::from(*n),
            Self::Many(d) => d.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, i: usize) -> Option<u64> {
        match self {
            Self::Few(n, s) => s.get(..usize::from(*n))?.get(i).copied(),
            Self::Many(d) => d.get(i).copied(),
        }
    }

    fn front(&self) -> Option<u64> {
        self.get(0)
    }

    fn push_back(&mut self, seq: u64) {
        match self {
            Self::Few(n, s) if usize::from(*n) < s.len() => {
                if let Some(slot) = s.get_mut(usize::from(*n)) {
                    *slot = seq;
                }
                *n += 1;
            }
            Self::Few(n, s) => {
                let mut d = VecDeque::with_capacity(4);
                d.extend(s.iter().take(usize::from(*n)).copied());
                d.push_back(seq);
                *self = Self::Many(d);
            }
            Self::Many(d) => d.push_back(seq),
        }
    }

    fn pop_front(&mut self) {
        match self {
            Self::Few(n, s) => {
                if *n > 0 {
                    s[0] = s[1];
                    *n -= 1;
                }
            }
            Self::Many(d) => {
                d.pop_front();
                if d.len() <= 2 {
                    let mut few = [0; 2];
                    for (slot, v) in few.iter_mut().zip(d.iter()) {
                        *slot = *v;
                    }
                    *self = Self::Few(d.len() as u8, few);
                }
            }
        }
    }

    /// The position of the first at or after `seq`.
    fn partition_point(&self, seq: u64) -> usize {
        match self {
            Self::Few(n, s) => s
                .get(..usize::from(*n))
                .map_or(0, |s| s.partition_point(|&x| x < seq)),
            Self::Many(d) => d.partition_point(|&x| x < seq),
        }
    }
}

/// One key's records.
#[derive(Debug)]
struct List {
    key: PostingKey,
    seqs: Seqs,
    /// The newest sequence number evicted from this list, plus one (0: none).
    lost: u64,
}

/// The per-key lists of every record in the ring.
///
/// Memory (issue 19): a key is kept once, in its list; the table finding a key's list holds
/// only the list's number (and compares the key it is asked for with the list's own); a list of
/// one or two records needs no allocation of its own.
#[derive(Debug, Default)]
pub struct Postings {
    hasher: RandomState,
    ids: HashTable<u32>,
    lists: Vec<Option<List>>,
    free: Vec<u32>,
    /// The key ids of each record still in the ring, in sequence order, and how many each
    /// record has.
    filed: VecDeque<u32>,
    counts: VecDeque<u8>,
    /// The sequence number of `counts[0]` (of the next record when `counts` is empty).
    first: u64,
    /// Lists emptied by eviction, to be dropped unless watched.
    emptied: Vec<u32>,
    /// The delegated prefix lengths ever filed (bit `len`), for address queries.
    prefix_lens: [u64; 3],
}

impl Postings {
    /// Empty lists whose first record will be `first`.
    #[must_use]
    pub fn new(first: u64) -> Self {
        Self {
            first,
            ..Self::default()
        }
    }

    /// Files record `seq` (the next one: records are filed in order, each once) under the
    /// keys of `binding`, or under none when its payload could not be read.
    pub fn file(&mut self, seq: u64, binding: Option<&Binding>) {
        let expected = self.first.saturating_add(self.counts.len() as u64);
        if seq != expected {
            // Only when the journal was replaced under the history: start over from here.
            *self = Self {
                prefix_lens: self.prefix_lens,
                hasher: self.hasher.clone(),
                ..Self::new(seq)
            };
        }
        let mut count = 0u8;
        if let Some(b) = binding {
            PostingKey::of(b, |key| {
                if count == u8::MAX {
                    return;
                }
                if let PostingKey::Lease(_, len) = key {
                    if len < 128 {
                        if let Some(w) = self.prefix_lens.get_mut(usize::from(len / 64)) {
                            *w |= 1 << (len % 64);
                        }
                    }
                }
                let id = self.id_of(key);
                if let Some(Some(list)) = self.lists.get_mut(id as usize) {
                    list.seqs.push_back(seq);
                }
                self.filed.push_back(id);
                count += 1;
            });
        }
        self.counts.push_back(count);
    }

    fn find(&self, key: &PostingKey) -> Option<u32> {
        self.find_hashed(self.hasher.hash_one(key), key)
    }

    /// [`find`](Self::find) with the key's hash already computed.
    fn find_hashed(&self, h: u64, key: &PostingKey) -> Option<u32> {
        self.ids
            .find(h, |&id| {
                self.lists
                    .get(id as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|l| l.key == *key)
            })
            .copied()
    }

    fn id_of(&mut self, key: PostingKey) -> u32 {
        let h = self.hasher.hash_one(&key);
        if let Some(id) = self.find_hashed(h, &key) {
            return id;
        }
        let list = List {
            key,
            seqs: Seqs::Few(0, [0; 2]),
            lost: 0,
        };
        let id = match self.free.pop() {
            Some(id) => {
                if let Some(slot) = self.lists.get_mut(id as usize) {
                    *slot = Some(list);
                }
                id
            }
            None => {
                self.lists.push(Some(list));
                u32::try_from(self.lists.len().saturating_sub(1)).unwrap_or(u32::MAX)
            }
        };
        let Self {
            hasher, ids, lists, ..
        } = self;
        ids.insert_unique(h, id, |&i| {
            lists
                .get(i as usize)
                .and_then(Option::as_ref)
                .map_or(0, |l| hasher.hash_one(&l.key))
        });
        id
    }

    /// Drops the entries of every record before `first_seq` (the ring evicted them).
    pub fn evict_before(&mut self, first_seq: u64) {
        while self.first < first_seq {
            let Some(n) = self.counts.pop_front() else {
                self.first = first_seq;
                break;
            };
            for _ in 0..n {
                let Some(id) = self.filed.pop_front() else {
                    break;
                };
                if let Some(Some(list)) = self.lists.get_mut(id as usize) {
                    if list.seqs.front() == Some(self.first) {
                        list.seqs.pop_front();
                        list.lost = self.first.saturating_add(1);
                        if list.seqs.is_empty() {
                            self.emptied.push(id);
                        }
                    }
                }
            }
            self.first = self.first.saturating_add(1);
        }
    }

    /// Drops the emptied lists whose key nobody watches (their loss mark no longer matters:
    /// a query started later reads only records the ring still holds).
    pub fn forget_emptied(&mut self, watched: impl Fn(&PostingKey) -> bool) {
        for id in std::mem::take(&mut self.emptied) {
            let drop = self
                .lists
                .get(id as usize)
                .and_then(Option::as_ref)
                .is_some_and(|l| l.seqs.is_empty() && !watched(&l.key));
            if drop {
                self.forget(id);
            } else if self
                .lists
                .get(id as usize)
                .and_then(Option::as_ref)
                .is_some_and(|l| l.seqs.is_empty())
            {
                // Watched: look again once its watchers are gone (see `unwatched`).
                self.emptied.push(id);
            }
        }
    }

    /// Drops `key`'s list if it is empty: its last watcher has gone.
    pub fn unwatched(&mut self, key: &PostingKey) {
        if let Some(id) = self.find(key) {
            if self
                .lists
                .get(id as usize)
                .and_then(Option::as_ref)
                .is_some_and(|l| l.seqs.is_empty())
            {
                self.emptied.retain(|&e| e != id);
                self.forget(id);
            }
        }
    }

    fn forget(&mut self, id: u32) {
        let Some(list) = self.lists.get_mut(id as usize).and_then(Option::take) else {
            return;
        };
        let h = self.hasher.hash_one(&list.key);
        if let Ok(e) = self.ids.find_entry(h, |&i| i == id) {
            e.remove();
        }
        self.free.push(id);
    }

    fn list(&self, key: &PostingKey) -> Option<&List> {
        let id = self.find(key)?;
        self.lists.get(id as usize)?.as_ref()
    }

    /// The first record at or after `seq` filed under `key`.
    #[must_use]
    pub fn next_at_or_after(&self, key: &PostingKey, seq: u64) -> Option<u64> {
        let list = self.list(key)?;
        let i = list.seqs.partition_point(seq);
        list.seqs.get(i)
    }

    /// True when a record at or after `seq` filed under `key` has been evicted: a reader
    /// that has not read past `seq` missed it.
    #[must_use]
    pub fn lost_since(&self, key: &PostingKey, seq: u64) -> bool {
        self.list(key).is_some_and(|l| l.lost > seq)
    }

    /// The records filed under `key` (for tests and metrics).
    #[must_use]
    pub fn len_of(&self, key: &PostingKey) -> usize {
        self.list(key).map_or(0, |l| l.seqs.len())
    }

    /// Keys with a list.
    #[must_use]
    pub fn keys(&self) -> usize {
        self.ids.len()
    }

    /// The keys an address query reads: the address itself and, for each delegated prefix
    /// length ever filed, the prefix of that length holding it.
    pub fn address_keys(&self, address: Ipv6Addr, mut each: impl FnMut(PostingKey)) {
        each(PostingKey::Lease(address, 128));
        for len in 0..128u8 {
            let bit = self
                .prefix_lens
                .get(usize::from(len / 64))
                .is_some_and(|w| w & (1 << (len % 64)) != 0);
            if bit {
                each(PostingKey::lease(address, len));
            }
        }
    }

    /// The keys filed for each record from `seq` on (the newest records), in order.
    pub fn filed_since(&self, seq: u64, mut each: impl FnMut(u64, &PostingKey)) {
        let skip = usize::try_from(seq.saturating_sub(self.first)).unwrap_or(usize::MAX);
        // Counted from the back: the records asked for are the newest few.
        let skip = skip.min(self.counts.len());
        let newest: usize = self.counts.range(skip..).map(|&n| usize::from(n)).sum();
        let mut at = self.filed.len().saturating_sub(newest);
        for (i, &n) in self.counts.range(skip..).enumerate() {
            let s = self.first.saturating_add((skip + i) as u64);
            for _ in 0..n {
                if let Some(key) = self
                    .filed
                    .get(at)
                    .and_then(|&id| self.lists.get(id as usize))
                    .and_then(Option::as_ref)
                    .map(|l| &l.key)
                {
                    each(s, key);
                }
                at += 1;
            }
        }
    }
}

// ---- snapshot (D43) ----------------------------------------------------------------------

impl Postings {
    /// Writes the lists into a snapshot: the first record's sequence number, the prefix
    /// lengths, each record's key count and key numbers, then each list by its number (an
    /// emptied list is left out: no query watches it after a restart) with its key, its lost
    /// mark and its sequence numbers (the first from `first`, each next from the one before,
    /// as LEB128 numbers).
    pub(crate) fn save_snapshot<W: Write>(&self, w: &mut snapshot::Writer<W>) -> io::Result<()> {
        w.u64(self.first)?;
        for word in self.prefix_lens {
            w.u64(word)?;
        }
        w.u64(self.counts.len() as u64)?;
        let (a, b) = self.counts.as_slices();
        w.bytes(a)?;
        w.bytes(b)?;
        w.u64(self.filed.len() as u64)?;
        for id in &self.filed {
            w.u32(*id)?;
        }
        w.len32(self.lists.len())?;
        for list in &self.lists {
            match list.as_ref().filter(|l| !l.seqs.is_empty()) {
                Some(l) => {
                    w.u8(1)?;
                    w.key(&l.key)?;
                    w.u64(l.lost)?;
                    w.varint(l.seqs.len() as u64)?;
                    let mut before = self.first;
                    for seq in (0..l.seqs.len()).filter_map(|i| l.seqs.get(i)) {
                        w.varint(seq.saturating_sub(before))?;
                        before = seq;
                    }
                }
                None => w.u8(0)?,
            }
        }
        Ok(())
    }

    /// The lists a snapshot holds. The key numbers are checked against the lists, the counts
    /// against the key numbers, each list's sequence numbers against the records (in the
    /// ring, rising).
    pub(crate) fn load_snapshot<R: Read>(
        r: &mut snapshot::Reader<R>,
    ) -> Result<Self, SnapshotError> {
        let mut p = Self::new(r.u64()?);
        for word in &mut p.prefix_lens {
            *word = r.u64()?;
        }
        let records = r.count64(1)?;
        let mut counts = vec![0u8; records];
        r.take(&mut counts)?;
        p.counts = VecDeque::from(counts);
        let filed = r.count64(4)?;
        let total: usize = p.counts.iter().map(|&c| usize::from(c)).sum();
        if filed != total {
            return Err(damaged(format!(
                "{filed} posting entries for records that file {total}"
            )));
        }
        p.filed.reserve_exact(filed);
        let list = &mut p.filed;
        r.u32s(filed, |id| list.push_back(id))?;
        let next = p.next_seq();
        let n = r.count32(1)?;
        p.lists.reserve_exact(n);
        let mut present = vec![0u64; n.div_ceil(64)];
        let mut entries = 0usize;
        for i in 0..n {
            if !r.flag()? {
                p.lists.push(None);
                p.free
                    .push(u32::try_from(i).map_err(|_| damaged("too many lists"))?);
                continue;
            }
            let key = r.key()?;
            let lost = r.u64()?;
            let len = r.varint()?;
            let len = r.count(len, 1)?;
            if len == 0 {
                return Err(damaged("a list no record is filed under"));
            }
            let mut seqs = Seqs::Few(0, [0; 2]);
            let mut seq = p.first;
            for k in 0..len {
                let step = r.varint()?;
                if k > 0 && step == 0 {
                    return Err(damaged("a record filed twice under one key"));
                }
                seq = seq
                    .checked_add(step)
                    .filter(|&s| s < next)
                    .ok_or_else(|| damaged("a list naming a record not in the ring"))?;
                seqs.push_back(seq);
            }
            entries = entries.saturating_add(len);
            if let Some(w) = present.get_mut(i / 64) {
                *w |= 1 << (i % 64);
            }
            p.lists.push(Some(List { key, seqs, lost }));
        }
        p.free.reverse();
        if entries != filed {
            return Err(damaged(format!(
                "lists of {entries} records for {filed} posting entries"
            )));
        }
        let known = |id: u32| {
            present
                .get(id as usize / 64)
                .is_some_and(|w| w & (1 << (id % 64)) != 0)
        };
        if let Some(id) = p.filed.iter().find(|&&id| !known(id)) {
            return Err(damaged(format!(
                "a record filed under list {id}, which is none"
            )));
        }
        let Self {
            hasher, ids, lists, ..
        } = &mut p;
        ids.reserve(lists.len(), |_| 0);
        for (i, list) in lists.iter().enumerate() {
            let Some(list) = list else { continue };
            let id = u32::try_from(i).map_err(|_| damaged("too many lists"))?;
            // Found or filed in one probe.
            let entry = ids.entry(
                hasher.hash_one(&list.key),
                |&other| {
                    lists
                        .get(other as usize)
                        .and_then(Option::as_ref)
                        .is_some_and(|l| l.key == list.key)
                },
                |&other| {
                    lists
                        .get(other as usize)
                        .and_then(Option::as_ref)
                        .map_or(0, |l| hasher.hash_one(&l.key))
                },
            );
            match entry {
                hashbrown::hash_table::Entry::Occupied(_) => {
                    return Err(damaged("a posting key twice"));
                }
                hashbrown::hash_table::Entry::Vacant(v) => {
                    v.insert(id);
                }
            }
        }
        Ok(p)
    }

    /// The sequence number the next record filed must have.
    pub(crate) fn next_seq(&self) -> u64 {
        self.first.saturating_add(self.counts.len() as u64)
    }

    /// Every list: its key, its sequence numbers and its lost mark (for tests comparing two
    /// postings).
    #[cfg(test)]
    pub(crate) fn all_lists(&self) -> Vec<(PostingKey, Vec<u64>, u64)> {
        let mut out: Vec<_> = self
            .lists
            .iter()
            .flatten()
            .map(|l| {
                let seqs = (0..l.seqs.len()).filter_map(|i| l.seqs.get(i)).collect();
                (l.key.clone(), seqs, l.lost)
            })
            .collect();
        out.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::ServerTime;
    use crate::store::{BindingKey, Lease, LeaseState, RelayInfo};

    fn binding(client: u8, link: u16) -> Binding {
        Binding {
            key: BindingKey {
                client_id: vec![0, 3, 0, 1, client].into(),
                link: Ipv6Addr::new(0x2001, 0xdb8, 0, link, 0, 0, 0, 1),
            },
            leases: vec![Lease {
                kind: LeaseKind::Address,
                address: Ipv6Addr::new(0x2001, 0xdb8, 0, link, 0, 0, 0, u16::from(client)),
                prefix_len: 128,
                iaid: 1,
                preferred_lifetime: 3600,
                valid_lifetime: 7200,
                cltt: ServerTime(1),
                state: LeaseState::Active,
            }],
            relay: RelayInfo::default(),
            last_change: ServerTime(1),
        }
    }

    /// A list grows past its two inline places and shrinks back as the ring evicts, and keeps
    /// what it lost; the other keys are untouched.
    #[test]
    fn lists_grow_past_two_and_shrink_as_the_ring_evicts() {
        let mut p = Postings::new(10);
        let link = PostingKey::Link(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 1));
        for (i, client) in (1..=5u8).enumerate() {
            p.file(10 + i as u64, Some(&binding(client, 1)));
        }
        p.file(15, Some(&binding(9, 2)));
        assert_eq!(p.len_of(&link), 5);
        assert_eq!(p.next_at_or_after(&link, 0), Some(10));
        assert_eq!(p.next_at_or_after(&link, 12), Some(12));
        assert_eq!(p.next_at_or_after(&link, 15), None);
        assert!(!p.lost_since(&link, 0));
        p.evict_before(13);
        assert_eq!(p.len_of(&link), 2);
        assert_eq!(p.next_at_or_after(&link, 0), Some(13));
        assert!(p.lost_since(&link, 12) && !p.lost_since(&link, 13));
        let client = PostingKey::ClientId(vec![0, 3, 0, 1, 1].into());
        assert_eq!(p.len_of(&client), 0);
        assert!(p.lost_since(&client, 10));
        // The emptied list of client 1 goes once nobody watches it; client 9's stays.
        p.forget_emptied(|_| false);
        assert!(!p.lost_since(&client, 10));
        let other = PostingKey::ClientId(vec![0, 3, 0, 1, 9].into());
        assert_eq!(p.next_at_or_after(&other, 0), Some(15));
        // A forgotten key's number is reused for a new key, which starts empty.
        p.file(16, Some(&binding(7, 3)));
        let new = PostingKey::ClientId(vec![0, 3, 0, 1, 7].into());
        assert_eq!((p.len_of(&new), p.next_at_or_after(&new, 0)), (1, Some(16)));
        p.evict_before(17);
        assert_eq!(p.len_of(&link), 0);
        assert!(p.lost_since(&link, 14));
    }
}
