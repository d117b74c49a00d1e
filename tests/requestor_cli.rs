//! The `lq` command line as a contract for scripts: `lq bulk` and `lq query` against a real
//! lqd print what lqd holds, as a table or as JSON Lines, with the documented exit codes (0
//! found, 1 nothing matched, 2 usage, 3 refused, 4 no answer, 5 incomplete, 6 state file)
//! and one-line errors.

#[path = "common/lqd.rs"]
mod common;
#[path = "common/fake.rs"]
mod fake;
#[path = "common/lq.rs"]
mod lq;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv6Addr;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Lqd, link, wait_for_log};
use fake::{FakeServer, bulk_answer};
use lq::{Bindings, truth_link};
use lqd::codec::Status;
use serde_json::Value;

fn lq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lq"))
        .args(args)
        .output()
        .unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The one line of stderr (every error is one line).
fn one_line_error(o: &Output) -> String {
    let e = stderr(o);
    assert_eq!(e.lines().count(), 1, "one line: {e:?}");
    assert!(e.starts_with("lq: "), "{e:?}");
    e
}

fn json_lines(o: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn bindings(lines: &[Value]) -> Bindings {
    let mut all = Bindings::new();
    for v in lines {
        let leases: BTreeSet<(Ipv6Addr, u8)> = v["leases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["address"].as_str().unwrap().parse().unwrap(),
                    l["prefix_len"].as_u64().unwrap() as u8,
                )
            })
            .collect();
        all.entry(v["client_id"].as_str().unwrap().to_owned())
            .or_default()
            .extend(leases);
    }
    all
}

#[test]
fn lq_bulk_and_query_print_what_lqd_holds_with_the_documented_exit_codes() {
    let lqd = Lqd::start_with_demo(
        "lq-cli",
        "",
        "clients = 300\nlinks = 2\nchanges_per_sec = 100\nseed = 26\nchurn_limit = 1\n",
    );
    wait_for_log(&lqd, "demo: churn limit reached", 30);
    let server = lqd.addr.to_string();
    let l1 = link(1).to_string();

    // bulk --json: one line per client, exactly lqd's bindings on that link.
    let o = lq(&["bulk", "--server", &server, "--link-address", &l1, "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let lines = json_lines(&o);
    assert_eq!(bindings(&lines), truth_link(&lqd, 1));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for v in &lines {
        let base = v["base_time_unix_s"].as_i64().unwrap();
        assert!(
            (now - 60..=now + 60).contains(&base),
            "the server's now, Unix: {v}"
        );
        assert!(
            v["last_transaction_unix_s"].as_i64().unwrap() <= now + 2,
            "{v}"
        );
        for l in v["leases"].as_array().unwrap() {
            let valid = l["valid_until_unix_s"].as_i64().unwrap();
            let preferred = l["preferred_until_unix_s"].as_i64().unwrap();
            assert!(valid > now && preferred <= valid, "local Unix seconds: {l}");
        }
    }

    // The table: a header, then one row per lease.
    let o = lq(&["bulk", "--server", &server, "--link-address", &l1]);
    assert_eq!(code(&o), 0);
    let table = String::from_utf8(o.stdout).unwrap();
    let header = table.lines().next().unwrap();
    assert!(header.starts_with("CLIENT-ID") && header.contains("VALID-UNTIL"));
    let leases: usize = truth_link(&lqd, 1).values().map(BTreeSet::len).sum();
    assert_eq!(table.lines().count(), 1 + leases, "{table}");

    // query by address and by client-id (colons allowed), over UDP.
    let first = &lines[0];
    let address = first["leases"][0]["address"].as_str().unwrap();
    let o = lq(&["query", "--server", &server, "--address", address, "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_lines(&o)[0]["client_id"], first["client_id"]);
    let id = first["client_id"].as_str().unwrap();
    let colons: Vec<&str> = (0..id.len()).step_by(2).map(|i| &id[i..i + 2]).collect();
    let o = lq(&[
        "query",
        "--server",
        &server,
        "--client-id",
        &colons.join(":"),
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        bindings(&json_lines(&o)),
        BTreeMap::from([(id.to_owned(), bindings(&lines)[id].clone())])
    );

    // 1: answered, nothing matched (also a START_TIME after every change).
    let o = lq(&[
        "query",
        "--server",
        &server,
        "--address",
        "2001:db8:0:1::dead",
    ]);
    assert_eq!(code(&o), 1);
    assert_eq!(one_line_error(&o), "lq: no binding matched\n");
    let later = (now + 3600).to_string();
    let o = lq(&[
        "bulk",
        "--server",
        &server,
        "--link-address",
        &l1,
        "--start",
        &later,
    ]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let o = lq(&[
        "bulk",
        "--server",
        &server,
        "--link-address",
        &l1,
        "--start",
        "2000-01-01T00:00:01Z",
        "--end",
        &format!("@{}", now + 60),
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        json_lines(&o).len(),
        lines.len(),
        "every binding in the window"
    );

    // 3: refused, with lqd's status.
    let o = lq(&["bulk", "--server", &server, "--link-address", "::"]);
    assert_eq!(code(&o), 3);
    assert!(
        one_line_error(&o).contains("MalformedQuery"),
        "{}",
        stderr(&o)
    );
    let o = lq(&["query", "--server", &server, "--address", "2001:db9::1"]);
    assert_eq!(code(&o), 3);
    assert!(one_line_error(&o).contains("NotConfigured"));

    // 4: nobody there (TCP refused; UDP gets the ICMP error).
    let closed = {
        let l = std::net::TcpListener::bind("[::1]:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let o = lq(&["bulk", "--server", &closed, "--link-address", &l1]);
    assert_eq!(code(&o), 4);
    assert!(one_line_error(&o).contains(&closed));
    let o = lq(&["query", "--server", &closed, "--address", "2001:db8::1"]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    one_line_error(&o);

    // 2: usage.
    for bad in [
        &["bulk", "--server", &server][..],
        &["bulk", "--server", &server, "--remote-id", "x:zz"],
        &["query", "--server", "nowhere", "--address", "::1"],
        &[
            "bulk",
            "--server",
            &server,
            "--link-address",
            &l1,
            "--start",
            "soon",
        ],
        &["watch", "--server", &server, "--filter", "color=blue"],
    ] {
        assert_eq!(code(&lq(bad)), 2, "{bad:?}");
    }
}

#[test]
fn an_answer_cut_short_exits_5_after_printing_what_came() {
    let server = FakeServer::start(|mut c| {
        while let Some(q) = c.read(Duration::from_secs(10)) {
            c.send(&bulk_answer(
                q.xid,
                1000,
                &q.requestor,
                &[(1, "2001:db8::1"), (2, "2001:db8::2")],
                Status::QueryTerminated,
            ));
        }
    });
    let o = lq(&[
        "bulk",
        "--server",
        &server.addr.to_string(),
        "--relay-id",
        "00:02:00:00:00:09:01",
        "--json",
    ]);
    assert_eq!(code(&o), 5);
    assert_eq!(json_lines(&o).len(), 2);
    assert!(one_line_error(&o).contains("incomplete: QueryTerminated"));
}

#[test]
fn an_unreadable_state_file_exits_6() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.json");
    std::fs::write(&file, "not json").unwrap();
    let o = lq(&[
        "watch",
        "--server",
        "[::1]:9",
        "--state",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 6);
    assert!(one_line_error(&o).starts_with("lq: state file "));
}
