//! The present and its history together: the [`Store`] of bindings and the change journal.
//!
//! Every change that alters a binding is applied to the store and appended to the journal as
//! one record holding the binding's whole state after it (decision D5 for an ended lease: it is
//! in the record at zero lifetimes). An identical re-send changes nothing and writes nothing.
//!
//! Active Leasequery sessions are cursors into the journal. [`History::is_latest`] tells a
//! cursor whether the record it reads is still its binding's newest: when it is not, a newer
//! record of the same binding lies ahead and this one is skipped, which is how a slow requestor
//! receives only the current state of each binding without any queue of its own. Bindings
//! that ended keep a tombstone (their final record's sequence number) until the ring drops
//! that record.
//!
//! At start the store is rebuilt from the journal ([`History::open`]): each record, in order,
//! sets its binding to the recorded state. The source then re-sends what it holds, and only
//! what differs becomes a new change.

use std::collections::HashMap;
use std::net::Ipv6Addr;

use super::index::{Applied, BindingId, Store};
use super::journal::{Journal, JournalError, JournalFile};
use super::model::{Binding, Change, LeaseState};
use super::postings::{PostingKey, Postings};
use super::record;
use crate::codec::ServerTime;

/// Where the journal's records go: a ring in memory, or one in a mapped file.
pub trait Log {
    /// The buffer the ring lives in.
    type Buf: AsRef<[u8]> + AsMut<[u8]>;
    /// The ring, for reading.
    fn journal(&self) -> &Journal<Self::Buf>;
    /// Appends a record; its sequence number.
    fn append(&mut self, time: ServerTime, payload: &[u8]) -> Result<u64, JournalError>;
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> Log for Journal<B> {
    type Buf = B;

    fn journal(&self) -> &Self {
        self
    }

    fn append(&mut self, time: ServerTime, payload: &[u8]) -> Result<u64, JournalError> {
        Self::append(self, time, payload)
    }
}

impl Log for JournalFile {
    type Buf = memmap2::MmapMut;

    fn journal(&self) -> &Journal<memmap2::MmapMut> {
        Self::journal(self)
    }

    fn append(&mut self, time: ServerTime, payload: &[u8]) -> Result<u64, JournalError> {
        Self::append(self, time, payload)
    }
}

/// What [`History::open`] found in the journal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    /// Records read.
    pub records: u64,
    /// Records whose payload could not be read (skipped).
    pub unreadable: u64,
    /// Bindings in the store afterwards.
    pub bindings: usize,
}

/// The store, the journal, and which record is each binding's newest.
#[derive(Debug)]
pub struct History<L: Log> {
    store: Store,
    log: L,
    /// Newest record of each live binding, by [`BindingId::index`].
    seqs: Vec<u64>,
    /// Newest (final) record of each ended binding still in the ring: client DUID → per link.
    tombstones: HashMap<Box<[u8]>, Vec<(Ipv6Addr, u64)>>,
    /// Every record in the ring by the keys a filtered Active query reads.
    postings: Postings,
    scratch: Vec<u8>,
}

impl<L: Log> History<L> {
    /// A history over `store` (empty, or with its configured links) and `log`, the store
    /// rebuilt from every record in the log.
    pub fn open(store: Store, log: L) -> (Self, Restored) {
        let first = log.journal().tail().seq();
        let mut h = Self {
            store,
            log,
            seqs: Vec::new(),
            tombstones: HashMap::new(),
            postings: Postings::new(first),
            scratch: Vec::new(),
        };
        let mut restored = Restored::default();
        let mut cursor = h.log.journal().tail();
        let mut replay = Vec::new();
        while let Ok(Some(r)) = h.log.journal().read(&mut cursor) {
            restored.records = restored.records.saturating_add(1);
            match record::decode(r.payload) {
                Ok(b) => {
                    h.postings.file(r.seq, Some(&b));
                    replay.push((r.seq, b));
                }
                Err(_) => {
                    h.postings.file(r.seq, None);
                    restored.unreadable = restored.unreadable.saturating_add(1);
                }
            }
            // Replay in batches so a large journal is not held decoded all at once.
            if replay.len() >= 4096 {
                for (seq, b) in replay.drain(..) {
                    h.restore(seq, &b);
                }
            }
        }
        for (seq, b) in replay {
            h.restore(seq, &b);
        }
        restored.bindings = h.store.len();
        (h, restored)
    }

    /// Sets the binding `b` describes to exactly its recorded state.
    fn restore(&mut self, seq: u64, b: &Binding) {
        let now = b.last_change;
        let (client_id, link) = (&b.key.client_id, b.key.link);
        if let Some(id) = self.store.by_client_link(client_id, link) {
            let stale: Vec<_> = self
                .store
                .get(id)
                .map(|cur| {
                    cur.leases
                        .iter()
                        .filter(|l| {
                            !b.leases
                                .iter()
                                .any(|n| n.state.is_active() && n.slot() == l.slot())
                        })
                        .copied()
                        .collect()
                })
                .unwrap_or_default();
            for lease in stale {
                self.store.apply(
                    &Change {
                        client_id: client_id.clone(),
                        link,
                        lease: super::model::Lease {
                            state: LeaseState::Deleted,
                            ..lease
                        },
                        relay: None,
                    },
                    now,
                );
            }
        }
        for lease in b.leases.iter().filter(|l| l.state.is_active()) {
            self.store.apply(
                &Change {
                    client_id: client_id.clone(),
                    link,
                    lease: *lease,
                    relay: Some(b.relay.clone()),
                },
                now,
            );
        }
        match self.store.by_client_link(client_id, link) {
            Some(id) => {
                self.set_seq(id, seq);
                self.clear_tombstone(client_id, link);
            }
            None => self.set_tombstone(client_id, link, seq),
        }
    }

    /// The store and the log, the history given up.
    pub fn into_parts(self) -> (Store, L) {
        (self.store, self.log)
    }

    /// The bindings as they are now.
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The journal.
    #[must_use]
    pub fn journal(&self) -> &Journal<L::Buf> {
        self.log.journal()
    }

    /// The log, for its owner's housekeeping (flushing a file).
    pub fn log_mut(&mut self) -> &mut L {
        &mut self.log
    }

    /// Applies a change at `now` and journals every binding it altered (its own, and one that
    /// lost an address or prefix to it); the number of records written. The store is updated
    /// even when journaling fails (the error says why), so queries stay right.
    pub fn apply(&mut self, change: &Change, now: ServerTime) -> Result<usize, JournalError> {
        let outcome = self.store.apply(change, now);
        let mut written = 0usize;
        let mut result = Ok(());
        for applied in [outcome.displaced, Some(outcome.applied)]
            .into_iter()
            .flatten()
        {
            match self.journal_applied(&applied, now) {
                Ok(true) => written = written.saturating_add(1),
                Ok(false) => {}
                Err(e) => result = Err(e),
            }
        }
        result.map(|()| written)
    }

    /// Expires every lease whose valid lifetime ran out by `now` (decision D6), journaled like
    /// any change; the number of leases expired.
    pub fn expire(&mut self, now: ServerTime) -> Result<usize, JournalError> {
        let changes = self.store.expired(now);
        let mut result = Ok(changes.len());
        for c in &changes {
            if let Err(e) = self.apply(c, now) {
                result = Err(e);
            }
        }
        result
    }

    /// Forgets tombstones whose record the ring has dropped (no cursor can read them again),
    /// and the emptied per-key lists of keys no query `watched`.
    pub fn prune(&mut self, watched: impl Fn(&PostingKey) -> bool) {
        let first = self.log.journal().first_seq().unwrap_or(u64::MAX);
        self.tombstones.retain(|_, links| {
            links.retain(|(_, seq)| *seq >= first);
            !links.is_empty()
        });
        self.postings.forget_emptied(watched);
    }

    /// The journal's records by key (link, client, relay-id, remote-id, lease).
    #[must_use]
    pub fn postings(&self) -> &Postings {
        &self.postings
    }

    /// The last query watching `key` has ended: its list may go once empty.
    pub fn unwatched(&mut self, key: &PostingKey) {
        self.postings.unwatched(key);
    }

    /// Tombstones held (ended bindings whose final record is still in the ring).
    #[must_use]
    pub fn tombstones(&self) -> usize {
        self.tombstones.values().map(Vec::len).sum()
    }

    /// The binding a record is about, while the store holds it: a key for
    /// [`is_latest_of`](Self::is_latest_of), which is cheap, where [`is_latest`](Self::is_latest)
    /// looks the binding up by client and link each time.
    #[must_use]
    pub fn binding_of(&self, payload: &[u8]) -> Option<BindingId> {
        let (link, client_id) = record::key(payload).ok()?;
        self.store.by_client_link(client_id, link)
    }

    /// True when `seq` is the newest record of the binding `id` holds now. A `false` says
    /// nothing about a binding that has ended (its final record is the newest through its
    /// tombstone): ask [`is_latest`](Self::is_latest) then. Sequence numbers are never reused,
    /// so an `id` the store has since given to another binding is never taken for this one.
    #[must_use]
    pub fn is_latest_of(&self, id: BindingId, seq: u64) -> bool {
        self.seqs.get(id.index()) == Some(&seq)
    }

    /// True when the record `seq` with this payload is its binding's newest record: a cursor
    /// reporting it sends the binding's current state. A payload that cannot be read is never
    /// the newest.
    #[must_use]
    pub fn is_latest(&self, seq: u64, payload: &[u8]) -> bool {
        let Ok((link, client_id)) = record::key(payload) else {
            return false;
        };
        match self.store.by_client_link(client_id, link) {
            Some(id) => self.seqs.get(id.index()) == Some(&seq),
            None => self
                .tombstones
                .get(client_id)
                .is_some_and(|links| links.iter().any(|(l, s)| *l == link && *s == seq)),
        }
    }

    /// Journals one binding's new state; false when there was nothing to write.
    fn journal_applied(
        &mut self,
        applied: &Applied,
        now: ServerTime,
    ) -> Result<bool, JournalError> {
        self.scratch.clear();
        let with_ended;
        let (id, recorded) = match applied {
            Applied::Unchanged => return Ok(false),
            Applied::Updated { id, ended } => {
                let Some(b) = self.store.get(*id) else {
                    return Ok(false);
                };
                let recorded = match ended {
                    None => b,
                    Some(lease) => {
                        let mut b = b.clone();
                        b.leases.push(*lease);
                        with_ended = b;
                        &with_ended
                    }
                };
                (Some(*id), recorded)
            }
            Applied::Removed(b) => (None, b),
        };
        if record::encode(recorded, &mut self.scratch).is_err() {
            return Err(self.too_large());
        }
        let seq = self.log.append(now, &self.scratch)?;
        self.postings.file(seq, Some(recorded));
        let first = self.log.journal().first_seq().unwrap_or(seq);
        self.postings.evict_before(first);
        let key = (recorded.key.client_id.clone(), recorded.key.link);
        match id {
            Some(id) => {
                self.set_seq(id, seq);
                self.clear_tombstone(&key.0, key.1);
            }
            None => self.set_tombstone(&key.0, key.1, seq),
        }
        Ok(true)
    }

    fn too_large(&self) -> JournalError {
        JournalError::RecordTooLarge {
            len: self.scratch.len(),
            max: self.log.journal().max_payload(),
        }
    }

    fn set_seq(&mut self, id: BindingId, seq: u64) {
        let i = id.index();
        if self.seqs.len() <= i {
            self.seqs.resize(i.saturating_add(1), 0);
        }
        if let Some(s) = self.seqs.get_mut(i) {
            *s = seq;
        }
    }

    fn set_tombstone(&mut self, client_id: &[u8], link: Ipv6Addr, seq: u64) {
        let links = match self.tombstones.get_mut(client_id) {
            Some(l) => l,
            None => self.tombstones.entry(client_id.into()).or_default(),
        };
        match links.iter_mut().find(|(l, _)| *l == link) {
            Some(entry) => entry.1 = seq,
            None => links.push((link, seq)),
        }
    }

    fn clear_tombstone(&mut self, client_id: &[u8], link: Ipv6Addr) {
        if let Some(links) = self.tombstones.get_mut(client_id) {
            links.retain(|(l, _)| *l != link);
            if links.is_empty() {
                self.tombstones.remove(client_id);
            }
        }
    }
}
