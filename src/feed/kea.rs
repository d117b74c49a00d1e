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
//!    order. The relayed message for OPTION_LQ_RELAY_DATA is rebuilt from the layers, as Kea's
//!    own lease_query hook does ([`relay_chain`], D29).
//! 2. Otherwise a row without relays keeps the link of the previous row for the same lease,
//!    when that row had the same DUID and subnet id (so that a release or an expiry, which may
//!    be written without the relays, lands in the same binding).
//! 3. Otherwise the subnet id is mapped to its link in Kea's own configuration
//!    ([`config`]: `kea_config`, `LQD_KEA_CONFIG`, else `/etc/kea/kea-dhcp6.conf` when it is
//!    the configuration of the followed file). Without `[[link]]` tables, Kea's subnets are
//!    lqd's links, so every relay link-address inside a subnet (or listed as its relay
//!    address) names the same link as the subnet id does.
//! 4. Last resort, for a subnet id that no configuration names: the link is the address whose
//!    low 32 bits are the subnet id (`::5` for subnet 5), with one warning per subnet id.
//!
//! The row → change mapping is [`mapper`]'s ([`KeaMapper`], over a [`KeaRow`]); the CSV
//! reading is [`csv`]'s. A database source would build the same rows and share the mapper.
//!
//! # Following the file and Kea's lease file cleanup
//!
//! At start the source loads what Kea loads: `PATH.completed` if present, else `PATH.2` then
//! `PATH.1`, then `PATH`. Then it follows `PATH` as it grows, looked at as soon as inotify
//! reports a change of the file or its directory, and every [`POLL_INTERVAL`] in any case
//! ([`super::watch`]); a last line without its newline waits for the rest. Following is
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
//! inotify only makes the source look sooner; what it reads is the same with polling alone.
//! The one thing neither can save: a source that does not look at `PATH` for a whole cleanup
//! interval (Kea's `lfc-interval`, in seconds), held in its sends because lqd's loop is that
//! far behind, never sees the file Kea started in between if that one is moved aside and
//! compacted away before the source looks; its rows then reach lqd only as the compacted `.2`
//! holds them, at the next start. A source that keeps up reads each file within milliseconds
//! of a write.
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
//!
//! # What the source reports
//!
//! Its [`SourceStats`] (lqd's metrics, `docs/metrics.md`): every skipped row counts as
//! rejected; after each read pass the lag is the lease file's size less the octets taken as
//! rows (a row Kea has not finished writing counts); and the newest row time is the largest
//! `expire − valid_lifetime` of any row read.

use std::collections::HashMap;
use std::io;
use std::net::Ipv6Addr;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use super::FeedHandle;
use super::follow::{Event, FileId, FileReader, Follower, NumberedLine};
use super::stats::SourceStats;
use super::watch::{FileWatch, Wake};

pub mod config;
pub mod csv;
pub mod mapper;
pub mod pgoutput;
pub mod pgsql;

pub use super::follow::POLL_INTERVAL;
pub use config::{
    KEA_CONFIG_DEFAULT, KEA_CONFIG_ENV, KEA_LEASE_FILE_DEFAULT, KeaConfigError, KeaLinks,
    kea_config_path, load_kea_links, parse_kea_config, strip_comments, strip_trailing_commas,
};
pub use csv::{KeaHeader, RowError, parse_row, unescape};
pub use mapper::{
    Applied, KeaMapper, KeaRelays, KeaRow, RECENT_ROWS, RelayHop, relay_chain,
    relays_from_user_context, walk_relay_options,
};
pub use pgsql::{PgTarget, spawn_kea_pgsql};

/// Sends the changes of rows, counting and logging.
struct Sink {
    name: String,
    handle: FeedHandle,
    mapper: KeaMapper,
    stats: SourceStats,
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
                self.stats.reject();
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
        self.stats
            .saw_time(row.expire.saturating_sub(i64::from(row.valid_lifetime)));
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
        self.stats.reject();
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
    let subnets = match kea_config_path(None) {
        Some((file, _)) => match load_kea_links(&file) {
            Ok(links) => {
                tracing::info!(source = %name, "{name}: {} subnets from Kea's configuration {}", links.subnets.len(), file.display());
                links.subnets
            }
            Err(e) => {
                tracing::warn!(source = %name, "{name}: {e}");
                HashMap::new()
            }
        },
        None => HashMap::new(),
    };
    spawn_kea_csv_with(path, subnets, handle)
}

/// Starts the `kea-csv` source with the given subnets (subnet id → link address): a
/// [`KeaCsvSource`] with its defaults otherwise.
///
/// # Errors
///
/// When the thread cannot be started.
pub fn spawn_kea_csv_with(
    path: PathBuf,
    subnets: HashMap<u32, Ipv6Addr>,
    handle: FeedHandle,
) -> io::Result<JoinHandle<u64>> {
    KeaCsvSource::new(path).subnets(subnets).spawn(handle)
}

/// [`spawn_kea_csv_with`] without inotify: the file is looked at every [`POLL_INTERVAL`] only,
/// as on a file system without inotify (and to measure what inotify saves).
///
/// # Errors
///
/// When the thread cannot be started.
pub fn spawn_kea_csv_polling(
    path: PathBuf,
    subnets: HashMap<u32, Ipv6Addr>,
    handle: FeedHandle,
) -> io::Result<JoinHandle<u64>> {
    KeaCsvSource::new(path)
        .subnets(subnets)
        .wake(Wake::Polling)
        .spawn(handle)
}

/// A `kea-csv` source to start: the lease file, the subnets of Kea's configuration, what wakes
/// it, and the counters it keeps.
#[derive(Debug, Clone)]
pub struct KeaCsvSource {
    path: PathBuf,
    subnets: HashMap<u32, Ipv6Addr>,
    wake: Wake,
    stats: SourceStats,
}

impl KeaCsvSource {
    /// Follows the lease file `path`: no subnets, woken by inotify, counters of its own.
    #[must_use]
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            subnets: HashMap::new(),
            wake: Wake::default(),
            stats: SourceStats::default(),
        }
    }

    /// Kea's subnet ids and their links (from [`load_kea_links`]).
    #[must_use]
    pub fn subnets(mut self, subnets: HashMap<u32, Ipv6Addr>) -> Self {
        self.subnets = subnets;
        self
    }

    /// What wakes the source ([`Wake::Inotify`] unless told).
    #[must_use]
    pub const fn wake(mut self, wake: Wake) -> Self {
        self.wake = wake;
        self
    }

    /// The counters the source sets: rejected rows, the lease file's lag, the newest row time
    /// (lqd passes its metrics' ones).
    #[must_use]
    pub fn stats(mut self, stats: SourceStats) -> Self {
        self.stats = stats;
        self
    }

    /// Starts the source on its own thread; the thread returns how many changes it sent, when
    /// the feed closes.
    ///
    /// # Errors
    ///
    /// When the thread cannot be started.
    pub fn spawn(self, handle: FeedHandle) -> io::Result<JoinHandle<u64>> {
        let Self {
            path,
            subnets,
            wake,
            stats,
        } = self;
        let mut sink = Sink {
            name: format!("kea-csv:{}", path.display()),
            handle,
            mapper: KeaMapper::new(subnets),
            stats,
            sent: 0,
            skipped: 0,
        };
        std::thread::Builder::new()
            .name("lqd-feed-kea".into())
            .spawn(move || follow(&mut sink, &path, wake))
    }
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

fn follow(sink: &mut Sink, path: &Path, wake: Wake) -> u64 {
    // The lease file is opened first: if a cleanup renames it to `.1` while the previous files
    // are read, the open handle still reads all of it, once. The watch starts before the
    // previous files are read, so that what Kea writes meanwhile wakes the first poll.
    let mut watch = FileWatch::with(path, &sink.name, wake);
    let mut follower = Follower::new(path);
    sink.stats.set_lag(follower.unread());
    if load_previous(sink, path, follower.id()).is_continue() {
        let mut header = Header::None;
        while follower
            .poll(|event| sink.event(&mut header, event))
            .is_continue()
            && !sink.handle.is_closed()
        {
            sink.stats.set_lag(follower.unread());
            watch.follow(follower.id());
            watch.wait(POLL_INTERVAL);
        }
    }
    tracing::info!(source = %sink.name, changes = sink.sent, skipped = sink.skipped, "{}: the feed closed; the source has ended", sink.name);
    sink.sent
}
