//! `lqd --check-config`: the configuration lqd would run with, each setting with where it came
//! from, and errors that name the file, the line and the nearest known key.
//!
//! The effective settings are printed as TOML (the same keys and tables as the file, so the
//! output can serve as a file of its own), each line followed by a comment saying where its value
//! came from: `default`, `file, line N`, `flag --NAME`, or `env NAME`.

use core::fmt;
use std::ops::Range;
use std::path::PathBuf;

use toml_edit::{ImDocument, Item, TableLike};

use super::{Cli, Config, ConfigError, SourceSpec, line_column, loopback_requestors};
use crate::feed::kea::{KEA_CONFIG_ENV, kea_config_path};

/// Where an effective setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Built in: the RFC value or a project decision.
    Default,
    /// The configuration file, at this one-based line when known.
    File(Option<usize>),
    /// A command-line flag, such as `--listen`.
    Flag(&'static str),
    /// An environment variable.
    Env(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::File(Some(line)) => write!(f, "file, line {line}"),
            Self::File(None) => f.write_str("file"),
            Self::Flag(flag) => write!(f, "flag {flag}"),
            Self::Env(var) => write!(f, "env {var}"),
        }
    }
}

/// What `lqd --check-config` found: a configuration lqd can start with, and its settings as
/// printed.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The effective configuration: defaults, the file, the flags.
    pub config: Config,
    /// The file checked, if any.
    pub file: Option<PathBuf>,
    /// Every setting, as TOML with its origin in a comment.
    pub settings: String,
}

impl Checked {
    /// Loads and checks the configuration `cli` names (`--check-config FILE`, else `--config
    /// FILE`, else none) with the other flags applied over it, as lqd would at start.
    pub fn load(cli: &Cli) -> Result<Self, ConfigError> {
        let file = match (cli.check_config.clone().flatten(), &cli.config) {
            (Some(a), Some(b)) if a != *b => {
                return Err(ConfigError::Invalid {
                    origin: "command line".to_owned(),
                    position: None,
                    message: format!(
                        "--check-config {} and --config {} name two files: give one",
                        a.display(),
                        b.display()
                    ),
                });
            }
            (Some(a), _) => Some(a),
            (None, b) => b.clone(),
        };
        let text = match &file {
            Some(path) => std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
                path: path.clone(),
                error,
            })?,
            None => String::new(),
        };
        let origin = file.as_deref().map_or_else(
            || "config".to_owned(),
            |p| format!("config file {}", p.display()),
        );
        let mut config = Config::parse(&text, origin)?;
        let from_file = config.requestors.len();
        config.apply(cli);
        config.validate("command line")?;
        let doc = ImDocument::parse(text.as_str()).ok();
        let origins = Origins {
            cli,
            text: &text,
            doc: doc.as_ref().map(|d| d.as_table() as &dyn TableLike),
            from_file,
        };
        let settings = render(&config, &origins)?;
        Ok(Self {
            config,
            file,
            settings,
        })
    }
}

impl fmt::Display for Checked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(p) => writeln!(
                f,
                "# {}: the settings lqd would run with, each with where it came from:",
                p.display()
            )?,
            None => writeln!(
                f,
                "# no configuration file: the settings lqd would run with, each with where it \
                 came from:"
            )?,
        }
        f.write_str(&self.settings)
    }
}

/// Column at which the origin comments start, when the setting is shorter.
const COMMENT_COLUMN: usize = 48;

/// The effective settings as TOML, each line with its origin.
fn render(config: &Config, origins: &Origins<'_>) -> Result<String, ConfigError> {
    let toml = toml::to_string(config).map_err(|e| ConfigError::Invalid {
        origin: "configuration".to_owned(),
        position: None,
        message: format!("cannot print the settings: {e}"),
    })?;
    let mut out = String::new();
    let mut table: Option<String> = None;
    let mut index: Option<usize> = None;
    let mut counts: Vec<(String, usize)> = Vec::new();
    for line in toml.lines() {
        let trimmed = line.trim();
        let origin = if let Some(name) = trimmed
            .strip_prefix("[[")
            .and_then(|r| r.strip_suffix("]]"))
        {
            let n = match counts.iter_mut().find(|(t, _)| t == name) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    counts.push((name.to_owned(), 0));
                    0
                }
            };
            table = Some(name.to_owned());
            index = Some(n);
            Some(origins.of_table(name, Some(n)))
        } else if let Some(name) = trimmed.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            table = Some(name.to_owned());
            index = None;
            Some(origins.of_table(name, None))
        } else if let Some((key, _)) = trimmed.split_once(" = ") {
            Some(origins.of_key(table.as_deref(), index, key.trim()))
        } else {
            None
        };
        if table.is_none() && trimmed.starts_with('[') {
            out.push('\n');
        }
        match origin {
            Some(o) => {
                let pad = COMMENT_COLUMN.saturating_sub(line.chars().count()).max(1);
                out.push_str(&format!("{line}{:pad$}# {o}\n", ""));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    let mut notes = Vec::new();
    let unset = |key: &str| origins.of_key(None, None, key);
    if config.source.is_none() {
        notes.push(format!(
            "# source: not set; lqd refuses to start without one    # {}",
            unset("source")
        ));
    }
    if config.server_duid.is_none() {
        notes.push(format!(
            "# server_duid: not set; generated once and kept in {}    # {}",
            config.duid_path().display(),
            unset("server_duid")
        ));
    }
    if config.metrics_listen.is_none() {
        notes.push(format!(
            "# metrics_listen: not set; no metrics served    # {}",
            unset("metrics_listen")
        ));
    }
    if config.requestors.is_empty() {
        notes.push(
            "# requestor: no table; only loopback (::1, 127.0.0.0/8) may ask    # default"
                .to_owned(),
        );
    }
    if config.links.is_empty() && config.source == Some(SourceSpec::Demo) {
        notes.push(format!(
            "# link: no table; the demo source's {} links are served    # default",
            config.demo.links
        ));
    }
    if config.kea_config.is_none() {
        // Where Kea's configuration is looked for without `kea_config` (D30).
        if let Some((path, explicit)) = kea_config_path(None) {
            if explicit || matches!(config.source, Some(SourceSpec::KeaCsv(_))) {
                let origin = if explicit {
                    Origin::Env(KEA_CONFIG_ENV)
                } else {
                    Origin::Default
                };
                notes.push(format!(
                    "# kea_config: not set; Kea's configuration {} is read for links and subnet \
                     ids    # {origin}",
                    path.display()
                ));
            }
        }
    }
    for w in config.warnings() {
        notes.push(format!("# warning: {w}"));
    }
    if !notes.is_empty() {
        // After the top-level keys, before the first table.
        let at = out.find("\n\n[").map_or(out.len(), |i| i + 1);
        let block: String = notes.iter().map(|n| format!("{n}\n")).collect();
        out.insert_str(at, &block);
    }
    Ok(out)
}

/// What decides each setting's origin.
struct Origins<'a> {
    cli: &'a Cli,
    text: &'a str,
    /// The file's top-level table, with spans.
    doc: Option<&'a dyn TableLike>,
    /// `[[requestor]]` tables from the file; those after them came with `--allow`.
    from_file: usize,
}

impl Origins<'_> {
    fn line(&self, span: Option<Range<usize>>) -> Option<usize> {
        span.map(|s| line_column(self.text, s.start).0)
    }

    /// The flag that set top-level `key`, if one did.
    fn flag(&self, key: &str) -> Option<&'static str> {
        let c = self.cli;
        match key {
            "listen" => (!c.listen.is_empty()).then_some("--listen"),
            "source" => c.source.as_ref().map(|_| "--source"),
            "server_duid" => c.server_duid.as_ref().map(|_| "--server-duid"),
            "state_dir" => c.state_dir.as_ref().map(|_| "--state-dir"),
            "log" => c.log.as_ref().map(|_| "--log"),
            "log_format" => c.log_format.map(|_| "--log-format"),
            "metrics_listen" => c.metrics_listen.map(|_| "--metrics-listen"),
            "max_connections" => c.max_connections.map(|_| "--max-connections"),
            "max_connections_per_requestor" => c
                .max_connections_per_requestor
                .map(|_| "--max-connections-per-requestor"),
            "max_concurrent_queries" => {
                c.max_concurrent_queries.map(|_| "--max-concurrent-queries")
            }
            _ => None,
        }
    }

    /// The file's table `name` (the `index`th of an array of tables), if it has one.
    fn file_table(&self, name: &str, index: Option<usize>) -> Option<(&dyn TableLike, Origin)> {
        let item = self.doc?.get(name)?;
        match (item, index) {
            (Item::ArrayOfTables(a), Some(i)) => {
                let t = a.get(i)?;
                Some((t as &dyn TableLike, Origin::File(self.line(t.span()))))
            }
            (Item::Table(t), None) => {
                Some((t as &dyn TableLike, Origin::File(self.line(t.span()))))
            }
            (Item::Value(v), None) => {
                let t = v.as_inline_table()?;
                Some((t as &dyn TableLike, Origin::File(self.line(v.span()))))
            }
            (Item::Value(v), Some(i)) => {
                let t = v.as_array()?.get(i)?.as_inline_table()?;
                Some((t as &dyn TableLike, Origin::File(self.line(t.span()))))
            }
            _ => None,
        }
    }

    /// The origin of table `name` as a whole (`index` for an array of tables).
    fn of_table(&self, name: &str, index: Option<usize>) -> Origin {
        if name == "requestor" && index.is_some_and(|i| i >= self.from_file) {
            // Added by --allow: to loopback when the file has no table, else to the file's.
            let i = index.unwrap_or(0);
            return if self.from_file == 0 && i < loopback_requestors().len() {
                Origin::Default
            } else {
                Origin::Flag("--allow")
            };
        }
        self.file_table(name, index)
            .map_or(Origin::Default, |(_, origin)| origin)
    }

    /// The origin of `key` in `table` (`None`: the top level).
    fn of_key(&self, table: Option<&str>, index: Option<usize>, key: &str) -> Origin {
        let Some(name) = table else {
            if let Some(flag) = self.flag(key) {
                return Origin::Flag(flag);
            }
            return match self.doc.and_then(|d| d.get_key_value(key)) {
                Some((k, _)) => Origin::File(self.line(k.span())),
                None => Origin::Default,
            };
        };
        if name == "requestor" && index.is_some_and(|i| i >= self.from_file) {
            return self.of_table(name, index);
        }
        match self.file_table(name, index) {
            Some((t, _)) => match t.get_key_value(key) {
                Some((k, _)) => Origin::File(self.line(k.span())),
                None => Origin::Default,
            },
            None => Origin::Default,
        }
    }
}

/// Adds to serde's "unknown field" message the known key nearest to the unknown one, when one
/// is near: `unknown field `jurnal_size`, did you mean `journal_size`?`. Other messages are
/// returned as they are.
pub(super) fn suggest(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_owned();
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return message.to_owned();
    };
    // serde lists the fields as `a`, `a` or `b`, or one of `a`, `b`, `c`.
    let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    match nearest(unknown, &known) {
        Some(best) => format!("unknown field `{unknown}`, did you mean `{best}`?"),
        None => message.to_owned(),
    }
}

/// The known key nearest to `unknown` by edit distance, if near enough to be a typo: at most
/// a third of its length apart (at least one edit), underscores and hyphens alike.
#[must_use]
pub fn nearest<'k>(unknown: &str, known: &[&'k str]) -> Option<&'k str> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let u = norm(unknown);
    let limit = (u.chars().count() / 3).max(1);
    known
        .iter()
        .map(|k| (strsim::levenshtein(&u, &norm(k)), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// One-based line and column in `text` of the setting `key` names: `max_connections`,
/// `tls.mode`, `requestor.2` (the second `[[requestor]]` table); the table's header when the
/// key itself is not in the file (a default that another value makes unusable).
pub(super) fn locate(text: &str, key: &str) -> Option<(usize, usize)> {
    let doc = ImDocument::parse(text).ok()?;
    let top: &dyn TableLike = doc.as_table();
    let at = |span: Option<Range<usize>>| span.map(|s| line_column(text, s.start));
    let mut parts = key.split('.');
    let first = parts.next()?;
    let (k, item) = top.get_key_value(first)?;
    let Some(second) = parts.next() else {
        return at(k.span());
    };
    if let Ok(n) = second.parse::<usize>() {
        let i = n.checked_sub(1)?;
        return match item {
            Item::ArrayOfTables(a) => at(a.get(i)?.span()),
            // `requestor = [{ ... }, ...]`: the inline table.
            Item::Value(v) => at(v.as_array()?.get(i)?.span()),
            _ => at(k.span()),
        };
    }
    let table = item.as_table_like()?;
    match table.get_key_value(second) {
        Some((k, _)) => at(k.span()),
        None => at(item.as_table().and_then(toml_edit::Table::span)),
    }
}
