//! One convention for times in every JSON lqd and `lq` write (issue 17): a point in time is
//! whole Unix seconds in a field ending in `_unix_s`, a duration names its unit. Read from the
//! real programs: `lq query --json`, `lq bulk --json`, `lq watch --json` and its `--state`
//! file, lqd's `/requestors`; and a state file an earlier `lq` wrote (version 1: server
//! seconds since 2000 and Unix milliseconds) still loads, its times converted, and is written
//! back in the convention. (loadgen's JSON report is checked by loadgen/tests/smoke.rs.)

#[path = "common/lqd.rs"]
mod common;
#[path = "common/json_times.rs"]
mod json_times;
#[path = "common/lq.rs"]
mod lq;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output};
use std::time::Duration;

use common::{Lqd, link};
use json_times::{DHCPV6_EPOCH_UNIX, assert_about_now, check, values_of};
use lq::{LqWatch, wait_until};
use serde_json::{Value, json};

fn lq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lq"))
        .args(args)
        .output()
        .unwrap()
}

fn json_lines(o: &Output) -> Vec<Value> {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `GET /requestors` from lqd's metrics listener.
fn requestors(addr: SocketAddr) -> Value {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::io::Write::write_all(
        &mut s,
        b"GET /requestors HTTP/1.1\r\nHost: lqd\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    let (_, body) = all.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap()
}

/// A version 2 state file written back as version 1 wrote it: base-times and the server's end
/// times in seconds since 2000, local times in Unix milliseconds.
fn as_version_1(v2: &Value) -> Value {
    let server = |t: &Value| json!(t.as_u64().map(|t| t - DHCPV6_EPOCH_UNIX));
    let ms = |t: &Value| json!(t.as_i64().map(|t| t * 1000 + 999));
    let lease = |l: &Value| {
        let mut old = json!({
            "kind": l["kind"], "address": l["address"], "prefix_len": l["prefix_len"],
            "preferred_until_ms": ms(&l["preferred_until_unix_s"]),
            "valid_until_ms": ms(&l["valid_until_unix_s"]),
        });
        if let Some(ends) = l["server_ends_unix_s"].as_array() {
            old["server_ends"] = json!([server(&ends[0]), server(&ends[1])]);
        }
        old
    };
    let client = |c: &Value| {
        let mut old = json!({
            "client_id": c["client_id"],
            "last_transaction_ms": ms(&c["last_transaction_unix_s"]),
            "leases": c["leases"].as_array().unwrap().iter().map(lease).collect::<Vec<_>>(),
        });
        if let Some(s) = c.get("stream") {
            old["stream"] = s.clone();
        }
        old
    };
    json!({
        "version": 1,
        "server": v2["server"],
        "scope": v2["scope"],
        "base_time": server(&v2["base_time_unix_s"]),
        "streams": v2["streams"].as_array().unwrap().iter()
            .map(|s| json!({"base_time": server(&s["base_time_unix_s"])}))
            .collect::<Vec<_>>(),
        "clients": v2["clients"].as_array().unwrap().iter().map(client).collect::<Vec<_>>(),
    })
}

#[test]
fn every_json_output_gives_times_as_unix_seconds_named_so() {
    let metrics = common::free_metrics_addr();
    let lqd = Lqd::start_with_demo(
        "json-times",
        &format!("metrics_listen = \"{metrics}\"\n"),
        "clients = 300\nlinks = 2\nchanges_per_sec = 20\nseed = 17\n",
    );
    let server = lqd.addr.to_string();
    let l1 = link(1).to_string();

    // lq bulk --json: each client's base-time (the server's now), last transaction, lease
    // ends, all Unix seconds.
    let bulk = json_lines(&lq(&[
        "bulk",
        "--server",
        &server,
        "--link-address",
        &l1,
        "--json",
    ]));
    assert!(bulk.len() > 10, "{bulk:?}");
    for line in &bulk {
        let found = check(line, "lq bulk");
        assert_about_now(
            values_of(&found, "base_time_unix_s")[0],
            60,
            "base_time_unix_s",
        );
        let last = values_of(&found, "last_transaction_unix_s")[0].expect("a transaction");
        assert!(last <= json_times::now_unix() + 2, "{line}");
        for valid in values_of(&found, "valid_until_unix_s")
            .into_iter()
            .flatten()
        {
            assert!(
                valid > json_times::now_unix(),
                "a live lease ends later: {line}"
            );
        }
        assert!(
            !values_of(&found, "preferred_until_unix_s").is_empty(),
            "{line}"
        );
    }

    // lq query --json (UDP, RFC 5007: no base-time asked for, so `null`): the same fields.
    let address = bulk[0]["leases"][0]["address"].as_str().unwrap();
    let query = json_lines(&lq(&[
        "query",
        "--server",
        &server,
        "--address",
        address,
        "--json",
    ]));
    assert_eq!(query.len(), 1, "{query:?}");
    let found = check(&query[0], "lq query");
    assert_eq!(values_of(&found, "base_time_unix_s"), [None]);
    assert_about_now(
        values_of(&found, "last_transaction_unix_s")[0],
        3600,
        "last_transaction_unix_s",
    );

    // lq watch --json and its state file; lqd's /requestors while it runs.
    let file = lqd.dir.join("replica.json");
    let scope = ["--link", &l1, "--state", file.to_str().unwrap()];
    let mut watch = LqWatch::start(&lqd.dir, "times", lqd.addr, &scope);
    let done = watch.wait_events("catch_up_complete", 1, 30);
    let found = check(&done[0], "catch_up_complete");
    assert_about_now(
        values_of(&found, "base_time_unix_s")[0],
        60,
        "base_time_unix_s",
    );
    assert_about_now(
        values_of(&found, "local_time_unix_s")[0],
        60,
        "local_time_unix_s",
    );
    assert!(done[0]["skew_ms"].is_i64(), "{}", done[0]);
    assert!(wait_until(20, || !watch.events_of("updated").is_empty()
        || !watch.events_of("added").is_empty()));

    // The view is a snapshot the loop publishes once a second: wait for one with the watch.
    let mut view = requestors(metrics);
    assert!(wait_until(10, || {
        view = requestors(metrics);
        view["connections"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    }));
    let found = check(&view, "/requestors");
    assert_about_now(
        values_of(&found, "taken_at_unix_s")[0],
        10,
        "taken_at_unix_s",
    );
    let since = values_of(&found, "connected_since_unix_s");
    assert!(!since.is_empty(), "{view}");
    for t in since
        .into_iter()
        .chain(values_of(&found, "running_since_unix_s"))
    {
        assert_about_now(t, 120, "connected_since_unix_s / running_since_unix_s");
    }
    let closed = values_of(&found, "closed_at_unix_s");
    assert!(!closed.is_empty(), "the Bulk connection closed: {view}");
    for t in closed {
        assert_about_now(t, 120, "closed_at_unix_s");
    }

    assert!(watch.terminate().success());
    let events = watch.events();
    let mut seen = Vec::new();
    for e in &events {
        let found = check(e, "lq watch");
        seen.extend(
            found
                .into_iter()
                .map(|(path, _)| path.rsplit('.').next().unwrap_or_default().to_owned()),
        );
    }
    for name in [
        "start_time_unix_s",
        "base_time_unix_s",
        "valid_until_unix_s",
    ] {
        assert!(seen.iter().any(|s| s == name), "no {name} in {events:?}");
    }
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(saved["version"], 2);
    let found = check(&saved, "the state file");
    let base = values_of(&found, "base_time_unix_s");
    assert_about_now(base[0], 120, "the state file's base_time_unix_s");
    assert!(
        !values_of(&found, "server_ends_unix_s").is_empty(),
        "{saved}"
    );
    assert!(
        !values_of(&found, "valid_until_unix_s").is_empty(),
        "{saved}"
    );

    // The same state as an earlier lq wrote it still loads: the same clients, the same
    // base-time (converted), and it is written back in the convention.
    let clients = saved["clients"].as_array().unwrap().len() as u64;
    std::fs::write(&file, as_version_1(&saved).to_string()).unwrap();
    let mut again = LqWatch::start(&lqd.dir, "times-v1", lqd.addr, &scope);
    let loaded = again.wait_events("loaded", 1, 20);
    assert_eq!(
        loaded[0]["clients"].as_u64(),
        Some(clients),
        "{}",
        again.transcript()
    );
    assert_eq!(loaded[0]["base_time_unix_s"], saved["base_time_unix_s"]);
    let connected = again.wait_events("connected", 1, 20);
    assert_eq!(
        connected[0]["start_time_unix_s"], saved["streams"][0]["base_time_unix_s"],
        "resumed from the saved base-time"
    );
    again.wait_events("catch_up_complete", 1, 30);
    assert!(again.terminate().success());
    let rewritten: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(rewritten["version"], 2);
    check(&rewritten, "the rewritten state file");
}
