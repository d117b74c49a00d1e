//! A blocking TCP connection to a server's leasequery port: framing, deadlines, and xids
//! unique on the connection (digest §2, §9.3 step 2).

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::BULK_LQ_DATA_TIMEOUT;
use super::bulk::Bulk;
use super::error::{Error, Result};
use super::query::{Query, TimeWindow};
use crate::codec::{Decoded, FrameDecoder, Xid};

/// How often a blocked read looks at the stop flag.
const STOP_TICK: Duration = Duration::from_millis(100);

/// How long a TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One TCP connection carrying Bulk (and Active) queries, one at a time.
///
/// Each query on it gets a random xid never used before on this connection, so a late
/// message of an abandoned query is recognised and skipped.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    server: SocketAddr,
    requestor: Vec<u8>,
    decoder: FrameDecoder,
    buf: Vec<u8>,
    used: HashSet<u32>,
    data_timeout: Duration,
    last_received: Instant,
    stop: Option<Arc<AtomicBool>>,
}

impl Connection {
    /// Connects to `server` as the requestor whose DUID is `requestor`.
    pub fn connect(server: SocketAddr, requestor: &[u8]) -> Result<Self> {
        let stream =
            TcpStream::connect_timeout(&server, CONNECT_TIMEOUT).map_err(Error::io("connect"))?;
        stream
            .set_write_timeout(Some(BULK_LQ_DATA_TIMEOUT))
            .map_err(Error::io("connect"))?;
        // Queries are small and a requestor waits for each answer.
        stream.set_nodelay(true).map_err(Error::io("connect"))?;
        Ok(Self {
            stream,
            server,
            requestor: requestor.to_vec(),
            decoder: FrameDecoder::default(),
            buf: Vec::new(),
            used: HashSet::new(),
            data_timeout: BULK_LQ_DATA_TIMEOUT,
            last_received: Instant::now(),
            stop: None,
        })
    }

    /// The server's address.
    #[must_use]
    pub const fn server(&self) -> SocketAddr {
        self.server
    }

    /// The requestor's DUID, sent in every query's OPTION_CLIENTID.
    #[must_use]
    pub fn requestor(&self) -> &[u8] {
        &self.requestor
    }

    /// How long a Bulk answer may go without a message (default BULK_LQ_DATA_TIMEOUT), and a
    /// blocked write may wait.
    pub fn set_data_timeout(&mut self, timeout: Duration) -> Result<()> {
        self.data_timeout = timeout;
        self.stream
            .set_write_timeout(Some(timeout.max(Duration::from_millis(1))))
            .map_err(Error::io("set timeout"))
    }

    /// A flag that, once true, makes a blocked read give up with [`Error::Stopped`] within
    /// a tenth of a second.
    pub fn set_stop(&mut self, stop: Option<Arc<AtomicBool>>) {
        self.stop = stop;
    }

    pub(crate) const fn data_timeout(&self) -> Duration {
        self.data_timeout
    }

    /// A fresh random xid, never used before on this connection.
    pub(crate) fn new_xid(&mut self) -> Xid {
        loop {
            let x = Xid::new(rand::random::<u32>());
            if x.value() != 0 && self.used.insert(x.value()) {
                return x;
            }
        }
    }

    /// Starts a Bulk query; its answer is read by iterating the returned [`Bulk`].
    pub fn bulk(&mut self, query: &Query, window: TimeWindow) -> Result<Bulk<'_>> {
        Bulk::start(self, query, window)
    }

    /// Sends one framed message.
    pub(crate) fn send(&mut self, frame: &[u8]) -> Result<()> {
        self.stream.write_all(frame).map_err(|e| match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => Error::Timeout,
            _ => Error::Io {
                what: "send",
                source: e,
            },
        })
    }

    /// When the connection last delivered any octet (or was opened).
    pub(crate) const fn last_received(&self) -> Instant {
        self.last_received
    }

    /// The next complete message, or `None` once `deadline` has passed without one.
    /// [`Error::Closed`] when the server closed the connection.
    pub(crate) fn recv_until(&mut self, deadline: Instant) -> Result<Option<Vec<u8>>> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.decoder.decode(&self.buf) {
                Ok(Decoded::Frame { message, consumed }) => {
                    let message = message.to_vec();
                    self.buf.drain(..consumed.min(self.buf.len()));
                    return Ok(Some(message));
                }
                Ok(Decoded::Incomplete { .. }) => {}
                Err(e) => return Err(Error::Protocol(format!("bad TCP framing: {e}"))),
            }
            if self
                .stop
                .as_ref()
                .is_some_and(|s| s.load(Ordering::Relaxed))
            {
                return Err(Error::Stopped);
            }
            let mut left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            if self.stop.is_some() {
                left = left.min(STOP_TICK);
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .map_err(Error::io("receive"))?;
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(Error::Closed),
                Ok(n) => {
                    self.last_received = Instant::now();
                    self.buf
                        .extend_from_slice(chunk.get(..n).unwrap_or_default());
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    return Err(Error::Io {
                        what: "receive",
                        source: e,
                    });
                }
            }
        }
    }
}
