//! The lqd process under load: started with a demo population on one link (or fed by loadgen
//! through its JSON-lines UNIX socket), watched through its log and /proc, killed and cleaned
//! up on drop.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lqd::codec::{BuildOptions, DhcpOption, MessageBuilder, MessageRepr, OptionCode, QueryType};
use lqd::config::DemoSettings;

use crate::Common;
use crate::population::{ChurnClock, Population};

/// The requestor's DUID (a DUID-LL) in every query loadgen sends.
pub(crate) const REQUESTOR: [u8; 10] = [0, 3, 0, 1, 0x02, 0x4c, 0x47, 0, 0, 0x01];

/// The log line the demo source writes once its initial population is in the feed.
const POPULATION_SENT: &str = "demo: initial population sent";

/// `/proc/PID/stat` times are in clock ticks of `USER_HZ`, which Linux fixes at 100 for user
/// space on every architecture it supports.
const USER_HZ: f64 = 100.0;

/// A running lqd.
pub(crate) struct Lqd {
    child: Child,
    /// Where it listens, TCP and UDP.
    pub(crate) addr: SocketAddr,
    /// Its second listen address, `127.0.0.1` on the same port, when asked for.
    pub(crate) addr_v4: Option<SocketAddr>,
    dir: PathBuf,
    keep: bool,
    /// Its certificate and key (`[tls]`), and the requestors' client configuration, when
    /// started with TLS ([`with_tls`](Self::with_tls)).
    tls: Option<(crate::tls::Pki, std::sync::Arc<rustls::ClientConfig>)>,
    /// The scraper of its metrics endpoint, when started with `metrics_listen`
    /// ([`with_metrics`](Self::with_metrics)).
    metrics: Option<Box<crate::scrape::Scraper>>,
}

/// Memory and CPU of a process, from /proc.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcStats {
    /// VmRSS, KiB.
    pub(crate) rss_kib: u64,
    /// VmHWM (peak RSS since start or since the last [`reset_peak`](Lqd::reset_peak)), KiB.
    pub(crate) hwm_kib: u64,
    /// utime + stime, seconds.
    pub(crate) cpu_secs: f64,
}

/// What it took lqd to hold the whole population.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ready {
    /// From spawn until the last initial binding was answered.
    pub(crate) load: Duration,
    /// Bounds the churn lqd has applied since.
    pub(crate) churn: ChurnClock,
    /// lqd's memory and CPU at that point (VmHWM is the peak while loading).
    pub(crate) stats: ProcStats,
}

impl Lqd {
    /// Regenerates the demo population for `clients` clients, then starts lqd with it on a
    /// free port of `[::1]` and waits until lqd holds all of it. `extra` is appended to the
    /// top level of the config file.
    pub(crate) fn start(
        common: &Common,
        clients: usize,
        extra: &str,
    ) -> Result<(Self, Population, Ready), String> {
        let settings = DemoSettings {
            clients,
            links: 1,
            changes_per_sec: common.churn,
            seed: common.seed,
            churn_limit: None,
            ..DemoSettings::default()
        };
        let t = Instant::now();
        let population = Population::generate(&settings)?;
        eprintln!(
            "loadgen: demo population regenerated: {} clients, {} leases, in {:.1} s",
            population.clients(),
            population.leases(),
            t.elapsed().as_secs_f64()
        );
        let mut lqd = Self::spawn(common, &settings, extra)?;
        let ready = lqd.wait_ready(&population, common.churn)?;
        eprintln!(
            "loadgen: lqd (pid {}) holds all {} bindings after {:.2} s; RSS {:.1} MiB, peak {:.1} MiB",
            lqd.pid(),
            population.clients(),
            ready.load.as_secs_f64(),
            crate::report::mib(ready.stats.rss_kib),
            crate::report::mib(ready.stats.hwm_kib),
        );
        Ok((lqd, population, ready))
    }

    fn spawn(common: &Common, demo: &DemoSettings, extra: &str) -> Result<Self, String> {
        Self::spawn_with(&common.lqd, common.keep_state, false, |_, _| {
            format!(
                "source = \"demo\"\n{extra}\n[demo]\nclients = {}\nlinks = {}\nchanges_per_sec = {}\nseed = {}\n",
                demo.clients, demo.links, demo.changes_per_sec, demo.seed,
            )
        })
    }

    /// Starts lqd fed through its JSON-lines UNIX socket source (`jsonl:unix:PATH`, in its
    /// state directory) with `extra` appended to the config's top level, and connects to that
    /// socket: the connection is returned, ready for lines. lqd binds its TCP listener before
    /// it starts the source, so once the socket accepts, lqd is listening.
    pub(crate) fn start_jsonl(
        binary: &Path,
        keep: bool,
        extra: &str,
    ) -> Result<(Self, UnixStream), String> {
        Self::start_jsonl_on(binary, keep, false, extra)
    }

    /// [`start_jsonl`](Self::start_jsonl), listening on `127.0.0.1` too (the same port) when
    /// `ipv4`: requestors can then connect from any address of `127.0.0.0/8` as well as `::1`.
    pub(crate) fn start_jsonl_on(
        binary: &Path,
        keep: bool,
        ipv4: bool,
        extra: &str,
    ) -> Result<(Self, UnixStream), String> {
        let mut socket = PathBuf::new();
        let mut lqd = Self::spawn_with(binary, keep, ipv4, |_, dir| {
            socket = dir.join("feed.sock");
            format!("source = \"jsonl:unix:{}\"\n{extra}\n", socket.display())
        })?;
        let started = Instant::now();
        loop {
            lqd.check_alive()?;
            if let Ok(s) = UnixStream::connect(&socket) {
                return Ok((lqd, s));
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "lqd's feed socket {} did not accept within 30 s; log:\n{}",
                    socket.display(),
                    lqd.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Spawns lqd on a free port of `[::1]` with a fresh state directory; `body(addr, dir)`
    /// gives the config file's lines after `listen`, `state_dir` and `log`.
    pub(crate) fn spawn_body(
        binary: &Path,
        keep: bool,
        body: impl FnOnce(SocketAddr, &Path) -> String,
    ) -> Result<Self, String> {
        Self::spawn_with(binary, keep, false, body)
    }

    /// Spawns lqd on a free port of `[::1]` in the existing state directory `dir` (a restart:
    /// its journal and DUID are there), its config file and log written anew.
    pub(crate) fn spawn_in(
        binary: &Path,
        dir: &Path,
        keep: bool,
        body: impl FnOnce(SocketAddr, &Path) -> String,
    ) -> Result<Self, String> {
        let (addr, fresh) = fresh_server("lqd")?;
        let _ = std::fs::remove_dir_all(fresh);
        Self::spawn_at(binary, keep, false, addr, dir.to_path_buf(), body)
    }

    /// Starts lqd on a free port of `[::1]` with a fresh state directory and `body` after
    /// `listen`, `state_dir` and `log` in its config file (its source among them); returns at
    /// once, lqd starting.
    pub(crate) fn start_config(binary: &Path, keep: bool, body: &str) -> Result<Self, String> {
        Self::spawn_with(binary, keep, false, |_, _| body.to_owned())
    }

    /// Spawns lqd on a free port of `[::1]` (and of `127.0.0.1` when `ipv4`) with a fresh state
    /// directory; `body(addr, dir)` gives the config file's lines after `listen`, `state_dir`
    /// and `log`.
    fn spawn_with(
        binary: &Path,
        keep: bool,
        ipv4: bool,
        body: impl FnOnce(SocketAddr, &Path) -> String,
    ) -> Result<Self, String> {
        let (addr, dir) = fresh_server("lqd")?;
        Self::spawn_at(binary, keep, ipv4, addr, dir, body)
    }

    fn spawn_at(
        binary: &Path,
        keep: bool,
        ipv4: bool,
        addr: SocketAddr,
        dir: PathBuf,
        body: impl FnOnce(SocketAddr, &Path) -> String,
    ) -> Result<Self, String> {
        if !binary.is_file() {
            return Err(format!(
                "no lqd binary at {} (build it with `cargo build --release --bin lqd`, or pass --lqd)",
                binary.display()
            ));
        }
        let addr_v4 = ipv4.then(|| SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port())));
        let listen = match addr_v4 {
            Some(v4) => format!("\"{addr}\", \"{v4}\""),
            None => format!("\"{addr}\""),
        };
        let config = dir.join("lqd.toml");
        let text = format!(
            "listen = [{listen}]\nstate_dir = \"{}\"\nlog = \"info\"\n{}",
            dir.display(),
            body(addr, &dir),
        );
        std::fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
        let log = std::fs::File::create(dir.join("lqd.log"))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let child = Command::new(binary)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        Ok(Self {
            child,
            addr,
            addr_v4,
            dir,
            keep,
            tls: None,
            metrics: None,
        })
    }

    /// Keeps `pki` (whose `[tls]` table is in this lqd's config) for as long as lqd runs, and
    /// its client configuration for the requestors.
    pub(crate) fn with_tls(mut self, pki: crate::tls::Pki) -> Result<Self, String> {
        let config = pki.client_config()?;
        self.tls = Some((pki, config));
        Ok(self)
    }

    /// Scrapes `addr`, this lqd's `metrics_listen`, every second from now on (until
    /// [`finish_scraping`](Self::finish_scraping) or the end).
    pub(crate) fn with_metrics(mut self, addr: SocketAddr) -> Result<Self, String> {
        self.metrics = Some(Box::new(crate::scrape::Scraper::start(addr)?));
        Ok(self)
    }

    /// Stops the scraper, when there is one, and says what it saw.
    pub(crate) fn finish_scraping(
        &mut self,
    ) -> Option<Result<crate::scrape::ScrapeReport, String>> {
        self.metrics.take().map(|s| s.finish())
    }

    /// The requestors' TLS client configuration, when lqd runs with TLS.
    pub(crate) fn tls_client(&self) -> Option<std::sync::Arc<rustls::ClientConfig>> {
        self.tls.as_ref().map(|(_, c)| std::sync::Arc::clone(c))
    }

    /// Waits until lqd holds the whole initial population.
    ///
    /// The demo source sends client after client, then logs [`POPULATION_SENT`] and starts
    /// its churn; lqd applies the feed in order. So once the address of the population's last
    /// initial change is answered (over UDP) with its client, every initial binding is in the
    /// store: exactly one per client, since the population has no duplicate DUID or address
    /// (`Population::generate` checks). The churn origin is bounded by the last look at the
    /// log that did not see the line yet.
    fn wait_ready(&mut self, population: &Population, rate: u32) -> Result<Ready, String> {
        let spawned = Instant::now();
        // The demo loads about a million changes in a few seconds; allow a slow machine.
        let limit = Duration::from_secs(60) + Duration::from_micros(population.leases() * 100);
        let mut before_line = spawned;
        loop {
            self.check_alive()?;
            let seen = Instant::now();
            if self.log().contains(POPULATION_SENT) {
                break;
            }
            before_line = seen;
            if spawned.elapsed() > limit {
                return Err(format!(
                    "lqd did not send its demo population within {limit:?}; log:\n{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let churn = ChurnClock::new(before_line, rate);
        let (client, address) = population.last_initial();
        let sock = UdpSocket::bind("[::1]:0").map_err(|e| format!("UDP socket: {e}"))?;
        sock.connect(self.addr)
            .and_then(|()| sock.set_read_timeout(Some(Duration::from_millis(200))))
            .map_err(|e| format!("UDP socket: {e}"))?;
        let query = MessageBuilder::leasequery(0x00ab_cdef)
            .client_id(&REQUESTOR)
            .lq_query(QueryType::ByAddress, Ipv6Addr::UNSPECIFIED, |q| {
                q.iaaddr(address, 0, 0)
            })
            .build()
            .map_err(|e| format!("building a query: {e}"))?;
        let mut buf = vec![0u8; 65_536];
        let asked = Instant::now();
        loop {
            self.check_alive()?;
            if asked.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "lqd never answered for the population's last address {address}: was it \
                     built from the same source tree as loadgen? log:\n{}",
                    self.log_tail()
                ));
            }
            sock.send(&query)
                .map_err(|e| format!("UDP query to {}: {e}", self.addr))?;
            let Ok(n) = sock.recv(&mut buf) else {
                continue;
            };
            let holds = buf
                .get(..n)
                .and_then(|m| MessageRepr::parse(m).ok())
                .and_then(|m| match m.options.get(OptionCode::ClientData) {
                    Some(DhcpOption::ClientData(cd)) => {
                        cd.client_id().map(|d| d.as_bytes() == client)
                    }
                    _ => None,
                })
                .unwrap_or(false);
            if holds {
                return Ok(Ready {
                    load: spawned.elapsed(),
                    churn,
                    stats: self.stats()?,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// lqd's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// lqd's state directory.
    pub(crate) fn state_dir(&self) -> &Path {
        &self.dir
    }

    /// Stops lqd cleanly (SIGTERM) and waits up to `limit` for it to exit; its state
    /// directory stays, for a restart ([`spawn_in`](Self::spawn_in)), and is the caller's to
    /// remove.
    pub(crate) fn terminate(mut self, limit: Duration) -> Result<(), String> {
        let pid = self.pid().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .map_err(|e| format!("kill -TERM {pid}: {e}"))?;
        if !sent.success() {
            return Err(format!("kill -TERM {pid} failed"));
        }
        let started = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if started.elapsed() > limit => {
                    return Err(format!("lqd did not stop within {limit:?} of SIGTERM"));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(format!("lqd: {e}")),
            }
        }
        self.keep = true;
        self.dir = PathBuf::new();
        Ok(())
    }

    /// Kills lqd with SIGKILL (`kill -9`), keeping its state directory.
    pub(crate) fn kill9(mut self) -> Result<(), String> {
        self.child.kill().map_err(|e| format!("kill -9 lqd: {e}"))?;
        self.child.wait().map_err(|e| format!("lqd: {e}"))?;
        self.keep = true;
        self.dir = PathBuf::new();
        Ok(())
    }

    /// An error, with the log's end, if lqd has exited.
    pub(crate) fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("lqd exited ({status}); log:\n{}", self.log_tail())),
            Err(e) => Err(format!("lqd: {e}")),
        }
    }

    /// Everything lqd logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The file lqd logs to (its standard error).
    pub(crate) fn log_path(&self) -> PathBuf {
        self.dir.join("lqd.log")
    }

    /// The last lines of the log, for error messages.
    pub(crate) fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines
            .get(lines.len().saturating_sub(20)..)
            .unwrap_or_default()
            .join("\n")
    }

    /// Counts log lines containing `needle`.
    pub(crate) fn log_count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// lqd's memory and CPU now.
    pub(crate) fn stats(&self) -> Result<ProcStats, String> {
        proc_stats(self.pid())
    }

    /// Resets VmHWM to the current RSS (`echo 5 > /proc/PID/clear_refs`), so the next
    /// [`stats`](Self::stats) reports the peak since now; false when the kernel refused.
    pub(crate) fn reset_peak(&self) -> bool {
        reset_peak(self.pid())
    }
}

/// `/proc/PID/status` of process `pid`.
fn proc_status(pid: u32) -> Result<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))
}

/// The figure of the line `name` (such as `VmRSS:`) of a `/proc/PID/status` text, in kB.
fn status_kib(status: &str, pid: u32, name: &str) -> Result<u64, String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or_else(|| format!("no {name} in /proc/{pid}/status"))
}

/// Memory and CPU of process `pid` now.
pub(crate) fn proc_stats(pid: u32) -> Result<ProcStats, String> {
    let status = proc_status(pid)?;
    let field = |name: &str| status_kib(&status, pid, name);
    Ok(ProcStats {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
        cpu_secs: cpu_secs(&format!("/proc/{pid}/stat"))?,
    })
}

/// Resets process `pid`'s VmHWM to its current RSS (`echo 5 > /proc/PID/clear_refs`); false
/// when the kernel refused.
pub(crate) fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// A process's resident memory, from `/proc/PID/status`, KiB.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Memory {
    /// VmRSS.
    pub(crate) rss_kib: u64,
    /// RssAnon: the heap and other private memory.
    pub(crate) anon_kib: u64,
    /// RssFile + RssShmem: mapped files' pages (lqd's journal).
    pub(crate) file_kib: u64,
    /// VmHWM.
    pub(crate) hwm_kib: u64,
}

/// Process `pid`'s resident memory now.
pub(crate) fn proc_memory(pid: u32) -> Result<Memory, String> {
    let status = proc_status(pid)?;
    let field = |name: &str| status_kib(&status, pid, name);
    Ok(Memory {
        rss_kib: field("VmRSS:")?,
        anon_kib: field("RssAnon:")?,
        file_kib: field("RssFile:")? + field("RssShmem:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

impl Drop for Lqd {
    fn drop(&mut self) {
        // The scraper first, so that it does not count lqd's end as failed scrapes.
        drop(self.metrics.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.dir.as_os_str().is_empty() {
            return;
        }
        if self.keep {
            eprintln!("loadgen: lqd's state kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// utime + stime of the process whose `stat` file is at `path`, seconds.
fn cpu_secs(path: &str) -> Result<f64, String> {
    let stat = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    // The command name, in parentheses, may hold spaces: count fields after its end.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| format!("{path}: no command name"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); the state (field 3) is the first after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| format!("{path}: bad field {}", i + 3))
    };
    Ok((ticks(11)? + ticks(12)?) as f64 / USER_HZ)
}

/// loadgen's own CPU time (all its threads), seconds.
pub(crate) fn own_cpu_secs() -> f64 {
    cpu_secs("/proc/self/stat").unwrap_or(0.0)
}

/// A free TCP port on `[::1]` (for a listener of lqd's besides its own).
pub(crate) fn fresh_port() -> Result<SocketAddr, String> {
    let port = std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port on [::1]: {e}"))?
        .port();
    Ok(SocketAddr::from((Ipv6Addr::LOCALHOST, port)))
}

/// A free port on `[::1]` and a new temporary directory (`loadgen-NAME-PID-NANOS`) for a
/// server loadgen starts.
pub(crate) fn fresh_server(name: &str) -> Result<(SocketAddr, PathBuf), String> {
    let port = std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port on [::1]: {e}"))?
        .port();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("loadgen-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok((SocketAddr::from((Ipv6Addr::LOCALHOST, port)), dir))
}
