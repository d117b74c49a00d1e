//! One row per fan-out run, whatever the system (lqd, the raw baseline, Redis), and the
//! reports built from them: a markdown table of all runs, a ratio table comparing lqd with
//! each baseline at the same load, and the same as JSON.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The system whose name marks lqd's runs; the others are baselines.
const LQD: &str = "lqd";
/// lqd with its requestors on TLS.
const LQD_TLS: &str = "lqd-tls";
/// lqd with its metrics endpoint scraped every second.
const LQD_METRICS: &str = "lqd-metrics";
/// Issue 16's goal for metrics on against off: deliveries/s at least this ratio…
const METRICS_MIN_DELIVERIES: f64 = 0.97;
/// …and p99 at most this ratio.
const METRICS_MAX_P99: f64 = 1.05;

/// What one run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunSummary {
    /// `"lqd"`, `"raw"` or `"redis"`.
    pub(crate) system: String,
    /// `"active"`, `"catch-up"` or `"ramp"`.
    pub(crate) mode: String,
    /// What each requestor's stream was filtered by (`--filter`): `"link"`, `"relay-id"` or
    /// `"remote-id"`, each change going to one requestor; none when every requestor got every
    /// change.
    #[serde(default)]
    pub(crate) filter: Option<String>,
    /// Requestors (subscribers) connected.
    pub(crate) requestors: usize,
    /// Intended changes per second.
    pub(crate) rate: f64,
    /// Length of the measured phase, seconds.
    pub(crate) seconds: f64,
    /// Changes made during the phase.
    pub(crate) changes: u64,
    /// Changes received, summed over requestors.
    pub(crate) deliveries: u64,
    /// `deliveries / seconds`.
    pub(crate) deliveries_per_sec: f64,
    /// Deliveries that never arrived.
    pub(crate) lost: u64,
    /// Deliveries that arrived more than once.
    pub(crate) duplicated: u64,
    /// Changes delivered to a requestor that did not ask for their key (filtered runs).
    #[serde(default)]
    pub(crate) misdelivered: u64,
    /// Latency percentiles and maximum from the change's intended time to its arrival, µs.
    pub(crate) p50_us: f64,
    /// 90th percentile, µs.
    pub(crate) p90_us: f64,
    /// 99th percentile, µs.
    pub(crate) p99_us: f64,
    /// 99.9th percentile, µs.
    pub(crate) p999_us: f64,
    /// Maximum, µs.
    pub(crate) max_us: f64,
    /// The server's CPU use over the phase, % of one core; `None` when not measured.
    pub(crate) server_cpu_pct: Option<f64>,
    /// The server's CPU time over the phase per change, µs: per change applied (live), per
    /// change caught up (catch-up); `None` when not measured.
    #[serde(default)]
    pub(crate) server_cpu_us_per_change: Option<f64>,
    /// loadgen's CPU use over the phase, % of one core.
    pub(crate) loadgen_cpu_pct: f64,
    /// The server's peak RSS (VmHWM) over the phase, KiB; `None` when not measured.
    pub(crate) server_peak_rss_kib: Option<u64>,
}

/// lqd against one baseline at the same load.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Versus {
    /// lqd's deliveries/s over the baseline's (above 1: lqd delivers more); `None` when the
    /// baseline delivered nothing.
    pub(crate) deliveries_per_sec: Option<f64>,
    /// lqd's p99 latency over the baseline's (above 1: lqd is slower); `None` when the
    /// baseline's p99 is 0.
    pub(crate) p99: Option<f64>,
}

/// The comparisons at one load: one mode, filter, requestor count and rate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Ratio {
    /// The runs' mode.
    pub(crate) mode: String,
    /// The runs' filter, if any.
    pub(crate) filter: Option<String>,
    /// The runs' requestor count.
    pub(crate) requestors: usize,
    /// The runs' intended rate, changes/s.
    pub(crate) rate: f64,
    /// lqd over the raw baseline, when there is a raw run at this load.
    pub(crate) raw: Option<Versus>,
    /// lqd over Redis, when there is a Redis run at this load.
    pub(crate) redis: Option<Versus>,
    /// lqd over NATS, when there is a NATS run at this load.
    pub(crate) nats: Option<Versus>,
}

/// lqd with its requestors on TLS against lqd in cleartext at one load (`--tls`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct TlsRatio {
    pub(crate) mode: String,
    pub(crate) filter: Option<String>,
    pub(crate) requestors: usize,
    pub(crate) rate: f64,
    /// TLS over cleartext (above 1: TLS delivers more, is slower, costs more, holds more).
    pub(crate) deliveries_per_sec: Option<f64>,
    pub(crate) p99: Option<f64>,
    pub(crate) server_cpu_per_change: Option<f64>,
    pub(crate) server_peak_rss: Option<f64>,
}

/// One [`TlsRatio`] per `lqd-tls` run that has an `lqd` run at the same load (the first of
/// each).
pub(crate) fn tls_ratios(runs: &[RunSummary]) -> Vec<TlsRatio> {
    let mut out: Vec<TlsRatio> = Vec::new();
    for tls in runs.iter().filter(|r| r.system == LQD_TLS) {
        if out.iter().any(|r| {
            r.mode == tls.mode
                && r.filter == tls.filter
                && r.requestors == tls.requestors
                && r.rate.to_bits() == tls.rate.to_bits()
        }) {
            continue;
        }
        let Some(plain) = runs.iter().find(|r| r.system == LQD && same_load(r, tls)) else {
            continue;
        };
        let opt = |a: Option<f64>, b: Option<f64>| a.zip(b).and_then(|(a, b)| ratio(a, b));
        let rss = |r: &RunSummary| r.server_peak_rss_kib.map(|k| k as f64);
        out.push(TlsRatio {
            mode: tls.mode.clone(),
            filter: tls.filter.clone(),
            requestors: tls.requestors,
            rate: tls.rate,
            deliveries_per_sec: ratio(tls.deliveries_per_sec, plain.deliveries_per_sec),
            p99: ratio(tls.p99_us, plain.p99_us),
            server_cpu_per_change: opt(
                tls.server_cpu_us_per_change,
                plain.server_cpu_us_per_change,
            ),
            server_peak_rss: opt(rss(tls), rss(plain)),
        });
    }
    out
}

/// One round of lqd with metrics (`lqd-metrics`) against lqd without, at one load.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct MetricsRound {
    pub(crate) deliveries_per_sec_off: f64,
    pub(crate) deliveries_per_sec_on: f64,
    pub(crate) p99_off_us: f64,
    pub(crate) p99_on_us: f64,
    /// On over off (deliveries/s above 1: on delivers more; p99 above 1: on is slower).
    pub(crate) deliveries_per_sec: Option<f64>,
    pub(crate) p99: Option<f64>,
}

/// lqd with its metrics scraped every second against lqd without, at one load (`--metrics`):
/// the k-th `lqd-metrics` run of the load paired with the k-th `lqd` run (a round), and over
/// all rounds: the mean deliveries/s on over the mean off, the median p99 on over the median
/// off, and the mean server CPU per change on over off.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct MetricsRatio {
    pub(crate) mode: String,
    pub(crate) filter: Option<String>,
    pub(crate) requestors: usize,
    pub(crate) rate: f64,
    pub(crate) rounds: Vec<MetricsRound>,
    pub(crate) deliveries_per_sec: Option<f64>,
    pub(crate) p99: Option<f64>,
    pub(crate) server_cpu_per_change: Option<f64>,
    /// Issue 16's goal: deliveries/s ratio at least 0.97 and p99 ratio at most 1.05.
    pub(crate) goal_met: bool,
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => v.get(n / 2).copied(),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// One [`MetricsRatio`] per load with both `lqd` and `lqd-metrics` runs, in the order of the
/// first `lqd-metrics` run of each.
pub(crate) fn metrics_ratios(runs: &[RunSummary]) -> Vec<MetricsRatio> {
    let mut out: Vec<MetricsRatio> = Vec::new();
    for on in runs.iter().filter(|r| r.system == LQD_METRICS) {
        if out.iter().any(|r| {
            r.mode == on.mode
                && r.filter == on.filter
                && r.requestors == on.requestors
                && r.rate.to_bits() == on.rate.to_bits()
        }) {
            continue;
        }
        let of = |system: &str| -> Vec<&RunSummary> {
            runs.iter()
                .filter(|r| r.system == system && same_load(r, on))
                .collect()
        };
        let (ons, offs) = (of(LQD_METRICS), of(LQD));
        let rounds: Vec<MetricsRound> = ons
            .iter()
            .zip(&offs)
            .map(|(on, off)| MetricsRound {
                deliveries_per_sec_off: off.deliveries_per_sec,
                deliveries_per_sec_on: on.deliveries_per_sec,
                p99_off_us: off.p99_us,
                p99_on_us: on.p99_us,
                deliveries_per_sec: ratio(on.deliveries_per_sec, off.deliveries_per_sec),
                p99: ratio(on.p99_us, off.p99_us),
            })
            .collect();
        if rounds.is_empty() {
            continue;
        }
        let paired = rounds.len();
        let col = |f: fn(&RunSummary) -> Option<f64>, v: &[&RunSummary]| -> Vec<f64> {
            v.iter().take(paired).filter_map(|r| f(r)).collect()
        };
        let pick = |a: Option<f64>, b: Option<f64>| a.zip(b).and_then(|(a, b)| ratio(a, b));
        let deliveries = pick(
            mean(&col(|r| Some(r.deliveries_per_sec), &ons)),
            mean(&col(|r| Some(r.deliveries_per_sec), &offs)),
        );
        let p99 = pick(
            median(&col(|r| Some(r.p99_us), &ons)),
            median(&col(|r| Some(r.p99_us), &offs)),
        );
        let cpu = pick(
            mean(&col(|r| r.server_cpu_us_per_change, &ons)),
            mean(&col(|r| r.server_cpu_us_per_change, &offs)),
        );
        out.push(MetricsRatio {
            mode: on.mode.clone(),
            filter: on.filter.clone(),
            requestors: on.requestors,
            rate: on.rate,
            rounds,
            deliveries_per_sec: deliveries,
            p99,
            server_cpu_per_change: cpu,
            goal_met: deliveries.is_some_and(|d| d >= METRICS_MIN_DELIVERIES)
                && p99.is_some_and(|p| p <= METRICS_MAX_P99),
        });
    }
    out
}

/// Whether `a` and `b` ran at the same load (same mode, filter, requestors and intended
/// rate).
fn same_load(a: &RunSummary, b: &RunSummary) -> bool {
    a.mode == b.mode
        && a.filter == b.filter
        && a.requestors == b.requestors
        && a.rate.to_bits() == b.rate.to_bits()
}

/// `a / b`, or `None` when `b` is not positive.
fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

/// One [`Ratio`] per lqd run that has at least one baseline run at the same load, in the
/// order of the lqd runs. When a load was run more than once by one system, its first run
/// is used.
pub(crate) fn ratios(runs: &[RunSummary]) -> Vec<Ratio> {
    let mut out: Vec<Ratio> = Vec::new();
    for lqd in runs.iter().filter(|r| r.system == LQD) {
        if out.iter().any(|r| {
            r.mode == lqd.mode
                && r.filter == lqd.filter
                && r.requestors == lqd.requestors
                && r.rate.to_bits() == lqd.rate.to_bits()
        }) {
            continue;
        }
        let versus = |system: &str| {
            runs.iter()
                .find(|r| r.system == system && same_load(r, lqd))
                .map(|b| Versus {
                    deliveries_per_sec: ratio(lqd.deliveries_per_sec, b.deliveries_per_sec),
                    p99: ratio(lqd.p99_us, b.p99_us),
                })
        };
        let (raw, redis, nats) = (versus("raw"), versus("redis"), versus("nats"));
        if raw.is_some() || redis.is_some() || nats.is_some() {
            out.push(Ratio {
                mode: lqd.mode.clone(),
                filter: lqd.filter.clone(),
                requestors: lqd.requestors,
                rate: lqd.rate,
                raw,
                redis,
                nats,
            });
        }
    }
    out
}

/// A latency in µs, in µs below 1 ms and in ms or s above, with three significant digits
/// or so.
pub(crate) fn latency(us: f64) -> String {
    if !us.is_finite() {
        return "–".to_owned();
    }
    if us < 10.0 {
        format!("{us:.1} µs")
    } else if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 10_000.0 {
        format!("{:.2} ms", us / 1e3)
    } else if us < 100_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else if us < 10_000_000.0 {
        format!("{:.0} ms", us / 1e3)
    } else {
        format!("{:.1} s", us / 1e6)
    }
}

/// A count or rate with thousands separators; two decimals when it is not whole.
pub(crate) fn number(x: f64) -> String {
    if !x.is_finite() {
        return "–".to_owned();
    }
    if x.fract() != 0.0 && x.abs() < 100.0 {
        return format!("{x:.2}");
    }
    let digits = format!("{:.0}", x.abs());
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if x < 0.0 && digits != "0" {
        out.push('-');
    }
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// A ratio as `1.23×`, or `–`.
fn times(r: Option<f64>) -> String {
    r.filter(|r| r.is_finite())
        .map_or_else(|| "–".to_owned(), |r| format!("{r:.2}×"))
}

/// The markdown report: every run, then lqd against the baselines (when any load has both).
/// With filtered runs among them, the lost/dup column also counts misdelivered changes.
pub(crate) fn markdown(runs: &[RunSummary]) -> String {
    let filtered = runs.iter().any(|r| r.filter.is_some());
    let mut out = format!(
        "| system | mode | N | rate/s | deliveries/s | p50 | p90 | p99 | p99.9 | max \
         | {} | server CPU % | server CPU µs/change | loadgen CPU % | server peak RSS MiB |\n\
         |---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
        if filtered {
            "lost/dup/misdelivered"
        } else {
            "lost/dup"
        }
    );
    for r in runs {
        let wrong = if filtered {
            format!("/{}", r.misdelivered)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{}{wrong} | {} | {} | {:.0} | {} |\n",
            r.system,
            r.mode,
            number(r.requestors as f64),
            number(r.rate),
            number(r.deliveries_per_sec),
            latency(r.p50_us),
            latency(r.p90_us),
            latency(r.p99_us),
            latency(r.p999_us),
            latency(r.max_us),
            r.lost,
            r.duplicated,
            r.server_cpu_pct
                .map_or_else(|| "–".to_owned(), |c| format!("{c:.0}")),
            r.server_cpu_us_per_change.map_or_else(|| "–".to_owned(), number),
            r.loadgen_cpu_pct,
            r.server_peak_rss_kib
                .map_or_else(|| "–".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0)),
        ));
    }
    let tls = tls_ratios(runs);
    if !tls.is_empty() {
        out.push_str(
            "\nlqd with every requestor on TLS (STARTTLS, rustls) against lqd in cleartext at the \
             same load (above 1: TLS delivers more, is slower, costs more CPU, holds more \
             memory):\n\n\
             | mode | N | rate/s | TLS/cleartext deliveries/s | p99 | server CPU µs/change \
             | server peak RSS |\n|---|--:|--:|--:|--:|--:|--:|\n",
        );
        for r in &tls {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                r.mode,
                number(r.requestors as f64),
                number(r.rate),
                times(r.deliveries_per_sec),
                times(r.p99),
                times(r.server_cpu_per_change),
                times(r.server_peak_rss),
            ));
        }
    }
    let metrics = metrics_ratios(runs);
    if !metrics.is_empty() {
        out.push_str(
            "\nlqd with its metrics endpoint scraped every second (GET /metrics and \
             /requestors) against lqd without, round by round at the same load (on/off: \
             deliveries/s above 1 is on delivering more; p99 above 1 is on slower):\n\n\
             | mode | N | rate/s | round | deliveries/s off | on | on/off | p99 off | on | on/off |\n\
             |---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
        );
        for r in &metrics {
            for (i, x) in r.rounds.iter().enumerate() {
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                    r.mode,
                    number(r.requestors as f64),
                    number(r.rate),
                    i + 1,
                    number(x.deliveries_per_sec_off),
                    number(x.deliveries_per_sec_on),
                    times(x.deliveries_per_sec),
                    latency(x.p99_off_us),
                    latency(x.p99_on_us),
                    times(x.p99),
                ));
            }
        }
        out.push_str(
            "\nOver all rounds (deliveries/s: mean on over mean off; p99: median on over median \
             off; server CPU per change: mean on over mean off). Goal (issue 16): deliveries/s \
             at least 0.97×, p99 at most 1.05×.\n\n\
             | mode | N | rate/s | rounds | on/off deliveries/s | on/off p99 \
             | on/off server CPU µs/change | goal |\n|---|--:|--:|--:|--:|--:|--:|---|\n",
        );
        for r in &metrics {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                r.mode,
                number(r.requestors as f64),
                number(r.rate),
                r.rounds.len(),
                times(r.deliveries_per_sec),
                times(r.p99),
                times(r.server_cpu_per_change),
                if r.goal_met { "met" } else { "missed" },
            ));
        }
    }
    let ratios = ratios(runs);
    if ratios.is_empty() {
        return out;
    }
    out.push_str(
        "\nlqd against the baselines at the same load (deliveries/s: above 1 is lqd delivering \
         more; p99: above 1 is lqd slower):\n\n\
         | mode | N | rate/s | lqd/raw deliveries/s | lqd/redis deliveries/s \
         | lqd/nats deliveries/s | lqd/raw p99 | lqd/redis p99 | lqd/nats p99 |\n\
         |---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for r in &ratios {
        let (raw, redis, nats) = (r.raw, r.redis, r.nats);
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.mode,
            number(r.requestors as f64),
            number(r.rate),
            times(raw.and_then(|v| v.deliveries_per_sec)),
            times(redis.and_then(|v| v.deliveries_per_sec)),
            times(nats.and_then(|v| v.deliveries_per_sec)),
            times(raw.and_then(|v| v.p99)),
            times(redis.and_then(|v| v.p99)),
            times(nats.and_then(|v| v.p99)),
        ));
    }
    out
}

/// The runs and the ratios as one JSON document: `{"runs": [...], "ratios": [...]}`.
pub(crate) fn json(runs: &[RunSummary]) -> Value {
    let mut doc = serde_json::Map::new();
    // Plain structs of numbers and strings: serialising them cannot fail (a non-finite float
    // becomes null).
    doc.insert(
        "runs".to_owned(),
        serde_json::to_value(runs).unwrap_or_default(),
    );
    doc.insert(
        "ratios".to_owned(),
        serde_json::to_value(ratios(runs)).unwrap_or_default(),
    );
    doc.insert(
        "tls_ratios".to_owned(),
        serde_json::to_value(tls_ratios(runs)).unwrap_or_default(),
    );
    doc.insert(
        "metrics_ratios".to_owned(),
        serde_json::to_value(metrics_ratios(runs)).unwrap_or_default(),
    );
    Value::Object(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(system: &str, mode: &str, requestors: usize, rate: f64) -> RunSummary {
        RunSummary {
            system: system.to_owned(),
            mode: mode.to_owned(),
            filter: None,
            requestors,
            rate,
            seconds: 10.0,
            changes: (rate * 10.0) as u64,
            deliveries: (rate * 10.0) as u64 * requestors as u64,
            deliveries_per_sec: rate * requestors as f64,
            lost: 0,
            duplicated: 0,
            misdelivered: 0,
            p50_us: 100.0,
            p90_us: 200.0,
            p99_us: 400.0,
            p999_us: 1_500.0,
            max_us: 25_000.0,
            server_cpu_pct: Some(55.0),
            server_cpu_us_per_change: Some(55.0),
            loadgen_cpu_pct: 80.0,
            server_peak_rss_kib: Some(20_480),
        }
    }

    /// The cells of a markdown table row.
    fn cells(row: &str) -> Vec<&str> {
        let inner = row
            .trim()
            .strip_prefix('|')
            .and_then(|r| r.strip_suffix('|'));
        inner
            .expect("a table row")
            .split('|')
            .map(str::trim)
            .collect()
    }

    #[test]
    fn ratios_match_mode_requestors_and_rate() {
        let mut lqd = run("lqd", "active", 1000, 100.0);
        lqd.deliveries_per_sec = 90_000.0;
        lqd.p99_us = 800.0;
        let mut redis = run("redis", "active", 1000, 100.0);
        redis.deliveries_per_sec = 100_000.0;
        redis.p99_us = 400.0;
        let mut raw = run("raw", "active", 1000, 100.0);
        raw.p99_us = 0.0;
        let runs = vec![
            lqd,
            redis,
            raw,
            // Only lqd at this load: no ratio.
            run("lqd", "active", 10, 100.0),
            // Only a baseline: no ratio.
            run("redis", "active", 100, 100.0),
            // Same N, other rate; same N and rate, other mode: no match.
            run("lqd", "active", 1000, 200.0),
            run("raw", "active", 1000, 300.0),
            run("lqd", "catch-up", 1000, 300.0),
            // Only raw here.
            run("lqd", "ramp", 20_000, 50.0),
            run("raw", "ramp", 20_000, 50.0),
            // A repeated lqd run at a compared load is not compared twice.
            run("lqd", "active", 1000, 100.0),
            // Same load, but filtered: not compared with the unfiltered runs.
            RunSummary {
                filter: Some("link".to_owned()),
                ..run("lqd", "active", 10, 100.0)
            },
            RunSummary {
                filter: Some("link".to_owned()),
                ..run("raw", "ramp", 20_000, 50.0)
            },
        ];
        let ratios = ratios(&runs);
        assert_eq!(ratios.len(), 2, "{ratios:?}");
        let first = &ratios[0];
        assert_eq!((first.mode.as_str(), first.requestors), ("active", 1000));
        let redis = first.redis.expect("a redis run");
        assert!((redis.deliveries_per_sec.expect("ratio") - 0.9).abs() < 1e-12);
        assert_eq!(redis.p99, Some(2.0));
        let raw = first.raw.expect("a raw run");
        assert_eq!(raw.deliveries_per_sec, Some(0.9));
        assert_eq!(raw.p99, None, "a zero p99 makes no ratio");
        let second = &ratios[1];
        assert_eq!((second.mode.as_str(), second.requestors), ("ramp", 20_000));
        assert_eq!(
            second.raw,
            Some(Versus {
                deliveries_per_sec: Some(1.0),
                p99: Some(1.0)
            })
        );
        assert_eq!(second.redis, None);
    }

    #[test]
    fn nats_and_tls_ratios() {
        let mut lqd = run("lqd", "active", 1000, 100.0);
        lqd.server_cpu_us_per_change = Some(100.0);
        lqd.server_peak_rss_kib = Some(1000);
        let mut tls = run("lqd-tls", "active", 1000, 100.0);
        tls.deliveries_per_sec = lqd.deliveries_per_sec * 0.8;
        tls.p99_us = 600.0;
        tls.server_cpu_us_per_change = Some(150.0);
        tls.server_peak_rss_kib = Some(3000);
        let mut nats = run("nats", "active", 1000, 100.0);
        nats.deliveries_per_sec = lqd.deliveries_per_sec / 2.0;
        let runs = vec![
            lqd,
            tls,
            nats,
            // TLS alone at a load: no ratio.
            run("lqd-tls", "active", 10, 100.0),
        ];
        let r = ratios(&runs);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].nats.and_then(|v| v.deliveries_per_sec), Some(2.0));
        assert_eq!((r[0].raw, r[0].redis), (None, None));
        let t = tls_ratios(&runs);
        assert_eq!(t.len(), 1, "{t:?}");
        assert!((t[0].deliveries_per_sec.expect("ratio") - 0.8).abs() < 1e-12);
        assert_eq!(t[0].p99, Some(1.5));
        assert_eq!(t[0].server_cpu_per_change, Some(1.5));
        assert_eq!(t[0].server_peak_rss, Some(3.0));
        let md = markdown(&runs);
        assert!(
            md.contains("| active | 1,000 | 100 | 0.80× | 1.50× | 1.50× | 3.00× |"),
            "{md}"
        );
        assert!(md.contains("lqd/nats deliveries/s"), "{md}");
        assert_eq!(json(&runs)["tls_ratios"][0]["p99"], 1.5);
    }

    #[test]
    fn metrics_ratios_pair_rounds_in_order() {
        let mut runs = Vec::new();
        // Round 1: off, on; round 2: on, off (alternating), and a load with lqd alone.
        for (system, dps, p99) in [
            ("lqd", 1_000_000.0, 1_000.0),
            ("lqd-metrics", 990_000.0, 1_020.0),
            ("lqd-metrics", 970_000.0, 1_200.0),
            ("lqd", 1_000_000.0, 1_000.0),
        ] {
            let mut r = run(system, "active", 1000, 2000.0);
            r.deliveries_per_sec = dps;
            r.p99_us = p99;
            runs.push(r);
        }
        runs.push(run("lqd", "active", 1000, 5000.0));
        let m = metrics_ratios(&runs);
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m[0].rounds.len(), 2);
        assert!((m[0].rounds[0].deliveries_per_sec.expect("ratio") - 0.99).abs() < 1e-12);
        assert!((m[0].rounds[1].p99.expect("ratio") - 1.2).abs() < 1e-12);
        assert!((m[0].deliveries_per_sec.expect("ratio") - 0.98).abs() < 1e-12);
        // The median of two p99s is their mean: 1,110 µs over 1,000 µs.
        assert!((m[0].p99.expect("ratio") - 1.11).abs() < 1e-12);
        assert!(!m[0].goal_met, "p99 1.11× misses the goal");
        let md = markdown(&runs);
        assert!(
            md.contains("| active | 1,000 | 2,000 | 2 | 0.98× | 1.11× | 1.00× | missed |"),
            "{md}"
        );
        assert_eq!(
            json(&runs)["metrics_ratios"][0]["rounds"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
    }

    #[test]
    fn markdown_table_shape() {
        let runs = vec![
            run("lqd", "active", 1000, 100.0),
            run("redis", "active", 1000, 100.0),
            RunSummary {
                server_cpu_pct: None,
                server_cpu_us_per_change: None,
                server_peak_rss_kib: None,
                ..run("raw", "active", 20_000, 10.0)
            },
        ];
        let text = markdown(&runs);
        let tables: Vec<Vec<&str>> = text
            .split("\n\n")
            .map(|t| t.lines().filter(|l| l.starts_with('|')).collect())
            .filter(|t: &Vec<&str>| !t.is_empty())
            .collect();
        assert_eq!(tables.len(), 2, "{text}");
        let (all, ratio) = (&tables[0], &tables[1]);
        assert_eq!(all.len(), 2 + runs.len(), "{text}");
        assert_eq!(ratio.len(), 2 + 1, "{text}");
        for table in [all, ratio] {
            let width = cells(table[0]).len();
            for row in table.iter() {
                assert_eq!(cells(row).len(), width, "{row}");
            }
        }
        assert_eq!(
            cells(all[2]),
            [
                "lqd", "active", "1,000", "100", "100,000", "100 µs", "200 µs", "400 µs",
                "1.50 ms", "25.0 ms", "0/0", "55", "55", "80", "20.0"
            ]
        );
        assert_eq!(cells(all[4])[2], "20,000");
        assert_eq!(cells(all[4])[11], "–");
        assert_eq!(cells(all[4])[12], "–");
        assert_eq!(cells(all[4])[14], "–");
        assert_eq!(
            cells(ratio[2]),
            [
                "active", "1,000", "100", "–", "1.00×", "–", "–", "1.00×", "–"
            ]
        );
        // No lqd run: no ratio table.
        assert!(!markdown(&runs[1..]).contains("lqd/redis"));
    }

    #[test]
    fn filtered_runs_count_misdelivered_changes_too() {
        let runs: Vec<RunSummary> = ["lqd", "raw"]
            .into_iter()
            .map(|system| RunSummary {
                filter: Some("relay-id".to_owned()),
                misdelivered: u64::from(system == "raw") * 3,
                server_cpu_us_per_change: Some(1234.5),
                ..run(system, "active", 100, 10.0)
            })
            .collect();
        let text = markdown(&runs);
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(cells(rows[0])[10], "lost/dup/misdelivered", "{text}");
        assert_eq!(cells(rows[0])[12], "server CPU µs/change", "{text}");
        assert_eq!(cells(rows[2])[10], "0/0/0", "{text}");
        assert_eq!(cells(rows[3])[10], "0/0/3", "{text}");
        assert_eq!(cells(rows[3])[12], "1,234", "{text}");
        let doc = json(&runs);
        assert_eq!(doc["runs"][1]["misdelivered"], 3);
        assert_eq!(doc["runs"][0]["filter"], "relay-id");
        assert_eq!(doc["ratios"][0]["filter"], "relay-id");
    }

    #[test]
    fn json_holds_runs_and_ratios() {
        let runs = vec![run("lqd", "active", 10, 5.0), run("raw", "active", 10, 5.0)];
        let doc = json(&runs);
        assert_eq!(doc["runs"].as_array().map(Vec::len), Some(2));
        assert_eq!(doc["runs"][1]["system"], "raw");
        assert_eq!(doc["ratios"][0]["raw"]["deliveries_per_sec"], 1.0);
        assert!(doc["ratios"][0]["redis"].is_null());
        let back: Vec<RunSummary> =
            serde_json::from_value(doc["runs"].clone()).expect("runs round-trip");
        assert_eq!(back[0].requestors, 10);
    }

    #[test]
    fn formats() {
        assert_eq!(latency(3.25), "3.2 µs");
        assert_eq!(latency(999.0), "999 µs");
        assert_eq!(latency(1_234.0), "1.23 ms");
        assert_eq!(latency(12_345.0), "12.3 ms");
        assert_eq!(latency(123_456.0), "123 ms");
        assert_eq!(latency(12_345_678.0), "12.3 s");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(999.0), "999");
        assert_eq!(number(1_234_567.4), "1,234,567");
        assert_eq!(number(2.5), "2.50");
        assert_eq!(times(Some(0.5)), "0.50×");
        assert_eq!(times(None), "–");
    }
}
