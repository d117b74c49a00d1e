//! The metrics endpoint (issue 16, docs/metrics.md) against a real lqd: what `/metrics` and
//! `/requestors` say matches what the test did (connections, queries by type and status,
//! deliveries, lags, closes), `promtool check metrics` accepts the exposition, and the HTTP
//! side keeps ordinary clients alive and closes bad ones without touching the loop.
//! (tests/metrics_prometheus.rs has a real Prometheus scrape it.)

#[path = "common/lqd.rs"]
mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Lqd, REQUESTOR, by_link, link, read_answers};
use lqd::codec::{BuildOptions, MessageBuilder, QueryType};

fn start(name: &str, demo: &str) -> (Lqd, SocketAddr) {
    let metrics = common::free_metrics_addr();
    let lqd = Lqd::start_with_demo(
        name,
        &format!("metrics_listen = \"{metrics}\"\nmetrics_requestor_series = 2\n"),
        demo,
    );
    lqd.wait_ready();
    (lqd, metrics)
}

/// One GET on a new connection: status line and body.
fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: lqd\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// `/metrics` as `name{labels} → value`.
fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

fn value(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {:#?}", sorted(m)))
}

fn sorted(m: &HashMap<String, f64>) -> Vec<(&String, &f64)> {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

/// Waits until `check` holds on a scrape (the gauges come from a snapshot taken each second).
fn eventually(
    addr: SocketAddr,
    what: &str,
    check: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = scrape(addr);
        if check(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "{what}: {:#?}", sorted(&m));
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn active(lqd: &Lqd, xid: u32, filter: Option<QueryType>) -> TcpStream {
    let mut s = lqd.connect();
    let mut b = MessageBuilder::active_leasequery(xid).client_id(&REQUESTOR);
    if let Some(t) = filter {
        b = b.lq_query(t, link(1), |q| q);
    }
    s.write_all(&b.build_frame().unwrap()).unwrap();
    s
}

/// Reads whatever an Active stream sends, in the background, until the test ends.
fn drain(mut s: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    });
}

#[test]
fn metrics_and_the_requestor_view_say_what_happened() {
    let (lqd, metrics) = start(
        "metrics",
        "clients = 300\nlinks = 4\nchanges_per_sec = 100\nseed = 11\n",
    );
    // Three Active requestors (one filtered by link), kept reading.
    for (xid, filter) in [(11, None), (12, None), (13, Some(QueryType::ByLinkAddress))] {
        drain(active(&lqd, xid, filter));
    }
    // A Bulk query by link, answered; one refused (link-address `::` is MalformedQuery).
    let mut s = lqd.connect();
    s.write_all(&by_link(21, link(2))).unwrap();
    read_answers(&mut s, &[21]);
    s.write_all(&by_link(22, std::net::Ipv6Addr::UNSPECIFIED))
        .unwrap();
    read_answers(&mut s, &[22]);
    drop(s);
    // A UDP query by address.
    let udp = UdpSocket::bind("[::1]:0").unwrap();
    let q = MessageBuilder::leasequery(31)
        .client_id(&REQUESTOR)
        .lq_query(QueryType::ByAddress, "2001:db8::1".parse().unwrap(), |q| q)
        .build()
        .unwrap();
    udp.send_to(&q, lqd.addr).unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 2048];
    udp.recv_from(&mut buf).expect("a UDP reply");

    let m = eventually(
        metrics,
        "three Active connections, deliveries flowing",
        |m| {
            m.get("lqd_connections{state=\"active\"}") == Some(&3.0)
                && m.get("lqd_active_deliveries_total")
                    .is_some_and(|d| *d > 100.0)
                && m.get("lqd_connections_closed_total") == Some(&1.0)
        },
    );
    assert_eq!(value(&m, "lqd_active_queries"), 3.0);
    assert_eq!(value(&m, "lqd_connections_accepted_total"), 4.0);
    assert_eq!(
        value(
            &m,
            "lqd_queries_total{message=\"leasequery\",query_type=\"link-address\",status=\"success\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "lqd_queries_total{message=\"leasequery\",query_type=\"link-address\",status=\"malformed-query\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "lqd_queries_total{message=\"activeleasequery\",query_type=\"all\",status=\"success\"}"
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            "lqd_queries_total{message=\"activeleasequery\",query_type=\"link-address\",status=\"success\"}"
        ),
        1.0
    );
    // An address outside the demo's links: answered, with whatever status lqd gives it.
    let udp_queries: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("lqd_queries_total{message=\"udp\",query_type=\"address\""))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(udp_queries, 1.0, "{:#?}", sorted(&m));
    // Every change reaches both unfiltered requestors: deliveries ≥ 2 × what was appended
    // since they started, and the filtered one adds its link's share.
    let appends = value(&m, "lqd_journal_appends_total");
    assert!(appends > 300.0, "{appends}");
    // One journal record in 16 is timed, for every requestor it goes to.
    let timed = value(&m, "lqd_fanout_latency_seconds_count");
    let deliveries = value(&m, "lqd_active_deliveries_total");
    assert!(
        timed > 0.0 && timed < deliveries / 4.0,
        "{timed} deliveries timed of {deliveries}"
    );
    assert!(value(&m, "lqd_fanout_latency_seconds_bucket{le=\"1\"}") > 0.0);
    // Every turn of the loop is counted, most of them short.
    let turns = value(&m, "lqd_loop_turn_seconds_count");
    assert!(turns > 10.0, "{turns} turns");
    assert!(
        value(&m, "lqd_loop_turn_seconds_bucket{le=\"0.025\"}") > turns / 2.0,
        "{turns} turns"
    );
    // 300 clients, a few of them between a release and their next lease.
    let bindings = value(&m, "lqd_bindings");
    assert!((250.0..=300.0).contains(&bindings), "{bindings}");
    assert!(value(&m, "lqd_sent_bytes_total{transport=\"tcp\"}") > 10_000.0);
    assert!(value(&m, "lqd_sent_bytes_total{transport=\"udp\"}") > 0.0);
    assert!(value(&m, "lqd_feed_changes_applied_total{source=\"demo\"}") >= appends - 1.0);
    assert!(value(&m, "process_resident_memory_bytes") > 1e6);
    // The cap of 2 per-requestor series: all connections come from ::1, one requestor.
    assert_eq!(
        value(&m, "lqd_requestor_connections{requestor=\"::1\"}"),
        3.0
    );
    assert_eq!(value(&m, "lqd_requestor_series_dropped"), 0.0);

    // /requestors: the three Active queries, live, and the closed Bulk connection.
    let (status, body) = get(metrics, "/requestors");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let conns = v["connections"].as_array().unwrap();
    let queries: Vec<&serde_json::Value> = conns
        .iter()
        .flat_map(|c| c["queries"].as_array().unwrap())
        .collect();
    assert_eq!(queries.len(), 3, "{body}");
    for q in &queries {
        assert_eq!(q["kind"], "active");
        assert_eq!(q["state"], "live");
        assert!(q["lag_records"].as_u64().unwrap() < 1000, "{q}");
        assert!(q["running_since_unix_s"].as_u64().unwrap() > 1_700_000_000);
    }
    assert!(
        queries.iter().any(|q| q["query_type"] == "link-address"),
        "{body}"
    );
    assert!(conns.iter().all(|c| c["bytes_sent"].as_u64().unwrap() > 0));
    // Live requestors that read keep up: lqd holds at most the high water for each.
    assert!(
        conns
            .iter()
            .all(|c| c["bytes_buffered"].as_u64().unwrap() <= 65_536 + 4096),
        "{body}"
    );
    let closed = v["recently_closed"].as_array().unwrap();
    assert_eq!(closed.len(), 1, "{body}");
    assert_eq!(closed[0]["reason"], "requestor closed the connection");

    // promtool (Debian's prometheus package) accepts the exposition.
    let (_, exposition) = get(metrics, "/metrics");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_http_side_serves_ordinary_clients_and_closes_bad_ones() {
    let (lqd, metrics) = start(
        "metrics-http",
        "clients = 50\nlinks = 2\nchanges_per_sec = 10\nseed = 3\n",
    );
    // Keep-alive: requests on one connection, as Prometheus scrapes. Each answer comes
    // whole at once: a head and a body written apart waited for the client's delayed ACK
    // (Nagle's algorithm), about 40 ms a request, which the median would show.
    let mut s = TcpStream::connect(metrics).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut took = Vec::new();
    for i in 0..12 {
        let (path, expect) = if i % 2 == 0 {
            ("/metrics", "lqd_build_info")
        } else {
            ("/requestors", "\"connections\"")
        };
        let t = std::time::Instant::now();
        // One write, as HTTP clients send a request (write! would send it in pieces).
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: lqd\r\n\r\n").as_bytes())
            .unwrap();
        let body = read_response(&mut s);
        took.push(t.elapsed());
        assert!(body.contains(expect), "{body}");
    }
    took.sort();
    assert!(
        took[took.len() / 2] < Duration::from_millis(25),
        "kept-alive requests took {took:?}"
    );
    // An unknown path, a POST, garbage: 404, 405, 400 and a close.
    assert_eq!(get(metrics, "/nothing").0, "HTTP/1.1 404 Not Found");
    let mut p = TcpStream::connect(metrics).unwrap();
    write!(p, "POST /metrics HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut all = String::new();
    p.read_to_string(&mut all).unwrap();
    assert!(all.starts_with("HTTP/1.1 405"), "{all}");
    let mut g = TcpStream::connect(metrics).unwrap();
    g.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    g.write_all(b"\x16\x03\x01\x00\xa5garbage that is not HTTP\r\n\r\n")
        .unwrap();
    let mut all = Vec::new();
    g.read_to_end(&mut all).expect("closed");
    assert!(
        all.starts_with(b"HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&all)
    );
    // A client that connects and says nothing holds only its own thread: scrapes and
    // leasequery go on meanwhile.
    let _silent: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(metrics).unwrap())
        .collect();
    assert!(
        scrape(metrics)
            .keys()
            .any(|k| k.starts_with("lqd_build_info{"))
    );
    let mut q = lqd.connect();
    q.write_all(&by_link(1, link(1))).unwrap();
    assert!(!read_answers(&mut q, &[1]).is_empty());
}

/// Reads one HTTP/1.1 response with a Content-Length body.
fn read_response(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    String::from_utf8(body).unwrap()
}
