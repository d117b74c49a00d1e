//! `lq`: a DHCPv6 leasequery requestor for people and scripts, built on
//! [`lqd::requestor`].
//!
//! ```text
//! lq query --server ADDR:PORT (--address A | --client-id HEX) [--link A] [--json]
//! lq bulk  --server ADDR:PORT (--address A | --client-id HEX | --relay-id HEX
//!          | --link-address A | --remote-id ENT:HEX) [--link A] [--start T] [--end T] [--json]
//! lq watch --server ADDR:PORT [--state FILE] [--link A]... [--relay-id HEX]...
//!          [--remote-id ENT:HEX]... [--filter KIND=VALUE] [--queries-per-connection N]
//!          [--recovery resync|window] [--rcv-timeout SECS] [--save-interval SECS] [--json]
//! TLS, for bulk and watch:
//!          [--tls [--ca FILE] [--cert FILE --key FILE] [--server-name NAME]]
//! ```
//!
//! `query` asks one UDP Leasequery (RFC 5007, retransmitted per RFC 8415). `bulk` asks one
//! Bulk Leasequery over TCP (RFC 5460) and prints every binding of the answer. `watch` keeps
//! a replica in sync over Active Leasequery (RFC 7653) until SIGINT or SIGTERM, printing one
//! line per binding change and status events on lines of their own; with `--state` the
//! replica is saved (atomically) and a restarted `watch` resumes where it stopped.
//!
//! `watch`'s scope is every `--link`, `--relay-id` and `--remote-id` given (or the one
//! `--filter`): each is synced by its Bulk query and followed by an Active query filtered to
//! it, so the replica holds exactly the clients in scope. Those Active queries share
//! connections, `--queries-per-connection` to each (default 4: lqd's default limit of
//! queries run at once on one connection; a server leaves the queries beyond its limit
//! unread, which `watch` reports as no LEASEQUERY-REPLY after `--rcv-timeout`). Ten links
//! thus take three connections, and a DataMissing recovery one more while it runs; a server
//! also limits the connections of one requestor (lqd: 10 by default).
//!
//! # TLS
//!
//! With `--tls`, every TCP connection (`bulk`, and each of `watch`'s connections, reconnects
//! included) starts with STARTTLS (RFC 7653), then a TLS handshake (1.2 or later) in which `lq`
//! is the client; a server that refuses (TLSConnectionRefused) is an error, never a fall-back
//! to plaintext. The server's certificate is checked against the CAs in `--ca` (PEM), or the
//! system's trust store without it, and must name `--server-name`, by default the address in
//! `--server` (then as an IP address SAN). `--cert` and `--key` (PEM) present a client
//! certificate to a server that asks for one (mutual TLS). A TLS failure ends `watch` too:
//! reconnecting would fail the same way (decision D28).
//!
//! # Output
//!
//! By default, tables for people (a progress spinner on stderr while a long Bulk answer
//! arrives, when stdout and stderr are terminals). With `--json`, JSON Lines: one object per
//! client (`query`, `bulk`) or per event (`watch`, field `"event"`: `added`, `updated`,
//! `removed`, `loaded`, `connected`, `synced`, `catch_up_complete`, `data_missing`,
//! `disconnected`; `connected`, `catch_up_complete` and `data_missing` name the stream's query
//! in `scope`, `synced` the streams synced in `scopes`). Local times are Unix seconds (`null`: infinite lifetime); `base_time`,
//! `start_time`, `start` and `end` are server times (seconds since 2000-01-01 UTC, the
//! server's clock), the values `--start`/`--end` take. Client and relay DUIDs are lowercase
//! hex; `--client-id` and `--relay-id` also accept `:` or `-` between octets.
//!
//! # Exit codes
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success: bindings printed; for `watch`, stopped by SIGINT/SIGTERM with the state saved |
//! | 1 | the server answered, but no binding matched (`query`, `bulk`) |
//! | 2 | usage error (also: a `--ca`, `--cert` or `--key` file that cannot be used) |
//! | 3 | the server refused the query (a status such as NotAllowed, MalformedQuery, NotConfigured, UnknownQueryType, NotSupported) |
//! | 4 | no answer: the server was unreachable, silent, or broke the connection or the protocol |
//! | 5 | `bulk`: the answer was cut short (LEASEQUERY-DONE with an error status such as QueryTerminated); what came was printed |
//! | 6 | `watch`: the state file could not be read or written |
//! | 7 | TLS: the server refused STARTTLS, or the handshake failed (its certificate not trusted, not for the name, expired; ours not accepted) |
//!
//! Every error is one line on stderr, `lq: ...`.

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand, ValueEnum};
use lqd::codec::ServerTime;
use lqd::requestor::{
    ActiveSettings, Change, Client, ClientData, Connection, Error, Lease, LeaseKind, Query,
    Recovery, TimeWindow, TlsClient, TlsOptions, UdpRequestor, Watch, WatchEvent, WatchSettings,
};
use serde_json::{Value, json};

const EXIT_CODES: &str = "\
Exit codes:
  0  success: bindings printed; for watch, stopped by SIGINT/SIGTERM with the state saved
  1  the server answered, but no binding matched (query, bulk)
  2  usage error (also: a --ca, --cert or --key file that cannot be used)
  3  the server refused the query (NotAllowed, MalformedQuery, NotConfigured, ...)
  4  no answer: the server was unreachable, silent, or broke the connection or the protocol
  5  bulk: the answer was cut short (LEASEQUERY-DONE with an error status); what came was printed
  6  watch: the state file could not be read or written
  7  TLS: the server refused STARTTLS, or the handshake failed (certificate not accepted)";

const TIME_HELP: &str = "a server time: seconds since 2000-01-01 UTC on the server's clock (as \
printed in base_time), @UNIX-SECONDS, or YYYY-MM-DDTHH:MM:SSZ (local clock, assumed to agree)";

/// A DHCPv6 leasequery requestor: UDP, Bulk and Active Leasequery (RFC 5007, 5460, 7653).
#[derive(Debug, Parser)]
#[command(name = "lq", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One UDP Leasequery: the client holding an address, or a client's bindings.
    #[command(after_help = EXIT_CODES)]
    Query(QueryArgs),
    /// One Bulk Leasequery over TCP: every binding matching a key.
    #[command(after_help = EXIT_CODES)]
    Bulk(BulkArgs),
    /// Keep a replica of the server's bindings in sync over Active Leasequery, printing each
    /// change, until SIGINT or SIGTERM.
    #[command(after_help = EXIT_CODES)]
    Watch(WatchArgs),
}

#[derive(Debug, Args)]
struct Common {
    /// The server: ADDR:PORT (an address alone means port 547).
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_server)]
    server: SocketAddr,
    /// Our DUID, in hex (default: a random DUID-UUID).
    #[arg(long, value_name = "HEX", value_parser = parse_hex)]
    duid: Option<Hex>,
    /// JSON Lines instead of a table.
    #[arg(long)]
    json: bool,
}

/// TLS for the TCP subcommands (STARTTLS, RFC 7653).
#[derive(Debug, Args)]
struct TlsArgs {
    /// Protect the connection with TLS (STARTTLS, then TLS 1.2 or later); fail when the
    /// server refuses.
    #[arg(long)]
    tls: bool,
    /// Trust the CA certificates in FILE (PEM) instead of the system's trust store.
    #[arg(long, value_name = "FILE", requires = "tls")]
    ca: Option<PathBuf>,
    /// Present the certificate chain in FILE (PEM, leaf first) to a server asking for one
    /// (mutual TLS).
    #[arg(long, value_name = "FILE", requires_all = ["tls", "key"])]
    cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["tls", "cert"])]
    key: Option<PathBuf>,
    /// The name the server's certificate must hold: a DNS name or an IP address (default:
    /// the address of --server, as an IP address SAN).
    #[arg(long, value_name = "NAME", requires = "tls")]
    server_name: Option<String>,
}

impl TlsArgs {
    /// The TLS setup, `None` without `--tls`.
    fn client(&self) -> Result<Option<TlsClient>, Error> {
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

#[derive(Debug, Args)]
#[group(id = "udp_key", required = true, multiple = false)]
struct UdpKey {
    /// QUERY_BY_ADDRESS: the client leasing this address (or a prefix holding it).
    #[arg(long, value_name = "A")]
    address: Option<Ipv6Addr>,
    /// QUERY_BY_CLIENTID: this client's bindings.
    #[arg(long, value_name = "HEX", value_parser = parse_hex)]
    client_id: Option<Hex>,
}

#[derive(Debug, Args)]
struct QueryArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    key: UdpKey,
    /// The query's link-address (default ::, every link).
    #[arg(long, value_name = "A")]
    link: Option<Ipv6Addr>,
    /// Send from this UDP port (default: an ephemeral one). Some servers, dhcpkit's among
    /// them, answer a direct query on the DHCPv6 client port 546 whatever its source port.
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    source_port: u16,
}

#[derive(Debug, Args)]
#[group(id = "bulk_key", required = true, multiple = false)]
struct BulkKey {
    /// QUERY_BY_ADDRESS.
    #[arg(long, value_name = "A")]
    address: Option<Ipv6Addr>,
    /// QUERY_BY_CLIENTID.
    #[arg(long, value_name = "HEX", value_parser = parse_hex)]
    client_id: Option<Hex>,
    /// QUERY_BY_RELAY_ID: bindings tied to this relay agent's DUID.
    #[arg(long, value_name = "HEX", value_parser = parse_hex)]
    relay_id: Option<Hex>,
    /// QUERY_BY_LINK_ADDRESS: every binding on this link.
    #[arg(long, value_name = "A")]
    link_address: Option<Ipv6Addr>,
    /// QUERY_BY_REMOTE_ID: enterprise number and remote-id in hex.
    #[arg(long, value_name = "ENT:HEX", value_parser = parse_remote_id)]
    remote_id: Option<RemoteIdArg>,
}

#[derive(Debug, Args)]
struct BulkArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    key: BulkKey,
    /// Narrow an address, client-id, relay-id or remote-id query to this link-address.
    #[arg(long, value_name = "A", conflicts_with = "link_address")]
    link: Option<Ipv6Addr>,
    /// Only bindings changed at or after T (OPTION_LQ_START_TIME).
    #[arg(long, value_name = "T", value_parser = parse_time, long_help = format!(
        "Only bindings changed at or after T (OPTION_LQ_START_TIME); T is {TIME_HELP}"))]
    start: Option<ServerTime>,
    /// Only bindings changed at or before T (OPTION_LQ_END_TIME).
    #[arg(long, value_name = "T", value_parser = parse_time, long_help = format!(
        "Only bindings changed at or before T (OPTION_LQ_END_TIME); T is {TIME_HELP}"))]
    end: Option<ServerTime>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RecoveryArg {
    /// Repeat the sync queries and replace the replica with their answers (exact).
    Resync,
    /// Bulk with START/END over the gap, applied as updates (misses removals in the gap).
    Window,
}

#[derive(Debug, Args)]
struct WatchArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    tls: TlsArgs,
    /// Keep the replica in FILE and resume from it.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Follow this link (repeatable): synced by Bulk QUERY_BY_LINK_ADDRESS, then followed by
    /// an Active query for it alone. Without any scope (--link, --relay-id, --remote-id,
    /// --filter), every change is followed, the first sync is the Active catch-up from the
    /// start of the server's history, and DataMissing cannot be recovered.
    #[arg(long, value_name = "A", conflicts_with = "filter")]
    link: Vec<Ipv6Addr>,
    /// Follow the clients behind this relay agent, by its DUID in hex (repeatable): synced by
    /// Bulk QUERY_BY_RELAY_ID, then followed by an Active query for it alone.
    #[arg(long, value_name = "HEX", value_parser = parse_hex, conflicts_with = "filter")]
    relay_id: Vec<Hex>,
    /// Follow the clients with this relay-inserted Remote-ID, enterprise number and remote-id
    /// in hex (repeatable): synced by Bulk QUERY_BY_REMOTE_ID, then followed by an Active
    /// query for it alone.
    #[arg(long, value_name = "ENT:HEX", value_parser = parse_remote_id, conflicts_with = "filter")]
    remote_id: Vec<RemoteIdArg>,
    /// Watch only matching bindings: address=A, client-id=HEX, relay-id=HEX,
    /// link-address=A or remote-id=ENT:HEX, optionally followed by @LINK.
    #[arg(long, value_name = "KIND=VALUE", value_parser = parse_filter)]
    filter: Option<Query>,
    /// Active queries sent on one connection; more scopes take more connections. Lower it
    /// to the server's limit of queries run at once per connection if it is below 4.
    #[arg(long, value_name = "N", default_value = "4",
          value_parser = clap::value_parser!(u16).range(1..))]
    queries_per_connection: u16,
    /// How DataMissing is recovered.
    #[arg(long, value_enum, default_value = "resync")]
    recovery: RecoveryArg,
    /// ACTIVE_LQ_RCV_TIMEOUT: reconnect after this many seconds without a message.
    #[arg(long, value_name = "SECS", default_value = "120", value_parser = parse_secs)]
    rcv_timeout: Duration,
    /// Save the state at most this many seconds after a change.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse_secs)]
    save_interval: Duration,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (server, result) = match cli.command {
        Command::Query(a) => (a.common.server, query(&a)),
        Command::Bulk(a) => (a.common.server, bulk(&a)),
        Command::Watch(a) => (a.common.server, watch(&a)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            match e {
                Error::State { .. } | Error::Invalid(_) | Error::TlsConfig(_) => {
                    eprintln!("lq: {e}");
                }
                _ => eprintln!("lq: {server}: {e}"),
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The documented exit code for an error.
fn exit_code(e: &Error) -> u8 {
    match e {
        Error::Refused { .. } => 3,
        Error::Incomplete { .. } => 5,
        Error::State { .. } => 6,
        Error::Invalid(_) | Error::TlsConfig(_) => 2,
        Error::TlsRefused { .. } | Error::Tls(_) => 7,
        _ => 4,
    }
}

// ---- arguments -------------------------------------------------------------------------

fn parse_server(s: &str) -> Result<SocketAddr, String> {
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
struct Hex(Vec<u8>);

fn parse_hex(s: &str) -> Result<Hex, String> {
    hex_octets(s).map(Hex)
}

fn hex_octets(s: &str) -> Result<Vec<u8>, String> {
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
struct RemoteIdArg(u32, Vec<u8>);

fn parse_remote_id(s: &str) -> Result<RemoteIdArg, String> {
    let (ent, id) = s
        .split_once(':')
        .ok_or_else(|| format!("'{s}' is not ENT:HEX (enterprise number, then hex)"))?;
    let ent = ent
        .parse::<u32>()
        .map_err(|_| format!("'{ent}' is not an enterprise number"))?;
    Ok(RemoteIdArg(ent, hex_octets(id)?))
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v < 1e9 => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!("'{s}' is not a positive number of seconds")),
    }
}

fn parse_filter(s: &str) -> Result<Query, String> {
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

fn parse_time(s: &str) -> Result<ServerTime, String> {
    if let Ok(v) = s.parse::<u32>() {
        return Ok(ServerTime(v));
    }
    if let Some(unix) = s.strip_prefix('@') {
        return unix
            .parse::<u64>()
            .map(ServerTime::from_unix)
            .map_err(|_| format!("'{s}' is not @UNIX-SECONDS"));
    }
    parse_rfc3339(s)
        .map(|unix| ServerTime::from_unix(u64::try_from(unix).unwrap_or(0)))
        .ok_or_else(|| format!("'{s}' is not a time: {TIME_HELP}"))
}

// ---- times -----------------------------------------------------------------------------

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
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
fn parse_rfc3339(s: &str) -> Option<i64> {
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

/// Unix seconds (negative before 1970).
fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339(t: SystemTime) -> String {
    let s = unix(t);
    let (y, m, d) = civil_from_days(s.div_euclid(86_400));
    let r = s.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        r / 3600,
        r % 3600 / 60,
        r % 60
    )
}

fn when(t: Option<SystemTime>) -> String {
    t.map_or_else(|| "infinite".to_owned(), rfc3339)
}

// ---- output ----------------------------------------------------------------------------

fn colon_hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn lease_text(l: &Lease) -> String {
    match l.kind {
        LeaseKind::Address => l.address.to_string(),
        LeaseKind::Prefix => format!("{}/{}", l.address, l.prefix_len),
    }
}

fn lease_json(l: &Lease) -> Value {
    json!({
        "type": match l.kind { LeaseKind::Address => "address", LeaseKind::Prefix => "prefix" },
        "address": l.address.to_string(),
        "prefix_len": l.prefix_len,
        "preferred_until": l.preferred_until.map(unix),
        "valid_until": l.valid_until.map(unix),
    })
}

fn client_json(d: &ClientData) -> Value {
    json!({
        "client_id": hex::encode(&d.client_id),
        "leases": d.leases.iter().map(lease_json).collect::<Vec<_>>(),
        "last_transaction": d.last_transaction.map(unix),
        "base_time": d.time.base_time.map(|t| t.0),
    })
}

/// A table of bindings, one row per lease.
#[derive(Default)]
struct Table {
    rows: Vec<[String; 5]>,
}

impl Table {
    const HEAD: [&'static str; 5] = [
        "CLIENT-ID",
        "LEASE",
        "PREFERRED-UNTIL",
        "VALID-UNTIL",
        "LAST-TRANSACTION",
    ];

    fn add(&mut self, d: &ClientData) {
        let id = colon_hex(&d.client_id);
        let last = d.last_transaction.map(rfc3339).unwrap_or_default();
        if d.leases.is_empty() {
            self.rows
                .push([id, "(no lease)".into(), String::new(), String::new(), last]);
            return;
        }
        for (i, l) in d.leases.iter().enumerate() {
            let (id, last) = if i == 0 {
                (id.clone(), last.clone())
            } else {
                (String::new(), String::new())
            };
            self.rows.push([
                id,
                lease_text(l),
                when(l.preferred_until),
                when(l.valid_until),
                last,
            ]);
        }
    }

    fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        let mut width = Self::HEAD.map(str::len);
        for r in &self.rows {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.len());
            }
        }
        let line = |cells: [&str; 5]| {
            let mut s = String::new();
            for (i, (c, w)) in cells.iter().zip(width).enumerate() {
                if i + 1 == cells.len() {
                    s.push_str(c);
                } else {
                    s.push_str(&format!("{c:<w$}  "));
                }
            }
            s.trim_end().to_owned()
        };
        writeln!(out, "{}", line(Self::HEAD))?;
        for r in &self.rows {
            writeln!(out, "{}", line(r.each_ref().map(String::as_str)))?;
        }
        Ok(())
    }
}

/// Where bindings go: a table printed at the end, or JSON Lines as they come.
struct Printer {
    json: bool,
    table: Table,
    out: std::io::StdoutLock<'static>,
    broken: bool,
}

impl Printer {
    fn new(json: bool) -> Self {
        Self {
            json,
            table: Table::default(),
            out: std::io::stdout().lock(),
            broken: false,
        }
    }

    fn add(&mut self, d: &ClientData) {
        if self.json {
            if !self.broken && writeln!(self.out, "{}", client_json(d)).is_err() {
                self.broken = true;
            }
        } else {
            self.table.add(d);
        }
    }

    fn finish(mut self) {
        if !self.json && !self.table.rows.is_empty() {
            let _ = self.table.print(&mut self.out);
        }
        let _ = self.out.flush();
    }
}

// ---- commands --------------------------------------------------------------------------

fn duid(common: &Common) -> Vec<u8> {
    common
        .duid
        .clone()
        .map_or_else(lqd::requestor::random_duid, |h| h.0)
}

fn query(a: &QueryArgs) -> Result<ExitCode, Error> {
    let link = a.link.unwrap_or(Ipv6Addr::UNSPECIFIED);
    let q = match (&a.key.address, &a.key.client_id) {
        (Some(address), _) => Query::Address {
            address: *address,
            link,
        },
        (None, Some(duid)) => Query::ClientId {
            duid: duid.0.clone(),
            link,
        },
        (None, None) => return Err(Error::Invalid("give --address or --client-id".into())),
    };
    let mut r = UdpRequestor::from_port(a.common.server, &duid(&a.common), a.source_port)?;
    let answer = r.query(&q)?;
    let mut p = Printer::new(a.common.json);
    for c in &answer.clients {
        p.add(c);
    }
    p.finish();
    Ok(found(answer.clients.len()))
}

fn found(n: usize) -> ExitCode {
    if n == 0 {
        eprintln!("lq: no binding matched");
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn bulk(a: &BulkArgs) -> Result<ExitCode, Error> {
    let link = a.link.unwrap_or(Ipv6Addr::UNSPECIFIED);
    let k = &a.key;
    let q = if let Some(address) = k.address {
        Query::Address { address, link }
    } else if let Some(duid) = &k.client_id {
        Query::ClientId {
            duid: duid.0.clone(),
            link,
        }
    } else if let Some(duid) = &k.relay_id {
        Query::RelayId {
            duid: duid.0.clone(),
            link,
        }
    } else if let Some(l) = k.link_address {
        Query::LinkAddress(l)
    } else if let Some(RemoteIdArg(enterprise_number, remote_id)) = &k.remote_id {
        Query::RemoteId {
            enterprise_number: *enterprise_number,
            remote_id: remote_id.clone(),
            link,
        }
    } else {
        return Err(Error::Invalid("give one query key".into()));
    };
    let window = TimeWindow {
        start: a.start,
        end: a.end,
    };
    let tls = a.tls.client()?;
    let mut conn = Connection::open(a.common.server, &duid(&a.common), tls.as_ref())?;
    let answer = conn.bulk(&q, window)?;
    let show_bar =
        !a.common.json && std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::hidden();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {human_pos} bindings, {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let started = Instant::now();
    let mut bar_shown = false;
    let mut p = Printer::new(a.common.json);
    let mut n = 0usize;
    let mut failure = None;
    for item in answer {
        match item {
            Ok(d) => {
                n += 1;
                p.add(&d);
                bar.inc(1);
                if show_bar && !bar_shown && started.elapsed() > Duration::from_millis(300) {
                    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bar_shown = true;
                }
            }
            Err(e) => failure = Some(e),
        }
    }
    bar.finish_and_clear();
    p.finish();
    match failure {
        Some(e @ Error::Incomplete { .. }) => {
            eprintln!("lq: {e} ({n} bindings printed)");
            Ok(ExitCode::from(5))
        }
        Some(e) => Err(e),
        None => Ok(found(n)),
    }
}

fn watch(a: &WatchArgs) -> Result<ExitCode, Error> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|source| Error::Io {
            what: "signal handler",
            source,
        })?;
    }
    let mut active = ActiveSettings::new(&duid(&a.common));
    active.filter = a.filter.clone();
    active.rcv_timeout = a.rcv_timeout;
    active.stop = Some(Arc::clone(&stop));
    active.tls = a.tls.client()?;
    let mut settings = WatchSettings::new(a.common.server, active);
    settings.links = a.link.clone();
    settings.relay_ids = a.relay_id.iter().map(|h| h.0.clone()).collect();
    settings.remote_ids = a
        .remote_id
        .iter()
        .map(|RemoteIdArg(e, r)| (*e, r.clone()))
        .collect();
    settings.queries_per_connection = usize::from(a.queries_per_connection);
    settings.recovery = match a.recovery {
        RecoveryArg::Resync => Recovery::Resync,
        RecoveryArg::Window => Recovery::Window,
    };
    settings.state_file = a.state.clone();
    settings.save_interval = a.save_interval;
    let mut w = Watch::open(settings)?;
    let mut out = std::io::stdout().lock();
    while let Some(e) = w.next_event()? {
        let line = if a.common.json {
            event_json(&e).map(|v| v.to_string())
        } else {
            event_text(&e)
        };
        let Some(line) = line else { continue };
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            // Nobody reads any more: stop as if interrupted.
            w.save()?;
            return Ok(ExitCode::SUCCESS);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A client's leases as text and as JSON, and its last transaction.
fn client_parts(c: Option<&Client>) -> (String, Vec<Value>, Option<i64>) {
    let leases = c.map(|c| c.leases.as_slice()).unwrap_or_default();
    (
        leases.iter().map(lease_text).collect::<Vec<_>>().join(" "),
        leases.iter().map(lease_json).collect(),
        c.and_then(|c| c.last_transaction).map(unix),
    )
}

fn change_parts(change: &Change) -> (&'static str, Option<&Client>) {
    match change {
        Change::Added { client, .. } => ("added", Some(client)),
        Change::Updated { client, .. } => ("updated", Some(client)),
        Change::Removed { .. } => ("removed", None),
    }
}

fn event_json(e: &WatchEvent) -> Option<Value> {
    Some(match e {
        WatchEvent::Change { change, time } => {
            let (kind, client) = change_parts(change);
            let (_, leases, last) = client_parts(client);
            json!({
                "event": kind,
                "client_id": hex::encode(change.client_id()),
                "leases": leases,
                "last_transaction": last,
                "base_time": time.base_time.map(|t| t.0),
            })
        }
        WatchEvent::Loaded { clients, base_time } => json!({
            "event": "loaded", "clients": clients, "base_time": base_time.map(|t| t.0),
        }),
        WatchEvent::Connected {
            server,
            xid,
            start_time,
            scope,
        } => json!({
            "event": "connected", "server": server.to_string(), "xid": xid.to_string(),
            "start_time": start_time.map(|t| t.0), "scope": scope_json(scope.as_ref()),
        }),
        WatchEvent::Synced {
            recovery,
            scopes,
            queries,
            bindings,
            clients,
        } => json!({
            "event": "synced", "recovery": recovery, "queries": queries,
            "scopes": scopes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "bindings": bindings, "clients": clients,
        }),
        WatchEvent::CatchUpComplete { time, scope } => json!({
            "event": "catch_up_complete",
            "scope": scope_json(scope.as_ref()),
            "base_time": time.base_time.map(|t| t.0),
            "local_time": time.base_time.map(|t| unix(time.to_local(t))),
            "skew_ms": time.skew_ms(),
        }),
        WatchEvent::DataMissing {
            start,
            end,
            recovery,
            scope,
            ..
        } => json!({
            "event": "data_missing",
            "scope": scope_json(scope.as_ref()),
            "start": start.map(|t| t.0),
            "end": end.map(|t| t.0),
            "recovery": recovery.map(|r| match r { Recovery::Resync => "resync", Recovery::Window => "window" }),
        }),
        WatchEvent::Disconnected { reason, retry_in } => json!({
            "event": "disconnected", "reason": reason,
            "retry_in_ms": u64::try_from(retry_in.as_millis()).unwrap_or(u64::MAX),
        }),
        WatchEvent::Keepalive(_) => return None,
    })
}

/// A stream's query as `KIND=VALUE`, `null` for the unfiltered stream.
fn scope_json(scope: Option<&Query>) -> Value {
    scope.map_or(Value::Null, |q| Value::String(q.to_string()))
}

/// ` for KIND=VALUE`, or nothing for the unfiltered stream.
fn for_scope(scope: Option<&Query>) -> String {
    scope.map_or_else(String::new, |q| format!(" for {q}"))
}

fn server_time(t: Option<ServerTime>) -> String {
    t.map_or_else(|| "-".to_owned(), |t| t.0.to_string())
}

fn event_text(e: &WatchEvent) -> Option<String> {
    let now = rfc3339(SystemTime::now());
    Some(match e {
        WatchEvent::Change { change, .. } => {
            let (kind, client) = change_parts(change);
            let (leases, _, _) = client_parts(client);
            format!("{now} {kind:<7} {} {leases}", colon_hex(change.client_id()))
                .trim_end()
                .to_owned()
        }
        WatchEvent::Loaded { clients, base_time } => format!(
            "{now} # loaded {clients} clients, current to server time {}",
            server_time(*base_time)
        ),
        WatchEvent::Connected {
            server,
            start_time,
            scope,
            ..
        } => {
            let scope = for_scope(scope.as_ref());
            match start_time {
                Some(t) => format!(
                    "{now} # connected to {server}{scope}, catching up from server time {}",
                    t.0
                ),
                None => format!("{now} # connected to {server}{scope}"),
            }
        }
        WatchEvent::Synced {
            recovery,
            queries,
            bindings,
            clients,
            ..
        } => format!(
            "{now} # {}: {bindings} bindings from {queries} Bulk queries, {clients} clients",
            if *recovery { "resynced" } else { "synced" }
        ),
        WatchEvent::CatchUpComplete { time, scope } => format!(
            "{now} # catch-up complete{}: current to server time {} (clock skew {:+.3}s)",
            for_scope(scope.as_ref()),
            server_time(time.base_time),
            time.skew_ms().unwrap_or(0) as f64 / 1000.0
        ),
        WatchEvent::DataMissing {
            start,
            end,
            recovery,
            scope,
            ..
        } => format!(
            "{now} # data missing{} between server times {} and {}: {}",
            for_scope(scope.as_ref()),
            server_time(*start),
            server_time(*end),
            match recovery {
                Some(Recovery::Resync) => "resyncing it by Bulk".to_owned(),
                Some(Recovery::Window) => "asking Bulk for the gap".to_owned(),
                None => "cannot recover without a scope (--link, --relay-id, --remote-id or \
                         --filter); the replica may be stale"
                    .to_owned(),
            }
        ),
        WatchEvent::Disconnected { reason, retry_in } => format!(
            "{now} # disconnected: {reason}; reconnecting in {:.1}s",
            retry_in.as_secs_f64()
        ),
        WatchEvent::Keepalive(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_and_print() {
        assert_eq!(parse_rfc3339("2025-01-01T00:00:00Z"), Some(1_735_689_600));
        assert_eq!(
            parse_rfc3339("2025-01-01T01:00:00+01:00"),
            Some(1_735_689_600)
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_735_689_600)),
            "2025-01-01T00:00:00Z"
        );
        assert_eq!(parse_time("789004800"), Ok(ServerTime(789_004_800)));
        assert_eq!(parse_time("@1735689600"), Ok(ServerTime(789_004_800)));
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
