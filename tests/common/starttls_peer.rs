//! The STARTTLS peer of the TLS tests: `tests/peers/starttls_server.py` (Python's ssl
//! module, OpenSSL; standard library only) run as a child process, and the test PKI it and lq
//! use. Include it with `#[path = "common/starttls_peer.rs"] mod starttls_peer;` beside
//! `#[path = "common/pki.rs"] mod pki;`.
//!
//! Python: `$LQD_PEER_PYTHON` when set, else `python3` (3.11).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::pki;

/// The Python that runs the peer.
pub(crate) fn python() -> PathBuf {
    std::env::var_os("LQD_PEER_PYTHON").map_or_else(|| PathBuf::from("python3"), PathBuf::from)
}

/// The peer script.
pub(crate) fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/starttls_server.py")
}

/// The test PKI: a CA, a server certificate for localhost/127.0.0.1/::1, a client
/// certificate, a CA nobody trusts, and an expired server certificate.
pub(crate) struct Pki {
    _dir: tempfile::TempDir,
    pub(crate) ca: PathBuf,
    pub(crate) server: pki::Pair,
    pub(crate) client: pki::Pair,
    pub(crate) other_ca: PathBuf,
    pub(crate) other_client: pki::Pair,
    pub(crate) expired_server: pki::Pair,
}

impl Pki {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = pki::Ca::new(dir.path(), "ca");
        let other = pki::Ca::new(dir.path(), "other-ca");
        Self {
            ca: ca.cert.clone(),
            server: ca.server("server", &[]),
            client: ca.client("client", "requestor-1", &["requestor-1.example"], &[]),
            other_ca: other.cert.clone(),
            other_client: other.client("other-client", "stranger", &[], &[]),
            expired_server: ca.expired_server("expired-server"),
            _dir: dir,
        }
    }
}

/// The Python server, killed when dropped; its stderr log collected as it comes.
pub(crate) struct PyServer {
    child: Child,
    pub(crate) addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl PyServer {
    pub(crate) fn start(host: &str, cert: &pki::Pair, extra: &[&str]) -> Self {
        let mut child = Command::new(python())
            .arg(script())
            .args(["--host", host, "--cert"])
            .arg(&cert.cert)
            .arg("--key")
            .arg(&cert.key)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python().display()));
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().expect("log lock");
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut first)
            .expect("the server's first line");
        let port: u16 = first
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                std::thread::sleep(Duration::from_millis(300));
                panic!(
                    "the server did not start: {first:?}; log:\n{}",
                    log.lock().expect("log lock")
                )
            });
        let ip = host.parse().expect("host literal");
        Self {
            child,
            addr: SocketAddr::new(ip, port),
            log,
        }
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// Waits (up to 5 s) until the log holds `needle` `times` times; returns the log.
    pub(crate) fn wait_for(&self, needle: &str, times: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.log();
            if log.matches(needle).count() >= times || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
