//! `loadgen ramp`: the highest change rate a system sustains at a given N with p99 under a
//! bound.
//!
//! Short live runs (each a fresh server, lqd preloaded with `--preload`, as in `loadgen
//! active`) at `--start-rate`, then `--factor` times faster each step, until a step misses: p99 above `--p99-ms`, anything
//! lost, duplicated or misdelivered (`--filter`), a failed requestor, or the injector more
//! than `--p99-ms` behind its schedule at the end (it could not write the changes as fast as
//! they were due: lqd's feed pushing back, or the raw sender's own limit). A step that misses
//! is run again (`--retries`) before the ramp stops there. Every run is reported, and the
//! highest rate that met the bound. A step that misses is not a failure of loadgen (a
//! misdelivered change is); a missed first step means the start rate is already too high.

use std::fmt::Write as _;

use serde::Serialize;

use super::active::finish_with;
use super::progress::Progress;
use super::run::{Ctx, live, preload_note, timeout_notes};
use super::{FanoutCommon, filter_note, positive};
use crate::Outcome;

/// Options of `loadgen ramp`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// Active requestors (connections); a comma-separated list ramps each.
    #[arg(long, default_value = "1000", value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) requestors: Vec<u32>,
    /// The first step's rate, changes per second.
    #[arg(long, default_value_t = 500.0)]
    pub(crate) start_rate: f64,
    /// Each step's rate over the one before.
    #[arg(long, default_value_t = 1.5)]
    pub(crate) factor: f64,
    /// The p99 latency bound, milliseconds.
    #[arg(long, default_value_t = 2.0)]
    pub(crate) p99_ms: f64,
    /// Length of each step's injection, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) step_seconds: f64,
    /// Stop after this many steps even if the bound still holds.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_steps: u32,
    /// Times a step that missed is run again before the ramp stops there (one miss on a busy
    /// machine may be a hiccup).
    #[arg(long, default_value_t = 1)]
    pub(crate) retries: u32,
    /// Before each lqd run's requestors subscribe, create its `--bindings` bindings: write each
    /// once to lqd's feed, as fast as it takes them, until a sentinel requestor has received
    /// them all (journaled). The measured changes then renew bindings lqd already holds (new
    /// lifetimes), the steady state of an lqd in front of a DHCP server, instead of creating
    /// them, a fresh server's one-time growth. Raw and Redis keep no bindings: nothing to do.
    #[arg(long)]
    pub(crate) preload: bool,
    #[command(flatten)]
    pub(crate) common: FanoutCommon,
}

/// One step's verdict.
#[derive(Debug, Clone, Serialize)]
struct Step {
    system: &'static str,
    requestors: usize,
    rate: f64,
    p99_ms: f64,
    inject_end_late_ms: f64,
    /// Why it missed the bound; none when it met it.
    missed: Option<String>,
}

/// The highest rate a system sustained at one N.
#[derive(Debug, Clone, Serialize)]
struct Highest {
    system: &'static str,
    requestors: usize,
    /// None when even the first step missed.
    rate: Option<f64>,
    /// The rate of the step that missed, if one did (a rate, not a time: named so).
    #[serde(rename = "missed_rate")]
    missed_at: Option<f64>,
}

/// Runs `loadgen ramp`.
pub(crate) fn run(args: &Args) -> Result<Outcome, String> {
    positive(
        &[args.start_rate, args.p99_ms, args.step_seconds],
        "--start-rate, --p99-ms and --step-seconds",
    )?;
    if !(args.factor > 1.0 && args.factor.is_finite()) {
        return Err("--factor must be above 1".to_owned());
    }
    let progress = Progress::new();
    let ctx = Ctx::new(&args.common, &progress, &args.requestors, args.preload)?;
    let bound_us = args.p99_ms * 1e3;
    let (mut runs, mut details, mut steps, mut highest) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut failures = Vec::new();
    for &n in &args.requestors {
        let n = n as usize;
        for system in args.common.systems() {
            let mut rate = args.start_rate;
            let mut best = None;
            let mut missed_at = None;
            let (mut step, mut retries) = (0, args.retries);
            while step < args.max_steps {
                let o = match live(&ctx, system, n, rate, args.step_seconds, "ramp") {
                    Ok(o) => o,
                    Err(e) => {
                        let f = format!("{} N={n} {rate}/s: {e}", system.name());
                        progress.println(&format!("loadgen: error: {f}"));
                        failures.push(f);
                        break;
                    }
                };
                let s = &o.summary;
                let mut why = Vec::new();
                if s.p99_us > bound_us {
                    why.push(format!("p99 {:.2} ms", s.p99_us / 1e3));
                }
                let dropped = s.lost > 0 || s.duplicated > 0;
                if dropped {
                    why.push(format!("{} lost, {} duplicated", s.lost, s.duplicated));
                }
                if s.misdelivered > 0 {
                    why.push(format!("{} misdelivered", s.misdelivered));
                }
                // Dropped or repeated with every requestor complete (not just behind at the
                // drain timeout), or misdelivered at any load: wrong, not only too slow.
                if (dropped && o.detail.complete) || s.misdelivered > 0 {
                    failures.extend(o.failures.iter().cloned());
                }
                if o.detail.inject_end_late_ms > args.p99_ms {
                    why.push(format!(
                        "injection {:.1} ms behind schedule",
                        o.detail.inject_end_late_ms
                    ));
                }
                if !o.failures.is_empty() && why.is_empty() {
                    why.push(o.failures.join("; "));
                }
                let missed = (!why.is_empty()).then(|| why.join(", "));
                progress.println(&format!(
                    "loadgen: ramp {} N={n} at {rate:.0}/s: {}",
                    system.name(),
                    missed.as_deref().unwrap_or("within the bound")
                ));
                steps.push(Step {
                    system: system.name(),
                    requestors: n,
                    rate,
                    p99_ms: s.p99_us / 1e3,
                    inject_end_late_ms: o.detail.inject_end_late_ms,
                    missed: missed.clone(),
                });
                runs.push(o.summary);
                details.push(o.detail);
                if missed.is_some() {
                    if retries > 0 {
                        // One miss on a noisy machine may be a hiccup: run the step again.
                        retries -= 1;
                        continue;
                    }
                    missed_at = Some(rate);
                    break;
                }
                best = Some(rate);
                rate = (rate * args.factor).round();
                (step, retries) = (step + 1, args.retries);
            }
            highest.push(Highest {
                system: system.name(),
                requestors: n,
                rate: best,
                missed_at,
            });
        }
    }
    progress.clear();
    if highest.iter().all(|h| h.rate.is_none()) {
        failures.push(format!(
            "no system met p99 ≤ {} ms even at the start rate {}/s",
            args.p99_ms, args.start_rate
        ));
    }
    let mut table = format!(
        "\nHighest rate with p99 ≤ {} ms, nothing lost and the schedule kept ({} s steps, ×{} \
         each):\n\n| system | N | highest rate/s | first missed at/s |\n|---|--:|--:|--:|\n",
        args.p99_ms, args.step_seconds, args.factor
    );
    for h in &highest {
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} |",
            h.system,
            h.requestors,
            h.rate.map_or_else(|| "–".to_owned(), |r| format!("{r:.0}")),
            h.missed_at
                .map_or_else(|| "– (max steps)".to_owned(), |r| format!("{r:.0}")),
        );
    }
    for h in highest.iter().filter(|h| h.system == "lqd") {
        for b in highest
            .iter()
            .filter(|b| b.system != "lqd" && b.requestors == h.requestors)
        {
            if let (Some(l), Some(r)) = (h.rate, b.rate) {
                // A system that never missed may sustain more than its last step.
                let bound = match (h.missed_at, b.missed_at) {
                    (Some(_), Some(_)) => "",
                    (Some(_), None) => "at most ",
                    (None, Some(_)) => "at least ",
                    (None, None) => "not known: both reached --max-steps; ",
                };
                let _ = writeln!(
                    table,
                    "\nN = {}: lqd/{} highest sustained rate {bound}{:.2}×",
                    h.requestors,
                    b.system,
                    l / r
                );
            }
        }
    }
    let mut extra = serde_json::Map::new();
    extra.insert("p99_ms".to_owned(), args.p99_ms.into());
    extra.insert("preload".to_owned(), args.preload.into());
    extra.insert(
        "steps".to_owned(),
        serde_json::to_value(&steps).map_err(|e| format!("JSON: {e}"))?,
    );
    extra.insert(
        "highest".to_owned(),
        serde_json::to_value(&highest).map_err(|e| format!("JSON: {e}"))?,
    );
    let workers = ctx.workers;
    finish_with(
        "ramp",
        &args.common,
        &runs,
        &details,
        &mut failures,
        |md| {
            format!(
                "Active Leasequery ramp: steps of {} s from {}/s, ×{} each, over {} bindings, {} \
                 receiver threads{}{}\n\n{md}{}{table}",
                args.step_seconds,
                args.start_rate,
                args.factor,
                args.common.bindings,
                workers,
                filter_note(&args.common),
                preload_note(&args.common, args.preload, &details),
                timeout_notes(&details),
            )
        },
        extra,
    )
}
