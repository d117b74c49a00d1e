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
//!
//! # Writers' marks
//!
//! A source whose lines are numbered by their writer ([`History::apply_numbered`]) needs to
//! know, after lqd restarts, which of its lines lqd holds: it resumes from the next one. Each
//! named writer has a *mark*, the last of its lines lqd has taken (applied, or rejected as a bad
//! line). A line at or below its writer's mark is not applied again: a resumed writer
//! re-sending lines lqd has cannot make a binding go back to an older state.
//!
//! The mark is durable in the same record as the change it stands for: a record written for a
//! numbered line carries that writer's mark, so after a crash the journal and the marks agree
//! (a mark never runs ahead of the changes it vouches for, and a change is never in the journal
//! without its mark). A line can also leave no record: an identical re-send, the end of a lease
//! lqd did not have, a bad line. Its mark is *pending* until a record carries it, and every
//! record written carries every pending mark (whoever's change it is: an expiry, another
//! writer), or, when none comes for a while, a record of marks only
//! ([`History::flush_marks`]). Only a mark some record carries is reported
//! ([`History::mark`]): that is what a writer is told it may stop re-sending.
//!
//! A change applied but not journaled (an error, logged) leaves its mark pending too: the next
//! record acknowledges the line, since sending it again would fail the same way.
//!
//! Why a pending mark lost in a crash costs nothing: its lines changed nothing, and no record
//! was written after them (it would have carried the mark), so the store rebuilt from the
//! journal is the one those lines were applied to, and applying them again is again a no-op.
//! If something else changes the store after the restart before the writer re-sends them,
//! they arrive as any line arrives late; they were never acknowledged.
//!
//! Marks are rebuilt at start from the records; a mark in a record the ring is about to drop
//! (in the oldest eighth of its records) is carried again by a newer record, so a quiet writer
//! keeps its mark. Every version-2 record also says how many bindings the store held; when the
//! store rebuilt at start holds another number, records of live bindings left the ring (a
//! journal too small for the live state and its churn) or a crash tore it, lqd cannot vouch for
//! what any writer's lines left, and every mark is void: the writers are told they have none,
//! and re-send their state. The next record says so, so that the void marks do not come back at
//! a later start.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::Ipv6Addr;
use std::path::Path;

use super::index::{Applied, BindingId, Store};
use super::journal::{Cursor, Hole, Journal, JournalError, JournalFile};
use super::links::LinkMap;
use super::model::{Binding, Change, Lease, LeaseKind, LeaseState};
use super::postings::{PostingKey, Postings, Tag};
use super::record;
use super::record::template::{self, Templates};
use super::snapshot::{self, Covered, SnapshotError};
use crate::codec::ServerTime;

/// Where the journal's records go: a ring in memory, or one in a mapped file.
pub trait Log {
    /// The buffer the ring lives in.
    type Buf: AsRef<[u8]> + AsMut<[u8]>;
    /// The ring, for reading.
    fn journal(&self) -> &Journal<Self::Buf>;
    /// Appends a record; its sequence number.
    fn append(&mut self, time: ServerTime, payload: &[u8]) -> Result<u64, JournalError>;
    /// Records that the journal holds nothing from before `began` ([`Journal::mark_began`]).
    fn mark_began(&mut self, began: ServerTime);
    /// Takes what the start's replay read out of the process's resident set, where the
    /// buffer allows it ([`JournalFile::release_pages`]).
    fn release_pages(&mut self) {}
    /// Asks for the records from `from` to the head to be read into memory ahead of a catch-up
    /// reading them, where the buffer is a file ([`JournalFile::prefetch_from`]).
    fn prefetch_from(&self, _from: &Cursor) {}
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> Log for Journal<B> {
    type Buf = B;

    fn journal(&self) -> &Self {
        self
    }

    fn append(&mut self, time: ServerTime, payload: &[u8]) -> Result<u64, JournalError> {
        Self::append(self, time, payload)
    }

    fn mark_began(&mut self, began: ServerTime) {
        Self::mark_began(self, began);
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

    fn mark_began(&mut self, began: ServerTime) {
        Self::mark_began(self, began);
    }

    fn release_pages(&mut self) {
        Self::release_pages(self);
    }

    fn prefetch_from(&self, from: &Cursor) {
        Self::prefetch_from(self, from);
    }
}

/// What [`History::open`] found in the journal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    /// Records the journal holds: what the store was rebuilt from.
    pub records: u64,
    /// Records read and replayed at this start: every one, or those after a snapshot's.
    pub replayed: u64,
    /// Records whose payload could not be read (skipped).
    pub unreadable: u64,
    /// Bindings in the store afterwards.
    pub bindings: usize,
    /// Writers' marks restored.
    pub marks: usize,
    /// Marks found but voided: the rebuilt store holds another number of bindings than the
    /// journal's last record says lqd held (records of live bindings are gone).
    pub marks_void: bool,
}

/// The start's replay releases the journal pages it has read every this many records.
const RELEASE_EVERY: u64 = 1 << 20;

/// A record carrying a mark older than this share of the ring's records (its oldest eighth) has
/// the mark carried again, well before the ring drops it.
const MARK_REFRESH: u64 = 8;

/// One writer's mark.
#[derive(Debug, Clone, Copy)]
struct Mark {
    /// The last line taken: applied, found already applied, or rejected.
    taken: u64,
    /// The last line a record carries.
    recorded: Option<u64>,
    /// The sequence number of the newest record carrying this mark.
    at: u64,
    /// No record carries `taken` yet, or the mark must be carried again.
    pending: bool,
    /// `recorded` moved and [`History::take_recorded`] has not handed it out yet.
    unpublished: bool,
}

/// Every writer's mark.
#[derive(Debug, Default)]
struct Marks {
    /// Writers' names and marks, in the order lqd met them.
    writers: Vec<(Box<str>, Mark)>,
    /// Each writer's place in `writers`.
    index: HashMap<Box<str>, usize>,
    /// The writers whose mark is pending, in the order they became so.
    pending: Vec<usize>,
    /// The writers whose recorded mark moved since [`History::take_recorded`] last looked.
    recorded: Vec<usize>,
    /// The next record voids every mark before it.
    reset: bool,
    /// At most the oldest `at` of any mark.
    oldest_at: u64,
}

impl Marks {
    fn get(&self, writer: &str) -> Option<&Mark> {
        let i = *self.index.get(writer)?;
        self.writers.get(i).map(|(_, m)| m)
    }

    /// The place of `writer`, added with `mark` when new.
    fn place(&mut self, writer: &str, mark: Mark) -> usize {
        if let Some(&i) = self.index.get(writer) {
            return i;
        }
        let i = self.writers.len();
        self.writers.push((writer.into(), mark));
        self.index.insert(writer.into(), i);
        i
    }

    /// `writer` took line `seq`: pending until a record carries it.
    fn take(&mut self, writer: &str, seq: u64) {
        let new = Mark {
            taken: seq,
            recorded: None,
            at: 0,
            pending: false,
            unpublished: false,
        };
        let i = self.place(writer, new);
        if let Some((_, m)) = self.writers.get_mut(i) {
            m.taken = seq;
            if !m.pending {
                m.pending = true;
                self.pending.push(i);
            }
        }
    }

    /// True when `seq` is at or below `writer`'s mark: the line was taken before.
    fn seen(&self, writer: &str, seq: u64) -> bool {
        self.get(writer).is_some_and(|m| seq <= m.taken)
    }

    /// The pending marks the next record carries.
    fn carried(&self) -> impl ExactSizeIterator<Item = (&str, u64)> + '_ {
        self.pending.iter().take(record::MAX_MARKS).map(|&i| {
            self.writers
                .get(i)
                .map_or(("", 0), |(w, m)| (&**w, m.taken))
        })
    }

    /// Record `seq` carried [`carried`](Self::carried): those marks are recorded.
    fn written(&mut self, seq: u64) {
        let n = self.pending.len().min(record::MAX_MARKS);
        for i in self.pending.drain(..n) {
            if let Some((_, m)) = self.writers.get_mut(i) {
                m.pending = false;
                m.at = seq;
                if m.recorded != Some(m.taken) {
                    m.recorded = Some(m.taken);
                    if !m.unpublished {
                        m.unpublished = true;
                        self.recorded.push(i);
                    }
                }
            }
        }
        self.reset = false;
    }

    /// Makes pending again every mark carried by no record from `first` on, nor by any in the
    /// oldest eighth of the records up to `next`.
    fn refresh(&mut self, first: u64, next: u64) {
        let limit = first.saturating_add(next.saturating_sub(first) / MARK_REFRESH);
        if self.oldest_at >= limit {
            return;
        }
        let mut oldest = u64::MAX;
        for (i, (_, m)) in self.writers.iter_mut().enumerate() {
            if m.at < limit && !m.pending && m.recorded.is_some() {
                m.pending = true;
                self.pending.push(i);
            } else if !m.pending {
                oldest = oldest.min(m.at);
            }
        }
        // A pending mark gets an `at` of `next` or later when a record carries it.
        self.oldest_at = oldest.min(next);
    }

    /// A record read at start: its marks, after voiding the earlier ones if it says so.
    fn replay(&mut self, seq: u64, trailer: &record::Trailer) {
        if trailer.reset {
            self.clear();
        }
        for (w, s) in &trailer.marks {
            let new = Mark {
                taken: *s,
                recorded: Some(*s),
                at: seq,
                pending: false,
                unpublished: false,
            };
            let i = self.place(w, new);
            if let Some((_, m)) = self.writers.get_mut(i) {
                m.taken = m.taken.max(*s);
                m.recorded = Some(m.taken);
                m.at = seq;
            }
        }
    }

    /// Forgets every mark.
    fn clear(&mut self) {
        self.writers.clear();
        self.index.clear();
        self.pending.clear();
        self.recorded.clear();
    }

    /// Writes the marks some record carries into a snapshot (D43), and whether the next record
    /// voids the marks before it. A mark taken but not yet carried is left out, as a replay
    /// of the journal leaves it out: its lines are taken again, and change nothing again.
    fn save_snapshot<W: Write>(&self, w: &mut snapshot::Writer<W>) -> io::Result<()> {
        w.u8(u8::from(self.reset))?;
        let recorded: Vec<(&str, u64, u64)> = self
            .writers
            .iter()
            .filter_map(|(name, m)| Some((&**name, m.recorded?, m.at)))
            .collect();
        w.len32(recorded.len())?;
        for (name, seq, at) in recorded {
            w.blob(name.as_bytes())?;
            w.u64(seq)?;
            w.u64(at)?;
        }
        Ok(())
    }

    /// The marks a snapshot holds.
    fn load_snapshot<R: Read>(r: &mut snapshot::Reader<R>) -> Result<Self, SnapshotError> {
        let mut marks = Self {
            reset: r.flag()?,
            ..Self::default()
        };
        let n = r.count32(4 + 8 + 8)?;
        for _ in 0..n {
            let name = String::from_utf8(r.blob()?.into_vec())
                .map_err(|_| snapshot::damaged("a writer's name that is not UTF-8"))?;
            let seq = r.u64()?;
            let at = r.u64()?;
            if marks.index.contains_key(name.as_str()) {
                return Err(snapshot::damaged("a writer twice"));
            }
            marks.place(
                &name,
                Mark {
                    taken: seq,
                    recorded: Some(seq),
                    at,
                    pending: false,
                    unpublished: false,
                },
            );
        }
        Ok(marks)
    }
}

/// What [`History::rebuilt_for_test`] gives.
#[cfg(test)]
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RebuiltForTest {
    pub(crate) bindings: Vec<(Binding, u64)>,
    pub(crate) tombstones: Vec<(Box<[u8]>, Ipv6Addr, u64)>,
    pub(crate) marks: Vec<(String, u64, Option<u64>, u64)>,
    pub(crate) marks_reset: bool,
    pub(crate) templates: Vec<(u32, Box<[u8]>, Option<u64>)>,
    pub(crate) postings: Vec<(Tag, Vec<u64>, Option<u64>)>,
}

/// What a snapshot holds besides the log.
#[derive(Debug)]
struct Parts {
    store: Store,
    seqs: Vec<u64>,
    tombstones: HashMap<Box<[u8]>, Vec<(Ipv6Addr, u64)>>,
    last_count: Option<u32>,
    marks: Marks,
    templates: Templates,
    postings: Postings,
}

/// What a start did with the snapshot beside the journal (D43).
#[derive(Debug)]
pub enum SnapshotStart {
    /// There was none: every record was replayed.
    None,
    /// Loaded; the records after `covered` were replayed.
    Loaded {
        /// The record it covers.
        covered: u64,
        /// How long reading it took (the replay after it not included).
        read: std::time::Duration,
    },
    /// Refused, for this reason: every record was replayed.
    Refused(SnapshotError),
}

/// A snapshot read from its file by [`read_snapshot`], not yet checked against the journal.
#[derive(Debug)]
pub struct SnapshotRead {
    /// Its header and parts; `None`: there is none.
    result: Result<Option<(snapshot::Header, Parts)>, SnapshotError>,
    /// How long reading it took.
    took: std::time::Duration,
}

impl SnapshotRead {
    /// A read that failed: `why`.
    #[must_use]
    pub fn failed(why: SnapshotError) -> Self {
        Self {
            result: Err(why),
            took: std::time::Duration::ZERO,
        }
    }
}

/// Reads the snapshot at `path` (D43) for a store filing under `link_map`: every part, checked
/// for damage and against the links, but not yet against the journal
/// ([`History::open_from_snapshot`] does that), so that it may be read while the journal is
/// recovered.
#[must_use]
pub fn read_snapshot(path: &Path, link_map: LinkMap) -> SnapshotRead {
    let started = std::time::Instant::now();
    let result = (|| {
        let Some(mut r) = snapshot::open_file(path)? else {
            return Ok(None);
        };
        let header = snapshot::Header::read(&mut r)?;
        if header.links != snapshot::links_fingerprint(&link_map) {
            return Err(SnapshotError::Links);
        }
        let next = header.covered.seq.saturating_add(1);
        let parts = read_parts(link_map, &mut r, next)?;
        Ok(Some((header, parts)))
    })();
    SnapshotRead {
        result,
        took: started.elapsed(),
    }
}

/// Checks a snapshot's header against `journal`: a cursor at the first record after the one
/// it covers.
fn check_journal<B: AsRef<[u8]> + AsMut<[u8]>>(
    header: &snapshot::Header,
    journal: &Journal<B>,
) -> Result<Cursor, SnapshotError> {
    let covered = header.covered;
    let next = journal.next_seq();
    if covered.seq >= next {
        return Err(SnapshotError::Ahead {
            covered: covered.seq,
            next,
        });
    }
    let first = journal.first_seq();
    if first.is_none_or(|f| covered.seq < f) {
        return Err(SnapshotError::Dropped {
            covered: covered.seq,
            first,
        });
    }
    let record = journal
        .cursor_at(covered.seq)
        .ok()
        .and_then(|mut c| journal.read(&mut c).ok().flatten())
        .map(|r| Covered::of(r.seq, r.time, r.payload));
    if record != Some(covered) {
        return Err(SnapshotError::OtherJournal(covered.seq));
    }
    journal
        .cursor_at(covered.seq.saturating_add(1))
        .map_err(|_| SnapshotError::OtherJournal(covered.seq))
}

/// Reads the rest of a snapshot whose next record is `next`, to its end mark.
fn read_parts<R: Read>(
    link_map: LinkMap,
    r: &mut snapshot::Reader<R>,
    next: u64,
) -> Result<Parts, SnapshotError> {
    let started = std::time::Instant::now();
    let store = Store::load_snapshot(link_map, r)?;
    let bindings = store.len();
    let slots = started.elapsed();
    // The store's indexes are built on another thread while the rest is read.
    std::thread::scope(|scope| {
        let indexing = scope.spawn(move || {
            let mut store = store;
            store.rebuild_indexes();
            (store, started.elapsed())
        });
        let rest = read_rest(r, bindings, next);
        let rest_read = started.elapsed();
        let (store, indexed) = indexing
            .join()
            .map_err(|_| snapshot::damaged("rebuilding the store's indexes failed"))?;
        tracing::info!(
            slots_s = slots.as_secs_f64(),
            indexes_s = indexed.as_secs_f64(),
            rest_s = rest_read.as_secs_f64(),
            "snapshot read: the store's slots, then its indexes and the rest on two threads              (seconds from the start of the read)"
        );
        let (seqs, tombstones, marks, templates, postings) = rest?;
        Ok(Parts {
            store,
            seqs,
            tombstones,
            last_count: Some(u32::try_from(bindings).unwrap_or(u32::MAX)),
            marks,
            templates,
            postings,
        })
    })
}

/// What a snapshot holds after the store.
type Rest = (
    Vec<u64>,
    HashMap<Box<[u8]>, Vec<(Ipv6Addr, u64)>>,
    Marks,
    Templates,
    Postings,
);

/// Reads the parts of a snapshot after its store of `bindings` bindings, to its end mark.
fn read_rest<R: Read>(
    r: &mut snapshot::Reader<R>,
    bindings: usize,
    next: u64,
) -> Result<Rest, SnapshotError> {
    let mut seqs = Vec::with_capacity(bindings);
    for _ in 0..bindings {
        let seq = r.u64()?;
        if seq >= next {
            return Err(snapshot::damaged(
                "a binding's record after the covered one",
            ));
        }
        seqs.push(seq);
    }
    let n = r.count64(4 + 4)?;
    let mut tombstones = HashMap::with_capacity(n);
    for _ in 0..n {
        let client = r.blob()?;
        let links = r.count32(16 + 8)?;
        let mut v = Vec::with_capacity(links);
        for _ in 0..links {
            v.push((r.addr()?, r.u64()?));
        }
        if tombstones.insert(client, v).is_some() {
            return Err(snapshot::damaged("a client's tombstones twice"));
        }
    }
    let marks = Marks::load_snapshot(r)?;
    let templates = Templates::load_snapshot(r)?;
    let postings = Postings::load_snapshot(r)?;
    if postings.next_seq() != next {
        return Err(snapshot::damaged(format!(
            "its postings end before record {}, not {next}",
            postings.next_seq()
        )));
    }
    r.finish()?;
    Ok((seqs, tombstones, marks, templates, postings))
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
    /// The numbered writers' marks.
    marks: Marks,
    /// Record times are the source's (D33), not lqd's clock.
    source_times: bool,
    /// The relay templates the journal's records name (D42).
    templates: Templates,
    scratch: Vec<u8>,
}

impl<L: Log> History<L> {
    /// A history over `store` (empty, or with its configured links) and `log`, the store
    /// rebuilt from every record in the log.
    pub fn open(store: Store, log: L) -> (Self, Restored) {
        let first = log.journal().tail().seq();
        let h = Self {
            store,
            log,
            seqs: Vec::new(),
            tombstones: HashMap::new(),
            postings: Postings::new(first),
            marks: Marks::default(),
            source_times: false,
            templates: Templates::new(),
            scratch: Vec::new(),
        };
        let from = h.log.journal().tail();
        h.replay(from, None)
    }

    /// Replays the records from `from` on into the history: the store, the postings, the
    /// marks and the templates; `last_count` is the store's size as the last record before
    /// `from` gave it, if it did. Then voids the marks when the store holds another number of
    /// bindings than the last record says.
    fn replay(mut self, from: Cursor, mut last_count: Option<u32>) -> (Self, Restored) {
        let mut restored = Restored::default();
        let h = &mut self;
        // The relay templates first: a record may be older than the newest definition of the
        // template it names (the ring dropped the one before it).
        let mut cursor = from;
        while let Ok(Some(r)) = h.log.journal().read(&mut cursor) {
            if let Some((id, body)) = record::definition_of(r.payload) {
                h.templates.learn(id, body, r.seq);
            }
        }
        // Each pass reads the ring's pages once: what it has read leaves the resident set as
        // it goes, so that a full replay's peak is the mirror's, not the mirror and the
        // journal's whole size.
        h.log.release_pages();
        let mut cursor = from;
        let mut replay = Vec::new();
        while let Ok(Some(r)) = h.log.journal().read(&mut cursor) {
            restored.replayed = restored.replayed.saturating_add(1);
            if Hole::from_marker(r.payload).is_some() {
                // A gap or hole marker: no binding, no marks.
                h.postings.file(r.seq, None);
                continue;
            }
            match record::read_in(r.payload, &h.templates) {
                Ok(p) if p.definition.is_some() => h.postings.file(r.seq, None),
                Ok(p) => {
                    h.postings.file(r.seq, p.binding.as_ref());
                    // The template's newest use, so that its definition is written again
                    // before the ring drops it while this record still names it.
                    if let Some(id) = p.template {
                        h.templates.used(id, r.seq);
                    }
                    if let Some(b) = p.binding {
                        replay.push((r.seq, b));
                    }
                    last_count = p.trailer.as_ref().filter(|t| t.counted).map(|t| t.bindings);
                    if let Some(t) = &p.trailer {
                        h.marks.replay(r.seq, t);
                    }
                }
                Err(_) => {
                    h.postings.file(r.seq, None);
                    restored.unreadable = restored.unreadable.saturating_add(1);
                    last_count = None;
                }
            }
            // Replay in batches so a large journal is not held decoded all at once.
            if replay.len() >= 4096 {
                for (seq, b) in replay.drain(..) {
                    h.restore(seq, b);
                }
            }
            if restored.replayed % RELEASE_EVERY == 0 {
                h.log.release_pages();
            }
        }
        for (seq, b) in replay {
            h.restore(seq, b);
        }
        // The ring may have dropped records a snapshot still filed.
        if let Some(first) = h.log.journal().first_seq() {
            h.postings.evict_before(first);
        }
        restored.records = h.log.journal().len();
        // The replay read the whole ring: its pages need not stay in lqd's resident set.
        h.log.release_pages();
        restored.bindings = h.store.len();
        if !h.marks.writers.is_empty() && last_count != Some(h.binding_count()) {
            h.marks.clear();
            h.marks.reset = true;
            restored.marks_void = true;
        }
        restored.marks = h.marks.writers.len();
        h.marks.oldest_at = h.marks.writers.iter().map(|(_, m)| m.at).min().unwrap_or(0);
        (self, restored)
    }

    /// A history over `store` and `log` from the snapshot at `path` (D43) and the records after
    /// the one it covers; from every record in the log when there is no snapshot, or it is
    /// refused (what [`SnapshotStart`] says, with why).
    pub fn open_with_snapshot(
        store: Store,
        log: L,
        path: &Path,
    ) -> (Self, Restored, SnapshotStart) {
        let read = read_snapshot(path, store.link_map().clone());
        Self::open_from_snapshot(store, log, read)
    }

    /// [`open_with_snapshot`](Self::open_with_snapshot) with the snapshot already read (by
    /// [`read_snapshot`], which may run while the journal is recovered): it is checked against
    /// `log`'s journal here, and used or refused.
    pub fn open_from_snapshot(
        store: Store,
        log: L,
        read: SnapshotRead,
    ) -> (Self, Restored, SnapshotStart) {
        let SnapshotRead { result, took } = read;
        let (header, parts) = match result {
            Ok(Some(found)) => found,
            Ok(None) => {
                let (h, restored) = Self::open(store, log);
                return (h, restored, SnapshotStart::None);
            }
            Err(e) => {
                let (h, restored) = Self::open(store, log);
                return (h, restored, SnapshotStart::Refused(e));
            }
        };
        let from = match check_journal(&header, log.journal()) {
            Ok(from) => from,
            Err(e) => {
                // Freed on another thread: millions of allocations the start need not wait for.
                std::thread::spawn(move || drop(parts));
                let (h, restored) = Self::open(store, log);
                return (h, restored, SnapshotStart::Refused(e));
            }
        };
        let Parts {
            store,
            seqs,
            tombstones,
            last_count,
            marks,
            templates,
            postings,
        } = parts;
        let h = Self {
            store,
            log,
            seqs,
            tombstones,
            postings,
            marks,
            source_times: false,
            templates,
            scratch: Vec::new(),
        };
        let (h, restored) = h.replay(from, last_count);
        let start = SnapshotStart::Loaded {
            covered: header.covered.seq,
            read: took,
        };
        (h, restored, start)
    }

    /// Writes a snapshot of the history (D43) to `path`, covering the journal's newest record;
    /// `None` when the journal holds no record (there is nothing a snapshot would save).
    pub fn write_snapshot(&self, path: &Path) -> io::Result<Option<snapshot::Written>> {
        let journal = self.log.journal();
        let Some(last) = journal
            .next_seq()
            .checked_sub(1)
            .filter(|_| !journal.is_empty())
        else {
            return Ok(None);
        };
        let covered = journal
            .cursor_at(last)
            .ok()
            .and_then(|mut c| journal.read(&mut c).ok().flatten())
            .map(|r| Covered::of(r.seq, r.time, r.payload))
            .ok_or_else(|| io::Error::other("the journal's newest record cannot be read"))?;
        if self.postings.next_seq() != journal.next_seq() {
            return Err(io::Error::other(
                "the postings do not follow the journal; no snapshot",
            ));
        }
        let header = snapshot::Header {
            covered,
            records: journal.len(),
            links: snapshot::links_fingerprint(self.store.link_map()),
        };
        let octets = snapshot::write_file(path, |w| {
            header.write(w)?;
            self.store.save_snapshot(w)?;
            for (id, _) in self.store.iter() {
                w.u64(self.seqs.get(id.index()).copied().unwrap_or(0))?;
            }
            w.u64(self.tombstones.len() as u64)?;
            for (client, links) in &self.tombstones {
                w.blob(client)?;
                w.len32(links.len())?;
                for (link, seq) in links {
                    w.addr(*link)?;
                    w.u64(*seq)?;
                }
            }
            self.marks.save_snapshot(w)?;
            self.templates.save_snapshot(w)?;
            self.postings.save_snapshot(w)
        })?;
        Ok(Some(snapshot::Written {
            covered: last,
            octets,
            bindings: self.store.len(),
        }))
    }

    /// Everything a start rebuilds, in a form two histories can be compared by (tests of the
    /// snapshot, D43): each binding with its newest record, the tombstones, the marks, the
    /// templates and the posting lists.
    #[cfg(test)]
    pub(crate) fn rebuilt_for_test(&self) -> RebuiltForTest {
        let mut bindings: Vec<(Binding, u64)> = self
            .store
            .iter()
            .map(|(id, b)| {
                (
                    b.to_binding(),
                    self.seqs.get(id.index()).copied().unwrap_or(0),
                )
            })
            .collect();
        bindings.sort_by(|a, b| {
            (&a.0.key.client_id, a.0.key.link).cmp(&(&b.0.key.client_id, b.0.key.link))
        });
        let mut tombstones: Vec<(Box<[u8]>, Ipv6Addr, u64)> = self
            .tombstones
            .iter()
            .flat_map(|(c, links)| links.iter().map(move |(l, s)| (c.clone(), *l, *s)))
            .collect();
        tombstones.sort();
        let mut marks: Vec<(String, u64, Option<u64>, u64)> = self
            .marks
            .writers
            .iter()
            .map(|(w, m)| (w.to_string(), m.taken, m.recorded, m.at))
            .collect();
        marks.sort();
        RebuiltForTest {
            bindings,
            tombstones,
            marks,
            marks_reset: self.marks.reset,
            templates: self.templates.entries_for_test(),
            postings: self.postings.all_lists(),
        }
    }

    /// The store's size as a record gives it.
    fn binding_count(&self) -> u32 {
        u32::try_from(self.store.len()).unwrap_or(u32::MAX)
    }

    /// Sets the binding `b` describes to exactly its recorded state. One [`Change`] is built and
    /// reused for every lease: the relays go with the first active lease only (`None` keeps
    /// what the binding has), so a record's relayed message is moved once, never copied.
    fn restore(&mut self, seq: u64, b: Binding) {
        let now = b.last_change;
        let Binding {
            key, leases, relay, ..
        } = b;
        let link = key.link;
        let existing = self.store.by_client_link(&key.client_id, link);
        // Any lease to start the change with; each use sets its own.
        let first = leases.first().copied().or_else(|| {
            existing
                .and_then(|id| self.store.get(id))
                .and_then(|cur| cur.leases().first().copied())
        });
        let Some(first) = first else {
            // No lease in the record and none held: the binding has ended.
            self.set_tombstone(&key.client_id, link, seq);
            return;
        };
        let mut change = Change {
            client_id: key.client_id,
            link,
            lease: first,
            relay: None,
        };
        if let Some(id) = existing {
            let stale: smallvec::SmallVec<[Lease; 2]> = self
                .store
                .get(id)
                .map(|cur| {
                    cur.leases()
                        .iter()
                        .filter(|l| {
                            !leases
                                .iter()
                                .any(|n| n.state.is_active() && n.slot() == l.slot())
                        })
                        .copied()
                        .collect()
                })
                .unwrap_or_default();
            for lease in stale {
                change.lease = Lease {
                    state: LeaseState::Deleted,
                    ..lease
                };
                self.store.apply(&change, now);
            }
        }
        let mut relay = Some(relay);
        for lease in leases.iter().filter(|l| l.state.is_active()) {
            change.lease = *lease;
            change.relay = relay.take();
            self.store.apply(&change, now);
        }
        let client_id = &change.client_id;
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

    /// Replaces the configured links (a reload, D31); see [`Store::set_link_map`].
    pub fn set_link_map(&mut self, link_map: LinkMap) {
        self.store.set_link_map(link_map);
    }

    /// The journal.
    #[must_use]
    pub fn journal(&self) -> &Journal<L::Buf> {
        self.log.journal()
    }

    /// The log.
    pub fn log(&self) -> &L {
        &self.log
    }

    /// The log, for its owner's housekeeping (flushing a file).
    pub fn log_mut(&mut self) -> &mut L {
        &mut self.log
    }

    /// Takes record times from the source (D33): the time passed with each change is the
    /// source's (a database's commit time), and Active data messages carry their record's
    /// time as base-time, so that every lqd following the same source says the same times.
    pub fn set_source_times(&mut self, on: bool) {
        self.source_times = on;
    }

    /// True when record times are the source's (D33).
    #[must_use]
    pub const fn source_times(&self) -> bool {
        self.source_times
    }

    /// The source re-sends its whole state from a snapshot at `now`, and could not give its
    /// changes up to `reaches` (D33): a catch-up from a START_TIME at or before `reaches`
    /// gets DataMissing. An empty journal begins there; one that holds records gets a gap
    /// marker (as the marker of a damaged journal's hole, which readers skip). True when a
    /// marker was written.
    pub fn source_gap(
        &mut self,
        reaches: ServerTime,
        now: ServerTime,
    ) -> Result<bool, JournalError> {
        let journal = self.log.journal();
        if journal.is_empty() && journal.evicted_time().is_none() {
            self.log.mark_began(ServerTime(reaches.0.saturating_add(1)));
            return Ok(false);
        }
        let marker = Hole {
            lost: 0,
            after: journal.newest_time(),
            before: reaches,
        }
        .marker();
        let seq = self.log.append(now, &marker)?;
        self.postings.file(seq, None);
        let first = self.log.journal().first_seq().unwrap_or(seq);
        self.postings.evict_before(first);
        Ok(true)
    }

    /// Applies a change at `now` and journals every binding it altered (its own, and one that
    /// lost an address or prefix to it); the number of records written. The store is updated
    /// even when journaling fails (the error says why), so queries stay right.
    pub fn apply(&mut self, change: &Change, now: ServerTime) -> Result<usize, JournalError> {
        self.apply_marked(change, now, None)
    }

    /// Ends, at `now`, every lease the store holds that `keep` does not: a source that re-sent
    /// its whole state (a database snapshot) tells lqd this way which leases ended while it
    /// could not say so. Each is journaled as deleted (D5); the number of records written.
    pub fn reconcile(
        &mut self,
        keep: impl Fn(LeaseKind, Ipv6Addr) -> bool,
        now: ServerTime,
    ) -> Result<usize, JournalError> {
        let gone: Vec<Change> = self
            .store
            .iter()
            .flat_map(|(_, b)| {
                b.leases()
                    .iter()
                    .filter(|l| !keep(l.kind, l.address))
                    .map(move |l| Change {
                        client_id: b.client_id().into(),
                        link: b.link(),
                        lease: Lease {
                            preferred_lifetime: 0,
                            valid_lifetime: 0,
                            cltt: now,
                            state: LeaseState::Deleted,
                            ..*l
                        },
                        relay: None,
                    })
            })
            .collect();
        let mut written = 0;
        for change in &gone {
            written += self.apply(change, now)?;
        }
        Ok(written)
    }

    /// Applies line `seq` of the writer named `writer` (see the [module documentation](self)):
    /// as [`apply`](Self::apply), the writer's mark carried by the last record the change
    /// writes, or pending when it writes none. `None` when `seq` is at or below the writer's
    /// mark: that line was taken before, and is not applied again.
    pub fn apply_numbered(
        &mut self,
        change: &Change,
        now: ServerTime,
        writer: &str,
        seq: u64,
    ) -> Result<Option<usize>, JournalError> {
        if self.marks.seen(writer, seq) {
            return Ok(None);
        }
        self.apply_marked(change, now, Some((writer, seq)))
            .map(Some)
    }

    /// Line `seq` of `writer` was a bad line, skipped: the writer's mark moves past it
    /// (pending). False when `seq` is at or below the mark.
    pub fn reject_numbered(&mut self, writer: &str, seq: u64) -> bool {
        if self.marks.seen(writer, seq) {
            return false;
        }
        self.marks.take(writer, seq);
        true
    }

    /// True while some mark waits for a record to carry it.
    #[must_use]
    pub fn marks_pending(&self) -> bool {
        !self.marks.pending.is_empty()
    }

    /// Writes a record of marks only when some are pending; true when it did.
    pub fn flush_marks(&mut self, now: ServerTime) -> Result<bool, JournalError> {
        if self.marks.pending.is_empty() {
            return Ok(false);
        }
        let count = self.binding_count();
        Self::write_to(
            &mut self.log,
            &mut self.postings,
            &mut self.marks,
            &mut self.templates,
            &mut self.scratch,
            (None, count),
            now,
        )?;
        Ok(true)
    }

    /// The last line of `writer` a record carries (what lqd may acknowledge), if any.
    #[must_use]
    pub fn mark(&self, writer: &str) -> Option<u64> {
        self.marks.get(writer).and_then(|m| m.recorded)
    }

    /// Every writer's mark a record carries.
    pub fn marks(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.marks
            .writers
            .iter()
            .filter_map(|(w, m)| Some((&**w, m.recorded?)))
    }

    /// Hands `f` each writer whose recorded mark moved since the last call, with that mark.
    pub fn take_recorded(&mut self, mut f: impl FnMut(&str, u64)) {
        let Marks {
            writers, recorded, ..
        } = &mut self.marks;
        for i in recorded.drain(..) {
            if let Some((w, m)) = writers.get_mut(i) {
                m.unpublished = false;
                if let Some(seq) = m.recorded {
                    f(w, seq);
                }
            }
        }
    }

    /// [`apply`](Self::apply), taking `mark` just before the change's last record is written
    /// (or after the change when it writes none), so that a crash between two records of one
    /// change leaves the mark out.
    fn apply_marked(
        &mut self,
        change: &Change,
        now: ServerTime,
        mark: Option<(&str, u64)>,
    ) -> Result<usize, JournalError> {
        let outcome = self.store.apply(change, now);
        let mut parts = [outcome.displaced, Some(outcome.applied)];
        let last = parts
            .iter()
            .rposition(|a| a.as_ref().is_some_and(|a| *a != Applied::Unchanged));
        // With no record to write, taking it first is the same as taking it last.
        let mark_at = last.unwrap_or(0);
        let mut written = 0usize;
        let mut result = Ok(());
        for (i, applied) in parts.iter_mut().enumerate() {
            if i == mark_at {
                if let Some((w, seq)) = mark {
                    self.marks.take(w, seq);
                }
            }
            let Some(applied) = applied.take() else {
                continue;
            };
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
    pub fn prune(&mut self, watched: impl Fn(Tag) -> bool) {
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

    /// The first record at or after `seq` that a query filtering on `key` reads: the next one
    /// in `key`'s list, or, for a key of one binding (D46), the newest record of a binding
    /// holding it now when that comes first. Every record a filtered query sends is its
    /// binding's newest and carries its key, so it is one of these: held by the binding now,
    /// or ended by that record (listed).
    #[must_use]
    pub fn next_filed(&self, key: &PostingKey, seq: u64) -> Option<u64> {
        let mut next = self.postings.next_at_or_after(key, seq);
        if key.of_binding() {
            let first = self.log.journal().first_seq().unwrap_or(u64::MAX);
            let floor = seq.max(first);
            self.holders_newest(key, |s| {
                if s >= floor && next.is_none_or(|n| s < n) {
                    next = Some(s);
                }
            });
        }
        next
    }

    /// The newest record of each binding holding `key` now, a key of one binding (D46).
    fn holders_newest(&self, key: &PostingKey, mut each: impl FnMut(u64)) {
        self.store.holders(key, |id| {
            if let Some(&s) = self.seqs.get(id.index()) {
                each(s);
            }
        });
    }

    /// True when a record at or after `seq` that a query filtering on `key` would read has
    /// been evicted: one of its list, or the newest record of a binding holding it (a ring
    /// too small for the live state).
    #[must_use]
    pub fn lost_since(&self, key: &PostingKey, seq: u64) -> bool {
        if self.postings.lost_since(key, seq) {
            return true;
        }
        let first = self.log.journal().first_seq().unwrap_or(u64::MAX);
        let mut lost = false;
        if key.of_binding() && seq < first {
            self.holders_newest(key, |s| lost |= s >= seq && s < first);
        }
        lost
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

    /// The binding a record of this journal holds (see [`record::decode_in`]).
    pub fn decode(&self, payload: &[u8]) -> Result<Binding, record::RecordError> {
        record::decode_in(payload, &self.templates)
    }

    /// A record of this journal read back (see [`record::read_in`]).
    pub fn read_payload(&self, payload: &[u8]) -> Result<record::Payload, record::RecordError> {
        record::read_in(payload, &self.templates)
    }

    /// The relay templates the journal's records name (D42).
    #[must_use]
    pub const fn templates(&self) -> &Templates {
        &self.templates
    }

    /// The binding a record is about, while the store holds it: a key for
    /// [`is_latest_of`](Self::is_latest_of), which is cheap, where [`is_latest`](Self::is_latest)
    /// looks the binding up by client and link each time.
    #[must_use]
    pub fn binding_of(&self, payload: &[u8]) -> Option<BindingId> {
        let (link, client_id) = record::key_in(payload, &self.templates).ok()?;
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
        let Ok((link, client_id)) = record::key_in(payload, &self.templates) else {
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
        let with_ended;
        let (id, recorded) = match applied {
            Applied::Unchanged => return Ok(false),
            Applied::Updated { id, ended } => {
                let Some(b) = self.store.get(*id) else {
                    return Ok(false);
                };
                let mut b = b.to_binding();
                b.leases.extend(ended.iter().copied());
                with_ended = b;
                (Some(*id), &with_ended)
            }
            Applied::Removed(b) => (None, b),
        };
        let count = self.binding_count();
        let seq = Self::write_to(
            &mut self.log,
            &mut self.postings,
            &mut self.marks,
            &mut self.templates,
            &mut self.scratch,
            (Some(recorded), count),
            now,
        )?;
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

    /// Appends a record of `binding` (none: marks only) carrying the store's size `count` (when
    /// there are writers' marks) and the pending marks, and files it; its sequence number.
    /// Before it, the definition of its relay template when the ring holds none; after it, the
    /// definitions the ring is about to drop while newer records name them (D42). Over the
    /// fields it writes, so that `binding` may be borrowed from the store.
    fn write_to(
        log: &mut L,
        postings: &mut Postings,
        marks: &mut Marks,
        templates: &mut Templates,
        scratch: &mut Vec<u8>,
        (binding, count): (Option<&Binding>, u32),
        now: ServerTime,
    ) -> Result<u64, JournalError> {
        let split = binding
            .and_then(|b| b.relay.relay_message.as_ref())
            .and_then(|(from, m)| template::split(*from, m));
        let mut relay = None;
        if let Some(s) = &split {
            let first = log.journal().first_seq().unwrap_or(0);
            if let Some((id, define)) = templates.number(&s.body, first) {
                if define {
                    Self::define(log, postings, templates, scratch, id, now)?;
                }
                relay = Some((id, s));
            }
        }
        let count = (!marks.writers.is_empty() || marks.reset).then_some(count);
        scratch.clear();
        if record::encode(binding, relay, count, marks.reset, marks.carried(), scratch).is_err() {
            return Err(JournalError::RecordTooLarge {
                len: scratch.len(),
                max: log.journal().max_payload(),
            });
        }
        let seq = log.append(now, scratch)?;
        marks.written(seq);
        postings.file(seq, binding);
        if let Some((id, _)) = relay {
            templates.used(id, seq);
        }
        let first = log.journal().first_seq().unwrap_or(seq);
        postings.evict_before(first);
        marks.refresh(first, seq.saturating_add(1));
        for id in templates.due(first, seq.saturating_add(1)) {
            Self::define(log, postings, templates, scratch, id, now)?;
        }
        Ok(seq)
    }

    /// Appends the definition of relay template `id`.
    fn define(
        log: &mut L,
        postings: &mut Postings,
        templates: &mut Templates,
        scratch: &mut Vec<u8>,
        id: u32,
        now: ServerTime,
    ) -> Result<(), JournalError> {
        scratch.clear();
        record::encode_definition(id, templates.body(id).unwrap_or_default(), scratch);
        let seq = log.append(now, scratch)?;
        templates.defined(id, seq);
        postings.file(seq, None);
        let first = log.journal().first_seq().unwrap_or(seq);
        postings.evict_before(first);
        Ok(())
    }

    fn set_seq(&mut self, id: BindingId, seq: u64) {
        let i = id.index();
        if self.seqs.len() <= i {
            // Grown a million at a time, not doubled: ten million bindings would leave up to
            // 50 MB unused (issue 19); a large block grows in place (mremap) without a copy.
            let want = i.saturating_add(1).next_multiple_of(1 << 20);
            self.seqs
                .reserve_exact(want.saturating_sub(self.seqs.len()));
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
