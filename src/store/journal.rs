//! The change journal: lqd's history of binding changes, a fixed-size ring of records.
//!
//! Every applied change is appended with its sequence number, the server time and an opaque
//! payload (the binding's state after the change). Active Leasequery sessions are [`Cursor`]s
//! into it: live streaming reads at the [`head`](Journal::head), catch-up starts at
//! [`seek_time`](Journal::seek_time), and a cursor the ring overwrote gets [`Overrun`]. The ring
//! logic in [`Journal`] works over any byte buffer (`Vec<u8>` in tests); [`JournalFile`] maps it
//! onto a file with memmap2 so it survives restarts.
//!
//! # Byte layout
//!
//! All integers are little-endian. The buffer is a 4096-octet header, then the ring: the rest of
//! the buffer rounded down to a multiple of 8 (at least 256 octets).
//!
//! Header:
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 8 | magic `LQDJRNL\0` |
//! | 8 | 4 | format version, 1 |
//! | 12 | 4 | header length, 4096 |
//! | 16 | 8 | ring length in octets |
//! | 24 | 40 | zero |
//! | 64 | 64 | slot 0 |
//! | 128 | 64 | slot 1 |
//! | 192 | 3904 | zero |
//!
//! The two slots are written alternately (slot `generation % 2`), so a write torn by a crash
//! leaves the previous state readable; [`open`](Journal::open) takes the valid slot with the
//! newer generation (generations wrap at the end of `u64`: the newer one is ahead of the other
//! by less than 2^63). A slot:
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 8 | generation, +1 per header write (wrapping) |
//! | 8 | 8 | tail offset: ring offset of the oldest record (or of the wrap marker before it) |
//! | 16 | 8 | tail seq: that record's sequence number |
//! | 24 | 8 | head offset: where the next record goes, when the header was written (a hint) |
//! | 32 | 8 | head seq: the next sequence number, when the header was written (a hint) |
//! | 40 | 4 | flags: bit 0 = records were evicted |
//! | 44 | 4 | evicted time: the time of the newest record evicted (when bit 0 is set) |
//! | 48 | 12 | zero |
//! | 60 | 4 | CRC32C of header octets 0..24, then of slot octets 0..60 |
//!
//! A record starts at a multiple of 8 and never runs past the end of the ring:
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 4 | payload length `len` (`0xffff_ffff`: a wrap marker, see below) |
//! | 4 | 4 | CRC32C of octets 8..20+len (seq, time, payload) |
//! | 8 | 8 | sequence number |
//! | 16 | 4 | server time (seconds since 2000-01-01 UTC) |
//! | 20 | len | payload |
//! | 20+len | 0..7 | zero padding to a multiple of 8 |
//!
//! When a record does not fit before the end of the ring, an 8-octet wrap marker
//! (`0xffff_ffff`, then a zero word) is written at the head and the record goes to offset 0.
//! A payload may be at most a quarter of the ring and at most 64 KiB.
//!
//! # Crashes and recovery
//!
//! An append that evicts records first moves the header's tail past them, and only then
//! overwrites them; so after a crash at any point the header's tail is an intact record. The
//! header's head is written with it (and by [`Journal::sync_header`]), not at every append, so
//! after a crash it is behind: it is only a hint. To write the header less often, the header's
//! tail may be set to run some octets ahead of the oldest record ([`JournalFile`] does: see
//! there); a crash then loses those oldest records, and a clean [`sync_header`](Journal::sync_header)
//! makes the header's tail exact again. Recovery walks forward from it while each record's length fits, its CRC matches,
//! its sequence number is the previous one plus one and its time does not go back; the first
//! record that fails ends the journal. The sequence check is what stops the walk at records
//! left from the ring's previous lap. The free part of the ring is then cleared (only blocks
//! that are not already zero are written), so that a record which outlived a lost write cannot
//! be mistaken for a new one by a later recovery.
//!
//! # How far back catch-up reaches
//!
//! [`seek_time`](Journal::seek_time)`(t)` fails with [`TooOld`] exactly when a record with a
//! time at or after `t` was evicted. The header keeps the newest evicted time, so the answer is
//! the same after a restart. A journal that never evicted holds every change since it was
//! formatted, so no `t` is too old for it. Times are made non-decreasing at append, so the
//! evicted records are exactly those with a time up to the evicted time.

#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::codec::ServerTime;

mod file;
mod layout;
pub mod offline;
mod ring;
mod salvage;
#[cfg(test)]
mod tests;

pub use file::{FlushPolicy, JournalFile};
pub use layout::{HEADER_LEN, MAX_PAYLOAD, MIN_RING_LEN, SEQ_LIMIT};
pub use ring::{Inspection, Journal, inspect};

/// One record read from the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Its sequence number: one more than the record before it.
    pub seq: u64,
    /// The server time it was appended with (never earlier than the record before it).
    pub time: ServerTime,
    /// The payload, as appended.
    pub payload: &'a [u8],
}

/// A reader's place in the journal: the next record to read.
///
/// Cursors are plain values: they hold no borrow, and the journal keeps no list of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    seq: u64,
    off: usize,
}

impl Cursor {
    /// The sequence number of the record this cursor reads next.
    #[must_use]
    pub const fn seq(&self) -> u64 {
        self.seq
    }
}

/// What [`Journal::open`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// How many records were recovered.
    pub records: u64,
    /// The oldest recovered record's sequence number.
    pub first_seq: Option<u64>,
    /// The sequence number the next append gets.
    pub next_seq: u64,
    /// Why the scan stopped before a clean end, if it did: for example
    /// `torn record seq 41 at offset 13824 (CRC mismatch)`. A torn last record is the normal
    /// trace of a crash during an append.
    pub discarded: Option<String>,
    /// Damaged records skipped, newer records kept: the ring was rebuilt from the intact
    /// records, a marker record in place of each hole.
    pub holes: Vec<Hole>,
    /// Where the damaged file was copied before its repair (file journals).
    pub kept: Option<PathBuf>,
}

/// Records lost to damage between two intact ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hole {
    /// How many records.
    pub lost: u64,
    /// The time of the intact record before them (`None` at the tail).
    pub after: Option<ServerTime>,
    /// The time of the intact record after them: the lost records were made at or before it.
    pub before: ServerTime,
}

impl fmt::Display for Hole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unix = |t: ServerTime| t.to_unix();
        if self.lost == 0 {
            return write!(
                f,
                "the source's changes unknown up to Unix time {}",
                unix(self.before)
            );
        }
        match self.after {
            Some(a) => write!(
                f,
                "{} records lost between Unix time {} and {}",
                self.lost,
                unix(a),
                unix(self.before)
            ),
            None => write!(
                f,
                "{} records lost before Unix time {}",
                self.lost,
                unix(self.before)
            ),
        }
    }
}

/// The first octets of a hole marker's payload: never a binding record (whose first octet is
/// its version, 1), so readers skip it.
const HOLE_MAGIC: &[u8; 5] = b"\xffLOST";

impl Hole {
    /// The payload of the marker record that stands in a rebuilt ring where the hole was, or
    /// where a source could not give its changes (a gap, D33: `lost` 0, `before` the newest
    /// time a START_TIME cannot be honoured at).
    #[must_use]
    pub fn marker(&self) -> Vec<u8> {
        let mut p = HOLE_MAGIC.to_vec();
        p.extend_from_slice(&self.lost.to_be_bytes());
        p.extend_from_slice(&self.after.map_or(0, |t| t.0).to_be_bytes());
        p.extend_from_slice(&self.before.0.to_be_bytes());
        p
    }

    /// The hole a marker record's payload describes.
    #[must_use]
    pub fn from_marker(payload: &[u8]) -> Option<Self> {
        let rest = payload.strip_prefix(&HOLE_MAGIC[..])?;
        let lost = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
        let after = u32::from_be_bytes(rest.get(8..12)?.try_into().ok()?);
        let before = u32::from_be_bytes(rest.get(12..16)?.try_into().ok()?);
        Some(Self {
            lost,
            after: (after != 0).then_some(ServerTime(after)),
            before: ServerTime(before),
        })
    }
}

/// A cursor's record was overwritten by the ring: the reader missed records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overrun;

impl fmt::Display for Overrun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the journal overwrote the records this cursor had not read")
    }
}

impl std::error::Error for Overrun {}

/// [`Journal::seek_time`]: the journal no longer holds every change since the time asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooOld {
    /// The newest time of an evicted record: any time after it can be sought.
    pub evicted: ServerTime,
}

impl fmt::Display for TooOld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the journal holds changes only after server time {}",
            self.evicted.0
        )
    }
}

impl std::error::Error for TooOld {}

/// Why the journal could not be opened, formatted or appended to.
#[derive(Debug)]
pub enum JournalError {
    /// The buffer or file cannot hold the header and the smallest ring.
    TooSmall {
        /// Its length in octets.
        len: u64,
        /// The least accepted.
        min: u64,
    },
    /// The header is not a valid journal header.
    BadHeader(String),
    /// The header is of a format version this build does not read.
    WrongVersion {
        /// The version in the header.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The header's ring length differs from the buffer's.
    GeometryMismatch {
        /// The ring length in the header.
        header: u64,
        /// The ring length the buffer has room for.
        buffer: u64,
    },
    /// A payload over [`Journal::max_payload`].
    RecordTooLarge {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The journal has handed out every sequence number below
    /// [`SEQ_LIMIT`](layout::SEQ_LIMIT).
    SeqExhausted,
    /// A journal file exists with another size than the configured one.
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// Its size.
        file: u64,
        /// The configured size.
        configured: u64,
    },
    /// Another process holds the journal file's lock.
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// An I/O operation failed.
    Io {
        /// What was being done, and to which file.
        what: String,
        /// The error.
        source: io::Error,
    },
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooSmall { len, min } => write!(
                f,
                "journal too small: {len} octets, at least {min} needed \
                 ({HEADER_LEN}-octet header and {MIN_RING_LEN}-octet ring)"
            ),
            Self::BadHeader(why) => write!(f, "not a valid lqd journal: {why}"),
            Self::WrongVersion { found, supported } => write!(
                f,
                "journal format version {found} is not supported (this lqd reads version {supported})"
            ),
            Self::GeometryMismatch { header, buffer } => write!(
                f,
                "journal header says the ring is {header} octets but the file has room for \
                 {buffer} (cut short or extended outside lqd): `lqd journal check` says what is \
                 left, `lqd journal resize SIZE` writes a journal from it"
            ),
            Self::RecordTooLarge { len, max } => {
                write!(
                    f,
                    "journal record payload of {len} octets is over the maximum of {max}"
                )
            }
            Self::SeqExhausted => write!(
                f,
                "journal sequence numbers exhausted: format a new journal (the lease store \
                 is rebuilt from the source)"
            ),
            Self::SizeMismatch {
                path,
                file,
                configured,
            } => write!(
                f,
                "journal file {p} is {file} octets but journal_size is {configured}: run \
                 `lqd journal resize {configured} {p}` to keep its newest records in a journal \
                 of the configured size (the old file is kept beside it), or set journal_size \
                 back to the file's size; `lqd journal check {p}` says what the file holds",
                p = path.display()
            ),
            Self::Locked { path } => write!(
                f,
                "journal file {} is locked by another process (is another lqd running?)",
                path.display()
            ),
            Self::Io { what, source } => write!(f, "journal {what}: {source}"),
        }
    }
}

impl std::error::Error for JournalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
