//! What operators see (issue 16, docs/metrics.md): counters the event loop adds to, a
//! snapshot it publishes once a second, and the HTTP side that serves both as Prometheus text
//! (`GET /metrics`) and JSON (`GET /requestors`) on its own thread.
//!
//! The loop never waits for the HTTP side: counters are atomics (relaxed: a scrape needs no
//! consistency between them), which the loop adds to in batches (connections' counts once a
//! second, fan-out latencies once a turn: see `conn::Turn`), and the snapshot is swapped in
//! with `try_lock`, skipped for a second in the rare turn where a scrape is cloning it.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use serde::Serialize;
use tracing::{debug, info, warn};

use crate::codec::{QueryType, Status};
use crate::engine::tally::{QueryMessage, Tally};

/// Why a connection was refused, as `lqd_connections_refused_total{reason}` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The address is not allowed.
    Acl = 0,
    /// `max_connections`.
    GlobalLimit = 1,
    /// `max_connections_per_requestor`, or a certificate table's `max_connections`.
    RequestorLimit = 2,
    /// TLS: the handshake failed, or no certificate table matched.
    Tls = 3,
}

const REFUSED: [&str; 4] = ["acl", "global_limit", "requestor_limit", "tls"];
const MESSAGES: [&str; 3] = ["leasequery", "activeleasequery", "udp"];
const QUERY_TYPES: [&str; 7] = [
    "all",
    "address",
    "client-id",
    "relay-id",
    "link-address",
    "remote-id",
    "unknown",
];
const STATUSES: [&str; 10] = [
    "success",
    "unknown-query-type",
    "malformed-query",
    "not-configured",
    "not-allowed",
    "query-terminated",
    "data-missing",
    "not-supported",
    "catch-up-complete",
    "other",
];

fn message_index(m: QueryMessage) -> usize {
    match m {
        QueryMessage::Leasequery => 0,
        QueryMessage::Active => 1,
        QueryMessage::Udp => 2,
    }
}

fn query_type_index(t: Option<QueryType>) -> usize {
    match t {
        None => 0,
        Some(QueryType::ByAddress) => 1,
        Some(QueryType::ByClientId) => 2,
        Some(QueryType::ByRelayId) => 3,
        Some(QueryType::ByLinkAddress) => 4,
        Some(QueryType::ByRemoteId) => 5,
        Some(_) => 6,
    }
}

fn status_index(s: Status) -> usize {
    match s {
        Status::Success => 0,
        Status::UnknownQueryType => 1,
        Status::MalformedQuery => 2,
        Status::NotConfigured => 3,
        Status::NotAllowed => 4,
        Status::QueryTerminated => 5,
        Status::DataMissing => 6,
        Status::NotSupported => 7,
        Status::CatchUpComplete => 8,
        _ => 9,
    }
}

/// Upper bounds of the fan-out latency buckets, in seconds.
const LATENCY_BOUNDS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// [`LATENCY_BOUNDS`] in nanoseconds, for [`LatencyTally`].
const LATENCY_BOUNDS_NS: [u64; 16] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Fan-out latencies observed during one turn of the loop, in plain integers: the loop adds
/// them to [`Metrics`]' histogram once a turn ([`AtomicHistogram::add_turn`]) instead of
/// once a write.
#[derive(Debug, Default)]
pub(super) struct LatencyTally {
    counts: [u64; LATENCY_BOUNDS_NS.len()],
    sum_ns: u64,
    count: u64,
}

impl LatencyTally {
    /// Counts `n` deliveries that took `nanos`.
    pub(super) fn observe(&mut self, nanos: u64, n: u64) {
        if let Some(i) = LATENCY_BOUNDS_NS.iter().position(|b| nanos <= *b) {
            if let Some(c) = self.counts.get_mut(i) {
                *c = c.saturating_add(n);
            }
        }
        self.sum_ns = self.sum_ns.saturating_add(nanos.saturating_mul(n));
        self.count = self.count.saturating_add(n);
    }
}

/// Upper bounds of the lag buckets, in journal records.
const LAG_BOUNDS: [f64; 12] = [
    0.0, 1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0, 1e6, 1e7, 1e8, 1e9, 1e10,
];

/// A histogram the loop observes into without a lock: a counter per bucket.
#[derive(Debug)]
pub struct AtomicHistogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// The sum in nanoseconds (latencies) or units (lags).
    sum: AtomicU64,
    count: AtomicU64,
    /// The sum's unit in the exposition: 1e-9 for nanoseconds, 1 for plain counts.
    scale: f64,
}

impl AtomicHistogram {
    fn new(bounds: &'static [f64], scale: f64) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
            scale,
        }
    }

    /// Counts `n` observations of `raw` (in the sum's unit).
    pub fn observe(&self, raw: u64, n: u64) {
        let v = raw as f64 * self.scale;
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            if let Some(c) = self.counts.get(i) {
                c.fetch_add(n, Ordering::Relaxed);
            }
        }
        self.sum.fetch_add(raw.saturating_mul(n), Ordering::Relaxed);
        self.count.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds a turn's latencies (kept in nanoseconds, as this histogram's sum is) and empties
    /// them.
    pub(super) fn add_turn(&self, t: &mut LatencyTally) {
        if t.count == 0 {
            return;
        }
        for (c, n) in self.counts.iter().zip(&mut t.counts) {
            if *n > 0 {
                c.fetch_add(std::mem::take(n), Ordering::Relaxed);
            }
        }
        self.sum
            .fetch_add(std::mem::take(&mut t.sum_ns), Ordering::Relaxed);
        self.count
            .fetch_add(std::mem::take(&mut t.count), Ordering::Relaxed);
    }

    fn proto(&self) -> Histogram {
        let mut h = Histogram::default();
        let mut cumulative = 0u64;
        let mut buckets = Vec::with_capacity(self.bounds.len());
        for (bound, c) in self.bounds.iter().zip(&self.counts) {
            cumulative = cumulative.saturating_add(c.load(Ordering::Relaxed));
            let mut b = Bucket::default();
            b.set_upper_bound(*bound);
            b.set_cumulative_count(cumulative);
            buckets.push(b);
        }
        h.set_bucket(buckets);
        h.set_sample_count(self.count.load(Ordering::Relaxed));
        h.set_sample_sum(self.sum.load(Ordering::Relaxed) as f64 * self.scale);
        h
    }
}

/// The counters the event loop adds to, shared with the HTTP thread.
#[derive(Debug)]
pub struct Metrics {
    pub(super) accepted: AtomicU64,
    pub(super) refused: [AtomicU64; 4],
    pub(super) closed: AtomicU64,
    queries: Vec<AtomicU64>,
    starttls: [AtomicU64; 2],
    catch_ups_started: AtomicU64,
    catch_ups_completed: AtomicU64,
    data_missing: AtomicU64,
    deliveries: AtomicU64,
    coalesced: AtomicU64,
    /// Active messages built by the encode-once cache (its misses): the loop stores the
    /// cache's count after each connection's turn.
    pub(super) encoded: AtomicU64,
    pub(super) appends: AtomicU64,
    pub(super) flushes: AtomicU64,
    pub(super) sent_tcp: AtomicU64,
    pub(super) sent_udp: AtomicU64,
    pub(super) feed_received: AtomicU64,
    pub(super) feed_applied: AtomicU64,
    /// Lines or rows the source skipped; the source's thread adds to it.
    pub feed_rejected: Arc<AtomicU64>,
    /// File sources: octets not read yet (set by the source's thread).
    pub source_lag_bytes: Arc<AtomicU64>,
    /// File sources: the newest row's Unix time (set by the source's thread); 0 when unknown.
    pub source_newest_time: Arc<AtomicU64>,
    /// The source's name, for the `source` label.
    source: Mutex<String>,
    pub(super) fanout: AtomicHistogram,
    /// The loop's turns, by how long each took.
    pub(super) loop_turns: AtomicHistogram,
    /// Every Active query's lag, observed once a second while snapshots are built: cumulative,
    /// as a Prometheus histogram must be (`rate()` of its buckets gives the lag's distribution
    /// over a window).
    lag: AtomicHistogram,
    snapshot: Mutex<Arc<Snapshot>>,
    /// When a scrape last read the snapshot (milliseconds since `epoch`): the loop builds
    /// snapshots only while someone reads them.
    last_read: AtomicU64,
    epoch: Instant,
    /// The cap on per-requestor series (`metrics_requestor_series`, changed by a reload).
    requestor_series: AtomicUsize,
}

impl Metrics {
    /// New counters; `requestor_series` caps the per-requestor series.
    #[must_use]
    pub fn new(requestor_series: usize) -> Self {
        Self {
            accepted: AtomicU64::new(0),
            refused: Default::default(),
            closed: AtomicU64::new(0),
            queries: (0..MESSAGES.len() * QUERY_TYPES.len() * STATUSES.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            starttls: Default::default(),
            catch_ups_started: AtomicU64::new(0),
            catch_ups_completed: AtomicU64::new(0),
            data_missing: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
            encoded: AtomicU64::new(0),
            appends: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            sent_tcp: AtomicU64::new(0),
            sent_udp: AtomicU64::new(0),
            feed_received: AtomicU64::new(0),
            feed_applied: AtomicU64::new(0),
            feed_rejected: Arc::new(AtomicU64::new(0)),
            source_lag_bytes: Arc::new(AtomicU64::new(0)),
            source_newest_time: Arc::new(AtomicU64::new(0)),
            source: Mutex::new(String::new()),
            fanout: AtomicHistogram::new(&LATENCY_BOUNDS, 1e-9),
            loop_turns: AtomicHistogram::new(&LATENCY_BOUNDS, 1e-9),
            lag: AtomicHistogram::new(&LAG_BOUNDS, 1.0),
            snapshot: Mutex::new(Arc::new(Snapshot::default())),
            last_read: AtomicU64::new(0),
            epoch: Instant::now(),
            requestor_series: AtomicUsize::new(requestor_series),
        }
    }

    /// The cap on per-requestor series.
    #[must_use]
    pub fn requestor_series(&self) -> usize {
        self.requestor_series.load(Ordering::Relaxed)
    }

    /// Sets the cap on per-requestor series (a reload, D31).
    pub fn set_requestor_series(&self, cap: usize) {
        self.requestor_series.store(cap, Ordering::Relaxed);
    }

    /// The counters the source's thread sets (rejected rows, lag, newest row time), shared
    /// with these metrics: hand them to the source when starting it.
    #[must_use]
    pub fn source_stats(&self) -> crate::feed::SourceStats {
        crate::feed::SourceStats {
            rejected: Arc::clone(&self.feed_rejected),
            lag_bytes: Arc::clone(&self.source_lag_bytes),
            newest_time: Arc::clone(&self.source_newest_time),
        }
    }

    /// Names the source, for the `source` label.
    pub fn set_source(&self, name: &str) {
        if let Ok(mut s) = self.source.lock() {
            name.clone_into(&mut s);
        }
    }

    pub(super) fn refused(&self, why: Refused) {
        if let Some(c) = self.refused.get(why as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Adds what a session did.
    pub(super) fn add(&self, t: &Tally) {
        let add = |c: &AtomicU64, n: u64| {
            if n > 0 {
                c.fetch_add(n, Ordering::Relaxed);
            }
        };
        add(&self.deliveries, t.deliveries);
        add(&self.coalesced, t.coalesced);
        add(&self.data_missing, t.data_missing);
        add(&self.catch_ups_started, t.catch_ups_started);
        add(&self.catch_ups_completed, t.catch_ups_completed);
        add(&self.starttls[0], t.starttls_accepted);
        add(&self.starttls[1], t.starttls_refused);
        for o in &t.outcomes {
            let i = (message_index(o.message) * QUERY_TYPES.len() + query_type_index(o.query_type))
                * STATUSES.len()
                + status_index(o.status);
            if let Some(c) = self.queries.get(i) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// True when a scrape read the snapshot in the last minute: worth building another.
    pub(super) fn wanted(&self) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64;
        now.saturating_sub(self.last_read.load(Ordering::Relaxed)) < 60_000
    }

    /// Publishes a snapshot, unless a scrape holds the slot this instant (then the next
    /// second's does).
    pub(super) fn publish(&self, s: Snapshot) {
        if let Ok(mut slot) = self.snapshot.try_lock() {
            *slot = Arc::new(s);
        }
    }

    fn read_snapshot(&self) -> Arc<Snapshot> {
        self.last_read
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.snapshot
            .lock()
            .map_or_else(|p| Arc::clone(&p.into_inner()), |s| Arc::clone(&s))
    }

    /// The exposition in the Prometheus text format (0.0.4).
    #[must_use]
    pub fn render(&self) -> String {
        let snap = self.read_snapshot();
        let mut f = Families::default();
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        f.gauge(
            "lqd_build_info",
            "The running build (always 1).",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        );
        for (i, state) in ["handshake", "idle", "bulk", "active"].iter().enumerate() {
            f.gauge(
                "lqd_connections",
                "Open TCP connections by state.",
                &[("state", state)],
                snap.connections.get(i).copied().unwrap_or(0) as f64,
            );
        }
        f.counter(
            "lqd_connections_accepted_total",
            "TCP connections accepted.",
            &[],
            c(&self.accepted),
        );
        for (i, reason) in REFUSED.iter().enumerate() {
            f.counter(
                "lqd_connections_refused_total",
                "TCP connections refused, by reason.",
                &[("reason", reason)],
                self.refused.get(i).map_or(0.0, c),
            );
        }
        f.counter(
            "lqd_connections_closed_total",
            "TCP connections closed.",
            &[],
            c(&self.closed),
        );
        for (m, message) in MESSAGES.iter().enumerate() {
            for (q, qt) in QUERY_TYPES.iter().enumerate() {
                for (s, status) in STATUSES.iter().enumerate() {
                    let i = (m * QUERY_TYPES.len() + q) * STATUSES.len() + s;
                    let n = self.queries.get(i).map_or(0.0, c);
                    // Only the combinations that happened (and every success), so a scrape
                    // stays short.
                    if n > 0.0 || s == 0 {
                        f.counter(
                            "lqd_queries_total",
                            "Queries by message, query type and final status.",
                            &[("message", message), ("query_type", qt), ("status", status)],
                            n,
                        );
                    }
                }
            }
        }
        for (i, result) in ["accepted", "refused"].iter().enumerate() {
            f.counter(
                "lqd_starttls_total",
                "STARTTLS messages, accepted or refused.",
                &[("result", result)],
                self.starttls.get(i).map_or(0.0, c),
            );
        }
        f.gauge(
            "lqd_active_queries",
            "Active queries running.",
            &[],
            snap.active_queries as f64,
        );
        let counters = [
            (
                "lqd_active_catchups_started_total",
                "Active queries whose catch-up started.",
                &self.catch_ups_started,
            ),
            (
                "lqd_active_catchups_completed_total",
                "Catch-ups that ended with CatchUpComplete.",
                &self.catch_ups_completed,
            ),
            (
                "lqd_active_data_missing_total",
                "DataMissing sent.",
                &self.data_missing,
            ),
            (
                "lqd_active_deliveries_total",
                "Binding updates written into Active streams.",
                &self.deliveries,
            ),
            (
                "lqd_active_coalesced_total",
                "Journal records Active streams skipped because a newer record of the binding superseded them.",
                &self.coalesced,
            ),
            (
                "lqd_active_messages_encoded_total",
                "Active stream messages encoded; each is copied to every stream that carries it (encode-once).",
                &self.encoded,
            ),
            (
                "lqd_journal_appends_total",
                "Journal records appended.",
                &self.appends,
            ),
            (
                "lqd_journal_flushes_total",
                "Forced writes of the journal to disk.",
                &self.flushes,
            ),
        ];
        for (name, help, v) in counters {
            f.counter(name, help, &[], c(v));
        }
        f.histogram(
            "lqd_active_lag_records",
            "Per Active query: journal records between the next one it will send and the head.",
            self.lag.proto(),
        );
        f.gauge(
            "lqd_active_lag_records_max",
            "The largest Active query lag, in records.",
            &[],
            snap.lag_max as f64,
        );
        for r in &snap.requestors {
            f.gauge(
                "lqd_requestor_lag_records",
                "The most lagged requestors' lag, in records.",
                &[("requestor", &r.requestor)],
                r.lag_records as f64,
            );
            f.gauge(
                "lqd_requestor_connections",
                "The same requestors' connections.",
                &[("requestor", &r.requestor)],
                r.connections as f64,
            );
        }
        f.gauge(
            "lqd_requestor_series_dropped",
            "Requestors left out of the per-requestor series by metrics_requestor_series.",
            &[],
            snap.requestors_dropped as f64,
        );
        let j = &snap.journal;
        for (name, help, v) in [
            (
                "lqd_journal_size_bytes",
                "The journal's ring size.",
                j.size as f64,
            ),
            (
                "lqd_journal_used_bytes",
                "Octets the journal's records take.",
                j.used as f64,
            ),
            (
                "lqd_journal_oldest_record_timestamp_seconds",
                "Unix time of the journal's oldest record.",
                j.oldest_unix as f64,
            ),
            (
                "lqd_journal_head_sequence",
                "The next journal record's sequence number.",
                j.head_seq as f64,
            ),
            (
                "lqd_bindings",
                "Bindings (one client on one link).",
                snap.bindings as f64,
            ),
        ] {
            f.gauge(name, help, &[], v);
        }
        for (kind, n) in [("address", snap.leases.0), ("prefix", snap.leases.1)] {
            f.gauge(
                "lqd_leases",
                "Leases held, by kind.",
                &[("kind", kind)],
                n as f64,
            );
        }
        for (transport, v) in [("tcp", &self.sent_tcp), ("udp", &self.sent_udp)] {
            f.counter(
                "lqd_sent_bytes_total",
                "Octets written to requestors (TCP: before TLS).",
                &[("transport", transport)],
                c(v),
            );
        }
        let source = self.source.lock().map(|s| s.clone()).unwrap_or_default();
        let src = [("source", source.as_str())];
        f.counter(
            "lqd_feed_changes_received_total",
            "Changes the source handed to the loop.",
            &src,
            c(&self.feed_received),
        );
        f.counter(
            "lqd_feed_changes_applied_total",
            "Changes applied to the store and journaled.",
            &src,
            c(&self.feed_applied),
        );
        f.counter(
            "lqd_feed_changes_rejected_total",
            "Lines or rows the source skipped.",
            &src,
            c(&self.feed_rejected),
        );
        f.gauge(
            "lqd_source_lag_bytes",
            "File sources: octets between what was read and the end of the file.",
            &src,
            c(&self.source_lag_bytes),
        );
        f.gauge(
            "lqd_source_newest_row_timestamp_seconds",
            "File sources: the newest row's Unix time.",
            &src,
            c(&self.source_newest_time),
        );
        f.histogram(
            "lqd_fanout_latency_seconds",
            "From a change's arrival from the source to the write that puts it into an Active requestor's socket buffer (one journal record in 16 sampled).",
            self.fanout.proto(),
        );
        f.histogram(
            "lqd_loop_turn_seconds",
            "How long each turn of the event loop took, its wait for events excluded: a live change that arrives during a turn waits for it to end.",
            self.loop_turns.proto(),
        );
        f.gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            &[],
            resident_bytes() as f64,
        );
        let families = f.done();
        let mut out = String::new();
        if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&families, &mut out) {
            warn!("metrics: exposition failed: {e}");
        }
        out
    }

    /// `/requestors` as JSON.
    #[must_use]
    pub fn requestors_json(&self) -> String {
        let snap = self.read_snapshot();
        serde_json::to_string_pretty(&RequestorsView {
            taken_at_unix_s: (snap.taken_unix > 0).then_some(snap.taken_unix),
            connections: &snap.conns,
            recently_closed: &snap.closed,
        })
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

/// `/requestors`. Every point in time is Unix seconds in a field ending in `_unix_s`, the
/// convention of every JSON lqd and `lq` write.
#[derive(Serialize)]
struct RequestorsView<'a> {
    /// When the snapshot was taken; `null` before the loop published its first.
    taken_at_unix_s: Option<u64>,
    connections: &'a [ConnView],
    recently_closed: &'a VecDeque<ClosedView>,
}

/// Families in the order first named, each with its samples.
#[derive(Default)]
struct Families {
    families: Vec<MetricFamily>,
}

impl Families {
    fn family(&mut self, name: &str, help: &str, kind: MetricType) -> &mut MetricFamily {
        let at = match self.families.iter().position(|f| f.name() == name) {
            Some(i) => i,
            None => {
                let mut f = MetricFamily::default();
                f.set_name(name.to_owned());
                f.set_help(help.to_owned());
                f.set_field_type(kind);
                self.families.push(f);
                self.families.len() - 1
            }
        };
        &mut self.families[at]
    }

    fn sample(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        labels: &[(&str, &str)],
    ) -> &mut Metric {
        let family = self.family(name, help, kind);
        let mut m = Metric::default();
        m.set_label(
            labels
                .iter()
                .map(|(k, v)| {
                    let mut l = LabelPair::default();
                    l.set_name((*k).to_owned());
                    l.set_value((*v).to_owned());
                    l
                })
                .collect(),
        );
        family.mut_metric().push(m);
        family.mut_metric().last_mut().expect("just pushed")
    }

    fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], v: f64) {
        let mut c = Counter::default();
        c.set_value(v);
        self.sample(name, help, MetricType::COUNTER, labels)
            .set_counter(c);
    }

    fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], v: f64) {
        let mut g = Gauge::default();
        g.set_value(v);
        self.sample(name, help, MetricType::GAUGE, labels)
            .set_gauge(g);
    }

    fn histogram(&mut self, name: &str, help: &str, h: Histogram) {
        self.sample(name, help, MetricType::HISTOGRAM, &[])
            .set_histogram(h);
    }

    fn done(self) -> Vec<MetricFamily> {
        self.families
    }
}

/// lqd's resident memory, from /proc (0 where there is none).
fn resident_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages.saturating_mul(4096)
}

/// What the loop publishes once a second.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub(super) taken_unix: u64,
    /// Connections by state: handshake, idle, bulk, active.
    pub(super) connections: [u64; 4],
    pub(super) active_queries: u64,
    pub(super) lag_max: u64,
    pub(super) requestors: Vec<RequestorLag>,
    pub(super) requestors_dropped: u64,
    pub(super) journal: JournalView,
    pub(super) bindings: u64,
    pub(super) leases: (u64, u64),
    pub(super) conns: Vec<ConnView>,
    pub(super) closed: VecDeque<ClosedView>,
}

impl Snapshot {
    /// An empty snapshot taken now, for the loop to fill in.
    pub(super) fn now() -> Self {
        Self {
            taken_unix: unix_now(),
            ..Self::default()
        }
    }

    /// Counts one Active query's lag into `metrics`' histogram and this snapshot's maximum.
    pub(super) fn observe_lag(&mut self, metrics: &Metrics, records: u64) {
        metrics.lag.observe(records, 1);
        self.lag_max = self.lag_max.max(records);
    }
}

/// Seconds since the Unix epoch.
pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One requestor's per-requestor series.
#[derive(Debug, Clone)]
pub(super) struct RequestorLag {
    pub(super) requestor: String,
    pub(super) lag_records: u64,
    pub(super) connections: u64,
}

/// The journal's figures.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct JournalView {
    pub(super) size: u64,
    pub(super) used: u64,
    pub(super) oldest_unix: u64,
    pub(super) head_seq: u64,
}

/// One connection in `/requestors`.
#[derive(Debug, Clone, Serialize)]
pub(super) struct ConnView {
    pub(super) peer: String,
    pub(super) requestor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tls: Option<TlsView>,
    #[serde(rename = "connected_since_unix_s")]
    pub(super) connected_since: u64,
    pub(super) bytes_sent: u64,
    /// Octets written into lqd's buffer for the connection that its socket has not taken yet.
    pub(super) bytes_buffered: u64,
    pub(super) queries: Vec<QueryView>,
}

/// A connection's TLS identity.
#[derive(Debug, Clone, Serialize)]
pub(super) struct TlsView {
    pub(super) certificate: Option<String>,
}

/// One query in `/requestors`.
#[derive(Debug, Clone, Serialize)]
pub(super) struct QueryView {
    pub(super) xid: String,
    pub(super) kind: &'static str,
    pub(super) query_type: &'static str,
    #[serde(rename = "running_since_unix_s")]
    pub(super) running_since: u64,
    pub(super) state: &'static str,
    pub(super) lag_records: u64,
    pub(super) lag_seconds: u64,
}

/// A recently closed connection.
#[derive(Debug, Clone, Serialize)]
pub(super) struct ClosedView {
    pub(super) peer: String,
    #[serde(rename = "closed_at_unix_s")]
    pub(super) closed_at: u64,
    pub(super) reason: String,
}

/// The label of a query type in metrics and `/requestors`.
pub(super) fn query_type_label(t: Option<QueryType>) -> &'static str {
    QUERY_TYPES
        .get(query_type_index(t))
        .copied()
        .unwrap_or("unknown")
}

/// Connections the HTTP side serves at once; more are closed at once.
const HTTP_CONNECTIONS: usize = 16;
/// A request's head (request line and headers) may be this long.
const HTTP_HEAD_MAX: usize = 16 * 1024;
/// How long an HTTP connection may stay silent.
const HTTP_IDLE: Duration = Duration::from_secs(30);

/// The metrics listener's thread: serving until [`stop`](Self::stop)ped (a reload that moves or
/// ends `metrics_listen`, D31) or the process ends.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    /// The same socket as the thread's, to wake its `accept` by shutting it down.
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsServer {
    /// The address served.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and closes the listening socket (its port is free when this returns);
    /// HTTP connections already open finish their requests.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // On Linux a shutdown of a listening socket ends the `accept` blocked on it (EINVAL).
        if let Err(e) = socket2::SockRef::from(&self.listener).shutdown(std::net::Shutdown::Both) {
            warn!(addr = %self.addr, "metrics: cannot stop the listener: {e}");
            return;
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        info!(addr = %self.addr, "metrics: listener closed");
    }
}

/// Serves `/metrics` and `/requestors` on `listener`, a thread per connection (at most
/// [`HTTP_CONNECTIONS`]), until the returned server is stopped or the process ends.
pub fn serve(listener: TcpListener, metrics: Arc<Metrics>) -> io::Result<MetricsServer> {
    let addr = listener.local_addr()?;
    let handle = listener.try_clone()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("lqd-metrics".into())
        .spawn(move || {
            info!(%addr, "metrics: serving /metrics and /requestors");
            let open = Arc::new(AtomicUsize::new(0));
            for stream in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let stream = match stream {
                    Ok(s) => s,
                    Err(e) => {
                        warn!("metrics: accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                };
                let peer = stream
                    .peer_addr()
                    .map_or_else(|_| "unknown".into(), |a| a.to_string());
                if open.load(Ordering::Relaxed) >= HTTP_CONNECTIONS {
                    debug!(%peer, "metrics: too many HTTP connections; closed");
                    continue;
                }
                open.fetch_add(1, Ordering::Relaxed);
                let (metrics, open) = (Arc::clone(&metrics), Arc::clone(&open));
                let spawned = std::thread::Builder::new()
                    .name("lqd-metrics-conn".into())
                    .spawn(move || {
                        if let Err(why) = http_connection(stream, &metrics) {
                            debug!(%peer, "metrics: HTTP connection closed: {why}");
                        }
                        open.fetch_sub(1, Ordering::Relaxed);
                    });
                if spawned.is_err() {
                    warn!("metrics: cannot start a thread for an HTTP connection");
                }
            }
        })?;
    Ok(MetricsServer {
        addr,
        listener: handle,
        stop,
        thread: Some(thread),
    })
}

/// Binds the metrics listener (before the loop starts, so a bad address fails the start).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
}

/// One HTTP/1.1 connection: requests until the client closes, asks to close, sends something
/// that is not HTTP, or stays silent for [`HTTP_IDLE`].
fn http_connection(stream: TcpStream, metrics: &Metrics) -> Result<(), String> {
    stream
        .set_read_timeout(Some(HTTP_IDLE))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(HTTP_IDLE))
        .map_err(|e| e.to_string())?;
    // Each answer is written whole at once: nothing for Nagle's algorithm to gather.
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut head = Vec::new();
        // The head ends with an empty line.
        loop {
            let n = (&mut reader)
                .take((HTTP_HEAD_MAX - head.len().min(HTTP_HEAD_MAX)) as u64)
                .read_until(b'\n', &mut head)
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return if head.is_empty() {
                    Ok(())
                } else {
                    Err("closed in the middle of a request".into())
                };
            }
            if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
                break;
            }
            if head.len() >= HTTP_HEAD_MAX {
                respond(
                    &mut writer,
                    431,
                    "text/plain",
                    b"request head too long\n",
                    false,
                );
                return Err("request head too long".into());
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let parsed = req.parse(&head);
        if !matches!(parsed, Ok(httparse::Status::Complete(_))) {
            respond(&mut writer, 400, "text/plain", b"bad request\n", false);
            return Err(format!("not HTTP: {parsed:?}"));
        }
        let has_body = req.headers.iter().any(|h| {
            (h.name.eq_ignore_ascii_case("content-length")
                && std::str::from_utf8(h.value).map_or(true, |v| v.trim() != "0"))
                || h.name.eq_ignore_ascii_case("transfer-encoding")
        });
        let close = req.version == Some(0)
            || req.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close")
            });
        let path = req.path.unwrap_or("/");
        let path = path.split('?').next().unwrap_or(path);
        if has_body {
            respond(&mut writer, 400, "text/plain", b"no body expected\n", false);
            return Err("a request with a body".into());
        }
        let head_only = req.method == Some("HEAD");
        let (status, kind, body) = match (req.method, path) {
            (Some("GET" | "HEAD"), "/metrics") => (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                metrics.render().into_bytes(),
            ),
            (Some("GET" | "HEAD"), "/requestors") => (
                200,
                "application/json",
                metrics.requestors_json().into_bytes(),
            ),
            (Some("GET" | "HEAD"), "/") => (
                200,
                "text/plain",
                b"lqd: /metrics (Prometheus), /requestors (JSON)\n".to_vec(),
            ),
            (Some("GET" | "HEAD"), _) => (404, "text/plain", b"not found\n".to_vec()),
            _ => (405, "text/plain", b"only GET and HEAD\n".to_vec()),
        };
        let body = if head_only { Vec::new() } else { body };
        if !respond(&mut writer, status, kind, &body, !close) {
            return Err("write failed".into());
        }
        if close {
            return Ok(());
        }
    }
}

fn respond(w: &mut TcpStream, status: u16, kind: &str, body: &[u8], keep_alive: bool) -> bool {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    // One write: a head and a body written apart would leave the body waiting for the
    // client's delayed ACK of the head (Nagle's algorithm), some 40 ms a request.
    let mut answer = Vec::with_capacity(head.len() + body.len());
    answer.extend_from_slice(head.as_bytes());
    answer.extend_from_slice(body);
    w.write_all(&answer).is_ok() && w.flush().is_ok()
}
