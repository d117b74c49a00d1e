//! `loadgen hostile`: hostile requestors against a real lqd, each attack measured against a
//! quiet phase just before it (issue 13, point 5).
//!
//! loadgen starts its own lqd on loopback (`[::1]` and `127.0.0.1`, one port; lqd admits only
//! loopback by default), fed through its JSON-lines UNIX socket, and creates `--bindings`
//! bindings on one link through that feed (a sentinel requestor confirms they are journaled).
//! Then, for each attack in turn:
//!
//! 1. a quiet phase: the well-behaved requestors alone (see [`phase`]): Active requestors
//!    receiving `--rate` changes a second, latency measured from each change's intended
//!    injection time, and a Bulk requestor asking for the whole link every second;
//! 2. the attack phase: the same, with the attack running (see [`attack`]);
//! 3. the wait: the attack stops opening connections and sending queries, and loadgen waits
//!    (`--close-wait`) until lqd's log has ended every attacking connection, refused or
//!    closed, or the wait runs out; what is still open then is closed by loadgen; changes go
//!    on at the same rate meanwhile, unmeasured;
//! 4. the verdict (see [`fates`]): each attacking connection matched, by its address and
//!    port, to the log line that ended it, with lqd's reason and the time it took;
//! 5. a quiet phase again, which is also the next attack's quiet phase before it. On a shared
//!    machine a p99 moves with other work; the quiet phase after each attack shows how much.
//!
//! Each attack connects from addresses of its own (`127.N.0.0/16`), the Active requestors from
//! `127.0.0.1` and the Bulk requestor from `127.0.0.2`, so lqd's per-requestor limit (10 by
//! default) applies to each apart. The RFC timeouts are shortened for the run
//! (`--bulk-data-timeout`, `--active-send-timeout`, 5 s each by default, against 300 s and
//! 120 s) so that lqd's closing of idle and blocked connections shows within the wait; the
//! report says so.

mod attack;
mod fates;
mod lqdlog;
mod phase;
mod report;
mod tracker;

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub(crate) use attack::AttackKind;
use attack::Settings;
use lqdlog::{LogReader, Said};
use phase::{Good, Phase};
use serde::Serialize;

use crate::Outcome;
use crate::fanout::changes::{LINK, LINK_PREFIX, Model};
use crate::fanout::progress::Progress;
use crate::fanout::run::Server;
use crate::fanout::sentinel::feed_journaled;
use crate::process::{Lqd, proc_stats};
use crate::redis::raise_nofile;

/// Options of `loadgen hostile`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// The lqd binary to run.
    #[arg(long, default_value = "target/release/lqd")]
    pub(crate) lqd: PathBuf,
    /// The attacks to run, in order: flood-one, flood-many, slowloris, long-frame, garbage,
    /// starttls, pipelined, stalled-active, xid-reuse (default: all).
    #[arg(long, value_delimiter = ',')]
    pub(crate) attacks: Vec<AttackKind>,
    /// Length of each phase (quiet, attack), seconds.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) seconds: f64,
    /// Bindings lqd holds, all on one link, created through its feed before the first phase.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) bindings: u32,
    /// Changes a second in every phase, each renewing one of the bindings.
    #[arg(long, default_value_t = 500.0)]
    pub(crate) rate: f64,
    /// Well-behaved Active requestors (unfiltered, from 127.0.0.1); fewer than
    /// --max-connections-per-requestor.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) requestors: u32,
    /// The well-behaved Bulk requestor asks for the whole link this often, seconds.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) bulk_every: f64,
    /// lqd's bulk_data_timeout (BULK_LQ_DATA_TIMEOUT, 300 s by default), seconds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) bulk_data_timeout: u64,
    /// lqd's active_send_timeout (ACTIVE_LQ_SEND_TIMEOUT, 120 s by default), seconds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) active_send_timeout: u64,
    /// lqd's max_connections.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) max_connections: usize,
    /// lqd's max_connections_per_requestor (BULK_LQ_MAX_CONNS).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_connections_per_requestor: u64,
    /// After an attack phase, how long to wait for lqd to end every attacking connection,
    /// seconds (default: the longer of the two timeouts, plus 15).
    #[arg(long)]
    pub(crate) close_wait: Option<f64>,
    /// Connection attempts a second of the floods.
    #[arg(long, default_value_t = 1000.0)]
    pub(crate) flood_rate: f64,
    /// Connections the one-address flood keeps open or opening at once.
    #[arg(long, default_value_t = 1000)]
    pub(crate) flood_one_open: usize,
    /// IPv4 addresses of the many-address flood (127.12.0.1 on; ::1 as well).
    #[arg(long, default_value_t = 100)]
    pub(crate) flood_addresses: u32,
    /// Connections each address of the many-address flood keeps open or opening at once.
    #[arg(long, default_value_t = 20)]
    pub(crate) flood_per_address: usize,
    /// Addresses holding slowloris and long-frame connections, the per-requestor limit each.
    #[arg(long, default_value_t = 10)]
    pub(crate) hold_addresses: u32,
    /// Seconds between a slowloris' octets.
    #[arg(long, default_value_t = 2.0)]
    pub(crate) slowloris_interval: f64,
    /// Connections a second of the garbage and STARTTLS attacks.
    #[arg(long, default_value_t = 200.0)]
    pub(crate) attack_rate: f64,
    /// Queries of the pipelined attack, on one connection.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..16_777_215))]
    pub(crate) pipelined: u32,
    /// Reuses of a running query's xid per round of the xid-reuse attack.
    #[arg(long, default_value_t = 1000)]
    pub(crate) duplicates: u32,
    /// The seed of the garbage and of the pipelined queries.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Receiver threads of the Active requestors.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) workers: u32,
    /// Keep lqd's state directory (config, log, journal) instead of removing it.
    #[arg(long)]
    pub(crate) keep_state: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<PathBuf>,
}

impl Args {
    fn check(&self) -> Result<(), String> {
        let positive = [
            ("--seconds", self.seconds),
            ("--rate", self.rate),
            ("--bulk-every", self.bulk_every),
            ("--flood-rate", self.flood_rate),
            ("--slowloris-interval", self.slowloris_interval),
            ("--attack-rate", self.attack_rate),
        ];
        if let Some((name, v)) = positive.iter().find(|(_, v)| !(v.is_finite() && *v > 0.0)) {
            return Err(format!("{name}: {v} is not a positive number"));
        }
        if u64::from(self.requestors) >= self.max_connections_per_requestor {
            return Err(format!(
                "--requestors {} must stay below --max-connections-per-requestor {}: they all \
                 connect from 127.0.0.1",
                self.requestors, self.max_connections_per_requestor
            ));
        }
        if self
            .close_wait
            .is_some_and(|w| !(w.is_finite() && w >= 0.0))
        {
            return Err("--close-wait must be 0 or more".to_owned());
        }
        Ok(())
    }

    /// The attacks asked for, all by default.
    fn attacks(&self) -> Vec<AttackKind> {
        if self.attacks.is_empty() {
            AttackKind::ALL.to_vec()
        } else {
            self.attacks.clone()
        }
    }

    /// How long to wait for lqd to end the attacking connections.
    fn close_wait(&self) -> Duration {
        self.close_wait.map_or_else(
            || Duration::from_secs(self.bulk_data_timeout.max(self.active_send_timeout) + 15),
            Duration::from_secs_f64,
        )
    }

    /// Descriptors loadgen may hold at once: the biggest attack's, the requestors', a margin.
    fn descriptors(&self) -> u64 {
        let per = self.max_connections_per_requestor;
        let flood = (self.flood_one_open as u64)
            .max((u64::from(self.flood_addresses) + 1) * self.flood_per_address as u64);
        // A slowloris connection holds two descriptors (one reads, one writes).
        let hold = 2 * u64::from(self.hold_addresses) * per;
        flood.max(hold) + 1024
    }
}

/// One attack's results.
#[derive(Debug, Clone, Serialize)]
struct AttackResult {
    attack: &'static str,
    /// The quiet phase before the attack.
    quiet: Phase,
    /// The quiet phase after it (once its connections were gone): how far the quiet p99
    /// moves by itself.
    quiet_after: Phase,
    attacked: Phase,
    /// What became of the attacking connections.
    fates: fates::Fates,
    /// From the end of the attack phase until lqd had ended every attacking connection, or
    /// the wait ran out, seconds.
    waited_seconds: f64,
    /// The wait ran out with connections lqd had not ended.
    wait_ran_out: bool,
    /// lqd's RSS once the attacking connections were gone, KiB.
    rss_after_kib: u64,
    /// The most octets seen in the kernel's queues of lqd's connections, from the attack
    /// phase's end to the end of the wait.
    kernel_queued_max: u64,
    /// Octets lqd logged from the attack phase's start to the end of the wait.
    log_bytes: u64,
    /// Queries dropped for their running xid, as lqd logged them (D21).
    xid_dropped_logged: u64,
    /// STARTTLS refusals lqd logged (D25).
    starttls_refused_logged: u64,
    /// What the attack found besides.
    extra: attack::Extra,
    /// What went wrong in the attack itself.
    errors: Vec<String>,
}

/// Runs `loadgen hostile`.
pub(crate) fn run(args: &Args) -> Result<Outcome, String> {
    args.check()?;
    let fds = args.descriptors();
    let got = raise_nofile(fds)?;
    if got < fds {
        return Err(format!(
            "the attacks need {fds} open files, and RLIMIT_NOFILE stays at {got}"
        ));
    }
    let progress = Progress::new();
    let model = Model::new(args.bindings)?;
    let extra = format!(
        "max_connections = {}\nmax_connections_per_requestor = {}\nbulk_data_timeout = {}\n\
         active_send_timeout = {}\n\n[[link]]\naddress = \"{LINK}\"\nprefixes = [\"{LINK_PREFIX}\"]\n",
        args.max_connections,
        args.max_connections_per_requestor,
        args.bulk_data_timeout,
        args.active_send_timeout,
    );
    let (lqd, feed) = Lqd::start_jsonl_on(&args.lqd, args.keep_state, true, &extra)?;
    let settings = Settings {
        target_v6: lqd.addr,
        target_v4: lqd.addr_v4.ok_or("lqd listens on no IPv4 address")?,
        per_requestor: args.max_connections_per_requestor as usize,
        flood_rate: args.flood_rate,
        flood_one_open: args.flood_one_open,
        flood_addresses: args.flood_addresses,
        flood_per_address: args.flood_per_address,
        hold_addresses: args.hold_addresses,
        slowloris_interval: Duration::from_secs_f64(args.slowloris_interval),
        attack_rate: args.attack_rate,
        pipelined: args.pipelined,
        duplicates: args.duplicates,
        model,
        seed: args.seed,
    };
    let log_path = lqd.log_path();
    let mut server = Server::Lqd(lqd, Some(feed));
    let m = u64::from(model.bindings());
    let preload = feed_journaled(&progress, &mut server, model, m, None, "preloading")?;
    progress.println(&format!(
        "loadgen: lqd holds {m} bindings, created through its feed in {:.2} s",
        preload.as_secs_f64()
    ));
    let mut good = Good {
        server: &mut server,
        progress: &progress,
        model,
        generations: 1,
        addr_v4: settings.target_v4,
        settings: &settings,
        requestors: args.requestors as usize,
        rate: args.rate,
        seconds: args.seconds,
        bulk_every: Duration::from_secs_f64(args.bulk_every),
        workers: args.workers as usize,
        xid: 0x00_10_00_00,
    };
    let mut results = Vec::new();
    let mut failures = Vec::new();
    let (mut quiet, ()) = good.phase("quiet", || Ok(()))?;
    for kind in args.attacks() {
        let bulk_timeout = Duration::from_secs(args.bulk_data_timeout);
        match one_attack(
            kind,
            &mut good,
            &settings,
            &log_path,
            args.close_wait(),
            bulk_timeout,
            quiet.clone(),
        ) {
            Ok(r) => {
                quiet = r.quiet_after.clone();
                failures.extend(report::failures(&r));
                results.push(r);
            }
            Err(e) => {
                let f = format!("{}: {e}", kind.name());
                progress.println(&format!("loadgen: error: {f}"));
                failures.push(f);
                good.server.check_alive()?;
            }
        }
    }
    progress.clear();
    report::outcome(args, preload, &results, failures)
}

/// Runs one attack after its quiet phase (`quiet`): its attack phase, the wait for lqd to end
/// the attacking connections, the reading of lqd's log, and the quiet phase after it.
fn one_attack(
    kind: AttackKind,
    good: &mut Good<'_>,
    settings: &Settings,
    log_path: &std::path::Path,
    close_wait: Duration,
    bulk_data_timeout: Duration,
    quiet: Phase,
) -> Result<AttackResult, String> {
    let name = kind.name();
    let mut log = LogReader::from_end(log_path.to_path_buf());
    let log_start = log.offset();
    let (attacked, running) =
        good.phase(&format!("{name}: attack"), || attack::start(kind, settings))?;
    running.stop_attacking();
    let stopped = Instant::now();
    let port = settings.target_v4.port();
    let mut kernel_queued_max = attacked.kernel_queued;
    let churn = good.churn(close_wait + bulk_data_timeout + Duration::from_secs(5))?;
    let mut lines = Vec::new();
    let waiting = (|| loop {
        lines.extend(log.read_new()?);
        kernel_queued_max = kernel_queued_max.max(phase::kernel_queued(port));
        let conns = running.conns();
        let ended = fates::ended_by_lqd(&conns, &lines);
        if ended.len() == conns.len() {
            return Ok(false);
        }
        if stopped.elapsed() >= close_wait {
            return Ok(true);
        }
        good.server.check_alive()?;
        std::thread::sleep(Duration::from_millis(100));
    })();
    let wait_ran_out = match waiting {
        Ok(w) => w,
        Err(e) => {
            churn.stop();
            return Err(e);
        }
    };
    let waited = stopped.elapsed();
    lines.extend(log.read_new()?);
    let ended = fates::ended_by_lqd(&running.conns(), &lines);
    let finished = running.finish(|i| ended.contains(&i))?;
    // lqd logs the connections loadgen closed as it notices them: at once, or, for one closed
    // in the middle of a frame, only when BULK_LQ_DATA_TIMEOUT finds it idle.
    let closed = Instant::now();
    let mut lines_ok = Ok(());
    while closed.elapsed() < bulk_data_timeout + Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(100));
        match log.read_new() {
            Ok(l) => lines.extend(l),
            Err(e) => {
                lines_ok = Err(e);
                break;
            }
        }
        let all: Vec<_> = finished.conns.iter().map(|c| (c.local, c.opened)).collect();
        if lqdlog::ends(&fates::peers(&all), &lines)
            .iter()
            .all(Option::is_some)
        {
            break;
        }
    }
    churn.stop();
    lines_ok?;
    let log_bytes = log.offset() - log_start;
    good.server.check_alive()?;
    let pid = good.server.pid().ok_or("lqd has no process id")?;
    let rss_after_kib = proc_stats(pid)?.rss_kib;
    let (quiet_after, ()) = good.phase(&format!("{name}: quiet after"), || Ok(()))?;
    let conns = &finished.conns;
    let result = AttackResult {
        attack: name,
        quiet,
        quiet_after,
        attacked,
        fates: fates::fates(
            conns,
            &lines,
            finished.connect_failed,
            finished.connect_error.clone(),
        ),
        waited_seconds: waited.as_secs_f64(),
        wait_ran_out,
        rss_after_kib,
        kernel_queued_max,
        log_bytes,
        xid_dropped_logged: fates::said_of(conns, &lines, |s| *s == Said::XidDropped),
        starttls_refused_logged: fates::said_of(conns, &lines, |s| *s == Said::StartTlsRefused),
        extra: finished.extra,
        errors: finished.errors,
    };
    good.progress.println(&format!(
        "loadgen: {name}: {} connections: refused {:?}, closed {:?}, not closed {}, no log line \
         {}; waited {:.1} s after the phase{}",
        result.fates.connections,
        result.fates.refused,
        result.fates.closed,
        result.fates.not_closed,
        result.fates.no_log_line,
        result.waited_seconds,
        if wait_ran_out { " (ran out)" } else { "" },
    ));
    Ok(result)
}
