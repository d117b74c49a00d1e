//! The journal's bytes: named offsets, the header slots and the record framing. No state here,
//! and no accessor panics on any input (every read goes through `get`).

use crate::codec::ServerTime;

/// The header's length: one 4 KiB page, so the ring starts page-aligned.
pub const HEADER_LEN: usize = 4096;
/// The smallest ring the journal accepts, in octets.
pub const MIN_RING_LEN: usize = 256;
/// The largest payload any journal accepts; a small ring accepts less (a quarter of its size).
pub const MAX_PAYLOAD: usize = 64 * 1024;

pub(super) const MAGIC: [u8; 8] = *b"LQDJRNL\0";
pub(super) const VERSION: u32 = 1;
/// The record header: length, CRC32C, sequence number, server time.
pub(super) const RECORD_HEADER: usize = 20;
/// A `len` value that marks the rest of the ring as unused: continue at offset 0.
pub(super) const WRAP: u32 = u32::MAX;
/// The octets a wrap marker occupies (its `len` and a zero word).
pub(super) const WRAP_LEN: usize = 8;
/// Records and wrap markers start on this alignment.
pub(super) const ALIGN: usize = 8;
/// Sequence numbers stay below this: a header that counts past it is refused, recovery takes
/// no record at or past it, and an append that would reach it fails. At a million appends a
/// second a journal gets there in about 292,000 years, so only a damaged or forged header
/// does; without the limit, `saturating_add` there made every append return the same number
/// and read back nothing (a fuzz finding).
pub const SEQ_LIMIT: u64 = i64::MAX as u64;

/// Named offsets (smoltcp's `field` habit).
pub(super) mod field {
    pub(in super::super) type Field = core::ops::Range<usize>;

    pub(in super::super) const MAGIC: Field = 0..8;
    pub(in super::super) const VERSION: Field = 8..12;
    pub(in super::super) const HEADER_LEN: Field = 12..16;
    pub(in super::super) const RING_LEN: Field = 16..24;
    /// The fixed part each slot's CRC covers, ahead of the slot's own bytes.
    pub(in super::super) const FIXED: Field = 0..24;
    /// The two header slots, written alternately.
    pub(in super::super) const SLOTS: [usize; 2] = [64, 128];
    pub(in super::super) const SLOT_LEN: usize = 64;

    // Within a slot.
    pub(in super::super) const GENERATION: Field = 0..8;
    pub(in super::super) const TAIL_OFF: Field = 8..16;
    pub(in super::super) const TAIL_SEQ: Field = 16..24;
    pub(in super::super) const HEAD_OFF: Field = 24..32;
    pub(in super::super) const HEAD_SEQ: Field = 32..40;
    pub(in super::super) const FLAGS: Field = 40..44;
    pub(in super::super) const EVICTED_TIME: Field = 44..48;
    /// What the slot CRC covers, inside the slot.
    pub(in super::super) const SLOT_BODY: Field = 0..60;
    pub(in super::super) const SLOT_CRC: Field = 60..64;

    // Within a record.
    pub(in super::super) const LEN: Field = 0..4;
    pub(in super::super) const CRC: Field = 4..8;
    pub(in super::super) const SEQ: Field = 8..16;
    pub(in super::super) const TIME: Field = 16..20;
    /// What the record CRC covers starts here (seq, time, payload).
    pub(in super::super) const CRC_FROM: usize = 8;
}

/// `FLAGS` bit 0: records were evicted, and `EVICTED_TIME` is valid.
pub(super) const FLAG_EVICTED: u32 = 1;

pub(super) fn get_u32(b: &[u8], f: field::Field) -> Option<u32> {
    b.get(f)?.try_into().ok().map(u32::from_le_bytes)
}

pub(super) fn get_u64(b: &[u8], f: field::Field) -> Option<u64> {
    b.get(f)?.try_into().ok().map(u64::from_le_bytes)
}

/// Writes `v` at `f`; false when `f` is out of `b`.
pub(super) fn put(b: &mut [u8], f: field::Field, v: &[u8]) -> bool {
    match b.get_mut(f) {
        Some(dst) if dst.len() == v.len() => {
            dst.copy_from_slice(v);
            true
        }
        _ => false,
    }
}

/// The ring length a buffer of `buf_len` octets gives: what follows the header, rounded down to
/// the alignment.
pub(super) fn ring_len_for(buf_len: usize) -> Option<usize> {
    let n = buf_len.checked_sub(HEADER_LEN)? & !(ALIGN - 1);
    (n >= MIN_RING_LEN).then_some(n)
}

/// The largest payload a ring of `ring_len` octets accepts.
pub(super) fn max_payload(ring_len: usize) -> usize {
    (ring_len / 4).min(MAX_PAYLOAD)
}

/// A record's size in the ring: header and payload, padded to the alignment.
pub(super) fn record_size(payload_len: usize) -> Option<usize> {
    let raw = RECORD_HEADER.checked_add(payload_len)?;
    Some(raw.checked_add(ALIGN - 1)? & !(ALIGN - 1))
}

/// One header slot, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Slot {
    pub(super) generation: u64,
    pub(super) tail_off: u64,
    pub(super) tail_seq: u64,
    pub(super) head_off: u64,
    pub(super) head_seq: u64,
    pub(super) evicted: Option<ServerTime>,
}

fn slot_crc(header: &[u8], slot: &[u8]) -> Option<u32> {
    let fixed = header.get(field::FIXED)?;
    let body = slot.get(field::SLOT_BODY)?;
    Some(crc32c::crc32c_append(crc32c::crc32c(fixed), body))
}

impl Slot {
    /// Reads slot `i` (0 or 1) of `header`; `None` when its CRC does not match.
    pub(super) fn read(header: &[u8], i: usize) -> Option<Self> {
        let at = *field::SLOTS.get(i)?;
        let slot = header.get(at..at.checked_add(field::SLOT_LEN)?)?;
        if get_u32(slot, field::SLOT_CRC)? != slot_crc(header, slot)? {
            return None;
        }
        let flags = get_u32(slot, field::FLAGS)?;
        let evicted = get_u32(slot, field::EVICTED_TIME)?;
        Some(Self {
            generation: get_u64(slot, field::GENERATION)?,
            tail_off: get_u64(slot, field::TAIL_OFF)?,
            tail_seq: get_u64(slot, field::TAIL_SEQ)?,
            head_off: get_u64(slot, field::HEAD_OFF)?,
            head_seq: get_u64(slot, field::HEAD_SEQ)?,
            evicted: (flags & FLAG_EVICTED != 0).then_some(ServerTime(evicted)),
        })
    }

    /// Whether this slot was written after `other`. Generations are serial numbers that wrap
    /// at the end of `u64` (a header write adds one with `wrapping_add`, and `generation % 2`
    /// keeps alternating across the wrap since 2^64 is even): this one is newer when it is
    /// ahead by less than half the range. Taking the higher number instead picked the slot of
    /// generation `u64::MAX` over the newer one of generation 0, and the journal reopened at an
    /// old tail (a fuzz finding).
    pub(super) fn newer_than(&self, other: &Self) -> bool {
        let ahead = self.generation.wrapping_sub(other.generation);
        ahead != 0 && ahead < 1 << 63
    }

    /// Writes this slot into slot `generation % 2` of `header`, CRC last.
    pub(super) fn write(&self, header: &mut [u8]) -> bool {
        let i = usize::from(self.generation % 2 == 1);
        let Some(&at) = field::SLOTS.get(i) else {
            return false;
        };
        let mut s = [0u8; field::SLOT_LEN];
        let (flags, evicted) = match self.evicted {
            Some(t) => (FLAG_EVICTED, t.0),
            None => (0, 0),
        };
        let ok = put(&mut s, field::GENERATION, &self.generation.to_le_bytes())
            && put(&mut s, field::TAIL_OFF, &self.tail_off.to_le_bytes())
            && put(&mut s, field::TAIL_SEQ, &self.tail_seq.to_le_bytes())
            && put(&mut s, field::HEAD_OFF, &self.head_off.to_le_bytes())
            && put(&mut s, field::HEAD_SEQ, &self.head_seq.to_le_bytes())
            && put(&mut s, field::FLAGS, &flags.to_le_bytes())
            && put(&mut s, field::EVICTED_TIME, &evicted.to_le_bytes());
        let Some(crc) = slot_crc(header, &s) else {
            return false;
        };
        ok && put(&mut s, field::SLOT_CRC, &crc.to_le_bytes())
            && put(header, at..at.saturating_add(field::SLOT_LEN), &s)
    }
}

/// Writes the fixed part of a fresh header and clears both slots.
pub(super) fn write_fixed(header: &mut [u8], ring_len: usize) -> bool {
    if let Some(h) = header.get_mut(..HEADER_LEN) {
        h.fill(0);
    }
    put(header, field::MAGIC, &MAGIC)
        && put(header, field::VERSION, &VERSION.to_le_bytes())
        && put(
            header,
            field::HEADER_LEN,
            &(HEADER_LEN as u32).to_le_bytes(),
        )
        && put(header, field::RING_LEN, &(ring_len as u64).to_le_bytes())
}

/// A record header read from the ring, and its payload when the length is plausible.
#[derive(Debug, Clone, Copy)]
pub(super) struct RawRecord<'a> {
    pub(super) crc: u32,
    pub(super) seq: u64,
    pub(super) time: ServerTime,
    /// The octets the CRC covers (seq, time, payload); `None` when `len` is over the maximum or
    /// the record would run past the end of the ring.
    pub(super) covered: Option<&'a [u8]>,
    pub(super) len: u32,
    /// The record's size in the ring, padding included (valid when `covered` is).
    pub(super) size: usize,
}

impl<'a> RawRecord<'a> {
    pub(super) fn payload(&self) -> &'a [u8] {
        self.covered
            .and_then(|c| c.get(RECORD_HEADER - field::CRC_FROM..))
            .unwrap_or_default()
    }

    pub(super) fn crc_ok(&self) -> bool {
        self.covered.is_some_and(|c| crc32c::crc32c(c) == self.crc)
    }
}

/// What sits at one ring offset.
#[derive(Debug, Clone, Copy)]
pub(super) enum Entry<'a> {
    /// A wrap marker: the record that follows is at offset 0.
    Wrap,
    /// A record header (checked or not: see [`RawRecord`]).
    Record(RawRecord<'a>),
    /// Too few octets left for a record header.
    Short,
}

/// Reads what sits at `off` in `ring`.
pub(super) fn entry_at(ring: &[u8], off: usize, max_payload: usize) -> Entry<'_> {
    let Some(rest) = ring.get(off..) else {
        return Entry::Short;
    };
    let Some(len) = get_u32(rest, field::LEN) else {
        return Entry::Short;
    };
    if len == WRAP {
        return Entry::Wrap;
    }
    let (Some(crc), Some(seq), Some(time)) = (
        get_u32(rest, field::CRC),
        get_u64(rest, field::SEQ),
        get_u32(rest, field::TIME),
    ) else {
        return Entry::Short;
    };
    let plen = usize::try_from(len).unwrap_or(usize::MAX);
    let size = record_size(plen).unwrap_or(usize::MAX);
    let covered = if plen <= max_payload && size <= rest.len() {
        RECORD_HEADER
            .checked_add(plen)
            .and_then(|end| rest.get(field::CRC_FROM..end))
    } else {
        None
    };
    Entry::Record(RawRecord {
        crc,
        seq,
        time: ServerTime(time),
        covered,
        len,
        size,
    })
}

/// Writes one record into `dst` (exactly `record_size(payload.len())` octets).
pub(super) fn write_record(dst: &mut [u8], seq: u64, time: ServerTime, payload: &[u8]) -> bool {
    let Some((head, body)) = dst.split_at_mut_checked(RECORD_HEADER) else {
        return false;
    };
    let Some((pay, pad)) = body.split_at_mut_checked(payload.len()) else {
        return false;
    };
    pay.copy_from_slice(payload);
    pad.fill(0);
    let Ok(len) = u32::try_from(payload.len()) else {
        return false;
    };
    let ok =
        put(head, field::SEQ, &seq.to_le_bytes()) && put(head, field::TIME, &time.0.to_le_bytes());
    // One CRC call over seq, time and payload, now contiguous in `dst`.
    let end = RECORD_HEADER.saturating_add(payload.len());
    let crc = crc32c::crc32c(dst.get(field::CRC_FROM..end).unwrap_or_default());
    ok && put(dst, field::CRC, &crc.to_le_bytes()) && put(dst, field::LEN, &len.to_le_bytes())
}

/// Writes a wrap marker at the start of `dst`.
pub(super) fn write_wrap(dst: &mut [u8]) -> bool {
    put(dst, 0..4, &WRAP.to_le_bytes()) && put(dst, 4..8, &0u32.to_le_bytes())
}

/// Zeroes every non-zero 4 KiB block of `b` (zero blocks are only read, never dirtied).
pub(super) fn scrub(b: &mut [u8]) {
    for chunk in b.chunks_mut(4096) {
        if chunk.iter().any(|&x| x != 0) {
            chunk.fill(0);
        }
    }
}
