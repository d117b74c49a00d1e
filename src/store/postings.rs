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
//! Memory (issue 19): a key is kept as its [`Tag`]: a lease key whole (an address query's
//! wake-up needs the prefix back), any other by 64 bits of a keyed SipHash of it, so a DUID or a
//! remote-id costs no octets of its own. Two keys with one hash (about one chance in 10⁴ among
//! 40 million keys) share a list: a reader checks every record against its filter, so the cost
//! is a record read for nothing, never a wrong answer. Each list is 32 octets with its first
//! two sequence numbers inline, found through a table of 32-bit list numbers.
//!
//! Most keys belong to one binding (its client's DUID, its Remote-ID, its address and prefix):
//! a record is listed under such a key only when it ends it (D46). The bindings holding it now
//! are found through the store, their newest records through the history
//! ([`History::next_filed`](super::History::next_filed)); the records those superseded are never
//! sent. So a record files about two keys (its link and Relay-IDs) and a list exists for each
//! link, each Relay-ID and each key recently ended, not for every key of every binding.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::io::{self, Read, Write};
use std::net::Ipv6Addr;

use hashbrown::HashTable;
use siphasher::sip::SipHasher13;
use smallvec::SmallVec;

use super::model::{Binding, LeaseKind, RemoteIdKey};
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
    /// True for a key of one binding (its client's DUID, a Remote-ID, an address or prefix):
    /// a record is listed under it only when it ends it; the bindings holding it now are the
    /// store's to find ([`History::next_filed`](super::History::next_filed)).
    #[must_use]
    pub const fn of_binding(&self) -> bool {
        matches!(
            self,
            Self::ClientId(_) | Self::RemoteId(_) | Self::Lease(..)
        )
    }

    /// The lease key of `address` inside a prefix of length `len`.
    #[must_use]
    pub fn lease(address: Ipv6Addr, len: u8) -> Self {
        let len = len.min(128);
        let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
        Self::Lease(Ipv6Addr::from(u128::from(address) & mask), len)
    }
}

/// A key as the postings keep it: a lease key whole, any other key by 64 bits of its hash
/// (keyed by the postings' seed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tag {
    hi: u64,
    lo: u64,
    /// The lease key's prefix length (0 to 128), or [`HASHED`].
    len: u8,
}

/// [`Tag::len`] of a hashed key.
const HASHED: u8 = u8::MAX;

impl Tag {
    /// The lease key's prefix (host bits clear) and length, for a lease key.
    #[must_use]
    pub fn lease(self) -> Option<(Ipv6Addr, u8)> {
        (self.len <= 128).then(|| {
            (
                Ipv6Addr::from((u128::from(self.hi) << 64) | u128::from(self.lo)),
                self.len,
            )
        })
    }

    fn of_lease(prefix: u128, len: u8) -> Self {
        Self {
            hi: (prefix >> 64) as u64,
            lo: prefix as u64,
            len: len.min(128),
        }
    }
}

/// Masks `address` to `len` bits.
fn masked(address: Ipv6Addr, len: u8) -> u128 {
    u128::from(address)
        & u128::MAX
            .checked_shl(128 - u32::from(len.min(128)))
            .unwrap_or(0)
}

/// The keyed hash giving a non-lease key its [`Tag`]. Written octet by octet (a kind, then the
/// key's octets), so the same key gives the same tag on every platform and build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seed(pub u64, pub u64);

impl Seed {
    /// A seed no peer can guess.
    fn random() -> Self {
        let r = RandomState::new();
        Self(r.hash_one(0x6c71_6431_u64), r.hash_one(0x7365_6564_u64))
    }

    fn hashed(self, kind: u8, parts: &[&[u8]]) -> Tag {
        let mut h = SipHasher13::new_with_keys(self.0, self.1);
        h.write_u8(kind);
        for p in parts {
            h.write(p);
        }
        Tag {
            hi: 0,
            lo: h.finish(),
            len: HASHED,
        }
    }

    /// The tag of `key`.
    fn tag(self, key: &PostingKey) -> Tag {
        match key {
            PostingKey::Link(l) => self.hashed(1, &[&l.octets()]),
            PostingKey::ClientId(d) => self.hashed(2, &[d]),
            PostingKey::RelayId(r) => self.hashed(3, &[r]),
            PostingKey::RemoteId(r) => {
                self.hashed(4, &[&r.enterprise_number.to_be_bytes(), &r.remote_id])
            }
            PostingKey::Lease(prefix, len) => Tag::of_lease(masked(*prefix, *len), *len),
        }
    }

    /// The tags `binding`'s record is filed under, each once: each with true when the record
    /// goes in its list (a link, a Relay-ID, a key of one binding that the record ends), false
    /// for a key of one binding it holds (see [`Postings::file`]).
    fn filings_of(self, binding: &Binding) -> SmallVec<[(Tag, bool); 8]> {
        let mut tags: SmallVec<[(Tag, bool); 8]> = SmallVec::new();
        let mut add = |t: Tag, listed: bool| {
            if !tags.iter().any(|(u, _)| *u == t) {
                tags.push((t, listed));
            }
        };
        // A binding with no active lease left is ended: its record is its final one.
        let ended = binding.leases.iter().all(|l| !l.state.is_active());
        add(self.hashed(1, &[&binding.key.link.octets()]), true);
        add(self.hashed(2, &[&binding.key.client_id]), ended);
        for r in &binding.relay.relay_ids {
            add(self.hashed(3, &[r]), true);
        }
        for r in &binding.relay.remote_ids {
            add(
                self.hashed(4, &[&r.enterprise_number.to_be_bytes(), &r.remote_id]),
                ended,
            );
        }
        for l in &binding.leases {
            let len = match l.kind {
                LeaseKind::Address => 128,
                LeaseKind::Prefix => l.prefix_len.min(128),
            };
            add(
                Tag::of_lease(masked(l.address, len), len),
                !l.state.is_active(),
            );
        }
        tags
    }

    /// The hash of `tag` in the table of lists.
    fn table_hash(self, tag: Tag) -> u64 {
        if tag.len == HASHED {
            return tag.lo;
        }
        let mut h = SipHasher13::new_with_keys(self.0, self.1);
        h.write_u64(tag.hi);
        h.write_u64(tag.lo);
        h.write_u8(tag.len);
        h.finish()
    }
}

/// [`List::n`] of a list whose sequence numbers are in [`Postings::many`].
const MANY: u8 = u8::MAX;
/// [`List::n`] of a free place.
const FREE: u8 = u8::MAX - 1;

/// A sequence number as the lists keep it: its low 32 bits. Every number in a list lies in
/// `[first, first + 2³²)`, `first` the oldest record filed (the ring holds fewer than 2³²
/// records: `MAX_JOURNAL_SIZE`), so the low bits and `first` give it back.
type Short = u32;

/// The low 32 bits of `seq`.
const fn short(seq: u64) -> Short {
    seq as Short
}

/// One key's records, oldest first: up to two inline, more in a deque of
/// [`Postings::many`]. 32 octets.
#[derive(Debug, Clone, Copy)]
struct List {
    /// The key's [`Tag`], its parts side by side (keeping the list at 32 octets).
    hi: u64,
    lo: u64,
    /// The first `n` sequence numbers; for [`MANY`], `seqs[0]` is the deque's place.
    seqs: [Short; 2],
    /// The newest sequence number evicted from this list, plus one, as [`Short`]; meaningful
    /// when `has_lost`.
    lost: Short,
    /// The tag's length ([`Tag::len`]).
    len: u8,
    n: u8,
    has_lost: bool,
}

const _: () = assert!(std::mem::size_of::<List>() == 32);

impl List {
    const EMPTY: Self = Self {
        hi: 0,
        lo: 0,
        seqs: [0; 2],
        lost: 0,
        len: HASHED,
        n: FREE,
        has_lost: false,
    };

    fn new(tag: Tag) -> Self {
        Self {
            hi: tag.hi,
            lo: tag.lo,
            len: tag.len,
            n: 0,
            ..Self::EMPTY
        }
    }

    fn tag(&self) -> Tag {
        Tag {
            hi: self.hi,
            lo: self.lo,
            len: self.len,
        }
    }

    fn is_free(&self) -> bool {
        self.n == FREE
    }
}

/// Items in pages of [`PAGE`], so a table of tens of millions grows a page at a time instead of
/// doubling a vector (up to half of its largest allocation unused, and twice the memory while
/// it copies).
#[derive(Debug)]
struct Paged<T> {
    pages: Vec<Vec<T>>,
}

impl<T> Default for Paged<T> {
    fn default() -> Self {
        Self { pages: Vec::new() }
    }
}

/// Items in a page of [`Paged`].
const PAGE: usize = 4096;

impl<T> Paged<T> {
    fn get(&self, i: usize) -> Option<&T> {
        self.pages.get(i / PAGE)?.get(i % PAGE)
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.pages.get_mut(i / PAGE)?.get_mut(i % PAGE)
    }

    fn push(&mut self, item: T) {
        match self.pages.last_mut() {
            Some(page) if page.len() < PAGE => page.push(item),
            _ => {
                let mut page = Vec::with_capacity(PAGE);
                page.push(item);
                self.pages.push(page);
            }
        }
    }

    /// Every page but the last is full.
    fn len(&self) -> usize {
        self.pages.len().saturating_sub(1) * PAGE + self.pages.last().map_or(0, Vec::len)
    }
}

/// A queue of list numbers in chunks of [`CHUNK`]: the records' keys, pushed at the back as
/// records are filed and popped at the front as the ring evicts them. Tens of millions at
/// carrier scale: a `VecDeque` would double (up to half of it unused, issue 19).
#[derive(Debug, Default)]
struct Chunked {
    chunks: VecDeque<Vec<u32>>,
    /// The place of the first item in the first chunk.
    head: usize,
    len: usize,
    /// An emptied chunk kept for the next push (the queue moves through chunks steadily).
    spare: Option<Vec<u32>>,
}

/// Items in a chunk of [`Chunked`].
const CHUNK: usize = 16 * 1024;

impl Chunked {
    fn len(&self) -> usize {
        self.len
    }

    fn push_back(&mut self, item: u32) {
        match self.chunks.back_mut() {
            Some(c) if c.len() < CHUNK => c.push(item),
            _ => {
                let mut c = self
                    .spare
                    .take()
                    .unwrap_or_else(|| Vec::with_capacity(CHUNK));
                c.push(item);
                self.chunks.push_back(c);
            }
        }
        self.len += 1;
    }

    fn pop_front(&mut self) -> Option<u32> {
        let first = self.chunks.front()?;
        let item = *first.get(self.head)?;
        self.head += 1;
        self.len -= 1;
        if self.head == first.len() && (first.len() == CHUNK || self.len == 0) {
            if let Some(mut c) = self.chunks.pop_front() {
                c.clear();
                self.spare = Some(c);
            }
            self.head = 0;
        }
        Some(item)
    }

    fn get(&self, i: usize) -> Option<u32> {
        let i = i.checked_add(self.head)?;
        self.chunks.get(i / CHUNK)?.get(i % CHUNK).copied()
    }
}

/// The per-key lists of every record in the ring.
#[derive(Debug)]
pub struct Postings {
    seed: Seed,
    /// List numbers, by [`Seed::table_hash`] of their tag.
    ids: HashTable<u32>,
    lists: Paged<List>,
    free: Vec<u32>,
    /// The sequence numbers of lists longer than two.
    many: Vec<VecDeque<Short>>,
    many_free: Vec<u32>,
    /// The key ids of each record still in the ring, in sequence order, and how many each
    /// record has.
    filed: Chunked,
    counts: VecDeque<u8>,
    /// The sequence number of `counts[0]` (of the next record when `counts` is empty).
    first: u64,
    /// Lists emptied by eviction, to be dropped unless watched.
    emptied: Vec<u32>,
    /// The delegated prefix lengths ever filed (bit `len`), for address queries.
    prefix_lens: [u64; 3],
    /// The keys of one binding that the newest records hold (not listed), for the wake-ups
    /// of the queries watching them: at most [`RECENT`], oldest first.
    recent: VecDeque<(u64, Tag)>,
    /// `recent` holds every such key of the records from this one on.
    recent_from: u64,
}

/// The most keys [`Postings::recent`] holds: the records since the loop last woke its queries
/// are a turn's changes, far fewer.
const RECENT: usize = 1 << 16;

impl Default for Postings {
    fn default() -> Self {
        Self::new(0)
    }
}

impl Postings {
    /// Empty lists whose first record will be `first`.
    #[must_use]
    pub fn new(first: u64) -> Self {
        Self::with_seed(first, Seed::random())
    }

    /// Empty lists whose first record will be `first`, tagging keys with `seed`.
    #[must_use]
    pub fn with_seed(first: u64, seed: Seed) -> Self {
        Self {
            seed,
            ids: HashTable::new(),
            lists: Paged::default(),
            free: Vec::new(),
            many: Vec::new(),
            many_free: Vec::new(),
            filed: Chunked::default(),
            counts: VecDeque::new(),
            first,
            emptied: Vec::new(),
            prefix_lens: [0; 3],
            recent: VecDeque::new(),
            recent_from: first,
        }
    }

    /// The seed tagging the keys.
    #[must_use]
    pub fn seed(&self) -> Seed {
        self.seed
    }

    /// The tag `key`'s list is kept under.
    #[must_use]
    pub fn tag(&self, key: &PostingKey) -> Tag {
        self.seed.tag(key)
    }

    /// Files record `seq` (the next one: records are filed in order, each once) under the
    /// keys of `binding`, or under none when its payload could not be read.
    ///
    /// A key of one binding (its DUID, a Remote-ID, an address or prefix: most of the keys,
    /// each with one or two records in the ring) is listed only by a record that ends it: a
    /// lease ended, or the binding's final record. The record of a binding that holds it is
    /// not listed: the binding's newest record is found through the store (D46), and the
    /// records before it are superseded, never sent. The key is kept in [`Self::recent`]
    /// for the wake-ups instead.
    pub fn file(&mut self, seq: u64, binding: Option<&Binding>) {
        let expected = self.first.saturating_add(self.counts.len() as u64);
        if seq != expected {
            // Only when the journal was replaced under the history: start over from here.
            let prefix_lens = self.prefix_lens;
            *self = Self::with_seed(seq, self.seed);
            self.prefix_lens = prefix_lens;
        }
        let mut count = 0u8;
        if let Some(b) = binding {
            for (tag, listed) in self.seed.filings_of(b) {
                if count == u8::MAX {
                    break;
                }
                if tag.len < 128 {
                    if let Some(w) = self.prefix_lens.get_mut(usize::from(tag.len / 64)) {
                        *w |= 1 << (tag.len % 64);
                    }
                }
                if !listed {
                    if self.recent.len() == RECENT {
                        if let Some((s, _)) = self.recent.pop_front() {
                            self.recent_from = s.saturating_add(1);
                        }
                    }
                    self.recent.push_back((seq, tag));
                    continue;
                }
                let id = self.id_of(tag);
                self.push_back(id, seq);
                self.filed.push_back(id);
                count += 1;
            }
        }
        self.counts.push_back(count);
    }

    fn find(&self, tag: Tag) -> Option<u32> {
        let lists = &self.lists;
        self.ids
            .find(self.seed.table_hash(tag), |&id| {
                lists
                    .get(id as usize)
                    .is_some_and(|l| l.tag() == tag && !l.is_free())
            })
            .copied()
    }

    fn id_of(&mut self, tag: Tag) -> u32 {
        if let Some(id) = self.find(tag) {
            return id;
        }
        let list = List::new(tag);
        let id = match self.free.pop() {
            Some(id) => {
                if let Some(slot) = self.lists.get_mut(id as usize) {
                    *slot = list;
                }
                id
            }
            None => {
                let id = u32::try_from(self.lists.len()).unwrap_or(u32::MAX);
                self.lists.push(list);
                id
            }
        };
        let Self {
            seed, ids, lists, ..
        } = self;
        ids.insert_unique(seed.table_hash(tag), id, |&i| {
            lists
                .get(i as usize)
                .map_or(0, |l| seed.table_hash(l.tag()))
        });
        id
    }

    fn push_back(&mut self, id: u32, seq: u64) {
        let Some(list) = self.lists.get_mut(id as usize) else {
            return;
        };
        let seq = short(seq);
        match list.n {
            0 | 1 => {
                if let Some(s) = list.seqs.get_mut(usize::from(list.n)) {
                    *s = seq;
                }
                list.n += 1;
            }
            MANY => {
                if let Some(d) = self.many.get_mut(list.seqs[0] as usize) {
                    d.push_back(seq);
                }
            }
            _ => {
                let mut d = VecDeque::with_capacity(4);
                d.extend(list.seqs);
                d.push_back(seq);
                let place = match self.many_free.pop() {
                    Some(p) => {
                        if let Some(slot) = self.many.get_mut(p as usize) {
                            *slot = d;
                        }
                        p as usize
                    }
                    None => {
                        self.many.push(d);
                        self.many.len() - 1
                    }
                };
                list.seqs = [u32::try_from(place).unwrap_or(u32::MAX), 0];
                list.n = MANY;
            }
        }
    }

    /// Takes the oldest sequence number off list `id` if it is `seq`; true when it did.
    fn pop_front_if(&mut self, id: u32, seq: u64) -> bool {
        let seq = short(seq);
        let Some(list) = self.lists.get_mut(id as usize) else {
            return false;
        };
        match list.n {
            MANY => {
                let place = list.seqs[0] as usize;
                let Some(d) = self.many.get_mut(place) else {
                    return false;
                };
                if d.front() != Some(&seq) {
                    return false;
                }
                d.pop_front();
                if d.len() <= 2 {
                    let mut few = [0; 2];
                    for (slot, v) in few.iter_mut().zip(d.iter()) {
                        *slot = *v;
                    }
                    list.n = d.len() as u8;
                    list.seqs = few;
                    *d = VecDeque::new();
                    self.many_free.push(place as u32);
                }
                true
            }
            1 | 2 if list.seqs[0] == seq => {
                list.seqs[0] = list.seqs[1];
                list.n -= 1;
                true
            }
            _ => false,
        }
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
                if self.pop_front_if(id, self.first) {
                    if let Some(list) = self.lists.get_mut(id as usize) {
                        list.lost = short(self.first.saturating_add(1));
                        list.has_lost = true;
                        if list.n == 0 {
                            self.emptied.push(id);
                        }
                    }
                }
            }
            self.first = self.first.saturating_add(1);
        }
    }

    fn is_empty_list(&self, id: u32) -> bool {
        self.lists.get(id as usize).is_some_and(|l| l.n == 0)
    }

    /// Drops the emptied lists whose key nobody watches (their loss mark no longer matters:
    /// a query started later reads only records the ring still holds).
    pub fn forget_emptied(&mut self, watched: impl Fn(Tag) -> bool) {
        for id in std::mem::take(&mut self.emptied) {
            if !self.is_empty_list(id) {
                continue;
            }
            let tag = self.lists.get(id as usize).map(List::tag);
            if tag.is_some_and(|t| !watched(t)) {
                self.forget(id);
            } else {
                // Watched: look again once its watchers are gone (see `unwatched`).
                self.emptied.push(id);
            }
        }
    }

    /// Drops `key`'s list if it is empty: its last watcher has gone.
    pub fn unwatched(&mut self, key: &PostingKey) {
        if let Some(id) = self.find(self.tag(key)) {
            if self.is_empty_list(id) {
                self.emptied.retain(|&e| e != id);
                self.forget(id);
            }
        }
    }

    fn forget(&mut self, id: u32) {
        let Some(list) = self.lists.get_mut(id as usize) else {
            return;
        };
        if list.is_free() {
            return;
        }
        let tag = list.tag();
        *list = List::EMPTY;
        if let Ok(e) = self.ids.find_entry(self.seed.table_hash(tag), |&i| i == id) {
            e.remove();
        }
        self.free.push(id);
    }

    fn list(&self, key: &PostingKey) -> Option<&List> {
        let id = self.find(self.tag(key))?;
        self.lists.get(id as usize)
    }

    /// The sequence numbers of `list` ([`Short`]), oldest first, as one or two slices.
    fn seqs_of<'a>(&'a self, list: &'a List) -> (&'a [Short], &'a [Short]) {
        match list.n {
            MANY => self
                .many
                .get(list.seqs[0] as usize)
                .map_or((&[][..], &[][..]), VecDeque::as_slices),
            n => (list.seqs.get(..usize::from(n)).unwrap_or_default(), &[]),
        }
    }

    /// The whole sequence number of `s`, a list's [`Short`].
    fn full(&self, s: Short) -> u64 {
        self.first
            .saturating_add(u64::from(s.wrapping_sub(short(self.first))))
    }

    /// The first record at or after `seq` filed under `key`.
    #[must_use]
    pub fn next_at_or_after(&self, key: &PostingKey, seq: u64) -> Option<u64> {
        let list = self.list(key)?;
        let (a, b) = self.seqs_of(list);
        // In order of distance from `first`, which is the order of the whole numbers.
        let from = |x: &Short| self.full(*x) < seq;
        let i = a.partition_point(from);
        if let Some(&s) = a.get(i) {
            return Some(self.full(s));
        }
        let j = b.partition_point(from);
        b.get(j).map(|&s| self.full(s))
    }

    /// True when a record at or after `seq` filed under `key` has been evicted: a reader
    /// that has not read past `seq` missed it.
    #[must_use]
    pub fn lost_since(&self, key: &PostingKey, seq: u64) -> bool {
        // The mark is at most `first`, and taken as the newest number at or below `first`
        // with its low bits (a reader 2³² records behind is not possible: the ring is smaller).
        self.list(key).is_some_and(|l| {
            l.has_lost
                && self
                    .first
                    .saturating_sub(u64::from(short(self.first).wrapping_sub(l.lost)))
                    > seq
        })
    }

    /// The records filed under `key` (for tests and metrics).
    #[must_use]
    pub fn len_of(&self, key: &PostingKey) -> usize {
        self.list(key).map_or(0, |l| {
            let (a, b) = self.seqs_of(l);
            a.len() + b.len()
        })
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

    /// The tags of each record from `seq` on (the newest records): those it is listed under,
    /// then the keys of one binding it holds. False when some of the latter are no longer kept
    /// (more than [`RECENT`] since `seq`): the caller must then take every key of one binding
    /// as concerned.
    pub fn filed_since(&self, seq: u64, mut each: impl FnMut(u64, Tag)) -> bool {
        let skip = usize::try_from(seq.saturating_sub(self.first)).unwrap_or(usize::MAX);
        // Counted from the back: the records asked for are the newest few.
        let skip = skip.min(self.counts.len());
        let newest: usize = self.counts.range(skip..).map(|&n| usize::from(n)).sum();
        let mut at = self.filed.len().saturating_sub(newest);
        for (i, &n) in self.counts.range(skip..).enumerate() {
            let s = self.first.saturating_add((skip + i) as u64);
            for _ in 0..n {
                if let Some(l) = self
                    .filed
                    .get(at)
                    .and_then(|id| self.lists.get(id as usize))
                {
                    each(s, l.tag());
                }
                at += 1;
            }
        }
        let from = self.recent.partition_point(|(s, _)| *s < seq);
        for &(s, tag) in self.recent.range(from..) {
            each(s, tag);
        }
        seq >= self.recent_from
    }
}

// ---- snapshot (D43) ----------------------------------------------------------------------

impl Chunked {
    fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.chunks
            .iter()
            .enumerate()
            .flat_map(move |(i, c)| {
                c.get(if i == 0 { self.head } else { 0 }..)
                    .unwrap_or_default()
            })
            .copied()
    }
}

impl Postings {
    /// Writes the lists into a snapshot: the tags' seed (D44), the first record's sequence
    /// number, the prefix lengths, each record's key count and key numbers, then each list by
    /// its number (an emptied list is left out: no query watches it after a restart) with its
    /// tag, its loss mark and its sequence numbers (the first from `first`, each next from the
    /// one before, as LEB128 numbers).
    pub(crate) fn save_snapshot<W: Write>(&self, w: &mut snapshot::Writer<W>) -> io::Result<()> {
        w.u64(self.seed.0)?;
        w.u64(self.seed.1)?;
        w.u64(self.first)?;
        for word in self.prefix_lens {
            w.u64(word)?;
        }
        w.u64(self.counts.len() as u64)?;
        let (a, b) = self.counts.as_slices();
        w.bytes(a)?;
        w.bytes(b)?;
        w.u64(self.filed.len() as u64)?;
        for id in self.filed.iter() {
            w.u32(id)?;
        }
        let n = self.lists.len();
        w.len32(n)?;
        for i in 0..n {
            let list = self.lists.get(i).filter(|l| !l.is_free() && l.n != 0);
            match list {
                Some(l) => {
                    w.u8(1)?;
                    w.u64(l.hi)?;
                    w.u64(l.lo)?;
                    w.u8(l.len)?;
                    w.u8(u8::from(l.has_lost))?;
                    w.u32(l.lost)?;
                    let (x, y) = self.seqs_of(l);
                    w.varint((x.len() + y.len()) as u64)?;
                    let mut before = self.first;
                    for &s in x.iter().chain(y) {
                        let seq = self.full(s);
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
    /// ring, rising), and no tag twice.
    pub(crate) fn load_snapshot<R: Read>(
        r: &mut snapshot::Reader<R>,
    ) -> Result<Self, SnapshotError> {
        let seed = Seed(r.u64()?, r.u64()?);
        let mut p = Self::with_seed(r.u64()?, seed);
        for word in &mut p.prefix_lens {
            *word = r.u64()?;
        }
        let records = r.count64(1)?;
        if u32::try_from(records).is_err() {
            return Err(damaged("more records than a ring holds"));
        }
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
        let mut ids = Chunked::default();
        r.u32s(filed, |id| ids.push_back(id))?;
        let next = p.next_seq();
        let n = r.count32(1)?;
        let mut present = vec![0u64; n.div_ceil(64)];
        let mut entries = 0usize;
        for i in 0..n {
            let id = u32::try_from(i).map_err(|_| damaged("too many lists"))?;
            if !r.flag()? {
                p.lists.push(List::EMPTY);
                p.free.push(id);
                continue;
            }
            let (hi, lo, len) = (r.u64()?, r.u64()?, r.u8()?);
            if len > 128 && len != HASHED {
                return Err(damaged("a posting tag of no kind"));
            }
            let has_lost = r.flag()?;
            let lost = r.u32()?;
            let count = r.varint()?;
            let count = r.count(count, 1)?;
            if count == 0 {
                return Err(damaged("a list no record is filed under"));
            }
            p.lists.push(List {
                lost,
                has_lost,
                ..List::new(Tag { hi, lo, len })
            });
            let mut seq = p.first;
            for k in 0..count {
                let step = r.varint()?;
                if k > 0 && step == 0 {
                    return Err(damaged("a record filed twice under one key"));
                }
                seq = seq
                    .checked_add(step)
                    .filter(|&s| s < next)
                    .ok_or_else(|| damaged("a list naming a record not in the ring"))?;
                p.push_back(id, seq);
            }
            entries = entries.saturating_add(count);
            if let Some(w) = present.get_mut(i / 64) {
                *w |= 1 << (i % 64);
            }
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
        if let Some(id) = ids.iter().find(|&id| !known(id)) {
            return Err(damaged(format!(
                "a record filed under list {id}, which is none"
            )));
        }
        p.filed = ids;
        p.recent_from = p.next_seq();
        let Self {
            seed, ids, lists, ..
        } = &mut p;
        ids.reserve(lists.len(), |_| 0);
        for i in 0..lists.len() {
            let Some(list) = lists.get(i).filter(|l| !l.is_free()) else {
                continue;
            };
            let tag = list.tag();
            let h = seed.table_hash(tag);
            let same = ids
                .find(h, |&id| {
                    lists.get(id as usize).is_some_and(|l| l.tag() == tag)
                })
                .is_some();
            if same {
                return Err(damaged("a posting key twice"));
            }
            let id = u32::try_from(i).map_err(|_| damaged("too many lists"))?;
            ids.insert_unique(h, id, |&i| {
                lists
                    .get(i as usize)
                    .map_or(0, |l| seed.table_hash(l.tag()))
            });
        }
        Ok(p)
    }

    /// The sequence number the next record filed must have.
    pub(crate) fn next_seq(&self) -> u64 {
        self.first.saturating_add(self.counts.len() as u64)
    }

    /// Every list: its tag, its sequence numbers and its loss mark, whole (for tests comparing
    /// two postings).
    #[cfg(test)]
    pub(crate) fn all_lists(&self) -> Vec<(Tag, Vec<u64>, Option<u64>)> {
        let mut out: Vec<_> = (0..self.lists.len())
            .filter_map(|i| self.lists.get(i))
            .filter(|l| !l.is_free())
            .map(|l| {
                let (x, y) = self.seqs_of(l);
                let seqs = x.iter().chain(y).map(|&s| self.full(s)).collect();
                let lost = l.has_lost.then(|| {
                    self.first
                        .saturating_sub(u64::from(short(self.first).wrapping_sub(l.lost)))
                });
                (l.tag(), seqs, lost)
            })
            .collect();
        out.sort_by_key(|(t, _, _)| (t.hi, t.lo, t.len));
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

    /// The final record of `binding(client, link)`: its lease released.
    fn ended(client: u8, link: u16) -> Binding {
        let mut b = binding(client, link);
        for l in &mut b.leases {
            (l.preferred_lifetime, l.valid_lifetime) = (0, 0);
            l.state = LeaseState::Released;
        }
        b
    }

    /// The chunked queue of the records' keys behaves as a deque across its chunks.
    #[test]
    fn the_chunked_queue_is_a_deque() {
        let mut q = Chunked::default();
        let mut model = VecDeque::new();
        for round in 0..3u32 {
            for i in 0..(CHUNK as u32 * 2 + 7) {
                q.push_back(i ^ round);
                model.push_back(i ^ round);
            }
            for _ in 0..(CHUNK + 3 + round as usize * 5000) {
                assert_eq!(q.pop_front(), model.pop_front());
            }
            assert_eq!(q.len(), model.len());
            for i in [0, 1, CHUNK - 1, CHUNK, model.len() - 1, model.len()] {
                assert_eq!(q.get(i), model.get(i).copied(), "{i}");
            }
        }
        while let Some(x) = model.pop_front() {
            assert_eq!(q.pop_front(), Some(x));
        }
        assert_eq!((q.pop_front(), q.len(), q.chunks.len()), (None, 0, 0));
        q.push_back(5);
        assert_eq!((q.get(0), q.len()), (Some(5), 1));
    }

    /// Sequence numbers are kept in 32 bits against the oldest record's: lists across a
    /// 2³² boundary read back whole, in order, and so do their loss marks.
    #[test]
    fn sequence_numbers_read_back_whole_across_a_32_bit_boundary() {
        let first = (5u64 << 32) - 3;
        let mut p = Postings::new(first);
        let link = PostingKey::Link(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 1));
        let client = PostingKey::ClientId(vec![0, 3, 0, 1, 1].into());
        for i in 0..6u64 {
            p.file(first + i, Some(&ended(if i % 2 == 0 { 1 } else { 2 }, 1)));
        }
        assert_eq!(p.len_of(&link), 6);
        let mut at = 0;
        let mut seen = Vec::new();
        while let Some(s) = p.next_at_or_after(&link, at) {
            seen.push(s);
            at = s + 1;
        }
        assert_eq!(seen, (first..first + 6).collect::<Vec<_>>());
        assert_eq!(p.next_at_or_after(&client, first + 1), Some(first + 2));
        assert_eq!(p.next_at_or_after(&client, first + 3), Some(first + 4));
        p.evict_before(first + 4);
        assert_eq!(p.next_at_or_after(&link, 0), Some(first + 4));
        assert!(p.lost_since(&link, first + 3) && !p.lost_since(&link, first + 4));
        assert!(p.lost_since(&client, first + 2) && !p.lost_since(&client, first + 3));
    }

    /// A list grows past its two inline places and shrinks back as the ring evicts, and keeps
    /// what it lost; the other keys are untouched.
    #[test]
    fn lists_grow_past_two_and_shrink_as_the_ring_evicts() {
        let mut p = Postings::new(10);
        let link = PostingKey::Link(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 1));
        for (i, client) in (1..=5u8).enumerate() {
            p.file(10 + i as u64, Some(&ended(client, 1)));
        }
        p.file(15, Some(&ended(9, 2)));
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
        p.file(16, Some(&ended(7, 3)));
        let new = PostingKey::ClientId(vec![0, 3, 0, 1, 7].into());
        assert_eq!((p.len_of(&new), p.next_at_or_after(&new, 0)), (1, Some(16)));
        p.evict_before(17);
        assert_eq!(p.len_of(&link), 0);
        assert!(p.lost_since(&link, 14));
    }

    /// A record is listed under the keys of one binding (DUID, address) only when it ends
    /// them (D46); those it holds are kept for the wake-ups, the newest [`RECENT`] of them,
    /// and a wake-up asking for older ones is told they are gone.
    #[test]
    fn keys_a_binding_holds_are_kept_for_the_wake_ups_only() {
        let mut p = Postings::new(0);
        let link = PostingKey::Link(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 1));
        let client = PostingKey::ClientId(vec![0, 3, 0, 1, 1].into());
        let address = PostingKey::Lease(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 1), 128);
        p.file(0, Some(&binding(1, 1)));
        p.file(1, Some(&binding(1, 1)));
        assert_eq!(
            (p.len_of(&link), p.len_of(&client), p.len_of(&address)),
            (2, 0, 0)
        );
        assert_eq!(p.keys(), 1, "only the link has a list");
        let mut seen = Vec::new();
        assert!(p.filed_since(1, |s, t| seen.push((s, t))));
        let (tc, ta) = (p.tag(&client), p.tag(&address));
        assert_eq!(seen, vec![(1, p.tag(&link)), (1, tc), (1, ta)]);
        // The final record lists them.
        p.file(2, Some(&ended(1, 1)));
        assert_eq!(
            (p.len_of(&client), p.next_at_or_after(&address, 0)),
            (1, Some(2))
        );
        // Past RECENT held keys, a wake-up from an older record is told they are gone.
        let mut seq = 3;
        for _ in 0..RECENT / 2 - 1 {
            p.file(seq, Some(&binding(2, 1)));
            seq += 1;
        }
        // Record 0's two keys made room: record 1's are still there.
        assert!(!p.filed_since(0, |_, _| {}) && p.filed_since(1, |_, _| {}));
        p.file(seq, Some(&binding(2, 1)));
        assert!(!p.filed_since(1, |_, _| {}) && p.filed_since(2, |_, _| {}));
        assert_eq!(p.len_of(&link), seq as usize + 1);
    }
}
