//! Active Leasequery (RFC 7653): one query's live stream, a cursor into the change journal.
//!
//! The sequence (digest §10.2; decisions D2, D7, D18, D19): a LEASEQUERY-REPLY at once
//! (Success, or DataMissing with base-time when the journal does not reach back to
//! START_TIME), then a LEASEQUERY-DATA per binding change, each holding the binding's current
//! OPTION_CLIENT_DATA (D5 for an ended lease), and after a catch-up a LEASEQUERY-DATA with
//! CatchUpComplete. When nothing has been sent for ACTIVE_LQ_IDLE_TIMEOUT, a LEASEQUERY-DATA
//! with only OPTION_LQ_BASE_TIME (D2). A cursor the ring overran gets a LEASEQUERY-DATA with
//! DataMissing and continues from the head (D19). Shutdown ends it with LEASEQUERY-DONE
//! QueryTerminated (D9).
//!
//! No queue per query: the cursor stops while the connection's buffer is full, and a record
//! whose binding has a newer record further on is skipped when the cursor reaches it
//! ([`History::is_latest`]), so a requestor that fell behind receives each changed binding once,
//! in its current state (architecture, core idea 3). A record's message is built once for every
//! query that sends the same variant with the same base-time ([`EncodeCache`]); each query
//! copies it and patches in its own xid (core idea 4).
//!
//! Base-time is the time the message is built, except while older changes still wait behind
//! the cursor: then it is the time of the next of them, so a requestor that saves it and
//! reconnects with it as START_TIME misses nothing (a refinement of D18 for a lagging stream).
//! With source times (a database source, D33) the time "now" is the source's newest, and a
//! change's message carries its own record's time, so every lqd following the source sends the
//! same base-time with the same change.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::query::{ActiveRequest, Selector};
use super::reply::{client_data, push_frame};
use super::tally::{LATENCY_SAMPLE, Tally};
use crate::codec::{
    DhcpOption, Duid, MessageRepr, MessageType, Options, ServerTime, Status, StatusCode, Xid,
};
use crate::store::journal::{Cursor, Record};
use crate::store::{Binding, BindingId, History, Log, PostingKey, Postings, Tag};

/// Records a query examines per fill before it lets other connections have the loop.
const SCAN_BUDGET: usize = 4096;

/// Slots in the [`EncodeCache`]: records near the head, shared by every query reading them.
/// Requestors catching up, or lagging under load, read the same records thousands of records
/// apart; with 256 slots each of them re-encoded every record (catch-up of 1,000 requestors:
/// 3.3 M deliveries/s; with 16,384: 9.3 M/s, BENCHMARKS.md). Entries are built as records
/// are read, so an idle server holds only the slot table (a few MiB); a full cache holds one
/// decoded binding and its messages per slot, about 16 MiB.
const CACHE_SLOTS: usize = 16_384;

/// Offset of the xid in a framed message: 2 octets of length, 1 of message type.
const XID_AT: usize = 3;

/// A record's decoded binding and its messages, built once per base-time for all queries.
#[derive(Debug)]
struct Entry {
    seq: u64,
    /// The base-time the frames carry.
    stamp: ServerTime,
    /// `None` when the payload could not be read (never sent).
    binding: Option<Binding>,
    /// The store's id of the record's binding when the entry was made: the newest-record
    /// check is then an array look-up rather than a hash of the client id per query.
    id: Option<BindingId>,
    /// Found not to be its binding's newest record. A record never becomes the newest again,
    /// so no query needs to ask again.
    superseded: bool,
    /// Framed LEASEQUERY-DATA with xid 0, by variant: base-time × relay data.
    frames: [Option<Vec<u8>>; 4],
}

/// Decoded records and their encoded messages, for the queries at or near the journal's head.
#[derive(Debug)]
pub struct EncodeCache {
    slots: Vec<Option<Entry>>,
    /// Messages built (misses), for the benchmark and the tests.
    built: u64,
}

impl Default for EncodeCache {
    fn default() -> Self {
        Self::new()
    }
}

impl EncodeCache {
    /// An empty cache.
    #[must_use]
    pub fn new() -> Self {
        Self::with_slots(CACHE_SLOTS)
    }

    /// A cache of `slots` records (at least one). One slot makes every query encode its own
    /// messages: the benchmark's baseline for encode-once.
    #[must_use]
    pub fn with_slots(slots: usize) -> Self {
        Self {
            slots: (0..slots.max(1)).map(|_| None).collect(),
            built: 0,
        }
    }

    /// How many messages were built rather than copied.
    #[must_use]
    pub const fn built(&self) -> u64 {
        self.built
    }

    /// The entry for record `seq`, decoded afresh unless it already holds this record at this
    /// second (`None` only if the slot table were empty, which it never is).
    fn entry<L: Log>(
        &mut self,
        history: &History<L>,
        seq: u64,
        payload: &[u8],
        stamp: ServerTime,
    ) -> Option<&mut Entry> {
        let n = u64::try_from(self.slots.len()).unwrap_or(1).max(1);
        let i = usize::try_from(seq % n).unwrap_or(0);
        let slot = self.slots.get_mut(i)?;
        if !slot
            .as_ref()
            .is_some_and(|e| e.seq == seq && e.stamp == stamp)
        {
            let id = history.binding_of(payload);
            let superseded = !is_latest(history, id, seq, payload);
            *slot = Some(Entry {
                seq,
                stamp,
                // A superseded record is never sent: no need to read it.
                binding: if superseded {
                    None
                } else {
                    history.decode(payload).ok()
                },
                id,
                superseded,
                frames: [None, None, None, None],
            });
        }
        slot.as_mut()
    }
}

/// True when record `seq` is its binding's newest: by the binding's id when the store holds
/// it (an array look-up), else through the history's full check (ended bindings).
fn is_latest<L: Log>(
    history: &History<L>,
    id: Option<BindingId>,
    seq: u64,
    payload: &[u8],
) -> bool {
    id.is_some_and(|id| history.is_latest_of(id, seq)) || history.is_latest(seq, payload)
}

/// Where an Active query reads: every record of the journal, or only those filed under its
/// filter's key (issue 12: a change costs the queries it concerns, a filtered catch-up the
/// records that match).
#[derive(Debug, Clone)]
enum Reader {
    /// No filter: a cursor over the whole journal.
    All(Cursor),
    /// A filter: the next sequence number to consider, read through the key's list.
    Keys(u64),
}

/// The one list a filter reads, or `None` for an address filter, which reads the address's
/// own list and the list of every delegated prefix length that could hold it.
fn single_key(filter: &Selector) -> Option<PostingKey> {
    match filter {
        Selector::Address { .. } => None,
        Selector::ClientId { client_id, .. } => Some(PostingKey::ClientId(client_id.clone())),
        Selector::RelayId { relay_id, .. } => Some(PostingKey::RelayId(relay_id.clone())),
        Selector::LinkAddress(l) => Some(PostingKey::Link(*l)),
        Selector::RemoteId { remote_id, .. } => Some(PostingKey::RemoteId(remote_id.clone())),
    }
}

/// What comes next for a filtered reader.
enum Peek {
    /// The record with this sequence number.
    Record(u64),
    /// Nothing before the head.
    Head,
}

/// One Active query in progress on a connection.
#[derive(Debug, Clone)]
pub struct ActiveQuery {
    xid: Xid,
    filter: Option<Selector>,
    /// The filter's list, when it reads one list.
    key: Option<PostingKey>,
    want_base_time: bool,
    want_relay_data: bool,
    reader: Reader,
    /// The catch-up is complete when the cursor reaches this sequence number.
    catch_up_until: Option<u64>,
    last_sent: Instant,
    sent: u64,
    /// Journal records read so far (sent or not): the query's share of the work.
    read: u64,
    /// Counts for the metrics, since the session last took them.
    pub(crate) tally: Tally,
    /// Whether the tally lists the sequence numbers delivered (for the fan-out latency of
    /// the metrics; off, nothing is gathered that nobody reads).
    pub(crate) time_deliveries: bool,
    /// When it started.
    started: ServerTime,
}

impl ActiveQuery {
    /// Starts `request` at `now`: writes its LEASEQUERY-REPLY to `out` and places the cursor,
    /// at START_TIME for a catch-up or at the head.
    pub fn start<L: Log>(
        request: ActiveRequest,
        history: &History<L>,
        server_id: &[u8],
        now: ServerTime,
        mono: Instant,
        out: &mut Vec<u8>,
    ) -> Self {
        let journal = history.journal();
        let (cursor, catch_up_until, status) = match request.start {
            None => (journal.head(), None, StatusCode::new(Status::Success, "")),
            Some(t) => match journal.seek_time(t) {
                Ok(c) => {
                    history.log().prefetch_from(&c);
                    (
                        c,
                        Some(journal.next_seq()),
                        StatusCode::new(Status::Success, "catching up"),
                    )
                }
                // D19: START_TIME before the journal began, nothing lost since: what ended
                // before it is unknown (DataMissing), but every change since is there, every
                // live binding's newest state among them: the catch-up of all of it follows.
                Err(_) if journal.holds_all_since_it_began() => (
                    journal.tail(),
                    Some(journal.next_seq()),
                    StatusCode::new(
                        Status::DataMissing,
                        "START_TIME is before the journal began: what ended before then is \
                         unknown; every change since follows",
                    ),
                ),
                // The ring lost changes since START_TIME: none of them follow, only the end of
                // the (empty) catch-up, then live updates.
                Err(_) => (
                    journal.head(),
                    Some(journal.next_seq()),
                    StatusCode::new(
                        Status::DataMissing,
                        "the journal does not reach back to START_TIME",
                    ),
                ),
            },
        };
        let data_missing = status.status == Status::DataMissing;
        let tally = Tally {
            data_missing: u64::from(data_missing),
            catch_ups_started: u64::from(request.start.is_some()),
            ..Tally::default()
        };
        let mut top = vec![DhcpOption::ServerId(Duid(server_id))];
        if let Some(r) = &request.requestor_id {
            top.push(DhcpOption::ClientId(Duid(r)));
        }
        top.push(DhcpOption::StatusCode(status));
        // D19: DataMissing carries base-time = now, asked for or not.
        if request.want_base_time || data_missing {
            top.push(DhcpOption::LqBaseTime(now));
        }
        push_frame(
            &MessageRepr::new(
                MessageType::LeasequeryReply,
                request.xid,
                Options::from_items(&top),
            ),
            out,
        );
        let key = request.filter.as_ref().and_then(single_key);
        Self {
            xid: request.xid,
            reader: match request.filter {
                Some(_) => Reader::Keys(cursor.seq()),
                None => Reader::All(cursor),
            },
            filter: request.filter,
            key,
            want_base_time: request.want_base_time,
            want_relay_data: request.want_relay_data,
            catch_up_until,
            last_sent: mono,
            sent: 0,
            read: 0,
            tally,
            started: now,
            time_deliveries: false,
        }
    }

    /// The query's xid.
    #[must_use]
    pub const fn xid(&self) -> Xid {
        self.xid
    }

    /// The query's filter; `None` when it takes every change.
    #[must_use]
    pub const fn filter(&self) -> Option<&Selector> {
        self.filter.as_ref()
    }

    /// When the query started.
    #[must_use]
    pub const fn started(&self) -> ServerTime {
        self.started
    }

    /// How far behind the head the query is: the journal records from the next one it will
    /// send to the head, and that record's time (`(0, None)` at the head).
    #[must_use]
    pub fn lag<L: Log>(&self, history: &History<L>) -> (u64, Option<ServerTime>) {
        let journal = history.journal();
        let Some(next) = self.upcoming(history) else {
            return (0, None);
        };
        let time = journal
            .cursor_at(next)
            .ok()
            .and_then(|mut c| journal.read(&mut c).ok().flatten().map(|r| r.time));
        (journal.next_seq().saturating_sub(next), time)
    }

    /// The sequence number of the next record this query considers.
    #[must_use]
    pub fn position(&self) -> u64 {
        match &self.reader {
            Reader::All(c) => c.seq(),
            Reader::Keys(next) => *next,
        }
    }

    /// Calls `each` with every list this filtered query reads.
    fn each_key(&self, postings: &Postings, mut each: impl FnMut(&PostingKey)) {
        match (&self.key, &self.filter) {
            (Some(k), _) => each(k),
            (None, Some(Selector::Address { address, .. })) => {
                postings.address_keys(*address, |k| each(&k));
            }
            (None, _) => {}
        }
    }

    /// The next record this query reads at or after `seq` ([`History::next_filed`]).
    fn next_filed<L: Log>(&self, history: &History<L>, seq: u64) -> Peek {
        let mut first: Option<u64> = None;
        self.each_key(history.postings(), |k| {
            if let Some(s) = history.next_filed(k, seq) {
                first = Some(first.map_or(s, |f| f.min(s)));
            }
        });
        first.map_or(Peek::Head, Peek::Record)
    }

    /// True when the ring evicted a record this query would read at or after `seq`.
    fn lost_since<L: Log>(&self, history: &History<L>, seq: u64) -> bool {
        let mut lost = false;
        self.each_key(history.postings(), |k| lost |= history.lost_since(k, seq));
        lost
    }

    /// Reads the next record for this query, moving its reader past it: `Ok(None)` at the
    /// head, `Err(())` when the ring overran the reader (D19).
    fn next_record<'h, L: Log>(
        &mut self,
        history: &'h History<L>,
    ) -> Result<Option<Record<'h>>, ()> {
        let journal = history.journal();
        match &mut self.reader {
            Reader::All(cursor) => journal.read(cursor).map_err(|_| ()),
            Reader::Keys(next) => {
                let seq = *next;
                if journal.first_seq().is_some_and(|first| seq < first)
                    && self.lost_since(history, seq)
                {
                    return Err(());
                }
                match self.next_filed(history, seq) {
                    Peek::Head => {
                        if let Reader::Keys(next) = &mut self.reader {
                            *next = journal.next_seq().max(seq);
                        }
                        Ok(None)
                    }
                    Peek::Record(s) => {
                        let mut c = journal.cursor_at(s).map_err(|_| ())?;
                        let record = journal.read(&mut c).map_err(|_| ())?;
                        if let Reader::Keys(next) = &mut self.reader {
                            *next = c.seq();
                        }
                        Ok(record)
                    }
                }
            }
        }
    }

    /// The sequence number of the next record this query will send, if any is written.
    fn upcoming<L: Log>(&self, history: &History<L>) -> Option<u64> {
        let journal = history.journal();
        match &self.reader {
            Reader::All(c) => (c.seq() < journal.next_seq()).then_some(c.seq()),
            Reader::Keys(next) => match self.next_filed(history, *next) {
                Peek::Record(s) => Some(s),
                Peek::Head => None,
            },
        }
    }

    /// Moves the reader to the head: the journal's records so far are skipped.
    fn skip_to_head<L: Log>(&mut self, history: &History<L>) {
        let journal = history.journal();
        self.reader = match self.reader {
            Reader::All(_) => Reader::All(journal.head()),
            Reader::Keys(_) => Reader::Keys(journal.next_seq()),
        };
    }

    /// Calls `each` with every key this query's wake-ups are filed under in [`Watchers`].
    fn watch_key(&self) -> WatchKey {
        match (&self.key, &self.filter) {
            (Some(k), _) => WatchKey::Key(k.clone()),
            (None, Some(Selector::Address { address, .. })) => {
                WatchKey::Address(u128::from(*address))
            }
            (None, _) => WatchKey::All,
        }
    }

    /// Bindings sent so far.
    #[must_use]
    pub const fn sent(&self) -> u64 {
        self.sent
    }

    /// Journal records read so far, sent or skipped: a filtered query reads only the records
    /// filed under its key.
    #[must_use]
    pub const fn records_read(&self) -> u64 {
        self.read
    }

    /// True while a catch-up is in progress.
    #[must_use]
    pub const fn catching_up(&self) -> bool {
        self.catch_up_until.is_some()
    }

    /// Appends this query's messages to `out` until it holds `high_water` octets or the cursor
    /// reaches the head, then a keepalive if nothing was sent for `idle_timeout` (D2). True
    /// when records are left to read (call again once the buffer drains).
    #[allow(clippy::too_many_arguments)]
    pub fn fill<L: Log>(
        &mut self,
        history: &History<L>,
        cache: &mut EncodeCache,
        now: ServerTime,
        mono: Instant,
        idle_timeout: Duration,
        out: &mut Vec<u8>,
        high_water: usize,
    ) -> bool {
        let before = out.len();
        let mut scanned = 0usize;
        let mut built = 0u64;
        let mut more = false;
        while out.len() < high_water {
            if let Some(until) = self.catch_up_until {
                if self.upcoming(history).is_none_or(|seq| seq >= until) {
                    self.catch_up_until = None;
                    let stamp = self.stamp(history, now);
                    self.status_data(Status::CatchUpComplete, "catch-up complete", stamp, out);
                    self.tally.catch_ups_completed =
                        self.tally.catch_ups_completed.saturating_add(1);
                    continue;
                }
            }
            if scanned >= SCAN_BUDGET {
                more = true;
                break;
            }
            let record = match self.next_record(history) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(()) => {
                    // D19: the ring overran this reader; say so and go on from the head.
                    self.skip_to_head(history);
                    self.catch_up_until = None;
                    self.status_data(
                        Status::DataMissing,
                        "changes were lost while this requestor fell behind",
                        now,
                        out,
                    );
                    self.tally.data_missing = self.tally.data_missing.saturating_add(1);
                    continue;
                }
            };
            scanned = scanned.saturating_add(1);
            self.read = self.read.saturating_add(1);
            let (seq, payload) = (record.seq, record.payload);
            // With source times (D33) a change carries its own record's time, the same at
            // every lqd following the source, whoever lags.
            let stamp = if history.source_times() {
                record.time
            } else {
                self.stamp(history, now)
            };
            let Some(entry) = cache.entry(history, seq, payload, stamp) else {
                continue;
            };
            // Only a binding's newest record is sent (its current state): a cheap check by the
            // entry's binding id first, the full one (ended bindings' tombstones) otherwise.
            if entry.superseded {
                self.tally.coalesced = self.tally.coalesced.saturating_add(1);
                continue;
            }
            if !is_latest(history, entry.id, seq, payload) {
                entry.superseded = true;
                self.tally.coalesced = self.tally.coalesced.saturating_add(1);
                continue;
            }
            let Some(binding) = &entry.binding else {
                continue;
            };
            if self.filter.as_ref().is_some_and(|f| !f.matches(binding)) {
                continue;
            }
            let variant = usize::from(self.want_base_time) | usize::from(self.want_relay_data) << 1;
            let Some(frame_slot) = entry.frames.get_mut(variant) else {
                continue;
            };
            if frame_slot.is_none() {
                let mut frame = Vec::new();
                let mut inner = Vec::new();
                let relay = binding.relay_message().filter(|_| self.want_relay_data);
                client_data(binding, None, stamp, relay, &mut inner);
                let mut top = Vec::with_capacity(2);
                if self.want_base_time {
                    top.push(DhcpOption::LqBaseTime(stamp));
                }
                top.push(DhcpOption::ClientData(Options::from_items(&inner)));
                push_frame(
                    &MessageRepr::new(
                        MessageType::LeasequeryData,
                        Xid::new(0),
                        Options::from_items(&top),
                    ),
                    &mut frame,
                );
                *frame_slot = Some(frame);
                built = built.saturating_add(1);
            }
            if let Some(frame) = frame_slot {
                let at = out.len();
                out.extend_from_slice(frame);
                if let Some(x) =
                    out.get_mut(at.saturating_add(XID_AT)..at.saturating_add(XID_AT + 3))
                {
                    x.copy_from_slice(&self.xid.to_bytes());
                }
                self.sent = self.sent.saturating_add(1);
                self.tally.deliveries = self.tally.deliveries.saturating_add(1);
                // The sampled records only (LATENCY_SAMPLE); bounded, for a caller that never
                // takes the tally.
                if self.time_deliveries
                    && seq % LATENCY_SAMPLE == 0
                    && self.tally.delivered.len() < 4096
                {
                    self.tally.delivered.push(seq);
                }
            }
        }
        cache.built = cache.built.saturating_add(built);
        if out.len() >= high_water && self.upcoming(history).is_some() {
            more = true;
        }
        if out.len() > before {
            self.last_sent = mono;
        } else if !more && mono.saturating_duration_since(self.last_sent) >= idle_timeout {
            self.keepalive(now, out);
            self.last_sent = mono;
        }
        more
    }

    /// The base-time of a message sent now: `now` when nothing is left behind the cursor, else
    /// the time of the next record still to send. A requestor saves the base-time it last saw
    /// and reconnects with it as START_TIME (digest §10.5 step 8); stamping a message with
    /// `now` while older changes still wait behind it would make that catch-up skip them. The
    /// message's lifetimes and CLT_TIME are relative to the same stamp, so they stay true.
    fn stamp<L: Log>(&self, history: &History<L>, now: ServerTime) -> ServerTime {
        let journal = history.journal();
        let peeked = match &self.reader {
            Reader::All(c) => Some(*c),
            Reader::Keys(_) => self
                .upcoming(history)
                .and_then(|seq| journal.cursor_at(seq).ok()),
        };
        let Some(mut peek) = peeked else {
            return now;
        };
        match journal.read(&mut peek) {
            Ok(Some(next)) => next.time.min(now),
            _ => now,
        }
    }

    /// When the next keepalive is due, if nothing is sent before.
    #[must_use]
    pub fn keepalive_due(&self, idle_timeout: Duration) -> Instant {
        self.last_sent + idle_timeout
    }

    /// A keepalive now, whatever the idle time.
    pub fn keepalive_now(&mut self, now: ServerTime, mono: Instant, out: &mut Vec<u8>) {
        self.keepalive(now, out);
        self.last_sent = mono;
    }

    /// D2: a LEASEQUERY-DATA with only OPTION_LQ_BASE_TIME.
    fn keepalive(&self, now: ServerTime, out: &mut Vec<u8>) {
        let top = [DhcpOption::LqBaseTime(now)];
        push_frame(
            &MessageRepr::new(
                MessageType::LeasequeryData,
                self.xid,
                Options::from_items(&top),
            ),
            out,
        );
    }

    /// A LEASEQUERY-DATA carrying a status and base-time (CatchUpComplete, DataMissing).
    fn status_data(&self, status: Status, message: &str, now: ServerTime, out: &mut Vec<u8>) {
        let top = [
            DhcpOption::StatusCode(StatusCode::new(status, message)),
            DhcpOption::LqBaseTime(now),
        ];
        push_frame(
            &MessageRepr::new(
                MessageType::LeasequeryData,
                self.xid,
                Options::from_items(&top),
            ),
            out,
        );
    }

    /// Ends the query with LEASEQUERY-DONE carrying `status` (D9), base-time when asked for.
    pub fn terminate(&self, status: Status, message: &str, now: ServerTime, out: &mut Vec<u8>) {
        let mut top = vec![DhcpOption::StatusCode(StatusCode::new(status, message))];
        if self.want_base_time {
            top.push(DhcpOption::LqBaseTime(now));
        }
        push_frame(
            &MessageRepr::new(
                MessageType::LeasequeryDone,
                self.xid,
                Options::from_items(&top),
            ),
            out,
        );
    }
}

/// What a running query is woken by.
enum WatchKey {
    /// Every change.
    All,
    /// Changes filed under this key.
    Key(PostingKey),
    /// Changes to a lease covering this address.
    Address(u128),
}

/// Which connections' Active queries a new journal record concerns: the wake-up side of the
/// per-key lists (issue 12). A connection (named by the caller's token) is listed once per
/// query it runs under the query's key; unfiltered queries are woken by every record.
#[derive(Debug, Default)]
pub struct Watchers {
    all: Vec<usize>,
    /// Filtered queries by the tag of their key's list.
    keys: HashMap<Tag, Vec<usize>>,
    addresses: BTreeMap<u128, Vec<usize>>,
}

impl Watchers {
    /// No query watching.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// `token` runs `query`: wake it for the records the query reads.
    pub fn watch(&mut self, query: &ActiveQuery, token: usize, postings: &Postings) {
        match query.watch_key() {
            WatchKey::All => self.all.push(token),
            WatchKey::Key(k) => self.keys.entry(postings.tag(&k)).or_default().push(token),
            WatchKey::Address(a) => self.addresses.entry(a).or_default().push(token),
        }
    }

    /// `token` no longer runs `query`. Returns the key when no query watches it any more (its
    /// list in the postings may then go).
    pub fn unwatch(
        &mut self,
        query: &ActiveQuery,
        token: usize,
        postings: &Postings,
    ) -> Option<PostingKey> {
        fn remove_one(list: &mut Vec<usize>, token: usize) {
            if let Some(i) = list.iter().position(|&t| t == token) {
                list.swap_remove(i);
            }
        }
        match query.watch_key() {
            WatchKey::All => {
                remove_one(&mut self.all, token);
                None
            }
            WatchKey::Key(k) => {
                let tag = postings.tag(&k);
                let list = self.keys.get_mut(&tag)?;
                remove_one(list, token);
                if list.is_empty() {
                    self.keys.remove(&tag);
                    return Some(k);
                }
                None
            }
            WatchKey::Address(a) => {
                let list = self.addresses.get_mut(&a)?;
                remove_one(list, token);
                if list.is_empty() {
                    self.addresses.remove(&a);
                }
                None
            }
        }
    }

    /// True when a query watches the records filed under `key` (its list must keep the
    /// mark of what it lost).
    #[must_use]
    pub fn watches(&self, tag: Tag) -> bool {
        match tag.lease() {
            Some((prefix, len)) => {
                let (lo, hi) = prefix_range(prefix, len);
                self.addresses.range(lo..=hi).next().is_some()
            }
            None => self.keys.contains_key(&tag),
        }
    }

    /// Queries watching, by key (unfiltered ones under none).
    #[must_use]
    pub fn len(&self) -> usize {
        self.all.len()
            + self.keys.values().map(Vec::len).sum::<usize>()
            + self.addresses.values().map(Vec::len).sum::<usize>()
    }

    /// True when no query watches.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.all.is_empty() && self.keys.is_empty() && self.addresses.is_empty()
    }

    /// Adds to `woken` the tokens of the queries concerned by the records from `since` on:
    /// every unfiltered query, and those whose key a record is filed under. A token may be
    /// added more than once.
    pub fn woken(&self, postings: &Postings, since: u64, next: u64, woken: &mut Vec<usize>) {
        if since >= next {
            return;
        }
        woken.extend_from_slice(&self.all);
        if self.keys.is_empty() && self.addresses.is_empty() {
            return;
        }
        let complete = postings.filed_since(since, |_, tag| match tag.lease() {
            Some((prefix, len)) => {
                let (lo, hi) = prefix_range(prefix, len);
                for tokens in self.addresses.range(lo..=hi).map(|(_, t)| t) {
                    woken.extend_from_slice(tokens);
                }
            }
            None => {
                if let Some(tokens) = self.keys.get(&tag) {
                    woken.extend_from_slice(tokens);
                }
            }
        });
        if !complete {
            // The keys of one binding the oldest of those records hold are no longer kept
            // (D46): every filtered query may be concerned; one with nothing to read finds so
            // at once.
            for tokens in self.keys.values().chain(self.addresses.values()) {
                woken.extend_from_slice(tokens);
            }
        }
    }
}

/// The first and last address of `prefix/len`.
fn prefix_range(prefix: std::net::Ipv6Addr, len: u8) -> (u128, u128) {
    let host = u128::MAX.checked_shr(u32::from(len.min(128))).unwrap_or(0);
    let lo = u128::from(prefix) & !host;
    (lo, lo | host)
}
