//! Following a file as it grows: what the `jsonl:PATH` and `kea-csv:PATH` sources share.
//!
//! A [`Follower`] watches one path. The source calls [`Follower::poll`] whenever
//! [`super::watch::FileWatch`] wakes it (inotify), and every [`POLL_INTERVAL`] in any case; each poll looks at the path once and hands what it finds to a callback as
//! [`Event`]s, in this order:
//!
//! 1. **Not open**: the file is opened, or [`Event::Waiting`] is reported (once, until it
//!    opens).
//! 2. **Replaced**: another file (device and inode) is at the path. The open file is read to
//!    its end first, a last line without its newline included (a writer does not come back to a
//!    file it renamed away), then [`Event::Replaced`], then the new file is read from its
//!    beginning. A path that is missing (the file renamed away, no new one yet) is not a
//!    replacement: the open file is still read.
//! 3. **Truncated**: the file is shorter than what was read: [`Event::Truncated`], and the file
//!    is read again from its beginning.
//! 4. **Rewritten**: the octets already read are no longer there (see below):
//!    [`Event::Rewritten`], and the file is read again from its beginning.
//! 5. The octets appended since the last poll are read and split into lines
//!    ([`Event::Line`]); a last line without its newline waits for the rest.
//! 6. [`Event::CaughtUp`], the first time an opened file has been read to its end.
//!
//! Line numbers count from 1 in each file, and again from 1 when a file is read again.
//!
//! # Rewritten files
//!
//! The size alone cannot tell an append from a file that was truncated and then written past
//! its old size within one poll interval. So each poll also reads back the first and the last
//! [`WINDOW`] octets read so far (two `pread`s of at most 4 KiB each, normally from the page
//! cache) and compares them with what was read. An appending writer never changes octets
//! before the end, so this has no false alarms; a rewrite shows as soon as either window
//! differs. The residual limit: a rewrite that leaves both windows exactly as they were while
//! changing octets between them is not noticed (one that keeps every octet read is simply an
//! append, and following it is right). A writer that replaces a file should rename a new file
//! over it, as Kea's lease file cleanup does: that is always noticed.

use std::fmt;
use std::fs::{File, Metadata};
use std::io;
use std::ops::ControlFlow;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often a followed file is checked for new data, replacement and truncation when inotify
/// has said nothing (the fallback: [`super::watch`]).
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The longest line taken, in octets (without its newline); longer lines are skipped.
pub const MAX_LINE: usize = 1 << 20;

/// How many octets at the start and at the end of what was read are compared at each poll to
/// notice a rewritten file.
pub const WINDOW: usize = 4096;

/// How much is read at a time.
const CHUNK: usize = 64 * 1024;

/// Why a line was skipped: one sentence naming what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError(pub String);

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LineError {}

fn err<T>(message: impl Into<String>) -> Result<T, LineError> {
    Err(LineError(message.into()))
}

/// Splits a byte stream into numbered lines, across reads; what a source feeds its reads to.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
    line: u64,
    /// The current line went past [`MAX_LINE`]: drop its octets up to the next newline.
    overlong: bool,
}

/// One line out of a [`LineSplitter`]: its number (from 1) and text, or why it is unreadable.
pub type NumberedLine<'a> = (u64, Result<&'a str, LineError>);

impl LineSplitter {
    /// A splitter at line 1.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Lines handed on so far (an overlong line counts from when it is reported).
    #[must_use]
    pub const fn lines(&self) -> u64 {
        self.line
    }

    /// Octets held of a line whose newline has not arrived yet (0 while an overlong line is
    /// being dropped).
    #[must_use]
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Takes `data`, handing every line it completes to `f`. A part line stays until its
    /// newline arrives (or [`finish`](Self::finish)).
    pub fn push(&mut self, data: &[u8], mut f: impl FnMut(NumberedLine<'_>)) {
        let mut rest = data;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let (head, tail) = rest.split_at(nl);
            rest = tail.get(1..).unwrap_or_default();
            if self.overlong {
                self.overlong = false;
                self.buf.clear();
                continue;
            }
            if self.buf.len().saturating_add(head.len()) > MAX_LINE {
                self.line += 1;
                self.buf.clear();
                f((self.line, err(format!("longer than {MAX_LINE} octets"))));
                continue;
            }
            self.buf.extend_from_slice(head);
            self.emit(&mut f);
        }
        if self.overlong {
            return;
        }
        if self.buf.len().saturating_add(rest.len()) > MAX_LINE {
            self.line += 1;
            self.buf.clear();
            self.overlong = true;
            f((self.line, err(format!("longer than {MAX_LINE} octets"))));
            return;
        }
        self.buf.extend_from_slice(rest);
    }

    /// The end of the stream: a last line without a newline is handed to `f`.
    pub fn finish(&mut self, mut f: impl FnMut(NumberedLine<'_>)) {
        if !self.overlong && !self.buf.is_empty() {
            self.emit(&mut f);
        }
        self.buf.clear();
        self.overlong = false;
    }

    /// Starts again at line 1, dropping a part line (a file replaced or truncated).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    fn emit(&mut self, f: &mut impl FnMut(NumberedLine<'_>)) {
        self.line += 1;
        let mut text = self.buf.as_slice();
        if let Some(t) = text.strip_suffix(b"\r") {
            text = t;
        }
        match std::str::from_utf8(text) {
            Ok(s) => f((self.line, Ok(s))),
            Err(e) => f((self.line, err(format!("not UTF-8: {e}")))),
        }
        self.buf.clear();
    }
}

/// The identity of a file: its device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    /// The device.
    pub dev: u64,
    /// The inode.
    pub ino: u64,
}

impl FileId {
    /// The identity of the file `m` describes.
    #[must_use]
    pub fn of(m: &Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
        }
    }

    /// The identity of the file at `path` now (following symbolic links), if there is one.
    #[must_use]
    pub fn at(path: &Path) -> Option<Self> {
        std::fs::metadata(path).ok().map(|m| Self::of(&m))
    }
}

/// What a followed file no longer has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lost {
    /// It is shorter than what was read.
    Truncated { size: u64, was: u64 },
    /// The octets read are not all there any more.
    Rewritten { size: u64, was: u64 },
}

/// One open file read from its beginning: its identity, how far it was read, its unfinished
/// last line, and the first and last octets read (to notice a rewrite).
#[derive(Debug)]
pub struct FileReader {
    file: File,
    id: FileId,
    offset: u64,
    splitter: LineSplitter,
    /// The first [`WINDOW`] octets read (fewer while fewer were read).
    head: Vec<u8>,
    /// The last [`WINDOW`] octets read, ending at `offset`.
    tail: Vec<u8>,
    chunk: Box<[u8]>,
}

impl FileReader {
    /// Opens `path` for reading from its beginning.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened or its metadata read.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let id = FileId::of(&file.metadata()?);
        Ok(Self {
            file,
            id,
            offset: 0,
            splitter: LineSplitter::new(),
            head: Vec::new(),
            tail: Vec::new(),
            chunk: vec![0; CHUNK].into_boxed_slice(),
        })
    }

    /// The identity of the open file.
    #[must_use]
    pub const fn id(&self) -> FileId {
        self.id
    }

    /// Lines handed on so far from this file (since it was last read from its beginning).
    #[must_use]
    pub const fn lines(&self) -> u64 {
        self.splitter.lines()
    }

    /// Octets read so far.
    #[must_use]
    pub const fn offset(&self) -> u64 {
        self.offset
    }

    /// Octets of the file not yet handed on as lines: its size now less what was read, plus a
    /// last line read without its newline yet (0 when its size cannot be read).
    #[must_use]
    pub fn unread(&self) -> u64 {
        let taken = self.offset.saturating_sub(self.splitter.pending() as u64);
        self.file
            .metadata()
            .map_or(0, |m| m.len().saturating_sub(taken))
    }

    /// Reads what the file has now from where the last read stopped, handing each complete
    /// line to `f`, until the end of the file or until `f` breaks (the rest of that read is
    /// then dropped: the caller is stopping).
    ///
    /// # Errors
    ///
    /// A read failed; the lines before it were handed on, and the next read starts there.
    pub fn read(
        &mut self,
        mut f: impl FnMut(NumberedLine<'_>) -> ControlFlow<()>,
    ) -> io::Result<ControlFlow<()>> {
        loop {
            let n = match self.file.read_at(&mut self.chunk, self.offset) {
                Ok(0) => return Ok(ControlFlow::Continue(())),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let data = self.chunk.get(..n).unwrap_or_default();
            self.offset = self.offset.saturating_add(n as u64);
            remember(&mut self.head, &mut self.tail, data);
            let mut flow = ControlFlow::Continue(());
            self.splitter.push(data, |line| {
                if flow.is_continue() {
                    flow = f(line);
                }
            });
            if flow.is_break() {
                return Ok(flow);
            }
        }
    }

    /// Reads the file to its end, then hands on a last line without a newline too: for a file
    /// no writer adds to any more.
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read); the unfinished last line is then kept.
    pub fn read_to_end(
        &mut self,
        mut f: impl FnMut(NumberedLine<'_>) -> ControlFlow<()>,
    ) -> io::Result<ControlFlow<()>> {
        if self.read(&mut f)?.is_break() {
            return Ok(ControlFlow::Break(()));
        }
        let mut flow = ControlFlow::Continue(());
        self.splitter.finish(|line| flow = f(line));
        Ok(flow)
    }

    /// Whether what was read is still there: `None`, or how it was lost.
    fn lost(&self) -> io::Result<Option<Lost>> {
        let size = self.file.metadata()?.len();
        let was = self.offset;
        if size < was {
            return Ok(Some(Lost::Truncated { size, was }));
        }
        let tail_at = was.saturating_sub(self.tail.len() as u64);
        let same = self.still_at(0, &self.head)?
            && (was <= self.head.len() as u64 || self.still_at(tail_at, &self.tail)?);
        Ok((!same).then_some(Lost::Rewritten { size, was }))
    }

    /// Whether the file holds `octets` at `at`.
    fn still_at(&self, at: u64, octets: &[u8]) -> io::Result<bool> {
        let mut buf = [0u8; WINDOW];
        let Some(buf) = buf.get_mut(..octets.len()) else {
            return Ok(false);
        };
        match self.file.read_exact_at(buf, at) {
            Ok(()) => Ok(buf == octets),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads again from the beginning of the file, with line numbers from 1.
    fn restart(&mut self) {
        self.offset = 0;
        self.splitter.reset();
        self.head.clear();
        self.tail.clear();
    }
}

/// Keeps the first and the last [`WINDOW`] octets of a file read in pieces; `data` is the next
/// piece.
fn remember(head: &mut Vec<u8>, tail: &mut Vec<u8>, data: &[u8]) {
    let room = WINDOW.saturating_sub(head.len());
    head.extend_from_slice(data.get(..room.min(data.len())).unwrap_or_default());
    if data.len() >= WINDOW {
        tail.clear();
        tail.extend_from_slice(data.get(data.len() - WINDOW..).unwrap_or_default());
    } else {
        tail.extend_from_slice(data);
        let excess = tail.len().saturating_sub(WINDOW);
        tail.drain(..excess);
    }
}

/// What a [`Follower::poll`] found.
#[derive(Debug)]
pub enum Event<'a> {
    /// A complete line of the followed file.
    Line {
        /// The followed path, for log lines.
        file: &'a str,
        /// The line number, from 1 in each file (and again after a truncation or a rewrite).
        number: u64,
        /// The line without its newline (and a `\r` before it), or why it cannot be read.
        line: Result<&'a str, LineError>,
    },
    /// The file was read to its end for the first time since it was opened.
    CaughtUp {
        /// Lines handed on so far (a last line without its newline not counted).
        lines: u64,
    },
    /// Another file is at the path now. The old one was read to its end (its last line
    /// without a newline too); the new one is read from its beginning next.
    Replaced {
        /// Lines of the old file.
        lines: u64,
    },
    /// The file is shorter than what was read; it is read again from its beginning.
    Truncated {
        /// Its size now.
        size: u64,
        /// The octets that had been read.
        was: u64,
    },
    /// The octets read are not all there any more, though the file is no shorter: it was
    /// truncated and written again past its old size between two polls, or overwritten in
    /// place. It is read again from its beginning.
    Rewritten {
        /// Its size now.
        size: u64,
        /// The octets that had been read.
        was: u64,
    },
    /// The file cannot be opened; it is tried again at each poll. Reported once until it opens.
    Waiting(&'a io::Error),
    /// Reading the file failed; it is tried again at the next poll.
    ReadError(&'a io::Error),
}

fn line_event<'a>(file: &'a str, (number, line): NumberedLine<'a>) -> Event<'a> {
    Event::Line { file, number, line }
}

/// Follows the file at one path: see the [module documentation](self).
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    name: String,
    reader: Option<FileReader>,
    /// [`Event::Waiting`] was reported since the file was last open.
    waiting: bool,
    /// [`Event::CaughtUp`] was reported for the open file.
    caught_up: bool,
}

impl Follower {
    /// Follows `path`, opening it now if it is there (a later [`poll`](Self::poll) reads it;
    /// holding it open from here means a file renamed away meanwhile is still read in full).
    #[must_use]
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            name: path.display().to_string(),
            reader: FileReader::open(path).ok(),
            waiting: false,
            caught_up: false,
        }
    }

    /// The followed path, as log lines show it.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The identity of the open file, if one is open.
    #[must_use]
    pub fn id(&self) -> Option<FileId> {
        self.reader.as_ref().map(FileReader::id)
    }

    /// Octets of the open file not yet handed on as lines (see [`FileReader::unread`]; 0 with
    /// no file open).
    #[must_use]
    pub fn unread(&self) -> u64 {
        self.reader.as_ref().map_or(0, FileReader::unread)
    }

    /// Looks at the path once and hands what changed to `f`; see the
    /// [module documentation](self) for the order. Stops, returning `Break`, as soon as `f`
    /// breaks.
    pub fn poll(&mut self, mut f: impl FnMut(Event<'_>) -> ControlFlow<()>) -> ControlFlow<()> {
        let Self {
            path,
            name,
            reader,
            waiting,
            caught_up,
        } = self;
        let name = name.as_str();
        if let Some(r) = reader.as_mut()
            && FileId::at(path).is_some_and(|id| id != r.id())
        {
            match r.read_to_end(|l| f(line_event(name, l))) {
                Ok(flow) => flow?,
                Err(e) => f(Event::ReadError(&e))?,
            }
            let lines = r.lines();
            *reader = None;
            f(Event::Replaced { lines })?;
        }
        let r = match reader {
            Some(r) => r,
            None => match FileReader::open(path) {
                Ok(r) => {
                    *waiting = false;
                    *caught_up = false;
                    reader.insert(r)
                }
                Err(e) => {
                    if !*waiting {
                        *waiting = true;
                        f(Event::Waiting(&e))?;
                    }
                    return ControlFlow::Continue(());
                }
            },
        };
        match r.lost() {
            Ok(None) => {}
            Ok(Some(lost)) => {
                r.restart();
                f(match lost {
                    Lost::Truncated { size, was } => Event::Truncated { size, was },
                    Lost::Rewritten { size, was } => Event::Rewritten { size, was },
                })?;
            }
            Err(e) => f(Event::ReadError(&e))?,
        }
        match r.read(|l| f(line_event(name, l))) {
            Ok(flow) => flow?,
            Err(e) => return f(Event::ReadError(&e)),
        }
        if !*caught_up {
            *caught_up = true;
            f(Event::CaughtUp { lines: r.lines() })?;
        }
        ControlFlow::Continue(())
    }
}
