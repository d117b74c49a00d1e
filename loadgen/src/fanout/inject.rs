//! The injector: one thread that writes change `k` at its intended time `t0 + k / R`.
//!
//! When it is behind (it slept too long, or the sink blocked it: lqd's feed pushes back by
//! not reading its socket), it writes every overdue change at once and never skips one; how
//! late it was is reported, and the receivers measure each delivery from the intended time
//! anyway, so lateness here shows in the latencies rather than hiding.
//!
//! Three sinks: lqd's JSON-lines UNIX socket ([`JsonlSink`]), and a Redis or NATS publisher
//! connection ([`RedisSink`], [`NatsSink`]), which publishes each change's LEASEQUERY-DATA,
//! the bytes lqd would send (filtered: on its key's channel or subject).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lqd::feed::system_time;

use super::changes::{Model, Schedule};
use super::receiver::XID;
use crate::nats::{NatsDecoder, NatsPush, handshake, subject};
use crate::redis::{channel, count_integer_replies, publish_command};

/// The most changes written in one go (an "all at once" schedule is written in pieces).
const MAX_BATCH: u64 = 16_384;

/// Where the injector writes changes.
pub(crate) trait Sink: Send {
    /// Writes changes `first..end`.
    fn write(&mut self, first: u64, end: u64) -> Result<(), String>;

    /// Called once every change is written; the sink's own findings.
    fn finish(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// lqd's JSON-lines feed socket.
pub(crate) struct JsonlSink {
    stream: UnixStream,
    model: Model,
    buf: Vec<u8>,
}

impl JsonlSink {
    /// Writes to `stream`, a connection to lqd's `jsonl:unix:` source.
    pub(crate) fn new(stream: UnixStream, model: Model) -> Self {
        Self {
            stream,
            model,
            buf: Vec::with_capacity(1 << 20),
        }
    }
}

impl Sink for JsonlSink {
    fn write(&mut self, first: u64, end: u64) -> Result<(), String> {
        // cltt: the injection time, as the DHCPv6 server writing the lease would give it.
        let cltt = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.buf.clear();
        for k in first..end {
            self.model.json_line(k, cltt, &mut self.buf);
        }
        self.stream
            .write_all(&self.buf)
            .map_err(|e| format!("writing to lqd's feed socket: {e}"))
    }
}

/// A Redis publisher: `PUBLISH` per change, pipelined; a thread reads the replies (each the
/// number of subscribers that got the message), so that Redis never waits on this connection.
pub(crate) struct RedisSink {
    stream: TcpStream,
    model: Model,
    /// The channel of each key (filtered), or the one channel.
    channels: Vec<Vec<u8>>,
    buf: Vec<u8>,
    reader: Option<JoinHandle<Result<(u64, u64), String>>>,
    /// PUBLISHes sent, for the reader to know when it has every reply.
    target: Arc<AtomicU64>,
    /// Subscribers each PUBLISH must reach.
    subscribers: u64,
    published: u64,
}

/// How long the publisher's reader waits for the last replies.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

impl RedisSink {
    /// Publishes on `stream`, a connection to the Redis server, each change on its key's
    /// channel when the model is keyed, where it must reach `subscribers` subscribers.
    pub(crate) fn new(stream: TcpStream, model: Model, subscribers: u64) -> Result<Self, String> {
        let mut replies = stream
            .try_clone()
            .map_err(|e| format!("the Redis publisher connection: {e}"))?;
        replies
            .set_read_timeout(Some(Duration::from_millis(100)))
            .map_err(|e| format!("the Redis publisher connection: {e}"))?;
        let target = Arc::new(AtomicU64::new(u64::MAX));
        let until = Arc::clone(&target);
        let reader = std::thread::Builder::new()
            .name("loadgen-redis-pub".into())
            .spawn(move || -> Result<(u64, u64), String> {
                let (mut count, mut receivers) = (0u64, 0u64);
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 64 * 1024];
                let mut since = Instant::now();
                while count < until.load(Ordering::Acquire) {
                    let n = match replies.read(&mut chunk) {
                        Ok(0) => return Err("Redis closed the publisher connection".to_owned()),
                        Ok(n) => n,
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock
                                    | std::io::ErrorKind::TimedOut
                                    | std::io::ErrorKind::Interrupted
                            ) =>
                        {
                            if since.elapsed() > REPLY_TIMEOUT {
                                return Err(format!(
                                    "no PUBLISH reply for {REPLY_TIMEOUT:?} after {count}"
                                ));
                            }
                            continue;
                        }
                        Err(e) => return Err(format!("reading PUBLISH replies: {e}")),
                    };
                    since = Instant::now();
                    buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                    let (r, used, sum) = count_integer_replies(&buf)?;
                    buf.drain(..used.min(buf.len()));
                    count += r as u64;
                    receivers += sum;
                }
                Ok((count, receivers))
            })
            .map_err(|e| format!("cannot start the publisher's reader: {e}"))?;
        let channels = match model.keys() {
            Some(keys) => (0..keys.count).map(|i| channel(Some(i))).collect(),
            None => vec![channel(None)],
        };
        Ok(Self {
            stream,
            model,
            channels,
            buf: Vec::with_capacity(1 << 20),
            reader: Some(reader),
            target,
            subscribers,
            published: 0,
        })
    }
}

impl Sink for RedisSink {
    fn write(&mut self, first: u64, end: u64) -> Result<(), String> {
        let now = system_time();
        self.buf.clear();
        for k in first..end {
            let payload = self.model.data_message(k, XID, now)?;
            let key = self.model.key(k).unwrap_or(0) as usize;
            let channel = self.channels.get(key).ok_or("a key without a channel")?;
            publish_command(channel, &payload, &mut self.buf);
        }
        self.published += end - first;
        self.stream
            .write_all(&self.buf)
            .map_err(|e| format!("publishing to Redis: {e}"))
    }

    fn finish(&mut self) -> Result<(), String> {
        self.target.store(self.published, Ordering::Release);
        let Some(reader) = self.reader.take() else {
            return Ok(());
        };
        let (replies, receivers) = reader
            .join()
            .unwrap_or_else(|_| Err("the publisher's reader panicked".to_owned()))?;
        if replies != self.published || receivers != self.published * self.subscribers {
            return Err(format!(
                "Redis answered {replies} of {} PUBLISHes, reaching {receivers} subscribers in \
                 all ({} expected)",
                self.published,
                self.published * self.subscribers
            ));
        }
        Ok(())
    }
}

/// A NATS publisher: `PUB` per change, pipelined. NATS does not answer a PUB (`verbose` is
/// off) nor say how many subscribers got it; at the end a PING, whose PONG comes once
/// nats-server has processed every PUB before it. A thread reads what the server sends
/// meanwhile, so that an `-ERR` (a closed connection, a payload too large) fails the run.
pub(crate) struct NatsSink {
    stream: TcpStream,
    model: Model,
    /// The subject of each key (filtered), or the one subject.
    subjects: Vec<Vec<u8>>,
    buf: Vec<u8>,
    reader: Option<JoinHandle<Result<(), String>>>,
    /// Set once the final PING is sent, or to stop the reader when the sink is dropped.
    pinged: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl NatsSink {
    /// Publishes on `stream`, a new connection to nats-server: CONNECT and a first PING
    /// answered before the first PUB.
    pub(crate) fn new(mut stream: TcpStream, model: Model) -> Result<Self, String> {
        handshake(&mut stream).map_err(|e| format!("the NATS publisher: {e}"))?;
        let _ = stream.set_nodelay(true);
        let mut replies = stream
            .try_clone()
            .map_err(|e| format!("the NATS publisher connection: {e}"))?;
        replies
            .set_read_timeout(Some(Duration::from_millis(100)))
            .map_err(|e| format!("the NATS publisher connection: {e}"))?;
        let pinged = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (ping_seen, stop_seen) = (Arc::clone(&pinged), Arc::clone(&stop));
        let reader = std::thread::Builder::new()
            .name("loadgen-nats-pub".into())
            .spawn(move || -> Result<(), String> {
                let mut decoder = NatsDecoder::new();
                let mut chunk = vec![0u8; 4096];
                let mut since: Option<Instant> = None;
                while !stop_seen.load(Ordering::Acquire) {
                    if since.is_none() && ping_seen.load(Ordering::Acquire) {
                        since = Some(Instant::now());
                    }
                    match replies.read(&mut chunk) {
                        Ok(0) => return Err("nats-server closed the publisher connection".into()),
                        Ok(n) => decoder.feed(chunk.get(..n).unwrap_or_default()),
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock
                                    | std::io::ErrorKind::TimedOut
                                    | std::io::ErrorKind::Interrupted
                            ) =>
                        {
                            if since.is_some_and(|t| t.elapsed() > REPLY_TIMEOUT) {
                                return Err(format!(
                                    "no PONG from nats-server {REPLY_TIMEOUT:?} after the last PUB"
                                ));
                            }
                            continue;
                        }
                        Err(e) => return Err(format!("reading from nats-server: {e}")),
                    }
                    while let Some(op) = decoder.next()? {
                        match op {
                            NatsPush::Pong => return Ok(()),
                            NatsPush::Err(e) => return Err(format!("nats-server: -ERR {e}")),
                            NatsPush::Info | NatsPush::Ping | NatsPush::Ok | NatsPush::Msg(_) => {}
                        }
                    }
                }
                Err("stopped before the final PONG".to_owned())
            })
            .map_err(|e| format!("cannot start the publisher's reader: {e}"))?;
        let subjects = match model.keys() {
            Some(keys) => (0..keys.count).map(|i| subject(Some(i))).collect(),
            None => vec![subject(None)],
        };
        Ok(Self {
            stream,
            model,
            subjects,
            buf: Vec::with_capacity(1 << 20),
            reader: Some(reader),
            pinged,
            stop,
        })
    }
}

impl Sink for NatsSink {
    fn write(&mut self, first: u64, end: u64) -> Result<(), String> {
        let now = system_time();
        self.buf.clear();
        for k in first..end {
            let payload = self.model.data_message(k, XID, now)?;
            let key = self.model.key(k).unwrap_or(0) as usize;
            let subject = self.subjects.get(key).ok_or("a key without a subject")?;
            crate::nats::publish_command(subject, &payload, &mut self.buf);
        }
        self.stream
            .write_all(&self.buf)
            .map_err(|e| format!("publishing to nats-server: {e}"))
    }

    fn finish(&mut self) -> Result<(), String> {
        self.stream
            .write_all(b"PING\r\n")
            .map_err(|e| format!("the final PING to nats-server: {e}"))?;
        self.pinged.store(true, Ordering::Release);
        let Some(reader) = self.reader.take() else {
            return Ok(());
        };
        reader
            .join()
            .unwrap_or_else(|_| Err("the publisher's reader panicked".to_owned()))
    }
}

impl Drop for NatsSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// How the injection went.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InjectReport {
    /// Changes written.
    pub(crate) written: u64,
    /// The worst delay between a change's intended time and the end of its write.
    pub(crate) max_late: Duration,
    /// How late the last change was written.
    pub(crate) end_late: Duration,
}

/// Starts the injector thread on `schedule`; `abort` stops it early.
pub(crate) fn spawn(
    mut sink: Box<dyn Sink>,
    schedule: Schedule,
    abort: Arc<AtomicBool>,
) -> Result<JoinHandle<Result<InjectReport, String>>, String> {
    std::thread::Builder::new()
        .name("loadgen-inject".into())
        .spawn(move || {
            let mut sent = 0u64;
            let mut max_late = Duration::ZERO;
            while sent < schedule.total {
                if abort.load(Ordering::Relaxed) {
                    return Err(format!("aborted after {sent} changes"));
                }
                let now = Instant::now();
                let due = schedule.due(now);
                if due > sent {
                    let end = due.min(sent + MAX_BATCH);
                    sink.write(sent, end)?;
                    let late = Instant::now().saturating_duration_since(schedule.at(sent));
                    max_late = max_late.max(late);
                    sent = end;
                } else {
                    std::thread::sleep(schedule.at(sent).saturating_duration_since(now));
                }
            }
            let end_late = Instant::now().saturating_duration_since(schedule.end());
            sink.finish()?;
            Ok(InjectReport {
                written: sent,
                max_late,
                end_late,
            })
        })
        .map_err(|e| format!("cannot start the injector thread: {e}"))
}
