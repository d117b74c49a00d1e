//! `lq`'s command line: its clap definitions and the parsers of its argument values.
//!
//! They live in the library, not in `src/bin/lq.rs`, so that the man pages (`lq(1)`,
//! `lq-query(1)`, `lq-bulk(1)`, `lq-watch(1)`) and shell completions generated for the Debian
//! package come from the very definitions `lq` parses with (`Cli::command()`). What `lq` does
//! with them, and the documentation of its output and exit codes, is in the binary.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::codec::ServerTime;
use crate::requestor::{Error, Query, TlsClient, TlsOptions};

/// The exit codes, as `lq --help` lists them (the binary's documentation has the table).
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success: bindings printed; for watch, stopped by SIGINT/SIGTERM with the state saved
  1  the server answered, but no binding matched (query, bulk)
  2  usage error (also: a --ca, --cert or --key file that cannot be used)
  3  the server refused the query (NotAllowed, MalformedQuery, NotConfigured, ...)
  4  no answer: the server was unreachable, silent, or broke the connection or the protocol
  5  bulk: the answer was cut short (LEASEQUERY-DONE with an error status); what came was printed
  6  watch: the state file could not be read or written
  7  TLS: the server refused STARTTLS, or the handshake failed (certificate not accepted)";

/// The forms a time argument (`--start`, `--end`) takes.
pub const TIME_HELP: &str = "a time on the server's clock: Unix seconds (as printed in the JSON \
fields ending in _unix_s, such as base_time_unix_s; @UNIX-SECONDS works too), or \
YYYY-MM-DDTHH:MM:SSZ";

/// How every JSON output gives times, as `lq --help` says after the exit codes.
pub const JSON_TIMES: &str = "\
Times in JSON (--json, the --state file; lqd's /requestors alike):
  every point in time is whole Unix seconds (UTC) in a field ending in _unix_s, null for an
  infinite lifetime or a time not known; durations name their unit (retry_in_ms, skew_ms).
  base_time_unix_s, start_time_unix_s, start_unix_s and end_unix_s are on the server's clock
  (what --start and --end take); valid_until_unix_s, preferred_until_unix_s,
  last_transaction_unix_s and local_time_unix_s on the local clock.";

/// What `lq --help` and each subcommand's help end with: the exit codes, then the times.
fn after_help() -> String {
    format!("{EXIT_CODES}\n\n{JSON_TIMES}")
}

/// A DHCPv6 leasequery requestor: UDP, Bulk and Active Leasequery (RFC 5007, 5460, 7653).
#[derive(Debug, Parser)]
#[command(name = "lq", version, after_help = after_help())]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `lq`'s subcommands, one per kind of leasequery.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// One UDP Leasequery: the client holding an address, or a client's bindings.
    #[command(after_help = after_help())]
    Query(QueryArgs),
    /// One Bulk Leasequery over TCP: every binding matching a key.
    #[command(after_help = after_help())]
    Bulk(BulkArgs),
    /// Keep a replica of the server's bindings in sync over Active Leasequery, printing each
    /// change, until SIGINT or SIGTERM.
    #[command(after_help = after_help())]
    Watch(WatchArgs),
}

/// The arguments every subcommand takes.
#[derive(Debug, Args)]
pub struct Common {
    /// The server: ADDR:PORT (an address alone means port 547). `watch` takes it more than
    /// once: lqd instances following the same lease database, failed over in turn.
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_server, required = true)]
    pub server: Vec<SocketAddr>,
    /// Our DUID, in hex (default: a random DUID-UUID).
    #[arg(long, value_name = "HEX", value_parser = parse_hex)]
    pub duid: Option<Hex>,
    /// JSON Lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl Common {
    /// The (first) `--server`.
    #[must_use]
    pub fn server(&self) -> SocketAddr {
        self.server
            .first()
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([0u16; 8], 547)))
    }

    /// The `--server`s after the first: where a watch fails over to (D33).
    #[must_use]
    pub fn failover(&self) -> Vec<SocketAddr> {
        self.server.iter().skip(1).copied().collect()
    }
}

/// TLS for the TCP subcommands (STARTTLS, RFC 7653).
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// Protect the connection with TLS (STARTTLS, then TLS 1.2 or later); fail when the
    /// server refuses.
    #[arg(long)]
    pub tls: bool,
    /// Trust the CA certificates in FILE (PEM) instead of the system's trust store.
    #[arg(long, value_name = "FILE", requires = "tls")]
    pub ca: Option<PathBuf>,
    /// Present the certificate chain in FILE (PEM, leaf first) to a server asking for one
    /// (mutual TLS).
    #[arg(long, value_name = "FILE", requires_all = ["tls", "key"])]
    pub cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["tls", "cert"])]
    pub key: Option<PathBuf>,
    /// The name the server's certificate must hold: a DNS name or an IP address (default:
    /// the address of --server, as an IP address SAN).
    #[arg(long, value_name = "NAME", requires = "tls")]
    pub server_name: Option<String>,
}

impl TlsArgs {
    /// The TLS setup, `None` without `--tls`.
    pub fn client(&self) -> Result<Option<TlsClient>, Error> {
        if !self.tls {
            return Ok(None);
        }
        TlsClient::new(&TlsOptions {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            server_name: self.server_name.clone(),
        })
        .map(Some)
    }
}

/// The key of a UDP Leasequery (RFC 5007): exactly one.
#[derive(Debug, Args)]
#[group(id = "udp_key", required = true, multiple = false)]
pub struct UdpKey {
    /// QUERY_BY_ADDRESS: the client leasing this address (or a prefix holding it).
    #[arg(long, value_name = "A")]
    pub address: Option<Ipv6Addr>,
    /// QUERY_BY_CLIENTID: this client's bindings.
    #[arg(long, value_name = "HEX", value_parser = parse_hex)]
    pub client_id: Option<Hex>,
}

/// `lq query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The server, our DUID, the output form.
    #[command(flatten)]
    pub common: Common,
    /// What to ask about.
    #[command(flatten)]
    pub key: UdpKey,
    /// The query's link-address (default ::, every link).
    #[arg(long, value_name = "A")]
    pub link: Option<Ipv6Addr>,
    /// Send from this UDP port (default: an ephemeral one). Some servers, dhcpkit's among
    /// them, answer a direct query on the DHCPv6 client port 546 whatever its source port.
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    pub source_port: u16,
}

/// The key of a Bulk Leasequery (RFC 5460): exactly one.
#[derive(Debug, Args)]
#[group(id = "bulk_key", required = true, multiple = false)]
pub struct BulkKey {
    /// QUERY_BY_ADDRESS.
    #[arg(long, value_name = "A")]
    pub address: Option<Ipv6Addr>,
    /// QUERY_BY_CLIENTID.
    #[arg(long, value_name = "HEX", value_parser = parse_hex)]
    pub client_id: Option<Hex>,
    /// QUERY_BY_RELAY_ID: bindings tied to this relay agent's DUID.
    #[arg(long, value_name = "HEX", value_parser = parse_hex)]
    pub relay_id: Option<Hex>,
    /// QUERY_BY_LINK_ADDRESS: every binding on this link.
    #[arg(long, value_name = "A")]
    pub link_address: Option<Ipv6Addr>,
    /// QUERY_BY_REMOTE_ID: enterprise number and remote-id in hex.
    #[arg(long, value_name = "ENT:HEX", value_parser = parse_remote_id)]
    pub remote_id: Option<RemoteIdArg>,
}

/// `lq bulk`.
#[derive(Debug, Args)]
pub struct BulkArgs {
    /// The server, our DUID, the output form.
    #[command(flatten)]
    pub common: Common,
    /// STARTTLS and its certificates.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// What to ask about.
    #[command(flatten)]
    pub key: BulkKey,
    /// Narrow an address, client-id, relay-id or remote-id query to this link-address.
    #[arg(long, value_name = "A", conflicts_with = "link_address")]
    pub link: Option<Ipv6Addr>,
    /// Only bindings changed at or after T (OPTION_LQ_START_TIME).
    #[arg(long, value_name = "T", value_parser = parse_time, long_help = format!(
        "Only bindings changed at or after T (OPTION_LQ_START_TIME); T is {TIME_HELP}"))]
    pub start: Option<ServerTime>,
    /// Only bindings changed at or before T (OPTION_LQ_END_TIME).
    #[arg(long, value_name = "T", value_parser = parse_time, long_help = format!(
        "Only bindings changed at or before T (OPTION_LQ_END_TIME); T is {TIME_HELP}"))]
    pub end: Option<ServerTime>,
}

/// `--recovery`: how `lq watch` recovers from DataMissing.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RecoveryArg {
    /// Repeat the sync queries and replace the replica with their answers (exact).
    Resync,
    /// Bulk with START/END over the gap, applied as updates (misses removals in the gap).
    Window,
}

/// `lq watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The server, our DUID, the output form.
    #[command(flatten)]
    pub common: Common,
    /// STARTTLS and its certificates.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Keep the replica in FILE and resume from it.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Follow this link (repeatable): synced by Bulk QUERY_BY_LINK_ADDRESS, then followed by
    /// an Active query for it alone. Without any scope (--link, --relay-id, --remote-id,
    /// --filter), every change is followed, the first sync is the Active catch-up from the
    /// start of the server's history, and DataMissing cannot be recovered.
    #[arg(long, value_name = "A", conflicts_with = "filter")]
    pub link: Vec<Ipv6Addr>,
    /// Follow the clients behind this relay agent, by its DUID in hex (repeatable): synced by
    /// Bulk QUERY_BY_RELAY_ID, then followed by an Active query for it alone.
    #[arg(long, value_name = "HEX", value_parser = parse_hex, conflicts_with = "filter")]
    pub relay_id: Vec<Hex>,
    /// Follow the clients with this relay-inserted Remote-ID, enterprise number and remote-id
    /// in hex (repeatable): synced by Bulk QUERY_BY_REMOTE_ID, then followed by an Active
    /// query for it alone.
    #[arg(long, value_name = "ENT:HEX", value_parser = parse_remote_id, conflicts_with = "filter")]
    pub remote_id: Vec<RemoteIdArg>,
    /// Watch only matching bindings: address=A, client-id=HEX, relay-id=HEX,
    /// link-address=A or remote-id=ENT:HEX, optionally followed by @LINK.
    #[arg(long, value_name = "KIND=VALUE", value_parser = parse_filter)]
    pub filter: Option<Query>,
    /// Active queries sent on one connection; more scopes take more connections. Lower it
    /// to the server's limit of queries run at once per connection if it is below 4.
    #[arg(long, value_name = "N", default_value = "4",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub queries_per_connection: u16,
    /// How DataMissing is recovered.
    #[arg(long, value_enum, default_value = "resync")]
    pub recovery: RecoveryArg,
    /// ACTIVE_LQ_RCV_TIMEOUT: reconnect after this many seconds without a message.
    #[arg(long, value_name = "SECS", default_value = "120", value_parser = parse_secs)]
    pub rcv_timeout: Duration,
    /// Save the state at most this many seconds after a change.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse_secs)]
    pub save_interval: Duration,
}

/// `--server`: `ADDR:PORT`, or an address alone for port 547.
pub fn parse_server(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.trim_matches(['[', ']'])
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 547))
        .map_err(|_| format!("'{s}' is not ADDR:PORT (for example [2001:db8::1]:547)"))
}

/// Octets given in hex (clap would take a bare `Vec<u8>` for a list of numbers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hex(pub Vec<u8>);

/// Hex octets, plain or with `:` or `-` between them.
pub fn parse_hex(s: &str) -> Result<Hex, String> {
    hex_octets(s).map(Hex)
}

/// The octets of [`parse_hex`]'s forms; at least one.
pub fn hex_octets(s: &str) -> Result<Vec<u8>, String> {
    let digits: String = s.chars().filter(|c| !matches!(c, ':' | '-')).collect();
    match hex::decode(&digits) {
        Ok(b) if !b.is_empty() => Ok(b),
        _ => Err(format!(
            "'{s}' is not hex octets (like 00:03:00:01:02:00:00:00:00:01)"
        )),
    }
}

/// `ENT:HEX`: an enterprise number and a remote-id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteIdArg(pub u32, pub Vec<u8>);

/// `ENT:HEX`: an enterprise number, then the remote-id in hex.
pub fn parse_remote_id(s: &str) -> Result<RemoteIdArg, String> {
    let (ent, id) = s
        .split_once(':')
        .ok_or_else(|| format!("'{s}' is not ENT:HEX (enterprise number, then hex)"))?;
    let ent = ent
        .parse::<u32>()
        .map_err(|_| format!("'{ent}' is not an enterprise number"))?;
    Ok(RemoteIdArg(ent, hex_octets(id)?))
}

/// A positive number of seconds, fractions allowed.
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v < 1e9 => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!("'{s}' is not a positive number of seconds")),
    }
}

/// `--filter`: `KIND=VALUE`, optionally followed by `@LINK`.
pub fn parse_filter(s: &str) -> Result<Query, String> {
    let (kind, value) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not KIND=VALUE"))?;
    let (value, link) = match value.rsplit_once('@') {
        Some((v, l)) => (
            v,
            l.parse::<Ipv6Addr>()
                .map_err(|_| format!("'{l}' is not an IPv6 link-address"))?,
        ),
        None => (value, Ipv6Addr::UNSPECIFIED),
    };
    let addr = |v: &str| {
        v.parse::<Ipv6Addr>()
            .map_err(|_| format!("'{v}' is not an IPv6 address"))
    };
    Ok(match kind {
        "address" => Query::Address {
            address: addr(value)?,
            link,
        },
        "client-id" => Query::ClientId {
            duid: hex_octets(value)?,
            link,
        },
        "relay-id" => Query::RelayId {
            duid: hex_octets(value)?,
            link,
        },
        "link-address" => Query::LinkAddress(addr(value)?),
        "remote-id" => {
            let RemoteIdArg(enterprise_number, remote_id) = parse_remote_id(value)?;
            Query::RemoteId {
                enterprise_number,
                remote_id,
                link,
            }
        }
        other => {
            return Err(format!(
                "unknown filter '{other}': use address, client-id, relay-id, link-address or remote-id"
            ));
        }
    })
}

/// A time argument: the forms of [`TIME_HELP`]. A number is Unix seconds, as every JSON of
/// `lq` prints times; one before 2000 (which DHCPv6 cannot express) is refused, with the Unix
/// value it stands for when it was meant as a server time in seconds since 2000, the form `lq`
/// took before.
pub fn parse_time(s: &str) -> Result<ServerTime, String> {
    let unix = match s.strip_prefix('@').unwrap_or(s).parse::<u64>() {
        Ok(unix) => unix,
        Err(_) if s.starts_with('@') => return Err(format!("'{s}' is not @UNIX-SECONDS")),
        Err(_) => parse_rfc3339(s)
            .and_then(|unix| u64::try_from(unix).ok())
            .ok_or_else(|| format!("'{s}' is not a time: {TIME_HELP}"))?,
    };
    if unix < ServerTime::UNIX_OFFSET {
        return Err(format!(
            "'{s}' is before 2000-01-01, which DHCPv6 cannot express; times are Unix seconds \
             now (a server time in seconds since 2000 is {} in Unix seconds)",
            unix.saturating_add(ServerTime::UNIX_OFFSET)
        ));
    }
    u32::try_from(unix - ServerTime::UNIX_OFFSET)
        .map(ServerTime)
        .map_err(|_| format!("'{s}' is after 2136, which DHCPv6 cannot express"))
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `YYYY-MM-DDTHH:MM:SSZ` (or with a `±HH:MM` offset) to Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let (date, time) = s.split_once(['T', 't', ' '])?;
    let mut d = date.splitn(3, '-').map(str::parse::<i64>);
    let (y, mo, da) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (clock, offset) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let at = time.rfind(['+', '-'])?;
        let (c, off) = time.split_at(at);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off.get(1..)?.split_once(':')?;
        (
            c,
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60),
        )
    };
    let mut c = clock.splitn(3, ':');
    let (h, mi) = (
        c.next()?.parse::<i64>().ok()?,
        c.next()?.parse::<i64>().ok()?,
    );
    let sec = c.next()?.split('.').next()?.parse::<i64>().ok()?;
    let valid = (1..=12).contains(&mo)
        && (1..=31).contains(&da)
        && (0..24).contains(&h)
        && (0..60).contains(&mi)
        && (0..=60).contains(&sec);
    valid.then(|| days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse() {
        assert_eq!(parse_rfc3339("2025-01-01T00:00:00Z"), Some(1_735_689_600));
        assert_eq!(
            parse_rfc3339("2025-01-01T01:00:00+01:00"),
            Some(1_735_689_600)
        );
        // Unix seconds, as every JSON field ending in _unix_s prints them (issue 17).
        assert_eq!(parse_time("1735689600"), Ok(ServerTime(789_004_800)));
        assert_eq!(parse_time("@1735689600"), Ok(ServerTime(789_004_800)));
        // A DHCPv6 server time (seconds since 2000), as lq printed before: before 2000 in
        // Unix seconds, refused with the Unix value it stands for.
        let e = parse_time("789004800").unwrap_err();
        assert!(e.contains("1735689600"), "{e}");
        assert!(parse_time("@99").is_err());
        assert!(parse_time("9999999999").is_err(), "after 2136");
        assert_eq!(
            parse_time("2025-01-01T00:00:00Z"),
            Ok(ServerTime(789_004_800))
        );
        assert!(parse_time("yesterday").is_err());
        for days in [-1000, 0, 11016, 20000, 60000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    /// `lq --help` and each subcommand's say how JSON gives times (issue 17).
    #[test]
    fn help_documents_the_json_time_convention() {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        let mut helps = vec![cmd.render_long_help().to_string()];
        for sub in ["query", "bulk", "watch"] {
            let sub = cmd.find_subcommand_mut(sub).expect("subcommand");
            helps.push(sub.render_long_help().to_string());
        }
        for help in helps {
            for needle in [
                "Unix seconds",
                "_unix_s",
                "base_time_unix_s",
                "server's clock",
            ] {
                assert!(help.contains(needle), "{needle:?} missing:\n{help}");
            }
        }
    }

    #[test]
    fn arguments_parse() {
        assert_eq!(parse_server("[::1]:5470").unwrap().port(), 5470);
        assert_eq!(parse_server("::1").unwrap().port(), 547);
        assert_eq!(parse_hex("00:03:00:01").unwrap(), Hex(vec![0, 3, 0, 1]));
        assert_eq!(
            parse_remote_id("9:0a0b").unwrap(),
            RemoteIdArg(9, vec![10, 11])
        );
        assert_eq!(
            parse_filter("client-id=0003@2001:db8::1").unwrap(),
            Query::ClientId {
                duid: vec![0, 3],
                link: "2001:db8::1".parse().unwrap()
            }
        );
        assert!(parse_filter("color=blue").is_err());
    }

    #[test]
    fn watch_scopes_repeat_and_exclude_filter() {
        let cli = Cli::try_parse_from([
            "lq",
            "watch",
            "--server",
            "::1",
            "--link",
            "2001:db8::1",
            "--relay-id",
            "00:02:00:00:00:09:01",
            "--relay-id",
            "0002000000090102",
            "--remote-id",
            "9:0a0b",
            "--remote-id",
            "2636:0c",
        ])
        .unwrap();
        let Command::Watch(w) = cli.command else {
            panic!("not watch")
        };
        assert_eq!(w.link.len(), 1);
        assert_eq!(
            w.relay_id,
            [
                Hex(vec![0, 2, 0, 0, 0, 9, 1]),
                Hex(vec![0, 2, 0, 0, 0, 9, 1, 2])
            ]
        );
        assert_eq!(
            w.remote_id,
            [RemoteIdArg(9, vec![10, 11]), RemoteIdArg(2636, vec![12])]
        );
        assert_eq!(w.queries_per_connection, 4);
        for scope in ["--relay-id", "--remote-id"] {
            let value = if scope == "--relay-id" { "01" } else { "9:01" };
            let both = Cli::try_parse_from([
                "lq",
                "watch",
                "--server",
                "::1",
                scope,
                value,
                "--filter",
                "link-address=2001:db8::1",
            ]);
            assert!(both.is_err(), "{scope} with --filter");
        }
    }
}
