//! A local copy of a server's bindings and the base-time it is current to, persisted to a
//! state file written atomically (temporary file, fsync, rename, fsync of the directory), so
//! a crash leaves either the old state or the new one.
//!
//! A client's data replaces what the replica holds for that client (see the
//! [module docs](super) for why): its live leases become the client's leases, and a client
//! left with none is removed.
//!
//! The state file is JSON:
//!
//! ```text
//! {"version":1,"server":"[::1]:547","scope":"link-address=2001:db8:0:1::1",
//!  "base_time":789004800,
//!  "clients":[{"client_id":"000300010200000000a1","last_transaction_ms":1735689000000,
//!              "leases":[{"kind":"address","address":"2001:db8:0:1::2a","prefix_len":128,
//!                         "preferred_until_ms":1735692600000,"valid_until_ms":1735696200000}]}]}
//! ```
//!
//! Local times are Unix milliseconds (`null`: infinite lifetime); `base_time` is the server's
//! time (seconds since 2000), kept to be sent back as START_TIME.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::binding::{ClientData, Lease, LeaseKind};
use super::error::{Error, Result};
use super::time::{from_unix_ms, unix_ms};
use crate::codec::ServerTime;

/// The state file's format version.
const VERSION: u32 = 1;

/// What the replica holds for one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// Its live leases, sorted by kind, address and prefix length.
    pub leases: Vec<Lease>,
    /// Local time of its last transaction, when the server said.
    pub last_transaction: Option<SystemTime>,
}

impl Client {
    /// True when `other` holds the same leases ending at the same times.
    ///
    /// With the server's end times on both sides (messages with a base-time), they are
    /// compared exactly: a re-sent lease is the same, and any renewal is a change, however
    /// soon. Otherwise the local end times are compared within two seconds: a lifetime is
    /// counted from the message's arrival, so the same lease sent again ends a little later
    /// locally, and that is not a change.
    fn same_as(&self, other: &Self) -> bool {
        fn close(a: Option<SystemTime>, b: Option<SystemTime>) -> bool {
            match (a, b) {
                (None, None) => true,
                (Some(a), Some(b)) => unix_ms(a).abs_diff(unix_ms(b)) <= 2000,
                _ => false,
            }
        }
        self.leases.len() == other.leases.len()
            && self.leases.iter().zip(&other.leases).all(|(a, b)| {
                a.key() == b.key()
                    && match (a.server_ends, b.server_ends) {
                        (Some(x), Some(y)) => x == y,
                        _ => {
                            close(a.valid_until, b.valid_until)
                                && close(a.preferred_until, b.preferred_until)
                        }
                    }
            })
    }

    fn from_data(data: &ClientData) -> Self {
        let mut leases = data.leases.clone();
        leases.sort_by_key(Lease::key);
        leases.dedup_by_key(|l| l.key());
        Self {
            leases,
            last_transaction: data.last_transaction,
        }
    }
}

/// A change the replica went through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A client the replica did not hold.
    Added {
        /// Its DUID.
        client_id: Vec<u8>,
        /// What it holds now.
        client: Client,
    },
    /// A client whose leases changed.
    Updated {
        /// Its DUID.
        client_id: Vec<u8>,
        /// What it held.
        before: Client,
        /// What it holds now.
        client: Client,
    },
    /// A client whose last lease ended.
    Removed {
        /// Its DUID.
        client_id: Vec<u8>,
        /// What it held.
        before: Client,
    },
}

impl Change {
    /// The client's DUID.
    #[must_use]
    pub fn client_id(&self) -> &[u8] {
        match self {
            Self::Added { client_id, .. }
            | Self::Updated { client_id, .. }
            | Self::Removed { client_id, .. } => client_id,
        }
    }
}

/// The bindings of one server (or of one filter's share of them), keyed by client DUID, and
/// the base-time they are current to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replica {
    clients: BTreeMap<Vec<u8>, Client>,
    base_time: Option<ServerTime>,
}

impl Replica {
    /// An empty replica.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The clients, by DUID.
    #[must_use]
    pub const fn clients(&self) -> &BTreeMap<Vec<u8>, Client> {
        &self.clients
    }

    /// The number of clients.
    #[must_use]
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// True without clients.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// The server base-time the content is current to (the START_TIME to resume from), or
    /// `None` before the first sync completed.
    #[must_use]
    pub const fn base_time(&self) -> Option<ServerTime> {
        self.base_time
    }

    /// Sets the base-time the content is current to.
    pub const fn set_base_time(&mut self, t: Option<ServerTime>) {
        self.base_time = t;
    }

    /// Applies one client's data; the change, if anything changed.
    pub fn apply(&mut self, data: &ClientData) -> Option<Change> {
        let client = Client::from_data(data);
        self.set(data.client_id.clone(), client)
    }

    fn set(&mut self, client_id: Vec<u8>, client: Client) -> Option<Change> {
        if client.leases.is_empty() {
            let before = self.clients.remove(&client_id)?;
            return Some(Change::Removed { client_id, before });
        }
        match self.clients.get_mut(&client_id) {
            None => {
                self.clients.insert(client_id.clone(), client.clone());
                Some(Change::Added { client_id, client })
            }
            Some(held) if held.same_as(&client) => {
                held.last_transaction = client.last_transaction;
                None
            }
            Some(held) => {
                let before = std::mem::replace(held, client.clone());
                Some(Change::Updated {
                    client_id,
                    before,
                    client,
                })
            }
        }
    }

    /// Replaces the whole content by `snapshot` (the answers of a full resync; a client in
    /// several answers gets the union of its leases); the changes, removals first.
    pub fn replace_all(&mut self, snapshot: &[ClientData]) -> Vec<Change> {
        let mut next: BTreeMap<Vec<u8>, Client> = BTreeMap::new();
        for d in snapshot {
            let c = Client::from_data(d);
            match next.get_mut(&d.client_id) {
                Some(held) => {
                    held.leases.extend(c.leases);
                    held.leases.sort_by_key(Lease::key);
                    held.leases.dedup_by_key(|l| l.key());
                    held.last_transaction = held.last_transaction.max(c.last_transaction);
                }
                None => {
                    next.insert(d.client_id.clone(), c);
                }
            }
        }
        let gone: Vec<Vec<u8>> = self
            .clients
            .keys()
            .filter(|k| !next.contains_key(*k))
            .cloned()
            .collect();
        let mut changes = Vec::new();
        for k in gone {
            if let Some(before) = self.clients.remove(&k) {
                changes.push(Change::Removed {
                    client_id: k,
                    before,
                });
            }
        }
        for (k, c) in next {
            if let Some(ch) = self.set(k, c) {
                changes.push(ch);
            }
        }
        changes
    }

    /// Reads a state file; `Ok(None)` when there is none. `server` and `scope` must match
    /// those it was written with.
    pub fn load(path: &Path, server: &str, scope: &str) -> Result<Option<Self>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::state(path, e)),
        };
        let file: StateFile =
            serde_json::from_str(&text).map_err(|e| Error::state(path, format!("{e}")))?;
        if file.version != VERSION {
            return Err(Error::state(
                path,
                format!("version {} (this lq reads {VERSION})", file.version),
            ));
        }
        if file.server != server || file.scope != scope {
            return Err(Error::state(
                path,
                format!(
                    "made for server {} with {}, not {server} with {}; use another file",
                    file.server,
                    scope_text(&file.scope),
                    scope_text(scope)
                ),
            ));
        }
        let mut replica = Self {
            clients: BTreeMap::new(),
            base_time: file.base_time.map(ServerTime),
        };
        for c in file.clients {
            let client_id =
                hex::decode(&c.client_id).map_err(|e| Error::state(path, format!("{e}")))?;
            let mut leases: Vec<Lease> = c.leases.iter().map(FileLease::to_lease).collect();
            leases.sort_by_key(Lease::key);
            let client = Client {
                leases,
                last_transaction: c.last_transaction_ms.map(from_unix_ms),
            };
            replica.clients.insert(client_id, client);
        }
        Ok(Some(replica))
    }

    /// Writes the state file atomically: a temporary file beside it, fsync, rename over it,
    /// fsync of the directory.
    pub fn save(&self, path: &Path, server: &str, scope: &str) -> Result<()> {
        let file = StateFile {
            version: VERSION,
            server: server.to_owned(),
            scope: scope.to_owned(),
            base_time: self.base_time.map(|t| t.0),
            clients: self
                .clients
                .iter()
                .map(|(id, c)| FileClient {
                    client_id: hex::encode(id),
                    last_transaction_ms: c.last_transaction.map(unix_ms),
                    leases: c.leases.iter().map(FileLease::from_lease).collect(),
                })
                .collect(),
        };
        let text = serde_json::to_vec(&file).map_err(|e| Error::state(path, e))?;
        let tmp = temp_path(path);
        let written = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(&text)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            File::open(dir)?.sync_all()
        })();
        written.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::state(path, e)
        })
    }
}

fn scope_text(scope: &str) -> String {
    if scope.is_empty() {
        "no filter or link".to_owned()
    } else {
        scope.to_owned()
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}", std::process::id()));
    path.with_file_name(name)
}

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    server: String,
    scope: String,
    base_time: Option<u32>,
    clients: Vec<FileClient>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileClient {
    client_id: String,
    last_transaction_ms: Option<i64>,
    leases: Vec<FileLease>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileLease {
    kind: FileKind,
    address: Ipv6Addr,
    prefix_len: u8,
    preferred_until_ms: Option<i64>,
    valid_until_ms: Option<i64>,
    /// The server's end times (preferred, valid), in its seconds since 2000; absent in files
    /// of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    server_ends: Option<(u32, u32)>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FileKind {
    Address,
    Prefix,
}

impl FileLease {
    fn from_lease(l: &Lease) -> Self {
        Self {
            kind: match l.kind {
                LeaseKind::Address => FileKind::Address,
                LeaseKind::Prefix => FileKind::Prefix,
            },
            address: l.address,
            prefix_len: l.prefix_len,
            preferred_until_ms: l.preferred_until.map(unix_ms),
            valid_until_ms: l.valid_until.map(unix_ms),
            server_ends: l.server_ends.map(|(p, v)| (p.0, v.0)),
        }
    }

    fn to_lease(&self) -> Lease {
        Lease {
            kind: match self.kind {
                FileKind::Address => LeaseKind::Address,
                FileKind::Prefix => LeaseKind::Prefix,
            },
            address: self.address,
            prefix_len: self.prefix_len,
            preferred_until: self.preferred_until_ms.map(from_unix_ms),
            valid_until: self.valid_until_ms.map(from_unix_ms),
            server_ends: self
                .server_ends
                .map(|(p, v)| (ServerTime(p), ServerTime(v))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::requestor::time::TimeBase;

    fn data(id: u8, leases: &[(&str, u32)]) -> ClientData {
        let time = TimeBase::now(Some(ServerTime(1000)));
        let mut d = ClientData {
            client_id: vec![0, 3, 0, 1, id],
            leases: Vec::new(),
            ended: Vec::new(),
            last_transaction: Some(time.seconds_ago(5)),
            relay_data: None,
            time,
        };
        for (a, valid) in leases {
            let l = Lease {
                kind: LeaseKind::Address,
                address: a.parse().unwrap(),
                prefix_len: 128,
                preferred_until: time.lifetime_end(valid / 2),
                valid_until: time.lifetime_end(*valid),
                server_ends: time.server_ends(valid / 2, *valid),
            };
            if *valid == 0 {
                d.ended.push(l);
            } else {
                d.leases.push(l);
            }
        }
        d
    }

    #[test]
    fn client_data_replaces_and_an_ended_client_goes_d5() {
        let mut r = Replica::new();
        assert!(matches!(
            r.apply(&data(1, &[("2001:db8::1", 100)])),
            Some(Change::Added { .. })
        ));
        assert_eq!(r.apply(&data(1, &[("2001:db8::1", 100)])), None, "re-sent");
        // The newest state only: ::1 ended without a zero-lifetime record of it.
        assert!(matches!(
            r.apply(&data(1, &[("2001:db8::2", 100)])),
            Some(Change::Updated { .. })
        ));
        let leases = &r.clients()[&vec![0, 3, 0, 1, 1]].leases;
        assert_eq!(leases.len(), 1);
        assert_eq!(
            leases[0].address,
            "2001:db8::2".parse::<Ipv6Addr>().unwrap()
        );
        assert!(matches!(
            r.apply(&data(1, &[("2001:db8::2", 0)])),
            Some(Change::Removed { .. })
        ));
        assert!(r.is_empty());
        assert_eq!(r.apply(&data(1, &[("2001:db8::2", 0)])), None);
    }

    #[test]
    fn a_resync_replaces_everything() {
        let mut r = Replica::new();
        r.apply(&data(1, &[("2001:db8::1", 100)]));
        r.apply(&data(2, &[("2001:db8::2", 100)]));
        let changes = r.replace_all(&[
            data(2, &[("2001:db8::2", 100)]),
            data(3, &[("2001:db8::3", 100)]),
            data(3, &[("2001:db8:1::3", 100)]),
        ]);
        let kinds: Vec<_> = changes
            .iter()
            .map(|c| match c {
                Change::Added { .. } => "added",
                Change::Updated { .. } => "updated",
                Change::Removed { .. } => "removed",
            })
            .collect();
        assert_eq!(kinds, ["removed", "added"]);
        assert_eq!(r.len(), 2);
        assert_eq!(r.clients()[&vec![0, 3, 0, 1, 3]].leases.len(), 2, "union");
    }

    #[test]
    fn the_state_file_round_trips_and_is_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(Replica::load(&path, "s", "").unwrap(), None);
        let mut r = Replica::new();
        r.apply(&data(1, &[("2001:db8::1", 100), ("2001:db8::9", u32::MAX)]));
        r.set_base_time(Some(ServerTime(12345)));
        r.save(&path, "s", "").unwrap();
        assert_eq!(Replica::load(&path, "s", "").unwrap(), Some(r.clone()));
        // Nothing is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        // Another server or scope is refused; so is garbage.
        assert!(Replica::load(&path, "other", "").is_err());
        assert!(Replica::load(&path, "s", "link-address=::1").is_err());
        std::fs::write(&path, "{").unwrap();
        let e = Replica::load(&path, "s", "").unwrap_err().to_string();
        assert!(e.starts_with("state file "), "{e}");
    }

    /// One address lease, as a message with base-time `base` arriving `late_ms` after it.
    fn sent(base: u32, late_ms: u64, valid: u32) -> ClientData {
        let time = TimeBase {
            base_time: Some(ServerTime(base)),
            received: std::time::UNIX_EPOCH
                + std::time::Duration::from_millis(ServerTime(base).to_unix() * 1000 + late_ms),
        };
        let mut d = data(1, &[]);
        d.time = time;
        d.leases.push(Lease {
            kind: LeaseKind::Address,
            address: "2001:db8::1".parse().unwrap(),
            prefix_len: 128,
            preferred_until: time.lifetime_end(valid - 1800),
            valid_until: time.lifetime_end(valid),
            server_ends: time.server_ends(valid - 1800, valid),
        });
        d
    }

    #[test]
    fn a_renewal_one_second_later_is_a_change_and_a_resend_is_not() {
        let mut r = Replica::new();
        assert!(matches!(
            r.apply(&sent(1000, 10, 3600)),
            Some(Change::Added { .. })
        ));
        // The same lease sent again 1.9 s later (lifetimes counted from the later base-time,
        // arriving with other jitter): no change, though its local end moved.
        assert_eq!(r.apply(&sent(1001, 900, 3599)), None);
        assert_eq!(r.apply(&sent(1002, 0, 3598)), None);
        // Renewed one second after the first: a change, and the replica takes the new end.
        let renewed = sent(1001, 10, 3600);
        assert!(matches!(r.apply(&renewed), Some(Change::Updated { .. })));
        let held = &r.clients()[&vec![0, 3, 0, 1, 1]].leases[0];
        assert_eq!(held.server_ends, Some((ServerTime(2801), ServerTime(4601))));
        assert_eq!(held.valid_until, renewed.leases[0].valid_until);
    }
}
