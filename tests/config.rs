//! lqd's configuration: RFC defaults, the TOML file, flag precedence, the error messages for
//! every kind of bad value, requestor access by longest prefix, and the warnings of D4.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory, Parser};
use lqd::codec::QueryType;
use lqd::config::{
    Access, Cli, Config, ConfigError, DemoSettings, LogFormat, QueryTypes, Requestor,
    SYSTEM_STATE_DIR, ServerDuid, SourceSpec, default_state_dir, state_dir_from,
};
use lqd::store::LinkDef;
use lqd::store::journal::FlushPolicy;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The message of a configuration that must be rejected, checked to be one line.
fn rejected(toml: &str) -> String {
    let err = Config::from_toml(toml).expect_err(&format!("accepted:\n{toml}"));
    let message = err.to_string();
    assert!(!message.contains('\n'), "not one line: {message:?}");
    message
}

/// A file in the temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let path = std::env::temp_dir().join(format!("lqd-config-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn defaults_are_the_rfc_and_decision_values() {
    let c = Config::default();
    assert_eq!(c.listen, vec![addr("[::]:547")]);
    assert_eq!(c.source, None, "no source unless one is given (issue 13)");
    assert_eq!(c.server_duid, None);
    assert_eq!(c.state_dir, default_state_dir());
    assert_ne!(
        c.state_dir,
        PathBuf::from("."),
        "never wherever lqd is started"
    );
    assert_eq!(c.duid_file, PathBuf::from("lqd-server-duid"));
    assert_eq!(c.duid_path(), c.state_dir.join("lqd-server-duid"));
    assert_eq!(c.max_connections, 10_000);
    assert_eq!(c.max_connections_per_requestor, 10);
    assert_eq!(c.max_concurrent_queries, 4);
    assert_eq!(c.bulk_data_timeout, Duration::from_secs(300));
    assert_eq!(c.active_send_timeout, Duration::from_secs(120));
    assert_eq!(c.active_idle_timeout, Duration::from_secs(60));
    assert!(c.requestors.is_empty());
    assert_eq!(
        c.demo,
        DemoSettings {
            clients: 10_000,
            links: 16,
            changes_per_sec: 100,
            seed: 1,
            churn_limit: None,
            pd_percent: 30,
            relayed_percent: 75,
            two_hop_percent: 25,
        }
    );
    assert_eq!(c.high_water, 64 * 1024);
    assert_eq!(c.read_budget, 64);
    assert_eq!(c.udp_receive_buffer, 4 * 1024 * 1024);
    assert!(c.active && c.catch_up);
    assert_eq!(c.journal_path(), c.state_dir.join("lqd-journal"));
    assert_eq!(c.journal_size, 128 << 20);
    assert_eq!(c.journal_flush, FlushPolicy::Os);
    assert_eq!(c.catch_up_window, Duration::from_secs(3600));
    assert_eq!(c.log, "info");
    assert_eq!(c.log_format, LogFormat::Text);
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());

    assert_eq!(Config::from_toml("").unwrap(), c);
    assert_eq!(Config::from_toml("[demo]\n").unwrap(), c);
    assert_eq!(Config::load(&Cli::default()).unwrap(), c);
    assert_eq!(
        Config::load(&Cli::try_parse_from(["lqd"]).unwrap()).unwrap(),
        c
    );
}

const FULL: &str = r#"
listen = ["[::1]:5470", "127.0.0.1:5471"]
source = "kea-csv:/var/lib/kea/kea-leases6.csv"
kea_config = "/etc/kea/kea-dhcp6.conf"
server_duid = "00:02:00:00:ab:11:de:ad:be:ef"
duid_file = "/etc/lqd/duid"
state_dir = "/var/lib/lqd"
max_connections = 500
max_connections_per_requestor = 20
max_concurrent_queries = 8
bulk_data_timeout = 600
active_send_timeout = 240
active_idle_timeout = 90
active = true
catch_up = false
journal_file = "/var/lib/lqd/changes"
journal_size = 536870912
journal_flush = "250ms"
catch_up_window = 1800
high_water = 131072
read_budget = 32
udp_receive_buffer = 1048576
tcp_send_buffer = 65536
log = "lqd=debug,warn"
log_format = "json"

[[requestor]]
prefix = "2001:db8::/32"

[[requestor]]
prefix = "2001:db8:1::/48"
query_types = ["address", "client-id", 4]

[[requestor]]
prefix = "192.0.2.7"
query_types = []

[[link]]
address = "2001:db8:0:1::1"
prefixes = ["2001:db8:0:1::/64", "2001:db8:100::/48"]
pd_pools = ["3fff:100::/40"]

[[link]]
address = "2001:db8:0:2::1"

[demo]
clients = 1000
links = 4
changes_per_sec = 0
seed = 42
churn_limit = 5000
"#;

#[test]
fn a_full_file_gives_every_setting() {
    let c = Config::from_toml(FULL).unwrap();
    let expected = Config {
        listen: vec![addr("[::1]:5470"), addr("127.0.0.1:5471")],
        source: Some(SourceSpec::KeaCsv("/var/lib/kea/kea-leases6.csv".into())),
        server_duid: Some(
            ServerDuid::new(vec![0, 2, 0, 0, 0xab, 0x11, 0xde, 0xad, 0xbe, 0xef]).unwrap(),
        ),
        duid_file: "/etc/lqd/duid".into(),
        state_dir: "/var/lib/lqd".into(),
        max_connections: 500,
        max_connections_per_requestor: 20,
        max_concurrent_queries: 8,
        bulk_data_timeout: Duration::from_secs(600),
        active_send_timeout: Duration::from_secs(240),
        active_idle_timeout: Duration::from_secs(90),
        active: true,
        catch_up: false,
        journal_file: "/var/lib/lqd/changes".into(),
        journal_size: 512 << 20,
        journal_flush: FlushPolicy::Interval(Duration::from_millis(250)),
        catch_up_window: Duration::from_secs(1800),
        requestors: vec![
            Requestor {
                prefix: Some("2001:db8::/32".parse().unwrap()),
                certificate: Vec::new(),
                max_connections: None,
                query_types: QueryTypes::ALL,
            },
            Requestor {
                prefix: Some("2001:db8:1::/48".parse().unwrap()),
                certificate: Vec::new(),
                max_connections: None,
                query_types: [
                    QueryType::ByAddress,
                    QueryType::ByClientId,
                    QueryType::ByLinkAddress,
                ]
                .into_iter()
                .collect(),
            },
            Requestor {
                prefix: Some("192.0.2.7/32".parse().unwrap()),
                certificate: Vec::new(),
                max_connections: None,
                query_types: QueryTypes::NONE,
            },
        ],
        tls: Default::default(),
        metrics_listen: None,
        metrics_requestor_series: 100,
        links: vec![
            LinkDef {
                address: "2001:db8:0:1::1".parse().unwrap(),
                prefixes: vec![
                    "2001:db8:0:1::/64".parse().unwrap(),
                    "2001:db8:100::/48".parse().unwrap(),
                ],
                pd_pools: vec!["3fff:100::/40".parse().unwrap()],
            },
            LinkDef {
                address: "2001:db8:0:2::1".parse().unwrap(),
                prefixes: vec![],
                pd_pools: vec![],
            },
        ],
        kea_config: Some("/etc/kea/kea-dhcp6.conf".into()),
        demo: DemoSettings {
            clients: 1000,
            links: 4,
            changes_per_sec: 0,
            seed: 42,
            churn_limit: Some(5000),
            ..DemoSettings::default()
        },
        high_water: 131_072,
        read_budget: 32,
        udp_receive_buffer: 1 << 20,
        tcp_send_buffer: 65536,
        log: "lqd=debug,warn".into(),
        log_format: LogFormat::Json,
    };
    assert_eq!(c, expected);
    assert_eq!(c.duid_path(), PathBuf::from("/etc/lqd/duid"));
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    assert_eq!(
        c.requestors[1].query_types.to_string(),
        "address, client-id, link-address"
    );
    assert_eq!(
        c.server_duid.as_ref().unwrap().to_string(),
        "00:02:00:00:ab:11:de:ad:be:ef"
    );

    let demo = c.demo.demo_config();
    assert_eq!(
        (demo.clients, demo.links, demo.changes_per_sec, demo.seed),
        (1000, 4, 0, 42)
    );
}

#[test]
fn flags_override_the_file() {
    let file = TempFile::new("override.toml", FULL);
    let path = file.path().to_str().unwrap();
    let cli = Cli::try_parse_from([
        "lqd",
        "--config",
        path,
        "--listen",
        "[::1]:6000",
        "--source",
        "jsonl:-",
        "--server-duid",
        "000300011c1b0d0a0b0c",
        "--state-dir",
        "/tmp/lqd-state",
        "--log",
        "trace",
        "--max-connections",
        "7000",
        "--max-connections-per-requestor",
        "30",
        "--max-concurrent-queries",
        "2",
    ])
    .unwrap();
    let c = Config::load(&cli).unwrap();
    assert_eq!(c.listen, vec![addr("[::1]:6000")]);
    assert_eq!(c.source, Some(SourceSpec::JsonlStdin));
    assert_eq!(
        c.server_duid.as_ref().unwrap().as_bytes(),
        [0, 3, 0, 1, 0x1c, 0x1b, 0x0d, 0x0a, 0x0b, 0x0c]
    );
    assert_eq!(c.state_dir, PathBuf::from("/tmp/lqd-state"));
    assert_eq!(c.log, "trace");
    assert_eq!(c.max_connections, 7000);
    assert_eq!(c.max_connections_per_requestor, 30);
    assert_eq!(c.max_concurrent_queries, 2);
    // What no flag touches keeps the file's value.
    assert_eq!(c.bulk_data_timeout, Duration::from_secs(600));
    assert_eq!(c.requestors.len(), 3);
    assert_eq!(c.demo.seed, 42);
    assert_eq!(c.read_budget, 32);

    // Repeated --listen gives several addresses; without flags the file wins over defaults.
    let cli = Cli::try_parse_from([
        "lqd",
        "--config",
        path,
        "--listen",
        "[::]:5470",
        "--listen",
        "0.0.0.0:5470",
    ])
    .unwrap();
    let c = Config::load(&cli).unwrap();
    assert_eq!(c.listen, vec![addr("[::]:5470"), addr("0.0.0.0:5470")]);
    assert_eq!(c.max_connections, 500);
    let c = Config::load(&Cli::try_parse_from(["lqd", "--config", path]).unwrap()).unwrap();
    assert_eq!(c, Config::from_toml(FULL).unwrap());

    // A relative duid_file follows --state-dir.
    let cli = Cli::try_parse_from(["lqd", "--state-dir", "/srv/lqd"]).unwrap();
    let c = Config::load(&cli).unwrap();
    assert_eq!(c.duid_path(), PathBuf::from("/srv/lqd/lqd-server-duid"));
}

#[test]
fn unknown_keys_are_rejected_by_name_and_position() {
    let m = rejected("max_connections = 5\nlisen = [\"[::1]:547\"]\n");
    assert!(
        m.starts_with("config, line 2, column 1: unknown field `lisen`"),
        "{m}"
    );
    assert!(m.contains("`listen`"), "the known keys are listed: {m}");

    let m = rejected("[demo]\nclient = 5\n");
    assert!(
        m.contains("line 2") && m.contains("unknown field `client`"),
        "{m}"
    );

    let m = rejected("[[requestor]]\nprefix = \"::/0\"\nquery_type = [1]\n");
    assert!(
        m.contains("line 3") && m.contains("unknown field `query_type`"),
        "{m}"
    );

    let m = rejected("[requestors]\n");
    assert!(m.contains("unknown field `requestors`"), "{m}");
}

#[test]
fn wrong_forms_name_line_and_column() {
    let m = rejected("log = \"info\"\nmax_connections = \"many\"\n");
    assert!(
        m.starts_with("config, line 2, column 19: invalid type: string"),
        "{m}"
    );

    let m = rejected("bulk_data_timeout = -5\n");
    assert!(m.contains("line 1") && m.contains("-5"), "{m}");

    let m = rejected("listen = [\"::1:547\"]\n");
    assert!(m.contains("line 1") && m.contains("socket address"), "{m}");

    let m = rejected("listen = [\n");
    assert!(m.starts_with("config, line 2"), "{m}");
}

#[test]
fn bad_source_specs_are_rejected() {
    for (spec, expect) in [
        ("kea", "unknown source `kea`: expected demo, kea-csv:PATH"),
        ("Demo", "unknown source `Demo`"),
        ("", "unknown source ``"),
        ("demo:fast", "demo takes no argument"),
        ("kea-csv:", "needs a path: kea-csv:PATH"),
        ("jsonl:", "needs a path: jsonl:PATH"),
        ("jsonl:unix", "needs a socket path: jsonl:unix:PATH"),
        ("jsonl:unix:", "needs a path: jsonl:unix:PATH"),
        ("csv:/tmp/x", "unknown source `csv:/tmp/x`"),
    ] {
        let err = spec.parse::<SourceSpec>().unwrap_err().to_string();
        assert!(err.contains(expect), "{spec:?}: {err}");
        let m = rejected(&format!("\n\nsource = {spec:?}\n"));
        assert!(m.starts_with("config, line 3, column 10: "), "{m}");
        assert!(m.contains(expect), "{spec:?}: {m}");
        let cli = Cli::try_parse_from(["lqd", "--source", spec]).unwrap_err();
        assert!(cli.to_string().contains(expect), "{cli}");
    }
}

#[test]
fn good_source_specs_parse_and_print_back() {
    for (spec, expected) in [
        ("demo", SourceSpec::Demo),
        (
            "kea-csv:/var/lib/kea/dhcp6.leases",
            SourceSpec::KeaCsv("/var/lib/kea/dhcp6.leases".into()),
        ),
        (
            "jsonl:changes.jsonl",
            SourceSpec::Jsonl("changes.jsonl".into()),
        ),
        ("jsonl:-", SourceSpec::JsonlStdin),
        (
            "jsonl:unix:/run/lqd.sock",
            SourceSpec::JsonlUnix("/run/lqd.sock".into()),
        ),
        ("jsonl:./unix", SourceSpec::Jsonl("./unix".into())),
    ] {
        let parsed: SourceSpec = spec.parse().unwrap();
        assert_eq!(parsed, expected, "{spec}");
        assert_eq!(parsed.to_string(), spec);
        let c = Config::from_toml(&format!("source = {spec:?}")).unwrap();
        assert_eq!(c.source, Some(expected));
    }
}

#[test]
fn bad_prefixes_are_rejected() {
    for prefix in [
        "2001:db8::/129",
        "10.0.0.0/33",
        "2001:db8::/",
        "lan",
        "10.0.0/8",
        "",
    ] {
        let m = rejected(&format!("[[requestor]]\nprefix = {prefix:?}\n"));
        assert!(
            m.starts_with("config, line 2, column 10: ")
                && m.contains(&format!("bad requestor prefix `{prefix}`: expected a CIDR")),
            "{m}"
        );
    }
    let m = rejected("[[requestor]]\nquery_types = [1]\n");
    assert!(
        m.contains("requestor table 1 needs a prefix or a certificate"),
        "{m}"
    );
    let m = rejected(
        "[[requestor]]\nprefix = \"10.0.0.0/8\"\n[[requestor]]\nprefix = \"::ffff:10.0.0.0/104\"\n",
    );
    assert_eq!(
        m,
        "config, line 3, column 1: requestor prefix ::ffff:10.0.0.0/104 is listed twice (also \
         as 10.0.0.0/8)"
    );
}

#[test]
fn journal_flush_policies() {
    for (text, want) in [
        ("os", FlushPolicy::Os),
        ("always", FlushPolicy::Always),
        ("100ms", FlushPolicy::Interval(Duration::from_millis(100))),
        ("2s", FlushPolicy::Interval(Duration::from_secs(2))),
    ] {
        let c = Config::from_toml(&format!("journal_flush = {text:?}\n")).unwrap();
        assert_eq!(c.journal_flush, want, "{text}");
    }
    for bad in ["", "never", "0ms", "ms", "1h", "-1s"] {
        let m = rejected(&format!("journal_flush = {bad:?}\n"));
        assert!(m.contains(&format!("bad journal_flush `{bad}`")), "{m}");
    }
    let m = rejected("journal_size = 4096\n");
    assert_eq!(
        m,
        "config, line 1, column 1: journal_size is 4096, below the minimum of 1048576 octets"
    );
    let m = rejected("journal_size = 68719476737\n");
    assert_eq!(
        m,
        "config, line 1, column 1: journal_size is 68719476737, above the maximum of \
         68719476736 octets (64 GiB)"
    );
}

/// D16: `[[link]]` tables name the links served; the demo source brings its own.
#[test]
fn links_come_from_link_tables_or_the_demo() {
    let a = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap();
    let demo = Config::from_toml("source = \"demo\"\n[demo]\nlinks = 3\n")
        .unwrap()
        .link_map()
        .unwrap();
    assert_eq!(demo.len(), 3);
    assert_eq!(
        demo.link_of(a("2001:db8:0:3::77")),
        Some(a("2001:db8:0:3::1"))
    );
    assert!(demo.manages(a("3fff:0:0:100::1")));
    assert!(!demo.manages(a("2001:db8:0:4::1")));

    let c = Config::from_toml(FULL).unwrap();
    let m = c.link_map().unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(
        m.link_of(a("2001:db8:100:5::1")),
        Some(a("2001:db8:0:1::1"))
    );
    assert_eq!(m.link_of(a("2001:db8:0:2::1")), Some(a("2001:db8:0:2::1")));
    assert_eq!(m.link_of(a("2001:db8:0:3::1")), None);

    let m = rejected("[[link]]\naddress = \"2001:db8::1\"\n[[link]]\naddress = \"2001:db8::1\"\n");
    assert_eq!(
        m,
        "config, line 3, column 1: link 2001:db8::1 is configured twice"
    );
    let m = rejected(
        "[[link]]\naddress = \"2001:db8::1\"\nprefixes = [\"2001:db8::/64\"]\n\
         [[link]]\naddress = \"2001:db8::2\"\nprefixes = [\"2001:db8::/64\"]\n",
    );
    assert_eq!(
        m,
        "config, line 4, column 1: prefix 2001:db8::/64 is on two links, 2001:db8::1 and \
         2001:db8::2"
    );
    let m = rejected("[[link]]\naddress = \"2001:db8::1\"\nprefixes = [\"2001:db8::/129\"]\n");
    assert!(m.starts_with("config, line 3"), "{m}");
    let m = rejected("[[link]]\nprefixes = [\"2001:db8::/64\"]\n");
    assert!(m.contains("missing field `address`"), "{m}");
    let m = rejected("[[link]]\naddress = \"2001:db8::1\"\nsubnet = 1\n");
    assert!(m.contains("unknown field `subnet`"), "{m}");
}

#[test]
fn bad_duids_are_rejected() {
    for (duid, expect) in [
        ("zz0001", "Invalid character 'z' at position 0"),
        ("0001a", "Odd number of digits"),
        ("00:01:0g", "`0g` is not a hex octet"),
        ("00::01:02", "`` is not a hex octet"),
        ("00:01:002", "`002` is not a hex octet"),
        ("00:+1:02", "`+1` is not a hex octet"),
        ("0001", "a DUID is 3 to 130 octets"),
        (
            "",
            "a DUID is 3 to 130 octets (a 2-octet type and up to 128 more), not 0",
        ),
    ] {
        let err = duid.parse::<ServerDuid>().unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("bad server DUID `{duid}`: ")),
            "{err}"
        );
        assert!(err.contains(expect), "{duid:?}: {err}");
        let m = rejected(&format!("server_duid = {duid:?}"));
        assert!(
            m.starts_with("config, line 1, column 15: ") && m.contains(expect),
            "{m}"
        );
        let cli = Cli::try_parse_from(["lqd", "--server-duid", duid]).unwrap_err();
        assert!(cli.to_string().contains(expect), "{cli}");
    }
    let long = "ab".repeat(131);
    let err = long.parse::<ServerDuid>().unwrap_err().to_string();
    assert!(err.ends_with("not 131"), "{err}");
    assert_eq!(
        "ab".repeat(130)
            .parse::<ServerDuid>()
            .unwrap()
            .as_bytes()
            .len(),
        130
    );

    // Both spellings, and one-digit octets, give the same bytes.
    let plain: ServerDuid = "00030001A0b1c2d3e4f5".parse().unwrap();
    let colons: ServerDuid = "0:3:0:1:a0:B1:c2:d3:e4:f5".parse().unwrap();
    assert_eq!(plain, colons);
    assert_eq!(plain.to_string(), "00:03:00:01:a0:b1:c2:d3:e4:f5");
    assert_eq!(plain.as_duid().as_bytes(), plain.as_bytes());
}

#[test]
fn bad_query_types_are_rejected() {
    for (types, expect) in [
        (
            "[\"mac\"]",
            "unknown query type `mac`: expected address, client-id",
        ),
        ("[\"Address\"]", "unknown query type `Address`"),
        ("[\"address\", 0]", "unknown query type 0:"),
        ("[6]", "unknown query type 6:"),
        ("[-1]", "unknown query type -1:"),
        ("[1.0]", "expected a query type"),
        ("\"address\"", "expected a list of query types"),
    ] {
        let m = rejected(&format!(
            "[[requestor]]\nprefix = \"::/0\"\nquery_types = {types}\n"
        ));
        assert!(m.starts_with("config, line 3, column "), "{m}");
        assert!(m.contains(expect), "{types}: {m}");
    }
    let c = Config::from_toml(
        "[[requestor]]\nprefix = \"::/0\"\nquery_types = [\"relay-id\", \"remote-id\", 5, \"link-address\"]\n",
    )
    .unwrap();
    let types = c.requestors[0].query_types;
    assert_eq!(types.to_string(), "relay-id, link-address, remote-id");
    assert!(!types.allows(QueryType::ByAddress));
    assert!(!types.allows(QueryType::ByClientId));
    assert!(types.allows(QueryType::ByRelayId));
    assert!(types.allows(QueryType::ByLinkAddress));
    assert!(types.allows(QueryType::ByRemoteId));
    assert!(!QueryTypes::ALL.allows(QueryType::Unknown(6)));
    assert_eq!(QueryTypes::ALL.iter().count(), 5);
    assert_eq!(QueryTypes::NONE.to_string(), "none");
}

const ACL: &str = r#"
[[requestor]]
prefix = "2001:db8::/32"
query_types = ["address"]

[[requestor]]
prefix = "2001:db8:1::/48"

[[requestor]]
prefix = "2001:db8:1:2::/64"
query_types = ["relay-id"]

[[requestor]]
prefix = "2001:db8:1:2::bad"
query_types = []

[[requestor]]
prefix = "192.0.2.0/24"
query_types = ["client-id"]

[[requestor]]
prefix = "::ffff:192.0.2.128/121"
query_types = ["remote-id"]
"#;

#[test]
fn access_takes_the_longest_matching_prefix() {
    let c = Config::from_toml(ACL).unwrap();
    let only = |qt: QueryType| Access::Allowed(QueryTypes::NONE.with(qt));
    assert_eq!(c.access(ip("2001:db8:ffff::1")), only(QueryType::ByAddress));
    assert_eq!(
        c.access(ip("2001:db8:1:3::1")),
        Access::Allowed(QueryTypes::ALL)
    );
    assert_eq!(c.access(ip("2001:db8:1:2::1")), only(QueryType::ByRelayId));
    assert_eq!(c.access(ip("2001:db8:1:2::bad")), Access::Denied);
    assert_eq!(c.access(ip("2001:db9::1")), Access::Denied);
    assert_eq!(c.access(ip("::1")), Access::Denied);
    assert_eq!(c.access(ip("10.0.0.1")), Access::Denied);

    // IPv4 prefixes match IPv4 addresses and IPv4-mapped ones alike, and the longest wins
    // whichever way each prefix was written.
    for a in ["192.0.2.1", "::ffff:192.0.2.1"] {
        assert_eq!(c.access(ip(a)), only(QueryType::ByClientId), "{a}");
    }
    for a in ["192.0.2.200", "::ffff:192.0.2.200"] {
        assert_eq!(c.access(ip(a)), only(QueryType::ByRemoteId), "{a}");
    }
    assert_eq!(c.access(ip("::ffff:192.0.3.1")), Access::Denied);

    let a = c.access(ip("2001:db8:1:2::1"));
    assert!(a.is_allowed() && a.allows(QueryType::ByRelayId));
    assert!(!a.allows(QueryType::ByAddress));
    assert!(!Access::Denied.is_allowed());
    assert!(!Access::Denied.allows(QueryType::ByAddress));

    // No requestor tables: loopback only (issue 13; see below).
    let open = Config::default();
    for a in ["2001:db8::1", "10.1.2.3", "::ffff:10.1.2.3"] {
        assert_eq!(open.access(ip(a)), Access::Denied);
    }

    // ::/0 covers IPv4-mapped addresses too; 0.0.0.0/0 covers only them.
    let all = Config::from_toml("[[requestor]]\nprefix = \"::/0\"\n").unwrap();
    assert!(all.access(ip("10.1.2.3")).is_allowed());
    let v4 = Config::from_toml("[[requestor]]\nprefix = \"0.0.0.0/0\"\n").unwrap();
    assert!(v4.access(ip("10.1.2.3")).is_allowed());
    assert!(v4.access(ip("::ffff:10.1.2.3")).is_allowed());
    assert_eq!(v4.access(ip("2001:db8::1")), Access::Denied);
}

#[test]
fn warnings_report_values_below_the_rfc_defaults() {
    let c = Config::from_toml(
        "bulk_data_timeout = 30\nactive_send_timeout = 119\nactive_idle_timeout = 59\n\
         max_connections_per_requestor = 2\n",
    )
    .unwrap();
    assert_eq!(c.bulk_data_timeout, Duration::from_secs(30));
    assert_eq!(
        c.warnings(),
        [
            "bulk_data_timeout = 30 s is below the RFC default BULK_LQ_DATA_TIMEOUT of 300 s",
            "active_send_timeout = 119 s is below the RFC default ACTIVE_LQ_SEND_TIMEOUT of 120 s",
            "active_idle_timeout = 59 s is below the RFC default ACTIVE_LQ_IDLE_TIMEOUT of 60 s",
            "max_connections_per_requestor = 2 is below the RFC default BULK_LQ_MAX_CONNS of 10",
        ]
    );

    // Exactly the defaults warn of nothing; the flags are checked too.
    let cli = Cli::try_parse_from(["lqd", "--max-connections-per-requestor", "9"]).unwrap();
    let c = Config::load(&cli).unwrap();
    assert_eq!(c.warnings().len(), 1, "{:?}", c.warnings());
    assert!(c.warnings()[0].starts_with("max_connections_per_requestor = 9"));

    let c = Config::from_toml("max_connections = 5\n[[requestor]]\nprefix = \"2001:db8::1/32\"\n")
        .unwrap();
    assert_eq!(
        c.warnings(),
        [
            "max_connections = 5 is below max_connections_per_requestor = 10, so one requestor \
             can take every connection",
            "requestor prefix 2001:db8::1/32 has host bits set; it is used as 2001:db8::/32",
        ]
    );
    assert!(c.access(ip("2001:db8:5::1")).is_allowed());
}

#[test]
fn unusable_values_are_rejected_naming_their_origin() {
    // Each names the line of its key (the table's key for a table's).
    for (toml, line, expect) in [
        ("listen = []", 1, "listen needs at least one address"),
        (
            "max_connections = 0",
            1,
            "max_connections must be at least 1, not 0",
        ),
        (
            "max_concurrent_queries = 0",
            1,
            "max_concurrent_queries must be at least 1",
        ),
        ("read_budget = 0", 1, "read_budget must be at least 1"),
        ("high_water = 0", 1, "high_water must be at least 1"),
        ("[demo]\nlinks = 0", 2, "demo.links must be at least 1"),
        ("[demo]\nclients = 0", 2, "demo.clients must be at least 1"),
        (
            "[demo]\nclients = 100000000",
            2,
            "above the demo source's limit",
        ),
        (
            "bulk_data_timeout = 0",
            1,
            "bulk_data_timeout must be at least 1 second",
        ),
        (
            "\nactive_idle_timeout = 0",
            2,
            "active_idle_timeout must be at least 1 second",
        ),
        ("state_dir = \"\"", 1, "state_dir must not be empty"),
        ("log = \" \"", 1, "log must not be empty"),
        ("[tls]\nhandshake_timeout = 0", 2, "tls.handshake_timeout"),
    ] {
        let m = rejected(toml);
        assert!(
            m.starts_with(&format!("config, line {line}, column 1: ")) && m.contains(expect),
            "{toml}: {m}"
        );
    }

    let file = TempFile::new("zero.toml", "\nmax_connections_per_requestor = 0\n");
    let err = Config::from_file(file.path()).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "config file {}, line 2, column 1: max_connections_per_requestor must be at least 1, \
             not 0",
            file.path().display()
        )
    );
    let file = TempFile::new("bad.toml", "\n\nlisen = 1\n");
    let err = Config::from_file(file.path()).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "config file {}, line 3, column 1: unknown field `lisen`",
            file.path().display()
        )),
        "{err}"
    );

    let cli = Cli::try_parse_from(["lqd", "--max-concurrent-queries", "0"]).unwrap();
    let err = Config::load(&cli).unwrap_err().to_string();
    assert_eq!(
        err,
        "command line: max_concurrent_queries must be at least 1, not 0"
    );

    let missing = std::env::temp_dir().join("lqd-config-no-such-file.toml");
    let cli = Cli::try_parse_from(["lqd", "--config", missing.to_str().unwrap()]).unwrap();
    let err = Config::load(&cli).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot read config file {}: ", missing.display())),
        "{err}"
    );
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn the_stable_flags_parse() {
    let cli = Cli::try_parse_from([
        "lqd",
        "--listen",
        "[::1]:5470",
        "--source",
        "demo",
        "--config",
        "lqd.toml",
    ])
    .unwrap();
    assert_eq!(cli.listen, vec![addr("[::1]:5470")]);
    assert_eq!(cli.source, Some(SourceSpec::Demo));
    assert_eq!(cli.config, Some(PathBuf::from("lqd.toml")));

    let cli = Cli::try_parse_from(["lqd", "--listen=127.0.0.1:5470", "--source=jsonl:-"]).unwrap();
    assert_eq!(cli.listen, vec![addr("127.0.0.1:5470")]);
    assert_eq!(cli.source, Some(SourceSpec::JsonlStdin));

    for bad in [
        &["lqd", "--listen", "::1"][..],
        &["lqd", "--listen", "localhost:547"],
        &["lqd", "--max-connections", "-1"],
        &["lqd", "--max-connections", "lots"],
        &["lqd", "--bulk-data-timeout", "300"],
        &["lqd", "positional"],
    ] {
        assert!(Cli::try_parse_from(bad).is_err(), "{bad:?} accepted");
    }
}

/// The state directory without `state_dir` (issue 17): systemd's, the system's for root, the
/// user's XDG state directory otherwise; never the current directory.
#[test]
fn the_default_state_directory_is_systemds_the_systems_or_the_users() {
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |key: &str| {
            vars.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| std::ffi::OsString::from(v))
        }
    };
    let home = &[("HOME", "/home/ana")];
    assert_eq!(
        state_dir_from(env(home), false),
        Path::new("/home/ana/.local/state/lqd")
    );
    let xdg = &[("HOME", "/home/ana"), ("XDG_STATE_HOME", "/srv/ana/state")];
    assert_eq!(
        state_dir_from(env(xdg), false),
        Path::new("/srv/ana/state/lqd")
    );
    // Relative paths are not valid in these variables.
    let relative = &[("HOME", "/home/ana"), ("XDG_STATE_HOME", "state")];
    assert_eq!(
        state_dir_from(env(relative), false),
        Path::new("/home/ana/.local/state/lqd")
    );
    assert_eq!(state_dir_from(env(home), true), Path::new(SYSTEM_STATE_DIR));
    assert_eq!(state_dir_from(env(&[]), false), Path::new("/var/lib/lqd"));
    assert_eq!(
        state_dir_from(env(&[("HOME", "")]), false),
        Path::new("/var/lib/lqd")
    );
    // systemd's StateDirectory= wins, the first of its directories.
    let systemd = &[
        ("HOME", "/"),
        ("STATE_DIRECTORY", "/var/lib/lqd:/var/lib/other"),
    ];
    for root in [false, true] {
        assert_eq!(
            state_dir_from(env(systemd), root),
            Path::new("/var/lib/lqd")
        );
    }
}

#[test]
fn help_describes_lqd_and_every_flag_with_its_default() {
    Cli::command().debug_assert();
    let help = Cli::command().render_long_help().to_string();
    for needle in [
        "DHCPv6 leasequery",
        "RFC 5007",
        "RFC 5460",
        "--listen <ADDR:PORT>",
        "[default: [::]:547]",
        "--source <SPEC>",
        "kea-csv:PATH",
        "[default: none: lqd will not start without one]",
        "--config <FILE>",
        "--server-duid <HEX>",
        "--state-dir <DIR>",
        "the change journal",
        "server DUID",
        "$STATE_DIRECTORY",
        "/var/lib/lqd as root",
        "$XDG_STATE_HOME/lqd or ~/.local/state/lqd]",
        "--log <LEVEL>",
        "[default: info]",
        "--log-format <FORMAT>",
        "[default: text]",
        "--max-connections <N>",
        "[default: 10000]",
        "--max-connections-per-requestor <N>",
        "[default: 10]",
        "--max-concurrent-queries <N>",
        "[default: 4]",
        "lqd --listen [::1]:5470 --source demo",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
    // The defaults the help promises are the ones lqd uses.
    let d = Config::default();
    assert!(help.contains(&format!("[default: {}]", d.listen[0])));
    assert!(help.contains(&format!("[default: {}]", d.max_connections)));
    assert!(help.contains(&format!("[default: {}]", d.max_concurrent_queries)));
    assert!(help.contains(&format!("[default: {}]", d.log)));
}

/// Safe by default (issue 13): with no `[[requestor]]` table only loopback may ask; `--allow`
/// adds prefixes to loopback, or to the tables there are.
#[test]
fn no_requestor_table_is_loopback_only_and_allow_adds_prefixes() {
    let c = Config::default();
    for a in ["::1", "127.0.0.1", "127.8.9.10", "::ffff:127.0.0.1"] {
        assert_eq!(c.access(ip(a)), Access::Allowed(QueryTypes::ALL), "{a}");
    }
    for a in ["2001:db8::1", "192.0.2.1", "::", "fe80::1"] {
        assert_eq!(c.access(ip(a)), Access::Denied, "{a}");
    }
    let cli = Cli::try_parse_from(["lqd", "--allow", "2001:db8::/32", "--allow", "192.0.2.0/24"])
        .unwrap();
    let c = Config::load(&cli).unwrap();
    for a in ["::1", "127.0.0.1", "2001:db8:5::1", "192.0.2.7"] {
        assert_eq!(c.access(ip(a)), Access::Allowed(QueryTypes::ALL), "{a}");
    }
    assert_eq!(c.access(ip("2001:db9::1")), Access::Denied);
    // With tables, --allow adds to them (loopback is not added).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lqd.toml");
    std::fs::write(&file, "[[requestor]]\nprefix = \"2001:db8:1::/48\"\n").unwrap();
    let cli = Cli::try_parse_from([
        "lqd",
        "--config",
        file.to_str().unwrap(),
        "--allow",
        "2001:db8:2::/48",
    ])
    .unwrap();
    let c = Config::load(&cli).unwrap();
    assert_eq!(
        c.access(ip("2001:db8:1::1")),
        Access::Allowed(QueryTypes::ALL)
    );
    assert_eq!(
        c.access(ip("2001:db8:2::1")),
        Access::Allowed(QueryTypes::ALL)
    );
    assert_eq!(c.access(ip("::1")), Access::Denied);
}

/// With no source lqd refuses to start, and names `--source demo` as the way to try it;
/// with one it says, in one line, that only loopback may ask (issue 13).
#[test]
fn lqd_without_a_source_refuses_to_start_and_names_the_demo() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lqd"))
        .args(["--listen", "[::1]:0", "--state-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("no lease source") && said.contains("--source demo"),
        "{said}"
    );
    assert!(
        !dir.path().join("lqd-journal").exists(),
        "nothing was created"
    );
}

/// `log_format` and `--log-format`: text or json, the flag over the file, anything else a
/// one-line error naming the value and the choices.
#[test]
fn log_format_is_text_or_json() {
    assert_eq!(
        Config::from_toml("log_format = \"json\"")
            .unwrap()
            .log_format,
        LogFormat::Json
    );
    assert_eq!(
        Config::from_toml("log_format = \"text\"")
            .unwrap()
            .log_format,
        LogFormat::Text
    );
    for bad in ["\"JSON\"", "\"xml\"", "\"\"", "1"] {
        let m = rejected(&format!("log_format = {bad}"));
        assert!(m.starts_with("config, line 1"), "{bad}: {m}");
        if bad != "1" {
            assert!(m.contains("expected \"text\" or \"json\""), "{bad}: {m}");
        }
    }
    let file = TempFile::new("json-log.toml", "log_format = \"json\"\n");
    let path = file.path().to_str().unwrap();
    let cli = Cli::try_parse_from(["lqd", "--config", path]).unwrap();
    assert_eq!(Config::load(&cli).unwrap().log_format, LogFormat::Json);
    let cli = Cli::try_parse_from(["lqd", "--config", path, "--log-format", "text"]).unwrap();
    assert_eq!(Config::load(&cli).unwrap().log_format, LogFormat::Text);
    let cli = Cli::try_parse_from(["lqd", "--log-format", "json"]).unwrap();
    assert_eq!(Config::load(&cli).unwrap().log_format, LogFormat::Json);
    let err = Cli::try_parse_from(["lqd", "--log-format", "yaml"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown log format `yaml`: expected \"text\" or \"json\""),
        "{err}"
    );
    for f in [LogFormat::Text, LogFormat::Json] {
        assert_eq!(f.to_string().parse::<LogFormat>().unwrap(), f);
    }
}

#[test]
fn kea_s_subnets_are_the_links_unless_link_tables_are_given() {
    let a = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap();
    let kea = TempFile::new(
        "kea-dhcp6.conf",
        r#"{ "Dhcp6": {
  // Kea's comments and trailing commas, as Kea reads them.
  "lease-database": { "type": "memfile", "name": "/var/lib/kea/kea-leases6.csv", },
  "subnet6": [
    { "id": 1, "subnet": "2001:db8:1::/64", "relay": { "ip-addresses": [ "2001:db8:ff::1" ] },
      "pd-pools": [ { "prefix": "2001:db8:100::", "prefix-len": 40, "delegated-len": 56 } ] },
  ],
  "shared-networks": [ { "name": "floor-2", "subnet6": [
    { "id": 4, "subnet": "2001:db8:4::/64" },  # both subnets are one link
    { "id": 5, "subnet": "2001:db8:5::/64" } ] } ]
} }"#,
    );
    let source = "source = \"kea-csv:/var/lib/kea/kea-leases6.csv\"\n";
    let c = Config::from_toml(&format!(
        "{source}kea_config = \"{}\"\n",
        kea.path().display()
    ))
    .unwrap();
    let (path, k) = c.kea_links().unwrap().expect("Kea's configuration is read");
    assert_eq!(path, kea.path());
    let m = c.link_map_with(Some(&k)).unwrap();
    assert_eq!(m.len(), 2, "one link per subnet, one per shared network");
    // Any address of the prefix, and the listed relay address, name the subnet's link.
    for x in [
        "2001:db8:1::",
        "2001:db8:1::1",
        "2001:db8:1::2",
        "2001:db8:ff::1",
    ] {
        assert_eq!(m.link_of(a(x)), Some(a("2001:db8:1::")), "{x}");
    }
    for x in ["2001:db8:4::1", "2001:db8:5::1"] {
        assert_eq!(m.link_of(a(x)), Some(a("2001:db8:4::")), "{x}");
    }
    assert_eq!(m.link_of(a("2001:db8:6::1")), None);
    assert!(
        m.manages(a("2001:db8:100:ab00::")),
        "a pd-pool is managed space"
    );
    assert_eq!(k.subnets[&5], a("2001:db8:4::"));

    // [[link]] tables win; Kea's subnet ids still map to links.
    let c = Config::from_toml(&format!(
        "{source}kea_config = \"{}\"\n[[link]]\naddress = \"2001:db8:0:9::1\"\n",
        kea.path().display()
    ))
    .unwrap();
    let (_, k) = c.kea_links().unwrap().unwrap();
    let m = c.link_map_with(Some(&k)).unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m.link_of(a("2001:db8:0:9::1")), Some(a("2001:db8:0:9::1")));
    assert_eq!(m.link_of(a("2001:db8:1::1")), None);
    assert_eq!(k.subnets[&1], a("2001:db8:1::"));

    // A Kea configuration named explicitly that cannot be read stops the start.
    let c = Config::from_toml(&format!(
        "{source}kea_config = \"/nonexistent/kea-dhcp6.conf\"\n"
    ))
    .unwrap();
    let e = c.kea_links().unwrap_err().to_string();
    assert!(e.contains("/nonexistent/kea-dhcp6.conf"), "{e}");
}
