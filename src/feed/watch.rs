//! Waking a file source as soon as its file changes: inotify on the file and its directory,
//! with polling as the fallback (issue 15).
//!
//! A followed file ([`super::follow`]) is looked at whenever [`FileWatch::wait`] returns: at
//! once when inotify reports anything about the file (written, its attributes changed, moved
//! or deleted) or about its directory (a file created, moved in or out, deleted, written),
//! and otherwise after [`POLL_INTERVAL`] at the latest. The poll after a timeout is the
//! fallback for file systems without inotify (NFS, some FUSE mounts), for a queue that
//! overflowed, and for anything inotify does not see; it also lets the source notice that
//! the feed has closed.
//!
//! The directory watch sees a new file at the path (Kea's lease file cleanup renames the file
//! to `.1` and creates a new one) before anything is written to it, so the follower moves to
//! it at once; the file watch follows the inode (and so a path that is a symbolic link into
//! another directory). When the follower moves to another file, [`FileWatch::follow`] moves
//! the file watch to it. What the follower reads, and the cleanup safety, do not change: the
//! wake-ups only make it look sooner.
//!
//! Without inotify (it cannot be set up, or the directory cannot be watched) the source polls,
//! and says so once in the log.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use inotify::{Inotify, WatchDescriptor, WatchMask};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::follow::{FileId, POLL_INTERVAL};

const INOTIFY: Token = Token(0);

/// What wakes a file source: inotify with polling as the fallback (the default), or polling
/// only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wake {
    /// inotify on the file and its directory, and a poll every [`POLL_INTERVAL`] in any case.
    #[default]
    Inotify,
    /// A poll every [`POLL_INTERVAL`] only: as on a file system without inotify (and to measure
    /// what inotify saves).
    Polling,
}

/// What wakes a source following one path: see the [module documentation](self).
#[derive(Debug)]
pub struct FileWatch {
    path: PathBuf,
    inner: Option<Watching>,
}

#[derive(Debug)]
struct Watching {
    inotify: Inotify,
    poll: Poll,
    events: Events,
    buffer: Box<[u8]>,
    /// The watch on the followed file, and which file it is.
    file: Option<(WatchDescriptor, FileId)>,
}

/// What the file watch asks for: writes, attribute changes (a truncation shows as a write),
/// and the file moved or deleted.
fn file_mask() -> WatchMask {
    WatchMask::MODIFY
        | WatchMask::ATTRIB
        | WatchMask::CLOSE_WRITE
        | WatchMask::MOVE_SELF
        | WatchMask::DELETE_SELF
}

/// What the directory watch asks for: files created, moved in or out, deleted, written.
fn dir_mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::MOVED_TO
        | WatchMask::MOVED_FROM
        | WatchMask::DELETE
        | WatchMask::MODIFY
        | WatchMask::CLOSE_WRITE
        | WatchMask::ONLYDIR
}

impl FileWatch {
    /// Watches `path` and its directory; `what` names the source in the log line that says
    /// inotify could not be used (the source then polls every [`POLL_INTERVAL`]).
    #[must_use]
    pub fn new(path: &Path, what: &str) -> Self {
        let inner = match Watching::new(path) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(source = %what, "{what}: cannot watch {} with inotify ({e}); polling it every {} ms", path.display(), POLL_INTERVAL.as_millis());
                None
            }
        };
        let mut watch = Self {
            path: path.to_owned(),
            inner,
        };
        watch.follow(FileId::at(path));
        watch
    }

    /// A watch of `path` woken as `wake` says ([`new`](Self::new) or [`polling`](Self::polling)).
    #[must_use]
    pub fn with(path: &Path, what: &str, wake: Wake) -> Self {
        match wake {
            Wake::Inotify => Self::new(path, what),
            Wake::Polling => Self::polling(path),
        }
    }

    /// A watch that only polls (for file systems without inotify, and for comparisons).
    #[must_use]
    pub fn polling(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            inner: None,
        }
    }

    /// True when inotify wakes the source; false when it only polls.
    #[must_use]
    pub const fn is_notified(&self) -> bool {
        self.inner.is_some()
    }

    /// The follower now reads `file` (`None`: none is open): the file watch moves to it.
    pub fn follow(&mut self, file: Option<FileId>) {
        let Some(w) = self.inner.as_mut() else {
            return;
        };
        if w.file.as_ref().map(|(_, id)| *id) == file {
            return;
        }
        if let Some((wd, _)) = w.file.take() {
            // The file may be gone, its watch with it: nothing to undo then.
            let _ = w.inotify.watches().remove(wd);
        }
        if file.is_some()
            && let Ok(wd) = w.inotify.watches().add(&self.path, file_mask())
        {
            // The path may already name another file than the follower's: the next change
            // of either wakes the source, which then follows the new one.
            w.file = FileId::at(&self.path).map(|id| (wd, id));
        }
    }

    /// Waits until inotify reports a change of the file or its directory, or `timeout` passes
    /// (at most [`POLL_INTERVAL`] is a good bound: the polling fallback).
    pub fn wait(&mut self, timeout: Duration) {
        let Some(w) = self.inner.as_mut() else {
            std::thread::sleep(timeout);
            return;
        };
        match w.poll.poll(&mut w.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => std::thread::sleep(timeout),
        }
        // Edge-triggered: drain every queued event, so that the next one wakes again.
        loop {
            match w.inotify.read_events(&mut w.buffer) {
                Ok(events) => {
                    if events.count() == 0 {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
}

impl Watching {
    fn new(path: &Path) -> io::Result<Self> {
        let inotify = Inotify::init()?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        inotify.watches().add(&dir, dir_mask())?;
        let poll = Poll::new()?;
        poll.registry().register(
            &mut SourceFd(&inotify.as_raw_fd()),
            INOTIFY,
            Interest::READABLE,
        )?;
        Ok(Self {
            inotify,
            poll,
            events: Events::with_capacity(4),
            buffer: vec![0; 4096].into_boxed_slice(),
            file: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Instant;

    use super::*;

    /// A write to the file, and a file created at the path, each end a wait at once.
    #[test]
    fn a_write_or_a_new_file_wakes_the_wait_before_the_poll_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases.csv");
        std::fs::write(&path, "header\n").unwrap();
        let mut watch = FileWatch::new(&path, "test");
        assert!(watch.is_notified());
        // Nothing happens: the wait lasts its timeout.
        let t = Instant::now();
        watch.wait(Duration::from_millis(50));
        assert!(t.elapsed() >= Duration::from_millis(45));

        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .unwrap();
                f.write_all(b"row\n").unwrap();
            })
        };
        let t = Instant::now();
        watch.wait(Duration::from_secs(5));
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        writer.join().unwrap();

        // Renamed away and replaced, as Kea's cleanup does.
        std::fs::rename(&path, dir.path().join("leases.csv.1")).unwrap();
        watch.wait(Duration::from_secs(5));
        let creator = {
            let path = path.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                std::fs::write(&path, "header\n").unwrap();
            })
        };
        let t = Instant::now();
        watch.wait(Duration::from_secs(5));
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        creator.join().unwrap();
        watch.follow(FileId::at(&path));
    }

    #[test]
    fn without_inotify_the_wait_is_the_poll_interval() {
        let mut watch = FileWatch::polling(Path::new("/nonexistent/file"));
        assert!(!watch.is_notified());
        let t = Instant::now();
        watch.wait(Duration::from_millis(30));
        assert!(t.elapsed() >= Duration::from_millis(25));
    }
}
