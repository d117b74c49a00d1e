//! How lease changes reach lqd: a bounded channel into the event loop, and the built-in sources.
//!
//! lqd keeps all its state on one event-loop thread (a `mio::Poll`). Lease changes come from
//! *sources* that run on threads of their own: a DHCPv6 server that embeds lqd and pushes its
//! lease changes, a lease-file tailer, or the [`demo`] churn generator. A source never touches
//! the store; it only sends [`Change`] values, one lease at a time, through a [`FeedHandle`].
//!
//! The handle is the sending half of a **bounded** channel plus the loop's single
//! [`mio::Waker`]: every send puts the change in the channel and then makes sure the loop is
//! woken. The loop owns the [`FeedReceiver`] and takes changes out with
//! [`FeedReceiver::drain`], a bounded number at a time, so a flood of changes cannot starve the
//! requestors' sockets.
//!
//! A full channel is back-pressure: the loop is behind, and the source must wait.
//! [`FeedHandle::send`] blocks until there is room; [`FeedHandle::try_send`] hands the change
//! back with [`TrySendError::Full`] so a source that must not block can decide for itself.
//! When the loop has gone (its receiver dropped), both give the change back as closed.
//!
//! # Embedding lqd in a DHCPv6 server
//!
//! Create the feed next to the loop's `Poll`, give the [`FeedHandle`] to the server's lease
//! code (it is `Clone` and `Send`: one clone per worker thread is fine), and send a [`Change`]
//! whenever a lease is granted, renewed, released, declined, reclaimed or deleted:
//!
//! ```
//! use std::net::Ipv6Addr;
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use lqd::codec::ServerTime;
//! use lqd::feed::feed;
//! use lqd::store::{Change, Lease, LeaseKind, LeaseState};
//! use mio::{Events, Poll, Token, Waker};
//!
//! const FEED: Token = Token(0);
//!
//! let mut poll = Poll::new()?;
//! let waker = Arc::new(Waker::new(poll.registry(), FEED)?);
//! let (handle, mut receiver) = feed(1024, waker);
//!
//! // The DHCPv6 server's side: it just granted 2001:db8:0:1::1234 to a client.
//! let server = std::thread::spawn(move || {
//!     let change = Change {
//!         client_id: vec![0, 3, 0, 1, 0x02, 0, 0, 0, 0, 0x01].into_boxed_slice(),
//!         link: "2001:db8:0:1::1".parse().unwrap(),
//!         lease: Lease {
//!             kind: LeaseKind::Address,
//!             address: "2001:db8:0:1::1234".parse().unwrap(),
//!             prefix_len: 128,
//!             iaid: 1,
//!             preferred_lifetime: 3600,
//!             valid_lifetime: 7200,
//!             cltt: ServerTime::from_unix(1_700_000_000),
//!             state: LeaseState::Active,
//!         },
//!         relay: None,
//!     };
//!     handle.send(change).expect("lqd's loop is running");
//! });
//!
//! // lqd's loop: wait for the waker, then drain at most 256 changes before serving sockets.
//! let mut events = Events::with_capacity(64);
//! let mut received = Vec::new();
//! while received.is_empty() {
//!     poll.poll(&mut events, Some(Duration::from_secs(5)))?;
//!     assert!(events.iter().any(|e| e.token() == FEED), "the send woke the loop");
//!     let drained = receiver.drain(256, |change| received.push(change));
//!     assert!(!drained.more);
//! }
//! server.join().unwrap();
//! let address: Ipv6Addr = "2001:db8:0:1::1234".parse().unwrap();
//! assert_eq!(received[0].lease.address, address);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # What a send guarantees
//!
//! [`FeedHandle::send`] returns once the change is *queued*, not once it is applied or
//! journaled: a change queued when lqd is killed is lost, and the embedder must send it again
//! after the restart (in practice: re-send the state it holds; an identical re-send is not a
//! change). [`FeedHandle::sync`] waits until the loop has applied every change queued on the
//! feed before the call and appended its record to the journal (in the mapped file: it survives
//! `kill -9`; a power loss as `journal_flush` says), so an embedder that calls it after a batch
//! knows the batch is in the journal. Numbered lines and per-writer acknowledgements are a
//! protocol of the `jsonl:unix` socket (see [`jsonl`] and `docs/jsonl-acks.md`), not of this
//! handle.
//!
//! # Wake-ups are coalesced
//!
//! A send wakes the loop only when no wake-up is already outstanding: after the first send
//! following a drain, further sends just queue their change until the loop drains again. A
//! busy source therefore costs one wake-up per loop iteration, not one system call per change.
//! The loop must keep its side of the bargain: when [`Drained::more`] is true it has to come
//! back to the feed (after serving its sockets) without waiting for another wake-up.

pub mod ack;
pub mod demo;
pub mod follow;
pub mod jsonl;
pub mod kea;
mod pace;
pub mod stats;
pub mod watch;

use std::collections::HashSet;
use std::fmt;
use std::net::Ipv6Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender};

use crate::codec::ServerTime;
use crate::store::{Change, LeaseKind};

pub use ack::{Writer, Writers};
pub use demo::{ChurnMix, DemoConfig, DemoSource, spawn_demo, system_time};
pub use jsonl::{BoundJsonl, JsonlInput, SocketFile, bind_jsonl, spawn_jsonl};
pub use kea::{
    KeaCsvSource, PgTarget, spawn_kea_csv, spawn_kea_csv_polling, spawn_kea_csv_with,
    spawn_kea_pgsql,
};
pub use pace::Pacer;
pub use stats::SourceStats;
pub use watch::Wake;

/// Creates a feed: a channel holding at most `capacity` changes (at least one), whose sends
/// wake `waker`.
///
/// `waker` must be the one `mio::Waker` of the loop that owns the returned [`FeedReceiver`]
/// (mio allows a single active waker per `Poll`; share it with other wake-up reasons through
/// the `Arc` if needed).
#[must_use]
pub fn feed(capacity: usize, waker: Arc<mio::Waker>) -> (FeedHandle, FeedReceiver) {
    // A zero-capacity crossbeam channel is a rendezvous: a blocking send would wait for a
    // receiver that only looks after being woken, which happens after the send. One slot is
    // the smallest channel that works with a polling receiver.
    let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
    let shared = Arc::new(Shared {
        waker,
        wake_pending: AtomicBool::new(false),
        closed: AtomicBool::new(false),
    });
    (
        FeedHandle {
            tx,
            shared: Arc::clone(&shared),
        },
        FeedReceiver { rx, shared },
    )
}

/// What a source hands the loop, in the order it sent it.
#[derive(Debug)]
pub(crate) enum Fed {
    /// A lease change; for a numbered line of a named writer, which line.
    Change(Change, Option<Numbered>),
    /// A numbered line that was bad and skipped: its writer's mark moves past it.
    Rejected(Numbered),
    /// Once the loop takes this, everything sent before it is applied and journaled: the loop
    /// makes its pending marks durable, publishes them, then says so through the sender.
    Sync(Sender<()>),
    /// The source's time for the items that follow (a database's commit time): with source
    /// times (D33) the loop's clock moves to it, never back, and what follows is journaled at
    /// the clock.
    Clock(ServerTime),
    /// A snapshot of the source's whole state follows, taken at `at` (the source's time):
    /// the loop's clock moves to `at`, and lqd cannot honour a START_TIME at or before
    /// `reaches` (D33): a journal that holds records gets a gap marker saying so, an empty
    /// one begins there.
    Snapshot {
        /// The source's time just before the snapshot: every change after it is later.
        at: ServerTime,
        /// The source's time just after it: every change in it is at or before.
        reaches: ServerTime,
    },
    /// The source has just re-sent its whole state (a database snapshot): every lease lqd holds
    /// that is not in `keep` ended meanwhile and is deleted; then `line` is taken (the
    /// snapshot's position, for the source's mark).
    Reconcile {
        /// The leases (kind, address or prefix) the snapshot holds.
        keep: HashSet<(LeaseKind, Ipv6Addr)>,
        /// The writer's mark the snapshot stands for.
        line: Option<Numbered>,
    },
}

impl Fed {
    /// The change of an item [`FeedHandle::send`] or [`FeedHandle::try_send`] queued: those
    /// queue only changes, so only changes come back from them.
    fn into_change(self) -> Change {
        match self {
            Self::Change(c, _) => c,
            Self::Rejected(_)
            | Self::Sync(_)
            | Self::Reconcile { .. }
            | Self::Clock(_)
            | Self::Snapshot { .. } => {
                unreachable!("send and try_send queue changes")
            }
        }
    }
}

/// Line `seq` of a named writer.
#[derive(Debug, Clone)]
pub(crate) struct Numbered {
    /// The writer.
    pub(crate) writer: Arc<Writer>,
    /// Its number for the line.
    pub(crate) seq: u64,
}

/// What the handles and the receiver share: the waker and whether a wake-up is outstanding.
#[derive(Debug)]
struct Shared {
    waker: Arc<mio::Waker>,
    /// True from the first send after a drain until the next drain: the loop has been (or is
    /// being) woken and will look at the channel, so further sends need not wake it again.
    wake_pending: AtomicBool,
    /// The receiver was dropped: a source with nothing to send can stop too.
    closed: AtomicBool,
}

impl Shared {
    /// Wakes the loop unless a wake-up is already outstanding. Called after the change is in
    /// the channel.
    fn wake(&self) {
        // AcqRel pairs with the receiver's swap in `drain`: either the receiver's swap sees our
        // `true` (and then also sees the change we queued before it), or our swap sees its
        // `false` and we wake it.
        if self.wake_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        // Ignoring the error is safe enough to be the right call. mio's wakers retry by
        // themselves when their eventfd or pipe is full, so what remains is a write to a
        // descriptor that the `Arc` keeps open: it does not fail in practice. If it did, the
        // change is still queued, and clearing the flag makes the next send try again; the
        // loop also drains the feed whenever it wakes for any other reason. Returning the error
        // would only tell the source that a change it must not resend was not delivered.
        if self.waker.wake().is_err() {
            self.wake_pending.store(false, Ordering::Release);
        }
    }
}

/// The sending half of a feed, held by a lease source. Cheap to clone; each clone is `Send`.
///
/// The feed stays open while the [`FeedReceiver`] exists; the receiver sees the feed as
/// disconnected once every handle is dropped (at its next drain: dropping a handle does not
/// wake the loop).
#[derive(Debug, Clone)]
pub struct FeedHandle {
    tx: Sender<Fed>,
    shared: Arc<Shared>,
}

impl FeedHandle {
    /// Queues `change` for the loop, waiting while the channel is full, then wakes the loop.
    /// It returns when the change is queued, not journaled: see [`sync`](Self::sync).
    ///
    /// Blocking here is the back-pressure of a loop that is behind. Fails, giving the change
    /// back, only when the loop has dropped its receiver.
    #[expect(
        clippy::result_large_err,
        reason = "the change comes back by value, as with crossbeam; boxing would allocate on \
                  every refused send"
    )]
    pub fn send(&self, change: Change) -> Result<(), FeedClosed> {
        self.send_fed(Fed::Change(change, None))
            .map_err(|fed| FeedClosed(fed.into_change()))
    }

    /// Waits until the loop has applied every change queued on this feed before the call (by
    /// any handle) and appended its record to the journal: in the mapped file, which survives
    /// `kill -9` of lqd; whether it survives a power loss is the `journal_flush` policy's
    /// business. Costs one item in the channel and a wake-up of the loop.
    ///
    /// # Errors
    ///
    /// [`FeedStopped`] when the loop has dropped its receiver (before or while waiting).
    pub fn sync(&self) -> Result<(), FeedStopped> {
        let (done, wait) = crossbeam_channel::bounded(1);
        self.send_fed(Fed::Sync(done)).map_err(|_| FeedStopped)?;
        wait.recv().map_err(|_| FeedStopped)
    }

    /// Queues `fed`, waiting while the channel is full, then wakes the loop; gives it back when
    /// the loop has gone.
    #[expect(
        clippy::result_large_err,
        reason = "the item comes back by value so that a change can be handed back"
    )]
    pub(crate) fn send_fed(&self, fed: Fed) -> Result<(), Fed> {
        self.tx.send(fed).map_err(|e| e.into_inner())?;
        self.shared.wake();
        Ok(())
    }

    /// Queues `change` without waiting, then wakes the loop.
    ///
    /// A full channel gives the change back as [`TrySendError::Full`]: the loop is behind, and
    /// the source decides whether to retry later, coalesce, or block with [`send`](Self::send).
    #[expect(
        clippy::result_large_err,
        reason = "a full feed is a normal outcome for a non-blocking source that retries; \
                  boxing the change would allocate on every retry"
    )]
    pub fn try_send(&self, change: Change) -> Result<(), TrySendError> {
        self.tx
            .try_send(Fed::Change(change, None))
            .map_err(|e| match e {
                crossbeam_channel::TrySendError::Full(f) => TrySendError::Full(f.into_change()),
                crossbeam_channel::TrySendError::Disconnected(f) => {
                    TrySendError::Closed(f.into_change())
                }
            })?;
        self.shared.wake();
        Ok(())
    }

    /// How many changes wait in the channel now (a snapshot, for metrics).
    #[must_use]
    pub fn len(&self) -> usize {
        self.tx.len()
    }

    /// True when no change waits in the channel (a snapshot).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.tx.is_empty()
    }

    /// The most changes the channel holds before sends wait.
    #[must_use]
    pub fn capacity(&self) -> usize {
        // The channel is always bounded; the fallback is never taken.
        self.tx.capacity().unwrap_or(usize::MAX)
    }

    /// True once the loop has dropped its receiver: every send would fail. A source that
    /// polls (a followed file) checks it so that it ends without waiting for something to send.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }
}

/// The receiving half of a feed, owned by the event loop.
#[derive(Debug)]
pub struct FeedReceiver {
    rx: Receiver<Fed>,
    shared: Arc<Shared>,
}

/// What one [`FeedReceiver::drain`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Drained {
    /// Items taken: the changes handed to the callback, and the feed's own markers (a
    /// [`FeedHandle::sync`], a numbered line that was skipped).
    pub count: usize,
    /// The budget ran out while changes were still waiting: come back without waiting for a
    /// wake-up (coalesced wake-ups will not come for these).
    pub more: bool,
    /// Every [`FeedHandle`] is gone and the channel is empty: no change will ever come again.
    pub disconnected: bool,
}

impl FeedReceiver {
    /// Hands at most `budget` waiting changes to `f`, in the order they were sent, without
    /// blocking.
    ///
    /// Call it when the waker's token fires, and again while the result says
    /// [`more`](Drained::more). A budget of zero takes nothing and only reports whether
    /// changes wait. A [`FeedHandle::sync`] waiting on the feed returns once the changes sent
    /// before it were handed to `f`: a loop that journals them must use lqd's
    /// [`Server`](crate::server::Server), which answers it after journaling.
    pub fn drain(&mut self, budget: usize, mut f: impl FnMut(Change)) -> Drained {
        self.drain_fed(budget, |fed| match fed {
            Fed::Change(change, _) => f(change),
            Fed::Rejected(_) | Fed::Reconcile { .. } | Fed::Clock(_) | Fed::Snapshot { .. } => {}
            Fed::Sync(done) => {
                let _ = done.try_send(());
            }
        })
    }

    /// [`drain`](Self::drain), handing over every item as it was sent.
    pub(crate) fn drain_fed(&mut self, budget: usize, mut f: impl FnMut(Fed)) -> Drained {
        // Clear the flag before looking at the channel, so a change sent from now on either is
        // seen below or wakes the loop again. See `Shared::wake` for the pairing.
        self.shared.wake_pending.swap(false, Ordering::AcqRel);
        let mut drained = Drained::default();
        while drained.count < budget {
            match self.rx.try_recv() {
                Ok(fed) => {
                    f(fed);
                    drained.count = drained.count.saturating_add(1);
                }
                Err(crossbeam_channel::TryRecvError::Empty) => return drained,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    drained.disconnected = true;
                    return drained;
                }
            }
        }
        drained.more = !self.rx.is_empty();
        drained
    }

    /// How many changes wait in the channel now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// True when no change waits in the channel.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

impl Drop for FeedReceiver {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
    }
}

/// [`FeedHandle::send`] failed: the loop dropped its receiver. The change is given back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedClosed(pub Change);

impl fmt::Display for FeedClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the lease feed is closed: lqd's event loop has stopped")
    }
}

impl std::error::Error for FeedClosed {}

/// [`FeedHandle::sync`] failed: the loop dropped its receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedStopped;

impl fmt::Display for FeedStopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the lease feed is closed: lqd's event loop has stopped")
    }
}

impl std::error::Error for FeedStopped {}

/// [`FeedHandle::try_send`] failed; the change is given back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrySendError {
    /// The channel is full: the loop is behind. Retry later, or block with `send`.
    Full(Change),
    /// The loop dropped its receiver: no change will be taken any more.
    Closed(Change),
}

impl TrySendError {
    /// The change that was not sent.
    #[must_use]
    pub fn into_change(self) -> Change {
        match self {
            Self::Full(c) | Self::Closed(c) => c,
        }
    }

    /// True for [`TrySendError::Full`].
    #[must_use]
    pub const fn is_full(&self) -> bool {
        matches!(self, Self::Full(_))
    }
}

impl fmt::Display for TrySendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str("the lease feed is full: lqd's event loop is behind"),
            Self::Closed(_) => {
                f.write_str("the lease feed is closed: lqd's event loop has stopped")
            }
        }
    }
}

impl std::error::Error for TrySendError {}

#[cfg(test)]
mod tests;
