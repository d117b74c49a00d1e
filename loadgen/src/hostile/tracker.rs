//! The attacking connections: when each was opened, from where, and what became of it.
//!
//! Every connection an attacker opens is recorded here, by its local address: the peer lqd
//! names in its log. Most are then watched by one thread, a `mio::Poll` that reads whatever lqd
//! sends (keeping the first octets) and notes when lqd ends the connection (end of stream or
//! reset). A connection that must not be read (an Active requestor that stopped reading) is
//! parked instead, and drained only at the end. At the end every connection lqd has not closed
//! is closed here, and marked so: lqd did not close it.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use mio::{Events, Interest, Poll, Token, Waker};

/// Octets kept of what lqd sent on each connection.
const KEEP: usize = 4096;
/// The waker's token; connections use their number.
const WAKER: Token = Token(usize::MAX);
/// How long a parked connection lqd closed is drained to see its end.
const DRAIN: Duration = Duration::from_secs(2);

/// One attacking connection.
#[derive(Debug, Clone)]
pub(super) struct Conn {
    /// Its local address: lqd's peer.
    pub(super) local: SocketAddr,
    /// When the attacker started connecting.
    pub(super) opened: SystemTime,
    /// When the attacker saw lqd end it (end of stream or reset).
    pub(super) seen_closed: Option<SystemTime>,
    /// Still open at the end of the wait: when loadgen closed it.
    pub(super) closed_by_us: Option<SystemTime>,
    /// The first octets lqd sent.
    pub(super) received: Vec<u8>,
}

/// Where attack threads record their connections (cloned into each).
#[derive(Clone)]
pub(super) struct Recorder {
    conns: Arc<Mutex<Vec<Conn>>>,
    parked: Arc<Mutex<Vec<(usize, TcpStream)>>>,
    tx: mpsc::Sender<Watch>,
    waker: Arc<Waker>,
}

/// A connection handed to the watcher; `counter` is decremented when lqd closes it.
struct Watch {
    id: usize,
    stream: TcpStream,
    counter: Option<Arc<AtomicUsize>>,
}

impl Recorder {
    /// Records a connection opened (connect started) at `opened`; its number.
    pub(super) fn open(&self, stream: &TcpStream, opened: SystemTime) -> Result<usize, String> {
        let local = stream
            .local_addr()
            .map_err(|e| format!("an attacking connection's address: {e}"))?;
        let mut conns = self.conns.lock().map_err(|_| "the tracker's lock")?;
        conns.push(Conn {
            local,
            opened,
            seen_closed: None,
            closed_by_us: None,
            received: Vec::new(),
        });
        Ok(conns.len() - 1)
    }

    /// Hands connection `id` to the watcher; `counter` (the attacker's count of its open
    /// connections) goes down by one when lqd closes it.
    pub(super) fn watch(
        &self,
        id: usize,
        stream: TcpStream,
        counter: Option<Arc<AtomicUsize>>,
    ) -> Result<(), String> {
        stream
            .set_nonblocking(true)
            .map_err(|e| format!("an attacking connection: {e}"))?;
        self.tx
            .send(Watch {
                id,
                stream,
                counter,
            })
            .map_err(|_| "the tracker has stopped".to_owned())?;
        self.waker
            .wake()
            .map_err(|e| format!("waking the tracker: {e}"))
    }

    /// Keeps connection `id` unread until the end.
    pub(super) fn park(&self, id: usize, stream: TcpStream) -> Result<(), String> {
        self.parked
            .lock()
            .map_err(|_| "the tracker's lock")?
            .push((id, stream));
        Ok(())
    }

    /// Each connection's local address and opening time, so far.
    pub(super) fn snapshot(&self) -> Vec<(SocketAddr, SystemTime)> {
        self.conns
            .lock()
            .map(|c| c.iter().map(|c| (c.local, c.opened)).collect())
            .unwrap_or_default()
    }
}

/// The watcher thread and the records.
pub(super) struct Tracker {
    recorder: Recorder,
    stop: mpsc::Sender<()>,
    thread: JoinHandle<Result<HashMap<usize, mio::net::TcpStream>, String>>,
}

impl Tracker {
    /// Starts the watcher thread.
    pub(super) fn start(name: &str) -> Result<Self, String> {
        let poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(|e| e.to_string())?);
        let (tx, rx) = mpsc::channel();
        let (stop, stopped) = mpsc::channel();
        let recorder = Recorder {
            conns: Arc::new(Mutex::new(Vec::new())),
            parked: Arc::new(Mutex::new(Vec::new())),
            tx,
            waker: Arc::clone(&waker),
        };
        let conns = Arc::clone(&recorder.conns);
        let thread = std::thread::Builder::new()
            .name(format!("loadgen-{name}"))
            .spawn(move || watch(poll, &rx, &stopped, &conns))
            .map_err(|e| format!("cannot start the tracker thread: {e}"))?;
        Ok(Self {
            recorder,
            stop,
            thread,
        })
    }

    /// A handle for the attack threads.
    pub(super) fn recorder(&self) -> Recorder {
        self.recorder.clone()
    }

    /// Stops watching. Parked connections lqd closed (`closed_by_lqd`) are drained to see
    /// their end; every connection not closed by then is closed here and marked so. Every
    /// record, by number.
    pub(super) fn finish(self, closed_by_lqd: impl Fn(usize) -> bool) -> Result<Vec<Conn>, String> {
        let _ = self.stop.send(());
        let _ = self.recorder.waker.wake();
        let watched = self
            .thread
            .join()
            .map_err(|_| "the tracker thread panicked".to_owned())??;
        let parked = std::mem::take(
            &mut *self
                .recorder
                .parked
                .lock()
                .map_err(|_| "the tracker's lock")?,
        );
        let mut conns = std::mem::take(
            &mut *self
                .recorder
                .conns
                .lock()
                .map_err(|_| "the tracker's lock")?,
        );
        for (id, mut stream) in parked {
            let Some(c) = conns.get_mut(id) else { continue };
            if closed_by_lqd(id) && drain(&mut stream, c) {
                c.seen_closed = Some(SystemTime::now());
            }
        }
        let now = SystemTime::now();
        for c in conns.iter_mut().filter(|c| c.seen_closed.is_none()) {
            c.closed_by_us = Some(now);
        }
        // Dropping the streams closes the rest.
        drop(watched);
        Ok(conns)
    }
}

/// Reads a parked connection to its end (true), keeping its first octets, for at most
/// [`DRAIN`].
fn drain(stream: &mut TcpStream, c: &mut Conn) -> bool {
    if stream.set_read_timeout(Some(DRAIN)).is_err() {
        return false;
    }
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return true,
            Ok(n) => keep(c, chunk.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return e.kind() == io::ErrorKind::ConnectionReset,
        }
    }
}

fn keep(c: &mut Conn, bytes: &[u8]) {
    let room = KEEP.saturating_sub(c.received.len());
    c.received
        .extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
}

/// The watcher: registers what it is handed, reads what lqd sends, notes the ends. Returns
/// the connections still open when told to stop.
fn watch(
    mut poll: Poll,
    rx: &mpsc::Receiver<Watch>,
    stopped: &mpsc::Receiver<()>,
    conns: &Mutex<Vec<Conn>>,
) -> Result<HashMap<usize, mio::net::TcpStream>, String> {
    let mut open: HashMap<usize, (mio::net::TcpStream, Option<Arc<AtomicUsize>>)> = HashMap::new();
    let mut events = Events::with_capacity(1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match poll.poll(&mut events, Some(Duration::from_millis(50))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("epoll: {e}")),
        }
        while let Ok(w) = rx.try_recv() {
            let mut stream = mio::net::TcpStream::from_std(w.stream);
            poll.registry()
                .register(&mut stream, Token(w.id), Interest::READABLE)
                .map_err(|e| format!("epoll: {e}"))?;
            open.insert(w.id, (stream, w.counter));
        }
        for e in &events {
            let id = e.token().0;
            let Some((stream, _)) = open.get_mut(&id) else {
                continue;
            };
            let mut ended = false;
            let mut got = Vec::new();
            loop {
                match stream.read(&mut chunk) {
                    Ok(0) => {
                        ended = true;
                        break;
                    }
                    Ok(n) => {
                        if got.len() < KEEP {
                            got.extend_from_slice(chunk.get(..n).unwrap_or_default());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        ended = true;
                        break;
                    }
                }
            }
            if let Ok(mut conns) = conns.lock() {
                if let Some(c) = conns.get_mut(id) {
                    keep(c, &got);
                    if ended {
                        c.seen_closed = Some(SystemTime::now());
                    }
                }
            }
            if ended {
                if let Some((mut stream, counter)) = open.remove(&id) {
                    let _ = poll.registry().deregister(&mut stream);
                    if let Some(c) = counter {
                        c.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            }
        }
        if stopped.try_recv().is_ok() {
            // Whatever was handed over meanwhile is still open.
            while let Ok(w) = rx.try_recv() {
                open.insert(w.id, (mio::net::TcpStream::from_std(w.stream), w.counter));
            }
            return Ok(open.into_iter().map(|(id, (s, _))| (id, s)).collect());
        }
    }
}
