//! The event loop: the only code that touches sockets (architecture, "Layers").
//!
//! One thread, one `mio::Poll`: TCP listeners, UDP sockets, the feed's waker and a slab of
//! connections. Every socket is registered once for read and write, edge-triggered; the loop
//! keeps each connection's last seen readiness and serves it within a budget per turn, so one
//! busy requestor cannot starve the others (style habits 8–11). Protocol rules live in
//! [`crate::engine`]; this module only moves bytes, counts connections and keeps time.

pub mod code_lock;
mod conn;
pub mod duid;
pub mod metrics;
pub mod notify;
mod reload;
pub mod tls;
mod turns;

pub use reload::{Live, LiveHandle, Reloader, SetLogFilter};

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use tracing::{debug, info, warn};

use crate::codec::ServerTime;
use crate::config::{Admission, Identified, QueryTypes};
use crate::engine::active::{EncodeCache, Watchers};
use crate::engine::session::{ActiveSettings, Ctx};
use crate::engine::udp::{UdpAnswer, answer};
use crate::feed::{Fed, FeedReceiver, Writer, Writers, system_time as server_time};
use crate::store::journal::{FlushPolicy, JournalFile};
use crate::store::{History, LinkMap, SnapshotRead, SnapshotStart, Store, read_snapshot, snapshot};
use conn::{Conn, Observe, Turn};
use metrics::{ClosedView, ConnView, Metrics, QueryView, Refused, RequestorLag, Snapshot, TlsView};
use tls::TlsServer;
use turns::{LongTurns, Step, TurnClock, TurnWork};

/// Who may connect, and what they may ask (decisions D23, D27).
pub trait Access: Send {
    /// The query types `peer` may run, or `None` when it may not connect at all.
    fn policy(&self, peer: IpAddr) -> Option<QueryTypes>;

    /// Whether a TCP connection from `peer` is let in: by [`policy`](Self::policy), unless
    /// a certificate may decide.
    fn admit(&self, peer: IpAddr) -> Admission {
        self.policy(peer)
            .map_or(Admission::Denied, Admission::Allowed)
    }

    /// What a TLS client certificate with these names decides for `peer`.
    fn identify(&self, _peer: IpAddr, _names: &[String]) -> Identified {
        Identified::Unchanged
    }
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

    fn admit(&self, peer: IpAddr) -> Admission {
        Self::admit(self, peer)
    }

    fn identify(&self, peer: IpAddr, names: &[String]) -> Identified {
        Self::identify(self, peer, names)
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
    /// STARTTLS (D25): `None` refuses it.
    pub tls: Option<TlsServer>,
    /// The counters and snapshots the metrics endpoint serves; `None` keeps none.
    pub metrics: Option<Arc<Metrics>>,
    /// Record times and base-times are the source's (a database's commit times, D33) rather
    /// than lqd's clock: lqd's own expiry (D6) is off, and an empty journal begins at the
    /// source's first snapshot.
    pub source_times: bool,
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
    /// The catch-up window the journal should hold: at start, lqd warns when the churn its
    /// records show would overwrite it sooner (`catch_up_window`); `None` checks nothing.
    pub catch_up_window: Option<Duration>,
}

/// Says, at start, whether the journal holds `window` of changes at the churn its records show
/// (issue 19): a warning, with the size that would, when it does not.
fn check_window<B: AsRef<[u8]> + AsMut<[u8]>>(
    path: &std::path::Path,
    size: u64,
    window: Duration,
    journal: &crate::store::journal::Journal<B>,
) {
    let Some(r) = crate::store::journal::sizing::reach(journal) else {
        info!(
            journal = %path.display(),
            "the journal holds too little history to measure the churn; catch_up_window is \
             checked at the next start"
        );
        return;
    };
    let holds = r.holds();
    if holds < window {
        warn!(
            journal = %path.display(),
            changes_per_sec = format!("{:.1}", r.changes_per_sec),
            octets_per_record = format!("{:.0}", r.octets_per_record),
            holds_secs = holds.as_secs(),
            catch_up_window_secs = window.as_secs(),
            journal_size = size,
            needed = r.size_for(window),
            "the journal is too small for catch_up_window: at the churn its records show, it \
             holds {} s of changes, and a requestor reconnecting later than that gets \
             DataMissing; a journal_size of {} octets holds the window (lqd journal resize)",
            holds.as_secs(),
            r.size_for(window)
        );
    } else {
        info!(
            journal = %path.display(),
            changes_per_sec = format!("{:.1}", r.changes_per_sec),
            octets_per_record = format!("{:.0}", r.octets_per_record),
            holds_secs = holds.as_secs(),
            catch_up_window_secs = window.as_secs(),
            "the journal holds catch_up_window at the churn its records show"
        );
    }
}

/// Logs the long turns since the last report, if any: how many, the longest, and the step
/// their time went to.
fn report_long_turns(long: &mut LongTurns) {
    if let Some(r) = long.take_report() {
        info!(
            turns = r.turns,
            longest_ms = r.longest.as_millis(),
            steps = %r.steps,
            longest_steps = %r.longest_steps,
            longest_changes = r.longest_work.changes,
            longest_served = r.longest_work.served,
            longest_deferred = r.longest_work.deferred,
            "event loop turns of {} ms or more: the live changes that arrived during one waited \
             as long",
            turns::LONG_TURN.as_millis()
        );
    }
}

const WAKER: Token = Token(0);
/// The read end of the signal pipe ([`Server::wake_on_signals`]).
const SIGNALS: Token = Token(1);
/// Closed connections the requestor view keeps.
const CLOSED_KEPT: usize = 256;
/// Runs of arrivals kept for the fan-out latency, and for how long: a delivery later than
/// that is a catch-up, not fan-out.
const ARRIVALS_KEPT: usize = 100_000;
const ARRIVAL_AGE: Duration = Duration::from_secs(120);
const LISTENER_BASE: usize = 2;
const FIRST_CONN: usize = 1 << 16;
/// How often a listener whose accept failed is tried again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Connections a listener accepts in one turn; the rest of its backlog waits for the next
/// turn, which comes at once. A thousand requestors reconnecting together (a gateway estate
/// back after an outage) are then accepted over a few turns, the live streams served between
/// them, not in one turn that holds every live change back (issue 19, D47).
const ACCEPT_BUDGET: usize = 64;
/// How much of a turn the connections that do not stream live (catch-ups, Bulk answers, new
/// connections) may take before the rest of them wait for the next turn. A live change waits
/// about a turn during a catch-up storm: this slice, the fill that crosses it, the live streams
/// and the feed (D45, D48).
const TURN_SLICE: Duration = Duration::from_millis(5);
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
    /// New settings from a reload (D31), sent by [`LiveHandle`]s.
    live_rx: crossbeam_channel::Receiver<Live>,
    /// The sending side, cloned into each [`LiveHandle`].
    live_tx: crossbeam_channel::Sender<Live>,
    /// Connections held by the requestors of each certificate table (by its index).
    per_table: HashMap<usize, usize>,
    /// When runs of journal records arrived: (first sequence number, instant), for the
    /// fan-out latency; only with metrics.
    arrivals: VecDeque<(u64, Instant)>,
    /// What this turn's connections did, for the metrics (added once a turn).
    turn: Turn,
    /// The last connections closed, for the requestor view.
    closed: VecDeque<ClosedView>,
    /// The journal's next sequence number when the server started (appends are counted from
    /// there).
    first_seq: u64,
    /// The read end of the pipe the signal handlers write to, once
    /// [`wake_on_signals`](Self::wake_on_signals) made one.
    signals: Option<mio::net::UnixStream>,
    /// With source times (D33): the newest time the source gave (never going back).
    clock: Option<ServerTime>,
}

impl Server {
    /// Binds every listen address (TCP and UDP) and registers the feed's waker.
    pub fn bind(mut cfg: ServerConfig) -> io::Result<Self> {
        let store = Store::with_links(std::mem::take(&mut cfg.links));
        let j = &cfg.journal;
        // The snapshot beside the journal (D43) is read on a thread of its own while the
        // journal is recovered, and checked against it once both are done.
        let snapshot_path = snapshot::path_for(&j.path);
        let reading = {
            let path = snapshot_path.clone();
            let link_map = store.link_map().clone();
            std::thread::Builder::new()
                .name("lqd-snapshot".into())
                .spawn(move || read_snapshot(&path, link_map))?
        };
        let opening = Instant::now();
        let (mut file, recovered) = JournalFile::open(&j.path, j.size, j.flush)
            .map_err(|e| io::Error::other(format!("journal {}: {e}", j.path.display())))?;
        let recovery = opening.elapsed();
        // Nothing from before the journal began can be caught up (D19, issue 13). With source
        // times an empty journal begins at the source's first snapshot (D33).
        match file.journal().oldest_time() {
            Some(oldest) => file.mark_began(oldest),
            None if !cfg.source_times => file.mark_began(server_time()),
            None => {}
        }
        if let Some(why) = &recovered.discarded {
            warn!(journal = %j.path.display(), "journal recovery stopped early: {why}");
        }
        if let Some(v) = recovered.migrated_from {
            info!(
                journal = %j.path.display(),
                "journal format {v} migrated to format 2: its records read as before, new \
                 records are written packed (D42); an lqd older than this one refuses it now"
            );
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
        let read = reading.join().unwrap_or_else(|_| {
            SnapshotRead::failed(snapshot::SnapshotError::Damaged(
                "its reader stopped (a panic)".into(),
            ))
        });
        let started = Instant::now();
        let (mut history, restored, from) = History::open_from_snapshot(store, file, read);
        history.set_source_times(cfg.source_times);
        match &from {
            SnapshotStart::None => {}
            SnapshotStart::Loaded { covered, read } => info!(
                snapshot = %snapshot_path.display(),
                covered,
                read_seconds = %format!("{:.2}", read.as_secs_f64()),
                "snapshot loaded: the journal's records after {covered} replayed on it"
            ),
            SnapshotStart::Refused(why) => warn!(
                snapshot = %snapshot_path.display(),
                "snapshot not used, {why}; the whole journal is replayed"
            ),
        }
        info!(
            journal = %j.path.display(),
            records = restored.records,
            replayed = restored.replayed,
            unreadable = restored.unreadable,
            bindings = restored.bindings,
            writers = restored.marks,
            recovery_seconds = %format!("{:.2}", recovery.as_secs_f64()),
            replay_seconds = %format!("{:.2}", started.elapsed().as_secs_f64()),
            seconds = %format!("{:.2}", (opening.elapsed()).as_secs_f64()),
            "journal opened"
        );
        if let Some(window) = j.catch_up_window {
            check_window(&j.path, j.size, window, history.journal());
        }
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
        let (live_tx, live_rx) = reload::channel();
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
            live_rx,
            live_tx,
            per_table: HashMap::new(),
            arrivals: VecDeque::new(),
            turn: Turn::default(),
            closed: VecDeque::new(),
            first_seq: 0,
            signals: None,
            clock: None,
        })
    }

    /// Decides on a requestor's TLS client certificate once its handshake is done (D27):
    /// the certificate table it matches sets its query types and counts its connections;
    /// one that matches no table, or none presented where a table must match, is refused.
    /// `Err` closes the connection with that reason.
    fn identify(&mut self, key: usize) -> Result<(), String> {
        let Some(conn) = self.conns.get_mut(key) else {
            return Ok(());
        };
        let Some(chain) = conn.to_identify() else {
            return Ok(());
        };
        let peer = conn.peer;
        let Some(leaf) = chain.first() else {
            conn.identified();
            if conn.needs_certificate {
                return Err(
                    "no client certificate, and only a certificate table admits this address"
                        .into(),
                );
            }
            return Ok(());
        };
        let names = tls::certificate_names(leaf);
        let who = tls::describe(leaf);
        conn.certificate = Some(who.clone());
        conn.certificate_names.clone_from(&names);
        match self.cfg.access.identify(peer.ip(), &names) {
            Identified::Unchanged => {
                if conn.needs_certificate {
                    return Err(format!("certificate matches no requestor table ({who})"));
                }
                info!(%peer, certificate = %who, "TLS requestor");
            }
            Identified::NoMatch => {
                return Err(format!("certificate matches no requestor table ({who})"));
            }
            Identified::Table {
                index,
                name,
                query_types,
                limit,
            } => {
                let held = self.per_table.entry(index).or_insert(0);
                if *held >= limit {
                    return Err(format!(
                        "per-requestor limit: requestor table {} ({name}) holds {limit} connections",
                        index + 1
                    ));
                }
                *held += 1;
                conn.table = Some(index);
                conn.requestor_name = Some(name.clone());
                conn.set_policy(query_types);
                info!(%peer, certificate = %who, table = index + 1, name, "TLS requestor identified");
            }
        }
        conn.identified();
        Ok(())
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

    /// Wakes the loop at once when one of `signals` arrives, through a pipe the signal handler
    /// writes a byte to (the self-pipe pattern): the flag those signals set (`stop`) is then
    /// seen on that turn, not when the loop's poll times out (up to 250 ms later). Register
    /// the handlers that set the flags first, so that a flag is set before the byte that wakes
    /// the loop is written.
    pub fn wake_on_signals(&mut self, signals: &[std::ffi::c_int]) -> io::Result<()> {
        let (read, write) = std::os::unix::net::UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let mut read = mio::net::UnixStream::from_std(read);
        self.poll
            .registry()
            .register(&mut read, SIGNALS, Interest::READABLE)?;
        for &signal in signals {
            signal_hook::low_level::pipe::register(signal, write.try_clone()?)?;
        }
        self.signals = Some(read);
        Ok(())
    }

    /// Empties the signal pipe (edge-triggered: all of it); the loop then looks at the flags.
    fn drain_signals(&mut self) {
        let Some(pipe) = self.signals.as_mut() else {
            return;
        };
        let mut buf = [0u8; 64];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Runs until `stop` is set (by SIGTERM / SIGINT), then ends every running query with
    /// QueryTerminated (decision D9), closes every connection and flushes the journal, its
    /// header made exact.
    ///
    /// Once it has returned, what dropping the server does is free memory: the store, its
    /// indexes, the postings and the journal's index, millions of allocations for a large
    /// population (freeing those of 200,000 clients took 3.5 s in a debug build). A process
    /// that exits right after may skip it (`std::mem::forget`), as `lqd` does.
    pub fn run(&mut self, stop: &AtomicBool) -> io::Result<()> {
        self.first_seq = self.history.journal().next_seq();
        let mut events = Events::with_capacity(1024);
        let mut pending: Vec<usize> = Vec::new();
        let mut udp_pending: Vec<usize> = Vec::new();
        // Listeners whose backlog the accept budget left behind.
        let mut accept_pending: Vec<usize> = Vec::new();
        let mut last_sweep = Instant::now();
        let mut last_retry = Instant::now();
        let mut feed_more = false;
        let mut long_turns = LongTurns::default();
        // The connections to serve this turn, live streams apart (kept for their capacity).
        let (mut live_keys, mut other_keys): (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
        let mut long_reported = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let timeout = if !pending.is_empty()
                || !udp_pending.is_empty()
                || !accept_pending.is_empty()
                || feed_more
            {
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
            let mut clock = TurnClock::start();
            let mut work = TurnWork::default();
            let wall = server_time();
            for i in std::mem::take(&mut accept_pending) {
                if self.accept(i) {
                    accept_pending.push(i);
                }
            }
            for event in &events {
                match event.token() {
                    // The feed is drained below, every turn.
                    WAKER => {}
                    // The flags the signal set are read at the top of the next turn.
                    SIGNALS => self.drain_signals(),
                    Token(t) if (LISTENER_BASE..FIRST_CONN).contains(&t) => {
                        let i = (t - LISTENER_BASE) / 2;
                        if (t - LISTENER_BASE) % 2 == 0 {
                            if !accept_pending.contains(&i) && self.accept(i) {
                                accept_pending.push(i);
                            }
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
            clock.mark(Step::Events);
            // Changes keep arriving while requestors are served: take a budget each turn.
            let before = self.history.journal().next_seq();
            feed_more = self.drain_feed(wall);
            self.note_arrivals(before);
            let now = self.now(wall);
            if self.history.marks_pending() && self.marks_flushed.elapsed() >= MARKS_INTERVAL {
                self.flush_marks(now);
            }
            work.changes = self.history.journal().next_seq().saturating_sub(before);
            clock.mark(Step::Feed);
            self.wake_concerned(before, &mut pending);
            udp_pending.sort_unstable();
            udp_pending.dedup();
            let sockets = std::mem::take(&mut udp_pending);
            for i in sockets {
                if self.serve_udp(i, now) {
                    udp_pending.push(i);
                }
            }
            // The connections that stream live are served first, every turn; the others
            // (catch-ups, Bulk answers, new connections) then, within a slice of the turn, the
            // rest of them on the next turn, which comes at once. A reconnect storm of
            // catch-ups then delays a live change by about a turn, not by all of their work
            // (issue 19, D45, D48).
            clock.mark(Step::Wake);
            let (mut live, mut others) = (
                std::mem::take(&mut live_keys),
                std::mem::take(&mut other_keys),
            );
            for key in pending.drain(..) {
                if self.conns.get(key).is_some_and(Conn::streams_live) {
                    live.push(key);
                } else {
                    others.push(key);
                }
            }
            for key in live.drain(..) {
                work.served += 1;
                if self.service(key, now) {
                    pending.push(key);
                }
            }
            let slice_end = Instant::now() + TURN_SLICE;
            for key in others.drain(..) {
                let defer = Instant::now() >= slice_end;
                work.served += usize::from(!defer);
                work.deferred += usize::from(defer);
                if defer || self.service(key, now) {
                    pending.push(key);
                }
            }
            (live_keys, other_keys) = (live, others);
            clock.mark(Step::Conns);
            pending.sort_unstable();
            pending.dedup();
            if !self.accept_retry.is_empty() && last_retry.elapsed() >= ACCEPT_RETRY {
                last_retry = Instant::now();
                for i in std::mem::take(&mut self.accept_retry) {
                    if self.accept(i) && !accept_pending.contains(&i) {
                        accept_pending.push(i);
                    }
                }
                if self.accept_retry.is_empty() && self.accept_stalled {
                    self.accept_stalled = false;
                    info!("accepting connections again");
                }
            }
            self.take_live(now);
            if last_sweep.elapsed() >= Duration::from_secs(1) {
                last_sweep = Instant::now();
                self.sweep_timeouts();
                let before = self.history.journal().next_seq();
                self.housekeeping(now);
                self.note_arrivals(before);
                self.take_counts();
                self.publish_snapshot();
                self.publish_marks();
                // The changes housekeeping journaled (expiries), and the keepalives due.
                self.wake_concerned(before, &mut pending);
                self.wake_keepalives(&mut pending);
                if long_reported.elapsed() >= turns::REPORT_EVERY {
                    long_reported = Instant::now();
                    report_long_turns(&mut long_turns);
                }
            }
            clock.mark(Step::Rest);
            long_turns.note_clock(&clock, work);
            self.turn.loop_turns.observe(
                u64::try_from(clock.total().as_nanos()).unwrap_or(u64::MAX),
                1,
            );
            self.count_turn();
        }
        self.shutdown()
    }

    /// The server time: lqd's clock `wall`, or with source times (D33) the newest time the
    /// source gave (its newest record's after a restart; before any, 1: the start of time,
    /// which every catch-up's START_TIME comes after).
    fn now(&self, wall: ServerTime) -> ServerTime {
        if !self.cfg.source_times {
            return wall;
        }
        self.clock
            .max(self.history.journal().newest_time())
            .unwrap_or(ServerTime(1))
    }

    /// Applies a budget of waiting changes; true when more are waiting (no wake-up will come
    /// for them, so the loop must not sleep).
    fn drain_feed(&mut self, wall: ServerTime) -> bool {
        let mut now = self.now(wall);
        let source_times = self.cfg.source_times;
        let Some(feed) = self.feed.as_mut() else {
            return false;
        };
        let (history, named, clock) = (&mut self.history, &mut self.named, &mut self.clock);
        let mut failed = 0usize;
        let mut last_error = None;
        let mut again = 0usize;
        let mut flushed = None;
        let (mut received, mut applied) = (0u64, 0u64);
        let drained = feed.drain_fed(self.cfg.feed_budget, |fed| {
            let change = matches!(fed, Fed::Change(..));
            received += u64::from(change);
            let result = match fed {
                Fed::Clock(t) if source_times => {
                    now = now.max(t);
                    *clock = Some(now);
                    Ok(())
                }
                Fed::Snapshot { at, reaches } if source_times => {
                    now = now.max(at);
                    *clock = Some(now);
                    history.source_gap(reaches, now).map(|marked| {
                        if marked {
                            info!(
                                reaches = reaches.to_unix(),
                                "the source takes a new snapshot: a catch-up from before it \
                                 gets DataMissing"
                            );
                        }
                    })
                }
                Fed::Clock(_) | Fed::Snapshot { .. } => Ok(()),
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
            match result {
                Ok(()) => applied += u64::from(change),
                Err(e) => {
                    failed = failed.saturating_add(1);
                    last_error = Some(e);
                }
            }
        });
        if let Some(m) = &self.cfg.metrics {
            m.feed_received.fetch_add(received, Ordering::Relaxed);
            m.feed_applied.fetch_add(applied, Ordering::Relaxed);
        }
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

    /// Once a second: expiries nobody reported (D6; not with source times, whose source
    /// reports its expiries itself, D33), tombstones the ring has passed, and the journal's
    /// flush policy.
    fn housekeeping(&mut self, now: ServerTime) {
        let expired = if self.cfg.source_times {
            Ok(0)
        } else {
            self.history.expire(now)
        };
        match expired {
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

    /// Accepts up to [`ACCEPT_BUDGET`] connections from listener `i`; true when the budget ran
    /// out before the backlog was empty (no new readiness will be reported for what is left:
    /// accept again next turn).
    fn accept(&mut self, i: usize) -> bool {
        for _ in 0..ACCEPT_BUDGET {
            let Some(listener) = self.tcp.get(i) else {
                return false;
            };
            let (stream, peer) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    if !self.accept_stalled {
                        warn!(error = %e, "accept failed; retrying every {ACCEPT_RETRY:?}");
                        self.accept_stalled = true;
                    }
                    if !self.accept_retry.contains(&i) {
                        self.accept_retry.push(i);
                    }
                    return false;
                }
            };
            let ip = peer.ip();
            let mutual = self.cfg.tls.as_ref().is_some_and(TlsServer::mutual);
            let (policy, needs_certificate) = match self.cfg.access.admit(ip) {
                Admission::Allowed(types) => (types, false),
                Admission::NeedsCertificate if mutual => (QueryTypes::NONE, true),
                Admission::NeedsCertificate | Admission::Denied => {
                    info!(%peer, "connection refused: requestor not allowed");
                    self.count_refused(Refused::Acl);
                    continue;
                }
            };
            if self.conns.len() >= self.cfg.max_connections {
                warn!(%peer, limit = self.cfg.max_connections, "connection refused: global limit");
                self.count_refused(Refused::GlobalLimit);
                continue;
            }
            let count = self.per_peer.entry(ip).or_insert(0);
            if *count >= self.cfg.max_connections_per_requestor {
                warn!(%peer, limit = self.cfg.max_connections_per_requestor, "connection refused: per-requestor limit");
                self.count_refused(Refused::RequestorLimit);
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
            if self.cfg.metrics.is_some() {
                conn.time_deliveries();
            }
            if let Some(tls) = &self.cfg.tls {
                // Admitted only for a certificate: TLS first, whatever the mode.
                let require = needs_certificate || tls.mode == crate::config::TlsMode::Require;
                conn.offer_tls(Arc::clone(&tls.config), require);
            }
            conn.needs_certificate = needs_certificate;
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
            if let Some(m) = &self.cfg.metrics {
                m.accepted.fetch_add(1, Ordering::Relaxed);
            }
            entry.insert(conn);
        }
        true
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
            if let Some(m) = &self.cfg.metrics {
                let status = match verdict {
                    UdpAnswer::Reply => Some(crate::codec::Status::Success),
                    UdpAnswer::Refused(status, _) => Some(status),
                    UdpAnswer::Drop(_) => None,
                };
                if let Some(status) = status {
                    let query_type = crate::codec::MessageRepr::parse(datagram)
                        .ok()
                        .and_then(|msg| msg.options.lq_query().map(|q| q.query_type));
                    let mut t = crate::engine::tally::Tally::default();
                    t.outcome(crate::engine::tally::QueryMessage::Udp, query_type, status);
                    m.add(&t);
                    m.sent_udp.fetch_add(out.len() as u64, Ordering::Relaxed);
                }
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
        let mut obs = self.cfg.metrics.is_some().then_some(Observe {
            arrivals: &self.arrivals,
            turn: &mut self.turn,
        });
        let served = conn.service(&ctx, &mut self.cache, &self.cfg, obs.as_mut());
        if let Some(m) = self.cfg.metrics.as_deref() {
            m.encoded.store(self.cache.built(), Ordering::Relaxed);
        }
        let served = match served {
            Ok(more) if conn.to_identify().is_some() => self.identify(key).map(|()| more),
            other => other,
        };
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        match served {
            Ok(more) => {
                // Queries started this turn: wake the connection for what they read.
                let queries = conn.active_queries();
                for q in queries.get(conn.watched..).unwrap_or_default() {
                    self.watchers.watch(q, key, self.history.postings());
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
        conn.take_counts(&mut self.turn);
        conn.close_tls();
        if let Some(index) = conn.table {
            if let Some(n) = self.per_table.get_mut(&index) {
                *n = n.saturating_sub(1);
            }
        }
        let queries = conn.active_queries();
        for q in queries.get(..conn.watched).unwrap_or(queries) {
            if let Some(k) = self.watchers.unwatch(q, key, self.history.postings()) {
                self.history.unwatched(&k);
            }
        }
        let _ = self.poll.registry().deregister(&mut conn.stream);
        if conn::is_fault(reason) {
            warn!(peer = %conn.peer, reason, "connection closed");
        } else {
            info!(peer = %conn.peer, reason, "connection closed");
        }
        self.release_peer(conn.peer.ip());
        if let Some(m) = &self.cfg.metrics {
            m.closed.fetch_add(1, Ordering::Relaxed);
            if reason.starts_with("TLS handshake failed")
                || reason.starts_with("certificate matches no")
                || reason.starts_with("no client certificate")
            {
                m.refused(Refused::Tls);
            } else if reason.starts_with("per-requestor limit") {
                m.refused(Refused::RequestorLimit);
            }
            if self.closed.len() >= CLOSED_KEPT {
                self.closed.pop_front();
            }
            self.closed.push_back(ClosedView {
                peer: conn.peer.to_string(),
                closed_at: metrics::unix_now(),
                reason: reason.to_owned(),
            });
        }
    }

    /// Adds what the connections did since the last call to the metrics (without metrics,
    /// forgets it).
    fn count_turn(&mut self) {
        if let Some(m) = &self.cfg.metrics {
            m.add(&self.turn.tally);
            m.fanout.add_turn(&mut self.turn.fanout);
            m.loop_turns.add_turn(&mut self.turn.loop_turns);
            if self.turn.sent_tcp > 0 {
                m.sent_tcp.fetch_add(self.turn.sent_tcp, Ordering::Relaxed);
            }
        }
        self.turn.sent_tcp = 0;
        self.turn.tally.clear();
    }

    /// Takes every connection's counts (once a second: the counters are at most that old),
    /// and adds them to the metrics.
    fn take_counts(&mut self) {
        for (_, c) in &mut self.conns {
            c.take_counts(&mut self.turn);
        }
        self.count_turn();
    }

    fn count_refused(&self, why: Refused) {
        if let Some(m) = &self.cfg.metrics {
            m.refused(why);
        }
    }

    /// Builds the snapshot the metrics endpoint serves: connections by state, every query's
    /// lag, the most lagged requestors, the journal and the store.
    fn publish_snapshot(&mut self) {
        let Some(metrics) = self.cfg.metrics.clone() else {
            return;
        };
        if !metrics.wanted() {
            return;
        }
        let mut snap = Snapshot::now();
        let now = self.now(server_time());
        let history = &self.history;
        let mut by_requestor: HashMap<String, (u64, u64)> = HashMap::new();
        for (_, c) in &self.conns {
            let session = c.session();
            let state = if c.handshaking_for().is_some() {
                0
            } else if session.has_active() {
                3
            } else if session.bulk_running() > 0 {
                2
            } else {
                1
            };
            if let Some(n) = snap.connections.get_mut(state) {
                *n += 1;
            }
            let requestor = c
                .requestor_name
                .clone()
                .unwrap_or_else(|| c.peer.ip().to_string());
            let mut queries = Vec::new();
            let mut conn_lag = 0u64;
            for q in session.active_queries() {
                snap.active_queries += 1;
                let (lag, oldest) = q.lag(history);
                snap.observe_lag(&metrics, lag);
                conn_lag = conn_lag.max(lag);
                queries.push(QueryView {
                    xid: format!("{:#08x}", q.xid().value()),
                    kind: "active",
                    query_type: metrics::query_type_label(
                        q.filter().map(crate::engine::query::Selector::query_type),
                    ),
                    running_since: unix_of(q.started()),
                    state: if q.catching_up() {
                        "catching_up"
                    } else {
                        "live"
                    },
                    lag_records: lag,
                    lag_seconds: oldest.map_or(0, |t| u64::from(now.0.saturating_sub(t.0))),
                });
            }
            for a in session.bulk_answers() {
                queries.push(QueryView {
                    xid: format!("{:#08x}", a.query().xid.value()),
                    kind: "bulk",
                    query_type: metrics::query_type_label(Some(a.query().selector.query_type())),
                    running_since: a.started().map_or(0, unix_of),
                    state: "answering",
                    lag_records: 0,
                    lag_seconds: 0,
                });
            }
            let e = by_requestor.entry(requestor.clone()).or_insert((0, 0));
            e.0 = e.0.max(conn_lag);
            e.1 += 1;
            snap.conns.push(ConnView {
                peer: c.peer.to_string(),
                requestor,
                tls: c.certificate.clone().map(|certificate| TlsView {
                    certificate: Some(certificate),
                }),
                connected_since: c.connected_since,
                bytes_sent: c.written,
                bytes_buffered: u64::try_from(c.buffered()).unwrap_or(u64::MAX),
                queries,
            });
        }
        let mut requestors: Vec<RequestorLag> = by_requestor
            .into_iter()
            .map(|(requestor, (lag_records, connections))| RequestorLag {
                requestor,
                lag_records,
                connections,
            })
            .collect();
        requestors.sort_by(|a, b| {
            b.lag_records
                .cmp(&a.lag_records)
                .then_with(|| a.requestor.cmp(&b.requestor))
        });
        let cap = metrics.requestor_series();
        snap.requestors_dropped = requestors.len().saturating_sub(cap) as u64;
        requestors.truncate(cap);
        snap.requestors = requestors;
        let journal = history.journal();
        snap.journal = metrics::JournalView {
            size: journal.capacity() as u64,
            used: journal.used_bytes() as u64,
            oldest_unix: journal.oldest_time().map_or(0, unix_of),
            head_seq: journal.next_seq(),
        };
        let store = history.store();
        snap.bindings = store.len() as u64;
        let (a, p) = store.lease_counts();
        snap.leases = (a as u64, p as u64);
        snap.closed = self.closed.clone();
        metrics
            .flushes
            .store(self.history.log_mut().flushes(), Ordering::Relaxed);
        metrics.publish(snap);
    }

    /// Notes when the records from `before` on arrived (for the fan-out latency), and counts
    /// the appends.
    fn note_arrivals(&mut self, before: u64) {
        let Some(metrics) = &self.cfg.metrics else {
            return;
        };
        let next = self.history.journal().next_seq();
        metrics
            .appends
            .store(next.saturating_sub(self.first_seq), Ordering::Relaxed);
        if next == before {
            return;
        }
        let now = Instant::now();
        self.arrivals.push_back((before, now));
        while self.arrivals.len() > ARRIVALS_KEPT
            || self
                .arrivals
                .front()
                .is_some_and(|(_, at)| now.saturating_duration_since(*at) > ARRIVAL_AGE)
        {
            self.arrivals.pop_front();
        }
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
        let handshake = self
            .cfg
            .tls
            .as_ref()
            .map_or(Duration::MAX, |t| t.settings.handshake_timeout);
        let stale: Vec<(usize, &'static str)> = self
            .conns
            .iter()
            .filter_map(|(k, c)| {
                if c.handshaking_for().is_some_and(|t| t >= handshake) {
                    Some((k, "TLS handshake not finished within tls.handshake_timeout"))
                } else if c.has_active() {
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
        let now = self.now(server_time());
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
            return Ok(());
        }
        self.write_snapshot();
        Ok(())
    }

    /// Writes the snapshot of the mirror beside the journal (D43), so that the next start
    /// replays only the records after it; logs how long it took and its size.
    fn write_snapshot(&self) {
        let path = snapshot::path_for(&self.cfg.journal.path);
        let started = Instant::now();
        match self.history.write_snapshot(&path) {
            Ok(Some(w)) => info!(
                snapshot = %path.display(),
                covered = w.covered,
                bindings = w.bindings,
                octets = w.octets,
                seconds = %format!("{:.2}", started.elapsed().as_secs_f64()),
                "snapshot written"
            ),
            Ok(None) => {}
            Err(e) => warn!(
                snapshot = %path.display(),
                "snapshot not written ({e}); the next start replays the whole journal"
            ),
        }
    }
}

/// Unix time of a server time (seconds since 2000-01-01 UTC).
fn unix_of(t: ServerTime) -> u64 {
    u64::from(t.0).saturating_add(946_684_800)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A server on a free port of `[::1]` with a small journal in `dir`.
    fn server(dir: &std::path::Path) -> Server {
        let config = crate::config::Config::default();
        let live = Live::from_config(&config, LinkMap::default()).expect("default settings");
        let journal = JournalSettings {
            path: dir.join("journal"),
            size: 1 << 20,
            flush: FlushPolicy::Os,
            catch_up_window: None,
        };
        let listen = vec![SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0))];
        let mut cfg =
            ServerConfig::new(listen, vec![0, 3, 0, 1, 1, 2, 3, 4, 5, 6], 0, journal, live);
        cfg.max_connections = 1000;
        cfg.max_connections_per_requestor = 1000;
        Server::bind(cfg).expect("bind")
    }

    /// A reconnect storm is accepted over several turns, at most [`ACCEPT_BUDGET`] connections
    /// a turn, so the live streams are served between them (issue 19); the listener says when
    /// its backlog is not empty yet, and nothing is lost (D47).
    #[test]
    fn a_reconnect_storm_is_accepted_a_budget_a_turn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = server(dir.path());
        let addr = server.local_addrs().expect("addrs")[0];
        let storm = ACCEPT_BUDGET * 3 + 5;
        let clients: Vec<_> = (0..storm)
            .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
            .collect();
        let mut turns = Vec::new();
        loop {
            let before = server.conns.len();
            let more = server.accept(0);
            turns.push(server.conns.len() - before);
            if !more {
                break;
            }
            assert!(turns.len() <= 10, "accepting did not end: {turns:?}");
        }
        assert_eq!(
            turns,
            [ACCEPT_BUDGET, ACCEPT_BUDGET, ACCEPT_BUDGET, 5],
            "connections accepted each turn"
        );
        assert_eq!(server.conns.len(), clients.len());
    }
}
