//! lqd's metrics with real parts (issue 16): Debian's Prometheus scrapes a real lqd every
//! second while the demo source churns at a known rate and 20 Active requestors read every
//! change, and PromQL through Prometheus's HTTP API gives what the test knows:
//!
//! - deliveries/s = journal appends/s × requestors (within 5 %), and = what the requestors
//!   themselves read per second; appends/s = the demo's changes/s;
//! - Active connections and queries = 20, their lag small, fan-out latency under a second;
//! - once the churn stops: bindings and leases = what Bulk queries of every link find, the
//!   deliveries counter = the updates the requestors read, octets sent = octets they read,
//!   changes received = the demo's own count, connections accepted = those the test opened.
//!
//! Besides: `promtool check metrics` accepts the exposition; every metric of docs/metrics.md
//! is exposed with its type and documented labels (the contract); `/requestors` lists the 20
//! requestors by peer, and the closed Bulk connection; every PromQL expression of
//! contrib/grafana/lqd.json parses in Prometheus and names only metrics lqd exposes, and every
//! documented metric has a panel.

#[path = "common/lqd.rs"]
mod common;
#[path = "common/prometheus.rs"]
mod prometheus;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Lqd, REQUESTOR, by_link, link, read_answers, rss_kib, wait_for_log};
use lqd::codec::{
    BuildOptions, Decoded, DhcpOption, FrameDecoder, MessageBuilder, MessageRepr, OptionCode,
};
use lqd::store::journal::HEADER_LEN;
use prometheus::{Prometheus, free_port, get, promtool_check_metrics};
use serde_json::Value;

const REQUESTORS: usize = 20;
const CHANGES_PER_SEC: u32 = 200;
/// The churn lasts this long, then stops so that the figures settle.
const CHURN_SECS: u32 = 25;
const LINKS: u16 = 4;
const JOURNAL_SIZE: u64 = 8 * 1024 * 1024;
/// The window of the rate checks.
const WINDOW_SECS: u64 = 15;

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// One Active requestor: a plain TCP connection with an unfiltered ACTIVELEASEQUERY, read on
/// its own thread, counting binding updates (messages with client data) and octets.
struct Reader {
    local: SocketAddr,
    updates: Arc<AtomicU64>,
    octets: Arc<AtomicU64>,
    thread: JoinHandle<()>,
}

impl Reader {
    fn start(lqd: &Lqd, xid: u32, stop: &Arc<AtomicBool>) -> Self {
        let mut s = lqd.connect();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let query = MessageBuilder::active_leasequery(xid)
            .client_id(&REQUESTOR)
            .build_frame()
            .unwrap();
        s.write_all(&query).unwrap();
        let local = s.local_addr().unwrap();
        let (updates, octets) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (u, o, stop) = (Arc::clone(&updates), Arc::clone(&octets), Arc::clone(stop));
        let thread = std::thread::spawn(move || read_stream(s, &u, &o, &stop));
        Self {
            local,
            updates,
            octets,
            thread,
        }
    }
}

fn read_stream(mut s: TcpStream, updates: &AtomicU64, octets: &AtomicU64, stop: &AtomicBool) {
    let mut dec = FrameDecoder::default();
    let (mut buf, mut chunk) = (Vec::new(), vec![0u8; 1 << 16]);
    while !stop.load(Ordering::Relaxed) {
        let n = match s.read(&mut chunk) {
            Ok(0) => panic!("lqd closed an Active stream"),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => panic!("reading an Active stream: {e}"),
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut pos = 0;
        let mut found = 0;
        while let Decoded::Frame { message, consumed } = dec.decode(&buf[pos..]).unwrap() {
            let m = MessageRepr::parse(message).unwrap();
            if m.options.get(OptionCode::ClientData).is_some() {
                found += 1;
            }
            pos += consumed;
        }
        buf.drain(..pos);
        // Octets only for whole messages, so both counters move together.
        octets.fetch_add(pos as u64, Ordering::SeqCst);
        updates.fetch_add(found, Ordering::SeqCst);
    }
}

/// The updates and octets all readers have read.
fn read_so_far(readers: &[Reader]) -> (u64, u64) {
    readers.iter().fold((0, 0), |(u, o), r| {
        (
            u + r.updates.load(Ordering::SeqCst),
            o + r.octets.load(Ordering::SeqCst),
        )
    })
}

/// What Bulk queries of every link find: bindings, address leases, prefix leases, and the
/// octets the answers took (frames included).
fn bulk_census(lqd: &Lqd) -> (u64, u64, u64, u64) {
    let mut s = lqd.connect();
    let (mut bindings, mut addresses, mut prefixes, mut octets) = (0, 0, 0, 0);
    for k in 1..=LINKS {
        s.write_all(&by_link(u32::from(k), link(k))).unwrap();
        for m in read_answers(&mut s, &[u32::from(k)]) {
            octets += m.len() as u64 + 2;
            let r = MessageRepr::parse(&m).unwrap();
            if let Some(DhcpOption::ClientData(cd)) = r.options.get(OptionCode::ClientData) {
                bindings += 1;
                for o in cd.iter() {
                    match o {
                        DhcpOption::IaAddr(_) => addresses += 1,
                        DhcpOption::IaPrefix(_) => prefixes += 1,
                        _ => {}
                    }
                }
            }
        }
    }
    (bindings, addresses, prefixes, octets)
}

/// The exposition, parsed: family name → type, and every sample with its labels.
struct Exposition {
    types: BTreeMap<String, String>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

fn parse_exposition(text: &str) -> Exposition {
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut w = rest.split_whitespace();
            types.insert(w.next().unwrap().to_owned(), w.next().unwrap().to_owned());
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (name_labels, value) = match line.find('}') {
            Some(end) => (&line[..=end], line[end + 1..].trim()),
            None => line.split_once(' ').unwrap(),
        };
        let value: f64 = value.split_whitespace().next().unwrap().parse().unwrap();
        let (name, labels) = match name_labels.split_once('{') {
            Some((n, l)) => (n.to_owned(), parse_labels(l.trim_end_matches('}'))),
            None => (name_labels.to_owned(), BTreeMap::new()),
        };
        samples.push((name, labels, value));
    }
    Exposition { types, samples }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((name, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, e)) = chars.next() {
                        value.push(match e {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(name.trim().trim_start_matches(',').trim().to_owned(), value);
        rest = &after[end..];
    }
    out
}

/// The family a sample belongs to (a histogram's `_bucket`, `_sum` and `_count` are its own).
fn family<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.get(base).is_some_and(|t| t == "histogram") {
                return base;
            }
        }
    }
    name
}

/// One row of docs/metrics.md's table: name, type, and labels with their documented values
/// (empty when the docs do not enumerate them).
struct Documented {
    name: String,
    kind: String,
    labels: BTreeMap<String, BTreeSet<String>>,
}

fn documented_metrics() -> Vec<Documented> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md")).unwrap();
    let tick =
        |s: &str| -> Vec<String> { s.split('`').skip(1).step_by(2).map(str::to_owned).collect() };
    doc.lines()
        .filter(|l| l.starts_with("| `"))
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let name = tick(cells[1]).remove(0);
            let kind = cells[2].split_whitespace().next().unwrap().to_owned();
            let labels = cells[3]
                .split(';')
                .filter_map(|part| {
                    let mut names = tick(part);
                    if names.is_empty() {
                        return None;
                    }
                    let label = names.remove(0);
                    Some((label, names.into_iter().collect()))
                })
                .collect();
            Documented { name, kind, labels }
        })
        .collect()
}

/// Every PromQL expression of the Grafana dashboard (panel targets, rows included).
fn dashboard_expressions() -> Vec<String> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/grafana/lqd.json"
    ))
    .unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("lqd.json is JSON");
    fn walk(panels: &Value, out: &mut Vec<String>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push(e.to_owned());
                }
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Grafana's variables replaced by fixed values, as Grafana would before sending a query.
fn substitute(expr: &str) -> String {
    let mut e = expr.to_owned();
    for (var, value) in [
        ("${__rate_interval}", "15s"),
        ("$__rate_interval", "15s"),
        ("${__interval}", "5s"),
        ("$__interval", "5s"),
        ("${__range}", "1m"),
        ("$__range", "1m"),
        ("${instance}", ".*"),
        ("$instance", ".*"),
    ] {
        e = e.replace(var, value);
    }
    e
}

/// The metric names an expression uses (`lqd_…` and `process_…`).
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("lqd_") || w.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// The dashboard against Prometheus alone (no lqd needed): each PromQL expression, with
/// Grafana's variables given fixed values, runs through the query API, and every metric of
/// docs/metrics.md is shown by some panel.
#[test]
fn every_dashboard_expression_parses_and_every_metric_has_a_panel() {
    let nothing: SocketAddr = format!("[::1]:{}", free_port()).parse().unwrap();
    let mut prom = Prometheus::start("dashboard", nothing);
    prom.wait_ready(20);
    // The check can fail: a broken expression is refused.
    let (status, json) = prom.raw_query("rate(lqd_bindings[5m)", None);
    assert_eq!(
        (status, json["errorType"].as_str()),
        (400, Some("bad_data"))
    );

    let exprs = dashboard_expressions();
    assert!(exprs.len() >= 30, "{} expressions", exprs.len());
    let mut used = BTreeSet::new();
    for expr in &exprs {
        let e = substitute(expr);
        assert!(!e.contains('$'), "a Grafana variable left in {e:?}");
        let (status, json) = prom.raw_query(&e, None);
        assert!(
            status == 200 && json["status"] == "success",
            "dashboard expression {expr:?} does not parse: {json}"
        );
        used.extend(metric_names(&e));
    }
    let documented = documented_metrics();
    assert!(documented.len() >= 30, "docs/metrics.md's table not found");
    for d in &documented {
        let shown = used.iter().any(|u| {
            u == &d.name
                || (d.kind == "histogram"
                    && ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| *u == format!("{}{s}", d.name)))
        });
        assert!(shown, "no dashboard panel shows {}", d.name);
    }
    for u in &used {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| u.strip_suffix(s))
            .filter(|b| {
                documented
                    .iter()
                    .any(|d| d.name == *b && d.kind == "histogram")
            })
            .unwrap_or(u);
        assert!(
            documented.iter().any(|d| d.name == base),
            "the dashboard uses {u}, which docs/metrics.md does not list"
        );
    }
}

#[test]
fn prometheus_scraping_lqd_under_load_sees_what_the_test_knows() {
    let test_started = Instant::now();
    let metrics_addr: SocketAddr = format!("[::1]:{}", free_port()).parse().unwrap();
    // Prometheus first: it scrapes the port until lqd is up.
    let mut prom = Prometheus::start("metrics", metrics_addr);
    let mut lqd = Lqd::start_with_demo(
        "metrics-prom",
        &format!(
            "metrics_listen = \"{metrics_addr}\"\njournal_size = {JOURNAL_SIZE}\n\
             max_connections_per_requestor = 50\n"
        ),
        &format!(
            "clients = 2000\nlinks = {LINKS}\nchanges_per_sec = {CHANGES_PER_SEC}\nseed = 16\n\
             churn_limit = {}\n",
            CHANGES_PER_SEC * CHURN_SECS
        ),
    );
    let churn_started = Instant::now();
    wait_for_log(&lqd, "initial population sent", 20);
    prom.wait_ready(20);

    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<Reader> = (0..REQUESTORS)
        .map(|i| Reader::start(&lqd, 0x100 + i as u32, &stop))
        .collect();
    let connected = Instant::now();

    prom.wait_for("up{job=\"lqd\"}", 10, |v| v == 1.0);
    prom.wait_for("lqd_active_queries", 10, |v| v == REQUESTORS as f64);

    // The rate window: it starts after every requestor is reading and ends while the demo still
    // churns. The test's own count is sampled at both ends.
    let window_start = connected + Duration::from_secs(2);
    std::thread::sleep(window_start.saturating_duration_since(Instant::now()));
    let (read_at_start, _) = read_so_far(&readers);
    let t_start = unix_now();
    std::thread::sleep(Duration::from_secs(WINDOW_SECS));
    let (read_at_end, _) = read_so_far(&readers);
    let t_end = unix_now();
    assert!(
        churn_started.elapsed() < Duration::from_secs(u64::from(CHURN_SECS) - 2),
        "the machine was too slow: the churn ends before the window does"
    );
    // Two more scrapes, so the window's end is covered.
    std::thread::sleep(Duration::from_millis(2500));
    let at = Some(t_end);
    let w = format!("{}s", (t_end - t_start).round());
    let appends = prom.value_at(&format!("rate(lqd_journal_appends_total[{w}])"), at);
    let deliveries = prom.value_at(&format!("rate(lqd_active_deliveries_total[{w}])"), at);
    let applied = prom.value_at(
        &format!("sum(rate(lqd_feed_changes_applied_total[{w}]))"),
        at,
    );
    let coalesced = prom.value_at(&format!("rate(lqd_active_coalesced_total[{w}])"), at);
    let read_rate = (read_at_end - read_at_start) as f64 / (t_end - t_start);
    eprintln!(
        "window {w}: appends/s {appends:.1}, applied/s {applied:.1}, deliveries/s \
         {deliveries:.1}, coalesced/s {coalesced:.1}, the requestors read {read_rate:.1}/s"
    );
    let within = |got: f64, want: f64, pct: f64| (got - want).abs() <= want * pct / 100.0;
    assert!(
        within(appends, f64::from(CHANGES_PER_SEC), 5.0),
        "appends/s {appends} against the demo's {CHANGES_PER_SEC} changes/s"
    );
    assert!(
        within(applied, appends, 5.0),
        "applied/s {applied}, appends/s {appends}"
    );
    let expected = appends * REQUESTORS as f64;
    assert!(
        within(deliveries, expected, 5.0),
        "deliveries/s {deliveries}, appends/s × {REQUESTORS} = {expected}"
    );
    assert!(
        within(read_rate, deliveries, 5.0),
        "the requestors read {read_rate}/s, lqd says it delivered {deliveries}/s"
    );
    // Each stream reads every record and either sends it or skips it for a newer record of the
    // same binding appended in the same turn (the demo sometimes changes a client twice in one
    // batch): the two add up to every record for every requestor, and readers that keep up
    // skip few.
    assert!(
        within(deliveries + coalesced, expected, 2.0),
        "deliveries/s {deliveries} + coalesced/s {coalesced}, appends/s × {REQUESTORS} = \
         {expected}"
    );
    assert!(
        coalesced <= expected * 0.02,
        "readers that keep up lose little to coalescing: {coalesced}/s"
    );

    // Gauges and counters during the load.
    assert_eq!(
        prom.value_at("lqd_connections{state=\"active\"}", at),
        REQUESTORS as f64
    );
    assert_eq!(prom.value_at("sum(lqd_connections)", at), REQUESTORS as f64);
    assert_eq!(prom.value_at("lqd_active_queries", at), REQUESTORS as f64);
    assert_eq!(
        prom.value_at(
            "lqd_queries_total{message=\"activeleasequery\",query_type=\"all\",\
             status=\"success\"}",
            at
        ),
        REQUESTORS as f64
    );
    assert_eq!(
        prom.value_at("sum(lqd_requestor_connections)", at),
        REQUESTORS as f64
    );
    let lag_max = prom.value_at(
        &format!("max_over_time(lqd_active_lag_records_max[{w}])"),
        at,
    );
    assert!(
        lag_max < f64::from(CHANGES_PER_SEC),
        "readers keep up, yet the worst lag was {lag_max} records"
    );
    let lag_p99 = prom.value_at(
        &format!("histogram_quantile(0.99, rate(lqd_active_lag_records_bucket[{w}]))"),
        at,
    );
    assert!(lag_p99 <= lag_max.max(1.0) * 2.0, "lag p99 {lag_p99}");
    let fanout_p99 = prom.value_at(
        &format!("histogram_quantile(0.99, rate(lqd_fanout_latency_seconds_bucket[{w}]))"),
        at,
    );
    let fanout_count = prom.value_at(&format!("rate(lqd_fanout_latency_seconds_count[{w}])"), at);
    eprintln!("fan-out latency p99 {fanout_p99} s, {fanout_count} observations/s");
    assert!(
        fanout_p99 > 0.0 && fanout_p99 < 1.0,
        "fan-out p99 {fanout_p99} s"
    );
    // One journal record in 16 is timed, for every requestor it goes to.
    assert!(
        within(fanout_count, deliveries / 16.0, 10.0),
        "{fanout_count} deliveries timed a second, deliveries/s / 16 = {}",
        deliveries / 16.0
    );
    // The ring: the file's `journal_size` less its header.
    assert_eq!(
        prom.value("lqd_journal_size_bytes"),
        (JOURNAL_SIZE - HEADER_LEN as u64) as f64
    );
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        prom.value(&format!("lqd_build_info{{version=\"{version}\"}}")),
        1.0
    );
    let rss = prom.value("process_resident_memory_bytes{job=\"lqd\"}");
    let proc_rss = rss_kib(lqd.child.id()) as f64 * 1024.0;
    assert!(
        within(rss, proc_rss, 25.0),
        "process_resident_memory_bytes {rss}, /proc says {proc_rss}"
    );

    // The churn stops; every figure settles and must match exactly.
    wait_for_log(&lqd, "demo: churn limit reached", 30);
    let log = lqd.log();
    let logged = |message: &str| -> u64 {
        let line = log.lines().find(|l| l.contains(message)).unwrap();
        line.split("changes=")
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let demo_changes = logged("initial population sent") + logged("churn limit reached");
    assert_eq!(
        logged("churn limit reached"),
        u64::from(CHANGES_PER_SEC * CHURN_SECS)
    );
    let (bindings, addresses, prefixes, bulk_octets) = bulk_census(&lqd);
    let census_closed = unix_now();
    assert!(bindings > 1000, "{bindings} bindings");
    // Give the readers time to drain, then compare once Prometheus has the final figures.
    std::thread::sleep(Duration::from_millis(500));
    let (updates, octets) = read_so_far(&readers);
    prom.wait_for("lqd_active_deliveries_total", 10, |v| v == updates as f64);
    prom.wait_for("lqd_bindings", 10, |v| v == bindings as f64);
    prom.wait_for("lqd_leases{kind=\"address\"}", 5, |v| v == addresses as f64);
    prom.wait_for("sum(lqd_leases{kind=\"prefix\"}) or vector(0)", 5, |v| {
        v == prefixes as f64
    });
    prom.wait_for("lqd_sent_bytes_total{transport=\"tcp\"}", 10, |v| {
        v == (octets + bulk_octets) as f64
    });
    prom.wait_for("sum(lqd_feed_changes_received_total)", 5, |v| {
        v == demo_changes as f64
    });
    prom.wait_for("lqd_connections_accepted_total", 5, |v| {
        v == (REQUESTORS + 1) as f64
    });
    prom.wait_for("lqd_connections_closed_total", 5, |v| v == 1.0);
    prom.wait_for(
        "lqd_queries_total{message=\"leasequery\",query_type=\"link-address\",\
         status=\"success\"}",
        5,
        |v| v == f64::from(LINKS),
    );
    // The head comes from the loop's snapshot (at most a second old), the appends from a live
    // counter: once a snapshot after the last append is scraped, the head is past them all.
    prom.wait_for(
        "lqd_journal_head_sequence - lqd_journal_appends_total",
        5,
        |v| v >= 0.0,
    );
    assert!(prom.value("lqd_journal_used_bytes") <= JOURNAL_SIZE as f64);
    let oldest = prom.value("lqd_journal_oldest_record_timestamp_seconds");
    assert!(
        oldest <= unix_now() && oldest > unix_now() - 120.0,
        "oldest record at {oldest}"
    );
    prom.wait_for("lqd_active_lag_records_max", 5, |v| v == 0.0);

    // The exposition itself: promtool accepts it, and it keeps docs/metrics.md's contract.
    let (status, exposition) = get(metrics_addr, "/metrics");
    assert_eq!(status, 200);
    let (ok, said) = promtool_check_metrics(&exposition);
    assert!(ok, "promtool check metrics:\n{said}\n{exposition}");
    let exp = parse_exposition(&exposition);
    let documented = documented_metrics();
    assert!(documented.len() >= 30, "docs/metrics.md's table not found");
    let mut disagreements = Vec::new();
    for d in &documented {
        match exp.types.get(&d.name) {
            None => disagreements.push(format!("{} is documented, not exposed", d.name)),
            Some(t) if *t != d.kind => disagreements.push(format!(
                "{} is documented as a {}, exposed as a {t}",
                d.name, d.kind
            )),
            Some(_) => {}
        }
        for (name, labels, _) in &exp.samples {
            if family(name, &exp.types) != d.name {
                continue;
            }
            for (label, value) in labels {
                if label == "le" && d.kind == "histogram" {
                    continue;
                }
                match d.labels.get(label) {
                    None => disagreements.push(format!(
                        "{name} has label {label}, which docs/metrics.md does not list"
                    )),
                    Some(values) if !values.is_empty() && !values.contains(value) => {
                        disagreements.push(format!(
                            "{name} has {label}=\"{value}\", not among the documented values"
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
    }
    for name in exp.types.keys().filter(|n| n.starts_with("lqd_")) {
        if !documented.iter().any(|d| d.name == *name) {
            disagreements.push(format!("{name} is exposed but not documented"));
        }
    }
    disagreements.dedup();
    assert!(
        disagreements.is_empty(),
        "docs/metrics.md and /metrics disagree:\n{}",
        disagreements.join("\n")
    );

    // /requestors: the 20 Active requestors by peer, live; the closed Bulk connection. The
    // view is the loop's snapshot: wait for one taken after the census connection closed.
    let fresh_after = census_closed.floor() + 1.0;
    let deadline = Instant::now() + Duration::from_secs(5);
    let (body, view) = loop {
        let (status, body) = get(metrics_addr, "/requestors");
        assert_eq!(status, 200);
        let view: Value = serde_json::from_str(&body).expect("/requestors is JSON");
        let taken_at = view["taken_at_unix_s"].as_f64().unwrap_or(0.0);
        if taken_at >= fresh_after {
            break (body, view);
        }
        assert!(
            Instant::now() < deadline,
            "no /requestors snapshot after {fresh_after} within 5 s: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let peers: BTreeSet<SocketAddr> = view["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let queries = c["queries"].as_array().unwrap();
            assert_eq!(queries.len(), 1, "{c}");
            let q = &queries[0];
            assert_eq!(q["kind"], "active", "{c}");
            assert_eq!(q["state"], "live", "{c}");
            assert_eq!(q["lag_records"], 0, "{c}");
            assert!(c["bytes_sent"].as_u64().unwrap() > 0, "{c}");
            c["peer"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    let ours: BTreeSet<SocketAddr> = readers.iter().map(|r| r.local).collect();
    assert_eq!(peers, ours, "/requestors: {body}");
    let closed = view["recently_closed"].as_array().unwrap();
    assert_eq!(closed.len(), 1, "{body}");
    assert!(closed[0]["reason"].as_str().is_some_and(|r| !r.is_empty()));

    // The dashboard names only metrics lqd exposes (that each expression parses is
    // `every_dashboard_expression_parses_and_every_metric_has_a_panel`).
    for expr in dashboard_expressions() {
        for name in metric_names(&expr) {
            assert!(
                exp.types.contains_key(family(&name, &exp.types)),
                "the dashboard uses {name}, which lqd does not expose ({expr:?})"
            );
        }
    }

    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.thread.join().unwrap();
    }
    assert!(lqd.sigterm().success());
    eprintln!("took {:.1} s", test_started.elapsed().as_secs_f64());
}
