//! Named writers and what lqd has journaled of their numbered lines.
//!
//! A writer on the `jsonl:unix` socket may name itself and number its lines (`docs/jsonl-acks.md`
//! has the protocol). lqd's loop journals each numbered line's change with the writer's *mark*,
//! the last line it has taken (see [`History`](crate::store::History)), and then publishes that
//! mark here, in the writer's [`Writer`]: the source thread that reads the writer's socket
//! reports it back. The loop only stores into an atomic: it never waits for a source.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The most writers lqd keeps a mark for: names are for a handful of long-lived writers, and
/// each mark rides in the journal for ever.
pub const MAX_WRITERS: usize = 256;

/// The longest writer name, in octets.
pub const MAX_NAME: usize = 64;

/// One named writer: its name and the last of its lines lqd has journaled.
#[derive(Debug)]
pub struct Writer {
    name: Box<str>,
    /// The acknowledged line plus one; 0 for none.
    acked: AtomicU64,
    /// A connection speaks for this writer now.
    connected: AtomicBool,
}

impl Writer {
    fn new(name: &str, acked: Option<u64>) -> Self {
        Self {
            name: name.into(),
            acked: AtomicU64::new(acked.map_or(0, |s| s.saturating_add(1))),
            connected: AtomicBool::new(false),
        }
    }

    /// The writer's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The last of the writer's lines lqd has taken and journaled (the journal record carrying
    /// it is in the mapped file), if any.
    #[must_use]
    pub fn acked(&self) -> Option<u64> {
        self.acked.load(Ordering::Acquire).checked_sub(1)
    }

    /// The loop journaled the writer's mark `seq`. Marks only move forward.
    pub(crate) fn publish(&self, seq: u64) {
        self.acked
            .fetch_max(seq.saturating_add(1), Ordering::AcqRel);
    }

    /// Claims the writer for a connection; false when another connection has it.
    pub(crate) fn claim(&self) -> bool {
        !self.connected.swap(true, Ordering::AcqRel)
    }

    /// The connection that claimed the writer has ended.
    pub(crate) fn release(&self) {
        self.connected.store(false, Ordering::Release);
    }
}

/// Every writer lqd knows: those whose mark it restored from the journal, and those that
/// named themselves since.
#[derive(Debug, Default)]
pub struct Writers {
    by_name: Mutex<HashMap<Box<str>, Arc<Writer>>>,
}

/// [`Writers::named`] found no room for another writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyWriters;

impl fmt::Display for TooManyWriters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lqd keeps marks for at most {MAX_WRITERS} writers")
    }
}

impl std::error::Error for TooManyWriters {}

impl Writers {
    /// No writer yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The writers of `marks` (name, last line journaled), as the journal gave them at start.
    #[must_use]
    pub fn restored<'a>(marks: impl IntoIterator<Item = (&'a str, u64)>) -> Self {
        let by_name = marks
            .into_iter()
            .map(|(name, seq)| (name.into(), Arc::new(Writer::new(name, Some(seq)))))
            .collect();
        Self {
            by_name: Mutex::new(by_name),
        }
    }

    /// The writer called `name`, added when new (while there is room).
    ///
    /// # Errors
    ///
    /// [`TooManyWriters`] for a new name when lqd knows [`MAX_WRITERS`] already.
    pub fn named(&self, name: &str) -> Result<Arc<Writer>, TooManyWriters> {
        let mut by_name = self.lock();
        if let Some(w) = by_name.get(name) {
            return Ok(Arc::clone(w));
        }
        if by_name.len() >= MAX_WRITERS {
            return Err(TooManyWriters);
        }
        let w = Arc::new(Writer::new(name, None));
        by_name.insert(name.into(), Arc::clone(&w));
        Ok(w)
    }

    /// Every writer known now.
    #[must_use]
    pub fn all(&self) -> Vec<Arc<Writer>> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Arc<Writer>>> {
        self.by_name.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
