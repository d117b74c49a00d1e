//! The raw baseline: a minimal single-threaded epoll (mio) sender, what this machine's
//! sockets can do with no leasequery server in the way.
//!
//! It listens on `[::1]`, the same receivers connect to it (without a query or REPLY), and it
//! writes the same LEASEQUERY-DATA frames lqd would (built once per change with lqd's codec:
//! LQ_BASE_TIME and CLIENT_DATA with the client id, IAADDR and CLT_TIME) to every socket: live
//! on the injector's schedule, or a whole catch-up at once on each connection as it is
//! accepted (`--burst K`). Writes are non-blocking; a socket that would block gets a backlog
//! (shared, reference-counted batches and an offset: nothing is copied per socket), flushed
//! when epoll says it is writable.
//!
//! Filtered (`--filter KIND`, one key per connection), each receiver first says its key in four
//! octets (big-endian), and each frame is written only to the socket of its change's key: live,
//! a batch is still encoded once and each socket gets its frames' part of it; a burst is the
//! key's own changes and a CatchUpComplete.
//!
//! It runs as a process of its own, like a server: loadgen runs itself with the hidden
//! `raw-sender` subcommand. So it has its own open-file limit (N sockets on each side of a
//! run would not fit in one process's 20,000 on a machine whose hard limit is that), and its
//! CPU time and peak RSS are measured from /proc like lqd's. The two talk over the child's
//! standard input and output, one line each way per step:
//!
//! | from | line | meaning |
//! |---|---|---|
//! | sender | `listening ADDR` | bound; connect to ADDR |
//! | sender | `accepted N` | every connection is accepted (and a burst queued on each) |
//! | loadgen | `go T0 RATE TOTAL` | live: change 0 is due at T0 (Unix ns), then RATE a second |
//! | sender | `done MAX_LATE END_LATE PEAK CLOSED UNFINISHED` | all written, or stopped: worst and last lateness (ns), peak backlog (octets), connections closed by their receiver, connections left with octets to write |
//! | sender | `error MESSAGE` | it failed |
//! | loadgen | `stop` (or end of input) | close every socket and exit |
//!
//! Times cross the process boundary as Unix time (the realtime clock both processes read)
//! and are turned back into each side's `Instant` at once, which is accurate to well under a
//! microsecond.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, IoSlice, Read, Write};
use std::net::{Ipv6Addr, SocketAddr};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lqd::codec::{BuildOptions, MessageBuilder, Status, frame_header};
use lqd::feed::system_time;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use super::FilterKind;
use super::changes::{Keys, Model, Schedule};
use super::receiver::XID;

const LISTENER: Token = Token(usize::MAX);

/// The listener's accept queue (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: i32 = 4096;

/// Options of the hidden `loadgen raw-sender` (run by loadgen itself, not by hand).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// Connections to accept.
    #[arg(long)]
    pub(crate) connections: usize,
    /// Bindings the changes cycle over.
    #[arg(long)]
    pub(crate) bindings: u32,
    /// Leave Nagle's algorithm on (no TCP_NODELAY).
    #[arg(long)]
    pub(crate) nagle: bool,
    /// Write these many changes and a CatchUpComplete to each connection once accepted,
    /// instead of waiting for `go`.
    #[arg(long)]
    pub(crate) burst: Option<u64>,
    /// One key per connection, which each receiver says first: a change goes only to its key's
    /// connection.
    #[arg(long)]
    pub(crate) filter: Option<FilterKind>,
}

/// What the sender sends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Job {
    /// Changes on the schedule sent through [`RawSender::go`], to every socket.
    Live,
    /// K changes and CatchUpComplete to each connection as soon as it is accepted.
    Burst(u64),
}

/// How the sender did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawReport {
    /// The worst delay between a change's intended time and the end of its writes.
    pub(crate) max_late: Duration,
    /// How late the last change was written (to every socket or its backlog).
    pub(crate) end_late: Duration,
    /// The most octets waiting in backlogs at once.
    pub(crate) peak_backlog: usize,
    /// Connections closed by their receiver before everything was written to them.
    pub(crate) closed: usize,
    /// Connections with octets still to write when it was stopped.
    pub(crate) unfinished: usize,
}

/// What the sender said so far.
#[derive(Debug, Default)]
struct Heard {
    accepted: bool,
    done: Option<RawReport>,
    error: Option<String>,
}

/// The running sender process.
pub(crate) struct RawSender {
    child: Child,
    addr: SocketAddr,
    stdin: Option<ChildStdin>,
    heard: Arc<Mutex<Heard>>,
    reader: Option<JoinHandle<()>>,
    connections: usize,
}

impl RawSender {
    /// Starts the sender process, which listens on a free port of `[::1]`, accepts
    /// `connections` connections and then does `job`; `nodelay` sets TCP_NODELAY on them;
    /// `filter` gives each connection a key of its own.
    pub(crate) fn start(
        connections: usize,
        bindings: u32,
        job: Job,
        nodelay: bool,
        filter: Option<FilterKind>,
    ) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("loadgen's own path: {e}"))?;
        let mut cmd = Command::new(exe);
        cmd.args(["raw-sender", "--connections", &connections.to_string()])
            .args(["--bindings", &bindings.to_string()]);
        if !nodelay {
            cmd.arg("--nagle");
        }
        if let Job::Burst(k) = job {
            cmd.args(["--burst", &k.to_string()]);
        }
        if let Some(f) = filter {
            cmd.args(["--filter", f.name()]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the raw sender: {e}"))?;
        let stdin = child.stdin.take();
        let mut lines =
            BufReader::new(child.stdout.take().ok_or("the raw sender's output")?).lines();
        let first = lines.next().transpose().map_err(|e| e.to_string())?;
        let addr = match first.as_deref().and_then(|l| l.strip_prefix("listening ")) {
            Some(a) => a
                .parse()
                .map_err(|e| format!("the raw sender's address {a}: {e}"))?,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("the raw sender did not start: {first:?}"));
            }
        };
        let heard = Arc::new(Mutex::new(Heard::default()));
        let h = Arc::clone(&heard);
        let reader = std::thread::Builder::new()
            .name("loadgen-raw-out".into())
            .spawn(move || {
                for line in lines {
                    let Ok(line) = line else { break };
                    let Ok(mut heard) = h.lock() else { break };
                    match parse_line(&line) {
                        Ok(Some(report)) => heard.done = Some(report),
                        Ok(None) if line.starts_with("accepted ") => heard.accepted = true,
                        Ok(None) => {}
                        Err(e) => heard.error = Some(e),
                    }
                }
            })
            .map_err(|e| format!("cannot start the raw sender's reader: {e}"))?;
        Ok(Self {
            child,
            addr,
            stdin,
            heard,
            reader: Some(reader),
            connections,
        })
    }

    /// Where it listens.
    pub(crate) const fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Connections accepted: all of them, or none yet.
    pub(crate) fn accepted(&self) -> usize {
        match self.heard.lock() {
            Ok(h) if h.accepted => self.connections,
            _ => 0,
        }
    }

    /// An error when the sender failed or exited.
    pub(crate) fn check_alive(&mut self) -> Result<(), String> {
        if let Some(e) = self.heard.lock().ok().and_then(|h| h.error.clone()) {
            return Err(format!("raw sender: {e}"));
        }
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("the raw sender exited ({status})")),
            Err(e) => Err(format!("raw sender: {e}")),
        }
    }

    /// Starts a live job on `schedule`.
    pub(crate) fn go(&mut self, schedule: Schedule) -> Result<(), String> {
        let (now, sys) = (Instant::now(), SystemTime::now());
        let t0 = if schedule.t0 >= now {
            sys + (schedule.t0 - now)
        } else {
            sys - (now - schedule.t0)
        };
        let t0 = t0
            .duration_since(UNIX_EPOCH)
            .map_err(|e| format!("the clock: {e}"))?
            .as_nanos();
        let stdin = self.stdin.as_mut().ok_or("the raw sender is stopped")?;
        writeln!(stdin, "go {t0} {} {}", schedule.rate, schedule.total)
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("starting the raw sender: {e}"))
    }

    /// Stops the sender (closing its sockets) and returns its report.
    pub(crate) fn finish(mut self) -> Result<RawReport, String> {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "stop");
        }
        let status = self.child.wait().map_err(|e| format!("raw sender: {e}"))?;
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let heard = self
            .heard
            .lock()
            .map_err(|_| "the raw sender's reader panicked".to_owned())?;
        if let Some(e) = &heard.error {
            return Err(format!("raw sender: {e}"));
        }
        match heard.done {
            Some(r) if status.success() => Ok(r),
            _ => Err(format!(
                "the raw sender exited ({status}) without finishing its job"
            )),
        }
    }
}

impl Drop for RawSender {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `done` line's report (`None` for another line), or an `error` line's message.
fn parse_line(line: &str) -> Result<Option<RawReport>, String> {
    if let Some(e) = line.strip_prefix("error ") {
        return Err(e.to_owned());
    }
    let Some(rest) = line.strip_prefix("done ") else {
        return Ok(None);
    };
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("a bad done line {line:?}: {e}"))?;
    match f.as_slice() {
        [max_late, end_late, peak, closed, unfinished] => Ok(Some(RawReport {
            max_late: Duration::from_nanos(*max_late),
            end_late: Duration::from_nanos(*end_late),
            peak_backlog: usize::try_from(*peak).unwrap_or(usize::MAX),
            closed: usize::try_from(*closed).unwrap_or(usize::MAX),
            unfinished: usize::try_from(*unfinished).unwrap_or(usize::MAX),
        })),
        _ => Err(format!("a bad done line {line:?}")),
    }
}

/// The `raw-sender` process: see the module's documentation for its lines.
pub(crate) fn serve(args: &Args) -> ExitCode {
    let out = |line: &str| {
        let mut o = io::stdout().lock();
        let _ = writeln!(o, "{line}").and_then(|()| o.flush());
    };
    match serve_inner(args, &out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            out(&format!("error {}", e.replace('\n', " ")));
            ExitCode::FAILURE
        }
    }
}

fn serve_inner(args: &Args, out: &impl Fn(&str)) -> Result<(), String> {
    let mut model = Model::new(args.bindings)?;
    if let Some(kind) = args.filter {
        let count = u32::try_from(args.connections).map_err(|_| "too many connections")?;
        model = model.keyed(Keys { kind, count })?;
    }
    let mut listener = listen().map_err(|e| format!("listening on [::1]: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(|e| format!("epoll: {e}"))?;
    let bursts = args.burst.map(|k| burst_frames(model, k)).transpose()?;
    // Standard input: `go` lines become schedules; `stop` or its end sets `stop`.
    let stop = Arc::new(AtomicBool::new(false));
    let (go, schedules) = mpsc::channel();
    let stopper = Arc::clone(&stop);
    std::thread::Builder::new()
        .name("raw-sender-in".into())
        .spawn(move || {
            for line in io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if let Some(s) = line.strip_prefix("go ").and_then(parse_go) {
                    let _ = go.send(s);
                } else if line == "stop" {
                    break;
                }
            }
            stopper.store(true, Ordering::Release);
        })
        .map_err(|e| format!("a thread: {e}"))?;
    out(&format!("listening {addr}"));
    let mut sender = Sender {
        poll,
        listener,
        socks: Vec::with_capacity(args.connections),
        connections: args.connections,
        by_key: match model.keys() {
            Some(_) => vec![None; args.connections],
            None => Vec::new(),
        },
        unkeyed: 0,
        model,
        nodelay: !args.nagle,
        stop: Arc::clone(&stop),
        backlogged: 0,
        backlog_bytes: 0,
        peak_backlog: 0,
        closed: 0,
    };
    let r = sender.run(bursts.as_deref(), &schedules, out)?;
    out(&format!(
        "done {} {} {} {} {}",
        r.max_late.as_nanos(),
        r.end_late.as_nanos(),
        r.peak_backlog,
        r.closed,
        r.unfinished
    ));
    // Keep the sockets open until told: closing would end the receivers' streams.
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// A listener on a free port of `[::1]` with an accept queue of [`BACKLOG`] (mio's own
/// `bind` asks for 128, which thousands of receivers connecting at once overflow).
fn listen() -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::from((Ipv6Addr::LOCALHOST, 0)).into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// A `go` line's schedule, its Unix-time start turned into an `Instant`.
fn parse_go(rest: &str) -> Option<Schedule> {
    let mut f = rest.split_whitespace();
    let t0: u128 = f.next()?.parse().ok()?;
    let rate: f64 = f.next()?.parse().ok()?;
    let total: u64 = f.next()?.parse().ok()?;
    let (now, sys) = (Instant::now(), SystemTime::now());
    let t0 = UNIX_EPOCH + Duration::from_nanos(u64::try_from(t0).ok()?);
    let t0 = match t0.duration_since(sys) {
        Ok(ahead) => now + ahead,
        Err(e) => now.checked_sub(e.duration())?,
    };
    Some(Schedule { t0, rate, total })
}

/// The catch-up a burst sends each connection: the K changes' frames, then a
/// LEASEQUERY-DATA with CatchUpComplete, as lqd sends them. One for every connection, or, with
/// keys, one per key with its own changes.
fn burst_frames(model: Model, k: u64) -> Result<Vec<Arc<[u8]>>, String> {
    let now = system_time();
    let keys = model.keys().map_or(1, |keys| keys.count as usize);
    let per_key = usize::try_from(k).unwrap_or(0) / keys;
    let mut outs: Vec<Vec<u8>> = (0..keys)
        .map(|_| Vec::with_capacity(per_key.saturating_add(1).saturating_mul(80)))
        .collect();
    let frame = |m: &[u8], out: &mut Vec<u8>| -> Result<(), String> {
        out.extend_from_slice(&frame_header(m.len()).map_err(|e| e.to_string())?);
        out.extend_from_slice(m);
        Ok(())
    };
    for i in 0..k {
        let key = model.key(i).unwrap_or(0) as usize;
        let out = outs.get_mut(key).ok_or("a change of no key")?;
        frame(&model.data_message(i, XID, now)?, out)?;
    }
    let complete = MessageBuilder::data(XID)
        .status(Status::CatchUpComplete, "catch-up complete")
        .base_time(now)
        .build()
        .map_err(|e| format!("building CatchUpComplete: {e}"))?;
    outs.into_iter()
        .map(|mut out| {
            frame(&complete, &mut out)?;
            Ok(out.into())
        })
        .collect()
}

/// Octets queued on a socket: `buf[at..end]`, a part of a batch shared by every socket.
struct Chunk {
    buf: Arc<[u8]>,
    at: usize,
    end: usize,
}

impl Chunk {
    /// All of `buf`.
    fn whole(buf: &Arc<[u8]>) -> Self {
        Self {
            buf: Arc::clone(buf),
            at: 0,
            end: buf.len(),
        }
    }

    fn rest(&self) -> &[u8] {
        self.buf.get(self.at..self.end).unwrap_or_default()
    }
}

struct Sock {
    stream: TcpStream,
    backlog: VecDeque<Chunk>,
    /// A write failed: the receiver is gone.
    closed: bool,
    /// Its key, once the receiver said it (filtered).
    key: Option<u32>,
    /// The receiver's key as read so far.
    hello: [u8; 4],
    hello_len: usize,
}

struct Sender {
    poll: Poll,
    listener: TcpListener,
    socks: Vec<Sock>,
    connections: usize,
    /// Each key's socket (filtered; empty otherwise).
    by_key: Vec<Option<usize>>,
    /// Sockets whose key is not known yet (filtered).
    unkeyed: usize,
    model: Model,
    nodelay: bool,
    stop: Arc<AtomicBool>,
    /// Sockets with a backlog.
    backlogged: usize,
    backlog_bytes: usize,
    peak_backlog: usize,
    /// Sockets closed by a failed write.
    closed: usize,
}

impl Sender {
    fn run(
        &mut self,
        bursts: Option<&[Arc<[u8]>]>,
        go: &mpsc::Receiver<Schedule>,
        out: &impl Fn(&str),
    ) -> Result<RawReport, String> {
        let mut events = Events::with_capacity(1024);
        // Accept every connection, learn every key (filtered), and, for a burst, write it at
        // once.
        while self.socks.len() < self.connections || self.unkeyed > 0 {
            if self.stop.load(Ordering::Acquire) {
                return Err("stopped before every receiver connected".to_owned());
            }
            self.poll(&mut events, Some(Duration::from_millis(20)))?;
            self.accept(bursts)?;
            for e in &events {
                if e.is_readable() && e.token() != LISTENER {
                    self.read_key(e.token().0, bursts)?;
                }
            }
            self.flush_ready(&events)?;
        }
        out(&format!("accepted {}", self.socks.len()));
        let mut ends = Vec::new();
        let schedule = match bursts {
            Some(_) => None,
            None => loop {
                match go.recv_timeout(Duration::from_millis(20)) {
                    Ok(s) => break Some(s),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if self.stop.load(Ordering::Acquire) {
                            return Err("stopped before the schedule started".to_owned());
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        return Err("stopped before the schedule started".to_owned());
                    }
                }
            },
        };
        let mut sent = 0u64;
        let mut max_late = Duration::ZERO;
        let mut end_late = Duration::ZERO;
        let mut unfinished = 0;
        let total = schedule.map_or(0, |s| s.total);
        loop {
            if let Some(s) = &schedule {
                let due = s.due(Instant::now());
                if due > sent {
                    let batch = self.encode(sent, due, &mut ends)?;
                    if self.model.keys().is_some() {
                        let mut at = 0;
                        for (k, &end) in (sent..due).zip(&ends) {
                            let key = self.model.key(k).unwrap_or(0) as usize;
                            let i = self.by_key.get(key).copied().flatten();
                            let i = i.ok_or_else(|| format!("no connection for key {key}"))?;
                            let buf = Arc::clone(&batch);
                            self.push(i, Chunk { buf, at, end })?;
                            at = end;
                        }
                    } else {
                        for i in 0..self.socks.len() {
                            self.push(i, Chunk::whole(&batch))?;
                        }
                    }
                    let now = Instant::now();
                    max_late = max_late.max(now.saturating_duration_since(s.at(sent)));
                    if due == s.total {
                        end_late = now.saturating_duration_since(s.end());
                    }
                    sent = due;
                }
            }
            if sent >= total && self.backlogged == 0 {
                break;
            }
            if self.stop.load(Ordering::Acquire) {
                // Stopped before the end (the receivers gave up): report what was left.
                unfinished = self.backlogged.max(usize::from(sent < total));
                break;
            }
            let next = schedule.filter(|_| sent < total).map(|s| s.at(sent));
            if self.backlogged > 0 {
                // Wait for writability, but not past the next change (epoll's timeout is in
                // milliseconds).
                let wait = next.map_or(Duration::from_millis(20), |t| {
                    t.saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(1))
                });
                self.poll(&mut events, Some(wait))?;
            } else if let Some(t) = next {
                // Nothing to flush: sleep to the next change (finer than epoll's timeout).
                std::thread::sleep(t.saturating_duration_since(Instant::now()));
                continue;
            } else {
                self.poll(&mut events, Some(Duration::from_millis(20)))?;
            }
            self.flush_ready(&events)?;
        }
        Ok(RawReport {
            max_late,
            end_late,
            peak_backlog: self.peak_backlog,
            closed: self.closed,
            unfinished,
        })
    }

    /// Flushes the sockets `events` says are writable.
    fn flush_ready(&mut self, events: &Events) -> Result<(), String> {
        for e in events {
            if e.is_writable() && e.token() != LISTENER {
                self.flush(e.token().0)?;
            }
        }
        Ok(())
    }

    fn poll(&mut self, events: &mut Events, timeout: Option<Duration>) -> Result<(), String> {
        match self.poll.poll(events, timeout) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(format!("epoll: {e}")),
        }
    }

    fn accept(&mut self, bursts: Option<&[Arc<[u8]>]>) -> Result<(), String> {
        while self.socks.len() < self.connections {
            let (mut stream, _) = match self.listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("accept: {e}")),
            };
            stream
                .set_nodelay(self.nodelay)
                .map_err(|e| format!("TCP_NODELAY: {e}"))?;
            let i = self.socks.len();
            let keyed = self.model.keys().is_some();
            let interest = if keyed {
                Interest::WRITABLE | Interest::READABLE
            } else {
                Interest::WRITABLE
            };
            self.poll
                .registry()
                .register(&mut stream, Token(i), interest)
                .map_err(|e| format!("epoll: {e}"))?;
            self.socks.push(Sock {
                stream,
                backlog: VecDeque::new(),
                closed: false,
                key: None,
                hello: [0; 4],
                hello_len: 0,
            });
            if keyed {
                self.unkeyed += 1;
                self.read_key(i, bursts)?;
            } else if let Some(b) = bursts.and_then(|b| b.first()) {
                self.push(i, Chunk::whole(b))?;
            }
        }
        Ok(())
    }

    /// Reads the key receiver `i` says first (filtered), and then queues its burst.
    fn read_key(&mut self, i: usize, bursts: Option<&[Arc<[u8]>]>) -> Result<(), String> {
        let Some(s) = self.socks.get_mut(i) else {
            return Ok(());
        };
        if s.key.is_some() {
            return Ok(());
        }
        while s.hello_len < s.hello.len() {
            let rest = s.hello.get_mut(s.hello_len..).unwrap_or_default();
            match s.stream.read(rest) {
                Ok(0) => return Err(format!("connection {i} closed before saying its key")),
                Ok(n) => s.hello_len += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading connection {i}'s key: {e}")),
            }
        }
        let key = u32::from_be_bytes(s.hello);
        let slot = self
            .by_key
            .get_mut(key as usize)
            .ok_or_else(|| format!("connection {i} says key {key}, beyond the connections"))?;
        if let Some(other) = slot.replace(i) {
            return Err(format!("connections {other} and {i} both say key {key}"));
        }
        s.key = Some(key);
        self.unkeyed -= 1;
        if let Some(b) = bursts.and_then(|b| b.get(key as usize)) {
            self.push(i, Chunk::whole(b))?;
        }
        Ok(())
    }

    /// Changes `first..end` as consecutive frames, built once for every socket; `ends` gets
    /// the end of each change's frame.
    fn encode(&self, first: u64, end: u64, ends: &mut Vec<usize>) -> Result<Arc<[u8]>, String> {
        let now = system_time();
        let mut out = Vec::with_capacity(((end - first) as usize).saturating_mul(80));
        ends.clear();
        for k in first..end {
            let m = self.model.data_message(k, XID, now)?;
            out.extend_from_slice(&frame_header(m.len()).map_err(|e| e.to_string())?);
            out.extend_from_slice(&m);
            ends.push(out.len());
        }
        Ok(out.into())
    }

    /// Queues `chunk` on socket `i` and writes what it can.
    fn push(&mut self, i: usize, chunk: Chunk) -> Result<(), String> {
        let Some(s) = self.socks.get_mut(i) else {
            return Ok(());
        };
        if s.closed {
            return Ok(());
        }
        if s.backlog.is_empty() {
            self.backlogged += 1;
        }
        self.backlog_bytes += chunk.end - chunk.at;
        s.backlog.push_back(chunk);
        self.flush(i)
    }

    /// Writes socket `i`'s backlog until it is empty or the socket would block.
    fn flush(&mut self, i: usize) -> Result<(), String> {
        let Some(s) = self.socks.get_mut(i) else {
            return Ok(());
        };
        if s.backlog.is_empty() {
            return Ok(());
        }
        while !s.backlog.is_empty() {
            let slices: Vec<IoSlice<'_>> = s
                .backlog
                .iter()
                .take(64)
                .map(|c| IoSlice::new(c.rest()))
                .collect();
            let mut n = match s.stream.write_vectored(&slices) {
                Ok(n) if n > 0 => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                _ => {
                    // The receiver closed it (it gave up at the drain timeout): drop what
                    // was left for it; the receivers count what never arrived.
                    let left: usize = s.backlog.iter().map(|c| c.end - c.at).sum();
                    self.backlog_bytes -= left;
                    s.backlog.clear();
                    s.closed = true;
                    let _ = self.poll.registry().deregister(&mut s.stream);
                    self.closed += 1;
                    break;
                }
            };
            self.backlog_bytes -= n;
            while n > 0 {
                let Some(c) = s.backlog.front_mut() else {
                    break;
                };
                let left = c.end - c.at;
                if n >= left {
                    n -= left;
                    s.backlog.pop_front();
                } else {
                    c.at += n;
                    n = 0;
                }
            }
        }
        if s.backlog.is_empty() {
            self.backlogged -= 1;
        }
        self.peak_backlog = self.peak_backlog.max(self.backlog_bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use lqd::codec::{Decoded, FrameDecoder};

    use super::*;
    use crate::fanout::changes::Seen;

    /// The messages of a burst: each change's number, `None` for the CatchUpComplete.
    fn changes(model: Model, burst: &[u8]) -> Vec<Option<u64>> {
        let mut out = Vec::new();
        let mut rest = burst;
        while !rest.is_empty() {
            let Decoded::Frame { message, consumed } =
                FrameDecoder::default().decode(rest).unwrap()
            else {
                panic!("a burst ends with a whole frame");
            };
            out.push(match model.classify(message, Some(XID)).unwrap() {
                Seen::Change { k } => Some(k),
                Seen::Status {
                    status: Status::CatchUpComplete,
                    ..
                } => None,
                other => panic!("{other:?} in a burst"),
            });
            rest = &rest[consumed..];
        }
        out
    }

    #[test]
    fn a_burst_is_every_change_or_its_keys_own() {
        let model = Model::new(100).unwrap();
        let bursts = burst_frames(model, 7).unwrap();
        assert_eq!(bursts.len(), 1);
        let all: Vec<Option<u64>> = (0..7).map(Some).chain([None]).collect();
        assert_eq!(changes(model, &bursts[0]), all);

        let kind = FilterKind::RemoteId;
        let model = model.keyed(Keys { kind, count: 4 }).unwrap();
        let bursts = burst_frames(model, 7).unwrap();
        assert_eq!(bursts.len(), 4);
        assert_eq!(changes(model, &bursts[0]), [Some(0), Some(4), None]);
        assert_eq!(changes(model, &bursts[1]), [Some(1), Some(5), None]);
        assert_eq!(changes(model, &bursts[3]), [Some(3), None]);
    }
}
