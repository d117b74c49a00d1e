//! The one convention for times in every JSON that lqd, `lq` and loadgen write (issue 17):
//! a point in time is whole Unix seconds (UTC) in a field whose name ends in `_unix_s`
//! (`null`: infinite, or not known); a duration names its unit (`_ms`, `_us`, `_s`,
//! `_seconds`, `_secs`). [`check`] walks a document and fails on any field that breaks it.
//! Used by tests/json_times.rs and, through `#[path]`, by loadgen/tests/smoke.rs.
#![allow(dead_code)]

use serde_json::Value;

/// 2000-01-01T00:00:00Z in Unix seconds: DHCPv6 counts its time from there, so no time lqd
/// or lq handles is earlier, and a value below this one is a DHCPv6 server time in disguise.
pub(crate) const DHCPV6_EPOCH_UNIX: u64 = 946_684_800;

/// The last second DHCPv6's 32-bit time reaches (2136).
pub(crate) const DHCPV6_END_UNIX: u64 = DHCPV6_EPOCH_UNIX + u32::MAX as u64;

const DURATION_UNITS: [&str; 5] = ["_ms", "_us", "_s", "_seconds", "_secs"];

/// True when a field's name says it holds a point in time.
fn names_a_time(key: &str) -> bool {
    matches!(key, "time" | "start" | "end" | "date" | "timestamp")
        || key.contains("time")
        || key.contains("since")
        || key.contains("until")
        || key.contains("date")
        || key.ends_with("_at")
}

/// Checks every field of `doc` (`what` names it in failures) against the convention; returns
/// the `_unix_s` fields found, with their values (`None` for `null`), by path.
pub(crate) fn check(doc: &Value, what: &str) -> Vec<(String, Option<u64>)> {
    let mut found = Vec::new();
    walk(doc, what, &mut found);
    found
}

fn walk(v: &Value, path: &str, found: &mut Vec<(String, Option<u64>)>) {
    match v {
        Value::Object(map) => {
            for (key, value) in map {
                let at = format!("{path}.{key}");
                if key.ends_with("_unix_s") {
                    // A time, or a tuple of times (a lease's server end times).
                    let times = match value {
                        Value::Array(items) => items.iter().collect(),
                        one => vec![one],
                    };
                    for t in times {
                        found.push((at.clone(), unix_seconds(t, &at)));
                    }
                    continue;
                }
                let duration = DURATION_UNITS.iter().any(|u| key.ends_with(u));
                // A flag or a table may be named after a time; a number or text is one.
                let scalar = value.is_number() || value.is_string();
                assert!(
                    duration || !scalar || !names_a_time(key),
                    "{at}: a time must be in a field ending in _unix_s (Unix seconds), \
                     a duration in one naming its unit: {value}"
                );
                if duration {
                    assert!(
                        value.is_number() || value.is_null() || value.is_array(),
                        "{at}: a duration is a number: {value}"
                    );
                }
                walk(value, &at, found);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, &format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

/// A `_unix_s` field's value: `null`, or whole Unix seconds DHCPv6 can hold.
fn unix_seconds(v: &Value, at: &str) -> Option<u64> {
    if v.is_null() {
        return None;
    }
    let t = v
        .as_u64()
        .unwrap_or_else(|| panic!("{at}: Unix seconds are a whole number: {v}"));
    assert!(
        (DHCPV6_EPOCH_UNIX..=DHCPV6_END_UNIX).contains(&t),
        "{at} = {t}: not Unix seconds of 2000..2136 (a DHCPv6 server time, or milliseconds?)"
    );
    Some(t)
}

/// The values of the `_unix_s` fields in `found` whose path ends in `.name`.
pub(crate) fn values_of(found: &[(String, Option<u64>)], name: &str) -> Vec<Option<u64>> {
    let suffix = format!(".{name}");
    found
        .iter()
        .filter(|(p, _)| p.ends_with(&suffix))
        .map(|(_, t)| *t)
        .collect()
}

/// Now, Unix seconds.
pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Asserts `t` is within `slack` seconds of now (the test machine is lqd's and lq's).
pub(crate) fn assert_about_now(t: Option<u64>, slack: u64, what: &str) {
    let t = t.unwrap_or_else(|| panic!("{what}: no time"));
    let now = now_unix();
    assert!(
        t + slack >= now && t <= now + slack,
        "{what} = {t}, now is {now}: not the same clock and unit"
    );
}
