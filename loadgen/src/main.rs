//! `loadgen`: drives a real lqd process with leasequery traffic and reports how it copes.
//!
//! Each mode starts its own lqd (the binary given by `--lqd`) with the demo source holding a
//! known population on one link, waits until lqd holds all of it, runs its load, and prints a
//! markdown table (and, with `--json FILE`, the same figures as JSON). Every answer is parsed
//! in full with lqd's own codec and checked against the population, which loadgen regenerates
//! from the demo's seed (see `population`); a lost or wrong answer makes loadgen exit non-zero.
//!
//! The Active Leasequery modes (`active`, `catch-up`, `ramp`; module `fanout`) feed lqd
//! through its JSON-lines UNIX socket instead, and measure it side by side with two baselines
//! in the same run: loadgen's own minimal epoll sender (`raw`) and Redis pub/sub (`redis`).
//!
//! ```text
//! cargo build --release -p lqd -p loadgen
//! target/release/loadgen bulk --bindings 1000000 --concurrent 1,4 --rounds 3
//! target/release/loadgen udp --bindings 100000 --clients 4 --window 1,16 --seconds 10
//! target/release/loadgen active --requestors 100,1000 --rate 1000,5000 --seconds 10 --systems lqd,raw,redis
//! target/release/loadgen catch-up --requestors 1000 --changes 10000
//! target/release/loadgen ramp --requestors 1000 --start-rate 1000 --p99-ms 50
//! target/release/loadgen active --requestors 100,1000 --rate 1000 --filter relay-id --systems lqd,raw,redis
//! target/release/loadgen hostile
//! target/release/loadgen scale --bindings 1000000 --links 3000 --pd-percent 50
//! target/release/loadgen catch-up --carrier --bindings 10000000 --requestors 1000 --away-seconds 600
//! target/release/loadgen pgsql --requestors 1000 --rate 500,2000 --seconds 10 --rounds 3
//! ```
//!
//! `pgsql` feeds lqd through Kea's PostgreSQL lease database instead (`--source kea-pgsql`):
//! loadgen writes lease6 rows into a temporary cluster it starts, and measures one lqd against
//! two on the same database, and what each costs the database (module `pgsql`).
//!
//! `hostile` runs hostile requestors (floods, slowloris, garbage, …) against lqd, each measured
//! against a quiet phase just before it, and reads lqd's log to see each attacking connection
//! refused or closed, with the reason.
//!
//! One module per mode (`bulk`, `udp`, `fanout`); the lqd process, the population model and
//! the report helpers are shared.

mod bulk;
mod fanout;
mod hostile;
mod nats;
mod pgsql;
mod plot;
mod population;
mod process;
mod redis;
mod report;
mod scale;
mod scrape;
mod summary;
mod tls;
mod udp;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Drives a real lqd process with leasequery traffic.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Bulk Leasequery (RFC 5460): whole-link QUERY_BY_LINK_ADDRESS answers over TCP.
    Bulk(bulk::Args),
    /// UDP Leasequery (RFC 5007): QUERY_BY_ADDRESS for random known addresses.
    Udp(udp::Args),
    /// Active Leasequery (RFC 7653) fan-out: N requestors, changes at a fixed rate, against
    /// lqd and the raw and Redis baselines.
    Active(fanout::active::Args),
    /// Active Leasequery catch-up: N requestors reconnecting with START_TIME after K changes.
    CatchUp(fanout::catchup::Args),
    /// Active Leasequery ramp: the highest rate with p99 under a bound at a given N.
    Ramp(fanout::ramp::Args),
    /// Carrier scale: memory per binding, journal octets per record and the restart time of
    /// one lqd holding a large relayed population (`--bindings 10000000`).
    Scale(scale::Args),
    /// Hostile requestors, one attack after another, each against a quiet phase before it:
    /// the well-behaved requestors' latency, losses and Bulk answers, lqd's memory, and what
    /// lqd did with every attacking connection (from its log).
    Hostile(hostile::Args),
    /// Active Leasequery fan-out from Kea's PostgreSQL lease database: lease6 rows written at
    /// a fixed rate into a temporary cluster, followed by one lqd (every requestor) or two (a
    /// replication slot each, the requestors split), alternating in rounds; the database's
    /// CPU with 0, 1 and 2 followers.
    Pgsql(pgsql::Args),
    /// The raw baseline's sender process, run by loadgen itself.
    #[command(hide = true)]
    RawSender(fanout::raw::Args),
}

/// What every mode needs to run lqd and report.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Common {
    /// The lqd binary to run.
    #[arg(long, default_value = "target/release/lqd")]
    pub(crate) lqd: PathBuf,
    /// Demo churn after the initial population, changes per second (`[demo] changes_per_sec`;
    /// at least 1, since 0 means "as fast as lqd takes them").
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) churn: u32,
    /// The demo's seed (`[demo] seed`).
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Keep lqd's state directory (its config and log) instead of removing it.
    #[arg(long)]
    pub(crate) keep_state: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<PathBuf>,
}

/// What a mode produced: the table, the JSON document, and the checks that failed.
pub(crate) struct Outcome {
    pub(crate) markdown: String,
    pub(crate) json: serde_json::Value,
    pub(crate) failures: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (result, json_path) = match cli.mode {
        Mode::Bulk(args) => {
            let path = args.common.json.clone();
            (bulk::run(&args), path)
        }
        Mode::Udp(args) => {
            let path = args.common.json.clone();
            (udp::run(&args), path)
        }
        Mode::Active(args) => {
            let path = args.common.json.clone();
            (fanout::active::run(&args), path)
        }
        Mode::CatchUp(args) => {
            let path = args.common.json.clone();
            (fanout::catchup::run(&args), path)
        }
        Mode::Ramp(args) => {
            let path = args.common.json.clone();
            (fanout::ramp::run(&args), path)
        }
        Mode::Scale(args) => {
            let path = args.common.json.clone();
            (scale::run(&args), path)
        }
        Mode::Hostile(args) => {
            let path = args.json.clone();
            (hostile::run(&args), path)
        }
        Mode::Pgsql(args) => {
            let path = args.json.clone();
            (pgsql::run(&args), path)
        }
        Mode::RawSender(args) => return fanout::raw::serve(&args),
    };
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            eprintln!("loadgen: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", outcome.markdown);
    if let Some(path) = json_path {
        let text = match serde_json::to_string_pretty(&outcome.json) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("loadgen: error: JSON: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = std::fs::write(&path, text + "\n") {
            eprintln!("loadgen: error: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if outcome.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        for f in &outcome.failures {
            eprintln!("loadgen: FAILED: {f}");
        }
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// clap checks a command's definition only in debug builds, when it is parsed: two
    /// flattened argument structs of one name broke `catch-up` there, and only there.
    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
