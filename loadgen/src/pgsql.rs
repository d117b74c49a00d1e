//! `loadgen pgsql`: Active Leasequery fan-out from Kea's PostgreSQL lease database, with one
//! lqd or two following it, and what following costs the database.
//!
//! loadgen starts a temporary PostgreSQL cluster holding Kea's lease database (made by Kea's
//! own `kea-admin db-init pgsql`, [`cluster`]) and writes `lease6` rows as Kea would, at a
//! fixed rate, through `psql` ([`writer`]): renewals (`UPDATE`) and, one change in
//! `--release-every`, a release (`DELETE`) followed by the client's return (`INSERT`). lqd
//! reads them through logical replication (`--source kea-pgsql:URI`, a replication slot per
//! instance, D32): the change load comes through the database, as in a carrier's network.
//!
//! Three systems, each run afresh on the same cluster in every round, one after the other:
//!
//! - `db-only`: no lqd, the writes alone: the database's own load at that rate;
//! - `lqd-pgsql`: one lqd, every requestor on it;
//! - `lqd-pgsql-2`: two lqd instances, each with its own slot, the requestors split between
//!   them (the first takes the odd one out).
//!
//! Before each run the table holds the first generation of every binding (`--bindings`) and
//! no slot exists; each lqd loads it from its slot's snapshot, then its requestors subscribe,
//! then the writes start. Every requestor must receive every change once and in order (the
//! fan-out's receivers, [`crate::fanout::receiver`]), and every release; each delivery is timed
//! from its change's intended write time (a release's own delivery may be coalesced into the
//! return that follows it, as RFC 7653 allows: the return is the change counted) (the schedule), so the writer, PostgreSQL's commit,
//! the WAL sender, lqd and the receivers are all inside the latency. Rounds alternate the
//! systems, so that a machine shared with other work weighs on each alike: compare ratios
//! within a round.
//!
//! Measured over each run's window (from the first change's intended time until every
//! requestor has everything and the writer's last statement has run): lqd's CPU (each
//! instance), and in the database, from `/proc`: the WAL sender of each lqd (its process
//! from `pg_replication_slots.active_pid`), the writer's backend, and every PostgreSQL process
//! together.
//!
//! ```text
//! cargo build --release -p lqd -p loadgen
//! target/release/loadgen pgsql --requestors 1000 --rate 500,2000 --seconds 10 --rounds 3
//! ```

mod cluster;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::Outcome;
use crate::fanout::changes::{LINK, LINK_PREFIX, Model, Schedule};
use crate::fanout::inject;
use crate::fanout::progress::Progress;
use crate::fanout::receiver::{Plan, Protocol, Receivers};
use crate::fanout::run::{delivery_failures, merge, pct, percentiles, us_per_change};
use crate::process::{Lqd, own_cpu_secs, proc_stats, reset_peak};
use crate::redis::raise_nofile;
use crate::summary::{self, RunSummary, latency, number};
use cluster::{Cluster, cpu_since, server_cpu, stat};
use writer::Writer;

/// Descriptors loadgen needs besides its connections.
const FD_MARGIN: u64 = 256;
/// Connections lqd may hold besides the requestors'.
const LQD_CONN_MARGIN: usize = 64;
/// How often the driver looks at the receivers' counters.
const TICK: Duration = Duration::from_millis(10);
/// The log line of lqd's kea-pgsql source once its snapshot is loaded and it streams.
const STREAMING: &str = "streaming from slot";

/// How many lqd instances follow the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Setup {
    /// No lqd: the writes alone, for the database's own load.
    #[value(name = "db-only")]
    DbOnly,
    /// One lqd, every requestor on it.
    #[value(name = "lqd-pgsql")]
    One,
    /// Two lqd instances, each with its own replication slot, the requestors split between
    /// them.
    #[value(name = "lqd-pgsql-2")]
    Two,
}

impl Setup {
    const fn name(self) -> &'static str {
        match self {
            Self::DbOnly => "db-only",
            Self::One => "lqd-pgsql",
            Self::Two => "lqd-pgsql-2",
        }
    }

    const fn instances(self) -> usize {
        match self {
            Self::DbOnly => 0,
            Self::One => 1,
            Self::Two => 2,
        }
    }
}

/// Options of `loadgen pgsql`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// Active requestors in all, split between the instances.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(2..))]
    pub(crate) requestors: u32,
    /// Changes written per second; a comma-separated list runs each.
    #[arg(long, default_value = "500", value_delimiter = ',')]
    pub(crate) rate: Vec<f64>,
    /// Length of each run's writes, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) seconds: f64,
    /// Rounds: each runs every system at every rate, one after the other.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) rounds: u32,
    /// The systems of each round, in order: db-only (no lqd), lqd-pgsql (one lqd, every
    /// requestor), lqd-pgsql-2 (two lqd, each its own slot, the requestors split).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "db-only,lqd-pgsql,lqd-pgsql-2"
    )]
    pub(crate) systems: Vec<Setup>,
    /// Leases in `lease6` (one client each); change k renews lease k mod M. Keep it above the
    /// changes of a run, or lqd rightly coalesces a lagging requestor's changes.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) bindings: u32,
    /// One change in this many is a release (DELETE) and the client's return (INSERT), two
    /// transactions; 0: renewals (UPDATE) only.
    #[arg(long, default_value_t = 10)]
    pub(crate) release_every: u64,
    /// The lqd binary to run.
    #[arg(long, default_value = "target/release/lqd")]
    pub(crate) lqd: PathBuf,
    /// Receiver threads in all (default: the number of CPUs), shared out between the
    /// instances' requestors.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) workers: Option<u32>,
    /// How long to wait for the last deliveries after the last change is due, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) drain_seconds: f64,
    /// Keep lqd's state directories and the cluster's directory instead of removing them.
    #[arg(long)]
    pub(crate) keep_state: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<PathBuf>,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
struct PgRun {
    round: u32,
    system: &'static str,
    instances: usize,
    requestors: usize,
    /// Requestors on each instance.
    requestors_each: Vec<usize>,
    rate: f64,
    changes: u64,
    /// Changes that were a release and a return.
    releases: u64,
    /// From the first change's intended time to the end of the run.
    window_seconds: f64,
    /// The worst lateness of a write behind its intended time, and of the last.
    inject_max_late_ms: f64,
    inject_end_late_ms: f64,
    /// Every requestor received every change before the drain timeout.
    complete: bool,
    /// Ended leases received, and written (releases × requestors): a release whose return
    /// is journaled before a requestor's turn is coalesced into it, so fewer may arrive.
    released_received: u64,
    released_expected: u64,
    /// Deliveries skipped for a newer change of the same binding (a lagging requestor).
    coalesced: u64,
    /// Each lqd's CPU over the window, %.
    lqd_cpu_pct: Vec<f64>,
    /// The WAL sender of each lqd's slot, CPU % over the window and µs per change.
    walsender_cpu_pct: Vec<f64>,
    walsender_cpu_us_per_change: Vec<f64>,
    /// The writer's backend.
    writer_backend_cpu_pct: f64,
    /// Every PostgreSQL process together.
    postgres_cpu_pct: f64,
    postgres_cpu_us_per_change: f64,
    /// The writer's psql.
    psql_cpu_pct: f64,
    /// WAL the run's writes made, octets per change (what a stopped follower's slot keeps).
    wal_bytes_per_change: f64,
    /// The fan-out's figures (the lqd systems).
    summary: Option<RunSummary>,
}

/// What the runs share.
struct Cx<'a> {
    args: &'a Args,
    cluster: &'a Cluster,
    progress: &'a Progress,
    workers: usize,
}

/// Runs `loadgen pgsql`.
pub(crate) fn run(args: &Args) -> Result<Outcome, String> {
    if args.rate.is_empty()
        || args
            .rate
            .iter()
            .chain([&args.seconds])
            .any(|v| !(v.is_finite() && *v > 0.0))
    {
        return Err("--rate and --seconds must be positive numbers".to_owned());
    }
    if !(args.drain_seconds >= 0.0 && args.drain_seconds.is_finite()) {
        return Err("--drain-seconds must be 0 or more".to_owned());
    }
    if args.systems.is_empty() {
        return Err("--systems names no system".to_owned());
    }
    let got = raise_nofile(u64::from(args.requestors) + FD_MARGIN)?;
    if got < u64::from(args.requestors) + FD_MARGIN {
        return Err(format!(
            "{} requestors need {} open files, and RLIMIT_NOFILE stays at {got}",
            args.requestors,
            u64::from(args.requestors) + FD_MARGIN
        ));
    }
    let progress = Progress::new();
    let cluster = Cluster::start(args.keep_state)?;
    let version = cluster.sql("SHOW server_version")?;
    progress.println(&format!(
        "loadgen: PostgreSQL {} started on 127.0.0.1:{} with Kea's lease database \
         (kea-admin db-init pgsql)",
        version.trim(),
        cluster.port
    ));
    let workers = args.workers.map_or_else(
        || std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
        |w| w as usize,
    );
    let cx = Cx {
        args,
        cluster: &cluster,
        progress: &progress,
        workers,
    };
    let mut runs = Vec::new();
    let mut failures = Vec::new();
    for round in 1..=args.rounds {
        for &rate in &args.rate {
            for &setup in &args.systems {
                match one(&cx, setup, rate, round) {
                    Ok((r, f)) => {
                        runs.push(r);
                        failures.extend(f);
                    }
                    Err(e) => {
                        let f = format!("{} round {round} {rate}/s: {e}", setup.name());
                        progress.println(&format!("loadgen: error: {f}"));
                        failures.push(f);
                    }
                }
            }
        }
    }
    progress.clear();
    Ok(report(args, workers, version.trim(), &runs, failures))
}

/// `n` requestors shared out between `instances`, the first taking the odd one out.
fn split(n: usize, instances: usize) -> Vec<usize> {
    (0..instances)
        .map(|i| n / instances + usize::from(i < n % instances))
        .collect()
}

/// Starts lqd following the database with `slot`, for `n` requestors, and waits until it
/// streams (its snapshot loaded).
fn start_lqd(cx: &Cx<'_>, slot: &str, n: usize) -> Result<Lqd, String> {
    let conns = n + LQD_CONN_MARGIN;
    let body = format!(
        "source = \"{}\"\nmax_connections = {conns}\nmax_connections_per_requestor = {conns}\n\
         \n[[link]]\naddress = \"{LINK}\"\nprefixes = [\"{LINK_PREFIX}\"]\n",
        cx.cluster.source(slot)
    );
    let mut lqd = Lqd::start_config(&cx.args.lqd, cx.args.keep_state, &body)?;
    let started = Instant::now();
    loop {
        lqd.check_alive()?;
        if lqd.log().contains(STREAMING) {
            return Ok(lqd);
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(format!(
                "lqd (slot {slot}) was not streaming after 60 s; log:\n{}",
                lqd.log_tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every receiver set's counters: (ready, complete, failed, deliveries).
fn counts(sets: &[Receivers]) -> (usize, usize, usize, u64) {
    sets.iter().fold((0, 0, 0, 0), |(r, c, f, d), s| {
        let sh = &s.shared;
        (
            r + sh.ready.load(Ordering::Acquire),
            c + sh.complete.load(Ordering::Acquire),
            f + sh.failed.load(Ordering::Acquire),
            d + sh.deliveries.load(Ordering::Relaxed),
        )
    })
}

fn errors(sets: &[Receivers]) -> Vec<String> {
    sets.iter().flat_map(|s| s.shared.errors()).collect()
}

/// One run of `setup` at `rate`.
fn one(cx: &Cx<'_>, setup: Setup, rate: f64, round: u32) -> Result<(PgRun, Vec<String>), String> {
    let args = cx.args;
    let n = args.requestors as usize;
    let total = (rate * args.seconds).round().max(1.0) as u64;
    let initial = Model::new(args.bindings)?;
    // The measured changes renew the leases the table holds: generation 1 on.
    let model = initial.after(1);
    model.check_changes(total)?;
    let label = format!("{} round {round} {rate}/s", setup.name());
    cx.progress.stage(&format!("{label}: preparing"), 0);

    // The table: the first generation of every lease, nothing else; no slot.
    let cluster = cx.cluster;
    cluster.drop_slots()?;
    cluster.sql("DELETE FROM lease6")?;
    cluster.sql("VACUUM lease6")?;
    let load = cluster.dir().join("initial-load.sql");
    writer::initial_load(initial, args.bindings, &load)?;
    cluster.sql_file(&load)?;
    let _ = std::fs::remove_file(&load);
    cluster.sql("CHECKPOINT")?;

    let instances = setup.instances();
    let shares = split(n, instances);
    let mut lqds = Vec::with_capacity(instances);
    let mut slots = Vec::with_capacity(instances);
    for (i, &share) in shares.iter().enumerate() {
        let slot = format!("lqd_{}", char::from(b'a' + u8::try_from(i).unwrap_or(0)));
        lqds.push(start_lqd(cx, &slot, share)?);
        slots.push(slot);
    }
    let setup_started = Instant::now();
    let workers_each = (cx.workers / instances.max(1)).max(1);
    let sets = lqds
        .iter()
        .zip(&shares)
        .map(|(lqd, &share)| {
            Receivers::start(
                Plan {
                    addr: lqd.addr,
                    protocol: Protocol::Active,
                    model,
                    requestors: share,
                    expected: total,
                    filtered: false,
                    start_times: None,
                    catch_up: false,
                    tls: None,
                },
                workers_each,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let want = if instances == 0 { 0 } else { n };
    cx.progress
        .stage(&format!("{label}: connecting"), want as u64);
    let ready_limit = Duration::from_secs(30) + Duration::from_millis(3 * n as u64);
    loop {
        let (ready, _, failed, _) = counts(&sets);
        cx.progress.set(ready as u64);
        if failed > 0 {
            return Err(format!(
                "requestors failed while connecting: {}",
                errors(&sets).join("; ")
            ));
        }
        if ready >= want {
            break;
        }
        for l in &mut lqds {
            l.check_alive()?;
        }
        if setup_started.elapsed() > ready_limit {
            return Err(format!("only {ready} of {want} requestors ready"));
        }
        std::thread::sleep(TICK);
    }

    // The writer, and what is measured.
    let mut writer = Writer::start(cluster)?;
    let sink = writer.sink(model, args.release_every)?;
    let senders: Vec<u32> = {
        let active = cluster.slots()?;
        slots
            .iter()
            .map(|s| {
                active
                    .iter()
                    .find(|(name, _)| name == s)
                    .and_then(|(_, pid)| *pid)
                    .ok_or_else(|| format!("slot {s} has no WAL sender: {active:?}"))
            })
            .collect::<Result<_, _>>()?
    };
    let postmaster = cluster.postmaster()?;
    let wal_before = cluster.wal_position()?;
    let t0 = Instant::now() + Duration::from_millis(20);
    let schedule = Schedule { t0, rate, total };
    for s in &sets {
        if s.shared.schedule.set(schedule).is_err() {
            return Err("the schedule was set twice".to_owned());
        }
    }
    for l in &lqds {
        reset_peak(l.pid());
    }
    let lqd_before = lqds
        .iter()
        .map(|l| proc_stats(l.pid()).map(|s| s.cpu_secs))
        .collect::<Result<Vec<_>, _>>()?;
    let pg_before = server_cpu(postmaster);
    let psql_before = stat(writer.pid()).map_or(0.0, |(_, c)| c);
    let own_before = own_cpu_secs();
    let abort = Arc::new(AtomicBool::new(false));
    let injector = inject::spawn(Box::new(sink), schedule, Arc::clone(&abort))?;
    cx.progress.stage(&label, total * want as u64);
    let deadline = schedule.end() + Duration::from_secs_f64(args.drain_seconds);
    let waited: Result<bool, String> = loop {
        let (_, complete, failed, delivered) = counts(&sets);
        cx.progress.set(delivered);
        let written = injector.is_finished();
        if complete + failed >= want && written {
            break Ok(failed == 0);
        }
        if Instant::now() > deadline && (written || complete + failed < want) {
            cx.progress.println(&format!(
                "loadgen: {label}: drain timeout with {complete} of {want} requestors complete"
            ));
            break Ok(false);
        }
        if let Some(e) = lqds.iter_mut().find_map(|l| l.check_alive().err()) {
            break Err(e);
        }
        std::thread::sleep(TICK);
    };
    let window = Instant::now().saturating_duration_since(t0);
    let pg_after = server_cpu(postmaster);
    let wal_after = cluster.wal_position();
    let lqd_after = lqds
        .iter()
        .map(|l| proc_stats(l.pid()))
        .collect::<Result<Vec<_>, _>>();
    let psql_after = stat(writer.pid()).map_or(0.0, |(_, c)| c);
    let own = own_cpu_secs() - own_before;
    abort.store(true, Ordering::Relaxed);
    let inject = injector
        .join()
        .unwrap_or_else(|_| Err("the injector panicked".to_owned()));
    let reports: Vec<_> = sets
        .into_iter()
        .map(Receivers::finish)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    let complete = waited?;
    let inject = inject?;
    let lqd_after = lqd_after?;
    let wal_bytes = wal_after?.saturating_sub(wal_before);
    let backend = writer.backend();
    writer.finish()?;
    let mut failures = Vec::new();
    for l in &lqds {
        for (needle, what) in [
            ("connection refused", "refused connections"),
            ("DataMissing", "DataMissing"),
            ("a lease6 row skipped", "lease6 rows it could not map"),
        ] {
            let count = l.log_count(needle);
            if count > 0 {
                failures.push(format!("{label}: lqd logged {count} {what} (see its log)"));
            }
        }
    }
    drop(lqds);
    cluster.drop_slots()?;

    let delta = |pid: u32| {
        pg_after.get(&pid).copied().unwrap_or(0.0) - pg_before.get(&pid).copied().unwrap_or(0.0)
    };
    let walsender_secs: Vec<f64> = senders.iter().map(|&p| delta(p)).collect();
    let postgres_secs = cpu_since(&pg_before, &pg_after);
    let lqd_secs: Vec<f64> = lqd_after
        .iter()
        .zip(&lqd_before)
        .map(|(a, b)| a.cpu_secs - b)
        .collect();
    let releases = writer::releases(total, args.release_every);
    let merged = merge(reports)?;
    let released_expected = releases * want as u64;
    if instances > 0 {
        failures.extend(delivery_failures(&merged, total * n as u64, &label));
        // A release whose return is already in lqd's journal when a requestor's turn comes
        // is coalesced into the return (RFC 7653 sends a binding's current state): fewer may
        // arrive, never more.
        if merged.released > released_expected {
            failures.push(format!(
                "{label}: {} released leases received, {released_expected} written",
                merged.released
            ));
        }
    }
    if inject.written != total {
        failures.push(format!(
            "{label}: {} of {total} changes written",
            inject.written
        ));
    }
    let summary = (instances > 0).then(|| {
        let [p50, p90, p99, p999, max] = percentiles(&merged.latency);
        let busy = merged
            .last_delivery
            .map_or(window, |t| t.saturating_duration_since(t0));
        let lqd_total: f64 = lqd_secs.iter().sum();
        RunSummary {
            system: setup.name().to_owned(),
            mode: format!("pgsql r{round}"),
            filter: None,
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
            server_cpu_pct: Some(pct(lqd_total, window)),
            server_cpu_us_per_change: Some(us_per_change(lqd_total, total)),
            loadgen_cpu_pct: pct(own, window),
            server_peak_rss_kib: Some(lqd_after.iter().map(|s| s.hwm_kib).sum()),
        }
    });
    let run = PgRun {
        round,
        system: setup.name(),
        instances,
        requestors: want,
        requestors_each: shares,
        rate,
        changes: total,
        releases,
        window_seconds: window.as_secs_f64(),
        inject_max_late_ms: inject.max_late.as_secs_f64() * 1e3,
        inject_end_late_ms: inject.end_late.as_secs_f64() * 1e3,
        complete,
        released_received: merged.released,
        released_expected,
        coalesced: merged.coalesced,
        lqd_cpu_pct: lqd_secs.iter().map(|&s| pct(s, window)).collect(),
        walsender_cpu_pct: walsender_secs.iter().map(|&s| pct(s, window)).collect(),
        walsender_cpu_us_per_change: walsender_secs
            .iter()
            .map(|&s| us_per_change(s, total))
            .collect(),
        writer_backend_cpu_pct: pct(delta(backend), window),
        postgres_cpu_pct: pct(postgres_secs, window),
        postgres_cpu_us_per_change: us_per_change(postgres_secs, total),
        psql_cpu_pct: pct(psql_after - psql_before, window),
        wal_bytes_per_change: wal_bytes as f64 / total as f64,
        summary,
    };
    let line = match &run.summary {
        Some(s) => format!(
            "{} deliveries, {:.0}/s, p50 {} p99 {} max {}, lost {}, duplicated {}, released {} of \
             {}; ",
            s.deliveries,
            s.deliveries_per_sec,
            latency(s.p50_us),
            latency(s.p99_us),
            latency(s.max_us),
            s.lost,
            s.duplicated,
            run.released_received,
            run.released_expected
        ),
        None => String::new(),
    };
    cx.progress.println(&format!(
        "loadgen: {label}: {line}PostgreSQL {:.1} % CPU, WAL senders {:?} %",
        run.postgres_cpu_pct, run.walsender_cpu_pct
    ));
    Ok((run, failures))
}

/// The median of `values`, none when empty.
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => values.get(n / 2).copied(),
        _ => Some((values.get(n / 2 - 1)? + values.get(n / 2)?) / 2.0),
    }
}

/// Two instances against one, in one round at one rate.
#[derive(Debug, Clone, Serialize)]
struct Versus {
    round: u32,
    rate: f64,
    requestors: usize,
    /// Aggregate deliveries/s over both instances, and over the one.
    two_deliveries_per_sec: f64,
    one_deliveries_per_sec: f64,
    deliveries_ratio: f64,
    two_p99_us: f64,
    one_p99_us: f64,
    p99_ratio: f64,
}

fn versus(runs: &[PgRun]) -> Vec<Versus> {
    let mut out = Vec::new();
    for two in runs.iter().filter(|r| r.instances == 2) {
        let one = runs
            .iter()
            .find(|r| r.instances == 1 && r.round == two.round && r.rate == two.rate);
        let (Some(a), Some(b)) = (two.summary.as_ref(), one.and_then(|o| o.summary.as_ref()))
        else {
            continue;
        };
        out.push(Versus {
            round: two.round,
            rate: two.rate,
            requestors: two.requestors,
            two_deliveries_per_sec: a.deliveries_per_sec,
            one_deliveries_per_sec: b.deliveries_per_sec,
            deliveries_ratio: a.deliveries_per_sec / b.deliveries_per_sec,
            two_p99_us: a.p99_us,
            one_p99_us: b.p99_us,
            p99_ratio: a.p99_us / b.p99_us,
        });
    }
    out
}

/// What each follower adds to the database at one rate: medians over the rounds.
#[derive(Debug, Clone, Serialize)]
struct Cost {
    rate: f64,
    followers: usize,
    /// Every PostgreSQL process, % of a CPU, and the writer's backend.
    postgres_cpu_pct: Option<f64>,
    writer_backend_cpu_pct: Option<f64>,
    /// A WAL sender (the mean over the instances of a run).
    walsender_cpu_pct: Option<f64>,
    walsender_cpu_us_per_change: Option<f64>,
    /// PostgreSQL's CPU above db-only's in the same round, per follower.
    postgres_extra_cpu_pct_per_follower: Option<f64>,
    /// WAL made per change, octets.
    wal_bytes_per_change: Option<f64>,
}

fn costs(runs: &[PgRun], rates: &[f64]) -> Vec<Cost> {
    let mut out = Vec::new();
    for &rate in rates {
        for followers in 0..=2 {
            let mine: Vec<&PgRun> = runs
                .iter()
                .filter(|r| r.rate == rate && r.instances == followers)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let mean = |v: &[f64]| {
                if v.is_empty() {
                    f64::NAN
                } else {
                    v.iter().sum::<f64>() / v.len() as f64
                }
            };
            let extra: Vec<f64> = mine
                .iter()
                .filter(|_| followers > 0)
                .filter_map(|r| {
                    let base = runs
                        .iter()
                        .find(|b| b.instances == 0 && b.round == r.round && b.rate == rate)?;
                    Some((r.postgres_cpu_pct - base.postgres_cpu_pct) / followers as f64)
                })
                .collect();
            out.push(Cost {
                rate,
                followers,
                postgres_cpu_pct: median(mine.iter().map(|r| r.postgres_cpu_pct).collect()),
                writer_backend_cpu_pct: median(
                    mine.iter().map(|r| r.writer_backend_cpu_pct).collect(),
                ),
                walsender_cpu_pct: median(
                    mine.iter().map(|r| mean(&r.walsender_cpu_pct)).collect(),
                ),
                walsender_cpu_us_per_change: median(
                    mine.iter()
                        .map(|r| mean(&r.walsender_cpu_us_per_change))
                        .collect(),
                ),
                postgres_extra_cpu_pct_per_follower: median(extra),
                wal_bytes_per_change: median(mine.iter().map(|r| r.wal_bytes_per_change).collect()),
            });
        }
    }
    out
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}"))
}

fn list(v: &[f64], digits: usize) -> String {
    if v.is_empty() {
        return "–".to_owned();
    }
    v.iter()
        .map(|x| format!("{x:.digits$}"))
        .collect::<Vec<_>>()
        .join(" + ")
}

fn report(
    args: &Args,
    workers: usize,
    version: &str,
    runs: &[PgRun],
    failures: Vec<String>,
) -> Outcome {
    let summaries: Vec<RunSummary> = runs.iter().filter_map(|r| r.summary.clone()).collect();
    let mut md = format!(
        "Active Leasequery fan-out from Kea's PostgreSQL lease database (PostgreSQL {version}, \
         Kea's schema by kea-admin db-init pgsql): {} s of writes a run over {} leases, one \
         change in {} a release and return (DELETE, INSERT), the others renewals (UPDATE), one \
         transaction each; lqd follows through logical replication, a slot per instance; {} \
         requestors in all (lqd-pgsql-2: split between the two), {} receiver threads in all; \
         latency from each change's intended write time; {} rounds, the systems alternating \
         within each\n\n",
        args.seconds,
        number(f64::from(args.bindings)),
        args.release_every,
        number(f64::from(args.requestors)),
        workers,
        args.rounds,
    );
    md.push_str(&summary::markdown(&summaries));
    let vs = versus(runs);
    if !vs.is_empty() {
        md.push_str(
            "\nTwo instances (the requestors split) against one (every requestor), in the same \
             round at the same rate (deliveries/s: above 1 is two delivering more; p99: below 1 \
             is two faster):\n\n\
             | round | rate/s | N | deliveries/s two | one | two/one | p99 two | one | two/one |\n\
             |--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
        );
        for v in &vs {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {:.2}× | {} | {} | {:.2}× |\n",
                v.round,
                number(v.rate),
                number(v.requestors as f64),
                number(v.two_deliveries_per_sec),
                number(v.one_deliveries_per_sec),
                v.deliveries_ratio,
                latency(v.two_p99_us),
                latency(v.one_p99_us),
                v.p99_ratio,
            ));
        }
        for &rate in &args.rate {
            let at: Vec<&Versus> = vs.iter().filter(|v| v.rate == rate).collect();
            md.push_str(&format!(
                "| median | {} | | | | {}× | | | {}× |\n",
                number(rate),
                opt(median(at.iter().map(|v| v.deliveries_ratio).collect()), 2),
                opt(median(at.iter().map(|v| v.p99_ratio).collect()), 2),
            ));
        }
    }
    md.push_str(
        "\nThe database's CPU over each run's window (% of one CPU, from /proc): every \
         PostgreSQL process together, the writer's backend, the WAL sender of each lqd's slot \
         (also per change), the writer's psql (loadgen's), and each lqd; and the WAL the writes \
         made, octets per change:\n\n\
         | round | system | rate/s | PostgreSQL % | µs/change | writer backend % | WAL senders % \
         | WAL sender µs/change | psql % | lqd % | WAL octets/change |\n\
         |--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for r in runs {
        md.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {} | {} | {:.1} | {} | {:.0} |\n",
            r.round,
            r.system,
            number(r.rate),
            r.postgres_cpu_pct,
            r.postgres_cpu_us_per_change,
            r.writer_backend_cpu_pct,
            list(&r.walsender_cpu_pct, 1),
            list(&r.walsender_cpu_us_per_change, 1),
            r.psql_cpu_pct,
            list(&r.lqd_cpu_pct, 0),
            r.wal_bytes_per_change,
        ));
    }
    let cost = costs(runs, &args.rate);
    md.push_str(
        "\nWhat each follower costs the database (medians over the rounds; a WAL sender: the \
         mean over a run's instances; extra: PostgreSQL's CPU above db-only's in the same \
         round, per follower):\n\n\
         | rate/s | followers | PostgreSQL % | writer backend % | a WAL sender % | a WAL \
         sender µs/change | extra PostgreSQL % per follower | WAL octets/change |\n\
         |--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for c in &cost {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            number(c.rate),
            c.followers,
            opt(c.postgres_cpu_pct, 1),
            opt(c.writer_backend_cpu_pct, 1),
            opt(c.walsender_cpu_pct, 1),
            opt(c.walsender_cpu_us_per_change, 1),
            opt(c.postgres_extra_cpu_pct_per_follower, 1),
            opt(c.wal_bytes_per_change, 0),
        ));
    }
    let released: Vec<String> = runs
        .iter()
        .filter(|r| r.instances > 0)
        .map(|r| {
            format!(
                "{} r{} {}/s: {} of {}",
                r.system,
                r.round,
                number(r.rate),
                number(r.released_received as f64),
                number(r.released_expected as f64)
            )
        })
        .collect();
    if !released.is_empty() {
        md.push_str(&format!(
            "\nReleases delivered (each release's ended lease to each requestor; one whose \
             return was journaled before the requestor's turn is coalesced into the return, \
             as RFC 7653 sends a binding's current state): {}.\n",
            released.join("; ")
        ));
    }
    for r in runs.iter().filter(|r| r.instances > 0) {
        if !r.complete {
            md.push_str(&format!(
                "\nDrain timeout: {} round {} {}/s: not every requestor had every change by the \
                 end of --drain-seconds.\n",
                r.system, r.round, r.rate
            ));
        }
        if r.coalesced > 0 {
            md.push_str(&format!(
                "\nCoalesced: {} round {} {}/s: {} deliveries skipped for a newer change of the \
                 same lease (requestors more than --bindings changes behind).\n",
                r.system, r.round, r.rate, r.coalesced
            ));
        }
    }
    let mut json = serde_json::Map::new();
    json.insert("mode".to_owned(), "pgsql".into());
    json.insert("postgresql".to_owned(), version.into());
    json.insert("bindings".to_owned(), args.bindings.into());
    json.insert("release_every".to_owned(), args.release_every.into());
    json.insert("requestors".to_owned(), args.requestors.into());
    json.insert("seconds".to_owned(), args.seconds.into());
    json.insert("rounds".to_owned(), args.rounds.into());
    json.insert("summary".to_owned(), summary::json(&summaries));
    json.insert(
        "runs".to_owned(),
        serde_json::to_value(runs).unwrap_or_default(),
    );
    json.insert(
        "two_against_one".to_owned(),
        serde_json::to_value(&vs).unwrap_or_default(),
    );
    json.insert(
        "database_cost".to_owned(),
        serde_json::to_value(&cost).unwrap_or_default(),
    );
    json.insert("failures".to_owned(), failures.clone().into());
    Outcome {
        markdown: md,
        json: serde_json::Value::Object(json),
        failures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requestors_are_split_with_the_odd_one_first() {
        assert_eq!(split(5, 2), [3, 2]);
        assert_eq!(split(4, 2), [2, 2]);
        assert_eq!(split(4, 1), [4]);
        assert!(split(4, 0).is_empty());
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![f64::NAN]), None);
    }
}
