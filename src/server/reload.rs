//! Live reload (decision D31): the settings a running server takes without a restart, the
//! thread that reads them again on SIGHUP, and how the loop applies them.
//!
//! The reading side ([`Reloader`]) runs off the loop: it reads the file, applies the flags over
//! it as at start, checks it whole, loads the TLS files and binds a moved metrics listener. Only
//! a configuration that passed all of that is applied: the log filter and the metrics listener
//! change on that thread, the rest goes to the loop as one [`Live`] value through a channel and
//! the loop's waker. The loop swaps its settings between two turns and then looks at every
//! connection: one whose requestor the new policy no longer allows is closed, with a log line
//! naming the peer and the reason; the others, and their running Bulk and Active queries, go on.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use mio::Waker;
use tracing::{error, info, warn};

use super::metrics::{self, Metrics, MetricsServer};
use super::tls::TlsServer;
use super::{Access, JournalSettings, Server, ServerConfig};
use crate::codec::ServerTime;
use crate::config::{Admission, Cli, Config, Identified, QueryTypes, TlsMode};
use crate::engine::session::ActiveSettings;
use crate::store::LinkMap;

/// The settings a running server takes from a reload (D31); everything in [`ServerConfig`] but
/// its sockets, its identity and its journal.
pub struct Live {
    /// Who may connect and what they may ask (`[[requestor]]`, `--allow`).
    pub access: Box<dyn Access>,
    /// `max_connections`: new connections are refused above it; open ones stay.
    pub max_connections: usize,
    /// `max_connections_per_requestor`: a requestor's newest connections beyond it are closed.
    pub max_connections_per_requestor: usize,
    /// `max_concurrent_queries`: for connections opened from now on.
    pub max_concurrent_queries: usize,
    /// BULK_LQ_DATA_TIMEOUT.
    pub bulk_data_timeout: Duration,
    /// Outbound octets buffered per connection before the engine stops producing.
    pub high_water: usize,
    /// Reads (or datagrams) handled per socket per readiness event.
    pub read_budget: usize,
    /// SO_SNDBUF of connections opened from now on.
    pub tcp_send_buffer: usize,
    /// The links served (D16): queries and changes from now on.
    pub links: LinkMap,
    /// Active service, catch-up and ACTIVE_LQ_IDLE_TIMEOUT, for queries from now on (the idle
    /// timeout for running ones too).
    pub active: ActiveSettings,
    /// ACTIVE_LQ_SEND_TIMEOUT.
    pub active_send_timeout: Duration,
    /// STARTTLS, with the certificate, key and CA read again: new connections use them.
    pub tls: Option<TlsServer>,
    /// The metrics the loop counts into; `None` while `metrics_listen` is off.
    pub metrics: Option<Arc<Metrics>>,
}

impl Live {
    /// The live settings of `config` serving `links`, its TLS files read; `metrics` is left
    /// `None`. Errors name the file or setting that is wrong.
    pub fn from_config(config: &Config, links: LinkMap) -> Result<Self, String> {
        Ok(Self {
            access: Box::new(config.clone()),
            max_connections: config.max_connections,
            max_connections_per_requestor: config.max_connections_per_requestor,
            max_concurrent_queries: config.max_concurrent_queries,
            bulk_data_timeout: config.bulk_data_timeout,
            high_water: config.high_water,
            read_budget: config.read_budget,
            tcp_send_buffer: config.tcp_send_buffer,
            links,
            active: ActiveSettings {
                enabled: config.active,
                catch_up: config.catch_up,
                idle_timeout: config.active_idle_timeout,
            },
            active_send_timeout: config.active_send_timeout,
            tls: TlsServer::load(&config.tls)?,
            metrics: None,
        })
    }
}

impl ServerConfig {
    /// A server configuration from what only a start sets (the sockets, the DUID, the journal)
    /// and the settings a reload may change.
    #[must_use]
    pub fn new(
        listen: Vec<std::net::SocketAddr>,
        server_id: Vec<u8>,
        udp_receive_buffer: usize,
        journal: JournalSettings,
        live: Live,
    ) -> Self {
        Self {
            listen,
            server_id,
            max_connections: live.max_connections,
            max_connections_per_requestor: live.max_connections_per_requestor,
            max_concurrent_queries: live.max_concurrent_queries,
            bulk_data_timeout: live.bulk_data_timeout,
            high_water: live.high_water,
            read_budget: live.read_budget,
            udp_receive_buffer,
            tcp_send_buffer: live.tcp_send_buffer,
            feed_budget: 4096,
            access: live.access,
            links: live.links,
            active: live.active,
            active_send_timeout: live.active_send_timeout,
            journal,
            tls: live.tls,
            metrics: live.metrics,
            source_times: false,
        }
    }
}

/// Hands new settings to a running server's loop, from any thread.
#[derive(Clone)]
pub struct LiveHandle {
    tx: Sender<Live>,
    waker: Arc<Waker>,
}

impl LiveHandle {
    /// Queues `live` for the loop and wakes it; false when the loop has ended.
    pub fn send(&self, live: Live) -> bool {
        if self.tx.send(live).is_err() {
            return false;
        }
        if let Err(e) = self.waker.wake() {
            warn!("reload: cannot wake the event loop: {e}");
        }
        true
    }
}

/// The channel between [`LiveHandle`]s and the loop.
pub(super) fn channel() -> (Sender<Live>, Receiver<Live>) {
    crossbeam_channel::unbounded()
}

/// Why the loop closes a connection after a reload, if it does.
fn verdict(
    conn: &super::conn::Conn,
    access: &dyn Access,
    require_tls: bool,
    mutual: bool,
) -> Result<Decided, String> {
    let ip = conn.peer.ip();
    if conn.tls_identified() && !conn.certificate_names.is_empty() {
        match access.identify(ip, &conn.certificate_names) {
            Identified::Table {
                index,
                name,
                query_types,
                limit,
            } => {
                return Ok(Decided {
                    policy: query_types,
                    table: Some((index, name, limit)),
                    needs_certificate: false,
                });
            }
            Identified::NoMatch => {
                return Err(format!(
                    "its certificate matches no requestor table now ({})",
                    conn.certificate.as_deref().unwrap_or("?")
                ));
            }
            Identified::Unchanged => {}
        }
    }
    if require_tls && conn.plain() {
        return Err("TLS is required now ([tls] mode = \"require\")".to_owned());
    }
    match access.admit(ip) {
        Admission::Allowed(policy) => Ok(Decided {
            policy,
            table: None,
            needs_certificate: false,
        }),
        // A certificate may still admit it: its handshake is running or to come.
        Admission::NeedsCertificate if mutual && !conn.tls_identified() => Ok(Decided {
            policy: QueryTypes::NONE,
            table: None,
            needs_certificate: true,
        }),
        Admission::NeedsCertificate | Admission::Denied => {
            Err("requestor no longer allowed (no [[requestor]] table admits its address)".into())
        }
    }
}

/// What the new policy decided for a connection it keeps.
struct Decided {
    policy: QueryTypes,
    /// The certificate table that matched: its index, the name, its connection limit.
    table: Option<(usize, String, usize)>,
    /// Only a certificate table may admit it: its certificate, still to come, must match one.
    needs_certificate: bool,
}

impl Server {
    /// A handle through which new settings reach this server's loop (D31).
    #[must_use]
    pub fn live_handle(&self) -> LiveHandle {
        LiveHandle {
            tx: self.live_tx.clone(),
            waker: Arc::clone(&self.waker),
        }
    }

    /// Applies the settings a reload sent, if any: called between two turns of the loop.
    pub(super) fn take_live(&mut self, now: ServerTime) {
        while let Ok(live) = self.live_rx.try_recv() {
            self.apply_live(live, now);
        }
    }

    fn apply_live(&mut self, live: Live, now: ServerTime) {
        let cfg = &mut self.cfg;
        cfg.access = live.access;
        cfg.max_connections = live.max_connections;
        cfg.max_connections_per_requestor = live.max_connections_per_requestor;
        cfg.max_concurrent_queries = live.max_concurrent_queries;
        cfg.bulk_data_timeout = live.bulk_data_timeout;
        cfg.high_water = live.high_water;
        cfg.read_budget = live.read_budget;
        cfg.tcp_send_buffer = live.tcp_send_buffer;
        cfg.active = live.active;
        cfg.active_send_timeout = live.active_send_timeout;
        cfg.tls = live.tls;
        cfg.metrics = live.metrics;
        let links = live.links.len();
        self.history.set_link_map(live.links);
        let closed = self.enforce_policy(now);
        info!(
            connections = self.conns.len(),
            closed, links, "reload: new settings applied"
        );
    }

    /// Looks at every connection under the new settings: closes those whose requestor is no
    /// longer allowed, runs a query of a type no longer allowed, or is beyond its lowered
    /// connection limit (its newest connections go first); sets the policy of the others.
    /// Returns how many were closed.
    fn enforce_policy(&mut self, now: ServerTime) -> usize {
        let require_tls = self
            .cfg
            .tls
            .as_ref()
            .is_some_and(|t| t.mode == TlsMode::Require);
        let mutual = self.cfg.tls.as_ref().is_some_and(TlsServer::mutual);
        let mut order: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        order.sort_by_key(|&k| self.conns.get(k).map(|c| c.opened));
        let mut per_peer: HashMap<IpAddr, usize> = HashMap::new();
        let mut per_table: HashMap<usize, usize> = HashMap::new();
        let mut closing: Vec<(usize, String)> = Vec::new();
        for key in order {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            let decided = match verdict(conn, &*self.cfg.access, require_tls, mutual) {
                Ok(d) => d,
                Err(reason) => {
                    closing.push((key, format!("reload: {reason}")));
                    continue;
                }
            };
            if let Some(t) = conn.query_not_allowed(decided.policy) {
                let what = t.map_or_else(
                    || "an Active query without a filter (it needs every query type)".to_owned(),
                    |t| format!("a query of type {}", QueryTypes::NONE.with(t)),
                );
                closing.push((key, format!("reload: {what} is no longer allowed")));
                continue;
            }
            let held = per_peer.entry(conn.peer.ip()).or_insert(0);
            *held += 1;
            if *held > self.cfg.max_connections_per_requestor {
                closing.push((
                    key,
                    format!(
                        "reload: per-requestor limit: max_connections_per_requestor is {} now",
                        self.cfg.max_connections_per_requestor
                    ),
                ));
                continue;
            }
            conn.set_policy(decided.policy);
            conn.needs_certificate = decided.needs_certificate;
            match decided.table {
                Some((index, name, limit)) => {
                    let n = per_table.entry(index).or_insert(0);
                    *n += 1;
                    if *n > limit {
                        *n -= 1;
                        closing.push((
                            key,
                            format!(
                                "reload: per-requestor limit: requestor table {} ({name}) allows \
                                 {limit} connections now",
                                index + 1
                            ),
                        ));
                        continue;
                    }
                    conn.table = Some(index);
                    conn.requestor_name = Some(name);
                }
                None => {
                    conn.table = None;
                    conn.requestor_name = None;
                }
            }
        }
        // The tables' counts under the new numbering; closing connections no longer count.
        for (key, _) in &closing {
            if let Some(c) = self.conns.get_mut(*key) {
                c.table = None;
            }
        }
        self.per_table = per_table;
        let closed = closing.len();
        for (key, reason) in closing {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.terminate(&self.cfg.server_id, now);
            }
            self.close(key, &reason);
        }
        closed
    }
}

/// Replaces the process's log filter (tracing's `EnvFilter` syntax), or says why not.
pub type SetLogFilter = Box<dyn Fn(&str) -> Result<(), String> + Send>;

/// Reads the configuration again on SIGHUP and hands what changed to the running server
/// (D31). Lives on a thread of its own in `lqd`.
pub struct Reloader {
    cli: Cli,
    running: Config,
    handle: LiveHandle,
    /// The process's metrics: the same counters across listeners, off or on.
    metrics: Arc<Metrics>,
    metrics_server: Option<MetricsServer>,
    set_log_filter: SetLogFilter,
}

impl Reloader {
    /// A reloader for a server started with `running` (from `cli`); `metrics_server` is the
    /// listener serving `metrics` now, and `set_log_filter` replaces the log filter.
    pub fn new(
        cli: Cli,
        running: Config,
        handle: LiveHandle,
        metrics: Arc<Metrics>,
        metrics_server: Option<MetricsServer>,
        set_log_filter: SetLogFilter,
    ) -> Self {
        Self {
            cli,
            running,
            handle,
            metrics,
            metrics_server,
            set_log_filter,
        }
    }

    /// The configuration running now.
    #[must_use]
    pub fn running(&self) -> &Config {
        &self.running
    }

    /// Reads the file again and applies the flags over it, as at start; checks it whole, reads
    /// the TLS files, binds a moved metrics listener; then applies it all, or nothing. Every
    /// outcome is logged; `Err` carries why the configuration was rejected.
    pub fn reload(&mut self) -> Result<&Config, String> {
        let file = self
            .cli
            .config
            .as_ref()
            .map_or_else(|| "none".to_owned(), |p| p.display().to_string());
        info!(file, "reload: reading the configuration again (SIGHUP)");
        match self.prepare() {
            Ok(prepared) => {
                self.commit(prepared);
                Ok(&self.running)
            }
            Err(why) => {
                error!("reload rejected: {why}; the running settings stay");
                Err(why)
            }
        }
    }

    /// Everything that may fail, nothing applied yet.
    fn prepare(&self) -> Result<Prepared, String> {
        let mut new = Config::load(&self.cli).map_err(|e| e.to_string())?;
        let restart = self.running.restart_only_changes(&new);
        new.keep_restart_only(&self.running);
        // Kea's configuration is read again too: its subnets may have changed (D30).
        let kea = new.kea_links().map_err(|e| e.to_string())?;
        if let Some((path, k)) = &kea {
            for w in &k.warnings {
                warn!("Kea's configuration {}: {w}", path.display());
            }
        }
        let links = new
            .link_map_with(kea.as_ref().map(|(_, k)| k))
            .map_err(|e| e.to_string())?;
        let live = Live::from_config(&new, links)?;
        let listener = match new.metrics_listen {
            Some(addr) if new.metrics_listen != self.running.metrics_listen => {
                Some(metrics::bind(addr).map_err(|e| format!("metrics_listen {addr}: {e}"))?)
            }
            _ => None,
        };
        Ok(Prepared {
            new,
            live,
            listener,
            restart,
        })
    }

    /// Applies a prepared configuration.
    fn commit(&mut self, prepared: Prepared) {
        let Prepared {
            new,
            mut live,
            listener,
            restart,
        } = prepared;
        if !restart.is_empty() {
            warn!(
                "reload: needs a restart: {} changed; the running value is kept until lqd \
                 restarts",
                restart.join(", ")
            );
        }
        let changed = changed_keys(&self.running, &new);
        if new.log != self.running.log {
            if let Err(e) = (self.set_log_filter)(&new.log) {
                warn!("reload: log filter `{}` not applied: {e}", new.log);
            }
        }
        for w in new.warnings() {
            warn!("{w}");
        }
        self.metrics
            .set_requestor_series(new.metrics_requestor_series);
        if new.metrics_listen != self.running.metrics_listen {
            if let Some(old) = self.metrics_server.take() {
                old.stop();
            }
            if let Some(l) = listener {
                match metrics::serve(l, Arc::clone(&self.metrics)) {
                    Ok(server) => self.metrics_server = Some(server),
                    Err(e) => error!("reload: metrics thread not started: {e}"),
                }
            }
        }
        live.metrics = self
            .metrics_server
            .as_ref()
            .map(|_| Arc::clone(&self.metrics));
        let changed = if changed.is_empty() {
            "nothing (the TLS files are read again)".to_owned()
        } else {
            changed.join(", ")
        };
        info!(changed, "reload: configuration accepted");
        if live.tls.is_some() {
            info!(
                "reload: TLS certificate, key and client CA read again; new connections use them"
            );
        }
        if !self.handle.send(live) {
            warn!("reload: the event loop has ended");
        }
        self.running = new;
    }
}

/// A configuration read, checked and ready to apply.
struct Prepared {
    /// The configuration to run with, restart-only settings kept as they run.
    new: Config,
    live: Live,
    /// The new metrics listener, when `metrics_listen` moved or was turned on.
    listener: Option<std::net::TcpListener>,
    /// The restart-only settings the file changed.
    restart: Vec<&'static str>,
}

/// The top-level keys (and tables) whose values differ between `old` and `new`.
fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let (Ok(toml::Value::Table(a)), Ok(toml::Value::Table(b))) =
        (toml::Value::try_from(old), toml::Value::try_from(new))
    else {
        return Vec::new();
    };
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}
