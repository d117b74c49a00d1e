//! The `kea-csv` source: parsing Kea's lease6 CSV (2.2 and later headers), mapping rows to
//! changes, Kea's own configuration, and following a lease file through a whole lease file
//! cleanup (LFC) cycle done by a simulated Kea; and a real lqd fed by a Kea lease file.

#[path = "common/lqd.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use common::{
    Lqd, free_metrics_addr, start_with_source, wait_for_link_addresses, wait_for_log,
    wait_source_metrics,
};
use lqd::codec::ServerTime;
use lqd::feed::kea::{
    Applied, KeaHeader, KeaMapper, parse_kea_config, parse_row, relays_from_user_context,
    strip_comments, unescape,
};
use lqd::feed::{FeedReceiver, KeaCsvSource, Wake, feed};
use lqd::store::{Change, LeaseKind, LeaseState, RemoteIdKey};
use mio::{Poll, Token, Waker};

const HEADER_22: &str = "address,duid,valid_lifetime,expire,subnet_id,pref_lifetime,lease_type,\
iaid,prefix_len,fqdn_fwd,fqdn_rev,hostname,hwaddr,state,user_context,hwtype,hwaddr_source";
const HEADER_26: &str = "address,duid,valid_lifetime,expire,subnet_id,pref_lifetime,lease_type,\
iaid,prefix_len,fqdn_fwd,fqdn_rev,hostname,hwaddr,state,user_context,hwtype,hwaddr_source,pool_id";

const DUID_A: &str = "00:03:00:01:02:00:00:00:00:01";
const DUID_B: &str = "00:01:00:01:2a:3b:4c:5d:00:11:22:33:44:55";

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn duid(s: &str) -> Vec<u8> {
    s.split(':')
        .map(|o| u8::from_str_radix(o, 16).unwrap())
        .collect()
}

/// A 2.2-format row.
#[allow(clippy::too_many_arguments)]
fn row(
    addr: &str,
    duid: &str,
    valid: u32,
    expire: u64,
    subnet: u32,
    lease_type: u8,
    iaid: u32,
    plen: u8,
    state: u8,
    ctx: &str,
) -> String {
    let pref = valid / 2;
    format!(
        "{addr},{duid},{valid},{expire},{subnet},{pref},{lease_type},{iaid},{plen},0,0,,,{state},{ctx},0,0"
    )
}

fn mapper() -> KeaMapper {
    KeaMapper::new(HashMap::from([
        (1, a("2001:db8:1::")),
        (2, a("2001:db8:2::")),
    ]))
}

fn change(m: &mut KeaMapper, h: &KeaHeader, line: &str) -> Change {
    match m.apply(&parse_row(h, line).unwrap()) {
        Applied::Change(c) => c,
        other => panic!("{line}: {other:?}"),
    }
}

#[test]
fn a_22_header_and_a_later_header_with_extra_columns_both_parse() {
    let h22 = KeaHeader::parse(HEADER_22).unwrap();
    assert_eq!(h22.columns(), 17);
    let h26 = KeaHeader::parse(HEADER_26).unwrap();
    assert_eq!(h26.columns(), 18);
    // Columns in another order are found by name.
    let shuffled = KeaHeader::parse(
        "duid,address,expire,valid_lifetime,subnet_id,pref_lifetime,lease_type,iaid,prefix_len",
    )
    .unwrap();
    let r = parse_row(
        &shuffled,
        &format!("{DUID_A},2001:db8:1::5,1700003600,3600,1,1800,0,7,128"),
    )
    .unwrap();
    assert_eq!(r.address, a("2001:db8:1::5"));
    assert_eq!(r.valid_lifetime, 3600);
    assert_eq!(r.expire, 1_700_003_600);
    assert!(KeaHeader::parse("address,duid,expire").is_err());

    let line22 = row(
        "2001:db8:1::5",
        DUID_A,
        3600,
        1_700_003_600,
        1,
        0,
        7,
        128,
        0,
        "",
    );
    let line26 = format!("{line22},3");
    let mut m = mapper();
    let c = change(&mut m, &h22, &line22);
    let mut m2 = mapper();
    let c2 = change(&mut m2, &h26, &line26);
    assert_eq!(c, c2);
    assert_eq!(&*c.client_id, duid(DUID_A).as_slice());
    assert_eq!(c.link, a("2001:db8:1::"));
    assert_eq!(c.lease.kind, LeaseKind::Address);
    assert_eq!(c.lease.prefix_len, 128);
    assert_eq!(c.lease.iaid, 7);
    assert_eq!(c.lease.valid_lifetime, 3600);
    assert_eq!(c.lease.preferred_lifetime, 1800);
    assert_eq!(c.lease.cltt, ServerTime::from_unix(1_700_000_000));
    assert_eq!(c.lease.state, LeaseState::Active);
    assert_eq!(c.relay, None);
}

#[test]
fn pd_rows_states_releases_and_deletes() {
    let h = KeaHeader::parse(HEADER_22).unwrap();
    let mut m = mapper();
    let pd = change(
        &mut m,
        &h,
        &row(
            "2001:db8:ff00::",
            DUID_B,
            7200,
            1_700_007_200,
            2,
            2,
            4_000_000_000,
            56,
            0,
            "",
        ),
    );
    assert_eq!(pd.lease.kind, LeaseKind::Prefix);
    assert_eq!(pd.lease.prefix_len, 56);
    assert_eq!(pd.lease.iaid, 4_000_000_000);
    assert_eq!(pd.link, a("2001:db8:2::"));
    // Expired-reclaimed: a copy of the last row with state 2.
    let exp = change(
        &mut m,
        &h,
        &row(
            "2001:db8:ff00::",
            DUID_B,
            7200,
            1_700_007_200,
            2,
            2,
            4_000_000_000,
            56,
            2,
            "",
        ),
    );
    assert_eq!(exp.lease.state, LeaseState::Expired);
    // Released: state 0, the DUID kept, lifetimes 0.
    let na = row(
        "2001:db8:1::9",
        DUID_A,
        3600,
        1_700_003_600,
        1,
        0,
        1,
        128,
        0,
        "",
    );
    assert_eq!(change(&mut m, &h, &na).lease.state, LeaseState::Active);
    let rel = change(
        &mut m,
        &h,
        &row(
            "2001:db8:1::9",
            DUID_A,
            0,
            1_700_000_100,
            1,
            0,
            1,
            128,
            0,
            "",
        ),
    );
    assert_eq!(rel.lease.state, LeaseState::Released);
    assert_eq!(rel.lease.valid_lifetime, 0);
    assert_eq!(&*rel.client_id, duid(DUID_A).as_slice());
    // A delete of an expired lease: lifetime 0, state 2.
    let del = change(
        &mut m,
        &h,
        &row(
            "2001:db8:ff00::",
            DUID_B,
            0,
            1_700_007_200,
            2,
            2,
            4_000_000_000,
            56,
            2,
            "",
        ),
    );
    assert_eq!(del.lease.state, LeaseState::Deleted);
    // IA_TA is not reported.
    let ta = row(
        "2001:db8:1::77",
        DUID_A,
        3600,
        1_700_003_600,
        1,
        1,
        1,
        128,
        0,
        "",
    );
    assert!(matches!(
        m.apply(&parse_row(&h, &ta).unwrap()),
        Applied::Ignored(_)
    ));
}

#[test]
fn a_declined_address_is_reported_for_the_client_that_last_held_it() {
    let h = KeaHeader::parse(HEADER_22).unwrap();
    let mut m = mapper();
    change(
        &mut m,
        &h,
        &row(
            "2001:db8:1::42",
            DUID_A,
            3600,
            1_700_003_600,
            1,
            0,
            3,
            128,
            0,
            "",
        ),
    );
    let dec = change(
        &mut m,
        &h,
        &row(
            "2001:db8:1::42",
            "00",
            86400,
            1_700_090_000,
            1,
            0,
            0,
            128,
            1,
            "",
        ),
    );
    assert_eq!(dec.lease.state, LeaseState::Declined);
    assert_eq!(&*dec.client_id, duid(DUID_A).as_slice());
    assert_eq!(dec.link, a("2001:db8:1::"));
    assert_eq!(dec.lease.iaid, 3);
    assert_eq!(dec.lease.valid_lifetime, 86400);
    // End of probation: deleted, for the same binding.
    let del = change(
        &mut m,
        &h,
        &row(
            "2001:db8:1::42",
            "00",
            0,
            1_700_090_000,
            1,
            0,
            0,
            128,
            1,
            "",
        ),
    );
    assert_eq!(del.lease.state, LeaseState::Deleted);
    assert_eq!(&*del.client_id, duid(DUID_A).as_slice());
    // A declined address nobody was known to hold says nothing.
    let orphan = row(
        "2001:db8:1::43",
        "00",
        86400,
        1_700_090_000,
        1,
        0,
        0,
        128,
        1,
        "",
    );
    assert!(matches!(
        m.apply(&parse_row(&h, &orphan).unwrap()),
        Applied::Ignored(_)
    ));
}

/// Kea's user_context with two relays, outer first, commas escaped as Kea writes them.
fn user_context() -> String {
    // Outer relay: relay-id (53) 00:02:00:00:00:09:0a:0b. Inner relay (closest to the client):
    // remote-id (37) enterprise 9 "juniper-1", interface-id (18) "eth0".
    let outer = "0035000800020000".to_owned() + "00090a0b";
    let inner = "0025000d00000009".to_owned()
        + &hex::encode("juniper-1")
        + "00120004"
        + &hex::encode("eth0");
    let ctx = format!(
        r#"{{ "ISC": {{ "relays": [ {{ "hop": 1, "link": "2001:db8:99::1", "options": "0x{outer}", "peer": "fe80::1" }}, {{ "hop": 0, "link": "2001:db8:5::1", "options": "0x{inner}", "peer": "fe80::2" }} ] }} }}"#
    );
    ctx.replace(',', "&#x2c")
}

#[test]
fn relay_ids_remote_ids_and_the_link_come_from_user_context() {
    let ctx = user_context();
    assert!(!ctx.contains(','));
    let h = KeaHeader::parse(HEADER_22).unwrap();
    let line = row(
        "2001:db8:5::7",
        DUID_A,
        3600,
        1_700_003_600,
        1,
        0,
        1,
        128,
        0,
        &ctx,
    );
    let r = parse_row(&h, &line).unwrap();
    assert!(r.user_context.contains(", "));
    let mut m = mapper();
    let c = change(&mut m, &h, &line);
    // The relay closest to the client is the last one: its link-address, not the subnet's.
    assert_eq!(c.link, a("2001:db8:5::1"));
    let relay = c.relay.expect("relay info");
    assert_eq!(
        relay.relay_ids,
        vec![vec![0, 2, 0, 0, 0, 9, 0xa, 0xb].into_boxed_slice()]
    );
    assert_eq!(
        relay.remote_ids,
        vec![RemoteIdKey {
            enterprise_number: 9,
            remote_id: b"juniper-1".to_vec().into_boxed_slice()
        }]
    );
    // The relayed message, rebuilt (D29): the outer RELAY-FORW (hop 1, its link and peer, its
    // relay-id) holding the inner one (hop 0, its link and peer, remote-id and interface-id) in
    // an OPTION_RELAY_MSG, without the client's message; the peer-address is the outer
    // relay's link-address.
    let inner = [
        "0c00",
        "20010db8000500000000000000000001",
        "fe800000000000000000000000000002",
        "0025000d00000009",
        &hex::encode("juniper-1"),
        "00120004",
        &hex::encode("eth0"),
    ]
    .concat();
    let outer = [
        "0c01",
        "20010db8009900000000000000000001",
        "fe800000000000000000000000000001",
        "003500080002000000090a0b",
        &format!("0009{:04x}", inner.len() / 2),
        &inner,
    ]
    .concat();
    let (peer, message) = relay.relay_message.as_ref().expect("the relayed message");
    assert_eq!(*peer, a("2001:db8:99::1"));
    assert_eq!(hex::encode(message), outer);
    lqd::codec::Embedded::parse(message).expect("a RELAY-FORW lqd's codec reads");
    // A relay without its peer (not Kea's format) gives no relay data rather than a guess.
    let partial = r#"{"ISC":{"relays":[{"hop":0,"link":"2001:db8:7::1","options":"0x"}]}}"#;
    assert_eq!(
        relays_from_user_context(partial)
            .unwrap()
            .info
            .relay_message,
        None
    );
    // A release written without the relays stays in the same binding.
    let rel = change(
        &mut m,
        &h,
        &row(
            "2001:db8:5::7",
            DUID_A,
            0,
            1_700_000_100,
            1,
            0,
            1,
            128,
            0,
            "",
        ),
    );
    assert_eq!(rel.link, a("2001:db8:5::1"));
    assert_eq!(rel.lease.state, LeaseState::Released);
    // A lightweight relay's :: link-address is passed over for the next relay out.
    let ldra = r#"{"ISC":{"relays":[{"hop":1,"link":"2001:db8:7::1","peer":"fe80::1","options":"0x"},{"hop":0,"link":"::","peer":"fe80::2","options":"0x"}]}}"#;
    assert_eq!(
        relays_from_user_context(ldra).unwrap().link,
        Some(a("2001:db8:7::1"))
    );
    assert_eq!(relays_from_user_context(""), None);
    assert_eq!(relays_from_user_context(r#"{"foo":1}"#), None);
    assert_eq!(unescape("a&#x2cb&#x2Cc"), "a,b,c");
}

#[test]
fn bad_rows_are_errors() {
    let h = KeaHeader::parse(HEADER_22).unwrap();
    let good = row(
        "2001:db8:1::5",
        DUID_A,
        3600,
        1_700_003_600,
        1,
        0,
        7,
        128,
        0,
        "",
    );
    assert!(parse_row(&h, &good).is_ok());
    for bad in [
        good.replace("2001:db8:1::5", "2001:db8:1::zz"),
        good.replace(DUID_A, "00:0g"),
        good.replace(",3600,", ",-1,"),
        good.replace(",1700003600,", ",soon,"),
        row(
            "2001:db8:1::5",
            DUID_A,
            3600,
            1_700_003_600,
            1,
            3,
            7,
            128,
            0,
            "",
        ),
        row(
            "2001:db8:1::5",
            DUID_A,
            3600,
            1_700_003_600,
            1,
            0,
            7,
            128,
            9,
            "",
        ),
        row("2001:db8::", DUID_A, 3600, 1_700_003_600, 1, 2, 7, 0, 0, ""),
        "2001:db8:1::5,00:01,3600".to_owned(),
        String::new(),
    ] {
        assert!(parse_row(&h, &bad).is_err(), "{bad:?} parsed");
    }
}

#[test]
fn the_subnets_of_kea_s_configuration_map_to_their_prefixes() {
    let conf = r#"
// Kea's own configuration, with comments of all three kinds.
{
  "Dhcp6": {
    # a hash comment with "quotes"
    "lease-database": { "type": "memfile", "name": "/var/lib/kea/leases6.csv" /* inline */ },
    "subnet6": [
      { "id": 1, "subnet": "2001:db8:1::/64", "comment": "has // and # inside a string" },
      { "id": 7, "subnet": "2001:db8:7:8::/64" }
    ],
    "shared-networks": [ { "name": "x", "subnet6": [ { "id": 9, "subnet": "2001:db8:9::/48" } ] } ]
  }
}
"#;
    assert!(strip_comments(conf).contains("has // and # inside a string"));
    let map = parse_kea_config(conf).unwrap();
    assert_eq!(map.len(), 3);
    assert_eq!(map[&1], a("2001:db8:1::"));
    assert_eq!(map[&7], a("2001:db8:7:8::"));
    assert_eq!(map[&9], a("2001:db8:9::"));
    assert!(parse_kea_config("{}").is_err());
    // A subnet id nothing names: ::ID.
    let h = KeaHeader::parse(HEADER_22).unwrap();
    let mut m = KeaMapper::new(map);
    let c = change(
        &mut m,
        &h,
        &row(
            "2001:db8:1::5",
            DUID_A,
            3600,
            1_700_003_600,
            300,
            0,
            7,
            128,
            0,
            "",
        ),
    );
    assert_eq!(c.link, a("::12c"));
}

#[test]
fn a_row_read_again_is_not_sent_again() {
    let h = KeaHeader::parse(HEADER_22).unwrap();
    let mut m = mapper();
    let r1 = row(
        "2001:db8:1::5",
        DUID_A,
        3600,
        1_700_003_600,
        1,
        0,
        7,
        128,
        0,
        "",
    );
    let r2 = row(
        "2001:db8:1::5",
        DUID_A,
        3600,
        1_700_007_200,
        1,
        0,
        7,
        128,
        0,
        "",
    );
    change(&mut m, &h, &r1);
    change(&mut m, &h, &r2);
    for r in [&r1, &r2] {
        assert_eq!(m.apply(&parse_row(&h, r).unwrap()), Applied::Duplicate);
    }
}

#[test]
fn deleted_leases_leave_nothing_behind_in_the_mapper() {
    // A long churn of distinct leases, each granted, renewed, then ended as Kea ends leases:
    // released, declined then deleted after probation, or reclaimed then flushed. The mapper
    // never holds more than the one lease alive at a time.
    let h = KeaHeader::parse(HEADER_22).unwrap();
    let mut m = mapper();
    let mut most = 0;
    for n in 0..6_000u32 {
        let addr = format!("2001:db8:1::{:x}:{:x}", n >> 16, n & 0xffff);
        let client = format!(
            "00:03:00:01:02:00:00:{:02x}:{:02x}:{:02x}",
            (n >> 16) & 0xff,
            (n >> 8) & 0xff,
            n & 0xff
        );
        let t = 1_700_000_000 + u64::from(n);
        let r = |duid: &str, valid: u32, expire: u64, state: u8| {
            row(&addr, duid, valid, expire, 1, 0, 7, 128, state, "")
        };
        change(&mut m, &h, &r(&client, 3600, t + 3600, 0));
        change(&mut m, &h, &r(&client, 3600, t + 7200, 0));
        most = most.max(m.remembered());
        let ends = match n % 3 {
            0 => vec![(r(&client, 0, t + 3700, 0), LeaseState::Released)],
            1 => vec![
                (r("00", 86400, t + 90_000, 1), LeaseState::Declined),
                (r("00", 0, t + 90_000, 1), LeaseState::Deleted),
            ],
            _ => vec![
                (r(&client, 3600, t + 7200, 2), LeaseState::Expired),
                (r(&client, 0, t + 7200, 2), LeaseState::Deleted),
            ],
        };
        for (line, state) in ends {
            let c = change(&mut m, &h, &line);
            assert_eq!(c.lease.state, state, "{line}");
            // The declined address and its deletion are the last holder's.
            assert_eq!(&*c.client_id, duid(&client).as_slice(), "{line}");
            assert_eq!((c.link, c.lease.iaid), (a("2001:db8:1::"), 7), "{line}");
        }
    }
    assert_eq!(most, 1);
    assert_eq!(m.remembered(), 0);
    // A deleted address given to a new client is that client's, from its own row.
    let c = change(
        &mut m,
        &h,
        &row(
            "2001:db8:1::0:1",
            DUID_B,
            3600,
            1_800_000_000,
            2,
            0,
            9,
            128,
            0,
            "",
        ),
    );
    assert_eq!(&*c.client_id, duid(DUID_B).as_slice());
    assert_eq!((c.link, c.lease.iaid), (a("2001:db8:2::"), 9));
    assert_eq!(m.remembered(), 1);
}

#[test]
fn kea_2_7_released_and_registered_states_map_and_unknown_states_are_errors() {
    let h = KeaHeader::parse(HEADER_26).unwrap();
    let mut m = mapper();
    let r = |addr: &str, duid: &str, valid: u32, expire: u64, iaid: u32, state: u8| {
        format!(
            "{},0",
            row(addr, duid, valid, expire, 1, 0, iaid, 128, state, "")
        )
    };
    let granted = change(
        &mut m,
        &h,
        &r("2001:db8:1::50", DUID_A, 3600, 1_700_003_600, 5, 0),
    );
    assert_eq!(granted.lease.state, LeaseState::Active);
    // Released and kept for lease affinity (Kea 2.7.1 and later): lifetimes 0, state 3.
    let released = change(
        &mut m,
        &h,
        &r("2001:db8:1::50", DUID_A, 0, 1_700_000_500, 5, 3),
    );
    assert_eq!(released.lease.state, LeaseState::Released);
    assert_eq!(&*released.client_id, duid(DUID_A).as_slice());
    assert_eq!((released.link, released.lease.iaid), (a("2001:db8:1::"), 5));
    // Then reclaimed and flushed: deleted (the lease had already ended).
    let flushed = change(
        &mut m,
        &h,
        &r("2001:db8:1::50", DUID_A, 0, 1_700_000_500, 5, 2),
    );
    assert_eq!(flushed.lease.state, LeaseState::Deleted);
    // Registered by the client with ADDR-REG-INFORM (RFC 9686, Kea 2.7.7 and later): IAID 0,
    // the client's own lifetimes; an active binding.
    let registered = change(
        &mut m,
        &h,
        &r("2001:db8:1::aa:bb", DUID_B, 7200, 1_700_007_200, 0, 4),
    );
    assert_eq!(registered.lease.state, LeaseState::Active);
    assert_eq!(registered.lease.kind, LeaseKind::Address);
    assert_eq!(&*registered.client_id, duid(DUID_B).as_slice());
    assert_eq!(
        (registered.lease.iaid, registered.lease.valid_lifetime),
        (0, 7200)
    );
    // The registration gone: deleted.
    let gone = change(
        &mut m,
        &h,
        &r("2001:db8:1::aa:bb", DUID_B, 0, 1_700_000_100, 0, 4),
    );
    assert_eq!(gone.lease.state, LeaseState::Deleted);
    // A state no Kea wrote yet: the row is an error naming it, never a panic.
    for state in [5u8, 9, 255] {
        let e = parse_row(
            &h,
            &r("2001:db8:1::51", DUID_A, 3600, 1_700_003_600, 5, state),
        )
        .unwrap_err();
        assert!(
            e.0.contains(&format!("state {state}: not a state lqd knows")),
            "{e}"
        );
    }
    let e = parse_row(
        &h,
        &r("2001:db8:1::51", DUID_A, 3600, 1_700_003_600, 5, 0)
            .replace(",0,,,0,", ",0,,,4294967296,"),
    )
    .unwrap_err();
    assert!(e.0.contains("state is \"4294967296\""), "{e}");
}

// ---- following a simulated Kea ----

/// What the sources of this test binary logged, debug level and up.
static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends the log of this process to `LOGS` (once; other tests may have done it).
fn capture_logs() {
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&logs);
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || LogWriter(Arc::clone(&writer)))
            .try_init();
        logs
    });
}

/// Waits up to 5 s for a log line naming `path` that contains `needle`; every line naming
/// `path` so far.
fn wait_logged(path: &Path, needle: &str) -> Vec<String> {
    let name = path.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = LOGS
            .get()
            .map(|l| String::from_utf8_lossy(&l.lock().unwrap()).into_owned())
            .unwrap_or_default();
        let lines: Vec<String> = text
            .lines()
            .filter(|l| l.contains(&name))
            .map(str::to_owned)
            .collect();
        if lines.iter().any(|l| l.contains(needle)) {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {needle:?}: {lines:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Feed {
    _poll: Poll,
    rx: FeedReceiver,
    got: Vec<Change>,
}

fn start(path: &Path) -> Feed {
    start_with(path, 1024, Wake::Inotify)
}

/// A source woken as `wake` says, on a feed of `capacity` changes: with a small one, the
/// source waits in its sends until the test drains, so the test knows where it is.
fn start_with(path: &Path, capacity: usize, wake: Wake) -> Feed {
    capture_logs();
    let poll = Poll::new().unwrap();
    let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
    let (handle, rx) = feed(capacity, waker);
    KeaCsvSource::new(path.to_owned())
        .subnets(HashMap::from([(1, a("2001:db8:1::"))]))
        .wake(wake)
        .spawn(handle)
        .unwrap();
    Feed {
        _poll: poll,
        rx,
        got: Vec::new(),
    }
}

impl Feed {
    /// Waits until `n` more changes have arrived, taking no more than that.
    fn take(&mut self, n: usize) {
        let want = self.got.len() + n;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.got.len() < want {
            assert!(
                Instant::now() < deadline,
                "{} changes of {want}",
                self.got.len()
            );
            self.rx.drain(want - self.got.len(), |c| self.got.push(c));
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until `n` changes in all have arrived, then a little more to catch extras.
    fn wait_for(&mut self, n: usize) -> &[Change] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.got.len() < n && Instant::now() < deadline {
            self.rx.drain(usize::MAX, |c| self.got.push(c));
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(350));
        self.rx.drain(usize::MAX, |c| self.got.push(c));
        assert_eq!(
            self.got.len(),
            n,
            "expected {n} changes, got {:#?}",
            self.got
        );
        &self.got
    }
}

fn append(path: &Path, lines: &[String]) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

fn suffixed(path: &Path, s: &str) -> PathBuf {
    PathBuf::from(format!("{}{s}", path.display()))
}

/// Row `k` of the test: lease `k % 5` renewed (a different expire each time).
fn nth(k: u64) -> String {
    let addr = format!("2001:db8:1::{:x}", 0x100 + k % 5);
    row(&addr, DUID_A, 3600, 1_700_000_000 + k, 1, 0, 1, 128, 0, "")
}

fn expires(changes: &[Change]) -> Vec<u32> {
    changes
        .iter()
        .map(|c| c.lease.cltt.0 + c.lease.valid_lifetime)
        .collect()
}

fn want(ks: std::ops::Range<u64>) -> Vec<u32> {
    ks.map(|k| ServerTime::from_unix(1_700_000_000 + k).0)
        .collect()
}

/// Runs a test body once for each [`Wake`]: inotify (lqd's default) and polling only (the
/// fallback on file systems without inotify). A lease file cleanup must be as safe with either.
macro_rules! with_each_wake {
    ($name:ident, $body:ident) => {
        mod $name {
            #[test]
            fn inotify() {
                super::$body(lqd::feed::Wake::Inotify);
            }

            #[test]
            fn polling() {
                super::$body(lqd::feed::Wake::Polling);
            }
        }
    };
}

/// With inotify asked for, the source was not left polling (it logs that it cannot watch).
fn assert_watched(path: &Path, wake: Wake) {
    let log = wait_logged(path, "read the lease file to its end");
    if wake == Wake::Inotify {
        assert!(!log.iter().any(|l| l.contains("cannot watch")), "{log:#?}");
    }
}

with_each_wake!(
    following_through_a_whole_lfc_cycle_loses_and_repeats_nothing,
    whole_lfc_cycle
);

fn whole_lfc_cycle(wake: Wake) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kea-leases6.csv");
    append(&path, &[HEADER_22.to_owned()]);
    append(&path, &(0..10).map(nth).collect::<Vec<_>>());
    let mut feed = start_with(&path, 1024, wake);
    assert_eq!(expires(feed.wait_for(10)), want(0..10));

    // Kea appends, with a partial last line written in two steps and a bad row.
    append(&path, &(10..15).map(nth).collect::<Vec<_>>());
    {
        let line = nth(15);
        let (x, y) = line.split_at(20);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(x.as_bytes()).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(250));
        writeln!(f, "{y}").unwrap();
        writeln!(f, "this,is,not,a,lease").unwrap();
    }
    assert_eq!(expires(feed.wait_for(16)), want(0..16));

    // LFC step 1: Kea renames the file to .1 and starts a new one with the header; a few rows
    // still went to the old file just before (Kea closes it first).
    append(&path, &(16..18).map(nth).collect::<Vec<_>>());
    fs::rename(&path, suffixed(&path, ".1")).unwrap();
    append(&path, &[HEADER_22.to_owned()]);
    append(&path, &(18..21).map(nth).collect::<Vec<_>>());
    assert_eq!(expires(feed.wait_for(21)), want(0..21));

    // Step 2: kea-lfc writes .output from .2 (none yet) and .1: the last row of each lease.
    let compacted: Vec<String> = std::iter::once(HEADER_22.to_owned())
        .chain((13..18).map(nth))
        .collect();
    append(&suffixed(&path, ".output"), &compacted);
    append(&path, &[nth(21)]);
    // Step 3: .output → .completed; step 4: delete .1; step 5: .completed → .2.
    fs::rename(suffixed(&path, ".output"), suffixed(&path, ".completed")).unwrap();
    append(&path, &[nth(22)]);
    fs::remove_file(suffixed(&path, ".1")).unwrap();
    append(&path, &[nth(23)]);
    fs::rename(suffixed(&path, ".completed"), suffixed(&path, ".2")).unwrap();
    append(&path, &(24..26).map(nth).collect::<Vec<_>>());
    assert_eq!(expires(feed.wait_for(26)), want(0..26));

    // A second cycle: the main file again goes to .1 (and is deleted at once).
    fs::rename(&path, suffixed(&path, ".1")).unwrap();
    append(&path, &[HEADER_22.to_owned(), nth(26)]);
    fs::remove_file(suffixed(&path, ".1")).unwrap();
    append(&path, &[nth(27)]);
    assert_eq!(expires(feed.wait_for(28)), want(0..28));
    assert_watched(&path, wake);
}

/// Rows the concurrent cleanup test writes.
const ROWS: u64 = 4000;
/// How often Kea moves its lease file aside in that test (when the last cleanup has finished):
/// Kea's `lfc-interval` is in seconds; this is shorter, and still longer than the polling
/// fallback's interval, since a source that falls a whole cleanup behind misses the rows of
/// the file that cleanup deleted (the module documentation of the source says so).
const LFC_INTERVAL: Duration = Duration::from_millis(250);

/// Row `k` of the concurrent test: lease `k % 64` renewed (every row differs).
fn nth64(k: u64) -> String {
    let addr = format!("2001:db8:1::{:x}", 0x1000 + k % 64);
    row(&addr, DUID_A, 3600, 1_700_000_000 + k, 1, 0, 1, 128, 0, "")
}

/// kea-lfc: compacts `.2` (if any) and `.1` into `.output` (the last row of each lease), then
/// `.output` → `.completed`, deletes `.1`, `.completed` → `.2`, pausing between the steps so
/// that Kea's writes fall between them.
fn kea_lfc(path: &Path) {
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    for suffix in [".2", ".1"] {
        let Ok(text) = fs::read_to_string(suffixed(path, suffix)) else {
            continue;
        };
        for l in text.lines().skip(1).filter(|l| !l.is_empty()) {
            let addr = l.split(',').next().unwrap_or_default().to_owned();
            last.insert(addr, l.to_owned());
        }
    }
    let pause = || std::thread::sleep(Duration::from_millis(3));
    append(&suffixed(path, ".output"), &header_and(last.into_values()));
    pause();
    fs::rename(suffixed(path, ".output"), suffixed(path, ".completed")).unwrap();
    pause();
    fs::remove_file(suffixed(path, ".1")).unwrap();
    pause();
    fs::rename(suffixed(path, ".completed"), suffixed(path, ".2")).unwrap();
}

with_each_wake!(
    cleanups_while_kea_keeps_writing_lose_and_repeat_nothing,
    cleanups_while_writing
);

/// Kea (one thread) appends rows one write at a time without stopping, and every
/// [`LFC_INTERVAL`] closes its file, renames it to `.1`, starts a new one with the header
/// and starts kea-lfc (another thread), unless the last kea-lfc still runs (`.1` is there), as
/// Kea's lease file cleanup does. The source must send every row once, in order.
fn cleanups_while_writing(wake: Wake) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kea-leases6.csv");
    append(&path, &header_and((0..10).map(nth64)));
    let mut feed = start_with(&path, 1 << 16, wake);
    let kea = {
        let path = path.clone();
        std::thread::spawn(move || {
            let open = || OpenOptions::new().append(true).open(&path).unwrap();
            let mut file = open();
            let mut lfcs = Vec::new();
            let mut last = Instant::now();
            let mut k = 10;
            while k < ROWS {
                if last.elapsed() >= LFC_INTERVAL && !suffixed(&path, ".1").exists() {
                    // A burst of rows, and at once the cleanup: the source may not have read
                    // them when the file is renamed and a new one is at the path.
                    let end = (k + 32).min(ROWS);
                    let burst: String = (k..end).map(|j| format!("{}\n", nth64(j))).collect();
                    file.write_all(burst.as_bytes()).unwrap();
                    k = end;
                    drop(file);
                    fs::rename(&path, suffixed(&path, ".1")).unwrap();
                    fs::write(&path, format!("{HEADER_22}\n")).unwrap();
                    file = open();
                    last = Instant::now();
                    let path = path.clone();
                    lfcs.push(std::thread::spawn(move || kea_lfc(&path)));
                    continue;
                }
                file.write_all(format!("{}\n", nth64(k)).as_bytes())
                    .unwrap();
                if k % 4 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
                k += 1;
            }
            let cleanups = lfcs.len();
            for l in lfcs {
                l.join().unwrap();
            }
            cleanups
        })
    };
    let cleanups = kea.join().unwrap();
    // Every row, then a little longer for any sent twice.
    let deadline = Instant::now() + Duration::from_secs(20);
    while feed.got.len() < ROWS as usize && Instant::now() < deadline {
        feed.rx.drain(usize::MAX, |c| feed.got.push(c));
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(350));
    feed.rx.drain(usize::MAX, |c| feed.got.push(c));
    let got = expires(&feed.got);
    let expected = want(0..ROWS);
    let first_wrong = (0..got.len().max(expected.len())).find(|&i| got.get(i) != expected.get(i));
    assert!(
        first_wrong.is_none(),
        "{} changes for {ROWS} rows; from change {first_wrong:?} on: got {:?}, want {:?}",
        got.len(),
        &got[first_wrong.unwrap_or(0).min(got.len())..][..got.len().min(8)].to_vec(),
        &expected[first_wrong.unwrap_or(0).min(expected.len())..][..8.min(expected.len())],
    );
    assert!(cleanups >= 3, "only {cleanups} cleanups ran");
    let log = wait_logged(&path, "was replaced");
    let replaced = log.iter().filter(|l| l.contains("was replaced")).count();
    assert!(replaced >= cleanups, "{cleanups} cleanups: {log:#?}");
    assert_watched(&path, wake);
}

#[test]
fn at_start_the_files_kea_loads_are_read_in_kea_s_order() {
    // Mid-cleanup: .2 (older), .1 (newer), the current file; and a stale .completed absent.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases6.csv");
    let two: Vec<String> = std::iter::once(HEADER_22.to_owned())
        .chain((0..5).map(nth))
        .collect();
    append(&suffixed(&path, ".2"), &two);
    let one: Vec<String> = std::iter::once(HEADER_26.to_owned())
        .chain((5..8).map(|k| format!("{},0", nth(k))))
        .collect();
    append(&suffixed(&path, ".1"), &one);
    append(&path, &[HEADER_22.to_owned(), nth(8), nth(9)]);
    let mut feed = start(&path);
    assert_eq!(expires(feed.wait_for(10)), want(0..10));

    // With a .completed present, .2 and .1 are ignored: .completed already holds them.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases6.csv");
    append(&suffixed(&path, ".2"), &[HEADER_22.to_owned(), nth(0)]);
    append(&suffixed(&path, ".1"), &[HEADER_22.to_owned(), nth(1)]);
    append(
        &suffixed(&path, ".completed"),
        &[HEADER_22.to_owned(), nth(2), nth(3)],
    );
    append(&path, &[HEADER_22.to_owned(), nth(4)]);
    let mut feed = start(&path);
    assert_eq!(expires(feed.wait_for(3)), want(2..5));
}

/// The header, then `rows`.
fn header_and(rows: impl Iterator<Item = String>) -> Vec<String> {
    std::iter::once(HEADER_22.to_owned()).chain(rows).collect()
}

with_each_wake!(
    an_lfc_finishing_between_reading_2_and_1_at_start_loses_nothing,
    lfc_finishing_at_start
);

fn lfc_finishing_at_start(wake: Wake) {
    // Mid-cleanup at start: .2 (the last cleanup's output), .1 (the file Kea moved aside,
    // which kea-lfc is compacting now), and the current file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases6.csv");
    append(&suffixed(&path, ".2"), &header_and((0..5).map(nth)));
    append(&suffixed(&path, ".1"), &header_and((5..8).map(nth)));
    append(&path, &header_and((8..10).map(nth)));
    // A feed of one change: once the first change of .2 has come, the source is held in .2's
    // sends until the test drains more.
    let mut feed = start_with(&path, 1, wake);
    feed.take(1);
    // kea-lfc finishes now: .output (the last row of each lease of .2 and .1) becomes
    // .completed, .1 is deleted, .completed becomes .2. Rows 5 to 7 are only in the new .2.
    append(&suffixed(&path, ".output"), &header_and((3..8).map(nth)));
    fs::rename(suffixed(&path, ".output"), suffixed(&path, ".completed")).unwrap();
    fs::remove_file(suffixed(&path, ".1")).unwrap();
    fs::rename(suffixed(&path, ".completed"), suffixed(&path, ".2")).unwrap();
    // Nothing is lost, and the rows of the new .2 already sent are not sent again.
    assert_eq!(expires(feed.wait_for(10)), want(0..10));
    let log = wait_logged(&path, "reading them again");
    assert!(
        log.iter().any(|l| l.contains("leases6.csv.2 (6 lines)")),
        "{log:#?}"
    );
}

#[test]
fn a_repeated_header_row_is_not_a_bad_row_and_an_unknown_state_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases6.csv");
    let unknown = row(
        "2001:db8:1::77",
        DUID_A,
        3600,
        1_700_003_600,
        1,
        0,
        1,
        128,
        0,
        "",
    )
    .replace(",0,,,0,", ",0,,,7,");
    append(
        &path,
        &[
            HEADER_22.to_owned(),
            nth(0),
            // Written again mid-file, the same and (after an upgrade) with more columns.
            HEADER_22.to_owned(),
            nth(1),
            HEADER_26.to_owned(),
            format!("{},0", nth(2)),
            format!("{unknown},0"),
            format!("{},0", nth(3)),
        ],
    );
    let mut feed = start(&path);
    assert_eq!(expires(feed.wait_for(4)), want(0..4));
    let log = wait_logged(&path, "line 7 skipped: state 7: not a state lqd knows");
    let skipped: Vec<&String> = log.iter().filter(|l| l.contains("skipped")).collect();
    assert_eq!(skipped.len(), 1, "{log:#?}");
}

with_each_wake!(
    a_rewritten_lease_file_sends_only_what_changed,
    rewritten_lease_file
);

fn rewritten_lease_file(wake: Wake) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases6.csv");
    append(&path, &[HEADER_22.to_owned()]);
    append(&path, &(0..10).map(nth).collect::<Vec<_>>());
    let mut feed = start_with(&path, 1024, wake);
    feed.wait_for(10);
    // Kea rewrites the file (a new file renamed over it) with the last row of every lease,
    // plus one new row.
    let tmp = dir.path().join("new.csv");
    append(
        &tmp,
        &std::iter::once(HEADER_26.to_owned())
            .chain((5..11).map(|k| format!("{},0", nth(k))))
            .collect::<Vec<_>>(),
    );
    fs::rename(&tmp, &path).unwrap();
    let got = feed.wait_for(11);
    assert_eq!(expires(&got[10..]), want(10..11));
}

// ---- a real lqd ----

const LINK: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 7, 0, 0, 0, 1);

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Client `n` holds 2001:db8:0:7::`n`, relayed from `LINK` (Kea's extended info); `valid` 0
/// releases it.
fn client(n: u16, valid: u32) -> String {
    client_at(n, valid, now_unix())
}

/// [`client`] with the row's time (`expire − valid_lifetime`) given, Unix seconds.
fn client_at(n: u16, valid: u32, time: u64) -> String {
    let ctx = format!(
        r#"{{"ISC":{{"relays":[{{"hop":0,"link":"{LINK}","peer":"fe80::1","options":"0x00350004000200aa"}}]}}}}"#
    )
    .replace(',', "&#x2c");
    row(
        &format!("2001:db8:0:7::{n:x}"),
        &format!("00:03:00:01:02:00:00:00:00:{n:02x}"),
        valid,
        time + u64::from(valid),
        1,
        0,
        1,
        128,
        0,
        &ctx,
    )
}

/// Waits up to 10 s until a Bulk query for `LINK` shows exactly client numbers `ns`.
fn wait_for_addresses(lqd: &Lqd, ns: &[u16]) {
    let wanted: BTreeSet<Ipv6Addr> = ns
        .iter()
        .map(|&n| Ipv6Addr::new(0x2001, 0xdb8, 0, 7, 0, 0, 0, n))
        .collect();
    wait_for_link_addresses(lqd, LINK, &wanted);
}

#[test]
fn a_real_lqd_follows_a_kea_lease_file_through_a_cleanup() {
    let data = tempfile::tempdir().unwrap();
    let path = data.path().join("kea-leases6.csv");
    append(
        &path,
        &[
            HEADER_22.to_owned(),
            client(1, 7200),
            "2001:db8:0:7::99,not-a-duid,7200,1,1,1,0,1,128,0,0,,,0,,0,0".to_owned(),
            client(2, 7200),
            client(3, 7200),
        ],
    );
    let source = format!("kea-csv:{}", path.display());
    let lqd = start_with_source(
        "kea-csv",
        &["--source", &source],
        "",
        &format!("source: {source}"),
    );
    wait_for_addresses(&lqd, &[1, 2, 3]);
    wait_for_log(&lqd, "line 3 skipped", 5);

    // LFC: renamed to .1 with a release just before, a new file with a new client.
    append(&path, &[client(1, 0)]);
    fs::rename(&path, suffixed(&path, ".1")).unwrap();
    append(&path, &[HEADER_22.to_owned(), client(4, 7200)]);
    wait_for_addresses(&lqd, &[2, 3, 4]);
    wait_for_log(&lqd, "the lease file was replaced", 5);
}

#[test]
fn lqd_s_metrics_count_rejected_rows_the_lag_and_the_newest_row_time() {
    let data = tempfile::tempdir().unwrap();
    let path = data.path().join("kea-leases6.csv");
    let t = now_unix();
    // The newest row is not the last one: the time only grows.
    append(
        &path,
        &[
            HEADER_22.to_owned(),
            client_at(1, 7200, t - 5),
            client_at(2, 7200, t + 3),
            client_at(3, 7200, t - 2),
        ],
    );
    let metrics = free_metrics_addr();
    let source = format!("kea-csv:{}", path.display());
    let lqd = start_with_source(
        "kea-csv-metrics",
        &["--source", &source],
        &format!("metrics_listen = \"{metrics}\"\n"),
        &format!("source: {source}"),
    );
    wait_for_addresses(&lqd, &[1, 2, 3]);
    let m = wait_source_metrics(
        metrics,
        &[
            ("lqd_feed_changes_rejected_total", 0.0),
            ("lqd_source_lag_bytes", 0.0),
            ("lqd_source_newest_row_timestamp_seconds", (t + 3) as f64),
        ],
    );
    assert_eq!(m["lqd_feed_changes_applied_total"], 3.0, "{m:#?}");

    // A bad row, then a good one.
    append(
        &path,
        &[
            "2001:db8:0:7::99,not-a-duid,7200,1,1,1,0,1,128,0,0,,,0,,0,0".to_owned(),
            client_at(4, 7200, t + 7),
        ],
    );
    wait_for_addresses(&lqd, &[1, 2, 3, 4]);
    wait_source_metrics(
        metrics,
        &[
            ("lqd_feed_changes_rejected_total", 1.0),
            ("lqd_source_lag_bytes", 0.0),
            ("lqd_source_newest_row_timestamp_seconds", (t + 7) as f64),
        ],
    );

    // Kea has written half a row: that much is not taken yet; the rest of it ends the lag.
    let row = format!("{}\n", client_at(5, 7200, t + 11));
    let (first, rest) = row.split_at(40);
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(first.as_bytes()).unwrap();
    wait_source_metrics(metrics, &[("lqd_source_lag_bytes", first.len() as f64)]);
    f.write_all(rest.as_bytes()).unwrap();
    writeln!(f, "still,not,a,row").unwrap();
    wait_for_addresses(&lqd, &[1, 2, 3, 4, 5]);
    wait_source_metrics(
        metrics,
        &[
            ("lqd_feed_changes_rejected_total", 2.0),
            ("lqd_source_lag_bytes", 0.0),
            ("lqd_source_newest_row_timestamp_seconds", (t + 11) as f64),
        ],
    );
    wait_for_log(&lqd, "line 5 skipped", 5);
    wait_for_log(&lqd, "line 8 skipped", 5);
}
