//! Fuzz target: the `jsonl` source's reading, from bytes to changes in a store.
//!
//! The input is one control octet, then a byte stream of JSON lines. The stream goes through
//! `LineSplitter` in reads of 1 to 64 octets (picked by the control octet) and all at once: both
//! must give the same numbered lines. Each line goes to `jsonl::parse_line`, which must never
//! panic. An accepted change must keep the promises of the line format (schema and module
//! documentation): a DUID of 1 to 130 octets, prefix length 128 for an address and 1 to 128 for
//! a prefix with no bits set past it, preferred lifetime not above valid. Written back as a JSON
//! line (hex plain or with colons, `cltt` as Unix seconds or RFC 3339, picked by the control
//! octet) it must parse to the same change. Every accepted change is then applied to a store
//! with a small journal, which must not panic either.
#![no_main]

use std::fmt::Write as _;
use std::net::Ipv6Addr;

use libfuzzer_sys::fuzz_target;
use lqd::codec::ServerTime;
use lqd::feed::follow::LineSplitter;
use lqd::feed::jsonl::{parse_line, parse_rfc3339};
use lqd::store::journal::{HEADER_LEN, Journal};
use lqd::store::{Change, History, LeaseKind, LeaseState, Store};

/// Numbered lines, each its text or its error.
type Lines = Vec<(u64, Result<String, String>)>;

fn split(stream: &[u8], chunk: usize) -> Lines {
    let mut s = LineSplitter::new();
    let mut lines = Vec::new();
    let mut take = |(n, l): (u64, Result<&str, lqd::feed::follow::LineError>)| {
        lines.push((n, l.map(str::to_owned).map_err(|e| e.0)));
    };
    for piece in stream.chunks(chunk) {
        s.push(piece, &mut take);
    }
    s.finish(&mut take);
    lines
}

fn hex(bytes: &[u8], colons: bool, upper: bool) -> String {
    let mut s = String::new();
    for (i, b) in bytes.iter().enumerate() {
        if colons && i > 0 {
            s.push(':');
        }
        if upper {
            let _ = write!(s, "{b:02X}");
        } else {
            let _ = write!(s, "{b:02x}");
        }
    }
    s
}

/// Unix seconds as an RFC 3339 UTC time (Howard Hinnant's civil_from_days).
fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn addr(a: Ipv6Addr) -> String {
    format!("\"{a}\"")
}

/// `change` as a JSON line of the documented format.
fn to_line(c: &Change, style: u8) -> String {
    let (colons, upper, rfc) = (style & 1 != 0, style & 2 != 0, style & 4 != 0);
    let l = &c.lease;
    let kind = match l.kind {
        LeaseKind::Address => "na",
        LeaseKind::Prefix => "pd",
    };
    let state = match l.state {
        LeaseState::Active => "active",
        LeaseState::Released => "released",
        LeaseState::Declined => "declined",
        LeaseState::Expired => "expired",
        LeaseState::Deleted => "deleted",
    };
    let unix = l.cltt.to_unix();
    let cltt = if rfc {
        format!("\"{}\"", rfc3339(unix as i64))
    } else {
        unix.to_string()
    };
    let mut s = format!(
        "{{\"client_id\":\"{}\",\"link\":{},\"kind\":\"{kind}\",\"address\":{},\"prefix_len\":{},\
         \"iaid\":{},\"preferred_lifetime\":{},\"valid_lifetime\":{},\"cltt\":{cltt},\"state\":\"{state}\"",
        hex(&c.client_id, colons, upper),
        addr(c.link),
        addr(l.address),
        l.prefix_len,
        l.iaid,
        l.preferred_lifetime,
        l.valid_lifetime,
    );
    if let Some(r) = &c.relay {
        let ids: Vec<String> = r
            .relay_ids
            .iter()
            .map(|d| format!("\"{}\"", hex(d, colons, upper)))
            .collect();
        let remotes: Vec<String> = r
            .remote_ids
            .iter()
            .map(|k| {
                format!(
                    "{{\"enterprise\":{},\"id\":\"{}\"}}",
                    k.enterprise_number,
                    hex(&k.remote_id, colons, upper)
                )
            })
            .collect();
        let _ = write!(
            s,
            ",\"relay\":{{\"relay_ids\":[{}],\"remote_ids\":[{}]",
            ids.join(","),
            remotes.join(",")
        );
        if let Some((peer, msg)) = &r.relay_message {
            let _ = write!(
                s,
                ",\"relay_message\":{{\"peer\":{},\"message\":\"{}\"}}",
                addr(*peer),
                hex(msg, colons, upper)
            );
        }
        s.push('}');
    }
    s.push('}');
    s
}

fn check_change(c: &Change) {
    assert!(
        (1..=130).contains(&c.client_id.len()),
        "a client_id of {} octets was accepted",
        c.client_id.len()
    );
    let l = &c.lease;
    match l.kind {
        LeaseKind::Address => assert_eq!(l.prefix_len, 128, "an na lease not /128"),
        LeaseKind::Prefix => {
            assert!(
                (1..=128).contains(&l.prefix_len),
                "pd prefix_len {}",
                l.prefix_len
            );
            let mask = u128::MAX
                .checked_shl(128 - u32::from(l.prefix_len))
                .unwrap_or(0);
            assert_eq!(
                u128::from(l.address) & !mask,
                0,
                "bits set past the prefix length"
            );
        }
    }
    assert!(
        l.preferred_lifetime <= l.valid_lifetime,
        "preferred above valid"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(control & 0x3f) + 1;
    let lines = split(stream, stream.len().max(1));
    assert_eq!(
        split(stream, chunk),
        lines,
        "cutting the stream changed the lines"
    );

    let mut changes = Vec::new();
    for (_, line) in &lines {
        let Ok(text) = line else { continue };
        // Every line as an RFC 3339 time too: never a panic.
        let _ = parse_rfc3339(text);
        let parsed = match parse_line(text) {
            Ok(p) => p,
            Err(e) => {
                assert!(!e.0.is_empty(), "an error without a reason");
                continue;
            }
        };
        check_change(&parsed.change);
        let again = to_line(&parsed.change, control >> 6 | (control & 0x20) >> 3);
        let back = parse_line(&again)
            .unwrap_or_else(|e| panic!("the change written back does not parse: {e}\n{again}"));
        assert_eq!(back.change, parsed.change, "written back: {again}");
        assert!(back.unknown_fields.is_empty(), "unknown fields in {again}");
        changes.push(parsed.change);
    }

    // A time written in RFC 3339 reads back, for times lqd can hold.
    if let Some(b) = stream.first_chunk::<4>() {
        let t = ServerTime(u32::from_le_bytes(*b));
        let unix = t.to_unix() as i64;
        assert_eq!(
            parse_rfc3339(&rfc3339(unix)),
            Some(unix),
            "{}",
            rfc3339(unix)
        );
    }

    if !changes.is_empty() {
        let journal = Journal::format(vec![0; HEADER_LEN + 16 * 1024]).expect("format");
        let (mut h, _) = History::open(Store::new(), journal);
        for c in &changes {
            let _ = h.apply(c, c.lease.cltt);
        }
        let _ = h.expire(ServerTime(u32::MAX));
    }
});
