//! Each loadgen mode, briefly and on small numbers, against a real lqd: the run must end
//! without a loss or an error, and its JSON report must hold the figures.
//!
//! Which lqd: `LQD_BIN` when set; otherwise the `lqd` of this workspace, in the target
//! directory and profile this test was built into (found from the test's own path,
//! `<target>/<profile>/deps/smoke-<hash>`, so `CARGO_TARGET_DIR`, `--target-dir` and
//! `--release` are all followed). `env!("CARGO_BIN_EXE_lqd")` only exists in lqd's own tests,
//! and `cargo test -p loadgen` does not build lqd's binary at all, so the test runs
//! `cargo build -p lqd --bin lqd` itself, once: a no-op when the binary is fresh (as after
//! `cargo test --workspace` has built it for lqd's tests), a build on a fresh clone, and never
//! a stale binary from an older checkout.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

/// The convention for times in every JSON the project writes (issue 17), shared with lqd's
/// tests.
#[path = "../../tests/common/json_times.rs"]
mod json_times;

/// The lqd binary to run, built if needed.
fn lqd() -> &'static Path {
    static LQD: OnceLock<PathBuf> = OnceLock::new();
    LQD.get_or_init(|| {
        if let Some(path) = std::env::var_os("LQD_BIN") {
            return PathBuf::from(path);
        }
        let exe = std::env::current_exe().expect("the test's own path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test runs from <target>/<profile>/deps");
        let target_dir = profile_dir.parent().expect("<target>/<profile>");
        let profile = profile_dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a profile directory");
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("loadgen sits in the workspace");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .current_dir(workspace)
            .args([
                "build",
                "--quiet",
                "-p",
                "lqd",
                "--bin",
                "lqd",
                "--target-dir",
            ])
            .arg(target_dir);
        match profile {
            "debug" => {}
            "release" => {
                build.arg("--release");
            }
            other => {
                build.args(["--profile", other]);
            }
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building lqd failed: {status}");
        let lqd = profile_dir.join(format!("lqd{}", std::env::consts::EXE_SUFFIX));
        assert!(lqd.is_file(), "no lqd at {}", lqd.display());
        lqd
    })
}

/// Runs loadgen with `args`, `--lqd` and `--json`; returns its JSON report after checking it
/// succeeded.
fn loadgen(name: &str, args: &[&str]) -> Value {
    loadgen_report(name, args).0
}

/// [`loadgen`], with its markdown report (standard output) too.
fn loadgen_report(name: &str, args: &[&str]) -> (Value, String) {
    let json =
        std::env::temp_dir().join(format!("loadgen-smoke-{name}-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .arg("--lqd")
        .arg(lqd())
        .arg("--json")
        .arg(&json)
        .output()
        .expect("loadgen runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "loadgen {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    eprintln!("{stdout}");
    let text = std::fs::read_to_string(&json).expect("the JSON report");
    let _ = std::fs::remove_file(&json);
    let report: Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(report["failures"], Value::Array(Vec::new()), "{text}");
    // No point in time in a loadgen report; its durations name their units.
    json_times::check(&report, &format!("loadgen {name}"));
    (report, stdout.into_owned())
}

#[test]
fn bulk_receives_every_binding() {
    let r = loadgen(
        "bulk",
        &[
            "bulk",
            "--bindings",
            "5000",
            "--concurrent",
            "1,3",
            "--rounds",
            "2",
        ],
    );
    assert_eq!(r["bindings"], 5000);
    let rounds = r["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 4, "two rounds at each concurrency");
    for round in rounds {
        let queries = round["queries"].as_array().expect("queries");
        assert_eq!(queries.len() as u64, round["concurrent"].as_u64().unwrap());
        let touched = round["touched_by_churn"].as_u64().unwrap();
        for q in queries {
            let got = q["bindings"].as_u64().unwrap();
            assert!(got + touched >= 5000 && got <= 5000, "{round}");
            assert!(q["bindings_per_sec"].as_f64().unwrap() > 0.0);
        }
        assert!(round["peak_rss_kib"].as_u64().unwrap() > 0);
        assert!(round["lqd_cpu_seconds"].as_f64().unwrap() >= 0.0);
    }
}

#[test]
fn udp_answers_every_query() {
    let r = loadgen(
        "udp",
        &[
            "udp",
            "--bindings",
            "2000",
            "--seconds",
            "1",
            "--clients",
            "2",
            "--window",
            "4",
            // Generous: a busy test machine must not turn a slow answer into a loss.
            "--timeout-ms",
            "5000",
        ],
    );
    assert_eq!(r["addresses"], 2000);
    let phase = &r["phases"][0];
    assert!(phase["answered"].as_u64().unwrap() > 100, "{phase}");
    assert_eq!(phase["missing"], 0);
    assert_eq!(phase["wrong"], 0);
    assert!(phase["p99_us"].as_u64().unwrap() >= phase["p50_us"].as_u64().unwrap());
}

/// The figures every fan-out run must have: nothing lost or duplicated, every change to every
/// requestor, percentiles in order.
fn check_run(run: &Value, requestors: u64, changes: u64) {
    check_figures(run, requestors, changes, requestors * changes);
    assert_eq!(run["filter"], Value::Null, "{run}");
}

/// A CPU figure of `run`: present, finite and not negative.
///
/// Not above zero: /proc counts CPU time in ticks of 10 ms, and a short run (a catch-up of a
/// few hundred changes takes about 4 ms in a release build) can fall between two ticks and
/// read as 0. What a run must show is that it was measured; the work itself is shown by the
/// deliveries, counted exactly.
fn cpu_figure(run: &Value, name: &str) -> f64 {
    let v = run[name]
        .as_f64()
        .unwrap_or_else(|| panic!("{name} measured: {run}"));
    assert!(v.is_finite() && v >= 0.0, "{name}: {run}");
    v
}

/// The figures of a run filtered by `filter`: each change to exactly one requestor (so
/// `changes` deliveries in all), none lost, duplicated or misdelivered.
fn check_filtered_run(run: &Value, requestors: u64, changes: u64, filter: &str) {
    check_figures(run, requestors, changes, changes);
    assert_eq!(run["filter"], filter, "{run}");
    cpu_figure(run, "server_cpu_us_per_change");
}

/// The figures of any run: `deliveries` in all, none lost, duplicated or misdelivered,
/// percentiles in order.
fn check_figures(run: &Value, requestors: u64, changes: u64, deliveries: u64) {
    assert_eq!(run["requestors"], requestors, "{run}");
    assert_eq!(run["changes"], changes, "{run}");
    assert_eq!(run["lost"], 0, "{run}");
    assert_eq!(run["duplicated"], 0, "{run}");
    assert_eq!(run["misdelivered"], 0, "{run}");
    assert_eq!(run["deliveries"], deliveries, "{run}");
    cpu_figure(run, "loadgen_cpu_pct");
    let pct = |name: &str| run[name].as_f64().expect(name);
    assert!(pct("p50_us") > 0.0, "{run}");
    assert!(pct("p50_us") <= pct("p90_us"), "{run}");
    assert!(pct("p90_us") <= pct("p99_us"), "{run}");
    assert!(pct("p99_us") <= pct("p999_us"), "{run}");
    assert!(pct("p999_us") <= pct("max_us"), "{run}");
}

/// The rows of the markdown table in `report` whose header starts with `header`, as cells.
fn table_rows(report: &str, header: &str) -> Vec<Vec<String>> {
    report
        .split("\n\n")
        .find(|t| t.starts_with(header))
        .expect("the table")
        .lines()
        .skip(2)
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect()
}

#[test]
fn active_fans_every_change_out_to_every_requestor() {
    // lqd, the raw sender and Redis, side by side: 30 requestors, 300 changes/s for 2 s.
    let r = loadgen(
        "active",
        &[
            "active",
            "--requestors",
            "30",
            "--rate",
            "300",
            "--seconds",
            "2",
            "--systems",
            "lqd,raw,redis",
        ],
    );
    let runs = r["runs"].as_array().expect("runs");
    let systems: Vec<&str> = runs.iter().map(|r| r["system"].as_str().unwrap()).collect();
    assert_eq!(systems, ["lqd", "raw", "redis"]);
    for run in runs {
        check_run(run, 30, 600);
        assert_eq!(run["mode"], "active");
        // 9,000 deliveries/s intended; a slow debug build on a busy machine stretches the
        // window, but not by four times.
        let dps = run["deliveries_per_sec"].as_f64().unwrap();
        assert!((2_000.0..=13_500.0).contains(&dps), "{run}");
        assert!(run["seconds"].as_f64().unwrap() >= 1.9, "{run}");
        if run["system"] != "raw" {
            assert!(run["server_peak_rss_kib"].as_u64().unwrap() > 1000, "{run}");
            cpu_figure(run, "server_cpu_pct");
        }
    }
    let ratios = r["summary"]["ratios"].as_array().expect("ratios");
    assert_eq!(ratios.len(), 1, "{ratios:?}");
    assert!(ratios[0]["raw"]["p99"].as_f64().unwrap() > 0.0);
    assert!(ratios[0]["redis"]["p99"].as_f64().unwrap() > 0.0);
    for d in r["details"].as_array().expect("details") {
        assert_eq!(d["complete"], true, "{d}");
    }
}

#[test]
fn catch_up_delivers_every_change_once_then_catch_up_complete() {
    let r = loadgen(
        "catch-up",
        &[
            "catch-up",
            "--requestors",
            "20",
            "--changes",
            "300",
            "--systems",
            "lqd,raw",
        ],
    );
    let runs = r["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    for run in runs {
        check_run(run, 20, 300);
        assert_eq!(run["mode"], "catch-up");
        assert!(run["seconds"].as_f64().unwrap() > 0.0, "{run}");
    }
    for d in r["catch_up"].as_array().expect("catch_up") {
        assert_eq!(d["complete"], true, "{d}");
    }
    assert!(r["catch_up"][0]["inject_seconds"].as_f64().unwrap() > 0.0);
}

#[test]
fn catch_up_at_carrier_scale_catches_everyone_up_while_live_changes_flow() {
    // A carrier population (every client relayed, half with a prefix), churn for the whole
    // run, 50 gateways away for 5 s reconnecting at once with START_TIME, 50 live beside
    // them. loadgen checks every delivery against the churn it injected (the run fails
    // otherwise); here, what the report must show.
    let r = loadgen(
        "catch-up-carrier",
        &[
            "catch-up",
            "--carrier",
            "--bindings",
            "20000",
            "--links",
            "100",
            "--requestors",
            "50",
            "--live-requestors",
            "50",
            "--away-seconds",
            "5",
            "--churn",
            "500",
            "--baseline-seconds",
            "2",
        ],
    );
    assert_eq!(r["bindings"], 20_000);
    assert!(
        r["leases"].as_u64().unwrap() > 25_000,
        "half hold a prefix: {r}"
    );
    assert_eq!(r["caught_up"], 50, "{r}");
    assert!(r["all_caught_up_seconds"].as_f64().unwrap() > 0.0, "{r}");
    // lqd's turns over the catch-up, from its metrics.
    assert!(r["lqd_turns_during"]["turns"].as_u64().unwrap() > 0, "{r}");
    // 500 changes/s over 100 links for 5 s away: about 25 per link, some coalesced.
    let records = &r["records_caught_up"];
    assert!(records["min"].as_f64().unwrap() >= 5.0, "{r}");
    let total = r["records_caught_up_total"].as_u64().unwrap();
    assert!((50 * 15..=50 * 40).contains(&total), "{r}");
    // Each caught up with its link's bindings changed while it was away, each once (the
    // bindings changed again after the reconnect may come before CatchUpComplete too).
    assert!(records["p50"].as_f64().unwrap() >= r["changed_while_away"]["p50"].as_f64().unwrap());
    for phase in ["live_before", "live_during", "live_after"] {
        let l = &r[phase];
        assert!(l["deliveries"].as_u64().unwrap() > 0, "{phase}: {r}");
        assert!(l["p99_ms"].as_f64().unwrap() > 0.0, "{phase}: {r}");
    }
    assert!(r["churn_changes"].as_u64().unwrap() >= 500 * 5, "{r}");
    assert!(r["rss_end_kib"].as_u64().unwrap() > 0, "{r}");
    assert!(r["live_p99_goal_met"].is_boolean(), "{r}");
}

#[test]
fn ramp_steps_up_until_the_bound_or_the_last_step() {
    // A bound no debug build misses at these rates: both steps must pass.
    let r = loadgen(
        "ramp",
        &[
            "ramp",
            "--requestors",
            "20",
            "--start-rate",
            "100",
            "--factor",
            "2",
            "--step-seconds",
            "1",
            "--max-steps",
            "2",
            "--p99-ms",
            "1000",
            "--systems",
            "lqd",
        ],
    );
    let steps = r["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert_eq!(steps[0]["rate"], 100.0);
    assert_eq!(steps[1]["rate"], 200.0);
    for s in steps {
        assert_eq!(s["missed"], Value::Null, "{s}");
    }
    assert_eq!(r["highest"][0]["rate"], 200.0);
    let runs = r["runs"].as_array().expect("runs");
    check_run(&runs[0], 20, 100);
    check_run(&runs[1], 20, 200);
}

#[test]
fn active_filtered_by_link_sends_each_change_to_its_requestor_only() {
    // 25 requestors, each asking for its own link; 300 changes/s for 2 s, change k on link
    // k mod 25; lqd, the raw sender and Redis (a channel per link) side by side.
    let (r, report) = loadgen_report(
        "active-link",
        &[
            "active",
            "--requestors",
            "25",
            "--rate",
            "300",
            "--seconds",
            "2",
            "--systems",
            "lqd,raw,redis",
            "--filter",
            "link",
        ],
    );
    assert_eq!(r["filter"], "link");
    let runs = r["runs"].as_array().expect("runs");
    let systems: Vec<&str> = runs.iter().map(|r| r["system"].as_str().unwrap()).collect();
    assert_eq!(systems, ["lqd", "raw", "redis"]);
    for run in runs {
        check_filtered_run(run, 25, 600, "link");
        assert_eq!(run["mode"], "active");
    }
    let ratios = r["summary"]["ratios"].as_array().expect("ratios");
    assert_eq!(ratios.len(), 1, "{ratios:?}");
    assert_eq!(ratios[0]["filter"], "link");
    assert!(ratios[0]["raw"]["p99"].as_f64().unwrap() > 0.0);
    assert!(ratios[0]["redis"]["p99"].as_f64().unwrap() > 0.0);
    for d in r["details"].as_array().expect("details") {
        assert_eq!(d["complete"], true, "{d}");
    }
    let rows = table_rows(&report, "| system | mode |");
    assert_eq!(rows.len(), 3, "{report}");
    for (row, system) in rows.iter().zip(["lqd", "raw", "redis"]) {
        assert_eq!(
            (row[0].as_str(), row[2].as_str()),
            (system, "25"),
            "{report}"
        );
        assert_eq!(row[10], "0/0/0", "lost/dup/misdelivered: {report}");
    }
    assert_eq!(r["preload"], false);
    assert!(
        report.lines().next().unwrap().contains(
            "; population not preloaded: each lqd run starts empty, and its first 100,000 changes"
        ),
        "{report}"
    );
}

#[test]
fn catch_up_filtered_by_relay_id_delivers_each_requestor_its_own_changes() {
    let (r, report) = loadgen_report(
        "catch-up-relay-id",
        &[
            "catch-up",
            "--requestors",
            "20",
            "--changes",
            "300",
            "--systems",
            "lqd,raw,redis",
            "--filter",
            "relay-id",
        ],
    );
    let runs = r["runs"].as_array().expect("runs");
    let systems: Vec<&str> = runs.iter().map(|r| r["system"].as_str().unwrap()).collect();
    assert_eq!(systems, ["lqd", "raw"], "Redis has no catch-up");
    for run in runs {
        // Each of the 20 requestors: its 15 changes, then CatchUpComplete.
        check_filtered_run(run, 20, 300, "relay-id");
        assert_eq!(run["mode"], "catch-up");
        assert!(run["seconds"].as_f64().unwrap() > 0.0, "{run}");
    }
    for d in r["catch_up"].as_array().expect("catch_up") {
        assert_eq!(d["complete"], true, "{d}");
    }
    assert!(report.contains("no redis run"), "{report}");
    assert_eq!(r["summary"]["ratios"][0]["redis"], Value::Null);
    let rows = table_rows(&report, "| system | N | changes | all caught up |");
    let systems: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(systems, ["lqd", "raw", "redis"], "{report}");
    assert!(
        rows[0][3].ends_with(" ms") || rows[0][3].ends_with(" s"),
        "{report}"
    );
    assert_eq!(rows[2][3..], ["n/a"; 5], "{report}");
}

#[test]
fn ramp_filtered_by_remote_id_steps_up_for_each_system() {
    let r = loadgen(
        "ramp-remote-id",
        &[
            "ramp",
            "--requestors",
            "20",
            "--start-rate",
            "100",
            "--factor",
            "2",
            "--step-seconds",
            "1",
            "--max-steps",
            "2",
            "--p99-ms",
            "1000",
            "--systems",
            "lqd,raw,redis",
            "--filter",
            "remote-id",
        ],
    );
    let steps = r["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 6, "{steps:?}");
    for s in steps {
        assert_eq!(s["missed"], Value::Null, "{s}");
    }
    for h in r["highest"].as_array().expect("highest") {
        assert_eq!(h["rate"], 200.0, "{h}");
    }
    let runs = r["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 6);
    for pair in runs.chunks(2) {
        check_filtered_run(&pair[0], 20, 100, "remote-id");
        check_filtered_run(&pair[1], 20, 200, "remote-id");
    }
}

/// The details of a preloaded run of `system` with `bindings` bindings: lqd's preloaded (a
/// duration), the baselines' not.
fn check_preloaded(detail: &Value, report: &str, bindings: &str) {
    if detail["system"] == "lqd" {
        assert_eq!(detail["preloaded"], true, "{detail}");
        assert!(
            detail["preload_seconds"].as_f64().unwrap() > 0.0,
            "{detail}"
        );
    } else {
        assert_eq!(detail["preloaded"], false, "{detail}");
        assert_eq!(detail["preload_seconds"], Value::Null, "{detail}");
    }
    assert_eq!(detail["complete"], true, "{detail}");
    let head = report.lines().next().expect("the header");
    assert!(
        head.contains(&format!(
            "population preloaded (--preload): before each lqd run's requestors subscribed, \
             its {bindings} bindings were written once to the feed and all journaled in "
        )),
        "{head}"
    );
    assert!(head.contains("raw and Redis keep no bindings"), "{head}");
}

#[test]
fn active_filtered_by_link_preloaded_renews_existing_bindings() {
    // 2,000 bindings preloaded on 25 links, then 600 changes: each renews one of them (its next
    // generation), and must reach its link's requestor alone, who subscribed after the preload
    // and so receives none of the preloaded changes (one would fail the run).
    let (r, report) = loadgen_report(
        "active-link-preload",
        &[
            "active",
            "--requestors",
            "25",
            "--rate",
            "300",
            "--seconds",
            "2",
            "--bindings",
            "2000",
            "--systems",
            "lqd,raw,redis",
            "--filter",
            "link",
            "--preload",
        ],
    );
    assert_eq!(r["preload"], true);
    let runs = r["runs"].as_array().expect("runs");
    let systems: Vec<&str> = runs.iter().map(|r| r["system"].as_str().unwrap()).collect();
    assert_eq!(systems, ["lqd", "raw", "redis"]);
    for run in runs {
        check_filtered_run(run, 25, 600, "link");
    }
    let details = r["details"].as_array().expect("details");
    assert_eq!(details.len(), 3);
    for d in details {
        check_preloaded(d, &report, "2,000");
    }
    for row in table_rows(&report, "| system | mode |") {
        assert_eq!(row[10], "0/0/0", "lost/dup/misdelivered: {report}");
    }
}

#[test]
fn ramp_preloaded_steps_up_over_existing_bindings() {
    let (r, report) = loadgen_report(
        "ramp-preload",
        &[
            "ramp",
            "--requestors",
            "20",
            "--start-rate",
            "100",
            "--factor",
            "2",
            "--step-seconds",
            "1",
            "--max-steps",
            "2",
            "--p99-ms",
            "1000",
            "--bindings",
            "1000",
            "--systems",
            "lqd",
            "--preload",
        ],
    );
    assert_eq!(r["preload"], true);
    let steps = r["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2, "{steps:?}");
    for s in steps {
        assert_eq!(s["missed"], Value::Null, "{s}");
    }
    let runs = r["runs"].as_array().expect("runs");
    check_run(&runs[0], 20, 100);
    check_run(&runs[1], 20, 200);
    for d in r["details"].as_array().expect("details") {
        check_preloaded(d, &report, "1,000");
    }
}

/// The hostile suite on two attacks: every garbage connection closed by lqd at once with the
/// codec's reason, the one-address flood refused at the per-requestor limit beyond its first
/// ten (which lqd closes as idle after BULK_LQ_DATA_TIMEOUT), every verdict read from lqd's
/// log by the attacker's address and port; and the well-behaved requestors, quiet and under
/// attack, lost nothing.
#[test]
fn hostile_attackers_are_ended_by_lqd_and_nothing_is_lost() {
    let (r, report) = loadgen_report(
        "hostile",
        &[
            "hostile",
            "--attacks",
            "garbage,flood-one",
            "--seconds",
            "2",
            "--bindings",
            "2000",
            "--rate",
            "200",
            "--requestors",
            "2",
            "--bulk-data-timeout",
            "2",
            "--active-send-timeout",
            "2",
            "--close-wait",
            "6",
            "--attack-rate",
            "50",
            "--flood-rate",
            "100",
            "--flood-one-open",
            "40",
        ],
    );
    let attacks = r["attacks"].as_array().expect("attacks");
    assert_eq!(attacks.len(), 2);
    for a in attacks {
        for phase in ["quiet", "attacked", "quiet_after"] {
            let p = &a[phase];
            assert_eq!(p["lost"], 0, "{phase}: {p}");
            assert_eq!(p["duplicated"], 0, "{phase}: {p}");
            assert_eq!(p["deliveries"], 2 * 400, "{phase}: {p}");
            assert!(!p["bulk_seconds"].as_array().unwrap().is_empty(), "{p}");
            assert!(p["p99_us"].as_f64().unwrap() > 0.0, "{p}");
        }
        let f = &a["fates"];
        assert_eq!(f["not_closed"], 0, "{f}");
        assert_eq!(f["no_log_line"], 0, "{f}");
    }
    let count = |m: &Value| -> u64 {
        m.as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum()
    };

    let garbage = &attacks[0]["fates"];
    assert_eq!(attacks[0]["attack"], "garbage");
    let n = garbage["connections"].as_u64().unwrap();
    assert!(n >= 20, "{garbage}");
    assert_eq!(
        count(&garbage["closed"]),
        n,
        "every one closed by lqd: {garbage}"
    );
    assert_eq!(count(&garbage["refused"]), 0, "{garbage}");
    for why in garbage["closed"].as_object().unwrap().keys() {
        assert!(
            why.starts_with("unparsable message")
                || why.starts_with("bad frame")
                || why.ends_with("is not a requestor's message"),
            "a codec's reason, not a timeout: {why}"
        );
    }
    for t in garbage["timing"].as_object().unwrap().values() {
        assert!(
            t["max_seconds"].as_f64().unwrap() < 1.0,
            "closed at once: {t}"
        );
    }

    let flood = &attacks[1]["fates"];
    assert_eq!(attacks[1]["attack"], "flood-one");
    let n = flood["connections"].as_u64().unwrap();
    assert!(n > 40, "{flood}");
    assert!(
        flood["refused"]["per-requestor limit"].as_u64().unwrap() > 0,
        "{flood}"
    );
    assert_eq!(
        count(&flood["refused"]) + count(&flood["closed"]),
        n,
        "{flood}"
    );
    let idle = &flood["timing"]["closed: blocked longer than BULK_LQ_DATA_TIMEOUT"];
    assert!(idle["count"].as_u64().unwrap() >= 10, "{flood}");
    assert!(idle["p50_seconds"].as_f64().unwrap() >= 2.0, "{flood}");

    for g in r["goals"].as_array().unwrap() {
        assert_eq!(g["every_attacker_ended_by_lqd"], true, "{g}");
        assert_eq!(g["nothing_lost"], true, "{g}");
    }
    assert!(report.contains("| garbage |"), "{report}");
}

/// Why `loadgen pgsql` cannot run here: no PostgreSQL server binaries (Debian's, under
/// `/usr/lib/postgresql`) or no `kea-admin`; none when both are there.
fn postgresql_missing() -> Option<String> {
    let server = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .any(|v| v.path().join("bin/initdb").is_file());
    if !server {
        return Some("no PostgreSQL server binaries under /usr/lib/postgresql".to_owned());
    }
    let kea_admin = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("kea-admin").is_file()));
    (!kea_admin).then(|| "no kea-admin on the PATH".to_owned())
}

#[test]
fn pgsql_one_and_two_instances_follow_kea_database_and_lose_nothing() {
    if let Some(why) = postgresql_missing() {
        eprintln!(
            "SKIPPED pgsql_one_and_two_instances_follow_kea_database_and_lose_nothing: {why} \
             (Debian: apt-get install postgresql kea-admin; .ci/setup installs them)"
        );
        return;
    }
    let (report, md) = loadgen_report(
        "pgsql",
        &[
            "pgsql",
            "--requestors",
            "5",
            "--rate",
            "200",
            "--seconds",
            "1",
            "--rounds",
            "1",
            "--bindings",
            "1000",
            "--release-every",
            "5",
        ],
    );
    let runs = report["runs"].as_array().expect("runs");
    let systems: Vec<&str> = runs.iter().map(|r| r["system"].as_str().unwrap()).collect();
    assert_eq!(systems, ["db-only", "lqd-pgsql", "lqd-pgsql-2"], "{md}");
    for r in runs {
        assert_eq!(r["changes"], 200, "{r}");
        assert_eq!(r["releases"], 40, "{r}");
        assert!(r["postgres_cpu_pct"].as_f64().unwrap() > 0.0, "{r}");
        let instances = r["instances"].as_u64().unwrap() as usize;
        assert_eq!(
            r["walsender_cpu_pct"].as_array().unwrap().len(),
            instances,
            "a WAL sender per lqd: {r}"
        );
        if instances == 0 {
            assert!(r["summary"].is_null(), "{r}");
            continue;
        }
        let each: Vec<u64> = r["requestors_each"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(each, if instances == 1 { vec![5] } else { vec![3, 2] });
        assert_eq!(r["complete"], true, "{r}");
        let s = &r["summary"];
        // Every change to every requestor, once: 200 changes × 5 requestors.
        assert_eq!(s["deliveries"], 1000, "{r}");
        assert_eq!(
            (&s["lost"], &s["duplicated"]),
            (&0.into(), &0.into()),
            "{r}"
        );
        assert!(s["p99_us"].as_f64().unwrap() > 0.0, "{r}");
        // Releases: at most one ended lease per release and requestor (one may be coalesced
        // into the return that follows it).
        assert_eq!(r["released_expected"], 200, "{r}");
        assert!(r["released_received"].as_u64().unwrap() <= 200, "{r}");
    }
    let versus = report["two_against_one"]
        .as_array()
        .expect("two_against_one");
    assert_eq!(versus.len(), 1, "{md}");
    assert!(versus[0]["deliveries_ratio"].as_f64().unwrap() > 0.0);
    assert!(
        md.contains("Two instances (the requestors split) against one"),
        "{md}"
    );
    assert!(md.contains("What each follower costs the database"), "{md}");
}

#[test]
fn scale_measures_memory_density_and_restart_with_either_feed() {
    // A small carrier population through lqd's JSON-lines source (the default) and through
    // its own demo source: each holds every binding, writes records of under 100 octets, and
    // serves the samples again after a restart from its snapshot and after `kill -9` without
    // it (a sample the churn touched is tolerated by loadgen, not a loss).
    for feed in ["jsonl", "demo"] {
        let r = loadgen(
            &format!("scale-{feed}"),
            &[
                "scale",
                "--feed",
                feed,
                "--bindings",
                "20000",
                "--links",
                "100",
                "--churn",
                "2000",
                "--churn-changes",
                "2000",
                "--journal-size",
                "33554432",
                "--samples",
                "200",
                "--full-replay",
            ],
        );
        assert_eq!(r["feed"], feed, "{r}");
        assert!(r["leases"].as_u64().unwrap() > 25_000, "{r}");
        assert!(r["rss_anon_kib"].as_u64().unwrap() > 0, "{r}");
        let density = r["journal_octets_per_record"].as_f64().unwrap();
        assert!((40.0..100.0).contains(&density), "{r}");
        let restart = &r["restart"];
        assert_eq!(restart["from_snapshot"], true, "{r}");
        assert!(restart["bindings"].as_u64().unwrap() >= 19_000, "{r}");
        assert!(restart["samples_right"].as_u64().unwrap() >= 195, "{r}");
        let full = &restart["full"];
        assert_eq!(full["from_snapshot"], false, "{r}");
        assert_eq!(full["bindings"], restart["bindings"], "{r}");
    }
}
