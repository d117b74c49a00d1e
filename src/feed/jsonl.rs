//! The `jsonl` source: lease changes as JSON lines, one change per line, from a file being
//! appended to (`jsonl:PATH`), standard input (`jsonl:-`) or a UNIX stream socket
//! (`jsonl:unix:PATH`).
//!
//! # The line format
//!
//! Each line is one JSON object: the new state of one lease of one client on one link (a
//! [`Change`]). The JSON Schema (draft 2020-12) is `schema/lease-change.schema.json`.
//!
//! ```json
//! {"client_id":"00:03:00:01:02:00:00:00:00:01","link":"2001:db8:0:1::1","kind":"na","address":"2001:db8:0:1::1234","iaid":1,"preferred_lifetime":3600,"valid_lifetime":7200,"cltt":1700000000,"state":"active"}
//! {"client_id":"00030001020000000001","link":"2001:db8:0:1::1","kind":"pd","address":"2001:db8:ff00::","prefix_len":56,"iaid":2,"preferred_lifetime":3600,"valid_lifetime":4294967295,"cltt":"2023-11-14T22:13:20Z","state":"active","relay":{"relay_ids":["0002000000090a0b"],"remote_ids":[{"enterprise":9,"id":"6a756e697065722d31"}],"relay_message":{"peer":"fe80::1","message":"0c0020010db8000000010000000000000001fe800000000000000000000000000001"}}}
//! ```
//!
//! | field | required | meaning |
//! |---|---|---|
//! | `client_id` | yes | the client's DUID, hex: `000300010200000000001` or with a colon between every octet, `00:03:00:01:…`; 1 to 130 octets |
//! | `link` | yes | the client's link: the first relay's link-address, or the configured address of a directly connected link (IPv6) |
//! | `kind` | yes | `"na"`: an address (IA_NA); `"pd"`: a delegated prefix (IA_PD) |
//! | `address` | yes | the address, or for `pd` the prefix (IPv6; no bits set past `prefix_len`) |
//! | `prefix_len` | `pd` only | the delegated prefix length, 1 to 128; for `na` it may be given and must then be 128 |
//! | `iaid` | yes | the IAID of the IA_NA / IA_PD, 0 to 4294967295 |
//! | `preferred_lifetime` | yes | seconds, 0 to 4294967295 (4294967295 is infinity); not above `valid_lifetime` |
//! | `valid_lifetime` | yes | seconds, 0 to 4294967295 (4294967295 is infinity) |
//! | `cltt` | yes | the client's last transaction time: Unix seconds (an integer), or an RFC 3339 string such as `"2023-11-14T22:13:20Z"` or `"2023-11-14T23:13:20.5+01:00"` (fractions are dropped); from 2000-01-01T00:00:00Z to 2136-02-07T06:28:15Z |
//! | `state` | yes | `"active"` (granted or renewed), or how the lease ended: `"released"`, `"declined"`, `"expired"`, `"deleted"` |
//! | `relay` | no | what the client's relays told the server; absent or `null` keeps what lqd already has for the binding |
//! | `relay.relay_ids` | no | OPTION_RELAY_ID of every relay layer: an array of hex DUIDs; default `[]` |
//! | `relay.remote_ids` | no | OPTION_REMOTE_ID of every relay layer: an array of `{"enterprise": u32, "id": hex}`; default `[]` |
//! | `relay.relay_message` | no | the last relayed message, for OPTION_LQ_RELAY_DATA: `{"peer": IPv6, "message": hex}`, the address of the relay it came from and the RELAY-FORW chain with the innermost OPTION_RELAY_MSG removed |
//!
//! Hex strings are either plain hex digits (an even number) or octets of two hex digits
//! separated by colons; either case.
//!
//! Fields lqd does not know are ignored, so that a newer writer can add fields: each unknown
//! field name (`relay.`-prefixed inside `relay`) is logged once, as a warning, the first time it
//! is seen. Blank lines are skipped silently.
//!
//! # Bad lines
//!
//! A line that is not a JSON object, lacks a required field, or has a field of the wrong type,
//! a bad hex string or address, or a number out of range is logged as a warning naming the
//! source, the line number (counted from 1, per file, per connection) and what is wrong, and is
//! skipped: it never stops the feed. A line longer than [`MAX_LINE`] octets is skipped the same
//! way. Each skipped line counts as rejected in the source's [`SourceStats`] (lqd's metrics),
//! which also keep the newest `cltt` read and, for a followed file, its lag after each read
//! pass (its size less the octets taken as lines; a line without its newline yet counts).
//!
//! # Inputs
//!
//! - `jsonl:PATH`: the file is read from its beginning, then followed as it grows (looked at as
//!   soon as inotify reports a change of the file or its directory, and every 100 ms in any
//!   case: [`super::watch`]; [`super::follow`] has the details). A last line without its
//!   newline yet is left until the rest arrives. When the file is replaced (a different inode
//!   at `PATH`: the old file is read to its end first), truncated (shorter than what was read)
//!   or rewritten in place (the first or last 4 KiB read changed, as when it is truncated and
//!   grows past its old size between two checks), it is read again from the beginning of the
//!   new content, with line numbers from 1 again, and the log says so. A file that does not
//!   exist yet is waited for. A rewrite that keeps both of those 4 KiB windows as they were is
//!   not noticed: replace files by renaming a new one over them instead.
//! - `jsonl:-`: standard input is read to its end; a last line without a newline is taken.
//!   Then the source ends, and the log says so (lqd keeps serving what it has).
//! - `jsonl:unix:PATH`: lqd listens on a UNIX stream socket at `PATH`. A socket file left
//!   behind by a process that is gone is removed first; if a process still listens there, or
//!   `PATH` is not a socket, lqd refuses to start. lqd binds it before its TCP and UDP
//!   listeners, and removes it when it stops cleanly (SIGTERM, SIGINT). Any number of writers
//!   may connect at once, each on a thread of its own; each connection is a stream of lines,
//!   numbered from 1.
//!
//! # Acknowledgements (`jsonl:unix` only)
//!
//! A writer that names itself with a first line `{"hello": "NAME"}` numbers its lines with an
//! increasing `"seq"`, and lqd tells it, on the same socket, the last line it has journaled:
//! at once in answer to the hello (`{"writer": "NAME", "ack": SEQ}`, or `"ack": null`), then
//! `{"ack": SEQ}` as it moves (at most every 100 ms), and `{"ack": SEQ, "sync": true}` in
//! answer to a `{"sync": true}` line, once every line before it is journaled. A numbered line
//! at or below the acknowledged one is not applied again, so a writer resumes after a restart
//! of lqd by sending its lines from the acknowledged one on. A bad numbered line is answered
//! `{"rejected": SEQ, "line": N, "error": "..."}`. A connection without a hello works as
//! before, and lqd writes nothing to it but the answer to a sync (`{"sync": true}`). The
//! protocol, its guarantees and a writer's loop are in `docs/jsonl-acks.md`; the lines lqd
//! writes back are in `schema/feed-socket.schema.json`.
//!
//! Every input sends its changes through the feed's blocking [`FeedHandle::send`]: a loop that
//! is behind makes the reader wait (back-pressure), and a file or socket simply is not read
//! meanwhile.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, Read};
use std::net::Ipv6Addr;
use std::ops::ControlFlow;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde_json::{Map, Value};

use super::ack::Writers;
use super::follow::{Event, Follower};
use super::stats::SourceStats;
use super::watch::{FileWatch, Wake};
use super::{Fed, FeedHandle, Numbered};
use crate::codec::ServerTime;
use crate::store::{Change, Lease, LeaseKind, LeaseState, RelayInfo, RemoteIdKey};

pub use super::follow::{LineError, LineSplitter, MAX_LINE, NumberedLine, POLL_INTERVAL};

mod unix;

pub use unix::ACK_INTERVAL;

/// The longest DUID (RFC 8415 §11.1: a 2-octet type and at most 128 octets).
const MAX_DUID: usize = 130;

/// Where a `jsonl` source reads its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonlInput {
    /// `jsonl:PATH`: a file, read then followed as it grows.
    File(PathBuf),
    /// `jsonl:-`: standard input, to its end.
    Stdin,
    /// `jsonl:unix:PATH`: a UNIX stream socket lqd listens on.
    Unix(PathBuf),
}

impl fmt::Display for JsonlInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => write!(f, "jsonl:{}", p.display()),
            Self::Stdin => f.write_str("jsonl:-"),
            Self::Unix(p) => write!(f, "jsonl:unix:{}", p.display()),
        }
    }
}

/// One good line: the change, and the names of the fields lqd ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedLine {
    /// The lease change the line describes.
    pub change: Change,
    /// Unknown fields, in the order found; those inside `relay` as `relay.NAME`.
    pub unknown_fields: Vec<String>,
}

fn err<T>(message: impl Into<String>) -> Result<T, LineError> {
    Err(LineError(message.into()))
}

const TOP_FIELDS: &[&str] = &[
    "client_id",
    "link",
    "kind",
    "address",
    "prefix_len",
    "iaid",
    "preferred_lifetime",
    "valid_lifetime",
    "cltt",
    "state",
    "relay",
];
const RELAY_FIELDS: &[&str] = &["relay_ids", "remote_ids", "relay_message"];
const REMOTE_ID_FIELDS: &[&str] = &["enterprise", "id"];
const RELAY_MESSAGE_FIELDS: &[&str] = &["peer", "message"];

/// Parses one line (without its newline) into a change.
///
/// # Errors
///
/// A [`LineError`] naming the field and what is wrong with it.
pub fn parse_line(line: &str) -> Result<ParsedLine, LineError> {
    parse_change(&parse_object(line)?)
}

/// One line as a JSON object.
fn parse_object(line: &str) -> Result<Map<String, Value>, LineError> {
    let value: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return err(format!("not JSON: {e}")),
    };
    match value {
        Value::Object(obj) => Ok(obj),
        other => err(format!("not a JSON object but {}", type_name(&other))),
    }
}

/// The change a line's object describes.
fn parse_change(obj: &Map<String, Value>) -> Result<ParsedLine, LineError> {
    let mut unknown_fields = Vec::new();
    unknown(obj, TOP_FIELDS, "", &mut unknown_fields);

    let client_id = hex_field(obj, "client_id")?;
    if client_id.len() > MAX_DUID {
        return err(format!(
            "client_id is {} octets long, more than a DUID's {MAX_DUID}",
            client_id.len()
        ));
    }
    let link = addr_field(obj, "link")?;
    let kind = match str_field(obj, "kind")? {
        "na" => LeaseKind::Address,
        "pd" => LeaseKind::Prefix,
        other => return err(format!("kind is {other:?}: expected \"na\" or \"pd\"")),
    };
    let address = addr_field(obj, "address")?;
    let prefix_len = match (kind, obj.get("prefix_len")) {
        (LeaseKind::Address, None | Some(Value::Null)) => 128,
        (LeaseKind::Address, Some(_)) => {
            let n = uint_field(obj, "prefix_len", 128)?;
            if n != 128 {
                return err(format!(
                    "prefix_len is {n} for an \"na\" lease: it must be 128"
                ));
            }
            128
        }
        (LeaseKind::Prefix, None | Some(Value::Null)) => {
            return err("prefix_len is missing: a \"pd\" lease needs one");
        }
        (LeaseKind::Prefix, Some(_)) => {
            let n = uint_field(obj, "prefix_len", 128)?;
            if n == 0 {
                return err("prefix_len is 0: a delegated prefix is 1 to 128 bits long");
            }
            let n = u8::try_from(n).unwrap_or(128);
            let mask = u128::MAX.checked_shl(128 - u32::from(n)).unwrap_or(0);
            if u128::from(address) & !mask != 0 {
                return err(format!(
                    "address {address} has bits set past prefix_len {n}: give the prefix itself"
                ));
            }
            n
        }
    };
    let iaid = u32_field(obj, "iaid")?;
    let preferred_lifetime = u32_field(obj, "preferred_lifetime")?;
    let valid_lifetime = u32_field(obj, "valid_lifetime")?;
    if preferred_lifetime > valid_lifetime {
        return err(format!(
            "preferred_lifetime {preferred_lifetime} is above valid_lifetime {valid_lifetime}"
        ));
    }
    let cltt = cltt_field(obj)?;
    let state = match str_field(obj, "state")? {
        "active" => LeaseState::Active,
        "released" => LeaseState::Released,
        "declined" => LeaseState::Declined,
        "expired" => LeaseState::Expired,
        "deleted" => LeaseState::Deleted,
        other => {
            return err(format!(
                "state is {other:?}: expected \"active\", \"released\", \"declined\", \
                 \"expired\" or \"deleted\""
            ));
        }
    };
    let relay = match obj.get("relay") {
        None | Some(Value::Null) => None,
        Some(Value::Object(r)) => Some(relay_info(r, &mut unknown_fields)?),
        Some(other) => return err(format!("relay is {}: expected an object", type_name(other))),
    };
    Ok(ParsedLine {
        change: Change {
            client_id: client_id.into_boxed_slice(),
            link,
            lease: Lease {
                kind,
                address,
                prefix_len,
                iaid,
                preferred_lifetime,
                valid_lifetime,
                cltt,
                state,
            },
            relay,
        },
        unknown_fields,
    })
}

fn relay_info(
    r: &Map<String, Value>,
    unknown_fields: &mut Vec<String>,
) -> Result<RelayInfo, LineError> {
    unknown(r, RELAY_FIELDS, "relay.", unknown_fields);
    let mut info = RelayInfo::default();
    for (i, v) in opt_array(r, "relay_ids", "relay.relay_ids")?
        .iter()
        .enumerate()
    {
        let name = format!("relay.relay_ids[{i}]");
        info.relay_ids.push(hex_value(v, &name)?.into_boxed_slice());
    }
    for (i, v) in opt_array(r, "remote_ids", "relay.remote_ids")?
        .iter()
        .enumerate()
    {
        let name = format!("relay.remote_ids[{i}]");
        let Value::Object(o) = v else {
            return err(format!(
                "{name} is {}: expected an object {{\"enterprise\": number, \"id\": hex}}",
                type_name(v)
            ));
        };
        unknown(o, REMOTE_ID_FIELDS, "relay.remote_ids[].", unknown_fields);
        let enterprise = match o.get("enterprise") {
            Some(v) => u32_value(v, &format!("{name}.enterprise"))?,
            None => return err(format!("{name}.enterprise is missing")),
        };
        let id = match o.get("id") {
            Some(v) => hex_value(v, &format!("{name}.id"))?,
            None => return err(format!("{name}.id is missing")),
        };
        info.remote_ids.push(RemoteIdKey {
            enterprise_number: enterprise,
            remote_id: id.into_boxed_slice(),
        });
    }
    match r.get("relay_message") {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => {
            unknown(
                o,
                RELAY_MESSAGE_FIELDS,
                "relay.relay_message.",
                unknown_fields,
            );
            let peer = match o.get("peer") {
                Some(v) => addr_value(v, "relay.relay_message.peer")?,
                None => return err("relay.relay_message.peer is missing"),
            };
            let message = match o.get("message") {
                Some(v) => hex_value(v, "relay.relay_message.message")?,
                None => return err("relay.relay_message.message is missing"),
            };
            info.relay_message = Some((peer, message.into_boxed_slice()));
        }
        Some(other) => {
            return err(format!(
                "relay.relay_message is {}: expected an object {{\"peer\": IPv6, \"message\": hex}}",
                type_name(other)
            ));
        }
    }
    Ok(info)
}

fn unknown(obj: &Map<String, Value>, known: &[&str], prefix: &str, out: &mut Vec<String>) {
    for key in obj.keys() {
        if !known.contains(&key.as_str()) {
            out.push(format!("{prefix}{key}"));
        }
    }
}

const fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn get<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a Value, LineError> {
    match obj.get(name) {
        None | Some(Value::Null) => err(format!("{name} is missing")),
        Some(v) => Ok(v),
    }
}

fn str_field<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a str, LineError> {
    str_value(get(obj, name)?, name)
}

fn str_value<'a>(v: &'a Value, name: &str) -> Result<&'a str, LineError> {
    match v {
        Value::String(s) => Ok(s),
        other => err(format!("{name} is {}: expected a string", type_name(other))),
    }
}

fn hex_field(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, LineError> {
    hex_value(get(obj, name)?, name)
}

/// Hex octets: plain digits, or two digits per octet separated by colons. Never empty.
fn hex_value(v: &Value, name: &str) -> Result<Vec<u8>, LineError> {
    let s = str_value(v, name)?;
    if s.is_empty() {
        return err(format!("{name} is empty"));
    }
    let bytes = if s.contains(':') {
        s.split(':')
            .map(|octet| {
                if octet.len() == 2 {
                    u8::from_str_radix(octet, 16).ok()
                } else {
                    None
                }
                .filter(|_| octet.bytes().all(|b| b.is_ascii_hexdigit()))
            })
            .collect::<Option<Vec<u8>>>()
    } else {
        hex::decode(s).ok()
    };
    match bytes {
        Some(b) => Ok(b),
        None => err(format!(
            "{name} is {s:?}: not hex (an even number of hex digits, or two per octet \
             separated by colons)"
        )),
    }
}

fn addr_field(obj: &Map<String, Value>, name: &str) -> Result<Ipv6Addr, LineError> {
    addr_value(get(obj, name)?, name)
}

fn addr_value(v: &Value, name: &str) -> Result<Ipv6Addr, LineError> {
    let s = str_value(v, name)?;
    s.parse()
        .or_else(|_| err(format!("{name} is {s:?}: not an IPv6 address")))
}

fn uint_field(obj: &Map<String, Value>, name: &str, max: u64) -> Result<u64, LineError> {
    uint_value(get(obj, name)?, name, max)
}

fn uint_value(v: &Value, name: &str, max: u64) -> Result<u64, LineError> {
    match v {
        Value::Number(n) => match n.as_u64() {
            Some(x) if x <= max => Ok(x),
            _ => err(format!(
                "{name} is {n}: expected an integer from 0 to {max}"
            )),
        },
        other => err(format!(
            "{name} is {}: expected an integer",
            type_name(other)
        )),
    }
}

fn u32_field(obj: &Map<String, Value>, name: &str) -> Result<u32, LineError> {
    u32_value(get(obj, name)?, name)
}

fn u32_value(v: &Value, name: &str) -> Result<u32, LineError> {
    let n = uint_value(v, name, u64::from(u32::MAX))?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

fn opt_array<'a>(
    obj: &'a Map<String, Value>,
    field: &str,
    name: &str,
) -> Result<&'a [Value], LineError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(other) => err(format!("{name} is {}: expected an array", type_name(other))),
    }
}

/// The last Unix second lqd's server time (32 bits from 2000-01-01) can hold.
const LAST_UNIX: i64 = ServerTime::UNIX_OFFSET as i64 + u32::MAX as i64;

fn cltt_field(obj: &Map<String, Value>) -> Result<ServerTime, LineError> {
    let unix = match get(obj, "cltt")? {
        Value::Number(n) => match n.as_i64() {
            Some(x) => x,
            None => {
                return err(format!(
                    "cltt is {n}: expected whole Unix seconds or an RFC 3339 string"
                ));
            }
        },
        Value::String(s) => match parse_rfc3339(s) {
            Some(x) => x,
            None => {
                return err(format!(
                    "cltt is {s:?}: not an RFC 3339 time such as \"2023-11-14T22:13:20Z\""
                ));
            }
        },
        other => {
            return err(format!(
                "cltt is {}: expected Unix seconds or an RFC 3339 string",
                type_name(other)
            ));
        }
    };
    if unix < ServerTime::UNIX_OFFSET as i64 || unix > LAST_UNIX {
        return err(format!(
            "cltt is {unix} Unix seconds: outside 2000-01-01T00:00:00Z to \
             2136-02-07T06:28:15Z, the times lqd can hold"
        ));
    }
    Ok(ServerTime::from_unix(u64::try_from(unix).unwrap_or(0)))
}

/// An RFC 3339 date-time (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, `t` or a space for `T`)
/// as Unix seconds; the fraction is dropped.
#[must_use]
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from.checked_add(len)?)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let year = num(0, 4)?;
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let month = num(5, 2)?;
    let day = num(8, 2)?;
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let hour = num(11, 2)?;
    if b.get(13) != Some(&b':') || b.get(16) != Some(&b':') {
        return None;
    }
    let minute = num(14, 2)?;
    let second = num(17, 2)?;
    let mut pos = 19;
    if b.get(pos) == Some(&b'.') {
        pos += 1;
        let start = pos;
        while b.get(pos).is_some_and(u8::is_ascii_digit) {
            pos += 1;
        }
        if pos == start {
            return None;
        }
    }
    let offset = match b.get(pos)? {
        b'Z' | b'z' if pos + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if pos + 6 == b.len() => {
            if b.get(pos + 3) != Some(&b':') {
                return None;
            }
            let (h, m) = (num(pos + 1, 2)?, num(pos + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let o = h * 3600 + m * 60;
            if *sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    // A leap second (60) counts as the second before it.
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
const fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// What a source (all its connections) shares: its name, counters and the unknown fields
/// already logged.
#[derive(Debug)]
struct Sink {
    name: String,
    handle: FeedHandle,
    sent: AtomicU64,
    skipped: AtomicU64,
    stats: SourceStats,
    logged_unknown: Mutex<HashSet<String>>,
}

impl Sink {
    /// Parses and sends one line; `what` names the stream in log lines. Returns false once the
    /// feed has closed.
    fn line(&self, what: &str, (number, line): NumberedLine<'_>) -> bool {
        match line {
            Ok(l) if l.trim().is_empty() => true,
            Ok(l) => self.parsed(what, number, parse_line(l), None),
            Err(e) => self.parsed(what, number, Err(e), None),
        }
    }

    /// Sends a parsed line's change (line `numbered` of a named writer, if so), or logs why the
    /// line is skipped. Returns false once the feed has closed.
    fn parsed(
        &self,
        what: &str,
        number: u64,
        parsed: Result<ParsedLine, LineError>,
        numbered: Option<Numbered>,
    ) -> bool {
        match parsed {
            Ok(p) => {
                self.log_unknown(what, number, &p.unknown_fields);
                self.stats
                    .saw_time(i64::try_from(p.change.lease.cltt.to_unix()).unwrap_or(0));
                if self
                    .handle
                    .send_fed(Fed::Change(p.change, numbered))
                    .is_err()
                {
                    return false;
                }
                self.sent.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.skipped.fetch_add(1, Ordering::Relaxed);
                self.stats.reject();
                tracing::warn!(source = %self.name, line = number, "{what}: line {number} skipped: {e}");
                true
            }
        }
    }

    fn log_unknown(&self, what: &str, number: u64, fields: &[String]) {
        if fields.is_empty() {
            return;
        }
        let mut logged = self
            .logged_unknown
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for field in fields {
            if logged.insert(field.clone()) {
                tracing::warn!(
                    source = %self.name,
                    line = number,
                    "{what}: line {number}: ignoring unknown field `{field}` (logged once per \
                     field name)"
                );
            }
        }
    }

    /// Feeds `data` through `splitter`; false once the feed has closed.
    fn push(&self, what: &str, splitter: &mut LineSplitter, data: &[u8]) -> bool {
        let mut open = true;
        splitter.push(data, |l| {
            if open {
                open = self.line(what, l);
            }
        });
        open
    }

    fn finish(&self, what: &str, splitter: &mut LineSplitter) -> bool {
        let mut open = true;
        splitter.finish(|l| open = self.line(what, l));
        open
    }
}

/// A `jsonl` source ready to start: for a UNIX socket, its socket is bound already (see
/// [`bind_jsonl`]).
#[derive(Debug)]
pub struct BoundJsonl {
    input: JsonlInput,
    listener: Option<UnixListener>,
    socket_file: Option<SocketFile>,
    wake: Wake,
    stats: SourceStats,
}

/// Prepares a `jsonl` source: binds the UNIX socket of `jsonl:unix:PATH` (nothing to do for a
/// file or standard input), so that lqd binds it before its listeners answer and a path in
/// use fails lqd's start.
///
/// # Errors
///
/// (UNIX socket) The path is in use by a listening process, is not a socket, or cannot be
/// bound.
pub fn bind_jsonl(input: JsonlInput) -> io::Result<BoundJsonl> {
    let (listener, socket_file) = match &input {
        JsonlInput::Unix(path) => {
            let listener = unix::bind(path)?;
            let file = SocketFile::of(path)?;
            tracing::info!(source = %input, "{input}: listening");
            (Some(listener), Some(file))
        }
        JsonlInput::File(_) | JsonlInput::Stdin => (None, None),
    };
    Ok(BoundJsonl {
        input,
        listener,
        socket_file,
        wake: Wake::default(),
        stats: SourceStats::default(),
    })
}

impl BoundJsonl {
    /// What the source reads.
    #[must_use]
    pub fn input(&self) -> &JsonlInput {
        &self.input
    }

    /// What wakes a followed file's source ([`Wake::Inotify`] unless told; standard input and
    /// a socket are read as data arrives either way).
    #[must_use]
    pub const fn wake(mut self, wake: Wake) -> Self {
        self.wake = wake;
        self
    }

    /// The counters the source sets: rejected lines, a followed file's lag, the newest `cltt`
    /// (lqd passes its metrics' ones).
    #[must_use]
    pub fn stats(mut self, stats: SourceStats) -> Self {
        self.stats = stats;
        self
    }

    /// For a UNIX socket, the guard that removes the socket file when dropped: hold it until
    /// lqd stops. Left here, the source's thread holds it, and the file stays when the process
    /// ends.
    pub fn take_socket_file(&mut self) -> Option<SocketFile> {
        self.socket_file.take()
    }

    /// Starts reading on its own thread(s), sending the changes into `handle`; `writers` are
    /// the named writers lqd knows (their marks come from the loop's journal: see
    /// [`Server::writers`](crate::server::Server::writers)).
    ///
    /// The thread returns how many changes the source sent: at the end of standard input, or
    /// when the feed closes (a file and a socket are read forever otherwise).
    ///
    /// # Errors
    ///
    /// The thread cannot be started.
    pub fn spawn(self, handle: FeedHandle, writers: Arc<Writers>) -> io::Result<JoinHandle<u64>> {
        let sink = Arc::new(Sink {
            name: self.input.to_string(),
            handle,
            sent: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            stats: self.stats,
            logged_unknown: Mutex::new(HashSet::new()),
        });
        let builder = std::thread::Builder::new().name("lqd-feed-jsonl".into());
        let wake = self.wake;
        match (self.input, self.listener) {
            (JsonlInput::File(path), _) => builder.spawn(move || follow_file(&sink, &path, wake)),
            (JsonlInput::Stdin, _) => builder.spawn(move || read_stdin(&sink)),
            (JsonlInput::Unix(_), Some(listener)) => {
                let socket_file = self.socket_file;
                builder.spawn(move || {
                    let _socket_file = socket_file;
                    unix::accept(&sink, &listener, &writers)
                })
            }
            (JsonlInput::Unix(path), None) => Err(io::Error::other(format!(
                "{} was not bound",
                path.display()
            ))),
        }
    }
}

/// The socket file lqd bound: removed when this is dropped, provided it is still the one lqd
/// bound (the same inode), so that a clean stop leaves no socket file behind.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    id: (u64, u64),
}

impl SocketFile {
    fn of(path: &Path) -> io::Result<Self> {
        let m = std::fs::symlink_metadata(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            id: (m.dev(), m.ino()),
        })
    }

    /// The socket's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && (m.dev(), m.ino()) == self.id);
        if ours {
            match std::fs::remove_file(&self.path) {
                Ok(()) => tracing::info!("removed the socket {}", self.path.display()),
                Err(e) => {
                    tracing::warn!("cannot remove the socket {}: {e}", self.path.display());
                }
            }
        }
    }
}

/// Runs a `jsonl` source reading `input` on its own thread(s), sending its changes into
/// `handle`: [`bind_jsonl`] then [`BoundJsonl::spawn`], with no writer known yet. The socket
/// file of a UNIX socket stays when the process ends.
///
/// # Errors
///
/// As [`bind_jsonl`], or the thread cannot be started.
pub fn spawn_jsonl(input: JsonlInput, handle: FeedHandle) -> io::Result<JoinHandle<u64>> {
    bind_jsonl(input)?.spawn(handle, Arc::new(Writers::new()))
}

fn read_stdin(sink: &Sink) -> u64 {
    let what = sink.name.as_str();
    let mut splitter = LineSplitter::new();
    let mut stdin = io::stdin().lock();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match stdin.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                if !sink.push(what, &mut splitter, chunk.get(..n).unwrap_or_default()) {
                    return sink.sent.load(Ordering::Relaxed);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::error!(source = %what, "{what}: cannot read standard input: {e}");
                break;
            }
        }
    }
    sink.finish(what, &mut splitter);
    let sent = sink.sent.load(Ordering::Relaxed);
    tracing::info!(
        source = %what,
        lines = splitter.lines(),
        changes = sent,
        skipped = sink.skipped.load(Ordering::Relaxed),
        "{what}: end of standard input; the source has ended"
    );
    sent
}

/// Follows the file at `path` (see [`super::follow`]) until the feed closes.
fn follow_file(sink: &Sink, path: &Path, wake: Wake) -> u64 {
    let what = sink.name.as_str();
    let mut watch = FileWatch::with(path, what, wake);
    let mut follower = Follower::new(path);
    loop {
        let flow = follower.poll(|event| match event {
            Event::Line { number, line, .. } => {
                if sink.line(what, (number, line)) {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(())
                }
            }
            Event::CaughtUp { lines } => {
                tracing::info!(
                    source = %what,
                    lines,
                    changes = sink.sent.load(Ordering::Relaxed),
                    "{what}: read the file to its end; following it"
                );
                ControlFlow::Continue(())
            }
            Event::Replaced { lines } => {
                tracing::info!(
                    source = %what,
                    lines,
                    "{what}: the file was replaced; reading the new one from its beginning"
                );
                ControlFlow::Continue(())
            }
            Event::Truncated { size, was } => {
                tracing::info!(
                    source = %what,
                    size,
                    was,
                    "{what}: the file was truncated; reading it again from its beginning"
                );
                ControlFlow::Continue(())
            }
            Event::Rewritten { size, was } => {
                tracing::info!(
                    source = %what,
                    size,
                    was,
                    "{what}: the file was rewritten in place (the {was} octets read changed); \
                     reading it again from its beginning"
                );
                ControlFlow::Continue(())
            }
            Event::Waiting(e) => {
                tracing::warn!(source = %what, "{what}: cannot open the file ({e}); waiting for it");
                ControlFlow::Continue(())
            }
            Event::ReadError(e) => {
                tracing::warn!(source = %what, "{what}: read error: {e}; retrying");
                ControlFlow::Continue(())
            }
        });
        if flow.is_break() || sink.handle.is_closed() {
            return sink.sent.load(Ordering::Relaxed);
        }
        sink.stats.set_lag(follower.unread());
        watch.follow(follower.id());
        watch.wait(POLL_INTERVAL);
    }
}
