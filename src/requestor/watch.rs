//! A replica kept exact and current: the initial sync, the Active streams, DataMissing
//! recovery and the state file, driven by one blocking call ([`Watch::next_event`]).
//!
//! - Scope: what the replica covers is a list of *streams*, one filtered ACTIVELEASEQUERY
//!   each: one per link (QUERY_BY_LINK_ADDRESS), relay agent (QUERY_BY_RELAY_ID) and
//!   Remote-ID (QUERY_BY_REMOTE_ID), in that order; or the one `filter`; or, with neither, one
//!   unfiltered stream of every change. Each filtered stream has a Bulk query that lists
//!   everything it covers (its *sync query*, the same OPTION_LQ_QUERY). The server reports
//!   only changes to bindings matching a stream's query, so nothing outside the scope ever
//!   enters the replica, and a binding that ends in it is reported (lifetime 0) and leaves.
//!   The one way out of a scope a filtered stream cannot report: a binding whose relay-id or
//!   Remote-ID changes while it stays alive (its client moved behind another relay) no longer
//!   matches, and the server says nothing about it; it stays until a resync.
//! - Connections: the streams share connections, `queries_per_connection` to each (a server
//!   leaves the queries beyond its per-connection limit unread: lqd's
//!   `max_concurrent_queries` is 4 by default), so 10 links take 3 connections, plus one for
//!   a Bulk sync while it runs. A server also limits the connections of one requestor
//!   (BULK_LQ_MAX_CONNS, 10 in lqd). Each connection is followed on a thread of its own (see
//!   `follow.rs`), and reconnects by itself.
//! - Start: the state file's replica resumes each stream from its own saved base-time. An
//!   empty one is first filled by the sync queries, then each stream subscribes from the first
//!   base-time of its own Bulk answer; without sync queries the one stream subscribes with
//!   START_TIME = 1, whose catch-up is everything the server remembers. A state file written
//!   before streams were kept (one base-time for everything) is resynced by Bulk first when
//!   it covers links: that `lq` followed every change, not only the links'.
//! - DataMissing on a stream: recovered by [`Recovery`] for that stream's sync query alone, on
//!   a connection of its own; while it is pending, that stream's saved base-time stays at the
//!   start of the gap, so a crash before it completes recovers the same gap again. The other
//!   streams go on.
//! - Saving: at most every `save_interval` while changes come, at once after a catch-up, a
//!   sync or a recovery, and when stopped. A saved state is always consistent: no stream's
//!   base-time runs ahead of the bindings saved with it.

use std::collections::VecDeque;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::active::{ActiveSettings, Event};
use super::binding::ClientData;
use super::conn::Connection;
use super::error::{Error, Result};
use super::follow::{Followers, Report};
use super::query::{Query, TimeWindow, hex};
use super::replica::{Change, Replica};
use super::time::TimeBase;
use crate::codec::{ServerTime, Xid};

/// How often a waiting watch looks at the stop flag.
const TICK: Duration = Duration::from_millis(100);

/// The most reports handled at once before a recovery starts.
const FOLLOW_BATCH: usize = 4096;

/// How a DataMissing gap is filled (see the [module docs](super)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Recovery {
    /// Repeat the stream's sync query and replace what the stream reported with its answer:
    /// exact.
    #[default]
    Resync,
    /// The stream's sync query with START = the gap's start and END = its end, applied as
    /// updates (RFC 7653): bindings that ended inside the gap are not seen.
    Window,
}

/// What a [`Watch`] does.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// The server's leasequery TCP address; others that follow the same lease store are in
    /// `active.failover` (D33): streams and syncs move to the next when one fails.
    pub server: SocketAddr,
    /// The Active streams' settings (DUID, filter, receive timeout, stop flag). With a
    /// `filter`, it is the one stream, and the links, relay-ids and remote-ids are not used.
    pub active: ActiveSettings,
    /// Links to follow, one stream each (QUERY_BY_LINK_ADDRESS).
    pub links: Vec<Ipv6Addr>,
    /// Relay agents to follow, by their DUID (OPTION_RELAY_ID), one stream each
    /// (QUERY_BY_RELAY_ID, link-address `::`).
    pub relay_ids: Vec<Vec<u8>>,
    /// Remote-IDs to follow (OPTION_REMOTE_ID: enterprise-number and remote-id), one stream
    /// each (QUERY_BY_REMOTE_ID, link-address `::`).
    pub remote_ids: Vec<(u32, Vec<u8>)>,
    /// How DataMissing is recovered.
    pub recovery: Recovery,
    /// Where the replica is kept between runs.
    pub state_file: Option<PathBuf>,
    /// The longest a change stays unsaved while more keep coming (default 2 s).
    pub save_interval: Duration,
    /// The most Active queries on one connection (default 4, lqd's default limit).
    pub queries_per_connection: usize,
}

impl WatchSettings {
    /// The defaults: no scope (every change), resync, no state file.
    #[must_use]
    pub fn new(server: SocketAddr, active: ActiveSettings) -> Self {
        Self {
            server,
            active,
            links: Vec::new(),
            relay_ids: Vec::new(),
            remote_ids: Vec::new(),
            recovery: Recovery::Resync,
            state_file: None,
            save_interval: Duration::from_secs(2),
            queries_per_connection: 4,
        }
    }

    /// The streams: each one's OPTION_LQ_QUERY, `None` for the one unfiltered stream of a
    /// watch without scope.
    #[must_use]
    pub fn streams(&self) -> Vec<Option<Query>> {
        if let Some(f) = &self.active.filter {
            return vec![Some(f.clone())];
        }
        let any = Ipv6Addr::UNSPECIFIED;
        let queries: Vec<Option<Query>> = self
            .links
            .iter()
            .map(|l| Query::LinkAddress(*l))
            .chain(self.relay_ids.iter().map(|d| Query::RelayId {
                duid: d.clone(),
                link: any,
            }))
            .chain(self.remote_ids.iter().map(|(e, r)| Query::RemoteId {
                enterprise_number: *e,
                remote_id: r.clone(),
                link: any,
            }))
            .map(Some)
            .collect();
        if queries.is_empty() {
            vec![None]
        } else {
            queries
        }
    }

    /// The Bulk queries that list everything the replica covers, one per stream. Empty for
    /// the unfiltered stream of a watch without scope.
    #[must_use]
    pub fn sync_queries(&self) -> Vec<Query> {
        self.streams().into_iter().flatten().collect()
    }

    /// What the replica covers, as kept in the state file: `filter KIND=VALUE`, or the
    /// streams as `link A`, `relay-id HEX`, `remote-id ENT:HEX`, joined by `, `; empty for
    /// everything.
    #[must_use]
    pub fn scope(&self) -> String {
        if let Some(f) = &self.active.filter {
            return format!("filter {f}");
        }
        self.links
            .iter()
            .map(|l| format!("link {l}"))
            .chain(
                self.relay_ids
                    .iter()
                    .map(|d| format!("relay-id {}", hex(d))),
            )
            .chain(
                self.remote_ids
                    .iter()
                    .map(|(e, r)| format!("remote-id {e}:{}", hex(r))),
            )
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What a [`Watch`] reports.
#[derive(Debug)]
pub enum WatchEvent {
    /// The replica was read from the state file.
    Loaded {
        /// Clients in it.
        clients: usize,
        /// The earliest base-time its streams resume from.
        base_time: Option<ServerTime>,
    },
    /// A change to the replica.
    Change {
        /// What changed.
        change: Change,
        /// The time context of the message that said so.
        time: TimeBase,
    },
    /// A sync by Bulk finished: the initial one, or a DataMissing recovery.
    Synced {
        /// Why: false for the initial sync, true for a recovery.
        recovery: bool,
        /// The streams synced, by their query.
        scopes: Vec<Query>,
        /// Bulk queries asked.
        queries: usize,
        /// Bindings received.
        bindings: usize,
        /// Clients in the replica afterwards.
        clients: usize,
    },
    /// Connected; a stream's ACTIVELEASEQUERY is sent.
    Connected {
        /// The server.
        server: SocketAddr,
        /// Its xid.
        xid: Xid,
        /// OPTION_LQ_START_TIME sent, if any.
        start_time: Option<ServerTime>,
        /// The stream's query (`None`: every change).
        scope: Option<Query>,
    },
    /// A stream's catch-up is complete: what it covers is current.
    CatchUpComplete {
        /// The time context of the message that said so.
        time: TimeBase,
        /// The stream's query (`None`: every change).
        scope: Option<Query>,
    },
    /// The server's history did not cover `[start, end]` for a stream.
    DataMissing {
        /// The gap's start (server time).
        start: Option<ServerTime>,
        /// The gap's end (server time).
        end: Option<ServerTime>,
        /// How it will be recovered; `None` when no Bulk query can cover it (the unfiltered
        /// stream of a watch without scope): the replica may hold stale bindings until they
        /// change again.
        recovery: Option<Recovery>,
        /// The time context of the message that said so.
        time: TimeBase,
        /// The stream's query (`None`: every change).
        scope: Option<Query>,
    },
    /// The server said a stream is alive (a keepalive).
    Keepalive(TimeBase),
    /// A connection (Active, or a sync's) was lost or could not be made; retried after
    /// `retry_in`.
    Disconnected {
        /// Why, in one line.
        reason: String,
        /// The wait before the next attempt.
        retry_in: Duration,
    },
}

/// A stream's Bulk answer, and the answer's first base-time.
type Answer = (usize, Vec<ClientData>, Option<ServerTime>);

/// A sync by Bulk still to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sync {
    /// Every stream, replacing the whole content; the streams then start from the answers.
    Initial,
    /// One stream's sync query, replacing what that stream reported.
    Resync(usize),
    /// One stream's sync query over `[start, end]`, applied as updates.
    Window(usize, Option<ServerTime>, Option<ServerTime>),
}

/// A replica kept in sync with one server.
#[derive(Debug)]
pub struct Watch {
    settings: WatchSettings,
    streams: Vec<Option<Query>>,
    replica: Replica,
    /// Each stream's resume point, as its connection last reported it.
    resume: Vec<Option<ServerTime>>,
    /// Streams with a recovery pending: their saved base-time stays at the gap's start.
    held: Vec<bool>,
    pending: VecDeque<Sync>,
    followers: Option<Followers>,
    queue: VecDeque<WatchEvent>,
    dirty: bool,
    last_save: Instant,
    sync_failures: u32,
    sync_retry_at: Option<Instant>,
    /// Which of the servers (the server, then `active.failover`) the next sync asks.
    sync_server: usize,
}

impl Watch {
    /// Reads the state file (if any) and prepares; nothing is sent before the first
    /// [`next_event`](Self::next_event).
    pub fn open(settings: WatchSettings) -> Result<Self> {
        let streams = settings.streams();
        let n = streams.len();
        let syncable = streams.iter().all(Option::is_some);
        let loaded = match &settings.state_file {
            Some(path) => Replica::load(path, &settings.server.to_string(), &settings.scope())?,
            None => None,
        };
        let mut queue = VecDeque::new();
        let mut pending = VecDeque::new();
        let mut resume = vec![None; n];
        let replica = match loaded {
            Some(r) if r.base_time().is_some() => {
                queue.push_back(WatchEvent::Loaded {
                    clients: r.len(),
                    base_time: r.base_time(),
                });
                // An lq that kept no streams followed every change, whatever its links.
                let everything = r.unstreamed() && settings.active.filter.is_none();
                if syncable && (r.streams() != n || everything) {
                    pending.push_back(Sync::Initial);
                } else {
                    for (s, t) in resume.iter_mut().enumerate() {
                        *t = r.stream_base_time(s).or(r.base_time());
                    }
                }
                r
            }
            _ if syncable => {
                pending.push_back(Sync::Initial);
                Replica::new()
            }
            _ => {
                resume = vec![Some(ServerTime(1)); n];
                Replica::new()
            }
        };
        Ok(Self {
            settings,
            held: vec![false; n],
            streams,
            replica,
            resume,
            pending,
            followers: None,
            queue,
            dirty: false,
            last_save: Instant::now(),
            sync_failures: 0,
            sync_retry_at: None,
            sync_server: 0,
        })
    }

    /// The replica.
    #[must_use]
    pub const fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The streams, by their query (`None`: every change), in the order of the scope.
    #[must_use]
    pub fn streams(&self) -> &[Option<Query>] {
        &self.streams
    }

    /// Writes the state file now (when there is one).
    pub fn save(&mut self) -> Result<()> {
        if let Some(path) = &self.settings.state_file {
            self.replica.save(
                path,
                &self.settings.server.to_string(),
                &self.settings.scope(),
            )?;
        }
        self.dirty = false;
        self.last_save = Instant::now();
        Ok(())
    }

    /// The next event, blocking until there is one; `Ok(None)` once the stop flag is set
    /// (the state is saved first). Errors: [`Error::Refused`] when the server refuses an
    /// Active or a Bulk query, a TLS error ([`Error::is_tls`]: STARTTLS refused, a
    /// certificate not accepted) on any of its connections (the state is saved first; calling
    /// again retries),
    /// [`Error::State`] when the state file cannot be written.
    pub fn next_event(&mut self) -> Result<Option<WatchEvent>> {
        match self.advance() {
            Err(e) if matches!(e, Error::Refused { .. }) || e.is_tls() => {
                self.save()?;
                Err(e)
            }
            other => other,
        }
    }

    fn advance(&mut self) -> Result<Option<WatchEvent>> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Ok(Some(e));
            }
            if self.settings.active.stopped() {
                // Stop reading before saving: the streams' threads and connections end here.
                self.followers = None;
                self.save()?;
                return Ok(None);
            }
            if let Some(&sync) = self.pending.front() {
                self.sync(sync)?;
                continue;
            }
            let Some(followers) = &self.followers else {
                self.followers = Some(self.follow());
                continue;
            };
            let now = Instant::now();
            let deadline = self
                .dirty
                .then(|| self.last_save + self.settings.save_interval);
            let wait = deadline.map_or(now + TICK, |d| d.min(now + TICK));
            match followers.recv_until(wait) {
                Ok(Some(Report::Event {
                    stream,
                    event,
                    resume,
                })) => self.take(stream, event, resume)?,
                Ok(Some(Report::Ended(e))) => {
                    // Every stream starts again from its resume point if called again.
                    self.followers = None;
                    return Err(e);
                }
                Ok(None) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        self.save()?;
                    }
                }
                Err(()) => self.followers = None,
            }
        }
    }

    /// Starts following every stream from its resume point.
    fn follow(&self) -> Followers {
        let streams: Vec<(usize, Option<Query>, Option<ServerTime>)> = self
            .streams
            .iter()
            .enumerate()
            .map(|(s, q)| (s, q.clone(), self.resume.get(s).copied().flatten()))
            .collect();
        Followers::start(
            self.settings.server,
            &self.settings.active,
            &streams,
            self.settings.queries_per_connection,
        )
    }

    fn scope_of(&self, stream: Option<usize>) -> Option<Query> {
        stream.and_then(|s| self.streams.get(s)).cloned().flatten()
    }

    /// Handles one event of stream `stream` (`None`: of a connection), after which that
    /// stream resumes from `resume`.
    fn take(&mut self, stream: Option<usize>, e: Event, resume: Option<ServerTime>) -> Result<()> {
        let scope = self.scope_of(stream);
        let s = stream.unwrap_or(0);
        match e {
            Event::Binding(data) => {
                if let Some(change) = self.replica.apply_from(s, &data) {
                    self.dirty = true;
                    self.queue.push_back(WatchEvent::Change {
                        change,
                        time: data.time,
                    });
                }
            }
            Event::Connected {
                server,
                xid,
                start_time,
            } => self.queue.push_back(WatchEvent::Connected {
                server,
                xid,
                start_time,
                scope,
            }),
            Event::CatchUpComplete(time) => {
                self.queue
                    .push_back(WatchEvent::CatchUpComplete { time, scope });
                self.moved(stream, resume);
                return self.save();
            }
            Event::DataMissing { start, end, time } => {
                let recovery = scope.is_some().then_some(self.settings.recovery);
                if let Some(r) = recovery {
                    self.recover(s, r, start, end);
                }
                self.queue.push_back(WatchEvent::DataMissing {
                    start,
                    end,
                    recovery,
                    time,
                    scope,
                });
            }
            Event::Keepalive(time) => self.queue.push_back(WatchEvent::Keepalive(time)),
            Event::Disconnected { reason, retry_in } => {
                self.queue.push_back(WatchEvent::Disconnected {
                    reason: reason.to_string(),
                    retry_in,
                });
            }
        }
        self.moved(stream, resume);
        if self.dirty && self.last_save.elapsed() >= self.settings.save_interval {
            self.save()?;
        }
        Ok(())
    }

    /// Queues the recovery of stream `s`'s gap `[start, end]` and holds its base-time there.
    fn recover(
        &mut self,
        s: usize,
        recovery: Recovery,
        start: Option<ServerTime>,
        end: Option<ServerTime>,
    ) {
        if let Some(h) = self.held.get_mut(s) {
            *h = true;
        }
        match recovery {
            Recovery::Resync => {
                if !self.pending.contains(&Sync::Resync(s)) {
                    self.pending.push_back(Sync::Resync(s));
                }
            }
            Recovery::Window => {
                // A second gap before the first is filled widens it.
                for p in &mut self.pending {
                    if let Sync::Window(w, a, b) = p {
                        if *w == s {
                            *a = (*a).min(start);
                            *b = (*b).max(end);
                            return;
                        }
                    }
                }
                self.pending.push_back(Sync::Window(s, start, end));
            }
        }
    }

    /// Stream `stream` now resumes from `resume`; its saved base-time follows, unless a
    /// recovery is pending for it (the gap's start stays the point to come back to).
    fn moved(&mut self, stream: Option<usize>, resume: Option<ServerTime>) {
        let Some(s) = stream else {
            return;
        };
        if let Some(r) = self.resume.get_mut(s) {
            *r = resume;
        }
        self.follow_resume_point(s);
    }

    fn follow_resume_point(&mut self, s: usize) {
        if self.held.get(s).copied().unwrap_or(false) {
            return;
        }
        let resume = self.resume.get(s).copied().flatten();
        if resume.is_some() && resume != self.replica.stream_base_time(s) {
            self.replica.set_stream_base_time(s, resume);
            self.dirty = true;
        }
    }

    /// Runs the pending sync `sync` (with the other pending syncs of its kind) on a
    /// connection of its own; a connection failure is reported and retried after a backoff,
    /// a refusal is returned.
    fn sync(&mut self, sync: Sync) -> Result<()> {
        if let Some(at) = self.sync_retry_at {
            let left = at.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                std::thread::sleep(left.min(TICK));
                return Ok(());
            }
        }
        if sync != Sync::Initial {
            // Streams' DataMissings come together (a journal overrun, an outage): take those
            // already here, and recover them on one connection.
            self.take_ready()?;
        }
        let batch: Vec<Sync> = match sync {
            Sync::Initial => vec![Sync::Initial],
            Sync::Resync(_) => self
                .pending
                .iter()
                .filter(|p| matches!(p, Sync::Resync(_)))
                .copied()
                .collect(),
            Sync::Window(..) => vec![sync],
        };
        let jobs: Vec<(usize, Query, TimeWindow)> = match sync {
            Sync::Initial => self
                .streams
                .iter()
                .enumerate()
                .filter_map(|(s, q)| Some((s, q.clone()?, TimeWindow::ALL)))
                .collect(),
            _ => batch
                .iter()
                .filter_map(|p| match *p {
                    Sync::Resync(s) => Some((s, self.streams.get(s)?.clone()?, TimeWindow::ALL)),
                    Sync::Window(s, start, end) => {
                        Some((s, self.streams.get(s)?.clone()?, TimeWindow { start, end }))
                    }
                    Sync::Initial => None,
                })
                .collect(),
        };
        let asked_at = TimeBase::now(None);
        let answers = match self.bulk_each(&jobs) {
            Ok(a) => a,
            Err(e @ (Error::Refused { .. } | Error::Invalid(_))) => return Err(e),
            Err(e) if e.is_tls() => return Err(e),
            // Stopped half-way: nothing applied; the caller sees the flag next.
            Err(Error::Stopped) => return Ok(()),
            Err(e) => {
                self.sync_failures = self.sync_failures.saturating_add(1);
                // The next server in turn (D33).
                self.sync_server = self.sync_server.wrapping_add(1);
                let exp = self.sync_failures.saturating_sub(1).min(20);
                let retry_in = self
                    .settings
                    .active
                    .reconnect_min
                    .saturating_mul(1u32 << exp)
                    .min(self.settings.active.reconnect_max);
                self.sync_retry_at = Some(Instant::now() + retry_in);
                self.queue.push_back(WatchEvent::Disconnected {
                    reason: format!("sync: {e}"),
                    retry_in,
                });
                return Ok(());
            }
        };
        self.sync_failures = 0;
        self.sync_retry_at = None;
        self.pending.retain(|p| !batch.contains(p));
        let bindings: usize = answers.iter().map(|(_, a, _)| a.len()).sum();
        let changes: Vec<(Change, TimeBase)> = if let Sync::Window(..) = sync {
            answers
                .iter()
                .flat_map(|(s, a, _)| a.iter().map(move |d| (*s, d)))
                .filter_map(|(s, d)| self.replica.apply_from(s, d).map(|c| (c, d.time)))
                .collect()
        } else {
            let time = answers
                .iter()
                .find_map(|(_, a, _)| a.first())
                .map_or(asked_at, |d| d.time);
            let slices: Vec<(usize, &[ClientData])> =
                answers.iter().map(|(s, a, _)| (*s, a.as_slice())).collect();
            self.replica
                .replace_streams(&slices)
                .into_iter()
                .map(|c| (c, time))
                .collect()
        };
        self.dirty |= !changes.is_empty();
        for (change, time) in changes {
            self.queue.push_back(WatchEvent::Change { change, time });
        }
        for (s, _, first_base) in &answers {
            if sync == Sync::Initial {
                // Subscribe from the answer's first base-time (or, without one, from when the
                // sync was asked, on the assumption that the clocks agree: digest §11.2).
                let start = first_base.unwrap_or_else(|| asked_at.to_server(asked_at.received));
                self.replica.set_stream_base_time(*s, Some(start));
                if let Some(r) = self.resume.get_mut(*s) {
                    *r = Some(start);
                }
            }
            let still = self.pending.iter().any(|p| match p {
                Sync::Resync(w) | Sync::Window(w, ..) => w == s,
                Sync::Initial => true,
            });
            if let Some(h) = self.held.get_mut(*s) {
                *h = still;
            }
            self.follow_resume_point(*s);
        }
        self.queue.push_back(WatchEvent::Synced {
            recovery: sync != Sync::Initial,
            scopes: jobs.iter().map(|(_, q, _)| q.clone()).collect(),
            queries: jobs.len(),
            bindings,
            clients: self.replica.len(),
        });
        self.save()
    }

    /// Handles the reports the streams' threads have already sent, without waiting.
    fn take_ready(&mut self) -> Result<()> {
        for _ in 0..FOLLOW_BATCH {
            let Some(followers) = &self.followers else {
                return Ok(());
            };
            match followers.recv_until(Instant::now()) {
                Ok(Some(Report::Event {
                    stream,
                    event,
                    resume,
                })) => self.take(stream, event, resume)?,
                Ok(Some(Report::Ended(e))) => {
                    self.followers = None;
                    return Err(e);
                }
                Ok(None) => return Ok(()),
                Err(()) => self.followers = None,
            }
        }
        Ok(())
    }

    /// The server the next sync asks: the watch's server, then each of `active.failover` in
    /// turn after a failure.
    fn sync_target(&self) -> SocketAddr {
        let servers: Vec<SocketAddr> = std::iter::once(self.settings.server)
            .chain(
                self.settings
                    .active
                    .failover
                    .iter()
                    .copied()
                    .filter(|s| *s != self.settings.server),
            )
            .collect();
        servers
            .get(self.sync_server % servers.len().max(1))
            .copied()
            .unwrap_or(self.settings.server)
    }

    /// Every job's answer on one connection, with the first base-time of each. A refusal
    /// names the query. [`Error::Stopped`] when stopped half-way.
    fn bulk_each(&self, jobs: &[(usize, Query, TimeWindow)]) -> Result<Vec<Answer>> {
        let mut conn = Connection::open(
            self.sync_target(),
            &self.settings.active.requestor,
            self.settings.active.tls.as_ref(),
        )?;
        conn.set_stop(self.settings.active.stop.clone());
        let mut all = Vec::with_capacity(jobs.len());
        for (s, q, window) in jobs {
            let named = |e: Error| match e {
                Error::Refused { status, message } if message.is_empty() => Error::Refused {
                    status,
                    message: q.to_string(),
                },
                Error::Refused { status, message } => Error::Refused {
                    status,
                    message: format!("{q}: {message}"),
                },
                other => other,
            };
            let mut bulk = conn.bulk(q, *window).map_err(named)?;
            let mut answer = Vec::new();
            for item in &mut bulk {
                answer.push(item.map_err(named)?);
            }
            all.push((*s, answer, bulk.first_base_time()));
        }
        Ok(all)
    }
}
