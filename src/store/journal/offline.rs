//! The journal file while lqd is stopped: `lqd journal check` and `lqd journal resize`.
//!
//! Both read the file as it is, with no map and nothing written: a file cut short (by a
//! `truncate`, a copy that stopped, a full disk) is read up to where it ends, as if the rest
//! were never written. [`check`] says what catch-up could serve from it: records, time span,
//! damage. [`resize`] writes a new journal of another size holding the newest intact records
//! that fit (and a marker for each hole, so catch-ups from before one still get DataMissing),
//! keeps the old file beside it, and puts the new one in its place: the supported way to
//! change `journal_size`, or to recover a journal cut short.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::layout::{self, HEADER_LEN, field};
use super::ring::{Inspection, Journal, inspect};
use super::{JournalError, file};
use crate::codec::ServerTime;

/// The largest journal [`check`] and [`resize`] read whole into memory (a file cut short is
/// padded to the size its header gives): 16 GiB.
const MAX_PADDED: u64 = 16 << 30;

/// What [`check`] found in a journal file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The file.
    pub path: PathBuf,
    /// Its size in octets.
    pub file_len: u64,
    /// The size its header gives it (header and ring); more than `file_len` when it was cut
    /// short.
    pub header_len: u64,
    /// What the records say.
    pub inspection: Inspection,
}

impl Report {
    /// True when every record is intact and the file is whole.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.inspection.holes.is_empty() && self.file_len == self.header_len
    }
}

fn utc(t: ServerTime) -> String {
    format!("Unix time {}", t.to_unix())
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inspection;
        writeln!(f, "journal {}", self.path.display())?;
        writeln!(
            f,
            "  size: {} octets ({} octets of ring, {} used by the records, {:.1} %)",
            self.file_len,
            i.ring_len,
            i.used,
            i.used as f64 * 100.0 / i.ring_len.max(1) as f64
        )?;
        writeln!(f, "  records: {}", i.records)?;
        match i.span {
            Some((a, z)) => writeln!(f, "  time span: {} to {}", utc(a), utc(z))?,
            None => writeln!(f, "  time span: none (no records)")?,
        }
        match i.evicted {
            Some(e) => writeln!(
                f,
                "  catch-up reaches back to just after {} (older records were overwritten)",
                utc(e)
            )?,
            None => writeln!(
                f,
                "  catch-up reaches back to the journal's first record (none overwritten)"
            )?,
        }
        if self.file_len < self.header_len {
            writeln!(
                f,
                "  damage: the file is {} octets but its header says {}: cut short; the records \
                 in the missing part are lost",
                self.file_len, self.header_len
            )?;
        }
        for h in &i.holes {
            writeln!(f, "  damage: {h}")?;
        }
        if self.is_clean() {
            writeln!(f, "  no damage")?;
        } else {
            writeln!(
                f,
                "  `lqd journal resize SIZE` writes a new journal from the intact records (the \
                 old file is kept); lqd itself repairs damaged records when it opens the journal"
            )?;
        }
        Ok(())
    }
}

/// Reads the journal at `path` whole: its octets, padded with zeros to the size its header
/// gives when the file was cut short; and the file's own length.
fn read_padded(path: &Path) -> Result<(Vec<u8>, u64), JournalError> {
    let mut f = File::open(path).map_err(|e| file::io_err("open of", path, e))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)
        .map_err(|e| file::io_err("read of", path, e))?;
    let file_len = buf.len() as u64;
    let ring = layout::get_u64(&buf, field::RING_LEN).unwrap_or(0);
    let want = ring.saturating_add(HEADER_LEN as u64);
    if want > file_len {
        // A file cut short: read as if the rest were never written. A header that claims
        // more than any journal lqd makes is damage, not a size to allocate.
        if want > MAX_PADDED {
            return Err(JournalError::BadHeader(format!(
                "the header says the journal is {want} octets, the file is {file_len}: more \
                 than the {MAX_PADDED} octets a journal may have"
            )));
        }
        buf.resize(usize::try_from(want).unwrap_or(buf.len()), 0);
    }
    Ok((buf, file_len))
}

/// Checks the journal file at `path` without changing it.
pub fn check(path: &Path) -> Result<Report, JournalError> {
    let (buf, file_len) = read_padded(path)?;
    let inspection = inspect(&buf)?;
    Ok(Report {
        path: path.to_owned(),
        file_len,
        header_len: buf.len() as u64,
        inspection,
    })
}

/// What [`resize`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resized {
    /// The journal, now of the new size.
    pub path: PathBuf,
    /// Where the old file is kept.
    pub kept: PathBuf,
    /// Intact records in the old file.
    pub records_before: u64,
    /// Records in the new one (markers of holes included).
    pub records_after: u64,
    /// The old and the new size.
    pub sizes: (u64, u64),
    /// Catch-up now reaches back to just after this time (`None`: to the first record).
    pub evicted: Option<ServerTime>,
}

impl fmt::Display for Resized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "journal {} resized from {} to {} octets: {} of {} records kept",
            self.path.display(),
            self.sizes.0,
            self.sizes.1,
            self.records_after,
            self.records_before
        )?;
        match self.evicted {
            Some(e) => writeln!(f, "catch-up reaches back to just after {}", utc(e))?,
            None => writeln!(f, "catch-up reaches back to the first record")?,
        }
        writeln!(
            f,
            "the old file is kept as {}; set journal_size = {} in lqd's configuration",
            self.kept.display(),
            self.sizes.1
        )
    }
}

/// Rewrites the journal at `path` as one of `size` octets holding the newest intact records
/// that fit, and keeps the old file beside it (`PATH.before-resize-UNIXTIME`). Refused while
/// an lqd holds the journal.
pub fn resize(path: &Path, size: u64) -> Result<Resized, JournalError> {
    let old = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| file::io_err("open of", path, e))?;
    file::lock(&old, path)?;
    let (buf, file_len) = read_padded(path)?;
    let report = inspect(&buf)?;
    if size > MAX_PADDED {
        return Err(JournalError::BadHeader(format!(
            "{size} octets: resize writes journals of up to {MAX_PADDED} octets"
        )));
    }
    let new_len = usize::try_from(size)
        .ok()
        .filter(|&s| layout::ring_len_for(s).is_some())
        .ok_or(JournalError::TooSmall {
            len: size,
            min: (HEADER_LEN + layout::MIN_RING_LEN) as u64,
        })?;
    let (mut records, evicted) = super::ring::intact_records(&buf)?;
    // The relay templates' definitions again after the newest records, so that the records the
    // new ring keeps find theirs even when the ring drops the older definitions (D42).
    let newest = records.last().map(|(t, _)| *t);
    let mut defs = std::collections::BTreeMap::new();
    for (_, payload) in &records {
        if let Some((id, _)) = crate::store::record::definition_of(payload) {
            defs.insert(id, payload.clone());
        }
    }
    if let Some(t) = newest {
        records.extend(defs.into_values().map(|p| (t, p)));
    }
    let mut journal = Journal::rebuilt(vec![0u8; new_len], evicted, &records)?;
    journal.sync_header();
    let records_after = journal.len();
    let evicted = journal.evicted_time();
    let bytes = journal.into_inner();

    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".resize");
    let tmp = PathBuf::from(tmp);
    let mut out = File::create(&tmp).map_err(|e| file::io_err("creation of", &tmp, e))?;
    out.write_all(&bytes)
        .and_then(|()| out.sync_all())
        .map_err(|e| file::io_err("write of", &tmp, e))?;
    let mut kept = path.as_os_str().to_owned();
    kept.push(format!(".before-resize-{}", file::unix_now()));
    let kept = PathBuf::from(kept);
    fs::rename(path, &kept).map_err(|e| file::io_err("rename of", path, e))?;
    fs::rename(&tmp, path).map_err(|e| file::io_err("rename into place of", &tmp, e))?;
    file::sync_dir(path).map_err(|e| file::io_err("sync of the directory of", path, e))?;
    drop(old);
    Ok(Resized {
        path: path.to_owned(),
        kept,
        records_before: report.records,
        records_after,
        sizes: (file_len, size),
        evicted,
    })
}
