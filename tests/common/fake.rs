//! A scripted fake leasequery server for the requestor tests: it accepts TCP connections and
//! runs the test's script on each, so a test can be a server that goes silent, refuses, says
//! DataMissing or ends a query, and see exactly what the requestor sent.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lqd::codec::{
    BuildOptions, Decoded, DhcpOption, FrameDecoder, MessageBuilder, MessageRepr, MessageType,
    OptionCode, QueryType, ServerTime, Status,
};

pub(crate) const SERVER_DUID: [u8; 10] = [0, 3, 0, 1, 0, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];

/// What a requestor sent, as the fake server read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) msg_type: MessageType,
    pub(crate) xid: u32,
    pub(crate) requestor: Vec<u8>,
    pub(crate) query_type: Option<QueryType>,
    pub(crate) link: Option<std::net::Ipv6Addr>,
    pub(crate) start: Option<ServerTime>,
    pub(crate) end: Option<ServerTime>,
    pub(crate) wants_base_time: bool,
}

impl Request {
    pub(crate) fn parse(bytes: &[u8]) -> Self {
        let m = MessageRepr::parse(bytes).expect("the requestor sends parsable messages");
        let q = m.options.lq_query();
        Self {
            msg_type: m.msg_type(),
            xid: m.xid().unwrap().value(),
            requestor: m.options.client_id().unwrap().as_bytes().to_vec(),
            query_type: q.map(|q| q.query_type),
            link: q.map(|q| q.link_address),
            start: m.options.iter().find_map(|o| match o {
                DhcpOption::LqStartTime(t) => Some(t),
                _ => None,
            }),
            end: m.options.iter().find_map(|o| match o {
                DhcpOption::LqEndTime(t) => Some(t),
                _ => None,
            }),
            wants_base_time: m.options.requests(OptionCode::LqBaseTime),
        }
    }
}

/// One accepted connection, for the script.
pub(crate) struct FakeConn {
    pub(crate) index: usize,
    pub(crate) stream: TcpStream,
    dec: FrameDecoder,
    buf: Vec<u8>,
}

impl FakeConn {
    /// The next request, or `None` on EOF or after `wait`.
    pub(crate) fn read(&mut self, wait: Duration) -> Option<Request> {
        let deadline = Instant::now() + wait;
        let mut chunk = [0u8; 4096];
        loop {
            if let Decoded::Frame { message, consumed } = self.dec.decode(&self.buf).unwrap() {
                let r = Request::parse(message);
                self.buf.drain(..consumed);
                return Some(r);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return None,
            }
        }
    }

    pub(crate) fn send(&mut self, frame: &[u8]) {
        let _ = self.stream.write_all(frame);
    }

    /// Waits until the requestor closes the connection (or `wait` passes).
    pub(crate) fn until_closed(&mut self, wait: Duration) {
        while self.read(wait).is_some() {}
    }
}

/// A fake server: each accepted connection runs `script` on a thread of its own.
pub(crate) struct FakeServer {
    pub(crate) addr: SocketAddr,
    _accept: JoinHandle<()>,
}

impl FakeServer {
    pub(crate) fn start<F>(script: F) -> Self
    where
        F: Fn(FakeConn) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("[::1]:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let script = std::sync::Arc::new(script);
        let accept = std::thread::spawn(move || {
            for (index, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { return };
                let script = std::sync::Arc::clone(&script);
                std::thread::spawn(move || {
                    script(FakeConn {
                        index,
                        stream,
                        dec: FrameDecoder::default(),
                        buf: Vec::new(),
                    })
                });
            }
        });
        Self {
            addr,
            _accept: accept,
        }
    }
}

/// A channel the scripts report on, and its receiving end for the test.
pub(crate) fn channel<T>() -> (mpsc::Sender<T>, mpsc::Receiver<T>) {
    mpsc::channel()
}

/// A LEASEQUERY-REPLY for `xid` with an optional status and base-time.
pub(crate) fn reply(xid: u32, status: Option<Status>, base: Option<u32>, to: &[u8]) -> Vec<u8> {
    let mut b = MessageBuilder::reply(xid)
        .server_id(&SERVER_DUID)
        .client_id(to);
    if let Some(s) = status {
        b = b.status(s, "");
    }
    if let Some(t) = base {
        b = b.base_time(ServerTime(t));
    }
    b.build_frame().unwrap()
}

/// A LEASEQUERY-DATA for `xid`: base-time, then a status or one client's address.
pub(crate) fn data(
    xid: u32,
    base: u32,
    status: Option<Status>,
    client: Option<(u8, &str)>,
) -> Vec<u8> {
    let mut b = MessageBuilder::data(xid).base_time(ServerTime(base));
    if let Some(s) = status {
        b = b.status(s, "");
    }
    if let Some((id, addr)) = client {
        b = b.client_data(|c| {
            c.client_id(&client_duid(id))
                .iaaddr(addr.parse().unwrap(), 3600, 7200)
                .clt_time(1)
        });
    }
    b.build_frame().unwrap()
}

/// A Bulk answer holding one client per `(id, address)`, then DONE with `done`.
pub(crate) fn bulk_answer(
    xid: u32,
    base: u32,
    to: &[u8],
    clients: &[(u8, &str)],
    done: Status,
) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (id, addr)) in clients.iter().enumerate() {
        let b = if i == 0 {
            MessageBuilder::reply(xid)
                .server_id(&SERVER_DUID)
                .client_id(to)
        } else {
            MessageBuilder::data(xid)
        };
        let frame = b
            .base_time(ServerTime(base))
            .client_data(|c| {
                c.client_id(&client_duid(*id))
                    .iaaddr(addr.parse().unwrap(), 3600, 7200)
                    .clt_time(1)
            })
            .build_frame()
            .unwrap();
        out.extend_from_slice(&frame);
    }
    if clients.is_empty() {
        out.extend_from_slice(&reply(xid, None, Some(base), to));
    } else {
        out.extend_from_slice(
            &MessageBuilder::done(xid)
                .status(done, "")
                .base_time(ServerTime(base))
                .build_frame()
                .unwrap(),
        );
    }
    out
}

pub(crate) fn client_duid(id: u8) -> Vec<u8> {
    vec![0, 3, 0, 1, 2, 0, 0, 0, 0, id]
}
