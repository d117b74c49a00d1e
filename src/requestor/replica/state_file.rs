//! The state file's format (version 2), and how files of version 1 are read.
//!
//! Every time is Unix seconds in a field whose name ends in `_unix_s`, the convention of
//! every JSON lqd and `lq` write: base-times and the server's lease end times are the
//! server's clock (its DHCPv6 time, seconds since 2000, plus 946,684,800), the other times
//! the local clock.
//!
//! Version 1, written by `lq` before that convention, kept base-times and the server's end
//! times in the server's seconds since 2000 (`base_time`, `server_ends`) and local times in
//! Unix milliseconds (`last_transaction_ms`, `preferred_until_ms`, `valid_until_ms`). It is
//! still read, and written back as version 2 at the next save.

use std::net::Ipv6Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::super::binding::{Lease, LeaseKind};
use crate::codec::ServerTime;

/// The version this `lq` writes.
pub(super) const VERSION: u32 = 2;

/// A state file (version 2).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StateFile {
    pub(super) version: u32,
    pub(super) server: String,
    pub(super) scope: String,
    /// The earliest of the streams' base-times (server clock).
    pub(super) base_time_unix_s: Option<u64>,
    /// Each stream's base-time, in the order of the scope; `None` only for a version 1 file
    /// written before streams were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) streams: Option<Vec<FileStream>>,
    pub(super) clients: Vec<FileClient>,
}

/// One stream's saved state.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileStream {
    /// Its base-time (server clock), sent back as START_TIME.
    pub(super) base_time_unix_s: Option<u64>,
}

/// One client.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileClient {
    pub(super) client_id: String,
    /// Its last transaction (local clock).
    pub(super) last_transaction_unix_s: Option<i64>,
    /// The one stream that reported the client (with `views` absent).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(super) stream: usize,
    /// What each stream reported, when several did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) views: Option<Vec<FileView>>,
    pub(super) leases: Vec<FileLease>,
}

const fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// What one stream reported about a client.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileView {
    pub(super) stream: usize,
    /// Indexes into the client's `leases`.
    pub(super) leases: Vec<usize>,
    /// The last transaction this stream reported (local clock).
    pub(super) last_transaction_unix_s: Option<i64>,
}

/// One lease.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLease {
    kind: FileKind,
    address: Ipv6Addr,
    prefix_len: u8,
    /// When the preferred lifetime ends (local clock); `null`: infinite.
    preferred_until_unix_s: Option<i64>,
    /// When the valid lifetime ends (local clock); `null`: infinite.
    valid_until_unix_s: Option<i64>,
    /// When the (preferred, valid) lifetimes end on the server's clock, when the message that
    /// reported the lease had a base-time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    server_ends_unix_s: Option<(u64, u64)>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FileKind {
    Address,
    Prefix,
}

impl FileLease {
    pub(super) fn from_lease(l: &Lease) -> Self {
        Self {
            kind: match l.kind {
                LeaseKind::Address => FileKind::Address,
                LeaseKind::Prefix => FileKind::Prefix,
            },
            address: l.address,
            prefix_len: l.prefix_len,
            preferred_until_unix_s: l.preferred_until.map(unix_s),
            valid_until_unix_s: l.valid_until.map(unix_s),
            server_ends_unix_s: l.server_ends.map(|(p, v)| (p.to_unix(), v.to_unix())),
        }
    }

    /// The lease; an error names a server end time outside DHCPv6's range.
    pub(super) fn to_lease(&self) -> Result<Lease, String> {
        let server_ends = match self.server_ends_unix_s {
            Some((p, v)) => Some((server_time(p)?, server_time(v)?)),
            None => None,
        };
        Ok(Lease {
            kind: match self.kind {
                FileKind::Address => LeaseKind::Address,
                FileKind::Prefix => LeaseKind::Prefix,
            },
            address: self.address,
            prefix_len: self.prefix_len,
            preferred_until: self.preferred_until_unix_s.map(from_unix_s),
            valid_until: self.valid_until_unix_s.map(from_unix_s),
            server_ends,
        })
    }
}

/// A state file's text, of any version this `lq` reads, as version 2.
pub(super) fn parse(text: &str) -> Result<StateFile, String> {
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let Version { version } = serde_json::from_str(text).map_err(|e| e.to_string())?;
    match version {
        1 => serde_json::from_str::<v1::StateFile>(text)
            .map(StateFile::from)
            .map_err(|e| e.to_string()),
        VERSION => serde_json::from_str(text).map_err(|e| e.to_string()),
        other => Err(format!("version {other} (this lq reads 1 and {VERSION})")),
    }
}

/// A base-time or server end time from the file: Unix seconds on the server's clock, which
/// DHCPv6 counts from 2000 in 32 bits.
pub(super) fn server_time(unix: u64) -> Result<ServerTime, String> {
    unix.checked_sub(ServerTime::UNIX_OFFSET)
        .and_then(|t| u32::try_from(t).ok())
        .map(ServerTime)
        .ok_or_else(|| format!("{unix} is not a DHCPv6 server time (Unix seconds, 2000 to 2136)"))
}

/// Whole seconds since the Unix epoch, rounded down (negative before it).
pub(super) fn unix_s(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            if d.subsec_nanos() > 0 {
                secs.saturating_add(1).saturating_neg()
            } else {
                secs.saturating_neg()
            }
        }
    }
}

/// The local time `secs` seconds after the Unix epoch.
pub(super) fn from_unix_s(secs: i64) -> SystemTime {
    let d = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        UNIX_EPOCH.checked_add(d).unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH.checked_sub(d).unwrap_or(UNIX_EPOCH)
    }
}

/// Version 1, read only.
mod v1 {
    use std::net::Ipv6Addr;

    use serde::Deserialize;

    use crate::codec::ServerTime;

    #[derive(Deserialize)]
    pub(super) struct StateFile {
        pub(super) version: u32,
        pub(super) server: String,
        pub(super) scope: String,
        /// Server seconds since 2000.
        pub(super) base_time: Option<u32>,
        #[serde(default)]
        pub(super) streams: Option<Vec<FileStream>>,
        pub(super) clients: Vec<FileClient>,
    }

    #[derive(Deserialize)]
    pub(super) struct FileStream {
        pub(super) base_time: Option<u32>,
    }

    #[derive(Deserialize)]
    pub(super) struct FileClient {
        pub(super) client_id: String,
        pub(super) last_transaction_ms: Option<i64>,
        #[serde(default)]
        pub(super) stream: usize,
        #[serde(default)]
        pub(super) views: Option<Vec<FileView>>,
        pub(super) leases: Vec<FileLease>,
    }

    #[derive(Deserialize)]
    pub(super) struct FileView {
        pub(super) stream: usize,
        pub(super) leases: Vec<usize>,
        pub(super) last_transaction_ms: Option<i64>,
    }

    #[derive(Deserialize)]
    pub(super) struct FileLease {
        pub(super) kind: super::FileKind,
        pub(super) address: Ipv6Addr,
        pub(super) prefix_len: u8,
        pub(super) preferred_until_ms: Option<i64>,
        pub(super) valid_until_ms: Option<i64>,
        #[serde(default)]
        pub(super) server_ends: Option<(u32, u32)>,
    }

    /// Server seconds since 2000 as Unix seconds.
    pub(super) fn unix(t: u32) -> u64 {
        ServerTime(t).to_unix()
    }

    /// Unix milliseconds as Unix seconds, rounded down.
    pub(super) const fn seconds(ms: i64) -> i64 {
        ms.div_euclid(1000)
    }
}

impl From<v1::StateFile> for StateFile {
    fn from(f: v1::StateFile) -> Self {
        Self {
            version: f.version,
            server: f.server,
            scope: f.scope,
            base_time_unix_s: f.base_time.map(v1::unix),
            streams: f.streams.map(|streams| {
                streams
                    .into_iter()
                    .map(|s| FileStream {
                        base_time_unix_s: s.base_time.map(v1::unix),
                    })
                    .collect()
            }),
            clients: f
                .clients
                .into_iter()
                .map(|c| FileClient {
                    client_id: c.client_id,
                    last_transaction_unix_s: c.last_transaction_ms.map(v1::seconds),
                    stream: c.stream,
                    views: c.views.map(|views| {
                        views
                            .into_iter()
                            .map(|v| FileView {
                                stream: v.stream,
                                leases: v.leases,
                                last_transaction_unix_s: v.last_transaction_ms.map(v1::seconds),
                            })
                            .collect()
                    }),
                    leases: c
                        .leases
                        .into_iter()
                        .map(|l| FileLease {
                            kind: l.kind,
                            address: l.address,
                            prefix_len: l.prefix_len,
                            preferred_until_unix_s: l.preferred_until_ms.map(v1::seconds),
                            valid_until_unix_s: l.valid_until_ms.map(v1::seconds),
                            server_ends_unix_s: l
                                .server_ends
                                .map(|(p, v)| (v1::unix(p), v1::unix(v))),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}
