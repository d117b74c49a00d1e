//! A blocking TCP connection to a server's leasequery port: framing, deadlines, xids unique
//! on the connection (digest §2, §9.3 step 2), and STARTTLS (digest §12, decisions D25, D28).
//!
//! With TLS, the first framed message on the connection is a STARTTLS (message 23, a fresh
//! xid, OPTION_CLIENTID). The server's STARTTLS with the same xid accepts; the TLS handshake
//! follows on the same socket (we are the TLS client), and every later frame, with the same
//! 2-octet framing, travels inside TLS. An answer carrying an error status, TLSConnectionRefused
//! above all, refuses, whatever its message type: [`Error::TlsRefused`], and the connection is
//! dropped (never used in plaintext).

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustls::{ClientConnection, StreamOwned};

use super::BULK_LQ_DATA_TIMEOUT;
use super::bulk::Bulk;
use super::error::{Error, Result};
use super::query::{Query, TimeWindow};
use super::tls::{TlsClient, describe, rustls_error};
use crate::codec::{
    BuildOptions, Decoded, FrameDecoder, MessageBuilder, MessageRepr, MessageType, Status, Xid,
};

/// How often a blocked read looks at the stop flag.
const STOP_TICK: Duration = Duration::from_millis(100);

/// How long a TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the STARTTLS answer and then the TLS handshake may each take.
const TLS_TIMEOUT: Duration = Duration::from_secs(10);

/// The socket, in plaintext or inside TLS.
#[derive(Debug)]
enum Transport {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Transport {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => &s.sock,
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Plain(s) => s.write_all(buf),
            Self::Tls(s) => s.write_all(buf).and_then(|()| s.flush()),
        }
    }
}

/// An I/O error of the connection as the requestor's error: a TLS failure says what failed,
/// an end without TLS close_notify is a close.
fn io_error(what: &'static str, e: std::io::Error) -> Error {
    if let Some(tls) = rustls_error(&e) {
        return Error::Tls(describe(tls));
    }
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Error::Timeout,
        ErrorKind::UnexpectedEof => Error::Closed,
        _ => Error::Io { what, source: e },
    }
}

/// One TCP connection carrying Bulk (and Active) queries, one at a time.
///
/// Each query on it gets a random xid never used before on this connection, so a late
/// message of an abandoned query is recognised and skipped.
#[derive(Debug)]
pub struct Connection {
    stream: Transport,
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
    /// Connects to `server` as the requestor whose DUID is `requestor`, in plaintext.
    pub fn connect(server: SocketAddr, requestor: &[u8]) -> Result<Self> {
        Self::open(server, requestor, None)
    }

    /// Connects to `server` and sets up TLS with STARTTLS before anything else.
    /// [`Error::TlsRefused`] when the server refuses, [`Error::Tls`] when the handshake
    /// fails (the server's certificate is not accepted, for example).
    pub fn connect_tls(server: SocketAddr, requestor: &[u8], tls: &TlsClient) -> Result<Self> {
        Self::open(server, requestor, Some(tls))
    }

    /// [`connect_tls`](Self::connect_tls) with `Some`, [`connect`](Self::connect) with
    /// `None`.
    pub fn open(server: SocketAddr, requestor: &[u8], tls: Option<&TlsClient>) -> Result<Self> {
        let conn = Self::connect_plain(server, requestor)?;
        match tls {
            Some(tls) => conn.start_tls(tls),
            None => Ok(conn),
        }
    }

    fn connect_plain(server: SocketAddr, requestor: &[u8]) -> Result<Self> {
        let stream =
            TcpStream::connect_timeout(&server, CONNECT_TIMEOUT).map_err(Error::io("connect"))?;
        stream
            .set_write_timeout(Some(BULK_LQ_DATA_TIMEOUT))
            .map_err(Error::io("connect"))?;
        // Queries are small and a requestor waits for each answer.
        stream.set_nodelay(true).map_err(Error::io("connect"))?;
        Ok(Self {
            stream: Transport::Plain(stream),
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

    /// True once the connection runs inside TLS.
    #[must_use]
    pub const fn is_tls(&self) -> bool {
        matches!(self.stream, Transport::Tls(_))
    }

    /// The TLS version and cipher suite negotiated, `None` in plaintext.
    #[must_use]
    pub fn tls_session(&self) -> Option<(rustls::ProtocolVersion, rustls::CipherSuite)> {
        match &self.stream {
            Transport::Plain(_) => None,
            Transport::Tls(s) => Some((
                s.conn.protocol_version()?,
                s.conn.negotiated_cipher_suite()?.suite(),
            )),
        }
    }

    /// STARTTLS, then the handshake (digest §12).
    fn start_tls(mut self, tls: &TlsClient) -> Result<Self> {
        let xid = self.new_xid();
        let mut b = MessageBuilder::new(MessageType::StartTls, xid.value());
        if !self.requestor.is_empty() {
            b = b.client_id(&self.requestor);
        }
        let frame = b
            .build_frame()
            .map_err(|e| Error::Invalid(format!("cannot encode STARTTLS: {e}")))?;
        self.send(&frame)?;
        let deadline = Instant::now() + TLS_TIMEOUT;
        loop {
            let Some(bytes) = self.recv_until(deadline)? else {
                return Err(Error::Tls(format!(
                    "no answer to STARTTLS within {}s",
                    TLS_TIMEOUT.as_secs()
                )));
            };
            let msg = MessageRepr::parse(&bytes)
                .map_err(|e| Error::Protocol(format!("unparsable answer to STARTTLS: {e}")))?;
            let status = msg.options.status();
            let code = status.map_or(Status::Success, |s| s.status);
            // A refusal is a refusal whatever carries it (D25): STARTTLS or LEASEQUERY-REPLY.
            if code != Status::Success {
                return Err(Error::TlsRefused {
                    status: code,
                    message: status
                        .map(|s| s.message_lossy().into_owned())
                        .unwrap_or_default(),
                });
            }
            match msg.msg_type() {
                MessageType::StartTls if msg.xid() == Some(xid) => break,
                // Another xid: not the answer to this STARTTLS.
                MessageType::StartTls => {}
                other => {
                    return Err(Error::Protocol(format!(
                        "{other} without an error status in answer to STARTTLS"
                    )));
                }
            }
        }
        if !self.buf.is_empty() {
            return Err(Error::Protocol(
                "the server sent more after accepting STARTTLS, before the TLS handshake".into(),
            ));
        }
        let name = tls.server_name_for(self.server);
        let client = ClientConnection::new(tls.config(), name)
            .map_err(|e| Error::Tls(format!("cannot start the handshake: {e}")))?;
        let Transport::Plain(tcp) = self.stream else {
            return Err(Error::Invalid("STARTTLS on a TLS connection".into()));
        };
        tcp.set_read_timeout(Some(TLS_TIMEOUT))
            .map_err(Error::io("TLS handshake"))?;
        let mut s = StreamOwned::new(client, tcp);
        let handshake = |e: std::io::Error| match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => Error::Tls(format!(
                "the TLS handshake did not finish within {}s",
                TLS_TIMEOUT.as_secs()
            )),
            ErrorKind::UnexpectedEof => {
                Error::Tls("the server closed the connection during the TLS handshake".into())
            }
            _ => io_error("TLS handshake", e),
        };
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock).map_err(handshake)?;
        }
        while s.conn.wants_write() {
            s.conn.write_tls(&mut s.sock).map_err(handshake)?;
        }
        self.stream = Transport::Tls(Box::new(s));
        Ok(self)
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
            .tcp()
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
        self.stream
            .write_all(frame)
            .map_err(|e| io_error("send", e))
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
                .tcp()
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
                Err(e) => return Err(io_error("receive", e)),
            }
        }
    }
}
