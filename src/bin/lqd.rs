//! `lqd`: the DHCPv6 leasequery front end. Argument parsing, configuration and start-up only;
//! everything else lives in the library.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::Parser;
use lqd::config::{Cli, Command, Config, JournalAction, LogFormat, SourceSpec};
use lqd::engine::session::ActiveSettings;
use lqd::feed::{BoundJsonl, JsonlInput, bind_jsonl, feed, spawn_demo, spawn_kea_csv, system_time};
use lqd::server::{JournalSettings, Server, ServerConfig};
use tracing::{error, info, warn};

/// Changes the feed holds before a source has to wait for the loop.
const FEED_CAPACITY: usize = 65_536;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lqd: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Journal { action }) = &cli.command {
        return journal(action, &config);
    }
    let filter = match tracing_subscriber::EnvFilter::try_new(&config.log) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("lqd: log level '{}': {e}", config.log);
            return ExitCode::from(2);
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // The same content as a text line, one object a line: the event's fields (message,
        // peer, reason, ...) at the top level beside timestamp, level and target.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
    for w in config.warnings() {
        warn!("{w}");
    }
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> Result<(), String> {
    // Safe by default (issue 13): no made-up leases unless asked for.
    let Some(source) = config.source.clone() else {
        return Err(
            "no lease source: give --source kea-csv:PATH, jsonl:PATH, jsonl:unix:PATH \
                    or jsonl:- (or `source = \"...\"` in the configuration); to try lqd with \
                    made-up leases, --source demo"
                .into(),
        );
    };
    if config.requestors.is_empty() {
        warn!(
            "no [[requestor]] table: only loopback (::1, 127.0.0.0/8) may ask; add \
             [[requestor]] tables to the configuration, or --allow PREFIX, to serve others"
        );
    }
    std::fs::create_dir_all(&config.state_dir)
        .map_err(|e| format!("state directory {}: {e}", config.state_dir.display()))?;
    let server_id = match &config.server_duid {
        Some(d) => d.as_duid().as_bytes().to_vec(),
        None => lqd::server::duid::load_or_create(&config.duid_path())
            .map_err(|e| format!("server DUID file {}: {e}", config.duid_path().display()))?,
    };
    info!(duid = %lqd::codec::Duid(&server_id), "server DUID");
    let demo = config.demo.demo_config();
    raise_fd_limit(config.max_connections);
    let links = config.link_map().map_err(|e| e.to_string())?;
    info!(links = links.len(), "links configured");
    let active = ActiveSettings {
        enabled: config.active,
        catch_up: config.catch_up,
        idle_timeout: config.active_idle_timeout,
    };
    let active_send_timeout = config.active_send_timeout;
    let journal = JournalSettings {
        path: config.journal_path(),
        size: config.journal_size,
        flush: config.journal_flush,
    };
    let tls = lqd::server::tls::TlsServer::load(&config.tls)?;
    if let Some(t) = &tls {
        info!(
            mode = ?t.mode,
            mutual = t.mutual(),
            "TLS offered by STARTTLS; SIGHUP reads the certificate, key and client CA again"
        );
    }
    // The metrics listener first: a bad address fails the start, before anything runs.
    let metrics = match config.metrics_listen {
        Some(addr) => {
            let listener = lqd::server::metrics::bind(addr)
                .map_err(|e| format!("metrics_listen {addr}: {e}"))?;
            let m = Arc::new(lqd::server::metrics::Metrics::new(
                config.metrics_requestor_series,
            ));
            m.set_source(&source.to_string());
            lqd::server::metrics::serve(listener, Arc::clone(&m))
                .map_err(|e| format!("metrics thread: {e}"))?;
            Some(m)
        }
        None => None,
    };
    let server_cfg = ServerConfig {
        listen: config.listen.clone(),
        server_id,
        max_connections: config.max_connections,
        max_connections_per_requestor: config.max_connections_per_requestor,
        max_concurrent_queries: config.max_concurrent_queries,
        bulk_data_timeout: config.bulk_data_timeout,
        high_water: config.high_water,
        read_budget: config.read_budget,
        udp_receive_buffer: config.udp_receive_buffer,
        tcp_send_buffer: config.tcp_send_buffer,
        feed_budget: 4096,
        access: Box::new(config),
        links,
        active,
        active_send_timeout,
        journal,
        tls,
        metrics,
    };
    // The feed's socket first: when lqd's TCP port answers, writers can connect too (they wait
    // in the socket's backlog until the journal is read and the source starts).
    let mut jsonl = match &source {
        SourceSpec::Jsonl(path) => Some(JsonlInput::File(path.clone())),
        SourceSpec::JsonlUnix(path) => Some(JsonlInput::Unix(path.clone())),
        SourceSpec::JsonlStdin => Some(JsonlInput::Stdin),
        SourceSpec::Demo | SourceSpec::KeaCsv(_) => None,
    }
    .map(|input| {
        let name = input.to_string();
        bind_jsonl(input).map_err(|e| format!("source {name}: {e}"))
    })
    .transpose()?;
    // Removes the socket file when lqd stops cleanly (or fails to start).
    let socket_file = jsonl.as_mut().and_then(BoundJsonl::take_socket_file);
    let mut server = Server::bind(server_cfg).map_err(|e| format!("cannot start: {e}"))?;
    let (handle, receiver) = feed(FEED_CAPACITY, server.waker());
    server.set_feed(receiver);
    match source {
        SourceSpec::Demo => {
            spawn_demo(demo, handle, system_time).map_err(|e| format!("demo source: {e}"))?;
            info!("source: demo churn");
        }
        SourceSpec::Jsonl(_) | SourceSpec::JsonlStdin | SourceSpec::JsonlUnix(_) => {
            let Some(bound) = jsonl else {
                return Err("the jsonl source was not bound".into());
            };
            let name = bound.input().to_string();
            bound
                .spawn(handle, server.writers())
                .map_err(|e| format!("source {name}: {e}"))?;
            info!("source: {name}");
        }
        SourceSpec::KeaCsv(path) => {
            let name = format!("kea-csv:{}", path.display());
            spawn_kea_csv(path, handle).map_err(|e| format!("source {name}: {e}"))?;
            info!("source: {name}");
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| format!("signal handler: {e}"))?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, server.reload_flag())
        .map_err(|e| format!("signal handler: {e}"))?;
    server.run(&stop).map_err(|e| format!("event loop: {e}"))?;
    drop(socket_file);
    info!("stopped");
    Ok(())
}

/// `lqd journal check|resize`: prints what it found or did; 0 for a clean journal or a done
/// resize, 1 for a damaged journal, 2 when the journal cannot be read.
fn journal(action: &JournalAction, config: &Config) -> ExitCode {
    use lqd::store::journal::offline;
    let default = config.journal_path();
    match action {
        JournalAction::Check { path } => {
            match offline::check(path.as_deref().unwrap_or(&default)) {
                Ok(report) => {
                    print!("{report}");
                    if report.is_clean() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("lqd: {e}");
                    ExitCode::from(2)
                }
            }
        }
        JournalAction::Resize { size, path } => {
            match offline::resize(path.as_deref().unwrap_or(&default), *size) {
                Ok(done) => {
                    print!("{done}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("lqd: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// Descriptors lqd needs besides its connections: listeners, the poll, the journal, logs.
const FD_HEADROOM: u64 = 64;

/// Raises the open-file limit (RLIMIT_NOFILE) to what `max_connections` needs, as far as the
/// hard limit allows, and says so when that is not enough.
fn raise_fd_limit(max_connections: usize) {
    let wanted = u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_add(FD_HEADROOM);
    match rlimit::Resource::NOFILE.get() {
        Ok((soft, hard)) if soft < wanted => {
            let new = wanted.min(hard);
            match rlimit::Resource::NOFILE.set(new, hard) {
                Ok(()) if new < wanted => warn!(
                    limit = new,
                    max_connections,
                    "the open-file hard limit is below max_connections; connections beyond it \
                     are refused"
                ),
                Ok(()) => info!(from = soft, to = new, "raised the open-file limit"),
                Err(e) => warn!(limit = soft, "cannot raise the open-file limit: {e}"),
            }
        }
        Ok(_) => {}
        Err(e) => warn!("cannot read the open-file limit: {e}"),
    }
}
