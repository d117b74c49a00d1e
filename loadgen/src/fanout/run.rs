//! One measured run of one system: start the server, preload lqd's bindings (`--preload`),
//! connect the requestors, inject on the schedule, wait for every delivery (or the drain
//! timeout), and sum it up.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::changes::{Keys, LINK, LINK_PREFIX, Model, Schedule};
use super::inject::{self, InjectReport, JsonlSink, NatsSink, RedisSink};
use super::progress::Progress;
use super::raw::{Job, RawSender};
use super::receiver::{HIST_MAX_US, Plan, Protocol, Receivers, WorkerReport};
use super::sentinel::feed_journaled;
use super::{FanoutCommon, System};
use crate::nats::NatsServer;
use crate::process::{Lqd, ProcStats, own_cpu_secs, proc_stats, reset_peak};
use crate::redis::{RedisServer, raise_nofile};
use crate::summary::RunSummary;

/// Descriptors loadgen needs besides its connections.
const FD_MARGIN: u64 = 256;
/// Connections lqd may hold besides the requestors' (max_connections).
const LQD_CONN_MARGIN: usize = 64;
/// How often the driver looks at the receivers' counters.
const TICK: Duration = Duration::from_millis(10);

/// What a run works with.
pub(crate) struct Ctx<'a> {
    pub(crate) common: &'a FanoutCommon,
    pub(crate) progress: &'a Progress,
    pub(crate) model: Model,
    pub(crate) workers: usize,
    /// Create lqd's bindings before each live run's requestors subscribe (`--preload`).
    pub(crate) preload: bool,
}

impl<'a> Ctx<'a> {
    /// The context for `common`'s runs with each of `requestors` (checked against the
    /// filter's constraint on `--bindings`), lqd's live runs preloaded when `preload`.
    pub(crate) fn new(
        common: &'a FanoutCommon,
        progress: &'a Progress,
        requestors: &[u32],
        preload: bool,
    ) -> Result<Self, String> {
        common.check()?;
        let ctx = Self {
            common,
            progress,
            model: Model::new(common.bindings)?,
            workers: common.workers(),
            preload,
        };
        for &n in requestors {
            ctx.model_for(n as usize)?;
        }
        Ok(ctx)
    }

    /// The model of a run with `n` requestors: keyed by `--filter` over `n` keys, when given.
    pub(crate) fn model_for(&self, n: usize) -> Result<Model, String> {
        match self.common.filter {
            Some(kind) => {
                let count = u32::try_from(n).map_err(|_| format!("{n} requestors: too many"))?;
                self.model.keyed(Keys { kind, count })
            }
            None => Ok(self.model),
        }
    }

    /// The deliveries `changes` changes make to `n` requestors: one each filtered, `n` each
    /// otherwise.
    pub(crate) fn deliveries(&self, changes: u64, n: usize) -> u64 {
        if self.common.filter.is_some() {
            changes
        } else {
            changes * n as u64
        }
    }

    /// The run's filter, for its summary.
    pub(crate) fn filter_name(&self) -> Option<String> {
        self.common.filter.map(|f| f.name().to_owned())
    }
}

/// What a run found besides its summary.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Detail {
    pub(crate) system: &'static str,
    pub(crate) requestors: usize,
    pub(crate) rate: f64,
    /// Starting the server, connecting and starting every stream, seconds (the preload
    /// apart).
    pub(crate) setup_seconds: f64,
    /// lqd's bindings were created before the requestors subscribed (`--preload`).
    pub(crate) preloaded: bool,
    /// Writing every binding to lqd's feed until the sentinel requestor had them all, seconds.
    pub(crate) preload_seconds: Option<f64>,
    /// The worst lateness of a change's write behind its intended time, ms.
    pub(crate) inject_max_late_ms: f64,
    /// How late the last change was written, ms.
    pub(crate) inject_end_late_ms: f64,
    /// Every connection received every change before the drain timeout.
    pub(crate) complete: bool,
    /// Deliveries skipped because their binding changed again later (RFC 7653 coalescing
    /// of a requestor more than `--bindings` changes behind); not counted as lost.
    pub(crate) coalesced: u64,
    /// Latencies above 60 s, recorded as 60 s.
    pub(crate) clamped: u64,
    /// The raw sender's largest backlog, octets.
    pub(crate) raw_peak_backlog: Option<usize>,
    /// The raw sender's connections closed by their receiver, or left unfinished, when the
    /// receivers gave up at the drain timeout.
    pub(crate) raw_unfinished: Option<usize>,
    /// From starting the requestors (all at once, [`MAX_HANDSHAKES`] connecting at a time) to
    /// every one streaming (its query answered, its subscription confirmed), seconds.
    ///
    /// [`MAX_HANDSHAKES`]: super::receiver::MAX_HANDSHAKES
    pub(crate) connect_seconds: f64,
    /// The server's CPU time over those seconds.
    pub(crate) connect_server_cpu_secs: Option<f64>,
    /// Each requestor's time from its connect to its stream starting (under TLS: TCP,
    /// STARTTLS, the handshake and the query inside it), median and p99, ms.
    pub(crate) ready_p50_ms: Option<f64>,
    pub(crate) ready_p99_ms: Option<f64>,
    /// The requestors spoke TLS (system `lqd-tls`).
    pub(crate) tls: bool,
    /// What the scraper of lqd's metrics endpoint saw (system `lqd-metrics`).
    pub(crate) scrape: Option<crate::scrape::ScrapeReport>,
}

/// The connecting of a run's requestors, measured.
pub(crate) struct Connecting {
    started: Instant,
    pid: Option<u32>,
    before: Option<ProcStats>,
}

/// What [`Connecting`] measured.
pub(crate) struct Connected {
    pub(crate) took: Duration,
    pub(crate) server_cpu_secs: Option<f64>,
}

impl Connecting {
    /// Starts measuring, just before the receivers start.
    pub(crate) fn start(pid: Option<u32>) -> Result<Self, String> {
        Ok(Self {
            started: Instant::now(),
            pid,
            before: pid.map(proc_stats).transpose()?,
        })
    }

    /// Once every requestor is streaming.
    pub(crate) fn stop(self) -> Result<Connected, String> {
        let took = self.started.elapsed();
        let after = self.pid.map(proc_stats).transpose()?;
        Ok(Connected {
            took,
            server_cpu_secs: after.zip(self.before).map(|(a, b)| a.cpu_secs - b.cpu_secs),
        })
    }
}

/// The `q` quantile of `values` (sorted in place), none when empty.
fn quantile(values: &[Duration], q: f64) -> Option<Duration> {
    let mut v = values.to_vec();
    v.sort_unstable();
    let last = v.len().checked_sub(1)?;
    let i = ((last as f64) * q).round() as usize;
    v.get(i.min(last)).copied()
}

/// A run's results.
pub(crate) struct Outcome {
    pub(crate) summary: RunSummary,
    pub(crate) detail: Detail,
    pub(crate) failures: Vec<String>,
}

/// A started server.
pub(crate) enum Server {
    Lqd(Lqd, Option<std::os::unix::net::UnixStream>),
    Raw(RawSender),
    Redis(RedisServer),
    Nats(NatsServer),
}

impl Server {
    /// Starts `system` for `n` requestors; `journal_size` for lqd (octets), `job` for raw.
    pub(crate) fn start(
        ctx: &Ctx<'_>,
        system: System,
        n: usize,
        journal_size: Option<u64>,
        job: Job,
    ) -> Result<Self, String> {
        // The servers (the raw sender too) are processes of their own, with their own
        // descriptors; they inherit the limit raised here.
        let fds = n as u64 + FD_MARGIN;
        let got = raise_nofile(fds)?;
        if got < fds {
            return Err(format!(
                "{n} requestors on {} need {fds} open files, and RLIMIT_NOFILE stays at {got} \
                 (raising the hard limit needs root or CAP_SYS_RESOURCE)",
                system.name()
            ));
        }
        Ok(match system {
            System::Lqd | System::LqdTls | System::LqdMetrics => {
                let conns = n + LQD_CONN_MARGIN;
                let journal =
                    journal_size.map_or(String::new(), |s| format!("journal_size = {s}\n"));
                // Filtered, no configured links, so that lqd takes any link-address: with
                // links configured, a requestor asking for a link that has no binding yet (all
                // of them, before the first change) would be refused with NotConfigured.
                let links = match ctx.common.filter {
                    Some(_) => String::new(),
                    None => format!(
                        "\n[[link]]\naddress = \"{LINK}\"\nprefixes = [\"{LINK_PREFIX}\"]\n"
                    ),
                };
                // Under TLS, "offer": the measured requestors all send STARTTLS, and the
                // sentinel of `--preload` (not measured) stays in cleartext.
                let pki = match system {
                    System::LqdTls => Some(crate::tls::Pki::new()?),
                    _ => None,
                };
                let tls = pki.as_ref().map_or(String::new(), |p| p.lqd_table("offer"));
                // With metrics, a free port of [::1] for the endpoint (top-level keys go
                // before the tables).
                let metrics_addr = match system {
                    System::LqdMetrics => Some(crate::process::fresh_port()?),
                    _ => None,
                };
                let metrics =
                    metrics_addr.map_or(String::new(), |a| format!("metrics_listen = \"{a}\"\n"));
                let extra = format!(
                    "max_connections = {conns}\nmax_connections_per_requestor = {conns}\n\
                     {metrics}{journal}{links}{tls}"
                );
                let (mut lqd, feed) =
                    Lqd::start_jsonl(&ctx.common.lqd, ctx.common.keep_state, &extra)?;
                if let Some(pki) = pki {
                    lqd = lqd.with_tls(pki)?;
                }
                if let Some(addr) = metrics_addr {
                    lqd = lqd.with_metrics(addr)?;
                }
                Self::Lqd(lqd, Some(feed))
            }
            System::Raw => Self::Raw(RawSender::start(
                n,
                ctx.common.bindings,
                job,
                !ctx.common.raw_nagle,
                ctx.common.filter,
            )?),
            System::Redis => {
                let redis = RedisServer::start()?;
                eprintln!(
                    "loadgen: redis-server {} started for the Redis baseline",
                    redis.version()
                );
                if (redis.max_clients() as usize) < n + 1 {
                    return Err(format!(
                        "redis-server takes {} clients, fewer than {n} subscribers and a publisher",
                        redis.max_clients()
                    ));
                }
                Self::Redis(redis)
            }
            System::Nats => {
                let nats = NatsServer::start()?;
                eprintln!(
                    "loadgen: nats-server {} started for the NATS baseline",
                    nats.version()
                );
                Self::Nats(nats)
            }
        })
    }

    /// The requestors' TLS client configuration: lqd under `--tls` (system `lqd-tls`).
    pub(crate) fn tls_client(&self) -> Option<Arc<rustls::ClientConfig>> {
        match self {
            Self::Lqd(l, _) => l.tls_client(),
            _ => None,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        match self {
            Self::Lqd(l, _) => l.addr,
            Self::Raw(r) => r.addr(),
            Self::Redis(r) => r.addr(),
            Self::Nats(s) => s.addr(),
        }
    }

    pub(crate) const fn protocol(&self) -> Protocol {
        match self {
            Self::Lqd(..) => Protocol::Active,
            Self::Raw(_) => Protocol::Raw,
            Self::Redis(_) => Protocol::Redis,
            Self::Nats(_) => Protocol::Nats,
        }
    }

    /// The server process.
    pub(crate) fn pid(&self) -> Option<u32> {
        Some(match self {
            Self::Lqd(l, _) => l.pid(),
            Self::Raw(r) => r.pid(),
            Self::Redis(r) => r.pid(),
            Self::Nats(s) => s.pid(),
        })
    }

    /// An error when the server has gone.
    pub(crate) fn check_alive(&mut self) -> Result<(), String> {
        match self {
            Self::Lqd(l, _) => l.check_alive(),
            Self::Raw(r) => r.check_alive(),
            Self::Redis(r) => proc_stats(r.pid())
                .map(|_| ())
                .map_err(|e| format!("redis-server: {e}; log:\n{}", r.log_tail())),
            Self::Nats(s) => s.check_alive(),
        }
    }

    /// Failures the server logged (lqd's refused connections).
    pub(crate) fn logged_failures(&self) -> Vec<String> {
        match self {
            Self::Lqd(l, _) => {
                let refused = l.log_count("connection refused");
                let missing = l.log_count("DataMissing");
                let mut out = Vec::new();
                if refused > 0 {
                    out.push(format!("lqd refused {refused} connections (see its log)"));
                }
                if missing > 0 {
                    out.push(format!("lqd logged DataMissing {missing} times"));
                }
                out
            }
            _ => Vec::new(),
        }
    }
}

/// Waits until every requestor's handshake is done (and, for raw, every connection is
/// accepted).
pub(crate) fn wait_ready(
    server: &mut Server,
    receivers: &Receivers,
    n: usize,
    progress: &Progress,
) -> Result<(), String> {
    let limit = Duration::from_secs(30) + Duration::from_millis(3 * n as u64);
    let started = Instant::now();
    loop {
        let shared = &receivers.shared;
        let ready = shared.ready.load(Ordering::Acquire);
        progress.set(ready as u64);
        if shared.failed.load(Ordering::Acquire) > 0 {
            return Err(format!(
                "requestors failed while connecting: {}",
                shared.errors().join("; ")
            ));
        }
        let accepted = match server {
            Server::Raw(r) => r.accepted() >= n,
            _ => true,
        };
        if ready >= n && accepted {
            return Ok(());
        }
        server.check_alive()?;
        if started.elapsed() > limit {
            return Err(format!(
                "only {ready} of {n} requestors ready after {limit:?}; errors: {:?}",
                shared.errors()
            ));
        }
        std::thread::sleep(TICK);
    }
}

/// CPU and memory over a measured window.
pub(crate) struct Meter {
    pid: Option<u32>,
    before: Option<ProcStats>,
    own: f64,
    reset: bool,
}

/// What a [`Meter`] measured.
pub(crate) struct Usage {
    pub(crate) server_cpu_secs: Option<f64>,
    pub(crate) own_cpu_secs: f64,
    pub(crate) peak_rss_kib: Option<u64>,
}

impl Meter {
    /// Starts measuring `pid` (and loadgen), resetting its peak RSS.
    pub(crate) fn start(pid: Option<u32>) -> Result<Self, String> {
        let before = pid.map(proc_stats).transpose()?;
        let reset = pid.is_some_and(reset_peak);
        Ok(Self {
            pid,
            before,
            own: own_cpu_secs(),
            reset,
        })
    }

    pub(crate) fn stop(&self) -> Result<Usage, String> {
        let own_cpu_secs = own_cpu_secs() - self.own;
        let after = self.pid.map(proc_stats).transpose()?;
        Ok(Usage {
            server_cpu_secs: after.zip(self.before).map(|(a, b)| a.cpu_secs - b.cpu_secs),
            own_cpu_secs,
            // VmHWM since the reset; since the start when the kernel refused the reset.
            peak_rss_kib: after.map(|a| {
                if self.reset {
                    a.hwm_kib
                } else {
                    a.hwm_kib.max(a.rss_kib)
                }
            }),
        })
    }
}

/// The receivers' reports, merged.
pub(crate) struct Merged {
    pub(crate) latency: Histogram<u64>,
    pub(crate) clamped: u64,
    pub(crate) received: u64,
    pub(crate) lost: u64,
    pub(crate) coalesced: u64,
    pub(crate) duplicated: u64,
    pub(crate) misdelivered: u64,
    /// Ended leases received (releases: `loadgen pgsql`).
    pub(crate) released: u64,
    pub(crate) errors: Vec<String>,
    pub(crate) last_delivery: Option<Instant>,
    pub(crate) last_complete: Option<Instant>,
    /// Each requestor's catch-up time (connect to CatchUpComplete), where it had one.
    pub(crate) catch_up: Vec<Duration>,
    /// Each requestor's last base-time, by requestor number.
    pub(crate) base_times: Vec<Option<lqd::codec::ServerTime>>,
    /// Each requestor's time from connecting to streaming, where it got there.
    pub(crate) ready_after: Vec<Duration>,
}

pub(crate) fn merge(reports: Vec<WorkerReport>) -> Result<Merged, String> {
    let mut m = Merged {
        latency: Histogram::new_with_bounds(1, HIST_MAX_US, 3)
            .map_err(|e| format!("histogram: {e}"))?,
        clamped: 0,
        received: 0,
        lost: 0,
        coalesced: 0,
        duplicated: 0,
        misdelivered: 0,
        released: 0,
        errors: Vec::new(),
        last_delivery: None,
        last_complete: None,
        catch_up: Vec::new(),
        base_times: Vec::new(),
        ready_after: Vec::new(),
    };
    for r in reports {
        m.latency
            .add(&r.latency)
            .map_err(|e| format!("merging histograms: {e}"))?;
        m.clamped += r.clamped;
        m.last_delivery = m.last_delivery.max(r.last_delivery);
        m.last_complete = m.last_complete.max(r.last_complete);
        for c in r.conns {
            m.received += c.received;
            m.lost += c.lost;
            m.coalesced += c.coalesced;
            m.duplicated += c.duplicated;
            m.misdelivered += c.misdelivered;
            m.released += c.released;
            m.errors.extend(c.error);
            m.catch_up.extend(c.catch_up);
            m.ready_after.extend(c.ready_after);
            if m.base_times.len() <= c.requestor {
                m.base_times.resize(c.requestor + 1, None);
            }
            if let Some(b) = m.base_times.get_mut(c.requestor) {
                *b = c.base_time;
            }
        }
    }
    Ok(m)
}

/// Percentiles of `h` as (p50, p90, p99, p99.9, max), µs.
pub(crate) fn percentiles(h: &Histogram<u64>) -> [f64; 5] {
    if h.is_empty() {
        return [0.0; 5];
    }
    [
        h.value_at_quantile(0.50) as f64,
        h.value_at_quantile(0.90) as f64,
        h.value_at_quantile(0.99) as f64,
        h.value_at_quantile(0.999) as f64,
        h.max() as f64,
    ]
}

/// Percent of one core: `secs` of CPU over `window`.
pub(crate) fn pct(secs: f64, window: Duration) -> f64 {
    let w = window.as_secs_f64();
    if w > 0.0 { 100.0 * secs / w } else { 0.0 }
}

/// CPU per change, µs: `secs` of CPU over `changes` changes.
pub(crate) fn us_per_change(secs: f64, changes: u64) -> f64 {
    if changes > 0 {
        secs * 1e6 / changes as f64
    } else {
        0.0
    }
}

/// The failures of merged reports: lost, duplicated and misdelivered deliveries (of
/// `expected`), and the first few errors, each prefixed with `label`.
pub(crate) fn delivery_failures(m: &Merged, expected: u64, label: &str) -> Vec<String> {
    let mut out = Vec::new();
    if m.lost > 0 {
        out.push(format!("{label}: {} of {expected} deliveries lost", m.lost));
    }
    if m.duplicated > 0 {
        out.push(format!("{label}: {} deliveries duplicated", m.duplicated));
    }
    if m.misdelivered > 0 {
        out.push(format!(
            "{label}: {} changes delivered to a requestor that did not ask for their key",
            m.misdelivered
        ));
    }
    out.extend(m.errors.iter().take(5).map(|e| format!("{label}: {e}")));
    out
}

/// The failures a run's scrapes show: failed requests, and (when `exact`: every delivery made,
/// no preload's sentinel among the streams) lqd's delivery counter against what the
/// requestors received.
fn scrape_failures(
    s: &crate::scrape::ScrapeReport,
    m: &Merged,
    exact: bool,
    label: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    if s.failures > 0 {
        out.push(format!(
            "{label}: {} of {} scrapes failed: {}",
            s.failures,
            s.scrapes,
            s.errors.join("; ")
        ));
    }
    if exact && s.deliveries_counter != Some(m.received) {
        out.push(format!(
            "{label}: lqd_active_deliveries_total is {:?} after the run, the requestors received {}",
            s.deliveries_counter, m.received
        ));
    }
    out
}

/// One live run: `system` with `n` requestors, changes at `rate` a second for `seconds`.
pub(crate) fn live(
    ctx: &Ctx<'_>,
    system: System,
    n: usize,
    rate: f64,
    seconds: f64,
    mode: &str,
) -> Result<Outcome, String> {
    let total = (rate * seconds).round().max(1.0) as u64;
    let preloaded = ctx.preload && system.is_lqd();
    let mut model = ctx.model_for(n)?;
    if preloaded {
        model.after(1).check_changes(total)?;
    } else {
        model.check_changes(total)?;
    }
    let label = format!("{} N={n} {rate}/s", system.name());
    ctx.progress
        .stage(&format!("{label}: connecting"), n as u64);
    let setup = Instant::now();
    let mut server = Server::start(ctx, system, n, None, Job::Live)?;
    let preload = if preloaded {
        let took = preload_bindings(ctx, &mut server, model, &label)?;
        // The measured changes renew the preloaded bindings: generation 1 on.
        model = model.after(1);
        Some(took)
    } else {
        None
    };
    let connecting = Connecting::start(server.pid())?;
    let receivers = Receivers::start(
        Plan {
            addr: server.addr(),
            protocol: server.protocol(),
            model,
            requestors: n,
            expected: total,
            filtered: model.keys().is_some(),
            start_times: None,
            catch_up: false,
            tls: server.tls_client(),
        },
        ctx.workers,
    )?;
    let measured = wait_ready(&mut server, &receivers, n, ctx.progress)
        .and_then(|()| connecting.stop())
        .and_then(|c| {
            let m = measure(ctx, &mut server, &receivers, model, rate, total, &label)?;
            Ok((c, m))
        });
    let reports = receivers.finish();
    let mut failures = server.logged_failures();
    let scrape = match &mut server {
        Server::Lqd(lqd, _) => lqd.finish_scraping().transpose()?,
        _ => None,
    };
    let (mut raw_peak_backlog, mut raw_unfinished) = (None, None);
    let (connected, m) = measured?;
    let inject = match server {
        Server::Raw(raw) => {
            let r = raw.finish()?;
            raw_peak_backlog = Some(r.peak_backlog);
            raw_unfinished = Some(r.closed + r.unfinished);
            InjectReport {
                written: total,
                max_late: r.max_late,
                end_late: r.end_late,
            }
        }
        _ => m.inject.ok_or("the injector did not report")?,
    };
    let merged = merge(reports?)?;
    let [p50, p90, p99, p999, max] = percentiles(&merged.latency);
    // Deliveries per second over the time they took: from the first change's intended time
    // to the last delivery.
    let busy = merged
        .last_delivery
        .map_or(m.window, |t| t.saturating_duration_since(m.t0));
    failures.extend(delivery_failures(&merged, ctx.deliveries(total, n), &label));
    if let Some(s) = &scrape {
        failures.extend(scrape_failures(
            s,
            &merged,
            m.complete && !preloaded,
            &label,
        ));
    }
    if inject.written != total {
        failures.push(format!(
            "{label}: {} of {total} changes injected",
            inject.written
        ));
    }
    let summary = RunSummary {
        system: system.name().to_owned(),
        mode: mode.to_owned(),
        filter: ctx.filter_name(),
        requestors: n,
        rate,
        seconds: busy.as_secs_f64(),
        changes: total,
        deliveries: merged.received,
        deliveries_per_sec: crate::report::rate(merged.received, busy),
        lost: merged.lost,
        duplicated: merged.duplicated,
        misdelivered: merged.misdelivered,
        p50_us: p50,
        p90_us: p90,
        p99_us: p99,
        p999_us: p999,
        max_us: max,
        server_cpu_pct: m.usage.server_cpu_secs.map(|s| pct(s, m.window)),
        server_cpu_us_per_change: m.usage.server_cpu_secs.map(|s| us_per_change(s, total)),
        loadgen_cpu_pct: pct(m.usage.own_cpu_secs, m.window),
        server_peak_rss_kib: m.usage.peak_rss_kib,
    };
    let detail = Detail {
        system: system.name(),
        requestors: n,
        rate,
        setup_seconds: m
            .t0
            .saturating_duration_since(setup)
            .saturating_sub(preload.unwrap_or_default())
            .as_secs_f64(),
        preloaded,
        preload_seconds: preload.map(|d| d.as_secs_f64()),
        inject_max_late_ms: inject.max_late.as_secs_f64() * 1e3,
        inject_end_late_ms: inject.end_late.as_secs_f64() * 1e3,
        complete: m.complete,
        coalesced: merged.coalesced,
        clamped: merged.clamped,
        raw_peak_backlog,
        raw_unfinished,
        connect_seconds: connected.took.as_secs_f64(),
        connect_server_cpu_secs: connected.server_cpu_secs,
        ready_p50_ms: quantile(&merged.ready_after, 0.5).map(|d| d.as_secs_f64() * 1e3),
        ready_p99_ms: quantile(&merged.ready_after, 0.99).map(|d| d.as_secs_f64() * 1e3),
        tls: system == System::LqdTls,
        scrape,
    };
    let wrong = if model.keys().is_some() {
        format!(", misdelivered {}", merged.misdelivered)
    } else {
        String::new()
    };
    ctx.progress.println(&format!(
        "loadgen: {label}: {} deliveries, {:.0}/s, p50 {p50:.0} µs, p99 {p99:.0} µs, max {max:.0} µs, \
         lost {}, duplicated {}{wrong}",
        merged.received, summary.deliveries_per_sec, merged.lost, merged.duplicated
    ));
    Ok(Outcome {
        summary,
        detail,
        failures,
    })
}

/// Creates lqd's M bindings (`--bindings`): writes generation 0 of each (changes `0..M` of
/// `model`) to the feed as fast as lqd takes them, and waits until a sentinel requestor has
/// received every one, so lqd has journaled them all before the requestors subscribe. How
/// long it took.
fn preload_bindings(
    ctx: &Ctx<'_>,
    server: &mut Server,
    model: Model,
    label: &str,
) -> Result<Duration, String> {
    let m = u64::from(model.bindings());
    let stage = format!("{label}: preloading {m} bindings");
    let took = feed_journaled(ctx.progress, server, model, m, None, &stage)?;
    ctx.progress.println(&format!(
        "loadgen: {label}: preloaded {m} bindings in {:.3} s ({}/s), all journaled (a \
         sentinel requestor received them)",
        took.as_secs_f64(),
        crate::summary::number(crate::report::rate(m, took)),
    ));
    Ok(took)
}

/// What [`measure`] saw.
struct Measured {
    /// When change 0 was due.
    t0: Instant,
    /// From `t0` to the end of the wait.
    window: Duration,
    usage: Usage,
    /// The injector's report (none for the raw sender, which injects itself).
    inject: Option<InjectReport>,
    /// Every connection received everything.
    complete: bool,
}

/// The measured part of a live run of `total` changes at `rate` on `model`: from `t0` until
/// every connection is complete or the drain timeout.
fn measure(
    ctx: &Ctx<'_>,
    server: &mut Server,
    receivers: &Receivers,
    model: Model,
    rate: f64,
    total: u64,
    label: &str,
) -> Result<Measured, String> {
    let n = receivers.requestors();
    let shared = &receivers.shared;
    let t0 = Instant::now() + Duration::from_millis(20);
    let schedule = Schedule { t0, rate, total };
    if shared.schedule.set(schedule).is_err() {
        return Err("the schedule was set twice".to_owned());
    }
    let meter = Meter::start(server.pid())?;
    let abort = Arc::new(AtomicBool::new(false));
    let injector = match server {
        Server::Lqd(_, feed) => {
            let feed = feed.take().ok_or("lqd's feed socket is gone")?;
            Some(inject::spawn(
                Box::new(JsonlSink::new(feed, model)),
                schedule,
                Arc::clone(&abort),
            )?)
        }
        Server::Raw(raw) => {
            raw.go(schedule)?;
            None
        }
        Server::Redis(redis) => {
            let publisher = TcpStream::connect(redis.addr())
                .map_err(|e| format!("connecting the publisher to redis-server: {e}"))?;
            // Filtered, each change's channel has its one subscriber.
            let subscribers = ctx.deliveries(1, n);
            Some(inject::spawn(
                Box::new(RedisSink::new(publisher, model, subscribers)?),
                schedule,
                Arc::clone(&abort),
            )?)
        }
        Server::Nats(nats) => {
            let publisher = TcpStream::connect(nats.addr())
                .map_err(|e| format!("connecting the publisher to nats-server: {e}"))?;
            Some(inject::spawn(
                Box::new(NatsSink::new(publisher, model)?),
                schedule,
                Arc::clone(&abort),
            )?)
        }
    };
    ctx.progress.stage(label, ctx.deliveries(total, n));
    let deadline = schedule.end() + Duration::from_secs_f64(ctx.common.drain_seconds);
    let waited = wait_complete(ctx.progress, server, receivers, n, deadline, label);
    let window = Instant::now().saturating_duration_since(t0);
    let usage = meter.stop()?;
    abort.store(true, Ordering::Relaxed);
    let inject = match injector {
        Some(h) => Some(
            h.join()
                .unwrap_or_else(|_| Err("the injector panicked".to_owned()))?,
        ),
        None => None,
    };
    Ok(Measured {
        t0,
        window,
        usage,
        inject,
        complete: waited?,
    })
}

/// Waits until every connection is complete (true) or has failed, or until `deadline`
/// (false), updating the progress bar.
pub(crate) fn wait_complete(
    progress: &Progress,
    server: &mut Server,
    receivers: &Receivers,
    n: usize,
    deadline: Instant,
    label: &str,
) -> Result<bool, String> {
    let shared = &receivers.shared;
    loop {
        progress.set(shared.deliveries.load(Ordering::Relaxed));
        let complete = shared.complete.load(Ordering::Acquire);
        let failed = shared.failed.load(Ordering::Acquire);
        if complete + failed >= n {
            return Ok(failed == 0);
        }
        if Instant::now() > deadline {
            progress.println(&format!(
                "loadgen: {label}: drain timeout with {complete} of {n} requestors complete"
            ));
            return Ok(false);
        }
        server.check_alive()?;
        std::thread::sleep(TICK);
    }
}

/// The report's sentence on `--preload` (whether lqd's population was created before its
/// requestors subscribed), with the preloads' durations from `details`.
pub(crate) fn preload_note(common: &FanoutCommon, preload: bool, details: &[Detail]) -> String {
    let m = crate::summary::number(f64::from(common.bindings));
    if !preload {
        return format!(
            "; population not preloaded: each lqd run starts empty, and its first {m} changes \
             (--bindings) create its bindings within the measured window (--preload creates \
             them before)"
        );
    }
    let took: Vec<f64> = details.iter().filter_map(|d| d.preload_seconds).collect();
    let range = match (
        took.iter().copied().reduce(f64::min),
        took.iter().copied().reduce(f64::max),
    ) {
        (Some(lo), Some(hi)) if hi - lo < 0.0005 => format!(" in {lo:.3} s"),
        (Some(lo), Some(hi)) => format!(" in {lo:.3} to {hi:.3} s a run"),
        _ => String::new(),
    };
    format!(
        "; population preloaded (--preload): before each lqd run's requestors subscribed, its \
         {m} bindings were written once to the feed and all journaled{range} (a sentinel \
         requestor received them), so each measured change renews a binding lqd holds (new \
         lifetimes) and is delivered live; raw and Redis keep no bindings: nothing preloaded"
    )
}

/// The connecting of each run's requestors, for the report: until every one was streaming,
/// connections (for `lqd-tls`: STARTTLS and TLS handshakes) a second, each requestor's own
/// time (p50, p99), and the server's CPU over it. Requestors are started all at once and
/// connect [`MAX_HANDSHAKES`] at a time.
///
/// [`MAX_HANDSHAKES`]: super::receiver::MAX_HANDSHAKES
pub(crate) fn connect_notes(details: &[Detail]) -> String {
    if details.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\nConnecting: all N requestors started at once (at most {} handshakes in flight), until \
         every one was streaming (its query answered in full: for lqd-tls, TCP, STARTTLS, the \
         TLS handshake and the ACTIVELEASEQUERY inside it; for redis and nats, the \
         subscription confirmed):\n\n\
         | system | N | rate/s | all streaming after | per second | per requestor p50 | p99 \
         | server CPU s |\n|---|--:|--:|--:|--:|--:|--:|--:|\n",
        super::receiver::MAX_HANDSHAKES
    );
    for d in details {
        let ms = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |m| format!("{m:.1} ms"));
        out.push_str(&format!(
            "| {} | {} | {} | {:.3} s | {} | {} | {} | {} |\n",
            d.system,
            crate::summary::number(d.requestors as f64),
            crate::summary::number(d.rate),
            d.connect_seconds,
            crate::summary::number(if d.connect_seconds > 0.0 {
                (d.requestors as f64 / d.connect_seconds).round()
            } else {
                0.0
            }),
            ms(d.ready_p50_ms),
            ms(d.ready_p99_ms),
            d.connect_server_cpu_secs
                .map_or_else(|| "–".to_owned(), |c| format!("{c:.2}")),
        ));
    }
    out
}

/// The scrapes of each `lqd-metrics` run, for the report: how many, how long each request
/// took, the answers' sizes, and lqd's delivery counter after the run.
pub(crate) fn scrape_notes(details: &[Detail]) -> String {
    let scraped: Vec<(&Detail, &crate::scrape::ScrapeReport)> = details
        .iter()
        .filter_map(|d| d.scrape.as_ref().map(|s| (d, s)))
        .collect();
    if scraped.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\nScrapes of lqd-metrics (GET /metrics then GET /requestors every {} s over one \
         kept-alive connection, from lqd's start to the run's end, and once after):\n\n\
         | N | rate/s | scrapes | failed | /metrics mean / max | size | /requestors mean / max \
         | size | connections listed (max) | lqd_active_deliveries_total after |\n\
         |--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
        crate::scrape::INTERVAL.as_secs()
    );
    for (d, s) in scraped {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} / {:.1} ms | {} KiB | {:.1} / {:.1} ms | {} KiB | {} | {} |\n",
            crate::summary::number(d.requestors as f64),
            crate::summary::number(d.rate),
            s.scrapes,
            s.failures,
            s.metrics_ms_mean,
            s.metrics_ms_max,
            s.metrics_bytes.div_ceil(1024),
            s.requestors_ms_mean,
            s.requestors_ms_max,
            s.requestors_bytes.div_ceil(1024),
            s.requestors_listed_max,
            s.deliveries_counter
                .map_or_else(|| "–".to_owned(), |v| crate::summary::number(v as f64)),
        ));
    }
    out
}

/// A line per run that hit the drain timeout or coalesced, for the report.
pub(crate) fn timeout_notes(details: &[Detail]) -> String {
    let mut out = String::new();
    for d in details.iter().filter(|d| d.coalesced > 0) {
        out.push_str(&format!(
            "\nCoalesced: {} N={} {}/s: {} deliveries skipped for a newer change of the same \
             binding (requestors fell more than --bindings changes behind); not counted as \
             lost.\n",
            d.system, d.requestors, d.rate, d.coalesced
        ));
    }
    for d in details.iter().filter(|d| !d.complete) {
        out.push_str(&format!(
            "\nDrain timeout: {} N={} {}/s: not every requestor had every change by the end of \
             --drain-seconds; \"lost\" counts what had not arrived (it was behind, not \
             necessarily dropped).\n",
            d.system, d.requestors, d.rate
        ));
    }
    out
}
