//! The report of `loadgen hostile`: the well-behaved requestors quiet and under each attack,
//! the fate of every attacking connection, and each attack against the goal (p99 within 2× of
//! the quiet phase, nothing lost, RSS bounded, every attacking connection refused or closed by
//! lqd with a log line naming the peer and the reason).

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::{Args, AttackResult};
use crate::Outcome;
use crate::report::mib;

/// The latency bound of the goal: p99 under attack within this factor of the quiet p99.
const P99_FACTOR: f64 = 2.0;

/// One attack against the goal.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Goal {
    /// Active p99 under attack over the quiet phase's before it.
    pub(super) p99_ratio: f64,
    pub(super) p99_within_2x: bool,
    /// The higher of the two quiet phases' p99 (before and after the attack) over the lower:
    /// how far p99 moved with no attack at all.
    pub(super) quiet_p99_spread: f64,
    /// No change lost or duplicated, every Bulk answer whole, in both phases.
    pub(super) nothing_lost: bool,
    /// lqd's peak RSS under attack less its quiet peak, MiB.
    pub(super) rss_peak_over_quiet_mib: f64,
    /// Every attacking connection refused or closed by lqd, with a log line naming the peer
    /// and the reason.
    pub(super) every_attacker_ended_by_lqd: bool,
}

/// The goal's verdict on `r`.
pub(super) fn goal(r: &AttackResult) -> Goal {
    let p99_ratio = if r.quiet.p99_us > 0.0 {
        r.attacked.p99_us / r.quiet.p99_us
    } else {
        f64::INFINITY
    };
    let (lo, hi) = (
        r.quiet.p99_us.min(r.quiet_after.p99_us),
        r.quiet.p99_us.max(r.quiet_after.p99_us),
    );
    let whole = |p: &super::Phase| {
        p.lost == 0 && p.duplicated == 0 && p.errors.is_empty() && p.bulk_errors.is_empty()
    };
    Goal {
        p99_ratio,
        p99_within_2x: p99_ratio <= P99_FACTOR,
        quiet_p99_spread: if lo > 0.0 { hi / lo } else { f64::INFINITY },
        nothing_lost: whole(&r.quiet) && whole(&r.attacked) && whole(&r.quiet_after),
        rss_peak_over_quiet_mib: mib(r.attacked.peak_rss_kib) - mib(r.quiet.peak_rss_kib),
        every_attacker_ended_by_lqd: r.fates.all_closed_by_lqd(),
    }
}

/// What makes the run fail: a loss or a wrong answer for anyone, an attacking connection lqd
/// logged nothing about, an attack that could not do its part. (Missing the goal is reported,
/// not a failure: that is what the run measures.)
pub(super) fn failures(r: &AttackResult) -> Vec<String> {
    let mut out = Vec::new();
    let a = r.attack;
    for (name, p) in [
        ("quiet", &r.quiet),
        ("attack", &r.attacked),
        ("quiet after", &r.quiet_after),
    ] {
        if p.lost > 0 || p.duplicated > 0 {
            out.push(format!(
                "{a} ({name}): {} deliveries lost, {} duplicated, of {} changes to each \
                 requestor",
                p.lost, p.duplicated, p.changes
            ));
        }
        out.extend(p.errors.iter().map(|e| format!("{a} ({name}): {e}")));
        out.extend(p.bulk_errors.iter().map(|e| format!("{a} ({name}): {e}")));
    }
    if r.fates.no_log_line > 0 {
        out.push(format!(
            "{a}: lqd logged no end for {} attacking connections",
            r.fates.no_log_line
        ));
    }
    out.extend(r.errors.iter().map(|e| format!("{a}: {e}")));
    if let Some(p) = &r.extra.pipelined {
        if p.answered != p.queries {
            out.push(format!(
                "{a}: {} of {} pipelined queries answered right ({} wrong){}",
                p.answered,
                p.queries,
                p.wrong,
                p.error.as_ref().map_or(String::new(), |e| format!("; {e}"))
            ));
        }
    }
    if let Some(x) = &r.extra.xid_reuse {
        if x.extra_answers > 0 || x.intact != x.rounds || x.rounds == 0 {
            out.push(format!(
                "{a}: {} rounds, {} answers intact, {} answered a reused xid{}",
                x.rounds,
                x.intact,
                x.extra_answers,
                x.error.as_ref().map_or(String::new(), |e| format!("; {e}"))
            ));
        }
        if r.xid_dropped_logged < x.duplicates_sent {
            out.push(format!(
                "{a}: {} queries reused a running xid, lqd logged {} dropped",
                x.duplicates_sent, r.xid_dropped_logged
            ));
        }
    }
    out
}

/// The markdown and JSON of the run.
pub(super) fn outcome(
    args: &Args,
    preload: Duration,
    results: &[AttackResult],
    failures: Vec<String>,
) -> Result<Outcome, String> {
    let goals: Vec<Goal> = results.iter().map(goal).collect();
    let markdown = markdown(args, preload, results, &goals);
    let json = serde_json::json!({
        "mode": "hostile",
        "bindings": args.bindings,
        "rate": args.rate,
        "requestors": args.requestors,
        "seconds": args.seconds,
        // Durations name their unit, as in every JSON of the project (issue 17).
        "bulk_every_seconds": args.bulk_every,
        "bulk_data_timeout_seconds": args.bulk_data_timeout,
        "active_send_timeout_seconds": args.active_send_timeout,
        "max_connections": args.max_connections,
        "max_connections_per_requestor": args.max_connections_per_requestor,
        "close_wait_seconds": args.close_wait().as_secs_f64(),
        "preload_seconds": preload.as_secs_f64(),
        "attacks": results,
        "goals": goals,
        "failures": failures,
    });
    Ok(Outcome {
        markdown,
        json,
        failures,
    })
}

/// Milliseconds, from µs.
fn ms(us: f64) -> String {
    format!("{:.2}", us / 1000.0)
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "**no**" }
}

/// What each attack does, for the report.
fn what(r: &AttackResult, args: &Args) -> String {
    let per = args.max_connections_per_requestor;
    match r.attack {
        "flood-one" => format!(
            "connections from one address at {}/s, up to {} open at once ({}× the \
             per-requestor limit), each silent",
            args.flood_rate,
            args.flood_one_open,
            args.flood_one_open as u64 / per.max(1)
        ),
        "flood-many" => format!(
            "connections from {} addresses of 127.12/16 and ::1 at {}/s in all, up to {} open \
             at once from each, each silent",
            args.flood_addresses, args.flood_rate, args.flood_per_address
        ),
        "slowloris" => format!(
            "{per} connections from each of {} addresses: a header declaring 1,000 octets, then \
             one octet every {} s, through the wait",
            args.hold_addresses, args.slowloris_interval
        ),
        "long-frame" => format!(
            "{per} connections from each of {} addresses: a header declaring 65,535 octets and \
             65,534 of them, then silence",
            args.hold_addresses
        ),
        "garbage" => format!(
            "connections at {}/s from 4 addresses, {per} open at most each: 1 to 3 frames of \
             0 to 300 random octets (no requestor's message type)",
            args.attack_rate
        ),
        "starttls" => format!(
            "connections at {}/s from 4 addresses, {per} open at most each: STARTTLS twice; an \
             unknown type (200); STARTTLS then SOLICIT; STARTTLS alone",
            args.attack_rate
        ),
        "pipelined" => format!(
            "{} query-by-address (random bindings) written at once on one connection, answers \
             read as they come; then silence",
            args.pipelined
        ),
        "stalled-active" => format!(
            "{per} unfiltered Active queries from one address on connections with a 4 KiB \
             receive buffer, never read"
        ),
        "xid-reuse" => format!(
            "one connection, once a second: a whole-link query and {} more with its xid in one \
             write, then the answer read",
            args.duplicates
        ),
        other => other.to_owned(),
    }
}

fn markdown(args: &Args, preload: Duration, results: &[AttackResult], goals: &[Goal]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Hostile requestors against lqd: {} bindings on one link (created through lqd's feed \
         in {:.2} s), {} changes/s renewing them; {} well-behaved Active requestors \
         (unfiltered, from 127.0.0.1; latency from each change's intended injection time) and \
         one Bulk requestor (the whole link, a new connection every {} s, from 127.0.0.2); \
         each attack from addresses of its own; {} s quiet, then {} s under attack, then up \
         to {:.0} s for lqd to end the attacking connections. lqd: max_connections {}, \
         max_connections_per_requestor {}, **bulk_data_timeout {} s and active_send_timeout \
         {} s** (shortened for the run: the RFC defaults are 300 s and 120 s).\n",
        args.bindings,
        preload.as_secs_f64(),
        args.rate,
        args.requestors,
        args.bulk_every,
        args.seconds,
        args.seconds,
        args.close_wait().as_secs_f64(),
        args.max_connections,
        args.max_connections_per_requestor,
        args.bulk_data_timeout,
        args.active_send_timeout,
    );
    let _ = writeln!(
        out,
        "Well-behaved requestors, quiet → under attack (the Active p99 also in the quiet phase \
         after the attack, which is the next attack's quiet phase before):\n"
    );
    let _ = writeln!(
        out,
        "| attack | Active p50 ms | Active p99 ms (→ quiet after) | p99 ratio | Active max ms | \
         injector late, max ms | changes lost | Bulk answer median s | Bulk answer max s | Bulk answers | lqd peak RSS \
         MiB | lqd CPU % | loadgen CPU % | machine load |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---:|---|---|---|---|---|---|---|---|---|---|"
    );
    for (r, g) in results.iter().zip(goals) {
        let (q, a) = (&r.quiet, &r.attacked);
        let _ = writeln!(
            out,
            "| {} | {} → {} | {} → {} (→ {}) | {:.2} | {} → {} | {:.0} → {:.0} | {} → {} | \
             {:.3} → {:.3} | \
             {:.3} → {:.3} | {} → {} | {:.1} → {:.1} | {:.0} → {:.0} | {:.0} → {:.0} | {:.1} → \
             {:.1} |",
            r.attack,
            ms(q.p50_us),
            ms(a.p50_us),
            ms(q.p99_us),
            ms(a.p99_us),
            ms(r.quiet_after.p99_us),
            g.p99_ratio,
            ms(q.max_us),
            ms(a.max_us),
            q.inject_max_late_ms,
            a.inject_max_late_ms,
            q.lost,
            a.lost,
            q.bulk_median(),
            a.bulk_median(),
            q.bulk_max(),
            a.bulk_max(),
            q.bulk_seconds.len(),
            a.bulk_seconds.len(),
            mib(q.peak_rss_kib),
            mib(a.peak_rss_kib),
            q.lqd_cpu_pct,
            a.lqd_cpu_pct,
            q.loadgen_cpu_pct,
            a.loadgen_cpu_pct,
            q.load_average,
            a.load_average,
        );
    }
    let _ = writeln!(out, "\nThe attacking connections:\n");
    let _ = writeln!(
        out,
        "| attack | what it does | connections | refused at accept | closed by lqd | not \
         closed by lqd | no log line | lqd's RSS after MiB | lqd's kernel queues, most KiB | \
         lqd's log grew, KiB |"
    );
    let _ = writeln!(out, "|---|---|---:|---|---|---:|---:|---:|---:|---:|");
    for r in results {
        let f = &r.fates;
        let list = |m: &std::collections::BTreeMap<String, u64>| {
            if m.is_empty() {
                "0".to_owned()
            } else {
                m.iter()
                    .map(|(why, n)| format!("{n} ({why})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let failed = if f.connect_failed > 0 {
            format!(" (+{} connects failed)", f.connect_failed)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {}{failed} | {} | {} | {} | {} | {:.1} | {:.0} | {:.0} |",
            r.attack,
            what(r, args),
            f.connections,
            list(&f.refused),
            list(&f.closed),
            f.not_closed,
            f.no_log_line,
            mib(r.rss_after_kib),
            r.kernel_queued_max as f64 / 1024.0,
            r.log_bytes as f64 / 1024.0,
        );
    }
    let _ = writeln!(
        out,
        "\nHow long lqd took to end them (from the attacker's connect to lqd's log line):\n"
    );
    let _ = writeln!(
        out,
        "| attack | lqd's line | connections | median s | max s |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|");
    for r in results {
        for (what, t) in &r.fates.timing {
            let _ = writeln!(
                out,
                "| {} | {what} | {} | {:.3} | {:.3} |",
                r.attack, t.count, t.p50_seconds, t.max_seconds
            );
        }
        if r.wait_ran_out {
            let _ = writeln!(
                out,
                "| {} | (none: {} still open {:.0} s after the attack phase, closed by \
                 loadgen) | {} | | |",
                r.attack, r.fates.not_closed, r.waited_seconds, r.fates.not_closed
            );
        }
        for (why, t) in &r.fates.freed_after_close {
            let _ = writeln!(
                out,
                "| {} | after loadgen closed them: closed: {why} | {} | {:.3} | {:.3} |",
                r.attack, t.count, t.p50_seconds, t.max_seconds
            );
        }
    }
    let _ = writeln!(out, "\nAgainst the goal:\n");
    let _ = writeln!(
        out,
        "| attack | p99 within 2× of quiet | quiet p99 before vs after | nothing lost | lqd peak \
         RSS over quiet MiB | every attacking connection refused or closed by lqd, logged with \
         peer and reason |"
    );
    let _ = writeln!(out, "|---|---|---:|---|---:|---|");
    for (r, g) in results.iter().zip(goals) {
        let _ = writeln!(
            out,
            "| {} | {} ({:.2}×) | {:.1}× | {} | {:+.1} | {} |",
            r.attack,
            yes(g.p99_within_2x),
            g.p99_ratio,
            g.quiet_p99_spread,
            yes(g.nothing_lost),
            g.rss_peak_over_quiet_mib,
            yes(g.every_attacker_ended_by_lqd),
        );
    }
    let noisy: Vec<&str> = results
        .iter()
        .zip(goals)
        .filter(|(_, g)| g.quiet_p99_spread > P99_FACTOR)
        .map(|(r, _)| r.attack)
        .collect();
    if !noisy.is_empty() {
        let _ = writeln!(
            out,
            "\nThe quiet phases around {} differ by more than 2× in p99 on their own: their p99 \
             verdict is within what this machine does without any attack. Where the injector was \
             late by about as much as a p99 (it writes each change at its intended time from \
             loadgen, on the same two cores), the whole measurement was held up, not lqd alone.",
            noisy.join(", ")
        );
    }
    let notes = notes(results);
    if !notes.is_empty() {
        let _ = writeln!(out);
        for n in notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    out
}

/// A sentence per attack-specific finding.
fn notes(results: &[AttackResult]) -> Vec<String> {
    let mut out = Vec::new();
    for r in results {
        let a = r.attack;
        if let Some(p) = &r.extra.pipelined {
            out.push(format!(
                "{a}: {} of {} pipelined queries answered right ({} wrong) in {:.2} s{}.",
                p.answered,
                p.queries,
                p.wrong,
                p.seconds,
                p.error
                    .as_ref()
                    .map_or(String::new(), |e| format!(" ({e})"))
            ));
        }
        if let Some(x) = &r.extra.xid_reuse {
            let mut t = x.answer_seconds.clone();
            t.sort_by(f64::total_cmp);
            out.push(format!(
                "{a}: {} rounds, {} queries reusing the running xid, {} logged by lqd as \
                 dropped (D21); {} answers whole and alone, {} followed by another; the \
                 attacker's own whole-link answers took {:.3} s (median).",
                x.rounds,
                x.duplicates_sent,
                r.xid_dropped_logged,
                x.intact,
                x.extra_answers,
                t.get(t.len() / 2).copied().unwrap_or(0.0)
            ));
        }
        let held = r.fates.connections;
        if matches!(a, "long-frame" | "slowloris") && held > 0 {
            let over = r.attacked.peak_rss_kib.saturating_sub(r.quiet.peak_rss_kib);
            out.push(format!(
                "{a}: lqd's peak RSS rose {:.1} MiB over the quiet phase while {held} connections \
                 were held: about {:.0} KiB each.",
                mib(over),
                over as f64 / held as f64
            ));
        }
        if let Some(b) = r.extra.slowloris_bytes {
            out.push(format!(
                "{a}: {b} octets trickled over {} connections; lqd closed {} of them.",
                r.fates.connections,
                r.fates.closed.values().sum::<u64>()
            ));
        }
        if r.starttls_refused_logged > 0 {
            out.push(format!(
                "{a}: lqd logged {} STARTTLS refusals (TLSConnectionRefused, D25).",
                r.starttls_refused_logged
            ));
        }
        if let Some(e) = &r.fates.connect_error {
            out.push(format!(
                "{a}: {} connects failed (the first: {e}); lqd never held those.",
                r.fates.connect_failed
            ));
        }
        if let Some(e) = &r.fates.example {
            out.push(format!("{a}: an example of lqd's verdicts: `{e}`."));
        }
    }
    out
}
