//! One requestor's TCP connection: its socket, its buffers and its engine session.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use tracing::info;

use super::ServerConfig;
use crate::codec::ServerTime;
use crate::config::QueryTypes;
use crate::engine::active::{ActiveQuery, EncodeCache};
use crate::engine::session::{Ctx, Event, Session};
use crate::store::Log;

/// Octets of queries buffered per connection before lqd stops reading it (D22): a few whole
/// queries of the largest size.
const INBUF_CAP: usize = 4 * 65_537;

/// Capacity an emptied input buffer may keep; more is given back.
const KEEP_CAPACITY: usize = 8 * 1024;

/// A connection and what the loop knows about it.
pub(super) struct Conn {
    pub(super) stream: TcpStream,
    pub(super) peer: SocketAddr,
    policy: QueryTypes,
    session: Session,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    out_pos: usize,
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
            readable: false,
            writable: false,
            hung_up: false,
            read_closed: false,
            progress: Instant::now(),
            activity: Instant::now(),
            watched: 0,
        }
    }

    /// How long the connection has been blocked (BULK_LQ_DATA_TIMEOUT): output waiting without
    /// moving, or, with no query running, nothing read or written (a requestor gone quiet,
    /// possibly half-way through sending a query).
    pub(super) fn blocked_for(&self) -> Duration {
        if self.out_pos < self.outbuf.len() {
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
    ) -> Result<bool, String> {
        let mut more = false;
        if std::mem::take(&mut self.hung_up) {
            // After the requestor's FIN a read only says EOF again: the reset that answers
            // a write to a requestor that is gone shows here.
            match self.stream.take_error() {
                Ok(Some(e)) => return Err(format!("connection lost: {e}")),
                Err(e) => return Err(format!("connection lost: {e}")),
                Ok(None) if self.read_closed => {
                    return Err("requestor closed the connection".into());
                }
                Ok(None) => {}
            }
        }
        // Read only while the session can take a query and no more than a few are buffered:
        // past that, queries wait in the requestor's socket, not in lqd's memory (D22).
        if self.readable && self.session.wants_read() && self.inbuf.len() < INBUF_CAP {
            let was_closed = self.read_closed;
            more |= self.read(cfg)?;
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
        // limit (pipelined requestors: the socket may have nothing new to say).
        if !self.inbuf.is_empty() && self.session.wants_read() {
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
        }
        if self.writable {
            self.write().map_err(|e| format!("write failed: {e}"))?;
        }
        // Still writable after the write: no readiness event will come, so come back next turn
        // for what is left (an Active query's records behind a full buffer, say). Not
        // writable: the socket's next writable edge brings the connection back.
        more |= unsent && self.writable;
        let idle = self.session.running() == 0 && self.out_pos == self.outbuf.len();
        if self.read_closed && idle && !self.session.holds_whole_frame(&self.inbuf) {
            // Nothing runs, nothing is left to send, and what is buffered is at most part of
            // a frame that can no longer complete.
            return Err("requestor closed the connection".into());
        }
        // Output left and the socket still writable (the fill stopped at high water), or
        // queries waiting while the session can take more: come back next turn.
        more |=
            self.writable && (self.out_pos < self.outbuf.len() || self.session.bulk_running() > 0);
        // Readiness not used up while the session could take more (for instance a query
        // finished this turn and freed a slot): edge-triggered, it will not be reported again.
        // Likewise whole queries already buffered, waiting for a slot that is now free.
        more |= self.session.wants_read()
            && ((self.readable && self.inbuf.len() < INBUF_CAP)
                || self.session.holds_whole_frame(&self.inbuf));
        Ok(more)
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
                Err(e) => return Err(format!("read failed: {e}")),
            }
            // Do not buffer more than a few queries ahead of the session (D22).
            if self.inbuf.len() >= INBUF_CAP {
                return Ok(true);
            }
        }
        Ok(true)
    }

    fn write(&mut self) -> io::Result<()> {
        while self.out_pos < self.outbuf.len() {
            match self
                .stream
                .write(self.outbuf.get(self.out_pos..).unwrap_or(&[]))
            {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out_pos += n;
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

    fn compact(&mut self) {
        if self.out_pos > 0 {
            self.outbuf.drain(..self.out_pos.min(self.outbuf.len()));
            self.out_pos = 0;
        }
    }

    /// True while an Active query runs on this connection.
    pub(super) fn has_active(&self) -> bool {
        self.session.has_active()
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
        Event::ActiveStarted { xid, catching_up } => {
            info!(%peer, %xid, catching_up, "Active query started");
        }
    }
}
