//! The `jsonl:unix` socket: accepting writers and, per connection, its lines, its writer's
//! name and numbered lines, and what lqd writes back (acknowledgements, the answer to a sync,
//! rejected lines). The protocol is in `docs/jsonl-acks.md`.

use std::io::{self, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::{
    LineError, LineSplitter, NumberedLine, POLL_INTERVAL, Sink, parse_change, parse_object,
};
use crate::feed::ack::{MAX_NAME, Writer, Writers};
use crate::feed::{Fed, Numbered};

/// How often, at most, lqd tells a named writer its acknowledged line when it moved.
pub const ACK_INTERVAL: Duration = Duration::from_millis(100);

/// A named writer that leaves what lqd writes back unread this long is disconnected: its
/// socket buffer is full, and lqd would otherwise stop reading it for good.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the listening socket, removing a stale socket file first and refusing a path that is
/// in use or is not a socket.
pub(super) fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; not replacing it",
                    path.display()
                ),
            ));
        }
        match UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another process is listening on {}", path.display()),
                ));
            }
            Err(_) => {
                tracing::info!("removing the stale socket {}", path.display());
                std::fs::remove_file(path)?;
            }
        }
    }
    UnixListener::bind(path)
}

/// Accepts writers for ever, each on a thread of its own.
pub(super) fn accept(sink: &Arc<Sink>, listener: &UnixListener, writers: &Arc<Writers>) -> u64 {
    let what = sink.name.as_str();
    let mut connections = 0u64;
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(source = %what, "{what}: accept failed: {e}");
                std::thread::sleep(POLL_INTERVAL);
                continue;
            }
        };
        connections += 1;
        let conn = connections;
        let (sink, writers) = (Arc::clone(sink), Arc::clone(writers));
        let spawned = std::thread::Builder::new()
            .name(format!("lqd-feed-jsonl-{conn}"))
            .spawn(move || read_connection(&sink, &writers, conn, &stream));
        if let Err(e) = spawned {
            tracing::warn!(source = %what, "{what}: cannot start a thread for a writer: {e}");
        }
    }
    sink.sent.load(Ordering::Relaxed)
}

fn read_connection(sink: &Sink, writers: &Writers, conn: u64, stream: &UnixStream) {
    let what = format!("{} connection {conn}", sink.name);
    tracing::info!(source = %sink.name, connection = conn, "{what}: writer connected");
    let mut c = Connection {
        sink,
        writers,
        what,
        stream,
        writer: None,
        hello_ack: None,
        last_seq: None,
        sent_ack: None,
        last_ack: Instant::now(),
        lines: 0,
        end: None,
    };
    let mut splitter = LineSplitter::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut input = stream;
    loop {
        match input.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => splitter.push(chunk.get(..n).unwrap_or_default(), |l| c.line(l)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // The read timeout of a named writer's connection: time to tell it its mark.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                tracing::warn!(source = %sink.name, connection = conn, "{}: read error: {e}", c.what);
                break;
            }
        }
        c.tick();
        if c.end.is_some() {
            break;
        }
    }
    if c.end.is_none() {
        splitter.finish(|l| c.line(l));
    }
    match c.end {
        None => tracing::info!(
            source = %sink.name,
            connection = conn,
            lines = splitter.lines(),
            "{}: writer disconnected",
            c.what
        ),
        Some(End::FeedClosed) => {}
        Some(End::Refused(why)) => {
            tracing::warn!(source = %sink.name, connection = conn, "{}: closed: {why}", c.what);
        }
        Some(End::WriteFailed(e)) => tracing::warn!(
            source = %sink.name,
            connection = conn,
            "{}: closed: cannot write to the writer ({e}); a writer that says hello must read \
             what lqd writes back",
            c.what
        ),
    }
}

/// Why a connection ended before its writer closed it.
#[derive(Debug)]
enum End {
    /// The loop has gone.
    FeedClosed,
    /// A protocol error: lqd said why and closed.
    Refused(String),
    /// What lqd writes back could not be written.
    WriteFailed(io::Error),
}

/// A named writer's connection holds its name until it ends.
#[derive(Debug)]
struct Claim(Arc<Writer>);

impl Drop for Claim {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// One writer's connection.
struct Connection<'a> {
    sink: &'a Sink,
    writers: &'a Writers,
    what: String,
    stream: &'a UnixStream,
    /// The writer this connection speaks for, after its hello.
    writer: Option<Claim>,
    /// What lqd held for it at the hello.
    hello_ack: Option<u64>,
    /// The last numbered line's `seq`.
    last_seq: Option<u64>,
    /// The acknowledgement last written back.
    sent_ack: Option<u64>,
    last_ack: Instant,
    /// Lines that were not blank.
    lines: u64,
    end: Option<End>,
}

impl Connection<'_> {
    fn line(&mut self, (number, line): NumberedLine<'_>) {
        if self.end.is_some() {
            return;
        }
        let text = match line {
            Ok(t) if t.trim().is_empty() => return,
            Ok(t) => t,
            Err(e) => {
                self.lines += 1;
                return self.bad(number, None, &e);
            }
        };
        self.lines += 1;
        let obj = match parse_object(text) {
            Ok(o) => o,
            Err(e) => return self.bad(number, None, &e),
        };
        if obj.contains_key("hello") {
            return self.hello(&obj);
        }
        if obj.contains_key("sync") {
            return self.sync(number, &obj);
        }
        match self.writer.as_ref().map(|c| Arc::clone(&c.0)) {
            None => {
                if !self
                    .sink
                    .parsed(&self.what, number, parse_change(&obj), None)
                {
                    self.end = Some(End::FeedClosed);
                }
            }
            Some(writer) => self.numbered(number, &obj, writer),
        }
    }

    /// `{"hello": NAME}`: the connection speaks for the writer NAME from now on.
    fn hello(&mut self, obj: &Map<String, Value>) {
        if self.writer.is_some() || self.lines > 1 {
            return self.refuse("a hello must be the connection's first line".into());
        }
        let name = match obj.get("hello") {
            Some(Value::String(s)) => s.as_str(),
            _ => return self.refuse("hello must be the writer's name, a string".into()),
        };
        if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
            return self.refuse(format!(
                "writer name {name:?}: 1 to {MAX_NAME} octets of UTF-8, no control characters"
            ));
        }
        let writer = match self.writers.named(name) {
            Ok(w) => w,
            Err(e) => return self.refuse(format!("writer {name:?} refused: {e}")),
        };
        if !writer.claim() {
            return self.refuse(format!(
                "writer {name:?} is connected already on another connection"
            ));
        }
        let writer = Claim(writer);
        if let Err(e) = self
            .stream
            .set_read_timeout(Some(ACK_INTERVAL))
            .and_then(|()| self.stream.set_write_timeout(Some(WRITE_TIMEOUT)))
        {
            self.end = Some(End::WriteFailed(e));
            return;
        }
        let acked = writer.0.acked();
        tracing::info!(
            source = %self.sink.name,
            writer = name,
            acked,
            "{}: writer {name:?} said hello; lqd holds its lines up to {}",
            self.what,
            acked.map_or_else(|| "none".to_owned(), |s| format!("seq {s}"))
        );
        self.writer = Some(writer);
        self.hello_ack = acked;
        self.sent_ack = acked;
        self.last_ack = Instant::now();
        self.reply(&json!({ "writer": name, "ack": acked }));
    }

    /// `{"sync": true}`: answered once every line before it is journaled.
    fn sync(&mut self, number: u64, obj: &Map<String, Value>) {
        if obj.get("sync") != Some(&Value::Bool(true)) {
            return self.bad(number, None, &LineError("sync must be true".into()));
        }
        let (done, wait) = crossbeam_channel::bounded(1);
        if self.sink.handle.send_fed(Fed::Sync(done)).is_err() || wait.recv().is_err() {
            self.end = Some(End::FeedClosed);
            return;
        }
        match &self.writer {
            Some(w) => {
                let acked = w.0.acked();
                self.sent_ack = acked;
                self.last_ack = Instant::now();
                self.reply(&json!({ "ack": acked, "sync": true }));
            }
            None => self.reply(&json!({ "sync": true })),
        }
    }

    /// A change line of a named writer: it must carry a `seq` above the previous line's.
    fn numbered(&mut self, number: u64, obj: &Map<String, Value>, writer: Arc<Writer>) {
        let seq = match obj.get("seq") {
            None | Some(Value::Null) => {
                let e =
                    LineError("seq is missing: a writer that said hello numbers every line".into());
                return self.bad(number, None, &e);
            }
            Some(v) => match super::uint_value(v, "seq", u64::MAX) {
                Ok(s) => s,
                Err(e) => return self.bad(number, None, &e),
            },
        };
        if let Some(prev) = self.last_seq {
            if seq <= prev {
                let e = LineError(format!("seq {seq} is not above the previous line's {prev}"));
                return self.bad(number, Some(seq), &e);
            }
        } else if let Some(held) = self.hello_ack.filter(|h| seq <= *h) {
            tracing::info!(
                source = %self.sink.name,
                writer = writer.name(),
                "{}: resumes at seq {seq}, at or below seq {held} lqd holds: lines up to seq \
                 {held} are not applied again",
                self.what
            );
        }
        self.last_seq = Some(seq);
        let numbered = Numbered { writer, seq };
        match parse_change(obj) {
            Ok(mut p) => {
                p.unknown_fields.retain(|f| f != "seq");
                if !self.sink.parsed(&self.what, number, Ok(p), Some(numbered)) {
                    self.end = Some(End::FeedClosed);
                }
            }
            Err(e) => {
                // The line is taken (rejected): the writer's mark moves past it, in order.
                if self.sink.handle.send_fed(Fed::Rejected(numbered)).is_err() {
                    self.end = Some(End::FeedClosed);
                    return;
                }
                self.bad(number, Some(seq), &e);
            }
        }
    }

    /// A bad line: logged and skipped; a named writer is told.
    fn bad(&mut self, number: u64, seq: Option<u64>, e: &LineError) {
        self.sink.parsed(&self.what, number, Err(e.clone()), None);
        if self.writer.is_some() {
            self.reply(&json!({ "rejected": seq, "line": number, "error": e.to_string() }));
        }
    }

    /// Says why and ends the connection.
    fn refuse(&mut self, why: String) {
        self.reply(&json!({ "error": why }));
        if self.end.is_none() {
            self.end = Some(End::Refused(why));
        }
    }

    /// Tells a named writer its acknowledged line when it moved, at most every
    /// [`ACK_INTERVAL`].
    fn tick(&mut self) {
        let Some(acked) = self.writer.as_ref().and_then(|w| w.0.acked()) else {
            return;
        };
        if Some(acked) != self.sent_ack && self.last_ack.elapsed() >= ACK_INTERVAL {
            self.sent_ack = Some(acked);
            self.last_ack = Instant::now();
            self.reply(&json!({ "ack": acked }));
        }
    }

    fn reply(&mut self, message: &Value) {
        if self.end.is_some() {
            return;
        }
        let mut line = message.to_string();
        line.push('\n');
        let mut output = self.stream;
        if let Err(e) = output.write_all(line.as_bytes()) {
            self.end = Some(End::WriteFailed(e));
        }
    }
}
