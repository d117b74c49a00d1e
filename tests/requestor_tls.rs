//! lq's STARTTLS (RFC 7653; digest §12, decisions D25 and D28) against an independent TLS
//! stack: `tests/peers/starttls_server.py`, a small leasequery server on Python's ssl module
//! (OpenSSL), standard library only. The requestor library and the `lq` CLI (rustls) do
//! STARTTLS, then Bulk and Active queries inside TLS; the server answers queries only over
//! TLS (NotAllowed in plaintext), so an answer proves TLS was spoken.
//!
//! Certificates come from `common/pki.rs` (rcgen, made at each run). Failures checked: the
//! wrong CA, a wrong server name, an expired server certificate, a refused STARTTLS (in a
//! LEASEQUERY-REPLY and in a STARTTLS), no client certificate where one is required, and
//! unusable files. Each must be a clear error (exit code 7 for the CLI), never a hang or a
//! panic, and the server's log must show what it saw.
//!
//! The server and the PKI are in `common/starttls_peer.rs`.

#[path = "common/pki.rs"]
#[allow(unreachable_pub)]
mod pki;
#[path = "common/starttls_peer.rs"]
mod starttls_peer;

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lqd::codec::Status;
use lqd::requestor::{
    ActiveSettings, Connection, Error, Event, Query, Subscription, TimeWindow, TlsClient,
    TlsOptions,
};
use serde_json::Value;
use starttls_peer::{Pki, PyServer};

const REQUESTOR_DUID: &[u8] = &[0, 3, 0, 1, 0x02, 0, 0, 0, 0, 0x77];

fn tls(ca: &Path) -> TlsOptions {
    TlsOptions {
        ca: Some(ca.to_path_buf()),
        ..TlsOptions::default()
    }
}

fn link_query() -> Query {
    Query::LinkAddress("2001:db8:1::1".parse().expect("address"))
}

/// Every binding of a Bulk answer over a fresh TLS connection.
fn bulk_tls(server: SocketAddr, options: &TlsOptions) -> Result<Vec<Vec<u8>>, Error> {
    let client = TlsClient::new(options)?;
    let mut conn = Connection::connect_tls(server, REQUESTOR_DUID, &client)?;
    assert!(conn.is_tls());
    let answer = conn.bulk(&link_query(), TimeWindow::ALL)?;
    answer.map(|r| r.map(|c| c.client_id)).collect()
}

fn tls_error(r: Result<Vec<Vec<u8>>, Error>) -> String {
    match r {
        Err(Error::Tls(why)) => {
            eprintln!("TLS: {why}");
            why
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

// ---- the library ---------------------------------------------------------------------------

#[test]
fn bulk_over_tls_with_the_right_ca_and_the_address_as_name() {
    let pki = Pki::new();
    let server = PyServer::start("::1", &pki.server, &["--bindings", "3"]);
    let clients = bulk_tls(server.addr, &tls(&pki.ca)).expect("Bulk over TLS");
    assert_eq!(clients.len(), 3, "{}", server.log());
    assert_eq!(
        clients[2],
        [0, 3, 0, 1, 2, 0, 0, 0, 0x10, 2],
        "the third binding's DUID"
    );
    let log = server.wait_for("query type=14", 1);
    // STARTTLS first, with a fresh xid and our DUID; then TLS 1.3; then the query inside it.
    let duid = hex::encode(REQUESTOR_DUID);
    assert!(
        log.contains(&format!("first=1 clientid={duid}")),
        "STARTTLS first with OPTION_CLIENTID:\n{log}"
    );
    assert!(log.contains("tls version=TLSv1.3"), "{log}");
    assert!(log.contains("query type=14"), "{log}");
    assert!(log.contains("tls=1"), "{log}");
    assert!(!log.contains("plain query"), "{log}");
}

#[test]
fn tls_1_2_is_accepted_and_reported() {
    let pki = Pki::new();
    let server = PyServer::start("127.0.0.1", &pki.server, &["--max-version", "1.2"]);
    let client = TlsClient::new(&tls(&pki.ca)).expect("setup");
    let mut conn = Connection::connect_tls(server.addr, REQUESTOR_DUID, &client).expect("TLS 1.2");
    let (version, _) = conn.tls_session().expect("a TLS session");
    assert_eq!(version, rustls::ProtocolVersion::TLSv1_2);
    let n = conn
        .bulk(&link_query(), TimeWindow::ALL)
        .expect("query")
        .count();
    assert_eq!(n, 1);
    assert!(
        server
            .wait_for("TLSv1.2", 1)
            .contains("tls version=TLSv1.2")
    );
}

#[test]
fn a_dns_server_name_is_verified() {
    let pki = Pki::new();
    let server = PyServer::start("127.0.0.1", &pki.server, &[]);
    let named = |name: &str| TlsOptions {
        server_name: Some(name.into()),
        ..tls(&pki.ca)
    };
    assert_eq!(
        bulk_tls(server.addr, &named("localhost"))
            .expect("ok")
            .len(),
        1
    );
    let why = tls_error(bulk_tls(server.addr, &named("lq.example.net")));
    assert!(
        why.contains("name mismatch") && why.contains("lq.example.net"),
        "{why}"
    );
    assert!(
        server
            .wait_for("handshake failed", 1)
            .contains("handshake failed")
    );
}

#[test]
fn the_wrong_ca_is_a_clear_error() {
    let pki = Pki::new();
    let server = PyServer::start("::1", &pki.server, &[]);
    let why = tls_error(bulk_tls(server.addr, &tls(&pki.other_ca)));
    assert!(why.contains("not signed by a trusted CA"), "{why}");
    assert!(why.contains("server's certificate"), "{why}");
}

#[test]
fn an_expired_server_certificate_is_a_clear_error() {
    let pki = Pki::new();
    let server = PyServer::start("127.0.0.1", &pki.expired_server, &[]);
    let why = tls_error(bulk_tls(server.addr, &tls(&pki.ca)));
    assert!(why.contains("it has expired"), "{why}");
}

#[test]
fn refused_starttls_in_a_reply_or_a_starttls_is_an_error_d25() {
    let pki = Pki::new();
    for refuse_as in ["reply", "starttls"] {
        let server = PyServer::start("::1", &pki.server, &["--refuse", "--refuse-as", refuse_as]);
        match bulk_tls(server.addr, &tls(&pki.ca)) {
            Err(e @ Error::TlsRefused { .. }) => {
                let Error::TlsRefused { status, message } = &e else {
                    unreachable!()
                };
                assert_eq!(*status, Status::TlsConnectionRefused, "{refuse_as}");
                assert_eq!(message, "TLS is not offered here");
                assert!(e.is_tls());
                assert!(
                    e.to_string()
                        .contains("refused STARTTLS: TLSConnectionRefused"),
                    "{e}"
                );
            }
            other => panic!("{refuse_as}: expected TlsRefused, got {other:?}"),
        }
        // Nothing was asked after the refusal: no fall-back to plaintext.
        let log = server.wait_for("refused starttls", 1);
        assert!(log.contains("refused starttls"), "{log}");
        std::thread::sleep(Duration::from_millis(200));
        assert!(!server.log().contains("query type"), "{}", server.log());
    }
}

#[test]
fn mutual_tls_with_and_without_a_client_certificate() {
    let pki = Pki::new();
    let ca = pki.ca.to_str().expect("utf-8 path");
    let server = PyServer::start("::1", &pki.server, &["--client-ca", ca]);
    let with_cert = TlsOptions {
        cert: Some(pki.client.cert.clone()),
        key: Some(pki.client.key.clone()),
        ..tls(&pki.ca)
    };
    assert_eq!(
        bulk_tls(server.addr, &with_cert).expect("mutual TLS").len(),
        1
    );
    let log = server.wait_for("commonName=requestor-1", 1);
    assert!(log.contains("client=commonName=requestor-1"), "{log}");

    let why = tls_error(bulk_tls(server.addr, &tls(&pki.ca)));
    assert!(why.contains("requires a client certificate"), "{why}");

    let stranger = TlsOptions {
        cert: Some(pki.other_client.cert.clone()),
        key: Some(pki.other_client.key.clone()),
        ..tls(&pki.ca)
    };
    let why = tls_error(bulk_tls(server.addr, &stranger));
    assert!(
        why.contains("did not accept our client certificate"),
        "{why}"
    );
    let log = server.wait_for("handshake failed", 2);
    assert_eq!(log.matches("handshake failed").count(), 2, "{log}");
}

#[test]
fn unusable_files_are_setup_errors() {
    let pki = Pki::new();
    let missing = pki.ca.with_file_name("missing.pem");
    for (options, needle) in [
        (tls(&missing), "CA file"),
        (tls(&pki.client.key), "CA file"),
        (
            TlsOptions {
                cert: Some(pki.client.cert.clone()),
                key: Some(pki.server.key.clone()),
                ..tls(&pki.ca)
            },
            "client certificate",
        ),
        (
            TlsOptions {
                cert: Some(pki.client.cert.clone()),
                ..tls(&pki.ca)
            },
            "needs its key",
        ),
        (
            TlsOptions {
                server_name: Some("not a name!".into()),
                ..tls(&pki.ca)
            },
            "neither a DNS name",
        ),
    ] {
        match TlsClient::new(&options) {
            Err(Error::TlsConfig(why)) => assert!(why.contains(needle), "{needle}: {why}"),
            other => panic!("{needle}: expected TlsConfig, got {other:?}"),
        }
    }
}

#[test]
fn the_system_trust_store_is_the_default() {
    // rustls-native-certs reads SSL_CERT_FILE first: the child process gets it; the library
    // is tested through the CLI so that the variable never leaks into other tests.
    let pki = Pki::new();
    let server = PyServer::start("::1", &pki.server, &[]);
    let out = lq_env(
        &["bulk", "--tls", "--json"],
        server.addr,
        &[("SSL_CERT_FILE", &pki.ca)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = lq_env(
        &["bulk", "--tls", "--json"],
        server.addr,
        &[("SSL_CERT_FILE", &pki.other_ca)],
    );
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not signed by a trusted CA"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn active_over_tls() {
    let pki = Pki::new();
    let server = PyServer::start("::1", &pki.server, &["--bindings", "2"]);
    let mut settings = ActiveSettings::new(REQUESTOR_DUID);
    settings.tls = Some(TlsClient::new(&tls(&pki.ca)).expect("setup"));
    let mut sub = Subscription::new(server.addr, settings, None);
    let mut bindings = 0;
    let mut keepalives = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while keepalives < 1 && Instant::now() < deadline {
        match sub.next_event().expect("event") {
            Some(Event::Binding(_)) => bindings += 1,
            Some(Event::Keepalive(_)) => keepalives += 1,
            Some(Event::Connected { .. }) => {}
            other => panic!("unexpected {other:?}\n{}", server.log()),
        }
    }
    assert_eq!((bindings, keepalives), (2, 1), "{}", server.log());
    let log = server.log();
    assert!(log.contains("active type=22"), "{log}");
    assert!(log.contains("tls=1 start=-"), "{log}");
}

#[test]
fn a_subscription_ends_on_a_tls_failure_instead_of_retrying_d27() {
    let pki = Pki::new();
    let server = PyServer::start("::1", &pki.server, &[]);
    let mut settings = ActiveSettings::new(REQUESTOR_DUID);
    settings.tls = Some(TlsClient::new(&tls(&pki.other_ca)).expect("setup"));
    let mut sub = Subscription::new(server.addr, settings, None);
    match sub.next_event() {
        Err(Error::Tls(why)) => assert!(why.contains("not signed by a trusted CA"), "{why}"),
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

// ---- the CLI -------------------------------------------------------------------------------

fn lq_env(args: &[&str], server: SocketAddr, env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lq"));
    cmd.args(args)
        .arg("--server")
        .arg(server.to_string())
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    if args.first() == Some(&"bulk") {
        cmd.args(["--link-address", "2001:db8:1::1"]);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run lq");
    wait_output(child, Duration::from_secs(30))
}

fn lq(args: &[&str], server: SocketAddr) -> Output {
    lq_env(args, server, &[])
}

/// The child's output; it is killed (and the test fails) after `limit`.
fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("lq hung; stderr: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn lq_bulk_over_tls() {
    let pki = Pki::new();
    let server = PyServer::start("::1", &pki.server, &["--bindings", "3"]);
    let out = lq(
        &["bulk", "--tls", "--ca", p(&pki.ca), "--json"],
        server.addr,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 3, "{}", stdout(&out));
    assert_eq!(lines[0]["client_id"], "00030001020000001000");
    assert!(server.wait_for("query type=14", 1).contains("tls=1"));

    // The same server answers a plaintext query with NotAllowed: the answer above came
    // through TLS.
    let plain = lq(&["bulk", "--json"], server.addr);
    assert_eq!(plain.status.code(), Some(3), "{}", stderr(&plain));
    assert!(stderr(&plain).contains("NotAllowed"), "{}", stderr(&plain));
}

#[test]
fn lq_mutual_tls() {
    let pki = Pki::new();
    let server = PyServer::start("::1", &pki.server, &["--client-ca", p(&pki.ca)]);
    let ok = lq(
        &[
            "bulk",
            "--tls",
            "--ca",
            p(&pki.ca),
            "--cert",
            p(&pki.client.cert),
            "--key",
            p(&pki.client.key),
        ],
        server.addr,
    );
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("2001:db8:1::100"), "{}", stdout(&ok));
    let no_cert = lq(&["bulk", "--tls", "--ca", p(&pki.ca)], server.addr);
    assert_eq!(no_cert.status.code(), Some(7), "{}", stderr(&no_cert));
    assert!(
        stderr(&no_cert).contains("requires a client certificate"),
        "{}",
        stderr(&no_cert)
    );
}

#[test]
fn lq_tls_failures_are_clear() {
    let pki = Pki::new();
    let good = PyServer::start("::1", &pki.server, &[]);
    let expired = PyServer::start("127.0.0.1", &pki.expired_server, &[]);
    let refusing = PyServer::start("::1", &pki.server, &["--refuse"]);
    let cases: [(&[&str], SocketAddr, &str); 4] = [
        (
            &["bulk", "--tls", "--ca", p(&pki.other_ca)],
            good.addr,
            "not signed by a trusted CA",
        ),
        (
            &[
                "bulk",
                "--tls",
                "--ca",
                p(&pki.ca),
                "--server-name",
                "lq.example.net",
            ],
            good.addr,
            "not valid for name \"lq.example.net\"",
        ),
        (
            &["bulk", "--tls", "--ca", p(&pki.ca)],
            expired.addr,
            "it has expired",
        ),
        (
            &["bulk", "--tls", "--ca", p(&pki.ca)],
            refusing.addr,
            "the server refused STARTTLS: TLSConnectionRefused (TLS is not offered here)",
        ),
    ];
    for (args, server, needle) in cases {
        let out = lq(args, server);
        let err = stderr(&out);
        eprint!("{err}");
        assert_eq!(out.status.code(), Some(7), "{args:?}: {err}");
        assert!(err.starts_with("lq: "), "{err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // A watch ends too, instead of retrying for ever (D28).
    let out = lq(
        &["watch", "--tls", "--ca", p(&pki.other_ca), "--json"],
        good.addr,
    );
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(stderr(&out).contains("not signed by a trusted CA"));
}

#[test]
fn lq_tls_usage_errors() {
    let pki = Pki::new();
    let server: SocketAddr = "[::1]:9".parse().expect("address");
    // --ca, --cert, --key and --server-name need --tls; --cert and --key need each other.
    for args in [
        &["bulk", "--ca", p(&pki.ca)][..],
        &["bulk", "--server-name", "x"],
        &["bulk", "--tls", "--cert", p(&pki.client.cert)],
        &["watch", "--tls", "--key", p(&pki.client.key)],
    ] {
        let out = lq(args, server);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("required arguments were not provided"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let missing = pki.ca.with_file_name("missing.pem");
    let out = lq(&["bulk", "--tls", "--ca", p(&missing)], server);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("CA file"), "{}", stderr(&out));
    // `lq query` is UDP: no TLS flags.
    let out = lq(&["query", "--tls", "--address", "2001:db8::1"], server);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn lq_watch_reconnects_over_tls() {
    let pki = Pki::new();
    let server = PyServer::start(
        "::1",
        &pki.server,
        &["--bindings", "2", "--close-first-active", "1"],
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_lq"))
        .args(["watch", "--tls", "--ca", p(&pki.ca), "--json", "--server"])
        .arg(server.addr.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run lq watch");
    let log = server.wait_for("active type=22", 2);
    let _ = child.kill();
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    let _ = child.wait();
    // Two TLS handshakes, two Active queries inside TLS, the second resuming (START_TIME).
    assert_eq!(log.matches("tls version=TLSv1.3").count(), 2, "{log}");
    let active: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("active type=22"))
        .collect();
    assert_eq!(active.len(), 2, "{log}");
    assert!(active.iter().all(|l| l.contains("tls=1")), "{log}");
    assert!(!active[1].contains("start=-"), "a resume point: {log}");
    assert!(!log.contains("plain query"), "{log}");
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert!(
        kinds.iter().filter(|k| **k == "connected").count() >= 2,
        "{kinds:?}"
    );
    assert!(kinds.contains(&"disconnected"), "{kinds:?}");
    assert_eq!(
        kinds.iter().filter(|k| **k == "added").count(),
        2,
        "{kinds:?}"
    );
}
