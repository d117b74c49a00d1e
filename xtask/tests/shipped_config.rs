//! The example configuration the Debian package installs as `/etc/lqd/lqd.toml`
//! (`contrib/lqd.toml`), held against lqd itself so that it cannot drift: lqd's own loader
//! reads it and finds it safe, every setting lqd's configuration type knows is in it with a
//! description, every value it shows is the built-in default unless it says it is an example,
//! and uncommented it is still a configuration lqd reads. The man pages made from it and from
//! the clap definitions cover every setting and flag.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use lqd::config::{Access, Cli, Config, SourceSpec, TlsMode};
use xtask::example::{Example, Setting, Table};

fn shipped_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/lqd.toml")
}

fn example() -> Example {
    let text = std::fs::read_to_string(shipped_path()).unwrap();
    assert_eq!(
        text,
        xtask::example::TEXT,
        "the tool builds in the file on disk"
    );
    Example::parse(&text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn lqd_loads_the_shipped_config_and_it_is_safe() {
    let path = shipped_path();
    let config = Config::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(!config.listen.is_empty());
    for addr in &config.listen {
        assert!(addr.ip().is_loopback(), "{addr} is not loopback");
        assert_eq!(addr.port(), 547);
    }
    assert_eq!(config.source, None, "no source until the operator sets one");
    assert!(config.requestors.is_empty());
    assert!(config.access("::1".parse().unwrap()).is_allowed());
    assert!(config.access("127.0.0.1".parse().unwrap()).is_allowed());
    for outside in ["2001:db8::1", "192.0.2.1", "::ffff:192.0.2.1"] {
        let addr: IpAddr = outside.parse().unwrap();
        assert_eq!(config.access(addr), Access::Denied, "{outside}");
    }
    assert_eq!(config.tls.mode, TlsMode::Off);
    assert_eq!(config.metrics_listen, None);
    assert_eq!(config.state_dir, Path::new("/var/lib/lqd"));
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());

    // As the package test runs it: the shipped file and a source from the command line.
    let cli = Cli::try_parse_from([
        "lqd".as_ref(),
        "--config".as_ref(),
        path.as_os_str(),
        "--source".as_ref(),
        "demo".as_ref(),
    ])
    .unwrap();
    let config = Config::load(&cli).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.source, Some(SourceSpec::Demo));
}

/// The example's keys: the top level under `""`, each table's under its name.
fn example_keys(example: &Example) -> std::collections::BTreeMap<String, BTreeSet<String>> {
    let mut keys = std::collections::BTreeMap::<String, BTreeSet<String>>::new();
    keys.entry(String::new()).or_default();
    for table in example.tables() {
        keys.entry(String::new())
            .or_default()
            .insert(table.name.clone());
        keys.entry(table.name.clone()).or_default();
    }
    for (table, setting) in example.settings() {
        let name = table.map_or_else(String::new, |t| t.name.clone());
        assert!(
            keys.entry(name).or_default().insert(setting.key.clone()),
            "line {}: {} appears twice in its table",
            setting.line,
            setting.key
        );
    }
    keys
}

#[test]
fn every_setting_lqd_knows_is_in_the_example_with_a_description() {
    let example = example();
    let known = xtask::keys::known().unwrap();
    let shown = example_keys(&example);
    let place = |table: &str| {
        if table.is_empty() {
            "at the top level".to_owned()
        } else {
            format!("in the {table} table")
        }
    };
    for (table, keys) in &known {
        let have = shown.get(table).cloned().unwrap_or_default();
        for key in keys {
            assert!(
                have.contains(key),
                "lqd knows `{key}` {}, but contrib/lqd.toml does not show it: add it, \
                 with its description (commented out, with its default)",
                place(table)
            );
        }
    }
    for (table, keys) in &shown {
        let have: BTreeSet<&String> = known.get(table).into_iter().flatten().collect();
        for key in keys {
            assert!(
                have.contains(key),
                "contrib/lqd.toml shows `{key}` {}, which lqd does not know",
                place(table)
            );
        }
    }
    for (_, setting) in example.settings() {
        assert!(
            setting.doc.len() > 20,
            "line {}: `{}` has no description above it",
            setting.line,
            setting.key
        );
    }
    for table in example.tables() {
        assert!(
            table.doc.len() > 20,
            "{} has no description above it",
            table.header()
        );
    }
}

/// The configuration that a single setting line (in its table) makes.
fn with_only(table: Option<&Table>, setting: &Setting) -> Result<Config, String> {
    let text = match table {
        Some(t) => format!("{}\n{} = {}\n", t.header(), setting.key, setting.value),
        None => format!("{} = {}\n", setting.key, setting.value),
    };
    Config::from_toml(&text).map_err(|e| format!("{e}\n{text}"))
}

#[test]
fn a_commented_out_value_is_the_default_unless_it_says_it_is_an_example() {
    let example = example();
    let default = Config::default();
    let mut defaults = 0;
    for (table, setting) in example.settings() {
        // The shipped settings differ from the defaults on purpose; an array table's entries
        // are examples, since by default there are none.
        if setting.active || table.is_some_and(|t| t.array) {
            continue;
        }
        let config =
            with_only(table, setting).unwrap_or_else(|e| panic!("line {}: {e}", setting.line));
        if config == default {
            defaults += 1;
        } else {
            assert!(
                setting.doc.contains("Unset by default"),
                "line {}: `{} = {}` is not lqd's default: show the default, or say \
                 \"Unset by default\" for a setting whose value is only an example",
                setting.line,
                setting.key,
                setting.value
            );
        }
    }
    assert!(defaults > 20, "only {defaults} defaults shown");
}

#[test]
fn uncommented_every_shown_value_has_its_right_form() {
    let example = example();
    let text = example.uncommented();
    // Checked for form only: the examples together (certificate tables without TLS files,
    // say) need not make a configuration lqd would run with.
    let config: Config = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(config.source.is_some());
    assert!(!config.requestors.is_empty());
    assert!(!config.links.is_empty());
    // Each value outside the example tables also passes lqd's checks on its own (an example
    // table's keys go together: a certificate needs TLS, say).
    for (table, setting) in example.settings() {
        if table.is_some_and(|t| t.array) {
            continue;
        }
        if let Err(e) = with_only(table, setting) {
            panic!("line {}: {e}", setting.line);
        }
    }
}

#[test]
fn the_man_pages_cover_every_setting_and_flag() {
    let pages = xtask::man::pages().unwrap();
    let page = |file: &str| {
        pages
            .iter()
            .find(|p| p.file == file)
            .unwrap_or_else(|| panic!("no page {file}"))
            .roff
            .clone()
    };
    let config = page("lqd.toml.5");
    for (table, setting) in example().settings() {
        let entry = format!("\n.TP\n\\fB{}\\fR", setting.key);
        assert!(
            config.contains(&entry),
            "lqd.toml(5) has no entry for {}{}",
            table.map_or_else(String::new, |t| format!("{} ", t.header())),
            setting.key
        );
    }
    for (file, cmd) in [
        ("lqd.8", lqd::config::Cli::command()),
        ("lq-query.1", sub("query")),
        ("lq-bulk.1", sub("bulk")),
        ("lq-watch.1", sub("watch")),
    ] {
        let text = page(file);
        for arg in cmd.get_arguments() {
            if let Some(long) = arg.get_long() {
                let flag = format!("\\-\\-{}", long.replace('-', "\\-"));
                assert!(text.contains(&flag), "{file} lacks --{long}");
            }
        }
    }
    for file in [
        "lq.1",
        "lqd-journal.8",
        "lqd-journal-check.8",
        "lqd-journal-resize.8",
    ] {
        assert!(page(file).starts_with(".ie"), "{file}");
    }
    let scripts = xtask::completions::scripts();
    for file in ["lqd.bash", "lq.bash", "_lqd", "_lq"] {
        let script = scripts.iter().find(|s| s.file == file).unwrap();
        assert!(script.text.contains("--"), "{file}");
    }
}

fn sub(name: &str) -> clap::Command {
    lqd::requestor::cli::Cli::command()
        .find_subcommand(name)
        .unwrap()
        .clone()
}
