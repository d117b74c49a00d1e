//! `loadgen catch-up`: N requestors reconnecting with OPTION_LQ_START_TIME after K changes.
//!
//! lqd: the N requestors connect and start an Active query, remember the base-time of its
//! REPLY, and disconnect. K changes (K ≤ `--bindings`, so each is a different binding and
//! none coalesces) are injected while they are away, until one live requestor kept as a
//! sentinel has received all of them (so lqd has journaled them all). Then the N reconnect,
//! each with START_TIME = its base-time, and each must receive the K changes exactly once, in
//! journal order, then CatchUpComplete. Measured from the first reconnect to the last
//! CatchUpComplete: the time until all are caught up, deliveries/s, and each requestor's
//! catch-up time (from its connect to its CatchUpComplete) as percentiles.
//!
//! raw: the same N receivers connect to loadgen's sender, which writes each, as soon as it is
//! accepted, the K frames and a CatchUpComplete frame. Redis pub/sub keeps no history, so it
//! has no catch-up to compare; it is skipped with a note.
//!
//! Filtered (`--filter`), requestor `i` syncs, and reconnects, with a query for its key `i`
//! alone, and must receive exactly the changes of its key (`i`, `i + N`, …, about K / N of
//! them) before its CatchUpComplete; the sentinel still asks for every change. The raw sender
//! writes each connection its key's frames only.
//!
//! With `--carrier`, the catch-up at carrier scale instead (issue 19): a carrier population in
//! one lqd, steady churn, gateways away for minutes reconnecting at once while others stay
//! live; see [`super::carrier`].

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use lqd::codec::ServerTime;
use serde::Serialize;

use super::active::finish_with;
use super::changes::Model;
use super::progress::Progress;
use super::raw::Job;
use super::receiver::{HIST_MAX_US, Plan, Protocol, Receivers};
use super::run::{
    Ctx, Meter, Server, delivery_failures, merge, pct, percentiles, us_per_change, wait_complete,
    wait_ready,
};
use super::sentinel::feed_journaled;
use super::{FanoutCommon, System, filter_note};
use crate::Outcome;
use crate::summary::{RunSummary, latency, number};

/// lqd's default journal size; larger when K changes need more.
const JOURNAL_SIZE: u64 = 128 * 1024 * 1024;
/// Journal octets reserved per change (a record here is about 100).
const JOURNAL_PER_CHANGE: u64 = 512;

/// Options of `loadgen catch-up`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// Requestors reconnecting at once; a comma-separated list runs each.
    #[arg(long, default_value = "1000", value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) requestors: Vec<u32>,
    /// Changes made while the requestors are away (K, at most --bindings).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) changes: u64,
    /// How fast to inject them, changes per second (default: as fast as lqd takes them).
    #[arg(long)]
    pub(crate) inject_rate: Option<f64>,
    /// How long the requestors may take to catch up, seconds.
    #[arg(long, default_value_t = 120.0)]
    pub(crate) timeout_seconds: f64,
    #[command(flatten)]
    pub(crate) common: FanoutCommon,
    #[command(flatten)]
    pub(crate) carrier: super::carrier::CarrierArgs,
}

/// What a catch-up run found besides its summary.
#[derive(Debug, Clone, Serialize)]
struct Detail {
    system: &'static str,
    requestors: usize,
    changes: u64,
    /// Injecting the K changes until the sentinel had them all (lqd), seconds.
    inject_seconds: Option<f64>,
    /// From the first reconnect to the last CatchUpComplete, seconds.
    all_caught_up_seconds: f64,
    /// Every requestor caught up before the timeout.
    complete: bool,
}

/// Runs `loadgen catch-up`.
pub(crate) fn run(args: &Args) -> Result<Outcome, String> {
    if args.carrier.carrier {
        return super::carrier::run(args);
    }
    if args.changes > u64::from(args.common.bindings) {
        return Err(format!(
            "--changes {} is above --bindings {}: changes to the same binding would coalesce",
            args.changes, args.common.bindings
        ));
    }
    if let Some(r) = args.inject_rate {
        super::positive(&[r], "--inject-rate")?;
    }
    super::positive(&[args.timeout_seconds], "--timeout-seconds")?;
    let progress = Progress::new();
    let ctx = Ctx::new(&args.common, &progress, &args.requestors, false)?;
    let (mut runs, mut details, mut failures) = (Vec::new(), Vec::new(), Vec::new());
    let mut notes = String::new();
    let mut table = String::from(
        "\nUntil every requestor had its CatchUpComplete (from the first reconnect), and each \
         requestor's time from its reconnect to its CatchUpComplete:\n\n\
         | system | N | changes | all caught up | per requestor p50 | p99 | max \
         | server CPU µs/change |\n|---|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    let k = number(args.changes as f64);
    for &n in &args.requestors {
        for system in args.common.systems() {
            let row = |what: &str| {
                format!(
                    "| {} | {} | {k} | {what} |",
                    system.name(),
                    number(f64::from(n))
                )
            };
            if matches!(system, System::Redis | System::Nats) {
                let note = match system {
                    System::Redis => {
                        "Redis pub/sub keeps no history to catch up from: no redis run."
                    }
                    _ => {
                        "NATS core pub/sub keeps no history to catch up from (JetStream would, a \
                          different system): no nats run."
                    }
                };
                if !notes.contains(note) {
                    progress.println(&format!("loadgen: {note}"));
                    notes.push_str(note);
                    notes.push('\n');
                }
                let _ = writeln!(table, "{}", row("n/a | n/a | n/a | n/a | n/a"));
                continue;
            }
            match one(&ctx, args, system, n as usize) {
                Ok((summary, detail, f)) => {
                    let _ = writeln!(
                        table,
                        "{}",
                        row(&format!(
                            "{}{} | {} | {} | {} | {}",
                            latency(detail.all_caught_up_seconds * 1e6),
                            if detail.complete { "" } else { " (timed out)" },
                            latency(summary.p50_us),
                            latency(summary.p99_us),
                            latency(summary.max_us),
                            summary
                                .server_cpu_us_per_change
                                .map_or_else(|| "–".to_owned(), number),
                        ))
                    );
                    runs.push(summary);
                    details.push(detail);
                    failures.extend(f);
                }
                Err(e) => {
                    let f = format!("{} N={n} K={}: {e}", system.name(), args.changes);
                    progress.println(&format!("loadgen: error: {f}"));
                    failures.push(f);
                    let _ = writeln!(table, "{}", row("failed | – | – | – | –"));
                }
            }
        }
    }
    progress.clear();
    let mut extra = serde_json::Map::new();
    extra.insert("changes".to_owned(), args.changes.into());
    extra.insert(
        "catch_up".to_owned(),
        serde_json::to_value(&details).map_err(|e| format!("JSON: {e}"))?,
    );
    let workers = ctx.workers;
    finish_with(
        "catch-up",
        &args.common,
        &runs,
        &[],
        &mut failures,
        |md| {
            format!(
                "Active Leasequery catch-up: N requestors reconnect with START_TIME after {} \
                 changes, {} receiver threads; latency columns: each requestor's time from its \
                 reconnect to its CatchUpComplete; server CPU µs/change: per change caught \
                 up{}\n\n{md}{table}\n{notes}",
                args.changes,
                workers,
                filter_note(&args.common),
            )
        },
        extra,
    )
}

/// One catch-up run of `system` with `n` requestors.
fn one(
    ctx: &Ctx<'_>,
    args: &Args,
    system: System,
    n: usize,
) -> Result<(RunSummary, Detail, Vec<String>), String> {
    let k = args.changes;
    let model = ctx.model_for(n)?;
    let filtered = model.keys().is_some();
    let label = format!("{} N={n} K={k}", system.name());
    let journal = (k * JOURNAL_PER_CHANGE).max(JOURNAL_SIZE).div_ceil(1 << 20) << 20;
    let job = match system {
        System::Raw => Job::Burst(k),
        _ => Job::Live,
    };
    let mut server = Server::start(ctx, system, n, Some(journal), job)?;
    let mut failures = Vec::new();
    let (start_times, inject_seconds) = if server.protocol() == Protocol::Active {
        let (t, s) = away(ctx, &mut server, model, n, k, args.inject_rate, &label)?;
        (Some(t), Some(s))
    } else {
        (None, None)
    };
    let expected = ctx.deliveries(k, n);
    ctx.progress
        .stage(&format!("{label}: catching up"), expected);
    let started = Instant::now();
    let meter = Meter::start(server.pid())?;
    let receivers = Receivers::start(
        Plan {
            addr: server.addr(),
            protocol: server.protocol(),
            model,
            requestors: n,
            expected: k,
            filtered,
            start_times,
            catch_up: true,
            tls: server.tls_client(),
        },
        ctx.workers,
    )?;
    let deadline = started + Duration::from_secs_f64(args.timeout_seconds);
    let waited = wait_complete(ctx.progress, &mut server, &receivers, n, deadline, &label);
    let end = Instant::now();
    let usage = meter.stop()?;
    let reports = receivers.finish();
    failures.extend(server.logged_failures());
    if let Server::Lqd(lqd, _) = &mut server {
        if let Some(scrape) = lqd.finish_scraping().transpose()? {
            if scrape.failures > 0 {
                failures.push(format!(
                    "{label}: {} of {} scrapes failed: {}",
                    scrape.failures,
                    scrape.scrapes,
                    scrape.errors.join("; ")
                ));
            }
        }
    }
    if let Server::Raw(raw) = server {
        raw.finish()?;
    }
    let complete = waited?;
    let m = merge(reports?)?;
    let window = m
        .last_complete
        .map_or(end, |t| t.min(end))
        .saturating_duration_since(started);
    let cpu_window = end.saturating_duration_since(started);
    let mut times = Histogram::<u64>::new_with_bounds(1, HIST_MAX_US, 3)
        .map_err(|e| format!("histogram: {e}"))?;
    for t in &m.catch_up {
        times.saturating_record(u64::try_from(t.as_micros()).unwrap_or(u64::MAX).max(1));
    }
    let [p50, p90, p99, p999, max] = percentiles(&times);
    failures.extend(delivery_failures(&m, expected, &label));
    if m.catch_up.len() < n {
        failures.push(format!(
            "{label}: {} of {n} requestors got CatchUpComplete",
            m.catch_up.len()
        ));
    }
    let summary = RunSummary {
        system: system.name().to_owned(),
        mode: "catch-up".to_owned(),
        filter: ctx.filter_name(),
        requestors: n,
        rate: 0.0,
        seconds: window.as_secs_f64(),
        changes: k,
        deliveries: m.received,
        deliveries_per_sec: crate::report::rate(m.received, window),
        lost: m.lost,
        duplicated: m.duplicated,
        misdelivered: m.misdelivered,
        p50_us: p50,
        p90_us: p90,
        p99_us: p99,
        p999_us: p999,
        max_us: max,
        server_cpu_pct: usage.server_cpu_secs.map(|s| pct(s, cpu_window)),
        server_cpu_us_per_change: usage.server_cpu_secs.map(|s| us_per_change(s, k)),
        loadgen_cpu_pct: pct(usage.own_cpu_secs, cpu_window),
        server_peak_rss_kib: usage.peak_rss_kib,
    };
    ctx.progress.println(&format!(
        "loadgen: {label}: all caught up in {:.3} s, {:.0} deliveries/s; per requestor p50 \
         {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        window.as_secs_f64(),
        summary.deliveries_per_sec,
        p50 / 1e3,
        p99 / 1e3,
        max / 1e3
    ));
    let detail = Detail {
        system: system.name(),
        requestors: n,
        changes: k,
        inject_seconds,
        all_caught_up_seconds: window.as_secs_f64(),
        complete,
    };
    Ok((summary, detail, failures))
}

/// lqd's side before the measurement: the N requestors sync (filtered by `model`'s keys, if
/// any) and leave, K changes are made, and a sentinel sees them all. Returns each requestor's
/// base-time and how long the K changes took.
fn away(
    ctx: &Ctx<'_>,
    server: &mut Server,
    model: Model,
    n: usize,
    k: u64,
    inject_rate: Option<f64>,
    label: &str,
) -> Result<(Vec<ServerTime>, f64), String> {
    ctx.progress.stage(&format!("{label}: syncing"), n as u64);
    let sync = Receivers::start(
        Plan {
            addr: server.addr(),
            protocol: Protocol::Active,
            model,
            requestors: n,
            expected: 0,
            filtered: model.keys().is_some(),
            start_times: None,
            catch_up: false,
            tls: server.tls_client(),
        },
        ctx.workers,
    )?;
    let ready = wait_ready(server, &sync, n, ctx.progress);
    let reports = sync.finish();
    ready?;
    let m = merge(reports?)?;
    let start_times: Vec<ServerTime> = (0..n)
        .map(|i| {
            m.base_times
                .get(i)
                .copied()
                .flatten()
                .ok_or_else(|| format!("requestor {i}'s REPLY had no base-time"))
        })
        .collect::<Result<_, _>>()?;
    let took = feed_journaled(
        ctx.progress,
        server,
        model,
        k,
        inject_rate,
        &format!("{label}: {k} changes while away"),
    )?;
    Ok((start_times, took.as_secs_f64()))
}
