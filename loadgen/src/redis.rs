//! Redis pub/sub as a fan-out baseline: the same changes published to one channel, delivered
//! by Redis to every subscriber; or, filtered, to one channel per key ([`channel`]), each with
//! its one subscriber.
//!
//! [`RedisServer`] runs Debian's `redis-server` (7.x) as a child process with its whole
//! configuration on the command line. The rest is a small RESP2 codec, as much as the two
//! sides of the baseline need: the subscriber's [`subscribe_command`] and [`RespDecoder`], the
//! publisher's [`publish_command`] and [`count_integer_replies`]. Both parsers are sans-IO:
//! the caller reads the socket and hands them bytes.
//!
//! RESP2 framing: every value starts with a type byte and ends its header with CRLF:
//! `+simple\r\n`, `-error\r\n`, `:integer\r\n`, `$len\r\n<len bytes>\r\n` (binary-safe;
//! `$-1` is null) and `*count\r\n` followed by `count` values (`*-1` is null). A subscriber
//! receives pushes as three-element arrays of bulk strings and an integer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::Range;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The channel every publisher publishes to and every subscriber subscribes to (unfiltered);
/// filtered, the prefix of each key's channel.
pub(crate) const CHANNEL: &[u8] = b"lqd-fanout";

/// `maxclients` of the server: 20,000 subscribers plus publishers and control connections.
/// Redis wants 32 file descriptors more than this (see [`RedisServer::max_clients`]).
pub(crate) const MAX_CLIENTS: u32 = 20_100;

/// How long `redis-server` may take to answer its first PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest bulk string accepted: Redis's own `proto-max-bulk-len` default.
const MAX_BULK: usize = 512 * 1024 * 1024;

/// The most elements accepted in one array.
const MAX_ARRAY: usize = 1 << 20;

/// The deepest nesting of arrays accepted (pushes are one level deep).
const MAX_DEPTH: usize = 8;

/// The longest header or simple-string line accepted, CRLF excluded.
const MAX_LINE: usize = 64 * 1024;

/// A running `redis-server`, killed and its directory removed on drop.
pub(crate) struct RedisServer {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
    version: String,
    max_clients: u32,
}

impl RedisServer {
    /// Starts `redis-server` on a free port of `[::1]`, without persistence, with
    /// [`MAX_CLIENTS`] and no output-buffer limit for pub/sub clients, in a new temporary
    /// working directory, and waits until it answers PING.
    ///
    /// Redis raises its own open-file limit (RLIMIT_NOFILE, soft and hard) to
    /// `maxclients + 32` when it may; when it may not, it lowers `maxclients` to fit and says
    /// so in its log. [`max_clients`](Self::max_clients) reports the value in force, and
    /// [`raise_nofile`] in loadgen before the start lets it inherit a high enough limit.
    pub(crate) fn start() -> Result<Self, String> {
        let version = server_version()?;
        let (addr, dir) = crate::process::fresh_server("redis")?;
        let log_path = dir.join("redis.log");
        let log =
            std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let spawned = Command::new("redis-server")
            .args(["--port", &addr.port().to_string(), "--bind", "::1"])
            .args(["--daemonize", "no", "--databases", "1"])
            // No persistence: no RDB snapshots, no append-only file.
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(["--maxclients", &MAX_CLIENTS.to_string()])
            // Redis's default for pub/sub clients (32 MiB hard, 8 MiB for 60 s) disconnects a
            // subscriber that falls behind. lqd never drops an Active requestor for being slow
            // until its output has not moved for ACTIVE_LQ_SEND_TIMEOUT (120 s), and then only
            // a stalled one: with no limit here, both systems keep every slow reader and pay
            // for it in memory and latency, which is the comparison we want.
            .args(["--client-output-buffer-limit", "pubsub 0 0 0"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(format!("cannot run redis-server: {e}"));
            }
        };
        let mut server = Self {
            child,
            addr,
            dir,
            version,
            max_clients: 0,
        };
        let mut control = server.wait_ready()?;
        // The free port was released before redis-server bound it: make sure the server that
        // answered is ours.
        let info = request(&mut control, &[b"INFO", b"server"])
            .map_err(|e| format!("redis-server: INFO server: {e}"))?;
        let answering = bulk_strings(&info)
            .first()
            .and_then(|text| {
                String::from_utf8_lossy(text)
                    .lines()
                    .find_map(|l| l.strip_prefix("process_id:"))
                    .and_then(|pid| pid.trim().parse::<u32>().ok())
            })
            .ok_or_else(|| "redis-server: INFO server: no process_id".to_owned())?;
        if answering != server.pid() {
            return Err(format!(
                "{addr} is answered by another redis-server (pid {answering}, ours is {})",
                server.pid()
            ));
        }
        let reply = request(&mut control, &[b"CONFIG", b"GET", b"maxclients"])
            .map_err(|e| format!("redis-server: CONFIG GET maxclients: {e}"))?;
        server.max_clients = bulk_strings(&reply)
            .get(1)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                "redis-server: CONFIG GET maxclients: no number in the reply".to_owned()
            })?;
        if server.max_clients < MAX_CLIENTS {
            let hard = rlimit::Resource::NOFILE
                .get()
                .map_or_else(|e| e.to_string(), |(_, hard)| hard.to_string());
            eprintln!(
                "loadgen: redis-server lowered maxclients from {MAX_CLIENTS} to {}: it could not \
                 raise its open-file limit (RLIMIT_NOFILE) to {} (the hard limit is {hard}; \
                 raising it needs CAP_SYS_RESOURCE)",
                server.max_clients,
                MAX_CLIENTS + 32,
            );
        }
        Ok(server)
    }

    /// Connects and PINGs until the server answers PONG; the connection, for more requests.
    fn wait_ready(&mut self) -> Result<TcpStream, String> {
        let started = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => {
                    return Err(format!(
                        "redis-server exited ({status}); log:\n{}",
                        self.log_tail()
                    ));
                }
                Err(e) => return Err(format!("redis-server: {e}")),
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "redis-server did not answer PING on {} within {START_TIMEOUT:?}; log:\n{}",
                    self.addr,
                    self.log_tail()
                ));
            }
            if let Ok(mut stream) = TcpStream::connect_timeout(&self.addr, START_TIMEOUT) {
                if let Ok(reply) = request(&mut stream, &[b"PING"]) {
                    if reply == b"+PONG\r\n" {
                        return Ok(stream);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where it listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its version, as `redis-server --version` prints it (`7.0.15`).
    pub(crate) fn version(&self) -> String {
        self.version.clone()
    }

    /// Its `maxclients` in force: [`MAX_CLIENTS`], or less when Redis could not raise its
    /// open-file limit to `MAX_CLIENTS + 32`.
    pub(crate) fn max_clients(&self) -> u32 {
        self.max_clients
    }

    /// The last lines of its log (stdout and stderr), for error messages.
    pub(crate) fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines
            .get(lines.len().saturating_sub(20)..)
            .unwrap_or_default()
            .join("\n")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `redis-server --version`, reduced to the version number.
fn server_version() -> Result<String, String> {
    let out = match Command::new("redis-server").arg("--version").output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(
                "redis-server not found on PATH: install Debian's redis-server \
                        (`apt-get install -y redis-server`, as .ci/setup does)"
                    .to_owned(),
            );
        }
        Err(e) => return Err(format!("cannot run redis-server --version: {e}")),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    // "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=…"
    Ok(text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .unwrap_or_else(|| text.trim())
        .to_owned())
}

/// Raises this process's open-file limit (RLIMIT_NOFILE) to at least `want`, raising the hard
/// limit too when that is allowed (root with CAP_SYS_RESOURCE, up to `fs.nr_open`). Children
/// started afterwards (`redis-server`, lqd) inherit it. Returns the soft limit in force
/// afterwards, which is below `want` when the kernel refused.
pub(crate) fn raise_nofile(want: u64) -> Result<u64, String> {
    let (soft, hard) = rlimit::Resource::NOFILE
        .get()
        .map_err(|e| format!("cannot read the open-file limit (RLIMIT_NOFILE): {e}"))?;
    if soft >= want {
        return Ok(soft);
    }
    if hard >= want || rlimit::Resource::NOFILE.set(want, want).is_err() {
        let soft = want.min(hard);
        rlimit::Resource::NOFILE
            .set(soft, hard)
            .map_err(|e| format!("cannot set the open-file limit to {soft}: {e}"))?;
        return Ok(soft);
    }
    Ok(want)
}

/// Sends one command (a RESP array of bulk strings) and reads one whole reply, raw, with a
/// timeout: for control requests only, not for the measured traffic.
fn request(stream: &mut TcpStream, args: &[&[u8]]) -> Result<Vec<u8>, String> {
    let mut cmd = Vec::new();
    command(args, &mut cmd);
    stream
        .set_read_timeout(Some(START_TIMEOUT))
        .and_then(|()| stream.write_all(&cmd))
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match skip(&buf, 0, 0) {
            Ok(end) => {
                buf.truncate(end);
                return Ok(buf);
            }
            Err(Stop::Bad(m)) => return Err(m.describe()),
            Err(Stop::Need(_)) => {}
        }
        let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before a whole reply".to_owned());
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

/// The bulk strings of a reply: the reply itself when it is one (`INFO`), or those of an
/// array (`CONFIG GET` → name, value); empty for anything else.
fn bulk_strings(frame: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    if let Ok((Head::Bulk(r), _)) = head(frame, 0) {
        out.extend(frame.get(r));
    } else if let Ok((Head::Array(n), mut at)) = head(frame, 0) {
        for _ in 0..n {
            match elem(frame, at, 1) {
                Ok((Elem::Bulk(r), next)) => {
                    out.extend(frame.get(r));
                    at = next;
                }
                Ok((_, next)) => at = next,
                Err(_) => break,
            }
        }
    }
    out
}

/// The channel of key `key` (`lqd-fanout:KEY`), or [`CHANNEL`] for every change.
pub(crate) fn channel(key: Option<u32>) -> Vec<u8> {
    let mut out = CHANNEL.to_vec();
    if let Some(k) = key {
        out.push(b':');
        push_decimal(&mut out, k as usize);
    }
    out
}

/// The RESP array `SUBSCRIBE <channel>`, to send once on each subscriber connection.
pub(crate) fn subscribe_command(channel: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    command(&[b"SUBSCRIBE", channel], &mut out);
    out
}

/// Appends the RESP array `PUBLISH <channel> <payload>` to `out`; the payload is a bulk
/// string, so any bytes (CR and LF included) go through unchanged.
pub(crate) fn publish_command(channel: &[u8], payload: &[u8], out: &mut Vec<u8>) {
    command(&[b"PUBLISH", channel, payload], out);
}

/// Appends `args` as a RESP array of bulk strings.
fn command(args: &[&[u8]], out: &mut Vec<u8>) {
    out.push(b'*');
    push_decimal(out, args.len());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        push_decimal(out, arg.len());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends `n` in decimal ASCII, without allocating.
fn push_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(i..).unwrap_or_default());
}

/// What a subscriber receives, one push at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push<'a> {
    /// `subscribe <channel> <count>`: the subscription is in place; `count` is how many
    /// channels this connection is now subscribed to.
    Subscribed(u64),
    /// `message <channel> <payload>`: a published payload, borrowed from the decoder's buffer.
    Message(&'a [u8]),
    /// Any other well-formed RESP2 value (another push kind, a reply, an error reply).
    Other,
}

/// An incremental RESP2 decoder for a subscriber connection: [`feed`](Self::feed) it what the
/// socket gave, then call [`next`](Self::next) until it returns `Ok(None)`.
///
/// Frames may be split at any byte and many may arrive in one read. The buffer is compacted
/// on `feed` only once the consumed part is at least as long as the rest, so each byte is
/// moved at most once on average and the buffer does not grow past about twice the largest
/// backlog; no allocation happens per message. After an error the decoder stays at the bad
/// frame and keeps returning the error.
#[derive(Debug, Default)]
pub(crate) struct RespDecoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already returned.
    start: usize,
    /// Bytes from `start` needed before the pending frame can be complete; 0 when unknown.
    /// Spares re-parsing a large frame's headers on every small read.
    need: usize,
}

impl RespDecoder {
    /// An empty decoder.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the connection.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        let pending = self.buf.len() - self.start;
        if pending == 0 {
            self.buf.clear();
            self.start = 0;
        } else if self.start >= pending {
            self.buf.copy_within(self.start.., 0);
            self.buf.truncate(pending);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes fed but not yet returned as a push.
    pub(crate) fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete push, `Ok(None)` when more bytes are needed, or an error for bytes
    /// that are not RESP2.
    pub(crate) fn next(&mut self) -> Result<Option<Push<'_>>, String> {
        if self.pending() < self.need {
            return Ok(None);
        }
        let (push, end) = match frame(&self.buf, self.start) {
            Ok(f) => f,
            Err(Stop::Need(total)) => {
                self.need = total.saturating_sub(self.start);
                return Ok(None);
            }
            Err(Stop::Bad(m)) => {
                return Err(format!(
                    "malformed RESP from redis at byte {} of the pending input: {}",
                    m.at.saturating_sub(self.start),
                    m.reason
                ));
            }
        };
        self.start = end;
        self.need = 0;
        Ok(Some(match push {
            Frame::Subscribed(n) => Push::Subscribed(n),
            Frame::Message(r) => Push::Message(self.buf.get(r).unwrap_or_default()),
            Frame::Other => Push::Other,
        }))
    }
}

/// Counts the `:N\r\n` replies at the start of `buf`, as a publisher receives them for
/// pipelined PUBLISHes (N is how many subscribers got the message).
///
/// Returns (whole replies, bytes they take, sum of their N); a partial reply at the end is
/// left for the next call. An error reply (`-ERR …`) or anything else is an error.
pub(crate) fn count_integer_replies(buf: &[u8]) -> Result<(usize, usize, u64), String> {
    let mut replies = 0;
    let mut at = 0;
    let mut receivers = 0u64;
    while at < buf.len() {
        match head(buf, at) {
            Ok((Head::Int(n), next)) => {
                let n = u64::try_from(n).map_err(|_| {
                    format!("redis replied to PUBLISH with a negative count {n} (reply {replies})")
                })?;
                receivers = receivers.saturating_add(n);
                replies += 1;
                at = next;
            }
            Ok((Head::Error(r), _)) => {
                return Err(format!(
                    "redis replied to PUBLISH with an error: {}",
                    String::from_utf8_lossy(buf.get(r).unwrap_or_default())
                ));
            }
            Ok(_) => {
                return Err(format!(
                    "redis replied to PUBLISH with something other than an integer at byte {at}"
                ));
            }
            Err(Stop::Need(_)) => break,
            Err(Stop::Bad(m)) => return Err(m.describe()),
        }
    }
    Ok((replies, at, receivers))
}

/// Why parsing stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The value is incomplete: the buffer must reach this length (an index) at least.
    Need(usize),
    /// The bytes are not RESP2.
    Bad(Malformed),
}

/// Where and why the input is not RESP2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Malformed {
    at: usize,
    reason: &'static str,
}

impl Malformed {
    fn describe(self) -> String {
        format!(
            "malformed RESP from redis at byte {}: {}",
            self.at, self.reason
        )
    }
}

fn bad(at: usize, reason: &'static str) -> Stop {
    Stop::Bad(Malformed { at, reason })
}

/// A value's header, and for strings where their bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Head {
    Simple(Range<usize>),
    Error(Range<usize>),
    Int(i64),
    Bulk(Range<usize>),
    /// `$-1` or `*-1`.
    Null,
    /// `*n`: `n` values follow.
    Array(usize),
}

/// One element of a push array, as far as classifying the push needs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Elem {
    Bulk(Range<usize>),
    Int(i64),
    Other,
}

/// A whole push frame; ranges index the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Frame {
    Subscribed(u64),
    Message(Range<usize>),
    Other,
}

/// The CRLF-terminated line starting at `at`: its content and the index after the LF.
fn line(buf: &[u8], at: usize) -> Result<(Range<usize>, usize), Stop> {
    let rest = buf.get(at..).unwrap_or_default();
    let window = rest.get(..MAX_LINE + 1).unwrap_or(rest);
    match window.iter().position(|&b| b == b'\r') {
        Some(i) => match rest.get(i + 1) {
            Some(b'\n') => Ok((at..at + i, at + i + 2)),
            Some(_) => Err(bad(at + i, "CR not followed by LF")),
            None => Err(Stop::Need(at + i + 2)),
        },
        None if window.len() > MAX_LINE => Err(bad(at, "line longer than 64 KiB")),
        None => Err(Stop::Need(buf.len() + 1)),
    }
}

/// A RESP integer: an optional minus and decimal digits, within `i64`.
fn integer(digits: &[u8]) -> Option<i64> {
    let (negative, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = i64::from(d - b'0');
        n = n.checked_mul(10)?;
        n = if negative {
            n.checked_sub(d)?
        } else {
            n.checked_add(d)?
        };
    }
    Some(n)
}

/// The header of the value at `at` (a bulk string's bytes included), and the index after it.
fn head(buf: &[u8], at: usize) -> Result<(Head, usize), Stop> {
    let Some(&kind) = buf.get(at) else {
        return Err(Stop::Need(at + 1));
    };
    let (text, next) = line(buf, at + 1)?;
    let text_bytes = buf.get(text.clone()).unwrap_or_default();
    let length = |what: &'static str, max: usize| -> Result<Option<usize>, Stop> {
        match integer(text_bytes) {
            Some(-1) => Ok(None),
            Some(n) if n < 0 => Err(bad(at + 1, what)),
            Some(n) => match usize::try_from(n) {
                Ok(n) if n <= max => Ok(Some(n)),
                _ => Err(bad(at + 1, what)),
            },
            None => Err(bad(at + 1, what)),
        }
    };
    match kind {
        b'+' => Ok((Head::Simple(text), next)),
        b'-' => Ok((Head::Error(text), next)),
        b':' => integer(text_bytes)
            .map(|n| (Head::Int(n), next))
            .ok_or_else(|| bad(at + 1, "bad integer")),
        b'$' => {
            let Some(len) = length("bad bulk string length", MAX_BULK)? else {
                return Ok((Head::Null, next));
            };
            let end = next + len;
            match buf.get(end..end + 2) {
                Some(b"\r\n") => Ok((Head::Bulk(next..end), end + 2)),
                Some(_) => Err(bad(end, "bulk string not followed by CRLF")),
                None => Err(Stop::Need(end + 2)),
            }
        }
        b'*' => match length("bad array length", MAX_ARRAY)? {
            Some(n) => Ok((Head::Array(n), next)),
            None => Ok((Head::Null, next)),
        },
        _ => Err(bad(at, "unknown RESP2 type byte")),
    }
}

/// The whole value at `at` (arrays with all their elements): the index after it.
fn skip(buf: &[u8], at: usize, depth: usize) -> Result<usize, Stop> {
    let (h, mut next) = head(buf, at)?;
    if let Head::Array(n) = h {
        if depth >= MAX_DEPTH {
            return Err(bad(at, "arrays nested too deep"));
        }
        for _ in 0..n {
            next = skip(buf, next, depth + 1)?;
        }
    }
    Ok(next)
}

/// The element at `at` of an array at nesting `depth`, and the index after it.
fn elem(buf: &[u8], at: usize, depth: usize) -> Result<(Elem, usize), Stop> {
    let (h, next) = head(buf, at)?;
    Ok(match h {
        Head::Bulk(r) => (Elem::Bulk(r), next),
        Head::Int(n) => (Elem::Int(n), next),
        Head::Array(_) => (Elem::Other, skip(buf, at, depth)?),
        Head::Simple(_) | Head::Error(_) | Head::Null => (Elem::Other, next),
    })
}

/// The push frame at `at`, and the index after it.
fn frame(buf: &[u8], at: usize) -> Result<(Frame, usize), Stop> {
    let (h, mut next) = head(buf, at)?;
    let Head::Array(3) = h else {
        return Ok((Frame::Other, skip(buf, at, 0)?));
    };
    let mut elems = [Elem::Other, Elem::Other, Elem::Other];
    for e in &mut elems {
        (*e, next) = elem(buf, next, 1)?;
    }
    let bytes = |r: &Range<usize>| buf.get(r.clone()).unwrap_or_default();
    let push = match elems {
        [Elem::Bulk(kind), Elem::Bulk(_), Elem::Bulk(payload)] if bytes(&kind) == b"message" => {
            Frame::Message(payload)
        }
        [Elem::Bulk(kind), Elem::Bulk(_), Elem::Int(n)] if bytes(&kind) == b"subscribe" => {
            u64::try_from(n).map_or(Frame::Other, Frame::Subscribed)
        }
        _ => Frame::Other,
    };
    Ok((push, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        command(&[b"message", CHANNEL, payload], &mut out);
        out
    }

    const SUBSCRIBED: &[u8] = b"*3\r\n$9\r\nsubscribe\r\n$10\r\nlqd-fanout\r\n:1\r\n";

    /// Every push in `decoder` until it needs more, owned.
    fn drain(decoder: &mut RespDecoder) -> Vec<Result<Option<Vec<u8>>, u64>> {
        let mut out = Vec::new();
        loop {
            match decoder.next().expect("well-formed") {
                None => return out,
                Some(Push::Message(p)) => out.push(Ok(Some(p.to_vec()))),
                Some(Push::Subscribed(n)) => out.push(Err(n)),
                Some(Push::Other) => out.push(Ok(None)),
            }
        }
    }

    /// Payloads with CR, LF, CRLF, RESP-looking text, empty, and every byte value.
    fn binary_payloads() -> Vec<Vec<u8>> {
        let mut all = vec![
            b"\r\n".to_vec(),
            Vec::new(),
            b"*3\r\n$7\r\nmessage\r\n".to_vec(),
            b"a\rb\nc\r\n\r\nd".to_vec(),
            (0..=255u8).collect(),
        ];
        all.extend((0..20u8).map(|i| vec![i; usize::from(i) * 37]));
        all
    }

    #[test]
    fn commands_are_resp_arrays_of_bulk_strings() {
        assert_eq!(
            subscribe_command(CHANNEL),
            b"*2\r\n$9\r\nSUBSCRIBE\r\n$10\r\nlqd-fanout\r\n"
        );
        assert_eq!(channel(None), CHANNEL);
        assert_eq!(channel(Some(0)), b"lqd-fanout:0");
        assert_eq!(channel(Some(9_999)), b"lqd-fanout:9999");
        assert_eq!(
            subscribe_command(&channel(Some(12))),
            b"*2\r\n$9\r\nSUBSCRIBE\r\n$13\r\nlqd-fanout:12\r\n"
        );
        let mut out = b"x".to_vec();
        publish_command(CHANNEL, b"a\r\nb", &mut out);
        assert_eq!(
            out,
            b"x*3\r\n$7\r\nPUBLISH\r\n$10\r\nlqd-fanout\r\n$4\r\na\r\nb\r\n"
        );
        let mut big = Vec::new();
        publish_command(CHANNEL, &[7u8; 1234567], &mut big);
        assert!(big.starts_with(b"*3\r\n$7\r\nPUBLISH\r\n$10\r\nlqd-fanout\r\n$1234567\r\n"));
        assert_eq!(big.len(), 34 + 10 + 1234567 + 2);
    }

    #[test]
    fn subscribed_and_message() {
        let mut d = RespDecoder::new();
        d.feed(SUBSCRIBED);
        d.feed(&message(b"hello"));
        assert_eq!(d.next(), Ok(Some(Push::Subscribed(1))));
        assert_eq!(d.next(), Ok(Some(Push::Message(b"hello"))));
        assert_eq!(d.next(), Ok(None));
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn split_at_every_byte_boundary() {
        let mut stream = SUBSCRIBED.to_vec();
        for p in binary_payloads() {
            stream.extend(message(&p));
        }
        let mut want: Vec<Result<Option<Vec<u8>>, u64>> = vec![Err(1)];
        want.extend(binary_payloads().into_iter().map(|p| Ok(Some(p))));
        for cut in 0..=stream.len() {
            let mut d = RespDecoder::new();
            d.feed(&stream[..cut]);
            let mut got = drain(&mut d);
            d.feed(&stream[cut..]);
            got.extend(drain(&mut d));
            assert_eq!(got, want, "cut at {cut}");
        }
        // And one byte at a time.
        let mut d = RespDecoder::new();
        let mut got = Vec::new();
        for b in &stream {
            d.feed(std::slice::from_ref(b));
            got.extend(drain(&mut d));
        }
        assert_eq!(got, want);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn many_frames_per_feed_and_bounded_buffer() {
        let one = message(b"0123456789abcdef\r\n");
        // Feeds of 3.5 frames from an endless stream of them: every other feed leaves half a
        // frame behind.
        let len = one.len() * 7 / 2;
        let mut stream = one.iter().copied().cycle();
        let mut d = RespDecoder::new();
        let mut received = 0;
        for _ in 0..10_000 {
            let chunk: Vec<u8> = stream.by_ref().take(len).collect();
            d.feed(&chunk);
            while let Some(p) = d.next().expect("well-formed") {
                assert_eq!(p, Push::Message(b"0123456789abcdef\r\n"));
                received += 1;
            }
            assert!(d.buf.len() <= 2 * one.len() + len, "{}", d.buf.len());
        }
        assert_eq!(received, 10_000 * len / one.len());
    }

    #[test]
    fn other_values() {
        let mut d = RespDecoder::new();
        d.feed(b"+OK\r\n-ERR wrong\r\n:5\r\n$-1\r\n*-1\r\n*0\r\n");
        d.feed(b"*3\r\n$11\r\nunsubscribe\r\n$10\r\nlqd-fanout\r\n:0\r\n");
        d.feed(b"*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$1\r\nc\r\n$1\r\np\r\n");
        d.feed(b"*3\r\n$7\r\nmessage\r\n*1\r\n:1\r\n$1\r\np\r\n");
        d.feed(b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:-1\r\n");
        d.feed(b"*2\r\n*2\r\n:1\r\n:2\r\n$0\r\n\r\n");
        let got = drain(&mut d);
        assert_eq!(got, vec![Ok(None); 11]);
    }

    #[test]
    fn malformed_input_is_an_error() {
        let cases: &[&[u8]] = &[
            b"?x\r\n",
            b"%1\r\n",
            b":12a\r\n",
            b":\r\n",
            b":99999999999999999999\r\n",
            b"$-2\r\n",
            b"$3\r\nabcd\r\n",
            b"$x\r\n",
            b"*-5\r\n",
            b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n!\r\n",
            b"+OK\rX",
            b"$600000000\r\n",
        ];
        for &case in cases {
            let mut d = RespDecoder::new();
            d.feed(case);
            let e = d.next().expect_err(&String::from_utf8_lossy(case));
            assert!(e.starts_with("malformed RESP"), "{e}");
            // It stays at the bad frame.
            assert!(d.next().is_err());
        }
        let mut d = RespDecoder::new();
        d.feed(&[b'+'; MAX_LINE + 2]);
        assert!(d.next().is_err());
        let mut deep = Vec::new();
        for _ in 0..=MAX_DEPTH {
            deep.extend_from_slice(b"*1\r\n");
        }
        deep.extend_from_slice(b":1\r\n");
        let mut d = RespDecoder::new();
        d.feed(&deep);
        assert!(d.next().is_err());
        // A good frame before a bad one is returned first.
        let mut d = RespDecoder::new();
        d.feed(SUBSCRIBED);
        d.feed(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\npX\r\n");
        assert_eq!(d.next(), Ok(Some(Push::Subscribed(1))));
        assert!(d.next().is_err());
    }

    #[test]
    fn integer_replies() {
        assert_eq!(count_integer_replies(b""), Ok((0, 0, 0)));
        assert_eq!(count_integer_replies(b":3\r\n:0\r\n:12"), Ok((2, 8, 3)));
        assert_eq!(count_integer_replies(b":3\r\n:0\r\n:12\r"), Ok((2, 8, 3)));
        assert_eq!(
            count_integer_replies(b":3\r\n:20000\r\n"),
            Ok((2, 12, 20003))
        );
        let e = count_integer_replies(b":1\r\n-ERR max clients\r\n").expect_err("error reply");
        assert!(e.contains("ERR max clients"), "{e}");
        assert!(count_integer_replies(b":-1\r\n").is_err());
        assert!(count_integer_replies(b"+OK\r\n").is_err());
        assert!(count_integer_replies(b":1x\r\n").is_err());
    }

    #[test]
    fn raise_nofile_up_to_the_hard_limit() {
        let (soft, hard) = rlimit::Resource::NOFILE.get().expect("RLIMIT_NOFILE");
        assert_eq!(raise_nofile(soft), Ok(soft));
        assert_eq!(raise_nofile(hard), Ok(hard));
        // Above the hard limit: granted only with CAP_SYS_RESOURCE, else the hard limit.
        let above = raise_nofile(hard + 16).expect("no error");
        assert!(above == hard || above == hard + 16, "{above}");
    }

    #[test]
    fn integers() {
        assert_eq!(integer(b"0"), Some(0));
        assert_eq!(integer(b"-1"), Some(-1));
        assert_eq!(integer(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(integer(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(integer(b"9223372036854775808"), None);
        assert_eq!(integer(b"-"), None);
        assert_eq!(integer(b"+1"), None);
        assert_eq!(integer(b""), None);
    }

    /// Reads from `stream` into `decoder` until `want` messages arrived, and returns them.
    fn receive(stream: &mut TcpStream, decoder: &mut RespDecoder, want: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = [0u8; 1500];
        while got.len() < want {
            while let Some(push) = decoder.next().expect("well-formed pushes") {
                match push {
                    Push::Message(p) => got.push(p.to_vec()),
                    Push::Subscribed(n) => panic!("a second subscribe confirmation ({n})"),
                    Push::Other => panic!("an unexpected push"),
                }
            }
            if got.len() == want {
                break;
            }
            let n = stream.read(&mut buf).expect("subscriber read");
            assert!(
                n > 0,
                "redis closed a subscriber after {} messages",
                got.len()
            );
            decoder.feed(&buf[..n]);
        }
        got
    }

    #[test]
    fn real_redis_fans_out_binary_payloads_in_order() {
        let server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
        assert!(server.version().starts_with('7'), "{}", server.version());
        // Less than MAX_CLIENTS where the hard RLIMIT_NOFILE is lower and cannot be raised.
        assert!(server.max_clients() >= 1000, "{}", server.log_tail());
        assert!(server.pid() > 0);
        let connect = || {
            let s = TcpStream::connect(server.addr()).expect("connect to redis-server");
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            s
        };
        let mut control = connect();
        for (name, value) in [
            (&b"client-output-buffer-limit"[..], &b"pubsub 0 0 0"[..]),
            (b"save", b""),
            (b"appendonly", b"no"),
        ] {
            let reply = request(&mut control, &[b"CONFIG", b"GET", name]).expect("CONFIG GET");
            let strings = bulk_strings(&reply);
            let got = strings.get(1).expect("a value");
            assert!(
                got.windows(value.len().max(1)).any(|w| w == value) || got == &value,
                "{}: {}",
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(got)
            );
        }

        let mut subscribers: Vec<(TcpStream, RespDecoder)> = (0..3)
            .map(|_| {
                let mut s = connect();
                s.write_all(&subscribe_command(CHANNEL)).expect("SUBSCRIBE");
                let mut d = RespDecoder::new();
                let mut buf = [0u8; 256];
                loop {
                    if let Some(push) = d.next().expect("well-formed") {
                        assert_eq!(push, Push::Subscribed(1));
                        break;
                    }
                    let n = s.read(&mut buf).expect("subscribe confirmation");
                    assert!(n > 0, "closed before the subscribe confirmation");
                    d.feed(&buf[..n]);
                }
                (s, d)
            })
            .collect();

        let mut payloads = binary_payloads();
        payloads.extend((0..100u32).map(|i| {
            let mut p = i.to_be_bytes().to_vec();
            p.extend(b"\r\n$3\r\n");
            p.extend((0..i * 41).map(|j| (j * 7 + i) as u8));
            p
        }));
        payloads.truncate(100);
        let mut publisher = connect();
        let mut pipeline = Vec::new();
        for p in &payloads {
            publish_command(CHANNEL, p, &mut pipeline);
        }
        publisher.write_all(&pipeline).expect("PUBLISH");
        let (mut replies, mut receivers) = (0, 0);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 64];
        while replies < payloads.len() {
            let n = publisher.read(&mut chunk).expect("PUBLISH replies");
            assert!(n > 0, "closed after {replies} PUBLISH replies");
            buf.extend_from_slice(&chunk[..n]);
            let (r, used, sum) = count_integer_replies(&buf).expect("integer replies");
            buf.drain(..used);
            replies += r;
            receivers += sum;
        }
        assert_eq!((replies, receivers), (100, 300));
        assert!(buf.is_empty());

        for (stream, decoder) in &mut subscribers {
            assert_eq!(receive(stream, decoder, payloads.len()), payloads);
            assert_eq!(decoder.pending(), 0);
        }
    }
}
