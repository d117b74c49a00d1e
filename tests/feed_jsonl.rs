//! The `jsonl` source: the line format (every field, both time formats, each kind of bad line),
//! the line splitter, and a real lqd fed from a followed file (bad lines skipped and logged,
//! appends, truncation, replacement), a UNIX socket with two writers, and standard input.

#[path = "common/lqd.rs"]
mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::Ipv6Addr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    Lqd, free_metrics_addr, start_with_source, wait_for_link_addresses, wait_for_log,
    wait_source_metrics,
};
use lqd::codec::ServerTime;
use lqd::feed::jsonl::{LineSplitter, MAX_LINE, parse_line, parse_rfc3339};
use lqd::store::{LeaseKind, LeaseState, RemoteIdKey};

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

const NA: &str = r#"{"client_id":"00:03:00:01:02:00:00:00:00:01","link":"2001:db8:0:1::1","kind":"na","address":"2001:db8:0:1::1234","iaid":7,"preferred_lifetime":3600,"valid_lifetime":7200,"cltt":1700000000,"state":"active"}"#;

/// `NA` with `field` replaced by `value` (raw JSON), or removed when `value` is `None`.
fn with(field: &str, value: Option<&str>) -> String {
    let mut v: serde_json::Value = serde_json::from_str(NA).unwrap();
    let o = v.as_object_mut().unwrap();
    match value {
        Some(x) => {
            o.insert(field.to_owned(), serde_json::from_str(x).unwrap());
        }
        None => {
            o.remove(field);
        }
    }
    v.to_string()
}

fn error_of(line: &str) -> String {
    match parse_line(line) {
        Ok(p) => panic!("accepted {line}: {p:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn an_na_line_gives_every_field() {
    let p = parse_line(NA).unwrap();
    assert!(p.unknown_fields.is_empty());
    let c = p.change;
    assert_eq!(&*c.client_id, &[0, 3, 0, 1, 2, 0, 0, 0, 0, 1]);
    assert_eq!(c.link, a("2001:db8:0:1::1"));
    assert_eq!(c.lease.kind, LeaseKind::Address);
    assert_eq!(c.lease.address, a("2001:db8:0:1::1234"));
    assert_eq!(c.lease.prefix_len, 128);
    assert_eq!(c.lease.iaid, 7);
    assert_eq!(c.lease.preferred_lifetime, 3600);
    assert_eq!(c.lease.valid_lifetime, 7200);
    assert_eq!(c.lease.cltt, ServerTime(1_700_000_000 - 946_684_800));
    assert_eq!(c.lease.state, LeaseState::Active);
    assert_eq!(c.relay, None);
    // An explicit 128 for na is fine; so is plain hex and upper case.
    let p = parse_line(&with("prefix_len", Some("128"))).unwrap();
    assert_eq!(p.change.lease.prefix_len, 128);
    let p = parse_line(&with("client_id", Some(r#""000300010A0B""#))).unwrap();
    assert_eq!(&*p.change.client_id, &[0, 3, 0, 1, 0x0a, 0x0b]);
    let p = parse_line(&with("relay", Some("null"))).unwrap();
    assert_eq!(p.change.relay, None);
}

#[test]
fn every_state_parses() {
    for (s, state) in [
        ("active", LeaseState::Active),
        ("released", LeaseState::Released),
        ("declined", LeaseState::Declined),
        ("expired", LeaseState::Expired),
        ("deleted", LeaseState::Deleted),
    ] {
        let p = parse_line(&with("state", Some(&format!("{s:?}")))).unwrap();
        assert_eq!(p.change.lease.state, state, "{s}");
    }
}

#[test]
fn a_pd_line_with_relay_info_and_an_rfc3339_time() {
    let line = r#"{"client_id":"00030001020000000001","link":"2001:db8:0:2::1","kind":"pd","address":"2001:db8:ff00::","prefix_len":56,"iaid":2,"preferred_lifetime":3600,"valid_lifetime":4294967295,"cltt":"2023-11-14T22:13:20Z","state":"active","relay":{"relay_ids":["0002000000090a0b","00:02:00:00:00:09:0c"],"remote_ids":[{"enterprise":9,"id":"6a756e697065722d31"}],"relay_message":{"peer":"fe80::1","message":"0c0020010db8"}}}"#;
    let c = parse_line(line).unwrap().change;
    assert_eq!(c.lease.kind, LeaseKind::Prefix);
    assert_eq!(c.lease.address, a("2001:db8:ff00::"));
    assert_eq!(c.lease.prefix_len, 56);
    assert_eq!(c.lease.valid_lifetime, u32::MAX);
    assert_eq!(c.lease.expires(), None);
    assert_eq!(c.lease.cltt, ServerTime::from_unix(1_700_000_000));
    let r = c.relay.unwrap();
    assert_eq!(
        r.relay_ids,
        vec![
            vec![0, 2, 0, 0, 0, 9, 0x0a, 0x0b].into_boxed_slice(),
            vec![0, 2, 0, 0, 0, 9, 0x0c].into_boxed_slice()
        ]
    );
    assert_eq!(
        r.remote_ids,
        vec![RemoteIdKey {
            enterprise_number: 9,
            remote_id: b"juniper-1".to_vec().into_boxed_slice()
        }]
    );
    assert_eq!(
        r.relay_message,
        Some((
            a("fe80::1"),
            vec![0x0c, 0, 0x20, 1, 0x0d, 0xb8].into_boxed_slice()
        ))
    );
    // An empty relay object: relay info known to be empty (not "keep what lqd has").
    let c = parse_line(&with("relay", Some("{}"))).unwrap().change;
    assert_eq!(c.relay, Some(Default::default()));
}

#[test]
fn rfc3339_times_in_their_forms() {
    let t = 1_700_000_000;
    for s in [
        "2023-11-14T22:13:20Z",
        "2023-11-14t22:13:20z",
        "2023-11-14 22:13:20Z",
        "2023-11-14T22:13:20.999Z",
        "2023-11-14T23:13:20+01:00",
        "2023-11-14T20:43:20-01:30",
    ] {
        assert_eq!(parse_rfc3339(s), Some(t), "{s}");
    }
    assert_eq!(parse_rfc3339("2000-01-01T00:00:00Z"), Some(946_684_800));
    assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), Some(1_709_164_800));
    for bad in [
        "2023-02-29T00:00:00Z",
        "2023-11-14T22:13:20",
        "2023-11-14",
        "2023-13-01T00:00:00Z",
        "2023-11-14T24:00:00Z",
        "2023-11-14T22:13:20.Z",
        "2023-11-14T22:13:20+0100",
        "2023-11-14T22:13:20Zjunk",
        "1700000000",
    ] {
        assert_eq!(parse_rfc3339(bad), None, "{bad}");
    }
    let c = parse_line(&with("cltt", Some(r#""2023-11-14T23:13:20+01:00""#)))
        .unwrap()
        .change;
    assert_eq!(c.lease.cltt, ServerTime::from_unix(t as u64));
}

#[test]
fn unknown_fields_are_reported_not_rejected() {
    let line = NA.replace(
        r#""state":"active""#,
        r#""state":"active","hostname":"h1","relay":{"vlan":7,"remote_ids":[{"enterprise":1,"id":"01","x":1}]}"#,
    );
    let p = parse_line(&line).unwrap();
    assert_eq!(
        p.unknown_fields,
        vec!["hostname", "relay.vlan", "relay.remote_ids[].x"]
    );
}

#[test]
fn each_bad_line_says_what_is_wrong() {
    let cases: Vec<(String, &str)> = vec![
        ("{not json".to_owned(), "not JSON"),
        ("[1,2]".to_owned(), "not a JSON object but an array"),
        (r#""text""#.to_owned(), "not a JSON object but a string"),
        (with("client_id", None), "client_id is missing"),
        (with("link", None), "link is missing"),
        (with("kind", None), "kind is missing"),
        (with("address", None), "address is missing"),
        (with("iaid", None), "iaid is missing"),
        (
            with("preferred_lifetime", None),
            "preferred_lifetime is missing",
        ),
        (with("valid_lifetime", None), "valid_lifetime is missing"),
        (with("cltt", None), "cltt is missing"),
        (with("state", None), "state is missing"),
        (with("client_id", Some("null")), "client_id is missing"),
        (
            with("client_id", Some(r#""0003zz""#)),
            "client_id is \"0003zz\": not hex",
        ),
        (
            with("client_id", Some(r#""000""#)),
            "client_id is \"000\": not hex",
        ),
        (with("client_id", Some(r#""00:3:01""#)), "not hex"),
        (with("client_id", Some(r#""00::01""#)), "not hex"),
        (with("client_id", Some(r#""""#)), "client_id is empty"),
        (
            with("client_id", Some("42")),
            "client_id is a number: expected a string",
        ),
        (
            with("client_id", Some(&format!("{:?}", "ab".repeat(131)))),
            "client_id is 131 octets long",
        ),
        (
            with("link", Some(r#""10.0.0.1""#)),
            "link is \"10.0.0.1\": not an IPv6 address",
        ),
        (
            with("address", Some(r#""2001:db8::g""#)),
            "address is \"2001:db8::g\": not an IPv6",
        ),
        (
            with("kind", Some(r#""ta""#)),
            "kind is \"ta\": expected \"na\" or \"pd\"",
        ),
        (
            with("state", Some(r#""bound""#)),
            "state is \"bound\": expected",
        ),
        (
            with("iaid", Some("4294967296")),
            "iaid is 4294967296: expected an integer from 0 to 4294967295",
        ),
        (with("iaid", Some("-1")), "iaid is -1: expected an integer"),
        (
            with("iaid", Some("1.5")),
            "iaid is 1.5: expected an integer",
        ),
        (
            with("iaid", Some(r#""7""#)),
            "iaid is a string: expected an integer",
        ),
        (
            with("valid_lifetime", Some("100")),
            "preferred_lifetime 3600 is above valid_lifetime 100",
        ),
        (
            with("prefix_len", Some("64")),
            "prefix_len is 64 for an \"na\" lease: it must be 128",
        ),
        (
            with("cltt", Some("946684799")),
            "cltt is 946684799 Unix seconds: outside",
        ),
        (
            with("cltt", Some("5241652096")),
            "cltt is 5241652096 Unix seconds: outside",
        ),
        (
            with("cltt", Some("1.5e9")),
            "cltt is 1500000000.0: expected whole Unix seconds",
        ),
        (
            with("cltt", Some(r#""yesterday""#)),
            "cltt is \"yesterday\": not an RFC 3339 time",
        ),
        (
            with("cltt", Some(r#""1999-12-31T23:59:59Z""#)),
            "outside 2000-01-01T00:00:00Z",
        ),
        (with("cltt", Some("true")), "cltt is a boolean"),
        (
            with("relay", Some("[]")),
            "relay is an array: expected an object",
        ),
        (
            with("relay", Some(r#"{"relay_ids":"00"}"#)),
            "relay.relay_ids is a string: expected an array",
        ),
        (
            with("relay", Some(r#"{"relay_ids":["0x1"]}"#)),
            "relay.relay_ids[0] is \"0x1\": not hex",
        ),
        (
            with("relay", Some(r#"{"remote_ids":[5]}"#)),
            "relay.remote_ids[0] is a number: expected an object",
        ),
        (
            with("relay", Some(r#"{"remote_ids":[{"id":"01"}]}"#)),
            "relay.remote_ids[0].enterprise is missing",
        ),
        (
            with("relay", Some(r#"{"remote_ids":[{"enterprise":1}]}"#)),
            "relay.remote_ids[0].id is missing",
        ),
        (
            with(
                "relay",
                Some(r#"{"remote_ids":[{"enterprise":-1,"id":"01"}]}"#),
            ),
            "relay.remote_ids[0].enterprise is -1",
        ),
        (
            with("relay", Some(r#"{"relay_message":{"message":"0c"}}"#)),
            "relay.relay_message.peer is missing",
        ),
        (
            with("relay", Some(r#"{"relay_message":{"peer":"fe80::1"}}"#)),
            "relay.relay_message.message is missing",
        ),
        (
            with(
                "relay",
                Some(r#"{"relay_message":{"peer":"x","message":"0c"}}"#),
            ),
            "relay.relay_message.peer is \"x\": not an IPv6",
        ),
        (
            with("relay", Some(r#"{"relay_message":"0c"}"#)),
            "relay.relay_message is a string: expected an object",
        ),
    ];
    for (line, wanted) in &cases {
        let e = error_of(line);
        assert!(
            e.contains(wanted),
            "{line}\n  gave {e:?}\n  wanted {wanted:?}"
        );
    }
    let pd = |extra: &str| {
        NA.replace(r#""kind":"na""#, &format!(r#""kind":"pd"{extra}"#))
            .replace("2001:db8:0:1::1234", "2001:db8:ff00::")
    };
    assert!(parse_line(&pd(r#","prefix_len":56"#)).is_ok());
    for (line, wanted) in [
        (pd(""), "prefix_len is missing: a \"pd\" lease needs one"),
        (pd(r#","prefix_len":0"#), "prefix_len is 0"),
        (
            pd(r#","prefix_len":129"#),
            "prefix_len is 129: expected an integer from 0 to 128",
        ),
        (
            pd(r#","prefix_len":39"#),
            "address 2001:db8:ff00:: has bits set past prefix_len 39",
        ),
    ] {
        let e = error_of(&line);
        assert!(
            e.contains(wanted),
            "{line}\n  gave {e:?}\n  wanted {wanted:?}"
        );
    }
}

#[test]
fn the_splitter_numbers_lines_across_reads() {
    let mut s = LineSplitter::new();
    let mut got = Vec::new();
    let mut take = |(n, l): (u64, Result<&str, _>)| got.push((n, l.map(str::to_owned)));
    s.push(b"one\ntw", &mut take);
    s.push(b"o\r\n\nthr", &mut take);
    s.push(b"ee", &mut take);
    s.finish(&mut take);
    let got: Vec<_> = got.into_iter().map(|(n, l)| (n, l.unwrap())).collect();
    assert_eq!(
        got,
        vec![
            (1, "one".to_owned()),
            (2, "two".to_owned()),
            (3, String::new()),
            (4, "three".to_owned())
        ]
    );

    // Not UTF-8, and too long (in one read and across reads): errors with their numbers,
    // and the next line is fine.
    let mut s = LineSplitter::new();
    let mut got = Vec::new();
    let mut take = |(n, l): (u64, Result<&str, lqd::feed::jsonl::LineError>)| {
        got.push((n, l.map(str::to_owned).map_err(|e| e.to_string())));
    };
    s.push(b"\xff\xfe\n", &mut take);
    let long = vec![b'x'; MAX_LINE + 1];
    s.push(&long, &mut take);
    s.push(b"more\nok\n", &mut take);
    s.push(&long[..MAX_LINE / 2], &mut take);
    s.push(&long[..MAX_LINE / 2 + 1], &mut take);
    s.push(b"\nlast\n", &mut take);
    assert_eq!(got.len(), 5, "{got:?}");
    assert!(got[0].1.as_ref().unwrap_err().contains("not UTF-8"));
    assert_eq!(got[0].0, 1);
    assert_eq!(got[1].0, 2);
    assert!(got[1].1.as_ref().unwrap_err().contains("longer than"));
    assert_eq!(got[2], (3, Ok("ok".to_owned())));
    assert_eq!(got[3].0, 4);
    assert!(got[3].1.as_ref().unwrap_err().contains("longer than"));
    assert_eq!(got[4], (5, Ok("last".to_owned())));
}

// ---- a real lqd ----

const LINK: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 7, 0, 0, 0, 1);

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A good line: client `n` holds 2001:db8:0:7::`n` on `LINK`, in `state`.
fn lease(n: u16, state: &str) -> String {
    lease_in(n, state, now_unix())
}

/// An active [`lease`] with its `cltt` given (Unix seconds).
fn lease_at(n: u16, cltt: u64) -> String {
    lease_in(n, "active", cltt)
}

fn lease_in(n: u16, state: &str, cltt: u64) -> String {
    format!(
        r#"{{"client_id":"00:03:00:01:02:00:00:00:{:02x}:{:02x}","link":"{LINK}","kind":"na","address":"2001:db8:0:7::{n:x}","iaid":1,"preferred_lifetime":3600,"valid_lifetime":86400,"cltt":{cltt},"state":"{state}"}}"#,
        n >> 8,
        n & 0xff,
    )
}

fn addr(n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 7, 0, 0, 0, n)
}

/// Waits up to 10 s until a Bulk query for `LINK` shows exactly client numbers `ns`.
fn wait_for_addresses(lqd: &Lqd, ns: &[u16]) {
    let wanted: BTreeSet<Ipv6Addr> = ns.iter().map(|&n| addr(n)).collect();
    wait_for_link_addresses(lqd, LINK, &wanted);
}

fn append(path: &std::path::Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

#[test]
fn a_followed_file_bad_lines_appends_truncation_and_replacement() {
    let data = tempfile::tempdir().unwrap();
    let path = data.path().join("leases.jsonl");
    std::fs::write(
        &path,
        format!(
            "{}\n{{\"broken\n{}\n{}\n\n{}\n",
            lease(1, "active"),
            lease(2, "active"),
            with("link", None),
            lease(3, "active"),
        ),
    )
    .unwrap();
    let source = format!("jsonl:{}", path.display());
    let lqd = start_with_source(
        "jsonl-file",
        &[],
        &format!("source = {source:?}"),
        "read the file to its end",
    );
    assert!(lqd.log().contains(&format!("source: {source}")));
    wait_for_addresses(&lqd, &[1, 2, 3]);
    let log = lqd.log();
    assert!(log.contains("line 2 skipped: not JSON"), "{log}");
    assert!(log.contains("line 4 skipped: link is missing"), "{log}");
    assert!(
        !log.contains("line 5 skipped"),
        "a blank line is not an error:\n{log}"
    );
    assert!(!log.contains("line 1 skipped") && !log.contains("line 3 skipped"));

    // Appends, one of them in two parts: the part line waits for its newline.
    append(&path, &format!("{}\n", lease(4, "active")));
    let five = lease(5, "active");
    let (head, tail) = five.split_at(40);
    append(&path, head);
    wait_for_addresses(&lqd, &[1, 2, 3, 4]);
    std::thread::sleep(Duration::from_millis(400));
    assert!(!lqd.log().contains("line 8 skipped"), "{}", lqd.log());
    append(
        &path,
        &format!("{tail}\nnot json either\n{}\n", lease(1, "released")),
    );
    wait_for_addresses(&lqd, &[2, 3, 4, 5]);
    wait_for_log(&lqd, "line 9 skipped: not JSON", 5);
    assert!(!lqd.log().contains("line 8 skipped"), "{}", lqd.log());

    // Truncated and rewritten, shorter: read from its beginning, lines numbered from 1.
    std::fs::write(&path, format!("bad\n{}\n", lease(6, "active"))).unwrap();
    wait_for_addresses(&lqd, &[2, 3, 4, 5, 6]);
    wait_for_log(&lqd, "the file was truncated", 5);
    wait_for_log(&lqd, "line 1 skipped: not JSON", 5);

    // Replaced by a rename: the new file is read from its beginning.
    let new = data.path().join("leases.jsonl.new");
    std::fs::write(
        &new,
        format!("{}\n{}\n", lease(2, "expired"), lease(7, "active")),
    )
    .unwrap();
    std::fs::rename(&new, &path).unwrap();
    wait_for_addresses(&lqd, &[3, 4, 5, 6, 7]);
    wait_for_log(&lqd, "the file was replaced", 5);
    // And the new file is followed too.
    append(&path, &format!("{}\n", lease(8, "active")));
    wait_for_addresses(&lqd, &[3, 4, 5, 6, 7, 8]);

    // Truncated and written again, longer than what was read, at once (well within one
    // check): its size alone looks like an append; its first octets show the rewrite.
    let skipped = lqd.log().matches(" skipped: ").count();
    std::fs::write(
        &path,
        format!(
            "{}\n{}\n{}\n{}\n{}\n",
            lease(3, "released"),
            lease(9, "active"),
            lease(10, "active"),
            lease(7, "active"),
            lease(8, "active"),
        ),
    )
    .unwrap();
    wait_for_addresses(&lqd, &[4, 5, 6, 7, 8, 9, 10]);
    // (The check may also fall between the truncation and the write: then it is a truncation.)
    let deadline = Instant::now() + Duration::from_secs(5);
    while !lqd.log().contains("the file was rewritten in place")
        && lqd.log().matches("the file was truncated").count() < 2
    {
        assert!(Instant::now() < deadline, "{}", lqd.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // No line was read from the middle of one.
    assert_eq!(
        lqd.log().matches(" skipped: ").count(),
        skipped,
        "{}",
        lqd.log()
    );
}

#[test]
fn a_unix_socket_takes_two_writers_at_once() {
    let data = tempfile::tempdir().unwrap();
    let sock = data.path().join("feed.sock");
    // A stale socket file (its listener gone) is removed.
    drop(UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let source = format!("jsonl:unix:{}", sock.display());
    let lqd = start_with_source(
        "jsonl-unix",
        &["--source", &source],
        "",
        &format!("source: {source}"),
    );
    assert!(
        lqd.log().contains("removing the stale socket"),
        "{}",
        lqd.log()
    );

    let mut w1 = UnixStream::connect(&sock).unwrap();
    let mut w2 = UnixStream::connect(&sock).unwrap();
    // Interleaved, both open at once; a part line on w1 completed after w2 wrote.
    w1.write_all(format!("{}\n", lease(11, "active")).as_bytes())
        .unwrap();
    w2.write_all(format!("{}\n{{bad\n", lease(21, "active")).as_bytes())
        .unwrap();
    let l12 = lease(12, "active");
    w1.write_all(&l12.as_bytes()[..30]).unwrap();
    w2.write_all(format!("{}\n", lease(22, "active")).as_bytes())
        .unwrap();
    wait_for_addresses(&lqd, &[11, 21, 22]);
    w1.write_all(format!("{}\n", &l12[30..]).as_bytes())
        .unwrap();
    wait_for_addresses(&lqd, &[11, 12, 21, 22]);
    wait_for_log(&lqd, "line 2 skipped: not JSON", 5);
    // A last line without a newline is taken when its writer closes.
    w2.write_all(lease(23, "active").as_bytes()).unwrap();
    drop(w2);
    wait_for_addresses(&lqd, &[11, 12, 21, 22, 23]);
    wait_for_log(&lqd, "writer disconnected", 5);
    // The first writer still works.
    w1.write_all(format!("{}\n", lease(11, "released")).as_bytes())
        .unwrap();
    wait_for_addresses(&lqd, &[12, 21, 22, 23]);

    // A second lqd on the same path refuses to start: lqd is listening there.
    let err = refused(data.path(), &source);
    assert!(err.contains("another process is listening"), "{err}");
    // And the first one still has its socket.
    let mut w3 = UnixStream::connect(&sock).unwrap();
    w3.write_all(format!("{}\n", lease(31, "active")).as_bytes())
        .unwrap();
    wait_for_addresses(&lqd, &[12, 21, 22, 23, 31]);
}

/// Runs lqd with `source` in a small config in `dir`; it must fail to start. Its log.
fn refused(dir: &std::path::Path, source: &str) -> String {
    let state = dir.join("refused");
    std::fs::create_dir_all(&state).unwrap();
    let config = state.join("lqd.toml");
    std::fs::write(
        &config,
        format!(
            "listen = [\"[::1]:0\"]\nstate_dir = {:?}\njournal_size = 1048576\nsource = {source:?}\n",
            state.display().to_string()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lqd"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success(), "lqd started with {source}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_path_that_is_not_a_socket_is_not_replaced() {
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("precious");
    std::fs::write(&file, "keep me").unwrap();
    let err = refused(data.path(), &format!("jsonl:unix:{}", file.display()));
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

#[test]
fn standard_input_is_read_to_its_end() {
    let mut lqd = start_with_source(
        "jsonl-stdin",
        &["--source", "jsonl:-"],
        "",
        "source: jsonl:-",
    );
    let mut stdin = lqd.child.stdin.take().unwrap();
    stdin
        .write_all(
            format!(
                "{}\n{}\n{}\n",
                lease(41, "active"),
                with("iaid", Some("-3")),
                lease(42, "active")
            )
            .as_bytes(),
        )
        .unwrap();
    wait_for_addresses(&lqd, &[41, 42]);
    // An unknown field: the line is taken, the field name logged once.
    for n in [44, 45] {
        let line = lease(n, "active").replacen('{', r#"{"hostname":"h","#, 1);
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
    }
    wait_for_addresses(&lqd, &[41, 42, 44, 45]);
    // The last line has no newline: taken at the end of input.
    stdin.write_all(lease(43, "active").as_bytes()).unwrap();
    drop(stdin);
    wait_for_log(&lqd, "end of standard input", 10);
    wait_for_addresses(&lqd, &[41, 42, 43, 44, 45]);
    let log = lqd.log();
    assert!(log.contains("jsonl:-: line 2 skipped: iaid is -3"), "{log}");
    assert_eq!(
        log.matches("ignoring unknown field `hostname`").count(),
        1,
        "{log}"
    );
    assert!(
        log.contains("jsonl:-: line 4: ignoring unknown field"),
        "{log}"
    );
    // lqd keeps serving after its source ended.
    assert!(lqd.child.try_wait().unwrap().is_none());
}

#[test]
fn lqd_s_metrics_count_rejected_lines_the_lag_and_the_newest_cltt() {
    let data = tempfile::tempdir().unwrap();
    let path = data.path().join("leases.jsonl");
    let t = now_unix();
    std::fs::write(
        &path,
        format!("{}\n{}\n", lease_at(1, t + 4), lease_at(2, t - 1)),
    )
    .unwrap();
    let metrics = free_metrics_addr();
    let source = format!("jsonl:{}", path.display());
    let lqd = start_with_source(
        "jsonl-metrics",
        &[],
        &format!("source = {source:?}\nmetrics_listen = \"{metrics}\"\n"),
        "read the file to its end",
    );
    wait_for_addresses(&lqd, &[1, 2]);
    wait_source_metrics(
        metrics,
        &[
            ("lqd_feed_changes_rejected_total", 0.0),
            ("lqd_source_lag_bytes", 0.0),
            ("lqd_source_newest_row_timestamp_seconds", (t + 4) as f64),
        ],
    );
    // A bad line, then half a good one: the half is lag until its newline comes.
    let three = format!("{}\n", lease_at(3, t + 9));
    let (head, tail) = three.split_at(30);
    append(&path, &format!("{{\"broken\n{head}"));
    wait_source_metrics(
        metrics,
        &[
            ("lqd_feed_changes_rejected_total", 1.0),
            ("lqd_source_lag_bytes", head.len() as f64),
            ("lqd_source_newest_row_timestamp_seconds", (t + 4) as f64),
        ],
    );
    append(&path, tail);
    wait_for_addresses(&lqd, &[1, 2, 3]);
    wait_source_metrics(
        metrics,
        &[
            ("lqd_feed_changes_rejected_total", 1.0),
            ("lqd_source_lag_bytes", 0.0),
            ("lqd_source_newest_row_timestamp_seconds", (t + 9) as f64),
        ],
    );
    wait_for_log(&lqd, "line 3 skipped: not JSON", 5);
}
