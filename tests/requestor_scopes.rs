//! `lq watch` follows only its scope (issue 12): each `--link`, `--relay-id` and `--remote-id`
//! is synced by its Bulk query and followed by an Active query filtered to it, so the replica
//! holds exactly the clients in scope through lqd's demo churn, and nothing outside it ever
//! enters. Each stream catches up from its own saved base-time after a restart, and a state
//! file of an `lq` that kept no streams (and followed every change) is resynced.
//!
//! Each test runs a real lqd with the demo's default population (10,000 clients on 16 links)
//! and the real `lq` binary. The tests take turns (one lqd churning at a time), so that each
//! one's timing holds on a small machine.

#[path = "common/lqd.rs"]
mod common;
#[path = "common/lq.rs"]
mod lq;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv6Addr;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use common::{Lqd, link, wait_for_log};
use lq::{Bindings, LqWatch, diff, state, state_by_stream, truth_link, truth_of, wait_until};
use lqd::codec::ServerTime;
use lqd::config::DemoSettings;
use lqd::feed::DemoSource;
use lqd::requestor::Query;
use serde_json::Value;

/// lqd's default demo churn is `[demo] changes_per_sec = 100` lease changes a second
/// (`DemoSettings::default()`), so an hour of it is 100 × 3,600 = 360,000 changes (a change is
/// one lease's: a renewal of a client holding an address and a prefix is two).
const HOUR_OF_DEFAULT_CHURN: u64 = 100 * 3600;

/// The rate the tests churn at: 60,000 changes a second, the default rate 600 times faster,
/// so that an hour takes six seconds.
const FAST: u32 = 60_000;

/// The demo's default population (10,000 clients on 16 links), churning at `rate` until
/// `churn` changes.
fn demo(seed: u64, rate: u32, churn: u64) -> DemoSettings {
    let d = DemoSettings::default();
    assert_eq!((d.clients, d.links, d.changes_per_sec), (10_000, 16, 100));
    DemoSettings {
        seed,
        changes_per_sec: rate,
        churn_limit: Some(churn),
        ..d
    }
}

/// lqd running `d`, with a journal of `journal_mib` MiB (about 4,600 demo changes a MiB).
fn start_lqd(name: &str, d: &DemoSettings, journal_mib: u32) -> Lqd {
    Lqd::start_with_demo(
        name,
        &format!("journal_size = {}", journal_mib << 20),
        &format!(
            "clients = {}\nlinks = {}\nchanges_per_sec = {}\nseed = {}\nchurn_limit = {}\n",
            d.clients,
            d.links,
            d.changes_per_sec,
            d.seed,
            d.churn_limit.unwrap()
        ),
    )
}

/// One test at a time.
fn serial() -> MutexGuard<'static, ()> {
    static ONE: Mutex<()> = Mutex::new(());
    ONE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The demo population's initial changes, as the lqd running `d` generates them: each
/// client's link and what its relays said (clients never change link in the demo).
fn population(d: &DemoSettings) -> Vec<lqd::store::Change> {
    let mut source = DemoSource::new(d.demo_config());
    let mut all = Vec::new();
    while !source.initial_done() {
        all.push(source.next_change(ServerTime(800_000_000)));
    }
    all
}

/// Client DUID (hex) → its link.
fn links_of(population: &[lqd::store::Change]) -> HashMap<String, Ipv6Addr> {
    population
        .iter()
        .map(|c| (hex::encode(&c.client_id), c.link))
        .collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `--state FILE --save-interval 0.2` after `scope`.
fn args(scope: &[String], file: &Path) -> Vec<String> {
    let mut a = scope.to_vec();
    a.extend([
        "--state".to_owned(),
        file.display().to_string(),
        "--save-interval".to_owned(),
        "0.2".to_owned(),
    ]);
    a
}

fn link_scope(links: &[u16]) -> Vec<String> {
    links
        .iter()
        .flat_map(|k| ["--link".to_owned(), link(*k).to_string()])
        .collect()
}

/// The change events (`added`, `updated`, `removed`) printed so far.
fn changes(w: &LqWatch) -> Vec<Value> {
    w.events()
        .into_iter()
        .filter(|e| matches!(e["event"].as_str(), Some("added" | "updated" | "removed")))
        .collect()
}

/// The `scope` of each event of `kind`, sorted.
fn scopes(w: &LqWatch, kind: &str) -> Vec<String> {
    let mut s: Vec<String> = w
        .events_of(kind)
        .iter()
        .map(|e| e["scope"].as_str().unwrap_or("null").to_owned())
        .collect();
    s.sort();
    s
}

fn union(parts: &[&Bindings]) -> Bindings {
    let mut all = Bindings::new();
    for p in parts {
        for (k, v) in *p {
            all.entry(k.clone()).or_default().extend(v.iter().copied());
        }
    }
    all
}

/// Waits until the state file's streams hold exactly `want` (stream → lqd's bindings for its
/// query, asked again on each try); the last difference on failure.
fn wait_streams_equal(
    file: &Path,
    w: &LqWatch,
    secs: u64,
    mut want: impl FnMut() -> BTreeMap<usize, Bindings>,
) {
    let mut last = String::from("no state file");
    let equal = wait_until(secs, || {
        let want = want();
        match state_by_stream(file) {
            Some((_, mut got)) => {
                got.retain(|_, b| !b.is_empty());
                let mut w = want.clone();
                w.retain(|_, b| !b.is_empty());
                if got == w {
                    return true;
                }
                last = w
                    .keys()
                    .chain(got.keys())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .map(|s| {
                        let (g, t) = (got.get(s).cloned(), w.get(s).cloned());
                        format!(
                            "stream {s}: {}",
                            diff(&g.unwrap_or_default(), &t.unwrap_or_default())
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                false
            }
            None => false,
        }
    });
    assert!(equal, "replica vs lqd:\n{last}\n{}", w.transcript());
}

/// Every client an event of `w` added or updated is one of `allowed`.
fn assert_only(w: &LqWatch, allowed: &dyn Fn(&str) -> bool, what: &str) {
    let strays: BTreeSet<String> = changes(w)
        .iter()
        .filter(|e| e["event"] != "removed")
        .filter_map(|e| e["client_id"].as_str())
        .filter(|id| !allowed(id))
        .map(str::to_owned)
        .collect();
    assert!(
        strays.is_empty(),
        "{} clients outside {what} entered the replica, such as {:?}",
        strays.len(),
        strays.iter().take(3).collect::<Vec<_>>()
    );
}

#[test]
fn two_links_hold_exactly_their_clients_through_an_hour_of_churn() {
    let _one = serial();
    let t0 = Instant::now();
    let d = demo(41, FAST, HOUR_OF_DEFAULT_CHURN);
    let homes = links_of(&population(&d));
    let lqd = start_lqd("scopes-links", &d, 8);
    let file = lqd.dir.join("replica.json");
    let w = LqWatch::start(
        &lqd.dir,
        "links",
        lqd.addr,
        &strs(&args(&link_scope(&[1, 2]), &file)),
    );
    w.wait_events("synced", 1, 20);
    let synced_changes = changes(&w).len();

    wait_for_log(&lqd, "demo: churn limit reached", 60);
    let churned_at = t0.elapsed();
    // The replica is exactly the two links' Bulk answers...
    let mut last = String::new();
    let equal = wait_until(20, || {
        let want = union(&[&truth_link(&lqd, 1), &truth_link(&lqd, 2)]);
        match state(&file) {
            Some((_, r)) if r == want => true,
            Some((_, r)) => {
                last = format!("{} clients vs {}: {}", r.len(), want.len(), diff(&r, &want));
                false
            }
            None => false,
        }
    });
    assert!(
        equal,
        "replica vs links 1 and 2: {last}\n{}",
        w.transcript()
    );
    // ... each stream's share the Bulk answer for its link.
    wait_streams_equal(&file, &w, 5, || {
        BTreeMap::from([(0, truth_link(&lqd, 1)), (1, truth_link(&lqd, 2))])
    });
    let (_, replica) = state(&file).unwrap();
    // One stream per link, each with its own xid and catch-up from its sync's base-time.
    let l1 = format!("link-address={}", link(1));
    let l2 = format!("link-address={}", link(2));
    assert_eq!(scopes(&w, "catch_up_complete"), [l1, l2]);
    let connected = w.events_of("connected");
    assert_eq!(connected.len(), 2, "{}", w.transcript());
    assert_ne!(connected[0]["xid"], connected[1]["xid"]);
    // No client of any other link, now or at any time during the hour.
    for k in 3..=16 {
        let other = truth_link(&lqd, k);
        assert!(!other.is_empty());
        let held: Vec<_> = other.keys().filter(|c| replica.contains_key(*c)).collect();
        assert!(held.is_empty(), "clients of link {k} held: {held:?}");
    }
    let ours = [link(1), link(2)];
    assert_only(
        &w,
        &|id| homes.get(id).is_some_and(|l| ours.contains(l)),
        "links 1 and 2",
    );
    // Followed live, not by resyncs: the one initial sync, no DataMissing, many changes.
    assert_eq!(w.events_of("synced").len(), 1, "{}", w.transcript());
    assert!(w.events_of("data_missing").is_empty(), "{}", w.transcript());
    let live = changes(&w).len() - synced_changes;
    assert!(live > 1000, "only {live} live changes");
    // Each stream's base-time is saved; the top-level one is the earliest.
    let (bases, _) = state_by_stream(&file).unwrap();
    let bases: Vec<u64> = bases.into_iter().map(Option::unwrap).collect();
    assert_eq!(bases.len(), 2);
    let text = std::fs::read_to_string(&file).unwrap();
    let top: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        top["base_time_unix_s"].as_u64(),
        bases.iter().min().copied()
    );
    eprintln!(
        "{HOUR_OF_DEFAULT_CHURN} changes churned by {churned_at:?}; replica: {} clients of \
         links 1 and 2 (of 10,000); {live} live changes; done in {:?}",
        replica.len(),
        t0.elapsed()
    );
}

#[test]
fn relay_id_and_remote_id_scopes_hold_exactly_their_clients_on_two_connections() {
    let _one = serial();
    let t0 = Instant::now();
    // 20 minutes of the default churn.
    let d = demo(42, FAST, 120_000);
    let pop = population(&d);
    let homes = links_of(&pop);
    // The access relay of link 5, and four clients of link 9 by their Remote-ID.
    let relay = pop
        .iter()
        .find(|c| c.link == link(5))
        .and_then(|c| c.relay.as_ref())
        .map(|r| r.relay_ids[0].to_vec())
        .unwrap();
    let mut remotes: Vec<(String, u32, Vec<u8>)> = Vec::new();
    for c in pop.iter().filter(|c| c.link == link(9)) {
        let r = &c.relay.as_ref().unwrap().remote_ids[0];
        let id = hex::encode(&c.client_id);
        if remotes.len() < 4 && !remotes.iter().any(|(i, ..)| *i == id) {
            remotes.push((id, r.enterprise_number, r.remote_id.to_vec()));
        }
    }
    let lqd = start_lqd("scopes-relay", &d, 8);
    let file = lqd.dir.join("replica.json");
    // The relay's DUID with colons, as `lq bulk --relay-id` takes it too.
    let relay_arg = relay
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let mut scope = vec!["--relay-id".to_owned(), relay_arg];
    for (_, e, r) in &remotes {
        scope.extend(["--remote-id".to_owned(), format!("{e}:{}", hex::encode(r))]);
    }
    let w = LqWatch::start(&lqd.dir, "relay", lqd.addr, &strs(&args(&scope, &file)));
    // Five streams: four on one connection (lqd runs 4 queries per connection), one on a
    // second; every one answered and caught up.
    w.wait_events("catch_up_complete", 5, 20);
    let mut expected: Vec<String> = remotes
        .iter()
        .map(|(_, e, r)| format!("remote-id={e}:{}", hex::encode(r)))
        .collect();
    expected.push(format!("relay-id={}", hex::encode(&relay)));
    expected.sort();
    assert_eq!(scopes(&w, "catch_up_complete"), expected);
    let any = Ipv6Addr::UNSPECIFIED;
    let queries: Vec<Query> = std::iter::once(Query::RelayId {
        duid: relay.clone(),
        link: any,
    })
    .chain(remotes.iter().map(|(_, e, r)| Query::RemoteId {
        enterprise_number: *e,
        remote_id: r.clone(),
        link: any,
    }))
    .collect();

    wait_for_log(&lqd, "demo: churn limit reached", 60);
    wait_streams_equal(&file, &w, 20, || {
        queries
            .iter()
            .enumerate()
            .map(|(s, q)| (s, truth_of(&lqd, q)))
            .collect()
    });
    // The relay's stream is link 5, exactly; nothing else ever entered.
    let (_, by_stream) = state_by_stream(&file).unwrap();
    let link5 = truth_link(&lqd, 5);
    assert!(link5.len() > 300, "{}", link5.len());
    assert_eq!(by_stream.get(&0), Some(&link5));
    let ids: Vec<&str> = remotes.iter().map(|(i, ..)| i.as_str()).collect();
    assert_only(
        &w,
        &|id| homes.get(id) == Some(&link(5)) || ids.contains(&id),
        "the relay's link and the four Remote-IDs",
    );
    assert!(w.events_of("data_missing").is_empty(), "{}", w.transcript());
    eprintln!(
        "{} clients behind the relay, {} of the 4 Remote-IDs bound; done in {:?}",
        link5.len(),
        (1..5).filter(|s| by_stream.contains_key(s)).count(),
        t0.elapsed()
    );
}

#[test]
fn a_restarted_watch_catches_up_each_stream_from_its_own_base_time() {
    let _one = serial();
    let t0 = Instant::now();
    // 40 minutes of the default churn at 20,000 a second: 12 s, most of it while the watch
    // runs, stopped, and runs again. The journal (32 MiB, about 150,000 changes) reaches back
    // over the outage, so each stream catches up rather than resyncs.
    let d = demo(43, 20_000, 240_000);
    let lqd = start_lqd("scopes-restart", &d, 32);
    let file = lqd.dir.join("replica.json");
    let a = strs(&args(&link_scope(&[3, 4]), &file))
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    let mut first = LqWatch::start(&lqd.dir, "first", lqd.addr, &strs(&a));
    first.wait_events("catch_up_complete", 2, 20);
    let initial = changes(&first).len();
    assert!(wait_until(20, || changes(&first).len() >= initial + 500));
    assert!(first.terminate().success());
    let (bases, saved) = state_by_stream(&file).expect("state saved on SIGTERM");
    let bases: Vec<u64> = bases.into_iter().map(Option::unwrap).collect();
    assert_eq!(bases.len(), 2);
    // lqd goes on churning while lq is down: both links change.
    assert!(wait_until(20, || {
        truth_link(&lqd, 3) != saved.get(&0).cloned().unwrap_or_default()
            && truth_link(&lqd, 4) != saved.get(&1).cloned().unwrap_or_default()
    }));
    std::thread::sleep(std::time::Duration::from_secs(2));

    let second = LqWatch::start(&lqd.dir, "second", lqd.addr, &strs(&a));
    second.wait_events("catch_up_complete", 2, 20);
    let events = second.events();
    assert_eq!(events[0]["event"], "loaded", "{}", second.transcript());
    assert_eq!(
        events[0]["base_time_unix_s"].as_u64(),
        bases.iter().min().copied()
    );
    // Each stream resumed from its own saved base-time.
    let l3 = format!("link-address={}", link(3));
    let l4 = format!("link-address={}", link(4));
    let starts: BTreeMap<String, u64> = second
        .events_of("connected")
        .iter()
        .map(|e| {
            (
                e["scope"].as_str().unwrap().to_owned(),
                e["start_time_unix_s"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        starts,
        BTreeMap::from([(l3.clone(), bases[0]), (l4.clone(), bases[1])]),
        "{}",
        second.transcript()
    );
    assert_eq!(scopes(&second, "catch_up_complete"), [l3, l4]);
    assert!(second.events_of("synced").is_empty(), "no Bulk needed");
    assert!(
        !changes(&second).is_empty(),
        "the catch-ups brought changes"
    );

    wait_for_log(&lqd, "demo: churn limit reached", 60);
    wait_streams_equal(&file, &second, 20, || {
        BTreeMap::from([(0, truth_link(&lqd, 3)), (1, truth_link(&lqd, 4))])
    });
    eprintln!("done in {:?}", t0.elapsed());
}

#[test]
fn a_state_file_of_an_lq_that_followed_every_change_is_resynced_to_the_scope() {
    let _one = serial();
    let lqd = Lqd::start("scopes-legacy", "");
    let file = lqd.dir.join("replica.json");
    // What `lq watch --link 1 --link 2` wrote before it kept streams: one base-time, and the
    // clients of every link (issue 12).
    let all = lq::truth(&lqd, 4);
    let clients: Vec<Value> = all
        .iter()
        .map(|(id, leases)| {
            serde_json::json!({
                "client_id": id,
                "last_transaction_ms": null,
                "leases": leases.iter().map(|(a, len)| serde_json::json!({
                    "kind": if *len == 128 { "address" } else { "prefix" },
                    "address": a.to_string(), "prefix_len": len,
                    "preferred_until_ms": null, "valid_until_ms": null,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let old = serde_json::json!({
        "version": 1,
        "server": lqd.addr.to_string(),
        "scope": format!("link {}, link {}", link(1), link(2)),
        "base_time": 800_000_000u32,
        "clients": clients,
    });
    std::fs::write(&file, old.to_string()).unwrap();

    let w = LqWatch::start(
        &lqd.dir,
        "legacy",
        lqd.addr,
        &strs(&args(&link_scope(&[1, 2]), &file)),
    );
    let loaded = w.wait_events("loaded", 1, 20);
    assert_eq!(loaded[0]["clients"].as_u64(), Some(all.len() as u64));
    // Its base-time, server seconds since 2000 in version 1, read as the Unix time it is.
    assert_eq!(
        loaded[0]["base_time_unix_s"].as_u64(),
        Some(800_000_000 + 946_684_800)
    );
    let synced = w.wait_events("synced", 1, 20);
    assert_eq!(synced[0]["queries"], 2);
    w.wait_events("catch_up_complete", 2, 20);
    wait_streams_equal(&file, &w, 20, || {
        BTreeMap::from([(0, truth_link(&lqd, 1)), (1, truth_link(&lqd, 2))])
    });
    let (_, replica) = state(&file).unwrap();
    for k in [3, 4] {
        assert!(
            truth_link(&lqd, k).keys().all(|c| !replica.contains_key(c)),
            "link {k}'s clients are gone"
        );
    }
}
