//! One measured phase: the well-behaved requestors while changes are injected, quiet or under
//! attack.
//!
//! Each phase has its own Active requestors (`--requestors`, unfiltered, connected from
//! `127.0.0.1` and answered before the phase starts), its own K = rate × seconds changes, each
//! renewing one of the bindings lqd holds, written to lqd's feed at its intended time, and
//! every requestor must receive all K (the fan-out receivers' accounting: lost, duplicated).
//! Each delivery's latency is measured from its change's intended injection time. Meanwhile a
//! Bulk requestor (from `127.0.0.2`) asks for the whole link on a new connection every
//! `--bulk-every` seconds, and each answer must hold every binding once. lqd's memory and CPU
//! are read from /proc over the phase (its peak RSS reset at the start).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::attack::{Settings, connect_from};
use crate::bulk::{link_query, read_answer};
use crate::fanout::changes::{Model, Schedule};
use crate::fanout::inject::{self, JsonlSink};
use crate::fanout::progress::Progress;
use crate::fanout::receiver::{Plan, Protocol, Receivers};
use crate::fanout::run::{Meter, Server, merge, pct, percentiles, wait_complete, wait_ready};
use crate::process::proc_stats;

/// The Bulk requestor's address.
pub(super) const BULK_SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// How long a phase may take to deliver its last change after it was due.
const DRAIN: Duration = Duration::from_secs(10);

/// What a phase measured.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Phase {
    /// Changes injected.
    pub(super) changes: u64,
    /// From the first change's intended time to the last delivery (or the drain's end),
    /// seconds.
    pub(super) seconds: f64,
    /// Deliveries received, over all Active requestors.
    pub(super) deliveries: u64,
    /// Deliveries that never came.
    pub(super) lost: u64,
    /// Deliveries received twice.
    pub(super) duplicated: u64,
    /// Every requestor had every change before the drain ended.
    pub(super) complete: bool,
    /// Active requestors' errors (a closed connection, a bad message).
    pub(super) errors: Vec<String>,
    /// Delivery latency from the change's intended time, µs: p50, p90, p99, p99.9, max.
    pub(super) p50_us: f64,
    pub(super) p90_us: f64,
    pub(super) p99_us: f64,
    pub(super) p999_us: f64,
    pub(super) max_us: f64,
    /// Latencies above 60 s, recorded as 60 s.
    pub(super) clamped: u64,
    /// Each Bulk answer's time (query sent to its last message), seconds.
    pub(super) bulk_seconds: Vec<f64>,
    /// Bulk queries that failed or whose answer was wrong.
    pub(super) bulk_errors: Vec<String>,
    /// lqd's RSS at the start and the end, and its peak over the phase, KiB.
    pub(super) rss_start_kib: u64,
    pub(super) peak_rss_kib: u64,
    pub(super) rss_end_kib: u64,
    /// lqd's CPU over the phase, % of one core.
    pub(super) lqd_cpu_pct: f64,
    /// loadgen's CPU (well-behaved requestors, injector, attackers), % of one core.
    pub(super) loadgen_cpu_pct: f64,
    /// How late the injector wrote its worst change, ms.
    pub(super) inject_max_late_ms: f64,
    /// The machine's load average over the last minute, at the phase's end (other work on
    /// the machine shows here).
    pub(super) load_average: f64,
    /// Octets waiting in the kernel on lqd's side of its TCP connections (unsent or unacked,
    /// and unread), at the phase's end: memory lqd's RSS does not show.
    pub(super) kernel_queued: u64,
}

impl Phase {
    /// The median Bulk answer time, seconds (0 without one).
    pub(super) fn bulk_median(&self) -> f64 {
        let mut v = self.bulk_seconds.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    }

    /// The slowest Bulk answer, seconds.
    pub(super) fn bulk_max(&self) -> f64 {
        self.bulk_seconds.iter().copied().fold(0.0, f64::max)
    }
}

/// The well-behaved side, from phase to phase.
pub(super) struct Good<'a> {
    pub(super) server: &'a mut Server,
    pub(super) progress: &'a Progress,
    /// lqd's bindings; generation 0 was preloaded.
    pub(super) model: Model,
    /// Generations of changes made so far (each phase renews from the next one on).
    pub(super) generations: u64,
    /// Where lqd listens on `127.0.0.1`.
    pub(super) addr_v4: SocketAddr,
    pub(super) settings: &'a Settings,
    pub(super) requestors: usize,
    pub(super) rate: f64,
    pub(super) seconds: f64,
    pub(super) bulk_every: Duration,
    pub(super) workers: usize,
    /// The next Bulk query's xid.
    pub(super) xid: u32,
}

impl Good<'_> {
    /// Runs a phase; `start` runs once the requestors are connected, just before the first
    /// change (an attack starts there), and its result is handed back.
    pub(super) fn phase<T>(
        &mut self,
        label: &str,
        start: impl FnOnce() -> Result<T, String>,
    ) -> Result<(Phase, T), String> {
        let total = (self.rate * self.seconds).round().max(1.0) as u64;
        let model = self.model.after(self.generations);
        model.check_changes(total)?;
        self.generations += total.div_ceil(u64::from(model.bindings()));
        let n = self.requestors;
        let receivers = Receivers::start(
            Plan {
                addr: self.addr_v4,
                protocol: Protocol::Active,
                model,
                requestors: n,
                expected: total,
                filtered: false,
                start_times: None,
                catch_up: false,
                tls: None,
            },
            self.workers,
        )?;
        if let Err(e) = wait_ready(self.server, &receivers, n, self.progress) {
            let _ = receivers.finish();
            return Err(e);
        }
        let pid = self.server.pid().ok_or("lqd has no process id")?;
        let rss_start_kib = proc_stats(pid)?.rss_kib;
        let meter = Meter::start(Some(pid))?;
        let started = match start() {
            Ok(t) => t,
            Err(e) => {
                let _ = receivers.finish();
                return Err(e);
            }
        };
        let t0 = Instant::now() + Duration::from_millis(20);
        let schedule = Schedule {
            t0,
            rate: self.rate,
            total,
        };
        if receivers.shared.schedule.set(schedule).is_err() {
            return Err("the schedule was set twice".to_owned());
        }
        let feed = match &*self.server {
            Server::Lqd(_, Some(feed)) => feed
                .try_clone()
                .map_err(|e| format!("lqd's feed socket: {e}"))?,
            _ => return Err("lqd's feed socket is gone".to_owned()),
        };
        let abort = Arc::new(AtomicBool::new(false));
        let injector = inject::spawn(
            Box::new(JsonlSink::new(feed, model)),
            schedule,
            Arc::clone(&abort),
        )?;
        self.progress.stage(label, total * n as u64);
        let stop_bulk = AtomicBool::new(false);
        let (settings, every, xid) = (self.settings, self.bulk_every, self.xid);
        let (server, progress) = (&mut *self.server, self.progress);
        let (waited, (bulk_seconds, bulk_errors, next_xid)) = std::thread::scope(|scope| {
            let bulk = scope.spawn(|| bulk_loop(settings, model, every, &stop_bulk, xid));
            let waited = wait_complete(
                progress,
                server,
                &receivers,
                n,
                schedule.end() + DRAIN,
                label,
            );
            stop_bulk.store(true, Ordering::Release);
            let bulk = bulk
                .join()
                .unwrap_or_else(|_| (Vec::new(), vec!["the Bulk requestor panicked".into()], xid));
            (waited, bulk)
        });
        self.xid = next_xid;
        let window = Instant::now().saturating_duration_since(t0);
        let usage = meter.stop()?;
        let rss_end_kib = proc_stats(pid)?.rss_kib;
        abort.store(true, Ordering::Relaxed);
        let inject = injector
            .join()
            .unwrap_or_else(|_| Err("the injector panicked".to_owned()));
        let merged = merge(receivers.finish()?)?;
        let complete = waited?;
        let inject = inject?;
        let [p50, p90, p99, p999, max] = percentiles(&merged.latency);
        let busy = merged
            .last_delivery
            .map_or(window, |t| t.saturating_duration_since(t0));
        let phase = Phase {
            changes: total,
            seconds: busy.as_secs_f64(),
            deliveries: merged.received,
            lost: merged.lost,
            duplicated: merged.duplicated,
            complete,
            errors: merged.errors.iter().take(5).cloned().collect(),
            p50_us: p50,
            p90_us: p90,
            p99_us: p99,
            p999_us: p999,
            max_us: max,
            clamped: merged.clamped,
            bulk_seconds,
            bulk_errors,
            rss_start_kib,
            peak_rss_kib: usage.peak_rss_kib.unwrap_or(0),
            rss_end_kib,
            lqd_cpu_pct: usage.server_cpu_secs.map_or(0.0, |s| pct(s, window)),
            loadgen_cpu_pct: pct(usage.own_cpu_secs, window),
            inject_max_late_ms: inject.max_late.as_secs_f64() * 1e3,
            load_average: load_average(),
            kernel_queued: kernel_queued(self.addr_v4.port()),
        };
        self.progress.println(&format!(
            "loadgen: {label}: p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs, lost {}, Bulk answers {} \
             (median {:.3} s), peak RSS {:.1} MiB",
            phase.p50_us,
            phase.p99_us,
            phase.max_us,
            phase.lost,
            phase.bulk_seconds.len(),
            phase.bulk_median(),
            crate::report::mib(phase.peak_rss_kib),
        ));
        Ok((phase, started))
    }
}

/// Changes written to lqd's feed at the phases' rate between phases (while loadgen waits for
/// lqd to end the attacking connections), with nobody measuring them: lqd's churn does not
/// stop when an attack does, and an Active requestor that stopped reading is found out only
/// while there are changes to send it.
pub(super) struct Churn {
    abort: Arc<AtomicBool>,
    injector: std::thread::JoinHandle<Result<inject::InjectReport, String>>,
}

impl Churn {
    /// Stops the churn.
    pub(super) fn stop(self) {
        self.abort.store(true, Ordering::Relaxed);
        let _ = self.injector.join();
    }
}

impl Good<'_> {
    /// Starts churn for at most `longest`.
    pub(super) fn churn(&mut self, longest: Duration) -> Result<Churn, String> {
        let total = (self.rate * longest.as_secs_f64()).ceil().max(1.0) as u64;
        let model = self.model.after(self.generations);
        model.check_changes(total)?;
        self.generations += total.div_ceil(u64::from(model.bindings()));
        let feed = match &*self.server {
            Server::Lqd(_, Some(feed)) => feed
                .try_clone()
                .map_err(|e| format!("lqd's feed socket: {e}"))?,
            _ => return Err("lqd's feed socket is gone".to_owned()),
        };
        let schedule = Schedule {
            t0: Instant::now(),
            rate: self.rate,
            total,
        };
        let abort = Arc::new(AtomicBool::new(false));
        let injector = inject::spawn(
            Box::new(JsonlSink::new(feed, model)),
            schedule,
            Arc::clone(&abort),
        )?;
        Ok(Churn { abort, injector })
    }
}

/// Octets in the kernel's queues of the TCP connections on local `port` (lqd's side): the
/// `tx_queue` and `rx_queue` columns of `/proc/net/tcp` and `/proc/net/tcp6`.
pub(super) fn kernel_queued(port: u16) -> u64 {
    let mut total = 0u64;
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            // sl, local_address, rem_address, st, tx_queue:rx_queue, ...
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(queues)) = (cols.get(1), cols.get(3), cols.get(4))
            else {
                continue;
            };
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            // The listener (state 0A) counts its accept queue: not a connection's.
            if local_port != Some(port) || *state == "0A" {
                continue;
            }
            if let Some((tx, rx)) = queues.split_once(':') {
                total += u64::from_str_radix(tx, 16).unwrap_or(0);
                total += u64::from_str_radix(rx, 16).unwrap_or(0);
            }
        }
    }
    total
}

/// The one-minute load average (`/proc/loadavg`), 0 when unreadable.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// The Bulk requestor: a by-link query on a new connection every `every` until stopped. Each
/// answer's time, the failures, and the next xid.
fn bulk_loop(
    s: &Settings,
    model: Model,
    every: Duration,
    stop: &AtomicBool,
    mut xid: u32,
) -> (Vec<f64>, Vec<String>, u32) {
    let (mut times, mut errors) = (Vec::new(), Vec::new());
    while !stop.load(Ordering::Acquire) {
        let round = Instant::now();
        xid = xid.wrapping_add(1) & 0x00ff_ffff;
        match bulk_query(s, model, xid) {
            Ok(t) => times.push(t),
            Err(e) => errors.push(e),
        }
        while round.elapsed() < every && !stop.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    (times, errors, xid)
}

/// One by-link query from [`BULK_SOURCE`]; its answer time, if it held every binding once.
fn bulk_query(s: &Settings, model: Model, xid: u32) -> Result<f64, String> {
    let (mut stream, _) =
        connect_from(BULK_SOURCE, s, None).map_err(|e| format!("Bulk requestor: connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let query = link_query(&model, xid)?;
    let started = Instant::now();
    std::io::Write::write_all(&mut stream, &query)
        .map_err(|e| format!("Bulk requestor: sending: {e}"))?;
    let a = read_answer(&mut stream, &model, xid, false, started)
        .map_err(|e| format!("Bulk requestor: {e}"))?;
    let m = model.bindings();
    if a.bindings != u64::from(m) || a.duplicates > 0 || a.unknown > 0 || !(0..m).all(|i| a.has(i))
    {
        return Err(format!(
            "Bulk requestor: xid {xid}: {} bindings ({} twice, {} unknown), lqd holds {m}",
            a.bindings, a.duplicates, a.unknown
        ));
    }
    Ok(a.elapsed.as_secs_f64())
}
