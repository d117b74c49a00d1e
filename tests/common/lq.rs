//! Helpers for the requestor tests that run the `lq` binary against a real lqd: an `lq watch`
//! child whose JSON events and state file the test reads, and lqd's truth by Bulk.
//! Needs `tests/common/lqd.rs` as the crate's `common` module.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use lqd::codec::{DhcpOption, MessageRepr, OptionCode};
use serde_json::Value;

use crate::common::{Lqd, by_link, link, read_answers};

/// Client DUID (hex) → its leases (address or prefix, prefix length).
pub(crate) type Bindings = BTreeMap<String, BTreeSet<(Ipv6Addr, u8)>>;

/// Polls `f` every 100 ms until it holds; false after `secs` seconds.
pub(crate) fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every live binding lqd holds on links 1..=links, by Bulk QUERY_BY_LINK_ADDRESS.
pub(crate) fn truth(lqd: &Lqd, links: u16) -> Bindings {
    let mut all = Bindings::new();
    for k in 1..=links {
        for (id, leases) in truth_link(lqd, k) {
            all.entry(id).or_default().extend(leases);
        }
    }
    all
}

/// Every live binding lqd holds on link `k`.
pub(crate) fn truth_link(lqd: &Lqd, k: u16) -> Bindings {
    let mut s = lqd.connect();
    let mut all = Bindings::new();
    let xid = 0x100 + u32::from(k);
    s.write_all(&by_link(xid, link(k))).unwrap();
    for m in read_answers(&mut s, &[xid]) {
        let r = MessageRepr::parse(&m).unwrap();
        if let Some(DhcpOption::ClientData(cd)) = r.options.get(OptionCode::ClientData) {
            let id = hex::encode(cd.client_id().unwrap().as_bytes());
            let leases = all.entry(id).or_default();
            for o in cd.iter() {
                match o {
                    DhcpOption::IaAddr(a) if a.valid_lifetime > 0 => {
                        leases.insert((a.address, 128));
                    }
                    DhcpOption::IaPrefix(p) if p.valid_lifetime > 0 => {
                        leases.insert((p.prefix, p.prefix_len));
                    }
                    _ => {}
                }
            }
        }
    }
    all.retain(|_, l| !l.is_empty());
    all
}

/// The replica in an `lq` state file: its base-time and bindings (`None` while there is no
/// file or it is being replaced).
pub(crate) fn state(path: &Path) -> Option<(Option<u64>, Bindings)> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    let mut all = Bindings::new();
    for c in v["clients"].as_array()? {
        let leases = all.entry(c["client_id"].as_str()?.to_owned()).or_default();
        for l in c["leases"].as_array()? {
            leases.insert((
                l["address"].as_str()?.parse().ok()?,
                u8::try_from(l["prefix_len"].as_u64()?).ok()?,
            ));
        }
    }
    Some((v["base_time_unix_s"].as_u64(), all))
}

/// A human-readable difference between two sets of bindings.
pub(crate) fn diff(a: &Bindings, b: &Bindings) -> String {
    let mut out = Vec::new();
    for (k, v) in a {
        if b.get(k) != Some(v) {
            out.push(format!("{k}: {v:?} vs {:?}", b.get(k)));
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        out.push(format!("{k}: missing vs {:?}", b[k]));
    }
    let n = out.len();
    out.truncate(5);
    format!("{n} differences, first: {out:#?}")
}

/// A running `lq watch --json`, its events in a file; killed when dropped.
pub(crate) struct LqWatch {
    pub(crate) child: Child,
    pub(crate) out: PathBuf,
    pub(crate) err: PathBuf,
}

impl LqWatch {
    /// Starts `lq watch --server ADDR --json ARGS...`, output under `dir` with `tag`.
    pub(crate) fn start(dir: &Path, tag: &str, server: SocketAddr, args: &[&str]) -> Self {
        let out = dir.join(format!("lq-{tag}.out"));
        let err = dir.join(format!("lq-{tag}.err"));
        let child = Command::new(env!("CARGO_BIN_EXE_lq"))
            .arg("watch")
            .arg("--server")
            .arg(server.to_string())
            .arg("--json")
            .args(args)
            .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(&err).unwrap()))
            .spawn()
            .unwrap();
        Self { child, out, err }
    }

    /// The JSON events printed so far (a line being written is skipped).
    pub(crate) fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The events whose `event` field is `kind`.
    pub(crate) fn events_of(&self, kind: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == kind)
            .collect()
    }

    /// Waits up to `secs` seconds for at least `n` events of `kind`.
    pub(crate) fn wait_events(&self, kind: &str, n: usize, secs: u64) -> Vec<Value> {
        let ok = wait_until(secs, || self.events_of(kind).len() >= n);
        assert!(ok, "fewer than {n} {kind:?} events:\n{}", self.transcript());
        self.events_of(kind)
    }

    /// Its stderr and the status events, for assertion messages.
    pub(crate) fn transcript(&self) -> String {
        let status: Vec<String> = self
            .events()
            .into_iter()
            .filter(|e| !matches!(e["event"].as_str(), Some("added" | "updated" | "removed")))
            .map(|e| e.to_string())
            .collect();
        format!(
            "stderr: {}\nstatus events:\n{}",
            std::fs::read_to_string(&self.err).unwrap_or_default(),
            status.join("\n")
        )
    }

    /// True while it runs.
    pub(crate) fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM, then its exit status.
    pub(crate) fn terminate(&mut self) -> ExitStatus {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "lq watch did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LqWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `--link` arguments for demo links 1..=links.
pub(crate) fn link_args(links: u16) -> Vec<String> {
    (1..=links)
        .flat_map(|k| ["--link".to_owned(), link(k).to_string()])
        .collect()
}

/// Each stream's base-time, and the bindings each stream reported.
pub(crate) type ByStream = (Vec<Option<u64>>, BTreeMap<usize, Bindings>);

/// The replica in an `lq` state file, by stream: each stream's base-time (`streams`), and the
/// bindings each stream reported (a client two streams reported is in both).
pub(crate) fn state_by_stream(path: &Path) -> Option<ByStream> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    let bases = v["streams"]
        .as_array()?
        .iter()
        .map(|s| s["base_time_unix_s"].as_u64())
        .collect();
    let mut by = BTreeMap::<usize, Bindings>::new();
    for c in v["clients"].as_array()? {
        let id = c["client_id"].as_str()?.to_owned();
        let mut leases = Vec::new();
        for l in c["leases"].as_array()? {
            leases.push((
                l["address"].as_str()?.parse().ok()?,
                u8::try_from(l["prefix_len"].as_u64()?).ok()?,
            ));
        }
        let views: Vec<(usize, Vec<usize>)> = match c["views"].as_array() {
            Some(views) => views
                .iter()
                .map(|w| {
                    let s = usize::try_from(w["stream"].as_u64()?).ok()?;
                    let idx = w["leases"]
                        .as_array()?
                        .iter()
                        .map(|i| i.as_u64().and_then(|i| usize::try_from(i).ok()))
                        .collect::<Option<Vec<usize>>>()?;
                    Some((s, idx))
                })
                .collect::<Option<_>>()?,
            None => vec![(
                usize::try_from(c["stream"].as_u64().unwrap_or(0)).ok()?,
                (0..leases.len()).collect(),
            )],
        };
        for (s, idx) in views {
            let set = by.entry(s).or_default().entry(id.clone()).or_default();
            set.extend(idx.iter().filter_map(|i| leases.get(*i).copied()));
        }
    }
    Some((bases, by))
}

/// Every live binding lqd holds that `query` matches, by the library's Bulk query.
pub(crate) fn truth_of(lqd: &Lqd, query: &lqd::requestor::Query) -> Bindings {
    let mut conn =
        lqd::requestor::Connection::connect(lqd.addr, &crate::common::REQUESTOR).unwrap();
    let mut all = Bindings::new();
    for item in conn.bulk(query, lqd::requestor::TimeWindow::ALL).unwrap() {
        let d = item.unwrap();
        all.entry(hex::encode(&d.client_id))
            .or_default()
            .extend(d.leases.iter().map(|l| (l.address, l.prefix_len)));
    }
    all.retain(|_, l| !l.is_empty());
    all
}
