//! Live reload on SIGHUP (D31) against a real lqd: its file is rewritten, `kill -HUP` sent, and
//! the requestors on its sockets see the new settings: an address taken out of the ACL is
//! closed while another requestor's Active stream goes on, a new `[[requestor]]` admits a new
//! address, a running Bulk answer finishes, narrowed query types and a lowered per-requestor
//! limit close what they no longer allow, a new link map answers Bulk by link-address, a raised
//! log level shows debug lines, the metrics listener moves; a broken file is rejected whole
//! with its line, and a changed `listen` is reported as needing a restart and kept.

#[path = "common/lqd.rs"]
mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Lqd, REQUESTOR, by_link, client_data_addresses, link, read_answers, wait_for_log};
use lqd::codec::{
    BuildOptions, Decoded, FrameDecoder, MessageBuilder, MessageRepr, MessageType, OptionCode,
    QueryType, Status,
};

/// A churning demo: 20 changes a second over 4 links.
const CHURN: &str = "[demo]\nclients = 300\nlinks = 4\nchanges_per_sec = 20\nseed = 5\n";
/// A demo that settles after its initial population.
const STILL: &str = "[demo]\nclients = 300\nlinks = 4\nseed = 5\nchurn_limit = 0\n";

/// An lqd on `[::1]:PORT` and `127.0.0.1:PORT`, with its configuration file at hand.
struct Daemon {
    lqd: Lqd,
    port: u16,
    /// The first lines of every version of the file: sockets and state.
    head: String,
}

impl Daemon {
    /// Starts lqd with `body` after the listen, state and journal settings.
    fn start(name: &str, body: &str) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("lqd-reload-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let head = format!(
            "listen = [\"[::1]:{port}\", \"127.0.0.1:{port}\"]\nstate_dir = \"{}\"\n\
             journal_size = 8388608\nsource = \"demo\"\n",
            dir.display()
        );
        let config = dir.join("lqd.toml");
        std::fs::write(&config, format!("{head}{body}")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_lqd"))
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("lqd.log")).unwrap(),
            ))
            .spawn()
            .unwrap();
        let lqd = Lqd {
            child,
            addr: SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
            dir,
        };
        wait_for_log(&lqd, "source: demo", 20);
        // The initial population loads at once; give the loop a moment to take it.
        std::thread::sleep(Duration::from_millis(300));
        Self { lqd, port, head }
    }

    fn v6(&self) -> SocketAddr {
        SocketAddr::from((Ipv6Addr::LOCALHOST, self.port))
    }

    fn v4(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn config(&self) -> PathBuf {
        self.lqd.dir.join("lqd.toml")
    }

    /// Rewrites the file with `body` after the same head.
    fn rewrite(&self, body: &str) {
        std::fs::write(self.config(), format!("{}{body}", self.head)).unwrap();
    }

    /// Sends SIGHUP and waits until the `n`th reload is applied.
    fn reload(&self, n: usize) {
        self.hup();
        self.wait_count("reload: new settings applied", n);
    }

    fn hup(&self) {
        let sent = Command::new("kill")
            .args(["-HUP", &self.lqd.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Waits up to 10 s for `n` log lines containing `needle`.
    fn wait_count(&self, needle: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.log().matches(needle).count() < n {
            assert!(
                Instant::now() < deadline,
                "fewer than {n} log lines with {needle:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        self.lqd.log()
    }

    /// The log line(s) containing all of `needles`.
    fn lines_with(&self, needles: &[&str]) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_owned)
            .collect()
    }
}

/// A port free on both `[::1]` and `127.0.0.1`.
fn free_port() -> u16 {
    loop {
        let l6 = std::net::TcpListener::bind("[::1]:0").unwrap();
        let port = l6.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s
}

/// The messages of one connection, read as they come.
struct Reader {
    s: TcpStream,
    buf: Vec<u8>,
    dec: FrameDecoder,
    /// The connection was closed by lqd.
    closed: bool,
}

/// One message's type and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Msg {
    kind: MessageType,
    status: Option<Status>,
    client_data: bool,
}

impl Reader {
    fn new(s: TcpStream) -> Self {
        Self {
            s,
            buf: Vec::new(),
            dec: FrameDecoder::default(),
            closed: false,
        }
    }

    /// Starts an Active query, `filter` by link-address when given.
    fn active(addr: SocketAddr, xid: u32, filter: Option<Ipv6Addr>) -> Self {
        let mut s = connect(addr);
        let mut b = MessageBuilder::active_leasequery(xid).client_id(&REQUESTOR);
        if let Some(l) = filter {
            b = b.lq_query(QueryType::ByLinkAddress, l, |q| q);
        }
        s.write_all(&b.build_frame().unwrap()).unwrap();
        let mut r = Self::new(s);
        let first = r.read_for(Duration::from_secs(5), 1);
        assert_eq!(
            first.first().map(|m| (m.kind, m.status)),
            Some((MessageType::LeasequeryReply, Some(Status::Success))),
            "the Active query was not accepted: {first:?}"
        );
        r
    }

    /// Messages read for `time`, or until `max` have come or lqd closed the connection.
    fn read_for(&mut self, time: Duration, max: usize) -> Vec<Msg> {
        let deadline = Instant::now() + time;
        let mut out = Vec::new();
        let mut chunk = [0u8; 65536];
        while Instant::now() < deadline && out.len() < max && !self.closed {
            match self.s.read(&mut chunk) {
                Ok(0) => self.closed = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => self.closed = true,
            }
            let mut pos = 0;
            while let Ok(Decoded::Frame { message, consumed }) = self.dec.decode(&self.buf[pos..]) {
                let m = MessageRepr::parse(message).unwrap();
                out.push(Msg {
                    kind: m.msg_type(),
                    status: m.options.status().map(|s| s.status),
                    client_data: m.options.get(OptionCode::ClientData).is_some(),
                });
                pos += consumed;
            }
            self.buf.drain(..pos);
        }
        out
    }

    /// Reads until lqd closes the connection (at most `secs`): what came before.
    fn until_closed(&mut self, secs: u64) -> Vec<Msg> {
        let msgs = self.read_for(Duration::from_secs(secs), usize::MAX);
        assert!(self.closed, "still open after {secs} s: {msgs:?}");
        msgs
    }
}

fn data(msgs: &[Msg]) -> usize {
    msgs.iter()
        .filter(|m| m.kind == MessageType::LeasequeryData && m.client_data)
        .count()
}

/// True when lqd closes a new connection from `addr` before answering a Bulk query on it.
fn refused(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return true;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(&by_link(9, link(1)));
    let mut b = [0u8; 64];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

/// The addresses a Bulk query by link-address for `link` returns from `addr`, and its status.
fn bulk(addr: SocketAddr, l: Ipv6Addr) -> (Option<Status>, BTreeSet<Ipv6Addr>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&by_link(1, l)).unwrap();
    let answers = read_answers(&mut s, &[1]);
    let status = MessageRepr::parse(&answers[0])
        .unwrap()
        .options
        .status()
        .map(|s| s.status);
    let addrs = client_data_addresses(&answers)
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    (status, addrs)
}

const BOTH: &str =
    "[[requestor]]\nprefix = \"::1/128\"\n\n[[requestor]]\nprefix = \"127.0.0.0/8\"\n";
const V6_ONLY: &str = "[[requestor]]\nprefix = \"::1/128\"\n";

/// A new `[[requestor]]` admits an address lqd refused; taking it out again closes that
/// requestor's connection (its Active query ended with QueryTerminated, D9) with a log line
/// naming it, while another requestor's Active stream goes on.
#[test]
fn the_acl_changes_live_a_removed_requestor_is_closed_and_another_streams_on() {
    let d = Daemon::start("acl", &format!("{V6_ONLY}{CHURN}"));
    assert!(refused(d.v4()), "127.0.0.1 is not in the ACL yet");

    d.rewrite(&format!("{BOTH}{CHURN}"));
    d.reload(1);
    let mut v4 = Reader::active(d.v4(), 41, None);
    let mut v6 = Reader::active(d.v6(), 61, None);
    let before = v4.read_for(Duration::from_secs(1), usize::MAX);
    assert!(data(&before) > 0, "the new requestor streams: {before:?}");

    d.rewrite(&format!("{V6_ONLY}{CHURN}"));
    d.reload(2);
    let last = v4.until_closed(5);
    assert!(
        last.iter()
            .any(|m| m.kind == MessageType::LeasequeryDone
                && m.status == Some(Status::QueryTerminated)),
        "its query ended with QueryTerminated: {last:?}"
    );
    let said = d.lines_with(&[
        "connection closed",
        "127.0.0.1",
        "reload: requestor no longer allowed",
    ]);
    assert_eq!(said.len(), 1, "{}", d.log());
    assert!(refused(d.v4()), "127.0.0.1 is out of the ACL again");

    // The other requestor's stream went on through both reloads.
    let after = v6.read_for(Duration::from_secs(2), usize::MAX);
    assert!(!v6.closed, "{after:?}");
    assert!(
        data(&after) >= 10,
        "{} changes in 2 s at 20/s",
        data(&after)
    );
}

/// A Bulk answer running when the reload comes goes on to its end, complete.
#[test]
fn a_running_bulk_answer_continues_across_a_reload() {
    let demo = "[demo]\nclients = 5000\nlinks = 1\nseed = 5\nchurn_limit = 0\n";
    let body = format!("tcp_send_buffer = 4096\nhigh_water = 4096\n{V6_ONLY}{demo}");
    let d = Daemon::start("bulk", &body);
    // Every binding, read at once.
    let (_, all) = bulk(d.v6(), link(1));
    assert!(all.len() > 4_000, "{}", all.len());

    // The same query on a connection that reads slowly: a small receive buffer holds lqd back.
    let socket = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&d.v6().into()).unwrap();
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&by_link(7, link(1))).unwrap();
    let mut first = [0u8; 1024];
    s.read_exact(&mut first).unwrap();

    d.rewrite(&format!(
        "tcp_send_buffer = 4096\nhigh_water = 4096\nmax_connections_per_requestor = 20\n\
         {V6_ONLY}{demo}"
    ));
    d.reload(1);
    // The answer to its end (the connection stays open for further queries).
    let mut rest = first.to_vec();
    let mut dec = FrameDecoder::default();
    let (mut pos, mut messages) = (0, Vec::new());
    let mut chunk = [0u8; 65536];
    'read: loop {
        let n = s
            .read(&mut chunk)
            .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
        assert!(n > 0, "closed before DONE:\n{}", d.log());
        rest.extend_from_slice(&chunk[..n]);
        while let Decoded::Frame { message, consumed } = dec.decode(&rest[pos..]).unwrap() {
            messages.push(message.to_vec());
            pos += consumed;
            if message[0] == u8::from(MessageType::LeasequeryDone) {
                break 'read;
            }
        }
    }
    let done = MessageRepr::parse(messages.last().unwrap()).unwrap();
    assert_eq!(done.msg_type(), MessageType::LeasequeryDone);
    assert_eq!(
        done.options.status().map(|s| s.status),
        Some(Status::Success)
    );
    let got: BTreeSet<Ipv6Addr> = client_data_addresses(&messages)
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    assert_eq!(got, all, "the answer is whole");
}

/// Narrowed query types close a connection running a query they no longer allow, and keep one
/// whose query they still allow; a lowered per-requestor limit closes the requestor's newest
/// connections beyond it and keeps the oldest.
#[test]
fn narrowed_types_and_a_lowered_limit_close_only_what_they_no_longer_allow() {
    let d = Daemon::start("narrow", &format!("{BOTH}{CHURN}"));
    let mut unfiltered = Reader::active(d.v6(), 1, None);
    let mut filtered = Reader::active(d.v6(), 2, Some(link(1)));
    let idle: Vec<TcpStream> = (0..3).map(|_| connect(d.v4())).collect();
    std::thread::sleep(Duration::from_millis(300));
    // The third of 127.0.0.1's connections is its newest.
    let newest = idle[2].local_addr().unwrap();

    let narrowed = "[[requestor]]\nprefix = \"::1/128\"\nquery_types = [\"link-address\", \"address\"]\n\n\
                    [[requestor]]\nprefix = \"127.0.0.0/8\"\n";
    d.rewrite(&format!(
        "max_connections_per_requestor = 2\n{narrowed}{CHURN}"
    ));
    d.reload(1);
    unfiltered.until_closed(5);
    let said = d.lines_with(&[
        "connection closed",
        "an Active query without a filter",
        "no longer allowed",
    ]);
    assert_eq!(said.len(), 1, "{}", d.log());
    let said = d.lines_with(&[
        "connection closed",
        &newest.to_string(),
        "max_connections_per_requestor is 2 now",
    ]);
    assert_eq!(said.len(), 1, "the newest connection: {}", d.log());
    assert_eq!(
        d.lines_with(&["connection closed", "127.0.0.1"]).len(),
        1,
        "only one of 127.0.0.1's: {}",
        d.log()
    );
    // The filtered stream goes on; the two oldest idle connections still answer.
    let after = filtered.read_for(Duration::from_secs(3), usize::MAX);
    assert!(!filtered.closed && data(&after) > 0, "{after:?}");
    for mut s in idle.into_iter().take(2) {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&by_link(3, link(2))).unwrap();
        let answers = read_answers(&mut s, &[3]);
        assert!(!answers.is_empty());
    }
    // A query of a type taken away gets NotAllowed (D23).
    let mut s = TcpStream::connect(d.v6()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let q = MessageBuilder::leasequery(4)
        .client_id(&REQUESTOR)
        .lq_query(QueryType::ByClientId, Ipv6Addr::UNSPECIFIED, |q| {
            q.client_id(&REQUESTOR)
        })
        .build_frame()
        .unwrap();
    s.write_all(&q).unwrap();
    let reply = read_answers(&mut s, &[4]);
    let status = MessageRepr::parse(&reply[0]).unwrap().options.status();
    assert_eq!(status.map(|s| s.status), Some(Status::NotAllowed));
}

/// A link map changed live answers Bulk by link-address by the new map (D16): an address in a
/// prefix added to a link names that link.
#[test]
fn a_changed_link_map_answers_bulk_by_link_address() {
    let links = |extra: &str| {
        format!(
            "[[link]]\naddress = \"2001:db8:0:1::1\"\nprefixes = [\"2001:db8:0:1::/64\"{extra}]\n\n"
        )
    };
    let d = Daemon::start("links", &format!("{}{STILL}", links("")));
    let elsewhere: Ipv6Addr = "2001:db8:77::5".parse().unwrap();
    let (status, found) = bulk(d.v6(), elsewhere);
    assert_eq!(
        (status, found.len()),
        (Some(Status::NotConfigured), 0),
        "not a configured link yet"
    );
    let (_, on_link) = bulk(d.v6(), link(1));
    assert!(!on_link.is_empty());

    d.rewrite(&format!("{}{STILL}", links(", \"2001:db8:77::/64\"")));
    d.reload(1);
    assert!(d.log().contains("links=1"), "{}", d.log());
    let (status, found) = bulk(d.v6(), elsewhere);
    assert_eq!(status, None, "answered");
    assert_eq!(found, on_link, "the address names link 1 now");
}

/// Raising the log level takes effect at once: a debug line appears that did not before.
#[test]
fn a_raised_log_level_shows_debug_lines() {
    // Only a far prefix may ask: lqd's UDP answer to this machine is a drop, logged at debug.
    let acl = "[[requestor]]\nprefix = \"2001:db8:ffff::/48\"\n";
    let d = Daemon::start("log", &format!("{acl}{STILL}"));
    let udp = std::net::UdpSocket::bind("[::1]:0").unwrap();
    let query = MessageBuilder::leasequery(5)
        .client_id(&REQUESTOR)
        .lq_query(QueryType::ByAddress, link(1), |q| q)
        .build()
        .unwrap();
    udp.send_to(&query, d.v6()).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        !d.log().contains("UDP query dropped"),
        "no debug line at info: {}",
        d.log()
    );

    d.rewrite(&format!("log = \"debug\"\n{acl}{STILL}"));
    d.reload(1);
    udp.send_to(&query, d.v6()).unwrap();
    wait_for_log(&d.lqd, "UDP query dropped: requestor not allowed", 5);
}

/// An HTTP GET, its status line and body.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(String, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: lqd\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    ))
}

fn counter(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{body}"))
}

/// `metrics_listen` moved live: the new port serves the same counters, the old one is closed.
#[test]
fn metrics_listen_moves_to_a_new_port() {
    let (a, b) = (free_port(), free_port());
    let at = |p: u16| format!("metrics_listen = \"[::1]:{p}\"\n");
    let d = Daemon::start("metrics", &format!("{}{V6_ONLY}{STILL}", at(a)));
    let old = SocketAddr::from((Ipv6Addr::LOCALHOST, a));
    let new = SocketAddr::from((Ipv6Addr::LOCALHOST, b));
    let _ = bulk(d.v6(), link(1));
    let (status, body) = http_get(old, "/metrics").unwrap();
    assert!(status.contains("200"), "{status}");
    let accepted = counter(&body, "lqd_connections_accepted_total");
    assert!(accepted >= 1.0);
    assert!(http_get(new, "/metrics").is_err(), "not served there yet");

    d.rewrite(&format!("{}{V6_ONLY}{STILL}", at(b)));
    d.reload(1);
    let (status, body) = http_get(new, "/metrics").unwrap();
    assert!(status.contains("200"), "{status}");
    assert!(
        counter(&body, "lqd_connections_accepted_total") >= accepted,
        "the same counters"
    );
    let gone = TcpStream::connect(old);
    assert!(gone.is_err(), "the old port is closed: {gone:?}");
}

/// A file with an error is rejected whole: the log names its line and the key meant, and the
/// running settings stay (the requestor the broken file would remove is still admitted). Once
/// fixed, the same change applies.
#[test]
fn a_broken_file_is_rejected_whole_and_the_running_settings_stay() {
    let d = Daemon::start("broken", &format!("{BOTH}{CHURN}"));
    // Line 5 after the four lines of the head.
    d.rewrite(&format!("max_conections = 5\n{V6_ONLY}{CHURN}"));
    d.hup();
    wait_for_log(&d.lqd, "reload rejected", 10);
    let said = d.lines_with(&[
        "reload rejected",
        "line 5",
        "did you mean `max_connections`?",
    ]);
    assert_eq!(said.len(), 1, "{}", d.log());
    assert!(said[0].contains("the running settings stay"), "{said:?}");
    assert!(!d.log().contains("reload: new settings applied"));
    let (status, found) = bulk(d.v4(), link(1));
    assert!(
        status.is_none() && !found.is_empty(),
        "127.0.0.1 still admitted"
    );

    d.rewrite(&format!("max_connections = 5\n{V6_ONLY}{CHURN}"));
    d.reload(1);
    assert!(refused(d.v4()), "the fixed file applies");
}

/// A changed `listen` needs a restart: the reload says so and keeps the socket it has.
#[test]
fn a_changed_listen_needs_a_restart_and_the_old_socket_stays() {
    let d = Daemon::start("listen", &format!("{V6_ONLY}{STILL}"));
    let other = free_port();
    let text = std::fs::read_to_string(d.config())
        .unwrap()
        .replace(&d.head, "");
    let moved = d.head.replace(
        &format!("listen = [\"[::1]:{0}\", \"127.0.0.1:{0}\"]", d.port),
        &format!("listen = [\"[::1]:{other}\"]"),
    );
    assert_ne!(moved, d.head);
    std::fs::write(d.config(), format!("{moved}max_connections = 50\n{text}")).unwrap();
    d.reload(1);
    let said = d.lines_with(&["needs a restart", "listen"]);
    assert_eq!(said.len(), 1, "{}", d.log());
    assert!(
        d.lines_with(&["configuration accepted", "max_connections"])
            .len()
            == 1,
        "the other change applies: {}",
        d.log()
    );
    let (status, found) = bulk(d.v6(), link(1));
    assert!(
        status.is_none() && !found.is_empty(),
        "the old socket answers"
    );
    assert!(
        TcpStream::connect(SocketAddr::from((Ipv6Addr::LOCALHOST, other))).is_err(),
        "the new address is not bound"
    );
}
