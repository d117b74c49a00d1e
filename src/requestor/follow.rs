//! The Active streams of a [`Watch`](super::Watch), followed on threads of their own: one per
//! connection, each running a [`Subscription`] of at most `per_connection` streams, their
//! events merged into one bounded channel in the order each connection delivered them.
//!
//! A thread blocked on a full channel stops reading its connection, so a watch busy with a
//! Bulk sync holds the server back through TCP (which then sends each changed binding once,
//! in its current state) instead of queueing without bound.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::Instant;

use super::active::{ActiveSettings, Event, Subscription};
use super::error::Error;
use super::query::Query;
use crate::codec::ServerTime;

/// Reports the channel holds before a connection's thread waits.
const CHANNEL: usize = 4096;

/// What a connection's thread reports.
#[derive(Debug)]
pub(crate) enum Report {
    /// An event of stream `stream` (`None`: of the connection), and that stream's resume
    /// point once the event is applied.
    Event {
        stream: Option<usize>,
        event: Event,
        resume: Option<ServerTime>,
    },
    /// The thread has ended: the server refused a query ([`Error::Refused`]), or the thread
    /// could not be started.
    Ended(Error),
}

/// The threads following a watch's streams.
#[derive(Debug)]
pub(crate) struct Followers {
    rx: Option<Receiver<Report>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Followers {
    /// Starts one thread per `per_connection` streams, in order. Each stream is its index in
    /// the watch, its filter and the START_TIME it resumes from.
    pub(crate) fn start(
        server: SocketAddr,
        settings: &ActiveSettings,
        streams: &[(usize, Option<Query>, Option<ServerTime>)],
        per_connection: usize,
    ) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(CHANNEL);
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for group in streams.chunks(per_connection.max(1)) {
            let mut settings = settings.clone();
            settings.stop = Some(Arc::clone(&stop));
            let group = group.to_vec();
            let thread_tx = tx.clone();
            let spawned = std::thread::Builder::new()
                .name("lq-follow".into())
                .spawn(move || follow(server, settings, &group, &thread_tx));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    let _ = tx.send(Report::Ended(Error::Io {
                        what: "start a thread",
                        source: e,
                    }));
                }
            }
        }
        Self {
            rx: Some(rx),
            stop,
            threads,
        }
    }

    /// The next report, or `Ok(None)` once `deadline` passes without one; `Err(())` when
    /// every thread has ended.
    pub(crate) fn recv_until(&self, deadline: Instant) -> Result<Option<Report>, ()> {
        let Some(rx) = &self.rx else {
            return Err(());
        };
        let wait = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(r) => Ok(Some(r)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(()),
        }
    }
}

impl Drop for Followers {
    /// Stops the threads (each within a tenth of a second) and waits for them: their
    /// connections are closed when this returns.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.rx.take());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One connection's thread: its subscription's events, until stopped or refused.
fn follow(
    server: SocketAddr,
    settings: ActiveSettings,
    group: &[(usize, Option<Query>, Option<ServerTime>)],
    tx: &SyncSender<Report>,
) {
    let mut sub = Subscription::with_streams(
        server,
        settings,
        group
            .iter()
            .map(|(_, filter, start)| (filter.clone(), *start)),
    );
    loop {
        let report = match sub.next_stream_event() {
            Ok(Some((i, event))) => Report::Event {
                stream: i.and_then(|i| group.get(i)).map(|(s, ..)| *s),
                resume: i.and_then(|i| sub.stream_resume_point(i)),
                event,
            },
            Ok(None) => return,
            Err(e) => {
                let _ = tx.send(Report::Ended(e));
                return;
            }
        };
        // Fails once the watch stopped following (it drops the receiver).
        if tx.send(report).is_err() {
            return;
        }
    }
}
