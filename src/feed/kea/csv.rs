//! Kea's memfile lease file (CSV): the header, the rows, Kea's escapes.
//!
//! A row parses into a [`KeaRow`], the lease as Kea's lease6 table holds it; turning it into a
//! change is [`super::mapper`]'s, which any other reader of Kea's lease6 rows (a database
//! source) shares.

use std::fmt;
use std::net::Ipv6Addr;

use super::mapper::{KeaRow, STATE_REGISTERED};

/// The longest DUID (a 2-octet type and at most 128 octets).
const MAX_DUID: usize = 130;

/// Why a row (or a header) was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError(pub String);

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RowError {}

fn err<T>(message: impl Into<String>) -> Result<T, RowError> {
    Err(RowError(message.into()))
}

/// The columns of a lease file, located by name from its header row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeaHeader {
    columns: usize,
    address: usize,
    duid: usize,
    valid_lifetime: usize,
    expire: usize,
    subnet_id: usize,
    pref_lifetime: usize,
    lease_type: usize,
    iaid: usize,
    prefix_len: usize,
    state: Option<usize>,
    user_context: Option<usize>,
}

impl KeaHeader {
    /// Reads a header row (without its newline).
    ///
    /// # Errors
    ///
    /// When a needed column is missing.
    pub fn parse(line: &str) -> Result<Self, RowError> {
        let names: Vec<&str> = line
            .trim_end_matches('\r')
            .split(',')
            .map(str::trim)
            .collect();
        let find = |name: &str| names.iter().position(|n| *n == name);
        let need = |name: &str| {
            find(name).ok_or_else(|| {
                RowError(format!(
                    "the header has no column {name:?}: not a Kea lease6 file?"
                ))
            })
        };
        Ok(Self {
            columns: names.len(),
            address: need("address")?,
            duid: need("duid")?,
            valid_lifetime: need("valid_lifetime")?,
            expire: need("expire")?,
            subnet_id: need("subnet_id")?,
            pref_lifetime: need("pref_lifetime")?,
            lease_type: need("lease_type")?,
            iaid: need("iaid")?,
            prefix_len: need("prefix_len")?,
            state: find("state"),
            user_context: find("user_context"),
        })
    }

    /// How many columns the header names.
    #[must_use]
    pub const fn columns(&self) -> usize {
        self.columns
    }
}

/// Unescapes Kea's `&#xHH` escapes (Kea writes a comma in a field as `&#x2c`).
#[must_use]
pub fn unescape(field: &str) -> String {
    if !field.contains("&#x") {
        return field.to_owned();
    }
    let mut out = Vec::with_capacity(field.len());
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes.get(i..i + 3) == Some(b"&#x")
            && let Some(hex) = bytes.get(i + 3..i + 5)
            && let Ok(s) = std::str::from_utf8(hex)
            && let Ok(b) = u8::from_str_radix(s, 16)
        {
            out.push(b);
            i += 5;
            continue;
        }
        if let Some(&b) = bytes.get(i) {
            out.push(b);
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn num<T: std::str::FromStr>(fields: &[&str], i: usize, name: &str) -> Result<T, RowError> {
    let s = fields.get(i).map_or("", |s| s.trim());
    s.parse()
        .map_err(|_| RowError(format!("{name} is {s:?}: not a number in range")))
}

fn parse_duid(s: &str) -> Result<Vec<u8>, RowError> {
    let s = s.trim();
    let plain: String = s.chars().filter(|c| *c != ':').collect();
    let bytes = if s.contains(':') {
        // Each octet between colons may be written with one digit.
        let mut out = Vec::new();
        for part in s.split(':') {
            if part.is_empty() || part.len() > 2 {
                return err(format!("duid {s:?}: not colon hex"));
            }
            out.push(
                u8::from_str_radix(part, 16)
                    .map_err(|_| RowError(format!("duid {s:?}: not colon hex")))?,
            );
        }
        out
    } else {
        hex::decode(&plain).map_err(|_| RowError(format!("duid {s:?}: not hex")))?
    };
    if bytes.is_empty() || bytes.len() > MAX_DUID {
        return err(format!("duid {s:?}: {} octets", bytes.len()));
    }
    Ok(bytes)
}

/// Parses one data row (without its newline) by the columns of `header`.
///
/// # Errors
///
/// A [`RowError`] naming the column and the problem.
pub fn parse_row(header: &KeaHeader, line: &str) -> Result<KeaRow, RowError> {
    let line = line.trim_end_matches('\r');
    let fields: Vec<&str> = line.split(',').collect();
    let needed = [
        header.address,
        header.duid,
        header.valid_lifetime,
        header.expire,
        header.subnet_id,
        header.pref_lifetime,
        header.lease_type,
        header.iaid,
        header.prefix_len,
    ]
    .into_iter()
    .chain(header.state)
    .max()
    .unwrap_or(0);
    if fields.len() <= needed {
        return err(format!(
            "{} fields, but the header needs at least {}",
            fields.len(),
            needed + 1
        ));
    }
    let field = |i: usize| fields.get(i).map_or("", |s| s.trim());
    let address: Ipv6Addr = field(header.address).parse().map_err(|_| {
        RowError(format!(
            "address {:?}: not an IPv6 address",
            field(header.address)
        ))
    })?;
    let duid = parse_duid(&unescape(field(header.duid)))?;
    let valid_lifetime: u32 = num(&fields, header.valid_lifetime, "valid_lifetime")?;
    let expire: i64 = num(&fields, header.expire, "expire")?;
    let subnet_id: u32 = num(&fields, header.subnet_id, "subnet_id")?;
    let pref_lifetime: u32 = num(&fields, header.pref_lifetime, "pref_lifetime")?;
    let lease_type: u8 = num(&fields, header.lease_type, "lease_type")?;
    let iaid: u32 = num(&fields, header.iaid, "iaid")?;
    let prefix_len: u8 = num(&fields, header.prefix_len, "prefix_len")?;
    let state: u32 = match header.state {
        Some(i) if !field(i).is_empty() => num(&fields, i, "state")?,
        _ => 0,
    };
    let user_context = header
        .user_context
        .map(|i| unescape(field(i)))
        .unwrap_or_default();
    match lease_type {
        0 | 1 => {}
        2 => {
            if prefix_len == 0 || prefix_len > 128 {
                return err(format!("prefix_len {prefix_len}: not 1 to 128"));
            }
        }
        other => {
            return err(format!(
                "lease_type {other}: expected 0 (NA), 1 (TA) or 2 (PD)"
            ));
        }
    }
    if state > STATE_REGISTERED {
        return err(format!(
            "state {state}: not a state lqd knows (0 default, 1 declined, 2 expired-reclaimed, \
             3 released, 4 registered)"
        ));
    }
    Ok(KeaRow {
        address,
        duid,
        valid_lifetime,
        expire,
        subnet_id,
        pref_lifetime,
        lease_type,
        iaid,
        prefix_len,
        state,
        user_context,
    })
}
