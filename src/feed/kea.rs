//! The `kea-csv` source: follows a Kea memfile lease6 CSV file (`kea-csv:PATH`).
//!
//! # The file format
//!
//! Kea's memfile backend writes one CSV row per lease change, appending; the last row for
//! (`lease_type`, `address`) is the lease's current state. The first line of every file is a
//! header naming the columns. Kea 2.2 writes 17 columns (`address,duid,valid_lifetime,expire,
//! subnet_id,pref_lifetime,lease_type,iaid,prefix_len,fqdn_fwd,fqdn_rev,hostname,hwaddr,state,
//! user_context,hwtype,hwaddr_source`); later versions add columns (`pool_id`, …). Columns are
//! located by their header name and unknown ones are ignored, so every one of these formats is
//! read. Fields are never quoted; a comma inside a field is written `&#x2c` (every `&#xHH` is
//! unescaped).
//!
//! # From a row to a change
//!
//! | Kea | lqd |
//! |---|---|
//! | `lease_type` 0 / 2 | [`LeaseKind::Address`] / [`LeaseKind::Prefix`] (1, IA_TA, is skipped) |
//! | `duid` (colon hex) | the client id |
//! | `valid_lifetime`, `pref_lifetime`, `iaid`, `prefix_len` | as is (128 for an address) |
//! | `expire − valid_lifetime` (Unix seconds) | `cltt` |
//! | `state` 0 / 1 / 2 | active / declined / expired (reclaimed) |
//! | `state` 3 (released, Kea 2.7.1+) | released |
//! | `state` 4 (registered, Kea 2.7.7+) | active |
//! | `valid_lifetime` 0 | the lease is gone: released when `state` is 0 or 3 and the row has a real DUID (a release keeps it), deleted otherwise |
//!
//! Kea 2.7.1 and later keep a released lease for lease affinity (when reclaimed leases are
//! held, the default): the release is written with lifetimes 0 and state 3, and the later
//! removal as another row with lifetime 0. Both end the lease; lqd reports the first as
//! released. State 4 is an address the client chose itself (SLAAC, say) and registered with
//! ADDR-REG-INFORM (RFC 9686), with IAID 0. It is reported as an active binding: the server
//! knows which client uses that address on that link, which is what a leasequery asks, and
//! RFC 9686 registers addresses precisely so that they can be tracked like assigned ones. A
//! row with any other state is skipped with a warning (a later Kea may add states).
//!
//! A declined address is written with DUID `00`: the source reports it as declined for the
//! binding (DUID, link, IAID) that last held that address, and the later deletion of the
//! declined address (at the end of probation) as deleted for that same binding. A declined row
//! for an address no row named a client for is skipped (logged at debug level).
//!
//! # The link of a lease
//!
//! 1. With `store-extended-info`, `user_context` holds the relays
//!    (`{"ISC": {"relays": [{"hop":…,"link":…,"peer":…,"options":"0x…"}]}}`, outer relay
//!    first; Kea 2.4+ names the list `relay-info`, both are read). The link is the link-address
//!    of the relay closest to the client (the **last** entry), skipping `::` link-addresses
//!    (lightweight relays) towards the outer relays (decision D16). Relay-ids (option 53) and
//!    remote-ids (option 37) are found by walking every relay layer's option bytes, in Kea's
//!    order; relay data (the relayed message) is not in Kea's file, so it stays unknown.
//! 2. Otherwise a row without relays keeps the link of the previous row for the same lease,
//!    when that row had the same DUID and subnet id (so that a release or an expiry, which may
//!    be written without the relays, lands in the same binding).
//! 3. Otherwise the subnet id is mapped to the subnet's prefix (D16: "a binding source that
//!    knows only a subnet id maps it to that subnet's prefix"), its first address: e.g. subnet
//!    `2001:db8:1::/64` gives link `2001:db8:1::`. The subnets are read from Kea's own
//!    configuration file, at the path in the environment variable `LQD_KEA_CONFIG`, else
//!    `/etc/kea/kea-dhcp6.conf`: its `Dhcp6.subnet6[]` and `Dhcp6.shared-networks[].subnet6[]`
//!    (`id`, `subnet`). Kea's comments (`//`, `#`, `/* */`) are allowed. lqd's `[[link]]`
//!    prefixes then name the canonical link, since the store maps any address inside a
//!    configured link prefix to that link.
//! 4. Last resort, for a subnet id that no configuration names: the link is the address whose
//!    low 32 bits are the subnet id (`::5` for subnet 5), with one warning per subnet id.
//!
//! # Following the file and Kea's lease file cleanup
//!
//! At start the source loads what Kea loads: `PATH.completed` if present, else `PATH.2` then
//! `PATH.1`, then `PATH`. Then it follows `PATH` as it grows, checked every
//! [`POLL_INTERVAL`]; a last line without its newline waits for the rest. Following is
//! [`super::follow`]'s, shared with the `jsonl` source.
//!
//! Lease file cleanup (LFC) renames `PATH` to `PATH.1` and starts a new `PATH` with only the
//! header. The source notices the new inode at `PATH`, reads the file it has open (now
//! `PATH.1`) to its end first, then the new `PATH` from its beginning; nothing is lost, even if
//! `PATH.1` is deleted meanwhile, since the source still holds it open. The compacted files
//! kea-lfc produces (`.output`, `.completed`, `.2`) hold only rows already read and are not
//! read again while following. A `PATH` that shrinks, or is rewritten in place (the first or
//! last 4 KiB read changed), is read again from its beginning.
//!
//! A cleanup can also run while the source starts. `PATH` is opened before the previous files
//! are read, so a `PATH` renamed to `PATH.1` meanwhile is read once, through that handle. And
//! kea-lfc may finish between the reads of `PATH.2` and `PATH.1` (it deletes `PATH.1` and
//! renames `PATH.completed` to `PATH.2`): after reading them the source looks again, and when
//! one of them is another file now, it reads the new set (files it already read are not read
//! twice).
//!
//! Re-reading is idempotent: for every lease (`lease_type`, `address`) the source remembers a
//! digest of the last rows it applied ([`RECENT_ROWS`] of them) and skips a row equal to one of
//! them. A compaction re-read at start, or a file rewritten with the last row of each lease
//! (what kea-lfc writes), thus sends nothing twice and never takes a lease back to an older row
//! it already passed. What a lease's rows left behind is dropped when Kea deletes the lease (a
//! row with valid lifetime 0), as Kea's own loader and kea-lfc do: the memory stays bounded by
//! the leases Kea holds. A deleted lease's rows read again (a whole old file, say) are thus
//! sent again, and end the same way.
//!
//! # Bad rows
//!
//! A row that does not parse (too few fields, a bad number, address or DUID, an unknown
//! `lease_type` or `state`) is logged as a warning with the file name and line number, and
//! skipped. A file whose first line is not a header with the needed columns has all its rows
//! skipped, with one warning.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io;
use std::net::Ipv6Addr;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use serde_json::Value;

use super::FeedHandle;
use super::follow::{Event, FileId, FileReader, Follower, NumberedLine};
use crate::codec::ServerTime;
use crate::store::{Change, Lease, LeaseKind, LeaseState, RelayInfo, RemoteIdKey};

pub use super::follow::POLL_INTERVAL;

/// How many recent rows per lease are remembered to make re-reading idempotent.
pub const RECENT_ROWS: usize = 4;

/// The environment variable naming Kea's configuration file.
pub const KEA_CONFIG_ENV: &str = "LQD_KEA_CONFIG";

/// Where Kea's configuration file is looked for without [`KEA_CONFIG_ENV`].
pub const KEA_CONFIG_DEFAULT: &str = "/etc/kea/kea-dhcp6.conf";

/// Kea's lease states (`Lease::STATE_*`): default (granted), declined, expired-reclaimed.
const STATE_DECLINED: u32 = 1;
const STATE_EXPIRED_RECLAIMED: u32 = 2;
/// Released, and kept for lease affinity (Kea 2.7.1 and later).
const STATE_RELEASED: u32 = 3;
/// Registered by the client with ADDR-REG-INFORM (RFC 9686; Kea 2.7.7 and later).
const STATE_REGISTERED: u32 = 4;

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

/// One row of a lease file, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeaRow {
    /// The address, or for a prefix delegation the prefix.
    pub address: Ipv6Addr,
    /// The DUID octets (`[0]` for a declined address).
    pub duid: Vec<u8>,
    /// Seconds; 0 means the lease is gone.
    pub valid_lifetime: u32,
    /// Unix seconds.
    pub expire: i64,
    /// Kea's subnet id.
    pub subnet_id: u32,
    /// Seconds.
    pub pref_lifetime: u32,
    /// 0 NA, 1 TA, 2 PD.
    pub lease_type: u8,
    /// The IAID.
    pub iaid: u32,
    /// The prefix length (128 for an address).
    pub prefix_len: u8,
    /// 0 default, 1 declined, 2 expired-reclaimed, 3 released, 4 registered (0 when the
    /// column is absent).
    pub state: u32,
    /// `user_context`, unescaped; empty when absent.
    pub user_context: String,
}

impl KeaRow {
    /// True for a declined address's placeholder DUID (`00`) or an empty one.
    #[must_use]
    pub fn anonymous(&self) -> bool {
        self.duid.is_empty() || self.duid == [0]
    }

    fn digest(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
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

/// What Kea's extended info says about the relays of a lease.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeaRelays {
    /// The link-address of the relay closest to the client that is not `::`.
    pub link: Option<Ipv6Addr>,
    /// The relay-ids and remote-ids found in the relays' options.
    pub info: RelayInfo,
}

fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let plain: String = s.chars().filter(|c| *c != ':').collect();
    hex::decode(plain).ok()
}

/// Walks DHCPv6 options (code u16, length u16, value) for relay-ids (53) and remote-ids (37).
pub fn walk_relay_options(bytes: &[u8], info: &mut RelayInfo) {
    let mut rest = bytes;
    while let [c0, c1, l0, l1, tail @ ..] = rest {
        let code = u16::from_be_bytes([*c0, *c1]);
        let len = usize::from(u16::from_be_bytes([*l0, *l1]));
        let Some(value) = tail.get(..len) else {
            return;
        };
        match code {
            53 if !value.is_empty() => info.relay_ids.push(value.into()),
            37 => {
                if let [e0, e1, e2, e3, id @ ..] = value {
                    info.remote_ids.push(RemoteIdKey {
                        enterprise_number: u32::from_be_bytes([*e0, *e1, *e2, *e3]),
                        remote_id: id.into(),
                    });
                }
            }
            _ => {}
        }
        rest = tail.get(len..).unwrap_or_default();
    }
}

/// Reads the relays from a lease's `user_context` (unescaped JSON); `None` when it has none.
#[must_use]
pub fn relays_from_user_context(user_context: &str) -> Option<KeaRelays> {
    if user_context.trim().is_empty() {
        return None;
    }
    let value: Value = serde_json::from_str(user_context).ok()?;
    let isc = value.get("ISC")?;
    let relays = isc
        .get("relays")
        .or_else(|| isc.get("relay-info"))?
        .as_array()?;
    if relays.is_empty() {
        return None;
    }
    let mut out = KeaRelays::default();
    for relay in relays {
        if let Some(opts) = relay.get("options").and_then(Value::as_str)
            && let Some(bytes) = hex_bytes(opts)
        {
            walk_relay_options(&bytes, &mut out.info);
        } else {
            // Kea 2.4+ may also give the ids directly.
            if let Some(id) = relay
                .get("relay-id")
                .and_then(Value::as_str)
                .and_then(hex_bytes)
                && !id.is_empty()
            {
                out.info.relay_ids.push(id.into());
            }
            if let Some(id) = relay
                .get("remote-id")
                .and_then(Value::as_str)
                .and_then(hex_bytes)
                && let [e0, e1, e2, e3, rid @ ..] = id.as_slice()
            {
                out.info.remote_ids.push(RemoteIdKey {
                    enterprise_number: u32::from_be_bytes([*e0, *e1, *e2, *e3]),
                    remote_id: rid.into(),
                });
            }
        }
    }
    out.link = relays
        .iter()
        .rev()
        .filter_map(|r| r.get("link").and_then(Value::as_str))
        .filter_map(|s| s.parse::<Ipv6Addr>().ok())
        .find(|a| !a.is_unspecified());
    Some(out)
}

/// Removes Kea's comments (`//`, `#` to the end of the line, `/* … */`) outside strings.
#[must_use]
pub fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '#' => skip_line(&mut chars, &mut out),
            '/' if chars.peek() == Some(&'/') => skip_line(&mut chars, &mut out),
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                    }
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    out
}

fn skip_line(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, out: &mut String) {
    for n in chars.by_ref() {
        if n == '\n' {
            out.push('\n');
            return;
        }
    }
}

/// Reads the subnets of a Kea DHCPv6 configuration: subnet id → the prefix's first address.
///
/// # Errors
///
/// When the text is not JSON (after removing comments) or has no `Dhcp6` object.
pub fn parse_kea_config(text: &str) -> Result<HashMap<u32, Ipv6Addr>, String> {
    let value: Value = serde_json::from_str(&strip_comments(text)).map_err(|e| e.to_string())?;
    let dhcp6 = value.get("Dhcp6").ok_or("no \"Dhcp6\" object")?;
    let mut map = HashMap::new();
    let mut add = |subnets: Option<&Value>| {
        for s in subnets.and_then(Value::as_array).into_iter().flatten() {
            let id = s
                .get("id")
                .and_then(Value::as_u64)
                .and_then(|i| u32::try_from(i).ok());
            let net = s
                .get("subnet")
                .and_then(Value::as_str)
                .and_then(|p| p.parse::<ipnet::Ipv6Net>().ok());
            if let (Some(id), Some(net)) = (id, net) {
                map.insert(id, net.network());
            }
        }
    };
    add(dhcp6.get("subnet6"));
    for network in dhcp6
        .get("shared-networks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        add(network.get("subnet6"));
    }
    Ok(map)
}

/// Loads the subnets from Kea's configuration at `LQD_KEA_CONFIG` or
/// `/etc/kea/kea-dhcp6.conf`, logging what it found; an empty map when there is none.
#[must_use]
pub fn load_kea_subnets(what: &str) -> HashMap<u32, Ipv6Addr> {
    let (path, explicit) = match std::env::var_os(KEA_CONFIG_ENV) {
        Some(p) => (PathBuf::from(p), true),
        None => (PathBuf::from(KEA_CONFIG_DEFAULT), false),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => match parse_kea_config(&text) {
            Ok(map) => {
                tracing::info!(source = %what, "{what}: {} subnets from Kea's configuration {}", map.len(), path.display());
                map
            }
            Err(e) => {
                tracing::warn!(source = %what, "{what}: cannot read Kea's configuration {}: {e}", path.display());
                HashMap::new()
            }
        },
        Err(e) => {
            if explicit {
                tracing::warn!(source = %what, "{what}: cannot read Kea's configuration {}: {e}", path.display());
            } else {
                tracing::info!(source = %what, "{what}: no Kea configuration at {} ({e}); subnet ids without relay info map to ::ID", path.display());
            }
            HashMap::new()
        }
    }
}

/// What [`KeaMapper::apply`] made of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Send this change.
    Change(Change),
    /// The row equals one already applied for this lease (a re-read): nothing to send.
    Duplicate,
    /// The row says nothing lqd reports (IA_TA, or a declined address no client is known
    /// for); the reason, for a debug log.
    Ignored(String),
}

/// Who last held an address, and on which link.
#[derive(Debug, Clone)]
struct Holder {
    duid: Box<[u8]>,
    link: Ipv6Addr,
    iaid: u32,
    subnet_id: u32,
}

/// Turns rows into changes, remembering what it needs across rows and files.
///
/// Per lease (`lease_type`, `address`) it remembers the binding that last held it (for a
/// declined row, which has no DUID) and the digests of its last [`RECENT_ROWS`] rows (to skip
/// rows read again). Both are dropped when Kea deletes the lease (a row with valid lifetime
/// 0), so the memory is bounded by the leases Kea itself holds, not by the churn.
#[derive(Debug, Default)]
pub struct KeaMapper {
    subnets: HashMap<u32, Ipv6Addr>,
    holders: HashMap<(u8, Ipv6Addr), Holder>,
    recent: HashMap<(u8, Ipv6Addr), VecDeque<u64>>,
    warned_subnets: HashSet<u32>,
}

impl KeaMapper {
    /// A mapper with Kea's subnets (subnet id → the prefix's first address).
    #[must_use]
    pub fn new(subnets: HashMap<u32, Ipv6Addr>) -> Self {
        Self {
            subnets,
            ..Self::default()
        }
    }

    fn subnet_link(&mut self, subnet_id: u32) -> Ipv6Addr {
        if let Some(a) = self.subnets.get(&subnet_id) {
            return *a;
        }
        if self.warned_subnets.insert(subnet_id) {
            tracing::warn!(
                "kea-csv: subnet id {subnet_id} has no relay info and is not in Kea's \
                 configuration; its leases are on link ::{subnet_id:x} (set {KEA_CONFIG_ENV})"
            );
        }
        Ipv6Addr::from(u128::from(subnet_id))
    }

    /// How many leases the mapper remembers rows or a holder for: those not deleted yet.
    #[must_use]
    pub fn remembered(&self) -> usize {
        self.recent.len().max(self.holders.len())
    }

    /// Maps one row.
    pub fn apply(&mut self, row: &KeaRow) -> Applied {
        let kind = match row.lease_type {
            0 => LeaseKind::Address,
            2 => LeaseKind::Prefix,
            _ => return Applied::Ignored("an IA_TA lease".into()),
        };
        let key = (row.lease_type, row.address);
        let digest = row.digest();
        let recent = self.recent.entry(key).or_default();
        if recent.contains(&digest) {
            return Applied::Duplicate;
        }
        if recent.len() >= RECENT_ROWS {
            recent.pop_front();
        }
        recent.push_back(digest);

        let prefix_len = if kind == LeaseKind::Address {
            128
        } else {
            row.prefix_len
        };
        let cltt_unix = row.expire.saturating_sub(i64::from(row.valid_lifetime));
        let cltt = ServerTime::from_unix(u64::try_from(cltt_unix).unwrap_or(0));
        let gone = row.valid_lifetime == 0;
        let relays = relays_from_user_context(&row.user_context);

        let (client_id, link, iaid) = if row.anonymous() {
            // A declined address (or its deletion): the binding that last held it.
            let Some(h) = self.holders.get(&key) else {
                return Applied::Ignored(format!(
                    "{} has no known client (DUID {})",
                    row.address,
                    hex::encode(&row.duid)
                ));
            };
            (h.duid.clone(), h.link, h.iaid)
        } else {
            let previous = self
                .holders
                .get(&key)
                .filter(|h| *h.duid == *row.duid && h.subnet_id == row.subnet_id)
                .map(|h| h.link);
            let link = match (relays.as_ref().and_then(|r| r.link), previous) {
                (Some(l), _) | (None, Some(l)) => l,
                (None, None) => self.subnet_link(row.subnet_id),
            };
            let client_id: Box<[u8]> = row.duid.clone().into_boxed_slice();
            self.holders.insert(
                key,
                Holder {
                    duid: client_id.clone(),
                    link,
                    iaid: row.iaid,
                    subnet_id: row.subnet_id,
                },
            );
            (client_id, link, row.iaid)
        };
        let state = match row.state {
            STATE_RELEASED if !row.anonymous() => LeaseState::Released,
            0 if gone && !row.anonymous() => LeaseState::Released,
            _ if gone => LeaseState::Deleted,
            STATE_DECLINED => LeaseState::Declined,
            STATE_EXPIRED_RECLAIMED => LeaseState::Expired,
            // Default, or registered (RFC 9686): a binding the server knows of.
            _ => LeaseState::Active,
        };
        if gone {
            // Kea forgets a lease at a row with lifetime 0 (its loader erases it), and so does
            // the mapper: what it remembers stays bounded by the leases Kea holds.
            self.holders.remove(&key);
            self.recent.remove(&key);
        }
        Applied::Change(Change {
            client_id,
            link,
            lease: Lease {
                kind,
                address: row.address,
                prefix_len,
                iaid,
                preferred_lifetime: row.pref_lifetime.min(row.valid_lifetime),
                valid_lifetime: row.valid_lifetime,
                cltt,
                state,
            },
            relay: relays.map(|r| r.info),
        })
    }
}

/// Sends the changes of rows, counting and logging.
struct Sink {
    name: String,
    handle: FeedHandle,
    mapper: KeaMapper,
    sent: u64,
    skipped: u64,
}

impl Sink {
    /// Handles one line of `file`, whose header (columns) is `header`. Breaks once the feed
    /// has closed.
    fn line(
        &mut self,
        file: &str,
        header: &mut Header,
        (number, line): NumberedLine<'_>,
    ) -> ControlFlow<()> {
        let text = match line {
            Ok(t) => t,
            Err(e) => {
                self.skip(file, number, &e.0);
                return ControlFlow::Continue(());
            }
        };
        if text.trim().is_empty() {
            return ControlFlow::Continue(());
        }
        let h = match header {
            Header::None => {
                match KeaHeader::parse(text) {
                    Ok(h) => *header = Header::Good(h),
                    Err(e) => {
                        tracing::warn!(source = %self.name, "{}: {file}: line {number}: bad header, rows skipped: {e}", self.name);
                        *header = Header::Bad;
                    }
                }
                return ControlFlow::Continue(());
            }
            Header::Bad => {
                self.skipped += 1;
                return ControlFlow::Continue(());
            }
            Header::Good(h) => h,
        };
        // Kea writes the header again after reopening in some versions (no address starts
        // like that): not a row. It names the columns of the rows after it.
        if text.starts_with("address,") {
            match KeaHeader::parse(text) {
                Ok(again) => *h = again,
                Err(e) => self.skip(file, number, &format!("a repeated header row: {e}")),
            }
            return ControlFlow::Continue(());
        }
        let row = match parse_row(h, text) {
            Ok(r) => r,
            Err(e) => {
                self.skip(file, number, &e.0);
                return ControlFlow::Continue(());
            }
        };
        match self.mapper.apply(&row) {
            Applied::Change(c) => {
                if self.handle.send(c).is_err() {
                    return ControlFlow::Break(());
                }
                self.sent += 1;
            }
            Applied::Duplicate => {}
            Applied::Ignored(why) => {
                tracing::debug!(source = %self.name, "{}: {file}: line {number} ignored: {why}", self.name);
            }
        }
        ControlFlow::Continue(())
    }

    /// Handles what following the lease file found. Breaks once the feed has closed.
    fn event(&mut self, header: &mut Header, event: Event<'_>) -> ControlFlow<()> {
        let name = &self.name;
        match event {
            Event::Line { file, number, line } => return self.line(file, header, (number, line)),
            Event::CaughtUp { lines } => {
                tracing::info!(source = %name, lines, changes = self.sent, "{name}: read the lease file to its end; following it");
            }
            Event::Replaced { lines } => {
                *header = Header::None;
                tracing::info!(source = %name, "{name}: the lease file was replaced after {lines} lines; reading the new one");
            }
            Event::Truncated { size, was } => {
                *header = Header::None;
                tracing::info!(source = %name, size, was, "{name}: the lease file shrank; reading it again");
            }
            Event::Rewritten { size, was } => {
                *header = Header::None;
                tracing::info!(source = %name, size, was, "{name}: the lease file was rewritten in place (the {was} octets read changed); reading it again");
            }
            Event::Waiting(e) => {
                tracing::warn!(source = %name, "{name}: cannot open the file ({e}); waiting for it");
            }
            Event::ReadError(e) => {
                tracing::warn!(source = %name, "{name}: read error: {e}; retrying");
            }
        }
        ControlFlow::Continue(())
    }

    fn skip(&mut self, file: &str, number: u64, why: &str) {
        self.skipped += 1;
        tracing::warn!(source = %self.name, line = number, "{}: {file}: line {number} skipped: {why}", self.name);
    }
}

/// The columns of the file being read, from its first line.
enum Header {
    None,
    Good(KeaHeader),
    Bad,
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Starts the `kea-csv` source on its own thread, with the subnets of Kea's configuration
/// (see the module documentation). The thread returns how many changes it sent, when the feed
/// closes.
///
/// # Errors
///
/// When the thread cannot be started.
pub fn spawn_kea_csv(path: PathBuf, handle: FeedHandle) -> io::Result<JoinHandle<u64>> {
    let name = format!("kea-csv:{}", path.display());
    let subnets = load_kea_subnets(&name);
    spawn_kea_csv_with(path, subnets, handle)
}

/// Starts the `kea-csv` source with the given subnets (subnet id → link address).
///
/// # Errors
///
/// When the thread cannot be started.
pub fn spawn_kea_csv_with(
    path: PathBuf,
    subnets: HashMap<u32, Ipv6Addr>,
    handle: FeedHandle,
) -> io::Result<JoinHandle<u64>> {
    let mut sink = Sink {
        name: format!("kea-csv:{}", path.display()),
        handle,
        mapper: KeaMapper::new(subnets),
        sent: 0,
        skipped: 0,
    };
    std::thread::Builder::new()
        .name("lqd-feed-kea".into())
        .spawn(move || follow(&mut sink, &path))
}

/// The files Kea loads before the lease file, as they are at one moment: which exist, and
/// which files (inodes) they are.
#[derive(Debug, PartialEq, Eq)]
struct Previous {
    completed: Option<FileId>,
    two: Option<FileId>,
    one: Option<FileId>,
}

impl Previous {
    fn at(path: &Path) -> Self {
        Self {
            completed: FileId::at(&with_suffix(path, ".completed")),
            two: FileId::at(&with_suffix(path, ".2")),
            one: FileId::at(&with_suffix(path, ".1")),
        }
    }

    /// The files Kea loads, in its order.
    fn files(&self) -> &'static [&'static str] {
        if self.completed.is_some() {
            &[".completed"]
        } else {
            &[".2", ".1"]
        }
    }
}

/// How many times start-up reads the previous files again when a cleanup keeps changing them.
const MAX_RELOADS: u32 = 4;

/// Reads the files Kea would load at start, before the lease file itself; `main` is the lease
/// file already held open (read by the follower, so not here if a cleanup renames it to `.1`
/// meanwhile).
///
/// A cleanup may finish while these files are read (kea-lfc deletes `.1` and renames
/// `.completed` to `.2`), so the rows only `.1` had would be missed. The files are looked at
/// again after reading: if any of them is another file now, the new set is read again. Files
/// already read are not read twice, and rows already applied are skipped by the mapper
/// ([`Applied::Duplicate`]), so a reload sends only what was missed.
fn load_previous(sink: &mut Sink, path: &Path, main: Option<FileId>) -> ControlFlow<()> {
    let mut read: Vec<FileId> = main.into_iter().collect();
    let mut reloads = 0;
    loop {
        let before = Previous::at(path);
        for suffix in before.files() {
            load_file(sink, &with_suffix(path, suffix), &mut read)?;
        }
        let after = Previous::at(path);
        if after == before {
            return ControlFlow::Continue(());
        }
        reloads += 1;
        if reloads > MAX_RELOADS {
            tracing::warn!(source = %sink.name, "{}: Kea's previous lease files kept changing while they were read; following the lease file now", sink.name);
            return ControlFlow::Continue(());
        }
        tracing::info!(source = %sink.name, "{}: a lease file cleanup changed the previous lease files while they were read; reading them again", sink.name);
    }
}

/// Reads one previous lease file to its end, unless it is one of `read` (which it joins).
fn load_file(sink: &mut Sink, path: &Path, read: &mut Vec<FileId>) -> ControlFlow<()> {
    let name = path.display().to_string();
    let mut reader = match FileReader::open(path) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return ControlFlow::Continue(()),
        Err(e) => {
            tracing::warn!(source = %sink.name, "{}: cannot read {name}: {e}", sink.name);
            return ControlFlow::Continue(());
        }
    };
    if read.contains(&reader.id()) {
        tracing::debug!(source = %sink.name, "{}: {name} was already read", sink.name);
        return ControlFlow::Continue(());
    }
    read.push(reader.id());
    let mut header = Header::None;
    match reader.read_to_end(|l| sink.line(&name, &mut header, l)) {
        Ok(flow) => flow?,
        Err(e) => {
            tracing::warn!(source = %sink.name, "{}: {name}: read error: {e}; the rest of it is not loaded", sink.name);
        }
    }
    tracing::info!(source = %sink.name, "{}: loaded {name} ({} lines)", sink.name, reader.lines());
    ControlFlow::Continue(())
}

fn follow(sink: &mut Sink, path: &Path) -> u64 {
    // The lease file is opened first: if a cleanup renames it to `.1` while the previous files
    // are read, the open handle still reads all of it, once.
    let mut follower = Follower::new(path);
    if load_previous(sink, path, follower.id()).is_continue() {
        let mut header = Header::None;
        while follower
            .poll(|event| sink.event(&mut header, event))
            .is_continue()
            && !sink.handle.is_closed()
        {
            std::thread::sleep(POLL_INTERVAL);
        }
    }
    tracing::info!(source = %sink.name, changes = sink.sent, skipped = sink.skipped, "{}: the feed closed; the source has ended", sink.name);
    sink.sent
}
