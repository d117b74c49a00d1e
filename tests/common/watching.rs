//! An Active subscription read on a thread of its own, and Bulk answers, reduced to what two
//! lqd instances following one lease database must agree on (issue 18, decision D33).
//! Needs `tests/common/lqd.rs` as the crate's `common` module.
#![allow(dead_code)]

use std::net::Ipv6Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lqd::codec::ServerTime;
use lqd::requestor::{ActiveSettings, Connection, Event, Query, Subscription, TimeWindow};

use crate::common::{Lqd, REQUESTOR};

/// A lease as a report gives it: address or prefix, prefix length, and its (preferred, valid)
/// end in server time.
pub(crate) type Held = (Ipv6Addr, u8, Option<(ServerTime, ServerTime)>);

/// What an Active subscription reported, reduced to what two lqd instances must agree on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seen {
    /// A client's data: its DUID (hex), its live leases with their end in server time, the
    /// ended ones, and the message's base-time.
    Binding {
        client: String,
        leases: Vec<Held>,
        ended: Vec<(Ipv6Addr, u8)>,
        base: Option<ServerTime>,
    },
    CatchUpComplete(Option<ServerTime>),
    DataMissing,
    Other(String),
}

/// An unfiltered Active subscription to one lqd from `start`, read on a thread of its own.
pub(crate) struct Watching {
    seen: mpsc::Receiver<Seen>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watching {
    pub(crate) fn start(lqd: &Lqd, start: Option<ServerTime>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut settings = ActiveSettings::new(&REQUESTOR);
        settings.stop = Some(Arc::clone(&stop));
        let mut sub = Subscription::new(lqd.addr, settings, start);
        let (tx, seen) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            while let Ok(Some(e)) = sub.next_event() {
                let s = match e {
                    Event::Binding(d) => Seen::Binding {
                        client: hex::encode(&d.client_id),
                        leases: d
                            .leases
                            .iter()
                            .map(|l| (l.address, l.prefix_len, l.server_ends))
                            .collect(),
                        ended: d.ended.iter().map(|l| (l.address, l.prefix_len)).collect(),
                        base: d.time.base_time,
                    },
                    Event::CatchUpComplete(t) => Seen::CatchUpComplete(t.base_time),
                    Event::DataMissing { .. } => Seen::DataMissing,
                    Event::Connected { .. } => continue,
                    other => Seen::Other(format!("{other:?}")),
                };
                if tx.send(s).is_err() {
                    return;
                }
            }
        });
        Self {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// What it reported until `done` says so, or `secs` pass (then it fails, with `what`).
    pub(crate) fn until(&self, what: &str, secs: u64, done: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut all = Vec::new();
        while !done(&all) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.seen.recv_timeout(left) {
                Ok(s) => all.push(s),
                Err(_) => panic!("{what}: not done in {secs}s; saw {all:#?}"),
            }
        }
        all
    }

    /// What it reports until it has been quiet for `quiet`.
    pub(crate) fn drain(&self, quiet: Duration) -> Vec<Seen> {
        let mut all = Vec::new();
        while let Ok(s) = self.seen.recv_timeout(quiet) {
            all.push(s);
        }
        all
    }

    /// The next `n` bindings it reports.
    pub(crate) fn bindings(&self, what: &str, n: usize) -> Vec<Seen> {
        self.until(what, 20, |s| {
            s.iter()
                .filter(|x| matches!(x, Seen::Binding { .. }))
                .count()
                >= n
        })
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The base-time of a reported binding.
pub(crate) fn base(s: &Seen) -> Option<ServerTime> {
    match s {
        Seen::Binding { base, .. } => *base,
        _ => None,
    }
}

/// One Bulk answer, as two instances must agree on it: each client's DUID, leases (with
/// their end in server time), ended leases and relay data, in order; and the base-time.
pub(crate) type Answer = (Vec<String>, Option<ServerTime>);

/// Each query's Bulk answer from `lqd`, named by the query.
pub(crate) fn bulk_answers(lqd: &Lqd, queries: &[Query]) -> Vec<(String, Answer)> {
    let mut conn = Connection::open(lqd.addr, &REQUESTOR, None).unwrap();
    queries
        .iter()
        .map(|q| {
            let mut bulk = conn.bulk(q, TimeWindow::ALL).unwrap();
            let mut clients = Vec::new();
            for d in &mut bulk {
                let d = d.unwrap();
                clients.push(format!(
                    "{} {:?} {:?} {:?}",
                    hex::encode(&d.client_id),
                    d.leases
                        .iter()
                        .map(|l| (l.address, l.prefix_len, l.server_ends))
                        .collect::<Vec<_>>(),
                    d.ended.iter().map(|l| l.address).collect::<Vec<_>>(),
                    d.relay_data
                ));
            }
            let base = bulk.first_base_time();
            (q.to_string(), (clients, base))
        })
        .collect()
}
