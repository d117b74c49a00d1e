//! `lq watch` against a real lqd (digest §10.5, §10.6; decisions D3, D19): the replica ends
//! equal to lqd's bindings after lqd is killed with -9 and restarted, after lq itself is
//! restarted from its state file, after an outage longer than lqd's journal (DataMissing,
//! recovered by a resync), and when it starts without any link (the catch-up from the start of
//! the journal is the initial sync).

#[path = "common/lqd.rs"]
mod common;
#[path = "common/lq.rs"]
mod lq;

use std::io::Write;
use std::time::Duration;

use common::{Lqd, REQUESTOR, wait_for_log};
use lq::{LqWatch, diff, link_args, state, truth, wait_until};
use lqd::codec::{
    BuildOptions, Decoded, FrameDecoder, MessageBuilder, MessageRepr, OptionCode, ServerTime,
    Status,
};

/// `--link`s, `--state FILE` and a short save interval.
fn args(links: u16, state_file: &std::path::Path) -> Vec<String> {
    let mut a = link_args(links);
    a.extend([
        "--state".to_owned(),
        state_file.display().to_string(),
        "--save-interval".to_owned(),
        "0.2".to_owned(),
    ]);
    a
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Waits until the state file holds exactly lqd's bindings.
fn assert_ends_equal(lqd: &Lqd, links: u16, w: &LqWatch, file: &std::path::Path) {
    let mut last = String::from("no state file");
    let equal = wait_until(60, || {
        let t = truth(lqd, links);
        match state(file) {
            Some((_, r)) if r == t => true,
            Some((_, r)) => {
                last = diff(&r, &t);
                false
            }
            None => false,
        }
    });
    assert!(equal, "replica vs lqd: {last}\n{}", w.transcript());
}

fn changes(w: &LqWatch) -> usize {
    w.events()
        .iter()
        .filter(|e| matches!(e["event"].as_str(), Some("added" | "updated" | "removed")))
        .count()
}

#[test]
fn lq_watch_survives_kill_9_of_lqd_and_ends_equal_to_its_bindings() {
    let mut lqd = Lqd::start_with_demo(
        "lq-kill9",
        "",
        "clients = 400\nlinks = 3\nchanges_per_sec = 200\nseed = 21\nchurn_limit = 1500\n",
    );
    let file = lqd.dir.join("replica.json");
    let mut w = LqWatch::start(&lqd.dir, "kill9", lqd.addr, &strs(&args(3, &file)));
    // One stream per link.
    w.wait_events("catch_up_complete", 3, 30);
    // Changes over a few seconds, so that the resume point moves past the first START_TIME.
    let initial = changes(&w);
    assert!(
        wait_until(30, || changes(&w) >= initial + 500),
        "{}",
        w.transcript()
    );

    lqd.kill9_and_restart();
    w.wait_events("disconnected", 1, 30);
    w.wait_events("catch_up_complete", 6, 60);
    wait_for_log(&lqd, "demo: churn limit reached", 120);
    assert_ends_equal(&lqd, 3, &w, &file);
    assert!(w.running(), "lq watch is still running");

    // One initial sync; the reconnects resumed each stream from its saved base-time instead.
    assert_eq!(w.events_of("synced").len(), 1, "{}", w.transcript());
    let mut starts = std::collections::BTreeMap::<String, Vec<u64>>::new();
    for e in w.events_of("connected") {
        starts
            .entry(e["scope"].as_str().unwrap().to_owned())
            .or_default()
            .push(
                e["start_time_unix_s"]
                    .as_u64()
                    .expect("every connect has a START_TIME"),
            );
    }
    assert_eq!(starts.len(), 3, "{}", w.transcript());
    for starts in starts.values() {
        assert!(starts.len() >= 2, "{}", w.transcript());
        assert!(starts.windows(2).all(|p| p[0] <= p[1]), "{starts:?}");
        assert!(
            starts[1] > starts[0],
            "resumed from a live base-time: {starts:?}"
        );
    }
    assert!(w.terminate().success());
    assert_eq!(
        state(&file).unwrap().1,
        truth(&lqd, 3),
        "the state saved on SIGTERM"
    );
    eprintln!("{} changes; {}", changes(&w), w.transcript());
}

#[test]
fn a_restarted_lq_watch_resumes_from_its_state_file() {
    let lqd = Lqd::start_with_demo(
        "lq-resume",
        "",
        "clients = 300\nlinks = 2\nchanges_per_sec = 100\nseed = 22\nchurn_limit = 900\n",
    );
    let file = lqd.dir.join("replica.json");
    let mut first = LqWatch::start(&lqd.dir, "first", lqd.addr, &strs(&args(2, &file)));
    first.wait_events("catch_up_complete", 2, 30);
    let initial = changes(&first);
    assert!(wait_until(30, || changes(&first) >= initial + 20));
    assert!(first.terminate().success());
    let (saved, replica) = state(&file).expect("state saved on SIGTERM");
    let saved = saved.expect("a base-time");
    // lqd goes on changing while lq is down.
    assert!(wait_until(30, || truth(&lqd, 2) != replica));

    let (bases, _) = lq::state_by_stream(&file).unwrap();

    let second = LqWatch::start(&lqd.dir, "second", lqd.addr, &strs(&args(2, &file)));
    second.wait_events("catch_up_complete", 2, 30);
    let events = second.events();
    assert_eq!(events[0]["event"], "loaded", "{}", second.transcript());
    assert_eq!(events[0]["base_time_unix_s"].as_u64(), Some(saved));
    // Each link's stream resumed from its own saved base-time, the earliest being `saved`.
    assert_eq!(bases.iter().flatten().min(), Some(&saved));
    for (k, base) in (1..=2).zip(&bases) {
        let scope = format!("link-address={}", common::link(k));
        let connected: Vec<_> = events
            .iter()
            .filter(|e| e["event"] == "connected" && e["scope"] == scope.as_str())
            .collect();
        assert_eq!(connected.len(), 1, "{}", second.transcript());
        assert_eq!(connected[0]["start_time_unix_s"].as_u64(), *base, "resumed");
    }
    assert!(second.events_of("synced").is_empty(), "no Bulk sync needed");
    wait_for_log(&lqd, "demo: churn limit reached", 60);
    assert_ends_equal(&lqd, 2, &second, &file);
}

/// True when an ACTIVELEASEQUERY from `start` gets DataMissing: lqd's journal no longer
/// reaches back that far (D19).
fn journal_misses(lqd: &Lqd, start: u32) -> bool {
    let mut s = lqd.connect();
    let q = MessageBuilder::active_leasequery(0x77)
        .client_id(&REQUESTOR)
        .oro(&[OptionCode::LqBaseTime])
        .start_time(ServerTime(start))
        .build_frame()
        .unwrap();
    s.write_all(&q).unwrap();
    let mut buf = Vec::new();
    let mut dec = FrameDecoder::default();
    let mut chunk = [0u8; 4096];
    loop {
        if let Decoded::Frame { message, .. } = dec.decode(&buf).unwrap() {
            let m = MessageRepr::parse(message).unwrap();
            return m.options.status().map(|s| s.status) == Some(Status::DataMissing);
        }
        let n = std::io::Read::read(&mut s, &mut chunk).unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn with_a_journal_too_small_for_the_outage_data_missing_is_resynced_and_ends_equal() {
    let lqd = Lqd::start_with_demo(
        "lq-datamissing",
        "journal_size = 1048576",
        "clients = 2000\nlinks = 2\nchanges_per_sec = 2000\nseed = 23\nchurn_limit = 24000\n",
    );
    let file = lqd.dir.join("replica.json");
    let mut first = LqWatch::start(&lqd.dir, "first", lqd.addr, &strs(&args(2, &file)));
    first.wait_events("catch_up_complete", 2, 30);
    assert!(first.terminate().success());
    let saved = state(&file).unwrap().0.expect("a base-time");
    let saved_server_time = ServerTime::from_unix(saved).0;
    assert!(
        wait_until(60, || journal_misses(&lqd, saved_server_time)),
        "the 1 MiB journal wraps"
    );

    let second = LqWatch::start(&lqd.dir, "second", lqd.addr, &strs(&args(2, &file)));
    // Each link's stream misses data and is resynced (together, or one after the other).
    let missing = second.wait_events("data_missing", 2, 30);
    for m in &missing {
        assert_eq!(m["start_unix_s"].as_u64(), Some(saved));
        assert!(m["end_unix_s"].as_u64().unwrap() > saved);
        assert_eq!(m["recovery"], "resync");
    }
    let resynced = |w: &LqWatch| -> Vec<String> {
        let mut s: Vec<String> = w
            .events_of("synced")
            .iter()
            .inspect(|e| assert_eq!(e["recovery"], true))
            .flat_map(|e| e["scopes"].as_array().unwrap().clone())
            .map(|s| s.as_str().unwrap().to_owned())
            .collect();
        s.sort();
        s
    };
    let links: Vec<String> = (1..=2)
        .map(|k| format!("link-address={}", common::link(k)))
        .collect();
    assert!(
        wait_until(30, || resynced(&second) == links),
        "{}",
        second.transcript()
    );
    wait_for_log(&lqd, "demo: churn limit reached", 60);
    assert_ends_equal(&lqd, 2, &second, &file);
}

#[test]
fn without_links_lq_watch_syncs_by_the_catch_up_from_the_start_of_the_journal() {
    let lqd = Lqd::start_with_demo(
        "lq-nolinks",
        "",
        "clients = 300\nlinks = 2\nchanges_per_sec = 100\nseed = 24\nchurn_limit = 600\n",
    );
    let file = lqd.dir.join("replica.json");
    let w = LqWatch::start(
        &lqd.dir,
        "nolinks",
        lqd.addr,
        &["--state", file.to_str().unwrap(), "--save-interval", "0.2"],
    );
    w.wait_events("catch_up_complete", 1, 30);
    let connected = w.events_of("connected");
    assert_eq!(
        connected[0]["start_time_unix_s"].as_u64(),
        Some(ServerTime(1).to_unix()),
        "START_TIME = 1"
    );
    assert!(w.events_of("synced").is_empty(), "no Bulk");
    wait_for_log(&lqd, "demo: churn limit reached", 60);
    assert_ends_equal(&lqd, 2, &w, &file);
    std::thread::sleep(Duration::from_millis(10));
}
