//! Active Leasequery against a real `lqd` process on loopback (digest §10; decisions D2, D9,
//! D19): a reconnect with the last base-time catches up exactly the bindings that changed,
//! START_TIME older than the journal gets DataMissing, a requestor that stops reading costs
//! lqd no memory and gets each binding's current state once it reads again while another
//! requestor keeps up, the journal survives `kill -9`, ACTIVE_LQ_SEND_TIMEOUT closes a
//! requestor that never reads, SIGTERM ends a stream with QueryTerminated, and tshark decodes a
//! captured stream.

#[path = "common/lqd.rs"]
mod common;
#[path = "common/prometheus.rs"]
mod prometheus;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Lqd, REQUESTOR, link, read_answers, rss_anon_kib, wait_for_log};
use lqd::codec::{
    BuildOptions, Decoded, DhcpOption, FrameDecoder, MessageBuilder, MessageRepr, MessageType,
    OptionCode, QueryType, ServerTime, Status,
};

/// What a requestor holds for one client: its addresses and prefixes with lifetime left.
type State = BTreeSet<Ipv6Addr>;

/// One message as the requestor reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    kind: MessageType,
    status: Option<Status>,
    base_time: Option<ServerTime>,
    client: Option<(Vec<u8>, State)>,
}

fn parse(message: &[u8]) -> Msg {
    let m = MessageRepr::parse(message).expect("lqd sends parsable messages");
    let base_time = m.options.iter().find_map(|o| match o {
        DhcpOption::LqBaseTime(t) => Some(t),
        _ => None,
    });
    let client = match m.options.get(OptionCode::ClientData) {
        Some(DhcpOption::ClientData(cd)) => Some((
            cd.client_id().unwrap().as_bytes().to_vec(),
            cd.iter()
                .filter_map(|o| match o {
                    DhcpOption::IaAddr(x) if x.valid_lifetime > 0 => Some(x.address),
                    DhcpOption::IaPrefix(p) if p.valid_lifetime > 0 => Some(p.prefix),
                    _ => None,
                })
                .collect(),
        )),
        _ => None,
    };
    Msg {
        kind: m.msg_type(),
        status: m.options.status().map(|s| s.status),
        base_time,
        client,
    }
}

/// An Active requestor: one connection, one query.
struct Requestor {
    s: TcpStream,
    dec: FrameDecoder,
    buf: Vec<u8>,
    replica: BTreeMap<Vec<u8>, State>,
    received: usize,
    last_base_time: Option<ServerTime>,
}

impl Requestor {
    fn request(start: Option<ServerTime>) -> Vec<u8> {
        let mut b = MessageBuilder::active_leasequery(0x51)
            .client_id(&REQUESTOR)
            .oro(&[OptionCode::LqBaseTime]);
        if let Some(t) = start {
            b = b.start_time(t);
        }
        b.build_frame().unwrap()
    }

    fn connect(addr: SocketAddr, start: Option<ServerTime>) -> Self {
        Self::on(TcpStream::connect(addr).unwrap(), start)
    }

    /// With a small receive buffer, so little is parked in the kernel when it stops reading.
    fn connect_small(addr: SocketAddr, start: Option<ServerTime>) -> Self {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        sock.connect(&addr.into()).unwrap();
        Self::on(sock.into(), start)
    }

    fn on(mut s: TcpStream, start: Option<ServerTime>) -> Self {
        s.write_all(&Self::request(start)).unwrap();
        Self {
            s,
            dec: FrameDecoder::default(),
            buf: Vec::new(),
            replica: BTreeMap::new(),
            received: 0,
            last_base_time: None,
        }
    }

    /// The next message, or `None` when nothing arrives within `wait`.
    fn next(&mut self, wait: Duration) -> Option<Msg> {
        let deadline = Instant::now() + wait;
        let mut chunk = [0u8; 65536];
        loop {
            if let Decoded::Frame { message, consumed } = self.dec.decode(&self.buf).unwrap() {
                let m = parse(message);
                self.buf.drain(..consumed);
                self.received += 1;
                if let Some((duid, state)) = &m.client {
                    if state.is_empty() {
                        self.replica.remove(duid);
                    } else {
                        self.replica.insert(duid.clone(), state.clone());
                    }
                }
                self.last_base_time = m.base_time.or(self.last_base_time);
                return Some(m);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.s.set_read_timeout(Some(left)).unwrap();
            match self.s.read(&mut chunk) {
                Ok(0) => panic!("lqd closed the connection"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Reads until nothing has arrived for `quiet`; the messages read.
    fn read_until_quiet(&mut self, quiet: Duration) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Some(m) = self.next(quiet) {
            out.push(m);
        }
        out
    }
}

/// Every binding lqd holds, by Bulk by-link-address over `links` links, changed at or after
/// `start` when given (D20).
fn bulk(lqd: &Lqd, links: u16, start: Option<ServerTime>) -> BTreeMap<Vec<u8>, State> {
    let mut s = lqd.connect();
    let mut all = BTreeMap::new();
    for k in 1..=links {
        let mut b = MessageBuilder::leasequery(u32::from(k))
            .client_id(&REQUESTOR)
            .lq_query(QueryType::ByLinkAddress, link(k), |q| q);
        if let Some(t) = start {
            b = b.start_time(t);
        }
        s.write_all(&b.build_frame().unwrap()).unwrap();
        for m in read_answers(&mut s, &[u32::from(k)]) {
            if let Some((duid, state)) = parse(&m).client {
                all.insert(duid, state);
            }
        }
    }
    all
}

/// A reconnect with the saved base-time catches up exactly the bindings that changed since
/// (what a Bulk query with the same START_TIME returns, D19/D20), then CatchUpComplete.
#[test]
fn a_reconnect_with_the_last_base_time_catches_up_what_changed_d19() {
    let lqd = Lqd::start_with_demo(
        "catchup",
        "",
        "clients = 500\nlinks = 2\nchanges_per_sec = 100\nseed = 4\nchurn_limit = 600\n",
    );
    let mut r = Requestor::connect(lqd.addr, None);
    let reply = r.next(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (reply.kind, reply.status),
        (MessageType::LeasequeryReply, Some(Status::Success))
    );
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        r.next(Duration::from_millis(200));
    }
    let saved = r.last_base_time.expect("base-time in every message (D18)");
    drop(r);
    wait_for_log(&lqd, "demo: churn limit reached", 60);
    std::thread::sleep(Duration::from_secs(1));

    let changed = bulk(&lqd, 2, Some(saved));
    assert!(!changed.is_empty(), "changes after the disconnect");
    let mut r = Requestor::connect(lqd.addr, Some(saved));
    let reply = r.next(Duration::from_secs(5)).unwrap();
    assert_eq!(reply.status, Some(Status::Success));
    let mut caught_up = Vec::new();
    loop {
        let m = r.next(Duration::from_secs(10)).expect("CatchUpComplete");
        if m.status == Some(Status::CatchUpComplete) {
            assert!(m.base_time.is_some());
            break;
        }
        caught_up.push(m.client.expect("catch-up data").0);
    }
    let sent: BTreeSet<_> = caught_up.iter().cloned().collect();
    assert_eq!(sent.len(), caught_up.len(), "each binding once");
    let live: BTreeSet<_> = changed.keys().cloned().collect();
    // The catch-up also names bindings that ended since (D5); Bulk lists only live ones.
    assert!(
        live.is_subset(&sent),
        "missing: {:?}",
        live.difference(&sent)
    );
    for (duid, state) in &r.replica {
        assert_eq!(changed.get(duid), Some(state), "current state");
    }
}

/// START_TIME before the oldest record of a journal that has wrapped: LEASEQUERY-REPLY with
/// DataMissing and base-time, then live updates (D19).
#[test]
fn start_time_older_than_the_journal_gets_data_missing_d19() {
    let lqd = Lqd::start_with_demo(
        "datamissing",
        "journal_size = 1048576",
        "clients = 20000\nlinks = 2\nchanges_per_sec = 200\nseed = 5\n",
    );
    wait_for_log(&lqd, "initial population sent", 60);
    std::thread::sleep(Duration::from_secs(1));
    let mut r = Requestor::connect(lqd.addr, Some(ServerTime(1)));
    let reply = r.next(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (reply.kind, reply.status),
        (MessageType::LeasequeryReply, Some(Status::DataMissing))
    );
    assert!(reply.base_time.is_some());
    // The end of the (empty) catch-up, then live updates.
    let end = r.next(Duration::from_secs(5)).expect("CatchUpComplete");
    assert_eq!(end.status, Some(Status::CatchUpComplete));
    let live = r.next(Duration::from_secs(5)).expect("live updates follow");
    assert_eq!(live.kind, MessageType::LeasequeryData);
    assert!(live.client.is_some());
}

/// START_TIME before the journal began (issue 13): a journal that never wrapped cannot know
/// what ended before it existed, so the catch-up gets DataMissing, on a fresh journal and after
/// a restart; a START_TIME from after it began catches up.
#[test]
fn start_time_before_the_journal_began_gets_data_missing_fresh_and_after_a_restart() {
    let began = lqd::feed::system_time();
    let mut lqd = Lqd::start("began", "");
    for round in ["fresh", "restarted"] {
        let mut r = Requestor::connect(lqd.addr, Some(ServerTime(began.0 - 3600)));
        let reply = r.next(Duration::from_secs(5)).unwrap();
        assert_eq!(
            (reply.kind, reply.status),
            (MessageType::LeasequeryReply, Some(Status::DataMissing)),
            "{round}"
        );
        let mut r = Requestor::connect(lqd.addr, Some(lqd::feed::system_time()));
        let reply = r.next(Duration::from_secs(5)).unwrap();
        assert_eq!(reply.status, Some(Status::Success), "{round}");
        lqd.kill9_and_restart();
    }
}

/// A requestor that closes is freed at once (issue 13): 50 rounds of 10 Active connections
/// from one address (the per-requestor limit) on a quiet feed, each round closing them and
/// connecting again: none is refused, and lqd's descriptors are back to where they were within
/// a second. Before, each closed connection held its descriptor and slot until the next
/// keepalive failed (one to two `active_idle_timeout`s).
#[test]
fn requestors_that_close_are_freed_at_once() {
    let lqd = Lqd::start_with_demo(
        "closers",
        "",
        "clients = 100\nlinks = 2\nchanges_per_sec = 1\nseed = 3\nchurn_limit = 0\n",
    );
    let pid = lqd.child.id();
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let baseline = fds();
    for round in 0..50 {
        let mut conns: Vec<Requestor> = (0..10)
            .map(|_| Requestor::connect(lqd.addr, None))
            .collect();
        for (i, r) in conns.iter_mut().enumerate() {
            let reply = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                r.next(Duration::from_secs(5))
            }))
            .ok()
            .flatten()
            .unwrap_or_else(|| {
                let log = lqd.log();
                let tail: Vec<_> = log.lines().rev().take(30).collect();
                panic!(
                    "round {round}, connection {i}: refused\n{}",
                    tail.join("\n")
                )
            });
            assert_eq!(reply.status, Some(Status::Success));
        }
        drop(conns);
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while fds() > baseline {
        assert!(
            Instant::now() < deadline,
            "{} descriptors, {baseline} before",
            fds()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!lqd.log().contains("per-requestor limit"), "{}", lqd.log());
}

/// A requestor that half-closes after its query keeps its stream (the digest allows it).
#[test]
fn a_half_closed_requestor_keeps_its_stream() {
    let lqd = Lqd::start_with_demo(
        "halfclosed",
        "",
        "clients = 100\nlinks = 2\nchanges_per_sec = 20\nseed = 3\n",
    );
    let mut r = Requestor::connect(lqd.addr, None);
    r.s.shutdown(std::net::Shutdown::Write).unwrap();
    let reply = r.next(Duration::from_secs(5)).unwrap();
    assert_eq!(reply.status, Some(Status::Success));
    // The keepalive lqd sends on the EOF, then changes, for seconds.
    let until = Instant::now() + Duration::from_secs(2);
    let mut changes = 0;
    while Instant::now() < until {
        if let Some(m) = r.next(Duration::from_millis(500)) {
            changes += usize::from(m.client.is_some());
        }
    }
    assert!(changes > 10, "{changes} changes after the half-close");
    assert!(!lqd.log().contains("connection closed"), "{}", lqd.log());
}

/// A requestor that stops reading while 100,000 changes to 1,000 bindings are fed: another
/// requestor keeps up all along, lqd holds no more for the blocked one than its buffer's high
/// water however far behind it falls, lqd's heap does not grow with the backlog, and once the
/// slow one reads again it gets each binding's current state, not the history.
#[test]
fn a_requestor_that_stops_reading_costs_nothing_and_gets_current_state_once() {
    let metrics = common::free_metrics_addr();
    let lqd = Lqd::start_with_demo(
        "slowactive",
        &format!(
            "journal_size = 67108864\ntcp_send_buffer = 16384\nhigh_water = {HIGH_WATER}\n\
             metrics_listen = \"{metrics}\""
        ),
        "clients = 1000\nlinks = 1\nchanges_per_sec = 20000\nseed = 6\nchurn_limit = 100000\n",
    );
    let pid = lqd.child.id();
    let mut fast = Requestor::connect(lqd.addr, Some(ServerTime(1)));
    let mut slow = Requestor::connect_small(lqd.addr, Some(ServerTime(1)));
    let slow_peer = slow.s.local_addr().unwrap().to_string();
    let anon_before = rss_anon_kib(pid);
    let mut anon_peak = anon_before;
    // What lqd holds for the blocked requestor, from `/requestors` (taken once a second).
    let (mut buffered_max, mut views) = (0u64, 0usize);
    let mut viewed = Instant::now();
    let started = Instant::now();
    while !lqd.log().contains("demo: churn limit reached") {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{}",
            lqd.log()
        );
        for _ in 0..1000 {
            if fast.next(Duration::from_millis(1)).is_none() {
                break;
            }
        }
        anon_peak = anon_peak.max(rss_anon_kib(pid));
        if viewed.elapsed() >= Duration::from_millis(250) {
            viewed = Instant::now();
            if let Some(b) = buffered_for(metrics, &slow_peer) {
                buffered_max = buffered_max.max(b);
                views += 1;
            }
        }
    }
    let done = Instant::now();
    fast.read_until_quiet(Duration::from_millis(500));
    let fast_lag = done.elapsed();
    let truth = bulk(&lqd, 1, None);
    assert_eq!(fast.replica, truth, "the requestor that kept up");
    assert!(
        fast_lag < Duration::from_secs(5),
        "the fast requestor finished {fast_lag:?} after the feed"
    );
    // The feed runs about 5 s: the view was taken several times while the slow requestor was
    // blocked, and lqd never held more for it than one fill past the high water.
    assert!(views >= 3, "{views} views of /requestors");
    assert!(
        buffered_max > 0 && buffered_max <= HIGH_WATER + 4096,
        "lqd held {buffered_max} octets for the blocked requestor (high water {HIGH_WATER})"
    );

    slow.read_until_quiet(Duration::from_millis(500));
    assert_eq!(slow.replica, truth, "current state after the backlog");
    assert!(
        slow.received < 6_000,
        "{} messages for 1,000 bindings and 100,000 changes: coalesced",
        slow.received
    );
    // The heap holds, besides the requestors, lqd's own bounded structures: the encode cache
    // (16,384 slots, each with a decoded binding of about 1 KiB here while its record was its
    // binding's newest when read: up to about 20 MiB, how full depends on timing) and the
    // postings and journal index of the 100,000 records. The backlog's messages, kept for the
    // blocked requestor, would add their 100,000 - 6,000 messages on top (BENCHMARKS.md, "The
    // 5 ms slice and the stalled-reader test").
    assert!(
        anon_peak < anon_before + (16 + ENCODE_CACHE_MIB) * 1024,
        "lqd heap {anon_before} KiB before, {anon_peak} KiB peak with a requestor blocked"
    );
    eprintln!(
        "fast: {} messages, slow: {} messages; lqd heap {anon_before} -> {anon_peak} KiB; \
         held for the slow one at most {buffered_max} octets ({views} views); fast done \
         {fast_lag:?} after the feed",
        fast.received, slow.received
    );
}

/// The stalled-reader test's `high_water`: what lqd may hold for one connection.
const HIGH_WATER: u64 = 65_536;
/// A full encode cache in the stalled-reader test, MiB (16,384 decoded bindings and messages).
const ENCODE_CACHE_MIB: u64 = 20;

/// The octets lqd holds for the connection from `peer`, from `/requestors`; `None` before the
/// loop's first view or when the connection is not in it.
fn buffered_for(metrics: SocketAddr, peer: &str) -> Option<u64> {
    let (_, body) = prometheus::try_get(metrics, "/requestors").ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["connections"]
        .as_array()?
        .iter()
        .find(|c| c["peer"].as_str() == Some(peer))?["bytes_buffered"]
        .as_u64()
}

/// `kill -9` while changes are fed, restart on the same journal: a catch-up from a base-time
/// saved before the kill still answers, with every change journaled before it.
#[test]
fn the_journal_survives_kill_9() {
    let mut lqd = Lqd::start_with_demo(
        "kill9",
        "",
        "clients = 300\nlinks = 2\nchanges_per_sec = 100\nseed = 8\n",
    );
    let mut r = Requestor::connect(lqd.addr, None);
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        r.next(Duration::from_millis(100));
    }
    let saved = r.last_base_time.unwrap();
    drop(r);
    std::thread::sleep(Duration::from_secs(2));
    let before_kill = bulk(&lqd, 2, Some(saved));
    assert!(!before_kill.is_empty());
    lqd.kill9_and_restart();
    let log = lqd.log();
    let opened = log
        .lines()
        .find(|l| l.contains("journal opened"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(!opened.contains(" records=0 "), "{opened}");

    let mut r = Requestor::connect(lqd.addr, Some(saved));
    let reply = r.next(Duration::from_secs(5)).unwrap();
    assert_eq!(
        reply.status,
        Some(Status::Success),
        "the journal still reaches back"
    );
    let mut sent = BTreeSet::new();
    loop {
        let m = r.next(Duration::from_secs(10)).expect("CatchUpComplete");
        if m.status == Some(Status::CatchUpComplete) {
            break;
        }
        if let Some((duid, _)) = m.client {
            sent.insert(duid);
        }
    }
    let lost: Vec<_> = before_kill.keys().filter(|d| !sent.contains(*d)).collect();
    assert!(lost.is_empty(), "changes lost in the kill: {lost:?}");
}

/// ACTIVE_LQ_SEND_TIMEOUT: a requestor that never reads is closed once lqd's output to it has
/// not moved for that long.
#[test]
fn a_requestor_that_never_reads_is_closed_after_the_send_timeout() {
    let lqd = Lqd::start_with_demo(
        "sendtimeout",
        "active_send_timeout = 2\ntcp_send_buffer = 4096",
        "clients = 2000\nlinks = 1\nchanges_per_sec = 2000\nseed = 9\n",
    );
    let _stuck = Requestor::connect_small(lqd.addr, Some(ServerTime(1)));
    wait_for_log(&lqd, "blocked longer than ACTIVE_LQ_SEND_TIMEOUT", 15);
}

/// A tshark capture, stopped if the test fails half-way.
struct Capture(std::process::Child);

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A live capture of an Active stream (catch-up, CatchUpComplete, a keepalive, DataMissing)
/// decoded by tshark: every message recognised, none malformed.
#[test]
fn tshark_decodes_a_captured_active_stream() {
    let lqd = Lqd::start_with_demo(
        "capture",
        "journal_size = 1048576\nactive_idle_timeout = 1",
        "clients = 12000\nlinks = 2\nchanges_per_sec = 100\nseed = 10\n",
    );
    wait_for_log(&lqd, "initial population sent", 60);
    std::thread::sleep(Duration::from_secs(1));
    let mut first = Requestor::connect(lqd.addr, None);
    let saved = first
        .next(Duration::from_secs(5))
        .unwrap()
        .base_time
        .unwrap();
    drop(first);
    std::thread::sleep(Duration::from_secs(1));

    let file = lqd.dir.join("active.pcapng");
    let mut dump = Capture(
        std::process::Command::new("tshark")
            .args(["-i", "lo", "-f"])
            .arg(format!("tcp port {}", lqd.addr.port()))
            .arg("-w")
            .arg(&file)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("tshark runs (run .ci/setup)"),
    );
    // tshark says "Capturing on" once it is listening.
    let mut err = dump.0.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut b = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("Capturing on") {
        let n = err.read(&mut b).unwrap();
        assert!(n > 0, "tshark: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&b[..n]);
    }
    // dumpcap may still be starting when tshark says so.
    std::thread::sleep(Duration::from_secs(1));

    // A catch-up from the saved base-time, then live updates.
    let mut r = Requestor::connect(lqd.addr, Some(saved));
    let mut kinds = Vec::new();
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        if let Some(m) = r.next(Duration::from_millis(200)) {
            kinds.push((m.kind, m.status, m.client.is_some()));
        }
    }
    assert!(kinds.contains(&(MessageType::LeasequeryData, None, true)));
    assert!(kinds.contains(&(
        MessageType::LeasequeryData,
        Some(Status::CatchUpComplete),
        false
    )));
    // A filter nothing matches: only keepalives (D2).
    let mut quiet = TcpStream::connect(lqd.addr).unwrap();
    quiet
        .write_all(
            &MessageBuilder::active_leasequery(0x52)
                .client_id(&REQUESTOR)
                .lq_query(QueryType::ByClientId, Ipv6Addr::UNSPECIFIED, |q| {
                    q.client_id(&[0, 3, 0, 1, 9, 9, 9, 9, 9, 9])
                })
                .build_frame()
                .unwrap(),
        )
        .unwrap();
    let mut quiet = Requestor {
        s: quiet,
        dec: FrameDecoder::default(),
        buf: Vec::new(),
        replica: BTreeMap::new(),
        received: 0,
        last_base_time: None,
    };
    assert_eq!(
        quiet.next(Duration::from_secs(5)).unwrap().kind,
        MessageType::LeasequeryReply
    );
    let keepalive = quiet.next(Duration::from_secs(5)).expect("a keepalive");
    assert_eq!(
        (keepalive.kind, keepalive.status, keepalive.client.is_some()),
        (MessageType::LeasequeryData, None, false)
    );
    assert!(keepalive.base_time.is_some());
    // DataMissing: the 1 MiB journal no longer holds the initial population.
    let mut old = Requestor::connect(lqd.addr, Some(ServerTime(1)));
    assert_eq!(
        old.next(Duration::from_secs(5)).unwrap().status,
        Some(Status::DataMissing)
    );
    std::thread::sleep(Duration::from_millis(500));
    drop((r, quiet, old));
    std::thread::sleep(Duration::from_millis(500));
    let _ = std::process::Command::new("kill")
        .arg("-INT")
        .arg(dump.0.id().to_string())
        .status();
    dump.0.wait().unwrap();

    let decode = |filter: &str, fields: &[&str]| {
        let mut c = std::process::Command::new("tshark");
        c.arg("-n")
            .arg("-r")
            .arg(&file)
            .args([
                "-d",
                &format!("tcp.port=={},dhcpv6.bulk_leasequery", lqd.addr.port()),
            ])
            .args(["-o", "tcp.desegment_tcp_streams:TRUE"])
            .args(["-Y", filter, "-T", "fields"]);
        for f in fields {
            c.args(["-e", f]);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // Nothing lqd sent is malformed or raises a DHCPv6 warning (TCP's own notes, such as the
    // reset of a connection closed with data unread, are not about the protocol).
    let port = lqd.addr.port();
    let bad = decode(
        &format!(
            "tcp.srcport == {port} && (_ws.malformed || (dhcpv6.bulk_leasequery && _ws.expert.severity >= 6291456))"
        ),
        &["frame.number", "_ws.expert.message"],
    );
    assert!(
        bad.trim().is_empty(),
        "lqd's frames tshark objects to: {bad}"
    );
    // tshark 4.0 knows no message type 22 in its Bulk dissector: that is the only complaint
    // it may have about the requestors' frames.
    let theirs = decode(
        &format!(
            "tcp.dstport == {port} && (_ws.malformed || (dhcpv6.bulk_leasequery && _ws.expert.severity >= 6291456))"
        ),
        &["_ws.expert.message"],
    );
    for line in theirs.lines() {
        assert!(
            line.split(',')
                .all(|m| m == "Message Type 22 not allowed by DHCPv6 Bulk Leasequery"),
            "{line}"
        );
    }
    let types = decode(
        "dhcpv6.bulk_leasequery",
        &["dhcpv6.bulk_leasequery.msgtype", "dhcpv6.status_code"],
    );
    let all = types.replace('\n', " ");
    for (code, what) in [("22", "ACTIVELEASEQUERY"), ("15", "REPLY"), ("17", "DATA")] {
        assert!(
            types
                .lines()
                .any(|l| l.split(['\t', ',']).any(|v| v == code)),
            "no {what} decoded: {all}"
        );
    }
    for (status, what) in [("13", "CatchUpComplete"), ("12", "DataMissing")] {
        assert!(
            types.lines().any(|l| l
                .split('\t')
                .nth(1)
                .is_some_and(|s| s.split(',').any(|v| v == status))),
            "no {what} decoded: {all}"
        );
    }
}

/// SIGTERM ends a running Active query with LEASEQUERY-DONE QueryTerminated, its last message
/// (D9), and lqd stops cleanly.
#[test]
fn sigterm_ends_active_queries_with_query_terminated_d9() {
    let mut lqd = Lqd::start("activeterm", "");
    let mut r = Requestor::connect(lqd.addr, None);
    assert_eq!(
        r.next(Duration::from_secs(5)).unwrap().kind,
        MessageType::LeasequeryReply
    );
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(lqd.child.id().to_string())
        .status()
        .unwrap();
    let last = loop {
        let m = r
            .next(Duration::from_secs(5))
            .expect("DONE before the close");
        if m.kind != MessageType::LeasequeryData {
            break m;
        }
    };
    assert_eq!(
        (last.kind, last.status),
        (MessageType::LeasequeryDone, Some(Status::QueryTerminated))
    );
    assert!(last.base_time.is_some(), "asked for, so in every message");
    let exit = lqd.child.wait().unwrap();
    assert!(exit.success(), "{exit:?}\n{}", lqd.log());
}
