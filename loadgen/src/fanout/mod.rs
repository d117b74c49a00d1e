//! Active Leasequery fan-out (issue 7): `loadgen active`, `loadgen catch-up` and `loadgen
//! ramp`, each measuring lqd and, side by side in the same invocation, the baselines: `raw`,
//! loadgen's own minimal single-threaded epoll sender (run as a process of its own) writing
//! the same frames to the same number of sockets (what this machine can do), and `redis`,
//! Redis 7 pub/sub with as many subscribers.
//!
//! Every run starts its server afresh: lqd fed through its documented JSON-lines UNIX socket
//! (`--source jsonl:unix:PATH`), the raw sender, or a `redis-server`. Then N requestors
//! connect and start their streams, and only then does the injector start writing changes on
//! its schedule ([`changes`], [`inject`]). The receivers ([`receiver`]) check that every
//! connection gets every change exactly once and in order, and time each delivery from its
//! change's intended injection time. One [`RunSummary`] per run; the tables and plots come
//! from [`crate::summary`] and [`crate::plot`].
//!
//! A fresh lqd holds no bindings, so without more the first M changes of a live run
//! (`--bindings`) create its population inside the measured window, growing its store's
//! indexes as they come: a one-time event of a new server, not the steady state of one in
//! front of a DHCP server, whose bindings exist and whose churn is renewals. With `--preload`
//! (`active` and `ramp`), each lqd run first gets every binding once through the same feed, as
//! fast as it takes them, until a sentinel requestor has received them all ([`sentinel`]);
//! the requestors subscribe after that, and the measured changes renew those bindings (the
//! next generation, [`changes::Model::after`]). Raw and Redis keep no bindings: nothing to
//! preload.
//!
//! With `--filter link|relay-id|remote-id`, each requestor asks for a key of its own instead
//! of every change: requestor i's ACTIVELEASEQUERY carries OPTION_LQ_QUERY for link i,
//! relay-id i or remote-id i, and change k is on key k mod N, so it concerns exactly one
//! requestor ([`changes::Keys`]). The baselines do the same work: Redis with a channel per
//! key, the raw sender writing each frame only to its key's socket. Every requestor must
//! receive exactly its key's changes; one received by another requestor is misdelivered, a
//! failure like a loss. Every run reports the server's CPU time per change.
//!
//! On a small machine everything shares the CPUs: lqd's event loop, loadgen's receivers (one
//! thread per CPU by default) and its injector. The latencies include the injector's timer
//! slack (`thread::sleep` overshoots by about 0.1 ms here), the same for every system; and
//! loadgen, not the server, may be what saturates first, which its CPU column shows.
//!
//! ```text
//! cargo build --release -p lqd -p loadgen
//! target/release/loadgen active --requestors 100,1000 --rate 1000,5000 --seconds 10 --systems lqd,raw,redis
//! target/release/loadgen catch-up --requestors 1000 --changes 10000
//! target/release/loadgen ramp --requestors 1000 --start-rate 1000 --p99-ms 50
//! target/release/loadgen active --requestors 100,1000 --rate 1000 --seconds 5 --filter link --systems lqd,raw,redis
//! target/release/loadgen ramp --requestors 1000 --start-rate 1000 --filter link --preload --systems lqd,redis
//! ```

pub(crate) mod active;
pub(crate) mod carrier;
pub(crate) mod catchup;
pub(crate) mod changes;
pub(crate) mod inject;
pub(crate) mod progress;
pub(crate) mod ramp;
pub(crate) mod raw;
pub(crate) mod receiver;
pub(crate) mod run;
pub(crate) mod sentinel;

use std::path::{Path, PathBuf};

use crate::summary::RunSummary;

/// A system under measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum System {
    /// lqd, fed through its JSON-lines UNIX socket.
    Lqd,
    /// loadgen's single-threaded epoll sender process: the same frames, the same sockets.
    Raw,
    /// Redis 7 pub/sub (Debian's redis-server), the same payloads to N subscribers.
    Redis,
    /// lqd with every requestor on TLS: STARTTLS, a rustls handshake, the query inside it
    /// (`--tls` adds it beside `lqd`).
    #[value(name = "lqd-tls")]
    LqdTls,
    /// NATS 2.9 core pub/sub (Debian's nats-server), the same payloads to N subscribers.
    Nats,
    /// lqd with its metrics endpoint on (`metrics_listen`), `GET /metrics` and
    /// `GET /requestors` scraped every second (`--metrics` adds it beside `lqd`).
    #[value(name = "lqd-metrics")]
    LqdMetrics,
}

impl System {
    /// Its name in the reports.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Lqd => "lqd",
            Self::Raw => "raw",
            Self::Redis => "redis",
            Self::LqdTls => "lqd-tls",
            Self::Nats => "nats",
            Self::LqdMetrics => "lqd-metrics",
        }
    }

    /// lqd, over TLS or not, with metrics or not.
    pub(crate) const fn is_lqd(self) -> bool {
        matches!(self, Self::Lqd | Self::LqdTls | Self::LqdMetrics)
    }
}

/// What a filtered run's requestors ask for (`--filter`): each requestor i sends an
/// ACTIVELEASEQUERY with OPTION_LQ_QUERY for its own key i, and change k is on key k mod N.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum FilterKind {
    /// QUERY_BY_LINK_ADDRESS: requestor i asks for link i; change k is on link k mod N.
    Link,
    /// QUERY_BY_RELAY_ID: requestor i asks for relay-id i; change k is relayed by relay k mod N.
    RelayId,
    /// QUERY_BY_REMOTE_ID: requestor i asks for remote-id i; change k is relayed with remote-id
    /// k mod N.
    RemoteId,
}

impl FilterKind {
    /// Its name on the command line and in the reports.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Link => "link",
            Self::RelayId => "relay-id",
            Self::RemoteId => "remote-id",
        }
    }
}

/// What every fan-out mode takes.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct FanoutCommon {
    /// The lqd binary to run.
    #[arg(long, default_value = "target/release/lqd")]
    pub(crate) lqd: PathBuf,
    /// The systems to measure, each in turn at every load: lqd, lqd-tls (lqd with every
    /// requestor on STARTTLS), lqd-metrics (lqd with its metrics endpoint scraped every
    /// second), raw (loadgen's own epoll sender), redis (redis-server pub/sub), nats
    /// (nats-server core pub/sub).
    #[arg(long, value_delimiter = ',', default_value = "lqd,raw")]
    pub(crate) systems: Vec<System>,
    /// Also measure lqd over TLS: `lqd-tls` right after `lqd` in `--systems` (or first, when
    /// lqd is not among them), side by side at every load. Each run gets a throwaway CA and
    /// server certificate; lqd offers TLS and every measured requestor sends STARTTLS, then
    /// does a rustls handshake (TLS 1.2+) and runs its query inside TLS.
    #[arg(long)]
    pub(crate) tls: bool,
    /// Also measure lqd with its metrics on: `lqd-metrics` right after `lqd` (issue 16: the
    /// event loop must not slow down). lqd runs with `metrics_listen` on a free port of
    /// `[::1]`, and a scraper thread of loadgen's does `GET /metrics` and `GET /requestors`
    /// once a second, from lqd's start to the run's end, as Prometheus and a dashboard would.
    #[arg(long)]
    pub(crate) metrics: bool,
    /// Bindings the changes cycle over: change k is for binding k mod M. Keep it above the
    /// changes a requestor could fall behind by, or lqd rightly coalesces (RFC 7653 sends a
    /// binding's current state only), which counts as lost here.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) bindings: u32,
    /// Filter each requestor's stream by a key of its own: requestor i asks only for key i
    /// (`link`, `relay-id` or `remote-id`) and change k is on key k mod N, so each change goes
    /// to exactly one requestor; lqd then runs with no configured links, and the baselines
    /// send each change only to its key's requestor (Redis: a channel per key). Default: no
    /// filter, every change to every requestor. `--bindings` must be a multiple of every N.
    #[arg(long, value_name = "KIND")]
    pub(crate) filter: Option<FilterKind>,
    /// Receiver threads (default: the number of CPUs).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) workers: Option<u32>,
    /// How long to wait for the last deliveries after the last change is due, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) drain_seconds: f64,
    /// Leave Nagle's algorithm on in the raw sender (as lqd does) instead of TCP_NODELAY.
    #[arg(long)]
    pub(crate) raw_nagle: bool,
    /// Keep lqd's state directories (config, log, journal) instead of removing them.
    #[arg(long)]
    pub(crate) keep_state: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<PathBuf>,
    /// Write SVG plots of the latency percentiles (against N, and against the rate) here.
    #[arg(long, value_name = "DIR")]
    pub(crate) plots: Option<PathBuf>,
}

impl FanoutCommon {
    /// The systems to run, in order: `--systems`, with `lqd-tls` added by `--tls` and
    /// `lqd-metrics` by `--metrics`, each right after `lqd` (or first, without it).
    pub(crate) fn systems(&self) -> Vec<System> {
        let mut out = self.systems.clone();
        for (wanted, system) in [
            (self.metrics, System::LqdMetrics),
            (self.tls, System::LqdTls),
        ] {
            if wanted && !out.contains(&system) {
                let at = out
                    .iter()
                    .position(|s| *s == System::Lqd)
                    .map_or(0, |i| i + 1);
                out.insert(at, system);
            }
        }
        out.dedup();
        out
    }
    fn workers(&self) -> usize {
        self.workers.map_or_else(
            || std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
            |w| w as usize,
        )
    }

    fn check(&self) -> Result<(), String> {
        if !(self.drain_seconds >= 0.0 && self.drain_seconds.is_finite()) {
            return Err("--drain-seconds must be 0 or more".to_owned());
        }
        if self.systems.is_empty() {
            return Err("--systems names no system".to_owned());
        }
        Ok(())
    }
}

/// The report's sentence on `--filter`: empty without one.
fn filter_note(common: &FanoutCommon) -> String {
    let Some(kind) = common.filter else {
        return String::new();
    };
    let key = kind.name();
    format!(
        "; filtered by {key}: requestor i asks only for {key} i and change k is on {key} k mod N, \
         so each change goes to one requestor (Redis: a channel per {key}; raw: each frame to its \
         {key}'s socket); misdelivered: a change received by a requestor that did not ask for it"
    )
}

/// Writes the two plots into `dir` (created if missing); the files written.
fn plots(runs: &[RunSummary], dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let by_n = dir.join("latency-vs-requestors.svg");
    let by_rate = dir.join("latency-vs-rate.svg");
    crate::plot::latency_vs_requestors(runs, &by_n)?;
    crate::plot::latency_vs_rate(runs, &by_rate)?;
    Ok(vec![by_n, by_rate])
}

/// Checks a list of positive numbers given on the command line.
fn positive(values: &[f64], what: &str) -> Result<(), String> {
    if values.is_empty() {
        return Err(format!("{what} needs at least one value"));
    }
    match values.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
        Some(v) => Err(format!("{what}: {v} is not a positive number")),
        None => Ok(()),
    }
}
