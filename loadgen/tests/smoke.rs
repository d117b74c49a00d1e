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
    report
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
