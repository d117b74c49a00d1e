//! A real `lqd` process for the end-to-end tests: started on a free loopback port with a demo
//! source and a config of the test's choosing, its log readable, killed when dropped; and the
//! small requestor helpers the tests share.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lqd::codec::{
    BuildOptions, Decoded, DhcpOption, FrameDecoder, MessageBuilder, MessageRepr, MessageType,
    OptionCode, QueryType,
};

pub(crate) const REQUESTOR: [u8; 10] = [0, 3, 0, 1, 0, 0x11, 0x22, 0x33, 0x44, 0x55];

/// A running lqd, killed and its directory removed when dropped.
pub(crate) struct Lqd {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) dir: PathBuf,
}

impl Lqd {
    /// Starts lqd on a free loopback port with `extra` TOML appended to a small demo config.
    pub(crate) fn start(name: &str, extra: &str) -> Self {
        Self::start_with_demo(
            name,
            extra,
            "clients = 300\nlinks = 4\nchanges_per_sec = 1\nseed = 11\n",
        )
    }

    /// The same with the `[demo]` table's contents given.
    pub(crate) fn start_with_demo(name: &str, extra: &str, demo: &str) -> Self {
        Self::start_limited(name, extra, demo, None)
    }

    /// The same, run with an open-file limit (soft and hard) of `fd_limit` when given.
    pub(crate) fn start_limited(
        name: &str,
        extra: &str,
        demo: &str,
        fd_limit: Option<u32>,
    ) -> Self {
        let (addr, dir) = fresh(name);
        let config = dir.join("lqd.toml");
        // A small journal unless the test sizes it: creating one writes it out in full.
        let source = if extra.contains("source") {
            ""
        } else {
            "source = \"demo\"\n"
        };
        let journal = if extra.contains("journal_size") {
            ""
        } else {
            "journal_size = 8388608\n"
        };
        std::fs::write(
            &config,
            format!(
                "listen = [\"{addr}\"]\nstate_dir = \"{}\"\n{source}{journal}{extra}\n[demo]\n{demo}",
                dir.display()
            ),
        )
        .unwrap();
        let mut command = match fd_limit {
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(env!("CARGO_BIN_EXE_lqd"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_lqd")),
        };
        let child = logged(command.arg("--config").arg(&config), &dir)
            .spawn()
            .unwrap();
        let lqd = Self { child, addr, dir };
        lqd.wait_ready();
        lqd
    }

    /// Kills lqd with SIGKILL and starts it again on the same configuration and state
    /// directory (its journal included); the old log is kept as `lqd.log.1`.
    pub(crate) fn kill9_and_restart(&mut self) {
        self.kill9_and_respawn();
        self.wait_ready();
    }

    /// The same for an lqd that is not fed by the demo: waits up to 20 s for a log line
    /// containing `ready`.
    pub(crate) fn kill9_and_restart_until(&mut self, ready: &str) {
        self.kill9_and_respawn();
        wait_for_log(self, ready, 20);
    }

    fn kill9_and_respawn(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        std::fs::rename(self.dir.join("lqd.log"), self.dir.join("lqd.log.1")).unwrap();
        self.child = logged(
            Command::new(env!("CARGO_BIN_EXE_lqd"))
                .arg("--config")
                .arg(self.dir.join("lqd.toml")),
            &self.dir,
        )
        .spawn()
        .unwrap();
    }

    /// Stops lqd with SIGTERM; its exit status.
    pub(crate) fn sigterm(&mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(sent.success());
        self.child.wait().unwrap()
    }

    pub(crate) fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.log().contains("source: demo") {
                // The initial population loads at once; give the loop a moment to take it.
                std::thread::sleep(Duration::from_millis(300));
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("lqd did not start:\n{}", self.log());
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("lqd.log")).unwrap_or_default()
    }

    pub(crate) fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }
}

impl Drop for Lqd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failed test keeps lqd's log and state for the post-mortem.
        if std::thread::panicking() {
            eprintln!("lqd's directory kept: {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub(crate) fn link(k: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, k, 0, 0, 0, 1)
}

pub(crate) fn by_link(xid: u32, l: Ipv6Addr) -> Vec<u8> {
    MessageBuilder::leasequery(xid)
        .client_id(&REQUESTOR)
        .lq_query(QueryType::ByLinkAddress, l, |q| q)
        .build_frame()
        .unwrap()
}

/// Reads messages until every xid in `xids` has ended (DONE, or a REPLY without client data).
pub(crate) fn read_answers(s: &mut TcpStream, xids: &[u32]) -> Vec<Vec<u8>> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut open: Vec<u32> = xids.to_vec();
    let mut dec = FrameDecoder::default();
    let mut chunk = [0u8; 65536];
    while !open.is_empty() {
        let n = s.read(&mut chunk).expect("read");
        assert!(n > 0, "connection closed with queries open: {open:?}");
        buf.extend_from_slice(&chunk[..n]);
        let mut pos = 0;
        while let Decoded::Frame { message, consumed } = dec.decode(&buf[pos..]).unwrap() {
            let m = MessageRepr::parse(message).unwrap();
            let xid = m.xid().unwrap().value();
            let ended = m.msg_type() == MessageType::LeasequeryDone
                || (m.msg_type() == MessageType::LeasequeryReply
                    && m.options.get(OptionCode::ClientData).is_none());
            if ended {
                open.retain(|x| *x != xid);
            }
            out.push(message.to_vec());
            pos += consumed;
        }
        buf.drain(..pos);
    }
    out
}

pub(crate) fn client_data_addresses(messages: &[Vec<u8>]) -> Vec<(Vec<u8>, Ipv6Addr)> {
    let mut found = Vec::new();
    for m in messages {
        let r = MessageRepr::parse(m).unwrap();
        if let Some(DhcpOption::ClientData(cd)) = r.options.get(OptionCode::ClientData) {
            let id = cd.client_id().unwrap().as_bytes().to_vec();
            for o in cd.iter() {
                if let DhcpOption::IaAddr(a) = o {
                    found.push((id.clone(), a.address));
                }
            }
        }
    }
    found
}

/// The addresses a Bulk query by link-address for `link` reports now.
pub(crate) fn link_addresses(lqd: &Lqd, link: Ipv6Addr) -> BTreeSet<Ipv6Addr> {
    let mut s = lqd.connect();
    s.write_all(&by_link(1, link)).unwrap();
    let answers = read_answers(&mut s, &[1]);
    client_data_addresses(&answers)
        .into_iter()
        .map(|(_, a)| a)
        .collect()
}

/// Waits up to 10 s until a Bulk query for `link` reports exactly `wanted`.
pub(crate) fn wait_for_link_addresses(lqd: &Lqd, link: Ipv6Addr, wanted: &BTreeSet<Ipv6Addr>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = link_addresses(lqd, link);
        if got == *wanted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "wanted {wanted:?}, lqd has {got:?}\n{}",
            lqd.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// lqd's resident memory, from /proc.
pub(crate) fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// lqd's anonymous resident memory (its heap, not the mapped journal file), from /proc.
pub(crate) fn rss_anon_kib(pid: u32) -> u64 {
    status_kib(pid, "RssAnon:")
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Waits up to `secs` seconds for a log line containing `needle`.
pub(crate) fn wait_for_log(lqd: &Lqd, needle: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !lqd.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no log line containing {needle:?}:\n{}",
            lqd.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads one by-link answer to its end, sampling lqd's RSS; returns (bindings, peak RSS).
/// Waits until lqd's RSS has not moved for a second: the feed it was loading is applied.
pub(crate) fn wait_settled(pid: u32, within: Duration) {
    let deadline = Instant::now() + within;
    let mut last = rss_kib(pid);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = rss_kib(pid);
        if now == last {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "RSS still moving: {last} -> {now} KiB"
        );
        last = now;
    }
}

pub(crate) fn read_whole_answer(s: &mut TcpStream, pid: u32) -> (usize, u64) {
    let mut peak = rss_kib(pid);
    let mut dec = FrameDecoder::default();
    let (mut pending, mut chunk, mut bindings) = (Vec::new(), [0u8; 65536], 0usize);
    loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0);
        pending.extend_from_slice(&chunk[..n]);
        let mut pos = 0;
        while let Decoded::Frame { message, consumed } = dec.decode(&pending[pos..]).unwrap() {
            pos += consumed;
            match message[0] {
                15 | 17 => bindings += 1,
                16 => return (bindings, peak.max(rss_kib(pid))),
                _ => {}
            }
            if bindings % 10_000 == 0 {
                peak = peak.max(rss_kib(pid));
            }
        }
        pending.drain(..pos);
    }
}

/// A free loopback port and an empty state directory for the test `name`.
fn fresh(name: &str) -> (SocketAddr, PathBuf) {
    let addr = free_lqd_addr();
    let dir = std::env::temp_dir().join(format!("lqd-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    (addr, dir)
}

/// `command` with its output going where the tests read it: stderr (the log) to
/// `dir/lqd.log`, stdout discarded.
fn logged<'c>(command: &'c mut Command, dir: &std::path::Path) -> &'c mut Command {
    command.stdout(Stdio::null()).stderr(Stdio::from(
        std::fs::File::create(dir.join("lqd.log")).unwrap(),
    ))
}

/// Starts lqd on a free loopback port with `args` on its command line (such as
/// `--source jsonl:-`) and `extra` TOML in its config (such as `source = "jsonl:PATH"`), its
/// standard input piped (take it from `child.stdin`); waits for a log line containing `ready`.
pub(crate) fn start_with_source(name: &str, args: &[&str], extra: &str, ready: &str) -> Lqd {
    start_with_source_env(name, args, extra, ready, &[])
}

/// The same with `env` set in lqd's environment (such as `LQD_KEA_CONFIG`).
pub(crate) fn start_with_source_env(
    name: &str,
    args: &[&str],
    extra: &str,
    ready: &str,
    env: &[(&str, &str)],
) -> Lqd {
    start_prepared(name, args, extra, ready, env, |_| {})
}

/// The same, `prepare` given lqd's state directory before lqd starts in it.
pub(crate) fn start_prepared(
    name: &str,
    args: &[&str],
    extra: &str,
    ready: &str,
    env: &[(&str, &str)],
    prepare: impl FnOnce(&std::path::Path),
) -> Lqd {
    let lqd = spawn_prepared(name, args, extra, env, prepare);
    wait_for_log(&lqd, ready, 20);
    lqd
}

/// Starts lqd as [`start_with_source_env`] does, without waiting for anything.
pub(crate) fn spawn_with_source(
    name: &str,
    args: &[&str],
    extra: &str,
    env: &[(&str, &str)],
) -> Lqd {
    spawn_prepared(name, args, extra, env, |_| {})
}

/// Writes lqd's configuration into a fresh state directory that `prepare` may fill first, and
/// starts lqd on it.
fn spawn_prepared(
    name: &str,
    args: &[&str],
    extra: &str,
    env: &[(&str, &str)],
    prepare: impl FnOnce(&std::path::Path),
) -> Lqd {
    let (addr, dir) = fresh(name);
    prepare(&dir);
    let config = dir.join("lqd.toml");
    // A small journal unless the test sizes it: creating one writes it out in full.
    let journal = if extra.contains("journal_size") {
        ""
    } else {
        "journal_size = 8388608\n"
    };
    std::fs::write(
        &config,
        format!(
            "listen = [\"{addr}\"]\nstate_dir = \"{}\"\n{journal}{extra}\n",
            dir.display()
        ),
    )
    .unwrap();
    let child = logged(
        Command::new(env!("CARGO_BIN_EXE_lqd"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped()),
        &dir,
    )
    .spawn()
    .unwrap();
    Lqd { child, addr, dir }
}

/// A free loopback address for lqd's `listen`. lqd listens on the port over TCP and UDP: a
/// port whose UDP side another test's socket holds (a UDP requestor's ephemeral port, say)
/// would stop it with "Address already in use", so both sides are tried.
pub(crate) fn free_lqd_addr() -> SocketAddr {
    loop {
        let l = std::net::TcpListener::bind("[::1]:0").unwrap();
        let addr = l.local_addr().unwrap();
        if std::net::UdpSocket::bind(addr).is_ok() {
            return addr;
        }
    }
}

/// A free loopback address for `metrics_listen`.
pub(crate) fn free_metrics_addr() -> SocketAddr {
    let port = std::net::TcpListener::bind("[::1]:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), port)
}

/// `/metrics` of lqd's metrics endpoint at `addr` (one plain HTTP GET): each sample whose name
/// starts with `lqd_feed_` or `lqd_source_`, by its name without labels.
pub(crate) fn source_metrics(addr: SocketAddr) -> std::collections::HashMap<String, f64> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: lqd\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.lines()
        .filter(|l| l.starts_with("lqd_feed_") || l.starts_with("lqd_source_"))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            let name = k.split('{').next()?;
            Some((name.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// Waits up to 5 s until the source's metrics have `want` (name → value); returns them.
pub(crate) fn wait_source_metrics(
    addr: SocketAddr,
    want: &[(&str, f64)],
) -> std::collections::HashMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = source_metrics(addr);
        if want.iter().all(|(k, v)| m.get(*k) == Some(v)) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "wanted {want:?}, /metrics has {m:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
