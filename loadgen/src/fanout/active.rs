//! `loadgen active`: N Active requestors, changes at a fixed rate R, every combination of the
//! `--requestors` and `--rate` lists, each system side by side.
//!
//! Each run: a fresh server (lqd, with `--preload`, given every binding and seen to have
//! journaled them); N connections, each with its ACTIVELEASEQUERY answered (or its
//! subscription confirmed) before the first change; K = R × `--seconds` changes injected on
//! schedule; then the wait until every connection has all K (or `--drain-seconds` more).
//! Reports deliveries/s, p50 / p90 / p99 / p99.9 / max latency from each change's intended
//! injection time, lost, duplicated and (`--filter`) misdelivered deliveries (any makes
//! loadgen fail), the CPU use of the server (also per change) and of loadgen, and the
//! server's peak RSS.

use super::progress::Progress;
use super::run::{Ctx, Detail, connect_notes, live, preload_note, scrape_notes, timeout_notes};
use super::{FanoutCommon, filter_note, plots, positive};
use crate::Outcome;
use crate::summary::{self, RunSummary};

/// Options of `loadgen active`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// Active requestors (connections); a comma-separated list runs each.
    #[arg(long, default_value = "100", value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) requestors: Vec<u32>,
    /// Changes per second; a comma-separated list runs each.
    #[arg(long, default_value = "1000", value_delimiter = ',')]
    pub(crate) rate: Vec<f64>,
    /// Length of each run's injection, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) seconds: f64,
    /// Before each lqd run's requestors subscribe, create its `--bindings` bindings: write each
    /// once to lqd's feed, as fast as it takes them, until a sentinel requestor has received
    /// them all (journaled). The measured changes then renew bindings lqd already holds (new
    /// lifetimes), the steady state of an lqd in front of a DHCP server, instead of creating
    /// them, a fresh server's one-time growth. Raw and Redis keep no bindings: nothing to do.
    #[arg(long)]
    pub(crate) preload: bool,
    /// Run every system this many times at each load, the order reversed every other round
    /// (lqd, lqd-metrics, then lqd-metrics, lqd, …), so that a drift of the machine's load
    /// weighs on every system alike; the metrics table pairs the runs round by round.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) rounds: u32,
    #[command(flatten)]
    pub(crate) common: FanoutCommon,
}

/// Runs `loadgen active`.
pub(crate) fn run(args: &Args) -> Result<Outcome, String> {
    positive(&args.rate, "--rate")?;
    positive(&[args.seconds], "--seconds")?;
    let progress = Progress::new();
    let ctx = Ctx::new(&args.common, &progress, &args.requestors, args.preload)?;
    let mut runs: Vec<RunSummary> = Vec::new();
    let mut details: Vec<Detail> = Vec::new();
    let mut failures = Vec::new();
    for &n in &args.requestors {
        for &rate in &args.rate {
            for round in 0..args.rounds {
                let mut systems = args.common.systems();
                if round % 2 == 1 {
                    systems.reverse();
                }
                for system in systems {
                    match live(&ctx, system, n as usize, rate, args.seconds, "active") {
                        Ok(o) => {
                            runs.push(o.summary);
                            details.push(o.detail);
                            failures.extend(o.failures);
                        }
                        Err(e) => {
                            let f = format!("{} N={n} {rate}/s: {e}", system.name());
                            progress.println(&format!("loadgen: error: {f}"));
                            failures.push(f);
                        }
                    }
                }
            }
        }
    }
    progress.clear();
    let mut extra = serde_json::Map::new();
    extra.insert("preload".to_owned(), args.preload.into());
    extra.insert("rounds".to_owned(), args.rounds.into());
    finish_with(
        "active",
        &args.common,
        &runs,
        &details,
        &mut failures,
        |md| {
            format!(
                "Active Leasequery fan-out: {} s of changes per run over {} bindings, {} \
                 receiver threads; latency from each change's intended injection time{}{}\n\n\
                 {md}{}{}{}",
                args.seconds,
                args.common.bindings,
                ctx.workers,
                filter_note(&args.common),
                preload_note(&args.common, args.preload, &details),
                timeout_notes(&details),
                connect_notes(&details),
                scrape_notes(&details),
            )
        },
        extra,
    )
}

/// The report of a fan-out mode: the markdown (`head` wraps the summary table), the JSON
/// (with `extra` fields), the plots.
pub(super) fn finish_with(
    mode: &str,
    common: &FanoutCommon,
    runs: &[RunSummary],
    details: &[Detail],
    failures: &mut Vec<String>,
    head: impl FnOnce(String) -> String,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Result<Outcome, String> {
    let mut markdown = head(summary::markdown(runs));
    if let Some(dir) = &common.plots {
        match plots(runs, dir) {
            Ok(files) => {
                markdown.push_str("\nPlots: ");
                let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
                markdown.push_str(&names.join(", "));
                markdown.push('\n');
            }
            Err(e) => failures.push(format!("plots: {e}")),
        }
    }
    let mut json = serde_json::Map::new();
    json.insert("mode".to_owned(), mode.into());
    json.insert("bindings".to_owned(), common.bindings.into());
    json.insert("filter".to_owned(), common.filter.map(|f| f.name()).into());
    json.insert("summary".to_owned(), summary::json(runs));
    json.insert(
        "runs".to_owned(),
        serde_json::to_value(runs).map_err(|e| format!("JSON: {e}"))?,
    );
    json.insert(
        "details".to_owned(),
        serde_json::to_value(details).map_err(|e| format!("JSON: {e}"))?,
    );
    json.extend(extra);
    json.insert("failures".to_owned(), failures.clone().into());
    Ok(Outcome {
        markdown,
        json: serde_json::Value::Object(json),
        failures: std::mem::take(failures),
    })
}
