//! `lqd --check-config [FILE]`, run as the lqd binary: the effective settings with where each
//! came from (default, file and line, flag, environment), printed as TOML that reads back to
//! the same configuration; errors name the file, the line and the nearest known key, at every
//! level of the file, and exit 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lqd::config::check::nearest;
use lqd::config::{Cli, Config};

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

fn lqd(args: &[&str], file: Option<&Path>, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lqd"));
    c.arg("--check-config");
    if let Some(f) = file {
        c.arg(f);
    }
    c.args(args)
        .env_remove("LQD_KEA_CONFIG")
        .envs(env.iter().copied());
    c.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The printed line of `setting` (`key = ` at the start of a line), after the header `table`
/// when given.
fn line_of<'a>(out: &'a str, table: Option<&str>, setting: &str) -> &'a str {
    let from = table.map_or(0, |t| {
        out.find(t).unwrap_or_else(|| panic!("no {t}:\n{out}"))
    });
    out[from..]
        .lines()
        .find(|l| l.starts_with(&format!("{setting} = ")))
        .unwrap_or_else(|| panic!("no {setting}:\n{out}"))
}

const GOOD: &str = r#"# lqd for the tests
listen = ["[::1]:5470"]
source = "kea-csv:/var/lib/kea/kea-leases6.csv"
max_connections = 500

[tls]
handshake_timeout = 20

[[requestor]]
prefix = "2001:db8::/32"
query_types = ["address", "link-address"]

[[link]]
address = "2001:db8:0:1::1"
prefixes = ["2001:db8:0:1::/64"]
"#;

#[test]
fn a_good_file_prints_every_setting_with_where_it_came_from() {
    let d = Dir::new();
    let f = d.file("lqd.toml", GOOD);
    let kea = d.file(
        "kea-dhcp6.conf",
        r#"{ "Dhcp6": { "subnet6": [ { "id": 1, "subnet": "2001:db8:1::/64" } ] } }"#,
    );
    let o = lqd(
        &["--listen", "[::1]:5471", "--allow", "192.0.2.0/24"],
        Some(&f),
        &[("LQD_KEA_CONFIG", kea.to_str().unwrap())],
    );
    let out = stdout(&o);
    assert!(o.status.success(), "{}\n{out}", stderr(&o));
    assert!(
        out.starts_with(&format!(
            "# {}: the settings lqd would run with",
            f.display()
        )),
        "{out}"
    );
    // A default, a file value with its line, a flag.
    let default = line_of(&out, None, "max_concurrent_queries");
    assert!(
        default.contains("= 4") && default.ends_with("# default"),
        "{out}"
    );
    assert!(
        line_of(&out, None, "max_connections").contains("= 500"),
        "{out}"
    );
    assert!(
        line_of(&out, None, "max_connections").ends_with("# file, line 4"),
        "{out}"
    );
    assert!(
        line_of(&out, None, "listen").contains("[::1]:5471")
            && line_of(&out, None, "listen").ends_with("# flag --listen"),
        "{out}"
    );
    // Inside tables: a file value, a default; the file's table and the one --allow added.
    assert!(line_of(&out, Some("[tls]"), "handshake_timeout").ends_with("# file, line 7"));
    assert!(
        line_of(&out, Some("[tls]"), "mode").ends_with("# default"),
        "{out}"
    );
    let tables: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("[[requestor]]"))
        .collect();
    assert_eq!(tables.len(), 2, "{out}");
    assert!(tables[0].ends_with("# file, line 9"), "{out}");
    assert!(tables[1].ends_with("# flag --allow"), "{out}");
    assert!(
        line_of(&out, Some("[[link]]"), "prefixes").ends_with("# file, line 15"),
        "{out}"
    );
    assert!(line_of(&out, Some("[[link]]"), "pd_pools").ends_with("# default"));
    // The environment: where Kea's configuration is read for links and subnets.
    assert!(
        out.lines()
            .any(|l| l.contains(kea.to_str().unwrap()) && l.ends_with("# env LQD_KEA_CONFIG")),
        "{out}"
    );

    // The printed settings are a configuration file of their own: the same settings.
    let printed = Config::from_toml(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
    let cli: Cli = clap::Parser::try_parse_from([
        "lqd",
        "--config",
        f.to_str().unwrap(),
        "--listen",
        "[::1]:5471",
        "--allow",
        "192.0.2.0/24",
    ])
    .unwrap();
    assert_eq!(printed, Config::load(&cli).unwrap());
}

#[test]
fn without_a_file_the_defaults_and_flags_are_checked() {
    let o = lqd(
        &["--source", "demo", "--max-connections-per-requestor", "3"],
        None,
        &[],
    );
    let out = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.starts_with("# no configuration file"), "{out}");
    assert!(line_of(&out, None, "source").ends_with("# flag --source"));
    assert!(line_of(&out, None, "max_connections_per_requestor").contains("= 3"));
    assert!(line_of(&out, None, "bulk_data_timeout").contains("= 300"));
    assert!(
        out.contains("the demo source's 16 links are served"),
        "{out}"
    );
    // A warning lqd would log at start is shown too.
    assert!(
        out.contains("# warning: max_connections_per_requestor = 3 is below"),
        "{out}"
    );
    assert!(
        out.contains("only loopback (::1, 127.0.0.0/8) may ask"),
        "{out}"
    );

    // No source: lqd would not start.
    let o = lqd(&[], None, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no lease source"), "{}", stderr(&o));
    assert!(stdout(&o).contains("# source: not set"), "{}", stdout(&o));
}

/// Unknown keys at every level of the file: the file, the line and the key meant.
#[test]
fn unknown_keys_name_the_file_the_line_and_the_nearest_key_at_every_level() {
    let d = Dir::new();
    for (text, line, unknown, meant) in [
        (
            "source = \"demo\"\njurnal_size = 5\n",
            2,
            "jurnal_size",
            "journal_size",
        ),
        (
            "source = \"demo\"\n\n[tls]\nmode = \"off\"\ncertifcate = \"a.pem\"\n",
            5,
            "certifcate",
            "certificate",
        ),
        (
            "[[requestor]]\nprefix = \"::1\"\nquery-types = []\n",
            3,
            "query-types",
            "query_types",
        ),
        (
            "[[link]]\naddress = \"2001:db8::1\"\nprefix = [\"2001:db8::/64\"]\n",
            3,
            "prefix",
            "prefixes",
        ),
        (
            "source = \"demo\"\n[demo]\nclient = 5\n",
            3,
            "client",
            "clients",
        ),
        ("[requestors]\n", 1, "requestors", "requestor"),
    ] {
        let f = d.file("bad.toml", text);
        let o = lqd(&[], Some(&f), &[]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{text}: {err}");
        assert!(
            err.contains(&format!("config file {}, line {line}, column", f.display())),
            "{text}: {err}"
        );
        assert!(
            err.contains(&format!(
                "unknown field `{unknown}`, did you mean `{meant}`?"
            )),
            "{text}: {err}"
        );
        assert!(stdout(&o).is_empty(), "nothing printed for a bad file");
    }
    // Far from every key: the known keys are listed instead.
    let f = d.file("bad.toml", "source = \"demo\"\nzzz = 1\n");
    let err = stderr(&lqd(&[], Some(&f), &[]));
    assert!(
        err.contains("line 2") && err.contains("expected one of `listen`"),
        "{err}"
    );
}

/// Values of the right form that lqd cannot use: the line of the key or table.
#[test]
fn unusable_values_name_their_line() {
    let d = Dir::new();
    for (text, line, says) in [
        (
            "source = \"demo\"\n\nmax_connections = 0\n",
            3,
            "max_connections must be at least 1",
        ),
        (
            "source = \"demo\"\n[[requestor]]\nprefix = \"::1\"\n[[requestor]]\nprefix = \"::1/128\"\n",
            4,
            "listed twice",
        ),
        (
            "source = \"demo\"\n[tls]\nmode = \"require\"\n",
            3,
            "certificate and key are needed",
        ),
        ("source = \"demo\"\nlog = \"lqd=loud\"\n", 2, "log filter"),
        (
            "[[link]]\naddress = \"2001:db8::1\"\n[[link]]\naddress = \"2001:db8::1\"\n",
            3,
            "configured twice",
        ),
    ] {
        let f = d.file("bad.toml", text);
        let o = lqd(&[], Some(&f), &[]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{text}: {err}");
        assert!(
            err.contains(&format!("line {line}, column")) && err.contains(says),
            "{text}: {err}"
        );
    }
    // A flag's value is checked too.
    let f = d.file("ok.toml", "source = \"demo\"\n");
    let o = lqd(&["--max-connections", "0"], Some(&f), &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("command line: max_connections must be at least 1"));
    // The TLS files are read as at start.
    let f = d.file(
        "tls.toml",
        "source = \"demo\"\n[tls]\nmode = \"offer\"\ncertificate = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n",
    );
    let o = lqd(&[], Some(&f), &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent/c.pem"), "{}", stderr(&o));
    // Kea's configuration, named by the environment, is read as at start.
    let f = d.file("kea.toml", "source = \"kea-csv:/nonexistent/leases.csv\"\n");
    let o = lqd(
        &[],
        Some(&f),
        &[("LQD_KEA_CONFIG", "/nonexistent/kea-dhcp6.conf")],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("/nonexistent/kea-dhcp6.conf"),
        "{}",
        stderr(&o)
    );
    // An unreadable file.
    let o = lqd(&[], Some(Path::new("/nonexistent/lqd.toml")), &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read config file /nonexistent/lqd.toml"));
}

#[test]
fn the_nearest_key_is_a_typo_away_or_none() {
    let keys = ["listen", "journal_size", "journal_file", "max_connections"];
    assert_eq!(nearest("lisen", &keys), Some("listen"));
    assert_eq!(nearest("journal-size", &keys), Some("journal_size"));
    assert_eq!(nearest("JOURNAL_FILE", &keys), Some("journal_file"));
    assert_eq!(nearest("max_conections", &keys), Some("max_connections"));
    assert_eq!(nearest("port", &keys), None);
    assert_eq!(nearest("", &keys), None);
}
