//! Kea's `lease6` table as lqd reads it: which schema versions it knows, the columns it needs,
//! and one row in PostgreSQL's text format → a [`KeaRow`] for the shared mapper.
//!
//! Rows arrive in text format from both the snapshot (a `SELECT` on the replication
//! connection) and the stream (pgoutput's tuples), with the session pinned to `DateStyle=ISO`,
//! `TimeZone=UTC` and `bytea_output=hex`, so one parser reads both.
//!
//! | column | Kea 2.2 (schema 13) | later schemas | read as |
//! |---|---|---|---|
//! | `address` | `VARCHAR(39)` | `INET` from schema 18 (Kea 2.5) | an IPv6 address (an `INET`'s `/128` dropped) |
//! | `duid` | `BYTEA` | same | `\x` and hex |
//! | `valid_lifetime`, `pref_lifetime` | `BIGINT` | same | seconds, 0 to 2^32 − 1 |
//! | `expire` | `TIMESTAMP WITH TIME ZONE` | same | Unix seconds |
//! | `subnet_id` | `BIGINT` | same | 0 to 2^32 − 1 |
//! | `lease_type` | `SMALLINT` | same | 0 NA, 1 TA, 2 PD |
//! | `iaid` | `INT` (Kea stores the unsigned IAID's bits) | same | the IAID |
//! | `prefix_len` | `SMALLINT` | same | 1 to 128 for a prefix |
//! | `state` | `INT8` | same | Kea's lease state (NULL: 0) |
//! | `user_context` | `TEXT` | same | JSON, the relays (NULL: none) |
//!
//! Columns lqd does not read (`hostname`, `hwaddr`, `pool_id` from schema 16, ...) may come and
//! go; a schema whose version is outside [`SCHEMA_VERSIONS`] is refused with a clear message,
//! since a column lqd reads may have changed meaning there.

use std::net::Ipv6Addr;
use std::ops::RangeInclusive;

use crate::feed::kea::csv::RowError;
use crate::feed::kea::mapper::KeaRow;

/// The major versions of Kea's PostgreSQL schema (`schema_version.version`) lqd reads: 13 is
/// Kea 2.2's (Debian 12), 34 the newest published when this was written (Kea 3.x).
pub const SCHEMA_VERSIONS: RangeInclusive<u32> = 13..=34;

/// The columns of `lease6` lqd reads, in the order of the snapshot's `SELECT`.
pub const COLUMNS: [&str; 11] = [
    "address",
    "duid",
    "valid_lifetime",
    "expire",
    "subnet_id",
    "pref_lifetime",
    "lease_type",
    "iaid",
    "prefix_len",
    "state",
    "user_context",
];

/// Checks the schema version Kea's `schema_version` table holds.
///
/// # Errors
///
/// A message naming the version and the ones lqd knows.
pub fn check_schema(version: &str, minor: &str) -> Result<u32, String> {
    let major: u32 = version
        .trim()
        .parse()
        .map_err(|_| format!("Kea's schema_version holds {version:?}: not a version number"))?;
    if SCHEMA_VERSIONS.contains(&major) {
        Ok(major)
    } else {
        Err(format!(
            "Kea's lease database has schema version {major}.{}, which lqd does not know (it \
             reads {} to {}: Kea 2.2 and later); upgrade lqd, or check that this is Kea's \
             lease database",
            minor.trim(),
            SCHEMA_VERSIONS.start(),
            SCHEMA_VERSIONS.end()
        ))
    }
}

fn bad<T>(column: &str, value: &str, why: &str) -> Result<T, RowError> {
    Err(RowError(format!("{column} is {value:?}: {why}")))
}

fn int<T: TryFrom<i64>>(column: &str, value: Option<&str>) -> Result<T, RowError> {
    let Some(text) = value else {
        return bad(column, "NULL", "missing");
    };
    let n: i64 = match text.trim().parse() {
        Ok(n) => n,
        Err(_) => return bad(column, text, "not a number"),
    };
    T::try_from(n).or_else(|_| bad(column, text, "out of range"))
}

/// Reads an address: `VARCHAR` text, or an `INET` with an optional `/128`.
fn address(value: Option<&str>) -> Result<Ipv6Addr, RowError> {
    let text = value.unwrap_or("NULL");
    let plain = text.trim().strip_suffix("/128").unwrap_or(text.trim());
    plain
        .parse()
        .or_else(|_| bad("address", text, "not an IPv6 address"))
}

/// Reads a `BYTEA` in hex output (`\x0001...`); NULL is empty.
fn bytea(value: Option<&str>) -> Result<Vec<u8>, RowError> {
    let Some(text) = value else {
        return Ok(Vec::new());
    };
    let Some(hex_digits) = text.strip_prefix("\\x") else {
        return bad("duid", text, "not bytea hex output");
    };
    hex::decode(hex_digits).or_else(|_| bad("duid", text, "bad hex"))
}

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Reads a `TIMESTAMP WITH TIME ZONE` in ISO output (`2026-12-08 10:00:00+00`, optional
/// fraction, an offset `±HH`, `±HH:MM` or `±HH:MM:SS`) as Unix seconds (the fraction
/// dropped). `infinity` is the largest time.
pub fn timestamp(text: &str) -> Option<i64> {
    let t = text.trim();
    if t == "infinity" {
        return Some(i64::from(u32::MAX) * 2);
    }
    let field = |s: &str| s.parse::<i64>().ok();
    let (date, rest) = t.split_once(' ')?;
    let mut d = date.splitn(3, '-');
    let (y, m, day) = (field(d.next()?)?, field(d.next()?)?, field(d.next()?)?);
    let split = rest.find(['+', '-'])?;
    let (time, offset) = rest.split_at(split);
    let mut h = time.splitn(3, ':');
    let (hh, mm) = (field(h.next()?)?, field(h.next()?)?);
    let ss = field(h.next()?.split('.').next()?)?;
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let mut o = offset.get(1..)?.splitn(3, ':');
    let oh = field(o.next()?)?;
    let om = o.next().map_or(Some(0), field)?;
    let os = o.next().map_or(Some(0), field)?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 24 || mm > 59 || ss > 60 {
        return None;
    }
    let local = days_from_civil(y, m, day) * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(local - sign * (oh * 3600 + om * 60 + os))
}

/// Builds a [`KeaRow`] from a row's text values, looked up by column name (`None` for NULL).
///
/// # Errors
///
/// [`RowError`] naming the column that cannot be read.
pub fn kea_row<'a>(value: impl Fn(&str) -> Option<&'a str>) -> Result<KeaRow, RowError> {
    let address = address(value("address"))?;
    let duid = bytea(value("duid"))?;
    let expire_text = value("expire").unwrap_or("NULL");
    let Some(expire) = timestamp(expire_text) else {
        return bad("expire", expire_text, "not a timestamp");
    };
    let lease_type: u8 = int("lease_type", value("lease_type"))?;
    let prefix_len: u8 = int("prefix_len", value("prefix_len").or(Some("128")))?;
    match lease_type {
        0 | 1 => {}
        2 if (1..=128).contains(&prefix_len) => {}
        2 => return bad("prefix_len", &prefix_len.to_string(), "not 1 to 128"),
        _ => return bad("lease_type", &lease_type.to_string(), "not 0, 1 or 2"),
    }
    let iaid: i32 = int("iaid", value("iaid"))?;
    Ok(KeaRow {
        address,
        duid,
        valid_lifetime: int("valid_lifetime", value("valid_lifetime"))?,
        expire,
        subnet_id: int("subnet_id", value("subnet_id"))?,
        pref_lifetime: int("pref_lifetime", value("pref_lifetime"))?,
        lease_type,
        iaid: u32::from_ne_bytes(iaid.to_ne_bytes()),
        prefix_len,
        state: int("state", value("state").or(Some("0")))?,
        user_context: value("user_context").unwrap_or_default().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp("1970-01-01 00:00:00+00"), Some(0));
        assert_eq!(timestamp("2023-11-14 22:13:20+00"), Some(1_700_000_000));
        assert_eq!(
            timestamp("2023-11-14 22:13:20.123456+00"),
            Some(1_700_000_000)
        );
        assert_eq!(timestamp("2023-11-15 00:13:20+02"), Some(1_700_000_000));
        assert_eq!(timestamp("2023-11-14 16:43:20-05:30"), Some(1_700_000_000));
        assert_eq!(timestamp("2000-02-29 00:00:00+00"), Some(951_782_400));
        assert_eq!(timestamp("yesterday"), None);
        assert_eq!(timestamp("2023-13-14 22:13:20+00"), None);
    }

    fn row(values: &[(&str, Option<&str>)]) -> Result<KeaRow, RowError> {
        let owned: Vec<(String, Option<String>)> = values
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
            .collect();
        kea_row(|name| {
            owned
                .iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| v.as_deref())
        })
    }

    const PD: [(&str, Option<&str>); 11] = [
        ("address", Some("2001:db8:100::/128")),
        ("duid", Some("\\x000300010200000001")),
        ("valid_lifetime", Some("4000")),
        ("expire", Some("2023-11-14 23:20:00+00")),
        ("subnet_id", Some("7")),
        ("pref_lifetime", Some("3000")),
        ("lease_type", Some("2")),
        ("iaid", Some("-1")),
        ("prefix_len", Some("56")),
        ("state", None),
        ("user_context", None),
    ];

    #[test]
    fn a_prefix_row() {
        let r = row(&PD).unwrap();
        assert_eq!(r.address, "2001:db8:100::".parse::<Ipv6Addr>().unwrap());
        assert_eq!(r.duid, [0, 3, 0, 1, 2, 0, 0, 0, 1]);
        assert_eq!((r.valid_lifetime, r.pref_lifetime), (4000, 3000));
        assert_eq!(r.expire, 1_700_004_000);
        assert_eq!((r.lease_type, r.prefix_len, r.subnet_id), (2, 56, 7));
        assert_eq!(
            r.iaid,
            u32::MAX,
            "Kea keeps the IAID's bits in a signed INT"
        );
        assert_eq!((r.state, r.user_context.as_str()), (0, ""));
    }

    #[test]
    fn bad_columns_are_named() {
        for (column, value, want) in [
            ("address", "10.0.0.1", "address"),
            ("duid", "0001", "duid"),
            ("valid_lifetime", "-1", "valid_lifetime"),
            ("expire", "soon", "expire"),
            ("lease_type", "5", "lease_type"),
            ("prefix_len", "0", "prefix_len"),
        ] {
            let mut values = PD;
            for v in &mut values {
                if v.0 == column {
                    v.1 = Some(value);
                }
            }
            let e = row(&values).unwrap_err();
            assert!(e.0.starts_with(want), "{column}: {e}");
        }
    }

    #[test]
    fn schema_versions() {
        assert_eq!(check_schema("13", "0"), Ok(13));
        assert_eq!(check_schema(" 28 ", "0"), Ok(28));
        let e = check_schema("12", "0").unwrap_err();
        assert!(e.contains("schema version 12.0"), "{e}");
        assert!(check_schema("99", "1").unwrap_err().contains("99.1"));
        assert!(check_schema("x", "0").is_err());
    }
}
