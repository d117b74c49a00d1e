//! The `kea-pgsql` source against a real PostgreSQL (Debian's, a temporary cluster with
//! `wal_level=logical` started by each test) holding Kea's lease database as Kea 2.2's own
//! `kea-admin db-init pgsql` makes it: the snapshot and the stream meeting with nothing lost,
//! every kind of row, `kill -9` of lqd during a burst resuming from its slot, and the faults of
//! issue 18. Each test ends with lqd's replica equal to the `lease6` table.

#[path = "common/lqd.rs"]
mod common;
#[path = "common/lq.rs"]
mod lq;
#[path = "common/pg.rs"]
mod pg;
#[path = "common/watching.rs"]
mod watching;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::Ipv6Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Lqd, by_link, read_answers, start_with_source_env, wait_for_log};
use lqd::codec::{DhcpOption, MessageRepr, OptionCode};
use lqd::requestor::Query;
use pg::{KEA_PASSWORD, Pg};
use watching::{Seen, Watching, base};

/// Kea's configuration lqd takes its subnets from: subnet 1 is 2001:db8:1::/64, subnet 2 is
/// 2001:db8:2::/64 with a pd-pool.
const KEA_CONFIG: &str = r#"{ "Dhcp6": {
  "lease-database": { "type": "postgresql", "name": "kea" },
  "subnet6": [
    { "id": 1, "subnet": "2001:db8:1::/64", "pools": [ { "pool": "2001:db8:1::100-2001:db8:1::ffff" } ] },
    { "id": 2, "subnet": "2001:db8:2::/64",
      "pd-pools": [ { "prefix": "2001:db8:100::", "prefix-len": 40, "delegated-len": 56 } ] }
  ] } }"#;

const LINKS: [&str; 2] = ["2001:db8:1::", "2001:db8:2::"];

/// One lease as lqd's Bulk answers and the table both give it: client DUID (hex), address or
/// prefix, prefix length.
type Lease = (String, Ipv6Addr, u8);

/// Every active lease lqd reports on Kea's two links.
fn lqd_leases(lqd: &Lqd) -> BTreeSet<Lease> {
    let mut out = BTreeSet::new();
    for (i, link) in LINKS.iter().enumerate() {
        let mut s = lqd.connect();
        let xid = u32::try_from(i).unwrap() + 1;
        s.write_all(&by_link(xid, link.parse().unwrap())).unwrap();
        for m in read_answers(&mut s, &[xid]) {
            let r = MessageRepr::parse(&m).unwrap();
            if let Some(DhcpOption::ClientData(cd)) = r.options.get(OptionCode::ClientData) {
                let id = hex::encode(cd.client_id().unwrap().as_bytes());
                for o in cd.iter() {
                    match o {
                        DhcpOption::IaAddr(a) if a.valid_lifetime > 0 => {
                            out.insert((id.clone(), a.address, 128));
                        }
                        DhcpOption::IaPrefix(p) if p.valid_lifetime > 0 => {
                            out.insert((id.clone(), p.prefix, p.prefix_len));
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    out
}

/// Every active lease of the table (state default, lifetime not 0).
fn db_leases(pg: &Pg, db: &str) -> BTreeSet<Lease> {
    pg.sql(
        db,
        "SELECT encode(duid, 'hex'), address, CASE WHEN lease_type = 2 THEN prefix_len ELSE 128 \
         END FROM lease6 WHERE state = 0 AND valid_lifetime > 0 AND expire > now()",
    )
    .lines()
    .filter(|l| !l.is_empty())
    .map(|l| {
        let f: Vec<&str> = l.split('|').collect();
        (
            f[0].to_owned(),
            f[1].parse().unwrap(),
            f[2].parse().unwrap(),
        )
    })
    .collect()
}

/// Waits up to `secs` until lqd's replica equals the table.
fn wait_equal(lqd: &Lqd, pg: &Pg, db: &str, secs: u64) -> BTreeSet<Lease> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (want, got) = (db_leases(pg, db), lqd_leases(lqd));
        if want == got {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "the table has {} leases, lqd {}\nonly in the table: {:?}\nonly in lqd: {:?}\n{}",
            want.len(),
            got.len(),
            want.difference(&got).take(5).collect::<Vec<_>>(),
            got.difference(&want).take(5).collect::<Vec<_>>(),
            lqd.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An INSERT of a lease row as Kea 2.2 writes one (`lease_type` 0 NA, 2 PD).
#[allow(clippy::too_many_arguments)]
fn insert(
    address: &str,
    duid: &str,
    valid: u32,
    subnet: u32,
    lease_type: u8,
    iaid: u32,
    plen: u8,
    state: u8,
    ctx: &str,
) -> String {
    let ctx = if ctx.is_empty() {
        "NULL".to_owned()
    } else {
        format!("'{ctx}'")
    };
    let iaid = i32::from_ne_bytes(iaid.to_ne_bytes());
    format!(
        "INSERT INTO lease6 (address, duid, valid_lifetime, expire, subnet_id, pref_lifetime, \
         lease_type, iaid, prefix_len, fqdn_fwd, fqdn_rev, hostname, state, user_context) VALUES \
         ('{address}', '\\x{duid}', {valid}, now() + interval '{valid} seconds', {subnet}, \
         {pref}, {lease_type}, {iaid}, {plen}, false, false, '', {state}, {ctx});",
        pref = valid / 2
    )
}

/// Writes Kea's configuration and the password file into lqd's state directory.
fn prepare(dir: &Path) {
    std::fs::write(dir.join("kea-dhcp6.conf"), KEA_CONFIG).unwrap();
    std::fs::write(dir.join("pgpass"), format!("{KEA_PASSWORD}\n")).unwrap();
}

/// Starts lqd following `db` with slot `slot`, the password from a file.
fn start_lqd(name: &str, pg: &Pg, db: &str, slot: &str, ready: &str) -> Lqd {
    start_lqd_with(name, pg, db, slot, ready, "")
}

/// The same with `more` TOML in lqd's configuration.
fn start_lqd_with(name: &str, pg: &Pg, db: &str, slot: &str, ready: &str, more: &str) -> Lqd {
    let dir = std::env::temp_dir().join(format!("lqd-pgsrc-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    prepare(&dir);
    let source = format!(
        "kea-pgsql:{}&password_file={}",
        pg.uri(db, slot),
        dir.join("pgpass").display()
    );
    // In the configuration file, so that a restart after kill -9 runs the same.
    let extra = format!(
        "source = \"{source}\"\nkea_config = \"{}\"\n{more}",
        dir.join("kea-dhcp6.conf").display()
    );
    start_with_source_env(name, &[], &extra, ready, &[])
}

const DUID_A: &str = "000300010200000000a1";
const DUID_B: &str = "000100012a3b4c5d001122334455";
const RELAYED: &str = r#"{"ISC": {"relays": [{"hop": 0, "link": "2001:db8:1::1", "peer": "fe80::1", "options": "0x00250008000009bf6a756e69"}]}}"#;

#[test]
fn snapshot_then_stream_then_kill9_resumes_from_the_slot() {
    let pg = Pg::start("snap");
    pg.kea_db("kea");
    // Before lqd: an address, a relayed address, a delegated prefix, a declined address and an
    // expired-reclaimed one.
    pg.sql(
        "kea",
        &[
            insert("2001:db8:1::100", DUID_A, 4000, 1, 0, 1, 128, 0, ""),
            insert(
                "2001:db8:1::101",
                DUID_B,
                4000,
                1,
                0,
                3_000_000_000,
                128,
                0,
                RELAYED,
            ),
            insert("2001:db8:100::", DUID_A, 4000, 2, 2, 7, 56, 0, ""),
            insert("2001:db8:1::102", "00", 3600, 1, 0, 0, 128, 1, ""),
            insert("2001:db8:1::103", DUID_B, 4000, 1, 0, 4, 128, 2, ""),
        ]
        .concat(),
    );
    let mut lqd = start_lqd("snap", &pg, "kea", "lqd_a", "following the stream");
    let first = wait_equal(&lqd, &pg, "kea", 10);
    assert_eq!(first.len(), 3, "{first:?}");
    assert!(lqd.log().contains("creating slot lqd_a"), "{}", lqd.log());

    // The stream: a new lease, a renewal, a release (Kea deletes the row), a prefix moved to
    // another client.
    let before = pg.sql("kea", "SELECT pg_current_wal_lsn()");
    pg.sql(
        "kea",
        &[
            insert("2001:db8:1::200", DUID_B, 7200, 1, 0, 9, 128, 0, RELAYED),
            "UPDATE lease6 SET valid_lifetime = 9000, expire = now() + interval '9000 s' \
             WHERE address = '2001:db8:1::100';"
                .to_owned(),
            "DELETE FROM lease6 WHERE address = '2001:db8:1::101';".to_owned(),
            format!(
                "UPDATE lease6 SET duid = '\\x{DUID_B}', iaid = 11 WHERE address = '2001:db8:100::';"
            ),
        ]
        .concat(),
    );
    let second = wait_equal(&lqd, &pg, "kea", 10);
    assert!(second.contains(&(DUID_B.to_owned(), "2001:db8:100::".parse().unwrap(), 56)));
    // The slot is confirmed once the changes are journaled.
    pg.wait_for(
        "kea",
        &format!(
            "SELECT confirmed_flush_lsn > '{}' FROM pg_replication_slots WHERE slot_name = 'lqd_a'",
            before.trim()
        ),
        "t",
        10,
    );

    // kill -9 during a burst of transactions, each one lease of a new client.
    const BURST: usize = 3000;
    let burst: String = (0..u32::try_from(BURST).unwrap())
        .map(|i| {
            insert(
                &format!("2001:db8:1::1:{i:x}"),
                // A client each, as Kea's clients are.
                &format!("00030001{:012x}", 0x0010_0000 + i),
                3600,
                1,
                0,
                100 + i,
                128,
                0,
                "",
            )
        })
        .collect();
    let script = lqd.dir.join("burst.sql");
    std::fs::write(&script, burst).unwrap();
    let socket = pg.socket_dir().to_owned();
    let port = pg.port.to_string();
    let writer = std::thread::spawn(move || {
        let out = std::process::Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&socket)
            .args(["-p", &port, "-U", "postgres", "-d", "kea", "-f"])
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    // Killed once a tenth of the burst is written.
    let written = || -> usize {
        pg.sql("kea", "SELECT count(*) FROM lease6 WHERE iaid >= 100")
            .trim()
            .parse()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while written() < BURST / 10 {
        assert!(Instant::now() < deadline, "the burst did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    lqd.kill9_and_restart_until("streaming");
    let at_kill = written();
    assert!(
        at_kill < BURST,
        "lqd was killed during the burst ({at_kill} of {BURST} written by its restart)"
    );
    writer.join().unwrap();
    let after = wait_equal(&lqd, &pg, "kea", 20);
    assert_eq!(after.len(), second.len() + BURST);
    let log = lqd.log();
    assert!(log.contains("resuming slot lqd_a"), "{log}");
    assert!(
        !log.contains("snapshot"),
        "a restart resumes, it takes no snapshot:\n{log}"
    );
}

/// How many lines of lqd's log contain `needle`.
fn count(lqd: &Lqd, needle: &str) -> usize {
    lqd.log().matches(needle).count()
}

#[test]
fn unreachable_at_start_postgres_restarted_a_bad_row_and_a_dropped_slot() {
    let pg = Pg::start("faults");
    pg.kea_db("kea");
    pg.sql(
        "kea",
        &[
            insert("2001:db8:1::100", DUID_A, 4000, 1, 0, 1, 128, 0, ""),
            insert("2001:db8:100::", DUID_B, 4000, 2, 2, 2, 56, 0, ""),
        ]
        .concat(),
    );
    // The database unreachable at start: a clear error, then retries until it answers.
    pg.stop();
    let metrics = common::free_metrics_addr();
    let mut lqd = start_lqd_with(
        "faults",
        &pg,
        "kea",
        "lqd_f",
        "retrying with a backoff",
        &format!("metrics_listen = \"{metrics}\"\n"),
    );
    let log = lqd.log();
    assert!(log.contains("cannot connect"), "{log}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        count(&lqd, "retrying with a backoff"),
        1,
        "said once: {}",
        lqd.log()
    );
    pg.start_again();
    wait_for_log(&lqd, "streaming again", 15);
    wait_equal(&lqd, &pg, "kea", 10);

    // PostgreSQL restarted mid-stream: lqd reconnects, says so once, and loses nothing.
    pg.sql(
        "kea",
        &insert("2001:db8:1::101", DUID_A, 4000, 1, 0, 3, 128, 0, ""),
    );
    pg.stop();
    std::thread::sleep(Duration::from_millis(1200));
    pg.start_again();
    pg.sql(
        "kea",
        &[
            insert("2001:db8:1::102", DUID_B, 4000, 1, 0, 4, 128, 0, RELAYED),
            "DELETE FROM lease6 WHERE address = '2001:db8:1::100';".to_owned(),
        ]
        .concat(),
    );
    wait_equal(&lqd, &pg, "kea", 20);
    assert_eq!(count(&lqd, "retrying with a backoff"), 2, "{}", lqd.log());
    assert_eq!(count(&lqd, "streaming again"), 2, "{}", lqd.log());

    // Rows lqd cannot map: logged with the reason and skipped; the rows after them flow.
    pg.sql(
        "kea",
        &[
            insert("not-an-address", DUID_A, 4000, 1, 0, 5, 128, 0, ""),
            insert("2001:db8:101::", DUID_A, 4000, 2, 2, 6, 0, 0, ""),
            insert("2001:db8:1::103", DUID_A, 4000, 1, 0, 7, 128, 0, ""),
        ]
        .concat(),
    );
    let good = (DUID_A.to_owned(), "2001:db8:1::103".parse().unwrap(), 128);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lqd_leases(&lqd).contains(&good) {
        assert!(Instant::now() < deadline, "{}", lqd.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = lqd.log();
    assert!(
        log.contains("\"not-an-address\": not an IPv6 address"),
        "{log}"
    );
    assert!(log.contains("prefix_len is \"0\""), "{log}");
    // The source's metrics: the two rows rejected, no WAL held once idle (every position
    // confirmed), the newest commit time (the database's clock: this machine's).
    let deadline = Instant::now() + Duration::from_secs(25);
    let m = loop {
        let m = common::source_metrics(metrics);
        if m.get("lqd_feed_changes_rejected_total") == Some(&2.0)
            && m.get("lqd_source_lag_bytes") == Some(&0.0)
        {
            break m;
        }
        assert!(Instant::now() < deadline, "{m:#?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let newest = m["lqd_source_newest_row_timestamp_seconds"];
    assert!(
        (unix_now - newest).abs() < 10.0,
        "newest commit {newest}, now {unix_now}"
    );
    pg.sql(
        "kea",
        "DELETE FROM lease6 WHERE address IN ('not-an-address', '2001:db8:101::')",
    );

    // A requestor's base-time from before the slot is dropped.
    let w = Watching::start(&lqd, None);
    std::thread::sleep(Duration::from_millis(300));
    pg.sql(
        "kea",
        &insert("2001:db8:1::105", DUID_A, 4000, 1, 0, 9, 128, 0, ""),
    );
    let before_gap = base(&w.bindings("before the gap", 1)[0]).unwrap();
    drop(w);

    // The slot dropped by an administrator while lqd is down, and leases changed meanwhile:
    // lqd says so, takes a new snapshot, and ends what the table no longer has.
    assert!(lqd.sigterm().success());
    pg.wait_for(
        "kea",
        "SELECT active FROM pg_replication_slots WHERE slot_name = 'lqd_f'",
        "f",
        10,
    );
    pg.sql("kea", "SELECT pg_drop_replication_slot('lqd_f')");
    pg.sql(
        "kea",
        &[
            "DELETE FROM lease6 WHERE address = '2001:db8:1::101';".to_owned(),
            insert("2001:db8:1::104", DUID_B, 4000, 1, 0, 8, 128, 0, ""),
        ]
        .concat(),
    );
    lqd.kill9_and_restart_until("following the stream");
    let log = lqd.log();
    assert!(log.contains("slot lqd_f is gone"), "{log}");
    let now = wait_equal(&lqd, &pg, "kea", 10);
    assert!(
        !now.iter()
            .any(|l| l.1 == "2001:db8:1::101".parse::<Ipv6Addr>().unwrap())
    );
    assert!(log.contains("the source takes a new snapshot"), "{log}");

    // D33: lqd cannot honour a START_TIME from before the new snapshot (a lease that came and
    // went meanwhile is unknown to it): DataMissing.
    let w = Watching::start(&lqd, Some(before_gap));
    let seen = w.until("a catch-up across the gap", 10, |s| {
        s.iter()
            .any(|x| matches!(x, Seen::DataMissing | Seen::CatchUpComplete(_)))
    });
    assert!(seen.contains(&Seen::DataMissing), "{seen:#?}");
    drop(w);
    // A requestor that has a change made after the snapshot's second resumes without.
    std::thread::sleep(Duration::from_millis(1100));
    let w = Watching::start(&lqd, None);
    std::thread::sleep(Duration::from_millis(300));
    pg.sql(
        "kea",
        &insert("2001:db8:1::106", DUID_B, 4000, 1, 0, 10, 128, 0, ""),
    );
    let after_gap = base(&w.bindings("after the gap", 1)[0]).unwrap();
    drop(w);
    pg.sql(
        "kea",
        &insert("2001:db8:1::107", DUID_A, 4000, 1, 0, 11, 128, 0, ""),
    );
    wait_equal(&lqd, &pg, "kea", 10);
    let w = Watching::start(&lqd, Some(after_gap));
    let seen = w.until("a catch-up after the gap", 10, |s| {
        s.iter()
            .any(|x| matches!(x, Seen::DataMissing | Seen::CatchUpComplete(_)))
    });
    assert!(!seen.contains(&Seen::DataMissing), "{seen:#?}");
    assert!(
        seen.iter()
            .any(|x| matches!(x, Seen::Binding { client, .. } if client == DUID_A)),
        "{seen:#?}"
    );
}

#[test]
fn an_unknown_schema_version_is_refused_with_a_clear_message() {
    let pg = Pg::start("schema");
    pg.kea_db("kea");
    pg.sql("kea", "UPDATE schema_version SET version = 99, minor = 1");
    let lqd = start_lqd("schema", &pg, "kea", "lqd_s", "does not know");
    let log = lqd.log();
    assert!(
        log.contains("schema version 99.1, which lqd does not know"),
        "{log}"
    );
    assert!(log.contains("ERROR"), "{log}");
}

#[test]
fn pgoutput_of_real_wal_decodes_into_kea_rows() {
    use lqd::feed::kea::pgoutput::{Message, decode};
    use lqd::feed::kea::pgsql::kea_row;

    let pg = Pg::start("wal");
    pg.kea_db("kea");
    pg.sql(
        "kea",
        "ALTER TABLE lease6 REPLICA IDENTITY FULL; CREATE PUBLICATION p FOR TABLE lease6",
    );
    pg.sql(
        "kea",
        "SELECT 1 FROM pg_create_logical_replication_slot('w', 'pgoutput')",
    );
    pg.sql(
        "kea",
        &[
            insert(
                "2001:db8:1::100",
                DUID_A,
                4000,
                1,
                0,
                3_000_000_000,
                128,
                0,
                RELAYED,
            ),
            "UPDATE lease6 SET valid_lifetime = 5000 WHERE address = '2001:db8:1::100';".to_owned(),
            "DELETE FROM lease6 WHERE address = '2001:db8:1::100';".to_owned(),
            "TRUNCATE lease6;".to_owned(),
        ]
        .concat(),
    );
    let wal = pg.sql(
        "kea",
        "SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SELECT encode(data, 'hex') FROM \
         pg_logical_slot_peek_binary_changes('w', NULL, NULL, 'proto_version', '1', \
         'publication_names', 'p')",
    );
    let messages: Vec<Message> = wal
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| decode(&hex::decode(l).unwrap()).unwrap())
        .collect();
    let relation = messages
        .iter()
        .find_map(|m| match m {
            Message::Relation(r) => Some(r.clone()),
            _ => None,
        })
        .expect("a Relation message");
    assert_eq!(relation.name, "lease6");
    assert_eq!(relation.replica_identity, b'f');
    for c in ["address", "duid", "expire", "iaid", "state", "user_context"] {
        assert!(relation.position(c).is_some(), "{c}");
    }
    let text = |t: &lqd::feed::kea::pgoutput::Tuple, name: &str| {
        relation
            .position(name)
            .and_then(|i| t.get(i))
            .and_then(|v| v.text().map(str::to_owned))
    };
    let rows: Vec<_> = messages
        .iter()
        .filter_map(|m| match m {
            Message::Insert { new, .. } | Message::Update { new, .. } => Some(new.clone()),
            Message::Delete { old, full, .. } => {
                assert!(full, "replica identity FULL sends the whole old row");
                Some(old.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(rows.len(), 3, "{messages:?}");
    let insert_row = kea_row(|n| {
        relation
            .position(n)
            .and_then(|i| rows[0].get(i))
            .and_then(|v| v.text())
    })
    .unwrap();
    assert_eq!(
        insert_row.address,
        "2001:db8:1::100".parse::<Ipv6Addr>().unwrap()
    );
    assert_eq!(hex::encode(&insert_row.duid), DUID_A);
    assert_eq!(insert_row.iaid, 3_000_000_000);
    assert!(insert_row.user_context.contains("relays"));
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    assert!(
        (insert_row.expire - (now + 4000)).abs() < 60,
        "{insert_row:?}"
    );
    assert_eq!(text(&rows[1], "valid_lifetime").as_deref(), Some("5000"));
    assert!(matches!(
        messages
            .iter()
            .find(|m| matches!(m, Message::Update { .. })),
        Some(Message::Update { old: Some(_), .. })
    ));
    assert!(
        messages.iter().any(
            |m| matches!(m, Message::Truncate { relations } if relations.contains(&relation.id))
        )
    );
}

/// Writes one transaction per lease, `gap` apart, each a new client.
fn spaced_leases(pg: &Pg, first: u32, n: u32, gap: Duration) {
    for i in first..first + n {
        pg.sql(
            "kea",
            &insert(
                &format!("2001:db8:1::2:{i:x}"),
                &format!("00030001{:012x}", 0x0020_0000 + i),
                3600,
                1,
                0,
                200 + i,
                128,
                0,
                "",
            ),
        );
        std::thread::sleep(gap);
    }
}

/// D33: two lqd instances on one database journal each change at its commit time, so they
/// send the same Active stream, change for change, with the same base-times; one that was
/// down while changes were made, and got them late from its slot, still gives them their
/// commit times; and a requestor's base-time from one is a START_TIME at the other, which
/// catches it up with what it missed and nothing more, without DataMissing.
#[test]
fn two_instances_give_the_same_times_and_a_base_time_from_one_catches_up_at_the_other() {
    let pg = Pg::start("times");
    pg.kea_db("kea");
    pg.sql(
        "kea",
        &[
            insert("2001:db8:1::100", DUID_A, 4000, 1, 0, 1, 128, 0, ""),
            insert("2001:db8:100::", DUID_B, 4000, 2, 2, 2, 56, 0, ""),
        ]
        .concat(),
    );
    let a = start_lqd("times-a", &pg, "kea", "lqd_ta", "following the stream");
    // B's snapshot is taken a while after A's, at another point of the WAL.
    std::thread::sleep(Duration::from_millis(1100));
    spaced_leases(&pg, 0, 2, Duration::from_millis(100));
    let mut b = start_lqd("times-b", &pg, "kea", "lqd_tb", "following the stream");
    wait_equal(&a, &pg, "kea", 10);
    wait_equal(&b, &pg, "kea", 10);

    // Both live: the same changes, in the same order, with the same base-times. The
    // transactions span seconds, so the base-times differ between changes.
    let (wa, wb) = (Watching::start(&a, None), Watching::start(&b, None));
    std::thread::sleep(Duration::from_millis(300));
    spaced_leases(&pg, 2, 6, Duration::from_millis(400));
    let (sa, sb) = (wa.bindings("A live", 6), wb.bindings("B live", 6));
    assert_eq!(sa, sb, "the same Active stream from both instances");
    let seconds: BTreeSet<_> = sa.iter().filter_map(base).collect();
    assert!(seconds.len() >= 2, "changes over seconds: {sa:#?}");
    drop(wb);

    // B is down while more changes are made; A sends them with their base-times.
    let resume_at = base(sa.last().unwrap()).unwrap();
    assert!(b.sigterm().success());
    spaced_leases(&pg, 8, 5, Duration::from_millis(500));
    let missed = wa.bindings("A while B is down", 5);
    let missed_seconds: BTreeSet<_> = missed.iter().filter_map(base).collect();
    assert!(missed_seconds.len() >= 2, "{missed:#?}");
    drop(wa);
    std::thread::sleep(Duration::from_millis(1100));

    // B resumes its slot and gets those changes seconds after their commits, yet journals
    // them at their commit times: a requestor that followed A catches up at B from A's
    // base-time, and gets the changes it missed with the base-times A gave them.
    b.kill9_and_restart_until("streaming");
    wait_equal(&b, &pg, "kea", 10);
    let wb = Watching::start(&b, Some(resume_at));
    let caught = wb.until("catch-up at B", 20, |s| {
        s.iter()
            .any(|x| matches!(x, Seen::CatchUpComplete(_) | Seen::DataMissing))
    });
    assert!(
        !caught.contains(&Seen::DataMissing),
        "a base-time from A is a START_TIME at B: {caught:#?}"
    );
    for m in &missed {
        assert!(
            caught.contains(m),
            "missed at A, caught up at B: {m:?} in {caught:#?}"
        );
    }
    let total = db_leases(&pg, "kea").len();
    let sent = caught
        .iter()
        .filter(|x| matches!(x, Seen::Binding { .. }))
        .count();
    assert!(
        sent <= missed.len() + 3 && sent < total,
        "only what changed since (and the changes of the base-time's second again), not \
         all {total}: {caught:#?}"
    );
}

/// A relay layer with a relay-id (option 53: DUID 00020000000901) and a Remote-ID (option 37:
/// enterprise 2495, "juni").
const RELAYED_BOTH: &str = r#"{"ISC": {"relays": [{"hop": 0, "link": "2001:db8:1::1", "peer": "fe80::1", "options": "0x003500070002000000090100250008000009bf6a756e69"}]}}"#;

/// Every query type's Bulk answer from `lqd`.
fn bulk_answers(lqd: &Lqd) -> Vec<(String, watching::Answer)> {
    let any = Ipv6Addr::UNSPECIFIED;
    let link1: Ipv6Addr = "2001:db8:1::".parse().unwrap();
    let queries = [
        Query::LinkAddress(link1),
        Query::LinkAddress("2001:db8:2::".parse().unwrap()),
        Query::Address {
            address: "2001:db8:1::100".parse().unwrap(),
            link: any,
        },
        Query::Address {
            address: "2001:db8:100:ab00::5".parse().unwrap(),
            link: any,
        },
        Query::ClientId {
            duid: hex::decode(DUID_B).unwrap(),
            link: any,
        },
        Query::RelayId {
            duid: hex::decode("00020000000901").unwrap(),
            link: any,
        },
        Query::RemoteId {
            enterprise_number: 2495,
            remote_id: b"juni".to_vec(),
            link: any,
        },
    ];
    watching::bulk_answers(lqd, &queries)
}

/// Issue 18, real parts: two lqd instances on one database give the same Bulk answer to every
/// query type (bindings, lifetimes, relay data, base-time), and `lq watch` with both as
/// `--server` fails over from one to the other when the first is killed mid-stream,
/// resuming from its base-time there (no DataMissing, no resync), its replica equal to the
/// table at the end.
#[test]
fn two_instances_answer_alike_and_lq_watch_fails_over_between_them() {
    let pg = Pg::start("failover");
    pg.kea_db("kea");
    pg.sql(
        "kea",
        &[
            insert(
                "2001:db8:1::100",
                DUID_A,
                4000,
                1,
                0,
                1,
                128,
                0,
                RELAYED_BOTH,
            ),
            insert("2001:db8:1::101", DUID_B, 4000, 1, 0, 2, 128, 0, RELAYED),
            insert(
                "2001:db8:100:ab00::",
                DUID_B,
                4000,
                2,
                2,
                3,
                56,
                0,
                RELAYED_BOTH,
            ),
            insert("2001:db8:100:cd00::", DUID_A, 4000, 2, 2, 4, 56, 0, ""),
        ]
        .concat(),
    );
    let mut a = start_lqd("fo-a", &pg, "kea", "lqd_fa", "following the stream");
    let b = start_lqd("fo-b", &pg, "kea", "lqd_fb", "following the stream");
    // A change after both snapshots: both hold the same newest time.
    std::thread::sleep(Duration::from_millis(1100));
    pg.sql(
        "kea",
        &insert(
            "2001:db8:1::102",
            DUID_A,
            4000,
            1,
            0,
            5,
            128,
            0,
            RELAYED_BOTH,
        ),
    );
    wait_equal(&a, &pg, "kea", 10);
    wait_equal(&b, &pg, "kea", 10);
    let (from_a, from_b) = (bulk_answers(&a), bulk_answers(&b));
    for (qa, qb) in from_a.iter().zip(&from_b) {
        assert!(!qa.1.0.is_empty(), "{} answered nothing", qa.0);
        assert_eq!(qa, qb, "the same Bulk answer from both instances");
    }

    // lq watch on both links with both servers; A killed while changes flow.
    let state = a.dir.join("replica.json");
    let watch = lq::LqWatch::start(
        &a.dir,
        "failover",
        a.addr,
        &[
            "--server",
            &b.addr.to_string(),
            "--link",
            LINKS[0],
            "--link",
            LINKS[1],
            "--state",
            state.to_str().unwrap(),
        ],
    );
    watch.wait_events("catch_up_complete", 2, 20);
    let writer = {
        let socket = pg.socket_dir().to_owned();
        let port = pg.port;
        std::thread::spawn(move || {
            for i in 0..30u32 {
                let sql = insert(
                    &format!("2001:db8:1::3:{i:x}"),
                    &format!("00030001{:012x}", 0x0030_0000 + i),
                    3600,
                    1,
                    0,
                    300 + i,
                    128,
                    0,
                    "",
                );
                let out = std::process::Command::new("psql")
                    .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
                    .arg(&socket)
                    .args(["-p", &port.to_string(), "-U", "postgres", "-d", "kea", "-c"])
                    .arg(&sql)
                    .output()
                    .unwrap();
                assert!(out.status.success());
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(1200));
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    writer.join().unwrap();
    let want: lq::Bindings = {
        let mut m = lq::Bindings::new();
        for (id, addr, plen) in db_leases(&pg, "kea") {
            m.entry(id).or_default().insert((addr, plen));
        }
        m
    };
    let equal = lq::wait_until(20, || lq::state(&state).is_some_and(|(_, r)| r == want));
    assert!(
        equal,
        "the replica equals the table: {}\n{}",
        lq::diff(&lq::state(&state).map(|s| s.1).unwrap_or_default(), &want),
        watch.transcript()
    );
    let connected = watch.events_of("connected");
    let b_addr = b.addr.to_string();
    let at_b: Vec<_> = connected
        .iter()
        .filter(|e| e["server"] == b_addr.as_str())
        .collect();
    assert!(
        at_b.iter().any(|e| e["start_time_unix_s"].is_number()),
        "the watch moved to B, resuming from its base-time: {}",
        watch.transcript()
    );
    assert!(
        watch.events_of("data_missing").is_empty(),
        "no DataMissing: {}",
        watch.transcript()
    );
    assert_eq!(
        watch.events_of("synced").len(),
        1,
        "one sync, the first: {}",
        watch.transcript()
    );
}
