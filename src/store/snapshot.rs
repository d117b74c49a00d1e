//! A snapshot of the mirror beside the journal (D43): what a start needs to serve at once,
//! instead of rebuilding everything from the journal's records.
//!
//! The snapshot holds the store's bindings (their slots, the interned links and relay-ids),
//! each binding's newest record, the tombstones, the postings (every key with its lost mark,
//! and the keys each record in the ring was filed under), the writers' marks and the relay
//! templates, as they were after a given journal record, the *covered* one. A start loads it and
//! replays only the records after the covered one, through the same code the full replay takes
//! ([`History::open_with_snapshot`](super::History::open_with_snapshot)). The hash tables and
//! B-trees are not written: they are rebuilt in bulk from the slots.
//!
//! lqd writes one at a clean stop (SIGTERM, SIGINT), after the loop stopped serving and the
//! journal was flushed, to a temporary file that is synced and then renamed over the last one,
//! so that a crash at any moment leaves either the old snapshot or the new one, never a torn
//! one. The journal stays the truth: a snapshot plus the records after it is correct at any
//! time, so one written at a clean stop still serves after a later `kill -9`, as long as the
//! ring holds its covered record.
//!
//! A snapshot is refused, with one log line naming why, and the whole journal replayed when:
//! it is not a snapshot of this version, it is damaged (a chunk's CRC) or cut short, its
//! covered record is not in the journal any more (the ring dropped it: records after it may be
//! lost too) or is not the record it names (another journal: its sequence number, time,
//! length and CRC must match), it is ahead of the journal, or it was made with other configured
//! links (the store files bindings under them, D16). Nothing read from it is trusted: every
//! count, length and number is checked before use, and a bad one refuses the snapshot.
//!
//! # Byte layout
//!
//! Integers are little-endian. The file is an 8-octet magic `LQDSNAP\0` and a 4-octet format
//! version (1), then a stream of chunks, each a 4-octet length `n` (at most [`CHUNK_MAX`]), the
//! CRC32C of its octets, and `n` octets; a chunk of length 0 ends the file. The contents are
//! one stream across chunk boundaries:
//!
//! | part | contents |
//! |---|---|
//! | header | covered sequence number (8), its record's time (4), payload length (4) and payload CRC32C (4); the records in the ring then (8); the configured links' fingerprint (length 4, octets) |
//! | store | links (count 4, 16 each); relay-ids by number (count 4, each: present 1, then length 4 and octets); bindings (count 8, each: link number 4, last change 4, lease count 1, the leases at 35 octets each, the slot's variable part: length 4 and octets) |
//! | history | each binding's newest record (8 each, in the store's order); tombstones (count 8, each: DUID length 4 and octets, count 4, each link 16 and seq 8) |
//! | marks | the next record voids the marks before it (1); the marks a record carries (count 4, each: writer's name length 4 and octets, the line 8, the record carrying it 8) |
//! | templates | entries (count 4, each: present 1, then body length 4 and octets, defined 1 + 8, used 8) |
//! | postings | first sequence number (8), prefix lengths (3 × 8); per-record key counts (count 8, 1 each); the key numbers filed, in record order (count 8, 4 each); lists by number (count 4, each: present 1, then key, lost 8, record count and each record's sequence number less the one before, the first less the first sequence number, as LEB128) |
//! | end | `SNAPEND\0` |
//!
//! A lease is kind (1), address (16), prefix length (1), IAID (4), preferred and valid
//! lifetimes (4 + 4), CLTT (4), state (1). A posting key is a tag (0 link, 1 client, 2
//! relay-id, 3 remote-id, 4 lease) and its value (a link: 16; a DUID or relay-id: length 4 and
//! octets; a remote-id: enterprise number 4, length 4 and octets; a lease: 16 and length 1).

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use super::links::LinkMap;
use super::model::{Lease, LeaseKind, LeaseState};
use crate::codec::ServerTime;

/// The file's first octets.
pub const MAGIC: &[u8; 8] = b"LQDSNAP\0";
/// The format version this lqd writes and reads.
pub const VERSION: u32 = 1;
/// The stream's last octets.
const END: &[u8; 8] = b"SNAPEND\0";
/// The largest chunk the writer makes, and the reader accepts.
pub const CHUNK_MAX: usize = 1 << 20;

/// Where the snapshot of the journal at `journal` is kept: beside it, `.snapshot` appended.
#[must_use]
pub fn path_for(journal: &Path) -> PathBuf {
    let mut name = journal.as_os_str().to_owned();
    name.push(".snapshot");
    PathBuf::from(name)
}

/// The temporary file a snapshot is written to before it is renamed over `path`.
#[must_use]
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Why a snapshot was not used.
#[derive(Debug)]
pub enum SnapshotError {
    /// Reading the file failed.
    Io(io::Error),
    /// Not a snapshot (its magic), or one of another format version.
    NotSnapshot(String),
    /// A chunk's CRC did not match, or a value in it is impossible.
    Damaged(String),
    /// The file ends before the snapshot does.
    CutShort,
    /// The record it covers is not in the journal any more.
    Dropped {
        /// The covered record.
        covered: u64,
        /// The journal's oldest record (none: empty).
        first: Option<u64>,
    },
    /// The record it covers is ahead of the journal's newest.
    Ahead {
        /// The covered record.
        covered: u64,
        /// The journal's next sequence number.
        next: u64,
    },
    /// The journal's record with the covered sequence number is another one.
    OtherJournal(u64),
    /// Made with other configured links.
    Links,
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "cannot read it: {e}"),
            Self::NotSnapshot(why) => write!(f, "not a snapshot lqd can read: {why}"),
            Self::Damaged(why) => write!(f, "damaged: {why}"),
            Self::CutShort => f.write_str("cut short: the file ends before the snapshot does"),
            Self::Dropped {
                covered,
                first: Some(first),
            } => write!(
                f,
                "it covers the journal up to record {covered}, which the ring has dropped (its \
                 oldest is {first}): records after it may be lost"
            ),
            Self::Dropped {
                covered,
                first: None,
            } => write!(
                f,
                "it covers the journal up to record {covered}, and the journal holds no record"
            ),
            Self::Ahead { covered, next } => write!(
                f,
                "it covers the journal up to record {covered}, ahead of the journal (next record \
                 {next})"
            ),
            Self::OtherJournal(seq) => write!(
                f,
                "the journal's record {seq} is not the one it covers: a snapshot of another \
                 journal"
            ),
            Self::Links => f.write_str(
                "made with other configured links (bindings are filed under their link, D16)",
            ),
        }
    }
}

impl std::error::Error for SnapshotError {}

impl From<io::Error> for SnapshotError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Self::CutShort
        } else {
            Self::Io(e)
        }
    }
}

/// A damaged snapshot: `why`.
pub(crate) fn damaged(why: impl Into<String>) -> SnapshotError {
    SnapshotError::Damaged(why.into())
}

/// The journal record a snapshot covers, named so that another journal's record with the same
/// sequence number is not taken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Covered {
    /// Its sequence number: the snapshot holds the mirror after it.
    pub seq: u64,
    /// Its time.
    pub time: ServerTime,
    /// Its payload's length and CRC32C.
    pub len: u32,
    /// CRC32C of its payload.
    pub crc: u32,
}

impl Covered {
    /// The identity of record `seq` at `time` with `payload`.
    #[must_use]
    pub fn of(seq: u64, time: ServerTime, payload: &[u8]) -> Self {
        Self {
            seq,
            time,
            len: u32::try_from(payload.len()).unwrap_or(u32::MAX),
            crc: crc32c::crc32c(payload),
        }
    }
}

/// The configured links as the snapshot names them: each link's address and prefixes, in the
/// map's order (what decides the link a binding is filed under).
pub(crate) fn links_fingerprint(map: &LinkMap) -> Vec<u8> {
    let mut out = Vec::new();
    map.for_each_filing(|address, prefix| {
        out.extend_from_slice(&address.octets());
        match prefix {
            Some((p, len)) => {
                out.push(len);
                out.extend_from_slice(&p.octets());
            }
            None => out.push(0xff),
        }
    });
    out
}

/// Writes the stream of a snapshot in CRC-checked chunks.
pub(crate) struct Writer<W: Write> {
    out: W,
    buf: Vec<u8>,
    written: u64,
}

impl<W: Write> Writer<W> {
    /// A snapshot's stream into `out`, after its magic and version.
    pub(crate) fn new(mut out: W) -> io::Result<Self> {
        out.write_all(MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        Ok(Self {
            out,
            buf: Vec::with_capacity(CHUNK_MAX),
            written: 12,
        })
    }

    fn chunk(&mut self) -> io::Result<()> {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.out.write_all(&len.to_le_bytes())?;
        self.out
            .write_all(&crc32c::crc32c(&self.buf).to_le_bytes())?;
        self.out.write_all(&self.buf)?;
        self.written = self
            .written
            .saturating_add(8)
            .saturating_add(self.buf.len() as u64);
        self.buf.clear();
        Ok(())
    }

    /// Appends `b` to the stream.
    pub(crate) fn bytes(&mut self, mut b: &[u8]) -> io::Result<()> {
        while !b.is_empty() {
            let room = CHUNK_MAX.saturating_sub(self.buf.len());
            let (now, later) = b.split_at(room.min(b.len()));
            self.buf.extend_from_slice(now);
            b = later;
            if self.buf.len() >= CHUNK_MAX {
                self.chunk()?;
            }
        }
        Ok(())
    }

    pub(crate) fn u8(&mut self, v: u8) -> io::Result<()> {
        self.bytes(&[v])
    }

    pub(crate) fn u32(&mut self, v: u32) -> io::Result<()> {
        self.bytes(&v.to_le_bytes())
    }

    pub(crate) fn u64(&mut self, v: u64) -> io::Result<()> {
        self.bytes(&v.to_le_bytes())
    }

    /// A number in LEB128: 7 bits an octet, low first, the high bit set on all but the last.
    pub(crate) fn varint(&mut self, mut v: u64) -> io::Result<()> {
        let mut b = [0u8; 10];
        let mut n = 0;
        while v >= 0x80 {
            b[n] = (v as u8) | 0x80;
            v >>= 7;
            n += 1;
        }
        b[n] = v as u8;
        self.bytes(&b[..=n])
    }

    /// A count or length (at most `u32::MAX`).
    pub(crate) fn len32(&mut self, n: usize) -> io::Result<()> {
        let n = u32::try_from(n)
            .map_err(|_| io::Error::other("a count over 2^32 does not fit a snapshot"))?;
        self.u32(n)
    }

    /// A length and the octets.
    pub(crate) fn blob(&mut self, b: &[u8]) -> io::Result<()> {
        self.len32(b.len())?;
        self.bytes(b)
    }

    pub(crate) fn addr(&mut self, a: Ipv6Addr) -> io::Result<()> {
        self.bytes(&a.octets())
    }

    /// A lease, in 35 octets.
    pub(crate) fn lease(&mut self, l: &Lease) -> io::Result<()> {
        let mut b = [0u8; LEASE_LEN];
        b[0] = match l.kind {
            LeaseKind::Address => 0,
            LeaseKind::Prefix => 1,
        };
        b[1..17].copy_from_slice(&l.address.octets());
        b[17] = l.prefix_len;
        b[18..22].copy_from_slice(&l.iaid.to_le_bytes());
        b[22..26].copy_from_slice(&l.preferred_lifetime.to_le_bytes());
        b[26..30].copy_from_slice(&l.valid_lifetime.to_le_bytes());
        b[30..34].copy_from_slice(&l.cltt.0.to_le_bytes());
        b[34] = match l.state {
            LeaseState::Active => 0,
            LeaseState::Released => 1,
            LeaseState::Declined => 2,
            LeaseState::Expired => 3,
            LeaseState::Deleted => 4,
        };
        self.bytes(&b)
    }

    /// Ends the stream: the end mark, the last chunk, the empty chunk. The octets written and
    /// the writer back.
    pub(crate) fn finish(mut self) -> io::Result<(u64, W)> {
        self.bytes(END)?;
        if !self.buf.is_empty() {
            self.chunk()?;
        }
        self.chunk()?;
        self.out.flush()?;
        Ok((self.written, self.out))
    }
}

/// Octets of a lease in a snapshot.
pub(crate) const LEASE_LEN: usize = 35;

/// Reads a snapshot's stream, checking each chunk's CRC before anything in it is used.
pub(crate) struct Reader<R: Read> {
    inp: R,
    chunk: Vec<u8>,
    at: usize,
    /// Octets of the file not yet read into `chunk`.
    left: u64,
    /// The empty chunk was read.
    ended: bool,
}

impl<R: Read> Reader<R> {
    /// The stream of the snapshot in `inp`, `len` octets long; checks its magic and version.
    pub(crate) fn new(mut inp: R, len: u64) -> Result<Self, SnapshotError> {
        let mut head = [0u8; 12];
        inp.read_exact(&mut head)
            .map_err(|_| SnapshotError::NotSnapshot("shorter than its header".into()))?;
        if head.get(..8) != Some(&MAGIC[..]) {
            return Err(SnapshotError::NotSnapshot("no snapshot magic".into()));
        }
        let mut v = [0u8; 4];
        v.copy_from_slice(head.get(8..12).unwrap_or(&[0; 4]));
        let version = u32::from_le_bytes(v);
        if version != VERSION {
            return Err(SnapshotError::NotSnapshot(format!(
                "format version {version}, this lqd reads {VERSION}"
            )));
        }
        Ok(Self {
            inp,
            chunk: Vec::new(),
            at: 0,
            left: len.saturating_sub(12),
            ended: false,
        })
    }

    /// The next chunk, its CRC checked.
    fn next_chunk(&mut self) -> Result<(), SnapshotError> {
        if self.ended {
            return Err(damaged("its stream ends early"));
        }
        let mut head = [0u8; 8];
        self.inp.read_exact(&mut head)?;
        let word = |i: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(head.get(i..i + 4).unwrap_or(&[0; 4]));
            u32::from_le_bytes(w)
        };
        let (len, crc) = (word(0) as usize, word(4));
        if len > CHUNK_MAX {
            return Err(damaged(format!("a chunk of {len} octets")));
        }
        self.chunk.clear();
        self.chunk.resize(len, 0);
        self.inp.read_exact(&mut self.chunk)?;
        self.left = self.left.saturating_sub(8).saturating_sub(len as u64);
        if crc32c::crc32c(&self.chunk) != crc {
            return Err(damaged("a chunk's CRC does not match"));
        }
        self.at = 0;
        if len == 0 {
            self.ended = true;
        }
        Ok(())
    }

    /// Octets of the stream left, at most (the file's, unread).
    fn remaining(&self) -> u64 {
        self.left
            .saturating_add(self.chunk.len().saturating_sub(self.at) as u64)
    }

    /// Fills `out` from the stream.
    pub(crate) fn take(&mut self, out: &mut [u8]) -> Result<(), SnapshotError> {
        let mut done = 0;
        while done < out.len() {
            if self.at >= self.chunk.len() {
                self.next_chunk()?;
                continue;
            }
            let have = self.chunk.get(self.at..).unwrap_or_default();
            let n = have.len().min(out.len().saturating_sub(done));
            if let (Some(dst), Some(src)) = (out.get_mut(done..done + n), have.get(..n)) {
                dst.copy_from_slice(src);
            }
            done += n;
            self.at += n;
        }
        Ok(())
    }

    pub(crate) fn u8(&mut self) -> Result<u8, SnapshotError> {
        let mut b = [0u8; 1];
        self.take(&mut b)?;
        Ok(b[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, SnapshotError> {
        let mut b = [0u8; 4];
        self.take(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, SnapshotError> {
        let mut b = [0u8; 8];
        self.take(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// `n` numbers of 4 octets, each handed to `each` (read in blocks, not one by one).
    pub(crate) fn u32s(
        &mut self,
        n: usize,
        mut each: impl FnMut(u32),
    ) -> Result<(), SnapshotError> {
        let mut block = [0u8; 4096];
        let mut left = n;
        while left > 0 {
            let k = left.min(block.len() / 4);
            let b = block.get_mut(..4 * k).unwrap_or_default();
            self.take(b)?;
            for c in b.chunks_exact(4) {
                each(u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
            }
            left -= k;
        }
        Ok(())
    }

    /// A LEB128 number (see [`Writer::varint`]); at most 10 octets and 64 bits.
    pub(crate) fn varint(&mut self) -> Result<u64, SnapshotError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f)
                .checked_shl(shift)
                .filter(|x| x >> shift == u64::from(b & 0x7f))
                .ok_or_else(|| damaged("a number over 64 bits"))?;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(damaged("a number over 64 bits"))
    }

    pub(crate) fn flag(&mut self) -> Result<bool, SnapshotError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(damaged(format!("a flag of {v}"))),
        }
    }

    /// A count of items each at least `each` octets in the stream: checked against what the
    /// file has left, so that no count makes an allocation larger than the file.
    pub(crate) fn count(&mut self, n: u64, each: u64) -> Result<usize, SnapshotError> {
        if n.saturating_mul(each.max(1)) > self.remaining() {
            return Err(SnapshotError::CutShort);
        }
        usize::try_from(n).map_err(|_| damaged("a count too large"))
    }

    /// A 4-octet count of items of at least `each` octets.
    pub(crate) fn count32(&mut self, each: u64) -> Result<usize, SnapshotError> {
        let n = self.u32()?;
        self.count(u64::from(n), each)
    }

    /// An 8-octet count of items of at least `each` octets.
    pub(crate) fn count64(&mut self, each: u64) -> Result<usize, SnapshotError> {
        let n = self.u64()?;
        self.count(n, each)
    }

    /// A length and that many octets.
    pub(crate) fn blob(&mut self) -> Result<Box<[u8]>, SnapshotError> {
        let n = self.count32(1)?;
        let mut b = vec![0u8; n].into_boxed_slice();
        self.take(&mut b)?;
        Ok(b)
    }

    pub(crate) fn addr(&mut self) -> Result<Ipv6Addr, SnapshotError> {
        let mut b = [0u8; 16];
        self.take(&mut b)?;
        Ok(Ipv6Addr::from(b))
    }

    /// A lease.
    pub(crate) fn lease(&mut self) -> Result<Lease, SnapshotError> {
        let mut b = [0u8; LEASE_LEN];
        self.take(&mut b)?;
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let kind = match b[0] {
            0 => LeaseKind::Address,
            1 => LeaseKind::Prefix,
            k => return Err(damaged(format!("a lease of kind {k}"))),
        };
        let state = match b[34] {
            0 => LeaseState::Active,
            1 => LeaseState::Released,
            2 => LeaseState::Declined,
            3 => LeaseState::Expired,
            4 => LeaseState::Deleted,
            s => return Err(damaged(format!("a lease in state {s}"))),
        };
        let prefix_len = b[17];
        if prefix_len > 128 || (kind == LeaseKind::Address && prefix_len != 128) {
            return Err(damaged(format!("a lease of length {prefix_len}")));
        }
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[1..17]);
        Ok(Lease {
            kind,
            address: Ipv6Addr::from(a),
            prefix_len,
            iaid: word(18),
            preferred_lifetime: word(22),
            valid_lifetime: word(26),
            cltt: ServerTime(word(30)),
            state,
        })
    }

    /// A posting key.
    /// Reads the end mark and the empty chunk: the snapshot is whole.
    pub(crate) fn finish(&mut self) -> Result<(), SnapshotError> {
        let mut end = [0u8; 8];
        self.take(&mut end)?;
        if &end != END {
            return Err(damaged("its parts do not end where its end mark is"));
        }
        if self.at < self.chunk.len() {
            return Err(damaged("octets after its end mark"));
        }
        self.next_chunk()?;
        if self.ended {
            Ok(())
        } else {
            Err(damaged("octets after its end mark"))
        }
    }
}

/// The header of a snapshot: what it covers, and under which links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) covered: Covered,
    /// Records in the ring when it was written.
    pub(crate) records: u64,
    pub(crate) links: Vec<u8>,
}

impl Header {
    pub(crate) fn write<W: Write>(&self, w: &mut Writer<W>) -> io::Result<()> {
        let c = &self.covered;
        w.u64(c.seq)?;
        w.u32(c.time.0)?;
        w.u32(c.len)?;
        w.u32(c.crc)?;
        w.u64(self.records)?;
        w.blob(&self.links)
    }

    pub(crate) fn read<R: Read>(r: &mut Reader<R>) -> Result<Self, SnapshotError> {
        let covered = Covered {
            seq: r.u64()?,
            time: ServerTime(r.u32()?),
            len: r.u32()?,
            crc: r.u32()?,
        };
        Ok(Self {
            covered,
            records: r.u64()?,
            links: r.blob()?.into_vec(),
        })
    }
}

/// What writing a snapshot did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The record it covers.
    pub covered: u64,
    /// Its size in octets.
    pub octets: u64,
    /// Bindings in it.
    pub bindings: usize,
}

/// Writes a snapshot to `path` through `fill`: into a temporary file beside it, synced, then
/// renamed over `path` and the directory synced, so that a crash at any moment leaves the
/// old snapshot or the new one.
pub(crate) fn write_file(
    path: &Path,
    fill: impl FnOnce(&mut Writer<BufWriter<File>>) -> io::Result<()>,
) -> io::Result<u64> {
    let tmp = temp_path(path);
    let result = (|| {
        let file = File::create(&tmp)?;
        let mut w = Writer::new(BufWriter::with_capacity(1 << 20, file))?;
        fill(&mut w)?;
        let (octets, out) = w.finish()?;
        let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(octets)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Opens the snapshot at `path` for reading; `None` when there is none.
pub(crate) fn open_file(path: &Path) -> Result<Option<Reader<BufReader<File>>>, SnapshotError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SnapshotError::Io(e)),
    };
    let len = file.metadata().map_err(SnapshotError::Io)?.len();
    Reader::new(BufReader::with_capacity(1 << 20, file), len).map(Some)
}

#[cfg(test)]
mod tests;
