//! `lq`: a DHCPv6 leasequery requestor for people and scripts, built on
//! [`lqd::requestor`]; its command line is [`lqd::requestor::cli`].
//!
//! ```text
//! lq query --server ADDR:PORT (--address A | --client-id HEX) [--link A] [--json]
//! lq bulk  --server ADDR:PORT (--address A | --client-id HEX | --relay-id HEX
//!          | --link-address A | --remote-id ENT:HEX) [--link A] [--start T] [--end T] [--json]
//! lq watch --server ADDR:PORT [--server ADDR:PORT]... [--state FILE] [--link A]... [--relay-id HEX]...
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
//! `watch` takes `--server` more than once: lqd instances following one lease database, whose
//! times agree (decision D33). A connection lost or refused moves to the next server in turn,
//! each stream resuming there from its saved base-time; a sync that fails is asked of the next.
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
//! in `scope`, `synced` the streams synced in `scopes`). Client and relay DUIDs are lowercase
//! hex; `--client-id` and `--relay-id` also accept `:` or `-` between octets.
//!
//! # Times in JSON
//!
//! One convention in every JSON `lq` and `lqd` write (this output, the `--state` file, lqd's
//! `/requestors`): a point in time is whole Unix seconds (UTC), in a field whose name ends in
//! `_unix_s`; `null` is an infinite lifetime, or a time not known. A duration names its unit
//! (`retry_in_ms`, `skew_ms`). `base_time_unix_s`, `start_time_unix_s`, `start_unix_s` and
//! `end_unix_s` are on the server's clock (its DHCPv6 time, seconds since 2000, is that minus
//! 946,684,800); they are what `--start`/`--end` take. The others (`valid_until_unix_s`,
//! `preferred_until_unix_s`, `last_transaction_unix_s`, `local_time_unix_s`) are on the local
//! clock: lifetimes counted from the message's arrival, or its base-time moved by the skew.
//! `lq --help` says the same (`lqd::requestor::cli::JSON_TIMES`).
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
use std::net::Ipv6Addr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use lqd::codec::ServerTime;
use lqd::requestor::cli::{
    BulkArgs, Cli, Command, Common, QueryArgs, RecoveryArg, RemoteIdArg, WatchArgs, civil_from_days,
};
use lqd::requestor::{
    ActiveSettings, Change, Client, ClientData, Connection, Error, Lease, LeaseKind, Query,
    Recovery, TimeWindow, UdpRequestor, Watch, WatchEvent, WatchSettings,
};
use serde_json::{Value, json};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Query(QueryArgs { common, .. }) | Command::Bulk(BulkArgs { common, .. }) =
        &cli.command
    {
        if common.server.len() > 1 {
            eprintln!("lq: query and bulk take one --server (watch takes several)");
            return ExitCode::from(2);
        }
    }
    let (server, result) = match cli.command {
        Command::Query(a) => (a.common.server(), query(&a)),
        Command::Bulk(a) => (a.common.server(), bulk(&a)),
        Command::Watch(a) => (a.common.server(), watch(&a)),
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

// ---- times -----------------------------------------------------------------------------

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
        "preferred_until_unix_s": l.preferred_until.map(unix),
        "valid_until_unix_s": l.valid_until.map(unix),
    })
}

/// A server time (on the server's clock) as Unix seconds, for JSON.
fn server_unix(t: Option<ServerTime>) -> Option<u64> {
    t.map(ServerTime::to_unix)
}

fn client_json(d: &ClientData) -> Value {
    json!({
        "client_id": hex::encode(&d.client_id),
        "leases": d.leases.iter().map(lease_json).collect::<Vec<_>>(),
        "last_transaction_unix_s": d.last_transaction.map(unix),
        "base_time_unix_s": server_unix(d.time.base_time),
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
    let mut r = UdpRequestor::from_port(a.common.server(), &duid(&a.common), a.source_port)?;
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
    let mut conn = Connection::open(a.common.server(), &duid(&a.common), tls.as_ref())?;
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
    active.failover = a.common.failover();
    let mut settings = WatchSettings::new(a.common.server(), active);
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
                "last_transaction_unix_s": last,
                "base_time_unix_s": server_unix(time.base_time),
            })
        }
        WatchEvent::Loaded { clients, base_time } => json!({
            "event": "loaded", "clients": clients, "base_time_unix_s": server_unix(*base_time),
        }),
        WatchEvent::Connected {
            server,
            xid,
            start_time,
            scope,
        } => json!({
            "event": "connected", "server": server.to_string(), "xid": xid.to_string(),
            "start_time_unix_s": server_unix(*start_time), "scope": scope_json(scope.as_ref()),
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
            "base_time_unix_s": server_unix(time.base_time),
            "local_time_unix_s": time.base_time.map(|t| unix(time.to_local(t))),
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
            "start_unix_s": server_unix(*start),
            "end_unix_s": server_unix(*end),
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

/// A time on the server's clock as RFC 3339 (what `--start` and `--end` take), `-` for none.
fn server_time(t: Option<ServerTime>) -> String {
    t.map_or_else(
        || "-".to_owned(),
        |t| rfc3339(UNIX_EPOCH + Duration::from_secs(t.to_unix())),
    )
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
                    server_time(Some(*t))
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
    fn times_print() {
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_735_689_600)),
            "2025-01-01T00:00:00Z"
        );
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
