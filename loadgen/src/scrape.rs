//! The scraper of `--metrics` (system `lqd-metrics`, issue 16 point 1): what a Prometheus and
//! an operator's dashboard do to lqd, once a second for the whole run: `GET /metrics`, then
//! `GET /requestors`, over one kept-alive HTTP/1.1 connection (reopened after an error), as
//! Prometheus scrapes.
//!
//! Every answer is checked (status 200, a body of the announced length; the exposition holds
//! `lqd_active_deliveries_total`, the view is JSON with a `connections` list), so that a run
//! whose scrapes failed cannot pass for one with metrics on. At the end, one more scrape (once
//! lqd's counters have caught up, a second and a half later) reads lqd's delivery counter, for
//! the run to compare with what its requestors received.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How often lqd is scraped: Prometheus's `scrape_interval` of the measurement.
pub(crate) const INTERVAL: Duration = Duration::from_secs(1);
/// How long after the run the last scrape waits: lqd adds its connections' counts to the
/// counters once a second.
const SETTLE: Duration = Duration::from_millis(1500);
/// How long one request may take (Prometheus's default `scrape_timeout` is 10 s).
const TIMEOUT: Duration = Duration::from_secs(10);
/// A response head may be this long.
const HEAD_MAX: u64 = 16 * 1024;

/// What the scraper saw over a run.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct ScrapeReport {
    /// Scrapes done (each a `/metrics` and a `/requestors` request).
    pub(crate) scrapes: u64,
    /// Requests that failed (no answer, not 200, not the expected body).
    pub(crate) failures: u64,
    /// The first few failures.
    pub(crate) errors: Vec<String>,
    /// `/metrics`: mean and largest time from the request to the whole answer, ms; the last
    /// answer's size, octets.
    pub(crate) metrics_ms_mean: f64,
    pub(crate) metrics_ms_max: f64,
    pub(crate) metrics_bytes: usize,
    /// `/requestors`: the same.
    pub(crate) requestors_ms_mean: f64,
    pub(crate) requestors_ms_max: f64,
    pub(crate) requestors_bytes: usize,
    /// Connections `/requestors` listed at its largest.
    pub(crate) requestors_listed_max: usize,
    /// `lqd_active_deliveries_total` after the run (the final scrape).
    pub(crate) deliveries_counter: Option<u64>,
}

/// Times and sizes of one path's answers.
#[derive(Default)]
struct PathStats {
    total: Duration,
    max: Duration,
    count: u32,
    bytes: usize,
}

impl PathStats {
    fn add(&mut self, took: Duration, bytes: usize) {
        self.total += took;
        self.max = self.max.max(took);
        self.count += 1;
        self.bytes = bytes;
    }

    fn mean_ms(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.total.as_secs_f64() * 1e3 / f64::from(self.count)
        }
    }
}

/// The scraper's state, owned by its thread.
struct State {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
    report: ScrapeReport,
    metrics: PathStats,
    requestors: PathStats,
}

impl State {
    /// A scraper of `addr`, not connected yet.
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            conn: None,
            report: ScrapeReport::default(),
            metrics: PathStats::default(),
            requestors: PathStats::default(),
        }
    }

    fn fail(&mut self, what: String) {
        self.report.failures += 1;
        if self.report.errors.len() < 5 {
            self.report.errors.push(what);
        }
        // The connection may be in the middle of an answer: start afresh.
        self.conn = None;
    }

    /// One scrape: `/metrics`, then `/requestors`.
    fn scrape(&mut self) {
        self.report.scrapes += 1;
        let t = Instant::now();
        match self.get("/metrics") {
            Ok(body) => {
                self.metrics.add(t.elapsed(), body.len());
                match deliveries_counter(&body) {
                    Some(v) => self.report.deliveries_counter = Some(v),
                    None => self.fail("/metrics has no lqd_active_deliveries_total".to_owned()),
                }
            }
            Err(e) => self.fail(format!("/metrics: {e}")),
        }
        let t = Instant::now();
        match self.get("/requestors") {
            Ok(body) => {
                self.requestors.add(t.elapsed(), body.len());
                let listed = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["connections"].as_array().map(Vec::len));
                match listed {
                    Some(n) => {
                        self.report.requestors_listed_max =
                            self.report.requestors_listed_max.max(n);
                    }
                    None => self.fail("/requestors is not JSON with connections".to_owned()),
                }
            }
            Err(e) => self.fail(format!("/requestors: {e}")),
        }
    }

    /// `GET path` on the kept-alive connection (opened when there is none): the body of a 200.
    fn get(&mut self, path: &str) -> Result<Vec<u8>, String> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, TIMEOUT)
                .map_err(|e| format!("connecting to {}: {e}", self.addr))?;
            s.set_read_timeout(Some(TIMEOUT))
                .and_then(|()| s.set_write_timeout(Some(TIMEOUT)))
                .map_err(|e| e.to_string())?;
            self.conn = Some(BufReader::new(s));
        }
        let conn = self.conn.as_mut().ok_or("no connection")?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: loadgen\r\n\
             Accept: text/plain;version=0.0.4;q=0.9,*/*;q=0.1\r\n\r\n",
            self.addr
        );
        conn.get_mut()
            .write_all(request.as_bytes())
            .map_err(|e| format!("writing the request: {e}"))?;
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let n = (&mut *conn)
                .take(HEAD_MAX)
                .read_until(b'\n', &mut head)
                .map_err(|e| format!("reading the answer: {e}"))?;
            if n == 0 || head.len() as u64 >= HEAD_MAX {
                return Err("the answer's head ended early or is too long".to_owned());
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {}
            other => return Err(format!("not an HTTP answer: {other:?}")),
        }
        let length = response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .and_then(|v| v.trim().parse::<usize>().ok())
            .ok_or("an answer without Content-Length")?;
        let close = response.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close")
        });
        let status = response.code.unwrap_or(0);
        let mut body = vec![0; length];
        conn.read_exact(&mut body)
            .map_err(|e| format!("reading {length} octets of body: {e}"))?;
        if close {
            self.conn = None;
        }
        if status != 200 {
            return Err(format!("HTTP {status}"));
        }
        Ok(body)
    }

    fn finish(mut self) -> ScrapeReport {
        self.report.metrics_ms_mean = self.metrics.mean_ms();
        self.report.metrics_ms_max = self.metrics.max.as_secs_f64() * 1e3;
        self.report.metrics_bytes = self.metrics.bytes;
        self.report.requestors_ms_mean = self.requestors.mean_ms();
        self.report.requestors_ms_max = self.requestors.max.as_secs_f64() * 1e3;
        self.report.requestors_bytes = self.requestors.bytes;
        self.report
    }
}

/// `lqd_active_deliveries_total`'s value in an exposition.
fn deliveries_counter(exposition: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(exposition).ok()?;
    let line = text
        .lines()
        .find(|l| l.starts_with("lqd_active_deliveries_total "))?;
    let value: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    (value >= 0.0 && value.fract() == 0.0).then_some(value as u64)
}

/// A scraper thread at work.
pub(crate) struct Scraper {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<State>>,
}

impl Scraper {
    /// Starts scraping `addr` (lqd's `metrics_listen`) every [`INTERVAL`], the first scrape at
    /// once.
    pub(crate) fn start(addr: SocketAddr) -> Result<Self, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("loadgen-scraper".to_owned())
            .spawn(move || {
                let mut state = State::new(addr);
                let mut next = Instant::now();
                while !flag.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if now < next {
                        std::thread::sleep((next - now).min(Duration::from_millis(50)));
                        continue;
                    }
                    state.scrape();
                    // On the second's grid, skipping the seconds a slow scrape took.
                    while next <= Instant::now() {
                        next += INTERVAL;
                    }
                }
                state
            })
            .map_err(|e| format!("starting the scraper: {e}"))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread, scrapes once more (lqd's counters after the run, once lqd has taken
    /// its connections' counts: it does once a second) and reports.
    pub(crate) fn finish(mut self) -> Result<ScrapeReport, String> {
        self.stop.store(true, Ordering::Relaxed);
        let mut state = self
            .thread
            .take()
            .ok_or("the scraper was finished twice")?
            .join()
            .map_err(|_| "the scraper panicked".to_owned())?;
        std::thread::sleep(SETTLE);
        state.scrape();
        Ok(state.finish())
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `lqd_loop_turn_seconds`' buckets from one `GET /metrics` (a connection of its own): each
/// bucket's upper bound in seconds and its cumulative count, `+Inf` last; empty when this lqd
/// does not time its turns.
pub(crate) fn loop_turn_buckets(addr: SocketAddr) -> Result<Vec<(f64, u64)>, String> {
    let mut state = State::new(addr);
    let body = state.get("/metrics")?;
    let text = String::from_utf8(body).map_err(|e| format!("/metrics: {e}"))?;
    Ok(turn_buckets(&text))
}

fn turn_buckets(exposition: &str) -> Vec<(f64, u64)> {
    exposition
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("lqd_loop_turn_seconds_bucket{le=\"")?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count: f64 = count.trim().parse().ok()?;
            Some((le, count as u64))
        })
        .collect()
}

/// lqd's turns between two readings of `lqd_loop_turn_seconds`: how many, and how many took
/// longer than 10, 25, 50 and 100 ms (by the histogram's bucket bounds).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct TurnsBetween {
    pub(crate) turns: u64,
    pub(crate) over_10_ms: u64,
    pub(crate) over_25_ms: u64,
    pub(crate) over_50_ms: u64,
    pub(crate) over_100_ms: u64,
}

impl TurnsBetween {
    /// From the cumulative buckets read before and after; `None` when either has none.
    pub(crate) fn of(before: &[(f64, u64)], after: &[(f64, u64)]) -> Option<Self> {
        let at = |b: &[(f64, u64)], le: f64| {
            b.iter()
                .find(|(bound, _)| bound.total_cmp(&le).is_eq() || (*bound - le).abs() < 1e-12)
                .map(|(_, c)| *c)
        };
        let between = |le: f64| Some(at(after, le)?.saturating_sub(at(before, le)?));
        let turns = between(f64::INFINITY)?;
        let over = |le: f64| between(le).map(|n| turns.saturating_sub(n));
        Some(Self {
            turns,
            over_10_ms: over(0.01)?,
            over_25_ms: over(0.025)?,
            over_50_ms: over(0.05)?,
            over_100_ms: over(0.1)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delivery_counter_is_read_from_the_exposition() {
        let text = b"# HELP lqd_active_deliveries_total Binding updates.\n\
            # TYPE lqd_active_deliveries_total counter\n\
            lqd_active_deliveries_total_other 5\n\
            lqd_active_deliveries_total 2000000\n";
        assert_eq!(deliveries_counter(text), Some(2_000_000));
        assert_eq!(deliveries_counter(b"lqd_bindings 3\n"), None);
        assert_eq!(deliveries_counter(b"lqd_active_deliveries_total x\n"), None);
    }

    #[test]
    fn turns_between_two_readings_count_the_long_ones() {
        let exposition = |counts: [u64; 6]| {
            let bounds = ["0.005", "0.01", "0.025", "0.05", "0.1", "+Inf"];
            bounds
                .iter()
                .zip(counts)
                .map(|(le, n)| format!("lqd_loop_turn_seconds_bucket{{le=\"{le}\"}} {n}\n"))
                .collect::<String>()
        };
        let before = turn_buckets(&exposition([100, 110, 115, 118, 119, 120]));
        let after = turn_buckets(&exposition([400, 450, 470, 475, 477, 480]));
        assert_eq!(before.len(), 6);
        let t = TurnsBetween::of(&before, &after).unwrap();
        assert_eq!(t.turns, 360);
        assert_eq!(t.over_10_ms, 360 - 340);
        assert_eq!(t.over_25_ms, 360 - 355);
        assert_eq!(t.over_50_ms, 360 - 357);
        assert_eq!(t.over_100_ms, 360 - 358);
        assert!(
            TurnsBetween::of(&[], &after).is_none(),
            "an lqd without the histogram"
        );
    }
}
