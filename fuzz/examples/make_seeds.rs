//! Writes the seed corpora of the targets added for issue 13 (`session`, `journal`, `jsonl`,
//! `kea_csv`, `config`) into `fuzz/seeds/<target>/`, from real examples: leasequeries built
//! with the codec's builder, journals written by the store, JSON lines and TOML from the
//! repository's documentation and tests, and Kea rows in the format of `tests/feed_kea.rs`.
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example make_seeds
//! ```

use std::fs;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use lqd::codec::{BuildOptions, MessageBuilder, OptionCode, QueryType, ServerTime};
use lqd::store::journal::{HEADER_LEN, Journal};
use lqd::store::{History, LeaseState, Store};
use lqd_fuzz::fixture::{self, Rng, T0};

const REQUESTOR: [u8; 10] = [0, 3, 0, 1, 0, 0x11, 0x22, 0x33, 0x44, 0x55];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = root().join("fuzz/seeds").join(target);
    fs::create_dir_all(&dir).expect("seed directory");
    fs::write(dir.join(name), bytes).expect("seed file");
}

fn read(path: &str) -> String {
    fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The texts between `open` and `close` in `text`.
fn between<'a>(text: &'a str, open: &str, close: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(close) else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

fn frame(b: MessageBuilder) -> Vec<u8> {
    b.build_frame().expect("a query")
}

fn bulk(xid: u32) -> MessageBuilder {
    MessageBuilder::leasequery(xid).client_id(&REQUESTOR)
}

fn active(xid: u32) -> MessageBuilder {
    MessageBuilder::active_leasequery(xid).client_id(&REQUESTOR)
}

fn session_seeds() {
    let any = Ipv6Addr::UNSPECIFIED;
    let by_link = |xid, k| {
        frame(
            bulk(xid)
                .oro(&[OptionCode::LqBaseTime, OptionCode::LqRelayData])
                .lq_query(QueryType::ByLinkAddress, fixture::link(k), |q| q),
        )
    };
    let by_relay = |xid| {
        frame(bulk(xid).lq_query(QueryType::ByRelayId, any, |q| {
            q.relay_id(&fixture::relay_id(1))
        }))
    };
    let by_remote = |xid| {
        let r = fixture::remote_id(3);
        frame(
            bulk(xid).lq_query(QueryType::ByRemoteId, fixture::link(4), |q| {
                q.remote_id(r.enterprise_number, &r.remote_id)
            }),
        )
    };
    let by_client = |xid| {
        frame(bulk(xid).lq_query(QueryType::ByClientId, any, |q| {
            q.client_id(&fixture::client(12))
                .oro(&[OptionCode::LqRelayData])
        }))
    };
    let by_address = |xid, n| {
        frame(bulk(xid).lq_query(QueryType::ByAddress, any, |q| {
            q.iaaddr(fixture::address_of(n), 0, 0)
        }))
    };
    let in_prefix = |xid| {
        let (p, _) = fixture::prefix_of(9);
        let a = Ipv6Addr::from(u128::from(p) | 0x1234);
        frame(bulk(xid).lq_query(QueryType::ByAddress, any, |q| q.iaaddr(a, 0, 0)))
    };
    let windowed = |xid| {
        frame(
            bulk(xid)
                .lq_query(QueryType::ByLinkAddress, fixture::link(2), |q| q)
                .start_time(ServerTime(T0.0 - 600))
                .end_time(ServerTime(T0.0 - 300)),
        )
    };
    let active_all = |xid| frame(active(xid).oro(&[OptionCode::LqBaseTime]));
    let active_link =
        |xid, k| frame(active(xid).lq_query(QueryType::ByLinkAddress, fixture::link(k), |q| q));
    let active_relay = |xid| {
        frame(active(xid).lq_query(QueryType::ByRelayId, any, |q| {
            q.relay_id(&fixture::relay_id(2))
        }))
    };
    let catch_up = |xid, back: u32| frame(active(xid).start_time(ServerTime(T0.0 - back)));
    let starttls =
        frame(MessageBuilder::new(lqd::codec::MessageType::StartTls, 1).client_id(&REQUESTOR));

    // Name, control octets, the frames of the stream.
    type Seed = (&'static str, [u8; 4], Vec<Vec<u8>>);
    let seeds: Vec<Seed> = vec![
        ("bulk_by_link", [0x03, 0x40, 0x01, 0], vec![by_link(1, 1)]),
        (
            "bulk_by_link_small_reads_low_water",
            [0x31, 0x07, 0x02, 0],
            vec![by_link(2, 3)],
        ),
        ("bulk_by_relay_id", [0x13, 0x40, 0x03, 0], vec![by_relay(3)]),
        (
            "bulk_by_remote_id",
            [0x03, 0x40, 0x04, 0],
            vec![by_remote(4)],
        ),
        (
            "bulk_by_client_id",
            [0x03, 0x40, 0x05, 0],
            vec![by_client(5)],
        ),
        (
            "bulk_by_address",
            [0x03, 0x40, 0x06, 0],
            vec![by_address(6, 40)],
        ),
        ("bulk_in_prefix", [0x03, 0x40, 0x07, 0], vec![in_prefix(7)]),
        ("bulk_windowed", [0x03, 0x40, 0x08, 0], vec![windowed(8)]),
        (
            "bulk_four_at_once",
            [0x23, 0x0f, 0x09, 0],
            vec![by_link(1, 1), by_relay(2), by_remote(3), by_address(4, 2)],
        ),
        (
            "bulk_one_at_a_time",
            [0x20, 0x40, 0x0a, 0],
            vec![by_link(1, 2), by_client(2), by_link(3, 4)],
        ),
        (
            "bulk_duplicate_xid",
            [0x01, 0x40, 0x0b, 0],
            vec![by_link(9, 1), by_link(9, 2)],
        ),
        ("active_all", [0x47, 0x40, 0x07, 1], vec![active_all(1)]),
        (
            "active_by_link",
            [0x43, 0x02, 0x17, 2],
            vec![active_link(2, 3)],
        ),
        (
            "active_by_relay_id",
            [0x13, 0x40, 0x27, 3],
            vec![active_relay(3)],
        ),
        (
            "active_catch_up",
            [0x03, 0x40, 0x37, 4],
            vec![catch_up(4, 300)],
        ),
        (
            "active_catch_up_data_missing",
            [0x43, 0x40, 0x47, 5],
            vec![catch_up(5, 100_000)],
        ),
        ("active_off", [0x07, 0x40, 0x01, 6], vec![active_all(6)]),
        (
            "active_catch_up_off",
            [0x0b, 0x40, 0x01, 7],
            vec![catch_up(7, 60)],
        ),
        (
            "active_and_bulk_keepalive",
            [0x83, 0xc0, 0x57, 8],
            vec![active_link(1, 1), by_link(2, 2)],
        ),
        (
            "starttls_then_bulk",
            [0x03, 0x40, 0x01, 9],
            vec![starttls.clone(), by_address(2, 5)],
        ),
        (
            "starttls_later_closes",
            [0x03, 0x40, 0x01, 10],
            vec![by_address(2, 5), starttls],
        ),
        (
            "shutdown_mid_answer",
            [0xb3, 0x40, 0x00, 11],
            vec![by_link(1, 1), active_all(2)],
        ),
    ];
    for (name, head, frames) in seeds {
        let mut input = head.to_vec();
        for f in frames {
            input.extend_from_slice(&f);
        }
        write("session", &format!("{name}.bin"), &input);
    }
    // A reply is not a requestor's message, and a bad length prefix closes too.
    let mut bad = vec![0x03, 0x40, 0, 0];
    bad.extend_from_slice(&frame(MessageBuilder::reply(5).client_id(&REQUESTOR)));
    write("session", "reply_from_requestor.bin", &bad);
    let mut bad = vec![0x03, 0x40, 0, 0];
    bad.extend_from_slice(&by_link(1, 1));
    bad.extend_from_slice(&[0, 2, 14, 0]);
    write("session", "short_frame_after_query.bin", &bad);
}

/// A journal of `ring` octets after `changes` random changes; its file bytes.
fn journal_of(ring: usize, changes: usize, seed: u64) -> Vec<u8> {
    let journal = Journal::format(vec![0; HEADER_LEN + ring]).expect("format");
    let (mut h, _) = History::open(Store::new(), journal);
    let mut rng = Rng(seed);
    let mut now = T0;
    for _ in 0..changes {
        now = ServerTime(now.0 + rng.below(5) as u32);
        let c = fixture::random_change(&mut rng, now);
        h.apply(&c, now).expect("apply");
    }
    let (_, journal) = h.into_parts();
    journal.into_inner()
}

fn journal_seeds() {
    // Raw files: a fresh journal, one that wrapped and evicted, one with a torn last record.
    write(
        "journal",
        "raw_fresh.bin",
        &journal_of(256, 0, 1)[..HEADER_LEN + 256],
    );
    let wrapped = journal_of(2048, 40, 2);
    write("journal", "raw_wrapped_2k.bin", &wrapped);
    let mut torn = journal_of(1024, 6, 3);
    let used = torn.iter().rposition(|&b| b != 0).expect("records");
    torn[used - 3] ^= 0x5a;
    write("journal", "raw_torn_last_record.bin", &torn);

    // Structured: the same header slot and ring, so the header stays valid under mutation.
    write(
        "journal",
        "ring_few_records.bin",
        &fixture::journal_input(&journal_of(4096, 8, 4)),
    );
    write(
        "journal",
        "ring_wrapped_evicted.bin",
        &fixture::journal_input(&journal_of(4096, 60, 5)),
    );
    write(
        "journal",
        "ring_wrapped_2k.bin",
        &fixture::journal_input(&wrapped),
    );
    let mut damaged = journal_of(4096, 30, 6);
    damaged[HEADER_LEN + 700] ^= 0xff;
    write(
        "journal",
        "ring_damaged_middle.bin",
        &fixture::journal_input(&damaged),
    );
    write(
        "journal",
        "ring_torn_last_record.bin",
        &fixture::journal_input(&torn),
    );
    let mut two_slots = fixture::journal_input(&journal_of(2048, 12, 7));
    two_slots[0] = 4;
    write("journal", "ring_two_slots.bin", &two_slots);
}

fn jsonl_seeds() {
    let doc = read("src/feed/jsonl.rs");
    let lines: Vec<&str> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("//! "))
        .filter(|l| l.starts_with("{\"client_id\""))
        .collect();
    let tests = read("tests/feed_jsonl.rs");
    let test_lines: Vec<&str> = between(&tests, "r#\"", "\"#")
        .into_iter()
        .filter(|l| l.starts_with("{\"client_id\"") && !l.contains("{{"))
        .collect();
    let mut all = Vec::new();
    for (i, l) in lines.iter().chain(&test_lines).enumerate() {
        // Control octet: whole-line reads for some, small reads for others.
        let mut seed = vec![(i as u8 * 7) & 0x3f];
        seed.extend_from_slice(l.as_bytes());
        seed.push(b'\n');
        write("jsonl", &format!("line_{i}.bin"), &seed);
        all.extend_from_slice(l.as_bytes());
        all.extend_from_slice(b"\r\n\n");
    }
    let mut stream = vec![0x05];
    stream.extend_from_slice(&all);
    stream.extend_from_slice(b"not json\n{\"client_id\":\"\"}\n[1,2]\n");
    write("jsonl", "stream_mixed.bin", &stream);
    let mut rfc = vec![0x3f];
    rfc.extend_from_slice(
        br#"{"client_id":"0003000102","link":"2001:db8::1","kind":"na","address":"2001:db8::5","iaid":1,"preferred_lifetime":0,"valid_lifetime":0,"cltt":"2136-02-07T06:28:15Z","state":"deleted","relay":null}"#,
    );
    write("jsonl", "rfc3339_last_second.bin", &rfc);
}

const HEADER_22: &str = "address,duid,valid_lifetime,expire,subnet_id,pref_lifetime,lease_type,\
iaid,prefix_len,fqdn_fwd,fqdn_rev,hostname,hwaddr,state,user_context,hwtype,hwaddr_source";
const DUID_A: &str = "00:03:00:01:02:00:00:00:00:01";
const DUID_B: &str = "00:01:00:01:2a:3b:4c:5d:00:11:22:33:44:55";

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

fn user_context() -> String {
    let outer = "0035000800020000".to_owned() + "00090a0b";
    let inner = "0025000d00000009".to_owned() + "6a756e697065722d31" + "00120004" + "65746830";
    let ctx = format!(
        r#"{{ "ISC": {{ "relays": [ {{ "hop": 1, "link": "2001:db8:99::1", "options": "0x{outer}", "peer": "fe80::1" }}, {{ "hop": 0, "link": "2001:db8:5::1", "options": "0x{inner}", "peer": "fe80::2" }} ] }} }}"#
    );
    ctx.replace(',', "&#x2c")
}

fn kea_seeds() {
    let rows = [
        row(
            "2001:db8:1::5",
            DUID_A,
            3600,
            1_700_003_600,
            1,
            0,
            1,
            128,
            0,
            "",
        ),
        row(
            "2001:db8:2:100::",
            DUID_B,
            7200,
            1_700_007_200,
            2,
            2,
            5,
            56,
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
            1,
            128,
            0,
            "",
        ),
        row(
            "2001:db8:1::5",
            "00",
            3600,
            1_700_003_700,
            1,
            0,
            0,
            128,
            1,
            "",
        ),
        row(
            "2001:db8:1::6",
            DUID_B,
            0,
            1_700_000_000,
            1,
            0,
            3,
            128,
            0,
            "",
        ),
        row(
            "2001:db8:1::7",
            DUID_A,
            3600,
            1_700_003_600,
            1,
            0,
            1,
            128,
            3,
            "",
        ),
        row(
            "2001:db8:9::8",
            DUID_A,
            3600,
            1_700_003_600,
            9,
            1,
            1,
            128,
            0,
            "",
        ),
        row(
            "2001:db8:5::7",
            DUID_A,
            3600,
            1_700_003_600,
            1,
            0,
            1,
            128,
            0,
            &user_context(),
        ),
        row(
            "2001:db8:1::9",
            DUID_B,
            3600,
            1_700_003_600,
            1,
            0,
            1,
            128,
            4,
            "",
        ),
    ];
    // Mode 0: rows after the 2.2 header the target supplies.
    for (i, r) in rows.iter().enumerate() {
        let mut s = vec![0u8];
        s.extend_from_slice(r.as_bytes());
        s.push(b'\n');
        write("kea_csv", &format!("row_{i}.bin"), &s);
    }
    // Mode 2: a whole file with its header, a repeated header, CRLF and a bad row.
    let mut file = vec![2u8];
    file.extend_from_slice(HEADER_22.as_bytes());
    file.push(b'\n');
    for r in &rows {
        file.extend_from_slice(r.as_bytes());
        file.extend_from_slice(b"\r\n");
    }
    file.extend_from_slice(format!("{HEADER_22},pool_id\n").as_bytes());
    file.extend_from_slice(format!("{},0\n", rows[1]).as_bytes());
    file.extend_from_slice(b"2001:db8::zz,00:01,1,2,3,4,5,6,7,0,0,,,0,,0,0\n");
    write("kea_csv", "file_with_header.bin", &file);
    // Mode 1: a 2.6 row (pool_id).
    let mut s = vec![1u8];
    s.extend_from_slice(format!("{},0\n", rows[0]).as_bytes());
    write("kea_csv", "row_2_6.bin", &s);
    // Mode 3: Kea's configuration, as in tests/feed_kea.rs.
    let tests = read("tests/feed_kea.rs");
    let conf = between(&tests, "let conf = r#\"", "\"#")
        .into_iter()
        .next()
        .expect("the Kea configuration of tests/feed_kea.rs");
    let mut s = vec![3u8];
    s.extend_from_slice(conf.as_bytes());
    write("kea_csv", "kea_config.bin", &s);
}

fn config_seeds() {
    let readme = read("README.md");
    for (i, block) in between(&readme, "```toml\n", "```").into_iter().enumerate() {
        // Indented blocks (inside a list) keep their indentation: still TOML.
        write("config", &format!("readme_{i}.toml"), block.as_bytes());
    }
    let doc = read("src/config.rs");
    let doc: String = doc
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| format!("{}\n", l.strip_prefix(' ').unwrap_or(l)))
        .collect();
    if let Some(block) = between(&doc, "```toml\n", "```").into_iter().next() {
        write("config", "config_rs_doc.toml", block.as_bytes());
    }
    let tests = read("tests/config.rs");
    for name in ["FULL", "ACL"] {
        let open = format!("const {name}: &str = r#\"");
        if let Some(block) = between(&tests, &open, "\"#").into_iter().next() {
            write(
                "config",
                &format!("tests_{}.toml", name.to_lowercase()),
                block.as_bytes(),
            );
        }
    }
    write(
        "config",
        "source_jsonl_unix.toml",
        b"source = \"jsonl:unix:/run/lqd.sock\"\njournal_flush = \"5s\"\n[demo]\nclients = 10\nlinks = 2\n",
    );
}

fn main() {
    session_seeds();
    journal_seeds();
    jsonl_seeds();
    kea_seeds();
    config_seeds();
    let _ = LeaseState::Active;
}
