//! `loadgen scale`: a carrier-sized population in one lqd: memory per binding, journal octets
//! per record, and the time from a restart to serving again (issue 19).
//!
//! The population is the demo source's, shaped as a carrier's estate: `--bindings` clients
//! (one binding each) over `--links` links, every link behind its own access relay (relay-id,
//! a remote-id per subscriber line, the relayed message), a share of them behind aggregation
//! relays too, and `--pd-percent` of the clients holding a delegated prefix beside their
//! address. loadgen runs the demo's generator and writes each change to lqd's JSON-lines
//! source (`--feed jsonl`, the default: a lease store's feed is another process in a
//! deployment, so lqd's memory is lqd's own), as fast as lqd takes them, then churns
//! `--churn-changes` changes at `--churn` a second (renewals, releases, new clients, expiries:
//! the demo's mix), then one client of its own, which lqd answers once it has applied every
//! line before it. With `--feed demo`, lqd's own demo source does the same inside lqd, and its
//! generator's state (about 100 octets a client) counts in lqd's RSS. loadgen then measures:
//!
//! - **memory:** lqd's VmRSS once it holds every binding and the churn is done, split into
//!   anonymous memory (the store, its indexes, the postings) and file pages (the mapped
//!   journal), per binding;
//! - **journal density:** lqd is stopped cleanly (SIGTERM) and `lqd journal check` reads the
//!   journal: octets of ring used by the records over the records, framing included;
//! - **restart:** the clean stop writes the snapshot of the mirror beside the journal (D43;
//!   loadgen reads how long it took and its size from lqd's log); lqd is started again on the
//!   same state directory with a source that sends nothing (a JSON-lines socket nobody writes
//!   to), so that what it serves comes from what it kept; loadgen asks over UDP, every 10 ms,
//!   for the population's last address, and the time from spawning lqd to the first right
//!   answer is the restart time. Then every sampled binding (`--samples`, spread over the
//!   population) must be answered with its client. With `--full-replay`, that lqd is then
//!   killed (`kill -9`, so it writes no snapshot), the snapshot removed, and lqd started once
//!   more: the restart that replays the whole journal, timed and checked the same way.
//!
//! loadgen regenerates the population from the same seed with lqd's own `DemoSource`, so it
//! knows the last initial lease and the sampled ones; with the churn, a sampled client the
//! churn may have touched is not held against lqd (the demo's churn picks few of millions).

use std::io::Write;
use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lqd::codec::{BuildOptions, DhcpOption, MessageBuilder, MessageRepr, OptionCode, QueryType};
use lqd::config::DemoSettings;
use lqd::feed::{DemoSource, system_time};
use lqd::store::{Change, Lease, LeaseKind, LeaseState};
use serde::Serialize;

use crate::process::{Lqd, REQUESTOR, proc_memory};
use crate::report::mib;
use crate::{Common, Outcome};

/// Options of `loadgen scale`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// Clients in the population: one binding each.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) bindings: usize,
    /// Links, each behind its own access relay (a relay-id each).
    #[arg(long, default_value_t = 3000)]
    pub(crate) links: u16,
    /// Share of the clients holding a delegated prefix besides their address, percent.
    #[arg(long, default_value_t = 50)]
    pub(crate) pd_percent: u8,
    /// Share of the links whose relay is behind an aggregation relay too, percent.
    #[arg(long, default_value_t = 25)]
    pub(crate) two_hop_percent: u8,
    /// Churn changes after the initial population (the demo's mix of renewals, releases,
    /// new clients, expiries), at `--churn` a second; 0 for none.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) churn_changes: u64,
    /// lqd's `journal_size`, octets: large enough for every record, so that the restart
    /// rebuilds every binding from it.
    #[arg(long, default_value_t = 1 << 30)]
    pub(crate) journal_size: u64,
    /// Skip the restart.
    #[arg(long)]
    pub(crate) no_restart: bool,
    /// After the restart from the snapshot, `kill -9` lqd, remove the snapshot and time a
    /// restart that replays the whole journal too.
    #[arg(long)]
    pub(crate) full_replay: bool,
    /// Bindings checked after the restart, spread evenly over the population.
    #[arg(long, default_value_t = 1000)]
    pub(crate) samples: usize,
    /// How the population reaches lqd: `jsonl`, loadgen runs the demo's generator and writes
    /// each change to lqd's JSON-lines source, as a lease store's feed does in a deployment
    /// (lqd's memory is then lqd's own); `demo`, lqd's own demo source generates it inside
    /// lqd (its generator's state, about 100 octets a client, counts in lqd's RSS).
    #[arg(long, value_enum, default_value_t = Feed::Jsonl)]
    pub(crate) feed: Feed,
    #[command(flatten)]
    pub(crate) common: Common,
}

/// How the population reaches lqd (`--feed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Feed {
    /// loadgen writes the demo's changes to lqd's JSON-lines source.
    Jsonl,
    /// lqd's own demo source.
    Demo,
}

/// Everything `loadgen scale` measured.
#[derive(Debug, Clone, Serialize)]
struct Report {
    feed: Feed,
    bindings: usize,
    leases: u64,
    links: u16,
    pd_percent: u8,
    two_hop_percent: u8,
    churn_changes: u64,
    churn_per_sec: u32,
    /// From spawning lqd until it held the last initial binding.
    load_seconds: f64,
    /// From spawning lqd until the churn was done.
    settled_seconds: f64,
    /// lqd's CPU time (user and system, all threads: the demo source's included) by then.
    settled_cpu_seconds: f64,
    rss_kib: u64,
    rss_anon_kib: u64,
    rss_file_kib: u64,
    hwm_kib: u64,
    rss_octets_per_binding: f64,
    anon_octets_per_binding: f64,
    journal_records: u64,
    journal_used: u64,
    journal_ring: u64,
    journal_octets_per_record: f64,
    restart: Option<Restart>,
    load_average: String,
    /// What went wrong (a sample answered wrongly after a restart): the run fails.
    failures: Vec<String>,
}

/// The restart on the same state directory.
#[derive(Debug, Clone, Serialize)]
struct Restart {
    /// The snapshot the clean stop wrote: seconds it took and octets (from lqd's log).
    snapshot_write_seconds: Option<f64>,
    snapshot_octets: Option<u64>,
    /// The start loaded the snapshot.
    from_snapshot: bool,
    /// Records replayed at the start (those after the snapshot's, or all).
    replayed: Option<u64>,
    /// Seconds lqd took to open the journal and rebuild the mirror (from its log).
    opened_seconds: Option<f64>,
    /// From spawning lqd to the first right answer for the population's last address.
    serving_seconds: f64,
    /// lqd's CPU time (user and system) by then: the machine is shared, so the wall time
    /// depends on what else runs.
    serving_cpu_seconds: f64,
    /// What lqd logged as restored: records read, bindings rebuilt.
    records: Option<u64>,
    bindings: Option<u64>,
    samples: usize,
    samples_right: usize,
    rss_kib: u64,
    hwm_kib: u64,
    /// With `--full-replay`: the restart after `kill -9` without the snapshot.
    full: Option<Box<Self>>,
}

/// A sampled binding: its client's DUID and one of its leases' addresses.
struct Sample {
    duid: Box<[u8]>,
    address: Ipv6Addr,
}

/// The population loadgen needs to know: its size, its last initial lease, and samples.
struct Known {
    settings: DemoSettings,
    leases: u64,
    last: Sample,
    samples: Vec<Sample>,
}

fn regenerate(settings: &DemoSettings, samples: usize) -> Result<Known, String> {
    let mut source = DemoSource::new(settings.demo_config());
    let every = (settings.clients / samples.max(1)).max(1);
    let mut known = Known {
        settings: *settings,
        leases: 0,
        last: Sample {
            duid: Box::default(),
            address: Ipv6Addr::UNSPECIFIED,
        },
        samples: Vec::with_capacity(samples),
    };
    let mut clients = 0usize;
    let mut previous: Option<Box<[u8]>> = None;
    let now = system_time();
    while !source.initial_done() {
        let change = source.next_change(now);
        known.leases += 1;
        if previous.as_deref() != Some(&change.client_id[..]) {
            if clients % every == 0 && known.samples.len() < samples {
                known.samples.push(Sample {
                    duid: change.client_id.clone(),
                    address: change.lease.address,
                });
            }
            clients += 1;
            previous = Some(change.client_id.clone());
        }
        known.last = Sample {
            duid: change.client_id,
            address: change.lease.address,
        };
    }
    if clients != settings.clients {
        return Err(format!(
            "the demo population has {clients} clients, not {}",
            settings.clients
        ));
    }
    Ok(known)
}

/// Asks lqd over UDP who leases `address`; the DUID answered, if any.
pub(crate) fn who_leases(sock: &UdpSocket, address: Ipv6Addr, buf: &mut [u8]) -> Option<Vec<u8>> {
    let query = MessageBuilder::leasequery(0x0019_0019)
        .client_id(&REQUESTOR)
        .lq_query(QueryType::ByAddress, Ipv6Addr::UNSPECIFIED, |q| {
            q.iaaddr(address, 0, 0)
        })
        .build()
        .ok()?;
    sock.send(&query).ok()?;
    let n = sock.recv(buf).ok()?;
    let m = MessageRepr::parse(buf.get(..n)?).ok()?;
    match m.options.get(OptionCode::ClientData) {
        Some(DhcpOption::ClientData(cd)) => cd.client_id().map(|d| d.as_bytes().to_vec()),
        _ => None,
    }
}

pub(crate) fn udp_to(addr: SocketAddr) -> Result<UdpSocket, String> {
    let sock = UdpSocket::bind("[::1]:0").map_err(|e| format!("UDP socket: {e}"))?;
    sock.connect(addr)
        .and_then(|()| sock.set_read_timeout(Some(Duration::from_millis(200))))
        .map_err(|e| format!("UDP socket: {e}"))?;
    Ok(sock)
}

/// Waits until lqd answers `sample`'s address with its client; the time it took from `since`.
fn wait_answer(
    lqd: &mut Lqd,
    sample: &Sample,
    since: Instant,
    limit: Duration,
) -> Result<Duration, String> {
    let mut buf = vec![0u8; 65_536];
    let mut sock: Option<UdpSocket> = None;
    loop {
        lqd.check_alive()?;
        if since.elapsed() > limit {
            return Err(format!(
                "lqd did not answer for {} within {limit:?}; log:\n{}",
                sample.address,
                lqd.log_tail()
            ));
        }
        if sock.is_none() {
            sock = Some(udp_to(lqd.addr)?);
        }
        if let Some(s) = &sock {
            if who_leases(s, sample.address, &mut buf).as_deref() == Some(&sample.duid[..]) {
                return Ok(since.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The figures `lqd journal check` prints: records, octets used by them, octets of ring.
fn journal_check(lqd_bin: &Path, journal: &Path) -> Result<(u64, u64, u64), String> {
    let out = Command::new(lqd_bin)
        .args(["journal", "check"])
        .arg(journal)
        .output()
        .map_err(|e| format!("lqd journal check: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let number_after = |key: &str| -> Option<u64> {
        let at = text.find(key)? + key.len();
        let digits: String = text
            .get(at..)?
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    let records = number_after("records:");
    let ring = number_after("octets (");
    let used = text
        .find("octets of ring, ")
        .and_then(|i| number_after_at(&text, i + "octets of ring, ".len()));
    match (records, used, ring) {
        (Some(r), Some(u), Some(g)) => Ok((r, u, g)),
        _ => Err(format!(
            "lqd journal check printed:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

fn number_after_at(text: &str, at: usize) -> Option<u64> {
    let digits: String = text
        .get(at..)?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// How a restart began: the snapshot written at the stop and loaded, or the whole journal.
fn restart_note(x: &Restart) -> String {
    let write = match (x.snapshot_write_seconds, x.snapshot_octets) {
        (Some(s), Some(o)) => format!(
            "; snapshot written at the stop in {s:.1} s, {:.0} MiB",
            mib(o / 1024)
        ),
        _ => String::new(),
    };
    let how = if x.from_snapshot {
        "from the snapshot"
    } else {
        "whole journal replayed"
    };
    format!(
        "; {how}, {} records replayed, journal opened in {} s{write}",
        x.replayed.map_or("?".into(), |v| v.to_string()),
        x.opened_seconds.map_or("?".into(), |v| format!("{v:.1}"))
    )
}

/// The machine's load averages, as /proc/loadavg gives them.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// A number from lqd's "journal opened" log line.
fn logged(log: &str, key: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.contains("journal opened"))?;
    let at = line.find(&format!("{key}="))? + key.len() + 1;
    number_after_at(line, at)
}

/// The demo's links as `[[link]]` tables of lqd's configuration.
fn link_tables(settings: &DemoSettings) -> String {
    fn list<T: std::fmt::Display>(v: &[T]) -> String {
        v.iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(", ")
    }
    let mut links = String::new();
    for l in DemoSource::link_defs(&settings.demo_config()) {
        links.push_str(&format!(
            "[[link]]\naddress = \"{}\"\nprefixes = [{}]\npd_pools = [{}]\n",
            l.address,
            list(&l.prefixes),
            list(&l.pd_pools)
        ));
    }
    links
}

/// A lease change as lqd's JSON-lines source reads it (`schema/lease-change.schema.json`).
#[derive(Serialize)]
struct Line {
    client_id: String,
    link: Ipv6Addr,
    kind: &'static str,
    address: Ipv6Addr,
    prefix_len: u8,
    iaid: u32,
    preferred_lifetime: u32,
    valid_lifetime: u32,
    cltt: u64,
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    relay: Option<LineRelay>,
}

#[derive(Serialize)]
struct LineRelay {
    relay_ids: Vec<String>,
    remote_ids: Vec<LineRemoteId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    relay_message: Option<LineMessage>,
}

#[derive(Serialize)]
struct LineRemoteId {
    enterprise: u32,
    id: String,
}

#[derive(Serialize)]
struct LineMessage {
    peer: Ipv6Addr,
    message: String,
}

/// Appends `change` to `out` as one JSON line.
fn change_line(change: &Change, out: &mut Vec<u8>) -> Result<(), String> {
    let l = &change.lease;
    let line = Line {
        client_id: hex::encode(&change.client_id),
        link: change.link,
        kind: match l.kind {
            LeaseKind::Address => "na",
            LeaseKind::Prefix => "pd",
        },
        address: l.address,
        prefix_len: l.prefix_len,
        iaid: l.iaid,
        preferred_lifetime: l.preferred_lifetime,
        valid_lifetime: l.valid_lifetime,
        cltt: l.cltt.to_unix(),
        state: match l.state {
            LeaseState::Active => "active",
            LeaseState::Released => "released",
            LeaseState::Declined => "declined",
            LeaseState::Expired => "expired",
            LeaseState::Deleted => "deleted",
        },
        relay: change.relay.as_ref().map(|r| LineRelay {
            relay_ids: r.relay_ids.iter().map(hex::encode).collect(),
            remote_ids: r
                .remote_ids
                .iter()
                .map(|x| LineRemoteId {
                    enterprise: x.enterprise_number,
                    id: hex::encode(&x.remote_id),
                })
                .collect(),
            relay_message: r.relay_message.as_ref().map(|(peer, m)| LineMessage {
                peer: *peer,
                message: hex::encode(m),
            }),
        }),
    };
    serde_json::to_writer(&mut *out, &line).map_err(|e| e.to_string())?;
    out.push(b'\n');
    Ok(())
}

/// Writes `buf` to lqd's feed socket and empties it.
fn send(feed: &mut UnixStream, buf: &mut Vec<u8>) -> Result<(), String> {
    feed.write_all(buf)
        .map_err(|e| format!("writing to lqd's feed socket: {e}"))?;
    buf.clear();
    Ok(())
}

/// The client loadgen adds after the churn: once lqd answers for it, it has applied every
/// line written before it.
fn sentinel() -> (Change, Sample) {
    let link = DemoSource::link_address(1);
    let address = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0xffff, 0xfffe, 0xfffe, 0xfffe);
    let duid: Box<[u8]> = vec![0, 4, 0x6c, 0x71, 0x64, 0x73, 0x63, 0x61, 0x6c, 0x65].into();
    let now = system_time();
    let change = Change {
        client_id: duid.clone(),
        link,
        lease: Lease {
            kind: LeaseKind::Address,
            address,
            prefix_len: 128,
            iaid: 1,
            preferred_lifetime: 3600,
            valid_lifetime: 7200,
            cltt: now,
            state: LeaseState::Active,
        },
        relay: None,
    };
    (change, Sample { duid, address })
}

/// `--feed jsonl`: lqd with a JSON-lines source; loadgen writes the demo's population, waits
/// until lqd holds it, writes the churn at `--churn` a second, then the [`sentinel`] and
/// waits for it. The time lqd took to hold the population, lqd, its feed, and when it was
/// spawned.
fn load_jsonl(args: &Args, known: &Known) -> Result<(Duration, Lqd, UnixStream, Instant), String> {
    let extra = format!(
        "journal_size = {}\n{}",
        args.journal_size,
        link_tables(&known.settings)
    );
    let (mut lqd, mut feed) = Lqd::start_jsonl(&args.common.lqd, args.common.keep_state, &extra)?;
    let spawned = Instant::now();
    let mut source = DemoSource::new(known.settings.demo_config());
    let mut buf = Vec::with_capacity(1 << 20);
    let now = system_time();
    while !source.initial_done() {
        change_line(&source.next_change(now), &mut buf)?;
        if buf.len() >= 1 << 20 {
            send(&mut feed, &mut buf)?;
        }
    }
    send(&mut feed, &mut buf)?;
    let limit = Duration::from_secs(120) + Duration::from_micros(known.leases * 200);
    let load = wait_answer(&mut lqd, &known.last, spawned, limit)?;
    eprintln!(
        "loadgen: lqd holds the initial population after {:.1} s",
        load.as_secs_f64()
    );
    let rate = f64::from(args.common.churn.max(1));
    let churning = Instant::now();
    let mut sent = 0u64;
    while sent < args.churn_changes {
        let due = ((churning.elapsed().as_secs_f64() * rate) as u64).min(args.churn_changes);
        while sent < due {
            change_line(&source.next_change(system_time()), &mut buf)?;
            sent += 1;
        }
        send(&mut feed, &mut buf)?;
        lqd.check_alive()?;
        std::thread::sleep(Duration::from_millis(5));
    }
    let (change, sample) = sentinel();
    change_line(&change, &mut buf)?;
    send(&mut feed, &mut buf)?;
    wait_answer(&mut lqd, &sample, churning, Duration::from_secs(600))?;
    Ok((load, lqd, feed, spawned))
}

/// Starts lqd again on `dir` with a source that sends nothing; times it to its first right
/// answer and checks the samples. The running lqd is handed back.
fn restart(
    args: &Args,
    dir: &Path,
    known: &Known,
    failures: &mut Vec<String>,
) -> Result<(Restart, Lqd), String> {
    // The demo's links, as the first lqd had them: a snapshot is used only under the links it
    // was made with (D16, D43).
    let links = link_tables(&known.settings);
    let spawned = Instant::now();
    let mut again = Lqd::spawn_in(&args.common.lqd, dir, args.common.keep_state, |_, dir| {
        format!(
            "source = \"jsonl:unix:{}\"\njournal_size = {}\n{links}",
            dir.join("feed.sock").display(),
            args.journal_size
        )
    })?;
    let serving = wait_answer(&mut again, &known.last, spawned, Duration::from_secs(1800))?;
    let serving_cpu = again.stats()?.cpu_secs;
    let sock = udp_to(again.addr)?;
    let mut buf = vec![0u8; 65_536];
    let mut right = 0usize;
    for s in &known.samples {
        let mut answered = None;
        for _ in 0..3 {
            answered = who_leases(&sock, s.address, &mut buf);
            if answered.is_some() {
                break;
            }
        }
        if answered.as_deref() == Some(&s.duid[..]) {
            right += 1;
        }
    }
    let mem = proc_memory(again.pid())?;
    let log = again.log();
    // The churn replaces at most a few sampled clients; more missing is a loss.
    let tolerated = (known.samples.len() as f64 * args.churn_changes as f64 / args.bindings as f64)
        .ceil() as usize
        + 1;
    if known.samples.len() - right > tolerated {
        failures.push(format!(
            "after the restart, {} of {} sampled bindings were not answered with their client",
            known.samples.len() - right,
            known.samples.len()
        ));
    }
    let restart = Restart {
        snapshot_write_seconds: None,
        snapshot_octets: None,
        from_snapshot: log.contains("snapshot loaded"),
        replayed: logged(&log, "replayed"),
        opened_seconds: logged_f64(&log, "journal opened", "seconds"),
        serving_seconds: serving.as_secs_f64(),
        serving_cpu_seconds: serving_cpu,
        records: logged(&log, "records"),
        bindings: logged(&log, "bindings"),
        samples: known.samples.len(),
        samples_right: right,
        rss_kib: mem.rss_kib,
        hwm_kib: mem.hwm_kib,
        full: None,
    };
    Ok((restart, again))
}

/// A number from the last log line containing `line`, after `key=`.
fn logged_f64(log: &str, line: &str, key: &str) -> Option<f64> {
    let line = log.lines().rev().find(|l| l.contains(line))?;
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    let text: String = line
        .get(at..)?
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    text.parse().ok()
}

/// `--feed demo`: lqd with its demo source, which sends the population then the churn. The
/// time lqd took to hold the population, lqd, and when it was spawned.
fn load_demo(args: &Args, known: &Known) -> Result<(Duration, Lqd, Instant), String> {
    let settings = &known.settings;
    let body = format!(
        "source = \"demo\"\njournal_size = {}\n[demo]\nclients = {}\nlinks = {}\nchanges_per_sec = {}\nseed = {}\nchurn_limit = {}\npd_percent = {}\nrelayed_percent = 100\ntwo_hop_percent = {}\n",
        args.journal_size,
        settings.clients,
        settings.links,
        settings.changes_per_sec,
        settings.seed,
        args.churn_changes,
        settings.pd_percent,
        settings.two_hop_percent,
    );
    let spawned = Instant::now();
    let mut lqd = Lqd::spawn_body(&args.common.lqd, args.common.keep_state, |_, _| body)?;
    let limit = Duration::from_secs(120) + Duration::from_micros(known.leases * 100);
    let load = wait_answer(&mut lqd, &known.last, spawned, limit)?;
    eprintln!(
        "loadgen: lqd holds the initial population after {:.1} s",
        load.as_secs_f64()
    );
    let churn_done = if args.churn_changes == 0 {
        "demo: initial population sent"
    } else {
        "demo: churn limit reached"
    };
    let churn_limit =
        Duration::from_secs(args.churn_changes / u64::from(args.common.churn.max(1)) + 120);
    while !lqd.log().contains(churn_done) {
        lqd.check_alive()?;
        if spawned.elapsed() > limit + churn_limit {
            return Err(format!(
                "the demo's churn did not end; log:\n{}",
                lqd.log_tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((load, lqd, spawned))
}

/// Runs `loadgen scale`.
pub(crate) fn run(args: &Args) -> Result<Outcome, String> {
    let settings = DemoSettings {
        clients: args.bindings,
        links: args.links,
        changes_per_sec: args.common.churn,
        seed: args.common.seed,
        churn_limit: Some(args.churn_changes),
        pd_percent: args.pd_percent,
        relayed_percent: 100,
        two_hop_percent: args.two_hop_percent,
    };
    let t = Instant::now();
    let known = regenerate(&settings, args.samples)?;
    eprintln!(
        "loadgen: population regenerated: {} clients, {} leases, in {:.1} s",
        args.bindings,
        known.leases,
        t.elapsed().as_secs_f64()
    );
    let (load, lqd, feed, spawned) = match args.feed {
        Feed::Jsonl => {
            let (load, lqd, feed, spawned) = load_jsonl(args, &known)?;
            (load, lqd, Some(feed), spawned)
        }
        Feed::Demo => {
            let (load, lqd, spawned) = load_demo(args, &known)?;
            (load, lqd, None, spawned)
        }
    };
    // The last change is applied within a loop turn of being sent.
    std::thread::sleep(Duration::from_millis(500));
    let settled = spawned.elapsed();
    let mem = proc_memory(lqd.pid())?;
    let settled_cpu = lqd.stats()?.cpu_secs;
    eprintln!(
        "loadgen: settled after {:.1} s: RSS {:.1} MiB (anonymous {:.1}, file {:.1})",
        settled.as_secs_f64(),
        mib(mem.rss_kib),
        mib(mem.anon_kib),
        mib(mem.file_kib)
    );
    let dir = lqd.state_dir().to_path_buf();
    let journal = dir.join("lqd-journal");
    let log_path = lqd.log_path();
    // The clean stop writes the snapshot: minutes at most, even at ten million bindings.
    lqd.terminate(Duration::from_secs(1200))?;
    drop(feed);
    let stop_log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let (records, used, ring) = journal_check(&args.common.lqd, &journal)?;
    let mut failures = Vec::new();
    let restart = if args.no_restart {
        None
    } else {
        let (mut first, again) = restart(args, &dir, &known, &mut failures)?;
        first.snapshot_write_seconds = logged_f64(&stop_log, "snapshot written", "seconds");
        first.snapshot_octets =
            logged_f64(&stop_log, "snapshot written", "octets").map(|v| v as u64);
        if args.full_replay {
            again.kill9()?;
            let _ = std::fs::remove_file(dir.join("lqd-journal.snapshot"));
            let (full, again) = restart(args, &dir, &known, &mut failures)?;
            drop(again);
            first.full = Some(Box::new(full));
        } else {
            drop(again);
        }
        Some(first)
    };
    if !args.common.keep_state {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let report = Report {
        feed: args.feed,
        bindings: args.bindings,
        leases: known.leases,
        links: args.links,
        pd_percent: args.pd_percent,
        two_hop_percent: args.two_hop_percent,
        churn_changes: args.churn_changes,
        churn_per_sec: args.common.churn,
        load_seconds: load.as_secs_f64(),
        settled_seconds: settled.as_secs_f64(),
        settled_cpu_seconds: settled_cpu,
        rss_kib: mem.rss_kib,
        rss_anon_kib: mem.anon_kib,
        rss_file_kib: mem.file_kib,
        hwm_kib: mem.hwm_kib,
        rss_octets_per_binding: mem.rss_kib as f64 * 1024.0 / args.bindings as f64,
        anon_octets_per_binding: mem.anon_kib as f64 * 1024.0 / args.bindings as f64,
        journal_records: records,
        journal_used: used,
        journal_ring: ring,
        journal_octets_per_record: used as f64 / records.max(1) as f64,
        restart,
        load_average: load_average(),
        failures: failures.clone(),
    };
    let mut md = match args.feed {
        Feed::Jsonl => "Fed through lqd's JSON-lines source by loadgen.\n\n".to_owned(),
        Feed::Demo => {
            "Fed by lqd's own demo source (its generator's state is in lqd's RSS).\n\n".to_owned()
        }
    };
    md.push_str("| bindings | leases | load s (lqd CPU s, to the churn's end) | RSS MiB (anon + file) | peak MiB | RSS octets/binding (anon) | journal records | octets/record | restart: serving after s (lqd CPU s) | restored records, bindings | samples right | RSS after restart MiB | load average |\n");
    md.push_str("|---:|---:|---|---|---:|---|---:|---:|---|---|---:|---:|---|\n");
    let r = &report;
    let (serving, restored, samples, rss2) = match &r.restart {
        Some(x) => (
            format!(
                "{:.1} ({:.1}){}",
                x.serving_seconds,
                x.serving_cpu_seconds,
                restart_note(x)
            ),
            format!(
                "{}, {}",
                x.records.map_or("?".into(), |v| v.to_string()),
                x.bindings.map_or("?".into(), |v| v.to_string())
            ),
            format!("{}/{}", x.samples_right, x.samples),
            format!("{:.0}", mib(x.rss_kib)),
        ),
        None => ("-".into(), "-".into(), "-".into(), "-".into()),
    };
    md.push_str(&format!(
        "| {} | {} | {:.1} ({:.1}) | {:.0} ({:.0} + {:.0}) | {:.0} | {:.0} ({:.0}) | {} | {:.1} | {serving} | {restored} | {samples} | {rss2} | {} |\n",
        r.bindings,
        r.leases,
        r.load_seconds,
        r.settled_cpu_seconds,
        mib(r.rss_kib),
        mib(r.rss_anon_kib),
        mib(r.rss_file_kib),
        mib(r.hwm_kib),
        r.rss_octets_per_binding,
        r.anon_octets_per_binding,
        r.journal_records,
        r.journal_octets_per_record,
        r.load_average,
    ));
    if let Some(full) = r.restart.as_ref().and_then(|x| x.full.as_ref()) {
        md.push_str(&format!(
            "\nAfter `kill -9`, without the snapshot: serving after {:.1} s (lqd CPU {:.1} s){}, {} records replayed, {}/{} samples right.\n",
            full.serving_seconds,
            full.serving_cpu_seconds,
            restart_note(full),
            full.replayed.map_or("?".into(), |v| v.to_string()),
            full.samples_right,
            full.samples,
        ));
    }
    let json = serde_json::to_value(&report).map_err(|e| e.to_string())?;
    Ok(Outcome {
        markdown: md,
        json,
        failures,
    })
}
