//! Debian's Prometheus (2.42) as a test peer: started on a free loopback port with a temporary
//! configuration and data directory, scraping one target every second, asked PromQL through
//! its HTTP API, killed and its directory removed when dropped. Also a small HTTP/1.1 GET for
//! lqd's own endpoint and `promtool check metrics`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running Prometheus.
pub(crate) struct Prometheus {
    child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) dir: PathBuf,
}

/// A free TCP port on `[::1]`.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn found(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

impl Prometheus {
    /// Starts `prometheus` scraping `target` (job `lqd`, `/metrics`) every second; does not
    /// wait for anything (see [`wait_ready`](Self::wait_ready)).
    pub(crate) fn start(name: &str, target: SocketAddr) -> Self {
        assert!(
            found("prometheus") && found("promtool"),
            "prometheus and promtool not found: run .ci/setup (Debian package `prometheus`)"
        );
        let dir = std::env::temp_dir().join(format!("lqd-prom-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: lqd\n    scrape_interval: 1s\n    \
                 scrape_timeout: 1s\n    metrics_path: /metrics\n    static_configs:\n      \
                 - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let addr: SocketAddr = format!("[::1]:{}", free_port()).parse().unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        Self { child, addr, dir }
    }

    /// Prometheus's own log.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// Waits up to `secs` s for `/-/ready`.
    pub(crate) fn wait_ready(&mut self, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Ok((200, _)) = try_get(self.addr, "/-/ready") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `/api/v1/query` for `expr`, evaluated at `time` (Unix seconds) or now: the HTTP status
    /// and the whole JSON answer.
    pub(crate) fn raw_query(&self, expr: &str, time: Option<f64>) -> (u16, Value) {
        let mut path = format!("/api/v1/query?query={}", url_encode(expr));
        if let Some(t) = time {
            path.push_str(&format!("&time={t:.3}"));
        }
        let (status, body) = get(self.addr, &path);
        let json = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("prometheus answered {status} with no JSON ({e}): {body}"));
        (status, json)
    }

    /// The result vector of a query that must succeed: each sample's labels and value.
    pub(crate) fn query_at(&self, expr: &str, time: Option<f64>) -> Vec<(Value, f64)> {
        let (status, json) = self.raw_query(expr, time);
        assert!(
            status == 200 && json["status"] == "success",
            "query {expr:?} failed ({status}): {json}"
        );
        let data = &json["data"];
        match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| (s["metric"].clone(), sample_value(&s["value"])))
                .collect(),
            Some("scalar") => vec![(Value::Null, sample_value(&data["result"]))],
            other => panic!("query {expr:?}: result type {other:?}"),
        }
    }

    /// The one value of a query that must give exactly one sample, now.
    pub(crate) fn value(&self, expr: &str) -> f64 {
        self.value_at(expr, None)
    }

    /// The one value of a query that must give exactly one sample at `time`.
    pub(crate) fn value_at(&self, expr: &str, time: Option<f64>) -> f64 {
        let result = self.query_at(expr, time);
        assert_eq!(result.len(), 1, "{expr:?} gave {result:?}");
        result[0].1
    }

    /// Polls `expr` (one sample) for up to `secs` s until `ok` holds; the last value.
    pub(crate) fn wait_for(&self, expr: &str, secs: u64, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let result = self.query_at(expr, None);
            if let [(_, v)] = result.as_slice() {
                if ok(*v) {
                    return *v;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{expr:?} is {result:?}, not what was awaited\nprometheus log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("prometheus's directory kept: {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn sample_value(v: &Value) -> f64 {
    // [unix time, "value"]; the value is a string, and may be NaN or ±Inf.
    v[1].as_str()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("not a sample: {v}"))
}

/// Percent-encodes everything but the unreserved characters (RFC 3986).
pub(crate) fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An HTTP/1.1 GET of `path` from `addr`: the status and the body (de-chunked). Panics when
/// the server cannot be reached or answers no HTTP.
pub(crate) fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    try_get(addr, path).unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// The same, the failure returned.
pub(crate) fn try_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: lqd-tests\r\nAccept: */*\r\n\
         Connection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {:?}", String::from_utf8_lossy(&raw)))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body)?;
    } else if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if body.len() != n {
            return Err(format!("content-length {n}, body {} octets", body.len()));
        }
    }
    let body = String::from_utf8(body).map_err(|e| e.to_string())?;
    Ok((status, body))
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk size line not ended")?;
        let size_text = String::from_utf8_lossy(&b[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| format!("chunk size {size_text:?}: {e}"))?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = b.get(..size).ok_or("chunk cut short")?;
        out.extend_from_slice(chunk);
        b = b.get(size + 2..).ok_or("chunk not ended")?;
    }
}

/// Runs `promtool check metrics` on `exposition`: whether it passed, and what it said.
pub(crate) fn promtool_check_metrics(exposition: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; run .ci/setup)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}
