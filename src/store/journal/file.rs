//! The journal in a file: lqd's own journal file, locked against other processes and mapped
//! into memory. The map is the project's only `unsafe`.

use std::cell::Cell;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fs4::{FileExt, TryLockError};
use memmap2::{Advice, MmapMut, UncheckedAdvice};

use super::layout::{self, HEADER_LEN};
use super::{Cursor, Journal, JournalError, Recovered};
use crate::codec::ServerTime;

/// When appended records are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Leave it to the kernel's writeback: the records survive a crash of the process
    /// (`kill -9` included, the page cache outlives it), not a power loss.
    Os,
    /// Force the written range to disk at most this often, from [`JournalFile::tick`]: a power
    /// loss costs at most the records of the last interval.
    Interval(Duration),
    /// Force each record to disk before [`JournalFile::append`] returns.
    Always,
}

/// The journal in a memory-mapped file.
///
/// The file holds the byte layout described in the [module documentation](super), and its
/// size never changes after creation. It is created on first open: its blocks reserved with
/// `fallocate` (so a full disk is an error here, not a `SIGBUS` on a later append), formatted and
/// flushed under a temporary name, then linked into place, so the configured path never holds a
/// half-made journal. The file is locked (`flock`, exclusive) for as long as the value lives: a
/// second lqd on the same file is refused.
///
/// The header's tail runs ahead of the oldest record in memory, so that the header is written
/// once per that many octets of evictions rather than at every append: by 1/256 of the ring
/// with [`FlushPolicy::Os`], by 1/64 with the others, where each such write is also flushed
/// synchronously before anything behind it is overwritten (so a power loss never leaves the
/// header's tail on an overwritten record). After a crash, recovery starts at the header's tail,
/// so the oldest records within that distance are lost; a clean close (drop, or
/// [`flush`](Self::flush)) makes the header's tail exact first, and loses nothing.
#[derive(Debug)]
pub struct JournalFile {
    journal: Journal<MmapMut>,
    /// Held for its `flock`: the lock lasts until this is dropped (after the map).
    _lock: File,
    path: PathBuf,
    policy: FlushPolicy,
    last_flush: Instant,
    /// The head's ring offset at the last flush.
    dirty_from: usize,
    /// Octets the head moved since the last flush (wrap gaps included).
    dirty_bytes: u64,
    /// Forced writes to disk so far (msync of records, and of the header before an eviction).
    flushes: u64,
    /// Octets the head moved since the map's pages were last released.
    unreleased: usize,
    /// Octets the head moved since the pages ahead of it were last asked for.
    unprefetched: usize,
    /// The oldest record a catch-up last asked to be read in ([`Self::prefetch_from`]), and
    /// when.
    prefetched: Cell<Option<(u64, Instant)>>,
}

/// The mapped pages kept in lqd's resident set on each side of the head: the records just
/// written (what a live or briefly-lagging Active query reads) and those about to be
/// overwritten. The rest of the ring stays in the kernel's page cache, which may drop it under
/// pressure (it is written back first), and not in lqd's RSS: at carrier scale the journal is
/// gigabytes (issue 19). A catch-up reading older records maps their pages again until the next
/// release.
const RESIDENT_WINDOW: usize = 16 << 20;

/// How far ahead of the head the kernel is asked to read the ring's pages in, and how often.
/// Writing a record into a page the page cache no longer holds (the kernel dropped it: cold
/// for a while, the journal written out at its creation or a lap ago) first reads the page
/// from disk, in the event loop: a turn that stalls for as long as the disk takes, and with it
/// every live change (issue 19: turns of 180–220 ms for one change on a VM that pages cold
/// file pages out after a minute). Asked ahead (`MADV_WILLNEED`, which starts the reads and
/// returns), the pages are in memory when the head reaches them.
const PREFETCH_AHEAD: usize = 1 << 20;
const PREFETCH_STEP: usize = 256 << 10;
/// How long a catch-up's request to read the ring in stands for the catch-ups after it.
const PREFETCH_REUSE: Duration = Duration::from_secs(10);

/// The ring's `len` octets from offset `from` in a ring of `n`, as (offset, length) ranges: one,
/// or two when they go round the ring's end (the second then starts at 0); lengths may be 0.
fn ahead(from: usize, n: usize, len: usize) -> [(usize, usize); 2] {
    let len = len.min(n);
    let from = from.min(n);
    let first = len.min(n.saturating_sub(from));
    [(from, first), (0, len.saturating_sub(first))]
}

pub(super) fn io_err(what: &str, path: &Path, source: io::Error) -> JournalError {
    JournalError::Io {
        what: format!("{what} {}", path.display()),
        source,
    }
}

impl JournalFile {
    /// Opens the journal file at `path`, `size` octets in all, creating and formatting it when
    /// absent.
    ///
    /// A file of another size is an error naming both sizes: its history is never destroyed to
    /// fit the configuration. (That also covers a file cut short by something outside lqd:
    /// lqd never changes the size of its file.) A file another process has locked is
    /// [`JournalError::Locked`].
    pub fn open(
        path: &Path,
        size: u64,
        policy: FlushPolicy,
    ) -> Result<(Self, Recovered), JournalError> {
        let min = (HEADER_LEN as u64).saturating_add(layout::MIN_RING_LEN as u64);
        if usize::try_from(size)
            .ok()
            .and_then(layout::ring_len_for)
            .is_none()
        {
            return Err(JournalError::TooSmall { len: size, min });
        }
        match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => Self::open_existing(path, file, size, policy),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Self::create(path, size, policy),
            Err(e) => Err(io_err("open of", path, e)),
        }
    }

    fn open_existing(
        path: &Path,
        file: File,
        size: u64,
        policy: FlushPolicy,
    ) -> Result<(Self, Recovered), JournalError> {
        lock(&file, path)?;
        let actual = file
            .metadata()
            .map_err(|e| io_err("stat of", path, e))?
            .len();
        if actual != size {
            return Err(JournalError::SizeMismatch {
                path: path.to_owned(),
                file: actual,
                configured: size,
            });
        }
        // Damage is repaired by rebuilding the ring from its intact records: the file is
        // copied aside first, as it was, for the post-mortem.
        let mut kept = None;
        let (journal, mut recovered) = Journal::open_with(map(&file, path)?, || {
            let aside = damaged_name(path);
            fs::copy(path, &aside).map_err(|e| io_err("copy aside of", path, e))?;
            kept = Some(aside);
            Ok(())
        })?;
        recovered.kept = kept;
        let mut jf = Self::new(journal, file, path, policy);
        if policy != FlushPolicy::Os {
            jf.flush().map_err(|e| io_err("flush of", path, e))?;
        }
        // The recovery read the whole ring: its pages need not stay in lqd's resident set
        // while a snapshot is read and the mirror rebuilt (they add the journal's size to the
        // start's peak otherwise).
        jf.release_pages();
        Ok((jf, recovered))
    }

    fn create(
        path: &Path,
        size: u64,
        policy: FlushPolicy,
    ) -> Result<(Self, Recovered), JournalError> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".new");
        let tmp = PathBuf::from(tmp);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&tmp)
            .map_err(|e| io_err("creation of", &tmp, e))?;
        lock(&file, &tmp)?;
        allocate(&mut file, size).map_err(|e| io_err("allocation of", &tmp, e))?;
        let journal = Journal::format_inner(map(&file, &tmp)?, true)?;
        journal
            .buffer()
            .flush()
            .map_err(|e| io_err("flush of", &tmp, e))?;
        match fs::hard_link(&tmp, path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Another process made it meanwhile: open theirs (its lock decides).
                drop(journal);
                drop(file);
                let _ = fs::remove_file(&tmp);
                return Self::open(path, size, policy);
            }
            Err(e) => return Err(io_err("link into place of", &tmp, e)),
        }
        fs::remove_file(&tmp).map_err(|e| io_err("removal of", &tmp, e))?;
        sync_dir(path).map_err(|e| io_err("sync of the directory of", path, e))?;
        let recovered = Recovered {
            records: 0,
            first_seq: None,
            next_seq: 0,
            discarded: None,
            holes: Vec::new(),
            kept: None,
            migrated_from: None,
        };
        Ok((Self::new(journal, file, path, policy), recovered))
    }

    fn new(mut journal: Journal<MmapMut>, file: File, path: &Path, policy: FlushPolicy) -> Self {
        // The header's tail runs ahead of the oldest record by this much, so the header is
        // written (and, with a flushing policy, flushed) once per that many octets of
        // evictions rather than at every append.
        let ahead = match policy {
            FlushPolicy::Os => journal.capacity() / 256,
            FlushPolicy::Interval(_) | FlushPolicy::Always => journal.capacity() / 64,
        };
        journal.set_reserve(ahead);
        Self {
            dirty_from: journal.head_offset(),
            journal,
            _lock: file,
            path: path.to_owned(),
            policy,
            last_flush: Instant::now(),
            dirty_bytes: 0,
            flushes: 0,
            unreleased: 0,
            unprefetched: PREFETCH_STEP,
            prefetched: Cell::new(None),
        }
    }

    /// Asks the kernel to read in the ring from `from` to the head, without waiting: a
    /// catch-up is about to read those records, and the page cache may have dropped their
    /// pages (they are minutes old), which each fill would otherwise read from disk one page
    /// at a time, in the event loop. A reconnect storm asks once: a catch-up from a record the
    /// last request covered, within [`PREFETCH_REUSE`], asks nothing. Errors are ignored.
    pub fn prefetch_from(&self, from: &Cursor) {
        let now = Instant::now();
        if self.prefetched.get().is_some_and(|(seq, at)| {
            from.seq() >= seq && now.saturating_duration_since(at) < PREFETCH_REUSE
        }) {
            return;
        }
        self.prefetched.set(Some((from.seq(), now)));
        let n = self.journal.capacity();
        let head = self.journal.head_offset();
        let len = if head >= from.off {
            head.saturating_sub(from.off)
        } else {
            n.saturating_sub(from.off).saturating_add(head)
        };
        self.will_need(from.off, len);
    }

    /// Asks the kernel to read in the [`PREFETCH_AHEAD`] octets of the ring after the head
    /// (round the ring's end), without waiting. Errors are ignored: the pages are then read
    /// when written, as without it.
    fn prefetch_ahead(&mut self) {
        self.unprefetched = 0;
        self.will_need(self.journal.head_offset(), PREFETCH_AHEAD);
    }

    /// `MADV_WILLNEED` for the ring's `len` octets from offset `from`, round the ring's end;
    /// errors ignored (the pages are then read when touched).
    fn will_need(&self, from: usize, len: usize) {
        let map = self.journal.buffer();
        for (start, len) in ahead(from, self.journal.capacity(), len) {
            if len > 0 {
                let _ = map.advise_range(Advice::WillNeed, HEADER_LEN.saturating_add(start), len);
            }
        }
    }

    /// Takes the ring's pages out of lqd's resident set, except [`RESIDENT_WINDOW`] octets
    /// behind the head and as many ahead of it. Done after the start's replay (which reads the
    /// whole ring) and each time the head has moved by the window since. Errors are ignored:
    /// the pages then simply stay mapped.
    pub fn release_pages(&mut self) {
        self.unreleased = 0;
        let n = self.journal.capacity();
        let keep = RESIDENT_WINDOW.saturating_mul(2);
        if n <= keep {
            return;
        }
        // The window is [head - RESIDENT_WINDOW, head + RESIDENT_WINDOW), modulo n; release
        // the rest: the n - 2 × RESIDENT_WINDOW octets from the window's end, going round the
        // ring. n > 2 × RESIDENT_WINDOW here, and head < n.
        let end = self
            .journal
            .head_offset()
            .saturating_add(RESIDENT_WINDOW)
            .checked_rem(n)
            .unwrap_or(0);
        let map = self.journal.buffer();
        for (from, len) in ahead(end, n, n.saturating_sub(keep)) {
            if len > 0 {
                // SAFETY: the map is a shared mapping of lqd's journal file (`map` below), so
                // MADV_DONTNEED only removes the range's pages from this process's page tables:
                // their contents stay in the file and the page cache (a dirty page is marked
                // dirty there first) and the next access maps them again with the same octets
                // (madvise(2): "shared file mappings ... repopulating the memory contents from the
                // up-to-date contents of the underlying mapped file"). No reference into the map
                // sees other octets, and the range is inside the map.
                #[allow(unsafe_code)]
                let _ = unsafe {
                    map.unchecked_advise_range(
                        UncheckedAdvice::DontNeed,
                        HEADER_LEN.saturating_add(from),
                        len,
                    )
                };
            }
        }
    }

    /// The journal, to read: cursors, `seek_time`, its counts.
    #[must_use]
    pub fn journal(&self) -> &Journal<MmapMut> {
        &self.journal
    }

    /// How many times the journal was forced to disk so far.
    #[must_use]
    pub fn flushes(&self) -> u64 {
        self.flushes
    }

    /// The file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a record (see [`Journal::append`]) and applies the flush policy.
    pub fn append(&mut self, time: ServerTime, payload: &[u8]) -> Result<u64, JournalError> {
        let before = self.journal.head_offset();
        let sync_header = self.policy != FlushPolicy::Os;
        let mut header_flushed = false;
        let seq = self.journal.append_with(time, payload, |map| {
            if sync_header {
                header_flushed = true;
                map.flush_range(0, HEADER_LEN)
            } else {
                Ok(())
            }
        })?;
        if header_flushed {
            self.flushes = self.flushes.saturating_add(1);
        }
        let after = self.journal.head_offset();
        let moved = if after > before {
            after.saturating_sub(before)
        } else {
            self.journal
                .capacity()
                .saturating_sub(before)
                .saturating_add(after)
        };
        self.dirty_bytes = self.dirty_bytes.saturating_add(moved as u64);
        self.unreleased = self.unreleased.saturating_add(moved);
        if self.unreleased >= RESIDENT_WINDOW {
            self.release_pages();
        }
        self.unprefetched = self.unprefetched.saturating_add(moved);
        if self.unprefetched >= PREFETCH_STEP {
            self.prefetch_ahead();
        }
        if self.policy == FlushPolicy::Always {
            self.flush_dirty()
                .map_err(|e| io_err("flush of", &self.path, e))?;
        }
        Ok(seq)
    }

    /// For [`FlushPolicy::Interval`]: flushes what was written since the last flush when the
    /// interval has passed. Call it from the event loop's timer.
    pub fn tick(&mut self, now: Instant) -> Result<(), JournalError> {
        if let FlushPolicy::Interval(every) = self.policy {
            if self.dirty_bytes > 0 && now.saturating_duration_since(self.last_flush) >= every {
                self.flush_dirty()
                    .map_err(|e| io_err("flush of", &self.path, e))?;
                self.last_flush = now;
            }
        }
        Ok(())
    }

    /// See [`Journal::mark_began`].
    pub fn mark_began(&mut self, began: ServerTime) {
        self.journal.mark_began(began);
    }

    /// Brings the header up to date and forces the whole journal to disk now (`msync`),
    /// whatever the policy.
    pub fn flush(&mut self) -> io::Result<()> {
        self.flushes = self.flushes.saturating_add(1);
        self.journal.sync_header();
        self.journal.buffer().flush()
    }

    /// Forces the ring range written since the last flush, then the header, to disk.
    fn flush_dirty(&mut self) -> io::Result<()> {
        self.flushes = self.flushes.saturating_add(1);
        self.journal.write_head_hint();
        let map = self.journal.buffer();
        let n = self.journal.capacity();
        let head = self.journal.head_offset();
        let from = self.dirty_from;
        if self.dirty_bytes >= n as u64 {
            map.flush_range(HEADER_LEN, n)?;
        } else if self.dirty_bytes > 0 {
            if head > from {
                map.flush_range(HEADER_LEN.saturating_add(from), head.saturating_sub(from))?;
            } else {
                map.flush_range(HEADER_LEN.saturating_add(from), n.saturating_sub(from))?;
                if head > 0 {
                    map.flush_range(HEADER_LEN, head)?;
                }
            }
        }
        map.flush_range(0, HEADER_LEN)?;
        self.dirty_from = head;
        self.dirty_bytes = 0;
        Ok(())
    }
}

impl Drop for JournalFile {
    /// A clean close: the header made exact (no oldest record is lost to the run-ahead), and
    /// with a flushing policy, what is left flushed.
    fn drop(&mut self) {
        if self.policy == FlushPolicy::Os {
            self.journal.sync_header();
        } else {
            let _ = self.flush_dirty();
        }
    }
}

pub(super) fn lock(file: &File, path: &Path) -> Result<(), JournalError> {
    // fs4's flock, not std's `File::try_lock`: that one needs Rust 1.89, the crate's MSRV is 1.85.
    match FileExt::try_lock(file) {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => Err(JournalError::Locked {
            path: path.to_owned(),
        }),
        Err(TryLockError::Error(e)) => Err(io_err("lock of", path, e)),
    }
}

/// Gives the file `size` octets of zeros, on disk blocks reserved now (`fallocate`, or zeros
/// written where the file system has no `fallocate`).
fn allocate(file: &mut File, size: u64) -> io::Result<()> {
    file.set_len(0)?;
    match FileExt::allocate(file, size) {
        Ok(()) if file.metadata()?.len() == size => return file.sync_all(),
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::Unsupported => {}
        Err(e) => return Err(e),
    }
    file.set_len(0)?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = usize::try_from(left).map_or(zeros.len(), |l| l.min(zeros.len()));
        file.write_all(zeros.get(..n).unwrap_or_default())?;
        left = left.saturating_sub(n as u64);
    }
    file.sync_all()
}

pub(super) fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

#[allow(unsafe_code)]
fn map(file: &File, path: &Path) -> Result<MmapMut, JournalError> {
    // SAFETY: a file mapping is sound as long as nothing else changes the file or its size while
    // it is mapped. This file is lqd's own (its configured journal path), lqd never truncates
    // it once mapped, and the caller holds an exclusive `flock` on it, taken before the map, so
    // another lqd cannot map it. A process that ignores the lock and writes the file anyway
    // would be undefined behaviour for this one: the journal validates lengths and CRCs on open,
    // but cannot guard against the bytes changing under a live reference.
    unsafe { MmapMut::map_mut(file) }.map_err(|e| io_err("map of", path, e))
}

/// Where a damaged journal is kept before its repair: beside it, named with the Unix time
/// (`lqd.journal.damaged-1796613074`).
pub(super) fn damaged_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".damaged-{}", unix_now()));
    PathBuf::from(name)
}

/// The Unix time now, in seconds.
pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::{FlushPolicy, JournalFile, ahead};
    use crate::codec::ServerTime;

    #[test]
    fn a_reconnect_storm_asks_for_the_ring_once() {
        let dir = std::env::temp_dir().join(format!("lqd-prefetch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (mut jf, _) =
            JournalFile::open(&dir.join("journal"), 1 << 20, FlushPolicy::Os).unwrap();
        for i in 0..100u32 {
            jf.append(ServerTime(1000 + i), &[7; 64]).unwrap();
        }
        let old = jf.journal().seek_time(ServerTime(1010)).unwrap();
        let newer = jf.journal().seek_time(ServerTime(1050)).unwrap();
        jf.prefetch_from(&old);
        assert_eq!(jf.prefetched.get().map(|(s, _)| s), Some(old.seq()));
        // A later start is covered by the request just made.
        jf.prefetch_from(&newer);
        assert_eq!(jf.prefetched.get().map(|(s, _)| s), Some(old.seq()));
        // An earlier one asks again, from itself.
        let oldest = jf.journal().tail();
        jf.prefetch_from(&oldest);
        assert_eq!(jf.prefetched.get().map(|(s, _)| s), Some(oldest.seq()));
        drop(jf);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_range_ahead_of_the_head_goes_round_the_ring() {
        // Within the ring.
        assert_eq!(ahead(100, 1000, 50), [(100, 50), (0, 0)]);
        // Round its end: the rest of the ring, then from its start.
        assert_eq!(ahead(980, 1000, 50), [(980, 20), (0, 30)]);
        // At its very end.
        assert_eq!(ahead(1000, 1000, 50), [(1000, 0), (0, 50)]);
        // No more than the ring.
        assert_eq!(ahead(400, 1000, 5000), [(400, 600), (0, 400)]);
        assert_eq!(ahead(0, 0, 50), [(0, 0), (0, 0)]);
    }
}
