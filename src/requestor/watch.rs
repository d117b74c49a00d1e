//! A replica kept exact and current: the initial sync, the Active subscription, DataMissing
//! recovery and the state file, driven by one blocking call ([`Watch::next_event`]).
//!
//! - Start: the state file's replica resumes from its saved base-time. An empty one is first
//!   filled by the sync queries (one Bulk QUERY_BY_LINK_ADDRESS per link, or the filter's own
//!   query), then subscribed from the Bulk answer's first base-time; without sync queries it
//!   is subscribed with START_TIME = 1, whose catch-up is everything the server remembers.
//! - DataMissing: recovered on a second connection by [`Recovery`]; while a recovery is
//!   pending the saved base-time stays at the start of the gap, so a crash before it
//!   completes recovers the same gap again.
//! - Saving: at most every `save_interval` while changes come, at once after a catch-up, a
//!   sync or a recovery, and when stopped. A saved state is always consistent: its base-time
//!   never runs ahead of the bindings saved with it.

use std::collections::VecDeque;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::active::{ActiveSettings, Event, Next, Subscription};
use super::binding::ClientData;
use super::conn::Connection;
use super::error::{Error, Result};
use super::query::{Query, TimeWindow};
use super::replica::{Change, Replica};
use super::time::TimeBase;
use crate::codec::{ServerTime, Xid};

/// How a DataMissing gap is filled (see the [module docs](super)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Recovery {
    /// Repeat the sync queries and replace the replica's content with their answers: exact.
    #[default]
    Resync,
    /// Bulk queries with START = the gap's start and END = its end, applied as updates
    /// (RFC 7653): bindings that ended inside the gap are not seen.
    Window,
}

/// What a [`Watch`] does.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// The server's leasequery TCP address.
    pub server: SocketAddr,
    /// The Active subscription's settings (DUID, filter, receive timeout, stop flag).
    pub active: ActiveSettings,
    /// Links to sync by QUERY_BY_LINK_ADDRESS (ignored when the subscription has a filter).
    pub links: Vec<Ipv6Addr>,
    /// How DataMissing is recovered.
    pub recovery: Recovery,
    /// Where the replica is kept between runs.
    pub state_file: Option<PathBuf>,
    /// The longest a change stays unsaved while more keep coming (default 2 s).
    pub save_interval: Duration,
}

impl WatchSettings {
    /// The defaults: no links, resync, no state file.
    #[must_use]
    pub fn new(server: SocketAddr, active: ActiveSettings) -> Self {
        Self {
            server,
            active,
            links: Vec::new(),
            recovery: Recovery::Resync,
            state_file: None,
            save_interval: Duration::from_secs(2),
        }
    }

    /// The Bulk queries that list everything the replica covers: the filter's query, or one
    /// QUERY_BY_LINK_ADDRESS per link. Empty when neither is set.
    #[must_use]
    pub fn sync_queries(&self) -> Vec<Query> {
        match &self.active.filter {
            Some(f) => vec![f.clone()],
            None => self.links.iter().map(|l| Query::LinkAddress(*l)).collect(),
        }
    }

    /// What the replica covers, as kept in the state file.
    #[must_use]
    pub fn scope(&self) -> String {
        match &self.active.filter {
            Some(f) => format!("filter {f}"),
            None => self
                .links
                .iter()
                .map(|l| format!("link {l}"))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// What a [`Watch`] reports.
#[derive(Debug)]
pub enum WatchEvent {
    /// The replica was read from the state file.
    Loaded {
        /// Clients in it.
        clients: usize,
        /// The base-time it resumes from.
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
        /// Bulk queries asked.
        queries: usize,
        /// Bindings received.
        bindings: usize,
        /// Clients in the replica afterwards.
        clients: usize,
    },
    /// Connected; the ACTIVELEASEQUERY is sent.
    Connected {
        /// The server.
        server: SocketAddr,
        /// Its xid.
        xid: Xid,
        /// OPTION_LQ_START_TIME sent, if any.
        start_time: Option<ServerTime>,
    },
    /// The catch-up is complete: the replica is current.
    CatchUpComplete(TimeBase),
    /// The server's history did not cover `[start, end]`.
    DataMissing {
        /// The gap's start (server time).
        start: Option<ServerTime>,
        /// The gap's end (server time).
        end: Option<ServerTime>,
        /// How it will be recovered; `None` when no Bulk query can cover it (no links and no
        /// filter): the replica may hold stale bindings until they change again.
        recovery: Option<Recovery>,
        /// The time context of the message that said so.
        time: TimeBase,
    },
    /// The server said it is alive (a keepalive).
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

/// A sync by Bulk still to do.
#[derive(Debug, Clone, Copy)]
enum Sync {
    Initial,
    Resync,
    Window(Option<ServerTime>, Option<ServerTime>),
}

/// A replica kept in sync with one server.
#[derive(Debug)]
pub struct Watch {
    settings: WatchSettings,
    replica: Replica,
    sub: Option<Subscription>,
    pending: Option<Sync>,
    queue: VecDeque<WatchEvent>,
    dirty: bool,
    last_save: Instant,
    sync_failures: u32,
    sync_retry_at: Option<Instant>,
}

impl Watch {
    /// Reads the state file (if any) and prepares; nothing is sent before the first
    /// [`next_event`](Self::next_event).
    pub fn open(settings: WatchSettings) -> Result<Self> {
        let loaded = match &settings.state_file {
            Some(path) => Replica::load(path, &settings.server.to_string(), &settings.scope())?,
            None => None,
        };
        let mut queue = VecDeque::new();
        let (replica, sub, pending) = match loaded {
            Some(r) if r.base_time().is_some() => {
                queue.push_back(WatchEvent::Loaded {
                    clients: r.len(),
                    base_time: r.base_time(),
                });
                let sub =
                    Subscription::new(settings.server, settings.active.clone(), r.base_time());
                (r, Some(sub), None)
            }
            _ if !settings.sync_queries().is_empty() => (Replica::new(), None, Some(Sync::Initial)),
            _ => {
                let sub = Subscription::new(
                    settings.server,
                    settings.active.clone(),
                    Some(ServerTime(1)),
                );
                (Replica::new(), Some(sub), None)
            }
        };
        Ok(Self {
            settings,
            replica,
            sub,
            pending,
            queue,
            dirty: false,
            last_save: Instant::now(),
            sync_failures: 0,
            sync_retry_at: None,
        })
    }

    /// The replica.
    #[must_use]
    pub const fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The Active subscription, once started.
    #[must_use]
    pub const fn subscription(&self) -> Option<&Subscription> {
        self.sub.as_ref()
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
    /// (the state is saved first). Errors: [`Error::Refused`] when the server refuses the
    /// Active or a Bulk query (the state is saved first), [`Error::State`] when the state
    /// file cannot be written.
    pub fn next_event(&mut self) -> Result<Option<WatchEvent>> {
        match self.advance() {
            Err(e @ Error::Refused { .. }) => {
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
                self.save()?;
                return Ok(None);
            }
            if let Some(sync) = self.pending {
                self.sync(sync)?;
                continue;
            }
            let deadline = self
                .dirty
                .then(|| self.last_save + self.settings.save_interval);
            let Some(sub) = self.sub.as_mut() else {
                return Ok(None);
            };
            match sub.next_before(deadline)? {
                Next::Stopped => {
                    self.save()?;
                    return Ok(None);
                }
                Next::Idle => self.save()?,
                Next::Event(_, e) => self.take(e)?,
            }
        }
    }

    /// Handles one subscription event.
    fn take(&mut self, e: Event) -> Result<()> {
        match e {
            Event::Binding(data) => {
                if let Some(change) = self.replica.apply(&data) {
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
            }),
            Event::CatchUpComplete(time) => {
                self.queue.push_back(WatchEvent::CatchUpComplete(time));
                self.follow_resume_point();
                return self.save();
            }
            Event::DataMissing { start, end, time } => {
                let recovery =
                    (!self.settings.sync_queries().is_empty()).then_some(self.settings.recovery);
                self.pending = recovery.map(|r| match r {
                    Recovery::Resync => Sync::Resync,
                    Recovery::Window => Sync::Window(start, end),
                });
                self.queue.push_back(WatchEvent::DataMissing {
                    start,
                    end,
                    recovery,
                    time,
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
        self.follow_resume_point();
        if self.dirty && self.last_save.elapsed() >= self.settings.save_interval {
            self.save()?;
        }
        Ok(())
    }

    /// The replica's base-time follows the subscription's resume point, except while a
    /// recovery is pending (the gap's start stays the point to come back to).
    fn follow_resume_point(&mut self) {
        if self.pending.is_some() {
            return;
        }
        let resume = self.sub.as_ref().and_then(Subscription::resume_point);
        if resume.is_some() && resume != self.replica.base_time() {
            self.replica.set_base_time(resume);
            self.dirty = true;
        }
    }

    /// Runs a pending sync on a connection of its own; a connection failure is reported and
    /// retried after a backoff, a refusal is returned.
    fn sync(&mut self, sync: Sync) -> Result<()> {
        if let Some(at) = self.sync_retry_at {
            let left = at.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                std::thread::sleep(left.min(Duration::from_millis(100)));
                return Ok(());
            }
        }
        let queries = self.settings.sync_queries();
        let window = match sync {
            Sync::Window(start, end) => TimeWindow { start, end },
            Sync::Initial | Sync::Resync => TimeWindow::ALL,
        };
        let asked_at = TimeBase::now(None);
        let answers = match self.bulk_all(&queries, window) {
            Ok(a) => a,
            Err(e @ (Error::Refused { .. } | Error::Invalid(_))) => return Err(e),
            // Stopped half-way: nothing applied; the caller sees the flag next.
            Err(Error::Stopped) => return Ok(()),
            Err(e) => {
                self.sync_failures = self.sync_failures.saturating_add(1);
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
        let (bindings, first_base) = answers;
        self.sync_failures = 0;
        self.sync_retry_at = None;
        self.pending = None;
        let changes = match sync {
            Sync::Window(..) => bindings
                .iter()
                .filter_map(|d| self.replica.apply(d).map(|c| (c, d.time)))
                .collect(),
            Sync::Initial | Sync::Resync => {
                let time = bindings.first().map_or(asked_at, |d| d.time);
                self.replica
                    .replace_all(&bindings)
                    .into_iter()
                    .map(|c| (c, time))
                    .collect::<Vec<_>>()
            }
        };
        for (change, time) in changes {
            self.queue.push_back(WatchEvent::Change { change, time });
        }
        if let Sync::Initial = sync {
            // Subscribe from the answer's first base-time (or, without one, from when the
            // sync was asked, on the assumption that the clocks agree: digest §11.2).
            let start = first_base.unwrap_or_else(|| asked_at.to_server(asked_at.received));
            self.replica.set_base_time(Some(start));
            self.sub = Some(Subscription::new(
                self.settings.server,
                self.settings.active.clone(),
                Some(start),
            ));
        }
        self.follow_resume_point();
        self.queue.push_back(WatchEvent::Synced {
            recovery: !matches!(sync, Sync::Initial),
            queries: queries.len(),
            bindings: bindings.len(),
            clients: self.replica.len(),
        });
        self.save()
    }

    /// Every answer to `queries` on one connection, and the earliest first base-time among
    /// them. [`Error::Stopped`] when stopped half-way.
    fn bulk_all(
        &self,
        queries: &[Query],
        window: TimeWindow,
    ) -> Result<(Vec<ClientData>, Option<ServerTime>)> {
        let mut conn = Connection::connect(self.settings.server, &self.settings.active.requestor)?;
        conn.set_stop(self.settings.active.stop.clone());
        let mut all = Vec::new();
        let mut first: Option<ServerTime> = None;
        for q in queries {
            let mut bulk = conn.bulk(q, window)?;
            for item in &mut bulk {
                all.push(item?);
            }
            if let Some(t) = bulk.first_base_time() {
                first = Some(first.map_or(t, |f| f.min(t)));
            }
        }
        Ok((all, first))
    }
}
