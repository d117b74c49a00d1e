//! lqd's configuration: built-in defaults, a TOML file and command-line flags.
//!
//! Settings are layered: the defaults, then the file named by `--config`, then the flags, each
//! layer replacing what the one before set. The defaults are the RFC values (digest §7) and the
//! project decisions D4, D22 and D23, so lqd runs without any file. A file sets any subset of the
//! keys; an unknown key is an error, never silently ignored. Durations are whole seconds.
//!
//! ```toml
//! listen = ["[::]:5470", "0.0.0.0:5470"]
//! source = "demo"
//! state_dir = "/var/lib/lqd"
//! max_connections_per_requestor = 10
//! bulk_data_timeout = 300
//!
//! [[requestor]]
//! prefix = "2001:db8:100::/48"            # every query type
//!
//! [[requestor]]
//! prefix = "192.0.2.0/24"                 # also matches ::ffff:192.0.2.0/120
//! query_types = ["address", "client-id"]
//!
//! [[link]]                                # the relay's link-address names the link (D16)
//! address = "2001:db8:0:1::1"
//! prefixes = ["2001:db8:0:1::/64"]        # any address inside names it too
//! pd_pools = ["3fff:0:100::/40"]          # managed space: not NotConfigured
//!
//! [demo]
//! clients = 50000
//! ```
//!
//! The stable command-line contract that scripts rely on is `lqd --listen ADDR:PORT` (TCP and
//! UDP), `--source demo` and `--config FILE`.
//!
//! `lqd --check-config [FILE]` ([`check`]) prints the settings lqd would run with and where
//! each came from; an error names the file, the line and, for an unknown key, the nearest known
//! one. On SIGHUP lqd reads the file again and applies all but the settings in
//! [`RESTART_ONLY`] (decision D31).

use core::fmt;
use std::error::Error;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use ipnet::{IpNet, Ipv6Net};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use crate::codec::{Duid, QueryType};
use crate::feed::DemoConfig;
use crate::feed::demo::DemoSource;
use crate::feed::demo::MAX_CLIENTS;
use crate::feed::kea::{KEA_LEASE_FILE_DEFAULT, KeaLinks, kea_config_path, load_kea_links};
use crate::store::journal::FlushPolicy;
use crate::store::{LinkDef, LinkMap};

pub mod check;
mod live;

pub use live::RESTART_ONLY;

/// The leasequery port for TCP and UDP (RFC 5007, RFC 5460).
pub const DEFAULT_PORT: u16 = 547;
/// BULK_LQ_DATA_TIMEOUT: how long a blocked Bulk connection is kept (digest §7, D4).
pub const BULK_LQ_DATA_TIMEOUT: Duration = Duration::from_secs(300);
/// BULK_LQ_MAX_CONNS: simultaneous connections per requestor address (digest §7, D4).
pub const BULK_LQ_MAX_CONNS: usize = 10;
/// ACTIVE_LQ_SEND_TIMEOUT: drop an Active connection whose sending is blocked this long.
pub const ACTIVE_LQ_SEND_TIMEOUT: Duration = Duration::from_secs(120);
/// ACTIVE_LQ_IDLE_TIMEOUT: send a keepalive after this long without sending anything.
pub const ACTIVE_LQ_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The global connection limit, over all requestors (D4).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Queries running at once on one connection (D22).
pub const DEFAULT_MAX_CONCURRENT_QUERIES: usize = 4;
/// Outbound bytes queued per connection above which lqd stops producing more (64 KiB).
pub const DEFAULT_HIGH_WATER: usize = 64 * 1024;
/// Frames handled per readiness event before lqd serves other connections.
pub const DEFAULT_READ_BUDGET: usize = 64;
/// The UDP sockets' receive buffer (4 MiB): about 4,000 queries in flight.
pub const DEFAULT_UDP_RECEIVE_BUFFER: usize = 4 * 1024 * 1024;
/// Each TCP connection's send buffer (256 KiB).
pub const DEFAULT_TCP_SEND_BUFFER: usize = 256 * 1024;
/// File name of the change journal, inside the state directory.
pub const DEFAULT_JOURNAL_FILE: &str = "lqd-journal";
/// The change journal's size (128 MiB).
pub const DEFAULT_JOURNAL_SIZE: u64 = 128 * 1024 * 1024;
/// The smallest journal lqd accepts (1 MiB).
pub const MIN_JOURNAL_SIZE: u64 = 1024 * 1024;
/// The largest journal lqd accepts (64 GiB, about 750 million changes of a carrier's mix): the
/// per-key lists keep sequence numbers in 32 bits against the oldest record's, so the ring
/// must hold fewer than 2³² records (a record takes at least 24 octets).
pub const MAX_JOURNAL_SIZE: u64 = 64 << 30;
/// File name, inside the state directory, of the generated server DUID.
pub const DEFAULT_DUID_FILE: &str = "lqd-server-duid";
/// The state directory of lqd run as a system service (root, or systemd's `StateDirectory=`).
pub const SYSTEM_STATE_DIR: &str = "/var/lib/lqd";

/// Where lqd keeps its state when neither `state_dir` nor `--state-dir` says:
///
/// 1. `$STATE_DIRECTORY`, which systemd sets from the unit's `StateDirectory=` (the first of
///    its directories);
/// 2. run as root: [`SYSTEM_STATE_DIR`], `/var/lib/lqd`;
/// 3. otherwise the user's state directory of the XDG base directory specification:
///    `$XDG_STATE_HOME/lqd`, else `$HOME/.local/state/lqd`;
/// 4. with none of those (no home), `/var/lib/lqd`.
///
/// Never the current directory: the journal (`journal_size`, 128 MiB by default) must not land
/// wherever lqd happens to be started.
#[must_use]
pub fn default_state_dir() -> PathBuf {
    state_dir_from(|key| std::env::var_os(key), running_as_root())
}

/// [`default_state_dir`] with the environment read through `env`, and whether lqd runs as
/// root (its effective uid is 0).
#[must_use]
pub fn state_dir_from(env: impl Fn(&str) -> Option<std::ffi::OsString>, root: bool) -> PathBuf {
    // Relative paths are invalid in these variables (XDG base directory specification).
    let absolute = |key: &str| env(key).map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(first) = env("STATE_DIRECTORY")
        .and_then(|dirs| std::env::split_paths(&dirs).next())
        .filter(|p| p.is_absolute())
    {
        return first;
    }
    if root {
        return PathBuf::from(SYSTEM_STATE_DIR);
    }
    if let Some(state) = absolute("XDG_STATE_HOME") {
        return state.join("lqd");
    }
    if let Some(home) = absolute("HOME") {
        return home.join(".local").join("state").join("lqd");
    }
    PathBuf::from(SYSTEM_STATE_DIR)
}

/// True when this process's effective uid is 0 (read from `/proc/self/status`; false where
/// that cannot be read).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// lqd's complete configuration, every field with a default.
///
/// In TOML each field is a top-level key of the same name, except `requestors`, written as
/// `[[requestor]]` tables, and `demo`, a `[demo]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `listen`: socket addresses served for both TCP (Bulk) and UDP; default `[::]:547`.
    pub listen: Vec<SocketAddr>,
    /// `source`: where lease changes come from. No default: lqd refuses to serve without
    /// one (`--source demo` serves the demo's made-up leases, to try lqd).
    pub source: Option<SourceSpec>,
    /// `server_duid`: the server's DUID; when absent one is generated once and kept in
    /// [`duid_path`](Self::duid_path).
    pub server_duid: Option<ServerDuid>,
    /// `duid_file`: where a generated server DUID is kept, relative to `state_dir` unless
    /// absolute; default `lqd-server-duid`.
    pub duid_file: PathBuf,
    /// `state_dir`: the directory lqd keeps its state in, created if missing: the change
    /// journal (`journal_file`, `journal_size` octets, 128 MiB by default), the snapshot of the
    /// mirror a clean stop writes beside it (`lqd-journal.snapshot`, D43), the generated
    /// server DUID (`duid_file`), and the copies `lqd journal` and a damaged journal's
    /// recovery keep beside the journal (`lqd-journal.damaged-*`, `lqd-journal.before-resize-*`).
    /// Default: [`default_state_dir`] (`$STATE_DIRECTORY` under systemd, `/var/lib/lqd` for
    /// root, else `$XDG_STATE_HOME/lqd` or `~/.local/state/lqd`).
    pub state_dir: PathBuf,
    /// `max_connections`: TCP connections open at once over all requestors; default 10000.
    pub max_connections: usize,
    /// `max_connections_per_requestor`: BULK_LQ_MAX_CONNS, per requestor address; default 10.
    pub max_connections_per_requestor: usize,
    /// `max_concurrent_queries`: queries running at once on one connection; default 4. The
    /// connection is not read while at the limit (D22).
    pub max_concurrent_queries: usize,
    /// `bulk_data_timeout`: BULK_LQ_DATA_TIMEOUT in seconds; default 300.
    #[serde(deserialize_with = "seconds", serialize_with = "write_seconds")]
    pub bulk_data_timeout: Duration,
    /// `active_send_timeout`: ACTIVE_LQ_SEND_TIMEOUT in seconds; default 120.
    #[serde(deserialize_with = "seconds", serialize_with = "write_seconds")]
    pub active_send_timeout: Duration,
    /// `active_idle_timeout`: ACTIVE_LQ_IDLE_TIMEOUT in seconds; default 60.
    #[serde(deserialize_with = "seconds", serialize_with = "write_seconds")]
    pub active_idle_timeout: Duration,
    /// `active`: serve ACTIVELEASEQUERY; default true. Off: NotSupported (D10).
    pub active: bool,
    /// `catch_up`: honour OPTION_LQ_START_TIME in ACTIVELEASEQUERY; default true. Off:
    /// NotSupported (D10).
    pub catch_up: bool,
    /// `journal_file`: the change journal, relative to `state_dir` unless absolute; default
    /// `lqd-journal`.
    pub journal_file: PathBuf,
    /// `journal_size`: the journal's size in octets, fixed when the file is created; default
    /// 128 MiB (about 1.5 million changes of a carrier's relayed mix, 87 octets a packed
    /// record, D42; docs/operations.md sizes it).
    pub journal_size: u64,
    /// `journal_flush`: when journal records are forced to disk: `"os"` (the kernel decides;
    /// survives a crash of lqd, not of the machine), `"always"` (each change), or an interval
    /// such as `"100ms"` or `"1s"` (a power loss costs at most that much). Default `"os"`.
    #[serde(
        deserialize_with = "flush_policy",
        serialize_with = "write_flush_policy"
    )]
    pub journal_flush: FlushPolicy,
    /// `catch_up_window`: how far back, in seconds, requestors reconnecting after an outage
    /// need to catch up; default 3600 (an hour). At start lqd warns when the journal holds
    /// less than that at the churn its records show, and names the `journal_size` that would
    /// (docs/operations.md). 0 checks nothing.
    #[serde(deserialize_with = "seconds", serialize_with = "write_seconds")]
    pub catch_up_window: Duration,
    /// `[[requestor]]` tables: who may query, and which types (D23). Empty lets everyone ask
    /// every type; see [`access`](Self::access).
    #[serde(rename = "requestor")]
    pub requestors: Vec<Requestor>,
    /// `[tls]`: STARTTLS (RFC 7653): the server's certificate, client certificates, and
    /// whether TLS is offered or required (D25, D27).
    pub tls: TlsSettings,
    /// `[[link]]` tables: the links served, each with `address` (its link-address),
    /// `prefixes` and `pd_pools` (D16). Queries naming a link or an address outside them get
    /// NotConfigured. Empty: the demo source's own links with `--source demo`, otherwise no
    /// configured links (links are taken as the source names them; nothing is NotConfigured).
    #[serde(rename = "link")]
    pub links: Vec<LinkDef>,
    /// `kea_config`: Kea's DHCPv6 configuration file, whose subnets become lqd's links when
    /// there is no `[[link]]` table (issue 15, `feed::kea::config`). Default: the
    /// `LQD_KEA_CONFIG` environment variable, else `/etc/kea/kea-dhcp6.conf` when it exists
    /// and is the configuration of the `kea-csv` source's lease file.
    pub kea_config: Option<PathBuf>,
    /// `[demo]`: the demo source's population and churn.
    pub demo: DemoSettings,
    /// `high_water`: outbound bytes queued per connection before lqd stops producing more;
    /// default 65536.
    pub high_water: usize,
    /// `read_budget`: frames read per readiness event; default 64.
    pub read_budget: usize,
    /// `udp_receive_buffer`: the UDP sockets' receive buffer (SO_RCVBUF) in octets, so a burst
    /// of queries waits in the kernel instead of being dropped; default 4 MiB (Linux caps it at
    /// `net.core.rmem_max`).
    pub udp_receive_buffer: usize,
    /// `tcp_send_buffer`: each connection's kernel send buffer (SO_SNDBUF) in octets; default
    /// 256 KiB; 0 leaves it to the kernel's autotuning (up to `net.ipv4.tcp_wmem`). It bounds
    /// the kernel memory a connection holds and how much already-superseded state an Active
    /// requestor that stopped reading still gets once it reads again.
    pub tcp_send_buffer: usize,
    /// `log`: log filter in tracing's `EnvFilter` syntax (`info`, `lqd=debug,warn`); default
    /// `info`. A span field's value in a directive is matched as text, not as a regular
    /// expression (see [`log_filter`]).
    pub log: String,
    /// `log_format`: how log lines are written: `"text"` (default, for people) or `"json"`
    /// (one JSON object a line, for log shippers).
    pub log_format: LogFormat,
    /// `metrics_listen`: where to serve `GET /metrics` (Prometheus) and `GET /requestors`
    /// (JSON) over HTTP, such as `"[::1]:9547"`; off unless set (docs/metrics.md).
    pub metrics_listen: Option<SocketAddr>,
    /// `metrics_requestor_series`: the most lagged requestors given series of their own;
    /// default 100. The rest are counted in `lqd_requestor_series_dropped`.
    pub metrics_requestor_series: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::new(
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                DEFAULT_PORT,
            )],
            source: None,
            server_duid: None,
            duid_file: PathBuf::from(DEFAULT_DUID_FILE),
            state_dir: default_state_dir(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_requestor: BULK_LQ_MAX_CONNS,
            max_concurrent_queries: DEFAULT_MAX_CONCURRENT_QUERIES,
            bulk_data_timeout: BULK_LQ_DATA_TIMEOUT,
            active_send_timeout: ACTIVE_LQ_SEND_TIMEOUT,
            active_idle_timeout: ACTIVE_LQ_IDLE_TIMEOUT,
            active: true,
            catch_up: true,
            journal_file: PathBuf::from(DEFAULT_JOURNAL_FILE),
            journal_size: DEFAULT_JOURNAL_SIZE,
            journal_flush: FlushPolicy::Os,
            catch_up_window: Duration::from_secs(3600),
            requestors: Vec::new(),
            tls: TlsSettings::default(),
            links: Vec::new(),
            kea_config: None,
            demo: DemoSettings::default(),
            high_water: DEFAULT_HIGH_WATER,
            read_budget: DEFAULT_READ_BUDGET,
            udp_receive_buffer: DEFAULT_UDP_RECEIVE_BUFFER,
            tcp_send_buffer: DEFAULT_TCP_SEND_BUFFER,
            log: "info".to_owned(),
            log_format: LogFormat::Text,
            metrics_listen: None,
            metrics_requestor_series: 100,
        }
    }
}

/// The log filter of `log` (tracing's `EnvFilter` syntax), at start, on a reload and when a
/// configuration is checked.
///
/// A span's field value in a directive (`lqd[conn{peer=...}]=debug`) is matched as the text of
/// the value, not as a regular expression: the filter is built from a file or a flag, and a
/// pattern such as a long run of `.` would take tracing's regular-expression engine seconds to
/// minutes to compile, stalling a start or a reload.
///
/// The kea-pgsql source reports its connection's failures itself, once per outage; the
/// replication client's own error line at each failed attempt would repeat it, so it is off
/// unless `log` names it.
pub fn log_filter(log: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    let filter = tracing_subscriber::EnvFilter::builder()
        .with_regex(false)
        .parse(log)
        .map_err(|e| e.to_string())?;
    if log.contains("pgwire_replication") {
        return Ok(filter);
    }
    Ok(match "pgwire_replication=off".parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    })
}

impl Config {
    /// The configuration lqd runs with: defaults, then `cli.config` if given, then the flags.
    pub fn load(cli: &Cli) -> Result<Self, ConfigError> {
        let mut config = match &cli.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        config.apply(cli);
        config.validate("command line")?;
        Ok(config)
    }

    /// Reads and checks a TOML configuration file; errors name the file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Self::parse(&text, format!("config file {}", path.display()))
    }

    /// Parses and checks configuration text in TOML; errors name it `config`.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::parse(text, "config".to_owned())
    }

    fn parse(text: &str, origin: String) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            position: e.span().map(|span| line_column(text, span.start)),
            message: check::suggest(&one_line(e.message())),
            origin: origin.clone(),
        })?;
        config
            .check_values()
            .map_err(|(key, message)| ConfigError::Invalid {
                position: key.and_then(|k| check::locate(text, &k)),
                origin,
                message,
            })?;
        Ok(config)
    }

    /// Replaces the settings the flags give.
    fn apply(&mut self, cli: &Cli) {
        if !cli.listen.is_empty() {
            self.listen.clone_from(&cli.listen);
        }
        let set = |field: &mut usize, flag: Option<usize>| *field = flag.unwrap_or(*field);
        set(&mut self.max_connections, cli.max_connections);
        set(
            &mut self.max_connections_per_requestor,
            cli.max_connections_per_requestor,
        );
        set(&mut self.max_concurrent_queries, cli.max_concurrent_queries);
        if let Some(source) = &cli.source {
            self.source = Some(source.clone());
        }
        if !cli.allow.is_empty() {
            // Added to what is allowed: with no table, that is loopback.
            if self.requestors.is_empty() {
                self.requestors = loopback_requestors();
            }
            self.requestors
                .extend(cli.allow.iter().map(|&prefix| Requestor::prefix(prefix)));
        }
        if let Some(duid) = &cli.server_duid {
            self.server_duid = Some(duid.clone());
        }
        if let Some(dir) = &cli.state_dir {
            self.state_dir.clone_from(dir);
        }
        if let Some(log) = &cli.log {
            self.log.clone_from(log);
        }
        if let Some(format) = cli.log_format {
            self.log_format = format;
        }
        if let Some(addr) = cli.metrics_listen {
            self.metrics_listen = Some(addr);
        }
    }

    /// Rejects values lqd cannot run with; `origin` says where they came from.
    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        self.check_values()
            .map_err(|(_, message)| ConfigError::Invalid {
                origin: origin.to_owned(),
                position: None,
                message,
            })
    }

    /// Rejects values lqd cannot run with: the reason, and the key it concerns (`tls.mode`,
    /// `requestor.2` for the second `[[requestor]]` table) so that a file's line can be named.
    fn check_values(&self) -> Result<(), (Option<String>, String)> {
        let invalid = |key: &str, message: String| Err((Some(key.to_owned()), message));
        if self.listen.is_empty() {
            return invalid("listen", "listen needs at least one address".to_owned());
        }
        let counts = [
            ("max_connections", self.max_connections),
            (
                "max_connections_per_requestor",
                self.max_connections_per_requestor,
            ),
            ("max_concurrent_queries", self.max_concurrent_queries),
            ("high_water", self.high_water),
            ("read_budget", self.read_budget),
            ("udp_receive_buffer", self.udp_receive_buffer),
            ("demo.clients", self.demo.clients),
            ("demo.links", usize::from(self.demo.links)),
        ];
        if let Some((key, _)) = counts.iter().find(|(_, n)| *n == 0) {
            return invalid(key, format!("{key} must be at least 1, not 0"));
        }
        let timeouts = [
            ("bulk_data_timeout", self.bulk_data_timeout),
            ("active_send_timeout", self.active_send_timeout),
            ("active_idle_timeout", self.active_idle_timeout),
            ("tls.handshake_timeout", self.tls.handshake_timeout),
        ];
        if let Some((key, _)) = timeouts.iter().find(|(_, t)| t.is_zero()) {
            return invalid(key, format!("{key} must be at least 1 second, not 0"));
        }
        if self.demo.clients > MAX_CLIENTS {
            return invalid(
                "demo.clients",
                format!(
                    "demo.clients is {}, above the demo source's limit of {MAX_CLIENTS}",
                    self.demo.clients
                ),
            );
        }
        for (key, share) in [
            ("demo.pd_percent", self.demo.pd_percent),
            ("demo.relayed_percent", self.demo.relayed_percent),
            ("demo.two_hop_percent", self.demo.two_hop_percent),
        ] {
            if share > 100 {
                return invalid(key, format!("{key} is {share}, above 100"));
            }
        }
        for (key, path) in [
            ("state_dir", &self.state_dir),
            ("duid_file", &self.duid_file),
            ("journal_file", &self.journal_file),
        ] {
            if path.as_os_str().is_empty() {
                return invalid(key, format!("{key} must not be empty"));
            }
        }
        if self.log.trim().is_empty() {
            return invalid("log", "log must not be empty (try \"info\")".to_owned());
        }
        if let Err(e) = log_filter(&self.log) {
            return invalid("log", format!("log filter `{}`: {e}", self.log));
        }
        for (i, a) in self.requestors.iter().enumerate() {
            let key = format!("requestor.{}", i + 1);
            if a.by_certificate() {
                if self.tls.client_ca.is_none() || self.tls.mode == TlsMode::Off {
                    return invalid(
                        &key,
                        format!(
                            "requestor table {} names certificates ({}), which needs TLS with \
                             client certificates: set [tls] mode and client_ca",
                            i + 1,
                            a.certificate.join(", ")
                        ),
                    );
                }
                if a.certificate.iter().any(|n| n.trim().is_empty()) {
                    return invalid(
                        &key,
                        format!("requestor table {} has an empty certificate name", i + 1),
                    );
                }
                if a.max_connections == Some(0) {
                    return invalid(
                        &key,
                        format!(
                            "requestor table {}: max_connections must be at least 1, not 0",
                            i + 1
                        ),
                    );
                }
                continue;
            }
            let Some(prefix) = a.prefix else {
                return invalid(
                    &key,
                    format!("requestor table {} needs a prefix or a certificate", i + 1),
                );
            };
            if a.max_connections.is_some() {
                return invalid(
                    &key,
                    format!(
                        "requestor table {} ({prefix}): max_connections applies to certificate \
                         tables; address tables share max_connections_per_requestor",
                        i + 1
                    ),
                );
            }
            let net = mapped_net(prefix);
            if let Some(b) = self.requestors[..i]
                .iter()
                .filter(|b| !b.by_certificate())
                .find(|b| b.prefix.map(mapped_net) == Some(net))
            {
                return invalid(
                    &key,
                    format!(
                        "requestor prefix {prefix} is listed twice (also as {})",
                        b.prefix.map_or_else(String::new, |p| p.to_string())
                    ),
                );
            }
        }
        if self.tls.mode != TlsMode::Off
            && (self.tls.certificate.is_none() || self.tls.key.is_none())
        {
            return invalid(
                "tls.mode",
                "[tls] mode is on, so certificate and key are needed (PEM files)".to_owned(),
            );
        }
        if self.journal_size < MIN_JOURNAL_SIZE {
            return invalid(
                "journal_size",
                format!(
                    "journal_size is {}, below the minimum of {MIN_JOURNAL_SIZE} octets",
                    self.journal_size
                ),
            );
        }
        if self.journal_size > MAX_JOURNAL_SIZE {
            return invalid(
                "journal_size",
                format!(
                    "journal_size is {}, above the maximum of {MAX_JOURNAL_SIZE} octets (64 GiB)",
                    self.journal_size
                ),
            );
        }
        if let Err(e) = LinkMap::new(&self.links) {
            // The first table that makes the set unusable.
            let bad = (1..=self.links.len())
                .find(|&n| LinkMap::new(&self.links[..n]).is_err())
                .unwrap_or(1);
            return invalid(&format!("link.{bad}"), e.to_string());
        }
        Ok(())
    }

    /// The links lqd serves (D16): the `[[link]]` tables, or the demo source's links when none
    /// are configured and the source is the demo.
    pub fn link_map(&self) -> Result<LinkMap, ConfigError> {
        let defs = match (&self.source, self.links.is_empty()) {
            (Some(SourceSpec::Demo), true) => DemoSource::link_defs(&self.demo.demo_config()),
            _ => self.links.clone(),
        };
        LinkMap::new(&defs).map_err(|e| ConfigError::Invalid {
            origin: "config".to_owned(),
            position: None,
            message: e.to_string(),
        })
    }

    /// Kea's configuration, read for its links and subnets (issue 15): `kea_config`, else
    /// `LQD_KEA_CONFIG`, else `/etc/kea/kea-dhcp6.conf` when it exists, the source is
    /// `kea-csv`, and that configuration's memfile is the followed lease file (an unreadable
    /// default file is then logged and left out). `None` when there is none to read.
    ///
    /// # Errors
    ///
    /// The file cannot be read or is not a Kea DHCPv6 configuration: the error names the file
    /// and the reason.
    pub fn kea_links(&self) -> Result<Option<(PathBuf, KeaLinks)>, ConfigError> {
        let Some((path, explicit)) = kea_config_path(self.kea_config.as_deref()) else {
            return Ok(None);
        };
        let followed = match &self.source {
            Some(SourceSpec::KeaCsv(p)) => Some(p),
            _ if explicit => None,
            _ => return Ok(None),
        };
        let links = match load_kea_links(&path) {
            Ok(l) => l,
            Err(e) if explicit => {
                return Err(ConfigError::Invalid {
                    position: None,
                    origin: format!("Kea's configuration {}", e.file.display()),
                    message: e.reason,
                });
            }
            Err(e) => {
                tracing::warn!("{e}; not used");
                return Ok(None);
            }
        };
        // The default file is Kea's configuration only for the lease file it names.
        if !explicit {
            let kea_file = links
                .lease_file
                .clone()
                .unwrap_or_else(|| PathBuf::from(KEA_LEASE_FILE_DEFAULT));
            let same = |a: &Path, b: &Path| {
                a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
            };
            if let Some(f) = followed.filter(|f| !same(f, &kea_file)) {
                tracing::info!(
                    "Kea's configuration {} is for the lease file {}, not {}: not used (set \
                     kea_config or LQD_KEA_CONFIG to use it)",
                    path.display(),
                    kea_file.display(),
                    f.display()
                );
                return Ok(None);
            }
        }
        Ok(Some((path, links)))
    }

    /// The links lqd serves: the `[[link]]` tables when there are any (they win), else Kea's
    /// links when `kea` has some, else as [`link_map`](Self::link_map) says.
    pub fn link_map_with(&self, kea: Option<&KeaLinks>) -> Result<LinkMap, ConfigError> {
        match kea {
            Some(k) if self.links.is_empty() && !k.links.is_empty() => LinkMap::new(&k.links)
                .map_err(|e| ConfigError::Invalid {
                    position: None,
                    origin: "Kea's configuration".to_owned(),
                    message: e.to_string(),
                }),
            _ => self.link_map(),
        }
    }

    /// Settings that are accepted but unwise, one sentence each, for the log.
    ///
    /// The RFCs say values below their defaults SHOULD NOT be used; D4 accepts them with a
    /// warning.
    #[must_use]
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let timeouts = [
            (
                "bulk_data_timeout",
                "BULK_LQ_DATA_TIMEOUT",
                self.bulk_data_timeout,
                BULK_LQ_DATA_TIMEOUT,
            ),
            (
                "active_send_timeout",
                "ACTIVE_LQ_SEND_TIMEOUT",
                self.active_send_timeout,
                ACTIVE_LQ_SEND_TIMEOUT,
            ),
            (
                "active_idle_timeout",
                "ACTIVE_LQ_IDLE_TIMEOUT",
                self.active_idle_timeout,
                ACTIVE_LQ_IDLE_TIMEOUT,
            ),
        ];
        for (key, name, value, default) in timeouts {
            if value < default {
                out.push(format!(
                    "{key} = {} s is below the RFC default {name} of {} s",
                    value.as_secs(),
                    default.as_secs()
                ));
            }
        }
        if self.max_connections_per_requestor < BULK_LQ_MAX_CONNS {
            out.push(format!(
                "max_connections_per_requestor = {} is below the RFC default BULK_LQ_MAX_CONNS of \
                 {BULK_LQ_MAX_CONNS}",
                self.max_connections_per_requestor
            ));
        }
        if self.max_connections < self.max_connections_per_requestor {
            out.push(format!(
                "max_connections = {} is below max_connections_per_requestor = {}, so one \
                 requestor can take every connection",
                self.max_connections, self.max_connections_per_requestor
            ));
        }
        for p in self.requestors.iter().filter_map(|r| r.prefix) {
            if p != p.trunc() {
                out.push(format!(
                    "requestor prefix {p} has host bits set; it is used as {}",
                    p.trunc()
                ));
            }
        }
        if self.tls.mode != TlsMode::Off && self.tls.client_ca.is_none() {
            out.push(
                "TLS without client_ca: requestors are known by their address only".to_owned(),
            );
        }
        out
    }

    /// Whether a TCP connection from `addr` is let in (D23, D27): by an address table, or,
    /// failing that, because a certificate table may match it after a TLS handshake.
    #[must_use]
    pub fn admit(&self, addr: IpAddr) -> Admission {
        match self.access(addr) {
            Access::Allowed(types) => Admission::Allowed(types),
            Access::Denied
                if self
                    .requestors
                    .iter()
                    .any(|r| r.by_certificate() && r.holds(addr)) =>
            {
                Admission::NeedsCertificate
            }
            Access::Denied => Admission::Denied,
        }
    }

    /// What the names of a requestor's TLS client certificate decide (D27): the first
    /// certificate table, in the file's order, that lists one of them and whose prefix (if
    /// any) holds `addr`.
    #[must_use]
    pub fn identify(&self, addr: IpAddr, names: &[String]) -> Identified {
        let mut tables = self
            .requestors
            .iter()
            .enumerate()
            .filter(|(_, r)| r.by_certificate())
            .peekable();
        if tables.peek().is_none() {
            return Identified::Unchanged;
        }
        for (index, r) in tables {
            if !r.holds(addr) {
                continue;
            }
            if let Some(name) = names.iter().find(|n| r.certificate.contains(n)) {
                return Identified::Table {
                    index,
                    name: name.clone(),
                    query_types: r.query_types,
                    limit: r
                        .max_connections
                        .unwrap_or(self.max_connections_per_requestor),
                };
            }
        }
        Identified::NoMatch
    }

    /// What a requestor at `addr` may do (D23).
    ///
    /// With no `[[requestor]]` tables everyone may ask every type. Otherwise the longest
    /// matching prefix decides, and an address no prefix matches is [`Access::Denied`].
    /// IPv4 prefixes match both IPv4 and IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`).
    #[must_use]
    pub fn access(&self, addr: IpAddr) -> Access {
        if self.requestors.is_empty() {
            // Safe by default (issue 13): with no `[[requestor]]` table, only this machine.
            return if loopback_requestors().iter().any(|r| r.holds(addr)) {
                Access::Allowed(QueryTypes::ALL)
            } else {
                Access::Denied
            };
        }
        let addr = match addr {
            IpAddr::V4(a) => a.to_ipv6_mapped(),
            IpAddr::V6(a) => a,
        };
        self.requestors
            .iter()
            .filter(|r| !r.by_certificate())
            .filter_map(|r| r.prefix.map(|p| (mapped_net(p), r.query_types)))
            .filter(|(net, _)| net.contains(&addr))
            .max_by_key(|(net, _)| net.prefix_len())
            .map_or(Access::Denied, |(_, types)| {
                if types.is_empty() {
                    Access::Denied
                } else {
                    Access::Allowed(types)
                }
            })
    }

    /// Where the generated server DUID is kept: `duid_file` inside `state_dir`, unless
    /// `duid_file` is absolute.
    #[must_use]
    pub fn duid_path(&self) -> PathBuf {
        self.state_dir.join(&self.duid_file)
    }

    /// Where the change journal is: `journal_file` inside `state_dir`, unless absolute.
    #[must_use]
    pub fn journal_path(&self) -> PathBuf {
        self.state_dir.join(&self.journal_file)
    }
}

/// A prefix in IPv6 form, host bits cleared: IPv4 prefixes become IPv4-mapped ones.
/// Who may ask when no `[[requestor]]` table says: loopback, IPv6 and IPv4.
fn loopback_requestors() -> Vec<Requestor> {
    ["::1/128", "127.0.0.0/8"]
        .iter()
        .filter_map(|p| p.parse().ok())
        .map(Requestor::prefix)
        .collect()
}

/// `addr` as IPv6 (IPv4 mapped).
fn mapped(addr: IpAddr) -> Ipv6Addr {
    match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

fn mapped_net(net: IpNet) -> Ipv6Net {
    match net.trunc() {
        IpNet::V6(n) => n,
        IpNet::V4(n) => Ipv6Net::new(n.network().to_ipv6_mapped(), n.prefix_len() + 96)
            .expect("an IPv4 prefix length plus 96 is at most 128"),
    }
}

/// One-based line and column (in characters) of byte offset `at` in `text`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_secs)
}

fn write_seconds<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// The written form of a flush policy, which parses back to the same value.
fn write_flush_policy<S: Serializer>(p: &FlushPolicy, s: S) -> Result<S::Ok, S::Error> {
    match p {
        FlushPolicy::Os => s.serialize_str("os"),
        FlushPolicy::Always => s.serialize_str("always"),
        FlushPolicy::Interval(d) if d.subsec_nanos() == 0 => {
            s.collect_str(&format_args!("{}s", d.as_secs()))
        }
        FlushPolicy::Interval(d) => s.collect_str(&format_args!("{}ms", d.as_millis())),
    }
}

fn flush_policy<'de, D: Deserializer<'de>>(d: D) -> Result<FlushPolicy, D::Error> {
    let s = String::deserialize(d)?;
    let interval = |digits: &str, unit: fn(u64) -> Duration| {
        digits.parse::<u64>().ok().filter(|n| *n > 0).map(unit)
    };
    let policy = match s.as_str() {
        "os" => Some(FlushPolicy::Os),
        "always" => Some(FlushPolicy::Always),
        other => other
            .strip_suffix("ms")
            .and_then(|n| interval(n, Duration::from_millis))
            .or_else(|| {
                other
                    .strip_suffix('s')
                    .and_then(|n| interval(n, Duration::from_secs))
            })
            .map(FlushPolicy::Interval),
    };
    policy.ok_or_else(|| {
        de::Error::custom(format!(
            "bad journal_flush `{s}`: expected \"os\", \"always\" or an interval such as \
             \"100ms\" or \"1s\""
        ))
    })
}

/// Where lease changes come from: the `source` setting.
///
/// Written `demo`, `kea-csv:PATH`, `kea-pgsql:URI`, `jsonl:PATH`, `jsonl:-` (standard input) or
/// `jsonl:unix:PATH`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum SourceSpec {
    /// `demo`: built-in generated churn, shaped by [`DemoSettings`].
    #[default]
    Demo,
    /// `kea-csv:PATH`: a Kea memfile lease file (CSV), followed as it grows.
    KeaCsv(PathBuf),
    /// `jsonl:PATH`: one JSON change per line, from a file.
    Jsonl(PathBuf),
    /// `jsonl:-`: one JSON change per line, from standard input.
    JsonlStdin,
    /// `jsonl:unix:PATH`: one JSON change per line, from a Unix stream socket.
    JsonlUnix(PathBuf),
    /// `kea-pgsql:URI`: Kea's PostgreSQL lease database, followed through logical replication
    /// (the URI as [`PgTarget`](crate::feed::PgTarget) reads it; never with a password).
    KeaPgsql(String),
}

impl FromStr for SourceSpec {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        let path = |rest: &str, form: &str| {
            if rest.is_empty() {
                Err(InvalidValue(format!("source `{s}` needs a path: {form}")))
            } else {
                Ok(PathBuf::from(rest))
            }
        };
        match s.split_once(':') {
            None if s == "demo" => Ok(Self::Demo),
            Some(("demo", _)) => Err(InvalidValue(format!(
                "source `{s}`: demo takes no argument; set its [demo] table instead"
            ))),
            Some(("kea-csv", rest)) => path(rest, "kea-csv:PATH").map(Self::KeaCsv),
            Some(("kea-pgsql", uri)) => crate::feed::PgTarget::parse(uri)
                .map(|_| Self::KeaPgsql(uri.to_owned()))
                .map_err(|e| InvalidValue(format!("source kea-pgsql: {e}"))),
            Some(("jsonl", "-")) => Ok(Self::JsonlStdin),
            Some(("jsonl", "unix")) => Err(InvalidValue(format!(
                "source `{s}` needs a socket path: jsonl:unix:PATH"
            ))),
            Some(("jsonl", rest)) => match rest.strip_prefix("unix:") {
                Some(socket) => path(socket, "jsonl:unix:PATH").map(Self::JsonlUnix),
                None => path(rest, "jsonl:PATH").map(Self::Jsonl),
            },
            _ => Err(InvalidValue(format!(
                "unknown source `{s}`: expected demo, kea-csv:PATH, kea-pgsql:URI, jsonl:PATH, \
                 jsonl:- (standard input) or jsonl:unix:PATH"
            ))),
        }
    }
}

/// The written form, as in the file.
impl Serialize for SourceSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl TryFrom<String> for SourceSpec {
    type Error = InvalidValue;

    fn try_from(s: String) -> Result<Self, InvalidValue> {
        s.parse()
    }
}

/// The written form, which parses back to the same value.
impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Demo => f.write_str("demo"),
            Self::KeaCsv(p) => write!(f, "kea-csv:{}", p.display()),
            Self::Jsonl(p) => write!(f, "jsonl:{}", p.display()),
            Self::JsonlStdin => f.write_str("jsonl:-"),
            Self::JsonlUnix(p) => write!(f, "jsonl:unix:{}", p.display()),
            Self::KeaPgsql(uri) => write!(f, "kea-pgsql:{uri}"),
        }
    }
}

/// A configured server DUID: 3 to 130 octets (a two-octet type and up to 128 more, RFC 8415
/// §11.1).
///
/// Written as hex, plain (`000100012a3b4c5d...`) or colon-separated (`00:01:00:01:...`), one or
/// two digits per colon-separated octet.
#[derive(Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct ServerDuid(Vec<u8>);

impl ServerDuid {
    /// Checks the length of a DUID given as bytes.
    pub fn new(bytes: Vec<u8>) -> Result<Self, InvalidValue> {
        if (3..=130).contains(&bytes.len()) {
            Ok(Self(bytes))
        } else {
            Err(InvalidValue(format!(
                "a DUID is 3 to 130 octets (a 2-octet type and up to 128 more), not {}",
                bytes.len()
            )))
        }
    }

    /// The DUID's octets, type first.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The DUID as the codec's view.
    #[must_use]
    pub fn as_duid(&self) -> Duid<'_> {
        Duid(&self.0)
    }
}

impl FromStr for ServerDuid {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        let bad = |why: String| InvalidValue(format!("bad server DUID `{s}`: {why}"));
        let bytes = if s.contains(':') {
            s.split(':')
                .map(|octet| {
                    let hex = (1..=2).contains(&octet.len())
                        && octet.bytes().all(|b| b.is_ascii_hexdigit());
                    u8::from_str_radix(octet, 16)
                        .ok()
                        .filter(|_| hex)
                        .ok_or_else(|| bad(format!("`{octet}` is not a hex octet")))
                })
                .collect::<Result<Vec<u8>, _>>()?
        } else {
            hex::decode(s).map_err(|e| bad(e.to_string()))?
        };
        Self::new(bytes).map_err(|e| bad(e.0))
    }
}

/// Colon-separated hex, as in the file.
impl Serialize for ServerDuid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl TryFrom<String> for ServerDuid {
    type Error = InvalidValue;

    fn try_from(s: String) -> Result<Self, InvalidValue> {
        s.parse()
    }
}

/// Colon-separated hex, as DHCP servers print DUIDs.
impl fmt::Display for ServerDuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_duid().fmt(f)
    }
}

impl fmt::Debug for ServerDuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerDuid({self})")
    }
}

/// How log lines are written: the `log_format` setting and `--log-format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub enum LogFormat {
    /// `text`: one line per event for people: time, level, target, message, then the fields
    /// as `key=value`.
    #[default]
    Text,
    /// `json`: one JSON object per line for log shippers, with the same content as `text`:
    /// `timestamp`, `level`, `target`, `message`, and each field (such as `peer`) as a key.
    Json,
}

impl FromStr for LogFormat {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(InvalidValue(format!(
                "unknown log format `{other}`: expected \"text\" or \"json\""
            ))),
        }
    }
}

impl TryFrom<String> for LogFormat {
    type Error = InvalidValue;

    fn try_from(s: String) -> Result<Self, InvalidValue> {
        s.parse()
    }
}

/// The written form, as in the file.
impl Serialize for LogFormat {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The written form, which parses back to the same value.
impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// A value that does not parse, with a one-line reason naming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidValue(pub String);

impl fmt::Display for InvalidValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for InvalidValue {}

/// One `[[requestor]]` table: who may ask (a prefix requestors connect from, or names their
/// TLS client certificate carries, or both), and what they may ask (D27).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Requestor {
    /// `prefix`: CIDR (`2001:db8::/32`, `192.0.2.0/24`, `::ffff:192.0.2.0/120`) or a single
    /// address. IPv4 and IPv4-mapped prefixes are the same thing here. Required unless
    /// `certificate` is given; with it, the address must match too.
    #[serde(default, deserialize_with = "opt_prefix")]
    pub prefix: Option<IpNet>,
    /// `certificate`: names of a TLS client certificate (a SAN DNS name, a SAN URI, or the
    /// subject CN), any of which matches; needs `[tls] client_ca`. Such a table is chosen
    /// after the handshake, by the certificate, and only over TLS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificate: Vec<String>,
    /// `query_types`: the types allowed (names or numbers 1–5); default all. An empty list
    /// denies the prefix outright, which carves it out of a shorter allowed one.
    #[serde(default = "all_types")]
    pub query_types: QueryTypes,
    /// `max_connections`: for a `certificate` table, the connections its requestors may hold
    /// at once; default `max_connections_per_requestor`.
    #[serde(default)]
    pub max_connections: Option<usize>,
}

impl Requestor {
    /// A table allowing every query type from `prefix`.
    #[must_use]
    pub fn prefix(prefix: IpNet) -> Self {
        Self {
            prefix: Some(prefix),
            certificate: Vec::new(),
            query_types: QueryTypes::ALL,
            max_connections: None,
        }
    }

    /// True for a table matched by a client certificate's names.
    #[must_use]
    pub fn by_certificate(&self) -> bool {
        !self.certificate.is_empty()
    }

    /// Whether this table's prefix (if it has one) holds `addr`.
    fn holds(&self, addr: IpAddr) -> bool {
        self.prefix
            .is_none_or(|p| mapped_net(p).contains(&mapped(addr)))
    }
}

/// How lqd offers TLS on its TCP connections (RFC 7653 STARTTLS, D25).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// STARTTLS is answered with TLSConnectionRefused.
    #[default]
    Off,
    /// A requestor may upgrade its connection with STARTTLS, or stay in plain text.
    Offer,
    /// Every query must come over TLS: one on a plain connection gets NotAllowed, then the
    /// connection is closed.
    Require,
}

/// The `[tls]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// `mode`: `"off"` (default), `"offer"` or `"require"`.
    pub mode: TlsMode,
    /// `certificate`: the server's certificate chain, PEM, leaf first. Read again on SIGHUP.
    pub certificate: Option<PathBuf>,
    /// `key`: the certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1). Read again on
    /// SIGHUP.
    pub key: Option<PathBuf>,
    /// `client_ca`: CA certificates, PEM, that sign requestors' certificates. When set, every
    /// TLS requestor must present a certificate it signed (mutual TLS). Read again on SIGHUP.
    pub client_ca: Option<PathBuf>,
    /// `handshake_timeout`: seconds from STARTTLS to a finished handshake; default 10.
    #[serde(deserialize_with = "seconds", serialize_with = "write_seconds")]
    pub handshake_timeout: Duration,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            mode: TlsMode::Off,
            certificate: None,
            key: None,
            client_ca: None,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// What a requestor's TLS client certificate decided (D27).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identified {
    /// No `[[requestor]]` table names certificates: the address's policy holds.
    Unchanged,
    /// The `[[requestor]]` table at this index matched, by this name.
    Table {
        /// The table's place in the configuration.
        index: usize,
        /// The certificate name that matched.
        name: String,
        /// Its query types.
        query_types: QueryTypes,
        /// Connections its requestors may hold at once.
        limit: usize,
    },
    /// Certificate tables exist and none matches: refuse the connection.
    NoMatch,
}

fn all_types() -> QueryTypes {
    QueryTypes::ALL
}

fn opt_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpNet>, D::Error> {
    prefix(d).map(Some)
}

fn prefix<'de, D: Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
    let s = String::deserialize(d)?;
    let net = if s.contains('/') {
        s.parse().ok()
    } else {
        s.parse::<IpAddr>().ok().map(IpNet::from)
    };
    net.ok_or_else(|| {
        de::Error::custom(format!(
            "bad requestor prefix `{s}`: expected a CIDR prefix such as 2001:db8::/32 or \
             192.0.2.0/24, or an address"
        ))
    })
}

/// Whether [`Config::admit`] lets a TCP connection in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Not a permitted requestor: close before reading.
    Denied,
    /// Permitted by its address, for these query types (a certificate may still decide).
    Allowed(QueryTypes),
    /// Only a certificate table may match it: TLS is required, and the certificate decides.
    NeedsCertificate,
}

/// What [`Config::access`] decided for a requestor address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Not a permitted requestor: close its TCP connection before reading, drop its UDP
    /// queries silently (D23).
    Denied,
    /// A permitted requestor, allowed these query types; others get NotAllowed.
    Allowed(QueryTypes),
}

impl Access {
    /// Whether the requestor may connect at all.
    #[must_use]
    pub const fn is_allowed(self) -> bool {
        matches!(self, Self::Allowed(_))
    }

    /// Whether the requestor may ask a query of type `qt`.
    #[must_use]
    pub fn allows(self, qt: QueryType) -> bool {
        matches!(self, Self::Allowed(types) if types.allows(qt))
    }
}

/// The names of query types 1 to 5, as written in `query_types`.
const TYPE_NAMES: [&str; 5] = [
    "address",
    "client-id",
    "relay-id",
    "link-address",
    "remote-id",
];

/// A set of the five query types (RFC 5007 and RFC 5460).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct QueryTypes(u8);

impl QueryTypes {
    /// No query type.
    pub const NONE: Self = Self(0);
    /// All five query types.
    pub const ALL: Self = Self(0b1_1111);

    /// The bit of query type `value`, if it is one of the five.
    const fn bit(value: u8) -> Option<u8> {
        match value {
            1..=5 => Some(1 << (value - 1)),
            _ => None,
        }
    }

    /// Whether `qt` is in the set. Unknown types never are: answer them UnknownQueryType
    /// before asking.
    #[must_use]
    pub fn allows(self, qt: QueryType) -> bool {
        Self::bit(qt.value()).is_some_and(|b| self.0 & b != 0)
    }

    /// The set with `qt` added; unknown types are not added.
    #[must_use]
    pub fn with(self, qt: QueryType) -> Self {
        Self(self.0 | Self::bit(qt.value()).unwrap_or(0))
    }

    /// Whether the set is empty.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The types in the set, by code.
    pub fn iter(self) -> impl Iterator<Item = QueryType> {
        (1..=5u8)
            .map(QueryType::from)
            .filter(move |&qt| self.allows(qt))
    }
}

impl FromIterator<QueryType> for QueryTypes {
    fn from_iter<I: IntoIterator<Item = QueryType>>(iter: I) -> Self {
        iter.into_iter().fold(Self::NONE, Self::with)
    }
}

/// The configuration names, comma-separated (`address, client-id`), or `none`.
impl fmt::Display for QueryTypes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        for (i, qt) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(TYPE_NAMES[usize::from(qt.value() - 1)])?;
        }
        Ok(())
    }
}

impl fmt::Debug for QueryTypes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueryTypes({self})")
    }
}

/// The list of names, as in the file.
impl Serialize for QueryTypes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for qt in self.iter() {
            seq.serialize_element(TYPE_NAMES[usize::from(qt.value() - 1)])?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for QueryTypes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(TypesVisitor)
    }
}

struct TypesVisitor;

const TYPE_EXPECTED: &str =
    "address, client-id, relay-id, link-address, remote-id or a number from 1 to 5";

impl<'de> Visitor<'de> for TypesVisitor {
    type Value = QueryTypes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a list of query types ({TYPE_EXPECTED})")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<QueryTypes, A::Error> {
        let mut set = QueryTypes::NONE;
        while let Some(TypeEntry(qt)) = seq.next_element()? {
            set = set.with(qt);
        }
        Ok(set)
    }
}

/// One element of `query_types`.
struct TypeEntry(QueryType);

impl<'de> Deserialize<'de> for TypeEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(EntryVisitor)
    }
}

struct EntryVisitor;

impl Visitor<'_> for EntryVisitor {
    type Value = TypeEntry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a query type ({TYPE_EXPECTED})")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<TypeEntry, E> {
        let code = TYPE_NAMES.iter().position(|&name| name == s);
        code.map(|i| TypeEntry(QueryType::from(i as u8 + 1)))
            .ok_or_else(|| {
                E::custom(format!(
                    "unknown query type `{s}`: expected {TYPE_EXPECTED}"
                ))
            })
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<TypeEntry, E> {
        match u8::try_from(n) {
            Ok(code @ 1..=5) => Ok(TypeEntry(QueryType::from(code))),
            _ => Err(E::custom(format!(
                "unknown query type {n}: expected {TYPE_EXPECTED}"
            ))),
        }
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<TypeEntry, E> {
        match u64::try_from(n) {
            Ok(n) => self.visit_u64(n),
            Err(_) => Err(E::custom(format!(
                "unknown query type {n}: expected {TYPE_EXPECTED}"
            ))),
        }
    }
}

/// The `[demo]` table: the demo source's population and churn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoSettings {
    /// `clients`: clients in the population; default 10000.
    pub clients: usize,
    /// `links`: links they are spread over; default 16.
    pub links: u16,
    /// `changes_per_sec`: lease changes generated per second, 0 for as fast as lqd takes
    /// them; default 100.
    pub changes_per_sec: u32,
    /// `seed`: the generator's seed, so runs repeat; default 1.
    pub seed: u64,
    /// `churn_limit`: stop after this many changes following the initial population; default
    /// none (churn forever). For tests and benchmarks that need the bindings to settle.
    pub churn_limit: Option<u64>,
    /// `pd_percent`: the share of clients that also hold a delegated prefix, 0 to 100;
    /// default 30.
    pub pd_percent: u8,
    /// `relayed_percent`: the share of links behind a relay agent (relay-id, remote-id and
    /// relay data), 0 to 100; default 75.
    pub relayed_percent: u8,
    /// `two_hop_percent`: the share of relayed links whose relay is behind an aggregation
    /// relay too, 0 to 100; default 25.
    pub two_hop_percent: u8,
}

impl Default for DemoSettings {
    fn default() -> Self {
        Self {
            clients: 10_000,
            links: 16,
            changes_per_sec: 100,
            seed: 1,
            churn_limit: None,
            pd_percent: 30,
            relayed_percent: 75,
            two_hop_percent: 25,
        }
    }
}

impl DemoSettings {
    /// The demo source's configuration: these settings, the rest its defaults.
    #[must_use]
    pub fn demo_config(&self) -> DemoConfig {
        DemoConfig {
            clients: self.clients,
            links: self.links,
            changes_per_sec: self.changes_per_sec,
            seed: self.seed,
            churn_limit: self.churn_limit,
            pd_share: f64::from(self.pd_percent.min(100)) / 100.0,
            relay_share: f64::from(self.relayed_percent.min(100)) / 100.0,
            two_hop_share: f64::from(self.two_hop_percent.min(100)) / 100.0,
            ..DemoConfig::default()
        }
    }
}

/// Why the configuration could not be loaded; each displays as one line naming its origin.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        error: io::Error,
    },
    /// The file is not valid TOML, or a key is unknown or has a value of the wrong form.
    Syntax {
        /// Where the text came from (`config file lqd.toml`).
        origin: String,
        /// One-based line and column of the problem, when known.
        position: Option<(usize, usize)>,
        /// What is wrong, naming the key or value.
        message: String,
    },
    /// Every value has the right form, but one cannot be used (a zero limit, say).
    Invalid {
        /// Where the value came from: the file, or `command line`.
        origin: String,
        /// One-based line and column of the key or table in the file, when known.
        position: Option<(usize, usize)>,
        /// What is wrong, naming the setting.
        message: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, error } => {
                write!(f, "cannot read config file {}: {error}", path.display())
            }
            Self::Syntax {
                origin,
                position: Some((line, column)),
                message,
            }
            | Self::Invalid {
                origin,
                position: Some((line, column)),
                message,
            } => write!(f, "{origin}, line {line}, column {column}: {message}"),
            Self::Syntax {
                origin, message, ..
            }
            | Self::Invalid {
                origin, message, ..
            } => {
                write!(f, "{origin}: {message}")
            }
        }
    }
}

impl Error for ConfigError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Read { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// lqd's command line. Each flag replaces the setting of the same name from `--config`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Parser)]
#[command(
    name = "lqd",
    version,
    about = "DHCPv6 leasequery server: UDP Leasequery (RFC 5007), Bulk Leasequery (RFC 5460) \
             and Active Leasequery (RFC 7653) over a live mirror of a lease store",
    long_about = "lqd is a DHCPv6 leasequery server. It answers from a live in-memory mirror \
                  of a DHCP server's leases, on UDP and TCP port 547: UDP Leasequery (RFC 5007), \
                  Bulk Leasequery (RFC 5460) over TCP, with the RFC 7653 time options, and \
                  Active Leasequery (RFC 7653), a live stream of binding changes with catch-up \
                  from a change journal. Settings come from built-in defaults (the RFC values), \
                  then the --config file, then these flags; some exist only in the file (the \
                  journal, the Active timeouts, links, requestors, TLS, the demo).",
    after_help = "Examples:\n  lqd --listen [::1]:5470 --source demo\n  \
                  lqd --config /etc/lqd/lqd.toml --log lqd=debug"
)]
pub struct Cli {
    /// TOML configuration file; these flags override its settings [default: none, built-in
    /// defaults]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address and port to serve on, TCP and UDP; repeatable (default `[::]:547`).
    #[arg(
        long,
        value_name = "ADDR:PORT",
        help = "Address and port to serve on, TCP and UDP; repeat for several. Replaces the \
                file's `listen` list [default: [::]:547]"
    )]
    pub listen: Vec<SocketAddr>,
    /// Where lease changes come from: kea-csv:PATH, kea-pgsql:URI (no password in it:
    /// password_file=PATH or LQD_PGPASSWORD), jsonl:PATH, jsonl:- (stdin), jsonl:unix:PATH, or
    /// demo (made-up leases, to try lqd) [default: none: lqd will not start without one]
    #[arg(long, value_name = "SPEC")]
    pub source: Option<SourceSpec>,
    /// Server DUID in hex, plain or colon-separated [default: generated once and kept in
    /// STATE_DIR/lqd-server-duid]
    #[arg(long, value_name = "HEX")]
    pub server_duid: Option<ServerDuid>,
    /// Directory for lqd's state, created if missing: the change journal (journal_size, 128
    /// MiB by default), the snapshot of the mirror a clean stop writes beside it, the generated
    /// server DUID, and the copies a damaged or resized journal leaves [default: $STATE_DIRECTORY (systemd's StateDirectory=), /var/lib/lqd as root,
    /// else $XDG_STATE_HOME/lqd or ~/.local/state/lqd]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Log filter in tracing's EnvFilter syntax, e.g. "debug" or "lqd=debug,warn" [default:
    /// info]
    #[arg(long, value_name = "LEVEL")]
    pub log: Option<String>,
    /// How log lines are written: text (for people) or json (one object a line, for log
    /// shippers) [default: text]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Serve GET /metrics (Prometheus) and GET /requestors (JSON) on this address, e.g.
    /// "[::1]:9547" [default: off]
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// TCP connections open at once, over all requestors [default: 10000]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// TCP connections open at once from one requestor address, BULK_LQ_MAX_CONNS [default: 10]
    #[arg(long, value_name = "N")]
    pub max_connections_per_requestor: Option<usize>,
    /// Queries running at once on one connection [default: 4]
    #[arg(long, value_name = "N")]
    pub max_concurrent_queries: Option<usize>,
    /// Let requestors in this prefix ask every query type; repeatable. Added to the
    /// `[[requestor]]` tables, or to loopback when there are none [default: with no
    /// `[[requestor]]` table, loopback only]
    #[arg(long, value_name = "PREFIX")]
    pub allow: Vec<IpNet>,
    /// Check the configuration instead of serving: FILE (default: the --config file) with the
    /// other flags applied, printing every setting lqd would run with and where it came from
    /// (default, file, flag, env). Exits 0 when lqd would start with them, 2 with the file, line
    /// and reason when not
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    pub check_config: Option<Option<PathBuf>>,
    /// A maintenance command instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// lqd's maintenance commands, run while lqd is stopped.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// The change journal: check it, or give it another size.
    Journal {
        /// What to do.
        #[command(subcommand)]
        action: JournalAction,
    },
}

/// `lqd journal ...`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum JournalAction {
    /// Reads the journal without changing it: records, time span, how far catch-up reaches
    /// back, and damage. Exits 0 when it is intact, 1 when damaged, 2 when unreadable.
    Check {
        /// The journal file [default: the configured one, STATE_DIR/lqd-journal]
        path: Option<PathBuf>,
    },
    /// Writes the journal anew at SIZE octets (suffixes KiB, MiB, GiB), keeping the newest
    /// intact records that fit; the old file is kept beside it. Also the way back for a
    /// journal cut short. lqd must be stopped.
    Resize {
        /// The new size, such as 268435456 or 256MiB.
        #[arg(value_parser = parse_size)]
        size: u64,
        /// The journal file [default: the configured one, STATE_DIR/lqd-journal]
        path: Option<PathBuf>,
    },
}

/// A size in octets: a number, or one with a binary suffix (KiB, MiB, GiB; K, M, G alike).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}`: expected a size such as 268435456 or 256MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "`{s}`: unknown unit `{other}` (use KiB, MiB or GiB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}`: too large"))
}

impl crate::engine::session::Policy for QueryTypes {
    fn allows(&self, query_type: QueryType) -> bool {
        Self::allows(*self, query_type)
    }
}
