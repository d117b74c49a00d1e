//! The snapshot of the mirror beside the journal (D43) against a real lqd: a clean stop writes
//! it, the next start serves from it exactly what a start replaying the whole journal serves,
//! and `kill -9` at any moment (during appends after a snapshot, during the snapshot's own
//! write) loses nothing: the start after it serves what the journal holds.

#[path = "common/lqd.rs"]
mod common;
#[path = "common/watching.rs"]
mod watching;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Lqd, wait_for_log};
use lqd::feed::{DemoConfig, DemoSource};
use lqd::requestor::Query;

const LINKS: u16 = 4;

/// Every binding lqd holds, link by link, as a Bulk query answers it: each client's DUID, its
/// leases with their ends in server time, and its relay data. (Not the base-time: lqd's clock
/// at the answer.)
fn everything(lqd: &Lqd) -> Vec<String> {
    let queries: Vec<Query> = (1..=LINKS)
        .map(|k| Query::LinkAddress(DemoSource::link_address(k)))
        .collect();
    let mut all: Vec<String> = watching::bulk_answers(lqd, &queries)
        .into_iter()
        .flat_map(|(q, (clients, _))| clients.into_iter().map(move |c| format!("{q}: {c}")))
        .collect();
    all.sort();
    all
}

fn bindings_in(all: &[String]) -> usize {
    all.len()
}

/// The two answers are the same; else the first few differences.
#[track_caller]
fn assert_same(a: &[String], b: &[String], what: &str) {
    if a == b {
        return;
    }
    let only_a: Vec<&String> = a.iter().filter(|x| !b.contains(x)).take(3).collect();
    let only_b: Vec<&String> = b.iter().filter(|x| !a.contains(x)).take(3).collect();
    panic!(
        "{what}: {} and {} bindings; only in the first: {only_a:#?}; only in the second: {only_b:#?}",
        a.len(),
        b.len()
    );
}

fn snapshot_of(lqd: &Lqd) -> PathBuf {
    lqd.dir.join("lqd-journal.snapshot")
}

/// The demo's links as `[[link]]` tables: a snapshot is used only under the links it was made
/// with (D16), and lqd on another source than the demo has none unless they are configured.
fn demo_links() -> String {
    let config = DemoConfig {
        links: LINKS,
        ..DemoConfig::default()
    };
    let mut out = String::new();
    for l in DemoSource::link_defs(&config) {
        fn list<T: std::fmt::Display>(v: &[T]) -> String {
            v.iter()
                .map(|p| format!("\"{p}\""))
                .collect::<Vec<_>>()
                .join(", ")
        }
        out.push_str(&format!(
            "[[link]]\naddress = \"{}\"\nprefixes = [{}]\npd_pools = [{}]\n",
            l.address,
            list(&l.prefixes),
            list(&l.pd_pools)
        ));
    }
    out
}

/// Rewrites lqd's configuration to take `source`, with the demo's links configured.
fn set_source(lqd: &Lqd, source: &str) {
    let path = lqd.dir.join("lqd.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    let mut out = String::new();
    for line in config.lines() {
        if line.starts_with("source = ") {
            out.push_str(&format!("source = \"{source}\"\n"));
        } else if line == "[demo]" && !config.contains("[[link]]") {
            out.push_str(&demo_links());
            out.push_str("[demo]\n");
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    std::fs::write(&path, out).unwrap();
}

/// A source that sends nothing: what lqd serves then comes from what it kept.
fn silent(lqd: &Lqd) -> String {
    format!("jsonl:unix:{}", lqd.dir.join("feed.sock").display())
}

/// Restarts lqd (killing it first if it runs) on a source that sends nothing; its log.
fn restart_silent(lqd: &mut Lqd) -> String {
    set_source(lqd, &silent(lqd));
    lqd.kill9_and_restart_until("source: jsonl:unix");
    lqd.log()
}

/// Restarts lqd (killing it first if it runs) on the churning demo.
fn restart_demo(lqd: &mut Lqd) {
    set_source(lqd, "demo");
    lqd.kill9_and_restart_until("source: demo");
}

fn wait_until(lqd: &Lqd, text: &str) {
    wait_for_log(lqd, text, 60);
}

/// What a start that replays the whole journal serves: the snapshot moved aside for it, and
/// back after; lqd is left killed.
fn from_the_whole_journal(lqd: &mut Lqd) -> Vec<String> {
    let snap = snapshot_of(lqd);
    let aside = lqd.dir.join("snapshot.aside");
    let had = snap.exists();
    if had {
        std::fs::rename(&snap, &aside).unwrap();
    }
    let log = restart_silent(lqd);
    assert!(!log.contains("snapshot loaded"), "{log}");
    let all = everything(lqd);
    lqd.child.kill().unwrap();
    lqd.child.wait().unwrap();
    if had {
        std::fs::rename(&aside, &snap).unwrap();
    }
    all
}

/// SIGTERM, then SIGKILL `delay` after lqd began its clean stop (the log says so when its
/// connections are closed; the snapshot is written after the journal's flush).
fn sigkill_after(lqd: &mut Lqd, delay: Duration) {
    let pid = lqd.child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lqd.log().contains("shutting down") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(delay);
    let _ = lqd.child.kill();
    lqd.child.wait().unwrap();
}

const DEMO: &str = "clients = 3000\nlinks = 4\nchanges_per_sec = 3000\nseed = 17\n";

#[test]
fn a_clean_stop_writes_a_snapshot_and_the_next_start_serves_from_it() {
    let mut lqd = Lqd::start_with_demo(
        "snapshot-clean",
        "",
        "clients = 3000\nlinks = 4\nchanges_per_sec = 3000\nseed = 17\nchurn_limit = 3000\n",
    );
    wait_until(&lqd, "demo: churn limit reached");
    std::thread::sleep(Duration::from_millis(300));
    let before = everything(&lqd);
    assert!(bindings_in(&before) > 2500, "{}", bindings_in(&before));
    assert!(lqd.sigterm().success());
    let log = lqd.log();
    assert!(log.contains("snapshot written"), "{log}");
    assert!(snapshot_of(&lqd).exists());
    assert!(!lqd.dir.join("lqd-journal.snapshot.tmp").exists());

    let log = restart_silent(&mut lqd);
    assert!(log.contains("snapshot loaded"), "{log}");
    assert!(log.contains("replayed=0"), "{log}");
    assert_same(&everything(&lqd), &before, "from the snapshot");
    assert_same(
        &from_the_whole_journal(&mut lqd),
        &before,
        "from the journal",
    );

    // A snapshot that is damaged is refused with one line naming why; the journal serves.
    let snap = snapshot_of(&lqd);
    let mut file = std::fs::read(&snap).unwrap();
    let at = file.len() / 3;
    file[at] ^= 1;
    std::fs::write(&snap, &file).unwrap();
    let log = restart_silent(&mut lqd);
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("snapshot not used"))
        .collect();
    assert_eq!(refused.len(), 1, "{log}");
    assert!(refused[0].contains("damaged"), "{log}");
    assert_same(&everything(&lqd), &before, "after a refused snapshot");
}

#[test]
fn kill_9_during_appends_after_a_snapshot_loses_nothing() {
    let mut lqd = Lqd::start_with_demo("snapshot-appends", "", DEMO);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(lqd.sigterm().success());
    assert!(lqd.log().contains("snapshot written"), "{}", lqd.log());
    // Appends after the snapshot, killed in their midst, three times over.
    for round in 0..3u64 {
        restart_demo(&mut lqd);
        assert!(lqd.log().contains("snapshot loaded"), "{}", lqd.log());
        std::thread::sleep(Duration::from_millis(700 + 300 * round));
        let log = restart_silent(&mut lqd);
        assert!(log.contains("snapshot loaded"), "round {round}: {log}");
        assert!(
            !log.contains("replayed=0"),
            "round {round}: records after it: {log}"
        );
        let served = everything(&lqd);
        assert!(bindings_in(&served) > 2500);
        assert_same(
            &served,
            &from_the_whole_journal(&mut lqd),
            &format!("round {round}"),
        );
    }
}

#[test]
fn kill_9_during_the_snapshot_write_leaves_a_whole_snapshot() {
    // Large enough that writing its snapshot takes a while in a debug build.
    let demo = "clients = 20000\nlinks = 4\nchanges_per_sec = 5000\nseed = 23\n";
    let mut lqd = Lqd::start_with_demo("snapshot-torn", "journal_size = 33554432\n", demo);
    wait_until(&lqd, "demo: initial population sent");
    std::thread::sleep(Duration::from_millis(3000));
    assert!(lqd.sigterm().success());
    assert!(lqd.log().contains("snapshot written"), "{}", lqd.log());
    // A temporary file left by an earlier crash changes nothing.
    std::fs::write(lqd.dir.join("lqd-journal.snapshot.tmp"), b"LQDSNAP\0half").unwrap();
    let mut torn = 0;
    let delays = [0u64, 15, 30, 50, 75, 100];
    for (round, delay) in delays.into_iter().enumerate() {
        restart_demo(&mut lqd);
        std::thread::sleep(Duration::from_millis(400));
        let started = Instant::now();
        sigkill_after(&mut lqd, Duration::from_millis(delay));
        let log = lqd.log();
        if log.contains("shutting down") && !log.contains("snapshot written") {
            torn += 1;
        }
        if let Some(line) = log.lines().find(|l| l.contains("snapshot written")) {
            eprintln!("round {round}: {line}");
        }
        let log = restart_silent(&mut lqd);
        assert!(
            log.contains("snapshot loaded") && !log.contains("snapshot not used"),
            "round {round} (killed {:?} after SIGTERM): {log}",
            started.elapsed()
        );
        let served = everything(&lqd);
        assert!(bindings_in(&served) > 18_000, "{}", bindings_in(&served));
        assert_same(
            &served,
            &from_the_whole_journal(&mut lqd),
            &format!("round {round}"),
        );
    }
    eprintln!(
        "{torn} of {} kills landed during the snapshot's write",
        delays.len()
    );
    assert!(torn > 0, "no kill landed during the write");
}
