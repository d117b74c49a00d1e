//! `lqd`: the DHCPv6 leasequery front end. Argument parsing, configuration and start-up only;
//! everything else lives in the library.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::Parser;
use lqd::config::{Cli, Command, Config, JournalAction, LogFormat, SourceSpec, log_filter};
use lqd::feed::{
    BoundJsonl, JsonlInput, KeaCsvSource, PgTarget, bind_jsonl, feed, spawn_demo, spawn_kea_pgsql,
    system_time,
};
use lqd::server::metrics::Metrics;
use lqd::server::{JournalSettings, Live, Reloader, Server, ServerConfig, SetLogFilter};
use tracing::{error, info, warn};

/// Why lqd does not start without a source (issue 13: no made-up leases unless asked for).
const NO_SOURCE: &str = "no lease source: give --source kea-csv:PATH, kea-pgsql:URI, \
                         jsonl:PATH, jsonl:unix:PATH or jsonl:- (or `source = \"...\"` in \
                         the configuration); to try lqd with made-up leases, --source demo";

/// Changes the feed holds before a source has to wait for the loop.
const FEED_CAPACITY: usize = 65_536;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.check_config.is_some() {
        return check_config(&cli);
    }
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
    let filter = match log_filter(&config.log) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("lqd: log level '{}': {e}", config.log);
            return ExitCode::from(2);
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A reload replaces the filter (D31). The reloading layer is added last: it is typed by
    // the formatter beneath it.
    let set_log_filter: SetLogFilter = match config.log_format {
        LogFormat::Text => {
            let subscriber = builder
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter_reloading();
            let handle = subscriber.reload_handle();
            subscriber.init();
            Box::new(move |log: &str| {
                let filter = log_filter(log).map_err(|e| e.to_string())?;
                handle.reload(filter).map_err(|e| e.to_string())
            })
        }
        // The same content as a text line, one object a line: the event's fields (message,
        // peer, reason, ...) at the top level beside timestamp, level and target.
        LogFormat::Json => {
            let subscriber = builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_filter_reloading();
            let handle = subscriber.reload_handle();
            subscriber.init();
            Box::new(move |log: &str| {
                let filter = log_filter(log).map_err(|e| e.to_string())?;
                handle.reload(filter).map_err(|e| e.to_string())
            })
        }
    };
    for w in config.warnings() {
        warn!("{w}");
    }
    match run(cli, config, set_log_filter) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, config: Config, set_log_filter: SetLogFilter) -> Result<(), String> {
    // From here on SIGHUP reloads (D31), and one that arrives during the start waits for it.
    let mut hangups = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])
        .map_err(|e| format!("signal handler: {e}"))?;
    // Safe by default (issue 13): no made-up leases unless asked for.
    let Some(source) = config.source.clone() else {
        return Err(NO_SOURCE.into());
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
    let kea = config.kea_links().map_err(|e| e.to_string())?;
    if let Some((path, k)) = &kea {
        for w in &k.warnings {
            warn!("Kea's configuration {}: {w}", path.display());
        }
    }
    let links = config
        .link_map_with(kea.as_ref().map(|(_, k)| k))
        .map_err(|e| e.to_string())?;
    match &kea {
        Some((path, k)) if config.links.is_empty() && !k.links.is_empty() => info!(
            links = links.len(),
            subnets = k.subnets.len(),
            "{} links taken from Kea's configuration {} ({} subnets)",
            links.len(),
            path.display(),
            k.subnets.len()
        ),
        Some((path, _)) if !config.links.is_empty() => info!(
            links = links.len(),
            "{} links configured by [[link]] tables; Kea's configuration {} gives only its \
             subnet ids",
            links.len(),
            path.display()
        ),
        _ => info!(links = links.len(), "links configured"),
    }
    let kea_subnets = kea.map(|(_, k)| k.subnets).unwrap_or_default();
    let mut live = Live::from_config(&config, links)?;
    let journal = JournalSettings {
        path: config.journal_path(),
        size: config.journal_size,
        flush: config.journal_flush,
        catch_up_window: (!config.catch_up_window.is_zero()).then_some(config.catch_up_window),
    };
    if let Some(t) = &live.tls {
        info!(
            mode = ?t.mode,
            mutual = t.mutual(),
            "TLS offered by STARTTLS; SIGHUP reads the certificate, key and client CA again"
        );
    }
    // One set of counters for the process, whether a reload turns the listener on or off.
    let metrics = Arc::new(Metrics::new(config.metrics_requestor_series));
    metrics.set_source(&source.to_string());
    // The metrics listener first: a bad address fails the start, before anything runs.
    let metrics_server = match config.metrics_listen {
        Some(addr) => {
            let listener = lqd::server::metrics::bind(addr)
                .map_err(|e| format!("metrics_listen {addr}: {e}"))?;
            live.metrics = Some(Arc::clone(&metrics));
            Some(
                lqd::server::metrics::serve(listener, Arc::clone(&metrics))
                    .map_err(|e| format!("metrics thread: {e}"))?,
            )
        }
        None => None,
    };
    // What the source counts (rejected rows, lag, newest row time): the metrics' own counters,
    // there whether a reload turns the listener on or off.
    let stats = metrics.source_stats();
    let mut server_cfg = ServerConfig::new(
        config.listen.clone(),
        server_id,
        config.udp_receive_buffer,
        journal,
        live,
    );
    // D33: a lease database's times, not lqd's clock.
    server_cfg.source_times = matches!(source, SourceSpec::KeaPgsql(_));
    // The feed's socket first: when lqd's TCP port answers, writers can connect too (they wait
    // in the socket's backlog until the journal is read and the source starts).
    let mut jsonl = match &source {
        SourceSpec::Jsonl(path) => Some(JsonlInput::File(path.clone())),
        SourceSpec::JsonlUnix(path) => Some(JsonlInput::Unix(path.clone())),
        SourceSpec::JsonlStdin => Some(JsonlInput::Stdin),
        SourceSpec::Demo | SourceSpec::KeaCsv(_) | SourceSpec::KeaPgsql(_) => None,
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
                .stats(stats)
                .spawn(handle, server.writers())
                .map_err(|e| format!("source {name}: {e}"))?;
            info!("source: {name}");
        }
        SourceSpec::KeaPgsql(uri) => {
            let target = PgTarget::parse(&uri).map_err(|e| format!("source kea-pgsql: {e}"))?;
            let name = format!("kea-pgsql:{target}");
            spawn_kea_pgsql(target, kea_subnets, handle, &server.writers(), stats)
                .map_err(|e| format!("source {name}: {e}"))?;
            info!("source: {name}");
        }
        SourceSpec::KeaCsv(path) => {
            let name = format!("kea-csv:{}", path.display());
            KeaCsvSource::new(path)
                .subnets(kea_subnets)
                .stats(stats)
                .spawn(handle)
                .map_err(|e| format!("source {name}: {e}"))?;
            info!("source: {name}");
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| format!("signal handler: {e}"))?;
    }
    // After the flags: SIGTERM or SIGINT sets the stop flag, then wakes the loop to look at it
    // (SIGHUP is the reload thread's, below).
    server
        .wake_on_signals(&[signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
        .map_err(|e| format!("signal handler: {e}"))?;
    let mut reloader = Reloader::new(
        cli,
        config,
        server.live_handle(),
        metrics,
        metrics_server,
        set_log_filter,
    );
    std::thread::Builder::new()
        .name("lqd-reload".into())
        .spawn(move || {
            for _ in hangups.forever() {
                // systemd shows the unit as reloading until READY=1 comes again, whether
                // the new configuration was taken or rejected (the running one stays).
                notify("RELOADING=1\nSTATUS=reloading the configuration");
                let status = match reloader.reload() {
                    Ok(config) => {
                        raise_fd_limit(config.max_connections);
                        "configuration reloaded"
                    }
                    Err(_) => "configuration rejected; the running settings stay",
                };
                notify(&format!("READY=1\nSTATUS={status}"));
            }
        })
        .map_err(|e| format!("reload thread: {e}"))?;
    // Listening, the journal open, the source running: a Type=notify unit is started.
    let serving = server
        .local_addrs()
        .map(|a| {
            a.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    notify(&format!("READY=1\nSTATUS=serving on {serving}"));
    // Held until the loop has stopped.
    let _code = lock_code();
    let result = server.run(&stop).map_err(|e| format!("event loop: {e}"));
    notify("STOPPING=1");
    result?;
    drop(socket_file);
    info!("stopped");
    // The journal is flushed and closed cleanly by `run`; what dropping the server would do
    // now is free the store and its indexes one allocation at a time, seconds for a large
    // population, while the process exits (and the kernel takes its memory back) at once.
    std::mem::forget(server);
    Ok(())
}

/// `lqd --check-config [FILE]`: prints the settings lqd would run with and where each came
/// from; 0 when lqd would start with them, 2 (with the file, line and reason) when not.
fn check_config(cli: &Cli) -> ExitCode {
    let checked = match lqd::config::check::Checked::load(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lqd: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{checked}");
    let config = &checked.config;
    if config.source.is_none() {
        eprintln!("lqd: {NO_SOURCE}");
        return ExitCode::from(2);
    }
    // The files the settings name must be readable too, as at start.
    if let Err(e) = lqd::server::tls::TlsServer::load(&config.tls) {
        eprintln!("lqd: {e}");
        return ExitCode::from(2);
    }
    let links = config.kea_links().and_then(|kea| {
        let map = config.link_map_with(kea.as_ref().map(|(_, k)| k))?;
        Ok((kea, map))
    });
    match links {
        Ok((Some((path, k)), map)) if config.links.is_empty() && !k.links.is_empty() => {
            println!(
                "# link: no table; {} links from Kea's configuration {}",
                map.len(),
                path.display()
            );
        }
        Ok(_) => {}
        Err(e) => {
            eprintln!("lqd: {e}");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

/// Tells the service manager (`NOTIFY_SOCKET`, a `Type=notify` unit) lqd's state; a failure is
/// logged and lqd goes on.
fn notify(state: &str) {
    if let Err(e) = lqd::server::notify::notify(state) {
        warn!(
            "cannot notify the service manager ({}): {e}",
            state.replace('\n', " ")
        );
    }
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

/// Descriptors lqd needs besides its connections: listeners, the poll and its waker, the
/// signal pipes (the loop's three, the reload thread's), the journal, logs, the metrics
/// listener's connections, the sources'.
const FD_HEADROOM: u64 = 64;

/// Locks lqd's code in memory ([`lqd::server::code_lock`]), the soft `RLIMIT_MEMLOCK` raised to
/// the hard one first; says what it did.
fn lock_code() -> Option<lqd::server::code_lock::CodeLock> {
    if let Ok((soft, hard)) = rlimit::Resource::MEMLOCK.get() {
        if soft < hard {
            let _ = rlimit::Resource::MEMLOCK.set(hard, hard);
        }
    }
    match lqd::server::code_lock::lock_code() {
        Ok(lock) => {
            info!(
                kib = lock.bytes() / 1024,
                "lqd's code is locked in memory: the event loop never waits for it to be read \
                 back from disk"
            );
            Some(lock)
        }
        Err(e) => {
            warn!(
                "{e}: a page of lqd's code the kernel drops is read back from disk when it next \
                 runs, and the event loop waits for it (give lqd CAP_IPC_LOCK or a larger \
                 LimitMEMLOCK)"
            );
            None
        }
    }
}

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
