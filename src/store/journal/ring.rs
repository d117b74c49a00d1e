//! The ring: appends, eviction, cursors, `seek_time`, recovery. Works over any byte buffer.

use std::collections::VecDeque;
use std::io;

use super::layout::{
    self, ALIGN, Entry, HEADER_LEN, MAGIC, RECORD_HEADER as RECORD_HEADER_LEN, RawRecord,
    SEQ_LIMIT, Slot, VERSION, VERSION_1, WRAP_LEN, field,
};
use super::salvage;
use super::{Cursor, Hole, JournalError, Overrun, Record, Recovered, TooOld};
use crate::codec::ServerTime;

/// An index entry: where record `seq` (implied by its place in the index) starts, and its
/// time. Every record has one: a filtered Active query reads the records of its key by
/// sequence number, out of a per-key list ([`Postings`](crate::store::Postings)), so
/// [`Journal::cursor_at`] must find any record at once. 16 octets a record, beside ~230 in the
/// ring.
#[derive(Debug, Clone, Copy)]
struct IndexEntry {
    off: usize,
    time: ServerTime,
}

/// A tail position: the oldest record from some point of view, and the newest time dropped
/// before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    off: usize,
    seq: u64,
    evicted: Option<ServerTime>,
}

/// The change journal: a fixed-size ring of records in a byte buffer. See the
/// [module documentation](super) for the byte layout, crash behaviour and `seek_time`'s rule.
pub struct Journal<B> {
    buf: B,
    ring_len: usize,
    max_payload: usize,
    /// Where the next record (or the wrap marker before it) goes; always `< ring_len`.
    head: usize,
    next_seq: u64,
    /// The oldest record in memory (it may start with a wrap marker); `seq == next_seq` when
    /// the ring is empty, and then `off == head`.
    tail: Mark,
    /// The tail the header holds: at or after `tail`. Overwrites never reach it, so after a
    /// crash recovery starts on an intact record. It runs `reserve` octets ahead of `tail`
    /// when each header move costs a synchronous flush.
    durable: Mark,
    reserve: usize,
    newest: Option<ServerTime>,
    generation: u64,
    index: VecDeque<IndexEntry>,
    /// The sequence number of `index[0]`.
    index_base: u64,
    /// The hole markers in the ring (a rebuild after damage put them there): sequence number
    /// and the time the lost records were made at or before. A catch-up from before one gets
    /// DataMissing.
    holes: VecDeque<(u64, ServerTime)>,
}

impl<B> std::fmt::Debug for Journal<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("ring_len", &self.ring_len)
            .field("head", &self.head)
            .field("next_seq", &self.next_seq)
            .field("tail", &self.tail)
            .field("durable", &self.durable)
            .field("index_entries", &self.index.len())
            .finish_non_exhaustive()
    }
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> Journal<B> {
    /// Formats `buf` as an empty journal: a fresh header, and a ring cleared of old records.
    ///
    /// The ring is what follows the [`HEADER_LEN`](super::HEADER_LEN)-octet header, rounded
    /// down to a multiple of 8. Non-zero blocks of the ring are zeroed so no record of an older
    /// journal in the same buffer can ever be read back as new.
    pub fn format(buf: B) -> Result<Self, JournalError> {
        Self::format_inner(buf, false)
    }

    pub(super) fn format_inner(mut buf: B, zeroed: bool) -> Result<Self, JournalError> {
        let ring_len = check_len(buf.as_ref().len())?;
        let b = buf.as_mut();
        if !layout::write_fixed(b, ring_len) {
            return Err(JournalError::TooSmall {
                len: b.len() as u64,
                min: min_len(),
            });
        }
        if !zeroed {
            if let Some(ring) = b.get_mut(HEADER_LEN..) {
                layout::scrub(ring);
            }
        }
        let start = Mark {
            off: 0,
            seq: 0,
            evicted: None,
        };
        let mut j = Self::new(buf, ring_len, start, 0);
        j.write_header();
        Ok(j)
    }

    /// Opens a journal formatted before: checks the header, then recovers the records.
    ///
    /// Recovery walks forward from the header's tail and keeps each record while its length
    /// fits, its CRC32C matches and its sequence number is the previous one plus one; the first
    /// record that fails ends the journal (the header's head is only compared against, never
    /// trusted). The ring past the end is then cleared (non-zero blocks only) so records left
    /// there by an earlier lap or a lost write cannot be picked up by a later recovery.
    pub fn open(buf: B) -> Result<(Self, Recovered), JournalError> {
        Self::open_with(buf, || Ok(()))
    }

    /// [`open`](Self::open), calling `before_repair` when the ring is damaged, before anything
    /// is written (the file backing keeps a copy of the damaged file there).
    pub(super) fn open_with(
        buf: B,
        before_repair: impl FnOnce() -> Result<(), JournalError>,
    ) -> Result<(Self, Recovered), JournalError> {
        let b = buf.as_ref();
        let Header {
            ring_len,
            slot,
            tail_off,
            version,
        } = read_header(b)?;
        let start = Mark {
            off: tail_off,
            seq: slot.tail_seq,
            evicted: slot.evicted,
        };
        let scan = salvage::scan(
            b.get(HEADER_LEN..).unwrap_or_default(),
            layout::max_payload(ring_len),
            tail_off,
            slot.tail_seq,
            slot.evicted,
        );
        if scan.damaged {
            before_repair()?;
            return Self::rebuild(buf, ring_len, start, &scan);
        }
        let mut j = Self::new(buf, ring_len, start, slot.generation.wrapping_add(1));
        let mut discarded = j.recover();
        if discarded.is_none() && slot.head_seq > j.next_seq {
            discarded = Some(format!(
                "the header counts records up to seq {} but they end at seq {}: {} lost",
                slot.head_seq.saturating_sub(1),
                j.next_seq.saturating_sub(1),
                slot.head_seq.saturating_sub(j.next_seq)
            ));
        }
        j.scrub_free();
        j.write_header();
        if version == VERSION_1 {
            j.migrate();
        }
        let rec = Recovered {
            records: j.len(),
            first_seq: j.first_seq(),
            next_seq: j.next_seq,
            discarded,
            holes: Vec::new(),
            kept: None,
            migrated_from: (version != VERSION).then_some(version),
        };
        Ok((j, rec))
    }

    /// Rebuilds a damaged ring from the intact records `scan` found, each appended again in
    /// order (same times; sequence numbers live only in memory), a marker record in place of
    /// each hole so that later opens, and catch-ups, still know of it.
    fn rebuild(
        buf: B,
        ring_len: usize,
        start: Mark,
        scan: &salvage::Scan,
    ) -> Result<(Self, Recovered), JournalError> {
        let items = scan_items(buf.as_ref(), ring_len, scan);
        let mut j = Self::rebuilt(buf, start.evicted, &items)?;
        j.sync_header();
        let rec = Recovered {
            records: j.len(),
            first_seq: j.first_seq(),
            next_seq: j.next_seq,
            discarded: None,
            holes: scan.holes.clone(),
            kept: None,
            migrated_from: None,
        };
        Ok((j, rec))
    }

    /// A journal in `buf`, formatted afresh, holding `records` in order (the ring drops the
    /// oldest of them if they do not all fit); catch-up reaches back to just after `evicted`
    /// at best.
    pub(super) fn rebuilt(
        buf: B,
        evicted: Option<ServerTime>,
        records: &[(ServerTime, Vec<u8>)],
    ) -> Result<Self, JournalError> {
        let mut j = Self::format_inner(buf, false)?;
        j.tail.evicted = evicted;
        j.durable.evicted = evicted;
        for (time, payload) in records {
            j.append(*time, payload)?;
        }
        Ok(j)
    }

    fn new(buf: B, ring_len: usize, start: Mark, generation: u64) -> Self {
        Self {
            buf,
            ring_len,
            max_payload: layout::max_payload(ring_len),
            head: start.off,
            next_seq: start.seq,
            tail: start,
            durable: start,
            reserve: 0,
            newest: None,
            generation,
            index: VecDeque::new(),
            index_base: 0,
            holes: VecDeque::new(),
        }
    }

    /// Walks the records from the tail; sets `head`, `next_seq`, `newest` and the index.
    /// Returns why it stopped when that was not a clean end.
    fn recover(&mut self) -> Option<String> {
        let max_payload = self.max_payload;
        let ring_len = self.ring_len;
        let mut off = self.tail.off;
        let mut seq = self.tail.seq;
        let mut min_time = self.tail.evicted.unwrap_or_default();
        let mut used = 0usize;
        let mut index = VecDeque::new();
        let mut holes = VecDeque::new();
        let mut newest = None;
        let ring = self.ring();
        let why = loop {
            let (at, dead) = match layout::entry_at(ring, off, max_payload) {
                Entry::Wrap if off == 0 => {
                    break Some(format!("wrap marker at offset {HEADER_LEN}"));
                }
                Entry::Wrap => (0, ring_len.saturating_sub(off)),
                _ => (off, 0),
            };
            let Entry::Record(raw) = layout::entry_at(ring, at, max_payload) else {
                break None;
            };
            // A record of another lap, or octets never written (all zero: `seq` may be 0), or
            // past the last sequence number.
            if raw.seq != seq
                || seq >= SEQ_LIMIT
                || (raw.len == 0 && raw.crc == 0 && raw.time.0 == 0)
            {
                break None;
            }
            let pos = HEADER_LEN.saturating_add(at);
            if raw.covered.is_none() {
                break Some(format!(
                    "torn record seq {seq} at offset {pos} (length {} does not fit)",
                    raw.len
                ));
            }
            if !raw.crc_ok() {
                break Some(format!(
                    "torn record seq {seq} at offset {pos} (CRC mismatch)"
                ));
            }
            if raw.time < min_time {
                break Some(format!(
                    "record seq {seq} at offset {pos} goes back in time"
                ));
            }
            let Some(u) = used.checked_add(dead).and_then(|u| u.checked_add(raw.size)) else {
                break None;
            };
            if u > ring_len {
                break Some(format!(
                    "record seq {seq} at offset {pos} overlaps the oldest"
                ));
            }
            used = u;
            index.push_back(IndexEntry {
                off: at,
                time: raw.time,
            });
            if let Some(h) = Hole::from_marker(raw.payload()) {
                holes.push_back((seq, h.before));
            }
            min_time = raw.time;
            newest = Some(raw.time);
            seq = seq.saturating_add(1);
            off = at.saturating_add(raw.size);
            if off >= ring_len {
                off = 0;
            }
        };
        self.head = off;
        self.next_seq = seq;
        self.newest = newest;
        if self.tail.seq == seq {
            self.tail.off = off;
            self.durable = self.tail;
        }
        self.index_base = self.tail.seq;
        self.index = index;
        self.holes = holes;
        why
    }

    /// Clears the free part of the ring, from the head up to the oldest record, and the dead
    /// octets past a wrap marker at the tail: they count as the oldest record's until appends
    /// evict it, and are free from then on, so a stale record there would be read by a later
    /// recovery (a fuzz finding).
    fn scrub_free(&mut self) {
        let (head, tail, n) = (self.head, self.tail.off, self.ring_len);
        let empty = self.is_empty();
        let tail_wraps = tail != 0
            && !empty
            && matches!(
                layout::entry_at(self.ring(), tail, self.max_payload),
                Entry::Wrap
            );
        let ring = self.ring_mut();
        if tail_wraps {
            if let Some(r) = ring.get_mut(tail.saturating_add(WRAP_LEN)..) {
                layout::scrub(r);
            }
        }
        if !empty && head == tail {
            return;
        }
        if head < tail {
            if let Some(r) = ring.get_mut(head..tail) {
                layout::scrub(r);
            }
        } else {
            if let Some(r) = ring.get_mut(head..n) {
                layout::scrub(r);
            }
            if let Some(r) = ring.get_mut(..tail) {
                layout::scrub(r);
            }
        }
    }

    /// Appends a record; returns its sequence number.
    ///
    /// `time` is raised to the newest record's time if it is earlier, so time order and
    /// sequence order agree. The oldest records are evicted to make room.
    pub fn append(&mut self, time: ServerTime, payload: &[u8]) -> Result<u64, JournalError> {
        self.append_with(time, payload, |_| Ok(()))
    }

    /// [`append`](Self::append), calling `barrier` after the header's tail moved and before any
    /// record behind the old tail is overwritten (the file backing makes it durable there).
    pub(super) fn append_with(
        &mut self,
        time: ServerTime,
        payload: &[u8],
        barrier: impl FnOnce(&B) -> io::Result<()>,
    ) -> Result<u64, JournalError> {
        let too_large = JournalError::RecordTooLarge {
            len: payload.len(),
            max: self.max_payload,
        };
        if payload.len() > self.max_payload {
            return Err(too_large);
        }
        if self.next_seq >= SEQ_LIMIT {
            return Err(JournalError::SeqExhausted);
        }
        let Some(size) = layout::record_size(payload.len()) else {
            return Err(too_large);
        };
        let floor = self.newest.or(self.tail.evicted).unwrap_or_default();
        let time = time.max(floor);
        let n = self.ring_len;
        let room = n.saturating_sub(self.head);
        let (wrap, at) = if size <= room {
            (false, self.head)
        } else {
            (true, 0)
        };
        // The octets this append overwrites, counted forward from the head.
        let span = if wrap {
            room.saturating_add(size)
        } else {
            size
        };

        if self.durable.seq < self.next_seq && span > self.free_before(self.durable.off) {
            let want = span.saturating_add(self.reserve);
            let mut d = self.durable;
            while d.seq < self.next_seq && want > self.free_before(d.off) {
                match self.step(d.off) {
                    Some((next, t)) => {
                        d = Mark {
                            off: next,
                            seq: d.seq.saturating_add(1),
                            evicted: Some(t),
                        }
                    }
                    None => {
                        d = Mark {
                            off: self.head,
                            seq: self.next_seq,
                            evicted: d.evicted,
                        };
                    }
                }
            }
            self.durable = d;
            self.write_header();
            barrier(&self.buf).map_err(|e| JournalError::Io {
                what: "flush of the header before an eviction".into(),
                source: e,
            })?;
        }
        while !self.is_empty() && span > self.free_before(self.tail.off) {
            self.evict_one();
        }

        let seq = self.next_seq;
        let head = self.head;
        let ring = self.ring_mut();
        if wrap {
            let marker = ring.get_mut(head..head.saturating_add(WRAP_LEN));
            let _ = marker.is_some_and(layout::write_wrap);
        }
        let written = ring
            .get_mut(at..at.saturating_add(size))
            .is_some_and(|dst| layout::write_record(dst, seq, time, payload));
        if !written {
            // Unreachable while the invariants hold (size <= n / 2 + 27, at + size <= n).
            return Err(too_large);
        }
        if self.is_empty() && wrap {
            self.tail.off = at;
            self.durable.off = at;
        }
        self.head = at.saturating_add(size);
        if self.head >= n {
            self.head = 0;
        }
        self.next_seq = seq.saturating_add(1);
        self.newest = Some(time);
        self.clear_after_head();
        if self.index.is_empty() {
            self.index_base = seq;
        }
        self.index.push_back(IndexEntry { off: at, time });
        if let Some(h) = Hole::from_marker(payload) {
            self.holes.push_back((seq, h.before));
        }
        Ok(seq)
    }

    /// Zeroes where the next record's header will go, when that is free space: what an older
    /// lap left there (the middle of a longer record, say) could otherwise read as a record,
    /// by its sequence number, to a recovery walking on from the last one (found by the
    /// journal model test and the fuzzer: a clean journal reported a torn record).
    fn clear_after_head(&mut self) {
        const CLEAR: usize = RECORD_HEADER_LEN + ALIGN;
        // Up to the oldest record, never into it.
        let free = self.free_before(self.tail.off).min(CLEAR);
        let head = self.head;
        let end = head.saturating_add(free).min(self.ring_len);
        if let Some(r) = self.ring_mut().get_mut(head..end) {
            r.fill(0);
        }
    }

    /// Drops the oldest record from memory (the header's tail is already past it).
    fn evict_one(&mut self) {
        let seq = self.tail.seq;
        match self.step(self.tail.off) {
            Some((next, t)) => {
                self.tail = Mark {
                    off: next,
                    seq: seq.saturating_add(1),
                    evicted: Some(t),
                };
            }
            None => {
                // Unreachable while the invariants hold: give up the whole ring, not a panic.
                self.tail = Mark {
                    off: self.head,
                    seq: self.next_seq,
                    evicted: self.newest,
                };
                self.durable = self.tail;
                self.index.clear();
                return;
            }
        }
        if self.holes.front().is_some_and(|(s, _)| *s == seq) {
            self.holes.pop_front();
        }
        if seq == self.index_base && !self.index.is_empty() {
            self.index.pop_front();
            self.index_base = self.index_base.saturating_add(1);
        }
    }

    /// Raises a version-1 header to [`VERSION`] so that at every moment one slot is valid:
    /// the slot not written last is written with its CRC computed for the new version (the old
    /// one stays valid), then the version is changed (the new slot becomes the valid one), then
    /// the other slot is written again. A `kill -9` anywhere in between leaves a header that
    /// opens.
    fn migrate(&mut self) {
        let slot = self.next_slot();
        if let Some(h) = self.buf.as_mut().get_mut(..HEADER_LEN) {
            if slot.write_as(h, Some(VERSION)) {
                layout::put(h, field::VERSION, &VERSION.to_le_bytes());
            }
        }
        self.write_header();
    }

    /// The header slot that says where the ring stands now, under the next generation.
    fn next_slot(&mut self) -> Slot {
        let slot = Slot {
            generation: self.generation,
            tail_off: self.durable.off as u64,
            tail_seq: self.durable.seq,
            head_off: self.head as u64,
            head_seq: self.next_seq,
            evicted: self.durable.evicted,
        };
        self.generation = self.generation.wrapping_add(1);
        slot
    }

    fn write_header(&mut self) {
        let slot = self.next_slot();
        if let Some(h) = self.buf.as_mut().get_mut(..HEADER_LEN) {
            slot.write(h);
        }
    }

    /// How many free octets lie from the head forward to `off` (a live record's start).
    fn free_before(&self, off: usize) -> usize {
        if off > self.head {
            off.saturating_sub(self.head)
        } else if off < self.head {
            self.ring_len.saturating_sub(self.head).saturating_add(off)
        } else {
            0
        }
    }

    fn ring(&self) -> &[u8] {
        self.buf.as_ref().get(HEADER_LEN..).unwrap_or_default()
    }

    fn ring_mut(&mut self) -> &mut [u8] {
        self.buf.as_mut().get_mut(HEADER_LEN..).unwrap_or_default()
    }

    /// The record at `off`, past a wrap marker: its real offset and header.
    fn resolve(&self, off: usize) -> Option<(usize, RawRecord<'_>)> {
        let ring = self.ring();
        let at = match layout::entry_at(ring, off, self.max_payload) {
            Entry::Wrap if off != 0 => 0,
            Entry::Record(_) => off,
            _ => return None,
        };
        match layout::entry_at(ring, at, self.max_payload) {
            Entry::Record(r) if r.covered.is_some() => Some((at, r)),
            _ => None,
        }
    }

    /// Past the record at `off`: where the next one starts, and this one's time.
    fn step(&self, off: usize) -> Option<(usize, ServerTime)> {
        let (at, r) = self.resolve(off)?;
        let next = at.checked_add(r.size)?;
        Some((if next >= self.ring_len { 0 } else { next }, r.time))
    }

    /// The sequence number of the oldest record still in the ring.
    #[must_use]
    pub fn first_seq(&self) -> Option<u64> {
        (!self.is_empty()).then_some(self.tail.seq)
    }

    /// The sequence number the next append gets.
    #[must_use]
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The oldest record's time.
    #[must_use]
    pub fn oldest_time(&self) -> Option<ServerTime> {
        if self.is_empty() {
            return None;
        }
        self.resolve(self.tail.off).map(|(_, r)| r.time)
    }

    /// The newest record's time.
    #[must_use]
    pub fn newest_time(&self) -> Option<ServerTime> {
        if self.is_empty() { None } else { self.newest }
    }

    /// The time of the newest record ever evicted (or dropped before a restart): catch-up can
    /// reach back to any time after it, and to none at or before it.
    #[must_use]
    pub fn evicted_time(&self) -> Option<ServerTime> {
        self.tail.evicted
    }

    /// How many records the ring holds.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.next_seq.saturating_sub(self.tail.seq)
    }

    /// Whether the ring holds no record.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.tail.seq >= self.next_seq
    }

    /// The ring's size in octets (the buffer less the header).
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.ring_len
    }

    /// The largest payload [`append`](Self::append) accepts: a quarter of the ring, at most
    /// 64 KiB.
    #[must_use]
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Octets the records occupy, with their padding and wrap gaps.
    #[must_use]
    pub fn used_bytes(&self) -> usize {
        if self.is_empty() {
            0
        } else {
            self.ring_len
                .saturating_sub(self.free_before(self.tail.off))
        }
    }

    /// A cursor that reads only the records appended from now on.
    #[must_use]
    pub fn head(&self) -> Cursor {
        Cursor {
            seq: self.next_seq,
            off: self.head,
        }
    }

    /// A cursor at the oldest record.
    #[must_use]
    pub fn tail(&self) -> Cursor {
        Cursor {
            seq: self.tail.seq,
            off: self.tail.off,
        }
    }

    /// Records that the journal holds no change from before `began` (the time it was created,
    /// or, for a journal made before this mark existed, its oldest record's): a catch-up from
    /// an earlier START_TIME then gets DataMissing, as if older changes had been evicted,
    /// since lqd cannot know what ended before its journal existed (issue 13). Nothing changes
    /// once the ring has evicted a record (that mark is later), or when a mark is there.
    pub fn mark_began(&mut self, began: ServerTime) {
        if self.tail.evicted.is_none() {
            let before = Some(ServerTime(began.0.saturating_sub(1)));
            self.tail.evicted = before;
            self.durable.evicted = before;
            self.write_header();
        }
    }

    /// True when the journal holds every record since it began: the ring never evicted one
    /// (its first sequence number is still 0) and no record was lost to damage.
    #[must_use]
    pub fn holds_all_since_it_began(&self) -> bool {
        self.tail.seq == 0 && self.holes.is_empty()
    }

    /// A cursor at record `seq`: the head for the next sequence number to be written.
    ///
    /// `Err(Overrun)` when the ring has evicted the record, or it was never written.
    pub fn cursor_at(&self, seq: u64) -> Result<Cursor, Overrun> {
        if seq == self.next_seq {
            return Ok(self.head());
        }
        if seq < self.tail.seq || seq > self.next_seq {
            return Err(Overrun);
        }
        // The oldest record may sit behind a wrap marker: `tail` knows where it starts.
        if seq == self.tail.seq {
            return Ok(self.tail());
        }
        seq.checked_sub(self.index_base)
            .and_then(|k| usize::try_from(k).ok())
            .and_then(|k| self.index.get(k))
            .map(|e| Cursor { seq, off: e.off })
            .ok_or(Overrun)
    }

    /// A cursor at the first record whose time is at or after `t` (the head when there is none).
    ///
    /// `Err(TooOld)` when an evicted record had a time at or after `t`: the journal no longer
    /// holds every change since `t`. Before any eviction the journal holds everything since it
    /// was formatted, so no `t` is too old.
    pub fn seek_time(&self, t: ServerTime) -> Result<Cursor, TooOld> {
        if let Some(evicted) = self.tail.evicted.filter(|&e| t <= e) {
            return Err(TooOld { evicted });
        }
        let found = self.seek_time_in_ring(t);
        // Records lost to damage at or after the cursor (a hole marker there), or changes
        // the source could not give at or after `t` (a gap marker reaching `before`, D33): the
        // journal does not hold every change since `t` either.
        match self.holes.back() {
            Some(&(seq, before)) if seq >= found.seq || t <= before => {
                Err(TooOld { evicted: before })
            }
            _ => Ok(found),
        }
    }

    /// The first record at or after `t` in the ring (the head when there is none).
    fn seek_time_in_ring(&self, t: ServerTime) -> Cursor {
        match (self.oldest_time(), self.newest_time()) {
            (Some(oldest), Some(newest)) if t <= newest => {
                if t <= oldest {
                    return self.tail();
                }
                // The first record at or after `t`, by the index (in time order).
                let i = self.index.partition_point(|e| e.time < t);
                let seq = self.index_base.saturating_add(i as u64);
                self.cursor_at(seq).unwrap_or_else(|_| self.head())
            }
            _ => self.head(),
        }
    }

    /// Reads the record at `cursor` and moves it to the next one; `Ok(None)` at the head.
    ///
    /// `Err(Overrun)` when the ring has evicted the cursor's record since it was made (or the
    /// cursor is not from this journal): the reader missed records, and can go on from
    /// [`head`](Self::head) or [`tail`](Self::tail).
    pub fn read(&self, cursor: &mut Cursor) -> Result<Option<Record<'_>>, Overrun> {
        if cursor.seq == self.next_seq {
            return Ok(None);
        }
        if cursor.seq < self.tail.seq || cursor.seq > self.next_seq {
            return Err(Overrun);
        }
        // The oldest record may sit behind a wrap marker that is no longer protected, so it is
        // found from the tail rather than from the cursor's offset.
        let off = if cursor.seq == self.tail.seq {
            self.tail.off
        } else {
            cursor.off
        };
        let (at, r) = self
            .resolve(off)
            .filter(|(_, r)| r.seq == cursor.seq)
            .ok_or(Overrun)?;
        let next = at.saturating_add(r.size);
        cursor.off = if next >= self.ring_len { 0 } else { next };
        cursor.seq = cursor.seq.saturating_add(1);
        Ok(Some(Record {
            seq: r.seq,
            time: r.time,
            payload: r.payload(),
        }))
    }

    /// The buffer, for the file backing's flushes.
    pub(super) fn buffer(&self) -> &B {
        &self.buf
    }

    /// The head's ring offset (for the file backing's dirty range).
    pub(super) fn head_offset(&self) -> usize {
        self.head
    }

    /// Lets the header's tail run `bytes` ahead of the oldest record, so a synchronous header
    /// flush is needed only once per `bytes` of evictions.
    pub(super) fn set_reserve(&mut self, bytes: usize) {
        self.reserve = bytes;
    }

    /// Brings the header up to date: the exact tail and the head.
    ///
    /// Appends write the header only when they move its tail (before overwriting anything), so
    /// its head is otherwise left behind; that is safe (recovery treats the head as a hint), and
    /// this makes the header exact again, for a clean shutdown or before a flush.
    pub fn sync_header(&mut self) {
        self.durable = self.tail;
        self.write_header();
    }

    /// Writes the header as it stands (its tail unchanged), with the current head: before a
    /// flush, so the flushed header's head is recent.
    pub(super) fn write_head_hint(&mut self) {
        self.write_header();
    }

    /// Gives the buffer back, its header brought up to date (to reopen it, or to inspect it).
    pub fn into_inner(mut self) -> B {
        self.sync_header();
        self.buf
    }
}

fn min_len() -> u64 {
    (HEADER_LEN as u64).saturating_add(layout::MIN_RING_LEN as u64)
}

fn check_len(len: usize) -> Result<usize, JournalError> {
    layout::ring_len_for(len).ok_or(JournalError::TooSmall {
        len: len as u64,
        min: min_len(),
    })
}

/// A journal's header, checked.
struct Header {
    ring_len: usize,
    slot: Slot,
    tail_off: usize,
    /// [`VERSION`], or [`VERSION_1`] (migrated when opened for writing).
    version: u32,
}

/// Checks the header of the journal in `b`.
fn read_header(b: &[u8]) -> Result<Header, JournalError> {
    let ring_len = check_len(b.len())?;
    if b.get(field::MAGIC) != Some(&MAGIC[..]) {
        return Err(JournalError::BadHeader("no journal magic".into()));
    }
    let version = layout::get_u32(b, field::VERSION).unwrap_or(0);
    if version != VERSION && version != VERSION_1 {
        return Err(JournalError::WrongVersion {
            found: version,
            supported: VERSION,
        });
    }
    if layout::get_u32(b, field::HEADER_LEN) != Some(HEADER_LEN as u32) {
        return Err(JournalError::BadHeader("header length is not 4096".into()));
    }
    let header_ring = layout::get_u64(b, field::RING_LEN).unwrap_or(0);
    if header_ring != ring_len as u64 {
        return Err(JournalError::GeometryMismatch {
            header: header_ring,
            buffer: ring_len as u64,
        });
    }
    let slot = match (Slot::read(b, 0), Slot::read(b, 1)) {
        (Some(a), Some(c)) => {
            if c.newer_than(&a) {
                c
            } else {
                a
            }
        }
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => {
            return Err(JournalError::BadHeader(
                "both header slots fail their CRC".into(),
            ));
        }
    };
    let in_ring = |off: u64| {
        usize::try_from(off)
            .ok()
            .filter(|&o| o < ring_len && o % ALIGN == 0)
    };
    let (Some(tail_off), Some(_)) = (in_ring(slot.tail_off), in_ring(slot.head_off)) else {
        return Err(JournalError::BadHeader(format!(
            "tail offset {} or head offset {} outside the {ring_len}-octet ring",
            slot.tail_off, slot.head_off
        )));
    };
    if slot.head_seq > SEQ_LIMIT {
        return Err(JournalError::BadHeader(format!(
            "head seq {} past the last sequence number {SEQ_LIMIT}",
            slot.head_seq
        )));
    }
    if slot.tail_seq > slot.head_seq {
        return Err(JournalError::BadHeader(format!(
            "tail seq {} after head seq {}",
            slot.tail_seq, slot.head_seq
        )));
    }
    Ok(Header {
        ring_len,
        slot,
        tail_off,
        version,
    })
}

/// What [`Journal::inspect`] found in a journal, without changing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// Intact records.
    pub records: u64,
    /// The oldest and the newest intact record's time.
    pub span: Option<(ServerTime, ServerTime)>,
    /// The newest time of a record dropped by the ring: catch-up reaches back to just after.
    pub evicted: Option<ServerTime>,
    /// Damage: records lost between intact ones.
    pub holes: Vec<Hole>,
    /// The ring's size in octets, and the octets the intact records take.
    pub ring_len: usize,
    /// Octets of the ring the intact records take, padding included.
    pub used: usize,
}

/// Reads the journal in `b` without writing: its records, time span and damage.
pub fn inspect(b: &[u8]) -> Result<Inspection, JournalError> {
    let h = read_header(b)?;
    let ring = b.get(HEADER_LEN..).unwrap_or_default();
    let scan = salvage::scan(
        ring,
        layout::max_payload(h.ring_len),
        h.tail_off,
        h.slot.tail_seq,
        h.slot.evicted,
    );
    let span = scan
        .found
        .first()
        .zip(scan.found.last())
        .map(|(a, z)| (a.time, z.time));
    Ok(Inspection {
        records: scan.found.len() as u64,
        span,
        evicted: h.slot.evicted,
        holes: scan.holes,
        ring_len: h.ring_len,
        used: scan.found.iter().map(|f| f.size).sum(),
    })
}

/// The intact records of the journal in `b` (a marker in place of each hole), in order, and
/// the newest time the ring had dropped.
pub(super) fn intact_records(b: &[u8]) -> Result<(Items, Option<ServerTime>), JournalError> {
    let h = read_header(b)?;
    let scan = salvage::scan(
        b.get(HEADER_LEN..).unwrap_or_default(),
        layout::max_payload(h.ring_len),
        h.tail_off,
        h.slot.tail_seq,
        h.slot.evicted,
    );
    Ok((scan_items(b, h.ring_len, &scan), h.slot.evicted))
}

/// Records to write into a journal: time and payload.
pub(super) type Items = Vec<(ServerTime, Vec<u8>)>;

/// The payloads `scan` found in `b`, with a hole marker before the record each hole preceded.
fn scan_items(b: &[u8], ring_len: usize, scan: &salvage::Scan) -> Items {
    let max_payload = layout::max_payload(ring_len);
    let ring = b.get(HEADER_LEN..).unwrap_or_default();
    let mut items = Vec::with_capacity(scan.found.len().saturating_add(scan.holes.len()));
    let mut holes = scan.hole_at.iter().zip(&scan.holes).peekable();
    for (i, f) in scan.found.iter().enumerate() {
        while let Some((_, h)) = holes.next_if(|(at, _)| **at == i) {
            items.push((h.before, h.marker()));
        }
        if let Entry::Record(r) = layout::entry_at(ring, f.at, max_payload) {
            items.push((f.time, r.payload().to_vec()));
        }
    }
    items
}
