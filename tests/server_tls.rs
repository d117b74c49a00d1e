//! STARTTLS (RFC 7653, D25, D27) against an independent TLS stack: a requestor written with
//! Python's ssl module (OpenSSL), `tests/peers/starttls_requestor.py`, runs Bulk and Active
//! over TLS against a real lqd; every way a handshake or a policy can fail closes only its own
//! connection, with a log line naming the peer and the reason, while another requestor's
//! Active stream goes on; certificate tables decide query types and limits; SIGHUP reads new
//! certificates without touching running sessions.

#[path = "common/lqd.rs"]
mod common;
#[path = "common/peers.rs"]
mod peers;
#[path = "common/pki.rs"]
mod pki;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv6Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Lqd, REQUESTOR, by_link, client_data_addresses, link, read_answers, wait_for_log};
use lqd::codec::{
    BuildOptions, Decoded, FrameDecoder, MessageBuilder, MessageRepr, MessageType, OptionCode,
    QueryType, ServerTime, Status,
};

/// What the Python requestor printed.
#[derive(Debug)]
struct PyRun {
    /// The type of the server's answer to STARTTLS.
    answer: Option<u8>,
    /// `TLS <version> <cipher>`.
    tls: Option<String>,
    /// Frames read inside TLS.
    frames: Vec<Vec<u8>>,
    closed: bool,
    error: Option<String>,
}

struct Py<'a> {
    port: u16,
    ca: &'a Path,
    cert: Option<&'a pki::Pair>,
    sends: Vec<Vec<u8>>,
    until: Vec<u8>,
    frames: usize,
    seconds: f64,
}

impl<'a> Py<'a> {
    fn new(lqd: &Lqd, ca: &'a Path) -> Self {
        Self {
            port: lqd.addr.port(),
            ca,
            cert: None,
            sends: Vec::new(),
            until: Vec::new(),
            frames: 0,
            seconds: 10.0,
        }
    }

    fn run(&self) -> PyRun {
        let mut c = Command::new(peers::peer_python());
        c.arg(peers::repo().join("tests/peers/starttls_requestor.py"))
            .args(["--port", &self.port.to_string()])
            .arg("--ca")
            .arg(self.ca)
            .args(["--seconds", &self.seconds.to_string()])
            .args(["--frames", &self.frames.to_string()]);
        if let Some(p) = self.cert {
            c.arg("--cert").arg(&p.cert).arg("--key").arg(&p.key);
        }
        for s in &self.sends {
            // Without the 2-octet frame length.
            c.args(["--send", &hex::encode(&s[2..])]);
        }
        for t in &self.until {
            c.args(["--until", &t.to_string()]);
        }
        let out = c.output().expect("run python");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut run = PyRun {
            answer: None,
            tls: None,
            frames: Vec::new(),
            closed: false,
            error: None,
        };
        for line in text.lines() {
            let mut w = line.splitn(3, ' ');
            match (w.next(), w.next(), w.next()) {
                (Some("ANSWER"), Some(t), _) => run.answer = t.parse().ok(),
                (Some("TLS"), Some(v), Some(c)) => run.tls = Some(format!("{v} {c}")),
                (Some("FRAME"), Some(_), Some(h)) => run.frames.push(hex::decode(h).unwrap()),
                (Some("CLOSED"), ..) => run.closed = true,
                (Some("ERROR"), ..) => run.error = Some(line.to_owned()),
                _ => {}
            }
        }
        if run.error.is_none() && !out.status.success() {
            run.error = Some(format!(
                "python exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        run
    }
}

struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    other_ca: pki::Ca,
    authority: pki::Ca,
    server: pki::Pair,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let authority = pki::Ca::new(dir.path(), "ca");
    let other_ca = pki::Ca::new(dir.path(), "other-ca");
    let server = authority.server("server", &[]);
    Pki {
        ca: authority.cert.clone(),
        _dir: dir,
        other_ca,
        authority,
        server,
    }
}

fn tls_table(p: &Pki, mode: &str, mutual: bool) -> String {
    let mut t = format!(
        "[tls]\nmode = \"{mode}\"\ncertificate = \"{}\"\nkey = \"{}\"\nhandshake_timeout = 2\n",
        p.server.cert.display(),
        p.server.key.display()
    );
    if mutual {
        t.push_str(&format!("client_ca = \"{}\"\n", p.ca.display()));
    }
    t
}

/// A settled population: 300 clients on 4 links, no churn after it.
const SETTLED: &str = "clients = 300\nlinks = 4\nchanges_per_sec = 0\nseed = 11\nchurn_limit = 0\n";
/// Churn, for an Active stream to carry.
const CHURNING: &str = "clients = 300\nlinks = 4\nchanges_per_sec = 20\nseed = 11\n";

fn addresses(frames: &[Vec<u8>]) -> BTreeSet<Ipv6Addr> {
    client_data_addresses(frames)
        .into_iter()
        .map(|(_, a)| a)
        .collect()
}

fn plain_link_addresses(lqd: &Lqd, l: Ipv6Addr) -> BTreeSet<Ipv6Addr> {
    let mut s = lqd.connect();
    s.write_all(&by_link(9, l)).unwrap();
    addresses(&read_answers(&mut s, &[9]))
}

fn types(frames: &[Vec<u8>]) -> Vec<MessageType> {
    frames
        .iter()
        .map(|f| MessageRepr::parse(f).unwrap().msg_type())
        .collect()
}

fn status_of(frame: &[u8]) -> Option<Status> {
    let m = MessageRepr::parse(frame).unwrap();
    m.options.status().map(|s| s.status)
}

#[test]
fn an_openssl_requestor_runs_bulk_and_active_over_starttls() {
    let p = pki();
    let lqd = Lqd::start_with_demo("tls-python", &tls_table(&p, "offer", false), SETTLED);
    lqd.wait_ready();
    let l = link(1);
    let plain = plain_link_addresses(&lqd, l);
    assert!(plain.len() > 20, "the link holds clients: {}", plain.len());

    // Bulk by link-address inside TLS: the same answer as in plain text.
    let mut py = Py::new(&lqd, &p.ca);
    py.sends = vec![by_link(5, l)];
    py.until = vec![MessageType::LeasequeryDone.into()];
    let run = py.run();
    assert_eq!(run.error, None, "{run:?}\n{}", lqd.log());
    assert_eq!(run.answer, Some(23), "lqd answers STARTTLS with STARTTLS");
    let tls = run.tls.clone().unwrap();
    assert!(
        tls.starts_with("TLSv1.3") || tls.starts_with("TLSv1.2"),
        "{tls}"
    );
    assert_eq!(
        addresses(&run.frames),
        plain,
        "TLS and plain Bulk answers differ"
    );
    assert_eq!(
        types(&run.frames).last(),
        Some(&MessageType::LeasequeryDone)
    );

    // Active with a catch-up from the start: every binding of the journal comes through TLS.
    let mut py = Py::new(&lqd, &p.ca);
    py.sends = vec![
        MessageBuilder::active_leasequery(6)
            .client_id(&REQUESTOR)
            .start_time(ServerTime(1))
            .build_frame()
            .unwrap(),
    ];
    py.frames = 305; // a REPLY, 300 bindings, the end of the catch-up, and more
    py.seconds = 4.0;
    let run = py.run();
    assert_eq!(run.error, None, "{run:?}");
    let t = types(&run.frames);
    assert_eq!(t.first(), Some(&MessageType::LeasequeryReply), "{t:?}");
    let data = t
        .iter()
        .filter(|m| **m == MessageType::LeasequeryData)
        .count();
    assert!(data >= 300, "{data} bindings over TLS");
    assert!(
        run.frames
            .iter()
            .any(|f| status_of(f) == Some(Status::CatchUpComplete)),
        "the catch-up ends with CatchUpComplete"
    );
    let log = lqd.log();
    assert!(log.contains("STARTTLS accepted"), "{log}");
}

#[test]
fn mutual_tls_failures_close_only_their_own_connection() {
    let p = pki();
    let lqd = Lqd::start_with_demo("tls-failures", &tls_table(&p, "require", true), CHURNING);
    lqd.wait_ready();
    // Under `require`, a plain Active stream is refused; the witness runs over TLS instead,
    // from the Python peer, for the whole test.
    let good = p
        .authority
        .client("good", "gw-1", &["gw-1.example.net"], &[]);
    let witness = Py {
        cert: Some(&good),
        sends: vec![
            MessageBuilder::active_leasequery(8)
                .client_id(&REQUESTOR)
                .build_frame()
                .unwrap(),
        ],
        frames: 100_000,
        seconds: 12.0,
        ..Py::new(&lqd, &p.ca)
    };
    let witness = std::thread::scope(|s| {
        let h = s.spawn(|| witness.run());
        std::thread::sleep(Duration::from_secs(1));
        each_failure(&lqd, &p, &good);
        h.join().unwrap()
    });
    assert_eq!(
        witness.error, None,
        "the witness's stream failed: {witness:?}"
    );
    assert!(!witness.closed, "the witness's stream was closed");
    let data = types(&witness.frames)
        .iter()
        .filter(|m| **m == MessageType::LeasequeryData)
        .count();
    assert!(data >= 20, "the witness saw {data} changes in 12 s at 20/s");
}

/// Each failure, one after the other, each checked for its close and its log line.
fn each_failure(lqd: &Lqd, p: &Pki, good: &pki::Pair) {
    // A good requestor's Bulk works over TLS in between (checked first and last).
    let bulk_ok = || {
        let mut py = Py::new(lqd, &p.ca);
        py.cert = Some(good);
        py.sends = vec![by_link(5, link(1))];
        py.until = vec![MessageType::LeasequeryDone.into()];
        let run = py.run();
        assert_eq!(run.error, None, "{run:?}\n{}", lqd.log());
        assert!(!addresses(&run.frames).is_empty());
    };
    bulk_ok();

    // The wrong CA: a client certificate lqd's CA did not sign.
    let stranger = p
        .other_ca
        .client("stranger", "gw-x", &["gw-x.example.net"], &[]);
    let mut py = Py::new(lqd, &p.ca);
    py.cert = Some(&stranger);
    py.sends = vec![by_link(5, link(1))];
    py.until = vec![MessageType::LeasequeryDone.into()];
    let run = py.run();
    assert!(run.error.is_some() && run.frames.is_empty(), "{run:?}");
    wait_for_log(
        lqd,
        "TLS handshake failed: invalid peer certificate: UnknownIssuer",
        5,
    );

    // An expired client certificate.
    let old = p.authority.expired_client("old", "gw-old");
    py.cert = Some(&old);
    let run = py.run();
    assert!(run.error.is_some() && run.frames.is_empty(), "{run:?}");
    wait_for_log(
        lqd,
        "TLS handshake failed: invalid peer certificate: certificate expired",
        5,
    );

    // No client certificate where one is required.
    py.cert = None;
    let run = py.run();
    assert!(run.error.is_some() && run.frames.is_empty(), "{run:?}");
    wait_for_log(lqd, "TLS handshake failed: peer sent no certificates", 5);

    // A plain query under `require`: NotAllowed, then the connection closes.
    let mut s = lqd.connect();
    s.write_all(&by_link(3, link(1))).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("lqd closes the connection");
    let mut dec = FrameDecoder::default();
    let Decoded::Frame { message, .. } = dec.decode(&all).unwrap() else {
        panic!("no answer to a plain query: {all:?}");
    };
    assert_eq!(status_of(message), Some(Status::NotAllowed));
    wait_for_log(lqd, "reason=\"query without TLS where TLS is required\"", 5);

    // Garbage instead of a ClientHello.
    let mut s = lqd.connect();
    s.write_all(&starttls(4)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let answer = read_frame(&mut s);
    assert_eq!(
        MessageRepr::parse(&answer).unwrap().msg_type(),
        MessageType::StartTls
    );
    s.write_all(&[0x55; 300]).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    wait_for_log(lqd, "TLS handshake failed: received corrupt message", 5);

    // A stalled handshake: STARTTLS, then nothing (handshake_timeout is 2 s).
    let mut s = lqd.connect();
    s.write_all(&starttls(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    let _ = read_frame(&mut s);
    let began = Instant::now();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "closed after {:?}",
        began.elapsed()
    );
    wait_for_log(
        lqd,
        "TLS handshake not finished within tls.handshake_timeout",
        5,
    );

    // STARTTLS after a query (here: after a refused plain query, on a connection lqd keeps
    // open under `offer`; under `require` the query already closed it): checked in
    // `starttls_after_a_query_closes_the_connection`.
    bulk_ok();
}

fn starttls(xid: u32) -> Vec<u8> {
    MessageBuilder::new(MessageType::StartTls, xid)
        .client_id(&REQUESTOR)
        .build_frame()
        .unwrap()
}

fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).expect("a frame");
    let mut m = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut m).expect("a frame");
    m
}

#[test]
fn starttls_after_a_query_closes_the_connection() {
    let p = pki();
    let lqd = Lqd::start_with_demo("tls-late", &tls_table(&p, "offer", false), SETTLED);
    lqd.wait_ready();
    let mut s = lqd.connect();
    s.write_all(&by_link(1, link(1))).unwrap();
    let answers = read_answers(&mut s, &[1]);
    assert!(!client_data_addresses(&answers).is_empty());
    s.write_all(&starttls(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("lqd closes the connection");
    assert!(rest.is_empty(), "no answer to a late STARTTLS: {rest:?}");
    wait_for_log(&lqd, "STARTTLS is not a requestor's message", 5);
    // Others are served.
    assert!(!plain_link_addresses(&lqd, link(2)).is_empty());
}

#[test]
fn certificate_tables_set_query_types_and_limits() {
    let p = pki();
    let extra = format!(
        "{}[[requestor]]\ncertificate = [\"gw-1.example.net\", \"spiffe://example.net/gw/2\"]\n\
         query_types = [\"link-address\"]\nmax_connections = 1\n",
        tls_table(&p, "offer", true)
    );
    let lqd = Lqd::start_with_demo("tls-tables", &extra, SETTLED);
    lqd.wait_ready();
    let gw1 = p
        .authority
        .client("gw1", "gw-1", &["gw-1.example.net"], &[]);
    let gw2 = p
        .authority
        .client("gw2", "gw-2", &[], &["spiffe://example.net/gw/2"]);
    let gw9 = p
        .authority
        .client("gw9", "gw-9", &["gw-9.example.net"], &[]);

    // Allowed: link-address, by a SAN DNS name; refused: client-id (NotAllowed).
    let mut py = Py::new(&lqd, &p.ca);
    py.cert = Some(&gw1);
    py.sends = vec![
        by_link(5, link(1)),
        MessageBuilder::leasequery(6)
            .client_id(&REQUESTOR)
            .lq_query(QueryType::ByClientId, Ipv6Addr::UNSPECIFIED, |q| {
                q.client_id(&[0, 3, 0, 1, 1, 2, 3, 4, 5, 6])
            })
            .build_frame()
            .unwrap(),
    ];
    py.until = vec![MessageType::LeasequeryDone.into()];
    py.seconds = 3.0;
    let run = py.run();
    assert_eq!(run.error, None, "{run:?}\n{}", lqd.log());
    assert!(!addresses(&run.frames).is_empty(), "link-address answered");
    assert!(
        run.frames
            .iter()
            .any(|f| status_of(f) == Some(Status::NotAllowed)),
        "client-id refused: {:?}",
        types(&run.frames)
    );
    wait_for_log(&lqd, "name=\"gw-1.example.net\"", 5);

    // By a SAN URI.
    let mut py = Py::new(&lqd, &p.ca);
    py.cert = Some(&gw2);
    py.sends = vec![by_link(5, link(2))];
    py.until = vec![MessageType::LeasequeryDone.into()];
    let run = py.run();
    assert_eq!(run.error, None, "{run:?}");
    assert!(!addresses(&run.frames).is_empty());

    // A certificate no table names: refused right after the handshake, with its names.
    let mut py = Py::new(&lqd, &p.ca);
    py.cert = Some(&gw9);
    py.sends = vec![by_link(5, link(1))];
    py.until = vec![MessageType::LeasequeryDone.into()];
    let run = py.run();
    assert!(run.frames.is_empty(), "{run:?}");
    wait_for_log(&lqd, "certificate matches no requestor table", 5);
    assert!(
        lqd.log().contains("gw-9.example.net"),
        "the log names the certificate"
    );

    // max_connections = 1: a second connection of the table is refused while one streams.
    let hold = Py {
        sends: vec![
            MessageBuilder::active_leasequery(8)
                .client_id(&REQUESTOR)
                .lq_query(QueryType::ByLinkAddress, link(1), |q| q)
                .build_frame()
                .unwrap(),
        ],
        frames: 1000,
        seconds: 4.0,
        cert: Some(&gw1),
        ..Py::new(&lqd, &p.ca)
    };
    std::thread::scope(|s| {
        let h = s.spawn(|| hold.run());
        std::thread::sleep(Duration::from_millis(1500));
        let mut py = Py::new(&lqd, &p.ca);
        py.cert = Some(&gw2);
        py.sends = vec![by_link(5, link(2))];
        py.until = vec![MessageType::LeasequeryDone.into()];
        py.seconds = 3.0;
        let run = py.run();
        assert!(
            run.frames.is_empty(),
            "a second connection of the table: {run:?}"
        );
        wait_for_log(&lqd, "per-requestor limit: requestor table 1", 5);
        let held = h.join().unwrap();
        assert_eq!(held.error, None, "{held:?}");
    });
}

#[test]
fn sighup_reads_a_new_certificate_and_running_sessions_keep_theirs() {
    let p = pki();
    let lqd = Lqd::start_with_demo("tls-reload", &tls_table(&p, "offer", false), CHURNING);
    lqd.wait_ready();
    // A session on the first certificate, streaming for the whole test.
    let stream = Py {
        sends: vec![
            MessageBuilder::active_leasequery(8)
                .client_id(&REQUESTOR)
                .build_frame()
                .unwrap(),
        ],
        frames: 100_000,
        seconds: 6.0,
        ..Py::new(&lqd, &p.ca)
    };
    std::thread::scope(|s| {
        let h = s.spawn(|| stream.run());
        std::thread::sleep(Duration::from_secs(1));
        // A new CA and certificate replace the files; SIGHUP.
        let next_ca = pki::Ca::new(p.server.cert.parent().unwrap(), "next-ca");
        let next = next_ca.server("next", &[]);
        std::fs::copy(&next.cert, &p.server.cert).unwrap();
        std::fs::copy(&next.key, &p.server.key).unwrap();
        let pid = lqd.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap()
                .success()
        );
        wait_for_log(
            &lqd,
            "reload: TLS certificate, key and client CA read again",
            5,
        );
        // New connections get the new certificate: the old CA no longer verifies it.
        let mut py = Py::new(&lqd, &next_ca.cert);
        py.sends = vec![by_link(5, link(1))];
        py.until = vec![MessageType::LeasequeryDone.into()];
        let run = py.run();
        assert_eq!(run.error, None, "{run:?}\n{}", lqd.log());
        let mut py = Py::new(&lqd, &p.ca);
        py.sends = vec![by_link(5, link(1))];
        let run = py.run();
        assert!(
            run.error
                .as_deref()
                .is_some_and(|e| e.contains("CERTIFICATE_VERIFY_FAILED")),
            "{run:?}"
        );
        // A bad file is refused and the running certificate stays.
        std::fs::write(&p.server.key, "not a key").unwrap();
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap()
                .success()
        );
        wait_for_log(&lqd, "the running settings stay", 5);
        let mut py = Py::new(&lqd, &next_ca.cert);
        py.sends = vec![by_link(5, link(1))];
        py.until = vec![MessageType::LeasequeryDone.into()];
        assert_eq!(py.run().error, None);
        // The first session streamed throughout, on its first certificate.
        let run = h.join().unwrap();
        assert_eq!(run.error, None, "{run:?}");
        assert!(!run.closed);
        let data = types(&run.frames)
            .iter()
            .filter(|m| **m == MessageType::LeasequeryData)
            .count();
        assert!(data >= 40, "{data} changes in 6 s at 20/s");
    });
}

#[test]
fn starttls_is_refused_without_tls_and_the_connection_stays_plain() {
    let lqd = Lqd::start_with_demo("tls-off", "", SETTLED);
    lqd.wait_ready();
    let mut s = lqd.connect();
    s.write_all(&starttls(7)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let answer = read_frame(&mut s);
    let m = MessageRepr::parse(&answer).unwrap();
    assert_eq!(m.msg_type(), MessageType::LeasequeryReply);
    assert_eq!(status_of(&answer), Some(Status::TlsConnectionRefused));
    assert!(m.options.get(OptionCode::ServerId).is_some());
    // The connection carries on in plain text.
    s.write_all(&by_link(1, link(1))).unwrap();
    assert!(!client_data_addresses(&read_answers(&mut s, &[1])).is_empty());
}

/// A requestor in a hurry sends its ClientHello in the same write as STARTTLS (digest §12.8):
/// lqd hands the octets after the STARTTLS frame to the handshake, never to the frame decoder.
/// The client side is rustls here, so that the ClientHello can be taken before the answer.
#[test]
fn a_client_hello_in_the_same_segment_as_starttls_belongs_to_the_handshake() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::sync::Arc;

    let p = pki();
    let lqd = Lqd::start_with_demo("tls-early", &tls_table(&p, "require", false), SETTLED);
    lqd.wait_ready();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&p.ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut hello = Vec::new();
    tls.write_tls(&mut hello).unwrap();
    assert!(hello.len() > 100, "a ClientHello");

    let mut s = lqd.connect();
    let mut segment = starttls(9);
    segment.extend_from_slice(&hello);
    s.write_all(&segment).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let answer = read_frame(&mut s);
    assert_eq!(
        MessageRepr::parse(&answer).unwrap().msg_type(),
        MessageType::StartTls
    );
    let mut stream = rustls::StreamOwned::new(tls, s);
    stream
        .write_all(&by_link(3, link(1)))
        .expect("the handshake completes");
    let mut dec = FrameDecoder::default();
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    let mut chunk = [0u8; 16384];
    while !types(&frames).contains(&MessageType::LeasequeryDone) {
        let n = stream.read(&mut chunk).expect("an answer inside TLS");
        assert!(n > 0, "closed: {}", lqd.log());
        buf.extend_from_slice(&chunk[..n]);
        let mut pos = 0;
        while let Decoded::Frame { message, consumed } = dec.decode(&buf[pos..]).unwrap() {
            frames.push(message.to_vec());
            pos += consumed;
        }
        buf.drain(..pos);
    }
    assert_eq!(addresses(&frames), python_link_addresses(&lqd, &p, link(1)));
}

/// Under `require` a plain query is refused, so the reference answer comes through the
/// Python peer.
fn python_link_addresses(lqd: &Lqd, p: &Pki, l: Ipv6Addr) -> BTreeSet<Ipv6Addr> {
    let mut py = Py::new(lqd, &p.ca);
    py.sends = vec![by_link(5, l)];
    py.until = vec![MessageType::LeasequeryDone.into()];
    let run = py.run();
    assert_eq!(run.error, None, "{run:?}");
    addresses(&run.frames)
}

/// A reload (D31) decides TLS requestors again by their certificates: one whose table is gone
/// is closed, one whose table stays streams on; `mode = "require"` closes plain connections.
#[test]
fn a_reload_decides_certificates_again_and_require_closes_plain_connections() {
    let p = pki();
    let tables = "[[requestor]]\nprefix = \"::1/128\"\n\n\
                  [[requestor]]\ncertificate = [\"gw-1.example.net\"]\nquery_types = [\"link-address\"]\n\n\
                  [[requestor]]\ncertificate = [\"gw-2.example.net\"]\nquery_types = [\"link-address\"]\n";
    let extra = format!("{}{tables}", tls_table(&p, "offer", true));
    let lqd = Lqd::start_with_demo("tls-reload-tables", &extra, CHURNING);
    let gw1 = p
        .authority
        .client("gw1", "gw-1", &["gw-1.example.net"], &[]);
    let gw2 = p
        .authority
        .client("gw2", "gw-2", &["gw-2.example.net"], &[]);
    let stream = |cert| Py {
        sends: vec![
            MessageBuilder::active_leasequery(8)
                .client_id(&REQUESTOR)
                .lq_query(QueryType::ByLinkAddress, link(1), |q| q)
                .build_frame()
                .unwrap(),
        ],
        frames: 100_000,
        seconds: 6.0,
        cert: Some(cert),
        ..Py::new(&lqd, &p.ca)
    };
    let (one, two) = (stream(&gw1), stream(&gw2));
    std::thread::scope(|s| {
        let h1 = s.spawn(|| one.run());
        let h2 = s.spawn(|| two.run());
        // A plain requestor's Active stream.
        let mut plain = lqd.connect();
        plain
            .write_all(
                &MessageBuilder::active_leasequery(9)
                    .client_id(&REQUESTOR)
                    .build_frame()
                    .unwrap(),
            )
            .unwrap();
        wait_for_log(&lqd, "name=\"gw-2.example.net\"", 5);
        wait_for_log(&lqd, "name=\"gw-1.example.net\"", 5);
        std::thread::sleep(Duration::from_millis(500));

        let config = lqd.dir.join("lqd.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        let gone = "[[requestor]]\ncertificate = [\"gw-2.example.net\"]\nquery_types = [\"link-address\"]\n";
        assert!(text.contains(gone));
        let text = text
            .replace(gone, "")
            .replace("mode = \"offer\"", "mode = \"require\"");
        std::fs::write(&config, text).unwrap();
        let pid = lqd.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap()
                .success()
        );
        wait_for_log(&lqd, "reload: new settings applied", 10);
        // The plain connection: its query ended, then closed.
        plain
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut rest = Vec::new();
        let _ = plain.read_to_end(&mut rest);
        let log = lqd.log();
        assert!(
            log.lines()
                .any(|l| l.contains("connection closed") && l.contains("TLS is required now")),
            "{log}"
        );
        assert!(
            log.lines().any(|l| l.contains("connection closed")
                && l.contains("matches no requestor table now")
                && l.contains("gw-2.example.net")),
            "{log}"
        );
        let two = h2.join().unwrap();
        assert!(two.closed, "gw-2's stream was closed: {two:?}");
        let one = h1.join().unwrap();
        assert_eq!(one.error, None, "{one:?}");
        assert!(!one.closed, "gw-1 streamed on: {one:?}");
        let data = types(&one.frames)
            .iter()
            .filter(|m| **m == MessageType::LeasequeryData)
            .count();
        assert!(data >= 5, "{data} changes of link 1 in 6 s");
    });
}

/// A socket's reader that notes the TLS record layer of what passes through: the type and
/// length of each record header (RFC 8446 §5.1), so that a test sees how lqd packs its
/// messages into records.
struct Tap {
    stream: TcpStream,
    /// Octets of the current record still to pass (its header read).
    left: usize,
    /// A header being read across reads.
    header: Vec<u8>,
    /// application_data records seen.
    data_records: usize,
}

impl Read for Tap {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.stream.read(buf)?;
        for &b in &buf[..n] {
            if self.left > 0 {
                self.left -= 1;
                continue;
            }
            self.header.push(b);
            if self.header.len() == 5 {
                if self.header[0] == 23 {
                    self.data_records += 1;
                }
                self.left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                self.header.clear();
            }
        }
        Ok(n)
    }
}

impl Write for Tap {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stream.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush()
    }
}

/// A TLS Active requestor with rustls: STARTTLS, the handshake, an ACTIVELEASEQUERY from the
/// journal's start; reads until `want` LEASEQUERY-DATA arrived. Returns the messages read, the
/// application_data records they came in, and the session, still open.
fn tls_active_catch_up(
    lqd: &Lqd,
    ca: &Path,
    xid: u32,
    want: usize,
) -> (
    usize,
    usize,
    rustls::StreamOwned<rustls::ClientConnection, Tap>,
) {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    // The ring provider, as lqd's; rustls 0.23.48 deprecates it only for lacking post-quantum
    // key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut s = lqd.connect();
    s.write_all(&starttls(xid)).unwrap();
    let answer = read_frame(&mut s);
    assert_eq!(answer[0], 23, "lqd answers STARTTLS with STARTTLS");
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tap = Tap {
        stream: s,
        left: 0,
        header: Vec::new(),
        data_records: 0,
    };
    let mut tls = rustls::StreamOwned::new(conn, tap);
    let query = MessageBuilder::active_leasequery(xid + 1)
        .client_id(&REQUESTOR)
        .start_time(ServerTime(1))
        .build_frame()
        .unwrap();
    tls.write_all(&query).unwrap();
    // The records of the handshake are behind us once the query is out: count from here.
    let records_before = tls.sock.data_records;
    let mut decoder = FrameDecoder::default();
    let mut input = bytes::BytesMut::new();
    let (mut messages, mut data) = (0, 0);
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(20);
    while data < want {
        assert!(Instant::now() < deadline, "{data} of {want} bindings");
        let n = tls.read(&mut buf).unwrap();
        assert!(n > 0, "lqd closed the stream");
        input.extend_from_slice(&buf[..n]);
        while let Some(f) = decoder.decode_buf(&mut input).unwrap() {
            messages += 1;
            if f.first() == Some(&u8::from(MessageType::LeasequeryData)) {
                data += 1;
            }
        }
    }
    let records = tls.sock.data_records - records_before;
    (messages, records, tls)
}

/// Issue 14: TLS adds no thread, and encode-once holds under TLS. The Active messages of three TLS streams that carry
/// the same records are encoded once (lqd's count of encodes, against its deliveries), and
/// each stream gets several messages to a TLS record, not a record per message. The three
/// sessions stay open while lqd's threads are counted.
#[test]
fn tls_streams_carry_the_cached_frames_several_to_a_record() {
    let p = pki();
    let metrics_port = common::free_metrics_addr().port();
    let extra = format!(
        "metrics_listen = \"[::1]:{metrics_port}\"\n{}",
        tls_table(&p, "offer", false)
    );
    let lqd = Lqd::start_with_demo("tls-encode-once", &extra, SETTLED);
    lqd.wait_ready();
    let scrape = || -> (f64, f64) {
        let mut s = TcpStream::connect(("::1", metrics_port)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: lqd\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        let value = |name: &str| {
            body.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{name} missing:\n{body}"))
        };
        (
            value("lqd_active_messages_encoded_total "),
            value("lqd_active_deliveries_total "),
        )
    };
    let (encoded0, delivered0) = scrape();
    // lqd's threads, without the metrics endpoint's short-lived one per HTTP connection
    // (a scrape's may still be ending), and without one that ended while being read.
    let threads = || {
        std::fs::read_dir(format!("/proc/{}/task", lqd.child.id()))
            .unwrap()
            .filter(|t| {
                let comm = t.as_ref().map(|t| t.path().join("comm")).ok();
                comm.and_then(|c| std::fs::read_to_string(c).ok())
                    .is_some_and(|name| name.trim() != "lqd-metrics-con")
            })
            .count()
    };
    let threads_before = threads();
    let streams: Vec<_> = (0..3u32)
        .map(|i| tls_active_catch_up(&lqd, &p.ca, 100 + 10 * i, 300))
        .collect();
    // TLS runs inside the event loop: no thread per session or for the handshakes.
    assert_eq!(threads(), threads_before, "TLS sessions started threads");
    // The snapshot the endpoint serves is at most a second old.
    std::thread::sleep(Duration::from_millis(1500));
    let (encoded, delivered) = scrape();
    let (encoded, delivered) = (encoded - encoded0, delivered - delivered0);
    assert!(
        delivered >= 900.0,
        "three streams of 300 bindings: {delivered}"
    );
    assert!(
        encoded <= delivered / 3.0 + 10.0,
        "each record encoded once for the three TLS streams: {encoded} encodes, {delivered} deliveries"
    );
    for (messages, records, _) in &streams {
        let (messages, records) = (*messages, *records);
        assert!(
            records * 4 <= messages,
            "several messages to a TLS record: {messages} messages in {records} records"
        );
    }
}
