//! One requestor's TCP connection: its socket, its buffers and its engine session.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use rustls::ServerConnection;
use tracing::info;

use super::ServerConfig;
use super::metrics::{LatencyTally, unix_now};
use crate::codec::{QueryType, ServerTime};
use crate::config::QueryTypes;
use crate::engine::active::{ActiveQuery, EncodeCache};
use crate::engine::session::{Ctx, Event, Session, TlsOffer};
use crate::engine::tally::Tally;
use crate::store::Log;

/// Octets of queries buffered per connection before lqd stops reading it (D22): a few whole
/// queries of the largest size.
const INBUF_CAP: usize = 4 * 65_537;

/// Capacity an emptied input buffer may keep; more is given back.
const KEEP_CAPACITY: usize = 8 * 1024;

/// Encrypted octets a TLS session may hold for the socket: past that, the session's plain
/// output waits in `outbuf` like a plain connection's, and the send timeout sees it.
const TLS_BUFFER: usize = 64 * 1024;

/// The close reason when the requestor ended the connection with a FIN.
pub(super) const REQUESTOR_CLOSED: &str = "requestor closed the connection";

/// The close reason when the requestor went away abruptly: a reset (RST, an `SO_LINGER` 0
/// close, a crashed or rebooted requestor), or the broken pipe a write meets after one.
pub(super) const REQUESTOR_RESET: &str = "requestor reset the connection";

/// The close reason for an I/O error met while `doing` (`read`, `write`, `connection`): a
/// requestor that went away (reset, aborted, broken pipe) is an ordinary close; any other
/// error is a fault, its reason starting with `"{doing} failed: "`.
fn io_close(doing: &str, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => REQUESTOR_RESET.to_owned(),
        _ => format!("{doing} failed: {e}"),
    }
}

/// True when a close `reason` is a fault worth a warning (an I/O error other than the
/// requestor going away), false for an ordinary close: the requestor closed or reset the
/// connection, a protocol violation, a timeout, a refusal, shutdown. Those are logged at
/// info, each with its reason.
pub(super) fn is_fault(reason: &str) -> bool {
    ["read failed: ", "write failed: ", "connection failed: "]
        .iter()
        .any(|p| reason.starts_with(p))
}

/// A connection's TLS, once STARTTLS was accepted (D25).
enum Tls {
    /// Plain text.
    Plain,
    /// A rustls session: the handshake, then the records.
    Up {
        session: Box<ServerConnection>,
        /// When STARTTLS was accepted (the handshake timeout counts from there).
        since: Instant,
        /// The handshake finished and the server has yet to look at the certificate.
        identify: bool,
        /// The handshake finished.
        done: bool,
    },
}

/// A connection and what the loop knows about it.
pub(super) struct Conn {
    pub(super) stream: TcpStream,
    pub(super) peer: SocketAddr,
    policy: QueryTypes,
    session: Session,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    out_pos: usize,
    /// Plain octets to send before any TLS record: the STARTTLS answer.
    plain_out: Vec<u8>,
    tls: Tls,
    /// The rustls configuration a STARTTLS starts from (`None`: TLS is off).
    tls_config: Option<Arc<rustls::ServerConfig>>,
    /// Last readiness seen and not yet used up (edge-triggered: cleared on WouldBlock).
    pub(super) readable: bool,
    pub(super) writable: bool,
    /// The socket reported a hang-up or an error (a reset, say) not yet looked at.
    pub(super) hung_up: bool,
    read_closed: bool,
    /// When the output last moved, or when there was last nothing to send.
    progress: Instant,
    /// When a byte was last read or written.
    activity: Instant,
    /// How many of the session's Active queries the server's watchers know of (queries are
    /// only ever added at the end, and all end together).
    pub(super) watched: usize,
    /// Admitted only because a certificate table may match: its certificate must.
    pub(super) needs_certificate: bool,
    /// The certificate table whose connection count this connection is in.
    pub(super) table: Option<usize>,
    /// The requestor's name by its certificate: the name that matched a table.
    pub(super) requestor_name: Option<String>,
    /// Its certificate, for the requestor view.
    pub(super) certificate: Option<String>,
    /// The names of its certificate, kept to decide on it again after a reload (D31).
    pub(super) certificate_names: Vec<String>,
    /// When it was accepted: the oldest connections are kept when a lowered limit closes some.
    pub(super) opened: Instant,
    /// When it connected (Unix time).
    pub(super) connected_since: u64,
    /// Octets written so far (before TLS).
    pub(super) written: u64,
    /// Octets already added to the metrics.
    written_reported: u64,
    /// The journal sequence numbers a fill just delivered (with metrics).
    delivered: Vec<u64>,
    /// Deliveries waiting in the output: where they end (in `written` terms), when their
    /// change arrived, how many.
    in_flight: VecDeque<(u64, Instant, u32)>,
}

/// What the server watches a connection's work with.
pub(super) struct Observe<'a> {
    /// When each run of journal records arrived: (first sequence number, instant).
    pub(super) arrivals: &'a VecDeque<(u64, Instant)>,
    /// What this turn of the loop's connections did so far.
    pub(super) turn: &'a mut Turn,
}

/// What connections did, gathered by the server before it adds it to the metrics: the
/// sessions' counts and the octets written (taken once a second and at a close), and the
/// fan-out latencies (after each write, added once a turn). Atomic additions for each
/// connection served were a measurable part of the fan-out's cost (BENCHMARKS.md "Metrics").
#[derive(Debug, Default)]
pub(super) struct Turn {
    pub(super) tally: Tally,
    /// Octets written to requestors over TCP.
    pub(super) sent_tcp: u64,
    /// Fan-out latencies of the deliveries written.
    pub(super) fanout: LatencyTally,
    /// The loop's turns, by how long each took (the poll's wait excluded).
    pub(super) loop_turns: LatencyTally,
}

/// How many of the newest runs of arrivals [`Observe::arrival`] looks at one by one before
/// it searches: live fan-out sends the newest records.
const RECENT_RUNS: usize = 8;

impl Observe<'_> {
    /// When the run of records holding `seq` arrived, and where the next run starts (the
    /// records up to it arrived at the same instant).
    fn arrival(&self, seq: u64) -> Option<(Instant, u64)> {
        let len = self.arrivals.len();
        // The newest runs first, from the back; then a binary search (a catch-up's records).
        let mut next = u64::MAX;
        for i in (len.saturating_sub(RECENT_RUNS)..len).rev() {
            let (start, at) = self.arrivals.get(i)?;
            if *start <= seq {
                return Some((*at, next));
            }
            next = *start;
        }
        let i = self.arrivals.partition_point(|(s, _)| *s <= seq);
        let (_, at) = self.arrivals.get(i.checked_sub(1)?)?;
        let next = self.arrivals.get(i).map_or(u64::MAX, |(s, _)| *s);
        Some((*at, next))
    }
}

impl Conn {
    pub(super) fn new(
        stream: TcpStream,
        peer: SocketAddr,
        policy: QueryTypes,
        max_concurrent: usize,
    ) -> Self {
        Self {
            stream,
            peer,
            policy,
            session: Session::new(max_concurrent),
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            out_pos: 0,
            plain_out: Vec::new(),
            tls: Tls::Plain,
            tls_config: None,
            readable: false,
            writable: false,
            hung_up: false,
            read_closed: false,
            progress: Instant::now(),
            activity: Instant::now(),
            watched: 0,
            needs_certificate: false,
            table: None,
            requestor_name: None,
            certificate: None,
            certificate_names: Vec::new(),
            opened: Instant::now(),
            connected_since: unix_now(),
            written: 0,
            written_reported: 0,
            delivered: Vec::new(),
            in_flight: VecDeque::new(),
        }
    }

    /// Offers STARTTLS with `config` (D25): `require` refuses plain queries.
    pub(super) fn offer_tls(&mut self, config: Arc<rustls::ServerConfig>, require: bool) {
        self.session.set_tls(if require {
            TlsOffer::Require
        } else {
            TlsOffer::Offer
        });
        self.tls_config = Some(config);
    }

    /// Times this connection's deliveries for the fan-out latency (metrics on).
    pub(super) fn time_deliveries(&mut self) {
        self.session.time_deliveries(true);
    }

    /// Replaces what queries the requestor may run (its certificate matched a table, or a
    /// reload changed its policy).
    pub(super) fn set_policy(&mut self, policy: QueryTypes) {
        self.policy = policy;
    }

    /// True while the connection is in plain text and has not asked for STARTTLS.
    pub(super) fn plain(&self) -> bool {
        matches!(self.tls, Tls::Plain) && !self.session.upgrading()
    }

    /// True once the TLS handshake has finished and the server has decided on the
    /// certificate: its names, if any, are in `certificate_names`.
    pub(super) fn tls_identified(&self) -> bool {
        matches!(
            self.tls,
            Tls::Up {
                done: true,
                identify: false,
                ..
            }
        )
    }

    /// The first running query the policy `types` does not allow: its type (`None` for an
    /// Active query without a filter, which needs every type, D23).
    pub(super) fn query_not_allowed(&self, types: QueryTypes) -> Option<Option<QueryType>> {
        let active = self
            .session
            .active_queries()
            .iter()
            .map(|q| q.filter().map(crate::engine::query::Selector::query_type));
        let bulk = self
            .session
            .bulk_answers()
            .iter()
            .map(|a| Some(a.query().selector.query_type()));
        active.chain(bulk).find(|t| match t {
            Some(t) => !types.allows(*t),
            None => types != QueryTypes::ALL,
        })
    }

    /// The requestor's certificate chain, once the handshake finished and until
    /// [`identified`](Self::identified): the server decides what it may do.
    pub(super) fn to_identify(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        match &self.tls {
            Tls::Up {
                session,
                identify: true,
                ..
            } => Some(session.peer_certificates().unwrap_or_default()),
            _ => None,
        }
    }

    /// The server has looked at the certificate: queries are read from now on.
    pub(super) fn identified(&mut self) {
        if let Tls::Up { identify, .. } = &mut self.tls {
            *identify = false;
        }
    }

    /// How long the TLS handshake has been running, if it has not finished.
    pub(super) fn handshaking_for(&self) -> Option<Duration> {
        match &self.tls {
            Tls::Up {
                since, done: false, ..
            } => Some(since.elapsed()),
            _ if self.session.upgrading() => Some(Duration::ZERO),
            _ => None,
        }
    }

    /// True while octets wait to go out: the session's, the STARTTLS answer, or TLS records.
    fn output_pending(&self) -> bool {
        self.out_pos < self.outbuf.len()
            || !self.plain_out.is_empty()
            || matches!(&self.tls, Tls::Up { session, .. } if session.wants_write())
    }

    /// How long the connection has been blocked (BULK_LQ_DATA_TIMEOUT): output waiting without
    /// moving, or, with no query running, nothing read or written (a requestor gone quiet,
    /// possibly half-way through sending a query).
    pub(super) fn blocked_for(&self) -> Duration {
        if self.output_pending() {
            self.progress.elapsed()
        } else if self.session.has_active() {
            // An Active stream is quiet when nothing changes: that is not being blocked.
            Duration::ZERO
        } else if self.session.running() == 0 {
            self.activity.elapsed()
        } else {
            Duration::ZERO
        }
    }

    /// Reads, runs the session, writes. `Ok(true)` when work is left for the next turn (the
    /// budget ran out with readiness unused); `Err(reason)` when the connection must close.
    pub(super) fn service<L: Log>(
        &mut self,
        ctx: &Ctx<'_, L>,
        cache: &mut EncodeCache,
        cfg: &ServerConfig,
        obs: Option<&mut Observe<'_>>,
    ) -> Result<bool, String> {
        // What the session counts stays in it until the server takes it
        // ([`take_counts`](Self::take_counts)), once a second and at the close.
        self.serve_turn(ctx, cache, cfg, obs)
    }

    /// Moves what the session counted and the octets written since the last call to `into`.
    pub(super) fn take_counts(&mut self, into: &mut Turn) {
        self.session.take_tally(&mut into.tally);
        into.sent_tcp = into
            .sent_tcp
            .saturating_add(self.written.saturating_sub(self.written_reported));
        self.written_reported = self.written;
    }

    fn serve_turn<L: Log>(
        &mut self,
        ctx: &Ctx<'_, L>,
        cache: &mut EncodeCache,
        cfg: &ServerConfig,
        obs: Option<&mut Observe<'_>>,
    ) -> Result<bool, String> {
        let mut more = false;
        if std::mem::take(&mut self.hung_up) {
            // After the requestor's FIN a read only says EOF again: the reset that answers
            // a write to a requestor that is gone shows here.
            match self.stream.take_error() {
                Ok(Some(e)) | Err(e) => return Err(io_close("connection", &e)),
                Ok(None) if self.read_closed => return Err(REQUESTOR_CLOSED.into()),
                Ok(None) => {}
            }
        }
        // Read only while the session can take a query and no more than a few are buffered:
        // past that, queries wait in the requestor's socket, not in lqd's memory (D22).
        if self.readable && self.session.wants_read() && self.inbuf.len() < INBUF_CAP {
            let was_closed = self.read_closed;
            more |= if matches!(self.tls, Tls::Up { .. }) {
                self.read_tls(cfg)?
            } else {
                self.read(cfg)?
            };
            if self.read_closed && !was_closed && self.session.has_active() {
                // The requestor closed its side while an Active stream runs. It may only have
                // half-closed after its query (the digest allows that), so the stream goes on;
                // but a requestor that is gone answers the next write with a reset, so write
                // at once rather than at the next keepalive: the connection, its descriptor
                // and its per-requestor slot are then freed within milliseconds (issue 13).
                self.session.keepalive_now(ctx, &mut self.outbuf);
            }
        }
        // Queries already read, also those left from a turn where the session was at its
        // limit (pipelined requestors: the socket may have nothing new to say). Under TLS,
        // only once the handshake is done and the server has looked at the certificate.
        let reading = match &self.tls {
            Tls::Plain => !self.session.upgrading(),
            Tls::Up { done, identify, .. } => *done && !*identify,
        };
        if reading && !self.inbuf.is_empty() && self.session.wants_read() {
            let mut events = Vec::new();
            let consumed = self.session.handle_bytes(
                &self.inbuf,
                ctx,
                &self.policy,
                &mut self.outbuf,
                &mut events,
            );
            for e in events {
                log_event(self.peer, &e);
            }
            match consumed {
                Ok(n) => {
                    if n > 0 {
                        // A whole query: the requestor is not idle (a byte now and then of
                        // a frame that never ends is: slowloris, issue 13).
                        self.activity = Instant::now();
                    }
                    self.inbuf.drain(..n.min(self.inbuf.len()));
                    if self.inbuf.is_empty() && self.inbuf.capacity() > KEEP_CAPACITY {
                        self.inbuf = Vec::new();
                    }
                    if self.session.upgrading() && matches!(self.tls, Tls::Plain) {
                        self.start_tls()?;
                        more = true;
                    }
                }
                Err(reason) => {
                    // Say what we can (a refusal may be queued), then close.
                    let _ = self.write();
                    return Err(reason.to_string());
                }
            }
        }
        // Records left to send: the fill stopped early, or did not run (the buffer was full).
        let mut unsent = true;
        if self.outbuf.len() - self.out_pos < cfg.high_water {
            self.compact();
            if self.outbuf.capacity() == 0 && self.session.bulk_running() > 0 {
                // One allocation for the whole fill rather than a growth in steps.
                self.outbuf.reserve(cfg.high_water.saturating_add(4096));
            }
            unsent = self
                .session
                .fill(ctx, cache, &mut self.outbuf, cfg.high_water);
            if let Some(o) = obs.as_deref() {
                self.note_deliveries(o);
            }
        }
        if self.writable {
            self.write().map_err(|e| io_close("write", &e))?;
        }
        if let Some(o) = obs {
            self.observe_written(&mut o.turn.fanout, ctx.mono);
        }
        if self.to_identify().is_some() {
            // The server decides on the certificate before any query is read.
            return Ok(true);
        }
        // Still writable after the write: no readiness event will come, so come back next turn
        // for what is left (an Active query's records behind a full buffer, say). Not
        // writable: the socket's next writable edge brings the connection back.
        more |= unsent && self.writable;
        let idle = self.session.running() == 0 && !self.output_pending();
        if self.read_closed && idle && !self.session.holds_whole_frame(&self.inbuf) {
            // Nothing runs, nothing is left to send, and what is buffered is at most part of
            // a frame that can no longer complete.
            return Err(REQUESTOR_CLOSED.into());
        }
        // Output left and the socket still writable (the fill stopped at high water), or
        // queries waiting while the session can take more: come back next turn.
        more |= self.writable && (self.output_pending() || self.session.bulk_running() > 0);
        // Readiness not used up while the session could take more (for instance a query
        // finished this turn and freed a slot): edge-triggered, it will not be reported again.
        // Likewise whole queries already buffered, waiting for a slot that is now free.
        more |= self.session.wants_read()
            && ((self.readable && self.inbuf.len() < INBUF_CAP)
                || (reading && self.session.holds_whole_frame(&self.inbuf)));
        Ok(more)
    }

    /// Notes where the deliveries just filled end in the output, and when their changes
    /// arrived, so that the write that sends them can time them.
    fn note_deliveries(&mut self, o: &Observe<'_>) {
        self.session.take_delivered(&mut self.delivered);
        if self.delivered.is_empty() {
            return;
        }
        let end = self
            .written
            .saturating_add(self.outbuf.len().saturating_sub(self.out_pos) as u64);
        // The records a fill sends are mostly consecutive runs that arrived together: one
        // search of the arrivals per run, not per record.
        let mut run: Option<(u64, u64, Instant)> = None;
        for seq in self.delivered.drain(..) {
            let at = match run {
                Some((from, to, at)) if (from..to).contains(&seq) => at,
                _ => {
                    let Some((at, next)) = o.arrival(seq) else {
                        run = None;
                        continue;
                    };
                    run = Some((seq, next, at));
                    at
                }
            };
            match self.in_flight.back_mut() {
                Some((e, a, n)) if *e == end && *a == at => *n = n.saturating_add(1),
                _ => self.in_flight.push_back((end, at, 1)),
            }
        }
    }

    /// Times the deliveries the writes have sent. `now` is the clock reading the loop took
    /// when it turned to this connection, microseconds before the write: one reading a
    /// connection, not one more for the metrics.
    fn observe_written(&mut self, fanout: &mut LatencyTally, now: Instant) {
        while let Some(&(end, at, n)) = self.in_flight.front() {
            if end > self.written {
                break;
            }
            self.in_flight.pop_front();
            if self.in_flight.is_empty() && self.in_flight.capacity() > 16 {
                // An idle session holds no large queue.
                self.in_flight = VecDeque::new();
            }
            let nanos =
                u64::try_from(now.saturating_duration_since(at).as_nanos()).unwrap_or(u64::MAX);
            fanout.observe(nanos, u64::from(n));
        }
    }

    /// STARTTLS was accepted: the answer goes out in plain text, then everything is TLS. The
    /// octets already read after the STARTTLS frame are the start of the handshake.
    fn start_tls(&mut self) -> Result<(), String> {
        let config = self
            .tls_config
            .clone()
            .ok_or("STARTTLS accepted without a TLS configuration")?;
        let mut session =
            ServerConnection::new(config).map_err(|e| format!("TLS session not created: {e}"))?;
        session.set_buffer_limit(Some(TLS_BUFFER));
        self.compact();
        self.plain_out = std::mem::take(&mut self.outbuf);
        let early = std::mem::take(&mut self.inbuf);
        self.tls = Tls::Up {
            session: Box::new(session),
            since: Instant::now(),
            identify: false,
            done: false,
        };
        if !early.is_empty() {
            self.absorb_tls(&mut early.as_slice())?;
        }
        Ok(())
    }

    /// Reads TLS records up to the budget; true when the budget ran out before WouldBlock.
    fn read_tls(&mut self, cfg: &ServerConfig) -> Result<bool, String> {
        for _ in 0..cfg.read_budget {
            let Tls::Up { session, .. } = &mut self.tls else {
                return Ok(false);
            };
            match session.read_tls(&mut self.stream) {
                Ok(0) => {
                    self.read_closed = true;
                    self.readable = false;
                    return Ok(false);
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_close("read", &e)),
            }
            self.absorb_tls(&mut io::empty())?;
            if self.inbuf.len() >= INBUF_CAP {
                return Ok(true);
            }
        }
        Ok(true)
    }

    /// Hands `early` (octets read before the switch) to the TLS session, processes what it
    /// holds, and moves the decrypted octets to `inbuf`. A TLS error closes the connection,
    /// after the alert that says why is sent.
    fn absorb_tls(&mut self, early: &mut dyn Read) -> Result<(), String> {
        let Tls::Up {
            session,
            identify,
            done,
            ..
        } = &mut self.tls
        else {
            return Ok(());
        };
        // Octets in, processed, the plain text out, until `early` is used up: rustls holds
        // a bounded amount of undecrypted input, so it is given in turns.
        loop {
            let n = session.read_tls(early).map_err(|e| format!("TLS: {e}"))?;
            let state = match session.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    // The alert, if the socket takes it.
                    let _ = session.write_tls(&mut self.stream);
                    return Err(format!("TLS handshake failed: {e}"));
                }
            };
            let plain = state.plaintext_bytes_to_read();
            if state.peer_has_closed() {
                self.read_closed = true;
            }
            if plain > 0 {
                let start = self.inbuf.len();
                self.inbuf.resize(start.saturating_add(plain), 0);
                let got = session
                    .reader()
                    .read(self.inbuf.get_mut(start..).unwrap_or_default())
                    .map_err(|e| format!("TLS: {e}"))?;
                self.inbuf.truncate(start.saturating_add(got));
            }
            if n == 0 {
                break;
            }
        }
        if !*done && !session.is_handshaking() {
            *done = true;
            *identify = true;
            self.session.secured();
            self.activity = Instant::now();
        }
        Ok(())
    }

    /// Reads up to the budget; true when the budget ran out before WouldBlock.
    fn read(&mut self, cfg: &ServerConfig) -> Result<bool, String> {
        let mut chunk = [0u8; 16 * 1024];
        for _ in 0..cfg.read_budget {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.read_closed = true;
                    self.readable = false;
                    return Ok(false);
                }
                Ok(n) => self.inbuf.extend_from_slice(chunk.get(..n).unwrap_or(&[])),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_close("read", &e)),
            }
            // Do not buffer more than a few queries ahead of the session (D22).
            if self.inbuf.len() >= INBUF_CAP {
                return Ok(true);
            }
        }
        Ok(true)
    }

    fn write(&mut self) -> io::Result<()> {
        // The STARTTLS answer, in plain text, before any TLS record.
        while !self.plain_out.is_empty() {
            match self.stream.write(&self.plain_out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.plain_out.drain(..n.min(self.plain_out.len()));
                    self.progress = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if matches!(self.tls, Tls::Up { .. }) {
            return self.write_tls();
        }
        while self.out_pos < self.outbuf.len() {
            match self
                .stream
                .write(self.outbuf.get(self.out_pos..).unwrap_or(&[]))
            {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out_pos += n;
                    self.written = self.written.saturating_add(n as u64);
                    self.progress = Instant::now();
                    self.activity = self.progress;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.progress = Instant::now();
        self.out_pos = 0;
        self.outbuf.clear();
        // An Active stream between changes, or an idle connection, holds no buffer: thousands
        // of them cost little memory. A Bulk answer in progress keeps its buffer.
        if self.session.bulk_running() == 0 {
            self.outbuf = Vec::new();
        }
        Ok(())
    }

    /// Moves the session's output into the TLS session (several messages per record: the
    /// cached frames are copied, never encoded again) and its records to the socket.
    fn write_tls(&mut self) -> io::Result<()> {
        let Tls::Up { session, .. } = &mut self.tls else {
            return Ok(());
        };
        loop {
            if self.out_pos < self.outbuf.len() && !session.is_handshaking() {
                let n = session
                    .writer()
                    .write(self.outbuf.get(self.out_pos..).unwrap_or(&[]))?;
                self.out_pos += n;
                self.written = self.written.saturating_add(n as u64);
            }
            if !session.wants_write() {
                break;
            }
            match session.write_tls(&mut self.stream) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {
                    self.progress = Instant::now();
                    self.activity = self.progress;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.out_pos < self.outbuf.len() {
            // Handshaking: the output waits for it.
            return Ok(());
        }
        self.progress = Instant::now();
        self.out_pos = 0;
        self.outbuf.clear();
        if self.session.bulk_running() == 0 {
            self.outbuf = Vec::new();
        }
        Ok(())
    }

    /// Tells a TLS requestor the connection ends (close_notify), if the socket takes it.
    pub(super) fn close_tls(&mut self) {
        if let Tls::Up { session, .. } = &mut self.tls {
            session.send_close_notify();
            let _ = session.write_tls(&mut self.stream);
        }
    }

    fn compact(&mut self) {
        if self.out_pos > 0 {
            self.outbuf.drain(..self.out_pos.min(self.outbuf.len()));
            self.out_pos = 0;
        }
    }

    /// Octets lqd holds for this connection that its socket has not taken yet: at most about
    /// `high_water` and one message, however far behind the requestor reads (coalescing keeps
    /// the rest in the journal, not here).
    pub(super) fn buffered(&self) -> usize {
        self.outbuf.len().saturating_sub(self.out_pos)
    }

    /// The connection's protocol state (for the requestor view).
    pub(super) fn session(&self) -> &Session {
        &self.session
    }

    /// True while an Active query runs on this connection.
    pub(super) fn has_active(&self) -> bool {
        self.session.has_active()
    }

    /// True when the connection only streams live: Active queries, none catching up, and no
    /// Bulk answer. Serving it sends the newest changes and costs little; the server serves
    /// these first when catch-ups crowd a turn (issue 19).
    pub(super) fn streams_live(&self) -> bool {
        self.session.has_active()
            && self.session.bulk_running() == 0
            && self
                .session
                .active_queries()
                .iter()
                .all(|q| !q.catching_up())
    }

    /// When the first of this connection's Active keepalives is due (`None` without one).
    pub(super) fn keepalive_due(&self, idle_timeout: Duration) -> Option<Instant> {
        self.session
            .active_queries()
            .iter()
            .map(|q| q.keepalive_due(idle_timeout))
            .min()
    }

    /// The Active queries running on this connection, oldest first.
    pub(super) fn active_queries(&self) -> &[ActiveQuery] {
        self.session.active_queries()
    }

    /// Ends running queries with QueryTerminated and tries to send that before closing.
    pub(super) fn terminate(&mut self, server_id: &[u8], now: ServerTime) {
        self.compact();
        self.session.terminate_all(server_id, now, &mut self.outbuf);
        let _ = self.write();
    }
}

fn log_event(peer: SocketAddr, e: &Event) {
    match e {
        Event::Refused {
            xid,
            status,
            reason,
        } => {
            info!(%peer, %xid, %status, reason, "query refused");
        }
        Event::DuplicateXid(xid) => info!(%peer, %xid, "query dropped: its xid is already running"),
        Event::StartTlsRefused => info!(%peer, "STARTTLS refused: TLS is not configured"),
        Event::StartTls => info!(%peer, "STARTTLS accepted: TLS handshake"),
        Event::ActiveStarted { xid, catching_up } => {
            info!(%peer, %xid, catching_up, "Active query started");
        }
    }
}
