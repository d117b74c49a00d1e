//! The `jsonl:unix` socket acknowledges what lqd journaled (issue 20): a named writer numbers
//! its lines, lqd answers its hello with the last line it holds, reports its progress and
//! answers a sync; a writer at full speed with lqd killed (`kill -9`) at random moments resumes
//! exactly, so that at the end lqd holds the writer's state, every line's change is in the
//! journal once, in order, and none is missing. And the socket is there when lqd's TCP port
//! answers, and gone after a clean stop.

#[path = "common/lqd.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv6Addr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Lqd, link_addresses, spawn_with_source, start_with_source, wait_for_log};
use lqd::store::journal::{FlushPolicy, JournalFile};
use lqd::store::record;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const LINK: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 7, 0, 0, 0, 1);
const JOURNAL_SIZE: u64 = 64 << 20;
/// The most lines the full-speed writer sends in one round (seven rounds: well inside
/// JOURNAL_SIZE at about 120 octets a record).
const LINES_PER_ROUND: u64 = 60_000;

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn addr(n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 7, 0, 0, 0, n)
}

/// Line `seq`: client `n` holds address `n` on `LINK` with this valid lifetime, or released it.
fn line(seq: u64, n: u16, valid: Option<u32>, cltt: u64) -> String {
    let (state, valid) = match valid {
        Some(v) => ("active", v),
        None => ("released", 0),
    };
    format!(
        r#"{{"seq":{seq},"client_id":"00:03:00:01:02:00:00:00:{:02x}:{:02x}","link":"{LINK}","kind":"na","address":"{}","iaid":1,"preferred_lifetime":0,"valid_lifetime":{valid},"cltt":{cltt},"state":"{state}"}}"#,
        n >> 8,
        n & 0xff,
        addr(n),
    )
}

fn socket_of(lqd: &Lqd) -> PathBuf {
    lqd.dir.join("feed.sock")
}

fn start(name: &str) -> (Lqd, PathBuf) {
    let dir = std::env::temp_dir().join(format!("lqd-e2e-{name}-{}", std::process::id()));
    let sock = dir.join("feed.sock");
    let source = format!("jsonl:unix:{}", sock.display());
    let lqd = start_with_source(
        name,
        &[],
        &format!("source = {source:?}\njournal_size = {JOURNAL_SIZE}"),
        &format!("source: {source}"),
    );
    assert_eq!(socket_of(&lqd), sock);
    (lqd, sock)
}

/// A connection to lqd's feed socket: writes lines, reads what lqd writes back.
struct Conn {
    stream: UnixStream,
    lines: BufReader<UnixStream>,
}

impl Conn {
    fn open(sock: &Path) -> Self {
        let stream = UnixStream::connect(sock).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let lines = BufReader::new(stream.try_clone().unwrap());
        Self { stream, lines }
    }

    fn send(&mut self, text: &str) {
        self.stream
            .write_all(format!("{text}\n").as_bytes())
            .unwrap();
    }

    fn next(&mut self) -> Value {
        let mut l = String::new();
        self.lines.read_line(&mut l).unwrap();
        assert!(l.ends_with('\n'), "lqd closed the connection: {l:?}");
        serde_json::from_str(&l).unwrap()
    }

    /// Says hello; the seq lqd holds for the writer.
    fn hello(&mut self, name: &str) -> Option<u64> {
        self.send(&json!({ "hello": name }).to_string());
        let reply = self.next();
        assert_eq!(reply["writer"], name, "{reply}");
        reply["ack"].as_u64()
    }

    /// Sends a sync; the ack of its answer (acks before it are skipped).
    fn sync(&mut self) -> Option<u64> {
        self.send(r#"{"sync":true}"#);
        loop {
            let m = self.next();
            if m["sync"] == true {
                return m["ack"].as_u64();
            }
        }
    }
}

#[test]
fn a_named_writer_is_told_what_lqd_holds_and_what_it_rejected() {
    let (mut lqd, sock) = start("ack-protocol");
    let t = now_unix();
    let mut w = Conn::open(&sock);
    assert_eq!(
        w.hello("kea-1"),
        None,
        "a new writer: lqd holds nothing of it"
    );
    w.send(&line(1, 1, Some(7200), t));
    w.send(&line(2, 2, Some(7200), t));
    // A bad line with its seq, a line without one, a seq that does not increase.
    w.send(r#"{"seq":3,"client_id":"00:01"}"#);
    w.send(&line(3, 3, Some(7200), t).replace(r#""seq":3,"#, ""));
    w.send(&line(2, 4, Some(7200), t));
    // An identical re-send: it changes nothing, and is acknowledged all the same.
    w.send(&line(4, 1, Some(7200), t));
    let rejected = w.next();
    assert_eq!(
        (rejected["rejected"].as_u64(), rejected["line"].as_u64()),
        (Some(3), Some(4))
    );
    assert!(
        rejected["error"]
            .as_str()
            .unwrap()
            .contains("link is missing")
    );
    let rejected = w.next();
    assert_eq!(rejected["rejected"], Value::Null);
    assert!(
        rejected["error"]
            .as_str()
            .unwrap()
            .contains("seq is missing"),
        "{rejected}"
    );
    let rejected = w.next();
    assert_eq!(rejected["rejected"].as_u64(), Some(2));
    assert!(
        rejected["error"]
            .as_str()
            .unwrap()
            .contains("not above the previous line's 3")
    );
    assert_eq!(w.sync(), Some(4));
    let mut wanted: BTreeSet<Ipv6Addr> = [addr(1), addr(2)].into();
    assert_eq!(link_addresses(&lqd, LINK), wanted, "synced: queries see it");

    // Acks come by themselves as lines are journaled.
    w.send(&line(5, 5, Some(7200), t));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = w.next();
        if m["ack"].as_u64() == Some(5) {
            assert_eq!(m.as_object().unwrap().len(), 1, "{m}");
            break;
        }
        assert!(Instant::now() < deadline, "no ack of line 5");
    }
    wanted.insert(addr(5));

    // One connection per writer; a hello only first; names within bounds.
    let mut twin = Conn::open(&sock);
    twin.send(r#"{"hello":"kea-1"}"#);
    assert!(
        twin.next()["error"]
            .as_str()
            .unwrap()
            .contains("connected already")
    );
    let mut late = Conn::open(&sock);
    late.send(&line(1, 9, Some(7200), t).replace(r#""seq":1,"#, ""));
    late.send(r#"{"hello":"late"}"#);
    assert!(
        late.next()["error"]
            .as_str()
            .unwrap()
            .contains("first line")
    );
    let mut long = Conn::open(&sock);
    long.send(&json!({ "hello": "x".repeat(65) }).to_string());
    assert!(
        long.next()["error"]
            .as_str()
            .unwrap()
            .contains("1 to 64 octets")
    );
    wanted.insert(addr(9));

    // A writer without a hello works as before; its sync is answered too.
    let mut plain = Conn::open(&sock);
    plain.send(&line(1, 10, Some(7200), t).replace(r#""seq":1,"#, ""));
    assert_eq!(plain.sync(), None);
    wanted.insert(addr(10));
    assert_eq!(link_addresses(&lqd, LINK), wanted);

    // After a restart, and on a new connection, the writer learns where it was; lines it
    // re-sends from an older place are not applied again.
    drop(w);
    lqd.kill9_and_restart_until("source: jsonl:unix");
    let mut w = Conn::open(&sock);
    assert_eq!(w.hello("kea-1"), Some(5));
    w.send(&line(2, 2, None, t));
    w.send(&line(6, 6, Some(7200), t));
    assert_eq!(w.sync(), Some(6));
    wanted.insert(addr(6));
    assert_eq!(
        link_addresses(&lqd, LINK),
        wanted,
        "line 2 was not applied again"
    );
    let log = lqd.log();
    assert!(log.contains("resumes at seq 2, at or below seq 5"), "{log}");
}

/// The writer's side of the full-speed test: its model of the state, the lines lqd has not
/// acknowledged yet, and what each line should leave in lqd's journal.
struct Writer {
    rng: SmallRng,
    clients: u16,
    cltt: u64,
    /// Client → its lease's valid lifetime, while it holds one.
    model: BTreeMap<u16, u32>,
    next_seq: u64,
    /// Lines sent or to send, not yet acknowledged.
    unacked: VecDeque<(u64, String)>,
    /// The highest ack lqd sent.
    acked: Option<u64>,
    /// The lines that change a binding: each must be one journal record, carrying its seq.
    changes: Vec<u64>,
    bad: u64,
    noop: u64,
}

impl Writer {
    /// The next line, applied to the model.
    fn generate(&mut self) -> (u64, String) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let n = self.rng.gen_range(1..=self.clients);
        let roll = self.rng.gen_range(0..100);
        let current = self.model.get(&n).copied();
        let text = if roll == 0 {
            // A bad line (no link): rejected, and acknowledged.
            self.bad += 1;
            line(seq, n, Some(1), self.cltt).replace(&format!(r#""link":"{LINK}","#), "")
        } else if roll == 1 {
            // What lqd has already: no record, acknowledged all the same.
            self.noop += 1;
            line(seq, n, current, self.cltt)
        } else {
            let next = match current {
                Some(_) if roll < 20 => None,
                _ => Some(86_400 + u32::try_from(seq).unwrap()),
            };
            match next {
                Some(v) => self.model.insert(n, v),
                None => self.model.remove(&n),
            };
            self.changes.push(seq);
            line(seq, n, next, self.cltt)
        };
        (seq, text)
    }

    /// Forgets the lines lqd acknowledged.
    fn trim(&mut self) {
        while self
            .unacked
            .front()
            .is_some_and(|(s, _)| Some(*s) <= self.acked)
        {
            self.unacked.pop_front();
        }
    }
}

/// Connects, says hello, checks what lqd holds against what it acknowledged before, re-sends
/// what it does not hold; then writes at full speed until lqd goes (or `stop` is set) and
/// returns the writer.
fn write_until_gone(sock: &Path, mut w: Writer, stop: &AtomicBool, round: usize) -> Writer {
    let mut c = Conn::open(sock);
    let held = c.hello("full-speed");
    let sent = w.next_seq.checked_sub(1);
    assert!(
        held >= w.acked,
        "round {round}: lqd holds {held:?}, less than it acknowledged ({:?})",
        w.acked
    );
    assert!(
        held <= sent,
        "round {round}: lqd holds {held:?}, more than was sent ({sent:?})"
    );
    if round > 0 {
        assert!(held.is_some(), "round {round}: lqd lost the writer's mark");
    }
    w.acked = held;
    w.trim();
    let acked = Arc::new(AtomicU64::new(held.map_or(0, |s| s + 1)));
    let reader = {
        let (acked, mut lines) = (Arc::clone(&acked), c.lines);
        std::thread::spawn(move || {
            let mut l = String::new();
            while lines.read_line(&mut l).is_ok_and(|n| n > 0) {
                let m: Value = serde_json::from_str(&l).unwrap();
                if let Some(a) = m["ack"].as_u64() {
                    acked.fetch_max(a + 1, Ordering::AcqRel);
                } else {
                    assert!(m.get("rejected").is_some(), "{m}");
                }
                l.clear();
            }
        })
    };
    let mut stream = c.stream;
    let mut batch = String::new();
    let mut resend: Vec<String> = w.unacked.iter().map(|(_, l)| l.clone()).collect();
    // At full speed a release build writes more in a round than the ring holds; past the
    // round's budget the writer waits for lqd to go (or for `stop`), so that every change
    // is still in the journal at the end.
    let budget = w.next_seq.saturating_add(LINES_PER_ROUND);
    loop {
        w.acked = acked.load(Ordering::Acquire).checked_sub(1);
        w.trim();
        batch.clear();
        for l in resend.drain(..) {
            batch.push_str(&l);
            batch.push('\n');
        }
        if stop.load(Ordering::Acquire) && batch.is_empty() {
            break;
        }
        // Bounded: a writer keeps only so many unacknowledged lines.
        while batch.len() < 64 << 10 && w.unacked.len() < 200_000 && w.next_seq < budget {
            let (seq, text) = w.generate();
            batch.push_str(&text);
            batch.push('\n');
            w.unacked.push_back((seq, text));
        }
        if batch.is_empty() {
            // The budget is spent: lqd's going ends the reader.
            if reader.is_finished() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        if stream.write_all(batch.as_bytes()).is_err() {
            break;
        }
    }
    // The reader's end of the connection stays open with its own descriptor: say we are done.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = reader.join();
    w.acked = w.acked.max(acked.load(Ordering::Acquire).checked_sub(1));
    w
}

#[test]
fn a_writer_at_full_speed_resumes_exactly_across_kill_9() {
    let seed = now_unix();
    eprintln!("seed {seed}");
    let mut rng = SmallRng::seed_from_u64(seed);
    let (mut lqd, sock) = start("ack-kill9");
    let mut w = Writer {
        rng: SmallRng::seed_from_u64(seed ^ 0x5eed),
        clients: 2_000,
        cltt: now_unix(),
        model: BTreeMap::new(),
        next_seq: 1,
        unacked: VecDeque::new(),
        acked: None,
        changes: Vec::new(),
        bad: 0,
        noop: 0,
    };
    let started = Instant::now();
    let rounds = 6;
    for round in 0..=rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (sock, stop) = (sock.clone(), Arc::clone(&stop));
            std::thread::spawn(move || write_until_gone(&sock, w, &stop, round))
        };
        if round < rounds {
            let after = rng.gen_range(50..700);
            std::thread::sleep(Duration::from_millis(after));
            let t = Instant::now();
            lqd.kill9_and_restart_until("source: jsonl:unix");
            eprintln!(
                "round {round}: killed {after} ms in; lqd back in {:.1} s",
                t.elapsed().as_secs_f64()
            );
        } else {
            std::thread::sleep(Duration::from_millis(300));
            stop.store(true, Ordering::Release);
        }
        w = writer.join().unwrap();
    }
    // The last lines are acknowledged: a sync on a new connection says every line is taken.
    let mut c = Conn::open(&sock);
    let last = w.next_seq - 1;
    assert!(c.hello("full-speed") <= Some(last));
    assert_eq!(c.sync(), Some(last), "every line taken");
    eprintln!(
        "{last} lines ({} changes, {} bad, {} unchanged) in {:.1} s over {rounds} kills",
        w.changes.len(),
        w.bad,
        w.noop,
        started.elapsed().as_secs_f64()
    );

    // lqd holds exactly the writer's state.
    let wanted: BTreeSet<Ipv6Addr> = w.model.keys().map(|&n| addr(n)).collect();
    let held = link_addresses(&lqd, LINK);
    assert!(
        held == wanted,
        "lqd lacks {:?}, and has {:?} the writer released",
        wanted.difference(&held).take(5).collect::<Vec<_>>(),
        held.difference(&wanted).take(5).collect::<Vec<_>>()
    );

    // Every change is in the journal once, in the order written, with its line's seq, and
    // with the model's lifetime: nothing lost, nothing applied twice, no flap back.
    drop(c);
    assert!(lqd.sigterm().success());
    let (file, _) =
        JournalFile::open(&lqd.dir.join("lqd-journal"), JOURNAL_SIZE, FlushPolicy::Os).unwrap();
    let j = file.journal();
    assert_eq!(j.first_seq(), Some(0), "the ring never dropped a record");
    let mut cursor = j.tail();
    let mut journaled = Vec::new();
    let mut last_state: BTreeMap<Ipv6Addr, u32> = BTreeMap::new();
    while let Some(r) = j.read(&mut cursor).unwrap() {
        let p = record::read(r.payload).unwrap();
        let t = p.trailer.unwrap();
        let Some(b) = p.binding else {
            continue;
        };
        let marks: Vec<_> = t
            .marks
            .iter()
            .filter(|(n, _)| &**n == "full-speed")
            .collect();
        assert_eq!(marks.len(), 1, "record {} carries its line's mark", r.seq);
        journaled.push(marks[0].1);
        let l = b.leases[0];
        last_state.insert(l.address, l.valid_lifetime);
    }
    assert_eq!(
        journaled.len(),
        w.changes.len(),
        "one record per changing line"
    );
    if let Some(i) = (0..journaled.len()).find(|&i| journaled[i] != w.changes[i]) {
        panic!(
            "record {i} is line {}, not line {}: a change lost or applied twice",
            journaled[i], w.changes[i]
        );
    }
    let model: BTreeMap<Ipv6Addr, u32> = w.model.iter().map(|(&n, &v)| (addr(n), v)).collect();
    last_state.retain(|_, v| *v != 0);
    assert_eq!(last_state, model, "the journal ends in the writer's state");
}

#[test]
fn the_feed_socket_answers_as_soon_as_the_tcp_port_does() {
    let dir = std::env::temp_dir().join(format!("lqd-e2e-ack-ready-{}", std::process::id()));
    let sock = dir.join("feed.sock");
    let mut lqd = spawn_with_source(
        "ack-ready",
        &[],
        &format!("source = \"jsonl:unix:{}\"", sock.display()),
        &[],
    );
    for round in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(lqd.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "lqd did not start:\n{}",
                lqd.log()
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        assert!(
            UnixStream::connect(&sock).is_ok(),
            "round {round}: the TCP port answers, the feed socket does not"
        );
        // Started again, with the socket file of the killed lqd left behind (stale).
        if round < 2 {
            lqd.child.kill().unwrap();
            lqd.child.wait().unwrap();
            assert!(sock.exists());
            lqd.child = std::process::Command::new(env!("CARGO_BIN_EXE_lqd"))
                .arg("--config")
                .arg(lqd.dir.join("lqd.toml"))
                .stderr(std::fs::File::create(lqd.dir.join("lqd.log")).unwrap())
                .spawn()
                .unwrap();
        }
    }
}

#[test]
fn a_clean_stop_removes_the_feed_socket() {
    let (mut lqd, sock) = start("ack-stop");
    assert!(sock.exists());
    let mut w = Conn::open(&sock);
    assert_eq!(w.hello("w"), None);
    assert!(lqd.sigterm().success());
    assert!(!sock.exists(), "the socket file is left after SIGTERM");
    wait_for_log(&lqd, "removed the socket", 1);
    // Its writer sees the end of the connection.
    let mut l = String::new();
    assert_eq!(w.lines.read_line(&mut l).unwrap_or(0), 0);
}

/// A writer's acknowledged place survives the snapshot a clean stop writes, and a `kill -9`
/// after it (D43): the start from the snapshot and the records after it tells the writer the
/// mark the last record carries, and holds every line it acknowledged.
#[test]
fn a_writers_mark_survives_a_clean_stops_snapshot_and_a_kill_9_after_it() {
    let (mut lqd, sock) = start("ack-snapshot");
    let t = now_unix();
    let mut w = Conn::open(&sock);
    assert_eq!(w.hello("kea-s"), None);
    for seq in 1..=20u64 {
        w.send(&line(seq, seq as u16, Some(7200), t));
    }
    assert_eq!(w.sync(), Some(20));
    drop(w);
    assert!(lqd.sigterm().success());
    assert!(lqd.log().contains("snapshot written"), "{}", lqd.log());

    lqd.kill9_and_restart_until("source: jsonl:unix");
    let log = lqd.log();
    assert!(
        log.contains("snapshot loaded") && log.contains("replayed=0"),
        "{log}"
    );
    let mut w = Conn::open(&sock);
    assert_eq!(w.hello("kea-s"), Some(20));
    // Lines it re-sends from before its mark are not applied again; new ones are.
    w.send(&line(5, 5, None, t));
    for seq in 21..=30u64 {
        w.send(&line(seq, seq as u16, Some(7200), t));
    }
    assert_eq!(w.sync(), Some(30));
    drop(w);

    lqd.kill9_and_restart_until("source: jsonl:unix");
    let log = lqd.log();
    assert!(
        log.contains("snapshot loaded") && !log.contains("replayed=0"),
        "the records after the snapshot replayed on it: {log}"
    );
    let mut w = Conn::open(&sock);
    assert_eq!(w.hello("kea-s"), Some(30));
    let wanted: BTreeSet<Ipv6Addr> = (1..=30u16).map(addr).collect();
    assert_eq!(link_addresses(&lqd, LINK), wanted);
}
