//! NATS core pub/sub as a fan-out baseline, beside Redis: the same changes published to one
//! subject, delivered by nats-server to every subscriber; or, filtered, to one subject per key
//! ([`subject`]), each with its one subscriber.
//!
//! [`NatsServer`] runs Debian's `nats-server` (2.9) as a child process with a configuration
//! file in a temporary directory. The rest is a small hand-written client of the NATS text
//! protocol, as much as the two sides of the baseline need: the subscriber's
//! [`subscribe_commands`] and [`NatsDecoder`], the publisher's [`publish_command`]. The
//! decoder is sans-IO, like the Redis one, so that the receivers drive it from their own mio
//! loop: the `nats` crate (or `async-nats`) brings its own threads or a tokio runtime and its
//! own socket handling, which would measure a client library beside the server instead of
//! the server through the same receivers as lqd, raw and Redis.
//!
//! The protocol (<https://docs.nats.io/reference/reference-protocols/nats-protocol>): lines
//! end with CRLF, operation names are case-insensitive, fields are separated by spaces or
//! tabs. The server sends `INFO {json}` first, then `MSG <subject> <sid> [reply-to] <#bytes>`
//! followed by the payload (binary-safe) and CRLF, `PING`, `PONG`, `+OK` and `-ERR 'text'`.
//! A client sends `CONNECT {json}`, `SUB <subject> <sid>`, `PUB <subject> <#bytes>` and its
//! payload, `PING` and `PONG`. A PING is answered after everything sent before it has been
//! processed, so the PONG after a SUB says the subscription is in place, and the PONG after
//! the last PUB says nats-server has taken every message.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The subject every publisher publishes to and every subscriber subscribes to (unfiltered);
/// filtered, the first token of each key's subject.
pub(crate) const SUBJECT: &[u8] = b"lqd-fanout";

/// How long `nats-server` may take to answer its first PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest payload accepted: nats-server's own `max_payload` ceiling (64 MiB).
const MAX_PAYLOAD: usize = 64 * 1024 * 1024;

/// The longest operation line accepted, CRLF excluded (INFO is the longest: about 1 KiB).
const MAX_LINE: usize = 64 * 1024;

/// The CONNECT of every loadgen connection: no +OK per operation (`verbose`), no echo of a
/// connection's own messages, no headers (so no HMSG).
const CONNECT: &[u8] = b"CONNECT {\"verbose\":false,\"pedantic\":false,\"tls_required\":false,\
\"name\":\"loadgen\",\"lang\":\"rust\",\"version\":\"0.1.0\",\"protocol\":0,\"echo\":false,\
\"headers\":false}\r\n";

/// A running `nats-server`, killed and its directory removed on drop.
pub(crate) struct NatsServer {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
    version: String,
}

impl NatsServer {
    /// Starts `nats-server` on a free port of `[::1]` with a configuration of its own in a new
    /// temporary directory, and waits until it answers PING; checks that the server that
    /// answers is this one (by its `server_name`).
    ///
    /// The configuration keeps every subscriber, as lqd and Redis (`pubsub 0 0 0`) do: a
    /// subscriber's pending output may grow to 2 GiB (`max_pending`; the default, 64 MiB,
    /// disconnects a slow consumer) and a write may take 120 s (`write_deadline`, lqd's
    /// ACTIVE_LQ_SEND_TIMEOUT; the default is 10 s). nats-server's own PINGs come once an
    /// hour (`ping_interval`), as the receivers do not answer them.
    pub(crate) fn start() -> Result<Self, String> {
        let version = server_version()?;
        let (addr, dir) = crate::process::fresh_server("nats")?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("loadgen-{}-{nanos}", std::process::id());
        let config = dir.join("nats.conf");
        let text = format!(
            "host: \"::1\"\nport: {}\nserver_name: \"{name}\"\nmax_connections: 65536\n\
             max_pending: 2GB\nwrite_deadline: \"120s\"\nping_interval: \"1h\"\n",
            addr.port()
        );
        let started = std::fs::write(&config, text)
            .map_err(|e| format!("{}: {e}", config.display()))
            .and_then(|()| {
                let log_path = dir.join("nats.log");
                let log = std::fs::File::create(&log_path)
                    .map_err(|e| format!("{}: {e}", log_path.display()))?;
                let log_err = log
                    .try_clone()
                    .map_err(|e| format!("{}: {e}", log_path.display()))?;
                Command::new("nats-server")
                    .arg("-c")
                    .arg(&config)
                    .stdin(Stdio::null())
                    .stdout(Stdio::from(log))
                    .stderr(Stdio::from(log_err))
                    .spawn()
                    .map_err(|e| format!("cannot run nats-server: {e}"))
            });
        let child = match started {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let mut server = Self {
            child,
            addr,
            dir,
            version,
        };
        let info = server.wait_ready()?;
        let answering = serde_json::from_slice::<serde_json::Value>(&info)
            .ok()
            .and_then(|v| v.get("server_name")?.as_str().map(str::to_owned))
            .ok_or_else(|| "nats-server: INFO without a server_name".to_owned())?;
        if answering != name {
            return Err(format!(
                "{addr} is answered by another nats-server ({answering}, ours is {name})"
            ));
        }
        Ok(server)
    }

    /// Connects and PINGs until the server answers PONG; the INFO it sent, as JSON.
    fn wait_ready(&mut self) -> Result<Vec<u8>, String> {
        let started = Instant::now();
        loop {
            self.check_alive()?;
            if started.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "nats-server did not answer PING on {} within {START_TIMEOUT:?}; log:\n{}",
                    self.addr,
                    self.log_tail()
                ));
            }
            if let Ok(mut stream) = TcpStream::connect_timeout(&self.addr, START_TIMEOUT) {
                if let Ok(info) = handshake(&mut stream) {
                    return Ok(info);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// An error, with its log, when the server has exited.
    pub(crate) fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "nats-server exited ({status}); log:\n{}",
                self.log_tail()
            )),
            Err(e) => Err(format!("nats-server: {e}")),
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

    /// Its version, as `nats-server --version` prints it (`2.9.10`).
    pub(crate) fn version(&self) -> String {
        self.version.clone()
    }

    /// The last lines of its log, for error messages.
    pub(crate) fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("nats.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines
            .get(lines.len().saturating_sub(20)..)
            .unwrap_or_default()
            .join("\n")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `nats-server --version`, reduced to the version number.
fn server_version() -> Result<String, String> {
    let out = match Command::new("nats-server").arg("--version").output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(
                "nats-server not found on PATH: install Debian's nats-server \
                        (`apt-get install -y nats-server`)"
                    .to_owned(),
            );
        }
        Err(e) => return Err(format!("cannot run nats-server --version: {e}")),
    };
    // "nats-server: v2.9.10"
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .find_map(|w| w.strip_prefix('v'))
        .unwrap_or_else(|| text.trim())
        .to_owned())
}

/// Sends CONNECT and PING on a blocking connection and reads until the PONG, with a timeout;
/// the INFO the server sent first. For the publisher and control connections.
pub(crate) fn handshake(stream: &mut TcpStream) -> Result<Vec<u8>, String> {
    stream
        .set_read_timeout(Some(START_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut hello = CONNECT.to_vec();
    hello.extend_from_slice(b"PING\r\n");
    stream.write_all(&hello).map_err(|e| e.to_string())?;
    let mut decoder = NatsDecoder::new();
    let mut info = None;
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(op) = decoder.next()? {
            match op {
                NatsPush::Info => info = Some(decoder.info.clone()),
                NatsPush::Pong => return info.ok_or_else(|| "PONG before INFO".to_owned()),
                NatsPush::Err(e) => return Err(format!("nats-server: -ERR {e}")),
                NatsPush::Ping | NatsPush::Ok | NatsPush::Msg(_) => {}
            }
        }
        let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before PONG".to_owned());
        }
        decoder.feed(chunk.get(..n).unwrap_or_default());
    }
}

/// The subject of key `key` (`lqd-fanout.KEY`), or [`SUBJECT`] for every change.
pub(crate) fn subject(key: Option<u32>) -> Vec<u8> {
    let mut out = SUBJECT.to_vec();
    if let Some(k) = key {
        out.push(b'.');
        out.extend_from_slice(k.to_string().as_bytes());
    }
    out
}

/// What a subscriber sends once: CONNECT, `SUB <subject> 1`, and a PING whose PONG says the
/// subscription is in place.
pub(crate) fn subscribe_commands(subject: &[u8]) -> Vec<u8> {
    let mut out = CONNECT.to_vec();
    out.extend_from_slice(b"SUB ");
    out.extend_from_slice(subject);
    out.extend_from_slice(b" 1\r\nPING\r\n");
    out
}

/// Appends `PUB <subject> <#bytes>`, the payload (any bytes) and CRLF to `out`.
pub(crate) fn publish_command(subject: &[u8], payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(subject);
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// What a client receives, one operation at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NatsPush<'a> {
    /// `INFO {json}` (the JSON is kept in [`NatsDecoder::info`]).
    Info,
    /// `MSG …`: a message's payload, borrowed from the decoder's buffer.
    Msg(&'a [u8]),
    /// `PING`: the server wants a PONG.
    Ping,
    /// `PONG`: the answer to our PING.
    Pong,
    /// `+OK` (verbose mode only).
    Ok,
    /// `-ERR 'text'`: the text.
    Err(String),
}

/// An incremental decoder of the server's operations: [`feed`](Self::feed) it what the
/// socket gave, then call [`next`](Self::next) until it returns `Ok(None)`.
///
/// Operations may be split at any byte and many may arrive in one read. The buffer is
/// compacted as in [`crate::redis::RespDecoder`]: each byte moved at most once on average,
/// no allocation per message. After an error the decoder stays at the bad operation and
/// keeps returning the error.
#[derive(Debug, Default)]
pub(crate) struct NatsDecoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already returned.
    start: usize,
    /// Bytes from `start` needed before the pending operation can be complete; 0 when
    /// unknown.
    need: usize,
    /// The JSON of the last INFO.
    pub(crate) info: Vec<u8>,
}

/// The fields of an operation line after its name, split on spaces and tabs.
fn fields(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|b| *b == b' ' || *b == b'\t')
        .filter(|f| !f.is_empty())
}

impl NatsDecoder {
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

    /// Bytes fed but not yet returned.
    pub(crate) fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete operation, `Ok(None)` when more bytes are needed, or an error for
    /// bytes that are not the NATS protocol.
    pub(crate) fn next(&mut self) -> Result<Option<NatsPush<'_>>, String> {
        if self.pending() < self.need {
            return Ok(None);
        }
        let bad = |reason: &str| format!("malformed NATS protocol from nats-server: {reason}");
        let rest = self.buf.get(self.start..).unwrap_or_default();
        let window = rest.get(..MAX_LINE + 2).unwrap_or(rest);
        let Some(cr) = window.windows(2).position(|w| w == b"\r\n") else {
            if window.len() > MAX_LINE + 1 {
                return Err(bad("an operation line longer than 64 KiB"));
            }
            return Ok(None);
        };
        let line = rest.get(..cr).unwrap_or_default();
        let after_line = cr + 2;
        let name_end = line
            .iter()
            .position(|b| *b == b' ' || *b == b'\t')
            .unwrap_or(line.len());
        let name = line
            .get(..name_end)
            .unwrap_or_default()
            .to_ascii_uppercase();
        let args = line.get(name_end..).unwrap_or_default();
        let (op, consumed) = match name.as_slice() {
            b"MSG" => {
                let f: Vec<&[u8]> = fields(args).collect();
                // subject sid [reply-to] #bytes
                if !(f.len() == 3 || f.len() == 4) {
                    return Err(bad("MSG without 3 or 4 fields"));
                }
                let size = f
                    .last()
                    .and_then(|s| std::str::from_utf8(s).ok())
                    .and_then(|s| s.parse::<usize>().ok())
                    .filter(|s| *s <= MAX_PAYLOAD)
                    .ok_or_else(|| bad("MSG with a bad size"))?;
                let end = after_line + size;
                match rest.get(end..end + 2) {
                    None => {
                        self.need = end + 2;
                        return Ok(None);
                    }
                    Some(b"\r\n") => {}
                    Some(_) => return Err(bad("a MSG payload not followed by CRLF")),
                }
                let from = self.start + after_line;
                self.start += end + 2;
                self.need = 0;
                let payload = self.buf.get(from..from + size).unwrap_or_default();
                return Ok(Some(NatsPush::Msg(payload)));
            }
            b"INFO" => {
                self.info = args.trim_ascii().to_vec();
                (NatsPush::Info, after_line)
            }
            b"PING" if args.trim_ascii().is_empty() => (NatsPush::Ping, after_line),
            b"PONG" if args.trim_ascii().is_empty() => (NatsPush::Pong, after_line),
            b"+OK" if args.trim_ascii().is_empty() => (NatsPush::Ok, after_line),
            b"-ERR" => {
                let text = String::from_utf8_lossy(args.trim_ascii());
                (
                    NatsPush::Err(text.trim_matches('\'').to_owned()),
                    after_line,
                )
            }
            _ => return Err(bad("an unknown operation")),
        };
        self.start += consumed;
        self.need = 0;
        Ok(Some(op))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(subject: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "MSG {} 1 {}\r\n",
            String::from_utf8_lossy(subject),
            payload.len()
        )
        .into_bytes();
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
        out
    }

    /// Every operation in `d` until it needs more, owned (`Msg` as its payload).
    fn drain(d: &mut NatsDecoder) -> Vec<Result<Vec<u8>, String>> {
        let mut out = Vec::new();
        while let Some(op) = d.next().expect("well-formed") {
            out.push(match op {
                NatsPush::Msg(p) => Ok(p.to_vec()),
                other => Err(format!("{other:?}")),
            });
        }
        out
    }

    fn binary_payloads() -> Vec<Vec<u8>> {
        let mut all = vec![
            b"\r\n".to_vec(),
            Vec::new(),
            b"MSG x 1 3\r\n".to_vec(),
            b"PING\r\n".to_vec(),
            (0..=255u8).collect(),
        ];
        all.extend((0..20u8).map(|i| vec![i; usize::from(i) * 37]));
        all
    }

    #[test]
    fn commands() {
        assert_eq!(subject(None), SUBJECT);
        assert_eq!(subject(Some(0)), b"lqd-fanout.0");
        assert_eq!(subject(Some(9_999)), b"lqd-fanout.9999");
        let sub = subscribe_commands(&subject(Some(12)));
        assert!(sub.starts_with(b"CONNECT {"));
        assert!(sub.ends_with(b"}\r\nSUB lqd-fanout.12 1\r\nPING\r\n"));
        let json = &CONNECT[8..CONNECT.len() - 2];
        let v: serde_json::Value = serde_json::from_slice(json).expect("CONNECT is JSON");
        assert_eq!(v["verbose"], false);
        assert_eq!(v["echo"], false);
        let mut out = b"x".to_vec();
        publish_command(SUBJECT, b"a\r\nb", &mut out);
        assert_eq!(out, b"xPUB lqd-fanout 4\r\na\r\nb\r\n");
    }

    #[test]
    fn operations_and_case() {
        let mut d = NatsDecoder::new();
        d.feed(b"INFO {\"server_id\":\"X\"} \r\n+OK\r\nping\r\nPONG\r\n-ERR 'Slow Consumer'\r\n");
        d.feed(b"msg\tlqd-fanout.3  7 reply.to 2\r\nhi\r\n");
        assert_eq!(d.next(), Ok(Some(NatsPush::Info)));
        assert_eq!(d.info, b"{\"server_id\":\"X\"}");
        assert_eq!(d.next(), Ok(Some(NatsPush::Ok)));
        assert_eq!(d.next(), Ok(Some(NatsPush::Ping)));
        assert_eq!(d.next(), Ok(Some(NatsPush::Pong)));
        assert_eq!(
            d.next(),
            Ok(Some(NatsPush::Err("Slow Consumer".to_owned())))
        );
        assert_eq!(d.next(), Ok(Some(NatsPush::Msg(b"hi"))));
        assert_eq!(d.next(), Ok(None));
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn split_at_every_byte_boundary() {
        let mut stream = b"INFO {}\r\nPONG\r\n".to_vec();
        for p in binary_payloads() {
            stream.extend(msg(SUBJECT, &p));
        }
        let mut want: Vec<Result<Vec<u8>, String>> =
            vec![Err("Info".to_owned()), Err("Pong".to_owned())];
        want.extend(binary_payloads().into_iter().map(Ok));
        for cut in 0..=stream.len() {
            let mut d = NatsDecoder::new();
            d.feed(&stream[..cut]);
            let mut got = drain(&mut d);
            d.feed(&stream[cut..]);
            got.extend(drain(&mut d));
            assert_eq!(got, want, "cut at {cut}");
        }
        let mut d = NatsDecoder::new();
        let mut got = Vec::new();
        for b in &stream {
            d.feed(std::slice::from_ref(b));
            got.extend(drain(&mut d));
        }
        assert_eq!(got, want);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn bounded_buffer() {
        let one = msg(SUBJECT, b"0123456789abcdef\r\n");
        let len = one.len() * 7 / 2;
        let mut stream = one.iter().copied().cycle();
        let mut d = NatsDecoder::new();
        let mut received = 0;
        for _ in 0..10_000 {
            let chunk: Vec<u8> = stream.by_ref().take(len).collect();
            d.feed(&chunk);
            while let Some(op) = d.next().expect("well-formed") {
                assert_eq!(op, NatsPush::Msg(b"0123456789abcdef\r\n"));
                received += 1;
            }
            assert!(d.buf.len() <= 2 * one.len() + len, "{}", d.buf.len());
        }
        assert_eq!(received, 10_000 * len / one.len());
    }

    #[test]
    fn malformed_input_is_an_error() {
        let cases: &[&[u8]] = &[
            b"HELLO\r\n",
            b"MSG a 1\r\n",
            b"MSG a b c d e\r\n",
            b"MSG a 1 x\r\n",
            b"MSG a 1 -1\r\n",
            b"MSG a 1 999999999999\r\n",
            b"MSG a 1 2\r\nabcd",
            b"PING x\r\n",
        ];
        for &case in cases {
            let mut d = NatsDecoder::new();
            d.feed(case);
            let e = d.next().expect_err(&String::from_utf8_lossy(case));
            assert!(e.starts_with("malformed NATS"), "{e}");
            assert!(d.next().is_err());
        }
        let mut d = NatsDecoder::new();
        d.feed(&vec![b'I'; MAX_LINE + 3]);
        assert!(d.next().is_err());
        // Incomplete is not an error.
        let mut d = NatsDecoder::new();
        d.feed(b"MSG a 1 5\r\nab");
        assert_eq!(d.next(), Ok(None));
        d.feed(b"cde\r");
        assert_eq!(d.next(), Ok(None));
        d.feed(b"\n");
        assert_eq!(d.next(), Ok(Some(NatsPush::Msg(b"abcde"))));
    }

    /// Reads from `stream` into `d` until `want` messages arrived.
    fn receive(stream: &mut TcpStream, d: &mut NatsDecoder, want: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = [0u8; 1500];
        while got.len() < want {
            while let Some(op) = d.next().expect("well-formed") {
                match op {
                    NatsPush::Msg(p) => got.push(p.to_vec()),
                    other => panic!("an unexpected {other:?}"),
                }
            }
            if got.len() == want {
                break;
            }
            let n = stream.read(&mut buf).expect("subscriber read");
            assert!(n > 0, "nats-server closed a subscriber after {}", got.len());
            d.feed(&buf[..n]);
        }
        got
    }

    #[test]
    fn real_nats_fans_out_binary_payloads_in_order() {
        let server = NatsServer::start().unwrap_or_else(|e| panic!("{e}"));
        assert!(server.version().starts_with('2'), "{}", server.version());
        assert!(server.pid() > 0);
        let connect = || {
            let s = TcpStream::connect(server.addr()).expect("connect to nats-server");
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            s
        };
        // Two on the subject of every change, one on key 5's.
        let mut subscribers: Vec<(TcpStream, NatsDecoder)> = [None, None, Some(5)]
            .into_iter()
            .map(|key| {
                let mut s = connect();
                s.write_all(&subscribe_commands(&subject(key)))
                    .expect("SUB");
                let mut d = NatsDecoder::new();
                let mut buf = [0u8; 4096];
                'ready: loop {
                    while let Some(op) = d.next().expect("well-formed") {
                        match op {
                            NatsPush::Info => {}
                            NatsPush::Pong => break 'ready,
                            other => panic!("{other:?} before PONG"),
                        }
                    }
                    let n = s.read(&mut buf).expect("PONG");
                    assert!(n > 0, "closed before PONG");
                    d.feed(&buf[..n]);
                }
                (s, d)
            })
            .collect();
        let mut payloads = binary_payloads();
        payloads.extend((0..100u32).map(|i| {
            let mut p = i.to_be_bytes().to_vec();
            p.extend(b"\r\nMSG x 1 3\r\n");
            p.extend((0..i * 41).map(|j| (j * 7 + i) as u8));
            p
        }));
        payloads.truncate(100);
        let mut publisher = connect();
        handshake(&mut publisher).expect("publisher handshake");
        let mut pipeline = Vec::new();
        for p in &payloads {
            publish_command(SUBJECT, p, &mut pipeline);
        }
        publish_command(&subject(Some(5)), b"key five", &mut pipeline);
        publish_command(&subject(Some(6)), b"key six", &mut pipeline);
        publisher.write_all(&pipeline).expect("PUB");
        for (stream, d) in subscribers.iter_mut().take(2) {
            assert_eq!(receive(stream, d, payloads.len()), payloads);
            assert_eq!(d.pending(), 0);
        }
        let (stream, d) = &mut subscribers[2];
        assert_eq!(receive(stream, d, 1), vec![b"key five".to_vec()]);
    }
}
