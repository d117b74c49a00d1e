//! One requestor's TCP connection: its socket, its buffers and its engine session.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use tracing::info;

use super::ServerConfig;
use crate::codec::ServerTime;
use crate::config::QueryTypes;
use crate::engine::session::{Event, Session};
use crate::store::Store;

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
    read_closed: bool,
    /// When the output last moved, or when there was last nothing to send.
    progress: Instant,
    /// When a byte was last read or written.
    activity: Instant,
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
            read_closed: false,
            progress: Instant::now(),
            activity: Instant::now(),
        }
    }

    /// How long the connection has been blocked (BULK_LQ_DATA_TIMEOUT): output waiting without
    /// moving, or, with no query running, nothing read or written (a requestor gone quiet,
    /// possibly half-way through sending a query).
    pub(super) fn blocked_for(&self) -> Duration {
        if self.out_pos < self.outbuf.len() {
            self.progress.elapsed()
        } else if self.session.running() == 0 {
            self.activity.elapsed()
        } else {
            Duration::ZERO
        }
    }

    /// Reads, runs the session, writes. `Ok(true)` when work is left for the next turn (the
    /// budget ran out with readiness unused); `Err(reason)` when the connection must close.
    pub(super) fn service(
        &mut self,
        store: &Store,
        cfg: &ServerConfig,
        now: ServerTime,
    ) -> Result<bool, String> {
        let mut more = false;
        if self.readable && self.session.wants_read() {
            more |= self.read(cfg)?;
            let mut events = Vec::new();
            let consumed = self.session.handle_bytes(
                &self.inbuf,
                store,
                &cfg.server_id,
                &self.policy,
                &mut self.outbuf,
                &mut events,
            );
            for e in events {
                log_event(self.peer, &e);
            }
            match consumed {
                Ok(n) => {
                    self.inbuf.drain(..n.min(self.inbuf.len()));
                }
                Err(reason) => {
                    // Say what we can (a refusal may be queued), then close.
                    let _ = self.write();
                    return Err(reason.to_string());
                }
            }
        }
        if self.outbuf.len() - self.out_pos < cfg.high_water {
            self.compact();
            self.session
                .fill(store, &cfg.server_id, now, &mut self.outbuf, cfg.high_water);
        }
        if self.writable {
            self.write().map_err(|e| format!("write failed: {e}"))?;
        }
        let idle = self.session.running() == 0 && self.out_pos == self.outbuf.len();
        if self.read_closed && idle && self.inbuf.is_empty() {
            return Err("requestor closed the connection".into());
        }
        // Output left and the socket still writable (the fill stopped at high water), or
        // queries waiting while the session can take more: come back next turn.
        more |= self.writable && (self.out_pos < self.outbuf.len() || self.session.running() > 0);
        // Readiness not used up while the session could take more (for instance a query
        // finished this turn and freed a slot): edge-triggered, it will not be reported again.
        more |= self.readable && self.session.wants_read();
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
                Ok(n) => {
                    self.inbuf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
                    self.activity = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read failed: {e}")),
            }
            // Do not buffer more than a few queries ahead of the session (D22).
            if self.inbuf.len() > 4 * 65_537 {
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
        Ok(())
    }

    fn compact(&mut self) {
        if self.out_pos > 0 {
            self.outbuf.drain(..self.out_pos.min(self.outbuf.len()));
            self.out_pos = 0;
        }
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
    }
}
