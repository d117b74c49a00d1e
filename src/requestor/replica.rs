//! A local copy of a server's bindings and the base-time it is current to, persisted to a
//! state file written atomically (temporary file, fsync, rename, fsync of the directory), so
//! a crash leaves either the old state or the new one.
//!
//! A client's data replaces what the replica holds for that client (see the
//! [module docs](super) for why): its live leases become the client's leases, and a client
//! left with none is removed.
//!
//! # Streams
//!
//! A replica may be fed by several *streams* (numbered from 0), one per filtered Active query
//! of a [`Watch`](super::Watch). Each stream has its own base-time, and the replica keeps
//! what each stream last said about each client (its *view*): a client's data from stream
//! `s` replaces only stream `s`'s view, and the client holds the union of its views. So a
//! client on two watched links holds the leases of both, a client dropped by one stream but
//! still reported by another stays, and a resync of one stream (after its DataMissing)
//! replaces only what that stream reported. [`Replica::apply`] and [`Replica::replace_all`]
//! use stream 0.
//!
//! The state file is JSON (version 2):
//!
//! ```text
//! {"version":2,"server":"[::1]:547","scope":"link 2001:db8:0:1::1, link 2001:db8:0:2::1",
//!  "base_time_unix_s":1735689600,
//!  "streams":[{"base_time_unix_s":1735689600},{"base_time_unix_s":1735689612}],
//!  "clients":[{"client_id":"000300010200000000a1","last_transaction_unix_s":1735689000,
//!              "leases":[{"kind":"address","address":"2001:db8:0:1::2a","prefix_len":128,
//!                         "preferred_until_unix_s":1735692600,"valid_until_unix_s":1735696200,
//!                         "server_ends_unix_s":[1735692600,1735696200]}]},
//!             {"client_id":"000300010200000000b2","stream":1,"leases":[...]}]}
//! ```
//!
//! Every time is Unix seconds, in a field ending in `_unix_s` (`null`: an infinite
//! lifetime, or none known). Base-times and `server_ends_unix_s` are on the server's clock
//! (its DHCPv6 time, seconds since 2000, is that minus 946,684,800): a base-time is sent back
//! as START_TIME. The other times are on the local clock. `streams` holds each stream's
//! base-time, in the order of the scope; the top-level `base_time_unix_s` is the earliest of
//! them. A client's `leases` are the union of its views; `stream` names the one stream that
//! reported it (absent: 0), and a client several streams reported has `views` instead:
//! `[{"stream":0,"leases":[0,1],"last_transaction_unix_s":...}]`, each listing indexes into
//! `leases`. Files of version 1 (server seconds since 2000 and Unix milliseconds) are still
//! read ([`state_file`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::binding::{ClientData, Lease};
use super::error::{Error, Result};
use super::time::unix_ms;
use crate::codec::ServerTime;
use state_file::{FileClient, FileLease, FileStream, FileView, StateFile, VERSION};

mod state_file;

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

/// Which streams reported a client, when that is not simply stream 0 with the client's
/// leases.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Views {
    /// One stream, whose view is the client's data.
    One(usize),
    /// Several streams, each view as it reported it, by stream.
    Many(Vec<(usize, Client)>),
}

/// The bindings of one server (or of one scope's share of them), keyed by client DUID, and
/// the base-time of each stream that feeds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replica {
    /// Each client's union of views.
    clients: BTreeMap<Vec<u8>, Client>,
    /// The views of each client not simply reported by stream 0 alone.
    views: BTreeMap<Vec<u8>, Views>,
    /// Each stream's base-time.
    base_times: Vec<Option<ServerTime>>,
    /// Read from a state file written before streams were kept (no `streams`).
    unstreamed: bool,
}

impl Replica {
    /// An empty replica.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The clients, by DUID: each the union of what its streams reported.
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

    /// The server base-time the whole content is current to: the earliest of the streams'
    /// (safe to resume every stream from), or `None` while a stream has none.
    #[must_use]
    pub fn base_time(&self) -> Option<ServerTime> {
        let mut min: Option<ServerTime> = None;
        for t in &self.base_times {
            let t = (*t)?;
            min = Some(min.map_or(t, |m| m.min(t)));
        }
        min
    }

    /// Sets every stream's base-time (stream 0's when none is known yet).
    pub fn set_base_time(&mut self, t: Option<ServerTime>) {
        if self.base_times.is_empty() {
            self.base_times.push(t);
        } else {
            self.base_times.iter_mut().for_each(|b| *b = t);
        }
    }

    /// The number of streams whose base-time is kept.
    #[must_use]
    pub fn streams(&self) -> usize {
        self.base_times.len()
    }

    /// Stream `stream`'s base-time: what its content is current to, and the START_TIME to
    /// resume it from.
    #[must_use]
    pub fn stream_base_time(&self, stream: usize) -> Option<ServerTime> {
        self.base_times.get(stream).copied().flatten()
    }

    /// Sets stream `stream`'s base-time.
    pub fn set_stream_base_time(&mut self, stream: usize, t: Option<ServerTime>) {
        if self.base_times.len() <= stream {
            self.base_times.resize(stream.saturating_add(1), None);
        }
        if let Some(b) = self.base_times.get_mut(stream) {
            *b = t;
        }
    }

    /// True when read from a state file that kept no per-stream state (written by an `lq`
    /// before streams): its one base-time and its clients are stream 0's.
    #[must_use]
    pub const fn unstreamed(&self) -> bool {
        self.unstreamed
    }

    /// The streams that reported client `id`.
    #[must_use]
    pub fn streams_of(&self, id: &[u8]) -> Vec<usize> {
        match self.views.get(id) {
            _ if !self.clients.contains_key(id) => Vec::new(),
            None => vec![0],
            Some(Views::One(s)) => vec![*s],
            Some(Views::Many(v)) => v.iter().map(|(s, _)| *s).collect(),
        }
    }

    /// Applies one client's data from stream 0; the change, if anything changed.
    pub fn apply(&mut self, data: &ClientData) -> Option<Change> {
        self.apply_from(0, data)
    }

    /// Applies one client's data from stream `stream`: it replaces that stream's view of the
    /// client. The change to the client's union, if anything changed.
    pub fn apply_from(&mut self, stream: usize, data: &ClientData) -> Option<Change> {
        let new = Client::from_data(data);
        let mut views = self.views_of(&data.client_id);
        match views.iter_mut().find(|(s, _)| *s == stream) {
            Some((_, held)) if held.same_as(&new) => held.last_transaction = new.last_transaction,
            Some((_, held)) => *held = new,
            None => {
                views.push((stream, new));
                views.sort_by_key(|(s, _)| *s);
            }
        }
        self.put(data.client_id.clone(), views)
    }

    /// What each stream reported about client `id`, by stream.
    fn views_of(&self, id: &[u8]) -> Vec<(usize, Client)> {
        let Some(c) = self.clients.get(id) else {
            return Vec::new();
        };
        match self.views.get(id) {
            None => vec![(0, c.clone())],
            Some(Views::One(s)) => vec![(*s, c.clone())],
            Some(Views::Many(v)) => v.clone(),
        }
    }

    /// Sets client `id`'s views (those without leases dropped) and its union; the change.
    fn put(&mut self, id: Vec<u8>, mut views: Vec<(usize, Client)>) -> Option<Change> {
        views.retain(|(_, c)| !c.leases.is_empty());
        let union = union(&views);
        match views.as_slice() {
            [] | [(0, _)] => {
                self.views.remove(&id);
            }
            [(s, _)] => {
                self.views.insert(id.clone(), Views::One(*s));
            }
            _ => {
                self.views.insert(id.clone(), Views::Many(views));
            }
        }
        let Some(client) = union else {
            let before = self.clients.remove(&id)?;
            return Some(Change::Removed {
                client_id: id,
                before,
            });
        };
        match self.clients.insert(id.clone(), client.clone()) {
            None => Some(Change::Added {
                client_id: id,
                client,
            }),
            Some(before) if before.same_as(&client) => None,
            Some(before) => Some(Change::Updated {
                client_id: id,
                before,
                client,
            }),
        }
    }

    /// Replaces the whole content by `snapshot` (the answers of a full resync; a client in
    /// several answers gets the union of its leases), all of it stream 0's; the changes,
    /// removals first.
    pub fn replace_all(&mut self, snapshot: &[ClientData]) -> Vec<Change> {
        let mut changes = Vec::new();
        let ids: Vec<Vec<u8>> = self.clients.keys().cloned().collect();
        let keep: BTreeMap<&[u8], ()> = snapshot
            .iter()
            .map(|d| (d.client_id.as_slice(), ()))
            .collect();
        for id in ids {
            if !keep.contains_key(id.as_slice()) {
                changes.extend(self.put(id, Vec::new()));
            }
        }
        self.views.clear();
        changes.extend(self.replace_streams(&[(0, snapshot)]));
        changes
    }

    /// Replaces what the listed streams reported by their answers (each the answer of a Bulk
    /// query covering everything that stream covers); other streams' views stay. A client in
    /// several messages of one answer gets the union of its leases. The changes, removals
    /// first.
    pub fn replace_streams(&mut self, answers: &[(usize, &[ClientData])]) -> Vec<Change> {
        let listed = |s: usize| answers.iter().any(|(a, _)| *a == s);
        let mut next: BTreeMap<Vec<u8>, Vec<(usize, Client)>> = BTreeMap::new();
        for (stream, snapshot) in answers {
            for d in *snapshot {
                let c = Client::from_data(d);
                let views = next.entry(d.client_id.clone()).or_default();
                match views.iter_mut().find(|(s, _)| s == stream) {
                    Some((_, held)) => {
                        held.leases.extend(c.leases);
                        held.leases.sort_by_key(Lease::key);
                        held.leases.dedup_by_key(|l| l.key());
                        held.last_transaction = held.last_transaction.max(c.last_transaction);
                    }
                    None => views.push((*stream, c)),
                }
            }
        }
        let dropped: Vec<Vec<u8>> = self
            .clients
            .keys()
            .filter(|id| !next.contains_key(*id) && self.streams_of(id).into_iter().any(&listed))
            .cloned()
            .collect();
        let mut changes = Vec::new();
        for id in dropped {
            let mut views = self.views_of(&id);
            views.retain(|(s, _)| !listed(*s));
            changes.extend(self.put(id, views));
        }
        let mut updates = Vec::new();
        for (id, new) in next {
            let mut views = self.views_of(&id);
            views.retain(|(s, held)| {
                !listed(*s) || new.iter().any(|(n, c)| n == s && held.same_as(c))
            });
            for (s, c) in new {
                match views.iter_mut().find(|(v, _)| *v == s) {
                    Some((_, held)) => held.last_transaction = c.last_transaction,
                    None => views.push((s, c)),
                }
            }
            views.sort_by_key(|(s, _)| *s);
            updates.extend(self.put(id, views));
        }
        // Removals first: a client whose union lost leases but kept some is an update.
        let (removed, other): (Vec<Change>, Vec<Change>) = updates
            .into_iter()
            .partition(|c| matches!(c, Change::Removed { .. }));
        changes.extend(removed);
        changes.extend(other);
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
        let file = state_file::parse(&text).map_err(|e| Error::state(path, e))?;
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
        let base_time = |t: Option<u64>| {
            t.map(state_file::server_time)
                .transpose()
                .map_err(|e| Error::state(path, format!("base-time {e}")))
        };
        let mut replica = Self {
            unstreamed: file.streams.is_none(),
            base_times: match &file.streams {
                Some(streams) => streams
                    .iter()
                    .map(|s| base_time(s.base_time_unix_s))
                    .collect::<Result<_>>()?,
                None => vec![base_time(file.base_time_unix_s)?],
            },
            ..Self::default()
        };
        for c in file.clients {
            let client_id =
                hex::decode(&c.client_id).map_err(|e| Error::state(path, format!("{e}")))?;
            let saved: Vec<Lease> = c
                .leases
                .iter()
                .map(FileLease::to_lease)
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| Error::state(path, format!("client {}: {e}", c.client_id)))?;
            let last_transaction = c.last_transaction_unix_s.map(state_file::from_unix_s);
            let views = match &c.views {
                Some(views) => views
                    .iter()
                    .map(|v| {
                        let mut leases: Vec<Lease> = v
                            .leases
                            .iter()
                            .filter_map(|i| saved.get(*i).copied())
                            .collect();
                        leases.sort_by_key(Lease::key);
                        let view = Client {
                            leases,
                            last_transaction: v
                                .last_transaction_unix_s
                                .map(state_file::from_unix_s),
                        };
                        (v.stream, view)
                    })
                    .collect(),
                None => {
                    let mut leases = saved;
                    leases.sort_by_key(Lease::key);
                    vec![(
                        c.stream,
                        Client {
                            leases,
                            last_transaction,
                        },
                    )]
                }
            };
            replica.put(client_id, views);
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
            base_time_unix_s: self.base_time().map(ServerTime::to_unix),
            streams: Some(
                self.base_times
                    .iter()
                    .map(|t| FileStream {
                        base_time_unix_s: t.map(ServerTime::to_unix),
                    })
                    .collect(),
            ),
            clients: self
                .clients
                .iter()
                .map(|(id, c)| self.file_client(id, c))
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

    fn file_client(&self, id: &[u8], c: &Client) -> FileClient {
        let (stream, views) = match self.views.get(id) {
            None => (0, None),
            Some(Views::One(s)) => (*s, None),
            Some(Views::Many(views)) => {
                let index = |l: &Lease| c.leases.iter().position(|u| u.key() == l.key());
                let views = views
                    .iter()
                    .map(|(s, v)| FileView {
                        stream: *s,
                        leases: v.leases.iter().filter_map(index).collect(),
                        last_transaction_unix_s: v.last_transaction.map(state_file::unix_s),
                    })
                    .collect();
                (0, Some(views))
            }
        };
        FileClient {
            client_id: hex::encode(id),
            last_transaction_unix_s: c.last_transaction.map(state_file::unix_s),
            stream,
            views,
            leases: c.leases.iter().map(FileLease::from_lease).collect(),
        }
    }
}

/// The union of a client's views: every lease any stream reports (for a lease reported twice,
/// the later end), and the latest last transaction. `None` without leases.
fn union(views: &[(usize, Client)]) -> Option<Client> {
    match views {
        [] => None,
        [(_, only)] => Some(only.clone()),
        _ => {
            let mut leases: Vec<Lease> = views.iter().flat_map(|(_, c)| c.leases.clone()).collect();
            // For each key, the lease ending last first; `None` (infinite) ends last.
            let ends = |l: &Lease| {
                (
                    l.server_ends.map(|(_, v)| v),
                    l.valid_until.map_or(i64::MAX, unix_ms),
                )
            };
            leases.sort_by(|a, b| a.key().cmp(&b.key()).then_with(|| ends(b).cmp(&ends(a))));
            leases.dedup_by_key(|l| l.key());
            let last_transaction = views.iter().filter_map(|(_, c)| c.last_transaction).max();
            Some(Client {
                leases,
                last_transaction,
            })
        }
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

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::requestor::binding::LeaseKind;
    use crate::requestor::time::TimeBase;

    /// A client's data received now, to the whole second (what the state file keeps).
    fn data(id: u8, leases: &[(&str, u32)]) -> ClientData {
        let mut time = TimeBase::now(Some(ServerTime(1000)));
        time.received = state_file::from_unix_s(state_file::unix_s(time.received));
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

    /// Local times are kept to the second, rounded down (issue 17: one convention, Unix
    /// seconds, in every JSON lq writes).
    #[test]
    fn the_state_file_keeps_local_times_to_the_second() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut d = data(1, &[("2001:db8::1", 100)]);
        let at = UNIX_EPOCH + Duration::from_millis(1_735_689_600_999);
        d.last_transaction = Some(at);
        d.leases[0].valid_until = Some(at);
        let mut r = Replica::new();
        r.apply(&d);
        r.save(&path, "s", "").unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["clients"][0]["last_transaction_unix_s"], 1_735_689_600);
        assert_eq!(
            v["clients"][0]["leases"][0]["valid_until_unix_s"],
            1_735_689_600
        );
        let loaded = Replica::load(&path, "s", "").unwrap().unwrap();
        let c = &loaded.clients()[&vec![0, 3, 0, 1, 1]];
        assert_eq!(
            c.last_transaction,
            Some(UNIX_EPOCH + Duration::from_secs(1_735_689_600))
        );
    }

    /// A state file written by an earlier `lq` (version 1: server seconds since 2000, Unix
    /// milliseconds) still loads, its times converted; the next save writes version 2.
    #[test]
    fn a_version_1_state_file_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(
            &path,
            r#"{"version":1,"server":"s","scope":"two","base_time":789004800,
                "streams":[{"base_time":789004800},{"base_time":789004812}],
                "clients":[{"client_id":"000300010200000000a1","last_transaction_ms":1735689000123,
                  "leases":[{"kind":"address","address":"2001:db8:0:1::2a","prefix_len":128,
                    "preferred_until_ms":1735692600000,"valid_until_ms":1735696200999,
                    "server_ends":[789008400,789012000]}]},
                  {"client_id":"000300010200000000b2","stream":1,"leases":[{"kind":"prefix",
                    "address":"3fff::","prefix_len":56,"preferred_until_ms":null,
                    "valid_until_ms":null}]}]}"#,
        )
        .unwrap();
        let r = Replica::load(&path, "s", "two").unwrap().unwrap();
        assert!(!r.unstreamed());
        assert_eq!(r.stream_base_time(0), Some(ServerTime(789_004_800)));
        assert_eq!(r.stream_base_time(1), Some(ServerTime(789_004_812)));
        let a1 = &r.clients()[&hex::decode("000300010200000000a1").unwrap()];
        assert_eq!(
            a1.last_transaction,
            Some(UNIX_EPOCH + Duration::from_secs(1_735_689_000))
        );
        let l = a1.leases[0];
        assert_eq!(
            l.valid_until,
            Some(UNIX_EPOCH + Duration::from_secs(1_735_696_200))
        );
        assert_eq!(
            l.server_ends,
            Some((ServerTime(789_008_400), ServerTime(789_012_000)))
        );
        assert_eq!(
            r.streams_of(&hex::decode("000300010200000000b2").unwrap()),
            [1]
        );
        r.save(&path, "s", "two").unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["version"], 2);
        assert_eq!(v["base_time_unix_s"], 1_735_689_600);
        assert_eq!(
            v["clients"][0]["leases"][0]["server_ends_unix_s"],
            serde_json::json!([1_735_693_200, 1_735_696_800])
        );
        assert_eq!(Replica::load(&path, "s", "two").unwrap(), Some(r));

        // A version 1 file written before streams were kept: its one stream, unstreamed.
        std::fs::write(
            &path,
            r#"{"version":1,"server":"s","scope":"","base_time":1000,"clients":[]}"#,
        )
        .unwrap();
        let r = Replica::load(&path, "s", "").unwrap().unwrap();
        assert!(r.unstreamed());
        assert_eq!(r.base_time(), Some(ServerTime(1000)));

        // Versions this lq does not know, and times DHCPv6 cannot hold, are errors.
        std::fs::write(
            &path,
            r#"{"version":3,"server":"s","scope":"","clients":[]}"#,
        )
        .unwrap();
        let e = Replica::load(&path, "s", "").unwrap_err().to_string();
        assert!(e.contains("version 3"), "{e}");
        std::fs::write(
            &path,
            r#"{"version":2,"server":"s","scope":"","base_time_unix_s":789004800,"clients":[]}"#,
        )
        .unwrap();
        let e = Replica::load(&path, "s", "").unwrap_err().to_string();
        assert!(e.contains("not a DHCPv6 server time"), "{e}");
    }

    fn addresses(r: &Replica, id: u8) -> Vec<String> {
        r.clients()
            .get(&vec![0, 3, 0, 1, id])
            .map(|c| c.leases.iter().map(|l| l.address.to_string()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn each_stream_has_its_own_view_and_a_client_holds_their_union() {
        let mut r = Replica::new();
        let id = vec![0, 3, 0, 1, 1];
        assert!(matches!(
            r.apply_from(0, &data(1, &[("2001:db8:0:1::1", 100)])),
            Some(Change::Added { .. })
        ));
        // The same client on a second watched link: both links' leases, not the last one.
        assert!(matches!(
            r.apply_from(1, &data(1, &[("2001:db8:0:2::1", 100)])),
            Some(Change::Updated { .. })
        ));
        assert_eq!(addresses(&r, 1), ["2001:db8:0:1::1", "2001:db8:0:2::1"]);
        assert_eq!(r.streams_of(&id), [0, 1]);
        assert_eq!(
            r.apply_from(1, &data(1, &[("2001:db8:0:2::1", 100)])),
            None,
            "re-sent"
        );
        // Its binding on the first link ends: the second link's lease stays.
        assert!(matches!(
            r.apply_from(0, &data(1, &[("2001:db8:0:1::1", 0)])),
            Some(Change::Updated { .. })
        ));
        assert_eq!(addresses(&r, 1), ["2001:db8:0:2::1"]);
        assert_eq!(r.streams_of(&id), [1]);
        assert!(matches!(
            r.apply_from(1, &data(1, &[("2001:db8:0:2::1", 0)])),
            Some(Change::Removed { .. })
        ));
        assert!(r.is_empty());
        assert!(r.streams_of(&id).is_empty());
        // An ended binding of a client never held adds nothing.
        assert_eq!(r.apply_from(3, &data(9, &[("2001:db8::9", 0)])), None);
        assert!(r.is_empty());
    }

    #[test]
    fn a_resync_of_one_stream_replaces_only_what_it_reported() {
        let mut r = Replica::new();
        r.apply_from(0, &data(1, &[("2001:db8:0:1::1", 100)]));
        r.apply_from(1, &data(2, &[("2001:db8:0:2::2", 100)]));
        r.apply_from(0, &data(3, &[("2001:db8:0:1::3", 100)]));
        r.apply_from(1, &data(3, &[("2001:db8:0:2::3", 100)]));
        // Stream 1's Bulk answer: client 2 is gone, 3 has a new lease there, 4 is new.
        let answer = [
            data(3, &[("2001:db8:0:2::33", 100)]),
            data(4, &[("2001:db8:0:2::4", 100)]),
        ];
        let changes = r.replace_streams(&[(1, &answer)]);
        let kinds: Vec<_> = changes
            .iter()
            .map(|c| match c {
                Change::Added { .. } => "added",
                Change::Updated { .. } => "updated",
                Change::Removed { .. } => "removed",
            })
            .collect();
        assert_eq!(kinds, ["removed", "updated", "added"]);
        assert_eq!(
            addresses(&r, 1),
            ["2001:db8:0:1::1"],
            "stream 0's, untouched"
        );
        assert_eq!(addresses(&r, 2), Vec::<String>::new());
        assert_eq!(addresses(&r, 3), ["2001:db8:0:1::3", "2001:db8:0:2::33"]);
        assert_eq!(addresses(&r, 4), ["2001:db8:0:2::4"]);
        assert_eq!(r.streams_of(&[0, 3, 0, 1, 4]), [1]);
    }

    #[test]
    fn the_state_file_keeps_each_streams_base_time_and_views() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut r = Replica::new();
        r.apply_from(0, &data(1, &[("2001:db8:0:1::1", 100)]));
        r.apply_from(2, &data(2, &[("2001:db8:0:3::2", 100)]));
        r.apply_from(0, &data(3, &[("2001:db8:0:1::3", 100)]));
        r.apply_from(2, &data(3, &[("2001:db8:0:3::3", 100), ("3fff::", 100)]));
        r.set_stream_base_time(0, Some(ServerTime(500)));
        r.set_stream_base_time(1, Some(ServerTime(300)));
        r.set_stream_base_time(2, Some(ServerTime(700)));
        assert_eq!(r.base_time(), Some(ServerTime(300)), "the earliest");
        r.save(&path, "s", "three").unwrap();
        let loaded = Replica::load(&path, "s", "three").unwrap().unwrap();
        assert_eq!(loaded, r);
        assert!(!loaded.unstreamed());
        assert_eq!(loaded.stream_base_time(2), Some(ServerTime(700)));
        assert_eq!(loaded.streams_of(&[0, 3, 0, 1, 3]), [0, 2]);
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["version"], 2);
        assert_eq!(v["base_time_unix_s"], 300 + 946_684_800);
        assert_eq!(v["streams"][2]["base_time_unix_s"], 700 + 946_684_800);
        assert!(
            v["clients"][0].get("stream").is_none(),
            "stream 0 is implied"
        );
        assert_eq!(v["clients"][1]["stream"], 2);
        assert_eq!(
            v["clients"][2]["views"][1]["leases"],
            serde_json::json!([1, 2])
        );
        // A stream without base-time: no base-time for the whole.
        r.set_stream_base_time(3, None);
        assert_eq!(r.base_time(), None);
    }

    #[test]
    fn a_state_file_written_before_streams_loads_as_stream_0() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(
            &path,
            r#"{"version":1,"server":"s","scope":"link ::1","base_time":789004800,
               "clients":[{"client_id":"0003000101","last_transaction_ms":null,"leases":[
               {"kind":"address","address":"2001:db8::1","prefix_len":128,
                "preferred_until_ms":null,"valid_until_ms":null}]}]}"#,
        )
        .unwrap();
        let r = Replica::load(&path, "s", "link ::1").unwrap().unwrap();
        assert!(r.unstreamed());
        assert_eq!(r.streams(), 1);
        assert_eq!(r.base_time(), Some(ServerTime(789_004_800)));
        assert_eq!(r.stream_base_time(0), Some(ServerTime(789_004_800)));
        assert_eq!(r.streams_of(&[0, 3, 0, 1, 1]), [0]);
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
