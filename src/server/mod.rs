//! The event loop: the only code that touches sockets (architecture, "Layers").
//!
//! One thread, one `mio::Poll`: TCP listeners, UDP sockets, the feed's waker and a slab of
//! connections. Every socket is registered once for read and write, edge-triggered; the loop
//! keeps each connection's last seen readiness and serves it within a budget per turn, so one
//! busy requestor cannot starve the others (style habits 8–11). Protocol rules live in
//! [`crate::engine`]; this module only moves bytes, counts connections and keeps time.

mod conn;
pub mod duid;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use tracing::{debug, info, warn};

use crate::codec::ServerTime;
use crate::config::QueryTypes;
use crate::engine::active::{EncodeCache, Watchers};
use crate::engine::session::{ActiveSettings, Ctx};
use crate::engine::udp::{UdpAnswer, answer};
use crate::feed::{Fed, FeedReceiver, Writer, Writers, system_time as server_time};
use crate::store::journal::{FlushPolicy, JournalFile};
use crate::store::{History, LinkMap, Store};
use conn::Conn;

/// Who may connect, and what they may ask (decision D23).
pub trait Access: Send {
    /// The query types `peer` may run, or `None` when it may not connect at all.
    fn policy(&self, peer: IpAddr) -> Option<QueryTypes>;
}

/// Everyone may ask everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenAccess;

impl Access for OpenAccess {
    fn policy(&self, _: IpAddr) -> Option<QueryTypes> {
        Some(QueryTypes::ALL)
    }
}

impl Access for crate::config::Config {
    fn policy(&self, peer: IpAddr) -> Option<QueryTypes> {
        match self.access(peer) {
            crate::config::Access::Allowed(types) => Some(types),
            crate::config::Access::Denied => None,
        }
    }
}

/// What the event loop needs to know.
pub struct ServerConfig {
    /// Addresses to serve TCP (Bulk) and UDP (RFC 5007) on.
    pub listen: Vec<SocketAddr>,
    /// This server's DUID (OPTION_SERVERID).
    pub server_id: Vec<u8>,
    /// Global connection limit (decision D4).
    pub max_connections: usize,
    /// Connections per requestor address (BULK_LQ_MAX_CONNS, decision D4).
    pub max_connections_per_requestor: usize,
    /// Queries running at once on one connection (decision D22).
    pub max_concurrent_queries: usize,
    /// A connection blocked this long is closed (BULK_LQ_DATA_TIMEOUT): its output not moving,
    /// or, with no query running, nothing read or written.
    pub bulk_data_timeout: Duration,
    /// Outbound octets buffered per connection before the engine stops producing.
    pub high_water: usize,
    /// Reads (or datagrams) handled per socket per readiness event.
    pub read_budget: usize,
    /// SO_RCVBUF of the UDP sockets, in octets.
    pub udp_receive_buffer: usize,
    /// SO_SNDBUF of each TCP connection, in octets; 0 for the kernel's autotuning.
    pub tcp_send_buffer: usize,
    /// Changes taken from the feed per loop turn.
    pub feed_budget: usize,
    /// Access control.
    pub access: Box<dyn Access>,
    /// The links served (D16); empty takes links as the source names them. The server's
    /// store keeps them (this field is left empty).
    pub links: LinkMap,
    /// Active Leasequery service (D10) and ACTIVE_LQ_IDLE_TIMEOUT.
    pub active: ActiveSettings,
    /// ACTIVE_LQ_SEND_TIMEOUT: an Active connection whose output has not moved this long is
    /// closed.
    pub active_send_timeout: Duration,
    /// The change journal's file.
    pub journal: JournalSettings,
}

/// Where the change journal lives and how it is flushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalSettings {
    /// The file (created when absent).
    pub path: std::path::PathBuf,
    /// Its size in octets: how much history catch-up can reach.
    pub size: u64,
    /// When written records are forced to disk.
    pub flush: FlushPolicy,
}

const WAKER: Token = Token(0);
const LISTENER_BASE: usize = 1;
const FIRST_CONN: usize = 1 << 16;
/// How often a listener whose accept failed is tried again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// How long, at most, a named writer's mark waits for a record to carry it before a record of
/// marks alone is written: a line that changed nothing is acknowledged this late at most, and
/// such records are written at most this often.
const MARKS_INTERVAL: Duration = Duration::from_millis(100);

/// A bound server, ready to run.
pub struct Server {
    poll: Poll,
    cfg: ServerConfig,
    tcp: Vec<TcpListener>,
    udp: Vec<UdpSocket>,
    conns: Slab<Conn>,
    per_peer: HashMap<IpAddr, usize>,
    /// Listeners whose accept failed (out of descriptors, say): connections wait in their
    /// backlog, and no new readiness is reported for them, so they are retried.
    accept_retry: Vec<usize>,
    /// An accept failure was logged and the listeners have not drained since: at the
    /// descriptor limit Linux answers EMFILE even with an empty backlog, so retries go on
    /// quietly until an accept ends in WouldBlock.
    accept_stalled: bool,
    history: History<JournalFile>,
    cache: EncodeCache,
    /// Which connections each new record concerns.
    watchers: Watchers,
    feed: Option<FeedReceiver>,
    waker: Arc<Waker>,
    /// The named writers, shared with the sources that read them.
    writers: Arc<Writers>,
    /// The same, by name, for the loop to publish their marks without taking the sources' lock.
    named: HashMap<Box<str>, Arc<Writer>>,
    /// When pending marks were last written in a record of their own.
    marks_flushed: Instant,
}

impl Server {
    /// Binds every listen address (TCP and UDP) and registers the feed's waker.
    pub fn bind(mut cfg: ServerConfig) -> io::Result<Self> {
        let store = Store::with_links(std::mem::take(&mut cfg.links));
        let j = &cfg.journal;
        let (mut file, recovered) = JournalFile::open(&j.path, j.size, j.flush)
            .map_err(|e| io::Error::other(format!("journal {}: {e}", j.path.display())))?;
        // Nothing from before the journal began can be caught up (D19, issue 13).
        let began = file.journal().oldest_time().unwrap_or_else(server_time);
        file.mark_began(began);
        if let Some(why) = &recovered.discarded {
            warn!(journal = %j.path.display(), "journal recovery stopped early: {why}");
        }
        let kept = recovered
            .kept
            .as_ref()
            .map_or_else(String::new, |k| k.display().to_string());
        for hole in &recovered.holes {
            warn!(
                journal = %j.path.display(),
                kept,
                "journal damaged: {hole}; the ring was rebuilt from the intact records, and a \
                 catch-up from before the damage gets DataMissing"
            );
        }
        let (history, restored) = History::open(store, file);
        info!(
            journal = %j.path.display(),
            records = restored.records,
            unreadable = restored.unreadable,
            bindings = restored.bindings,
            writers = restored.marks,
            "journal opened"
        );
        if restored.marks_void {
            warn!(
                journal = %j.path.display(),
                "the journal no longer holds every binding lqd had (records of live bindings \
                 left the ring, or a crash tore it): named writers are told lqd holds none of \
                 their lines, and must re-send their state"
            );
        }
        let writers = Arc::new(Writers::restored(history.marks()));
        let named = writers
            .all()
            .into_iter()
            .map(|w| (w.name().into(), w))
            .collect();
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut tcp = Vec::new();
        let mut udp = Vec::new();
        for (i, addr) in cfg.listen.iter().enumerate() {
            let mut l = bind_tcp(*addr)?;
            let bound = l.local_addr()?;
            poll.registry()
                .register(&mut l, Token(LISTENER_BASE + 2 * i), Interest::READABLE)?;
            // UDP on the port TCP got (which matters when asked for port 0).
            let mut u = bind_udp(bound, cfg.udp_receive_buffer)?;
            poll.registry().register(
                &mut u,
                Token(LISTENER_BASE + 2 * i + 1),
                Interest::READABLE,
            )?;
            info!(tcp = %bound, udp = %u.local_addr()?, "listening");
            tcp.push(l);
            udp.push(u);
        }
        Ok(Self {
            poll,
            cfg,
            tcp,
            udp,
            conns: Slab::new(),
            per_peer: HashMap::new(),
            accept_retry: Vec::new(),
            accept_stalled: false,
            history,
            cache: EncodeCache::new(),
            watchers: Watchers::new(),
            feed: None,
            waker,
            writers,
            named,
            marks_flushed: Instant::now(),
        })
    }

    /// The named writers of the `jsonl:unix` source, with the marks the journal holds for
    /// them: give it to [`BoundJsonl::spawn`](crate::feed::BoundJsonl::spawn).
    #[must_use]
    pub fn writers(&self) -> Arc<Writers> {
        Arc::clone(&self.writers)
    }

    /// The waker a feed must use to wake this loop.
    #[must_use]
    pub fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    /// The addresses actually bound (TCP; UDP shares each port).
    pub fn local_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.tcp.iter().map(TcpListener::local_addr).collect()
    }

    /// Attaches the receiving end of the lease feed.
    pub fn set_feed(&mut self, feed: FeedReceiver) {
        self.feed = Some(feed);
    }

    /// Runs until `stop` is set (by SIGTERM / SIGINT), then ends every running query with
    /// QueryTerminated (decision D9) and closes.
    pub fn run(&mut self, stop: &AtomicBool) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut pending: Vec<usize> = Vec::new();
        let mut udp_pending: Vec<usize> = Vec::new();
        let mut last_sweep = Instant::now();
        let mut last_retry = Instant::now();
        let mut feed_more = false;
        while !stop.load(Ordering::Relaxed) {
            let timeout = if !pending.is_empty() || !udp_pending.is_empty() || feed_more {
                Duration::ZERO
            } else if !self.accept_retry.is_empty() {
                ACCEPT_RETRY
            } else if self.history.marks_pending() {
                MARKS_INTERVAL.saturating_sub(self.marks_flushed.elapsed())
            } else {
                Duration::from_millis(250)
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = server_time();
            for event in &events {
                match event.token() {
                    // The feed is drained below, every turn.
                    WAKER => {}
                    Token(t) if (LISTENER_BASE..FIRST_CONN).contains(&t) => {
                        let i = (t - LISTENER_BASE) / 2;
                        if (t - LISTENER_BASE) % 2 == 0 {
                            self.accept(i);
                        } else {
                            udp_pending.push(i);
                        }
                    }
                    Token(t) => {
                        let key = t - FIRST_CONN;
                        if let Some(c) = self.conns.get_mut(key) {
                            c.readable |= event.is_readable() || event.is_read_closed();
                            c.writable |= event.is_writable();
                            // A reset or an error: the socket's pending error says which.
                            c.hung_up |= event.is_write_closed() || event.is_error();
                            pending.push(key);
                        }
                    }
                }
            }
            // Changes keep arriving while requestors are served: take a budget each turn.
            let before = self.history.journal().next_seq();
            feed_more = self.drain_feed(now);
            if self.history.marks_pending() && self.marks_flushed.elapsed() >= MARKS_INTERVAL {
                self.flush_marks(now);
            }
            self.wake_concerned(before, &mut pending);
            udp_pending.sort_unstable();
            udp_pending.dedup();
            let sockets = std::mem::take(&mut udp_pending);
            for i in sockets {
                if self.serve_udp(i, now) {
                    udp_pending.push(i);
                }
            }
            let keys = std::mem::take(&mut pending);
            for key in keys {
                if self.service(key, now) {
                    pending.push(key);
                }
            }
            pending.sort_unstable();
            pending.dedup();
            if !self.accept_retry.is_empty() && last_retry.elapsed() >= ACCEPT_RETRY {
                last_retry = Instant::now();
                for i in std::mem::take(&mut self.accept_retry) {
                    self.accept(i);
                }
                if self.accept_retry.is_empty() && self.accept_stalled {
                    self.accept_stalled = false;
                    info!("accepting connections again");
                }
            }
            if last_sweep.elapsed() >= Duration::from_secs(1) {
                last_sweep = Instant::now();
                self.sweep_timeouts();
                let before = self.history.journal().next_seq();
                self.housekeeping(now);
                self.publish_marks();
                // The changes housekeeping journaled (expiries), and the keepalives due.
                self.wake_concerned(before, &mut pending);
                self.wake_keepalives(&mut pending);
            }
        }
        self.shutdown()
    }

    /// Applies a budget of waiting changes; true when more are waiting (no wake-up will come
    /// for them, so the loop must not sleep).
    fn drain_feed(&mut self, now: ServerTime) -> bool {
        let Some(feed) = self.feed.as_mut() else {
            return false;
        };
        let (history, named) = (&mut self.history, &mut self.named);
        let mut failed = 0usize;
        let mut last_error = None;
        let mut again = 0usize;
        let mut flushed = None;
        let drained = feed.drain_fed(self.cfg.feed_budget, |fed| {
            let result = match fed {
                Fed::Change(change, None) => history.apply(&change, now).map(drop),
                Fed::Change(change, Some(line)) => {
                    know(named, &line.writer);
                    match history.apply_numbered(&change, now, line.writer.name(), line.seq) {
                        Ok(None) => {
                            again = again.saturating_add(1);
                            Ok(())
                        }
                        other => other.map(drop),
                    }
                }
                Fed::Rejected(line) => {
                    know(named, &line.writer);
                    history.reject_numbered(line.writer.name(), line.seq);
                    Ok(())
                }
                Fed::Reconcile { keep, line } => {
                    let result = history
                        .reconcile(|kind, address| keep.contains(&(kind, address)), now)
                        .map(|ended| {
                            if ended > 0 {
                                info!(
                                    ended,
                                    "the source's snapshot ended the leases lqd held that it no \
                                     longer has"
                                );
                            }
                        });
                    if let Some(line) = line {
                        know(named, &line.writer);
                        history.reject_numbered(line.writer.name(), line.seq);
                    }
                    result
                }
                Fed::Sync(done) => {
                    // Everything before the sync is applied; its pending marks become durable
                    // and published before the source is told.
                    let result = history.flush_marks(now).map(drop);
                    flushed = Some(Instant::now());
                    publish(history, named);
                    let _ = done.try_send(());
                    result
                }
            };
            if let Err(e) = result {
                failed = failed.saturating_add(1);
                last_error = Some(e);
            }
        });
        publish(history, named);
        if let Some(at) = flushed {
            self.marks_flushed = at;
        }
        if again > 0 {
            debug!(
                lines = again,
                "numbered lines at or below their writer's mark: taken before, not applied again"
            );
        }
        if let Some(e) = last_error {
            warn!(changes = failed, "changes applied but not journaled: {e}");
        }
        drained.more
    }

    /// Writes the pending marks in a record of their own and publishes them.
    fn flush_marks(&mut self, now: ServerTime) {
        self.marks_flushed = Instant::now();
        if let Err(e) = self.history.flush_marks(now) {
            warn!("writers' marks not journaled: {e}");
        }
        self.publish_marks();
    }

    /// Tells the sources the marks journaled since the last time.
    fn publish_marks(&mut self) {
        publish(&mut self.history, &self.named);
    }

    /// Marks for service the connections whose Active queries the records from `since` on
    /// concern: the cost of a change is the queries it matches (issue 12).
    fn wake_concerned(&self, since: u64, pending: &mut Vec<usize>) {
        let next = self.history.journal().next_seq();
        if next == since {
            return;
        }
        self.watchers
            .woken(self.history.postings(), since, next, pending);
        pending.sort_unstable();
        pending.dedup();
    }

    /// Marks for service the connections whose Active keepalive is due (D2). Only those: with
    /// thousands of quiet requestors, serving every one each second delayed the changes
    /// behind them by milliseconds.
    fn wake_keepalives(&self, pending: &mut Vec<usize>) {
        let (mono, idle) = (Instant::now(), self.cfg.active.idle_timeout);
        pending.extend(
            self.conns
                .iter()
                .filter(|(_, c)| c.keepalive_due(idle).is_some_and(|due| due <= mono))
                .map(|(k, _)| k),
        );
        pending.sort_unstable();
        pending.dedup();
    }

    /// Once a second: expiries nobody reported (D6), tombstones the ring has passed, and the
    /// journal's flush policy.
    fn housekeeping(&mut self, now: ServerTime) {
        match self.history.expire(now) {
            Ok(0) => {}
            Ok(n) => debug!(leases = n, "expired"),
            Err(e) => warn!("expiries applied but not journaled: {e}"),
        }
        let watchers = &self.watchers;
        self.history.prune(|key| watchers.watches(key));
        if let Err(e) = self.history.log_mut().tick(Instant::now()) {
            warn!("journal flush failed: {e}");
        }
    }

    fn accept(&mut self, i: usize) {
        loop {
            let Some(listener) = self.tcp.get(i) else {
                return;
            };
            let (stream, peer) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    if !self.accept_stalled {
                        warn!(error = %e, "accept failed; retrying every {ACCEPT_RETRY:?}");
                        self.accept_stalled = true;
                    }
                    if !self.accept_retry.contains(&i) {
                        self.accept_retry.push(i);
                    }
                    return;
                }
            };
            let ip = peer.ip();
            let Some(policy) = self.cfg.access.policy(ip) else {
                info!(%peer, "connection refused: requestor not allowed");
                continue;
            };
            if self.conns.len() >= self.cfg.max_connections {
                warn!(%peer, limit = self.cfg.max_connections, "connection refused: global limit");
                continue;
            }
            let count = self.per_peer.entry(ip).or_insert(0);
            if *count >= self.cfg.max_connections_per_requestor {
                warn!(%peer, limit = self.cfg.max_connections_per_requestor, "connection refused: per-requestor limit");
                continue;
            }
            *count += 1;
            // lqd writes whole messages, batched per turn: Nagle's algorithm would only hold
            // the next change back until the previous one is acknowledged.
            if let Err(e) = stream.set_nodelay(true) {
                debug!(%peer, error = %e, "cannot set TCP_NODELAY");
            }
            if self.cfg.tcp_send_buffer > 0 {
                if let Err(e) =
                    socket2::SockRef::from(&stream).set_send_buffer_size(self.cfg.tcp_send_buffer)
                {
                    debug!(%peer, error = %e, "cannot set the send buffer");
                }
            }
            let entry = self.conns.vacant_entry();
            let token = Token(FIRST_CONN + entry.key());
            let mut conn = Conn::new(stream, peer, policy, self.cfg.max_concurrent_queries);
            if let Err(e) = self.poll.registry().register(
                &mut conn.stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                warn!(%peer, error = %e, "cannot register connection");
                self.release_peer(ip);
                continue;
            }
            info!(%peer, "connection opened");
            entry.insert(conn);
        }
    }

    /// Answers datagrams on UDP socket `i` up to the budget; true when the budget ran out
    /// before the socket was empty.
    fn serve_udp(&mut self, i: usize, now: ServerTime) -> bool {
        let mut buf = [0u8; 65_536];
        let mut out = Vec::new();
        for _ in 0..self.cfg.read_budget {
            let Some(sock) = self.udp.get(i) else {
                return false;
            };
            let (n, peer) = match sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    warn!(error = %e, "UDP receive failed");
                    return false;
                }
            };
            let Some(policy) = self.cfg.access.policy(peer.ip()) else {
                debug!(%peer, "UDP query dropped: requestor not allowed");
                continue;
            };
            let datagram = buf.get(..n).unwrap_or(&[]);
            let verdict = answer(
                self.history.store(),
                &self.cfg.server_id,
                &policy,
                datagram,
                now,
                &mut out,
            );
            if let UdpAnswer::Refused(status, reason) = verdict {
                info!(%peer, %status, reason, "UDP query refused");
            }
            match verdict {
                UdpAnswer::Reply | UdpAnswer::Refused(..) => {
                    if let Err(e) = sock.send_to(&out, peer) {
                        warn!(%peer, error = %e, "UDP reply not sent");
                    }
                }
                UdpAnswer::Drop(reason) => info!(%peer, reason, "UDP query dropped"),
            }
        }
        // Budget spent with datagrams possibly left: edge-triggered readiness will not fire
        // again for them, so the caller comes back on the next turn.
        true
    }

    /// Serves one connection; returns true when it has work left for the next turn.
    fn service(&mut self, key: usize, now: ServerTime) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        let ctx = Ctx {
            history: &self.history,
            server_id: &self.cfg.server_id,
            now,
            mono: Instant::now(),
            active: self.cfg.active,
        };
        match conn.service(&ctx, &mut self.cache, &self.cfg) {
            Ok(more) => {
                // Queries started this turn: wake the connection for what they read.
                let queries = conn.active_queries();
                for q in queries.get(conn.watched..).unwrap_or_default() {
                    self.watchers.watch(q, key);
                }
                conn.watched = queries.len();
                more
            }
            Err(reason) => {
                self.close(key, &reason);
                false
            }
        }
    }

    fn close(&mut self, key: usize, reason: &str) {
        if !self.conns.contains(key) {
            return;
        }
        let mut conn = self.conns.remove(key);
        let queries = conn.active_queries();
        for q in queries.get(..conn.watched).unwrap_or(queries) {
            if let Some(k) = self.watchers.unwatch(q, key) {
                self.history.unwatched(&k);
            }
        }
        let _ = self.poll.registry().deregister(&mut conn.stream);
        info!(peer = %conn.peer, reason, "connection closed");
        self.release_peer(conn.peer.ip());
    }

    fn release_peer(&mut self, ip: IpAddr) {
        if let Some(n) = self.per_peer.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_peer.remove(&ip);
            }
        }
    }

    fn sweep_timeouts(&mut self) {
        let (bulk, active) = (self.cfg.bulk_data_timeout, self.cfg.active_send_timeout);
        let stale: Vec<(usize, &'static str)> = self
            .conns
            .iter()
            .filter_map(|(k, c)| {
                if c.has_active() {
                    (c.blocked_for() >= active)
                        .then_some((k, "blocked longer than ACTIVE_LQ_SEND_TIMEOUT"))
                } else {
                    (c.blocked_for() >= bulk)
                        .then_some((k, "blocked longer than BULK_LQ_DATA_TIMEOUT"))
                }
            })
            .collect();
        for (key, reason) in stale {
            self.close(key, reason);
        }
    }

    fn shutdown(&mut self) -> io::Result<()> {
        info!(connections = self.conns.len(), "shutting down");
        let now = server_time();
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.terminate(&self.cfg.server_id, now);
            }
            self.close(key, "server shutting down");
        }
        if let Err(e) = self.history.flush_marks(now) {
            warn!("writers' marks not journaled at shutdown: {e}");
        }
        if let Err(e) = self.history.log_mut().flush() {
            warn!("journal flush at shutdown failed: {e}");
        }
        Ok(())
    }
}

/// The loop learns a named writer from its lines, to publish its marks.
fn know(named: &mut HashMap<Box<str>, Arc<Writer>>, writer: &Arc<Writer>) {
    if !named.contains_key(writer.name()) {
        named.insert(writer.name().into(), Arc::clone(writer));
    }
}

/// Publishes to each writer the mark the journal now holds for it: only after the record
/// carrying it is appended, never before.
fn publish(history: &mut History<JournalFile>, named: &HashMap<Box<str>, Arc<Writer>>) {
    history.take_recorded(|name, seq| {
        if let Some(w) = named.get(name) {
            w.publish(seq);
        }
    });
}

/// Connections the kernel may hold for one listener before lqd accepts them. A requestor
/// population reconnecting at once (after a restart of lqd or of the network) arrives as a
/// burst of thousands: with mio's default of 128 the rest of the burst overflows and waits
/// for SYN retransmissions (1 s, 3 s, ...). The kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: i32 = 4096;

/// A non-blocking TCP listener on `addr` with [`LISTEN_BACKLOG`], `SO_REUSEADDR` set (as mio
/// does) so that a restarted lqd binds while old connections linger in TIME_WAIT.
fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// A non-blocking UDP socket on `addr` with a receive buffer of `buffer` octets, or as much as
/// the kernel allows (said in the log when that is less).
fn bind_udp(addr: SocketAddr, buffer: usize) -> io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    socket.set_nonblocking(true)?;
    if let Err(e) = socket.set_recv_buffer_size(buffer) {
        warn!(%addr, error = %e, "cannot set the UDP receive buffer");
    }
    // Linux reports twice the usable size it granted.
    let granted = socket.recv_buffer_size().unwrap_or(0) / 2;
    if granted < buffer {
        warn!(
            %addr,
            requested = buffer,
            granted,
            "UDP receive buffer capped by the kernel (raise net.core.rmem_max)"
        );
    }
    socket.bind(&addr.into())?;
    Ok(UdpSocket::from_std(socket.into()))
}
